#!/bin/bash
# The default cache bound: without -o cache_size= the complete blobs stay
# within 10% of the cache's file system and keep 5% of it available;
# cache_size=unlimited (or 0) keeps everything. The cache directories are
# small tmpfs mounts (in a private mount namespace) so that the share is
# small: 10% of a 100 MiB tmpfs is 10 MiB. Partial blobs count too: many
# files read lazily, a few chunks each, held open (chunks go) or not (whole
# partial blobs go), stay within a small cache_size.
T_TIMEOUT=${T_TIMEOUT:-240}
if [ -z "${OCIFS_IN_NS:-}" ]; then
	[ "$(id -u)" = 0 ] || { echo "# SKIP needs root (mount namespaces)"; exit 77; }
	OCIFS_IN_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env jq sha256sum stat

MiB=$((1024 * 1024))
FS_BYTES=$((100 * MiB))
SHARE=$((FS_BYTES / 100 * 10))
RESERVE=$((FS_BYTES / 100 * 5))
registry_start cachebound
W=$TESTDIR/w
mkdir -p "$W"
names=(a b c d e)
for n in "${names[@]}"; do
	make_random_file "$W/$n.bin" $((4 * MiB)) "bound-$n"
done
DG=$(push_artifact bound/files v1 "$W" a.bin b.bin c.bin d.bin e.bin) || bail "seed bound/files:v1"
# many layers read lazily: NLAZY files of 32 chunks of 64 KiB (the last one
# short), read in their first half: read-ahead never completes one
NLAZY=16
LCHUNK=$((64 * 1024))
lazy=()
for ((i = 0; i < NLAZY; i++)); do
	make_random_file "$W/lazy$i.bin" $((32 * LCHUNK - 100 * i - 1)) "lazy-$i"
	lazy+=("lazy$i.bin")
done
push_artifact bound/lazy v1 "$W" "${lazy[@]}" >/dev/null || bail "seed bound/lazy:v1"

# small_fs NAME: a new 100 MiB tmpfs at $TESTDIR/NAME (unmounted at exit with the namespace)
small_fs() {
	mkdir -p "$TESTDIR/$1"
	mount -t tmpfs -o size=$((FS_BYTES / MiB))m,mode=700 tmpfs "$TESTDIR/$1" || bail "a 100 MiB tmpfs"
	echo "$TESTDIR/$1"
}
# avail DIR: bytes available on DIR's file system, as statvfs says (df's Avail)
avail() { echo $(($(stat -f -c '%a * %S' "$1"))); }
blobs_within() { [ "$(cache_blobs_bytes "$1")" -le "$2" ]; }
avail_at_least() { [ "$(avail "$1")" -ge "$2" ]; }
nblobs() { find "$1/blobs/sha256" -maxdepth 1 -type f | wc -l; }
# read_all MNT: cat every file through MNT; prints the names that read wrong
read_wrong() {
	local n bad=""
	for n in "${names[@]}"; do
		[ "$(sha256sum <"$1/bound/files/v1/$n.bin" | cut -d' ' -f1)" = "$(sha256_hex "$W/$n.bin")" ] ||
			bad="$bad $n"
	done
	echo "${bad# }"
}

# ---- the default: 10% of the file system
S=$(small_fs probe)
check_eq "statvfs: the tmpfs has $FS_BYTES bytes" "$FS_BYTES" "$(($(stat -f -c '%b * %S' "$S")))"
umount "$S"
S=$(small_fs share)
C=$S/c
M=$TESTDIR/m1
OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o ro || bail "mount with the cache on a 100 MiB tmpfs"
check_eq "stats.json: the bound is 10% of the file system" "$SHARE" \
	"$(jq .cache_limit_bytes "$M/.ocifs/stats.json")"
for n in "${names[@]}"; do
	check_eq "default bound: $n.bin (4 MiB) reads right" "$(sha256_hex "$W/$n.bin")" \
		"$(sha256sum <"$M/bound/files/v1/$n.bin" | cut -d' ' -f1)"
	wait_until 5 blobs_within "$C" "$SHARE"
	check "default bound: complete blobs <= 10 MiB after $n.bin ($(cache_blobs_bytes "$C") bytes)" \
		blobs_within "$C" "$SHARE"
done
check_eq "default bound: the two most recently read stay (e, d)" \
	"$(printf '%s\n' "$(sha256_hex "$W/d.bin")" "$(sha256_hex "$W/e.bin")" | sort)" \
	"$(ls "$C/blobs/sha256" | sort)"
sj=$(jq -c '{cache_complete_bytes, cache_limit_bytes}' "$M/.ocifs/stats.json")
check "stats.json: cache_complete_bytes within cache_limit_bytes ($sj)" \
	jq -e '.cache_complete_bytes <= .cache_limit_bytes and .cache_complete_bytes > 0' \
	"$M/.ocifs/stats.json"
# every file through a path not read before (the daemon, not the page cache, answers)
check_eq "every file still reads right through .oci/blobs" "" \
	"$(for n in "${names[@]}"; do h=$(sha256_hex "$W/$n.bin")
		[ "$(sha256sum <"$M/bound/files/$DG/.oci/blobs/sha256/$h" | cut -d' ' -f1)" = "$h" ] ||
			echo "$n"; done)"
wait_until 5 blobs_within "$C" "$SHARE"
check "and the cache stays within the bound" blobs_within "$C" "$SHARE"
check "every complete blob verifies" cache_verifies "$C"
umount_ocifs "$M"
umount "$S"

# ---- the default keeps 5% of the file system available: a disk that other
# files fill up evicts sooner than the share says
S=$(small_fs reserve)
C=$S/c
M=$TESTDIR/m2
head -c $((90 * MiB)) /dev/zero >"$S/filler" || bail "fill the tmpfs"
OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o ro || bail "mount on a tmpfs 90% full"
for n in a b c d; do
	check_eq "90% full: $n.bin reads right" "$(sha256_hex "$W/$n.bin")" \
		"$(sha256sum <"$M/bound/files/v1/$n.bin" | cut -d' ' -f1)"
	wait_until 5 avail_at_least "$S" "$RESERVE"
	check "90% full: >= 5% of the file system available after $n.bin ($(avail "$S") bytes)" \
		avail_at_least "$S" "$RESERVE"
done
check_eq "90% full: one blob is kept (two would leave less than 5%)" 1 "$(nblobs "$C")"
check_eq "90% full: every file still reads right" "" "$(read_wrong "$M")"
check "every complete blob verifies" cache_verifies "$C"
umount_ocifs "$M"
umount "$S"

# ---- no bound, asked for by name or by 0
for v in unlimited 0; do
	S=$(small_fs "none-$v")
	C=$S/c
	M=$TESTDIR/m-$v
	OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o ro,cache_size=$v || bail "mount cache_size=$v"
	check_eq "cache_size=$v: stats.json says no bound (0)" 0 \
		"$(jq .cache_limit_bytes "$M/.ocifs/stats.json")"
	check_eq "cache_size=$v: every file reads right" "" "$(read_wrong "$M")"
	check_eq "cache_size=$v: all 5 blobs (20 MiB, over the 10% share) are kept" 5 "$(nblobs "$C")"
	check "cache_size=$v: every complete blob verifies" cache_verifies "$C"
	umount_ocifs "$M"
	# and a remount with no option brings it under the default bound at once
	if [ "$v" = 0 ]; then
		OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o ro || bail "remount with the default"
		check "remounted with the default bound: complete blobs <= 10 MiB at once" \
			blobs_within "$C" "$SHARE"
		umount_ocifs "$M"
	fi
	umount "$S"
done

# ---- an explicit bound is that bound, whatever the file system
S=$(small_fs explicit)
C=$S/c
M=$TESTDIR/m3
OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o ro,cache_size=5M || bail "mount cache_size=5M"
check_eq "cache_size=5M: stats.json says 5 MiB" $((5 * MiB)) \
	"$(jq .cache_limit_bytes "$M/.ocifs/stats.json")"
check_eq "cache_size=5M: every file reads right" "" "$(read_wrong "$M")"
wait_until 5 blobs_within "$C" $((5 * MiB))
check_eq "cache_size=5M: one blob is kept" 1 "$(nblobs "$C")"
umount_ocifs "$M"
umount "$S"

# ---- partial blobs count: files read lazily under cache_size=1M
S=$(small_fs lazy)
C=$S/c
M=$TESTDIR/m4
LBOUND=$((1 * MiB))
OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o ro,cache_size=1M,chunk_size=64K ||
	bail "mount cache_size=1M,chunk_size=64K"
L=$M/bound/lazy/v1
# on_disk: what complete and partial blobs (with their maps) take, as du counts it
on_disk() {
	find "$C/blobs/sha256" "$C/partial" -maxdepth 1 -type f -printf '%b\n' 2>/dev/null |
		awk '{ s += $1 * 512 } END { printf "%d\n", s }'
}
within() { [ "$(on_disk)" -le "$1" ]; }
# read_range I K: 2 chunks of lazy$I.bin from chunk K, through a new open; prints
# nothing when they are the right bytes
read_range() {
	cmp <(dd if="$L/lazy$1.bin" bs=$LCHUNK skip="$2" count=2 status=none 2>&1) \
		<(dd if="$W/lazy$1.bin" bs=$LCHUNK skip="$2" count=2 status=none) 2>&1 | head -c 200
}
# ranges of each file: 3 of 2 chunks, away from the last chunk (no wait for verification)
declare -A RANGES
for ((i = 0; i < NLAZY; i++)); do
	RANGES[$i]="$((i % 5)) $((5 + i % 4)) $((10 + i % 3))"
done
# lazy_round LABEL: every range of every file once; checks the bytes, and
# that after each read the blobs are within the bound plus one chunk per
# blob in flight; prints the most seen on disk
lazy_round() {
	local label=$1 i k bad="" over="" most=0 d
	for ((i = 0; i < NLAZY; i++)); do
		for k in ${RANGES[$i]}; do
			[ -z "$(read_range "$i" "$k")" ] || bad="$bad $i:$k"
			d=$(on_disk)
			[ "$d" -le $((LBOUND + NLAZY * LCHUNK)) ] || [ ${#over} -gt 100 ] ||
				over="$over $i:$k=$d"
			[ "$d" -le "$most" ] || most=$d
		done
	done
	check_eq "$label: every range reads right" "" "${bad# }"
	check_eq "$label: after each read, on disk <= 1 MiB + one chunk per blob in flight" "" \
		"${over# }"
	diag "$label: at most $most bytes on disk ($((NLAZY * 32 * LCHUNK)) bytes of files)"
}

# every file held open: their chunks are evicted, not whole blobs
fds=()
for ((i = 0; i < NLAZY; i++)); do
	exec {fd}<"$L/lazy$i.bin" || bail "open lazy$i.bin"
	fds+=("$fd")
done
lazy_round "held open"
npartial() { find "$C/partial" -maxdepth 1 -type f ! -name '*.map' | wc -l; }
check_eq "held open: every blob is still partial (chunks went, not blobs)" "$NLAZY" "$(npartial)"
wait_until 10 within "$LBOUND"
check "held open, reads over: within the bound ($(on_disk) bytes)" within "$LBOUND"
sj=$(jq -c '{cache_bytes, cache_limit_bytes}' "$M/.ocifs/stats.json")
check "stats.json: cache_bytes (partial blobs too) within cache_limit_bytes ($sj)" \
	jq -e '.cache_limit_bytes == 1048576 and .cache_bytes <= .cache_limit_bytes' \
	"$M/.ocifs/stats.json"
lazy_round "held open, again (evicted chunks fetched again)"
for fd in "${fds[@]}"; do exec {fd}<&-; done

# nothing held: whole partial blobs go, least recently used first
lazy_round "each file open only while read"
wait_until 10 within "$LBOUND"
check "nothing open: within the bound ($(on_disk) bytes)" within "$LBOUND"
check "nothing open: partial blobs went whole ($(npartial) of $NLAZY left)" \
	test "$(npartial)" -lt "$NLAZY"
check "no partial blob left without its map, nor a map without its blob" \
	test "$(find "$C/partial" -maxdepth 1 -type f -name '*.map' | wc -l)" -eq \
	"$(find "$C/partial" -maxdepth 1 -type f ! -name '*.map' | wc -l)"
# and a file read whole verifies, whatever was evicted of it before
check_eq "a file read whole after its chunks were evicted reads right" \
	"$(sha256_hex "$W/lazy3.bin")" "$(sha256sum <"$M/bound/lazy/v1/.oci/blobs/sha256/$(sha256_hex "$W/lazy3.bin")" | cut -d' ' -f1)"
umount_ocifs "$M"
check "every complete blob verifies" cache_verifies "$C"
umount "$S"
finish

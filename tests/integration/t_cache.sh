#!/bin/bash
# The read path and the cache, against a real registry whose access log says
# what it served: ranged lazy reads, resume after a crash, single flight,
# verification, the cache size bound, reading with the registry down.
T_TIMEOUT=${T_TIMEOUT:-300}
REG_ACCESSLOG=1
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env dd cmp

MiB=$((1024 * 1024))
CHUNK=$MiB

registry_start cache

# ---- seed
W=$TESTDIR/w
mkdir -p "$W"
for n in rand flight; do
	make_random_file "$W/$n.bin" $((64 * MiB)) "$n"
done
# Bigger than what a reader of 16 MiB gets read ahead for it (the window
# grows to 64 MiB), so that a crash leaves chunks to fetch.
RESUME_CHUNKS=256
make_random_file "$W/resume.bin" $((RESUME_CHUNKS * CHUNK)) resume
# corrupt ones: several chunks, the last one short
for n in bad-cat bad-strict bad-lazy; do
	make_random_file "$W/$n.bin" $((4 * MiB + 12345)) "$n"
done
make_random_file "$W/good.bin" $((3 * MiB + 7)) good
for n in a b c d; do
	make_random_file "$W/$n.bin" $((16 * MiB)) "lru-$n"
done

push_artifact cache/rand v1 "$W" rand.bin >/dev/null || bail "seed cache/rand:v1"
push_artifact cache/resume v1 "$W" resume.bin >/dev/null || bail "seed cache/resume:v1"
DFLIGHT=$(push_artifact cache/flight v1 "$W" flight.bin) || bail "seed cache/flight:v1"
push_artifact cache/bad v1 "$W" bad-cat.bin bad-strict.bin bad-lazy.bin good.bin >/dev/null ||
	bail "seed cache/bad:v1"
DLRU=$(push_artifact cache/lru v1 "$W" a.bin b.bin c.bin d.bin) || bail "seed cache/lru:v1"

# HEX[name]: the sha256 of name.bin, its digest and what reading it must give
declare -A HEX
for f in "$W"/*.bin; do
	n=$(basename "$f" .bin)
	HEX[$n]=$(sha256_hex "$f")
done

# Tamper with the stored bytes of the corrupt ones: one byte in the middle
# (of the third chunk) inverted.
for n in bad-cat bad-strict bad-lazy; do
	p=$(blob_path "${HEX[$n]}")
	off=$((2 * MiB + 1000))
	b=$(od -An -tu1 -j "$off" -N1 "$p" | tr -d ' ')
	# shellcheck disable=SC2059
	printf "\\$(printf %03o $((b ^ 255)))" | dd of="$p" bs=1 seek="$off" conv=notrunc status=none
	check_fail "registry serves altered bytes for $n.bin" \
		bash -c "curl -fsS 'http://$REG/v2/cache/bad/blobs/sha256:${HEX[$n]}' | cmp -s - '$W/$n.bin'"
done

# out_hash CMD...: the sha256 of what CMD writes, or "failed: " and its stderr.
out_hash() {
	local h
	if h=$("$@" 2>"$TESTDIR/.err" | sha256sum | cut -d' ' -f1); then
		echo "$h"
	else
		echo "failed: $(head -c 300 "$TESTDIR/.err")"
	fi
}

# map_has MAP N: the map records at least N chunks as fetched.
map_has() { [ "$(cache_map_ones "$1")" -ge "$2" ]; }

# partial_gone CACHEDIR HEX: no partial file nor map left for the blob.
partial_gone() { [ ! -e "$1/partial/$2" ] && [ ! -e "$1/partial/$2.map" ]; }

# ---------------------------------------------------------------- 0. options
# mount_refused ARGS...: ocifs with these options exits non-zero without
# mounting (bounded wait; unmounted and killed if it did mount).
mount_refused() {
	local m=$TESTDIR/refused pid i rc
	mkdir -p "$m"
	"$OCIFS" -f -o "cache_dir=$TESTDIR/cache-refused" "$@" "$REG" "$m" >"$TESTDIR/.refused" 2>&1 </dev/null &
	pid=$!
	_LIB_DAEMON_PIDS+=("$pid")
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		mountpoint -q "$m" && break
		sleep 0.1
	done
	if mountpoint -q "$m"; then
		fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m"
		wait "$pid" 2>/dev/null
		echo "mounted"
		return 1
	fi
	kill -0 "$pid" 2>/dev/null && { kill "$pid"; wait "$pid" 2>/dev/null; echo "still running"; return 1; }
	wait "$pid"
	rc=$?
	[ "$rc" != 0 ]
}
for o in chunk_size=3M chunk_size=32K chunk_size=128M chunk_size=1G chunk_size=lots \
	cache_size=lots verify=maybe; do
	check "-o $o is refused (exit non-zero, nothing mounted)" mount_refused -o "ro,$o"
done
C0=$TESTDIR/cache0
M0=$TESTDIR/m0
if OCIFS_CACHE=$C0 mount_ocifs "$REG" "$M0" -o ro,chunk_size=64K; then
	h=${HEX[rand]}
	dd if="$M0/cache/rand/v1/rand.bin" of="$W/rand.got0" bs=4096 skip=$((10 * MiB / 4096)) count=1 \
		status=none 2>/dev/null
	check_same "chunk_size=64K: a 4 KiB read gives the right bytes" \
		<(dd if="$W/rand.bin" bs=4096 skip=$((10 * MiB / 4096)) count=1 status=none) "$W/rand.got0"
	check_eq "chunk_size=64K: the map of the 64 MiB blob has 1024 chunks" 1024 \
		"$(stat -c %s "$C0/partial/$h.map" 2>&1)"
	check_eq "chunk_size=64K: a 3 MiB file reads right" "${HEX[good]}" \
		"$(out_hash cat "$M0/cache/bad/v1/good.bin")"
	umount_ocifs "$M0"
fi
# The kernel's read-ahead on the mount (sysfs): 1024 KiB unless told, the
# kernel's own 128 KiB with read_ahead_kb=0; reads are right at each.
for ra in default:1024 0:128 4096:4096; do
	o=ro
	[ "${ra%:*}" = default ] || o=ro,read_ahead_kb=${ra%:*}
	if OCIFS_CACHE=$C0 mount_ocifs "$REG" "$M0" -o "$o"; then
		check_eq "-o $o: the mount's read-ahead is ${ra#*:} KiB" "${ra#*:}" \
			"$(cat "/sys/class/bdi/$(mountpoint -d "$M0")/read_ahead_kb" 2>&1)"
		check_eq "-o $o: a 16 MiB file reads right" "${HEX[a]}" \
			"$(out_hash cat "$M0/cache/lru/v1/a.bin")"
		umount_ocifs "$M0"
	fi
done

# ---------------------------------------------------------------- 1. random read
C1=$TESTDIR/cache1
M1=$TESTDIR/m1
if OCIFS_CACHE=$C1 mount_ocifs "$REG" "$M1" -o ro,chunk_size=1M; then
	h=${HEX[rand]}
	off=$((32 * MiB + 7 * 4096))
	mark=$(reg_log_mark)
	dd if="$M1/cache/rand/v1/rand.bin" of="$W/rand.got" bs=4096 skip=$((off / 4096)) count=1 \
		status=none 2>"$W/rand.err"
	check_eq "random 4 KiB read in the middle of a 64 MiB file succeeds" "" "$(cat "$W/rand.err")"
	dd if="$W/rand.bin" of="$W/rand.want" bs=4096 skip=$((off / 4096)) count=1 status=none
	check_same "random 4 KiB read gives the right bytes" "$W/rand.want" "$W/rand.got"
	reg_log_quiet 10
	served=$(served_bytes "$h" "$mark")
	if [ "$served" -gt 0 ] && [ "$served" -lt $((8 * MiB)) ]; then
		ok "random read: registry served $served bytes of the 64 MiB blob (< 8 MiB)"
	else
		not_ok "random read: registry served $served bytes of the 64 MiB blob (want 1..8 MiB)"
		served_ranges "$h" "$mark" | head -n 20 | sed 's/^/#   /'
	fi
	map=$C1/partial/$h.map
	check "random read: partial/<hex>.map exists" test -f "$map"
	check_eq "random read: the map has one byte per chunk" 64 "$(stat -c %s "$map" 2>&1)"
	ones=$(cache_map_ones "$map")
	if [ "$ones" -ge 1 ] && [ "$ones" -le 8 ]; then
		ok "random read: the map records $ones fetched chunk(s) (1..8)"
	else
		not_ok "random read: the map records $ones fetched chunks (want 1..8)"
	fi
	check_eq "random read: the map marks the chunk read (32) as fetched" 1 \
		"$(od -An -tu1 -j $((off / CHUNK)) -N1 "$map" 2>/dev/null | tr -d ' ')"
	check "random read: partial/<hex> exists" test -f "$C1/partial/$h"
	alloc=$(($(stat -c '%b * %B' "$C1/partial/$h" 2>/dev/null || echo 0)))
	if [ -f "$C1/partial/$h" ] && [ "$alloc" -lt $((16 * MiB)) ]; then
		ok "random read: partial/<hex> is sparse ($alloc bytes on disk)"
	else
		not_ok "random read: partial/<hex> is sparse" "$alloc bytes on disk"
	fi
	check_fail "random read: the blob is not complete in blobs/" test -e "$C1/blobs/sha256/$h"
	check_eq "random read: partial/ is 0700, the partial file and its map 0600" "700 600 600" \
		"$(stat -c %a "$C1/partial" "$C1/partial/$h" "$map" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
	umount_ocifs "$M1"
fi

# ---------------------------------------------------------------- 2. resume after kill -9
C2=$TESTDIR/cache2
M2=$TESTDIR/m2
h=${HEX[resume]}
map=$C2/partial/$h.map
if OCIFS_CACHE=$C2 mount_ocifs "$REG" "$M2" -o ro,chunk_size=1M; then
	F=$M2/cache/resume/v1/resume.bin
	dd if="$F" bs=1M count=16 iflag=fullblock status=none 2>"$W/resume.err" >"$W/resume.head"
	check_same "first 16 MiB read right" <(head -c $((16 * MiB)) "$W/resume.bin") "$W/resume.head"
	wait_until 5 map_has "$map" 16
	n=$(cache_map_ones "$map")
	check "the map records at least the 16 chunks read ($n)" test "$n" -ge 16
	check "kill -9 the daemon mid-read and detach its mount" kill9_ocifs "$M2"
	fetched=$(cache_map_ones "$map")
	check "partial/<hex> and its map survive the crash" test -f "$C2/partial/$h" -a -f "$map"
	check "the crash left chunks to fetch ($fetched of $RESUME_CHUNKS fetched)" \
		test "$fetched" -lt "$RESUME_CHUNKS"
	reg_log_quiet 10
	mark=$(reg_log_mark)
	if OCIFS_CACHE=$C2 mount_ocifs "$REG" "$M2" -o ro,chunk_size=1M; then
		check_eq "after remount, cat of the whole file has the right sha256" "${HEX[resume]}" \
			"$(out_hash cat "$F")"
		reg_log_quiet 10
		served=$(served_bytes "$h" "$mark")
		limit=$(((RESUME_CHUNKS - fetched + 1) * CHUNK))
		if [ "$served" -le "$limit" ]; then
			ok "resume: second session fetched $served bytes (<= $limit: the chunks not fetched + 1)"
		else
			not_ok "resume: second session fetched $served bytes, more than $limit" \
				"($RESUME_CHUNKS MiB - $fetched fetched chunks + one chunk)"
			served_ranges "$h" "$mark" | head -n 20 | sed 's/^/#   /'
		fi
		wait_until 5 test -f "$C2/blobs/sha256/$h"
		check_eq "resume: blobs/sha256/<hex> is complete and right" "$h" \
			"$(sha256_hex "$C2/blobs/sha256/$h" 2>/dev/null)"
		wait_until 5 partial_gone "$C2" "$h"
		check "resume: partial/<hex> and its map are gone" partial_gone "$C2" "$h"
		umount_ocifs "$M2"
	fi
fi

# ---------------------------------------------------------------- 3. single flight
C3=$TESTDIR/cache3
M3=$TESTDIR/m3
h=${HEX[flight]}
if OCIFS_CACHE=$C3 mount_ocifs "$REG" "$M3" -o ro,chunk_size=1M; then
	R=$M3/cache
	paths=(
		"$R/flight/v1/flight.bin"
		"$R/flight/${DFLIGHT}/flight.bin"
		"$R/flight:v1/flight.bin"
		"$R/flight/v1/.oci/blobs/sha256/$h"
		"$R/flight@${DFLIGHT}/flight.bin"
		"$R/flight/v1/flight.bin"
		"$R/flight/${DFLIGHT}/.oci/blobs/sha256/$h"
		"$R/flight:v1/flight.bin"
	)
	# resolve the paths first (no blob fetch) so that the readers start together
	stat -- "${paths[@]}" >/dev/null 2>&1
	mark=$(reg_log_mark)
	pids=()
	for i in "${!paths[@]}"; do
		(sha256sum <"${paths[$i]}" | cut -d' ' -f1 >"$W/flight.$i") 2>"$W/flight.$i.err" &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p"; done
	good=0
	for i in "${!paths[@]}"; do
		if [ "$(cat "$W/flight.$i")" = "${HEX[flight]}" ]; then
			good=$((good + 1))
		else
			diag "reader $i ($(_lbl "${paths[$i]}")): $(cat "$W/flight.$i" "$W/flight.$i.err")"
		fi
	done
	check_eq "8 concurrent cold readers through 6 kinds of path all read the right bytes" 8 "$good"
	reg_log_quiet 10
	served=$(served_bytes "$h" "$mark")
	limit=$((64 * MiB * 11 / 10))
	if [ "$served" -le "$limit" ] && [ "$served" -ge $((64 * MiB)) ]; then
		ok "single flight: registry served $served bytes for the 64 MiB blob (<= 1.1x)"
	else
		not_ok "single flight: registry served $served bytes for the 64 MiB blob (want 64 MiB..1.1x)" \
			"in $(served_requests "$h" "$mark") requests"
	fi
	check_eq "single flight: the blob is complete and right in the cache" "$h" \
		"$(sha256_hex "$C3/blobs/sha256/$h" 2>/dev/null)"
	umount_ocifs "$M3"
fi

# ---------------------------------------------------------------- 4. corruption
C4=$TESTDIR/cache4
M4=$TESTDIR/m4
A4=$M4/cache/bad/v1
if OCIFS_CACHE=$C4 mount_ocifs "$REG" "$M4" -o ro,chunk_size=1M; then
	h=${HEX[bad-cat]}
	check_err "cat of a corrupt 5-chunk file fails with EIO" "Input/output error" \
		cat "$A4/bad-cat.bin"
	check_err "cp of it fails with EIO too" "Input/output error" cp "$A4/bad-cat.bin" "$W/bad-cat.cp"
	check_fail "the corrupt blob is not in blobs/" test -e "$C4/blobs/sha256/$h"
	wait_until 5 partial_gone "$C4" "$h"
	check "the corrupt blob left nothing in partial/" partial_gone "$C4" "$h"

	h=${HEX[bad-lazy]}
	# default mode: the first chunk may be handed out before verification;
	# whatever it does, the last chunk and the end of the file must fail
	head -c 100 "$A4/bad-lazy.bin" >/dev/null 2>&1
	check_err "reading only the last chunk of a corrupt file fails with EIO" "Input/output error" \
		dd if="$A4/bad-lazy.bin" of=/dev/null bs=1M skip=4 status=none
	check_err "reading a corrupt file to its end fails with EIO" "Input/output error" \
		cat "$A4/bad-lazy.bin"
	check_fail "that blob is not in blobs/" test -e "$C4/blobs/sha256/$h"
	wait_until 5 partial_gone "$C4" "$h"
	check "that blob left nothing in partial/" partial_gone "$C4" "$h"
	check_eq "a good multi-chunk file in the same artifact reads" "${HEX[good]}" \
		"$(out_hash cat "$A4/good.bin")"
	umount_ocifs "$M4"
fi

C5=$TESTDIR/cache5
M5=$TESTDIR/m5
A5=$M5/cache/bad/v1
if OCIFS_CACHE=$C5 mount_ocifs "$REG" "$M5" -o ro,chunk_size=1M,verify=strict; then
	h=${HEX[bad-strict]}
	check_err "verify=strict: head -c 100 of a corrupt multi-chunk file fails with EIO" \
		"Input/output error" head -c 100 "$A5/bad-strict.bin"
	check_fail "verify=strict: the corrupt blob is not in blobs/" test -e "$C5/blobs/sha256/$h"
	wait_until 5 partial_gone "$C5" "$h"
	check "verify=strict: it left nothing in partial/" partial_gone "$C5" "$h"
	head -c 100 "$W/good.bin" >"$W/good.100"
	check_same "verify=strict: head -c 100 of a good multi-chunk file reads right" "$W/good.100" \
		<(head -c 100 "$A5/good.bin" 2>&1)
	umount_ocifs "$M5"
fi

# ---------------------------------------------------------------- 5. cache_size
C6=$TESTDIR/cache6
M6=$TESTDIR/m6
# blobs_within CACHEDIR BYTES: its complete blobs add up to BYTES at most.
blobs_within() { [ "$(cache_blobs_bytes "$1")" -le "$2" ]; }
under_limit() { blobs_within "$C6" $((40 * MiB)); }
have() { [ -f "$C6/blobs/sha256/${HEX[$1]}" ]; }
# present_set: which of a b c d are complete in the cache, e.g. "b c"
present_set() {
	local n s=""
	for n in a b c d; do have "$n" && s="$s $n"; done
	echo "${s# }"
}
if OCIFS_CACHE=$C6 mount_ocifs "$REG" "$M6" -o ro,chunk_size=1M,cache_size=40M; then
	A6=$M6/cache/lru/v1
	for n in a b c d; do
		check_eq "cache_size=40M: $n.bin (16 MiB) reads right" "${HEX[$n]}" "$(out_hash cat "$A6/$n.bin")"
		wait_until 5 under_limit
		check "cache_size=40M: complete blobs <= 40 MiB after reading $n.bin ($(cache_blobs_bytes "$C6") bytes)" \
			under_limit
	done
	check_eq "cache_size=40M: the two least recently read (a, b) were evicted" "c d" "$(present_set)"
	# a fresh path to a (no page cache of the kernel in the way)
	mark=$(reg_log_mark)
	check_eq "an evicted blob reads right again" "${HEX[a]}" \
		"$(out_hash cat "$M6/cache/lru/$DLRU/.oci/blobs/sha256/${HEX[a]}")"
	reg_log_quiet 10
	served=$(served_bytes "${HEX[a]}" "$mark")
	check "the evicted blob was fetched again ($served bytes served)" test "$served" -ge $((16 * MiB))
	wait_until 5 under_limit
	check "complete blobs <= 40 MiB after re-reading a.bin" under_limit
	check_eq "re-reading a.bin evicted c, the least recently read" "a d" "$(present_set)"

	# d is now the least recently used; hold it open and read others
	exec 3<"$A6/d.bin"
	dd bs=1M count=1 iflag=fullblock status=none <&3 >"$W/d.part1"
	for n in b c; do
		# through a path not read before: the kernel's page cache of
		# $A6/$n.bin would answer without the daemon
		mark=$(reg_log_mark)
		check_eq "with d.bin held open, $n.bin reads right" "${HEX[$n]}" \
			"$(out_hash cat "$M6/cache/lru/$DLRU/$n.bin")"
		reg_log_quiet 10
		check "with d.bin held open, $n.bin was fetched again" \
			test "$(served_bytes "${HEX[$n]}" "$mark")" -ge $((16 * MiB))
		wait_until 5 under_limit
		check "with d.bin held open, complete blobs <= 40 MiB after reading $n.bin" under_limit
		check "d.bin, held open, is not evicted by reading $n.bin" have d
	done
	check_eq "with d.bin held open, the least recently used others went" "c d" "$(present_set)"
	cat <&3 >>"$W/d.part1"
	exec 3<&-
	check_same "d.bin read through the descriptor held open is right" "$W/d.bin" "$W/d.part1"

	# ---------------------------------------------------------------- 6. registry down
	registry_stop
	check_fail "the registry is down" curl -fsS -o /dev/null --max-time 2 "http://$REG/v2/"
	read_down=0
	for n in a b c d; do
		have "$n" || continue
		read_down=$((read_down + 1))
		# a path not read before: the daemon serves it, not the page cache
		check_eq "registry down: complete cached $n.bin reads through .oci/blobs" "${HEX[$n]}" \
			"$(out_hash cat "$M6/cache/lru/$DLRU/.oci/blobs/sha256/${HEX[$n]}")"
		check_eq "registry down: and by tag (last resolution)" "${HEX[$n]}" \
			"$(out_hash cat "$A6/$n.bin")"
	done
	# manifests fetched by digest are cached for good, whatever cache_size
	check_eq "registry down: a digest path not looked up before resolves (its manifest is cached)" \
		"$DLRU" "$(cat "$M6/cache/lru@$DLRU/.oci/digest" 2>&1)"
	check "registry down: there were complete blobs to read ($read_down)" test "$read_down" -ge 2
	check "daemon alive with the registry down" daemon_alive "$M6"
	umount_ocifs "$M6"
	registry_restart || bail "restart the registry"
fi

# A blob bigger than the whole bound: kept while its reader has it open,
# gone once nothing holds it.
C7=$TESTDIR/cache7
M7=$TESTDIR/m7
if OCIFS_CACHE=$C7 mount_ocifs "$REG" "$M7" -o ro,chunk_size=1M,cache_size=10M; then
	check_eq "cache_size=10M: a 16 MiB file reads right" "${HEX[a]}" \
		"$(out_hash cat "$M7/cache/lru/v1/a.bin")"
	wait_until 5 blobs_within "$C7" $((10 * MiB))
	check "cache_size=10M: once closed, complete blobs <= 10 MiB ($(cache_blobs_bytes "$C7") bytes)" \
		blobs_within "$C7" $((10 * MiB))
	umount_ocifs "$M7"
fi

finish

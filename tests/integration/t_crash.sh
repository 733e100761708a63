#!/bin/bash
# kill -9 of the daemon at random points: 20 times during a read, 20 times
# during a push. After each crash every complete blob in the cache verifies;
# reads resume from the chunks already fetched; staged pushes complete after
# a remount (or the log says why not); no tag in the registry names a
# manifest with a missing blob, and no tag holds a file cut short. Then a
# file held open half written when the daemon stops (a kill -9 once another
# file of its tag was closed; a SIGTERM) is no part of its tag.
# The kill points come from $RANDOM (the seed is printed); a slow registry
# (faultproxy.py dripping) makes a read span several of them.
# Lines "# RELIABILITY:" feed tests/RELIABILITY.md.
T_TIMEOUT=${T_TIMEOUT:-600}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env python3 jq sha256sum
SEED=${CRASH_SEED:-$$}
RANDOM=$SEED
echo "# kill points from seed $SEED (CRASH_SEED= repeats a run)"
ROUNDS=${CRASH_ROUNDS:-20}

MiB=$((1024 * 1024))
REG_ACCESSLOG=1 registry_start crash
W=$TESTDIR/w
mkdir -p "$W"
make_random_file "$W/big.bin" $((64 * MiB)) crash-big
push_artifact c/app v1 "$W" big.bin >/dev/null || bail "seed c/app:v1"
BIG=$(sha256_hex "$W/big.bin")
faultproxy_start "http://$REG"
M=$TESTDIR/mnt
C=$TESTDIR/cache

# a pause of FROM to FROM+800 ms (FROM: 50 by default): where the kill lands
pause() { sleep "0.$(printf '%03d' $((${1:-50} + RANDOM % 800)))"; }

# ---- reads: 256 KiB chunks and a drip of 640 KB/s a connection, so that a
# chunk completes now and then between kills and the 64 MiB file spans the rounds
fp_rules "[{\"id\":\"drip\",\"match\":\"/blobs/sha256:$BIG\",\"method\":\"GET\",\"drip\":65536}]"
bad=0
for ((i = 1; i <= ROUNDS; i++)); do
	OCIFS_CACHE=$C mount_ocifs "$FP" "$M" -o ro,chunk_size=256K >/dev/null ||
		{ bad=$((bad + 1)); continue; }
	cat "$M/c/app/v1/big.bin" >/dev/null 2>&1 &
	reader=$!
	pause
	kill9_ocifs "$M"
	wait "$reader" 2>/dev/null
	cache_verifies "$C" || bad=$((bad + 1))
done
check_eq "reads: $ROUNDS kills mid-read, every complete blob verified after each" 0 "$bad"
chunks=$(cache_map_ones "$C/partial/$BIG.map")
check "reads: the kills left chunks fetched in partial/ ($chunks of 256)" test "$chunks" -gt 0
# the proxy's own requests of the killed rounds end (and are logged by the
# registry) when it notices: stop it and let the log settle before counting
kill "$FP_PID" 2>/dev/null
wait "$FP_PID" 2>/dev/null
reg_log_quiet 20
mark=$(reg_log_mark)
OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o ro,chunk_size=256K || bail "mount after the read crashes"
check_same "reads: after remounting, the file reads right" "$W/big.bin" "$M/c/app/v1/big.bin"
umount_ocifs "$M"
reg_log_quiet
fetched=$(served_bytes "$BIG" "$mark")
check_eq "reads: and exactly the chunks missing were fetched then ($fetched of $((64 * MiB)) bytes)" \
	"$(((256 - chunks) * 262144))" "$fetched"
check "reads: the completed blob verifies" cache_verifies "$C"
echo "# RELIABILITY: kill -9 during reads: $ROUNDS rounds, $bad with a bad cache; $chunks of 256 chunks kept; the last read fetched $fetched of $((64 * MiB)) bytes"

# ---- pushes: each round stages a tag of its own and is killed somewhere in
# cp, close, upload or the manifest push; the next mount finishes what was staged
slow_copy() {
	python3 -c '
import sys, time
with open(sys.argv[1], "rb") as i, open(sys.argv[2], "wb") as o:
    while True:
        b = i.read(65536)
        if not b:
            break
        o.write(b)
        o.flush()
        time.sleep(0.02)' "$1" "$2"
}
# staged_bytes: this round's file has reached the staging area with some of its bytes
staged_bytes() {
	[ -n "$(find "$C/staging" -type f ! -name draft.json -size +0 -newer "$TESTDIR/.round" \
		-print -quit 2>/dev/null)" ]
}
for ((i = 1; i <= ROUNDS; i++)); do
	OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o push_delay=3600 >/dev/null || continue
	if ((i % 2)); then
		# a writer of 64 KiB each 20 ms (about a second for the file): the
		# kill lands while it writes
		make_random_file "$W/p$i.bin" $((3 * MiB + i)) "crash-push-$i"
		touch "$TESTDIR/.round"
		(mkdir "$M/c/app/p$i" && slow_copy "$W/p$i.bin" "$M/c/app/p$i/f.bin" &&
			sync "$M/c/app/p$i") >/dev/null 2>&1 &
		writer=$!
		# past the writer's start: its file holds bytes (else nothing is cut)
		wait_until 20 staged_bytes
		pause
	else
		# cp of 32 MiB: the kill lands in the copy, the upload at close, or the push
		make_random_file "$W/p$i.bin" $((32 * MiB + i)) "crash-push-$i"
		touch "$TESTDIR/.round"
		(mkdir "$M/c/app/p$i" && cp "$W/p$i.bin" "$M/c/app/p$i/f.bin" &&
			sync "$M/c/app/p$i") >/dev/null 2>&1 &
		writer=$!
		wait_until 20 staged_bytes
		pause
	fi
	kill9_ocifs "$M"
	wait "$writer" 2>/dev/null
done
# the last mount finishes what the crashes left staged, then unmounts cleanly
OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o push_delay=1 || bail "mount after the push crashes"
settled() { [ -z "$(ls -A "$C/staging" 2>/dev/null)" ]; }
wait_until 60 settled
umount_ocifs "$M"
pushed=0 absent=0 cut=0 broken=0
for ((i = 1; i <= ROUNDS; i++)); do
	if ! manifest_get c/app "p$i" >/dev/null 2>&1; then
		absent=$((absent + 1))
		continue
	fi
	tag_whole c/app "p$i" || broken=$((broken + 1))
	got=$(blob_get c/app "$(manifest_get c/app "p$i" | jq -r '.layers[0].digest')" | sha256sum | cut -d' ' -f1)
	if [ "$got" = "$(sha256_hex "$W/p$i.bin")" ]; then
		pushed=$((pushed + 1))
	else
		cut=$((cut + 1))
	fi
done
check_eq "pushes: no tag names a manifest with a missing blob" 0 "$broken"
check_eq "pushes: no tag holds a file cut short by a crash" 0 "$cut"
left=$(ls -A "$C/staging" 2>/dev/null | wc -l)
check_eq "pushes: nothing is left staged once the last mount pushed it" 0 "$left"
dropped=$(cat "$TESTDIR"/ocifs.*.log 2>/dev/null | grep -c 'never closed.*dropped')
check_eq "pushes: each tag not pushed had its file cut by the kill, and a later mount said it dropped it" \
	"$absent" "$dropped"
check "reads and pushes: the cache verifies at the end" cache_verifies "$C"
echo "# RELIABILITY: kill -9 during pushes: $ROUNDS rounds: $pushed tags pushed whole, $absent not pushed (killed before their file was closed), $cut cut short, $broken with missing blobs"

# ---- a file still being written when the daemon stops is no part of a tag:
# a tag names each of its files as it was last closed. A kill -9 right after
# another file of the same tag was closed (which writes the draft down), and
# a SIGTERM (whose exit pushes what is pending), each with a file half written
# by a process that holds it open (one descriptor: no close before the end).
make_random_file "$W/o.bin" $((3 * MiB)) crash-open
# half_writer NAME SRC DST: write the first MiB of SRC to DST, then wait with
# DST open (one descriptor, no close before the end) until half_writer_end
# NAME; then the rest, and close.
half_writer() {
	mkfifo "$TESTDIR/hw.$1.go" || bail "mkfifo"
	half_write "$2" "$3" "$TESTDIR/hw.$1.ready" "$TESTDIR/hw.$1.go" >/dev/null 2>&1 &
	_HW[$1]=$!
	wait_until 30 test -e "$TESTDIR/hw.$1.ready"
}
# half_writer_end NAME: let it go on; its exit status.
half_writer_end() {
	echo go >"$TESTDIR/hw.$1.go"
	wait "${_HW[$1]}"
}
declare -A _HW
# layers_of TAG: "title=size" of each layer of c/app:TAG, sorted
layers_of() {
	manifest_get c/app "$1" |
		jq -r '[.layers[] | "\(.annotations["org.opencontainers.image.title"])=\(.size)"] | sort | join(" ")'
}
OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o push_delay=3600 >/dev/null || bail "mount for the open files"
mkdir "$M/c/app/o1" || bail "mkdir c/app/o1"
half_writer o1 "$W/o.bin" "$M/c/app/o1/open.bin"
echo done >"$M/c/app/o1/done.txt"
kill9_ocifs "$M"
half_writer_end o1
OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o push_delay=3600 >/dev/null || bail "mount after the kill -9"
wait_until 60 settled
check_eq "open files: after a kill -9, the tag names the file that was closed, not the one half written" \
	"done.txt=5" "$(layers_of o1)"
check "open files: the next mount said it dropped the file never closed" \
	grep -q "c/app:o1: .*never closed.*dropped" "$OCIFS_LOG"
mkdir "$M/c/app/o2" "$M/c/app/o3" || bail "mkdir c/app/o2 c/app/o3"
half_writer o2 "$W/o.bin" "$M/c/app/o2/open.bin"
echo done >"$M/c/app/o2/done.txt"
half_writer o3 "$W/o.bin" "$M/c/app/o3/open.bin"
# the daemon unmounts (lazily: files are open) and pushes what is pending
kill -TERM "$OCIFS_PID"
wait "$OCIFS_PID"
half_writer_end o2
half_writer_end o3
check_eq "open files: a SIGTERM pushes the file that was closed, not the one half written" \
	"done.txt=5" "$(layers_of o2)"
check_fail "open files: nor a tag whose only file was half written" manifest_get c/app o3
OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o push_delay=3600 >/dev/null || bail "mount after the SIGTERM"
wait_until 60 settled
umount_ocifs "$M"
check "open files: the mount after them left nothing staged" settled
check_eq "open files: and the tag still names only the closed file" "done.txt=5" "$(layers_of o2)"
check_fail "open files: and made no tag of the half-written file" manifest_get c/app o3
finish

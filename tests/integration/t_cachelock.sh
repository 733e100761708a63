#!/bin/bash
# The cache's lock order under load: .ocifs/stats.json and user.ocifs.cached
# read in tight loops while readers of several cold blobs behind a slow link
# (the fault proxy drips the blobs) keep queuing fetches. Every status read
# and every file read must complete (bounded by timeout, so that a deadlock
# fails the test instead of hanging it), and the files must read right.
T_TIMEOUT=${T_TIMEOUT:-300}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env getfattr timeout python3 sha256sum

MiB=$((1024 * 1024))
NBLOBS=6
registry_start cachelock
W=$TESTDIR/w
mkdir -p "$W"
files=()
for i in $(seq 1 $NBLOBS); do
	make_random_file "$W/f$i.bin" $((16 * MiB)) "cachelock-$i"
	files+=("f$i.bin")
done
push_artifact lock/files v1 "$W" "${files[@]}" >/dev/null || bail "seed lock/files:v1"

# Blobs dripped at 64 KiB a tenth of a second per request: fetches stay in
# flight for seconds while readers ask for more chunks.
faultproxy_start "http://$REG"
fp_rules '[{"id":"slow","match":"/blobs/sha256:","method":"GET","drip":65536}]'

M=$TESTDIR/mnt
mount_ocifs "$FP" "$M" -o ro,chunk_size=64K,timeout=60 || bail "mount through the slow proxy"
A=$M/lock/files/v1
S=$M/.ocifs/stats.json
stat -- "${files[@]/#/$A/}" >/dev/null || bail "the files resolve"

# The load: threads reading 4 KiB at random offsets of every file (each read
# of a chunk not there queues a fetch under the blob's lock), and threads
# reading stats.json and user.ocifs.cached as fast as they can, for DURATION
# seconds. Prints "reads=N status=M" and exits 0 once every thread is done.
cat >"$TESTDIR/hammer.py" <<'EOF'
import os, random, sys, threading, time
mnt_files, stats, duration = sys.argv[3:], sys.argv[1], float(sys.argv[2])
end = time.monotonic() + duration
counts = {"reads": 0, "status": 0}
lock = threading.Lock()
errors = []

def reader(seed):
    rnd = random.Random(seed)
    fds = [os.open(f, os.O_RDONLY) for f in mnt_files]
    size = os.fstat(fds[0]).st_size
    n = 0
    while time.monotonic() < end:
        fd = rnd.choice(fds)
        # never the last chunk: that read would wait for the whole blob
        off = rnd.randrange(0, size - 256 * 1024) & ~4095
        if len(os.pread(fd, 4096, off)) != 4096:
            errors.append("short read")
        n += 1
    for fd in fds:
        os.close(fd)
    with lock:
        counts["reads"] += n

def status(seed):
    n = 0
    while time.monotonic() < end:
        with open(stats, "rb") as f:
            f.read()
        for p in mnt_files:
            os.getxattr(p, "user.ocifs.cached")
        n += 1
    with lock:
        counts["status"] += n

ts = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
ts += [threading.Thread(target=status, args=(i,)) for i in range(4)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print("reads=%d status=%d" % (counts["reads"], counts["status"]))
sys.exit(1 if errors else 0)
EOF

# getfattr and cat of stats.json from the shell meanwhile, each bounded.
status_loop() {
	local i rc bad=0 n=0 f
	for ((i = 0; i < 150; i++)); do
		timeout -k 2 10 cat "$S" >/dev/null
		rc=$?
		[ "$rc" = 0 ] || { bad=$((bad + 1)); echo "cat stats.json: exit $rc"; }
		f=$A/${files[$((i % NBLOBS))]}
		timeout -k 2 10 getfattr --absolute-names --only-values -n user.ocifs.cached "$f" >/dev/null
		rc=$?
		[ "$rc" = 0 ] || { bad=$((bad + 1)); echo "getfattr $f: exit $rc"; }
		n=$((n + 2))
		# one hang is enough: the next ones would only wait as long
		[ "$bad" = 0 ] || break
	done
	echo "shell status reads: $n, failed: $bad"
	[ "$bad" = 0 ]
}

# in_flight N: stats.json lists at least N blobs being fetched
in_flight() { [ "$(timeout -k 2 10 jq '.blobs_in_flight | length' "$S")" -ge "$1" ]; }

timeout -k 5 60 python3 "$TESTDIR/hammer.py" "$S" 10 "${files[@]/#/$A/}" \
	>"$TESTDIR/hammer.out" 2>&1 &
hp=$!
status_loop >"$TESTDIR/status_loop.out" 2>&1 &
sl=$!
check "during the load, stats.json lists several blobs in flight" wait_until 15 in_flight 3
wait "$hp"
rc=$?
diag "$(cat "$TESTDIR/hammer.out")"
# hung: a deadlocked daemon stays so; kill it (which aborts the mount) and stop here
hung() {
	kill9_ocifs "$M"
	finish
}
check_eq "random reads and status reads during cold fetches all complete (no hang)" 0 "$rc" ||
	hung
wait "$sl"
rc=$?
diag "$(tail -n 3 "$TESTDIR/status_loop.out")"
check_eq "cat stats.json and getfattr user.ocifs.cached from the shell all complete" 0 "$rc" ||
	hung
check "the registry was reached through the slow proxy" \
	test "$(fp_count '.rule == "slow"')" -ge "$NBLOBS"
check "the daemon is alive" daemon_alive "$M"
check "stats.json is still JSON" timeout -k 2 10 jq -e . "$S"

# Every file reads right, whole (bounded: a hang fails here too).
for f in "${files[@]}"; do
	got=$(timeout -k 5 120 sha256sum <"$A/$f" | cut -d' ' -f1)
	check_eq "$f reads right after the load" "$(sha256_hex "$W/$f")" "$got"
done
check "every complete blob in the cache verifies" cache_verifies "$CACHE"
umount_ocifs "$M"
finish

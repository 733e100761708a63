#!/bin/bash
# Restart benchmark: how long a mount does not answer after its server is
# killed -9. With the keeper (the default), the time from the kill to the
# next answered request (a read of .ocifs/stats.json and of a file of the
# mount); the peer is the same mount with -o no_keeper, where the kill ends
# the mount and the time runs until a new mount answers the same requests
# (fusermount3 -u -z, then ocifs again, as a service manager would). Not a
# test: it prints figures and a summary block, and exits 0 unless the setup
# fails.
#
#   OCIFS=/path/to/ocifs srcdir=/path/to/ocifs-source bash tests/bench/restart.sh
#
# BENCH_ROUNDS (default 20) sets the kills of each kind (min/median/max
# printed). restart_vs_remount is (remount seconds) / (keeper seconds):
# above 1 means the keeper answers sooner.
T_TIMEOUT=${T_TIMEOUT:-1800}
: "${srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${OCIFS:=$srcdir/ocifs}"
export srcdir OCIFS
. "$srcdir/tests/integration/lib.sh"
require_env jq
ROUNDS=${BENCH_ROUNDS:-20}
. "$srcdir/tests/bench/lib.sh"

registry_start bench
W=$TESTDIR/w
mkdir -p "$W"
make_random_file "$W/f.bin" $((4 * 1024 * 1024)) restart-bench
push_artifact b/app v1 "$W" f.bin >/dev/null || bail "seed b/app:v1"
say "# registry $REG, ocifs $OCIFS, $ROUNDS kills each, $(nproc) cores"
M=$TESTDIR/mnt
C=$TESTDIR/cache

# answers: the mount answers stats.json and a file read (from the cache, warm)
answers() {
	jq -e .server_pid "$M/.ocifs/stats.json" >/dev/null 2>&1 &&
		cmp -s "$W/f.bin" "$M/b/app/v1/f.bin"
}
# until_answers: poll answers every 5 ms for at most 60 s
until_answers() {
	local i
	for ((i = 0; i < 12000; i++)); do
		answers && return 0
		nap 0.005
	done
	return 1
}

# ---- with the keeper: kill the server, time until the mount answers
bmount "$C" "$M"
answers || bail "the mount does not answer"
keeper=()
for ((r = 0; r < ROUNDS; r++)); do
	s=$(server_pid "$M")
	t0=$(now)
	kill -KILL "$s"
	until_answers || bail "no answer after a kill"
	keeper+=("$(elapsed "$t0")")
	[ "$(server_pid "$M")" != "$s" ] || bail "the same server answered"
done
bumount "$M"
say "keeper: kill -9 of the server to the next answer: $(stats "${keeper[@]}") s"

# ---- without: kill the daemon, unmount, mount again, time until it answers
remount=()
for ((r = 0; r < ROUNDS; r++)); do
	OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o no_keeper >>"$LOG" 2>&1 || bail "mount -o no_keeper"
	answers || bail "the mount does not answer"
	t0=$(now)
	kill -KILL "$OCIFS_PID"
	wait "$OCIFS_PID" 2>/dev/null
	unset "_LIB_MOUNT_PID[$M]"
	fusermount3 -u -z "$M"
	OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o no_keeper >>"$LOG" 2>&1 || bail "mount again"
	until_answers || bail "no answer after the remount"
	remount+=("$(elapsed "$t0")")
	bumount "$M"
done
say "no_keeper: kill -9 of the daemon, unmount and mount again, to the next answer: $(stats "${remount[@]}") s"

med() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
setr keeper_restart_s "$(stats "${keeper[@]}")"
setr remount_s "$(stats "${remount[@]}")"
setr restart_vs_remount_median "$(ratio "$(med "${remount[@]}")" "$(med "${keeper[@]}")")"
bench_summary

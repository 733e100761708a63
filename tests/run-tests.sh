#!/bin/bash
# Run every test program given, TEST_JOBS of them at a time; each prints
# TAP-style "ok - ..." and "not ok - ..." lines and exits 0 pass, 1 fail,
# 77 skip. Each program's output goes to tests/logs/NAME.log; the summary
# comes once every test is done, one PASS/FAIL/SKIP line per test in the
# order given (whatever order they finished in), ending with one line:
#   N passed, N failed, N skipped
# A program that fails without a "not ok" line counts as one failure.
#
# The longest tests start first: their durations in this log directory's
# "durations" file (written by each run), else in tests/durations (the
# normal build's, kept in the tree); a test found in neither starts first.
#
# TEST_JOBS: how many tests run at once. The default is 3 per core for the
# normal build (the integration tests mostly wait on registries, mounts and
# timeouts), 2 per core for an AddressSanitizer build and 5 per 2 cores for
# a ThreadSanitizer one; see tests/README.md for the figures. TEST_JOBS=1
# runs them one at a time. A sanitizer build's tests get watchdogs 2 (ASan)
# or 3 (TSan) times as long (T_TIMEOUT_SCALE).
set -u
logdir=${TEST_LOGDIR:-$(pwd)/tests/logs}
mkdir -p "$logdir"
top=${srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
status=$logdir/.status
rm -rf "$status"
mkdir -p "$status"

ncpu=$(nproc 2>/dev/null || echo 2)
san=
if [ -n "${OCIFS:-}" ] && [ -x "$OCIFS" ]; then
	case $(ldd "$OCIFS" 2>/dev/null) in
	*libtsan*) san=thread ;;
	*libasan*) san=address ;;
	esac
fi
case $san in
thread) njobs=$(((ncpu * 5 + 1) / 2)) scale=3 ;;
address) njobs=$((ncpu * 2)) scale=2 ;;
*) njobs=$((ncpu * 3)) scale=1 ;;
esac
njobs=${TEST_JOBS:-$njobs}
# the tests' watchdogs, for a daemon that runs slower
export T_TIMEOUT_SCALE=${T_TIMEOUT_SCALE:-$scale}
[ "$njobs" -ge 1 ] 2>/dev/null || njobs=1

# order NAME...: the tests given, longest first (unknown ones first of all)
order() {
	local d=$logdir/durations
	[ -s "$d" ] || d=$top/tests/durations
	[ -s "$d" ] || d=/dev/null
	for t in "$@"; do echo "$t"; done |
		awk -v dfile="$d" '
			BEGIN { while ((getline l < dfile) > 0) { split(l, f, " "); dur[f[1]] = f[2] } }
			{ n = $0; sub(/.*\//, "", n); printf "%s %d\n", $0, (n in dur) ? dur[n] : 1000000 }' |
		sort -s -k2,2nr | cut -d' ' -f1
}

# As root, each integration test runs in a mount namespace of its own
# (OCIFS_IN_NS=1: the tests that need one take this one): its FUSE mounts
# are then in no other namespace, so that no other process making one (a
# test's unshare -m, anywhere on the machine) gets a copy that would keep
# their connections up after the test unmounts them.
ns=()
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
	ns=(env OCIFS_IN_NS=1 unshare -m --propagation private)
fi

# TEST_CPU=1 (as root, with cgroup v1's cpuacct): each test runs in a
# cgroup of its own, so that the CPU time of everything it starts (daemons,
# registries, clients, the kernel's work for them) is counted; "NAME
# SECONDS" lines go to $logdir/cpu, and the total is printed at the end.
cpudir=/sys/fs/cgroup/cpuacct/ocifs-tests.$$
if [ "${TEST_CPU:-}" = 1 ]; then
	mkdir -p "$cpudir" || exit 1
	: >"$logdir/cpu"
fi
cpu_enter() {
	[ "${TEST_CPU:-}" = 1 ] || return 0
	mkdir -p "$cpudir/$1" && echo "$BASHPID" >"$cpudir/$1/tasks"
}
cpu_leave() {
	[ "${TEST_CPU:-}" = 1 ] || return 0
	echo "$1 $(awk '{ printf "%.1f", $1 / 1e9 }' "$cpudir/$1/cpuacct.usage")" >>"$logdir/cpu"
}

# run_one PATH: run the test, its output to its log, "RC SECONDS" to $status/NAME
run_one() {
	local t=$1 name log t0 rc
	name=$(basename "$t")
	log=$logdir/$name.log
	t0=$(date +%s)
	rm -rf "$logdir/$name.d"
	cpu_enter "$name"
	case "$t" in
	*.sh) OCIFS_FAIL_LOGS=$logdir/$name.d ${ns[@]+"${ns[@]}"} bash "$t" >"$log" 2>&1 </dev/null ;;
	*) "$t" >"$log" 2>&1 </dev/null ;;
	esac
	rc=$?
	echo "$rc $(($(date +%s) - t0))" >"$status/$name"
	cpu_leave "$name"
	slot_put
	[ -t 2 ] && echo "# $name: exit $rc, $(($(date +%s) - t0)) s" >&2
	return 0
}

# TEST_SLOTS_FIFO: a FIFO holding one byte per test that may run on the
# machine, shared by several runs at once (contrib/test.sh runs its passes
# side by side): each test takes a byte before it starts and puts it back
# when it ends, besides this run's own limit of TEST_JOBS.
slotfd=
if [ -n "${TEST_SLOTS_FIFO:-}" ]; then
	exec {slotfd}<>"$TEST_SLOTS_FIFO" || exit 1
fi
slot_take() { [ -z "$slotfd" ] || read -r -N 1 -u "$slotfd" _; }
slot_put() { [ -z "$slotfd" ] || printf x >&"$slotfd"; }

start=$(date +%s)
mapfile -t queue < <(order "$@")
running=0
for t in "${queue[@]}"; do
	if [ "$running" -ge "$njobs" ]; then
		wait -n
		running=$((running - 1))
	fi
	slot_take
	run_one "$t" &
	running=$((running + 1))
done
wait
wall=$(($(date +%s) - start))

passed=0 failed=0 skipped=0
for t in "$@"; do
	name=$(basename "$t")
	log="$logdir/$name.log"
	read -r rc secs <"$status/$name" 2>/dev/null || {
		rc=1 secs=0
		echo "not ok - $name did not report" >>"$log"
	}
	ok=$(grep -c '^ok ' "$log")
	nok=$(grep -c '^not ok ' "$log")
	if [ "$rc" = 77 ]; then
		skipped=$((skipped + 1))
		echo "SKIP: $name ($(grep -m1 -i '^# skip' "$log" || echo 'skipped'))"
		continue
	fi
	if [ "$rc" != 0 ] && [ "$nok" = 0 ]; then
		nok=1
		echo "not ok - $name exited $rc" >>"$log"
	fi
	passed=$((passed + ok))
	failed=$((failed + nok))
	if [ "$nok" = 0 ]; then
		echo "PASS: $name ($ok)"
	else
		echo "FAIL: $name ($ok passed, $nok failed; log: $log)"
		grep '^not ok ' "$log" | sed 's/^/    /'
	fi
done

# this run's durations replace the ones recorded for the same tests
{
	[ -f "$logdir/durations" ] && cat "$logdir/durations"
	for f in "$status"/*; do
		[ -e "$f" ] || continue
		read -r rc secs <"$f"
		echo "$(basename "$f") $secs"
	done
} | awk '{ d[$1] = $2 } END { for (n in d) print n, d[n] }' | sort >"$logdir/durations.new" &&
	mv -f "$logdir/durations.new" "$logdir/durations"

if [ "${TEST_CPU:-}" = 1 ]; then
	echo "# CPU seconds per test (longest first), in $logdir/cpu:"
	sort -k2,2nr "$logdir/cpu" | awk '{ s += $2; printf "#   %s %s\n", $1, $2 } END { printf "#   total %.1f\n", s }'
	# a test's processes still running (none should be) go back to the root group
	for d in "$cpudir"/*/; do
		[ -d "$d" ] || continue
		while read -r p; do echo "$p" >"$cpudir/../tasks"; done <"$d/tasks" 2>/dev/null
		rmdir "$d" 2>/dev/null
	done
	rmdir "$cpudir" 2>/dev/null
fi
echo "# $# tests in $wall s, $njobs at a time (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]

#!/bin/bash
# Run chosen tests again and again, to find the rare failure:
#
#   contrib/soak.sh TEST... [-n N] [-b BUILDDIR] [-j JOBS]
#
# TEST is a test's name (t_crash, t_crash.sh, test_layer, fuzz_parsers) or
# its path. Each one runs N times (default 10) in BUILDDIR (default the
# project root: the normal build; build-sanitizers or build-tsan for the
# sanitizer builds contrib/test.sh makes), JOBS runs at a time (default 1;
# more loads the machine as the parallel suite does). A ThreadSanitizer
# build gets contrib/test.sh's TSAN_OPTIONS.
#
# Each run's output goes to BUILDDIR/tests/logs/soak/NAME.RUN.log. Each
# failure is reported with its log, its "not ok" lines and the seed the test
# printed (t_crash.sh: "# kill points from seed N"; CRASH_SEED=N repeats its
# kill points), then one line per test and a last line:
#   N runs, N failed
# The exit status is 0 when no run failed.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
runs=10 build=$top jobs=1 tests=()
usage() {
	sed -n '2,/^set -u/p' "$0" | sed -e '/^set -u/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}
while [ $# -gt 0 ]; do
	case $1 in
	-n) runs=${2:?}; shift 2 ;;
	-b) build=${2:?}; shift 2 ;;
	-j) jobs=${2:?}; shift 2 ;;
	-h | --help) usage ;;
	-*) usage ;;
	*) tests+=("$1"); shift ;;
	esac
done
[ ${#tests[@]} -gt 0 ] || usage
build=$(cd "$build" && pwd) || exit 2
[ -x "$build/ocifs" ] || { echo "soak.sh: no ocifs built in $build" >&2; exit 2; }
src=$(sed -n 's/^abs_srcdir = //p' "$build/Makefile" 2>/dev/null)
[ -n "$src" ] || src=$build
export OCIFS=$build/ocifs srcdir=$src
export ORAS_FIXTURES=${ORAS_FIXTURES:-$top/../shared/fixtures/oras-e2e}
if ldd "$OCIFS" 2>/dev/null | grep -q libtsan; then
	export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 report_signal_unsafe=0 \
suppressions=$src/contrib/tsan.supp ${TSAN_OPTIONS:-}"
	export T_TIMEOUT_SCALE=${T_TIMEOUT_SCALE:-3}
elif ldd "$OCIFS" 2>/dev/null | grep -q libasan; then
	export T_TIMEOUT_SCALE=${T_TIMEOUT_SCALE:-2}
fi

# path NAME: the test's program or script
path() {
	local n=${1%.sh} p
	case $1 in */*) echo "$1"; return ;; esac
	for p in "$src/tests/integration/$n.sh" "$build/tests/unit/$n" "$build/tests/fuzz/$n"; do
		[ -e "$p" ] && { echo "$p"; return; }
	done
	echo "soak.sh: no test $1" >&2
	return 1
}
paths=()
for t in "${tests[@]}"; do
	p=$(path "$t") || exit 2
	paths+=("$p")
done

# as run-tests.sh: an integration test in a mount namespace of its own
ns=()
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
	ns=(env OCIFS_IN_NS=1 unshare -m --propagation private)
fi
logdir=$build/tests/logs/soak
mkdir -p "$logdir"
# one_run PATH RUN: the run's "RC SECONDS" in its .rc file
one_run() {
	local p=$1 i=$2 name log t0 rc
	name=$(basename "$p" .sh)
	log=$logdir/$name.$i.log
	t0=$(date +%s)
	case $p in
	*.sh)
		rm -rf "$logdir/$name.$i.d"
		OCIFS_FAIL_LOGS=$logdir/$name.$i.d ${ns[@]+"${ns[@]}"} bash "$p" >"$log" 2>&1 </dev/null
		;;
	*) (cd "$build" && "$p") >"$log" 2>&1 </dev/null ;;
	esac
	rc=$?
	echo "$rc $(($(date +%s) - t0))" >"$logdir/$name.$i.rc"
}

echo "# soak: ${tests[*]}, $runs runs each, $jobs at a time, in $build"
rm -f "$logdir"/*.rc
running=0
for ((i = 1; i <= runs; i++)); do
	for p in "${paths[@]}"; do
		if [ "$running" -ge "$jobs" ]; then
			wait -n
			running=$((running - 1))
		fi
		one_run "$p" "$i" &
		running=$((running + 1))
	done
done
wait

total=0 bad=0
for p in "${paths[@]}"; do
	name=$(basename "$p" .sh)
	n=0 f=0 sum=0 max=0
	for ((i = 1; i <= runs; i++)); do
		log=$logdir/$name.$i.log
		read -r rc secs <"$logdir/$name.$i.rc" 2>/dev/null || rc=none secs=0
		n=$((n + 1)) sum=$((sum + secs))
		[ "$secs" -gt "$max" ] && max=$secs
		# a skip is not a failure; a failure is a non-zero exit or a "not ok" line
		[ "$rc" = 77 ] && continue
		if [ "$rc" != 0 ] || grep -q '^not ok ' "$log"; then
			f=$((f + 1))
			echo "FAIL: $name run $i (exit $rc, $secs s): $log"
			grep -m1 -iE '^# .*seed' "$log" | sed 's/^# */    seed: /'
			grep '^not ok ' "$log" | head -n 10 | sed 's/^/    /'
		fi
	done
	echo "$name: $n runs, $f failed, $((sum / n)) s on average, $max s at most"
	total=$((total + n)) bad=$((bad + f))
done
echo "$total runs, $bad failed"
[ "$bad" = 0 ]

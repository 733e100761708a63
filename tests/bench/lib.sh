# shellcheck shell=bash
# Shared by the benchmarks in tests/bench/: timing, ratios, quiet mounts and
# the summary block. Source it after tests/integration/lib.sh.

LOG=$TESTDIR/bench.log
# the benchmarks' registries run with Go's defaults (the tests' are tuned
# for CPU, not speed: tests/integration/lib.sh)
REG_GOMAXPROCS= REG_GOGC=
declare -A R=()   # summary: name -> value
RORDER=()

say() { printf '%s\n' "$*"; }
# setr NAME VALUE: a line of the summary block
setr() {
	[ -n "${R[$1]+x}" ] || RORDER+=("$1")
	R[$1]=$2
}
now() { echo "${EPOCHREALTIME/,/.}"; }
# elapsed T0: seconds since T0 (a now), to the millisecond
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
# tm CMD...: run CMD (its output goes where the caller redirects it), set T
# (seconds, float) and TRC (its status).
tm() {
	local t0
	t0=$(now)
	"$@"
	TRC=$?
	T=$(elapsed "$t0")
}
# tmc CMD...: tm, and TCPU: the seconds of CPU (user + system) of CMD and of
# every process it waited for. CMD's output goes to /dev/null.
tmc() {
	local t0 out TIMEFORMAT='%3U %3S'
	t0=$(now)
	out=$({ time "$@" >/dev/null 2>&3; } 3>&2 2>&1)
	TRC=$?
	T=$(elapsed "$t0")
	TCPU=$(awk '{ printf "%.2f", $1 + $2 }' <<<"$out")
}
# first_touch_mbs: how fast this machine gives a process memory it has not
# touched before (MB/s; a virtual machine whose host backs guest pages on
# first use is far slower at it than at writing memory already touched)
first_touch_mbs() {
	python3 -c '
import mmap, time
n = 512 << 20
m = mmap.mmap(-1, n)
blk = b"x" * (1 << 20)
t = time.perf_counter()
for i in range(0, n, 1 << 20):
    m[i:i + (1 << 20)] = blk
t1 = time.perf_counter()
for i in range(0, n, 1 << 20):
    m[i:i + (1 << 20)] = blk
t2 = time.perf_counter()
print("%.0f %.0f" % (n / 1e6 / (t1 - t), n / 1e6 / (t2 - t1)))'
}
# ratio A B: A/B with 2 decimals (n/a when either is missing or B is 0)
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "" || b == "" || a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a";
		else printf "%.3g\n", a / b }'
}
mibs() { awk -v s="$1" -v t="$2" 'BEGIN { if (t > 0) printf "%.1f", s / 1048576 / t; else print "inf" }'; }
ms() { awk -v t="$1" 'BEGIN { printf "%.1f", t * 1000 }'; }
# sets NAME V...: a line of the summary block, the stats of the values
sets() {
	local k=$1
	shift
	setr "$k" "$(stats "$@")"
}
# per_gib SECONDS: seconds for SIZE bytes scaled to one GiB
per_gib() { awk -v c="$1" -v s="$SIZE" 'BEGIN { printf "%.2f", c * 1073741824 / s }'; }
# stats V...: "min A median B max C" of the values
stats() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
	printf "min %s median %s max %s", v[1], v[int((NR + 1) / 2)], v[NR] }'; }
# cpu_s PID: seconds of CPU (user + system) the process has used so far
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
# cpu_since PID C0: seconds of CPU the process has used since cpu_s gave C0
cpu_since() { awk -v a="$2" -v b="$(cpu_s "$1")" 'BEGIN { printf "%.2f", b - a }'; }
# serving_pid MNT: the process that serves MNT: its keeper's server, or the
# mount's own process (-o no_keeper, an ocifs before the keeper)
serving_pid() {
	local s
	s=$(server_pid "$1")
	echo "${s:-$OCIFS_PID}"
}
drop_caches() { sync && { echo 1 >/proc/sys/vm/drop_caches; } 2>/dev/null; }
rss_kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status" 2>/dev/null; }

# bmount CACHEDIR MNT [ARGS]: mount quietly (lines to the log), bail on failure.
bmount() {
	local c=$1 m=$2
	shift 2
	rm -rf "$c"
	OCIFS_CACHE=$c mount_ocifs "$REG" "$m" "$@" >>"$LOG" 2>&1 || {
		cat "$LOG" >&2
		diag_file "$OCIFS_LOG"
		bail "mount ocifs"
	}
}
bumount() {
	umount_ocifs "$1" >>"$LOG" 2>&1
	grep -q '^not ok' "$LOG" && { grep '^not ok' "$LOG" | sed 's/^/# /'; : >"$LOG"; }
	return 0
}

# bench_summary: print the summary block and exit 0 (a benchmark reports, it does not fail).
bench_summary() {
	local k
	say ""
	say "# summary (throughput ratios ocifs/peer: >1 means ocifs faster)"
	for k in "${RORDER[@]}"; do
		printf '%s %s\n' "$k" "${R[$k]}"
	done
	T_FAILED=0
	exit 0
}

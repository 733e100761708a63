#!/bin/bash
# Memory over a long life: the daemon's RSS idle, after `find` walks an
# image of many entries (BENCH_ENTRIES, default 300,000: 300 directories of
# 1,000 files), and after the kernel drops its dentries and inodes
# (echo 2 >/proc/sys/vm/drop_caches) and forgets them. Repeated BENCH_RUNS
# times (default 3) on one mount, so growth across walks shows. Not a test:
# it prints figures and exits 0 unless the setup fails.
#
#   OCIFS=/path/to/ocifs srcdir=/path/to/ocifs-source bash tests/bench/lifetime.sh
#
# Target: after the walk and the drop, RSS within 8 MiB of the idle figure.
T_TIMEOUT=${T_TIMEOUT:-1800}
: "${srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${OCIFS:=$srcdir/ocifs}"
export srcdir OCIFS
. "$srcdir/tests/integration/lib.sh"
require_env python3
. "$srcdir/tests/bench/lib.sh"

ENTRIES=${BENCH_ENTRIES:-300000}
RUNS=${BENCH_RUNS:-3}
DIRS=300
FILES=$(((ENTRIES + DIRS - 1) / DIRS))

registry_start benchlife
say "# registry $REG, ocifs $OCIFS, $DIRS directories of $FILES files, $(nproc) cores"
tm push_wide_image wide/img v1 $DIRS $FILES >/dev/null
[ "$TRC" = 0 ] || bail "push the image"
say "# image made and pushed in ${T}s"

M=$TESTDIR/mnt
bmount "$TESTDIR/cache" "$M"
pid=$(serving_pid "$M")
nodes() { jq -r .nodes "$M/.ocifs/stats.json"; }
forget() { sync && echo 2 >/proc/sys/vm/drop_caches; }
settled() { [ "$(nodes)" -le $((idle_nodes + 10)) ]; }

forget
sleep 1
idle_nodes=$(nodes)
idle=$(rss_kb "$pid" VmRSS)
say "# idle: RSS $((idle / 1024)) MiB, $idle_nodes nodes"
d_list=() w_list=() t_list=()
for r in $(seq 1 "$RUNS"); do
	tm sh -c 'find "$1" -path "$1/.oci" -prune -o -print | wc -l >"$2"' sh "$M/wide/img/v1" \
		"$TESTDIR/count"
	n=$(cat "$TESTDIR/count")
	walked=$(rss_kb "$pid" VmRSS)
	wn=$(nodes)
	walk_t=$T
	forget
	wait_until 120 settled
	# the last frees and the trim that follows them end a moment after the count
	prev=0 after=$(rss_kb "$pid" VmRSS)
	for _ in $(seq 1 20); do
		[ "$after" = "$prev" ] && break
		sleep 0.5
		prev=$after after=$(rss_kb "$pid" VmRSS)
	done
	an=$(nodes)
	thr=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")
	lo=$(jq -r .layers_open "$M/.ocifs/stats.json")
	ra=$(rss_kb "$pid" RssAnon)
	rf=$(rss_kb "$pid" RssFile)
	say "run $r: find of $n entries ${walk_t}s; RSS $((walked / 1024)) MiB with $wn nodes," \
		"$((after / 1024)) MiB with $an nodes after the drop ($(((after - idle) / 1024)) MiB above idle," \
		"$thr threads, $lo layers open; anon $((ra / 1024)) MiB, file $((rf / 1024)) MiB)"
	d_list+=("$(((after - idle) / 1024))")
	w_list+=("$((walked / 1024))")
	t_list+=("$walk_t")
done
setr "idle_rss_mib" "$((idle / 1024))"
setr "walk_rss_mib" "$(stats "${w_list[@]}")"
setr "after_drop_above_idle_mib" "$(stats "${d_list[@]}")"
setr "find_seconds" "$(stats "${t_list[@]}")"
bumount "$M"
bench_summary

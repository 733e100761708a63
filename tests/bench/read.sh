#!/bin/bash
# Read benchmark: ocifs against peers measured in the same run, on one
# machine, against a local docker-registry it starts. Not a test: it prints
# figures and a summary block of ratios, and exits 0 unless the setup fails.
#
#   OCIFS=/path/to/ocifs srcdir=/path/to/ocifs-source bash tests/bench/read.sh
#
# OCIFS defaults to $srcdir/ocifs (nothing is built here). Needs root (FUSE,
# drop_caches), docker-registry, curl, skopeo, umoci; httpdirfs is installed
# with apt-get when missing and skipped when it cannot be. BENCH_SIZE_MB
# (default 1024) sets the size of the big blob, BENCH_IMAGE_MB (default 200)
# the image, BENCH_HTTPDIRFS_MB (default 32) how much of the big blob is read
# through httpdirfs (it makes one request per 128 KiB read, too slow for all),
# BENCH_RUNS (default 3) how many times the cold, warm and concurrent reads
# are repeated (min/median/max are printed).
#
# Throughput ratios are ocifs/peer: above 1 means ocifs is faster.
T_TIMEOUT=${T_TIMEOUT:-900}
REG_ACCESSLOG=1
: "${srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${OCIFS:=$srcdir/ocifs}"
export srcdir OCIFS
. "$srcdir/tests/integration/lib.sh"
require_env skopeo umoci sha256sum

SIZE_MB=${BENCH_SIZE_MB:-1024}
IMAGE_MB=${BENCH_IMAGE_MB:-200}
HTTPDIRFS_MB=${BENCH_HTTPDIRFS_MB:-32}
RUNS=${BENCH_RUNS:-3}
SIZE=$((SIZE_MB * 1024 * 1024))
. "$srcdir/tests/bench/lib.sh"

# ---------------------------------------------------------------- setup
t_setup=$(now)
registry_start bench
say "# registry $REG, ocifs $OCIFS, blob $SIZE_MB MiB, image ~$IMAGE_MB MiB, $(nproc) cores"
W=$TESTDIR/w
mkdir -p "$W"
make_random_file "$W/big.bin" "$SIZE" bench
[ "$(stat -c %s "$W/big.bin")" = "$SIZE" ] || bail "make big.bin"
push_blob_stream bench/big "$W/big.bin" >/dev/null || bail "push the big blob"
DBIG=$(push_artifact bench/big v1 "$W" big.bin) || bail "push bench/big:v1"
HEX=$(sha256_hex "$W/big.bin")
URL=http://$REG/v2/bench/big/blobs/sha256:$HEX
check_eq "registry serves the big blob" "$SIZE" \
	"$(curl -sI "$URL" | tr -d '\r' | sed -n 's/^[Cc]ontent-[Ll]ength: *//p')" >>"$LOG" || bail "HEAD blob"
# a small blob for the latency of one GET
printf 'small\n' >"$W/small.txt"
DSMALL=$(push_blob bench/big "$W/small.txt") || bail "push small blob"

# image: a few layers of random files, ~IMAGE_MB MiB
L=$TESTDIR/layout
nl=4
layers=()
for i in $(seq 1 $nl); do
	mkdir -p "$W/layer$i/data"
	make_random_file "$W/layer$i/data/f$i.bin" $((IMAGE_MB * 1024 * 1024 / nl)) "layer$i"
	layers+=("$W/layer$i")
done
image_build "$L" v1 linux/amd64 "${layers[@]}" >>"$LOG" 2>&1 || bail "umoci build"
push_image "$L" v1 bench/img v1 >/dev/null 2>>"$LOG" || bail "skopeo push image"
rm -rf "$L" "$W"/layer*
say "# setup took $(awk -v a="$t_setup" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s"

M=$TESTDIR/mnt
C=$TESTDIR/c
F=$M/bench/big/v1/big.bin
# Setup left a gigabyte or more of dirty pages: let them reach the disk first,
# or whichever peer writes (ocifs's cache) pays for the writeback of setup.
sync

# ---------------------------------------------------------------- 1. cold sequential vs curl
say "## cold sequential read of $SIZE_MB MiB, $RUNS runs"
# cold_read LABEL: mount with an empty cache, time one cat of F into T (a
# new mount each time), the daemon's CPU for it into CPU, keep its peak RSS
# in hwm.
hwm=0
cold_read() {
	local h c0
	bmount "$C" "$M" -o ro
	stat "$F" >/dev/null
	DPID=$(serving_pid "$M")
	c0=$(cpu_s "$DPID")
	tm cat "$F" >/dev/null
	[ "$TRC" = 0 ] || say "# $1 failed: $TRC"
	CPU=$(cpu_since "$DPID" "$c0")
	say "$(printf '%-32s' "$1") ${T} s  $(mibs "$SIZE" "$T") MiB/s  daemon CPU ${CPU} s"
	h=$(rss_kb "$DPID" VmHWM)
	[ -n "$h" ] && [ "$h" -gt "$hwm" ] && hwm=$h
	return 0
}
r_cold=() r_vs_curl=() r_vs_pipe=() r_vs_sha=() r_cpu=() r_pipe_cpu=() r_fill_cpu=()
for ((run = 1; run <= RUNS; run++)); do
	tm curl -s -o /dev/null "$URL"
	t_curl=$T
	say "curl -o /dev/null                ${t_curl} s  $(mibs "$SIZE" "$t_curl") MiB/s"
	tmc bash -c "curl -s '$URL' | tee '$TESTDIR/pipe.out' | openssl dgst -sha256"
	t_pipe=$T
	rm -f "$TESTDIR/pipe.out"
	say "curl | tee FILE | openssl dgst   ${t_pipe} s  $(mibs "$SIZE" "$t_pipe") MiB/s  CPU ${TCPU} s"
	r_pipe_cpu+=("$(per_gib "$TCPU")")
	tm bash -c "curl -s '$URL' | sha256sum >/dev/null"
	t_curlsha=$T
	say "curl | sha256sum                 ${t_curlsha} s  $(mibs "$SIZE" "$t_curlsha") MiB/s"
	sync
	cold_read "ocifs cold cat (run $run)"
	bumount "$M"
	r_cold+=("$T")
	r_cpu+=("$(per_gib "$CPU")")
	r_vs_curl+=("$(ratio "$t_curl" "$T")")
	r_vs_pipe+=("$(ratio "$t_pipe" "$T")")
	r_vs_sha+=("$(ratio "$t_curlsha" "$T")")
	# this machine's cost of filling page cache, which a cold read does for
	# two GiB per GiB (the cache file's pages and the FUSE file's)
	tmc dd if=/dev/zero of="$TESTDIR/fill" bs=1M count="$SIZE_MB" status=none
	rm -f "$TESTDIR/fill"
	say "dd of $SIZE_MB MiB into page cache   ${T} s  CPU ${TCPU} s"
	r_fill_cpu+=("$(per_gib "$TCPU")")
done
t_cold=$(stats "${r_cold[@]}" | awk '{ print $4 }') # the median, for the peers below
say "ocifs cold seconds: $(stats "${r_cold[@]}")"
sets cold_vs_curl_tee_openssl "${r_vs_pipe[@]}"
sets cold_vs_curl_sha256sum "${r_vs_sha[@]}"
sets cold_vs_curl "${r_vs_curl[@]}"
sets cold_cpu_s_per_gib "${r_cpu[@]}"
sets pipeline_cpu_s_per_gib "${r_pipe_cpu[@]}"
sets page_cache_fill_cpu_s_per_gib "${r_fill_cpu[@]}"
# Memory this virtual machine hands out fresh costs far more to touch than
# memory touched before: it is what spreads the CPU figures above.
ft=$(first_touch_mbs)
say "memory first touched ${ft% *} MB/s, touched again ${ft#* } MB/s"
setr first_touch_vs_retouch_mbs "${ft% *} / ${ft#* }"

# ---------------------------------------------------------------- 2. warm reads
say "## warm reads (complete in the cache)"
bmount "$C" "$M" -o ro
cat "$F" >/dev/null
DPID=$(serving_pid "$M")
tm cat "$F" >/dev/null
t_warm=$T
tm cat "$C/blobs/sha256/$HEX" >/dev/null
t_direct=$T
say "ocifs warm cat (page cache)  ${t_warm} s  $(mibs "$SIZE" "$t_warm") MiB/s"
say "cat cache file directly      ${t_direct} s  $(mibs "$SIZE" "$t_direct") MiB/s"
setr warm_vs_direct "$(ratio "$t_direct" "$t_warm")"
if drop_caches; then
	r_wd=() r_dd=() r_w=()
	# alternate, so that a slow spell of the disk falls on both
	for ((run = 1; run <= RUNS + 2; run++)); do
		drop_caches
		tm cat "$F" >/dev/null
		t_warmd=$T
		drop_caches
		tm cat "$C/blobs/sha256/$HEX" >/dev/null
		t_directd=$T
		say "caches dropped: ocifs cat ${t_warmd} s, cat of the cache file ${t_directd} s"
		r_wd+=("$t_warmd") r_dd+=("$t_directd") r_w+=("$(ratio "$t_directd" "$t_warmd")")
	done
	say "ocifs, caches dropped: $(stats "${r_wd[@]}")"
	say "cache file, dropped:   $(stats "${r_dd[@]}")"
	sets warm_dropped_vs_direct "${r_w[@]}"
	setr warm_dropped_medians "$(ratio "$(stats "${r_dd[@]}" | awk '{ print $4 }')" \
		"$(stats "${r_wd[@]}" | awk '{ print $4 }')")"
else
	say "drop_caches: not permitted"
	setr warm_dropped_vs_direct n/a
fi

# ---------------------------------------------------------------- 3. memory
say "## daemon memory"
sleep 1 # a moment of quiet (a benchmark may wait)
rss=$(rss_kb "$DPID" VmRSS)
say "peak RSS streaming $SIZE_MB MiB (VmHWM)  ${hwm:-?} KiB"
say "idle RSS after the reads (VmRSS)      ${rss:-?} KiB"
setr peak_rss_mib "$(awk -v k="${hwm:-0}" 'BEGIN { printf "%.1f", k / 1024 }')"
setr idle_rss_mib "$(awk -v k="${rss:-0}" 'BEGIN { printf "%.1f", k / 1024 }')"
bumount "$M"

# ---------------------------------------------------------------- 4. time to first byte
say "## time to first byte"
tm curl -s -o /dev/null "http://$REG/v2/"
t_get=$T
tm curl -s -o /dev/null "http://$REG/v2/bench/big/blobs/$DSMALL"
t_gets=$T
bmount "$C" "$M" -o ro
tm bash -c "head -c 1 '$F' >/dev/null"
t_ttfb=$T
bumount "$M"
bmount "$C" "$M" -o ro
stat "$F" >/dev/null
tm bash -c "head -c 1 '$F' >/dev/null"
t_ttfb2=$T
bumount "$M"
tm bash -c "curl -s '$URL' | head -c 1 >/dev/null"
t_curl1=$T
say "curl GET /v2/                          $(ms "$t_get") ms"
say "curl GET of a 6-byte blob              $(ms "$t_gets") ms"
say "curl | head -c 1 of the big blob        $(ms "$t_curl1") ms"
say "ocifs head -c 1, new mount, cold       $(ms "$t_ttfb") ms"
say "ocifs head -c 1, path already looked up $(ms "$t_ttfb2") ms"
setr ttfb_ms "$(ms "$t_ttfb")"
setr ttfb_resolved_ms "$(ms "$t_ttfb2")"
setr small_get_ms "$(ms "$t_gets")"
setr ttfb_vs_small_get "$(ratio "$t_gets" "$t_ttfb")"

# ---------------------------------------------------------------- 5. 8 concurrent cold readers
# Eight readers of one file (one inode: the kernel's page cache is shared),
# and eight readers of the same blob through five paths (five inodes: the
# daemon fetches the blob once, the kernel copies it to each inode's pages).
say "## 8 concurrent cold readers of one blob, $RUNS runs"
P=$M/bench/big
paths=("$P/v1/big.bin" "$P/$DBIG/big.bin" "$P:v1/big.bin" "$P/v1/.oci/blobs/sha256/$HEX"
	"$P@$DBIG/big.bin" "$P/v1/big.bin" "$P/$DBIG/.oci/blobs/sha256/$HEX" "$P:v1/big.bin")
conc() {
	local p pids=() rc=0
	for p in "$@"; do
		cat "$p" >/dev/null &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || rc=1; done
	return "$rc"
}
r_one=() r_same=() r_five=() r_served=()
for ((run = 1; run <= RUNS; run++)); do
	for mode in one same five; do
		sync
		bmount "$C" "$M" -o ro
		stat -- "${paths[@]}" >/dev/null
		reg_log_quiet 10
		mark=$(reg_log_mark)
		case $mode in
		one) tm cat "$F" >/dev/null ;;
		same) tm conc "$F" "$F" "$F" "$F" "$F" "$F" "$F" "$F" ;;
		five) tm conc "${paths[@]}" ;;
		esac
		[ "$TRC" = 0 ] || say "# a reader failed ($mode)"
		bumount "$M"
		reg_log_quiet 10
		served=$(served_bytes "$HEX" "$mark")
		nreq=$(served_requests "$HEX" "$mark")
		say "$(printf '%-5s' "$mode") ${T} s; registry served $served bytes in $nreq requests"
		case $mode in
		one) t_one=$T ;;
		same) r_same+=("$(ratio "$T" "$t_one")") r_served+=("$(ratio "$served" "$SIZE")") ;;
		five) r_five+=("$(ratio "$T" "$t_one")") r_served+=("$(ratio "$served" "$SIZE")") ;;
		esac
	done
	r_one+=("$t_one")
done
say "one reader seconds: $(stats "${r_one[@]}")"
sets concurrent8_one_file_time_vs_one_reader "${r_same[@]}"
sets concurrent8_five_paths_time_vs_one_reader "${r_five[@]}"
sets concurrent8_served_vs_size "${r_served[@]}"

# ---------------------------------------------------------------- 6. httpdirfs
say "## httpdirfs --single-file-mode"
if ! command -v httpdirfs >/dev/null 2>&1; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y httpdirfs >>"$LOG" 2>&1 ||
		{ apt-get update >>"$LOG" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y httpdirfs >>"$LOG" 2>&1; }
fi
if command -v httpdirfs >/dev/null 2>&1; then
	HM=$TESTDIR/hmnt
	mkdir -p "$HM"
	httpdirfs -f --single-file-mode "$URL" "$HM" >"$TESTDIR/httpdirfs.log" 2>&1 </dev/null &
	hpid=$!
	_LIB_DAEMON_PIDS+=("$hpid")
	_LIB_MOUNTS+=("$HM")
	# httpdirfs fetches each 128 KiB read with a request of its own, a few
	# MiB/s here: time a prefix of the file, compare throughputs
	hmb=$((HTTPDIRFS_MB < SIZE_MB ? HTTPDIRFS_MB : SIZE_MB))
	if wait_until 20 mountpoint -q "$HM" && hf=$(find "$HM" -maxdepth 1 -type f | head -n 1) && [ -n "$hf" ]; then
		tm bash -c "head -c $((hmb * 1024 * 1024)) '$hf' >/dev/null"
		t_h=$T
		say "httpdirfs cold, first $hmb MiB  ${t_h} s  $(mibs $((hmb * 1024 * 1024)) "$t_h") MiB/s"
		# ratio of throughputs: (SIZE / t_cold) / (hmb MiB / t_h)
		setr cold_vs_httpdirfs "$(ratio "$(awk -v s="$SIZE" -v t="$t_h" 'BEGIN { print s * t }')" \
			"$(awk -v s=$((hmb * 1024 * 1024)) -v t="$t_cold" 'BEGIN { print s * t }')")"
	else
		say "httpdirfs: did not mount"
		diag_file "$TESTDIR/httpdirfs.log"
		setr cold_vs_httpdirfs n/a
	fi
	fusermount -u "$HM" 2>/dev/null || fusermount3 -u "$HM" 2>/dev/null
	wait_until 10 bash -c "! kill -0 $hpid" || kill "$hpid" 2>/dev/null
else
	say "httpdirfs: not available"
	setr cold_vs_httpdirfs n/a
fi

# ---------------------------------------------------------------- 7. an image's blobs: cp -r vs skopeo
say "## all blobs of a ~$IMAGE_MB MiB image: cp -r .oci/blobs vs skopeo copy"
D1=$TESTDIR/d1
D2=$TESTDIR/d2
bmount "$C" "$M" -o ro
stat "$M/bench/img/v1/.oci/blobs" >/dev/null
tm cp -r "$M/bench/img/v1/.oci/blobs" "$D1"
t_cp=$T
[ "$TRC" = 0 ] || say "# cp -r failed"
bumount "$M"
tm skopeo --insecure-policy copy --quiet --src-tls-verify=false "docker://$REG/bench/img:v1" "dir:$D2"
t_sk=$T
[ "$TRC" = 0 ] || say "# skopeo copy failed"
isz=$(du -sb "$D1" 2>/dev/null | cut -f1)
say "ocifs cp -r .oci/blobs       ${t_cp} s  ($isz bytes)"
say "skopeo copy dir:             ${t_sk} s  ($(du -sb "$D2" 2>/dev/null | cut -f1) bytes)"
setr image_cp_vs_skopeo "$(ratio "$t_sk" "$t_cp")"
rm -rf "$D1" "$D2" "$C"

bench_summary

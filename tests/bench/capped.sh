#!/bin/bash
# Cold reads over a link that caps each connection, as CDNs and object
# stores do, two ways: Debian's nginx between the mount and a local
# docker-registry with limit_rate (per request, and nginx lets the first
# second's worth of each request through at once), and pacer.py, whose
# connections the kernel paces (SO_MAX_PACING_RATE: no burst). Peers in the
# same run: single-stream curl through the same link, and on loopback (no
# proxy) curl and ocifs held to its first 6 streams (-o max_streams=6), so
# that adapting shows what it costs there too. Not a test: it prints figures
# and a summary block of ratios, and exits 0 unless the setup fails.
#
#   OCIFS=/path/to/ocifs srcdir=/path/to/ocifs-source bash tests/bench/capped.sh
#
# BENCH_SIZE_MB (default 512): the blob; BENCH_RATE_MB (default 20): the cap
# per connection in MiB/s; BENCH_CURL_MB (default 128): how much of the blob
# curl reads through the cap (its rate is steady; all of it would take long);
# BENCH_RUNS (default 3). nginx is installed with apt-get when missing.
#
# Throughput ratios are ocifs/peer: above 1 means ocifs is faster.
T_TIMEOUT=${T_TIMEOUT:-1200}
: "${srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${OCIFS:=$srcdir/ocifs}"
export srcdir OCIFS
. "$srcdir/tests/integration/lib.sh"
. "$srcdir/tests/bench/lib.sh"

SIZE_MB=${BENCH_SIZE_MB:-512}
RATE_MB=${BENCH_RATE_MB:-20}
CURL_MB=${BENCH_CURL_MB:-128}
RUNS=${BENCH_RUNS:-3}
SIZE=$((SIZE_MB * 1024 * 1024))

if ! command -v nginx >/dev/null 2>&1; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light >>"$LOG" 2>&1 ||
		{ apt-get update >>"$LOG" 2>&1 &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light >>"$LOG" 2>&1; }
fi
command -v nginx >/dev/null 2>&1 || bail "nginx is not available"

# ---------------------------------------------------------------- setup
registry_start capped
W=$TESTDIR/w
mkdir -p "$W"
make_random_file "$W/big.bin" "$SIZE" capped
push_artifact bench/big v1 "$W" big.bin >/dev/null || bail "push bench/big:v1"
HEX=$(sha256_hex "$W/big.bin")
rm -f "$W/big.bin"

# nginx: one server in front of the registry, each response held to the cap
PROXY_PORT=$(free_port)
PROXY=127.0.0.1:$PROXY_PORT
NG=$TESTDIR/nginx
mkdir -p "$NG/tmp"
cat >"$NG/nginx.conf" <<EOF
user root;
daemon off;
worker_processes 2;
pid $NG/nginx.pid;
error_log $NG/error.log;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path $NG/tmp/body;
	proxy_temp_path $NG/tmp/proxy;
	fastcgi_temp_path $NG/tmp/fastcgi;
	uwsgi_temp_path $NG/tmp/uwsgi;
	scgi_temp_path $NG/tmp/scgi;
	upstream registry { server $REG; keepalive 64; }
	server {
		listen $PROXY;
		location / {
			proxy_pass http://registry;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host \$http_host;
			proxy_buffering on;
			proxy_max_temp_file_size 0;
			limit_rate ${RATE_MB}m;
		}
	}
}
EOF
nginx -c "$NG/nginx.conf" >>"$LOG" 2>&1 </dev/null &
NGPID=$!
_LIB_DAEMON_PIDS+=("$NGPID")
proxy_up() { curl -fs -o /dev/null "http://$PROXY/v2/"; }
wait_until 20 proxy_up || { diag_file "$NG/error.log"; bail "nginx did not start"; }
PACER_PORT=$(free_port)
PACER=127.0.0.1:$PACER_PORT
python3 "$srcdir/tests/integration/pacer.py" --port "$PACER_PORT" --upstream "$REG" \
	--rate $((RATE_MB * 1024 * 1024)) >"$TESTDIR/pacer.log" 2>&1 </dev/null &
PPID_=$!
_LIB_DAEMON_PIDS+=("$PPID_")
pacer_up() { curl -fs -o /dev/null "http://$PACER/v2/"; }
wait_until 20 pacer_up || { diag_file "$TESTDIR/pacer.log"; bail "pacer.py did not start"; }
say "# registry $REG behind nginx $PROXY (limit_rate) and pacer.py $PACER (kernel pacing)," \
	"$RATE_MB MiB/s per connection; blob $SIZE_MB MiB, $RUNS runs, $(nproc) cores, ocifs $OCIFS"

M=$TESTDIR/mnt
C=$TESTDIR/c
URL=/v2/bench/big/blobs/sha256:$HEX
sync

# cold HOST LABEL [ARGS]: a new mount of HOST with an empty cache, one cat of
# the blob; sets T and CPU (the daemon's seconds of CPU for it) and prints
# the number of streams it settled on.
cold() {
	local host=$1 label=$2 cpu0 streams spid
	shift 2
	rm -rf "$C"
	OCIFS_CACHE=$C mount_ocifs "$host" "$M" -o ro "$@" >>"$LOG" 2>&1 || bail "mount $host"
	stat "$M/bench/big/v1/big.bin" >/dev/null
	spid=$(serving_pid "$M")
	cpu0=$(cpu_s "$spid")
	tm cat "$M/bench/big/v1/big.bin" >/dev/null
	[ "$TRC" = 0 ] || say "# $label: cat failed"
	CPU=$(cpu_since "$spid" "$cpu0")
	streams=$(grep -o 'cache: [0-9]* fetch streams[a-z ,]*[0-9]*' "$OCIFS_LOG" | tail -n 1 | sed 's/^cache: //')
	say "$(printf '%-34s' "$label") ${T} s  $(mibs "$SIZE" "$T") MiB/s  CPU ${CPU} s" \
		"($(per_gib "$CPU") s/GiB)" \
		"streams ${streams:-not settled}"
	bumount "$M"
}

# capped LINK LABEL: single-stream curl of CURL_MB through LINK, then ocifs;
# appends the ratio to r_LABEL and the CPU per GiB to c_LABEL
capped() {
	local link=$1 label=$2 t_c
	tm curl -s -o /dev/null -r "0-$((CURL_MB * 1024 * 1024 - 1))" "http://$link$URL"
	t_c=$(awk -v t="$T" -v s=$((CURL_MB * 1024 * 1024)) -v z="$SIZE" 'BEGIN { printf "%.3f", t * z / s }')
	say "$(printf '%-34s' "curl through $label, $CURL_MB MiB") ${T} s  $(mibs $((CURL_MB * 1024 * 1024)) "$T") MiB/s"
	cold "$link" "ocifs cold cat through $label"
	eval "r_$label+=(\"\$(ratio \"\$t_c\" \"\$T\")\")"
	eval "c_$label+=(\"\$(awk -v c=\"\$CPU\" -v s=\"\$SIZE\" 'BEGIN { printf \"%.2f\", c * 1073741824 / s }')\")"
}

declare -a r_nginx r_pacer c_nginx c_pacer r_loop r_loop6 c_loop
for run in $(seq 1 "$RUNS"); do
	say "## run $run"
	capped "$PACER" pacer
	capped "$PROXY" nginx
	tm curl -s -o /dev/null "http://$REG$URL"
	t_cl=$T
	say "$(printf '%-34s' "curl on loopback") ${T} s  $(mibs "$SIZE" "$T") MiB/s"
	cold "$REG" "ocifs cold cat on loopback"
	t_ol=$T
	r_loop+=("$(ratio "$t_cl" "$T")")
	c_loop+=("$(per_gib "$CPU")")
	cold "$REG" "ocifs -o max_streams=6, loopback" -o max_streams=6
	r_loop6+=("$(ratio "$T" "$t_ol")")
done

sets paced_vs_curl "${r_pacer[@]}"
sets nginx_limit_rate_vs_curl "${r_nginx[@]}"
sets loopback_vs_curl "${r_loop[@]}"
sets loopback_adaptive_vs_6_streams "${r_loop6[@]}"
sets cpu_s_per_gib_paced "${c_pacer[@]}"
sets cpu_s_per_gib_nginx "${c_nginx[@]}"
sets cpu_s_per_gib_loopback "${c_loop[@]}"
kill "$NGPID" "$PPID_" 2>/dev/null
bench_summary

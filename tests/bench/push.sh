#!/bin/bash
# Push benchmark: writing into the mount against peers measured in the same
# run, each pushing into a docker-registry of its own (so that none finds the
# others' blobs there). Not a test: it prints figures and a summary block of
# ratios, and exits 0 unless the setup fails.
#
#   OCIFS=/path/to/ocifs srcdir=/path/to/ocifs-source bash tests/bench/push.sh
#
# BENCH_SIZE_MB (default 1024) sets the size of the big file, BENCH_FILES
# (default 1000) the number of 4 KiB files. Needs root (FUSE), docker-registry,
# curl, skopeo, umoci.
#
# Throughput ratios are ocifs/peer: above 1 means ocifs is faster.
T_TIMEOUT=${T_TIMEOUT:-1200}
REG_ACCESSLOG=1
: "${srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${OCIFS:=$srcdir/ocifs}"
export srcdir OCIFS
. "$srcdir/tests/integration/lib.sh"
require_env skopeo umoci sha256sum
. "$srcdir/tests/bench/lib.sh"

SIZE_MB=${BENCH_SIZE_MB:-1024}
NFILES=${BENCH_FILES:-1000}
SIZE=$((SIZE_MB * 1024 * 1024))

# requests_since MARK: requests in the current registry's access log after MARK
requests_since() { tail -c +"$(($1 + 1))" -- "$REG_ROOT/registry.log" | grep -c '"[A-Z]* /v2/'; }

# ---------------------------------------------------------------- setup
t_setup=$(now)
W=$TESTDIR/w
mkdir -p "$W/big" "$W/many"
make_random_file "$W/big/big.bin" "$SIZE" push-bench
[ "$(stat -c %s "$W/big/big.bin")" = "$SIZE" ] || bail "make big.bin"
HEX=$(sha256_hex "$W/big/big.bin")
for ((i = 0; i < NFILES; i++)); do
	head -c 4096 /dev/urandom >"$W/many/f$i.dat"
done
# the same bytes as a one-layer image in an OCI layout, for skopeo
L=$TESTDIR/layout
image_build "$L" v1 linux/amd64 "$W/big" >>"$LOG" 2>&1 || bail "umoci build"
say "# ocifs $OCIFS, file $SIZE_MB MiB, $NFILES files of 4 KiB, $(nproc) cores"
say "# setup took $(awk -v a="$t_setup" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s"
sync

# ---------------------------------------------------------------- 1. one big file
say "## push of one $SIZE_MB MiB file"
registry_start curlpeer
sync
curl_push() {
	local loc
	loc=$(curl -fsS -X POST -D - -o /dev/null "http://$REG/v2/bench/curl/blobs/uploads/" |
		tr -d '\r' | sed -n 's/^[Ll]ocation: *//p') || return 1
	case $loc in http*) ;; *) loc=http://$REG$loc ;; esac
	case $loc in *\?*) loc="$loc&digest=sha256:$HEX" ;; *) loc="$loc?digest=sha256:$HEX" ;; esac
	curl -fsS -o /dev/null -T "$W/big/big.bin" -H 'Content-Type: application/octet-stream' "$loc"
}
tm curl_push
t_curl=$T
check_eq "curl: the registry has the blob" 200 \
	"$(curl -s -o /dev/null -w '%{http_code}' -I "http://$REG/v2/bench/curl/blobs/sha256:$HEX")" >>"$LOG"
say "curl POST + PUT             ${t_curl} s  $(mibs "$SIZE" "$t_curl") MiB/s"
registry_stop

registry_start ocifspeer
M=$TESTDIR/mnt
bmount "$TESTDIR/c1" "$M"
mkdir -p "$M/ocifs/v1" || bail "mkdir a new tag"
ocifs_push() {
	local t0
	t0=$(now)
	cp "$W/big/big.bin" "$M/ocifs/v1/" || return 1
	t_cp=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
	sync "$M/ocifs/v1"
}
mark=$(reg_log_mark)
sync # the peer's writes reach the disk first, or this run pays for them
tm ocifs_push
t_ocifs=$T
[ "$TRC" = 0 ] || say "# ocifs push failed (status $TRC)"
check_eq "ocifs: the tag holds the file" "sha256:$HEX" \
	"$(manifest_get ocifs v1 | jq -r '.layers[0].digest')" >>"$LOG"
say "ocifs cp + sync DIR         ${t_ocifs} s  $(mibs "$SIZE" "$t_ocifs") MiB/s  ($(requests_since "$mark") requests; cp ${t_cp} s of it)"
setr push_1g_vs_curl "$(ratio "$t_curl" "$t_ocifs")"
bumount "$M"
registry_stop

registry_start skopeopeer
sync
tm skopeo copy -q --dest-tls-verify=false "oci:$L:v1" "docker://$REG/bench/skopeo:v1"
t_sk=$T
[ "$TRC" = 0 ] || say "# skopeo copy failed (status $TRC)"
say "skopeo copy oci: (1 layer)  ${t_sk} s  $(mibs "$SIZE" "$t_sk") MiB/s"
setr push_1g_vs_skopeo "$(ratio "$t_sk" "$t_ocifs")"
registry_stop

# ---------------------------------------------------------------- 2. many small files
say "## $NFILES files of 4 KiB into one new tag"
registry_start many
bmount "$TESTDIR/c2" "$M"
mkdir -p "$M/many/v1" || bail "mkdir a new tag"
many_push() { cp -r "$W/many/." "$M/many/v1/" && sync "$M/many/v1"; }
mark=$(reg_log_mark)
sync
tm many_push
t_many=$T
reg_log_quiet 10
nreq=$(requests_since "$mark")
check_eq "all the files are in the manifest" "$NFILES" \
	"$(manifest_get many v1 | jq '.layers | length')" >>"$LOG"
say "ocifs cp -r + sync DIR      ${t_many} s  ($nreq requests, $(awk -v n="$nreq" -v f="$NFILES" 'BEGIN { printf "%.1f", n / f }') per file)"
setr many_files_seconds "$t_many"
setr many_files_requests "$nreq"
bumount "$M"
registry_stop

bench_summary

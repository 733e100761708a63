#!/bin/bash
# Push benchmark: writing into the mount against peers measured in the same
# run, each pushing into a docker-registry of its own (so that none finds the
# others' blobs there). Not a test: it prints figures and a summary block of
# ratios, and exits 0 unless the setup fails.
#
#   OCIFS=/path/to/ocifs srcdir=/path/to/ocifs-source bash tests/bench/push.sh
#
# BENCH_SIZE_MB (default 1024) sets the size of the big file, BENCH_FILES
# (default 500) the number of 4 KiB files, BENCH_RUNS (default 3) the runs
# (min/median/max are printed). Peers: curl POST + monolithic PUT and skopeo
# copy of a one-layer image for the big file; skopeo copy of an OCI layout
# holding the small files as the layers of one manifest (what a cp -r into a
# tag makes). Needs root (FUSE), docker-registry, curl, skopeo, umoci.
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
NFILES=${BENCH_FILES:-500}
RUNS=${BENCH_RUNS:-3}
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

# small_layout DIR: an OCI layout of one manifest whose layers are the files
# of $W/many (one layer each, the shape of a `cp -r` into a tag), for skopeo
small_layout() {
	python3 - "$W/many" "$1" <<'PY'
import hashlib, json, os, sys
src, out = sys.argv[1], sys.argv[2]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)
def put(data):
    h = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, h), "wb") as f:
        f.write(data)
    return "sha256:" + h, len(data)
layers = []
for name in sorted(os.listdir(src)):
    d, n = put(open(os.path.join(src, name), "rb").read())
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d,
                   "size": n, "annotations": {"org.opencontainers.image.title": name}})
cfg = json.dumps({"architecture": "amd64", "os": "linux",
                  "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode()
cd, cn = put(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                             "digest": cd, "size": cn}, "layers": layers}).encode()
md, mn = put(man)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]},
          open(os.path.join(out, "index.json"), "w"))
open(os.path.join(out, "oci-layout"), "w").write('{"imageLayoutVersion": "1.0.0"}')
PY
}
SL=$TESTDIR/small-layout
small_layout "$SL" || bail "the small files' layout"

M=$TESTDIR/mnt
curl_push() {
	local loc
	loc=$(curl -fsS -X POST -D - -o /dev/null "http://$REG/v2/bench/curl/blobs/uploads/" |
		tr -d '\r' | sed -n 's/^[Ll]ocation: *//p') || return 1
	case $loc in http*) ;; *) loc=http://$REG$loc ;; esac
	case $loc in *\?*) loc="$loc&digest=sha256:$HEX" ;; *) loc="$loc?digest=sha256:$HEX" ;; esac
	curl -fsS -o /dev/null -T "$W/big/big.bin" -H 'Content-Type: application/octet-stream' "$loc"
}
ocifs_push() {
	local t0
	t0=$(now)
	cp "$W/big/big.bin" "$M/ocifs/v1/" || return 1
	t_cp=$(elapsed "$t0")
	sync "$M/ocifs/v1"
}
many_push() { cp -r "$W/many/." "$M/many/v1/" && sync "$M/many/v1"; }

r_curl=() r_ocifs=() r_sk=() r_vs_curl=() r_vs_sk=() r_many=() r_many_sk=() r_many_vs=()
for ((run = 1; run <= RUNS; run++)); do
	say "## run $run of $RUNS"
	# ------------------------------------------------------------ one big file
	registry_start "curlpeer$run"
	sync
	tm curl_push
	t_curl=$T
	check_eq "curl: the registry has the blob" 200 \
		"$(curl -s -o /dev/null -w '%{http_code}' -I "http://$REG/v2/bench/curl/blobs/sha256:$HEX")" >>"$LOG"
	say "curl POST + PUT of $SIZE_MB MiB     ${t_curl} s  $(mibs "$SIZE" "$t_curl") MiB/s"
	registry_stop

	registry_start "ocifspeer$run"
	bmount "$TESTDIR/c1" "$M"
	mkdir -p "$M/ocifs/v1" || bail "mkdir a new tag"
	mark=$(reg_log_mark)
	sync # the peer's writes reach the disk first, or this run pays for them
	tm ocifs_push
	t_ocifs=$T
	[ "$TRC" = 0 ] || say "# ocifs push failed (status $TRC)"
	check_eq "ocifs: the tag holds the file" "sha256:$HEX" \
		"$(manifest_get ocifs v1 | jq -r '.layers[0].digest')" >>"$LOG"
	say "ocifs cp + sync DIR              ${t_ocifs} s  $(mibs "$SIZE" "$t_ocifs") MiB/s  ($(requests_since "$mark") requests; cp ${t_cp} s of it)"
	bumount "$M"
	registry_stop

	registry_start "skopeopeer$run"
	sync
	tm skopeo copy -q --dest-tls-verify=false "oci:$L:v1" "docker://$REG/bench/skopeo:v1"
	t_sk=$T
	[ "$TRC" = 0 ] || say "# skopeo copy failed (status $TRC)"
	say "skopeo copy oci: (1 layer)       ${t_sk} s  $(mibs "$SIZE" "$t_sk") MiB/s"
	registry_stop
	r_curl+=("$t_curl") r_ocifs+=("$t_ocifs") r_sk+=("$t_sk")
	r_vs_curl+=("$(ratio "$t_curl" "$t_ocifs")") r_vs_sk+=("$(ratio "$t_sk" "$t_ocifs")")

	# ------------------------------------------------------------ many small files
	registry_start "many$run"
	bmount "$TESTDIR/c2" "$M"
	mkdir -p "$M/many/v1" || bail "mkdir a new tag"
	mark=$(reg_log_mark)
	sync
	tm many_push
	t_many=$T
	reg_log_quiet 10
	nreq=$(requests_since "$mark")
	check_eq "all the files are in the manifest" "$NFILES" \
		"$(manifest_get many v1 | jq '.layers | length')" >>"$LOG"
	say "ocifs: $NFILES files, cp -r + sync DIR  ${t_many} s  ($nreq requests, $(awk -v n="$nreq" -v f="$NFILES" 'BEGIN { printf "%.1f", n / f }') per file)"
	bumount "$M"
	sync
	tm skopeo copy -q --dest-tls-verify=false "oci:$SL:v1" "docker://$REG/bench/skopeo-many:v1"
	t_msk=$T
	[ "$TRC" = 0 ] || say "# skopeo copy of the small files failed (status $TRC)"
	check_eq "skopeo: all the files are in the manifest" "$NFILES" \
		"$(manifest_get bench/skopeo-many v1 | jq '.layers | length')" >>"$LOG"
	say "skopeo: the same files, copy oci:     ${t_msk} s"
	registry_stop
	r_many+=("$t_many") r_many_sk+=("$t_msk") r_many_vs+=("$(ratio "$t_msk" "$t_many")")
done

say ""
say "curl seconds       $(stats "${r_curl[@]}")"
say "ocifs seconds      $(stats "${r_ocifs[@]}")"
say "skopeo seconds     $(stats "${r_sk[@]}")"
say "small files, ocifs $(stats "${r_many[@]}")"
say "small files, skopeo $(stats "${r_many_sk[@]}")"
sets push_big_vs_curl "${r_vs_curl[@]}"
sets push_big_vs_skopeo "${r_vs_sk[@]}"
sets many_files_vs_skopeo "${r_many_vs[@]}"
setr many_files_requests "$nreq"

bench_summary

#!/bin/bash
# Model benchmark: a ModelPack artifact of 4 safetensors files (2 GiB in all,
# made here with the format's header: an 8-byte length and JSON with
# data_offsets), loaded by a Python loader that maps each file and touches
# its tensors as safetensors' safe_open + get_tensor do (a copy of each
# tensor's bytes out of the mapping). Peers in the same run: `skopeo copy`
# of the artifact to a directory followed by the same loader on local disk,
# and the loader on ocifs's own cache file. Not a test: it prints figures and
# a summary block, and exits 0 unless the setup fails.
#
#   OCIFS=/path/to/ocifs srcdir=/path/to/ocifs-source bash tests/bench/model.sh
#
# BENCH_MODEL_MB (default 2048) sets the model's size, BENCH_RUNS (default
# 3) the runs (min/median/max printed). OCIFS_PT, when set, is an ocifs
# built with FUSE passthrough (libfuse 3.17): its warm load and the page
# cache a mapped model costs are measured beside OCIFS's.
#
# Ratios: first_tensor_vs_download and load_vs_download are
# (download-then-load seconds) / (ocifs cold seconds): above 1 means ocifs
# is sooner; warm_vs_cache_file is (loader on the cache file) / (loader on
# the mount), caches dropped before each: 1 means the same.
T_TIMEOUT=${T_TIMEOUT:-3600}
REG_ACCESSLOG=1
: "${srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${OCIFS:=$srcdir/ocifs}"
export srcdir OCIFS
. "$srcdir/tests/integration/lib.sh"
require_env skopeo python3

MODEL_MB=${BENCH_MODEL_MB:-2048}
RUNS=${BENCH_RUNS:-3}
SIZE=$((MODEL_MB * 1024 * 1024))
. "$srcdir/tests/bench/lib.sh"

# ---------------------------------------------------------------- the model
registry_start bench
W=$TESTDIR/w
mkdir -p "$W"
say "# registry $REG, ocifs $OCIFS, model $MODEL_MB MiB in 4 files, $(nproc) cores"
# mksafetensors FILE BYTES SEED: a safetensors file of about BYTES: F16 tensors
# of 1 to 48 MiB, random bytes, the header padded to 8 bytes as the writer does
mksafetensors() {
	python3 - "$1" "$2" "$3" <<'PY'
import json, os, random, struct, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rnd = random.Random(seed)
tensors, off, i = {}, 0, 0
while off < size - (1 << 20):
    n = min(rnd.randint(1, 48) << 20, size - off)
    n -= n % 2
    tensors["model.layers.%d.weight" % i] = {"dtype": "F16", "shape": [n // 2], "data_offsets": [off, off + n]}
    off += n
    i += 1
tensors["__metadata__"] = {"format": "pt"}
h = json.dumps(tensors, separators=(",", ":")).encode()
h += b" " * (-(8 + len(h)) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(h)))
    f.write(h)
    chunk = os.urandom(1 << 20)
    left = off
    while left:
        k = min(left, len(chunk))
        f.write(chunk[:k])
        left -= k
PY
}
L=()
FILES=()
for i in 1 2 3 4; do
	f=model-0000$i-of-00004.safetensors
	mksafetensors "$W/$f" $((SIZE / 4)) "bench-$i" || bail "make $f"
	FILES+=("$f")
	dg=$(push_blob_stream bench/model "$W/$f") || bail "push $f"
	L+=("$(jq -n -c --arg d "$dg" --argjson s "$(stat -c %s "$W/$f")" --arg p "$f" \
		'{mediaType: "application/vnd.cncf.model.weight.v1.raw", digest: $d, size: $s,
		  annotations: {"org.cncf.model.filepath": $p}}')")
done
printf '{"descriptor": {"name": "bench"}, "modelfs": {"type": "layers", "diffIds": []}, "config": {}}' >"$W/config.json"
cdg=$(push_blob bench/model "$W/config.json") || bail "push config"
jq -n -c --arg c "$cdg" --argjson cs "$(stat -c %s "$W/config.json")" \
	--argjson l "$(printf '%s\n' "${L[@]}" | jq -s -c .)" \
	'{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
	  artifactType: "application/vnd.cncf.model.manifest.v1+json",
	  config: {mediaType: "application/vnd.cncf.model.config.v1+json", digest: $c, size: $cs},
	  layers: $l}' >"$W/manifest.json"
push_manifest bench/model v1 "$W/manifest.json" >/dev/null || bail "push the manifest"
sync

# The loader: safe_open + get_tensor, as safetensors' numpy/torch front ends
# do them: the header parsed, the file mapped, each tensor's bytes copied out
# of the mapping. MODE all: every tensor; half: every other one (a shard's
# share). Prints the seconds to the first tensor, to the last, and the bytes
# touched.
cat >"$W/load.py" <<'PY'
import json, mmap, struct, sys, time
mode, paths = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
first = None
touched = 0
for p in paths:
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        base = 8 + n
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        names = sorted((k for k in hdr if k != "__metadata__"), key=lambda k: hdr[k]["data_offsets"][0])
        for i, k in enumerate(names):
            if mode == "half" and i % 2:
                continue
            a, b = hdr[k]["data_offsets"]
            buf = bytes(m[base + a:base + b])  # get_tensor's copy
            touched += len(buf)
            if first is None:
                first = time.perf_counter() - t0
        m.close()
print("%.3f %.3f %d" % (first, time.perf_counter() - t0, touched))
PY
load() { python3 "$W/load.py" "$@"; }

M=$TESTDIR/mnt
C=$TESTDIR/c
A=$M/bench/model/v1
mpaths() { local f; for f in "${FILES[@]}"; do echo "$1/$f"; done; }
# hex_of_file NAME: the digest hex of the model file NAME
hex_of_file() {
	jq -r --arg p "$1" '.layers[] | select(.annotations["org.cncf.model.filepath"] == $p) |
		.digest | sub("sha256:"; "")' "$W/manifest.json"
}
# reg_bytes MARK: bytes the registry sent for the model's files since MARK (its access log)
reg_bytes() {
	local f s=0
	reg_log_quiet
	for f in "${FILES[@]}"; do s=$((s + $(served_bytes "$(hex_of_file "$f")" "$1"))); done
	echo "$s"
}
reg_mark() { reg_log_mark; }

# cold_load MODE: the loader (MODE all or half) through a new mount with an
# empty cache, caches dropped: LF, LL, LT its seconds to the first tensor,
# to the end, bytes touched; GOT the bytes the registry sent meanwhile
cold_load() {
	local mark
	drop_caches
	bmount "$C" "$M" -o ro
	mark=$(reg_mark)
	read -r LF LL LT <<<"$(load "$1" $(mpaths "$A"))"
	bumount "$M"
	GOT=$(reg_bytes "$mark")
}

# ---------------------------------------------------------------- 1. cold: ocifs against download-then-load
say "## cold load of $MODEL_MB MiB, $RUNS runs"
r_first=() r_load=() r_dl_first=() r_dl_load=() r_ff=() r_lf=() r_fa=()
for ((run = 1; run <= RUNS; run++)); do
	rm -rf "$TESTDIR/dl"
	drop_caches
	tm skopeo copy -q --src-tls-verify=false "docker://$REG/bench/model:v1" "dir:$TESTDIR/dl"
	[ "$TRC" = 0 ] || bail "skopeo copy"
	t_dl=$T
	dlpaths=()
	for f in "${FILES[@]}"; do
		dlpaths+=("$TESTDIR/dl/$(hex_of_file "$f")")
	done
	drop_caches
	read -r lf ll lt <<<"$(load all "${dlpaths[@]}")"
	dl_first=$(awk -v a="$t_dl" -v b="$lf" 'BEGIN { printf "%.3f", a + b }')
	dl_load=$(awk -v a="$t_dl" -v b="$ll" 'BEGIN { printf "%.3f", a + b }')
	say "skopeo copy ${t_dl} s, then load: first tensor ${dl_first} s, all ${dl_load} s"
	rm -rf "$TESTDIR/dl"
	cold_load all
	of=$LF ol=$LL ot=$LT got=$GOT
	say "ocifs cold: first tensor ${of} s, all ${ol} s ($ot bytes touched, $got fetched)"
	r_fa+=("$(ratio "$got" "$ot")")
	r_first+=("$of") r_load+=("$ol") r_dl_first+=("$dl_first") r_dl_load+=("$dl_load")
	r_ff+=("$(ratio "$dl_first" "$of")") r_lf+=("$(ratio "$dl_load" "$ol")")
done
say "ocifs first tensor: $(stats "${r_first[@]}"); download-then-load: $(stats "${r_dl_first[@]}")"
say "ocifs whole load: $(stats "${r_load[@]}"); download-then-load: $(stats "${r_dl_load[@]}")"
sets first_tensor_vs_download "${r_ff[@]}"
sets load_vs_download "${r_lf[@]}"
sets fetched_vs_touched "${r_fa[@]}"

# ---------------------------------------------------------------- 2. bytes fetched for what is touched
# a loader of half the tensors (a shard's share) jumps over the others: what
# read-ahead fetched of them shows here
say "## half the tensors of each file, cold: bytes fetched against bytes touched"
r_fetch=()
for ((run = 1; run <= RUNS; run++)); do
	cold_load half
	say "touched $LT bytes, fetched $GOT bytes ($(ratio "$GOT" "$LT")x) in ${LL} s"
	r_fetch+=("$(ratio "$GOT" "$LT")")
done
sets fetched_vs_touched_half "${r_fetch[@]}"
setr read_ahead_window_per_file "$(awk -v k=1024 'BEGIN { print k " KiB (read_ahead_kb)" }')"

# ---------------------------------------------------------------- 3. warm: the mount against the cache file
# cached_bytes: the page cache in use on the machine (Cached, /proc/meminfo)
cached_bytes() { awk '$1 == "Cached:" { printf "%.0f\n", $2 * 1024 }' /proc/meminfo; }
# warm_file: the loader on the cache's files, caches dropped before (sets cl,
# the seconds, and pcf, the page cache it took)
warm_file() {
	local c0 cf ct
	drop_caches
	c0=$(cached_bytes)
	read -r cf cl ct <<<"$(load all $(for f in "${FILES[@]}"; do
		echo "$C/blobs/sha256/$(hex_of_file "$f")"
	done))"
	pcf=$(($(cached_bytes) - c0))
}
# warm LABEL OCIFS_BINARY: loads through a mount of that binary with the model
# complete in the cache, caches dropped before each, against the same loader
# on the cache's files; and the page cache a mapped, loaded model then holds
warm() {
	local label=$1 bin=$2 rw=() rc=() rr=() pc=()
	OCIFS=$bin bmount "$C" "$M" -o ro
	load all $(mpaths "$A") >/dev/null
	bumount "$M"
	# round 0 is not counted: in two sets of 5 rounds, the first load after
	# the cache was filled was the slowest of its set (6.6 and 6.0 s, the
	# others 2.8 to 5.5 s): the disk still busy with the 2 GiB just written,
	# though synced
	for ((run = 0; run <= RUNS; run++)); do
		# the two loads take turns going first: the disk's pace drifts
		((run % 2)) || warm_file
		OCIFS=$bin OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o ro >>"$LOG" 2>&1 || bail "mount"
		drop_caches
		c0=$(cached_bytes)
		read -r wf wl wt <<<"$(load all $(mpaths "$A"))"
		# the page cache this load took, whoever holds it (the mount's files,
		# the cache's, or both): the machine's Cached, before and after. Per
		# file, fincore could not tell: in passthrough a mapping of the
		# mount's file shows the cache file's pages.
		pcb=$(($(cached_bytes) - c0))
		bumount "$M"
		((run % 2)) && warm_file
		say "$label warm: ${wl} s; cache file: ${cl} s; page cache the load took: $pcb bytes, on the cache file $pcf$( ((run)) || echo " (round 0: not counted)")"
		((run)) || continue
		rw+=("$wl") rc+=("$cl") rr+=("$(ratio "$cl" "$wl")") pc+=("$pcb")
	done
	sets "warm_vs_cache_file_$label" "${rr[@]}"
	sets "page_cache_bytes_$label" "${pc[@]}"
	say "$label warm seconds: $(stats "${rw[@]}"); cache file: $(stats "${rc[@]}")"
}
say "## warm loads, caches dropped before each"
warm ocifs "$OCIFS"
if [ -n "${OCIFS_PT:-}" ]; then
	warm passthrough "$OCIFS_PT"
fi
setr model_bytes "$(for f in "${FILES[@]}"; do stat -c %s "$W/$f"; done | awk '{ s += $1 } END { printf "%.0f\n", s }')"
setr load_average "$(cut -d' ' -f1-3 /proc/loadavg)"
bench_summary

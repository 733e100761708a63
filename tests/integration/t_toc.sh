#!/bin/bash
# Layers that carry their own table of contents, made by real tools
# (containerd's ctr-remote from stargz-snapshotter): eStargz (gzip) and
# zstd:chunked. A fresh mount reads a small file by fetching the TOC and
# that file's chunks only, each checked against the TOC's digest of it.
# Bad input: a TOC whose digest does not match its annotation, a chunk that
# does not match its digest, an annotation on a layer with no TOC: the
# whole layer is read instead, the bytes right, a log line says why.
T_TIMEOUT=${T_TIMEOUT:-300}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env skopeo umoci python3 jq cmp
command -v containerd >/dev/null 2>&1 && command -v ctr-remote >/dev/null 2>&1 ||
	skip_all "containerd and ctr-remote (stargz-snapshotter) make the layers: not installed"

REG_ACCESSLOG=1 registry_start toc
M=$TESTDIR/mnt
TOC_ANN=containerd.io/snapshot/stargz/toc.digest

# ---- an image of two layers, converted by ctr-remote
W=$TESTDIR/w
mkdir -p "$W/l1/etc" "$W/l1/data" "$W/l2/app"
echo "small and early" >"$W/l1/etc/base.txt"
make_random_file "$W/l1/data/big.bin" $((9 * 1024 * 1024)) toc-big
ln -s ../etc/base.txt "$W/l1/data/link"
# runs of zeros: containers/storage's zstd:chunked makes "zeros" chunks of them
{ head -c 300000 /dev/zero; head -c 200000 "$W/l1/data/big.bin"; head -c 70000 /dev/zero; } >"$W/l1/data/holes.bin"
printf 'print("hi")\n' >"$W/l2/app/main.py"
image_build "$TESTDIR/layout" v1 linux/amd64 "$W/l1" "$W/l2" >"$TESTDIR/umoci.log" 2>&1 ||
	{ diag_file "$TESTDIR/umoci.log"; bail "umoci image build"; }
# containers/storage's own zstd:chunked, as podman pushes it (its TOC's digest is of its
# compressed bytes). Its layers have a file more: the same ones would be found in
# containers/image's blob-info cache, and pushed as their gzip or eStargz forms.
if command -v podman >/dev/null 2>&1; then
	echo podman >"$W/l1/etc/podman.txt"
	echo podman >"$W/l2/app/podman.txt"
	podman_store push
	if image_build "$TESTDIR/layout-p" v1 linux/amd64 "$W/l1" "$W/l2" &&
		skopeo copy -q "oci:$TESTDIR/layout-p:v1" containers-storage:localhost/toc/app:1 &&
		podman push -q --tls-verify=false \
			--compression-format zstd:chunked localhost/toc/app:1 "docker://$REG/img/app:podzc"; then
		PODZC=1
	fi >"$TESTDIR/podman.log" 2>&1
	podman_store_off
	[ -n "${PODZC:-}" ] || { not_ok "podman pushes zstd:chunked"; diag_file "$TESTDIR/podman.log"; }
else
	skip_part "podman's zstd:chunked" "podman is not installed"
fi
push_image "$TESTDIR/layout" v1 img/app 1 >/dev/null || bail "skopeo copy"
umoci unpack --image "$TESTDIR/layout:v1" "$TESTDIR/ref" >/dev/null || bail "umoci unpack"
REF=$TESTDIR/ref/rootfs

C=$TESTDIR/containerd
mkdir -p "$C"
cat >"$C/config.toml" <<EOF
version = 2
root = "$C/root"
state = "$C/state"
[grpc]
  address = "$C/sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$C/opt"
[plugins."io.containerd.grpc.v1.cri"]
  disable = true
EOF
containerd --config "$C/config.toml" >"$C/log" 2>&1 </dev/null &
CPID=$!
_LIB_DAEMON_PIDS+=("$CPID") # stopped by the test's cleanup, whatever happens
wait_until 30 test -S "$C/sock" || { diag_file "$C/log"; bail "containerd did not start"; }
ctr() { ctr-remote -a "$C/sock" "$@" >>"$C/ctr.log" 2>&1; }
ctr images pull --plain-http "$REG/img/app:1" || { diag_file "$C/ctr.log"; bail "ctr pull"; }
ctr images convert --estargz --oci "$REG/img/app:1" "$REG/img/app:esgz" &&
	ctr images push --plain-http "$REG/img/app:esgz" || { diag_file "$C/ctr.log"; bail "eStargz"; }
ctr images convert --zstdchunked --oci "$REG/img/app:1" "$REG/img/app:zchunk" &&
	ctr images push --plain-http "$REG/img/app:zchunk" || { diag_file "$C/ctr.log"; bail "zstd:chunked"; }
kill $CPID 2>/dev/null
wait $CPID 2>/dev/null
TAGS="esgz zchunk${PODZC:+ podzc}"

# same_tree DIR: every regular file and symlink of the reference the same under DIR
same_tree() {
	local f bad=0
	while IFS= read -r -d '' f; do
		if [ -L "$REF/$f" ]; then
			[ "$(readlink "$REF/$f")" = "$(readlink "$1/$f")" ] || bad=$((bad + 1))
		else
			cmp -s "$REF/$f" "$1/$f" || { echo "# differs: $f" >&2; bad=$((bad + 1)); }
		fi
	done < <(cd "$REF" && find . \( -type f -o -type l \) -print0)
	[ "$bad" = 0 ]
}
# parallel_reads DIR: eight readers at once of the file of three chunks, each from its own offset
parallel_reads() {
	local i bad=0 pids=()
	for i in 1 2 3 4 5 6 7 8; do
		tail -c +$((i * 1000000)) "$1/data/big.bin" >"$TESTDIR/par.$i" &
		pids+=($!)
	done
	wait "${pids[@]}" # not a bare wait: the registry and the daemon are children too
	for i in 1 2 3 4 5 6 7 8; do
		cmp -s <(tail -c +$((i * 1000000)) "$REF/data/big.bin") "$TESTDIR/par.$i" || bad=$((bad + 1))
	done
	rm -f "$TESTDIR"/par.*
	[ "$bad" = 0 ]
}
# layer_bytes TAG MARK: bytes of TAG's layer blobs served after MARK
layer_bytes() {
	local d s=0
	for d in $(manifest_get img/app "$1" | jq -r '.layers[].digest'); do
		s=$((s + $(served_bytes "${d#sha256:}" "$2")))
	done
	echo $s
}

for tag in $TAGS; do
	MF=$(manifest_get img/app $tag)
	check "$tag: each layer carries a TOC digest" \
		test "$(jq --arg a "$TOC_ANN" --arg z io.containers.zstd-chunked.manifest-checksum \
			'[.layers[].annotations | (.[$a] // .[$z] // empty)] | length' <<<"$MF")" = 2
	ZSIZE=$(jq '[.layers[].size] | add' <<<"$MF")
	# publish_index: a layer read through its own TOC has no index of ours to publish
	OCIFS_CACHE=$TESTDIR/cache.$tag mount_ocifs "$REG" "$M" -o ro,publish_index || bail "mount ($tag)"
	mark=$(reg_log_mark)
	check_eq "$tag: a fresh mount reads a small file of the base layer" "small and early" \
		"$(cat "$M/img/app/$tag/etc/base.txt")"
	reg_log_quiet
	got=$(layer_bytes $tag "$mark")
	check "$tag: and fetched a small part of the layers ($got of $ZSIZE bytes)" test "$got" -lt $((ZSIZE / 8))
	check "$tag: eight readers at once of the chunked file read it right" parallel_reads "$M/img/app/$tag"
	check "$tag: every file and link of the image reads right" same_tree "$M/img/app/$tag"
	check "$tag: eStargz's landmark files are not shown" \
		test -z "$(ls -A "$M/img/app/$tag" | grep landmark)"
	check_eq "$tag: nothing logged as an error or warning" "" "$(grep -i 'error\|warning' "$OCIFS_LOG")"
	check_eq "$tag: no index of ours is published for it" 0 \
		"$(manifest_get img/app "sha256-$(manifest_digest img/app $tag | sed 's/^sha256://')" 2>/dev/null |
			jq '[.manifests[]? | select(.artifactType == "application/vnd.ocifs.layer.index.v1")] | length' ||
			echo 0)"
	umount_ocifs "$M"
done

# ---- the layer store answers a layer's TOC digest, the key newer engines look up
MF=$(manifest_get img/app esgz)
L0=$(jq -r '.layers[0].digest' <<<"$MF")
T0=$(jq -r --arg a "$TOC_ANN" '.layers[0].annotations[$a]' <<<"$MF")
OCIFS_CACHE=$TESTDIR/cache.store mount_ocifs "$REG" "$M" || bail "mount (store)"
K=$(printf '%s' "$REG/img/app:esgz" | base64 -w0)
check_eq "the store's layer found by TOC digest is the layer, its TOC digest in info" "$L0 $T0" \
	"$(jq -r '"\(.["compressed-diff-digest"]) \(.["toc-digest"])"' "$M/.layers/$K/$T0/info" 2>&1)"
check_same "and its diff reads" "$REF/etc/base.txt" "$M/.layers/$K/$T0/diff/etc/base.txt"
umount_ocifs "$M"

# ---- bad input: each pushed as a tag of its own, read by a fresh mount
# bad_case NAME TAG WHY: the base layer's file reads right, the whole layer
# was fetched, and the log says WHY
bad_case() {
	local name=$1 tag=$2 why=$3 mark l0
	OCIFS_CACHE=$TESTDIR/cache.$name mount_ocifs "$REG" "$M" -o ro || { not_ok "$name: mount"; return; }
	mark=$(reg_log_mark)
	check_eq "$name: the base layer's file reads right" "small and early" \
		"$(cat "$M/img/app/$tag/etc/base.txt" 2>&1)"
	check "$name: the log says why the TOC is not used" grep -q "$why" "$OCIFS_LOG"
	l0=$(manifest_get img/app "$tag" | jq -r '.layers[0].digest')
	check "$name: the whole layer was read instead" \
		test "$(reg_log_quiet; served_bytes "${l0#sha256:}" "$mark")" -ge \
		"$(manifest_get img/app "$tag" | jq '.layers[0].size')"
	check "$name: every file of the image reads right" same_tree "$M/img/app/$tag"
	check "$name: the daemon is up" daemon_alive "$M"
	umount_ocifs "$M"
}
# the TOC digest annotation changed
manifest_get img/app esgz | jq -c --arg a "$TOC_ANN" \
	'.layers[0].annotations[$a] = "sha256:\("0" * 64)"' >"$TESTDIR/bad-toc.json"
push_manifest img/app bad-toc "$TESTDIR/bad-toc.json" >/dev/null || bail "push bad-toc"
bad_case toc-digest bad-toc "the table of contents hashes to"
# the annotation on a plain gzip layer
manifest_get img/app 1 | jq -c --arg a "$TOC_ANN" --arg d "sha256:$(printf '%064d' 1)" \
	'.layers[0].annotations[$a] = $d' >"$TESTDIR/no-toc.json"
push_manifest img/app no-toc "$TESTDIR/no-toc.json" >/dev/null || bail "push no-toc"
bad_case no-toc no-toc "no table of contents at the end of the blob"
# a chunk whose digest in the TOC is wrong: the TOC rewritten, its annotation to match
MF=$(manifest_get img/app esgz)
L0=$(jq -r '.layers[0].digest' <<<"$MF")
blob_get img/app "$L0" >"$TESTDIR/l0.esgz"
python3 - "$TESTDIR/l0.esgz" "$TESTDIR/l0.bad" <<'PY' >"$TESTDIR/l0.toc" || bail "rewrite the TOC"
import gzip, hashlib, io, json, sys, tarfile, zlib
b = open(sys.argv[1], "rb").read()
foot = b[-51:]
off = int(foot[16:32], 16)
t = zlib.decompressobj(31).decompress(b[off:-51])
j = json.loads(tarfile.open(fileobj=io.BytesIO(t)).extractfile("stargz.index.json").read())
for e in j["entries"]:
    if e["name"] == "etc/base.txt":
        e["chunkDigest"] = "sha256:" + "1" * 64
new = json.dumps(j).encode()
tb = io.BytesIO()
with tarfile.open(fileobj=tb, mode="w", format=tarfile.GNU_FORMAT) as tf:
    ti = tarfile.TarInfo("stargz.index.json")
    ti.size = len(new)
    tf.addfile(ti, io.BytesIO(new))
member = gzip.compress(tb.getvalue(), mtime=0)
open(sys.argv[2], "wb").write(b[:off] + member + foot)
print("sha256:" + hashlib.sha256(new).hexdigest())
PY
NL0=$(push_blob img/app "$TESTDIR/l0.bad")
jq -c --arg a "$TOC_ANN" --arg d "$NL0" --argjson s "$(stat -c %s "$TESTDIR/l0.bad")" \
	--arg t "$(cat "$TESTDIR/l0.toc")" \
	'.layers[0].digest = $d | .layers[0].size = $s | .layers[0].annotations[$a] = $t' \
	<<<"$MF" >"$TESTDIR/bad-chunk.json"
push_manifest img/app bad-chunk "$TESTDIR/bad-chunk.json" >/dev/null || bail "push bad-chunk"
bad_case chunk-digest bad-chunk "does not match its digest: its table of contents is not used again"
finish

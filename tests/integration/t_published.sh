#!/bin/bash
# Published layer indexes (-o publish_index): a mount that indexes an image's
# layers pushes each index as a referrer of the image; a fresh mount
# elsewhere then reads a file by fetching the indexes and only the spans of
# the layer that the file needs, each checked against the index. Bad
# indexes (spans that lie, cut short, of another layer, not zstd) give EIO
# once or fall back to reading the whole layer: never wrong bytes. An index
# is used only when signed (cosign's format) by a key of -o index_trust.
T_TIMEOUT=${T_TIMEOUT:-300}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env skopeo umoci python3 zstd jq cmp openssl

REG_ACCESSLOG=1 registry_start published
ITYPE=application/vnd.ocifs.layer.index.v1
IMT=application/vnd.ocifs.layer.index.v1+zstd
M=$TESTDIR/mnt

# ---- an image of three layers: the base holds 12 MiB before its small files
W=$TESTDIR/w
mkdir -p "$W/l1/data" "$W/l1/etc" "$W/l2/usr/bin" "$W/l3/app"
make_random_file "$W/l1/data/a.bin" $((6 * 1024 * 1024)) base-a
python3 -c '
import random, sys
r = random.Random(7)
words = ["layer", "index", "span", "registry", "digest", "gzip", "window", "tar"]
with open(sys.argv[1], "w") as f:
    for i in range(150000):
        f.write(" ".join(r.choice(words) for _ in range(6)) + "\n")
' "$W/l1/data/b.txt"
printf 'ID=ocifs-test\nVERSION_ID=1\n' >"$W/l1/etc/os-release"
echo "the base's last word" >"$W/l1/etc/zz.conf"
make_random_file "$W/l2/usr/bin/tool" $((3 * 1024 * 1024)) tool
printf 'print("hello")\n' >"$W/l3/app/main.py"
image_build "$TESTDIR/layout" v1 linux/amd64 "$W/l1" "$W/l2" "$W/l3" >"$TESTDIR/umoci.log" 2>&1 ||
	{ diag_file "$TESTDIR/umoci.log"; bail "umoci image build"; }
# zstd first: skopeo would reuse the gzip layers it pushed before (its blob-info cache)
skopeo copy -q --dest-tls-verify=false --dest-compress --dest-compress-format zstd \
	"oci:$TESTDIR/layout:v1" "docker://$REG/img/zst:1" || bail "skopeo copy (zstd)"
ZIMG=$(manifest_digest img/zst 1)
IMG=$(push_image "$TESTDIR/layout" v1 img/app 1) || bail "skopeo copy (gzip)"
check_eq "the zstd image has zstd layers" application/vnd.oci.image.layer.v1.tar+zstd \
	"$(manifest_get img/zst 1 | jq -r '.layers[0].mediaType')"
umoci unpack --image "$TESTDIR/layout:v1" "$TESTDIR/ref" >/dev/null || bail "umoci unpack"
REF=$TESTDIR/ref/rootfs
MF=$(manifest_get img/app 1)
mapfile -t LAYERS < <(jq -r '.layers[].digest' <<<"$MF")
ZSIZE=$(jq '[.layers[].size] | add' <<<"$MF")
check_eq "the image has three gzip layers" "3 application/vnd.oci.image.layer.v1.tar+gzip" \
	"$(jq -r '"\(.layers | length) \(.layers[0].mediaType)"' <<<"$MF")"

# layer_bytes [MARK]: bytes of the image's layer blobs the registry served after MARK
layer_bytes() {
	local d s=0
	for d in "${LAYERS[@]}"; do s=$((s + $(served_bytes "${d#sha256:}" "${1:-0}"))); done
	echo $s
}
# referrers REPO SUBJECT: the fallback index's entries of our type, "digest layer" each
referrers() {
	manifest_get "$1" "sha256-${2#sha256:}" 2>/dev/null |
		jq -r --arg t "$ITYPE" '.manifests[] | select(.artifactType == $t) |
			"\(.digest) \(.annotations["io.ocifs.layer.digest"])"'
}
# same_tree DIR: every regular file of the reference reads the same under DIR
same_tree() {
	local f bad=0
	while IFS= read -r -d '' f; do
		cmp -s "$REF/$f" "$1/$f" || { echo "# differs: $f" >&2; bad=$((bad + 1)); }
	done < <(cd "$REF" && find . -type f -print0)
	[ "$bad" = 0 ]
}

# ---- a mount with -o publish_index indexes the layers and publishes them
sign_keygen pub && sign_keygen other || bail "openssl: key pairs"
KEY=$TESTDIR/pub.key TRUST=$TESTDIR/pub.pub
mark=$(reg_log_mark)
OCIFS_CACHE=$TESTDIR/cache.pub mount_ocifs "$REG" "$M" -o ro,publish_index,index_sign_key="$KEY" ||
	bail "mount with publish_index"
check_eq "the publishing mount reads the base layer's file" "ID=ocifs-test" \
	"$(head -n1 "$M/img/app/1/etc/os-release")"
check_eq "so it fetched every layer whole" "$ZSIZE" "$(reg_log_quiet; layer_bytes "$mark")"
check_eq "three indexes are published as referrers of the image" 3 "$(referrers img/app "$IMG" | wc -l)"
check_eq "one for each layer" "$(printf '%s\n' "${LAYERS[@]}" | sort)" \
	"$(referrers img/app "$IMG" | cut -d' ' -f2 | sort)"
R1=$(referrers img/app "$IMG" | awk -v l="${LAYERS[0]}" '$2 == l { print $1 }')
RM=$(manifest_get img/app "$R1")
check_eq "a referrer's subject is the image manifest" "$IMG" "$(jq -r .subject.digest <<<"$RM")"
check_eq "its one blob is the zstd index, naming its layer" "$IMT ${LAYERS[0]}" \
	"$(jq -r '.layers[0] | "\(.mediaType) \(.annotations["io.ocifs.layer.digest"])"' <<<"$RM")"
IDX1=$(jq -r '.layers[0].digest' <<<"$RM")
blob_get img/app "$IDX1" | zstd -dc >"$TESTDIR/idx1" 2>/dev/null
check_eq "the index is the documented file (magic OCIFSLX2)" OCIFSLX2 "$(head -c 8 "$TESTDIR/idx1")"
check_eq "the zstd image's layers are published too" 3 \
	"$(cat "$M/img/zst/1/etc/zz.conf" >/dev/null; referrers img/zst "$ZIMG" | wc -l)"
signed_all() { # REPO SUBJECT PUB: every index referrer has a cosign signature by PUB
	local r bad=0
	for r in $(referrers "$1" "$2" | cut -d' ' -f1); do
		sign_verify "$1" "$r" "$3" || { echo "# not signed by $3: $r" >&2; bad=$((bad + 1)); }
	done
	[ "$bad" = 0 ]
}
check "each index is signed as cosign signs (sha256-<hex>.sig, simple signing, ECDSA P-256)" \
	signed_all img/app "$IMG" "$TRUST"
check "the zstd image's indexes are signed too" signed_all img/zst "$ZIMG" "$TRUST"
check_fail "no signature verifies with another key" sign_verify img/app "$R1" "$TESTDIR/other.pub"
umount_ocifs "$M"

# ---- mounts that trust no key, or another key, do not use the indexes
for trust in none other; do
	mark=$(reg_log_mark)
	opts=ro
	[ "$trust" = other ] && opts=ro,index_trust=$TESTDIR/other.pub
	OCIFS_CACHE=$TESTDIR/cache.$trust mount_ocifs "$REG" "$M" -o "$opts" || bail "mount ($trust)"
	# the image held open: what the daemon found out about it lives as long as its node,
	# which the kernel could forget meanwhile (memory pressure, another test's drop_caches)
	exec 5<"$M/img/app/1"
	check_eq "trusting $trust: the base layer's file reads right" "ID=ocifs-test" \
		"$(head -n1 "$M/img/app/1/etc/os-release")"
	check "trusting $trust: the whole base layer was read, not its index" test \
		"$(reg_log_quiet; served_bytes "${LAYERS[0]#sha256:}" "$mark")" -ge "$(jq ".layers[0].size" <<<"$MF")"
	check_eq "trusting $trust: no index blob was fetched" 0 "$(served_requests "${IDX1#sha256:}" "$mark")"
	check "trusting $trust: every file of the image reads right" same_tree "$M/img/app/1"
	if [ "$trust" = none ]; then
		check_eq "with no index_trust, the log says once for the image that its indexes are not trusted" 1 \
			"$(grep -c 'published layer indexes found, none trusted' "$OCIFS_LOG")"
	else
		check "trusting another key, the log says the index is signed by no trusted key" \
			grep -q 'signed by no key of index_trust' "$OCIFS_LOG"
	fi
	exec 5<&-
	umount_ocifs "$M"
done

# ---- a fresh mount (empty cache) reads one small file of the base layer lazily
mark=$(reg_log_mark)
cat "$TESTDIR/other.pub" "$TRUST" >"$TESTDIR/both.pub"
OCIFS_CACHE=$TESTDIR/cache.lazy mount_ocifs "$REG" "$M" -o ro,index_trust="$TESTDIR/both.pub" ||
	bail "mount (lazy)"
check_eq "a fresh mount reads the base layer's file" "ID=ocifs-test" \
	"$(head -n1 "$M/img/app/1/etc/os-release")"
reg_log_quiet
got=$(layer_bytes "$mark")
check "and fetched a small part of the layers ($got of $ZSIZE bytes)" test "$got" -lt $((ZSIZE / 4))
check "the index blobs were fetched" test "$(served_requests "${IDX1#sha256:}" "$mark")" -ge 1
# parallel_reads DIR: eight readers at once, of two files each, through a fresh layer
parallel_reads() {
	local i bad=0 pids=()
	for i in 1 2 3 4 5 6 7 8; do
		if [ $((i % 2)) = 0 ]; then cat "$1/data/a.bin"; else cat "$1/data/b.txt"; fi >"$TESTDIR/par.$i" &
		pids+=($!)
	done
	wait "${pids[@]}" # not a bare wait: the registry and the daemon are children too
	for i in 1 2 3 4 5 6 7 8; do
		if [ $((i % 2)) = 0 ]; then cmp -s "$REF/data/a.bin" "$TESTDIR/par.$i"; else
			cmp -s "$REF/data/b.txt" "$TESTDIR/par.$i"; fi || bad=$((bad + 1))
	done
	rm -f "$TESTDIR"/par.*
	[ "$bad" = 0 ]
}
check "eight readers at once read the base layer's big files right" parallel_reads "$M/img/app/1"
check "every file of the image reads right through the published indexes" same_tree "$M/img/app/1"
check_eq "the zstd image reads right too" "the base's last word" "$(cat "$M/img/zst/1/etc/zz.conf")"
check "every file of the zstd image reads right" same_tree "$M/img/zst/1"
check_eq "nothing is logged as an error" "" "$(grep -i 'error\|not used' "$OCIFS_LOG")"
umount_ocifs "$M"

# ---- an index signed afterwards, as a pipeline's `cosign sign --key` of the referrer would
# (the signature made by the openssl command): a mount trusting that key uses it (a zstd
# layer of one frame still decompresses from its start: no fewer bytes are fetched here)
for RZ in $(referrers img/zst "$ZIMG" | cut -d' ' -f1); do
	sign_manifest img/zst "$RZ" "$TESTDIR/other.key" || bail "sign with the openssl command"
done
# the base layer, the biggest
LZ=$(manifest_get img/zst 1 | jq -r '.layers[0].digest')
RZ=$(referrers img/zst "$ZIMG" | awk -v l="$LZ" '$2 == l { print $1 }')
mark=$(reg_log_mark)
OCIFS_CACHE=$TESTDIR/cache.resigned mount_ocifs "$REG" "$M" -o ro,index_trust="$TESTDIR/other.pub" ||
	bail "mount (signed afterwards)"
check_eq "signed afterwards: the base layer's small file reads right" "ID=ocifs-test" \
	"$(head -n1 "$M/img/zst/1/etc/os-release")"
reg_log_quiet
check "signed afterwards: the index blob of that layer was fetched" test \
	"$(served_requests "$(manifest_get img/zst "$RZ" | jq -r '.layers[0].digest | sub("sha256:"; "")')" "$mark")" -ge 1
check "signed afterwards: every file of the zstd image reads right" same_tree "$M/img/zst/1"
check_eq "signed afterwards: no index is refused" "" "$(grep 'not used\|none trusted' "$OCIFS_LOG")"
umount_ocifs "$M"

# ---- bad indexes, each published as the newest referrer of the base layer
# idx_edit IN OUT MODE: the index file IN (decompressed) changed by MODE into OUT
#   spans:   every span digest changed (the CRC made right)
#   cut:     the first half only
#   rename:  naming the layer given as 4th argument (the CRC made right)
#   offset:  the data of the file named by the 4th argument moved 512 bytes on
idx_edit() {
	python3 - "$@" <<'PY'
import struct, sys, zlib
src, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
b = bytearray(open(src, "rb").read())
p = 16
n = struct.unpack_from("<I", b, p)[0]
name_at, name_len = p + 4, n
p += 4 + n + 8 + 8 + 72
span, nspans = struct.unpack_from("<II", b, p)
p += 8
if mode == "spans":
    for i in range(nspans):
        b[p + 32 * i] ^= 0x5A
elif mode == "cut":
    b = b[: len(b) // 2]
elif mode == "rename":
    new = sys.argv[4].encode()
    assert len(new) == name_len
    b[name_at : name_at + name_len] = new
elif mode == "offset":
    p += 32 * nspans
    (ncp,) = struct.unpack_from("<I", b, p)
    p += 4
    for _ in range(ncp):
        wlen = struct.unpack_from("<I", b, p + 20)[0]
        p += 24 + wlen
    (ne,) = struct.unpack_from("<I", b, p)
    p += 4
    def string(p):
        (n,) = struct.unpack_from("<I", b, p)
        return (None, p + 4) if n == 0xFFFFFFFF else (bytes(b[p + 4 : p + 4 + n]), p + 4 + n)
    for _ in range(ne):
        off_at = p + 1 + 12 + 16
        p += 1 + 12 + 24 + 8
        path, p = string(p)
        _, p = string(p)
        (nx,) = struct.unpack_from("<I", b, p)
        p += 4
        for _ in range(2 * nx):
            _, p = string(p)
        if path.lstrip(b"./") == sys.argv[4].encode():
            (o,) = struct.unpack_from("<q", b, off_at)
            struct.pack_into("<q", b, off_at, o + 512)
if mode != "cut":
    struct.pack_into("<I", b, len(b) - 4, zlib.crc32(bytes(b[:-4])) & 0xFFFFFFFF)
open(out, "wb").write(b)
PY
}
# publish_bad LAYER FILE: FILE as the newest published index of LAYER of img/app:1
publish_bad() {
	local layer=$1 file=$2 bd mf dg idx tag ssize
	bd=$(push_blob img/app "$file") || return 1
	printf '{}' >"$TESTDIR/.cfg.json"
	push_blob img/app "$TESTDIR/.cfg.json" >/dev/null || return 1
	ssize=$(manifest_get img/app "$IMG" | wc -c)
	mf=$TESTDIR/.bad.json
	jq -cn --arg t "$ITYPE" --arg mt "$IMT" --arg d "$bd" --argjson s "$(stat -c %s "$file")" \
		--arg l "$layer" --arg sd "$IMG" --argjson ss "$ssize" --arg e "$EMPTY_DIGEST" '
		{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
		 artifactType: $t, config: {mediaType: "application/vnd.oci.empty.v1+json", digest: $e, size: 2},
		 layers: [{mediaType: $mt, digest: $d, size: $s, annotations: {"io.ocifs.layer.digest": $l}}],
		 subject: {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $sd, size: $ss},
		 annotations: {"io.ocifs.layer.digest": $l}}' >"$mf"
	dg=$(push_manifest img/app "$(digest_of "$mf")" "$mf") || return 1
	# signed by the trusted key: what is checked here holds even for a trusted index
	sign_manifest img/app "$dg" "$KEY" || return 1
	tag=sha256-${IMG#sha256:}
	idx=$TESTDIR/.fallback.json
	manifest_get img/app "$tag" >"$idx" || return 1
	cp "$idx" "$TESTDIR/.fallback.orig"
	jq -c --arg d "$dg" --argjson s "$(stat -c %s "$mf")" --arg t "$ITYPE" --arg l "$layer" \
		'.manifests += [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d,
		  size: $s, artifactType: $t, annotations: {"io.ocifs.layer.digest": $l}}]' \
		"$idx" >"$idx.new" && push_manifest img/app "$tag" "$idx.new" "$MT_OCI_INDEX" >/dev/null
}
unpublish_bad() {
	push_manifest img/app "sha256-${IMG#sha256:}" "$TESTDIR/.fallback.orig" "$MT_OCI_INDEX" >/dev/null
}
# bad_case NAME FILE WHY: a fresh mount reads the base layer's files with
# FILE as its newest index, signed by the trusted key: they read right, the
# older genuine index used instead, and the log says WHY
bad_case() {
	local name=$1 file=$2 why=$3 mark
	publish_bad "${LAYERS[0]}" "$file" || { not_ok "$name: publish the bad index"; return; }
	OCIFS_CACHE=$TESTDIR/cache.$name mount_ocifs "$REG" "$M" -o ro,index_trust="$TRUST" ||
		{ not_ok "$name: mount"; return; }
	mark=$(reg_log_mark)
	check_eq "$name: the base layer's file reads right" "ID=ocifs-test" \
		"$(head -n1 "$M/img/app/1/etc/os-release")"
	check "$name: the log says why the index is not used" grep -q "$why" "$OCIFS_LOG"
	# the genuine index, older and signed, is used instead of the bad one
	check "$name: the genuine index is read instead, lazily" \
		test "$(reg_log_quiet; served_bytes "${LAYERS[0]#sha256:}" "$mark")" -lt \
		"$(jq ".layers[0].size / 2 | floor" <<<"$MF")"
	check "$name: every file of the image reads right" same_tree "$M/img/app/1"
	check "$name: the daemon is up" daemon_alive "$M"
	umount_ocifs "$M"
	unpublish_bad
}
idx_edit "$TESTDIR/idx1" "$TESTDIR/bad.spans" spans && zstd -q -f "$TESTDIR/bad.spans" -o "$TESTDIR/bad.spans.zst"
bad_case lying-spans "$TESTDIR/bad.spans.zst" "do not match the published index: it is not used again"
idx_edit "$TESTDIR/idx1" "$TESTDIR/bad.cut" cut && zstd -q -f "$TESTDIR/bad.cut" -o "$TESTDIR/bad.cut.zst"
bad_case cut-short "$TESTDIR/bad.cut.zst" "published index is damaged or of another blob"
# the index of layer 2 renamed as layer 1's: its size and spans are not layer 1's
R2=$(referrers img/app "$IMG" | awk -v l="${LAYERS[1]}" '$2 == l { print $1 }')
blob_get img/app "$(manifest_get img/app "$R2" | jq -r '.layers[0].digest')" | zstd -dc >"$TESTDIR/idx2"
idx_edit "$TESTDIR/idx2" "$TESTDIR/bad.other" rename "${LAYERS[0]}" &&
	zstd -q -f "$TESTDIR/bad.other" -o "$TESTDIR/bad.other.zst"
bad_case another-layer "$TESTDIR/bad.other.zst" "published index is damaged or of another blob"
idx_edit "$TESTDIR/idx1" "$TESTDIR/bad.offset" offset etc/os-release &&
	zstd -q -f "$TESTDIR/bad.offset" -o "$TESTDIR/bad.offset.zst"
check "the lying index differs from the true one" test "$(cmp "$TESTDIR/idx1" "$TESTDIR/bad.offset" | wc -l)" = 1
bad_case lying-offset "$TESTDIR/bad.offset.zst" "do not tile the tar\\|etc/os-release. is not what the published index says"
head -c 5000 /dev/urandom >"$TESTDIR/bad.noise"
bad_case not-zstd "$TESTDIR/bad.noise" "published index is not a zstd frame"

finish

#!/bin/bash
# .layers/: image layers as containers/storage's additional layer store:
# <base64 of the image reference>/<layer digest>/{diff/,info,blob}, the
# "use" protocol answered with ENOENT, whiteouts and opaque directories as
# overlayfs takes them. Then podman pulls an image with that store in its
# storage.conf: it fetches no layer blob itself, and `podman image mount`
# shows the image's files, read through the mount.
T_TIMEOUT=${T_TIMEOUT:-300}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env skopeo umoci jq getfattr base64 stat

REG_ACCESSLOG=1 registry_start layerstore
M=$TESTDIR/mnt

# ---- an image of two layers: the second whites out a directory and makes one opaque
L=$TESTDIR/layout
B=$TESTDIR/bundle
R=$B/rootfs
umoci init --layout "$L" && umoci new --image "$L:v1" &&
	umoci config --image "$L:v1" --os linux --architecture amd64 --config.cmd /bin/sh >/dev/null ||
	bail "umoci new"
umoci unpack --image "$L:v1" "$B" >/dev/null || bail "umoci unpack"
mkdir -p "$R/etc" "$R/gone" "$R/opq/old"
echo base >"$R/etc/base.txt"
echo x >"$R/gone/x"
echo old >"$R/opq/old/f"
make_random_file "$R/etc/big.bin" $((3 * 1024 * 1024)) big
umoci repack --refresh-bundle --image "$L:v1" "$B" >/dev/null || bail "umoci repack (layer 1)"
rm -rf "$R/gone" "$R/opq"
mkdir -p "$R/opq/new"
echo new >"$R/opq/new/f"
echo upper >"$R/etc/new.txt"
umoci repack --image "$L:v1" "$B" >/dev/null || bail "umoci repack (layer 2)"
umoci unpack --image "$L:v1" "$TESTDIR/ref" >/dev/null || bail "umoci unpack (reference)"
REF=$TESTDIR/ref/rootfs
push_image "$L" v1 img/als 1 >/dev/null || bail "skopeo copy"
DG=$(manifest_digest img/als 1)
MF=$(manifest_get img/als 1)
mapfile -t LAYERS < <(jq -r '.layers[].digest' <<<"$MF")
CFG=$(blob_get img/als "$(jq -r .config.digest <<<"$MF")")
key() { printf '%s' "$1" | base64 -w0; }
K=$(key "$REG/img/als:1")

mount_ocifs "$REG" "$M" || bail "mount"
S=$M/.layers
check "the store is not listed at the root" test -z "$(ls -A "$M" | grep -x .layers)"
check_ls "a layer's directory holds diff, info and blob" "$S/$K/${LAYERS[1]}" blob diff info
check_eq "info: the compressed digest, size and compression of the layer" \
	"${LAYERS[1]} $(jq '.layers[1].size' <<<"$MF") 2" \
	"$(jq -r '"\(.["compressed-diff-digest"]) \(.["compressed-size"]) \(.compression)"' "$S/$K/${LAYERS[1]}/info")"
check_eq "info: the uncompressed digest is the config's diff_id" "$(jq -r '.rootfs.diff_ids[1]' <<<"$CFG")" \
	"$(jq -r '.["diff-digest"]' "$S/$K/${LAYERS[1]}/info")"
check_eq "blob is the layer blob" "${LAYERS[0]#sha256:}" "$(sha256sum <"$S/$K/${LAYERS[0]}/blob" | cut -d' ' -f1)"
D0=$S/$K/${LAYERS[0]}/diff
D1=$S/$K/${LAYERS[1]}/diff
check_same "diff of the base layer has its files" "$REF/etc/base.txt" "$D0/etc/base.txt"
check_same "and its big file" "$REF/etc/big.bin" "$D0/etc/big.bin"
check_eq "diff of layer 2 shows the whited-out directory as a character device 0/0" \
	"character special file 0 0" "$(stat -c '%F %t %T' "$D1/gone" 2>&1)"
check_eq "a file whited out one by one is a character device too" \
	"character special file 0 0" "$(stat -c '%F %t %T' "$D1/opq/old" 2>&1)"
check "a directory without an opaque marker has no opaque xattr" \
	test -z "$(getfattr --absolute-names -d -m 'overlay' "$D1/opq" 2>/dev/null)"
check_ls "layer 2's root holds only what it changes" "$D1" etc gone opq
check "whiteout names are not shown" test ! -e "$D1/.wh.gone"
# a third layer with an opaque marker (.wh..wh..opq), made by hand: umoci writes whiteouts one by one
python3 - "$TESTDIR/l3.tar.gz" <<'PY' || bail "layer 3"
import gzip, io, sys, tarfile
with gzip.GzipFile(sys.argv[1], "wb", mtime=0) as gz:
    with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in (("opq", None), ("opq/.wh..wh..opq", b""), ("opq/n", b"n\n")):
            ti = tarfile.TarInfo(name)
            ti.mtime = 1700000000
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
PY
L3=$(push_blob img/als "$TESTDIR/l3.tar.gz")
jq -c --arg d "sha256:$(gzip -dc "$TESTDIR/l3.tar.gz" | sha256sum | cut -d' ' -f1)" \
	'.rootfs.diff_ids += [$d]' <<<"$CFG" >"$TESTDIR/cfg3.json"
C3=$(push_blob img/als "$TESTDIR/cfg3.json")
jq -c --arg l "$L3" --argjson ls "$(stat -c %s "$TESTDIR/l3.tar.gz")" --arg c "$C3" \
	--argjson cs "$(stat -c %s "$TESTDIR/cfg3.json")" \
	'.config.digest = $c | .config.size = $cs |
	 .layers += [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $l, size: $ls}]' \
	<<<"$MF" >"$TESTDIR/mf3.json"
push_manifest img/als 3 "$TESTDIR/mf3.json" >/dev/null || bail "push img/als:3"
D3=$S/$(key "$REG/img/als:3")/$L3/diff
check_eq "an opaque directory has trusted.overlay.opaque" y \
	"$(getfattr --absolute-names --only-values -n trusted.overlay.opaque "$D3/opq" 2>&1)"
check_eq "and user.overlay.opaque" y "$(getfattr --absolute-names --only-values -n user.overlay.opaque "$D3/opq" 2>&1)"
check_ls "its marker is not shown" "$D3/opq" n
check_ls "layer 2's etc holds only its new file" "$D1/etc" new.txt
out=$(touch "$S/$K/${LAYERS[0]}/use" 2>&1)
check "creating use answers ENOENT ($out)" grep -q "No such file or directory" <<<"$out"
out=$(rmdir "$S/$K/${LAYERS[0]}" 2>&1)
check "removing the layer's directory answers ENOENT ($out)" grep -q "No such file or directory" <<<"$out"
check "and it is still there" test -f "$S/$K/${LAYERS[0]}/info"
check "a reference by digest works too" test -f "$S/$(key "$REG/img/als@$DG")/${LAYERS[1]}/info"
check "a digest that is not a layer of the image: ENOENT" \
	test ! -e "$S/$K/sha256:$(printf '%064d' 0)"
check "a key that is not base64: ENOENT" test ! -e "$S/not*base64/${LAYERS[0]}"
check "an image of another registry: ENOENT" test ! -e "$S/$(key "example.invalid/img/als:1")/${LAYERS[0]}"
check "an image that does not exist: ENOENT" test ! -e "$S/$(key "$REG/img/none:1")/${LAYERS[0]}"

# ---- podman pulls through the store
if ! command -v podman >/dev/null 2>&1; then
	skip_part "the pull through the store" "podman is not installed"
else
	podman_store pull "$S"
	mark=$(reg_log_mark)
	podman pull -q --tls-verify=false "$REG/img/als:1" >"$TESTDIR/pull.log" 2>&1
	check "podman pulls the image through the store" test $? = 0 || diag_file "$TESTDIR/pull.log"
	reg_log_quiet
	podman_blobs() {
		tail -c +"$((mark + 1))" "$REG_ROOT/registry.log" | grep 'containers/' |
			grep -c "GET /v2/img/als/blobs/\(${LAYERS[0]}\|${LAYERS[1]}\)"
	}
	check_eq "podman fetched no layer blob itself" 0 "$(podman_blobs)"
	check "podman fetched the manifest" grep -q 'GET /v2/img/als/manifests/1 .*containers/' \
		<(tail -c +"$((mark + 1))" "$REG_ROOT/registry.log")
	pm=$(podman image mount "$REG/img/als:1" 2>"$TESTDIR/mount.log")
	check "podman image mount" test -n "$pm" -a -d "$pm" || diag_file "$TESTDIR/mount.log"
	if [ -n "$pm" ]; then
		check_same "the image's base file reads through the store" "$REF/etc/base.txt" "$pm/etc/base.txt"
		check_same "and its big file" "$REF/etc/big.bin" "$pm/etc/big.bin"
		check_same "and layer 2's file" "$REF/etc/new.txt" "$pm/etc/new.txt"
		# the server behind the store dies: the overlay on it reads on. The
		# file's pages are dropped first (only its: POSIX_FADV_DONTNEED), so
		# that what follows asks a server.
		dd if="$pm/etc/big.bin" iflag=nocache count=0 status=none
		s=$(server_pid "$M")
		kill -KILL "$s"
		check_same "after a kill -9 of the server, the big file reads through podman's mount" \
			"$REF/etc/big.bin" "$pm/etc/big.bin"
		check_same "and the base file" "$REF/etc/base.txt" "$pm/etc/base.txt"
		check "served by another server" test -n "$(server_pid "$M")" -a "$(server_pid "$M")" != "$s"
		check "the whited-out directory is gone" test ! -e "$pm/gone"
		check_ls "the opaque directory holds only layer 2's" "$pm/opq" new
		podman image unmount "$REG/img/als:1" >/dev/null 2>&1
	fi
	podman rmi -f "$REG/img/als:1" >/dev/null 2>&1
	check "the mount is still up after podman let go" daemon_alive "$M"
	podman_store_off
fi
umount_ocifs "$M"
finish

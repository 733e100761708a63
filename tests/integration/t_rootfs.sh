#!/bin/bash
# Container images as their root filesystems: layers applied in order,
# whiteouts and opaque directories honoured, links, modes, owners, times,
# device nodes and FIFOs as the tar headers say; gzip, zstd and uncompressed
# layers. Checked against `umoci unpack` of the same image, and by running
# busybox from the mount with chroot. Hostile layers: entries escaping the
# root are left out with a log line; a corrupt layer gives EIO.
T_TIMEOUT=${T_TIMEOUT:-300}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env skopeo umoci chroot python3 setfattr
[ -x /bin/busybox ] || skip_all "busybox-static not installed"

REG_ACCESSLOG=1 registry_start rootfs

# ---- an image of two layers, made with umoci
L=$TESTDIR/layout
B=$TESTDIR/bundle
R=$B/rootfs
umoci init --layout "$L" && umoci new --image "$L:v1" &&
	umoci config --image "$L:v1" --os linux --architecture amd64 --config.cmd /bin/sh ||
	bail "umoci new"
umoci unpack --image "$L:v1" "$B" >/dev/null || bail "umoci unpack"
mkdir -p "$R/bin" "$R/etc" "$R/data/old" "$R/gone" "$R/dev"
cp /bin/busybox "$R/bin/busybox"
ln -s busybox "$R/bin/sh"
ln -s /bin/busybox "$R/bin/cat"
ln -s ../../../../../etc/shadow "$R/bin/escape"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
echo old >"$R/data/old/a.txt"
echo bye >"$R/gone/x.txt"
echo keep >"$R/data/keep.txt"
echo lower >"$R/etc/replaced"
umoci repack --refresh-bundle --image "$L:v1" "$B" >/dev/null || bail "umoci repack (layer 1)"
# layer 2: a whiteout, an opaque directory, a hard link, a FIFO, a device, owners, modes
rm -rf "$R/gone" "$R/data/keep.txt"
rm -rf "$R/data/old" && mkdir "$R/data/old" && echo new >"$R/data/old/b.txt"
echo hello >"$R/etc/hello"
chown 1234:5678 "$R/etc/hello"
chmod 4750 "$R/etc/hello"
ln "$R/etc/hello" "$R/etc/hello.hard"
mkfifo "$R/etc/fifo"
mknod "$R/dev/null" c 1 3
echo upper >"$R/etc/replaced"
setfattr -n user.origin -v ocifs-test "$R/etc/passwd" 2>/dev/null
touch -d '2021-06-01 12:00:00' "$R/etc/passwd"
umoci repack --image "$L:v1" "$B" >/dev/null || bail "umoci repack (layer 2)"
# zstd first: skopeo would reuse the gzip layers it pushed before (its blob-info cache)
skopeo copy -q --dest-tls-verify=false --dest-compress --dest-compress-format zstd \
	"oci:$L:v1" "docker://$REG/img/bb:zstd" || bail "push (zstd)"
skopeo copy -q --dest-tls-verify=false --dest-compress --dest-compress-format gzip \
	"oci:$L:v1" "docker://$REG/img/bb:gzip" || bail "push (gzip)"
check_eq "the registry holds gzip layers" "application/vnd.oci.image.layer.v1.tar+gzip" \
	"$(manifest_get img/bb gzip | jq -r '.layers[0].mediaType')"
check_eq "two of them" 2 "$(manifest_get img/bb gzip | jq '.layers | length')"
# uncompressed: the same layers gunzipped (this skopeo keeps them compressed)
push_uncompressed() {
	local mf=$TESTDIR/.plain.json layers='[]' d u i n
	manifest_get img/bb gzip >"$mf" || return 1
	n=$(jq '.layers | length' "$mf")
	for ((i = 0; i < n; i++)); do
		d=$(jq -r ".layers[$i].digest" "$mf")
		blob_get img/bb "$d" | gzip -dc >"$TESTDIR/.layer$i.tar" || return 1
		u=$(push_blob img/bb "$TESTDIR/.layer$i.tar") || return 1
		layers=$(jq -c --arg d "$u" --argjson s "$(stat -c %s "$TESTDIR/.layer$i.tar")" \
			'. + [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $d, size: $s}]' \
			<<<"$layers")
	done
	jq -c --argjson l "$layers" '.layers = $l' "$mf" >"$mf.new" &&
		push_manifest img/bb plain "$mf.new" >/dev/null
}
push_uncompressed || bail "push (uncompressed)"
check_eq "the registry holds zstd layers" "application/vnd.oci.image.layer.v1.tar+zstd" \
	"$(manifest_get img/bb zstd | jq -r '.layers[0].mediaType')"
check_eq "and uncompressed ones" "application/vnd.oci.image.layer.v1.tar" \
	"$(manifest_get img/bb plain | jq -r '.layers[0].mediaType')"
U=$TESTDIR/unpacked
umoci unpack --image "$L:v1" "$U" >/dev/null || bail "umoci unpack (reference)"

# listing: path, mode, owner, type, link target, size of files, mtime
meta() {
	(cd "$1" && find . -path ./.oci -prune -o -printf '%p %m %U %G %y %l %s %TY-%Tm-%Td_%TH:%TM:%TS\n' |
		sed -E 's/ ([0-9-]+_[0-9:]+)\.[0-9]+$/ \1/; s/^(\S+ [0-9]+ [0-9]+ [0-9]+ d  )[0-9]+ /\1- /;
			s/^(\. .*) [0-9-]+_[0-9:]+$/\1 (unpacked)/' | sort)
}
meta "$U/rootfs" >"$TESTDIR/want.meta"

M=$TESTDIR/mnt
mount_ocifs "$REG" "$M" -o ro || bail "mount"
for c in gzip zstd plain; do
	I=$M/img/bb/$c
	check "$c: chroot into the image runs busybox" chroot "$I" /bin/busybox true
	check_eq "$c: and a shell there reads its files" "hello" "$(chroot "$I" /bin/sh -c 'cat /etc/hello' 2>&1)"
	meta "$I" >"$TESTDIR/$c.meta"
	check "$c: paths, modes, owners, types, link targets, sizes and times as umoci unpacks them" \
		diff -u "$TESTDIR/want.meta" "$TESTDIR/$c.meta"
	check "$c: every file's bytes as umoci unpacks them" \
		diff -r --no-dereference -x .oci -x fifo -x null "$U/rootfs" "$I"
done
I=$M/img/bb/gzip
check_fail "a whiteout removes a lower layer's file" test -e "$I/data/keep.txt"
check_fail "and a whole directory" test -e "$I/gone"
check_ls "an opaque directory hides what lower layers put there" "$I/data/old" b.txt
check_ls "whiteout files are not shown" "$I/data" old
check_eq "a file of both layers reads the upper one" "upper" "$(cat "$I/etc/replaced")"
check_eq "a hard link reads its target's bytes" "hello" "$(cat "$I/etc/hello.hard")"
check_eq "a FIFO is a FIFO" "fifo" "$(stat -c %F "$I/etc/fifo" | tr -d ' ')"
check_eq "a device node keeps its numbers" "character special file 1,3" \
	"$(stat -c '%F %t,%T' "$I/dev/null")"
check_eq "a symlink escaping the root is shown as it is, not followed by ocifs" \
	"../../../../../etc/shadow" "$(readlink "$I/bin/escape")"
check_eq "set-id bits and owners" "4750 1234:5678" "$(stat -c '%a %u:%g' "$I/etc/hello")"
if getfattr -n user.origin "$U/rootfs/etc/passwd" >/dev/null 2>&1; then
	check_eq "xattrs from the tar headers" "ocifs-test" \
		"$(getfattr --absolute-names --only-values -n user.origin "$I/etc/passwd" 2>&1)"
fi
check_eq "the image's .oci/ is still there" "$(manifest_digest img/bb gzip)" \
	"$(tr -d '\n' <"$I/.oci/digest")"
check_err "the image is read-only" "Read-only file system" touch "$I/etc/new"
umount_ocifs "$M"
check_eq "the layers are indexed in the cache, not decompressed there" "0 6" \
	"$(find "$CACHE/layers" -name '*.tar' | wc -l) $(find "$CACHE/layers" -name '*.idx' | wc -l)"

# ---- looked up newest layer first; big layers read from checkpoints
L3=$TESTDIR/layout3
mkdir -p "$TESTDIR/l1/big" "$TESTDIR/l2/mid" "$TESTDIR/l3/app"
# 16 symbols at random: compresses about 2:1, and 12 MiB of tar spans several checkpoints
python3 - "$TESTDIR/l1/big" <<'PY'
import random, sys
r = random.Random(5)
for name in ("a.bin", "b.bin"):
    with open(f"{sys.argv[1]}/{name}", "wb") as f:
        f.write(bytes(r.choice(b"abcdefghijklmnop") for _ in range(6 * 1024 * 1024)))
PY
echo mid >"$TESTDIR/l2/mid/x.txt"
echo app >"$TESTDIR/l3/app/main.txt"
image_build "$L3" v1 linux/amd64 "$TESTDIR/l1" "$TESTDIR/l2" "$TESTDIR/l3" || bail "image of 3 layers"
push_image "$L3" v1 img/lazy gzip >/dev/null || bail "push (3 layers, gzip)"
skopeo copy -q --dest-tls-verify=false --dest-compress --dest-compress-format zstd \
	"oci:$L3:v1" "docker://$REG/img/lazy:zstd" || bail "push (3 layers, zstd)"
layer_hex() { manifest_get img/lazy gzip | jq -r ".layers[$1].digest" | sed 's/^sha256://'; }
base=$(layer_hex 0) mid=$(layer_hex 1) top=$(layer_hex 2)
rm -rf "$CACHE"
mount_ocifs "$REG" "$M" -o ro || bail "mount (lazy)"
I=$M/img/lazy/gzip
mark=$(reg_log_mark)
check_eq "a file of the newest layer reads" "app" "$(cat "$I/app/main.txt" 2>&1)"
reg_log_quiet
check_eq "without fetching the two layers below it" "0 0" \
	"$(served_requests "$base" "$mark") $(served_requests "$mid" "$mark")"
check "while the newest layer was fetched" test "$(served_requests "$top" "$mark")" -ge 1
check_ls "listing the root brings in every layer" "$I" app big mid
check_same "a file 6 MiB into a gzip layer reads whole" "$TESTDIR/l1/big/b.bin" "$I/big/b.bin"
check_eq "and its last MiB on its own" \
	"$(tail -c 1048576 "$TESTDIR/l1/big/b.bin" | sha256sum)" \
	"$(dd if="$I/big/b.bin" bs=1M skip=5 count=1 status=none | sha256sum)"
check_same "zstd: the same file" "$TESTDIR/l1/big/b.bin" "$M/img/lazy/zstd/big/b.bin"
idx=$(stat -c %s "$CACHE/layers/$base.idx")
check "the base layer's index is small: $idx bytes for 12 MiB of tar" test "$idx" -lt 400000
umount_ocifs "$M"
# the blob gone from the cache, its index kept: a read fetches from the nearest checkpoint only
rm -f "$CACHE/blobs/sha256/$base"
mount_ocifs "$REG" "$M" -o ro || bail "mount (index kept)"
mark=$(reg_log_mark)
check_eq "with the index kept, the last MiB of the first file reads again" \
	"$(tail -c 1048576 "$TESTDIR/l1/big/a.bin" | sha256sum)" \
	"$(dd if="$M/img/lazy/gzip/big/a.bin" bs=1M skip=5 count=1 status=none | sha256sum)"
reg_log_quiet
got=$(served_bytes "$base" "$mark")
size=$(manifest_get img/lazy gzip | jq '.layers[0].size')
check "fetching $got of the layer's $size bytes (from a checkpoint, not the start)" \
	test "$got" -gt 0 -a "$got" -lt "$((size * 3 / 4))"
umount_ocifs "$M"

# ---- hostile layers, made by hand
H=$TESTDIR/hostile
mkdir -p "$H"
python3 - "$H" <<'PY'
import io, sys, tarfile, gzip
d = sys.argv[1]
def add(t, name, data=b"x", typ=tarfile.REGTYPE, link=""):
    i = tarfile.TarInfo(name)
    i.type = typ
    i.linkname = link
    i.size = len(data) if typ == tarfile.REGTYPE else 0
    t.addfile(i, io.BytesIO(data) if typ == tarfile.REGTYPE else None)
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    add(t, "ok.txt", b"fine\n")
    add(t, "../evil.txt", b"evil\n")
    add(t, "a/../../evil2.txt", b"evil\n")
    add(t, "/abs.txt", b"absolute\n")
    add(t, "hard", typ=tarfile.LNKTYPE, link="../../etc/passwd")
    add(t, "long/" + "d" * 120 + "/file.txt", b"long name\n")
    i = tarfile.TarInfo("huge-header.txt")
    i.size = 4
    i.pax_headers = {"comment": "x" * (2 * 1024 * 1024)}
    t.addfile(i, io.BytesIO(b"big\n"))
    add(t, "after.txt", b"after\n")
raw = buf.getvalue()
open(d + "/hostile.tar.gz", "wb").write(gzip.compress(raw))
open(d + "/truncated.tar.gz", "wb").write(gzip.compress(raw)[:-40])
PY
# push_layer_image REPO TAG LAYER.tar.gz: a one-layer image of it
push_layer_image() {
	local repo=$1 tag=$2 layer=$3 ld cfg cd mf
	ld=$(push_blob "$repo" "$layer") || return 1
	cfg=$TESTDIR/.cfg.json
	jq -cn --arg d "sha256:$(gzip -dc "$layer" 2>/dev/null | sha256sum | cut -d' ' -f1)" \
		'{architecture: "amd64", os: "linux", rootfs: {type: "layers", diff_ids: [$d]}, config: {}}' >"$cfg"
	cd=$(push_blob "$repo" "$cfg") || return 1
	mf=$TESTDIR/.img.json
	jq -cn --arg ld "$ld" --argjson ls "$(stat -c %s "$layer")" --arg cd "$cd" \
		--argjson cs "$(stat -c %s "$cfg")" --arg mt "$MT_OCI_MANIFEST" \
		'{schemaVersion: 2, mediaType: $mt,
		  config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
		  layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $ld, size: $ls}]}' >"$mf"
	push_manifest "$repo" "$tag" "$mf" >/dev/null
}
push_layer_image img/hostile v1 "$H/hostile.tar.gz" || bail "push the hostile image"
push_layer_image img/hostile truncated "$H/truncated.tar.gz" || bail "push the truncated image"
mount_ocifs "$REG" "$M" -o ro || bail "mount (hostile)"
I=$M/img/hostile/v1
check_eq "a safe entry of a hostile layer reads" "fine" "$(cat "$I/ok.txt" 2>&1)"
check_ls "entries escaping the root are left out" "$I" after.txt long ok.txt
check_fail "nothing outside the tree appeared" test -e "$M/img/hostile/evil.txt"
check "the log names them" grep -q 'escapes the root: left out' "$OCIFS_LOG"
check "and the hard link to nothing in the image" grep -q 'hard link "hard" to nothing' "$OCIFS_LOG"
check "an entry behind a 2 MiB PAX header is left out, with a log line" \
	grep -q 'bytes of names or records: its entry left out' "$OCIFS_LOG"
check_eq "and the entry after it reads" "after" "$(cat "$I/after.txt" 2>&1)"
check_eq "a long (PAX) name reads" "long name" "$(cat "$I/long/$(printf 'd%.0s' $(seq 120))/file.txt" 2>&1)"
check_err "a truncated gzip layer: EIO" "Input/output error" ls "$M/img/hostile/truncated"
check "with a log line" grep -q 'gzip: truncated' "$OCIFS_LOG"
check "the daemon is alive" daemon_alive "$M"
umount_ocifs "$M"

# ---- directories packed by oras (io.deis.oras.content.unpack)
P=$TESTDIR/packed
mkdir -p "$P"
python3 - "$P" <<'PY'
import io, sys, tarfile, gzip, hashlib
d = sys.argv[1]
def tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, val in entries:
            i = tarfile.TarInfo(name)
            i.mode = 0o755 if kind == "dir" else 0o644
            if kind == "dir":
                i.type = tarfile.DIRTYPE
                t.addfile(i)
            elif kind == "link":
                i.type = tarfile.SYMTYPE
                i.linkname = val
                t.addfile(i)
            else:
                i.size = len(val)
                t.addfile(i, io.BytesIO(val))
    return buf.getvalue()
good = [("site", "dir", None), ("site/index.html", "file", b"<h1>hi</h1>\n"),
        ("site/css", "dir", None), ("site/css/a.css", "file", b"body{}\n"),
        ("site/home", "link", "index.html")]
for name, entries in [("good", good),
                      ("outside", good + [("other/x.txt", "file", b"x")]),
                      ("escape", good + [("site/evil", "link", "../../etc/passwd")])]:
    raw = tar(entries)
    open(f"{d}/{name}.tar.gz", "wb").write(gzip.compress(raw))
    open(f"{d}/{name}.digest", "w").write("sha256:" + hashlib.sha256(raw).hexdigest())
PY
# push_packed REPO TAG NAME [CONTENT_DIGEST]: one layer, title "site", as oras push of a directory
push_packed() {
	local repo=$1 tag=$2 f=$P/$3.tar.gz cd=${4:-$(cat "$P/$3.digest")} ld mf
	ld=$(push_blob "$repo" "$f") || return 1
	printf '{}' >"$TESTDIR/.empty"
	push_blob "$repo" "$TESTDIR/.empty" >/dev/null || return 1
	mf=$TESTDIR/.packed.json
	jq -cn --arg ld "$ld" --argjson ls "$(stat -c %s "$f")" --arg cd "$cd" --arg mt "$MT_OCI_MANIFEST" \
		--arg ed "$EMPTY_DIGEST" '{schemaVersion: 2, mediaType: $mt,
		  artifactType: "application/vnd.unknown.artifact.v1",
		  config: {mediaType: "application/vnd.oci.empty.v1+json", digest: $ed, size: 2},
		  layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $ld, size: $ls,
		            annotations: {"org.opencontainers.image.title": "site",
		                          "io.deis.oras.content.digest": $cd,
		                          "io.deis.oras.content.unpack": "true"}}]}' >"$mf"
	push_manifest "$repo" "$tag" "$mf" >/dev/null
}
push_packed web/packed good good || bail "push a packed directory"
push_packed web/packed outside outside || bail "push a packed directory with an entry outside"
push_packed web/packed escape escape || bail "push a packed directory with an escaping link"
push_packed web/packed baddigest good "sha256:$(printf '%064d' 0)" || bail "push a packed directory, wrong digest"
mount_ocifs "$REG" "$M" -o ro || bail "mount (packed)"
D=$M/web/packed
check_ls "a packed directory shows as its tree" "$D/good/site" css home index.html
check_eq "its files read" "<h1>hi</h1>" "$(cat "$D/good/site/index.html" 2>&1)"
check_eq "in subdirectories too" "body{}" "$(cat "$D/good/site/css/a.css" 2>&1)"
check_eq "its links stay links" "index.html" "$(readlink "$D/good/site/home")"
check_err "an entry outside site/: refused as oras refuses it (EIO)" "Input/output error" \
	ls "$D/outside/site"
check_err "a link escaping site/: refused" "Input/output error" ls "$D/escape/site"
check_err "content that does not hash to io.deis.oras.content.digest: refused" \
	"Input/output error" ls "$D/baddigest/site"
check "the log says why" grep -q 'not the sha256:0000' "$OCIFS_LOG"
check "the daemon is alive" daemon_alive "$M"
umount_ocifs "$M"
finish

#!/bin/bash
# Forged published layer indexes. Anyone who may push to a repository may
# publish a referrer: each forgery here is made from the genuine index a
# publishing mount pushed (idxtool.py changes one thing), signed by the
# forger's own key, and pushed as the newest index of its layer. Each is
# tried against a mount that trusts no key, one that trusts another key,
# and podman pulling through the layer store: every one must show the
# genuine tree, modes, owners and bytes (as umoci unpacks the image).
# Then what holds even for an index signed by a trusted key: entries that
# do not tile the tar are refused, a file's headers are checked whole on
# its first read, and a lie found drops what the index made.
T_TIMEOUT=${T_TIMEOUT:-600}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env skopeo umoci python3 zstd jq openssl sha256sum
TOOL="python3 ${srcdir:-$(dirname "$0")/../..}/tests/integration/idxtool.py"

REG_ACCESSLOG=1 registry_start forgery
ITYPE=application/vnd.ocifs.layer.index.v1
IMT=application/vnd.ocifs.layer.index.v1+zstd
M=$TESTDIR/mnt
sign_keygen good && sign_keygen evil || bail "openssl: key pairs"

# ---- the image: two gzip layers made with python's tarfile, owners and modes exact
python3 - "$TESTDIR" <<'PY' || bail "layers"
import gzip, io, random, sys, tarfile
d = sys.argv[1]
def add(tf, name, data=None, mode=0o644, uid=0, gid=0, typ=tarfile.REGTYPE, link=""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime, ti.linkname = typ, mode, uid, gid, 1700000000, link
    if typ == tarfile.DIRTYPE:
        ti.mode = mode if mode != 0o644 else 0o755
    ti.size = len(data) if data is not None else 0
    tf.addfile(ti, io.BytesIO(data) if data is not None else None)
r = random.Random(11)
words = ["layer", "index", "span", "registry", "digest", "gzip", "window", "tar", "forged"]
text = "".join(" ".join(r.choice(words) for _ in range(7)) + "\n" for _ in range(130000)).encode()
with gzip.GzipFile(d + "/l1.tar.gz", "wb", mtime=0) as gz:
    with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for dd in ["etc", "usr", "usr/bin", "docs", "data"]:
            add(tf, dd, typ=tarfile.DIRTYPE)
        add(tf, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        add(tf, "etc/secret", b"the secret\n", mode=0o600)
        add(tf, "etc/hidden.conf", b"hidden=no\n")
        # a genuine hard link whose own header says 0644: it is its target, 0600
        add(tf, "etc/secret.lnk", mode=0o644, typ=tarfile.LNKTYPE, link="etc/secret")
        add(tf, "usr/bin/tool", b"#!/bin/sh\necho tool\n", mode=0o755, uid=1000, gid=1000)
        add(tf, "docs/a.txt", b"doc a\n")
        add(tf, "docs/b.txt", b"doc b\n")
        add(tf, "data/words.txt", text)
        add(tf, "gone.txt", b"deleted by layer 2\n")
        add(tf, "data/noise.bin", random.Random(5).randbytes(4 << 20))
with gzip.GzipFile(d + "/l2.tar.gz", "wb", mtime=0) as gz:
    with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
        add(tf, ".wh.gone.txt", b"")
        add(tf, "app", typ=tarfile.DIRTYPE)
        add(tf, "app/main.py", b"print('hello')\n")
PY
layers='[]' diffs='[]'
for i in 1 2; do
	dg=$(push_blob img/f "$TESTDIR/l$i.tar.gz") || bail "push layer $i"
	layers=$(jq -c --arg d "$dg" --argjson s "$(stat -c %s "$TESTDIR/l$i.tar.gz")" \
		'. + [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}]' <<<"$layers")
	diffs=$(jq -c --arg d "sha256:$(gzip -dc "$TESTDIR/l$i.tar.gz" | sha256sum | cut -d' ' -f1)" '. + [$d]' <<<"$diffs")
done
jq -nc --argjson d "$diffs" '{architecture: "amd64", os: "linux", rootfs: {type: "layers", diff_ids: $d}, config: {}}' \
	>"$TESTDIR/cfg.json"
cdg=$(push_blob img/f "$TESTDIR/cfg.json") || bail "push config"
jq -nc --arg c "$cdg" --argjson cs "$(stat -c %s "$TESTDIR/cfg.json")" --argjson l "$layers" \
	'{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
	  config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs}, layers: $l}' \
	>"$TESTDIR/img.json"
IMG=$(push_manifest img/f 1 "$TESTDIR/img.json") || bail "push image"
mapfile -t LAYERS < <(jq -r '.[].digest' <<<"$layers")
L1SIZE=$(stat -c %s "$TESTDIR/l1.tar.gz")

# ---- the reference: what skopeo and umoci make of the image
skopeo --insecure-policy copy -q --src-tls-verify=false "docker://$REG/img/f:1" "oci:$TESTDIR/layout:1" ||
	bail "skopeo copy"
umoci unpack --image "$TESTDIR/layout:1" "$TESTDIR/ref" >/dev/null || bail "umoci unpack"
REF=$TESTDIR/ref/rootfs
# listing DIR: every name below DIR with its type, mode, owner and link target, every
# regular file's sha256, and that of the end of data/words.txt read on its own
listing() {
	# the end of data/words.txt first, before anything else of it: a read that starts
	# past its second gzip checkpoint, so that it decompresses from that checkpoint's window
	(cd "$1" && echo "tail $(tail -c 100000 data/words.txt | sha256sum)" &&
		find . -mindepth 1 -printf '%P %y %m %U:%G %l\n' | sort &&
		find . -type f -print0 | sort -z | xargs -0r sha256sum)
}
listing "$REF" >"$TESTDIR/ref.list"
# check_list DESC LIST: LIST is the reference's listing (the lines that differ shown)
check_list() {
	if cmp -s "$TESTDIR/ref.list" "$2"; then
		ok "$1"
	else
		not_ok "$1"
		diff "$TESTDIR/ref.list" "$2" | head -n 10 | sed 's/^/#   /'
	fi
}
check "the reference holds the setuid-free tool of uid 1000" grep -qx 'usr/bin/tool f 755 1000:1000 ' \
	"$TESTDIR/ref.list"
check "the reference has no gone.txt (layer 2 deleted it)" test ! -e "$REF/gone.txt"
check "the reference's hard link is its target, 0600" grep -qx 'etc/secret.lnk f 600 0:0 ' "$TESTDIR/ref.list"

# ---- the genuine indexes, published and signed by a mount trusting good.key
OCIFS_CACHE=$TESTDIR/cache.pub mount_ocifs "$REG" "$M" -o ro,publish_index,index_sign_key="$TESTDIR/good.key" ||
	bail "publishing mount"
check_eq "the publishing mount reads the image" "print('hello')" "$(cat "$M/img/f/1/app/main.py")"
check_eq "and its base layer" "doc a" "$(cat "$M/img/f/1/docs/a.txt")"
umount_ocifs "$M"
referrer_of() { # LAYER: the newest index referrer of LAYER
	manifest_get img/f "sha256-${IMG#sha256:}" | jq -r --arg t "$ITYPE" --arg l "$1" \
		'[.manifests[] | select(.artifactType == $t and .annotations["io.ocifs.layer.digest"] == $l)] | last | .digest'
}
for i in 0 1; do
	R=$(referrer_of "${LAYERS[$i]}")
	blob_get img/f "$(manifest_get img/f "$R" | jq -r '.layers[0].digest')" | zstd -dcq >"$TESTDIR/idx$((i + 1))" ||
		bail "the genuine index of layer $((i + 1))"
done
check "the genuine index of layer 1 reads as the documented format" $TOOL "$TESTDIR/idx1" /dev/null dump
check "layer 1's index has more than one gzip checkpoint (the window forgery needs one)" \
	test "$($TOOL "$TESTDIR/idx1" /dev/null dump | wc -l)" -gt 5
OCIFS_CACHE=$TESTDIR/cache.good mount_ocifs "$REG" "$M" -o ro,index_trust="$TESTDIR/good.pub" || bail "mount"
mark=$(reg_log_mark)
check_eq "a mount trusting good.pub reads a small file lazily through the signed index" \
	"root:x:0:0:root:/root:/bin/sh" "$(cat "$M/img/f/1/etc/passwd")"
check "fetching a part of layer 1" test "$(reg_log_quiet; served_bytes "${LAYERS[0]#sha256:}" "$mark")" -lt "$L1SIZE"
listing "$M/img/f/1" >"$TESTDIR/good.list"
check_list "and the whole tree it shows is the reference's" "$TESTDIR/good.list"
umount_ocifs "$M"

# publish LAYERNO FILE KEY: FILE (decompressed index) as the newest index of that layer, signed by KEY
publish() {
	local layer=${LAYERS[$(($1 - 1))]} z=$2.zst bd mf dg tag idx
	zstd -qf "$2" -o "$z" && bd=$(push_blob img/f "$z") || return 1
	mf=$TESTDIR/.forged.json
	jq -cn --arg t "$ITYPE" --arg mt "$IMT" --arg d "$bd" --argjson s "$(stat -c %s "$z")" \
		--arg l "$layer" --arg sd "$IMG" --argjson ss "$(stat -c %s "$TESTDIR/img.json")" --arg e "$EMPTY_DIGEST" '
		{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
		 artifactType: $t, config: {mediaType: "application/vnd.oci.empty.v1+json", digest: $e, size: 2},
		 layers: [{mediaType: $mt, digest: $d, size: $s, annotations: {"io.ocifs.layer.digest": $l}}],
		 subject: {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $sd, size: $ss},
		 annotations: {"io.ocifs.layer.digest": $l, "forgery": "'"$(basename "$2")"'"}}' >"$mf"
	dg=$(push_manifest img/f "$(digest_of "$mf")" "$mf") && sign_manifest img/f "$dg" "$3" || return 1
	tag=sha256-${IMG#sha256:}
	idx=$TESTDIR/.fallback.json
	manifest_get img/f "$tag" >"$idx" && cp "$idx" "$TESTDIR/.fallback.orig" || return 1
	jq -c --arg d "$dg" --argjson s "$(stat -c %s "$mf")" --arg t "$ITYPE" --arg l "$layer" \
		'.manifests += [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d,
		  size: $s, artifactType: $t, annotations: {"io.ocifs.layer.digest": $l}}]' \
		"$idx" >"$idx.new" && push_manifest img/f "$tag" "$idx.new" "$MT_OCI_INDEX" >/dev/null
}
unpublish() { push_manifest img/f "sha256-${IMG#sha256:}" "$TESTDIR/.fallback.orig" "$MT_OCI_INDEX" >/dev/null; }

# podman_tree NAME OUT: podman pulls the image with the mount's .layers/ as its additional layer
# store, a store of its own, and OUT gets the listing of `podman image mount`
podman_tree() {
	local pm ret=1
	podman_store "$1" "$M/.layers"
	if podman pull -q --tls-verify=false "$REG/img/f@$IMG" >"$TESTDIR/pull.$1.log" 2>&1 &&
		pm=$(podman image mount "$REG/img/f@$IMG" 2>>"$TESTDIR/pull.$1.log") && [ -d "$pm" ]; then
		listing "$pm" >"$2"
		ret=0
		podman image unmount "$REG/img/f@$IMG" >/dev/null 2>&1
	fi
	podman rmi -f "$REG/img/f@$IMG" >/dev/null 2>&1
	podman system reset -f >/dev/null 2>&1
	podman_store_off
	rm -rf "$TESTDIR/podman-$1"
	return $ret
}
HAVE_PODMAN=
command -v podman >/dev/null 2>&1 && HAVE_PODMAN=1
[ -n "$HAVE_PODMAN" ] || skip_part "the forgeries through podman" "podman is not installed"

# forgery NAME LAYERNO MODE [ARG]: the genuine index of that layer changed by MODE, signed by
# evil.key: every mount that does not trust evil.pub shows the reference
forgery() {
	local name=$1 no=$2 mode=$3 f=$TESTDIR/forged.$1
	shift 3
	$TOOL "$TESTDIR/idx$no" "$f" "$mode" "$@" || { not_ok "$name: make the forgery"; return; }
	check "$name: the forgery differs from the genuine index" test -n "$(cmp "$TESTDIR/idx$no" "$f" 2>&1)"
	publish "$no" "$f" "$TESTDIR/evil.key" || { not_ok "$name: publish the forgery"; return; }
	check "$name: its signature verifies with the forger's key" \
		sign_verify img/f "$(referrer_of "${LAYERS[$((no - 1))]}")" "$TESTDIR/evil.pub"
	for trust in none good podman; do
		local opts=ro
		[ "$trust" = good ] && opts=ro,index_trust=$TESTDIR/good.pub
		[ "$trust" = podman ] && { [ -n "$HAVE_PODMAN" ] || continue; }
		OCIFS_CACHE=$TESTDIR/cache.$name.$trust mount_ocifs "$REG" "$M" -o "$opts" ||
			{ not_ok "$name: mount trusting $trust"; continue; }
		case $trust in
		none)
			listing "$M/img/f/1" >"$TESTDIR/$name.$trust.list"
			check_list "$name, trusting none: the genuine tree, modes, owners and bytes" \
				"$TESTDIR/$name.$trust.list"
			check "$name, trusting none: the log says the indexes are not trusted" \
				grep -q 'published layer indexes found, none trusted' "$OCIFS_LOG"
			;;
		good)
			listing "$M/img/f/1" >"$TESTDIR/$name.$trust.list"
			check_list "$name, trusting good.pub: the genuine tree, modes, owners and bytes" \
				"$TESTDIR/$name.$trust.list"
			check "$name, trusting good.pub: the log says the forgery is signed by no trusted key" \
				grep -q 'signed by no key of index_trust' "$OCIFS_LOG"
			;;
		podman)
			# a mount of its own (no trust), that nothing else has read through
			podman_tree "$name" "$TESTDIR/$name.podman.list"
			check_list "$name, podman through the layer store: the genuine tree" \
				"$TESTDIR/$name.podman.list"
			;;
		esac
		umount_ocifs "$M"
	done
	unpublish
}

forgery setuid-owner 1 setuid usr/bin/tool
forgery hidden-file 1 remove etc/hidden.conf
forgery removed-whiteout 2 remove .wh.gone.txt
forgery added-whiteout 2 add-whiteout etc/.wh.passwd
forgery devices 1 devices
forgery symlinks 1 symlinks
forgery long-name 1 long-name etc/secret
forgery hard-link-alias 1 hard-link etc/secret
forgery gzip-window 1 window
forgery opaque 2 opaque docs

# ---- what holds even for an index signed by a trusted key (the forger's, trusted here)
# trusted_case NAME LAYERNO MODE [ARG]: publish the forgery signed by evil.key, mount trusting evil.pub
trusted_case() {
	local name=$1 no=$2 mode=$3 f=$TESTDIR/trusted.$1
	shift 3
	$TOOL "$TESTDIR/idx$no" "$f" "$mode" "$@" && publish "$no" "$f" "$TESTDIR/evil.key" ||
		{ not_ok "$name: publish"; return 1; }
	OCIFS_CACHE=$TESTDIR/cache.t.$name mount_ocifs "$REG" "$M" -o ro,index_trust="$TESTDIR/evil.pub" ||
		{ not_ok "$name: mount"; unpublish; return 1; }
}
for c in "devices 1 devices" "symlinks 1 symlinks" "long-name 1 long-name etc/secret" \
	"hard-link-alias 1 hard-link etc/secret" "added-whiteout 2 add-whiteout etc/.wh.passwd" \
	"opaque 2 opaque docs"; do
	set -- $c
	trusted_case "$@" || continue
	listing "$M/img/f/1" >"$TESTDIR/t.$1.list"
	check_list "trusted $1: entries that do not tile the tar are refused: the genuine tree" "$TESTDIR/t.$1.list"
	check "trusted $1: the log says so" grep -q 'do not tile the tar' "$OCIFS_LOG"
	umount_ocifs "$M"
	unpublish
done

# a forged mode and owner, in place: shown until the file's first read checks its header,
# then everything the index made is dropped and made again from the whole layer
if trusted_case setuid 1 setuid usr/bin/tool; then
	D=$M/.layers/$(printf '%s' "$REG/img/f@$IMG" | base64 -w0)/${LAYERS[0]}/diff
	check_eq "trusted setuid: before a read, the signed index's word is shown" "4755 0:0" \
		"$(stat -c '%a %u:%g' "$M/img/f/1/usr/bin/tool")"
	check_eq "trusted setuid: in the layer store's diff too" "4755 0:0" \
		"$(stat -c '%a %u:%g' "$D/usr/bin/tool")"
	exec 7<"$M/img/f/1/usr/bin/tool"
	check_eq "trusted setuid: the first read gives the genuine bytes" "$(printf '#!/bin/sh\necho tool')" \
		"$(cat "$M/img/f/1/usr/bin/tool")"
	check "trusted setuid: the log says the header is not what the index says" \
		grep -q 'tar header of "usr/bin/tool" is not what the published index says' "$OCIFS_LOG"
	check_eq "trusted setuid: afterwards the genuine mode and owner are shown" "755 1000:1000" \
		"$(stat -c '%a %u:%g' "$M/img/f/1/usr/bin/tool")"
	check_eq "trusted setuid: and in the layer store's diff, dropped too" "755 1000:1000" \
		"$(stat -c '%a %u:%g' "$D/usr/bin/tool")"
	check "trusted setuid: and no forged capability" \
		test -z "$(getfattr --absolute-names -n security.capability "$M/img/f/1/usr/bin/tool" 2>/dev/null)"
	check_eq "trusted setuid: a descriptor opened before still reads the genuine bytes" \
		"$(printf '#!/bin/sh\necho tool')" "$(cat <&7)"
	exec 7<&-
	listing "$M/img/f/1" >"$TESTDIR/t.setuid.list"
	check_list "trusted setuid: the whole tree is the genuine one" "$TESTDIR/t.setuid.list"
	umount_ocifs "$M"
	unpublish
fi

# the same lie found while eight readers and a walker race through the image
if trusted_case setuid-race 1 setuid usr/bin/tool; then
	I=$M/img/f/1 pids=()
	stat "$I/usr/bin/tool" "$I/etc/passwd" "$I/docs/a.txt" >/dev/null
	for i in 1 2 3 4 5 6 7 8; do
		case $((i % 4)) in
		0) cat "$I/usr/bin/tool" ;;
		1) cat "$I/data/words.txt" ;;
		2) cat "$I/etc/passwd" "$I/docs/a.txt" "$I/docs/b.txt" ;;
		3) find "$I" -type f -exec stat -c '%n %a' {} + ;;
		esac >"$TESTDIR/race.$i" 2>&1 &
		pids+=($!)
	done
	wait "${pids[@]}"
	check_eq "trusted setuid, racing: every reader of the tool got the genuine bytes" \
		"$(printf '#!/bin/sh\necho tool\n#!/bin/sh\necho tool')" "$(cat "$TESTDIR/race.4" "$TESTDIR/race.8")"
	check "trusted setuid, racing: the big file read right" cmp -s "$REF/data/words.txt" "$TESTDIR/race.1"
	check "trusted setuid, racing: and again" cmp -s "$REF/data/words.txt" "$TESTDIR/race.5"
	listing "$M/img/f/1" >"$TESTDIR/t.race.list"
	check_list "trusted setuid, racing: afterwards the whole tree is the genuine one" "$TESTDIR/t.race.list"
	check "trusted setuid, racing: the daemon is up" daemon_alive "$M"
	umount_ocifs "$M"
	unpublish
fi

# a name changed in place to a long one (a PAX record in the tar) with a mode that opens it
if trusted_case renamed 1 rename-long etc/secret; then
	LONG=$M/img/f/1/etc/$(printf 's%.0s' $(seq 120))
	check_eq "trusted long name: the signed index's word is shown before a read" 644 "$(stat -c %a "$LONG")"
	check_fail "trusted long name: reading the renamed entry gives no secret" grep -q secret "$LONG"
	check "trusted long name: the log says its header is not what the index says" \
		grep -q 'is not what the published index says' "$OCIFS_LOG"
	check "trusted long name: the forged name is gone" test ! -e "$LONG"
	check_eq "trusted long name: etc/secret is back, 0600" "600" "$(stat -c %a "$M/img/f/1/etc/secret")"
	umount_ocifs "$M"
	unpublish
fi

finish

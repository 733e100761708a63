#!/bin/bash
# Container images (umoci + skopeo, OCI and Docker schema 2) and indexes:
# an image shows its root filesystem, .oci/ holds the manifest, config and
# blobs; an index shows the child of the mount's platform, and every child
# under .oci/platforms/.
T_TIMEOUT=${T_TIMEOUT:-300}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env skopeo umoci getfattr

case $(uname -m) in
x86_64) HOST_PLATFORM=linux/amd64 ;;
aarch64) HOST_PLATFORM=linux/arm64 ;;
*) HOST_PLATFORM= ;;
esac

registry_start images

# ---- seed: one image, pushed as OCI and as Docker schema 2
mkdir -p "$TESTDIR/l1/etc" "$TESTDIR/l2/usr/bin"
printf 'greeting=hello\n' >"$TESTDIR/l1/etc/hello.conf"
make_random_file "$TESTDIR/l2/usr/bin/tool" 200000 tool
image_build "$TESTDIR/layout" amd linux/amd64 "$TESTDIR/l1" "$TESTDIR/l2" >"$TESTDIR/umoci.log" 2>&1 ||
	{ diag_file "$TESTDIR/umoci.log"; bail "umoci image build"; }
DOCI=$(push_image "$TESTDIR/layout" amd img/oci 1 oci) || bail "skopeo copy (oci)"
DV2=$(push_image "$TESTDIR/layout" amd img/docker 1 v2s2) || bail "skopeo copy (v2s2)"
check_eq "registry serves img/oci:1 as an OCI manifest" "$MT_OCI_MANIFEST" \
	"$(manifest_mediatype img/oci 1)"
check_eq "registry serves img/docker:1 as Docker schema 2" "$MT_DOCKER_MANIFEST" \
	"$(manifest_mediatype img/docker 1)"

# A second image for arm64 (v2s2), and a Docker manifest list of both.
mkdir -p "$TESTDIR/l3/etc"
printf 'arch=arm64\n' >"$TESTDIR/l3/etc/arch"
image_build "$TESTDIR/layout" arm linux/arm64 "$TESTDIR/l3" >"$TESTDIR/umoci.log" 2>&1 ||
	{ diag_file "$TESTDIR/umoci.log"; bail "umoci image build (arm64)"; }
DARM=$(push_image "$TESTDIR/layout" arm img/docker arm v2s2) || bail "skopeo copy (arm64)"
DLIST=$(INDEX_MEDIATYPE=$MT_DOCKER_LIST push_index img/docker list "linux/amd64=$DV2" "linux/arm64=$DARM") ||
	bail "push manifest list"

# An index of artifacts with three platforms.
DIDX=$(push_platform_index plat/idx multi linux/amd64 linux/arm64 linux/arm/v7) || bail "push index"
manifest_get plat/idx multi >"$TESTDIR/idx.json"
child() { jq -r --arg a "$1" --arg v "${2:-}" \
	'.manifests[] | select(.platform.architecture == $a and (.platform.variant // "") == $v) | .digest' \
	"$TESTDIR/idx.json"; }
DAMD=$(child amd64)
DARM64=$(child arm64)
DARMV7=$(child arm v7)

M=$TESTDIR/mnt
mount_ocifs "$REG" "$M" -o ro || bail "cannot go on without a mount"

# image_checks LABEL DIR REPO REF DIGEST MEDIATYPE
image_checks() {
	local l=$1 d=$2 repo=$3 ref=$4 dg=$5 mt=$6 cfg b
	check_ls "$l: the root filesystem of its two layers" "$d" etc usr
	check_same "$l: a file of the first layer" "$TESTDIR/l1/etc/hello.conf" "$d/etc/hello.conf"
	check_same "$l: a file of the second layer" "$TESTDIR/l2/usr/bin/tool" "$d/usr/bin/tool"
	manifest_get "$repo" "$ref" >"$TESTDIR/$l.manifest"
	check_same "$l: .oci/manifest.json is the registry's bytes" "$TESTDIR/$l.manifest" "$d/.oci/manifest.json"
	check_eq "$l: .oci/digest" "$dg" "$(cat "$d/.oci/digest" 2>&1)"
	cfg=$(jq -r .config.digest "$TESTDIR/$l.manifest")
	blob_get "$repo" "$cfg" >"$TESTDIR/$l.config"
	check_same "$l: .oci/config.json is the config blob" "$TESTDIR/$l.config" "$d/.oci/config.json"
	check_eq "$l: config says amd64" "amd64" "$(jq -r .architecture "$d/.oci/config.json" 2>&1)"
	for b in $(jq -r '.config.digest, .layers[].digest' "$TESTDIR/$l.manifest"); do
		check_eq "$l: .oci/blobs/sha256/${b:7:12}... hashes to its name" "${b#sha256:}" \
			"$(sha256sum <"$d/.oci/blobs/sha256/${b#sha256:}" 2>&1 | cut -d' ' -f1)"
		check_eq "$l: size of blob ${b:7:12}... is the descriptor's" \
			"$(jq -r --arg b "$b" '[.config, .layers[]] | map(select(.digest == $b))[0].size' "$TESTDIR/$l.manifest")" \
			"$(stat -c %s "$d/.oci/blobs/sha256/${b#sha256:}" 2>&1)"
	done
	b=$(jq -r '.layers[1].digest' "$TESTDIR/$l.manifest")
	rm -rf "$TESTDIR/x"
	mkdir -p "$TESTDIR/x"
	tar xzf "$d/.oci/blobs/sha256/${b#sha256:}" -C "$TESTDIR/x" 2>"$TESTDIR/tar.err"
	check_same "$l: second layer untars to usr/bin/tool" "$TESTDIR/l2/usr/bin/tool" "$TESTDIR/x/usr/bin/tool"
	check_eq "$l: user.oci.mediaType" "$mt" "$(getfattr --absolute-names --only-values -n user.oci.mediaType "$d" 2>&1)"
	check_eq "$l: user.oci.digest" "$dg" "$(getfattr --absolute-names --only-values -n user.oci.digest "$d" 2>&1)"
}
image_checks oci "$M/img/oci/1" img/oci 1 "$DOCI" "$MT_OCI_MANIFEST"
image_checks v2s2 "$M/img/docker/1" img/docker 1 "$DV2" "$MT_DOCKER_MANIFEST"
check_ls "img/docker lists its tags" "$M/img/docker" 1 arm list

# Docker manifest list
L=$M/img/docker/list
manifest_get img/docker list >"$TESTDIR/list.json"
check_same "manifest list: .oci/manifest.json" "$TESTDIR/list.json" "$L/.oci/manifest.json"
check_eq "manifest list: .oci/digest" "$DLIST" "$(cat "$L/.oci/digest" 2>&1)"
check_fail "manifest list: no .oci/config.json" test -e "$L/.oci/config.json"
check_eq "manifest list: linux/arm64 child's config" "arm64" \
	"$(jq -r .architecture "$L/.oci/platforms/linux/arm64/.oci/config.json" 2>&1)"
check_eq "manifest list: linux/amd64 child's digest" "$DV2" \
	"$(cat "$L/.oci/platforms/linux/amd64/.oci/digest" 2>&1)"
manifest_get img/docker "$DARM" >"$TESTDIR/arm.json"
check_same "manifest list: .oci/blobs holds the child manifest" "$TESTDIR/arm.json" \
	"$L/.oci/blobs/sha256/${DARM#sha256:}"

# OCI index of artifacts
I=$M/plat/idx/multi
if [ -n "$HOST_PLATFORM" ]; then
	check_ls "index: shows the host platform's files" "$I" platform.txt
	check_eq "index: default platform is the host's ($HOST_PLATFORM)" "$HOST_PLATFORM" \
		"$(cat "$I/platform.txt" 2>&1)"
fi
check_same "index: .oci/manifest.json is the index" "$TESTDIR/idx.json" "$I/.oci/manifest.json"
check_eq "index: .oci/digest is the index's" "$DIDX" "$(cat "$I/.oci/digest" 2>&1)"
check_fail "index: no .oci/config.json" test -e "$I/.oci/config.json"
for p in "linux/amd64=$DAMD" "linux/arm64=$DARM64" "linux/arm/v7=$DARMV7"; do
	pl=${p%%=*} dg=${p#*=}
	check_eq "index: .oci/platforms/$pl/platform.txt" "$pl" \
		"$(cat "$I/.oci/platforms/$pl/platform.txt" 2>&1)"
	check_eq "index: .oci/platforms/$pl/.oci/digest" "$dg" \
		"$(cat "$I/.oci/platforms/$pl/.oci/digest" 2>&1)"
	manifest_get plat/idx "$dg" >"$TESTDIR/child.json"
	check_same "index: .oci/blobs/sha256/<child $pl> is its manifest" "$TESTDIR/child.json" \
		"$I/.oci/blobs/sha256/${dg#sha256:}"
done
check_ls "index: .oci/platforms lists the OSes" "$I/.oci/platforms" linux
check_ls "index: .oci/platforms/linux lists the architectures" "$I/.oci/platforms/linux" amd64 arm arm64
check_ls "index: .oci/platforms/linux/arm lists the variant" "$I/.oci/platforms/linux/arm" v7
check_eq "index by digest dir shows the same" "$(cat "$I/platform.txt" 2>&1)" \
	"$(cat "$M/plat/idx/$DIDX/platform.txt" 2>&1)"
umount_ocifs "$M"

# -o platform=
for pl in linux/arm64 linux/arm/v7 linux/amd64; do
	M=$TESTDIR/p-${pl//\//-}
	if mount_ocifs "$REG/plat/idx:multi" "$M" -o "ro,platform=$pl"; then
		check_ls "platform=$pl: index root shows the child's file" "$M" platform.txt
		check_eq "platform=$pl: index shows that child" "$pl" "$(cat "$M/platform.txt" 2>&1)"
		umount_ocifs "$M"
	fi
done

finish

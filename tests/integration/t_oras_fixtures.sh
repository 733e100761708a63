#!/bin/bash
# Content pushed by oras itself (its e2e registry storage, see
# ../shared/fixtures/oras-e2e/README.md): ocifs shows what `oras pull`
# writes.
T_TIMEOUT=${T_TIMEOUT:-240}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env getfattr tar

FIX=${ORAS_FIXTURES:-$srcdir/../shared/fixtures/oras-e2e}
[ -f "$FIX/mount_artifacts.tar.gz" ] || skip_all "oras fixtures not found in $FIX"
registry_start oras "$FIX/mount_artifacts.tar.gz" "$FIX/mount_fallback_artifacts.tar.gz" \
	"$FIX/mount_artifacts_index.tar.gz" "$FIX/mount_images.tar.gz"

FOOBAR=sha256:fd6ed2f36b5465244d5dc86cb4e7df0ab8a9d24adc57825099f522fe009a22bb
MULTI=sha256:e2bfc9cc6a84ec2d7365b5a28c6bc5806b7fa581c9ad7883be955a64e3cc034f
HELLO=sha256:2ef548696ac7dd66ef38aab5cc8fc5cc1fb637dfaedb3a9afc89bf16db9277e1
check_eq "registry serves command/artifacts:foobar" "$FOOBAR" "$(manifest_digest command/artifacts foobar)"
check_eq "registry serves command/artifacts:multi" "$MULTI" "$(manifest_digest command/artifacts multi)"
check_eq "registry serves command/images:multi" "$MULTI" "$(manifest_digest command/images multi)"

# What oras pull writes for foobar
E=$TESTDIR/expect
mkdir -p "$E"
printf foo >"$E/foo1"
printf foo >"$E/foo2"
printf bar >"$E/bar"
blob_get command/artifacts "$HELLO" >"$TESTDIR/hello.tar"
check_eq "hello.tar blob from the registry" "${HELLO#sha256:}" "$(sha256_hex "$TESTDIR/hello.tar")"

M=$TESTDIR/mnt
mount_ocifs "$REG" "$M" -o ro,page_size=7 || bail "cannot go on without a mount"

check_ls "root lists command" "$M" command
check_ls "command/ lists both repositories" "$M/command" artifacts images
check "command/artifacts lists foobar and multi" \
	bash -c "ls '$M/command/artifacts' | grep -qx foobar && ls '$M/command/artifacts' | grep -qx multi"
check_ls "command/images lists its tags" "$M/command/images" foobar multi

# foobar_checks LABEL DIR REPO
foobar_checks() {
	local l=$1 d=$2 repo=$3 f
	check_ls "$l: files foo1 foo2 bar" "$d" bar foo1 foo2
	for f in foo1 foo2 bar; do
		check_same "$l: $f bytes" "$E/$f" "$d/$f"
		check_eq "$l: $f size" 3 "$(stat -c %s "$d/$f" 2>&1)"
	done
	rm -rf "$TESTDIR/pulled"
	cp -r "$d" "$TESTDIR/pulled" 2>/dev/null
	check "$l: cp -r gives exactly what oras pull writes" diff -r "$E" "$TESTDIR/pulled"
	manifest_get "$repo" foobar >"$TESTDIR/foobar.json"
	check_same "$l: .oci/manifest.json" "$TESTDIR/foobar.json" "$d/.oci/manifest.json"
	check_same "$l: .oci/manifest.json is the stored blob" "$(blob_path "$FOOBAR")" "$d/.oci/manifest.json"
	check_eq "$l: .oci/digest" "$FOOBAR" "$(cat "$d/.oci/digest" 2>&1)"
	check_eq "$l: .oci/config.json is {}" "{}" "$(cat "$d/.oci/config.json" 2>&1)"
	check_eq "$l: user.oci.digest" "$FOOBAR" "$(getfattr --absolute-names --only-values -n user.oci.digest "$d" 2>&1)"
	check_eq "$l: user.oci.digest of foo2" \
		"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae" \
		"$(getfattr --absolute-names --only-values -n user.oci.digest "$d/foo2" 2>&1)"
	check_eq "$l: user.oci.annotation.org.opencontainers.image.title of bar" "bar" \
		"$(getfattr --absolute-names --only-values -n user.oci.annotation.org.opencontainers.image.title "$d/bar" 2>&1)"
}
foobar_checks artifacts:foobar "$M/command/artifacts/foobar" command/artifacts
foobar_checks images:foobar "$M/command/images/foobar" command/images
check_eq "artifacts@digest: foo1" "foo" "$(cat "$M/command/artifacts@$FOOBAR/foo1" 2>&1)"

# multi_checks LABEL DIR REPO
multi_checks() {
	local l=$1 d=$2 repo=$3 p dg
	check_ls "$l: index shows hello.tar for the host platform" "$d" hello.tar
	check_same "$l: hello.tar bytes" "$TESTDIR/hello.tar" "$d/hello.tar"
	check_eq "$l: hello.tar size" 10240 "$(stat -c %s "$d/hello.tar" 2>&1)"
	check "$l: hello.tar is a tar archive" tar tf "$d/hello.tar"
	manifest_get "$repo" multi >"$TESTDIR/multi.json"
	check_same "$l: .oci/manifest.json is the index" "$TESTDIR/multi.json" "$d/.oci/manifest.json"
	check_ls "$l: .oci/platforms/linux" "$d/.oci/platforms/linux" amd64 arm arm64
	check_ls "$l: .oci/platforms/linux/arm" "$d/.oci/platforms/linux/arm" v7
	for p in linux/amd64 linux/arm64 linux/arm/v7; do
		dg=$(jq -r --arg p "$p" '.manifests[] | select(([.platform.os, .platform.architecture,
			.platform.variant] | map(select(. != null)) | join("/")) == $p) | .digest' "$TESTDIR/multi.json")
		check_ls "$l: .oci/platforms/$p lists hello.tar" "$d/.oci/platforms/$p" hello.tar
		check_same "$l: .oci/platforms/$p/hello.tar" "$TESTDIR/hello.tar" "$d/.oci/platforms/$p/hello.tar"
		check_eq "$l: .oci/platforms/$p/.oci/digest" "$dg" "$(cat "$d/.oci/platforms/$p/.oci/digest" 2>&1)"
		manifest_get "$repo" "$dg" >"$TESTDIR/child.json"
		check_same "$l: .oci/blobs/sha256/<$p child> is its manifest" "$TESTDIR/child.json" \
			"$d/.oci/blobs/sha256/${dg#sha256:}"
	done
}
multi_checks artifacts:multi "$M/command/artifacts/multi" command/artifacts
multi_checks images:multi "$M/command/images/multi" command/images
umount_ocifs "$M"

# SOURCE = the tag itself, another platform
M=$TESTDIR/arm
if mount_ocifs "$REG/command/artifacts:multi" "$M" -o ro,platform=linux/arm/v7; then
	check_ls "platform=linux/arm/v7: hello.tar" "$M" hello.tar
	check_same "platform=linux/arm/v7: hello.tar bytes" "$TESTDIR/hello.tar" "$M/hello.tar"
	umount_ocifs "$M"
fi

finish

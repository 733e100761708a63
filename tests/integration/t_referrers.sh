#!/bin/bash
# Referrers under <artifact>/.oci/referrers/<artifactType>/<digest>/: what
# `oras discover` shows, from the fallback tag schema (the Debian registry has
# no referrers API; the API path has unit tests). Content seeded here with
# curl: annotations, an artifact type only in the config, three levels of
# nesting, an artifact type that cannot be a path; sha256-<hex> tags hidden
# from listings; attach, detach and rm -r through the mount. Content pushed
# by oras itself (its e2e fixtures, ORAS_FIXTURES) is checked too when the
# fixtures are there; that part alone is skipped without them.
T_TIMEOUT=${T_TIMEOUT:-240}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env getfattr setfattr

FIX=${ORAS_FIXTURES:-$srcdir/../shared/fixtures/oras-e2e}
if [ -f "$FIX/mount_fallback_artifacts.tar.gz" ]; then
	HAVE_FIX=1
	registry_start referrers "$FIX/mount_fallback_artifacts.tar.gz"
else
	HAVE_FIX=0
	registry_start referrers
fi

FOOBAR=sha256:fd6ed2f36b5465244d5dc86cb4e7df0ab8a9d24adc57825099f522fe009a22bb
SBOM=sha256:e2c6633a79985906f1ed55c592718c73c41e809fb9818de232a635904a74d48d
SIG=sha256:0cb8c4da7e9ff2e7eefca33141091b9239218e3125a35e17e8bcd05fa3a5e714

# push_referrer REPO SUBJECT TYPE FILE [CONFIG_MT]: a manifest whose subject
# is SUBJECT with FILE as its one layer, pushed by digest and added to the
# fallback index sha256-<hex of SUBJECT> (made when missing), as oras attach
# does without the referrers API. TYPE "" leaves artifactType out of both
# (the type is then the config's media type, CONFIG_MT). ANN (JSON) goes
# into the index entry's annotations. Prints the referrer's digest.
push_referrer() {
	local repo=$1 subject=$2 type=$3 file=$4 cmt=${5:-$MT_EMPTY} smt ssize lay cfg mf dg idx tag
	smt=$(manifest_mediatype "$repo" "$subject") || return 1
	ssize=$(manifest_get "$repo" "$subject" | wc -c)
	lay=$(push_blob "$repo" "$file") || return 1
	cfg=$TESTDIR/.cfg.json
	printf '{}' >"$cfg"
	push_blob "$repo" "$cfg" >/dev/null || return 1
	mf=$TESTDIR/.referrer.json
	jq -cn --arg at "$type" --arg cmt "$cmt" --arg cd "$EMPTY_DIGEST" --arg ld "$lay" \
		--argjson ls "$(stat -c %s "$file")" --arg t "$(basename "$file")" \
		--arg smt "$smt" --arg sd "$subject" --argjson ss "$ssize" --arg mt "$MT_OCI_MANIFEST" \
		--argjson ann "${ANN:-"{}"}" '
		{schemaVersion: 2, mediaType: $mt}
		+ (if $at == "" then {} else {artifactType: $at} end)
		+ {config: {mediaType: $cmt, digest: $cd, size: 2},
		   layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $ld, size: $ls,
		             annotations: {"org.opencontainers.image.title": $t}}],
		   subject: {mediaType: $smt, digest: $sd, size: $ss}}
		+ (if $ann == {} then {} else {annotations: $ann} end)' >"$mf" || return 1
	dg=$(push_manifest "$repo" "$(digest_of "$mf")" "$mf") || return 1
	tag=sha256-${subject#sha256:}
	idx=$TESTDIR/.index.json
	manifest_get "$repo" "$tag" >"$idx" 2>/dev/null ||
		jq -cn --arg mt "$MT_OCI_INDEX" '{schemaVersion: 2, mediaType: $mt, manifests: []}' >"$idx"
	jq -c --arg d "$dg" --argjson s "$(stat -c %s "$mf")" --arg at "$type" --arg mt "$MT_OCI_MANIFEST" \
		--argjson ann "${ANN:-"{}"}" '.manifests += [{mediaType: $mt, digest: $d, size: $s}
		+ (if $at == "" then {} else {artifactType: $at} end)
		+ (if $ann == {} then {} else {annotations: $ann} end)]' "$idx" >"$idx.new" || return 1
	push_manifest "$repo" "$tag" "$idx.new" "$MT_OCI_INDEX" >/dev/null || return 1
	echo "$dg"
}

# ---- seeded here: an artifact with referrers of every kind
W=$TESTDIR/w
mkdir -p "$W"
printf 'the app\n' >"$W/app.txt"
printf '{"sbom":1}\n' >"$W/sbom.json"
printf 'signature of the app\n' >"$W/app.sig"
printf 'config-typed\n' >"$W/legacy.txt"
printf 'signature of the sbom\n' >"$W/sbom.sig"
printf 'attestation of the sbom signature\n' >"$W/att.json"
printf 'hidden\n' >"$W/evil.txt"
APP=$(push_artifact r/app v1 "$W" app.txt) || bail "seed r/app:v1"
R_SBOM=$(ANN='{"org.example.tool":"syft"}' push_referrer r/app "$APP" application/vnd.example.sbom.v1 \
	"$W/sbom.json") || bail "seed the sbom"
R_SIG=$(push_referrer r/app "$APP" application/vnd.dev.cosign.artifact.sig.v1+json "$W/app.sig") ||
	bail "seed the signature"
R_LEGACY=$(push_referrer r/app "$APP" "" "$W/legacy.txt" application/vnd.example.legacy.config.v1+json) ||
	bail "seed the config-typed referrer"
R_SBOMSIG=$(push_referrer r/app "$R_SBOM" application/vnd.example.sig "$W/sbom.sig") ||
	bail "seed the signature of the sbom"
R_ATT=$(push_referrer r/app "$R_SBOMSIG" application/vnd.example.attestation "$W/att.json") ||
	bail "seed the attestation of that signature"
push_referrer r/app "$APP" "../../etc" "$W/evil.txt" >/dev/null || bail "seed the hostile type"
check "the registry has the fallback index of r/app:v1" manifest_get r/app "sha256-${APP#sha256:}"

M=$TESTDIR/mnt
mount_ocifs "$REG" "$M" -o ro || bail "mount"

# ---- what oras pushed: foobar <- sbom <- signature
if [ "$HAVE_FIX" = 1 ]; then
	F=$M/command/artifacts/foobar/.oci/referrers
	check_ls "foobar's referrers: one type tree" "$F" test
	check_ls "test/ holds the sbom type" "$F/test" sbom.file
	check_ls "the sbom by its digest" "$F/test/sbom.file" "$SBOM"
	check_eq "the sbom's file, as oras pull writes it" "$(blob_get command/artifacts \
		"$(manifest_get command/artifacts "$SBOM" | jq -r '.layers[0].digest')")" \
		"$(cat "$F/test/sbom.file/$SBOM/sbom" 2>&1)"
	check_eq "the sbom's .oci/digest" "$SBOM" "$(tr -d '\n' <"$F/test/sbom.file/$SBOM/.oci/digest" 2>&1)"
	N=$F/test/sbom.file/$SBOM/.oci/referrers
	check_ls "a referrer of the referrer: the signature" "$N/test/signature.file" "$SIG"
	check_eq "the signature's file" "mocked signature" "$(cat "$N/test/signature.file/$SIG/signature" 2>&1)"
	check_eq "the signature's subject is the sbom" "$SBOM" \
		"$(jq -r .subject.digest "$N/test/signature.file/$SIG/.oci/manifest.json" 2>&1)"
	check_eq "and its artifact type, as an xattr" "test/signature.file" \
		"$(getfattr --absolute-names --only-values -n user.oci.artifactType "$N/test/signature.file/$SIG" 2>&1)"
	check_ls "the signature has no referrers" "$N/test/signature.file/$SIG/.oci/referrers"
	check_ls "the tag listing hides sha256-<hex> tags" "$M/command/artifacts" foobar
	check_eq "yet such a tag can be looked up: the index of foobar's referrers" "$SBOM" \
		"$(jq -r '.manifests[0].digest' "$M/command/artifacts/sha256-${FOOBAR#sha256:}/.oci/manifest.json" 2>&1)"
else
	skip_part "what oras pushed (foobar <- sbom <- signature)" "oras fixtures not found in $FIX"
fi

# ---- seeded with curl
A=$M/r/app/v1/.oci/referrers
check_ls "r/app's referrers: type trees, the / of a type making levels" "$A" application
check_ls "application/ holds each type's remainder" "$A/application" \
	vnd.dev.cosign.artifact.sig.v1+json vnd.example.legacy.config.v1+json vnd.example.sbom.v1
check_ls "the sbom under its type" "$A/application/vnd.example.sbom.v1" "$R_SBOM"
check_eq "the sbom's bytes" '{"sbom":1}' "$(cat "$A/application/vnd.example.sbom.v1/$R_SBOM/sbom.json" 2>&1)"
check_ls "artifactType only in the config: grouped by the config media type" \
	"$A/application/vnd.example.legacy.config.v1+json" "$R_LEGACY"
check_eq "its bytes" "config-typed" \
	"$(cat "$A/application/vnd.example.legacy.config.v1+json/$R_LEGACY/legacy.txt" 2>&1)"
check_ls "the signature" "$A/application/vnd.dev.cosign.artifact.sig.v1+json" "$R_SIG"
check_fail "a type that cannot be a path is not shown" test -e "$A/.."/etc
check "and the log says so" grep -q "artifact type cannot be a path: not shown" "$OCIFS_LOG"
S2=$A/application/vnd.example.sbom.v1/$R_SBOM/.oci/referrers/application/vnd.example.sig/$R_SBOMSIG
check_eq "second level: the sbom's signature" "signature of the sbom" "$(cat "$S2/sbom.sig" 2>&1)"
S3=$S2/.oci/referrers/application/vnd.example.attestation/$R_ATT
check_eq "third level: the attestation of that signature" "attestation of the sbom signature" \
	"$(cat "$S3/att.json" 2>&1)"
check_eq "an annotation of the referrer's manifest is an xattr of its directory" "syft" \
	"$(getfattr --absolute-names --only-values -n user.oci.annotation.org.example.tool \
		"$A/application/vnd.example.sbom.v1/$R_SBOM" 2>&1)"
check_ls "r/app lists only its tag: sha256-<hex> tags are hidden" "$M/r/app" v1
check_eq "yet such a tag can be looked up: the index of r/app:v1's referrers" \
	"$(manifest_get r/app "sha256-${APP#sha256:}" | jq -r '.manifests[].digest' | sort)" \
	"$(jq -r '.manifests[].digest' "$M/r/app/sha256-${APP#sha256:}/.oci/manifest.json" 2>&1 | sort)"
check_err "-o ro: rm -r of a referrer fails with EROFS" "Read-only file system" \
	rm -r "$A/application/vnd.example.sbom.v1/$R_SBOM"
check_eq "and it is still attached" 200 "$(curl -s -o /dev/null -w '%{http_code}' \
	-H "Accept: $MANIFEST_ACCEPT" "http://$REG/v2/r/app/manifests/$R_SBOM")"

# a referrer attached after the listing shows once tag_ttl has passed
umount_ocifs "$M"
mount_ocifs "$REG" "$M" -o ro,tag_ttl=1 || bail "mount with tag_ttl=1"
check_ls "before: one sbom" "$A/application/vnd.example.sbom.v1" "$R_SBOM"
printf '{"sbom":2}\n' >"$W/sbom2.json"
R_SBOM2=$(push_referrer r/app "$APP" application/vnd.example.sbom.v1 "$W/sbom2.json") || bail "second sbom"
sbom_count() { [ "$(ls "$A/application/vnd.example.sbom.v1" 2>/dev/null | wc -l)" = 2 ]; }
check "after tag_ttl: both sboms" wait_until 10 sbom_count
check "the new one by its digest" test -d "$A/application/vnd.example.sbom.v1/$R_SBOM2"
umount_ocifs "$M"

# ---- attach through the mount, detach
printf 'the lib\n' >"$W/lib.txt"
LIB=$(push_artifact r/lib v1 "$W" lib.txt) || bail "seed r/lib:v1"
mount_ocifs "$REG" "$M" -o push_delay=3600 || bail "mount read-write"
L=$M/r/lib/v1/.oci/referrers
printf '{"sbom":"lib"}\n' >"$W/lib-sbom.json"
mkdir -p "$L/application/vnd.example.sbom.v1/lib-sbom" &&
	cp "$W/lib-sbom.json" "$L/application/vnd.example.sbom.v1/lib-sbom/" &&
	setfattr -n user.oci.annotation.org.example.tool -v ocifs "$L/application/vnd.example.sbom.v1/lib-sbom" &&
	sync "$L/application/vnd.example.sbom.v1/lib-sbom"
check_eq "attach: mkdir, cp, setfattr and sync succeed" 0 "$?"
IDX=$(manifest_get r/lib "sha256-${LIB#sha256:}")
check_eq "the fallback index has one entry" 1 "$(jq '.manifests | length' <<<"$IDX")"
A1=$(jq -r '.manifests[0].digest' <<<"$IDX")
check_eq "its artifactType is the path below referrers/" application/vnd.example.sbom.v1 \
	"$(jq -r '.manifests[0].artifactType' <<<"$IDX")"
check_eq "it carries the manifest's annotations" ocifs \
	"$(jq -r '.manifests[0].annotations["org.example.tool"]' <<<"$IDX")"
MF=$(manifest_get r/lib "$A1")
check_eq "the referrer's subject is r/lib:v1" "$LIB" "$(jq -r .subject.digest <<<"$MF")"
check_eq "its subject's size is the manifest's" "$(manifest_get r/lib v1 | wc -c)" "$(jq -r .subject.size <<<"$MF")"
check_eq "its artifactType" application/vnd.example.sbom.v1 "$(jq -r .artifactType <<<"$MF")"
check_eq "its one layer is the file, titled" "lib-sbom.json $(digest_of "$W/lib-sbom.json")" \
	"$(jq -r '.layers[0] | .annotations["org.opencontainers.image.title"] + " " + .digest' <<<"$MF")"
check_ls "the referrer shows under its digest, not its name" "$L/application/vnd.example.sbom.v1" "$A1"
check_eq "and reads back" '{"sbom":"lib"}' "$(cat "$L/application/vnd.example.sbom.v1/$A1/lib-sbom.json" 2>&1)"

# three deep: a signature on the sbom, an attestation on the signature
N1=$L/application/vnd.example.sbom.v1/$A1/.oci/referrers
printf 'sig\n' >"$W/s1.sig"
mkdir -p "$N1/sig/s1" && cp "$W/s1.sig" "$N1/sig/s1/" && sync "$N1/sig/s1"
check_eq "attach to the attached referrer" 0 "$?"
A2=$(ls "$N1/sig" 2>/dev/null)
check_eq "its subject is the sbom" "$A1" "$(manifest_get r/lib "$A2" | jq -r .subject.digest)"
N2=$N1/sig/$A2/.oci/referrers
printf 'att\n' >"$W/a.json"
mkdir -p "$N2/att/a1" && cp "$W/a.json" "$N2/att/a1/" && sync "$N2/att/a1"
check_eq "attach three deep" 0 "$?"
A3=$(ls "$N2/att" 2>/dev/null)
check_eq "the third level's subject is the signature" "$A2" "$(manifest_get r/lib "$A3" | jq -r .subject.digest)"
check_eq "the signature's fallback index lists it" "$A3" \
	"$(manifest_get r/lib "sha256-${A2#sha256:}" | jq -r '.manifests[0].digest')"

# two attaches at once: both survive in the index
for k in 1 2; do
	printf 'concurrent %s\n' "$k" >"$W/c$k.txt"
	mkdir -p "$L/application/vnd.example.note/c$k"
done
( cp "$W/c1.txt" "$L/application/vnd.example.note/c1/" && sync "$L/application/vnd.example.note/c1" ) &
p1=$!
( cp "$W/c2.txt" "$L/application/vnd.example.note/c2/" && sync "$L/application/vnd.example.note/c2" ) &
p2=$!
wait "$p1"
r1=$?
wait "$p2"
r2=$?
check_eq "two attaches at once both succeed" "0 0" "$r1 $r2"
check_eq "the index then has the sbom and both notes" 3 \
	"$(manifest_get r/lib "sha256-${LIB#sha256:}" | jq '.manifests | length')"
check_eq "both notes by type" 2 "$(ls "$L/application/vnd.example.note" 2>/dev/null | grep -c '^sha256:')"

# an attach pushed while another to the same subject is still being made:
# the other stays where it was made (the listing reloaded after the push
# keeps it), and its sync pushes it
printf 'pending\n' >"$W/pend.txt"
PEND=$(push_artifact r/pend v1 "$W" pend.txt) || bail "seed r/pend:v1"
PT=$M/r/pend/v1/.oci/referrers/application/vnd.example.pending
printf 'first\n' >"$W/pend1.txt"
printf 'second\n' >"$W/pend2.txt"
mkdir -p "$PT/p1" "$PT/p2" && cp "$W/pend1.txt" "$PT/p1/" && cp "$W/pend2.txt" "$PT/p2/" &&
	sync "$PT/p1"
check_eq "attach of one of two being made: mkdir, cp and sync succeed" 0 "$?"
PD1=$(manifest_get r/pend "sha256-${PEND#sha256:}" | jq -r '.manifests[0].digest')
check_ls "the type lists the pushed one and the other, still being made" "$PT" "$PD1" p2
check "sync of the other succeeds" sync "$PT/p2"
check_eq "the index then holds both" \
	"$(printf '%s\n' "$(digest_of "$W/pend1.txt")" "$(digest_of "$W/pend2.txt")" | sort |
		tr '\n' ' ' | sed 's/ $//')" \
	"$(manifest_get r/pend "sha256-${PEND#sha256:}" | jq -r '.manifests[].digest' |
		while read -r d; do manifest_get r/pend "$d" | jq -r '.layers[0].digest'; done | sort | tr '\n' ' ' | sed 's/ $//')"

# a shell inside the new directory while its first file makes it a referrer:
# the files it copies next land in that same referrer
CWD=$L/application/vnd.example.cwd
printf 'cwd one\n' >"$W/cwd1.txt"
printf 'cwd two\n' >"$W/cwd2.txt"
mkdir -p "$CWD/c1" && (cd "$CWD/c1" && cp "$W/cwd1.txt" . && cp "$W/cwd2.txt" . && sync .)
check_eq "attach from a shell inside the directory: cp, cp, sync . succeed" 0 "$?"
AC=$(ls "$CWD" 2>/dev/null)
check_eq "one referrer of that type" 1 "$(wc -w <<<"$AC")"
check_eq "it holds both files" "cwd1.txt cwd2.txt" \
	"$(manifest_get r/lib "$AC" | jq -r '[.layers[].annotations["org.opencontainers.image.title"]] | sort | join(" ")')"

# detach
rmdir "$N1/sig/$A2"
check_eq "detach: rmdir of the signature succeeds" 0 "$?"
check_eq "its manifest is gone" 404 "$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $MANIFEST_ACCEPT" \
	"http://$REG/v2/r/lib/manifests/$A2")"
check_eq "and its entry from the sbom's fallback index" 0 \
	"$(manifest_get r/lib "sha256-${A1#sha256:}" | jq '.manifests | length')"
check_ls "the sbom has no signature left" "$N1"
check_eq "the other entries of r/lib:v1's index are kept" 4 \
	"$(manifest_get r/lib "sha256-${LIB#sha256:}" | jq '.manifests | length')"

# rm -r of a referrer detaches it, as rmdir does (its files can be removed as
# a tag's can); removing some of its files pushes it anew without them
RMT=$L/application/vnd.example.rm
printf 'rm one\n' >"$W/rm1.txt"
printf 'rm two\n' >"$W/rm2.txt"
mkdir -p "$RMT/r1/sub" && cp "$W/rm1.txt" "$RMT/r1/" && cp "$W/rm2.txt" "$RMT/r1/sub/" && sync "$RMT/r1"
check_eq "attach a referrer with a file and a subdirectory" 0 "$?"
R1=$(ls "$RMT" 2>/dev/null)
mkdir -p "$RMT/r2" && cp "$W/rm1.txt" "$W/rm2.txt" "$RMT/r2/" && sync "$RMT/r2"
check_eq "and one with two files" 0 "$?"
R2=$(ls "$RMT" 2>/dev/null | grep -vxF "$R1")
lib_index() { manifest_get r/lib "sha256-${LIB#sha256:}" | jq -r '[.manifests[].digest] | sort | join(" ")'; }
before=$(lib_index)
check "rm -r of the first (files, a subdirectory, then the directory) exits 0" rm -r "$RMT/$R1"
check_eq "its manifest is gone" 404 "$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $MANIFEST_ACCEPT" \
	"http://$REG/v2/r/lib/manifests/$R1")"
check_eq "r/lib:v1's fallback index lost that entry and kept the others" \
	"$(tr ' ' '\n' <<<"$before" | grep -vxF "$R1" | sort | tr '\n' ' ' | sed 's/ $//')" "$(lib_index)"
check_ls "the type lists only the other referrer" "$RMT" "$R2"
check "rm of one file of the second exits 0" rm "$RMT/$R2/rm2.txt"
check_ls "the referrer lists the file left" "$RMT/$R2" rm1.txt
check "sync of it exits 0" sync "$RMT/$R2"
R3=$(ls "$RMT" 2>/dev/null)
check "it is pushed anew, under a new digest" test -n "$R3" -a "$R3" != "$R2"
MF=$(manifest_get r/lib "$R3")
check_eq "the new one: same subject and type, the file left" \
	"$LIB application/vnd.example.rm rm1.txt" \
	"$(jq -r '[.subject.digest, .artifactType, (.layers[] | .annotations["org.opencontainers.image.title"])] | join(" ")' <<<"$MF")"
check_eq "the old one is detached: its manifest is gone" 404 \
	"$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $MANIFEST_ACCEPT" "http://$REG/v2/r/lib/manifests/$R2")"
check_eq "the index holds the new one in the old one's place" \
	"$(tr ' ' '\n' <<<"$before" | grep -vxF -e "$R1" -e "$R2" | { cat; echo "$R3"; } | sort | tr '\n' ' ' | sed 's/ $//')" \
	"$(lib_index)"
check_eq "and it reads back" "rm one" "$(cat "$RMT/$R3/rm1.txt" 2>&1)"
check "rmdir of a referrer that still has files detaches it" rmdir "$RMT/$R3"
check_eq "its manifest is gone" 404 \
	"$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $MANIFEST_ACCEPT" "http://$REG/v2/r/lib/manifests/$R3")"
check_eq "the index is what it was before these attaches" \
	"$(tr ' ' '\n' <<<"$before" | grep -vxF -e "$R1" -e "$R2" | sort | tr '\n' ' ' | sed 's/ $//')" "$(lib_index)"
check_err "a referrer's .oci/ stays read-only" "Read-only file system" \
	rm -f "$L/application/vnd.example.sbom.v1/$A1/.oci/manifest.json"
mkdir "$L/notype" 2>/dev/null
check_err "a file right under referrers/<name> (no type) is refused" "Invalid argument" \
	cp "$W/c1.txt" "$L/notype/"
umount_ocifs "$M"
check "the attaches were logged" grep -q "pushed sha256:" "$OCIFS_LOG"

mount_ocifs "$REG" "$M" -o ro,show_referrer_tags || bail "mount with show_referrer_tags"
check_ls "-o show_referrer_tags lists them" "$M/r/app" v1 \
	"sha256-${APP#sha256:}" "sha256-${R_SBOM#sha256:}" "sha256-${R_SBOMSIG#sha256:}"
if [ "$HAVE_FIX" = 1 ]; then
	check_ls "-o show_referrer_tags lists them (what oras pushed)" "$M/command/artifacts" foobar \
		"sha256-${FOOBAR#sha256:}" "sha256-${SBOM#sha256:}"
else
	skip_part "-o show_referrer_tags on what oras pushed" "oras fixtures not found in $FIX"
fi
umount_ocifs "$M"
finish

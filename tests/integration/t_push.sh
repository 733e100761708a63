#!/bin/bash
# Writing (push) against a real registry: mkdir makes tags and repositories,
# files written into a tag directory are staged and uploaded on close, the
# manifest (what `oras push` makes) goes up on sync DIR, after push_delay or
# at unmount; changes to existing tags reuse unchanged layers; rmdir deletes
# a tag; refusals (read-only, digest directories, .oci, non-regular files);
# a registry down at close; a crash before the push; concurrent writers; a
# copied tag uploads nothing; a big file goes up in chunks; exclusive creates
# of one name racing; an open for writing that fails on a full staging disk
# (a small tmpfs, in a private mount namespace when run as root).
T_TIMEOUT=${T_TIMEOUT:-300}
if [ -z "${OCIFS_IN_NS:-}" ] && [ "$(id -u)" = 0 ]; then
	OCIFS_IN_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi
REG_ACCESSLOG=1
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env skopeo setfattr getfattr cmp

MiB=$((1024 * 1024))
ARTIFACT_UNKNOWN=application/vnd.unknown.artifact.v1
TITLE=org.opencontainers.image.title
CREATED_KEY=org.opencontainers.image.created
EMPTY_CONFIG='{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="}'

# ---------------------------------------------------------------- helpers

# has_tag REPO TAG: the registry's tags/list of REPO names TAG.
has_tag() {
	reg_curl "$1/tags/list" | jq -e --arg t "$2" '(.tags // []) | index($t) != null' >/dev/null
}

# tags_of REPO: its tags, sorted, one a line ("" when the list fails).
tags_of() { reg_curl "$1/tags/list" 2>/dev/null | jq -r '(.tags // [])[]' | sort; }

# manifest_code REPO REF: HTTP status of a HEAD of the manifest.
manifest_code() {
	curl -sS -o /dev/null -I -w '%{http_code}' -H "Accept: $MANIFEST_ACCEPT" \
		"http://$REG/v2/$1/manifests/$2" 2>/dev/null
}

# blob_code REPO DIGEST: HTTP status of a HEAD of the blob.
blob_code() {
	curl -sS -o /dev/null -I -w '%{http_code}' "http://$REG/v2/$1/blobs/$2" 2>/dev/null
}

# tag_link REPO TAG: the manifest digest the registry's storage links TAG to
# (readable with the registry stopped).
tag_link() {
	cat "$REG_ROOT/docker/registry/v2/repositories/$1/_manifests/tags/$2/current/link" 2>/dev/null
}

# layers_of REPO REF: the manifest's layers as [{t: title, d: digest, s: size, m: mediaType}],
# sorted by title.
layers_of() {
	manifest_get "$1" "$2" 2>/dev/null |
		jq -cS --arg k "$TITLE" '[.layers[] | {t: .annotations[$k], d: .digest, s: .size, m: .mediaType}] | sort_by(.t)'
}

# want_layers DIR TITLE...: the same, made from the local files DIR/TITLE.
want_layers() {
	local dir=$1 t out='[]'
	shift
	for t in "$@"; do
		out=$(jq -c --arg t "$t" --arg d "$(digest_of "$dir/$t")" --argjson s "$(stat -c %s "$dir/$t")" \
			--arg m "$MT_LAYER_TAR" '. + [{t: $t, d: $d, s: $s, m: $m}]' <<<"$out")
	done
	jq -cS 'sort_by(.t)' <<<"$out"
}

# layer_digest REPO REF TITLE: the digest of the layer titled TITLE.
layer_digest() {
	manifest_get "$1" "$2" 2>/dev/null |
		jq -r --arg k "$TITLE" --arg t "$3" '[.layers[] | select(.annotations[$k] == $t) | .digest][0] // "none"'
}

# check_json DESC WANT GOT: equal JSON (keys sorted); a diff when not.
check_json() {
	local w g
	w=$(jq -S . <<<"$2" 2>&1)
	g=$(jq -S . <<<"$3" 2>&1)
	if [ -n "$2" ] && [ "$w" = "$g" ]; then
		ok "$1"
		return 0
	fi
	not_ok "$1" "JSON differs (< want, > got):"
	diff <(echo "$w") <(echo "$g") | head -n 40 | sed 's/^/#   /'
	return 1
}

# reqs_since MARK: access log request lines after MARK ("METHOD PATH STATUS").
reqs_since() {
	tail -c +"$((${1:-0} + 1))" -- "$REG_ROOT/registry.log" 2>/dev/null |
		sed -nE 's/.*"(GET|HEAD|PUT|POST|PATCH|DELETE) (\/v2\/[^ ]*) HTTP\/[0-9.]+" ([0-9]{3}) .*/\1 \2 \3/p'
}

# check_bytes DESC WANT PATH: one read of PATH (cat) gives WANT's bytes; on
# failure, cat's error, where they differ and the daemon log's tail.
check_bytes() {
	local desc=$1 want=$2 path=$3 got=$TESTDIR/.bytes rc
	cat -- "$path" >"$got" 2>"$TESTDIR/.bytes.err"
	rc=$?
	if [ "$rc" = 0 ] && cmp -s -- "$want" "$got"; then
		ok "$desc"
		return 0
	fi
	not_ok "$desc" "cat $(_lbl "$path") exited $rc: $(head -c 300 "$TESTDIR/.bytes.err")"
	diag "$(cmp -- "$want" "$got" 2>&1 | head -n 2); want $(stat -c %s "$want") bytes, got $(stat -c %s "$got")"
	log_tail
	return 1
}

# log_tail: the last lines of the current daemon log, for diagnostics.
log_tail() { tail -n 8 "$OCIFS_LOG" 2>/dev/null | sed 's/^/#   log: /'; }

# created_ok VALUE: RFC 3339 UTC seconds ("2026-11-22T12:46:29Z") within 10 min of now.
created_ok() {
	local v=$1 t
	[[ $v =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$ ]] || return 1
	t=$(date -u -d "$v" +%s) || return 1
	[ $((t - $(date +%s))) -le 600 ] && [ $(($(date +%s) - t)) -le 600 ]
}

# ---------------------------------------------------------------- seed

registry_start push
W=$TESTDIR/w
mkdir -p "$W"

# app/files:v1, a plain artifact; new tags go next to it
printf 'alpha\n' >"$W/a.txt"
printf 'bravo\n' >"$W/b.txt"
push_artifact app/files v1 "$W" a.txt b.txt >/dev/null || bail "seed app/files:v1"
D_FILES_V1=$(manifest_digest app/files v1)

# app/held:v1, a file rewritten while a reader holds it open
printf 'held old\n' >"$W/held.txt"
push_artifact app/held v1 "$W" held.txt >/dev/null || bail "seed app/held:v1"

# app/mod:v1, to change file by file
MOD=$W/mod
mkdir -p "$MOD/sub"
for f in a b c e f; do printf '%s-original-content\n' "$f" >"$MOD/$f.txt"; done
printf 'delta in a subdirectory\n' >"$MOD/sub/d.txt"
make_random_file "$MOD/keep.bin" $((300 * 1024)) keep
push_artifact app/mod v1 "$MOD" a.txt b.txt c.txt e.txt f.txt keep.bin sub/d.txt >/dev/null ||
	bail "seed app/mod:v1"
D_MOD_V1=$(manifest_digest app/mod v1)

# app/shared:v1 and :v2 name the same manifest; app/del has v0, v1, v2 apart
printf 'shared\n' >"$W/shared.txt"
MANIFEST_OUT=$W/shared.json push_artifact app/shared v1 "$W" shared.txt >/dev/null || bail "seed app/shared:v1"
push_manifest app/shared v2 "$W/shared.json" >/dev/null || bail "seed app/shared:v2"
D_SHARED=$(manifest_digest app/shared v1)
for v in v0 v1 v2; do
	printf 'del %s\n' "$v" >"$W/del-$v.txt"
	push_artifact app/del "$v" "$W" "del-$v.txt" >/dev/null || bail "seed app/del:$v"
done
D_DEL_V1=$(manifest_digest app/del v1)
D_DEL_V2=$(manifest_digest app/del v2)

# app/copy:v1, copied whole into a new tag
CP=$W/copy
mkdir -p "$CP/sub"
printf 'one\n' >"$CP/one.txt"
make_random_file "$CP/two.bin" $((2 * MiB + 17)) copy-two
printf 'nested\n' >"$CP/sub/x.txt"
push_artifact app/copy v1 "$CP" one.txt two.bin sub/x.txt >/dev/null || bail "seed app/copy:v1"

# app/fail:v1 and app/crashmod:v1
printf 'fail original\n' >"$W/fail-a.txt"
push_artifact_titled app/fail v1 a.txt "$W/fail-a.txt" >/dev/null || bail "seed app/fail:v1"
printf 'crashmod original\n' >"$W/crashmod-a.txt"
printf 'crashmod untouched\n' >"$W/crashmod-b.txt"
push_artifact_titled app/crashmod v1 a.txt "$W/crashmod-a.txt" b.txt "$W/crashmod-b.txt" >/dev/null ||
	bail "seed app/crashmod:v1"
D_CRASHMOD_V1=$(manifest_digest app/crashmod v1)

# ================================================================ mount A: rw, default push_delay
M=$TESTDIR/m
mount_ocifs "$REG" "$M" || bail "mount read-write"

# ---------------------------------------------------------------- 1. mkdir
check "mkdir of a new tag in an existing repository" mkdir "$M/app/files/v2"
check "the new tag directory is there" test -d "$M/app/files/v2"
check_ls "the new tag directory is empty" "$M/app/files/v2"
check_err "mkdir of an existing tag (v1) fails with EEXIST" "File exists" mkdir "$M/app/files/v1"
check_err "mkdir of the just-made tag (v2) fails with EEXIST" "File exists" mkdir "$M/app/files/v2"

check "mkdir -p REG/newrepo/v1 (new repository, new tag)" mkdir -p "$M/newrepo/v1"
printf 'new repository\n' >"$W/newrepo.txt"
check "cp a file into newrepo/v1" cp "$W/newrepo.txt" "$M/newrepo/v1/file.txt"
check "sync newrepo/v1 exits 0" sync "$M/newrepo/v1"
check_eq "registry: newrepo has tag v1" "v1" "$(tags_of newrepo)"
check_eq "registry: newrepo:v1 has file.txt" "$(want_layers "$W" newrepo.txt | sed 's/newrepo.txt/file.txt/')" \
	"$(layers_of newrepo v1)"

check "mkdir app/newsub in a namespace that is not a repository" mkdir "$M/app/newsub"
check "mkdir app/newsub/t1 (a tag in the repository made by mkdir)" mkdir "$M/app/newsub/t1"
printf 'namespaced new repository\n' >"$W/newsub.txt"
check "cp a file into app/newsub/t1" cp "$W/newsub.txt" "$M/app/newsub/t1/newsub.txt"
check "sync app/newsub/t1 exits 0" sync "$M/app/newsub/t1"
check_eq "registry: app/newsub has tag t1" "t1" "$(tags_of app/newsub)"
check_eq "registry: app/newsub:t1 has newsub.txt" "$(want_layers "$W" newsub.txt)" "$(layers_of app/newsub t1)"

# a new namespace, then repository and tag in one step inside it
printf 'team app\n' >"$W/team.txt"
check_err "mkdir team/app:v1 with no team yet: the parent must exist first" \
	"No such file or directory" mkdir "$M/team/app:v1"
if check "mkdir team, then team/app:v1 (repository team/app and tag in one step)" \
	bash -c "mkdir '$M/team' && mkdir '$M/team/app:v1'"; then
	check "team/app/v1 is a directory" test -d "$M/team/app/v1"
	check "cp a file into team/app/v1" cp "$W/team.txt" "$M/team/app/v1/team.txt"
	check "sync team/app/v1 exits 0" sync "$M/team/app/v1"
	check_eq "registry: team/app has tag v1" "v1" "$(tags_of team/app)"
	check_eq "registry: team/app:v1 has team.txt" "$(want_layers "$W" team.txt)" "$(layers_of team/app v1)"
fi
# in an existing namespace (app), and in one made by mkdir (crew)
for parent in app crew; do
	[ "$parent" = crew ] && check "mkdir crew (a new top-level name)" mkdir "$M/crew"
	check "mkdir $parent/colon:v1 (repository $parent/colon and tag v1 in one step)" mkdir "$M/$parent/colon:v1"
	check "$parent/colon/v1 is a directory" test -d "$M/$parent/colon/v1"
	check_fail "$parent does not list a directory named 'colon:v1'" grep -qxF colon:v1 <(ls -A "$M/$parent")
	check_ls "$parent/colon lists v1" "$M/$parent/colon" v1
	printf 'colon in %s\n' "$parent" >"$W/colon-$parent.txt"
	check "cp a file into $parent/colon/v1" cp "$W/colon-$parent.txt" "$M/$parent/colon/v1/c.txt"
	check "sync $parent/colon/v1 exits 0" sync "$M/$parent/colon/v1"
	check_eq "registry: $parent/colon has tag v1" "v1" "$(tags_of "$parent/colon")"
	check_eq "registry: $parent/colon:v1 has c.txt" "$(want_layers "$W" "colon-$parent.txt" | sed "s/colon-$parent.txt/c.txt/")" \
		"$(layers_of "$parent/colon" v1)"
done

# ---------------------------------------------------------------- 2, 3. a new tag, its manifest
N=$W/new
mkdir -p "$N/css"
printf 'hello world\n' >"$N/hello.txt"
printf 'body { color: red; }\n' >"$N/css/a.css"
make_random_file "$N/data.bin" $((1 * MiB + 333)) new-data
T2=$M/app/files/v2
check "cp hello.txt into the new tag v2" cp "$N/hello.txt" "$T2/hello.txt"
check_eq "blob of hello.txt is in the registry once cp (close) returned" 200 \
	"$(blob_code app/files "$(digest_of "$N/hello.txt")")"
check "mkdir css inside the new tag" mkdir "$T2/css"
check "cp css/a.css" cp "$N/css/a.css" "$T2/css/a.css"
check "cp data.bin" cp "$N/data.bin" "$T2/data.bin"
check "setfattr user.oci.annotation.com.example.dir on the tag directory" \
	setfattr -n user.oci.annotation.com.example.dir -v "dir value" "$T2"
check "setfattr user.oci.annotation.com.example.note on hello.txt" \
	setfattr -n user.oci.annotation.com.example.note -v "note value" "$T2/hello.txt"
check_bytes "staged hello.txt reads back through the mount" "$N/hello.txt" "$T2/hello.txt"
check "sync app/files/v2 exits 0" sync "$T2"
check "registry: app/files has tag v2" has_tag app/files v2
manifest_get app/files v2 >"$W/v2.json" 2>"$W/v2.err"
check_eq "registry: app/files:v2 served as an OCI image manifest" "$MT_OCI_MANIFEST" \
	"$(manifest_mediatype app/files v2)"
created=$(jq -r --arg k "$CREATED_KEY" '.annotations[$k] // "missing"' "$W/v2.json" 2>&1)
check "annotation $CREATED_KEY is RFC 3339 UTC and recent (got '$created')" created_ok "$created"
want=$(jq -n --arg mt "$MT_OCI_MANIFEST" --arg at "$ARTIFACT_UNKNOWN" --argjson cfg "$EMPTY_CONFIG" \
	--arg created "$created" --arg lmt "$MT_LAYER_TAR" \
	--arg dh "$(digest_of "$N/hello.txt")" --argjson sh "$(stat -c %s "$N/hello.txt")" \
	--arg dc "$(digest_of "$N/css/a.css")" --argjson sc "$(stat -c %s "$N/css/a.css")" \
	--arg dd "$(digest_of "$N/data.bin")" --argjson sd "$(stat -c %s "$N/data.bin")" '
	{schemaVersion: 2, mediaType: $mt, artifactType: $at, config: $cfg,
	 layers: [
	  {mediaType: $lmt, digest: $dc, size: $sc, annotations: {"org.opencontainers.image.title": "css/a.css"}},
	  {mediaType: $lmt, digest: $dd, size: $sd, annotations: {"org.opencontainers.image.title": "data.bin"}},
	  {mediaType: $lmt, digest: $dh, size: $sh, annotations: {"org.opencontainers.image.title": "hello.txt",
	                                                          "com.example.note": "note value"}}],
	 annotations: {"org.opencontainers.image.created": $created, "com.example.dir": "dir value"}}')
check_json "app/files:v2 is the oras-style manifest (layers sorted by title for the comparison)" "$want" \
	"$(jq --arg k "$TITLE" '.layers |= sort_by(.annotations[$k])' "$W/v2.json" 2>&1)"
check_eq "registry: the empty config blob exists and is {}" "{}" "$(blob_get app/files "$EMPTY_DIGEST" 2>&1)"
for f in hello.txt css/a.css data.bin; do
	check_same "registry: the blob of $f has its bytes" "$N/$f" \
		<(blob_get app/files "$(digest_of "$N/$f")" 2>&1)
done
skopeo inspect --raw --tls-verify=false "docker://$REG/app/files:v2" >"$W/v2.skopeo" 2>&1
check_same "skopeo inspect --raw shows the pushed manifest" "$W/v2.json" "$W/v2.skopeo"

# artifactType from user.oci.artifactType on a new tag directory
T3=$M/app/files/v3
check "mkdir app/files/v3" mkdir "$T3"
check "setfattr user.oci.artifactType on the new tag directory" \
	setfattr -n user.oci.artifactType -v application/vnd.example.thing.v1 "$T3"
check "cp a file into v3" cp "$N/hello.txt" "$T3/hello.txt"
check "sync app/files/v3 exits 0" sync "$T3"
check_eq "registry: app/files:v3 artifactType is the xattr's" application/vnd.example.thing.v1 \
	"$(manifest_get app/files v3 2>&1 | jq -r .artifactType 2>&1)"

# push_delay (1 s): no push while a file is open, one after the last close
TA=$M/app/files/auto
check "mkdir app/files/auto" mkdir "$TA"
printf 'auto part 1\n' >"$W/auto.1"
printf 'auto part 2\n' >"$W/auto.2"
cat "$W/auto.1" "$W/auto.2" >"$W/auto.txt"
if exec 7>"$TA/auto.txt"; then
	cat "$W/auto.1" >&7
	check_fail "no push of app/files:auto within 3 s while auto.txt is held open" \
		wait_until 3 has_tag app/files auto
	cat "$W/auto.2" >&7
	exec 7>&-
	check "app/files:auto pushed by itself after the close (push_delay=1, no sync)" \
		wait_until 15 has_tag app/files auto
	check_eq "registry: app/files:auto has the whole auto.txt" "$(want_layers "$W" auto.txt)" \
		"$(layers_of app/files auto)"
else
	not_ok "open app/files/auto/auto.txt for writing"
fi

# ---------------------------------------------------------------- 4. an existing tag changed
TM=$M/app/mod/v1
mark=$(reg_log_mark)
old_keep=$(manifest_get app/mod v1 | jq -c --arg k "$TITLE" '.layers[] | select(.annotations[$k] == "keep.bin")')
old_config=$(manifest_get app/mod v1 | jq -c .config)
old_sub=$(manifest_get app/mod v1 | jq -c --arg k "$TITLE" '.layers[] | select(.annotations[$k] == "sub/d.txt")')
E=$W/mod-expected
mkdir -p "$E/sub"
cp "$MOD/keep.bin" "$E/keep.bin"
cp "$MOD/sub/d.txt" "$E/sub/d.txt"
printf 'new\n' >"$E/a.txt"
{ cat "$MOD/b.txt"; printf 'more\n'; } >"$E/b.txt"
head -c 3 "$MOD/c.txt" >"$E/c.txt"
cp "$MOD/f.txt" "$E/g.txt"
check "overwrite: echo new > a.txt" bash -c "echo new >'$TM/a.txt'"
check "append: echo more >> b.txt" bash -c "echo more >>'$TM/b.txt'"
check "truncate -s 3 c.txt" truncate -s 3 "$TM/c.txt"
check "rm e.txt" rm "$TM/e.txt"
check "mv f.txt g.txt" mv "$TM/f.txt" "$TM/g.txt"
check_ls "the tag directory lists the changes" "$TM" a.txt b.txt c.txt g.txt keep.bin sub
for f in a.txt b.txt c.txt g.txt; do
	check_bytes "before the push, $f reads the new bytes through the mount" "$E/$f" "$TM/$f"
done
check "sync app/mod/v1 exits 0" sync "$TM"
D_MOD_NEW=$(manifest_digest app/mod v1)
check "registry: app/mod:v1 points to a new manifest ($D_MOD_NEW)" \
	test -n "$D_MOD_NEW" -a "$D_MOD_NEW" != "$D_MOD_V1"
check_eq "registry: app/mod:v1 layers are the changed files (a, b, c, g, keep.bin, sub/d.txt)" \
	"$(want_layers "$E" a.txt b.txt c.txt g.txt keep.bin sub/d.txt)" "$(layers_of app/mod v1)"
check_json "keep.bin's layer is the old one, unchanged" "$old_keep" \
	"$(manifest_get app/mod v1 | jq -c --arg k "$TITLE" '.layers[] | select(.annotations[$k] == "keep.bin")')"
check_json "sub/d.txt's layer is the old one, unchanged" "$old_sub" \
	"$(manifest_get app/mod v1 | jq -c --arg k "$TITLE" '.layers[] | select(.annotations[$k] == "sub/d.txt")')"
check_json "the changed manifest keeps the config of the old one" "$old_config" \
	"$(manifest_get app/mod v1 | jq -c .config)"
check_eq "the changed manifest keeps artifactType" application/vnd.ocifs.test.v1 \
	"$(manifest_get app/mod v1 | jq -r .artifactType)"
keephex=$(sha256_hex "$MOD/keep.bin")
reg_log_quiet 5
up=$(reqs_since "$mark" | grep -E "^(POST|PATCH|PUT) /v2/app/mod/blobs/uploads/.*$keephex" || true)
check_eq "keep.bin was not uploaded again" "" "$up"
for f in a.txt b.txt c.txt g.txt; do
	check_same "registry: the blob of the new $f has its bytes" "$E/$f" \
		<(blob_get app/mod "$(digest_of "$E/$f")" 2>&1)
done
check_eq "the old manifest still exists by digest" 200 "$(manifest_code app/mod "$D_MOD_V1")"

# ---------------------------------------------------------------- 4b. a file rewritten while held open
# The file written takes the registry file's place; whatever still has the
# old one (a reader's descriptor, the kernel's cached entry) is not stranded.
TH=$M/app/held/v1
check_eq "held.txt reads the registry's bytes" "held old" "$(cat "$TH/held.txt" 2>&1)"
exec 3<"$TH/held.txt"
check "overwrite held.txt while a reader holds it open" bash -c "printf 'new\n' >'$TH/held.txt'"
check "append to it through the same name" bash -c "printf 'more\n' >>'$TH/held.txt'"
check_eq "the name reads both writes" "$(printf 'new\nmore')" "$(cat "$TH/held.txt" 2>&1)"
check_eq "stat gives the new size" 9 "$(stat -c %s "$TH/held.txt" 2>&1)"
# one file, truncated and rewritten in place, as on a local disk
check_eq "the reader that had it open reads what is there now" "$(printf 'new\nmore')" \
	"$(cat <&3 2>&1)"
exec 3<&-
check "sync app/held/v1 exits 0" sync "$TH"
printf 'new\nmore\n' >"$W/held-new.txt"
check_eq "registry: held.txt's layer is the new bytes" "$(digest_of "$W/held-new.txt")" \
	"$(manifest_get app/held v1 | jq -r '.layers[0].digest')"

# ---------------------------------------------------------------- 6. rmdir deletes a tag
check "rmdir app/del/v1 (a tag no other tag shares)" rmdir "$M/app/del/v1"
check_eq "registry: app/del tags are v0 v2 after rmdir v1" "v0
v2" "$(tags_of app/del)"
check_eq "registry: the manifest of app/del:v1 by digest is 404" 404 "$(manifest_code app/del "$D_DEL_V1")"
check_fail "app/del/v1 is gone from the mount" test -e "$M/app/del/v1"
check "rm -r app/del/v2" rm -r "$M/app/del/v2"
check_eq "registry: app/del tags are v0 after rm -r v2" "v0" "$(tags_of app/del)"
check_eq "registry: the manifest of app/del:v2 by digest is 404" 404 "$(manifest_code app/del "$D_DEL_V2")"
check_ls "app/del lists only v0" "$M/app/del" v0
check_err "rmdir of a tag sharing its manifest with another fails with EBUSY" \
	"Device or resource busy" rmdir "$M/app/shared/v1"
check_eq "registry: app/shared still has v1 and v2" "v1
v2" "$(tags_of app/shared)"
check_eq "registry: app/shared:v1 still names the shared manifest" "$D_SHARED" "$(manifest_digest app/shared v1)"
check_eq "registry: app/shared:v2 still names the shared manifest" "$D_SHARED" "$(manifest_digest app/shared v2)"
check_bytes "app/shared/v1/shared.txt still reads" "$W/shared.txt" "$M/app/shared/v1/shared.txt"

# ---------------------------------------------------------------- 7. refusals on a rw mount
D=$(manifest_digest app/files v1)
check_err "creating a file in a digest directory fails with EROFS" "Read-only file system" \
	touch "$M/app/files/$D/x"
check_err "cp into a digest directory fails with EROFS" "Read-only file system" \
	cp "$W/a.txt" "$M/app/files/$D/a2.txt"
check_err "overwriting a file in a digest directory fails with EROFS" "Read-only file system" \
	bash -c "echo x >'$M/app/files/$D/a.txt'"
T5=$M/app/files/v5
check "mkdir app/files/v5" mkdir "$T5"
check_err "creating .oci in a tag directory fails with EINVAL" "Invalid argument" touch "$T5/.oci"
check_err "mkdir .oci in a tag directory fails with EINVAL" "Invalid argument" mkdir "$T5/.oci"
check_fail "ln -s in a tag directory fails" ln -s hello.txt "$T5/link"
diag "ln -s said: $(head -c 200 "$TESTDIR/.out")"
check_fail "mknod (a fifo) in a tag directory fails" mknod "$T5/fifo" p
diag "mknod said: $(head -c 200 "$TESTDIR/.out")"
check_ls "nothing was staged in v5" "$T5"
check "rmdir of the empty new tag v5" rmdir "$T5"
check_fail "v5 is gone" test -e "$T5"

# ---------------------------------------------------------------- 10. two writers at once
make_random_file "$W/par1.bin" $((8 * MiB)) par-1
make_random_file "$W/par2.bin" $((8 * MiB + 5)) par-2
check "mkdir -p par/t1 par/t2" mkdir -p "$M/par/t1" "$M/par/t2"
cp "$W/par1.bin" "$M/par/t1/p.bin" 2>"$W/par1.err" &
p1=$!
cp "$W/par2.bin" "$M/par/t2/p.bin" 2>"$W/par2.err" &
p2=$!
wait "$p1"
rc1=$?
wait "$p2"
rc2=$?
check_eq "cp into par/t1 (concurrent) exits 0 $(head -c 200 "$W/par1.err")" 0 "$rc1"
check_eq "cp into par/t2 (concurrent) exits 0 $(head -c 200 "$W/par2.err")" 0 "$rc2"
check "sync par/t1 exits 0" sync "$M/par/t1"
check "sync par/t2 exits 0" sync "$M/par/t2"
check_eq "registry: par:t1 has par1.bin as p.bin" "$(want_layers "$W" par1.bin | sed 's/par1.bin/p.bin/')" \
	"$(layers_of par t1)"
check_eq "registry: par:t2 has par2.bin as p.bin" "$(want_layers "$W" par2.bin | sed 's/par2.bin/p.bin/')" \
	"$(layers_of par t2)"

# ---------------------------------------------------------------- 10b. sync while a file is written
# A tag names each file as it was last closed: a sync of the directory while
# a file in it is half written (held open by its one writer) pushes the
# other files without it; once it is closed, the next sync pushes it whole.
make_random_file "$W/slow.bin" $((3 * MiB)) push-slow
TS=$M/par/t3
check "mkdir par/t3" mkdir "$TS"
mkfifo "$W/slow.go"
half_write "$W/slow.bin" "$TS/slow.bin" "$W/slow.ready" "$W/slow.go" 2>"$W/slow.err" &
slow=$!
wait_until 30 test -e "$W/slow.ready"
check "cp a.txt into par/t3 while slow.bin is half written" cp "$W/a.txt" "$TS/a.txt"
check "sync par/t3 meanwhile exits 0" sync "$TS"
check_eq "registry: par:t3 has a.txt and nothing of slow.bin" "$(want_layers "$W" a.txt)" \
	"$(layers_of par t3)"
echo go >"$W/slow.go"
wait "$slow"
rc=$?
check_eq "the writer of slow.bin writes the rest and closes it $(head -c 200 "$W/slow.err")" 0 "$rc"
check "sync par/t3 once slow.bin is closed exits 0" sync "$TS"
check_eq "registry: par:t3 has a.txt and all of slow.bin" "$(want_layers "$W" a.txt slow.bin)" \
	"$(layers_of par t3)"
check_bytes "slow.bin reads back whole" "$W/slow.bin" "$TS/slow.bin"

# ---------------------------------------------------------------- 11. cp -r of a tag uploads nothing
mark=$(reg_log_mark)
check "cp -r app/copy/v1 app/copy/v9" cp -r "$M/app/copy/v1" "$M/app/copy/v9"
check "sync app/copy/v9 exits 0" sync "$M/app/copy/v9"
reg_log_quiet 5
uploads=$(reqs_since "$mark" | grep -E '^(POST|PATCH|PUT) /v2/[^ ]*/blobs/uploads' || true)
check_eq "cp -r: no blob upload (POST/PATCH/PUT .../blobs/uploads) after the copy started" "" "$uploads"
check_eq "cp -r: the only request other than GET/HEAD is the manifest PUT of app/copy:v9" \
	"PUT /v2/app/copy/manifests/v9 201" "$(reqs_since "$mark" | grep -vE '^(GET|HEAD) ')"
check_eq "cp -r: app/copy:v9 has the layers of v1" "$(want_layers "$CP" one.txt two.bin sub/x.txt)" \
	"$(layers_of app/copy v9)"

# ---------------------------------------------------------------- 12. a big file in chunks
make_random_file "$W/big.bin" $((70 * MiB)) push-big
check "mkdir -p app/big/v1" mkdir -p "$M/app/big/v1"
mark=$(reg_log_mark)
check "cp a 70 MiB file into app/big/v1" cp "$W/big.bin" "$M/app/big/v1/big.bin"
check "sync app/big/v1 exits 0" sync "$M/app/big/v1"
reg_log_quiet 5
npatch=$(reqs_since "$mark" | grep -cE '^PATCH /v2/app/big/blobs/uploads/' || true)
check "the 70 MiB blob went up in PATCH chunks ($npatch PATCH requests)" test "$npatch" -ge 2
check_eq "registry: app/big:v1 has big.bin" "$(want_layers "$W" big.bin)" "$(layers_of app/big v1)"

# ---------------------------------------------------------------- 13. exclusive creates racing
# Rounds of parallel processes open(O_CREAT|O_EXCL) the same names at once:
# one per name wins and writes, every other gets EEXIST. A loser's staged
# descriptor is closed once (closed twice, it could close a winner's).
cat >"$W/excl.py" <<'PY'
import errno, multiprocessing as mp, os, sys

def creator(barrier, path, ident, q):
    barrier.wait()
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except OSError as e:
        q.put("%s %d %s" % (path, ident, errno.errorcode.get(e.errno, e.errno)))
        return
    data = ("%s by creator %d\n" % (os.path.basename(path), ident)).encode() * 200
    try:
        while data:
            data = data[os.write(fd, data):]
        os.close(fd)
        q.put("%s %d OK" % (path, ident))
    except OSError as e:
        q.put("%s %d write:%s" % (path, ident, errno.errorcode.get(e.errno, e.errno)))

dirpath, rnd, names, per = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
q = mp.Queue()
barrier = mp.Barrier(names * per)
ps = [mp.Process(target=creator, args=(barrier, "%s/r%s-%d" % (dirpath, rnd, k), i, q))
      for k in range(names) for i in range(per)]
for p in ps:
    p.start()
for _ in ps:
    print(q.get(timeout=60))
for p in ps:
    p.join()
PY
XR=$M/app/race/v1
check "mkdir -p app/race/v1" mkdir -p "$XR"
XE=$W/race
mkdir -p "$XE"
: >"$W/race.out"
for round in 1 2 3 4 5 6 7 8; do
	timeout 120 python3 "$W/excl.py" "$XR" "$round" 6 8 >>"$W/race.out" 2>&1 || echo "round $round failed" >>"$W/race.out"
done
check_eq "8 rounds of 6 names x 8 creators: 48 won, 336 EEXIST, nothing else" "48 336 0" \
	"$(grep -c ' OK$' "$W/race.out") $(grep -c ' EEXIST$' "$W/race.out") $(grep -vcE ' (OK|EEXIST)$' "$W/race.out")"
grep -vE ' (OK|EEXIST)$' "$W/race.out" | head -n 5 | sed 's/^/#   /'
check_eq "each of the 48 names has exactly one winner" 48 \
	"$(awk '$3 == "OK" {print $1}' "$W/race.out" | sort -u | wc -l)"
awk '$3 == "OK" {print $1, $2}' "$W/race.out" | while read -r path ident; do
	name=${path##*/}
	for ((i = 0; i < 200; i++)); do printf '%s by creator %s\n' "$name" "$ident"; done >"$XE/$name"
done
check "the daemon is alive after the races" daemon_alive "$M"
check "sync app/race/v1 exits 0" sync "$XR"
check_eq "registry: app/race:v1 holds each name once, with its winner's bytes" \
	"$(cd "$XE" && want_layers "$XE" $(ls))" "$(layers_of app/race v1)"
check_eq "no staged file is left open in the daemon" "" \
	"$(find "/proc/$(server_pid "$M")/fd" -lname "$CACHE/staging/*" 2>/dev/null)"
printf 'after the races\n' >"$W/race-after.txt"
check "a later push of the same tag works" sh -c "cp '$W/race-after.txt' '$XR/after.txt' && sync '$XR'"
check_eq "registry: it has the new file" "$(digest_of "$W/race-after.txt")" "$(layer_digest app/race v1 after.txt)"

check "daemon of the rw mount is alive" daemon_alive "$M"
umount_ocifs "$M"
check_eq "after unmount, app/del still has only v0 (nothing re-pushed)" "v0" "$(tags_of app/del)"
check_fail "after unmount, app/files:v5 (emptied, removed) is not in the registry" has_tag app/files v5

# ================================================================ mount F: timeout=3, push_delay=3600, artifact_type
F=$TESTDIR/f
mount_ocifs "$REG" "$F" -o timeout=3,push_delay=3600,artifact_type=application/vnd.example.custom.v1 ||
	bail "mount with timeout=3"

check "mkdir -p typed/v1" mkdir -p "$F/typed/v1"
printf 'typed\n' >"$W/typed.txt"
check "cp a file into typed/v1" cp "$W/typed.txt" "$F/typed/v1/typed.txt"
check "sync typed/v1 exits 0" sync "$F/typed/v1"
check_eq "registry: typed:v1 artifactType is -o artifact_type" application/vnd.example.custom.v1 \
	"$(manifest_get typed v1 2>&1 | jq -r .artifactType 2>&1)"

# pushed at unmount only
check "mkdir app/files/atumount" mkdir "$F/app/files/atumount"
printf 'pushed at unmount\n' >"$W/atumount.txt"
check "cp a file into app/files/atumount (no sync)" cp "$W/atumount.txt" "$F/app/files/atumount/u.txt"
check_fail "push_delay=3600: app/files:atumount is not pushed before the unmount" has_tag app/files atumount

# ---------------------------------------------------------------- 8. the registry down at close
TF=$F/app/fail/v1
check_bytes "app/fail/v1/a.txt reads before the outage" "$W/fail-a.txt" "$TF/a.txt"
D_FAIL_V1=$(manifest_digest app/fail v1)
printf 'written while the registry was down\n' >"$W/fail-new.txt"
registry_stop
check_fail "the registry is down" curl -fsS -o /dev/null --max-time 2 "http://$REG/v2/"
t0=$SECONDS
check_fail "cp into app/fail/v1 with the registry down fails (close reports the upload)" \
	timeout 60 cp "$W/fail-new.txt" "$TF/new.txt"
diag "cp said: $(head -c 300 "$TESTDIR/.out") (after $((SECONDS - t0)) s)"
t0=$SECONDS
check_fail "sync app/fail/v1 with the registry down exits non-zero (it reports the failed push)" \
	timeout 60 sync "$TF"
diag "sync said: $(head -c 300 "$TESTDIR/.out") (after $((SECONDS - t0)) s)"
check_eq "storage still links app/fail:v1 to the old manifest" "$D_FAIL_V1" "$(tag_link app/fail v1)"
check "the daemon is alive with the registry down" daemon_alive "$F"
registry_restart || bail "restart the registry"
check_eq "after the restart, app/fail:v1 is the old manifest" "$D_FAIL_V1" "$(manifest_digest app/fail v1)"
check_eq "after the restart, app/fail:v1 layers are the old ones" "$(want_layers "$W" fail-a.txt | sed 's/fail-a.txt/a.txt/')" \
	"$(layers_of app/fail v1)"
check "sync app/fail/v1 exits 0 once the registry is back" sync "$TF" || log_tail
check_eq "registry: app/fail:v1 layer new.txt is the new file" "$(digest_of "$W/fail-new.txt")" \
	"$(layer_digest app/fail v1 new.txt)"
check_eq "registry: app/fail:v1 layer a.txt is unchanged" "$(digest_of "$W/fail-a.txt")" \
	"$(layer_digest app/fail v1 a.txt)"
check_same "registry: the blob of new.txt has its bytes" "$W/fail-new.txt" \
	<(blob_get app/fail "$(digest_of "$W/fail-new.txt")" 2>&1)

umount_ocifs "$F"
check "after unmount, app/files:atumount is in the registry" has_tag app/files atumount
check_eq "registry: app/files:atumount has u.txt" "$(want_layers "$W" atumount.txt | sed 's/atumount.txt/u.txt/')" \
	"$(layers_of app/files atumount)"
check_eq "registry: app/files:atumount artifactType is -o artifact_type" application/vnd.example.custom.v1 \
	"$(manifest_get app/files atumount 2>&1 | jq -r .artifactType 2>&1)"

# ================================================================ 9. a crash before the push
C=$TESTDIR/c
CC=$TESTDIR/cache-crash
OCIFS_CACHE=$CC mount_ocifs "$REG" "$C" -o push_delay=3600 || bail "mount for the crash"
printf 'crash one\n' >"$W/crash1.txt"
make_random_file "$W/crash2.bin" $((3 * MiB + 1)) crash-2
printf 'crashmod changed\n' >"$W/crashmod-new.txt"
check "mkdir -p crash/v1" mkdir -p "$C/crash/v1"
check "cp crash1.txt" cp "$W/crash1.txt" "$C/crash/v1/crash1.txt"
check "cp crash2.bin" cp "$W/crash2.bin" "$C/crash/v1/crash2.bin"
check "overwrite app/crashmod/v1/a.txt" cp "$W/crashmod-new.txt" "$C/app/crashmod/v1/a.txt"
check_eq "blob of crash2.bin is in the registry after its close" 200 \
	"$(blob_code crash "$(digest_of "$W/crash2.bin")")"
check_fail "crash:v1 is not pushed yet (push_delay=3600)" has_tag crash v1
check_eq "app/crashmod:v1 is not changed yet" "$D_CRASHMOD_V1" "$(manifest_digest app/crashmod v1)"
check "kill -9 the daemon and detach its mount" kill9_ocifs "$C"
check_fail "after the crash, crash:v1 is still not in the registry" has_tag crash v1
OCIFS_CACHE=$CC mount_ocifs "$REG" "$C" -o push_delay=3600 || bail "remount after the crash"
check "crash:v1 is pushed shortly after the remount with the same cache" wait_until 20 has_tag crash v1
check_eq "registry: crash:v1 has both files" \
	"$(want_layers "$W" crash1.txt crash2.bin)" "$(layers_of crash v1)"
crashmod_changed() { [ "$(manifest_digest app/crashmod v1)" != "$D_CRASHMOD_V1" ]; }
check "app/crashmod:v1 is changed shortly after the remount" wait_until 20 crashmod_changed
check_eq "registry: app/crashmod:v1 a.txt is the new one" "$(digest_of "$W/crashmod-new.txt")" \
	"$(layer_digest app/crashmod v1 a.txt)"
check_eq "registry: app/crashmod:v1 b.txt is unchanged" "$(digest_of "$W/crashmod-b.txt")" \
	"$(layer_digest app/crashmod v1 b.txt)"
check "the log says it pushed crash:v1 staged by an earlier run" \
	wait_until 5 grep -qE "crash:v1: pushed what an earlier run had staged" "$OCIFS_LOG"
check "the log says it pushed app/crashmod:v1 staged by an earlier run" \
	wait_until 5 grep -qE "app/crashmod:v1: pushed what an earlier run had staged" "$OCIFS_LOG"
check_bytes "crash/v1/crash2.bin reads through the remounted tree" "$W/crash2.bin" "$C/crash/v1/crash2.bin"
umount_ocifs "$C"

# ================================================================ 14. opens for writing on a full disk
# The staging area (the cache directory) is a small tmpfs. An open for
# writing that cannot copy the file up, or cannot record the draft, fails with
# ENOSPC and leaves nothing behind: no descriptor, no writer counted (a writer
# counted forever would keep the tag from being pushed by itself).
if [ -n "${OCIFS_IN_NS:-}" ]; then
	make_random_file "$W/full-big.bin" $((4 * MiB)) full-big
	printf 'full small\n' >"$W/full-small.txt"
	push_artifact_titled app/full v1 big.bin "$W/full-big.bin" small.txt "$W/full-small.txt" >/dev/null ||
		bail "seed app/full:v1"
	S=$TESTDIR/small
	mkdir -p "$S"
	mount -t tmpfs -o size=16m,mode=700 tmpfs "$S" || bail "a 16 MiB tmpfs"
	FM=$TESTDIR/fm
	# no bound: the default (a share of this small disk) would evict the blob copied up below
	OCIFS_CACHE=$S/c mount_ocifs "$REG" "$FM" -o push_delay=1,cache_size=unlimited ||
		bail "mount on the small disk"
	TF=$FM/app/full/v1
	check_bytes "app/full/v1/big.bin reads (its blob is then in the cache)" "$W/full-big.bin" "$TF/big.bin"
	# the daemon's descriptors of files on the small disk (cache and staging)
	disk_fds() { find "/proc/$(server_pid "$FM")/fd" -lname "$S/*" 2>/dev/null | wc -l; }
	fds0=$(disk_fds)
	dd if=/dev/zero of="$S/filler" bs=64k >/dev/null 2>&1
	check "the small disk is full" test "$(df --output=avail "$S" | tail -n 1)" -eq 0
	check_err "open of big.bin for writing (copied up) on the full disk: ENOSPC" \
		"No space left on device" bash -c "exec 3>>'$TF/big.bin'"
	check_bytes "big.bin is unchanged" "$W/full-big.bin" "$TF/big.bin"
	check_err "truncating open of big.bin (its draft cannot be saved): ENOSPC" \
		"No space left on device" bash -c ": >'$TF/big.bin'"
	check "the log says the disk is full" grep -q "No space left on device" "$OCIFS_LOG"
	check "the daemon is up" daemon_alive "$FM"
	check_eq "no descriptor left open by the failed opens" "$fds0" "$(disk_fds)"
	check_bytes "the failed truncating open changed nothing: big.bin reads whole" \
		"$W/full-big.bin" "$TF/big.bin"
	rm -f "$S/filler"
	printf 'written once there was room\n' >"$W/full-other.txt"
	check "with room again, cp a file into app/full/v1" cp "$W/full-other.txt" "$TF/other.txt"
	full_pushed() { [ "$(layer_digest app/full v1 other.txt)" = "$(digest_of "$W/full-other.txt")" ]; }
	check "app/full:v1 is pushed by itself after push_delay (no sync): no writer left counted" \
		wait_until 20 full_pushed
	check_eq "registry: app/full:v1 has big.bin and small.txt as they were, and other.txt" \
		"$(want_layers "$W" full-big.bin full-small.txt full-other.txt | sed 's/full-//g' |
			jq -cS 'sort_by(.t)')" "$(layers_of app/full v1)"
	check_eq "no descriptor left open once pushed" "$fds0" "$(disk_fds)"
	umount_ocifs "$FM"
	umount "$S"
else
	skip_part "part 14 (a full staging disk)" "needs root for a tmpfs in a mount namespace"
fi

# ================================================================ 5, 7. a fresh read-only mount
R=$TESTDIR/r
OCIFS_CACHE=$TESTDIR/cache-fresh mount_ocifs "$REG" "$R" -o ro || bail "fresh read-only mount"
check_err "-o ro: mkdir of a tag fails with EROFS" "Read-only file system" mkdir "$R/app/files/v77"
check_err "-o ro: mkdir of a repository fails with EROFS" "Read-only file system" mkdir "$R/brandnew"
check_err "-o ro: creating a file fails with EROFS" "Read-only file system" touch "$R/app/files/v1/new.txt"
check_err "-o ro: rm of a file fails with EROFS" "Read-only file system" rm -f "$R/app/files/v1/a.txt"
check_err "-o ro: rmdir of a tag fails with EROFS" "Read-only file system" rmdir "$R/app/files/v1"
check_eq "-o ro: the registry still has app/files:v1 as it was" "$D_FILES_V1" "$(manifest_digest app/files v1)"

tags=$(ls "$R/app/files" 2>&1 | tr '\n' ' ')
check_eq "fresh mount lists app/files with the new tags" "atumount auto v1 v2 v3 " "$tags"
for f in hello.txt css/a.css data.bin; do
	check_bytes "fresh mount: app/files/v2/$f reads back" "$N/$f" "$R/app/files/v2/$f"
done
for f in a.txt b.txt c.txt g.txt keep.bin sub/d.txt; do
	check_bytes "fresh mount: app/mod/v1/$f reads back" "$E/$f" "$R/app/mod/v1/$f"
done
check_ls "fresh mount: app/mod/v1 lists the changed files" "$R/app/mod/v1" a.txt b.txt c.txt g.txt keep.bin sub
check_bytes "fresh mount: newrepo/v1/file.txt" "$W/newrepo.txt" "$R/newrepo/v1/file.txt"
check_bytes "fresh mount: app/colon/v1/c.txt" "$W/colon-app.txt" "$R/app/colon/v1/c.txt"
check_bytes "fresh mount: crew/colon/v1/c.txt" "$W/colon-crew.txt" "$R/crew/colon/v1/c.txt"
check_bytes "fresh mount: app/newsub/t1/newsub.txt" "$W/newsub.txt" "$R/app/newsub/t1/newsub.txt"
check_bytes "fresh mount: par/t1/p.bin" "$W/par1.bin" "$R/par/t1/p.bin"
check_bytes "fresh mount: par/t2/p.bin" "$W/par2.bin" "$R/par/t2/p.bin"
check_bytes "fresh mount: app/copy/v9/two.bin" "$CP/two.bin" "$R/app/copy/v9/two.bin"
check_bytes "fresh mount: app/copy/v9/sub/x.txt" "$CP/sub/x.txt" "$R/app/copy/v9/sub/x.txt"
check_bytes "fresh mount: app/big/v1/big.bin (70 MiB)" "$W/big.bin" "$R/app/big/v1/big.bin"
check_bytes "fresh mount: app/fail/v1/new.txt" "$W/fail-new.txt" "$R/app/fail/v1/new.txt"
check_bytes "fresh mount: crash/v1/crash1.txt" "$W/crash1.txt" "$R/crash/v1/crash1.txt"
check_bytes "fresh mount: app/crashmod/v1/a.txt" "$W/crashmod-new.txt" "$R/app/crashmod/v1/a.txt"
check_bytes "fresh mount: typed/v1/typed.txt" "$W/typed.txt" "$R/typed/v1/typed.txt"
check_ls "fresh mount: app/del lists only v0" "$R/app/del" v0
umount_ocifs "$R"
finish

#!/bin/bash
# The read side of the tree (DESIGN.md section 2): catalog and tag listings
# (paginated), nested repositories, child repository vs tag, digest
# directories and aliases, artifact files (bytes, sizes, mtimes), .oci/,
# xattrs, owner and modes, EROFS, every SOURCE form, tag_ttl.
T_TIMEOUT=${T_TIMEOUT:-400}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env getfattr

REG_ACCESSLOG=1 registry_start tree

# ---- seed
S=$TESTDIR/s1
mkdir -p "$S/data/nested/deep"
printf 'Hello, world\n' >"$S/hello.txt"
make_random_file "$S/data/blob.bin" 3145745 blob
printf '{"k":1}\n' >"$S/data/nested/deep/x.json"
printf 'spaces are fine\n' >"$S/with space.txt"
: >"$S/empty.txt"
FILES=("hello.txt" "data/blob.bin" "data/nested/deep/x.json" "with space.txt" "empty.txt")
CREATED_V1=2023-05-06T07:08:09Z
D1=$(CREATED=$CREATED_V1 ARTIFACT_TYPE=application/vnd.example.test.v1 \
	ANNOTATIONS='{"com.example.note":"hi there"}' push_artifact art/files v1 "$S") ||
	bail "seed art/files:v1"
mkdir -p "$TESTDIR/s2"
printf 'v2\n' >"$TESTDIR/s2/hello.txt"
D2=$(push_artifact art/files v2 "$TESTDIR/s2") || bail "seed art/files:v2"

mk() { # mk DIR FILE CONTENT
	mkdir -p "$TESTDIR/$1"
	printf '%s\n' "$3" >"$TESTDIR/$1/$2"
}
mk abc c.txt "abc"
mk abt0 b.txt "b at t0"
mk abtagc tag-c.txt "tag c of a/b"
push_artifact a/b/c t1 "$TESTDIR/abc" >/dev/null || bail "seed a/b/c:t1"
push_artifact a/b t0 "$TESTDIR/abt0" >/dev/null || bail "seed a/b:t0"
DTAGC=$(push_artifact a/b c "$TESTDIR/abtagc") || bail "seed a/b:c"
for i in 1 2 3 4 5 6; do
	mk "pad$i" "r$i.txt" "pad $i"
	push_artifact "pad/r$i" latest "$TESTDIR/pad$i" >/dev/null || bail "seed pad/r$i"
done
mkdir -p "$TESTDIR/par"
make_random_file "$TESTDIR/par/par.bin" 6291459 par
DPAR=$(push_artifact art/par v1 "$TESTDIR/par") || bail "seed art/par:v1"
mk solo solo.txt "solo"
DSOLO=$(push_artifact solo latest "$TESTDIR/solo") || bail "seed solo"
mk many m.txt "many"
push_artifact many/tags v0 "$TESTDIR/many" >/dev/null || bail "seed many/tags"
cp "$TESTDIR/.manifest.json" "$TESTDIR/many.json"
: >"$TESTDIR/many.want"
for ((i = 0; i < 250; i++)); do
	echo "v$i" >>"$TESTDIR/many.want"
	[ "$i" = 0 ] && continue
	push_manifest many/tags "v$i" "$TESTDIR/many.json" "$MT_OCI_MANIFEST" >/dev/null || bail "seed many/tags:v$i"
done
sort -o "$TESTDIR/many.want" "$TESTDIR/many.want"
check_eq "registry holds 250 tags of many/tags" 250 "$(reg_curl many/tags/tags/list | jq '.tags | length')"
check_eq "registry catalog holds 12 repositories" 12 "$(reg_curl _catalog | jq '.repositories | length')"

# ---- HOST source, read-only, small pages
M=$TESTDIR/host
mount_ocifs "$REG" "$M" -o ro,page_size=7 || bail "cannot go on without a mount"

check_ls "root lists the first components of the catalog" "$M" a art many pad solo
check_ls "pad/ lists six repositories (second catalog page)" "$M/pad" r1 r2 r3 r4 r5 r6
grep -o "GET /v2/_catalog[^ ]*" "$REG_ROOT/registry.log" >"$TESTDIR/catalog.req"
check "page_size=7: _catalog asked with n=7" grep -q "n=7" "$TESTDIR/catalog.req" ||
	diag_file "$TESTDIR/catalog.req"
check "page_size=7: _catalog Link followed (a request with last=)" grep -q "last=" "$TESTDIR/catalog.req"
check_ls "a/ lists b" "$M/a" b
check_ls "a/b lists child repository c once and tag t0" "$M/a/b" c t0
check_ls "a/b/c is the child repository (lists its tag t1)" "$M/a/b/c" t1
check_eq "a/b/c/t1/c.txt reads" "abc" "$(cat "$M/a/b/c/t1/c.txt" 2>&1)"
check_eq "shadowed tag a/b:c reachable through its alias" "tag c of a/b" \
	"$(cat "$M/a/b:c/tag-c.txt" 2>&1)"
check_eq "alias a/b:c has the tag's digest" "$DTAGC" "$(tr -d '\n' <"$M/a/b:c/.oci/digest" 2>&1)"
check_eq "alias a/b/c:t1 reads" "abc" "$(cat "$M/a/b/c:t1/c.txt" 2>&1)"
check_eq "top-level alias solo:latest reads" "solo" "$(cat "$M/solo:latest/solo.txt" 2>&1)"
check_eq "top-level alias solo@digest reads" "solo" "$(cat "$M/solo@$DSOLO/solo.txt" 2>&1)"
check_fail "aliases are not listed" bash -c "for d in '$M' '$M/a' '$M/a/b' '$M/art'; do ls -a \"\$d\"; done | grep '[:@]'"
check_fail "digest directories are not listed" bash -c "ls -a '$M/art/files' | grep -q sha256"

ls "$M/many/tags" >"$TESTDIR/many.got" 2>&1
check_eq "many/tags lists exactly 250 tags" 250 "$(wc -l <"$TESTDIR/many.got")"
# distribution 2.8 ignores n on tags/list (it answers all 250 at once), so
# only the request is checked here
check "page_size=7: tags/list asked with n=7" grep -qE "GET /v2/many/tags/tags/list\\?([^ ]*&)?n=7" "$REG_ROOT/registry.log"
check "many/tags lists each tag once, v0..v249" cmp -s "$TESTDIR/many.want" "$TESTDIR/many.got"
check_ls "art/files lists its tags" "$M/art/files" v1 v2
check_ls "art lists files and par" "$M/art" files par

A=$M/art/files/v1
check_ls "artifact dir lists the top-level titles" "$A" data empty.txt hello.txt "with space.txt"
check_ls "title with / becomes subdirectories" "$A/data" blob.bin nested
check_ls "deeper subdirectories" "$A/data/nested/deep" x.json
(cd "$A" && find . -type f -printf '%P\n' | sort) >"$TESTDIR/files.got" 2>&1
printf '%s\n' "${FILES[@]}" | sort >"$TESTDIR/files.want"
check_same "find lists exactly the artifact's files" "$TESTDIR/files.want" "$TESTDIR/files.got"
ls -lR "$A" >"$TESTDIR/lslR.out" 2>&1
check "ls -lR of the artifact shows every size" grep -q " 3145745 " "$TESTDIR/lslR.out"
check_fail "ls -l fetched no blob (nothing in cache_dir/blobs)" \
	test -e "$CACHE/blobs/sha256/$(sha256_hex "$S/data/blob.bin")"
# a read in the middle first, before anything fetched the blob
dd if="$A/data/blob.bin" bs=4096 skip=500 count=3 status=none >"$TESTDIR/range.got" 2>&1
dd if="$S/data/blob.bin" bs=4096 skip=500 count=3 status=none >"$TESTDIR/range.want"
check_same "a read in the middle of blob.bin (uncached)" "$TESTDIR/range.want" "$TESTDIR/range.got"
created_epoch=$(date -u -d "$CREATED_V1" +%s)
for f in "${FILES[@]}"; do
	check_same "bytes of $f" "$S/$f" "$A/$f"
	check_eq "sha256 of $f" "$(sha256_hex "$S/$f")" "$(sha256sum <"$A/$f" 2>&1 | cut -d' ' -f1)"
	check_eq "size of $f" "$(stat -c %s "$S/$f")" "$(stat -c %s "$A/$f" 2>&1)"
	check_eq "mtime of $f is the created annotation" "$created_epoch" "$(stat -c %Y "$A/$f" 2>&1)"
	check_eq "$f is a regular file" "regular file" "$(stat -c %F "$A/$f" 2>&1 | sed 's/regular empty file/regular file/')"
done
check_eq "mtime of the artifact dir is the created annotation" "$created_epoch" "$(stat -c %Y "$A" 2>&1)"
rm -rf "$TESTDIR/copy"
cp -r "$A" "$TESTDIR/copy" 2>"$TESTDIR/cp.err"
check "cp -r of the artifact dir copies exactly the source tree (no .oci)" diff -r "$S" "$TESTDIR/copy"
check_same "the blob read is in cache_dir/blobs/sha256/<hex>" "$S/data/blob.bin" \
	"$CACHE/blobs/sha256/$(sha256_hex "$S/data/blob.bin")"

# parallel readers of one uncached blob through four paths
P=$M/art/par
np=0
pids=()
for p in "$P/v1/par.bin" "$P/$DPAR/par.bin" "$M/art/par:v1/par.bin" \
	"$P/v1/.oci/blobs/sha256/$(sha256_hex "$TESTDIR/par/par.bin")"; do
	np=$((np + 1))
	cat "$p" >"$TESTDIR/par.$np" 2>&1 &
	pids+=("$!")
done
wait "${pids[@]}"
for ((i = 1; i <= np; i++)); do
	check_same "parallel reader $i of one blob gets the right bytes" "$TESTDIR/par/par.bin" "$TESTDIR/par.$i"
done

# .oci
check_fail ".oci is not listed by ls -a" bash -c "ls -a '$A' | grep -qx .oci"
check ".oci resolves" test -d "$A/.oci"
manifest_get art/files v1 >"$TESTDIR/m1.json"
check_same ".oci/manifest.json is the registry's manifest, byte for byte" "$TESTDIR/m1.json" "$A/.oci/manifest.json"
printf '%s\n' "$D1" >"$TESTDIR/d1"
check_same ".oci/digest is 'sha256:<hex>\\n'" "$TESTDIR/d1" "$A/.oci/digest"
blob_get art/files "$EMPTY_DIGEST" >"$TESTDIR/cfg"
check_same ".oci/config.json is the config blob" "$TESTDIR/cfg" "$A/.oci/config.json"
for dg in $(jq -r '.config.digest, .layers[].digest' "$TESTDIR/m1.json" | sort -u); do
	check_eq ".oci/blobs/sha256/${dg:7:12}... hashes to its name" "${dg#sha256:}" \
		"$(sha256sum <"$A/.oci/blobs/sha256/${dg#sha256:}" 2>&1 | cut -d' ' -f1)"
done
check_same ".oci/blobs holds hello.txt's layer" "$S/hello.txt" \
	"$A/.oci/blobs/sha256/$(sha256_hex "$S/hello.txt")"
check_fail ".oci/blobs has no blob outside the manifest" \
	cat "$A/.oci/blobs/sha256/$(printf 'x' | sha256sum | cut -d' ' -f1)"

# digest directories and aliases
for p in "art/files/$D1" "art/files:v1" "art/files@$D1"; do
	check_same "$p/hello.txt reads" "$S/hello.txt" "$M/$p/hello.txt"
	check_same "$p/data/blob.bin reads" "$S/data/blob.bin" "$M/$p/data/blob.bin"
	check_same "$p/.oci/manifest.json" "$TESTDIR/m1.json" "$M/$p/.oci/manifest.json"
done
check_eq "art/files:v2 is the other tag" "v2" "$(cat "$M/art/files:v2/hello.txt" 2>&1)"
check_eq "digest dir of v2" "v2" "$(cat "$M/art/files/$D2/hello.txt" 2>&1)"
check_err "unknown digest is ENOENT" "No such file or directory" \
	ls "$M/art/files/sha256:$(printf 'nope' | sha256sum | cut -d' ' -f1)"
check_err "unknown tag is ENOENT" "No such file or directory" ls "$M/art/files/nope"
check_err "unknown repository is ENOENT" "No such file or directory" ls "$M/nope"

# xattrs
gx() { getfattr --absolute-names --only-values -n "$1" "$2" 2>&1; }
check_eq "user.oci.digest of the artifact dir" "$D1" "$(gx user.oci.digest "$A")"
check_eq "user.oci.mediaType of the artifact dir" "$MT_OCI_MANIFEST" "$(gx user.oci.mediaType "$A")"
check_eq "user.oci.artifactType of the artifact dir" "application/vnd.example.test.v1" \
	"$(gx user.oci.artifactType "$A")"
check_eq "user.oci.annotation.org.opencontainers.image.created" "$CREATED_V1" \
	"$(gx user.oci.annotation.org.opencontainers.image.created "$A")"
check_eq "user.oci.annotation.com.example.note" "hi there" "$(gx user.oci.annotation.com.example.note "$A")"
check_eq "user.oci.digest of a file is its layer digest" "$(digest_of "$S/hello.txt")" \
	"$(gx user.oci.digest "$A/hello.txt")"
check_eq "user.oci.mediaType of a file" "$MT_LAYER_TAR" "$(gx user.oci.mediaType "$A/hello.txt")"
check_eq "user.oci.annotation.org.opencontainers.image.title of a nested file" "data/nested/deep/x.json" \
	"$(gx user.oci.annotation.org.opencontainers.image.title "$A/data/nested/deep/x.json")"
getfattr --absolute-names -d "$A" >"$TESTDIR/xattrs.dir" 2>&1
check "getfattr -d lists the artifact dir's attributes" bash -c \
	"grep -qx 'user.oci.digest=\"$D1\"' '$TESTDIR/xattrs.dir' &&
	 grep -q '^user.oci.mediaType=' '$TESTDIR/xattrs.dir' &&
	 grep -q '^user.oci.artifactType=' '$TESTDIR/xattrs.dir' &&
	 grep -q '^user.oci.annotation.com.example.note=\"hi there\"' '$TESTDIR/xattrs.dir'" ||
	diag_file "$TESTDIR/xattrs.dir" 12
getfattr --absolute-names -d "$A/hello.txt" >"$TESTDIR/xattrs.file" 2>&1
check "getfattr -d lists the file's attributes" bash -c \
	"grep -q '^user.oci.digest=\"sha256:' '$TESTDIR/xattrs.file' &&
	 grep -q '^user.oci.annotation.org.opencontainers.image.title=\"hello.txt\"' '$TESTDIR/xattrs.file'"
check_err "a missing attribute is ENODATA" "No such attribute" getfattr -n user.oci.nope "$A/hello.txt"

# owner, modes, EROFS (read-only mount)
me="$(id -u):$(id -g)"
for p in "$M" "$M/art/files" "$A" "$A/data" "$A/hello.txt" "$A/.oci/manifest.json"; do
	check_eq "owner of $(_lbl "$p") is the mounting user" "$me" "$(stat -c %u:%g "$p" 2>&1)"
done
for p in "$M" "$M/art" "$M/art/files" "$A" "$A/data" "$A/.oci"; do
	check_eq "mode of dir $(_lbl "$p") is 555 with ro" 555 "$(stat -c %a "$p" 2>&1)"
done
for p in "$A/hello.txt" "$A/data/blob.bin" "$A/.oci/manifest.json"; do
	check_eq "mode of file $(_lbl "$p") is 444 with ro" 444 "$(stat -c %a "$p" 2>&1)"
done
check_err "touch a new file: EROFS" "Read-only file system" touch "$A/new.txt"
check_err "append to a file: EROFS" "Read-only file system" bash -c "echo x >>'$A/hello.txt'"
check_err "mkdir a new tag: EROFS" "Read-only file system" mkdir "$M/art/files/v3"
check_err "rm a file: EROFS" "Read-only file system" rm -f "$A/hello.txt"
check_err "rmdir a tag: EROFS" "Read-only file system" rmdir "$M/art/files/v2"
check_err "mv a file: EROFS" "Read-only file system" mv "$A/hello.txt" "$A/moved.txt"
check_same "hello.txt still intact" "$S/hello.txt" "$A/hello.txt"
check_eq "registry still holds the same tags" "v1 v2" "$(reg_curl art/files/tags/list | jq -r '.tags | sort | join(" ")')"
umount_ocifs "$M"

# ---- read-write mount with uid/gid: 0644/0755, the given owner
M=$TESTDIR/owner
if mount_ocifs "$REG" "$M" -o uid=1234,gid=4321; then
	A=$M/art/files/v1
	for p in "$M" "$A" "$A/data" "$A/hello.txt"; do
		check_eq "owner of $(_lbl "$p") with uid=1234,gid=4321" "1234:4321" "$(stat -c %u:%g "$p" 2>&1)"
	done
	for p in "$M" "$M/art/files" "$A" "$A/data"; do
		check_eq "mode of dir $(_lbl "$p") is 755 without ro" 755 "$(stat -c %a "$p" 2>&1)"
	done
	for p in "$A/hello.txt" "$A/data/blob.bin"; do
		check_eq "mode of file $(_lbl "$p") is 644 without ro" 644 "$(stat -c %a "$p" 2>&1)"
	done
	check_same "hello.txt reads on the rw mount" "$S/hello.txt" "$A/hello.txt"
	umount_ocifs "$M"
fi

# ---- every SOURCE form
M=$TESTDIR/any
if mount_ocifs - "$M" -o ro; then
	check_same "SOURCE -: <mnt>/HOST:PORT/art/files/v1/hello.txt" "$S/hello.txt" "$M/$REG/art/files/v1/hello.txt"
	check_ls "SOURCE -: registry dir lists the catalog components" "$M/$REG" a art many pad solo
	check_same "SOURCE -: digest path" "$S/data/blob.bin" "$M/$REG/art/files/$D1/data/blob.bin"
	umount_ocifs "$M"
fi
M=$TESTDIR/repo
if mount_ocifs "$REG/art/files" "$M" -o ro; then
	check_ls "SOURCE HOST/REPO: root lists the tags" "$M" v1 v2
	check_same "SOURCE HOST/REPO: v1/hello.txt" "$S/hello.txt" "$M/v1/hello.txt"
	check_same "SOURCE HOST/REPO: digest dir" "$S/hello.txt" "$M/$D1/hello.txt"
	umount_ocifs "$M"
fi
M=$TESTDIR/nested-repo
if mount_ocifs "$REG/a/b" "$M" -o ro; then
	check_ls "SOURCE HOST/a/b: child repository wins over the tag" "$M" c t0
	check_eq "SOURCE HOST/a/b: child repo c lists t1" "t1" "$(ls "$M/c" 2>&1)"
	umount_ocifs "$M"
fi
M=$TESTDIR/tag
if mount_ocifs "$REG/art/files:v1" "$M" -o ro; then
	check_ls "SOURCE HOST/REPO:TAG: root is the artifact" "$M" data empty.txt hello.txt "with space.txt"
	check_same "SOURCE HOST/REPO:TAG: blob.bin" "$S/data/blob.bin" "$M/data/blob.bin"
	check_same "SOURCE HOST/REPO:TAG: .oci/digest" "$TESTDIR/d1" "$M/.oci/digest"
	check_eq "SOURCE HOST/REPO:TAG: user.oci.digest of the root" "$D1" "$(gx user.oci.digest "$M")"
	umount_ocifs "$M"
fi
M=$TESTDIR/digest
if mount_ocifs "$REG/art/files@$D1" "$M" -o ro; then
	check_ls "SOURCE HOST/REPO@DIGEST: root is the artifact" "$M" data empty.txt hello.txt "with space.txt"
	check_same "SOURCE HOST/REPO@DIGEST: x.json" "$S/data/nested/deep/x.json" "$M/data/nested/deep/x.json"
	check_same "SOURCE HOST/REPO@DIGEST: .oci/manifest.json" "$TESTDIR/m1.json" "$M/.oci/manifest.json"
	umount_ocifs "$M"
fi

# ---- tag_ttl / list_ttl: a moved tag and a new tag show up after the TTL
mk move1 x.txt "one"
mk move2 x.txt "two"
push_artifact art/files moving "$TESTDIR/move1" >/dev/null || bail "seed art/files:moving"
M=$TESTDIR/ttl
if mount_ocifs "$REG" "$M" -o ro,tag_ttl=1,list_ttl=1; then
	check_eq "tag moving reads its first content" "one" "$(cat "$M/art/files/moving/x.txt" 2>&1)"
	check_ls "art/files lists three tags" "$M/art/files" moving v1 v2
	push_artifact art/files moving "$TESTDIR/move2" >/dev/null
	push_artifact art/files v9 "$TESTDIR/move2" >/dev/null
	sleep 2.5 # let tag_ttl and list_ttl (1 s) expire
	check_eq "after tag_ttl the moved tag reads the new content" "two" "$(cat "$M/art/files/moving/x.txt" 2>&1)"
	check_ls "after list_ttl the new tag is listed" "$M/art/files" moving v1 v2 v9
	umount_ocifs "$M"
fi

# ---- negative_timeout: how long the kernel keeps a name's absence. That it
# keeps one at all is the kernel's to decide (it may drop it any time): what
# is checked is that it asks again once the time is up, at once with 0.
M=$TESTDIR/neg
M2=$TESTDIR/neg-default
if mount_ocifs "$REG" "$M" -o ro,tag_ttl=1,list_ttl=1,negative_timeout=0 &&
	mount_ocifs "$REG" "$M2" -o ro,tag_ttl=1,list_ttl=1; then
	check_fail "negative_timeout=0: tag late is not there yet" stat "$M/art/files/late"
	check_fail "default negative_timeout: tag late is not there yet" stat "$M2/art/files/late"
	push_artifact art/files late "$TESTDIR/move2" >/dev/null
	check "negative_timeout=0: the pushed tag late is found by the next lookup" \
		stat "$M/art/files/late/x.txt"
	check "default negative_timeout (1 s): the pushed tag late is then found" \
		wait_until 10 test -e "$M2/art/files/late/x.txt"
	umount_ocifs "$M"
	umount_ocifs "$M2"
fi

finish

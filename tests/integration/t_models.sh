#!/bin/bash
# Model artifacts as their files: a ModelPack artifact (as modctl builds it:
# .raw layers at org.cncf.model.filepath, or the older org.cnai.model.*
# names, with mode and mtime from the file metadata annotation; tar layers
# unpacked in place), an Ollama model (names from the layer media types,
# numbered where a type repeats, a layer's own "name" where it has one) and
# a KitOps ModelKit (tar layers unpacked, matched to their Kitfile entries by
# digest, and the Kitfile as kit unpack writes it; a kit before 0.5, whose
# entries have no digest, by place, each tar under its path's parent). A
# tar layer with an entry outside the artifact is not unpacked.
# Bad paths (absolute, "..", taken) and bad metadata: a log line, and the
# layer under its fallback name sha256-<hex>, never outside the artifact.
T_TIMEOUT=${T_TIMEOUT:-300}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env jq stat getfattr

registry_start models
W=$TESTDIR/w
mkdir -p "$W"

# layer_json FILE MEDIATYPE [ANNOTATIONS_JSON] [EXTRA_JSON]: a layer descriptor of FILE, pushed to $REPO
layer_json() {
	local dg
	dg=$(push_blob "$REPO" "$1") || return 1
	jq -n -c --arg mt "$2" --arg d "$dg" --argjson s "$(stat -c %s "$1")" \
		--argjson a "${3:-null}" --argjson x "${4:-{\}}" \
		'{mediaType: $mt, digest: $d, size: $s} + (if $a then {annotations: $a} else {} end) + $x'
}
# meta NAME MODE MTIME [TYPEFLAG [SIZE]]: a file metadata annotation value, as modctl writes it
meta() {
	jq -n -c --arg n "$1" --argjson m "$2" --arg t "$3" --argjson f "${4:-0}" --argjson s "${5:-0}" \
		'{name: $n, mode: $m, uid: 0, gid: 0, size: $s, mtime: $t, typeflag: $f}'
}
fp() { jq -n -c --arg p "$1" '{"org.cncf.model.filepath": $p}'; }
# mktar OUT COMPRESS SPEC...: a tar made by python's tarfile, as modctl and kit
# write them (owner 1000:0); COMPRESS none, gzip or zstd; each SPEC is
# NAME=FILE (a regular file), NAME/ (a directory), NAME@TARGET (a symlink) or
# NAME:MODE=FILE (a file with that octal mode)
mktar() {
	local out=$1 comp=$2
	shift 2
	python3 - "$out.tmp" "$@" <<'PY' || return 1
import sys, tarfile, io
out, specs = sys.argv[1], sys.argv[2:]
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
    for sp in specs:
        ti = None
        if sp.endswith("/"):
            ti = tarfile.TarInfo(sp.rstrip("/")); ti.type = tarfile.DIRTYPE; ti.mode = 0o755
            t.addfile(ti); continue
        if "@" in sp:
            name, target = sp.split("@", 1)
            ti = tarfile.TarInfo(name); ti.type = tarfile.SYMTYPE; ti.linkname = target
            t.addfile(ti); continue
        name, path = sp.split("=", 1)
        mode = 0o644
        if ":" in name:
            name, m = name.rsplit(":", 1); mode = int(m, 8)
        data = open(path, "rb").read()
        ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = mode
        ti.uid, ti.gid, ti.mtime = 1000, 0, 1700000000
        t.addfile(ti, io.BytesIO(data))
PY
	case $comp in
	gzip) gzip -nc "$out.tmp" >"$out" && rm -f "$out.tmp" ;;
	zstd) zstd -q -c "$out.tmp" >"$out" && rm -f "$out.tmp" ;;
	*) mv -f "$out.tmp" "$out" ;;
	esac
}
# model_push REPO TAG CONFIG_MEDIATYPE CONFIG_FILE ARTIFACT_TYPE LAYER_JSON...
# (MP_ANNOTATIONS: the manifest's annotations, a JSON object)
model_push() {
	local repo=$1 tag=$2 cmt=$3 cfile=$4 at=$5 cdg mf=$TESTDIR/mf.${1//\//_}.$2.json
	shift 5
	cdg=$(push_blob "$repo" "$cfile") || return 1
	jq -n -c --arg cmt "$cmt" --arg c "$cdg" --argjson cs "$(stat -c %s "$cfile")" --arg at "$at" \
		--argjson l "$(printf '%s\n' "$@" | jq -s -c .)" --argjson ann "${MP_ANNOTATIONS:-null}" \
		'{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
		  config: {mediaType: $cmt, digest: $c, size: $cs}, layers: $l}
		 + (if $at != "" then {artifactType: $at} else {} end)
		 + (if $ann then {annotations: $ann} else {} end)' >"$mf" || return 1
	push_manifest "$repo" "$tag" "$mf"
}

# ---- ModelPack, as modctl build makes it (raw layers)
REPO=mp/qwen
make_random_file "$W/m1.safetensors" $((3 * 1024 * 1024 + 5)) mp-1
make_random_file "$W/m2.safetensors" 700000 mp-2
printf '{"architectures": ["Qwen2"]}\n' >"$W/config.json"
printf '#!/bin/sh\necho run\n' >"$W/run.sh"
printf '# Qwen\n' >"$W/README.md"
printf '{"descriptor": {"name": "qwen"}, "modelfs": {"type": "layers", "diffIds": []}, "config": {}}' >"$W/mpconfig.json"
L=()
L+=("$(layer_json "$W/m1.safetensors" application/vnd.cncf.model.weight.v1.raw \
	"$(jq -n -c --arg m "$(meta m1.safetensors 420 2025-04-22T15:07:13.123456789+08:00)" \
		'{"org.cncf.model.filepath": "model-00001-of-00002.safetensors", "org.cncf.model.file.metadata+json": $m}')")")
L+=("$(layer_json "$W/m2.safetensors" application/vnd.cncf.model.weight.v1.raw \
	'{"org.cncf.model.filepath": "shards/./deep//model-00002-of-00002.safetensors"}')")
L+=("$(layer_json "$W/config.json" application/vnd.cncf.model.weight.config.v1.raw \
	"$(jq -n -c --arg m "$(meta config.json 384 0001-01-01T00:00:00Z 48)" \
		'{"org.cncf.model.filepath": "config.json", "org.cncf.model.file.metadata+json": $m}')")")
L+=("$(layer_json "$W/run.sh" application/vnd.cncf.model.code.v1.raw \
	"$(jq -n -c --arg m "$(meta run.sh 493 2024-01-02T03:04:05Z)" \
		'{"org.cncf.model.filepath": "scripts/run.sh", "org.cncf.model.file.metadata+json": $m}')")")
# the older names: application/vnd.cnai.model.* and org.cnai.model.*
L+=("$(layer_json "$W/README.md" application/vnd.cnai.model.doc.v1.raw \
	"$(jq -n -c --arg m "$(meta README.md 416 2023-05-06T07:08:09Z)" \
		'{"org.cnai.model.filepath": "README.md", "org.cnai.model.file.metadata": $m}')")")
model_push mp/qwen v1 application/vnd.cncf.model.config.v1+json "$W/mpconfig.json" \
	application/vnd.cncf.model.manifest.v1+json "${L[@]}" >/dev/null || bail "push mp/qwen:v1"

M=$TESTDIR/mnt
mount_ocifs "$REG" "$M" -o ro || bail "mount"
A=$M/mp/qwen/v1
check_ls "ModelPack: the files at their filepaths" "$A" README.md config.json \
	model-00001-of-00002.safetensors scripts shards
check_ls "ModelPack: a filepath with / makes directories (./ and // dropped)" "$A/shards/deep" \
	model-00002-of-00002.safetensors
check_same "ModelPack: model-00001 bytes" "$W/m1.safetensors" "$A/model-00001-of-00002.safetensors"
check_same "ModelPack: shards/deep/model-00002 bytes" "$W/m2.safetensors" \
	"$A/shards/deep/model-00002-of-00002.safetensors"
check_same "ModelPack: scripts/run.sh bytes" "$W/run.sh" "$A/scripts/run.sh"
check_eq "ModelPack: mode 420 (decimal) is 0644, write bit gone on a ro mount" 444 \
	"$(stat -c %a "$A/model-00001-of-00002.safetensors")"
check_eq "ModelPack: mode 493 is 0755: 0555 on a ro mount" 555 "$(stat -c %a "$A/scripts/run.sh")"
check_eq "ModelPack: mode 384 is 0600: 0400 on a ro mount" 400 "$(stat -c %a "$A/config.json")"
check_eq "ModelPack: mtime from the metadata (RFC 3339, +08:00, fraction)" 1745305633 \
	"$(stat -c %Y "$A/model-00001-of-00002.safetensors")"
check_eq "ModelPack: Go's zero mtime means none: the artifact's" "$(stat -c %Y "$A")" \
	"$(stat -c %Y "$A/config.json")"
check_eq "ModelPack, older org.cnai names: README.md's mode 416 (0640)" 440 "$(stat -c %a "$A/README.md")"
check_eq "ModelPack, older org.cnai names: README.md's mtime" 1683356889 "$(stat -c %Y "$A/README.md")"
check_eq "ModelPack: no metadata: the mount's mode" 444 \
	"$(stat -c %a "$A/shards/deep/model-00002-of-00002.safetensors")"
umount_ocifs "$M"
# a model's layers are paths, not titles: no change is staged here, on a rw mount too
mount_ocifs "$REG" "$M" || bail "rw mount"
D0=$(manifest_digest mp/qwen v1)
check_err "ModelPack, rw mount: a new file is refused (EROFS)" "Read-only file system" \
	cp "$W/run.sh" "$A/new.sh"
check_err "ModelPack, rw mount: removing a file is refused (EROFS)" "Read-only file system" \
	rm "$A/config.json"
check "the log says a model is changed with its own tools" grep -qF "a model's files are changed with its own tools" "$OCIFS_LOG"
check_eq "ModelPack, rw mount: the tag is unchanged" "$D0" "$(manifest_digest mp/qwen v1)"
check_eq "ModelPack: user.oci.annotation.org.cncf.model.filepath" "model-00001-of-00002.safetensors" \
	"$(getfattr --absolute-names --only-values -n user.oci.annotation.org.cncf.model.filepath \
		"$A/model-00001-of-00002.safetensors" 2>&1)"
umount_ocifs "$M"

# ---- a mapping faulted in forward is served as read() is: the kernel's read-ahead
# sends reads of up to its window, not one per page (the files are not direct_io)
REPO=mp/mapped
make_random_file "$W/read.safetensors" $((16 * 1024 * 1024)) mp-read
make_random_file "$W/mapped.safetensors" $((16 * 1024 * 1024)) mp-mapped
L=("$(layer_json "$W/read.safetensors" application/vnd.cncf.model.weight.v1.raw "$(fp read.safetensors)")"
	"$(layer_json "$W/mapped.safetensors" application/vnd.cncf.model.weight.v1.raw "$(fp mapped.safetensors)")")
model_push mp/mapped v1 application/vnd.cncf.model.config.v1+json "$W/mpconfig.json" \
	application/vnd.cncf.model.manifest.v1+json "${L[@]}" >/dev/null || bail "push mp/mapped:v1"
OCIFS_CACHE=$TESTDIR/cache.mapped mount_ocifs "$REG" "$M" -o ro || bail "mount for mappings"
A=$M/mp/mapped/v1
S=$M/.ocifs/stats.json
reads() { jq -r .read_requests "$S"; }
# touch_file HOW FILE: read FILE 4 KiB at a time (read) or map it and touch a byte
# of each page, forward (map); prints the sha256 of what it saw
touch_file() {
	python3 - "$@" <<'PY'
import hashlib, mmap, os, sys
how, path = sys.argv[1], sys.argv[2]
h = hashlib.sha256()
with open(path, "rb", buffering=0) as f:
    if how == "read":
        while True:
            b = f.read(4096)
            if not b:
                break
            h.update(b)
    else:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        for off in range(0, len(m), 4096):
            m[off]  # the fault
        h.update(m[:])
        m.close()
print(h.hexdigest())
PY
}
r0=$(reads)
check_eq "read() 4 KiB at a time: the bytes" "$(sha256_hex "$W/read.safetensors")" \
	"$(touch_file read "$A/read.safetensors")"
r1=$(reads)
check_eq "a mapping touched a page at a time, forward: the bytes" \
	"$(sha256_hex "$W/mapped.safetensors")" "$(touch_file map "$A/mapped.safetensors")"
r2=$(reads)
nread=$((r1 - r0)) nmap=$((r2 - r1))
diag "read requests: $nread for read(), $nmap for the mapping (4096 pages each)"
check "the mapping's 4096 page faults came as at most 128 reads (128 KiB or more each): $nmap" \
	test "$nmap" -ge 1 -a "$nmap" -le 128
check "the mapping took no more than twice as many reads as read() did ($nmap, $nread)" \
	test "$nmap" -le $((2 * nread + 8))
umount_ocifs "$M"

# ---- ModelPack tar layers, unpacked in place as modctl extracts them (entries
# name their full paths), beside a raw layer; .tar, .tar+gzip and .tar+zstd
REPO=mp/tars
printf '{"v": 1}\n' >"$W/vocab.json"
printf 'a b\n' >"$W/merges.txt"
make_random_file "$W/t-model.safetensors" $((24 * 1024 * 1024 + 3)) mp-t
printf 'print("a")\n' >"$W/a.py"
printf '# guide\n' >"$W/guide.md"
printf '{"x": 1}\n' >"$W/train.jsonl"
mktar "$W/tok.tar" none "tokenizer/vocab.json=$W/vocab.json" "tokenizer/merges.txt=$W/merges.txt" ||
	bail "tar"
mktar "$W/model.tar" none "model.safetensors=$W/t-model.safetensors" || bail "tar"
mktar "$W/code.tar.gz" gzip "scripts/" "scripts/a.py:755=$W/a.py" "scripts/link@a.py" \
	"scripts/.wh.keep=$W/a.py" "scripts/suid:6755=$W/a.py" || bail "tar"
mktar "$W/docs.tar.zst" zstd "docs/guide.md=$W/guide.md" || bail "tar"
L=()
L+=("$(layer_json "$W/tok.tar" application/vnd.cncf.model.weight.config.v1.tar "$(fp tokenizer)")")
L+=("$(layer_json "$W/model.tar" application/vnd.cncf.model.weight.v1.tar \
	"$(jq -n -c --arg m "$(meta model.safetensors 420 2025-04-22T15:07:13Z 0 "$(stat -c %s "$W/t-model.safetensors")")" \
		'{"org.cncf.model.filepath": "model.safetensors", "org.cncf.model.file.metadata+json": $m}')")")
L+=("$(layer_json "$W/code.tar.gz" application/vnd.cncf.model.code.v1.tar+gzip "$(fp scripts)")")
L+=("$(layer_json "$W/docs.tar.zst" application/vnd.cncf.model.doc.v1.tar+zstd "$(fp docs)")")
L+=("$(layer_json "$W/train.jsonl" application/vnd.cncf.model.dataset.v1.raw \
	"$(jq -n -c --arg m "$(meta train.jsonl 3565 2024-01-02T03:04:05Z)" \
		'{"org.cncf.model.filepath": "data/train.jsonl", "org.cncf.model.file.metadata+json": $m}')")")
model_push mp/tars v1 application/vnd.cncf.model.config.v1+json "$W/mpconfig.json" \
	application/vnd.cncf.model.manifest.v1+json "${L[@]}" >/dev/null || bail "push mp/tars:v1"
mount_ocifs "$REG" "$M" -o ro || bail "mount for tar layers"
T=$M/mp/tars/v1
check_ls "tar layers unpacked at the root, beside a raw layer's file" "$T" \
	tokenizer model.safetensors scripts docs data
check_ls "tokenizer/ from a .tar layer" "$T/tokenizer" merges.txt vocab.json
check_same "tokenizer/vocab.json bytes (.tar)" "$W/vocab.json" "$T/tokenizer/vocab.json"
MHEX=$(sha256_hex "$W/model.tar")
head -c 4096 "$T/model.safetensors" >"$W/t-head"
check_same "model.safetensors: its first 4 KiB (a .tar of one file)" \
	<(head -c 4096 "$W/t-model.safetensors") "$W/t-head"
pct=$(getfattr --absolute-names --only-values -n user.ocifs.cached "$T/.oci/blobs/sha256/$MHEX" 2>&1)
check "a .tar of one file, as its annotations say: listed and read from without the whole archive ($pct% of 24 MiB)" \
	test "$pct" -lt 50
check_same "model.safetensors bytes (a .tar of one file)" "$W/t-model.safetensors" "$T/model.safetensors"
check_eq "read to its end: the whole archive verified" 100 \
	"$(getfattr --absolute-names --only-values -n user.ocifs.cached "$T/.oci/blobs/sha256/$MHEX" 2>&1)"
check_same "scripts/a.py bytes (.tar+gzip)" "$W/a.py" "$T/scripts/a.py"
check_same "docs/guide.md bytes (.tar+zstd)" "$W/guide.md" "$T/docs/guide.md"
check_same "data/train.jsonl bytes (raw, beside them)" "$W/train.jsonl" "$T/data/train.jsonl"
check_eq "a tar entry's mode is its own (0755)" 755 "$(stat -c %a "$T/scripts/a.py")"
check_eq "a tar entry's owner is the mount's, not the archive's 1000:0" "$(id -u):$(id -g)" \
	"$(stat -c %u:%g "$T/scripts/a.py")"
check_eq "a tar entry's mtime is its own" 1700000000 "$(stat -c %Y "$T/tokenizer/vocab.json")"
check_ls "a symlink is left out (modctl extracts files and directories); .wh. is a plain name" \
	"$T/scripts" a.py .wh.keep suid
check_eq "a tar entry's set-id bits are dropped (06755 shows 0755)" 755 "$(stat -c %a "$T/scripts/suid")"
check_eq "metadata's set-id bits are dropped (3565 is 06755: 0555 on a ro mount)" 555 \
	"$(stat -c %a "$T/data/train.jsonl")"
check "the log says the symlink was left out" grep -qF 'scripts/link" is not a regular file or a directory' "$OCIFS_LOG"
check_eq "the root keeps the artifact's mode" 555 "$(stat -c %a "$T")"
umount_ocifs "$M"

# a tar of one file whose blob does not hash to its digest (a byte of its end
# changed in the registry's storage): the file's first bytes read, and a read
# to its end fails with EIO, as for any blob
# (the file ends chunks before the archive does: the end of the archive is
# fetched and verified all the same)
REPO=mp/tamper
make_random_file "$W/tamper.bin" $((24 * 1024 * 1024 - 512 - 600)) mp-tamper
mktar "$W/tamper.tar" none "model.safetensors=$W/tamper.bin" || bail "tar"
# zero blocks past the archive's end (tar's blocking), 2 MiB of them: no read of the file nears them
head -c $((2 * 1024 * 1024)) /dev/zero >>"$W/tamper.tar"
L=("$(layer_json "$W/tamper.tar" application/vnd.cncf.model.weight.v1.tar \
	"$(jq -n -c --arg m "$(meta model.safetensors 420 2025-04-22T15:07:13Z 0 "$(stat -c %s "$W/tamper.bin")")" \
		'{"org.cncf.model.filepath": "model.safetensors", "org.cncf.model.file.metadata+json": $m}')")")
model_push mp/tamper v1 application/vnd.cncf.model.config.v1+json "$W/mpconfig.json" \
	application/vnd.cncf.model.manifest.v1+json "${L[@]}" >/dev/null || bail "push mp/tamper:v1"
BP=$(blob_path "sha256:$(sha256_hex "$W/tamper.tar")")
printf 'X' | dd of="$BP" bs=1 seek=$(($(stat -c %s "$BP") - 1)) conv=notrunc status=none
OCIFS_CACHE=$TESTDIR/cache.tamper mount_ocifs "$REG" "$M" -o ro || bail "mount for a tampered tar"
check_same "a tampered tar of one file: its first 4 KiB read" <(head -c 4096 "$W/tamper.bin") \
	<(head -c 4096 "$M/mp/tamper/v1/model.safetensors")
check_err "a tampered tar of one file: a read of its last 4 KiB alone fails with EIO" \
	"Input/output error" dd if="$M/mp/tamper/v1/model.safetensors" of=/dev/null bs=4096 \
	skip=$(($(stat -c %s "$W/tamper.bin") / 4096)) status=none
check_err "a tampered tar of one file: a read to its end fails with EIO" "Input/output error" \
	cat "$M/mp/tamper/v1/model.safetensors"
umount_ocifs "$M"

# a tar whose annotations say it holds one file but that holds two: read whole, both shown
REPO=mp/two
mktar "$W/two.tar" none "model.safetensors=$W/vocab.json" "extra.bin=$W/merges.txt" || bail "tar"
L=("$(layer_json "$W/two.tar" application/vnd.cncf.model.weight.v1.tar \
	"$(jq -n -c --arg m "$(jq -n -c --argjson s "$(stat -c %s "$W/vocab.json")" \
		'{name: "model.safetensors", mode: 420, size: $s, mtime: "2025-04-22T15:07:13Z", typeflag: 0}')" \
		'{"org.cncf.model.filepath": "model.safetensors", "org.cncf.model.file.metadata+json": $m}')")")
model_push mp/two v1 application/vnd.cncf.model.config.v1+json "$W/mpconfig.json" \
	application/vnd.cncf.model.manifest.v1+json "${L[@]}" >/dev/null || bail "push mp/two:v1"
mount_ocifs "$REG" "$M" -o ro || bail "mount for a tar of two"
check_ls "a tar said to hold one file that holds two: both shown" "$M/mp/two/v1" extra.bin model.safetensors
check_same "and they read right" "$W/merges.txt" "$M/mp/two/v1/extra.bin"
check "the log says it does not hold just what its annotations say" \
	grep -qF 'does not hold just model.safetensors, as its annotations say: the whole layer is read' "$OCIFS_LOG"
umount_ocifs "$M"

# a tar layer with an entry outside the artifact: not unpacked, logged; the others are
REPO=mp/evil
printf 'evil\n' >"$W/evil"
mktar "$W/evil.tar" none "ok.txt=$W/evil" "../evil=$W/evil" || bail "tar"
L=()
L+=("$(layer_json "$W/tok.tar" application/vnd.cncf.model.weight.config.v1.tar "$(fp tokenizer)")")
L+=("$(layer_json "$W/evil.tar" application/vnd.cncf.model.code.v1.tar "$(fp code)")")
model_push mp/evil v1 application/vnd.cncf.model.config.v1+json "$W/mpconfig.json" \
	application/vnd.cncf.model.manifest.v1+json "${L[@]}" >/dev/null || bail "push mp/evil:v1"
mount_ocifs "$REG" "$M" -o ro || bail "mount for an escaping tar"
E=$M/mp/evil/v1
check_ls "a tar layer with an entry outside: not unpacked, the other layer is" "$E" tokenizer
check "the log says its entry is outside the artifact and where its archive is" \
	grep -qF "entry \"../evil\" is outside the artifact: the layer is not unpacked; its archive is .oci/blobs/sha256/$(sha256_hex "$W/evil.tar")" "$OCIFS_LOG"
check_same "its archive is under .oci/blobs" "$W/evil.tar" "$E/.oci/blobs/sha256/$(sha256_hex "$W/evil.tar")"
check_fail "nothing escaped: mp/evil/evil does not exist" test -e "$M/mp/evil/evil"
umount_ocifs "$M"

# ---- bad paths and metadata: logged, shown as sha256-<hex>, nothing outside the artifact
REPO=mp/bad
for n in abs dotdot inner dup1 dup2 file sub badjson dirflag; do
	printf 'layer %s\n' "$n" >"$W/bad-$n"
done
hexof() { sha256_hex "$W/bad-$1"; }
WT=application/vnd.cncf.model.weight.v1.raw
L=()
L+=("$(layer_json "$W/bad-abs" $WT "$(fp /etc/ocifs-model-escape)")")
L+=("$(layer_json "$W/bad-dotdot" $WT "$(fp ../../ocifs-model-escape)")")
L+=("$(layer_json "$W/bad-inner" $WT "$(fp 'a/../../b')")")
L+=("$(layer_json "$W/bad-dup1" $WT "$(fp dup.bin)")")
L+=("$(layer_json "$W/bad-dup2" $WT "$(fp dup.bin)")")
L+=("$(layer_json "$W/bad-file" $WT "$(fp x)")")
L+=("$(layer_json "$W/bad-sub" $WT "$(fp x/y)")")
L+=("$(layer_json "$W/bad-badjson" $WT \
	'{"org.cncf.model.filepath": "badjson", "org.cncf.model.file.metadata+json": "{not json"}')")
L+=("$(layer_json "$W/bad-dirflag" $WT "$(jq -n -c --arg m "$(meta d 511 2024-01-02T03:04:05Z 5)" \
	'{"org.cncf.model.filepath": "dirflag", "org.cncf.model.file.metadata+json": $m}')")")
model_push mp/bad v1 application/vnd.cncf.model.config.v1+json "$W/mpconfig.json" \
	application/vnd.cncf.model.manifest.v1+json "${L[@]}" >/dev/null || bail "push mp/bad:v1"
mount_ocifs "$REG" "$M" -o ro || bail "mount for bad paths"
B=$M/mp/bad/v1
check_ls "bad paths: each unsafe or taken one under sha256-<hex>" "$B" \
	"sha256-$(hexof abs)" "sha256-$(hexof dotdot)" "sha256-$(hexof inner)" dup.bin \
	"sha256-$(hexof dup2)" x "sha256-$(hexof sub)" badjson dirflag
check_same "an absolute filepath: the bytes under its fallback name" "$W/bad-abs" "$B/sha256-$(hexof abs)"
check_same "a .. filepath: the bytes under its fallback name" "$W/bad-dotdot" "$B/sha256-$(hexof dotdot)"
check_same "a taken filepath: the first layer keeps it" "$W/bad-dup1" "$B/dup.bin"
check_same "a taken filepath: the second under its fallback name" "$W/bad-dup2" "$B/sha256-$(hexof dup2)"
check_same "a file where another needs a directory: the first keeps x" "$W/bad-file" "$B/x"
check_fail "nothing escaped: /etc/ocifs-model-escape does not exist" test -e /etc/ocifs-model-escape
check "the log names the absolute path as unsafe" \
	grep -qF 'path "/etc/ocifs-model-escape" is unsafe' "$OCIFS_LOG"
check "the log names the .. path as unsafe" grep -qF 'path "../../ocifs-model-escape" is unsafe' "$OCIFS_LOG"
check "the log says dup.bin clashes" grep -qF 'path "dup.bin" clashes' "$OCIFS_LOG"
check "the log says x/y clashes" grep -qF 'path "x/y" clashes' "$OCIFS_LOG"
check "metadata that is not JSON: a log line" grep -qF 'file metadata is not a JSON object' "$OCIFS_LOG"
check_same "metadata that is not JSON: the file still reads" "$W/bad-badjson" "$B/badjson"
check_eq "metadata that is not JSON: the mount's mode" 444 "$(stat -c %a "$B/badjson")"
check "metadata of a directory for a raw layer: a log line" grep -qF 'typeflag 5, not a regular file' "$OCIFS_LOG"
check_eq "metadata of a directory for a raw layer: not used" "444 $(stat -c %Y "$B")" \
	"$(stat -c '%a %Y' "$B/dirflag")"
check "the daemon is alive" daemon_alive "$M"
umount_ocifs "$M"

# ---- Ollama: a Docker schema 2 manifest, names from the media types
REPO=library/llava
OT=application/vnd.ollama.image
make_random_file "$W/o-model" 500000 o-model
for n in proj1 proj2 template params license1 license2 foo; do printf 'ollama %s\n' "$n" >"$W/o-$n"; done
make_random_file "$W/o-tensor" 4096 o-tensor
printf '{"model_format": "gguf"}' >"$W/o-config.json"
L=()
L+=("$(layer_json "$W/o-model" $OT.model)")
L+=("$(layer_json "$W/o-proj1" $OT.projector)")
L+=("$(layer_json "$W/o-proj2" $OT.projector)")
L+=("$(layer_json "$W/o-template" $OT.template)")
L+=("$(layer_json "$W/o-params" $OT.params)")
L+=("$(layer_json "$W/o-license1" $OT.license)")
L+=("$(layer_json "$W/o-license2" $OT.license)")
L+=("$(layer_json "$W/o-tensor" $OT.tensor null '{"name": "text_encoder/w.safetensors"}')")
L+=("$(layer_json "$W/o-foo" $OT.foo)")
cdg=$(push_blob "$REPO" "$W/o-config.json") || bail "push ollama config"
jq -n -c --arg c "$cdg" --argjson cs "$(stat -c %s "$W/o-config.json")" \
	--argjson l "$(printf '%s\n' "${L[@]}" | jq -s -c .)" \
	'{schemaVersion: 2, mediaType: "application/vnd.docker.distribution.manifest.v2+json",
	  config: {mediaType: "application/vnd.docker.container.image.v1+json", digest: $c, size: $cs},
	  layers: $l}' >"$W/o-manifest.json"
push_manifest "$REPO" 7b "$W/o-manifest.json" >/dev/null || bail "push library/llava:7b"
mount_ocifs "$REG" "$M" -o ro || bail "mount for ollama"
O=$M/library/llava/7b
check_ls "Ollama: names from the media types, numbered where a type repeats" "$O" \
	model.gguf projector.gguf projector-2.gguf template params.json license license-2 \
	text_encoder foo
check_same "Ollama: model.gguf bytes" "$W/o-model" "$O/model.gguf"
check_same "Ollama: projector-2.gguf is the second projector" "$W/o-proj2" "$O/projector-2.gguf"
check_same "Ollama: license-2 is the second license" "$W/o-license2" "$O/license-2"
check_same "Ollama: a layer's own name (with /)" "$W/o-tensor" "$O/text_encoder/w.safetensors"
umount_ocifs "$M"

# ---- KitOps: tar layers unpacked in place (kit 0.5 and later name full paths),
# matched to their Kitfile entries by digest; the Kitfile shown
REPO=kit/demo
KT=application/vnd.kitops.modelkit
printf 'gguf bytes\n' >"$W/k-model"
printf 'readme\n' >"$W/k-readme"
printf 'print(1)\n' >"$W/k-code"
mktar "$W/k-model.tar" none "models/" "models/m.gguf=$W/k-model" || bail "tar"
mktar "$W/k-code.tar.gz" gzip "src/" "src/main.py=$W/k-code" || bail "tar"
mktar "$W/k-docs.tar" none "README.md=$W/k-readme" || bail "tar"
mdg=$(digest_of "$W/k-model.tar")
cdg=$(digest_of "$W/k-code.tar.gz")
ddg=$(digest_of "$W/k-docs.tar")
jq -n -c --arg m "$mdg" --arg d "$ddg" --arg c "$cdg" \
	'{manifestVersion: "1.0.0", package: {name: "demo", authors: ["Ann: Example"]},
	  model: {name: "m", path: "models/m.gguf", digest: $m, diffId: $m, parameters: {temp: 0.5}},
	  code: [{path: "src", description: "entry point", digest: $c, diffId: $c}],
	  docs: [{path: "README.md", digest: $d, diffId: $d}]}' >"$W/kitfile.json"
L=()
L+=("$(layer_json "$W/k-model.tar" $KT.model.v1.tar)")
L+=("$(layer_json "$W/k-code.tar.gz" $KT.code.v1.tar+gzip)")
L+=("$(layer_json "$W/k-docs.tar" $KT.docs.v1.tar)")
model_push kit/demo v1 $KT.config.v1+json "$W/kitfile.json" "" "${L[@]}" >/dev/null ||
	bail "push kit/demo:v1"
mount_ocifs "$REG" "$M" -o ro || bail "mount for kitops"
K=$M/kit/demo/v1
check_ls "KitOps: the layers unpacked as kit unpack writes them, and the Kitfile" "$K" \
	Kitfile README.md models src
check_same "KitOps: models/m.gguf bytes" "$W/k-model" "$K/models/m.gguf"
check_same "KitOps: src/main.py bytes (.tar+gzip)" "$W/k-code" "$K/src/main.py"
check_same "KitOps: README.md bytes" "$W/k-readme" "$K/README.md"
check "KitOps: the Kitfile is at the root" test -f "$K/Kitfile"
check "KitOps: Kitfile has manifestVersion" grep -qx 'manifestVersion: 1.0.0' "$K/Kitfile"
check "KitOps: Kitfile has the model's path" grep -qx '  path: models/m.gguf' "$K/Kitfile"
check "KitOps: Kitfile has the code list" grep -qx -- '  - path: src' "$K/Kitfile"
check_fail "KitOps: Kitfile has no layer digests (kit unpack leaves them out)" grep -q 'digest\|diffId' "$K/Kitfile"
if command -v python3 >/dev/null && python3 -c 'import yaml' 2>/dev/null; then
	check_eq "KitOps: the Kitfile reads back as the config without digests (YAML)" \
		"$(jq -S -c 'del(.. | .digest?, .diffId?)' "$W/kitfile.json")" \
		"$(python3 -c 'import sys, json, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1])), sort_keys=True, separators=(",", ":")))' "$K/Kitfile")"
fi
umount_ocifs "$M"

# ---- KitOps before 0.5: no digests in the config, layers matched to entries
# by their place among their kind, and each tar's entries named relative to
# its Kitfile path's parent, where kit unpack extracts them (made with
# MkdirAll: 0755)
REPO=kit/old
make_random_file "$W/o-gguf" $((300 * 1024 + 7)) kit-old
printf 'print("old")\n' >"$W/o-a.py"
printf 'x,y\n1,2\n' >"$W/o-train.csv"
printf '# an old kit\n' >"$W/o-readme"
mktar "$W/o-model.tar" none "model.gguf=$W/o-gguf" || bail "tar"
mktar "$W/o-code.tar.gz" gzip "src/" "src/a.py=$W/o-a.py" || bail "tar"
mktar "$W/o-data.tar" none "train.csv=$W/o-train.csv" || bail "tar"
mktar "$W/o-docs.tar" none "README.md=$W/o-readme" || bail "tar"
jq -n -c '{manifestVersion: "1.0.0", package: {name: "old"},
	  model: {name: "llama", path: "models/llama/model.gguf"},
	  code: [{path: "src"}], datasets: [{name: "train", path: "data/train.csv"}],
	  docs: [{path: "README.md"}]}' >"$W/o-kitfile.json"
# old_layers TAR...: the layer descriptors of a kit's model, code, dataset and docs tars
old_layers() {
	layer_json "$1" $KT.model.v1.tar && layer_json "$2" $KT.code.v1.tar+gzip &&
		layer_json "$3" $KT.dataset.v1.tar && layer_json "$4" $KT.docs.v1.tar
}
O_TARS=("$W/o-model.tar" "$W/o-code.tar.gz" "$W/o-data.tar" "$W/o-docs.tar")
CREATED=2024-03-04T05:06:07Z
export MP_ANNOTATIONS
MP_ANNOTATIONS=$(jq -n -c --arg t $CREATED '{"org.opencontainers.image.created": $t}')
mapfile -t L < <(old_layers "${O_TARS[@]}") && [ ${#L[@]} = 4 ] || bail "push the old kit's layers"
model_push kit/old v1 $KT.config.v1+json "$W/o-kitfile.json" "" "${L[@]}" >/dev/null ||
	bail "push kit/old:v1"

# the same kit as kit 0.5 and later pack it: digests in the config, tars
# naming full paths
REPO=kit/new
mktar "$W/n-model.tar" none "models/" "models/llama/" "models/llama/model.gguf=$W/o-gguf" || bail "tar"
mktar "$W/n-data.tar" none "data/" "data/train.csv=$W/o-train.csv" || bail "tar"
N_TARS=("$W/n-model.tar" "$W/o-code.tar.gz" "$W/n-data.tar" "$W/o-docs.tar")
jq -c --arg m "$(digest_of "$W/n-model.tar")" --arg c "$(digest_of "$W/o-code.tar.gz")" \
	--arg d "$(digest_of "$W/n-data.tar")" --arg r "$(digest_of "$W/o-docs.tar")" \
	'.model += {digest: $m, diffId: $m} | .code[0] += {digest: $c, diffId: $c}
	 | .datasets[0] += {digest: $d, diffId: $d} | .docs[0] += {digest: $r, diffId: $r}' \
	"$W/o-kitfile.json" >"$W/n-kitfile.json"
mapfile -t L < <(old_layers "${N_TARS[@]}") && [ ${#L[@]} = 4 ] || bail "push the new kit's layers"
model_push kit/new v1 $KT.config.v1+json "$W/n-kitfile.json" "" "${L[@]}" >/dev/null ||
	bail "push kit/new:v1"

# hostile paths, from the old kit: the model's parent "../../etc", the
# dataset's absolute: those layers unpack at the root, and the log says so
REPO=kit/old-evil
jq -c '.model.path = "../../etc/x.gguf" | .datasets[0].path = "/abs/train.csv"' \
	"$W/o-kitfile.json" >"$W/e-kitfile.json"
mapfile -t L < <(old_layers "${O_TARS[@]}") && [ ${#L[@]} = 4 ] || bail "push the evil kit's layers"
model_push kit/old-evil v1 $KT.config.v1+json "$W/e-kitfile.json" "" "${L[@]}" >/dev/null ||
	bail "push kit/old-evil:v1"

# clashes, from the old kit: a layer titled "data" is a file where the
# dataset's parent needs a directory (the dataset unpacks at the root
# instead); the code's tar holds a file "models" where the model's parent
# makes a directory up (the directory stays, the file is left out)
REPO=kit/old-clash
printf 'a file named models\n' >"$W/c-models"
printf 'a file titled data\n' >"$W/c-data"
mktar "$W/c-code.tar.gz" gzip "src/" "src/a.py=$W/o-a.py" "models=$W/c-models" || bail "tar"
mapfile -t L < <(old_layers "$W/o-model.tar" "$W/c-code.tar.gz" "$W/o-data.tar" "$W/o-docs.tar") &&
	[ ${#L[@]} = 4 ] || bail "push the clashing kit's layers"
L+=("$(layer_json "$W/c-data" application/octet-stream '{"org.opencontainers.image.title": "data"}')")
model_push kit/old-clash v1 $KT.config.v1+json "$W/o-kitfile.json" "" "${L[@]}" >/dev/null ||
	bail "push kit/old-clash:v1"

# refused, from the old kit: the model's tar holds an entry that leaves the
# artifact, so it is not unpacked, and its parent models/llama is made up
# only until that is known; the code at "." (kit init's): its parent is
# the root, and its tar's file "models" is shown once the model is refused
REPO=kit/old-refused
mktar "$W/r-model.tar" none "model.gguf=$W/o-gguf" "../../../ocifs-kit-escape=$W/o-readme" || bail "tar"
jq -c '.code[0].path = "."' "$W/o-kitfile.json" >"$W/r-kitfile.json"
mapfile -t L < <(old_layers "$W/r-model.tar" "$W/c-code.tar.gz" "$W/o-data.tar" "$W/o-docs.tar") &&
	[ ${#L[@]} = 4 ] || bail "push the refused kit's layers"
model_push kit/old-refused v1 $KT.config.v1+json "$W/r-kitfile.json" "" "${L[@]}" >/dev/null ||
	bail "push kit/old-refused:v1"
unset MP_ANNOTATIONS

mount_ocifs "$REG" "$M" -o ro || bail "mount for old kits"
K=$M/kit/old/v1
check_ls "old kit: each layer under its Kitfile path's parent, as kit unpack puts it" "$K" \
	Kitfile README.md data models src
check_ls "old kit: models/ made up for the model's parent" "$K/models" llama
check_ls "old kit: models/llama/ holds the model's tar" "$K/models/llama" model.gguf
check_ls "old kit: data/ holds the dataset's tar" "$K/data" train.csv
check_ls "old kit: src/ (a directory path: its parent is the root)" "$K/src" a.py
check_same "old kit: models/llama/model.gguf bytes" "$W/o-gguf" "$K/models/llama/model.gguf"
check_same "old kit: data/train.csv bytes" "$W/o-train.csv" "$K/data/train.csv"
check_same "old kit: src/a.py bytes (.tar+gzip)" "$W/o-a.py" "$K/src/a.py"
check_same "old kit: README.md bytes" "$W/o-readme" "$K/README.md"
check_fail "old kit: no model.gguf at the root" test -e "$K/model.gguf"
check_fail "old kit: no train.csv at the root" test -e "$K/train.csv"
T0=$(date -d $CREATED +%s)
for d in models models/llama data; do
	check_eq "old kit: $d/ made up: a directory, 0755, the artifact's time" \
		"directory 755 $T0 $T0" "$(stat -c '%F %a %Y' "$K/$d") $(stat -c %Y "$K")"
done
check "old kit: the Kitfile has the model's path" grep -qx '  path: models/llama/model.gguf' "$K/Kitfile"
# tree_sums DIR: every path under DIR with its type, and every file's sha256
tree_sums() {
	(cd "$1" && find . -mindepth 1 -printf '%y %p\n' | sort && find . -type f -exec sha256sum {} + | sort)
}
check_eq "the same kit from kit 0.5 on (digests, full paths): the same tree and bytes" \
	"$(tree_sums "$K")" "$(tree_sums "$M/kit/new/v1")"
check "kit 0.5 on: models/llama/model.gguf there" test -f "$M/kit/new/v1/models/llama/model.gguf"

E=$M/kit/old-evil/v1
check_ls "old kit, unsafe parents: those layers at the root" "$E" \
	Kitfile README.md model.gguf src train.csv
check_same "old kit, parent ../../etc: the model's bytes at the root" "$W/o-gguf" "$E/model.gguf"
check_same "old kit, an absolute parent: the dataset's bytes at the root" "$W/o-train.csv" "$E/train.csv"
check "the log names the model's layer and its unsafe path" grep -qF \
	"layer $(digest_of "$W/o-model.tar"): Kitfile path \"../../etc/x.gguf\" (a kit before 0.5, unpacked under its parent) is unsafe" \
	"$OCIFS_LOG"
check "the log names the dataset's layer and its absolute path" grep -qF \
	"layer $(digest_of "$W/o-data.tar"): Kitfile path \"/abs/train.csv\" (a kit before 0.5, unpacked under its parent) is unsafe" \
	"$OCIFS_LOG"
for x in etc kit/etc kit/old-evil/etc kit/old-evil/v1/etc kit/old-evil/v1/abs abs; do
	check_fail "nothing escaped: <mnt>/$x does not exist" test -e "$M/$x"
done
check_fail "nothing escaped: /abs does not exist" test -e /abs
check_fail "nothing escaped: /etc/x.gguf does not exist" test -e /etc/x.gguf

C=$M/kit/old-clash/v1
# the tag held open: its layers stay indexed (another test's drop_caches would
# let the kernel forget it, and the next lookup index them, and log, again)
exec 4<"$C"
# looked up before the listing: the clash is met by both
stat "$C/models" >/dev/null
check_ls "old kit, clashes: the dataset at the root, beside the file titled data" "$C" \
	Kitfile README.md data models src train.csv
check_same "old kit, clashes: data is the titled layer's file" "$W/c-data" "$C/data"
check_same "old kit, clashes: the dataset's bytes at the root" "$W/o-train.csv" "$C/train.csv"
check "the log says the dataset's parent meets a file" grep -qF \
	"layer $(digest_of "$W/o-data.tar"): unpacked under \"data\" (a kit before 0.5), it would meet the file \"data\": unpacked at the root" \
	"$OCIFS_LOG"
check_eq "old kit, clashes: models stays the model's directory" directory "$(stat -c %F "$C/models")"
check_same "old kit, clashes: models/llama/model.gguf bytes" "$W/o-gguf" "$C/models/llama/model.gguf"
check_ls "old kit, clashes: src/ from the code's tar" "$C/src" a.py
LEFT="layer $(digest_of "$W/c-code.tar.gz"): \"models\" is not a directory, where layer $(digest_of "$W/o-model.tar") is unpacked under models/llama/: left out"
check "the log says the code's file \"models\" is left out" grep -qF "$LEFT" "$OCIFS_LOG"
check_eq "the log says it once, though a lookup and a listing met it" 1 \
	"$(grep -cF "$LEFT" "$OCIFS_LOG")"
exec 4<&-

R=$M/kit/old-refused/v1
# the tag held open: its node, and what it found of its layers, outlive the forget below
exec 3<"$R"
check_fail "old kit, a model's tar with an entry outside the artifact: not unpacked" \
	test -e "$R/models/llama/model.gguf"
check "the log says the model's layer is not unpacked" grep -qF \
	"layer $(digest_of "$W/r-model.tar"): entry \"../../../ocifs-kit-escape\" is outside the artifact: the layer is not unpacked" \
	"$OCIFS_LOG"
# what the kernel holds of the tag is forgotten (SIGHUP): looked up again,
# the refused layer makes no directory up (again, should a lookup have
# brought the old entry back before its forget was answered)
models_is_file() {
	kill -HUP "$OCIFS_PID"
	[ "$(stat -c %F "$R/models")" = "regular file" ]
}
check "old kit, the model refused: models is the code's file, not a directory made up for it" \
	wait_until 10 models_is_file
check_same "old kit, the model refused: models bytes (the code's tar)" "$W/c-models" "$R/models"
check_eq "old kit, the model refused: ls -F shows the other layers as kit unpack puts them" \
	"$(printf '%s\n' Kitfile README.md data/ models src/ | sort)" "$(ls -AF "$R" | sort)"
check_same "old kit, code at \".\": src/a.py at the root" "$W/o-a.py" "$R/src/a.py"
check_fail "old kit, code at \".\": not logged as an unsafe parent" grep -qF 'Kitfile path "."' \
	"$OCIFS_LOG"
exec 3<&-
for x in ocifs-kit-escape kit/ocifs-kit-escape kit/old-refused/ocifs-kit-escape \
	kit/old-refused/v1/ocifs-kit-escape; do
	check_fail "nothing escaped: <mnt>/$x does not exist" test -e "$M/$x"
done
check "the daemon is alive" daemon_alive "$M"
umount_ocifs "$M"
finish

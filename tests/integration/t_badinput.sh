#!/bin/bash
# What a registry serves must never hurt: hostile titles, malformed and
# oversized manifests, tampered blobs, a registry that goes away.
T_TIMEOUT=${T_TIMEOUT:-540}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env timeout

registry_start bad

# ---- seed
W=$TESTDIR/w
mkdir -p "$W"
printf 'good\n' >"$W/good.txt"
printf 'ok\n' >"$W/ok.txt"
# label|title; each hostile layer gets content of its own (its own digest)
HOSTILE=(
	"absolute|/abs-evil"
	"dotdot|../escape"
	"dotdot-inside|sub/../../inside-escape"
	"empty|"
	"control-char|ctl$(printf '\001')char"
	"newline|nl$(printf '\nx')name"
	"oci|.oci"
	"oci-prefix|.oci/manifest.json"
)
args=(good.txt "$W/good.txt" sub/ok.txt "$W/ok.txt")
declare -A HDIGEST
for h in "${HOSTILE[@]}"; do
	label=${h%%|*} title=${h#*|}
	printf 'hostile %s\n' "$label" >"$W/h-$label"
	HDIGEST[$label]=$(digest_of "$W/h-$label")
	args+=("$title" "$W/h-$label")
done
DT=$(push_artifact_titled bad/titles v1 "${args[@]}") || bail "seed bad/titles:v1"
check_eq "registry holds the hostile titles" 10 "$(manifest_get bad/titles v1 | jq '.layers | length')"

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[' \
	>"$W/broken.json"
DBROKEN=$(registry_put_raw_manifest bad/json broken "$W/broken.json") || bail "store broken manifest"
cat >"$W/weird.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
 "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:zz","size":-1},
 "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:../../../../etc/passwd",
   "size":-5,"annotations":{"org.opencontainers.image.title":"evil.txt"}}]}
EOF
DWEIRD=$(registry_put_raw_manifest bad/json weird "$W/weird.json") || bail "store weird manifest"
push_artifact bad/json ok "$W" good.txt >/dev/null || bail "seed bad/json:ok"
check "registry refuses to serve the broken manifest (HTTP 500)" \
	test "$(curl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/bad/json/manifests/broken")" = 500
check "registry serves the weird manifest" manifest_get bad/json weird

# Oversized: distribution refuses to take (and to serve) manifests over
# 4 MiB, so store it on disk; and push one just under 4 MiB through the API.
printf 'x\n' >"$W/x.txt"
push_artifact big/m small "$W" x.txt >/dev/null || bail "seed big/m:small"
cp "$TESTDIR/.manifest.json" "$W/small.json"
head -c $((5 * 1024 * 1024)) /dev/zero | tr '\0' a >"$W/pad"
jq -c --rawfile p "$W/pad" '.annotations["com.example.pad"] = $p' "$W/small.json" >"$W/over.json"
if ! push_manifest big/m over "$W/over.json" >/dev/null 2>"$W/over.err"; then
	diag "registry refused the 5 MiB manifest: $(head -c 200 "$W/over.err")"
	registry_put_raw_manifest big/m over "$W/over.json" >/dev/null || bail "store oversized manifest"
fi
n=$((4 * 1024 * 1024 - $(stat -c %s "$W/small.json") - 200))
head -c "$n" /dev/zero | tr '\0' a >"$W/pad"
jq -c --rawfile p "$W/pad" '.annotations["com.example.pad"] = $p' "$W/small.json" >"$W/under.json"
DUNDER=$(push_manifest big/m under "$W/under.json") || bail "push 4 MiB - 200 B manifest"

# Tampered blobs
make_random_file "$W/victim.bin" 3000000 victim
make_random_file "$W/victim2.bin" 100000 victim2
push_artifact bad/tamper v1 "$W" good.txt victim.bin victim2.bin >/dev/null || bail "seed bad/tamper:v1"
V1=$(blob_path "$(digest_of "$W/victim.bin")")
V2=$(blob_path "$(digest_of "$W/victim2.bin")")
check "victim.bin is in the registry's storage" cmp -s "$V1" "$W/victim.bin"
cp "$V1" "$W/victim.orig"
printf 'X' | dd of="$V1" bs=1 seek=1500000 conv=notrunc status=none
truncate -s 99990 "$V2"
check_fail "registry now serves altered bytes for victim.bin" \
	bash -c "curl -fsS 'http://$REG/v2/bad/tamper/blobs/$(digest_of "$W/victim.bin")' | cmp -s - '$W/victim.bin'"

# For the registry-down part
make_random_file "$W/cached.bin" 700000 cached
make_random_file "$W/uncached.bin" 700000 uncached
DSTOP=$(push_artifact stop/art v1 "$W" cached.bin uncached.bin) || bail "seed stop/art:v1"
push_artifact stop/other v1 "$W" good.txt >/dev/null || bail "seed stop/other:v1"
push_artifact stop/deep/er/repo v1 "$W" good.txt >/dev/null || bail "seed stop/deep/er/repo:v1"
push_artifact stop/art v2 "$W" good.txt >/dev/null || bail "seed stop/art:v2"

M=$TESTDIR/mnt
# timeout=3: with the registry stopped below, each failing read gives up after 3 s of retries
mount_ocifs "$REG" "$M" -o ro,timeout=3 || bail "cannot go on without a mount"

# ---- hostile titles
A=$M/bad/titles/v1
check_ls "only the safe titles are listed" "$A" good.txt sub
check_ls "sub/ holds only ok.txt" "$A/sub" ok.txt
check_eq "good.txt reads" "good" "$(cat "$A/good.txt" 2>&1)"
check_eq "sub/ok.txt reads" "ok" "$(cat "$A/sub/ok.txt" 2>&1)"
(cd "$M/bad/titles" && find . -name '*escape*' -o -name 'abs-evil*' -o -name '*char' -o -name '*name') >"$W/found" 2>&1
check_eq "no hostile name anywhere in the tree" "" "$(cat "$W/found")"
manifest_get bad/titles v1 >"$W/titles.json"
check_same ".oci/manifest.json is the manifest, not the layer titled .oci/manifest.json" \
	"$W/titles.json" "$A/.oci/manifest.json"
check ".oci is still the control directory" test -d "$A/.oci"
check_err "control-char title cannot be looked up" "No such file or directory" \
	cat "$A/ctl$(printf '\001')char"
check_err "inside-escape (resolved past the artifact) is not there" "No such file or directory" \
	cat "$M/bad/titles/inside-escape"
check_err "escape is not in the repository dir" "No such file or directory" cat "$M/bad/titles/escape"
check_fail "nothing was written outside the mount" test -e /abs-evil
wait_until 5 grep -q "${DT#sha256:}" "$OCIFS_LOG"
mhex=${DT#sha256:}
for h in "${HOSTILE[@]}"; do
	label=${h%%|*} title=${h#*|}
	lhex=${HDIGEST[$label]#sha256:}
	marker=${title%%[[:cntrl:]]*}
	marker=${marker#/}
	marker=${marker:0:6}
	check "hostile title ($label) logged with its digest" \
		bash -c "grep -F -- \"\$1\" \"\$2\" | grep -qE \"\$3|\$4\"" _ "$marker" "$OCIFS_LOG" "$mhex" "$lhex"
done
nlines=$(grep -cE "$mhex|$(printf '%s|' "${HDIGEST[@]}" | sed 's/sha256://g; s/|$//')" "$OCIFS_LOG")
check "at least one log line per hostile title" test "$nlines" -ge "${#HOSTILE[@]}" || diag "$nlines lines for ${#HOSTILE[@]} titles"
check_fail "the log holds no raw control character from a title" grep -q "$(printf '\001')" "$OCIFS_LOG"
check "daemon alive after hostile titles" daemon_alive "$M"

# ---- malformed manifests
t0=$SECONDS
check_fail "invalid JSON manifest (registry 500): ls fails" timeout 120 ls "$M/bad/json/broken"
diag "took $((SECONDS - t0)) s"
check_fail "invalid JSON manifest by digest: ls fails" timeout 120 ls "$M/bad/json/$DBROKEN"
check_fail "nonsense manifest: evil.txt does not read" timeout 60 cat "$M/bad/json/weird/evil.txt"
check_fail "nonsense manifest: evil.txt is not listed" \
	bash -c "timeout 60 ls '$M/bad/json/weird' 2>/dev/null | grep -q evil"
check_fail "nonsense manifest by digest: evil.txt does not read" timeout 60 cat "$M/bad/json/$DWEIRD/evil.txt"
check_eq "a good tag in the same repository reads" "good" "$(cat "$M/bad/json/ok/good.txt" 2>&1)"
check_fail "manifest over 4 MiB: ls fails" timeout 120 ls "$M/big/m/over"
check_fail "manifest over 4 MiB: x.txt does not read" timeout 120 cat "$M/big/m/over/x.txt"
check_ls "manifest just under 4 MiB: listed" "$M/big/m/under" x.txt
check_eq "manifest just under 4 MiB: x.txt reads" "x" "$(cat "$M/big/m/under/x.txt" 2>&1)"
check_same "manifest just under 4 MiB: .oci/manifest.json" "$W/under.json" "$M/big/m/under/.oci/manifest.json"
check_eq "manifest just under 4 MiB: .oci/digest" "$DUNDER" "$(cat "$M/big/m/under/.oci/digest" 2>&1)"
check "daemon alive after malformed manifests" daemon_alive "$M"

# ---- tampered blobs
T=$M/bad/tamper/v1
check_eq "tampered blob: size still from the descriptor" 3000000 "$(stat -c %s "$T/victim.bin" 2>&1)"
check_err "tampered blob: cat fails with EIO" "Input/output error" \
	timeout 120 bash -c "cat '$T/victim.bin' >'$W/victim.got'"
check_err "tampered blob: cp fails with EIO" "Input/output error" timeout 120 cp "$T/victim.bin" "$W/victim.cp"
check_err "truncated blob: cat fails with EIO" "Input/output error" \
	timeout 120 bash -c "cat '$T/victim2.bin' >'$W/victim2.got'"
check "tampered blob: the log names its digest" \
	wait_until 5 grep -q "$(sha256_hex "$W/victim.bin")" "$OCIFS_LOG"
check "truncated blob: the log names its digest" \
	wait_until 5 grep -q "$(sha256_hex "$W/victim2.bin")" "$OCIFS_LOG"
check_fail "tampered blob: not kept in the cache" test -e "$CACHE/blobs/sha256/$(sha256_hex "$W/victim.bin")"
check_eq "good.txt in the same artifact reads" "good" "$(cat "$T/good.txt" 2>&1)"
check "daemon alive after tampered blobs" daemon_alive "$M"
cp "$W/victim.orig" "$V1"
check_eq "once the registry is fixed, victim.bin reads right" "$(sha256_hex "$W/victim.bin")" \
	"$(timeout 120 cat "$T/victim.bin" | sha256sum | cut -d' ' -f1)"

# ---- a descriptor that lies about its size by petabytes
printf 'tiny' >"$W/tiny.txt"
DT=$(push_blob bad/huge "$W/tiny.txt") || bail "push tiny blob"
printf '{}' >"$W/empty.json"
DE=$(push_blob bad/huge "$W/empty.json") || bail "push empty config"
jq -n --arg dt "$DT" --arg de "$DE" '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
	config: {mediaType: "application/vnd.oci.empty.v1+json", digest: $de, size: 2},
	layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $dt, size: 1125899906842624,
		annotations: {"org.opencontainers.image.title": "huge.bin"}}]}' >"$W/huge.json"
if push_manifest bad/huge v1 "$W/huge.json" >/dev/null; then
	check_eq "petabyte descriptor: size shown as the descriptor says" 1125899906842624 \
		"$(stat -c %s "$M/bad/huge/v1/huge.bin" 2>&1)"
	check_err "petabyte descriptor: reading fails with EIO" "Input/output error" \
		timeout 60 head -c 10 "$M/bad/huge/v1/huge.bin"
	check "petabyte descriptor: the log says the size was refused" \
		wait_until 5 grep -q "size 1125899906842624 refused" "$OCIFS_LOG"
	check "daemon alive after a petabyte descriptor" daemon_alive "$M"
else
	not_ok "the registry took no manifest with a petabyte layer size"
fi

# ---- the registry goes away
S=$M/stop/art
check_same "cached.bin reads (by tag)" "$W/cached.bin" "$S/v1/cached.bin"
check_same "cached.bin reads (by digest)" "$W/cached.bin" "$S/$DSTOP/cached.bin"
check_ls "stop/ lists art, deep and other" "$M/stop" art deep other
manifest_get stop/art v1 >"$W/stop.json"
check_same ".oci/manifest.json of stop/art:v1" "$W/stop.json" "$S/v1/.oci/manifest.json"
registry_stop
check_fail "registry is down" curl -fsS -o /dev/null "http://$REG/v2/"
check_same "registry down: cached file still reads by tag" "$W/cached.bin" "$S/v1/cached.bin"
check_same "registry down: cached file still reads by digest" "$W/cached.bin" "$S/$DSTOP/cached.bin"
check_same "registry down: .oci/manifest.json still reads" "$W/stop.json" "$S/v1/.oci/manifest.json"
t0=$SECONDS
check_err "registry down: uncached file fails with EIO" "Input/output error" \
	timeout 150 cat "$S/v1/uncached.bin"
diag "took $((SECONDS - t0)) s"
t0=$SECONDS
check_err "registry down: a repository never listed fails with EIO" "Input/output error" \
	timeout 150 ls "$M/stop/deep/er/repo"
diag "took $((SECONDS - t0)) s"
t0=$SECONDS
check_err "registry down: a tag never read fails with EIO" "Input/output error" \
	timeout 150 ls "$M/stop/art/v2"
diag "took $((SECONDS - t0)) s"
check "daemon alive with the registry down" daemon_alive "$M"
umount_ocifs "$M"

HEX=$(sha256_hex "$W/cached.bin")
check_same "cache_dir holds blobs/sha256/<hex> of the file read" "$W/cached.bin" "$CACHE/blobs/sha256/$HEX"
mkdir -p "$TESTDIR/down"
timeout 150 "$OCIFS" -f -o "cache_dir=$CACHE,ro" "$REG" "$TESTDIR/down" >"$W/down.out" 2>&1 </dev/null &
dpid=$!
_LIB_DAEMON_PIDS+=("$dpid")
wait "$dpid"
check "registry down: mounting it fails" test $? != 0
check_fail "registry down: nothing mounted" mountpoint -q "$TESTDIR/down"

# Back up with the storage of cached.bin altered: a new mount reads the
# cached bytes, not the registry's.
C=$(blob_path "$(digest_of "$W/cached.bin")")
printf 'XXXX' | dd of="$C" bs=1 seek=1000 conv=notrunc status=none
registry_restart || bail "restart registry"
check_fail "registry now serves altered bytes for cached.bin" \
	bash -c "curl -fsS 'http://$REG/v2/stop/art/blobs/$(digest_of "$W/cached.bin")' | cmp -s - '$W/cached.bin'"
M=$TESTDIR/mnt2
if mount_ocifs "$REG" "$M" -o ro; then
	check_same "after remount cached.bin comes from the cache (right bytes)" "$W/cached.bin" "$M/stop/art/v1/cached.bin"
	check_same "after remount uncached.bin reads from the registry" "$W/uncached.bin" "$M/stop/art/v1/uncached.bin"
	umount_ocifs "$M"
fi

finish

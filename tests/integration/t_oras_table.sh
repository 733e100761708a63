#!/bin/bash
# The README's table of oras commands and their ocifs equivalents: each row's
# command is taken from README.md as written, run against a mount of a real
# registry, and its result compared with what the registry holds (what that
# oras command would print or do), read with curl.
T_TIMEOUT=${T_TIMEOUT:-180}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env jq curl

registry_start orastable
W=$TESTDIR/seed
mkdir -p "$W"
echo "Hello from ocifs" >"$W/hello.txt"
V1=$(push_artifact demo/hello v1 "$W" hello.txt) || bail "seed demo/hello:v1"
push_artifact demo/other v1 "$W" hello.txt >/dev/null || bail "seed demo/other:v1"
M=$TESTDIR/mnt
mount_ocifs "$REG" "$M" -o push_delay=3600 || bail "mount"

WORK=$TESTDIR/work
mkdir -p "$WORK"
echo "pushed by cp" >"$WORK/a.txt"
echo "signature" >"$WORK/sig.txt"
HEX=$(manifest_get demo/hello v1 | jq -r '.layers[0].digest' | sed 's/^sha256://')

mapfile -t rows < <(grep '^| `oras ' "$srcdir/README.md")
check "the README has the table (10 rows)" test "${#rows[@]}" -ge 10
for row in "${rows[@]}"; do
	oras=$(cut -d'|' -f2 <<<"$row" | sed 's/^ *`//; s/` *$//')
	cmd=$(cut -d'|' -f3- <<<"$row" | sed 's/ *|$//; s/^ *`//; s/`$//')
	verb=$(awk '{ print ($2 == "repo" || $2 == "manifest" || $2 == "blob") ? $2 " " $3 : $2 }' <<<"$oras")
	cmd=${cmd//\/mnt\/reg/$M}
	cmd=${cmd//<hex>/$HEX}
	out=$( (cd "$WORK" && bash -c "$cmd") 2>&1)
	rc=$?
	check_eq "$oras: \`${cmd//$TESTDIR/T}\` exits 0" 0 "$rc" || diag "$out"
	case $verb in
	"repo ls")
		check_eq "$verb: the repositories" \
			"$(reg_curl _catalog | jq -r '.repositories[]' | sed -n 's|^demo/||p' | sort | xargs)" \
			"$(xargs <<<"$out")" ;;
	"repo tags")
		check_eq "$verb: the tags" \
			"$(reg_curl demo/hello/tags/list | jq -r '.tags[]' | sort | xargs)" \
			"$(xargs <<<"$out")" ;;
	resolve)
		check_eq "$verb: the digest" "$V1" "$out" ;;
	"manifest fetch")
		check_eq "$verb: the manifest's bytes" "$(manifest_get demo/hello v1)" "$out" ;;
	"blob fetch")
		check_eq "$verb: the blob's bytes" "$(blob_get demo/hello "sha256:$HEX")" "$out" ;;
	pull)
		check "$verb: the files oras pull writes" diff -r "$W" "$WORK/out" ;;
	push)
		mf=$(manifest_get demo/hello v2)
		check_eq "$verb: a manifest with the file, titled" "a.txt" \
			"$(jq -r '.layers[0].annotations["org.opencontainers.image.title"]' <<<"$mf")"
		check_eq "$verb: its bytes" "pushed by cp" \
			"$(blob_get demo/hello "$(jq -r '.layers[0].digest' <<<"$mf")")" ;;
	tag)
		check_eq "$verb: the new tag names the same manifest" "$V1" \
			"$(manifest_digest demo/hello stable)"
		check "$verb: and shows as its directory" test -d "$M/demo/hello/stable" -a \
			! -L "$M/demo/hello/stable"
		check_eq "$verb: with its files" "Hello from ocifs" "$(cat "$M/demo/hello/stable/hello.txt" 2>&1)" ;;
	attach)
		idx=$(manifest_get demo/hello "sha256-${V1#sha256:}")
		ATT=$(jq -r '.manifests[] | select(.artifactType == "application/vnd.example.sig") | .digest' <<<"$idx")
		check "$verb: the subject's referrers index lists it" test -n "$ATT"
		check_eq "$verb: with the file" "signature" \
			"$(blob_get demo/hello "$(manifest_get demo/hello "$ATT" | jq -r '.layers[0].digest')")" ;;
	discover)
		check "$verb: the referrer shows under its type" \
			grep -q "application/vnd.example.sig/${ATT:-none}:" <<<"$out"
		check "$verb: with its file" grep -qx "sig.txt" <<<"$out" ;;
	*)
		not_ok "$oras: no check for this row" ;;
	esac
done
check_err "ln -s inside a tag directory: EPERM (files are pushed, not linked)" "Operation not permitted" \
	ln -s hello.txt "$M/demo/hello/v1/link"
check_err "ln -s to a tag that does not exist" "No such file or directory" \
	ln -s nosuch "$M/demo/hello/dangling"
umount_ocifs "$M"
finish

#!/bin/bash
# The README's examples under "Using it", run as written: the read block
# (which mounts with `ocifs 127.0.0.1:5000 /mnt/reg` and unmounts), then the
# write block on a mount made the same way. Only the registry address, the
# mount point and <hex> are swapped for the test's. Each line must exit 0;
# what the write block did is then checked in the registry.
T_TIMEOUT=${T_TIMEOUT:-180}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env awk getfattr setfattr jq

registry_start readme
W=$TESTDIR/seed
mkdir -p "$W"
echo "Hello from ocifs" >"$W/hello.txt"
V1=$(push_artifact demo/hello v1 "$W" hello.txt) || bail "seed demo/hello:v1"
push_artifact team/base v1 "$W" hello.txt >/dev/null || bail "seed team/base:v1"
M=$TESTDIR/mnt
mkdir -p "$M"
WORK=$TESTDIR/work
mkdir -p "$WORK/site/css"
echo "<h1>site</h1>" >"$WORK/site/index.html"
echo "body{}" >"$WORK/site/css/a.css"

# block N: the Nth ```sh block of the "## Using it" section
block() {
	awk -v want="$1" '
		/^## / { in_sec = ($0 == "## Using it") }
		in_sec && /^```sh$/ { n++; if (n == want) { on = 1; next } }
		on && /^```$/ { exit }
		on { print }' "$srcdir/README.md"
}
# run_block LABEL N: each command line of block N, comments stripped
run_block() {
	local line cmd out rc count=0
	while IFS= read -r line; do
		cmd=$(sed -E 's/[[:space:]]+#[^"'\'']*$//' <<<"$line")
		[ -n "${cmd// /}" ] || continue
		cmd=${cmd//127.0.0.1:5000/$REG}
		cmd=${cmd//\/mnt\/reg/$M}
		cmd=${cmd//<hex>/${V1#sha256:}}
		# the README's mount line: this build, its cache in the test's directory
		cmd=$(sed -E "s|^ocifs |\"$OCIFS\" -o cache_dir=$CACHE |" <<<"$cmd")
		out=$( (cd "$WORK" && bash -c "$cmd") 2>&1)
		rc=$?
		count=$((count + 1))
		check_eq "$1: \`$(_lbl "$line")\`" 0 "$rc" || diag "$out"
		LAST_OUT=$out
	done < <(block "$2")
	check "$1: the block had commands ($count)" test "$count" -ge 5
}
no_daemon() { ! pgrep -f -- "ocifs .* $M\$" >/dev/null; }

run_block "read" 1
check_fail "read: the block's fusermount3 -u unmounted it" mountpoint -q "$M"
check "read: and its daemon is gone" wait_until 20 no_daemon

"$OCIFS" -o "cache_dir=$CACHE" "$REG" "$M" || bail "mount for the write block"
run_block "write" 2
v1_hello() {
	blob_get demo/hello "$(manifest_get demo/hello v1 |
		jq -r '.layers[] | select(.annotations["org.opencontainers.image.title"] == "hello.txt") | .digest')"
}
v1_fixed() { [ "$(v1_hello)" = fix ]; }
check "write: v1's hello.txt becomes fix in the registry (push_delay: 1 s)" wait_until 20 v1_fixed
check_fail "write: v2, made, annotated and removed, is gone" manifest_get demo/hello v2
check "write: team/app:v1 made in one step" test -d "$M/team/app/v1"
check "write: newrepo/v1 made by mkdir -p" test -d "$M/newrepo/v1"
fusermount3 -u "$M"
check "write: its daemon exits after unmount" wait_until 20 no_daemon
finish

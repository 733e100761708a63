#!/bin/bash
# Faults between the mount and a real registry (tests/integration/faultproxy.py):
# connections reset or cut mid-body, bodies that lie about their length,
# bursts of 500/503/429, a slow drip, flipped bytes, redirect loops and 401
# loops. For each, on reads: the file reads right or fails with EIO, within
# the timeout's reach (EACCES where the registry refuses); the daemon stays up; every complete blob in the cache
# hashes to its name. On pushes: the tag lands whole (every blob of its
# manifest present) or keeps its old manifest. Lines "# RELIABILITY:" feed
# tests/RELIABILITY.md.
T_TIMEOUT=${T_TIMEOUT:-600}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env python3 jq cmp sha256sum

MiB=$((1024 * 1024))
registry_start faults
W=$TESTDIR/w
mkdir -p "$W"
make_random_file "$W/big.bin" $((3 * MiB + 7)) faults-big
echo "small and whole" >"$W/small.txt"
push_artifact f/app v1 "$W" big.bin small.txt >/dev/null || bail "seed f/app:v1"
BIG=$(sha256_hex "$W/big.bin")
faultproxy_start "http://$REG"
M=$TESTDIR/mnt
TIMEOUT=4

# read_fault NAME RULE_JSON [OPTIONS]: a fresh mount through the proxy (with
# -o OPTIONS too) with RULE on the big blob's GETs; the file must read right
# or fail with EIO, in bounded time
read_fault() {
	local name=$1 rule=$2 c=$TESTDIR/cache.$1 out rc t0 outcome
	fp_rules "[$rule]"
	OCIFS_CACHE=$c mount_ocifs "$FP" "$M" -o "ro,timeout=$TIMEOUT${3:+,$3}" >/dev/null ||
		{ not_ok "$name: mount through the proxy"; return; }
	t0=$SECONDS
	out=$(timeout $((TIMEOUT * 8 + 20)) cat "$M/f/app/v1/big.bin" 2>&1 >"$TESTDIR/got")
	rc=$?
	if [ "$rc" = 0 ] && cmp -s "$TESTDIR/got" "$W/big.bin"; then
		outcome="right bytes"
	elif [ "$rc" = 1 ] && [[ $out == *"Input/output error"* ]]; then
		outcome="EIO"
	elif [ "$rc" = 1 ] && [[ $out == *"Permission denied"* ]]; then
		outcome="EACCES" # the registry refused: said as such, not as EIO
	else
		outcome="rc $rc: $out"
	fi
	check "$name: the read gives the right bytes or a clear error ($outcome, $((SECONDS - t0)) s)" \
		test "$outcome" = "right bytes" -o "$outcome" = EIO -o "$outcome" = EACCES
	check "$name: the daemon is up" daemon_alive "$M"
	check_eq "$name: the small file still reads" "small and whole" "$(cat "$M/f/app/v1/small.txt" 2>&1)"
	fp_rules '[]'
	check "$name: every complete blob in the cache verifies" cache_verifies "$c"
	check_same "$name: with the fault gone, the file reads right" "$W/big.bin" "$M/f/app/v1/big.bin"
	umount_ocifs "$M" >/dev/null
	echo "# RELIABILITY: read fault $name: 1 read, outcome: $outcome"
	LAST_OUTCOME=$outcome
}

B="\"match\":\"/blobs/sha256:$BIG\",\"method\":\"GET\""
read_fault reset-mid-body "{\"id\":\"r\",$B,\"reset_after\":1500000,\"times\":3}"
read_fault reset-always "{\"id\":\"r\",$B,\"reset_after\":1000}"
read_fault cut-mid-body "{\"id\":\"c\",$B,\"cut_after\":700000,\"times\":4}"
read_fault length-short "{\"id\":\"l\",$B,\"length\":1000}"
read_fault length-long "{\"id\":\"l\",$B,\"length\":99999999,\"times\":2}"
# Bytes past an answer's end, sent once the client has taken its body: the
# next request on that connection reads them as its answer (not HTTP). The
# connection is at fault, not the request: it is tried again on a new one.
read_fault junk-after-body "{\"id\":\"j\",$B,\"trail\":\"junk past the end\\r\\n\"}"
check_eq "junk-after-body: the read is retried on a new connection and gives the right bytes" \
	"right bytes" "$LAST_OUTCOME"
read_fault burst-500 "{\"id\":\"s\",$B,\"status\":500,\"times\":3}"
read_fault burst-503 "{\"id\":\"s\",$B,\"status\":503,\"times\":5}"
read_fault burst-429 "{\"id\":\"s\",$B,\"status\":429,\"headers\":{\"Retry-After\":\"1\"},\"times\":2}"
read_fault always-503 "{\"id\":\"s\",$B,\"status\":503}"
read_fault drip "{\"id\":\"d\",$B,\"drip\":65536}"
# a transfer that stops sending, its connection open: cut after stall_timeout
# (2 s here; the default 30 s in t_retry.sh) and resumed
read_fault stall "{\"id\":\"t\",$B,\"stall_after\":700000,\"times\":2}" stall_timeout=2
check_eq "stall: the read gave the right bytes" "right bytes" "$LAST_OUTCOME"
read_fault flip-first "{\"id\":\"f\",$B,\"corrupt\":true,\"times\":1}"
read_fault flip-middle "{\"id\":\"f\",$B,\"flip_at\":1234567}"
read_fault redirect-loop "{\"id\":\"x\",$B,\"redirect\":\"http://$FP\"}"
read_fault 401-loop "{\"id\":\"a\",$B,\"status\":401,\"headers\":{\"WWW-Authenticate\":\"Basic realm=\\\"x\\\"\"}}"

# ---- pushes through faults: the tag lands whole, or keeps its old manifest
push_fault() {
	local name=$1 rule=$2 tag=$3 c=$TESTDIR/cache.p.$1 before outcome rc
	before=$(manifest_digest f/app "$tag" 2>/dev/null)
	fp_rules "[$rule]"
	OCIFS_CACHE=$c mount_ocifs "$FP" "$M" -o "timeout=$TIMEOUT,push_delay=3600" >/dev/null ||
		{ not_ok "$name: mount through the proxy"; return; }
	[ -d "$M/f/app/$tag" ] || mkdir "$M/f/app/$tag"
	make_random_file "$TESTDIR/up.bin" $((2 * MiB + 3)) "push-$name"
	cp "$TESTDIR/up.bin" "$M/f/app/$tag/up.bin" 2>"$TESTDIR/cp.err"
	rc=$?
	timeout $((TIMEOUT * 8 + 20)) sync "$M/f/app/$tag" 2>>"$TESTDIR/cp.err" || rc=1
	after=$(manifest_digest f/app "$tag" 2>/dev/null)
	if [ "$rc" = 0 ] && [ -n "$after" ] && [ "$after" != "$before" ]; then
		outcome="pushed"
		check "$name: pushed, and the tag's every blob is in the registry" tag_whole f/app "$tag"
		check_eq "$name: the pushed file reads back from the registry" "$(sha256_hex "$TESTDIR/up.bin")" \
			"$(blob_get f/app "$(manifest_get f/app "$tag" |
				jq -r '.layers[] | select(.annotations["org.opencontainers.image.title"] == "up.bin") | .digest')" |
				sha256sum | cut -d' ' -f1)"
	else
		outcome="refused ($(head -c 80 "$TESTDIR/cp.err" | tr '\n' ' '))"
		check_eq "$name: not pushed, and the tag keeps its old manifest" "$before" "$after"
	fi
	check "$name: the daemon is up" daemon_alive "$M"
	fp_rules '[]'
	umount_ocifs "$M" >/dev/null
	echo "# RELIABILITY: push fault $name: 1 push, outcome: $outcome"
}
push_fault patch-500 "{\"id\":\"p\",\"match\":\"/blobs/uploads/\",\"method\":\"PATCH\",\"status\":500}" v1
push_fault put-blob-503-burst "{\"id\":\"p\",\"match\":\"/blobs/uploads/\",\"method\":\"PUT\",\"status\":503,\"times\":2}" v1
push_fault manifest-put-500 "{\"id\":\"p\",\"match\":\"/manifests/\",\"method\":\"PUT\",\"status\":500}" v1
push_fault manifest-put-reset "{\"id\":\"p\",\"match\":\"/manifests/\",\"method\":\"PUT\",\"reset_after\":0}" v1
push_fault post-401-loop "{\"id\":\"p\",\"match\":\"/blobs/uploads/\",\"method\":\"POST\",\"status\":401,\"headers\":{\"WWW-Authenticate\":\"Basic realm=\\\"x\\\"\"}}" newtag
check "after every fault, f/app:v1 is whole" tag_whole f/app v1
finish

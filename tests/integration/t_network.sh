#!/bin/bash
# The network between ocifs and the registry, through a fault-injecting
# proxy: 503 and 429 answers are tried again (Retry-After honoured), a body
# cut short resumes where it stopped, Warning headers are logged once, a
# redirect to another host never carries Authorization (and the next ranges
# of that blob go straight there), proxies come from the environment
# (http_proxy, HTTPS_PROXY, NO_PROXY), and a link that caps each connection
# gets more parallel requests.
T_TIMEOUT=${T_TIMEOUT:-300}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env python3 openssl
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy NO_PROXY no_proxy

registry_start net
NET_REG=$REG
W=$TESTDIR/w
mkdir -p "$W"
printf 'hello through the proxy\n' >"$W/hello.txt"
make_random_file "$W/mid.bin" $((3 * 1024 * 1024)) net-mid
make_random_file "$W/big.bin" $((6 * 1024 * 1024 + 5)) net-big
make_random_file "$W/env.bin" $((1024 * 1024)) net-env
push_artifact net/art v1 "$W" hello.txt mid.bin big.bin >/dev/null || bail "seed net/art:v1"
push_artifact net/art v2 "$W" hello.txt >/dev/null || bail "seed net/art:v2"
push_artifact net/env v1 "$W" env.bin >/dev/null || bail "seed net/env:v1"
MID_HEX=$(sha256_hex "$W/mid.bin")
BIG_HEX=$(sha256_hex "$W/big.bin")
faultproxy_start "http://$NET_REG"
M=$TESTDIR/mnt
A=$M/net/art/v1

# ---- 503, then 200
fp_rules '[{"id":"m503","match":"/manifests/v1$","method":"GET","status":503,"times":2}]'
mount_ocifs "$FP" "$M" -o ro || bail "mount through the proxy"
check_eq "hello.txt reads after two 503 answers" "hello through the proxy" "$(cat "$A/hello.txt" 2>&1)"
fp_quiet
check_eq "the proxy answered 503 twice" 2 "$(fp_count '.rule == "m503"')"
check "and then the manifest came" \
	test "$(fp_count '(.target | test("/manifests/v1$")) and .status == 200')" -ge 1
check "the daemon logged that it was retrying" grep -q "retrying" "$OCIFS_LOG"

# ---- 429 with Retry-After: 2
fp_rules "[{\"id\":\"b429\",\"match\":\"/blobs/sha256:$MID_HEX\",\"method\":\"GET\",\"status\":429,
	\"headers\":{\"Retry-After\":\"2\"},\"times\":1}]"
check_same "mid.bin reads after a 429" "$W/mid.bin" "$A/mid.bin"
r429=$(fp_select '.rule == "b429"')
check "the proxy answered 429 once" test -n "$r429"
t429=$(jq -r .t <<<"$r429")
rng=$(jq -r .range <<<"$r429")
tnext=$(fp_select ".range == \"$rng\" and (.target | contains(\"$MID_HEX\")) and .status == 206" | jq -s 'map(.t) | min')
check "the same range was asked again ($rng)" test "$tnext" != null
check "no sooner than Retry-After said (429 at $t429, again at $tnext)" \
	awk -v a="$t429" -v b="$tnext" 'BEGIN { exit !(b - a >= 1.9) }'

# ---- a body cut short resumes where it stopped
fp_rules "[{\"id\":\"cut\",\"match\":\"/blobs/sha256:$BIG_HEX\",\"method\":\"GET\",\"cut_after\":1000000,\"times\":1}]"
check_same "big.bin reads though one of its transfers is cut" "$W/big.bin" "$A/big.bin"
rcut=$(fp_select '.rule == "cut"')
check "one transfer was cut after 1000000 bytes" test "$(jq -r .bytes <<<"$rcut")" = 1000000
cut_range=$(jq -r .range <<<"$rcut")
cut_start=$(sed -E 's/bytes=([0-9]+)-.*/\1/' <<<"$cut_range")
cut_end=$(sed -E 's/bytes=[0-9]+-([0-9]*)/\1/' <<<"$cut_range")
want="bytes=$((cut_start + 1000000))-$cut_end"
check_eq "the resumed request starts where the cut one stopped ($cut_range)" 1 \
	"$(fp_count ".range == \"$want\" and (.target | contains(\"$BIG_HEX\")) and .status == 206")"
check_eq "no byte of big.bin came twice" "$(stat -c %s "$W/big.bin")" \
	"$(fp_select "(.target | contains(\"$BIG_HEX\")) and .method == \"GET\"" | jq -s 'map(.bytes) | add')"
umount_ocifs "$M"

# ---- Warning headers: logged, once each
fp_rules '[{"id":"warn","match":"/manifests/","add_headers":{"Warning":"299 - \"net/art is deprecated: use net/new\""}}]'
mark=$(fp_log_mark)
OCIFS_CACHE=$TESTDIR/cache.warn mount_ocifs "$FP" "$M" -o ro,tag_ttl=0 || bail "mount for warnings"
for i in 1 2 3; do
	cat "$M/net/art/v2/hello.txt" >/dev/null
	cat "$M/net/art/v1/.oci/digest" >/dev/null
done
fp_quiet
check "the proxy added the Warning to several answers" test "$(fp_count '.rule == "warn"' "$mark")" -ge 2
check_eq "the daemon logged it once" 1 \
	"$(grep -c 'the registry warns: net/art is deprecated: use net/new' "$OCIFS_LOG")"
umount_ocifs "$M"

# ---- proxies from the environment
mark=$(fp_log_mark)
if http_proxy=http://$FP OCIFS_CACHE=$TESTDIR/cache.env mount_ocifs "$NET_REG" "$M" -o ro; then
	check_same "http_proxy: env.bin reads" "$W/env.bin" "$M/net/env/v1/env.bin"
	fp_quiet
	check "the requests went through the proxy" \
		test "$(fp_count ".mode == \"forward\" and (.target | startswith(\"http://$NET_REG/v2/net/env/\"))" "$mark")" -ge 2
	umount_ocifs "$M"
fi
mark=$(fp_log_mark)
if NO_PROXY=127.0.0.1 http_proxy=http://$FP OCIFS_CACHE=$TESTDIR/cache.noproxy \
	mount_ocifs "$NET_REG" "$M" -o ro; then
	check_same "NO_PROXY: env.bin reads" "$W/env.bin" "$M/net/env/v1/env.bin"
	check_eq "NO_PROXY=127.0.0.1: nothing went through the proxy" 0 "$(fp_count 'true' "$mark")"
	umount_ocifs "$M"
fi

# ---- a link that caps each connection (pacer.py: the kernel paces each one
# at 1 MiB/s): more parallel requests, as long as they fetch more. Six
# streams fetch 6 MiB/s: the link bounds them, not the daemon nor the pacer,
# even under ThreadSanitizer on a loaded machine (at 4 MiB/s each, six
# streams gave 22 MiB/s there and twelve 21: more did not pay)
make_random_file "$W/capped.bin" $((64 * 1024 * 1024)) net-capped
push_artifact net/capped v1 "$W" capped.bin >/dev/null || bail "seed net/capped:v1"
PACE_PORT=$(free_port)
python3 "$srcdir/tests/integration/pacer.py" --port "$PACE_PORT" --upstream "$NET_REG" \
	--rate $((1024 * 1024)) >"$TESTDIR/pacer.log" 2>&1 </dev/null &
_LIB_DAEMON_PIDS+=("$!")
pacer_up() { curl -fs -o /dev/null "http://127.0.0.1:$PACE_PORT/v2/"; }
wait_until 20 pacer_up || bail "pacer.py did not start"
streams() { jq -r .fetch_streams "$M/.ocifs/stats.json"; }
if OCIFS_CACHE=$TESTDIR/cache.capped mount_ocifs "127.0.0.1:$PACE_PORT" "$M" -o ro; then
	check_same "a blob reads through a link capped per connection" "$W/capped.bin" \
		"$M/net/capped/v1/capped.bin"
	n=$(streams)
	check "it was fetched with more than the first 6 requests at once ($n)" test "$n" -gt 6
	check "the log says how many" grep -q "fetch streams" "$OCIFS_LOG"
	umount_ocifs "$M"
fi
if OCIFS_CACHE=$TESTDIR/cache.capped4 mount_ocifs "127.0.0.1:$PACE_PORT" "$M" -o ro,max_streams=4; then
	check "with -o max_streams=4 too (its first 16 MiB)" \
		cmp -n $((16 * 1024 * 1024)) "$W/capped.bin" "$M/net/capped/v1/capped.bin"
	check_eq "which bounds them" 4 "$(streams)"
	umount_ocifs "$M"
fi

# ---- a redirect to another host never carries Authorization
HUSER=carol HPASS='R3direct-s3cret'
REG_TLS=1 registry_start_htpasswd "$HUSER" "$HPASS" netauth
TLS_REG=$REG
mkdir -p "$TESTDIR/s"
make_random_file "$TESTDIR/s/sec.bin" $((2 * 1024 * 1024)) net-sec
push_artifact sec/art v1 "$TESTDIR/s" sec.bin >/dev/null || bail "seed sec/art:v1"

mark=$(fp_log_mark)
F_AUTH=$TESTDIR/auth.json
auth_add_auth "$F_AUTH" "$TLS_REG" "$HUSER" "$HPASS"
if HTTPS_PROXY=http://$FP OCIFS_CACHE=$TESTDIR/cache.https mount_ocifs "$TLS_REG" "$M" \
	-o "ro,ca_file=$REG_CA,auth_file=$F_AUTH"; then
	check_same "HTTPS_PROXY: sec.bin reads over TLS" "$TESTDIR/s/sec.bin" "$M/sec/art/v1/sec.bin"
	umount_ocifs "$M"
	# a tunnel is logged when it closes
	tunnelled() { [ "$(fp_count ".mode == \"connect\" and .target == \"$TLS_REG\"" "$mark")" -ge 1 ]; }
	check "through a CONNECT tunnel to the registry" wait_until 10 tunnelled
fi

registry_start_htpasswd "$HUSER" "$HPASS" netredir
faultproxy_start "http://$REG" "$HUSER:$HPASS"
push_artifact sec/art v1 "$TESTDIR/s" sec.bin >/dev/null || bail "seed sec/art:v1 (plain)"
make_random_file "$TESTDIR/s/big.bin" $((24 * 1024 * 1024)) net-big
make_random_file "$TESTDIR/s/big2.bin" $((24 * 1024 * 1024)) net-big2
push_artifact sec/big v1 "$TESTDIR/s" big.bin >/dev/null || bail "seed sec/big:v1"
push_artifact sec/big2 v1 "$TESTDIR/s" big2.bin >/dev/null || bail "seed sec/big2:v1"
BIGHEX=$(sha256_hex "$TESTDIR/s/big.bin")
BIG2HEX=$(sha256_hex "$TESTDIR/s/big2.bin")
fp_rules "[{\"id\":\"redir\",\"match\":\"/blobs/\",\"method\":\"GET\",\"redirect\":\"http://localhost:$FP_PORT/elsewhere\"}]"
F_AUTH2=$TESTDIR/auth2.json
auth_add_auth "$F_AUTH2" "$FP" "$HUSER" "$HPASS"
if OCIFS_CACHE=$TESTDIR/cache.redir mount_ocifs "$FP" "$M" -d -o "ro,auth_file=$F_AUTH2"; then
	check_same "a blob redirected to another host reads" "$TESTDIR/s/sec.bin" "$M/sec/art/v1/sec.bin"
	fp_quiet
	check "blob requests were redirected, carrying Authorization to the registry" \
		test "$(fp_count '.rule == "redir" and .auth')" -ge 1
	check "the other host (localhost) was asked" \
		test "$(fp_count '.mode == "elsewhere" and (.host | startswith("localhost:"))')" -ge 1
	check_eq "never with Authorization" 0 "$(fp_count '.mode == "elsewhere" and .auth')"
	# the ranges of one blob reuse the registry's redirect, as long as the other host answers
	mark=$(fp_log_mark)
	check_same "a 24 MiB blob, redirected, reads" "$TESTDIR/s/big.bin" "$M/sec/big/v1/big.bin"
	nreg=$(fp_count ".rule == \"redir\" and (.target | contains(\"$BIGHEX\"))" "$mark")
	ncdn=$(fp_count ".mode == \"elsewhere\" and .status == 206 and (.target | contains(\"$BIGHEX\"))" "$mark")
	check "most of its ranges went straight to the other host ($ncdn), not through the registry ($nreg)" \
		test "$ncdn" -gt "$nreg"
	check_eq "never with Authorization there" 0 "$(fp_count '.mode == "elsewhere" and .auth' "$mark")"
	# the other host refuses once (an expired URL): that range goes through the registry again.
	# Its first bytes first, so that the target is known before it refuses: a refused first
	# redirect is retried through whichever target a parallel range learnt meanwhile. One
	# read with no read-ahead (POSIX_FADV_RANDOM), so that the rest of the blob is fetched
	# only once the rules below are in place, however fast the daemon fetches ahead.
	check "the first bytes of a second blob read (no read-ahead)" python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
sys.exit(0 if len(os.pread(fd, 4096, 0)) == 4096 else 1)' "$M/sec/big2/v1/big2.bin"
	fp_rules "[{\"id\":\"cdn-refuses\",\"elsewhere\":true,\"match\":\"$BIG2HEX\",\"status\":403,\"times\":1},
		{\"id\":\"redir\",\"match\":\"/blobs/\",\"method\":\"GET\",\"redirect\":\"http://localhost:$FP_PORT/elsewhere\"}]"
	mark=$(fp_log_mark)
	check_same "a blob whose redirect target refuses once reads" "$TESTDIR/s/big2.bin" "$M/sec/big2/v1/big2.bin"
	fp_quiet
	check_eq "the target refused once" 1 "$(fp_count '.rule == "cdn-refuses"' "$mark")"
	t403=$(fp_select '.rule == "cdn-refuses"' "$mark" | jq -r .t | head -n 1)
	check "then the registry was asked for that blob again" test \
		"$(fp_count ".rule == \"redir\" and (.target | contains(\"$BIG2HEX\")) and .t >= ${t403:-0}" "$mark")" -ge 1
	umount_ocifs "$M"
	check_no_secrets "redirects, -d: no password or Authorization in the log" "$OCIFS_LOG" \
		"$HPASS" "$(auth_b64 "$HUSER" "$HPASS")"
fi
finish

#!/bin/bash
# Retries: a registry that goes away and comes back in the middle of a read
# costs the reader nothing; one that stays away gives EIO once -o timeout=
# has passed, with a log line that says so; a transfer that stalls is cut
# and resumed. Back-offs and the stall limit run at full scale here.
T_TIMEOUT=${T_TIMEOUT:-240}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env

registry_start retry
W=$TESTDIR/w
mkdir -p "$W"
make_random_file "$W/big.bin" $((24 * 1024 * 1024)) retry-big
make_random_file "$W/later.bin" $((3 * 1024 * 1024)) retry-later
printf 'small\n' >"$W/small.txt"
push_artifact flaky/art v1 "$W" big.bin later.bin small.txt >/dev/null || bail "seed flaky/art:v1"

M=$TESTDIR/mnt
mkdir -p "$M"
mount_ocifs "$REG" "$M" -o ro,timeout=120,retry_delay_ms=100 || bail "mount"
A=$M/flaky/art/v1
check_eq "small.txt reads with the registry up" "small" "$(cat "$A/small.txt")"
check_eq "big.bin's size is known before the outage" $((24 * 1024 * 1024)) "$(stat -c %s "$A/big.bin")"
check_eq "later.bin's size is known before the outage" $((3 * 1024 * 1024)) \
	"$(stat -c %s "$A/later.bin")"

# ---- the registry goes away before a read and comes back during it
registry_stop
check_fail "the registry is down" curl -fsS -o /dev/null --max-time 2 "http://$REG/v2/"
cat "$A/big.bin" >"$W/big.got" 2>"$W/big.err" &
reader=$!
check "the daemon says it is retrying" wait_until 60 grep -q "retrying" "$OCIFS_LOG"
check "the reader is still waiting, not failed" kill -0 "$reader"
registry_restart
wait "$reader"
check_eq "the read that spanned the outage succeeds" 0 "$?"
check_same "and its bytes are right" "$W/big.bin" "$W/big.got"
check "no error reached the reader" test ! -s "$W/big.err"
check "the daemon is alive" daemon_alive "$M"
umount_ocifs "$M"

# ---- the registry stays away: EIO once the retry budget is spent
mount_ocifs "$REG" "$M" -o ro,timeout=3 || bail "second mount"
check_eq "later.bin's size before the outage" $((3 * 1024 * 1024)) "$(stat -c %s "$A/later.bin")"
registry_stop
t0=$SECONDS
check_err "a read with the registry gone fails with EIO" "Input/output error" \
	timeout 60 cat "$A/later.bin"
took=$((SECONDS - t0))
check "it failed within the budget plus a little ($took s, timeout=3)" test "$took" -le 20
check "the log says it gave up" wait_until 5 grep -q "giving up after" "$OCIFS_LOG"
check "the daemon is alive after giving up" daemon_alive "$M"
registry_restart
check_same "once the registry is back, the same file reads" "$W/later.bin" "$A/later.bin"
umount_ocifs "$M"

# ---- a transfer that stops sending, its connection open, at full scale: it
# is cut after the default stall_timeout (30 s) and resumed (t_faults.sh has
# it at 2 s); the reader gets the right bytes
faultproxy_start "http://$REG"
fp_rules "[{\"id\":\"t\",\"match\":\"/blobs/sha256:$(sha256_hex "$W/later.bin")\",\"method\":\"GET\",\"stall_after\":100000,\"times\":1}]"
OCIFS_CACHE=$TESTDIR/cache.stall mount_ocifs "$FP/flaky/art:v1" "$M" -o ro || bail "mount through the proxy"
t0=$SECONDS
check_same "a read whose transfer stalls gets the right bytes" "$W/later.bin" "$M/later.bin"
took=$((SECONDS - t0))
check "once the default stall_timeout (30 s) has passed ($took s)" test "$took" -ge 29
check_eq "the stalled transfer was the proxy's: one stall" 1 \
	"$(fp_select '.rule == "t"' | wc -l)"
umount_ocifs "$M"
finish

#!/bin/bash
# Retries: a registry that goes away and comes back in the middle of a read
# costs the reader nothing; one that stays away gives EIO once -o timeout=
# has passed, with a log line that says so.
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
mount_ocifs "$REG" "$M" -o ro,timeout=120 || bail "mount"
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
finish

#!/bin/bash
# Mutual TLS: a registry that wants a client certificate is read with
# -o cert_file=,key_file=, and refused without one.
T_TIMEOUT=${T_TIMEOUT:-120}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env openssl

registry_start_mtls
check_fail "curl without a client certificate is refused" \
	curl -fsS -o /dev/null --max-time 5 --cacert "$REG_CA" "https://$REG/v2/"
W=$TESTDIR/w
mkdir -p "$W"
make_random_file "$W/data.bin" $((2 * 1024 * 1024)) mtls
printf 'over mutual TLS\n' >"$W/hello.txt"
push_artifact secure/art v1 "$W" data.bin hello.txt >/dev/null || bail "seed secure/art:v1"

M=$TESTDIR/mnt
mkdir -p "$M"
TLSOPT="ro,ca_file=$REG_CA,cert_file=$REG_CLIENT_CERT,key_file=$REG_CLIENT_KEY"
if mount_ocifs "$REG" "$M" -o "$TLSOPT"; then
	check_ls "the registry root lists the repository" "$M" secure
	check_eq "hello.txt reads over mutual TLS" "over mutual TLS" "$(cat "$M/secure/art/v1/hello.txt")"
	check_same "data.bin bytes over mutual TLS" "$W/data.bin" "$M/secure/art/v1/data.bin"
	check "the client key is not in the log" bash -c "! grep -q 'PRIVATE KEY' '$OCIFS_LOG'"
	umount_ocifs "$M"
fi

out=$("$OCIFS" -f -o "ro,cache_dir=$TESTDIR/c2,ca_file=$REG_CA" "$REG" "$M" 2>&1)
rc=$?
check "without a client certificate the mount fails" test "$rc" != 0
check_eq "with one line of error" 1 "$(printf '%s\n' "$out" | grep -c .)"
check_fail "and nothing is mounted" mountpoint -q "$M"
finish

#!/bin/bash
# Local safety: the cache is 0700 directories and 0600 files; allow_other
# without default_permissions is warned about; a cache whose disk fills (a
# 6 MiB tmpfs, in a private mount namespace) gives ENOSPC or EIO, keeps no
# corrupt entry, loses no tag, and works again once there is room.
# Lines "# RELIABILITY:" feed tests/RELIABILITY.md.
T_TIMEOUT=${T_TIMEOUT:-240}
if [ -z "${OCIFS_IN_NS:-}" ]; then
	[ "$(id -u)" = 0 ] || { echo "# SKIP needs root (mount namespaces)"; exit 77; }
	OCIFS_IN_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env sha256sum cmp

MiB=$((1024 * 1024))
registry_start safety
W=$TESTDIR/w
mkdir -p "$W"
make_random_file "$W/big.bin" $((10 * MiB)) safety-big
echo "small" >"$W/small.txt"
push_artifact s/app v1 "$W" big.bin small.txt >/dev/null || bail "seed s/app:v1"
M=$TESTDIR/mnt

# ---- modes of the cache: a cache directory ocifs makes
CACHE=$TESTDIR/made-by-ocifs/cache
mount_ocifs "$REG" "$M" || bail "mount"
cat "$M/s/app/v1/small.txt" >/dev/null
head -c 100 "$M/s/app/v1/big.bin" >/dev/null # a partial blob and its map too
mkdir "$M/s/app/staged" && echo x >"$M/s/app/staged/x.txt" # and a staged file
check_eq "cache directories are 0700" "" "$(find "$CACHE" -type d ! -perm 700)"
check_eq "cache files are 0600" "" "$(find "$CACHE" -type f ! -perm 600)"
check "and there are some of each" test "$(find "$CACHE" -type f | wc -l)" -ge 3
check_fail "no warning without allow_other" grep -q "allow_other without" "$OCIFS_LOG"
umount_ocifs "$M"

# ---- allow_other
mount_ocifs "$REG" "$M" -o ro,allow_other || bail "mount allow_other"
check "allow_other without default_permissions: warned" \
	grep -q "allow_other without default_permissions" "$OCIFS_LOG"
umount_ocifs "$M"
mount_ocifs "$REG" "$M" -o ro,allow_other,default_permissions || bail "mount default_permissions"
check_fail "with default_permissions: no warning" grep -q "allow_other without" "$OCIFS_LOG"
umount_ocifs "$M"

# ---- a full disk under the cache
S=$TESTDIR/small
mkdir -p "$S"
mount -t tmpfs -o size=6m,mode=700 tmpfs "$S" || bail "a 6 MiB tmpfs"
OCIFS_CACHE=$S/c mount_ocifs "$REG" "$M" -o push_delay=3600 || bail "mount on the small disk"
out=$(cat "$M/s/app/v1/big.bin" 2>&1 >/dev/null)
rc=$?
check "reading 10 MiB into a 6 MiB cache fails clearly ($out)" \
	test "$rc" -ne 0 -a \( -n "$(grep -e 'No space left' -e 'Input/output error' <<<"$out")" \)
check "the daemon is up" daemon_alive "$M"
check "every complete blob in the cache verifies" cache_verifies "$S/c"
check "the log says the disk is full" grep -q "No space left on device" "$OCIFS_LOG"
# a push that cannot be staged
make_random_file "$W/up.bin" $((8 * MiB)) safety-up
mkdir "$M/s/app/v2"
out=$(cp "$W/up.bin" "$M/s/app/v2/up.bin" 2>&1)
rc=$?
check "staging 8 MiB on a full disk fails clearly ($out)" \
	test "$rc" -ne 0 -a \( -n "$(grep -e 'No space left' -e 'Input/output error' <<<"$out")" \)
check_fail "nothing was pushed as s/app:v2" manifest_get s/app v2
check_eq "s/app:v1 is as it was" 2 "$(manifest_get s/app v1 | jq '.layers | length')"
check "a file half staged on the full disk can be removed" rm -f "$M/s/app/v2/up.bin"
# room again
mount -o remount,size=64m "$S" || bail "grow the tmpfs"
check_same "with room again, the file reads right" "$W/big.bin" "$M/s/app/v1/big.bin"
check "and the staged push goes through" sh -c "cp '$W/up.bin' '$M/s/app/v2/up.bin' && sync '$M/s/app/v2'"
check_eq "s/app:v2 holds the file" "$(sha256_hex "$W/up.bin")" \
	"$(blob_get s/app "$(manifest_get s/app v2 | jq -r '.layers[0].digest')" | sha256sum | cut -d' ' -f1)"
check "every complete blob in the cache verifies" cache_verifies "$S/c"
umount_ocifs "$M"
umount "$S"
echo "# RELIABILITY: full cache disk (6 MiB tmpfs): a 10 MiB read and an 8 MiB push failed clearly, no corrupt entry, both worked once the disk grew"
finish

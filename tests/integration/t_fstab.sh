#!/bin/bash
# ocifs as fstab and mount(8) have it: a line of a temporary fstab with the
# options operators use (ro, allow_other, default_permissions, uid=, gid=,
# _netdev, noauto, x-systemd.automount, cache_dir=), mounted by mount(8), and
# an unknown option refused by name. All of it in a private mount namespace
# (unshare -m): the host's fstab and mount table are never touched.
T_TIMEOUT=${T_TIMEOUT:-180}
if [ -z "${OCIFS_IN_NS:-}" ]; then
	[ "$(id -u)" = 0 ] || { echo "# SKIP needs root (mount namespaces)"; exit 77; }
	OCIFS_IN_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env mount findmnt setpriv

registry_start fstab
W=$TESTDIR/w
mkdir -p "$W"
echo "from fstab" >"$W/f.txt"
push_artifact fs/app v1 "$W" f.txt >/dev/null || bail "seed fs/app:v1"
mkdir -p "$TESTDIR/bin"
ln -s "$OCIFS" "$TESTDIR/bin/ocifs"

M=$TESTDIR/mnt
mkdir -p "$M"
chmod 755 "$TESTDIR" # other users reach the mount point (the cache inside stays 0700)
FSTAB=$TESTDIR/fstab
OPTS="ro,allow_other,default_permissions,uid=1234,gid=5678,_netdev,noauto"
OPTS="$OPTS,x-systemd.automount,x-systemd.idle-timeout=60,cache_dir=$CACHE"
# the fstab form for a program given by path: fuse, PROGRAM#SOURCE
printf '%s %s fuse %s 0 0\n' "$TESTDIR/bin/ocifs#$REG" "$M" "$OPTS" >"$FSTAB"
check_fail "the host's mount table does not have it (a private namespace)" \
	grep -q "$TESTDIR" "/proc/1/mounts"

fstab_mount() {
	mount -T "$FSTAB" "$M" >"$TESTDIR/mount.out" 2>&1
	check_eq "$1: mount -T FSTAB DIR exits 0" 0 "$?" || diag_file "$TESTDIR/mount.out"
	check_eq "$1: mounted as fuse.ocifs" fuse.ocifs "$(findmnt -n -o FSTYPE "$M")"
	check "$1: read-only, allow_other and default_permissions reach the kernel" \
		sh -c "findmnt -n -o OPTIONS '$M' | grep -q '^ro,' &&
			findmnt -n -o OPTIONS '$M' | grep -q allow_other &&
			findmnt -n -o OPTIONS '$M' | grep -q default_permissions"
	check_eq "$1: uid= and gid= own the files" "1234:5678" "$(stat -c %u:%g "$M/fs/app/v1/f.txt")"
	check_eq "$1: another user reads (allow_other)" "from fstab" \
		"$(setpriv --reuid=65534 --regid=65534 --clear-groups cat "$M/fs/app/v1/f.txt" 2>&1)"
	check_err "$1: ro refuses writes" "Read-only file system" touch "$M/fs/app/v1/new"
	pid=$(pgrep -f -- " $M" | head -n 1)
	[ -n "$pid" ] && _LIB_DAEMON_PIDS+=("$pid")
	check "$1: umount" umount "$M"
	check "$1: no daemon left" wait_until 10 no_process " $M"
}
no_process() { ! pgrep -f -- "$1" >/dev/null; }
fstab_mount "fuse PROGRAM#SOURCE"

# the same line as fuse.ocifs: mount(8) runs /sbin/mount.fuse3, which finds
# ocifs in a fixed PATH: only where the installed ocifs is this build
installed=$(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v ocifs)
if [ -n "$installed" ] && cmp -s "$installed" "$OCIFS"; then
	printf '%s %s fuse.ocifs %s 0 0\n' "$REG" "$M" "$OPTS" >"$FSTAB"
	fstab_mount "fuse.ocifs"
else
	echo "# fstype fuse.ocifs not tried: this ocifs is not the installed one"
fi

# without allow_other, only the mounting user gets in
printf '%s %s fuse ro,cache_dir=%s 0 0\n' "$TESTDIR/bin/ocifs#$REG" "$M" "$CACHE" >"$FSTAB"
mount -T "$FSTAB" "$M" || bail "mount without allow_other"
check_err "without allow_other another user is refused" "Permission denied" \
	setpriv --reuid=65534 --regid=65534 --clear-groups cat "$M/fs/app/v1/f.txt"
pid=$(pgrep -f -- " $M" | head -n 1)
[ -n "$pid" ] && _LIB_DAEMON_PIDS+=("$pid")
umount "$M"

# an option ocifs does not know: refused, by name, nothing mounted
printf '%s %s fuse ro,cache_dir=%s,cache_sise=1G 0 0\n' "$TESTDIR/bin/ocifs#$REG" "$M" \
	"$CACHE" >"$FSTAB"
mount -T "$FSTAB" "$M" >"$TESTDIR/bad.out" 2>&1
check "an unknown option: mount fails" test "$?" -ne 0
check "naming the option" grep -q "cache_sise" "$TESTDIR/bad.out"
check_fail "and nothing is mounted" mountpoint -q "$M"
finish

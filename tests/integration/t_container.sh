#!/bin/bash
# A container reads an artifact through the mount: with -o ro,allow_other,
# a process in new user, mount and pid namespaces (unshare, as an
# unprivileged user mapped to root inside) binds one artifact directory
# read-only at /data of its root and reads it there. Without allow_other the
# same container is refused.
T_TIMEOUT=${T_TIMEOUT:-180}
# in a mount namespace of its own: the container's copies the test's mounts only
if [ -z "${OCIFS_IN_NS:-}" ]; then
	[ "$(id -u)" = 0 ] || { echo "# SKIP needs root (FUSE mounts, setpriv)"; exit 77; }
	OCIFS_IN_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env unshare setpriv chroot
[ -x /bin/busybox ] || skip_all "busybox-static not installed"
[ "$(id -u)" = 0 ] || skip_all "needs root (FUSE mounts, setpriv)"

registry_start container
W=$TESTDIR/w
mkdir -p "$W/sub"
echo "model weights" >"$W/model.bin"
echo "config" >"$W/sub/config.yaml"
push_artifact ct/model v1 "$W" model.bin sub/config.yaml >/dev/null || bail "seed ct/model:v1"

chmod 755 "$TESTDIR" # the container's user reaches the mount point and its root
ROOT=$TESTDIR/root
mkdir -p "$ROOT/bin" "$ROOT/data" "$ROOT/proc"
cp /bin/busybox "$ROOT/bin/busybox"
chmod -R a+rX "$ROOT"

# container MNT CMD: CMD run by busybox sh in the container, MNT/ct/model/v1 at /data
container() {
	setpriv --reuid=65534 --regid=65534 --clear-groups \
		unshare -U -m -p -f --map-root-user --mount-proc="$ROOT/proc" sh -c '
		mount --bind "$1/ct/model/v1" "$2/data" &&
			mount -o remount,bind,ro "$2/data" &&
			exec chroot "$2" /bin/busybox sh -c "$3"' sh "$1" "$ROOT" "$2" 2>&1
}

M=$TESTDIR/mnt
mount_ocifs "$REG" "$M" -o ro,allow_other || bail "mount"
check_eq "the container reads the artifact at /data" "model weights" \
	"$(container "$M" 'cat /data/model.bin')"
check_eq "its subdirectories too" "config" "$(container "$M" 'cat /data/sub/config.yaml')"
check_eq "it is root in its own user namespace" "0" "$(container "$M" 'id -u')"
check_eq "and pid 1 in its own pid namespace" "1" "$(container "$M" 'echo $$')"
has() { [[ $1 == *"$2"* ]]; }
out=$(container "$M" 'echo x >/data/new.txt')
check "writing to /data is refused: $out" has "$out" "Read-only file system"
check_ls "the container's view is exactly the artifact" "$M/ct/model/v1" model.bin sub
umount_ocifs "$M"

mount_ocifs "$REG" "$M" -o ro || bail "mount without allow_other"
check_fail "without allow_other the container cannot even bind it" container "$M" 'cat /data/model.bin'
check "not a byte of it reaches the container" \
	bash -c '! [[ "$1" == *"model weights"* ]]' sh "$(container "$M" 'cat /data/model.bin')"
umount_ocifs "$M"
finish

#!/bin/bash
# ocifs demo: start a throwaway registry on 127.0.0.1, push a few sample
# artifacts and an image into it with real clients, and mount it with ocifs.
#
#   bash contrib/demo.sh [MOUNTPOINT]        (default /mnt/ocifs)
#
# Run as root on Debian 12 from anywhere; it installs what is missing
# (contrib/install-deps.sh) and builds ./ocifs in the project root when it
# is not there yet. It prints what to try and writes a stop script.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MNT=${1:-/mnt/ocifs}

die() {
	echo "demo.sh: $*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and mounts)"
cd "$ROOT" || die "cannot cd to $ROOT"

echo "== installing dependencies (contrib/install-deps.sh)"
sh contrib/install-deps.sh || die "installing dependencies failed"

if [ ! -x ./ocifs ]; then
	echo "== building ocifs"
	{ autoreconf -fi && ./configure && make; } || die "build failed"
fi
[ -x ./ocifs ] || die "./ocifs was not built"

if mountpoint -q "$MNT" 2>/dev/null; then
	die "$MNT is already a mount point; unmount it first (fusermount3 -u $MNT)"
fi
mkdir -p "$MNT" || die "cannot create $MNT"

# The registry's storage must outlive this script: keep it off /tmp's
# cleaners unless TMPDIR says otherwise.
export TMPDIR=${TMPDIR:-/var/tmp}
export OCIFS=$ROOT/ocifs srcdir=$ROOT
T_TIMEOUT=600
# shellcheck source=../tests/integration/lib.sh
. "$ROOT/tests/integration/lib.sh"

echo "== starting a registry on 127.0.0.1"
REG_PORT_WANT=5000 registry_start demo
registry_keep

echo "== pushing sample content to $REG"
S=$TESTDIR/samples
mkdir -p "$S/hello/docs" "$S/hello2" "$S/rootfs/etc" "$S/rootfs/usr/share/demo"
printf 'Hello from ocifs\n' >"$S/hello/hello.txt"
cat >"$S/hello/docs/readme.md" <<'EOF'
# ocifs demo

This file is a layer of the OCI artifact demo/hello:v1, titled
`docs/readme.md`, as `oras push` would make it. ocifs shows it as a file.
EOF
printf 'Hello again, this is v2\n' >"$S/hello2/hello.txt"
printf 'Welcome to a container image seen through ocifs\n' >"$S/rootfs/etc/motd"
printf 'some data\n' >"$S/rootfs/usr/share/demo/data.txt"

CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) ANNOTATIONS='{"org.opencontainers.image.description":"ocifs demo artifact"}' \
	push_artifact demo/hello v1 "$S/hello" >/dev/null || die "push demo/hello:v1"
push_artifact demo/hello v2 "$S/hello2" >/dev/null || die "push demo/hello:v2"
push_platform_index demo/multi latest linux/amd64 linux/arm64 >/dev/null || die "push demo/multi:latest"
IMAGE=no
if command -v umoci >/dev/null && command -v skopeo >/dev/null; then
	if image_build "$TESTDIR/layout" demo linux/amd64 "$S/rootfs" >"$TESTDIR/umoci.log" 2>&1 &&
		push_image "$TESTDIR/layout" demo demo/image latest oci >/dev/null 2>&1; then
		IMAGE=yes
	else
		echo "(skipping the sample image: umoci/skopeo failed)" >&2
	fi
fi

echo "== mounting $REG at $MNT"
if ! "$OCIFS" "$REG" "$MNT"; then
	kill "$REG_PID" 2>/dev/null
	die "ocifs failed to mount $REG at $MNT"
fi

STOP=$REG_ROOT/stop.sh
cat >"$STOP" <<EOF
#!/bin/sh
# Stop the ocifs demo: unmount, stop the registry, remove its storage.
fusermount3 -u '$MNT' 2>/dev/null || umount '$MNT'
kill $REG_PID 2>/dev/null
rm -rf '$REG_ROOT'
echo "ocifs demo stopped"
EOF
chmod +x "$STOP"

# Stop the harness' watchdog: the demo's registry and mount stay up.
[ -n "$_LIB_WATCHDOG" ] && kill "$_LIB_WATCHDOG" 2>/dev/null
_LIB_WATCHDOG=

cat <<EOF

ocifs demo is up.
  registry   http://$REG   (pid $REG_PID, storage $REG_ROOT)
  mount      $MNT   (SOURCE $REG: the registry is the mount's root)

Try:
  ls $MNT                                   # repositories (from _catalog)
  ls $MNT/demo/hello                        # tags: v1 v2
  ls -l $MNT/demo/hello/v1                  # the artifact's files
  cat $MNT/demo/hello/v1/hello.txt
  cat $MNT/demo/hello/v1/docs/readme.md
  cat $MNT/demo/hello:v2/hello.txt          # a reference pastes as a path
  cat $MNT/demo/hello/v1/.oci/manifest.json # hidden control directory
  getfattr -d $MNT/demo/hello/v1            # digest, media type, annotations
  cat $MNT/demo/multi/latest/platform.txt   # index: this host's platform
  ls $MNT/demo/multi/latest/.oci/platforms/linux
EOF
if [ "$IMAGE" = yes ]; then
	cat <<EOF
  ls -l $MNT/demo/image/latest                  # a container image's root filesystem
  ls $MNT/demo/image/latest/.oci/blobs/sha256   # its blobs
  jq . $MNT/demo/image/latest/.oci/config.json
EOF
fi
cat <<EOF

Push by writing (what oras push makes; sync pushes at once):
  mkdir $MNT/demo/hello/v3 && echo new >$MNT/demo/hello/v3/new.txt && sync $MNT/demo/hello/v3
  mkdir -p $MNT/demo/hello/v3/.oci/referrers/application/vnd.example.note/n1
  echo note >$MNT/demo/hello/v3/.oci/referrers/application/vnd.example.note/n1/note.txt
or with the usual clients, e.g.
  skopeo copy --dest-tls-verify=false oci:LAYOUT:TAG docker://$REG/REPO:TAG

Stop:
  fusermount3 -u $MNT
  kill $REG_PID            # the registry
or simply run
  $STOP
EOF

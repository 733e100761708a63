#!/bin/sh
# Install everything ocifs needs to build, run its demo and run its tests,
# on Debian 12 (bookworm), as root. (contrib/libfuse-3.17.sh builds the libfuse
# that contrib/test.sh's passthrough pass uses with dpkg-dev, meson and ninja-build.)
set -eu
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" != 0 ]; then
	echo "install-deps.sh: run as root" >&2
	exit 1
fi
pkgs="build-essential autoconf automake libtool pkg-config
	libfuse3-dev fuse3 libcurl4-openssl-dev libssl-dev libjson-c-dev
	zlib1g-dev libzstd-dev zstd
	docker-registry skopeo umoci curl ca-certificates attr jq
	apache2-utils openssl procps psmisc socat python3 busybox-static
	systemd python3-yaml file valgrind clang-format podman man-db
	containerd stargz-snapshotter dpkg-dev meson ninja-build"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	apt-get update -q
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing
fi
# The Debian package starts a registry on :5000 through systemd where there
# is one; the tests start their own and do not need it.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

#!/bin/sh
# libfuse-3.17.sh PREFIX: build libfuse 3.17 (Debian 13's source package,
# with Debian's patches) and install it under PREFIX, for ocifs to be built
# and tested with FUSE passthrough on Debian 12, whose libfuse is 3.14.
# The system is left alone: the source comes through apt with a sources
# list, package lists and a download cache of this script's own, and the
# library goes only into PREFIX (PREFIX/lib/pkgconfig/fuse3.pc, no
# fusermount3: as root libfuse mounts without it, else it uses the
# system's). Nothing is done when PREFIX already has libfuse >= 3.17.
# Needs dpkg-dev, meson and ninja-build (contrib/install-deps.sh); takes
# some 15 s.
set -eu
if [ $# != 1 ]; then
	echo "usage: $0 PREFIX" >&2
	exit 2
fi
mkdir -p "$1"
prefix=$(cd "$1" && pwd)
if PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --atleast-version=3.17 fuse3 2>/dev/null; then
	echo "libfuse-3.17.sh: $prefix has libfuse" \
		"$(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --modversion fuse3)"
	exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/libfuse-3.17.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
cat >"$work/trixie.sources" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
set -- -o "Dir::Etc::sourcelist=$work/trixie.sources" -o Dir::Etc::sourceparts=- \
	-o "Dir::State::lists=$work/lists" -o "Dir::Cache=$work/cache" \
	-o APT::Sandbox::User=root
apt-get -q "$@" update
(cd "$work" && apt-get -q "$@" source --download-only fuse3)
dsc=$(ls "$work"/fuse3_3.*.dsc)
(cd "$work" && dpkg-source -x "$dsc" src)
version=$(sed -n "s/^ *version *: *'\([0-9.]*\)'.*/\1/p" "$work/src/meson.build" | head -n 1)
case $version in
3.1[7-9].* | 3.[2-9][0-9].*) ;;
*)
	echo "libfuse-3.17.sh: Debian 13's fuse3 is $version, not 3.17 or later" >&2
	exit 1
	;;
esac
cd "$work/src"
meson setup build --prefix="$prefix" --libdir=lib -Dexamples=false -Dutils=false \
	-Dtests=false
ninja -C build install
echo "libfuse-3.17.sh: libfuse $version installed in $prefix"

#!/bin/sh
# Install what is needed, build, and run every test: the README's test command.
# Run as root from the project root (the integration tests mount FUSE).
set -eu
cd "$(dirname "$0")/.."
sh contrib/install-deps.sh
autoreconf -fi
./configure --enable-werror ${CONFIGURE_FLAGS:-}
make -j"$(nproc)"
# Installed, so that `mount -t fuse.ocifs` (which finds helpers through a
# fixed PATH) is tested with this build too.
make install
make check

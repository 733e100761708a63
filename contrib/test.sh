#!/bin/sh
# Install what is needed, build, and run every test: the README's test command.
# Run as root from the project root (the integration tests mount FUSE).
# The suite runs twice: on the normal build, then on an AddressSanitizer +
# UndefinedBehaviorSanitizer build of a clean copy of the sources (any report
# in a daemon's log fails the test that started it).
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
sh contrib/install-deps.sh
autoreconf -fi
./configure --enable-werror ${CONFIGURE_FLAGS:-}
make -j"$(nproc)"
# Installed, so that `mount -t fuse.ocifs` (which finds helpers through a
# fixed PATH) is tested with this build too.
make install
make check

rm -rf build-sanitizers
make distdir distdir=build-sanitizers
cd build-sanitizers
./configure --enable-werror --enable-sanitizers
make -j"$(nproc)"
ORAS_FIXTURES="$top/../shared/fixtures/oras-e2e" make check

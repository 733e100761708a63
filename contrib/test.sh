#!/bin/sh
# Install what is needed, build, and run every test: the README's test command.
# Run as root from the project root (the integration tests mount FUSE).
# It checks the formatting of the C sources first.
# The suite runs twice: on the normal build, then on an AddressSanitizer +
# UndefinedBehaviorSanitizer build of a clean copy of the sources (any report
# in a daemon's log fails the test that started it).
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
sh contrib/install-deps.sh

# Formatting first, so that a misformatted file fails the run in seconds.
# The files the project formats with its .clang-format (clang-format 14, as
# Debian 12 ships it; other versions format some constructs differently).
if ! clang-format --dry-run -Werror src/*.c src/*.h tests/unit/*.c tests/unit/*.h \
	tests/fuzz/*.c; then
	echo "test.sh: files above are not formatted: run clang-format -i on them" \
		"($(clang-format --version))" >&2
	exit 1
fi

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

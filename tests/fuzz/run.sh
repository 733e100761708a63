#!/bin/bash
# Fuzz with libFuzzer: builds a target of tests/fuzz/ (fuzz_layer: tar,
# stored index, gzip and zstd layers; fuzz_parsers: references, manifests,
# WWW-Authenticate, Link, credential files, platforms, signature payloads) and the library's
# sources with clang -fsanitize=fuzzer,address,undefined, then runs it from
# its corpus (tests/fuzz/corpus/TARGET).
#
#   bash tests/fuzz/run.sh [BUILDDIR] [SECONDS] [TARGET]
#
# BUILDDIR is a configured build directory (for config.h; default .),
# SECONDS how long to fuzz (default 60). New inputs that add coverage go to
# a scratch corpus; crashes are written to ./crash-* and fail the run.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-.}" && pwd)
secs=${2:-60}
target=${3:-fuzz_layer}
[ -f "$build/config.h" ] || { echo "no config.h in $build: configure first" >&2; exit 2; }
command -v clang >/dev/null || apt-get install -y clang >/dev/null
out=$(mktemp -d /tmp/ocifs-fuzz.XXXXXX)
trap 'rm -rf "$out"' EXIT
flags=$(pkg-config --cflags --libs fuse3 libcurl json-c libcrypto zlib libzstd)
libsrc=$(ls "$src"/src/*.c | grep -v '/main\.c$')
# shellcheck disable=SC2086
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-DFUSE_USE_VERSION=35 -D_FILE_OFFSET_BITS=64 -pthread -I"$build" -I"$src/src" \
	"$src/tests/fuzz/$target.c" $libsrc $flags -o "$out/$target"
mkdir -p "$out/corpus"
cp "$src/tests/fuzz/corpus/$target"/* "$out/corpus/"
"$out/$target" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 \
	"$out/corpus" 2>&1 | grep -v '^ocifs: ' | grep -v "^  " | tail -n 40

#!/bin/bash
# Fuzz the layer code (tar, stored index, gzip and zstd layers) with
# libFuzzer: builds tests/fuzz/fuzz_layer.c and the library's sources with
# clang -fsanitize=fuzzer,address,undefined, then runs from the corpus.
#
#   bash tests/fuzz/run.sh [BUILDDIR] [SECONDS]
#
# BUILDDIR is a configured build directory (for config.h; default .),
# SECONDS how long to fuzz (default 60). New inputs that add coverage go to
# a scratch corpus; crashes are written to ./crash-* and fail the run.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-.}" && pwd)
secs=${2:-60}
[ -f "$build/config.h" ] || { echo "no config.h in $build: configure first" >&2; exit 2; }
command -v clang >/dev/null || apt-get install -y clang >/dev/null
out=$(mktemp -d /tmp/ocifs-fuzz.XXXXXX)
trap 'rm -rf "$out"' EXIT
flags=$(pkg-config --cflags --libs fuse3 libcurl json-c libcrypto zlib libzstd)
libsrc=$(ls "$src"/src/*.c | grep -v '/main\.c$')
# shellcheck disable=SC2086
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-DFUSE_USE_VERSION=35 -D_FILE_OFFSET_BITS=64 -pthread -I"$build" -I"$src/src" \
	"$src/tests/fuzz/fuzz_layer.c" $libsrc $flags -o "$out/fuzz_layer"
mkdir -p "$out/corpus"
cp "$src"/tests/fuzz/corpus/* "$out/corpus/"
"$out/fuzz_layer" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 \
	"$out/corpus" 2>&1 | grep -v '^ocifs: ' | grep -v "^  " | tail -n 40

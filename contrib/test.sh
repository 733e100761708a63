#!/bin/sh
# Install what is needed, build, and run every test: the README's test command.
# Run as root from the project root (the integration tests mount FUSE).
# It checks the formatting of the C sources first.
# The suite runs on the normal build, then on an AddressSanitizer +
# UndefinedBehaviorSanitizer build of a clean copy of the sources, then on a
# ThreadSanitizer build of another clean copy (any report in a daemon's log
# fails the test that started it), then the tests of reading and the cache
# on a build of a fourth copy against libfuse 3.17, where verified blobs
# open in FUSE passthrough. Each pass runs its tests side by side
# (tests/run-tests.sh, TEST_JOBS); a pass that fails does not stop the next
# one. Each pass's output is kept in tests/logs/PASS.pass.log; the last
# lines are each pass's summary and then the total:
#   N passed, N failed, N skipped
# and the exit status is non-zero when any pass failed.
set -u
cd "$(dirname "$0")/.." || exit 1
top=$(pwd)
sh contrib/install-deps.sh || exit 1

# Formatting first, so that a misformatted file fails the run in seconds.
# The files the project formats with its .clang-format (clang-format 14, as
# Debian 12 ships it; other versions format some constructs differently).
if ! clang-format --dry-run -Werror src/*.c src/*.h tests/unit/*.c tests/unit/*.h \
	tests/stress/*.c tests/fuzz/*.c; then
	echo "test.sh: files above are not formatted: run clang-format -i on them" \
		"($(clang-format --version))" >&2
	exit 1
fi

fixtures=$top/../shared/fixtures/oras-e2e
mkdir -p "$top/tests/logs"
summaries=$top/tests/logs/test-sh.summaries
: >"$summaries"

# run_pass NAME CMD...: run CMD, its output shown and kept in
# tests/logs/NAME.pass.log; its summary line (or one failure, when it
# stopped before one) goes to $summaries.
run_pass() {
	name=$1
	shift
	log=$top/tests/logs/$name.pass.log
	echo "==== $name pass"
	{
		"$@"
		echo "$?" >"$log.rc"
	} 2>&1 | tee "$log"
	rc=$(cat "$log.rc" 2>/dev/null || echo 1)
	note=""
	# shellcheck disable=SC2046
	set -- $(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$log" | tail -n 1 | tr -dc '0-9 ')
	if [ $# != 3 ]; then
		set -- 0 1 0
		note=" (it stopped before its tests, status $rc: see $log)"
	elif [ "$rc" != 0 ] && [ "$2" = 0 ]; then
		set -- "$1" 1 "$3"
		note=" (make check failed, status $rc: see $log)"
	fi
	echo "$name: $1 passed, $2 failed, $3 skipped$note" >>"$summaries"
}

normal() {
	autoreconf -fi &&
		./configure --enable-werror ${CONFIGURE_FLAGS:-} &&
		make -j"$(nproc)" &&
		# Installed, so that `mount -t fuse.ocifs` (which finds helpers
		# through a fixed PATH) is tested with this build too.
		make install &&
		make check
}

asan() {
	cd "$top" &&
		rm -rf build-sanitizers &&
		make distdir distdir=build-sanitizers &&
		cd build-sanitizers &&
		./configure --enable-werror --enable-sanitizers &&
		make -j"$(nproc)" &&
		ORAS_FIXTURES=$fixtures make check
}

# ThreadSanitizer: every unit and integration test, t_stress.sh among them
# (the fuzz targets run one thread: they are left to the other two passes).
# A report does not stop the daemon (halt_on_error=0): it exits 66 at the
# end, and the report in its log fails the test.
# report_signal_unsafe=0: the signal handlers libfuse installs are not
# instrumented and not ours. contrib/tsan.supp may name only reports inside
# libraries that are not built with -fsanitize=thread.
tsan() {
	cd "$top" &&
		rm -rf build-tsan &&
		make distdir distdir=build-tsan &&
		cd build-tsan &&
		./configure --enable-werror --enable-sanitizers=thread &&
		make -j"$(nproc)" &&
		TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 report_signal_unsafe=0 \
suppressions=$top/build-tsan/contrib/tsan.supp ${TSAN_OPTIONS:-}" \
			ORAS_FIXTURES=$fixtures make check FUZZ_TESTS=
}

# FUSE passthrough: libfuse 3.17 built into build-libfuse-3.17/ (once:
# contrib/libfuse-3.17.sh), ocifs built against it and run with it (its
# path in the binary), and the tests of reading, the cache and models on it.
# t_layerstore stacks overlayfs over the mount, which passthrough must allow.
# Left to the other passes: what never opens a blob's file through the
# kernel (t_cacherace drives the cache alone; image and TOC files are read
# through their layers), and the cache's locking (t_cachelock).
PASSTHROUGH_TESTS="t_passthrough t_cache t_status t_tree t_models t_lifetime t_layerstore
	t_stress"
passthrough() {
	fuse=$top/build-libfuse-3.17
	cd "$top" &&
		sh contrib/libfuse-3.17.sh "$fuse" &&
		rm -rf build-passthrough &&
		make distdir distdir=build-passthrough &&
		cd build-passthrough &&
		PKG_CONFIG_PATH=$fuse/lib/pkgconfig ./configure --enable-werror \
			LDFLAGS="-Wl,-rpath,$fuse/lib" &&
		make -j"$(nproc)" &&
		if ! ./ocifs --version | grep -qx 'using libfuse 3\.\(1[7-9]\|[2-9][0-9]\)\..*'; then
			echo "test.sh: build-passthrough/ocifs does not run with libfuse 3.17:" \
				"$(./ocifs --version | tail -n 1)" >&2
			false
		fi &&
		make check UNIT_TESTS= FUZZ_TESTS= INTEGRATION_TESTS="$(
			for t in $PASSTHROUGH_TESTS; do printf 'tests/integration/%s.sh ' "$t"; done
		)"
}

run_pass normal normal
run_pass asan asan
run_pass tsan tsan
run_pass passthrough passthrough

echo "==== summary"
cat "$summaries"
awk '{ p += $2; f += $4; s += $6 } END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' \
	"$summaries" | tee "$summaries.total"
[ "$(cut -d' ' -f3 "$summaries.total")" = 0 ]

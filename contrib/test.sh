#!/bin/sh
# Install what is needed, build, and run every test: the README's test command.
# Run as root from the project root (the integration tests mount FUSE).
# It checks the formatting of the C sources first.
# The suite runs in four passes: on the normal build; on an AddressSanitizer
# + UndefinedBehaviorSanitizer build of a clean copy of the sources; on a
# ThreadSanitizer build of another clean copy (any report in a daemon's log
# fails the test that started it); and the tests of reading and the cache on
# a build of a fourth copy against libfuse 3.17, where verified blobs open in
# FUSE passthrough. The four builds and passes run side by side: each pass
# starts when its build is done, and every test of every pass takes one of
# TEST_SLOTS places (default 3 per core) before it starts, so that the
# machine stays busy to the end without running more at once than one pass
# did (tests/run-tests.sh). A pass that fails does not stop the others.
# Each pass's output is kept in tests/logs/PASS.pass.log and shown when the
# pass ends; the last lines are each pass's summary and then the total:
#   N passed, N failed, N skipped
# and the exit status is non-zero when any pass failed.
set -u
cd "$(dirname "$0")/.." || exit 1
top=$(pwd)
sh contrib/install-deps.sh || exit 1
# libfuse 3.17 for the passthrough pass: built once per machine, as the
# packages are installed once (Debian 13's source, contrib/libfuse-3.17.sh)
fuse=${OCIFS_LIBFUSE_PREFIX:-/opt/ocifs/libfuse-3.17}
sh contrib/libfuse-3.17.sh "$fuse" || exit 1

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
started=$(date +%s)

# The places tests take (tests/run-tests.sh): a FIFO holding one byte per place.
slots=$top/tests/logs/test-sh.slots
rm -f "$slots"
mkfifo "$slots" || exit 1
exec 9<>"$slots"
n=${TEST_SLOTS:-$(($(nproc) * 3))}
while [ "$n" -gt 0 ]; do
	printf x >&9
	n=$((n - 1))
done
TEST_SLOTS_FIFO=$slots
export TEST_SLOTS_FIFO

# run_pass NAME: run the function NAME_build, then NAME_check, their output
# kept in tests/logs/NAME.pass.log and shown when the pass ends; its
# summary line (or one failure, when it stopped before one) goes to
# $summaries, with the seconds its build and its tests took.
run_pass() {
	name=$1
	log=$top/tests/logs/$name.pass.log
	t0=$(date +%s)
	rm -f "$log.rc" "$log.build" # a run before this one's
	(
		rc=0
		"${name}_build" || rc=$?
		echo "$rc $(($(date +%s) - t0))" >"$log.build"
		if [ "$rc" = 0 ]; then
			"${name}_check"
			rc=$?
		fi
		echo "$rc" >"$log.rc"
	) >"$log" 2>&1 </dev/null
	rc=$(cat "$log.rc" 2>/dev/null || echo 1)
	read -r _ bsecs <"$log.build" || bsecs=0
	times="build ${bsecs} s, tests $(($(date +%s) - t0 - bsecs)) s"
	note=""
	# shellcheck disable=SC2046
	set -- $(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$log" | tail -n 1 | tr -dc '0-9 ')
	if [ $# != 3 ]; then
		set -- 0 1 0
		note=", it stopped before its tests, status $rc: see $log"
	elif [ "$rc" != 0 ] && [ "$2" = 0 ]; then
		set -- "$1" 1 "$3"
		note=", make check failed, status $rc: see $log"
	fi
	# one pass's output at a time
	flock "$summaries" sh -c 'echo "==== $1 pass"; cat "$2"; echo "$3" >>"$4"' sh "$name" "$log" \
		"$name: $1 passed, $2 failed, $3 skipped ($times$note)" "$summaries"
}

# Each build but the first is of a clean copy of the sources (make distdir
# of the normal tree, made first and configured before anything is built).
prepare() {
	autoreconf -fi &&
		./configure --enable-werror ${CONFIGURE_FLAGS:-} &&
		for d in build-sanitizers build-tsan build-passthrough; do
			rm -rf "$d" && make distdir distdir="$d" || return 1
		done
}

normal_build() {
	make -j"$(nproc)" &&
		# Installed, so that `mount -t fuse.ocifs` (which finds helpers
		# through a fixed PATH) is tested with this build too.
		make install
}
normal_check() { make check; }

asan_build() {
	cd "$top/build-sanitizers" &&
		./configure --enable-werror --enable-sanitizers &&
		make -j"$(nproc)"
}
asan_check() { ORAS_FIXTURES=$fixtures make check; }

# ThreadSanitizer: every unit and integration test, t_stress.sh among them
# (the fuzz targets run one thread: they are left to the other two passes).
# A report does not stop the daemon (halt_on_error=0): it exits 66 at the
# end, and the report in its log fails the test.
# report_signal_unsafe=0: the signal handlers libfuse installs are not
# instrumented and not ours. contrib/tsan.supp may name only reports inside
# libraries that are not built with -fsanitize=thread.
tsan_build() {
	cd "$top/build-tsan" &&
		./configure --enable-werror --enable-sanitizers=thread &&
		make -j"$(nproc)"
}
tsan_check() {
	TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 report_signal_unsafe=0 \
suppressions=$top/build-tsan/contrib/tsan.supp ${TSAN_OPTIONS:-}" \
		ORAS_FIXTURES=$fixtures make check FUZZ_TESTS=
}

# FUSE passthrough: ocifs built against libfuse 3.17 (in $fuse) and run with
# it (its path in the binary), and the tests of reading, the cache and
# models on it. t_layerstore stacks overlayfs over the mount, which
# passthrough must allow. Left to the other passes: what never opens a
# blob's file through the kernel (t_cacherace drives the cache alone; image
# and TOC files are read through their layers), and the cache's locking
# (t_cachelock).
PASSTHROUGH_TESTS="t_passthrough t_keeper t_keeper_push t_cache t_status t_tree t_models t_lifetime t_layerstore
	t_stress"
passthrough_build() {
	cd "$top/build-passthrough" &&
		PKG_CONFIG_PATH=$fuse/lib/pkgconfig ./configure --enable-werror \
			LDFLAGS="-Wl,-rpath,$fuse/lib" &&
		make -j"$(nproc)" ocifs &&
		if ! ./ocifs --version | grep -qx 'using libfuse 3\.\(1[7-9]\|[2-9][0-9]\)\..*'; then
			echo "test.sh: build-passthrough/ocifs does not run with libfuse 3.17:" \
				"$(./ocifs --version | tail -n 1)" >&2
			false
		fi
}
passthrough_check() {
	make check UNIT_TESTS= FUZZ_TESTS= INTEGRATION_TESTS="$(
		for t in $PASSTHROUGH_TESTS; do printf 'tests/integration/%s.sh ' "$t"; done
	)"
}

echo "==== prepare (autoreconf, configure, copies of the sources)"
if ! prepare >"$top/tests/logs/prepare.log" 2>&1; then
	cat "$top/tests/logs/prepare.log"
	echo "test.sh: autoreconf, configure or make distdir failed" >&2
	echo "0 passed, 1 failed, 0 skipped"
	exit 1
fi
echo "==== the passes run side by side; each is shown when it ends"
for p in normal tsan asan passthrough; do
	run_pass "$p" &
done
wait

echo "==== summary ($(($(date +%s) - started)) s in all)"
cat "$summaries"
awk '{ p += $2; f += $4; s += $6 } END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' \
	"$summaries" | tee "$summaries.total"
[ "$(cut -d' ' -f3 "$summaries.total")" = 0 ]

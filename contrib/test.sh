#!/bin/sh
# Install what is needed, build, and run every test: the README's test command.
# Run as root from the project root (the integration tests mount FUSE).
# It checks the formatting of the C sources first.
# The suite runs on the normal build, then on an AddressSanitizer +
# UndefinedBehaviorSanitizer build of a clean copy of the sources, then on a
# ThreadSanitizer build of another clean copy (any report in a daemon's log
# fails the test that started it).
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

# ThreadSanitizer: the unit tests and the integration tests where the
# daemon's threads meet, t_stress.sh among them: all but those in TSAN_SKIP.
# t_crash.sh counts what a kill -9 cuts short, which the slower daemon
# changes. The others are left to the other two passes so that the whole
# run stays under 30 minutes here (they ran clean under it on 2026-11-27 and
# 2026-11-28): t_faults.sh, t_retry.sh, t_mirror.sh, t_credhelper.sh and
# t_auth.sh mostly wait out retries, timeouts and token lifetimes;
# t_badinput.sh feeds parsers one input at a time; t_cachelock.sh locks
# between processes, which ThreadSanitizer does not see; the command line,
# daemon, fstab, systemd, README, container, mTLS, safety, referrers and oras
# tests drive one request at a time. The fuzz targets run one thread: not
# here. A report does not stop the daemon (halt_on_error=0): it exits 66
# at the end, and the report in its log fails the test.
# report_signal_unsafe=0: the signal handlers libfuse installs are not
# instrumented and not ours. contrib/tsan.supp may name only reports inside
# libraries that are not built with -fsanitize=thread.
cd "$top"
rm -rf build-tsan
make distdir distdir=build-tsan
cd build-tsan
./configure --enable-werror --enable-sanitizers=thread
make -j"$(nproc)"
tsan_skip="t_crash t_faults t_retry t_mirror t_credhelper t_auth t_badinput t_cachelock"
tsan_skip="$tsan_skip t_cli t_daemon t_fstab t_contrib t_readme t_container t_mtls t_safety"
tsan_skip="$tsan_skip t_referrers t_oras_table t_oras_fixtures"
integration=""
for f in tests/integration/t_*.sh; do
	t=$(basename "$f" .sh)
	case " ${TSAN_SKIP-$tsan_skip} " in *" $t "*) continue ;; esac
	integration="$integration \$(srcdir)/$f"
done
TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 report_signal_unsafe=0 \
suppressions=$top/build-tsan/contrib/tsan.supp ${TSAN_OPTIONS:-}" \
	ORAS_FIXTURES="$top/../shared/fixtures/oras-e2e" make check FUZZ_TESTS= INTEGRATION_TESTS="$integration"

#!/bin/sh
# Run every test program given, each printing TAP-style "ok - ..." and
# "not ok - ..." lines; exit 0 pass, 1 fail, 77 skip. Prints each program's
# output into tests/logs/ and a summary, ending with one line:
#   N passed, N failed, N skipped
# A program that fails without a "not ok" line counts as one failure.
set -u
logdir=${TEST_LOGDIR:-$(pwd)/tests/logs}
mkdir -p "$logdir"
passed=0 failed=0 skipped=0
for t in "$@"; do
	name=$(basename "$t")
	log="$logdir/$name.log"
	case "$t" in
	*.sh) bash "$t" >"$log" 2>&1 ;;
	*) "$t" >"$log" 2>&1 ;;
	esac
	rc=$?
	ok=$(grep -c '^ok ' "$log")
	nok=$(grep -c '^not ok ' "$log")
	if [ "$rc" = 77 ]; then
		skipped=$((skipped + 1))
		echo "SKIP: $name ($(grep -m1 -i '^# skip' "$log" || echo 'skipped'))"
		continue
	fi
	if [ "$rc" != 0 ] && [ "$nok" = 0 ]; then
		nok=1
		echo "not ok - $name exited $rc" >>"$log"
	fi
	passed=$((passed + ok))
	failed=$((failed + nok))
	if [ "$nok" = 0 ]; then
		echo "PASS: $name ($ok)"
	else
		echo "FAIL: $name ($ok passed, $nok failed; log: $log)"
		grep '^not ok ' "$log" | sed 's/^/    /'
	fi
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]

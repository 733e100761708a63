#!/bin/bash
# The cache (src/cache.c), its fetch workers, hashing at the frontier,
# finalization and eviction, driven by tests/stress/cache_stress.c through
# the real registry client against a real registry, with faultproxy.py
# between them. Its "jitter" (from a seed) sends every blob answer in
# pieces of 1 to 8192 bytes, each after no pause, a yield or a sleep of up
# to a millisecond; in the race, requests for one blob in flight at once
# hold the last piece of their answers (or, half of them, the whole body)
# until all of them are there (20 ms at most): the fetch jobs of one blob
# end together, where a late one finalized a blob a second time, or
# finished it before a fetch that had hashed its last bytes marked them
# present. Every answer from the repository test/fail declares a byte more
# than its body and closes after the body: a transfer that fails after the
# client took every byte.
# Scenarios (each a few "ok" lines of the program): 800 rounds of whole
# readers and readers of a blob's last bytes racing readers of its middle
# (a blob is finalized once, and only once every chunk is marked present);
# the transfer that fails after its body; blobs open and closed under a
# small bound, a range being read surviving pressure, and a blob read in
# order past a bound of four chunks still verifying.
#
# CACHE_STRESS_ROUNDS: rounds of each of the race's eight batches (default
# 100, the most; the ThreadSanitizer build runs them all in about half a
# minute); every scenario runs whatever the count. CACHE_STRESS_SEED replays
# a run's blobs, readers and pieces (as far as the threads let it).
T_TIMEOUT=${T_TIMEOUT:-600}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
for t in docker-registry curl jq python3; do
	command -v "$t" >/dev/null 2>&1 || skip_all "$t not installed"
done
: "${OCIFS_STRESS:=$(dirname "${OCIFS:-.}")/tests/stress}"
PROG=$OCIFS_STRESS/cache_stress
[ -x "$PROG" ] || bail "OCIFS_STRESS must name the directory of the built cache_stress (got '$OCIFS_STRESS')"

ROUNDS=${CACHE_STRESS_ROUNDS:-100}
SEED=${CACHE_STRESS_SEED:-$(((RANDOM << 15) | RANDOM))}

registry_start cacherace
faultproxy_start "http://$REG"
J="\"seed\":$SEED,\"piece\":8192,\"pause\":0.001"
fp_rules "[{\"id\":\"fail\",\"match\":\"^/v2/test/fail/blobs/\",\"method\":\"GET\",
	\"length_plus\":1,\"jitter\":{$J}},
	{\"id\":\"race\",\"match\":\"^/v2/test/race/blobs/\",\"method\":\"GET\",
	\"jitter\":{$J,\"together\":0.02}},
	{\"id\":\"jitter\",\"match\":\"^/v2/test/[a-z]+/blobs/\",\"method\":\"GET\",\"jitter\":{$J}}]"

echo "# seed $SEED (CACHE_STRESS_SEED=$SEED repeats the run)"
echo "# cache_stress -r $ROUNDS -s $SEED $REG $FP"
t0=$SECONDS
TMPDIR=$TESTDIR "$PROG" -r "$ROUNDS" -s "$SEED" "$REG" "$FP" >"$TESTDIR/out" 2>"$TESTDIR/err"
rc=$?
cat "$TESTDIR/out"
echo "# cache_stress took $((SECONDS - t0)) s, exit $rc"
T_PASSED=$((T_PASSED + $(grep -c '^ok ' "$TESTDIR/out")))
T_FAILED=$((T_FAILED + $(grep -c '^not ok ' "$TESTDIR/out")))
if [ "$rc" != 0 ] && ! grep -q '^not ok ' "$TESTDIR/out"; then
	not_ok "cache_stress exited $rc"
	diag_file "$TESTDIR/err"
fi
check_log_clean "no sanitizer report from cache_stress" "$TESTDIR/err"

# what the proxy did: the faults the program's checks stand on happened
n=$(fp_count '.rule != null and .status == 206')
check "blob answers came in pieces at random moments ($n of them)" test "$n" -gt "$((ROUNDS * 8))"
n=$(fp_count '.rule == "race" and .together > 1')
check "answers for one blob in flight at once ended together ($n of them)" test "$n" -gt 0
ranged='.rule == "fail" and .status == 206 and .range != null'
full="$ranged and .bytes == (.range | capture(\"bytes=(?<a>[0-9]+)-(?<b>[0-9]+)\") |
	(.b | tonumber) - (.a | tonumber) + 1)"
fp_quiet
n=$(fp_count "$ranged")
check "answers from test/fail failed after their whole body ($n of them)" \
	test "$n" -gt 0 -a "$n" = "$(fp_count "$full")"
finish

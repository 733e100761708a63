#!/bin/bash
# The status of a mount: .ocifs/stats.json at its root (bytes fetched and
# served, cache hits and misses, cache size, blobs in flight, pushes pending
# and failed with their last error), and user.ocifs.cached on blob files.
# Figures are checked against known reads and the registry's access log.
T_TIMEOUT=${T_TIMEOUT:-240}
REG_ACCESSLOG=1
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env jq getfattr

MiB=$((1024 * 1024))
registry_start status
W=$TESTDIR/w
mkdir -p "$W"
make_random_file "$W/small.bin" $((3 * MiB + 5)) small
make_random_file "$W/big.bin" $((24 * MiB)) big
push_artifact st/files v1 "$W" small.bin big.bin >/dev/null || bail "seed st/files:v1"
SMALL=$(sha256_hex "$W/small.bin")

M=$TESTDIR/mnt
mount_ocifs "$REG" "$M" -o push_delay=3600,timeout=3 || bail "mount"
S=$M/.ocifs/stats.json
stat_of() { jq -r "$1" "$S"; }

check_fail ".ocifs is not listed at the root" sh -c "ls -a '$M' | grep -qx .ocifs"
check_ls ".ocifs/ holds stats.json" "$M/.ocifs" stats.json
check "stats.json is JSON" jq -e . "$S"
check_eq "nothing read yet: 0 bytes served, 0 fetched, 0 opens in passthrough" "0 0 0" \
	"$(stat_of '"\(.bytes_served) \(.bytes_fetched) \(.passthrough_opens)"')"
check_eq "the cache directory is named" "$CACHE" "$(stat_of .cache_dir)"
F=$M/st/files/v1
check_eq "a file not read is 0% cached" 0 \
	"$(getfattr --absolute-names --only-values -n user.ocifs.cached "$F/small.bin" 2>&1)"
check "user.ocifs.cached is listed by getfattr -d" \
	sh -c "getfattr --absolute-names -d -m - '$F/small.bin' | grep -q '^user.ocifs.cached='"

mark=$(reg_log_mark)
check_same "a read of 3 MiB" "$W/small.bin" "$F/small.bin"
reg_log_quiet
check_eq "then it is 100% cached" 100 \
	"$(getfattr --absolute-names --only-values -n user.ocifs.cached "$F/small.bin" 2>&1)"
check_eq "bytes_served is the file's size" "$((3 * MiB + 5))" "$(stat_of .bytes_served)"
check_eq "bytes_fetched is what the registry's log says it sent" \
	"$(served_bytes "$SMALL" "$mark")" "$(stat_of .bytes_fetched)"
check "the first read missed the cache" test "$(stat_of .cache_misses)" -ge 1
check "the cache holds the blob: cache_bytes >= 3 MiB" \
	test "$(stat_of .cache_complete_bytes)" -ge $((3 * MiB + 5))
hits=$(stat_of .cache_hits)
pt=$(stat_of .passthrough_opens)
cat "$F/.oci/blobs/sha256/$SMALL" >/dev/null
# in FUSE passthrough (t_passthrough.sh) the kernel reads the cache's file itself
check "the same blob through another path: cache hits counted, or opened in passthrough" \
	test "$(stat_of .cache_hits)" -gt "$hits" -o "$(stat_of .passthrough_opens)" -gt "$pt"
check_eq "and nothing more fetched" "$(served_bytes "$SMALL" "$mark")" "$(stat_of .bytes_fetched)"

# a blob held open, partly read: in flight, with the percent fetched
exec 3<"$F/big.bin"
head -c 1 <&3 >/dev/null
pct=$(stat_of '.blobs_in_flight[] | select(.size == '$((24 * MiB))') | .fetched_percent')
check "a big file read 1 byte into, held open: in flight, ${pct:-?}% fetched" \
	test -n "$pct" -a "${pct:-0}" -gt 0 -a "${pct:-100}" -lt 100
cached=$(getfattr --absolute-names --only-values -n user.ocifs.cached "$F/big.bin" 2>&1)
check "and user.ocifs.cached says a part of it: $cached%" test "$cached" -gt 0 -a "$cached" -lt 100
exec 3<&-

# pushes: one pending, then failed with its error, then done
mkdir "$M/st/files/new" && echo hi >"$M/st/files/new/a.txt"
check_eq "a written tag is a pending push" "1 pending" \
	"$(stat_of '"\(.pushes_pending) \(.drafts[0].state)"')"
check_eq "named by its tag" "$REG/st/files:new" "$(stat_of '.drafts[0].tag')"
registry_stop
check_fail "sync of it with the registry down fails" sync "$M/st/files/new"
check_eq "then it is a failed push, with the error" "1 failed Connection refused" \
	"$(stat_of '"\(.pushes_failed) \(.drafts[0].state) \(.drafts[0].last_error)"')"
registry_restart || bail "restart the registry"
check "sync after the registry is back pushes it" sync "$M/st/files/new"
check_eq "nothing pending or failed then; 1 push done, 1 failure in all" "0 0 1 1" \
	"$(stat_of '"\(.pushes_pending) \(.pushes_failed) \(.pushes_done) \(.push_failures)"')"
check_err "stats.json cannot be written" "Permission denied" sh -c "echo x >'$S'"
umount_ocifs "$M"
finish

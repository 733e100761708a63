#!/bin/bash
# One lock order, no request kept waiting behind another's slow work: a
# lookup that the loaded layers of an image answer does not wait for
# another layer of it being downloaded and indexed; reads of the rest of
# the tree go on meanwhile.
T_TIMEOUT=${T_TIMEOUT:-300}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env python3

registry_start locks
B=$TESTDIR/base U=$TESTDIR/upper
mkdir -p "$B/base" "$U/app"
make_random_file "$B/base/big.bin" $((2 * 1024 * 1024)) locks-base
for i in 1 2 3; do echo "up $i" >"$U/app/up$i.txt"; done
push_dirs_image img/two v1 "$B" "$U" >/dev/null || bail "push the image"
base_layer=${IMAGE_LAYERS[0]}
echo other >"$TESTDIR/other.txt"
push_artifact_titled art/x v1 other.txt "$TESTDIR/other.txt" >/dev/null || bail "push art/x"

faultproxy_start
M=$TESTDIR/mnt
mount_ocifs "$FP" "$M" -o timeout=60 || bail "mount"
I=$M/img/two/v1
check_eq "a file of the upper layer reads (only that layer loaded)" "up 1" "$(cat "$I/app/up1.txt")"
# A shell's working directory holds app/: with libfuse 3.14 (no parallel
# directory operations, README) the kernel sends one lookup of a directory
# at a time, so once another test's drop_caches dropped the entry of app/,
# looking it up again would queue behind the lookup of base/ held below
(cd "$I/app" && exec sleep 1000) &
cwd_pid=$!
wait_until 10 test -e "/proc/$cwd_pid/cwd/up1.txt" || bail "hold app/"

# the base layer's download is held by the proxy until the test lets it go
# (the file $TESTDIR/release), so that it is still under way whatever the load
fp_rules "[{\"id\":\"slow\",\"match\":\"/blobs/$base_layer\",\"hold\":\"$TESTDIR/release\"}]"
(sha256sum <"$I/base/big.bin" | cut -d' ' -f1 >"$TESTDIR/big.sum") &
slow=$!
# the slow download is under way once the cache has the blob in flight
in_flight() { jq -e --arg d "$base_layer" '.blobs_in_flight | tostring | contains($d)' \
	"$M/.ocifs/stats.json"; }
check "the base layer's download is under way" wait_until 60 in_flight
t0=$(date +%s.%N)
# bounded: a lookup that waited for the held download would wait for ever
up2=$(timeout -k 5 60 cat "$I/app/up2.txt")
diag "the upper file took $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }') s"
still=$(kill -0 "$slow" 2>/dev/null && echo running)
check_eq "a lookup the upper layer answers reads meanwhile" "up 2" "$up2"
check_eq "while the base layer is still downloading" running "$still"
check_eq "another artifact reads meanwhile" other "$(cat "$M/art/x/v1/other.txt")"
check_eq "stats.json reads meanwhile" 0 "$(jq -e .nodes "$M/.ocifs/stats.json" >/dev/null; echo $?)"
check_eq "and the download was held all along" running "$(kill -0 "$slow" 2>/dev/null && echo running)"
touch "$TESTDIR/release"
wait "$slow"
check_eq "the base layer's file reads whole once it came" \
	"$(sha256_hex "$B/base/big.bin")" "$(cat "$TESTDIR/big.sum")"
check_eq "the last upper file reads" "up 3" "$(cat "$I/app/up3.txt")"
check "the daemon is alive" daemon_alive "$M"
kill "$cwd_pid" 2>/dev/null
wait "$cwd_pid" 2>/dev/null
umount_ocifs "$M"
finish

#!/bin/bash
# FUSE passthrough benchmark: reads of a verified blob through a build with
# passthrough (libfuse 3.17, OCIFS_PT) against the same through a build
# without it (OCIFS), each mounting the same registry with a cache of its
# own, in the same run, alternated. Not a test: it prints figures and a
# summary block, and exits 0 unless the setup fails.
#
#   OCIFS=./ocifs OCIFS_PT=./build-passthrough/ocifs srcdir=. bash tests/bench/passthrough.sh
#
# Needs root. After one cold read (the blob verifies) and one open more, each
# run times, for each build:
# - a warm read: dd bs=1M of the file whose pages the kernel has;
# - a read with the file's pages dropped (POSIX_FADV_DONTNEED on the mounted
#   file and on the cache's file, no machine-wide drop_caches): the bytes
#   come from the cache file on disk;
# and measures the page cache a whole read and a whole mmap of the file
# cost: resident bytes of the cache's file and of the mounted file (fincore;
# with passthrough the mounted file's mapping is the cache file's, so only
# the cache file is counted), and the machine's Cached (/proc/meminfo)
# before and after, which other work on the machine moves too.
# BENCH_SIZE_MB (default 1024) sets the blob's size, BENCH_RUNS (default 3)
# the runs.
T_TIMEOUT=${T_TIMEOUT:-1800}
: "${srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${OCIFS:=$srcdir/ocifs}"
: "${OCIFS_PT:=$srcdir/build-passthrough/ocifs}"
export srcdir OCIFS
. "$srcdir/tests/integration/lib.sh"
require_env fincore python3 dd
[ -x "$OCIFS_PT" ] || bail "OCIFS_PT must name an ocifs built with libfuse 3.17 (got $OCIFS_PT)"

SIZE_MB=${BENCH_SIZE_MB:-1024}
RUNS=${BENCH_RUNS:-3}
SIZE=$((SIZE_MB * 1024 * 1024))
. "$srcdir/tests/bench/lib.sh"

registry_start bench
W=$TESTDIR/w
mkdir -p "$W"
make_random_file "$W/big.bin" "$SIZE" bench
push_blob_stream bench/big "$W/big.bin" >/dev/null || bail "push the big blob"
push_artifact bench/big v1 "$W" big.bin >/dev/null || bail "push bench/big:v1"
HEX=$(sha256_hex "$W/big.bin")
rm -f "$W/big.bin"

# fadv PATH...: drop the pages of each file (POSIX_FADV_DONTNEED)
fadv() {
	python3 -c 'import os, sys
for p in sys.argv[1:]:
	fd = os.open(p, os.O_RDONLY)
	os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
	os.close(fd)' "$@"
}
# mmap_read PATH: touch every page of a shared read-only mapping of PATH
mmap_read() {
	python3 -c 'import mmap, sys
with open(sys.argv[1], "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
	s = 0
	for i in range(0, len(m), 4096):
		s += m[i]' "$1"
}
resident() { fincore -b -n -o RES "$1" 2>/dev/null || echo 0; }
cached_bytes() { awk '$1 == "Cached:" { printf "%.0f\n", $2 * 1024 }' /proc/meminfo; }
mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }

declare -A MNT CFILE
for b in base pt; do
	bin=$OCIFS
	[ $b = pt ] && bin=$OCIFS_PT
	mkdir -p "$TESTDIR/cache.$b"
	OCIFS=$bin OCIFS_CACHE=$TESTDIR/cache.$b mount_ocifs "$REG" "$TESTDIR/mnt.$b" >>"$LOG" ||
		bail "mount $b"
	MNT[$b]=$TESTDIR/mnt.$b/bench/big/v1/big.bin
	CFILE[$b]=$TESTDIR/cache.$b/blobs/sha256/$HEX
	say "# $b: $("$bin" --version | tail -n 1)"
	tm cat "${MNT[$b]}" >/dev/null
	say "# $b: cold read $T s"
	cat "${MNT[$b]}" >/dev/null
	say "# $b: passthrough $(jq -c '[.passthrough, .passthrough_opens]' \
		"$TESTDIR/mnt.$b/.ocifs/stats.json")"
done

declare -A WARM DROP RD_CF RD_MF RD_MEM MM_CF MM_MF MM_MEM
for r in $(seq 1 "$RUNS"); do
	for b in base pt; do
		f=${MNT[$b]}
		c=${CFILE[$b]}
		dd if="$f" of=/dev/null bs=1M 2>/dev/null
		tm dd if="$f" of=/dev/null bs=1M 2>/dev/null
		WARM[$b]+=" $T"
		fadv "$f" "$c"
		m0=$(cached_bytes)
		tm dd if="$f" of=/dev/null bs=1M 2>/dev/null
		m1=$(cached_bytes)
		DROP[$b]+=" $T"
		RD_CF[$b]+=" $(mib "$(resident "$c")")"
		if [ $b = base ]; then RD_MF[$b]+=" $(mib "$(resident "$f")")"; else RD_MF[$b]+=" 0"; fi
		RD_MEM[$b]+=" $(mib $((m1 - m0)))"
		fadv "$f" "$c"
		m0=$(cached_bytes)
		mmap_read "$f"
		m1=$(cached_bytes)
		MM_CF[$b]+=" $(mib "$(resident "$c")")"
		if [ $b = base ]; then MM_MF[$b]+=" $(mib "$(resident "$f")")"; else MM_MF[$b]+=" 0"; fi
		MM_MEM[$b]+=" $(mib $((m1 - m0)))"
		fadv "$f" "$c"
		say "# run $r $b: warm ${WARM[$b]##* } s, pages dropped ${DROP[$b]##* } s," \
			"read: cache file ${RD_CF[$b]##* } MiB + FUSE file ${RD_MF[$b]##* } MiB" \
			"(Cached +${RD_MEM[$b]##* } MiB), mmap: ${MM_CF[$b]##* } + ${MM_MF[$b]##* } MiB" \
			"(Cached +${MM_MEM[$b]##* } MiB)"
	done
done
for b in base pt; do
	# shellcheck disable=SC2086
	{
		sets "$b warm read of $SIZE_MB MiB, s" ${WARM[$b]}
		sets "$b read, pages dropped, s" ${DROP[$b]}
		sets "$b read: cache file's pages, MiB" ${RD_CF[$b]}
		sets "$b read: FUSE file's pages, MiB" ${RD_MF[$b]}
		sets "$b read: Cached grew, MiB" ${RD_MEM[$b]}
		sets "$b mmap: cache file's pages, MiB" ${MM_CF[$b]}
		sets "$b mmap: FUSE file's pages, MiB" ${MM_MF[$b]}
		sets "$b mmap: Cached grew, MiB" ${MM_MEM[$b]}
	}
done
setr "load average" "$(cut -d' ' -f1-3 /proc/loadavg)"
say "==== summary (base: $OCIFS, pt: $OCIFS_PT; $RUNS runs)"
for k in "${RORDER[@]}"; do say "$k: ${R[$k]}"; done
for b in base pt; do umount_ocifs "$TESTDIR/mnt.$b" >>"$LOG"; done
exit 0

#!/bin/bash
# FUSE passthrough: built with libfuse 3.17 or later, on Linux 6.9 or later,
# as root, a read-only open of a verified blob hands the kernel the cache's
# file, and reads and mmaps never reach ocifs; any other build or machine
# reads as before. Checked either way, by what this build should do:
# stats.json's passthrough and passthrough_opens, bytes_served, the bytes
# through read and mmap. The kernel keeps one I/O mode per inode while it is
# open: opens of a file held open from before it verified stay out of
# passthrough, passthrough opens share one backing file, and a writer of a
# file open in passthrough gets ETXTBSY. A cache on overlayfs (a private
# mount namespace's) cannot back files: the first refusal turns passthrough
# off for the mount, and reads go on as before.
T_TIMEOUT=${T_TIMEOUT:-180}
if [ -z "${OCIFS_IN_NS:-}" ] && [ "$(id -u)" = 0 ]; then
	OCIFS_IN_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env jq python3 getfattr

# Whether this build, here, should open in passthrough, and why (not).
libfuse=$("$OCIFS" --version | sed -n 's/^using libfuse //p')
kernel=$(uname -r)
pt_why() {
	local fs
	case $libfuse in
	3.1[7-9]* | 3.[2-9][0-9]* | [4-9].*) ;;
	*) echo "libfuse $libfuse has no passthrough" && return 1 ;;
	esac
	case $kernel in
	[0-5].* | 6.[0-8].* | 6.[0-8]) echo "Linux $kernel has no passthrough" && return 1 ;;
	esac
	if [ -r /proc/config.gz ] && ! zgrep -q '^CONFIG_FUSE_PASSTHROUGH=y' /proc/config.gz; then
		echo "this kernel is built without CONFIG_FUSE_PASSTHROUGH" && return 1
	fi
	[ "$(id -u)" = 0 ] || { echo "not root (no CAP_SYS_ADMIN)" && return 1; }
	fs=$(stat -f -c %T "$CACHE")
	case $fs in
	overlayfs | fuse*) echo "the cache is on $fs: stacked" && return 1 ;;
	esac
	echo "libfuse $libfuse, Linux $kernel, root, the cache on $fs"
}

MiB=$((1024 * 1024))
registry_start passthrough
W=$TESTDIR/w
mkdir -p "$W"
make_random_file "$W/a.bin" $((5 * MiB + 7)) a
make_random_file "$W/b.bin" $((3 * MiB + 1)) b
: >"$W/empty.bin"
push_artifact pt/files v1 "$W" a.bin b.bin empty.bin >/dev/null || bail "seed pt/files:v1"
push_artifact pt/files v2 "$W" a.bin >/dev/null || bail "seed pt/files:v2"
A=$(sha256_hex "$W/a.bin")

if why=$(pt_why); then pt=1; else pt=0; fi
echo "# passthrough expected: $pt ($why)"

M=$TESTDIR/mnt
mount_ocifs "$REG" "$M" -o push_delay=3600 || bail "mount"
S=$M/.ocifs/stats.json
stat_of() { jq -r "$1" "$S"; }
opens() { stat_of .passthrough_opens; }
# mmap_sha FILE: sha256 of FILE read through a shared read-only mapping of it
mmap_sha() {
	python3 -c 'import hashlib, mmap, sys
with open(sys.argv[1], "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
	print(hashlib.sha256(m).hexdigest())' "$1"
}
# more N: N more passthrough opens expected in n (none without passthrough)
n=0
more() { n=$((n + pt * $1)); }
F=$M/pt/files/v1

if [ $pt = 1 ]; then want=true; else want=false; fi
check_eq "stats.json says whether passthrough is on: $want" "$want" "$(stat_of .passthrough)"

check_same "a.bin, a first read (not verified at its open: through ocifs)" "$W/a.bin" "$F/a.bin"
check_eq "no passthrough open yet" 0 "$(opens)"
check_eq "a.bin is verified: 100% cached" 100 \
	"$(getfattr --absolute-names --only-values -n user.ocifs.cached "$F/a.bin" 2>&1)"
served=$(stat_of .bytes_served)
check_same "a.bin read again" "$W/a.bin" "$F/a.bin"
more 1
check_eq "that open was in passthrough ($pt)" "$n" "$(opens)"
check_eq "a.bin through mmap" "$A" "$(mmap_sha "$F/a.bin")"
more 1
check_eq "so was that one" "$n" "$(opens)"
# (without passthrough they may or may not: the kernel keeps a verified file's pages)
if [ $pt = 1 ]; then
	check_eq "reads in passthrough do not reach ocifs: bytes_served unchanged" "$served" \
		"$(stat_of .bytes_served)"
fi
check_same "the same blob under .oci/blobs/ (another inode)" "$W/a.bin" \
	"$F/.oci/blobs/sha256/$A"
more 1
check_eq "in passthrough too" "$n" "$(opens)"
check_same "an empty file" "$W/empty.bin" "$F/empty.bin"
check_eq "has no cache file: not in passthrough" "$n" "$(opens)"

# b.bin held open from before it verified: its opens stay out of
# passthrough until that handle is closed (the kernel would fail them)
exec 3<"$F/b.bin"
check_same "b.bin read (it verifies) while a handle from before is open" "$W/b.bin" "$F/b.bin"
check_same "b.bin again, verified, that handle still open: read" "$W/b.bin" "$F/b.bin"
check_eq "b.bin through mmap, that handle still open" "$(sha256_hex "$W/b.bin")" \
	"$(mmap_sha "$F/b.bin")"
check_eq "none of these in passthrough" "$n" "$(opens)"
check "the handle from before reads b.bin" sh -c "cmp -s '$W/b.bin' - <&3"
exec 3<&-
check_same "b.bin once that handle is closed" "$W/b.bin" "$F/b.bin"
more 1
check_eq "in passthrough ($pt)" "$n" "$(opens)"

# two handles at once: one backing file
exec 4<"$F/a.bin"
check_same "a.bin while another handle of it is open" "$W/a.bin" "$F/a.bin"
check_eq "a.bin through mmap meanwhile" "$A" "$(mmap_sha "$F/a.bin")"
check "the first handle reads a.bin" sh -c "cmp -s '$W/a.bin' - <&4"
more 3
check_eq "all three in passthrough" "$n" "$(opens)"

# a writer (a draft of v2) while a handle in passthrough is open
G=$M/pt/files/v2
exec 5<"$G/a.bin"
more 1
check_eq "v2/a.bin open" "$n" "$(opens)"
if [ $pt = 1 ]; then
	check_err "a writer of a file open in passthrough: ETXTBSY" "Text file busy" \
		sh -c "exec 6>>'$G/a.bin'"
else
	check "a writer of a file open (no passthrough): opens" sh -c "exec 6>>'$G/a.bin'"
fi
check "the reader's handle still reads" sh -c "cmp -s '$W/a.bin' - <&5"
exec 5<&- 4<&-
check "once no handle is open, a writer opens it" sh -c "exec 6>>'$G/a.bin'"
check_same "and it reads as before" "$W/a.bin" "$G/a.bin"
check_eq "the file being written is not opened in passthrough" "$n" "$(opens)"
check_eq "passthrough is still on ($want)" "$want" "$(stat_of .passthrough)"
umount_ocifs "$M"

# a cache the kernel will not take backing files from
if [ -z "${OCIFS_IN_NS:-}" ]; then
	skip_part "a cache on overlayfs" "needs root (a mount namespace)"
	finish
fi
O=$TESTDIR/ovl
mkdir -p "$O/lower" "$O/upper" "$O/work" "$O/merged"
mount -t overlay overlay -o "lowerdir=$O/lower,upperdir=$O/upper,workdir=$O/work" "$O/merged" ||
	bail "an overlayfs for the cache"
OCIFS_CACHE=$O/merged/cache mount_ocifs "$REG" "$M" -o push_delay=3600 || bail "mount"
check_eq "passthrough on ($want) until a file opens in it" "$want" "$(stat_of .passthrough)"
check_same "a.bin, its cache on overlayfs" "$W/a.bin" "$F/a.bin"
check_same "a.bin again, verified" "$W/a.bin" "$F/a.bin"
check_eq "a.bin through mmap" "$A" "$(mmap_sha "$F/a.bin")"
check_eq "none in passthrough" 0 "$(opens)"
check_eq "passthrough is off: the kernel refused the cache's file, or there was none" false \
	"$(stat_of .passthrough)"
umount_ocifs "$M"
umount "$O/merged"
finish

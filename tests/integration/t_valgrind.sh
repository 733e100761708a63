#!/bin/bash
# A mount session under valgrind's memcheck: mount, list, read (a plain
# file, an image's root filesystem, .ocifs/stats.json), push a tag, SIGHUP,
# unmount. memcheck must report no error and no definitely lost block.
# Skipped for a sanitizer build (valgrind cannot run those).
T_TIMEOUT=${T_TIMEOUT:-600}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env valgrind
# ldd's whole output first: grep -q stops at the match, and under pipefail the
# pipeline fails when ldd is still writing then (SIGPIPE)
if [[ $(ldd "$OCIFS" 2>/dev/null) =~ lib[at]san ]]; then
	skip_all "this ocifs is built with a sanitizer, which valgrind cannot run"
fi

registry_start valgrind
W=$TESTDIR/w
mkdir -p "$W/img/etc"
make_random_file "$W/data.bin" $((3 * 1024 * 1024 + 11)) vg-data
push_artifact vg/app v1 "$W" data.bin >/dev/null || bail "seed vg/app:v1"
echo "from an image" >"$W/img/etc/motd"
image_build "$TESTDIR/layout" v1 linux/amd64 "$W/img" >/dev/null 2>&1 || bail "image"
push_image "$TESTDIR/layout" v1 vg/img v1 >/dev/null || bail "push image"

VGLOG=$TESTDIR/valgrind.log
cat >"$TESTDIR/ocifs-vg" <<EOF
#!/bin/sh
exec valgrind --quiet --error-exitcode=99 --leak-check=full --show-leak-kinds=definite \\
	--errors-for-leak-kinds=definite --trace-children=yes --log-file=$VGLOG.%p "$OCIFS" "\$@"
EOF
chmod +x "$TESTDIR/ocifs-vg"
M=$TESTDIR/mnt
OCIFS=$TESTDIR/ocifs-vg mount_ocifs "$REG" "$M" -o push_delay=3600 || bail "mount under valgrind"
PID=$OCIFS_PID
check_eq "the keeper runs under memcheck" "memcheck" "$(cut -c1-8 "/proc/$PID/comm" 2>&1)"
check_eq "and so does its server" "memcheck" "$(cut -c1-8 "/proc/$(server_pid "$M")/comm" 2>&1)"
check_ls "listing under valgrind" "$M/vg" app img
check_same "a 3 MiB file reads right" "$W/data.bin" "$M/vg/app/v1/data.bin"
check_eq "an image's file reads right" "from an image" "$(cat "$M/vg/img/v1/etc/motd" 2>&1)"
check "stats.json reads" grep -q bytes_served "$M/.ocifs/stats.json"
mkdir "$M/vg/app/v2" && echo pushed >"$M/vg/app/v2/p.txt"
check "a push under valgrind" sync "$M/vg/app/v2"
kill -HUP "$PID"
check_eq "after SIGHUP it still serves" "pushed" "$(cat "$M/vg/app/v2/p.txt" 2>&1)"
umount_ocifs "$M"
cat "$VGLOG".* >"$VGLOG" 2>/dev/null
check_eq "memcheck wrote a log for the keeper and one for the server" 2 \
	"$(find "$TESTDIR" -maxdepth 1 -name 'valgrind.log.*' | wc -l)"
check "memcheck found no error and no definitely lost block" \
	test ! -s "$VGLOG"
[ -s "$VGLOG" ] && head -n 40 "$VGLOG" | sed 's/^/#   /'
finish

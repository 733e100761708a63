#!/bin/bash
# The daemon's life, as an operator sees it: without -f it returns only once
# the mount is ready, and non-zero (nothing mounted) when mounting fails;
# SIGHUP forgets tag resolutions; SIGTERM and SIGINT push what is pending,
# then unmount and exit 0; a crash leaves no temporary file behind for long.
T_TIMEOUT=${T_TIMEOUT:-240}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env pgrep mountpoint

registry_start daemon
W=$TESTDIR/w
mkdir -p "$W"
echo one >"$W/a.txt"
push_artifact d/app v1 "$W" a.txt >/dev/null || bail "seed d/app:v1"

M=$TESTDIR/mnt
mkdir -p "$M"
# daemon_pid MNT: the detached daemon serving MNT
daemon_pid() { pgrep -f -- "ocifs .* $1( |\$)" | head -n 1; }
detached_umount() {
	local pid
	pid=$(daemon_pid "$1")
	fusermount3 -u "$1" 2>/dev/null
	[ -n "$pid" ] && wait_until 30 no_pid "$pid"
}
no_pid() { ! kill -0 "$1" 2>/dev/null; }

# ---- detaching
"$OCIFS" "$REG" "$M" -o "cache_dir=$CACHE,tag_ttl=3600" 2>"$TESTDIR/detach.err"
rc=$?
# no waiting here: the command returned, so the mount is up
check_eq "without -f: exit 0 once mounted" "0 yes" \
	"$rc $(mountpoint -q "$M" && echo yes || echo no)"
check_eq "and it serves at once" "one" "$(cat "$M/d/app/v1/a.txt" 2>&1)"
PID=$(daemon_pid "$M")
check "a daemon runs detached (its own session)" \
	test -n "$PID" -a "$(ps -o sid= -p "${PID:-1}" | tr -d ' ')" = "${PID:-x}"
check_eq "and said nothing on the terminal" "" "$(cat "$TESTDIR/detach.err")"

# ---- SIGHUP: tag resolutions forgotten
# the tag held open: its resolution lives as long as its node, which the kernel
# could forget meanwhile (memory pressure, another test's drop_caches). Held
# until after SIGHUP: closed just before, the next lookups kept the old tag
# now and then (4 runs in 6)
exec 3<"$M/d/app/v1"
# a file of the tag in use as the forget runs (a cat reading it): its dentry
# stays hashed under the tag's, which the next lookup brings back
exec 4<"$M/d/app/v1/a.txt"
echo two >"$W/a.txt"
push_artifact d/app v1 "$W" a.txt >/dev/null || bail "move d/app:v1"
check_eq "tag_ttl=3600: the moved tag still reads as before" "one" "$(cat "$M/d/app/v1/a.txt" 2>&1)"
kill -HUP "$PID"
# the forget runs in the daemon's own time: wait for it to show
reads_two() { [ "$(cat "$M/d/app/v1/a.txt" 2>&1)" = two ]; }
check "after SIGHUP the tag is asked again and reads the new file" wait_until 10 reads_two
check "the daemon lives on after SIGHUP" kill -0 "$PID"
check_eq "the file open before it reads as it did" "one" "$(cat <&4 2>&1)"
exec 3<&- 4<&-
detached_umount "$M"
check_fail "fusermount3 -u ends the detached daemon" kill -0 "$PID"

# ---- failing to mount, detached
port=$(free_port)
"$OCIFS" "127.0.0.1:$port" "$M" -o "cache_dir=$CACHE" 2>"$TESTDIR/fail.err"
rc=$?
check "a registry nobody listens on: non-zero exit ($rc)" test "$rc" -ne 0
check_fail "and nothing mounted" mountpoint -q "$M"
check "the reason on stderr" grep -q "127.0.0.1:$port" "$TESTDIR/fail.err"
check_fail "no daemon left" test -n "$(daemon_pid "$M")"
"$OCIFS" "$REG" "$M" -o "cache_dir=$CACHE,no_such_option=1" 2>"$TESTDIR/opt.err"
rc=$?
check "an unknown option: non-zero exit ($rc), nothing mounted" \
	test "$rc" -ne 0 -a "$(mountpoint -q "$M" && echo y)" != y
check "named in the error" grep -q "no_such_option" "$TESTDIR/opt.err"

# ---- SIGTERM and SIGINT: pending pushes go first
mount_ocifs "$REG" "$M" -o push_delay=3600 || bail "mount for SIGTERM"
pid=$OCIFS_PID
mkdir "$M/d/app/sigterm" && echo "by TERM" >"$M/d/app/sigterm/f.txt"
check_fail "push_delay=3600: the new tag is not pushed yet" manifest_get d/app sigterm
kill -TERM "$pid"
check "SIGTERM: the daemon exits" wait_until 60 no_pid "$pid"
wait "$pid" 2>/dev/null
check_eq "with status 0" 0 "$?"
check "having pushed the tag first" manifest_get d/app sigterm
check_fail "and unmounted" mountpoint -q "$M"
unset "_LIB_MOUNT_PID[$M]"
check_eq "what it pushed reads back" "by TERM" \
	"$(blob_get d/app "$(manifest_get d/app sigterm | jq -r '.layers[0].digest')")"
# SIGINT, to a detached daemon started with SIGINT ignored, as a background
# job of a script has it: it stops all the same
(
	trap '' INT
	"$OCIFS" "$REG" "$M" -o "cache_dir=$CACHE,push_delay=3600"
) || bail "mount for SIGINT"
pid=$(daemon_pid "$M")
mkdir "$M/d/app/sigint" && echo "by INT" >"$M/d/app/sigint/f.txt"
kill -INT "$pid"
check "SIGINT: the daemon exits" wait_until 60 no_pid "$pid"
check "having pushed the tag first" manifest_get d/app sigint
check_fail "and unmounted" mountpoint -q "$M"

# ---- detached, it logs to syslog: a /dev/log of the test's own, in a
# private mount namespace (a tmpfs over /dev there; the host's is untouched)
SL=$TESTDIR/syslog
cat >"$TESTDIR/syslog.sh" <<EOF
# the copies of other tests' mounts (see lib_drop_foreign_mounts)
awk '\$3 == "fuse.ocifs" { print \$2 }' /proc/self/mounts | while read -r m; do umount -l "\$m"; done
mount -t tmpfs -o mode=755 tmpfs /dev || exit 1
mknod -m 666 /dev/fuse c 10 229 && mknod -m 666 /dev/null c 1 3 &&
	mknod -m 666 /dev/zero c 1 5 && mknod -m 666 /dev/urandom c 1 9 || exit 1
socat -u UNIX-RECV:/dev/log,mode=666 OPEN:$SL,creat,append &
sp=\$!
for i in \$(seq 100); do [ -S /dev/log ] && break; sleep 0.1; done
"$OCIFS" "$REG" "$M" -o "cache_dir=$CACHE" || exit 2
cat "$M/d/app/v1/a.txt" >"$TESTDIR/syslog.read"
pid=\$(pgrep -f -- "ocifs .* $M" | head -n 1)
spid=\$(pgrep -n -P "\$pid")
echo "\$spid" >"$TESTDIR/syslog.pid"
kill -HUP "\$pid"
for i in \$(seq 100); do grep -q SIGHUP "$SL" 2>/dev/null && break; sleep 0.1; done
fusermount3 -u "$M"
for i in \$(seq 100); do kill -0 "\$pid" 2>/dev/null || break; sleep 0.1; done
kill \$sp
EOF
unshare -m --propagation private bash "$TESTDIR/syslog.sh" 2>"$TESTDIR/syslog.err"
check_eq "detached in a namespace with a /dev/log: mounted and read" "two" \
	"$(cat "$TESTDIR/syslog.read" 2>&1)" || diag_file "$TESTDIR/syslog.err"
check "its log lines go to syslog, tagged ocifs[pid]" \
	grep -q "ocifs\[$(cat "$TESTDIR/syslog.pid" 2>/dev/null)\]: SIGHUP" "$SL"

# ---- a crash's temporary files
mkdir -p "$CACHE/tmp"
touch -d '2 hours ago' "$CACHE/tmp/0123.XXXXXX" "$CACHE/layers/.idx.ABCDEF"
touch "$CACHE/tmp/fresh.XXXXXX"
mount_ocifs "$REG" "$M" -o ro || bail "mount after a crash"
check_fail "an old temporary file of a killed daemon is removed at the next start" \
	test -e "$CACHE/tmp/0123.XXXXXX" -o -e "$CACHE/layers/.idx.ABCDEF"
check "a fresh one (a live daemon's, maybe) is left alone" test -e "$CACHE/tmp/fresh.XXXXXX"
umount_ocifs "$M"
finish

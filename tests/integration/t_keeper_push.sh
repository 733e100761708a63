#!/bin/bash
# Writers outlive their server: a file being written into a tag when the
# server is killed -9 (or replaced by `ocifs --restart`) keeps every byte
# written before, its writer's descriptor goes on writing into it, and the
# push made once it is closed names it whole. The same holds for a tag of
# the registry being changed (a file removed, one being added), and for a
# repository made by mkdir that nothing was pushed to yet. A crash of the
# keeper too (no server takes over) still drops what was never closed.
# Without FUSE_NOTIFY_RESEND, a writer with no write in flight goes on too.
T_TIMEOUT=${T_TIMEOUT:-600}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env python3 jq pgrep
MiB=$((1024 * 1024))

REG_ACCESSLOG=1 registry_start keeperpush
W=$TESTDIR/w
mkdir -p "$W/d/sub"
echo "to be removed" >"$W/a.txt"
echo "kept" >"$W/d/sub/c.txt"
push_artifact k/app v1 "$W" a.txt d/sub/c.txt >/dev/null || bail "seed k/app:v1"
for n in 1 2 3 4; do make_random_file "$W/w$n.bin" $((8 * MiB)) "keeper-push-w$n"; done

M=$TESTDIR/mnt
mount_ocifs "$REG" "$M" -o push_delay=0 || bail "mount"
stat_of() { jq -r ".$1" "$M/.ocifs/stats.json" 2>/dev/null; }
server_is_not() { local v; v=$(stat_of server_pid) && [ -n "$v" ] && [ "$v" != "$1" ]; }
server_is_not_on() {
	local v
	v=$(jq -r .server_pid "$1/.ocifs/stats.json" 2>/dev/null) && [ -n "$v" ] && [ "$v" != "$2" ]
}
gone() { ! kill -0 "$1" 2>/dev/null; }
# blob_of_title REPO TAG TITLE: the hex digest of the layer titled TITLE
blob_of_title() {
	manifest_get "$1" "$2" | jq -r --arg t "$3" \
		'.layers[] | select(.annotations["org.opencontainers.image.title"] == $t) | .digest' |
		sed 's/^sha256://'
}
titles_of() {
	manifest_get "$1" "$2" | jq -r '[.layers[].annotations["org.opencontainers.image.title"]] |
		sort | join(" ")'
}
# kill9_server: SIGKILL the server, wait until another answers; prints the dead one's pid
kill9_server() {
	local s
	s=$(server_pid "$M")
	kill -KILL "$s"
	wait_until 30 server_is_not "$s" || bail "no server after the kill of $s"
	echo "$s"
}

# slow_copy SRC DST BYTES: copy SRC into DST through one descriptor, never
# closed on the way: BYTES of it, then $DST.half appears and the copy waits
# for $DST.go before the rest
slow_copy() {
	python3 - "$@" <<'PY'
import os, sys, time
src, dst, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(src, "rb").read()
fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, data[:first])
open(dst.replace("/mnt/", "/ctl.") + ".half", "w").close()
while not os.path.exists(dst.replace("/mnt/", "/ctl.") + ".go"):
    time.sleep(0.01)
off = first
while off < len(data):
    off += os.write(fd, data[off:off + 128 * 1024])
os.close(fd)
PY
}
ctl() { echo "$TESTDIR/ctl.${1#"$M/"}"; }

# ---- a new repository and tag, a file half written (never closed) when the server dies
mkdir -p "$M/k/fresh/t1" || bail "mkdir"
mkdir -p "$(dirname "$(ctl "$M/k/fresh/t1/w.bin")")"
slow_copy "$W/w1.bin" "$M/k/fresh/t1/w.bin" $((3 * MiB)) 2>"$TESTDIR/copy1.err" &
copier=$!
wait_until 30 test -e "$(ctl "$M/k/fresh/t1/w.bin").half" || bail "the copy did not start"
k=$(kill9_server)
touch "$(ctl "$M/k/fresh/t1/w.bin").go"
wait "$copier"
check_eq "a copy whose server was killed -9 mid-file goes on through the same descriptor, exit 0" \
	0 "$?"
diag "$(cat "$TESTDIR/copy1.err")"
check_eq "a sync of the tag pushes it" 0 \
	"$(sync "$M/k/fresh/t1" 2>"$TESTDIR/sync1.err"; echo $?)"
diag "$(cat "$TESTDIR/sync1.err")"
check_eq "the tag pushed names w.bin with every byte written, before the kill and after" \
	"$(sha256_hex "$W/w1.bin")" "$(blob_of_title k/fresh t1 w.bin)"
check "the blob is in the registry" tag_whole k/fresh t1
check_same "and the mount reads it back" "$W/w1.bin" "$M/k/fresh/t1/w.bin"
check "the new server said it took the draft over" \
	grep -q "k/fresh:t1: what the server before staged is taken over" "$OCIFS_LOG"
check_fail "nothing was dropped" grep -q "was never closed\|never closed): dropped" "$OCIFS_LOG"

# ---- the repository made just before the kill: mkdir in it still makes tags
mkdir "$M/k/fresh2" && mkdir "$M/k/fresh2/t1" && exec 5>"$M/k/fresh2/t1/x.bin" &&
	head -c $((1 * MiB)) "$W/w2.bin" >&5
k=$(kill9_server)
check "after a kill, mkdir in a repository made here before it makes a tag" \
	mkdir "$M/k/fresh2/t2"
cp "$W/w3.bin" "$M/k/fresh2/t2/y.bin" && sync "$M/k/fresh2/t2"
check_eq "and pushes there" "$(sha256_hex "$W/w3.bin")" "$(blob_of_title k/fresh2 t2 y.bin)"
tail -c +$((1 * MiB + 1)) "$W/w2.bin" >&5
exec 5>&-
sync "$M/k/fresh2/t1"
check_eq "the file half written in the other tag is pushed whole" \
	"$(sha256_hex "$W/w2.bin")" "$(blob_of_title k/fresh2 t1 x.bin)"

# ---- a repository made by mkdir, nothing in it yet, and the shell's working
# directory: both still there after a kill, and a tag made in it is pushed there
mkdir "$M/k/empty" || bail "mkdir k/empty"
(
	cd "$M/k/empty" || exit 1
	k=$(kill9_server)
	mkdir t1 && cp "$W/w1.bin" t1/z.bin && sync t1
) 2>"$TESTDIR/empty.err"
check_eq "a tag made after a kill in the empty repository made before it, from inside it" \
	0 "$?"
diag "$(cat "$TESTDIR/empty.err")"
check_eq "is pushed into that repository" "$(sha256_hex "$W/w1.bin")" \
	"$(blob_of_title k/empty t1 z.bin)"
mkdir "$M/k/empty2" || bail "mkdir k/empty2"
k=$(kill9_server)
check_eq "an empty repository made before a kill is listed after it" "empty2" \
	"$(ls "$M/k" | grep -x empty2)"

# ---- a tag of the registry being changed: a file removed (a change closed),
# one being written, across two kills
rm "$M/k/app/v1/a.txt" || bail "rm"
exec 5>"$M/k/app/v1/n.bin"
head -c $((2 * MiB)) "$W/w4.bin" >&5
k=$(kill9_server)
check_eq "after a kill, the tag shows the file removed as removed, and the one being written" \
	"d n.bin" "$(ls "$M/k/app/v1" | tr '\n' ' ' | sed 's/ $//')"
check_eq "with the bytes written so far" $((2 * MiB)) "$(stat -c %s "$M/k/app/v1/n.bin")"
head -c $((5 * MiB)) "$W/w4.bin" | tail -c +$((2 * MiB + 1)) >&5
k=$(kill9_server)
tail -c +$((5 * MiB + 1)) "$W/w4.bin" >&5
exec 5>&-
sync "$M/k/app/v1"
check_eq "the tag pushed has what was kept, not what was removed, and the new file" \
	"d/sub/c.txt n.bin" "$(titles_of k/app v1)"
check_eq "the new file whole, across two kills" "$(sha256_hex "$W/w4.bin")" \
	"$(blob_of_title k/app v1 n.bin)"
check_eq "the file kept is the registry's, as it was" "$(sha256_hex "$W/d/sub/c.txt")" \
	"$(blob_of_title k/app v1 d/sub/c.txt)"

# ---- an upgrade (ocifs --restart) while a file is half written
mkdir "$M/k/fresh/t3" && exec 5>"$M/k/fresh/t3/u.bin"
head -c $((4 * MiB)) "$W/w3.bin" >&5
old=$(server_pid "$M")
"$OCIFS" --restart "$M" >"$TESTDIR/restart.out" 2>&1
check_eq "ocifs --restart with a writer at work exits 0" 0 "$?"
check "the old server exits" wait_until 30 gone "$old"
tail -c +$((4 * MiB + 1)) "$W/w3.bin" >&5
rc=$?
exec 5>&-
check_eq "the writer writes on after the upgrade" 0 "$rc"
sync "$M/k/fresh/t3"
check_eq "and its file is pushed whole" "$(sha256_hex "$W/w3.bin")" \
	"$(blob_of_title k/fresh t3 u.bin)"
check_eq "and the tag was pushed once, never naming the file cut short" 1 \
	"$(grep -c '"PUT /v2/k/fresh/manifests/t3 ' "$REG_ROOT/registry.log")"

# ---- what the draft said when the server died is not what the files are:
# a file pushed, then opened again (no O_TRUNC) and overwritten in place,
# the server killed before its close; an empty file closed last
M3=$TESTDIR/late/mnt
OCIFS_CACHE=$TESTDIR/cache.late mount_ocifs "$REG" "$M3" -o push_delay=3600 ||
	bail "mount with push_delay=3600"
mkdir -p "$M3/k/late/t1" && cp "$W/a.txt" "$M3/k/late/t1/o.txt" && sync "$M3/k/late/t1" ||
	bail "first push of k/late:t1"
printf 'overwritten in place!' >"$W/o2.txt"
python3 -c '
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, open(sys.argv[2], "rb").read(), 0)
open(sys.argv[3], "w").close()
while not os.path.exists(sys.argv[4]):
    time.sleep(0.01)
os.close(fd)
' "$M3/k/late/t1/o.txt" "$W/o2.txt" "$TESTDIR/late.ready" "$TESTDIR/late.go" &
wpid=$!
wait_until 30 test -e "$TESTDIR/late.ready" || bail "the writer of o.txt"
mkdir "$M3/k/late/t2" && echo x >"$M3/k/late/t2/x.txt" && : >"$M3/k/late/t2/empty" ||
	bail "k/late:t2"
s=$(server_pid "$M3")
kill -KILL "$s"
wait_until 30 server_is_not_on "$M3" "$s" || bail "no server on $M3 after the kill"
touch "$TESTDIR/late.go"
wait "$wpid"
check_eq "a file overwritten in place across a kill closes, exit 0" 0 "$?"
sync "$M3/k/late/t1"
check_eq "the tag pushed names its new bytes, not the ones pushed before" \
	"$(sha256_hex "$W/o2.txt")" "$(blob_of_title k/late t1 o.txt)"
check_same "and the mount reads the new bytes" "$W/o2.txt" "$M3/k/late/t1/o.txt"
check_eq "a tag whose last change was an empty file closed before a kill syncs, exit 0" 0 \
	"$(sync "$M3/k/late/t2" 2>"$TESTDIR/late.err"; echo $?)"
diag "$(cat "$TESTDIR/late.err")"
check_eq "with both its files" "empty x.txt" "$(titles_of k/late t2)"
umount_ocifs "$M3"

# ---- a request the server did, then died before it answered
# (OCIFS_CRASH_AFTER=op: the first server kills itself there): the kernel
# sends it again, and the next server answers it as done, not with EEXIST
# or ENOENT
crash_after() { # OP: mount $TESTDIR/ca.OP/mnt whose first server dies after OP
	OCIFS_CRASH_AFTER=$1 OCIFS_CACHE=$TESTDIR/cache.ca.$1 \
		mount_ocifs "$REG" "$TESTDIR/ca.$1/mnt" -o push_delay=3600 || bail "mount ($1)"
}
crash_after create
MC=$TESTDIR/ca.create/mnt
mkdir "$MC/k/resent" && mkdir "$MC/k/resent/t1" || bail "mkdir k/resent:t1"
check_eq "cp whose create the server did and died before answering: exit 0" 0 \
	"$(cp "$W/w1.bin" "$MC/k/resent/t1/c.bin" 2>"$TESTDIR/ca.err"; echo $?)"
diag "$(cat "$TESTDIR/ca.err")"
check "the server did die there" grep -q "OCIFS_CRASH_AFTER=create" "$OCIFS_LOG"
sync "$MC/k/resent/t1"
check_eq "and the tag pushed names the file whole" "$(sha256_hex "$W/w1.bin")" \
	"$(blob_of_title k/resent t1 c.bin)"
umount_ocifs "$MC"
crash_after mkdir
MC=$TESTDIR/ca.mkdir/mnt
check_eq "mkdir in a tag whose server made the directory and died before answering: exit 0" \
	0 "$(mkdir "$MC/k/app/v1/made" 2>"$TESTDIR/ca.err"; echo $?)"
diag "$(cat "$TESTDIR/ca.err")"
check "the server did die there" grep -q "OCIFS_CRASH_AFTER=mkdir" "$OCIFS_LOG"
echo hi >"$MC/k/app/v1/made/h.txt" && sync "$MC/k/app/v1"
check_eq "and a file made in it is pushed there" "d/sub/c.txt made/h.txt n.bin" \
	"$(titles_of k/app v1)"
umount_ocifs "$MC"
crash_after unlink
MC=$TESTDIR/ca.unlink/mnt
check_eq "rm whose server removed the file and died before answering: exit 0" 0 \
	"$(rm "$MC/k/app/v1/d/sub/c.txt" 2>"$TESTDIR/ca.err"; echo $?)"
diag "$(cat "$TESTDIR/ca.err")"
check "the server did die there" grep -q "OCIFS_CRASH_AFTER=unlink" "$OCIFS_LOG"
check_fail "and the file is gone" test -e "$MC/k/app/v1/d/sub/c.txt"
umount_ocifs "$MC"

# ---- a kernel without FUSE_NOTIFY_RESEND (before 6.9; OCIFS_NO_RESEND=1 makes
# the servers act as there): a writer between two writes when its server dies
# has nothing in flight to lose, and goes on as well
M2=$TESTDIR/nr/mnt
C2=$TESTDIR/nr/ctl.k/noresend/t1 # where slow_copy says it is half way, and is told to go on
OCIFS_NO_RESEND=1 OCIFS_CACHE=$TESTDIR/cache.noresend mount_ocifs "$REG" "$M2" -o push_delay=0 ||
	bail "mount without resend"
mkdir -p "$M2/k/noresend/t1" "$C2" || bail "mkdir without resend"
slow_copy "$W/w2.bin" "$M2/k/noresend/t1/w.bin" $((2 * MiB)) 2>"$TESTDIR/copy2.err" &
copier=$!
wait_until 30 test -e "$C2/w.bin.half" || bail "the copy did not start"
s=$(server_pid "$M2")
kill -KILL "$s"
wait_until 30 server_is_not_on "$M2" "$s" || bail "no server on $M2 after the kill"
touch "$C2/w.bin.go"
wait "$copier"
check_eq "without resend, a copy paused between writes when its server died goes on, exit 0" \
	0 "$?"
diag "$(cat "$TESTDIR/copy2.err")"
sync "$M2/k/noresend/t1"
check_eq "and its tag is pushed whole" "$(sha256_hex "$W/w2.bin")" \
	"$(blob_of_title k/noresend t1 w.bin)"
umount_ocifs "$M2"

# ---- the keeper and server both killed (a crash of the machine's kind):
# nobody holds the writer any more; what was never closed is dropped and said
mkdir "$M/k/fresh/t4" && exec 5>"$M/k/fresh/t4/lost.bin" && head -c $MiB "$W/w1.bin" >&5
exec 5>&-
# the writer still at work is a process of its own, as a user's would be
# (this shell's descriptors are flushed whenever a command of it forks)
python3 -c '
import os, signal, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
data = open(sys.argv[2], "rb").read(1 << 20)
while data:
    data = data[os.write(fd, data):]
open(sys.argv[3], "w").close()
signal.pause()
' "$M/k/fresh/t4/open.bin" "$W/w2.bin" "$TESTDIR/open.ready" &
wpid=$!
wait_until 30 test -e "$TESTDIR/open.ready" || bail "the writer of open.bin"
kill9_ocifs "$M" || bail "kill9_ocifs"
kill "$wpid"
wait "$wpid" 2>/dev/null
mount_ocifs "$REG" "$M" -o push_delay=0 || bail "mount again"
settled() { [ "$(stat_of pushes_pending)" = 0 ]; }
wait_until 30 settled
check_eq "after a crash of keeper and server, the file closed is pushed, the one open is not" \
	"lost.bin" "$(titles_of k/fresh t4)"
check "and the one never closed is said to be dropped" grep -q "never closed" "$OCIFS_LOG"
umount_ocifs "$M"
finish

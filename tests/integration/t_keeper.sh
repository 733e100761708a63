#!/bin/bash
# The mount outlives its server: a keeper holds /dev/fuse, and a server that
# dies (kill -9) is replaced on the same descriptor. A cat of 256 MiB across
# two kills reads right and exits 0 (where the kernel cannot resend, what
# the dead server had read ends with EIO); a file held open, a shell's working
# directory, listings, xattrs and stats.json answer after a restart, also
# once the journal of ids and handles has been compacted;
# `ocifs --restart` replaces the server under 8 streaming readers; a server
# that crashes at start is started again with back-off while the mount
# answers EIO, and an unmount ends it all. Twenty more kills at random
# points of reads give the time from a kill to the next answer.
T_TIMEOUT=${T_TIMEOUT:-600}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env python3 jq getfattr pgrep
SEED=${KEEPER_SEED:-$$}
RANDOM=$SEED
echo "# kill points from seed $SEED (KEEPER_SEED= repeats a run)"
MiB=$((1024 * 1024))

registry_start keeper
W=$TESTDIR/w
mkdir -p "$W/d/sub"
make_random_file "$W/big.bin" $((256 * MiB)) keeper-big
echo "held open" >"$W/a.txt"
echo "in a subdirectory" >"$W/d/sub/c.txt"
push_artifact k/app v1 "$W" big.bin a.txt >/dev/null || bail "seed k/app:v1"
push_artifact k/app v2 "$W" a.txt d/sub/c.txt >/dev/null || bail "seed k/app:v2"
mkdir -p "$W/mv"
echo "the first m.txt" >"$W/mv/m.txt"
push_artifact k/move v1 "$W/mv" m.txt >/dev/null || bail "seed k/move:v1"
for i in 1 2 3 4 5 6 7 8; do
	make_random_file "$W/s$i.bin" $((24 * MiB)) "keeper-s$i"
	make_random_file "$W/r$i.bin" $((12 * MiB)) "keeper-r$i"
done
push_artifact k/streams v1 "$W" s1.bin s2.bin s3.bin s4.bin s5.bin s6.bin s7.bin s8.bin \
	>/dev/null || bail "seed k/streams:v1"
push_artifact k/rounds v1 "$W" r1.bin r2.bin r3.bin r4.bin r5.bin r6.bin r7.bin r8.bin \
	>/dev/null || bail "seed k/rounds:v1"

# a link of 8 MiB/s a connection, and 4 connections at most: a 256 MiB file
# takes seconds, so the kills land mid-read, with fetches in flight
PACE_PORT=$(free_port)
python3 "$srcdir/tests/integration/pacer.py" --port "$PACE_PORT" --upstream "$REG" \
	--rate $((8 * MiB)) >"$TESTDIR/pacer.log" 2>&1 </dev/null &
_LIB_DAEMON_PIDS+=("$!")
pacer_up() { curl -fs -o /dev/null "http://127.0.0.1:$PACE_PORT/v2/"; }
wait_until 20 pacer_up || bail "pacer.py did not start"
SRC=127.0.0.1:$PACE_PORT

M=$TESTDIR/mnt
mount_ocifs "$SRC" "$M" -o ro,max_streams=4 || bail "mount"
stat_of() { jq -r ".$1" "$M/.ocifs/stats.json" 2>/dev/null; }
S0=$(server_pid "$M")
check "a keeper (the command's process) runs the server as its child" test -n "$S0"
check_eq "stats.json: keeper_pid is the command's, server_pid its child's, restarts 0" \
	"$OCIFS_PID $S0 0" "$(stat_of keeper_pid) $(stat_of server_pid) $(stat_of restarts)"

# server_is PID: stats.json is answered by server PID
server_is() { [ "$(stat_of server_pid)" = "$1" ]; }
# kill9_server: SIGKILL the server now; prints its pid
kill9_server() {
	local s
	s=$(server_pid "$M")
	kill -KILL "$s"
	echo "$s"
}
size_of() { stat -c %s -- "$1" 2>/dev/null || echo 0; }
gone() { ! kill -0 "$1" 2>/dev/null; }
# blob_of_title REPO TAG TITLE: the hex digest of the layer titled TITLE
blob_of_title() {
	manifest_get "$1" "$2" | jq -r --arg t "$3" \
		'.layers[] | select(.annotations["org.opencontainers.image.title"] == $t) | .digest' |
		sed 's/^sha256://'
}
at_least() { [ "$(size_of "$1")" -ge "$2" ]; }

# ---- a cat across two kills
cat "$M/k/app/v1/big.bin" >"$TESTDIR/big.out" 2>"$TESTDIR/big.err" &
reader=$!
wait_until 60 at_least "$TESTDIR/big.out" $((48 * MiB)) || bail "the cat did not start"
k1=$(kill9_server)
wait_until 60 at_least "$TESTDIR/big.out" $((150 * MiB)) || bail "the cat did not go on"
k2=$(kill9_server)
wait "$reader"
rc=$?
check_eq "a cat of 256 MiB with the server killed -9 twice on the way exits 0" 0 "$rc"
diag "$(cat "$TESTDIR/big.err")"
check_same "and gives the right bytes" "$W/big.bin" "$TESTDIR/big.out"
check "the keeper said why each server ended" \
	grep -q "server pid $k2 killed by signal 9" "$OCIFS_LOG"
check "the kernel was asked to send again what the dead server had read" \
	grep -q "the kernel sends again what the server that died had not answered" "$OCIFS_LOG"
check_eq "stats.json: restarts 2, served by another server" "2 yes" \
	"$(stat_of restarts) $([ "$(stat_of server_pid)" != "$k2" ] && echo yes)"
rm -f "$TESTDIR/big.out"

# ---- a kernel without FUSE_NOTIFY_RESEND (before 6.9; OCIFS_NO_RESEND=1 makes
# the servers act as there): what the dead server had read ends with EIO, never hangs
M4=$TESTDIR/mnt4
M_LOG=$OCIFS_LOG
M_PID=$OCIFS_PID
OCIFS_NO_RESEND=1 OCIFS_CACHE=$TESTDIR/cache.noresend mount_ocifs "$SRC" "$M4" -o ro,max_streams=2 ||
	bail "mount without resend"
cat "$M4/k/app/v1/big.bin" >"$TESTDIR/nr.out" 2>"$TESTDIR/nr.err" &
reader=$!
wait_until 60 at_least "$TESTDIR/nr.out" $((16 * MiB)) || bail "the cat did not start"
kill -KILL "$(server_pid "$M4")"
check "without resend, the cat across a kill -9 ends: no hang" wait_until 60 gone "$reader"
wait "$reader"
rc=$?
if [ "$rc" = 0 ]; then
	check_same "it read all, right (no request was in flight)" "$W/big.bin" "$TESTDIR/nr.out"
else
	check "or it failed with EIO" grep -q "Input/output error" "$TESTDIR/nr.err"
fi
check "the new server said how many requests it ended with EIO" \
	grep -q "no FUSE_NOTIFY_RESEND): [0-9]* requests end with EIO" "$OCIFS_LOG"
check_same "the file then reads right" "$W/big.bin" "$M4/k/app/v1/big.bin"
rm -f "$TESTDIR/nr.out"
umount_ocifs "$M4"
OCIFS_LOG=$M_LOG
OCIFS_PID=$M_PID

# ---- what the kernel holds across a restart
exec 3<"$M/k/app/v1/a.txt"
exec 5<"$M/k/move/v1/m.txt"
# the tag moves while the file is held open, not read yet
echo "the second m.txt" >"$W/mv/m.txt"
push_artifact k/move v1 "$W/mv" m.txt >/dev/null || bail "move k/move:v1"
read -r first <&3
check_eq "a file held open reads" "held open" "$first"
cd "$M/k/app/v2/d" || bail "cd into the mount"
k3=$(kill9_server)
check "a server serves again" wait_until 30 server_is "$(server_pid "$M")"
check "and it is not the one killed" test "$(stat_of server_pid)" != "$k3"
check_eq "the held file reads again from its start, through the same descriptor" "held open" \
	"$(cat /proc/self/fd/3 2>&1)"
exec 3<&-
check_err "a file held open whose tag moved meanwhile: its reads fail, never the new bytes" \
	"Stale file handle" cat - <&5
check "the log says why" grep -q "is sha256:.* by its name now: its reads fail (ESTALE)" "$OCIFS_LOG"
exec 5<&-
check_eq "the working directory held lists" "sub" "$(ls 2>&1)"
check_eq "and reads below it" "in a subdirectory" "$(cat sub/c.txt 2>&1)"
cd / || bail "cd /"
check_eq "ls -R of the tag answers" \
	"$(cd "$W" && printf '%s\n' a.txt d d/sub d/sub/c.txt)" \
	"$(cd "$M/k/app/v2" && find . -mindepth 1 | sed 's|^\./||' | sort)"
check_eq "xattrs answer: user.oci.digest of a.txt" "sha256:$(sha256_hex "$W/a.txt")" \
	"$(getfattr --absolute-names --only-values -n user.oci.digest "$M/k/app/v2/a.txt" 2>&1)"
check_eq "stats.json answers, restarts 3" 3 "$(stat_of restarts)"

# ---- ocifs --restart under 8 streaming readers
pids=()
for i in 1 2 3 4 5 6 7 8; do
	cat "$M/k/streams/v1/s$i.bin" >"$TESTDIR/s$i.out" 2>"$TESTDIR/s$i.err" &
	pids+=($!)
done
wait_until 60 at_least "$TESTDIR/s8.out" $((2 * MiB)) || diag "reader 8 had not started"
old=$(server_pid "$M")
"$OCIFS" --restart "$M" >"$TESTDIR/restart.out" 2>&1
rc=$?
check_eq "ocifs --restart exits 0" 0 "$rc"
diag "$(cat "$TESTDIR/restart.out")"
new=$(stat_of server_pid)
check "and a new server serves" test -n "$new" -a "$new" != "$old"
check_eq "it says which" "server pid $new serves" "$(cat "$TESTDIR/restart.out")"
bad=0
for i in 1 2 3 4 5 6 7 8; do
	wait "${pids[$((i - 1))]}" || { bad=$((bad + 1)) && diag "reader $i: $(cat "$TESTDIR/s$i.err")"; }
	cmp -s "$W/s$i.bin" "$TESTDIR/s$i.out" || { bad=$((bad + 1)) && diag "reader $i: wrong bytes"; }
	rm -f "$TESTDIR/s$i.out"
done
check_eq "the 8 readers all exit 0 with the right bytes" 0 "$bad"
check "the old server answered what it had read, then exited 0" \
	grep -q "replaced server pid $old exited with status 0" "$OCIFS_LOG"
check_fail "and is gone" kill -0 "$old"
check_eq "stats.json: restarts 4" 4 "$(stat_of restarts)"

# ---- twenty kills at random points of reads: the time from a kill to the next answer
umount_ocifs "$M"
OCIFS_CACHE=$TESTDIR/cache.rounds mount_ocifs "$SRC" "$M" -o max_streams=2 ||
	bail "mount for the rounds"
make_random_file "$W/p.bin" $((3 * MiB)) keeper-push
times=()
deaths=()
readers=()
writers=()
for ((r = 1; r <= 20; r++)); do
	f=r$((1 + r % 8)).bin
	cat "$M/k/rounds/v1/$f" >"$TESTDIR/round$r.out" 2>"$TESTDIR/round$r.err" &
	readers+=("$!:$f")
	# and a push: a copy into a new tag, then its sync (the push itself)
	(mkdir -p "$M/k/push/t$r" && cp "$W/p.bin" "$M/k/push/t$r/p.bin" && sync "$M/k/push/t$r") \
		>/dev/null 2>"$TESTDIR/push$r.err" &
	writers+=("$!")
	nap "0.$(printf '%03d' $((100 + RANDOM % 500)))" # where the kill lands
	s=$(server_pid "$M")
	t0=$EPOCHREALTIME
	kill -KILL "$s"
	# gone: dead and reaped by the keeper
	for ((i = 0; i < 3000; i++)); do
		kill -0 "$s" 2>/dev/null || break
		nap 0.002
	done
	tg=$EPOCHREALTIME
	# the next answer: stats.json from another server
	for ((i = 0; i < 3000; i++)); do
		v=$(stat_of server_pid)
		[ -n "$v" ] && [ "$v" != "$s" ] && break
		nap 0.01
	done
	t1=$EPOCHREALTIME
	times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000 }')")
	deaths+=("$(awk -v a="$t0" -v b="$tg" 'BEGIN { printf "%d", (b - a) * 1000 }')")
done
bad=0
hung=0
eio=0
for ((r = 1; r <= 20; r++)); do
	pid=${readers[$((r - 1))]%%:*}
	f=${readers[$((r - 1))]#*:}
	if ! wait_until 120 gone "$pid"; then
		hung=$((hung + 1))
		kill -9 "$pid"
	fi
	if wait "$pid"; then
		cmp -s "$W/$f" "$TESTDIR/round$r.out" || bad=$((bad + 1))
	else
		eio=$((eio + 1))
		diag "round $r: $(cat "$TESTDIR/round$r.err")"
	fi
	rm -f "$TESTDIR/round$r.out"
done
check_eq "20 kills at random points of reads: 0 readers read wrong bytes" 0 "$bad"
check_eq "0 readers hung" 0 "$hung"
check_eq "0 readers failed (the kernel resends what a dead server had read)" 0 "$eio"
whole=0
torn=0
absent=0
failed=0
for ((r = 1; r <= 20; r++)); do
	pid=${writers[$((r - 1))]}
	if ! wait_until 120 gone "$pid"; then
		hung=$((hung + 1))
		kill -9 "$pid"
	fi
	wait "$pid" || { failed=$((failed + 1)) && diag "push $r: $(cat "$TESTDIR/push$r.err")"; }
done
# what a server had staged and closed when it was killed is pushed by the next
pushes_settle() { [ "$(jq -r .pushes_pending "$M/.ocifs/stats.json" 2>/dev/null)" = 0 ]; }
wait_until 60 pushes_settle || diag "pushes still pending"
for ((r = 1; r <= 20; r++)); do
	if ! manifest_get k/push "t$r" >/dev/null 2>&1; then
		absent=$((absent + 1))
	elif tag_whole k/push "t$r" && [ "$(blob_of_title k/push "t$r" p.bin)" = "$(sha256_hex "$W/p.bin")" ]; then
		whole=$((whole + 1))
	else
		torn=$((torn + 1))
	fi
done
check_eq "20 pushes across the kills: 0 tags torn (a blob missing, or a file cut short)" 0 "$torn"
check_eq "and 0 writers hung" 0 "$hung"
check_eq "0 copies failed (a writer goes on with the next server)" 0 "$failed"
check_eq "and every tag is pushed whole" 20 "$whole"
echo "# RELIABILITY: pushes across 20 kills of the server: $whole tags pushed whole, $absent not" \
	"pushed; $failed copies failed"
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
echo "# RELIABILITY: kill -9 to the next answer, 20 rounds: min $(head -n 1 <<<"$sorted") ms," \
	"median $(sed -n 10p <<<"$sorted") ms, max $(tail -n 1 <<<"$sorted") ms"
sorted=$(printf '%s\n' "${deaths[@]}" | sort -n)
echo "# RELIABILITY: of which from the kill to the server's exit, reaped by the keeper: min" \
	"$(head -n 1 <<<"$sorted") ms, median $(sed -n 10p <<<"$sorted") ms, max $(tail -n 1 <<<"$sorted") ms"
starts=$(sed -n 's/.*serves (restarts: [0-9]*), \([0-9]*\) ms after it was started/\1/p' "$OCIFS_LOG" |
	sort -n)
echo "# RELIABILITY: a new server's start to its first answer: min $(head -n 1 <<<"$starts") ms," \
	"median $(sed -n "$((($(wc -l <<<"$starts") + 1) / 2))p" <<<"$starts") ms," \
	"max $(tail -n 1 <<<"$starts") ms over $(wc -l <<<"$starts") starts"
umount_ocifs "$M"

# ---- the journal is written anew as it grows (entries given and forgotten),
# and still serves a restart (OCIFS_JOURNAL_COMPACT: its threshold, 16 MiB
# by default, made small here)
M3=$TESTDIR/mnt3
OCIFS_JOURNAL_COMPACT=16384 OCIFS_CACHE=$TESTDIR/cache.j mount_ocifs "$REG" "$M3" -o ro ||
	bail "mount for the journal"
exec 4<"$M3/k/app/v2/a.txt"
for ((i = 0; i < 30; i++)); do
	find "$M3/k" >/dev/null
	# SIGHUP drops the kernel's entries inside tags, which it then forgets:
	# each round's are given anew (and nothing of other tests' mounts goes)
	kill -HUP "$OCIFS_PID"
	nap 0.05
done
check "the journal was compacted" grep -q "journal: compacted from" "$OCIFS_LOG"
s=$(server_pid "$M3")
kill -KILL "$s"
check_eq "then, after a kill -9, the file held open reads" "held open" "$(cat <&4 2>&1)"
exec 4<&-
check_eq "and the tree lists as before" "$(find "$W/d" | wc -l)" "$(find "$M3/k/app/v2/d" | wc -l)"
umount_ocifs "$M3"

# ---- a directory the kernel moved under the parent id it looked it up by
# last, the id it had before forgotten: the next server still finds it.
# The shell's working directory holds k as the first server gave it; after
# a kill, a name looked up relative to it is under that old id; a path from
# the root then gives k a new id and the kernel moves app's entry there;
# once the old id of k is let go and forgotten, a process in app (held by
# its working directory) must still list it after the next kill.
M5=$TESTDIR/mnt5
OCIFS_CACHE=$TESTDIR/cache.m5 mount_ocifs "$REG" "$M5" -o ro,list_ttl=0 ||
	bail "mount with list_ttl=0"
stat5() { jq -r ".$1" "$M5/.ocifs/stats.json" 2>/dev/null; }
kill5() {
	local s
	s=$(stat5 server_pid)
	kill -KILL "$s"
	served5() { local v; v=$(stat5 server_pid) && [ -n "$v" ] && [ "$v" != "$s" ]; }
	wait_until 30 served5 || bail "no server on $M5 after the kill"
}
cd "$M5/k" || bail "cd $M5/k"
kill5
ls "$M5/k" >/dev/null || bail "ls of k from the root (a new id)"
ls app >/dev/null || bail "ls app relative to the old id of k"
(cd app && exec python3 -c 'import signal; signal.pause()') &
holder=$!
ls "$M5/k/app" >/dev/null || bail "ls of app from the root"
before=$(stat5 earlier_ids)
cd / || bail "cd /"
echo 2 >/proc/sys/vm/drop_caches
fewer5() { [ "$(stat5 earlier_ids)" -lt "$before" ]; }
check "the old id of k is forgotten once nothing holds it" wait_until 30 fewer5
kill5
check_eq "after the next kill, the directory held lists" "v1 v2" \
	"$(ls "/proc/$holder/cwd" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
kill "$holder"
wait "$holder" 2>/dev/null
umount_ocifs "$M5"

# ---- a server that crashes at start: back-off, EIO meanwhile, unmount ends it
cp "$OCIFS" "$TESTDIR/ocifs-copy"
M2=$TESTDIR/mnt2
OCIFS=$TESTDIR/ocifs-copy mount_ocifs "$REG" "$M2" -o ro || bail "mount of the copy"
check_eq "the copy serves" "held open" "$(cat "$M2/k/app/v1/a.txt" 2>&1)"
# the program is replaced by one that fails at once (an upgrade gone wrong)
printf '#!/bin/sh\necho "broken build" >&2\nexit 1\n' >"$TESTDIR/broken"
chmod +x "$TESTDIR/broken"
mv "$TESTDIR/ocifs-copy" "$TESTDIR/ocifs-good"
mv "$TESTDIR/broken" "$TESTDIR/ocifs-copy"
kill -KILL "$(server_pid "$M2")"
backing_off() { grep -q "in a row: next start in" "$OCIFS_LOG"; }
check "the keeper backs off and says so" wait_until 30 backing_off
# a request while no server runs is answered EIO, not left hanging
check_err "a read while it backs off fails with EIO" "Input/output error" \
	timeout 20 cat "$M2/k/app/v2/d/sub/c.txt"
check "the keeper still runs" kill -0 "$OCIFS_PID"
# the right program back: the next start serves again
mv -f "$TESTDIR/ocifs-good" "$TESTDIR/ocifs-copy"
reads_again() { [ "$(cat "$M2/k/app/v1/a.txt" 2>/dev/null)" = "held open" ]; }
check "once the program starts again, the mount serves again" wait_until 30 reads_again
mv "$TESTDIR/ocifs-copy" "$TESTDIR/ocifs-good"
printf '#!/bin/sh\nexit 1\n' >"$TESTDIR/ocifs-copy"
chmod +x "$TESTDIR/ocifs-copy"
kill -KILL "$(server_pid "$M2")"
no_server() { [ -z "$(server_pid "$M2")" ]; }
check "crashing again, no server runs for a while" wait_until 30 no_server
umount_ocifs "$M2"
finish

#!/bin/bash
# A credential helper that never answers (docker-credential-stuck, named by
# credHelpers or credsStore in an -o auth_file=): it is given a time limit
# (-o helper_timeout=, 3 s in the first part; the default 10 s in the
# second, at full scale), then killed with its children, the log says it
# timed out naming the helper and the host, and the lookup goes on
# anonymously. While it is stuck, other requests to the same registry and
# reads of another registry go on: the helper runs outside the registry's
# lock.
T_TIMEOUT=${T_TIMEOUT:-300}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env openssl socat base32 timeout jq

# Only the credentials this test writes: none from the machine.
export HOME=$TESTDIR/home XDG_RUNTIME_DIR=$TESTDIR/run
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"
unset DOCKER_CONFIG REGISTRY_AUTH_FILE

# another registry, without auth
registry_start plain
REG2=$REG
O=$TESTDIR/other
mkdir -p "$O"
printf 'on another registry\n' >"$O/o.txt"
push_artifact pub/files v1 "$O" >/dev/null || bail "seed pub/files:v1"

# a registry with token auth: public/* reads anonymously
reg_auth_clear
registry_start_token bob 'T0ken-s3cret.word'
TREG=$REG
P=$TESTDIR/pub
mkdir -p "$P"
for i in 1 2 3; do printf 'public file %d\n' "$i" >"$P/f$i.txt"; done
with_reg_token public/hello push_artifact public/hello v1 "$P" >/dev/null || bail "seed public/hello:v1"
printf 'another public repository\n' >"$TESTDIR/g.txt"
with_reg_token public/other push_artifact public/other v1 "$TESTDIR" g.txt >/dev/null ||
	bail "seed public/other:v1"

printf 'a third one\n' >"$TESTDIR/t.txt"
with_reg_token public/third push_artifact public/third v1 "$TESTDIR" t.txt >/dev/null ||
	bail "seed public/third:v1"

# The helper: while $BIN/stuck.on exists it records its pid and its child's
# and waits forever; else it has no credentials for anyone (answers at once).
BIN=$TESTDIR/credbin
PIDS=$BIN/stuck.pids
mkdir -p "$BIN"
cat >"$BIN/docker-credential-stuck" <<HELPER
#!/bin/bash
if [ ! -e "$BIN/stuck.on" ]; then
	echo "credentials not found in native keychain"
	exit 1
fi
echo \$\$ >>"$PIDS"
# SIGHUP and SIGTERM (bits 0x1 and 0x4000 of the mask) not blocked. Read by
# the shell itself: bash blocks SIGTERM in the parent while it forks, and a
# child (a command substitution) could see that mask instead of its steady one
while IFS=\$'\t: ' read -r key mask; do [ "\$key" = SigBlk ] && break; done </proc/\$\$/status
echo "hup+term blocked: \$((0x\$mask & 0x4001))" >>"$BIN/sigblk"
sleep 100000 &
echo \$! >>"$PIDS"
wait
HELPER
chmod +x "$BIN/docker-credential-stuck"

# runs N: the helper got stuck N times
runs() { [ "$(($(wc -l <"$PIDS") / 2))" -ge "$1" ]; }
nruns() { echo $(($(wc -l <"$PIDS") / 2)); }
# none_left: no process the helper started is still there
none_left() {
	local p
	for p in $(cat "$PIDS"); do
		kill -0 "$p" 2>/dev/null && return 1
	done
	! pgrep -f -- "$BIN/docker-credential-stuck" >/dev/null
}
# helper_state: "stuck" while a process the helper started is there, else "gone"
helper_state() { if none_left; then echo gone; else echo stuck; fi; }
# timed_cat SECS FILE OUT: cat FILE to OUT within SECS; prints the seconds it took
timed_cat() {
	local t0=$SECONDS rc
	timeout -k 2 "$1" cat "$2" >"$3" 2>"$3.err"
	rc=$?
	echo "$((SECONDS - t0))"
	return $rc
}
TIMED_OUT="$TREG: credential helper docker-credential-stuck timed out"

# ---- credsStore: stuck from the first request on
AF=$TESTDIR/auth-store.json
jq -n '{credsStore: "stuck"}' >"$AF"
: >"$PIDS"
touch "$BIN/stuck.on"
M=$TESTDIR/m1
LIMIT=3
if PATH=$BIN:$PATH OCIFS_CACHE=$TESTDIR/cache.1 mount_ocifs - "$M" -o "ro,auth_file=$AF,helper_timeout=$LIMIT"; then
	H=$M/$TREG/public/hello/v1
	secs=$(timed_cat 60 "$H/f1.txt" "$TESTDIR/got1")
	rc=$?
	check_eq "credsStore stuck: a public file reads anonymously (in ${secs}s)" \
		"0 $(cat "$P/f1.txt")" "$rc $(cat "$TESTDIR/got1")"
	# the read ends once the limit kills the helper (which sleeps for a day), not by
	# the helper's own end: a bound on its seconds would measure the machine's load
	check "credsStore stuck: after the time limit ($LIMIT s), not the helper's own end (${secs}s)" \
		test "$secs" -ge $((LIMIT - 1)) -a "$secs" -lt 60
	check_eq "credsStore stuck: the helper was run once for the host" 1 "$(nruns)"
	check "credsStore stuck: the log says the helper timed out, naming it and the host" \
		grep -qF "$TIMED_OUT" "$OCIFS_LOG"
	wait_until 5 none_left
	check "credsStore stuck: the helper and its child were killed ($(tr '\n' ' ' <"$PIDS"))" \
		none_left
	check_eq "credsStore stuck: the helper ran with SIGHUP and SIGTERM unblocked" \
		"hup+term blocked: 0" "$(sort -u "$BIN/sigblk")"
	# not held up by the helper: it is not run again (its time limit would
	# show as a second run); the bound only catches a hang
	secs=$(timed_cat 60 "$M/$TREG/public/other/v1/g.txt" "$TESTDIR/got-g")
	rc=$?
	check_eq "credsStore stuck: another repository then reads (${secs}s)" \
		"0 $(cat "$TESTDIR/g.txt")" "$rc $(cat "$TESTDIR/got-g")"
	check_eq "credsStore stuck: without running the helper again" 1 "$(nruns)"
	umount_ocifs "$M"
	check "credsStore stuck: no process of the helper left after unmounting" none_left
fi

# ---- credHelpers: the helper gets stuck once public/hello has been read
AF=$TESTDIR/auth-helpers.json
jq -n --arg h "$TREG" '{credHelpers: {($h): "stuck"}}' >"$AF"
: >"$PIDS"
rm -f "$BIN/stuck.on"
M=$TESTDIR/m2
LIMIT=10
if PATH=$BIN:$PATH OCIFS_CACHE=$TESTDIR/cache.2 mount_ocifs - "$M" -o "ro,auth_file=$AF"; then
	H=$M/$TREG/public/hello/v1
	check_same "credHelpers, the helper answering: a public file reads" "$P/f1.txt" "$H/f1.txt"
	# Held open, so that the kernel keeps the entries of public/hello/v1:
	# looked up again (another test dropping the machine's dentries), hello
	# would wait behind the stuck lookup in public/, as the kernel runs one
	# lookup at a time per directory (libfuse before 3.17.1 does not ask for
	# parallel directory operations).
	exec 5<"$H"
	touch "$BIN/stuck.on"
	(timed_cat 60 "$M/$TREG/public/other/v1/g.txt" "$TESTDIR/got-g2" >"$TESTDIR/secs-g2") &
	bg=$!
	check "the helper is stuck, for public/other" wait_until 10 runs 1
	# Each read ends while the helper is still stuck (killed after $LIMIT s):
	# it did not wait for it, however slow the machine (token requests go
	# through a shell script); the bound only catches a hang.
	secs=$(timed_cat 60 "$H/f2.txt" "$TESTDIR/got2")
	rc=$?
	check_eq "meanwhile another file of public/hello (same registry) reads, the helper still stuck (${secs}s)" \
		"0 $(cat "$P/f2.txt") stuck" "$rc $(cat "$TESTDIR/got2") $(helper_state)"
	exec 5<&-
	secs=$(timed_cat 60 "$M/$REG2/pub/files/v1/o.txt" "$TESTDIR/got-o")
	rc=$?
	check_eq "meanwhile another registry reads, the helper still stuck (${secs}s)" \
		"0 $(cat "$O/o.txt") stuck" "$rc $(cat "$TESTDIR/got-o") $(helper_state)"
	check "and the stuck lookup was still running then" kill -0 "$bg"
	wait "$bg"
	rc=$?
	check "public/other read after the time limit ($LIMIT s, $(cat "$TESTDIR/secs-g2")s)" \
		test "$(cat "$TESTDIR/secs-g2")" -ge $((LIMIT - 1))
	check_eq "public/other reads once its helper timed out" \
		"0 $(cat "$TESTDIR/g.txt")" "$rc $(cat "$TESTDIR/got-g2")"
	check_eq "the log says it timed out, once" 1 "$(grep -cF "$TIMED_OUT" "$OCIFS_LOG")"
	wait_until 5 none_left
	check "the helper and its child were killed ($(tr '\n' ' ' <"$PIDS"))" none_left
	secs=$(timed_cat 60 "$M/$TREG/public/third/v1/t.txt" "$TESTDIR/got-t")
	rc=$?
	check_eq "a third repository reads, the helper not run again (${secs}s)" \
		"0 $(cat "$TESTDIR/t.txt") 1" "$rc $(cat "$TESTDIR/got-t") $(nruns)"
	check "the daemon is alive" daemon_alive "$M"
	umount_ocifs "$M"
	check "no process of the helper left after unmounting" none_left
fi
finish

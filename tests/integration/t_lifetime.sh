#!/bin/bash
# Inode lifetime: what the kernel forgets (after `find` and dropped
# dentries) is freed by the daemon, as .ocifs/stats.json's "nodes" shows,
# and everything still reads the same when looked up again. Open files,
# a shell's working directory, staged pushes and an old tag's subtree held
# open stay valid while they are held. With the registry down, a tag's node
# made again keeps the tag's last resolution.
T_TIMEOUT=${T_TIMEOUT:-300}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env python3

registry_start lifetime
DIRS=40 FILES=50
push_wide_image wide/img v1 $DIRS $FILES >/dev/null || bail "push the wide image"
echo one >"$TESTDIR/one.txt"
echo two >"$TESTDIR/two.txt"
push_artifact_titled art/a v1 file.txt "$TESTDIR/one.txt" >/dev/null || bail "push art/a:v1"

M=$TESTDIR/mnt
mount_ocifs "$REG" "$M" -o tag_ttl=1,push_delay=60 || bail "mount"
nodes() { jq -r .nodes "$M/.ocifs/stats.json"; }
# nodes_at_most N: the daemon holds N nodes or fewer (the kernel forgets asynchronously)
nodes_at_most() { [ "$(nodes)" -le "$1" ]; }
forget_all() { sync && echo 2 >/proc/sys/vm/drop_caches; }

forget_all
wait_until 10 nodes_at_most 10
idle=$(nodes)
check "the idle mount holds a handful of nodes ($idle)" test "$idle" -le 10

# ---- a walk makes a node per entry; forgetting them frees them
W=$M/wide/img/v1
n=$(find "$W" -path "$W/.oci" -prune -o -print | wc -l)
check_eq "find sees every entry of the image" $((1 + DIRS + DIRS * FILES)) "$n"
# walked: a walk leaves a node per entry. Walked again when the kernel forgot
# them before the count (another test's drop_caches: the passes run side by
# side, t_lifetime in each)
walked() {
	find "$W" -path "$W/.oci" -prune -o -print >/dev/null
	walked=$(nodes)
	[ "$walked" -ge $((DIRS * FILES)) ]
}
wait_until 30 walked
check "the walk made a node per entry ($walked)" test "$walked" -ge $((DIRS * FILES))
forget_all
wait_until 20 nodes_at_most $((idle + 5))
after=$(nodes)
check "dropped dentries: the nodes are freed ($walked -> $after, idle $idle)" \
	test "$after" -le $((idle + 5))
check_eq "a file reads the same once looked up again" "d0007/f0042" "$(cat "$W/d0007/f0042")"
check_eq "the walk finds the same entries again" $((1 + DIRS + DIRS * FILES)) \
	"$(find "$W" -path "$W/.oci" -prune -o -print | wc -l)"
check_eq "a listing shows every file again" $FILES "$(ls "$W/d0013" | wc -l)"
forget_all
wait_until 20 nodes_at_most $((idle + 5))

# ---- what is held stays: an open file, a working directory
exec 3<"$W/d0003/f0003"
(cd "$W/d0021" && exec sleep 1000) &
cwd_pid=$!
wait_until 10 test -d "/proc/$cwd_pid/cwd/" || true
forget_all
# the two held paths, and the manifest-built .oci/ of the image they are in
wait_until 20 nodes_at_most $((idle + 20))
check "held nodes stay, the rest goes ($(nodes) nodes)" test "$(nodes)" -le $((idle + 20))
check_eq "an open file still reads after its dentry was dropped" "d0003/f0003" "$(cat <&3)"
check_eq "a working directory still lists after its dentry was dropped" $FILES \
	"$(ls "/proc/$cwd_pid/cwd/" | wc -l)"
check_eq "and reads through it" "d0021/f0009" "$(cat "/proc/$cwd_pid/cwd/f0009")"
exec 3<&-
kill "$cwd_pid" 2>/dev/null
wait "$cwd_pid" 2>/dev/null
forget_all
wait_until 20 nodes_at_most $((idle + 5))
check "released: freed ($(nodes) nodes)" test "$(nodes)" -le $((idle + 5))

# ---- a tag moved: the old subtree stays for who holds it, the new one shows
A=$M/art/a/v1
exec 4<"$A/file.txt"
push_artifact_titled art/a v1 file.txt "$TESTDIR/two.txt" >/dev/null || bail "move art/a:v1"
wait_until 10 grep -qx two "$A/file.txt"
check_eq "the moved tag shows its new file" two "$(cat "$A/file.txt")"
check_eq "a file of the old manifest held open reads its old bytes" one "$(cat <&4)"
exec 4<&-
forget_all
wait_until 20 nodes_at_most $((idle + 5))
check "the old subtree goes once let go ($(nodes) nodes)" test "$(nodes)" -le $((idle + 5))

# ---- staged changes are pinned: forgetting their dentries loses nothing
mkdir "$M/art/a/v2" && echo staged >"$M/art/a/v2/new.txt"
mkdir -p "$M/newrepo/v1/sub" && echo deep >"$M/newrepo/v1/sub/deep.txt"
forget_all
check_eq "a staged tag still shows its file after its dentries were dropped" staged \
	"$(cat "$M/art/a/v2/new.txt")"
check "sync of the staged tag pushes it" sync "$M/art/a/v2"
check_eq "the registry has the pushed file" staged \
	"$(blob_get art/a "$(manifest_get art/a v2 | jq -r '.layers[0].digest')")"
forget_all
check "a new repository's staged tag survives dropped dentries" sync "$M/newrepo/v1"
check_eq "and is pushed whole" "sub/deep.txt deep" \
	"$(manifest_get newrepo v1 | jq -r '.layers[0] | .annotations["org.opencontainers.image.title"] + " " + .digest' |
		while read -r t d; do echo "$t $(blob_get newrepo "$d")"; done)"
forget_all
wait_until 20 nodes_at_most $((idle + 8))
check "after the pushes, forgotten nodes are freed ($(nodes) nodes)" test "$(nodes)" -le $((idle + 8))

check "the daemon is alive" daemon_alive "$M"
umount_ocifs "$M"
check_log_clean "no sanitizer report" "$OCIFS_LOG"

# ---- the registry down: a tag's node freed and made again shows the tag's
# last resolution, through namespaces the last catalog lists
M=$TESTDIR/mnt2
mount_ocifs "$REG" "$M" -o tag_ttl=1,list_ttl=1,timeout=2 || bail "mount again"
check_eq "a tag read with the registry up" two "$(cat "$M/art/a/v1/file.txt")"
registry_stop
down_at=$(date +%s)
forget_all
wait_until 20 nodes_at_most $((idle + 5))
check "the registry down: the tag's nodes are freed ($(nodes) nodes)" test "$(nodes)" -le $((idle + 5))
# the tag's resolution and the listings are out of date (tag_ttl, list_ttl)
ttls_over() { [ "$(date +%s)" -ge $((down_at + 2)) ]; }
wait_until 5 ttls_over
check_eq "the registry down: made again, the tag shows its last resolution" two \
	"$(cat "$M/art/a/v1/file.txt" 2>&1)"
check "the daemon is alive" daemon_alive "$M"
umount_ocifs "$M"

# ---- a tag's node forgotten by the kernel while a lookup of it is under way
# (SIGHUP made the lookup ask the catalog again; the proxy holds that
# answer): the lookup hands out the node that stands there now, never the
# one freed meanwhile, else what mkdir -p makes below it is made out of the
# tree and no later lookup finds it (t_stress saw this happen to
# .oci/referrers/<type>/<name> between `mkdir -p` and `cp`)
registry_start lifetime-race
echo race >"$TESTDIR/race.txt"
push_artifact_titled art/r v1 file.txt "$TESTDIR/race.txt" >/dev/null || bail "push art/r:v1"
faultproxy_start "http://$REG"
M=$TESTDIR/mnt3
mount_ocifs "$FP" "$M" -o push_delay=3600 || bail "mount through the proxy"
V=$M/art/r/v1
R=$V/.oci/referrers/application/vnd.test.note/n1
check_eq "the tag reads through the proxy" race "$(cat "$V/file.txt")"
# a working directory holds the tag's node (an open file's release would wait for the lookup)
(cd "$V" && exec sleep 1000) &
cwd_pid=$!
wait_until 10 test -e "/proc/$cwd_pid/cwd/file.txt" || true
fp_rules "[{\"id\":\"cat\",\"match\":\"/v2/_catalog\",\"times\":1,\"came\":\"$TESTDIR/cat.came\",\"hold\":\"$TESTDIR/cat.go\"}]"
kill -HUP "$OCIFS_PID"
wait_until 10 grep -q "SIGHUP: tag resolutions" "$OCIFS_LOG" || bail "SIGHUP not taken"
# mkdir -p looks the tag up again (its entry dropped), and waits for the catalog
mkdir -p "$R" 2>"$TESTDIR/mkdir.err" &
maker=$!
check "mkdir -p below the tag waits for the lookup of the tag" \
	wait_until 30 test -e "$TESTDIR/cat.came"
# meanwhile the kernel lets go of the tag: the working directory left, the dentries dropped
kill "$cwd_pid" 2>/dev/null
wait "$cwd_pid" 2>/dev/null
forget_all
# forgets go before other requests: once these are answered, the daemon has them
jq .nodes "$M/.ocifs/stats.json" >/dev/null && jq .nodes "$M/.ocifs/stats.json" >/dev/null
touch "$TESTDIR/cat.go"
wait "$maker"
check_eq "mkdir -p of a referrer directory succeeds" 0 "$?" || diag_file "$TESTDIR/mkdir.err"
forget_all
check "the directory is there once the kernel has forgotten its dentries" test -d "$R"
check "a file is attached into it" cp -- "$TESTDIR/race.txt" "$R/"
check "the daemon is alive" daemon_alive "$M"
umount_ocifs "$M"
finish

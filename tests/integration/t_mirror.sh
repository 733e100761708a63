#!/bin/bash
# Mirrors: with -o mirror=URL, manifests and blobs come through a
# pull-through mirror (docker-registry with proxy: remoteurl:) first; a mirror
# that stops, or lacks the content, hands over to the next one and then to
# the upstream, and the reader never notices.
T_TIMEOUT=${T_TIMEOUT:-240}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env

REG_ACCESSLOG=1 registry_start upstream
W=$TESTDIR/w
mkdir -p "$W"
make_random_file "$W/a.bin" $((3 * 1024 * 1024)) mirror-a
make_random_file "$W/b.bin" $((2 * 1024 * 1024)) mirror-b
make_random_file "$W/c.bin" $((1024 * 1024 + 17)) mirror-c
printf 'through the mirror\n' >"$W/hello.txt"
push_artifact lib/art v1 "$W" a.bin b.bin c.bin hello.txt >/dev/null || bail "seed lib/art:v1"
A_HEX=$(sha256_hex "$W/a.bin")
B_HEX=$(sha256_hex "$W/b.bin")
C_HEX=$(sha256_hex "$W/c.bin")
UPSTREAM=$REG

# Requests ocifs itself (not the mirror, whose client is Go's) made upstream.
ocifs_upstream() {
	tail -c +"$((${2:-0} + 1))" -- "$REG_ROOT/registry.log" | grep -E -- "$1" | grep -c '"ocifs/'
}
# A registry writes a request's line when its handler returns, which can be
# after the client has the whole answer: a check that a request was made
# waits for its line. logged LOG REGEX; ocifs_asked_upstream REGEX [MARK]
logged() { grep -qE -- "$2" "$1"; }
ocifs_asked_upstream() { [ "$(ocifs_upstream "$@")" -ge 1 ]; }

registry_start_mirror "http://$UPSTREAM"
M=$TESTDIR/mnt
A=$M/lib/art/v1

# ---- pulls go through the mirror
mount_ocifs "$UPSTREAM" "$M" -o "ro,mirror=http://$MIRROR" || bail "mount with a mirror"
check_eq "hello.txt reads through the mirror" "through the mirror" "$(cat "$A/hello.txt")"
check_same "a.bin's bytes through the mirror" "$W/a.bin" "$A/a.bin"
check "the mirror was asked for the manifest" \
	wait_until 10 logged "$MIRROR_ROOT/registry.log" '"GET /v2/lib/art/manifests/v1 '
check "the mirror served a.bin" \
	wait_until 10 logged "$MIRROR_ROOT/registry.log" "\"GET /v2/lib/art/blobs/sha256:$A_HEX "
# what the upstream logs of this mount's requests, all of it, before counting none
reg_log_quiet
check_eq "ocifs fetched no manifest from the upstream" 0 "$(ocifs_upstream '"GET /v2/lib/art/manifests/')"
check_eq "nor a.bin" 0 "$(ocifs_upstream "/blobs/sha256:$A_HEX ")"
check "but it lists tags at the upstream" wait_until 10 ocifs_asked_upstream '"GET /v2/lib/art/tags/list'

# ---- the mirror stops: the upstream answers, the reader sees nothing
_lib_kill_pid "$MIRROR_PID"
wait "$MIRROR_PID" 2>/dev/null
check_fail "the mirror is down" curl -fsS -o /dev/null --max-time 2 "http://$MIRROR/v2/"
check_same "b.bin reads with the mirror down" "$W/b.bin" "$A/b.bin"
check_same "and so does c.bin" "$W/c.bin" "$A/c.bin"
check "the upstream served b.bin to ocifs" wait_until 10 ocifs_asked_upstream "/blobs/sha256:$B_HEX "
check "the log says the mirror is passed over" grep -q "mirror $MIRROR: .*passing it over" "$OCIFS_LOG"
check_eq "once, not per request" 1 "$(grep -c "mirror $MIRROR: .*passing it over" "$OCIFS_LOG")"
check "the daemon is alive" daemon_alive "$M"
umount_ocifs "$M"
rm -rf "$CACHE" && mkdir -p "$CACHE"

# ---- in order: a mirror without the content hands over to the next
EMPTY_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/ocifs-empty.XXXXXX") || bail "mktemp"
_LIB_TMPDIRS+=("$EMPTY_ROOT")
s_root=$REG_ROOT s_reg=$REG s_port=$REG_PORT s_pid=$REG_PID
REG_ROOT=$EMPTY_ROOT
REG_ACCESSLOG=1 _registry_launch "$EMPTY_ROOT" "$(free_port)" || bail "start an empty registry"
EMPTY=$REG
# the same artifact under a path prefix, as a mirror that keeps each upstream under its own
push_artifact pfx/lib/art v1 "$W" a.bin b.bin c.bin hello.txt >/dev/null || bail "seed pfx/lib/art:v1"
REG_ROOT=$s_root REG=$s_reg REG_PORT=$s_port REG_PID=$s_pid
registry_start_mirror "http://$UPSTREAM" mirror2
mark=$(reg_log_mark)

mount_ocifs "$UPSTREAM" "$M" -o "ro,mirror=$EMPTY/v2/nothing-here,mirror=http://$MIRROR" ||
	bail "mount with two mirrors"
check_same "c.bin reads through the second mirror" "$W/c.bin" "$A/c.bin"
check "the first mirror was asked first" \
	wait_until 10 logged "$EMPTY_ROOT/registry.log" '"GET /v2/nothing-here/lib/art/manifests/v1 '
check "the second mirror served c.bin" \
	wait_until 10 logged "$MIRROR_ROOT/registry.log" "\"GET /v2/lib/art/blobs/sha256:$C_HEX "
reg_log_quiet
check_eq "ocifs fetched nothing of the artifact upstream" 0 "$(ocifs_upstream '"GET /v2/lib/art/(manifests|blobs)/' "$mark")"
check_fail "a mirror without the content is not passed over" grep -q "passing it over" "$OCIFS_LOG"
umount_ocifs "$M"
rm -rf "$CACHE" && mkdir -p "$CACHE"

# ---- a path prefix: repositories are asked for under it
mount_ocifs "$UPSTREAM" "$M" -o "ro,mirror=http://$EMPTY/pfx" || bail "mount with a prefixed mirror"
check_same "a.bin reads through the prefixed mirror" "$W/a.bin" "$A/a.bin"
check "the mirror was asked under its prefix" \
	wait_until 10 logged "$EMPTY_ROOT/registry.log" "\"GET /v2/pfx/lib/art/blobs/sha256:$A_HEX "
umount_ocifs "$M"

# ---- pushes go to the registry itself, never to a mirror
registry_start_mirror "http://$UPSTREAM" mirror3
mirror_mark=$(stat -c %s "$MIRROR_ROOT/registry.log")
mount_ocifs "$UPSTREAM" "$M" -o "mirror=http://$MIRROR" || bail "mount read-write with a mirror"
mkdir "$M/lib/art/pushed" && cp "$W/hello.txt" "$M/lib/art/pushed/" && sync "$M/lib/art/pushed"
check_eq "a push through a mount with a mirror succeeds" 0 "$?"
umount_ocifs "$M"
check_eq "the upstream has the pushed tag" "$(sha256_hex "$W/hello.txt")" \
	"$(manifest_get lib/art pushed | jq -r '.layers[0].digest' | cut -d: -f2)"
check_eq "the mirror saw no upload or manifest PUT" 0 \
	"$(tail -c +"$((mirror_mark + 1))" "$MIRROR_ROOT/registry.log" | grep -cE '"(POST|PUT|PATCH) ')"

# ---- a mirror URL that is not one
out=$("$OCIFS" -f -o "ro,cache_dir=$TESTDIR/c3,mirror=ftp://x y" "$UPSTREAM" "$M" 2>&1)
rc=$?
check "a bad mirror URL fails the mount" test "$rc" != 0
check "with a line that names it" grep -q 'invalid mirror "ftp://x y"' <<<"$out"
check_fail "and nothing is mounted" mountpoint -q "$M"
finish

#!/bin/bash
# Command line: --help, --version, errors before mounting, detached mode,
# mount -t fuse.ocifs, no daemon left behind after unmount.
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
T_TIMEOUT=240 lib_watchdog 240
require_env mount umount pgrep

registry_start cli
mkdir -p "$TESTDIR/src"
printf 'Hello from ocifs\n' >"$TESTDIR/src/hello.txt"
push_artifact demo/hello v1 "$TESTDIR/src" >/dev/null || bail "seed demo/hello:v1"

# --help / --version
"$OCIFS" --help >"$TESTDIR/help.out" 2>&1
check_eq "ocifs --help exits 0" 0 "$?"
check "ocifs --help shows the synopsis (SOURCE MOUNTPOINT)" grep -q 'SOURCE.*MOUNTPOINT' "$TESTDIR/help.out"
check "ocifs --help lists the options (cache_dir, platform, ro)" \
	bash -c 'grep -q cache_dir "$1" && grep -q platform "$1" && grep -qw ro "$1"' _ "$TESTDIR/help.out"

version=$(sed -n 's/^AC_INIT(\[ocifs\], *\[\([^]]*\)\].*/\1/p' "$srcdir/configure.ac")
out=$("$OCIFS" --version 2>/dev/null)
check_eq "ocifs --version exits 0" 0 "$?"
check_eq "ocifs --version prints 'ocifs $version'" "ocifs $version" "$(head -n1 <<<"$out")"

# Errors before mounting: non-zero exit, exactly one line "ocifs: ..." on
# stderr, nothing mounted, no daemon left.
# expect_refusal DESC SOURCE MOUNTPOINT
expect_refusal() {
	local desc=$1 src=$2 mnt=$3 rc nl first
	timeout 120 "$OCIFS" -o "cache_dir=$CACHE" "$src" "$mnt" \
		>"$TESTDIR/refuse.out" 2>"$TESTDIR/refuse.err" </dev/null
	rc=$?
	check "$desc: non-zero exit" test "$rc" != 0 -a "$rc" != 124 || diag "exit status $rc (124: timeout)"
	nl=$(wc -l <"$TESTDIR/refuse.err")
	first=$(head -n1 "$TESTDIR/refuse.err")
	check_eq "$desc: one line on stderr" 1 "$nl" || diag_file "$TESTDIR/refuse.err"
	check "$desc: the line starts with 'ocifs: '" test "${first#ocifs: }" != "$first" ||
		diag "stderr: $first"
	if [ -d "$mnt" ]; then
		check_fail "$desc: nothing mounted" mountpoint -q "$mnt"
	fi
	check_fail "$desc: no daemon left" pgrep -f -- "$src $mnt"
	fusermount3 -uz "$mnt" 2>/dev/null
}

mkdir -p "$TESTDIR/m"
expect_refusal "uppercase repository name" "$REG/UPPER" "$TESTDIR/m"
expect_refusal "bad digest in SOURCE" "$REG/demo/hello@sha256:1234" "$TESTDIR/m"
expect_refusal "bad tag in SOURCE" "$REG/demo/hello:-bad" "$TESTDIR/m"
closed=$(free_port) || bail "no free port"
start=$SECONDS
expect_refusal "registry on a closed port" "127.0.0.1:$closed" "$TESTDIR/m"
diag "closed port refused after $((SECONDS - start)) s"
expect_refusal "closed port, repository source" "127.0.0.1:$closed/demo/hello" "$TESTDIR/m"
expect_refusal "missing mount point" "$REG" "$TESTDIR/does/not/exist"
check_fail "missing mount point was not created" test -e "$TESTDIR/does/not/exist"

# Detached (no -f): ocifs returns once the mount is up.
mnt=$TESTDIR/detached
mkdir -p "$mnt"
"$OCIFS" -o "cache_dir=$CACHE,ro" "$REG" "$mnt" >"$TESTDIR/detached.log" 2>&1 </dev/null
check_eq "detached ocifs exits 0" 0 "$?" || diag_file "$TESTDIR/detached.log"
check "detached: mounted when ocifs returns" mountpoint -q "$mnt"
check_eq "detached: file reads" "Hello from ocifs" "$(cat "$mnt/demo/hello/v1/hello.txt" 2>&1)"
pid=$(pgrep -f -- " $mnt\$" | head -n1)
check "detached: a daemon serves the mount" test -n "$pid"
[ -n "$pid" ] && _LIB_DAEMON_PIDS+=("$pid")
check "detached: fusermount3 -u" fusermount3 -u "$mnt"
check "detached: daemon gone after unmount" wait_until 10 bash -c "! pgrep -f -- ' $mnt\$'"

# mount -t fuse.ocifs: mount.fuse3 runs `ocifs` from PATH.
mkdir -p "$TESTDIR/bin"
ln -s "$OCIFS" "$TESTDIR/bin/ocifs"
mnt=$TESTDIR/viamount
mkdir -p "$mnt"
PATH=$TESTDIR/bin:$PATH mount -t fuse.ocifs "$REG" "$mnt" -o "ro,cache_dir=$CACHE" \
	>"$TESTDIR/mount.out" 2>&1
check_eq "mount -t fuse.ocifs exits 0" 0 "$?" || diag_file "$TESTDIR/mount.out"
check "mount -t: listed in /proc/mounts as fuse.ocifs" grep -q " $mnt fuse.ocifs " /proc/mounts
check_ls "mount -t: registry root lists the repository" "$mnt" demo
check_eq "mount -t: file reads" "Hello from ocifs" "$(cat "$mnt/demo/hello/v1/hello.txt" 2>&1)"
check_err "mount -t: ro refuses writes" "Read-only file system" touch "$mnt/demo/hello/v1/new"
pid=$(pgrep -f -- "$mnt" | head -n1)
check "mount -t: a daemon serves the mount" test -n "$pid"
[ -n "$pid" ] && _LIB_DAEMON_PIDS+=("$pid")
check "mount -t: umount" umount "$mnt"
check_fail "mount -t: not mounted any more" mountpoint -q "$mnt"
check "mount -t: no daemon left after umount" wait_until 10 bash -c "! pgrep -f -- '$mnt'"

# -f mount through the harness, unmounted cleanly.
mount_ocifs "$REG/demo/hello:v1" "$TESTDIR/fg" -o ro
check_ls "SOURCE REPO:TAG: root is the artifact" "$TESTDIR/fg" hello.txt
umount_ocifs "$TESTDIR/fg"
check_fail "no ocifs daemon of this test left" pgrep -f -- "$TESTDIR/"

finish

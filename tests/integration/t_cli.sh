#!/bin/bash
# Command line: --help, --version, errors before mounting, detached mode,
# mount -t fuse.ocifs, no daemon left behind after unmount.
T_TIMEOUT=${T_TIMEOUT:-240}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
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
# expect_refusal DESC SOURCE MOUNTPOINT [OCIFS ARGS...]
expect_refusal() {
	local desc=$1 src=$2 mnt=$3 rc nl first
	timeout 120 "$OCIFS" -o "cache_dir=$CACHE" "${@:4}" "$src" "$mnt" \
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
"$OCIFS" >"$TESTDIR/noargs.out" 2>"$TESTDIR/noargs.err" </dev/null
check "ocifs without arguments: non-zero exit" test $? != 0
check "ocifs without arguments: a line on stderr starting 'ocifs: '" grep -q "^ocifs: " "$TESTDIR/noargs.err"
expect_refusal "uppercase repository name" "$REG/UPPER" "$TESTDIR/m"
expect_refusal "bad digest in SOURCE" "$REG/demo/hello@sha256:1234" "$TESTDIR/m"
expect_refusal "bad tag in SOURCE" "$REG/demo/hello:-bad" "$TESTDIR/m"
for o in helper_timeout=0 stall_timeout=0 connect_timeout=0 retry_delay_ms=0 \
	token_min_ttl=0 negative_timeout=86401 retry_delay_ms=60001; do
	expect_refusal "-o $o" "$REG" "$TESTDIR/m" -o "$o"
done
check_eq "-o helper_timeout=0: the line says what is allowed" \
	"ocifs: invalid helper_timeout 0: 1 to 3600" \
	"$("$OCIFS" -o "cache_dir=$CACHE,helper_timeout=0" "$REG" "$TESTDIR/m" 2>&1 </dev/null)"
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
check "detached: daemon gone after unmount" wait_until 10 no_process " $mnt\$"

# mount(8) and mount.fuse3. mount(8) runs its helpers without PATH (so
# /bin/sh's default), hence `mount -t fuse.ocifs` finds only an installed
# ocifs. Tested: the fstab form for a program outside PATH
# (`mount -t fuse PROGRAM#SOURCE`), and exactly what `mount -t fuse.ocifs`
# runs (`mount.fuse3 SOURCE DIR -t fuse.ocifs -o ...` with ocifs on PATH);
# `mount -t fuse.ocifs` itself where the installed ocifs is this one.
mkdir -p "$TESTDIR/bin"
ln -s "$OCIFS" "$TESTDIR/bin/ocifs"
# via_mount LABEL CMD...: CMD mounts $REG at $mnt read-only.
via_mount() {
	local l=$1 pid
	shift
	mkdir -p "$mnt"
	"$@" >"$TESTDIR/mount.out" 2>&1
	check_eq "$l: exits 0" 0 "$?" || diag_file "$TESTDIR/mount.out"
	check "$l: listed in /proc/mounts as fuse.ocifs" grep -q " $mnt fuse.ocifs " /proc/mounts
	check_ls "$l: registry root lists the repository" "$mnt" demo
	check_eq "$l: file reads" "Hello from ocifs" "$(cat "$mnt/demo/hello/v1/hello.txt" 2>&1)"
	check_err "$l: ro refuses writes" "Read-only file system" touch "$mnt/demo/hello/v1/new"
	pid=$(pgrep -f -- "$mnt" | head -n1)
	check "$l: a daemon serves the mount" test -n "$pid"
	[ -n "$pid" ] && _LIB_DAEMON_PIDS+=("$pid")
	check "$l: umount" umount "$mnt"
	check_fail "$l: not mounted any more" mountpoint -q "$mnt"
	check "$l: no daemon left after umount" wait_until 10 no_process "$mnt"
}
if [ "$(id -u)" != 0 ]; then
	echo "# mount(8) forms not tried: not root"
else
	mnt=$TESTDIR/viamount1
	via_mount "mount -t fuse PROGRAM#SOURCE" \
		mount -t fuse "$TESTDIR/bin/ocifs#$REG" "$mnt" -o "ro,cache_dir=$CACHE"
	mnt=$TESTDIR/viamount2
	via_mount "mount.fuse3 SOURCE DIR -t fuse.ocifs" \
		env PATH="$TESTDIR/bin:$PATH" mount.fuse3 "$REG" "$mnt" -t fuse.ocifs -o "ro,cache_dir=$CACHE"
	installed=$(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v ocifs)
	if [ -n "$installed" ] && cmp -s "$installed" "$OCIFS"; then
		mnt=$TESTDIR/viamount3
		via_mount "mount -t fuse.ocifs" mount -t fuse.ocifs "$REG" "$mnt" -o "ro,cache_dir=$CACHE"
	else
		echo "# mount -t fuse.ocifs itself not tried: this ocifs is not installed in PATH"
	fi
fi

# -f mount through the harness, unmounted cleanly.
mount_ocifs "$REG/demo/hello:v1" "$TESTDIR/fg" -o ro
check_ls "SOURCE REPO:TAG: root is the artifact" "$TESTDIR/fg" hello.txt
umount_ocifs "$TESTDIR/fg"
check_fail "no ocifs daemon of this test left" pgrep -f -- "$TESTDIR/"

finish

# shellcheck shell=bash
# Shared harness for the integration tests (tests/integration/t_*.sh) and
# contrib/demo.sh. Source it; it needs bash.
#
# Environment: OCIFS (absolute path of the ocifs binary), srcdir (project
# root), TMPDIR (where temporary directories go), OCIFS_KEEP=1 (keep the
# temporary directories for debugging), T_TIMEOUT (seconds before the
# watchdog aborts the test, default 300; each test sets its own), times
# T_TIMEOUT_SCALE (default 1; run-tests.sh sets 2 for an AddressSanitizer
# build, 3 for a ThreadSanitizer one).
#
# Output is TAP-like: "ok - ..." / "not ok - ..." lines, "#" comments.
# Everything started here (registries, daemons, mounts, temporary
# directories) is torn down by an EXIT trap, whatever happened.
#
# Functions:
#   reporting  ok, not_ok, check, check_fail, check_err, check_eq, check_same,
#              check_ls, check_log_clean, diag, diag_file, bail, skip_all,
#              skip_part, finish
#   utilities  sha256_hex, digest_of, wait_until, no_process, make_random_file,
#              require_env, lib_watchdog
#   registry   registry_start, registry_stop, registry_restart, registry_keep,
#              free_port, blob_path, registry_put_raw_manifest
#   API        reg_curl, manifest_get, manifest_digest, manifest_mediatype,
#              blob_get, push_blob, push_manifest
#   seeding    push_artifact, push_artifact_titled, push_index,
#              push_platform_index, image_build, push_image, push_wide_image,
#              push_dirs_image
#   mounts     mount_ocifs, umount_ocifs, daemon_alive
#   auth       registry_start_htpasswd, registry_start_token, reg_token,
#              with_reg_token, token_requests, auth_add_*, cred_helper_*,
#              check_no_secrets (see the "auth and TLS" section)

set -u
set -o pipefail
export LC_ALL=C

: "${srcdir:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${OCIFS:=}"

T_PASSED=0
T_FAILED=0
T_SKIPPED=0

# Media types used all over.
MT_OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_OCI_INDEX=application/vnd.oci.image.index.v1+json
MT_DOCKER_MANIFEST=application/vnd.docker.distribution.manifest.v2+json
MT_DOCKER_LIST=application/vnd.docker.distribution.manifest.list.v2+json
MT_EMPTY=application/vnd.oci.empty.v1+json
MT_LAYER_TAR=application/vnd.oci.image.layer.v1.tar
MANIFEST_ACCEPT="$MT_OCI_MANIFEST, $MT_OCI_INDEX, $MT_DOCKER_MANIFEST, $MT_DOCKER_LIST"
EMPTY_DIGEST=sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a

_LIB_TMPDIRS=()      # removed at exit
_LIB_REG_PIDS=()     # registries to kill at exit
_LIB_MOUNTS=()       # mount points to unmount at exit
_LIB_DAEMON_PIDS=()  # ocifs daemons to kill at exit (after unmounting)
declare -A _LIB_MOUNT_PID=() _LIB_MOUNT_LOG=()
_LIB_NLOG=0
_LIB_WATCHDOG=
_LIB_MAIN_PID=$BASHPID

# lib_drop_foreign_mounts: in a mount namespace of the test's own, let go of
# the copies of every ocifs mount it got from the machine (other tests',
# running side by side). A copy keeps a FUSE connection up: its daemon would
# not exit when its own test unmounts it, until this namespace ends.
lib_drop_foreign_mounts() {
	local m
	[ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/$PPID/ns/mnt 2>/dev/null)" ] || return 0
	awk '$3 == "fuse.ocifs" { print $2 }' /proc/self/mounts | while read -r m; do
		umount -l "$(printf '%b' "$m")" 2>/dev/null
	done
}
# the tests that need a mount namespace run themselves again under `unshare -m`
[ -n "${OCIFS_IN_NS:-}" ] && lib_drop_foreign_mounts

TESTDIR=$(mktemp -d "${TMPDIR:-/tmp}/ocifs-test.XXXXXX") || {
	echo "not ok - mktemp failed"
	exit 1
}
_LIB_TMPDIRS+=("$TESTDIR")
# what the test starts carries it (see _lib_ours)
export OCIFS_TEST_DIR=$TESTDIR
CACHE=$TESTDIR/cache
mkdir -p "$CACHE"

# ---------------------------------------------------------------- reporting

diag() {
	local line
	while IFS= read -r line; do printf '#   %s\n' "$line"; done <<<"$*"
}

# Print the first lines of a file as TAP comments.
diag_file() {
	[ -s "$1" ] || return 0
	head -c 4000 "$1" | head -n "${2:-30}" | cat -v | sed 's/^/#   /'
}

ok() {
	T_PASSED=$((T_PASSED + 1))
	echo "ok - $1"
}

not_ok() {
	T_FAILED=$((T_FAILED + 1))
	echo "not ok - $1"
	shift
	[ $# -gt 0 ] && diag "$*"
	return 0
}

# check DESC CMD...: ok when CMD exits 0.
check() {
	local desc=$1 rc
	shift
	"$@" >"$TESTDIR/.out" 2>&1
	rc=$?
	if [ "$rc" = 0 ]; then
		ok "$desc"
		return 0
	fi
	not_ok "$desc" "command failed with status $rc: $*"
	diag_file "$TESTDIR/.out"
	return 1
}

# check_fail DESC CMD...: ok when CMD exits non-zero.
check_fail() {
	local desc=$1 rc
	shift
	"$@" >"$TESTDIR/.out" 2>&1
	rc=$?
	if [ "$rc" != 0 ]; then
		ok "$desc"
		return 0
	fi
	not_ok "$desc" "command unexpectedly succeeded: $*"
	diag_file "$TESTDIR/.out"
	return 1
}

# check_err DESC MESSAGE CMD...: ok when CMD exits non-zero and its output
# holds MESSAGE (an strerror text such as "Read-only file system").
check_err() {
	local desc=$1 msg=$2 rc
	shift 2
	"$@" >"$TESTDIR/.out" 2>&1
	rc=$?
	if [ "$rc" != 0 ] && grep -qF -- "$msg" "$TESTDIR/.out"; then
		ok "$desc"
		return 0
	fi
	not_ok "$desc" "expected failure with \"$msg\", got status $rc from: $*"
	diag_file "$TESTDIR/.out"
	return 1
}

# check_eq DESC EXPECTED ACTUAL
check_eq() {
	if [ "$2" == "$3" ]; then
		ok "$1"
		return 0
	fi
	not_ok "$1"
	echo "#   expected:"
	printf '%s\n' "$2" | head -n 20 | cat -v | sed 's/^/#     /'
	echo "#   actual:"
	printf '%s\n' "$3" | head -n 20 | cat -v | sed 's/^/#     /'
	return 1
}

# check_same DESC EXPECTED_FILE ACTUAL_FILE: byte-for-byte equality.
check_same() {
	if cmp -s -- "$2" "$3" 2>/dev/null; then
		ok "$1"
		return 0
	fi
	not_ok "$1" "files differ: $2 vs $3"
	cmp -- "$2" "$3" 2>&1 | head -n 3 | sed 's/^/#   /'
	return 1
}

# check_ls DESC DIR NAME...: `ls -A DIR` is exactly the names given.
check_ls() {
	local desc=$1 dir=$2 want got
	shift 2
	want=$(printf '%s\n' "$@" | sort)
	[ $# = 0 ] && want=""
	got=$(ls -A -- "$dir" 2>&1 | sort)
	check_eq "$desc" "$want" "$got"
}

# bail MESSAGE: a failure after which the test cannot go on.
bail() {
	not_ok "$1"
	finish
}

skip_all() {
	echo "# SKIP $*"
	exit 77
}

# skip_part WHAT REASON: a part of a test that cannot run here (a missing
# fixture, no root); reported, counted apart, neither passed nor failed.
skip_part() {
	T_SKIPPED=$((T_SKIPPED + 1))
	echo "# SKIP $1: $2"
}

finish() {
	[ "$T_SKIPPED" = 0 ] || echo "# $T_SKIPPED part(s) skipped (see the # SKIP lines)"
	echo "# $T_PASSED passed, $T_FAILED failed"
	if [ "$T_FAILED" = 0 ]; then exit 0; fi
	exit 1
}

# ---------------------------------------------------------------- utilities

# sha256sum [--] [FILE]: as coreutils' (for one file, or standard input),
# hashed by OpenSSL, which is several times faster (the tests hash
# everything they read through a mount). Other uses go to coreutils'.
sha256sum() {
	local out
	[ "${1:-}" = -- ] && shift
	if [ $# -gt 1 ] || [[ ${1:-} == -* ]]; then
		command sha256sum "$@"
		return
	fi
	out=$(openssl dgst -sha256 -r ${1:+"$1"}) || return 1
	printf '%s  %s\n' "${out%% *}" "${1:--}"
}
sha256_hex() {
	local out
	out=$(openssl dgst -sha256 -r "$1") || return 1
	echo "${out%% *}"
}
digest_of() { echo "sha256:$(sha256_hex "$1")"; }
hex_of() { echo "${1#sha256:}"; }

# Wait up to SECS seconds (polling) for CMD to succeed; SECS is scaled by
# T_TIMEOUT_SCALE, as a sanitizer's daemon runs slower.
# nap SECS: sleep without a process (the tests poll a lot: a sleep(1) costs
# a fork and an exec each time). A read that times out on a pipe this shell
# holds both ends of, so nothing ever comes.
nap() {
	[ -n "${_LIB_NAP_FD:-}" ] || exec {_LIB_NAP_FD}<> <(:)
	read -r -t "$1" -u "$_LIB_NAP_FD" _ || :
}

wait_until() {
	local secs=$(($1 * ${T_TIMEOUT_SCALE:-1})) i
	shift
	for ((i = 0; i < secs * 10; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		nap 0.1
	done
	return 1
}

# no_process PATTERN: no process has PATTERN in its command line.
no_process() { ! pgrep -f -- "$1" >/dev/null; }

# Make a file of N pseudo-random bytes (deterministic from SEED).
make_random_file() {
	local file=$1 size=$2 seed=${3:-ocifs}
	openssl enc -aes-128-ctr -pass "pass:$seed" -nosalt -pbkdf2 </dev/zero 2>/dev/null |
		head -c "$size" >"$file"
}

# Skip the test when FUSE or a required tool is not there.
require_env() {
	local t
	[ -c /dev/fuse ] || skip_all "no /dev/fuse"
	for t in fusermount3 docker-registry curl jq openssl mountpoint "$@"; do
		command -v "$t" >/dev/null 2>&1 || skip_all "$t not installed"
	done
	if [ -z "$OCIFS" ] || [ ! -x "$OCIFS" ]; then
		bail "OCIFS must name the built ocifs binary (got '${OCIFS}')"
	fi
}

# ---------------------------------------------------------------- watchdog

# A test that hangs (a daemon stuck, a FUSE request never answered) is
# reported and torn down: kill its daemons, which aborts the FUSE
# connections so that blocked system calls return, then TERM the script.
lib_watchdog() {
	local secs=$1 main=$$
	[ -n "$_LIB_WATCHDOG" ] && kill "$_LIB_WATCHDOG" 2>/dev/null
	(
		# a subshell keeps the EXIT trap of the test: not ours to run
		trap - EXIT INT
		trap 'kill $sp 2>/dev/null; exit 0' TERM
		sleep "$secs" >/dev/null 2>&1 &
		sp=$!
		wait "$sp"
		echo "not ok - watchdog: test still running after ${secs}s, aborting"
		for p in $(pgrep -f -- "$TESTDIR/" 2>/dev/null); do
			[ "$p" = "$main" ] || [ "$p" = "$BASHPID" ] || kill -9 "$p" 2>/dev/null
		done
		awk '$3 ~ /^fuse/ {print $2}' /proc/mounts | grep "^$TESTDIR/" |
			while read -r m; do fusermount3 -uz "$m" 2>/dev/null; done
		for p in $(pgrep -P "$main" 2>/dev/null); do
			[ "$p" = "$BASHPID" ] || kill -TERM "$p" 2>/dev/null
		done
		kill -TERM "$main" 2>/dev/null
	) &
	_LIB_WATCHDOG=$!
}

# ---------------------------------------------------------------- cleanup

# _lib_ours PID: process PID is one this test started: its environment has
# OCIFS_TEST_DIR=$TESTDIR, or its command line names a directory of the test.
# A pid recorded a while ago may be another test's process by now (pids wrap
# around in a minute or two on a busy machine).
_lib_ours() {
	local d env cmd
	# read whole (no grep -q in a pipeline: under pipefail its early exit is a
	# failure when the writer is still writing); errors off before the file
	# opens, as the process may be gone
	env=$(tr '\0' '\n' 2>/dev/null <"/proc/$1/environ") || env=
	[[ $'\n'$env$'\n' == *$'\n'"OCIFS_TEST_DIR=$TESTDIR"$'\n'* ]] && return 0
	cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || cmd=
	for d in "${_LIB_TMPDIRS[@]}"; do
		[[ $cmd == *"$d/"* ]] && return 0
	done
	return 1
}

_lib_kill_pid() {
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null && _lib_ours "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 30; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		nap 0.1
	done
	_lib_ours "$pid" && kill -KILL "$pid" 2>/dev/null
}

# _lib_keep_logs: when the test failed, copy the logs of its daemons,
# registries and tools (*.log, *.err, *.out in its directories) to
# $OCIFS_FAIL_LOGS (run-tests.sh sets it to tests/logs/NAME.d), each named
# after its temporary directory and its path there.
_lib_keep_logs() {
	local dest=${OCIFS_FAIL_LOGS:-} d f n=0
	[ -n "$dest" ] && mkdir -p "$dest" || return 0
	for d in "${_LIB_TMPDIRS[@]}"; do
		[ -d "$d" ] || continue
		while IFS= read -r f; do
			cp -- "$f" "$dest/$(basename "$d").$(tr / _ <<<"${f#"$d"/}")" 2>/dev/null && n=$((n + 1))
		done < <(find "$d" -xdev -maxdepth 3 -type f \( -name '*.log' -o -name '*.err' -o -name '*.out' \) \
			-size -50M 2>/dev/null)
	done
	echo "# the test failed: $n logs of its daemons, registries and tools kept in $dest"
}

_lib_cleanup() {
	local rc=$? m p d
	# subshells inherit the EXIT trap; only the test itself cleans up
	[ "$BASHPID" = "$_LIB_MAIN_PID" ] || exit "$rc"
	trap - EXIT TERM INT
	[ -n "$_LIB_WATCHDOG" ] && kill "$_LIB_WATCHDOG" 2>/dev/null
	for m in "${_LIB_MOUNTS[@]}"; do
		if mountpoint -q "$m" 2>/dev/null || grep -q " $m fuse" /proc/mounts; then
			fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
		fi
	done
	# Mounts made through mount(8) or detached daemons, all under TESTDIR.
	awk '$3 ~ /^fuse/ {print $2}' /proc/mounts | grep "^$TESTDIR/" |
		while read -r m; do fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
	for p in "${_LIB_DAEMON_PIDS[@]}"; do _lib_kill_pid "$p"; done
	# mounts that umount_ocifs did not check
	for m in "${!_LIB_MOUNT_PID[@]}"; do
		if grep -qE 'Sanitizer|runtime error:' "${_LIB_MOUNT_LOG[$m]}" 2>/dev/null; then
			check_log_clean "no sanitizer report in the log of $(_lbl "$m")" "${_LIB_MOUNT_LOG[$m]}"
			rc=1
		fi
	done
	for p in "${_LIB_REG_PIDS[@]}"; do _lib_kill_pid "$p"; done
	_ports_release
	[ "$rc" = 0 ] && [ "$T_FAILED" = 0 ] || _lib_keep_logs
	if [ "${OCIFS_KEEP:-0}" = 1 ]; then
		echo "# kept: ${_LIB_TMPDIRS[*]}"
	else
		for d in "${_LIB_TMPDIRS[@]}"; do
			[ -n "$d" ] && [ -d "$d" ] && rm -rf --one-file-system -- "$d" 2>/dev/null
		done
	fi
	exit "$rc"
}
trap _lib_cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

lib_watchdog "$((${T_TIMEOUT:-300} * ${T_TIMEOUT_SCALE:-1}))"

# ---------------------------------------------------------------- registry

# Ports that free_port hands out stay this test's until it ends, so that
# tests running side by side never pick the same one: a registry stopped and
# started again keeps its port, and a port a test wants closed stays closed.
# A port is reserved by a directory named after it in _LIB_PORT_DIR holding
# the test's pid, made under a lock; a dead test's reservations are taken
# back; the test's own go at exit.
_LIB_PORT_DIR=${OCIFS_PORT_DIR:-/run/lock/ocifs-test-ports}
mkdir -p "$_LIB_PORT_DIR" 2>/dev/null && [ -w "$_LIB_PORT_DIR" ] ||
	_LIB_PORT_DIR=${TMPDIR:-/tmp}/ocifs-test-ports.$(id -u)
mkdir -p "$_LIB_PORT_DIR" 2>/dev/null

# _port_taken PORT: reserved by a test still running (a dead one's reservation is removed)
_port_taken() {
	local owner
	[ -d "$_LIB_PORT_DIR/$1" ] || return 1
	owner=$(cat "$_LIB_PORT_DIR/$1/pid" 2>/dev/null)
	[ -n "$owner" ] && kill -0 "$owner" 2>/dev/null && return 0
	rm -rf -- "${_LIB_PORT_DIR:?}/$1"
	return 1
}

# _ports_release: drop the reservations of this test.
_ports_release() {
	local d
	for d in "$_LIB_PORT_DIR"/*/; do
		[ "$(cat "$d/pid" 2>/dev/null)" = "$_LIB_MAIN_PID" ] && rm -rf -- "$d"
	done
	return 0
}

# A free TCP port on 127.0.0.1 (nothing listening, nothing answering, not
# reserved by another test), reserved for this test.
free_port() {
	local p i fd
	exec {fd}>>"$_LIB_PORT_DIR/.lock" && flock -w 30 "$fd"
	for ((i = 0; i < 50; i++)); do
		# below the ephemeral range (32768-), where outgoing connections take ports
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
		if [ -n "${REG_PORT_WANT:-}" ] && [ "$i" = 0 ]; then p=$REG_PORT_WANT; fi
		_port_taken "$p" && continue
		[ -z "$(ss -ltnH "sport = :$p" 2>/dev/null)" ] || continue
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
		mkdir "$_LIB_PORT_DIR/$p" 2>/dev/null && echo "$_LIB_MAIN_PID" >"$_LIB_PORT_DIR/$p/pid"
		exec {fd}>&-
		echo "$p"
		return 0
	done
	exec {fd}>&-
	return 1
}

_registry_config() {
	local root=$1 port=$2
	cat >"$root/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: $( [ "${REG_ACCESSLOG:-0}" = 1 ] && echo false || echo true)
storage:
  filesystem:
    rootdirectory: $root
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
EOF
}

# _registry_serve ROOT: docker-registry on ROOT/config.yml, in the background
# ($! is its pid), logging to ROOT/registry.log. One thread and a collector
# that runs a quarter as often: the tests' registries answer many small
# requests, for which Go's defaults cost some 40% more CPU (the suite is
# bound by CPU); the benchmarks (tests/bench/lib.sh) keep the defaults.
_registry_serve() {
	GOMAXPROCS=${REG_GOMAXPROCS-1} GOGC=${REG_GOGC-400} \
		docker-registry serve "$1/config.yml" >>"$1/registry.log" 2>&1 </dev/null &
}

# Start docker-registry on ROOT/PORT and wait until /v2/ answers.
_registry_launch() {
	local root=$1 port=$2 pid i
	_registry_config "$root" "$port"
	_registry_serve "$root"
	pid=$!
	_LIB_REG_PIDS+=("$pid")
	# until it answers or dies; the bound only catches a hang (a loaded machine is slow)
	for ((i = 0; i < 600; i++)); do
		if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/v2/" 2>/dev/null; then
			REG=127.0.0.1:$port
			REG_PORT=$port
			REG_PID=$pid
			export REG REG_PORT REG_PID REG_ROOT
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || return 1
		nap 0.1
	done
	_lib_kill_pid "$pid"
	return 1
}

# registry_start [NAME [STORAGE...]]: a new registry with its own temporary
# root (seeded from STORAGE: .tar.gz files or directories of storage roots as in
# ../shared/fixtures/oras-e2e) on a free port. Sets REG (127.0.0.1:PORT),
# REG_ROOT, REG_PORT, REG_PID. Bails out when it cannot start. REG_ACCESSLOG=1
# logs every request to $REG_ROOT/registry.log.
registry_start() {
	local name=${1:-reg} tb port
	[ $# -gt 0 ] && shift
	REG_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/ocifs-$name.XXXXXX") || bail "mktemp"
	_LIB_TMPDIRS+=("$REG_ROOT")
	for tb in "$@"; do
		# several storage tarballs can share blobs: the first one wins
		if [ -d "$tb" ]; then
			cp -rn -- "$tb/." "$REG_ROOT/" || bail "copy $tb"
		else
			tar xzf "$tb" -C "$REG_ROOT" --skip-old-files || bail "extract $tb"
		fi
	done
	for _ in 1 2 3 4 5 6 7 8; do
		port=$(free_port) || continue
		: >"$REG_ROOT/registry.log"
		_registry_launch "$REG_ROOT" "$port" && return 0
		grep -qi 'address already in use' "$REG_ROOT/registry.log" || break
	done
	diag_file "$REG_ROOT/registry.log"
	bail "start docker-registry"
}

# registry_stop: stop the current registry (REG_PID); its root stays.
registry_stop() {
	_lib_kill_pid "$REG_PID"
	wait "$REG_PID" 2>/dev/null
	return 0
}

# registry_restart: start the current registry again, same root, same port.
registry_restart() {
	local i
	for i in 1 2 3 4 5; do
		_registry_launch "$REG_ROOT" "$REG_PORT" && return 0
		nap 0.5
	done
	diag_file "$REG_ROOT/registry.log"
	return 1
}

# registry_keep: do not stop the current registry nor remove its root at
# exit (for the demo).
registry_keep() {
	local a=() p d
	for p in "${_LIB_REG_PIDS[@]}"; do [ "$p" = "$REG_PID" ] || a+=("$p"); done
	_LIB_REG_PIDS=("${a[@]}")
	a=()
	for d in "${_LIB_TMPDIRS[@]}"; do [ "$d" = "$REG_ROOT" ] || a+=("$d"); done
	_LIB_TMPDIRS=("${a[@]}")
}

# Where the registry stores a blob (or a manifest) on disk.
blob_path() {
	local hex=${1#sha256:}
	echo "$REG_ROOT/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data"
}

# ---------------------------------------------------------------- registry API

# reg_curl PATH [CURL ARGS...]: GET $REG_SCHEME://$REG/v2/PATH (http by default), body on stdout.
reg_curl() {
	local p=$1
	shift
	_rcurl -fsS "$@" "${REG_SCHEME:-http}://$REG/v2/$p"
}

# manifest_get REPO REF: the manifest's bytes as the registry serves them.
manifest_get() {
	reg_curl "$1/manifests/$2" -H "Accept: $MANIFEST_ACCEPT"
}

# manifest_digest REPO REF: its Docker-Content-Digest.
manifest_digest() {
	_rcurl -fsS -I -H "Accept: $MANIFEST_ACCEPT" "${REG_SCHEME:-http}://$REG/v2/$1/manifests/$2" |
		tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: *//p'
}

# manifest_mediatype REPO REF: the Content-Type the registry serves it with.
manifest_mediatype() {
	_rcurl -fsS -I -H "Accept: $MANIFEST_ACCEPT" "${REG_SCHEME:-http}://$REG/v2/$1/manifests/$2" |
		tr -d "\r" | sed -n "s/^[Cc]ontent-[Tt]ype: *//p"
}

# blob_get REPO DIGEST
blob_get() {
	reg_curl "$1/blobs/$2" -L
}

# push_blob REPO FILE: upload FILE as a blob (monolithic POST + PUT); prints
# its digest.
push_blob() {
	local repo=$1 file=$2 dg loc code sep
	dg=$(digest_of "$file") || return 1
	if _rcurl -fsS -o /dev/null -I "${REG_SCHEME:-http}://$REG/v2/$repo/blobs/$dg" 2>/dev/null; then
		echo "$dg"
		return 0
	fi
	loc=$(_rcurl -fsS -X POST -D - -o /dev/null "${REG_SCHEME:-http}://$REG/v2/$repo/blobs/uploads/" |
		tr -d '\r' | sed -n 's/^[Ll]ocation: *//p')
	if [ -z "$loc" ]; then
		echo "push_blob: no upload location for $repo" >&2
		return 1
	fi
	case $loc in /*) loc=${REG_SCHEME:-http}://$REG$loc ;; esac
	case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
	# -T streams the file: --data-binary would hold it in memory (and fail past 1 GiB)
	code=$(_rcurl -sS -o "$TESTDIR/.push.out" -w '%{http_code}' -T "$file" \
		-H 'Content-Type: application/octet-stream' "$loc${sep}digest=$dg")
	if [ "$code" != 201 ]; then
		echo "push_blob: PUT $repo $dg: HTTP $code $(head -c 300 "$TESTDIR/.push.out")" >&2
		return 1
	fi
	echo "$dg"
}

# push_manifest REPO REF FILE [MEDIATYPE]: PUT a manifest; prints the digest
# the registry answers with (checked against the file's sha256).
push_manifest() {
	local repo=$1 ref=$2 file=$3 mt=${4:-} code dg want
	[ -n "$mt" ] || mt=$(jq -r '.mediaType // empty' "$file" 2>/dev/null)
	[ -n "$mt" ] || mt=$MT_OCI_MANIFEST
	code=$(_rcurl -sS -X PUT -H "Content-Type: $mt" --data-binary "@$file" \
		-D "$TESTDIR/.push.hdr" -o "$TESTDIR/.push.out" -w '%{http_code}' \
		"${REG_SCHEME:-http}://$REG/v2/$repo/manifests/$ref")
	if [ "$code" != 201 ]; then
		echo "push_manifest: PUT $repo:$ref: HTTP $code $(head -c 300 "$TESTDIR/.push.out")" >&2
		return 1
	fi
	dg=$(tr -d '\r' <"$TESTDIR/.push.hdr" | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: *//p')
	want=$(digest_of "$file")
	if [ "$dg" != "$want" ]; then
		echo "push_manifest: registry says $dg, file is $want" >&2
		return 1
	fi
	echo "$dg"
}

# push_artifact_titled REPO REF TITLE FILE [TITLE FILE...]: push an artifact
# the way `oras push` does: one application/vnd.oci.image.layer.v1.tar layer
# per file titled with org.opencontainers.image.title, the empty config,
# artifactType, annotation org.opencontainers.image.created. Prints the
# manifest digest. Tunables (set for the call):
#   ARTIFACT_TYPE   default application/vnd.ocifs.test.v1 ("" for none)
#   CREATED         default 2024-02-03T04:05:06Z ("" for none)
#   ANNOTATIONS     JSON object merged into the manifest annotations
#   LAYER_MEDIATYPE default application/vnd.oci.image.layer.v1.tar
#   MANIFEST_OUT    if set, the manifest bytes are also written there
push_artifact_titled() {
	local repo=$1 ref=$2 title file dg size cfg mf layers=() n=0
	shift 2
	cfg=$TESTDIR/.empty.json
	printf '{}' >"$cfg"
	push_blob "$repo" "$cfg" >/dev/null || return 1
	while [ $# -ge 2 ]; do
		title=$1 file=$2
		shift 2
		dg=$(push_blob "$repo" "$file") || return 1
		size=$(stat -c %s -- "$file")
		layers+=(--arg "t$n" "$title" --arg "d$n" "$dg" --arg "s$n" "$size")
		n=$((n + 1))
	done
	# one jq for the whole manifest: layer I from the named arguments tI, dI, sI
	mf=$TESTDIR/.manifest.json
	jq -c -n --arg at "${ARTIFACT_TYPE-application/vnd.ocifs.test.v1}" \
		--arg created "${CREATED-2024-02-03T04:05:06Z}" \
		--argjson ann "${ANNOTATIONS:-"{}"}" --arg lmt "${LAYER_MEDIATYPE:-$MT_LAYER_TAR}" \
		--arg cd "$EMPTY_DIGEST" --arg cmt "$MT_EMPTY" --arg mt "$MT_OCI_MANIFEST" '
		$ARGS.named as $a
		| [range(0; $n) | tostring | {mediaType: $lmt, digest: $a["d" + .], size: ($a["s" + .] | tonumber),
		                             annotations: {"org.opencontainers.image.title": $a["t" + .]}}] as $layers
		| {schemaVersion: 2, mediaType: $mt}
		+ (if $at == "" then {} else {artifactType: $at} end)
		+ {config: {mediaType: $cmt, digest: $cd, size: 2}, layers: $layers}
		+ {annotations: ((if $created == "" then {}
		                  else {"org.opencontainers.image.created": $created} end) + $ann)}
		| if .annotations == {} then del(.annotations) else . end' \
		--argjson n "$n" ${layers[@]+"${layers[@]}"} >"$mf" || return 1
	[ -n "${MANIFEST_OUT:-}" ] && cp -- "$mf" "$MANIFEST_OUT"
	# REF "@": push by digest only (no tag)
	[ "$ref" = @ ] && ref=$(digest_of "$mf")
	push_manifest "$repo" "$ref" "$mf" "$MT_OCI_MANIFEST"
}

# push_artifact REPO REF DIR [FILE...]: push the FILEs (paths relative to
# DIR; default every regular file under DIR) titled with their relative
# path. Same tunables as push_artifact_titled. Prints the digest.
push_artifact() {
	local repo=$1 ref=$2 dir=$3 f args=() files=()
	shift 3
	if [ $# = 0 ]; then
		mapfile -t files < <(cd "$dir" && find . -type f -printf '%P\n' | sort)
		set -- "${files[@]}"
	fi
	for f in "$@"; do args+=("$f" "$dir/$f"); done
	push_artifact_titled "$repo" "$ref" "${args[@]}"
}

# push_index REPO REF PLATFORM=DIGEST...: push an OCI image index of the
# manifests given (already in REPO), each with its platform os/arch[/variant].
# INDEX_MEDIATYPE=$MT_DOCKER_LIST makes a Docker manifest list instead.
# Prints the index digest.
push_index() {
	local repo=$1 ref=$2 spec plat dg os arch variant mt size mans='[]' f
	shift 2
	f=$TESTDIR/.child.json
	for spec in "$@"; do
		plat=${spec%%=*} dg=${spec#*=}
		IFS=/ read -r os arch variant <<<"$plat"
		manifest_get "$repo" "$dg" >"$f" || return 1
		mt=$(manifest_mediatype "$repo" "$dg")
		size=$(stat -c %s "$f")
		mans=$(jq -c --arg mt "$mt" --arg d "$dg" --argjson s "$size" --arg os "$os" \
			--arg arch "$arch" --arg v "${variant:-}" \
			'. + [{mediaType: $mt, digest: $d, size: $s,
			       platform: ({architecture: $arch, os: $os}
			                  + (if $v == "" then {} else {variant: $v} end))}]' <<<"$mans") || return 1
	done
	jq -c -n --arg mt "${INDEX_MEDIATYPE:-$MT_OCI_INDEX}" --argjson m "$mans" \
		'{schemaVersion: 2, mediaType: $mt, manifests: $m}' >"$TESTDIR/.index.json" || return 1
	[ -n "${MANIFEST_OUT:-}" ] && cp -- "$TESTDIR/.index.json" "$MANIFEST_OUT"
	push_manifest "$repo" "$ref" "$TESTDIR/.index.json"
}

# push_platform_index REPO REF [PLATFORM...]: for each platform (default
# linux/amd64 linux/arm64) push an artifact whose one file platform.txt
# holds "PLATFORM\n", by digest, then an index of them as REF. Prints the
# index digest.
push_platform_index() {
	local repo=$1 ref=$2 p d specs=() i=0
	shift 2
	[ $# = 0 ] && set -- linux/amd64 linux/arm64
	for p in "$@"; do
		i=$((i + 1))
		mkdir -p "$TESTDIR/.plat$i"
		printf '%s\n' "$p" >"$TESTDIR/.plat$i/platform.txt"
		d=$(MANIFEST_OUT='' CREATED='' push_artifact_titled "$repo" @ \
			platform.txt "$TESTDIR/.plat$i/platform.txt") || return 1
		specs+=("$p=$d")
	done
	push_index "$repo" "$ref" "${specs[@]}"
}

# registry_put_raw_manifest REPO TAG FILE: bypass the registry's checks and
# store FILE as the manifest REPO:TAG directly in its storage (for content
# the API refuses: invalid JSON, oversized). Prints the digest.
registry_put_raw_manifest() {
	local repo=$1 tag=$2 file=$3 dg hex r
	dg=$(digest_of "$file")
	hex=${dg#sha256:}
	mkdir -p "$(dirname "$(blob_path "$dg")")" || return 1
	cp -- "$file" "$(blob_path "$dg")" || return 1
	r=$REG_ROOT/docker/registry/v2/repositories/$repo/_manifests
	mkdir -p "$r/revisions/sha256/$hex" "$r/tags/$tag/current" "$r/tags/$tag/index/sha256/$hex" || return 1
	printf '%s' "$dg" >"$r/revisions/sha256/$hex/link"
	printf '%s' "$dg" >"$r/tags/$tag/current/link"
	printf '%s' "$dg" >"$r/tags/$tag/index/sha256/$hex/link"
	echo "$dg"
}

# half_write SRC DST READY GO: write the first MiB of SRC to DST, create the
# file READY, wait until the fifo GO is written, then write the rest: DST held
# open by one descriptor throughout (no close before the end).
half_write() {
	python3 -c '
import sys
with open(sys.argv[1], "rb") as i, open(sys.argv[2], "wb") as o:
    o.write(i.read(1 << 20))
    o.flush()
    open(sys.argv[3], "w").close()
    open(sys.argv[4]).read()
    o.write(i.read())' "$@"
}

# ---------------------------------------------------------------- signatures
# cosign's key-based format, made here with the openssl command (not with
# ocifs's code), so that each side checks the other.

# sign_keygen NAME: an EC P-256 key pair, $TESTDIR/NAME.key (PEM private)
# and $TESTDIR/NAME.pub (PEM public, as cosign.pub).
sign_keygen() {
	openssl ecparam -name prime256v1 -genkey -noout -out "$TESTDIR/$1.key" 2>/dev/null &&
		openssl ec -in "$TESTDIR/$1.key" -pubout -out "$TESTDIR/$1.pub" 2>/dev/null
}

# sign_manifest REPO DIGEST KEYFILE: sign the manifest DIGEST of REPO as
# `cosign sign --key` does: a simple-signing payload naming it, its ECDSA
# signature in the layer annotation, the manifest tagged sha256-<hex>.sig.
sign_manifest() {
	local repo=$1 dg=$2 key=$3 p=$TESTDIR/.payload.json pd cfg cd sig m
	printf '{"critical":{"identity":{"docker-reference":"%s/%s"},"image":{"docker-manifest-digest":"%s"},"type":"cosign container image signature"},"optional":null}' \
		"$REG" "$repo" "$dg" >"$p"
	sig=$(openssl dgst -sha256 -sign "$key" "$p" | base64 -w0) || return 1
	pd=$(push_blob "$repo" "$p") || return 1
	cfg=$TESTDIR/.sigcfg.json
	jq -cn --arg d "$pd" '{architecture: "", created: "0001-01-01T00:00:00Z", history: [{created: "0001-01-01T00:00:00Z"}],
		os: "", rootfs: {type: "layers", diff_ids: [$d]}, config: {}}' >"$cfg"
	cd=$(push_blob "$repo" "$cfg") || return 1
	m=$TESTDIR/.sig.json
	jq -cn --arg cd "$cd" --argjson cs "$(stat -c %s "$cfg")" --arg pd "$pd" \
		--argjson ps "$(stat -c %s "$p")" --arg sig "$sig" '
		{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
		 config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
		 layers: [{mediaType: "application/vnd.dev.cosign.simplesigning.v1+json", digest: $pd,
		   size: $ps, annotations: {"dev.cosignproject.cosign/signature": $sig}}]}' >"$m"
	push_manifest "$repo" "sha256-${dg#sha256:}.sig" "$m" >/dev/null
}

# sign_verify REPO DIGEST PUBFILE: what `cosign verify --key` checks of the
# signature of DIGEST: one payload layer of the sha256-<hex>.sig manifest
# names DIGEST as a cosign signature and its annotation verifies with PUBFILE.
sign_verify() {
	local repo=$1 dg=$2 pub=$3 m mt pd sig
	m=$(manifest_get "$repo" "sha256-${dg#sha256:}.sig") || return 1
	# each layer: its media type, digest and signature, on a line (one jq for all)
	while IFS=$'\t' read -r mt pd sig; do
		[ "$mt" = application/vnd.dev.cosign.simplesigning.v1+json ] || continue
		blob_get "$repo" "$pd" >"$TESTDIR/.vpayload" || continue
		[ "$(digest_of "$TESTDIR/.vpayload")" = "$pd" ] || continue
		[ "$(jq -r '.critical.type + " " + .critical.image["docker-manifest-digest"]' \
			"$TESTDIR/.vpayload")" = "cosign container image signature $dg" ] || continue
		base64 -d <<<"$sig" >"$TESTDIR/.vsig" 2>/dev/null || continue
		openssl dgst -sha256 -verify "$pub" -signature "$TESTDIR/.vsig" "$TESTDIR/.vpayload" \
			>/dev/null 2>&1 && return 0
	done < <(jq -r '.layers[] | [.mediaType, .digest,
		(.annotations["dev.cosignproject.cosign/signature"] // "")] | @tsv' <<<"$m")
	return 1
}

# ---------------------------------------------------------------- images

# image_build LAYOUT TAG OS/ARCH DIR...: an OCI image built with umoci in
# the layout LAYOUT (created when missing), one layer per DIR (its contents
# at /).
image_build() {
	local layout=$1 tag=$2 plat=$3 d os arch
	shift 3
	os=${plat%%/*} arch=${plat#*/}
	arch=${arch%%/*}
	[ -f "$layout/index.json" ] || umoci init --layout "$layout" || return 1
	umoci new --image "$layout:$tag" || return 1
	umoci config --image "$layout:$tag" --os "$os" --architecture "$arch" \
		--config.cmd /bin/true --author ocifs-tests || return 1
	for d in "$@"; do
		rm -rf "$TESTDIR/.bundle"
		umoci unpack --image "$layout:$tag" "$TESTDIR/.bundle" >/dev/null || return 1
		cp -a "$d/." "$TESTDIR/.bundle/rootfs/" || return 1
		umoci repack --image "$layout:$tag" "$TESTDIR/.bundle" >/dev/null || return 1
	done
	rm -rf "$TESTDIR/.bundle"
	umoci gc --layout "$layout"
}

# podman_store NAME [LAYERSTORE]: podman and containers-storage (podman,
# skopeo containers-storage:) for this test alone, exported:
# CONTAINERS_STORAGE_CONF names a store under $TESTDIR/podman-NAME (with
# LAYERSTORE, a mount's .layers/, as its additional layer store) and
# CONTAINERS_CONF puts podman's temporary files, locks, events and network
# configuration there too, instead of /run/libpod, /dev/shm and
# /etc/containers, which every podman on the machine shares (and which
# `podman system reset` empties). podman_store_off unsets them.
podman_store() {
	local d=$TESTDIR/podman-$1
	mkdir -p "$d"
	{
		printf '[storage]\ndriver = "overlay"\nrunroot = "%s"\ngraphroot = "%s"\n' "$d/run" "$d/graph"
		[ -n "${2:-}" ] && printf '[storage.options]\nadditionallayerstores = ["%s:ref"]\n' "$2"
	} >"$d/storage.conf"
	printf '%s\n' '[engine]' "tmp_dir = \"$d/tmp\"" 'lock_type = "file"' 'events_logger = "file"' \
		"events_logfile_path = \"$d/events.log\"" "static_dir = \"$d/graph/libpod\"" \
		"volume_path = \"$d/graph/volumes\"" '[network]' "network_config_dir = \"$d/networks\"" \
		>"$d/containers.conf"
	export CONTAINERS_STORAGE_CONF=$d/storage.conf CONTAINERS_CONF=$d/containers.conf
}
podman_store_off() { unset CONTAINERS_STORAGE_CONF CONTAINERS_CONF; }

# push_image LAYOUT TAG REPO REF [FORMAT]: skopeo copy the image to the
# registry (FORMAT: oci (default) or v2s2); prints the manifest digest.
push_image() {
	local layout=$1 tag=$2 repo=$3 ref=$4 fmt=${5:-oci}
	skopeo --insecure-policy copy --quiet --dest-tls-verify=false --format "$fmt" \
		"oci:$layout:$tag" "docker://$REG/$repo:$ref" >&2 || return 1
	manifest_digest "$repo" "$ref"
}

# push_wide_image REPO TAG DIRS FILES: an image of one gzip layer holding
# DIRS directories d0000.. of FILES small files each (f0000.., "DIR/FILE\n"
# inside), made by python's tarfile and pushed with curl; prints the
# manifest digest. For walks over many entries.
push_wide_image() {
	local repo=$1 tag=$2 dirs=$3 files=$4 layer cfg mf ldg cdg
	layer=$TESTDIR/.wide.tar.gz cfg=$TESTDIR/.wide.cfg.json mf=$TESTDIR/.wide.json
	python3 - "$layer" "$dirs" "$files" <<'PY' || return 1
import gzip, io, sys, tarfile
out, dirs, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with gzip.GzipFile(out, "wb", compresslevel=1, mtime=0) as gz:
    with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in range(dirs):
            ti = tarfile.TarInfo("d%04d" % d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            tf.addfile(ti)
            for f in range(files):
                data = b"d%04d/f%04d\n" % (d, f)
                ti = tarfile.TarInfo("d%04d/f%04d" % (d, f))
                ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
                tf.addfile(ti, io.BytesIO(data))
PY
	printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"config":{}}' \
		"$(gzip -dc "$layer" | sha256sum | cut -d' ' -f1)" >"$cfg"
	ldg=$(push_blob "$repo" "$layer") && cdg=$(push_blob "$repo" "$cfg") || return 1
	jq -n -c --arg l "$ldg" --argjson ls "$(stat -c %s "$layer")" --arg c "$cdg" \
		--argjson cs "$(stat -c %s "$cfg")" '{schemaVersion: 2,
		mediaType: "application/vnd.oci.image.manifest.v1+json",
		config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
		layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $l,
		          size: $ls}]}' >"$mf" || return 1
	push_manifest "$repo" "$tag" "$mf"
}

# push_dirs_image REPO TAG DIR...: an image of one gzip layer per DIR (its
# contents at /, lowest first), made with tar and pushed with curl; prints
# the manifest digest and sets IMAGE_LAYERS to the layer digests.
push_dirs_image() {
	local repo=$1 tag=$2 d i=0 cfg mf layers='[]' diffs='[]' dg tgz
	shift 2
	IMAGE_LAYERS=()
	cfg=$TESTDIR/.dirs.cfg.json mf=$TESTDIR/.dirs.json
	for d in "$@"; do
		i=$((i + 1))
		tgz=$TESTDIR/.dirs.$i.tar.gz
		tar -C "$d" --sort=name --owner=0 --group=0 --mtime=@1700000000 -cf - . |
			gzip -1n >"$tgz" || return 1
		dg=$(push_blob "$repo" "$tgz") || return 1
		IMAGE_LAYERS+=("$dg")
		layers=$(jq -c --arg d "$dg" --argjson s "$(stat -c %s "$tgz")" \
			'. + [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}]' \
			<<<"$layers")
		diffs=$(jq -c --arg d "sha256:$(gzip -dc "$tgz" | sha256sum | cut -d' ' -f1)" '. + [$d]' \
			<<<"$diffs")
	done
	jq -n -c --argjson d "$diffs" \
		'{architecture: "amd64", os: "linux", rootfs: {type: "layers", diff_ids: $d}, config: {}}' >"$cfg"
	dg=$(push_blob "$repo" "$cfg") || return 1
	jq -n -c --arg c "$dg" --argjson cs "$(stat -c %s "$cfg")" --argjson l "$layers" \
		'{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
		  config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
		  layers: $l}' >"$mf" || return 1
	push_manifest "$repo" "$tag" "$mf"
}

# ---------------------------------------------------------------- mounts

_lbl() {
	local s=$1
	[ -n "${REG:-}" ] && s=${s//$REG/REG}
	s=${s//$TESTDIR/T}
	echo "$s"
}

# mount_ocifs SOURCE MNT [OCIFS ARGS...]: run `ocifs -f` in the background
# (stderr to a log, $OCIFS_LOG) and wait until MNT is mounted. Prints an
# ok/not ok line; returns non-zero when the mount did not come up.
# OCIFS_CACHE overrides the cache directory (default $CACHE). Back-offs run
# at a tenth of their length (-o retry_delay_ms=10, T_RETRY_DELAY_MS); a
# test that needs them at full scale gives -o retry_delay_ms=100 itself.
mount_ocifs() {
	local src=$1 mnt=$2 log pid i
	shift 2
	mkdir -p "$mnt"
	_LIB_NLOG=$((_LIB_NLOG + 1))
	log=$TESTDIR/ocifs.$_LIB_NLOG.log
	"$OCIFS" -f -o "cache_dir=${OCIFS_CACHE:-$CACHE},retry_delay_ms=${T_RETRY_DELAY_MS:-10}" "$@" \
		"$src" "$mnt" >"$log" 2>&1 </dev/null &
	pid=$!
	_LIB_MOUNTS+=("$mnt")
	_LIB_DAEMON_PIDS+=("$pid")
	_LIB_MOUNT_PID[$mnt]=$pid
	_LIB_MOUNT_LOG[$mnt]=$log
	OCIFS_PID=$pid
	OCIFS_LOG=$log
	# until it is mounted or the daemon dies; the bound only catches a hang
	# (under valgrind on a loaded machine a start takes tens of seconds)
	for ((i = 0; i < 1200; i++)); do
		if mountpoint -q "$mnt"; then
			ok "mount $(_lbl "$src") at $(_lbl "$mnt") $*"
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || break
		nap 0.1
	done
	not_ok "mount $(_lbl "$src") at $(_lbl "$mnt") $*" "ocifs did not mount; its log:"
	diag_file "$log"
	return 1
}

# check_log_clean DESC LOG: no sanitizer report in a daemon log.
check_log_clean() {
	if grep -qE 'Sanitizer|runtime error:' "$2" 2>/dev/null; then
		not_ok "$1" "sanitizer report in $2:"
		grep -m5 -E 'Sanitizer|runtime error:|#[0-9]+ 0x' "$2" | sed 's/^/#   /'
		return 1
	fi
	ok "$1"
}

# daemon_alive MNT: the daemon behind MNT still runs and serves its root.
daemon_alive() {
	local pid=${_LIB_MOUNT_PID[$1]:-}
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && mountpoint -q "$1" && stat "$1" >/dev/null
}

# umount_ocifs MNT: fusermount3 -u, then the daemon must exit 0 (bounded
# wait) and its log hold no sanitizer report.
umount_ocifs() {
	local mnt=$1 pid log i rc lbl
	pid=${_LIB_MOUNT_PID[$mnt]:-}
	log=${_LIB_MOUNT_LOG[$mnt]:-}
	lbl=$(_lbl "$mnt")
	# a file just closed can keep the mount busy a moment on a loaded machine
	for ((i = 0; i < 100; i++)); do
		fusermount3 -u "$mnt" 2>"$TESTDIR/.umount.err" && break
		mountpoint -q "$mnt" || break
		nap 0.3
	done
	if mountpoint -q "$mnt"; then
		not_ok "unmount $lbl" "$(cat "$TESTDIR/.umount.err")"
		fusermount3 -uz "$mnt" 2>/dev/null
	else
		ok "unmount $lbl"
	fi
	[ -n "$pid" ] || return 0
	# the bound only catches a hang: a sanitizer's daemon on a loaded machine takes seconds
	for ((i = 0; i < 600; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		nap 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		not_ok "daemon of $lbl exits after unmount" "still running after 60 s"
		# where each of its threads waits, and what it logged last
		for t in /proc/"$pid"/task/*; do
			echo "#   thread $(basename "$t") $(cat "$t/comm" 2>/dev/null):" \
				"wchan $(cat "$t/wchan" 2>/dev/null), syscall $(cut -d' ' -f1 "$t/syscall" 2>/dev/null)"
		done
		[ -n "$log" ] && tail -n 20 "$log" | sed 's/^/#   log: /'
		if [ -n "${OCIFS_GDB:-}" ] && command -v gdb >/dev/null; then
			gdb -p "$pid" -batch -ex "thread apply all bt" 2>&1 | grep -E '^(#|Thread)' |
				sed 's/^/#   gdb: /'
		fi
		_lib_kill_pid "$pid"
		wait "$pid" 2>/dev/null
	else
		wait "$pid" 2>/dev/null
		rc=$?
		check_eq "daemon of $lbl exits 0 after unmount" 0 "$rc" || diag_file "$log"
	fi
	check_log_clean "no sanitizer report in the log of $lbl" "$log"
	unset "_LIB_MOUNT_PID[$mnt]"
}

# ---------------------------------------------------------------- access log
# With REG_ACCESSLOG=1 the registry appends one combined-log line per request
# to $REG_ROOT/registry.log, written when the request ends (completed or cut
# off by the client), for example
#   127.0.0.1 - - [22/Nov/2026:11:03:51 +0000] "GET /v2/r/blobs/sha256:<hex> HTTP/1.1" 206 100 "" "curl/7.88.1"
# where the number after the status is the bytes of body the registry wrote.
# Registry restarts append to the same file.

# reg_log_mark: the current end of the access log (a byte offset), for
# counting only what comes after it.
reg_log_mark() { stat -c %s -- "$REG_ROOT/registry.log" 2>/dev/null || echo 0; }

# _log_stable FILE: FILE does not grow for half a second.
_log_stable() {
	local s i
	s=$(stat -c %s -- "$1" 2>/dev/null)
	for ((i = 0; i < 5; i++)); do
		nap 0.1
		[ "$(stat -c %s -- "$1" 2>/dev/null)" = "$s" ] || return 1
	done
}

# reg_log_quiet [SECS]: wait (up to SECS, default 10) until the access log
# has not grown for half a second, so that requests still running (read-ahead,
# transfers cut off by a killed client) have been logged.
reg_log_quiet() { wait_until "${1:-10}" _log_stable "$REG_ROOT/registry.log"; }

# _served_lines HEX [MARK]: the access log lines (after MARK) of GETs of the
# blob sha256:HEX, whatever the repository.
_served_lines() {
	local hex=${1#sha256:} mark=${2:-0}
	tail -c +"$((mark + 1))" -- "$REG_ROOT/registry.log" 2>/dev/null |
		grep -E "\"GET /v2/[^ ]*/blobs/sha256:$hex(\\?[^ ]*)? HTTP/[0-9.]+\" [0-9]{3} [0-9-]+ "
}

# served_bytes HEX [MARK]: bytes of body the registry wrote for GETs of blob
# HEX (after MARK from reg_log_mark).
served_bytes() {
	_served_lines "$@" |
		sed -E 's/.*HTTP\/[0-9.]+" [0-9]{3} ([0-9-]+) .*/\1/' |
		awk '$1 != "-" { s += $1 } END { printf "%d\n", s }'
}

# served_requests HEX [MARK]: how many GETs of blob HEX the registry answered
# (after MARK).
served_requests() { _served_lines "$@" | wc -l; }

# served_ranges HEX [MARK]: the status and byte count of each GET of blob HEX
# (after MARK), one "STATUS BYTES" a line, for diagnostics.
served_ranges() {
	_served_lines "$@" | sed -E 's/.*HTTP\/[0-9.]+" ([0-9]{3}) ([0-9-]+) .*/\1 \2/'
}

# ---------------------------------------------------------------- cache dir

# cache_map_ones MAP: how many chunks a partial blob's map records as
# fetched (bytes equal to 1); 0 when the map does not exist.
cache_map_ones() {
	[ -f "$1" ] || { echo 0; return 0; }
	tr -cd '\001' <"$1" | wc -c
}

# cache_blobs_bytes CACHEDIR: total size of the complete blobs in
# CACHEDIR/blobs/sha256.
cache_blobs_bytes() {
	find "$1/blobs/sha256" -maxdepth 1 -type f -printf '%s\n' 2>/dev/null |
		awk '{ s += $1 } END { printf "%d\n", s }'
}

# cache_verifies CACHEDIR: every complete blob in CACHEDIR/blobs/sha256
# hashes to its name (what a crash or a fault must never break).
cache_verifies() {
	local f
	for f in "$1"/blobs/sha256/*; do
		[ -e "$f" ] || continue
		[ "$(sha256sum <"$f" | cut -d' ' -f1)" = "$(basename "$f")" ] || return 1
	done
}

# tag_whole REPO TAG: the tag's manifest exists and every blob it names
# (config and layers) is in the registry.
tag_whole() {
	local mf d
	mf=$(manifest_get "$1" "$2") || return 1
	for d in $(jq -r '.config.digest, .layers[].digest' <<<"$mf"); do
		reg_curl "$1/blobs/$d" -I -o /dev/null || return 1
	done
}

# server_pid MNT: the pid of the server behind MNT now (the keeper's newest
# child); empty when none runs.
server_pid() {
	local pid=${_LIB_MOUNT_PID[$1]:-}
	[ -n "$pid" ] && pgrep -n -P "$pid"
}

# kill9_ocifs MNT: SIGKILL the keeper and the server behind MNT (a crash of
# both, as a machine's would be), reap them and detach the dead mount with
# `fusermount3 -u -z`. The mount point can be mounted again afterwards.
kill9_ocifs() {
	local mnt=$1 pid i
	pid=${_LIB_MOUNT_PID[$mnt]:-}
	if [ -n "$pid" ]; then
		# stopped first, the keeper cannot start another server meanwhile
		kill -STOP "$pid" 2>/dev/null
		pkill -KILL -P "$pid" 2>/dev/null
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		unset "_LIB_MOUNT_PID[$mnt]"
	fi
	fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
	for ((i = 0; i < 300; i++)); do
		mountpoint -q "$mnt" || return 0
		nap 0.1
	done
	return 1
}

# push_blob_stream REPO FILE: push_blob, kept for the benchmark's callers.
push_blob_stream() {
	push_blob "$@"
}

# ---------------------------------------------------------------- auth and TLS
# Registries that want credentials, a token server, credential files.
#
# The seeding helpers (reg_curl, manifest_*, blob_get, push_*) talk to
# $REG_SCHEME://$REG (default http) with curl plus the options in the array
# REG_CURL_OPTS (credentials, --cacert). registry_start_htpasswd and
# registry_start_token set both; after them, a plain registry_start needs
# reg_auth_clear first.
#
#   registry_start_htpasswd USER PASS [NAME]   Basic auth (htpasswd, bcrypt)
#   registry_start_token USER PASS [NAME]      Bearer tokens from a token server
#   REG_TLS=1 before either: HTTPS with a certificate for 127.0.0.1 signed by a
#     throwaway CA, whose certificate is $REG_CA (give ocifs -o ca_file=$REG_CA)
#   reg_auth_clear                 forget REG_SCHEME/REG_CURL_OPTS/REG_CA
#   reg_token [USER:PASS|-] SCOPE... a token from the token server (- anonymous)
#   with_reg_token REPO CMD...     run CMD (push_artifact...) with a push token
#   token_log_mark, token_requests [MARK] [GREP-REGEX], token_log_since MARK
#   token_server_rotate_key      invalidate every token handed out so far
#   token_server_ttl SECS        the expires_in of the tokens handed out next
#   auth_b64 USER PASS, auth_add_auth FILE KEY USER PASS,
#   auth_add_userpass FILE KEY USER PASS, auth_add_helper FILE HOST NAME,
#   auth_set_store FILE NAME, auth_add_identitytoken FILE KEY TOKEN,
#   docker_config_write DIR HOST USER PASS,
#   containers_auth_write FILE HOST USER PASS
#   cred_helper_install NAME, cred_helper_add NAME HOST USER PASS
#   check_no_secrets DESC LOG SECRET...

# _rcurl ARGS...: curl with the current registry's options.
_rcurl() { curl ${REG_CURL_OPTS[@]+"${REG_CURL_OPTS[@]}"} "$@"; }

reg_auth_clear() {
	REG_SCHEME=http
	REG_CURL_OPTS=()
	REG_CA=
	REG_CLIENT_CERT=
	REG_CLIENT_KEY=
}

# _tls_certs DIR: DIR/ca.pem (a throwaway CA), DIR/server.{pem,key} (for
# 127.0.0.1 and localhost, signed by it).
_tls_certs() {
	local d=$1
	[ -f "$d/server.pem" ] && return 0
	mkdir -p "$d"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ocifs test CA" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
		-keyout "$d/ca.key" -out "$d/ca.pem" >/dev/null 2>&1 || return 1
	openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
		-keyout "$d/server.key" -out "$d/server.csr" >/dev/null 2>&1 || return 1
	printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
		"keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$d/server.ext"
	openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
		-days 2 -extfile "$d/server.ext" -out "$d/server.pem" >/dev/null 2>&1
}

# _registry_launch_extra ROOT EXTRA_YAML: like _registry_launch with
# EXTRA_YAML appended to the configuration (it follows the http: section, so
# it may start with "  tls:"); ready when /v2/ answers at all (401 included).
_registry_launch_extra() {
	local root=$1 extra=$2 port pid i code scheme=http
	[ "${REG_TLS:-0}" = 1 ] && scheme=https
	for _ in 1 2 3 4 5 6 7 8; do
		port=$(free_port) || continue
		_registry_config "$root" "$port"
		printf '%s\n' "$extra" >>"$root/config.yml"
		: >"$root/registry.log"
		_registry_serve "$root"
		pid=$!
		_LIB_REG_PIDS+=("$pid")
		for ((i = 0; i < 600; i++)); do
			code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 \
				${REG_CA:+--cacert "$REG_CA"} \
				${REG_CLIENT_CERT:+--cert "$REG_CLIENT_CERT" --key "$REG_CLIENT_KEY"} \
				"$scheme://127.0.0.1:$port/v2/" 2>/dev/null)
			if [ "$code" = 401 ] || [ "$code" = 200 ]; then
				REG=127.0.0.1:$port REG_PORT=$port REG_PID=$pid REG_SCHEME=$scheme
				export REG REG_PORT REG_PID REG_ROOT
				return 0
			fi
			kill -0 "$pid" 2>/dev/null || break
			nap 0.1
		done
		_lib_kill_pid "$pid"
		grep -qi 'address already in use' "$root/registry.log" || break
	done
	diag_file "$root/registry.log"
	return 1
}

# _registry_auth_root NAME: a new registry root, TLS files when REG_TLS=1.
# Prints the TLS yaml (empty without TLS).
_registry_auth_root() {
	REG_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/ocifs-$1.XXXXXX") || bail "mktemp"
	_LIB_TMPDIRS+=("$REG_ROOT")
	reg_auth_clear
	if [ "${REG_TLS:-0}" = 1 ]; then
		_tls_certs "$REG_ROOT/tls" || bail "make TLS certificates"
		REG_CA=$REG_ROOT/tls/ca.pem
		export REG_CA
	fi
}

_registry_tls_yaml() {
	[ "${REG_TLS:-0}" = 1 ] || return 0
	printf '  tls:\n    certificate: %s\n    key: %s\n' "$REG_ROOT/tls/server.pem" "$REG_ROOT/tls/server.key"
}

# registry_start_htpasswd USER PASS [NAME]: a new registry (as registry_start)
# that wants HTTP Basic credentials USER:PASS (realm "ocifs-test"). With
# REG_TLS=1 it speaks HTTPS (REG_CA). The seeding helpers send USER:PASS.
# distribution 2.8 does not insist on TLS for htpasswd.
registry_start_htpasswd() {
	local user=$1 pass=$2 name=${3:-htpasswd}
	_registry_auth_root "$name"
	htpasswd -Bbn "$user" "$pass" >"$REG_ROOT/htpasswd" 2>/dev/null || bail "htpasswd"
	_registry_launch_extra "$REG_ROOT" "$(_registry_tls_yaml)
auth:
  htpasswd:
    realm: ocifs-test
    path: $REG_ROOT/htpasswd" || bail "start docker-registry with htpasswd auth"
	REG_CURL_OPTS=(-u "$user:$pass")
	[ -n "$REG_CA" ] && REG_CURL_OPTS+=(--cacert "$REG_CA")
	return 0
}

# libtrust_kid CERT: the key id distribution gives the certificate's public
# key (libtrust: SHA-256 of the DER SubjectPublicKeyInfo, first 240 bits,
# base32, twelve groups of four separated by ':').
libtrust_kid() {
	openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER |
		openssl dgst -sha256 -binary | head -c 30 | base32 -w0 |
		sed -E 's/(....)/\1:/g; s/:$//'
}

# The token server: one request per connection (socat forks it).
#   GET /token?service=S&scope=T:NAME:ACTIONS[&scope=...]: a JWT (RS256,
#     header kid = libtrust key id of the signing certificate, which the
#     registry trusts through rootcertbundle). Basic USER:PASS: every action
#     asked, on everything; no Authorization: pull of repositories under
#     public/, nothing else (an empty access list); wrong credentials: 401.
#   POST /token (OAuth2, form body grant_type=refresh_token&refresh_token=R
#     or grant_type=password&username=U&password=P, service, scope,
#     client_id): the same with R = $TOKEN_REFRESH standing for USER:PASS;
#     a wrong one: 401.
# Answers {token, access_token, expires_in, issued_at}. Each request appends
# a line to requests.log, never a secret:
#   "<epoch> basic=yes|no|bad|other <METHOD> <path> [oauth=GRANT:ok|bad] scope=..."
_token_server_script() {
	cat <<'EOF'
#!/bin/bash
set -u
export LC_ALL=C
dir=${0%/*}
. "$dir/tokenserver.conf"
exec 2>>"$dir/tokenserver.err"

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
# js STRING: STRING as a JSON string (what reaches it is printable: names,
# scopes, key ids); jq would cost a start-up per field of every token
js() {
	local s=${1//\\/\\\\}
	printf '"%s"' "${s//\"/\\\"}"
}
urldecode() { local s=${1//+/ }; printf '%b' "${s//%/\\x}"; }
respond() { # STATUS REASON BODY [HEADER]
	printf 'HTTP/1.1 %s %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n%s' \
		"$1" "$2" "${#3}" "${4:+$4$'\r\n'}" "$3"
}

IFS=' ' read -r -t 10 method target _ || exit 0
method=${method%$'\r'} target=${target%$'\r'}
auth= clen=0
while IFS= read -r -t 10 line; do
	line=${line%$'\r'}
	[ -z "$line" ] && break
	case ${line,,} in
	authorization:*) auth=${line#*:} auth=${auth# } ;;
	content-length:*) clen=${line#*:} clen=${clen// /} ;;
	esac
done
body=
[[ $clen =~ ^[0-9]+$ ]] && [ "$clen" -gt 0 ] && [ "$clen" -lt 65536 ] &&
	IFS= read -r -N "$clen" -t 10 body
path=${target%%\?*}
query=
[ "$path" != "$target" ] && query=${target#*\?}
service= scopes=() user= grant= rtoken= fuser= fpass=
IFS='&' read -r -a params <<<"$query${body:+&$body}"
for p in ${params[@]+"${params[@]}"}; do
	k=${p%%=*} v=$(urldecode "${p#*=}")
	case $k in
	service) service=$v ;;
	scope) for s in $v; do scopes+=("$s"); done ;;
	grant_type) grant=$v ;;
	refresh_token) rtoken=$v ;;
	username) fuser=$v ;;
	password) fpass=$v ;;
	esac
done
basic=no
case $auth in
[Bb]asic\ *)
	cred=$(printf '%s' "${auth#* }" | base64 -d 2>/dev/null)
	if [ "$cred" = "$TS_USER:$TS_PASS" ]; then basic=yes user=$TS_USER; else basic=bad; fi ;;
?*) basic=other ;;
esac
oauth=
if [ "$method" = POST ]; then
	case $grant in
	refresh_token) [ -n "$rtoken" ] && [ "$rtoken" = "$TS_REFRESH" ] && oauth=ok user=$TS_USER ;;
	password) [ "$fuser:$fpass" = "$TS_USER:$TS_PASS" ] && oauth=ok user=$TS_USER ;;
	esac
	oauth=" oauth=${grant:-none}:${oauth:-bad}"
fi
printf '%s basic=%s %s %s%s%s\n' "$(date +%s.%N)" "$basic" "$method" "$path" "$oauth" \
	"$(for s in ${scopes[@]+"${scopes[@]}"}; do printf ' scope=%s' "$s"; done)" >>"$TS_LOG"

if [ "$path" != /token ] || { [ "$method" != GET ] && [ "$method" != POST ]; }; then
	respond 404 "Not Found" '{"errors":[{"code":"UNSUPPORTED","message":"GET or POST /token only"}]}'
	exit 0
fi
if [ "$basic" = bad ] || [ "$basic" = other ] || [[ $oauth == *:bad ]]; then
	respond 401 Unauthorized '{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}' \
		'WWW-Authenticate: Basic realm="token"'
	exit 0
fi
access='[]'
for s in ${scopes[@]+"${scopes[@]}"}; do
	type=${s%%:*} rest=${s#*:}
	actions=${rest##*:} name=${rest%:*}
	[ "$type" = "$s" ] && continue
	if [ -n "$user" ]; then
		grant=$actions
	elif [ "$type" = repository ] && [[ $name == public/* ]] && [[ ,$actions, == *,pull,* ]]; then
		grant=pull
	else
		continue
	fi
	acts=
	IFS=, read -ra al <<<"$grant"
	for a in "${al[@]}"; do acts+=${acts:+,}$(js "$a"); done
	entry="{\"type\":$(js "$type"),\"name\":$(js "$name"),\"actions\":[$acts]}"
	[ "$access" = '[]' ] && access="[$entry]" || access="${access%]},$entry]"
done
now=$(date +%s)
header=$(printf '{"typ":"JWT","alg":"RS256","kid":%s}' "$(js "$TS_KID")" | b64url)
claims=$(printf '{"iss":%s,"sub":%s,"aud":%s,"exp":%d,"nbf":%d,"iat":%d,"jti":%s,"access":%s}' \
	"$(js "$TS_ISSUER")" "$(js "$user")" "$(js "${service:-$TS_SERVICE}")" \
	$((now + TS_TTL)) $((now - 10)) "$now" "$(js "$now.$$.$RANDOM")" "$access" | b64url)
sig=$(printf '%s.%s' "$header" "$claims" | openssl dgst -sha256 -sign "$TS_KEY" -binary | b64url)
jwt=$header.$claims.$sig
respond 200 OK "$(printf '{"token":"%s","access_token":"%s","expires_in":%d,"issued_at":"%s"}' \
	"$jwt" "$jwt" "$TS_TTL" "$(date -u -d "@$now" +%Y-%m-%dT%H:%M:%SZ)")"
EOF
}

# registry_start_token USER PASS [NAME]: a new registry that wants Bearer
# tokens (service "test-registry", issuer "test-issuer"), and its token
# server on a port of its own (socat, TOKEN_PORT, realm TOKEN_REALM). Sets
# TOKEN_DIR, TOKEN_LOG (the request log) and TOKEN_REFRESH (the OAuth2
# refresh token the server accepts for USER) besides REG*. TOKEN_TTL (default
# 300) is the tokens' lifetime in seconds. The seeding helpers send no
# credentials: wrap them with with_reg_token.
registry_start_token() {
	local user=$1 pass=$2 name=${3:-token} pid i
	_registry_auth_root "$name"
	TOKEN_DIR=$REG_ROOT/tokenserver
	mkdir -p "$TOKEN_DIR"
	TOKEN_LOG=$TOKEN_DIR/requests.log
	TOKEN_REFRESH=refresh-$(openssl rand -hex 16)
	: >"$TOKEN_LOG"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=test-issuer" \
		-keyout "$TOKEN_DIR/key.pem" -out "$TOKEN_DIR/cert.pem" >/dev/null 2>&1 || bail "token signing key"
	{
		printf 'TS_USER=%q\nTS_PASS=%q\n' "$user" "$pass"
		printf 'TS_SERVICE=test-registry\nTS_ISSUER=test-issuer\n'
		printf 'TS_KEY=%q\nTS_LOG=%q\nTS_TTL=%d\n' "$TOKEN_DIR/key.pem" "$TOKEN_LOG" "${TOKEN_TTL:-300}"
		printf 'TS_KID=%q\n' "$(libtrust_kid "$TOKEN_DIR/cert.pem")"
		printf 'TS_REFRESH=%q\n' "$TOKEN_REFRESH"
	} >"$TOKEN_DIR/tokenserver.conf"
	_token_server_script >"$TOKEN_DIR/tokenserver.sh"
	chmod +x "$TOKEN_DIR/tokenserver.sh"
	for i in 1 2 3 4 5 6 7 8; do
		TOKEN_PORT=$(free_port) || continue
		socat "TCP-LISTEN:$TOKEN_PORT,bind=127.0.0.1,reuseaddr,fork" \
			"EXEC:$TOKEN_DIR/tokenserver.sh" 2>>"$TOKEN_DIR/socat.err" </dev/null &
		pid=$!
		_LIB_REG_PIDS+=("$pid")
		if wait_until 30 curl -fsS -o /dev/null --max-time 2 \
			"http://127.0.0.1:$TOKEN_PORT/token?service=test-registry"; then
			TOKEN_PID=$pid
			break
		fi
		_lib_kill_pid "$pid"
		TOKEN_PORT=
	done
	[ -n "$TOKEN_PORT" ] || { diag_file "$TOKEN_DIR/socat.err"; bail "start the token server"; }
	: >"$TOKEN_LOG"
	TOKEN_REALM=http://127.0.0.1:$TOKEN_PORT/token
	export TOKEN_DIR TOKEN_LOG TOKEN_PORT TOKEN_REALM TOKEN_PID TOKEN_REFRESH
	TOKEN_CRED=$user:$pass
	_registry_launch_extra "$REG_ROOT" "$(_registry_tls_yaml)
auth:
  token:
    realm: $TOKEN_REALM
    service: test-registry
    issuer: test-issuer
    rootcertbundle: $TOKEN_DIR/cert.pem" || bail "start docker-registry with token auth"
	[ -n "$REG_CA" ] && REG_CURL_OPTS=(--cacert "$REG_CA")
	return 0
}

# reg_token CRED SCOPE...: a token for the scopes from the current token
# server; CRED is USER:PASS, or - for an anonymous request.
reg_token() {
	local cred=$1 q=service=test-registry s
	shift
	for s in "$@"; do q+="&scope=$s"; done
	if [ "$cred" = - ]; then
		curl -fsS "$TOKEN_REALM?$q" | jq -re .token
	else
		curl -fsS -u "$cred" "$TOKEN_REALM?$q" | jq -re .token
	fi
}

# with_reg_token REPO CMD...: run CMD with REG_CURL_OPTS sending a token
# for pull and push of REPO (from the credentials of registry_start_token).
with_reg_token() {
	local repo=$1 tok
	shift
	tok=$(reg_token "$TOKEN_CRED" "repository:$repo:pull,push") || {
		echo "with_reg_token: no token for $repo" >&2
		return 1
	}
	local REG_CURL_OPTS=(${REG_CA:+--cacert "$REG_CA"} -H "Authorization: Bearer $tok")
	"$@"
}

# token_log_mark: the current end of the token server's request log.
token_log_mark() { stat -c %s -- "$TOKEN_LOG" 2>/dev/null || echo 0; }
# token_log_since MARK: the request lines logged after MARK.
token_log_since() { tail -c +"$((${1:-0} + 1))" -- "$TOKEN_LOG" 2>/dev/null; }
# token_requests [MARK] [REGEX]: how many requests (after MARK) match REGEX
# (grep -E; every request without one).
token_requests() { token_log_since "${1:-0}" | grep -cE -- "${2:-.}"; }

# ---- credential files (docker config.json and containers auth.json share
# the format). Each merges into FILE, creating it when missing.

auth_b64() { printf '%s:%s' "$1" "$2" | base64 -w0; }

_auth_merge() {
	local file=$1 tmp
	shift
	mkdir -p "$(dirname "$file")"
	[ -s "$file" ] || echo '{}' >"$file"
	tmp=$file.tmp
	jq "$@" "$file" >"$tmp" && mv -f -- "$tmp" "$file"
}

# auth_add_auth FILE KEY USER PASS: auths[KEY].auth = base64(USER:PASS)
auth_add_auth() { _auth_merge "$1" --arg k "$2" --arg a "$(auth_b64 "$3" "$4")" '.auths[$k] = {auth: $a}'; }
# auth_add_userpass FILE KEY USER PASS: auths[KEY] = {username, password}
auth_add_userpass() {
	_auth_merge "$1" --arg k "$2" --arg u "$3" --arg p "$4" '.auths[$k] = {username: $u, password: $p}'
}
# auth_add_helper FILE HOST NAME: credHelpers[HOST] = NAME
auth_add_helper() { _auth_merge "$1" --arg k "$2" --arg n "$3" '.credHelpers[$k] = $n'; }
# auth_add_identitytoken FILE KEY TOKEN: an OAuth2 refresh token, as docker
# login stores one (auth is "<token>:")
auth_add_identitytoken() {
	_auth_merge "$1" --arg k "$2" --arg a "$(auth_b64 "<token>" "")" --arg t "$3" \
		'.auths[$k] = {auth: $a, identitytoken: $t}'
}
# auth_set_store FILE NAME: credsStore = NAME
auth_set_store() { _auth_merge "$1" --arg n "$2" '.credsStore = $n'; }
# docker_config_write DIR HOST USER PASS: DIR/config.json (for DOCKER_CONFIG)
docker_config_write() { auth_add_auth "$1/config.json" "$2" "$3" "$4"; }
# containers_auth_write FILE HOST USER PASS: a containers auth.json
containers_auth_write() { auth_add_auth "$1" "$2" "$3" "$4"; }

# cred_helper_install NAME: a fake docker-credential-NAME in CRED_HELPER_BIN
# (put that directory on the daemon's PATH). It answers `get` for the hosts
# given to cred_helper_add (the server URL read on stdin, with or without
# scheme and trailing slash); for others it prints "credentials not found in
# native keychain" and exits 1. Each call appends "ACTION URL" to
# $CRED_HELPER_BIN/NAME.log.
cred_helper_install() {
	local name=$1
	CRED_HELPER_BIN=$TESTDIR/credbin
	mkdir -p "$CRED_HELPER_BIN"
	: >>"$CRED_HELPER_BIN/$name.db"
	cat >"$CRED_HELPER_BIN/docker-credential-$name" <<EOF
#!/bin/bash
db=$CRED_HELPER_BIN/$name.db
log=$CRED_HELPER_BIN/$name.log
EOF
	cat >>"$CRED_HELPER_BIN/docker-credential-$name" <<'EOF'
action=${1:-}
url=$(head -c 4096 | tr -d '\r\n')
printf '%s %s\n' "$action" "$url" >>"$log"
if [ "$action" != get ]; then
	echo "unsupported action: $action" >&2
	exit 1
fi
h=${url#*://}
h=${h%%/*}
while IFS=$'\t' read -r host user secret; do
	if [ "$host" = "$h" ]; then
		jq -cn --arg s "$url" --arg u "$user" --arg p "$secret" \
			'{ServerURL: $s, Username: $u, Secret: $p}'
		exit 0
	fi
done <"$db"
echo "credentials not found in native keychain"
exit 1
EOF
	chmod +x "$CRED_HELPER_BIN/docker-credential-$name"
	export CRED_HELPER_BIN
}

# cred_helper_add NAME HOST USER PASS
cred_helper_add() { printf '%s\t%s\t%s\n' "$2" "$3" "$4" >>"$CRED_HELPER_BIN/$1.db"; }

# check_no_secrets DESC LOG SECRET...: none of the SECRETs, no JWT ("eyJ")
# and no Authorization header value in LOG.
check_no_secrets() {
	local desc=$1 log=$2 s found=()
	shift 2
	[ -f "$log" ] || { not_ok "$desc" "no log $log"; return 1; }
	for s in "$@" eyJ; do
		grep -qF -- "$s" "$log" && found+=("$s")
	done
	grep -qiE 'authorization: *(basic|bearer) ' "$log" && found+=("Authorization header")
	if [ ${#found[@]} = 0 ]; then
		ok "$desc"
		return 0
	fi
	not_ok "$desc" "found in $(_lbl "$log"): ${found[*]}"
	grep -m3 -nF -e "${found[0]}" "$log" | cut -c1-200 | sed 's/^/#   /'
	return 1
}

# token_server_rotate_key: the token server signs with a new key from now
# on, and the registry is restarted (same root, same port) trusting only the
# new key, so every token handed out before is refused with 401 (as after a
# key rotation or a revocation).
# token_server_ttl SECS: the expires_in of the tokens handed out from now on.
token_server_ttl() {
	sed -i "s/^TS_TTL=.*/TS_TTL=$1/" "$TOKEN_DIR/tokenserver.conf"
}

token_server_rotate_key() {
	local i
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=test-issuer" \
		-keyout "$TOKEN_DIR/key2.pem" -out "$TOKEN_DIR/cert2.pem" >/dev/null 2>&1 || return 1
	registry_stop
	mv -f -- "$TOKEN_DIR/key2.pem" "$TOKEN_DIR/key.pem"
	mv -f -- "$TOKEN_DIR/cert2.pem" "$TOKEN_DIR/cert.pem"
	sed -i "s/^TS_KID=.*/TS_KID=$(libtrust_kid "$TOKEN_DIR/cert.pem")/" "$TOKEN_DIR/tokenserver.conf"
	for i in 1 2 3 4 5; do
		_registry_serve "$REG_ROOT"
		REG_PID=$!
		_LIB_REG_PIDS+=("$REG_PID")
		if wait_until 60 _reg_answers; then return 0; fi
		_lib_kill_pid "$REG_PID"
		nap 0.5
	done
	return 1
}

# _reg_answers: the current registry answers /v2/ (200 or 401).
_reg_answers() {
	local code
	code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 ${REG_CA:+--cacert "$REG_CA"} \
		"${REG_SCHEME:-http}://$REG/v2/" 2>/dev/null)
	[ "$code" = 401 ] || [ "$code" = 200 ]
}

# registry_start_mtls [NAME]: a new registry over TLS that demands a client
# certificate signed by its CA (REG_CA). Exports REG_CLIENT_CERT and
# REG_CLIENT_KEY (a certificate it accepts); the seeding helpers present it.
registry_start_mtls() {
	local name=${1:-mtls} d
	REG_TLS=1 _registry_auth_root "$name"
	d=$REG_ROOT/tls
	openssl req -newkey rsa:2048 -nodes -subj "/CN=ocifs test client" \
		-keyout "$d/client.key" -out "$d/client.csr" >/dev/null 2>&1 || bail "client key"
	printf '%s\n' "basicConstraints=CA:FALSE" "extendedKeyUsage=clientAuth" >"$d/client.ext"
	openssl x509 -req -in "$d/client.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
		-days 2 -extfile "$d/client.ext" -out "$d/client.pem" >/dev/null 2>&1 || bail "client cert"
	REG_CLIENT_CERT=$d/client.pem REG_CLIENT_KEY=$d/client.key
	export REG_CLIENT_CERT REG_CLIENT_KEY
	REG_TLS=1 _registry_launch_extra "$REG_ROOT" "$(REG_TLS=1 _registry_tls_yaml)
    clientcas:
      - $d/ca.pem" || bail "start docker-registry with client certificates"
	REG_CURL_OPTS=(--cacert "$REG_CA" --cert "$REG_CLIENT_CERT" --key "$REG_CLIENT_KEY")
	return 0
}

# ---------------------------------------------------------------- mirrors

# registry_start_mirror REMOTEURL [NAME]: a second registry in pull-through
# proxy mode (proxy: remoteurl:) in front of REMOTEURL, logging every request
# (MIRROR_ROOT/registry.log). Sets MIRROR (127.0.0.1:PORT), MIRROR_ROOT,
# MIRROR_PID; REG and the other REG_* variables still name the registry that
# was current before.
registry_start_mirror() {
	local remote=$1 name=${2:-mirror}
	local s_reg=${REG:-} s_port=${REG_PORT:-} s_pid=${REG_PID:-} s_root=${REG_ROOT:-}
	REG_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/ocifs-$name.XXXXXX") || bail "mktemp"
	_LIB_TMPDIRS+=("$REG_ROOT")
	REG_ACCESSLOG=1 _registry_launch_extra "$REG_ROOT" "proxy:
  remoteurl: $remote" || bail "start docker-registry as a pull-through mirror of $remote"
	MIRROR=$REG MIRROR_ROOT=$REG_ROOT MIRROR_PID=$REG_PID MIRROR_PORT=$REG_PORT
	REG=$s_reg REG_PORT=$s_port REG_PID=$s_pid REG_ROOT=$s_root
	export MIRROR MIRROR_ROOT MIRROR_PID REG REG_PORT REG_PID REG_ROOT
}


# ---------------------------------------------------------------- fault proxy
# tests/integration/faultproxy.py between ocifs and a registry: rules make it
# answer 503 or 429, cut a body short, corrupt it, add headers or redirect;
# it is also a forward proxy (http_proxy, CONNECT). See its header.

# faultproxy_start [UPSTREAM_URL [USER:PASS]]: start one on a free port in
# front of UPSTREAM_URL (default http://$REG). Sets FP (127.0.0.1:PORT),
# FP_PORT, FP_PID, FP_LOG (one JSON line per request), FP_RULES (empty).
faultproxy_start() {
	local up=${1:-http://$REG} auth=${2:-} i try out
	command -v python3 >/dev/null 2>&1 || bail "python3 is needed for the fault proxy"
	# a free port can be taken before the proxy binds it (the ephemeral range): try others
	for try in 1 2 3 4 5 6 7 8; do
		FP_PORT=$(free_port) || bail "no free port"
		FP=127.0.0.1:$FP_PORT
		FP_LOG=$TESTDIR/faultproxy.$FP_PORT.log
		FP_RULES=$TESTDIR/faultproxy.$FP_PORT.rules
		out=$TESTDIR/faultproxy.$FP_PORT.out
		: >"$FP_LOG"
		echo '[]' >"$FP_RULES"
		python3 "$srcdir/tests/integration/faultproxy.py" --port "$FP_PORT" --log "$FP_LOG" \
			--upstream "$up" --rules "$FP_RULES" ${auth:+--upstream-auth "$auth"} \
			>"$out" 2>&1 </dev/null &
		FP_PID=$!
		_LIB_REG_PIDS+=("$FP_PID")
		for ((i = 0; i < 600; i++)); do
			grep -q '^listening' "$out" 2>/dev/null && return 0
			kill -0 "$FP_PID" 2>/dev/null || break
			nap 0.1
		done
		grep -q 'Address already in use' "$out" || break
	done
	diag_file "$out"
	bail "start the fault proxy"
}

# fp_rules JSON: replace the proxy's rules (atomically).
fp_rules() { printf '%s\n' "$1" >"$FP_RULES.tmp" && mv -f -- "$FP_RULES.tmp" "$FP_RULES"; }

# fp_log_mark: the current end of the proxy's log, for fp_count.
fp_log_mark() { stat -c %s -- "$FP_LOG"; }

# fp_quiet [SECS]: wait (up to SECS, default 10) until the proxy's log has not
# grown for half a second. The proxy logs a request once its answer is sent,
# so a client can have the whole answer before its line is there.
fp_quiet() { wait_until "${1:-10}" _log_stable "$FP_LOG"; }

# fp_select JQ_CONDITION [MARK]: the log records (after MARK) for which the
# jq condition holds, one JSON object a line.
fp_select() {
	tail -c +"$((${2:-0} + 1))" -- "$FP_LOG" | jq -c "select($1)"
}

# fp_count JQ_CONDITION [MARK]: how many log records (after MARK) match.
fp_count() { fp_select "$@" | wc -l; }

#!/bin/bash
# Concurrency stress: everything a busy mount sees at once, against a real
# registry. Eight readers of cold multi-MiB blobs (two per blob) and of an
# image's files; `ls -RA` of the whole tree; .ocifs/stats.json and
# user.ocifs.cached read while the blobs are fetched; tags pushed (mkdir, cp,
# sync) and referrers attached (.oci/referrers/<type>/<name>, cp, sync) in
# parallel; SIGHUP to the daemon all along. Then a second mount is unmounted
# (lazily) while its readers are still reading. What is checked is what a
# user would: the bytes read, the exit codes, what the registry holds after
# the pushes, and that the daemon exits 0 with no sanitizer report in its log
# (the ThreadSanitizer pass of contrib/test.sh runs this test too).
# STRESS_ROUNDS (default 1) repeats the concurrent phase on fresh caches.
T_TIMEOUT=${T_TIMEOUT:-600}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env getfattr sha256sum timeout fusermount3 skopeo umoci

MiB=$((1024 * 1024))
NBLOB=4
ROUNDS=${STRESS_ROUNDS:-1}
# Every background job is bounded: a hang shows as a failed job, not a stuck test.
JOB_SECS=240

registry_start stress
W=$TESTDIR/w
mkdir -p "$W/data" "$W/img/etc/conf" "$W/img/usr/share/doc"
for ((i = 0; i < NBLOB; i++)); do
	# odd sizes: the last chunk of each blob is partial
	make_random_file "$W/data/blob$i.bin" $(((3 + i) * MiB + 4093 * i + 1)) "stress-$i"
done
V1=$(push_artifact st/data v1 "$W/data") || bail "seed st/data:v1"
for ((i = 0; i < 40; i++)); do echo "conf $i" >"$W/img/etc/conf/c$i.conf"; done
make_random_file "$W/img/usr/share/doc/big.bin" $((2 * MiB + 17)) stress-img
image_build "$TESTDIR/layout" v1 linux/amd64 "$W/img" >/dev/null 2>&1 || bail "build the image"
push_image "$TESTDIR/layout" v1 st/img v1 >/dev/null || bail "push st/img:v1"

M=$TESTDIR/mnt
R=$TESTDIR/results
mkdir -p "$R"

# job NAME CMD...: run CMD in the background, bounded; its exit code goes to
# $R/NAME.rc and its output to $R/NAME.out.
JOBS=() JOB_PIDS=()
job() {
	local name=$1
	shift
	(
		# through bash: the helpers below are exported functions
		timeout -k 5 "$JOB_SECS" bash -c '"$@"' "$name" "$@" >"$R/$name.out" 2>&1
		echo $? >"$R/$name.rc"
	) &
	JOBS+=("$name")
	JOB_PIDS+=($!)
}

# rc_of NAME: the exit code job NAME recorded.
rc_of() { cat "$R/$1.rc" 2>/dev/null || echo none; }

# read_check SRC WANT_HEX: read SRC whole; fails unless its sha256 is WANT_HEX.
read_check() {
	local got
	got=$(sha256sum <"$1" | cut -d' ' -f1) || return 1
	[ "$got" = "$2" ] || {
		echo "sha256 of $1: $got, want $2"
		return 1
	}
}
export -f read_check

# poll_status DIR FILE DONE: until DONE exists, read stats.json (must be JSON
# with bytes_fetched) and user.ocifs.cached of FILE (a percent, 0 to 100);
# counts the rounds in $R/status.n. At least 3 rounds.
poll_status() {
	local m=$1 f=$2 done=$3 n=0 pct
	while [ ! -e "$done" ] || [ "$n" -lt 3 ]; do
		jq -e '.bytes_fetched >= 0 and (.blobs_in_flight | type) == "array"' \
			"$m/.ocifs/stats.json" >/dev/null || {
			echo "stats.json round $n: not the JSON expected"
			return 1
		}
		pct=$(getfattr --absolute-names --only-values -n user.ocifs.cached "$f") || return 1
		[[ $pct =~ ^[0-9]+$ ]] && [ "$pct" -le 100 ] || {
			echo "user.ocifs.cached round $n: '$pct'"
			return 1
		}
		n=$((n + 1))
		echo "$n" >"$R/status.n"
	done
}
export -f poll_status
export R

# hup_loop PID DONE: SIGHUP every 0.2 s until DONE exists, at least 3 times.
hup_loop() {
	local pid=$1 done=$2 n=0
	while [ ! -e "$done" ] || [ "$n" -lt 3 ]; do
		kill -HUP "$pid" || return 1
		n=$((n + 1))
		echo "$n" >"$R/hup.n"
		sleep 0.2
	done
}
export -f hup_loop

# push_tag DIR SRC...: mkdir DIR (a new tag), copy the files in, sync it.
push_tag() {
	local dir=$1
	shift
	mkdir "$dir" && cp -- "$@" "$dir/" && sync "$dir"
}
export -f push_tag

# attach DIR SRC: a referrer DIR (under .oci/referrers/<type>/) holding SRC.
# Once pushed, a referrer shows under its digest: when the pusher (push_delay)
# was first, DIR is gone and sync has nothing to push. The registry's
# fallback index is checked afterwards either way.
attach() { mkdir -p "$1" && cp -- "$2" "$1/" && { sync "$1" || [ ! -e "$1" ]; }; }
export -f attach

# ---------------------------------------------------------------- the busy phase

for ((round = 1; round <= ROUNDS; round++)); do
	rm -f "$R"/*
	JOBS=() JOB_PIDS=()
	# a fresh cache: every blob is cold
	OCIFS_CACHE=$TESTDIR/cache.$round mount_ocifs "$REG" "$M" -o push_delay=1 ||
		bail "mount (round $round)"
	PID=$OCIFS_PID
	D=$M/st/data/v1
	REFS=$D/.oci/referrers/application/vnd.ocifs.stress.note
	DONE=$R/readers.done

	for ((k = 0; k < 8; k++)); do
		i=$((k % NBLOB))
		job "read$k" read_check "$D/blob$i.bin" "$(sha256_hex "$W/data/blob$i.bin")"
	done
	job read-img read_check "$M/st/img/v1/usr/share/doc/big.bin" \
		"$(sha256_hex "$W/img/usr/share/doc/big.bin")"
	job status poll_status "$M" "$D/blob$((NBLOB - 1)).bin" "$DONE"
	job hup hup_loop "$PID" "$DONE"
	job lsR ls -RA "$M/st"
	for ((k = 1; k <= 3; k++)); do
		printf 'pushed %s in round %s\n' "$k" "$round" >"$W/p$k.txt"
		job "push$k" push_tag "$M/st/data/r$round-p$k" "$W/p$k.txt" "$W/data/blob$k.bin"
	done
	job push-new push_tag "$M/st/new$round:v1" "$W/p1.txt"
	for ((k = 1; k <= 3; k++)); do
		printf '{"note": %s, "round": %s}\n' "$k" "$round" >"$W/note$k.json"
		job "attach$k" attach "$REFS/r$round-n$k" "$W/note$k.json"
	done

	# the readers and writers first; then the loops that watch them are told to stop
	for name in "${JOBS[@]}"; do
		case $name in read* | lsR | push* | attach*)
			wait_until "$JOB_SECS" test -e "$R/$name.rc" ;;
		esac
	done
	: >"$DONE"
	wait "${JOB_PIDS[@]}"

	for ((k = 0; k < 8; k++)); do
		check_eq "round $round: reader $k of blob$((k % NBLOB)).bin read the right bytes" 0 \
			"$(rc_of "read$k")" || diag_file "$R/read$k.out"
	done
	check_eq "round $round: the image's file read right" 0 "$(rc_of read-img)" ||
		diag_file "$R/read-img.out"
	check_eq "round $round: stats.json and user.ocifs.cached read fine during the fetches" \
		0 "$(rc_of status)" || diag_file "$R/status.out"
	diag "stats.json read $(cat "$R/status.n" 2>/dev/null) times, $(cat "$R/hup.n" 2>/dev/null) SIGHUPs"
	check_eq "round $round: SIGHUP sent all along" 0 "$(rc_of hup)" || diag_file "$R/hup.out"
	check_eq "round $round: ls -RA of the tree succeeds" 0 "$(rc_of lsR)" || diag_file "$R/lsR.out"
	check "round $round: ls -RA saw the image's files" grep -qx c39.conf "$R/lsR.out"
	for ((k = 1; k <= 3; k++)); do
		check_eq "round $round: push of r$round-p$k (mkdir, cp, sync) succeeds" 0 \
			"$(rc_of "push$k")" || diag_file "$R/push$k.out"
	done
	check_eq "round $round: push of a new repository st/new$round:v1 succeeds" 0 \
		"$(rc_of push-new)" || diag_file "$R/push-new.out"
	for ((k = 1; k <= 3; k++)); do
		check_eq "round $round: attach of note $k succeeds" 0 "$(rc_of "attach$k")" ||
			diag_file "$R/attach$k.out"
	done
	check "round $round: the daemon is still serving" daemon_alive "$M"

	# what the registry holds: each pushed tag's files, byte for byte
	for ((k = 1; k <= 3; k++)); do
		mf=$(manifest_get st/data "r$round-p$k" 2>/dev/null)
		got=$(jq -r '[.layers[] | .annotations["org.opencontainers.image.title"] + " " + .digest]
			| sort | join(",")' <<<"$mf" 2>&1)
		check_eq "round $round: st/data:r$round-p$k holds its two files" \
			"blob$k.bin $(digest_of "$W/data/blob$k.bin"),p$k.txt $(digest_of "$W/p$k.txt")" "$got"
		blob_get st/data "$(digest_of "$W/p$k.txt")" >"$TESTDIR/got.txt" 2>/dev/null
		check_same "round $round: and the registry serves p$k.txt's bytes" "$W/p$k.txt" \
			"$TESTDIR/got.txt"
	done
	check_eq "round $round: st/new$round:v1 holds p1.txt" "p1.txt $(digest_of "$W/p1.txt")" \
		"$(manifest_get "st/new$round" v1 2>/dev/null |
			jq -r '.layers[] | .annotations["org.opencontainers.image.title"] + " " + .digest' 2>&1)"
	idx=$(manifest_get st/data "sha256-${V1#sha256:}" 2>/dev/null)
	# the index gathers the notes of every round so far
	check_eq "round $round: the fallback index of st/data:v1 lists every note attached" \
		$((3 * round)) "$(jq --arg t application/vnd.ocifs.stress.note \
			'[.manifests[] | select(.artifactType == $t)] | length' <<<"$idx" 2>&1)"
	notes=$(for d in $(jq -r '.manifests[].digest' <<<"$idx" 2>/dev/null); do
		blob_get st/data "$(manifest_get st/data "$d" | jq -r '.layers[0].digest')"
	done | grep -F "\"round\": $round}" | sort)
	check_eq "round $round: each note's bytes are in the registry" \
		"$(cat "$W/note1.json" "$W/note2.json" "$W/note3.json" | sort)" "$notes"
	umount_ocifs "$M"
done

# ---------------------------------------------------------------- unmount while busy

OCIFS_CACHE=$TESTDIR/cache.busy mount_ocifs "$REG" "$M" -o push_delay=3600 ||
	bail "mount for the busy unmount"
D=$M/st/data/v1
pids=()
for ((k = 0; k < NBLOB; k++)); do
	# each reader opens its file and reads its first MiB before the unmount,
	# the rest after, through the same descriptor
	(
		exec 3<"$D/blob$k.bin" || exit 1
		head -c "$MiB" <&3 >"$R/busy$k.bin" || exit 1
		: >"$R/busy$k.open"
		cat <&3 >>"$R/busy$k.bin"
	) >"$R/busy$k.out" 2>&1 &
	pids+=($!)
done
( ls -RA "$M/st" >/dev/null 2>&1 ) &
lspid=$!
for ((k = 0; k < NBLOB; k++)); do
	wait_until 60 test -e "$R/busy$k.open" || not_ok "reader $k read its first MiB"
done
# a plain unmount first, as a user would try; lazy when the kernel says busy
check "unmount (fusermount3 -u, else -u -z) while the readers read" \
	sh -c "fusermount3 -u '$M' || fusermount3 -u -z '$M'"
check_fail "the mount point is no longer a mount" mountpoint -q "$M"
for ((k = 0; k < NBLOB; k++)); do
	wait "${pids[$k]}"
	check_eq "reader $k, its file open across the unmount, exits 0" 0 "$?" ||
		diag_file "$R/busy$k.out"
	check_same "and read every byte right" "$W/data/blob$k.bin" "$R/busy$k.bin"
done
wait "$lspid"
# the kernel ends the connection when the last file closes: the daemon then exits
umount_ocifs "$M"
check "no daemon of this test left" no_process "$TESTDIR/cache"
finish

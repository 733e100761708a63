#!/bin/bash
# What contrib/ gives operators works as given: the systemd units pass
# systemd-analyze verify; every line of fstab.example mounts (in a private
# mount namespace, the registry and paths swapped for the test's) and shows
# what its comment says; the Kubernetes manifests hold the settings the
# pattern depends on.
T_TIMEOUT=${T_TIMEOUT:-180}
if [ -z "${OCIFS_IN_NS:-}" ]; then
	[ "$(id -u)" = 0 ] || { echo "# SKIP needs root (mount namespaces)"; exit 77; }
	OCIFS_IN_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env systemd-analyze python3 mount
C=$srcdir/contrib

# ---- systemd units
# verify runs `man ocifs(1)` for Documentation=: this tree's page, not an installed one
mkdir -p "$TESTDIR/man/man1"
ln -s "$srcdir/man/ocifs.1" "$TESTDIR/man/man1/ocifs.1"
export MANPATH=$TESTDIR/man:
for u in mnt-registry.mount mnt-registry.automount ocifs@.service; do
	f=$TESTDIR/$u
	[ "$u" = ocifs@.service ] && f=$TESTDIR/ocifs@mnt-registry.service
	cp "$C/systemd/$u" "$f"
	# verify complains about a missing ExecStart binary: point it at this build
	sed -i "s|/usr/local/bin/ocifs|$OCIFS|" "$f"
	out=$(systemd-analyze verify "$f" 2>&1)
	check "systemd-analyze verify $u: no complaint${out:+: $out}" test -z "$out"
done
check "the service waits for the mount (Type=forking) and reloads with a new server" \
	grep -q '^ExecReload=/usr/local/bin/ocifs --restart /%I' "$C/systemd/ocifs@.service"
check "stopping signals the keeper alone, which stops its server (KillMode=mixed)" \
	grep -qx 'KillMode=mixed' "$C/systemd/ocifs@.service"

# ---- fstab.example as systemd reads it: its generator makes the units,
# x-systemd.automount an automount unit (what systemd, as PID 1, would run)
GEN=$TESTDIR/generated
mkdir -p "$GEN"
gen=/lib/systemd/system-generators/systemd-fstab-generator
SYSTEMD_FSTAB=$C/fstab.example "$gen" "$GEN" "$GEN" "$GEN" 2>"$TESTDIR/gen.err"
check_eq "systemd-fstab-generator reads fstab.example" 0 "$?" || diag_file "$TESTDIR/gen.err"
check "x-systemd.automount,x-systemd.idle-timeout=600 make an automount unit, idle 10 min" \
	grep -qx 'TimeoutIdleSec=10min' "$GEN/mnt-registry.automount"
check "started with the remote file systems" test -e "$GEN/remote-fs.target.requires/mnt-registry.automount"
check "its mount unit is of type fuse.ocifs, with the line's options" \
	sh -c "grep -qx 'Type=fuse.ocifs' '$GEN/mnt-registry.mount' &&
		grep -q '^Options=ro,allow_other,_netdev' '$GEN/mnt-registry.mount'"
out=$(cd "$GEN" && systemd-analyze verify ./mnt-registry.mount ./mnt-registry.automount 2>&1)
check "systemd-analyze verify of the generated units: no complaint${out:+: $out}" test -z "$out"

# ---- fstab.example
registry_start contrib
W=$TESTDIR/w
mkdir -p "$W"
echo "weights" >"$W/model.bin"
push_artifact team/models v3 "$W" model.bin >/dev/null || bail "seed team/models:v3"
echo "key: value" >"$W/app.yaml"
push_artifact org/app v1 "$W" app.yaml >/dev/null || bail "seed org/app:v1"
mkdir -p "$TESTDIR/bin"
ln -s "$OCIFS" "$TESTDIR/bin/ocifs"
n=0
while read -r src dir type opts rest; do
	n=$((n + 1))
	[ "$type" = fuse.ocifs ] || { not_ok "line $n of fstab.example: type $type"; continue; }
	src=${src/registry.example.com/$REG}
	src=${src/ghcr.io/$REG}
	mnt=$TESTDIR/m$n
	mkdir -p "$mnt"
	opts=$(sed -E "s|cache_dir=[^,]*|cache_dir=$CACHE.$n|" <<<"$opts")
	[[ $opts == *cache_dir=* ]] || opts="$opts,cache_dir=$CACHE.$n"
	# mount(8) finds fuse.ocifs only installed: the same line as fuse PROGRAM#SOURCE
	printf '%s %s fuse %s %s\n' "$TESTDIR/bin/ocifs#$src" "$mnt" "$opts" "$rest" >"$TESTDIR/fstab"
	mount -T "$TESTDIR/fstab" "$mnt" >"$TESTDIR/mount.out" 2>&1
	check_eq "fstab.example line $n ($dir): mounts" 0 "$?" || diag_file "$TESTDIR/mount.out"
	pid=$(pgrep -f -- " $mnt" | head -n 1)
	[ -n "$pid" ] && _LIB_DAEMON_PIDS+=("$pid")
	case $dir in
	/mnt/registry)
		check_eq "line $n: the registry root, a tag's file reads" "weights" \
			"$(cat "$mnt/team/models/v3/model.bin" 2>&1)"
		check_err "line $n: read-only" "Read-only file system" mkdir "$mnt/team/models/v4" ;;
	/srv/models)
		check_eq "line $n: the repository's tags, owned by 1000" "v3 1000:1000" \
			"$(ls "$mnt") $(stat -c %u:%g "$mnt/v3/model.bin")"
		mkdir "$mnt/v4" && echo "new weights" >"$mnt/v4/model.bin" && sync "$mnt/v4"
		check_eq "line $n: writable: a new tag is pushed" "new weights" \
			"$(blob_get team/models "$(manifest_get team/models v4 | jq -r '.layers[0].digest')")" ;;
	/opt/app-config)
		check_ls "line $n: one tag, its files" "$mnt" app.yaml ;;
	*) not_ok "line $n: no check for $dir" ;;
	esac
	umount "$mnt"
done < <(grep -v '^#' "$C/fstab.example" | grep -v '^$')
check_eq "fstab.example has three lines, each tried" 3 "$n"

# ---- every option of --help is in the manual page and the README
missing=""
own_options() { "$OCIFS" --help 2>&1 | sed -n '/^ocifs options:/,/^FUSE options:/p' | grep -oE -- '-o [a-z_]+'; }
for o in $(own_options | cut -c4- | sort -u); do
	grep -q -- "$o" "$srcdir/man/ocifs.1" || missing="$missing man:$o"
	grep -q -- "$o" "$srcdir/README.md" || missing="$missing README:$o"
done
check_eq "every -o option of --help is documented in man/ocifs.1 and README.md" "" "$missing"
check "and there are options to check" test "$(own_options | wc -l)" -ge 20

# ---- Kubernetes
k8s=$(python3 - "$C/kubernetes" <<'PY'
import sys, yaml
d = sys.argv[1]
ds = yaml.safe_load(open(f"{d}/ocifs-daemonset.yaml"))
pod = yaml.safe_load(open(f"{d}/consumer-pod.yaml"))
c = ds["spec"]["template"]["spec"]["containers"][0]
mnt = [m for m in c["volumeMounts"] if m["mountPath"] == "/mnt/ocifs"][0]
vm = pod["spec"]["containers"][0]["volumeMounts"][0]
hp = [v for v in pod["spec"]["volumes"] if v["name"] == vm["name"]][0]["hostPath"]["path"]
print(ds["kind"], c["securityContext"]["privileged"], mnt["mountPropagation"],
      "allow_other" in " ".join(c["command"]), "-f" in c["command"],
      vm["mountPropagation"], vm["readOnly"], hp.startswith("/mnt/ocifs/"))
PY
)
check_eq "kubernetes: a privileged DaemonSet running ocifs -f -o ...allow_other, Bidirectional; pods bind read-only below it, HostToContainer" \
	"DaemonSet True Bidirectional True True HostToContainer True True" "$k8s"
finish

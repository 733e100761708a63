#!/bin/bash
# Image benchmark: one small file read out of a container image through the
# mount, cold, against pulling and unpacking the whole image (skopeo copy +
# umoci unpack), the way a user without ocifs gets at it; how fast a layer
# is indexed, against zcat of the same layer; and the small file again once
# the layers' indexes are published (-o publish_index): bytes fetched as a
# share of the image's compressed bytes, and time. Not a test: it prints
# figures and a summary block of ratios, and exits 0 unless the setup fails.
#
#   OCIFS=/path/to/ocifs srcdir=/path/to/ocifs-source bash tests/bench/rootfs.sh
#
# BENCH_ROOTFS_MB (default 500) sets the image's uncompressed size, spread
# over 5 layers of this machine's own ELF binaries (they gzip about 2.6:1).
#
# Ratios are peer time / ocifs time: above 1 means ocifs is faster.
T_TIMEOUT=${T_TIMEOUT:-1800}
REG_ACCESSLOG=1
: "${srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${OCIFS:=$srcdir/ocifs}"
export srcdir OCIFS
. "$srcdir/tests/integration/lib.sh"
require_env skopeo umoci sha256sum zcat file split
. "$srcdir/tests/bench/lib.sh"

MB=${BENCH_ROOTFS_MB:-500}
NL=5
PER=$((MB * 1024 * 1024 / NL))

# ---------------------------------------------------------------- setup
t_setup=$(now)
registry_start benchfs
say "# registry $REG, ocifs $OCIFS, image $MB MiB in $NL layers, $(nproc) cores"
W=$TESTDIR/w
L=$TESTDIR/layout
mkdir -p "$W"
# the binaries, MB MiB of them, cut into four big files a layer
find /usr/lib /usr/bin /usr/sbin /usr/libexec -type f -size +64k 2>/dev/null | xargs file |
	grep ELF | cut -d: -f1 | xargs cat 2>/dev/null | head -c $((MB * 1024 * 1024)) |
	split -a 3 -d -b $((PER / 4)) - "$W/piece."
layers=()
for i in $(seq 1 $NL); do
	d=$W/layer$i
	mkdir -p "$d/data$i"
	for k in 1 2 3 4; do
		p=$(printf '%s/piece.%03d' "$W" $(((i - 1) * 4 + k - 1)))
		[ -f "$p" ] || bail "not enough binaries here for $MB MiB"
		mv "$p" "$d/data$i/f$k.bin"
	done
	layers+=("$d")
done
# small files: /etc in the base layer, /app in the newest
mkdir -p "$W/layer1/etc" "$W/layer$NL/app"
printf 'ID=ocifs-bench\nVERSION_ID=1\n' >"$W/layer1/etc/os-release"
printf 'print("hello")\n' >"$W/layer$NL/app/main.py"
image_build "$L" v1 linux/amd64 "${layers[@]}" >>"$LOG" 2>&1 || bail "umoci build"
push_image "$L" v1 bench/fs v1 >/dev/null 2>>"$LOG" || bail "skopeo push image"
rm -rf "$L" "$W"
MF=$(manifest_get bench/fs v1)
zsize=$(jq '[.layers[].size] | add' <<<"$MF")
say "# image pushed: $(jq '.layers | length' <<<"$MF") layers, $((zsize / 1048576)) MiB compressed"
say "# setup took $(awk -v a="$t_setup" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s"
sync

M=$TESTDIR/mnt
C=$TESTDIR/c
I=$M/bench/fs/v1

# ---------------------------------------------------------------- 1. peer: pull and unpack all
say "## one small file, cold"
O=$TESTDIR/oci
U=$TESTDIR/bundle
peer() {
	rm -rf "$O" "$U"
	skopeo copy -q --src-tls-verify=false "docker://$REG/bench/fs:v1" "oci:$O:v1" &&
		umoci unpack --image "$O:v1" "$U" >/dev/null &&
		cat "$U/rootfs/etc/os-release" >/dev/null
}
tm peer
t_peer=$T
[ "$TRC" = 0 ] || say "# skopeo copy + umoci unpack failed: $TRC"
say "skopeo copy + umoci unpack + cat    ${T} s"
rm -rf "$O" "$U"
sync

# layers_fetched MARK: bytes of the image's layers the registry served since MARK,
# once the requests still running are logged
layers_fetched() {
	local d n=0
	reg_log_quiet 10
	for d in $(jq -r '.layers[].digest' <<<"$MF"); do
		n=$((n + $(served_bytes "$d" "$1")))
	done
	echo "$n"
}

# cold_small FILE: cat of FILE through an empty cache and a new mount (its
# manifest looked up first); $fetched the layers' bytes the registry served
# for it, $other the rest (manifests, referrers, published indexes)
cold_small() {
	local mark
	bmount "$C" "$M" -o ro${TRUST:+,index_trust=$TRUST}
	stat "$M/bench/fs/v1" >/dev/null
	mark=$(reg_log_mark)
	tm cat "$I/$1" >/dev/null
	[ "$TRC" = 0 ] || say "# ocifs cat $1 failed: $TRC"
	fetched=$(layers_fetched "$mark")
	other=$(tail -c +"$((mark + 1))" "$REG_ROOT/registry.log" |
		sed -En 's/.*"GET [^"]*" [0-9]{3} ([0-9]+) .*/\1/p' | awk -v f="$fetched" '{ s += $1 } END { print s - f }')
	bumount "$M"
}
cold_small app/main.py
t_top=$T
say "ocifs cat /app/main.py (newest layer) ${t_top} s, $((fetched / 1048576)) MiB fetched"
cold_small etc/os-release
t_base=$T
say "ocifs cat /etc/os-release (base)      ${t_base} s, $((fetched / 1048576)) MiB fetched"
setr small_file_newest_layer_vs_pull_unpack "$(ratio "$t_peer" "$t_top")"
setr small_file_base_layer_vs_pull_unpack "$(ratio "$t_peer" "$t_base")"


# ---------------------------------------------------------------- 2. index build vs zcat
say "## index build, the layer already in the cache"
# the cold read of /etc/os-release left every layer's blob in $C
HEX=$(jq -r '.layers[0].digest' <<<"$MF" | sed 's/^sha256://')
tarsize=$(zcat "$C/blobs/sha256/$HEX" | wc -c)
drop_caches
tm bash -c "zcat '$C/blobs/sha256/$HEX' >/dev/null"
t_zcat=$T
say "zcat of the base layer                $T s  $(mibs "$tarsize" "$T") MiB/s"
# indexes dropped, blobs kept; the 4 upper layers indexed first (a lookup of
# /data2 goes through them), then the base alone by the lookup of /etc
rm -f "$C"/layers/*.idx
drop_caches
OCIFS_CACHE=$C mount_ocifs "$REG" "$M" -o ro >>"$LOG" 2>&1 || bail "mount"
stat "$I/data2" >/dev/null
tm cat "$I/etc/os-release" >/dev/null
t_idx=$T
bumount "$M"
say "ocifs index of the base layer          $t_idx s  $(mibs "$tarsize" "$t_idx") MiB/s"
setr index_build_mibs "$(mibs "$tarsize" "$t_idx")"
setr zcat_mibs "$(mibs "$tarsize" "$t_zcat")"
setr index_build_vs_zcat "$(ratio "$t_zcat" "$t_idx")"
# ---------------------------------------------------------------- 3. published indexes
say "## one small file, cold, with the layers' indexes published"
# one mount indexes the layers and publishes the indexes as referrers, signed;
# the mounts after it trust that key (an index nobody trusts is not used)
sign_keygen bench || bail "openssl: a key pair"
bmount "$C" "$M" -o ro,publish_index,index_sign_key="$TESTDIR/bench.key"
TRUST=$TESTDIR/bench.pub
cat "$I/etc/os-release" >/dev/null
bumount "$M"
say "# published: $(manifest_get bench/fs "sha256-$(manifest_digest bench/fs v1 | sed 's/^sha256://')" |
	jq '[.manifests[] | select(.artifactType == "application/vnd.ocifs.layer.index.v1")] | length') indexes"
# every other mount, with an empty cache, fetches indexes and spans
RUNS=${BENCH_RUNS:-3}
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", 100 * a / b }'; }
for f in etc/os-release app/main.py; do
	pcts=() times=() ratios=()
	for ((r = 0; r < RUNS; r++)); do
		cold_small "$f"
		pcts+=("$(pct $((fetched + other)) "$zsize")")
		times+=("$T")
		ratios+=("$(ratio "$t_peer" "$T")")
		say "ocifs cat /$f, published indexes    ${T} s, layers $((fetched / 1024)) KiB + indexes and manifests $((other / 1024)) KiB = $(pct $((fetched + other)) "$zsize")% of the image"
	done
	k=$(basename "$f" | tr -c 'a-z0-9\n' _)
	sets "published_${k}_fetched_pct_of_image" "${pcts[@]}"
	sets "published_${k}_s" "${times[@]}"
	sets "published_${k}_vs_pull_unpack" "${ratios[@]}"
done
rm -rf "$C"

# ---------------------------------------------------------------- 4. podman, through the layer store
if command -v podman >/dev/null 2>&1; then
	say "## podman pull + image mount + cat /etc/os-release, cold"
	PS=$TESTDIR/podman
	# pull_cat ALS: a podman with an empty store pulls the image, mounts it and reads
	# the file; ALS: through ocifs's layer store (mounted, empty cache) or not
	pull_cat() {
		local mark mnt
		rm -rf "$PS" && mkdir -p "$PS"
		printf '[storage]\ndriver = "overlay"\nrunroot = "%s/run"\ngraphroot = "%s/graph"\n' "$PS" "$PS" >"$PS/storage.conf"
		if [ "$1" = 1 ]; then
			bmount "$C" "$M" -o index_trust="$TRUST"
			printf '[storage.options]\nadditionallayerstores = ["%s/.layers:ref"]\n' "$M" >>"$PS/storage.conf"
		fi
		mark=$(reg_log_mark)
		tm bash -c "export CONTAINERS_STORAGE_CONF='$PS/storage.conf'
			podman pull -q --tls-verify=false '$REG/bench/fs:v1' >/dev/null &&
			mnt=\$(podman image mount '$REG/bench/fs:v1') && cat \"\$mnt/etc/os-release\" >/dev/null"
		[ "$TRC" = 0 ] || say "# podman pull (store $1) failed: $TRC"
		fetched=$(layers_fetched "$mark")
		CONTAINERS_STORAGE_CONF=$PS/storage.conf podman image unmount -a >/dev/null 2>&1
		CONTAINERS_STORAGE_CONF=$PS/storage.conf podman rmi -af >/dev/null 2>&1
		[ "$1" = 1 ] && bumount "$M"
		rm -rf "$PS" "$C"
	}
	pt=() ot=() pr=()
	for ((r = 0; r < RUNS; r++)); do
		pull_cat 0
		pt+=("$T")
		say "podman pull + image mount + cat       ${T} s, $((fetched / 1048576)) MiB of layers fetched"
		pull_cat 1
		ot+=("$T")
		pr+=("$(ratio "${pt[-1]}" "$T")")
		say "the same through .layers/ of ocifs    ${T} s, $((fetched / 1024)) KiB of layers fetched (by ocifs)"
	done
	sets podman_pull_cat_s "${pt[@]}"
	sets podman_layer_store_pull_cat_s "${ot[@]}"
	sets podman_layer_store_vs_podman_pull "${pr[@]}"
else
	say "# podman not installed: no layer store figures"
fi
bench_summary

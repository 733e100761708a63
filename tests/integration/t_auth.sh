#!/bin/bash
# Registry authentication (DESIGN.md section 5): a registry with htpasswd
# (Basic) auth over TLS, and a registry with token (Bearer) auth and its
# token server. Credentials from -o auth_file, REGISTRY_AUTH_FILE,
# DOCKER_CONFIG, a credential helper; every form of an entry; wrong or no
# credentials give EACCES (and an artifact SOURCE does not mount); anonymous
# tokens for public repositories; tokens reused and renewed after a 401;
# secrets never in the daemon's log.
T_TIMEOUT=${T_TIMEOUT:-300}
. "${srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
require_env htpasswd openssl socat base32 timeout

# Only the credentials this test writes: none from the machine.
export HOME=$TESTDIR/home XDG_RUNTIME_DIR=$TESTDIR/run
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"
unset DOCKER_CONFIG REGISTRY_AUTH_FILE

NM=0
# amount SOURCE [OCIFS ARGS...]: mount_ocifs at a new mount point ($M) with
# a cache of its own (nothing read by an earlier mount is there).
amount() {
	local src=$1
	shift
	NM=$((NM + 1))
	M=$TESTDIR/m$NM
	OCIFS_CACHE=$TESTDIR/cache.$NM mount_ocifs "$src" "$M" "$@"
}

# check_mount_fails DESC SOURCE [OCIFS ARGS...]: ocifs exits non-zero with a
# one-line message, nothing mounted.
check_mount_fails() {
	local desc=$1 src=$2 mnt out rc n
	shift 2
	NM=$((NM + 1))
	mnt=$TESTDIR/m$NM
	out=$TESTDIR/mountfail.$NM.out
	mkdir -p "$mnt"
	timeout 60 "$OCIFS" -o "cache_dir=$TESTDIR/cache.$NM" "$@" "$src" "$mnt" >"$out" 2>&1 </dev/null
	rc=$?
	if mountpoint -q "$mnt"; then
		_LIB_MOUNTS+=("$mnt")
		not_ok "$desc" "ocifs mounted (exit status $rc)"
		fusermount3 -u "$mnt" 2>/dev/null
		return 1
	fi
	n=$(grep -c . "$out")
	if [ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$n" = 1 ]; then
		ok "$desc"
		diag "message: $(cat "$out")"
		return 0
	fi
	not_ok "$desc" "exit status $rc, $n lines of output:"
	diag_file "$out"
	return 1
}

# ================================================================ htpasswd
HUSER=alice
HPASS='Htp4ss-s3cret.word'
REG_TLS=1 registry_start_htpasswd "$HUSER" "$HPASS"
HREG=$REG
CA=$REG_CA

S=$TESTDIR/s
mkdir -p "$S/data"
printf 'Hello, authenticated world\n' >"$S/hello.txt"
make_random_file "$S/data/blob.bin" 1572869 auth
D1=$(push_artifact sec/files v1 "$S") || bail "seed sec/files:v1 (with credentials, over TLS)"
mkdir -p "$TESTDIR/o"
printf 'other\n' >"$TESTDIR/o/other.txt"
push_artifact sec/other v1 "$TESTDIR/o" >/dev/null || bail "seed sec/other:v1"
check_eq "htpasswd registry refuses anonymous requests (401)" 401 \
	"$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CA" "https://$HREG/v2/sec/files/tags/list")"

TLS="ro,ca_file=$CA"

# -o auth_file=, docker config.json form (auths[host].auth), with -d
F_AUTH=$TESTDIR/auth-docker.json
auth_add_auth "$F_AUTH" "$HREG" "$HUSER" "$HPASS"
if amount "$HREG" -d -o "$TLS,auth_file=$F_AUTH"; then
	LOG_H=$OCIFS_LOG
	check_ls "auth_file: root lists the catalog" "$M" sec
	check_ls "auth_file: sec/ lists its repositories" "$M/sec" files other
	check_ls "auth_file: sec/files lists its tag" "$M/sec/files" v1
	check_ls "auth_file: the artifact lists its files" "$M/sec/files/v1" data hello.txt
	check_same "auth_file: hello.txt bytes" "$S/hello.txt" "$M/sec/files/v1/hello.txt"
	check_same "auth_file: data/blob.bin bytes" "$S/data/blob.bin" "$M/sec/files/v1/data/blob.bin"
	check_eq "auth_file: sha256 of data/blob.bin" "$(sha256_hex "$S/data/blob.bin")" \
		"$(sha256sum <"$M/sec/files/v1/data/blob.bin" 2>&1 | cut -d' ' -f1)"
	check_eq "auth_file: .oci/digest is the pushed digest" "$D1" \
		"$(tr -d '\n' <"$M/sec/files/v1/.oci/digest" 2>&1)"
	check_eq "auth_file: size of data/blob.bin" 1572869 "$(stat -c %s "$M/sec/files/v1/data/blob.bin" 2>&1)"
	umount_ocifs "$M"
	check_no_secrets "htpasswd, -d: no password or Authorization in the log" "$LOG_H" \
		"$HPASS" "$(auth_b64 "$HUSER" "$HPASS")"
fi

# an artifact SOURCE with the right credentials
if amount "$HREG/sec/files:v1" -o "$TLS,auth_file=$F_AUTH"; then
	check_same "auth_file, artifact SOURCE: hello.txt bytes" "$S/hello.txt" "$M/hello.txt"
	umount_ocifs "$M"
fi

# TLS: -o insecure instead of the CA; neither: the certificate is not trusted
if amount "$HREG" -o "ro,insecure,auth_file=$F_AUTH"; then
	check_same "-o insecure (certificate not verified): hello.txt bytes" "$S/hello.txt" \
		"$M/sec/files/v1/hello.txt"
	umount_ocifs "$M"
fi
check_mount_fails "without ca_file or insecure: an unknown CA is refused (one line, non-zero)" \
	"$HREG/sec/files:v1" -o "ro,auth_file=$F_AUTH"
# the loopback registry is first asked whether it speaks TLS without checking its
# certificate: the check that follows is what refuses it, and says why
check "and the line says the certificate is not trusted" \
	grep -q "TLS certificate not trusted" "$TESTDIR/mountfail.$NM.out"

# REGISTRY_AUTH_FILE, key written as https://host/
F_REGAUTH=$TESTDIR/regauth.json
auth_add_auth "$F_REGAUTH" "https://$HREG/" "$HUSER" "$HPASS"
if REGISTRY_AUTH_FILE=$F_REGAUTH amount "$HREG" -o "$TLS"; then
	check_ls "REGISTRY_AUTH_FILE (key https://host/): sec/files lists its tag" "$M/sec/files" v1
	check_same "REGISTRY_AUTH_FILE: hello.txt bytes" "$S/hello.txt" "$M/sec/files/v1/hello.txt"
	umount_ocifs "$M"
fi

# containers auth.json under XDG_RUNTIME_DIR
containers_auth_write "$XDG_RUNTIME_DIR/containers/auth.json" "$HREG" "$HUSER" "$HPASS"
if amount "$HREG" -o "$TLS"; then
	check_same "\$XDG_RUNTIME_DIR/containers/auth.json: hello.txt bytes" "$S/hello.txt" \
		"$M/sec/files/v1/hello.txt"
	umount_ocifs "$M"
fi
rm -rf "$XDG_RUNTIME_DIR/containers"

# DOCKER_CONFIG, key written as http://host
DC=$TESTDIR/dockercfg
auth_add_auth "$DC/config.json" "http://$HREG" "$HUSER" "$HPASS"
if DOCKER_CONFIG=$DC amount "$HREG" -o "$TLS"; then
	check_same "DOCKER_CONFIG (key http://host): hello.txt bytes" "$S/hello.txt" "$M/sec/files/v1/hello.txt"
	umount_ocifs "$M"
fi

# ~/.docker/config.json
docker_config_write "$HOME/.docker" "$HREG" "$HUSER" "$HPASS"
if amount "$HREG" -o "$TLS"; then
	check_same "\$HOME/.docker/config.json: hello.txt bytes" "$S/hello.txt" "$M/sec/files/v1/hello.txt"
	umount_ocifs "$M"
fi
rm -rf "$HOME/.docker"

# the first file with an entry for the host wins; a file without one is skipped
F_ELSE=$TESTDIR/elsewhere.json
auth_add_auth "$F_ELSE" "registry.example.com:5000" "$HUSER" "wrong"
if REGISTRY_AUTH_FILE=$F_ELSE DOCKER_CONFIG=$DC amount "$HREG" -o "$TLS"; then
	check_same "REGISTRY_AUTH_FILE without an entry for the host: DOCKER_CONFIG's is used" \
		"$S/hello.txt" "$M/sec/files/v1/hello.txt"
	umount_ocifs "$M"
fi
F_BAD=$TESTDIR/auth-bad.json
auth_add_auth "$F_BAD" "$HREG" "$HUSER" "not-the-password"
if REGISTRY_AUTH_FILE=$F_BAD amount "$HREG" -o "$TLS,auth_file=$F_AUTH"; then
	check_same "-o auth_file wins over REGISTRY_AUTH_FILE" "$S/hello.txt" "$M/sec/files/v1/hello.txt"
	umount_ocifs "$M"
fi

# username/password form
F_UP=$TESTDIR/auth-userpass.json
auth_add_userpass "$F_UP" "$HREG" "$HUSER" "$HPASS"
if amount "$HREG" -o "$TLS,auth_file=$F_UP"; then
	check_same "auths username/password form: data/blob.bin bytes" "$S/data/blob.bin" \
		"$M/sec/files/v1/data/blob.bin"
	umount_ocifs "$M"
fi

# credHelpers with a helper on PATH
cred_helper_install test
cred_helper_add test "$HREG" "$HUSER" "$HPASS"
HC=$TESTDIR/helpercfg
auth_add_helper "$HC/config.json" "$HREG" test
auth_add_auth "$HC/config.json" "$HREG" "$HUSER" "not-the-password"
if PATH=$CRED_HELPER_BIN:$PATH DOCKER_CONFIG=$HC amount "$HREG" -d -o "$TLS"; then
	check_same "credHelpers (wins over auths): hello.txt bytes" "$S/hello.txt" "$M/sec/files/v1/hello.txt"
	check "credHelpers: docker-credential-test was asked 'get' for the host" \
		grep -qE "^get (https?://)?$HREG/?$" "$CRED_HELPER_BIN/test.log" ||
		diag_file "$CRED_HELPER_BIN/test.log"
	umount_ocifs "$M"
	check_no_secrets "credential helper, -d: no password in the log" "$OCIFS_LOG" "$HPASS" \
		"$(auth_b64 "$HUSER" "$HPASS")"
fi

# credsStore with the helper, for a host it does not know: no credentials
HS=$TESTDIR/storecfg
auth_set_store "$HS/config.json" test
: >"$CRED_HELPER_BIN/test.log"
: >"$CRED_HELPER_BIN/test.db"
if PATH=$CRED_HELPER_BIN:$PATH DOCKER_CONFIG=$HS amount "$HREG" -o "$TLS"; then
	check_err "credsStore whose helper has nothing for the host: EACCES" "Permission denied" \
		cat "$M/sec/files/v1/hello.txt"
	check "credsStore: the helper was asked" grep -q "^get " "$CRED_HELPER_BIN/test.log"
	umount_ocifs "$M"
fi
cred_helper_add test "$HREG" "$HUSER" "$HPASS"
if PATH=$CRED_HELPER_BIN:$PATH DOCKER_CONFIG=$HS amount "$HREG" -o "$TLS"; then
	check_same "credsStore: hello.txt bytes" "$S/hello.txt" "$M/sec/files/v1/hello.txt"
	umount_ocifs "$M"
fi

# wrong password
if amount "$HREG" -o "$TLS,auth_file=$F_BAD"; then
	check_err "wrong password: ls of a repository is EACCES" "Permission denied" ls "$M/sec/files"
	check_err "wrong password: cat of a file is EACCES" "Permission denied" cat "$M/sec/files/v1/hello.txt"
	check "wrong password: the daemon still serves its root" daemon_alive "$M"
	check_eq "wrong password: one error line in the log" 1 "$(grep -c 'error:' "$OCIFS_LOG")"
	check "wrong password: and it says so" \
		grep -q "$HREG: the registry refuses the credentials found (401): check them" "$OCIFS_LOG"
	umount_ocifs "$M"
fi
check_mount_fails "wrong password: artifact SOURCE does not mount (one line, non-zero)" \
	"$HREG/sec/files:v1" -o "$TLS,auth_file=$F_BAD"

# namespaced auths keys: the most specific key naming the repository wins
F_NS=$TESTDIR/auth-ns.json
auth_add_auth "$F_NS" "$HREG" "$HUSER" "wrong-for-the-host"
auth_add_auth "$F_NS" "$HREG/sec/files" "$HUSER" "$HPASS"
auth_add_auth "$F_NS" "$HREG/sec/files/deeper" "$HUSER" "wrong-for-deeper"
if amount "$HREG" -d -o "$TLS,auth_file=$F_NS"; then
	check_same "key host/sec/files: sec/files/v1/hello.txt reads" "$S/hello.txt" \
		"$M/sec/files/v1/hello.txt"
	check_err "key host (wrong password) for sec/other: EACCES" "Permission denied" \
		cat "$M/sec/other/v1/other.txt"
	check "the log names the key's repository" grep -q "$HREG/sec/files: credentials from" "$OCIFS_LOG"
	umount_ocifs "$M"
	check_no_secrets "namespaced keys, -d: no password in the log" "$OCIFS_LOG" "$HPASS"
fi
F_NS2=$TESTDIR/auth-ns2.json
auth_add_auth "$F_NS2" "https://$HREG/" "$HUSER" "wrong-for-the-host"
auth_add_auth "$F_NS2" "$HREG/sec" "$HUSER" "$HPASS"
auth_add_auth "$F_NS2" "$HREG/se" "$HUSER" "wrong-for-a-prefix-that-is-no-namespace"
if amount "$HREG" -o "$TLS,auth_file=$F_NS2"; then
	check_same "key host/sec: sec/files reads" "$S/hello.txt" "$M/sec/files/v1/hello.txt"
	check_eq "key host/sec: sec/other reads" "other" "$(cat "$M/sec/other/v1/other.txt" 2>&1)"
	umount_ocifs "$M"
fi

# no credentials at all
if amount "$HREG" -o "$TLS"; then
	check_err "no credentials: ls of a repository is EACCES" "Permission denied" ls "$M/sec/files"
	check_err "no credentials: cat of a file is EACCES" "Permission denied" cat "$M/sec/files/v1/hello.txt"
	umount_ocifs "$M"
fi
check_mount_fails "no credentials: artifact SOURCE does not mount (one line, non-zero)" \
	"$HREG/sec/files:v1" -o "$TLS"

# ================================================================ token
TUSER=bob
TPASS='T0ken-s3cret.word'
reg_auth_clear
registry_start_token "$TUSER" "$TPASS"
TREG=$REG

P=$TESTDIR/pub
mkdir -p "$P"
for i in 1 2 3 4 5 6; do printf 'public file %d\n' "$i" >"$P/f$i.txt"; done
with_reg_token public/hello push_artifact public/hello v1 "$P" >/dev/null || bail "seed public/hello:v1"
Q=$TESTDIR/priv
mkdir -p "$Q"
printf 'the secret\n' >"$Q/secret.txt"
for i in 1 2 3 4 5 6; do printf 'private file %d\n' "$i" >"$Q/p$i.txt"; done
make_random_file "$Q/big.bin" 2097161 priv
DP=$(with_reg_token private/secret push_artifact private/secret v1 "$Q") || bail "seed private/secret:v1"

tok=$(reg_token - repository:public/hello:pull)
check_eq "token registry: an anonymous token reads a public manifest" 200 \
	"$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tok" \
		-H "Accept: $MT_OCI_MANIFEST" "http://$TREG/v2/public/hello/manifests/v1")"
tok=$(reg_token - repository:private/secret:pull)
check_eq "token registry: an anonymous token does not read a private manifest" 401 \
	"$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tok" \
		-H "Accept: $MT_OCI_MANIFEST" "http://$TREG/v2/private/secret/manifests/v1")"

# anonymous
mark=$(token_log_mark)
if amount "$TREG" -d -o ro; then
	LOG_A=$OCIFS_LOG
	check_ls "anonymous: public/hello lists its tag" "$M/public/hello" v1
	for i in 1 2 3; do
		check_same "anonymous: public/hello/v1/f$i.txt bytes" "$P/f$i.txt" "$M/public/hello/v1/f$i.txt"
	done
	check_err "anonymous: ls of a private repository is EACCES" "Permission denied" ls "$M/private/secret"
	check_err "anonymous: cat of a private file is EACCES" "Permission denied" \
		cat "$M/private/secret/v1/secret.txt"
	umount_ocifs "$M"
	check_no_secrets "anonymous, -d: no token in the log" "$LOG_A"
fi
if amount "$TREG/public/hello" -o ro; then
	for i in 1 2 3 4 5 6; do
		check_same "anonymous, repository SOURCE: v1/f$i.txt bytes" "$P/f$i.txt" "$M/v1/f$i.txt"
	done
	umount_ocifs "$M"
fi
check_eq "anonymous: no credentials sent to the token server" 0 \
	"$(token_requests "$mark" 'basic=(yes|bad|other)|oauth=')" || diag "$(token_log_since "$mark")"
mark=$(token_log_mark)
if amount "$TREG/public/hello:v1" -o ro; then
	for i in 1 2 3 4 5 6; do
		check_same "anonymous, artifact SOURCE: f$i.txt bytes" "$P/f$i.txt" "$M/f$i.txt"
	done
	n=$(token_requests "$mark" 'scope=repository:public/hello:pull')
	check "anonymous: the token is reused (1 to 3 token requests for 6 files, got $n)" \
		test "$n" -ge 1 -a "$n" -le 3 || diag "$(token_log_since "$mark")"
	umount_ocifs "$M"
fi
check_mount_fails "anonymous: private artifact SOURCE does not mount (one line, non-zero)" \
	"$TREG/private/secret:v1" -o ro

# ---- token lifetimes: a token that says it lives 2 s is given the spec's
# floor, 60 s (at full scale: no wait of a minute is needed to see it kept),
# or what -o token_min_ttl= says; then it is renewed before it runs out
token_server_ttl 2
for floor in default 2; do
	opts=ro
	[ "$floor" = default ] || opts=ro,token_min_ttl=$floor
	mark=$(token_log_mark)
	if amount "$TREG/public/hello:v1" -o "$opts"; then
		check_same "expires_in 2, token_min_ttl $floor: f1.txt bytes" "$P/f1.txt" "$M/f1.txt"
		n1=$(token_requests "$mark" 'scope=repository:public/hello:pull')
		# past the token's own 2 s lifetime (renewal at half of a floor of 2)
		sleep 2.5
		check_same "expires_in 2, token_min_ttl $floor: f2.txt bytes, 2.5 s later" "$P/f2.txt" "$M/f2.txt"
		n2=$(token_requests "$mark" 'scope=repository:public/hello:pull')
		if [ "$floor" = default ]; then
			check_eq "expires_in 2 is taken as 60 s: the token is reused ($n1 then $n2 requests)" \
				"$n1" "$n2" || diag "$(token_log_since "$mark")"
		else
			check "token_min_ttl=2: the token was renewed ($n1 then $n2 requests)" \
				test "$n2" -gt "$n1" || diag "$(token_log_since "$mark")"
		fi
		umount_ocifs "$M"
	fi
done
token_server_ttl 300

# with credentials
F_TOK=$TESTDIR/auth-token.json
auth_add_auth "$F_TOK" "$TREG" "$TUSER" "$TPASS"
mark=$(token_log_mark)
if amount "$TREG" -d -o "ro,auth_file=$F_TOK"; then
	LOG_T=$OCIFS_LOG
	check_ls "credentials: root lists the catalog" "$M" private public
	check_ls "credentials: private/secret lists its tag" "$M/private/secret" v1
	check_same "credentials: private secret.txt bytes" "$Q/secret.txt" "$M/private/secret/v1/secret.txt"
	for i in 1 2 3 4; do
		cat "$M/private/secret/v1/p$i.txt" >"$TESTDIR/p$i.got" 2>&1
	done
	check "credentials: four more private files read right" bash -c \
		"for i in 1 2 3 4; do cmp -s '$Q/p'\$i.txt '$TESTDIR/p'\$i.got || exit 1; done"
	check_same "credentials: private big.bin bytes" "$Q/big.bin" "$M/private/secret/v1/big.bin"
	check_eq "credentials: .oci/digest is the pushed digest" "$DP" \
		"$(tr -d '\n' <"$M/private/secret/v1/.oci/digest" 2>&1)"
	n=$(token_requests "$mark" 'scope=repository:private/secret:pull')
	check "credentials: the token is reused (1 to 3 token requests for 6 files, got $n)" \
		test "$n" -ge 1 -a "$n" -le 3 || diag "$(token_log_since "$mark")"
	check_eq "credentials: every token request carries them" 0 \
		"$(token_requests "$mark" 'basic=(no|bad|other)')" || diag "$(token_log_since "$mark")"
	check_same "credentials: public f2.txt bytes" "$P/f2.txt" "$M/public/hello/v1/f2.txt"

	# tokens refused from now on (new signing key): one new challenge, and on
	if token_server_rotate_key; then
		mark=$(token_log_mark)
		check_same "after the registry refuses the cached token: p5.txt reads" "$Q/p5.txt" \
			"$M/private/secret/v1/p5.txt"
		check_same "and p6.txt through its digest directory" "$Q/p6.txt" "$M/private/secret/$DP/p6.txt"
		n=$(token_requests "$mark")
		check "after a refused token: a new token was asked for ($n requests)" test "$n" -ge 1
	else
		not_ok "restart the token registry with a new signing key"
	fi
	umount_ocifs "$M"
	check_no_secrets "token registry, -d: no password, token or Authorization in the log" "$LOG_T" \
		"$TPASS" "$(auth_b64 "$TUSER" "$TPASS")"
fi
check "the token server never logged a password" bash -c "! grep -qF -- '$TPASS' '$TOKEN_LOG'"

# pushing: the token server grants push to the user, pull only to anonymous
printf 'pushed with a token\n' >"$TESTDIR/pushed.txt"
if amount "$TREG" -o "timeout=3"; then
	mkdir "$M/public/hello/anon" 2>/dev/null
	check_err "anonymous push: the upload at close is refused (EACCES)" "Permission denied" \
		cp "$TESTDIR/pushed.txt" "$M/public/hello/anon/pushed.txt"
	umount_ocifs "$M"
	check_eq "anonymous push: no tag appeared" 404 "$(with_reg_token public/hello \
		_rcurl -s -o /dev/null -w '%{http_code}' -H "Accept: $MT_OCI_MANIFEST" \
		"$REG_SCHEME://$TREG/v2/public/hello/manifests/anon")"
fi
mark=$(token_log_mark)
if amount "$TREG" -d -o "auth_file=$F_TOK"; then
	mkdir "$M/public/hello/v2" &&
		cp "$TESTDIR/pushed.txt" "$M/public/hello/v2/pushed.txt" && sync "$M/public/hello/v2"
	check_eq "credentials: cp and sync into a new tag succeed" 0 "$?"
	check "credentials: the push asked for pull,push" \
		grep -q 'scope=repository:public/hello:pull,push' <(token_log_since "$mark")
	umount_ocifs "$M"
	check_eq "credentials: the registry has the pushed file under the new tag" \
		"$(sha256_hex "$TESTDIR/pushed.txt")" \
		"$(with_reg_token public/hello manifest_get public/hello v2 | jq -r '.layers[0].digest' | cut -d: -f2)"
	check_no_secrets "token push, -d: no password, token or Authorization in the log" "$OCIFS_LOG" \
		"$TPASS" "$(auth_b64 "$TUSER" "$TPASS")"
fi

# an OAuth2 refresh token (identitytoken) instead of a password
F_ID=$TESTDIR/auth-identity.json
auth_add_identitytoken "$F_ID" "$TREG" "$TOKEN_REFRESH"
mark=$(token_log_mark)
if amount "$TREG" -d -o "ro,auth_file=$F_ID"; then
	check_same "identitytoken: private secret.txt bytes" "$Q/secret.txt" "$M/private/secret/v1/secret.txt"
	token_log_since "$mark" >"$TESTDIR/tokreq.id"
	check "identitytoken: tokens come from the OAuth2 POST with the refresh token" \
		grep -q "POST /token oauth=refresh_token:ok" "$TESTDIR/tokreq.id" || diag_file "$TESTDIR/tokreq.id"
	umount_ocifs "$M"
	check_no_secrets "identitytoken, -d: no refresh token in the log" "$OCIFS_LOG" "$TOKEN_REFRESH"
fi

# wrong password: the token server refuses
F_TBAD=$TESTDIR/auth-token-bad.json
auth_add_auth "$F_TBAD" "$TREG" "$TUSER" "not-the-password"
if amount "$TREG" -o "ro,auth_file=$F_TBAD"; then
	check_err "token registry, wrong password: cat of a private file is EACCES" "Permission denied" \
		cat "$M/private/secret/v1/secret.txt"
	check_err "token registry, wrong password: and ls of it" "Permission denied" ls "$M/private/secret"
	check_same "token registry, wrong password: public content still reads (anonymously)" \
		"$P/f1.txt" "$M/public/hello/v1/f1.txt"
	check_eq "token registry, wrong password: one error line in the log" 1 \
		"$(grep -c 'error:' "$OCIFS_LOG")"
	umount_ocifs "$M"
fi

# every cache the auth tests used (blobs, manifests, staged pushes): no secret in any file
check "no password, token or Authorization in any cache directory" bash -c \
	"! grep -rqlF -e '$HPASS' -e '$TPASS' -e '$(auth_b64 "$HUSER" "$HPASS")' -e 'eyJ0eXAiOiJKV1Qi' \
		'$TESTDIR'/cache.* '$CACHE'"
finish

#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/evp.h>

#include "auth.h"
#include "buf.h"
#include "http.h"
#include "log.h"

#define CRED_FILE_MAX (1024 * 1024)
#define HELPER_OUT_MAX (64 * 1024)
#define TOKEN_ANSWER_MAX (1024 * 1024)

/* Set before any thread starts (main or a test), read after. */
static unsigned helper_timeout_ms = AUTH_HELPER_TIMEOUT_MS;
static unsigned token_min_ttl = AUTH_TOKEN_MIN_TTL;

/*
 * "NAME\nHOST" of each helper that timed out for a host: not run for it
 * again, so that a stuck helper costs one wait per host, not one per
 * repository. Protects: stuck_list. Never held across running a helper.
 */
static pthread_mutex_t stuck_lock = PTHREAD_MUTEX_INITIALIZER;
static struct stuck {
	struct stuck *next;
	char key[];
} * stuck_list;

void auth_set_helper_timeout(unsigned ms)
{
	helper_timeout_ms = ms ? ms : AUTH_HELPER_TIMEOUT_MS;
}

void auth_set_token_min_ttl(unsigned secs)
{
	token_min_ttl = secs ? secs : AUTH_TOKEN_MIN_TTL;
}

static bool helper_stuck(const char *name, const char *host, bool add)
{
	size_t nl = strlen(name), hl = strlen(host);
	struct stuck *e;
	bool found = false;

	pthread_mutex_lock(&stuck_lock);
	for (e = stuck_list; e && !found; e = e->next)
		found = strncmp(e->key, name, nl) == 0 && e->key[nl] == '\n' &&
			strcmp(e->key + nl + 1, host) == 0;
	if (!found && add) {
		e = malloc(sizeof(*e) + nl + hl + 2);
		if (e) {
			memcpy(e->key, name, nl);
			e->key[nl] = '\n';
			memcpy(e->key + nl + 1, host, hl + 1);
			e->next = stuck_list;
			stuck_list = e;
		}
	}
	pthread_mutex_unlock(&stuck_lock);
	return found;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void credentials_release(struct credentials *c)
{
	/* Secrets do not linger in freed memory. */
	if (c->password)
		OPENSSL_cleanse(c->password, strlen(c->password));
	if (c->identity_token)
		OPENSSL_cleanse(c->identity_token, strlen(c->identity_token));
	free(c->username);
	free(c->password);
	free(c->identity_token);
	c->username = c->password = c->identity_token = NULL;
}

void challenge_release(struct challenge *c)
{
	free(c->scheme);
	free(c->realm);
	free(c->service);
	free(c->scope);
	c->scheme = c->realm = c->service = c->scope = NULL;
}

/* One token or quoted string at *p; advances *p. malloc'd, or NULL at the end. */
static char *take_value(const char **p)
{
	struct buf b = BUF_INIT;
	const char *s = *p;

	if (*s == '"') {
		for (s++; *s && *s != '"'; s++) {
			if (*s == '\\' && s[1])
				s++;
			if (buf_add(&b, s, 1))
				goto out_err;
		}
		if (*s == '"')
			s++;
	} else {
		while (*s && *s != ',' && *s != ' ' && *s != '\t')
			if (buf_add(&b, s++, 1))
				goto out_err;
	}
	*p = s;
	return buf_take(&b);

out_err:
	buf_release(&b);
	return NULL;
}

int auth_parse_challenge(const char *value, struct challenge *out)
{
	const char *p = value;
	size_t n;

	memset(out, 0, sizeof(*out));
	while (*p == ' ' || *p == '\t')
		p++;
	n = strcspn(p, " \t");
	if (!n)
		return -EINVAL;
	out->scheme = strndup(p, n);
	if (!out->scheme)
		return -ENOMEM;
	for (char *c = out->scheme; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	p += n;
	while (*p) {
		char key[32], *val;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			break; /* trailing separators: stepping on would pass the end */
		n = strcspn(p, "= \t,");
		if (!n || p[n] != '=') {
			p += n ? n : 1;
			continue;
		}
		snprintf(key, sizeof(key), "%.*s", (int)(n < sizeof(key) ? n : sizeof(key) - 1), p);
		p += n + 1;
		val = take_value(&p);
		if (!val) {
			challenge_release(out);
			return -ENOMEM;
		}
		if (strcasecmp(key, "realm") == 0 && !out->realm)
			out->realm = val;
		else if (strcasecmp(key, "service") == 0 && !out->service)
			out->service = val;
		else if (strcasecmp(key, "scope") == 0 && !out->scope)
			out->scope = val;
		else
			free(val);
	}
	return 0;
}

static bool is_docker_hub(const char *host)
{
	return strcmp(host, "registry-1.docker.io") == 0 || strcmp(host, "docker.io") == 0 ||
	       strcmp(host, "index.docker.io") == 0;
}

/*
 * How well a credentials key names repo at host: -1 not at all, 0 for the
 * host alone, else 1 + the length of the namespace it names ("host/ns"
 * matches "ns" and "ns/..."), so that the most specific key wins. Keys in URL
 * form ("https://host/v1/", "http://host") name the host alone, as docker
 * wrote them; Docker Hub answers to all of its names. repo NULL: host keys only.
 */
static int key_match(const char *key, const char *host, const char *repo)
{
	const char *k = key, *slash;
	bool url = false;
	char khost[256];
	size_t hl, nl;

	if (strncmp(k, "https://", 8) == 0) {
		k += 8;
		url = true;
	} else if (strncmp(k, "http://", 7) == 0) {
		k += 7;
		url = true;
	}
	slash = strchr(k, '/');
	hl = slash ? (size_t)(slash - k) : strlen(k);
	if (hl == 0 || hl >= sizeof(khost))
		return -1;
	memcpy(khost, k, hl);
	khost[hl] = '\0';
	if (strcmp(khost, host) != 0 && !(is_docker_hub(khost) && is_docker_hub(host)))
		return -1;
	if (url || !slash)
		return 0;
	k = slash + 1;
	nl = strlen(k);
	while (nl > 0 && k[nl - 1] == '/')
		nl--;
	if (nl == 0)
		return 0;
	if (!repo || strncmp(repo, k, nl) != 0 || (repo[nl] != '\0' && repo[nl] != '/'))
		return -1;
	return (int)nl + 1;
}

static int decode_auth(const char *b64, struct credentials *out)
{
	size_t len = strlen(b64);
	unsigned char *raw = malloc(len + 1);
	int n;
	char *colon;

	if (!raw)
		return -ENOMEM;
	n = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)len);
	if (n < 0) {
		free(raw);
		return -EBADMSG;
	}
	/* EVP_DecodeBlock counts '=' padding as zero bytes. */
	while (n > 0 && len > 0 && b64[len - 1] == '=') {
		n--;
		len--;
	}
	raw[n] = '\0';
	colon = strchr((char *)raw, ':');
	if (!colon) {
		OPENSSL_cleanse(raw, (size_t)n);
		free(raw);
		return -EBADMSG;
	}
	*colon = '\0';
	out->username = strdup((char *)raw);
	out->password = strdup(colon + 1);
	OPENSSL_cleanse(raw, (size_t)n);
	free(raw);
	return out->username && out->password ? 0 : -ENOMEM;
}

static int creds_from_auths_entry(struct json_object *e, struct credentials *out)
{
	struct json_object *v;
	int ret = -ENOENT;

	if (json_object_object_get_ex(e, "auth", &v) && json_object_is_type(v, json_type_string) &&
		json_object_get_string_len(v) > 0)
		ret = decode_auth(json_object_get_string(v), out);
	if (ret == -ENOENT && json_object_object_get_ex(e, "username", &v) &&
		json_object_is_type(v, json_type_string)) {
		struct json_object *pw;

		out->username = strdup(json_object_get_string(v));
		if (json_object_object_get_ex(e, "password", &pw) &&
			json_object_is_type(pw, json_type_string))
			out->password = strdup(json_object_get_string(pw));
		ret = out->username ? 0 : -ENOMEM;
	}
	if (json_object_object_get_ex(e, "identitytoken", &v) &&
		json_object_is_type(v, json_type_string) && json_object_get_string_len(v) > 0) {
		out->identity_token = strdup(json_object_get_string(v));
		ret = out->identity_token ? 0 : -ENOMEM;
	}
	if (ret)
		credentials_release(out);
	return ret;
}

/*
 * Read the helper's answer from fd into b until it closes its end, for
 * helper_timeout_ms at most. 0, or -ETIMEDOUT.
 */
static int helper_read(int fd, struct buf *b)
{
	long long deadline = now_ms() + helper_timeout_ms;

	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		long long left = deadline - now_ms();
		char chunk[4096];
		ssize_t n;
		int r;

		if (left <= 0)
			return -ETIMEDOUT;
		r = poll(&pfd, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			return -ETIMEDOUT;
		if (r < 0)
			return 0; /* the exit status tells */
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || b->len + (size_t)n > HELPER_OUT_MAX)
			return 0;
		if (buf_add(b, chunk, (size_t)n))
			return 0;
	}
}

/*
 * Run docker-credential-NAME get with host on stdin; parse its JSON answer.
 * The helper runs in a process group of its own and gets helper_timeout_ms
 * to answer: then the whole group is killed (a script's children too), so
 * that a stuck helper costs one bounded wait and leaves nothing behind.
 */
static int creds_from_helper(const char *name, const char *host, struct credentials *out)
{
	int in[2], outp[2], status = 0, ret = -ENOENT, rd;
	char prog[128];
	struct buf b = BUF_INIT;
	struct json_object *root = NULL, *u, *s;
	pid_t pid;

	if (!*name || strchr(name, '/') || strlen(name) > 64)
		return -EINVAL;
	snprintf(prog, sizeof(prog), "docker-credential-%s", name);
	if (helper_stuck(name, host, false)) {
		log_debug("%s: credential helper %s timed out before: not run again", host, prog);
		return -ETIMEDOUT;
	}
	if (pipe2(in, O_CLOEXEC))
		return -errno;
	if (pipe2(outp, O_CLOEXEC)) {
		close(in[0]);
		close(in[1]);
		return -errno;
	}
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		goto out_pipes;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		sigset_t none;

		/*
		 * The daemon's threads block SIGTERM and SIGHUP, and a mask
		 * survives exec: the helper gets the defaults, so that it can be
		 * stopped like any program.
		 */
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		setpgid(0, 0);
		dup2(in[0], 0);
		dup2(outp[1], 1);
		if (null >= 0)
			dup2(null, 2);
		execlp(prog, prog, "get", (char *)NULL);
		_exit(127);
	}
	/* Both sides set the group: whichever runs first, the kill below finds it. */
	setpgid(pid, pid);
	close(in[0]);
	close(outp[1]);
	in[0] = outp[1] = -1;
	{
		/* A helper that exits without reading must not kill us. */
		struct sigaction sa = { .sa_handler = SIG_IGN }, old;

		sigaction(SIGPIPE, &sa, &old);
		/* A host name fits in the pipe's buffer: this does not block. */
		if (write(in[1], host, strlen(host)) < 0) {
			/* the exit status tells */
		}
		sigaction(SIGPIPE, &old, NULL);
	}
	close(in[1]);
	in[1] = -1;
	rd = helper_read(outp[0], &b);
	close(outp[0]);
	outp[0] = -1;
	if (rd == -ETIMEDOUT) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (rd == -ETIMEDOUT) {
		log_err("%s: credential helper %s timed out after %u ms: killed; going on "
			"without its credentials, and not running it for this host again",
			host, prog, helper_timeout_ms);
		helper_stuck(name, host, true);
		ret = -ETIMEDOUT;
		goto out;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		/* "credentials not found" is no error: there are simply none */
		if (!(b.data && strstr(b.data, "not found")))
			log_warn("%s: credential helper %s failed", host, prog);
		goto out;
	}
	root = b.data ? json_tokener_parse(b.data) : NULL;
	if (!root || !json_object_object_get_ex(root, "Username", &u) ||
		!json_object_object_get_ex(root, "Secret", &s)) {
		log_warn("%s: credential helper %s gave no credentials", host, prog);
		goto out;
	}
	/* "<token>" as the user name means the secret is an identity token. */
	if (strcmp(json_object_get_string(u), "<token>") == 0) {
		out->identity_token = strdup(json_object_get_string(s));
		ret = out->identity_token ? 0 : -ENOMEM;
	} else {
		out->username = strdup(json_object_get_string(u));
		out->password = strdup(json_object_get_string(s));
		ret = out->username && out->password ? 0 : -ENOMEM;
	}
out:
	json_object_put(root);
	if (b.data)
		OPENSSL_cleanse(b.data, b.len);
	buf_release(&b);
	if (ret)
		credentials_release(out);
	return ret;
out_pipes:
	close(in[0]);
	close(in[1]);
	close(outp[0]);
	close(outp[1]);
	return ret;
}

int auth_credentials_from_json(
	const char *json, const char *host, const char *repo, struct credentials *out)
{
	struct json_object *root, *v;
	int ret = -ENOENT;

	memset(out, 0, sizeof(*out));
	root = json_tokener_parse(json);
	if (!root || !json_object_is_type(root, json_type_object)) {
		json_object_put(root);
		return -EBADMSG;
	}
	if (json_object_object_get_ex(root, "credHelpers", &v) &&
		json_object_is_type(v, json_type_object)) {
		json_object_object_foreach(v, key, val)
		{
			if (ret == -ENOENT && key_match(key, host, NULL) == 0 &&
				json_object_is_type(val, json_type_string))
				ret = creds_from_helper(json_object_get_string(val), host, out);
		}
	}
	/* The store holds the secrets that auths only lists, as docker has it. */
	if (ret == -ENOENT && json_object_object_get_ex(root, "credsStore", &v) &&
		json_object_is_type(v, json_type_string))
		ret = creds_from_helper(json_object_get_string(v), host, out);
	if (ret == -ENOENT && json_object_object_get_ex(root, "auths", &v) &&
		json_object_is_type(v, json_type_object)) {
		struct json_object *best = NULL;
		int best_score = -1;

		json_object_object_foreach(v, key, val)
		{
			int score = key_match(key, host, repo);

			if (score > best_score && json_object_is_type(val, json_type_object)) {
				best = val;
				best_score = score;
			}
		}
		if (best)
			ret = creds_from_auths_entry(best, out);
	}
	json_object_put(root);
	return ret;
}

static int read_small_file(const char *path, char **out)
{
	struct buf b = BUF_INIT;
	char chunk[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
		if (b.len + (size_t)n > CRED_FILE_MAX || buf_add(&b, chunk, (size_t)n)) {
			close(fd);
			buf_release(&b);
			return -EFBIG;
		}
	}
	close(fd);
	*out = buf_take(&b);
	return *out ? 0 : -ENOMEM;
}

int auth_find_credentials(
	const char *auth_file, const char *host, const char *repo, struct credentials *out)
{
	const char *env_auth = getenv("REGISTRY_AUTH_FILE"), *xdg = getenv("XDG_RUNTIME_DIR");
	const char *home = getenv("HOME"), *dcfg = getenv("DOCKER_CONFIG");
	char paths[6][PATH_MAX];
	size_t n = 0, i;

	memset(out, 0, sizeof(*out));
	if (auth_file)
		snprintf(paths[n++], PATH_MAX, "%s", auth_file);
	if (env_auth && *env_auth)
		snprintf(paths[n++], PATH_MAX, "%s", env_auth);
	if (xdg && *xdg)
		snprintf(paths[n++], PATH_MAX, "%s/containers/auth.json", xdg);
	if (home && *home)
		snprintf(paths[n++], PATH_MAX, "%s/.config/containers/auth.json", home);
	if (dcfg && *dcfg)
		snprintf(paths[n++], PATH_MAX, "%s/config.json", dcfg);
	if (home && *home)
		snprintf(paths[n++], PATH_MAX, "%s/.docker/config.json", home);
	for (i = 0; i < n; i++) {
		char *json = NULL;
		int ret = read_small_file(paths[i], &json);

		if (ret) {
			if (ret != -ENOENT && !(auth_file && i == 0 && ret == -ENOENT))
				log_warn("credentials file %s: %s", paths[i], strerror(-ret));
			continue;
		}
		ret = auth_credentials_from_json(json, host, repo, out);
		OPENSSL_cleanse(json, strlen(json));
		free(json);
		if (ret == -EBADMSG)
			log_warn("credentials file %s: not valid JSON", paths[i]);
		if (ret == 0) {
			log_debug("%s%s%s: credentials from %s", host, repo ? "/" : "",
				repo ? repo : "", paths[i]);
			return 0;
		}
		/* Logged; the next file would most likely name the same helper. */
		if (ret == -ETIMEDOUT)
			return ret;
	}
	return -ENOENT;
}

char *auth_basic_header(const struct credentials *c)
{
	struct buf plain = BUF_INIT;
	char *out = NULL;
	size_t cap;

	if (!c->username ||
		buf_printf(&plain, "%s:%s", c->username, c->password ? c->password : ""))
		goto out;
	cap = 6 + 4 * ((plain.len + 2) / 3) + 1;
	out = malloc(cap);
	if (out) {
		memcpy(out, "Basic ", 6);
		EVP_EncodeBlock((unsigned char *)out + 6, (const unsigned char *)plain.data,
			(int)plain.len);
	}
out:
	if (plain.data)
		OPENSSL_cleanse(plain.data, plain.len);
	buf_release(&plain);
	return out;
}

/* "realm?service=S&scope=A&scope=B": each space-separated scope its own parameter. */
static char *token_url(const struct challenge *ch, const char *scope)
{
	struct buf b = BUF_INIT;
	char sep = strchr(ch->realm, '?') ? '&' : '?';
	const char *p = scope;
	int ret = buf_addstr(&b, ch->realm);

	if (!ret && ch->service) {
		char *e = curl_easy_escape(NULL, ch->service, 0);

		ret = e ? buf_printf(&b, "%cservice=%s", sep, e) : -ENOMEM;
		curl_free(e);
		sep = '&';
	}
	while (!ret && p && *p) {
		size_t n = strcspn(p, " ");
		char *e = n ? curl_easy_escape(NULL, p, (int)n) : NULL;

		if (n) {
			ret = e ? buf_printf(&b, "%cscope=%s", sep, e) : -ENOMEM;
			sep = '&';
		}
		curl_free(e);
		p += n;
		while (*p == ' ')
			p++;
	}
	if (ret) {
		buf_release(&b);
		return NULL;
	}
	return buf_take(&b);
}

int auth_fetch_token(struct http *h, const struct challenge *ch, const char *scope,
	const struct credentials *cred, char **token, time_t *expires)
{
	struct http_request req = { .max_body = TOKEN_ANSWER_MAX };
	struct http_response resp;
	const char *headers[3] = { NULL, NULL, NULL };
	struct json_object *root = NULL, *v;
	struct buf form = BUF_INIT;
	char *url = NULL, *basic = NULL;
	long expires_in = 60;
	int ret;

	if (!ch->realm || strncmp(ch->realm, "http", 4) != 0) {
		log_err("bearer challenge without a usable realm");
		return -EACCES;
	}
	if (cred && cred->identity_token) {
		/* OAuth2: trade the refresh token for an access token. */
		char *e_svc = curl_easy_escape(NULL, ch->service ? ch->service : "", 0);
		char *e_scope = curl_easy_escape(NULL, scope ? scope : "", 0);
		char *e_tok = curl_easy_escape(NULL, cred->identity_token, 0);

		ret = e_svc && e_scope && e_tok ? buf_printf(&form,
							  "grant_type=refresh_token&client_id="
							  "ocifs&service=%s&scope=%s"
							  "&refresh_token=%s",
							  e_svc, e_scope, e_tok)
						: -ENOMEM;
		curl_free(e_svc);
		curl_free(e_scope);
		if (e_tok)
			OPENSSL_cleanse(e_tok, strlen(e_tok));
		curl_free(e_tok);
		if (ret)
			goto out;
		url = strdup(ch->realm);
		req.method = "POST";
		req.post_body = form.data;
		req.post_len = form.len;
		headers[0] = "Content-Type: application/x-www-form-urlencoded";
	} else {
		url = token_url(ch, scope);
		if (cred && cred->username) {
			char *b = auth_basic_header(cred);

			if (b && asprintf(&basic, "Authorization: %s", b) < 0)
				basic = NULL;
			if (b)
				OPENSSL_cleanse(b, strlen(b));
			free(b);
			headers[0] = basic;
		}
	}
	if (!url) {
		ret = -ENOMEM;
		goto out;
	}
	req.url = url;
	req.headers = headers;
	ret = http_do(h, &req, &resp);
	if (ret == 0)
		ret = http_status_to_errno(resp.status);
	if (ret) {
		/* A refusal is told once by the registry client, as the registry's 401. */
		if (ret == -EACCES)
			log_debug("token from %s (scope %s): %s", ch->realm, scope ? scope : "-",
				strerror(-ret));
		else
			log_err("token from %s (scope %s): %s", ch->realm, scope ? scope : "-",
				strerror(-ret));
		goto out_resp;
	}
	root = json_tokener_parse(resp.body.data ? resp.body.data : "");
	if (!root ||
		(!json_object_object_get_ex(root, "token", &v) &&
			!json_object_object_get_ex(root, "access_token", &v)) ||
		!json_object_is_type(v, json_type_string)) {
		log_err("token from %s: answer has no token", ch->realm);
		ret = -EACCES;
		goto out_resp;
	}
	*token = strdup(json_object_get_string(v));
	if (json_object_object_get_ex(root, "expires_in", &v) &&
		json_object_is_type(v, json_type_int))
		expires_in = (long)json_object_get_int64(v);
	/* The spec's floor (60 s unless set otherwise); renew a little early. */
	if (expires_in < (long)token_min_ttl)
		expires_in = (long)token_min_ttl;
	*expires = time(NULL) + (expires_in >= 20 ? expires_in - 10 : expires_in / 2);
	ret = *token ? 0 : -ENOMEM;
out_resp:
	if (resp.body.data)
		OPENSSL_cleanse(resp.body.data, resp.body.len);
	http_response_release(&resp);
out:
	json_object_put(root);
	if (basic)
		OPENSSL_cleanse(basic, strlen(basic));
	free(basic);
	if (form.data)
		OPENSSL_cleanse(form.data, form.len);
	buf_release(&form);
	free(url);
	return ret;
}

#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/crypto.h>

#include "auth.h"
#include "buf.h"
#include "digest.h"
#include "log.h"
#include "manifest.h"
#include "ref.h"
#include "registry.h"

/* Lists are JSON of a few bytes per entry; this bounds a hostile answer. */
#define LIST_PAGE_MAX (16 * 1024 * 1024)

/* A bearer token for one scope. */
struct token {
	struct token *next;
	char *scope;
	char *value;
	time_t expires;
};

/*
 * Credentials looked up for one repository (NULL: the host as a whole). In
 * r->creds from the start of the lookup; repo, have and creds are set once
 * and not changed after ready (so they can be read without the lock then).
 */
struct cred_entry {
	struct cred_entry *next;
	char *repo;
	bool ready; /* the lookup ended; protected by r->lock */
	bool have;
	bool told; /* the registry's refusal has been logged; protected by r->lock */
	struct credentials creds;
};

/*
 * A blob's redirect target, reused for the next ranges of that blob while
 * it is young (a presigned URL lives minutes: S3's default is 15, the
 * registry's redirect middleware's 20) and answers; a refusal sends the
 * range back through the registry, which hands out a fresh one.
 */
#define REDIRECTS 16
#define REDIRECT_SECS 300
struct redirect {
	char digest[DIGEST_STR_LEN + 1];
	char *url;
	time_t until;
};

struct registry {
	struct http *http;
	char *host;
	char *prefix; /* put before repository names: "" or a mirror's "path/" */
	struct registry_options opts;
	/*
	 * Held briefly: never across a request, a token fetch or a credential
	 * helper (a stuck helper must not stop the other requests).
	 */
	pthread_mutex_t lock;
	/*
	 * One read-modify-write of a fallback referrers index at a time (held
	 * across its GET and PUT, so only other such updates wait): taken
	 * before lock, never under it.
	 */
	pthread_mutex_t fallback_lock;
	pthread_cond_t creds_ready; /* a credentials lookup ended; with lock */
	const char *scheme; /* "https" or "http" once pinged; protected by lock */
	bool fixed_scheme; /* a mirror URL said which */
	/* Authentication. protected by lock */
	struct cred_entry *creds;
	struct challenge challenge; /* the last one; scheme NULL before any */
	struct token *tokens;
	/* Mirrors, tried in order before this registry for pulls. */
	struct registry **mirrors;
	size_t n_mirrors;
	bool is_mirror; /* never retried: the next mirror or the upstream is */
	time_t down_until; /* a mirror that failed is passed over until then; under lock */
	struct strlist warned; /* Warning texts already logged; under lock */
	/* Where blob GETs were redirected (a CDN, an object store); under lock */
	struct redirect redirects[REDIRECTS];
	unsigned next_redirect;
};

/* How long a mirror that failed is passed over. */
#define MIRROR_REST_SECS 30

static const char *const manifest_accept[] = {
	"Accept: " MT_OCI_MANIFEST ", " MT_OCI_INDEX ", " MT_DOCKER_MANIFEST ", " MT_DOCKER_LIST,
	NULL,
};

void strlist_release(struct strlist *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

int strlist_add(struct strlist *l, const char *s)
{
	char **v = realloc(l->v, (l->n + 2) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	l->v = v;
	v[l->n] = strdup(s);
	if (!v[l->n])
		return -ENOMEM;
	v[++l->n] = NULL;
	return 0;
}

int registry_new(
	struct http *h, const char *host, const struct registry_options *o, struct registry **out)
{
	struct registry *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->host = strdup(host);
	if (!r->host) {
		free(r);
		return -ENOMEM;
	}
	r->prefix = strdup("");
	if (!r->prefix) {
		free(r->host);
		free(r);
		return -ENOMEM;
	}
	r->http = h;
	r->opts = *o;
	if (!r->opts.page_size)
		r->opts.page_size = 1000;
	pthread_mutex_init(&r->lock, NULL);
	pthread_mutex_init(&r->fallback_lock, NULL);
	pthread_cond_init(&r->creds_ready, NULL);
	*out = r;
	return 0;
}

void registry_free(struct registry *r)
{
	struct token *t, *next;
	struct cred_entry *c, *cnext;
	size_t i;

	if (!r)
		return;
	for (i = 0; i < r->n_mirrors; i++)
		registry_free(r->mirrors[i]);
	free(r->mirrors);
	for (c = r->creds; c; c = cnext) {
		cnext = c->next;
		credentials_release(&c->creds);
		free(c->repo);
		free(c);
	}
	for (t = r->tokens; t; t = next) {
		next = t->next;
		OPENSSL_cleanse(t->value, strlen(t->value));
		free(t->scope);
		free(t->value);
		free(t);
	}
	challenge_release(&r->challenge);
	for (i = 0; i < REDIRECTS; i++)
		free(r->redirects[i].url);
	strlist_release(&r->warned);
	pthread_mutex_destroy(&r->lock);
	pthread_mutex_destroy(&r->fallback_lock);
	pthread_cond_destroy(&r->creds_ready);
	free(r->prefix);
	free(r->host);
	free(r);
}

const char *registry_host(const struct registry *r)
{
	return r->host;
}

static const char *registry_scheme(struct registry *r)
{
	const char *s;

	pthread_mutex_lock(&r->lock);
	s = r->scheme;
	pthread_mutex_unlock(&r->lock);
	return s;
}

static void note_challenge(struct registry *r, const char *value);

static int ping_scheme(struct registry *r, const char *scheme)
{
	struct http_request req = { .max_body = 64 * 1024 };
	struct http_response resp;
	char url[512];
	int ret;

	snprintf(url, sizeof(url), "%s://%s/v2/", scheme, r->host);
	req.url = url;
	ret = http_do(r->http, &req, &resp);
	/* A transport EACCES is TLS refusing the peer: say that, not "permission". */
	if (ret == -EACCES)
		ret = -EKEYREJECTED;
	if (ret == 0 && resp.status != 200 && resp.status != 401)
		ret = resp.status == 404 ? -EPROTONOSUPPORT : http_status_to_errno(resp.status);
	if (ret == 0 && resp.status == 401) {
		pthread_mutex_lock(&r->lock);
		note_challenge(r, resp.www_authenticate);
		pthread_mutex_unlock(&r->lock);
	}
	http_response_release(&resp);
	return ret;
}

/*
 * Whether the registry answers over TLS: 1, 0 when what answers is not TLS
 * (a plain HTTP server), or -errno (nothing listens, ...). Its certificate
 * is checked by the ping that follows; a plain HTTP registry then costs no
 * CA store loaded and parsed.
 */
static int speaks_tls(struct registry *r)
{
	struct http_request req = { .max_body = 64 * 1024, .tls_probe = true };
	struct http_response resp;
	char url[512];
	int ret;

	snprintf(url, sizeof(url), "https://%s/v2/", r->host);
	req.url = url;
	ret = http_do(r->http, &req, &resp);
	http_response_release(&resp);
	if (ret == 0)
		return 1;
	return http_error_is_tls(ret) || ret == -ECONNRESET ? 0 : ret;
}

int registry_ping(struct registry *r)
{
	const char *scheme = registry_scheme(r);
	int ret;

	if (scheme)
		return 0;
	if (r->opts.plain_http || r->fixed_scheme) {
		scheme = r->opts.plain_http ? "http" : "https";
		ret = ping_scheme(r, scheme);
	} else if (!ref_host_is_loopback(r->host)) {
		scheme = "https";
		ret = ping_scheme(r, scheme);
	} else {
		/* As docker does, loopback registries may speak plain HTTP. */
		ret = speaks_tls(r);
		scheme = ret > 0 ? "https" : "http";
		ret = ret < 0 ? ret : ping_scheme(r, scheme);
	}
	if (ret) {
		if (ret == -EPROTONOSUPPORT)
			log_err("%s: not an OCI registry (no /v2/ endpoint)", r->host);
		else if (ret == -EKEYREJECTED)
			log_err("%s: TLS certificate not trusted (see -o ca_file= and -o insecure)",
				r->host);
		else
			log_err("%s: cannot reach registry: %s", r->host, strerror(-ret));
		return ret == -EKEYREJECTED ? -EACCES : ret;
	}
	pthread_mutex_lock(&r->lock);
	r->scheme = scheme;
	pthread_mutex_unlock(&r->lock);
	log_debug("%s: registry at %s://%s/v2/", r->host, scheme, r->host);
	return 0;
}

/* ---- authentication ---- */

/* Remember a challenge; credentials are looked up on the first one. Caller holds r->lock. */
static void note_challenge(struct registry *r, const char *value)
{
	struct challenge ch;

	if (!value || auth_parse_challenge(value, &ch))
		return;
	challenge_release(&r->challenge);
	r->challenge = ch;
}

/*
 * The credentials for the repository a scope names ("repository:NAME:pull"),
 * or for the host as a whole, looked up on first use and kept; NULL when out
 * of memory. Called without r->lock: the lookup can run a credential helper
 * (bounded by AUTH_HELPER_TIMEOUT_MS), which happens outside the lock, once
 * per entry; other requests for the same entry wait for it on creds_ready,
 * and every other request goes on. The answer lives as long as r.
 */
static struct cred_entry *cred_entry_get(struct registry *r, const char *scope)
{
	const char *name = NULL, *end = NULL;
	struct credentials found;
	struct cred_entry *c;
	char *repo = NULL;
	bool have;

	if (strncmp(scope, "repository:", 11) == 0) {
		name = scope + 11;
		end = strchr(name, ':');
	}
	if (name && end && end > name) {
		repo = strndup(name, (size_t)(end - name));
		if (!repo)
			return NULL;
	}
	pthread_mutex_lock(&r->lock);
	for (c = r->creds; c; c = c->next)
		if (repo ? c->repo && strcmp(c->repo, repo) == 0 : !c->repo)
			break;
	if (c) {
		while (!c->ready)
			pthread_cond_wait(&r->creds_ready, &r->lock);
		pthread_mutex_unlock(&r->lock);
		free(repo);
		return c;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		pthread_mutex_unlock(&r->lock);
		free(repo);
		return NULL;
	}
	c->repo = repo;
	c->next = r->creds;
	r->creds = c;
	pthread_mutex_unlock(&r->lock);

	have = auth_find_credentials(r->opts.auth_file, r->host, repo, &found) == 0;
	if (!have)
		log_debug("%s%s%s: no credentials found: anonymous", r->host, repo ? "/" : "",
			repo ? repo : "");

	pthread_mutex_lock(&r->lock);
	if (have)
		c->creds = found;
	c->have = have;
	c->ready = true;
	pthread_cond_broadcast(&r->creds_ready);
	pthread_mutex_unlock(&r->lock);
	return c;
}

/*
 * One log line, the first time, when the registry refuses the credentials
 * found for a scope (or wants some and there are none); the errors of each
 * request refused after that are debug lines.
 */
static bool str_same(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/* Whether a refusal of c's credentials has been told already, as those of another name. */
static bool refusal_told(struct registry *r, const struct cred_entry *c)
{
	const struct cred_entry *e;

	for (e = r->creds; e; e = e->next)
		if (e != c && e->told && e->have == c->have &&
			(!c->have || (str_same(e->creds.username, c->creds.username) &&
					     str_same(e->creds.password, c->creds.password) &&
					     str_same(e->creds.identity_token,
						     c->creds.identity_token))))
			return true;
	return false;
}

static void tell_refusal(struct registry *r, const char *scope, long status)
{
	struct cred_entry *c;
	const char *what = NULL;
	bool have = false;
	char name[300];

	c = cred_entry_get(r, scope);
	pthread_mutex_lock(&r->lock);
	if (c && !c->told && refusal_told(r, c)) {
		c->told = true;
	} else if (c && !c->told) {
		c->told = true;
		snprintf(name, sizeof(name), "%s%s%s", r->host, c->repo ? "/" : "",
			c->repo ? c->repo : "");
		have = c->have;
		if (status == 403)
			what = "access denied (403) with the credentials found";
		else if (c->have)
			what = "the registry refuses the credentials found (401): check them";
		else
			what = "the registry wants credentials (401) and none were found "
			       "(see -o auth_file=)";
	}
	pthread_mutex_unlock(&r->lock);
	/* Anonymous and refused is how a registry keeps its private names private. */
	if (what && have)
		log_err("%s: %s", name, what);
	else if (what)
		log_warn("%s: %s", name, what);
}

/* Caller holds r->lock. */
static struct token **token_slot(struct registry *r, const char *scope)
{
	struct token **t;

	for (t = &r->tokens; *t; t = &(*t)->next)
		if (strcmp((*t)->scope, scope) == 0)
			return t;
	return t;
}

static void token_forget(struct registry *r, const char *scope)
{
	struct token **slot, *t;

	pthread_mutex_lock(&r->lock);
	slot = token_slot(r, scope);
	t = *slot;
	if (t) {
		*slot = t->next;
		OPENSSL_cleanse(t->value, strlen(t->value));
		free(t->scope);
		free(t->value);
		free(t);
	}
	pthread_mutex_unlock(&r->lock);
}

/*
 * The Authorization header line for a request in scope, fetching a bearer
 * token when the registry asked for one and none is cached. *line is
 * malloc'd, or NULL for none. 0 or -errno.
 */
static int auth_line(struct registry *r, const char *scope, char **line)
{
	struct challenge ch = { NULL, NULL, NULL, NULL };
	struct credentials cred = { NULL, NULL, NULL };
	const struct credentials *have = NULL;
	struct cred_entry *ce;
	struct token *t;
	char *value = NULL, *tok = NULL;
	time_t expires = 0;
	bool challenged;
	int ret = 0;

	*line = NULL;
	pthread_mutex_lock(&r->lock);
	challenged = r->challenge.scheme != NULL;
	pthread_mutex_unlock(&r->lock);
	if (!challenged)
		return 0;
	/* Before the lock: this may run a credential helper. */
	ce = cred_entry_get(r, scope);
	if (ce && ce->have)
		have = &ce->creds;
	pthread_mutex_lock(&r->lock);
	if (strcmp(r->challenge.scheme, "basic") == 0) {
		value = have ? auth_basic_header(have) : NULL;
		pthread_mutex_unlock(&r->lock);
		goto out;
	}
	if (strcmp(r->challenge.scheme, "bearer") != 0) {
		pthread_mutex_unlock(&r->lock);
		return 0;
	}
	t = *token_slot(r, scope);
	if (t && t->expires > time(NULL)) {
		if (asprintf(&value, "Bearer %s", t->value) < 0)
			value = NULL;
		pthread_mutex_unlock(&r->lock);
		goto out;
	}
	/* Copies, so that the token request runs without the lock. */
	ch.realm = r->challenge.realm ? strdup(r->challenge.realm) : NULL;
	ch.service = r->challenge.service ? strdup(r->challenge.service) : NULL;
	if (have) {
		cred.username = have->username ? strdup(have->username) : NULL;
		cred.password = have->password ? strdup(have->password) : NULL;
		cred.identity_token = have->identity_token ? strdup(have->identity_token) : NULL;
	}
	pthread_mutex_unlock(&r->lock);

	ret = auth_fetch_token(r->http, &ch, scope, have ? &cred : NULL, &tok, &expires);
	/* Credentials refused: an anonymous token still reads what is public. */
	if (ret == -EACCES && have)
		ret = auth_fetch_token(r->http, &ch, scope, NULL, &tok, &expires);
	if (ret == 0) {
		struct token *nt = calloc(1, sizeof(*nt));

		if (asprintf(&value, "Bearer %s", tok) < 0)
			value = NULL;
		pthread_mutex_lock(&r->lock);
		t = *token_slot(r, scope);
		if (t) {
			/* A racing request got one too: keep the newer. */
			OPENSSL_cleanse(t->value, strlen(t->value));
			free(t->value);
			t->value = tok;
			t->expires = expires;
			tok = NULL;
			free(nt);
		} else if (nt && (nt->scope = strdup(scope))) {
			nt->value = tok;
			nt->expires = expires;
			nt->next = r->tokens;
			r->tokens = nt;
			tok = NULL;
		} else {
			free(nt);
		}
		pthread_mutex_unlock(&r->lock);
	}
	if (tok)
		OPENSSL_cleanse(tok, strlen(tok));
	free(tok);
	credentials_release(&cred);
	challenge_release(&ch);
out:
	if (value) {
		if (asprintf(line, "Authorization: %s", value) < 0)
			*line = NULL;
		OPENSSL_cleanse(value, strlen(value));
		free(value);
		if (!*line)
			return -ENOMEM;
	}
	return ret;
}

bool registry_retryable(int err)
{
	switch (err) {
	case -ECONNREFUSED:
	case -ECONNRESET:
	case -ETIMEDOUT:
	case -EHOSTUNREACH:
	case -EAGAIN: /* 429 */
	case -EBUSY: /* 5xx */
		return true;
	default:
		return false;
	}
}

/*
 * Log each distinct Warning a registry sends once ("299 - \"text\"": the
 * text, as the distribution spec asks clients to show it).
 */
static void log_warnings(struct registry *r, const struct buf *w)
{
	const char *line = w->data, *nl;

	for (; line && *line; line = nl + 1) {
		const char *q1, *q2, *text = line;
		char msg[512];
		size_t n, i;

		nl = strchr(line, '\n');
		if (!nl)
			break;
		n = (size_t)(nl - line);
		q1 = memchr(line, '"', n);
		q2 = q1 ? memrchr(q1 + 1, '"', (size_t)(nl - q1 - 1)) : NULL;
		if (q1 && q2) {
			text = q1 + 1;
			n = (size_t)(q2 - text);
		}
		if (n >= sizeof(msg))
			n = sizeof(msg) - 1;
		memcpy(msg, text, n);
		msg[n] = '\0';
		pthread_mutex_lock(&r->lock);
		for (i = 0; i < r->warned.n && strcmp(r->warned.v[i], msg) != 0; i++)
			;
		if (i < r->warned.n || r->warned.n >= 64 || strlist_add(&r->warned, msg)) {
			pthread_mutex_unlock(&r->lock);
			continue;
		}
		pthread_mutex_unlock(&r->lock);
		log_warn("%s: the registry warns: %s", r->host, msg);
	}
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Sleep before attempt n (1, 2, ...): exponential from first (s, 0.1 by
 * default) up to 50 times that, with jitter so that many readers do not come
 * back at once, or what Retry-After asks. False when that would pass the
 * deadline.
 */
static bool backoff(double first, unsigned n, long retry_after, double deadline)
{
	double d = first * (double)(1u << (n < 7 ? n - 1 : 6));
	struct timespec ts;

	if (d > 50 * first)
		d = 50 * first;
	d *= 0.5 + (double)(rand() % 1000) / 1000.0;
	if (retry_after > 0)
		d = (double)(retry_after < 60 ? retry_after : 60);
	if (now_s() + d > deadline)
		return false;
	ts.tv_sec = (time_t)d;
	ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	return true;
}

/*
 * Perform req (url set) with the credentials the registry asks for: on a 401
 * the challenge is taken in and the request made once more, never more.
 * Connection errors, 429 and 5xx are tried again with backoff until
 * retry_secs have passed (not once a sink has been handed bytes: its caller
 * resumes). scope is the token scope the request needs. resp is the caller's
 * to release. Returns what http_do returns; a last 429 or 5xx stays in
 * resp->status.
 */
static int registry_do(
	struct registry *r, struct http_request *req, struct http_response *resp, const char *scope)
{
	const char *const *orig = req->headers;
	double deadline = now_s() + (r->opts.retry_secs ? r->opts.retry_secs : 300);
	const char *hdrs[8];
	char *line = NULL;
	bool challenged = false;
	unsigned attempt = 0;
	int ret = 0, err;
	size_t n;

	for (;;) {
		ret = auth_line(r, scope, &line);
		if (ret && ret != -EACCES)
			break;
		for (n = 0; orig && orig[n] && n < 6; n++)
			hdrs[n] = orig[n];
		if (line)
			hdrs[n++] = line;
		hdrs[n] = NULL;
		req->headers = hdrs;
		ret = http_do(r->http, req, resp);
		req->headers = orig;
		if (resp->warnings.len)
			log_warnings(r, &resp->warnings);
		if (line)
			OPENSSL_cleanse(line, strlen(line));
		free(line);
		line = NULL;
		if (ret == 0 && resp->status == 401 && !challenged && resp->www_authenticate) {
			/* Take in the challenge (a new scheme, realm or scope) and try once more. */
			challenged = true;
			pthread_mutex_lock(&r->lock);
			note_challenge(r, resp->www_authenticate);
			pthread_mutex_unlock(&r->lock);
			token_forget(r, scope);
			http_response_release(resp);
			continue;
		}
		if (ret == 0 && (resp->status == 401 || resp->status == 403))
			tell_refusal(r, scope, resp->status);
		err = ret ? ret : resp->status == 429 ? -EAGAIN : resp->status >= 500 ? -EBUSY : 0;
		if (!registry_retryable(err) || (req->sink && resp->body_bytes > 0) || r->is_mirror)
			break;
		if (!backoff((r->opts.retry_delay_ms ? r->opts.retry_delay_ms : 100) / 1000.0,
			    ++attempt, resp->retry_after, deadline)) {
			log_err("%s: giving up after %u attempts: %s", r->host, attempt,
				ret ? strerror(-ret) : "server busy");
			break;
		}
		if (attempt == 1)
			log_warn("%s: %s: retrying", r->host, ret ? strerror(-ret) : "server busy");
		http_response_release(resp);
	}
	return ret;
}

static void repo_scope(const struct registry *r, char *out, size_t n, const char *repo)
{
	snprintf(out, n, "repository:%s%s:pull", r->prefix, repo);
}

/* Collect the string array `key` from every page of a paginated list. */
static int fetch_list(struct registry *r, const char *what, char *url, const char *key,
	const char *scope, struct strlist *out)
{
	struct http_request req = { .max_body = LIST_PAGE_MAX };
	struct http_response resp;
	unsigned pages = 0;
	int ret = 0;

	while (url) {
		struct json_object *root, *arr;
		size_t i, n;

		req.url = url;
		ret = registry_do(r, &req, &resp, scope);
		if (ret == 0)
			ret = http_status_to_errno(resp.status);
		if (ret) {
			if (ret == -EACCES)
				log_debug("%s: %s: %s", r->host, what, strerror(-ret));
			else if (ret != -ENOENT)
				log_err("%s: %s: %s", r->host, what, strerror(-ret));
			goto out_resp;
		}
		root = json_tokener_parse(resp.body.data ? resp.body.data : "");
		if (!root || !json_object_is_type(root, json_type_object)) {
			json_object_put(root);
			log_err("%s: %s: answer is not a JSON object", r->host, what);
			ret = -EBADMSG;
			goto out_resp;
		}
		/* "tags": null is what distribution answers for a repository emptied of tags */
		if (json_object_object_get_ex(root, key, &arr) && arr &&
			json_object_is_type(arr, json_type_array)) {
			n = json_object_array_length(arr);
			for (i = 0; i < n && !ret; i++) {
				struct json_object *e = json_object_array_get_idx(arr, i);

				if (json_object_is_type(e, json_type_string))
					ret = strlist_add(out, json_object_get_string(e));
			}
		}
		json_object_put(root);
		if (ret)
			goto out_resp;
		free(url);
		url = resp.link_next;
		resp.link_next = NULL;
		http_response_release(&resp);
		/* A registry that links a page to itself must not keep us here. */
		if (url && ++pages > 100000) {
			log_err("%s: %s: too many pages", r->host, what);
			ret = -ELOOP;
			goto out;
		}
	}
	return 0;

out_resp:
	http_response_release(&resp);
out:
	free(url);
	strlist_release(out);
	return ret;
}

/*
 * The URL of an API path ("_catalog?n=100", "repo/blobs/sha256:..."; a
 * mirror's path prefix goes first), malloc'd, or NULL.
 */
static char *api_url(struct registry *r, const char *path)
{
	struct buf b = BUF_INIT;

	if (buf_printf(&b, "%s://%s/v2/%s%s", registry_scheme(r), r->host, r->prefix, path)) {
		buf_release(&b);
		return NULL;
	}
	return buf_take(&b);
}

/*
 * Ping if needed, then perform req on the API path (printf-style), mapping a
 * non-success status to an errno. resp is the caller's to release in every case.
 */
static int api_do(struct registry *r, struct http_request *req, struct http_response *resp,
	const char *scope, const char *fmt_path, ...) __attribute__((format(printf, 5, 6)));

static int api_do(struct registry *r, struct http_request *req, struct http_response *resp,
	const char *scope, const char *fmt_path, ...)
{
	char path[1024];
	char *url;
	va_list ap;
	int ret;

	memset(resp, 0, sizeof(*resp));
	ret = registry_ping(r);
	if (ret)
		return ret;
	va_start(ap, fmt_path);
	vsnprintf(path, sizeof(path), fmt_path, ap);
	va_end(ap);
	url = api_url(r, path);
	if (!url)
		return -ENOMEM;
	req->url = url;
	ret = registry_do(r, req, resp, scope);
	req->url = NULL;
	free(url);
	if (ret == 0)
		ret = http_status_to_errno(resp->status);
	return ret;
}

/* Every entry of the paginated list `key` at the API path, after a ping. */
static int list_all(struct registry *r, const char *what, const char *key, const char *path,
	const char *scope, struct strlist *out)
{
	char first[1024];
	char *url;
	int ret;

	memset(out, 0, sizeof(*out));
	ret = registry_ping(r);
	if (ret)
		return ret;
	snprintf(first, sizeof(first), "%s?n=%u", path, r->opts.page_size);
	url = api_url(r, first);
	if (!url)
		return -ENOMEM;
	return fetch_list(r, what, url, key, scope, out);
}

int registry_catalog(struct registry *r, struct strlist *out)
{
	return list_all(r, "catalog", "repositories", "_catalog", "registry:catalog:*", out);
}

int registry_tags(struct registry *r, const char *repo, struct strlist *out)
{
	char what[512], path[512], scope[512];

	snprintf(what, sizeof(what), "%s: tags", repo);
	snprintf(path, sizeof(path), "%s/tags/list", repo);
	repo_scope(r, scope, sizeof(scope), repo);
	return list_all(r, what, "tags", path, scope, out);
}

static int get_manifest_at(struct registry *r, const char *repo, const char *reference, char **body,
	size_t *len, char **content_type, char **digest)
{
	struct http_request req = {
		.headers = manifest_accept,
		.max_body = MANIFEST_MAX_SIZE,
	};
	struct http_response resp;
	char got[DIGEST_STR_LEN + 1], scope[512];
	const char *sep = ref_valid_digest(reference) ? "@" : ":";
	int ret;

	repo_scope(r, scope, sizeof(scope), repo);
	ret = api_do(r, &req, &resp, scope, "%s/manifests/%s", repo, reference);
	if (ret) {
		if (ret == -EFBIG)
			log_err("%s/%s%s%s: manifest larger than %d bytes, refused", r->host, repo,
				sep, reference, MANIFEST_MAX_SIZE);
		else if (ret == -EACCES)
			log_debug("%s/%s%s%s: manifest: %s", r->host, repo, sep, reference,
				strerror(-ret));
		else if (ret != -ENOENT)
			log_err("%s/%s%s%s: manifest: %s", r->host, repo, sep, reference,
				strerror(-ret));
		goto out;
	}
	digest_buffer(resp.body.data ? resp.body.data : "", resp.body.len, got);
	if ((sep[0] == '@' && strcmp(got, reference) != 0) ||
		(resp.docker_digest && digest_supported(resp.docker_digest) &&
			strcmp(got, resp.docker_digest) != 0)) {
		log_err("%s/%s%s%s: manifest body hashes to %s, not the digest asked for or "
			"announced (%s)",
			r->host, repo, sep, reference, got,
			resp.docker_digest ? resp.docker_digest : reference);
		ret = -EBADMSG;
		goto out;
	}
	*digest = strdup(got);
	*content_type = resp.content_type;
	resp.content_type = NULL;
	*len = resp.body.len;
	*body = buf_take(&resp.body);
	if (!*digest || !*body) {
		free(*digest);
		free(*body);
		free(*content_type);
		ret = -ENOMEM;
	}
out:
	http_response_release(&resp);
	return ret;
}

/*
 * Counts what a source (a mirror, a redirect target) handed on, so that the
 * next one starts after it.
 */
struct counting_sink {
	int (*sink)(void *arg, const void *p, size_t n);
	void *arg;
	int64_t passed;
	bool refused; /* the sink said stop: no other source will do better */
};

static int count_sink(void *arg, const void *p, size_t n)
{
	struct counting_sink *c = arg;
	int ret = c->sink(c->arg, p, n);

	if (ret == 0)
		c->passed += (int64_t)n;
	else
		c->refused = true;
	return ret;
}

/* The redirect target of digest's GETs, malloc'd, or NULL. */
static char *redirect_get(struct registry *r, const char *digest)
{
	time_t now = time(NULL);
	char *url = NULL;
	size_t i;

	pthread_mutex_lock(&r->lock);
	for (i = 0; i < REDIRECTS; i++)
		if (r->redirects[i].url && r->redirects[i].until > now &&
			strcmp(r->redirects[i].digest, digest) == 0) {
			url = strdup(r->redirects[i].url);
			break;
		}
	pthread_mutex_unlock(&r->lock);
	return url;
}

/* Remember url (taken) as digest's redirect target, or forget it (url NULL). */
static void redirect_set(struct registry *r, const char *digest, char *url)
{
	struct redirect *slot = NULL;
	size_t i;

	pthread_mutex_lock(&r->lock);
	for (i = 0; i < REDIRECTS && !slot; i++)
		if (r->redirects[i].url && strcmp(r->redirects[i].digest, digest) == 0)
			slot = &r->redirects[i];
	if (!slot && url)
		slot = &r->redirects[r->next_redirect++ % REDIRECTS];
	if (slot) {
		free(slot->url);
		slot->url = url;
		url = NULL;
		snprintf(slot->digest, sizeof(slot->digest), "%s", digest);
		slot->until = time(NULL) + REDIRECT_SECS;
	}
	pthread_mutex_unlock(&r->lock);
	free(url);
}

/*
 * The effective URL of a blob GET, when the registry redirected it to
 * another host (malloc'd), else NULL: where the next ranges can go straight.
 */
static char *redirected_to(struct registry *r, const char *effective)
{
	const char *p = effective ? strstr(effective, "://") : NULL;
	size_t hl = strlen(r->host);

	if (!p)
		return NULL;
	p += 3;
	if (strncmp(p, r->host, hl) == 0 && (p[hl] == '/' || p[hl] == '\0'))
		return NULL; /* the registry itself answered */
	return strdup(effective);
}

static int get_blob_at(struct registry *r, const char *repo, const char *digest, int64_t off,
	int64_t len, int (*sink)(void *arg, const void *p, size_t n), void *arg)
{
	struct counting_sink cs = { sink, arg, 0, false };
	struct http_request req = {
		.sink = count_sink,
		.sink_arg = &cs,
		.range_start = off,
		.range_len = len,
		.max_body = 64 * 1024,
	};
	struct http_response resp;
	char scope[512], *target = redirect_get(r, digest);
	int ret;

	if (target) {
		/* straight to where the registry sent this blob last: no Authorization goes there */
		req.url = target;
		ret = http_do(r->http, &req, &resp);
		if (ret == 0)
			ret = http_status_to_errno(resp.status);
		req.url = NULL;
		http_response_release(&resp);
		free(target);
		if (ret == 0 || cs.refused)
			return ret;
		log_debug("%s/%s@%s: redirect target refused (%s): through the registry", r->host,
			repo, digest, strerror(-ret));
		redirect_set(r, digest, NULL);
		off += cs.passed;
		if (len)
			len -= cs.passed;
		req.range_start = off;
		req.range_len = len;
	}
	repo_scope(r, scope, sizeof(scope), repo);
	ret = api_do(r, &req, &resp, scope, "%s/blobs/%s", repo, digest);
	if (ret && ret != -ENOENT && ret != -EACCES)
		log_err("%s/%s@%s: blob bytes %lld+%lld: %s", r->host, repo, digest, (long long)off,
			(long long)len, strerror(-ret));
	if (ret == 0 && (target = redirected_to(r, resp.effective_url)))
		redirect_set(r, digest, target);
	http_response_release(&resp);
	return ret;
}

/* ---- mirrors ---- */

/*
 * Split a mirror URL: host (of size 256), *scheme ("https", "http", or NULL
 * when the URL names none) and the path prefix after "/v2/" (into prefix,
 * ending in '/', or left empty). 0, -EINVAL or -ENOMEM.
 */
static int parse_mirror(const char *url, char *host, const char **scheme, struct buf *prefix)
{
	const char *p = url, *slash;
	size_t hl;

	*scheme = NULL;
	if (strncmp(p, "https://", 8) == 0) {
		p += 8;
		*scheme = "https";
	} else if (strncmp(p, "http://", 7) == 0) {
		p += 7;
		*scheme = "http";
	}
	slash = strchr(p, '/');
	hl = slash ? (size_t)(slash - p) : strlen(p);
	if (hl == 0 || hl >= 256 || strpbrk(p, "?#@ "))
		return -EINVAL;
	memcpy(host, p, hl);
	host[hl] = '\0';
	if (!ref_valid_host(host))
		return -EINVAL;
	/* "/v2/" is where every registry API lives: a prefix is what follows it */
	p = slash ? slash : "";
	while (*p == '/')
		p++;
	if (strncmp(p, "v2", 2) == 0 && (p[2] == '/' || p[2] == '\0'))
		p += 2;
	while (*p == '/')
		p++;
	if (*p && (buf_printf(prefix, "%s", p) ||
			  (prefix->data[prefix->len - 1] != '/' && buf_printf(prefix, "/"))))
		return -ENOMEM;
	return 0;
}

bool registry_mirror_valid(const char *url)
{
	struct buf prefix = BUF_INIT;
	const char *scheme;
	char host[256];
	int ret = parse_mirror(url, host, &scheme, &prefix);

	buf_release(&prefix);
	return ret != -EINVAL;
}

int registry_add_mirror(struct registry *r, const char *url)
{
	struct buf prefix = BUF_INIT;
	struct registry *m, **v;
	const char *scheme;
	char host[256];
	int ret;

	ret = parse_mirror(url, host, &scheme, &prefix);
	if (!ret)
		ret = registry_new(r->http, host, &r->opts, &m);
	if (ret) {
		buf_release(&prefix);
		return ret;
	}
	if (scheme) {
		m->opts.plain_http = strcmp(scheme, "http") == 0;
		m->fixed_scheme = true;
	}
	m->is_mirror = true;
	if (prefix.data) {
		free(m->prefix);
		m->prefix = buf_take(&prefix);
	}
	v = realloc(r->mirrors, (r->n_mirrors + 1) * sizeof(*v));
	if (!v || !m->prefix) {
		registry_free(m);
		return -ENOMEM;
	}
	r->mirrors = v;
	v[r->n_mirrors++] = m;
	log_debug("%s: mirror %s/v2/%s", r->host, url, m->prefix);
	return 0;
}

/* Whether mirror m is worth asking now; a mirror that failed rests a while. */
static bool mirror_usable(struct registry *m)
{
	bool ok;

	pthread_mutex_lock(&m->lock);
	ok = m->down_until <= time(NULL);
	pthread_mutex_unlock(&m->lock);
	return ok;
}

/*
 * After mirror m failed with err: the next one (or the upstream) is asked. A
 * mirror without the content (404) is not at fault; one that is unreachable
 * or failing rests, with one log line.
 */
static void mirror_failed(struct registry *m, const char *what, int err)
{
	time_t now = time(NULL);
	bool resting;

	if (err == -ENOENT) {
		log_debug("%s: %s: not on this mirror", m->host, what);
		return;
	}
	pthread_mutex_lock(&m->lock);
	/* requests in flight together fail together: one line for all */
	resting = m->down_until > now;
	m->down_until = now + MIRROR_REST_SECS;
	pthread_mutex_unlock(&m->lock);
	if (!resting)
		log_warn("mirror %s: %s: %s; passing it over for %d s", m->host, what,
			strerror(-err), MIRROR_REST_SECS);
}

int registry_get_manifest(struct registry *r, const char *repo, const char *reference, char **body,
	size_t *len, char **content_type, char **digest)
{
	size_t i;
	int ret;

	for (i = 0; i < r->n_mirrors; i++) {
		if (!mirror_usable(r->mirrors[i]))
			continue;
		ret = get_manifest_at(
			r->mirrors[i], repo, reference, body, len, content_type, digest);
		if (ret == 0)
			return 0;
		mirror_failed(r->mirrors[i], "manifest", ret);
	}
	return get_manifest_at(r, repo, reference, body, len, content_type, digest);
}

int registry_get_blob(struct registry *r, const char *repo, const char *digest, int64_t off,
	int64_t len, int (*sink)(void *arg, const void *p, size_t n), void *arg)
{
	struct counting_sink c = { sink, arg, 0, false };
	size_t i;
	int ret;

	for (i = 0; i < r->n_mirrors; i++) {
		if (!mirror_usable(r->mirrors[i]))
			continue;
		ret = get_blob_at(r->mirrors[i], repo, digest, off + c.passed,
			len ? len - c.passed : 0, count_sink, &c);
		if (ret == 0)
			return 0;
		if (c.refused)
			return ret;
		mirror_failed(r->mirrors[i], "blob", ret);
	}
	return get_blob_at(r, repo, digest, off + c.passed, len ? len - c.passed : 0, sink, arg);
}

/* ---- push ---- */

static void push_scope(
	const struct registry *r, char *out, size_t n, const char *repo, const char *from)
{
	if (from)
		snprintf(out, n, "repository:%s:pull,push repository:%s:pull", repo, from);
	else
		snprintf(out, n, "repository:%s:pull,push", repo);
}

int registry_blob_exists(struct registry *r, const char *repo, const char *digest)
{
	struct http_request req = { .method = "HEAD" };
	struct http_response resp;
	char scope[600];
	int ret;

	push_scope(r, scope, sizeof(scope), repo, NULL);
	ret = api_do(r, &req, &resp, scope, "%s/blobs/%s", repo, digest);
	http_response_release(&resp);
	return ret;
}

/* The upload URL with the digest query parameter added, malloc'd, or NULL. */
static char *upload_url_with_digest(const char *location, const char *digest)
{
	struct buf b = BUF_INIT;

	if (buf_printf(&b, "%s%cdigest=%s", location, strchr(location, '?') ? '&' : '?', digest)) {
		buf_release(&b);
		return NULL;
	}
	return buf_take(&b);
}

/* One request on an upload session's URL; its next URL replaces *location. */
static int upload_step(
	struct registry *r, struct http_request *req, const char *scope, char **location, long want)
{
	struct http_response resp;
	int ret = registry_do(r, req, &resp, scope);

	if (ret == 0 && resp.status != want)
		ret = resp.status >= 200 && resp.status < 300 ? -EPROTO
							      : http_status_to_errno(resp.status);
	if (ret == 0 && resp.location) {
		free(*location);
		*location = resp.location;
		resp.location = NULL;
	}
	if (ret)
		log_debug("%s: upload %s %s: %ld", r->host, req->method, req->url, resp.status);
	http_response_release(&resp);
	return ret;
}

static const char *const octets[] = {
	"Content-Type: application/octet-stream",
	"Expect:",
	NULL,
};

int registry_upload_start(struct registry *r, const char *repo, const char *digest,
	const char *from_repo, char **location)
{
	struct http_request req = { .method = "POST", .post_body = "", .max_body = 64 * 1024 };
	struct http_response resp;
	char scope[600];
	int ret;

	*location = NULL;
	push_scope(r, scope, sizeof(scope), repo, from_repo);
	if (digest && from_repo && strcmp(from_repo, repo) != 0)
		ret = api_do(r, &req, &resp, scope, "%s/blobs/uploads/?mount=%s&from=%s", repo,
			digest, from_repo);
	else
		ret = api_do(r, &req, &resp, scope, "%s/blobs/uploads/", repo);
	if (ret == 0 && resp.status == 201) {
		/* mounted from the other repository: nothing to send */
		http_response_release(&resp);
		return 0;
	}
	if (ret == 0 && (resp.status != 202 || !resp.location))
		ret = -EPROTO;
	if (ret == 0) {
		*location = resp.location;
		resp.location = NULL;
	} else {
		log_err("%s/%s: upload: %s", r->host, repo, strerror(-ret));
	}
	http_response_release(&resp);
	return ret;
}

int registry_upload_patch(
	struct registry *r, const char *repo, char **location, int fd, int64_t off, int64_t len)
{
	char scope[600], range[96];
	const char *hdrs[] = { octets[0], octets[1], range, NULL };
	struct http_request p = {
		.method = "PATCH",
		.upload = true,
		.upload_fd = fd,
		.upload_off = off,
		.upload_len = len,
		.headers = hdrs,
		.max_body = 64 * 1024,
	};
	int ret;

	push_scope(r, scope, sizeof(scope), repo, NULL);
	snprintf(range, sizeof(range), "Content-Range: %lld-%lld", (long long)off,
		(long long)(off + len - 1));
	p.url = *location;
	ret = upload_step(r, &p, scope, location, 202);
	if (ret)
		log_err("%s/%s: upload of bytes %lld+%lld: %s", r->host, repo, (long long)off,
			(long long)len, strerror(-ret));
	return ret;
}

int registry_upload_finish(struct registry *r, const char *repo, char **location,
	const char *digest, int fd, int64_t off, int64_t len)
{
	struct http_request p = {
		.method = "PUT",
		.upload = true,
		.upload_fd = fd,
		.upload_off = off,
		.upload_len = len,
		.headers = octets,
		.max_body = 64 * 1024,
	};
	char scope[600], *url = upload_url_with_digest(*location, digest);
	int ret;

	if (!url)
		return -ENOMEM;
	push_scope(r, scope, sizeof(scope), repo, NULL);
	p.url = url;
	ret = upload_step(r, &p, scope, location, 201);
	if (ret)
		log_err("%s/%s@%s: upload: %s", r->host, repo, digest, strerror(-ret));
	free(url);
	return ret;
}

void registry_upload_cancel(struct registry *r, const char *repo, const char *location)
{
	struct http_request req = { .method = "DELETE", .max_body = 64 * 1024 };
	struct http_response resp;
	char scope[600];

	push_scope(r, scope, sizeof(scope), repo, NULL);
	req.url = location;
	if (registry_do(r, &req, &resp, scope) == 0)
		log_debug("%s/%s: upload cancelled: %ld", r->host, repo, resp.status);
	http_response_release(&resp);
}

int registry_push_blob(struct registry *r, const char *repo, const char *digest, int fd,
	int64_t size, const char *from_repo)
{
	char *location = NULL;
	int64_t off = 0;
	int ret;

	ret = registry_blob_exists(r, repo, digest);
	if (ret == 0) {
		log_debug("%s/%s@%s: already there", r->host, repo, digest);
		return 0;
	}
	if (ret != -ENOENT) {
		log_err("%s/%s@%s: upload: %s", r->host, repo, digest, strerror(-ret));
		return ret;
	}
	ret = registry_upload_start(r, repo, digest, from_repo, &location);
	if (ret || !location)
		return ret;
	/* Large blobs: PATCH chunk by chunk; the last bytes go with the closing PUT. */
	for (; !ret && size - off > REGISTRY_UPLOAD_CHUNK; off += REGISTRY_UPLOAD_CHUNK)
		ret = registry_upload_patch(r, repo, &location, fd, off, REGISTRY_UPLOAD_CHUNK);
	if (!ret)
		ret = registry_upload_finish(r, repo, &location, digest, fd, off, size - off);
	free(location);
	return ret;
}

int registry_put_manifest(struct registry *r, const char *repo, const char *ref,
	const char *media_type, const char *body, size_t len, bool *has_subject)
{
	char ct[200], scope[600];
	const char *hdrs[] = { ct, "Expect:", NULL };
	struct http_request req = {
		.method = "PUT",
		.post_body = body,
		.post_len = len,
		.headers = hdrs,
		.max_body = 64 * 1024,
	};
	struct http_response resp;
	int ret;

	snprintf(ct, sizeof(ct), "Content-Type: %s", media_type);
	push_scope(r, scope, sizeof(scope), repo, NULL);
	ret = api_do(r, &req, &resp, scope, "%s/manifests/%s", repo, ref);
	if (ret)
		log_err("%s/%s%s%s: manifest push: %s", r->host, repo,
			ref_valid_digest(ref) ? "@" : ":", ref, strerror(-ret));
	if (has_subject)
		*has_subject = ret == 0 && resp.oci_subject;
	http_response_release(&resp);
	return ret;
}

int registry_delete_manifest(struct registry *r, const char *repo, const char *ref)
{
	struct http_request req = { .method = "DELETE", .max_body = 64 * 1024 };
	struct http_response resp;
	char scope[600];
	int ret;

	snprintf(scope, sizeof(scope), "repository:%s:delete", repo);
	ret = api_do(r, &req, &resp, scope, "%s/manifests/%s", repo, ref);
	http_response_release(&resp);
	return ret;
}

/* ---- referrers ---- */

static const char *const index_accept[] = { "Accept: " MT_OCI_INDEX, NULL };

int registry_referrers(struct registry *r, const char *repo, const char *digest, const char *filter,
	struct manifest **out)
{
	struct http_request req = { .headers = index_accept, .max_body = MANIFEST_MAX_SIZE };
	struct http_response resp;
	struct manifest *acc = calloc(1, sizeof(*acc)), *page = NULL;
	char scope[600], *url = NULL, tag[80], *esc = NULL;
	char *body = NULL, *ct = NULL, *got = NULL;
	unsigned pages = 0;
	size_t len;
	int ret;

	if (!acc)
		return -ENOMEM;
	acc->kind = MANIFEST_INDEX;
	acc->media_type = strdup(MT_OCI_INDEX);
	if (!acc->media_type) {
		ret = -ENOMEM;
		goto out;
	}
	repo_scope(r, scope, sizeof(scope), repo);
	if (filter)
		esc = http_escape(filter);
	ret = api_do(r, &req, &resp, scope, "%s/referrers/%s%s%s", repo, digest,
		esc ? "?artifactType=" : "", esc ? esc : "");
	while (ret == 0) {
		bool filtered =
			resp.filters_applied && strstr(resp.filters_applied, "artifactType");

		ret = manifest_parse(
			resp.body.data ? resp.body.data : "", resp.body.len, NULL, &page);
		if (ret == 0)
			ret = manifest_referrers_add(acc, page, filter, filtered);
		manifest_free(page);
		page = NULL;
		if (ret < 0)
			break;
		ret = 0;
		free(url);
		url = resp.link_next;
		resp.link_next = NULL;
		http_response_release(&resp);
		if (!url)
			goto done;
		if (++pages > 10000) {
			ret = -ELOOP;
			break;
		}
		req.url = url;
		ret = registry_do(r, &req, &resp, scope);
		if (ret == 0)
			ret = http_status_to_errno(resp.status);
	}
	http_response_release(&resp);
	/* A registry without the API answers its unknown route with 404 (or 400, 405). */
	if (pages > 0 || (ret != -ENOENT && ret != -EOPNOTSUPP && ret != -EINVAL))
		goto out;
	/* No referrers API: the fallback tag sha256-<hex> holds an index of them. */
	snprintf(tag, sizeof(tag), "sha256-%.64s", digest_hex(digest) ? digest_hex(digest) : "");
	ret = registry_get_manifest(r, repo, tag, &body, &len, &ct, &got);
	if (ret == -ENOENT) {
		ret = 0;
		goto done;
	}
	if (ret == 0)
		ret = manifest_parse(body, len, ct, &page);
	if (ret == 0)
		ret = manifest_referrers_add(acc, page, filter, false);
	manifest_free(page);
	if (ret >= 0)
		ret = 0;
	else
		log_err("%s/%s:%s: referrers index: %s", r->host, repo, tag, strerror(-ret));
	if (ret)
		goto out;
done:
	*out = acc;
	acc = NULL;
out:
	if (ret && ret != -ENOENT)
		log_err("%s/%s@%s: referrers: %s", r->host, repo, digest, strerror(-ret));
	manifest_free(acc);
	free(esc);
	free(url);
	free(body);
	free(ct);
	free(got);
	return ret;
}

/* ---- referrers written here ---- */

int registry_push_empty_config(struct registry *r, const char *repo)
{
	int fd, ret;

	if (registry_blob_exists(r, repo, EMPTY_DIGEST) == 0)
		return 0;
	fd = memfd_create("ocifs-empty", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = write(fd, "{}", 2) == 2 ? 0 : -EIO;
	if (!ret)
		ret = registry_push_blob(r, repo, EMPTY_DIGEST, fd, 2, NULL);
	close(fd);
	return ret;
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
		       ? json_object_get_string(v)
		       : NULL;
}

int registry_referrers_fallback_update(struct registry *r, const char *repo, const char *subject,
	const char *digest, struct json_object *m, size_t len)
{
	struct json_object *idx = NULL, *list, *nl, *e, *v;
	char tag[80], *body = NULL, *ct = NULL, *got = NULL;
	const char *text;
	size_t blen, i, n;
	int ret;

	if (!subject || !digest_hex(subject))
		return -EBADMSG;
	snprintf(tag, sizeof(tag), "sha256-%.64s", digest_hex(subject));
	/* two attaches to one subject at once would each drop the other's entry */
	pthread_mutex_lock(&r->fallback_lock);
	ret = registry_get_manifest(r, repo, tag, &body, &blen, &ct, &got);
	if (ret == 0)
		idx = json_tokener_parse(body);
	else if (ret == -ENOENT && m)
		idx = json_tokener_parse("{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX
					 "\",\"manifests\":[]}");
	else if (ret == -ENOENT) {
		ret = 0; /* nothing to remove it from */
		goto out;
	}
	if (!idx || !json_object_object_get_ex(idx, "manifests", &list) ||
		!json_object_is_type(list, json_type_array)) {
		log_err("%s/%s:%s: not a referrers index", registry_host(r), repo, tag);
		ret = ret ? ret : -EBADMSG;
		goto out;
	}
	/* the same entry once: a push again of the same referrer replaces it */
	nl = json_object_new_array();
	n = json_object_array_length(list);
	for (i = 0; i < n; i++) {
		e = json_object_array_get_idx(list, i);
		if (!(jstr(e, "digest") && strcmp(jstr(e, "digest"), digest) == 0))
			json_object_array_add(nl, json_object_get(e));
	}
	if (m) {
		e = json_object_new_object();
		json_object_object_add(e, "mediaType", json_object_new_string(MT_OCI_MANIFEST));
		json_object_object_add(e, "digest", json_object_new_string(digest));
		json_object_object_add(e, "size", json_object_new_int64((int64_t)len));
		if (json_object_object_get_ex(m, "artifactType", &v))
			json_object_object_add(e, "artifactType", json_object_get(v));
		if (json_object_object_get_ex(m, "annotations", &v))
			json_object_object_add(e, "annotations", json_object_get(v));
		json_object_array_add(nl, e);
	}
	json_object_object_add(idx, "manifests", nl);
	text = json_object_to_json_string_ext(
		idx, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	ret = registry_put_manifest(r, repo, tag, MT_OCI_INDEX, text, strlen(text), NULL);
out:
	pthread_mutex_unlock(&r->fallback_lock);
	json_object_put(idx);
	free(body);
	free(ct);
	free(got);
	return ret;
}

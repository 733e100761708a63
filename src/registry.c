#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "buf.h"
#include "digest.h"
#include "log.h"
#include "manifest.h"
#include "ref.h"
#include "registry.h"

/* Lists are JSON of a few bytes per entry; this bounds a hostile answer. */
#define LIST_PAGE_MAX (16 * 1024 * 1024)

struct registry {
	struct http *http;
	char *host;
	struct registry_options opts;
	pthread_mutex_t lock;
	const char *scheme; /* "https" or "http" once pinged; protected by lock */
};

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
	r->http = h;
	r->opts = *o;
	if (!r->opts.page_size)
		r->opts.page_size = 1000;
	pthread_mutex_init(&r->lock, NULL);
	*out = r;
	return 0;
}

void registry_free(struct registry *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->lock);
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

static int ping_scheme(struct registry *r, const char *scheme)
{
	struct http_request req = { .max_body = 64 * 1024 };
	struct http_response resp;
	char url[512];
	int ret;

	snprintf(url, sizeof(url), "%s://%s/v2/", scheme, r->host);
	req.url = url;
	ret = http_do(r->http, &req, &resp);
	if (ret == 0 && resp.status != 200 && resp.status != 401)
		ret = resp.status == 404 ? -EPROTONOSUPPORT : http_status_to_errno(resp.status);
	http_response_release(&resp);
	return ret;
}

int registry_ping(struct registry *r)
{
	const char *scheme = registry_scheme(r);
	int ret;

	if (scheme)
		return 0;
	if (r->opts.plain_http) {
		scheme = "http";
		ret = ping_scheme(r, scheme);
	} else {
		scheme = "https";
		ret = ping_scheme(r, scheme);
		/* As docker does, loopback registries may speak plain HTTP. */
		if (ret && ref_host_is_loopback(r->host) &&
			(http_error_is_tls(ret) || ret == -ECONNRESET)) {
			scheme = "http";
			ret = ping_scheme(r, scheme);
		}
	}
	if (ret) {
		if (ret == -EPROTONOSUPPORT)
			log_err("%s: not an OCI registry (no /v2/ endpoint)", r->host);
		else
			log_err("%s: cannot reach registry: %s", r->host, strerror(-ret));
		return ret;
	}
	pthread_mutex_lock(&r->lock);
	r->scheme = scheme;
	pthread_mutex_unlock(&r->lock);
	log_debug("%s: registry at %s://%s/v2/", r->host, scheme, r->host);
	return 0;
}

/* Collect the string array `key` from every page of a paginated list. */
static int fetch_list(
	struct registry *r, const char *what, char *url, const char *key, struct strlist *out)
{
	struct http_request req = { .max_body = LIST_PAGE_MAX };
	struct http_response resp;
	unsigned pages = 0;
	int ret = 0;

	while (url) {
		struct json_object *root, *arr;
		size_t i, n;

		req.url = url;
		ret = http_do(r->http, &req, &resp);
		if (ret == 0)
			ret = http_status_to_errno(resp.status);
		if (ret) {
			if (ret != -ENOENT)
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

static char *api_url(struct registry *r, const char *fmt_path, ...)
	__attribute__((format(printf, 2, 3)));

static char *api_url(struct registry *r, const char *fmt_path, ...)
{
	struct buf b = BUF_INIT;
	va_list ap;
	char path[1024];

	va_start(ap, fmt_path);
	vsnprintf(path, sizeof(path), fmt_path, ap);
	va_end(ap);
	if (buf_printf(&b, "%s://%s/v2/%s", registry_scheme(r), r->host, path)) {
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
	const char *fmt_path, ...) __attribute__((format(printf, 4, 5)));

static int api_do(struct registry *r, struct http_request *req, struct http_response *resp,
	const char *fmt_path, ...)
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
	url = api_url(r, "%s", path);
	if (!url)
		return -ENOMEM;
	req->url = url;
	ret = http_do(r->http, req, resp);
	req->url = NULL;
	free(url);
	if (ret == 0)
		ret = http_status_to_errno(resp->status);
	return ret;
}

/* Every entry of the paginated list `key` at the API path, after a ping. */
static int list_all(struct registry *r, const char *what, const char *key, const char *path,
	struct strlist *out)
{
	char *url;
	int ret;

	memset(out, 0, sizeof(*out));
	ret = registry_ping(r);
	if (ret)
		return ret;
	url = api_url(r, "%s?n=%u", path, r->opts.page_size);
	if (!url)
		return -ENOMEM;
	return fetch_list(r, what, url, key, out);
}

int registry_catalog(struct registry *r, struct strlist *out)
{
	return list_all(r, "catalog", "repositories", "_catalog", out);
}

int registry_tags(struct registry *r, const char *repo, struct strlist *out)
{
	char what[512], path[512];

	snprintf(what, sizeof(what), "%s: tags", repo);
	snprintf(path, sizeof(path), "%s/tags/list", repo);
	return list_all(r, what, "tags", path, out);
}

int registry_get_manifest(struct registry *r, const char *repo, const char *reference, char **body,
	size_t *len, char **content_type, char **digest)
{
	struct http_request req = {
		.headers = manifest_accept,
		.max_body = MANIFEST_MAX_SIZE,
	};
	struct http_response resp;
	char got[DIGEST_STR_LEN + 1];
	const char *sep = ref_valid_digest(reference) ? "@" : ":";
	int ret;

	ret = api_do(r, &req, &resp, "%s/manifests/%s", repo, reference);
	if (ret) {
		if (ret == -EFBIG)
			log_err("%s/%s%s%s: manifest larger than %d bytes, refused", r->host, repo,
				sep, reference, MANIFEST_MAX_SIZE);
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

int registry_get_blob(struct registry *r, const char *repo, const char *digest, int64_t off,
	int64_t len, int (*sink)(void *arg, const void *p, size_t n), void *arg)
{
	struct http_request req = {
		.sink = sink,
		.sink_arg = arg,
		.range_start = off,
		.range_len = len,
		.max_body = 64 * 1024,
	};
	struct http_response resp;
	int ret;

	ret = api_do(r, &req, &resp, "%s/blobs/%s", repo, digest);
	if (ret && ret != -ENOENT)
		log_err("%s/%s@%s: blob bytes %lld+%lld: %s", r->host, repo, digest, (long long)off,
			(long long)len, strerror(-ret));
	http_response_release(&resp);
	return ret;
}

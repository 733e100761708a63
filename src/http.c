#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#include "http.h"
#include "log.h"

/*
 * Easy handles are kept in a free list and reused so that their connections,
 * and those of the share, stay warm; the share also holds DNS and TLS
 * sessions. Requests run in the caller's thread (FUSE workers).
 */
struct http_handle {
	CURL *curl;
	struct http_handle *next;
};

struct http {
	struct http_options opts;
	char *ca_file;
	char *cert_file;
	char *key_file;
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	pthread_mutex_t lock;
	struct http_handle *free_list; /* protected by lock */
};

struct transfer {
	const struct http_request *req;
	struct http_response *resp;
	int64_t pos; /* offset in the resource of the next body byte */
	int err; /* set by callbacks to abort with a specific errno */
	int64_t sent; /* bytes of an upload body handed to curl */
};

/* An upload body, read from the file as curl asks for it. */
static size_t on_upload(char *p, size_t size, size_t nmemb, void *arg)
{
	struct transfer *t = arg;
	int64_t left = t->req->upload_len - t->sent;
	size_t n = size * nmemb;
	ssize_t got;

	if (left <= 0)
		return 0;
	if ((int64_t)n > left)
		n = (size_t)left;
	do
		got = pread(t->req->upload_fd, p, n, t->req->upload_off + t->sent);
	while (got < 0 && errno == EINTR);
	if (got <= 0) {
		t->err = got < 0 ? -errno : -EIO;
		return CURL_READFUNC_ABORT;
	}
	t->sent += got;
	return (size_t)got;
}

/* curl rewinds an upload to send it again (after a 401 or a redirect). */
static int on_seek(void *arg, curl_off_t off, int origin)
{
	struct transfer *t = arg;

	if (origin != SEEK_SET || off < 0 || off > t->req->upload_len)
		return CURL_SEEKFUNC_CANTSEEK;
	t->sent = off;
	return CURL_SEEKFUNC_OK;
}

int curl_code_to_errno(int code)
{
	switch (code) {
	case CURLE_OK:
		return 0;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return -EINVAL;
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_RESOLVE_HOST:
		return -EHOSTUNREACH;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_SSL_CONNECT_ERROR:
		/* what a plain HTTP server answers to a TLS hello looks like this */
		return -EPROTO;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
		return -EACCES;
	case CURLE_TOO_MANY_REDIRECTS:
		return -ELOOP;
	case CURLE_WRITE_ERROR:
		return -EIO;
	case CURLE_FILESIZE_EXCEEDED:
		return -EFBIG;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return -ECONNRESET;
	default:
		return -EIO;
	}
}

/*
 * A reply that is not HTTP: on a connection taken again from the pool, the
 * bytes a server sent past its Content-Length (curl says "Received HTTP/0.9
 * when not allowed"), or a garbled status line. The connection is what
 * failed, not the request: said as a reset, which is tried again on a new
 * one. A redirect to a scheme curl refuses has a status; a URL of such a
 * scheme is not http(s).
 */
static bool reply_not_http(CURL *curl, CURLcode cc)
{
	long status = 0;
	char *url = NULL;

	if (cc == CURLE_WEIRD_SERVER_REPLY)
		return true;
	if (cc != CURLE_UNSUPPORTED_PROTOCOL)
		return false;
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(curl, CURLINFO_EFFECTIVE_URL, &url);
	return status == 0 && url &&
	       (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0);
}

int http_status_to_errno(long status)
{
	if (status >= 200 && status < 300)
		return 0;
	switch (status) {
	case 400:
		return -EINVAL;
	case 401:
	case 403:
		return -EACCES;
	case 404:
		return -ENOENT;
	case 405:
		return -EOPNOTSUPP;
	case 408:
		return -ETIMEDOUT;
	case 413:
		return -EFBIG;
	case 429:
		return -EAGAIN;
	default:
		return -EIO;
	}
}

bool http_error_is_tls(int err)
{
	return err == -EPROTO;
}

static void share_lock(CURL *c, curl_lock_data data, curl_lock_access access, void *arg)
{
	struct http *h = arg;

	pthread_mutex_lock(&h->share_locks[data]);
}

static void share_unlock(CURL *c, curl_lock_data data, void *arg)
{
	struct http *h = arg;

	pthread_mutex_unlock(&h->share_locks[data]);
}

static void global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

int http_new(const struct http_options *o, struct http **out)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	struct http *h;
	int i;

	pthread_once(&once, global_init);
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->opts = *o;
	if ((o->ca_file && !(h->ca_file = strdup(o->ca_file))) ||
		(o->cert_file && !(h->cert_file = strdup(o->cert_file))) ||
		(o->key_file && !(h->key_file = strdup(o->key_file))))
		goto out_free;
	for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&h->share_locks[i], NULL);
	pthread_mutex_init(&h->lock, NULL);
	h->share = curl_share_init();
	if (!h->share)
		goto out_free;
	curl_share_setopt(h->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(h->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(h->share, CURLSHOPT_USERDATA, h);
	curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	*out = h;
	return 0;

out_free:
	free(h->ca_file);
	free(h->cert_file);
	free(h->key_file);
	free(h);
	return -ENOMEM;
}

void http_free(struct http *h)
{
	struct http_handle *e, *next;
	int i;

	if (!h)
		return;
	for (e = h->free_list; e; e = next) {
		next = e->next;
		curl_easy_cleanup(e->curl);
		free(e);
	}
	curl_share_cleanup(h->share);
	for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&h->share_locks[i]);
	pthread_mutex_destroy(&h->lock);
	free(h->ca_file);
	free(h->cert_file);
	free(h->key_file);
	free(h);
}

static struct http_handle *handle_get(struct http *h)
{
	struct http_handle *e;

	pthread_mutex_lock(&h->lock);
	e = h->free_list;
	if (e)
		h->free_list = e->next;
	pthread_mutex_unlock(&h->lock);
	if (e) {
		curl_easy_reset(e->curl);
		return e;
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->curl = curl_easy_init();
	if (!e->curl) {
		free(e);
		return NULL;
	}
	return e;
}

static void handle_put(struct http *h, struct http_handle *e)
{
	pthread_mutex_lock(&h->lock);
	e->next = h->free_list;
	h->free_list = e;
	pthread_mutex_unlock(&h->lock);
}

/* The part of a body piece that falls inside the requested range. */
static size_t clip_to_range(struct transfer *t, const char **p, size_t n)
{
	const struct http_request *req = t->req;
	int64_t start = t->pos, end = t->pos + (int64_t)n;
	int64_t lo = req->range_start, hi = req->range_start + req->range_len;

	t->pos = end;
	if (req->range_len <= 0 || t->resp->status == 206)
		return n;
	/* A 200 answer to a ranged request: the whole resource, from byte 0. */
	if (end <= lo || start >= hi)
		return 0;
	if (start < lo) {
		*p += lo - start;
		start = lo;
	}
	return (size_t)((end < hi ? end : hi) - start);
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
	struct transfer *t = arg;
	size_t n = size * nmemb, keep;
	const char *q = p;
	int ret;

	if (t->req->sink && t->resp->status >= 200 && t->resp->status < 300) {
		keep = clip_to_range(t, &q, n);
		if (!keep)
			return n;
		t->resp->body_bytes += (int64_t)keep;
		ret = t->req->sink(t->req->sink_arg, q, keep);
		if (ret) {
			t->err = ret;
			return 0;
		}
		return n;
	}
	/* Bodies of error answers are small; keep them in memory for the log. */
	t->resp->body_bytes += (int64_t)n;
	if (t->req->max_body && t->resp->body.len + n > t->req->max_body) {
		t->err = -EFBIG;
		return 0;
	}
	if (buf_add(&t->resp->body, p, n)) {
		t->err = -ENOMEM;
		return 0;
	}
	return n;
}

static char *header_value(const char *line, size_t len, const char *name)
{
	size_t nl = strlen(name);
	const char *v, *end = line + len;

	if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
		return NULL;
	v = line + nl + 1;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	return strndup(v, (size_t)(end - v));
}

/* Keep a header's value, replacing one from an earlier answer (a redirect). */
static void keep_header(char **slot, char *value)
{
	if (!value)
		return;
	free(*slot);
	*slot = value;
}

char *http_link_next(const char *v)
{
	const char *lt, *gt, *params, *stop;

	for (lt = strchr(v, '<'); lt; lt = stop && *stop ? stop : NULL) {
		gt = strchr(lt, '>');
		if (!gt)
			return NULL;
		/* This entry's parameters run to the next entry's '<'. */
		params = gt + 1;
		stop = strchr(params, '<');
		if (!stop)
			stop = params + strlen(params);
		if (memmem(params, (size_t)(stop - params), "rel=\"next\"", 10) ||
			memmem(params, (size_t)(stop - params), "rel=next", 8))
			return strndup(lt + 1, (size_t)(gt - lt - 1));
	}
	return NULL;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *arg)
{
	struct transfer *t = arg;
	struct http_response *r = t->resp;
	size_t n = size * nmemb;
	char *v;

	if (n >= 5 && strncmp(p, "HTTP/", 5) == 0) {
		/* A new answer (after a redirect or 100-continue): forget the last one's. */
		free(r->content_type);
		free(r->docker_digest);
		free(r->www_authenticate);
		free(r->link_next);
		free(r->location);
		free(r->filters_applied);
		free(r->oci_subject);
		r->content_type = r->docker_digest = r->www_authenticate = r->link_next = NULL;
		r->location = r->filters_applied = r->oci_subject = NULL;
		buf_release(&r->warnings);
		v = memchr(p, ' ', n);
		r->status = v ? strtol(v + 1, NULL, 10) : 0;
		return n;
	}
	keep_header(&r->content_type, header_value(p, n, "Content-Type"));
	keep_header(&r->docker_digest, header_value(p, n, "Docker-Content-Digest"));
	keep_header(&r->www_authenticate, header_value(p, n, "WWW-Authenticate"));
	keep_header(&r->location, header_value(p, n, "Location"));
	keep_header(&r->filters_applied, header_value(p, n, "OCI-Filters-Applied"));
	keep_header(&r->oci_subject, header_value(p, n, "OCI-Subject"));
	v = header_value(p, n, "Retry-After");
	if (v) {
		/* delta-seconds only; an HTTP-date is taken as "soon" */
		r->retry_after = strtol(v, NULL, 10);
		free(v);
	}
	v = header_value(p, n, "Link");
	if (v) {
		keep_header(&r->link_next, http_link_next(v));
		free(v);
	}
	v = header_value(p, n, "Warning");
	if (v) {
		/* one line each; a warning that does not fit is dropped, not fatal */
		if (r->warnings.len < 4096)
			buf_printf(&r->warnings, "%s\n", v);
		free(v);
	}
	return n;
}

char *http_escape(const char *s)
{
	char *e = curl_easy_escape(NULL, s, 0), *out = e ? strdup(e) : NULL;

	curl_free(e);
	return out;
}

char *http_resolve_url(const char *base, const char *rel)
{
	CURLU *u = curl_url();
	char *out = NULL, *tmp = NULL;

	if (!u)
		return NULL;
	if (curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
		curl_url_set(u, CURLUPART_URL, rel, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_URL, &tmp, 0) == CURLUE_OK) {
		out = strdup(tmp);
		curl_free(tmp);
	}
	curl_url_cleanup(u);
	return out;
}

int http_do(struct http *h, const struct http_request *req, struct http_response *resp)
{
	struct transfer t = { req, resp, 0, 0, 0 };
	struct curl_slist *hdrs = NULL, *tmp;
	char range[64];
	struct http_handle *e;
	const char *method = req->method ? req->method : "GET";
	char *eff = NULL;
	CURLcode cc;
	int ret = 0;
	size_t i;

	memset(resp, 0, sizeof(*resp));
	e = handle_get(h);
	if (!e)
		return -ENOMEM;
	for (i = 0; req->headers && req->headers[i]; i++) {
		tmp = curl_slist_append(hdrs, req->headers[i]);
		if (!tmp) {
			ret = -ENOMEM;
			goto out_put;
		}
		hdrs = tmp;
	}
	if (req->range_len > 0) {
		snprintf(range, sizeof(range), "%lld-%lld", (long long)req->range_start,
			(long long)(req->range_start + req->range_len - 1));
		curl_easy_setopt(e->curl, CURLOPT_RANGE, range);
	}
	curl_easy_setopt(e->curl, CURLOPT_SHARE, h->share);
	/* Bulk bodies in fewer, larger pieces: fewer callbacks per byte. */
	if (req->sink)
		curl_easy_setopt(e->curl, CURLOPT_BUFFERSIZE, 128L * 1024);
	curl_easy_setopt(e->curl, CURLOPT_URL, req->url);
	curl_easy_setopt(e->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e->curl, CURLOPT_USERAGENT, PACKAGE_NAME "/" PACKAGE_VERSION);
	/* Registries redirect blob GETs to storage; curl drops our Authorization there. */
	curl_easy_setopt(e->curl, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(e->curl, CURLOPT_MAXREDIRS, 10L);
	curl_easy_setopt(e->curl, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(e->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e->curl, CURLOPT_WRITEDATA, &t);
	curl_easy_setopt(e->curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e->curl, CURLOPT_HEADERDATA, &t);
	curl_easy_setopt(e->curl, CURLOPT_CONNECTTIMEOUT, h->opts.connect_timeout);
	if (h->opts.timeout)
		curl_easy_setopt(e->curl, CURLOPT_TIMEOUT, h->opts.timeout);
	/* A stalled transfer is a failure, not a hang of the reader. */
	curl_easy_setopt(e->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(e->curl, CURLOPT_LOW_SPEED_TIME,
		h->opts.stall_timeout > 0 ? h->opts.stall_timeout : 30L);
	if (h->opts.insecure || req->tls_probe) {
		curl_easy_setopt(e->curl, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e->curl, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (req->tls_probe) {
		curl_easy_setopt(e->curl, CURLOPT_CAINFO, NULL);
		curl_easy_setopt(e->curl, CURLOPT_CAPATH, NULL);
		curl_easy_setopt(e->curl, CURLOPT_FORBID_REUSE, 1L);
	} else if (h->ca_file) {
		curl_easy_setopt(e->curl, CURLOPT_CAINFO, h->ca_file);
	}
	if (h->cert_file)
		curl_easy_setopt(e->curl, CURLOPT_SSLCERT, h->cert_file);
	if (h->key_file)
		curl_easy_setopt(e->curl, CURLOPT_SSLKEY, h->key_file);
	if (req->upload) {
		curl_easy_setopt(e->curl, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(e->curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->upload_len);
		curl_easy_setopt(e->curl, CURLOPT_READFUNCTION, on_upload);
		curl_easy_setopt(e->curl, CURLOPT_READDATA, &t);
		curl_easy_setopt(e->curl, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(e->curl, CURLOPT_SEEKDATA, &t);
	} else if (req->post_body) {
		curl_easy_setopt(e->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->post_len);
		curl_easy_setopt(e->curl, CURLOPT_POSTFIELDS, req->post_body);
	}
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(e->curl, CURLOPT_NOBODY, 1L);
	else if (strcmp(method, "GET") != 0 && !(strcmp(method, "POST") == 0 && req->post_body) &&
		 !(strcmp(method, "PUT") == 0 && req->upload))
		curl_easy_setopt(e->curl, CURLOPT_CUSTOMREQUEST, method);

	cc = curl_easy_perform(e->curl);
	if (t.err) {
		ret = t.err;
		goto out_put;
	}
	if (cc != CURLE_OK) {
		ret = curl_code_to_errno(cc);
		if (reply_not_http(e->curl, cc))
			ret = -ECONNRESET;
		log_debug("%s %s: %s", method, req->url, curl_easy_strerror(cc));
		goto out_put;
	}
	curl_easy_getinfo(e->curl, CURLINFO_RESPONSE_CODE, &resp->status);
	/* A short body is a failed transfer, not a short blob. */
	if (req->sink && req->range_len > 0 && resp->status >= 200 && resp->status < 300 &&
		resp->body_bytes != req->range_len) {
		log_debug("%s: %lld of %lld bytes", req->url, (long long)resp->body_bytes,
			(long long)req->range_len);
		ret = -ECONNRESET;
		goto out_put;
	}
	curl_easy_getinfo(e->curl, CURLINFO_EFFECTIVE_URL, &eff);
	resp->effective_url = strdup(eff ? eff : req->url);
	if (resp->link_next) {
		char *abs = http_resolve_url(resp->effective_url, resp->link_next);

		free(resp->link_next);
		resp->link_next = abs;
	}
	if (resp->location) {
		char *abs = http_resolve_url(resp->effective_url, resp->location);

		free(resp->location);
		resp->location = abs;
	}
	log_debug("%s %s: %ld", method, req->url, resp->status);

out_put:
	curl_slist_free_all(hdrs);
	handle_put(h, e);
	return ret;
}

void http_response_release(struct http_response *r)
{
	buf_release(&r->body);
	buf_release(&r->warnings);
	free(r->content_type);
	free(r->docker_digest);
	free(r->www_authenticate);
	free(r->link_next);
	free(r->location);
	free(r->filters_applied);
	free(r->oci_subject);
	free(r->effective_url);
	memset(r, 0, sizeof(*r));
}

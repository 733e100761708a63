/*
 * HTTP on libcurl: a pool of easy handles sharing connections, DNS and TLS
 * sessions, used from any thread.
 */
#ifndef OCIFS_HTTP_H
#define OCIFS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct http;

struct http_options {
	bool insecure; /* do not verify TLS peers */
	const char *ca_file; /* extra CA bundle, or NULL */
	const char *cert_file; /* client certificate (PEM) for mutual TLS, or NULL */
	const char *key_file; /* its private key (PEM), or NULL */
	long connect_timeout; /* seconds */
	long timeout; /* seconds for a whole request, 0 for none */
	long stall_timeout; /* seconds under 1 byte/s before a transfer is cut; 0: 30 */
};

struct http_request {
	const char
		*method; /* "GET" (default when NULL), "HEAD", "POST", "PUT", "PATCH", "DELETE" */
	const char *post_body; /* the body of a POST, PUT or PATCH from memory, or NULL */
	size_t post_len;
	/* Or the body from a file: upload_len bytes of upload_fd from upload_off (pread). */
	bool upload;
	int upload_fd;
	int64_t upload_off;
	int64_t upload_len;
	const char *url;
	const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
	size_t max_body; /* fail with -EFBIG past this many body bytes; 0: no limit */
	/*
	 * Bytes [range_start, range_start + range_len) only, when range_len > 0.
	 * A server that ignores Range and answers 200 is handled here: the bytes
	 * outside the range are dropped, so the sink sees the range either way.
	 */
	int64_t range_start;
	int64_t range_len;
	/*
	 * Where the body of a success answer goes, in order, instead of
	 * resp->body; returns 0 or -errno to abort the transfer with that error.
	 */
	int (*sink)(void *arg, const void *p, size_t n);
	void *sink_arg;
	/*
	 * Only to learn whether the server speaks TLS: its certificate is not
	 * checked, so no CA store is loaded (tens of milliseconds of parsing),
	 * and the connection is closed after. Nothing the answer says is used.
	 */
	bool tls_probe;
};

struct http_response {
	long status;
	long retry_after; /* seconds of a Retry-After header, 0 when absent */
	struct buf body; /* unless a sink was given (error bodies always land here) */
	char *content_type; /* or NULL */
	char *docker_digest; /* Docker-Content-Digest, or NULL */
	char *www_authenticate; /* or NULL */
	char *link_next; /* absolute URL of a Link rel="next", or NULL */
	char *location; /* absolute URL of a Location header (an upload session), or NULL */
	struct buf warnings; /* the values of Warning headers, a line each */
	char *filters_applied; /* OCI-Filters-Applied, or NULL */
	char *oci_subject; /* OCI-Subject (a pushed referrer's subject), or NULL */
	char *effective_url;
	int64_t body_bytes; /* bytes received */
};

/* Returns 0 and a client in *out, or -ENOMEM / -EIO. Free with http_free(). */
int http_new(const struct http_options *o, struct http **out);
void http_free(struct http *h);

/*
 * Perform one request. Returns 0 when an HTTP answer came (whatever its
 * status: look at resp->status), or a negative errno for transport failures
 * (curl_code_to_errno) and -EFBIG past max_body. The caller releases resp with
 * http_response_release() in every case.
 */
int http_do(struct http *h, const struct http_request *req, struct http_response *resp);
void http_response_release(struct http_response *r);

/* The errno for a curl failure (one table, here only). */
int curl_code_to_errno(int code);
/* The errno for an HTTP status that is not success (one table, here only). */
int http_status_to_errno(long status);

/*
 * The target of the rel="next" entry of a Link header value
 * ("<url>; rel=\"next\"", among other entries), malloc'd, or NULL.
 */
char *http_link_next(const char *value);

/* s percent-encoded for a URL query, malloc'd, or NULL. */
char *http_escape(const char *s);

/* rel resolved against base (RFC 3986), malloc'd, or NULL. */
char *http_resolve_url(const char *base, const char *rel);

/* Whether a transport error means "not TLS on the other end" (for the plain HTTP fallback). */
bool http_error_is_tls(int err);

#endif

/*
 * The OCI distribution API of one registry host, on top of http.
 */
#ifndef OCIFS_REGISTRY_H
#define OCIFS_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

struct registry;

struct registry_options {
	bool plain_http; /* never try TLS */
	unsigned page_size; /* n= for _catalog and tags/list */
	const char *auth_file; /* credentials file tried first, or NULL; borrowed */
	unsigned retry_secs; /* how long to keep retrying a failing request; 0: 300 */
	unsigned retry_delay_ms; /* the first back-off, doubled up to 50 times it; 0: 100 */
};

/* A NULL-terminated list of malloc'd strings. */
struct strlist {
	char **v;
	size_t n;
};
void strlist_release(struct strlist *l);
int strlist_add(struct strlist *l, const char *s);

/*
 * A registry client for host ("host[:port]"); nothing is sent yet. Returns 0
 * or -ENOMEM. The http client is borrowed and must outlive the registry.
 */
int registry_new(
	struct http *h, const char *host, const struct registry_options *o, struct registry **out);
void registry_free(struct registry *r);
const char *registry_host(const struct registry *r);

/*
 * Add a mirror that pulls (manifests and blobs) try, in the order added,
 * before r itself: "[http[s]://]host[:port][/prefix]", where the prefix goes
 * before repository names. A mirror is never retried: on a failure (not on a
 * 404) it is passed over for a while and the next one, or r, answers. Not
 * thread-safe: call before r is used. 0, -EINVAL or -ENOMEM.
 */
int registry_add_mirror(struct registry *r, const char *url);
/* Whether url is a mirror URL registry_add_mirror takes. */
bool registry_mirror_valid(const char *url);

/*
 * GET /v2/: finds the scheme (HTTPS, or plain HTTP for loopback hosts that do
 * not speak TLS, or with plain_http) and checks the host is a registry.
 * Returns 0, or -errno with a log line. Thread-safe; later calls are cheap.
 */
int registry_ping(struct registry *r);

/* Every repository from _catalog, following Link pagination. 0 or -errno. */
int registry_catalog(struct registry *r, struct strlist *out);

/* Every tag of repo, following Link pagination. 0, -ENOENT, or -errno. */
int registry_tags(struct registry *r, const char *repo, struct strlist *out);

/*
 * GET a manifest by tag or digest (through the mirrors first). The body is checked: at most
 * MANIFEST_MAX_SIZE (-EFBIG), its sha256 equal to reference when that is a
 * digest and to Docker-Content-Digest when present (-EBADMSG). On success
 * *body (malloc'd, NUL-terminated), *len, *content_type (malloc'd or NULL) and
 * *digest (malloc'd "sha256:...") are the caller's. -ENOENT when unknown.
 */
int registry_get_manifest(struct registry *r, const char *repo, const char *reference, char **body,
	size_t *len, char **content_type, char **digest);

/*
 * GET bytes [off, off + len) of a blob (the whole blob when len is 0), handing
 * them in order to sink (through the mirrors first; a mirror that fails part
 * way is taken over where it stopped). Returns 0, -ENOENT, or -errno (a short answer is
 * -ECONNRESET). The caller verifies the digest.
 */
int registry_get_blob(struct registry *r, const char *repo, const char *digest, int64_t off,
	int64_t len, int (*sink)(void *arg, const void *p, size_t n), void *arg);

/* HEAD a blob (with push scope): 0 when repo has it, -ENOENT, or -errno. */
int registry_blob_exists(struct registry *r, const char *repo, const char *digest);

/*
 * Upload size bytes of fd as blob digest into repo, asking for pull,push:
 * nothing when repo has it already, a cross-repository mount from from_repo
 * (or NULL) where the registry allows one, else POST then one PUT, or PATCH
 * chunks then the PUT for large blobs. Never through a mirror. 0 or -errno
 * with a log line.
 */
int registry_push_blob(struct registry *r, const char *repo, const char *digest, int fd,
	int64_t size, const char *from_repo);

/* Blobs up to this size go up in one PUT; larger ones in PATCH chunks of it. */
#define REGISTRY_UPLOAD_CHUNK (32 * 1024 * 1024)

/*
 * The steps of registry_push_blob, for an upload that starts before its
 * digest is known. _start: POST (a mount from from_repo when digest and
 * from_repo are given: then 0 with *location NULL, nothing to send), else
 * *location (malloc'd) is the session. _patch: bytes [off, off + len) of fd;
 * *location moves on. _finish: the PUT with the last bytes (len may be 0)
 * and the digest. _cancel: DELETE of the session. 0 or -errno with a log line.
 */
int registry_upload_start(struct registry *r, const char *repo, const char *digest,
	const char *from_repo, char **location);
int registry_upload_patch(
	struct registry *r, const char *repo, char **location, int fd, int64_t off, int64_t len);
int registry_upload_finish(struct registry *r, const char *repo, char **location,
	const char *digest, int fd, int64_t off, int64_t len);
void registry_upload_cancel(struct registry *r, const char *repo, const char *location);

/*
 * PUT a manifest under ref (a tag or its digest). *has_subject (may be NULL)
 * says whether the registry answered OCI-Subject: it keeps the referrers of
 * the manifest's subject itself. 0 or -errno with a log line.
 */
int registry_put_manifest(struct registry *r, const char *repo, const char *ref,
	const char *media_type, const char *body, size_t len, bool *has_subject);

/* DELETE a manifest by reference (tag or digest). 0, -ENOENT, -EOPNOTSUPP, or -errno. */
int registry_delete_manifest(struct registry *r, const char *repo, const char *ref);

/*
 * The referrers of the manifest digest in repo: the referrers API
 * (following Link pagination; filtered by artifactType when filter is not
 * NULL, by the registry where it says OCI-Filters-Applied, else here), or,
 * where the API is missing, the fallback tag sha256-<hex>. *out is an index
 * (manifest_free) whose manifests are the referrers, empty when there are
 * none. 0 or -errno with a log line.
 */
struct manifest;
int registry_referrers(struct registry *r, const char *repo, const char *digest, const char *filter,
	struct manifest **out);

/*
 * Add the manifest digest (m, len bytes; NULL to remove digest instead) to
 * the fallback referrers index of subject (the tag sha256-<hex>), keeping
 * every other entry and field of it. 0 or -errno.
 */
struct json_object;
int registry_referrers_fallback_update(struct registry *r, const char *repo, const char *subject,
	const char *digest, struct json_object *m, size_t len);

/* The empty config "{}" (EMPTY_DIGEST) into repo, unless it is there. 0 or -errno. */
int registry_push_empty_config(struct registry *r, const char *repo);

/*
 * Whether a failure is worth trying again: connection errors and the
 * statuses 429 and 5xx (as errnos: see registry_do).
 */
bool registry_retryable(int err);

#endif

/*
 * The content-addressed blob store: <dir>/blobs/sha256/<hex> holds complete,
 * verified blobs (manifests too); <dir>/tmp/ holds downloads in progress.
 * Directories are 0700 and files 0600.
 */
#ifndef OCIFS_CACHE_H
#define OCIFS_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct cache;
struct registry;

/* Create (mkdir -p) and open the store at dir. 0 or -errno with a log line. */
int cache_new(const char *dir, struct cache **out);
void cache_free(struct cache *c);

/*
 * Open the complete blob digest for reading, fetching it whole from repo on r
 * first when it is not in the store, and verifying it against digest before
 * it becomes visible. Any number of concurrent callers for one digest cause
 * one download. expected_size (-1 when unknown) is checked too. Returns an
 * fd the caller closes, or -errno: -EIO on a digest mismatch (the download is
 * discarded), -ENOENT when the registry does not have it.
 */
int cache_open_blob(struct cache *c, struct registry *r, const char *repo, const char *digest,
	int64_t expected_size);

/*
 * Read a whole small blob (a manifest, a config) into memory: from the store,
 * else as cache_open_blob(). *data is malloc'd and NUL-terminated. 0 or -errno.
 */
int cache_read_blob(struct cache *c, struct registry *r, const char *repo, const char *digest,
	int64_t expected_size, size_t max, char **data, size_t *len);

/* Store bytes already verified to hash to digest (a manifest fetched by digest). */
int cache_put(struct cache *c, const char *digest, const void *data, size_t len);

/* Read a stored blob without any network; -ENOENT when absent. */
int cache_get(struct cache *c, const char *digest, size_t max, char **data, size_t *len);

#endif

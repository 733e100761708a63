/*
 * The content-addressed blob store.
 *
 *   <dir>/blobs/sha256/<hex>     complete, verified blobs
 *   <dir>/manifests/sha256/<hex> manifests fetched by digest or verified against one: for good
 *   <dir>/partial/<hex>          a blob being fetched: a sparse file ...
 *   <dir>/partial/<hex>.map      ... and one byte per chunk, 1 once fetched
 *   <dir>/tmp/                   small blobs being written whole
 *   <dir>/staging/<id>/          files written into the mount, not yet pushed (push.c)
 *   <dir>/layers/<hex>.idx       indexes of image layers: entries, checkpoints (layer.c)
 *
 * Blobs are fetched lazily in chunks with HTTP ranges by a pool of worker
 * threads; a sequential reader gets a growing read-ahead window. A blob is
 * hashed as its chunks arrive in order and becomes complete only once its
 * sha256 matches. Directories are 0700 and files 0600.
 *
 * The bound (cache_size=, or a share of the file system) is on blobs, complete
 * and partial: least recently used first, whole blobs that are not open go,
 * then chunks of the partial blobs that are (holes punched in their files),
 * never chunks a read is using (cache_blob_prepare to cache_blob_done) nor
 * those of a blob a reader waits to see verified (cache.c: struct victim).
 *
 * Locking. Three mutexes, always taken in this order (a thread holding one
 * never waits for one above it):
 *
 *   c->evict_lock  Protects: one eviction pass at a time (its scans of blobs/
 *                  and partial/, its unlinks and holes punched). Taken with
 *                  no other cache lock held.
 *   c->lock        Protects: c->blobs and each blob's next and refs; the job
 *                  queues (urgent, ahead) and stopping; complete_bytes,
 *                  partial_bytes and complete_gen. Held briefly: never
 *                  across a fetch, a hash, a directory scan or a wait on
 *                  b->cond.
 *   b->lock        Protects: b->state, pins, used, verifying, complete,
 *                  error, fail_gen, fetch_error, hashed and hashing; b->cond
 *                  waits on it. A holder of b->lock never takes c->lock: chunks to fetch
 *                  are marked in flight under b->lock and queued after it is
 *                  dropped (the caller's reference keeps b alive meanwhile).
 *
 * Immutable after cache_blob_open: a blob's digest, size, nchunks, reg, repo
 * and fd (until it is freed); the cache's dir, chunk, max_bytes, unbounded and
 * strict.
 * Counters for stats.json are atomics and need no lock.
 *
 * No network I/O, process or directory scan runs under c->lock or b->lock:
 * fetches run in the workers holding no lock, hashing reads back under no
 * lock, eviction scans under evict_lock alone. Callers hold no cache lock
 * when they call in, and the cache calls the registry holding none, so cache
 * locks nest inside any lock of a caller.
 */
#ifndef OCIFS_CACHE_H
#define OCIFS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct blob;
struct cache;
struct registry;

#define CACHE_CHUNK_DEFAULT (1024 * 1024)
/* Parallel range requests at most, as the link asks for them (cache.c: streams). */
#define CACHE_STREAMS_DEFAULT 32

/*
 * The default bound on blobs, complete and partial: CACHE_SHARE_PCT percent of the size of
 * the file system that holds the cache, and evicting sooner where needed to
 * keep CACHE_FREE_PCT percent of it available. Both follow the file system
 * (statvfs, looked at on each eviction): a grown disk gets a bigger cache.
 */
#define CACHE_SHARE_PCT 10
#define CACHE_FREE_PCT 5

struct cache_options {
	const char *dir;
	uint64_t
		max_bytes; /* bound on blobs, complete and partial; 0 for the default (see above) */
	bool unbounded; /* no bound at all (cache_size=0 or unlimited) */
	size_t chunk_size; /* power of two; 0 for CACHE_CHUNK_DEFAULT */
	bool verify_strict; /* withhold every byte until the blob verified */
	size_t max_streams; /* parallel range requests at most; 0 for CACHE_STREAMS_DEFAULT */
};

/* Create (mkdir -p) and open the store. 0 or -errno with a log line. */
int cache_new(const struct cache_options *o, struct cache **out);
/* Start the fetch workers: after any fork (daemonizing), as threads do not survive it. */
int cache_start(struct cache *c);
/* Stop the workers, dropping queued fetches; call before the registries go away. */
void cache_stop(struct cache *c);
void cache_free(struct cache *c);

/*
 * The blob digest of size bytes, fetched from repo on r as needed: every
 * opener of one digest shares one struct blob, so one chunk downloads once.
 * r and repo are borrowed for as long as the blob is open. Returns 0, or
 * -EIO for a digest this build cannot verify. Release with cache_blob_close().
 */
int cache_blob_open(struct cache *c, struct registry *r, const char *repo, const char *digest,
	int64_t size, struct blob **out);
void cache_blob_close(struct blob *b);
int64_t cache_blob_size(const struct blob *b);
/* The digest b is of ("sha256:<hex>"), as long as b is open. */
const char *cache_blob_digest(const struct blob *b);
/* Whether b is complete and verified (and so are any of its pages the kernel holds). */
bool cache_blob_verified(struct blob *b);
/*
 * A new read-only descriptor of b's file in the cache, once b is verified:
 * for the kernel to read it itself (FUSE passthrough, fs.c). Its bytes never
 * change, and the file stays while b is open. The caller closes it. Returns
 * the descriptor, -ENOENT when b is not verified or has no file (an empty
 * blob), or -errno. No lock held.
 */
int cache_blob_verified_fd(struct blob *b);

/* One reader's position, for telling sequential reads from random ones. */
struct blob_reader {
	off_t next;
	size_t window; /* chunks of read-ahead */
	size_t ahead_end; /* read-ahead is scheduled up to this chunk (exclusive) */
	/*
	 * The reader checks what it reads against digests of its own (a
	 * published layer index): its ranges are ready once fetched, without
	 * waiting for the whole blob to verify, even at the blob's end.
	 */
	bool own_check;
};

/*
 * Make bytes [off, off + len) of b readable, fetching (and reading ahead)
 * as needed, and waiting for the whole blob to verify when the range touches
 * its last chunk (or always with verify_strict). Returns an fd to read those
 * bytes from at their offset, borrowed until cache_blob_close(), or -errno:
 * -EIO when the blob failed verification or a fetch failed. On success the
 * bytes stay until the caller, done reading them, calls cache_blob_done()
 * with the same off and len: eviction leaves them alone until then.
 */
int cache_blob_prepare(struct blob *b, struct blob_reader *rd, off_t off, size_t len);
/* The read of [off, off + len) that cache_blob_prepare() made ready is over. No lock held. */
void cache_blob_done(struct blob *b, off_t off, size_t len);

/*
 * The whole blob digest (size bytes) of repo on r, through the cache and
 * verified before a byte is given: *out (malloc'd, size bytes and a NUL).
 * 0 or -errno.
 */
int cache_blob_read_all(struct cache *c, struct registry *r, const char *repo, const char *digest,
	int64_t size, char **out);

/* Store a manifest already verified to hash to digest. */
int cache_put(struct cache *c, const char *digest, const void *data, size_t len);

/* Read a stored manifest without any network; -ENOENT when absent. */
int cache_get(struct cache *c, const char *digest, size_t max, char **data, size_t *len);

struct json_object;
/*
 * Add the cache's figures to o for .ocifs/stats.json: bytes fetched, hits
 * and misses of reads, bytes on disk, and each open blob not yet complete
 * with the percent of it fetched. 0 or -ENOMEM.
 */
int cache_stats_json(struct cache *c, struct json_object *o);
/*
 * How much of the blob digest (size bytes) the cache holds, in percent:
 * 100 only once verified. Thread-safe.
 */
int cache_cached_percent(struct cache *c, const char *digest, int64_t size);

/*
 * Bytes in the regular files directly in dir (dot files aside): their sizes,
 * or with allocated what they take on disk (partial blobs are sparse).
 */
uint64_t cache_files_bytes(const char *dir, bool allocated);

/* The cache's directory (borrowed). */
const char *cache_dir(const struct cache *c);

/*
 * Take the file at path, whose bytes hash to digest (the caller made sure),
 * as a complete blob: renamed into blobs/ (or dropped when one is there
 * already). Its new path goes into out (n bytes). 0 or -errno.
 */
int cache_adopt(struct cache *c, const char *digest, const char *path, char *out, size_t n);

#endif

#include "config.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include <json-c/json.h>

#include "digest.h"
#include "log.h"
#include "registry.h"

/*
 * Fetch streams: parallel range requests, each over a reused connection.
 * STREAMS_FIRST run at first; while every stream is busy and more of them
 * fetch more (a link that caps each connection, as CDNs and object stores
 * do), the number doubles, up to the max_streams option; where doubling
 * adds less than STREAMS_GAIN percent, it goes back and stays. Each step is
 * judged over STREAMS_PERIOD_MS of fetching.
 */
#define STREAMS_FIRST 6
#define STREAMS_GAIN 15
#define STREAMS_PERIOD_MS 300
/*
 * Bytes one request asks for at most: demanded chunks come in small requests
 * (the reader waits on the first of them), read-ahead in larger ones (fewer
 * requests), both small enough for a window to spread over the streams.
 */
#define JOB_BYTES_URGENT (4 * 1024 * 1024)
#define JOB_BYTES_AHEAD (16 * 1024 * 1024)
/*
 * Read-ahead requests last about half a second of one stream's rate (once
 * measured; 4 MiB before), within 1 MiB..JOB_BYTES_AHEAD: on a capped link
 * small enough that a window is many of them, one per stream.
 */
#define JOB_BYTES_AHEAD_FIRST (4 * 1024 * 1024)
#define JOB_BYTES_AHEAD_MIN (1024 * 1024)
/*
 * Read-ahead window of a sequential reader: first size, in chunks, and
 * bound: WINDOW_BYTES_MAX, or enough to keep every stream busy.
 */
#define WINDOW_FIRST 4
#define WINDOW_BYTES_MAX (64 * 1024 * 1024)
#define WINDOW_JOBS_PER_STREAM 2
/* Larger "blobs" are a lie of their descriptor: their chunk map alone would be gigabytes. */
#define BLOB_SIZE_MAX ((int64_t)4 << 40)
/* Times a fetch cut mid-body is resumed from where it stopped. */
#define RESUMES 5
/* How far from the last read's end a read still counts as sequential. */
#define SEQ_SLACK (8 * 1024 * 1024)
/* Seconds after which a temporary file nobody renamed is a crash's leftover. */
#define TEMP_AGE 600
/* Scans of blobs/ one eviction makes at most while other blobs complete. */
#define EVICT_PASSES 3
/* Bytes hashed per read-back of fetched chunks. */
#define HASH_BUF (256 * 1024)

enum chunk_state { CH_ABSENT = 0, CH_PRESENT = 1, CH_INFLIGHT = 2 };

/* Locks and what they protect: see the top of cache.h. */
struct blob {
	struct cache *c;
	struct blob *next; /* in c->blobs; protected by c->lock */
	unsigned refs; /* openers and queued jobs; protected by c->lock */
	char digest[DIGEST_STR_LEN + 1];
	struct registry *reg; /* the first opener's */
	char *repo;
	int64_t size;
	size_t nchunks;
	int fd; /* the data: partial file, or the complete blob */
	int map_fd; /* partial/<hex>.map, -1 once complete */

	pthread_mutex_t lock;
	/*
	 * One fetch writes into fd at a time: the file system serialises writes
	 * to one file anyway (ext4's inode lock), and its waiters spin on the
	 * CPU where these sleep. Taken with no other lock held, and none under it.
	 */
	pthread_mutex_t write_lock;
	pthread_cond_t cond; /* chunks arrived, a fetch failed, or verification ended */
	uint8_t *state; /* enum chunk_state per chunk; protected by lock */
	/* per chunk: reads between cache_blob_prepare and cache_blob_done; protected by lock */
	unsigned *pins;
	uint64_t *used; /* per chunk: c->tick when last read or fetched; protected by lock */
	unsigned verifying; /* readers waiting for the whole blob to verify; protected by lock */
	bool complete; /* verified; protected by lock */
	int error; /* verification failed: every read fails; protected by lock */
	unsigned fail_gen; /* bumped when a fetch fails; protected by lock */
	int fetch_error; /* that fetch's error; protected by lock */
	int64_t hashed; /* bytes fed to hash, in order; never rewritten; protected by lock */
	bool hashing; /* a thread is feeding hash; protected by lock */
	/* used by the hashing thread only; started over under lock by eviction while none hashes */
	struct digest_ctx *hash;
};

struct job {
	struct job *next;
	struct blob *b; /* holds a reference once queued */
	size_t first;
	size_t n;
	bool urgent; /* demanded by a reader, not read-ahead */
};

struct cache {
	char *dir;
	size_t chunk;
	uint64_t max_bytes; /* cache_size=; 0 for the default, a share of the file system */
	bool unbounded;
	bool strict;
	pthread_mutex_t evict_lock; /* one eviction pass at a time */
	pthread_mutex_t lock;
	struct blob *blobs; /* open blobs; protected by lock */
	/* Demanded chunks go before read-ahead. protected by lock */
	struct job *urgent, **urgent_tail;
	struct job *ahead, **ahead_tail;
	pthread_cond_t work;
	bool stopping; /* protected by lock */
	pthread_t *workers; /* max_streams of them */
	size_t n_workers;
	size_t max_streams;
	/* How many workers may fetch at once, and what that brought. protected by lock */
	size_t streams;
	size_t busy; /* workers running a job */
	bool settled; /* more streams did not help: stay */
	uint64_t period_start_ns; /* the current judging period: when it began, */
	uint64_t period_bytes; /* st_fetched then, */
	bool period_full; /* and whether every stream was busy throughout */
	uint64_t prev_rate; /* bytes/s of the last period at prev_streams (0: none) */
	size_t prev_streams; /* the number before the last doubling */
	uint64_t stream_rate; /* bytes/s of one stream, when all were busy (0: not yet) */
	uint64_t complete_bytes; /* estimate; eviction rescans; protected by lock */
	uint64_t partial_bytes; /* estimate, the same for partial blobs; protected by lock */
	/*
	 * What the last eviction pass left when it could not go under the bound
	 * (what is left is in use), 0 when it could: until a blob closes, only
	 * growth past it calls for another pass. protected by lock
	 */
	uint64_t over_floor;
	uint64_t tick; /* the clock of chunk use, for eviction (atomic) */
	unsigned complete_gen; /* bumped by each blob completed; protected by lock */
	/* For .ocifs/stats.json (atomic) */
	uint64_t st_fetched; /* bytes received from registries */
	uint64_t st_hits; /* reads whose bytes were all in the cache */
	uint64_t st_misses; /* reads that waited for a fetch */
};

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];
	char *p;

	if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	for (p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

static void blob_path(const struct cache *c, const char *digest, char *out, size_t n)
{
	snprintf(out, n, "%s/blobs/sha256/%s", c->dir, digest_hex(digest));
}

/* Manifests are kept apart: small, and cached for good (never evicted). */
static void manifest_path(const struct cache *c, const char *digest, char *out, size_t n)
{
	snprintf(out, n, "%s/manifests/sha256/%s", c->dir, digest_hex(digest));
}

static void partial_path(
	const struct cache *c, const char *digest, const char *suffix, char *out, size_t n)
{
	snprintf(out, n, "%s/partial/%s%s", c->dir, digest_hex(digest), suffix);
}

static int pwrite_all(int fd, const void *p, size_t n, off_t off)
{
	const char *q = p;

	while (n) {
		ssize_t w = pwrite(fd, q, n, off);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		q += w;
		n -= (size_t)w;
		off += w;
	}
	return 0;
}

/* ---- eviction ---- */

/*
 * What eviction drops, least recently used first, until the blobs are
 * within cache_bound(): first whole blobs that no one has open, complete
 * ones (blobs/) and partial ones (partial/, with their maps) alike, by
 * atime, which opening and closing set; then single chunks of the partial
 * blobs that are open, by when each was last read or fetched (c->tick),
 * those the hash has not taken yet before those it has (dropping one of
 * those starts the blob's hash over, and a reader of it to its end fetches
 * it again): never a chunk a read uses (between cache_blob_prepare and
 * cache_blob_done), nor any chunk of a blob that a reader waits to see
 * verified. A complete
 * blob that is open is kept whole.
 */
struct victim {
	char name[80];
	struct timespec atime;
	uint64_t bytes; /* complete: its size; partial: what it and its map take on disk */
	bool partial;
};

static int victim_cmp(const void *a, const void *b)
{
	const struct victim *x = a, *y = b;

	if (x->atime.tv_sec != y->atime.tv_sec)
		return x->atime.tv_sec < y->atime.tv_sec ? -1 : 1;
	if (x->atime.tv_nsec != y->atime.tv_nsec)
		return x->atime.tv_nsec < y->atime.tv_nsec ? -1 : 1;
	return 0;
}

/* A chunk of an open partial blob that may go. */
struct chunk_victim {
	struct blob *b; /* a reference is held */
	size_t i;
	bool hashed; /* the hash took it */
	uint64_t used;
};

static int chunk_victim_cmp(const void *a, const void *b)
{
	const struct chunk_victim *x = a, *y = b;

	if (x->hashed != y->hashed)
		return x->hashed ? 1 : -1;
	if (x->used != y->used)
		return x->used < y->used ? -1 : 1;
	return 0;
}

static bool blob_unref_locked(struct cache *c, struct blob *b);

/* Whether the blob with this hex is open here. Caller holds c->lock. */
static bool blob_is_open(struct cache *c, const char *hex)
{
	struct blob *b;

	for (b = c->blobs; b; b = b->next)
		if (strcmp(digest_hex(b->digest), hex) == 0)
			return true;
	return false;
}

/*
 * The bound on the blobs, complete and partial, that add up to total bytes
 * now: cache_size=, or by default CACHE_SHARE_PCT of the cache's file
 * system, lowered by what it takes to keep CACHE_FREE_PCT of it available.
 * UINT64_MAX for none.
 */
static uint64_t cache_bound(struct cache *c, uint64_t total)
{
	uint64_t size, avail, reserve, limit;
	struct statvfs sv;

	if (c->unbounded)
		return UINT64_MAX;
	if (c->max_bytes)
		return c->max_bytes;
	if (statvfs(c->dir, &sv) || !sv.f_blocks)
		return UINT64_MAX; /* nothing to take a share of: the disk tells ENOSPC */
	size = (uint64_t)sv.f_blocks * sv.f_frsize;
	avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	limit = size / 100 * CACHE_SHARE_PCT;
	reserve = size / 100 * CACHE_FREE_PCT;
	if (avail < reserve) {
		uint64_t room = total > reserve - avail ? total - (reserve - avail) : 0;

		if (room < limit)
			limit = room;
	}
	return limit;
}

/*
 * Whether the blobs are over the bound, and more than the last pass could not
 * help: cache_evict() has work. No lock held.
 */
static bool cache_over(struct cache *c)
{
	uint64_t total, floor;

	if (c->unbounded)
		return false;
	pthread_mutex_lock(&c->lock);
	total = c->complete_bytes + c->partial_bytes;
	floor = c->over_floor;
	pthread_mutex_unlock(&c->lock);
	return total > floor && total > cache_bound(c, total);
}

static uint64_t sub_sat(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

/* Bytes of chunks [from, to) of b. */
static uint64_t chunks_bytes(const struct blob *b, size_t from, size_t to)
{
	int64_t start = (int64_t)from * (int64_t)b->c->chunk;
	int64_t end = (int64_t)to * (int64_t)b->c->chunk;

	if (end > b->size)
		end = b->size;
	return end > start ? (uint64_t)(end - start) : 0;
}

/*
 * Whether chunks of b may be dropped now: it is partial, no thread is at its
 * hash (which reads chunks back with no lock held, and keeps the role while
 * it finishes the blob), and no reader waits for it to verify (which takes
 * every chunk at once). Caller holds b->lock.
 */
static bool chunks_may_go(const struct blob *b)
{
	return !b->complete && !b->error && !b->hashing && !b->verifying && b->map_fd >= 0;
}

/*
 * Drop chunk i of the open partial blob b from the disk: a hole punched in
 * its file, its byte in the map cleared. Nothing when it is in use by now.
 * Returns the bytes freed. Caller holds a reference on b and no cache lock.
 */
static uint64_t chunk_evict(struct blob *b, size_t i)
{
	static const uint8_t zero = 0, one = 1;
	off_t off = (off_t)i * (off_t)b->c->chunk;
	uint64_t len = chunks_bytes(b, i, i + 1);
	unsigned char raw[DIGEST_RAW_LEN];
	int ret;

	pthread_mutex_lock(&b->lock);
	if (!chunks_may_go(b) || b->state[i] != CH_PRESENT || b->pins[i]) {
		pthread_mutex_unlock(&b->lock);
		return 0;
	}
	/* In flight while it goes: no one fetches it, hashes it or hands it out. */
	b->state[i] = CH_INFLIGHT;
	/*
	 * Bytes the hash took are never written again (fetch_sink): once some
	 * go, the hash starts over, from what is there then.
	 */
	if (off < b->hashed) {
		digest_ctx_raw(b->hash, raw);
		b->hashed = 0;
	}
	pthread_mutex_unlock(&b->lock);

	/* The map forgets the chunk before its bytes go: a crash never lies. */
	ret = pwrite_all(b->map_fd, &zero, 1, (off_t)i);
	if (!ret && fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, (off_t)len))
		ret = -errno;
	if (ret == -EOPNOTSUPP || ret == -ENOSYS) {
		/* nothing went: the chunk stays (whole blobs still go once closed) */
		log_debug("cache: %s: cannot punch holes: %s", b->digest, strerror(-ret));
		if (!pwrite_all(b->map_fd, &one, 1, (off_t)i)) {
			pthread_mutex_lock(&b->lock);
			b->state[i] = CH_PRESENT;
			pthread_cond_broadcast(&b->cond);
			pthread_mutex_unlock(&b->lock);
			return 0;
		}
	}
	pthread_mutex_lock(&b->lock);
	b->state[i] = CH_ABSENT;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
	return ret ? 0 : len;
}

/*
 * Drop chunks of the open partial blobs, least recently used first, while
 * total bytes are over bound. Returns the bytes freed; *closed is set when
 * a blob closed meanwhile (the reference taken here was its last). Caller
 * holds evict_lock alone.
 */
static uint64_t evict_chunks(struct cache *c, uint64_t total, uint64_t bound, bool *closed)
{
	struct chunk_victim *v = NULL;
	struct blob **held = NULL, *b;
	size_t n = 0, cap = 0, nheld = 0, cap_held = 0, i;
	uint64_t freed = 0;

	pthread_mutex_lock(&c->lock);
	for (b = c->blobs; b; b = b->next) {
		size_t before = n;

		if (nheld == cap_held) {
			size_t more = cap_held ? 2 * cap_held : 16;
			struct blob **nh = realloc(held, more * sizeof(*held));

			if (!nh)
				break;
			held = nh;
			cap_held = more;
		}
		pthread_mutex_lock(&b->lock);
		for (i = 0; chunks_may_go(b) && i < b->nchunks; i++) {
			if (b->state[i] != CH_PRESENT || b->pins[i])
				continue;
			if (n == cap) {
				size_t more = cap ? 2 * cap : 256;
				struct chunk_victim *nv = realloc(v, more * sizeof(*v));

				if (!nv)
					break;
				v = nv;
				cap = more;
			}
			v[n++] = (struct chunk_victim){ b, i,
				(int64_t)i * (int64_t)c->chunk < b->hashed, b->used[i] };
		}
		pthread_mutex_unlock(&b->lock);
		if (n > before) {
			b->refs++;
			held[nheld++] = b;
		}
	}
	pthread_mutex_unlock(&c->lock);

	if (n)
		qsort(v, n, sizeof(*v), chunk_victim_cmp);
	for (i = 0; i < n && sub_sat(total, freed) > bound; i++)
		freed += chunk_evict(v[i].b, v[i].i);
	if (freed)
		log_debug("cache: dropped %llu bytes of chunks of open blobs",
			(unsigned long long)freed);

	pthread_mutex_lock(&c->lock);
	for (i = 0; i < nheld; i++)
		*closed |= blob_unref_locked(c, held[i]);
	pthread_mutex_unlock(&c->lock);
	free(held);
	free(v);
	return freed;
}

/*
 * Add the blobs in dir to *v (*n of them, room for *cap): complete ones with
 * their size, partial ones (partial, true) with what each file and its map
 * take on disk, as they are sparse. Returns their bytes.
 */
static uint64_t scan_blobs(const char *dir, bool partial, struct victim **v, size_t *n, size_t *cap)
{
	uint64_t total = 0;
	struct dirent *de;
	DIR *d = opendir(dir);

	while (d && (de = readdir(d))) {
		size_t len = strlen(de->d_name);
		struct stat st, map;
		uint64_t bytes;

		if (de->d_name[0] == '.' || len >= sizeof((*v)->name))
			continue;
		/* a map is counted with its blob */
		if (partial && len > 4 && strcmp(de->d_name + len - 4, ".map") == 0)
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, 0) || !S_ISREG(st.st_mode))
			continue;
		bytes = (uint64_t)st.st_size;
		if (partial) {
			char name[sizeof((*v)->name) + 4];

			bytes = (uint64_t)st.st_blocks * 512;
			snprintf(name, sizeof(name), "%s.map", de->d_name);
			if (fstatat(dirfd(d), name, &map, 0) == 0)
				bytes += (uint64_t)map.st_blocks * 512;
		}
		total += bytes;
		if (*n == *cap) {
			size_t more = *cap ? 2 * *cap : 64;
			struct victim *nv = realloc(*v, more * sizeof(**v));

			if (!nv)
				continue; /* counted, but not a victim this time */
			*v = nv;
			*cap = more;
		}
		snprintf((*v)[*n].name, sizeof((*v)[*n].name), "%s", de->d_name);
		(*v)[*n].atime = st.st_atim;
		(*v)[*n].bytes = bytes;
		(*v)[*n].partial = partial;
		(*n)++;
	}
	if (d)
		closedir(d);
	return total;
}

/*
 * Remove the blob v names, unless it is open here or, partial, in another
 * daemon that shares the cache (it holds a shared lock on the file: see
 * blob_open_partial). Caller holds c->lock.
 */
static bool blob_drop(struct cache *c, const struct victim *v)
{
	char path[PATH_MAX];
	bool gone;
	int fd;

	if (blob_is_open(c, v->name))
		return false;
	if (!v->partial) {
		snprintf(path, sizeof(path), "%s/blobs/sha256/%s", c->dir, v->name);
		return unlink(path) == 0;
	}
	snprintf(path, sizeof(path), "%s/partial/%s", c->dir, v->name);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return false;
	gone = flock(fd, LOCK_EX | LOCK_NB) == 0 && unlink(path) == 0;
	if (gone) {
		snprintf(path, sizeof(path), "%s/partial/%s.map", c->dir, v->name);
		unlink(path);
	}
	close(fd);
	return gone;
}

/*
 * Bring the blobs under cache_bound(), in the order struct victim tells.
 * Unless force, only when cache_over() still says so once evict_lock is
 * held: a pass that ran meanwhile may have done it. Called with no cache
 * lock held: the scans run under evict_lock alone, and each unlink under
 * c->lock, so that a blob cannot be opened between the check that it is not
 * open and its removal (cache_blob_open opens files under c->lock).
 */
static void cache_evict(struct cache *c, bool force)
{
	char dir[PATH_MAX];
	struct victim *v;
	size_t n, cap, i;
	uint64_t complete, partial, partial_then, bound;
	unsigned gen, passes = 0;
	bool again, closed = false;

	pthread_mutex_lock(&c->evict_lock);
	if (!force && !cache_over(c)) {
		pthread_mutex_unlock(&c->evict_lock);
		return;
	}
	do {
		v = NULL;
		n = cap = 0;
		pthread_mutex_lock(&c->lock);
		gen = c->complete_gen;
		partial_then = c->partial_bytes;
		pthread_mutex_unlock(&c->lock);
		snprintf(dir, sizeof(dir), "%s/blobs/sha256", c->dir);
		complete = scan_blobs(dir, false, &v, &n, &cap);
		snprintf(dir, sizeof(dir), "%s/partial", c->dir);
		partial = scan_blobs(dir, true, &v, &n, &cap);
		if (n)
			qsort(v, n, sizeof(*v), victim_cmp);
		bound = cache_bound(c, complete + partial);
		for (i = 0; i < n && complete + partial > bound; i++) {
			bool gone;

			pthread_mutex_lock(&c->lock);
			gone = blob_drop(c, &v[i]);
			pthread_mutex_unlock(&c->lock);
			if (!gone)
				continue;
			if (v[i].partial)
				partial = sub_sat(partial, v[i].bytes);
			else
				complete = sub_sat(complete, v[i].bytes);
			log_debug("cache: evicted %s sha256:%s (%llu bytes)",
				v[i].partial ? "partial" : "complete", v[i].name,
				(unsigned long long)v[i].bytes);
		}
		free(v);
		if (complete + partial > bound)
			partial = sub_sat(
				partial, evict_chunks(c, complete + partial, bound, &closed));
		/*
		 * A blob completed during the scan may have been missed: scan again
		 * (a few times at most; the next completion evicts anyway). Chunks
		 * that arrived during it are counted on top: twice at worst, which
		 * only makes the next pass come sooner.
		 */
		pthread_mutex_lock(&c->lock);
		again = c->complete_gen != gen && ++passes < EVICT_PASSES;
		if (!again) {
			c->complete_bytes = complete;
			c->partial_bytes = partial + sub_sat(c->partial_bytes, partial_then);
			c->over_floor = complete + partial > bound
						? c->complete_bytes + c->partial_bytes
						: 0;
		}
		pthread_mutex_unlock(&c->lock);
	} while (again);
	pthread_mutex_unlock(&c->evict_lock);
	/* the last reference to a blob was the pass's own: it may go now */
	if (closed)
		cache_evict(c, false);
}

/* Evict when the blobs are over the bound. Caller holds no cache lock. */
static void cache_trim(struct cache *c)
{
	if (cache_over(c))
		cache_evict(c, false);
}

/*
 * A blob of size bytes became complete. Caller holds c->lock, and calls
 * cache_evict() when cache_over() once it has dropped it.
 */
static void account_complete(struct cache *c, int64_t size)
{
	c->complete_bytes += (uint64_t)size;
	c->complete_gen++;
}

/* ---- verification ---- */

/*
 * Verification ended: move the data into place, or discard it. Called by the
 * thread that fed the hash its last byte, which holds the hashing role
 * (b->hashing) until b is complete or failed: the hash is finalized once.
 */
static void blob_finish(struct blob *b)
{
	struct cache *c = b->c;
	char got[DIGEST_STR_LEN + 1], from[PATH_MAX], to[PATH_MAX], map[PATH_MAX];
	int err = 0;

	digest_ctx_final(b->hash, got);
	partial_path(c, b->digest, "", from, sizeof(from));
	partial_path(c, b->digest, ".map", map, sizeof(map));
	blob_path(c, b->digest, to, sizeof(to));
	if (strcmp(got, b->digest) != 0) {
		log_err("%s/%s@%s: content hashes to %s: discarded", registry_host(b->reg), b->repo,
			b->digest, got);
		err = -EIO;
	} else if (rename(from, to) && !(errno == ENOENT && access(to, F_OK) == 0)) {
		/*
		 * ENOENT with the blob in place: another daemon sharing the cache
		 * (a server taking over from this one) fetched the same partial
		 * file and moved it first. It is the file this one verified.
		 */
		err = -errno;
		log_err("cache: %s: %s", to, strerror(errno));
	}
	if (err)
		unlink(from);
	unlink(map);

	/*
	 * A failed blob leaves the list before its readers learn of it: one
	 * that opens again after its EIO starts over with a fresh struct blob
	 * and does not find this one's error.
	 */
	if (err) {
		struct blob **p;

		pthread_mutex_lock(&c->lock);
		for (p = &c->blobs; *p; p = &(*p)->next)
			if (*p == b) {
				*p = b->next;
				b->next = NULL;
				break;
			}
		pthread_mutex_unlock(&c->lock);
	}
	/* Never both locks here: the readers woken next may queue fetches. */
	pthread_mutex_lock(&b->lock);
	assert(b->hashing && !b->complete && !b->error);
	if (err) {
		b->error = -EIO;
	} else {
		b->complete = true;
		close(b->map_fd);
		b->map_fd = -1;
	}
	b->hashing = false;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);

	/* its partial file went: complete in blobs/, or discarded */
	pthread_mutex_lock(&c->lock);
	c->partial_bytes = sub_sat(c->partial_bytes, (uint64_t)b->size);
	if (!err)
		account_complete(c, b->size);
	pthread_mutex_unlock(&c->lock);
	if (!err)
		cache_trim(c);
}

/* Where the run of present chunks from byte `from` ends, in bytes. Caller holds b->lock. */
static int64_t present_end(const struct blob *b, int64_t from)
{
	size_t i = (size_t)(from / (int64_t)b->c->chunk);
	int64_t end;

	while (i < b->nchunks && b->state[i] == CH_PRESENT)
		i++;
	end = (int64_t)i * (int64_t)b->c->chunk;
	if (end > b->size)
		end = b->size;
	return end > from ? end : from;
}

/*
 * Feed what arrived in order since the hash frontier to the hash, reading it
 * back, and finish the blob when the last byte is in. One thread hashes at a
 * time; one that finds another at it leaves, the other sees its chunks
 * before it stops. The thread that sees the last byte hashed keeps the role
 * through blob_finish(): a thread coming late would otherwise find the blob
 * fully hashed but neither complete nor failed yet, and finish it again.
 * (Fetches feed the hash directly when they write at the frontier: see
 * fetch_sink.)
 */
static void blob_advance_hash(struct blob *b)
{
	char *buf = NULL;
	int64_t off, end;
	bool done = false;

	pthread_mutex_lock(&b->lock);
	if (b->hashing || b->complete || b->error) {
		pthread_mutex_unlock(&b->lock);
		return;
	}
	b->hashing = true;
	while ((end = present_end(b, b->hashed)) > b->hashed) {
		off = b->hashed;
		pthread_mutex_unlock(&b->lock);
		if (!buf)
			buf = malloc(HASH_BUF);
		while (buf && off < end) {
			size_t want =
				(size_t)(end - off) < HASH_BUF ? (size_t)(end - off) : HASH_BUF;
			ssize_t r = pread(b->fd, buf, want, off);

			if (r <= 0)
				break;
			digest_ctx_update(b->hash, buf, (size_t)r);
			off += r;
		}
		pthread_mutex_lock(&b->lock);
		b->hashed = off;
		if (off < end) {
			/* Cannot read back what was written: this blob cannot verify. */
			log_err("cache: reading back %s failed", b->digest);
			b->error = -EIO;
			pthread_cond_broadcast(&b->cond);
			break;
		}
	}
	/*
	 * Fetches hash at the frontier before they mark their chunks present
	 * (fetch_sink): the blob is finished once every chunk is marked, so that
	 * no fetch writes the map after blob_finish closed it. The fetch that
	 * marks the last one calls in again (run_job).
	 */
	done = !b->error && b->hashed == b->size && present_end(b, 0) == b->size;
	if (!done)
		b->hashing = false;
	pthread_mutex_unlock(&b->lock);
	free(buf);
	if (done)
		blob_finish(b);
}

/* ---- fetching ---- */

struct fetch {
	struct blob *b;
	off_t pos; /* where the next byte goes */
	size_t next_chunk; /* first chunk of the job not yet marked present */
	size_t end_chunk;
};

/*
 * Mark chunks [from, to) present, persist it, wake readers; then, as they
 * take room, evict what the bound asks. Caller holds no cache lock.
 */
static void chunks_arrived(struct blob *b, size_t from, size_t to)
{
	static const uint8_t one = 1;
	struct cache *c = b->c;
	uint64_t now = __atomic_add_fetch(&c->tick, 1, __ATOMIC_RELAXED);
	size_t i;

	/* The data is written before the map says so: a crash never lies. */
	for (i = from; i < to; i++)
		pwrite_all(b->map_fd, &one, 1, (off_t)i);
	pthread_mutex_lock(&b->lock);
	for (i = from; i < to; i++) {
		b->state[i] = CH_PRESENT;
		b->used[i] = now;
	}
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
	pthread_mutex_lock(&c->lock);
	c->partial_bytes += chunks_bytes(b, from, to);
	pthread_mutex_unlock(&c->lock);
	cache_trim(c);
}

static int fetch_sink(void *arg, const void *p, size_t n)
{
	struct fetch *f = arg;
	struct blob *b = f->b;
	size_t chunk = b->c->chunk, done, skip = 0;
	bool inline_hash;
	int ret;

	pthread_mutex_lock(&b->lock);
	/*
	 * Bytes below the hash frontier were hashed as they were first written:
	 * a refetch (after a failed one) must not replace them with others.
	 */
	if (b->hashed > f->pos)
		skip = b->hashed - f->pos < (int64_t)n ? (size_t)(b->hashed - f->pos) : n;
	/* At the frontier, hash now rather than read it back later. */
	inline_hash = !b->hashing && !b->complete && !b->error && b->hashed == f->pos + (off_t)skip;
	if (inline_hash)
		b->hashing = true;
	pthread_mutex_unlock(&b->lock);

	__atomic_add_fetch(&b->c->st_fetched, (uint64_t)n, __ATOMIC_RELAXED);
	pthread_mutex_lock(&b->write_lock);
	ret = pwrite_all(b->fd, (const char *)p + skip, n - skip, f->pos + (off_t)skip);
	pthread_mutex_unlock(&b->write_lock);
	if (!ret && inline_hash)
		digest_ctx_update(b->hash, (const char *)p + skip, n - skip);
	if (inline_hash) {
		pthread_mutex_lock(&b->lock);
		if (!ret)
			b->hashed += (int64_t)(n - skip);
		b->hashing = false;
		pthread_mutex_unlock(&b->lock);
	}
	if (ret) {
		log_err("cache: writing %s: %s", b->digest, strerror(-ret));
		return ret;
	}
	f->pos += (off_t)n;
	/* Hand each chunk to readers as soon as it is whole. */
	done = f->pos >= b->size ? b->nchunks : (size_t)f->pos / chunk;
	if (done > f->end_chunk)
		done = f->end_chunk;
	if (done > f->next_chunk) {
		chunks_arrived(b, f->next_chunk, done);
		f->next_chunk = done;
	}
	return 0;
}

static void run_job(struct cache *c, struct job *j)
{
	struct blob *b = j->b;
	struct fetch f = { b, (off_t)(j->first * c->chunk), j->first, j->first + j->n };
	int64_t len = (int64_t)(j->n * c->chunk);
	unsigned tries = 0;
	size_t i;
	int ret;

	if (f.pos + len > b->size)
		len = b->size - f.pos;
	ret = registry_get_blob(b->reg, b->repo, b->digest, f.pos, len, fetch_sink, &f);
	/* Cut mid-body: resume where it stopped, a few times. */
	while (ret && registry_retryable(ret) && f.pos > (off_t)(j->first * c->chunk) &&
		f.pos < (off_t)(j->first * c->chunk) + len && ++tries <= RESUMES) {
		int64_t done = f.pos - (off_t)(j->first * c->chunk);

		ret = registry_get_blob(
			b->reg, b->repo, b->digest, f.pos, len - done, fetch_sink, &f);
	}
	/* The sink took every byte: whatever the transfer said afterwards, the job is done. */
	if (f.next_chunk == f.end_chunk)
		ret = 0;
	else if (ret == 0)
		ret = -EIO;
	if (ret) {
		pthread_mutex_lock(&b->lock);
		for (i = f.next_chunk; i < f.end_chunk; i++)
			b->state[i] = CH_ABSENT;
		b->fetch_error = ret;
		b->fail_gen++;
		pthread_cond_broadcast(&b->cond);
		pthread_mutex_unlock(&b->lock);
	}
	/* The chunks that did arrive may carry the hash on, to the blob's end. */
	blob_advance_hash(b);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Bytes one read-ahead request asks for. Caller holds c->lock (or reads a stale value). */
static size_t job_bytes_ahead(const struct cache *c)
{
	uint64_t b = c->stream_rate ? c->stream_rate / 2 : JOB_BYTES_AHEAD_FIRST;

	if (b > JOB_BYTES_AHEAD)
		b = JOB_BYTES_AHEAD;
	if (b < JOB_BYTES_AHEAD_MIN)
		b = JOB_BYTES_AHEAD_MIN;
	return (size_t)b;
}

/* Whether jobs wait for a stream. Caller holds c->lock. */
static bool jobs_waiting(const struct cache *c)
{
	return c->urgent || c->ahead;
}

/*
 * A period with every stream busy fetched at rate: double the streams while
 * that pays, else go back to what paid and stay. Caller holds c->lock.
 */
static void streams_judge(struct cache *c, uint64_t rate)
{
	if (c->prev_rate && rate * 100 < c->prev_rate * (100 + STREAMS_GAIN)) {
		log_info("cache: %zu fetch streams (%" PRIu64 " MiB/s; %zu gave %" PRIu64 " MiB/s)",
			c->prev_streams, c->prev_rate >> 20, c->streams, rate >> 20);
		c->streams = c->prev_streams;
		c->settled = true;
	} else if (c->streams < c->max_streams) {
		c->prev_rate = rate;
		c->prev_streams = c->streams;
		c->streams = 2 * c->streams < c->max_streams ? 2 * c->streams : c->max_streams;
		log_info("cache: %zu fetch streams, trying %zu (%" PRIu64 " MiB/s so far)",
			c->prev_streams, c->streams, rate >> 20);
		pthread_cond_broadcast(&c->work);
	} else {
		c->settled = true;
		log_info("cache: %zu fetch streams (%" PRIu64 " MiB/s)", c->streams, rate >> 20);
	}
}

/*
 * End the judging period if it is long enough: one when every stream was
 * busy and jobs waited says what a stream fetches, and whether more streams
 * fetch more. Caller holds c->lock.
 */
static void streams_adapt(struct cache *c)
{
	uint64_t now = now_ns(), fetched, rate, dt = now - c->period_start_ns;

	if (dt < (uint64_t)STREAMS_PERIOD_MS * 1000000u)
		return;
	fetched = __atomic_load_n(&c->st_fetched, __ATOMIC_RELAXED);
	rate = (fetched - c->period_bytes) * 1000000000u / dt;
	if (c->period_full) {
		c->stream_rate = rate / c->streams; /* at least 1 stream once started */
		if (!c->settled)
			streams_judge(c, rate);
	}
	c->period_start_ns = now;
	c->period_bytes = fetched;
	c->period_full = jobs_waiting(c);
}

static void *worker_main(void *arg)
{
	struct cache *c = arg;
	struct job *j;
	bool closed;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		while (!c->stopping && (!jobs_waiting(c) || c->busy >= c->streams)) {
			/* a stream idle while none waits: the period shows no shortage */
			if (!jobs_waiting(c))
				c->period_full = false;
			pthread_cond_wait(&c->work, &c->lock);
		}
		if (c->stopping)
			break;
		if (c->urgent) {
			j = c->urgent;
			c->urgent = j->next;
			if (!c->urgent)
				c->urgent_tail = &c->urgent;
		} else {
			j = c->ahead;
			c->ahead = j->next;
			if (!c->ahead)
				c->ahead_tail = &c->ahead;
		}
		c->busy++;
		pthread_mutex_unlock(&c->lock);
		run_job(c, j);
		pthread_mutex_lock(&c->lock);
		c->busy--;
		if (!jobs_waiting(c))
			c->period_full = false;
		streams_adapt(c);
		closed = blob_unref_locked(c, j->b);
		free(j);
		if (closed) {
			pthread_mutex_unlock(&c->lock);
			cache_trim(c);
			pthread_mutex_lock(&c->lock);
		}
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/*
 * Make jobs for the absent chunks of [first, last], marking them in flight,
 * and add them to *todo for queue_jobs(). Caller holds b->lock (and so not
 * c->lock: the jobs are queued once b->lock is dropped).
 */
static void schedule(struct blob *b, size_t first, size_t last, bool urgent, size_t ahead_bytes,
	struct job **todo)
{
	struct cache *c = b->c;
	size_t i = first, max = (urgent ? JOB_BYTES_URGENT : ahead_bytes) / c->chunk;

	if (!max)
		max = 1;
	if (last >= b->nchunks)
		last = b->nchunks - 1;
	while (i <= last) {
		struct job *j;
		size_t n = 0;

		if (b->state[i] != CH_ABSENT) {
			i++;
			continue;
		}
		while (i + n <= last && n < max && b->state[i + n] == CH_ABSENT)
			n++;
		j = calloc(1, sizeof(*j));
		if (!j)
			return; /* chunks left absent: the reader's wait loop tells */
		j->first = i;
		j->n = n;
		j->b = b;
		j->urgent = urgent;
		memset(b->state + i, CH_INFLIGHT, n);
		j->next = *todo;
		*todo = j;
		i += n;
	}
}

/*
 * Hand the jobs schedule() made to the workers, each taking a reference on
 * its blob. Caller holds no cache lock, and a reference on the blob.
 */
static void queue_jobs(struct cache *c, struct job **todo)
{
	struct job *j, *next, *rev = NULL;

	/* schedule() pushed them in reverse: queue them in the order of the file. */
	for (j = *todo; j; j = next) {
		next = j->next;
		j->next = rev;
		rev = j;
	}
	*todo = NULL;
	pthread_mutex_lock(&c->lock);
	for (j = rev; j; j = next) {
		next = j->next;
		j->next = NULL;
		j->b->refs++;
		if (j->urgent) {
			*c->urgent_tail = j;
			c->urgent_tail = &j->next;
		} else {
			*c->ahead_tail = j;
			c->ahead_tail = &j->next;
		}
		pthread_cond_signal(&c->work);
	}
	pthread_mutex_unlock(&c->lock);
}

/* Chunks [*first, *last] of the read [off, off + len) of b; false when it reads none. */
static bool read_chunks(const struct blob *b, off_t off, size_t len, size_t *first, size_t *last)
{
	if (len == 0 || off >= b->size)
		return false;
	if ((int64_t)(off + (off_t)len) > b->size)
		len = (size_t)(b->size - off);
	*first = (size_t)off / b->c->chunk;
	*last = (size_t)(off + (off_t)len - 1) / b->c->chunk;
	return true;
}

/*
 * A read starts (pin) or ends with chunks [first, last]: while pinned they
 * are not evicted. Either way they were just used. Caller holds b->lock.
 */
static void chunks_pin(struct blob *b, size_t first, size_t last, bool pin)
{
	uint64_t now = __atomic_add_fetch(&b->c->tick, 1, __ATOMIC_RELAXED);
	size_t i;

	for (i = first; i <= last; i++) {
		if (pin) {
			b->pins[i]++;
		} else {
			assert(b->pins[i] > 0);
			b->pins[i]--;
		}
		b->used[i] = now;
	}
}

int cache_blob_prepare(struct blob *b, struct blob_reader *rd, off_t off, size_t len)
{
	struct cache *c = b->c;
	size_t first, last, lo, hi, window_max, ahead_bytes;
	struct job *todo = NULL;
	bool need_all, seq, waited = false;
	unsigned gen;
	off_t slack;
	int ret = 0;

	if (!read_chunks(b, off, len, &first, &last))
		return b->fd;
	if ((int64_t)(off + (off_t)len) > b->size)
		len = (size_t)(b->size - off);
	/* The last bytes prove the whole: a reader gets them only once it verified. */
	need_all = !rd->own_check && (c->strict || last == b->nchunks - 1);

	/* the window keeps every stream busy: more of them, more ahead */
	pthread_mutex_lock(&c->lock);
	ahead_bytes = job_bytes_ahead(c);
	window_max = c->streams * WINDOW_JOBS_PER_STREAM * ahead_bytes;
	pthread_mutex_unlock(&c->lock);
	window_max = (window_max > WINDOW_BYTES_MAX ? window_max : WINDOW_BYTES_MAX) / c->chunk;
	pthread_mutex_lock(&b->lock);
	/* from now until cache_blob_done(), or a failure: not evicted */
	chunks_pin(b, first, last, true);
	if (b->complete || b->error) {
		ret = b->error ? b->error : b->fd;
		if (ret < 0)
			chunks_pin(b, first, last, false);
		pthread_mutex_unlock(&b->lock);
		if (ret >= 0)
			__atomic_add_fetch(&c->st_hits, 1, __ATOMIC_RELAXED);
		return ret;
	}
	/*
	 * The kernel's read-ahead sends reads out of order, up to its window
	 * (4 MiB, fs.c) apart: that close to the last end is still sequential.
	 */
	slack = (off_t)(c->chunk > SEQ_SLACK ? c->chunk : SEQ_SLACK);
	seq = off + slack >= rd->next && off <= rd->next + slack;
	if (seq && rd->next > 0)
		rd->window = rd->window
				     ? (2 * rd->window < window_max ? 2 * rd->window : window_max)
				     : WINDOW_FIRST;
	else if (!seq)
		rd->window = 0;
	if (off + (off_t)len > rd->next || !seq)
		rd->next = off + (off_t)len;

	/* What must be present: the read's chunks, or every chunk to verify. */
	lo = need_all ? 0 : first;
	hi = need_all ? b->nchunks - 1 : last;
	gen = b->fail_gen;
	schedule(b, lo, hi, true, ahead_bytes, &todo);
	/*
	 * Top the window up once half of it is read, in one go: requests stay
	 * large instead of one per chunk the reader moves on.
	 */
	if (rd->window && rd->ahead_end < last + 1 + rd->window / 2) {
		size_t from = rd->ahead_end > last + 1 ? rd->ahead_end : last + 1;

		schedule(b, from, last + rd->window, false, ahead_bytes, &todo);
		rd->ahead_end = last + 1 + rd->window;
	}
	/* Waiting for every chunk at once: none of them is evicted meanwhile. */
	if (need_all)
		b->verifying++;
	for (;;) {
		size_t i, absent = 0, missing = 0;

		if (todo) {
			/* Lock order: c->lock is never taken under b->lock. */
			pthread_mutex_unlock(&b->lock);
			queue_jobs(c, &todo);
			pthread_mutex_lock(&b->lock);
		}
		if (b->error) {
			ret = b->error;
			break;
		}
		if (b->complete) {
			ret = b->fd;
			break;
		}
		for (i = lo; i <= hi; i++) {
			if (b->state[i] == CH_ABSENT)
				absent++;
			if (b->state[i] != CH_PRESENT)
				missing++;
		}
		if (!need_all && !missing) {
			ret = b->fd;
			break;
		}
		if (absent) {
			/* A fetch this read waited on failed: report it; the next read retries. */
			if (b->fail_gen != gen) {
				/* Refused access is worth telling apart; the rest is EIO. */
				ret = b->fetch_error == -EACCES ? -EACCES : -EIO;
				break;
			}
			schedule(b, lo, hi, true, ahead_bytes, &todo);
			if (!todo) {
				ret = -ENOMEM;
				break;
			}
			continue;
		}
		waited = true;
		pthread_cond_wait(&b->cond, &b->lock);
	}
	if (need_all)
		b->verifying--;
	if (ret < 0)
		chunks_pin(b, first, last, false);
	pthread_mutex_unlock(&b->lock);
	if (ret >= 0)
		__atomic_add_fetch(waited ? &c->st_misses : &c->st_hits, 1, __ATOMIC_RELAXED);
	return ret;
}

void cache_blob_done(struct blob *b, off_t off, size_t len)
{
	struct cache *c = b->c;
	uint64_t total, freed = 0;
	size_t first, last, i;
	bool partial, stuck;

	if (!read_chunks(b, off, len, &first, &last))
		return;
	pthread_mutex_lock(&b->lock);
	chunks_pin(b, first, last, false);
	partial = !b->complete;
	pthread_mutex_unlock(&b->lock);
	if (!partial || c->unbounded)
		return;
	/*
	 * The last pass could not go under the bound, so all that could go went:
	 * the chunks this read held are the least recently used that may go now,
	 * and go without a scan (unless a pass runs: it sees to them).
	 */
	pthread_mutex_lock(&c->lock);
	stuck = c->over_floor != 0;
	total = c->complete_bytes + c->partial_bytes;
	pthread_mutex_unlock(&c->lock);
	if (!stuck || pthread_mutex_trylock(&c->evict_lock))
		return;
	for (i = first; i <= last && sub_sat(total, freed) > cache_bound(c, total); i++)
		freed += chunk_evict(b, i);
	pthread_mutex_lock(&c->lock);
	c->partial_bytes = sub_sat(c->partial_bytes, freed);
	c->over_floor = sub_sat(c->over_floor, freed);
	if (c->complete_bytes + c->partial_bytes <= cache_bound(c, total))
		c->over_floor = 0;
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_unlock(&c->evict_lock);
}

/* ---- opening ---- */

static void blob_free(struct blob *b)
{
	if (b->fd >= 0)
		close(b->fd);
	if (b->map_fd >= 0)
		close(b->map_fd);
	pthread_mutex_destroy(&b->lock);
	pthread_mutex_destroy(&b->write_lock);
	pthread_cond_destroy(&b->cond);
	digest_ctx_free(b->hash);
	free(b->state);
	free(b->pins);
	free(b->used);
	free(b->repo);
	free(b);
}

/*
 * Drop a reference; the last one frees b. Caller holds c->lock. Returns
 * whether a blob was closed that eviction may now take whole (open blobs
 * are kept whole): the caller calls cache_trim() once it has dropped the lock.
 */
static bool blob_unref_locked(struct cache *c, struct blob *b)
{
	struct timespec ts[2] = { { 0, UTIME_NOW }, { 0, UTIME_OMIT } };
	struct blob **p;
	bool closed;

	assert(b->refs > 0);
	if (--b->refs)
		return false;
	for (p = &c->blobs; *p; p = &(*p)->next)
		if (*p == b) {
			*p = b->next;
			break;
		}
	closed = !b->error && b->fd >= 0;
	/* what the last pass could not evict may go now */
	if (closed)
		c->over_floor = 0;
	/* a partial blob was in use until now: its atime says so to eviction */
	if (closed && !b->complete)
		futimens(b->fd, ts);
	blob_free(b);
	return closed;
}

void cache_blob_close(struct blob *b)
{
	struct cache *c = b->c;
	bool closed;

	pthread_mutex_lock(&c->lock);
	closed = blob_unref_locked(c, b);
	pthread_mutex_unlock(&c->lock);
	if (closed)
		cache_trim(c);
}

int64_t cache_blob_size(const struct blob *b)
{
	return b->size;
}

bool cache_blob_verified(struct blob *b)
{
	bool v;

	pthread_mutex_lock(&b->lock);
	v = b->complete && !b->error;
	pthread_mutex_unlock(&b->lock);
	return v;
}

int cache_blob_verified_fd(struct blob *b)
{
	char path[PATH_MAX];
	struct stat st;
	int fd, err;

	if (b->size == 0 || !cache_blob_verified(b))
		return -ENOENT;
	/* blob_finish() renamed the file into blobs/ before it said complete */
	blob_path(b->c, b->digest, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		err = -errno;
		close(fd);
		return err;
	}
	if (st.st_size != b->size) {
		close(fd);
		return -EIO;
	}
	return fd;
}

/*
 * Open the partial files of b, picking up chunks an earlier run fetched.
 * Caller holds c->lock.
 */
static int blob_open_partial(struct cache *c, struct blob *b)
{
	struct timespec ts[2] = { { 0, UTIME_NOW }, { 0, UTIME_OMIT } };
	char path[PATH_MAX];
	struct stat st;
	size_t i;

	partial_path(c, b->digest, "", path, sizeof(path));
	/*
	 * A shared lock says "open" to the eviction of another daemon sharing
	 * the cache, which takes an exclusive one before it unlinks the file
	 * (blob_drop): a file unlinked before this lock was had is made anew.
	 */
	for (i = 0; i < 3; i++) {
		b->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (b->fd < 0 || flock(b->fd, LOCK_SH) || fstat(b->fd, &st))
			goto out_err;
		if (st.st_nlink > 0)
			break;
		close(b->fd);
		b->fd = -1;
	}
	if (b->fd < 0) {
		errno = EAGAIN; /* unlinked under it each time */
		goto out_err;
	}
	/* opening is using: eviction goes by atime */
	if (ftruncate(b->fd, b->size) || futimens(b->fd, ts))
		goto out_err;
	partial_path(c, b->digest, ".map", path, sizeof(path));
	b->map_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (b->map_fd < 0 || fstat(b->map_fd, &st))
		goto out_err;
	if ((size_t)st.st_size == b->nchunks) {
		if (pread(b->map_fd, b->state, b->nchunks, 0) != (ssize_t)b->nchunks)
			goto out_err;
		for (i = 0; i < b->nchunks; i++)
			b->state[i] = b->state[i] == 1 ? CH_PRESENT : CH_ABSENT;
	} else if (ftruncate(b->map_fd, 0) || ftruncate(b->map_fd, (off_t)b->nchunks)) {
		/* A map for another chunk size or a torn one: start over. */
		goto out_err;
	}
	b->hash = digest_ctx_new();
	return b->hash ? 0 : -ENOMEM;

out_err:
	log_err("cache: %s: %s", path, strerror(errno));
	return -errno;
}

int cache_blob_read_all(struct cache *c, struct registry *r, const char *repo, const char *digest,
	int64_t size, char **out)
{
	struct blob_reader rd = { 0 };
	struct blob *b = NULL;
	char *p = NULL;
	size_t i;
	int fd, ret;

	ret = cache_blob_open(c, r, repo, digest, size, &b);
	if (ret)
		return ret;
	/* the whole blob: verified against its digest before a byte is handed out */
	fd = size ? cache_blob_prepare(b, &rd, 0, (size_t)size) : 0;
	ret = fd < 0 ? fd : 0;
	if (!ret && !(p = malloc((size_t)size + 1)))
		ret = -ENOMEM;
	for (i = 0; !ret && i < (size_t)size;) {
		ssize_t n = pread(fd, p + i, (size_t)size - i, (off_t)i);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			ret = -EIO;
		else
			i += (size_t)n;
	}
	if (fd >= 0)
		cache_blob_done(b, 0, (size_t)size);
	cache_blob_close(b);
	if (ret) {
		free(p);
		return ret;
	}
	p[size] = '\0'; /* a JSON config is text */
	*out = p;
	return 0;
}

const char *cache_blob_digest(const struct blob *b)
{
	return b->digest;
}

int cache_blob_open(struct cache *c, struct registry *r, const char *repo, const char *digest,
	int64_t size, struct blob **out)
{
	char path[PATH_MAX];
	struct blob *b;
	int ret;

	if (!digest_supported(digest)) {
		log_err("%s/%s@%s: digest algorithm not supported", registry_host(r), repo, digest);
		return -EIO;
	}
	if (size < 0 || size > BLOB_SIZE_MAX) {
		log_err("%s/%s@%s: size %lld refused", registry_host(r), repo, digest,
			(long long)size);
		return -EIO;
	}
	pthread_mutex_lock(&c->lock);
	for (b = c->blobs; b; b = b->next) {
		if (strcmp(b->digest, digest) != 0)
			continue;
		if (b->size != size) {
			/* One digest, two sizes: one descriptor lies, and they share files. */
			pthread_mutex_unlock(&c->lock);
			log_err("%s/%s@%s: size %lld, but %lld elsewhere", registry_host(r), repo,
				digest, (long long)size, (long long)b->size);
			return -EIO;
		}
		b->refs++;
		pthread_mutex_unlock(&c->lock);
		*out = b;
		return 0;
	}
	ret = -ENOMEM;
	b = calloc(1, sizeof(*b));
	if (!b)
		goto out_unlock;
	b->c = c;
	b->refs = 1;
	b->fd = b->map_fd = -1;
	snprintf(b->digest, sizeof(b->digest), "%s", digest);
	b->reg = r;
	b->size = size;
	b->nchunks = size ? (size_t)((size + (int64_t)c->chunk - 1) / (int64_t)c->chunk) : 1;
	pthread_mutex_init(&b->lock, NULL);
	pthread_mutex_init(&b->write_lock, NULL);
	pthread_cond_init(&b->cond, NULL);
	b->repo = strdup(repo);
	b->state = calloc(b->nchunks, 1);
	b->pins = calloc(b->nchunks, sizeof(*b->pins));
	b->used = calloc(b->nchunks, sizeof(*b->used));
	if (!b->repo || !b->state || !b->pins || !b->used)
		goto out_free;

	blob_path(c, digest, path, sizeof(path));
	b->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (b->fd >= 0) {
		struct timespec ts[2] = { { 0, UTIME_NOW }, { 0, UTIME_OMIT } };
		struct stat st;

		/* atime says "recently used" for eviction, whatever the mount options. */
		futimens(b->fd, ts);
		b->complete = true;
		if (fstat(b->fd, &st) || st.st_size != size) {
			log_err("%s/%s@%s: descriptor says %lld bytes, the verified blob has %lld",
				registry_host(r), repo, digest, (long long)size,
				(long long)st.st_size);
			b->error = -EIO;
		}
	} else if (size == 0) {
		char got[DIGEST_STR_LEN + 1];

		digest_buffer("", 0, got);
		if (strcmp(got, digest) != 0) {
			log_err("%s/%s@%s: an empty blob cannot have this digest", registry_host(r),
				repo, digest);
			b->error = -EIO;
		}
		b->complete = true;
	} else {
		ret = blob_open_partial(c, b);
		if (ret)
			goto out_free;
	}
	b->next = c->blobs;
	c->blobs = b;
	pthread_mutex_unlock(&c->lock);
	*out = b;
	/* Chunks a previous run fetched may already make the whole. */
	if (!b->complete)
		blob_advance_hash(b);
	return 0;

out_free:
	blob_free(b);
out_unlock:
	pthread_mutex_unlock(&c->lock);
	return ret;
}

/* ---- the store ---- */

/*
 * Temporary files a killed daemon left in dir (those starting with prefix):
 * gone. Only old ones, as another daemon may share the cache and be writing.
 */
static void sweep_temporaries(const char *dir, const char *prefix)
{
	time_t now = time(NULL);
	struct dirent *de;
	struct stat st;
	DIR *d = opendir(dir);

	while (d && (de = readdir(d))) {
		if (strncmp(de->d_name, prefix, strlen(prefix)) != 0 || !strcmp(de->d_name, ".") ||
			!strcmp(de->d_name, "..") ||
			fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) ||
			!S_ISREG(st.st_mode) || now - st.st_mtime < TEMP_AGE)
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			log_info("cache: removed %s/%s, left by a daemon that stopped mid-write",
				dir, de->d_name);
	}
	if (d)
		closedir(d);
}

int cache_new(const struct cache_options *o, struct cache **out)
{
	static const char *const subdirs[] = { "blobs/sha256", "manifests/sha256", "partial", "tmp",
		"staging", "layers" };
	char path[PATH_MAX];
	struct cache *c;
	size_t i;
	int ret;

	for (i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", o->dir, subdirs[i]);
		ret = mkdir_p(path, 0700);
		if (ret) {
			log_err("cache directory %s: %s", path, strerror(-ret));
			return ret;
		}
	}
	snprintf(path, sizeof(path), "%s/tmp", o->dir);
	sweep_temporaries(path, "");
	snprintf(path, sizeof(path), "%s/layers", o->dir);
	sweep_temporaries(path, ".");
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->dir = strdup(o->dir);
	if (!c->dir) {
		free(c);
		return -ENOMEM;
	}
	c->chunk = o->chunk_size ? o->chunk_size : CACHE_CHUNK_DEFAULT;
	c->max_bytes = o->max_bytes;
	c->unbounded = o->unbounded;
	c->strict = o->verify_strict;
	c->max_streams = o->max_streams ? o->max_streams : CACHE_STREAMS_DEFAULT;
	c->urgent_tail = &c->urgent;
	c->ahead_tail = &c->ahead;
	pthread_mutex_init(&c->evict_lock, NULL);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->work, NULL);
	/* Counts what is there, and brings it under a bound that may be new. */
	if (!c->unbounded)
		cache_evict(c, true);
	*out = c;
	return 0;
}

int cache_start(struct cache *c)
{
	size_t i;

	c->workers = calloc(c->max_streams, sizeof(*c->workers));
	if (!c->workers)
		return -ENOMEM;
	pthread_mutex_lock(&c->lock);
	c->streams = c->max_streams < STREAMS_FIRST ? c->max_streams : STREAMS_FIRST;
	c->settled = c->streams == c->max_streams;
	c->period_start_ns = now_ns();
	pthread_mutex_unlock(&c->lock);
	for (i = 0; i < c->max_streams; i++) {
		if (pthread_create(&c->workers[i], NULL, worker_main, c))
			break;
		c->n_workers++;
	}
	pthread_mutex_lock(&c->lock);
	if (c->max_streams > c->n_workers)
		c->max_streams = c->n_workers;
	if (c->streams > c->n_workers)
		c->streams = c->n_workers;
	pthread_mutex_unlock(&c->lock);
	if (!c->n_workers) {
		log_err("cache: cannot start fetch workers");
		return -EAGAIN;
	}
	return 0;
}

static void drop_jobs(struct cache *c, struct job **q)
{
	struct job *j, *next;

	for (j = *q; j; j = next) {
		next = j->next;
		/* Stopping: no eviction pass now; the next start evicts. */
		(void)blob_unref_locked(c, j->b);
		free(j);
	}
	*q = NULL;
}

void cache_stop(struct cache *c)
{
	size_t i;

	if (!c || !c->n_workers)
		return;
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	pthread_cond_broadcast(&c->work);
	pthread_mutex_unlock(&c->lock);
	for (i = 0; i < c->n_workers; i++)
		pthread_join(c->workers[i], NULL);
	c->n_workers = 0;
	free(c->workers);
	c->workers = NULL;
	pthread_mutex_lock(&c->lock);
	drop_jobs(c, &c->urgent);
	drop_jobs(c, &c->ahead);
	c->urgent_tail = &c->urgent;
	c->ahead_tail = &c->ahead;
	pthread_mutex_unlock(&c->lock);
}

void cache_free(struct cache *c)
{
	if (!c)
		return;
	cache_stop(c);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->evict_lock);
	pthread_cond_destroy(&c->work);
	free(c->dir);
	free(c);
}

static int read_fd(int fd, size_t max, char **data, size_t *len)
{
	struct stat st;
	char *p;
	size_t off = 0;

	if (fstat(fd, &st))
		return -errno;
	if ((uint64_t)st.st_size > max)
		return -EFBIG;
	p = malloc((size_t)st.st_size + 1);
	if (!p)
		return -ENOMEM;
	while (off < (size_t)st.st_size) {
		ssize_t n = pread(fd, p + off, (size_t)st.st_size - off, (off_t)off);

		if (n <= 0) {
			int err = n < 0 ? -errno : -EIO;

			free(p);
			return err;
		}
		off += (size_t)n;
	}
	p[off] = '\0';
	*data = p;
	*len = off;
	return 0;
}

int cache_get(struct cache *c, const char *digest, size_t max, char **data, size_t *len)
{
	char path[PATH_MAX];
	int fd, ret;

	if (!digest_supported(digest))
		return -ENOENT;
	manifest_path(c, digest, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = read_fd(fd, max, data, len);
	close(fd);
	return ret;
}

int cache_put(struct cache *c, const char *digest, const void *data, size_t len)
{
	char tmp[PATH_MAX], final[PATH_MAX];
	int fd, ret = 0;

	if (!digest_supported(digest))
		return -EINVAL;
	manifest_path(c, digest, final, sizeof(final));
	if (access(final, F_OK) == 0)
		return 0;
	snprintf(tmp, sizeof(tmp), "%s/tmp/%s.XXXXXX", c->dir, digest_hex(digest));
	fd = mkstemp(tmp);
	if (fd < 0)
		return -errno;
	ret = pwrite_all(fd, data, len, 0);
	if (!ret && (fdatasync(fd) || rename(tmp, final)))
		ret = -errno;
	close(fd);
	if (ret) {
		unlink(tmp);
		log_err("cache: storing %s: %s", digest, strerror(-ret));
		return ret;
	}
	return 0;
}

const char *cache_dir(const struct cache *c)
{
	return c->dir;
}

int cache_adopt(struct cache *c, const char *digest, const char *path, char *out, size_t n)
{
	struct stat st;
	int ret = 0;

	if (!digest_supported(digest))
		return -EINVAL;
	blob_path(c, digest, out, n);
	if (access(out, F_OK) == 0) {
		unlink(path);
		return 0;
	}
	if (stat(path, &st))
		return -errno;
	if (rename(path, out))
		return -errno;
	pthread_mutex_lock(&c->lock);
	account_complete(c, st.st_size);
	pthread_mutex_unlock(&c->lock);
	cache_trim(c);
	return ret;
}

/* ---- status ---- */

uint64_t cache_files_bytes(const char *dir, bool allocated)
{
	uint64_t total = 0;
	struct dirent *de;
	struct stat st;
	DIR *d = opendir(dir);

	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.' || fstatat(dirfd(d), de->d_name, &st, 0) ||
			!S_ISREG(st.st_mode))
			continue;
		total += allocated ? (uint64_t)st.st_blocks * 512 : (uint64_t)st.st_size;
	}
	if (d)
		closedir(d);
	return total;
}

/* How much of b is in the cache, in percent. Caller holds b->lock. */
static int blob_percent(const struct blob *b)
{
	size_t i, have = 0;

	if (b->complete)
		return 100;
	for (i = 0; i < b->nchunks; i++)
		have += b->state[i] == CH_PRESENT;
	/* 100 means verified: a blob with every chunk but not yet hashed is 99 */
	return have == b->nchunks ? 99 : (int)(have * 100 / b->nchunks);
}

int cache_stats_json(struct cache *c, struct json_object *o)
{
	struct json_object *flight = json_object_new_array();
	char path[PATH_MAX];
	uint64_t complete, partial;
	size_t streams;
	struct blob *b;

	if (!flight)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/blobs/sha256", c->dir);
	complete = cache_files_bytes(path, false);
	snprintf(path, sizeof(path), "%s/partial", c->dir);
	partial = cache_files_bytes(path, true);
	pthread_mutex_lock(&c->lock);
	for (b = c->blobs; b; b = b->next) {
		struct json_object *e;
		int pct;

		pthread_mutex_lock(&b->lock);
		pct = blob_percent(b);
		pthread_mutex_unlock(&b->lock);
		if (pct == 100)
			continue;
		e = json_object_new_object();
		if (!e)
			break;
		json_object_object_add(e, "digest", json_object_new_string(b->digest));
		json_object_object_add(e, "size", json_object_new_int64(b->size));
		json_object_object_add(e, "fetched_percent", json_object_new_int(pct));
		json_object_array_add(flight, e);
	}
	streams = c->streams;
	pthread_mutex_unlock(&c->lock);
#define U64(v) json_object_new_int64((int64_t)(v))
	json_object_object_add(o, "fetch_streams", U64(streams));
	json_object_object_add(
		o, "bytes_fetched", U64(__atomic_load_n(&c->st_fetched, __ATOMIC_RELAXED)));
	json_object_object_add(
		o, "cache_hits", U64(__atomic_load_n(&c->st_hits, __ATOMIC_RELAXED)));
	json_object_object_add(
		o, "cache_misses", U64(__atomic_load_n(&c->st_misses, __ATOMIC_RELAXED)));
	json_object_object_add(o, "cache_dir", json_object_new_string(c->dir));
	json_object_object_add(o, "cache_bytes", U64(complete + partial));
	json_object_object_add(o, "cache_complete_bytes", U64(complete));
	/* 0: no bound */
	json_object_object_add(
		o, "cache_limit_bytes", U64(c->unbounded ? 0 : cache_bound(c, complete + partial)));
#undef U64
	json_object_object_add(o, "blobs_in_flight", flight);
	return 0;
}

int cache_cached_percent(struct cache *c, const char *digest, int64_t size)
{
	char path[PATH_MAX];
	struct blob *b;
	size_t nchunks, ones = 0, i;
	unsigned char *map;
	int fd, pct = -1;
	ssize_t r;

	blob_path(c, digest, path, sizeof(path));
	if (access(path, F_OK) == 0)
		return 100;
	pthread_mutex_lock(&c->lock);
	for (b = c->blobs; b; b = b->next)
		if (strcmp(b->digest, digest) == 0) {
			pthread_mutex_lock(&b->lock);
			pct = blob_percent(b);
			pthread_mutex_unlock(&b->lock);
			break;
		}
	pthread_mutex_unlock(&c->lock);
	if (pct >= 0)
		return pct;
	/* not open: what an earlier fetch left in its chunk map */
	if (size <= 0)
		return 0;
	nchunks = (size_t)((size + (int64_t)c->chunk - 1) / (int64_t)c->chunk);
	partial_path(c, digest, ".map", path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	map = malloc(nchunks);
	r = map ? pread(fd, map, nchunks, 0) : -1;
	for (i = 0; r > 0 && i < (size_t)r; i++)
		ones += map[i] == 1;
	close(fd);
	free(map);
	return ones == nchunks ? 99 : (int)(ones * 100 / nchunks);
}

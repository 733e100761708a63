/*
 * cache.c for real, its fetch workers, hashing and eviction, against a real
 * registry through the real client: blobs go up to REGISTRY with
 * registry_push_blob, and the cache fetches them through PROXY, which
 * t_cacherace.sh puts between the two (tests/integration/faultproxy.py): it
 * sends each answer in pieces at random moments and lets answers for one
 * blob that are in flight together end together, so that the fetch workers
 * meet in other orders each run, and it makes every answer from the
 * repository test/fail fail after its whole body.
 *
 *   cache_stress [-r ROUNDS] [-s SEED] REGISTRY PROXY
 *
 * REGISTRY and PROXY are host:port, plain HTTP. ROUNDS (1 to 100, default
 * 100) is the rounds of each of the eight batches of the race; SEED picks
 * the blobs and readers (default: the time). The caches go under $TMPDIR
 * (or /tmp). Prints TAP lines; exit 0 pass, 1 fail.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "digest.h"
#include "http.h"
#include "log.h"
#include "registry.h"
#include "../unit/check.h"

#define CHUNK 4096
/* Seconds a reader may take before it counts as hung. */
#define HANG_SECS 30

/* $TMPDIR/ocifs-cache-stress.XXXXXX, removed at the end when every check passed */
static char dir[256];

/* ---- the registry ---- */

static struct registry *push_reg; /* REGISTRY: blobs go up */
static struct registry *reg; /* PROXY: the cache fetches */

/* A blob for the registry, and its bytes, to compare with what the cache gives. */
struct src_blob {
	char digest[DIGEST_STR_LEN + 1];
	unsigned char *data;
	int64_t size;
	const char *repo;
	bool pushed;
};

#define SRC_MAX 256
static struct src_blob srcs[SRC_MAX];
static size_t n_srcs;
/* Threads that push at once: one push waits mostly on the registry. */
#define PUSHERS 4

static unsigned rnd(unsigned *seed)
{
	*seed = *seed * 1103515245u + 12345u;
	return *seed >> 8;
}

/* A new blob of size random bytes, for repo: srcs_push() pushes it. */
static struct src_blob *src_add(const char *repo, int64_t size, unsigned seed)
{
	struct src_blob *s;
	int64_t i;

	if (n_srcs == SRC_MAX)
		abort();
	s = &srcs[n_srcs++];
	s->data = malloc((size_t)size + 1);
	if (!s->data)
		abort();
	for (i = 0; i < size; i++)
		s->data[i] = (unsigned char)rnd(&seed);
	s->size = size;
	s->repo = repo;
	digest_buffer(s->data, (size_t)size, s->digest);
	return s;
}

static size_t push_next; /* the next blob a pusher takes (atomic) */

static void *pusher_main(void *arg)
{
	size_t i;

	(void)arg;
	while ((i = __atomic_fetch_add(&push_next, 1, __ATOMIC_RELAXED)) < n_srcs) {
		struct src_blob *s = &srcs[i];
		int fd, ret;

		if (s->pushed)
			continue;
		fd = memfd_create("blob", MFD_CLOEXEC);
		if (fd < 0 || write(fd, s->data, (size_t)s->size) != (ssize_t)s->size)
			ret = -EIO;
		else
			ret = registry_push_blob(push_reg, s->repo, s->digest, fd, s->size, NULL);
		if (fd >= 0)
			close(fd);
		if (ret) {
			printf("not ok - push %s into %s: %s\n", s->digest, s->repo,
				strerror(-ret));
			exit(1);
		}
		s->pushed = true;
	}
	return NULL;
}

/* Push every blob added since the last call, PUSHERS at a time. Exits when one cannot go. */
static void srcs_push(void)
{
	pthread_t th[PUSHERS];
	int i;

	push_next = 0;
	for (i = 0; i < PUSHERS; i++)
		if (pthread_create(&th[i], NULL, pusher_main, NULL))
			abort();
	for (i = 0; i < PUSHERS; i++)
		pthread_join(th[i], NULL);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Forget every blob (the registry keeps them): no fetch may run. */
static void srcs_clear(void)
{
	size_t i;

	for (i = 0; i < n_srcs; i++)
		free(srcs[i].data);
	memset(srcs, 0, sizeof(srcs));
	n_srcs = 0;
}

/*
 * Wait for th until HANG_SECS from now; a thread still running then is
 * stuck in the cache, and nothing can be freed under it: the test ends.
 */
static void join_or_hang(pthread_t th, const char *what)
{
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += HANG_SECS;
	if (pthread_timedjoin_np(th, NULL, &deadline) == 0)
		return;
	printf("not ok - %s ends (%d s at most)\n", what, HANG_SECS);
	fflush(stdout);
	_exit(1);
}

/* ---- helpers ---- */

static char log_path[sizeof(dir) + 8];
static int saved_stderr = -1;

/*
 * The cache's log lines go to a file until log_end(), which prints those
 * with what in them and counts them (and passes anything else on to stderr).
 */
static void log_begin(void)
{
	int fd;

	snprintf(log_path, sizeof(log_path), "%s/log", dir);
	fflush(stderr);
	saved_stderr = dup(2);
	fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || saved_stderr < 0 || dup2(fd, 2) < 0)
		abort();
	close(fd);
}

/* Lines of the log since log_begin() that contain what (as "# " lines), and how many. */
static int log_end(const char *what)
{
	char line[1024];
	int n = 0;
	FILE *f;

	fflush(stderr);
	dup2(saved_stderr, 2);
	close(saved_stderr);
	f = fopen(log_path, "r");
	while (f && fgets(line, sizeof(line), f)) {
		/* a sanitizer's report, whole, where the test's output shows it */
		if (strncmp(line, "ocifs: ", 7) != 0) {
			fputs(line, stderr);
			continue;
		}
		if (!strstr(line, what))
			continue;
		if (n++ < 10)
			printf("# %s", line);
	}
	if (f)
		fclose(f);
	return n;
}

static struct cache *cache_make(const char *sub, uint64_t max_bytes, size_t chunk)
{
	struct cache_options o = { 0 };
	char path[sizeof(dir) + 64];
	struct cache *c;

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	o.dir = path;
	o.chunk_size = chunk;
	o.max_bytes = max_bytes;
	o.unbounded = max_bytes == 0;
	o.max_streams = 8;
	if (cache_new(&o, &c) || cache_start(c))
		abort();
	return c;
}

/* Bytes [off, off + len) of f through the cache: 0 when right, else -errno or 1. */
static int read_range(
	struct blob *b, struct blob_reader *rd, const struct src_blob *f, off_t off, size_t len)
{
	unsigned char *buf = malloc(len ? len : 1);
	size_t got = 0;
	int fd, ret = 0;

	if (!buf)
		return -ENOMEM;
	fd = cache_blob_prepare(b, rd, off, len);
	if (fd < 0) {
		free(buf);
		return fd;
	}
	while (got < len) {
		ssize_t n = pread(fd, buf + got, len - got, off + (off_t)got);

		if (n <= 0) {
			ret = n < 0 ? -errno : -EIO;
			break;
		}
		got += (size_t)n;
	}
	cache_blob_done(b, off, len);
	if (!ret && memcmp(buf, f->data + off, len) != 0)
		ret = 1;
	free(buf);
	return ret;
}

/* ---- the readers of one blob, racing ---- */

enum role { WHOLE, END, MIDDLE };

struct reader {
	pthread_t th;
	struct cache *c;
	const struct src_blob *f;
	pthread_barrier_t *start;
	enum role role;
	unsigned seed;
	int ret;
};

/* Rounds of each batch of the race (-r), and where the blobs and readers come from (-s). */
#define ROUNDS_MAX 100
static int rounds = ROUNDS_MAX;
static unsigned seed0;

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct blob_reader rd = { 0 };
	int64_t size = r->f->size, nchunks = (size + CHUNK - 1) / CHUNK;
	struct blob *b;
	off_t off;
	size_t len;

	switch (r->role) {
	case WHOLE:
		off = 0;
		len = (size_t)size;
		break;
	case END:
		/* a few bytes to a chunk and a half, ending at the blob's end or near it */
		len = 1 + rnd(&r->seed) % (CHUNK + CHUNK / 2);
		if ((int64_t)len > size)
			len = (size_t)size;
		off = (off_t)(size - (int64_t)len) - (off_t)(rnd(&r->seed) % 3);
		if (off < 0)
			off = 0;
		break;
	default:
		off = (off_t)(rnd(&r->seed) % (uint64_t)(nchunks - 1)) * CHUNK + 17;
		len = CHUNK;
		if (off + (off_t)len > size)
			len = (size_t)(size - off);
		break;
	}
	r->ret = cache_blob_open(r->c, reg, "test/race", r->f->digest, size, &b);
	if (r->ret)
		return NULL;
	pthread_barrier_wait(r->start);
	r->ret = read_range(b, &rd, r->f, off, len);
	cache_blob_close(b);
	return NULL;
}

/*
 * Whole readers and readers of a blob's last bytes (both wait for it to
 * verify) race readers of its middle, which split its fetch into several
 * jobs: the jobs end close together, and each calls for the hash to go on.
 * The blob must verify once, and stay verified for whoever holds it. A
 * batch of rounds per cache: stopping it waits for every job, late ones too.
 * The blobs of the rounds are pushed first, once: every batch reads them
 * into a cache of its own (a push takes longer than a round).
 */
static void test_finish_once(void)
{
	enum { BATCHES = 8, READERS = 8 };
	static const enum role roles[READERS] = { WHOLE, END, MIDDLE, END, WHOLE, MIDDLE, END,
		MIDDLE };
	unsigned seed = seed0, bad_reads = 0, not_verified = 0, missing = 0;
	struct src_blob *fs[ROUNDS_MAX];
	double t0 = now_s(), pushed;
	int batch, round, i, errors;

	log_begin();
	for (round = 0; round < rounds; round++) {
		int64_t size =
			(int64_t)(2 + rnd(&seed) % 12) * CHUNK - (int64_t)(rnd(&seed) % CHUNK);

		fs[round] = src_add("test/race", size, rnd(&seed));
	}
	srcs_push();
	pushed = now_s();
	for (batch = 0; batch < BATCHES; batch++) {
		struct blob *held[ROUNDS_MAX];
		char sub[32], path[sizeof(dir) + 128], what[64];
		struct cache *c;

		snprintf(sub, sizeof(sub), "race%d", batch);
		c = cache_make(sub, 0, CHUNK);
		for (round = 0; round < rounds; round++) {
			struct reader rs[READERS];
			pthread_barrier_t start;
			int64_t size = fs[round]->size;

			if (cache_blob_open(
				    c, reg, "test/race", fs[round]->digest, size, &held[round]))
				abort();
			pthread_barrier_init(&start, NULL, READERS);
			for (i = 0; i < READERS; i++) {
				rs[i] = (struct reader){ .c = c,
					.f = fs[round],
					.start = &start,
					.role = roles[i],
					.seed = rnd(&seed) };
				if (pthread_create(&rs[i].th, NULL, reader_main, &rs[i]))
					abort();
			}
			snprintf(what, sizeof(what), "batch %d, round %d: every reader", batch,
				round);
			for (i = 0; i < READERS; i++) {
				join_or_hang(rs[i].th, what);
				if (rs[i].ret && bad_reads++ < 5)
					printf("# batch %d, round %d: reader %d (role %d): %d\n",
						batch, round, i, (int)roles[i], rs[i].ret);
			}
			pthread_barrier_destroy(&start);
		}
		/* every job has ended: whatever a late one did is done */
		cache_stop(c);
		for (round = 0; round < rounds; round++) {
			if (!cache_blob_verified(held[round]))
				not_verified++;
			snprintf(path, sizeof(path), "%s/%s/blobs/sha256/%s", dir, sub,
				digest_hex(fs[round]->digest));
			if (access(path, F_OK))
				missing++;
			cache_blob_close(held[round]);
		}
		cache_free(c);
	}
	srcs_clear();
	errors = log_end("error");
	printf("# %d blobs pushed in %.1f s, raced for in %.1f s\n", rounds, pushed - t0,
		now_s() - pushed);
	CHECK(bad_reads == 0,
		"%d rounds of %d readers racing: every read gave the right bytes (%u did not)",
		BATCHES * rounds, READERS, bad_reads);
	CHECK(not_verified == 0, "every blob stayed verified for its holder (%u did not)",
		not_verified);
	CHECK(missing == 0, "every blob is complete in blobs/ (%u are not)", missing);
	CHECK(errors == 0, "the cache logged no error (%d lines)", errors);
}

/* ---- a transfer that fails after its body ---- */

struct waiter {
	struct cache *c;
	const struct src_blob *f;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int ret;
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;
	struct blob_reader rd = { 0 };
	struct blob *b;
	int ret;

	ret = cache_blob_open(w->c, reg, "test/fail", w->f->digest, w->f->size, &b);
	if (!ret) {
		ret = read_range(b, &rd, w->f, 0, (size_t)w->f->size);
		cache_blob_close(b);
	}
	pthread_mutex_lock(&w->lock);
	w->ret = ret;
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/*
 * The transfer fails after the sink took every byte (the proxy declares a
 * byte more than the body, and closes after the body, for every answer
 * from test/fail): the chunks are all there, and the blob must still verify
 * for the reader that waits for it, rather than leave it waiting.
 */
static void test_fail_after_body(void)
{
	struct cache *c = cache_make("fail", 0, CHUNK);
	struct waiter w = {
		.c = c, .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER
	};
	struct timespec deadline;
	pthread_t th;
	bool done;
	int cut;

	w.f = src_add("test/fail", 5 * CHUNK + 123, seed0 ^ 42);
	srcs_push();
	log_begin();
	if (pthread_create(&th, NULL, waiter_main, &w))
		abort();
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += HANG_SECS;
	pthread_mutex_lock(&w.lock);
	while (!w.done && pthread_cond_timedwait(&w.cond, &w.lock, &deadline) != ETIMEDOUT)
		;
	done = w.done;
	pthread_mutex_unlock(&w.lock);
	cut = log_end("Connection reset");
	CHECK(cut > 0, "the client saw transfers fail after their body (%d lines)", cut);
	CHECK(done,
		"a whole read of a blob whose transfer failed after its body ends (%d s at most)",
		HANG_SECS);
	if (!done) {
		/* the reader is stuck: nothing can be freed under it */
		printf("# the reader still waits for the blob to verify\n");
		return;
	}
	pthread_join(th, NULL);
	CHECK(w.ret == 0, "and it read the right bytes (%d)", w.ret);
	cache_free(c);
}

/* ---- the bound ---- */

#define BCHUNK (64 * 1024)
#define BBLOBS 24
#define BCHUNKS 16 /* per blob */
#define BOUND (2 * 1024 * 1024)
#define BREADS 3 /* ranges read per blob */

/* What the blobs take on disk, complete and partial, as du says. */
static uint64_t cache_du(const char *sub)
{
	char path[sizeof(dir) + 64];
	uint64_t n;

	snprintf(path, sizeof(path), "%s/%s/blobs/sha256", dir, sub);
	n = cache_files_bytes(path, true);
	snprintf(path, sizeof(path), "%s/%s/partial", dir, sub);
	return n + cache_files_bytes(path, true);
}

/* Ranges of a chunk or two away from the blob's end: read without waiting for it to verify. */
static void ranges_pick(unsigned *seed, off_t *off, size_t *len)
{
	int k;

	for (k = 0; k < BREADS; k++) {
		off[k] = (off_t)(rnd(seed) % (BCHUNKS - 3)) * BCHUNK + (off_t)(rnd(seed) % 1000);
		len[k] = BCHUNK / 2 + rnd(seed) % BCHUNK;
	}
}

/*
 * Blobs held open and read in a few ranges each, far more than the bound
 * holds: chunks of open blobs are evicted, least recently used first, but
 * not one a read still holds; whatever was evicted reads right again; a
 * blob read in order up to its middle verifies when read whole; what is on
 * disk stays within the bound, give or take one chunk in flight and the
 * maps.
 */
static void test_bound_open(void)
{
	struct blob *b[BBLOBS];
	struct src_blob *fs[BBLOBS];
	off_t off[BBLOBS][BREADS], pin_off = BCHUNK + 5;
	size_t len[BBLOBS][BREADS], pin_len = BCHUNK;
	struct cache *c = cache_make("bound-open", BOUND, BCHUNK);
	unsigned seed = seed0 ^ 0x5eed, bad = 0, over = 0;
	uint64_t allowance = BCHUNK + BBLOBS * 4096, most = 0, du;
	unsigned char pinned[BCHUNK];
	struct blob_reader prd = { .own_check = true };
	int i, k, pin_fd, errors;
	char path[sizeof(dir) + 128];

	log_begin();
	for (i = 0; i < BBLOBS; i++) {
		fs[i] = src_add(
			"test/bound", BCHUNKS * BCHUNK - (int64_t)(rnd(&seed) % 1000), rnd(&seed));
		if (cache_blob_open(c, reg, "test/bound", fs[i]->digest, fs[i]->size, &b[i]))
			abort();
		ranges_pick(&seed, off[i], len[i]);
	}
	srcs_push();
	/* blob 0 is read in order up to its middle: its hash goes that far */
	for (k = 0; k < BCHUNKS / 2; k++) {
		struct blob_reader rd = { .own_check = true };

		bad += read_range(b[0], &rd, fs[0], (off_t)k * BCHUNK, BCHUNK) != 0;
	}
	/* a read of blob 1 in progress: prepared, not done */
	pin_fd = cache_blob_prepare(b[1], &prd, pin_off, pin_len);
	for (i = 2; i < BBLOBS; i++)
		for (k = 0; k < BREADS; k++) {
			struct blob_reader rd = { .own_check = true };

			bad += read_range(b[i], &rd, fs[i], off[i][k], len[i][k]) != 0;
			du = cache_du("bound-open");
			most = du > most ? du : most;
			/* the read's own chunks may not be evicted yet when it returns */
			over += du > BOUND + allowance + 2 * BCHUNK;
		}
	CHECK(pin_fd >= 0 && pread(pin_fd, pinned, pin_len, pin_off) == (ssize_t)pin_len &&
			memcmp(pinned, fs[1]->data + pin_off, pin_len) == 0,
		"a range prepared and not yet done reads right after %d reads of others",
		(BBLOBS - 2) * BREADS);
	if (pin_fd >= 0)
		cache_blob_done(b[1], pin_off, pin_len);
	CHECK(bad == 0, "%d blobs open, %d ranges read: the right bytes (%u not)", BBLOBS,
		(BBLOBS - 2) * BREADS + BCHUNKS / 2, bad);
	printf("# most on disk during the reads: %llu bytes (bound %d)\n", (unsigned long long)most,
		BOUND);
	CHECK(over == 0,
		"on disk within the bound plus the chunks of the read and the maps after each read "
		"(%u "
		"times over)",
		over);

	/* every range again: fetched again where evicted */
	bad = 0;
	for (i = 2; i < BBLOBS; i++)
		for (k = 0; k < BREADS; k++) {
			struct blob_reader rd = { .own_check = true };

			bad += read_range(b[i], &rd, fs[i], off[i][k], len[i][k]) != 0;
		}
	CHECK(bad == 0, "every range read again gives the right bytes (%u not)", bad);
	CHECK(read_range(b[0], &(struct blob_reader){ 0 }, fs[0], 0, (size_t)fs[0]->size) == 0,
		"the blob read in order up to its middle reads right whole");
	CHECK(cache_blob_verified(b[0]), "and it verified");
	snprintf(path, sizeof(path), "%s/bound-open/blobs/sha256/%s", dir,
		digest_hex(fs[0]->digest));
	CHECK(access(path, F_OK) == 0, "and it is complete in blobs/");

	for (i = 0; i < BBLOBS; i++)
		cache_blob_close(b[i]);
	cache_stop(c);
	du = cache_du("bound-open");
	CHECK(du <= BOUND, "closed, the blobs are within the bound (%llu bytes)",
		(unsigned long long)du);
	cache_free(c);
	errors = log_end("error");
	CHECK(errors == 0, "the cache logged no error (%d lines)", errors);
	srcs_clear();
}

/*
 * One blob read in order, far past a bound of four chunks: its chunks go
 * once hashed (there is nothing else), so its hash starts over; read whole
 * then, it is fetched again, verifies and reads right.
 */
static void test_bound_hashed(void)
{
	struct cache *c = cache_make("bound-hashed", 4 * BCHUNK, BCHUNK);
	struct src_blob *f = src_add("test/bound", BCHUNKS * BCHUNK - 77, seed0 ^ 7);
	uint64_t most = 0, du;
	unsigned bad = 0;
	struct blob *b;
	int k, errors;

	srcs_push();
	log_begin();
	if (cache_blob_open(c, reg, "test/bound", f->digest, f->size, &b))
		abort();
	for (k = 0; k < BCHUNKS - 4; k++) {
		struct blob_reader rd = { .own_check = true };

		bad += read_range(b, &rd, f, (off_t)k * BCHUNK, BCHUNK) != 0;
		du = cache_du("bound-hashed");
		most = du > most ? du : most;
	}
	CHECK(bad == 0, "%d chunks read in order: the right bytes", BCHUNKS - 4);
	CHECK(most <= 4 * BCHUNK + 2 * BCHUNK + 4096,
		"on disk within four chunks, the read's and the map (at most %llu bytes)",
		(unsigned long long)most);
	CHECK(read_range(b, &(struct blob_reader){ 0 }, f, 0, (size_t)f->size) == 0,
		"read whole, its hashed chunks evicted, it reads right");
	CHECK(cache_blob_verified(b), "and it verified");
	cache_blob_close(b);
	cache_stop(c);
	cache_free(c);
	errors = log_end("error");
	CHECK(errors == 0, "the cache logged no error (%d lines)", errors);
	srcs_clear();
}

/* f opened in c, its BREADS ranges read and closed: how many did not read right. */
static unsigned read_ranges(
	struct cache *c, struct src_blob *f, const off_t *off, const size_t *len)
{
	struct blob *b;
	unsigned bad = 0;
	int k;

	if (cache_blob_open(c, reg, "test/bound", f->digest, f->size, &b))
		abort();
	for (k = 0; k < BREADS; k++) {
		struct blob_reader rd = { .own_check = true };

		bad += read_range(b, &rd, f, off[k], len[k]) != 0;
	}
	cache_blob_close(b);
	return bad;
}

/*
 * Blobs opened, read in a few ranges and closed, one after the other: the
 * partial blobs no one has open go whole, least recently used first.
 */
static void test_bound_closed(void)
{
	struct src_blob *fs[BBLOBS];
	off_t off[BBLOBS][BREADS];
	size_t len[BBLOBS][BREADS];
	struct cache *c = cache_make("bound-closed", BOUND, BCHUNK);
	unsigned seed = seed0 ^ 0xc105ed, bad = 0, over = 0;
	uint64_t most = 0, du;
	char path[sizeof(dir) + 64];
	int i, errors;

	for (i = 0; i < BBLOBS; i++) {
		fs[i] = src_add(
			"test/bound", BCHUNKS * BCHUNK - (int64_t)(rnd(&seed) % 1000), rnd(&seed));
		ranges_pick(&seed, off[i], len[i]);
	}
	srcs_push();
	log_begin();
	for (i = 0; i < BBLOBS; i++) {
		bad += read_ranges(c, fs[i], off[i], len[i]);
		du = cache_du("bound-closed");
		most = du > most ? du : most;
		/* the blob just read is open until then: it goes at the next eviction */
		over += du > BOUND + BREADS * 2 * BCHUNK + 4096;
	}
	CHECK(bad == 0, "%d blobs read in %d ranges each, one after the other: the right bytes",
		BBLOBS, BREADS);
	printf("# most on disk: %llu bytes (bound %d)\n", (unsigned long long)most, BOUND);
	CHECK(over == 0, "on disk within the bound plus the last blob read (%u times over)", over);
	snprintf(path, sizeof(path), "%s/bound-closed/partial", dir);
	bad = 0;
	for (i = 0; i < BBLOBS; i++)
		bad += read_ranges(c, fs[i], off[i], len[i]);
	CHECK(bad == 0, "every range read again gives the right bytes (%u not)", bad);
	cache_stop(c);
	du = cache_du("bound-closed");
	CHECK(du <= BOUND, "the blobs are within the bound (%llu bytes)", (unsigned long long)du);
	cache_free(c);
	errors = log_end("error");
	CHECK(errors == 0, "the cache logged no error (%d lines)", errors);
	srcs_clear();
}

static void usage(void)
{
	fprintf(stderr, "usage: cache_stress [-r ROUNDS] [-s SEED] REGISTRY PROXY\n");
	exit(2);
}

/* A client of host (host:port) over plain HTTP, that gives up on a failing request soon. */
static struct registry *registry_make(struct http *h, const char *host)
{
	struct registry_options o = { .plain_http = true, .retry_secs = 10 };
	struct registry *r;

	if (registry_new(h, host, &o, &r))
		abort();
	return r;
}

int main(int argc, char **argv)
{
	struct http_options ho = { .connect_timeout = 10 };
	char cmd[sizeof(dir) + 16];
	struct http *h;
	int opt, ret;

	seed0 = (unsigned)time(NULL);
	while ((opt = getopt(argc, argv, "r:s:")) != -1) {
		switch (opt) {
		case 'r':
			rounds = atoi(optarg);
			if (rounds < 1 || rounds > ROUNDS_MAX)
				usage();
			break;
		case 's':
			seed0 = (unsigned)strtoul(optarg, NULL, 0);
			break;
		default:
			usage();
		}
	}
	if (argc - optind != 2)
		usage();
	snprintf(dir, sizeof(dir), "%s/ocifs-cache-stress.XXXXXX",
		getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (strlen(dir) + 1 == sizeof(dir) || !mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	log_init(false, false);
	if (http_new(&ho, &h))
		abort();
	push_reg = registry_make(h, argv[optind]);
	reg = registry_make(h, argv[optind + 1]);
	ret = registry_ping(reg);
	if (ret) {
		printf("not ok - the registry answers through %s: %s\n", argv[optind + 1],
			strerror(-ret));
		return 1;
	}
	printf("# seed %u, %d rounds a batch\n", seed0, rounds);
	fflush(stdout);
	test_finish_once();
	test_fail_after_body();
	test_bound_open();
	test_bound_hashed();
	test_bound_closed();
	/* a reader stuck in a cache that could not be freed may still use them */
	if (check_done() == 0) {
		registry_free(reg);
		registry_free(push_reg);
		http_free(h);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", dir);
	if (check_done() == 0 && system(cmd) != 0)
		printf("# could not remove %s\n", dir);
	return check_done();
}

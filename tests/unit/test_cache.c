/*
 * cache.c for real, its fetch workers, hashing and eviction, against a
 * registry of this file: registry_get_blob() and the two other registry
 * functions the cache calls are defined here and serve blobs from memory,
 * in pieces and at random moments, so that no network is needed (the
 * library's registry.o is not linked in: nothing else here calls it).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "digest.h"
#include "log.h"
#include "registry.h"
#include "check.h"

#define CHUNK 4096
/* Seconds a reader may take before it counts as hung. */
#define HANG_SECS 30

/* ---- the registry ---- */

struct fake_blob {
	char digest[DIGEST_STR_LEN + 1];
	unsigned char *data;
	int64_t size;
	/* the transfer fails once the sink took every byte it asked for */
	bool fail_after_body;
};

#define FAKE_MAX 256
static struct fake_blob fakes[FAKE_MAX];
static size_t n_fakes;
static pthread_mutex_t fakes_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t served; /* bytes handed to sinks (atomic) */

static unsigned rnd(unsigned *seed)
{
	*seed = *seed * 1103515245u + 12345u;
	return *seed >> 8;
}

/* A new blob of size random bytes, served from now on. */
static struct fake_blob *fake_add(int64_t size, unsigned seed)
{
	struct fake_blob *f;
	int64_t i;

	pthread_mutex_lock(&fakes_lock);
	if (n_fakes == FAKE_MAX)
		abort();
	f = &fakes[n_fakes];
	pthread_mutex_unlock(&fakes_lock);
	f->data = malloc((size_t)size + 1);
	if (!f->data)
		abort();
	for (i = 0; i < size; i++)
		f->data[i] = (unsigned char)rnd(&seed);
	f->size = size;
	digest_buffer(f->data, (size_t)size, f->digest);
	pthread_mutex_lock(&fakes_lock);
	n_fakes++;
	pthread_mutex_unlock(&fakes_lock);
	return f;
}

/* Forget every blob: no fetch may run. */
static void fakes_clear(void)
{
	size_t i;

	pthread_mutex_lock(&fakes_lock);
	for (i = 0; i < n_fakes; i++)
		free(fakes[i].data);
	memset(fakes, 0, sizeof(fakes));
	n_fakes = 0;
	pthread_mutex_unlock(&fakes_lock);
}

static struct fake_blob *fake_find(const char *digest)
{
	struct fake_blob *f = NULL;
	size_t i;

	pthread_mutex_lock(&fakes_lock);
	for (i = 0; i < n_fakes; i++)
		if (strcmp(fakes[i].digest, digest) == 0)
			f = &fakes[i];
	pthread_mutex_unlock(&fakes_lock);
	return f;
}

/* A pause of a few microseconds, or none: threads meet in other orders each run. */
static void jitter(unsigned *seed)
{
	unsigned r = rnd(seed) % 8;

	if (r < 3)
		return;
	if (r < 6) {
		sched_yield();
		return;
	}
	nanosleep(&(struct timespec){ 0, (long)(rnd(seed) % 50000) }, NULL);
}

const char *registry_host(const struct registry *r)
{
	(void)r;
	return "registry.test";
}

bool registry_retryable(int err)
{
	return err == -ECONNRESET;
}

int registry_get_blob(struct registry *r, const char *repo, const char *digest, int64_t off,
	int64_t len, int (*sink)(void *arg, const void *p, size_t n), void *arg)
{
	struct fake_blob *f = fake_find(digest);
	unsigned seed = (unsigned)(uintptr_t)&seed ^ (unsigned)off ^ (unsigned)time(NULL);
	int64_t end;

	(void)r;
	(void)repo;
	if (!f)
		return -ENOENT;
	if (len == 0)
		len = f->size - off;
	end = off + len;
	if (off < 0 || end > f->size)
		return -EIO;
	jitter(&seed);
	while (off < end) {
		size_t n = 1 + rnd(&seed) % (2 * CHUNK);
		int ret;

		if ((int64_t)n > end - off)
			n = (size_t)(end - off);
		ret = sink(arg, f->data + off, n);
		if (ret)
			return ret;
		__atomic_add_fetch(&served, (uint64_t)n, __ATOMIC_RELAXED);
		off += (int64_t)n;
		jitter(&seed);
	}
	return f->fail_after_body ? -EIO : 0;
}

/* ---- helpers ---- */

static char dir[] = "/tmp/ocifs-test-cache.XXXXXX";
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
	struct blob *b, struct blob_reader *rd, const struct fake_blob *f, off_t off, size_t len)
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
	const struct fake_blob *f;
	pthread_barrier_t *start;
	enum role role;
	unsigned seed;
	int ret;
};

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
	r->ret = cache_blob_open(r->c, NULL, "test/race", r->f->digest, size, &b);
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
 */
static void test_finish_once(void)
{
	enum { BATCHES = 8, ROUNDS = 100, READERS = 8 };
	static const enum role roles[READERS] = { WHOLE, END, MIDDLE, END, WHOLE, MIDDLE, END,
		MIDDLE };
	unsigned seed = (unsigned)time(NULL), bad_reads = 0, not_verified = 0, missing = 0;
	int batch, round, i, errors;

	printf("# seed %u\n", seed);
	log_begin();
	for (batch = 0; batch < BATCHES; batch++) {
		struct blob *held[ROUNDS];
		struct fake_blob *fs[ROUNDS];
		char sub[32], path[sizeof(dir) + 128];
		struct cache *c;

		snprintf(sub, sizeof(sub), "race%d", batch);
		c = cache_make(sub, 0, CHUNK);
		for (round = 0; round < ROUNDS; round++) {
			struct reader rs[READERS];
			pthread_barrier_t start;
			int64_t size = (int64_t)(2 + rnd(&seed) % 12) * CHUNK -
				       (int64_t)(rnd(&seed) % CHUNK);

			fs[round] = fake_add(size, rnd(&seed));
			if (cache_blob_open(
				    c, NULL, "test/race", fs[round]->digest, size, &held[round]))
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
			for (i = 0; i < READERS; i++) {
				pthread_join(rs[i].th, NULL);
				if (rs[i].ret && bad_reads++ < 5)
					printf("# batch %d, round %d: reader %d (role %d): %d\n",
						batch, round, i, (int)roles[i], rs[i].ret);
			}
			pthread_barrier_destroy(&start);
		}
		/* every job has ended: whatever a late one did is done */
		cache_stop(c);
		for (round = 0; round < ROUNDS; round++) {
			if (!cache_blob_verified(held[round]))
				not_verified++;
			snprintf(path, sizeof(path), "%s/%s/blobs/sha256/%s", dir, sub,
				digest_hex(fs[round]->digest));
			if (access(path, F_OK))
				missing++;
			cache_blob_close(held[round]);
		}
		cache_free(c);
		fakes_clear();
	}
	errors = log_end("error");
	CHECK(bad_reads == 0,
		"%d rounds of %d readers racing: every read gave the right bytes (%u did not)",
		BATCHES * ROUNDS, READERS, bad_reads);
	CHECK(not_verified == 0, "every blob stayed verified for its holder (%u did not)",
		not_verified);
	CHECK(missing == 0, "every blob is complete in blobs/ (%u are not)", missing);
	CHECK(errors == 0, "the cache logged no error (%d lines)", errors);
}

/* ---- a transfer that fails after its body ---- */

struct waiter {
	struct cache *c;
	const struct fake_blob *f;
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

	ret = cache_blob_open(w->c, NULL, "test/fail", w->f->digest, w->f->size, &b);
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
 * The registry reports a failure after the sink took every byte: the chunks
 * are all there, and the blob must still verify for the reader that waits
 * for it, rather than leave it waiting.
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

	w.f = fake_add(5 * CHUNK + 123, 42);
	fakes[n_fakes - 1].fail_after_body = true;
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
	log_end("error");
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
	struct fake_blob *fs[BBLOBS];
	off_t off[BBLOBS][BREADS], pin_off = BCHUNK + 5;
	size_t len[BBLOBS][BREADS], pin_len = BCHUNK;
	struct cache *c = cache_make("bound-open", BOUND, BCHUNK);
	unsigned seed = (unsigned)time(NULL) ^ 0x5eed, bad = 0, over = 0;
	uint64_t allowance = BCHUNK + BBLOBS * 4096, most = 0, du;
	unsigned char pinned[BCHUNK];
	struct blob_reader prd = { .own_check = true };
	int i, k, pin_fd, errors;
	char path[sizeof(dir) + 128];

	log_begin();
	for (i = 0; i < BBLOBS; i++) {
		fs[i] = fake_add(BCHUNKS * BCHUNK - (int64_t)(rnd(&seed) % 1000), rnd(&seed));
		if (cache_blob_open(c, NULL, "test/bound", fs[i]->digest, fs[i]->size, &b[i]))
			abort();
		ranges_pick(&seed, off[i], len[i]);
	}
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
	fakes_clear();
}

/*
 * One blob read in order, far past a bound of four chunks: its chunks go
 * once hashed (there is nothing else), so its hash starts over; read whole
 * then, it is fetched again, verifies and reads right.
 */
static void test_bound_hashed(void)
{
	struct cache *c = cache_make("bound-hashed", 4 * BCHUNK, BCHUNK);
	struct fake_blob *f = fake_add(BCHUNKS * BCHUNK - 77, 7);
	uint64_t most = 0, du;
	unsigned bad = 0;
	struct blob *b;
	int k, errors;

	log_begin();
	if (cache_blob_open(c, NULL, "test/bound", f->digest, f->size, &b))
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
	fakes_clear();
}

/*
 * Blobs opened, read in a few ranges and closed, one after the other: the
 * partial blobs no one has open go whole, least recently used first.
 */
static void test_bound_closed(void)
{
	struct fake_blob *fs[BBLOBS];
	off_t off[BBLOBS][BREADS];
	size_t len[BBLOBS][BREADS];
	struct cache *c = cache_make("bound-closed", BOUND, BCHUNK);
	unsigned seed = (unsigned)time(NULL) ^ 0xc105ed, bad = 0, over = 0;
	uint64_t most = 0, du;
	char path[sizeof(dir) + 64];
	int i, k, errors;

	log_begin();
	for (i = 0; i < BBLOBS; i++) {
		struct blob *b;

		fs[i] = fake_add(BCHUNKS * BCHUNK - (int64_t)(rnd(&seed) % 1000), rnd(&seed));
		ranges_pick(&seed, off[i], len[i]);
		if (cache_blob_open(c, NULL, "test/bound", fs[i]->digest, fs[i]->size, &b))
			abort();
		for (k = 0; k < BREADS; k++) {
			struct blob_reader rd = { .own_check = true };

			bad += read_range(b, &rd, fs[i], off[i][k], len[i][k]) != 0;
		}
		cache_blob_close(b);
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
	for (i = 0; i < BBLOBS; i++) {
		struct blob *b;

		if (cache_blob_open(c, NULL, "test/bound", fs[i]->digest, fs[i]->size, &b))
			abort();
		for (k = 0; k < BREADS; k++) {
			struct blob_reader rd = { .own_check = true };

			bad += read_range(b, &rd, fs[i], off[i][k], len[i][k]) != 0;
		}
		cache_blob_close(b);
	}
	CHECK(bad == 0, "every range read again gives the right bytes (%u not)", bad);
	cache_stop(c);
	du = cache_du("bound-closed");
	CHECK(du <= BOUND, "the blobs are within the bound (%llu bytes)", (unsigned long long)du);
	cache_free(c);
	errors = log_end("error");
	CHECK(errors == 0, "the cache logged no error (%d lines)", errors);
	fakes_clear();
}

int main(void)
{
	char cmd[sizeof(dir) + 16];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	log_init(false, false);
	test_finish_once();
	test_fail_after_body();
	test_bound_open();
	test_bound_hashed();
	test_bound_closed();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (check_done() == 0 && system(cmd) != 0)
		printf("# could not remove %s\n", dir);
	return check_done();
}

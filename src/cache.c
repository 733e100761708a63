#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "digest.h"
#include "log.h"
#include "registry.h"

/* A download in progress; waiters sleep on cache->cond until it is done. */
struct flight {
	char digest[DIGEST_STR_LEN + 1];
	struct flight *next;
};

struct cache {
	char *dir;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct flight *flights; /* protected by lock */
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

int cache_new(const char *dir, struct cache **out)
{
	static const char *const subdirs[] = { "blobs/sha256", "tmp" };
	char path[PATH_MAX];
	struct cache *c;
	size_t i;
	int ret;

	for (i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, subdirs[i]);
		ret = mkdir_p(path, 0700);
		if (ret) {
			log_err("cache directory %s: %s", path, strerror(-ret));
			return ret;
		}
	}
	/* Downloads interrupted by a crash are garbage: they were never verified. */
	snprintf(path, sizeof(path), "%s/tmp", dir);
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->dir = strdup(dir);
	if (!c->dir) {
		free(c);
		return -ENOMEM;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	*out = c;
	return 0;
}

void cache_free(struct cache *c)
{
	if (!c)
		return;
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c->dir);
	free(c);
}

static void blob_path(const struct cache *c, const char *digest, char *out, size_t n)
{
	snprintf(out, n, "%s/blobs/sha256/%s", c->dir, digest_hex(digest));
}

struct fetch_state {
	struct digest_ctx *hash;
	int64_t bytes;
};

static void on_fetch_data(void *arg, const void *p, size_t n)
{
	struct fetch_state *st = arg;

	digest_ctx_update(st->hash, p, n);
	st->bytes += (int64_t)n;
}

/*
 * Download digest into a temporary file, verify it, and move it into place.
 * Returns an fd open on the complete blob, or -errno. Called by the one
 * thread that owns the flight.
 */
static int fetch_blob(struct cache *c, struct registry *r, const char *repo, const char *digest,
	int64_t expected_size)
{
	struct fetch_state st = { NULL, 0 };
	char tmp[PATH_MAX], final[PATH_MAX], got[DIGEST_STR_LEN + 1];
	int fd, ret;

	snprintf(tmp, sizeof(tmp), "%s/tmp/%s.XXXXXX", c->dir, digest_hex(digest));
	fd = mkstemp(tmp);
	if (fd < 0) {
		ret = -errno;
		log_err("cache: cannot create %s: %s", tmp, strerror(errno));
		return ret;
	}
	st.hash = digest_ctx_new();
	if (!st.hash) {
		ret = -ENOMEM;
		goto out_unlink;
	}
	ret = registry_get_blob(r, repo, digest, fd, on_fetch_data, &st);
	if (ret)
		goto out_unlink;
	digest_ctx_final(st.hash, got);
	if (strcmp(got, digest) != 0 || (expected_size >= 0 && st.bytes != expected_size)) {
		log_err("%s/%s@%s: blob content hashes to %s (%lld bytes, %lld expected): "
			"discarded",
			registry_host(r), repo, digest, got, (long long)st.bytes,
			(long long)expected_size);
		ret = -EIO;
		goto out_unlink;
	}
	/* The name says "verified": its bytes must be on disk before it does. */
	if (fdatasync(fd)) {
		ret = -errno;
		log_err("cache: %s: %s", tmp, strerror(errno));
		goto out_unlink;
	}
	blob_path(c, digest, final, sizeof(final));
	if (rename(tmp, final)) {
		ret = -errno;
		log_err("cache: %s: %s", final, strerror(errno));
		goto out_unlink;
	}
	digest_ctx_free(st.hash);
	return fd;

out_unlink:
	digest_ctx_free(st.hash);
	unlink(tmp);
	close(fd);
	return ret;
}

static struct flight **flight_find(struct cache *c, const char *digest)
{
	struct flight **f;

	for (f = &c->flights; *f; f = &(*f)->next)
		if (strcmp((*f)->digest, digest) == 0)
			return f;
	return f;
}

int cache_open_blob(struct cache *c, struct registry *r, const char *repo, const char *digest,
	int64_t expected_size)
{
	struct flight self, **f;
	char path[PATH_MAX];
	int fd;

	if (!digest_supported(digest)) {
		log_err("%s/%s@%s: digest algorithm not supported", registry_host(r), repo, digest);
		return -EIO;
	}
	blob_path(c, digest, path, sizeof(path));
	pthread_mutex_lock(&c->lock);
	for (;;) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0 || errno != ENOENT) {
			pthread_mutex_unlock(&c->lock);
			return fd >= 0 ? fd : -errno;
		}
		f = flight_find(c, digest);
		if (!*f)
			break;
		/* Someone is downloading it: wait, then look again. */
		pthread_cond_wait(&c->cond, &c->lock);
	}
	snprintf(self.digest, sizeof(self.digest), "%s", digest);
	self.next = NULL;
	*f = &self;
	pthread_mutex_unlock(&c->lock);

	fd = fetch_blob(c, r, repo, digest, expected_size);

	pthread_mutex_lock(&c->lock);
	f = flight_find(c, digest);
	*f = self.next;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return fd;
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

int cache_read_blob(struct cache *c, struct registry *r, const char *repo, const char *digest,
	int64_t expected_size, size_t max, char **data, size_t *len)
{
	int fd, ret;

	if (expected_size > (int64_t)max)
		return -EFBIG;
	fd = cache_open_blob(c, r, repo, digest, expected_size);
	if (fd < 0)
		return fd;
	ret = read_fd(fd, max, data, len);
	close(fd);
	return ret;
}

int cache_get(struct cache *c, const char *digest, size_t max, char **data, size_t *len)
{
	char path[PATH_MAX];
	int fd, ret;

	if (!digest_supported(digest))
		return -ENOENT;
	blob_path(c, digest, path, sizeof(path));
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
	const char *p = data;
	int fd, ret = 0;

	if (!digest_supported(digest))
		return -EINVAL;
	blob_path(c, digest, final, sizeof(final));
	if (access(final, F_OK) == 0)
		return 0;
	snprintf(tmp, sizeof(tmp), "%s/tmp/%s.XXXXXX", c->dir, digest_hex(digest));
	fd = mkstemp(tmp);
	if (fd < 0)
		return -errno;
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			goto out;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fdatasync(fd) || rename(tmp, final))
		ret = -errno;
out:
	close(fd);
	if (ret) {
		unlink(tmp);
		log_err("cache: storing %s: %s", digest, strerror(-ret));
	}
	return ret;
}

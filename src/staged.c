/*
 * Staged files: the bytes written into the mount, hashed as they come, and
 * their uploads (streamed in chunks while a sequential writer writes, or one
 * blob at close).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/rand.h>

#include "buf.h"
#include "cache.h"
#include "digest.h"
#include "log.h"
#include "manifest.h"
#include "push-int.h"
#include "push.h"
#include "ref.h"
#include "registry.h"
#include "tree-int.h"

void staged_free(struct staged *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	while (s->up_busy)
		pthread_cond_wait(&s->up_cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	digest_ctx_free(s->hash);
	free(s->closed_digest);
	free(s->up_location);
	free(s->up_repo);
	pthread_cond_destroy(&s->up_cond);
	pthread_mutex_destroy(&s->flush_lock);
	pthread_mutex_destroy(&s->lock);
	free(s->path);
	free(s);
}

/*
 * Another repository of the same registry this tree has seen holding blob
 * digest (a file read through the mount), to mount it from rather than upload
 * it again; malloc'd, or NULL.
 */
static char *blob_source(struct tree *t, struct registry *r, const char *repo, const char *digest)
{
	struct node *n;
	char *from = NULL;

	pthread_mutex_lock(&t->nodes.lock);
	/*
	 * Only nodes in use (refs, under t->nodes.lock): their fields were set before
	 * they were shown; a node still being built from a manifest has none.
	 */
	for (n = t->nodes.all; n && !from; n = n->all_next)
		if (n->refs > 0 && n->kind == NODE_BLOB && !file_of(n)->is_manifest &&
			file_of(n)->digest && reg_of(n)->site && reg_of(n)->site->reg == r &&
			reg_of(n)->repo && strcmp(reg_of(n)->repo, repo) != 0 &&
			strcmp(file_of(n)->digest, digest) == 0)
			from = strdup(reg_of(n)->repo);
	pthread_mutex_unlock(&t->nodes.lock);
	return from;
}

int staged_upload(struct tree *t, struct registry *r, const char *repo, const char *digest, int fd,
	int64_t size)
{
	char *from = blob_source(t, r, repo, digest);
	int ret = registry_push_blob(r, repo, digest, fd, size, from);

	free(from);
	return ret;
}

/* A staged file of art at path (NULL: a new one), nothing of it closed yet. */
static struct staged *staged_alloc(struct node *art, const char *path)
{
	struct staged *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->flush_lock, NULL);
	pthread_cond_init(&s->up_cond, NULL);
	s->dirty = true;
	s->up_size = -1;
	s->up_reg = reg_of(art)->site->reg;
	s->up_repo = strdup(reg_of(art)->repo);
	s->path = path ? strdup(path) : NULL;
	s->hash = digest_ctx_new();
	if (!s->up_repo || !s->hash || (path && !s->path)) {
		staged_free(s);
		return NULL;
	}
	return s;
}

struct staged *staged_adopt(struct node *art, const char *path)
{
	struct staged *s = staged_alloc(art, path);

	if (s) {
		/* what the earlier server hashed and sent is gone with it: hashed again at close */
		s->hashed = -1;
		s->up_off = true;
	}
	return s;
}

int staged_new(struct tree *t, struct node *art, struct staged **out, int *fd)
{
	struct staged *s = staged_alloc(art, NULL);
	char path[PATH_MAX];
	unsigned k, tries = 0;

	if (!s)
		return -ENOMEM;
	/* a name no file has (one an earlier server left unnamed in its draft is passed over) */
	do {
		pthread_mutex_lock(&t->nodes.lock);
		k = node_draft(art) ? node_draft(art)->next_file++ : 0;
		snprintf(path, sizeof(path), "%s/f%u",
			node_draft(art) ? node_draft(art)->dir : "/nonexistent", k);
		pthread_mutex_unlock(&t->nodes.lock);
		*fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	} while (*fd < 0 && errno == EEXIST && ++tries < 1000);
	s->path = strdup(path);
	if (!s->path) {
		if (*fd >= 0) {
			close(*fd);
			unlink(path);
		}
		staged_free(s);
		return -ENOMEM;
	}
	if (*fd < 0) {
		int err = -errno;

		log_err("staging %s: %s", path, strerror(errno));
		staged_free(s);
		return err;
	}
	*out = s;
	return 0;
}

int staged_copy_up(struct tree *t, struct node *n, struct staged *s, int fd)
{
	struct blob_reader rd = { 0 };
	struct blob *b;
	char buf[128 * 1024];
	int64_t off = 0;
	int ret, rfd;

	if (file_of(n)->size <= 0)
		return 0;
	ret = cache_blob_open(t->cache, reg_of(n)->site->reg, reg_of(n)->repo, file_of(n)->digest,
		file_of(n)->size, &b);
	if (ret)
		return ret;
	rfd = cache_blob_prepare(b, &rd, 0, (size_t)file_of(n)->size);
	ret = rfd < 0 ? rfd : 0;
	while (!ret && off < file_of(n)->size) {
		ssize_t got = pread(rfd, buf, sizeof(buf), off), w;

		if (got <= 0) {
			ret = -EIO;
			break;
		}
		/* a full staging file system says so (ENOSPC), as a local cp would */
		w = pwrite(fd, buf, (size_t)got, off);
		if (w != got) {
			ret = w < 0 ? -errno : -ENOSPC;
			break;
		}
		digest_ctx_update(s->hash, buf, (size_t)got);
		off += got;
	}
	if (rfd >= 0)
		cache_blob_done(b, 0, (size_t)file_of(n)->size);
	cache_blob_close(b);
	s->hashed = off;
	return ret;
}

bool staged_version(const struct node *n, const char **digest, int64_t *size, bool *uploaded)
{
	const struct staged *s = file_of(n)->staged;

	if (!s)
		return false;
	if (!s->dirty) {
		*uploaded = !s->changed && file_of(n)->digest;
		*digest = *uploaded ? file_of(n)->digest : s->closed_digest;
		*size = file_of(n)->size > 0 ? file_of(n)->size : 0;
		return true;
	}
	/* being written again: the version uploaded before stands until it is closed */
	if (file_of(n)->digest && s->up_size >= 0) {
		*uploaded = true;
		*digest = file_of(n)->digest;
		*size = s->up_size;
		return true;
	}
	return false;
}

void staged_seal(struct staged *s, unsigned wgen, char *digest)
{
	if (s->wgen != wgen) {
		free(digest);
		return;
	}
	s->dirty = false;
	free(s->closed_digest);
	s->closed_digest = digest;
}

struct stream_job {
	struct staged *s;
	int fd;
};

/* Send whole chunks of a file being written, in order, while there are some. */
static void *stream_run(void *arg)
{
	struct stream_job *j = arg;
	struct staged *s = j->s;
	char *loc = NULL;
	int ret = 0;

	for (;;) {
		int64_t off;

		pthread_mutex_lock(&s->lock);
		if (ret)
			s->up_off = true;
		if (s->up_off || s->hashed < 0 || s->hashed - s->up_sent < REGISTRY_UPLOAD_CHUNK) {
			s->up_busy = false;
			pthread_cond_broadcast(&s->up_cond);
			pthread_mutex_unlock(&s->lock);
			break;
		}
		off = s->up_sent;
		loc = s->up_location;
		s->up_location = NULL;
		pthread_mutex_unlock(&s->lock);

		if (!loc)
			ret = registry_upload_start(s->up_reg, s->up_repo, NULL, NULL, &loc);
		if (!ret && loc)
			ret = registry_upload_patch(
				s->up_reg, s->up_repo, &loc, j->fd, off, REGISTRY_UPLOAD_CHUNK);
		pthread_mutex_lock(&s->lock);
		s->up_location = loc;
		if (!ret)
			s->up_sent = off + REGISTRY_UPLOAD_CHUNK;
		pthread_mutex_unlock(&s->lock);
	}
	close(j->fd);
	free(j);
	return NULL;
}

void staged_stream_kick(struct tree *t, struct staged *s)
{
	struct stream_job *j;
	pthread_attr_t attr;
	pthread_t th;

	if (s->up_off || s->up_busy || s->hashed < 0 ||
		s->hashed - s->up_sent < REGISTRY_UPLOAD_CHUNK)
		return;
	if (!s->up_location && s->up_sent == 0 &&
		__atomic_load_n(&t->push->readers, __ATOMIC_RELAXED) > 0) {
		s->up_off = true;
		return;
	}
	j = malloc(sizeof(*j));
	if (!j)
		return;
	j->s = s;
	j->fd = open(s->path, O_RDONLY | O_CLOEXEC);
	if (j->fd < 0) {
		free(j);
		return;
	}
	s->up_busy = true;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&th, &attr, stream_run, j)) {
		s->up_busy = false;
		close(j->fd);
		free(j);
	}
	pthread_attr_destroy(&attr);
}

/* The journal of what the kernel holds (journal.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"
#include "log.h"

#define J_MAGIC "ocifsj1"
#define J_SLOTS 4096 /* the requests in flight: one slot per thread that reads */
#define J_NSLOTS 512
#define J_START (J_SLOTS + J_NSLOTS * 8) /* records begin here */
#define J_RESERVE (256ULL << 20) /* address space mapped: the journal's bound */
#define J_GROW (1ULL << 20)
#define J_INIT_MAX 512

struct jhead {
	char magic[8];
	uint32_t init_len; /* 0: the INIT was not seen yet */
	uint16_t gen; /* the generation of the server writing it */
	uint16_t init_answered; /* the INIT's reply was written: a replay is what the kernel has */
	unsigned char init[J_INIT_MAX];
	/*
	 * The mount's: random, made by its first server, kept by the next
	 * (a journal of an earlier version has 0 here: made then).
	 */
	uint64_t mount_id;
};

enum { J_ENTRY = 1, J_FORGET, J_OPEN, J_RELEASE };

struct jrec {
	uint32_t size; /* the whole record, 8-aligned; stored last: 0 is the end */
	uint16_t type;
	uint16_t name_len;
	uint64_t a, b, c; /* id, parent; or fh, ino, flags */
	char name[]; /* name_len bytes, no NUL */
};

/* What the kernel holds of an earlier server: an id (a name) or a handle. */
struct foreign {
	struct foreign *next; /* in its bucket */
	uint64_t key;
	uint64_t b, c; /* parent; or ino, flags */
	char *name; /* ids only */
	void *local; /* what this server made for it */
};

#define BUCKETS 4093

struct fmap {
	struct foreign *b[BUCKETS];
	size_t n;
};

/* A mapped journal: ours (written) or the earlier server's (read). */
struct jfile {
	int fd;
	unsigned char *map; /* J_RESERVE bytes of address space */
	uint64_t size; /* the file's size */
	uint64_t end; /* ours: where the next record goes; theirs: what was read */
};

/* Protects: everything below. Taken with no other lock held, none under it. */
static pthread_mutex_t journal_lock = PTHREAD_MUTEX_INITIALIZER;
static bool on; /* written once before the session starts */
static uint64_t gen_bits;
static struct jfile mine = { -1, NULL, 0, J_START }, old = { -1, NULL, 0, J_START };
static struct fmap ids, handles;
static bool full_said;
/* Compaction: past compact_at bytes, ours is written anew and handed over by sink. */
#define J_COMPACT_MIN (16ULL << 20)
static uint64_t compact_min = J_COMPACT_MIN, compact_at = J_COMPACT_MIN;
static int (*sink)(int fd);
static bool compacting;
/* Our slots of requests in flight (atomic): moved with ours when it is compacted. */
static uint64_t *slots_base;
static uint64_t slots_used[J_NSLOTS / 64]; /* atomic: the slots threads hold */
static bool slot_key_failed;

static struct foreign **fmap_slot(struct fmap *m, uint64_t key)
{
	struct foreign **p = &m->b[(key ^ (key >> 29)) % BUCKETS];

	while (*p && (*p)->key != key)
		p = &(*p)->next;
	return p;
}

static struct foreign *fmap_get(struct fmap *m, uint64_t key)
{
	return *fmap_slot(m, key);
}

/* Remove key, returning what was made for it. */
static void *fmap_del(struct fmap *m, uint64_t key)
{
	struct foreign **p = fmap_slot(m, key), *f = *p;
	void *local;

	if (!f)
		return NULL;
	*p = f->next;
	local = f->local;
	free(f->name);
	free(f);
	m->n--;
	return local;
}

/* Set key's fields (added when absent); name copied. 0 or -ENOMEM. */
static int fmap_put(
	struct fmap *m, uint64_t key, uint64_t b, uint64_t c, const char *name, size_t name_len)
{
	struct foreign **p = fmap_slot(m, key), *f = *p;
	char *copy = NULL;

	if (name) {
		copy = strndup(name, name_len);
		if (!copy)
			return -ENOMEM;
	}
	if (!f) {
		f = calloc(1, sizeof(*f));
		if (!f) {
			free(copy);
			return -ENOMEM;
		}
		f->key = key;
		*p = f;
		m->n++;
	}
	free(f->name);
	f->name = copy;
	f->b = b;
	f->c = c;
	return 0;
}

static int jfile_map(struct jfile *j, int fd)
{
	struct stat st;

	if (fstat(fd, &st))
		return -errno;
	j->map = mmap(NULL, J_RESERVE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (j->map == MAP_FAILED) {
		j->map = NULL;
		return -errno;
	}
	j->fd = fd;
	j->size = (uint64_t)st.st_size;
	return 0;
}

static void jfile_unmap(struct jfile *j)
{
	if (j->map)
		munmap(j->map, J_RESERVE);
	if (j->fd >= 0)
		close(j->fd);
	j->map = NULL;
	j->fd = -1;
}

/* Apply one record to what the kernel holds: ids in mi, handles in mh. */
static int apply_to(struct fmap *mi, struct fmap *mh, const struct jrec *r)
{
	switch (r->type) {
	case J_ENTRY:
		return fmap_put(mi, r->a, r->b, r->c, r->name, r->name_len);
	case J_FORGET:
		fmap_del(mi, r->a);
		return 0;
	case J_OPEN:
		return fmap_put(mh, r->a, r->b, r->c, r->name_len ? r->name : NULL, r->name_len);
	case J_RELEASE:
		fmap_del(mh, r->a);
		return 0;
	default:
		return 0;
	}
}

/* One record of an earlier server. */
static int apply(const struct jrec *r)
{
	return apply_to(&ids, &handles, r);
}

/* The record at off of j, or NULL at its end (or a torn one). */
static const struct jrec *record_at(const struct jfile *j, uint64_t off, uint64_t end)
{
	const struct jrec *r = (const struct jrec *)(j->map + off);
	uint32_t size;

	if (off + sizeof(*r) > end)
		return NULL;
	size = __atomic_load_n(&r->size, __ATOMIC_ACQUIRE);
	if (size < sizeof(*r) || off + size > end || sizeof(*r) + r->name_len > size)
		return NULL;
	return r;
}

static void compact(void);

/* Append a record to ours. Caller holds journal_lock. */
static void append(uint16_t type, uint64_t a, uint64_t b, uint64_t c, const char *name)
{
	size_t name_len = name ? strlen(name) : 0;
	uint64_t size = (sizeof(struct jrec) + name_len + 7) & ~7ULL;
	struct jrec *r;

	if (!mine.map)
		return;
	if (mine.end + size + sizeof(uint32_t) > mine.size) {
		uint64_t want = mine.size + J_GROW;

		if (want > J_RESERVE || ftruncate(mine.fd, (off_t)want)) {
			if (!full_said)
				log_err("journal: full at %llu bytes: what the kernel is given "
					"from "
					"now on cannot be found again by a restarted server",
					(unsigned long long)mine.size);
			full_said = true;
			return;
		}
		mine.size = want;
	}
	r = (struct jrec *)(mine.map + mine.end);
	r->type = type;
	r->name_len = (uint16_t)name_len;
	r->a = a;
	r->b = b;
	r->c = c;
	if (name_len)
		memcpy(r->name, name, name_len);
	/* valid once its size is there: a server killed before leaves the end here */
	__atomic_store_n(&r->size, (uint32_t)size, __ATOMIC_RELEASE);
	mine.end += size;
	if (mine.end > compact_at && sink && !compacting)
		compact();
}

static void fmap_release(struct fmap *m)
{
	size_t i;

	for (i = 0; i < BUCKETS; i++)
		while (m->b[i])
			fmap_del(m, m->b[i]->key);
}

/* A new journal of ours, with the head of the current one. Caller holds journal_lock. */
static int jfile_new(struct jfile *j)
{
	int fd = memfd_create("ocifs-journal", MFD_CLOEXEC), ret;

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, J_START + J_GROW) || (ret = jfile_map(j, fd))) {
		ret = -errno;
		close(fd);
		return ret;
	}
	j->end = J_START;
	if (mine.map)
		memcpy(j->map, mine.map, sizeof(struct jhead));
	return 0;
}

/*
 * Ours grew past compact_at (entries given and forgotten add records while
 * the kernel holds no more): write what is live into a new one, hand it to
 * the keeper, and go on in it. Caller holds journal_lock, which keeps every
 * record out meanwhile.
 */
static void compact(void)
{
	struct fmap *mi = calloc(1, sizeof(*mi)), *mh = calloc(1, sizeof(*mh));
	struct jfile fresh = { -1, NULL, 0, J_START }, was = mine;
	uint64_t off, before = mine.end;
	struct foreign *f;
	size_t i;

	compacting = true;
	for (off = J_START; mi && mh;) {
		const struct jrec *r = record_at(&mine, off, mine.end);

		if (!r)
			break;
		apply_to(mi, mh, r);
		off += r->size;
	}
	if (!mi || !mh || jfile_new(&fresh))
		goto out;
	/* the requests in flight: a thread that stores meanwhile may be missed in the copy */
	for (i = 0; i < J_NSLOTS; i++)
		__atomic_store_n((uint64_t *)(fresh.map + J_SLOTS) + i,
			__atomic_load_n((uint64_t *)(mine.map + J_SLOTS) + i, __ATOMIC_ACQUIRE),
			__ATOMIC_RELEASE);
	mine = fresh;
	for (i = 0; i < BUCKETS; i++) {
		for (f = mi->b[i]; f; f = f->next)
			append(J_ENTRY, f->key, f->b, f->c, f->name);
		for (f = mh->b[i]; f; f = f->next)
			append(J_OPEN, f->key, f->b, f->c, f->name);
	}
	/* the keeper has it before anything goes only there */
	if (sink(mine.fd)) {
		jfile_unmap(&mine);
		mine = was;
		log_warn("journal: compacting: the keeper did not take the new one");
	} else {
		__atomic_store_n(&slots_base, (uint64_t *)(mine.map + J_SLOTS), __ATOMIC_RELEASE);
		/*
		 * The head and slots stay mapped: a thread that loaded the old
		 * slots' address may store there still (4 KiB kept per compaction).
		 */
		munmap(was.map + J_START, J_RESERVE - J_START);
		was.map = NULL;
		jfile_unmap(&was);
		log_info("journal: compacted from %llu to %llu bytes (%zu ids, %zu handles)",
			(unsigned long long)before, (unsigned long long)mine.end, mi->n, mh->n);
	}
out:
	compact_at = 4 * mine.end > compact_min ? 4 * mine.end : compact_min;
	if (mi)
		fmap_release(mi);
	if (mh)
		fmap_release(mh);
	free(mi);
	free(mh);
	compacting = false;
}

void journal_set_sink(int (*fn)(int fd))
{
	pthread_mutex_lock(&journal_lock);
	sink = fn;
	pthread_mutex_unlock(&journal_lock);
}

/*
 * Read the earlier server's records from where the last read stopped.
 * Those applied are carried into ours. Caller holds journal_lock.
 */
static void catch_up(void)
{
	struct stat st;

	if (!old.map)
		return;
	if (fstat(old.fd, &st) == 0)
		old.size = (uint64_t)st.st_size;
	for (;;) {
		const struct jrec *r = record_at(&old, old.end, old.size);

		if (!r)
			break;
		if (apply(r) == 0) {
			char *name = r->name_len ? strndup(r->name, r->name_len) : NULL;

			append(r->type, r->a, r->b, r->c, name);
			free(name);
		}
		old.end += r->size;
	}
}

static unsigned gen_of(uint64_t v)
{
	return (unsigned)((v & JOURNAL_GEN_MASK) >> JOURNAL_GEN_SHIFT);
}

/* prev + 1, or the next after it that no id or handle the kernel still holds has. */
static unsigned pick_gen(unsigned prev)
{
	static unsigned char used[0x8000 / 8];
	struct fmap *maps[] = { &ids, &handles };
	unsigned g, k, i;
	struct foreign *f;

	memset(used, 0, sizeof(used));
	for (k = 0; k < 2; k++)
		for (i = 0; i < BUCKETS; i++)
			for (f = maps[k]->b[i]; f; f = f->next) {
				used[gen_of(f->key) / 8] |=
					(unsigned char)(1 << (gen_of(f->key) % 8));
				used[gen_of(f->b) / 8] |= (unsigned char)(1 << (gen_of(f->b) % 8));
			}
	for (g = prev % 0x7fff + 1;; g = g % 0x7fff + 1)
		if (!(used[g / 8] & (1 << (g % 8))))
			return g;
}

int journal_start(int old_fd, unsigned gen, int *new_fd)
{
	struct jhead *h, *oh = NULL;
	size_t i;
	int fd, ret;

	*new_fd = -1;
	if (old_fd >= 0 && jfile_map(&old, old_fd) == 0 && old.size >= J_START &&
		memcmp(old.map, J_MAGIC, sizeof(J_MAGIC)) == 0) {
		oh = (struct jhead *)old.map;
		pthread_mutex_lock(&journal_lock);
		catch_up(); /* nothing of ours yet: only read */
		pthread_mutex_unlock(&journal_lock);
	} else if (old_fd >= 0) {
		jfile_unmap(&old); /* closes old_fd, mapped or not */
		if (old.fd < 0 && fcntl(old_fd, F_GETFD) >= 0)
			close(old_fd);
	}
	{
		/* a smaller threshold, for tests */
		const char *e = getenv("OCIFS_JOURNAL_COMPACT");

		if (e && strtoull(e, NULL, 10) >= 4096)
			compact_min = compact_at = strtoull(e, NULL, 10);
	}
	pthread_mutex_lock(&journal_lock);
	ret = jfile_new(&mine);
	pthread_mutex_unlock(&journal_lock);
	if (ret)
		return ret;
	fd = mine.fd;
	h = (struct jhead *)mine.map;
	__atomic_store_n(&slots_base, (uint64_t *)(mine.map + J_SLOTS), __ATOMIC_RELEASE);
	memcpy(h->magic, J_MAGIC, sizeof(J_MAGIC));
	/* the first server's ids are its pointers as they are (generation 0) */
	h->gen = (uint16_t)(gen ? pick_gen((gen - 1) % 0x7fff) : 0);
	gen_bits = (uint64_t)h->gen << JOURNAL_GEN_SHIFT;
	if (oh && oh->mount_id)
		h->mount_id = oh->mount_id;
	while (!h->mount_id)
		if (getrandom(&h->mount_id, sizeof(h->mount_id), 0) != sizeof(h->mount_id))
			h->mount_id = (uint64_t)time(NULL) << 22 ^ (uint64_t)getpid();
	if (oh && oh->init_len <= J_INIT_MAX && oh->init_answered) {
		memcpy(h->init, oh->init, oh->init_len);
		h->init_len = oh->init_len;
		h->init_answered = 1;
	}
	/* what is still live, into ours */
	pthread_mutex_lock(&journal_lock);
	for (i = 0; i < BUCKETS; i++) {
		struct foreign *f;

		for (f = ids.b[i]; f; f = f->next)
			append(J_ENTRY, f->key, f->b, f->c, f->name);
		for (f = handles.b[i]; f; f = f->next)
			append(J_OPEN, f->key, f->b, f->c, f->name);
	}
	on = true;
	pthread_mutex_unlock(&journal_lock);
	if (oh)
		log_info("journal: %zu node ids and %zu open files of earlier servers; ids of "
			 "generation %u from here",
			ids.n, handles.n, h->gen);
	*new_fd = fd;
	return 0;
}

bool journal_on(void)
{
	return on;
}

uint64_t journal_tag(const void *p)
{
	return (uint64_t)(uintptr_t)p | gen_bits;
}

bool journal_ours(uint64_t v, void **p)
{
	if ((v & JOURNAL_GEN_MASK) != gen_bits)
		return false;
	*p = (void *)(uintptr_t)(v & ~JOURNAL_GEN_MASK);
	return true;
}

void journal_set_init(const void *buf, size_t len)
{
	struct jhead *h;

	pthread_mutex_lock(&journal_lock);
	h = (struct jhead *)mine.map;
	if (h && len <= J_INIT_MAX) {
		memcpy(h->init, buf, len);
		h->init_len = (uint32_t)len;
	}
	pthread_mutex_unlock(&journal_lock);
}

void journal_init_answered(void)
{
	pthread_mutex_lock(&journal_lock);
	if (mine.map)
		((struct jhead *)mine.map)->init_answered = 1;
	pthread_mutex_unlock(&journal_lock);
}

size_t journal_init(void *buf, size_t cap)
{
	struct jhead *h;
	size_t len = 0;

	pthread_mutex_lock(&journal_lock);
	h = (struct jhead *)mine.map;
	if (h && h->init_answered)
		len = h->init_len <= cap ? h->init_len : 0;
	memcpy(buf, h->init, len);
	pthread_mutex_unlock(&journal_lock);
	return len;
}

static void record(uint16_t type, uint64_t a, uint64_t b, uint64_t c, const char *name)
{
	if (!on)
		return;
	pthread_mutex_lock(&journal_lock);
	append(type, a, b, c, name);
	pthread_mutex_unlock(&journal_lock);
}

void journal_entry(uint64_t id, uint64_t parent, const char *name, unsigned flags)
{
	record(J_ENTRY, id, parent, flags, name);
}

void journal_forget(uint64_t id)
{
	record(J_FORGET, id, 0, 0, NULL);
}

void journal_open(uint64_t fh, uint64_t ino, int flags, int backing_id, const char *what)
{
	record(J_OPEN, fh, ino, (uint64_t)(unsigned)flags | (uint64_t)(unsigned)backing_id << 32,
		what);
}

void journal_release(uint64_t fh)
{
	record(J_RELEASE, fh, 0, 0, NULL);
}

/* The foreign entry of key, reading what an earlier server still running added. */
static struct foreign *foreign_get(struct fmap *m, uint64_t key)
{
	struct foreign *f = fmap_get(m, key);

	if (!f && old.map) {
		catch_up();
		f = fmap_get(m, key);
	}
	return f;
}

int journal_foreign(uint64_t id, uint64_t *parent, char **name, unsigned *flags, void **local)
{
	struct foreign *f;
	int ret = -ESTALE;

	pthread_mutex_lock(&journal_lock);
	f = foreign_get(&ids, id);
	if (f) {
		*parent = f->b;
		*flags = (unsigned)f->c;
		*local = f->local;
		*name = strdup(f->name ? f->name : "");
		ret = *name ? 0 : -ENOMEM;
	}
	pthread_mutex_unlock(&journal_lock);
	return ret;
}

static void *set_local(struct fmap *m, uint64_t key, void *local)
{
	struct foreign *f;
	void *ret = NULL;

	pthread_mutex_lock(&journal_lock);
	f = fmap_get(m, key);
	if (f && !f->local)
		f->local = local;
	if (f)
		ret = f->local;
	pthread_mutex_unlock(&journal_lock);
	return ret;
}

void *journal_foreign_set(uint64_t id, void *local)
{
	return set_local(&ids, id, local);
}

void *journal_foreign_forget(uint64_t id)
{
	void *local;

	pthread_mutex_lock(&journal_lock);
	if (old.map)
		catch_up(); /* an earlier server still running may have given it just now */
	local = fmap_del(&ids, id);
	if (on)
		append(J_FORGET, id, 0, 0, NULL);
	pthread_mutex_unlock(&journal_lock);
	return local;
}

int journal_foreign_handle(uint64_t fh, uint64_t *ino, int *flags, void **local, char **what)
{
	struct foreign *f;

	*what = NULL;
	pthread_mutex_lock(&journal_lock);
	f = foreign_get(&handles, fh);
	if (f) {
		*ino = f->b;
		*flags = (int)(f->c & 0xffffffffU);
		*local = f->local;
		*what = f->name ? strdup(f->name) : NULL;
	}
	pthread_mutex_unlock(&journal_lock);
	return f ? 0 : -ESTALE;
}

void *journal_foreign_handle_set(uint64_t fh, void *local)
{
	return set_local(&handles, fh, local);
}

void *journal_foreign_handle_release(uint64_t fh, uint64_t *ino, int *backing_id)
{
	struct foreign *f;
	void *local;

	pthread_mutex_lock(&journal_lock);
	if (old.map)
		catch_up();
	f = fmap_get(&handles, fh);
	*ino = f ? f->b : 0;
	*backing_id = f ? (int)(f->c >> 32) : 0;
	local = fmap_del(&handles, fh);
	if (on)
		append(J_RELEASE, fh, 0, 0, NULL);
	pthread_mutex_unlock(&journal_lock);
	return local;
}

void journal_foreach_backing(void (*fn)(uint64_t ino, int backing_id, void *arg), void *arg)
{
	struct foreign *f;
	size_t i;

	pthread_mutex_lock(&journal_lock);
	for (i = 0; i < BUCKETS; i++)
		for (f = handles.b[i]; f; f = f->next)
			if ((int)(f->c >> 32))
				fn(f->b, (int)(f->c >> 32), arg);
	pthread_mutex_unlock(&journal_lock);
}

size_t journal_foreign_made(uint64_t **out)
{
	struct foreign *f;
	size_t i, n = 0, cap = 0;
	uint64_t *a = NULL;

	pthread_mutex_lock(&journal_lock);
	for (i = 0; i < BUCKETS; i++)
		for (f = ids.b[i]; f; f = f->next) {
			if (f->local || !(f->c & JOURNAL_MADE))
				continue;
			if (!out) {
				n++;
				continue;
			}
			if (n == cap) {
				uint64_t *na = realloc(a, (cap ? 2 * cap : 16) * sizeof(*a));

				if (!na)
					goto out;
				a = na;
				cap = cap ? 2 * cap : 16;
			}
			a[n++] = f->key;
		}
out:
	pthread_mutex_unlock(&journal_lock);
	if (out)
		*out = a;
	return n;
}

size_t journal_foreign_writers(uint64_t **fhs, uint64_t **inos)
{
	struct foreign *f;
	size_t i, n = 0, cap = 0;
	uint64_t *a = NULL, *b = NULL;

	pthread_mutex_lock(&journal_lock);
	for (i = 0; i < BUCKETS; i++)
		for (f = handles.b[i]; f; f = f->next) {
			if (f->local || ((int)(f->c & 0xffffffffU) & O_ACCMODE) == O_RDONLY)
				continue;
			if (n == cap) {
				uint64_t *na, *nb;

				cap = cap ? 2 * cap : 16;
				na = realloc(a, cap * sizeof(*a));
				if (na)
					a = na;
				nb = realloc(b, cap * sizeof(*b));
				if (nb)
					b = nb;
				if (!na || !nb)
					goto out;
			}
			a[n] = f->key;
			b[n++] = f->b;
		}
out:
	pthread_mutex_unlock(&journal_lock);
	*fhs = a;
	*inos = b;
	return n;
}

static pthread_once_t slot_once = PTHREAD_ONCE_INIT;
static pthread_key_t slot_key;

/* A thread that ends gives its slot back (libfuse ends idle workers and makes new ones). */
static void slot_free(void *arg)
{
	unsigned k = (unsigned)(uintptr_t)arg - 1;
	uint64_t *base = __atomic_load_n(&slots_base, __ATOMIC_ACQUIRE);

	if (base)
		__atomic_store_n(&base[k], 0, __ATOMIC_RELEASE);
	__atomic_fetch_and(&slots_used[k / 64], ~(1ULL << (k % 64)), __ATOMIC_RELEASE);
}

static void slot_key_make(void)
{
	if (pthread_key_create(&slot_key, slot_free))
		slot_key_failed = true;
}

void journal_inflight(uint64_t unique)
{
	uint64_t *base = __atomic_load_n(&slots_base, __ATOMIC_ACQUIRE);
	uintptr_t v;
	unsigned k;

	if (!base || pthread_once(&slot_once, slot_key_make) || slot_key_failed)
		return;
	v = (uintptr_t)pthread_getspecific(slot_key);
	for (k = 0; !v && k < J_NSLOTS; k++) {
		uint64_t bit = 1ULL << (k % 64);

		if (!(__atomic_fetch_or(&slots_used[k / 64], bit, __ATOMIC_ACQUIRE) & bit)) {
			v = k + 1;
			pthread_setspecific(slot_key, (void *)v);
		}
	}
	if (v) /* else more threads than slots: this one's requests are not kept */
		__atomic_store_n(&base[v - 1], unique, __ATOMIC_RELEASE);
}

void journal_foreach_inflight(void (*fn)(uint64_t unique, void *arg), void *arg)
{
	size_t i;

	pthread_mutex_lock(&journal_lock);
	for (i = 0; old.map && old.size >= J_START && i < J_NSLOTS; i++) {
		uint64_t u = __atomic_load_n((uint64_t *)(old.map + J_SLOTS) + i, __ATOMIC_ACQUIRE);

		if (u)
			fn(u, arg);
	}
	pthread_mutex_unlock(&journal_lock);
}

void journal_old_gone(void)
{
	pthread_mutex_lock(&journal_lock);
	catch_up();
	jfile_unmap(&old);
	pthread_mutex_unlock(&journal_lock);
}

size_t journal_foreign_count(void)
{
	size_t n;

	pthread_mutex_lock(&journal_lock);
	n = ids.n + handles.n;
	pthread_mutex_unlock(&journal_lock);
	return n;
}

uint64_t journal_mount_id(void)
{
	const struct jhead *h;
	uint64_t id;

	pthread_mutex_lock(&journal_lock);
	h = on && mine.map ? (const struct jhead *)mine.map : NULL;
	id = h ? h->mount_id : 0;
	pthread_mutex_unlock(&journal_lock);
	return id;
}

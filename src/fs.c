#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cache.h"
#include "fs.h"
#include "journal.h"
#include "keeper.h"
#include "log.h"
#include "node.h"
#include "push.h"
#include "tree.h"

/* A directory handle: the listing snapshot taken at opendir. */
/*
 * Every handle the kernel holds is on one list, so that those it never
 * releases (the connection torn down by an unmount while a listing or a read
 * is under way) are freed at destroy.
 */
struct handle {
	struct handle *prev, *next; /* protected by handles_lock */
	bool dir;
};

static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct handle *handles;

static void handle_add(struct handle *h, bool dir)
{
	h->dir = dir;
	pthread_mutex_lock(&handles_lock);
	h->prev = NULL;
	h->next = handles;
	if (handles)
		handles->prev = h;
	handles = h;
	pthread_mutex_unlock(&handles_lock);
}

/* The kernel let go of h (release, or a reply it did not take). */
static void handle_del(struct handle *h)
{
	pthread_mutex_lock(&handles_lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&handles_lock);
}

/*
 * fi->fh for h, a handle of ino opened with flags (in passthrough on
 * backing_id, or 0), reading what (a blob's digest, or NULL): journaled
 * for a later server.
 */
static uint64_t handle_give(
	struct handle *h, fuse_ino_t ino, int flags, int backing_id, const char *what)
{
	uint64_t fh = journal_tag(h);

	if (journal_on())
		journal_open(fh, ino, flags, backing_id, what);
	return fh;
}

/* The kernel released fh, one of this server's handles, or never took it. */
static void handle_taken_back(uint64_t fh)
{
	if (journal_on())
		journal_release(fh);
}

struct dir_handle {
	struct handle h; /* first: a struct handle * is a struct dir_handle * */
	struct tree_dirent *ents;
	size_t n;
};

/* How the kernel reads an open file (see FUSE passthrough below). */
enum io_mode {
	IO_UNTRACKED, /* the connection has no passthrough: nothing to track */
	IO_CACHED, /* through the FUSE inode's page cache, reads sent here */
	IO_PASSTHROUGH, /* from the cache's file, by the kernel itself */
};

/*
 * A file handle: a blob of the cache and this reader's position, bytes of
 * the tree, or a staged file (fd) for files written into the mount.
 */
struct open_file {
	struct handle h; /* first: a struct handle * is a struct open_file * */
	struct node_file f; /* what the node's provider opened (f.node) */
	struct blob_reader rd; /* protected by the blob's lock */
	fuse_ino_t ino; /* the kernel's inode, for its I/O mode */
	enum io_mode io;
};

/*
 * FUSE passthrough (libfuse 3.17 and Linux 6.9 on): a read-only open of a
 * complete, verified blob gives the kernel the cache's file of it, which
 * the kernel then reads and maps itself: no read request comes here, and
 * the pages are the cache file's, not a second copy under the FUSE inode.
 *
 * The kernel holds an inode in one I/O mode while any file of it is open:
 * through the inode's page cache, or in passthrough on one backing file.
 * An open in the other mode fails there with EIO. So every open of an
 * inode follows those still open: passthrough ones share one backing id,
 * registered by the first and unregistered by the last release; an open
 * that must follow passthrough and cannot (a writer) fails here with
 * ETXTBSY, before the provider changes anything. The kernel leaves an
 * open's mode before it sends the release, so the counts here are never
 * below its own. Passthrough needs CAP_SYS_ADMIN (the kernel's check); the
 * first backing file it refuses turns it off for the rest of the mount.
 */
struct io_inode {
	struct io_inode *next; /* in its bucket of io_inodes */
	fuse_ino_t ino;
	unsigned n_cached; /* handles open through the page cache */
	unsigned n_passthrough; /* handles open in passthrough, on backing_id */
	/* registered with the kernel, or 0; kept past the last handle that had no request to close it */
	int backing_id;
};

#define IO_BUCKETS 251

/* Protects: io_inodes and their entries. Taken with no other lock held, none under it. */
static pthread_mutex_t io_lock = PTHREAD_MUTEX_INITIALIZER;
static struct io_inode *io_inodes[IO_BUCKETS];
/* Set by fs_init: the connection has passthrough, so opens are tracked (atomic). */
static bool io_tracked;
/* No new backing file: the kernel refused one (atomic). */
static bool io_refused;

#ifdef HAVE_FUSE_PASSTHROUGH
#define PASSTHROUGH_CAP FUSE_CAP_PASSTHROUGH

static void set_backing_id(struct fuse_file_info *fi, int id)
{
	fi->backing_id = id;
}

static int get_backing_id(const struct fuse_file_info *fi)
{
	return fi->backing_id;
}

/* Backing files on a stacked file system are refused; one can be stacked over this mount. */
static void set_stack_depth(struct fuse_conn_info *conn)
{
	conn->max_backing_stack_depth = FUSE_BACKING_STACKED_UNDER;
}
#else
/* libfuse before 3.17: no passthrough; these are never called. */
#define PASSTHROUGH_CAP 0
#define fuse_passthrough_open(req, fd) 0
#define fuse_passthrough_close(req, id) 0

static void set_backing_id(struct fuse_file_info *fi, int id)
{
}

static int get_backing_id(const struct fuse_file_info *fi)
{
	return 0;
}

static void set_stack_depth(struct fuse_conn_info *conn)
{
}
#endif

/* The kernel lets only CAP_SYS_ADMIN register backing files. */
static bool has_sys_admin(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	if (syscall(SYS_capget, &h, d))
		return false;
	return d[CAP_TO_INDEX(CAP_SYS_ADMIN)].effective & CAP_TO_MASK(CAP_SYS_ADMIN);
}

/* ino's entry, made when absent (NULL on ENOMEM). Caller holds io_lock. */
static struct io_inode *io_inode_get(fuse_ino_t ino)
{
	struct io_inode **b = &io_inodes[ino % IO_BUCKETS], *e;

	for (e = *b; e; e = e->next)
		if (e->ino == ino)
			return e;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->ino = ino;
	e->next = *b;
	*b = e;
	return e;
}

/* Drop e once nothing uses it. Caller holds io_lock. */
static void io_inode_put(struct io_inode *e)
{
	struct io_inode **p;

	if (e->n_cached || e->n_passthrough || e->backing_id)
		return;
	for (p = &io_inodes[e->ino % IO_BUCKETS]; *p != e; p = &(*p)->next)
		;
	*p = e->next;
	free(e);
}

static bool writes(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

static bool io_on(void)
{
	return __atomic_load_n(&io_tracked, __ATOMIC_RELAXED);
}

/*
 * A writer of fh->ino, before its provider opens it: through the page
 * cache, or -ETXTBSY while the inode is open in passthrough. 0 or -errno.
 */
static int io_open_writer(struct open_file *fh)
{
	struct io_inode *e;
	int ret = 0;

	pthread_mutex_lock(&io_lock);
	e = io_inode_get(fh->ino);
	if (!e) {
		ret = -ENOMEM;
	} else if (e->n_passthrough) {
		ret = -ETXTBSY;
	} else {
		e->n_cached++;
		fh->io = IO_CACHED;
	}
	pthread_mutex_unlock(&io_lock);
	return ret;
}

/*
 * A reader of fh->ino that its provider opened: in passthrough when fh is
 * a verified blob and no handle of the inode reads through the page cache,
 * else through it. Sets fi's backing id and keep_cache. 0 or -errno.
 */
static int io_open_reader(fuse_req_t req, struct open_file *fh, struct fuse_file_info *fi)
{
	int fd = -ENOENT, ret = 0;
	struct io_inode *e;

	if (fh->f.blob) {
		fd = cache_blob_verified_fd(fh->f.blob);
		if (fd < 0 && fd != -ENOENT)
			log_debug("passthrough: the cache's file of a blob: %s", strerror(-fd));
	}
	pthread_mutex_lock(&io_lock);
	e = io_inode_get(fh->ino);
	if (!e) {
		ret = -ENOMEM;
	} else if (e->n_passthrough) {
		if (fd < 0) {
			/* not a verified blob, yet the inode is open as one (replaced?) */
			ret = fd == -ENOENT ? -ETXTBSY : fd;
		} else {
			e->n_passthrough++;
			fh->io = IO_PASSTHROUGH;
		}
	} else if (e->n_cached || fd < 0 ||
		   (!e->backing_id && __atomic_load_n(&io_refused, __ATOMIC_RELAXED))) {
		e->n_cached++;
		fh->io = IO_CACHED;
	} else {
		if (!e->backing_id)
			e->backing_id = fuse_passthrough_open(req, fd); /* 0 when refused */
		if (e->backing_id > 0) {
			e->n_passthrough = 1;
			fh->io = IO_PASSTHROUGH;
		} else {
			/* not allowed here (a stacked cache file system, no CAP_SYS_ADMIN): not again */
			log_debug("passthrough: the kernel refused a backing file (%s): "
				  "off for this mount",
				strerror(errno));
			__atomic_store_n(&io_refused, true, __ATOMIC_RELAXED);
			tree_set_passthrough(fuse_req_userdata(req), false);
			e->backing_id = 0;
			e->n_cached++;
			fh->io = IO_CACHED;
		}
	}
	if (fh->io == IO_PASSTHROUGH) {
		set_backing_id(fi, e->backing_id);
		/* the kernel refuses FOPEN_KEEP_CACHE with passthrough: it drops the inode's pages */
		fi->keep_cache = 0;
	}
	pthread_mutex_unlock(&io_lock);
	if (fd >= 0)
		close(fd);
	if (fh->io == IO_PASSTHROUGH)
		tree_note_passthrough_open(fuse_req_userdata(req));
	return ret;
}

/*
 * The kernel let go of fh, or never took it: out of its inode's count, and
 * the backing id unregistered after the last handle, with req. Without one
 * (a reply the kernel did not take has freed it), the id is kept for the
 * inode's next opener, whose request's end unregisters it.
 */
/* A handle of e's inode, in passthrough or not, let go of (io_release). Caller holds io_lock. */
static void io_inode_drop(fuse_req_t req, struct io_inode *e, bool passthrough)
{
	unsigned *count = passthrough ? &e->n_passthrough : &e->n_cached;

	if (*count)
		(*count)--;
	if (!e->n_cached && !e->n_passthrough && e->backing_id && req) {
		if (fuse_passthrough_close(req, e->backing_id) < 0)
			log_debug("passthrough: backing id %d: %s", e->backing_id, strerror(errno));
		e->backing_id = 0;
	}
	io_inode_put(e);
}

static void io_release(fuse_req_t req, struct open_file *fh)
{
	if (fh->io == IO_UNTRACKED)
		return;
	pthread_mutex_lock(&io_lock);
	/* there: fh is counted in it */
	io_inode_drop(req, io_inode_get(fh->ino), fh->io == IO_PASSTHROUGH);
	fh->io = IO_UNTRACKED;
	pthread_mutex_unlock(&io_lock);
}

/*
 * What the journal keeps of fh's I/O mode: its backing id in passthrough,
 * -1 through the page cache, 0 untracked.
 */
static int io_journaled(const struct open_file *fh, const struct fuse_file_info *fi)
{
	return fh->io == IO_PASSTHROUGH ? get_backing_id(fi) : fh->io == IO_CACHED ? -1 : 0;
}

/*
 * A handle an earlier server opened, released: out of ino's count
 * (io_foreign_seed), its backing id unregistered after the last.
 */
static void io_foreign_release(fuse_req_t req, fuse_ino_t ino, bool passthrough)
{
	struct io_inode *e;

	if (!io_on())
		return;
	pthread_mutex_lock(&io_lock);
	e = io_inode_get(ino);
	if (e)
		io_inode_drop(req, e, passthrough);
	pthread_mutex_unlock(&io_lock);
}

/*
 * The kernel holds ino open as an earlier server opened it: in passthrough
 * on backing_id, or through the page cache (-1). A new open of ino follows
 * it (the kernel refuses another mode or another file while it is open).
 */
static void io_foreign_seed(uint64_t ino, int backing_id, void *arg)
{
	struct io_inode *e;

	(void)arg;
	pthread_mutex_lock(&io_lock);
	e = io_inode_get(ino);
	if (e && backing_id < 0) {
		e->n_cached++;
	} else if (e) {
		e->n_passthrough++;
		e->backing_id = backing_id;
	}
	pthread_mutex_unlock(&io_lock);
}

static struct tree *req_tree(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/*
 * The kernel released fh: this server's handle, or what was opened for an
 * earlier server's (NULL: nothing was), out of the journal and, for an
 * earlier server's, out of its inode's I/O count.
 */
static void *handle_released(fuse_req_t req, uint64_t fh)
{
	uint64_t ino;
	int backing_id;
	void *p;

	if (journal_ours(fh, &p)) {
		handle_taken_back(fh);
		return p;
	}
	p = journal_foreign_handle_release(fh, &ino, &backing_id);
	if (backing_id)
		io_foreign_release(req, ino, backing_id > 0);
	return p;
}

static fuse_ino_t node_ino(struct tree *t, struct node *n)
{
	return n == tree_root(t) ? FUSE_ROOT_ID : (fuse_ino_t)journal_tag(n);
}

/*
 * Entries the kernel takes and forgets are journaled under a lock of the
 * node's stripe, with its count, so that the journal has them in the order
 * the counts changed (a forget to 0 and the next first lookup of the same
 * node). Taken with no other lock held; nodes->lock and journal_lock under it.
 */
#define ENTRY_STRIPES 64
static pthread_mutex_t entry_locks[ENTRY_STRIPES] = { [0 ... ENTRY_STRIPES - 1] =
							      PTHREAD_MUTEX_INITIALIZER };

static pthread_mutex_t *entry_lock(const struct node *n)
{
	uintptr_t v = (uintptr_t)n;

	return journal_on() ? &entry_locks[(v >> 4 ^ v >> 12) % ENTRY_STRIPES] : NULL;
}

/*
 * One more lookup of n for the kernel, which has it as name below parent:
 * counted (found: as node_entry_found, which may say -ESTALE) and, the
 * first time, journaled. 0 or -ESTALE.
 */
static int entry_take(
	struct tree *t, struct node *n, fuse_ino_t parent, const char *name, bool found)
{
	pthread_mutex_t *l = entry_lock(n);
	/* a repository made here is made again by the next server, from the journal */
	unsigned flags = l && push_repo_made(t, n) ? JOURNAL_MADE : 0;
	int ret;

	if (l)
		pthread_mutex_lock(l);
	ret = found ? node_entry_found(tree_nodes(t), n) : node_entry_given(tree_nodes(t), n);
	/*
	 * Journaled when the kernel first takes it, and again under another
	 * parent id or name: the kernel moves a directory's dentry to the
	 * parent id it looked it up under last, and may forget the one before.
	 */
	if (ret >= 0 && l) {
		uint32_t h = 2166136261U;
		const char *c;

		for (c = name; *c; c++)
			h = (h ^ (unsigned char)*c) * 16777619U;
		if (ret > 0 || n->jparent != parent || n->jname != h) {
			journal_entry(node_ino(t, n), parent, name, flags);
			n->jparent = parent;
			n->jname = h;
		}
	}
	if (l)
		pthread_mutex_unlock(l);
	return ret < 0 ? ret : 0;
}

/* The kernel forgot nlookup lookups of n, one of this server's nodes. */
static void entry_forget(struct tree *t, struct node *n, uint64_t nlookup)
{
	pthread_mutex_t *l = entry_lock(n);
	fuse_ino_t ino = node_ino(t, n); /* before: n may go */

	if (l)
		pthread_mutex_lock(l);
	if (node_forget(tree_nodes(t), n, nlookup) && l)
		journal_forget(ino);
	if (l)
		pthread_mutex_unlock(l);
}

/* Take or drop the hold a foreign id has on the node made for it. */
static void foreign_hold(struct tree *t, struct node *n, bool take)
{
	struct nodes *ns = tree_nodes(t);

	pthread_mutex_lock(&ns->lock);
	if (take)
		node_hold(ns, n);
	else
		node_drop(ns, n);
	pthread_mutex_unlock(&ns->lock);
}

/* Paths longer than this are not followed back to the root (a loop in a journal). */
#define FOREIGN_DEPTH 1024

/*
 * The node for ino, an id an earlier server gave the kernel: made by
 * looking its name up below its parent (itself foreign, perhaps) the first
 * time, then held for as long as the kernel has ino. staged: the staged
 * file a writer's handle of ino names, shown again under that name when
 * the name is not found (a file made and never closed). NULL: not known,
 * or no longer there.
 */
static struct node *foreign_node(struct tree *t, fuse_ino_t ino, unsigned depth, const char *staged)
{
	uint64_t parent;
	struct node *dir = NULL, *n;
	char *name;
	void *local;
	unsigned flags;
	int ret;

	if (depth > FOREIGN_DEPTH || journal_foreign(ino, &parent, &name, &flags, &local)) {
		log_info("id %#llx: no server recorded it", (unsigned long long)ino);
		return NULL;
	}
	if (local) {
		free(name);
		return local;
	}
	if (parent == FUSE_ROOT_ID)
		dir = tree_root(t);
	else if (!journal_ours(parent, &local))
		dir = foreign_node(t, parent, depth + 1, NULL);
	else
		dir = local;
	ret = dir ? tree_lookup(t, node_current(dir), name, &n) : -ESTALE;
	if (ret == -ENOENT && (flags & JOURNAL_MADE)) {
		/* a repository made by mkdir, nothing pushed to it yet: made again */
		ret = push_repo_make(t, node_current(dir), name, &n);
		if (ret == -EEXIST)
			ret = 0;
	}
	if (ret == -ENOENT && staged) {
		/* made, never closed: only its writer's handle knew it (push_adopt_file) */
		ret = push_adopt_file(t, node_current(dir), name, staged, &n);
		if (ret == -EEXIST)
			ret = tree_lookup(t, node_current(dir), name, &n);
	}
	if (ret) {
		log_info("an id of an earlier server, \"%s\": %s", name, strerror(-ret));
		free(name);
		return NULL;
	}
	free(name);
	/* held for the kernel's ino; not a lookup: those count this server's own id */
	foreign_hold(t, n, true);
	local = journal_foreign_set(ino, n);
	if (local != n)
		foreign_hold(t, n, false); /* another request made it first */
	return local;
}

/* The node of ino itself: what the kernel's counts are of. NULL: stale. */
static struct node *ino_node_counted(struct tree *t, fuse_ino_t ino)
{
	void *p;

	/*
	 * Every path from the root, and every id of an earlier server, waits
	 * for the drafts that server left to be shown again (push_adopt).
	 */
	if (ino == FUSE_ROOT_ID) {
		push_wait_adopted(t);
		return tree_root(t);
	}
	if (journal_ours(ino, &p))
		return p;
	push_wait_adopted(t);
	return foreign_node(t, ino, 0, NULL);
}

/* What a request on ino is for: its node, or what replaced it (node_replace). NULL: stale. */
static struct node *ino_node(struct tree *t, fuse_ino_t ino)
{
	struct node *n = ino_node_counted(t, ino);

	return n ? node_current(n) : NULL;
}

/* Reply ESTALE and return when n, the node of a request's ino, is not known. */
#define STALE_IF_NULL(n) \
	do { \
		if (!(n)) { \
			fuse_reply_err(req, ESTALE); \
			return; \
		} \
	} while (0)

/* A write operation's answer where a node's provider has none: nothing there can change. */
#define NO_WRITE (-EROFS)

static int fill_stat(struct tree *t, struct node *n, struct stat *st)
{
	int ret = tree_getattr(t, n, st);

	st->st_ino = node_ino(t, n);
	return ret;
}

/* Reply with n as an entry, its lookup counted already: given back if the reply fails. */
static void reply_counted_entry(
	fuse_req_t req, struct tree *t, struct node *n, struct fuse_entry_param *e, double timeout)
{
	e->ino = node_ino(t, n);
	e->generation = node_generation(n);
	e->attr_timeout = e->entry_timeout = timeout;
	if (fuse_reply_entry(req, e) != 0)
		entry_forget(t, n, 1);
}

/* Hand n to the kernel as name below parent: one more lookup, given back if the reply fails. */
static void reply_entry(fuse_req_t req, struct tree *t, struct node *n, fuse_ino_t parent,
	const char *name, struct fuse_entry_param *e, double timeout)
{
	entry_take(t, n, parent, name, false);
	reply_counted_entry(req, t, n, e, timeout);
}

static void fs_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Everything is immutable under its inode; let the kernel cache pages. */
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
	conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
	/* Larger kernel read-ahead: fewer, bigger reads reach the daemon. */
	conn->max_readahead = 4 * 1024 * 1024;
	/*
	 * And bigger writes: fewer requests per byte copied in. It also bounds
	 * reads (max_pages): 1008 KiB and the reply's header fit a pipe of 1 MiB
	 * (pipe-max-size), so libfuse splices a read whole; at 1 MiB it would
	 * fall back to a copy through a buffer of its own, malloc'd per read.
	 */
	conn->max_write = 1008 * 1024;
	if ((conn->capable & PASSTHROUGH_CAP) && has_sys_admin()) {
		conn->want |= PASSTHROUGH_CAP;
		set_stack_depth(conn);
		__atomic_store_n(&io_tracked, true, __ATOMIC_RELAXED);
		tree_set_passthrough(userdata, true);
		journal_foreach_backing(io_foreign_seed, NULL);
	}
}

/*
 * Times a lookup is made again when what it found left the tree before it
 * was handed out (node_entry_found); past them it is handed out as found.
 */
#define LOOKUP_TRIES 8

static void do_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct tree *t = req_tree(req);
	struct fuse_entry_param e;
	struct node *n;
	int ret, tries;

	for (tries = 1;; tries++) {
		struct node *dir = ino_node(t, parent);

		memset(&e, 0, sizeof(e));
		ret = dir ? tree_lookup(t, dir, name, &n) : -ESTALE;
		if (ret == 0)
			ret = fill_stat(t, n, &e.attr);
		if (ret || entry_take(t, n, parent, name, true) == 0)
			break;
		if (tries == LOOKUP_TRIES) {
			entry_take(t, n, parent, name, false);
			break;
		}
	}
	if (ret == -ENOENT) {
		/* A negative entry spares the registry repeated misses (shells probe a lot). */
		e.entry_timeout = tree_negative_timeout(t);
		fuse_reply_entry(req, &e);
		return;
	}
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	reply_counted_entry(req, t, n, &e, tree_timeout(t, n));
}

static void do_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct tree *t = req_tree(req);
	struct node *n = ino_node(t, ino);
	struct stat st;
	int ret;

	STALE_IF_NULL(n);
	ret = fill_stat(t, n, &st);
	st.st_ino = ino; /* an earlier server's id stays that inode's number */
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, tree_timeout(t, n));
}

static void dir_handle_free(void *owner, void *arg)
{
	struct dir_handle *dh = arg;

	tree_dirents_free(dh->ents, dh->n);
	free(dh);
}

static void do_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct tree *t = req_tree(req);
	struct dir_handle *dh = calloc(1, sizeof(*dh));
	struct node *n;
	int ret;

	if (!dh) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = ino_node(t, ino);
	ret = n ? tree_list(t, n, &dh->ents, &dh->n) : -ESTALE;
	if (ret) {
		free(dh);
		fuse_reply_err(req, -ret);
		return;
	}
	fi->fh = handle_give(&dh->h, ino, O_RDONLY | O_DIRECTORY, 0, NULL);
	fi->cache_readdir = 0;
	handle_add(&dh->h, true);
	/* a reply the kernel did not take (the mount going away): no release will come */
	if (fuse_reply_open(req, fi) != 0) {
		handle_del(&dh->h);
		handle_taken_back(fi->fh);
		dir_handle_free(t, dh);
	}
}

static void *handle_adopt(struct tree *t, uint64_t fh_id, struct handle *h, bool dir);

/*
 * The listing of a directory handle an earlier server gave: taken anew
 * (offsets past entries that changed meanwhile may skip or repeat one).
 */
static struct dir_handle *foreign_dir(struct tree *t, fuse_ino_t ino, uint64_t fh)
{
	struct dir_handle *dh;
	struct node *n;
	uint64_t jino;
	char *what;
	void *local;
	int flags;

	if (journal_foreign_handle(fh, &jino, &flags, &local, &what))
		return NULL;
	free(what);
	if (local)
		return local;
	dh = calloc(1, sizeof(*dh));
	n = dh ? ino_node(t, ino) : NULL;
	if (!n || tree_list(t, n, &dh->ents, &dh->n)) {
		free(dh);
		return NULL;
	}
	return handle_adopt(t, fh, &dh->h, true);
}

/* The directory handle of fi: this server's, or one an earlier server gave. NULL: stale. */
static struct dir_handle *dir_of(struct tree *t, fuse_ino_t ino, struct fuse_file_info *fi)
{
	void *p;

	return journal_ours(fi->fh, &p) ? p : foreign_dir(t, ino, fi->fh);
}

static void do_readdir(
	fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct dir_handle *dh = dir_of(req_tree(req), ino, fi);
	char *buf = malloc(size);
	size_t used = 0;
	off_t i;

	if (!dh) {
		free(buf);
		fuse_reply_err(req, ESTALE);
		return;
	}
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* Offsets 0 and 1 are "." and ".."; entry k is at offset k + 2. */
	for (i = off; i < (off_t)dh->n + 2; i++) {
		struct stat st;
		const char *name;
		size_t len;

		memset(&st, 0, sizeof(st));
		if (i < 2) {
			name = i == 0 ? "." : "..";
			st.st_mode = S_IFDIR;
			st.st_ino = ino;
		} else {
			name = dh->ents[i - 2].name;
			st.st_mode = dh->ents[i - 2].type;
			st.st_ino = dh->ents[i - 2].ino;
		}
		len = fuse_add_direntry(req, buf + used, size - used, name, &st, i + 1);
		if (len > size - used)
			break;
		used += len;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

/* The kernel may release a handle while a request of it is still answered: freed after. */
static void do_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dir_handle *dh = handle_released(req, fi->fh);

	if (dh) {
		handle_del(&dh->h);
		node_defer(tree_nodes(req_tree(req)), dir_handle_free, dh);
	}
	fuse_reply_err(req, 0);
}

static void open_file_free(void *owner, void *arg)
{
	struct tree *t = owner;
	struct open_file *fh = arg;

	if (fh->f.blob)
		cache_blob_close(fh->f.blob);
	if (fh->f.fd >= 0)
		close(fh->f.fd);
	node_handle_close(tree_nodes(t), fh->f.node);
	free(fh->f.owned);
	free(fh);
}

/* The last release of a handle: its provider ends what the open began. */
static void open_file_close(struct tree *t, struct open_file *fh)
{
	if (fh->f.node->ops->close)
		fh->f.node->ops->close(t, &fh->f);
}

/* A handle the kernel will never release: its writer let go of, then freed now. */
static void open_file_drop(struct tree *t, struct open_file *fh)
{
	open_file_close(t, fh);
	open_file_free(t, fh);
}

/* A handle, of a directory (dir) or a file, that no request will use: freed now. */
static void handle_free(struct tree *t, struct handle *h, bool dir)
{
	if (dir)
		dir_handle_free(t, h);
	else
		open_file_drop(t, (struct open_file *)h);
}

/*
 * h, made here for fh_id (an earlier server's handle), kept for it unless
 * another request made one first: the handle in force.
 */
static void *handle_adopt(struct tree *t, uint64_t fh_id, struct handle *h, bool dir)
{
	void *local;

	handle_add(h, dir);
	local = journal_foreign_handle_set(fh_id, h);
	if (local != h) {
		handle_del(h);
		handle_free(t, h, dir);
	}
	return local;
}

/*
 * A file handle an earlier server gave: opened again here, as it was
 * opened then (but for O_TRUNC and O_CREAT, done then), through the page
 * cache. NULL: not known, or it cannot be opened again.
 */
static struct open_file *foreign_file(struct tree *t, fuse_ino_t ino, uint64_t fh_id)
{
	struct open_file *fh;
	struct node *n;
	uint64_t jino;
	char *what;
	void *local;
	int flags, ret;

	if (journal_foreign_handle(fh_id, &jino, &flags, &local, &what)) {
		log_info("file handle %#llx: no server recorded it", (unsigned long long)fh_id);
		return NULL;
	}
	if (local) {
		free(what);
		return local;
	}
	n = ino_node(t, ino);
	if (!n && (flags & O_ACCMODE) != O_RDONLY && what && what[0] == '/' &&
		!journal_ours(ino, &local))
		n = foreign_node(t, ino, 0, what); /* its staged file, named by the handle */
	fh = n ? calloc(1, sizeof(*fh)) : NULL;
	if (!fh) {
		free(what);
		return NULL;
	}
	fh->f.fd = -1;
	fh->f.node = n;
	fh->ino = ino;
	flags &= ~(O_TRUNC | O_CREAT | O_EXCL);
	/*
	 * A writer goes on only into the staged file it wrote (a draft taken
	 * over): a copy of what the registry has now would mix its bytes in.
	 */
	ret = (flags & O_ACCMODE) != O_RDONLY && n->kind != NODE_STAGED ? -ESTALE
	      : n->ops->open ? n->ops->open(t, n, flags, &fh->f)
			     : -EACCES;
	if (ret) {
		log_warn("a file opened before the server was restarted cannot be opened again: "
			 "%s",
			strerror(-ret));
		free(what);
		free(fh->f.owned);
		free(fh);
		return NULL;
	}
	node_handle_open(tree_nodes(t), fh->f.node);
	if ((flags & O_ACCMODE) != O_RDONLY)
		push_reopened(t, fh->f.node);
	if (what && what[0] != '/' &&
		(!fh->f.blob || strcmp(cache_blob_digest(fh->f.blob), what) != 0)) {
		/* its name names other bytes now (its tag moved): never the wrong file */
		log_warn("a file opened before the server was restarted, %s, is %s by its name "
			 "now: its reads fail (ESTALE)",
			what, fh->f.blob ? cache_blob_digest(fh->f.blob) : "another file");
		free(what);
		open_file_drop(t, fh);
		return NULL;
	}
	free(what);
	return handle_adopt(t, fh_id, &fh->h, false);
}

void fs_take_over(struct tree *t)
{
	uint64_t *fhs, *inos, *made;
	size_t i, n = journal_foreign_made(&made);

	/* shown again where they were, before anyone lists their parent */
	for (i = 0; i < n; i++)
		if (!foreign_node(t, made[i], 0, NULL))
			log_warn("id %#llx, a repository made before the server was restarted: "
				 "not made again",
				(unsigned long long)made[i]);
	free(made);
	n = journal_foreign_writers(&fhs, &inos);

	for (i = 0; i < n; i++)
		if (!foreign_file(t, inos[i], fhs[i]))
			log_warn("file handle %#llx, open for writing before the server was "
				 "restarted: its writes fail (ESTALE)",
				(unsigned long long)fhs[i]);
	free(fhs);
	free(inos);
}

/* The file handle of fi: this server's, or one an earlier server gave. NULL: stale. */
static struct open_file *file_of(struct tree *t, fuse_ino_t ino, struct fuse_file_info *fi)
{
	void *p;

	return journal_ours(fi->fh, &p) ? p : foreign_file(t, ino, fi->fh);
}

/* Reply ESTALE and return when fh, a request's file handle, is not known. */
#define FH_OR_STALE(fh, req, ino, fi) \
	do { \
		(fh) = file_of(req_tree(req), (ino), (fi)); \
		if (!(fh)) { \
			fuse_reply_err((req), ESTALE); \
			return; \
		} \
	} while (0)

static void do_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct tree *t = req_tree(req);
	struct node *n = ino_node(t, ino);
	struct open_file *fh;
	int ret;

	STALE_IF_NULL(n);
	fh = calloc(1, sizeof(*fh));
	if (!fh) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fh->f.fd = -1;
	fh->f.node = n;
	fh->ino = ino;
	ret = io_on() && writes(fi->flags) ? io_open_writer(fh) : 0;
	if (ret)
		goto out_free;
	if (n->ops->open)
		ret = n->ops->open(t, n, fi->flags, &fh->f);
	else
		ret = n->ops->type(n) == S_IFDIR ? -EISDIR : -EACCES;
	/* a failed open leaves nothing to close: the provider undoes its own work */
	if (ret)
		goto out_io;
	n = fh->f.node; /* what was opened: a file written is replaced by a staged one */
	fi->direct_io = fh->f.direct_io;
	/* a staged file's bytes change as it is written */
	fi->keep_cache = fh->f.fd < 0 && fh->f.keep_cache;
	node_handle_open(tree_nodes(t), n);
	if (io_on() && fh->io == IO_UNTRACKED) {
		ret = io_open_reader(req, fh, fi);
		if (ret) {
			io_release(req, fh);
			open_file_drop(t, fh);
			fuse_reply_err(req, -ret);
			return;
		}
	}
	{
		/* a writer: its staged file (a later server finds it by it); a reader: its blob */
		char *staged = journal_on() && writes(fi->flags) ? push_staged_path(t, n) : NULL;

		fi->fh = handle_give(&fh->h, ino, fi->flags, io_journaled(fh, fi),
			staged	     ? staged
			: fh->f.blob ? cache_blob_digest(fh->f.blob)
				     : NULL);
		free(staged);
	}
	handle_add(&fh->h, false);
	/* a reply the kernel did not take (the mount going away): no release will come */
	if (fuse_reply_open(req, fi) != 0) {
		handle_del(&fh->h);
		handle_taken_back(fi->fh);
		io_release(NULL, fh); /* the reply freed req */
		open_file_drop(t, fh);
	}
	return;
out_io:
	io_release(req, fh);
out_free:
	free(fh->f.owned);
	free(fh);
	fuse_reply_err(req, -ret);
}

/*
 * A request the kernel sends again failed as if done already: whether the
 * server that died did it. name in dir is there as it made it: a directory
 * (type S_IFDIR), or an empty file (S_IFREG); or is gone (0: an unlink).
 */
static bool resent_done(struct tree *t, struct node *dir, const char *name, mode_t type)
{
	struct stat st;
	struct node *n;
	int ret;

	if (!keeper_request_resent())
		return false;
	ret = tree_lookup(t, node_current(dir), name, &n);
	if (type == 0)
		return ret == -ENOENT;
	if (ret || fill_stat(t, n, &st))
		return false;
	return (st.st_mode & S_IFMT) == type && (type == S_IFDIR || st.st_size == 0);
}

static void do_create(
	fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	struct tree *t = req_tree(req);
	struct fuse_entry_param e;
	struct open_file *fh = calloc(1, sizeof(*fh));
	struct node *n, *dir;
	int ret;

	if (!fh) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	dir = ino_node(t, parent);
	fh->f.fd = -1;
	/* A failed create leaves no descriptor: it has closed what it opened. */
	ret = !dir ? -ESTALE
	      : dir->ops->create
		      ? dir->ops->create(t, dir, name, (fi->flags & O_EXCL) != 0, &n, &fh->f.fd)
		      : NO_WRITE;
	if (ret == -EEXIST && resent_done(t, dir, name, S_IFREG))
		/* the dead server made it, empty: this create is that one */
		ret = dir->ops->create(t, dir, name, false, &n, &fh->f.fd);
	if (ret)
		goto out_err;
	keeper_crash_point("create");
	fh->f.node = n;
	fh->f.writer = true;
	fh->ino = node_ino(t, n);
	memset(&e, 0, sizeof(e));
	ret = fill_stat(t, n, &e.attr);
	if (!ret && io_on())
		ret = io_open_writer(fh);
	if (ret) {
		open_file_close(t, fh);
		close(fh->f.fd);
		goto out_err;
	}
	e.ino = node_ino(t, n);
	e.generation = node_generation(n);
	entry_take(t, n, parent, name, false);
	{
		/* the journal has its staged file: a later server finds it by it */
		char *staged = journal_on() ? push_staged_path(t, n) : NULL;

		fi->fh = handle_give(&fh->h, e.ino, fi->flags, io_journaled(fh, fi), staged);
		free(staged);
	}
	fi->keep_cache = 0;
	node_handle_open(tree_nodes(t), n);
	handle_add(&fh->h, false);
	if (fuse_reply_create(req, &e, fi) != 0) {
		/* the kernel has neither the entry nor the handle: close it here */
		handle_del(&fh->h);
		handle_taken_back(fi->fh);
		io_release(NULL, fh); /* the reply freed req */
		open_file_drop(t, fh);
		entry_forget(t, n, 1);
	}
	return;
out_err:
	free(fh);
	fuse_reply_err(req, -ret);
}

static void do_read(
	fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
	struct open_file *fh;
	int64_t bsize;
	int fd;

	FH_OR_STALE(fh, req, ino, fi);
	if (fh->f.image) {
		char *buf = malloc(size);
		ssize_t r = buf ? fh->f.node->ops->read(req_tree(req), &fh->f, buf, size, off)
				: -ENOMEM;

		if (r < 0) {
			fuse_reply_err(req, (int)-r);
		} else {
			tree_note_served(req_tree(req), (size_t)r);
			fuse_reply_buf(req, buf, (size_t)r);
		}
		free(buf);
		return;
	}
	if (fh->f.fd >= 0) {
		bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		bv.buf[0].fd = fh->f.fd;
		bv.buf[0].pos = off;
		fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
		return;
	}
	if (!fh->f.blob) {
		if ((size_t)off >= fh->f.len)
			size = 0;
		else if (size > fh->f.len - (size_t)off)
			size = fh->f.len - (size_t)off;
		if (!fh->f.owned) /* the status file's own reads are not what it reports */
			tree_note_served(req_tree(req), size);
		fuse_reply_buf(req, fh->f.data + (size > 0 ? off : 0), size);
		return;
	}
	bsize = cache_blob_size(fh->f.blob);
	if (off >= bsize) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if ((int64_t)size > bsize - off)
		size = (size_t)(bsize - off);
	fd = cache_blob_prepare(fh->f.blob, &fh->rd, off, size);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	bv.buf[0].size = size;
	bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bv.buf[0].fd = fd;
	bv.buf[0].pos = off;
	tree_note_served(req_tree(req), size);
	/* the bytes are in the reply once it returns: they may be evicted after */
	fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
	cache_blob_done(fh->f.blob, off, size);
}

static void do_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
	struct fuse_file_info *fi)
{
	struct open_file *fh;
	ssize_t ret;

	FH_OR_STALE(fh, req, ino, fi);
	if (!fh->f.writer) {
		fuse_reply_err(req, EBADF);
		return;
	}
	ret = fh->f.node->ops->write(req_tree(req), &fh->f, buf, size, off);
	if (ret < 0)
		fuse_reply_err(req, (int)-ret);
	else
		fuse_reply_write(req, (size_t)ret);
}

/* Every close(2): a file written into the mount is uploaded now, and close says how that went. */
static void do_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct open_file *fh;

	FH_OR_STALE(fh, req, ino, fi);
	fuse_reply_err(req, fh->f.writer ? -fh->f.node->ops->flush(req_tree(req), &fh->f) : 0);
}

static void do_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	do_flush(req, ino, fi);
}

/*
 * A reader killed mid-read makes the kernel release its handle while that
 * read may still be answered here: what the read uses is freed after it.
 */
static void do_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct open_file *fh = handle_released(req, fi->fh);

	if (fh) {
		handle_del(&fh->h);
		io_release(req, fh);
		open_file_close(req_tree(req), fh);
		node_defer(tree_nodes(req_tree(req)), open_file_free, fh);
	}
	fuse_reply_err(req, 0);
}

static void reply_xattr(fuse_req_t req, size_t size, ssize_t ret, const char *buf)
{
	if (ret < 0)
		fuse_reply_err(req, (int)-ret);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)ret);
	else
		fuse_reply_buf(req, buf, (size_t)ret);
}

static void do_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct tree *t = req_tree(req);
	char *buf = size ? malloc(size) : NULL;
	struct node *n;
	ssize_t ret;

	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = ino_node(t, ino);
	ret = n ? tree_getxattr(t, n, name, buf, size) : -ESTALE;
	reply_xattr(req, size, ret, buf);
	free(buf);
}

static void do_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct tree *t = req_tree(req);
	char *buf = size ? malloc(size) : NULL;
	struct node *n;
	ssize_t ret;

	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = ino_node(t, ino);
	ret = n ? tree_listxattr(t, n, buf, size) : -ESTALE;
	reply_xattr(req, size, ret, buf);
	free(buf);
}

static void do_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = sv.f_frsize = 4096;
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

/* Reply with the entry of a node a change made: name below parent. */
static void reply_new_entry(fuse_req_t req, struct tree *t, struct node *n, fuse_ino_t parent,
	const char *name, int ret)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	if (!ret)
		ret = fill_stat(t, n, &e.attr);
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	reply_entry(req, t, n, parent, name, &e, 0);
}

static void do_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct tree *t = req_tree(req);
	struct node *n = NULL, *dir = ino_node(t, parent);
	int ret;

	STALE_IF_NULL(dir);
	/* n is set by the call: not an argument evaluated beside it */
	ret = dir->ops->mkdir ? dir->ops->mkdir(t, dir, name, &n) : NO_WRITE;
	if (ret == -EEXIST && resent_done(t, dir, name, S_IFDIR))
		ret = tree_lookup(t, node_current(dir), name, &n); /* the dead server made it */
	if (!ret)
		keeper_crash_point("mkdir");
	reply_new_entry(req, t, n, parent, name, ret);
}

static void do_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct tree *t = req_tree(req);
	struct node *n = NULL, *dir;
	int fd = -1, ret;

	/* Only regular files can be pushed. */
	if (!S_ISREG(mode)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	dir = ino_node(t, parent);
	STALE_IF_NULL(dir);
	ret = dir->ops->create ? dir->ops->create(t, dir, name, true, &n, &fd) : NO_WRITE;
	if (!ret) {
		struct node_file f = { .node = n, .fd = fd, .writer = true };

		close(fd);
		n->ops->close(t, &f);
	}
	reply_new_entry(req, t, n, parent, name, ret);
}

static void do_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct tree *t = req_tree(req);
	struct node *dir = ino_node(t, parent);
	int ret;

	STALE_IF_NULL(dir);
	ret = dir->ops->unlink ? dir->ops->unlink(t, dir, name) : NO_WRITE;
	if (ret == -ENOENT && resent_done(t, dir, name, 0))
		ret = 0; /* the dead server removed it */
	if (!ret)
		keeper_crash_point("unlink");
	fuse_reply_err(req, -ret);
}

static void do_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct tree *t = req_tree(req);
	struct node *dir = ino_node(t, parent);
	int ret;

	STALE_IF_NULL(dir);
	ret = dir->ops->rmdir ? dir->ops->rmdir(t, dir, name) : NO_WRITE;
	if (ret == -ENOENT && resent_done(t, dir, name, 0))
		ret = 0; /* the dead server removed it */
	fuse_reply_err(req, -ret);
}

static void do_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
	const char *newname, unsigned int flags)
{
	struct tree *t = req_tree(req);
	struct node *dir = ino_node(t, parent), *newdir = ino_node(t, newparent);

	STALE_IF_NULL(dir);
	STALE_IF_NULL(newdir);
	fuse_reply_err(req, dir->ops->rename
				    ? -dir->ops->rename(t, dir, name, newdir, newname, flags)
				    : -NO_WRITE);
}

static void do_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct tree *t = req_tree(req);
	struct node *dir = ino_node(t, ino);

	STALE_IF_NULL(dir);
	fuse_reply_err(req, dir->ops->fsyncdir ? -dir->ops->fsyncdir(t, dir) : 0);
}

static void do_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct tree *t = req_tree(req);
	struct node *n = ino_node(t, ino);
	const char *target;
	int ret = !n ? -ESTALE : n->ops->readlink ? n->ops->readlink(t, n, &target) : -EINVAL;

	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_readlink(req, target);
}

/* Artifacts hold regular files and directories only. */
static void do_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct tree *t = req_tree(req);
	struct node *n = NULL;
	/* in a repository: tag name to what link names (oras tag) */
	struct node *dir = ino_node(t, parent);
	int ret;

	STALE_IF_NULL(dir);
	ret = dir->ops->symlink ? dir->ops->symlink(t, dir, name, link, &n) : NO_WRITE;
	reply_new_entry(req, t, n, parent, name, ret);
}

static void do_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	fuse_reply_err(req, tree_read_only(req_tree(req)) ? EROFS : EPERM);
}

static void do_setattr(
	fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	struct tree *t = req_tree(req);
	struct node *n = ino_node(t, ino);
	struct stat st;
	int ret = 0;

	STALE_IF_NULL(n);
	if (tree_read_only(t)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE)
		ret = n->ops->truncate ? n->ops->truncate(t, n, attr->st_size) : NO_WRITE;
	/* Modes, owners and times are not part of an artifact: accepted, not kept. */
	if (!ret)
		ret = fill_stat(t, n, &st);
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, tree_timeout(t, n));
}

static void do_setxattr(
	fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags)
{
	struct tree *t = req_tree(req);
	struct node *n = ino_node(t, ino);

	STALE_IF_NULL(n);
	fuse_reply_err(
		req, n->ops->setxattr ? -n->ops->setxattr(t, n, name, value, size) : -NO_WRITE);
}

static void do_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct tree *t = req_tree(req);
	struct node *n = ino_node(t, ino);

	STALE_IF_NULL(n);
	fuse_reply_err(req, n->ops->removexattr ? -n->ops->removexattr(t, n, name) : -NO_WRITE);
}

/* The kernel forgot nlookup lookups of ino: this server's node, or an earlier one's id. */
static void forget_ino(struct tree *t, fuse_ino_t ino, uint64_t nlookup)
{
	void *p;

	if (ino == FUSE_ROOT_ID)
		return;
	if (journal_ours(ino, &p)) {
		entry_forget(t, p, nlookup);
		return;
	}
	/* the kernel forgets an inode whole: the id is gone with it */
	p = journal_foreign_forget(ino);
	if (p)
		foreign_hold(t, p, false);
}

static void do_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	forget_ino(req_tree(req), ino, nlookup);
	fuse_reply_none(req);
}

static void do_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct tree *t = req_tree(req);
	size_t i;

	for (i = 0; i < count; i++)
		forget_ino(t, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

/*
 * Each request runs as one tree operation: what it finds in the tree stays
 * valid until it has replied, whatever other requests forget meanwhile.
 */
#define OP(name, params, args) \
	static void fs_##name params \
	{ \
		struct tree *t_ = req_tree(req); \
		unsigned op_ = node_op_enter(tree_nodes(t_)); \
\
		do_##name args; \
		node_op_leave(tree_nodes(t_), op_); \
	}

OP(lookup, (fuse_req_t req, fuse_ino_t parent, const char *name), (req, parent, name))
OP(forget, (fuse_req_t req, fuse_ino_t ino, uint64_t nlookup), (req, ino, nlookup))
OP(forget_multi, (fuse_req_t req, size_t count, struct fuse_forget_data *forgets),
	(req, count, forgets))
OP(getattr, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
OP(readlink, (fuse_req_t req, fuse_ino_t ino), (req, ino))
OP(opendir, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
OP(readdir, (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi),
	(req, ino, size, off, fi))
OP(releasedir, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
OP(open, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
OP(read, (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi),
	(req, ino, size, off, fi))
OP(write,
	(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		struct fuse_file_info *fi),
	(req, ino, buf, size, off, fi))
OP(flush, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
OP(fsync, (fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi),
	(req, ino, datasync, fi))
OP(release, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
OP(getxattr, (fuse_req_t req, fuse_ino_t ino, const char *name, size_t size),
	(req, ino, name, size))
OP(listxattr, (fuse_req_t req, fuse_ino_t ino, size_t size), (req, ino, size))
OP(statfs, (fuse_req_t req, fuse_ino_t ino), (req, ino))
OP(mkdir, (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode),
	(req, parent, name, mode))
OP(mknod, (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev),
	(req, parent, name, mode, rdev))
OP(create,
	(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		struct fuse_file_info *fi),
	(req, parent, name, mode, fi))
OP(unlink, (fuse_req_t req, fuse_ino_t parent, const char *name), (req, parent, name))
OP(rmdir, (fuse_req_t req, fuse_ino_t parent, const char *name), (req, parent, name))
OP(fsyncdir, (fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi),
	(req, ino, datasync, fi))
OP(rename,
	(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		const char *newname, unsigned int flags),
	(req, parent, name, newparent, newname, flags))
OP(symlink, (fuse_req_t req, const char *link, fuse_ino_t parent, const char *name),
	(req, link, parent, name))
OP(link, (fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname),
	(req, ino, newparent, newname))
OP(setattr,
	(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi),
	(req, ino, attr, to_set, fi))
OP(setxattr,
	(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
		int flags),
	(req, ino, name, value, size, flags))
OP(removexattr, (fuse_req_t req, fuse_ino_t ino, const char *name), (req, ino, name))

/* The session ends: what the kernel never released goes now (no request runs any more). */
static void fs_destroy(void *userdata)
{
	struct tree *t = userdata;
	struct handle *h;
	bool replaced = keeper_replaced();
	size_t i;

	for (;;) {
		pthread_mutex_lock(&handles_lock);
		h = handles;
		if (h) {
			handles = h->next;
			if (handles)
				handles->prev = NULL;
		}
		pthread_mutex_unlock(&handles_lock);
		if (!h)
			break;
		/* a writer the server now serving has goes on there: only freed here */
		if (replaced && !h->dir)
			open_file_free(t, (struct open_file *)h);
		else
			handle_free(t, h, h->dir);
	}
	/* the kernel drops the connection's backing files itself */
	pthread_mutex_lock(&io_lock);
	for (i = 0; i < IO_BUCKETS; i++) {
		while (io_inodes[i]) {
			struct io_inode *e = io_inodes[i];

			io_inodes[i] = e->next;
			free(e);
		}
	}
	pthread_mutex_unlock(&io_lock);
}

const struct fuse_lowlevel_ops fs_ops = {
	.init = fs_init,
	.destroy = fs_destroy,
	.lookup = fs_lookup,
	.forget = fs_forget,
	.forget_multi = fs_forget_multi,
	.getattr = fs_getattr,
	.readlink = fs_readlink,
	.opendir = fs_opendir,
	.readdir = fs_readdir,
	.releasedir = fs_releasedir,
	.open = fs_open,
	.read = fs_read,
	.write = fs_write,
	.flush = fs_flush,
	.fsync = fs_fsync,
	.release = fs_release,
	.getxattr = fs_getxattr,
	.listxattr = fs_listxattr,
	.statfs = fs_statfs,
	.mkdir = fs_mkdir,
	.mknod = fs_mknod,
	.create = fs_create,
	.unlink = fs_unlink,
	.rmdir = fs_rmdir,
	.fsyncdir = fs_fsyncdir,
	.rename = fs_rename,
	.symlink = fs_symlink,
	.link = fs_link,
	.setattr = fs_setattr,
	.setxattr = fs_setxattr,
	.removexattr = fs_removexattr,
};

struct forget {
	struct fuse_session *se;
	struct tree *t;
};

static void inval_entry(void *arg, struct node *parent, const char *name)
{
	struct forget *f = arg;

	/* -ENOENT: the kernel did not have it; nothing to do */
	fuse_lowlevel_notify_inval_entry(f->se, node_ino(f->t, parent), name, strlen(name));
}

static void inval_inode(void *arg, struct node *n)
{
	struct forget *f = arg;

	fuse_lowlevel_notify_inval_inode(f->se, node_ino(f->t, n), 0, 0);
}

void fs_watch(struct fuse_session *se, struct tree *t)
{
	static struct forget f;

	f.se = se;
	f.t = t;
	tree_set_inval(t, inval_entry, inval_inode, &f);
}

void fs_forget_tags(struct fuse_session *se, struct tree *t)
{
	struct forget f = { se, t };

	tree_forget_tags(t, inval_entry, &f);
}

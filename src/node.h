/*
 * The node core: a node's name, parent, children, kind, the kernel's
 * lookup counts and lifetime, replacement, and the one lock order. It
 * knows nothing of what a kind holds (registries, drafts, images) and
 * calls no provider by name: each node carries its provider's operations
 * (struct node_ops), and its kind's struct starts with struct node
 * (tree-int.h for the registry's kinds, rootfs.c for an image's).
 *
 * Lock order (take them in this order, never the other way):
 *
 *   push->push_lock      one push at a time (push.c)
 *   load_lock            Protects: what one directory loads (an NS's tags, an artifact's
 *                        manifest, referrers); held across registry requests, so only
 *                        the requests for that one directory wait on it
 *   rootfs->load         one layer downloaded and indexed at a time (rootfs.c)
 *   rootfs->lock         Protects: one image's layer lookups and listings (rootfs.c)
 *   draft->save_lock     one draft.json written at a time (push.c)
 *   staged->flush_lock   one upload of a file at a time (push.c)
 *   site->lock           Protects: a registry's catalog (held across its fetch)
 *   nodes->lock          the tree lock (t->lock). Protects: every node's links (parent,
 *                        children, successor), lifetime counts (refs, nlookup, pins,
 *                        dead), the node lists, the epochs, and the fields marked
 *                        "protected by t->lock"; never held across I/O, a process
 *                        spawn or a directory scan
 *   layer->lock          Protects: a layer's decompressors, which spans of a published
 *                        index were checked, the TOC chunks kept, bad (layer.c); taken
 *                        under rootfs->lock and nodes->lock, never across I/O
 *   staged->lock         the hashing and upload fields of one staged file (push.c)
 *   blob->lock, then c->lock   the cache (cache.h)
 *
 * Lifetime (libfuse passthrough_ll's, with one more rule for what a
 * directory must keep): a node's refs counts the kernel's lookups (nlookup),
 * open handles, holds taken by code that keeps a pointer across requests, a
 * pin for state not yet elsewhere (made here, or a draft), the node it
 * replaced, and its children that are in use. A node whose refs falls to 0
 * is unused: if it can be made again (cached: a name looked up below a
 * namespace, an entry of an image) or is no longer in its parent (orphan),
 * it is buried with what is below it and freed once every request that was
 * running when it was buried has ended (two epochs, node_op_enter/leave). A
 * node that its parent built with its siblings from one manifest stays as
 * long as that parent does.
 *
 * Kinds never change. A node that takes on a new role (a file of the
 * registry opened for writing becomes a staged file; a directory made below
 * referrers/ becomes a referrer being attached) is replaced: the new node
 * takes its name and children, and the old one, out of the tree, sends what
 * still reaches it (the kernel's inode, a shell's cwd) on to the new one
 * (node_current) until the kernel forgets it.
 */
#ifndef OCIFS_NODE_H
#define OCIFS_NODE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

struct blob;
struct node;
struct tree;
struct tree_dirent;

enum node_kind {
	NODE_HOSTS, /* "-" root: one child per registry host looked up */
	NODE_NS, /* a registry's root ("" path), a namespace or a repository */
	NODE_ARTIFACT, /* a tag or digest directory */
	NODE_DIR, /* a fixed directory inside an artifact: title prefixes, .oci, ... */
	NODE_BLOB, /* a file whose bytes are a blob (or a manifest) of the registry */
	NODE_DATA, /* a file whose bytes are in memory */
	NODE_STAGED, /* a file written into the mount, its bytes in the staging area */
	NODE_REFERRERS, /* .oci/referrers/ of an artifact, loaded on use */
	NODE_STATUS, /* .ocifs/stats.json: made anew at each open */
	NODE_LINK, /* what symlink(2) into a repository answers: the tag it made */
	NODE_LSTORE, /* .layers/: the layer store, its key levels and layer directories */
	NODE_RDIR, /* a directory of an image's root filesystem */
	NODE_RFILE, /* a regular file of an image's root filesystem: bytes in a layer's tar */
	NODE_RLINK, /* a symbolic link of an image's root filesystem */
	NODE_RSPECIAL, /* a device node or FIFO of an image's root filesystem */
	NODE_KINDS
};

/* An open file, as its provider's open made it: one of its backings is set. */
struct node_file {
	struct node *node; /* what was opened: n, or what replaced it (a file written) */
	struct blob *blob; /* bytes in the cache */
	const char *data; /* bytes in memory (owned, or the node's) */
	char *owned;
	size_t len;
	int fd; /* a staged file, or -1 */
	bool image; /* read through the provider's read */
	bool writer; /* open for writing: the provider's release ends it */
	bool direct_io; /* made at open: its size is what reads find */
	bool keep_cache; /* the kernel may keep its pages */
};

/*
 * What a provider does for the nodes of a kind. NULL: the operation does not
 * apply (ENOTDIR, EISDIR, EINVAL, ENODATA; EROFS for writes on a read-only
 * kind). Every call runs inside a request (node_op_enter), with no lock held.
 */
struct node_ops {
	const char *name; /* the provider, for logs */
	/* Directories */
	int (*lookup)(struct tree *t, struct node *dir, const char *name, struct node **out);
	int (*list)(struct tree *t, struct node *dir, struct tree_dirent **ents, size_t *n);
	/* Every node */
	int (*getattr)(struct tree *t, struct node *n, struct stat *st);
	double (*timeout)(struct tree *t, struct node *n); /* the kernel's cache time */
	mode_t (*type)(const struct node *n); /* S_IFDIR, S_IFREG, ... */
	ssize_t (*getxattr)(
		struct tree *t, struct node *n, const char *name, char *buf, size_t size);
	ssize_t (*listxattr)(struct tree *t, struct node *n, char *buf, size_t size);
	/* Files */
	int (*open)(struct tree *t, struct node *n, int flags, struct node_file *f);
	ssize_t (*read)(struct tree *t, struct node_file *f, char *buf, size_t size, off_t off);
	/* a file open for writing (f->writer): its writes, each close(2), its last release */
	ssize_t (*write)(
		struct tree *t, struct node_file *f, const char *buf, size_t size, off_t off);
	int (*flush)(struct tree *t, struct node_file *f);
	void (*close)(struct tree *t, struct node_file *f);
	int (*readlink)(struct tree *t, struct node *n, const char **target);
	/* Writing */
	int (*mkdir)(struct tree *t, struct node *dir, const char *name, struct node **out);
	int (*create)(struct tree *t, struct node *dir, const char *name, bool excl,
		struct node **out, int *fd);
	int (*unlink)(struct tree *t, struct node *dir, const char *name);
	int (*rmdir)(struct tree *t, struct node *dir, const char *name);
	int (*rename)(struct tree *t, struct node *dir, const char *name, struct node *newdir,
		const char *newname, unsigned flags);
	int (*symlink)(struct tree *t, struct node *dir, const char *name, const char *target,
		struct node **out);
	int (*fsyncdir)(struct tree *t, struct node *dir);
	int (*truncate)(struct tree *t, struct node *n, off_t size);
	int (*setxattr)(
		struct tree *t, struct node *n, const char *name, const char *value, size_t len);
	int (*removexattr)(struct tree *t, struct node *n, const char *name);
	/* Free what the kind holds (the node is being freed). No lock held. */
	void (*release)(struct tree *t, struct node *n);
};

/*
 * The core's part of a node; each kind's struct starts with it (tree-int.h,
 * rootfs.c), and node_new() allocates that whole struct.
 */
struct node {
	struct node *all_next; /* nodes->all: every node not yet freed; protected by nodes->lock */
	struct node *all_prev;
	struct node
		*grave_next; /* a buried subtree's root: nodes->grave[]; protected by nodes->lock */
	struct node *parent; /* protected by nodes->lock; a node in use holds a ref on it */
	/* what took this node's place (node_replace): the requests on it go there */
	struct node *successor; /* written under nodes->lock, read atomically */
	char *name;
	const struct node_ops *ops; /* its provider's */
	enum node_kind kind; /* fixed at creation */
	uint64_t generation; /* with the node's address, unique for the mount's life */
	/* Lifetime; protected by nodes->lock. */
	unsigned refs; /* nlookup + handles + holds + pin + successor's + children in use */
	uint64_t nlookup; /* lookups the kernel has not forgotten */
	bool pin_soft, pin_hard; /* node_pin()'s */
	bool pinned; /* holds the pin's ref */
	bool cached; /* made by a lookup: made again on the next one once freed */
	bool remakes; /* a directory whose children are made by lookups (cached) */
	bool orphan; /* unlinked from its parent's children */
	bool detached; /* in an orphaned subtree: no pin applies but a hard one */
	bool dead; /* buried: freed after two epochs unless used again */
	bool hidden; /* not listed by its directory (.oci, .ocifs) */
	bool partial; /* children still to make when it lists (some were freed) */
	/* The parent id and name (a hash) its journal entry has: fs.c, under its entry lock. */
	uint64_t jparent;
	uint32_t jname;
	/* Directories. protected by nodes->lock */
	struct node **children;
	size_t n_children;
	size_t cap_children;
};

struct node_deferred;

/* The nodes of one mount: the core's state, inside the tree (t->nodes). */
struct nodes {
	/*
	 * The tree lock: every node's links and counts, the lists and epochs
	 * below, and what providers mark "protected by t->lock".
	 */
	pthread_mutex_t lock;
	void *owner; /* handed to deferred work (the tree) */
	struct node *all; /* protected by lock */
	uint64_t n_nodes; /* nodes not yet freed */
	uint64_t next_generation;
	unsigned epoch;
	unsigned ops[2]; /* requests running, by the parity of the epoch they entered in */
	struct node *grave[2]; /* subtrees buried in an epoch of that parity */
	struct node_deferred *deferred[2]; /* node_defer()'s work, by epoch parity */
	uint64_t freed_since_trim; /* nodes freed since memory was last handed back */
};

void nodes_init(struct nodes *ns, void *owner);

/*
 * A new node of size bytes (its kind's struct, zeroed past the core's part)
 * named name below parent, not yet among its children. NULL on ENOMEM.
 */
struct node *node_new(struct nodes *ns, struct node *parent, const char *name, enum node_kind kind,
	const struct node_ops *ops, size_t size);
/* The child called name, or NULL. Caller holds ns->lock (or owns dir privately). */
struct node *node_child_find(struct node *dir, const char *name);
/* Caller holds ns->lock (or owns dir privately). 0 or -ENOMEM. */
int node_child_add(struct node *dir, struct node *c);
/* The existing child of dir called fresh->name, or fresh once added (a losing fresh is freed). */
struct node *node_child_get_or_add(struct nodes *ns, struct node *dir, struct node *fresh);
/*
 * Unlink c from dir's children: it stays valid while in use (and may be
 * added again, as a rename does), and is freed once unused. Same locking.
 */
void node_child_remove(struct node *dir, struct node *c);
/*
 * Remove c from dir for good (a deletion): no pin keeps it or what is below
 * it any more, and it is freed once the kernel and handles let go of it.
 * Caller holds ns->lock.
 */
void node_delete(struct nodes *ns, struct node *dir, struct node *c);
/*
 * c, dropped from its parent's children by the caller (a reload replacing
 * them), is out of the tree for good, as node_delete() has it. Caller holds ns->lock.
 */
void node_orphan(struct nodes *ns, struct node *c);
/* Move c from its parent's children to newdir's, carrying its ref. Caller holds ns->lock. */
int node_move(struct nodes *ns, struct node *c, struct node *newdir);
/*
 * fresh (new, of another kind) takes old's place in its directory, with
 * old's children: a node's kind never changes, a directory or file that
 * takes on a new role is replaced. old stays valid while in use, and
 * whatever still reaches it (the kernel's inode, open handles) is sent on to
 * fresh (node_current). Caller holds ns->lock.
 */
void node_replace(struct nodes *ns, struct node *old, struct node *fresh);
/* What n stands for now: n, or what replaced it. Inside a request; no lock needed. */
struct node *node_current(struct node *n);
/*
 * Take or drop a hold on n for a pointer kept beyond the current request
 * (the pusher's pick). Caller holds ns->lock. A drop may bury n; it is
 * freed only after the current request ends.
 */
void node_hold(struct nodes *ns, struct node *n);
void node_drop(struct nodes *ns, struct node *n);
/*
 * Pin n, or let it go, as its provider says: a node holding state that is
 * not yet elsewhere (unpushed) stays while pinned. hard: even once out of
 * the tree (a draft on the pusher's list). Caller holds ns->lock.
 */
void node_pin(struct nodes *ns, struct node *n, bool soft, bool hard);
/* Free n, made here and never linked nor seen elsewhere, with what is below it. No lock held. */
void node_discard(struct nodes *ns, struct node *n);
/* Free every node (unmount). */
void node_free_all(struct nodes *ns);

/*
 * n handed to the kernel as an entry (lookup, mkdir, create, symlink): one
 * more lookup. 1 when it is the kernel's first of n, else 0.
 */
int node_entry_given(struct nodes *ns, struct node *n);
/*
 * n, which a lookup found in its directory, handed to the kernel as that
 * entry: one more lookup, as node_entry_given() (1: the first, else 0); or -ESTALE, nothing
 * counted, when n has left the tree since (buried once unused, or dropped by
 * a reload): the caller looks the name up again. Handed out anyway, n would
 * come back as an orphan, and what is made below it would be lost to every
 * later lookup, which finds the node that took its name.
 */
int node_entry_found(struct nodes *ns, struct node *n);
/*
 * The kernel forgot nlookup lookups of n (forget, forget_multi). n may be
 * freed. true when the kernel holds n no more (it had some).
 */
bool node_forget(struct nodes *ns, struct node *n, uint64_t nlookup);
/* An open handle on n, and its release: n stays while a handle is open. */
void node_handle_open(struct nodes *ns, struct node *n);
void node_handle_close(struct nodes *ns, struct node *n);
/* The generation of n's inode number (its address): different each time an address is reused. */
uint64_t node_generation(const struct node *n);

/*
 * Requests: every piece of work that uses node pointers found in the tree
 * runs between an enter and a leave, so that nothing it found is freed
 * under it; enter returns the token leave takes. _locked: caller holds ns->lock.
 */
unsigned node_op_enter(struct nodes *ns);
unsigned node_op_enter_locked(struct nodes *ns);
void node_op_leave(struct nodes *ns, unsigned token);
/*
 * Run fn(ns->owner, arg) once every request running now has ended: for what
 * a request that raced the caller may still use (a file handle released
 * while a read of it, abandoned by its reader, is still being answered).
 */
void node_defer(struct nodes *ns, void (*fn)(void *owner, void *arg), void *arg);

#endif

/*
 * The node core: a node's name, parent, children, kind, the kernel's
 * lookup counts and lifetime, and the one lock order. It knows nothing of
 * what a kind holds (registries, drafts, images): the providers do
 * (tree-int.h).
 *
 * Lock order (take them in this order, never the other way):
 *
 *   push->push_lock      one push at a time (push.c)
 *   node->load_lock      Protects: what a directory loads (NS tags, an artifact's manifest,
 *                        referrers, a rootfs's making); held across registry requests, so
 *                        only the requests for that one directory wait on it
 *   rootfs->lock         Protects: one image's layer lookups and listings (rootfs.c)
 *   draft->save_lock     one draft.json written at a time (push.c)
 *   staged->flush_lock   one upload of a file at a time (push.c)
 *   site->lock           Protects: a registry's catalog (held across its fetch)
 *   t->lock              Protects: every node's links (parent, children), lifetime
 *                        counts (refs, nlookup, kept, dead), the node lists, the
 *                        epochs, and the fields marked "protected by t->lock"; never
 *                        held across I/O, a process spawn or a directory scan
 *   staged->lock         the hashing and upload fields of one staged file (push.c)
 *   blob->lock, then c->lock   the cache (cache.h)
 *
 * Lifetime (libfuse passthrough_ll's, with one more rule for what a
 * directory must keep): a node's refs counts the kernel's lookups (nlookup),
 * open handles, holds taken by code that keeps a pointer across requests, a
 * pin for unpushed state (local or a draft), and its children that are in
 * use. A node whose refs falls to 0 is unused: if it can be made again
 * (cached: a name looked up below a namespace, an entry of an image) or is
 * no longer in its parent (orphan), it is buried with what is below it and
 * freed once every request that was running when it was buried has ended
 * (two epochs, node_op_enter/leave). A node that its parent built with its
 * siblings from one manifest stays as long as that parent does.
 */
#ifndef OCIFS_NODE_H
#define OCIFS_NODE_H

#include <stdbool.h>
#include <stdint.h>

struct node;
struct tree;

enum node_kind {
	NODE_HOSTS, /* "-" root: one child per registry host looked up */
	NODE_NS, /* a registry's root ("" path), a namespace or a repository */
	NODE_ARTIFACT, /* a tag or digest directory */
	NODE_DIR, /* a fixed directory inside an artifact: title prefixes, .oci, ... */
	NODE_BLOB, /* a file whose bytes are a blob (or a manifest) of the registry */
	NODE_DATA, /* a file whose bytes are in memory */
	NODE_STAGED, /* a file written into the mount, its bytes in the staging area (push.c) */
	NODE_REFERRERS, /* .oci/referrers/ of an artifact (repo, ref: its digest), loaded on use */
	NODE_RFILE, /* a regular file of an image's root filesystem: bytes in a layer's tar */
	NODE_RLINK, /* a symbolic link of an image's root filesystem (target in data) */
	NODE_RSPECIAL, /* a device node or FIFO of an image's root filesystem */
	NODE_STATUS, /* .ocifs/stats.json: made anew at each open */
};

/* A new node named name below parent (not yet among its children). NULL on ENOMEM. */
struct node *node_new(struct tree *t, struct node *parent, const char *name, enum node_kind kind);
/* The child called name, or NULL. Caller holds t->lock (or owns dir privately). */
struct node *node_child_find(struct node *dir, const char *name);
/* Caller holds t->lock (or owns dir privately). 0 or -ENOMEM. */
int node_child_add(struct node *dir, struct node *c);
/* The existing child of dir called fresh->name, or fresh once added (a losing fresh is freed). */
struct node *node_child_get_or_add(struct tree *t, struct node *dir, struct node *fresh);
/*
 * Unlink c from dir's children: it stays valid while in use (and may be
 * added again, as a rename does), and is freed once unused. Same locking.
 */
void node_child_remove(struct node *dir, struct node *c);
/*
 * Remove c from dir for good (a deletion): no pin keeps it or what is below
 * it any more, and it is freed once the kernel and handles let go of it.
 * Caller holds t->lock.
 */
void node_delete(struct tree *t, struct node *dir, struct node *c);
/*
 * c, dropped from its parent's children by the caller (a reload replacing
 * them), is out of the tree for good, as node_delete() has it. Caller holds t->lock.
 */
void node_orphan(struct tree *t, struct node *c);
/* Move c from its parent's children to newdir's, carrying its ref. Caller holds t->lock. */
int node_move(struct tree *t, struct node *c, struct node *newdir);
/*
 * Take or drop a hold on n for a pointer kept beyond the current request
 * (the pusher's pick). Caller holds t->lock. A drop may bury n; it is
 * freed only after the current request ends.
 */
void node_hold(struct tree *t, struct node *n);
void node_drop(struct tree *t, struct node *n);
/*
 * Call after changing n->local or n->draft: n is pinned while it holds
 * unpushed state. Caller holds t->lock.
 */
void node_keep(struct tree *t, struct node *n);
/* Free n, made here and never linked nor seen elsewhere, with what is below it. No lock held. */
void node_discard(struct tree *t, struct node *n);
/* Free every node (unmount). */
void node_free_all(struct tree *t);

/* n handed to the kernel as an entry (lookup, mkdir, create, symlink): one more lookup. */
void node_entry_given(struct tree *t, struct node *n);
/* The kernel forgot nlookup lookups of n (forget, forget_multi). n may be freed. */
void node_forget(struct tree *t, struct node *n, uint64_t nlookup);
/* An open handle on n, and its release: n stays while a handle is open. */
void node_handle_open(struct tree *t, struct node *n);
void node_handle_close(struct tree *t, struct node *n);
/* The generation of n's inode number (its address): different each time an address is reused. */
uint64_t node_generation(const struct node *n);

/*
 * Requests: every piece of work that uses node pointers found in the tree
 * runs between an enter and a leave, so that nothing it found is freed
 * under it; enter returns the token leave takes. _locked: caller holds t->lock.
 */
unsigned node_op_enter(struct tree *t);
unsigned node_op_enter_locked(struct tree *t);
void node_op_leave(struct tree *t, unsigned token);
/*
 * Run fn(t, arg) once every request running now has ended: for what a
 * request that raced the caller may still use (a file handle released while
 * a read of it, abandoned by its reader, is still being answered).
 */
void node_defer(struct tree *t, void (*fn)(struct tree *t, void *arg), void *arg);

#endif

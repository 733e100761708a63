/*
 * The tree's insides, shared by the node core (node.c) and the providers:
 * tree.c (registries, repositories, artifacts, referrers), rootfs.c
 * (images) and push.c with draft.c, staged.c, pusher.c (writing); nothing
 * else includes it. node.h has the lock order and the lifetime rules.

 */
#ifndef OCIFS_TREE_INT_H
#define OCIFS_TREE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "node.h"
#include "registry.h"
#include "tree.h"

struct draft;
struct push;
struct staged;

/* One registry host and what is cached about it. */
struct site {
	struct site *next;
	struct registry *reg;
	bool docker_hub; /* one-component names get "library/" */
	pthread_mutex_t lock; /* serialises catalog fetches */
	struct strlist catalog; /* protected by lock */
	time_t catalog_at; /* atomic (SIGHUP clears it without lock); 0: never fetched */
	int catalog_err; /* protected by lock */
};

struct xattr {
	char *name;
	char *value; /* NUL-terminated; len bytes of it when len is not 0 (binary values) */
	size_t len;
};

struct node {
	struct node *all_next; /* t->all: every node not yet freed; protected by t->lock */
	struct node *all_prev;
	struct node *grave_next; /* a buried subtree's root: t->grave[]; protected by t->lock */
	struct node *parent; /* protected by t->lock; a node in use holds a ref on it */
	char *name;
	enum node_kind kind;
	uint64_t generation; /* with the node's address, unique for the mount's life */
	/* Lifetime; protected by t->lock. */
	unsigned refs; /* nlookup + handles + holds + pin + children in use */
	uint64_t nlookup; /* lookups the kernel has not forgotten */
	bool kept; /* holds the pin for unpushed state (local, draft) */
	bool cached; /* made by a lookup: made again on the next one once freed */
	bool orphan; /* unlinked from its parent's children */
	bool detached; /* in an orphaned subtree: no pin applies */
	bool dead; /* buried: freed after two epochs unless used again */
	bool hidden; /* not listed (.oci) */
	bool immutable; /* inside a digest-addressed artifact */
	struct site *site;
	char *repo; /* NS: path inside the registry ("" at its root); else the repository */

	/* Directories. protected by t->lock */
	struct node **children;
	size_t n_children;
	size_t cap_children;

	/* Loading (NS listings, ARTIFACT manifests) happens under load_lock, never t->lock. */
	pthread_mutex_t load_lock;

	/* NS: tags of repo. protected by load_lock */
	struct strlist tags;
	time_t tags_at; /* atomic: SIGHUP and pushes clear it without load_lock */
	int tags_err;

	/* ARTIFACT */
	char *ref; /* the tag or digest looked up */
	bool by_digest; /* ref is a digest */
	bool loaded; /* protected by t->lock */
	bool offline_logged;
	time_t resolved_at; /* protected by t->lock */

	/* ARTIFACT (manifest digest), BLOB (blob digest). protected by t->lock for ARTIFACT */
	char *digest;
	time_t mtime; /* protected by t->lock */

	/* BLOB and DATA */
	int64_t size;
	bool is_manifest; /* BLOB fetched through the manifests endpoint */
	char *data;
	size_t data_len;

	struct xattr *xattrs; /* protected by t->lock */
	size_t n_xattrs;

	/* Writing (push.c). protected by t->lock */
	bool local; /* made by mkdir or create here: not (yet) in the registry */
	bool new_repo; /* NS made by mkdir: a repository to be, where mkdir makes tags */
	bool guessed; /* NS shown without a catalog to say it exists: mkdir may make it */
	struct draft *draft; /* ARTIFACT: changes staged and not yet pushed, or NULL */
	struct staged *staged; /* STAGED: its file */

	/* Root filesystems of images (rootfs.c). protected by t->lock */
	struct rootfs *rootfs; /* what the directory shows, once looked into; shared below it;
	                          every node of a root filesystem holds a ref on it */
	bool partial; /* children still to make when it lists (some were freed, or a rootfs dir) */
	char *rootfs_digest; /* ARTIFACT: the image manifest whose layers make it, or NULL;
	                        DIR: the packed layer it shows (see rootfs_lookup) */
	bool has_mode; /* mode, owner, rdev from a tar header (rootfs nodes) */
	mode_t mode; /* type bits and permissions */
	uid_t uid;
	gid_t gid;
	dev_t rdev;
	struct layer *layer; /* RFILE: the layer holding its bytes (owned by the tree) */
	int64_t data_off; /* RFILE: where in that layer's tar */
	unsigned layer_no; /* the layer (from 1, lowest first) that made it */
	/* DIR of a rootfs (data): its path below what the rootfs shows */
};

struct tree {
	struct tree_options opts;
	struct http *http;
	struct cache *cache;
	struct node *root;
	time_t start;
	pthread_mutex_t lock;
	struct node *all; /* protected by lock */
	struct site *sites; /* protected by lock */
	struct push *push; /* push.c's state */
	struct layer **layers; /* layers in use, shared across images; protected by lock */
	unsigned *layer_refs; /* how many rootfs layer slots use each; protected by lock */
	size_t n_layers;
	struct node *status; /* .ocifs/ at the root: looked up, never listed */
	/* what a node's kind holds, freed with it (the core calls no provider by name) */
	void (*node_release)(struct tree *t, struct node *n);
	/* Lifetime; protected by lock. */
	uint64_t n_nodes; /* nodes not yet freed */
	uint64_t next_generation;
	unsigned epoch;
	unsigned ops[2]; /* requests running, by the parity of the epoch they entered in */
	struct node *grave[2]; /* subtrees buried in an epoch of that parity */
	struct node_deferred *deferred[2]; /* node_defer()'s work, by epoch parity */
	uint64_t freed_since_trim; /* nodes freed since memory was last handed back */
	uint64_t served; /* bytes read() returned (atomic) */
};

/* The site of host (canonical or not), made on first use. 0 or -errno. */
int tree_site_get(struct tree *t, const char *host, struct site **out);
void tree_xattrs_free(struct xattr *x, size_t n);
int tree_xattr_add(struct xattr **x, size_t *n, const char *name, const char *value);
struct node *tree_ns_new(
	struct tree *t, struct node *parent, const char *name, struct site *site, const char *path);
struct node *tree_artifact_new(struct tree *t, struct node *parent, const char *name,
	struct site *site, const char *repo, const char *ref);
/* The tags of an NS node's repository, within list_ttl. Caller holds ns->load_lock. */
int tree_ns_tags(struct tree *t, struct node *ns);
/* "path/name" (or "name" at the root), malloc'd, or NULL. */
char *tree_join_path(const char *path, const char *name);
bool tree_strlist_has(const struct strlist *l, const char *s);
/*
 * Show the manifest body (hashing to digest) in art, replacing its children.
 * Caller holds art->load_lock. 0 or -errno.
 */
int tree_artifact_install(
	struct tree *t, struct node *art, const char *digest, const char *body, size_t len);

/*
 * rootfs.c: whether dir shows a root filesystem (an image's artifact
 * directory, a directory of one, or a directory oras packed).
 */
bool rootfs_is(const struct node *dir);
/*
 * rootfs.c: the child name of dir (rootfs_is()), looked up in its layers
 * newest first, indexing a layer only when the lookup gets down to it. 0,
 * -ENOENT, -EIO when a layer cannot be read or a packed directory is
 * refused, or -errno.
 */
int rootfs_lookup(struct tree *t, struct node *dir, const char *name, struct node **out);
/* rootfs.c: every child of dir (rootfs_is()) made, from every layer that shows it. 0 or -errno. */
int rootfs_list(struct tree *t, struct node *dir);
/*
 * rootfs.c: a node stops using rf (its n->rootfs); the last one frees it
 * and lets go of its layers. Caller holds no lock.
 */
void rootfs_unref(struct tree *t, struct rootfs *rf);
/* rootfs.c: free the layers the tree still has open. */
void rootfs_release(struct tree *t);

#endif

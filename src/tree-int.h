/*
 * The tree's insides, shared by the node core (node.c) and the providers:
 * tree.c (registries, repositories, artifacts, referrers), rootfs.c
 * (images) and push.c with draft.c, staged.c, pusher.c (writing); nothing
 * else includes it. node.h has the lock order and the lifetime rules.

 */
#ifndef OCIFS_TREE_INT_H
#define OCIFS_TREE_INT_H

#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <sys/stat.h>

#include "node.h"
#include "registry.h"
#include "tree.h"

struct draft;
struct push;
struct staged;

/* A tag's last resolution, kept by its site once the tag's node is gone (tree.c). */
struct tag_seen {
	struct tag_seen *next;
	char *digest;
	char key[]; /* "repo:tag" */
};

#define TAG_SEEN_BUCKETS 256

/* One registry host and what is cached about it. */
struct site {
	struct site *next;
	struct registry *reg;
	bool docker_hub; /* one-component names get "library/" */
	pthread_mutex_t lock; /* serialises catalog fetches */
	struct strlist catalog; /* protected by lock */
	time_t catalog_at; /* atomic (SIGHUP clears it without lock); 0: never fetched */
	int catalog_err; /* protected by lock */
	pthread_mutex_t seen_lock; /* protects seen */
	struct tag_seen *seen[TAG_SEEN_BUCKETS]; /* what each tag read here resolved to last */
};

struct xattr {
	char *name;
	char *value; /* NUL-terminated; len bytes of it when len is not 0 (binary values) */
	size_t len;
};

/* Kernel cache time for what a digest pins down (an image's entries too): it never changes. */
#define IMMUTABLE_TIMEOUT 86400.0

/*
 * Each kind's struct starts with the core's struct node (node.h); the
 * accessors below give a node as its kind's struct, and check the kind.
 */

/* What every node outside a root filesystem has: where it is in a registry. */
struct reg_node {
	struct node n;
	struct site *site;
	char *repo; /* NS: path inside the registry ("" at its root); else the repository */
	time_t mtime; /* protected by t->lock */
	struct xattr *xattrs; /* protected by t->lock */
	size_t n_xattrs;
	bool local; /* made by mkdir or create here: not (yet) in the registry; t->lock */
	bool immutable; /* inside a digest-addressed artifact */
};

/* NODE_HOSTS, NODE_NS: the namespaces provider (tree.c). */
struct ns_node {
	struct reg_node r;
	/* Listings happen under load_lock, never t->lock. */
	pthread_mutex_t load_lock;
	struct strlist tags; /* of repo; protected by load_lock */
	time_t tags_at; /* atomic: SIGHUP and pushes clear it without load_lock */
	int tags_err;
	bool new_repo; /* made by mkdir: a repository to be, where mkdir makes tags; t->lock */
	bool guessed; /* shown without a catalog to say it exists: mkdir may make it */
};

/* NODE_ARTIFACT, NODE_REFERRERS: the artifacts and referrers providers (tree.c). */
struct art_node {
	struct reg_node r;
	/* Loading (the manifest, the referrers) happens under load_lock, never t->lock. */
	pthread_mutex_t load_lock;
	char *ref; /* the tag or digest looked up; REFERRERS: the subject's digest */
	char *digest; /* the manifest's; protected by t->lock */
	bool by_digest; /* ref is a digest */
	bool loaded; /* protected by t->lock */
	bool offline_logged;
	time_t resolved_at; /* protected by t->lock */
	struct draft *draft; /* changes staged and not yet pushed, or NULL; t->lock (push.c) */
	/* the image manifest whose layers make its root filesystem, or NULL */
	char *rootfs_digest;
	bool model; /* a model artifact (model.h): its files are its tools' to change; t->lock */
	bool rootfs_model; /* rootfs_digest is a model's: its tar layers unpacked (model.h) */
	/*
	 * A model's: where each of its layers' archives is unpacked
	 * (model_place.prefix; NULL: the root), one per layer of
	 * rootfs_digest's manifest; NULL when all at the root. t->lock,
	 * read with rootfs_digest in the same section (rootfs.c)
	 */
	char **rootfs_prefixes;
	size_t n_rootfs_prefixes;
	struct rootfs *rootfs; /* once looked into; t->lock (rootfs.c) */
};

/* NODE_DIR: a directory inside an artifact (title prefixes, .oci, ...). */
struct dir_node {
	struct reg_node r;
	/* a directory oras packed (shown as the tar's root filesystem), or all NULL */
	char *packed_digest; /* the layer */
	char *packed_type; /* its media type */
	int64_t packed_size;
	char *packed_path; /* what of the tar it shows ("" its root) */
	struct rootfs *rootfs; /* once looked into; t->lock (rootfs.c) */
};

/* NODE_BLOB, NODE_DATA, NODE_STAGED, NODE_STATUS, NODE_LINK: the files of an artifact. */
struct file_node {
	struct reg_node r;
	char *digest; /* BLOB */
	int64_t size; /* BLOB, STAGED; protected by t->lock for STAGED */
	bool is_manifest; /* BLOB fetched through the manifests endpoint */
	mode_t mode; /* BLOB: permission bits a model's file metadata gives (model.h); 0: none */
	char *data; /* DATA; BLOB's manifest once fetched (t->lock); LINK's target */
	size_t data_len;
	struct staged *staged; /* STAGED: its file (push.c) */
};

/* NODE_LSTORE: the layer store provider (layerstore.c). */
struct lstore_node {
	struct reg_node r;
	char *key; /* a key's directory: the base64 of an image reference; else NULL */
	bool layer; /* a layer's directory (r.repo, r.site: where the layer is) */
	unsigned uses; /* the engine's users of a layer's directory; t->lock */
};

static inline struct reg_node *reg_of(const struct node *n)
{
	assert(n->kind < NODE_RDIR);
	return (struct reg_node *)(uintptr_t)n;
}

static inline struct ns_node *ns_of(const struct node *n)
{
	assert(n->kind == NODE_NS || n->kind == NODE_HOSTS);
	return (struct ns_node *)(uintptr_t)n;
}

static inline struct art_node *art_of_node(const struct node *n)
{
	assert(n->kind == NODE_ARTIFACT || n->kind == NODE_REFERRERS);
	return (struct art_node *)(uintptr_t)n;
}

static inline struct dir_node *dir_of(const struct node *n)
{
	assert(n->kind == NODE_DIR);
	return (struct dir_node *)(uintptr_t)n;
}

static inline struct file_node *file_of(const struct node *n)
{
	assert(n->kind == NODE_BLOB || n->kind == NODE_DATA || n->kind == NODE_STAGED ||
		n->kind == NODE_STATUS || n->kind == NODE_LINK);
	return (struct file_node *)(uintptr_t)n;
}

/* n's draft: changes staged in an artifact directory and not yet pushed, or NULL. */
static inline struct draft *node_draft(const struct node *n)
{
	return n->kind == NODE_ARTIFACT ? ((struct art_node *)(uintptr_t)n)->draft : NULL;
}

/* The load lock of an NS, ARTIFACT or REFERRERS node. */
static inline pthread_mutex_t *load_lock_of(const struct node *n)
{
	return n->kind == NODE_NS || n->kind == NODE_HOSTS ? &ns_of(n)->load_lock
							   : &art_of_node(n)->load_lock;
}

struct tree {
	struct nodes nodes; /* the core's; nodes.lock is the tree lock (t->lock below) */
	struct tree_options opts;
	struct http *http;
	struct cache *cache;
	struct node *root;
	time_t start;
	struct site *sites; /* protected by t->lock */
	struct push *push; /* push.c's state */
	struct layer **layers; /* layers in use, shared across images; protected by lock */
	unsigned *layer_refs; /* how many rootfs layer slots use each; protected by lock */
	size_t n_layers;
	struct strlist refused_indexes; /* published indexes found bad: not used again; lock */
	/* how the kernel is told to forget an entry or an inode's attributes (fs.c); set once */
	void (*inval_entry)(void *arg, struct node *parent, const char *name);
	void (*inval_inode)(void *arg, struct node *n);
	void *inval_arg;
	struct node *status; /* .ocifs/ at the root: looked up, never listed */
	struct node *layerstore; /* .layers/ at a registry's root, or NULL; likewise */
	uint64_t served; /* bytes read() returned (atomic) */
	uint64_t read_requests; /* the reads that returned them (atomic) */
	/* FUSE passthrough (fs.c): on for this connection (atomic), files opened in it (atomic) */
	bool passthrough;
	uint64_t passthrough_opens;
};

/*
 * A new node of kind (not rootfs.c's) below parent, with its kind's struct
 * and operations; site and immutable as parent's. NULL on ENOMEM.
 */
struct node *tree_node_new(
	struct tree *t, struct node *parent, const char *name, enum node_kind kind);
/* Bytes of a manifest by digest: from the cache, else the registry (then cached). 0 or -errno. */
int tree_manifest_get(struct tree *t, struct site *s, const char *repo, const char *digest,
	char **body, size_t *len);
/* layerstore.c: .layers/ (t->layerstore) where the root is a registry or "-". 0 or -ENOMEM. */
int layerstore_root(struct tree *t);
extern const struct node_ops layerstore_ops;

/* Free what a node of tree.c's kinds holds (its strings, xattrs, image). */
void tree_node_release(struct tree *t, struct node *n);

/* tree.c's operations (ops.c puts them in the tables). */
int tree_hosts_lookup(struct tree *t, struct node *dir, const char *name, struct node **out);
int tree_ns_lookup(struct tree *t, struct node *dir, const char *name, struct node **out);
/* ARTIFACT, DIR: loaded first; an image's shown through rootfs.c */
int tree_artifact_lookup(struct tree *t, struct node *dir, const char *name, struct node **out);
/* REFERRERS: the registry's referrers of the subject, loaded first */
int tree_referrers_lookup(struct tree *t, struct node *dir, const char *name, struct node **out);
int tree_referrers_list(struct tree *t, struct node *dir, struct tree_dirent **ents, size_t *count);
int tree_ns_list(struct tree *t, struct node *dir, struct tree_dirent **ents, size_t *count);
int tree_artifact_list(struct tree *t, struct node *dir, struct tree_dirent **ents, size_t *count);
/* dir's children as they are (not hidden ones) */
int tree_children_list(struct tree *t, struct node *dir, struct tree_dirent **ents, size_t *count);
int tree_reg_getattr(struct tree *t, struct node *n, struct stat *st);
double tree_reg_timeout(struct tree *t, struct node *n);
mode_t tree_reg_type(const struct node *n);
ssize_t tree_reg_getxattr(struct tree *t, struct node *n, const char *name, char *buf, size_t size);
ssize_t tree_reg_listxattr(struct tree *t, struct node *n, char *buf, size_t size);
/* BLOB, DATA opened for reading */
int tree_file_open(struct tree *t, struct node *n, int flags, struct node_file *f);
int tree_link_readlink(struct tree *t, struct node *n, const char **target);
/* getxattr and listxattr of a list of xattrs (extra: one more name listed) */
ssize_t tree_xattr_get(const struct xattr *x, size_t nx, const char *name, char *buf, size_t size);
ssize_t tree_xattr_list(
	const struct xattr *x, size_t nx, const char *extra, char *buf, size_t size);

static inline bool node_is_dir(const struct node *n)
{
	return n->ops->type(n) == S_IFDIR;
}

/* The state that must not be lost pins n: a draft, or made here and not yet pushed. */
static inline void tree_pin(struct tree *t, struct node *n)
{
	bool hard = node_draft(n) != NULL;
	bool soft = n->kind < NODE_RDIR && ((struct reg_node *)n)->local;

	node_pin(&t->nodes, n, soft, hard);
}

/* The site of host (canonical or not), made on first use. 0 or -errno. */
int tree_site_get(struct tree *t, const char *host, struct site **out);
void tree_xattrs_free(struct xattr *x, size_t n);
int tree_xattr_add(struct xattr **x, size_t *n, const char *name, const char *value);
/* Append copies of from's n xattrs to *to. 0 or -ENOMEM. */
int tree_xattrs_copy(const struct xattr *from, size_t n, struct xattr **to, size_t *nto);
struct node *tree_ns_new(
	struct tree *t, struct node *parent, const char *name, struct site *site, const char *path);
struct node *tree_artifact_new(struct tree *t, struct node *parent, const char *name,
	struct site *site, const char *repo, const char *ref);
/* The tags of an NS node's repository, within list_ttl. Caller holds ns->load_lock. */
int tree_ns_tags(struct tree *t, struct node *ns);
/* Tag repo:tag no longer resolves (deleted): no last resolution to show. */
void tree_tag_forget(struct site *s, const char *repo, const char *tag);
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
 * rootfs.c: whether dir (ARTIFACT, DIR) shows a root filesystem: an
 * image's artifact directory, or a directory oras packed. Directories
 * inside one are rootfs.c's own nodes.
 */
bool rootfs_is(const struct node *dir);
/* rootfs.c: the mode, owners and mtime of dir (rootfs_is()) as its image's tar has them, once known. */
void rootfs_root_stat(struct tree *t, struct node *dir, struct stat *st);
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
/*
 * rootfs.c: a directory called name below parent showing the own tree of
 * layer (digest, media_type, size) of repo on site, as overlayfs takes a
 * lower directory: whiteouts as character devices 0/0, opaque directories
 * with the xattrs trusted.overlay.opaque and user.overlay.opaque "y". The
 * layer is one of the image manifest subject (subject_size bytes of type
 * subject_type): its published index is used where there is one. Not added
 * to parent. 0 or -ENOMEM.
 */
struct layer_desc {
	const char *digest;
	const char *media_type;
	int64_t size;
	const char *toc_digest; /* its own table of contents', or NULL (toc_digest_of()) */
	bool toc_compressed;
};
int rootfs_layer_dir(struct tree *t, struct node *parent, const char *name, struct site *site,
	const char *repo, const struct layer_desc *layer, const char *subject,
	const char *subject_type, int64_t subject_size, struct node **out);

/*
 * Tell the kernel that the entry name of parent, or the attributes of n,
 * are no longer what it was given (nothing when no kernel listens). No lock
 * held: the kernel may ask again at once.
 */
void tree_inval_entry(struct tree *t, struct node *parent, const char *name);
void tree_inval_inode(struct tree *t, struct node *n);

#endif

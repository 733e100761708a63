/*
 * The directory model of DESIGN.md section 2: inodes for registries,
 * repositories, tags, digests and the files of an artifact, built lazily from
 * registry answers. FUSE-agnostic: fs.c translates.
 *
 * Nodes are counted as libfuse's passthrough_ll counts inodes: each entry
 * handed to the kernel is a lookup, which forget gives back; a node the
 * kernel has forgotten and nothing else holds is freed (tree-int.h says
 * when). An inode number is the node's address, with a generation that
 * differs each time an address is reused.
 */
#ifndef OCIFS_TREE_H
#define OCIFS_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "manifest.h"
#include "ref.h"

struct blob;
struct cache;
struct http;
struct node;
struct node_ops;
struct tree;
struct sign_key;
struct sign_keys;

struct tree_options {
	bool read_only;
	uid_t uid;
	gid_t gid;
	struct platform platform; /* borrowed */
	unsigned tag_ttl; /* seconds a tag's resolution is trusted */
	unsigned list_ttl; /* seconds a listing is trusted */
	unsigned page_size; /* n= of list requests */
	bool plain_http;
	const char *auth_file; /* borrowed */
	unsigned retry_secs;
	unsigned retry_delay_ms; /* the first back-off of a failing request; 0: 100 */
	double negative_timeout; /* seconds the kernel keeps a name's absence */
	/* Mirror URLs (NULL-terminated, borrowed, or NULL) for pulls from mirror_host. */
	const char *const *mirrors;
	const char *mirror_host;
	unsigned push_delay; /* seconds a tag directory rests before its push */
	bool show_referrer_tags; /* list sha256-<hex> fallback referrers tags */
	const char *artifact_type; /* of new tags; NULL: application/vnd.unknown.artifact.v1 */
	bool publish_index; /* push each layer indexed here as a referrer of its image */
	/* the keys a published index must be signed by to be used (borrowed); NULL: none used */
	const struct sign_keys *index_trust;
	const struct sign_key *index_sign_key; /* signs what publish_index pushes, or NULL */
	/* each kind's operations, as the providers give them (ops.h: node_kind_ops) */
	const struct node_ops *const *kind_ops;
};

/*
 * A tree whose root is what source names (see ref_parse_source). Nothing is
 * fetched yet. http and cache are borrowed and must outlive the tree. 0 or -errno.
 */
int tree_new(const struct ref *source, const struct tree_options *o, struct http *http,
	struct cache *cache, struct tree **out);
void tree_free(struct tree *t);

/*
 * Check, before mounting, that the root can be shown: the registry answers,
 * and an artifact SOURCE exists and parses. 0, or -errno after a log line.
 */
int tree_check_root(struct tree *t);

/*
 * How the kernel is told that an entry (parent, name) or a node's
 * attributes changed under it: set once, before the mount answers, by the
 * FUSE side. arg is borrowed.
 */
void tree_set_inval(struct tree *t, void (*entry)(void *arg, struct node *parent, const char *name),
	void (*inode)(void *arg, struct node *n), void *arg);

/*
 * The root. Every other node is reached through its directory's provider
 * (n->ops, node.h): what fs.c calls besides what is here.
 */
struct node *tree_root(struct tree *t);

/*
 * The child called name of dir, looked up (and fetched) as needed: 0 or
 * -errno. Call between node_op_enter() and node_op_leave(): *out stays
 * valid until then; node_entry_given() (node.h) counts it as the kernel's.
 */
int tree_lookup(struct tree *t, struct node *dir, const char *name, struct node **out);

/* Attributes of n. 0 or -errno (a tag that can no longer be resolved, ...). */
int tree_getattr(struct tree *t, struct node *n, struct stat *st);

/* Seconds the kernel may cache n's entry and attributes. */
double tree_timeout(struct tree *t, struct node *n);
/* Seconds the kernel may keep a name's absence (-o negative_timeout=). */
double tree_negative_timeout(const struct tree *t);

struct tree_dirent {
	char *name;
	uint64_t ino; /* the node's inode number when listed (informational: it may go) */
	mode_t type; /* S_IFDIR, S_IFREG */
};

/* A snapshot of dir's listing; free with tree_dirents_free(). 0 or -errno. */
int tree_list(struct tree *t, struct node *dir, struct tree_dirent **ents, size_t *n);
void tree_dirents_free(struct tree_dirent *ents, size_t n);

/*
 * Extended attributes. tree_getxattr copies the value into buf (size 0: only
 * the length) and returns its length, -ENODATA, or -ERANGE. tree_listxattr
 * writes the NUL-separated names likewise.
 */
ssize_t tree_getxattr(struct tree *t, struct node *n, const char *name, char *buf, size_t size);
ssize_t tree_listxattr(struct tree *t, struct node *n, char *buf, size_t size);

/* Count one read that handed n bytes to a reader, for stats.json. Thread-safe. */
void tree_note_served(struct tree *t, size_t n);
/*
 * For stats.json: whether verified blobs open in FUSE passthrough (fs.c), and
 * one more file opened in it (whose reads the kernel serves: not in
 * tree_note_served). Thread-safe.
 */
void tree_set_passthrough(struct tree *t, bool on);
void tree_note_passthrough_open(struct tree *t);

/*
 * Forget every tag resolution and listing (SIGHUP): the next look at a tag
 * asks the registry again. inval (may be NULL) is called for each tag
 * directory the kernel may have cached, outside any lock.
 */
void tree_forget_tags(
	struct tree *t, void (*inval)(void *arg, struct node *parent, const char *name), void *arg);

/* Whether the mount is read-only (-o ro). */
bool tree_read_only(const struct tree *t);

/* The tree's nodes (node.h): their counts and requests. */
struct nodes *tree_nodes(struct tree *t);

#endif

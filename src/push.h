/*
 * Writing into the mount: files created, written, renamed and removed in a
 * tag directory are staged in the cache directory (staging/<id>/) as a
 * draft of a new manifest; each file's blob is hashed as it is written and
 * uploaded when it is closed; the manifest, what `oras push` makes, is
 * pushed when the directory is synced, after push_delay seconds with no file
 * of it open, or at unmount. A push names each file as it was last closed,
 * never a file still being written (staged_version). A draft is kept on disk
 * (draft.json) so that a crash loses nothing closed: the next mount pushes it.
 *
 * Every function takes nodes of the tree (tree.h) and returns 0 or -errno;
 * -EROFS for a read-only mount, digest directories, .oci/ and indexes.
 */
#ifndef OCIFS_PUSH_H
#define OCIFS_PUSH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct node;
struct node_file;
struct tree;

/*
 * mkdir name in dir: a new tag in a repository (or in a repository made by
 * mkdir), a new repository elsewhere, "repo:tag" for both at once, or a
 * subdirectory inside a tag. *out is the new node.
 */
int push_mkdir(struct tree *t, struct node *dir, const char *name, struct node **out);

/* A new repository name in dir (made here, pushed with its first tag); -EEXIST, *out set, if there. */
int push_repo_make(struct tree *t, struct node *dir, const char *name, struct node **out);

/* The staged file of n (malloc'd), or NULL: what a writer's handle writes into. */
char *push_staged_path(struct tree *t, struct node *n);

/*
 * n, a staged file an earlier server had open for writing, is open here
 * again: what it holds is hashed again when it is sealed.
 */
void push_reopened(struct tree *t, struct node *n);

/*
 * The staged file at path, which an earlier server of this mount made as
 * name in dir and had open for writing when it died, shown there again
 * (*out) if path is a file of dir's tag's draft. 0 or -errno.
 */
int push_adopt_file(
	struct tree *t, struct node *dir, const char *name, const char *path, struct node **out);

/* Whether n is a repository made here by mkdir that nothing was pushed to yet. */
bool push_repo_made(struct tree *t, struct node *n);

/*
 * Create (or, when it exists, open truncated unless excl) the file name in
 * dir for writing. *out is its node, *fd a descriptor of its staged bytes
 * (the caller closes it and calls push_release). On failure *fd is -1 and
 * nothing is left to undo: what was opened is closed, the writer not counted.
 */
int push_create(
	struct tree *t, struct node *dir, const char *name, bool excl, struct node **out, int *fd);

/*
 * Open n for writing (truncated when trunc): a file of the registry is
 * copied into the staging area first. *fd as for push_create, failure too.
 */
int push_open(struct tree *t, struct node *n, int flags, struct node_file *f);

/* An open for reading of a staged file: a descriptor of its bytes. */
int push_open_read(struct tree *t, struct node *n, struct node_file *f);

/* Write through fd (from push_create/push_open) at off, hashing as it goes. Bytes or -errno. */
ssize_t push_write(struct tree *t, struct node *n, int fd, const char *buf, size_t len, off_t off);

/* A close of n: upload its blob when it changed since the last upload; that upload's error. */
int push_flush(struct tree *t, struct node *n);

/* The last close of a descriptor opened for writing. */
void push_release(struct tree *t, struct node *n);

/* truncate(2) of a file. */
int push_truncate(struct tree *t, struct node *n, off_t size);

int push_unlink(struct tree *t, struct node *dir, const char *name);

/* rmdir: a subdirectory of a tag, a tag (deleting it from the registry), or a new repository. */
int push_rmdir(struct tree *t, struct node *dir, const char *name);

/* rename within one tag directory; across tags -EXDEV. flags: RENAME_NOREPLACE. */
int push_rename(struct tree *t, struct node *dir, const char *name, struct node *newdir,
	const char *newname, unsigned flags);

/* fsync of a directory (sync DIR): push its tag's draft now and return the push's error. */
int push_fsyncdir(struct tree *t, struct node *dir);

/*
 * ln -s TARGET NAME in a repository directory: tag NAME to the manifest that
 * TARGET (a tag or digest of the repository) resolves to, as oras tag does.
 * *out is a passing link node for the reply. 0, -EPERM outside a
 * repository, -EINVAL for a bad name or target, -EBUSY for an unpushed
 * target, -EROFS, or the registry's error.
 */
int push_symlink(
	struct tree *t, struct node *dir, const char *name, const char *target, struct node **out);

/*
 * user.oci.annotation.<key> on a tag directory (the manifest's) or a file
 * (its layer's), user.oci.artifactType on a tag directory.
 */
int push_setxattr(struct tree *t, struct node *n, const char *name, const char *value, size_t len);
int push_removexattr(struct tree *t, struct node *n, const char *name);

/*
 * Start pushing: drafts an earlier server of this mount left are taken
 * over, then reopen(t) opens again what the kernel holds open for writing
 * of them (their writers counted); drafts left by an earlier daemon are
 * pushed (or reported); then the pusher waits for drafts to settle. After
 * daemonizing. 0 or -errno.
 */
int push_start(struct tree *t, void (*reopen)(struct tree *t));

/* Push every pending draft (whatever push_delay says), then stop the pusher. */
void push_stop(struct tree *t);

/*
 * Wait until the drafts an earlier server of this mount left are taken over
 * (at once when there are none): the kernel's ids may name what they show.
 */
void push_wait_adopted(struct tree *t);

/* A file of the registry was opened (+1) or closed (-1) for reading. */
void push_note_reader(struct tree *t, int delta);

/* Free what push.c hangs on a node (draft, staged file). */
void push_node_release(struct node *n);

struct json_object;
/*
 * Add the push figures to o for .ocifs/stats.json: pushes pending and
 * failed now (each tag with its state and last error), done and failed in
 * all. 0 or -ENOMEM.
 */
int push_stats_json(struct tree *t, struct json_object *o);

#endif

/*
 * The insides of writing, shared by push.c (write operations), draft.c
 * (drafts and their files), staged.c (staged files and uploads) and
 * pusher.c (the pusher thread); nothing else includes it.
 */
#ifndef OCIFS_PUSH_INT_H
#define OCIFS_PUSH_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "registry.h"

struct json_object;
struct node;
struct tree;

#define XATTR_ANN "user.oci.annotation."
/*
 * How long a draft whose push failed waits before the pusher tries again:
 * as long as the longest back-off of a request, 50 times retry_delay_ms.
 */
#define PUSH_RETRY_SECS(t) \
	(50 * ((t)->opts.retry_delay_ms ? (t)->opts.retry_delay_ms : 100) / 1000.0)

/* A file written into the mount. */
struct staged {
	char *path; /* its bytes: in the draft's directory, or the cache's blob once pushed */
	pthread_mutex_t lock; /* the hashing fields */
	struct digest_ctx *hash; /* over [0, hashed) while writes come in order */
	int64_t hashed; /* -1: written out of order, hash the file again */
	bool changed; /* protected by t->lock: written since its blob was uploaded */
	unsigned writers; /* protected by t->lock */
	/*
	 * What a push may name of it: the file as it was last closed, never the
	 * bytes of a writer still at work (staged_version). Protected by t->lock.
	 */
	bool dirty; /* written (or cut by an open) since it was last closed, or never closed */
	unsigned wgen; /* writes and truncations: a close seals only the bytes it hashed */
	char *closed_digest; /* its digest as last closed, NULL when not known (an empty file) */
	int64_t up_size; /* the size of the blob that file_of()->digest names, or -1 */
	pthread_mutex_t flush_lock; /* one upload at a time */

	/*
	 * An upload that runs while a sequential writer writes: whole chunks go up
	 * as they are written, the rest and the digest at close. Under lock.
	 */
	char *up_location; /* the session, or NULL */
	int64_t up_sent; /* bytes sent in it */
	bool up_off; /* not for this file (yet): out of order, or a copy of a read blob */
	bool up_busy; /* a thread is sending */
	pthread_cond_t up_cond; /* up_busy went false */
	struct registry *up_reg;
	char *up_repo;
};

/* Changes to one tag, not yet pushed. Fields protected by t->lock. */
struct draft {
	char *dir; /* <cache>/staging/<id> */
	struct json_object *base; /* the manifest it started from, or NULL for a new tag */
	bool type_set; /* user.oci.artifactType was set on the directory */
	unsigned gen; /* changes made */
	unsigned pushed_gen; /* changes pushed */
	double changed_at; /* monotonic seconds */
	double retry_at; /* after a failed push */
	unsigned writers; /* files of it open for writing */
	unsigned next_file;
	pthread_mutex_t save_lock; /* one draft.json written at a time */
	/* A referrer being attached (mkdir under .oci/referrers/): pushed by digest. */
	struct json_object *subject; /* the descriptor of what it refers to, or NULL */
	char *attach_type; /* its artifactType: the path below referrers/ */
	struct node *referrers; /* the NODE_REFERRERS it was made in */
	/* A pushed referrer changed (files removed): its digest, detached once the change is up. */
	char *replaces;
	int last_err; /* of the last push tried, 0 when none failed */
	char *base_digest; /* base's digest, or NULL */
	bool touched; /* holds a change a crash must not lose (draft_touch, a copy made) */
	bool adopted; /* taken over from an earlier server (draft_adopt) */
};

struct push {
	int readers; /* files of the registry open for reading (atomic) */
	struct strlist leftover; /* staging directories found at start: an earlier run's */
	pthread_t thread;
	bool started;
	bool stop; /* protected by t->lock */
	pthread_cond_t cond; /* with t->lock: a draft changed, or stop */
	pthread_mutex_t push_lock; /* one push at a time */
	struct node **drafts; /* artifacts with a draft; protected by t->lock */
	size_t n_drafts;
	uint64_t pushed; /* pushes done; protected by t->lock */
	uint64_t failures; /* pushes tried that failed; protected by t->lock */
	/*
	 * Drafts of an earlier server are being taken over (push_adopt): the
	 * kernel's ids wait (push_wait_adopted). Atomic; cleared under t->lock,
	 * with adopted_cond.
	 */
	bool adopting;
	bool upgrade; /* set before the pusher starts: it takes over from a running server */
	pthread_cond_t adopted_cond;
	void (*reopen)(struct tree *t); /* push_start's */
};

/* ---- draft.c ---- */

double draft_clock(void);

void draft_free(struct draft *d);

void draft_dir_remove(const char *dir);

/* Give art a draft (of its current manifest) unless it has one. 0 or -errno. */
int draft_begin(struct tree *t, struct node *art);

struct json_object *draft_json_str(const char *s);

/*
 * Write art's draft.json: what a later daemon needs to push it, and what a
 * server taking over from this one under the keeper needs to show it as it
 * is (every file and directory of the tag, staged files still being written
 * too: adopt.c). 0 or -errno.
 */
int draft_save(struct tree *t, struct node *art);

/* A change that a crash must not lose is in the draft: saved. 0 or -errno. */
int draft_record(struct tree *t, struct node *art);

/*
 * Give art the draft staged in dir by an earlier server (adopt.c), of the
 * manifest base_digest (NULL: a new tag); pending: it held changes that
 * server had not pushed. Caller holds art's load_lock. 0 or -errno.
 */
int draft_adopt(
	struct tree *t, struct node *art, const char *dir, const char *base_digest, bool pending);

/* The string o has under key, or NULL. */
const char *draft_jstr(struct json_object *o, const char *key);

/* A change to art's draft: counted, and the pusher told. */
void draft_bump(struct tree *t, struct node *art);

/* A change that a crash must not lose: counted, and the draft saved. */
int draft_touch(struct tree *t, struct node *art);

/* Take art's draft off the pusher's list. Caller holds t->lock. */
void draft_unlist(struct tree *t, struct node *art);

/*
 * Take art's draft off it (NULL when it has none). Caller holds t->lock,
 * and hands what it got to draft_dispose() once it has dropped the lock.
 */
struct draft *draft_take(struct tree *t, struct node *art);
/* Remove a taken draft's staging directory and free it. No lock held: it scans a directory. */
void draft_dispose(struct draft *d);

/* ---- staged.c ---- */

void staged_free(struct staged *s);

/* Upload a blob of size bytes from fd into repo, mounting it from a repository that has it. */
int staged_upload(struct tree *t, struct registry *r, const char *repo, const char *digest, int fd,
	int64_t size);

/*
 * The staged file at path an earlier server made in art's draft (adopt.c):
 * as being written, to be hashed whole at its close. NULL: no memory.
 */
struct staged *staged_adopt(struct node *art, const char *path);

/* A new staged file in art's draft, open for writing in *fd. Caller holds no lock. */
int staged_new(struct tree *t, struct node *art, struct staged **out, int *fd);

/* Copy the registry's bytes of blob node n into fd, hashing them into s. */
int staged_copy_up(struct tree *t, struct node *n, struct staged *s, int fd);

/*
 * What a push names of staged file n: the file as it was last closed (its
 * bytes on disk, while not dirty), or else the blob uploaded before it was
 * opened again; false when it has never been closed, and a push leaves it
 * out. *digest is NULL when not known (the push hashes the file);
 * *uploaded: the blob is in the registry. Caller holds t->lock.
 */
bool staged_version(const struct node *n, const char **digest, int64_t *size, bool *uploaded);

/*
 * A close of s (or a truncate with no writer) that hashed its bytes as they
 * were at write generation wgen: unless written since, they are the file
 * as closed. Takes digest (malloc'd, or NULL). Caller holds t->lock.
 */
void staged_seal(struct staged *s, unsigned wgen, char *digest);

/*
 * After a write: start sending whole chunks when a sequential writer has
 * one ready. Not while a file of the registry is open for reading, which is
 * most likely a copy (cp -r of a tag) whose blob the registry already has.
 * Caller holds s->lock.
 */
void staged_stream_kick(struct tree *t, struct staged *s);

/* ---- pusher.c ---- */

/*
 * Push art's draft (force: whatever push_delay and open files say). 0,
 * or the push's error (logged, the draft kept for another try).
 */
int pusher_push(struct tree *t, struct node *art, bool force);

/* Whether the draft of art holds any file (an emptied one waits for sync DIR). */
bool pusher_has_files(const struct node *n);

/* ---- adopt.c ---- */

/*
 * Take over the draft in dir that an earlier server of this mount left
 * (root: its draft.json): its tag shown as that server showed it, its staged
 * files where they are. 0; -ENOTSUP when it cannot be (a referrer, a kind of
 * file not shown again): it is pushed as after a crash; or -errno.
 */
int push_adopt(struct tree *t, const char *dir, struct json_object *root);
/*
 * The files of the drafts taken over that were open for writing when their
 * draft was written and that no writer holds now: sealed as they are
 * (hashed, uploaded), as a close would have. After the writers the kernel
 * holds were opened again.
 */
void push_adopt_seal(struct tree *t);

/* ---- draft.c: what a draft's manifest takes from the nodes ---- */

/* The value of n's xattr name, or NULL. Caller holds t->lock. */
const char *push_xattr_get(const struct node *n, const char *name);

/* The title of n: its path below art. */
int push_title_of(
	const struct node *art, const struct node *n, const char *leaf, char *out, size_t size);

/* ---- push.c ---- */

/* A tag called tag in the repository ns, new, with no draft yet: -EEXIST when the registry has it. */
int push_tag_node(struct tree *t, struct node *ns, const char *tag, struct node **out);

/* Whether mkdir in the NS dir makes a tag (dir is a repository) rather than a repository. */
bool push_ns_is_repo(struct tree *t, struct node *dir);

/* What a reader of a failed upload or push is told. */
int push_errno(int err);

#endif

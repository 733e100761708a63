/*
 * The journal: what the kernel holds of this mount (node ids, open file
 * handles, the INIT it sent), kept where a crash of the server cannot take
 * it: a memfd that the keeper holds (keeper.h). The next server reads it,
 * so that the ids and handles the kernel still has mean to it what they
 * meant to the server that gave them.
 *
 * Ids and handles are a server's pointers with its generation in bits 48
 * to 62 (journal_tag()): a later server, with another generation, tells an
 * id of its own from one an earlier server gave, and can never give the
 * kernel an id that the kernel still holds from an earlier one. Ids of an
 * earlier server are "foreign": each is a name under a parent id, made
 * again by a lookup when the kernel first names it (fs.c).
 *
 * Records are appended under one lock (journal_lock); a record becomes
 * valid when its size is stored, last, so a server killed while writing
 * leaves the record out, never half of it.
 */
#ifndef OCIFS_JOURNAL_H
#define OCIFS_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bits of an id or handle that hold its server's generation. */
#define JOURNAL_GEN_SHIFT 48
#define JOURNAL_GEN_MASK (0x7fffULL << JOURNAL_GEN_SHIFT)

/*
 * Start journaling: read the journal old_fd holds (-1: none, the first
 * server), take gen as this server's generation (the keeper counts them;
 * the next free one when an id the kernel holds has it), and write what is still live into
 * a new memfd, returned in *new_fd for the keeper. old_fd is kept open to
 * read what an earlier server still running (an upgrade) adds after this
 * (journal_catch_up), until journal_old_gone(). 0 or -errno.
 */
int journal_start(int old_fd, unsigned gen, int *new_fd);
/* Whether a journal is kept (the server runs under a keeper). */
bool journal_on(void);
/* p (a pointer) as an id or handle of this server. */
uint64_t journal_tag(const void *p);
/* Whether v is an id or handle of this server; if so, *p is its pointer. */
bool journal_ours(uint64_t v, void **p);

/*
 * The INIT the kernel sent, kept for the next server; its reply written;
 * and what was kept, once answered (0: none, or never answered).
 */
void journal_set_init(const void *buf, size_t len);
void journal_init_answered(void);
size_t journal_init(void *buf, size_t cap);

/* A flag of an entry: a repository made here by mkdir, that no registry has yet. */
#define JOURNAL_MADE 1U
/*
 * The kernel took id as name below parent (a lookup, create, mkdir,
 * symlink); flags: JOURNAL_MADE or 0.
 */
void journal_entry(uint64_t id, uint64_t parent, const char *name, unsigned flags);
/* The kernel forgot id. */
void journal_forget(uint64_t id);
/*
 * The kernel holds handle fh of ino, opened with flags, in FUSE passthrough
 * on backing_id (-1: through the page cache, 0: not told), reading what
 * (the blob's digest, or NULL); and let it go.
 */
void journal_open(uint64_t fh, uint64_t ino, int flags, int backing_id, const char *what);
void journal_release(uint64_t fh);

/*
 * A foreign id: the parent and name it was given under (name owned by the
 * caller), its flags (JOURNAL_MADE), and the node this server made for it,
 * if any (*local). 0, or -ESTALE when no server recorded it.
 */
int journal_foreign(uint64_t id, uint64_t *parent, char **name, unsigned *flags, void **local);
/*
 * The foreign ids flagged JOURNAL_MADE that nothing was made for here yet:
 * *ids (malloc'd; ids NULL: only counted), how many.
 */
size_t journal_foreign_made(uint64_t **ids);
/*
 * Set the node made for foreign id id, unless another request set one
 * first: returns the node in force (local, or the other one).
 */
void *journal_foreign_set(uint64_t id, void *local);
/* The kernel forgot foreign id id: its node (or NULL), the entry gone. */
void *journal_foreign_forget(uint64_t id);
/*
 * A foreign handle: its ino and flags, what this server opened for it, and
 * what it read (the blob's digest, or NULL; the caller frees it). 0 or -ESTALE.
 */
int journal_foreign_handle(uint64_t fh, uint64_t *ino, int *flags, void **local, char **what);
void *journal_foreign_handle_set(uint64_t fh, void *local);
/*
 * The kernel released foreign handle fh: what was opened for it (or NULL);
 * *ino and *backing_id say what it was of, and its backing id (0: none).
 */
void *journal_foreign_handle_release(uint64_t fh, uint64_t *ino, int *backing_id);
/* fn(ino, backing_id, arg) for each foreign handle whose I/O mode was told. */
void journal_foreach_backing(void (*fn)(uint64_t ino, int backing_id, void *arg), void *arg);

/*
 * The foreign handles open for writing that nothing was opened for here
 * yet: *fhs and *inos (malloc'd, the caller frees them), how many.
 */
size_t journal_foreign_writers(uint64_t **fhs, uint64_t **inos);

/*
 * Who takes a new journal when this one is compacted (the keeper's socket):
 * fn(fd) returns 0 once it has it; fd stays this server's to map.
 */
void journal_set_sink(int (*fn)(int fd));
/*
 * The request this thread is answering (its unique), or 0 once it reads
 * again: what a server dying now leaves unanswered, for the next.
 */
void journal_inflight(uint64_t unique);
/* fn(unique, arg) for each request the earlier server had read and not answered, as it said. */
void journal_foreach_inflight(void (*fn)(uint64_t unique, void *arg), void *arg);
/* The earlier server has exited: stop reading its journal. */
void journal_old_gone(void);
/*
 * What tells this mount from any other (a random id its first server made,
 * kept by every next one), or 0 without a journal: whose drafts are whose.
 */
uint64_t journal_mount_id(void);
/* Foreign ids and handles still known, for stats.json. */
size_t journal_foreign_count(void);

#endif

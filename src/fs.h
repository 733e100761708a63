/* FUSE low-level operations: translate requests, call the tree, reply. */
#ifndef OCIFS_FS_H
#define OCIFS_FS_H

#include <fuse_lowlevel.h>

struct tree;

/* The operations table; the session's userdata must be the struct tree. */
extern const struct fuse_lowlevel_ops fs_ops;

/*
 * Forget tag resolutions and listings, in the daemon and in the kernel's
 * caches (SIGHUP): the next look at a tag asks the registry. Not from a
 * request handler.
 */
void fs_forget_tags(struct fuse_session *se, struct tree *t);
/* Let t tell the kernel of se what changes under it (tree_set_inval()); before the loop. */
void fs_watch(struct fuse_session *se, struct tree *t);
/*
 * What an earlier server made that no registry holds, made again here
 * (push_start's reopen): the repositories made by mkdir that the kernel
 * still holds, and the files it had open for writing (their drafts count
 * them again).
 */
void fs_take_over(struct tree *t);

#endif

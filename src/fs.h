/* FUSE low-level operations: translate requests, call the tree, reply. */
#ifndef OCIFS_FS_H
#define OCIFS_FS_H

#include <fuse_lowlevel.h>

struct tree;

/* The operations table; the session's userdata must be the struct tree. */
extern const struct fuse_lowlevel_ops fs_ops;

#endif

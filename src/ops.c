/*
 * The providers' operations, kind by kind: which provider answers what.
 * Reading a registry's tree is tree.c's (namespaces and repositories,
 * artifacts, referrers, their files); writing into it is staging's
 * (push.c, staged.c); an image's root filesystem is rootfs.c's, which sets
 * its own nodes' operations; .ocifs/stats.json is here. tree.c calls no
 * writing: they meet in these tables, which main.c hands the tree.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cache.h"
#include "journal.h"
#include "keeper.h"
#include "ops.h"
#include "push.h"
#include "tree-int.h"

static bool writes(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

/* ---- staging: files written into the mount ---- */

static int file_open(struct tree *t, struct node *n, int flags, struct node_file *f)
{
	int ret;

	if (writes(flags))
		return push_open(t, n, flags, f);
	ret = tree_file_open(t, n, flags, f);
	if (!ret && f->blob)
		push_note_reader(t, 1);
	return ret;
}

static int staged_open(struct tree *t, struct node *n, int flags, struct node_file *f)
{
	if (writes(flags))
		return push_open(t, n, flags, f);
	return push_open_read(t, n, f);
}

static ssize_t file_write(
	struct tree *t, struct node_file *f, const char *buf, size_t size, off_t off)
{
	return push_write(t, f->node, f->fd, buf, size, off);
}

static int file_flush(struct tree *t, struct node_file *f)
{
	return push_flush(t, f->node);
}

static void file_close(struct tree *t, struct node_file *f)
{
	if (f->writer)
		push_release(t, f->node);
	if (f->blob)
		push_note_reader(t, -1);
}

static void reg_release(struct tree *t, struct node *n)
{
	push_node_release(n);
	tree_node_release(t, n);
}

/* ---- .ocifs/stats.json ---- */

static int status_json(struct tree *t, char **out, size_t *len)
{
	struct json_object *o = json_object_new_object();
	const char *s;
	int ret;

	if (!o)
		return -ENOMEM;
	json_object_object_add(o, "bytes_served",
		json_object_new_int64((int64_t)__atomic_load_n(&t->served, __ATOMIC_RELAXED)));
	json_object_object_add(o, "read_requests",
		json_object_new_int64(
			(int64_t)__atomic_load_n(&t->read_requests, __ATOMIC_RELAXED)));
	json_object_object_add(o, "passthrough",
		json_object_new_boolean(__atomic_load_n(&t->passthrough, __ATOMIC_RELAXED)));
	json_object_object_add(o, "passthrough_opens",
		json_object_new_int64(
			(int64_t)__atomic_load_n(&t->passthrough_opens, __ATOMIC_RELAXED)));
	pthread_mutex_lock(&t->nodes.lock);
	json_object_object_add(o, "nodes", json_object_new_int64((int64_t)t->nodes.n_nodes));
	json_object_object_add(o, "layers_open", json_object_new_int64((int64_t)t->n_layers));
	pthread_mutex_unlock(&t->nodes.lock);
	json_object_object_add(o, "server_pid", json_object_new_int64((int64_t)getpid()));
	json_object_object_add(o, "keeper_pid",
		keeper_pid() ? json_object_new_int64((int64_t)keeper_pid()) : NULL);
	json_object_object_add(o, "restarts", json_object_new_int64((int64_t)keeper_restarts()));
	json_object_object_add(
		o, "earlier_ids", json_object_new_int64((int64_t)journal_foreign_count()));
	ret = cache_stats_json(t->cache, o);
	if (!ret)
		ret = push_stats_json(t, o);
	s = ret ? NULL
		: json_object_to_json_string_ext(
			  o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
	*out = s ? malloc(strlen(s) + 2) : NULL;
	if (*out) {
		*len = (size_t)sprintf(*out, "%s\n", s);
	} else if (!ret) {
		ret = -ENOMEM;
	}
	json_object_put(o);
	return ret;
}

/* Made now, as /proc files are: its size is what reads find. */
static int status_open(struct tree *t, struct node *n, int flags, struct node_file *f)
{
	int ret;

	if (writes(flags))
		return -EACCES;
	ret = status_json(t, &f->owned, &f->len);
	f->data = f->owned;
	f->direct_io = true;
	return ret;
}

/* ---- the tables ---- */

#define REG_COMMON \
	.getattr = tree_reg_getattr, .timeout = tree_reg_timeout, .type = tree_reg_type, \
	.getxattr = tree_reg_getxattr, .listxattr = tree_reg_listxattr, .release = reg_release

#define FILE_WRITES \
	.write = file_write, .flush = file_flush, .close = file_close, .truncate = push_truncate, \
	.setxattr = push_setxattr, .removexattr = push_removexattr

#define DIR_WRITES \
	.mkdir = push_mkdir, .create = push_create, .unlink = push_unlink, .rmdir = push_rmdir, \
	.rename = push_rename, .symlink = push_symlink, .fsyncdir = push_fsyncdir, \
	.setxattr = push_setxattr, .removexattr = push_removexattr

static const struct node_ops hosts_ops = {
	.name = "hosts",
	REG_COMMON,
	.lookup = tree_hosts_lookup,
	.list = tree_children_list,
	DIR_WRITES,
};

static const struct node_ops ns_ops = {
	.name = "namespaces",
	REG_COMMON,
	.lookup = tree_ns_lookup,
	.list = tree_ns_list,
	DIR_WRITES,
};

static const struct node_ops artifact_ops = {
	.name = "artifacts",
	REG_COMMON,
	.lookup = tree_artifact_lookup,
	.list = tree_artifact_list,
	DIR_WRITES,
};

static const struct node_ops referrers_ops = {
	.name = "referrers",
	REG_COMMON,
	.lookup = tree_referrers_lookup,
	.list = tree_referrers_list,
	DIR_WRITES,
};

static const struct node_ops file_ops = {
	.name = "files",
	REG_COMMON,
	.open = file_open,
	FILE_WRITES,
};

static const struct node_ops staged_ops = {
	.name = "staging",
	REG_COMMON,
	.open = staged_open,
	FILE_WRITES,
};

static const struct node_ops link_ops = {
	.name = "tag links",
	REG_COMMON,
	.readlink = tree_link_readlink,
};

static const struct node_ops status_ops = {
	.name = "status",
	REG_COMMON,
	.open = status_open,
};

const struct node_ops *const node_kind_ops[NODE_KINDS] = {
	[NODE_HOSTS] = &hosts_ops,
	[NODE_NS] = &ns_ops,
	[NODE_ARTIFACT] = &artifact_ops,
	[NODE_DIR] = &artifact_ops,
	[NODE_BLOB] = &file_ops,
	[NODE_DATA] = &file_ops,
	[NODE_STAGED] = &staged_ops,
	[NODE_REFERRERS] = &referrers_ops,
	[NODE_STATUS] = &status_ops,
	[NODE_LINK] = &link_ops,
	[NODE_LSTORE] = &layerstore_ops,
	/* NODE_R*: rootfs.c's own */
};

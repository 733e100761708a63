/*
 * Drafts an earlier server of this mount left, taken over as they were: a
 * server killed, or replaced by an upgrade (keeper.h). The kernel still holds
 * ids of the tag, of its directories and files, and a writer may be half way
 * through a staged file. Each is shown here again from the draft's
 * draft.json (draft.c writes every file and directory of the tag into it), so
 * that the kernel's next use of an id finds it by name (fs.c) and a writer's
 * bytes go on into the same staged file, pushed once it is closed.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <json-c/json.h>

#include "cache.h"
#include "log.h"
#include "manifest.h"
#include "push-int.h"
#include "push.h"
#include "ref.h"
#include "registry.h"
#include "tree-int.h"

/* Set n's xattrs to the text values of object o. Caller holds t->nodes.lock. */
static int xattrs_set(struct node *n, struct json_object *o)
{
	struct xattr *x = NULL;
	size_t nx = 0;
	int ret = 0;

	if (!o || !json_object_is_type(o, json_type_object))
		return 0;
	json_object_object_foreach(o, k, v)
	{
		if (!ret && json_object_is_type(v, json_type_string))
			ret = tree_xattr_add(&x, &nx, k, json_object_get_string(v));
	}
	if (ret) {
		tree_xattrs_free(x, nx);
		return ret;
	}
	tree_xattrs_free(reg_of(n)->xattrs, reg_of(n)->n_xattrs);
	reg_of(n)->xattrs = x;
	reg_of(n)->n_xattrs = nx;
	return 0;
}

/*
 * The repository host/repo of this mount: made a repository to be (as mkdir
 * makes one) where the registry has none yet.
 */
static int repo_node(struct tree *t, const char *host, const char *repo, struct node **out)
{
	struct node *dir = tree_root(t), *n;
	const char *rest = repo;
	char comp[256];
	size_t rl;
	int ret;

	if (dir->kind == NODE_HOSTS) {
		ret = tree_lookup(t, dir, host, &dir);
		if (ret)
			return ret;
	}
	if (dir->kind != NODE_NS)
		return -ENOENT;
	rl = strlen(reg_of(dir)->repo);
	if (rl) {
		if (strncmp(repo, reg_of(dir)->repo, rl) != 0 || repo[rl] != '/')
			return -ENOENT;
		rest = repo + rl + 1;
	}
	while (*rest) {
		const char *slash = strchr(rest, '/');
		size_t len = slash ? (size_t)(slash - rest) : strlen(rest);

		if (len >= sizeof(comp))
			return -ENAMETOOLONG;
		memcpy(comp, rest, len);
		comp[len] = '\0';
		ret = push_repo_make(t, dir, comp, &n);
		if (ret == -EEXIST)
			ret = n->kind == NODE_NS ? 0 : -ENOTDIR;
		if (ret)
			return ret;
		dir = n;
		rest += len + (slash ? 1 : 0);
	}
	if (strcmp(reg_of(dir)->repo, repo) != 0)
		return -ENOENT;
	if (!push_ns_is_repo(t, dir)) {
		/*
		 * Made by mkdir, and known to the registry only by the blobs
		 * sent to it (no tag yet): a repository to be, as it was.
		 */
		pthread_mutex_lock(&t->nodes.lock);
		reg_of(dir)->local = true;
		ns_of(dir)->new_repo = true;
		tree_pin(t, dir);
		pthread_mutex_unlock(&t->nodes.lock);
	}
	*out = dir;
	return 0;
}

/* What one entry of a draft's "nodes" is. */
struct entry {
	const char *title;
	const char *kind;
	struct json_object *e;
};

/*
 * The entries of nodes, checked before anything is changed: titles a push
 * accepts, kinds this server can show again, staged files in place. 0, or
 * -ENOTSUP (the draft is recovered as after a crash instead).
 */
static int entries_check(const char *dir, struct json_object *nodes, struct entry *v, size_t n)
{
	char path[PATH_MAX];
	struct stat st;
	size_t i;

	for (i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(nodes, i);
		const char *file;

		v[i].e = e;
		v[i].title = draft_jstr(e, "title");
		v[i].kind = draft_jstr(e, "kind");
		if (!v[i].title || !v[i].kind || manifest_title_check(v[i].title))
			return -ENOTSUP;
		if (strcmp(v[i].kind, "dir") == 0)
			continue;
		if (strcmp(v[i].kind, "blob") == 0) {
			if (!draft_jstr(e, "digest") || !ref_valid_digest(draft_jstr(e, "digest")))
				return -ENOTSUP;
			continue;
		}
		if (strcmp(v[i].kind, "staged") != 0)
			return -ENOTSUP; /* an oras packed directory, ... */
		file = draft_jstr(e, "file");
		if (!file || file[0] != 'f' || strchr(file, '/') ||
			(size_t)snprintf(path, sizeof(path), "%s/%s", dir, file) >= sizeof(path) ||
			stat(path, &st) || !S_ISREG(st.st_mode))
			return -ENOTSUP;
	}
	return 0;
}

static int64_t jint(struct json_object *o, const char *key, int64_t dflt)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : dflt;
}

static bool jbool(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

/* The directory of title (its last component left out) below art, made as needed. */
static int parent_of(
	struct tree *t, struct node *art, const char *title, struct node **out, const char **leaf)
{
	struct node *dir = art, *n;
	const char *p = title, *slash;
	char comp[NAME_MAX + 1];
	int ret = 0;

	while ((slash = strchr(p, '/'))) {
		size_t len = (size_t)(slash - p);

		if (len > NAME_MAX)
			return -ENAMETOOLONG;
		memcpy(comp, p, len);
		comp[len] = '\0';
		pthread_mutex_lock(&t->nodes.lock);
		n = node_child_find(dir, comp);
		pthread_mutex_unlock(&t->nodes.lock);
		if (!n) {
			n = tree_node_new(t, dir, comp, NODE_DIR);
			if (!n || !(reg_of(n)->repo = strdup(reg_of(art)->repo)))
				return -ENOMEM;
			pthread_mutex_lock(&t->nodes.lock);
			reg_of(n)->local = true;
			ret = node_child_add(dir, n);
			if (!ret)
				tree_pin(t, n);
			pthread_mutex_unlock(&t->nodes.lock);
			if (ret)
				return ret;
		}
		if (n->kind != NODE_DIR)
			return -ENOTDIR;
		dir = n;
		p = slash + 1;
	}
	*out = dir;
	*leaf = p;
	return 0;
}

/* Entry en below art, in draft dir: its node made and added. */
static int entry_add(struct tree *t, struct node *art, const char *dir, const struct entry *en,
	unsigned *next_file)
{
	struct json_object *e = en->e, *x;
	struct node *parent, *n = NULL, *old;
	const char *leaf, *s;
	char path[PATH_MAX];
	struct staged *st = NULL;
	struct stat sb;
	enum node_kind kind = strcmp(en->kind, "dir") == 0    ? NODE_DIR
			      : strcmp(en->kind, "blob") == 0 ? NODE_BLOB
							      : NODE_STAGED;
	bool local = kind == NODE_STAGED || (kind == NODE_DIR && jbool(e, "local"));
	int ret = parent_of(t, art, en->title, &parent, &leaf);

	if (ret)
		return ret;
	pthread_mutex_lock(&t->nodes.lock);
	old = node_child_find(parent, leaf);
	pthread_mutex_unlock(&t->nodes.lock);
	if (old && kind == NODE_DIR && old->kind == NODE_DIR)
		return 0; /* made for a path below it already */
	if (old)
		return -EEXIST;
	n = tree_node_new(t, parent, leaf, kind);
	if (!n || !(reg_of(n)->repo = strdup(reg_of(art)->repo)))
		goto nomem;
	if (kind == NODE_BLOB) {
		file_of(n)->digest = strdup(draft_jstr(e, "digest"));
		file_of(n)->size = jint(e, "size", 0);
		if (!file_of(n)->digest)
			goto nomem;
	} else if (kind == NODE_STAGED) {
		snprintf(path, sizeof(path), "%s/%s", dir, draft_jstr(e, "file"));
		st = staged_adopt(art, path);
		if (!st || stat(path, &sb))
			goto nomem;
		file_of(n)->size = sb.st_size;
		/*
		 * A file open for writing when the draft was written may have
		 * been written after: hashed again when it is sealed (its
		 * writer's close, or push_adopt_seal), never taken as uploaded.
		 */
		st->dirty = jbool(e, "dirty");
		st->changed = jbool(e, "changed") || st->dirty;
		st->up_size = jint(e, "up_size", -1);
		s = draft_jstr(e, "closed_digest");
		if (s && !(st->closed_digest = strdup(s)))
			goto nomem;
		s = draft_jstr(e, "digest");
		if (s && !(file_of(n)->digest = strdup(s)))
			goto nomem;
		if (strtoul(draft_jstr(e, "file") + 1, NULL, 10) >= *next_file)
			*next_file = (unsigned)strtoul(draft_jstr(e, "file") + 1, NULL, 10) + 1;
	}
	pthread_mutex_lock(&t->nodes.lock);
	reg_of(n)->mtime = (time_t)jint(e, "mtime", (int64_t)reg_of(n)->mtime);
	reg_of(n)->local = local;
	if (kind == NODE_STAGED)
		file_of(n)->staged = st;
	ret = xattrs_set(n, json_object_object_get_ex(e, "xattrs", &x) ? x : NULL);
	if (!ret)
		ret = node_child_find(parent, leaf) ? -EEXIST : node_child_add(parent, n);
	if (!ret)
		tree_pin(t, n);
	pthread_mutex_unlock(&t->nodes.lock);
	if (ret) {
		if (kind == NODE_STAGED)
			file_of(n)->staged = NULL;
		staged_free(st);
		node_discard(&t->nodes, n);
	}
	return ret;
nomem:
	staged_free(st);
	if (n)
		node_discard(&t->nodes, n);
	return -ENOMEM;
}

/*
 * art shows what the draft shows: what the registry showed of the tag gives
 * way to it. Caller holds art's load_lock.
 */
static int rebuild(struct tree *t, struct node *art, const char *dir, struct json_object *root,
	const struct entry *v, size_t n)
{
	unsigned next_file = 0;
	struct json_object *x;
	size_t i;
	int ret = 0;

	pthread_mutex_lock(&t->nodes.lock);
	for (i = art->n_children; i-- > 0;)
		if (!art->children[i]->hidden)
			node_delete(&t->nodes, art, art->children[i]);
	if (json_object_object_get_ex(root, "xattrs", &x))
		ret = xattrs_set(art, x);
	node_draft(art)->type_set = jbool(root, "type_set");
	pthread_mutex_unlock(&t->nodes.lock);
	for (i = 0; i < n && !ret; i++) {
		ret = entry_add(t, art, dir, &v[i], &next_file);
		if (ret == -EEXIST) {
			log_warn("%s:%s: %s shows twice in what an earlier server staged: shown "
				 "once",
				reg_of(art)->repo, art_of_node(art)->ref, v[i].title);
			ret = 0;
		}
	}
	pthread_mutex_lock(&t->nodes.lock);
	node_draft(art)->next_file = next_file;
	pthread_mutex_unlock(&t->nodes.lock);
	return ret;
}

/*
 * A draft that could not be shown whole: none of it shown, the draft given
 * back (its directory is pushed as after a crash), the tag read again from
 * the registry when it is next looked at. Caller holds art's load_lock.
 */
static void give_back(struct tree *t, struct node *art)
{
	struct draft *d;
	size_t i;

	pthread_mutex_lock(&t->nodes.lock);
	for (i = art->n_children; i-- > 0;)
		if (!art->children[i]->hidden)
			node_delete(&t->nodes, art, art->children[i]);
	d = draft_take(t, art);
	art_of_node(art)->loaded = false;
	pthread_mutex_unlock(&t->nodes.lock);
	draft_free(d);
}

int push_adopt(struct tree *t, const char *dir, struct json_object *root)
{
	const char *host = draft_jstr(root, "host"), *repo = draft_jstr(root, "repo");
	const char *tag = draft_jstr(root, "tag"), *base = draft_jstr(root, "base");
	struct json_object *nodes;
	struct node *art, *ns;
	struct entry *v;
	size_t n;
	bool busy;
	int ret;

	/* a referrer being attached is pushed as after a crash */
	if (!host || !repo || !tag || !ref_valid_repo(repo) || !ref_valid_tag(tag) ||
		(base && !ref_valid_digest(base)) ||
		!json_object_object_get_ex(root, "nodes", &nodes) ||
		!json_object_is_type(nodes, json_type_array))
		return -ENOTSUP;
	n = json_object_array_length(nodes);
	v = calloc(n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	ret = entries_check(dir, nodes, v, n);
	if (ret)
		goto out;
	art = tree_root(t);
	if (art->kind == NODE_ARTIFACT) {
		/* a mount of the tag itself */
		if (strcmp(reg_of(art)->repo, repo) != 0 || strcmp(art_of_node(art)->ref, tag) != 0)
			ret = -ENOENT;
	} else {
		ret = repo_node(t, host, repo, &ns);
		if (ret) {
			log_warn("%s/%s: not found again: %s", host, repo, strerror(-ret));
			goto out;
		}
		ret = tree_lookup(t, ns, tag, &art);
		/* a new tag, or one deleted meanwhile: made again, as mkdir makes it */
		if (ret == -ENOENT)
			ret = push_tag_node(t, ns, tag, &art);
	}
	if (ret)
		goto out;
	if (art->kind != NODE_ARTIFACT || art_of_node(art)->by_digest || reg_of(art)->immutable) {
		ret = -ENOTDIR;
		goto out;
	}
	pthread_mutex_lock(load_lock_of(art));
	pthread_mutex_lock(&t->nodes.lock);
	busy = node_draft(art) != NULL;
	pthread_mutex_unlock(&t->nodes.lock);
	ret = busy ? -EBUSY
		   : draft_adopt(t, art, dir, base,
			     !json_object_object_get_ex(root, "pending", NULL) ||
				     jbool(root, "pending"));
	if (!ret) {
		ret = rebuild(t, art, dir, root, v, n);
		if (ret)
			give_back(t, art);
	}
	pthread_mutex_unlock(load_lock_of(art));
	if (!ret)
		log_info("%s/%s:%s: what the server before staged is taken over (%zu files and "
			 "directories)",
			host, repo, tag, n);
out:
	free(v);
	return ret;
}

/* The staged files below dir, of a draft taken over, to seal: added to *v (held). */
static void seal_collect(
	struct nodes *ns, struct node *dir, struct node ***v, size_t *n, size_t *cap)
{
	size_t i;

	for (i = 0; i < dir->n_children; i++) {
		struct node *c = dir->children[i];

		if (c->kind == NODE_DIR) {
			seal_collect(ns, c, v, n, cap);
			continue;
		}
		if (c->kind != NODE_STAGED || !file_of(c)->staged || !file_of(c)->staged->dirty ||
			file_of(c)->staged->writers > 0)
			continue;
		if (*n == *cap) {
			struct node **nv = realloc(*v, (*cap ? 2 * *cap : 16) * sizeof(**v));

			if (!nv)
				return;
			*v = nv;
			*cap = *cap ? 2 * *cap : 16;
		}
		node_hold(ns, c);
		(*v)[(*n)++] = c;
	}
}

void push_adopt_seal(struct tree *t)
{
	struct node **v = NULL;
	size_t i, n = 0, cap = 0;

	pthread_mutex_lock(&t->nodes.lock);
	for (i = 0; t->push && i < t->push->n_drafts; i++) {
		struct node *art = t->push->drafts[i];

		if (node_draft(art) && node_draft(art)->adopted)
			seal_collect(&t->nodes, art, &v, &n, &cap);
	}
	pthread_mutex_unlock(&t->nodes.lock);
	for (i = 0; i < n; i++) {
		int ret = push_flush(t, v[i]);

		if (ret)
			log_warn("%s, left open for writing by the server before: not sealed: %s",
				v[i]->name, strerror(-ret));
		pthread_mutex_lock(&t->nodes.lock);
		node_drop(&t->nodes, v[i]);
		pthread_mutex_unlock(&t->nodes.lock);
	}
	free(v);
}

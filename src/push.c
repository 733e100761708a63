/*
 * Write operations on the tree: mkdir, create, open for writing, write,
 * close, truncate, unlink, rmdir, rename, symlink, xattrs and attaching
 * referrers, each staging a change in its tag's draft (draft.c).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/rand.h>

#include "buf.h"
#include "cache.h"
#include "digest.h"
#include "log.h"
#include "manifest.h"
#include "push-int.h"
#include "push.h"
#include "ref.h"
#include "registry.h"
#include "tree-int.h"

/*
 * The tag directory that n is in (or is), when a change there may be
 * staged: -EROFS on a read-only mount, in a digest directory, under .oci/ or
 * in an index; -EPERM outside any tag. Caller holds t->nodes.lock.
 */
static int art_of(struct tree *t, struct node *n, struct node **art)
{
	if (t->opts.read_only)
		return -EROFS;
	for (; n && n->kind != NODE_ARTIFACT; n = n->parent)
		if (n->hidden || n->kind == NODE_NS || n->kind == NODE_HOSTS)
			return n->hidden ? -EROFS : -EPERM;
	if (!n)
		return -EPERM;
	if (reg_of(n)->immutable || art_of_node(n)->by_digest)
		return -EROFS;
	/* an index's platform child, or a referrer (but one being attached) */
	if (n->parent && n->parent->kind != NODE_NS && !(node_draft(n) && node_draft(n)->subject))
		return -EROFS;
	if (art_of_node(n)->model) {
		/* its layers' paths are not titles: a new manifest made here would not keep them */
		log_warn("%s:%s: a model's files are changed with its own tools (modctl, kit), not "
			 "here",
			reg_of(n)->repo, art_of_node(n)->ref);
		return -EROFS;
	}
	if (art_of_node(n)->rootfs_digest) {
		log_warn("%s:%s: an image's root filesystem cannot be changed", reg_of(n)->repo,
			art_of_node(n)->ref);
		return -EROFS;
	}
	if (manifest_type_is_index(push_xattr_get(n, "user.oci.mediaType"))) {
		log_warn("%s:%s: an index cannot be changed file by file", reg_of(n)->repo,
			art_of_node(n)->ref);
		return -EROFS;
	}
	*art = n;
	return 0;
}

/* Set (or replace) an xattr of n. Caller holds t->nodes.lock. */
static int xattr_set(struct node *n, const char *name, const char *value)
{
	size_t i;
	char *v;

	for (i = 0; i < reg_of(n)->n_xattrs; i++)
		if (strcmp(reg_of(n)->xattrs[i].name, name) == 0) {
			v = strdup(value);
			if (!v)
				return -ENOMEM;
			free(reg_of(n)->xattrs[i].value);
			reg_of(n)->xattrs[i].value = v;
			return 0;
		}
	return tree_xattr_add(&reg_of(n)->xattrs, &reg_of(n)->n_xattrs, name, value);
}

int push_errno(int err)
{
	switch (err) {
	case 0:
	case -EACCES:
	case -ENOSPC:
	case -ENOMEM:
	case -EROFS:
	case -ENOENT:
	case -EBUSY:
		return err;
	default:
		return -EIO;
	}
}

int push_tag_node(struct tree *t, struct node *ns, const char *tag, struct node **out)
{
	struct node *n;
	int ret;

	if (!ref_valid_tag(tag))
		return -EINVAL;
	ret = tree_lookup(t, ns, tag, &n);
	if (ret == 0 && !(n->kind == NODE_NS && ns_of(n)->guessed && !reg_of(n)->local))
		return -EEXIST;
	if (ret && ret != -ENOENT)
		return ret;
	if (ret == 0) {
		/* a name only guessed to be a namespace: the tag takes its place */
		pthread_mutex_lock(&t->nodes.lock);
		node_delete(&t->nodes, ns, n);
		pthread_mutex_unlock(&t->nodes.lock);
	}
	n = tree_artifact_new(t, ns, tag, reg_of(ns)->site, reg_of(ns)->repo, tag);
	if (!n)
		return -ENOMEM;
	pthread_mutex_lock(&t->nodes.lock);
	reg_of(n)->local = true;
	art_of_node(n)->loaded = true;
	reg_of(n)->mtime = time(NULL);
	pthread_mutex_unlock(&t->nodes.lock);
	if (node_child_get_or_add(&t->nodes, ns, n) != n)
		return -EEXIST;
	pthread_mutex_lock(&t->nodes.lock);
	tree_pin(t, n);
	pthread_mutex_unlock(&t->nodes.lock);
	*out = n;
	return 0;
}

/* A tag called tag in the repository ns, new: -EEXIST when the registry has it. */
static int make_tag(struct tree *t, struct node *ns, const char *tag, struct node **out)
{
	struct node *n;
	int ret = push_tag_node(t, ns, tag, &n);

	if (!ret)
		ret = draft_begin(t, n);
	if (!ret)
		*out = n;
	return ret;
}

bool push_ns_is_repo(struct tree *t, struct node *dir)
{
	bool repo;

	pthread_mutex_lock(&t->nodes.lock);
	/* a name shown without a catalog to confirm it is taken as a repository to be */
	repo = ns_of(dir)->new_repo || ns_of(dir)->guessed;
	pthread_mutex_unlock(&t->nodes.lock);
	if (repo || !*reg_of(dir)->repo)
		return repo;
	pthread_mutex_lock(load_lock_of(dir));
	/* tags/list answers for a repository, even one with no tag left */
	repo = tree_ns_tags(t, dir) == 0;
	pthread_mutex_unlock(load_lock_of(dir));
	return repo;
}

bool push_repo_made(struct tree *t, struct node *n)
{
	bool made;

	if (n->kind != NODE_NS)
		return false;
	pthread_mutex_lock(&t->nodes.lock);
	made = ns_of(n)->new_repo && reg_of(n)->local;
	pthread_mutex_unlock(&t->nodes.lock);
	return made;
}

int push_repo_make(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	struct node *n;
	char *repo;
	int ret;

	if (!ref_valid_component(name))
		return -EINVAL;
	ret = tree_lookup(t, dir, name, &n);
	if (ret == 0 && n->kind == NODE_NS && ns_of(n)->guessed && !reg_of(n)->local) {
		/* shown only because nothing says otherwise: now it is a repository to be */
		pthread_mutex_lock(&t->nodes.lock);
		reg_of(n)->local = true;
		ns_of(n)->new_repo = true;
		ns_of(n)->guessed = false;
		tree_pin(t, n);
		pthread_mutex_unlock(&t->nodes.lock);
		*out = n;
		return 0;
	}
	if (ret == 0) {
		*out = n;
		return -EEXIST;
	}
	repo = tree_join_path(reg_of(dir)->repo, name);
	if (!repo)
		return -ENOMEM;
	n = ref_valid_repo(repo) ? tree_ns_new(t, dir, name, reg_of(dir)->site, repo) : NULL;
	ret = ref_valid_repo(repo) ? (n ? 0 : -ENOMEM) : -EINVAL;
	free(repo);
	if (ret)
		return ret;
	pthread_mutex_lock(&t->nodes.lock);
	reg_of(n)->local = true;
	ns_of(n)->new_repo = true;
	reg_of(n)->mtime = time(NULL);
	pthread_mutex_unlock(&t->nodes.lock);
	*out = node_child_get_or_add(&t->nodes, dir, n);
	if (*out == n) {
		pthread_mutex_lock(&t->nodes.lock);
		tree_pin(t, n);
		pthread_mutex_unlock(&t->nodes.lock);
	}
	return *out ? 0 : -ENOMEM;
}

/* A directory made here (n, new) joins dir, unless the name is taken meanwhile. */
static int add_local(struct tree *t, struct node *dir, struct node *n, struct node **out)
{
	int ret;

	pthread_mutex_lock(&t->nodes.lock);
	reg_of(n)->local = true;
	reg_of(n)->mtime = time(NULL);
	ret = node_child_find(dir, n->name) ? -EEXIST : node_child_add(dir, n);
	if (!ret)
		tree_pin(t, n);
	pthread_mutex_unlock(&t->nodes.lock);
	if (!ret)
		*out = n;
	return ret;
}

/* The .oci/referrers/ that dir is (or is a type directory below), else NULL. */
static struct node *referrers_of(struct node *dir)
{
	for (; dir && dir->kind == NODE_DIR && !dir->hidden; dir = dir->parent)
		;
	return dir && dir->kind == NODE_REFERRERS ? dir : NULL;
}

/* A type level below referrers/: one more directory of an artifact type. */
static int referrers_mkdir(
	struct tree *t, struct node *rn, struct node *dir, const char *name, struct node **out)
{
	struct node *n;
	int ret;

	if (t->opts.read_only)
		return -EROFS;
	if (!strcmp(name, ".") || !strcmp(name, "..") || strchr(name, '\\'))
		return -EINVAL;
	ret = tree_lookup(t, dir, name, &n);
	if (ret == 0)
		return -EEXIST;
	if (ret != -ENOENT)
		return ret;
	n = tree_node_new(t, dir, name, NODE_DIR);
	if (!n || !(reg_of(n)->repo = strdup(reg_of(rn)->repo)))
		return -ENOMEM;
	pthread_mutex_lock(&t->nodes.lock);
	reg_of(n)->immutable = false; /* an attach to a digest directory is no change to it */
	reg_of(rn)->local = true; /* kept as made until its attaches are pushed */
	tree_pin(t, rn);
	pthread_mutex_unlock(&t->nodes.lock);
	return add_local(t, dir, n, out);
}

/*
 * The first file written into dir (made by mkdir below referrers/) makes it
 * a referrer being attached: its artifact type is the path between
 * referrers/ and it, its subject the artifact that .oci/ belongs to.
 */
static int attach_begin(struct tree *t, struct node *rn, struct node **dirp)
{
	struct node *subj = rn->parent ? rn->parent->parent : NULL, *p, *dir = *dirp, *fresh;
	struct json_object *sd;
	const char *parts[64], *mt;
	char *body = NULL, type[1024];
	size_t np = 0, len = 0, o = 0;
	int ret;

	if (!subj || subj->kind != NODE_ARTIFACT || !art_of_node(rn)->ref)
		return -EROFS;
	for (p = dir->parent; p && p != rn && np < 64; p = p->parent)
		parts[np++] = p->name;
	if (np == 0)
		return -EINVAL; /* referrers/<name> has no type: make referrers/<type>/<name> */
	type[0] = '\0';
	while (np > 0 && o < sizeof(type))
		o += (size_t)snprintf(
			type + o, sizeof(type) - o, "%s%s", o ? "/" : "", parts[--np]);
	if (o >= sizeof(type))
		return -ENAMETOOLONG;
	ret = cache_get(t->cache, art_of_node(rn)->ref, MANIFEST_MAX_SIZE, &body, &len);
	free(body);
	if (ret) {
		log_err("%s@%s: the manifest to attach to is not at hand", reg_of(rn)->repo,
			art_of_node(rn)->ref);
		return -EIO;
	}
	fresh = tree_node_new(t, dir->parent, dir->name, NODE_ARTIFACT);
	if (!fresh || !(reg_of(fresh)->repo = strdup(reg_of(dir)->repo))) {
		if (fresh)
			node_discard(&t->nodes, fresh);
		return -ENOMEM;
	}
	pthread_mutex_lock(&t->nodes.lock);
	mt = push_xattr_get(subj, "user.oci.mediaType");
	sd = json_object_new_object();
	json_object_object_add(sd, "mediaType", draft_json_str(mt ? mt : MT_OCI_MANIFEST));
	json_object_object_add(sd, "digest", draft_json_str(art_of_node(rn)->ref));
	json_object_object_add(sd, "size", json_object_new_int64((int64_t)len));
	if (dir->kind == NODE_DIR && node_current(dir) == dir) {
		/* the directory becomes a referrer: a new node takes its place */
		art_of_node(fresh)->ref = strdup(dir->name);
		art_of_node(fresh)->loaded = true;
		reg_of(fresh)->immutable = false;
		reg_of(fresh)->local = true;
		reg_of(fresh)->mtime = reg_of(dir)->mtime;
		node_replace(&t->nodes, dir, fresh);
		tree_pin(t, fresh);
		fresh = NULL;
	}
	dir = node_current(dir);
	*dirp = dir;
	pthread_mutex_unlock(&t->nodes.lock);
	if (fresh)
		node_discard(&t->nodes, fresh);
	if (!art_of_node(dir)->ref) {
		json_object_put(sd);
		return -ENOMEM;
	}
	ret = draft_begin(t, dir);
	pthread_mutex_lock(&t->nodes.lock);
	if (!ret && node_draft(dir) && !node_draft(dir)->subject) {
		node_draft(dir)->subject = sd;
		sd = NULL;
		node_draft(dir)->attach_type = strdup(type);
		node_draft(dir)->referrers = rn;
		if (!node_draft(dir)->attach_type)
			ret = -ENOMEM;
	}
	pthread_mutex_unlock(&t->nodes.lock);
	json_object_put(sd);
	return ret;
}

/* rmdir of a referrer: its manifest deleted, and its entry taken out of the fallback index. */
static int detach(struct tree *t, struct node *rn, struct node *dir, struct node *c)
{
	struct registry *r = reg_of(rn)->site->reg;
	struct draft *d;
	int ret;

	ret = registry_delete_manifest(r, reg_of(c)->repo, art_of_node(c)->ref);
	if (ret && ret != -ENOENT) {
		log_err("%s/%s@%s: detach: %s", registry_host(r), reg_of(c)->repo,
			art_of_node(c)->ref, strerror(-ret));
		return push_errno(ret);
	}
	ret = registry_referrers_fallback_update(
		r, reg_of(rn)->repo, art_of_node(rn)->ref, art_of_node(c)->ref, NULL, 0);
	if (ret)
		return push_errno(ret);
	log_info("%s/%s@%s: detached from %s", registry_host(r), reg_of(c)->repo,
		art_of_node(c)->ref, art_of_node(rn)->ref);
	pthread_mutex_lock(&t->nodes.lock);
	d = draft_take(t, c); /* the removals of rm -r, staged before this rmdir */
	node_delete(&t->nodes, dir, c);
	art_of_node(rn)->loaded = false;
	pthread_mutex_unlock(&t->nodes.lock);
	draft_dispose(d);
	return 0;
}

/* rmdir below referrers/: a referrer (detach), an attach not pushed yet, or a type level. */
static int referrers_rmdir(struct tree *t, struct node *rn, struct node *dir, const char *name)
{
	struct draft *d = NULL;
	struct node *c;
	bool empty;
	int ret;

	if (t->opts.read_only)
		return -EROFS;
	ret = tree_lookup(t, dir, name, &c);
	if (ret)
		return ret;
	if (c->kind == NODE_ARTIFACT && art_of_node(c)->by_digest)
		return detach(t, rn, dir, c);
	pthread_mutex_lock(&t->nodes.lock);
	empty = c->n_children == 0 || (c->kind == NODE_ARTIFACT && !pusher_has_files(c));
	if (!reg_of(c)->local)
		ret = -EROFS;
	else if (!empty)
		ret = -ENOTEMPTY;
	else {
		if (c->kind == NODE_ARTIFACT)
			d = draft_take(t, c);
		node_delete(&t->nodes, dir, c);
	}
	pthread_mutex_unlock(&t->nodes.lock);
	draft_dispose(d);
	return ret;
}

int push_mkdir(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	struct node *art, *n, *rn;
	const char *colon;
	int ret;

	if (t->opts.read_only)
		return -EROFS;
	if (dir->kind == NODE_HOSTS)
		return -EPERM;
	rn = referrers_of(dir);
	if (rn)
		return referrers_mkdir(t, rn, dir, name, out);
	if (dir->kind == NODE_NS) {
		colon = strchr(name, ':');
		if (colon) {
			char *leaf = strndup(name, (size_t)(colon - name));
			struct node *ns;

			if (!leaf)
				return -ENOMEM;
			ret = push_repo_make(t, dir, leaf, &ns);
			free(leaf);
			if (ret == -EEXIST && ns->kind == NODE_NS)
				ret = 0;
			else if (ret == -EEXIST)
				ret = -ENOTDIR;
			return ret ? ret : make_tag(t, ns, colon + 1, out);
		}
		if (push_ns_is_repo(t, dir))
			return make_tag(t, dir, name, out);
		return push_repo_make(t, dir, name, out);
	}
	pthread_mutex_lock(&t->nodes.lock);
	ret = art_of(t, dir, &art);
	pthread_mutex_unlock(&t->nodes.lock);
	if (ret)
		return ret;
	if (dir == art && strcmp(name, ".oci") == 0)
		return -EINVAL;
	ret = draft_begin(t, art);
	if (ret)
		return ret;
	n = tree_node_new(t, dir, name, NODE_DIR);
	if (!n || !(reg_of(n)->repo = strdup(reg_of(art)->repo)))
		return -ENOMEM;
	ret = add_local(t, dir, n, out);
	if (!ret)
		draft_save(t, art); /* for a server taking over */
	return ret;
}

/* Open a writer of staged node n: counted in it and its draft. Caller holds t->nodes.lock. */
static void writer_add(struct node *art, struct node *n)
{
	file_of(n)->staged->writers++;
	if (node_draft(art))
		node_draft(art)->writers++;
}

/*
 * A writer of n is gone (closed, or its open failed after writer_add): the
 * pusher may take the draft once push_delay has passed. Caller holds t->nodes.lock.
 */
static void writer_del(struct tree *t, struct node *n)
{
	struct node *art;

	if (file_of(n)->staged && file_of(n)->staged->writers > 0)
		file_of(n)->staged->writers--;
	for (art = n->parent; art && art->kind != NODE_ARTIFACT; art = art->parent)
		;
	if (art && node_draft(art)) {
		if (node_draft(art)->writers > 0)
			node_draft(art)->writers--;
		node_draft(art)->changed_at = draft_clock();
		pthread_cond_signal(&t->push->cond);
	}
}

static int open_write(struct tree *t, struct node *n, bool trunc, int *fd, struct node **opened);

/* An open for writing of n that failed after writer_add: undone, and fd closed. */
static int open_undo(struct tree *t, struct node *n, int *fd, int err)
{
	pthread_mutex_lock(&t->nodes.lock);
	writer_del(t, n);
	pthread_mutex_unlock(&t->nodes.lock);
	close(*fd);
	*fd = -1;
	return err;
}

int push_create(
	struct tree *t, struct node *dir, const char *name, bool excl, struct node **out, int *fd)
{
	char title[4096];
	struct node *art, *n, *old, *rn;
	struct staged *s = NULL;
	int ret;

	*fd = -1;
	rn = referrers_of(dir);
	if (rn && !t->opts.read_only) {
		if (!reg_of(dir)->local || dir->kind != NODE_DIR)
			return -EROFS;
		ret = attach_begin(t, rn, &dir);
		if (ret)
			return ret;
	}
	pthread_mutex_lock(&t->nodes.lock);
	ret = art_of(t, dir, &art);
	if (!ret)
		ret = push_title_of(art, dir, name, title, sizeof(title));
	old = ret ? NULL : node_child_find(dir, name);
	pthread_mutex_unlock(&t->nodes.lock);
	if (ret)
		return ret;
	if ((dir == art && strcmp(name, ".oci") == 0) || manifest_title_check(title))
		return -EINVAL;
	if (old) {
		if (excl)
			return -EEXIST;
		if (node_is_dir(old))
			return -EISDIR;
		return open_write(t, old, true, fd, out);
	}
	ret = draft_begin(t, art);
	if (!ret)
		ret = staged_new(t, art, &s, fd);
	if (ret)
		return ret;
	n = tree_node_new(t, dir, name, NODE_STAGED);
	if (!n || !(reg_of(n)->repo = strdup(reg_of(art)->repo))) {
		ret = -ENOMEM;
		goto fail;
	}
	pthread_mutex_lock(&t->nodes.lock);
	if (node_child_find(dir, name)) {
		pthread_mutex_unlock(&t->nodes.lock);
		ret = -EEXIST;
		goto fail;
	}
	ret = node_child_add(dir, n);
	if (!ret) {
		reg_of(n)->site = reg_of(art)->site;
		reg_of(n)->local = true;
		tree_pin(t, n);
		file_of(n)->size = 0;
		reg_of(n)->mtime = time(NULL);
		file_of(n)->staged = s;
		s->changed = true;
		writer_add(art, n);
		s = NULL;
	}
	pthread_mutex_unlock(&t->nodes.lock);
	if (ret)
		goto fail;
	*out = n;
	/*
	 * Saved once it is closed: a file still being written is no use to a
	 * later run, and a server taking over finds it by its writer's handle
	 * (the journal has its staged file: push_adopt_file).
	 */
	draft_bump(t, art);
	return 0;
fail:
	if (s) {
		unlink(s->path);
		staged_free(s);
	}
	/* ours to close: the caller gets a descriptor only with success */
	close(*fd);
	*fd = -1;
	return ret;
}

/*
 * Open n for writing: a staged file is opened again; a file of the registry
 * is copied into the staging area and replaced by a staged file (a node's
 * kind never changes), which *opened is. 0 or -errno (nothing changed).
 */
static int open_write(struct tree *t, struct node *n, bool trunc, int *fd, struct node **opened)
{
	struct node *art;
	struct staged *s = NULL;
	struct node *sn = NULL;
	enum node_kind kind;
	char *path = NULL;
	int ret;

	*fd = -1;
	pthread_mutex_lock(&t->nodes.lock);
	n = node_current(n);
	*opened = n;
	ret = n->parent ? art_of(t, n->parent, &art) : -EPERM;
	kind = n->kind;
	if (!ret && kind == NODE_STAGED)
		path = strdup(file_of(n)->staged->path);
	pthread_mutex_unlock(&t->nodes.lock);
	if (ret)
		return ret;
	if (kind != NODE_STAGED && kind != NODE_BLOB)
		return kind == NODE_DATA ? -EROFS : -EISDIR;
	ret = draft_begin(t, art);
	if (ret) {
		free(path);
		return ret;
	}
	if (kind == NODE_STAGED) {
		*fd = path ? open(path, O_RDWR | O_CLOEXEC) : -1;
		ret = *fd < 0 ? (path ? -errno : -ENOMEM) : 0;
		free(path);
		if (ret)
			return ret;
		if (trunc && ftruncate(*fd, 0)) {
			ret = -errno;
			close(*fd);
			*fd = -1;
			return ret;
		}
		pthread_mutex_lock(&t->nodes.lock);
		if (trunc) {
			pthread_mutex_lock(&file_of(n)->staged->lock);
			digest_ctx_free(file_of(n)->staged->hash);
			file_of(n)->staged->hash = digest_ctx_new();
			file_of(n)->staged->hashed = file_of(n)->staged->hash ? 0 : -1;
			file_of(n)->staged->up_off =
				true; /* what went up is not the file any more */
			pthread_mutex_unlock(&file_of(n)->staged->lock);
			file_of(n)->size = 0;
			file_of(n)->staged->changed = true;
			file_of(n)->staged->dirty = true;
			file_of(n)->staged->wgen++;
		}
		writer_add(art, n);
		pthread_mutex_unlock(&t->nodes.lock);
		ret = trunc ? draft_touch(t, art) : 0;
		if (ret == -ENOSPC) {
			/* the bytes are gone already: the open stands, as an unlink does */
			log_warn("%s:%s: %s truncated; the staging record waits for disk space",
				reg_of(art)->repo, art_of_node(art)->ref, n->name);
			ret = 0;
		}
		if (ret)
			open_undo(t, n, fd, ret);
		return ret;
	}
	/* A file of the registry: its bytes (unless truncated) become a staged file. */
	ret = staged_new(t, art, &s, fd);
	if (ret)
		return ret;
	if (!trunc)
		ret = staged_copy_up(t, n, s, *fd);
	if (ret)
		goto out_staged;
	sn = tree_node_new(t, n->parent, n->name, NODE_STAGED);
	if (!sn || !(reg_of(sn)->repo = strdup(reg_of(n)->repo)) ||
		(file_of(n)->digest && !(file_of(sn)->digest = strdup(file_of(n)->digest)))) {
		ret = -ENOMEM;
		goto out_node;
	}
	pthread_mutex_lock(&t->nodes.lock);
	ret = tree_xattrs_copy(
		reg_of(n)->xattrs, reg_of(n)->n_xattrs, &reg_of(sn)->xattrs, &reg_of(sn)->n_xattrs);
	if (ret || node_current(n) != n || n->orphan) {
		/* another writer got there first: use its file */
		pthread_mutex_unlock(&t->nodes.lock);
		if (ret)
			goto out_node;
		node_discard(&t->nodes, sn);
		close(*fd);
		unlink(s->path);
		staged_free(s);
		return open_write(t, n, trunc, fd, opened);
	}
	reg_of(sn)->mtime = reg_of(n)->mtime;
	file_of(sn)->size = trunc ? 0 : file_of(n)->size;
	file_of(sn)->staged = s;
	/* the registry's blob stands for it until it is closed (cut: written) */
	s->up_size = file_of(sn)->digest ? file_of(n)->size : -1;
	s->dirty = trunc;
	if (trunc)
		s->changed = true;
	reg_of(sn)->local = true;
	node_replace(&t->nodes, n, sn);
	tree_pin(t, sn);
	writer_add(art, sn);
	pthread_mutex_unlock(&t->nodes.lock);
	*opened = sn;
	ret = draft_record(t, art);
	if (!ret) {
		draft_bump(t, art);
		return 0;
	}
	/*
	 * The draft cannot be recorded (a full disk): the open fails and, unless
	 * another writer has the staged copy already, changes nothing: the file
	 * of the registry takes its place back. Whatever fails after writer_add
	 * undoes it, else the tag is never pushed by itself; in one locked step,
	 * so the pusher never sees the copy unheld.
	 */
	pthread_mutex_lock(&t->nodes.lock);
	writer_del(t, sn);
	if (s->writers == 0 && node_current(n) == sn && !sn->orphan) {
		reg_of(sn)->local = false;
		tree_pin(t, sn);
		node_replace(&t->nodes, sn, n);
		*opened = n;
	} else {
		s = NULL;
	}
	pthread_mutex_unlock(&t->nodes.lock);
	close(*fd);
	*fd = -1;
	if (s) {
		unlink(s->path);
		/* sn goes with its staged file once unused */
	}
	return ret;
out_node:
	if (sn)
		node_discard(&t->nodes, sn);
out_staged:
	close(*fd);
	*fd = -1;
	unlink(s->path);
	staged_free(s);
	return ret;
}

int push_open(struct tree *t, struct node *n, int flags, struct node_file *f)
{
	int ret = open_write(t, n, (flags & O_TRUNC) != 0, &f->fd, &f->node);

	f->writer = ret == 0;
	return ret;
}

int push_open_read(struct tree *t, struct node *n, struct node_file *f)
{
	char *path;

	pthread_mutex_lock(&t->nodes.lock);
	path = file_of(n)->staged ? strdup(file_of(n)->staged->path) : NULL;
	pthread_mutex_unlock(&t->nodes.lock);
	if (!path)
		return -ENOMEM;
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	return f->fd < 0 ? -errno : 0;
}

void push_note_reader(struct tree *t, int delta)
{
	if (t->push)
		__atomic_add_fetch(&t->push->readers, delta, __ATOMIC_RELAXED);
}

ssize_t push_write(struct tree *t, struct node *n, int fd, const char *buf, size_t len, off_t off)
{
	struct staged *s = file_of(n)->staged;
	ssize_t w = pwrite(fd, buf, len, off);

	if (w < 0)
		return -errno;
	pthread_mutex_lock(&s->lock);
	if (s->hashed >= 0 && off == s->hashed) {
		digest_ctx_update(s->hash, buf, (size_t)w);
		s->hashed += w;
		staged_stream_kick(t, s);
	} else {
		s->hashed = -1;
	}
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_lock(&t->nodes.lock);
	if (off + w > file_of(n)->size)
		file_of(n)->size = off + w;
	s->changed = true;
	s->dirty = true;
	s->wgen++;
	reg_of(n)->mtime = time(NULL);
	pthread_mutex_unlock(&t->nodes.lock);
	return w;
}

int push_flush(struct tree *t, struct node *n)
{
	char digest[DIGEST_STR_LEN + 1], *path, *dg, *loc;
	struct node *art;
	struct staged *s;
	int64_t size, sent;
	unsigned wgen;
	bool whole;
	int fd, ret;

	pthread_mutex_lock(&t->nodes.lock);
	if (n->kind != NODE_STAGED || !n->parent || art_of(t, n->parent, &art)) {
		pthread_mutex_unlock(&t->nodes.lock);
		return 0;
	}
	s = file_of(n)->staged;
	/*
	 * Unchanged since its upload, or empty: closed as it is. An empty file
	 * waits for the push (which hashes it): a shell's "> file" closes the
	 * truncated file once before writing through a copy of its descriptor.
	 */
	if (!s->changed || file_of(n)->size == 0) {
		bool changed = s->changed;

		staged_seal(s, s->wgen, NULL);
		pthread_mutex_unlock(&t->nodes.lock);
		/* an empty file made or cut: now part of the tag, for a later server */
		return changed ? draft_touch(t, art) : 0;
	}
	size = file_of(n)->size;
	wgen = s->wgen;
	path = strdup(s->path);
	pthread_mutex_unlock(&t->nodes.lock);
	if (!path)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0)
		return -errno;
	pthread_mutex_lock(&s->flush_lock);
	pthread_mutex_lock(&s->lock);
	while (s->up_busy)
		pthread_cond_wait(&s->up_cond, &s->lock);
	loc = s->up_location;
	sent = s->up_sent;
	s->up_location = NULL;
	s->up_sent = 0;
	s->up_off = false;
	whole = s->hashed == size;
	if (whole) {
		struct digest_ctx *c = digest_ctx_dup(s->hash);

		ret = c ? 0 : -ENOMEM;
		if (c) {
			digest_ctx_final(c, digest);
			digest_ctx_free(c);
		}
	} else {
		ret = digest_fd(fd, -1, digest, &size);
	}
	pthread_mutex_unlock(&s->lock);
	if (!ret) {
		/* the file as closed, whatever becomes of its upload; unless written meanwhile */
		dg = strdup(digest);
		pthread_mutex_lock(&t->nodes.lock);
		if (dg)
			staged_seal(s, wgen, dg);
		pthread_mutex_unlock(&t->nodes.lock);
	}
	if (!ret && loc && whole && sent <= size) {
		/* most of it went up while it was written: the rest, and the digest */
		ret = registry_upload_finish(reg_of(n)->site->reg, reg_of(art)->repo, &loc, digest,
			fd, sent, size - sent);
	} else {
		if (loc)
			registry_upload_cancel(reg_of(n)->site->reg, reg_of(art)->repo, loc);
		if (!ret)
			ret = staged_upload(
				t, reg_of(n)->site->reg, reg_of(art)->repo, digest, fd, size);
	}
	free(loc);
	pthread_mutex_unlock(&s->flush_lock);
	close(fd);
	if (ret)
		return push_errno(ret);
	dg = strdup(digest);
	pthread_mutex_lock(&t->nodes.lock);
	/* unless written meanwhile: the blob up stands for it, also once it is opened again */
	if (dg && s->wgen == wgen) {
		free(file_of(n)->digest);
		file_of(n)->digest = dg;
		dg = NULL;
		s->up_size = size;
		s->changed = false;
	}
	pthread_mutex_unlock(&t->nodes.lock);
	free(dg);
	return draft_touch(t, art);
}

void push_release(struct tree *t, struct node *n)
{
	pthread_mutex_lock(&t->nodes.lock);
	writer_del(t, n);
	pthread_mutex_unlock(&t->nodes.lock);
}

int push_truncate(struct tree *t, struct node *n, off_t size)
{
	char digest[DIGEST_STR_LEN + 1], *path;
	struct node *art;
	struct staged *s;
	unsigned wgen;
	bool alone;
	int fd, ret;

	if (n->kind == NODE_BLOB) {
		struct node *sn;

		/* a file of the registry: replaced by a staged copy, cut to size */
		ret = open_write(t, n, size == 0, &fd, &sn);
		if (ret)
			return ret;
		ret = ftruncate(fd, size) ? -errno : 0;
		close(fd);
		push_release(t, sn);
		if (ret)
			return ret;
		n = sn;
	}
	pthread_mutex_lock(&t->nodes.lock);
	ret = n->kind != NODE_STAGED ? -EISDIR : art_of(t, n->parent, &art);
	path = ret ? NULL : strdup(file_of(n)->staged->path);
	pthread_mutex_unlock(&t->nodes.lock);
	if (ret)
		return ret;
	if (!path)
		return -ENOMEM;
	ret = truncate(path, size) ? -errno : 0;
	if (ret) {
		free(path);
		return ret;
	}
	s = file_of(n)->staged;
	pthread_mutex_lock(&s->lock);
	if (s->hashed > size)
		s->hashed = -1;
	if (s->up_sent > size)
		s->up_off = true;
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_lock(&t->nodes.lock);
	file_of(n)->size = size;
	s->changed = true;
	s->dirty = true;
	wgen = ++s->wgen;
	alone = s->writers == 0;
	reg_of(n)->mtime = time(NULL);
	pthread_mutex_unlock(&t->nodes.lock);
	/* with no writer at it, the truncate is the whole change: the file as closed now */
	fd = alone ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	free(path);
	if (fd >= 0) {
		char *dg = digest_fd(fd, -1, digest, NULL) == 0 ? strdup(digest) : NULL;

		close(fd);
		pthread_mutex_lock(&t->nodes.lock);
		if (dg)
			staged_seal(s, wgen, dg);
		pthread_mutex_unlock(&t->nodes.lock);
	}
	return draft_touch(t, art);
}

/* The child name of dir, inside a tag where changes may be made (*art). 0 or -errno. */
static int child_in_art(
	struct tree *t, struct node *dir, const char *name, struct node **art, struct node **c)
{
	int ret;

	pthread_mutex_lock(&t->nodes.lock);
	ret = art_of(t, dir, art);
	*c = ret ? NULL : node_child_find(dir, name);
	pthread_mutex_unlock(&t->nodes.lock);
	return ret ? ret : *c ? 0 : -ENOENT;
}

/*
 * The .oci/referrers/ above a pushed referrer that dir is in (or is), else
 * NULL: its files can be removed, as a tag's can (rm -r before the rmdir
 * that detaches it). Caller holds t->nodes.lock.
 */
static struct node *pushed_referrer(struct node *dir, struct node **art)
{
	struct node *n;

	for (n = dir; n && n->kind == NODE_DIR && !n->hidden; n = n->parent)
		;
	if (!n || n->kind != NODE_ARTIFACT || !art_of_node(n)->by_digest ||
		art_of_node(n)->rootfs_digest || !n->parent)
		return NULL;
	*art = n;
	return referrers_of(n->parent);
}

/*
 * child_in_art for a removal: also in a pushed referrer, whose draft then
 * becomes a new version of it with the same subject, replacing it once
 * pushed. *rn is its .oci/referrers/, or NULL in a tag. Caller holds no lock.
 */
static int removal_in_art(struct tree *t, struct node *dir, const char *name, struct node **art,
	struct node **c, struct node **rn)
{
	struct json_object *subj;
	struct draft *d;
	int ret;

	*rn = NULL;
	ret = child_in_art(t, dir, name, art, c);
	if (ret != -EROFS || t->opts.read_only)
		return ret;
	pthread_mutex_lock(&t->nodes.lock);
	*rn = pushed_referrer(dir, art);
	*c = *rn ? node_child_find(dir, name) : NULL;
	pthread_mutex_unlock(&t->nodes.lock);
	if (!*rn)
		return -EROFS;
	if (!*c)
		return -ENOENT;
	ret = draft_begin(t, *art);
	if (ret)
		return ret;
	pthread_mutex_lock(&t->nodes.lock);
	d = node_draft(*art);
	if (d && !d->subject) {
		if (d->base && json_object_object_get_ex(d->base, "subject", &subj) &&
			(d->replaces = strdup(art_of_node(*art)->ref))) {
			d->subject = json_object_get(subj);
			d->referrers = *rn;
			reg_of(*rn)->local = true; /* no reload drops it while it is staged */
			tree_pin(t, *rn);
		} else {
			ret = d->base ? -EROFS : -EIO;
		}
	}
	pthread_mutex_unlock(&t->nodes.lock);
	return ret;
}

/* c leaves dir; a staged file's bytes go (open descriptors keep them). Caller holds t->nodes.lock. */
static void file_remove(struct tree *t, struct node *dir, struct node *c)
{
	node_delete(&t->nodes, dir, c);
	if (c->kind == NODE_STAGED && file_of(c)->staged->path)
		unlink(file_of(c)->staged->path);
}

int push_unlink(struct tree *t, struct node *dir, const char *name)
{
	struct node *art, *c, *rn;
	int ret;

	ret = removal_in_art(t, dir, name, &art, &c, &rn);
	if (ret)
		return ret;
	if (node_is_dir(c))
		return -EISDIR;
	ret = draft_begin(t, art);
	if (ret)
		return ret;
	pthread_mutex_lock(&t->nodes.lock);
	file_remove(t, dir, c);
	pthread_mutex_unlock(&t->nodes.lock);
	ret = draft_touch(t, art);
	if (ret == -ENOSPC) {
		/* the file is gone, and its space with it: its record is written at the push */
		log_warn("%s:%s: %s removed; the staging record waits for disk space",
			reg_of(art)->repo, art_of_node(art)->ref, name);
		ret = 0;
	}
	return ret;
}

/*
 * Delete the tag art from the registry: by tag where the registry allows it,
 * else by digest when no other tag names the same manifest, else -EBUSY.
 */
static int delete_tag(struct tree *t, struct node *art)
{
	struct registry *r = reg_of(art)->site->reg;
	struct strlist tags = { NULL, 0 };
	char *body = NULL, *ct = NULL, *digest = NULL, label[600];
	size_t len, i;
	int ret;

	snprintf(label, sizeof(label), "%s/%s:%s", registry_host(r), reg_of(art)->repo,
		art_of_node(art)->ref);
	ret = registry_delete_manifest(r, reg_of(art)->repo, art_of_node(art)->ref);
	if (ret == 0 || ret == -ENOENT || ret == -EACCES)
		goto out;
	/* A registry that deletes manifests by digest only (distribution 2). */
	ret = registry_get_manifest(
		r, reg_of(art)->repo, art_of_node(art)->ref, &body, &len, &ct, &digest);
	if (!ret)
		ret = registry_tags(r, reg_of(art)->repo, &tags);
	for (i = 0; !ret && i < tags.n; i++) {
		char *b2 = NULL, *c2 = NULL, *d2 = NULL;
		size_t l2;

		if (strcmp(tags.v[i], art_of_node(art)->ref) == 0)
			continue;
		if (registry_get_manifest(r, reg_of(art)->repo, tags.v[i], &b2, &l2, &c2, &d2) ==
				0 &&
			strcmp(d2, digest) == 0) {
			log_err("%s: tag %s names the same manifest (%s) and this registry deletes "
				"by digest only: not deleted",
				label, tags.v[i], digest);
			ret = -EBUSY;
		}
		free(b2);
		free(c2);
		free(d2);
	}
	if (!ret)
		ret = registry_delete_manifest(r, reg_of(art)->repo, digest);
out:
	if (ret && ret != -EBUSY)
		log_err("%s: delete: %s", label, strerror(-ret));
	else if (!ret)
		log_info("%s: deleted", label);
	if (!ret || ret == -ENOENT)
		tree_tag_forget(reg_of(art)->site, reg_of(art)->repo, art_of_node(art)->ref);
	strlist_release(&tags);
	free(body);
	free(ct);
	free(digest);
	return ret;
}

int push_rmdir(struct tree *t, struct node *dir, const char *name)
{
	struct node *c, *art, *rn;
	struct draft *d;
	bool local;
	int ret;

	if (t->opts.read_only)
		return -EROFS;
	if (referrers_of(dir))
		return referrers_rmdir(t, referrers_of(dir), dir, name);
	if (dir->kind == NODE_NS || dir->kind == NODE_HOSTS) {
		ret = tree_lookup(t, dir, name, &c);
		if (ret)
			return ret;
	} else {
		ret = removal_in_art(t, dir, name, &art, &c, &rn);
		if (ret)
			return ret;
	}
	switch (c->kind) {
	case NODE_DIR:
		pthread_mutex_lock(&t->nodes.lock);
		ret = c->n_children ? -ENOTEMPTY : 0;
		if (!ret)
			node_delete(&t->nodes, dir, c);
		pthread_mutex_unlock(&t->nodes.lock);
		return ret;
	case NODE_ARTIFACT:
		if (art_of_node(c)->by_digest || dir->kind != NODE_NS)
			return -EROFS;
		pthread_mutex_lock(&t->nodes.lock);
		local = reg_of(c)->local;
		pthread_mutex_unlock(&t->nodes.lock);
		ret = local ? 0 : delete_tag(t, c);
		if (ret)
			return push_errno(ret);
		pthread_mutex_lock(&t->nodes.lock);
		d = draft_take(t, c);
		node_delete(&t->nodes, dir, c);
		__atomic_store_n(&ns_of(dir)->tags_at, 0, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&t->nodes.lock);
		draft_dispose(d);
		return 0;
	case NODE_NS:
		pthread_mutex_lock(&t->nodes.lock);
		ret = c->n_children ? -ENOTEMPTY : reg_of(c)->local ? 0 : -EPERM;
		if (!ret)
			node_delete(&t->nodes, dir, c);
		pthread_mutex_unlock(&t->nodes.lock);
		return ret;
	default:
		return -ENOTDIR;
	}
}

int push_rename(struct tree *t, struct node *dir, const char *name, struct node *newdir,
	const char *newname, unsigned flags)
{
	struct node *a1, *a2, *c, *target, *p;
	char title[4096];
	int ret;

	if (flags & ~1u) /* RENAME_NOREPLACE only */
		return -EINVAL;
	pthread_mutex_lock(&t->nodes.lock);
	ret = art_of(t, dir, &a1);
	if (!ret)
		ret = art_of(t, newdir, &a2);
	c = ret ? NULL : node_child_find(dir, name);
	if (!ret && (!c))
		ret = -ENOENT;
	if (!ret && a1 != a2)
		ret = -EXDEV; /* mv copies, then removes */
	if (!ret)
		ret = push_title_of(a2, newdir, newname, title, sizeof(title));
	pthread_mutex_unlock(&t->nodes.lock);
	if (ret)
		return ret;
	if ((newdir == a2 && strcmp(newname, ".oci") == 0) || manifest_title_check(title))
		return -EINVAL;
	ret = draft_begin(t, a1);
	if (ret)
		return ret;
	pthread_mutex_lock(&t->nodes.lock);
	for (p = newdir; p && p != a2; p = p->parent)
		if (p == c)
			ret = -EINVAL; /* into itself */
	target = ret ? NULL : node_child_find(newdir, newname);
	if (target == c)
		goto out;
	if (target) {
		if (flags & 1u)
			ret = -EEXIST;
		else if (node_is_dir(target) && !node_is_dir(c))
			ret = -EISDIR;
		else if (!node_is_dir(target) && node_is_dir(c))
			ret = -ENOTDIR;
		else if (target->n_children)
			ret = -ENOTEMPTY;
	}
	if (!ret) {
		char *nn = strdup(newname);

		if (!nn) {
			ret = -ENOMEM;
			goto out;
		}
		if (target)
			file_remove(t, newdir, target);
		node_child_remove(dir, c);
		free(c->name);
		c->name = nn;
		ret = node_move(&t->nodes, c, newdir);
	}
out:
	pthread_mutex_unlock(&t->nodes.lock);
	return ret ? ret : draft_touch(t, a1);
}

int push_fsyncdir(struct tree *t, struct node *dir)
{
	struct node *art;
	bool drafted;
	int ret;

	pthread_mutex_lock(&t->nodes.lock);
	ret = art_of(t, dir, &art);
	/* a pushed referrer with files removed: its new version */
	if (ret == -EROFS && !t->opts.read_only && pushed_referrer(dir, &art))
		ret = 0;
	drafted = !ret && node_draft(art);
	pthread_mutex_unlock(&t->nodes.lock);
	if (!drafted)
		return 0;
	return push_errno(pusher_push(t, art, true));
}

/* Which xattrs a change may set: annotations, and types where they belong. */
static int xattr_settable(const struct node *n, const struct node *art, const char *name)
{
	if (strncmp(name, XATTR_ANN, strlen(XATTR_ANN)) == 0 && name[strlen(XATTR_ANN)])
		return 0;
	if (strcmp(name, "user.oci.artifactType") == 0)
		return n == art ? 0 : -ENOTSUP;
	if (strcmp(name, "user.oci.mediaType") == 0)
		return n != art && !node_is_dir(n) ? 0 : -ENOTSUP;
	return -ENOTSUP;
}

/* Before an xattr of n changes: its tag (*art), with a draft. 0 or -errno. */
static int xattr_change(struct tree *t, struct node *n, const char *name, struct node **art)
{
	int ret;

	pthread_mutex_lock(&t->nodes.lock);
	ret = art_of(t, n, art);
	if (!ret)
		ret = xattr_settable(n, *art, name);
	pthread_mutex_unlock(&t->nodes.lock);
	return ret ? ret : draft_begin(t, *art);
}

int push_setxattr(struct tree *t, struct node *n, const char *name, const char *value, size_t len)
{
	struct node *art;
	char *v;
	int ret;

	if (t->opts.read_only)
		return -EROFS;
	/* cp -a of files from one tag to another brings their digests along: moot. */
	if (strcmp(name, "user.oci.digest") == 0)
		return 0;
	if (memchr(value, '\0', len))
		return -EINVAL;
	ret = xattr_change(t, n, name, &art);
	if (ret)
		return ret;
	v = strndup(value, len);
	if (!v)
		return -ENOMEM;
	pthread_mutex_lock(&t->nodes.lock);
	ret = xattr_set(n, name, v);
	if (!ret && n == art && strcmp(name, "user.oci.artifactType") == 0 && node_draft(art))
		node_draft(art)->type_set = true;
	pthread_mutex_unlock(&t->nodes.lock);
	free(v);
	return ret ? ret : draft_touch(t, art);
}

int push_removexattr(struct tree *t, struct node *n, const char *name)
{
	struct node *art;
	size_t i;
	int ret;

	if (t->opts.read_only)
		return -EROFS;
	ret = xattr_change(t, n, name, &art);
	if (ret)
		return ret;
	pthread_mutex_lock(&t->nodes.lock);
	ret = -ENODATA;
	for (i = 0; i < reg_of(n)->n_xattrs; i++)
		if (strcmp(reg_of(n)->xattrs[i].name, name) == 0) {
			free(reg_of(n)->xattrs[i].name);
			free(reg_of(n)->xattrs[i].value);
			reg_of(n)->xattrs[i] = reg_of(n)->xattrs[--reg_of(n)->n_xattrs];
			ret = 0;
			break;
		}
	pthread_mutex_unlock(&t->nodes.lock);
	return ret ? ret : draft_touch(t, art);
}

int push_symlink(
	struct tree *t, struct node *dir, const char *name, const char *target, struct node **out)
{
	char *digest = NULL, *mt = NULL, *body = NULL;
	const char *type;
	struct node *src, *n, *old;
	struct stat st;
	size_t len = 0;
	int ret;

	if (t->opts.read_only)
		return -EROFS;
	if (dir->kind != NODE_NS || !push_ns_is_repo(t, dir))
		return -EPERM; /* files of an artifact are pushed, not linked */
	if (!ref_valid_tag(name) || strchr(target, '/'))
		return -EINVAL; /* a tag of this repository, to a tag or digest of it */
	ret = tree_lookup(t, dir, target, &src);
	if (!ret && src->kind != NODE_ARTIFACT)
		ret = -EINVAL;
	if (!ret)
		ret = tree_getattr(t, src, &st); /* its manifest, resolved now */
	if (ret)
		return ret;
	pthread_mutex_lock(&t->nodes.lock);
	if (node_draft(src) || reg_of(src)->local)
		ret = -EBUSY; /* not pushed yet: nothing to tag */
	else if (!art_of_node(src)->digest || !(digest = strdup(art_of_node(src)->digest)) ||
		 !(mt = strdup((type = push_xattr_get(src, "user.oci.mediaType"))
				       ? type
				       : MT_OCI_MANIFEST)))
		ret = -ENOMEM;
	pthread_mutex_unlock(&t->nodes.lock);
	if (!ret)
		ret = cache_get(t->cache, digest, MANIFEST_MAX_SIZE, &body, &len);
	if (!ret)
		ret = registry_put_manifest(
			reg_of(dir)->site->reg, reg_of(dir)->repo, name, mt, body, len, NULL);
	if (ret) {
		log_err("%s/%s: tagging %s as %s failed: %s", registry_host(reg_of(dir)->site->reg),
			reg_of(dir)->repo, target, name, strerror(-ret));
		ret = push_errno(ret);
		goto out;
	}
	log_info("%s/%s: %s tagged %s (%s)", registry_host(reg_of(dir)->site->reg),
		reg_of(dir)->repo, target, name, digest);
	/* the listing and any stale node of that name ask the registry again */
	pthread_mutex_lock(load_lock_of(dir));
	__atomic_store_n(&ns_of(dir)->tags_at, 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(load_lock_of(dir));
	pthread_mutex_lock(&t->nodes.lock);
	old = node_child_find(dir, name);
	if (old && old->kind == NODE_ARTIFACT)
		art_of_node(old)->resolved_at = 0;
	pthread_mutex_unlock(&t->nodes.lock);
	/*
	 * symlink(2) must answer with a link: a passing one, never cached
	 * (local), after which the name looks up as the tag's directory.
	 */
	n = tree_node_new(t, dir, name, NODE_LINK);
	if (!n || !(file_of(n)->data = strdup(target)) ||
		!(reg_of(n)->repo = strdup(reg_of(dir)->repo))) {
		ret = -ENOMEM;
		goto out;
	}
	reg_of(n)->local = true;
	n->orphan = true; /* answers symlink(2) only: the name is the tag's */
	*out = n;
out:
	free(digest);
	free(mt);
	free(body);
	return ret;
}

char *push_staged_path(struct tree *t, struct node *n)
{
	char *path = NULL;

	pthread_mutex_lock(&t->nodes.lock);
	if (n->kind == NODE_STAGED && file_of(n)->staged && file_of(n)->staged->path)
		path = strdup(file_of(n)->staged->path);
	pthread_mutex_unlock(&t->nodes.lock);
	return path;
}

void push_reopened(struct tree *t, struct node *n)
{
	pthread_mutex_lock(&t->nodes.lock);
	if (n->kind == NODE_STAGED && file_of(n)->staged) {
		/* written after its draft was, for all this server knows: hashed when sealed */
		file_of(n)->staged->changed = true;
		file_of(n)->staged->dirty = true;
	}
	pthread_mutex_unlock(&t->nodes.lock);
}

int push_adopt_file(
	struct tree *t, struct node *dir, const char *name, const char *path, struct node **out)
{
	char title[PATH_MAX];
	struct staged *st = NULL;
	struct node *art, *n;
	const char *f = NULL;
	struct stat sb;
	size_t len;
	int ret;

	pthread_mutex_lock(&t->nodes.lock);
	ret = art_of(t, dir, &art);
	if (!ret && !(node_draft(art) && node_draft(art)->adopted))
		ret = -ESTALE;
	if (!ret) {
		/* nothing but a file of the draft's own directory: <dir>/f<n> */
		len = strlen(node_draft(art)->dir);
		f = path + len;
		if (strncmp(path, node_draft(art)->dir, len) != 0 || f[0] != '/' || f[1] != 'f' ||
			!f[2] || strspn(f + 2, "0123456789") != strlen(f + 2))
			ret = -ESTALE;
	}
	if (!ret)
		ret = push_title_of(art, dir, name, title, sizeof(title));
	if (!ret && node_child_find(dir, name))
		ret = -EEXIST;
	pthread_mutex_unlock(&t->nodes.lock);
	if (!ret && manifest_title_check(title))
		ret = -EINVAL;
	if (ret)
		return ret;
	st = staged_adopt(art, path);
	if (!st)
		return -ENOMEM;
	if (lstat(path, &sb) || !S_ISREG(sb.st_mode)) {
		staged_free(st);
		return -ESTALE;
	}
	n = tree_node_new(t, dir, name, NODE_STAGED);
	if (!n || !(reg_of(n)->repo = strdup(reg_of(art)->repo))) {
		staged_free(st);
		if (n)
			node_discard(&t->nodes, n);
		return -ENOMEM;
	}
	pthread_mutex_lock(&t->nodes.lock);
	ret = node_child_find(dir, name) ? -EEXIST : node_child_add(dir, n);
	if (!ret) {
		reg_of(n)->site = reg_of(art)->site;
		reg_of(n)->local = true;
		tree_pin(t, n);
		file_of(n)->size = sb.st_size;
		reg_of(n)->mtime = sb.st_mtime;
		/* never closed: part of the tag once it is */
		st->changed = true;
		st->dirty = true;
		file_of(n)->staged = st;
		st = NULL;
	}
	pthread_mutex_unlock(&t->nodes.lock);
	if (ret) {
		staged_free(st);
		node_discard(&t->nodes, n);
		return ret;
	}
	log_info("%s:%s: %s, being written when the server before died, is taken over",
		reg_of(art)->repo, art_of_node(art)->ref, title);
	draft_bump(t, art);
	*out = n;
	return 0;
}

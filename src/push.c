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

const char *push_xattr_get(const struct node *n, const char *name)
{
	size_t i;

	for (i = 0; i < n->n_xattrs; i++)
		if (strcmp(n->xattrs[i].name, name) == 0)
			return n->xattrs[i].value;
	return NULL;
}

/*
 * The tag directory that n is in (or is), when a change there may be
 * staged: -EROFS on a read-only mount, in a digest directory, under .oci/ or
 * in an index; -EPERM outside any tag. Caller holds t->lock.
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
	if (n->immutable || n->by_digest)
		return -EROFS;
	/* an index's platform child, or a referrer (but one being attached) */
	if (n->parent && n->parent->kind != NODE_NS && !(n->draft && n->draft->subject))
		return -EROFS;
	if (n->rootfs_digest) {
		log_warn("%s:%s: an image's root filesystem cannot be changed", n->repo, n->ref);
		return -EROFS;
	}
	if (manifest_type_is_index(push_xattr_get(n, "user.oci.mediaType"))) {
		log_warn("%s:%s: an index cannot be changed file by file", n->repo, n->ref);
		return -EROFS;
	}
	*art = n;
	return 0;
}

int push_title_of(
	const struct node *art, const struct node *n, const char *leaf, char *out, size_t size)
{
	const struct node *parts[64];
	size_t np = 0, o = 0;

	for (; n && n != art; n = n->parent) {
		if (np == 64)
			return -ENAMETOOLONG;
		parts[np++] = n;
	}
	out[0] = '\0';
	while (np > 0) {
		int w = snprintf(out + o, size - o, "%s/", parts[--np]->name);

		if (w < 0 || (size_t)w >= size - o)
			return -ENAMETOOLONG;
		o += (size_t)w;
	}
	if (leaf) {
		if ((size_t)snprintf(out + o, size - o, "%s", leaf) >= size - o)
			return -ENAMETOOLONG;
	} else if (o > 0) {
		out[o - 1] = '\0';
	}
	return 0;
}

/* Set (or replace) an xattr of n. Caller holds t->lock. */
static int xattr_set(struct node *n, const char *name, const char *value)
{
	size_t i;
	char *v;

	for (i = 0; i < n->n_xattrs; i++)
		if (strcmp(n->xattrs[i].name, name) == 0) {
			v = strdup(value);
			if (!v)
				return -ENOMEM;
			free(n->xattrs[i].value);
			n->xattrs[i].value = v;
			return 0;
		}
	return tree_xattr_add(&n->xattrs, &n->n_xattrs, name, value);
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

/* A tag called tag in the repository ns, new: -EEXIST when the registry has it. */
static int make_tag(struct tree *t, struct node *ns, const char *tag, struct node **out)
{
	struct node *n;
	int ret;

	if (!ref_valid_tag(tag))
		return -EINVAL;
	ret = tree_lookup(t, ns, tag, &n);
	if (ret == 0 && !(n->kind == NODE_NS && n->guessed && !n->local))
		return -EEXIST;
	if (ret && ret != -ENOENT)
		return ret;
	if (ret == 0) {
		/* a name only guessed to be a namespace: the tag takes its place */
		pthread_mutex_lock(&t->lock);
		node_delete(t, ns, n);
		pthread_mutex_unlock(&t->lock);
	}
	n = tree_artifact_new(t, ns, tag, ns->site, ns->repo, tag);
	if (!n)
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	n->local = true;
	n->loaded = true;
	n->mtime = time(NULL);
	pthread_mutex_unlock(&t->lock);
	if (node_child_get_or_add(t, ns, n) != n)
		return -EEXIST;
	pthread_mutex_lock(&t->lock);
	node_keep(t, n);
	pthread_mutex_unlock(&t->lock);
	ret = draft_begin(t, n);
	if (ret)
		return ret;
	*out = n;
	return 0;
}

/* Whether mkdir in the NS dir makes a tag (dir is a repository) rather than a repository. */
static bool ns_is_repo(struct tree *t, struct node *dir)
{
	bool repo;

	pthread_mutex_lock(&t->lock);
	/* a name shown without a catalog to confirm it is taken as a repository to be */
	repo = dir->new_repo || dir->guessed;
	pthread_mutex_unlock(&t->lock);
	if (repo || !*dir->repo)
		return repo;
	pthread_mutex_lock(&dir->load_lock);
	/* tags/list answers for a repository, even one with no tag left */
	repo = tree_ns_tags(t, dir) == 0;
	pthread_mutex_unlock(&dir->load_lock);
	return repo;
}

/* A new repository name in dir (made here, pushed with its first tag). */
static int make_repo(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	struct node *n;
	char *repo;
	int ret;

	if (!ref_valid_component(name))
		return -EINVAL;
	ret = tree_lookup(t, dir, name, &n);
	if (ret == 0 && n->kind == NODE_NS && n->guessed && !n->local) {
		/* shown only because nothing says otherwise: now it is a repository to be */
		pthread_mutex_lock(&t->lock);
		n->local = true;
		n->new_repo = true;
		n->guessed = false;
		node_keep(t, n);
		pthread_mutex_unlock(&t->lock);
		*out = n;
		return 0;
	}
	if (ret == 0) {
		*out = n;
		return -EEXIST;
	}
	repo = tree_join_path(dir->repo, name);
	if (!repo)
		return -ENOMEM;
	n = ref_valid_repo(repo) ? tree_ns_new(t, dir, name, dir->site, repo) : NULL;
	ret = ref_valid_repo(repo) ? (n ? 0 : -ENOMEM) : -EINVAL;
	free(repo);
	if (ret)
		return ret;
	pthread_mutex_lock(&t->lock);
	n->local = true;
	n->new_repo = true;
	n->mtime = time(NULL);
	pthread_mutex_unlock(&t->lock);
	*out = node_child_get_or_add(t, dir, n);
	if (*out == n) {
		pthread_mutex_lock(&t->lock);
		node_keep(t, n);
		pthread_mutex_unlock(&t->lock);
	}
	return *out ? 0 : -ENOMEM;
}

/* A directory made here (n, new) joins dir, unless the name is taken meanwhile. */
static int add_local(struct tree *t, struct node *dir, struct node *n, struct node **out)
{
	int ret;

	pthread_mutex_lock(&t->lock);
	n->local = true;
	n->mtime = time(NULL);
	ret = node_child_find(dir, n->name) ? -EEXIST : node_child_add(dir, n);
	if (!ret)
		node_keep(t, n);
	pthread_mutex_unlock(&t->lock);
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
	n = node_new(t, dir, name, NODE_DIR);
	if (!n || !(n->repo = strdup(rn->repo)))
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	n->immutable = false; /* an attach to a digest directory is no change to it */
	rn->local = true; /* kept as made until its attaches are pushed */
	node_keep(t, rn);
	pthread_mutex_unlock(&t->lock);
	return add_local(t, dir, n, out);
}

/*
 * The first file written into dir (made by mkdir below referrers/) makes it
 * a referrer being attached: its artifact type is the path between
 * referrers/ and it, its subject the artifact that .oci/ belongs to.
 */
static int attach_begin(struct tree *t, struct node *rn, struct node *dir)
{
	struct node *subj = rn->parent ? rn->parent->parent : NULL, *p;
	struct json_object *sd;
	const char *parts[64], *mt;
	char *body = NULL, type[1024];
	size_t np = 0, len = 0, o = 0;
	int ret;

	if (!subj || subj->kind != NODE_ARTIFACT || !rn->ref)
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
	ret = cache_get(t->cache, rn->ref, MANIFEST_MAX_SIZE, &body, &len);
	free(body);
	if (ret) {
		log_err("%s@%s: the manifest to attach to is not at hand", rn->repo, rn->ref);
		return -EIO;
	}
	pthread_mutex_lock(&t->lock);
	mt = push_xattr_get(subj, "user.oci.mediaType");
	sd = json_object_new_object();
	json_object_object_add(sd, "mediaType", draft_json_str(mt ? mt : MT_OCI_MANIFEST));
	json_object_object_add(sd, "digest", draft_json_str(rn->ref));
	json_object_object_add(sd, "size", json_object_new_int64((int64_t)len));
	if (dir->kind == NODE_DIR) {
		dir->kind = NODE_ARTIFACT;
		dir->ref = strdup(dir->name);
		dir->loaded = true;
		dir->local = true;
		node_keep(t, dir);
	}
	pthread_mutex_unlock(&t->lock);
	if (!dir->ref) {
		json_object_put(sd);
		return -ENOMEM;
	}
	ret = draft_begin(t, dir);
	pthread_mutex_lock(&t->lock);
	if (!ret && dir->draft && !dir->draft->subject) {
		dir->draft->subject = sd;
		sd = NULL;
		dir->draft->attach_type = strdup(type);
		dir->draft->referrers = rn;
		if (!dir->draft->attach_type)
			ret = -ENOMEM;
	}
	pthread_mutex_unlock(&t->lock);
	json_object_put(sd);
	return ret;
}

/* rmdir of a referrer: its manifest deleted, and its entry taken out of the fallback index. */
static int detach(struct tree *t, struct node *rn, struct node *dir, struct node *c)
{
	struct registry *r = rn->site->reg;
	struct draft *d;
	int ret;

	ret = registry_delete_manifest(r, c->repo, c->ref);
	if (ret && ret != -ENOENT) {
		log_err("%s/%s@%s: detach: %s", registry_host(r), c->repo, c->ref, strerror(-ret));
		return push_errno(ret);
	}
	ret = pusher_index_update(r, rn->repo, rn->ref, c->ref, NULL, 0);
	if (ret)
		return push_errno(ret);
	log_info("%s/%s@%s: detached from %s", registry_host(r), c->repo, c->ref, rn->ref);
	pthread_mutex_lock(&t->lock);
	d = draft_take(t, c); /* the removals of rm -r, staged before this rmdir */
	node_delete(t, dir, c);
	rn->loaded = false;
	pthread_mutex_unlock(&t->lock);
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
	if (c->kind == NODE_ARTIFACT && c->by_digest)
		return detach(t, rn, dir, c);
	pthread_mutex_lock(&t->lock);
	empty = c->n_children == 0 || (c->kind == NODE_ARTIFACT && !pusher_has_files(c));
	if (!c->local)
		ret = -EROFS;
	else if (!empty)
		ret = -ENOTEMPTY;
	else {
		if (c->kind == NODE_ARTIFACT)
			d = draft_take(t, c);
		node_delete(t, dir, c);
	}
	pthread_mutex_unlock(&t->lock);
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
			ret = make_repo(t, dir, leaf, &ns);
			free(leaf);
			if (ret == -EEXIST && ns->kind == NODE_NS)
				ret = 0;
			else if (ret == -EEXIST)
				ret = -ENOTDIR;
			return ret ? ret : make_tag(t, ns, colon + 1, out);
		}
		if (ns_is_repo(t, dir))
			return make_tag(t, dir, name, out);
		return make_repo(t, dir, name, out);
	}
	pthread_mutex_lock(&t->lock);
	ret = art_of(t, dir, &art);
	pthread_mutex_unlock(&t->lock);
	if (ret)
		return ret;
	if (dir == art && strcmp(name, ".oci") == 0)
		return -EINVAL;
	ret = draft_begin(t, art);
	if (ret)
		return ret;
	n = node_new(t, dir, name, NODE_DIR);
	if (!n || !(n->repo = strdup(art->repo)))
		return -ENOMEM;
	return add_local(t, dir, n, out);
}

/* Open a writer of staged node n: counted in it and its draft. Caller holds t->lock. */
static void writer_add(struct node *art, struct node *n)
{
	n->staged->writers++;
	if (art->draft)
		art->draft->writers++;
}

/*
 * A writer of n is gone (closed, or its open failed after writer_add): the
 * pusher may take the draft once push_delay has passed. Caller holds t->lock.
 */
static void writer_del(struct tree *t, struct node *n)
{
	struct node *art;

	if (n->staged && n->staged->writers > 0)
		n->staged->writers--;
	for (art = n->parent; art && art->kind != NODE_ARTIFACT; art = art->parent)
		;
	if (art && art->draft) {
		if (art->draft->writers > 0)
			art->draft->writers--;
		art->draft->changed_at = draft_clock();
		pthread_cond_signal(&t->push->cond);
	}
}

/* An open for writing of n that failed after writer_add: undone, and fd closed. */
static int open_undo(struct tree *t, struct node *n, int *fd, int err)
{
	pthread_mutex_lock(&t->lock);
	writer_del(t, n);
	pthread_mutex_unlock(&t->lock);
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
		if (!dir->local || dir->kind != NODE_DIR)
			return -EROFS;
		ret = attach_begin(t, rn, dir);
		if (ret)
			return ret;
	}
	pthread_mutex_lock(&t->lock);
	ret = art_of(t, dir, &art);
	if (!ret)
		ret = push_title_of(art, dir, name, title, sizeof(title));
	old = ret ? NULL : node_child_find(dir, name);
	pthread_mutex_unlock(&t->lock);
	if (ret)
		return ret;
	if ((dir == art && strcmp(name, ".oci") == 0) || manifest_title_check(title))
		return -EINVAL;
	if (old) {
		if (excl)
			return -EEXIST;
		if (tree_is_dir(old))
			return -EISDIR;
		*out = old;
		return push_open(t, old, true, fd);
	}
	ret = draft_begin(t, art);
	if (!ret)
		ret = staged_new(t, art, &s, fd);
	if (ret)
		return ret;
	n = node_new(t, dir, name, NODE_STAGED);
	if (!n || !(n->repo = strdup(art->repo))) {
		ret = -ENOMEM;
		goto fail;
	}
	pthread_mutex_lock(&t->lock);
	if (node_child_find(dir, name)) {
		pthread_mutex_unlock(&t->lock);
		ret = -EEXIST;
		goto fail;
	}
	ret = node_child_add(dir, n);
	if (!ret) {
		n->site = art->site;
		n->local = true;
		node_keep(t, n);
		n->size = 0;
		n->mtime = time(NULL);
		n->staged = s;
		s->changed = true;
		writer_add(art, n);
		s = NULL;
	}
	pthread_mutex_unlock(&t->lock);
	if (ret)
		goto fail;
	*out = n;
	/* saved once it is closed: a file still being written is no use to a later run */
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

int push_open(struct tree *t, struct node *n, bool trunc, int *fd)
{
	struct node *art;
	struct staged *s = NULL;
	enum node_kind kind;
	char *path = NULL;
	int64_t size;
	bool local;
	int ret;

	*fd = -1;
	pthread_mutex_lock(&t->lock);
	ret = n->parent ? art_of(t, n->parent, &art) : -EPERM;
	kind = n->kind;
	if (!ret && kind == NODE_STAGED)
		path = strdup(n->staged->path);
	pthread_mutex_unlock(&t->lock);
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
		pthread_mutex_lock(&t->lock);
		if (trunc) {
			pthread_mutex_lock(&n->staged->lock);
			digest_ctx_free(n->staged->hash);
			n->staged->hash = digest_ctx_new();
			n->staged->hashed = n->staged->hash ? 0 : -1;
			n->staged->up_off = true; /* what went up is not the file any more */
			pthread_mutex_unlock(&n->staged->lock);
			n->size = 0;
			n->staged->changed = true;
		}
		writer_add(art, n);
		pthread_mutex_unlock(&t->lock);
		ret = trunc ? draft_touch(t, art) : 0;
		if (ret == -ENOSPC) {
			/* the bytes are gone already: the open stands, as an unlink does */
			log_warn("%s:%s: %s truncated; the staging record waits for disk space",
				art->repo, art->ref, n->name);
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
	pthread_mutex_lock(&t->lock);
	if (n->kind != NODE_BLOB) {
		/* another writer got there first: use its file */
		pthread_mutex_unlock(&t->lock);
		close(*fd);
		unlink(s->path);
		staged_free(s);
		return push_open(t, n, trunc, fd);
	}
	size = n->size;
	local = n->local;
	n->kind = NODE_STAGED;
	n->staged = s;
	n->local = true;
	node_keep(t, n);
	if (trunc) {
		n->size = 0;
		s->changed = true;
	}
	writer_add(art, n);
	pthread_mutex_unlock(&t->lock);
	ret = draft_save(t, art);
	if (!ret) {
		draft_bump(t, art);
		return 0;
	}
	/*
	 * The draft cannot be recorded (a full disk): the open fails and, unless
	 * another writer has the staged copy already, changes nothing. Whatever
	 * fails after writer_add undoes it, else the tag is never pushed by
	 * itself; in one locked step, so the pusher never sees the copy unheld.
	 */
	pthread_mutex_lock(&t->lock);
	writer_del(t, n);
	if (n->staged == s && s->writers == 0) {
		n->kind = NODE_BLOB;
		n->staged = NULL;
		n->size = size;
		n->local = local;
		node_keep(t, n);
	} else {
		s = NULL;
	}
	pthread_mutex_unlock(&t->lock);
	close(*fd);
	*fd = -1;
	if (s) {
		unlink(s->path);
		staged_free(s);
	}
	return ret;
out_staged:
	close(*fd);
	*fd = -1;
	unlink(s->path);
	staged_free(s);
	return ret;
}

int push_open_read(struct tree *t, struct node *n, int *fd)
{
	char *path;

	pthread_mutex_lock(&t->lock);
	path = n->staged ? strdup(n->staged->path) : NULL;
	pthread_mutex_unlock(&t->lock);
	if (!path)
		return -ENOMEM;
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	return *fd < 0 ? -errno : 0;
}

void push_note_reader(struct tree *t, int delta)
{
	if (t->push)
		__atomic_add_fetch(&t->push->readers, delta, __ATOMIC_RELAXED);
}

ssize_t push_write(struct tree *t, struct node *n, int fd, const char *buf, size_t len, off_t off)
{
	struct staged *s = n->staged;
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
	pthread_mutex_lock(&t->lock);
	if (off + w > n->size)
		n->size = off + w;
	s->changed = true;
	n->mtime = time(NULL);
	pthread_mutex_unlock(&t->lock);
	return w;
}

int push_flush(struct tree *t, struct node *n)
{
	char digest[DIGEST_STR_LEN + 1], *path, *dg, *loc;
	struct node *art;
	struct staged *s;
	int64_t size, sent;
	bool whole;
	int fd, ret;

	pthread_mutex_lock(&t->lock);
	/*
	 * An empty file waits for the push: a shell's "> file" closes the
	 * truncated file once before writing through a copy of its descriptor.
	 */
	if (n->kind != NODE_STAGED || !n->staged->changed || n->size == 0 || !n->parent ||
		art_of(t, n->parent, &art)) {
		pthread_mutex_unlock(&t->lock);
		return 0;
	}
	s = n->staged;
	size = n->size;
	path = strdup(s->path);
	pthread_mutex_unlock(&t->lock);
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
	if (!ret && loc && whole && sent <= size) {
		/* most of it went up while it was written: the rest, and the digest */
		ret = registry_upload_finish(
			n->site->reg, art->repo, &loc, digest, fd, sent, size - sent);
	} else {
		if (loc)
			registry_upload_cancel(n->site->reg, art->repo, loc);
		if (!ret)
			ret = staged_upload(t, n->site->reg, art->repo, digest, fd, size);
	}
	free(loc);
	pthread_mutex_unlock(&s->flush_lock);
	close(fd);
	if (ret)
		return push_errno(ret);
	dg = strdup(digest);
	pthread_mutex_lock(&t->lock);
	if (dg && n->size == size) {
		free(n->digest);
		n->digest = dg;
		dg = NULL;
		s->changed = false;
	}
	pthread_mutex_unlock(&t->lock);
	free(dg);
	return draft_touch(t, art);
}

void push_release(struct tree *t, struct node *n)
{
	pthread_mutex_lock(&t->lock);
	writer_del(t, n);
	pthread_mutex_unlock(&t->lock);
}

int push_truncate(struct tree *t, struct node *n, off_t size)
{
	struct node *art;
	char *path;
	int fd, ret;

	if (n->kind == NODE_BLOB) {
		ret = push_open(t, n, size == 0, &fd);
		if (ret)
			return ret;
		ret = ftruncate(fd, size) ? -errno : 0;
		close(fd);
		push_release(t, n);
		if (ret)
			return ret;
	}
	pthread_mutex_lock(&t->lock);
	ret = n->kind != NODE_STAGED ? -EISDIR : art_of(t, n->parent, &art);
	path = ret ? NULL : strdup(n->staged->path);
	pthread_mutex_unlock(&t->lock);
	if (ret)
		return ret;
	if (!path)
		return -ENOMEM;
	ret = truncate(path, size) ? -errno : 0;
	free(path);
	if (ret)
		return ret;
	pthread_mutex_lock(&n->staged->lock);
	if (n->staged->hashed > size)
		n->staged->hashed = -1;
	if (n->staged->up_sent > size)
		n->staged->up_off = true;
	pthread_mutex_unlock(&n->staged->lock);
	pthread_mutex_lock(&t->lock);
	n->size = size;
	n->staged->changed = true;
	n->mtime = time(NULL);
	pthread_mutex_unlock(&t->lock);
	return draft_touch(t, art);
}

/* The child name of dir, inside a tag where changes may be made (*art). 0 or -errno. */
static int child_in_art(
	struct tree *t, struct node *dir, const char *name, struct node **art, struct node **c)
{
	int ret;

	pthread_mutex_lock(&t->lock);
	ret = art_of(t, dir, art);
	*c = ret ? NULL : node_child_find(dir, name);
	pthread_mutex_unlock(&t->lock);
	return ret ? ret : *c ? 0 : -ENOENT;
}

/*
 * The .oci/referrers/ above a pushed referrer that dir is in (or is), else
 * NULL: its files can be removed, as a tag's can (rm -r before the rmdir
 * that detaches it). Caller holds t->lock.
 */
static struct node *pushed_referrer(struct node *dir, struct node **art)
{
	struct node *n;

	for (n = dir; n && n->kind == NODE_DIR && !n->hidden; n = n->parent)
		;
	if (!n || n->kind != NODE_ARTIFACT || !n->by_digest || n->rootfs_digest || !n->parent)
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
	pthread_mutex_lock(&t->lock);
	*rn = pushed_referrer(dir, art);
	*c = *rn ? node_child_find(dir, name) : NULL;
	pthread_mutex_unlock(&t->lock);
	if (!*rn)
		return -EROFS;
	if (!*c)
		return -ENOENT;
	ret = draft_begin(t, *art);
	if (ret)
		return ret;
	pthread_mutex_lock(&t->lock);
	d = (*art)->draft;
	if (d && !d->subject) {
		if (d->base && json_object_object_get_ex(d->base, "subject", &subj) &&
			(d->replaces = strdup((*art)->ref))) {
			d->subject = json_object_get(subj);
			d->referrers = *rn;
			(*rn)->local = true; /* no reload drops it while it is staged */
			node_keep(t, *rn);
		} else {
			ret = d->base ? -EROFS : -EIO;
		}
	}
	pthread_mutex_unlock(&t->lock);
	return ret;
}

/* c leaves dir; a staged file's bytes go (open descriptors keep them). Caller holds t->lock. */
static void file_remove(struct tree *t, struct node *dir, struct node *c)
{
	node_delete(t, dir, c);
	if (c->kind == NODE_STAGED && c->staged->path)
		unlink(c->staged->path);
}

int push_unlink(struct tree *t, struct node *dir, const char *name)
{
	struct node *art, *c, *rn;
	int ret;

	ret = removal_in_art(t, dir, name, &art, &c, &rn);
	if (ret)
		return ret;
	if (tree_is_dir(c))
		return -EISDIR;
	ret = draft_begin(t, art);
	if (ret)
		return ret;
	pthread_mutex_lock(&t->lock);
	file_remove(t, dir, c);
	pthread_mutex_unlock(&t->lock);
	ret = draft_touch(t, art);
	if (ret == -ENOSPC) {
		/* the file is gone, and its space with it: its record is written at the push */
		log_warn("%s:%s: %s removed; the staging record waits for disk space", art->repo,
			art->ref, name);
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
	struct registry *r = art->site->reg;
	struct strlist tags = { NULL, 0 };
	char *body = NULL, *ct = NULL, *digest = NULL, label[600];
	size_t len, i;
	int ret;

	snprintf(label, sizeof(label), "%s/%s:%s", registry_host(r), art->repo, art->ref);
	ret = registry_delete_manifest(r, art->repo, art->ref);
	if (ret == 0 || ret == -ENOENT || ret == -EACCES)
		goto out;
	/* A registry that deletes manifests by digest only (distribution 2). */
	ret = registry_get_manifest(r, art->repo, art->ref, &body, &len, &ct, &digest);
	if (!ret)
		ret = registry_tags(r, art->repo, &tags);
	for (i = 0; !ret && i < tags.n; i++) {
		char *b2 = NULL, *c2 = NULL, *d2 = NULL;
		size_t l2;

		if (strcmp(tags.v[i], art->ref) == 0)
			continue;
		if (registry_get_manifest(r, art->repo, tags.v[i], &b2, &l2, &c2, &d2) == 0 &&
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
		ret = registry_delete_manifest(r, art->repo, digest);
out:
	if (ret && ret != -EBUSY)
		log_err("%s: delete: %s", label, strerror(-ret));
	else if (!ret)
		log_info("%s: deleted", label);
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
		pthread_mutex_lock(&t->lock);
		ret = c->n_children ? -ENOTEMPTY : 0;
		if (!ret)
			node_delete(t, dir, c);
		pthread_mutex_unlock(&t->lock);
		return ret;
	case NODE_ARTIFACT:
		if (c->by_digest || dir->kind != NODE_NS)
			return -EROFS;
		pthread_mutex_lock(&t->lock);
		local = c->local;
		pthread_mutex_unlock(&t->lock);
		ret = local ? 0 : delete_tag(t, c);
		if (ret)
			return push_errno(ret);
		pthread_mutex_lock(&t->lock);
		d = draft_take(t, c);
		node_delete(t, dir, c);
		__atomic_store_n(&dir->tags_at, 0, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&t->lock);
		draft_dispose(d);
		return 0;
	case NODE_NS:
		pthread_mutex_lock(&t->lock);
		ret = c->n_children ? -ENOTEMPTY : c->local ? 0 : -EPERM;
		if (!ret)
			node_delete(t, dir, c);
		pthread_mutex_unlock(&t->lock);
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
	pthread_mutex_lock(&t->lock);
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
	pthread_mutex_unlock(&t->lock);
	if (ret)
		return ret;
	if ((newdir == a2 && strcmp(newname, ".oci") == 0) || manifest_title_check(title))
		return -EINVAL;
	ret = draft_begin(t, a1);
	if (ret)
		return ret;
	pthread_mutex_lock(&t->lock);
	for (p = newdir; p && p != a2; p = p->parent)
		if (p == c)
			ret = -EINVAL; /* into itself */
	target = ret ? NULL : node_child_find(newdir, newname);
	if (target == c)
		goto out;
	if (target) {
		if (flags & 1u)
			ret = -EEXIST;
		else if (tree_is_dir(target) && !tree_is_dir(c))
			ret = -EISDIR;
		else if (!tree_is_dir(target) && tree_is_dir(c))
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
		ret = node_move(t, c, newdir);
	}
out:
	pthread_mutex_unlock(&t->lock);
	return ret ? ret : draft_touch(t, a1);
}

int push_fsyncdir(struct tree *t, struct node *dir)
{
	struct node *art;
	bool drafted;
	int ret;

	pthread_mutex_lock(&t->lock);
	ret = art_of(t, dir, &art);
	/* a pushed referrer with files removed: its new version */
	if (ret == -EROFS && !t->opts.read_only && pushed_referrer(dir, &art))
		ret = 0;
	drafted = !ret && art->draft;
	pthread_mutex_unlock(&t->lock);
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
		return n != art && !tree_is_dir(n) ? 0 : -ENOTSUP;
	return -ENOTSUP;
}

/* Before an xattr of n changes: its tag (*art), with a draft. 0 or -errno. */
static int xattr_change(struct tree *t, struct node *n, const char *name, struct node **art)
{
	int ret;

	pthread_mutex_lock(&t->lock);
	ret = art_of(t, n, art);
	if (!ret)
		ret = xattr_settable(n, *art, name);
	pthread_mutex_unlock(&t->lock);
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
	pthread_mutex_lock(&t->lock);
	ret = xattr_set(n, name, v);
	if (!ret && n == art && strcmp(name, "user.oci.artifactType") == 0 && art->draft)
		art->draft->type_set = true;
	pthread_mutex_unlock(&t->lock);
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
	pthread_mutex_lock(&t->lock);
	ret = -ENODATA;
	for (i = 0; i < n->n_xattrs; i++)
		if (strcmp(n->xattrs[i].name, name) == 0) {
			free(n->xattrs[i].name);
			free(n->xattrs[i].value);
			n->xattrs[i] = n->xattrs[--n->n_xattrs];
			ret = 0;
			break;
		}
	pthread_mutex_unlock(&t->lock);
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
	if (dir->kind != NODE_NS || !ns_is_repo(t, dir))
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
	pthread_mutex_lock(&t->lock);
	if (src->draft || src->local)
		ret = -EBUSY; /* not pushed yet: nothing to tag */
	else if (!src->digest || !(digest = strdup(src->digest)) ||
		 !(mt = strdup((type = push_xattr_get(src, "user.oci.mediaType"))
				       ? type
				       : MT_OCI_MANIFEST)))
		ret = -ENOMEM;
	pthread_mutex_unlock(&t->lock);
	if (!ret)
		ret = cache_get(t->cache, digest, MANIFEST_MAX_SIZE, &body, &len);
	if (!ret)
		ret = registry_put_manifest(dir->site->reg, dir->repo, name, mt, body, len, NULL);
	if (ret) {
		log_err("%s/%s: tagging %s as %s failed: %s", registry_host(dir->site->reg),
			dir->repo, target, name, strerror(-ret));
		ret = push_errno(ret);
		goto out;
	}
	log_info("%s/%s: %s tagged %s (%s)", registry_host(dir->site->reg), dir->repo, target, name,
		digest);
	/* the listing and any stale node of that name ask the registry again */
	pthread_mutex_lock(&dir->load_lock);
	__atomic_store_n(&dir->tags_at, 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&dir->load_lock);
	pthread_mutex_lock(&t->lock);
	old = node_child_find(dir, name);
	if (old && old->kind == NODE_ARTIFACT)
		old->resolved_at = 0;
	pthread_mutex_unlock(&t->lock);
	/*
	 * symlink(2) must answer with a link: a passing one, never cached
	 * (local), after which the name looks up as the tag's directory.
	 */
	n = node_new(t, dir, name, NODE_RLINK);
	if (!n || !(n->data = strdup(target)) || !(n->repo = strdup(dir->repo))) {
		ret = -ENOMEM;
		goto out;
	}
	n->local = true;
	n->orphan = true; /* answers symlink(2) only: the name is the tag's */
	n->has_mode = true;
	n->mode = S_IFLNK | 0777;
	n->uid = t->opts.uid;
	n->gid = t->opts.gid;
	*out = n;
out:
	free(digest);
	free(mt);
	free(body);
	return ret;
}

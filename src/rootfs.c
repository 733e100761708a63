/*
 * The root filesystem of a container image: its layers' tar entries applied
 * in order, whiteouts (.wh.<name>) and opaque directories (.wh..wh..opq)
 * honoured and hidden, as umoci and containerd unpack them.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "cache.h"
#include "digest.h"
#include "layer.h"
#include "log.h"
#include "manifest.h"
#include "registry.h"
#include "tree-int.h"

#define WH_PREFIX ".wh."
#define WH_OPAQUE ".wh..wh..opq"

/* The layer digest, opened once for the whole tree (images share base layers). */
static int tree_layer(struct tree *t, struct site *site, const char *repo,
	const struct descriptor *d, struct layer **out)
{
	struct layer *l, **v;
	size_t i;
	int ret;

	pthread_mutex_lock(&t->lock);
	for (i = 0; i < t->n_layers; i++)
		if (strcmp(t->layers[i]->digest, d->digest) == 0) {
			*out = t->layers[i];
			pthread_mutex_unlock(&t->lock);
			return 0;
		}
	pthread_mutex_unlock(&t->lock);
	ret = layer_open(t->cache, site->reg, repo, d->digest, d->media_type, d->size, &l);
	if (ret)
		return ret;
	pthread_mutex_lock(&t->lock);
	v = realloc(t->layers, (t->n_layers + 1) * sizeof(*v));
	if (!v) {
		pthread_mutex_unlock(&t->lock);
		layer_free(l);
		return -ENOMEM;
	}
	t->layers = v;
	v[t->n_layers++] = l;
	pthread_mutex_unlock(&t->lock);
	*out = l;
	return 0;
}

void rootfs_release(struct tree *t)
{
	size_t i;

	for (i = 0; i < t->n_layers; i++)
		layer_free(t->layers[i]);
	free(t->layers);
	t->layers = NULL;
	t->n_layers = 0;
}

static struct node *rnode_new(struct tree *t, struct node *dir, const char *name,
	enum node_kind kind, mode_t type, unsigned layer_no)
{
	struct node *n = tree_node_new(t, dir, name, kind);

	if (!n)
		return NULL;
	n->repo = strdup(dir->repo ? dir->repo : "");
	if (!n->repo || tree_child_add(dir, n))
		return NULL;
	n->has_mode = true;
	n->mode = type | 0755;
	n->immutable = true;
	n->layer_no = layer_no;
	return n;
}

/* The directory at path (made, as 0755 root, where missing), or NULL. */
static struct node *dir_at(struct tree *t, struct node *root, char *path, unsigned layer_no)
{
	struct node *dir = root, *n;
	char *comp, *slash;

	if (!*path)
		return root;
	for (comp = path;; comp = slash + 1) {
		slash = strchr(comp, '/');
		if (slash)
			*slash = '\0';
		n = tree_child_find(dir, comp);
		if (n && n->kind != NODE_DIR) {
			/* a file of a lower layer where this one has a directory */
			tree_child_remove(dir, n);
			n = NULL;
		}
		if (!n)
			n = rnode_new(t, dir, comp, NODE_DIR, S_IFDIR, layer_no);
		if (slash)
			*slash = '/';
		if (!n)
			return NULL;
		dir = n;
		if (!slash)
			return dir;
	}
}

/* The node at a cleaned path, or NULL. */
static struct node *node_at(struct node *root, const char *path)
{
	char buf[PATH_MAX], *comp, *slash;
	struct node *n = root;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return NULL;
	if (!*buf)
		return root;
	for (comp = buf; n; comp = slash + 1) {
		slash = strchr(comp, '/');
		if (slash)
			*slash = '\0';
		n = tree_child_find(n, comp);
		if (!slash)
			break;
	}
	return n;
}

static int set_xattrs(struct node *n, const struct layer_entry *e)
{
	size_t i;

	tree_xattrs_free(n->xattrs, n->n_xattrs);
	n->xattrs = NULL;
	n->n_xattrs = 0;
	for (i = 0; i < e->n_xattrs; i++) {
		struct xattr *v = realloc(n->xattrs, (n->n_xattrs + 1) * sizeof(*v));

		if (!v)
			return -ENOMEM;
		n->xattrs = v;
		v[n->n_xattrs].name = strdup(e->xattrs[i].name);
		v[n->n_xattrs].value = malloc(e->xattrs[i].len + 1);
		if (!v[n->n_xattrs].name || !v[n->n_xattrs].value) {
			free(v[n->n_xattrs].name);
			free(v[n->n_xattrs].value);
			return -ENOMEM;
		}
		memcpy(v[n->n_xattrs].value, e->xattrs[i].value, e->xattrs[i].len + 1);
		v[n->n_xattrs].len = e->xattrs[i].len;
		n->n_xattrs++;
	}
	return 0;
}

/* path ("name" or "name/rest") becomes "" or "rest"; -EINVAL when it is not under name. */
static int strip_prefix(char *path, const char *name)
{
	size_t n = strlen(name);
	const char *rest;

	if (strncmp(path, name, n) != 0 || (path[n] != '\0' && path[n] != '/'))
		return -EINVAL;
	rest = path + n + (path[n] ? 1 : 0);
	memmove(path, rest, strlen(rest) + 1);
	return 0;
}

/* Whether the symlink target, from the directory of path (below name/), stays below name/. */
static bool link_stays(const char *path, const char *target)
{
	int depth = 0;
	const char *p;

	if (target[0] == '/')
		return false;
	for (p = path; (p = strchr(p, '/')); p++)
		depth++;
	for (p = target; *p;) {
		size_t n = strcspn(p, "/");

		if (n == 2 && p[0] == '.' && p[1] == '.')
			depth--;
		else if (n && !(n == 1 && p[0] == '.'))
			depth++;
		if (depth < 0)
			return false;
		p += n;
		while (*p == '/')
			p++;
	}
	return true;
}

/* Apply one entry of layer number no (from 1) to the private tree below root. */
static int apply(struct tree *t, struct node *root, struct layer *l, const struct layer_entry *e,
	unsigned no, const char *label, const char *strip)
{
	char path[PATH_MAX], lpath[PATH_MAX], *base;
	struct node *dir, *old, *n, *target;
	mode_t type;
	size_t i;

	if (layer_path_clean(e->path, path, sizeof(path)) || (strip && strip_prefix(path, strip))) {
		log_warn("%s: layer %u: entry \"%.200s\" escapes the root: left out", label, no,
			e->path);
		return 0;
	}
	if (!*path) {
		/* the root itself: its attributes become the image directory's */
		root->has_mode = true;
		root->mode = S_IFDIR | e->mode;
		root->uid = e->uid;
		root->gid = e->gid;
		root->mtime = e->mtime;
		return 0;
	}
	base = strrchr(path, '/');
	if (base) {
		*base++ = '\0';
		dir = dir_at(t, root, path, no);
	} else {
		base = path;
		dir = root;
	}
	if (!dir)
		return -ENOMEM;
	if (dir == root && strcmp(base, ".oci") == 0) {
		log_warn("%s: layer %u: /.oci is where ocifs shows the manifest: left out", label,
			no);
		return 0;
	}
	if (strcmp(base, WH_OPAQUE) == 0) {
		/* what lower layers put in this directory is gone */
		for (i = 0; i < dir->n_children;) {
			if (dir->children[i]->layer_no < no && !dir->children[i]->hidden)
				tree_child_remove(dir, dir->children[i]);
			else
				i++;
		}
		return 0;
	}
	if (strncmp(base, WH_PREFIX, strlen(WH_PREFIX)) == 0) {
		old = tree_child_find(dir, base + strlen(WH_PREFIX));
		if (old && old->layer_no < no)
			tree_child_remove(dir, old);
		return 0;
	}
	old = tree_child_find(dir, base);
	if (e->type == '5' && old && old->kind == NODE_DIR) {
		n = old; /* a directory again: its attributes change, its contents stay */
	} else {
		if (old)
			tree_child_remove(dir, old);
		switch (e->type) {
		case '5':
			n = rnode_new(t, dir, base, NODE_DIR, S_IFDIR, no);
			break;
		case '0':
			n = rnode_new(t, dir, base, NODE_RFILE, S_IFREG, no);
			if (n) {
				n->layer = l;
				n->data_off = e->offset;
				n->size = e->size;
			}
			break;
		case '1':
			if (!e->link || layer_path_clean(e->link, lpath, sizeof(lpath)) ||
				(strip && strip_prefix(lpath, strip)) ||
				!(target = node_at(root, lpath)) || target->kind != NODE_RFILE) {
				log_warn("%s: layer %u: hard link \"%.200s\" to nothing in the "
					 "image: "
					 "left out",
					label, no, e->path);
				return 0;
			}
			n = rnode_new(t, dir, base, NODE_RFILE, S_IFREG, no);
			if (n) {
				n->layer = target->layer;
				n->data_off = target->data_off;
				n->size = target->size;
			}
			break;
		case '2':
			n = rnode_new(t, dir, base, NODE_RLINK, S_IFLNK, no);
			if (n && !(n->data = strdup(e->link ? e->link : "")))
				n = NULL;
			break;
		case '3':
		case '4':
		case '6':
			type = e->type == '3' ? S_IFCHR : e->type == '4' ? S_IFBLK : S_IFIFO;
			n = rnode_new(t, dir, base, NODE_RSPECIAL, type, no);
			if (n)
				n->rdev = makedev(e->devmajor, e->devminor);
			break;
		default:
			log_warn("%s: layer %u: entry \"%.200s\" of tar type '%c': left out", label,
				no, e->path, e->type);
			return 0;
		}
		if (!n)
			return -ENOMEM;
	}
	n->mode = (n->mode & S_IFMT) | e->mode;
	n->uid = e->uid;
	n->gid = e->gid;
	n->mtime = e->mtime;
	n->layer_no = no;
	return set_xattrs(n, e);
}

/* Whether n's tree is still to be built. */
static bool pending(struct tree *t, struct node *n)
{
	bool p;

	pthread_mutex_lock(&t->lock);
	p = n->rootfs_pending;
	pthread_mutex_unlock(&t->lock);
	return p;
}

int rootfs_ensure(struct tree *t, struct node *art)
{
	struct manifest *m = NULL;
	struct node scratch;
	struct layer **ls = NULL;
	char *body = NULL, label[600];
	size_t len, i, k;
	int ret = 0;

	if (!pending(t, art))
		return 0;
	pthread_mutex_lock(&art->load_lock);
	if (!pending(t, art))
		goto out;
	snprintf(label, sizeof(label), "%s/%s@%s", registry_host(art->site->reg), art->repo,
		art->rootfs_digest);
	ret = cache_get(t->cache, art->rootfs_digest, MANIFEST_MAX_SIZE, &body, &len);
	if (!ret)
		ret = manifest_parse(body, len, NULL, &m);
	if (ret) {
		log_err("%s: image manifest not at hand", label);
		ret = -EIO;
		goto out;
	}
	/* every layer first (the network), then the tree in one go under its lock */
	ls = calloc(m->n_layers + 1, sizeof(*ls));
	if (!ls) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < m->n_layers && !ret; i++)
		ret = tree_layer(t, art->site, art->repo, &m->layers[i], &ls[i]);
	if (ret) {
		log_err("%s: layer %zu of the image cannot be read", label, i);
		ret = ret == -ENOMEM ? ret : -EIO;
		goto out;
	}
	/* built aside (scratch is this thread's alone), then shown in one step */
	memset(&scratch, 0, sizeof(scratch));
	scratch.site = art->site;
	scratch.repo = art->repo;
	for (i = 0; i < m->n_layers && !ret; i++)
		for (k = 0; k < ls[i]->n && !ret; k++)
			ret = apply(t, &scratch, ls[i], &ls[i]->entries[k], (unsigned)i + 1, label,
				NULL);
	pthread_mutex_lock(&t->lock);
	for (i = 0; !ret && i < scratch.n_children; i++) {
		scratch.children[i]->parent = art;
		ret = tree_child_add(art, scratch.children[i]);
	}
	if (!ret) {
		/* the root as the archive says, else as an unpacker makes it: 0755 root */
		art->has_mode = true;
		art->mode = scratch.has_mode ? scratch.mode : S_IFDIR | 0755;
		art->uid = scratch.has_mode ? scratch.uid : 0;
		art->gid = scratch.has_mode ? scratch.gid : 0;
		if (scratch.has_mode)
			art->mtime = scratch.mtime;
	}
	if (!ret)
		art->rootfs_pending = false;
	pthread_mutex_unlock(&t->lock);
	free(scratch.children);
	tree_xattrs_free(scratch.xattrs, scratch.n_xattrs);
out:
	pthread_mutex_unlock(&art->load_lock);
	manifest_free(m);
	free(ls);
	free(body);
	return ret;
}

int rootfs_unpack(struct tree *t, struct node *dir)
{
	struct descriptor d = { 0 };
	struct node scratch, *art;
	struct layer *l;
	char label[600], got[DIGEST_STR_LEN + 1], path[PATH_MAX];
	size_t i;
	int ret = 0;

	if (!pending(t, dir))
		return 0;
	for (art = dir->parent; art && art->kind != NODE_ARTIFACT; art = art->parent)
		;
	if (!art)
		return -EIO;
	pthread_mutex_lock(&dir->load_lock);
	if (!pending(t, dir))
		goto out;
	snprintf(label, sizeof(label), "%s/%s: packed directory %s", registry_host(art->site->reg),
		art->repo, dir->name);
	d.media_type = dir->ref;
	d.digest = dir->rootfs_digest;
	d.size = dir->size;
	ret = tree_layer(t, art->site, art->repo, &d, &l);
	if (ret) {
		ret = ret == -ENOMEM ? ret : -EIO;
		goto out;
	}
	/* what oras checks before it unpacks */
	if (dir->data && *dir->data) {
		ret = digest_fd(l->fd, l->tar_size, got, NULL);
		if (!ret && strcmp(got, dir->data) != 0) {
			log_err("%s: its tar hashes to %s, not the %s annotated", label, got,
				dir->data);
			ret = -EIO;
			goto out;
		}
	}
	for (i = 0; !ret && i < l->n; i++) {
		const struct layer_entry *e = &l->entries[i];
		char lp[PATH_MAX];

		if (layer_path_clean(e->path, path, sizeof(path)) ||
			strip_prefix(path, dir->name) ||
			(e->type == '2' && (!e->link || !link_stays(path, e->link))) ||
			(e->type == '1' && (!e->link || layer_path_clean(e->link, lp, sizeof(lp)) ||
						   strip_prefix(lp, dir->name)))) {
			log_err("%s: entry \"%.200s\" is not inside %s/ (oras pull refuses it)",
				label, e->path, dir->name);
			ret = -EIO;
		}
	}
	if (ret)
		goto out;
	memset(&scratch, 0, sizeof(scratch));
	scratch.site = art->site;
	scratch.repo = art->repo;
	for (i = 0; !ret && i < l->n; i++)
		ret = apply(t, &scratch, l, &l->entries[i], 1, label, dir->name);
	pthread_mutex_lock(&t->lock);
	for (i = 0; !ret && i < scratch.n_children; i++) {
		scratch.children[i]->parent = dir;
		ret = tree_child_add(dir, scratch.children[i]);
	}
	if (!ret) {
		if (scratch.has_mode) {
			dir->has_mode = true;
			dir->mode = scratch.mode;
			dir->uid = scratch.uid;
			dir->gid = scratch.gid;
			dir->mtime = scratch.mtime;
		}
		dir->rootfs_pending = false;
	}
	pthread_mutex_unlock(&t->lock);
	free(scratch.children);
	tree_xattrs_free(scratch.xattrs, scratch.n_xattrs);
out:
	pthread_mutex_unlock(&dir->load_lock);
	return ret;
}

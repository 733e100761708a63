/*
 * The root filesystem of a container image, merged lazily: a name is looked
 * up in the layers newest first, and a layer is indexed (layer.c) only when
 * a lookup gets down to it. Whiteouts (.wh.<name>) and opaque directories
 * (.wh..wh..opq) hide what lower layers hold, as umoci and containerd
 * unpack them, and are hidden themselves. Directories packed by oras show
 * the same way, from their one layer.
 */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
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
#include "model.h"
#include "published.h"
#include "registry.h"
#include "toc.h"
#include "tree-int.h"

#define WH_PREFIX ".wh."
#define WH_OPAQUE ".wh..wh..opq"
/* Hard links followed to a file, at most. */
#define LINK_DEPTH 8

struct rootfs_layer {
	char *digest;
	char *media_type;
	int64_t size;
	struct layer *l; /* NULL until a lookup needs it (borrowed from t->layers) */
	char *index_ref; /* the published index l was opened from, or NULL */
	char *toc_digest; /* its own table of contents' (eStargz, zstd:chunked), or NULL */
	bool toc_compressed; /* of the TOC's compressed bytes (toc_digest_of()) */
	bool toc_refused; /* that TOC was found bad: the layer is read whole */
	bool refused; /* a model's layer with entries outside the artifact: not unpacked */
	/* a model's tar of one file, as its annotations say (model_layer_single()), or NULL */
	char *single_path;
	int64_t single_size;
	/*
	 * A model's archive unpacked below this directory (model_place.prefix:
	 * a kit before 0.5), or NULL: at the root. The directories down to it
	 * are made up, whatever its tar holds (made_by()).
	 */
	char *prefix;
	/* its entries left out where a prefix makes a directory up, logged once each; rf->lock */
	struct strlist left;
};

struct rootfs {
	unsigned refs; /* nodes whose rootfs it is (atomic) */
	struct site *site;
	char *repo;
	char label[600];
	struct rootfs_layer *layers; /* lowest first */
	size_t n;
	char *strip; /* a packed directory: its title, the tar's paths below it; else NULL */
	char *want; /* a packed directory: io.deis.oras.content.digest, or NULL */
	/*
	 * A model's tar layers unpacked in place (model.h), as modctl and kit
	 * unpack them: no whiteouts, regular files and directories only, the
	 * mount's owner, no set-id bits.
	 */
	bool model;
	bool prefixed; /* a model with a layer unpacked below a prefix */
	time_t mtime; /* a model: its artifact's, for the directories a prefix makes up */
	int err; /* a packed directory refused: -EIO for good */
	size_t root_from; /* layers[root_from - 1] gave the root its attributes; 0: none */
	struct node *root;
	bool checked; /* a packed directory: its layer passed packed_check(); under lock */
	/* an image: its manifest, the subject of published layer indexes; else NULL */
	char *subject;
	char *subject_type;
	int64_t subject_size;
	struct published *pub; /* the indexes published for it; under load */
	bool pub_listed; /* under load */
	bool untrusted_said; /* the log said its indexes are not trusted; under load */
	/*
	 * One layer's own tree, as overlayfs takes a lower directory (the layer
	 * store): whiteouts shown as character devices 0/0, opaque directories
	 * with the xattr, instead of applied.
	 */
	bool diff;
	/*
	 * Lock order: load, then lock. lock serialises lookups and listings;
	 * it is dropped while a layer is downloaded and indexed (under load,
	 * one at a time), so that what the loaded layers answer is not kept
	 * waiting behind a whole-layer download.
	 */
	pthread_mutex_t load;
	pthread_mutex_t lock;
	/* the root's attributes, from the highest layer with an entry for it; t->lock */
	bool root_has;
	mode_t root_mode;
	uid_t root_uid;
	gid_t root_gid;
	time_t root_mtime;
};

/* NODE_RDIR, NODE_RFILE, NODE_RLINK, NODE_RSPECIAL: this provider's nodes. */
struct rnode {
	struct node n;
	struct rootfs *rootfs; /* holds a ref on it */
	mode_t mode; /* type bits and permissions, from the tar header */
	uid_t uid;
	gid_t gid;
	dev_t rdev; /* RSPECIAL */
	time_t mtime;
	unsigned layer_no; /* the layer (from 1, lowest first) that made it */
	/* RFILE: the layer holding its bytes (owned by the tree), and where; under rootfs->lock */
	struct layer *layer;
	int64_t data_off;
	size_t data_layer; /* RFILE: that layer's place in rootfs->layers */
	const struct layer_entry *entry; /* RFILE: its data's entry in layer; under rootfs->lock */
	/* RFILE of a hard link: the link's own entry and its layer, checked on first read too */
	struct layer *link_layer;
	const struct layer_entry *link_entry;
	struct layer *checked; /* RFILE: the layer whose tar header of it was checked; atomic */
	int64_t size; /* RFILE */
	/* RDIR: its path below what the rootfs shows; RLINK: its target; RFILE: its bytes' tar path */
	char *data;
	struct xattr *xattrs;
	size_t n_xattrs;
};

static inline struct rnode *rnode_of(const struct node *n)
{
	assert(n->kind >= NODE_RDIR && n->kind < NODE_KINDS);
	return (struct rnode *)(uintptr_t)n;
}

/* Where a directory showing a root filesystem keeps it (an image, a packed directory, an RDIR). */
static struct rootfs **rootfs_slot(struct node *dir)
{
	switch (dir->kind) {
	case NODE_ARTIFACT:
		return &art_of_node(dir)->rootfs;
	case NODE_DIR:
		return &dir_of(dir)->rootfs;
	default:
		return &rnode_of(dir)->rootfs;
	}
}

/* dir's path below what its rootfs shows ("" at the rootfs's own root). */
static const char *rdir_path(const struct rootfs *rf, const struct node *dir)
{
	return dir == rf->root ? "" : rnode_of(dir)->data;
}

static const struct node_ops rootfs_ops;

static bool index_refused(struct tree *t, const char *ref)
{
	bool refused = false;
	size_t i;

	pthread_mutex_lock(&t->nodes.lock);
	for (i = 0; i < t->refused_indexes.n && !refused; i++)
		refused = strcmp(t->refused_indexes.v[i], ref) == 0;
	pthread_mutex_unlock(&t->nodes.lock);
	return refused;
}

static void index_refuse(struct tree *t, const char *ref)
{
	if (index_refused(t, ref))
		return;
	pthread_mutex_lock(&t->nodes.lock);
	strlist_add(&t->refused_indexes, ref);
	pthread_mutex_unlock(&t->nodes.lock);
}

/*
 * Layer d of an image from the index published for it, when there is one
 * this mount has not refused: *out NULL when there is none to use. 0 or
 * -ENOMEM. Caller holds rf->load.
 */
static int layer_from_published(
	struct tree *t, struct rootfs *rf, struct rootfs_layer *d, struct layer **out)
{
	const char *ref;
	size_t pos = SIZE_MAX;
	int ret;

	*out = NULL;
	if (!rf->pub_listed) {
		rf->pub_listed = true;
		ret = published_list(rf->site->reg, rf->repo, rf->subject, &rf->pub);
		if (ret == -ENOMEM)
			return ret;
		if (ret)
			log_debug("%s: no published layer indexes: %s", rf->label, strerror(-ret));
	}
	/* the newest first: one that is not trusted does not hide an older one that is */
	while ((ref = published_find(rf->pub, d->digest, &pos))) {
		char *z = NULL;
		size_t zlen = 0;

		if (index_refused(t, ref))
			continue;
		/*
		 * Anyone who may push to the repository may publish an index: only
		 * a signature by a key the user trusts vouches for one. Nothing of
		 * an index can be checked lazily against the layer (a gzip window
		 * only by decompressing all before it, a missing entry only by
		 * reading every header), so an index nobody vouches for is not used.
		 */
		if (!t->opts.index_trust) {
			if (!rf->untrusted_said)
				log_info("%s: published layer indexes found, none trusted (no -o "
					 "index_trust): layers are read whole",
					rf->label);
			rf->untrusted_said = true;
			return 0;
		}
		ret = published_trusted(
			t->cache, rf->site->reg, rf->repo, ref, t->opts.index_trust);
		if (!ret)
			ret = published_fetch(
				t->cache, rf->site->reg, rf->repo, ref, d->digest, &z, &zlen);
		if (!ret)
			ret = layer_open_published(t->cache, rf->site->reg, rf->repo, d->digest,
				d->media_type, d->size, z, zlen, out);
		free(z);
		if (ret == -ENOMEM)
			return ret;
		if (!ret) {
			free(d->index_ref);
			d->index_ref = strdup(ref);
			log_debug("%s: layer %s read through its published index %s", rf->label,
				d->digest, ref);
			return 0;
		}
		log_warn("%s: layer %s: published index %s not used", rf->label, d->digest, ref);
		index_refuse(t, ref);
	}
	if (pos != SIZE_MAX)
		log_warn("%s: layer %s: no published index used: the whole layer is read",
			rf->label, d->digest);
	return 0;
}

/*
 * With -o publish_index, the index of l (indexed here) as a referrer of
 * rf's image, unless one is there. Caller holds rf->load.
 */
static void publish(struct tree *t, struct rootfs *rf, struct rootfs_layer *d, struct layer *l)
{
	if (!t->opts.publish_index || !rf->subject || !layer_publishable(l) || rf->want)
		return;
	if (!rf->pub_listed) {
		rf->pub_listed = true;
		if (published_list(rf->site->reg, rf->repo, rf->subject, &rf->pub))
			rf->pub = NULL;
	}
	if (!published_find(rf->pub, d->digest, &(size_t){ SIZE_MAX }))
		published_push(rf->site->reg, rf->repo, rf->subject, rf->subject_type,
			rf->subject_size, l, t->opts.index_sign_key);
}

/*
 * The layer digest, opened once for all the images that use it (they share
 * base layers), with a ref for the caller's slot: from its published index
 * where there is one, else indexed here (and published with -o
 * publish_index). 0 or -errno. Caller holds rf->load.
 */
static int tree_layer(struct tree *t, struct rootfs *rf, struct rootfs_layer *d, bool tar_digest,
	struct layer **out)
{
	struct layer *l = NULL, **v;
	unsigned *r;
	size_t i;
	int ret;

	pthread_mutex_lock(&t->nodes.lock);
	for (i = 0; i < t->n_layers; i++)
		if (strcmp(layer_digest(t->layers[i]), d->digest) == 0 &&
			(!tar_digest || *layer_tar_digest(t->layers[i])) &&
			!layer_bad(t->layers[i]) &&
			/* one indexed from its headers alone serves only who vouches for it */
			(!layer_is_single(t->layers[i]) ||
				(d->single_path && layer_holds_one(t->layers[i], d->single_path,
							   d->single_size)))) {
			l = t->layers[i];
			t->layer_refs[i]++;
			break;
		}
	pthread_mutex_unlock(&t->nodes.lock);
	if (l) {
		/* indexed for another image that shares it: published for this one too */
		publish(t, rf, d, l);
		*out = l;
		return 0;
	}
	free(d->index_ref);
	d->index_ref = NULL;
	/* a layer with its own table of contents: read through it */
	if (d->toc_digest && !d->toc_refused && !tar_digest) {
		ret = layer_open_toc(t->cache, rf->site->reg, rf->repo, d->digest, d->media_type,
			d->size, d->toc_digest, d->toc_compressed, &l);
		if (ret == -ENOMEM)
			return ret;
		if (ret) {
			log_warn("%s: layer %s: its table of contents is not used: the whole layer "
				 "is "
				 "read",
				rf->label, d->digest);
			d->toc_refused = true;
			l = NULL;
		}
	}
	/* a model's tar of one file: from its headers, two ranges, not the whole */
	if (!l && d->single_path && !tar_digest) {
		ret = layer_open_single(t->cache, rf->site->reg, rf->repo, d->digest, d->media_type,
			d->size, d->single_path, d->single_size, &l);
		if (ret == -ENOMEM)
			return ret;
		if (ret) {
			log_warn("%s: layer %s does not hold just %s, as its annotations say: the "
				 "whole layer is read",
				rf->label, d->digest, d->single_path);
			l = NULL;
		}
	}
	if (!l && rf->subject && !tar_digest) {
		ret = layer_from_published(t, rf, d, &l);
		if (ret)
			return ret;
	}
	if (!l) {
		ret = layer_open(t->cache, rf->site->reg, rf->repo, d->digest, d->media_type,
			d->size, tar_digest, &l);
		if (ret)
			return ret;
		publish(t, rf, d, l);
	}
	pthread_mutex_lock(&t->nodes.lock);
	v = realloc(t->layers, (t->n_layers + 1) * sizeof(*v));
	if (v)
		t->layers = v;
	r = v ? realloc(t->layer_refs, (t->n_layers + 1) * sizeof(*r)) : NULL;
	if (!r) {
		pthread_mutex_unlock(&t->nodes.lock);
		layer_free(l);
		return -ENOMEM;
	}
	t->layer_refs = r;
	v[t->n_layers] = l;
	r[t->n_layers++] = 1;
	pthread_mutex_unlock(&t->nodes.lock);
	*out = l;
	return 0;
}

static void rootfs_free(struct rootfs *rf)
{
	size_t i;

	for (i = 0; i < rf->n; i++) {
		free(rf->layers[i].digest);
		free(rf->layers[i].media_type);
		free(rf->layers[i].index_ref);
		free(rf->layers[i].toc_digest);
		free(rf->layers[i].single_path);
		free(rf->layers[i].prefix);
		strlist_release(&rf->layers[i].left);
	}
	free(rf->layers);
	free(rf->subject);
	free(rf->subject_type);
	published_free(rf->pub);
	free(rf->repo);
	free(rf->strip);
	free(rf->want);
	pthread_mutex_destroy(&rf->lock);
	pthread_mutex_destroy(&rf->load);
	free(rf);
}

void rootfs_unref(struct tree *t, struct rootfs *rf)
{
	struct layer **gone;
	size_t i, j, n = 0;

	if (__atomic_sub_fetch(&rf->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	gone = calloc(rf->n ? rf->n : 1, sizeof(*gone));
	pthread_mutex_lock(&t->nodes.lock);
	for (i = 0; i < rf->n; i++) {
		for (j = 0; rf->layers[i].l && j < t->n_layers; j++)
			if (t->layers[j] == rf->layers[i].l)
				break;
		if (!rf->layers[i].l || j == t->n_layers || --t->layer_refs[j] > 0)
			continue;
		/* no image uses it any more: its index and descriptor go */
		if (gone)
			gone[n++] = t->layers[j];
		t->layers[j] = t->layers[t->n_layers - 1];
		t->layer_refs[j] = t->layer_refs[t->n_layers - 1];
		t->n_layers--;
	}
	pthread_mutex_unlock(&t->nodes.lock);
	for (i = 0; i < n; i++)
		layer_free(gone[i]);
	free(gone);
	rootfs_free(rf);
	/* a layer's index is the biggest thing a mount holds: hand its memory back */
	if (n)
		malloc_trim(0);
}

void rootfs_release(struct tree *t)
{
	size_t i;

	for (i = 0; i < t->n_layers; i++)
		layer_free(t->layers[i]);
	free(t->layers);
	free(t->layer_refs);
	strlist_release(&t->refused_indexes);
	t->layers = NULL;
	t->layer_refs = NULL;
	t->n_layers = 0;
}

static int rootfs_layer_add(struct rootfs *rf, const char *digest, const char *mt, int64_t size,
	const char *toc, bool toc_compressed)
{
	struct rootfs_layer *v = realloc(rf->layers, (rf->n + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	rf->layers = v;
	memset(&v[rf->n], 0, sizeof(v[rf->n]));
	v[rf->n].digest = strdup(digest);
	v[rf->n].media_type = strdup(mt);
	v[rf->n].size = size;
	v[rf->n].toc_compressed = toc_compressed;
	v[rf->n].toc_digest = toc && ref_valid_digest(toc) ? strdup(toc) : NULL;
	if (!v[rf->n].digest || !v[rf->n].media_type ||
		(toc && ref_valid_digest(toc) && !v[rf->n].toc_digest)) {
		free(v[rf->n].digest);
		free(v[rf->n].media_type);
		free(v[rf->n].toc_digest);
		return -ENOMEM;
	}
	rf->n++;
	return 0;
}

/*
 * Whether layer i of a model (l) has an entry whose path leaves the
 * artifact (absolute, "..", or /.oci): then it is not unpacked at all, and
 * the log says where its archive is.
 */
static bool model_outside(const struct rootfs *rf, size_t i, const struct layer *l)
{
	const struct layer_entry *v;
	char clean[PATH_MAX];
	size_t k, n;

	v = layer_entries(l, &n);
	for (k = 0; k < n; k++)
		if (layer_path_clean(v[k].path, clean, sizeof(clean)) ||
			(!rf->layers[i].prefix &&
				(strcmp(clean, ".oci") == 0 || strncmp(clean, ".oci/", 5) == 0))) {
			log_warn(
				"%s: layer %s: entry \"%.200s\" is outside the artifact: the layer "
				"is not unpacked; its archive is .oci/blobs/sha256/%s",
				rf->label, rf->layers[i].digest, v[k].path,
				digest_hex(rf->layers[i].digest));
			return true;
		}
	return false;
}

/* A model's layer d: what its annotations say it holds, when that is one file. */
static int single_set(struct rootfs_layer *rl, const struct descriptor *d)
{
	char path[PATH_MAX];

	if (!model_layer_single(d, path, sizeof(path), &rl->single_size))
		return 0;
	rl->single_path = strdup(path);
	return rl->single_path ? 0 : -ENOMEM;
}

/*
 * Layer i, indexed on first use. Caller holds rf->lock, which is dropped
 * and taken again while the layer loads: what the caller found before
 * stays valid (layers are not freed while the caller's ref is held), but
 * nodes may have been made meanwhile.
 */
static int layer_at(struct tree *t, struct rootfs *rf, size_t i, struct layer **out)
{
	struct layer *l;
	int ret = 0;

	if (rf->layers[i].l && !layer_bad(rf->layers[i].l)) {
		*out = rf->layers[i].l;
		return 0;
	}
	pthread_mutex_unlock(&rf->lock);
	pthread_mutex_lock(&rf->load);
	pthread_mutex_lock(&rf->lock);
	l = rf->layers[i].l;
	pthread_mutex_unlock(&rf->lock);
	if (l && layer_bad(l)) {
		/*
		 * Its published index did not match the blob: not used again. The
		 * bad layer stays in t->layers (nodes made from it may still point
		 * at it, and find the new one: rfile_read) until the tree ends.
		 */
		if (rf->layers[i].index_ref)
			index_refuse(t, rf->layers[i].index_ref);
		else if (rf->layers[i].toc_digest)
			rf->layers[i].toc_refused = true;
		l = NULL;
	}
	if (!l)
		ret = tree_layer(t, rf, &rf->layers[i], rf->want && *rf->want, &l);
	pthread_mutex_lock(&rf->lock);
	if (!ret) {
		rf->layers[i].l = l;
		if (rf->model && !rf->layers[i].refused)
			rf->layers[i].refused = model_outside(rf, i, l);
	}
	pthread_mutex_unlock(&rf->load);
	if (ret) {
		log_err("%s: layer %zu (%s) cannot be read", rf->label, i + 1,
			rf->layers[i].digest);
		return ret == -ENOMEM ? ret : -EIO;
	}
	*out = l;
	return 0;
}

/* Whether the cleaned path is dir/... (or dir itself, with self). */
static bool below(const char *path, const char *dir, bool self)
{
	size_t n = strlen(dir);

	return strncmp(path, dir, n) == 0 && (path[n] == '/' || (self && !path[n]));
}

/* Where a path that rf shows lies in one of its layers (layer_where()). */
enum where {
	AT_NONE, /* not where the layer is unpacked */
	AT_TAR, /* in the layer's tar */
	AT_ABOVE, /* a directory above where the layer is unpacked (below its prefix's first levels) */
};

/*
 * Where the path p (relative to what rf shows) lies in layer i: AT_TAR,
 * with its tar path in out ("" where the layer is unpacked); AT_ABOVE, a
 * directory the layer's prefix goes through, with the name of the level
 * below p it goes on to in out; AT_NONE. -ENAMETOOLONG when out is too small.
 */
static int layer_where(const struct rootfs *rf, size_t i, const char *p, char *out, size_t size)
{
	const char *pre = rf->layers[i].prefix, *next;
	size_t k = pre ? strlen(pre) : 0;
	int n;

	if (rf->strip)
		n = snprintf(out, size, "%s%s%s", rf->strip, *p ? "/" : "", p);
	else if (!pre)
		n = snprintf(out, size, "%s", p);
	else if (below(p, pre, true))
		n = snprintf(out, size, "%s", p[k] ? p + k + 1 : "");
	else if (*p && !below(pre, p, false))
		return AT_NONE;
	else {
		next = *p ? pre + strlen(p) + 1 : pre;
		n = snprintf(out, size, "%.*s", (int)strcspn(next, "/"), next);
		return n >= 0 && (size_t)n < size ? AT_ABOVE : -ENAMETOOLONG;
	}
	return n >= 0 && (size_t)n < size ? AT_TAR : -ENAMETOOLONG;
}

/*
 * The layer whose prefix makes the directory p up (p is the prefix or a
 * directory above it, not the root), or rf->n when none. A layer refused
 * (model_outside()) makes nothing up; one not loaded yet is not known to
 * be refused, and makes its directories up until it is: layers are read
 * when a path first reaches into them, not to decide what is above them.
 */
static size_t made_by(const struct rootfs *rf, const char *p)
{
	size_t i;

	for (i = 0; *p && i < rf->n; i++)
		if (rf->layers[i].prefix && !rf->layers[i].refused &&
			below(rf->layers[i].prefix, p, true))
			return i;
	return rf->n;
}

/*
 * Whether a name in the directory dir can be one a prefix makes up: some
 * layer's prefix (made_by()) goes on below dir. Elsewhere left_out() has
 * nothing to do, and a listing need not ask it of every entry.
 */
static bool prefix_below(const struct rootfs *rf, const char *dir)
{
	size_t i;

	for (i = 0; i < rf->n; i++)
		if (rf->layers[i].prefix && !rf->layers[i].refused &&
			(!*dir || below(rf->layers[i].prefix, dir, false)))
			return true;
	return false;
}

/*
 * Whether the entry e of layer i, at p, is left out: something other than
 * a directory where a layer's prefix makes one up. The prefix keeps its
 * directory, whichever layer is higher, and the log says what gave way,
 * once for each of the layer's entries (lookups and listings ask again,
 * after each forget too). Caller holds rf->lock.
 */
static bool left_out(struct rootfs *rf, size_t i, const char *p, const struct layer_entry *e)
{
	struct rootfs_layer *rl = &rf->layers[i];
	size_t k;

	if (!e || e->type == '5' || !rf->prefixed || (k = made_by(rf, p)) == rf->n)
		return false;
	if (tree_strlist_has(&rl->left, p))
		return true;
	log_warn("%s: layer %s: \"%.200s\" is not a directory, where layer %s is unpacked under "
		 "%s/: left out",
		rf->label, rl->digest, p, rf->layers[k].digest, rf->layers[k].prefix);
	/* out of memory: said again next time */
	strlist_add(&rl->left, p);
	return true;
}

/* "dir/name" (or "name" when dir is "") into out: false when too long. */
static bool join(const char *dir, const char *name, char *out, size_t size)
{
	int n = snprintf(out, size, "%s%s%s", dir, *dir ? "/" : "", name);

	return n >= 0 && (size_t)n < size;
}

/* Whether layer l holds the whiteout of the tar path p ("dir/.wh.name"). */
static bool whiteout_of(const struct layer *l, const char *p)
{
	char wh[PATH_MAX];
	const char *base = strrchr(p, '/');

	if (base)
		snprintf(wh, sizeof(wh), "%.*s/" WH_PREFIX "%s", (int)(base - p), p, base + 1);
	else
		snprintf(wh, sizeof(wh), WH_PREFIX "%s", p);
	return layer_find(l, wh) != NULL;
}

/*
 * Whether layer l hides the directory at tar path p and all below it from
 * lower layers and from itself: p or one of its parents is a non-directory
 * there, or whited out with nothing of the layer below it.
 */
static bool layer_hides(const struct rootfs *rf, const struct layer *l, const char *p)
{
	char a[PATH_MAX], *slash;
	const struct layer_entry *e;

	if (rf->strip || rf->model)
		return false; /* a packed directory has one layer; a model no whiteouts */
	snprintf(a, sizeof(a), "%s", p);
	while (*a) {
		e = layer_find(l, a);
		if (e && e->type != '5')
			return true;
		if (!e && whiteout_of(l, a) && !layer_has_below(l, a))
			return true;
		slash = strrchr(a, '/');
		if (slash)
			*slash = '\0';
		else
			*a = '\0';
	}
	return false;
}

/*
 * Whether layer l hides from lower layers what they hold in the directory at
 * tar path p: p or one of its parents is opaque there, or whited out and
 * made again in the same layer (a whiteout hides lower layers only).
 */
static bool layer_opaque(const struct rootfs *rf, const struct layer *l, const char *p)
{
	char a[PATH_MAX], o[PATH_MAX], *slash;

	if (rf->strip || rf->model)
		return false;
	snprintf(a, sizeof(a), "%s", p);
	for (;;) {
		if (join(a, WH_OPAQUE, o, sizeof(o)) && layer_find(l, o))
			return true;
		if (!*a)
			return false;
		if (whiteout_of(l, a))
			return true;
		slash = strrchr(a, '/');
		if (slash)
			*slash = '\0';
		else
			*a = '\0';
	}
}

/*
 * A step of scan(): layer i (l), at tar path tp; or, where the layer's
 * prefix makes the path up, no layer (its tar is not read for that) and
 * for a directory listed the name below it that leads to the prefix.
 */
typedef int (*scan_fn)(void *arg, size_t i, const struct layer *l, const char *tp);

/*
 * Call fn for each layer, from layer top down, that shows what lies at p:
 * the directory p listed, or the name p looked up (name: then a prefix
 * makes up p where p is the prefix itself too). dir is p's directory (p
 * itself when listed) whose whiteouts and opaque markers count: an image's
 * tar paths are the paths it shows. Down to a layer that hides it or makes
 * it opaque. Stops early where fn returns non-zero, and returns that.
 * Caller holds rf->lock.
 */
static int scan(struct tree *t, struct rootfs *rf, const char *dir, const char *p, bool name,
	size_t top, scan_fn fn, void *arg)
{
	char tp[PATH_MAX];
	size_t i;
	int ret;

	for (i = top + 1; i-- > 0;) {
		struct layer *l;
		int w = layer_where(rf, i, p, tp, sizeof(tp));

		if (w < 0)
			return w;
		if (w == AT_NONE)
			continue;
		if (w == AT_ABOVE || (name && rf->layers[i].prefix && !*tp)) {
			/*
			 * A directory its prefix makes up, without reading its tar:
			 * not once the tar is found refused (made_by())
			 */
			if (rf->layers[i].refused)
				continue;
			ret = fn(arg, i, NULL, tp);
			if (ret)
				return ret;
			continue;
		}
		ret = layer_at(t, rf, i, &l);
		if (ret)
			return ret;
		if (rf->layers[i].refused)
			continue;
		if (layer_hides(rf, l, dir))
			return 0;
		ret = fn(arg, i, l, tp);
		if (ret)
			return ret;
		if (layer_opaque(rf, l, dir))
			return 0;
	}
	return 0;
}

static int set_xattrs(struct rnode *n, const struct layer_entry *e)
{
	size_t i;

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

static void set_attrs(struct rnode *n, const struct layer_entry *e)
{
	n->mode = (n->mode & S_IFMT) | e->mode;
	n->uid = e->uid;
	n->gid = e->gid;
	n->mtime = e->mtime;
}

/* The root's attributes from layer i's entry for it, when no higher layer gave them. */
static void root_attrs(struct tree *t, struct rootfs *rf, size_t i, const struct layer *l)
{
	char p[PATH_MAX];
	const struct layer_entry *e;

	if (rf->model || rf->root_from > i || layer_where(rf, i, "", p, sizeof(p)) != AT_TAR ||
		!(e = layer_find(l, p)) || e->type != '5')
		return;
	/* its xattrs stay the manifest's (user.oci.*) */
	rf->root_from = i + 1;
	pthread_mutex_lock(&t->nodes.lock);
	rf->root_has = true;
	rf->root_mode = e->mode;
	rf->root_uid = e->uid;
	rf->root_gid = e->gid;
	rf->root_mtime = e->mtime;
	pthread_mutex_unlock(&t->nodes.lock);
}

/* A hard link's file: the entry its target names, in layer i or below. */
static int link_resolve(struct tree *t, struct rootfs *rf, size_t i, const struct layer_entry *e,
	struct layer **lout, const struct layer_entry **out)
{
	char clean[PATH_MAX];
	int depth, ret;

	for (depth = 0; depth < LINK_DEPTH; depth++) {
		const struct layer_entry *target = NULL;
		struct layer *l = NULL;
		size_t j;

		/* the target names a path of the archive, not of what rf shows */
		if (!e->link || layer_path_clean(e->link, clean, sizeof(clean)))
			return -ENOENT;
		for (j = i + 1; !target && j-- > 0;) {
			ret = layer_at(t, rf, j, &l);
			if (ret)
				return ret;
			target = layer_find(l, clean);
		}
		if (!target)
			return -ENOENT;
		if (target->type == '0') {
			*lout = l;
			*out = target;
			return 0;
		}
		if (target->type != '1')
			return -ENOENT;
		e = target;
		i = j;
	}
	return -ENOENT;
}

/* What lookups and listings learn of one name below a directory. */
struct found {
	struct rootfs *rf;
	const char *path; /* the name's path below what rf shows */
	size_t layer; /* where it was found */
	const struct layer_entry *e; /* its entry, or NULL: a directory shown by what is below */
	bool gone; /* a whiteout said it is not there */
	bool plain; /* no whiteouts: a packed directory, a model */
	/*
	 * A directory that layer's prefix makes up, of no tar entry: the mode
	 * node_make() starts from, S_IFDIR | 0755, which a model's mask
	 * (S_IFMT | 0777) keeps, and the artifact's mtime, as kit unpack's
	 * MkdirAll makes it.
	 */
	bool made;
};

/* scan() step for the attributes of a directory known only from entries below it. */
static int dir_entry_step(void *arg, size_t i, const struct layer *l, const char *tp)
{
	struct found *f = arg;
	const struct layer_entry *e = l ? layer_find(l, tp) : NULL;

	if (!l || (e && e->type == '5')) {
		f->e = e;
		f->layer = i;
		f->made = !l;
		return 1;
	}
	left_out(f->rf, i, f->path, e);
	return 0;
}

/* Whether layer l makes the directory at tar path p opaque (holds p/.wh..wh..opq). */
static bool opaque_here(const struct layer *l, const char *p)
{
	char o[PATH_MAX];

	return join(p, WH_OPAQUE, o, sizeof(o)) && layer_find(l, o) != NULL;
}

/* A node of rf for name in dir, of kind, found in layer f->layer; not yet added to dir. */
static struct node *rnode_new(struct tree *t, struct rootfs *rf, struct node *dir, const char *name,
	enum node_kind kind, const struct found *f)
{
	struct node *node = node_new(&t->nodes, dir, name, kind, &rootfs_ops, sizeof(struct rnode));
	struct rnode *n;

	if (!node)
		return NULL;
	n = rnode_of(node);
	/* made again from the layers when the kernel has forgotten it */
	node->cached = true;
	n->rootfs = rf;
	__atomic_add_fetch(&rf->refs, 1, __ATOMIC_RELAXED);
	n->mtime = t->start;
	n->layer_no = (unsigned)f->layer + 1;
	return node;
}

/*
 * A layer's own tree (rf->diff): the whiteout of name as overlayfs writes
 * one, a character device 0/0, added to dir.
 */
static int whiteout_make(struct tree *t, struct rootfs *rf, struct node *dir, const char *name,
	struct found *f, struct node **out)
{
	struct node *node;
	struct rnode *n;

	node = rnode_new(t, rf, dir, name, NODE_RSPECIAL, f);
	if (!node)
		return -ENOMEM;
	n = rnode_of(node);
	n->mode = S_IFCHR;
	n->rdev = makedev(0, 0);
	*out = node_child_get_or_add(&t->nodes, dir, node);
	return *out ? 0 : -ENOMEM;
}

/* The node for name in dir, from what was found, added to dir. 0, -ENOENT (left out) or -errno. */
static int node_make(struct tree *t, struct rootfs *rf, struct node *dir, const char *name,
	struct found *f, struct node **out)
{
	const struct layer_entry *e = f->e, *fe;
	struct layer *l, *fl;
	struct node *node;
	struct rnode *n;
	enum node_kind kind;
	mode_t type;
	char path[PATH_MAX];
	int ret;

	if (dir == rf->root && !rf->strip && strcmp(name, ".oci") == 0) {
		log_warn("%s: /.oci is where ocifs shows the manifest: left out", rf->label);
		return -ENOENT;
	}
	if (!join(rdir_path(rf, dir), name, path, sizeof(path)))
		return -ENAMETOOLONG;
	if (f->gone)
		return whiteout_make(t, rf, dir, name, f, out);
	if (!e && !f->made) {
		/* a directory without an entry of its own here: a lower layer may have one */
		ret = scan(t, rf, path, path, true, f->layer, dir_entry_step, f);
		if (ret < 0)
			return ret;
		e = f->e;
	}
	/* a directory a prefix makes up has no layer to read */
	l = NULL;
	if (!f->made) {
		ret = layer_at(t, rf, f->layer, &l);
		if (ret)
			return ret;
	}
	if (rf->model && e && e->type != '0' && e->type != '5') {
		log_warn("%s: entry \"%.200s\" is not a regular file or a directory: left out, as "
			 "modctl leaves it",
			rf->label, path);
		return -ENOENT;
	}
	switch (e ? e->type : '5') {
	case '5':
		kind = NODE_RDIR;
		type = S_IFDIR;
		break;
	case '0':
	case '1':
		kind = NODE_RFILE;
		type = S_IFREG;
		break;
	case '2':
		kind = NODE_RLINK;
		type = S_IFLNK;
		break;
	case '3':
		kind = NODE_RSPECIAL;
		type = S_IFCHR;
		break;
	case '4':
		kind = NODE_RSPECIAL;
		type = S_IFBLK;
		break;
	case '6':
		kind = NODE_RSPECIAL;
		type = S_IFIFO;
		break;
	default:
		log_warn("%s: entry \"%.200s\" of tar type '%c': left out", rf->label, path,
			e->type);
		return -ENOENT;
	}
	fl = l;
	fe = e;
	if (e && e->type == '1') {
		ret = link_resolve(t, rf, f->layer, e, &fl, &fe);
		if (ret == -ENOENT)
			log_warn("%s: hard link \"%.200s\" to nothing in the image: left out",
				rf->label, path);
		if (ret)
			return ret;
	}
	node = rnode_new(t, rf, dir, name, kind, f);
	if (!node)
		return -ENOMEM;
	n = rnode_of(node);
	n->mode = type | 0755;
	/* a hard link is its target: its attributes are the target's, as tar extracts it */
	if (fe) {
		set_attrs(n, fe);
		if (set_xattrs(n, fe))
			goto nomem;
	}
	if (rf->model) {
		/* as modctl and kit unpack: the owner is who unpacks, no set-id bits */
		n->mode &= S_IFMT | 0777;
		n->uid = t->opts.uid;
		n->gid = t->opts.gid;
	}
	/* as kit unpack's MkdirAll makes it */
	if (f->made)
		n->mtime = rf->mtime;
	switch (kind) {
	case NODE_RDIR:
		node->partial = true;
		if (!(n->data = strdup(path)))
			goto nomem;
		if (rf->diff && l && opaque_here(l, path) &&
			(tree_xattr_add(&n->xattrs, &n->n_xattrs, "trusted.overlay.opaque", "y") ||
				tree_xattr_add(
					&n->xattrs, &n->n_xattrs, "user.overlay.opaque", "y")))
			goto nomem;
		break;
	case NODE_RFILE: {
		char clean[PATH_MAX];
		size_t j;

		n->layer = fl;
		n->entry = fe;
		n->data_off = fe->offset;
		n->size = fe->size;
		if (fe != e) {
			n->link_layer = l;
			n->link_entry = e;
		}
		for (j = 0; j < rf->n && rf->layers[j].l != fl; j++)
			;
		n->data_layer = j;
		if (layer_path_clean(fe->path, clean, sizeof(clean)))
			clean[0] = '\0';
		if (!(n->data = strdup(clean)))
			goto nomem;
		break;
	}
	case NODE_RLINK:
		if (!(n->data = strdup(e->link ? e->link : "")))
			goto nomem;
		break;
	default:
		n->rdev = makedev(e->devmajor, e->devminor);
		break;
	}
	/* another lookup may have made it while a layer loaded: that one stays */
	*out = node_child_get_or_add(&t->nodes, dir, node);
	return *out ? 0 : -ENOMEM;
nomem:
	node_discard(&t->nodes, node);
	return -ENOMEM;
}

/* scan() step of a lookup: the name at tp, there, whited out, or not in this layer. */
static int lookup_step(void *arg, size_t i, const struct layer *l, const char *tp)
{
	struct found *f = arg;
	const struct layer_entry *e;

	f->layer = i;
	if (!l) {
		f->e = NULL;
		f->made = true;
		return 1;
	}
	e = layer_find(l, tp);
	if (left_out(f->rf, i, f->path, e))
		e = NULL;
	if (e || layer_has_below(l, tp)) {
		f->e = e;
		return 1;
	}
	if (!f->plain && whiteout_of(l, tp)) {
		f->gone = true;
		return 1;
	}
	return 0;
}

/*
 * Whether the symlink target, followed from the directory of the cleaned
 * path (title/...), stays below the title: never above depth 1.
 */
static bool link_stays(const char *path, const char *target)
{
	const char *p;
	int depth = 0;

	if (target[0] == '/')
		return false;
	for (p = path; (p = strchr(p, '/')); p++)
		depth++;
	for (p = target; *p;) {
		size_t k = strcspn(p, "/");

		if (k == 2 && p[0] == '.' && p[1] == '.')
			depth--;
		else if (k && !(k == 1 && p[0] == '.'))
			depth++;
		if (depth < 1)
			return false;
		p += k;
		while (*p == '/')
			p++;
	}
	return true;
}

/* A packed directory's layer, checked as oras pull checks it, once. Caller holds rf->lock. */
static int packed_check(struct tree *t, struct rootfs *rf)
{
	const struct layer_entry *v;
	struct layer *l;
	char path[PATH_MAX], lp[PATH_MAX];
	size_t i, n;
	int ret;

	if (!rf->strip || rf->err || rf->checked)
		return rf->err;
	ret = layer_at(t, rf, 0, &l);
	if (ret)
		return rf->err = ret == -ENOMEM ? ret : -EIO;
	if (rf->want && *rf->want && strcmp(layer_tar_digest(l), rf->want) != 0) {
		log_err("%s: its tar hashes to %s, not the %s annotated", rf->label,
			layer_tar_digest(l), rf->want);
		return rf->err = -EIO;
	}
	v = layer_entries(l, &n);
	for (i = 0; i < n; i++) {
		const struct layer_entry *e = &v[i];
		bool in = !layer_path_clean(e->path, path, sizeof(path)) &&
			  below(path, rf->strip, true);
		bool link_ok = true;

		if (in && e->type == '2')
			link_ok = e->link && link_stays(path, e->link);
		if (in && e->type == '1')
			link_ok = e->link && !layer_path_clean(e->link, lp, sizeof(lp)) &&
				  below(lp, rf->strip, false);
		if (!in || !link_ok) {
			log_err("%s: entry \"%.200s\" is not inside %s/ (oras pull refuses it)",
				rf->label, e->path, rf->strip);
			return rf->err = -EIO;
		}
	}
	rf->checked = true;
	return 0;
}

/*
 * What a rootfs is made from (rootfs_get()), copied from its directory in
 * one t->lock section: a reload (tree_artifact_install()) changes all of
 * it at once, and a manifest's layers must not be unpacked where another
 * manifest's prefixes say.
 */
struct rootfs_src {
	struct node *art; /* the artifact dir is in (or is) */
	char *digest; /* an image's or model's manifest; a packed directory's layer */
	bool model; /* art's rootfs_model */
	time_t mtime; /* art's */
	char **prefixes; /* art's rootfs_prefixes, one per layer of digest's manifest, or NULL */
	size_t n_prefixes;
};

static void rootfs_src_release(struct rootfs_src *src)
{
	size_t i;

	for (i = 0; src->prefixes && i < src->n_prefixes; i++)
		free(src->prefixes[i]);
	free(src->prefixes);
	free(src->digest);
}

/* What dir's rootfs is made from, into src. Caller holds t->lock. 0, -EIO (none) or -ENOMEM. */
static int rootfs_src_copy(struct node *dir, struct rootfs_src *src)
{
	const struct art_node *a;
	const char *digest = dir->kind == NODE_DIR	  ? dir_of(dir)->packed_digest
			     : dir->kind == NODE_ARTIFACT ? art_of_node(dir)->rootfs_digest
							  : NULL;
	size_t i;

	memset(src, 0, sizeof(*src));
	for (src->art = dir; src->art && src->art->kind != NODE_ARTIFACT;
		src->art = src->art->parent)
		;
	if (!src->art || !digest)
		return -EIO;
	if (!(src->digest = strdup(digest)))
		return -ENOMEM;
	if (dir->kind != NODE_ARTIFACT)
		return 0;
	a = art_of_node(dir);
	src->model = a->rootfs_model;
	src->mtime = reg_of(dir)->mtime;
	if (!a->rootfs_prefixes)
		return 0;
	src->prefixes = calloc(a->n_rootfs_prefixes, sizeof(*src->prefixes));
	if (!src->prefixes)
		goto out_nomem;
	src->n_prefixes = a->n_rootfs_prefixes;
	for (i = 0; i < src->n_prefixes; i++)
		if (a->rootfs_prefixes[i] && !(src->prefixes[i] = strdup(a->rootfs_prefixes[i])))
			goto out_nomem;
	return 0;
out_nomem:
	rootfs_src_release(src);
	return -ENOMEM;
}

/*
 * A model's archive, layer i of its manifest (the last added to rf): where
 * the artifact's build said it is unpacked (model_places()), taken from src.
 */
static void prefix_take(struct rootfs *rf, struct rootfs_src *src, size_t i)
{
	if (!src->prefixes || !src->prefixes[i])
		return;
	rf->layers[rf->n - 1].prefix = src->prefixes[i];
	src->prefixes[i] = NULL;
	rf->prefixed = true;
}

/*
 * The rootfs of dir made from src (what is at hand, no download), not yet
 * seen by anyone: into *out, with dir's ref. 0 or -errno.
 */
static int rootfs_make(
	struct tree *t, struct node *dir, struct rootfs_src *src, struct rootfs **out)
{
	struct node *art = src->art;
	struct manifest *m = NULL;
	struct rootfs *rf;
	char *body = NULL;
	size_t len, i;
	int ret = 0;

	rf = calloc(1, sizeof(*rf));
	if (!rf || !(rf->repo = strdup(reg_of(art)->repo))) {
		free(rf);
		return -ENOMEM;
	}
	pthread_mutex_init(&rf->lock, NULL);
	pthread_mutex_init(&rf->load, NULL);
	rf->refs = 1; /* dir's */
	rf->site = reg_of(art)->site;
	rf->root = dir;
	if (dir->kind == NODE_DIR) {
		struct dir_node *d = dir_of(dir);

		/* a packed directory: one layer, and the digest oras annotated its tar with */
		snprintf(rf->label, sizeof(rf->label), "%s/%s: packed directory %s",
			registry_host(rf->site->reg), rf->repo, dir->name);
		ret = rootfs_layer_add(
			rf, src->digest, d->packed_type, d->packed_size, NULL, false);
		if (!ret && (!(rf->strip = strdup(dir->name)) ||
				    !(rf->want = strdup(d->packed_path ? d->packed_path : ""))))
			ret = -ENOMEM;
		goto out;
	}
	snprintf(rf->label, sizeof(rf->label), "%s/%s@%s", registry_host(rf->site->reg), rf->repo,
		src->digest);
	rf->model = src->model;
	rf->mtime = src->mtime;
	ret = cache_get(t->cache, src->digest, MANIFEST_MAX_SIZE, &body, &len);
	if (!ret)
		ret = manifest_parse(body, len, NULL, &m);
	if (ret) {
		log_err("%s: image manifest not at hand", rf->label);
		ret = -EIO;
		goto out;
	}
	rf->subject = strdup(src->digest);
	rf->subject_type = strdup(m->media_type);
	rf->subject_size = (int64_t)len;
	if (!rf->subject || !rf->subject_type) {
		ret = -ENOMEM;
		goto out;
	}
	/* built from this very manifest (copied with its digest): never seen otherwise */
	if (src->prefixes && src->n_prefixes != m->n_layers) {
		log_err("%s: %zu places for %zu layers", rf->label, src->n_prefixes, m->n_layers);
		ret = -EIO;
		goto out;
	}
	for (i = 0; !ret && i < m->n_layers; i++) {
		bool z;
		const char *toc = toc_digest_of(&m->layers[i], &z);

		/* a model's other layers are files of their own (tree.c) */
		if (rf->model && !model_layer_archive(&m->layers[i]))
			continue;
		ret = rootfs_layer_add(rf, m->layers[i].digest, m->layers[i].media_type,
			m->layers[i].size, rf->model ? NULL : toc, z);
		if (!ret && rf->model)
			ret = single_set(&rf->layers[rf->n - 1], &m->layers[i]);
		if (!ret && rf->model)
			prefix_take(rf, src, i);
	}
out:
	manifest_free(m);
	free(body);
	if (ret) {
		rootfs_free(rf);
		return ret;
	}
	*out = rf;
	return 0;
}

/*
 * The rootfs dir shows, made on the first look inside an image or packed
 * directory, with a ref for the caller (rootfs_unref() when done): a reload
 * of dir may drop dir's own meanwhile.
 */
static int rootfs_get(struct tree *t, struct node *dir, struct rootfs **out)
{
	struct rootfs **slot = rootfs_slot(dir);
	struct rootfs_src src;
	struct rootfs *rf, *made;
	bool moved;
	int ret;

again:
	moved = false;
	pthread_mutex_lock(&t->nodes.lock);
	rf = *slot;
	if (rf)
		__atomic_add_fetch(&rf->refs, 1, __ATOMIC_RELAXED);
	ret = rf ? 0 : rootfs_src_copy(dir, &src);
	pthread_mutex_unlock(&t->nodes.lock);
	if (rf || ret)
		goto out;
	/* made from what is at hand (no download): a racing maker's may win */
	ret = rootfs_make(t, dir, &src, &made);
	if (ret)
		goto out_src;
	pthread_mutex_lock(&t->nodes.lock);
	/* reloaded meanwhile: the slot is for what the reload installed, made next time round */
	moved = dir->kind == NODE_ARTIFACT &&
		(!art_of_node(dir)->rootfs_digest ||
			strcmp(art_of_node(dir)->rootfs_digest, src.digest) != 0);
	if (!moved && !*slot) {
		/* rootfs_is() reads it unlocked */
		__atomic_store_n(slot, made, __ATOMIC_RELEASE);
		made = NULL;
	}
	if (!moved) {
		rf = *slot;
		__atomic_add_fetch(&rf->refs, 1, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&t->nodes.lock);
	if (made)
		rootfs_free(made);
out_src:
	rootfs_src_release(&src);
	if (moved)
		goto again;
out:
	if (!ret)
		*out = rf;
	return ret;
}

int rootfs_layer_dir(struct tree *t, struct node *parent, const char *name, struct site *site,
	const char *repo, const struct layer_desc *layer, const char *subject,
	const char *subject_type, int64_t subject_size, struct node **out)
{
	struct rootfs *rf = calloc(1, sizeof(*rf));
	struct node *node;
	struct rnode *n;

	if (!rf || !(rf->repo = strdup(repo)) || !(rf->subject = strdup(subject)) ||
		!(rf->subject_type = strdup(subject_type)) ||
		rootfs_layer_add(rf, layer->digest, layer->media_type, layer->size,
			layer->toc_digest, layer->toc_compressed)) {
		if (rf) {
			free(rf->repo);
			free(rf->subject);
			free(rf->subject_type);
		}
		free(rf);
		return -ENOMEM;
	}
	pthread_mutex_init(&rf->lock, NULL);
	pthread_mutex_init(&rf->load, NULL);
	rf->site = site;
	rf->subject_size = subject_size;
	rf->diff = true;
	snprintf(rf->label, sizeof(rf->label), "%s/%s@%s: layer %s", registry_host(site->reg), repo,
		subject, layer->digest);
	node = node_new(&t->nodes, parent, name, NODE_RDIR, &rootfs_ops, sizeof(struct rnode));
	if (!node) {
		rootfs_free(rf);
		return -ENOMEM;
	}
	n = rnode_of(node);
	n->rootfs = rf;
	rf->refs = 1;
	rf->root = node;
	n->mode = S_IFDIR | 0755;
	n->mtime = t->start;
	n->layer_no = 1;
	node->partial = true;
	if (!(n->data = strdup(""))) {
		node_discard(&t->nodes, node);
		return -ENOMEM;
	}
	*out = node;
	return 0;
}

/* Undo rootfs_enter(). */
static void rootfs_leave(struct tree *t, struct rootfs *rf)
{
	pthread_mutex_unlock(&rf->lock);
	rootfs_unref(t, rf);
}

/* The rootfs of dir, made and checked, with its lock and a ref held on success (0). */
static int rootfs_enter(struct tree *t, struct node *dir, struct rootfs **out)
{
	struct rootfs *rf;
	int ret;

	ret = rootfs_get(t, dir, &rf);
	if (ret)
		return ret;
	pthread_mutex_lock(&rf->lock);
	ret = packed_check(t, rf);
	if (ret) {
		rootfs_leave(t, rf);
		return ret;
	}
	*out = rf;
	return 0;
}

int rootfs_lookup(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	struct found f = { NULL, NULL, 0, NULL, false, false, false };
	struct rootfs *rf;
	struct node *n;
	const char *dp;
	char p[PATH_MAX];
	int ret;

	ret = rootfs_enter(t, dir, &rf);
	if (ret)
		return ret;
	f.rf = rf;
	f.plain = rf->strip || rf->model;
	pthread_mutex_lock(&t->nodes.lock);
	n = node_child_find(dir, name);
	pthread_mutex_unlock(&t->nodes.lock);
	if (n || !dir->partial) {
		ret = n ? 0 : -ENOENT;
		goto out;
	}
	if (strncmp(name, WH_PREFIX, strlen(WH_PREFIX)) == 0 && !f.plain) {
		ret = -ENOENT;
		goto out;
	}
	dp = rdir_path(rf, dir);
	if (!join(dp, name, p, sizeof(p))) {
		ret = -ENAMETOOLONG;
		goto out;
	}
	f.path = p;
	ret = scan(t, rf, dp, p, true, rf->n - 1, lookup_step, &f);
	if (ret < 0)
		goto out;
	if (rf->layers[rf->n - 1].l)
		root_attrs(t, rf, rf->n - 1, rf->layers[rf->n - 1].l);
	if (!ret || (f.gone && !rf->diff)) {
		ret = -ENOENT;
		goto out;
	}
	ret = node_make(t, rf, dir, name, &f, &n);
out:
	rootfs_leave(t, rf);
	if (!ret)
		*out = n;
	return ret;
}

/* What a listing has decided so far. */
struct listing {
	struct rootfs *rf;
	const char *dir; /* the directory listed, below what rf shows */
	struct found *v;
	char **names;
	size_t n;
	size_t layer;
	int err;
	bool packed;
	bool prefixed; /* a name here may be a directory a prefix makes up (prefix_below()) */
};

static void list_name(void *arg, const char *name, const struct layer_entry *e)
{
	struct listing *ls = arg;
	bool wh = !ls->packed && strncmp(name, WH_PREFIX, strlen(WH_PREFIX)) == 0;
	const char *key = wh ? name + strlen(WH_PREFIX) : name;
	char p[PATH_MAX];
	size_t i;

	if (ls->err || (!ls->packed && strcmp(name, WH_OPAQUE) == 0) || !*key)
		return;
	if (e && ls->prefixed && join(ls->dir, key, p, sizeof(p)) &&
		left_out(ls->rf, ls->layer, p, e))
		return;
	for (i = 0; i < ls->n; i++)
		if (strcmp(ls->names[i], key) == 0)
			break;
	if (i < ls->n) {
		struct found *f = &ls->v[i];

		/* decided by a higher layer; in this one an entry beats its own whiteout */
		if (f->layer != ls->layer || wh)
			return;
		if (f->gone || (!f->e && e)) {
			f->gone = false;
			f->e = e;
		}
		return;
	}
	{
		struct found *v = realloc(ls->v, (ls->n + 1) * sizeof(*v));
		char **nv = realloc(ls->names, (ls->n + 1) * sizeof(*nv));

		if (v)
			ls->v = v;
		if (nv)
			ls->names = nv;
		if (!v || !nv || !(ls->names[ls->n] = strdup(key))) {
			ls->err = -ENOMEM;
			return;
		}
		memset(&ls->v[ls->n], 0, sizeof(ls->v[ls->n]));
		ls->v[ls->n].rf = ls->rf;
		ls->v[ls->n].layer = ls->layer;
		ls->v[ls->n].e = wh ? NULL : e;
		ls->v[ls->n].gone = wh;
		ls->v[ls->n].plain = ls->packed;
		ls->n++;
	}
}

static int list_step(void *arg, size_t i, const struct layer *l, const char *tp)
{
	struct listing *ls = arg;

	ls->layer = i;
	/* a prefix below: the directory it makes up here */
	if (!l)
		list_name(ls, tp, NULL);
	else
		layer_list(l, tp, list_name, ls);
	return ls->err;
}

int rootfs_list(struct tree *t, struct node *dir)
{
	struct listing ls = { NULL, NULL, NULL, NULL, 0, 0, 0, false, false };
	struct rootfs *rf;
	const char *dp;
	char p[PATH_MAX];
	size_t i;
	int ret;

	ret = rootfs_enter(t, dir, &rf);
	if (ret)
		return ret;
	if (!dir->partial)
		goto out;
	dp = rdir_path(rf, dir);
	ls.rf = rf;
	ls.dir = dp;
	ls.packed = rf->strip || rf->model;
	/* a layer found refused during the scan only makes this say yes for nothing */
	ls.prefixed = rf->prefixed && prefix_below(rf, dp);
	ret = scan(t, rf, dp, dp, false, rf->n - 1, list_step, &ls);
	for (i = 0; !ret && i < rf->n; i++)
		if (rf->layers[i].l)
			root_attrs(t, rf, i, rf->layers[i].l);
	for (i = 0; !ret && i < ls.n; i++) {
		struct node *n;

		if (ls.v[i].gone && !rf->diff)
			continue;
		pthread_mutex_lock(&t->nodes.lock);
		n = node_child_find(dir, ls.names[i]);
		pthread_mutex_unlock(&t->nodes.lock);
		if (n && rf->model && n->kind < NODE_RDIR)
			log_warn("%s: \"%s%s%.200s\" of a tar layer is hidden by another layer's "
				 "file there",
				rf->label, dp, *dp ? "/" : "", ls.names[i]);
		if (n)
			continue;
		if (!join(dp, ls.names[i], p, sizeof(p)))
			continue;
		ls.v[i].path = p;
		ret = node_make(t, rf, dir, ls.names[i], &ls.v[i], &n);
		if (ret == -ENOENT || ret == -ENAMETOOLONG)
			ret = 0;
	}
	if (!ret) {
		pthread_mutex_lock(&t->nodes.lock);
		dir->partial = false;
		pthread_mutex_unlock(&t->nodes.lock);
	}
out:
	rootfs_leave(t, rf);
	for (i = 0; i < ls.n; i++)
		free(ls.names[i]);
	free(ls.names);
	free(ls.v);
	return ret;
}

bool rootfs_is(const struct node *dir)
{
	/* the slot is set once, under t->lock, by the first look inside (rootfs_get) */
	if (dir->kind == NODE_ARTIFACT)
		return __atomic_load_n(&art_of_node(dir)->rootfs, __ATOMIC_ACQUIRE) ||
		       art_of_node(dir)->rootfs_digest;
	return dir->kind == NODE_DIR && (__atomic_load_n(&dir_of(dir)->rootfs, __ATOMIC_ACQUIRE) ||
						dir_of(dir)->packed_digest);
}

void rootfs_root_stat(struct tree *t, struct node *dir, struct stat *st)
{
	struct rootfs *rf;

	if (dir->kind == NODE_ARTIFACT && art_of_node(dir)->rootfs_model)
		return; /* a model's root is its artifact directory */
	if (dir->kind == NODE_ARTIFACT) {
		/* as an unpacker makes the root, until the archive says otherwise */
		st->st_mode = S_IFDIR | 0755;
		st->st_uid = 0;
		st->st_gid = 0;
	}
	pthread_mutex_lock(&t->nodes.lock);
	rf = *rootfs_slot(dir);
	if (rf && rf->root_has) {
		/* as the image's tar says */
		st->st_mode = S_IFDIR | rf->root_mode;
		st->st_uid = rf->root_uid;
		st->st_gid = rf->root_gid;
		st->st_mtime = st->st_ctime = st->st_atime = rf->root_mtime;
	}
	pthread_mutex_unlock(&t->nodes.lock);
}

/* ---- the operations of this provider's nodes ---- */

static int rdir_lookup(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	return rootfs_lookup(t, dir, name, out);
}

static int rdir_list(struct tree *t, struct node *dir, struct tree_dirent **ents, size_t *count)
{
	int ret = rootfs_list(t, dir);

	return ret ? ret : tree_children_list(t, dir, ents, count);
}

static int rnode_getattr(struct tree *t, struct node *node, struct stat *st)
{
	struct rnode *n = rnode_of(node);

	st->st_mode = n->mode;
	st->st_uid = n->uid;
	st->st_gid = n->gid;
	st->st_rdev = n->rdev;
	st->st_nlink = node->kind == NODE_RDIR ? 2 : 1;
	st->st_size = node->kind == NODE_RFILE		    ? n->size
		      : node->kind == NODE_RLINK && n->data ? (off_t)strlen(n->data)
							    : 0;
	st->st_blocks = (st->st_size + 511) / 512;
	pthread_mutex_lock(&t->nodes.lock);
	st->st_mtime = st->st_ctime = st->st_atime = n->mtime;
	pthread_mutex_unlock(&t->nodes.lock);
	return 0;
}

static double rnode_timeout(struct tree *t, struct node *n)
{
	return IMMUTABLE_TIMEOUT;
}

static mode_t rnode_type(const struct node *n)
{
	return rnode_of(n)->mode & S_IFMT;
}

static ssize_t rnode_getxattr(
	struct tree *t, struct node *node, const char *name, char *buf, size_t size)
{
	struct rnode *n = rnode_of(node);

	return tree_xattr_get(n->xattrs, n->n_xattrs, name, buf, size);
}

static ssize_t rnode_listxattr(struct tree *t, struct node *node, char *buf, size_t size)
{
	struct rnode *n = rnode_of(node);

	return tree_xattr_list(n->xattrs, n->n_xattrs, NULL, buf, size);
}

static int rfile_open(struct tree *t, struct node *n, int flags, struct node_file *f)
{
	if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))
		return -EROFS;
	if (n->kind != NODE_RFILE)
		return n->kind == NODE_RDIR ? -EISDIR : -EACCES;
	f->image = true;
	/* pages kept from before the layer verified may be wrong */
	pthread_mutex_lock(&rnode_of(n)->rootfs->lock);
	f->keep_cache = layer_verified(rnode_of(n)->layer);
	pthread_mutex_unlock(&rnode_of(n)->rootfs->lock);
	return 0;
}

/*
 * The layer of a file, old, went bad (its published index did not match):
 * the file's bytes from the layer that replaces it, found by their tar
 * path. 0, or -EIO when they are not there the same.
 */
static int rfile_refresh(struct tree *t, struct rnode *n, struct layer *old)
{
	struct rootfs *rf = n->rootfs;
	const struct layer_entry *e;
	struct layer *l;
	int ret = 0;

	pthread_mutex_lock(&rf->lock);
	if (n->layer == old) {
		ret = n->data_layer < rf->n && *n->data ? layer_at(t, rf, n->data_layer, &l) : -EIO;
		e = ret ? NULL : layer_find(l, n->data);
		if (e && e->type == '0' && e->size == n->size && l != old) {
			n->layer = l;
			n->entry = e;
			n->data_off = e->offset;
		} else {
			ret = -EIO;
		}
	}
	pthread_mutex_unlock(&rf->lock);
	return ret;
}

/* Room in the array *v of n elements of size bytes for one more (grown by 64): false on ENOMEM. */
static bool room(void **v, size_t n, size_t size)
{
	void *nv;

	if (n % 64)
		return true;
	nv = realloc(*v, (n + 64) * size);
	if (nv)
		*v = nv;
	return nv != NULL;
}

/*
 * Whether layer l is bad (its published index lied) and this is the first
 * to see it: then every node an image made while l was in use is dropped,
 * with the kernel's entries for them, and made again from the layer read
 * whole. Nodes still open stay usable (rfile_refresh()); nothing made from
 * the lying index is found again.
 */
static void drop_bad(struct tree *t, struct layer *l)
{
	struct rootfs **rfs = NULL;
	struct node *n, **v = NULL;
	size_t nrf = 0, cnt = 0, i, j;
	bool uses;

	if (!l || !layer_bad_claim(l))
		return;
	/* the images with nodes: each held while its layers are looked at */
	pthread_mutex_lock(&t->nodes.lock);
	for (n = t->nodes.all; n; n = n->all_next) {
		struct rootfs *rf;

		if (n->kind < NODE_RDIR || n->dead || n->orphan)
			continue;
		rf = rnode_of(n)->rootfs;
		for (j = 0; j < nrf && rfs[j] != rf; j++)
			;
		if (j < nrf || !rf)
			continue;
		if (!room((void **)&rfs, nrf, sizeof(*rfs)))
			break;
		__atomic_add_fetch(&rf->refs, 1, __ATOMIC_RELAXED);
		rfs[nrf++] = rf;
	}
	pthread_mutex_unlock(&t->nodes.lock);
	for (i = 0; i < nrf; i++) {
		struct rootfs *rf = rfs[i];

		pthread_mutex_lock(&rf->lock);
		for (j = 0, uses = false; j < rf->n && !uses; j++)
			uses = rf->layers[j].l == l;
		if (uses)
			rf->root_from = 0;
		pthread_mutex_lock(&t->nodes.lock);
		if (uses) {
			rf->root_has = false;
			/* listed before: its children are to be made again */
			if (rf->root)
				rf->root->partial = true;
		}
		/* the top of what the image showed: what is below goes with it */
		for (n = uses ? t->nodes.all : NULL; n; n = n->all_next) {
			if (n->kind < NODE_RDIR || n->dead || n->orphan || !n->parent ||
				rnode_of(n)->rootfs != rf || n->parent != rf->root)
				continue;
			if (!room((void **)&v, cnt, sizeof(*v)))
				break;
			v[cnt++] = n;
		}
		for (j = 0; j < cnt; j++)
			if (!v[j]->orphan) {
				/* the kernel's entry goes after the lock: the name stays while in use */
				node_hold(&t->nodes, v[j]);
				node_delete(&t->nodes, v[j]->parent, v[j]);
			}
		pthread_mutex_unlock(&t->nodes.lock);
		pthread_mutex_unlock(&rf->lock);
		log_warn("%s: what was shown from a published index that lied is dropped: %zu "
			 "entries made again from the whole layer",
			rf->label, cnt);
		for (j = 0; j < cnt; j++)
			tree_inval_entry(t, rf->root, v[j]->name);
		if (uses)
			tree_inval_inode(t, rf->root);
		pthread_mutex_lock(&t->nodes.lock);
		for (j = 0; j < cnt; j++)
			node_drop(&t->nodes, v[j]);
		pthread_mutex_unlock(&t->nodes.lock);
		cnt = 0;
		rootfs_unref(t, rf);
	}
	free(v);
	free(rfs);
}

static ssize_t rfile_read(struct tree *t, struct node_file *f, char *buf, size_t size, off_t off)
{
	struct rnode *n = rnode_of(f->node);
	const struct layer_entry *e;
	struct layer *l;
	int64_t at;
	ssize_t r;
	int tries;

	if (off >= n->size)
		return 0;
	if ((int64_t)size > n->size - off)
		size = (size_t)(n->size - off);
	for (tries = 0;; tries++) {
		pthread_mutex_lock(&n->rootfs->lock);
		l = n->layer;
		e = n->entry;
		at = n->data_off;
		pthread_mutex_unlock(&n->rootfs->lock);
		r = 0;
		/* a published index's word for the file, checked on its first read */
		if (__atomic_load_n(&n->checked, __ATOMIC_ACQUIRE) != l) {
			r = e ? layer_check_entry(l, e) : 0;
			/* after a refresh, a link's entry is of the layer that went bad */
			if (!r && n->link_entry && (n->link_layer == l || tries == 0))
				r = layer_check_entry(n->link_layer, n->link_entry);
			if (!r)
				__atomic_store_n(&n->checked, l, __ATOMIC_RELEASE);
		}
		if (!r)
			r = layer_read(l, buf, size, at + off);
		if (r == -EIO) {
			drop_bad(t, l);
			if (n->link_layer && layer_bad(n->link_layer)) {
				drop_bad(t, n->link_layer);
				return r;
			}
		}
		if (r != -EIO || tries || !layer_bad(l) || rfile_refresh(t, n, l))
			return r;
	}
}

static int rlink_readlink(struct tree *t, struct node *n, const char **target)
{
	if (n->kind != NODE_RLINK || !rnode_of(n)->data)
		return -EINVAL;
	*target = rnode_of(n)->data;
	return 0;
}

static void rnode_release(struct tree *t, struct node *node)
{
	struct rnode *n = rnode_of(node);

	if (n->rootfs)
		rootfs_unref(t, n->rootfs);
	free(n->data);
	tree_xattrs_free(n->xattrs, n->n_xattrs);
}

static const struct node_ops rootfs_ops = {
	.name = "images",
	.lookup = rdir_lookup,
	.list = rdir_list,
	.getattr = rnode_getattr,
	.timeout = rnode_timeout,
	.type = rnode_type,
	.getxattr = rnode_getxattr,
	.listxattr = rnode_listxattr,
	.open = rfile_open,
	.read = rfile_read,
	.readlink = rlink_readlink,
	.release = rnode_release,
};

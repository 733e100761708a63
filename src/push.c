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
#include "push.h"
#include "ref.h"
#include "registry.h"
#include "tree-int.h"

#define XATTR_ANN "user.oci.annotation."
/* How long a draft whose push failed waits before the pusher tries again. */
#define RETRY_SECS 5.0

/* A file written into the mount. */
struct staged {
	char *path; /* its bytes: in the draft's directory, or the cache's blob once pushed */
	pthread_mutex_t lock; /* the hashing fields */
	struct digest_ctx *hash; /* over [0, hashed) while writes come in order */
	int64_t hashed; /* -1: written out of order, hash the file again */
	bool changed; /* protected by t->lock: written since its blob was uploaded */
	unsigned writers; /* protected by t->lock */
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
};

static void draft_discard(struct tree *t, struct node *art);
static int push_errno(int err);

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void staged_free(struct staged *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	while (s->up_busy)
		pthread_cond_wait(&s->up_cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	digest_ctx_free(s->hash);
	free(s->up_location);
	free(s->up_repo);
	pthread_cond_destroy(&s->up_cond);
	pthread_mutex_destroy(&s->flush_lock);
	pthread_mutex_destroy(&s->lock);
	free(s->path);
	free(s);
}

static void draft_free(struct draft *d)
{
	if (!d)
		return;
	json_object_put(d->base);
	json_object_put(d->subject);
	free(d->attach_type);
	free(d->replaces);
	pthread_mutex_destroy(&d->save_lock);
	free(d->dir);
	free(d);
}

void push_node_release(struct node *n)
{
	staged_free(n->staged);
	draft_free(n->draft);
	n->staged = NULL;
	n->draft = NULL;
}

/* ---- where a change goes ---- */

static const char *xattr_get(const struct node *n, const char *name)
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
	if (manifest_type_is_index(xattr_get(n, "user.oci.mediaType"))) {
		log_warn("%s:%s: an index cannot be changed file by file", n->repo, n->ref);
		return -EROFS;
	}
	*art = n;
	return 0;
}

/* The title of n: its path below art. */
static int title_of(
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

static int mkdir_random(const char *parent, char *out, size_t n)
{
	unsigned char r[8];
	int i;

	for (i = 0; i < 8; i++) {
		if (RAND_bytes(r, sizeof(r)) != 1)
			return -EIO;
		if ((size_t)snprintf(out, n, "%s/%02x%02x%02x%02x%02x%02x%02x%02x", parent, r[0],
			    r[1], r[2], r[3], r[4], r[5], r[6], r[7]) >= n)
			return -ENAMETOOLONG;
		if (mkdir(out, 0700) == 0)
			return 0;
		if (errno != EEXIST)
			return -errno;
	}
	return -EEXIST;
}

static void remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[PATH_MAX];

	if (d) {
		while ((e = readdir(d)))
			if (e->d_name[0] != '.') {
				snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
				unlink(p);
			}
		closedir(d);
	}
	rmdir(dir);
}

/* Give art a draft (of its current manifest) unless it has one. 0 or -errno. */
static int draft_begin(struct tree *t, struct node *art)
{
	struct draft *d;
	char dir[PATH_MAX], base[PATH_MAX], *body = NULL;
	size_t len;
	int ret;

	pthread_mutex_lock(&art->load_lock);
	pthread_mutex_lock(&t->lock);
	d = art->draft;
	pthread_mutex_unlock(&t->lock);
	if (d) {
		pthread_mutex_unlock(&art->load_lock);
		return 0;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		ret = -ENOMEM;
		goto out;
	}
	pthread_mutex_init(&d->save_lock, NULL);
	snprintf(base, sizeof(base), "%s/staging", cache_dir(t->cache));
	ret = mkdir_random(base, dir, sizeof(dir));
	if (ret) {
		log_err("staging directory in %s: %s", base, strerror(-ret));
		goto out;
	}
	d->dir = strdup(dir);
	if (!d->dir) {
		ret = -ENOMEM;
		goto out;
	}
	if (art->digest && !art->local) {
		ret = cache_get(t->cache, art->digest, MANIFEST_MAX_SIZE, &body, &len);
		if (ret == 0)
			d->base = json_tokener_parse(body);
		free(body);
		if (!d->base) {
			log_err("%s:%s: the manifest to change is not at hand", art->repo,
				art->ref);
			ret = -EIO;
			goto out;
		}
	}
	pthread_mutex_lock(&t->lock);
	{
		struct push *p = t->push;
		struct node **v = realloc(p->drafts, (p->n_drafts + 1) * sizeof(*v));

		if (!v) {
			pthread_mutex_unlock(&t->lock);
			ret = -ENOMEM;
			goto out;
		}
		p->drafts = v;
		v[p->n_drafts++] = art;
	}
	d->changed_at = mono();
	art->draft = d;
	tree_node_keep(t, art);
	d = NULL;
	pthread_mutex_unlock(&t->lock);
	ret = 0;
out:
	if (d && d->dir)
		rmdir(d->dir);
	draft_free(d);
	pthread_mutex_unlock(&art->load_lock);
	return ret;
}

/* ---- the draft on disk ---- */

static struct json_object *json_str(const char *s)
{
	return json_object_new_string(s ? s : "");
}

/* Layer annotations from a node's user.oci.annotation.* xattrs, the title first. */
static struct json_object *layer_annotations(const struct node *n, const char *title)
{
	struct json_object *a = json_object_new_object();
	size_t i;

	json_object_object_add(a, ANN_TITLE, json_str(title));
	for (i = 0; i < n->n_xattrs; i++) {
		const char *k = n->xattrs[i].name;

		if (strncmp(k, XATTR_ANN, strlen(XATTR_ANN)) != 0)
			continue;
		k += strlen(XATTR_ANN);
		if (strcmp(k, ANN_TITLE) != 0)
			json_object_object_add(a, k, json_str(n->xattrs[i].value));
	}
	return a;
}

/* Append a layer per file below dir (titles "prefix/name"). Caller holds t->lock. */
static int collect_layers(
	struct node *art, struct node *dir, struct json_object *layers, struct json_object *staged)
{
	char title[4096];
	size_t i;
	int ret = 0;

	for (i = 0; i < dir->n_children && !ret; i++) {
		struct node *c = dir->children[i];
		struct json_object *l;
		const char *mt;

		if (c->hidden)
			continue;
		if (c->kind == NODE_DIR) {
			ret = collect_layers(art, c, layers, staged);
			continue;
		}
		if (c->kind != NODE_BLOB && c->kind != NODE_STAGED)
			continue;
		ret = title_of(art, c, NULL, title, sizeof(title));
		if (ret)
			break;
		mt = xattr_get(c, "user.oci.mediaType");
		l = json_object_new_object();
		json_object_object_add(l, "mediaType", json_str(mt ? mt : MT_LAYER_TAR));
		json_object_object_add(l, "digest", json_str(c->digest));
		json_object_object_add(l, "size", json_object_new_int64(c->size > 0 ? c->size : 0));
		json_object_object_add(l, "annotations", layer_annotations(c, title));
		if (c->kind == NODE_STAGED) {
			struct json_object *s = json_object_new_object();
			const char *base = strrchr(c->staged->path, '/');

			json_object_object_add(s, "layer",
				json_object_new_int((int)json_object_array_length(layers)));
			json_object_object_add(s, "file", json_str(base ? base + 1 : ""));
			/* its blob went up when it was closed, and it has not changed since */
			if (!c->staged->changed && c->digest)
				json_object_object_add(s, "uploaded", json_object_new_boolean(1));
			json_object_array_add(staged, s);
		}
		json_object_array_add(layers, l);
	}
	return ret;
}

/* What the draft of art would push, as oras push makes it. Caller holds t->lock. */
static struct json_object *draft_manifest(
	struct tree *t, struct node *art, struct json_object *staged)
{
	struct draft *d = art->draft;
	struct json_object *m = json_object_new_object(), *v, *layers, *ann;
	const char *at = xattr_get(art, "user.oci.artifactType");
	size_t i, n;

	json_object_object_add(m, "schemaVersion", json_object_new_int(2));
	json_object_object_add(m, "mediaType", json_str(MT_OCI_MANIFEST));
	if (d->attach_type && !d->type_set) {
		json_object_object_add(m, "artifactType", json_str(d->attach_type));
	} else if (d->base && !d->type_set) {
		if (json_object_object_get_ex(d->base, "artifactType", &v))
			json_object_object_add(m, "artifactType", json_object_get(v));
	} else {
		json_object_object_add(m, "artifactType",
			json_str(at			 ? at
				 : t->opts.artifact_type ? t->opts.artifact_type
							 : "application/vnd.unknown.artifact.v1"));
	}
	if (d->base && json_object_object_get_ex(d->base, "config", &v)) {
		json_object_object_add(m, "config", json_object_get(v));
	} else {
		v = json_object_new_object();
		json_object_object_add(v, "mediaType", json_str(MT_EMPTY));
		json_object_object_add(v, "digest", json_str(EMPTY_DIGEST));
		json_object_object_add(v, "size", json_object_new_int(2));
		json_object_object_add(v, "data", json_str("e30="));
		json_object_object_add(m, "config", v);
	}
	layers = json_object_new_array();
	/* Layers without a title (an image's) are not files here: they stay as they were. */
	if (d->base && json_object_object_get_ex(d->base, "layers", &v) &&
		json_object_is_type(v, json_type_array)) {
		n = json_object_array_length(v);
		for (i = 0; i < n; i++) {
			struct json_object *l = json_object_array_get_idx(v, i), *a, *title;

			if (!(json_object_object_get_ex(l, "annotations", &a) &&
				    json_object_object_get_ex(a, ANN_TITLE, &title)))
				json_object_array_add(layers, json_object_get(l));
		}
	}
	if (collect_layers(art, art, layers, staged)) {
		json_object_put(layers);
		json_object_put(m);
		return NULL;
	}
	json_object_object_add(m, "layers", layers);
	if (d->subject)
		json_object_object_add(m, "subject", json_object_get(d->subject));
	else if (d->base && json_object_object_get_ex(d->base, "subject", &v))
		json_object_object_add(m, "subject", json_object_get(v));
	ann = json_object_new_object();
	for (i = 0; i < art->n_xattrs; i++) {
		const char *k = art->xattrs[i].name;

		if (strncmp(k, XATTR_ANN, strlen(XATTR_ANN)) == 0)
			json_object_object_add(
				ann, k + strlen(XATTR_ANN), json_str(art->xattrs[i].value));
	}
	json_object_object_add(m, "annotations", ann);
	return m;
}

/* Write art's draft.json: what a later daemon needs to push it. 0 or -errno. */
static int draft_save(struct tree *t, struct node *art)
{
	struct json_object *root, *staged = json_object_new_array(), *m;
	char path[PATH_MAX], tmp[PATH_MAX];
	struct draft *d;
	const char *s;
	int fd, ret = 0;

	pthread_mutex_lock(&t->lock);
	d = art->draft;
	if (!d) {
		pthread_mutex_unlock(&t->lock);
		json_object_put(staged);
		return 0;
	}
	pthread_mutex_lock(&d->save_lock);
	m = draft_manifest(t, art, staged);
	pthread_mutex_unlock(&t->lock);
	if (!m) {
		json_object_put(staged);
		ret = -ENAMETOOLONG;
		goto out;
	}
	root = json_object_new_object();
	json_object_object_add(root, "host", json_str(registry_host(art->site->reg)));
	json_object_object_add(root, "repo", json_str(art->repo));
	/* a referrer is pushed by digest: no tag */
	if (!art->draft->subject)
		json_object_object_add(root, "tag", json_str(art->ref));
	if (art->draft->replaces)
		json_object_object_add(root, "replaces", json_str(art->draft->replaces));
	json_object_object_add(root, "manifest", m);
	json_object_object_add(root, "staged", staged);
	s = json_object_to_json_string_ext(
		root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	snprintf(path, sizeof(path), "%s/draft.json", d->dir);
	snprintf(tmp, sizeof(tmp), "%s/draft.json.tmp", d->dir);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	/* rename makes it atomic; the staged files are not synced either */
	if (fd < 0 || write(fd, s, strlen(s)) != (ssize_t)strlen(s) || rename(tmp, path))
		ret = -errno;
	if (fd >= 0)
		close(fd);
	json_object_put(root);
	if (ret)
		log_err("%s: %s", path, strerror(-ret));
out:
	pthread_mutex_unlock(&d->save_lock);
	return ret;
}

/* A change to art's draft: counted, and the pusher told. */
static void draft_bump(struct tree *t, struct node *art)
{
	pthread_mutex_lock(&t->lock);
	if (art->draft) {
		art->draft->gen++;
		art->draft->changed_at = mono();
	}
	art->mtime = time(NULL);
	pthread_cond_signal(&t->push->cond);
	pthread_mutex_unlock(&t->lock);
}

/* A change that a crash must not lose: counted, and the draft saved. */
static int draft_touch(struct tree *t, struct node *art)
{
	draft_bump(t, art);
	return draft_save(t, art);
}

/* ---- pushing a draft.json ---- */

/*
 * Another repository of the same registry this tree has seen holding blob
 * digest (a file read through the mount), to mount it from rather than upload
 * it again; malloc'd, or NULL.
 */
static char *blob_source(struct tree *t, struct registry *r, const char *repo, const char *digest)
{
	struct node *n;
	char *from = NULL;

	pthread_mutex_lock(&t->lock);
	for (n = t->all; n && !from; n = n->all_next)
		if (n->kind == NODE_BLOB && !n->is_manifest && n->digest && n->site &&
			n->site->reg == r && n->repo && strcmp(n->repo, repo) != 0 &&
			strcmp(n->digest, digest) == 0)
			from = strdup(n->repo);
	pthread_mutex_unlock(&t->lock);
	return from;
}

/* Upload a blob of size bytes from fd into repo, mounting it from a repository that has it. */
static int upload(struct tree *t, struct registry *r, const char *repo, const char *digest, int fd,
	int64_t size)
{
	char *from = blob_source(t, r, repo, digest);
	int ret = registry_push_blob(r, repo, digest, fd, size, from);

	free(from);
	return ret;
}

/* The empty config ("{}") into repo, unless it is there. */
static int push_empty_config(struct registry *r, const char *repo)
{
	int fd, ret;

	if (registry_blob_exists(r, repo, EMPTY_DIGEST) == 0)
		return 0;
	fd = memfd_create("ocifs-empty", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = write(fd, "{}", 2) == 2 ? 0 : -EIO;
	if (!ret)
		ret = registry_push_blob(r, repo, EMPTY_DIGEST, fd, 2, NULL);
	close(fd);
	return ret;
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
		       ? json_object_get_string(v)
		       : NULL;
}

/*
 * Add the manifest digest (m, len bytes; NULL to remove digest instead) to
 * the fallback referrers index of subject (the tag sha256-<hex>), keeping
 * every other entry and field of it. 0 or -errno.
 */
static int referrers_index_update(struct registry *r, const char *repo, const char *subject,
	const char *digest, struct json_object *m, size_t len)
{
	struct json_object *idx = NULL, *list, *nl, *e, *v;
	char tag[80], *body = NULL, *ct = NULL, *got = NULL;
	const char *text;
	size_t blen, i, n;
	int ret;

	if (!subject || !digest_hex(subject))
		return -EBADMSG;
	snprintf(tag, sizeof(tag), "sha256-%.64s", digest_hex(subject));
	ret = registry_get_manifest(r, repo, tag, &body, &blen, &ct, &got);
	if (ret == 0)
		idx = json_tokener_parse(body);
	else if (ret == -ENOENT && m)
		idx = json_tokener_parse("{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX
					 "\",\"manifests\":[]}");
	else if (ret == -ENOENT)
		return 0; /* nothing to remove it from */
	if (!idx || !json_object_object_get_ex(idx, "manifests", &list) ||
		!json_object_is_type(list, json_type_array)) {
		log_err("%s/%s:%s: not a referrers index", registry_host(r), repo, tag);
		ret = ret ? ret : -EBADMSG;
		goto out;
	}
	/* the same entry once: a push again of the same referrer replaces it */
	nl = json_object_new_array();
	n = json_object_array_length(list);
	for (i = 0; i < n; i++) {
		e = json_object_array_get_idx(list, i);
		if (!(jstr(e, "digest") && strcmp(jstr(e, "digest"), digest) == 0))
			json_object_array_add(nl, json_object_get(e));
	}
	if (m) {
		e = json_object_new_object();
		json_object_object_add(e, "mediaType", json_str(MT_OCI_MANIFEST));
		json_object_object_add(e, "digest", json_str(digest));
		json_object_object_add(e, "size", json_object_new_int64((int64_t)len));
		if (json_object_object_get_ex(m, "artifactType", &v))
			json_object_object_add(e, "artifactType", json_object_get(v));
		if (json_object_object_get_ex(m, "annotations", &v))
			json_object_object_add(e, "annotations", json_object_get(v));
		json_object_array_add(nl, e);
	}
	json_object_object_add(idx, "manifests", nl);
	text = json_object_to_json_string_ext(
		idx, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	ret = registry_put_manifest(r, repo, tag, MT_OCI_INDEX, text, strlen(text), NULL);
out:
	json_object_put(idx);
	free(body);
	free(ct);
	free(got);
	return ret;
}

/*
 * A referrer pushed anew (files removed from it) takes the place of the old
 * one: the old manifest deleted, its entry out of the subject's fallback
 * index. The new one is up already, so a failure here loses nothing: logged.
 */
static void replaced_detach(
	struct registry *r, const char *repo, const char *subject, const char *old, const char *now)
{
	int ret = registry_delete_manifest(r, repo, old);

	if (ret == 0 || ret == -ENOENT)
		ret = referrers_index_update(r, repo, subject, old, NULL, 0);
	if (ret)
		log_warn("%s/%s@%s: replaced by %s, but still attached: %s", registry_host(r), repo,
			old, now, strerror(-ret));
	else
		log_info("%s/%s@%s: detached, replaced by %s", registry_host(r), repo, old, now);
}

/*
 * Push what dir/draft.json describes: every staged file's blob (hashed if
 * its digest is not known yet), the empty config, then the manifest under
 * the tag. On success *root is the draft (its layer digests filled in),
 * *body the manifest pushed and digest its digest. 0 or -errno.
 */
static int push_draft_dir(struct tree *t, const char *dir, struct json_object **root_out,
	char **body_out, char *digest, char *label, size_t label_size)
{
	struct json_object *root, *m, *staged, *layers, *ann, *cfg, *subj = NULL;
	char path[PATH_MAX], created[32], *text = NULL;
	const char *host, *repo, *tag, *s;
	struct site *site;
	size_t i, n, len;
	struct tm tm;
	time_t now;
	bool kept = false;
	int ret;

	snprintf(path, sizeof(path), "%s/draft.json", dir);
	root = json_object_from_file(path);
	host = root ? jstr(root, "host") : NULL;
	repo = root ? jstr(root, "repo") : NULL;
	tag = root ? jstr(root, "tag") : NULL;
	snprintf(label, label_size, "%s/%s:%s", host ? host : "?", repo ? repo : "?",
		tag ? tag : "(a referrer)");
	if (!host || !repo || !ref_valid_repo(repo) || (tag && !ref_valid_tag(tag)) ||
		!json_object_object_get_ex(root, "manifest", &m) ||
		(!tag && !json_object_object_get_ex(m, "subject", &subj)) ||
		!json_object_object_get_ex(m, "layers", &layers) ||
		!json_object_object_get_ex(root, "staged", &staged)) {
		log_err("%s: not a draft ocifs can read", path);
		json_object_put(root);
		return -EBADMSG;
	}
	ret = tree_site_get(t, host, &site);
	if (ret)
		goto out;
	n = json_object_array_length(staged);
	for (i = 0; i < n && !ret; i++) {
		struct json_object *e = json_object_array_get_idx(staged, i), *l, *li, *up;
		const char *file = jstr(e, "file");
		char got[DIGEST_STR_LEN + 1];
		int64_t size;
		int fd;

		if (!file || strchr(file, '/') || !json_object_object_get_ex(e, "layer", &li) ||
			!(l = json_object_array_get_idx(layers, (size_t)json_object_get_int(li)))) {
			ret = -EBADMSG;
			break;
		}
		if (json_object_object_get_ex(e, "uploaded", &up) && json_object_get_boolean(up) &&
			(s = jstr(l, "digest")) && digest_supported(s))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, file);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
			log_err("%s: staged file %s: %s", label, path, strerror(errno));
			break;
		}
		ret = digest_fd(fd, -1, got, &size);
		if (!ret) {
			json_object_object_add(l, "digest", json_object_new_string(got));
			json_object_object_add(l, "size", json_object_new_int64(size));
			ret = upload(t, site->reg, repo, got, fd, size);
		}
		close(fd);
	}
	if (!ret && json_object_object_get_ex(m, "config", &cfg) && (s = jstr(cfg, "digest")) &&
		strcmp(s, EMPTY_DIGEST) == 0)
		ret = push_empty_config(site->reg, repo);
	if (ret)
		goto out;
	now = time(NULL);
	gmtime_r(&now, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (!json_object_object_get_ex(m, "annotations", &ann)) {
		ann = json_object_new_object();
		json_object_object_add(m, "annotations", ann);
	}
	json_object_object_add(ann, ANN_CREATED, json_object_new_string(created));
	s = json_object_to_json_string_ext(
		m, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	len = strlen(s);
	text = strdup(s);
	if (!text) {
		ret = -ENOMEM;
		goto out;
	}
	digest_buffer(text, len, digest);
	ret = registry_put_manifest(
		site->reg, repo, tag ? tag : digest, MT_OCI_MANIFEST, text, len, &kept);
	/* A registry without the referrers API: the subject's fallback index gets the entry. */
	if (!ret && subj && !kept)
		ret = referrers_index_update(site->reg, repo, jstr(subj, "digest"), digest, m, len);
	if (ret)
		goto out;
	cache_put(t->cache, digest, text, len);
	if (!tag)
		snprintf(label, label_size, "%s/%s@%s", host, repo, digest);
	log_info("%s: pushed %s", label, digest);
	s = jstr(root, "replaces");
	if (subj && s && ref_valid_digest(s) && strcmp(s, digest) != 0)
		replaced_detach(site->reg, repo, jstr(subj, "digest"), s, digest);
	*root_out = root;
	*body_out = text;
	return 0;
out:
	free(text);
	json_object_put(root);
	return ret;
}

/* ---- after a push ---- */

/* Staged files of the subtree below n become blobs of the cache; their nodes follow them. */
static void adopt_staged(struct tree *t, struct node *n, struct json_object *root)
{
	struct json_object *staged, *m, *layers;
	size_t i, k, ns;

	if (!json_object_object_get_ex(root, "staged", &staged) ||
		!json_object_object_get_ex(root, "manifest", &m) ||
		!json_object_object_get_ex(m, "layers", &layers))
		return;
	ns = json_object_array_length(staged);
	for (i = 0; i < n->n_children; i++) {
		struct node *c = n->children[i];
		const char *base;

		if (c->kind == NODE_DIR && !c->hidden)
			adopt_staged(t, c, root);
		if (c->kind != NODE_STAGED || !c->staged)
			continue;
		base = strrchr(c->staged->path, '/');
		for (k = 0; base && k < ns; k++) {
			struct json_object *e = json_object_array_get_idx(staged, k), *li, *l;
			const char *file = jstr(e, "file"), *dg;
			char to[PATH_MAX], *p;

			if (!file || strcmp(file, base + 1) != 0 ||
				!json_object_object_get_ex(e, "layer", &li))
				continue;
			l = json_object_array_get_idx(layers, (size_t)json_object_get_int(li));
			dg = l ? jstr(l, "digest") : NULL;
			if (dg && cache_adopt(t->cache, dg, c->staged->path, to, sizeof(to)) == 0 &&
				(p = strdup(to))) {
				free(c->staged->path);
				c->staged->path = p;
			}
			break;
		}
	}
}

/* Take art's draft off the pusher's list. Caller holds t->lock. */
static void drafts_remove(struct tree *t, struct node *art)
{
	struct push *p = t->push;
	size_t i;

	for (i = 0; i < p->n_drafts; i++)
		if (p->drafts[i] == art) {
			p->drafts[i] = p->drafts[--p->n_drafts];
			break;
		}
}

/* art is in the registry now: so are the new repositories above it. Caller holds t->lock. */
static void mark_pushed(struct tree *t, struct node *art)
{
	struct node *n;

	art->local = false;
	tree_node_keep(t, art);
	for (n = art->parent; n && n->kind == NODE_NS; n = n->parent) {
		n->tags_at = 0; /* list again: the tag is there */
		n->local = false;
		n->new_repo = false;
		tree_node_keep(t, n);
	}
}

/*
 * Push art's draft (force: whatever push_delay and open files say). 0,
 * or the push's error (logged, the draft kept for another try).
 */
static int draft_push(struct tree *t, struct node *art, bool force)
{
	struct json_object *root = NULL;
	char digest[DIGEST_STR_LEN + 1], label[600], dir[PATH_MAX];
	struct draft *d;
	unsigned gen;
	char *body = NULL;
	int ret;

	pthread_mutex_lock(&t->push->push_lock);
	pthread_mutex_lock(&t->lock);
	d = art->draft;
	if (!d || (d->gen == d->pushed_gen && !force)) {
		pthread_mutex_unlock(&t->lock);
		pthread_mutex_unlock(&t->push->push_lock);
		return 0;
	}
	/* art's draft pins it; the push may drop that pin while art is still used */
	tree_node_hold(t, art);
	gen = d->gen;
	snprintf(dir, sizeof(dir), "%s", d->dir);
	pthread_mutex_unlock(&t->lock);

	ret = draft_save(t, art);
	if (!ret)
		ret = push_draft_dir(t, dir, &root, &body, digest, label, sizeof(label));
	if (ret) {
		log_err("%s: push failed: %s; the staged files stay in %s", label, strerror(-ret),
			dir);
		pthread_mutex_lock(&t->lock);
		if (art->draft) {
			art->draft->retry_at = mono() + RETRY_SECS;
			art->draft->last_err = ret;
		}
		t->push->failures++;
		pthread_mutex_unlock(&t->lock);
		goto out;
	}
	pthread_mutex_lock(&art->load_lock);
	pthread_mutex_lock(&t->lock);
	d = art->draft;
	if (d && d->gen != gen) {
		/* Changed while it was pushing: the next push takes the rest. */
		d->pushed_gen = gen;
		pthread_mutex_unlock(&t->lock);
		pthread_mutex_unlock(&art->load_lock);
		goto out;
	}
	adopt_staged(t, art, root);
	art->draft = NULL;
	tree_node_keep(t, art);
	drafts_remove(t, art);
	t->push->pushed++;
	if (d && d->subject) {
		/* It shows under its digest now, with the subject's other referrers. */
		if (art->parent)
			tree_node_delete(t, art->parent, art);
		if (d->referrers) {
			d->referrers->loaded = false;
			d->referrers->local = false;
			tree_node_keep(t, d->referrers);
		}
		pthread_mutex_unlock(&t->lock);
		pthread_mutex_unlock(&art->load_lock);
		ret = 0;
	} else {
		mark_pushed(t, art);
		pthread_mutex_unlock(&t->lock);
		ret = tree_artifact_install(t, art, digest, body, strlen(body));
		pthread_mutex_unlock(&art->load_lock);
	}
	if (d)
		remove_tree(d->dir);
	draft_free(d);
out:
	pthread_mutex_lock(&t->lock);
	tree_node_drop(t, art);
	pthread_mutex_unlock(&t->lock);
	json_object_put(root);
	free(body);
	pthread_mutex_unlock(&t->push->push_lock);
	return ret;
}

/* Whether the draft of art holds any file (an emptied one waits for sync DIR). */
static bool has_files(const struct node *n)
{
	size_t i;

	for (i = 0; i < n->n_children; i++) {
		const struct node *c = n->children[i];

		if (c->hidden)
			continue;
		if (c->kind == NODE_BLOB || c->kind == NODE_STAGED ||
			(c->kind == NODE_DIR && has_files(c)))
			return true;
	}
	return false;
}

/* Drafts left in the staging area by an earlier daemon: push them, or say why not. */
static void recover(struct tree *t)
{
	char base[PATH_MAX], dir[PATH_MAX], path[PATH_MAX], label[600];
	char digest[DIGEST_STR_LEN + 1];
	struct strlist *l = &t->push->leftover;
	size_t i;

	snprintf(base, sizeof(base), "%s/staging", cache_dir(t->cache));
	for (i = 0; i < l->n; i++) {
		struct json_object *root = NULL;
		char *body = NULL;
		int ret;

		if ((size_t)snprintf(dir, sizeof(dir), "%s/%s", base, l->v[i]) >= sizeof(dir) ||
			(size_t)snprintf(path, sizeof(path), "%s/draft.json", dir) >= sizeof(path))
			continue;
		if (access(path, F_OK) != 0) {
			/*
			 * No file of it was ever closed: nothing complete to push. A
			 * file being written when the daemon stopped is dropped, said.
			 */
			uint64_t bytes = cache_files_bytes(dir, false);

			if (bytes > 0)
				log_warn("staging %s: %llu bytes of files an earlier run was still "
					 "writing when it stopped (never closed): dropped",
					l->v[i], (unsigned long long)bytes);
			remove_tree(dir);
			continue;
		}
		{
			struct json_object *j = json_object_from_file(path);
			const char *host = j ? jstr(j, "host") : NULL;
			bool ours =
				host && (t->root->kind == NODE_HOSTS ||
						strcmp(ref_canonical_host(host),
							registry_host(t->root->site->reg)) == 0);

			json_object_put(j);
			if (!ours)
				continue; /* another mount's: left for it */
		}
		ret = push_draft_dir(t, dir, &root, &body, digest, label, sizeof(label));
		if (ret == 0) {
			log_info("%s: pushed what an earlier run had staged", label);
			remove_tree(dir);
		} else {
			log_err("%s: staged by an earlier run, push failed: %s; kept in %s", label,
				strerror(-ret), dir);
		}
		json_object_put(root);
		free(body);
	}
	strlist_release(l);
}

/* The staging directories there are before this run makes any. */
static int list_leftovers(struct tree *t)
{
	char base[PATH_MAX];
	struct dirent *e;
	int ret = 0;
	DIR *d;

	snprintf(base, sizeof(base), "%s/staging", cache_dir(t->cache));
	d = opendir(base);
	if (!d)
		return 0;
	while (!ret && (e = readdir(d)))
		if (e->d_name[0] != '.')
			ret = strlist_add(&t->push->leftover, e->d_name);
	closedir(d);
	return ret;
}

static void *pusher(void *arg)
{
	struct tree *t = arg;
	struct push *p = t->push;

	recover(t);
	pthread_mutex_lock(&t->lock);
	while (!p->stop) {
		double now = mono();
		struct node *pick = NULL;
		struct timespec ts;
		size_t i;

		for (i = 0; i < p->n_drafts && !pick; i++) {
			struct node *a = p->drafts[i];
			struct draft *d = a->draft;

			if (d && d->gen != d->pushed_gen && d->writers == 0 &&
				now - d->changed_at >= (double)t->opts.push_delay &&
				now >= d->retry_at && has_files(a))
				pick = a;
		}
		if (pick) {
			unsigned op = tree_op_enter_locked(t);

			pthread_mutex_unlock(&t->lock);
			draft_push(t, pick, false);
			tree_op_leave(t, op);
			pthread_mutex_lock(&t->lock);
			continue;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&p->cond, &t->lock, &ts);
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

int push_start(struct tree *t)
{
	struct push *p = calloc(1, sizeof(*p));
	int ret;

	if (!p)
		return -ENOMEM;
	pthread_cond_init(&p->cond, NULL);
	pthread_mutex_init(&p->push_lock, NULL);
	t->push = p;
	if (t->opts.read_only)
		return 0;
	ret = list_leftovers(t);
	if (ret)
		return ret;
	ret = pthread_create(&p->thread, NULL, pusher, t);
	if (ret) {
		log_err("cannot start the pusher: %s", strerror(ret));
		return -ret;
	}
	p->started = true;
	return 0;
}

void push_stop(struct tree *t)
{
	struct push *p = t->push;
	struct node **v;
	size_t i, n;

	if (!p)
		return;
	if (p->started) {
		pthread_mutex_lock(&t->lock);
		p->stop = true;
		pthread_cond_signal(&p->cond);
		pthread_mutex_unlock(&t->lock);
		pthread_join(p->thread, NULL);
		p->started = false;
	}
	/* Every settled change goes up before the daemon exits. */
	pthread_mutex_lock(&t->lock);
	n = p->n_drafts;
	v = n ? malloc(n * sizeof(*v)) : NULL;
	if (v)
		memcpy(v, p->drafts, n * sizeof(*v));
	pthread_mutex_unlock(&t->lock);
	for (i = 0; v && i < n; i++) {
		bool want;

		pthread_mutex_lock(&t->lock);
		want = v[i]->draft && v[i]->draft->gen != v[i]->draft->pushed_gen &&
		       has_files(v[i]);
		pthread_mutex_unlock(&t->lock);
		if (want)
			draft_push(t, v[i], true);
	}
	free(v);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->push_lock);
	strlist_release(&p->leftover);
	free(p->drafts);
	free(p);
	t->push = NULL;
}

/* ---- operations ---- */

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

/* What a reader of a failed upload or push is told. */
static int push_errno(int err)
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

/* A new staged file in art's draft, open for writing in *fd. Caller holds no lock. */
static int staged_new(struct tree *t, struct node *art, struct staged **out, int *fd)
{
	struct staged *s = calloc(1, sizeof(*s));
	char path[PATH_MAX];
	unsigned k;

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->flush_lock, NULL);
	pthread_cond_init(&s->up_cond, NULL);
	s->up_reg = art->site->reg;
	s->up_repo = strdup(art->repo);
	pthread_mutex_lock(&t->lock);
	k = art->draft ? art->draft->next_file++ : 0;
	snprintf(path, sizeof(path), "%s/f%u", art->draft ? art->draft->dir : "/nonexistent", k);
	pthread_mutex_unlock(&t->lock);
	s->path = strdup(path);
	s->hash = digest_ctx_new();
	if (!s->path || !s->hash || !s->up_repo) {
		staged_free(s);
		return -ENOMEM;
	}
	*fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (*fd < 0) {
		int err = -errno;

		log_err("staging %s: %s", path, strerror(errno));
		staged_free(s);
		return err;
	}
	*out = s;
	return 0;
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
		tree_node_delete(t, ns, n);
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
	if (tree_child_get_or_add(t, ns, n) != n)
		return -EEXIST;
	pthread_mutex_lock(&t->lock);
	tree_node_keep(t, n);
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
		tree_node_keep(t, n);
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
	*out = tree_child_get_or_add(t, dir, n);
	if (*out == n) {
		pthread_mutex_lock(&t->lock);
		tree_node_keep(t, n);
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
	ret = tree_child_find(dir, n->name) ? -EEXIST : tree_child_add(dir, n);
	if (!ret)
		tree_node_keep(t, n);
	pthread_mutex_unlock(&t->lock);
	if (!ret)
		*out = n;
	return ret;
}

/* ---- attaching referrers (.oci/referrers/<type>/<name>/) ---- */

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
	if (!n || !(n->repo = strdup(rn->repo)))
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	n->immutable = false; /* an attach to a digest directory is no change to it */
	rn->local = true; /* kept as made until its attaches are pushed */
	tree_node_keep(t, rn);
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
	mt = xattr_get(subj, "user.oci.mediaType");
	sd = json_object_new_object();
	json_object_object_add(sd, "mediaType", json_str(mt ? mt : MT_OCI_MANIFEST));
	json_object_object_add(sd, "digest", json_str(rn->ref));
	json_object_object_add(sd, "size", json_object_new_int64((int64_t)len));
	if (dir->kind == NODE_DIR) {
		dir->kind = NODE_ARTIFACT;
		dir->ref = strdup(dir->name);
		dir->loaded = true;
		dir->local = true;
		tree_node_keep(t, dir);
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
	int ret;

	ret = registry_delete_manifest(r, c->repo, c->ref);
	if (ret && ret != -ENOENT) {
		log_err("%s/%s@%s: detach: %s", registry_host(r), c->repo, c->ref, strerror(-ret));
		return push_errno(ret);
	}
	ret = referrers_index_update(r, rn->repo, rn->ref, c->ref, NULL, 0);
	if (ret)
		return push_errno(ret);
	log_info("%s/%s@%s: detached from %s", registry_host(r), c->repo, c->ref, rn->ref);
	pthread_mutex_lock(&t->lock);
	draft_discard(t, c); /* the removals of rm -r, staged before this rmdir */
	tree_node_delete(t, dir, c);
	rn->loaded = false;
	pthread_mutex_unlock(&t->lock);
	return 0;
}

/* rmdir below referrers/: a referrer (detach), an attach not pushed yet, or a type level. */
static int referrers_rmdir(struct tree *t, struct node *rn, struct node *dir, const char *name)
{
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
	empty = c->n_children == 0 || (c->kind == NODE_ARTIFACT && !has_files(c));
	if (!c->local)
		ret = -EROFS;
	else if (!empty)
		ret = -ENOTEMPTY;
	else {
		if (c->kind == NODE_ARTIFACT)
			draft_discard(t, c);
		tree_node_delete(t, dir, c);
	}
	pthread_mutex_unlock(&t->lock);
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
	n = tree_node_new(t, dir, name, NODE_DIR);
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
		art->draft->changed_at = mono();
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
		ret = title_of(art, dir, name, title, sizeof(title));
	old = ret ? NULL : tree_child_find(dir, name);
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
	n = tree_node_new(t, dir, name, NODE_STAGED);
	if (!n || !(n->repo = strdup(art->repo))) {
		ret = -ENOMEM;
		goto fail;
	}
	pthread_mutex_lock(&t->lock);
	if (tree_child_find(dir, name)) {
		pthread_mutex_unlock(&t->lock);
		ret = -EEXIST;
		goto fail;
	}
	ret = tree_child_add(dir, n);
	if (!ret) {
		n->site = art->site;
		n->local = true;
		tree_node_keep(t, n);
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

/* Copy the registry's bytes of blob node n into fd, hashing them into s. */
static int copy_up(struct tree *t, struct node *n, struct staged *s, int fd)
{
	struct blob_reader rd = { 0, 0, 0 };
	struct blob *b;
	char buf[128 * 1024];
	int64_t off = 0;
	int ret, rfd;

	if (n->size <= 0)
		return 0;
	ret = cache_blob_open(t->cache, n->site->reg, n->repo, n->digest, n->size, &b);
	if (ret)
		return ret;
	rfd = cache_blob_prepare(b, &rd, 0, (size_t)n->size);
	ret = rfd < 0 ? rfd : 0;
	while (!ret && off < n->size) {
		ssize_t got = pread(rfd, buf, sizeof(buf), off), w;

		if (got <= 0) {
			ret = -EIO;
			break;
		}
		/* a full staging file system says so (ENOSPC), as a local cp would */
		w = pwrite(fd, buf, (size_t)got, off);
		if (w != got) {
			ret = w < 0 ? -errno : -ENOSPC;
			break;
		}
		digest_ctx_update(s->hash, buf, (size_t)got);
		off += got;
	}
	cache_blob_close(b);
	s->hashed = off;
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
		ret = copy_up(t, n, s, *fd);
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
	tree_node_keep(t, n);
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
		tree_node_keep(t, n);
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

struct stream_job {
	struct staged *s;
	int fd;
};

/* Send whole chunks of a file being written, in order, while there are some. */
static void *stream_run(void *arg)
{
	struct stream_job *j = arg;
	struct staged *s = j->s;
	char *loc = NULL;
	int ret = 0;

	for (;;) {
		int64_t off;

		pthread_mutex_lock(&s->lock);
		if (ret)
			s->up_off = true;
		if (s->up_off || s->hashed < 0 || s->hashed - s->up_sent < REGISTRY_UPLOAD_CHUNK) {
			s->up_busy = false;
			pthread_cond_broadcast(&s->up_cond);
			pthread_mutex_unlock(&s->lock);
			break;
		}
		off = s->up_sent;
		loc = s->up_location;
		s->up_location = NULL;
		pthread_mutex_unlock(&s->lock);

		if (!loc)
			ret = registry_upload_start(s->up_reg, s->up_repo, NULL, NULL, &loc);
		if (!ret && loc)
			ret = registry_upload_patch(
				s->up_reg, s->up_repo, &loc, j->fd, off, REGISTRY_UPLOAD_CHUNK);
		pthread_mutex_lock(&s->lock);
		s->up_location = loc;
		if (!ret)
			s->up_sent = off + REGISTRY_UPLOAD_CHUNK;
		pthread_mutex_unlock(&s->lock);
	}
	close(j->fd);
	free(j);
	return NULL;
}

/*
 * After a write: start sending whole chunks when a sequential writer has
 * one ready. Not while a file of the registry is open for reading, which is
 * most likely a copy (cp -r of a tag) whose blob the registry already has.
 * Caller holds s->lock.
 */
static void stream_kick(struct tree *t, struct staged *s)
{
	struct stream_job *j;
	pthread_attr_t attr;
	pthread_t th;

	if (s->up_off || s->up_busy || s->hashed < 0 ||
		s->hashed - s->up_sent < REGISTRY_UPLOAD_CHUNK)
		return;
	if (!s->up_location && s->up_sent == 0 &&
		__atomic_load_n(&t->push->readers, __ATOMIC_RELAXED) > 0) {
		s->up_off = true;
		return;
	}
	j = malloc(sizeof(*j));
	if (!j)
		return;
	j->s = s;
	j->fd = open(s->path, O_RDONLY | O_CLOEXEC);
	if (j->fd < 0) {
		free(j);
		return;
	}
	s->up_busy = true;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&th, &attr, stream_run, j)) {
		s->up_busy = false;
		close(j->fd);
		free(j);
	}
	pthread_attr_destroy(&attr);
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
		stream_kick(t, s);
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
			ret = upload(t, n->site->reg, art->repo, digest, fd, size);
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
	*c = ret ? NULL : tree_child_find(dir, name);
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
	*c = *rn ? tree_child_find(dir, name) : NULL;
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
			tree_node_keep(t, *rn);
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
	tree_node_delete(t, dir, c);
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

/* Drop art's draft and its staging directory. Caller holds t->lock. */
static void draft_discard(struct tree *t, struct node *art)
{
	if (!art->draft)
		return;
	remove_tree(art->draft->dir);
	drafts_remove(t, art);
	draft_free(art->draft);
	art->draft = NULL;
	tree_node_keep(t, art);
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
			tree_node_delete(t, dir, c);
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
		draft_discard(t, c);
		tree_node_delete(t, dir, c);
		dir->tags_at = 0;
		pthread_mutex_unlock(&t->lock);
		return 0;
	case NODE_NS:
		pthread_mutex_lock(&t->lock);
		ret = c->n_children ? -ENOTEMPTY : c->local ? 0 : -EPERM;
		if (!ret)
			tree_node_delete(t, dir, c);
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
	c = ret ? NULL : tree_child_find(dir, name);
	if (!ret && (!c))
		ret = -ENOENT;
	if (!ret && a1 != a2)
		ret = -EXDEV; /* mv copies, then removes */
	if (!ret)
		ret = title_of(a2, newdir, newname, title, sizeof(title));
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
	target = ret ? NULL : tree_child_find(newdir, newname);
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
		tree_child_remove(dir, c);
		free(c->name);
		c->name = nn;
		ret = tree_node_move(t, c, newdir);
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
	return push_errno(draft_push(t, art, true));
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

int push_stats_json(struct tree *t, struct json_object *o)
{
	struct json_object *list = json_object_new_array();
	unsigned pending = 0, failed = 0;
	size_t i;

	if (!list)
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	for (i = 0; t->push && i < t->push->n_drafts; i++) {
		struct node *art = t->push->drafts[i];
		struct draft *d = art->draft;
		struct json_object *e;
		char tag[600];

		if (!d)
			continue;
		snprintf(tag, sizeof(tag), "%s/%s%s%s", registry_host(art->site->reg), art->repo,
			art->by_digest ? "@" : ":", art->ref ? art->ref : art->name);
		e = json_object_new_object();
		if (!e)
			break;
		json_object_object_add(e, "tag", json_object_new_string(tag));
		json_object_object_add(
			e, "state", json_object_new_string(d->last_err ? "failed" : "pending"));
		if (d->last_err)
			json_object_object_add(
				e, "last_error", json_object_new_string(strerror(-d->last_err)));
		json_object_array_add(list, e);
		if (d->last_err)
			failed++;
		else
			pending++;
	}
	json_object_object_add(o, "pushes_pending", json_object_new_int((int)pending));
	json_object_object_add(o, "pushes_failed", json_object_new_int((int)failed));
	json_object_object_add(
		o, "pushes_done", json_object_new_int64((int64_t)(t->push ? t->push->pushed : 0)));
	json_object_object_add(o, "push_failures",
		json_object_new_int64((int64_t)(t->push ? t->push->failures : 0)));
	pthread_mutex_unlock(&t->lock);
	json_object_object_add(o, "drafts", list);
	return 0;
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
		 !(mt = strdup(
			   (type = xattr_get(src, "user.oci.mediaType")) ? type : MT_OCI_MANIFEST)))
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
	dir->tags_at = 0;
	pthread_mutex_unlock(&dir->load_lock);
	pthread_mutex_lock(&t->lock);
	old = tree_child_find(dir, name);
	if (old && old->kind == NODE_ARTIFACT)
		old->resolved_at = 0;
	pthread_mutex_unlock(&t->lock);
	/*
	 * symlink(2) must answer with a link: a passing one, never cached
	 * (local), after which the name looks up as the tag's directory.
	 */
	n = tree_node_new(t, dir, name, NODE_RLINK);
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

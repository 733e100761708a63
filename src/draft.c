/*
 * A draft: the changes to one tag not yet pushed, in memory and on disk
 * (<cache>/staging/<id>/draft.json beside its files), and the manifest it
 * makes.
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
#include "journal.h"
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

	for (i = 0; i < reg_of(n)->n_xattrs; i++)
		if (strcmp(reg_of(n)->xattrs[i].name, name) == 0)
			return reg_of(n)->xattrs[i].value;
	return NULL;
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

double draft_clock(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void draft_free(struct draft *d)
{
	if (!d)
		return;
	json_object_put(d->base);
	json_object_put(d->subject);
	free(d->attach_type);
	free(d->replaces);
	free(d->base_digest);
	pthread_mutex_destroy(&d->save_lock);
	free(d->dir);
	free(d);
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

void draft_dir_remove(const char *dir)
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

static struct draft *draft_new(void)
{
	struct draft *d = calloc(1, sizeof(*d));

	if (d)
		pthread_mutex_init(&d->save_lock, NULL);
	return d;
}

/* d becomes art's draft, on the pusher's list. 0 or -ENOMEM (d still the caller's). */
static int draft_list(struct tree *t, struct node *art, struct draft *d)
{
	struct push *p = t->push;
	struct node **v;

	pthread_mutex_lock(&t->nodes.lock);
	v = realloc(p->drafts, (p->n_drafts + 1) * sizeof(*v));
	if (!v) {
		pthread_mutex_unlock(&t->nodes.lock);
		return -ENOMEM;
	}
	p->drafts = v;
	v[p->n_drafts++] = art;
	d->changed_at = draft_clock();
	art_of_node(art)->draft = d;
	tree_pin(t, art);
	pthread_mutex_unlock(&t->nodes.lock);
	return 0;
}

int draft_begin(struct tree *t, struct node *art)
{
	struct draft *d;
	char dir[PATH_MAX], base[PATH_MAX], *body = NULL;
	size_t len;
	int ret;

	pthread_mutex_lock(load_lock_of(art));
	pthread_mutex_lock(&t->nodes.lock);
	d = node_draft(art);
	pthread_mutex_unlock(&t->nodes.lock);
	if (d) {
		pthread_mutex_unlock(load_lock_of(art));
		return 0;
	}
	d = draft_new();
	if (!d) {
		ret = -ENOMEM;
		goto out;
	}
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
	if (art_of_node(art)->digest && !reg_of(art)->local) {
		ret = cache_get(t->cache, art_of_node(art)->digest, MANIFEST_MAX_SIZE, &body, &len);
		if (ret == 0)
			d->base = json_tokener_parse(body);
		free(body);
		d->base_digest = strdup(art_of_node(art)->digest);
		if (!d->base || !d->base_digest) {
			log_err("%s:%s: the manifest to change is not at hand", reg_of(art)->repo,
				art_of_node(art)->ref);
			ret = -EIO;
			goto out;
		}
	}
	ret = draft_list(t, art, d);
	if (!ret)
		d = NULL;
out:
	if (d && d->dir)
		rmdir(d->dir);
	draft_free(d);
	pthread_mutex_unlock(load_lock_of(art));
	/* a server taking over (the keeper's) finds the tag, and where its files are */
	if (!ret && !d)
		draft_save(t, art);
	return ret;
}

int draft_adopt(
	struct tree *t, struct node *art, const char *dir, const char *base_digest, bool pending)
{
	struct draft *d = draft_new();
	char *body = NULL;
	size_t len;
	int ret = d ? 0 : -ENOMEM;

	if (!ret && !(d->dir = strdup(dir)))
		ret = -ENOMEM;
	if (!ret && base_digest) {
		d->base_digest = strdup(base_digest);
		ret = d->base_digest
			      ? cache_get(t->cache, base_digest, MANIFEST_MAX_SIZE, &body, &len)
			      : -ENOMEM;
		if (ret == 0 && !(d->base = json_tokener_parse(body)))
			ret = -EBADMSG;
		free(body);
	}
	if (!ret) {
		/* a change to push, once settled: the earlier server's, unless it pushed it */
		d->gen = pending ? 1 : 0;
		d->touched = true;
		d->adopted = true;
		ret = draft_list(t, art, d);
	}
	if (ret)
		draft_free(d);
	return ret;
}

struct json_object *draft_json_str(const char *s)
{
	return json_object_new_string(s ? s : "");
}

/* Layer annotations from a node's user.oci.annotation.* xattrs, the title first. */
static struct json_object *layer_annotations(const struct node *n, const char *title)
{
	struct json_object *a = json_object_new_object();
	size_t i;

	json_object_object_add(a, ANN_TITLE, draft_json_str(title));
	for (i = 0; i < reg_of(n)->n_xattrs; i++) {
		const char *k = reg_of(n)->xattrs[i].name;

		if (strncmp(k, XATTR_ANN, strlen(XATTR_ANN)) != 0)
			continue;
		k += strlen(XATTR_ANN);
		if (strcmp(k, ANN_TITLE) != 0)
			json_object_object_add(a, k, draft_json_str(reg_of(n)->xattrs[i].value));
	}
	return a;
}

/* Append a layer per file below dir (titles "prefix/name"). Caller holds t->nodes.lock. */
static int collect_layers(
	struct node *art, struct node *dir, struct json_object *layers, struct json_object *staged)
{
	char title[4096];
	size_t i;
	int ret = 0;

	for (i = 0; i < dir->n_children && !ret; i++) {
		struct node *c = dir->children[i];
		struct json_object *l;
		const char *mt, *digest;
		bool uploaded = false;
		int64_t size;

		if (c->hidden)
			continue;
		if (c->kind == NODE_DIR) {
			ret = collect_layers(art, c, layers, staged);
			continue;
		}
		if (c->kind != NODE_BLOB && c->kind != NODE_STAGED)
			continue;
		digest = file_of(c)->digest;
		size = file_of(c)->size > 0 ? file_of(c)->size : 0;
		/* a file never closed is no part of the tag yet: its writer is at work */
		if (c->kind == NODE_STAGED && !staged_version(c, &digest, &size, &uploaded))
			continue;
		ret = push_title_of(art, c, NULL, title, sizeof(title));
		if (ret)
			break;
		mt = push_xattr_get(c, "user.oci.mediaType");
		l = json_object_new_object();
		json_object_object_add(l, "mediaType", draft_json_str(mt ? mt : MT_LAYER_TAR));
		json_object_object_add(l, "digest", draft_json_str(digest));
		json_object_object_add(l, "size", json_object_new_int64(size));
		json_object_object_add(l, "annotations", layer_annotations(c, title));
		if (c->kind == NODE_STAGED) {
			struct json_object *s = json_object_new_object();
			const char *base = strrchr(file_of(c)->staged->path, '/');

			json_object_object_add(s, "layer",
				json_object_new_int((int)json_object_array_length(layers)));
			json_object_object_add(s, "file", draft_json_str(base ? base + 1 : ""));
			/*
			 * Its blob went up when it was closed; else the push hashes
			 * the file, which must be as it was closed then.
			 */
			if (uploaded) {
				json_object_object_add(s, "uploaded", json_object_new_boolean(1));
			} else {
				json_object_object_add(s, "size", json_object_new_int64(size));
				if (digest)
					json_object_object_add(s, "digest", draft_json_str(digest));
			}
			json_object_array_add(staged, s);
		}
		json_object_array_add(layers, l);
	}
	return ret;
}

/* What the draft of art would push, as oras push makes it. Caller holds t->nodes.lock. */
static struct json_object *draft_manifest(
	struct tree *t, struct node *art, struct json_object *staged)
{
	struct draft *d = node_draft(art);
	struct json_object *m = json_object_new_object(), *v, *layers, *ann;
	const char *at = push_xattr_get(art, "user.oci.artifactType");
	size_t i, n;

	json_object_object_add(m, "schemaVersion", json_object_new_int(2));
	json_object_object_add(m, "mediaType", draft_json_str(MT_OCI_MANIFEST));
	if (d->attach_type && !d->type_set) {
		json_object_object_add(m, "artifactType", draft_json_str(d->attach_type));
	} else if (d->base && !d->type_set) {
		if (json_object_object_get_ex(d->base, "artifactType", &v))
			json_object_object_add(m, "artifactType", json_object_get(v));
	} else {
		json_object_object_add(m, "artifactType",
			draft_json_str(at ? at
				       : t->opts.artifact_type
					       ? t->opts.artifact_type
					       : "application/vnd.unknown.artifact.v1"));
	}
	if (d->base && json_object_object_get_ex(d->base, "config", &v)) {
		json_object_object_add(m, "config", json_object_get(v));
	} else {
		v = json_object_new_object();
		json_object_object_add(v, "mediaType", draft_json_str(MT_EMPTY));
		json_object_object_add(v, "digest", draft_json_str(EMPTY_DIGEST));
		json_object_object_add(v, "size", json_object_new_int(2));
		json_object_object_add(v, "data", draft_json_str("e30="));
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
	for (i = 0; i < reg_of(art)->n_xattrs; i++) {
		const char *k = reg_of(art)->xattrs[i].name;

		if (strncmp(k, XATTR_ANN, strlen(XATTR_ANN)) == 0)
			json_object_object_add(ann, k + strlen(XATTR_ANN),
				draft_json_str(reg_of(art)->xattrs[i].value));
	}
	json_object_object_add(m, "annotations", ann);
	return m;
}

const char *draft_jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
		       ? json_object_get_string(v)
		       : NULL;
}

/* n's xattrs with text values, as an object. */
static struct json_object *xattrs_json(const struct node *n)
{
	struct json_object *o = json_object_new_object();
	size_t i;

	for (i = 0; i < reg_of(n)->n_xattrs; i++)
		if (reg_of(n)->xattrs[i].len == 0)
			json_object_object_add(o, reg_of(n)->xattrs[i].name,
				draft_json_str(reg_of(n)->xattrs[i].value));
	return o;
}

/*
 * Every file and directory below dir, as the tag shows them now: what a
 * server taking over needs to show the same (adopt.c). A staged file says
 * where its bytes are and what a push may name of it. Caller holds t->nodes.lock.
 */
static int snapshot(const struct node *art, const struct node *dir, struct json_object *nodes)
{
	char title[4096];
	size_t i;
	int ret = 0;

	for (i = 0; i < dir->n_children && !ret; i++) {
		const struct node *c = dir->children[i];
		struct json_object *e;

		if (c->hidden)
			continue;
		ret = push_title_of(art, c, NULL, title, sizeof(title));
		if (ret)
			break;
		e = json_object_new_object();
		json_object_object_add(e, "title", draft_json_str(title));
		json_object_object_add(e, "xattrs", xattrs_json(c));
		json_object_object_add(e, "mtime", json_object_new_int64(reg_of(c)->mtime));
		if (c->kind == NODE_DIR) {
			json_object_object_add(e, "kind",
				draft_json_str(dir_of(c)->packed_digest ? "packed" : "dir"));
			json_object_object_add(
				e, "local", json_object_new_boolean(reg_of(c)->local));
		} else if (c->kind == NODE_BLOB) {
			json_object_object_add(e, "kind", draft_json_str("blob"));
			json_object_object_add(e, "digest", draft_json_str(file_of(c)->digest));
			json_object_object_add(e, "size", json_object_new_int64(file_of(c)->size));
		} else if (c->kind == NODE_STAGED && file_of(c)->staged) {
			const struct staged *s = file_of(c)->staged;
			const char *base = strrchr(s->path, '/');

			json_object_object_add(e, "kind", draft_json_str("staged"));
			json_object_object_add(e, "file", draft_json_str(base ? base + 1 : ""));
			json_object_object_add(e, "dirty", json_object_new_boolean(s->dirty));
			json_object_object_add(e, "changed", json_object_new_boolean(s->changed));
			if (s->closed_digest)
				json_object_object_add(
					e, "closed_digest", draft_json_str(s->closed_digest));
			if (file_of(c)->digest)
				json_object_object_add(
					e, "digest", draft_json_str(file_of(c)->digest));
			json_object_object_add(e, "up_size", json_object_new_int64(s->up_size));
		} else {
			json_object_object_add(e, "kind", draft_json_str("other"));
		}
		json_object_array_add(nodes, e);
		if (c->kind == NODE_DIR && !dir_of(c)->packed_digest)
			ret = snapshot(art, c, nodes);
	}
	return ret;
}

int draft_save(struct tree *t, struct node *art)
{
	struct json_object *root, *staged = json_object_new_array(), *m, *nodes;
	char path[PATH_MAX], tmp[PATH_MAX];
	/* who may take it over: a server of this mount (journal_lock, before the tree's) */
	uint64_t mount_id = journal_mount_id();
	struct draft *d;
	const char *s;
	int fd, ret = 0;

	pthread_mutex_lock(&t->nodes.lock);
	d = node_draft(art);
	if (!d) {
		pthread_mutex_unlock(&t->nodes.lock);
		json_object_put(staged);
		return 0;
	}
	pthread_mutex_lock(&d->save_lock);
	m = draft_manifest(t, art, staged);
	nodes = json_object_new_array();
	if (m && snapshot(art, art, nodes)) {
		json_object_put(m);
		m = NULL;
	}
	root = json_object_new_object();
	if (mount_id) {
		char owner[17];

		snprintf(owner, sizeof(owner), "%016llx", (unsigned long long)mount_id);
		json_object_object_add(root, "owner", draft_json_str(owner));
	}
	if (d->base_digest)
		json_object_object_add(root, "base", draft_json_str(d->base_digest));
	json_object_object_add(root, "touched", json_object_new_boolean(d->touched));
	json_object_object_add(root, "pending", json_object_new_boolean(d->gen != d->pushed_gen));
	json_object_object_add(root, "type_set", json_object_new_boolean(d->type_set));
	json_object_object_add(root, "xattrs", xattrs_json(art));
	json_object_object_add(root, "nodes", nodes);
	json_object_object_add(root, "host", draft_json_str(registry_host(reg_of(art)->site->reg)));
	json_object_object_add(root, "repo", draft_json_str(reg_of(art)->repo));
	/* a referrer is pushed by digest: no tag */
	if (!d->subject)
		json_object_object_add(root, "tag", draft_json_str(art_of_node(art)->ref));
	if (d->replaces)
		json_object_object_add(root, "replaces", draft_json_str(d->replaces));
	pthread_mutex_unlock(&t->nodes.lock);
	if (!m) {
		json_object_put(staged);
		json_object_put(root);
		ret = -ENAMETOOLONG;
		goto out;
	}
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

void draft_bump(struct tree *t, struct node *art)
{
	pthread_mutex_lock(&t->nodes.lock);
	if (node_draft(art)) {
		node_draft(art)->gen++;
		node_draft(art)->changed_at = draft_clock();
	}
	reg_of(art)->mtime = time(NULL);
	pthread_cond_signal(&t->push->cond);
	pthread_mutex_unlock(&t->nodes.lock);
}

int draft_record(struct tree *t, struct node *art)
{
	pthread_mutex_lock(&t->nodes.lock);
	if (node_draft(art))
		node_draft(art)->touched = true;
	pthread_mutex_unlock(&t->nodes.lock);
	return draft_save(t, art);
}

int draft_touch(struct tree *t, struct node *art)
{
	draft_bump(t, art);
	return draft_record(t, art);
}

void draft_unlist(struct tree *t, struct node *art)
{
	struct push *p = t->push;
	size_t i;

	for (i = 0; i < p->n_drafts; i++)
		if (p->drafts[i] == art) {
			p->drafts[i] = p->drafts[--p->n_drafts];
			break;
		}
}

struct draft *draft_take(struct tree *t, struct node *art)
{
	struct draft *d = node_draft(art);

	if (!d)
		return NULL;
	draft_unlist(t, art);
	art_of_node(art)->draft = NULL;
	tree_pin(t, art);
	return d;
}

void draft_dispose(struct draft *d)
{
	if (!d)
		return;
	draft_dir_remove(d->dir);
	draft_free(d);
}

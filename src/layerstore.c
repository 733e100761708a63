/*
 * .layers/ at the root of a registry mount: the image layers as
 * containers/storage's additional layer store expects them, so that podman
 * and CRI-O pull an image without downloading its layers and read their
 * files lazily through the mount:
 *
 *   .layers/<base64 of the image reference>/<layer digest>/
 *       diff/   the layer's own tree, as overlayfs takes a lower directory
 *       info    the JSON of containers/storage's Layer
 *       blob    the compressed layer blob
 *
 * The reference is the one the engine pulls ("host/repo:tag" or
 * "host/repo@sha256:..."; the base64 of such ASCII text never holds a
 * "/"). Nothing is listed: names are looked up. The store keeps
 * the engine's count of each layer's users: creating "use" in a layer's
 * directory counts one more, removing the directory one less; both answer
 * ENOENT, as the protocol wants of a store that counts.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "cache.h"
#include "digest.h"
#include "log.h"
#include "manifest.h"
#include "ref.h"
#include "registry.h"
#include "toc.h"
#include "tree-int.h"

/* The longest image reference accepted (as base64 it is a third longer). */
#define REF_MAX 1024

static inline struct lstore_node *ls_of(const struct node *n)
{
	assert(n->kind == NODE_LSTORE);
	return (struct lstore_node *)(uintptr_t)n;
}

/* The image reference a base64 key spells, malloc'd, or NULL. */
static char *key_decode(const char *key)
{
	size_t n = strlen(key), pad = 0;
	unsigned char *out;
	int len;

	if (n == 0 || n % 4 || n > REF_MAX * 4 / 3 + 4)
		return NULL;
	out = malloc(n / 4 * 3 + 1);
	if (!out)
		return NULL;
	len = EVP_DecodeBlock(out, (const unsigned char *)key, (int)n);
	while (pad < 2 && key[n - 1 - pad] == '=')
		pad++;
	if (len < 0 || (size_t)len < pad || memchr(out, '\0', (size_t)len - pad)) {
		free(out);
		return NULL;
	}
	out[(size_t)len - pad] = '\0';
	return (char *)out;
}

static int lstore_add(struct tree *t, struct node *dir, struct node *n, struct node **out)
{
	*out = node_child_get_or_add(&t->nodes, dir, n);
	return *out ? 0 : -ENOMEM;
}

/* The directory of an image reference's key (its base64) below the store's root. */
static int key_dir(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	char *refstr = key_decode(name);
	struct node *n;

	free(refstr);
	if (!refstr)
		return -ENOENT;
	n = tree_node_new(t, dir, name, NODE_LSTORE);
	if (!n)
		return -ENOMEM;
	n->cached = true; /* made again by the next lookup once unused */
	ls_of(n)->key = strdup(name);
	if (!ls_of(n)->key) {
		node_discard(&t->nodes, n);
		return -ENOMEM;
	}
	return lstore_add(t, dir, n, out);
}

/*
 * The image manifest that the reference (tag or digest) of repo names on
 * site, the platform's for an index: its body, length and digest. 0 or -errno.
 */
static int image_get(struct tree *t, struct site *site, const struct ref *ref, char **body,
	size_t *len, char *digest)
{
	struct manifest *m = NULL;
	char *ct = NULL, *got = NULL;
	int ret;

	if (ref->digest) {
		ret = tree_manifest_get(t, site, ref->repo, ref->digest, body, len);
		snprintf(digest, DIGEST_STR_LEN + 1, "%s", ref->digest);
	} else {
		ret = registry_get_manifest(
			site->reg, ref->repo, ref->tag ? ref->tag : "latest", body, len, &ct, &got);
		if (!ret) {
			cache_put(t->cache, got, *body, *len);
			snprintf(digest, DIGEST_STR_LEN + 1, "%s", got);
		}
	}
	free(ct);
	free(got);
	if (ret)
		return ret;
	ret = manifest_parse(*body, *len, NULL, &m);
	if (!ret && m->kind == MANIFEST_INDEX) {
		const struct descriptor *d = manifest_select_platform(m, &t->opts.platform);

		free(*body);
		*body = NULL;
		ret = d ? tree_manifest_get(t, site, ref->repo, d->digest, body, len) : -ENOENT;
		if (!ret)
			snprintf(digest, DIGEST_STR_LEN + 1, "%s", d->digest);
	}
	manifest_free(m);
	return ret;
}

/* The info file: containers/storage's Layer, as much of it as the store knows. */
static char *info_json(const struct descriptor *d, const char *diff_id, const char *toc)
{
	struct json_object *o = json_object_new_object();
	const char *mt = d->media_type;
	size_t n = strlen(mt);
	char *s;
	int compression = 0; /* containers/storage's archive.Compression */

	if (n > 5 && (strcmp(mt + n - 5, "+gzip") == 0 || strcmp(mt + n - 5, ".gzip") == 0))
		compression = 2;
	else if (n > 5 && (strcmp(mt + n - 5, "+zstd") == 0 || strcmp(mt + n - 5, ".zstd") == 0))
		compression = 4;
	json_object_object_add(o, "compressed-diff-digest", json_object_new_string(d->digest));
	json_object_object_add(o, "compressed-size", json_object_new_int64(d->size));
	if (diff_id)
		json_object_object_add(o, "diff-digest", json_object_new_string(diff_id));
	if (toc && ref_valid_digest(toc))
		json_object_object_add(o, "toc-digest", json_object_new_string(toc));
	json_object_object_add(o, "compression", json_object_new_int(compression));
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

/* The config's diff_ids[i] (malloc'd), or NULL. */
static char *diff_id(
	struct tree *t, struct site *site, const char *repo, const struct descriptor *cfg, size_t i)
{
	struct json_object *o, *rootfs, *ids, *id;
	char *body = NULL, *out = NULL;

	if (cfg->size <= 0 || cfg->size > MANIFEST_MAX_SIZE ||
		cache_blob_read_all(t->cache, site->reg, repo, cfg->digest, cfg->size, &body))
		return NULL;
	o = json_tokener_parse(body);
	if (o && json_object_object_get_ex(o, "rootfs", &rootfs) &&
		json_object_object_get_ex(rootfs, "diff_ids", &ids) &&
		json_object_is_type(ids, json_type_array) &&
		(id = json_object_array_get_idx(ids, i)) &&
		json_object_is_type(id, json_type_string) &&
		ref_valid_digest(json_object_get_string(id)))
		out = strdup(json_object_get_string(id));
	json_object_put(o);
	free(body);
	return out;
}

/*
 * The directory called name of the layer of the image the key of dir names
 * whose digest, or whose table of contents' digest, is name. 0 or -errno.
 */
static int layer_dir(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	const char *digest = name;
	char *refstr = key_decode(ls_of(dir)->key), *body = NULL, *info = NULL, *id = NULL;
	char idigest[DIGEST_STR_LEN + 1];
	struct ref ref = { 0 };
	struct manifest *m = NULL;
	struct site *site = NULL;
	struct node *n = NULL, *c;
	size_t len, i;
	bool z = false;
	int ret;

	ret = refstr && ref_parse_source(refstr, &ref) == 0 && ref.host && ref.repo ? 0 : -ENOENT;
	/* a mount of one registry serves that registry's images; "-" serves any */
	if (!ret && t->root->kind == NODE_NS &&
		strcmp(registry_host(reg_of(t->root)->site->reg), ref.host) != 0)
		ret = -ENOENT;
	if (!ret)
		ret = t->root->kind == NODE_NS ? (site = reg_of(t->root)->site, 0)
					       : tree_site_get(t, ref.host, &site);
	if (!ret)
		ret = image_get(t, site, &ref, &body, &len, idigest);
	if (!ret)
		ret = manifest_parse(body, len, NULL, &m);
	/* by the layer's digest, or (newer engines) by its table of contents' */
	for (i = 0; !ret && i < m->n_layers; i++) {
		const struct descriptor *d = &m->layers[i];
		const char *toc = toc_digest_of(d, &z);

		if (strcmp(d->digest, name) == 0 || (toc && strcmp(toc, name) == 0))
			break;
	}
	if (!ret && (m->kind != MANIFEST_IMAGE || i == m->n_layers))
		ret = -ENOENT;
	if (ret) {
		log_debug("layer store: %s in %s: %s", digest,
			refstr ? refstr : "(not a reference)", strerror(-ret));
		goto out;
	}
	id = diff_id(t, site, ref.repo, &m->config, i);
	info = info_json(&m->layers[i], id, toc_digest_of(&m->layers[i], &z));
	digest = m->layers[i].digest; /* what is fetched is the layer, whichever key found it */
	ret = -ENOMEM;
	n = tree_node_new(t, dir, name, NODE_LSTORE);
	if (!n || !info || !(reg_of(n)->repo = strdup(ref.repo)))
		goto out;
	reg_of(n)->site = site;
	reg_of(n)->immutable = true;
	ls_of(n)->layer = true;
	n->cached = true; /* with what is below it, made again by the next lookup once unused */
	/* info, in memory */
	c = tree_node_new(t, n, "info", NODE_DATA);
	if (!c || node_child_add(n, c))
		goto out;
	file_of(c)->data = info;
	file_of(c)->data_len = strlen(info);
	file_of(c)->size = (int64_t)file_of(c)->data_len;
	info = NULL;
	/* blob, through the cache */
	c = tree_node_new(t, n, "blob", NODE_BLOB);
	if (!c || node_child_add(n, c) || !(reg_of(c)->repo = strdup(ref.repo)) ||
		!(file_of(c)->digest = strdup(digest)))
		goto out;
	file_of(c)->size = m->layers[i].size;
	/* diff, the layer's tree */
	{
		struct layer_desc ld = { digest, m->layers[i].media_type, m->layers[i].size,
			toc_digest_of(&m->layers[i], &z), z };

		ret = rootfs_layer_dir(t, n, "diff", site, ref.repo, &ld, idigest, m->media_type,
			(int64_t)len, &c);
		if (ret || node_child_add(n, c)) {
			ret = -ENOMEM;
			goto out;
		}
	}
	ret = lstore_add(t, dir, n, out);
	n = NULL;
out:
	if (n)
		node_discard(&t->nodes, n);
	manifest_free(m);
	ref_release(&ref);
	free(refstr);
	free(body);
	free(info);
	free(id);
	return ret;
}

static int lstore_lookup(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	struct node *n;

	pthread_mutex_lock(&t->nodes.lock);
	n = node_child_find(dir, name);
	pthread_mutex_unlock(&t->nodes.lock);
	if (n) {
		*out = n;
		return 0;
	}
	if (ls_of(dir)->layer)
		return -ENOENT; /* diff, info and blob are made with it; "use" is never there */
	if (ls_of(dir)->key)
		return ref_valid_digest(name) ? layer_dir(t, dir, name, out) : -ENOENT;
	return key_dir(t, dir, name, out);
}

/* "use" created in a layer's directory: one more user, ENOENT as the protocol wants. */
static int lstore_create(
	struct tree *t, struct node *dir, const char *name, bool excl, struct node **out, int *fd)
{
	if (!ls_of(dir)->layer || strcmp(name, "use") != 0)
		return -EROFS;
	pthread_mutex_lock(&t->nodes.lock);
	ls_of(dir)->uses++;
	pthread_mutex_unlock(&t->nodes.lock);
	log_debug("layer store: %s/%s: in use", reg_of(dir)->repo, dir->name);
	return -ENOENT;
}

/* A layer's directory removed: one user less, ENOENT as the protocol wants. */
static int lstore_rmdir(struct tree *t, struct node *dir, const char *name)
{
	struct node *n;

	pthread_mutex_lock(&t->nodes.lock);
	n = node_child_find(dir, name);
	if (n && n->kind == NODE_LSTORE && ls_of(n)->layer && ls_of(n)->uses)
		ls_of(n)->uses--;
	pthread_mutex_unlock(&t->nodes.lock);
	if (n && n->kind == NODE_LSTORE && ls_of(n)->layer) {
		log_debug("layer store: %s/%s: released", reg_of(n)->repo, name);
		return -ENOENT;
	}
	return n ? -EROFS : -ENOENT;
}

static double lstore_timeout(struct tree *t, struct node *n)
{
	/* a key names the same image while its tag does; a layer's directory never changes */
	return ls_of(n)->layer ? IMMUTABLE_TIMEOUT : 1.0;
}

static mode_t lstore_type(const struct node *n)
{
	return S_IFDIR;
}

static void lstore_release(struct tree *t, struct node *n)
{
	free(ls_of(n)->key);
	tree_node_release(t, n);
}

const struct node_ops layerstore_ops = {
	.name = "layer store",
	.lookup = lstore_lookup,
	/* the store lists what was looked up; a layer's directory, its three */
	.list = tree_children_list,
	.getattr = tree_reg_getattr,
	.timeout = lstore_timeout,
	.type = lstore_type,
	.getxattr = tree_reg_getxattr,
	.listxattr = tree_reg_listxattr,
	.create = lstore_create,
	.rmdir = lstore_rmdir,
	.release = lstore_release,
};

int layerstore_root(struct tree *t)
{
	struct node *n;

	if (t->root->kind != NODE_HOSTS && !(t->root->kind == NODE_NS && !*reg_of(t->root)->repo))
		return 0;
	n = tree_node_new(t, t->root, ".layers", NODE_LSTORE);
	if (!n)
		return -ENOMEM;
	/* looked up by name (tree_lookup), as .ocifs/ is */
	n->hidden = true;
	t->layerstore = n;
	return 0;
}

/* Layer indexes published as referrers: see published.h. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "buf.h"
#include "cache.h"
#include "digest.h"
#include "layer.h"
#include "log.h"
#include "manifest.h"
#include "published.h"
#include "registry.h"

struct published {
	struct manifest *refs; /* the referrers of our type, each naming its layer */
};

int published_list(
	struct registry *r, const char *repo, const char *subject, struct published **out)
{
	struct published *p = calloc(1, sizeof(*p));
	int ret;

	if (!p)
		return -ENOMEM;
	ret = registry_referrers(r, repo, subject, LAYER_INDEX_TYPE, &p->refs);
	if (ret) {
		free(p);
		return ret;
	}
	*out = p;
	return 0;
}

void published_free(struct published *p)
{
	if (!p)
		return;
	manifest_free(p->refs);
	free(p);
}

const char *published_find(const struct published *p, const char *layer)
{
	const char *found = NULL;
	size_t i;

	for (i = 0; p && i < p->refs->n_manifests; i++) {
		const struct descriptor *d = &p->refs->manifests[i];
		const char *of = annotation_get(d->annotations, d->n_annotations, LAYER_INDEX_OF);

		/* the last one listed: a layer indexed again is published again */
		if (d->artifact_type && strcmp(d->artifact_type, LAYER_INDEX_TYPE) == 0 && of &&
			strcmp(of, layer) == 0)
			found = d->digest;
	}
	return found;
}

int published_fetch(struct cache *c, struct registry *r, const char *repo, const char *digest,
	const char *layer, char **z, size_t *zlen)
{
	char *body = NULL, *ct = NULL, *got = NULL;
	const struct descriptor *d = NULL;
	struct manifest *m = NULL;
	size_t len, i;
	int ret;

	ret = registry_get_manifest(r, repo, digest, &body, &len, &ct, &got);
	if (!ret)
		ret = manifest_parse(body, len, ct, &m);
	if (!ret) {
		for (i = 0; i < m->n_layers; i++)
			if (strcmp(m->layers[i].media_type, LAYER_INDEX_MEDIA_TYPE) == 0)
				d = &m->layers[i];
		if (!d || m->kind != MANIFEST_IMAGE || !manifest_artifact_type(m) ||
			strcmp(manifest_artifact_type(m), LAYER_INDEX_TYPE) != 0 ||
			!annotation_get(d->annotations, d->n_annotations, LAYER_INDEX_OF) ||
			strcmp(annotation_get(d->annotations, d->n_annotations, LAYER_INDEX_OF),
				layer) != 0 ||
			d->size <= 0 || d->size > LAYER_INDEX_MAX) {
			log_err("%s/%s@%s: not a layer index of %s", registry_host(r), repo, digest,
				layer);
			ret = -EBADMSG;
		}
	}
	if (!ret)
		ret = cache_blob_read_all(c, r, repo, d->digest, d->size, z);
	if (!ret)
		*zlen = (size_t)d->size;
	manifest_free(m);
	free(body);
	free(ct);
	free(got);
	return ret;
}

/* A descriptor as JSON. */
static struct json_object *desc_json(const char *mt, const char *digest, int64_t size)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "mediaType", json_object_new_string(mt));
	json_object_object_add(o, "digest", json_object_new_string(digest));
	json_object_object_add(o, "size", json_object_new_int64(size));
	return o;
}

int published_push(struct registry *r, const char *repo, const char *subject_digest,
	const char *subject_type, int64_t subject_size, const struct layer *l)
{
	struct json_object *m = NULL, *layers, *ld, *ann;
	struct buf z = BUF_INIT;
	char zd[DIGEST_STR_LEN + 1], md[DIGEST_STR_LEN + 1], created[32];
	const char *text;
	bool kept = false;
	struct tm tm;
	time_t now;
	size_t len;
	int fd = -1, ret;

	ret = layer_index_publishable(l, &z);
	if (ret)
		goto out;
	digest_buffer(z.data, z.len, zd);
	fd = memfd_create("ocifs-index", MFD_CLOEXEC);
	if (fd < 0 || write(fd, z.data, z.len) != (ssize_t)z.len) {
		ret = -EIO;
		goto out;
	}
	ret = registry_push_blob(r, repo, zd, fd, (int64_t)z.len, NULL);
	if (!ret)
		ret = registry_push_empty_config(r, repo);
	if (ret)
		goto out;
	now = time(NULL);
	gmtime_r(&now, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	m = json_object_new_object();
	json_object_object_add(m, "schemaVersion", json_object_new_int(2));
	json_object_object_add(m, "mediaType", json_object_new_string(MT_OCI_MANIFEST));
	json_object_object_add(m, "artifactType", json_object_new_string(LAYER_INDEX_TYPE));
	json_object_object_add(m, "config", desc_json(MT_EMPTY, EMPTY_DIGEST, 2));
	layers = json_object_new_array();
	ld = desc_json(LAYER_INDEX_MEDIA_TYPE, zd, (int64_t)z.len);
	ann = json_object_new_object();
	json_object_object_add(ann, LAYER_INDEX_OF, json_object_new_string(layer_digest(l)));
	json_object_object_add(ld, "annotations", ann);
	json_object_array_add(layers, ld);
	json_object_object_add(m, "layers", layers);
	json_object_object_add(m, "subject", desc_json(subject_type, subject_digest, subject_size));
	ann = json_object_new_object();
	json_object_object_add(ann, LAYER_INDEX_OF, json_object_new_string(layer_digest(l)));
	json_object_object_add(ann, ANN_CREATED, json_object_new_string(created));
	json_object_object_add(m, "annotations", ann);
	text = json_object_to_json_string_ext(
		m, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	len = strlen(text);
	digest_buffer(text, len, md);
	ret = registry_put_manifest(r, repo, md, MT_OCI_MANIFEST, text, len, &kept);
	/* a registry without the referrers API: the subject's fallback index gets it */
	if (!ret && !kept)
		ret = registry_referrers_fallback_update(r, repo, subject_digest, md, m, len);
	if (!ret)
		log_info("%s/%s@%s: index of layer %s published as %s", registry_host(r), repo,
			subject_digest, layer_digest(l), md);
out:
	if (ret)
		log_warn("%s/%s@%s: index of layer %s not published: %s", registry_host(r), repo,
			subject_digest, layer_digest(l), strerror(-ret));
	if (fd >= 0)
		close(fd);
	json_object_put(m);
	buf_release(&z);
	return ret;
}

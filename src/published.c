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
#include "sign.h"

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

const char *published_find(const struct published *p, const char *layer, size_t *pos)
{
	size_t i = p && *pos > p->refs->n_manifests ? p->refs->n_manifests : *pos;

	/* the last one listed first: a layer indexed again is published again */
	while (p && i-- > 0) {
		const struct descriptor *d = &p->refs->manifests[i];
		const char *of = annotation_get(d->annotations, d->n_annotations, LAYER_INDEX_OF);

		if (d->artifact_type && strcmp(d->artifact_type, LAYER_INDEX_TYPE) == 0 && of &&
			strcmp(of, layer) == 0) {
			*pos = i;
			return d->digest;
		}
	}
	return NULL;
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

/* The signature tag of the manifest digest: "sha256-<hex>.sig" into out (at least 80 bytes). */
static void sig_tag(const char *digest, char *out, size_t size)
{
	snprintf(out, size, "sha256-%s" SIGN_TAG_SUFFIX, digest_hex(digest));
}

int published_trusted(struct cache *c, struct registry *r, const char *repo, const char *digest,
	const struct sign_keys *keys)
{
	char *body = NULL, *ct = NULL, *got = NULL, *payload = NULL;
	char tag[96], named[DIGEST_STR_LEN + 1];
	struct manifest *m = NULL;
	size_t len, i;
	int ret;

	sig_tag(digest, tag, sizeof(tag));
	ret = registry_get_manifest(r, repo, tag, &body, &len, &ct, &got);
	if (!ret)
		ret = manifest_parse(body, len, ct, &m);
	if (ret == -ENOMEM)
		goto out;
	if (ret) {
		log_warn("%s/%s@%s: a published layer index without a signature (%s:%s: %s): not "
			 "used",
			registry_host(r), repo, digest, repo, tag, strerror(-ret));
		ret = -EPERM;
		goto out;
	}
	ret = -EPERM;
	for (i = 0; ret && i < m->n_layers; i++) {
		const struct descriptor *d = &m->layers[i];
		const char *sig = annotation_get(d->annotations, d->n_annotations, SIGN_ANNOTATION);

		if (strcmp(d->media_type, SIGN_PAYLOAD_TYPE) != 0 || !sig || d->size <= 0 ||
			d->size > SIGN_PAYLOAD_MAX)
			continue;
		free(payload);
		payload = NULL;
		/* the payload is checked against its digest before a byte of it is read */
		if (cache_blob_read_all(c, r, repo, d->digest, d->size, &payload))
			continue;
		if (sign_payload_digest(payload, (size_t)d->size, named) ||
			strcmp(named, digest) != 0)
			continue;
		if (sign_verify(keys, payload, (size_t)d->size, sig))
			ret = 0;
	}
	if (ret)
		log_warn("%s/%s@%s: the published layer index is signed by no key of index_trust: "
			 "not used",
			registry_host(r), repo, digest);
out:
	manifest_free(m);
	free(payload);
	free(body);
	free(ct);
	free(got);
	return ret;
}

/* Upload n bytes at p as a blob of repo: its digest into d. 0 or -errno. */
static int push_bytes(struct registry *r, const char *repo, const void *p, size_t n, char *d)
{
	int fd = memfd_create("ocifs-blob", MFD_CLOEXEC), ret;

	digest_buffer(p, n, d);
	if (fd < 0)
		return -errno;
	ret = write(fd, p, n) == (ssize_t)n ? registry_push_blob(r, repo, d, fd, (int64_t)n, NULL)
					    : -EIO;
	close(fd);
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

int published_sign(
	struct registry *r, const char *repo, const char *digest, const struct sign_key *key)
{
	struct json_object *m = NULL, *layers, *ld, *ann, *cfg = NULL, *rootfs, *ids, *hist, *h0;
	struct buf payload = BUF_INIT, ref = BUF_INIT;
	char pd[DIGEST_STR_LEN + 1], cd[DIGEST_STR_LEN + 1], md[DIGEST_STR_LEN + 1], tag[96];
	const char *text;
	char *sig = NULL;
	bool kept = false;
	int ret;

	ret = buf_printf(&ref, "%s/%s", registry_host(r), repo);
	if (!ret)
		ret = sign_payload(ref.data, digest, &payload);
	if (!ret)
		ret = sign_make(key, payload.data, payload.len, &sig);
	if (!ret)
		ret = push_bytes(r, repo, payload.data, payload.len, pd);
	if (ret)
		goto out;
	/* the config cosign writes: the payload as the one layer of an empty image */
	cfg = json_object_new_object();
	json_object_object_add(cfg, "architecture", json_object_new_string(""));
	json_object_object_add(cfg, "created", json_object_new_string("0001-01-01T00:00:00Z"));
	hist = json_object_new_array();
	h0 = json_object_new_object();
	json_object_object_add(h0, "created", json_object_new_string("0001-01-01T00:00:00Z"));
	json_object_array_add(hist, h0);
	json_object_object_add(cfg, "history", hist);
	json_object_object_add(cfg, "os", json_object_new_string(""));
	rootfs = json_object_new_object();
	json_object_object_add(rootfs, "type", json_object_new_string("layers"));
	ids = json_object_new_array();
	json_object_array_add(ids, json_object_new_string(pd));
	json_object_object_add(rootfs, "diff_ids", ids);
	json_object_object_add(cfg, "rootfs", rootfs);
	json_object_object_add(cfg, "config", json_object_new_object());
	text = json_object_to_json_string_ext(
		cfg, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	ret = push_bytes(r, repo, text, strlen(text), cd);
	if (ret)
		goto out;
	m = json_object_new_object();
	json_object_object_add(m, "schemaVersion", json_object_new_int(2));
	json_object_object_add(m, "mediaType", json_object_new_string(MT_OCI_MANIFEST));
	json_object_object_add(m, "config",
		desc_json("application/vnd.oci.image.config.v1+json", cd, (int64_t)strlen(text)));
	layers = json_object_new_array();
	ld = desc_json(SIGN_PAYLOAD_TYPE, pd, (int64_t)payload.len);
	ann = json_object_new_object();
	json_object_object_add(ann, SIGN_ANNOTATION, json_object_new_string(sig));
	json_object_object_add(ld, "annotations", ann);
	json_object_array_add(layers, ld);
	json_object_object_add(m, "layers", layers);
	text = json_object_to_json_string_ext(
		m, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	digest_buffer(text, strlen(text), md);
	sig_tag(digest, tag, sizeof(tag));
	ret = registry_put_manifest(r, repo, tag, MT_OCI_MANIFEST, text, strlen(text), &kept);
	if (!ret)
		log_info("%s/%s@%s: signed as %s:%s", registry_host(r), repo, digest, repo, tag);
out:
	if (ret)
		log_warn(
			"%s/%s@%s: not signed: %s", registry_host(r), repo, digest, strerror(-ret));
	json_object_put(m);
	json_object_put(cfg);
	free(sig);
	buf_release(&payload);
	buf_release(&ref);
	return ret;
}

int published_push(struct registry *r, const char *repo, const char *subject_digest,
	const char *subject_type, int64_t subject_size, const struct layer *l,
	const struct sign_key *key)
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
	/* signed, or used by no mount until someone signs it (cosign sign --key) */
	if (!ret && key)
		ret = published_sign(r, repo, md, key);
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

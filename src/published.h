/*
 * Layer indexes published as referrers of an image manifest, so that any
 * mount reads an image's files by fetching only the spans they need.
 *
 * One artifact per indexed layer: artifactType LAYER_INDEX_TYPE, the empty
 * config, one blob of type LAYER_INDEX_MEDIA_TYPE (the zstd of layer.c's
 * index file), the subject the image manifest, and the annotation
 * LAYER_INDEX_OF naming the layer on the manifest and on its blob. It goes
 * through the referrers API, or the fallback tag sha256-<hex> where the
 * registry lacks it.
 */
#ifndef OCIFS_PUBLISHED_H
#define OCIFS_PUBLISHED_H

#include <stddef.h>
#include <stdint.h>

#define LAYER_INDEX_TYPE "application/vnd.ocifs.layer.index.v1"
#define LAYER_INDEX_MEDIA_TYPE "application/vnd.ocifs.layer.index.v1+zstd"
#define LAYER_INDEX_OF "io.ocifs.layer.digest"
/* The biggest published index fetched (compressed). */
#define LAYER_INDEX_MAX (256L * 1024 * 1024)

struct cache;
struct layer;
struct published;
struct registry;
struct sign_key;
struct sign_keys;

/*
 * The layer indexes published for the image manifest subject in repo, as
 * the referrers say: an empty list when there are none. 0 or -errno.
 */
int published_list(
	struct registry *r, const char *repo, const char *subject, struct published **out);
void published_free(struct published *p);
/*
 * A referrer holding the index of the layer digest (borrowed), or NULL: the
 * newest listed before *pos (SIZE_MAX to start), *pos set to where it is.
 */
const char *published_find(const struct published *p, const char *layer, size_t *pos);

/*
 * The index of layer from the referrer manifest digest: its bytes (zstd,
 * malloc'd), fetched through the cache and verified against their digest.
 * -EBADMSG (with a log line) for a referrer that is not one of ours or not
 * of that layer; 0 or -errno.
 */
int published_fetch(struct cache *c, struct registry *r, const char *repo, const char *digest,
	const char *layer, char **z, size_t *zlen);

/*
 * Whether the layer index referrer digest of repo carries a signature by
 * one of keys: cosign's signature manifest, tagged sha256-<hex>.sig, whose
 * simple-signing payload (fetched through the cache, verified) names digest
 * and is signed by a key of keys. 0, -EPERM (with a log line) when it is
 * not, or -ENOMEM.
 */
int published_trusted(struct cache *c, struct registry *r, const char *repo, const char *digest,
	const struct sign_keys *keys);

/*
 * Sign the manifest digest of repo with key as `cosign sign --key` does:
 * the payload and its config pushed, the signature manifest tagged
 * sha256-<hex>.sig. 0 or -errno with a log line.
 */
int published_sign(
	struct registry *r, const char *repo, const char *digest, const struct sign_key *key);

/*
 * Publish the index of l (a layer of the image manifest subject_digest,
 * subject_size bytes of type subject_type) into repo, signed with key
 * (published_sign()) unless it is NULL. 0 or -errno with a log line.
 */
int published_push(struct registry *r, const char *repo, const char *subject_digest,
	const char *subject_type, int64_t subject_size, const struct layer *l,
	const struct sign_key *key);

#endif

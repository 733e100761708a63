/*
 * OCI image manifests and indexes (and Docker schema 2 manifests and manifest
 * lists) parsed with json-c into plain structs. No I/O.
 */
#ifndef OCIFS_MANIFEST_H
#define OCIFS_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define MANIFEST_MAX_SIZE (4 * 1024 * 1024)

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_EMPTY "application/vnd.oci.empty.v1+json"
#define MT_LAYER_TAR "application/vnd.oci.image.layer.v1.tar"
/* The empty JSON object "{}", the config of artifacts that have none. */
#define EMPTY_DIGEST "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

#define ANN_TITLE "org.opencontainers.image.title"
#define ANN_CREATED "org.opencontainers.image.created"
#define ANN_UNPACK "io.deis.oras.content.unpack"
#define ANN_CONTENT_DIGEST "io.deis.oras.content.digest"

enum manifest_kind { MANIFEST_IMAGE, MANIFEST_INDEX };

struct annotation {
	char *key;
	char *value;
};

struct platform {
	char *os; /* "linux" */
	char *architecture; /* "amd64" */
	char *variant; /* "v7", or NULL */
};

struct descriptor {
	char *media_type; /* never NULL after a successful parse */
	char *digest; /* valid "alg:hex", never NULL */
	int64_t size; /* >= 0 */
	char *artifact_type; /* or NULL */
	struct annotation *annotations;
	size_t n_annotations;
	struct platform *platform; /* index entries only; NULL when absent */
	char *name; /* a "name" field beside the standard ones (Ollama's layers), or NULL */
};

struct manifest {
	enum manifest_kind kind;
	/*
	 * From the body, else the Content-Type given to the parser, else (kind
	 * told by shape) the OCI type of that kind; never NULL. A type known to
	 * the parser is stored in its canonical lower-case spelling.
	 */
	char *media_type;
	char *artifact_type; /* or NULL */
	bool has_config; /* image manifests always have one */
	struct descriptor config;
	struct descriptor *layers; /* image manifests */
	size_t n_layers;
	struct descriptor *manifests; /* indexes */
	size_t n_manifests;
	struct descriptor *subject; /* or NULL */
	struct annotation *annotations;
	size_t n_annotations;
};

/*
 * Parse a manifest or index body. content_type (may be NULL) is the HTTP
 * Content-Type, used only when the body has no mediaType. Returns 0 and a
 * manifest the caller frees with manifest_free(); -EFBIG when len exceeds
 * MANIFEST_MAX_SIZE; -EBADMSG when the body is not JSON, lacks required fields,
 * has fields of the wrong type, a bad digest or a negative size; -EPROTONOSUPPORT
 * for Docker schema 1, a schemaVersion other than 2 and unknown media types in
 * the body (an unknown Content-Type only means the shape decides: "manifests"
 * makes an index, "config" or "layers" an image manifest); -ENOMEM.
 *
 * Platform os, architecture and variant must each be usable as one path
 * component (not empty, ".", "..", no '/' or control characters), else
 * -EBADMSG. A JSON null is the same as an absent field, and an empty
 * artifactType or variant the same as none, as for the Go tools that write
 * manifests. Nothing is logged: the caller knows which digest this was.
 */
int manifest_parse(const char *body, size_t len, const char *content_type, struct manifest **out);
void manifest_free(struct manifest *m);

/*
 * Move the entries of page (a referrers index: one page of the referrers
 * API, or a fallback sha256-<hex> tag) into acc's manifests, keeping only
 * those whose artifactType is filter unless the registry filtered already
 * (OCI-Filters-Applied: artifactType) or filter is NULL. Returns how many
 * were taken, -EBADMSG when page is not an index, or -ENOMEM.
 */
int manifest_referrers_add(
	struct manifest *acc, struct manifest *page, const char *filter, bool filtered);

/* An RFC 3339 time ("created" annotations, as oras and buildkit write them) into *out. */
bool manifest_time_parse(const char *s, time_t *out);

/* Whether mt names an index (OCI image index, Docker manifest list). */
bool manifest_type_is_index(const char *mt);

/* The value of an annotation, borrowed, or NULL. */
const char *annotation_get(const struct annotation *a, size_t n, const char *key);

/*
 * The artifact type as oras shows it: artifactType, else the config's media
 * type; NULL for an index without artifactType. Borrowed.
 */
const char *manifest_artifact_type(const struct manifest *m);

/*
 * Whether a layer title is safe to show as a path inside an artifact directory:
 * not empty, not absolute, no empty, "." or ".." components, no control
 * characters or backslashes, no component longer than 255 bytes, and first
 * component not ".oci". Returns 0 when safe, -EINVAL otherwise.
 */
int manifest_title_check(const char *title);

/*
 * Parse "os/arch[/variant]"; 0, -EINVAL or -ENOMEM. A kernel name for the
 * architecture becomes Go's (x86_64 is amd64, armv7l is arm/v7), as for
 * platform_host(). Free with platform_release().
 */
int platform_parse(const char *s, struct platform *out);
/*
 * The platform of the running host, as Go names it (amd64, arm64, arm/v7...),
 * from uname(2). 0 or -errno; free with platform_release().
 */
int platform_host(struct platform *out);
void platform_release(struct platform *p);
/* "os/arch[/variant]", malloc'd, or NULL. */
char *platform_format(const struct platform *p);

/*
 * The index entry to show for want, as docker pull picks: same os and
 * architecture, and the same variant when want has one (arm64 with no variant
 * matches v8, arm with no variant matches v7). Without a variant in want, an
 * entry without one (for arm: v7) is preferred, else the first of any variant.
 * Entries without a platform never match. First match wins. Borrowed, or NULL
 * when none matches.
 */
const struct descriptor *manifest_select_platform(
	const struct manifest *index, const struct platform *want);

#endif

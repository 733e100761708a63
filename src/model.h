/*
 * Model artifacts: where each layer of a ModelPack artifact, a KitOps
 * ModelKit or an Ollama model shows, as the files their tools unpack
 * (ocifs(1) MODELS). No I/O: the caller gives the manifest, and a
 * ModelKit's config (its Kitfile as JSON) when it has one.
 */
#ifndef OCIFS_MODEL_H
#define OCIFS_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

struct buf;
struct manifest;

#define MT_MODEL_MANIFEST "application/vnd.cncf.model.manifest.v1+json"
#define MT_MODEL_CONFIG "application/vnd.cncf.model.config.v1+json"
#define MT_KIT_CONFIG "application/vnd.kitops.modelkit.config.v1+json"
#define ANN_MODEL_FILEPATH "org.cncf.model.filepath"
#define ANN_MODEL_METADATA "org.cncf.model.file.metadata+json"

enum model_format {
	MODEL_NONE, /* not a model artifact */
	MODEL_PACK, /* CNCF ModelPack (modctl; kit pack --use-model-pack) */
	MODEL_KIT, /* KitOps ModelKit: paths in its Kitfile */
	MODEL_OLLAMA, /* an Ollama model: names from media types */
};

/* What kind of model m is, from its artifactType, config and layer media types. */
enum model_format model_format_of(const struct manifest *m);

struct descriptor;
/* Whether a model's layer is a tar archive (.tar, .tar+gzip, .tar+zstd), unpacked in place. */
bool model_layer_archive(const struct descriptor *d);
/*
 * Whether a model's layer is an uncompressed tar that its annotations say
 * holds one regular file: its org.cncf.model.filepath (clean, into path)
 * and the size its file metadata gives (*size), as modctl packs a file.
 */
bool model_layer_single(const struct descriptor *d, char *path, size_t n, int64_t *size);

/* Where one layer shows. */
struct model_place {
	/* relative to the artifact's root, '/' between levels; NULL: not shown, or an archive */
	char *path;
	bool fallback; /* path is sha256-<hex>: the layer's own was unsafe or taken (logged) */
	bool archive; /* a tar layer (.tar, .tar+gzip, .tar+zstd) */
	/*
	 * An archive of a ModelKit packed by kit before 0.5 (its Kitfile
	 * entry has no digest): the directory its entries are unpacked
	 * under, its Kitfile path's parent (clean, relative), as kit unpack
	 * extracts it. NULL: at the root.
	 */
	char *prefix;
	mode_t mode; /* permission bits from the file's metadata; 0: the mount's */
	time_t mtime; /* from the file's metadata; 0: the artifact's */
};

/*
 * The place of each layer of m (m->n_layers of them, in *out), for format.
 * A layer's path is, in order: its org.opencontainers.image.title, its
 * org.cncf.model.filepath (org.cnai.model.filepath, the older name), its
 * Kitfile entry's path (matched by digest; kitfile is the config's JSON or
 * NULL), its Ollama name. A path that is absolute, holds "..", is not
 * clean, or is taken by an earlier layer (the same path, or a file where
 * another needs a directory) is logged (label names the artifact) and the
 * layer shows as sha256-<hex> at the root instead. An archive layer has no
 * path: its entries are unpacked at the root (rootfs.c), or, for a kit
 * before 0.5, under its Kitfile entry's parent (prefix). A parent that is
 * absolute, holds "..", is not clean, or meets another layer's path or the
 * Kitfile (a file where a directory is needed, or a directory of the tree
 * that would hide the archive's) is logged and the archive is unpacked at
 * the root instead. 0 or -ENOMEM.
 */
int model_places(const struct manifest *m, enum model_format format, const char *kitfile,
	size_t kitfile_len, const char *label, struct model_place **out);
void model_places_free(struct model_place *p, size_t n);

/*
 * A ModelKit's Kitfile as `kit unpack` writes it: the config's JSON as
 * YAML, without the layer digests kit adds to the config. Appended to out.
 * 0, -EBADMSG for a config that is not a JSON object, or -ENOMEM.
 */
int model_kitfile_yaml(const char *json, size_t len, struct buf *out);

#endif

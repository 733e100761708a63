/*
 * Model artifacts: the path of each layer (model.h, ocifs(1) MODELS).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "buf.h"
#include "digest.h"
#include "layer.h"
#include "log.h"
#include "manifest.h"
#include "model.h"

#define PACK_PREFIX "application/vnd.cncf.model."
#define PACK_PREFIX_OLD "application/vnd.cnai.model."
#define KIT_PREFIX "application/vnd.kitops.modelkit."
#define OLLAMA_PREFIX "application/vnd.ollama.image."

/* The media type mt without parameters (";..."), into out. */
static void mt_base(const char *mt, char *out, size_t n)
{
	size_t k = strcspn(mt ? mt : "", "; \t");

	snprintf(out, n, "%.*s", (int)(k < n ? k : n - 1), mt ? mt : "");
}

static bool starts(const char *s, const char *prefix)
{
	return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool ends(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && strcmp(s + n - k, suffix) == 0;
}

enum model_format model_format_of(const struct manifest *m)
{
	const char *at = m->artifact_type;
	const char *cfg = m->has_config ? m->config.media_type : NULL;
	enum model_format f = MODEL_NONE;
	char mt[256];
	size_t i;

	if (m->kind != MANIFEST_IMAGE)
		return MODEL_NONE;
	if ((at && (strcmp(at, MT_MODEL_MANIFEST) == 0 ||
			   strcmp(at, "application/vnd.cnai.model.manifest.v1+json") == 0)) ||
		(cfg && (strcmp(cfg, MT_MODEL_CONFIG) == 0 ||
				strcmp(cfg, "application/vnd.cnai.model.config.v1+json") == 0)))
		return MODEL_PACK;
	if ((at && strcmp(at, "application/vnd.kitops.modelkit.manifest.v1+json") == 0) ||
		(cfg && strcmp(cfg, MT_KIT_CONFIG) == 0))
		return MODEL_KIT;
	for (i = 0; i < m->n_layers && f == MODEL_NONE; i++) {
		mt_base(m->layers[i].media_type, mt, sizeof(mt));
		if (starts(mt, PACK_PREFIX) || starts(mt, PACK_PREFIX_OLD))
			f = MODEL_PACK;
		else if (starts(mt, KIT_PREFIX))
			f = MODEL_KIT;
		else if (starts(mt, OLLAMA_PREFIX))
			f = MODEL_OLLAMA;
	}
	return f;
}

bool model_layer_archive(const struct descriptor *d)
{
	char mt[256];

	mt_base(d->media_type, mt, sizeof(mt));
	if (!starts(mt, PACK_PREFIX) && !starts(mt, PACK_PREFIX_OLD) && !starts(mt, KIT_PREFIX))
		return false;
	return ends(mt, ".tar") || ends(mt, ".tar+gzip") || ends(mt, ".tar+zstd");
}

/*
 * A layer's path made clean into out (layer_path_clean(): "." and empty
 * levels dropped). -EINVAL for an absolute path, a ".." level, or what
 * manifest_title_check() refuses.
 */
static int clean_path(const char *in, char *out, size_t n)
{
	if (!in || *in == '/' || layer_path_clean(in, out, n))
		return -EINVAL;
	return manifest_title_check(out);
}

/* Whether two clean paths cannot both be: the same, or one a directory the other is in. */
static bool paths_clash(const char *a, const char *b)
{
	size_t na = strlen(a), nb = strlen(b);
	size_t k = na < nb ? na : nb;

	return strncmp(a, b, k) == 0 && (na == nb || (na < nb ? b[k] : a[k]) == '/');
}

/* The layer's file metadata annotation (JSON text), under its names new and old, or NULL. */
static const char *metadata_of(const struct descriptor *d)
{
	static const char *const keys[] = {
		ANN_MODEL_METADATA,
		"org.cnai.model.file.metadata+json",
		"org.cnai.model.file.metadata",
	};
	const char *s = NULL;
	size_t i;

	for (i = 0; !s && i < sizeof(keys) / sizeof(keys[0]); i++)
		s = annotation_get(d->annotations, d->n_annotations, keys[i]);
	return s;
}

/* Mode and mtime from the layer's file metadata annotation, where it has one that parses. */
static void metadata_apply(const struct descriptor *d, const char *label, struct model_place *p)
{
	struct json_object *root = NULL, *v;
	const char *s = metadata_of(d);
	time_t t;

	if (!s)
		return;
	root = json_tokener_parse(s);
	if (!root || !json_object_is_type(root, json_type_object)) {
		log_warn("%s: layer %s: file metadata is not a JSON object: the mount's mode and "
			 "the artifact's time",
			label, d->digest);
		goto out;
	}
	/* typeflag: 0 (modctl) or '0' (kit) for a regular file; a raw layer is one */
	if (json_object_object_get_ex(root, "typeflag", &v) &&
		json_object_is_type(v, json_type_int) && json_object_get_int(v) != 0 &&
		json_object_get_int(v) != '0') {
		log_warn("%s: layer %s: file metadata says typeflag %d, not a regular file: not "
			 "used",
			label, d->digest, json_object_get_int(v));
		goto out;
	}
	/* the permission bits, in decimal (Go's fs.FileMode.Perm()); no set-id or sticky bit */
	if (json_object_object_get_ex(root, "mode", &v) && json_object_is_type(v, json_type_int) &&
		json_object_get_int64(v) > 0 && json_object_get_int64(v) <= 07777)
		p->mode = (mode_t)json_object_get_int64(v) & 0777;
	/* an RFC 3339 time; Go's zero time (year 1) means none */
	if (json_object_object_get_ex(root, "mtime", &v) &&
		json_object_is_type(v, json_type_string) &&
		manifest_time_parse(json_object_get_string(v), &t) && t > 0)
		p->mtime = t;
out:
	json_object_put(root);
}

bool model_layer_single(const struct descriptor *d, char *path, size_t n, int64_t *size)
{
	const char *fp = annotation_get(d->annotations, d->n_annotations, ANN_MODEL_FILEPATH);
	const char *md = metadata_of(d);
	struct json_object *root, *v;
	char mt[256];
	bool ok;

	mt_base(d->media_type, mt, sizeof(mt));
	if (!fp)
		fp = annotation_get(d->annotations, d->n_annotations, "org.cnai.model.filepath");
	if (!model_layer_archive(d) || !ends(mt, ".tar") || !fp || !md || clean_path(fp, path, n))
		return false;
	root = json_tokener_parse(md);
	ok = root && json_object_object_get_ex(root, "size", &v) &&
	     json_object_is_type(v, json_type_int) && json_object_get_int64(v) >= 0;
	if (ok)
		*size = json_object_get_int64(v);
	if (ok && json_object_object_get_ex(root, "typeflag", &v))
		ok = json_object_is_type(v, json_type_int) &&
		     (json_object_get_int(v) == 0 || json_object_get_int(v) == '0');
	json_object_put(root);
	return ok;
}

/* ---- KitOps: a layer's Kitfile entry, by digest, else by its place among its kind */

struct kit_entry {
	const char *kind; /* the layer media type's: model, modelpart, code, dataset, docs */
	const char *path;
	const char *digest; /* or NULL (kits before 0.5) */
};

static void kit_add(
	struct json_object *o, const char *kind, struct kit_entry *v, size_t *n, size_t max)
{
	struct json_object *p, *dg;

	if (*n >= max || !json_object_is_type(o, json_type_object) ||
		!json_object_object_get_ex(o, "path", &p) ||
		!json_object_is_type(p, json_type_string))
		return;
	v[*n].kind = kind;
	v[*n].path = json_object_get_string(p);
	v[*n].digest = json_object_object_get_ex(o, "digest", &dg) &&
				       json_object_is_type(dg, json_type_string)
			       ? json_object_get_string(dg)
			       : NULL;
	(*n)++;
}

static void kit_add_list(struct json_object *root, const char *key, const char *kind,
	struct kit_entry *v, size_t *n, size_t max)
{
	struct json_object *a;
	size_t i;

	if (!json_object_object_get_ex(root, key, &a) || !json_object_is_type(a, json_type_array))
		return;
	for (i = 0; i < json_object_array_length(a); i++)
		kit_add(json_object_array_get_idx(a, i), kind, v, n, max);
}

/* The kind of a KitOps layer media type ("model", "code", ...) into out; false if none. */
static bool kit_kind(const char *media_type, char *out, size_t n)
{
	char mt[256];
	const char *k;
	size_t len;

	mt_base(media_type, mt, sizeof(mt));
	if (!starts(mt, KIT_PREFIX))
		return false;
	k = mt + strlen(KIT_PREFIX);
	len = strcspn(k, ".");
	snprintf(out, n, "%.*s", (int)(len < n ? len : n - 1), k);
	return true;
}

/* ---- Ollama: a name from the media type */

static const struct {
	const char *type;
	const char *name;
} ollama_names[] = {
	{ "model", "model.gguf" },
	{ "projector", "projector.gguf" },
	{ "adapter", "adapter.gguf" },
	{ "draft", "draft.gguf" },
	{ "template", "template" },
	{ "prompt", "template" }, /* the older name of template */
	{ "system", "system" },
	{ "params", "params.json" },
	{ "messages", "messages.json" },
	{ "license", "license" },
};

/* The Ollama name of d into out: its own "name", the table's, else the type's last part. */
static void ollama_name(const struct descriptor *d, char *out, size_t n)
{
	char mt[256];
	const char *type;
	size_t i;

	if (d->name && *d->name) {
		snprintf(out, n, "%s", d->name);
		return;
	}
	mt_base(d->media_type, mt, sizeof(mt));
	if (!starts(mt, OLLAMA_PREFIX)) {
		*out = '\0';
		return;
	}
	type = mt + strlen(OLLAMA_PREFIX);
	for (i = 0; i < sizeof(ollama_names) / sizeof(ollama_names[0]); i++)
		if (strcmp(type, ollama_names[i].type) == 0) {
			snprintf(out, n, "%s", ollama_names[i].name);
			return;
		}
	snprintf(out, n, "%s", type);
}

/* name with -N before its extension (.gguf, .json), N >= 2: a type that repeats. False: too long. */
static bool numbered(const char *name, unsigned k, char *out, size_t n)
{
	const char *dot = strrchr(name, '.');
	int w;

	if (dot && dot != name && !strchr(dot, '/'))
		w = snprintf(out, n, "%.*s-%u%s", (int)(dot - name), name, k, dot);
	else
		w = snprintf(out, n, "%s-%u", name, k);
	return w > 0 && (size_t)w < n;
}

/* ---- the places */

void model_places_free(struct model_place *p, size_t n)
{
	size_t i;

	for (i = 0; p && i < n; i++) {
		free(p[i].path);
		free(p[i].prefix);
	}
	free(p);
}

/*
 * The Kitfile entry of layer i of m: the one with its digest, else (a kit
 * before 0.5, whose entries have none) the n-th entry of the layer's kind
 * for the n-th layer of that kind, as kit unpack walks them. NULL: none.
 */
static const struct kit_entry *kit_entry_of(
	const struct manifest *m, size_t i, const struct kit_entry *kit, size_t n_kit)
{
	const struct descriptor *d = &m->layers[i];
	char kind[64], other[64];
	unsigned seen = 0;
	size_t j, k;

	if (!kit_kind(d->media_type, kind, sizeof(kind)))
		return NULL;
	for (j = 0; j < n_kit; j++)
		if (kit[j].digest && strcmp(kit[j].digest, d->digest) == 0)
			return &kit[j];
	for (k = 0; k < i; k++)
		if (kit_kind(m->layers[k].media_type, other, sizeof(other)) &&
			strcmp(other, kind) == 0)
			seen++;
	for (j = 0; j < n_kit; j++)
		if (!kit[j].digest && strcmp(kit[j].kind, kind) == 0 && seen-- == 0)
			return &kit[j];
	return NULL;
}

/* The path layer i asks for (raw, not yet checked) into want; "" when it names none. */
static void wanted_path(const struct manifest *m, size_t i, enum model_format format,
	const struct kit_entry *kit, size_t n_kit, char *want, size_t n)
{
	const struct descriptor *d = &m->layers[i];
	const char *s = annotation_get(d->annotations, d->n_annotations, ANN_TITLE);
	const struct kit_entry *e;

	if (!s)
		s = annotation_get(d->annotations, d->n_annotations, ANN_MODEL_FILEPATH);
	if (!s)
		s = annotation_get(d->annotations, d->n_annotations, "org.cnai.model.filepath");
	if (s) {
		snprintf(want, n, "%s", s);
		return;
	}
	*want = '\0';
	if (format == MODEL_OLLAMA) {
		ollama_name(d, want, n);
		return;
	}
	e = format == MODEL_KIT ? kit_entry_of(m, i, kit, n_kit) : NULL;
	if (e)
		snprintf(want, n, "%s", e->path);
}

/*
 * The parent of a Kitfile path, clean, into out ("" for the root), as
 * kit unpack takes filepath.Dir of the cleaned path. -EINVAL for a path
 * clean_path() refuses, but for one naming the root itself (".").
 */
static int kit_parent(const char *path, char *out, size_t n)
{
	char *slash;
	int ret = clean_path(path, out, n);

	/* "." packs the whole context: its parent is the root, as kit unpack's */
	if (ret && path && *path != '/' && layer_path_clean(path, out, n) == 0 && !*out)
		return 0;
	if (ret)
		return ret;
	slash = strrchr(out, '/');
	*(slash ? slash : out) = '\0';
	return 0;
}

/*
 * Where archive layer i unpacks (pl->prefix): a kit before 0.5 under its
 * Kitfile path's parent, as kit unpack extracts it; a kit from 0.5 on,
 * whose tars name full paths, and every other archive at the root. An
 * unsafe parent is logged and the root used. 0 or -ENOMEM.
 */
static int archive_place(const struct manifest *m, size_t i, enum model_format format,
	const struct kit_entry *kit, size_t n_kit, const char *label, struct model_place *pl)
{
	const struct kit_entry *e = format == MODEL_KIT ? kit_entry_of(m, i, kit, n_kit) : NULL;
	char dir[4096], esc[600];

	if (!e || e->digest)
		return 0;
	if (kit_parent(e->path, dir, sizeof(dir))) {
		log_escape(e->path, esc, sizeof(esc));
		log_warn("%s: layer %s: Kitfile path \"%s\" (a kit before 0.5, unpacked under its "
			 "parent) is unsafe (absolute, \"..\" or not a name): unpacked at the root",
			label, m->layers[i].digest, esc);
		return 0;
	}
	if (!*dir)
		return 0;
	pl->prefix = strdup(dir);
	return pl->prefix ? 0 : -ENOMEM;
}

/*
 * Whether the clean paths a and b have the same first level. Only the
 * first level counts: the artifact's own files and directories (layers
 * with a path, the Kitfile) are found at its root before its root
 * filesystem is looked into (rootfs_lookup()), and a directory found there
 * hides all the root filesystem has below that name, however deep the two
 * paths part.
 */
static bool same_top(const char *a, const char *b)
{
	size_t k = strcspn(a, "/");

	return k == strcspn(b, "/") && strncmp(a, b, k) == 0;
}

/*
 * An archive's prefix that meets what the tree shows at the root: another
 * layer's path (a file where the prefix needs a directory, or a directory
 * of files whose tree would hide the archive's), or the Kitfile. Logged,
 * and the archive unpacked at the root instead.
 */
static void prefixes_check(
	const struct manifest *m, struct model_place *p, bool kitfile, const char *label)
{
	char esc[600], other[600];
	size_t i, j;

	for (i = 0; i < m->n_layers; i++) {
		const char *hit = NULL;

		for (j = 0; p[i].prefix && !hit && j < m->n_layers; j++)
			if (p[j].path && same_top(p[i].prefix, p[j].path))
				hit = p[j].path;
		if (p[i].prefix && !hit && kitfile && same_top(p[i].prefix, "Kitfile"))
			hit = "Kitfile";
		if (!hit)
			continue;
		log_escape(p[i].prefix, esc, sizeof(esc));
		log_escape(hit, other, sizeof(other));
		log_warn("%s: layer %s: unpacked under \"%s\" (a kit before 0.5), it would meet "
			 "the file \"%s\": unpacked at the root",
			label, m->layers[i].digest, esc, other);
		free(p[i].prefix);
		p[i].prefix = NULL;
	}
}

#define KIT_MAX 4096

int model_places(const struct manifest *m, enum model_format format, const char *kitfile,
	size_t kitfile_len, const char *label, struct model_place **out)
{
	struct model_place *p = calloc(m->n_layers ? m->n_layers : 1, sizeof(*p));
	struct kit_entry *kit = NULL;
	struct json_object *kroot = NULL, *model;
	size_t n_kit = 0, i, j;
	char want[4096], path[4096], esc[600];
	int ret = 0;

	if (!p)
		return -ENOMEM;
	if (format == MODEL_KIT && kitfile) {
		struct json_tokener *tok = json_tokener_new();

		kroot = tok ? json_tokener_parse_ex(tok, kitfile, (int)kitfile_len) : NULL;
		json_tokener_free(tok);
		kit = calloc(KIT_MAX, sizeof(*kit));
		if (!kit) {
			ret = -ENOMEM;
			goto out;
		}
		if (kroot && json_object_object_get_ex(kroot, "model", &model)) {
			kit_add(model, "model", kit, &n_kit, KIT_MAX);
			kit_add_list(model, "parts", "modelpart", kit, &n_kit, KIT_MAX);
		}
		if (kroot) {
			kit_add_list(kroot, "code", "code", kit, &n_kit, KIT_MAX);
			kit_add_list(kroot, "datasets", "dataset", kit, &n_kit, KIT_MAX);
			kit_add_list(kroot, "docs", "docs", kit, &n_kit, KIT_MAX);
			kit_add_list(kroot, "prompts", "code", kit, &n_kit, KIT_MAX);
		} else {
			log_warn("%s: the Kitfile in the config does not parse: layers by digest",
				label);
		}
	}
	for (i = 0; i < m->n_layers; i++) {
		const struct descriptor *d = &m->layers[i];
		struct model_place *pl = &p[i];
		bool taken = false;

		pl->archive = model_layer_archive(d);
		/* its entries name their own paths, as modctl and kit unpack them */
		if (pl->archive) {
			ret = archive_place(m, i, format, kit, n_kit, label, pl);
			if (ret)
				goto out;
			continue;
		}
		wanted_path(m, i, format, kit, n_kit, want, sizeof(want));
		if (!*want) {
			/* an Ollama layer of an unknown kind, a kit layer without an entry */
			if (format == MODEL_NONE)
				continue;
			log_warn("%s: layer %s has no path", label, d->digest);
		} else if (clean_path(want, path, sizeof(path))) {
			log_escape(want, esc, sizeof(esc));
			log_warn("%s: layer %s path \"%s\" is unsafe (absolute, \"..\" or not a "
				 "name)",
				label, d->digest, esc);
			*want = '\0';
		}
		/* an Ollama type that repeats: numbered from its second layer */
		if (*want && format == MODEL_OLLAMA && !d->name) {
			unsigned k = 1;

			for (j = 0; j < i; j++) {
				char other[256];

				if (p[j].path && !p[j].fallback && !m->layers[j].name) {
					ollama_name(&m->layers[j], other, sizeof(other));
					k += strcmp(other, path) == 0;
				}
			}
			if (k > 1) {
				char base[4096];

				snprintf(base, sizeof(base), "%s", path);
				if (!numbered(base, k, path, sizeof(path)))
					*want = '\0';
			}
		}
		if (*want) {
			for (j = 0; j < i && !taken; j++)
				taken = p[j].path && paths_clash(p[j].path, path);
			if (taken) {
				log_escape(path, esc, sizeof(esc));
				log_warn("%s: layer %s path \"%s\" clashes with an earlier layer's",
					label, d->digest, esc);
			}
		}
		if (!*want || taken) {
			snprintf(path, sizeof(path), "sha256-%s", digest_hex(d->digest));
			for (j = 0, taken = false; j < i && !taken; j++)
				taken = p[j].path && paths_clash(p[j].path, path);
			if (taken) {
				log_warn("%s: layer %s: shown once, as sha256-%s", label, d->digest,
					digest_hex(d->digest));
				continue;
			}
			log_warn("%s: layer %s shown as sha256-%s", label, d->digest,
				digest_hex(d->digest));
			pl->fallback = true;
		}
		pl->path = strdup(path);
		if (!pl->path) {
			ret = -ENOMEM;
			goto out;
		}
		if (!pl->fallback)
			metadata_apply(d, label, pl);
	}
	prefixes_check(m, p, kroot && json_object_is_type(kroot, json_type_object), label);
out:
	json_object_put(kroot);
	free(kit);
	if (ret) {
		model_places_free(p, m->n_layers);
		return ret;
	}
	*out = p;
	return 0;
}

/* ---- the Kitfile as YAML */

/* Whether a plain YAML scalar s would read back as something else than a string. */
static bool yaml_special(const char *s)
{
	static const char *const words[] = { "true", "false", "yes", "no", "on", "off", "y", "n",
		"null", "~", ".inf", "-.inf", ".nan" };
	char *end;
	size_t i;

	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasecmp(s, words[i]) == 0)
			return true;
	strtod(s, &end);
	return *end == '\0';
}

/* A scalar as YAML: plain where that reads back the same, else JSON's quoted form (YAML too). */
static int yaml_scalar(struct buf *out, struct json_object *v)
{
	const char *s;
	size_t i, n;
	bool plain;

	if (!json_object_is_type(v, json_type_string))
		return buf_printf(
			out, "%s", json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
	s = json_object_get_string(v);
	n = strlen(s);
	plain = n > 0 && !strchr("-?:,[]{}#&*!|>'\"%@` ", s[0]) && s[n - 1] != ' ' &&
		!strstr(s, ": ") && !strstr(s, " #") && !ends(s, ":") && !yaml_special(s);
	for (i = 0; plain && i < n; i++)
		plain = (unsigned char)s[i] >= 0x20 && s[i] != 0x7f;
	if (plain)
		return buf_printf(out, "%s", s);
	return buf_printf(out, "%s", json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
}

static bool yaml_empty(struct json_object *v)
{
	return (json_object_is_type(v, json_type_object) && json_object_object_length(v) == 0) ||
	       (json_object_is_type(v, json_type_array) && json_object_array_length(v) == 0);
}

static int yaml_value(struct buf *out, struct json_object *v, int indent, bool in_list);

/* key: value lines of an object at indent; the first line's indent is already written with first. */
static int yaml_object(struct buf *out, struct json_object *o, int indent, bool first)
{
	int ret = 0;

	json_object_object_foreach(o, key, val)
	{
		struct json_object *k = json_object_new_string(key);

		/* what kit adds to its config for unpack's checks: not in a Kitfile */
		if (strcmp(key, "digest") == 0 || strcmp(key, "diffId") == 0) {
			json_object_put(k);
			continue;
		}
		if (!first)
			ret = buf_printf(out, "%*s", indent, "");
		first = false;
		if (!ret)
			ret = k ? yaml_scalar(out, k) : -ENOMEM;
		json_object_put(k);
		if (!ret)
			ret = buf_printf(out, ":");
		if (!ret)
			ret = yaml_value(out, val, indent + 2, false);
		if (ret)
			return ret;
	}
	return ret;
}

/* After "key:" or "-": the value, ending its last line. */
static int yaml_value(struct buf *out, struct json_object *v, int indent, bool in_list)
{
	size_t i;
	int ret = 0;

	if (!v)
		return buf_printf(out, " null\n");
	if (yaml_empty(v))
		return buf_printf(
			out, json_object_is_type(v, json_type_object) ? " {}\n" : " []\n");
	if (json_object_is_type(v, json_type_object)) {
		if (in_list) {
			ret = buf_printf(out, " ");
			return ret ? ret : yaml_object(out, v, indent, true);
		}
		ret = buf_printf(out, "\n");
		return ret ? ret : yaml_object(out, v, indent, false);
	}
	if (json_object_is_type(v, json_type_array)) {
		ret = buf_printf(out, "\n");
		for (i = 0; !ret && i < json_object_array_length(v); i++) {
			ret = buf_printf(out, "%*s-", indent, "");
			if (!ret)
				ret = yaml_value(
					out, json_object_array_get_idx(v, i), indent + 2, true);
		}
		return ret;
	}
	ret = buf_printf(out, " ");
	if (!ret)
		ret = yaml_scalar(out, v);
	return ret ? ret : buf_printf(out, "\n");
}

int model_kitfile_yaml(const char *json, size_t len, struct buf *out)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *root;
	int ret;

	if (!tok)
		return -ENOMEM;
	root = json_tokener_parse_ex(tok, json, (int)len);
	json_tokener_free(tok);
	if (!root || !json_object_is_type(root, json_type_object)) {
		json_object_put(root);
		return -EBADMSG;
	}
	ret = yaml_empty(root) ? buf_printf(out, "{}\n") : yaml_object(out, root, 0, true);
	json_object_put(root);
	return ret;
}

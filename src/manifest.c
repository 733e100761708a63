#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/utsname.h>

#include <json.h>

#include "manifest.h"

#define MT_DOCKER_V1 "application/vnd.docker.distribution.manifest.v1+json"
#define MT_DOCKER_V1_SIGNED "application/vnd.docker.distribution.manifest.v1+prettyjws"

/* The longest name a path component may have on Linux (NAME_MAX). */
#define TITLE_COMPONENT_MAX 255

static const struct {
	const char *type;
	enum manifest_kind kind;
} media_kinds[] = {
	{ MT_OCI_MANIFEST, MANIFEST_IMAGE },
	{ MT_OCI_INDEX, MANIFEST_INDEX },
	{ MT_DOCKER_MANIFEST, MANIFEST_IMAGE },
	{ MT_DOCKER_LIST, MANIFEST_INDEX },
};

/*
 * uname(2) machine names that Go (and so every image index) spells
 * differently. Anything else (ppc64le, s390x, riscv64, ...) is the same in
 * both and passes through.
 */
static const struct {
	const char *machine;
	const char *arch;
	const char *variant;
} arch_names[] = {
	{ "x86_64", "amd64", NULL },
	{ "aarch64", "arm64", NULL },
	/* 32-bit user space on an armv8 kernel runs v7 code; arm/v8 images barely exist. */
	{ "armv8l", "arm", "v7" },
	{ "armv7l", "arm", "v7" },
	{ "armv6l", "arm", "v6" },
	{ "armv5tel", "arm", "v5" },
	{ "i686", "386", NULL },
	{ "i586", "386", NULL },
	{ "i486", "386", NULL },
	{ "i386", "386", NULL },
};

/*
 * The value of key, or NULL when it is absent. json-c gives NULL for a JSON
 * null too, so an optional field that a writer set to null reads as absent
 * and a required one as missing.
 */
static struct json_object *field(struct json_object *obj, const char *key)
{
	struct json_object *v = NULL;

	json_object_object_get_ex(obj, key, &v);
	return v;
}

/*
 * Copy a JSON string. One with an embedded NUL ("\u0000") is refused: it
 * would silently shorten as a C string, and a title or digest that means
 * something else than the registry served is worse than none.
 */
static int dup_string(struct json_object *v, char **out)
{
	const char *s;

	if (!json_object_is_type(v, json_type_string))
		return -EBADMSG;
	s = json_object_get_string(v);
	if (strlen(s) != (size_t)json_object_get_string_len(v))
		return -EBADMSG;
	*out = strdup(s);
	return *out ? 0 : -ENOMEM;
}

/* A string field; *out is NULL when an optional one is absent. */
static int get_string(struct json_object *obj, const char *key, bool required, char **out)
{
	struct json_object *v = field(obj, key);

	*out = NULL;
	if (!v)
		return required ? -EBADMSG : 0;
	return dup_string(v, out);
}

/* An optional string where "" means absent, as Go's omitempty writes it. */
static int get_optional_string(struct json_object *obj, const char *key, char **out)
{
	int err = get_string(obj, key, false, out);

	if (!err && *out && !**out) {
		free(*out);
		*out = NULL;
	}
	return err;
}

static bool is_lower_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/*
 * Only the algorithms the OCI image spec registers, with their exact lengths:
 * a digest ends up in cache paths and URLs, so anything looser is refused.
 */
static bool digest_valid(const char *d)
{
	size_t n, i;

	if (!strncmp(d, "sha256:", 7))
		n = 64;
	else if (!strncmp(d, "sha512:", 7))
		n = 128;
	else
		return false;
	for (i = 0; i < n; i++)
		if (!is_lower_hex(d[7 + i]))
			return false;
	return d[7 + n] == '\0';
}

/*
 * A size is a JSON integer, not a double or a string that happens to hold a
 * number. json-c clamps integers beyond int64 instead of failing, so those
 * show up as a mismatch between the signed and unsigned readings.
 */
static int parse_size(struct json_object *v, int64_t *out)
{
	int64_t s;

	if (!v || !json_object_is_type(v, json_type_int))
		return -EBADMSG;
	s = json_object_get_int64(v);
	if (s < 0 || (uint64_t)s != json_object_get_uint64(v))
		return -EBADMSG;
	*out = s;
	return 0;
}

static void annotations_free(struct annotation *a, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(a[i].key);
		free(a[i].value);
	}
	free(a);
}

static int parse_annotations(struct json_object *parent, struct annotation **out, size_t *n_out)
{
	struct json_object *obj = field(parent, "annotations");
	struct json_object_iterator it, end;
	struct annotation *a;
	size_t n, i;
	int err;

	*out = NULL;
	*n_out = 0;
	if (!obj)
		return 0;
	if (!json_object_is_type(obj, json_type_object))
		return -EBADMSG;
	n = json_object_object_length(obj);
	if (!n)
		return 0;
	a = calloc(n, sizeof(*a));
	if (!a)
		return -ENOMEM;
	/* In the body's order: json-c iterates an object as it was read. */
	it = json_object_iter_begin(obj);
	end = json_object_iter_end(obj);
	for (i = 0; i < n && !json_object_iter_equal(&it, &end); i++) {
		a[i].key = strdup(json_object_iter_peek_name(&it));
		if (!a[i].key) {
			err = -ENOMEM;
			goto out_free;
		}
		err = dup_string(json_object_iter_peek_value(&it), &a[i].value);
		if (err)
			goto out_free;
		json_object_iter_next(&it);
	}
	*out = a;
	*n_out = i;
	return 0;

out_free:
	annotations_free(a, n);
	return err;
}

void platform_release(struct platform *p)
{
	if (!p)
		return;
	free(p->os);
	free(p->architecture);
	free(p->variant);
	p->os = p->architecture = p->variant = NULL;
}

static void platform_free(struct platform *p)
{
	platform_release(p);
	free(p);
}

/*
 * Platform names become directories under .oci/platforms/, one component
 * each.
 */
static bool platform_component_ok(const char *s)
{
	const unsigned char *p;

	if (!*s || !strcmp(s, ".") || !strcmp(s, ".."))
		return false;
	for (p = (const unsigned char *)s; *p; p++)
		if (*p == '/' || *p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

static int parse_platform(struct json_object *desc, struct platform **out)
{
	struct json_object *obj = field(desc, "platform");
	struct platform *p;
	int err;

	*out = NULL;
	if (!obj)
		return 0;
	if (!json_object_is_type(obj, json_type_object))
		return -EBADMSG;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	err = get_string(obj, "os", true, &p->os);
	if (err)
		goto out_free;
	err = get_string(obj, "architecture", true, &p->architecture);
	if (err)
		goto out_free;
	err = get_optional_string(obj, "variant", &p->variant);
	if (err)
		goto out_free;
	err = -EBADMSG;
	if (!platform_component_ok(p->os) || !platform_component_ok(p->architecture))
		goto out_free;
	if (p->variant && !platform_component_ok(p->variant))
		goto out_free;
	*out = p;
	return 0;

out_free:
	platform_free(p);
	return err;
}

static void descriptor_release(struct descriptor *d)
{
	free(d->media_type);
	free(d->digest);
	free(d->artifact_type);
	free(d->name);
	annotations_free(d->annotations, d->n_annotations);
	platform_free(d->platform);
	memset(d, 0, sizeof(*d));
}

static void descriptors_free(struct descriptor *d, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		descriptor_release(&d[i]);
	free(d);
}

/*
 * Fill the zeroed *d from obj. The platform is read for index entries only:
 * elsewhere it means nothing to us, and need not be valid. On failure *d is
 * left zeroed.
 */
static int parse_descriptor(struct json_object *obj, bool index_entry, struct descriptor *d)
{
	int err;

	if (!obj || !json_object_is_type(obj, json_type_object))
		return -EBADMSG;
	err = get_string(obj, "mediaType", true, &d->media_type);
	if (err)
		goto out_release;
	err = get_string(obj, "digest", true, &d->digest);
	if (err)
		goto out_release;
	err = -EBADMSG;
	if (!*d->media_type || !digest_valid(d->digest))
		goto out_release;
	err = parse_size(field(obj, "size"), &d->size);
	if (err)
		goto out_release;
	err = get_optional_string(obj, "artifactType", &d->artifact_type);
	if (err)
		goto out_release;
	err = parse_annotations(obj, &d->annotations, &d->n_annotations);
	if (err)
		goto out_release;
	/* not in the spec: a wrong type or a NUL in it is no reason to refuse the manifest */
	if (field(obj, "name") && dup_string(field(obj, "name"), &d->name) == -ENOMEM) {
		err = -ENOMEM;
		goto out_release;
	}
	if (index_entry) {
		err = parse_platform(obj, &d->platform);
		if (err)
			goto out_release;
	}
	return 0;

out_release:
	descriptor_release(d);
	return err;
}

static int parse_descriptor_array(
	struct json_object *arr, bool index_entry, struct descriptor **out, size_t *n_out)
{
	struct descriptor *d;
	size_t n, i;
	int err;

	*out = NULL;
	*n_out = 0;
	if (!arr || !json_object_is_type(arr, json_type_array))
		return -EBADMSG;
	n = json_object_array_length(arr);
	if (!n)
		return 0;
	d = calloc(n, sizeof(*d));
	if (!d)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		err = parse_descriptor(json_object_array_get_idx(arr, i), index_entry, &d[i]);
		if (err)
			goto out_free;
	}
	*out = d;
	*n_out = n;
	return 0;

out_free:
	descriptors_free(d, n);
	return err;
}

static bool is_json_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * The one top-level JSON object in body[0, len). The body is a network
 * buffer, not a C string, so the length-aware tokener is used and nothing may
 * follow the object but whitespace. Strict mode refuses what RFC 8259 does
 * (trailing commas, leading zeros) and invalid UTF-8.
 */
static int parse_json_object(const char *body, size_t len, struct json_object **out)
{
	struct json_tokener *tok;
	struct json_object *root;
	size_t end;
	int err = -EBADMSG;

	if (!body || !len)
		return -EBADMSG;
	tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	/* len <= MANIFEST_MAX_SIZE, checked by the caller, so it fits an int. */
	root = json_tokener_parse_ex(tok, body, (int)len);
	/* Before json-c 0.17 an allocation failure looks like bad input here. */
	if (!root)
		goto out_free_tok;
	end = json_tokener_get_parse_end(tok);
	while (end < len && is_json_space(body[end]))
		end++;
	if (end != len || !json_object_is_type(root, json_type_object))
		goto out_put;
	json_tokener_free(tok);
	*out = root;
	return 0;

out_put:
	json_object_put(root);
out_free_tok:
	json_tokener_free(tok);
	return err;
}

/*
 * The kind of a manifest media type, s[0, n) compared without case as media
 * types are. -EPROTONOSUPPORT for schema 1 and for anything unknown.
 */
static int media_kind(const char *s, size_t n, const char **canonical, enum manifest_kind *kind)
{
	size_t i;

	for (i = 0; i < sizeof(media_kinds) / sizeof(media_kinds[0]); i++) {
		if (strlen(media_kinds[i].type) == n && !strncasecmp(s, media_kinds[i].type, n)) {
			*canonical = media_kinds[i].type;
			*kind = media_kinds[i].kind;
			return 0;
		}
	}
	return -EPROTONOSUPPORT;
}

bool manifest_type_is_index(const char *mt)
{
	enum manifest_kind kind;
	const char *canonical;

	return mt && media_kind(mt, strlen(mt), &canonical, &kind) == 0 && kind == MANIFEST_INDEX;
}

static bool is_docker_v1(const char *s, size_t n)
{
	return (n == strlen(MT_DOCKER_V1) && !strncasecmp(s, MT_DOCKER_V1, n)) ||
	       (n == strlen(MT_DOCKER_V1_SIGNED) && !strncasecmp(s, MT_DOCKER_V1_SIGNED, n));
}

/*
 * Kind and media type from, in order: the body's mediaType, which must be
 * known; the Content-Type without its parameters, which may be anything (a
 * plain server says application/json) but schema 1; the fields present.
 */
static int detect_kind(struct json_object *root, const char *content_type, struct manifest *m)
{
	struct json_object *mt = field(root, "mediaType");
	const char *canonical = NULL;
	const char *s, *e;
	int err;

	if (mt) {
		if (!json_object_is_type(mt, json_type_string))
			return -EBADMSG;
		s = json_object_get_string(mt);
		err = media_kind(s, json_object_get_string_len(mt), &canonical, &m->kind);
		if (err)
			return err;
	} else if (content_type) {
		s = content_type;
		while (*s == ' ' || *s == '\t')
			s++;
		e = s + strcspn(s, ";");
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if (is_docker_v1(s, e - s))
			return -EPROTONOSUPPORT;
		/* Unknown (application/json, octet-stream): the shape decides. */
		media_kind(s, e - s, &canonical, &m->kind);
	}
	if (!canonical) {
		if (json_object_is_type(field(root, "manifests"), json_type_array)) {
			canonical = MT_OCI_INDEX;
			m->kind = MANIFEST_INDEX;
		} else if (field(root, "layers") || field(root, "config")) {
			canonical = MT_OCI_MANIFEST;
			m->kind = MANIFEST_IMAGE;
		} else {
			return -EBADMSG;
		}
	}
	m->media_type = strdup(canonical);
	return m->media_type ? 0 : -ENOMEM;
}

/* Schema 1 and anything newer than 2 are well-formed but not ours to read. */
static int check_schema_version(struct json_object *root)
{
	struct json_object *v = field(root, "schemaVersion");

	if (!v || !json_object_is_type(v, json_type_int))
		return -EBADMSG;
	return json_object_get_int64(v) == 2 ? 0 : -EPROTONOSUPPORT;
}

static int parse_subject(struct json_object *root, struct manifest *m)
{
	struct json_object *obj = field(root, "subject");
	int err;

	if (!obj)
		return 0;
	m->subject = calloc(1, sizeof(*m->subject));
	if (!m->subject)
		return -ENOMEM;
	err = parse_descriptor(obj, false, m->subject);
	if (err) {
		free(m->subject);
		m->subject = NULL;
	}
	return err;
}

int manifest_parse(const char *body, size_t len, const char *content_type, struct manifest **out)
{
	struct json_object *root;
	struct manifest *m;
	int err;

	*out = NULL;
	if (len > MANIFEST_MAX_SIZE)
		return -EFBIG;
	err = parse_json_object(body, len, &root);
	if (err)
		return err;
	m = calloc(1, sizeof(*m));
	if (!m) {
		err = -ENOMEM;
		goto out_put;
	}
	err = check_schema_version(root);
	if (err)
		goto out_free;
	err = detect_kind(root, content_type, m);
	if (err)
		goto out_free;
	if (m->kind == MANIFEST_IMAGE) {
		err = parse_descriptor(field(root, "config"), false, &m->config);
		if (err)
			goto out_free;
		m->has_config = true;
		err = parse_descriptor_array(
			field(root, "layers"), false, &m->layers, &m->n_layers);
	} else {
		err = parse_descriptor_array(
			field(root, "manifests"), true, &m->manifests, &m->n_manifests);
	}
	if (err)
		goto out_free;
	err = get_optional_string(root, "artifactType", &m->artifact_type);
	if (err)
		goto out_free;
	err = parse_subject(root, m);
	if (err)
		goto out_free;
	err = parse_annotations(root, &m->annotations, &m->n_annotations);
	if (err)
		goto out_free;
	json_object_put(root);
	*out = m;
	return 0;

out_free:
	manifest_free(m);
out_put:
	json_object_put(root);
	return err;
}

void manifest_free(struct manifest *m)
{
	if (!m)
		return;
	free(m->media_type);
	free(m->artifact_type);
	descriptor_release(&m->config);
	descriptors_free(m->layers, m->n_layers);
	descriptors_free(m->manifests, m->n_manifests);
	if (m->subject)
		descriptor_release(m->subject);
	free(m->subject);
	annotations_free(m->annotations, m->n_annotations);
	free(m);
}

const char *annotation_get(const struct annotation *a, size_t n, const char *key)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(a[i].key, key))
			return a[i].value;
	return NULL;
}

const char *manifest_artifact_type(const struct manifest *m)
{
	if (m->artifact_type)
		return m->artifact_type;
	return m->has_config ? m->config.media_type : NULL;
}

int manifest_title_check(const char *title)
{
	const unsigned char *p, *start;
	size_t n;

	if (!title || !*title)
		return -EINVAL;
	/* A leading '/' makes an empty first component, refused below. */
	for (start = p = (const unsigned char *)title;; p++) {
		if (*p == '/' || !*p) {
			n = p - start;
			if (!n || n > TITLE_COMPONENT_MAX)
				return -EINVAL;
			if (start[0] == '.' && (n == 1 || (n == 2 && start[1] == '.')))
				return -EINVAL;
			if (start == (const unsigned char *)title && n == 4 &&
				!memcmp(start, ".oci", 4))
				return -EINVAL;
			if (!*p)
				return 0;
			start = p + 1;
		} else if (*p < 0x20 || *p == 0x7f || *p == '\\') {
			return -EINVAL;
		}
	}
}

/* Go's name for a uname(2) machine name, and the variant it implies. */
static void arch_from_machine(const char *machine, const char **arch, const char **variant)
{
	size_t i;

	*arch = machine;
	*variant = NULL;
	for (i = 0; i < sizeof(arch_names) / sizeof(arch_names[0]); i++) {
		if (!strcmp(machine, arch_names[i].machine)) {
			*arch = arch_names[i].arch;
			*variant = arch_names[i].variant;
			return;
		}
	}
}

/* Fill *out from copies of the three names; variant may be NULL. */
static int platform_set(struct platform *out, const char *os, const char *arch, const char *variant)
{
	struct platform p = { NULL, NULL, NULL };

	p.os = strdup(os);
	p.architecture = strdup(arch);
	if (variant)
		p.variant = strdup(variant);
	if (!p.os || !p.architecture || (variant && !p.variant)) {
		platform_release(&p);
		return -ENOMEM;
	}
	*out = p;
	return 0;
}

int platform_parse(const char *s, struct platform *out)
{
	const char *arch, *variant = NULL, *mapped_arch, *mapped_variant;
	char *copy, *slash;
	int err = -EINVAL;

	if (!s)
		return -EINVAL;
	copy = strdup(s);
	if (!copy)
		return -ENOMEM;
	slash = strchr(copy, '/');
	if (!slash)
		goto out_free;
	*slash = '\0';
	arch = slash + 1;
	slash = strchr(slash + 1, '/');
	if (slash) {
		*slash = '\0';
		variant = slash + 1;
		if (!*variant || strchr(variant, '/'))
			goto out_free;
	}
	if (!*copy || !*arch)
		goto out_free;
	/* "linux/x86_64" is what `uname -m` users type; the variant they give wins. */
	arch_from_machine(arch, &mapped_arch, &mapped_variant);
	err = platform_set(out, copy, mapped_arch, variant ? variant : mapped_variant);

out_free:
	free(copy);
	return err;
}

int platform_host(struct platform *out)
{
	const char *arch, *variant;
	struct utsname u;

	if (uname(&u) < 0)
		return -errno;
	arch_from_machine(u.machine, &arch, &variant);
	/* ocifs runs on Linux (FUSE): the os is always Go's "linux". */
	return platform_set(out, "linux", arch, variant);
}

char *platform_format(const struct platform *p)
{
	size_t n;
	char *s;

	if (!p || !p->os || !p->architecture)
		return NULL;
	n = strlen(p->os) + 1 + strlen(p->architecture) + 1;
	if (p->variant)
		n += 1 + strlen(p->variant);
	s = malloc(n);
	if (!s)
		return NULL;
	if (p->variant)
		snprintf(s, n, "%s/%s/%s", p->os, p->architecture, p->variant);
	else
		snprintf(s, n, "%s/%s", p->os, p->architecture);
	return s;
}

/*
 * The variant as docker compares it (containerd's platforms.Normalize): arm64
 * v8 is arm64 itself, and arm without a variant is v7.
 */
static const char *variant_norm(const char *arch, const char *variant)
{
	if (!strcmp(arch, "arm64") && variant && !strcmp(variant, "v8"))
		return NULL;
	if (!strcmp(arch, "arm") && !variant)
		return "v7";
	return variant;
}

static bool variant_eq(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

const struct descriptor *manifest_select_platform(
	const struct manifest *index, const struct platform *want)
{
	const struct descriptor *fallback = NULL;
	const struct platform *p;
	const char *want_variant;
	size_t i;

	if (!index || !want || !want->os || !want->architecture)
		return NULL;
	want_variant = variant_norm(want->architecture, want->variant);
	for (i = 0; i < index->n_manifests; i++) {
		p = index->manifests[i].platform;
		if (!p || strcmp(p->os, want->os) || strcmp(p->architecture, want->architecture))
			continue;
		if (variant_eq(variant_norm(p->architecture, p->variant), want_variant))
			return &index->manifests[i];
		/* Asked for no variant in particular: any is better than nothing. */
		if (!want->variant && !fallback)
			fallback = &index->manifests[i];
	}
	return fallback;
}

int manifest_referrers_add(
	struct manifest *acc, struct manifest *page, const char *filter, bool filtered)
{
	struct descriptor *v;
	size_t i, n = 0;

	if (page->kind != MANIFEST_INDEX)
		return -EBADMSG;
	v = realloc(acc->manifests, (acc->n_manifests + page->n_manifests + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	acc->manifests = v;
	for (i = 0; i < page->n_manifests; i++) {
		struct descriptor *d = &page->manifests[i];

		/* A registry that did not apply the filter says so by not saying it did. */
		if (filter && !filtered && (!d->artifact_type || strcmp(d->artifact_type, filter)))
			continue;
		v[acc->n_manifests++] = *d;
		memset(d, 0, sizeof(*d));
		n++;
	}
	/* what was not taken stays in page, released with it */
	for (i = 0; i < page->n_manifests; i++)
		if (page->manifests[i].digest)
			descriptor_release(&page->manifests[i]);
	page->n_manifests = 0;
	return (int)n;
}

bool manifest_time_parse(const char *s, time_t *out)
{
	struct tm tm;
	const char *p;
	long off = 0;

	if (!s)
		return false;
	memset(&tm, 0, sizeof(tm));
	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return false;
	if (*p == '.')
		while (*++p >= '0' && *p <= '9')
			;
	if (*p == '+' || *p == '-') {
		int hh, mm;

		if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
			return false;
		off = (hh * 3600L + mm * 60L) * (*p == '-' ? -1 : 1);
	} else if (*p != 'Z' && *p != 'z') {
		return false;
	}
	*out = timegm(&tm) - off;
	return true;
}

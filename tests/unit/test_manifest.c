/*
 * manifest.c: parsing of real-world manifests and indexes from fixture files,
 * rejection of malformed and hostile ones, title checks and platform choice.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "digest.h"
#include "manifest.h"
#include "check.h"

#define FIXTURES "tests/unit/fixtures/manifests"

#define EMPTY_DIGEST "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
#define HEX64 "0b22443bbe0860e4a1f6b41d9d6dfae36f3122203c28f9ec41b299cda77e9b11"
#define EMPTY_CONFIG \
	"{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"" EMPTY_DIGEST \
	"\",\"size\":2}"
/* A descriptor with the given digest, size and extra members, all JSON text. */
#define DESC(digest, size, extra) \
	"{\"mediaType\":\"application/octet-stream\",\"digest\":" digest ",\"size\":" size extra "}"
#define GOOD_DESC DESC("\"sha256:" HEX64 "\"", "12", "")
/* An image manifest around the given layers and extra top-level members. */
#define IMAGE(layers, extra) \
	"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST "\",\"config\":" EMPTY_CONFIG \
	",\"layers\":[" layers "]" extra "}"
#define PLAT_ENTRY(platform) DESC("\"sha256:" HEX64 "\"", "12", ",\"platform\":" platform)
/* Index entries with a platform of os and arch, and a variant. */
#define PLAT2(os, arch) PLAT_ENTRY("{\"os\":\"" os "\",\"architecture\":\"" arch "\"}")
#define PLAT3(os, arch, v) \
	PLAT_ENTRY("{\"os\":\"" os "\",\"architecture\":\"" arch "\",\"variant\":\"" v "\"}")
/* A manifest of media type mt with the members in rest. */
#define TOP2(mt, rest) "{\"schemaVersion\":2,\"mediaType\":\"" mt "\"" rest "}"
#define MT_V1 "application/vnd.docker.distribution.manifest.v1+json"
#define MT_V1_SIGNED "application/vnd.docker.distribution.manifest.v1+prettyjws"
#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define INDEX(entries) \
	"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX "\",\"manifests\":[" entries "]}"

static bool streq(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

static const char *str(const char *s)
{
	return s ? s : "(null)";
}

/*
 * Read a fixture into a buffer of exactly its size, with no NUL after it, so
 * that the sanitizers catch a parser that reads past len.
 */
static int load_fixture(const char *name, char **buf, size_t *len)
{
	const char *srcdir = getenv("srcdir");
	char path[4096];
	long size;
	FILE *f;
	int err = 0;

	if (srcdir)
		snprintf(path, sizeof(path), "%s/%s/%s", srcdir, FIXTURES, name);
	else
		snprintf(path, sizeof(path), "%s/%s", FIXTURES, name);
	f = fopen(path, "rb");
	if (!f) {
		err = -errno;
		goto out;
	}
	if (fseek(f, 0, SEEK_END) < 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0) {
		err = -errno;
		goto out_close;
	}
	*buf = malloc(size ? size : 1);
	if (!*buf) {
		err = -ENOMEM;
		goto out_close;
	}
	if (fread(*buf, 1, size, f) != (size_t)size) {
		free(*buf);
		err = -EIO;
		goto out_close;
	}
	*len = size;

out_close:
	fclose(f);
out:
	/* Only a failure is worth a line: a readable fixture is not a result. */
	if (err)
		CHECK(false, "read fixture %s: %s", path, strerror(-err));
	return err;
}

/* Parse a fixture; returns manifest_parse()'s result, or the read error. */
static int parse_fixture(const char *name, const char *content_type, struct manifest **m)
{
	size_t len;
	char *buf;
	int err;

	*m = NULL;
	err = load_fixture(name, &buf, &len);
	if (err)
		return err;
	err = manifest_parse(buf, len, content_type, m);
	free(buf);
	return err;
}

/* Parse a C string without its NUL, copied so that reading past len is caught. */
static int parse_string(const char *s, const char *content_type, struct manifest **m)
{
	size_t len = strlen(s);
	char *buf = malloc(len ? len : 1);
	int err;

	*m = NULL;
	if (!buf)
		return -ENOMEM;
	memcpy(buf, s, len);
	err = manifest_parse(buf, len, content_type, m);
	free(buf);
	return err;
}

static void check_desc(const struct descriptor *d, const char *what, const char *media_type,
	const char *digest, int64_t size)
{
	CHECK(streq(d->media_type, media_type), "%s mediaType %s", what, str(d->media_type));
	CHECK(streq(d->digest, digest), "%s digest %s", what, str(d->digest));
	CHECK(d->size == size, "%s size %lld", what, (long long)d->size);
}

static void check_platform(const struct descriptor *d, const char *what, const char *os,
	const char *arch, const char *variant)
{
	const struct platform *p = d->platform;

	CHECK(p && streq(p->os, os) && streq(p->architecture, arch) && streq(p->variant, variant),
		"%s platform %s/%s/%s", what, p ? str(p->os) : "-", p ? str(p->architecture) : "-",
		p ? str(p->variant) : "-");
}

static void test_oci_image(void)
{
	struct manifest *m;
	int err;

	err = parse_fixture("oci-image.json", MT_OCI_MANIFEST, &m);
	CHECK(!err, "oci-image.json parses (%d)", err);
	if (err)
		return;
	CHECK(m->kind == MANIFEST_IMAGE, "oci-image: kind image");
	CHECK(streq(m->media_type, MT_OCI_MANIFEST), "oci-image: mediaType %s", m->media_type);
	CHECK(m->has_config, "oci-image: has config");
	check_desc(&m->config, "oci-image config", "application/vnd.oci.image.config.v1+json",
		"sha256:6faa44607f28a45270a92e5286b5d92df9677504de042c2293c3b4c850bf9c8d", 1469);
	CHECK(m->n_layers == 3, "oci-image: 3 layers (%zu)", m->n_layers);
	CHECK(m->n_manifests == 0 && !m->manifests, "oci-image: no index entries");
	CHECK(!m->subject, "oci-image: no subject");
	CHECK(!m->artifact_type, "oci-image: no artifactType");
	CHECK(streq(manifest_artifact_type(m), "application/vnd.oci.image.config.v1+json"),
		"oci-image: artifact type falls back to the config's");
	if (m->n_layers == 3) {
		/* Over 4 GiB: sizes must not go through an int or a double. */
		check_desc(&m->layers[0], "oci-image layer 0",
			"application/vnd.oci.image.layer.v1.tar",
			"sha256:0aff305eecb800cfa8e2487538c2e81eea8c6658a06d849f0f9b1f5e1664e1d5",
			4938985248LL);
		check_desc(&m->layers[2], "oci-image layer 2", "application/json",
			"sha256:23cc0d408687919d8b4b721b13c4e9f322e9f5095ab9f0b4bdc7fb68a1e45578",
			9085657);
		CHECK(streq(annotation_get(m->layers[0].annotations, m->layers[0].n_annotations,
				    ANN_TITLE),
			      "model.safetensors"),
			"oci-image: layer 0 title");
		CHECK(streq(annotation_get(m->layers[1].annotations, m->layers[1].n_annotations,
				    ANN_TITLE),
			      "config.json"),
			"oci-image: layer 1 title");
		CHECK(streq(annotation_get(m->layers[2].annotations, m->layers[2].n_annotations,
				    ANN_TITLE),
			      "tokenizer/tokenizer.json"),
			"oci-image: layer 2 title");
		CHECK(!m->layers[0].platform, "oci-image: layers have no platform");
	}
	CHECK(m->n_annotations == 3, "oci-image: 3 annotations (%zu)", m->n_annotations);
	CHECK(streq(annotation_get(m->annotations, m->n_annotations, ANN_CREATED),
		      "2024-05-01T12:00:00Z"),
		"oci-image: created");
	CHECK(m->n_annotations == 3 && streq(m->annotations[0].key, ANN_CREATED) &&
			streq(m->annotations[2].key, "org.opencontainers.image.revision") &&
			streq(m->annotations[2].value, "3f1c9a2"),
		"oci-image: annotations kept in body order");
	CHECK(!annotation_get(m->annotations, m->n_annotations, ANN_TITLE),
		"oci-image: absent annotation is NULL");
	CHECK(!annotation_get(NULL, 0, ANN_TITLE), "annotation_get on none");
	manifest_free(m);
}

static void test_oras_artifact(void)
{
	struct manifest *m;
	int err;

	err = parse_fixture("oras-artifact.json", NULL, &m);
	CHECK(!err, "oras-artifact.json parses (%d)", err);
	if (err)
		return;
	CHECK(m->kind == MANIFEST_IMAGE, "oras: kind image");
	CHECK(streq(m->artifact_type, "application/vnd.example.sbom.v1+json"),
		"oras: artifactType");
	CHECK(streq(manifest_artifact_type(m), "application/vnd.example.sbom.v1+json"),
		"oras: manifest_artifact_type is artifactType");
	check_desc(&m->config, "oras config", "application/vnd.oci.empty.v1+json", EMPTY_DIGEST, 2);
	CHECK(m->config.n_annotations == 0 && !m->config.annotations, "oras: config annotations");
	CHECK(m->n_layers == 2, "oras: 2 layers (%zu)", m->n_layers);
	if (m->n_layers == 2) {
		check_desc(&m->layers[0], "oras layer 0", "application/spdx+json",
			"sha256:7585c0036948f192c6f97913a009496f66d2c9770aa8d2149a5ff9909a376f64",
			18734);
		CHECK(streq(annotation_get(m->layers[0].annotations, m->layers[0].n_annotations,
				    ANN_TITLE),
			      "sbom.spdx.json"),
			"oras: layer 0 title");
		CHECK(m->layers[1].n_annotations == 3, "oras: layer 1 has 3 annotations");
		CHECK(streq(annotation_get(m->layers[1].annotations, m->layers[1].n_annotations,
				    ANN_UNPACK),
			      "true"),
			"oras: layer 1 unpack");
		CHECK(streq(annotation_get(m->layers[1].annotations, m->layers[1].n_annotations,
				    ANN_TITLE),
			      "docs"),
			"oras: layer 1 title");
	}
	CHECK(streq(annotation_get(m->annotations, m->n_annotations, ANN_CREATED),
		      "2024-06-12T08:30:15Z"),
		"oras: created");
	manifest_free(m);
}

static void test_subject(void)
{
	struct manifest *m;
	int err;

	err = parse_fixture("artifact-subject.json", MT_OCI_MANIFEST, &m);
	CHECK(!err, "artifact-subject.json parses (%d)", err);
	if (err)
		return;
	CHECK(streq(manifest_artifact_type(m), "application/vnd.cncf.notary.signature"),
		"subject: artifactType");
	CHECK(m->subject != NULL, "subject: present");
	if (m->subject) {
		check_desc(m->subject, "subject", MT_OCI_MANIFEST,
			"sha256:5ab1e35b9ce58b284e19319a33cab66c98802ce50cd937c35e4134d496ad60a2",
			1279);
		CHECK(!m->subject->platform && !m->subject->n_annotations,
			"subject: no platform, no annotations");
	}
	CHECK(m->n_layers == 1 && !m->layers[0].n_annotations, "subject: one untitled layer");
	CHECK(streq(annotation_get(m->annotations, m->n_annotations,
			    "io.cncf.notary.x509chain.thumbprint#S256"),
		      "[\"70bdbf5578af483c9280bfdba82276cf8fc278bdc33894b68c3e4f01bf32228f\"]"),
		"subject: annotation with escaped quotes");
	manifest_free(m);
}

static const struct descriptor *select_str(const struct manifest *m, const char *want)
{
	const struct descriptor *d;
	struct platform p;

	if (platform_parse(want, &p))
		return NULL;
	d = manifest_select_platform(m, &p);
	platform_release(&p);
	return d;
}

static void test_oci_index(void)
{
	const struct descriptor *e;
	struct manifest *m;
	int err;

	err = parse_fixture("oci-index.json", MT_OCI_INDEX, &m);
	CHECK(!err, "oci-index.json parses (%d)", err);
	if (err)
		return;
	CHECK(m->kind == MANIFEST_INDEX, "oci-index: kind index");
	CHECK(streq(m->media_type, MT_OCI_INDEX), "oci-index: mediaType");
	CHECK(!m->has_config && m->n_layers == 0, "oci-index: no config, no layers");
	CHECK(!manifest_artifact_type(m), "oci-index: no artifact type");
	CHECK(m->n_manifests == 4, "oci-index: 4 entries (%zu)", m->n_manifests);
	if (m->n_manifests != 4)
		goto out;
	e = m->manifests;
	check_desc(&e[0], "oci-index[0]", MT_OCI_MANIFEST,
		"sha256:58eae242f39107a299d22fcd9448482372099ad52dd7651e8cb2a4803a8ba22f", 1611);
	check_platform(&e[0], "oci-index[0]", "linux", "amd64", NULL);
	check_platform(&e[1], "oci-index[1]", "linux", "arm64", NULL);
	check_platform(&e[2], "oci-index[2]", "linux", "arm", "v7");
	check_platform(&e[3], "oci-index[3]", "unknown", "unknown", NULL);
	CHECK(streq(annotation_get(
			    e[3].annotations, e[3].n_annotations, "vnd.docker.reference.type"),
		      "attestation-manifest"),
		"oci-index: attestation annotation");
	CHECK(select_str(m, "linux/amd64") == &e[0], "select linux/amd64");
	CHECK(select_str(m, "linux/arm64") == &e[1], "select linux/arm64");
	CHECK(select_str(m, "linux/arm64/v8") == &e[1], "select linux/arm64/v8 = arm64 entry");
	CHECK(select_str(m, "linux/arm/v7") == &e[2], "select linux/arm/v7");
	CHECK(select_str(m, "linux/arm") == &e[2], "select linux/arm picks v7");
	CHECK(select_str(m, "linux/arm/v6") == NULL, "select linux/arm/v6: none");
	CHECK(select_str(m, "linux/s390x") == NULL, "select linux/s390x: none");
	CHECK(select_str(m, "windows/amd64") == NULL, "select windows/amd64: none");
	CHECK(select_str(m, "linux/x86_64") == &e[0], "select linux/x86_64 (uname spelling)");
	CHECK(manifest_select_platform(m, NULL) == NULL, "select with no platform");
out:
	manifest_free(m);
}

static void test_docker(void)
{
	const struct descriptor *e;
	struct manifest *m;
	int err;

	err = parse_fixture("docker-v2.json", MT_DOCKER_MANIFEST, &m);
	CHECK(!err, "docker-v2.json parses (%d)", err);
	if (!err) {
		CHECK(m->kind == MANIFEST_IMAGE, "docker-v2: kind image");
		CHECK(streq(m->media_type, MT_DOCKER_MANIFEST), "docker-v2: mediaType");
		check_desc(&m->config, "docker-v2 config",
			"application/vnd.docker.container.image.v1+json",
			"sha256:d7637a22a7ef8418a435fe2e0e3328c4ae4399d376105e7940ffcf24829456ba",
			7023);
		CHECK(m->n_layers == 3, "docker-v2: 3 layers");
		if (m->n_layers == 3)
			check_desc(&m->layers[2], "docker-v2 foreign layer",
				"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
				"sha256:"
				"19b2f19baa5fdcb78c404e65725d5fd130fbd4d871af5feffa168795338dad3b",
				73109);
		CHECK(streq(manifest_artifact_type(m),
			      "application/vnd.docker.container.image.v1+json"),
			"docker-v2: artifact type is the config type");
		CHECK(m->n_annotations == 0 && !m->annotations, "docker-v2: no annotations");
		manifest_free(m);
	}

	err = parse_fixture("docker-list.json", MT_DOCKER_LIST, &m);
	CHECK(!err, "docker-list.json parses (%d)", err);
	if (err)
		return;
	CHECK(m->kind == MANIFEST_INDEX, "docker-list: kind index");
	CHECK(streq(m->media_type, MT_DOCKER_LIST), "docker-list: mediaType");
	CHECK(m->n_manifests == 6, "docker-list: 6 entries (%zu)", m->n_manifests);
	if (m->n_manifests == 6) {
		e = m->manifests;
		check_desc(&e[3], "docker-list[3]", MT_DOCKER_MANIFEST,
			"sha256:d9d14dec8d8d21482fb12d754d618ec429936959ced4a60dbe96fdaff68a30cd",
			528);
		check_platform(&e[1], "docker-list[1]", "linux", "arm", "v5");
		check_platform(&e[3], "docker-list[3]", "linux", "arm64", "v8");
		check_platform(&e[5], "docker-list[5]", "windows", "amd64", NULL);
		CHECK(select_str(m, "linux/amd64") == &e[0], "list: select linux/amd64");
		CHECK(select_str(m, "linux/arm64") == &e[3], "list: select linux/arm64 = v8 entry");
		CHECK(select_str(m, "linux/arm64/v8") == &e[3], "list: select linux/arm64/v8");
		CHECK(select_str(m, "linux/arm") == &e[2],
			"list: select linux/arm prefers v7 over v5");
		CHECK(select_str(m, "linux/arm/v7") == &e[2], "list: select linux/arm/v7");
		CHECK(select_str(m, "linux/arm/v5") == &e[1], "list: select linux/arm/v5");
		CHECK(select_str(m, "linux/arm/v6") == NULL, "list: select linux/arm/v6: none");
		CHECK(select_str(m, "linux/s390x") == &e[4], "list: select linux/s390x");
		CHECK(select_str(m, "windows/amd64") == &e[5], "list: select windows/amd64");
		CHECK(select_str(m, "linux/ppc64le") == NULL, "list: select linux/ppc64le: none");
	}
	manifest_free(m);
}

static void test_content_type(void)
{
	struct manifest *m;
	int err;

	err = parse_fixture("index-no-mediatype.json",
		"application/vnd.oci.image.index.v1+json; charset=utf-8", &m);
	CHECK(!err, "index-no-mediatype.json with a Content-Type parses (%d)", err);
	if (!err) {
		CHECK(m->kind == MANIFEST_INDEX, "content type: kind index");
		CHECK(streq(m->media_type, MT_OCI_INDEX),
			"content type: mediaType without parameters");
		CHECK(m->n_manifests == 1, "content type: one entry");
		if (m->n_manifests == 1)
			check_platform(
				&m->manifests[0], "content type entry", "linux", "riscv64", NULL);
		manifest_free(m);
	}

	err = parse_fixture("index-no-mediatype.json", NULL, &m);
	CHECK(!err && m->kind == MANIFEST_INDEX && streq(m->media_type, MT_OCI_INDEX),
		"no mediaType, no Content-Type: index by shape");
	manifest_free(m);

	err = parse_fixture("index-no-mediatype.json", "application/json", &m);
	CHECK(!err && m->kind == MANIFEST_INDEX, "generic Content-Type: index by shape");
	manifest_free(m);

	err = parse_fixture("index-no-mediatype.json",
		" Application/VND.docker.distribution.manifest.list.v2+JSON ;q=1", &m);
	CHECK(!err && m->kind == MANIFEST_INDEX && streq(m->media_type, MT_DOCKER_LIST),
		"Content-Type matched without case, canonical type kept");
	manifest_free(m);

	err = parse_fixture("index-no-mediatype.json",
		"application/vnd.docker.distribution.manifest.v1+prettyjws", &m);
	CHECK(err == -EPROTONOSUPPORT && !m, "schema 1 Content-Type refused (%d)", err);

	/* The body's mediaType wins over the Content-Type. */
	err = parse_fixture("oci-index.json", MT_OCI_MANIFEST, &m);
	CHECK(!err && m->kind == MANIFEST_INDEX, "body mediaType wins over Content-Type");
	manifest_free(m);
}

static void test_hostile_titles(void)
{
	/* In the fixture's layer order. */
	static const struct {
		const char *title;
		bool safe;
	} want[] = {
		{ "../../etc/passwd", false },
		{ "/etc/shadow", false },
		{ ".oci/manifest.json", false },
		{ "a//b", false },
		{ "ok/nested/file.txt", true },
		{ "bell\aring", false },
		{ "back\\slash", false },
		{ ".hidden", true },
		{ "", false },
		{ "trailing/", false },
		{ "x/..", false },
		{ ".oci", false },
		{ "del\x7f"
		  "ete",
			false },
		{ "caf\xc3\xa9.txt", true },
	};
	const size_t n = sizeof(want) / sizeof(want[0]);
	struct manifest *m;
	const char *t;
	size_t i;
	int err;

	err = parse_fixture("hostile-titles.json", NULL, &m);
	CHECK(!err, "hostile-titles.json parses: titles are checked where used (%d)", err);
	if (err)
		return;
	CHECK(m->n_layers == n, "hostile: %zu layers (%zu)", n, m->n_layers);
	for (i = 0; i < n && i < m->n_layers; i++) {
		t = annotation_get(m->layers[i].annotations, m->layers[i].n_annotations, ANN_TITLE);
		CHECK(streq(t, want[i].title), "hostile layer %zu title decoded", i);
		CHECK((manifest_title_check(t) == 0) == want[i].safe, "hostile layer %zu title %s",
			i, want[i].safe ? "safe" : "refused");
	}
	manifest_free(m);
}

static void test_title_table(void)
{
	static const struct {
		const char *title;
		int err;
	} cases[] = {
		{ "file.txt", 0 },
		{ "dir/sub/file.txt", 0 },
		{ ".hidden", 0 },
		{ "dir/.oci", 0 },
		{ ".ocifs", 0 },
		{ ".oci.bak/x", 0 },
		{ "...", 0 },
		{ "..a", 0 },
		{ "a..", 0 },
		{ "with space", 0 },
		{ "\xe2\x9c\x93", 0 },
		{ "\xff\xfe", 0 },
		{ "", -EINVAL },
		{ "/", -EINVAL },
		{ "/abs", -EINVAL },
		{ "a//b", -EINVAL },
		{ "a/./b", -EINVAL },
		{ ".", -EINVAL },
		{ "..", -EINVAL },
		{ "../x", -EINVAL },
		{ "x/..", -EINVAL },
		{ "x/../y", -EINVAL },
		{ "x/", -EINVAL },
		{ "./x", -EINVAL },
		{ ".oci", -EINVAL },
		{ ".oci/", -EINVAL },
		{ ".oci/digest", -EINVAL },
		{ "a\\b", -EINVAL },
		{ "..\\x", -EINVAL },
		{ "tab\there", -EINVAL },
		{ "new\nline", -EINVAL },
		{ "esc\x1b[0m", -EINVAL },
		{ "\x7f", -EINVAL },
		{ "\x1f", -EINVAL },
	};
	char long_name[300 + 3];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CHECK(manifest_title_check(cases[i].title) == cases[i].err, "title_check case %zu",
			i);
	CHECK(manifest_title_check(NULL) == -EINVAL, "title_check NULL");

	memset(long_name, 'a', 255);
	long_name[255] = '\0';
	CHECK(manifest_title_check(long_name) == 0, "title_check 255-byte component");
	long_name[255] = 'a';
	long_name[256] = '\0';
	CHECK(manifest_title_check(long_name) == -EINVAL, "title_check 256-byte component");
	/* The limit is per component, not on the whole title. */
	memset(long_name, 'a', 300);
	long_name[150] = '/';
	long_name[300] = '\0';
	CHECK(manifest_title_check(long_name) == 0, "title_check 300 bytes in two components");
}

static void test_malformed_fixtures(void)
{
	static const struct {
		const char *name;
		int err;
	} cases[] = {
		{ "bad-not-json.txt", -EBADMSG },
		{ "bad-truncated.json", -EBADMSG },
		{ "bad-array.json", -EBADMSG },
		{ "bad-trailing.json", -EBADMSG },
		{ "bad-size-negative.json", -EBADMSG },
		{ "bad-size-string.json", -EBADMSG },
		{ "bad-size-float.json", -EBADMSG },
		{ "bad-digest.json", -EBADMSG },
		{ "bad-missing-config.json", -EBADMSG },
		{ "bad-missing-layers.json", -EBADMSG },
		{ "bad-annotation-value.json", -EBADMSG },
		{ "schema1.json", -EPROTONOSUPPORT },
		{ "bad-unknown-mediatype.json", -EPROTONOSUPPORT },
	};
	struct manifest *m;
	size_t i;
	int err;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err = parse_fixture(cases[i].name, MT_OCI_MANIFEST, &m);
		CHECK(err == cases[i].err && !m, "%s refused with %d (%d)", cases[i].name,
			cases[i].err, err);
		manifest_free(m);
	}
}

static void test_inline_bodies(void)
{
	static const struct {
		const char *what;
		const char *body;
		const char *content_type;
		int err;
	} cases[] = {
		{ "minimal image", IMAGE(GOOD_DESC, ""), NULL, 0 },
		{ "empty layers (artifact)", IMAGE("", ""), NULL, 0 },
		{ "leading and trailing whitespace", " \r\n\t" IMAGE("", "") " \n\t\r\n", NULL, 0 },
		{ "sha512 digest", IMAGE(DESC("\"sha512:" HEX64 HEX64 "\"", "1", ""), ""), NULL,
			0 },
		{ "size 0", IMAGE(DESC("\"sha256:" HEX64 "\"", "0", ""), ""), NULL, 0 },
		{ "size INT64_MAX",
			IMAGE(DESC("\"sha256:" HEX64 "\"", "9223372036854775807", ""), ""), NULL,
			0 },
		{ "null optional fields",
			IMAGE(DESC("\"sha256:" HEX64 "\"", "1",
				      ",\"annotations\":null,"
				      "\"artifactType\":null"),
				",\"subject\":null,\"artifactType\":null,\"annotations\":null"),
			NULL, 0 },
		{ "unknown fields ignored",
			IMAGE(DESC("\"sha256:" HEX64 "\"", "1",
				      ",\"urls\":[\"x\"],\"x\":{\"y\":[1]}"),
				",\"x-vendor\":{\"a\":[true,null]}"),
			NULL, 0 },
		{ "platform on a layer ignored",
			IMAGE(DESC("\"sha256:" HEX64 "\"", "1", ",\"platform\":7"), ""), NULL, 0 },
		{ "empty index", INDEX(""), NULL, 0 },
		{ "shape: config only", "{\"schemaVersion\":2,\"config\":" EMPTY_CONFIG "}", NULL,
			-EBADMSG },
		{ "shape: layers, no config", "{\"schemaVersion\":2,\"layers\":[]}", NULL,
			-EBADMSG },
		{ "shape: nothing to go by", "{\"schemaVersion\":2}", NULL, -EBADMSG },
		{ "empty object", "{}", NULL, -EBADMSG },
		{ "empty body", "", MT_OCI_MANIFEST, -EBADMSG },
		{ "whitespace only", " \n", MT_OCI_MANIFEST, -EBADMSG },
		{ "top-level string", "\"manifest\"", NULL, -EBADMSG },
		{ "top-level number", "2", NULL, -EBADMSG },
		{ "top-level null", "null", NULL, -EBADMSG },
		{ "two objects", IMAGE("", "") IMAGE("", ""), NULL, -EBADMSG },
		{ "trailing comma", IMAGE(GOOD_DESC ",", ""), NULL, -EBADMSG },
		{ "invalid UTF-8",
			IMAGE(DESC("\"sha256:" HEX64 "\"", "1",
				      ",\"annotations\":{\"" ANN_TITLE "\":\"\xff\xfe\"}"),
				""),
			NULL, -EBADMSG },
		{ "deep nesting",
			IMAGE("",
				",\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
				"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"),
			NULL, -EBADMSG },
		{ "schemaVersion missing", "{\"mediaType\":\"" MT_OCI_INDEX "\",\"manifests\":[]}",
			NULL, -EBADMSG },
		{ "schemaVersion a string",
			"{\"schemaVersion\":\"2\",\"mediaType\":\"" MT_OCI_INDEX
			"\",\"manifests\":[]}",
			NULL, -EBADMSG },
		{ "schemaVersion 3",
			"{\"schemaVersion\":3,\"mediaType\":\"" MT_OCI_INDEX "\",\"manifests\":[]}",
			NULL, -EPROTONOSUPPORT },
		{ "mediaType docker v1 prettyjws", TOP2(MT_V1_SIGNED, ",\"layers\":[]"), NULL,
			-EPROTONOSUPPORT },
		{ "mediaType docker v1 json", TOP2(MT_V1, ",\"layers\":[]"), NULL,
			-EPROTONOSUPPORT },
		{ "mediaType a config type", TOP2(MT_OCI_CONFIG, ",\"layers\":[]"), NULL,
			-EPROTONOSUPPORT },
		{ "mediaType not a string", "{\"schemaVersion\":2,\"mediaType\":1,\"layers\":[]}",
			NULL, -EBADMSG },
		{ "mediaType index, body an image",
			TOP2(MT_OCI_INDEX, ",\"config\":" EMPTY_CONFIG ",\"layers\":[]"), NULL,
			-EBADMSG },
		{ "config not an object", TOP2(MT_OCI_MANIFEST, ",\"config\":\"x\",\"layers\":[]"),
			NULL, -EBADMSG },
		{ "config null", TOP2(MT_OCI_MANIFEST, ",\"config\":null,\"layers\":[]"), NULL,
			-EBADMSG },
		{ "layers not an array",
			TOP2(MT_OCI_MANIFEST, ",\"config\":" EMPTY_CONFIG ",\"layers\":{}"), NULL,
			-EBADMSG },
		{ "layer not an object", IMAGE("\"sha256:" HEX64 "\"", ""), NULL, -EBADMSG },
		{ "manifests missing", "{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX "\"}",
			NULL, -EBADMSG },
		{ "manifests not an array",
			"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX "\",\"manifests\":{}}",
			NULL, -EBADMSG },
		{ "descriptor mediaType missing",
			IMAGE("{\"digest\":\"sha256:" HEX64 "\",\"size\":1}", ""), NULL, -EBADMSG },
		{ "descriptor mediaType empty",
			IMAGE("{\"mediaType\":\"\",\"digest\":\"sha256:" HEX64 "\",\"size\":1}",
				""),
			NULL, -EBADMSG },
		{ "descriptor mediaType a number",
			IMAGE("{\"mediaType\":5,\"digest\":\"sha256:" HEX64 "\",\"size\":1}", ""),
			NULL, -EBADMSG },
		{ "digest missing", IMAGE("{\"mediaType\":\"a/b\",\"size\":1}", ""), NULL,
			-EBADMSG },
		{ "size missing",
			IMAGE("{\"mediaType\":\"a/b\",\"digest\":\"sha256:" HEX64 "\"}", ""), NULL,
			-EBADMSG },
		{ "digest a number", IMAGE(DESC("256", "1", ""), ""), NULL, -EBADMSG },
		{ "digest no algorithm", IMAGE(DESC("\"" HEX64 "\"", "1", ""), ""), NULL,
			-EBADMSG },
		{ "digest short", IMAGE(DESC("\"sha256:0b22443b\"", "1", ""), ""), NULL, -EBADMSG },
		{ "digest one hex long", IMAGE(DESC("\"sha256:" HEX64 "0\"", "1", ""), ""), NULL,
			-EBADMSG },
		{ "digest sha512 with 64 hex", IMAGE(DESC("\"sha512:" HEX64 "\"", "1", ""), ""),
			NULL, -EBADMSG },
		{ "digest sha384", IMAGE(DESC("\"sha384:" HEX64 "\"", "1", ""), ""), NULL,
			-EBADMSG },
		{ "digest SHA256", IMAGE(DESC("\"SHA256:" HEX64 "\"", "1", ""), ""), NULL,
			-EBADMSG },
		{ "digest with path", IMAGE(DESC("\"sha256:../../" HEX64 "\"", "1", ""), ""), NULL,
			-EBADMSG },
		{ "digest with NUL", IMAGE(DESC("\"sha256:" HEX64 "\\u0000x\"", "1", ""), ""), NULL,
			-EBADMSG },
		{ "size 2^63", IMAGE(DESC("\"sha256:" HEX64 "\"", "9223372036854775808", ""), ""),
			NULL, -EBADMSG },
		{ "size beyond uint64",
			IMAGE(DESC("\"sha256:" HEX64 "\"", "184467440737095516160", ""), ""), NULL,
			-EBADMSG },
		{ "size exponent", IMAGE(DESC("\"sha256:" HEX64 "\"", "1e3", ""), ""), NULL,
			-EBADMSG },
		{ "size true", IMAGE(DESC("\"sha256:" HEX64 "\"", "true", ""), ""), NULL,
			-EBADMSG },
		{ "size null", IMAGE(DESC("\"sha256:" HEX64 "\"", "null", ""), ""), NULL,
			-EBADMSG },
		{ "artifactType a number", IMAGE("", ",\"artifactType\":1"), NULL, -EBADMSG },
		{ "annotations an array", IMAGE("", ",\"annotations\":[]"), NULL, -EBADMSG },
		{ "annotation value null", IMAGE("", ",\"annotations\":{\"" ANN_CREATED "\":null}"),
			NULL, -EBADMSG },
		{ "annotation value an object",
			IMAGE("", ",\"annotations\":{\"" ANN_CREATED "\":{}}"), NULL, -EBADMSG },
		{ "title with NUL",
			IMAGE(DESC("\"sha256:" HEX64 "\"", "1",
				      ",\"annotations\":{\"" ANN_TITLE "\":\"a\\u0000/../../x\"}"),
				""),
			NULL, -EBADMSG },
		{ "subject not an object", IMAGE("", ",\"subject\":\"sha256:" HEX64 "\""), NULL,
			-EBADMSG },
		{ "subject bad digest", IMAGE("", ",\"subject\":" DESC("\"sha256:xyz\"", "1", "")),
			NULL, -EBADMSG },
		{ "platform not an object", INDEX(PLAT_ENTRY("\"linux/amd64\"")), NULL, -EBADMSG },
		{ "platform without os", INDEX(PLAT_ENTRY("{\"architecture\":\"amd64\"}")), NULL,
			-EBADMSG },
		{ "platform without architecture", INDEX(PLAT_ENTRY("{\"os\":\"linux\"}")), NULL,
			-EBADMSG },
		{ "platform os a number",
			INDEX(PLAT_ENTRY("{\"os\":1,\"architecture\":\"amd64\"}")), NULL,
			-EBADMSG },
		{ "platform variant a number",
			INDEX(PLAT_ENTRY(
				"{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":7}")),
			NULL, -EBADMSG },
		{ "platform os empty", INDEX(PLAT2("", "amd64")), NULL, -EBADMSG },
		{ "platform os ..", INDEX(PLAT2("..", "amd64")), NULL, -EBADMSG },
		{ "platform architecture with /", INDEX(PLAT2("linux", "arm/v7")), NULL, -EBADMSG },
		{ "platform architecture with a newline", INDEX(PLAT2("linux", "arm\\n")), NULL,
			-EBADMSG },
		{ "platform variant .", INDEX(PLAT3("linux", "arm", ".")), NULL, -EBADMSG },
		{ "platform null", INDEX(PLAT_ENTRY("null")), NULL, 0 },
		{ "platform extra fields",
			INDEX(PLAT_ENTRY(
				"{\"os\":\"windows\",\"architecture\":\"amd64\","
				"\"os.version\":\"10.0.17763.1\",\"os.features\":[\"win32k\"]}")),
			NULL, 0 },
	};
	struct manifest *m;
	size_t i;
	int err;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err = parse_string(cases[i].body, cases[i].content_type, &m);
		CHECK(err == cases[i].err && (!err) == (m != NULL), "%s: %d (%d)", cases[i].what,
			cases[i].err, err);
		manifest_free(m);
	}
}

static void test_inline_values(void)
{
	static const char then_garbage[] = IMAGE("", "") "garbage";
	static const char then_nul[] = IMAGE("", "") "\n";
	struct manifest *m;
	int err;

	err = parse_string(
		IMAGE(DESC("\"sha256:" HEX64 "\"", "9223372036854775807", ""), ""), NULL, &m);
	CHECK(!err && m->n_layers == 1 && m->layers[0].size == INT64_MAX, "size INT64_MAX kept");
	manifest_free(m);

	err = parse_string(INDEX(PLAT_ENTRY("null") "," PLAT_ENTRY(
				   "{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"\"}")),
		NULL, &m);
	CHECK(!err && m->n_manifests == 2, "index with null and empty-variant platforms parses");
	if (!err && m->n_manifests == 2) {
		CHECK(!m->manifests[0].platform, "null platform is absent");
		check_platform(&m->manifests[1], "empty variant", "linux", "arm", NULL);
	}
	manifest_free(m);

	err = parse_string(IMAGE("", ",\"artifactType\":\"\""), NULL, &m);
	CHECK(!err && !m->artifact_type &&
			streq(manifest_artifact_type(m), "application/vnd.oci.empty.v1+json"),
		"empty artifactType is none");
	manifest_free(m);

	err = parse_string(
		IMAGE("", ",\"annotations\":{\"a\":\"1\",\"a\":\"2\",\"b\":\"\"}"), NULL, &m);
	CHECK(!err && streq(annotation_get(m->annotations, m->n_annotations, "a"), "2") &&
			streq(annotation_get(m->annotations, m->n_annotations, "b"), ""),
		"duplicate key: last wins; empty value kept");
	manifest_free(m);

	/* Only len bytes are the body: what follows in memory is not looked at. */
	err = manifest_parse(then_garbage, sizeof(then_garbage) - 1 - strlen("garbage"), NULL, &m);
	CHECK(!err, "body followed by other bytes in memory (%d)", err);
	manifest_free(m);
	err = manifest_parse(then_garbage, sizeof(then_garbage), NULL, &m);
	CHECK(err == -EBADMSG, "trailing garbage and its NUL (%d)", err);
	/* json-c stops at a NUL, but within len it is trailing garbage all the same. */
	err = manifest_parse(then_nul, sizeof(then_nul), NULL, &m);
	CHECK(err == -EBADMSG && !m, "a NUL after the object is trailing garbage (%d)", err);

	manifest_free(NULL);
}

/* A valid manifest padded with one big annotation to exactly len bytes. */
static char *padded_manifest(size_t len)
{
	static const char head[] =
		"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST
		"\",\"config\":" EMPTY_CONFIG ",\"layers\":[],\"annotations\":{\"pad\":\"";
	static const char tail[] = "\"}}";
	size_t pad = len - (sizeof(head) - 1) - (sizeof(tail) - 1);
	char *buf = malloc(len);

	if (!buf)
		return NULL;
	memcpy(buf, head, sizeof(head) - 1);
	memset(buf + sizeof(head) - 1, 'x', pad);
	memcpy(buf + len - (sizeof(tail) - 1), tail, sizeof(tail) - 1);
	return buf;
}

static void test_size_limit(void)
{
	struct manifest *m = NULL;
	const char *pad;
	char *buf;
	int err;

	buf = padded_manifest(MANIFEST_MAX_SIZE + 1);
	CHECK(buf != NULL, "allocate MANIFEST_MAX_SIZE + 1");
	if (buf) {
		err = manifest_parse(buf, MANIFEST_MAX_SIZE + 1, MT_OCI_MANIFEST, &m);
		CHECK(err == -EFBIG && !m, "MANIFEST_MAX_SIZE + 1 bytes: EFBIG (%d)", err);
		free(buf);
	}

	buf = padded_manifest(6 * 1024 * 1024);
	CHECK(buf != NULL, "allocate 6 MiB");
	if (buf) {
		err = manifest_parse(buf, 6 * 1024 * 1024, MT_OCI_MANIFEST, &m);
		CHECK(err == -EFBIG && !m, "6 MiB: EFBIG (%d)", err);
		/* Refused by length before parsing, so even nonsense is EFBIG. */
		memset(buf, '[', 6 * 1024 * 1024);
		err = manifest_parse(buf, 6 * 1024 * 1024, MT_OCI_MANIFEST, &m);
		CHECK(err == -EFBIG, "6 MiB of nonsense: EFBIG (%d)", err);
		free(buf);
	}

	buf = padded_manifest(MANIFEST_MAX_SIZE);
	CHECK(buf != NULL, "allocate MANIFEST_MAX_SIZE");
	if (buf) {
		err = manifest_parse(buf, MANIFEST_MAX_SIZE, MT_OCI_MANIFEST, &m);
		CHECK(!err, "exactly MANIFEST_MAX_SIZE bytes parse (%d)", err);
		if (!err) {
			pad = annotation_get(m->annotations, m->n_annotations, "pad");
			CHECK(pad && strlen(pad) > MANIFEST_MAX_SIZE - 512 && pad[0] == 'x',
				"the big annotation is kept whole");
		}
		manifest_free(m);
		free(buf);
	}
}

static void test_platform_strings(void)
{
	static const struct {
		const char *in;
		int err;
		const char *os, *arch, *variant, *formatted;
	} cases[] = {
		{ "linux/amd64", 0, "linux", "amd64", NULL, "linux/amd64" },
		{ "linux/arm/v7", 0, "linux", "arm", "v7", "linux/arm/v7" },
		{ "linux/arm64/v8", 0, "linux", "arm64", "v8", "linux/arm64/v8" },
		{ "windows/amd64", 0, "windows", "amd64", NULL, "windows/amd64" },
		{ "linux/x86_64", 0, "linux", "amd64", NULL, "linux/amd64" },
		{ "linux/aarch64", 0, "linux", "arm64", NULL, "linux/arm64" },
		{ "linux/armv7l", 0, "linux", "arm", "v7", "linux/arm/v7" },
		{ "linux/armv6l/v5", 0, "linux", "arm", "v5", "linux/arm/v5" },
		{ "linux/i686", 0, "linux", "386", NULL, "linux/386" },
		{ "linux", -EINVAL, NULL, NULL, NULL, NULL },
		{ "", -EINVAL, NULL, NULL, NULL, NULL },
		{ "/amd64", -EINVAL, NULL, NULL, NULL, NULL },
		{ "linux/", -EINVAL, NULL, NULL, NULL, NULL },
		{ "linux/arm/", -EINVAL, NULL, NULL, NULL, NULL },
		{ "linux//v7", -EINVAL, NULL, NULL, NULL, NULL },
		{ "linux/arm/v7/x", -EINVAL, NULL, NULL, NULL, NULL },
	};
	struct platform p;
	struct utsname u;
	size_t i;
	char *s;
	int err;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&p, 0, sizeof(p));
		err = platform_parse(cases[i].in, &p);
		CHECK(err == cases[i].err, "platform_parse \"%s\": %d (%d)", cases[i].in,
			cases[i].err, err);
		if (err || cases[i].err)
			continue;
		CHECK(streq(p.os, cases[i].os) && streq(p.architecture, cases[i].arch) &&
				streq(p.variant, cases[i].variant),
			"platform_parse \"%s\" fields", cases[i].in);
		s = platform_format(&p);
		CHECK(streq(s, cases[i].formatted), "platform_format \"%s\": %s", cases[i].in,
			str(s));
		free(s);
		platform_release(&p);
		CHECK(!p.os && !p.architecture && !p.variant, "platform_release clears");
	}
	CHECK(platform_parse(NULL, &p) == -EINVAL, "platform_parse NULL");
	CHECK(platform_format(NULL) == NULL, "platform_format NULL");
	platform_release(NULL);

	err = platform_host(&p);
	CHECK(!err, "platform_host (%d)", err);
	if (err)
		return;
	s = platform_format(&p);
	printf("# host platform %s\n", str(s));
	free(s);
	CHECK(streq(p.os, "linux"), "platform_host os linux");
	CHECK(uname(&u) == 0, "uname");
	if (!strcmp(u.machine, "x86_64"))
		CHECK(streq(p.architecture, "amd64") && !p.variant, "x86_64 host is amd64");
	else if (!strcmp(u.machine, "aarch64"))
		CHECK(streq(p.architecture, "arm64") && !p.variant, "aarch64 host is arm64");
	else if (!strcmp(u.machine, "armv7l"))
		CHECK(streq(p.architecture, "arm") && streq(p.variant, "v7"),
			"armv7l host is arm/v7");
	else
		CHECK(p.architecture && *p.architecture, "host architecture %s",
			str(p.architecture));
	platform_release(&p);
}

static void test_select_fallbacks(void)
{
	static const struct {
		const char *what;
		const char *body;
		const char *want;
		int pick; /* index of the entry, -1 for none */
	} cases[] = {
		{ "amd64 only as v3, want amd64: fallback", INDEX(PLAT3("linux", "amd64", "v3")),
			"linux/amd64", 0 },
		{ "amd64 only as v3, want amd64/v2: none", INDEX(PLAT3("linux", "amd64", "v3")),
			"linux/amd64/v2", -1 },
		{ "no-variant entry preferred over an earlier variant",
			INDEX(PLAT3("linux", "amd64", "v3") "," PLAT2("linux", "amd64")),
			"linux/amd64", 1 },
		{ "arm only v6, want arm: fallback", INDEX(PLAT3("linux", "arm", "v6")),
			"linux/arm", 0 },
		{ "arm only v6, want arm/v7: none", INDEX(PLAT3("linux", "arm", "v6")),
			"linux/arm/v7", -1 },
		{ "arm without variant is v7",
			INDEX(PLAT3("linux", "arm", "v6") "," PLAT2("linux", "arm")),
			"linux/arm/v7", 1 },
		{ "arm64 only v9, want arm64/v8: none", INDEX(PLAT3("linux", "arm64", "v9")),
			"linux/arm64/v8", -1 },
		{ "arm64 only v9, want arm64: fallback", INDEX(PLAT3("linux", "arm64", "v9")),
			"linux/arm64", 0 },
		{ "first of equal matches wins",
			INDEX(PLAT2("linux", "amd64") "," PLAT2("linux", "amd64")), "linux/amd64",
			0 },
		{ "entry without platform never matches",
			INDEX(GOOD_DESC "," PLAT2("linux", "amd64")), "linux/amd64", 1 },
		{ "os must match", INDEX(PLAT2("linux", "amd64")), "freebsd/amd64", -1 },
	};
	const struct descriptor *d;
	struct manifest *m;
	size_t i;
	int err;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err = parse_string(cases[i].body, NULL, &m);
		CHECK(!err, "%s: parses (%d)", cases[i].what, err);
		if (err)
			continue;
		d = select_str(m, cases[i].want);
		CHECK(cases[i].pick < 0 ? !d : d == &m->manifests[cases[i].pick], "%s",
			cases[i].what);
		manifest_free(m);
	}

	/* An image manifest has no entries to pick from. */
	err = parse_string(IMAGE(GOOD_DESC, ""), NULL, &m);
	CHECK(!err && !select_str(m, "linux/amd64"), "select on an image manifest: none");
	manifest_free(m);
}

/* The digests of an index's entries, joined by spaces ("" when none). */
static void entry_digests(const struct manifest *m, char *out, size_t n)
{
	size_t i, o = 0;

	out[0] = '\0';
	for (i = 0; i < m->n_manifests && o < n; i++)
		o += (size_t)snprintf(out + o, n - o, "%s%.12s", i ? " " : "",
			digest_hex(m->manifests[i].digest));
}

/*
 * Collect referrers from recorded answers of the referrers API: two pages
 * (Link pagination), a filter applied by the registry, and one ignored.
 */
static void merge_pages(const char *const *pages, const char *filter, bool filtered, char *out,
	size_t n, int *taken)
{
	struct manifest *acc = calloc(1, sizeof(*acc)), *page;
	size_t i;

	*taken = 0;
	out[0] = '\0';
	if (!acc)
		return;
	acc->kind = MANIFEST_INDEX;
	for (i = 0; pages[i]; i++) {
		int r = parse_fixture(pages[i], MT_OCI_INDEX, &page);

		CHECK(r == 0, "referrers page %s parses", pages[i]);
		if (r)
			continue;
		r = manifest_referrers_add(acc, page, filter, filtered);
		if (r > 0)
			*taken += r;
		manifest_free(page);
	}
	entry_digests(acc, out, n);
	manifest_free(acc);
}

static void test_referrers(void)
{
	static const char *const two_pages[] = { "referrers-page1.json", "referrers-page2.json",
		NULL };
	static const char *const filtered[] = { "referrers-filtered.json", NULL };
	static const char *const not_index[] = { "oci-image.json", NULL };
	char got[256];
	int taken;

	merge_pages(two_pages, NULL, false, got, sizeof(got), &taken);
	CHECK(strcmp(got, "111111111111 222222222222 333333333333 444444444444") == 0,
		"two pages of referrers, in order (got %s)", got);
	CHECK(taken == 4, "all four taken (got %d)", taken);

	/* a registry that ignores ?artifactType= (no OCI-Filters-Applied): filtered here */
	merge_pages(two_pages, "application/vnd.example.sbom.v1", false, got, sizeof(got), &taken);
	CHECK(strcmp(got, "111111111111 333333333333") == 0,
		"filter not applied by the registry: applied here (got %s)", got);
	CHECK(taken == 2, "two of four taken (got %d)", taken);

	/* one that says it filtered: its answer is taken as it is */
	merge_pages(filtered, "application/vnd.example.sbom.v1", true, got, sizeof(got), &taken);
	CHECK(strcmp(got, "111111111111") == 0, "filter applied by the registry (got %s)", got);

	/* an entry without artifactType never matches a filter */
	merge_pages(two_pages, "", false, got, sizeof(got), &taken);
	CHECK(taken == 0 && got[0] == '\0', "an empty filter matches nothing (got %s)", got);

	{
		struct manifest *acc = calloc(1, sizeof(*acc)), *page;

		if (acc && parse_fixture(not_index[0], MT_OCI_MANIFEST, &page) == 0) {
			CHECK(manifest_referrers_add(acc, page, NULL, false) == -EBADMSG,
				"an image manifest is not a referrers answer");
			manifest_free(page);
		}
		manifest_free(acc);
	}
}

int main(void)
{
	test_referrers();
	test_oci_image();
	test_oras_artifact();
	test_subject();
	test_oci_index();
	test_docker();
	test_content_type();
	test_hostile_titles();
	test_title_table();
	test_malformed_fixtures();
	test_inline_bodies();
	test_inline_values();
	test_size_limit();
	test_platform_strings();
	test_select_fallbacks();
	return check_done();
}

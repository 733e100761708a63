/* Unit tests of src/ref.c: SOURCE parsing, formatting and the name validators. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ref.h"

#define HEX16 "0123456789abcdef"
#define HEX64 HEX16 HEX16 HEX16 HEX16
#define HEX128 HEX64 HEX64
#define SHA256 "sha256:" HEX64
#define SHA512 "sha512:" HEX128

struct valid_case {
	const char *in;
	const char *host, *repo, *tag, *digest;
	const char *formatted; /* ref_format() of the result; NULL when the same as in */
};

static const struct valid_case valid[] = {
	{ "-", NULL, NULL, NULL, NULL, NULL },
	{ "localhost", "localhost", NULL, NULL, NULL, NULL },
	{ "localhost:5000", "localhost:5000", NULL, NULL, NULL, NULL },
	{ "ghcr.io", "ghcr.io", NULL, NULL, NULL, NULL },
	{ "registry.example.com:443", "registry.example.com:443", NULL, NULL, NULL, NULL },
	{ "[::1]", "[::1]", NULL, NULL, NULL, NULL },
	{ "[::1]:5000", "[::1]:5000", NULL, NULL, NULL, NULL },
	{ "[::1]:5000/a/b", "[::1]:5000", "a/b", NULL, NULL, NULL },
	{ "[2001:db8::42]:65535/x:1", "[2001:db8::42]:65535", "x", "1", NULL, NULL },
	{ "127.0.0.1:5000", "127.0.0.1:5000", NULL, NULL, NULL, NULL },
	{ "127.0.0.1:5000/a/b/c", "127.0.0.1:5000", "a/b/c", NULL, NULL, NULL },
	{ "127.0.0.1:5000/a/b/c:v1", "127.0.0.1:5000", "a/b/c", "v1", NULL, NULL },
	{ "ghcr.io/org/app", "ghcr.io", "org/app", NULL, NULL, NULL },
	{ "ghcr.io/org/app:v1.2.3", "ghcr.io", "org/app", "v1.2.3", NULL, NULL },
	{ "ghcr.io/org/app@" SHA256, "ghcr.io", "org/app", NULL, SHA256, NULL },
	{ "ghcr.io/org/app@" SHA512, "ghcr.io", "org/app", NULL, SHA512, NULL },
	{ "ghcr.io/org/app:v1@" SHA256, "ghcr.io", "org/app", "v1", SHA256, NULL },
	{ "localhost:5000/app:latest@" SHA256, "localhost:5000", "app", "latest", SHA256, NULL },
	{ "h.io/a.b/c_d/e__f/g-h/i---j:_T.a-g_", "h.io", "a.b/c_d/e__f/g-h/i---j", "_T.a-g_", NULL,
		NULL },
	{ "h.io/0/9:0", "h.io", "0/9", "0", NULL, NULL },
	/* Docker Hub: the host is replaced and one-component names get library/. */
	{ "docker.io", "registry-1.docker.io", NULL, NULL, NULL, "registry-1.docker.io" },
	{ "docker.io/alpine", "registry-1.docker.io", "library/alpine", NULL, NULL,
		"registry-1.docker.io/library/alpine" },
	{ "docker.io/alpine:3.20", "registry-1.docker.io", "library/alpine", "3.20", NULL,
		"registry-1.docker.io/library/alpine:3.20" },
	{ "docker.io/alpine@" SHA256, "registry-1.docker.io", "library/alpine", NULL, SHA256,
		"registry-1.docker.io/library/alpine@" SHA256 },
	{ "index.docker.io/alpine", "registry-1.docker.io", "library/alpine", NULL, NULL,
		"registry-1.docker.io/library/alpine" },
	{ "registry-1.docker.io/alpine", "registry-1.docker.io", "library/alpine", NULL, NULL,
		"registry-1.docker.io/library/alpine" },
	{ "docker.io/org/app", "registry-1.docker.io", "org/app", NULL, NULL,
		"registry-1.docker.io/org/app" },
	{ "docker.io/library/alpine", "registry-1.docker.io", "library/alpine", NULL, NULL,
		"registry-1.docker.io/library/alpine" },
	{ "Docker.IO/alpine", "registry-1.docker.io", "library/alpine", NULL, NULL,
		"registry-1.docker.io/library/alpine" },
	/* docker.io with a port is another host: no rewriting. */
	{ "docker.io:443/alpine", "docker.io:443", "alpine", NULL, NULL, NULL },
	/* Host names are case-insensitive and are stored lowercased. */
	{ "GHCR.io/org/app:V1", "ghcr.io", "org/app", "V1", NULL, "ghcr.io/org/app:V1" },
	{ "LocalHost:5000", "localhost:5000", NULL, NULL, NULL, "localhost:5000" },
	/* One trailing slash is tolerated. */
	{ "ghcr.io/", "ghcr.io", NULL, NULL, NULL, "ghcr.io" },
	{ "ghcr.io/org/app/", "ghcr.io", "org/app", NULL, NULL, "ghcr.io/org/app" },
	{ "ghcr.io/org/app:v1/", "ghcr.io", "org/app", "v1", NULL, "ghcr.io/org/app:v1" },
	/* The first component is always the host, even without '.' or ':'. */
	{ "myregistry/app", "myregistry", "app", NULL, NULL, NULL },
};

static const char *const invalid[] = {
	"",
	"/",
	"-/",
	"--",
	"/repo",
	"h//r",
	"h/r//x",
	"h//",
	"h/r//",
	"h/./r",
	"h/repo:",
	"h/repo@",
	"h/repo:@" SHA256,
	"h/:tag",
	"h/@" SHA256,
	"h/Repo",
	"h/org/App:v1",
	"h/repo:.tag",
	"h/repo:-tag",
	"h/repo:t:g",
	"h/repo:t/g",
	"h/repo:t@g",
	"h/repo@sha256:" HEX16,
	"h/repo@sha256:" HEX64 "0",
	"h/repo@sha256:0123456789ABCDEF" HEX16 HEX16 HEX16,
	"h/repo@md5:0123456789abcdef0123456789abcdef",
	"h/repo@sha384:" HEX64 HEX16 HEX16,
	"h/repo@" SHA256 "@" SHA256,
	"h/repo@" SHA256 ":tag",
	"h/repo@" SHA256 "/x",
	"h@" SHA256,
	"h/re@po",
	"@h/repo",
	"h/-a",
	"h/a-",
	"h/a..b",
	"h/a___b",
	"h/.a",
	"h/a.",
	"h/_a",
	"h/a_",
	"h/a.-b",
	"h/a b",
	"h/a\tb",
	"h/a\nb",
	"h/repo:t\x01g",
	"h\x7f/repo",
	"h:0",
	"h:0/repo",
	"h:70000",
	"h:65536/repo",
	"h:abc/repo",
	"h:/repo",
	"h:5000:1/repo",
	"h:-1",
	"h:123456",
	"[::1",
	"[::1]5000",
	"[::1]:",
	"[::1]:0",
	"[::g]",
	"[]",
	"::1",
	"::1/repo",
	"[127.0.0.1]",
	"999.1.1.1",
	"127.1",
	"5000",
	"-host/repo",
	"host-/repo",
	"ho_st/repo",
	".host/repo",
	"host./repo",
	"ho..st/repo",
	"host name/repo",
};

static bool str_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static const char *show(const char *s)
{
	return s ? s : "(null)";
}

static void test_valid(void)
{
	size_t i;

	for (i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
		const struct valid_case *c = &valid[i];
		const char *want = c->formatted ? c->formatted : c->in;
		struct ref r, again;
		char *f, *f2;
		int err;

		err = ref_parse_source(c->in, &r);
		CHECK(err == 0, "parse \"%s\" returns 0 (got %d)", c->in, err);
		if (err)
			continue;
		CHECK(str_eq(r.host, c->host), "\"%s\": host %s", c->in, show(r.host));
		CHECK(str_eq(r.repo, c->repo), "\"%s\": repo %s", c->in, show(r.repo));
		CHECK(str_eq(r.tag, c->tag), "\"%s\": tag %s", c->in, show(r.tag));
		CHECK(str_eq(r.digest, c->digest), "\"%s\": digest %s", c->in, show(r.digest));

		f = ref_format(&r);
		CHECK(f && strcmp(f, want) == 0, "format(parse(\"%s\")) = \"%s\"", c->in, show(f));

		/* The formatted form is canonical: parsing it again changes nothing. */
		if (f) {
			err = ref_parse_source(f, &again);
			f2 = err ? NULL : ref_format(&again);
			CHECK(err == 0 && f2 && strcmp(f, f2) == 0, "\"%s\" round-trips", f);
			CHECK(err == 0 && str_eq(r.host, again.host) &&
					str_eq(r.repo, again.repo) && str_eq(r.tag, again.tag) &&
					str_eq(r.digest, again.digest),
				"\"%s\" parses to the same fields", f);
			free(f2);
			ref_release(&again);
		}
		free(f);

		ref_release(&r);
		CHECK(!r.host && !r.repo && !r.tag && !r.digest, "release zeroes \"%s\"", c->in);
	}
}

static void check_invalid(const char *in, const char *label)
{
	static char junk[] = "junk";
	struct ref r = { junk, junk, junk, junk };
	int err;

	err = ref_parse_source(in, &r);
	CHECK(err == -EINVAL, "parse %s rejected (got %d)", label, err);
	CHECK(!r.host && !r.repo && !r.tag && !r.digest, "%s: out zeroed on failure", label);
	ref_release(&r);
}

static void test_invalid(void)
{
	char label[512];
	size_t i, j, k;

	for (i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		/* Escape control characters so the TAP output stays one line per check. */
		for (j = 0, k = 0; invalid[i][j] && k < sizeof(label) - 8; j++) {
			unsigned char ch = (unsigned char)invalid[i][j];

			if (ch < 0x20 || ch == 0x7f)
				k += (size_t)snprintf(label + k, sizeof(label) - k, "\\x%02x", ch);
			else
				label[k++] = (char)ch;
		}
		label[k] = '\0';
		/* Prefix with '"' so that the label of "" is visible. */
		{
			char quoted[520];

			snprintf(quoted, sizeof(quoted), "\"%s\"", label);
			check_invalid(invalid[i], quoted);
		}
	}
}

/* Repository and tag length limits, on strings built at run time. */
static void test_lengths(void)
{
	char repo[300], src[400], tag[140];
	struct ref r;
	int err;

	/* 255 characters: "a/" repeated, ending in a component. */
	memset(repo, 'a', 255);
	repo[255] = '\0';
	CHECK(ref_valid_repo(repo), "repo of 255 characters is valid");
	repo[255] = 'a';
	repo[256] = '\0';
	CHECK(!ref_valid_repo(repo), "repo of 256 characters is invalid");

	snprintf(src, sizeof(src), "h.io/%s", repo);
	check_invalid(src, "h.io/<256 a>");
	repo[255] = '\0';
	snprintf(src, sizeof(src), "h.io/%s", repo);
	err = ref_parse_source(src, &r);
	CHECK(err == 0 && r.repo && strlen(r.repo) == 255, "h.io/<255 a> parses");
	ref_release(&r);

	/* library/ counts: 8 + 248 = 256. */
	memset(repo, 'b', 248);
	repo[248] = '\0';
	snprintf(src, sizeof(src), "docker.io/%s", repo);
	check_invalid(src, "docker.io/<248 b> (256 with library/)");
	repo[247] = '\0';
	snprintf(src, sizeof(src), "docker.io/%s", repo);
	err = ref_parse_source(src, &r);
	CHECK(err == 0 && r.repo && strlen(r.repo) == 255, "docker.io/<247 b> parses");
	ref_release(&r);

	memset(tag, 'x', 128);
	tag[128] = '\0';
	CHECK(ref_valid_tag(tag), "tag of 128 characters is valid");
	snprintf(src, sizeof(src), "h.io/r:%s", tag);
	err = ref_parse_source(src, &r);
	CHECK(err == 0 && r.tag && strlen(r.tag) == 128, "h.io/r:<128 x> parses");
	ref_release(&r);
	tag[128] = 'x';
	tag[129] = '\0';
	CHECK(!ref_valid_tag(tag), "tag of 129 characters is invalid");
	snprintf(src, sizeof(src), "h.io/r:%s", tag);
	check_invalid(src, "h.io/r:<129 x>");
}

static void test_validators(void)
{
	static const char *const good_components[] = { "a", "0", "abc", "a.b", "a_b", "a__b", "a-b",
		"a--b", "a---b", "a.b_c__d-e--f", "0a9", "a1.b2" };
	static const char *const bad_components[] = { "", "A", "aB", "-a", "a-", ".a", "a.", "_a",
		"a_", "a..b", "a___b", "a._b", "a-.b", "a/b", "a:b", "a@b", "a b", "é" };
	static const char *const good_tags[] = { "a", "_", "0", "latest", "V1.2.3-rc_1", "_x",
		"A.-_", "sha256-" HEX64 };
	static const char *const bad_tags[] = { "", ".a", "-a", "a:b", "a/b", "a@b", "a b", "a+b",
		"a\nb" };
	static const char *const good_digests[] = { SHA256, SHA512 };
	static const char *const bad_digests[] = { "", "sha256:", "sha256:" HEX16,
		"sha256:" HEX64 "0", "sha256:" HEX64 "\n", "SHA256:" HEX64,
		"sha256:ABCDEF0123456789" HEX16 HEX16 HEX16,
		"sha256:g123456789abcdef" HEX16 HEX16 HEX16, "sha512:" HEX64,
		"md5:0123456789abcdef0123456789abcdef", HEX64, ":" HEX64, "sha256-" HEX64 };
	static const char *const good_hosts[] = { "a", "localhost", "localhost:1",
		"localhost:65535", "ghcr.io", "Registry.Example.COM", "a-b.c", "a--b.c",
		"xn--bcher-kva.example", "1.2.3.4", "255.255.255.255:5000", "1a.example",
		"example.123a", "[::1]", "[::1]:5000", "[::]", "[fe80::1]", "[::ffff:127.0.0.1]:8",
		"host:00080" };
	static const char *const bad_hosts[] = { "", ":", ":5000", "a:", "a:0", "a:65536",
		"a:99999", "a:1x", "a:+1", "a:-1", "-a", "a-", "a.-b", "a_b", "a..b", ".a", "a.",
		"a/b", "a b", "a@b", "256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1234", "[::1",
		"::1]", "::1", "[::1]:", "[::1]:0", "[::1]x", "[1.2.3.4]", "[fe80::1%eth0]", "[]",
		"a\x01" };
	char label[80];
	size_t i;

	for (i = 0; i < sizeof(good_components) / sizeof(good_components[0]); i++)
		CHECK(ref_valid_component(good_components[i]), "component \"%s\" valid",
			good_components[i]);
	for (i = 0; i < sizeof(bad_components) / sizeof(bad_components[0]); i++)
		CHECK(!ref_valid_component(bad_components[i]), "component \"%s\" invalid",
			bad_components[i]);
	CHECK(!ref_valid_component(NULL), "component NULL invalid");

	CHECK(ref_valid_repo("a"), "repo a valid");
	CHECK(ref_valid_repo("a/b/c"), "repo a/b/c valid");
	CHECK(ref_valid_repo("library/alpine"), "repo library/alpine valid");
	CHECK(!ref_valid_repo(""), "repo empty invalid");
	CHECK(!ref_valid_repo("/a"), "repo /a invalid");
	CHECK(!ref_valid_repo("a/"), "repo a/ invalid");
	CHECK(!ref_valid_repo("a//b"), "repo a//b invalid");
	CHECK(!ref_valid_repo("a/B"), "repo a/B invalid");
	CHECK(!ref_valid_repo("a/b:c"), "repo a/b:c invalid");
	CHECK(!ref_valid_repo(NULL), "repo NULL invalid");

	for (i = 0; i < sizeof(good_tags) / sizeof(good_tags[0]); i++)
		CHECK(ref_valid_tag(good_tags[i]), "tag \"%s\" valid", good_tags[i]);
	for (i = 0; i < sizeof(bad_tags) / sizeof(bad_tags[0]); i++)
		CHECK(!ref_valid_tag(bad_tags[i]), "tag #%zu invalid", i);
	CHECK(!ref_valid_tag(NULL), "tag NULL invalid");

	for (i = 0; i < sizeof(good_digests) / sizeof(good_digests[0]); i++)
		CHECK(ref_valid_digest(good_digests[i]), "digest %.12s... valid", good_digests[i]);
	for (i = 0; i < sizeof(bad_digests) / sizeof(bad_digests[0]); i++)
		CHECK(!ref_valid_digest(bad_digests[i]), "digest #%zu (%.20s...) invalid", i,
			bad_digests[i]);
	CHECK(!ref_valid_digest(NULL), "digest NULL invalid");

	for (i = 0; i < sizeof(good_hosts) / sizeof(good_hosts[0]); i++)
		CHECK(ref_valid_host(good_hosts[i]), "host \"%s\" valid", good_hosts[i]);
	for (i = 0; i < sizeof(bad_hosts) / sizeof(bad_hosts[0]); i++)
		CHECK(!ref_valid_host(bad_hosts[i]), "host #%zu invalid", i);
	CHECK(!ref_valid_host(NULL), "host NULL invalid");

	/* Label and name length limits of DNS. */
	memset(label, 'a', 63);
	label[63] = '\0';
	CHECK(ref_valid_host(label), "host label of 63 valid");
	label[63] = 'a';
	label[64] = '\0';
	CHECK(!ref_valid_host(label), "host label of 64 invalid");
}

static void test_host_helpers(void)
{
	static const char *const like[] = { "ghcr.io", "localhost", "localhost:5000", "a:1",
		"127.0.0.1", "[::1]" };
	static const char *const unlike[] = { "library", "org", "my-org", "Localhost", "" };
	static const char *const loop[] = { "localhost", "localhost:5000", "LOCALHOST", "127.0.0.1",
		"127.0.0.1:5000", "127.255.255.254:1", "127.1.2.3", "::1", "[::1]", "[::1]:5000",
		"[0:0:0:0:0:0:0:1]:80" };
	static const char *const notloop[] = { "", "ghcr.io", "localhost.example.com",
		"mylocalhost", "128.0.0.1", "10.0.0.1", "1.127.0.0", "::2", "[::2]:5000", "[::]",
		"127.0.0.1:0", "localhost:x", "[::1]:70000", "127.0.0", "0.0.0.0" };
	size_t i;

	for (i = 0; i < sizeof(like) / sizeof(like[0]); i++)
		CHECK(ref_looks_like_host(like[i]), "\"%s\" looks like a host", like[i]);
	for (i = 0; i < sizeof(unlike) / sizeof(unlike[0]); i++)
		CHECK(!ref_looks_like_host(unlike[i]), "\"%s\" does not look like a host",
			unlike[i]);
	CHECK(!ref_looks_like_host(NULL), "NULL does not look like a host");

	for (i = 0; i < sizeof(loop) / sizeof(loop[0]); i++)
		CHECK(ref_host_is_loopback(loop[i]), "\"%s\" is loopback", loop[i]);
	for (i = 0; i < sizeof(notloop) / sizeof(notloop[0]); i++)
		CHECK(!ref_host_is_loopback(notloop[i]), "\"%s\" is not loopback", notloop[i]);
	CHECK(!ref_host_is_loopback(NULL), "NULL is not loopback");

	CHECK(strcmp(ref_canonical_host("docker.io"), "registry-1.docker.io") == 0,
		"docker.io is canonicalised");
	CHECK(strcmp(ref_canonical_host("index.docker.io"), "registry-1.docker.io") == 0,
		"index.docker.io is canonicalised");
	{
		const char *h = "ghcr.io";

		CHECK(ref_canonical_host(h) == h, "other hosts are returned as is");
	}
	CHECK(ref_canonical_host(NULL) == NULL, "NULL canonical host is NULL");
}

static void test_format(void)
{
	static char host[] = "h.io", repo[] = "r", tag[] = "t", dig[] = SHA256;
	struct ref r = { NULL, NULL, NULL, NULL };
	char *f;

	f = ref_format(&r);
	CHECK(f && strcmp(f, "-") == 0, "format of NULL host is \"-\"");
	free(f);

	r.host = host;
	r.tag = tag;
	r.digest = dig;
	f = ref_format(&r);
	CHECK(f && strcmp(f, "h.io") == 0, "tag and digest without repo are not written");
	free(f);

	r.repo = repo;
	f = ref_format(&r);
	CHECK(f && strcmp(f, "h.io/r:t@" SHA256) == 0, "format with tag and digest");
	free(f);

	CHECK(ref_format(NULL) == NULL, "format of NULL is NULL");
	ref_release(NULL);
	CHECK(ref_parse_source("-", NULL) == -EINVAL, "parse into NULL is -EINVAL");
	check_invalid(NULL, "NULL");
}

int main(void)
{
	test_valid();
	test_invalid();
	test_lengths();
	test_validators();
	test_host_helpers();
	test_format();
	return check_done();
}

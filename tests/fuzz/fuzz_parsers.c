/*
 * Fuzz target for the parsers of what registries and users hand ocifs: the
 * first byte of an input says which one gets the rest.
 *   0  a SOURCE reference (ref_parse_source)
 *   1  a manifest or index body (manifest_parse), its titles checked
 *   2  a WWW-Authenticate value (auth_parse_challenge)
 *   3  a Link header value (http_link_next)
 *   4  a credentials file, docker config.json or auth.json
 *      (auth_credentials_from_json; no credential helper can run: PATH is empty)
 *   5  a platform (platform_parse)
 *   6  a layer's table of contents, eStargz JSON (toc_parse)
 *   7  the end of a layer blob and a compressed TOC (toc_locate, toc_json)
 *   8  a cosign simple-signing payload (sign_payload_digest)
 *   9  a model's manifest, also as its Kitfile (model_places, model_kitfile_yaml):
 *      every path and prefix given stays inside the artifact
 * Built with libFuzzer by tests/fuzz/run.sh; tests/fuzz/driver.c runs it
 * over tests/fuzz/corpus/fuzz_parsers and mutations of it in `make check`.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "buf.h"
#include "http.h"
#include "manifest.h"
#include "model.h"
#include "ref.h"
#include "sign.h"
#include "toc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whether a model's path or prefix (NULL: none) could leave the artifact. */
static bool outside(const char *path)
{
	return path && (path[0] == '/' || manifest_title_check(path));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const types[] = { NULL, "application/vnd.oci.image.manifest.v1+json",
		"application/vnd.oci.image.index.v1+json",
		"application/vnd.docker.distribution.manifest.v2+json" };
	static int init;
	char *s;

	if (!init) {
		setenv("PATH", "/nonexistent-ocifs-fuzz", 1);
		init = 1;
	}
	if (size < 1)
		return 0;
	s = malloc(size);
	if (!s)
		return 0;
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0'; /* the text parsers take C strings */
	switch (data[0] % 10) {
	case 0: {
		struct ref r;

		if (ref_parse_source(s, &r) == 0)
			ref_release(&r);
		break;
	}
	case 1: {
		struct manifest *m = NULL;
		size_t i, k;

		if (manifest_parse(s, size - 1, types[(size - 1) % 4], &m) == 0) {
			for (i = 0; i < m->n_layers; i++)
				for (k = 0; k < m->layers[i].n_annotations; k++)
					manifest_title_check(m->layers[i].annotations[k].value);
			manifest_free(m);
		}
		break;
	}
	case 2: {
		struct challenge c;

		memset(&c, 0, sizeof(c));
		if (auth_parse_challenge(s, &c) == 0)
			challenge_release(&c);
		break;
	}
	case 3:
		free(http_link_next(s));
		break;
	case 4: {
		struct credentials c;

		memset(&c, 0, sizeof(c));
		if (auth_credentials_from_json(s, "registry.example.com", "team/app", &c) == 0)
			credentials_release(&c);
		memset(&c, 0, sizeof(c));
		if (auth_credentials_from_json(s, "registry-1.docker.io", NULL, &c) == 0)
			credentials_release(&c);
		break;
	}
	case 6: {
		struct toc t;
		size_t i;

		if (toc_parse(s, size - 1, 1 << 30, "fuzz", &t) == 0) {
			/* every chunk lies before the TOC, inside its file */
			for (i = 0; i < t.n_chunks; i++)
				if (t.chunks[i].in <= 0 || t.chunks[i].in_end > (1 << 30) ||
					t.chunks[i].in >= t.chunks[i].in_end ||
					t.chunks[i].size <= 0 ||
					t.chunks[i].out + t.chunks[i].size > t.data_size)
					abort();
			toc_release(&t);
		}
		break;
	}
	case 7: {
		int64_t off, len;
		char *json;
		size_t jlen;
		bool zstd = size % 2;

		if (toc_locate((const unsigned char *)s, size - 1, (int64_t)size + 100, zstd, &off,
			    &len) == 0 &&
			(off < 0 || len <= 0 || off + len > (int64_t)size + 100))
			abort();
		if (toc_json((const unsigned char *)s, size - 1, zstd, &json, &jlen) == 0)
			free(json);
		break;
	}
	case 8: {
		char d[80];

		/* what it names is a digest: a signature is checked against nothing else */
		if (sign_payload_digest(s, size - 1, d) == 0 && !ref_valid_digest(d))
			abort();
		break;
	}
	case 9: {
		struct manifest *m = NULL;
		struct model_place *p = NULL;
		struct buf y = BUF_INIT;
		size_t i;

		if (manifest_parse(s, size - 1, NULL, &m) == 0) {
			if (model_places(m, MODEL_KIT, s, size - 1, "fuzz", &p) == 0) {
				for (i = 0; i < m->n_layers; i++)
					if (outside(p[i].path) || outside(p[i].prefix))
						abort();
				model_places_free(p, m->n_layers);
			}
			manifest_free(m);
		}
		model_kitfile_yaml(s, size - 1, &y);
		buf_release(&y);
		break;
	}
	case 5: {
		struct platform p;

		memset(&p, 0, sizeof(p));
		if (platform_parse(s, &p) == 0)
			platform_release(&p);
		break;
	}
	}
	free(s);
	return 0;
}

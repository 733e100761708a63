/* cosign's key-based signatures through OpenSSL: see sign.h. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "buf.h"
#include "digest.h"
#include "ref.h"
#include "sign.h"

struct sign_keys {
	EVP_PKEY **v;
	size_t n;
};

struct sign_key {
	EVP_PKEY *pkey;
};

/* path opened for reading, or NULL with a message and *err the -errno. */
static FILE *pem_open(const char *path, int *err)
{
	FILE *f = fopen(path, "r");

	if (!f) {
		*err = -errno;
		fprintf(stderr, "ocifs: %s: %s\n", path, strerror(-*err));
	}
	return f;
}

int sign_keys_load(const char *path, struct sign_keys **out)
{
	struct sign_keys *k;
	EVP_PKEY *p;
	int err = 0;
	FILE *f = pem_open(path, &err);

	if (!f)
		return err;
	k = calloc(1, sizeof(*k));
	if (!k) {
		fclose(f);
		return -ENOMEM;
	}
	while ((p = PEM_read_PUBKEY(f, NULL, NULL, NULL))) {
		EVP_PKEY **v = realloc(k->v, (k->n + 1) * sizeof(*v));

		if (!v) {
			EVP_PKEY_free(p);
			fclose(f);
			sign_keys_free(k);
			return -ENOMEM;
		}
		k->v = v;
		k->v[k->n++] = p;
	}
	fclose(f);
	if (!k->n) {
		fprintf(stderr, "ocifs: %s: no PEM public key in it\n", path);
		sign_keys_free(k);
		return -EINVAL;
	}
	*out = k;
	return 0;
}

void sign_keys_free(struct sign_keys *k)
{
	size_t i;

	if (!k)
		return;
	for (i = 0; i < k->n; i++)
		EVP_PKEY_free(k->v[i]);
	free(k->v);
	free(k);
}

int sign_key_load(const char *path, struct sign_key **out)
{
	struct sign_key *k;
	EVP_PKEY *p;
	int err = 0;
	FILE *f = pem_open(path, &err);

	if (!f)
		return err;
	/* no passphrase callback: an encrypted key is refused, not asked for */
	p = PEM_read_PrivateKey(f, NULL, NULL, (void *)"");
	fclose(f);
	if (!p) {
		fprintf(stderr, "ocifs: %s: no unencrypted PEM private key in it\n", path);
		return -EINVAL;
	}
	if (EVP_PKEY_get_base_id(p) == EVP_PKEY_EC && EVP_PKEY_get_bits(p) < 256) {
		fprintf(stderr, "ocifs: %s: an EC key of %d bits: P-256 or larger is needed\n",
			path, EVP_PKEY_get_bits(p));
		EVP_PKEY_free(p);
		return -EINVAL;
	}
	k = calloc(1, sizeof(*k));
	if (!k) {
		EVP_PKEY_free(p);
		return -ENOMEM;
	}
	k->pkey = p;
	*out = k;
	return 0;
}

void sign_key_free(struct sign_key *k)
{
	if (!k)
		return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

int sign_payload(const char *reference, const char *digest, struct buf *out)
{
	const char *c;

	/* both go in unescaped: only the characters of references and digests */
	for (c = reference; *c; c++)
		if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
			return -EINVAL;
	if (!ref_valid_digest(digest))
		return -EINVAL;
	return buf_printf(out,
		"{\"critical\":{\"identity\":{\"docker-reference\":\"%s\"},"
		"\"image\":{\"docker-manifest-digest\":\"%s\"},\"type\":\"" SIGN_TYPE "\"},"
		"\"optional\":null}",
		reference, digest);
}

/* The string at key in o, or NULL. */
static const char *str_at(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) ||
		!json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

int sign_payload_digest(const char *p, size_t n, char *digest)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o = NULL, *crit = NULL, *img = NULL;
	const char *type, *d;
	int ret = -EBADMSG;

	if (!tok)
		return -ENOMEM;
	if (n <= SIGN_PAYLOAD_MAX)
		o = json_tokener_parse_ex(tok, p, (int)n);
	if (o && json_tokener_get_error(tok) == json_tokener_success &&
		json_object_object_get_ex(o, "critical", &crit) &&
		json_object_object_get_ex(crit, "image", &img)) {
		type = str_at(crit, "type");
		d = str_at(img, "docker-manifest-digest");
		if (type && strcmp(type, SIGN_TYPE) == 0 && d && ref_valid_digest(d)) {
			snprintf(digest, DIGEST_STR_LEN + 1, "%s", d);
			ret = 0;
		}
	}
	json_object_put(o);
	json_tokener_free(tok);
	return ret;
}

int sign_make(const struct sign_key *k, const void *p, size_t n, char **b64)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char *sig = NULL;
	size_t len = 0;
	int ret = -EIO;

	if (!md)
		return -ENOMEM;
	if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
		EVP_DigestSign(md, NULL, &len, p, n) == 1 && (sig = malloc(len)) &&
		EVP_DigestSign(md, sig, &len, p, n) == 1) {
		*b64 = malloc(4 * ((len + 2) / 3) + 1);
		if (*b64) {
			EVP_EncodeBlock((unsigned char *)*b64, sig, (int)len);
			ret = 0;
		} else {
			ret = -ENOMEM;
		}
	}
	free(sig);
	EVP_MD_CTX_free(md);
	return ret;
}

bool sign_verify(const struct sign_keys *k, const void *p, size_t n, const char *b64)
{
	size_t blen = strlen(b64), i, len, pad = 0;
	unsigned char *sig;
	bool ok = false;
	int got;

	if (!k || !blen || blen % 4 || blen > 4096)
		return false;
	sig = malloc(blen / 4 * 3 + 1);
	if (!sig)
		return false;
	got = EVP_DecodeBlock(sig, (const unsigned char *)b64, (int)blen);
	/* EVP_DecodeBlock counts the padding as zero bytes */
	while (pad < 2 && b64[blen - 1 - pad] == '=')
		pad++;
	len = got < 0 ? 0 : (size_t)got - pad;
	for (i = 0; got > 0 && !ok && i < k->n; i++) {
		EVP_MD_CTX *md = EVP_MD_CTX_new();

		ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k->v[i]) == 1 &&
		     EVP_DigestVerify(md, sig, len, p, n) == 1;
		EVP_MD_CTX_free(md);
	}
	free(sig);
	return ok;
}

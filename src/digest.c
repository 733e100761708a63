#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "digest.h"

/* Bytes read at a time by digest_fd. */
#define DIGEST_FD_BUF (256 * 1024)

struct digest_ctx {
	EVP_MD_CTX *md;
};

struct digest_ctx *digest_ctx_new(void)
{
	struct digest_ctx *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->md = EVP_MD_CTX_new();
	if (!c->md || EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(c->md);
		free(c);
		return NULL;
	}
	return c;
}

void digest_ctx_update(struct digest_ctx *c, const void *p, size_t n)
{
	EVP_DigestUpdate(c->md, p, n);
}

static void format_sha256(const unsigned char *md, char *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	memcpy(out, "sha256:", 7);
	for (i = 0; i < 32; i++) {
		out[7 + 2 * i] = hex[md[i] >> 4];
		out[7 + 2 * i + 1] = hex[md[i] & 15];
	}
	out[DIGEST_STR_LEN] = '\0';
}

struct digest_ctx *digest_ctx_dup(const struct digest_ctx *c)
{
	struct digest_ctx *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->md = EVP_MD_CTX_new();
	if (!d->md || EVP_MD_CTX_copy_ex(d->md, c->md) != 1) {
		EVP_MD_CTX_free(d->md);
		free(d);
		return NULL;
	}
	return d;
}

void digest_ctx_final(struct digest_ctx *c, char *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	EVP_DigestFinal_ex(c->md, md, &len);
	format_sha256(md, out);
}

void digest_ctx_raw(struct digest_ctx *c, unsigned char *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	EVP_DigestFinal_ex(c->md, md, &len);
	memcpy(out, md, DIGEST_RAW_LEN);
	EVP_DigestInit_ex(c->md, EVP_sha256(), NULL);
}

void digest_ctx_free(struct digest_ctx *c)
{
	if (!c)
		return;
	EVP_MD_CTX_free(c->md);
	free(c);
}

void digest_buffer_raw(const void *p, size_t n, unsigned char *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];

	EVP_Digest(p, n, md, NULL, EVP_sha256(), NULL);
	memcpy(out, md, DIGEST_RAW_LEN);
}

void digest_buffer(const void *p, size_t n, char *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];

	EVP_Digest(p, n, md, NULL, EVP_sha256(), NULL);
	format_sha256(md, out);
}

bool digest_supported(const char *d)
{
	size_t i;

	if (strncmp(d, "sha256:", 7) != 0 || strlen(d) != DIGEST_STR_LEN)
		return false;
	for (i = 7; i < DIGEST_STR_LEN; i++)
		if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f')))
			return false;
	return true;
}

const char *digest_hex(const char *d)
{
	const char *c = strchr(d, ':');

	return c ? c + 1 : NULL;
}

int digest_fd(int fd, int64_t len, char *out, int64_t *hashed)
{
	struct digest_ctx *c = digest_ctx_new();
	char *buf = malloc(DIGEST_FD_BUF);
	int64_t total = 0;
	int ret = c && buf ? 0 : -ENOMEM;

	while (!ret && (len < 0 || total < len)) {
		size_t want = len < 0 || len - total > DIGEST_FD_BUF ? DIGEST_FD_BUF
								     : (size_t)(len - total);
		ssize_t n = pread(fd, buf, want, total);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			ret = -errno;
		else if (n == 0 && len >= 0)
			ret = -EIO; /* shorter than said */
		else if (n == 0)
			break;
		else {
			digest_ctx_update(c, buf, (size_t)n);
			total += n;
		}
	}
	if (!ret) {
		digest_ctx_final(c, out);
		if (hashed)
			*hashed = total;
	}
	digest_ctx_free(c);
	free(buf);
	return ret;
}

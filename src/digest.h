/* sha256 digests through OpenSSL EVP. */
#ifndef OCIFS_DIGEST_H
#define OCIFS_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DIGEST_STR_LEN (7 + 64) /* "sha256:" + 64 hex */
#define DIGEST_RAW_LEN 32

struct digest_ctx;

/* A new running hash; NULL when out of memory. Free with digest_ctx_free(). */
struct digest_ctx *digest_ctx_new(void);
void digest_ctx_update(struct digest_ctx *c, const void *p, size_t n);
/* A copy of c's state (to finish one and go on with the other), or NULL. */
struct digest_ctx *digest_ctx_dup(const struct digest_ctx *c);
/* Write "sha256:<hex>" and a NUL into out (DIGEST_STR_LEN + 1 bytes). */
void digest_ctx_final(struct digest_ctx *c, char *out);
void digest_ctx_free(struct digest_ctx *c);
/* The sha256 of what c was fed, as DIGEST_RAW_LEN bytes; c starts over, empty. */
void digest_ctx_raw(struct digest_ctx *c, unsigned char *out);

/* "sha256:<hex>" of a buffer into out (DIGEST_STR_LEN + 1 bytes). */
void digest_buffer(const void *p, size_t n, char *out);
/* The same as DIGEST_RAW_LEN bytes. */
void digest_buffer_raw(const void *p, size_t n, unsigned char *out);

/*
 * "sha256:<hex>" of the first len bytes of fd (all of it, to its end, when
 * len < 0) into out; *hashed (may be NULL) is how many there were. 0,
 * -EIO when fd holds fewer than len, -ENOMEM or -errno.
 */
int digest_fd(int fd, int64_t len, char *out, int64_t *hashed);

/* Whether d is an algorithm this build can verify ("sha256:"). */
bool digest_supported(const char *d);

/* The hex part of "alg:hex" (borrowed, inside d), or NULL when there is no ':'. */
const char *digest_hex(const char *d);

#endif

/*
 * Signatures in cosign's key-based format, made and checked with OpenSSL.
 *
 * What is signed is a simple-signing payload naming a manifest by digest:
 *
 *   {"critical":{"identity":{"docker-reference":"<host>/<repo>"},
 *    "image":{"docker-manifest-digest":"sha256:<hex>"},
 *    "type":"cosign container image signature"},"optional":null}
 *
 * signed with ECDSA over its sha256 (an ASN.1 DER signature, base64 in the
 * layer annotation SIGN_ANNOTATION). The payload is a blob of type
 * SIGN_PAYLOAD_TYPE in a manifest tagged "sha256-<hex>.sig" in the
 * manifest's repository, as `cosign sign --key` writes it and `cosign
 * verify --key` reads it.
 */
#ifndef OCIFS_SIGN_H
#define OCIFS_SIGN_H

#include <stdbool.h>
#include <stddef.h>

#define SIGN_PAYLOAD_TYPE "application/vnd.dev.cosign.simplesigning.v1+json"
#define SIGN_ANNOTATION "dev.cosignproject.cosign/signature"
#define SIGN_TYPE "cosign container image signature"
#define SIGN_TAG_SUFFIX ".sig"
/* The biggest payload read (a simple-signing payload is a few hundred bytes). */
#define SIGN_PAYLOAD_MAX (64 * 1024)

struct buf;
struct sign_keys;
struct sign_key;

/*
 * The public keys of the PEM file path (one or more "PUBLIC KEY" blocks, as
 * `cosign generate-key-pair` writes cosign.pub). 0, or -errno with a
 * message on stderr (-EINVAL: no key in it). Free with sign_keys_free().
 */
int sign_keys_load(const char *path, struct sign_keys **out);
void sign_keys_free(struct sign_keys *k);

/*
 * The private key of the PEM file path (unencrypted; EC P-256 or larger, or
 * any key OpenSSL signs with). 0, or -errno with a message on stderr. Free
 * with sign_key_free().
 */
int sign_key_load(const char *path, struct sign_key **out);
void sign_key_free(struct sign_key *k);

/* The simple-signing payload for digest, reference "<host>/<repo>", appended to out. */
int sign_payload(const char *reference, const char *digest, struct buf *out);

/*
 * The manifest digest a payload of n bytes names, into digest
 * (DIGEST_STR_LEN + 1 bytes): 0, or -EBADMSG when it is not a cosign
 * simple-signing payload.
 */
int sign_payload_digest(const char *p, size_t n, char *digest);

/* The base64 signature of n bytes at p by k: *b64 malloc'd. 0 or -errno. */
int sign_make(const struct sign_key *k, const void *p, size_t n, char **b64);

/* Whether b64 is a signature of n bytes at p by one of the keys. */
bool sign_verify(const struct sign_keys *k, const void *p, size_t n, const char *b64);

#endif

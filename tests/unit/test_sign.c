/* cosign's key-based signatures: payloads, signing and verifying, keys from PEM files. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "buf.h"
#include "check.h"
#include "digest.h"
#include "sign.h"

/* A new EC key of curve written to priv (PEM private) and appended to pub (PEM public). */
static int keygen(const char *curve, const char *priv, const char *pub)
{
	EVP_PKEY *k = EVP_EC_gen(curve);
	FILE *f;
	int ok;

	if (!k)
		return -1;
	f = fopen(priv, "w");
	ok = f && PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	if (f)
		fclose(f);
	f = fopen(pub, "a");
	ok = ok && f && PEM_write_PUBKEY(f, k);
	if (f)
		fclose(f);
	EVP_PKEY_free(k);
	return ok ? 0 : -1;
}

int main(void)
{
	static const char dg[] =
		"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
	char dir[] = "/tmp/ocifs-sign.XXXXXX", a[64], ap[64], b[64], bp[64], both[64], small[64],
	     smallp[64], named[DIGEST_STR_LEN + 1];
	struct sign_keys *ka = NULL, *kb = NULL, *kboth = NULL;
	struct sign_key *sa = NULL, *ss = NULL;
	struct buf p = BUF_INIT;
	char *sig = NULL;
	const char *bad;

	if (!mkdtemp(dir))
		return 1;
	snprintf(a, sizeof(a), "%s/a.key", dir);
	snprintf(ap, sizeof(ap), "%s/a.pub", dir);
	snprintf(b, sizeof(b), "%s/b.key", dir);
	snprintf(bp, sizeof(bp), "%s/b.pub", dir);
	snprintf(both, sizeof(both), "%s/both.pub", dir);
	snprintf(small, sizeof(small), "%s/s.key", dir);
	snprintf(smallp, sizeof(smallp), "%s/s.pub", dir);
	CHECK(!keygen("P-256", a, ap) && !keygen("P-256", b, bp) && !keygen("P-256", a, both) &&
			!keygen("P-384", b, both),
		"EC key pairs written as PEM");
	/* a and b were rewritten by the last two: read them again into both.pub's pair */
	unlink(ap);
	unlink(bp);
	CHECK(!keygen("P-256", a, ap) && !keygen("P-256", b, bp), "two more key pairs");

	CHECK(sign_keys_load(ap, &ka) == 0 && sign_keys_load(bp, &kb) == 0, "public keys load");
	CHECK(sign_keys_load(both, &kboth) == 0, "a file of two public keys loads");
	CHECK(sign_keys_load(a, &(struct sign_keys *){ NULL }) == -EINVAL,
		"a file without a public key is refused");
	CHECK(sign_keys_load("/nonexistent/x.pub", &(struct sign_keys *){ NULL }) == -ENOENT,
		"a missing file is ENOENT");
	CHECK(sign_key_load(a, &sa) == 0, "a private key loads");
	CHECK(sign_key_load(ap, &(struct sign_key *){ NULL }) == -EINVAL,
		"a public key is no private key");
	CHECK(!keygen("P-224", small, smallp) && sign_key_load(small, &ss) == -EINVAL,
		"an EC key under 256 bits is refused");

	CHECK(sign_payload("127.0.0.1:5000/img/app", dg, &p) == 0, "a payload is made");
	CHECK(strcmp(p.data,
		      "{\"critical\":{\"identity\":{\"docker-reference\":\"127.0.0.1:5000/"
		      "img/app\"},\"image\":{\"docker-manifest-digest\":\"sha256:"
		      "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"},"
		      "\"type\":\"cosign container image signature\"},\"optional\":null}") == 0,
		"the payload is cosign's simple-signing text");
	CHECK(sign_payload_digest(p.data, p.len, named) == 0 && strcmp(named, dg) == 0,
		"the payload names the digest");
	CHECK(sign_payload("a\"b", dg, &(struct buf)BUF_INIT) == -EINVAL,
		"a reference with a quote is refused");
	bad = "{\"critical\":{\"image\":{\"docker-manifest-digest\":\"sha256:00\"},\"type\":"
	      "\"cosign "
	      "container image signature\"}}";
	CHECK(sign_payload_digest(bad, strlen(bad), named) == -EBADMSG, "a bad digest is refused");
	bad = "{\"critical\":{\"image\":{\"docker-manifest-digest\":\"sha256:"
	      "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"},\"type\":"
	      "\"other\"}}";
	CHECK(sign_payload_digest(bad, strlen(bad), named) == -EBADMSG,
		"a payload of another type is refused");
	CHECK(sign_payload_digest("{\"critical\":", 12, named) == -EBADMSG, "cut-short JSON");

	CHECK(sign_make(sa, p.data, p.len, &sig) == 0 && sig && *sig, "signed");
	CHECK(sign_verify(ka, p.data, p.len, sig), "the signature verifies with its key");
	CHECK(!sign_verify(kb, p.data, p.len, sig), "and not with another key");
	CHECK(!sign_verify(kboth, p.data, p.len, sig), "nor with a file of two other keys");
	p.data[10] ^= 1;
	CHECK(!sign_verify(ka, p.data, p.len, sig), "a changed payload does not verify");
	p.data[10] ^= 1;
	CHECK(!sign_verify(ka, p.data, p.len, "AAAA"), "a signature of junk does not verify");
	CHECK(!sign_verify(ka, p.data, p.len, "not base64!"), "nor one that is not base64");
	CHECK(!sign_verify(NULL, p.data, p.len, sig), "no keys: nothing verifies");

	free(sig);
	buf_release(&p);
	sign_key_free(sa);
	sign_key_free(ss);
	sign_keys_free(ka);
	sign_keys_free(kb);
	sign_keys_free(kboth);
	unlink(a);
	unlink(ap);
	unlink(b);
	unlink(bp);
	unlink(both);
	unlink(small);
	unlink(smallp);
	rmdir(dir);
	return check_done();
}

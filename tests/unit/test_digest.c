/* sha256 digests against known vectors, streaming and one-shot. */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "digest.h"

int main(void)
{
	static const char empty[] =
		"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	static const char foo[] =
		"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
	char out[DIGEST_STR_LEN + 1];
	struct digest_ctx *c;

	digest_buffer("", 0, out);
	CHECK(strcmp(out, empty) == 0, "sha256 of nothing");
	digest_buffer("foo", 3, out);
	CHECK(strcmp(out, foo) == 0, "sha256 of \"foo\" (the oras fixture blob)");

	c = digest_ctx_new();
	CHECK(c != NULL, "running hash created");
	digest_ctx_update(c, "f", 1);
	digest_ctx_update(c, "oo", 2);
	digest_ctx_final(c, out);
	digest_ctx_free(c);
	CHECK(strcmp(out, foo) == 0, "streamed in pieces equals one-shot");

	CHECK(digest_supported(foo), "sha256 digest supported");
	CHECK(!digest_supported(
		      "sha256:2C26B46B68FFC68FF99B453C1D30413413422D706483BFA0F98A5E886266E7AE"),
		"uppercase hex refused");
	CHECK(!digest_supported("sha256:2c26"), "short digest refused");
	CHECK(!digest_supported(
		      "sha512:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"),
		"other algorithm not verifiable");
	CHECK(!digest_supported(
		      "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae/"),
		"trailing byte refused");
	CHECK(digest_hex(foo) == foo + 7, "hex part located");
	CHECK(digest_hex("nocolon") == NULL, "no hex part without a colon");

	/* a file: all of it, a prefix of it, more than it holds */
	{
		char path[] = "/tmp/ocifs-test-digest.XXXXXX";
		int fd = mkstemp(path);
		int64_t n = -1;

		CHECK(fd >= 0 && write(fd, "foobar", 6) == 6, "temporary file written");
		unlink(path);
		CHECK(digest_fd(fd, 3, out, &n) == 0 && strcmp(out, foo) == 0 && n == 3,
			"sha256 of the first 3 bytes of a file");
		digest_buffer("foobar", 6, out);
		{
			char all[DIGEST_STR_LEN + 1];

			CHECK(digest_fd(fd, -1, all, &n) == 0 && strcmp(all, out) == 0 && n == 6,
				"sha256 of a whole file, to its end");
		}
		CHECK(digest_fd(fd, 7, out, NULL) == -EIO, "a file shorter than said: EIO");
		close(fd);
	}
	return check_done();
}

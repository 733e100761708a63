/* Link header parsing and URL resolution, as pagination of _catalog and tags/list uses them. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "http.h"

static void check_next(const char *value, const char *want)
{
	char *got = http_link_next(value);

	if (want)
		CHECK(got && strcmp(got, want) == 0, "Link \"%s\" -> \"%s\" (got \"%s\")", value,
			want, got ? got : "(null)");
	else
		CHECK(!got, "Link \"%s\" has no next (got \"%s\")", value, got ? got : "(null)");
	free(got);
}

static void check_resolve(const char *base, const char *rel, const char *want)
{
	char *got = http_resolve_url(base, rel);

	CHECK(got && strcmp(got, want) == 0, "%s + %s -> %s (got %s)", base, rel, want,
		got ? got : "(null)");
	free(got);
}

int main(void)
{
	/* distribution's own form */
	check_next("</v2/_catalog?last=b&n=2>; rel=\"next\"", "/v2/_catalog?last=b&n=2");
	check_next(
		"</v2/r/tags/list?n=100&last=v9>; rel=\"next\"", "/v2/r/tags/list?n=100&last=v9");
	/* absolute targets, several entries, unquoted rel */
	check_next("<https://r.example/v2/a/tags/list?last=x>; rel=next",
		"https://r.example/v2/a/tags/list?last=x");
	check_next("</first>; rel=\"first\", </second>; rel=\"next\"", "/second");
	check_next("</prev>; rel=\"prev\"", NULL);
	check_next("no angle brackets", NULL);
	check_next("<unterminated; rel=\"next\"", NULL);
	check_next("", NULL);

	check_resolve("http://127.0.0.1:5000/v2/_catalog?n=7", "/v2/_catalog?last=g&n=7",
		"http://127.0.0.1:5000/v2/_catalog?last=g&n=7");
	check_resolve("https://r.example/v2/a/tags/list?n=2", "https://cdn.example/page2",
		"https://cdn.example/page2");
	check_resolve("https://r.example/v2/a/tags/list?n=2", "list?last=t",
		"https://r.example/v2/a/tags/list?last=t");

	CHECK(http_status_to_errno(200) == 0, "200 is success");
	CHECK(http_status_to_errno(206) == 0, "206 is success");
	CHECK(http_status_to_errno(404) == -ENOENT, "404 is ENOENT");
	CHECK(http_status_to_errno(401) == -EACCES, "401 is EACCES");
	CHECK(http_status_to_errno(429) == -EAGAIN, "429 is EAGAIN");
	CHECK(http_status_to_errno(503) == -EIO, "503 is EIO");
	return check_done();
}

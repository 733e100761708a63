/* WWW-Authenticate parsing, credential-file lookup and Basic headers. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "check.h"

static bool eq(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

static void check_repo_creds(const char *json, const char *host, const char *repo, int want_ret,
	const char *user, const char *pass, const char *idtok)
{
	struct credentials c;
	int ret = auth_credentials_from_json(json, host, repo, &c);

	CHECK(ret == want_ret, "%s in %s: returns %d (got %d)", host, json, want_ret, ret);
	if (ret == 0) {
		CHECK(user ? eq(c.username, user) : !c.username, "%s: user %s", host,
			user ? user : "(none)");
		CHECK(pass ? eq(c.password, pass) : !c.password, "%s: password", host);
		CHECK(idtok ? eq(c.identity_token, idtok) : !c.identity_token, "%s: identity token",
			host);
	}
	credentials_release(&c);
}

static void check_creds(const char *json, const char *host, int want_ret, const char *user,
	const char *pass, const char *idtok)
{
	check_repo_creds(json, host, NULL, want_ret, user, pass, idtok);
}

int main(void)
{
	struct challenge ch;
	struct credentials c = { NULL, NULL, NULL };
	char *h;

	CHECK(auth_parse_challenge("Bearer realm=\"https://auth.docker.io/token\","
				   "service=\"registry.docker.io\","
				   "scope=\"repository:library/alpine:pull\"",
		      &ch) == 0,
		"Docker Hub's bearer challenge parses");
	CHECK(eq(ch.scheme, "bearer"), "scheme lowercased");
	CHECK(eq(ch.realm, "https://auth.docker.io/token"), "realm");
	CHECK(eq(ch.service, "registry.docker.io"), "service");
	CHECK(eq(ch.scope, "repository:library/alpine:pull"), "scope");
	challenge_release(&ch);

	{
		/* found by fuzz_parsers: separators at the very end were stepped over */
		char *v = malloc(32);

		snprintf(v, 32, "Bearer realm=\"r\", ,");
		CHECK(auth_parse_challenge(v, &ch) == 0 && eq(ch.realm, "r"),
			"trailing separators end the parse at the string's end");
		challenge_release(&ch);
		free(v);
	}
	CHECK(auth_parse_challenge("Basic realm=\"Registry Realm\"", &ch) == 0 &&
			eq(ch.scheme, "basic") && eq(ch.realm, "Registry Realm") && !ch.service,
		"Basic challenge with a spaced realm");
	challenge_release(&ch);
	CHECK(auth_parse_challenge("Bearer realm=\"a\\\"b\", error=\"insufficient_scope\", "
				   "scope=\"repository:x:pull,push\"",
		      &ch) == 0 &&
			eq(ch.realm, "a\"b") && eq(ch.scope, "repository:x:pull,push"),
		"escaped quote, unknown parameter, comma inside a quoted value");
	challenge_release(&ch);
	CHECK(auth_parse_challenge("bearer realm=unquoted,service=svc", &ch) == 0 &&
			eq(ch.realm, "unquoted") && eq(ch.service, "svc"),
		"unquoted values");
	challenge_release(&ch);
	CHECK(auth_parse_challenge("", &ch) == -EINVAL, "empty challenge refused");
	CHECK(auth_parse_challenge("Bearer realm=\"unterminated", &ch) == 0 &&
			eq(ch.realm, "unterminated"),
		"unterminated quote ends at the end");
	challenge_release(&ch);

	/* "dXNlcjpwYXNz" is base64("user:pass"); "YTpiOmM=" is "a:b:c" */
	check_creds("{\"auths\":{\"127.0.0.1:5000\":{\"auth\":\"dXNlcjpwYXNz\"}}}",
		"127.0.0.1:5000", 0, "user", "pass", NULL);
	check_creds("{\"auths\":{\"https://127.0.0.1:5000/\":{\"auth\":\"dXNlcjpwYXNz\"}}}",
		"127.0.0.1:5000", 0, "user", "pass", NULL);
	check_creds("{\"auths\":{\"http://reg.example/v1/\":{\"auth\":\"YTpiOmM=\"}}}",
		"reg.example", 0, "a", "b:c", NULL);
	check_creds("{\"auths\":{\"reg.example\":{\"username\":\"u\",\"password\":\"p\"}}}",
		"reg.example", 0, "u", "p", NULL);
	check_creds("{\"auths\":{\"reg.example\":{\"auth\":\"\",\"identitytoken\":\"rt\"}}}",
		"reg.example", 0, NULL, NULL, "rt");
	check_creds("{\"auths\":{\"https://index.docker.io/v1/\":{\"auth\":\"dXNlcjpwYXNz\"}}}",
		"registry-1.docker.io", 0, "user", "pass", NULL);
	check_creds("{\"auths\":{\"reg.example.evil\":{\"auth\":\"dXNlcjpwYXNz\"}}}", "reg.example",
		-ENOENT, NULL, NULL, NULL);
	check_creds("{\"auths\":{\"reg.example:5000\":{\"auth\":\"dXNlcjpwYXNz\"}}}", "reg.example",
		-ENOENT, NULL, NULL, NULL);
	check_creds("{\"auths\":{}}", "reg.example", -ENOENT, NULL, NULL, NULL);
	check_creds("{\"auths\":{\"reg.example\":{\"auth\":\"bm9jb2xvbg==\"}}}", "reg.example",
		-EBADMSG, NULL, NULL, NULL);
	check_creds("not json", "reg.example", -EBADMSG, NULL, NULL, NULL);
	check_creds("[1,2]", "reg.example", -EBADMSG, NULL, NULL, NULL);
	/* A helper that does not exist gives no credentials, and auths is not consulted past it. */
	check_creds("{\"credHelpers\":{\"reg.example\":\"ocifs-test-no-such-helper\"}}",
		"reg.example", -ENOENT, NULL, NULL, NULL);

	check_creds("{\"credsStore\":\"ocifs-test-no-such-helper\","
		    "\"auths\":{\"reg.example\":{\"auth\":\"dXNlcjpwYXNz\"}}}",
		"reg.example", 0, "user", "pass", NULL);

	/* Namespaced auths keys: the most specific one naming the repository wins. */
	static const char ns_json[] =
		"{\"auths\":{\"reg.example\":{\"auth\":\"dXNlcjpwYXNz\"},"
		"\"reg.example/team\":{\"username\":\"team\",\"password\":\"t\"},"
		"\"reg.example/team/app/\":{\"username\":\"app\",\"password\":\"a\"},"
		"\"https://other.example/team\":{\"username\":\"url\",\"password\":\"u\"}}}";
	check_repo_creds(ns_json, "reg.example", "team/app", 0, "app", "a", NULL);
	check_repo_creds(ns_json, "reg.example", "team/app/sub", 0, "app", "a", NULL);
	check_repo_creds(ns_json, "reg.example", "team/application", 0, "team", "t", NULL);
	check_repo_creds(ns_json, "reg.example", "team", 0, "team", "t", NULL);
	check_repo_creds(ns_json, "reg.example", "teamwork/x", 0, "user", "pass", NULL);
	check_repo_creds(ns_json, "reg.example", NULL, 0, "user", "pass", NULL);
	/* a URL-form key names its host alone, whatever path follows */
	check_repo_creds(ns_json, "other.example", "elsewhere/x", 0, "url", "u", NULL);
	check_repo_creds("{\"auths\":{\"reg.example/team\":{\"auth\":\"dXNlcjpwYXNz\"}}}",
		"reg.example", "other/x", -ENOENT, NULL, NULL, NULL);
	check_repo_creds("{\"auths\":{\"docker.io/library\":{\"auth\":\"dXNlcjpwYXNz\"}}}",
		"registry-1.docker.io", "library/alpine", 0, "user", "pass", NULL);

	c.username = strdup("user");
	c.password = strdup("pass");
	h = auth_basic_header(&c);
	CHECK(eq(h, "Basic dXNlcjpwYXNz"), "Basic header of user:pass (got %s)", h ? h : "(null)");
	free(h);
	credentials_release(&c);
	CHECK(!c.username && !c.password, "credentials released");
	return check_done();
}

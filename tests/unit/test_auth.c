/* WWW-Authenticate parsing, credential-file lookup and Basic headers. */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The pid written in file, or 0. */
static pid_t pid_in(const char *file)
{
	FILE *f = fopen(file, "r");
	long pid = 0;

	if (f) {
		if (fscanf(f, "%ld", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	return (pid_t)pid;
}

/* Whether pid is gone (or a zombie nobody reaped yet), within two seconds. */
static bool gone(pid_t pid)
{
	char path[64], state = 0;
	int i;

	for (i = 0; i < 200; i++) {
		FILE *f;

		snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
		f = fopen(path, "r");
		if (!f)
			return true;
		if (fscanf(f, "%*d (%*[^)]) %c", &state) != 1)
			state = 0;
		fclose(f);
		if (state == 'Z')
			return true;
		usleep(10000);
	}
	return false;
}

/*
 * A helper that never answers: killed after the time limit with the child it
 * started, -ETIMEDOUT, and not run again for that host.
 */
static void check_stuck_helper(void)
{
	char dir[] = "/tmp/ocifs-test-helper.XXXXXX", prog[256], pidf[256], childf[256];
	char path[4096];
	const char *old_path = getenv("PATH");
	struct credentials c;
	pid_t pid, child;
	double t0, dt;
	FILE *f;
	int ret;

	if (!mkdtemp(dir)) {
		CHECK(0, "mkdtemp");
		return;
	}
	snprintf(prog, sizeof(prog), "%s/docker-credential-ocifs-unit-stuck", dir);
	snprintf(pidf, sizeof(pidf), "%s/pid", dir);
	snprintf(childf, sizeof(childf), "%s/child", dir);
	f = fopen(prog, "w");
	if (!f) {
		CHECK(0, "write %s", prog);
		return;
	}
	fprintf(f, "#!/bin/sh\necho $$ >%s\nsleep 100000 &\necho $! >%s\nwait\n", pidf, childf);
	fclose(f);
	chmod(prog, 0700);
	snprintf(path, sizeof(path), "%s:%s", dir, old_path ? old_path : "/usr/bin:/bin");
	setenv("PATH", path, 1);
	auth_set_helper_timeout(300);

	t0 = now_s();
	ret = auth_credentials_from_json(
		"{\"credHelpers\":{\"stuck.example\":\"ocifs-unit-stuck\"}}", "stuck.example", NULL,
		&c);
	dt = now_s() - t0;
	CHECK(ret == -ETIMEDOUT, "a stuck helper: -ETIMEDOUT (got %d)", ret);
	CHECK(dt >= 0.25 && dt < 3, "after its time limit of 0.3 s (%.2f s)", dt);
	pid = pid_in(pidf);
	child = pid_in(childf);
	CHECK(pid > 0 && child > 0, "the helper ran and started a child");
	CHECK(pid > 0 && gone(pid), "the helper is gone");
	CHECK(child > 0 && gone(child), "its child is gone too (its process group was killed)");
	if (child > 0 && !gone(child))
		kill(child, SIGKILL);

	unlink(pidf);
	t0 = now_s();
	ret = auth_credentials_from_json(
		"{\"credHelpers\":{\"stuck.example\":\"ocifs-unit-stuck\"}}", "stuck.example",
		"some/repo", &c);
	dt = now_s() - t0;
	CHECK(ret == -ETIMEDOUT && dt < 0.2,
		"asked again for that host: -ETIMEDOUT at once (%.2f s)", dt);
	CHECK(access(pidf, F_OK) != 0, "without running the helper again");

	auth_set_helper_timeout(0);
	setenv("PATH", old_path ? old_path : "/usr/bin:/bin", 1);
	unlink(childf);
	unlink(prog);
	rmdir(dir);
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
	check_stuck_helper();
	return check_done();
}

#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ref.h"

#define REF_NAME_MAX 255 /* repository name, distribution spec */
#define REF_TAG_MAX 128 /* tag, distribution spec */
#define REF_HOST_MAX 253 /* DNS name, RFC 1035 */
#define REF_LABEL_MAX 63 /* DNS label, RFC 1035 */
#define DOCKER_HUB "registry-1.docker.io"

/*
 * Character classes by hand rather than <ctype.h>: the grammar is ASCII, and the
 * ctype functions depend on the locale and take int, where a plain char may be
 * negative.
 */
static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || is_digit(c);
}

static bool is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_hex_lower(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f');
}

static char to_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* The n bytes at p as a NUL-terminated malloc'd string, or NULL when out of memory. */
static char *dup_n(const char *p, size_t n)
{
	char *s = malloc(n + 1);

	if (!s)
		return NULL;
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

/* A port: 1 to 5 decimal digits, value 1..65535; the whole of [p, p + n). */
static bool valid_port(const char *p, size_t n)
{
	unsigned long v = 0;
	size_t i;

	if (n == 0 || n > 5)
		return false;
	for (i = 0; i < n; i++) {
		if (!is_digit(p[i]))
			return false;
		v = v * 10 + (unsigned long)(p[i] - '0');
	}
	return v >= 1 && v <= 65535;
}

/* Whether [p, p + n) is an address of family af, by inet_pton (strict: no "127.1", no "01"). */
static bool valid_inet(int af, const char *p, size_t n)
{
	char tmp[INET6_ADDRSTRLEN];
	struct in6_addr a; /* big enough for either family */

	if (n == 0 || n >= sizeof(tmp))
		return false;
	memcpy(tmp, p, n);
	tmp[n] = '\0';
	return inet_pton(af, tmp, &a) == 1;
}

/*
 * A domain name or IPv4 address, [p, p + n). Dotted all-digit names must be real
 * IPv4 addresses, so that "999.1.1.1" or a bare port number is not taken for a host.
 * Labels are docker's: letters, digits and inner hyphens; no underscores.
 */
static bool valid_domain(const char *p, size_t n)
{
	size_t i, label = 0;
	bool numeric = true;

	if (n == 0 || n > REF_HOST_MAX)
		return false;
	for (i = 0; i < n; i++) {
		if (p[i] != '.' && !is_digit(p[i]))
			numeric = false;
	}
	if (numeric)
		return valid_inet(AF_INET, p, n);

	for (i = 0; i <= n; i++) {
		if (i == n || p[i] == '.') {
			/* An empty label also rejects a leading, trailing or doubled dot. */
			if (label == 0 || label > REF_LABEL_MAX || p[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!is_alnum(p[i]) && p[i] != '-')
			return false;
		if (label == 0 && p[i] == '-')
			return false;
		label++;
	}
	return true;
}

bool ref_valid_host(const char *s)
{
	const char *colon, *close;

	if (!s || !*s)
		return false;
	if (*s == '[') {
		/* Brackets are the only unambiguous way to give an IPv6 address a port. */
		close = strchr(s, ']');
		if (!close || !valid_inet(AF_INET6, s + 1, (size_t)(close - s - 1)))
			return false;
		if (close[1] == '\0')
			return true;
		return close[1] == ':' && valid_port(close + 2, strlen(close + 2));
	}
	colon = strchr(s, ':');
	if (!colon)
		return valid_domain(s, strlen(s));
	return valid_domain(s, (size_t)(colon - s)) && valid_port(colon + 1, strlen(colon + 1));
}

/* One component over [p, p + n): [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* */
static bool valid_component_n(const char *p, size_t n)
{
	size_t i = 0, sep;

	if (n == 0 || !is_lower_alnum(p[0]))
		return false;
	while (i < n) {
		while (i < n && is_lower_alnum(p[i]))
			i++;
		if (i == n)
			return true;
		sep = i;
		if (p[i] == '.') {
			i++;
		} else if (p[i] == '_') {
			i++;
			if (i < n && p[i] == '_')
				i++;
		} else if (p[i] == '-') {
			while (i < n && p[i] == '-')
				i++;
		} else {
			return false;
		}
		/* A separator must be followed by an alphanumeric, never end the component. */
		if (i == n || !is_lower_alnum(p[i]) || i == sep)
			return false;
	}
	return true;
}

bool ref_valid_component(const char *s)
{
	return s && valid_component_n(s, strlen(s));
}

bool ref_valid_repo(const char *s)
{
	const char *p, *slash;
	size_t n;

	if (!s)
		return false;
	n = strlen(s);
	if (n == 0 || n > REF_NAME_MAX)
		return false;
	for (p = s;; p = slash + 1) {
		slash = strchr(p, '/');
		if (!slash)
			return valid_component_n(p, strlen(p));
		if (!valid_component_n(p, (size_t)(slash - p)))
			return false;
	}
}

bool ref_valid_tag(const char *s)
{
	size_t i;

	if (!s || !(is_alnum(s[0]) || s[0] == '_'))
		return false;
	for (i = 1; s[i]; i++) {
		if (i >= REF_TAG_MAX)
			return false;
		if (!is_alnum(s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
			return false;
	}
	return true;
}

bool ref_valid_digest(const char *s)
{
	size_t hexlen, i;

	if (!s)
		return false;
	/* Only what a registry can be asked for; the spec's open algorithm set is not. */
	if (strncmp(s, "sha256:", 7) == 0)
		hexlen = 64;
	else if (strncmp(s, "sha512:", 7) == 0)
		hexlen = 128;
	else
		return false;
	for (i = 0; i < hexlen; i++) {
		if (!is_hex_lower(s[7 + i]))
			return false;
	}
	return s[7 + hexlen] == '\0';
}

bool ref_looks_like_host(const char *s)
{
	if (!s)
		return false;
	return strchr(s, '.') || strchr(s, ':') || strcmp(s, "localhost") == 0;
}

bool ref_host_is_loopback(const char *host)
{
	char tmp[INET6_ADDRSTRLEN];
	struct in6_addr a6;
	struct in_addr a4;
	const char *end, *colon;
	size_t n;

	if (!host || !*host)
		return false;
	if (*host == '[') {
		end = strchr(host, ']');
		if (!end || (end[1] && (end[1] != ':' || !valid_port(end + 2, strlen(end + 2)))))
			return false;
		host++;
		n = (size_t)(end - host);
	} else if (strchr(host, ':') != strrchr(host, ':')) {
		/* More than one ':' and no brackets: a bare IPv6 address, no port. */
		n = strlen(host);
	} else {
		colon = strchr(host, ':');
		n = colon ? (size_t)(colon - host) : strlen(host);
		if (colon && !valid_port(colon + 1, strlen(colon + 1)))
			return false;
		if (n == strlen("localhost") && strncasecmp(host, "localhost", n) == 0)
			return true;
	}
	if (n == 0 || n >= sizeof(tmp))
		return false;
	memcpy(tmp, host, n);
	tmp[n] = '\0';
	if (inet_pton(AF_INET, tmp, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, tmp, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return false;
}

const char *ref_canonical_host(const char *host)
{
	if (host &&
		(strcasecmp(host, "docker.io") == 0 || strcasecmp(host, "index.docker.io") == 0))
		return DOCKER_HUB;
	return host;
}

void ref_release(struct ref *r)
{
	if (!r)
		return;
	free(r->host);
	free(r->repo);
	free(r->tag);
	free(r->digest);
	memset(r, 0, sizeof(*r));
}

/*
 * Split the text after the host, "repo[:tag][@digest]", into r. The digest starts
 * at the first '@' (neither names nor tags may hold one); the tag starts at a ':'
 * after the last '/', since a ':' before it could only be a port, which belongs to
 * the host component already split off.
 */
static int parse_name(char *rest, bool docker_hub, struct ref *r)
{
	char *at, *slash, *colon;
	const char *prefix = "";

	at = strchr(rest, '@');
	if (at) {
		*at = '\0';
		if (!ref_valid_digest(at + 1))
			return -EINVAL;
	}
	slash = strrchr(rest, '/');
	colon = strchr(slash ? slash : rest, ':');
	if (colon) {
		*colon = '\0';
		if (!ref_valid_tag(colon + 1))
			return -EINVAL;
	}
	/* docker.io/alpine is docker.io/library/alpine, as docker pull has it. */
	if (docker_hub && !strchr(rest, '/'))
		prefix = "library/";

	r->repo = malloc(strlen(prefix) + strlen(rest) + 1);
	if (!r->repo)
		return -ENOMEM;
	strcpy(r->repo, prefix);
	strcat(r->repo, rest);
	/* Checked after the prefix: the registry sees the prefixed name and its length. */
	if (!ref_valid_repo(r->repo))
		return -EINVAL;
	if (colon && !(r->tag = strdup(colon + 1)))
		return -ENOMEM;
	if (at && !(r->digest = strdup(at + 1)))
		return -ENOMEM;
	return 0;
}

int ref_parse_source(const char *s, struct ref *out)
{
	const char *canon;
	char *copy, *rest;
	size_t n, i;
	int err = -EINVAL;

	if (!out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (!s || !*s)
		return -EINVAL;
	if (strcmp(s, "-") == 0)
		return 0;

	/* One trailing '/' is what shell completion of a path-like SOURCE leaves behind. */
	n = strlen(s);
	if (s[n - 1] == '/')
		n--;
	copy = dup_n(s, n);
	if (!copy)
		return -ENOMEM;

	rest = strchr(copy, '/');
	if (rest)
		*rest++ = '\0';
	if (!ref_valid_host(copy))
		goto out_free;
	/* Host names are case-insensitive; one spelling keeps cache keys and URLs stable. */
	for (i = 0; copy[i]; i++)
		copy[i] = to_lower(copy[i]);
	canon = ref_canonical_host(copy);
	out->host = strdup(canon);
	if (!out->host) {
		err = -ENOMEM;
		goto out_free;
	}
	if (rest) {
		err = parse_name(rest, strcmp(canon, DOCKER_HUB) == 0, out);
		if (err)
			goto out_release;
	}
	free(copy);
	return 0;

out_release:
	ref_release(out);
out_free:
	free(copy);
	return err;
}

char *ref_format(const struct ref *r)
{
	size_t n;
	char *s;

	if (!r)
		return NULL;
	if (!r->host)
		return strdup("-");
	n = strlen(r->host) + 1;
	if (r->repo) {
		n += 1 + strlen(r->repo);
		if (r->tag)
			n += 1 + strlen(r->tag);
		if (r->digest)
			n += 1 + strlen(r->digest);
	}
	s = malloc(n);
	if (!s)
		return NULL;
	strcpy(s, r->host);
	/* A tag or digest without a repository means nothing, so it is not written. */
	if (r->repo) {
		strcat(s, "/");
		strcat(s, r->repo);
		if (r->tag) {
			strcat(s, ":");
			strcat(s, r->tag);
		}
		if (r->digest) {
			strcat(s, "@");
			strcat(s, r->digest);
		}
	}
	return s;
}

/*
 * References and names of the OCI distribution spec, and the SOURCE argument
 * of a mount. Pure string handling: no I/O.
 *
 * Grammar (distribution spec, docker/reference):
 *   name       := [host[:port]/]component(/component)*, at most 255 characters
 *   component  := [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
 *   tag        := [A-Za-z0-9_][A-Za-z0-9._-]{0,127}
 *   digest     := sha256:[a-f0-9]{64} (sha512:[a-f0-9]{128} also accepted)
 *   host       := domain or IPv4 or [IPv6], optional :port (1..65535)
 */
#ifndef OCIFS_REF_H
#define OCIFS_REF_H

#include <stdbool.h>

struct ref {
	char *host; /* the host to connect to ("registry-1.docker.io", "127.0.0.1:5000");
	                 NULL for the "-" SOURCE */
	char *repo; /* repository name, NULL when the SOURCE is a registry */
	char *tag; /* NULL unless the reference has :tag */
	char *digest; /* NULL unless the reference has @sha256:... */
};

/*
 * Parse a mount SOURCE: "-", "HOST[:PORT]", "HOST[:PORT]/REPO",
 * "HOST[:PORT]/REPO:TAG", "HOST[:PORT]/REPO@DIGEST" (and REPO:TAG@DIGEST, where
 * the digest wins and the tag is kept). The first component is always the host.
 * docker.io (and index.docker.io) becomes registry-1.docker.io, and a one-component
 * Docker Hub repository gets "library/". Returns 0, or -EINVAL (or -ENOMEM) with
 * *out zeroed. The caller frees *out with ref_release().
 *
 * The host is stored lowercased (host names are case-insensitive), then canonical.
 * One trailing '/' is ignored ("host/" is "host"); any other empty component is
 * -EINVAL. The digest starts at the first '@'; a ':' after the last '/' starts the
 * tag. The 255-character limit applies to the repository (after "library/"), not
 * the host. registry-1.docker.io/alpine also gets "library/".
 */
int ref_parse_source(const char *s, struct ref *out);

/* Free the strings of r and zero it; r itself is the caller's. */
void ref_release(struct ref *r);

/*
 * Hosts: DNS labels ([A-Za-z0-9-], no leading or trailing '-', <= 63 each, <= 253 in
 * all), a dotted IPv4 address (an all-digit dotted name must be one: no "999.1.1.1",
 * no "5000"), or a bracketed IPv6 address; each with an optional :port, 1..65535.
 * A bare IPv6 address without brackets is not a valid host (its port is ambiguous).
 */
bool ref_valid_host(const char *s); /* "host", "host:port", "[::1]:5000" */
bool ref_valid_component(const char *s); /* one path component of a repository name */
bool ref_valid_repo(const char *s); /* component(/component)*, <= 255 chars */
bool ref_valid_tag(const char *s);
bool ref_valid_digest(const char *s);

/*
 * Whether a first path component names a registry host rather than a Docker Hub
 * namespace, by docker's rule: it contains '.' or ':', or is "localhost".
 */
bool ref_looks_like_host(const char *s);

/*
 * Whether host (with or without :port) is loopback: localhost (any case), 127.0.0.0/8,
 * ::1 bare or bracketed. A malformed port makes it false.
 */
bool ref_host_is_loopback(const char *host);

/*
 * The host to connect to for a host as written: docker.io and index.docker.io
 * give "registry-1.docker.io"; anything else is returned as is. Borrowed result.
 */
const char *ref_canonical_host(const char *host);

/*
 * "host/repo:tag", "host/repo@digest", "host/repo:tag@digest", "host/repo", "host",
 * "-" (NULL host): malloc'd, the caller frees it; NULL when out of memory or r is
 * NULL. A tag or digest without a repository is not written.
 */
char *ref_format(const struct ref *r);

#endif

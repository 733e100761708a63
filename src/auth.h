/*
 * Registry authentication: WWW-Authenticate challenges, credentials from the
 * files and helpers docker, podman and oras use, and bearer tokens cached
 * per scope. Nothing here ever logs a secret.
 */
#ifndef OCIFS_AUTH_H
#define OCIFS_AUTH_H

#include <stdbool.h>
#include <time.h>

struct http;

struct credentials {
	char *username;
	char *password;
	char *identity_token; /* an OAuth2 refresh token ("identitytoken") */
};

void credentials_release(struct credentials *c);

struct challenge {
	char *scheme; /* "basic" or "bearer", lowercased */
	char *realm;
	char *service;
	char *scope;
};

/* Parse a WWW-Authenticate value. 0, or -EINVAL when it has no scheme. Release with challenge_release(). */
int auth_parse_challenge(const char *value, struct challenge *out);
void challenge_release(struct challenge *c);

/*
 * How long a credential helper (docker-credential-NAME get) has to answer:
 * then it is killed with its process group, the log says it timed out
 * (naming the helper and the host), and the lookup goes on without
 * credentials, as anonymous. A helper that timed out for a host is not run
 * for that host again by this process.
 */
#define AUTH_HELPER_TIMEOUT_MS 10000

/* Set that time (0: the default). Call before any thread starts (-o helper_timeout=). */
void auth_set_helper_timeout(unsigned ms);

/*
 * The shortest lifetime a token is given, whatever its expires_in says: the
 * token spec's floor, 60 s. A token is renewed 10 s before it runs out, or
 * at half its lifetime when that is under 20 s. Set (0: the default) before
 * any thread starts (-o token_min_ttl=).
 */
#define AUTH_TOKEN_MIN_TTL 60
void auth_set_token_min_ttl(unsigned secs);

/*
 * Credentials for repo (or the host as a whole when repo is NULL) at host from
 * one credentials file's JSON text (docker config.json or containers
 * auth.json): credHelpers[host], then credsStore, then auths (each tried when
 * the one before has nothing). auths keys are "host", "host/namespace" (the
 * most specific one naming repo wins), or URL forms ("https://host/",
 * "http://host/v1/") that name the host alone; Docker Hub's
 * "https://index.docker.io/v1/" names registry-1.docker.io. A helper is run as
 * docker-credential-NAME get, for AUTH_HELPER_TIMEOUT_MS at most; it can be
 * slow, so call this holding no lock that other requests need. 0 with *out
 * filled, -ENOENT when the file has nothing for host, -EBADMSG when it is not
 * valid, -ETIMEDOUT when a helper did not answer in time.
 */
int auth_credentials_from_json(
	const char *json, const char *host, const char *repo, struct credentials *out);

/*
 * Credentials for repo (or NULL) at host, first hit wins: auth_file (when not
 * NULL), $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
 * ~/.config/containers/auth.json, $DOCKER_CONFIG/config.json,
 * ~/.docker/config.json. 0, -ENOENT, or -ETIMEDOUT when a helper did not
 * answer in time (the files after it are not tried). Runs credential
 * helpers: hold no lock that other requests need.
 */
int auth_find_credentials(
	const char *auth_file, const char *host, const char *repo, struct credentials *out);

/* "Basic base64(user:pass)" for an Authorization header, malloc'd, or NULL. */
char *auth_basic_header(const struct credentials *c);

/*
 * Get a bearer token for scope from a Bearer challenge's realm: GET with
 * Basic credentials (or anonymous), or the OAuth2 POST with an identity
 * token. *token is malloc'd; *expires is when to stop using it. 0, -EACCES
 * when the token server refuses, or -errno.
 */
int auth_fetch_token(struct http *h, const struct challenge *ch, const char *scope,
	const struct credentials *cred, char **token, time_t *expires);

#endif

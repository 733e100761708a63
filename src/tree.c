#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "buf.h"
#include "cache.h"
#include "digest.h"
#include "layer.h"
#include "log.h"
#include "manifest.h"
#include "model.h"
#include "registry.h"
#include "tree.h"
#include "tree-int.h"

/* Titles and platforms nest; a bound keeps a hostile manifest from nesting forever. */
#define MAX_DEPTH 64

static size_t kind_size(enum node_kind kind)
{
	switch (kind) {
	case NODE_HOSTS:
	case NODE_NS:
		return sizeof(struct ns_node);
	case NODE_ARTIFACT:
	case NODE_REFERRERS:
		return sizeof(struct art_node);
	case NODE_DIR:
		return sizeof(struct dir_node);
	case NODE_LSTORE:
		return sizeof(struct lstore_node);
	default:
		return sizeof(struct file_node);
	}
}

struct node *tree_node_new(
	struct tree *t, struct node *parent, const char *name, enum node_kind kind)
{
	struct node *n =
		node_new(&t->nodes, parent, name, kind, t->opts.kind_ops[kind], kind_size(kind));
	struct reg_node *r;

	if (!n)
		return NULL;
	r = reg_of(n);
	r->mtime = t->start;
	if (parent && parent->kind < NODE_RDIR) {
		r->site = reg_of(parent)->site;
		r->immutable = reg_of(parent)->immutable;
	}
	if (kind == NODE_NS || kind == NODE_HOSTS) {
		pthread_mutex_init(&ns_of(n)->load_lock, NULL);
		/* what a namespace shows is looked up again once forgotten */
		n->remakes = true;
	} else if (kind == NODE_ARTIFACT || kind == NODE_REFERRERS) {
		pthread_mutex_init(&art_of_node(n)->load_lock, NULL);
	} else if (kind != NODE_DIR && kind != NODE_LSTORE) {
		file_of(n)->size = -1;
	}
	return n;
}

/* What art_node.rootfs_prefixes holds, freed. */
static void prefixes_free(char **v, size_t n)
{
	size_t i;

	for (i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

void tree_node_release(struct tree *t, struct node *n)
{
	struct reg_node *r = reg_of(n);

	free(r->repo);
	tree_xattrs_free(r->xattrs, r->n_xattrs);
	switch (n->kind) {
	case NODE_HOSTS:
	case NODE_NS:
		strlist_release(&ns_of(n)->tags);
		pthread_mutex_destroy(&ns_of(n)->load_lock);
		break;
	case NODE_ARTIFACT:
	case NODE_REFERRERS: {
		struct art_node *a = art_of_node(n);

		if (a->rootfs)
			rootfs_unref(t, a->rootfs);
		free(a->ref);
		free(a->digest);
		free(a->rootfs_digest);
		prefixes_free(a->rootfs_prefixes, a->n_rootfs_prefixes);
		pthread_mutex_destroy(&a->load_lock);
		break;
	}
	case NODE_DIR: {
		struct dir_node *d = dir_of(n);

		if (d->rootfs)
			rootfs_unref(t, d->rootfs);
		free(d->packed_digest);
		free(d->packed_type);
		free(d->packed_path);
		break;
	}
	case NODE_LSTORE:
		break;
	default:
		free(file_of(n)->digest);
		free(file_of(n)->data);
		break;
	}
}

bool tree_read_only(const struct tree *t)
{
	return t->opts.read_only;
}

static int xattrs_add_annotations(
	struct xattr **x, size_t *n, const struct annotation *a, size_t na)
{
	char name[512];
	size_t i;
	int ret;

	for (i = 0; i < na; i++) {
		if (snprintf(name, sizeof(name), "user.oci.annotation.%s", a[i].key) >=
			(int)sizeof(name))
			continue;
		ret = tree_xattr_add(x, n, name, a[i].value);
		if (ret)
			return ret;
	}
	return 0;
}

/* ---- sites ---- */

int tree_site_get(struct tree *t, const char *host, struct site **out)
{
	struct registry_options ro = { t->opts.plain_http, t->opts.page_size, t->opts.auth_file,
		t->opts.retry_secs, t->opts.retry_delay_ms };
	const char *canon = ref_canonical_host(host);
	struct site *s;
	int ret;

	pthread_mutex_lock(&t->nodes.lock);
	for (s = t->sites; s; s = s->next)
		if (strcmp(registry_host(s->reg), canon) == 0)
			break;
	pthread_mutex_unlock(&t->nodes.lock);
	if (s) {
		*out = s;
		return 0;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	ret = registry_new(t->http, canon, &ro, &s->reg);
	if (ret == 0 && t->opts.mirrors && t->opts.mirror_host &&
		strcmp(canon, ref_canonical_host(t->opts.mirror_host)) == 0) {
		const char *const *m;

		for (m = t->opts.mirrors; *m && ret == 0; m++)
			ret = registry_add_mirror(s->reg, *m);
		if (ret)
			registry_free(s->reg);
	}
	if (ret) {
		free(s);
		return ret;
	}
	s->docker_hub = strcmp(canon, "registry-1.docker.io") == 0;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->seen_lock, NULL);
	pthread_mutex_lock(&t->nodes.lock);
	s->next = t->sites;
	t->sites = s;
	pthread_mutex_unlock(&t->nodes.lock);
	*out = s;
	return 0;
}

/* A catalog that the registry refuses or lacks, rather than one that failed to come. */
static bool catalog_unavailable(int err)
{
	return err == -EACCES || err == -ENOENT || err == -EOPNOTSUPP;
}

static bool expired(time_t at, unsigned ttl)
{
	return at == 0 || time(NULL) - at >= (time_t)ttl;
}

/*
 * The catalog of s, fetched or reused within list_ttl; with the registry
 * unreachable, the last one that came. Returns 0 with the site's lock held
 * (the caller reads s->catalog, then unlocks), or -errno without it: a
 * registry that forbids or lacks _catalog is not an error here.
 */
static int site_catalog_lock(struct tree *t, struct site *s)
{
	struct strlist fresh = { NULL, 0 };
	int ret;

	pthread_mutex_lock(&s->lock);
	if (!expired(__atomic_load_n(&s->catalog_at, __ATOMIC_RELAXED), t->opts.list_ttl)) {
		if (s->catalog_err) {
			ret = s->catalog_err;
			pthread_mutex_unlock(&s->lock);
			return ret;
		}
		return 0;
	}
	ret = registry_catalog(s->reg, &fresh);
	if (catalog_unavailable(ret)) {
		if (!__atomic_load_n(&s->catalog_at, __ATOMIC_RELAXED))
			log_info("%s: catalog not available (%s); repositories can still be "
				 "looked up by name",
				registry_host(s->reg), strerror(-ret));
	} else if (ret) {
		strlist_release(&fresh);
		/* Offline: the last catalog, as a tag keeps its last resolution. */
		if (s->catalog.n && !s->catalog_err) {
			__atomic_store_n(&s->catalog_at, time(NULL), __ATOMIC_RELAXED);
			return 0;
		}
		/* Transient: keep nothing, try again next time. */
		pthread_mutex_unlock(&s->lock);
		return ret;
	}
	strlist_release(&s->catalog);
	s->catalog = fresh;
	s->catalog_err = ret;
	__atomic_store_n(&s->catalog_at, time(NULL), __ATOMIC_RELAXED);
	if (ret) {
		pthread_mutex_unlock(&s->lock);
		return ret;
	}
	return 0;
}

/*
 * Whether the catalog (locked) has a repository at or below path/name.
 */
static bool catalog_has_prefix(const struct strlist *cat, const char *path, const char *name)
{
	size_t pl = strlen(path), nl = strlen(name), i;

	for (i = 0; i < cat->n; i++) {
		const char *r = cat->v[i];

		if (pl) {
			if (strncmp(r, path, pl) != 0 || r[pl] != '/')
				continue;
			r += pl + 1;
		}
		if (strncmp(r, name, nl) == 0 && (r[nl] == '\0' || r[nl] == '/'))
			return true;
	}
	return false;
}

/* ---- namespaces ---- */

char *tree_join_path(const char *path, const char *name)
{
	struct buf b = BUF_INIT;

	if (buf_printf(&b, "%s%s%s", path, *path ? "/" : "", name)) {
		buf_release(&b);
		return NULL;
	}
	return buf_take(&b);
}

/* The tags of an NS node's repository, fetched or reused within list_ttl. Caller holds load_lock. */
int tree_ns_tags(struct tree *t, struct node *ns)
{
	int ret;

	if (!*reg_of(ns)->repo)
		return -ENOENT;
	if (!expired(__atomic_load_n(&ns_of(ns)->tags_at, __ATOMIC_RELAXED), t->opts.list_ttl))
		return ns_of(ns)->tags_err;
	strlist_release(&ns_of(ns)->tags);
	ret = registry_tags(reg_of(ns)->site->reg, reg_of(ns)->repo, &ns_of(ns)->tags);
	/* A namespace that is not itself a repository has no tags: not an error. */
	if (ret == -ENOENT || ret == -EACCES)
		ret = -ENOENT;
	else if (ret)
		return ret;
	ns_of(ns)->tags_err = ret;
	__atomic_store_n(&ns_of(ns)->tags_at, time(NULL), __ATOMIC_RELAXED);
	return ret;
}

bool tree_strlist_has(const struct strlist *l, const char *s)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (strcmp(l->v[i], s) == 0)
			return true;
	return false;
}

struct node *tree_ns_new(
	struct tree *t, struct node *parent, const char *name, struct site *site, const char *path)
{
	struct node *n = tree_node_new(t, parent, name, NODE_NS);
	struct buf b = BUF_INIT;

	if (!n)
		return NULL;
	reg_of(n)->site = site;
	/* Docker Hub's one-component names live under library/, as docker has it. */
	if (site->docker_hub && *path && !strchr(path, '/') && !buf_addstr(&b, "library/") &&
		!buf_addstr(&b, path))
		reg_of(n)->repo = buf_take(&b);
	else
		reg_of(n)->repo = strdup(path);
	buf_release(&b);
	return reg_of(n)->repo ? n : NULL;
}

struct node *tree_artifact_new(struct tree *t, struct node *parent, const char *name,
	struct site *site, const char *repo, const char *ref)
{
	struct node *n = tree_node_new(t, parent, name, NODE_ARTIFACT);

	if (!n)
		return NULL;
	reg_of(n)->site = site;
	art_of_node(n)->by_digest = ref_valid_digest(ref);
	reg_of(n)->immutable = art_of_node(n)->by_digest;
	reg_of(n)->repo = strdup(repo);
	art_of_node(n)->ref = strdup(ref);
	return reg_of(n)->repo && art_of_node(n)->ref ? n : NULL;
}

/* ---- the last resolution of tags ---- */

/* Where repo:tag's last resolution is (*slot NULL if none). Caller holds s->seen_lock. */
static struct tag_seen **tag_seen_slot(struct site *s, const char *repo, const char *tag)
{
	size_t rl = strlen(repo);
	uint32_t h = 2166136261u; /* FNV-1a of "repo:tag" */
	struct tag_seen **pp;
	const char *p;

	for (p = repo; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	h = (h ^ ':') * 16777619u;
	for (p = tag; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	for (pp = &s->seen[h % TAG_SEEN_BUCKETS]; *pp; pp = &(*pp)->next)
		if (strncmp((*pp)->key, repo, rl) == 0 && (*pp)->key[rl] == ':' &&
			strcmp((*pp)->key + rl + 1, tag) == 0)
			break;
	return pp;
}

/* repo:tag resolved to digest. Out of memory, it is not kept. */
static void tag_seen_set(struct site *s, const char *repo, const char *tag, const char *digest)
{
	struct tag_seen **pp, *ts;
	char *d = strdup(digest);

	if (!d)
		return;
	pthread_mutex_lock(&s->seen_lock);
	pp = tag_seen_slot(s, repo, tag);
	if (*pp) {
		free((*pp)->digest);
		(*pp)->digest = d;
	} else if ((ts = malloc(sizeof(*ts) + strlen(repo) + strlen(tag) + 2))) {
		sprintf(ts->key, "%s:%s", repo, tag);
		ts->digest = d;
		ts->next = NULL;
		*pp = ts;
	} else {
		free(d);
	}
	pthread_mutex_unlock(&s->seen_lock);
}

/* What repo:tag resolved to last (malloc'd), or NULL. */
static char *tag_seen_get(struct site *s, const char *repo, const char *tag)
{
	struct tag_seen **pp;
	char *d;

	pthread_mutex_lock(&s->seen_lock);
	pp = tag_seen_slot(s, repo, tag);
	d = *pp ? strdup((*pp)->digest) : NULL;
	pthread_mutex_unlock(&s->seen_lock);
	return d;
}

void tree_tag_forget(struct site *s, const char *repo, const char *tag)
{
	struct tag_seen **pp, *ts;

	pthread_mutex_lock(&s->seen_lock);
	pp = tag_seen_slot(s, repo, tag);
	ts = *pp;
	if (ts)
		*pp = ts->next;
	pthread_mutex_unlock(&s->seen_lock);
	if (ts) {
		free(ts->digest);
		free(ts);
	}
}

static int artifact_load(struct tree *t, struct node *n);

/* Make an artifact child of dir that must exist (it is loaded to find out). */
static int ns_lookup_artifact(struct tree *t, struct node *dir, const char *name, const char *repo,
	const char *ref, struct node **out)
{
	struct node *n;
	bool fresh = false;
	int ret;

	pthread_mutex_lock(&t->nodes.lock);
	n = node_child_find(dir, name);
	pthread_mutex_unlock(&t->nodes.lock);
	if (!n) {
		n = tree_artifact_new(t, dir, name, reg_of(dir)->site, repo, ref);
		if (!n)
			return -ENOMEM;
		fresh = true;
	}
	ret = artifact_load(t, n);
	if (ret) {
		/* a fresh node no one else has seen: not there, so gone now */
		if (fresh)
			node_discard(&t->nodes, n);
		return ret;
	}
	*out = node_child_get_or_add(&t->nodes, dir, n);
	return *out ? 0 : -ENOMEM;
}

/* Whether repo is a repository the registry lets us list: 0, or -errno. */
static int repo_answers(struct site *s, const char *repo)
{
	struct strlist tags = { NULL, 0 };
	int ret = registry_tags(s->reg, repo, &tags);

	strlist_release(&tags);
	return ret;
}

static int ns_lookup(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	const char *at = strchr(name, '@'), *colon = strchr(name, ':');
	char *repo = NULL, *leaf = NULL;
	struct node *n;
	bool in_catalog = false, have_catalog = false, guessed = false, dir_is_repo = false;
	int ret, cat_ret;

	if (name[0] == '.')
		return -ENOENT;
	/* <repo>/sha256:<hex>: the manifest with that digest */
	if (*reg_of(dir)->repo && ref_valid_digest(name))
		return ns_lookup_artifact(t, dir, name, reg_of(dir)->repo, name, out);
	/* <parent>/<leaf>@<digest> and <parent>/<leaf>:<tag> aliases */
	if (at || colon) {
		const char *sep = at ? at : colon;

		leaf = strndup(name, (size_t)(sep - name));
		if (!leaf)
			return -ENOMEM;
		if (!ref_valid_component(leaf) ||
			(at ? !ref_valid_digest(at + 1) : !ref_valid_tag(colon + 1))) {
			ret = -ENOENT;
			goto out;
		}
		repo = tree_join_path(reg_of(dir)->repo, leaf);
		if (!repo) {
			ret = -ENOMEM;
			goto out;
		}
		/* leaf:tag made here (mkdir) and not pushed yet */
		pthread_mutex_lock(&t->nodes.lock);
		n = node_child_find(dir, leaf);
		n = n && !at ? node_child_find(n, colon + 1) : NULL;
		pthread_mutex_unlock(&t->nodes.lock);
		if (n && (reg_of(n)->local || node_draft(n))) {
			*out = n;
			ret = 0;
			goto out;
		}
		ret = ref_valid_repo(repo) ? ns_lookup_artifact(t, dir, name, repo, sep + 1, out)
					   : -ENOENT;
		goto out;
	}

	pthread_mutex_lock(&t->nodes.lock);
	n = node_child_find(dir, name);
	pthread_mutex_unlock(&t->nodes.lock);
	if (n && (n->kind == NODE_NS || reg_of(n)->local || node_draft(n))) {
		*out = n;
		return 0;
	}

	/* A child repository (or namespace) wins over a tag of the same name. */
	if (ref_valid_component(name)) {
		repo = tree_join_path(reg_of(dir)->repo, name);
		if (!repo)
			return -ENOMEM;
		cat_ret = ref_valid_repo(repo) ? site_catalog_lock(t, reg_of(dir)->site) : -ENOENT;
		if (cat_ret == 0) {
			have_catalog = true;
			in_catalog = catalog_has_prefix(
				&reg_of(dir)->site->catalog, reg_of(dir)->repo, name);
			pthread_mutex_unlock(&reg_of(dir)->site->lock);
		} else if (!catalog_unavailable(cat_ret) && !n) {
			/* The registry is failing: say so rather than guess a namespace. */
			ret = -EIO;
			goto out;
		}
		if (in_catalog)
			goto make_ns;
	}
	if (n && n->kind == NODE_ARTIFACT) {
		*out = n;
		ret = 0;
		goto out;
	}
	if (*reg_of(dir)->repo && ref_valid_tag(name)) {
		bool listed;

		pthread_mutex_lock(load_lock_of(dir));
		ret = tree_ns_tags(t, dir);
		dir_is_repo = ret == 0;
		listed = ret == 0 && tree_strlist_has(&ns_of(dir)->tags, name);
		pthread_mutex_unlock(load_lock_of(dir));
		if (listed) {
			n = tree_artifact_new(
				t, dir, name, reg_of(dir)->site, reg_of(dir)->repo, name);
			*out = n ? node_child_get_or_add(&t->nodes, dir, n) : NULL;
			ret = *out ? 0 : -ENOMEM;
			goto out;
		}
		/* Not (yet) listed: a tag pushed since the listing, or no tag at all. */
		ret = ns_lookup_artifact(t, dir, name, reg_of(dir)->repo, name, out);
		/*
		 * A token registry refuses what it will not say exists: without a
		 * catalog, a refused tag may be a child repository one can read.
		 */
		if (ret == -EACCES && !have_catalog && repo && ref_valid_repo(repo)) {
			if (repo_answers(reg_of(dir)->site, repo) == 0)
				goto make_ns;
			goto out;
		}
		if (ret != -ENOENT)
			goto out;
	}
	if (!repo || !ref_valid_repo(repo)) {
		ret = -ENOENT;
		goto out;
	}
	/*
	 * Not in the catalog: a repository it does not list, if it has tags. Below
	 * a repository nothing is guessed either: a name there is a tag, or one to
	 * be made (mkdir), unless it answers as a repository.
	 */
	if (have_catalog || dir_is_repo) {
		ret = repo_answers(reg_of(dir)->site, repo);
		if (ret)
			goto out;
	}
	/* Without a catalog any valid name may be a namespace: show it (empty if so). */
	guessed = !have_catalog;
make_ns:
	n = tree_ns_new(t, dir, name, reg_of(dir)->site, repo);
	if (n)
		ns_of(n)->guessed = guessed;
	*out = n ? node_child_get_or_add(&t->nodes, dir, n) : NULL;
	ret = *out ? 0 : -ENOMEM;
out:
	free(repo);
	free(leaf);
	return ret;
}

/* "sha256-<64 hex>": a fallback referrers tag, as oras repo tags --exclude-digest-tags sees it. */
static bool is_referrers_tag(const char *tag)
{
	size_t i;

	if (strncmp(tag, "sha256-", 7) != 0 || strlen(tag) != 7 + 64)
		return false;
	for (i = 7; tag[i]; i++)
		if (!((tag[i] >= '0' && tag[i] <= '9') || (tag[i] >= 'a' && tag[i] <= 'f')))
			return false;
	return true;
}

static int ns_list(struct tree *t, struct node *dir, struct tree_dirent **ents, size_t *count)
{
	struct strlist names = { NULL, 0 };
	size_t ncomp, i, j;
	struct tree_dirent *v = NULL;
	int ret;

	/* Repository components below this path, from the catalog. */
	ret = site_catalog_lock(t, reg_of(dir)->site);
	if (ret == 0) {
		size_t pl = strlen(reg_of(dir)->repo);

		for (i = 0; i < reg_of(dir)->site->catalog.n && !ret; i++) {
			const char *r = reg_of(dir)->site->catalog.v[i];
			char *comp;

			if (pl) {
				if (strncmp(r, reg_of(dir)->repo, pl) != 0 || r[pl] != '/')
					continue;
				r += pl + 1;
			}
			comp = strndup(r, strcspn(r, "/"));
			if (!comp) {
				ret = -ENOMEM;
				break;
			}
			if (!tree_strlist_has(&names, comp))
				ret = strlist_add(&names, comp);
			free(comp);
		}
		pthread_mutex_unlock(&reg_of(dir)->site->lock);
	} else if (catalog_unavailable(ret)) {
		ret = 0;
	}
	if (ret)
		goto out;
	ncomp = names.n;
	if (*reg_of(dir)->repo) {
		pthread_mutex_lock(load_lock_of(dir));
		ret = tree_ns_tags(t, dir);
		for (i = 0; ret == 0 && i < ns_of(dir)->tags.n; i++) {
			const char *tag = ns_of(dir)->tags.v[i];

			/* A tag shadowed by a child repository stays reachable as leaf:tag. */
			if (!ref_valid_tag(tag) || tree_strlist_has(&names, tag))
				continue;
			/* Fallback referrers indexes are listed under .oci/referrers/ instead. */
			if (!t->opts.show_referrer_tags && is_referrers_tag(tag))
				continue;
			ret = strlist_add(&names, tag);
		}
		pthread_mutex_unlock(load_lock_of(dir));
		if (ret == -ENOENT)
			ret = 0;
		if (ret)
			goto out;
	}
	v = calloc(names.n + 1, sizeof(*v));
	if (!v) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0, j = 0; i < names.n; i++) {
		struct node *n;

		if (i < ncomp) {
			char *path = tree_join_path(reg_of(dir)->repo, names.v[i]);

			n = path ? tree_ns_new(t, dir, names.v[i], reg_of(dir)->site, path) : NULL;
			free(path);
		} else {
			n = tree_artifact_new(t, dir, names.v[i], reg_of(dir)->site,
				reg_of(dir)->repo, names.v[i]);
		}
		n = n ? node_child_get_or_add(&t->nodes, dir, n) : NULL;
		if (!n) {
			ret = -ENOMEM;
			break;
		}
		v[j].name = names.v[i];
		names.v[i] = NULL;
		v[j].ino = (uintptr_t)n;
		v[j].type = S_IFDIR;
		j++;
	}
	/* Repositories and tags made here, not in the registry yet. */
	pthread_mutex_lock(&t->nodes.lock);
	for (i = 0; !ret && i < dir->n_children; i++) {
		struct node *c = dir->children[i];
		struct tree_dirent *nv;
		size_t k;

		if (!reg_of(c)->local)
			continue;
		for (k = 0; k < j && strcmp(v[k].name, c->name) != 0; k++)
			;
		if (k < j)
			continue;
		nv = realloc(v, (j + 2) * sizeof(*v));
		if (!nv || !(nv[j].name = strdup(c->name))) {
			v = nv ? nv : v;
			ret = -ENOMEM;
			break;
		}
		v = nv;
		v[j].ino = (uintptr_t)c;
		v[j].type = S_IFDIR;
		j++;
	}
	pthread_mutex_unlock(&t->nodes.lock);
	if (ret) {
		tree_dirents_free(v, j);
		goto out;
	}
	*ents = v;
	*count = j;
out:
	for (i = 0; i < names.n; i++)
		free(names.v[i]);
	free(names.v);
	return ret;
}

/* ---- the "-" root ---- */

static int hosts_lookup(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	struct site *s;
	struct node *n;
	int ret;

	if (!ref_valid_host(name) || !ref_looks_like_host(name))
		return -ENOENT;
	pthread_mutex_lock(&t->nodes.lock);
	n = node_child_find(dir, name);
	pthread_mutex_unlock(&t->nodes.lock);
	if (n) {
		*out = n;
		return 0;
	}
	ret = tree_site_get(t, name, &s);
	if (ret)
		return ret;
	ret = registry_ping(s->reg);
	if (ret)
		return ret == -EHOSTUNREACH ? -ENOENT : ret;
	n = tree_ns_new(t, dir, name, s, "");
	*out = n ? node_child_get_or_add(&t->nodes, dir, n) : NULL;
	return *out ? 0 : -ENOMEM;
}

/* ---- artifacts ---- */

int tree_manifest_get(struct tree *t, struct site *s, const char *repo, const char *digest,
	char **body, size_t *len)
{
	char *ct = NULL, *got = NULL;
	int ret;

	if (cache_get(t->cache, digest, MANIFEST_MAX_SIZE, body, len) == 0)
		return 0;
	ret = registry_get_manifest(s->reg, repo, digest, body, len, &ct, &got);
	if (ret)
		return ret;
	cache_put(t->cache, got, *body, *len);
	free(ct);
	free(got);
	return 0;
}

/* Everything an artifact directory shows, built before it is swapped in. */
struct build {
	struct tree *t;
	struct node *art;
	const char *repo;
	const char *label; /* "host/repo@digest" for log lines */
};

static struct node *build_node(
	struct build *b, struct node *parent, const char *name, enum node_kind kind)
{
	struct node *n = tree_node_new(b->t, parent, name, kind);

	if (!n)
		return NULL;
	reg_of(n)->immutable = art_of_node(b->art)->by_digest;
	if (!reg_of(n)->repo)
		reg_of(n)->repo = strdup(b->repo);
	if (!reg_of(n)->repo || node_child_add(parent, n)) {
		return NULL;
	}
	return n;
}

static int set_blob(struct node *n, const struct descriptor *d, time_t mtime)
{
	int ret;

	/* a packed directory keeps its layer's as its own (build_title) */
	if (n->kind != NODE_DIR) {
		file_of(n)->digest = strdup(d->digest);
		if (!file_of(n)->digest)
			return -ENOMEM;
		file_of(n)->size = d->size;
	}
	reg_of(n)->mtime = mtime;
	ret = tree_xattr_add(
		&reg_of(n)->xattrs, &reg_of(n)->n_xattrs, "user.oci.digest", d->digest);
	if (!ret)
		ret = tree_xattr_add(&reg_of(n)->xattrs, &reg_of(n)->n_xattrs, "user.oci.mediaType",
			d->media_type);
	if (!ret)
		ret = xattrs_add_annotations(
			&reg_of(n)->xattrs, &reg_of(n)->n_xattrs, d->annotations, d->n_annotations);
	return ret;
}

static struct node *build_data(
	struct build *b, struct node *parent, const char *name, const char *data, size_t len)
{
	struct node *n = build_node(b, parent, name, NODE_DATA);

	if (!n)
		return NULL;
	file_of(n)->data = malloc(len + 1);
	if (!file_of(n)->data)
		return NULL;
	memcpy(file_of(n)->data, data, len);
	file_of(n)->data[len] = '\0';
	file_of(n)->data_len = len;
	file_of(n)->size = (int64_t)len;
	return n;
}

/*
 * The file of layer d at path (checked) below root, mode its permission
 * bits (0: the mount's); a path with '/' makes directories. An oras packed
 * directory with unpack.
 */
static int build_at(struct build *b, struct node *root, const struct descriptor *d,
	const char *title, time_t mtime, mode_t mode, bool unpack)
{
	const char *content = annotation_get(d->annotations, d->n_annotations, ANN_CONTENT_DIGEST);
	char esc[600];
	char *copy, *comp, *slash;
	struct node *dir = root, *n;
	int ret = 0;

	copy = strdup(title);
	if (!copy)
		return -ENOMEM;
	for (comp = copy;; comp = slash + 1) {
		slash = strchr(comp, '/');
		if (slash)
			*slash = '\0';
		n = node_child_find(dir, comp);
		if (!slash && unpack) {
			/* a directory oras packed: its tree, on the first look inside */
			if (n)
				goto clash;
			n = build_node(b, dir, comp, NODE_DIR);
			if (!n || set_blob(n, d, mtime) ||
				!(dir_of(n)->packed_type = strdup(d->media_type)) ||
				!(dir_of(n)->packed_digest = strdup(d->digest)) ||
				!(dir_of(n)->packed_path = strdup(content ? content : ""))) {
				ret = -ENOMEM;
				break;
			}
			dir_of(n)->packed_size = d->size;
			n->partial = true;
			break;
		}
		if (!slash) {
			if (n)
				goto clash;
			n = build_node(b, dir, comp, NODE_BLOB);
			ret = n ? set_blob(n, d, mtime) : -ENOMEM;
			if (n)
				file_of(n)->mode = mode;
			break;
		}
		if (n && n->kind != NODE_DIR)
			goto clash;
		if (!n) {
			n = build_node(b, dir, comp, NODE_DIR);
			if (!n) {
				ret = -ENOMEM;
				break;
			}
			reg_of(n)->mtime = mtime;
		}
		dir = n;
	}
	free(copy);
	return ret;

clash:
	log_escape(title, esc, sizeof(esc));
	log_warn("%s: layer %s title \"%s\" clashes with an earlier layer: not shown", b->label,
		d->digest, esc);
	free(copy);
	return 0;
}

/* One file per titled layer, as oras pull writes them. */
static int build_title(struct build *b, struct node *root, const struct descriptor *d,
	const char *title, time_t mtime)
{
	const char *un = annotation_get(d->annotations, d->n_annotations, ANN_UNPACK);
	char esc[600];

	if (manifest_title_check(title)) {
		log_escape(title, esc, sizeof(esc));
		log_warn("%s: layer %s has unsafe title \"%s\": not shown", b->label, d->digest,
			esc);
		return 0;
	}
	return build_at(b, root, d, title, mtime, 0,
		un && strcmp(un, "true") == 0 && layer_media_type_ok(d->media_type));
}

/* Where a model's archives are unpacked (model_place.prefix), taken from p into a. 0 or -ENOMEM. */
static int prefixes_take(struct art_node *a, struct model_place *p, size_t n)
{
	size_t i;

	for (i = 0; i < n && !p[i].prefix; i++)
		;
	if (i == n)
		return 0;
	a->rootfs_prefixes = calloc(n, sizeof(*a->rootfs_prefixes));
	if (!a->rootfs_prefixes)
		return -ENOMEM;
	a->n_rootfs_prefixes = n;
	for (i = 0; i < n; i++) {
		a->rootfs_prefixes[i] = p[i].prefix;
		p[i].prefix = NULL;
	}
	return 0;
}

/* The annotation newer ModelKits keep their Kitfile in (JSON), beside a ModelPack config. */
#define ANN_KITFILE "ml.kitops.modelkit.kitfile"

/*
 * A model's files (model.h): each layer at its path, and a ModelKit's
 * Kitfile as kit unpack writes it.
 */
static int build_model(struct build *b, struct node *root, const struct manifest *m,
	enum model_format format, time_t mtime)
{
	const char *kitfile = annotation_get(m->annotations, m->n_annotations, ANN_KITFILE);
	struct model_place *p = NULL;
	char *config = NULL;
	struct buf yaml = BUF_INIT;
	size_t i, klen = kitfile ? strlen(kitfile) : 0;
	int ret;

	if (format == MODEL_KIT && !kitfile && m->has_config &&
		m->config.size <= MANIFEST_MAX_SIZE) {
		struct node *art = b->art;

		ret = cache_blob_read_all(b->t->cache, reg_of(art)->site->reg, b->repo,
			m->config.digest, m->config.size, &config);
		if (ret == -ENOMEM)
			return ret;
		if (ret)
			log_err("%s: the ModelKit's config %s cannot be read: %s", b->label,
				m->config.digest, strerror(-ret));
		kitfile = config;
		klen = config ? (size_t)m->config.size : 0;
	}
	ret = model_places(m, format, kitfile, klen, b->label, &p);
	for (i = 0; !ret && i < m->n_layers; i++)
		if (p[i].path)
			ret = build_at(b, root, &m->layers[i], p[i].path,
				p[i].mtime ? p[i].mtime : mtime, p[i].mode, false);
	if (!ret)
		ret = prefixes_take(art_of_node(root), p, m->n_layers);
	if (!ret && kitfile) {
		int y = model_kitfile_yaml(kitfile, klen, &yaml);

		if (y == -EBADMSG)
			log_warn("%s: the Kitfile is not a JSON object: not shown", b->label);
		else if (y)
			ret = y;
		else if (node_child_find(root, "Kitfile"))
			log_warn("%s: a layer is at Kitfile: the Kitfile is not shown", b->label);
		else if (!build_data(b, root, "Kitfile", yaml.data, yaml.len))
			ret = -ENOMEM;
	}
	buf_release(&yaml);
	model_places_free(p, m->n_layers);
	free(config);
	return ret;
}

static bool platform_component_ok(const char *s)
{
	return s && *s && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 && !strchr(s, '/') &&
	       manifest_title_check(s) == 0;
}

/* .oci/platforms/<os>/<arch>[/<variant>]/ for each child of an index. */
static int build_platforms(struct build *b, struct node *oci, const struct manifest *idx)
{
	struct node *plat = NULL;
	size_t i;

	for (i = 0; i < idx->n_manifests; i++) {
		const struct descriptor *d = &idx->manifests[i];
		const struct platform *p = d->platform;
		const char *parts[3];
		struct node *dir, *n;
		size_t np, k;

		if (!p || !platform_component_ok(p->os) ||
			!platform_component_ok(p->architecture) ||
			(p->variant && !platform_component_ok(p->variant)))
			continue;
		parts[0] = p->os;
		parts[1] = p->architecture;
		parts[2] = p->variant;
		np = p->variant ? 3 : 2;
		if (!plat) {
			plat = build_node(b, oci, "platforms", NODE_DIR);
			if (!plat)
				return -ENOMEM;
		}
		dir = plat;
		for (k = 0; k + 1 < np; k++) {
			n = node_child_find(dir, parts[k]);
			if (n && n->kind != NODE_DIR)
				break;
			if (!n)
				n = build_node(b, dir, parts[k], NODE_DIR);
			if (!n)
				return -ENOMEM;
			dir = n;
		}
		/* A second entry for the same platform (or arm beside arm/v7): first wins. */
		if (k + 1 < np || node_child_find(dir, parts[np - 1]))
			continue;
		n = tree_node_new(b->t, dir, parts[np - 1], NODE_ARTIFACT);
		if (!n || node_child_add(dir, n))
			return -ENOMEM;
		art_of_node(n)->by_digest = true;
		reg_of(n)->immutable = true;
		reg_of(n)->repo = strdup(b->repo);
		art_of_node(n)->ref = strdup(d->digest);
		if (!reg_of(n)->repo || !art_of_node(n)->ref)
			return -ENOMEM;
	}
	return 0;
}

static int build_blob_entry(
	struct build *b, struct node *sha, const struct descriptor *d, bool is_manifest)
{
	const char *hex = digest_hex(d->digest);
	struct node *n;

	if (!digest_supported(d->digest) || node_child_find(sha, hex))
		return 0;
	n = build_node(b, sha, hex, NODE_BLOB);
	if (!n)
		return -ENOMEM;
	file_of(n)->is_manifest = is_manifest;
	return set_blob(n, d, b->t->start);
}

static int build_oci(struct build *b, struct node *art, const struct manifest *m,
	const char *digest, const char *body, size_t len)
{
	struct node *oci, *blobs, *sha, *n;
	char line[DIGEST_STR_LEN + 2];
	size_t i;
	int ret = 0;

	oci = build_node(b, art, ".oci", NODE_DIR);
	if (!oci)
		return -ENOMEM;
	oci->hidden = true;
	if (!build_data(b, oci, "manifest.json", body, len))
		return -ENOMEM;
	snprintf(line, sizeof(line), "%s\n", digest);
	if (!build_data(b, oci, "digest", line, strlen(line)))
		return -ENOMEM;
	if (m->kind == MANIFEST_IMAGE) {
		n = build_node(b, oci, "config.json", NODE_BLOB);
		if (!n)
			return -ENOMEM;
		ret = set_blob(n, &m->config, b->t->start);
		if (ret)
			return ret;
	}
	n = build_node(b, oci, "referrers", NODE_REFERRERS);
	if (!n || !(art_of_node(n)->ref = strdup(digest)))
		return -ENOMEM;
	blobs = build_node(b, oci, "blobs", NODE_DIR);
	sha = blobs ? build_node(b, blobs, "sha256", NODE_DIR) : NULL;
	if (!sha)
		return -ENOMEM;
	if (m->kind == MANIFEST_IMAGE)
		ret = build_blob_entry(b, sha, &m->config, false);
	for (i = 0; !ret && i < m->n_layers; i++)
		ret = build_blob_entry(b, sha, &m->layers[i], false);
	for (i = 0; !ret && i < m->n_manifests; i++)
		ret = build_blob_entry(b, sha, &m->manifests[i], true);
	if (!ret && m->kind == MANIFEST_INDEX)
		ret = build_platforms(b, oci, m);
	return ret;
}

static int build_files(struct build *b, struct node *art, const struct manifest *m, time_t mtime)
{
	size_t i;
	int ret = 0;

	for (i = 0; !ret && i < m->n_layers; i++) {
		const struct descriptor *d = &m->layers[i];
		const char *title = annotation_get(d->annotations, d->n_annotations, ANN_TITLE);
		time_t lt = mtime;

		if (!title)
			continue; /* an image layer: under .oci/blobs until the rootfs view */
		manifest_time_parse(
			annotation_get(d->annotations, d->n_annotations, ANN_CREATED), &lt);
		ret = build_title(b, art, d, title, lt);
	}
	return ret;
}

static int build_xattrs(struct node *scratch, const struct manifest *m, const char *digest)
{
	const char *at = manifest_artifact_type(m);
	int ret;

	ret = tree_xattr_add(
		&reg_of(scratch)->xattrs, &reg_of(scratch)->n_xattrs, "user.oci.digest", digest);
	if (!ret && m->media_type)
		ret = tree_xattr_add(&reg_of(scratch)->xattrs, &reg_of(scratch)->n_xattrs,
			"user.oci.mediaType", m->media_type);
	if (!ret && at)
		ret = tree_xattr_add(&reg_of(scratch)->xattrs, &reg_of(scratch)->n_xattrs,
			"user.oci.artifactType", at);
	if (!ret)
		ret = xattrs_add_annotations(&reg_of(scratch)->xattrs, &reg_of(scratch)->n_xattrs,
			m->annotations, m->n_annotations);
	return ret;
}

/* Whether m is a container image: layers without titles that this build unpacks. */
static bool is_image(const struct manifest *m)
{
	size_t i;

	if (m->kind != MANIFEST_IMAGE || m->n_layers == 0)
		return false;
	for (i = 0; i < m->n_layers; i++) {
		const struct descriptor *d = &m->layers[i];

		if (annotation_get(d->annotations, d->n_annotations, ANN_TITLE) ||
			!layer_media_type_ok(d->media_type))
			return false;
	}
	return true;
}

/* Whether a model has a tar layer, unpacked in place. */
static bool model_has_archive(const struct manifest *m)
{
	size_t i;

	for (i = 0; i < m->n_layers; i++)
		if (model_layer_archive(&m->layers[i]))
			return true;
	return false;
}

/*
 * Build the children of art from a manifest body into scratch (a private
 * node standing in for art), so that art changes in one step under t->nodes.lock.
 */
static int artifact_build(struct tree *t, struct node *art, struct node *scratch,
	const char *digest, const char *body, size_t len)
{
	struct manifest *m = NULL, *child = NULL;
	char label[600], *cbody = NULL;
	struct build b = { t, art, reg_of(art)->repo, label };
	enum model_format format;
	time_t mtime = t->start;
	size_t clen;
	int ret;

	snprintf(label, sizeof(label), "%s/%s@%s", registry_host(reg_of(art)->site->reg),
		reg_of(art)->repo, digest);
	ret = manifest_parse(body, len, NULL, &m);
	if (ret) {
		log_err("%s: %s", label,
			ret == -EPROTONOSUPPORT ? "unsupported manifest type"
						: "malformed manifest");
		return -EIO;
	}
	manifest_time_parse(annotation_get(m->annotations, m->n_annotations, ANN_CREATED), &mtime);
	reg_of(scratch)->mtime = mtime;
	ret = build_xattrs(scratch, m, digest);
	if (ret)
		goto out;
	if (m->kind == MANIFEST_INDEX) {
		const struct descriptor *d = manifest_select_platform(m, &t->opts.platform);
		struct manifest *cm = NULL;

		if (!d) {
			char *p = platform_format(&t->opts.platform);

			log_info("%s: index has no manifest for %s: only .oci/ is shown", label,
				p ? p : "this platform");
			free(p);
		} else if (tree_manifest_get(t, reg_of(art)->site, reg_of(art)->repo, d->digest,
				   &cbody, &clen) == 0 &&
			   manifest_parse(cbody, clen, NULL, &cm) == 0) {
			if (cm->kind == MANIFEST_IMAGE)
				child = cm;
			else
				manifest_free(cm);
		} else {
			log_err("%s: platform manifest %s cannot be read", label, d->digest);
		}
	}
	format = model_format_of(child ? child : m);
	art_of_node(scratch)->model = format != MODEL_NONE;
	if (format != MODEL_NONE)
		ret = build_model(&b, scratch, child ? child : m, format, mtime);
	else
		ret = build_files(&b, scratch, child ? child : m, mtime);
	if (!ret)
		ret = build_oci(&b, scratch, m, digest, body, len);
	/*
	 * An image: its root filesystem; a model with tar layers: them unpacked in
	 * place (and its other files); built on the first look inside.
	 */
	if (!ret && (format != MODEL_NONE ? model_has_archive(child ? child : m)
					  : is_image(child ? child : m))) {
		art_of_node(scratch)->rootfs_model = format != MODEL_NONE;
		art_of_node(scratch)->rootfs_digest = strdup(
			child ? manifest_select_platform(m, &t->opts.platform)->digest : digest);
		scratch->partial = art_of_node(scratch)->rootfs_digest != NULL;
	}
out:
	if (ret == -ENOMEM)
		log_err("%s: out of memory", label);
	manifest_free(child);
	manifest_free(m);
	free(cbody);
	return ret;
}

/* What a build that failed made in scratch: never seen by anyone, freed now. */
static void scratch_release(struct tree *t, struct node *scratch)
{
	size_t i;

	for (i = 0; i < scratch->n_children; i++)
		node_discard(&t->nodes, scratch->children[i]);
	free(scratch->children);
}

/*
 * n's children become those built in scratch. The old ones stay valid while
 * the kernel or a handle holds them, out of the tree; the others are buried.
 * Caller holds t->nodes.lock.
 */
static void children_take(struct tree *t, struct node *n, struct node *scratch)
{
	size_t i;

	for (i = 0; i < n->n_children; i++)
		node_orphan(&t->nodes, n->children[i]);
	free(n->children);
	n->children = scratch->children;
	n->n_children = scratch->n_children;
	n->cap_children = scratch->cap_children;
	for (i = 0; i < n->n_children; i++)
		n->children[i]->parent = n;
}

/*
 * Show the manifest body (hashing to digest) in art: its children are built
 * aside, then swapped in under t->nodes.lock. Caller holds art->load_lock. 0 or -errno.
 */
int tree_artifact_install(
	struct tree *t, struct node *n, const char *digest, const char *body, size_t len)
{
	struct art_node scratch;
	struct node *sn = &scratch.r.n;
	struct rootfs *old_rf;
	char *dcopy = strdup(digest);
	int ret;

	if (!dcopy)
		return -ENOMEM;
	memset(&scratch, 0, sizeof(scratch));
	sn->kind = n->kind;
	scratch.r.site = reg_of(n)->site;
	scratch.r.immutable = reg_of(n)->immutable;
	ret = artifact_build(t, n, sn, digest, body, len);
	if (ret) {
		scratch_release(t, sn);
		free(scratch.rootfs_digest);
		prefixes_free(scratch.rootfs_prefixes, scratch.n_rootfs_prefixes);
		tree_xattrs_free(scratch.r.xattrs, scratch.r.n_xattrs);
		free(dcopy);
		return ret;
	}
	pthread_mutex_lock(&t->nodes.lock);
	children_take(t, n, sn);
	tree_xattrs_free(reg_of(n)->xattrs, reg_of(n)->n_xattrs);
	reg_of(n)->xattrs = scratch.r.xattrs;
	reg_of(n)->n_xattrs = scratch.r.n_xattrs;
	reg_of(n)->mtime = scratch.r.mtime;
	free(art_of_node(n)->rootfs_digest);
	art_of_node(n)->rootfs_digest = scratch.rootfs_digest;
	art_of_node(n)->rootfs_model = scratch.rootfs_model;
	prefixes_free(art_of_node(n)->rootfs_prefixes, art_of_node(n)->n_rootfs_prefixes);
	art_of_node(n)->rootfs_prefixes = scratch.rootfs_prefixes;
	art_of_node(n)->n_rootfs_prefixes = scratch.n_rootfs_prefixes;
	art_of_node(n)->model = scratch.model;
	n->partial = sn->partial;
	/* made anew on the next look inside; the old one goes with the last node using it */
	old_rf = art_of_node(n)->rootfs;
	art_of_node(n)->rootfs = NULL;
	free(art_of_node(n)->digest);
	art_of_node(n)->digest = dcopy;
	art_of_node(n)->loaded = true;
	art_of_node(n)->resolved_at = time(NULL);
	pthread_mutex_unlock(&t->nodes.lock);
	if (old_rf)
		rootfs_unref(t, old_rf);
	/* kept for a node of the tag made again while the registry is unreachable */
	if (n->kind == NODE_ARTIFACT && !art_of_node(n)->by_digest)
		tag_seen_set(reg_of(n)->site, reg_of(n)->repo, art_of_node(n)->ref, digest);
	return 0;
}

/*
 * A tag's node made again (the kernel forgot the one before) while the
 * registry cannot say what the tag is: n shows the tag's last resolution, as
 * the node before did, when its manifest is cached. Caller holds n's load_lock.
 */
static void tag_last_install(struct tree *t, struct node *n)
{
	char *digest = tag_seen_get(reg_of(n)->site, reg_of(n)->repo, art_of_node(n)->ref);
	char *body = NULL;
	size_t len;

	if (digest &&
		tree_manifest_get(t, reg_of(n)->site, reg_of(n)->repo, digest, &body, &len) == 0)
		tree_artifact_install(t, n, digest, body, len);
	free(body);
	free(digest);
}

/*
 * Make sure art shows a current manifest: loaded once for a digest, again
 * after tag_ttl for a tag. With the registry unreachable a tag keeps its last
 * resolution. 0, -ENOENT when the registry does not know it, -EIO...
 */
static int artifact_load(struct tree *t, struct node *n)
{
	char *body = NULL, *ct = NULL, *digest = NULL;
	size_t len = 0;
	bool fresh, same;
	int ret = 0;

	pthread_mutex_lock(&t->nodes.lock);
	/* Staged changes (or a tag made here) are what the directory shows until pushed. */
	fresh = (art_of_node(n)->loaded &&
			(art_of_node(n)->by_digest ||
				!expired(art_of_node(n)->resolved_at, t->opts.tag_ttl))) ||
		node_draft(n) || reg_of(n)->local;
	pthread_mutex_unlock(&t->nodes.lock);
	if (fresh)
		return 0;

	pthread_mutex_lock(load_lock_of(n));
	pthread_mutex_lock(&t->nodes.lock);
	fresh = (art_of_node(n)->loaded &&
			(art_of_node(n)->by_digest ||
				!expired(art_of_node(n)->resolved_at, t->opts.tag_ttl))) ||
		node_draft(n) || reg_of(n)->local;
	pthread_mutex_unlock(&t->nodes.lock);
	if (fresh)
		goto out_unlock;

	if (art_of_node(n)->by_digest) {
		ret = tree_manifest_get(
			t, reg_of(n)->site, reg_of(n)->repo, art_of_node(n)->ref, &body, &len);
		digest = ret ? NULL : strdup(art_of_node(n)->ref);
		if (!ret && !digest)
			ret = -ENOMEM;
	} else {
		ret = registry_get_manifest(reg_of(n)->site->reg, reg_of(n)->repo,
			art_of_node(n)->ref, &body, &len, &ct, &digest);
		if (ret == 0)
			cache_put(t->cache, digest, body, len);
	}
	if (ret) {
		if (ret == -ENOENT && !art_of_node(n)->by_digest)
			tree_tag_forget(reg_of(n)->site, reg_of(n)->repo, art_of_node(n)->ref);
		else if (ret != -ENOENT && !art_of_node(n)->loaded && !art_of_node(n)->by_digest)
			tag_last_install(t, n);
		if (ret != -ENOENT && art_of_node(n)->loaded) {
			/* Offline: keep showing the last resolution. */
			if (!art_of_node(n)->offline_logged)
				log_warn("%s/%s:%s: registry unreachable (%s): showing its last "
					 "resolution",
					registry_host(reg_of(n)->site->reg), reg_of(n)->repo,
					art_of_node(n)->ref, strerror(-ret));
			art_of_node(n)->offline_logged = true;
			pthread_mutex_lock(&t->nodes.lock);
			art_of_node(n)->resolved_at = time(NULL);
			pthread_mutex_unlock(&t->nodes.lock);
			ret = 0;
		} else if (ret != -ENOENT && ret != -ENOMEM && ret != -EACCES) {
			ret = -EIO;
		}
		goto out_unlock;
	}
	art_of_node(n)->offline_logged = false;

	pthread_mutex_lock(&t->nodes.lock);
	same = art_of_node(n)->loaded && art_of_node(n)->digest &&
	       strcmp(art_of_node(n)->digest, digest) == 0;
	if (same)
		art_of_node(n)->resolved_at = time(NULL);
	pthread_mutex_unlock(&t->nodes.lock);
	if (same)
		goto out_unlock;

	ret = tree_artifact_install(t, n, digest, body, len);

out_unlock:
	pthread_mutex_unlock(load_lock_of(n));
	free(body);
	free(ct);
	free(digest);
	return ret;
}

/* ---- referrers ---- */

/* Whether an artifactType component can be a directory name. */
static bool type_component_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > 255 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
		return false;
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f || s[i] == '\\')
			return false;
	return true;
}

/*
 * The artifact type of referrer d, as oras discover groups it: its
 * artifactType, else its manifest's (artifactType, else config media type).
 * malloc'd, or NULL.
 */
static char *referrer_type(struct tree *t, struct node *rn, const struct descriptor *d)
{
	struct manifest *m = NULL;
	char *body = NULL, *type = NULL;
	size_t len;

	if (d->artifact_type)
		return strdup(d->artifact_type);
	if (tree_manifest_get(t, reg_of(rn)->site, reg_of(rn)->repo, d->digest, &body, &len) == 0 &&
		manifest_parse(body, len, d->media_type, &m) == 0 && manifest_artifact_type(m))
		type = strdup(manifest_artifact_type(m));
	manifest_free(m);
	free(body);
	return type;
}

/* Put referrer d under scratch/<type levels>/<digest>. */
static int referrers_add(
	struct tree *t, struct node *rn, struct node *scratch, const struct descriptor *d)
{
	struct node *dir = scratch, *n;
	char *type = referrer_type(t, rn, d), *p, *slash;
	int ret = 0;

	if (!type || !*type) {
		log_warn("%s/%s@%s: referrer %s has no artifact type: not shown",
			registry_host(reg_of(rn)->site->reg), reg_of(rn)->repo,
			art_of_node(rn)->ref, d->digest);
		free(type);
		return 0;
	}
	for (p = type;; p = slash + 1) {
		slash = strchr(p, '/');
		if (!type_component_ok(p, slash ? (size_t)(slash - p) : strlen(p))) {
			log_warn("%s/%s@%s: referrer %s: artifact type cannot be a path: not shown",
				registry_host(reg_of(rn)->site->reg), reg_of(rn)->repo,
				art_of_node(rn)->ref, d->digest);
			goto out;
		}
		if (!slash)
			break;
	}
	for (p = type;; p = slash + 1) {
		slash = strchr(p, '/');
		if (slash)
			*slash = '\0';
		n = node_child_find(dir, p);
		if (n && n->kind != NODE_DIR)
			goto out;
		if (!n) {
			n = tree_node_new(t, dir, p, NODE_DIR);
			if (!n || !(reg_of(n)->repo = strdup(reg_of(rn)->repo)) ||
				node_child_add(dir, n)) {
				ret = -ENOMEM;
				goto out;
			}
			/* new referrers of a type may come: no day-long kernel cache */
			reg_of(n)->immutable = false;
		}
		dir = n;
		if (!slash)
			break;
	}
	if (!node_child_find(dir, d->digest)) {
		n = tree_node_new(t, dir, d->digest, NODE_ARTIFACT);
		if (!n || node_child_add(dir, n)) {
			ret = -ENOMEM;
			goto out;
		}
		art_of_node(n)->by_digest = true;
		reg_of(n)->immutable = true;
		reg_of(n)->repo = strdup(reg_of(rn)->repo);
		art_of_node(n)->ref = strdup(d->digest);
		if (!reg_of(n)->repo || !art_of_node(n)->ref)
			ret = -ENOMEM;
	}
out:
	free(type);
	return ret;
}

/*
 * Bring dir, a level of .oci/referrers/ as shown, to what fresh (the same
 * level as the registry lists it now, built aside) holds, keeping every node
 * that stays: a referrer still listed keeps its node (and what it loaded),
 * one no longer listed goes, and what was made here (attaches being made,
 * the type directories above them) stays as it is, whatever the listing
 * says: a reload must not take an attach away before it is pushed. What of
 * fresh is not taken goes into trash, for the caller to discard once
 * unlocked. Caller holds t->nodes.lock.
 */
static int referrers_merge(struct tree *t, struct node *dir, struct node *fresh, struct node *trash)
{
	struct node *e, *f;
	size_t i = dir->n_children;
	int ret;

	while (i-- > 0) {
		e = dir->children[i];
		f = fresh ? node_child_find(fresh, e->name) : NULL;
		if (e->kind == NODE_DIR && (!f || f->kind == NODE_DIR)) {
			ret = referrers_merge(t, e, f, trash);
			if (ret)
				return ret;
			/* a type level the registry no longer has, nor anything made here */
			if (e->n_children == 0 && !reg_of(e)->local)
				node_delete(&t->nodes, dir, e);
		} else if (e->kind == NODE_ARTIFACT && art_of_node(e)->by_digest && !f) {
			node_delete(&t->nodes, dir, e); /* detached meanwhile */
			continue;
		}
		if (f) {
			/* e stands for it: the one built aside goes */
			ret = node_child_add(trash, f);
			if (ret)
				return ret;
			node_child_remove(fresh, f);
		}
	}
	/* what is new in the registry */
	while (fresh && fresh->n_children > 0) {
		f = fresh->children[fresh->n_children - 1];
		ret = node_child_add(dir, f);
		if (ret)
			return ret;
		fresh->n_children--;
		f->parent = dir;
	}
	return 0;
}

/*
 * Load what refers to rn's artifact: once, then again after tag_ttl (new
 * referrers come without the subject changing). Caller holds no lock.
 */
static int referrers_load(struct tree *t, struct node *rn)
{
	struct art_node scratch, trash;
	struct manifest *idx = NULL;
	size_t i;
	int ret = 0;

	pthread_mutex_lock(load_lock_of(rn));
	pthread_mutex_lock(&t->nodes.lock);
	/* Not again while attaches are made here, but after one is pushed (see referrers_merge). */
	if (art_of_node(rn)->loaded &&
		(reg_of(rn)->local || !expired(art_of_node(rn)->resolved_at, t->opts.tag_ttl))) {
		pthread_mutex_unlock(&t->nodes.lock);
		goto out;
	}
	pthread_mutex_unlock(&t->nodes.lock);
	ret = registry_referrers(
		reg_of(rn)->site->reg, reg_of(rn)->repo, art_of_node(rn)->ref, NULL, &idx);
	if (ret) {
		/* Offline: keep what was shown. */
		if (art_of_node(rn)->loaded)
			ret = 0;
		else
			ret = ret == -ENOMEM || ret == -EACCES ? ret : -EIO;
		goto out;
	}
	memset(&scratch, 0, sizeof(scratch));
	scratch.r.n.kind = rn->kind;
	scratch.r.site = reg_of(rn)->site; /* what is made below takes it from its parent */
	for (i = 0; i < idx->n_manifests && !ret; i++)
		ret = referrers_add(t, rn, &scratch.r.n, &idx->manifests[i]);
	if (ret) {
		scratch_release(t, &scratch.r.n);
		goto out;
	}
	memset(&trash, 0, sizeof(trash));
	pthread_mutex_lock(&t->nodes.lock);
	ret = referrers_merge(t, rn, &scratch.r.n, &trash.r.n);
	if (!ret) {
		art_of_node(rn)->loaded = true;
		art_of_node(rn)->resolved_at = time(NULL);
	}
	pthread_mutex_unlock(&t->nodes.lock);
	scratch_release(t, &scratch.r.n);
	scratch_release(t, &trash.r.n);
out:
	pthread_mutex_unlock(load_lock_of(rn));
	manifest_free(idx);
	return ret;
}

/* ---- the interface ---- */

int tree_new(const struct ref *source, const struct tree_options *o, struct http *http,
	struct cache *cache, struct tree **out)
{
	struct tree *t = calloc(1, sizeof(*t));
	struct site *s;
	int ret = -ENOMEM;

	if (!t)
		return -ENOMEM;
	t->opts = *o;
	t->http = http;
	t->cache = cache;
	t->start = time(NULL);
	nodes_init(&t->nodes, t);
	if (!source->host) {
		t->root = tree_node_new(t, NULL, "", NODE_HOSTS);
	} else {
		ret = tree_site_get(t, source->host, &s);
		if (ret)
			goto out_free;
		ret = -ENOMEM;
		if (!source->repo) {
			t->root = tree_ns_new(t, NULL, "", s, "");
		} else if (!source->tag && !source->digest) {
			t->root = tree_ns_new(t, NULL, "", s, source->repo);
		} else {
			const char *refname = source->digest ? source->digest : source->tag;

			t->root = tree_artifact_new(t, NULL, "", s, source->repo, refname);
		}
	}
	if (!t->root)
		goto out_free;
	t->status = tree_node_new(t, t->root, ".ocifs", NODE_DIR);
	if (!t->status)
		goto out_free;
	t->status->hidden = true;
	{
		struct node *st = tree_node_new(t, t->status, "stats.json", NODE_STATUS);

		if (!st || node_child_add(t->status, st))
			goto out_free;
	}
	if (layerstore_root(t))
		goto out_free;
	*out = t;
	return 0;

out_free:
	tree_free(t);
	return ret;
}

void tree_free(struct tree *t)
{
	struct site *s, *snext;
	struct tag_seen *ts, *tsnext;
	size_t i;

	if (!t)
		return;
	node_free_all(&t->nodes);
	rootfs_release(t);
	for (s = t->sites; s; s = snext) {
		snext = s->next;
		strlist_release(&s->catalog);
		pthread_mutex_destroy(&s->lock);
		for (i = 0; i < TAG_SEEN_BUCKETS; i++)
			for (ts = s->seen[i]; ts; ts = tsnext) {
				tsnext = ts->next;
				free(ts->digest);
				free(ts);
			}
		pthread_mutex_destroy(&s->seen_lock);
		registry_free(s->reg);
		free(s);
	}
	pthread_mutex_destroy(&t->nodes.lock);
	free(t);
}

struct nodes *tree_nodes(struct tree *t)
{
	return &t->nodes;
}

struct node *tree_root(struct tree *t)
{
	return t->root;
}

int tree_check_root(struct tree *t)
{
	struct node *r = t->root;
	int ret;

	if (r->kind == NODE_HOSTS)
		return 0;
	ret = registry_ping(reg_of(r)->site->reg);
	if (ret)
		return ret;
	if (r->kind == NODE_ARTIFACT) {
		ret = artifact_load(t, r);
		if (ret == -ENOENT)
			log_err("%s/%s%s%s: no such manifest", registry_host(reg_of(r)->site->reg),
				reg_of(r)->repo, art_of_node(r)->by_digest ? "@" : ":",
				art_of_node(r)->ref);
	}
	return ret;
}

/*
 * What a reader is told of a failure: the registry's ENOENT and EACCES mean
 * something to it; connection errors and bad answers are EIO.
 */
static int reader_errno(int err)
{
	switch (err) {
	case 0:
	case -ENOENT:
	case -EACCES:
	case -ENOMEM:
	case -ENOTDIR:
	case -ENAMETOOLONG:
		return err;
	default:
		return -EIO;
	}
}

/* What an artifact directory shows, loaded (a fixed directory inside one needs nothing). */
static int dir_load(struct tree *t, struct node *dir)
{
	return dir->kind == NODE_DIR ? 0 : artifact_load(t, dir);
}

int tree_lookup(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	if (strlen(name) > 255)
		return -ENAMETOOLONG;
	if (dir == t->root && strcmp(name, ".ocifs") == 0) {
		*out = t->status;
		return 0;
	}
	if (dir == t->root && t->layerstore && strcmp(name, ".layers") == 0) {
		*out = t->layerstore;
		return 0;
	}
	if (!dir->ops->lookup)
		return -ENOTDIR;
	return dir->ops->lookup(t, dir, name, out);
}

/* The child of dir called name, as it is now. */
static int child_lookup(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	struct node *n;

	pthread_mutex_lock(&t->nodes.lock);
	n = node_child_find(dir, name);
	pthread_mutex_unlock(&t->nodes.lock);
	if (!n)
		return -ENOENT;
	*out = n;
	return 0;
}

int tree_hosts_lookup(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	return reader_errno(hosts_lookup(t, dir, name, out));
}

int tree_ns_lookup(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	return reader_errno(ns_lookup(t, dir, name, out));
}

int tree_artifact_lookup(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	int ret = dir_load(t, dir);

	if (ret)
		return ret;
	/* .oci needs no root filesystem */
	if (rootfs_is(dir) && !(dir->kind == NODE_ARTIFACT && strcmp(name, ".oci") == 0))
		return rootfs_lookup(t, dir, name, out);
	return child_lookup(t, dir, name, out);
}

static int node_ensure_loaded(struct tree *t, struct node *n)
{
	return n->kind == NODE_ARTIFACT ? artifact_load(t, n) : 0;
}

int tree_getattr(struct tree *t, struct node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = (ino_t)(uintptr_t)n;
	st->st_uid = t->opts.uid;
	st->st_gid = t->opts.gid;
	st->st_blksize = 1024 * 1024; /* cp and cat then move 1 MiB at a time */
	return n->ops->getattr(t, n, st);
}

mode_t tree_reg_type(const struct node *n)
{
	switch (n->kind) {
	case NODE_BLOB:
	case NODE_DATA:
	case NODE_STAGED:
	case NODE_STATUS:
		return S_IFREG;
	case NODE_LINK:
		return S_IFLNK;
	default:
		return S_IFDIR;
	}
}

int tree_reg_getattr(struct tree *t, struct node *n, struct stat *st)
{
	mode_t type = tree_reg_type(n);
	int ret;

	/* An artifact's mtime is its manifest's: stat is when a user wants it. */
	ret = node_ensure_loaded(t, n);
	if (ret)
		return ret;
	if (type == S_IFDIR) {
		st->st_mode = S_IFDIR | (t->opts.read_only ? 0555 : 0755);
		st->st_nlink = 2;
	} else if (type == S_IFLNK) {
		st->st_mode = S_IFLNK | 0777;
		st->st_nlink = 1;
		st->st_size = (off_t)strlen(file_of(n)->data);
	} else {
		st->st_mode = S_IFREG | (t->opts.read_only ? 0444 : 0644);
		/* a model file's own permission bits (model.h), write bits gone on a ro mount */
		if (n->kind == NODE_BLOB && file_of(n)->mode)
			st->st_mode =
				S_IFREG | (file_of(n)->mode & (t->opts.read_only ? 0555u : 0777u));
		st->st_nlink = 1;
		pthread_mutex_lock(&t->nodes.lock);
		st->st_size = file_of(n)->size > 0 ? file_of(n)->size : 0;
		pthread_mutex_unlock(&t->nodes.lock);
		st->st_blocks = (st->st_size + 511) / 512;
	}
	pthread_mutex_lock(&t->nodes.lock);
	st->st_mtime = st->st_ctime = st->st_atime = reg_of(n)->mtime;
	pthread_mutex_unlock(&t->nodes.lock);
	if (rootfs_is(n))
		rootfs_root_stat(t, n, st);
	return 0;
}

double tree_timeout(struct tree *t, struct node *n)
{
	return n->ops->timeout ? n->ops->timeout(t, n) : 0;
}

double tree_negative_timeout(const struct tree *t)
{
	return t->opts.negative_timeout;
}

double tree_reg_timeout(struct tree *t, struct node *n)
{
	bool changing;

	pthread_mutex_lock(&t->nodes.lock);
	changing = reg_of(n)->local || n->kind == NODE_STAGED || node_draft(n);
	pthread_mutex_unlock(&t->nodes.lock);
	if (changing || n->kind == NODE_STATUS)
		return 0;
	if (n->kind == NODE_REFERRERS)
		return t->opts.tag_ttl; /* new referrers come to an unchanged subject */
	if (n->kind == NODE_DIR) {
		struct node *p;

		/* type levels below referrers/ are made anew at each reload: look again */
		for (p = n->parent; p && p->kind == NODE_DIR && !p->hidden; p = p->parent)
			;
		if (p && p->kind == NODE_REFERRERS)
			return 0;
	}
	if (reg_of(n)->immutable)
		return IMMUTABLE_TIMEOUT;
	if (n->kind == NODE_NS || n->kind == NODE_HOSTS)
		return t->opts.list_ttl;
	return t->opts.tag_ttl;
}

int tree_list(struct tree *t, struct node *dir, struct tree_dirent **ents, size_t *count)
{
	if (!dir->ops->list)
		return -ENOTDIR;
	return dir->ops->list(t, dir, ents, count);
}

int tree_referrers_lookup(struct tree *t, struct node *dir, const char *name, struct node **out)
{
	int ret = referrers_load(t, dir);

	return ret ? ret : child_lookup(t, dir, name, out);
}

int tree_referrers_list(struct tree *t, struct node *dir, struct tree_dirent **ents, size_t *count)
{
	int ret = referrers_load(t, dir);

	return ret ? ret : tree_children_list(t, dir, ents, count);
}

int tree_ns_list(struct tree *t, struct node *dir, struct tree_dirent **ents, size_t *count)
{
	return reader_errno(ns_list(t, dir, ents, count));
}

int tree_artifact_list(struct tree *t, struct node *dir, struct tree_dirent **ents, size_t *count)
{
	int ret = dir_load(t, dir);

	if (!ret && rootfs_is(dir))
		ret = rootfs_list(t, dir);
	if (ret)
		return ret;
	return tree_children_list(t, dir, ents, count);
}

int tree_file_open(struct tree *t, struct node *n, int flags, struct node_file *f)
{
	struct file_node *fn = file_of(n);
	char *body = NULL;
	size_t blen;
	int ret;

	if (n->kind == NODE_DATA) {
		f->data = fn->data;
		f->len = fn->data_len;
		f->keep_cache = true;
		return 0;
	}
	if (fn->is_manifest) {
		/* An index's child: through the manifests endpoint, verified, then kept here. */
		pthread_mutex_lock(&t->nodes.lock);
		f->data = fn->data;
		f->len = fn->data_len;
		pthread_mutex_unlock(&t->nodes.lock);
		f->keep_cache = true;
		if (f->data)
			return 0;
		ret = tree_manifest_get(t, fn->r.site, fn->r.repo, fn->digest, &body, &blen);
		if (ret)
			return ret == -ENOENT || ret == -ENOMEM ? ret : -EIO;
		pthread_mutex_lock(&t->nodes.lock);
		if (!fn->data) {
			fn->data = body;
			fn->data_len = blen;
			body = NULL;
		}
		f->data = fn->data;
		f->len = fn->data_len;
		pthread_mutex_unlock(&t->nodes.lock);
		free(body);
		return 0;
	}
	ret = cache_blob_open(
		t->cache, fn->r.site->reg, fn->r.repo, fn->digest, fn->size, &f->blob);
	if (ret)
		return ret == -ENOMEM ? ret : -EIO;
	/*
	 * A blob's bytes never change (a digest pins them), but pages the kernel
	 * kept from a read before the blob verified may be wrong: keep them only
	 * once it has.
	 */
	f->keep_cache = cache_blob_verified(f->blob);
	return 0;
}

/* The xattr that blob files have besides their manifest's: how much is in the cache. */
#define XATTR_CACHED "user.ocifs.cached"

ssize_t tree_getxattr(struct tree *t, struct node *n, const char *name, char *buf, size_t size)
{
	return n->ops->getxattr ? n->ops->getxattr(t, n, name, buf, size) : -ENODATA;
}

ssize_t tree_listxattr(struct tree *t, struct node *n, char *buf, size_t size)
{
	return n->ops->listxattr ? n->ops->listxattr(t, n, buf, size) : 0;
}

ssize_t tree_reg_getxattr(struct tree *t, struct node *n, const char *name, char *buf, size_t size)
{
	ssize_t ret;
	int err;

	err = node_ensure_loaded(t, n);
	if (err)
		return err;
	if (n->kind == NODE_BLOB && !file_of(n)->is_manifest && strcmp(name, XATTR_CACHED) == 0) {
		char v[8];
		int len = snprintf(v, sizeof(v), "%d",
			cache_cached_percent(t->cache, file_of(n)->digest, file_of(n)->size));

		if (size && (size_t)len > size)
			return -ERANGE;
		if (size)
			memcpy(buf, v, (size_t)len);
		return len;
	}
	pthread_mutex_lock(&t->nodes.lock);
	ret = tree_xattr_get(reg_of(n)->xattrs, reg_of(n)->n_xattrs, name, buf, size);
	pthread_mutex_unlock(&t->nodes.lock);
	return ret;
}

ssize_t tree_reg_listxattr(struct tree *t, struct node *n, char *buf, size_t size)
{
	bool cached = n->kind == NODE_BLOB && !file_of(n)->is_manifest;
	ssize_t ret;
	int err;

	err = node_ensure_loaded(t, n);
	if (err)
		return err;
	pthread_mutex_lock(&t->nodes.lock);
	ret = tree_xattr_list(
		reg_of(n)->xattrs, reg_of(n)->n_xattrs, cached ? XATTR_CACHED : NULL, buf, size);
	pthread_mutex_unlock(&t->nodes.lock);
	return ret;
}

int tree_link_readlink(struct tree *t, struct node *n, const char **target)
{
	*target = file_of(n)->data;
	return 0;
}

void tree_note_served(struct tree *t, size_t n)
{
	__atomic_add_fetch(&t->served, (uint64_t)n, __ATOMIC_RELAXED);
	__atomic_add_fetch(&t->read_requests, 1, __ATOMIC_RELAXED);
}

void tree_set_passthrough(struct tree *t, bool on)
{
	__atomic_store_n(&t->passthrough, on, __ATOMIC_RELAXED);
}

void tree_note_passthrough_open(struct tree *t)
{
	__atomic_add_fetch(&t->passthrough_opens, 1, __ATOMIC_RELAXED);
}

static bool is_tag(const struct node *n)
{
	return n->kind == NODE_ARTIFACT && !art_of_node(n)->by_digest;
}

/* n is a tag's directory or inside one. Caller holds t->nodes.lock. */
static bool under_tag(const struct node *n)
{
	for (; n; n = n->parent)
		if (is_tag(n))
			return true;
	return false;
}

/*
 * Every tag's resolution expires, and the kernel's entries go: the tags'
 * and those of everything inside them. The kernel drops a directory's entry
 * with what is under it, except what is in use (a file a reader has open):
 * that stays, and when the tag's directory is open too (a shell's cwd) the
 * next lookup of the tag brings its old entry back, the file in it, which
 * then read as before for tag_ttl.
 */
void tree_forget_tags(
	struct tree *t, void (*inval)(void *arg, struct node *parent, const char *name), void *arg)
{
	struct node *n, **v = NULL;
	size_t cnt = 0, cap = 0, i;
	struct site *s;
	unsigned op = node_op_enter(&t->nodes);

	pthread_mutex_lock(&t->nodes.lock);
	for (n = t->nodes.all; n; n = n->all_next) {
		if (n->kind == NODE_NS)
			__atomic_store_n(&ns_of(n)->tags_at, 0, __ATOMIC_RELAXED);
		if (is_tag(n))
			art_of_node(n)->resolved_at = 0;
		/* only what the kernel may have an entry for */
		if (!n->parent || n->dead || n->orphan || n->nlookup == 0 || !under_tag(n))
			continue;
		if (cnt == cap) {
			struct node **nv = realloc(v, (cap ? 2 * cap : 64) * sizeof(*nv));

			if (!nv)
				continue;
			v = nv;
			cap = cap ? 2 * cap : 64;
		}
		v[cnt++] = n;
	}
	for (s = t->sites; s; s = s->next)
		__atomic_store_n(&s->catalog_at, 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&t->nodes.lock);
	/* the kernel holds them: they stay while this request runs */
	for (i = 0; inval && i < cnt; i++)
		inval(arg, v[i]->parent, v[i]->name);
	free(v);
	node_op_leave(&t->nodes, op);
}

void tree_set_inval(struct tree *t, void (*entry)(void *arg, struct node *parent, const char *name),
	void (*inode)(void *arg, struct node *n), void *arg)
{
	t->inval_entry = entry;
	t->inval_inode = inode;
	t->inval_arg = arg;
}

void tree_inval_entry(struct tree *t, struct node *parent, const char *name)
{
	if (t->inval_entry)
		t->inval_entry(t->inval_arg, parent, name);
}

void tree_inval_inode(struct tree *t, struct node *n)
{
	if (t->inval_inode)
		t->inval_inode(t->inval_arg, n);
}

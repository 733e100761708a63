/*
 * The pusher: a thread that pushes each settled draft (its blobs, then its
 * manifest, then the tag or the referrers index), what a crash left staged,
 * and everything pending at unmount.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/rand.h>

#include "buf.h"
#include "cache.h"
#include "digest.h"
#include "journal.h"
#include "keeper.h"
#include "log.h"
#include "manifest.h"
#include "push-int.h"
#include "push.h"
#include "ref.h"
#include "registry.h"
#include "tree-int.h"

void push_node_release(struct node *n)
{
	if (n->kind == NODE_STAGED) {
		staged_free(file_of(n)->staged);
		file_of(n)->staged = NULL;
	} else if (n->kind == NODE_ARTIFACT) {
		draft_free(node_draft(n));
		art_of_node(n)->draft = NULL;
	}
}

/*
 * A referrer pushed anew (files removed from it) takes the place of the old
 * one: the old manifest deleted, its entry out of the subject's fallback
 * index. The new one is up already, so a failure here loses nothing: logged.
 */
static void replaced_detach(
	struct registry *r, const char *repo, const char *subject, const char *old, const char *now)
{
	int ret = registry_delete_manifest(r, repo, old);

	if (ret == 0 || ret == -ENOENT)
		ret = registry_referrers_fallback_update(r, repo, subject, old, NULL, 0);
	if (ret)
		log_warn("%s/%s@%s: replaced by %s, but still attached: %s", registry_host(r), repo,
			old, now, strerror(-ret));
	else
		log_info("%s/%s@%s: detached, replaced by %s", registry_host(r), repo, old, now);
}

/* Take layer k out of a draft's manifest, with its staged entry; later entries follow it. */
static void drop_layer(struct json_object *layers, struct json_object *staged, int k)
{
	size_t i = json_object_array_length(staged);
	struct json_object *li;

	json_object_array_del_idx(layers, (size_t)k, 1);
	while (i-- > 0) {
		struct json_object *e = json_object_array_get_idx(staged, i);
		int v = json_object_object_get_ex(e, "layer", &li) ? json_object_get_int(li) : -1;

		if (v == k)
			json_object_array_del_idx(staged, i, 1);
		else if (v > k)
			json_object_object_add(e, "layer", json_object_new_int(v - 1));
	}
}

/*
 * The files in dir that its draft does not name: files an earlier run was
 * still writing when it stopped, never closed (a draft names a file once it
 * is closed). Each is said and removed. How many there were.
 */
static unsigned drop_unnamed(const char *dir, struct json_object *staged, const char *label)
{
	size_t i, n = json_object_array_length(staged);
	unsigned dropped = 0;
	struct dirent *e;
	struct stat st;
	DIR *d = opendir(dir);

	while (d && (e = readdir(d))) {
		bool named = false;

		if (e->d_name[0] == '.' || strncmp(e->d_name, "draft.json", 10) == 0 ||
			fstatat(dirfd(d), e->d_name, &st, 0) || !S_ISREG(st.st_mode))
			continue;
		for (i = 0; i < n && !named; i++) {
			const char *f = draft_jstr(json_object_array_get_idx(staged, i), "file");

			named = f && strcmp(f, e->d_name) == 0;
		}
		if (named)
			continue;
		log_warn("%s: %s (%lld bytes) was never closed: dropped", label, e->d_name,
			(long long)st.st_size);
		unlinkat(dirfd(d), e->d_name, 0);
		dropped++;
	}
	if (d)
		closedir(d);
	return dropped;
}

/*
 * Push what dir/draft.json describes: every staged file's blob (hashed if
 * it was not uploaded, and checked against the digest and size it had when
 * it was closed), the empty config, then the manifest under the tag. A file
 * that is not as it was closed (a writer was at it again) fails the push
 * with -EBUSY; when recovering what an earlier run left, it is dropped
 * instead, as are files the draft does not name, and a draft left with no
 * file at all that way is not pushed (-ENODATA). On success *root is the
 * draft (its layer digests filled in), *body the manifest pushed and digest
 * its digest. 0 or -errno.
 */
static int push_draft_dir(struct tree *t, const char *dir, bool recovering,
	struct json_object **root_out, char **body_out, char *digest, char *label,
	size_t label_size)
{
	struct json_object *root, *m, *staged, *layers, *ann, *cfg, *subj = NULL;
	char path[PATH_MAX], created[32], *text = NULL;
	const char *host, *repo, *tag, *s;
	struct site *site;
	size_t i, n, len;
	unsigned dropped = 0;
	int *drop = NULL, ndrop = 0;
	struct tm tm;
	time_t now;
	bool kept = false;
	int ret;

	snprintf(path, sizeof(path), "%s/draft.json", dir);
	root = json_object_from_file(path);
	host = root ? draft_jstr(root, "host") : NULL;
	repo = root ? draft_jstr(root, "repo") : NULL;
	tag = root ? draft_jstr(root, "tag") : NULL;
	snprintf(label, label_size, "%s/%s:%s", host ? host : "?", repo ? repo : "?",
		tag ? tag : "(a referrer)");
	if (!host || !repo || !ref_valid_repo(repo) || (tag && !ref_valid_tag(tag)) ||
		!json_object_object_get_ex(root, "manifest", &m) ||
		(!tag && !json_object_object_get_ex(m, "subject", &subj)) ||
		!json_object_object_get_ex(m, "layers", &layers) ||
		!json_object_object_get_ex(root, "staged", &staged)) {
		log_err("%s: not a draft ocifs can read", path);
		json_object_put(root);
		return -EBADMSG;
	}
	ret = tree_site_get(t, host, &site);
	if (ret)
		goto out;
	if (recovering)
		dropped = drop_unnamed(dir, staged, label);
	if (recovering && json_object_object_get_ex(root, "touched", &cfg) &&
		!json_object_get_boolean(cfg)) {
		/* made (a tag, a file begun) and never changed: nothing to push */
		ret = -ENODATA;
		goto out;
	}
	n = json_object_array_length(staged);
	drop = calloc(n + 1, sizeof(*drop));
	if (!drop) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n && !ret; i++) {
		struct json_object *e = json_object_array_get_idx(staged, i), *l, *li, *up, *v;
		const char *file = draft_jstr(e, "file"), *want;
		char got[DIGEST_STR_LEN + 1];
		int64_t size, want_size;
		int fd;

		if (!file || strchr(file, '/') || !json_object_object_get_ex(e, "layer", &li) ||
			!(l = json_object_array_get_idx(layers, (size_t)json_object_get_int(li)))) {
			ret = -EBADMSG;
			break;
		}
		if (json_object_object_get_ex(e, "uploaded", &up) && json_object_get_boolean(up) &&
			(s = draft_jstr(l, "digest")) && digest_supported(s))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, file);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
			log_err("%s: staged file %s: %s", label, path, strerror(errno));
			break;
		}
		/* as it was closed (a draft of an older ocifs does not say) */
		want = draft_jstr(e, "digest");
		want_size =
			json_object_object_get_ex(e, "size", &v) ? json_object_get_int64(v) : -1;
		ret = digest_fd(fd, -1, got, &size);
		if (!ret && ((want_size >= 0 && size != want_size) ||
				    (want && digest_supported(want) && strcmp(want, got) != 0))) {
			/* not the file as it was closed: a writer opened it again */
			s = json_object_object_get_ex(l, "annotations", &v)
				    ? draft_jstr(v, ANN_TITLE)
				    : NULL;
			if (recovering) {
				log_warn("%s: %s was being written again when an earlier run "
					 "stopped, its bytes as closed are gone: dropped",
					label, s ? s : file);
				drop[ndrop++] = json_object_get_int(li);
			} else {
				log_info("%s: %s is being written again: pushed once it is closed",
					label, s ? s : file);
				ret = -EBUSY;
			}
			close(fd);
			continue;
		}
		if (!ret) {
			json_object_object_add(l, "digest", json_object_new_string(got));
			json_object_object_add(l, "size", json_object_new_int64(size));
			ret = staged_upload(t, site->reg, repo, got, fd, size);
		}
		close(fd);
	}
	/* the last layer first: the indices of those before it stay */
	while (!ret && ndrop > 0) {
		int k = 0, j;

		for (j = 1; j < ndrop; j++)
			if (drop[j] > drop[k])
				k = j;
		drop_layer(layers, staged, drop[k]);
		drop[k] = drop[--ndrop];
		dropped++;
	}
	if (!ret && dropped > 0 && json_object_array_length(layers) == 0) {
		log_warn("%s: no file an earlier run staged was closed: nothing to push", label);
		ret = -ENODATA;
	}
	if (!ret && json_object_object_get_ex(m, "config", &cfg) &&
		(s = draft_jstr(cfg, "digest")) && strcmp(s, EMPTY_DIGEST) == 0)
		ret = registry_push_empty_config(site->reg, repo);
	if (ret)
		goto out;
	now = time(NULL);
	gmtime_r(&now, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (!json_object_object_get_ex(m, "annotations", &ann)) {
		ann = json_object_new_object();
		json_object_object_add(m, "annotations", ann);
	}
	json_object_object_add(ann, ANN_CREATED, json_object_new_string(created));
	s = json_object_to_json_string_ext(
		m, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	len = strlen(s);
	text = strdup(s);
	if (!text) {
		ret = -ENOMEM;
		goto out;
	}
	digest_buffer(text, len, digest);
	ret = registry_put_manifest(
		site->reg, repo, tag ? tag : digest, MT_OCI_MANIFEST, text, len, &kept);
	/* A registry without the referrers API: the subject's fallback index gets the entry. */
	if (!ret && subj && !kept)
		ret = registry_referrers_fallback_update(
			site->reg, repo, draft_jstr(subj, "digest"), digest, m, len);
	if (ret)
		goto out;
	cache_put(t->cache, digest, text, len);
	if (!tag)
		snprintf(label, label_size, "%s/%s@%s", host, repo, digest);
	log_info("%s: pushed %s", label, digest);
	s = draft_jstr(root, "replaces");
	if (subj && s && ref_valid_digest(s) && strcmp(s, digest) != 0)
		replaced_detach(site->reg, repo, draft_jstr(subj, "digest"), s, digest);
	*root_out = root;
	*body_out = text;
	free(drop);
	return 0;
out:
	free(drop);
	free(text);
	json_object_put(root);
	return ret;
}

/* Staged files of the subtree below n become blobs of the cache; their nodes follow them. */
static void adopt_staged(struct tree *t, struct node *n, struct json_object *root)
{
	struct json_object *staged, *m, *layers;
	size_t i, k, ns;

	if (!json_object_object_get_ex(root, "staged", &staged) ||
		!json_object_object_get_ex(root, "manifest", &m) ||
		!json_object_object_get_ex(m, "layers", &layers))
		return;
	ns = json_object_array_length(staged);
	for (i = 0; i < n->n_children; i++) {
		struct node *c = n->children[i];
		const char *base;

		if (c->kind == NODE_DIR && !c->hidden)
			adopt_staged(t, c, root);
		if (c->kind != NODE_STAGED || !file_of(c)->staged)
			continue;
		base = strrchr(file_of(c)->staged->path, '/');
		for (k = 0; base && k < ns; k++) {
			struct json_object *e = json_object_array_get_idx(staged, k), *li, *l;
			const char *file = draft_jstr(e, "file"), *dg;
			char to[PATH_MAX], *p;

			if (!file || strcmp(file, base + 1) != 0 ||
				!json_object_object_get_ex(e, "layer", &li))
				continue;
			l = json_object_array_get_idx(layers, (size_t)json_object_get_int(li));
			dg = l ? draft_jstr(l, "digest") : NULL;
			if (dg &&
				cache_adopt(t->cache, dg, file_of(c)->staged->path, to,
					sizeof(to)) == 0 &&
				(p = strdup(to))) {
				free(file_of(c)->staged->path);
				file_of(c)->staged->path = p;
			}
			break;
		}
	}
}

/* art is in the registry now: so are the new repositories above it. Caller holds t->nodes.lock. */
static void mark_pushed(struct tree *t, struct node *art)
{
	struct node *n;

	reg_of(art)->local = false;
	tree_pin(t, art);
	for (n = art->parent; n && n->kind == NODE_NS; n = n->parent) {
		/* list again: the tag is there */
		__atomic_store_n(&ns_of(n)->tags_at, 0, __ATOMIC_RELAXED);
		reg_of(n)->local = false;
		ns_of(n)->new_repo = false;
		tree_pin(t, n);
	}
}

/*
 * What a push of the draft below n names: *named counts its files (of the
 * registry, or staged as last closed), *writing its staged files being
 * written (left out, or named as they were before). Caller holds t->lock.
 */
static void draft_files(const struct node *n, unsigned *named, unsigned *writing)
{
	size_t i;

	for (i = 0; i < n->n_children; i++) {
		const struct node *c = n->children[i];
		const char *digest;
		int64_t size;
		bool up;

		if (c->hidden)
			continue;
		if (c->kind == NODE_DIR)
			draft_files(c, named, writing);
		else if (c->kind == NODE_BLOB)
			(*named)++;
		else if (c->kind == NODE_STAGED && file_of(c)->staged) {
			if (staged_version(c, &digest, &size, &up))
				(*named)++;
			if (file_of(c)->staged->dirty)
				(*writing)++;
		}
	}
}

/* Whether a push of art's draft would name a file. Caller holds t->lock. */
static bool names_files(const struct node *art)
{
	unsigned named = 0, writing = 0;

	draft_files(art, &named, &writing);
	return named > 0;
}

int pusher_push(struct tree *t, struct node *art, bool force)
{
	struct json_object *root = NULL;
	char digest[DIGEST_STR_LEN + 1], label[600], dir[PATH_MAX];
	unsigned gen, named = 0, writing = 0;
	struct draft *d;
	char *body = NULL;
	int ret;

	pthread_mutex_lock(&t->push->push_lock);
	pthread_mutex_lock(&t->nodes.lock);
	d = node_draft(art);
	if (!d || (d->gen == d->pushed_gen && !force)) {
		pthread_mutex_unlock(&t->nodes.lock);
		pthread_mutex_unlock(&t->push->push_lock);
		return 0;
	}
	draft_files(art, &named, &writing);
	if (writing > 0 && named == 0) {
		/* a tag is never made of files still being written (an emptied one is) */
		log_info("%s:%s: its files are still being written: nothing to push yet",
			reg_of(art)->repo, art_of_node(art)->ref);
		pthread_mutex_unlock(&t->nodes.lock);
		pthread_mutex_unlock(&t->push->push_lock);
		return -EBUSY;
	}
	if (writing > 0)
		log_info("%s:%s: %u file(s) still being written: pushed as last closed, if ever",
			reg_of(art)->repo, art_of_node(art)->ref, writing);
	/* art's draft pins it; the push may drop that pin while art is still used */
	node_hold(&t->nodes, art);
	gen = d->gen;
	snprintf(dir, sizeof(dir), "%s", d->dir);
	pthread_mutex_unlock(&t->nodes.lock);

	ret = draft_save(t, art);
	if (!ret)
		ret = push_draft_dir(t, dir, false, &root, &body, digest, label, sizeof(label));
	if (ret) {
		log_err("%s: push failed: %s; the staged files stay in %s", label, strerror(-ret),
			dir);
		pthread_mutex_lock(&t->nodes.lock);
		if (node_draft(art)) {
			node_draft(art)->retry_at = draft_clock() + PUSH_RETRY_SECS(t);
			node_draft(art)->last_err = ret;
		}
		t->push->failures++;
		pthread_mutex_unlock(&t->nodes.lock);
		goto out;
	}
	pthread_mutex_lock(load_lock_of(art));
	pthread_mutex_lock(&t->nodes.lock);
	d = node_draft(art);
	named = writing = 0;
	if (d)
		draft_files(art, &named, &writing);
	if (d && (d->gen != gen || writing > 0)) {
		/*
		 * Changed while it was pushing, or a file of it is still being
		 * written (its staged bytes stay where its writer has them): the
		 * next push takes the rest, the one its close makes. The tag is
		 * in the registry now.
		 */
		d->pushed_gen = gen;
		if (!d->subject)
			mark_pushed(t, art);
		pthread_mutex_unlock(&t->nodes.lock);
		pthread_mutex_unlock(load_lock_of(art));
		goto out;
	}
	adopt_staged(t, art, root);
	art_of_node(art)->draft = NULL;
	tree_pin(t, art);
	draft_unlist(t, art);
	t->push->pushed++;
	if (d && d->subject) {
		struct node *n;

		/*
		 * It shows under its digest now, with the subject's other
		 * referrers; the type directories above it are the registry's
		 * now, gone once nothing is left in them (referrers_merge).
		 */
		for (n = art->parent; n && n != d->referrers && n->kind == NODE_DIR;
			n = n->parent) {
			reg_of(n)->local = false;
			tree_pin(t, n);
		}
		if (art->parent)
			node_delete(&t->nodes, art->parent, art);
		if (d->referrers) {
			art_of_node(d->referrers)->loaded = false;
			reg_of(d->referrers)->local = false;
			tree_pin(t, d->referrers);
		}
		pthread_mutex_unlock(&t->nodes.lock);
		pthread_mutex_unlock(load_lock_of(art));
		ret = 0;
	} else {
		mark_pushed(t, art);
		pthread_mutex_unlock(&t->nodes.lock);
		ret = tree_artifact_install(t, art, digest, body, strlen(body));
		pthread_mutex_unlock(load_lock_of(art));
	}
	if (d)
		draft_dir_remove(d->dir);
	draft_free(d);
out:
	pthread_mutex_lock(&t->nodes.lock);
	node_drop(&t->nodes, art);
	pthread_mutex_unlock(&t->nodes.lock);
	json_object_put(root);
	free(body);
	pthread_mutex_unlock(&t->push->push_lock);
	return ret;
}

bool pusher_has_files(const struct node *n)
{
	size_t i;

	for (i = 0; i < n->n_children; i++) {
		const struct node *c = n->children[i];

		if (c->hidden)
			continue;
		if (c->kind == NODE_BLOB || c->kind == NODE_STAGED ||
			(c->kind == NODE_DIR && pusher_has_files(c)))
			return true;
	}
	return false;
}

/* Whether the draft root was staged for a registry this mount shows. */
static bool host_ours(struct tree *t, struct json_object *root)
{
	const char *host = draft_jstr(root, "host");

	return host && (t->root->kind == NODE_HOSTS ||
			       strcmp(ref_canonical_host(host),
				       registry_host(reg_of(t->root)->site->reg)) == 0);
}

/* Drafts left in the staging area by an earlier daemon: push them, or say why not. */
static void recover(struct tree *t)
{
	char base[PATH_MAX], dir[PATH_MAX], path[PATH_MAX], label[600];
	char digest[DIGEST_STR_LEN + 1];
	struct strlist *l = &t->push->leftover;
	size_t i;

	snprintf(base, sizeof(base), "%s/staging", cache_dir(t->cache));
	for (i = 0; i < l->n; i++) {
		struct json_object *root = NULL;
		char *body = NULL;
		int ret;

		if (!l->v[i][0])
			continue; /* taken over */
		if ((size_t)snprintf(dir, sizeof(dir), "%s/%s", base, l->v[i]) >= sizeof(dir) ||
			(size_t)snprintf(path, sizeof(path), "%s/draft.json", dir) >= sizeof(path))
			continue;
		if (access(path, F_OK) != 0) {
			/*
			 * No file of it was ever closed: nothing complete to push. A
			 * file being written when the daemon stopped is dropped, said.
			 */
			uint64_t bytes = cache_files_bytes(dir, false);

			if (bytes > 0)
				log_warn("staging %s: %llu bytes of files an earlier run was still "
					 "writing when it stopped (never closed): dropped",
					l->v[i], (unsigned long long)bytes);
			draft_dir_remove(dir);
			continue;
		}
		{
			struct json_object *j = json_object_from_file(path);
			bool ours = j && host_ours(t, j);

			json_object_put(j);
			if (!ours)
				continue; /* another mount's: left for it */
		}
		ret = push_draft_dir(t, dir, true, &root, &body, digest, label, sizeof(label));
		if (ret == 0) {
			log_info("%s: pushed what an earlier run had staged", label);
			draft_dir_remove(dir);
		} else if (ret == -ENODATA) {
			draft_dir_remove(dir); /* nothing of it was closed: said, dropped */
		} else {
			log_err("%s: staged by an earlier run, push failed: %s; kept in %s", label,
				strerror(-ret), dir);
		}
		json_object_put(root);
		free(body);
	}
	strlist_release(l);
}

/* The pusher thread while it opens again what writers hold: it does not wait for itself. */
static __thread bool adopter;

/*
 * Drafts that an earlier server of this mount (its journal's id) left: taken
 * over as they were, their names out of the list recover() goes through.
 * Then the kernel's ids may be looked up again.
 */
static void adopt_all(struct tree *t)
{
	char dir[PATH_MAX], path[PATH_MAX], owner[17];
	struct strlist *l = &t->push->leftover;
	uint64_t mount_id = journal_mount_id();
	bool keeper = keeper_pid() > 0 && mount_id;
	size_t i;

	snprintf(owner, sizeof(owner), "%016llx", (unsigned long long)mount_id);
	for (i = 0; keeper && i < l->n; i++) {
		struct json_object *root;
		const char *o;
		int ret;

		if ((size_t)snprintf(dir, sizeof(dir), "%s/staging/%s", cache_dir(t->cache),
			    l->v[i]) >= sizeof(dir) ||
			(size_t)snprintf(path, sizeof(path), "%s/draft.json", dir) >= sizeof(path))
			continue;
		root = json_object_from_file(path);
		o = root ? draft_jstr(root, "owner") : NULL;
		if (o && strcmp(o, owner) == 0 && host_ours(t, root)) {
			ret = push_adopt(t, dir, root);
			if (ret == 0)
				l->v[i][0] = '\0';
			else
				log_warn(
					"staging %s: what the server before staged cannot be taken "
					"over (%s): pushed as after a crash",
					l->v[i], strerror(-ret));
		}
		json_object_put(root);
	}
	/* the writers of what was taken over count again before the pusher looks at it */
	if (t->push->reopen && keeper) {
		adopter = true;
		t->push->reopen(t);
		push_adopt_seal(t);
		adopter = false;
	}
	pthread_mutex_lock(&t->nodes.lock);
	__atomic_store_n(&t->push->adopting, false, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&t->push->adopted_cond);
	pthread_mutex_unlock(&t->nodes.lock);
}

void push_wait_adopted(struct tree *t)
{
	struct push *p = t->push;

	if (!p || adopter || !__atomic_load_n(&p->adopting, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&t->nodes.lock);
	while (__atomic_load_n(&p->adopting, __ATOMIC_ACQUIRE))
		pthread_cond_wait(&p->adopted_cond, &t->nodes.lock);
	pthread_mutex_unlock(&t->nodes.lock);
}

/* The staging directories there are before this run makes any. */
static int list_leftovers(struct tree *t)
{
	char base[PATH_MAX];
	struct dirent *e;
	int ret = 0;
	DIR *d;

	snprintf(base, sizeof(base), "%s/staging", cache_dir(t->cache));
	d = opendir(base);
	if (!d)
		return 0;
	while (!ret && (e = readdir(d)))
		if (e->d_name[0] != '.')
			ret = strlist_add(&t->push->leftover, e->d_name);
	closedir(d);
	return ret;
}

static void *pusher(void *arg)
{
	struct tree *t = arg;
	struct push *p = t->push;

	/* an upgrade: the server replaced still pushes its own drafts */
	keeper_wait_alone();
	if (p->upgrade) {
		/* and may have made some after they were listed */
		strlist_release(&p->leftover);
		if (list_leftovers(t))
			log_warn("staging: cannot list what the server before staged");
	}
	adopt_all(t);
	recover(t);
	pthread_mutex_lock(&t->nodes.lock);
	while (!p->stop) {
		double now = draft_clock();
		struct node *pick = NULL;
		struct timespec ts;
		size_t i;

		for (i = 0; i < p->n_drafts && !pick; i++) {
			struct node *a = p->drafts[i];
			struct draft *d = node_draft(a);

			if (d && d->gen != d->pushed_gen && d->writers == 0 &&
				now - d->changed_at >= (double)t->opts.push_delay &&
				now >= d->retry_at && names_files(a))
				pick = a;
		}
		if (pick) {
			unsigned op = node_op_enter_locked(&t->nodes);

			pthread_mutex_unlock(&t->nodes.lock);
			pusher_push(t, pick, false);
			node_op_leave(&t->nodes, op);
			pthread_mutex_lock(&t->nodes.lock);
			continue;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&p->cond, &t->nodes.lock, &ts);
	}
	pthread_mutex_unlock(&t->nodes.lock);
	return NULL;
}

int push_start(struct tree *t, void (*reopen)(struct tree *t))
{
	struct push *p = calloc(1, sizeof(*p));
	int ret;

	if (!p)
		return -ENOMEM;
	pthread_cond_init(&p->cond, NULL);
	pthread_cond_init(&p->adopted_cond, NULL);
	pthread_mutex_init(&p->push_lock, NULL);
	p->reopen = reopen;
	t->push = p;
	if (t->opts.read_only)
		return 0;
	ret = list_leftovers(t);
	if (ret)
		return ret;
	/* before any request is read: none may find the tree without them */
	if (keeper_pid() > 0) {
		p->adopting = p->leftover.n > 0 || journal_foreign_made(NULL) > 0;
		/* an upgrade: what the old server stages until it exits is taken over too */
		p->upgrade = keeper_upgrading();
	}
	ret = pthread_create(&p->thread, NULL, pusher, t);
	if (ret) {
		log_err("cannot start the pusher: %s", strerror(ret));
		return -ret;
	}
	p->started = true;
	return 0;
}

void push_stop(struct tree *t)
{
	struct push *p = t->push;
	struct node **v;
	size_t i, n;

	if (!p)
		return;
	if (p->started) {
		pthread_mutex_lock(&t->nodes.lock);
		p->stop = true;
		pthread_cond_signal(&p->cond);
		pthread_mutex_unlock(&t->nodes.lock);
		pthread_join(p->thread, NULL);
		p->started = false;
	}
	/*
	 * Every settled change goes up before the daemon exits, but for one
	 * replaced by another server: that one takes its drafts over.
	 */
	pthread_mutex_lock(&t->nodes.lock);
	n = keeper_replaced() ? 0 : p->n_drafts;
	v = n ? malloc(n * sizeof(*v)) : NULL;
	if (v)
		memcpy(v, p->drafts, n * sizeof(*v));
	pthread_mutex_unlock(&t->nodes.lock);
	for (i = 0; v && i < n; i++) {
		bool want;

		pthread_mutex_lock(&t->nodes.lock);
		/* a file still being written when the daemon stops is no part of it */
		want = node_draft(v[i]) && node_draft(v[i])->gen != node_draft(v[i])->pushed_gen &&
		       names_files(v[i]);
		pthread_mutex_unlock(&t->nodes.lock);
		if (want)
			pusher_push(t, v[i], true);
	}
	free(v);
	pthread_cond_destroy(&p->cond);
	pthread_cond_destroy(&p->adopted_cond);
	pthread_mutex_destroy(&p->push_lock);
	strlist_release(&p->leftover);
	free(p->drafts);
	free(p);
	t->push = NULL;
}

int push_stats_json(struct tree *t, struct json_object *o)
{
	struct json_object *list = json_object_new_array();
	unsigned pending = 0, failed = 0;
	size_t i;

	if (!list)
		return -ENOMEM;
	pthread_mutex_lock(&t->nodes.lock);
	for (i = 0; t->push && i < t->push->n_drafts; i++) {
		struct node *art = t->push->drafts[i];
		struct draft *d = node_draft(art);
		struct json_object *e;
		char tag[600];

		if (!d)
			continue;
		snprintf(tag, sizeof(tag), "%s/%s%s%s", registry_host(reg_of(art)->site->reg),
			reg_of(art)->repo, art_of_node(art)->by_digest ? "@" : ":",
			art_of_node(art)->ref ? art_of_node(art)->ref : art->name);
		e = json_object_new_object();
		if (!e)
			break;
		json_object_object_add(e, "tag", json_object_new_string(tag));
		json_object_object_add(
			e, "state", json_object_new_string(d->last_err ? "failed" : "pending"));
		if (d->last_err)
			json_object_object_add(
				e, "last_error", json_object_new_string(strerror(-d->last_err)));
		json_object_array_add(list, e);
		if (d->last_err)
			failed++;
		else
			pending++;
	}
	json_object_object_add(o, "pushes_pending", json_object_new_int((int)pending));
	json_object_object_add(o, "pushes_failed", json_object_new_int((int)failed));
	json_object_object_add(
		o, "pushes_done", json_object_new_int64((int64_t)(t->push ? t->push->pushed : 0)));
	json_object_object_add(o, "push_failures",
		json_object_new_int64((int64_t)(t->push ? t->push->failures : 0)));
	pthread_mutex_unlock(&t->nodes.lock);
	json_object_object_add(o, "drafts", list);
	return 0;
}

/*
 * The node core: names, parents, children, the kernel's lookup counts and
 * when a node is freed (node.h says the rules). It calls no provider by
 * name: what a node's kind holds is freed through t->node_release.
 */
#include "config.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "tree-int.h"

struct node *node_new(struct tree *t, struct node *parent, const char *name, enum node_kind kind)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->name = strdup(name);
	if (!n->name) {
		free(n);
		return NULL;
	}
	n->parent = parent;
	n->kind = kind;
	n->size = -1;
	n->mtime = t->start;
	if (parent) {
		n->site = parent->site;
		n->immutable = parent->immutable;
	}
	pthread_mutex_init(&n->load_lock, NULL);
	pthread_mutex_lock(&t->lock);
	n->generation = ++t->next_generation;
	n->all_next = t->all;
	if (t->all)
		t->all->all_prev = n;
	t->all = n;
	t->n_nodes++;
	pthread_mutex_unlock(&t->lock);
	return n;
}

/* Take n off t->all. Caller holds t->lock. */
static void all_unlink(struct tree *t, struct node *n)
{
	if (n->all_prev)
		n->all_prev->all_next = n->all_next;
	else
		t->all = n->all_next;
	if (n->all_next)
		n->all_next->all_prev = n->all_prev;
	n->all_next = n->all_prev = NULL;
	t->n_nodes--;
}

/* Free n: its kind's state through t->node_release, then the core's. No lock held. */
static void node_free(struct tree *t, struct node *n)
{
	t->node_release(t, n);
	pthread_mutex_destroy(&n->load_lock);
	free(n->name);
	free(n->children);
	free(n);
}

struct node_deferred {
	struct node_deferred *next;
	void (*fn)(struct tree *t, void *arg);
	void *arg;
};

static void deferred_run(struct tree *t, struct node_deferred *d)
{
	while (d) {
		struct node_deferred *next = d->next;

		d->fn(t, d->arg);
		free(d);
		d = next;
	}
}

void node_free_all(struct tree *t)
{
	struct node *n, *next;
	int k;

	for (k = 0; k < 2; k++) {
		deferred_run(t, t->deferred[k]);
		t->deferred[k] = NULL;
	}

	for (n = t->all; n; n = next) {
		next = n->all_next;
		node_free(t, n);
	}
	t->all = NULL;
}

/*
 * Take n and everything below it off t->all, chaining them through
 * grave_next after *list, for subtree_free(). Caller holds t->lock.
 */
static void subtree_take(struct tree *t, struct node *n, struct node **list)
{
	size_t i;

	for (i = 0; i < n->n_children; i++)
		subtree_take(t, n->children[i], list);
	all_unlink(t, n);
	n->grave_next = *list;
	*list = n;
}

/* Free a chain made by subtree_take(). No lock held. */
static size_t chain_free(struct tree *t, struct node *list)
{
	size_t count = 0;

	while (list) {
		struct node *next = list->grave_next;

		node_free(t, list);
		list = next;
		count++;
	}
	return count;
}

void node_discard(struct tree *t, struct node *n)
{
	struct node *list = NULL;

	pthread_mutex_lock(&t->lock);
	subtree_take(t, n, &list);
	pthread_mutex_unlock(&t->lock);
	chain_free(t, list);
}

/* Set or clear dead on n and below it. Caller holds t->lock. */
static void subtree_mark(struct node *n, bool dead)
{
	size_t i;

	n->dead = dead;
	for (i = 0; i < n->n_children; i++)
		subtree_mark(n->children[i], dead);
}

/* n was buried and is used again: off the graveyard, an orphan in use. Caller holds t->lock. */
static void revive(struct tree *t, struct node *n)
{
	struct node **pp;
	int k;

	for (k = 0; k < 2; k++)
		for (pp = &t->grave[k]; *pp; pp = &(*pp)->grave_next)
			if (*pp == n) {
				*pp = n->grave_next;
				n->grave_next = NULL;
				subtree_mark(n, false);
				return;
			}
	/* below a buried root: that root comes back when the ref reaches it */
}

void node_child_remove(struct node *dir, struct node *c)
{
	size_t i;

	for (i = 0; i < dir->n_children; i++)
		if (dir->children[i] == c) {
			memmove(&dir->children[i], &dir->children[i + 1],
				(dir->n_children - i - 1) * sizeof(dir->children[0]));
			dir->n_children--;
			c->orphan = true;
			return;
		}
}

static void node_put(struct tree *t, struct node *n);

/* Whether an unused n goes: made again when needed, or out of the tree already. */
static bool prunable(struct tree *t, const struct node *n)
{
	return n != t->root && n != t->status && n->parent && (n->cached || n->orphan);
}

static void bury(struct tree *t, struct node *n)
{
	struct node *dir = n->parent;

	if (!n->orphan) {
		node_child_remove(dir, n);
		/* its directory has to make it again when it next lists */
		dir->partial = true;
	}
	subtree_mark(n, true);
	n->grave_next = t->grave[t->epoch & 1];
	t->grave[t->epoch & 1] = n;
}

static void node_get(struct tree *t, struct node *n)
{
	for (; n; n = n->parent) {
		if (n->refs++ > 0)
			return;
		if (n->dead)
			revive(t, n);
	}
}

static void node_put(struct tree *t, struct node *n)
{
	for (; n; n = n->parent) {
		if (n->refs == 0) {
			log_err("node %s: reference count underflow", n->name);
			abort();
		}
		if (--n->refs > 0)
			return;
		if (prunable(t, n))
			bury(t, n);
	}
}

void node_hold(struct tree *t, struct node *n)
{
	node_get(t, n);
}

void node_drop(struct tree *t, struct node *n)
{
	node_put(t, n);
}

void node_keep(struct tree *t, struct node *n)
{
	/* a draft always pins: the pusher's list holds the node */
	bool want = n->draft || (!n->detached && n->local);

	if (want == n->kept)
		return;
	n->kept = want;
	if (want)
		node_get(t, n);
	else
		node_put(t, n);
}

/* n and below it are out of the tree for good: no pin applies. Caller holds t->lock. */
static void subtree_detach(struct tree *t, struct node *n)
{
	size_t i;

	n->detached = true;
	for (i = 0; i < n->n_children; i++)
		subtree_detach(t, n->children[i]);
	node_keep(t, n);
}

void node_orphan(struct tree *t, struct node *c)
{
	c->orphan = true;
	/* held across so that an unused c is buried once, as a whole */
	node_get(t, c);
	subtree_detach(t, c);
	node_put(t, c);
}

void node_delete(struct tree *t, struct node *dir, struct node *c)
{
	node_child_remove(dir, c);
	/* held across the unpinning so that c is buried once, as a whole */
	node_get(t, c);
	subtree_detach(t, c);
	node_put(t, c);
}

int node_move(struct tree *t, struct node *c, struct node *newdir)
{
	int ret = node_child_add(newdir, c);

	if (ret)
		return ret;
	if (c->refs > 0) {
		node_get(t, newdir);
		node_put(t, c->parent);
	}
	c->parent = newdir;
	c->orphan = false;
	return 0;
}

void node_entry_given(struct tree *t, struct node *n)
{
	pthread_mutex_lock(&t->lock);
	n->nlookup++;
	node_get(t, n);
	pthread_mutex_unlock(&t->lock);
}

void node_forget(struct tree *t, struct node *n, uint64_t nlookup)
{
	pthread_mutex_lock(&t->lock);
	if (n == t->root || nlookup > n->nlookup) {
		/* the root is never counted; more than was given is the kernel's bug, not ours */
		nlookup = n == t->root ? 0 : n->nlookup;
	}
	n->nlookup -= nlookup;
	while (nlookup--)
		node_put(t, n);
	pthread_mutex_unlock(&t->lock);
}

void node_handle_open(struct tree *t, struct node *n)
{
	pthread_mutex_lock(&t->lock);
	node_get(t, n);
	pthread_mutex_unlock(&t->lock);
}

void node_handle_close(struct tree *t, struct node *n)
{
	pthread_mutex_lock(&t->lock);
	node_put(t, n);
	pthread_mutex_unlock(&t->lock);
}

uint64_t node_generation(const struct node *n)
{
	return n->generation;
}

void node_defer(struct tree *t, void (*fn)(struct tree *t, void *arg), void *arg)
{
	struct node_deferred *d = malloc(sizeof(*d));

	if (!d) {
		/* out of memory: now, as before there were epochs */
		fn(t, arg);
		return;
	}
	d->fn = fn;
	d->arg = arg;
	pthread_mutex_lock(&t->lock);
	d->next = t->deferred[t->epoch & 1];
	t->deferred[t->epoch & 1] = d;
	pthread_mutex_unlock(&t->lock);
}

unsigned node_op_enter_locked(struct tree *t)
{
	t->ops[t->epoch & 1]++;
	return t->epoch;
}

unsigned node_op_enter(struct tree *t)
{
	unsigned e;

	pthread_mutex_lock(&t->lock);
	e = node_op_enter_locked(t);
	pthread_mutex_unlock(&t->lock);
	return e;
}

/* Freed nodes above this many hand their memory back to the system. */
#define TRIM_AFTER 4096

/*
 * A request ended. Once none that entered in the previous epoch runs, what
 * was buried then can be used by no one: it is freed, and a new epoch begins.
 */
void node_op_leave(struct tree *t, unsigned token)
{
	struct node *list = NULL, *g, *next;
	struct node_deferred *later = NULL;
	bool trim = false;
	size_t freed;
	int k;

	pthread_mutex_lock(&t->lock);
	t->ops[token & 1]--;
	/* with no request running at all, both epochs' work can go at once */
	for (k = t->ops[t->epoch & 1] == 0 ? 2 : 1; k > 0; k--) {
		struct node_deferred **dp;

		if (t->ops[(t->epoch + 1) & 1] != 0 ||
			!(t->grave[0] || t->grave[1] || t->deferred[0] || t->deferred[1]))
			break;
		/* the previous epoch's requests are done: its graveyard can go */
		for (g = t->grave[(t->epoch + 1) & 1]; g; g = next) {
			next = g->grave_next;
			subtree_take(t, g, &list);
		}
		t->grave[(t->epoch + 1) & 1] = NULL;
		for (dp = &later; *dp; dp = &(*dp)->next)
			;
		*dp = t->deferred[(t->epoch + 1) & 1];
		t->deferred[(t->epoch + 1) & 1] = NULL;
		t->epoch++;
	}
	pthread_mutex_unlock(&t->lock);
	deferred_run(t, later);
	if (!list)
		return;
	freed = chain_free(t, list);
	pthread_mutex_lock(&t->lock);
	t->freed_since_trim += freed;
	if (t->freed_since_trim >= TRIM_AFTER) {
		t->freed_since_trim = 0;
		trim = true;
	}
	pthread_mutex_unlock(&t->lock);
	if (trim)
		malloc_trim(0);
}

/* The child called name, or NULL. Caller holds t->lock (or owns dir privately). */
struct node *node_child_find(struct node *dir, const char *name)
{
	size_t i;

	for (i = 0; i < dir->n_children; i++)
		if (strcmp(dir->children[i]->name, name) == 0)
			return dir->children[i];
	return NULL;
}

/* Caller holds t->lock (or owns dir privately). */
int node_child_add(struct node *dir, struct node *c)
{
	if (dir->n_children == dir->cap_children) {
		size_t cap = dir->cap_children ? 2 * dir->cap_children : 8;
		struct node **v = realloc(dir->children, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		dir->children = v;
		dir->cap_children = cap;
	}
	dir->children[dir->n_children++] = c;
	/* what a namespace shows is looked up again once forgotten */
	if (dir->kind == NODE_NS || dir->kind == NODE_HOSTS)
		c->cached = true;
	return 0;
}

/*
 * The existing child of dir called name, or a new one made by make() and
 * added, so that racing lookups agree on one node.
 */
struct node *node_child_get_or_add(struct tree *t, struct node *dir, struct node *fresh)
{
	struct node *c;

	pthread_mutex_lock(&t->lock);
	c = node_child_find(dir, fresh->name);
	if (!c && node_child_add(dir, fresh) == 0)
		c = fresh;
	pthread_mutex_unlock(&t->lock);
	/* a losing fresh node was never seen by anyone else */
	if (c != fresh)
		node_discard(t, fresh);
	return c;
}

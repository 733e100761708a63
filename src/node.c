/*
 * The node core: names, parents, children, the kernel's lookup counts and
 * when a node is freed (node.h says the rules). It calls no provider by
 * name: what a node's kind holds is freed through its ops' release.
 */
#include "config.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "node.h"

void nodes_init(struct nodes *ns, void *owner)
{
	memset(ns, 0, sizeof(*ns));
	pthread_mutex_init(&ns->lock, NULL);
	ns->owner = owner;
}

struct node *node_new(struct nodes *ns, struct node *parent, const char *name, enum node_kind kind,
	const struct node_ops *ops, size_t size)
{
	struct node *n = calloc(1, size);

	if (!n)
		return NULL;
	n->name = strdup(name);
	if (!n->name) {
		free(n);
		return NULL;
	}
	n->parent = parent;
	n->kind = kind;
	n->ops = ops;
	pthread_mutex_lock(&ns->lock);
	n->generation = ++ns->next_generation;
	n->all_next = ns->all;
	if (ns->all)
		ns->all->all_prev = n;
	ns->all = n;
	ns->n_nodes++;
	pthread_mutex_unlock(&ns->lock);
	return n;
}

/* Take n off ns->all. Caller holds ns->lock. */
static void all_unlink(struct nodes *ns, struct node *n)
{
	if (n->all_prev)
		n->all_prev->all_next = n->all_next;
	else
		ns->all = n->all_next;
	if (n->all_next)
		n->all_next->all_prev = n->all_prev;
	n->all_next = n->all_prev = NULL;
	ns->n_nodes--;
}

/* Free n: its kind's state through its provider, then the core's. No lock held. */
static void node_free(struct nodes *ns, struct node *n)
{
	if (n->ops && n->ops->release)
		n->ops->release(ns->owner, n);
	free(n->name);
	free(n->children);
	free(n);
}

struct node_deferred {
	struct node_deferred *next;
	void (*fn)(void *owner, void *arg);
	void *arg;
};

static void deferred_run(struct nodes *ns, struct node_deferred *d)
{
	while (d) {
		struct node_deferred *next = d->next;

		d->fn(ns->owner, d->arg);
		free(d);
		d = next;
	}
}

void node_free_all(struct nodes *ns)
{
	struct node *n, *next;
	int k;

	for (k = 0; k < 2; k++) {
		deferred_run(ns, ns->deferred[k]);
		ns->deferred[k] = NULL;
	}

	for (n = ns->all; n; n = next) {
		next = n->all_next;
		node_free(ns, n);
	}
	ns->all = NULL;
}

/*
 * Take n and everything below it off ns->all, chaining them through
 * grave_next after *list, for subtree_free(). Caller holds ns->lock.
 */
static void subtree_take(struct nodes *ns, struct node *n, struct node **list)
{
	size_t i;

	for (i = 0; i < n->n_children; i++)
		subtree_take(ns, n->children[i], list);
	all_unlink(ns, n);
	n->grave_next = *list;
	*list = n;
}

/* Free a chain made by subtree_take(). No lock held. */
static size_t chain_free(struct nodes *ns, struct node *list)
{
	size_t count = 0;

	while (list) {
		struct node *next = list->grave_next;

		node_free(ns, list);
		list = next;
		count++;
	}
	return count;
}

void node_discard(struct nodes *ns, struct node *n)
{
	struct node *list = NULL;

	pthread_mutex_lock(&ns->lock);
	subtree_take(ns, n, &list);
	pthread_mutex_unlock(&ns->lock);
	chain_free(ns, list);
}

/* Set or clear dead on n and below it. Caller holds ns->lock. */
static void subtree_mark(struct node *n, bool dead)
{
	size_t i;

	n->dead = dead;
	for (i = 0; i < n->n_children; i++)
		subtree_mark(n->children[i], dead);
}

/* n was buried and is used again: off the graveyard, an orphan in use. Caller holds ns->lock. */
static void revive(struct nodes *ns, struct node *n)
{
	struct node **pp;
	int k;

	for (k = 0; k < 2; k++)
		for (pp = &ns->grave[k]; *pp; pp = &(*pp)->grave_next)
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

static void node_put(struct nodes *ns, struct node *n);

/* Whether an unused n goes: made again when needed, or out of the tree already. */
static bool prunable(struct nodes *ns, const struct node *n)
{
	return n->parent && (n->cached || n->orphan);
}

static void bury(struct nodes *ns, struct node *n)
{
	struct node *dir = n->parent, *succ = n->successor;

	if (!n->orphan) {
		node_child_remove(dir, n);
		/* its directory has to make it again when it next lists */
		dir->partial = true;
	}
	subtree_mark(n, true);
	n->grave_next = ns->grave[ns->epoch & 1];
	ns->grave[ns->epoch & 1] = n;
	/* nothing reaches n any more to be sent on */
	if (succ) {
		__atomic_store_n(&n->successor, NULL, __ATOMIC_RELEASE);
		node_put(ns, succ);
	}
}

static void node_get(struct nodes *ns, struct node *n)
{
	for (; n; n = n->parent) {
		if (n->refs++ > 0)
			return;
		if (n->dead)
			revive(ns, n);
	}
}

static void node_put(struct nodes *ns, struct node *n)
{
	for (; n; n = n->parent) {
		if (n->refs == 0) {
			log_err("node %s: reference count underflow", n->name);
			abort();
		}
		if (--n->refs > 0)
			return;
		if (prunable(ns, n))
			bury(ns, n);
	}
}

void node_hold(struct nodes *ns, struct node *n)
{
	node_get(ns, n);
}

void node_drop(struct nodes *ns, struct node *n)
{
	node_put(ns, n);
}

/* Take or let go of the pin's ref, as the pins and detached say. Caller holds ns->lock. */
static void pin_apply(struct nodes *ns, struct node *n)
{
	bool want = n->pin_hard || (!n->detached && n->pin_soft);

	if (want == n->pinned)
		return;
	n->pinned = want;
	if (want)
		node_get(ns, n);
	else
		node_put(ns, n);
}

void node_pin(struct nodes *ns, struct node *n, bool soft, bool hard)
{
	n->pin_soft = soft;
	n->pin_hard = hard;
	pin_apply(ns, n);
}

/* n and below it are out of the tree for good: no pin applies. Caller holds ns->lock. */
static void subtree_detach(struct nodes *ns, struct node *n)
{
	size_t i;

	n->detached = true;
	for (i = 0; i < n->n_children; i++)
		subtree_detach(ns, n->children[i]);
	pin_apply(ns, n);
}

void node_orphan(struct nodes *ns, struct node *c)
{
	c->orphan = true;
	/* held across so that an unused c is buried once, as a whole */
	node_get(ns, c);
	subtree_detach(ns, c);
	node_put(ns, c);
}

void node_delete(struct nodes *ns, struct node *dir, struct node *c)
{
	node_child_remove(dir, c);
	/* held across the unpinning so that c is buried once, as a whole */
	node_get(ns, c);
	subtree_detach(ns, c);
	node_put(ns, c);
}

int node_move(struct nodes *ns, struct node *c, struct node *newdir)
{
	int ret = node_child_add(newdir, c);

	if (ret)
		return ret;
	if (c->refs > 0) {
		node_get(ns, newdir);
		node_put(ns, c->parent);
	}
	c->parent = newdir;
	c->orphan = false;
	return 0;
}

void node_replace(struct nodes *ns, struct node *old, struct node *fresh)
{
	struct node *dir = old->parent;
	size_t i;

	/* what comes into the tree is sent on nowhere (a replacement undone) */
	if (fresh->successor) {
		struct node *s = fresh->successor;

		__atomic_store_n(&fresh->successor, NULL, __ATOMIC_RELEASE);
		node_put(ns, s);
	}
	node_get(ns, fresh); /* old's, for what it sends on */
	for (i = 0; dir && i < dir->n_children; i++)
		if (dir->children[i] == old) {
			dir->children[i] = fresh;
			break;
		}
	fresh->parent = dir;
	fresh->orphan = old->orphan;
	fresh->hidden = old->hidden;
	fresh->cached = old->cached;
	/* the children come along, with the refs of those in use */
	fresh->children = old->children;
	fresh->n_children = old->n_children;
	fresh->cap_children = old->cap_children;
	old->children = NULL;
	old->n_children = old->cap_children = 0;
	for (i = 0; i < fresh->n_children; i++) {
		struct node *c = fresh->children[i];

		c->parent = fresh;
		if (c->refs > 0) {
			node_get(ns, fresh);
			node_put(ns, old);
		}
	}
	__atomic_store_n(&old->successor, fresh, __ATOMIC_RELEASE);
	old->orphan = true;
	/* what is replaced holds nothing of its own any more */
	old->pin_soft = old->pin_hard = false;
	pin_apply(ns, old);
	/* held across so that an unused old is buried once */
	node_get(ns, old);
	node_put(ns, old);
}

struct node *node_current(struct node *n)
{
	struct node *s;

	/* without ns->lock too: what a request finds stays valid until it ends (the epochs) */
	while ((s = __atomic_load_n(&n->successor, __ATOMIC_ACQUIRE)))
		n = s;
	return n;
}

/* One more lookup the kernel holds of n. Caller holds ns->lock. */
/* 1 when it is the kernel's first lookup of n, else 0. */
static int entry_count(struct nodes *ns, struct node *n)
{
	node_get(ns, n);
	return n->nlookup++ == 0;
}

int node_entry_given(struct nodes *ns, struct node *n)
{
	int ret;

	pthread_mutex_lock(&ns->lock);
	ret = entry_count(ns, n);
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

int node_entry_found(struct nodes *ns, struct node *n)
{
	int ret;

	pthread_mutex_lock(&ns->lock);
	if (n->parent && (n->orphan || n->dead))
		ret = -ESTALE;
	else
		ret = entry_count(ns, n);
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

bool node_forget(struct nodes *ns, struct node *n, uint64_t nlookup)
{
	bool gone;

	pthread_mutex_lock(&ns->lock);
	if (!n->parent || nlookup > n->nlookup) {
		/* the root is never counted; more than was given is the kernel's bug, not ours */
		nlookup = !n->parent ? 0 : n->nlookup;
	}
	n->nlookup -= nlookup;
	gone = n->parent && nlookup && n->nlookup == 0;
	while (nlookup--)
		node_put(ns, n);
	pthread_mutex_unlock(&ns->lock);
	return gone;
}

void node_handle_open(struct nodes *ns, struct node *n)
{
	pthread_mutex_lock(&ns->lock);
	node_get(ns, n);
	pthread_mutex_unlock(&ns->lock);
}

void node_handle_close(struct nodes *ns, struct node *n)
{
	pthread_mutex_lock(&ns->lock);
	node_put(ns, n);
	pthread_mutex_unlock(&ns->lock);
}

uint64_t node_generation(const struct node *n)
{
	return n->generation;
}

void node_defer(struct nodes *ns, void (*fn)(void *owner, void *arg), void *arg)
{
	struct node_deferred *d = malloc(sizeof(*d));

	if (!d) {
		/* out of memory: now, as before there were epochs */
		fn(ns, arg);
		return;
	}
	d->fn = fn;
	d->arg = arg;
	pthread_mutex_lock(&ns->lock);
	d->next = ns->deferred[ns->epoch & 1];
	ns->deferred[ns->epoch & 1] = d;
	pthread_mutex_unlock(&ns->lock);
}

unsigned node_op_enter_locked(struct nodes *ns)
{
	ns->ops[ns->epoch & 1]++;
	return ns->epoch;
}

unsigned node_op_enter(struct nodes *ns)
{
	unsigned e;

	pthread_mutex_lock(&ns->lock);
	e = node_op_enter_locked(ns);
	pthread_mutex_unlock(&ns->lock);
	return e;
}

/*
 * Freed nodes above this many hand their memory back to the system; above
 * TRIM_IDLE once no request runs (the end of a forget storm), so that what
 * the last frees left is not kept until the next one.
 */
#define TRIM_AFTER 4096
#define TRIM_IDLE 64

/*
 * A request ended. Once none that entered in the previous epoch runs, what
 * was buried then can be used by no one: it is freed, and a new epoch begins.
 */
void node_op_leave(struct nodes *ns, unsigned token)
{
	struct node *list = NULL, *g, *next;
	struct node_deferred *later = NULL;
	bool trim = false;
	size_t freed;
	int k;

	pthread_mutex_lock(&ns->lock);
	ns->ops[token & 1]--;
	/* with no request running at all, both epochs' work can go at once */
	for (k = ns->ops[ns->epoch & 1] == 0 ? 2 : 1; k > 0; k--) {
		struct node_deferred **dp;

		if (ns->ops[(ns->epoch + 1) & 1] != 0 ||
			!(ns->grave[0] || ns->grave[1] || ns->deferred[0] || ns->deferred[1]))
			break;
		/* the previous epoch's requests are done: its graveyard can go */
		for (g = ns->grave[(ns->epoch + 1) & 1]; g; g = next) {
			next = g->grave_next;
			subtree_take(ns, g, &list);
		}
		ns->grave[(ns->epoch + 1) & 1] = NULL;
		for (dp = &later; *dp; dp = &(*dp)->next)
			;
		*dp = ns->deferred[(ns->epoch + 1) & 1];
		ns->deferred[(ns->epoch + 1) & 1] = NULL;
		ns->epoch++;
	}
	/* the last request of a storm: what was freed while others ran is handed back now */
	if (!list && ns->freed_since_trim >= TRIM_IDLE && ns->ops[0] == 0 && ns->ops[1] == 0) {
		ns->freed_since_trim = 0;
		trim = true;
	}
	pthread_mutex_unlock(&ns->lock);
	deferred_run(ns, later);
	if (list) {
		freed = chain_free(ns, list);
		pthread_mutex_lock(&ns->lock);
		ns->freed_since_trim += freed;
		if (ns->freed_since_trim >= TRIM_AFTER ||
			(ns->freed_since_trim >= TRIM_IDLE && ns->ops[0] == 0 && ns->ops[1] == 0)) {
			ns->freed_since_trim = 0;
			trim = true;
		}
		pthread_mutex_unlock(&ns->lock);
	}
	if (trim)
		malloc_trim(0);
}

/* The child called name, or NULL. Caller holds ns->lock (or owns dir privately). */
struct node *node_child_find(struct node *dir, const char *name)
{
	size_t i;

	for (i = 0; i < dir->n_children; i++)
		if (strcmp(dir->children[i]->name, name) == 0)
			return dir->children[i];
	return NULL;
}

/* Caller holds ns->lock (or owns dir privately). */
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
	if (dir->remakes)
		c->cached = true;
	return 0;
}

/*
 * The existing child of dir called name, or a new one made by make() and
 * added, so that racing lookups agree on one node.
 */
struct node *node_child_get_or_add(struct nodes *ns, struct node *dir, struct node *fresh)
{
	struct node *c;

	pthread_mutex_lock(&ns->lock);
	c = node_child_find(dir, fresh->name);
	if (!c && node_child_add(dir, fresh) == 0)
		c = fresh;
	pthread_mutex_unlock(&ns->lock);
	/* a losing fresh node was never seen by anyone else */
	if (c != fresh)
		node_discard(ns, fresh);
	return c;
}

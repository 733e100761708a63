/*
 * What the providers share (tree-int.h): a directory's children listed as
 * they are, and lists of extended attributes.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tree-int.h"

void tree_xattrs_free(struct xattr *x, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(x[i].name);
		free(x[i].value);
	}
	free(x);
}

int tree_xattrs_copy(const struct xattr *from, size_t n, struct xattr **to, size_t *nto)
{
	size_t i;

	for (i = 0; i < n; i++) {
		struct xattr *v = realloc(*to, (*nto + 1) * sizeof(*v));

		if (!v)
			return -ENOMEM;
		*to = v;
		v[*nto].name = strdup(from[i].name);
		v[*nto].len = from[i].len;
		v[*nto].value = malloc((from[i].len ? from[i].len : strlen(from[i].value)) + 1);
		if (!v[*nto].name || !v[*nto].value) {
			free(v[*nto].name);
			free(v[*nto].value);
			return -ENOMEM;
		}
		memcpy(v[*nto].value, from[i].value,
			(from[i].len ? from[i].len : strlen(from[i].value)) + 1);
		(*nto)++;
	}
	return 0;
}

int tree_xattr_add(struct xattr **x, size_t *n, const char *name, const char *value)
{
	struct xattr *v = realloc(*x, (*n + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	*x = v;
	v[*n].name = strdup(name);
	v[*n].value = strdup(value);
	v[*n].len = 0;
	if (!v[*n].name || !v[*n].value) {
		free(v[*n].name);
		free(v[*n].value);
		return -ENOMEM;
	}
	(*n)++;
	return 0;
}

ssize_t tree_xattr_get(const struct xattr *x, size_t nx, const char *name, char *buf, size_t size)
{
	size_t i;

	for (i = 0; i < nx; i++) {
		size_t vl;

		if (strcmp(x[i].name, name) != 0)
			continue;
		vl = x[i].len ? x[i].len : strlen(x[i].value);
		if (size && vl > size)
			return -ERANGE;
		if (size)
			memcpy(buf, x[i].value, vl);
		return (ssize_t)vl;
	}
	return -ENODATA;
}

ssize_t tree_xattr_list(const struct xattr *x, size_t nx, const char *extra, char *buf, size_t size)
{
	size_t total = 0, i;

	for (i = 0; i < nx; i++)
		total += strlen(x[i].name) + 1;
	if (extra)
		total += strlen(extra) + 1;
	if (size && total > size)
		return -ERANGE;
	if (size) {
		char *p = buf;

		for (i = 0; i < nx; i++) {
			size_t l = strlen(x[i].name) + 1;

			memcpy(p, x[i].name, l);
			p += l;
		}
		if (extra)
			memcpy(p, extra, strlen(extra) + 1);
	}
	return (ssize_t)total;
}

int tree_children_list(struct tree *t, struct node *dir, struct tree_dirent **ents, size_t *count)
{
	struct tree_dirent *v;
	size_t i, j;

	pthread_mutex_lock(&t->nodes.lock);
	v = calloc(dir->n_children + 1, sizeof(*v));
	if (!v) {
		pthread_mutex_unlock(&t->nodes.lock);
		return -ENOMEM;
	}
	for (i = 0, j = 0; i < dir->n_children; i++) {
		struct node *c = dir->children[i];

		if (c->hidden)
			continue;
		v[j].name = strdup(c->name);
		if (!v[j].name) {
			pthread_mutex_unlock(&t->nodes.lock);
			tree_dirents_free(v, j);
			return -ENOMEM;
		}
		v[j].ino = (uintptr_t)c;
		v[j].type = c->ops->type(c);
		j++;
	}
	pthread_mutex_unlock(&t->nodes.lock);
	*ents = v;
	*count = j;
	return 0;
}

void tree_dirents_free(struct tree_dirent *ents, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(ents[i].name);
	free(ents);
}

/* A growable byte buffer, always NUL-terminated for convenience. */
#ifndef OCIFS_BUF_H
#define OCIFS_BUF_H

#include <stddef.h>

struct buf {
	char *data; /* NULL or malloc'd, data[len] == '\0' */
	size_t len;
	size_t cap;
};

#define BUF_INIT \
	{ \
		NULL, 0, 0 \
	}

/* Append; returns 0 or -ENOMEM. */
int buf_add(struct buf *b, const void *p, size_t n);
int buf_addstr(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Room for extra more bytes (and the NUL) at data + len, to write there and add to len. */
int buf_reserve(struct buf *b, size_t extra);
/* Hand the bytes over to the caller (never NULL unless out of memory); b is empty after. */
char *buf_take(struct buf *b);
void buf_release(struct buf *b);

#endif

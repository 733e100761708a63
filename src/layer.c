#include "config.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>
#include <zstd.h>

#include "buf.h"
#include "cache.h"
#include "digest.h"
#include "layer.h"
#include "log.h"
#include "toc.h"

#define BLOCK 512
/* GNU long names and PAX headers bigger than this are not read: their entry is left out. */
#define META_MAX (1024 * 1024)
#define IO_BUF (256 * 1024)
#define WINDOW 32768
/* Decompressors kept per layer, each where its last read stopped. */
#define CURSORS 4

/* ---- tar ---- */

/* An octal field, or GNU base-256 (high bit of the first byte set). -1 when neither. */
static int64_t tar_number(const char *f, size_t n)
{
	const unsigned char *u = (const unsigned char *)f;
	int64_t v = 0;
	size_t i = 0;

	if (u[0] & 0x80) {
		/* base-256: big-endian, the first byte's high bit a flag */
		v = u[0] & 0x3f;
		for (i = 1; i < n; i++) {
			if (v > (INT64_MAX >> 8))
				return -1;
			v = (v << 8) | u[i];
		}
		return v;
	}
	while (i < n && f[i] == ' ')
		i++;
	for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v > (INT64_MAX >> 3))
			return -1;
		v = v * 8 + (f[i] - '0');
	}
	if (i < n && f[i] != '\0' && f[i] != ' ')
		return -1;
	return v;
}

static bool checksum_ok(const unsigned char *h)
{
	int64_t want = tar_number((const char *)h + 148, 8);
	unsigned long usum = 0;
	long ssum = 0;
	size_t i;

	for (i = 0; i < BLOCK; i++) {
		unsigned char c = i >= 148 && i < 156 ? ' ' : h[i];

		usum += c;
		ssum += (signed char)c;
	}
	return want >= 0 && ((unsigned long)want == usum || want == ssum);
}

static bool all_zero(const unsigned char *h)
{
	size_t i;

	for (i = 0; i < BLOCK; i++)
		if (h[i])
			return false;
	return true;
}

static char *field_str(const char *f, size_t n)
{
	return strndup(f, strnlen(f, n));
}

/* A file of known size as a layer_read_fn. */
struct file_src {
	int fd;
	int64_t size;
};

static int file_read(void *ctx, void *p, size_t n, int64_t off)
{
	struct file_src *f = ctx;
	size_t done = 0;

	if (off >= f->size)
		return -ENODATA;
	if ((int64_t)n > f->size - off)
		return -EBADMSG;
	while (done < n) {
		ssize_t r = pread(f->fd, (char *)p + done, n - done, off + (int64_t)done);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -EBADMSG;
		done += (size_t)r;
	}
	return 0;
}

/* What PAX records and GNU long names say of the next entry. */
struct pending {
	char *path;
	char *link;
	int64_t size; /* -1: none */
	int64_t uid, gid, mtime; /* -1: none */
	struct layer_xattr *xattrs;
	size_t n_xattrs;
};

static void pending_release(struct pending *p)
{
	size_t i;

	free(p->path);
	free(p->link);
	for (i = 0; i < p->n_xattrs; i++) {
		free(p->xattrs[i].name);
		free(p->xattrs[i].value);
	}
	free(p->xattrs);
	memset(p, 0, sizeof(*p));
	p->size = p->uid = p->gid = p->mtime = -1;
}

/* "len key=value\n" records of a PAX extended header. */
static int pax_parse(const char *d, size_t n, struct pending *p)
{
	size_t pos = 0;

	while (pos < n) {
		const char *key, *eq, *val;
		size_t len = 0, digits = 0, vlen;

		/* the record's length, in decimal digits only, counts the digits themselves */
		while (pos + digits < n && d[pos + digits] >= '0' && d[pos + digits] <= '9' &&
			len < n) {
			len = len * 10 + (size_t)(d[pos + digits] - '0');
			digits++;
		}
		if (!digits || pos + digits >= n || d[pos + digits] != ' ' || len > n - pos ||
			len < digits + 3)
			return -EBADMSG;
		key = d + pos + digits + 1;
		eq = memchr(key, '=', (size_t)(d + pos + len - key));
		if (!eq || d[pos + len - 1] != '\n')
			return -EBADMSG;
		val = eq + 1;
		vlen = (size_t)(d + pos + len - 1 - val);
#define KEY(k) ((size_t)(eq - key) == strlen(k) && memcmp(key, k, strlen(k)) == 0)
		if (KEY("path")) {
			free(p->path);
			p->path = strndup(val, vlen);
		} else if (KEY("linkpath")) {
			free(p->link);
			p->link = strndup(val, vlen);
		} else if (KEY("size")) {
			p->size = strtoll(val, NULL, 10);
		} else if (KEY("uid")) {
			p->uid = strtoll(val, NULL, 10);
		} else if (KEY("gid")) {
			p->gid = strtoll(val, NULL, 10);
		} else if (KEY("mtime")) {
			p->mtime = strtoll(val, NULL, 10);
		} else if ((size_t)(eq - key) > 12 && memcmp(key, "SCHILY.xattr.", 13) == 0) {
			struct layer_xattr *x = realloc(p->xattrs, (p->n_xattrs + 1) * sizeof(*x));

			if (!x)
				return -ENOMEM;
			p->xattrs = x;
			x[p->n_xattrs].name = strndup(key + 13, (size_t)(eq - key - 13));
			x[p->n_xattrs].value = malloc(vlen + 1);
			if (!x[p->n_xattrs].name || !x[p->n_xattrs].value) {
				free(x[p->n_xattrs].name);
				free(x[p->n_xattrs].value);
				return -ENOMEM;
			}
			memcpy(x[p->n_xattrs].value, val, vlen);
			x[p->n_xattrs].value[vlen] = '\0';
			x[p->n_xattrs].len = vlen;
			p->n_xattrs++;
		}
#undef KEY
		pos += len;
	}
	return 0;
}

void layer_entries_free(struct layer_entry *e, size_t n)
{
	size_t i, k;

	for (i = 0; e && i < n; i++) {
		free(e[i].path);
		free(e[i].link);
		for (k = 0; k < e[i].n_xattrs; k++) {
			free(e[i].xattrs[k].name);
			free(e[i].xattrs[k].value);
		}
		free(e[i].xattrs);
	}
	free(e);
}

int layer_tar_index(int fd, int64_t size, const char *label, struct layer_entry **out, size_t *n)
{
	struct file_src f = { fd, size };

	return layer_tar_index_read(file_read, &f, size, label, out, n);
}

int layer_tar_index_read(layer_read_fn rd, void *ctx, int64_t size, const char *label,
	struct layer_entry **out, size_t *n)
{
	struct layer_entry *v = NULL;
	size_t nv = 0, cap = 0;
	struct pending p;
	unsigned char h[BLOCK];
	int64_t off = 0;
	bool skip_next = false; /* an oversized header described the next entry */
	int ret = 0;

	memset(&p, 0, sizeof(p));
	p.size = p.uid = p.gid = p.mtime = -1;
	for (;;) {
		struct layer_entry *e;
		int64_t dsize;
		char type;

		ret = rd(ctx, h, BLOCK, off);
		if (ret == -ENODATA) {
			ret = 0; /* the end, without the zero blocks */
			break;
		}
		if (ret == -EBADMSG)
			log_err("%s: tar header at %lld: truncated", label, (long long)off);
		if (ret)
			break;
		if (all_zero(h))
			break; /* the end (a second zero block may follow) */
		if (!checksum_ok(h)) {
			log_err("%s: tar header at %lld: bad checksum", label, (long long)off);
			ret = -EBADMSG;
			break;
		}
		type = (char)h[156];
		dsize = tar_number((const char *)h + 124, 12);
		if (p.size >= 0 && type != 'x' && type != 'L' && type != 'K')
			dsize = p.size;
		if (dsize < 0 || dsize > size - off - BLOCK) {
			log_err("%s: tar entry at %lld: size past the end", label, (long long)off);
			ret = -EBADMSG;
			break;
		}
		off += BLOCK;
		if (type == 'x' || type == 'g' || type == 'L' || type == 'K') {
			char *d;

			if (dsize > META_MAX) {
				log_warn("%s: tar header at %lld: %lld bytes of names or records: "
					 "its entry left out",
					label, (long long)off, (long long)dsize);
				skip_next = true;
				off += (dsize + BLOCK - 1) / BLOCK * BLOCK;
				continue;
			}
			d = malloc((size_t)dsize + 1);
			if (!d) {
				ret = -ENOMEM;
				break;
			}
			ret = dsize ? rd(ctx, d, (size_t)dsize, off) : 0;
			if (ret == -ENODATA)
				ret = -EBADMSG;
			d[dsize] = '\0';
			if (!ret && type == 'x')
				ret = pax_parse(d, (size_t)dsize, &p);
			if (!ret && type == 'L') {
				free(p.path);
				p.path = strdup(d);
			}
			if (!ret && type == 'K') {
				free(p.link);
				p.link = strdup(d);
			}
			free(d);
			if (ret) {
				if (ret == -EBADMSG)
					log_err("%s: tar header at %lld: bad PAX records", label,
						(long long)off);
				break;
			}
			off += (dsize + BLOCK - 1) / BLOCK * BLOCK;
			continue;
		}
		if (skip_next) {
			/* its name is in what was not read: not shown under another */
			skip_next = false;
			pending_release(&p);
			off += (dsize + BLOCK - 1) / BLOCK * BLOCK;
			continue;
		}
		if (nv == cap) {
			size_t nc = cap ? 2 * cap : 64;
			struct layer_entry *nvv = realloc(v, nc * sizeof(*nvv));

			if (!nvv) {
				ret = -ENOMEM;
				break;
			}
			v = nvv;
			cap = nc;
		}
		e = &v[nv];
		memset(e, 0, sizeof(*e));
		if (p.path) {
			e->path = p.path;
			p.path = NULL;
		} else {
			char name[256 + 156];
			size_t pl = strnlen((const char *)h + 345, 155);

			/* ustar: prefix "/" name */
			if (memcmp(h + 257, "ustar", 5) == 0 && pl)
				snprintf(name, sizeof(name), "%.*s/%.*s", (int)pl,
					(const char *)h + 345, (int)strnlen((const char *)h, 100),
					(const char *)h);
			else
				snprintf(name, sizeof(name), "%.*s",
					(int)strnlen((const char *)h, 100), (const char *)h);
			e->path = strdup(name);
		}
		if (p.link) {
			e->link = p.link;
			p.link = NULL;
		} else if (h[157]) {
			e->link = field_str((const char *)h + 157, 100);
		}
		e->type = type == '\0' || type == '7' ? '0' : type;
		e->mode = (mode_t)(tar_number((const char *)h + 100, 8) & 07777);
		e->uid = (uid_t)(p.uid >= 0 ? p.uid : tar_number((const char *)h + 108, 8));
		e->gid = (gid_t)(p.gid >= 0 ? p.gid : tar_number((const char *)h + 116, 8));
		e->mtime = (time_t)(p.mtime >= 0 ? p.mtime : tar_number((const char *)h + 136, 12));
		e->size = e->type == '0' ? dsize : 0;
		e->offset = off;
		e->devmajor = (unsigned)tar_number((const char *)h + 329, 8);
		e->devminor = (unsigned)tar_number((const char *)h + 337, 8);
		e->xattrs = p.xattrs;
		e->n_xattrs = p.n_xattrs;
		p.xattrs = NULL;
		p.n_xattrs = 0;
		nv++;
		pending_release(&p);
		if (!e->path) {
			ret = -ENOMEM;
			break;
		}
		off += (dsize + BLOCK - 1) / BLOCK * BLOCK;
	}
	pending_release(&p);
	if (ret) {
		layer_entries_free(v, nv);
		return ret;
	}
	*out = v;
	*n = nv;
	return 0;
}

int layer_path_clean(const char *path, char *out, size_t size)
{
	const char *p = path, *c;
	size_t o = 0;

	for (c = path; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return -EINVAL;
	/* an absolute name ("/" itself aside) points outside the archive */
	if (path[0] == '/' && path[strspn(path, "/")])
		return -EINVAL;
	while (*p) {
		size_t n;

		while (*p == '/')
			p++;
		n = strcspn(p, "/");
		if (n == 0)
			break;
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return -EINVAL;
		if (!(n == 1 && p[0] == '.')) {
			if (o + n + 2 > size)
				return -ENAMETOOLONG;
			if (o)
				out[o++] = '/';
			memcpy(out + o, p, n);
			o += n;
		}
		p += n;
	}
	out[o] = '\0';
	return 0;
}

/* ---- the layer ---- */

enum codec { CODEC_NONE, CODEC_GZIP, CODEC_ZSTD };

/* Where a decompressor can start: the start of the blob, or a point recorded while indexing. */
struct layer_cp {
	int64_t out; /* tar offset */
	int64_t in; /* blob offset of the next compressed byte */
	unsigned bits; /* gzip: low bits of the byte before in still to inflate */
	unsigned char prime; /* gzip: that byte, when bits */
	unsigned wlen;
	unsigned char *window; /* gzip: the wlen bytes of output before out */
};

/* A cleaned path and its entry, for lookups. */
struct layer_name {
	char *path;
	size_t entry;
};

/* A decompressor somewhere in the tar. */
struct stream {
	struct layer *l;
	struct blob_reader rd;
	z_stream z;
	bool z_init;
	bool raw; /* gzip: raw deflate, restarted at a checkpoint */
	bool member_end; /* gzip: a member just ended: the blob may end here */
	unsigned skip; /* gzip: trailer bytes to skip before the next member */
	ZSTD_DCtx *zd;
	size_t zret; /* zstd: 0 at a frame's end */
	unsigned char last_in; /* the byte before ib[0], once there was one */
	unsigned char *ib;
	size_t ib_pos, ib_len;
	int64_t in_off; /* blob offset of ib[ib_len] */
	unsigned char *ob;
	size_t ob_pos, ob_len;
	int64_t out_base; /* tar offset of ob[0] */
	bool eof;
	/* cursors: protected by l->lock */
	bool busy;
	bool valid;
	uint64_t used; /* when last used, for replacing the oldest */
	/* indexing: checkpoints recorded, the tar hashed */
	bool record;
	struct layer_cp *cps;
	size_t n_cps;
	struct digest_ctx *hash;
	struct digest_ctx *span_hash; /* indexing: the span the input is in */
	const char *label;
};

struct layer {
	char *digest;
	enum codec codec;
	struct blob *blob; /* compressed bytes; NULL for an index decoded alone */
	int64_t blob_size;
	int64_t tar_size;
	char tar_digest[DIGEST_STR_LEN + 1];
	struct layer_entry *entries;
	size_t n;
	struct layer_cp *cps; /* sorted by out; cps[0] is the start */
	size_t n_cps;
	struct layer_name *names; /* sorted by path, one per path */
	size_t n_names;
	/* the sha256 of each LAYER_CHECK_SPAN bytes of the blob, the last one shorter */
	unsigned char *spans;
	size_t n_spans;
	/*
	 * An index from elsewhere (a registry): the blob is read only in spans
	 * checked against their digests (span_ok, under lock); bad once one
	 * did not match: then every read is EIO.
	 */
	bool published;
	/*
	 * A tar of one file, indexed from its headers alone, as the manifest
	 * said it is (layer_open_single()): a read that reaches the file's end
	 * waits for the whole blob to verify.
	 */
	bool single;
	bool bad;
	bool bad_claimed; /* layer_bad_claim() said so once */
	unsigned char *span_ok;
	/*
	 * A layer read through its own table of contents (eStargz,
	 * zstd:chunked): entries' offsets are in the space of their files' data
	 * end to end, each chunk a member or frame of its own, checked against
	 * its digest before use; the last ones kept (under lock).
	 */
	struct toc_chunk *chunks;
	size_t n_chunks;
	struct chunk_buf {
		size_t i;
		unsigned char *buf; /* NULL: the slot is free */
		unsigned refs;
		uint64_t used;
	} cbuf[CURSORS];
	char label[600];
	pthread_mutex_t lock;
	struct stream *cursors[CURSORS]; /* protected by lock */
	uint64_t clock; /* protected by lock */
};

bool layer_media_type_ok(const char *mt)
{
	static const char *const ok[] = {
		"application/vnd.oci.image.layer.v1.tar",
		"application/vnd.oci.image.layer.v1.tar+gzip",
		"application/vnd.oci.image.layer.v1.tar+zstd",
		"application/vnd.oci.image.layer.nondistributable.v1.tar",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
		"application/vnd.docker.image.rootfs.diff.tar.gzip",
		"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
		"application/vnd.docker.image.rootfs.diff.tar.zstd",
	};
	size_t i;

	for (i = 0; mt && i < sizeof(ok) / sizeof(ok[0]); i++)
		if (strcmp(mt, ok[i]) == 0)
			return true;
	return false;
}

static enum codec codec_of(const char *mt)
{
	size_t n = strlen(mt);

	if ((n > 5 && strcmp(mt + n - 5, "+gzip") == 0) ||
		(n > 5 && strcmp(mt + n - 5, ".gzip") == 0))
		return CODEC_GZIP;
	if ((n > 5 && strcmp(mt + n - 5, "+zstd") == 0) ||
		(n > 5 && strcmp(mt + n - 5, ".zstd") == 0))
		return CODEC_ZSTD;
	return CODEC_NONE;
}

/* ---- streams ---- */

static void stream_free(struct stream *s)
{
	if (!s)
		return;
	if (s->z_init)
		inflateEnd(&s->z);
	ZSTD_freeDCtx(s->zd);
	free(s->ib);
	free(s->ob);
	free(s);
}

static struct stream *stream_new(struct layer *l)
{
	struct stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->l = l;
	s->label = l->label;
	s->ib = malloc(IO_BUF);
	s->ob = malloc(IO_BUF);
	if (!s->ib || !s->ob) {
		stream_free(s);
		return NULL;
	}
	return s;
}

/* Start s at checkpoint cp: output from cp->out on. 0 or -errno. */
static int stream_seek(struct stream *s, const struct layer_cp *cp)
{
	struct layer *l = s->l;
	int zr;

	s->ib_pos = s->ib_len = 0;
	s->ob_pos = s->ob_len = 0;
	s->in_off = cp->in;
	s->out_base = cp->out;
	s->eof = false;
	s->skip = 0;
	s->member_end = false;
	s->valid = false;
	if (l->codec == CODEC_GZIP) {
		s->raw = cp->in > 0;
		if (s->z_init)
			zr = inflateReset2(&s->z, s->raw ? -15 : 15 + 32);
		else
			zr = inflateInit2(&s->z, s->raw ? -15 : 15 + 32);
		if (zr != Z_OK)
			return -ENOMEM;
		s->z_init = true;
		/* the byte split by the block boundary is in the index: no span before in to fetch */
		if (s->raw && cp->bits)
			inflatePrime(&s->z, (int)cp->bits, cp->prime >> (8 - cp->bits));
		if (s->raw && inflateSetDictionary(&s->z, cp->window, cp->wlen) != Z_OK)
			return -EIO;
	} else if (l->codec == CODEC_ZSTD) {
		if (!s->zd && !(s->zd = ZSTD_createDCtx()))
			return -ENOMEM;
		ZSTD_DCtx_reset(s->zd, ZSTD_reset_session_only);
		/* at a frame boundary the blob may end; at its start it may not */
		s->zret = cp->in > 0 ? 0 : 1;
	}
	s->valid = true;
	return 0;
}

/* Indexing: the spans' digests, from the blob's bytes [off, off + n) read in order. */
static void span_feed(struct stream *s, int64_t off, const unsigned char *p, size_t n)
{
	struct layer *l = s->l;

	while (n) {
		int64_t end = (off / LAYER_CHECK_SPAN + 1) * LAYER_CHECK_SPAN;
		size_t k;

		if (end > l->blob_size)
			end = l->blob_size;
		k = end - off < (int64_t)n ? (size_t)(end - off) : n;
		digest_ctx_update(s->span_hash, p, k);
		off += (int64_t)k;
		p += k;
		n -= k;
		if (off == end)
			digest_ctx_raw(s->span_hash,
				l->spans + (size_t)((off - 1) / LAYER_CHECK_SPAN) * DIGEST_RAW_LEN);
	}
}

/*
 * A published index: the spans that bytes [off, off + n) of the blob are in
 * fetched and checked against their digests, once each. 0, or -EIO when one
 * does not match (the index is not used again) or cannot be fetched.
 */
static int spans_check(struct stream *s, int64_t off, size_t n)
{
	struct layer *l = s->l;
	struct blob_reader rd = { .own_check = true };
	size_t i, last = (size_t)((off + (int64_t)n - 1) / LAYER_CHECK_SPAN);
	unsigned char *buf = NULL, md[DIGEST_RAW_LEN];
	int ret = 0;

	for (i = (size_t)(off / LAYER_CHECK_SPAN); !ret && i <= last; i++) {
		int64_t start = (int64_t)i * LAYER_CHECK_SPAN;
		size_t len = l->blob_size - start < LAYER_CHECK_SPAN
				     ? (size_t)(l->blob_size - start)
				     : LAYER_CHECK_SPAN;
		bool ok;
		int fd;

		pthread_mutex_lock(&l->lock);
		ok = l->span_ok[i];
		ret = l->bad ? -EIO : 0;
		pthread_mutex_unlock(&l->lock);
		if (ok || ret)
			continue;
		if (!buf && !(buf = malloc(LAYER_CHECK_SPAN)))
			return -ENOMEM;
		fd = cache_blob_prepare(l->blob, &rd, start, len);
		if (fd < 0) {
			ret = fd;
			break;
		}
		ret = file_read(&(struct file_src){ fd, l->blob_size }, buf, len, start) ? -EIO : 0;
		cache_blob_done(l->blob, start, len);
		if (ret)
			break;
		digest_buffer_raw(buf, len, md);
		pthread_mutex_lock(&l->lock);
		if (memcmp(md, l->spans + i * DIGEST_RAW_LEN, DIGEST_RAW_LEN) == 0) {
			l->span_ok[i] = 1;
		} else {
			if (!l->bad)
				log_err("%s: bytes %lld to %lld do not match the published index: "
					"it is not used again",
					l->label, (long long)start,
					(long long)(start + (int64_t)len));
			l->bad = true;
			ret = -EIO;
		}
		pthread_mutex_unlock(&l->lock);
	}
	free(buf);
	return ret;
}

/* Buffer more compressed input: 1 when there is some, 0 at the blob's end, or -errno. */
static int stream_input(struct stream *s)
{
	struct layer *l = s->l;
	size_t want;
	ssize_t r;
	int fd;

	if (s->ib_pos < s->ib_len)
		return 1;
	if (s->in_off >= l->blob_size)
		return 0;
	if (!l->blob)
		return -EIO;
	want = l->blob_size - s->in_off < IO_BUF ? (size_t)(l->blob_size - s->in_off) : IO_BUF;
	if (l->published) {
		int ret = spans_check(s, s->in_off, want);

		if (ret)
			return ret;
		s->rd.own_check = true;
	}
	fd = cache_blob_prepare(l->blob, &s->rd, s->in_off, want);
	if (fd < 0)
		return fd;
	if (s->ib_len)
		s->last_in = s->ib[s->ib_len - 1];
	s->ib_pos = s->ib_len = 0;
	while (s->ib_len < want) {
		r = pread(fd, s->ib + s->ib_len, want - s->ib_len, s->in_off + (int64_t)s->ib_len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int ret = r < 0 ? -errno : -EIO;

			cache_blob_done(l->blob, s->in_off, want);
			return ret;
		}
		s->ib_len += (size_t)r;
	}
	cache_blob_done(l->blob, s->in_off, want);
	if (s->span_hash)
		span_feed(s, s->in_off, s->ib, want);
	s->in_off += (int64_t)want;
	return 1;
}

/* Blob offset of the next compressed byte to decompress. */
static int64_t stream_in_pos(const struct stream *s)
{
	return s->in_off - (int64_t)(s->ib_len - s->ib_pos);
}

static int stream_checkpoint(struct stream *s, unsigned bits, bool window)
{
	int64_t out = s->out_base + (int64_t)s->ob_len;
	struct layer_cp *v, *cp;

	if (out - s->cps[s->n_cps - 1].out < LAYER_SPAN)
		return 0;
	v = realloc(s->cps, (s->n_cps + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	s->cps = v;
	cp = &v[s->n_cps];
	memset(cp, 0, sizeof(*cp));
	cp->out = out;
	cp->in = stream_in_pos(s);
	cp->bits = bits;
	if (bits)
		cp->prime = s->ib_pos ? s->ib[s->ib_pos - 1] : s->last_in;
	if (window) {
		uInt wlen = WINDOW;

		cp->window = malloc(WINDOW);
		if (!cp->window || inflateGetDictionary(&s->z, cp->window, &wlen) != Z_OK) {
			free(cp->window);
			return -ENOMEM;
		}
		cp->wlen = wlen;
	}
	s->n_cps++;
	return 0;
}

/* One step of gzip: more and the bytes buffered in s->ib. 0 or -errno. */
static int gzip_step(struct stream *s, bool more)
{
	size_t before = s->ib_pos;
	int zr;

	if (!more) {
		if (s->member_end) {
			s->eof = true;
			return 0;
		}
		log_err("%s: gzip: truncated", s->label);
		return -EIO;
	}
	if (s->skip) {
		size_t n = s->ib_len - s->ib_pos < s->skip ? s->ib_len - s->ib_pos : s->skip;

		s->ib_pos += n;
		s->skip -= (unsigned)n;
		if (!s->skip) {
			/* a member's trailer passed: the next member starts with its header */
			s->raw = false;
			s->member_end = true;
			if (inflateReset2(&s->z, 15 + 32) != Z_OK)
				return -EIO;
		}
		return 0;
	}
	s->z.next_in = s->ib + s->ib_pos;
	s->z.avail_in = (uInt)(s->ib_len - s->ib_pos);
	s->z.next_out = s->ob + s->ob_len;
	s->z.avail_out = (uInt)(IO_BUF - s->ob_len);
	zr = inflate(&s->z, s->record ? Z_BLOCK : Z_NO_FLUSH);
	s->ib_pos = s->ib_len - s->z.avail_in;
	s->ob_len = IO_BUF - s->z.avail_out;
	if (s->ib_pos > before)
		s->member_end = false;
	if (zr == Z_STREAM_END) {
		if (s->raw) {
			s->skip = 8;
		} else {
			s->member_end = true;
			inflateReset(&s->z);
		}
		return 0;
	}
	if (zr != Z_OK) {
		log_err("%s: gzip: %s", s->label, s->z.msg ? s->z.msg : "corrupt data");
		return -EIO;
	}
	/* a block boundary, not after the member's last block: a place to start again */
	if (s->record && (s->z.data_type & 128) && !(s->z.data_type & 64))
		return stream_checkpoint(s, (unsigned)s->z.data_type & 7, true);
	return 0;
}

static int zstd_step(struct stream *s, bool more)
{
	ZSTD_inBuffer zin;
	ZSTD_outBuffer zout;

	if (!more) {
		if (s->zret == 0) {
			s->eof = true;
			return 0;
		}
		log_err("%s: zstd: truncated", s->label);
		return -EIO;
	}
	zin.src = s->ib;
	zin.size = s->ib_len;
	zin.pos = s->ib_pos;
	zout.dst = s->ob;
	zout.size = IO_BUF;
	zout.pos = s->ob_len;
	s->zret = ZSTD_decompressStream(s->zd, &zout, &zin);
	if (ZSTD_isError(s->zret)) {
		log_err("%s: zstd: %s", s->label, ZSTD_getErrorName(s->zret));
		return -EIO;
	}
	s->ib_pos = zin.pos;
	s->ob_len = zout.pos;
	/* a frame's end: decompression can start again at the next one */
	if (s->record && s->zret == 0)
		return stream_checkpoint(s, 0, false);
	return 0;
}

/* Refill s->ob with the next output (s->eof at the tar's end). 0 or -errno. */
static int stream_fill(struct stream *s)
{
	int ret = 0, more;

	s->out_base += (int64_t)s->ob_len;
	s->ob_pos = s->ob_len = 0;
	while (!ret && s->ob_len == 0 && !s->eof) {
		more = stream_input(s);
		if (more < 0)
			return more;
		switch (s->l->codec) {
		case CODEC_NONE:
			if (!more) {
				s->eof = true;
			} else {
				s->ob_len = s->ib_len - s->ib_pos;
				memcpy(s->ob, s->ib + s->ib_pos, s->ob_len);
				s->ib_pos = s->ib_len;
			}
			break;
		case CODEC_GZIP:
			ret = gzip_step(s, more);
			break;
		case CODEC_ZSTD:
			ret = zstd_step(s, more);
			break;
		}
	}
	if (!ret && s->hash && s->ob_len)
		digest_ctx_update(s->hash, s->ob, s->ob_len);
	return ret;
}

static int64_t stream_pos(const struct stream *s)
{
	return s->out_base + (int64_t)s->ob_pos;
}

/* Up to n bytes at off (not before stream_pos()) into p (NULL: skipped). Bytes or -errno. */
static ssize_t stream_read(struct stream *s, void *p, size_t n, int64_t off)
{
	size_t done = 0;
	int ret;

	while (done < n || stream_pos(s) < off) {
		int64_t pos = stream_pos(s);
		size_t avail = s->ob_len - s->ob_pos, k;

		if (!avail) {
			if (s->eof)
				break;
			ret = stream_fill(s);
			if (ret)
				return ret;
			continue;
		}
		if (pos < off) {
			k = off - pos < (int64_t)avail ? (size_t)(off - pos) : avail;
		} else {
			k = n - done < avail ? n - done : avail;
			if (p)
				memcpy((char *)p + done, s->ob + s->ob_pos, k);
			done += k;
		}
		s->ob_pos += k;
	}
	return (ssize_t)done;
}

/* The tar reader over a stream: a layer_read_fn. */
static int stream_tar_read(void *ctx, void *p, size_t n, int64_t off)
{
	ssize_t r = stream_read(ctx, p, n, off);

	if (r < 0)
		return (int)r;
	if (r == 0 && n > 0)
		return -ENODATA;
	return (size_t)r < n ? -EBADMSG : 0;
}

/* ---- lookups ---- */

static int name_cmp(const void *a, const void *b)
{
	const struct layer_name *x = a, *y = b;
	int c = strcmp(x->path, y->path);

	if (c)
		return c;
	return x->entry < y->entry ? -1 : x->entry > y->entry;
}

/* The sorted table of cleaned paths, the last entry of each path kept. */
static int names_build(struct layer *l)
{
	char path[PATH_MAX];
	size_t i, k;

	l->names = calloc(l->n + 1, sizeof(*l->names));
	if (!l->names)
		return -ENOMEM;
	for (i = 0; i < l->n; i++) {
		if (layer_path_clean(l->entries[i].path, path, sizeof(path))) {
			log_warn("%s: entry \"%.200s\" escapes the root: left out", l->label,
				l->entries[i].path);
			continue;
		}
		l->names[l->n_names].path = strdup(path);
		if (!l->names[l->n_names].path)
			return -ENOMEM;
		l->names[l->n_names++].entry = i;
	}
	qsort(l->names, l->n_names, sizeof(*l->names), name_cmp);
	for (i = k = 0; i < l->n_names; i++) {
		if (i + 1 < l->n_names && strcmp(l->names[i].path, l->names[i + 1].path) == 0) {
			free(l->names[i].path);
			continue;
		}
		l->names[k++] = l->names[i];
	}
	l->n_names = k;
	return 0;
}

/* The first name not below key. */
static size_t lower_bound(const struct layer *l, const char *key)
{
	size_t lo = 0, hi = l->n_names;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(l->names[mid].path, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

const struct layer_entry *layer_find(const struct layer *l, const char *path)
{
	size_t i = lower_bound(l, path);

	if (i < l->n_names && strcmp(l->names[i].path, path) == 0)
		return &l->entries[l->names[i].entry];
	return NULL;
}

/* "path/" (or "" for the root) into out; false when too long. */
static bool dir_prefix(const char *path, char *out, size_t size)
{
	return snprintf(out, size, "%s%s", path, *path ? "/" : "") < (int)size;
}

bool layer_has_below(const struct layer *l, const char *path)
{
	char pre[PATH_MAX];
	size_t i, n;

	if (!dir_prefix(path, pre, sizeof(pre)))
		return false;
	n = strlen(pre);
	i = lower_bound(l, pre);
	/* the root's own entry ("") is not below it */
	if (i < l->n_names && !*l->names[i].path)
		i++;
	return i < l->n_names && strncmp(l->names[i].path, pre, n) == 0;
}

void layer_list(const struct layer *l, const char *path,
	void (*fn)(void *arg, const char *name, const struct layer_entry *e), void *arg)
{
	char pre[PATH_MAX], name[NAME_MAX + 1];
	size_t i, n;

	if (!dir_prefix(path, pre, sizeof(pre)))
		return;
	n = strlen(pre);
	for (i = lower_bound(l, pre); i < l->n_names; i++) {
		const char *rest = l->names[i].path + n, *slash;
		size_t len;

		if (strncmp(l->names[i].path, pre, n) != 0)
			break;
		if (!*rest)
			continue;
		slash = strchr(rest, '/');
		len = slash ? (size_t)(slash - rest) : strlen(rest);
		if (len > NAME_MAX)
			continue;
		memcpy(name, rest, len);
		name[len] = '\0';
		fn(arg, name, slash ? NULL : &l->entries[l->names[i].entry]);
	}
}

const char *layer_digest(const struct layer *l)
{
	return l->digest;
}

const char *layer_tar_digest(const struct layer *l)
{
	return l->tar_digest;
}

const struct layer_entry *layer_entries(const struct layer *l, size_t *n)
{
	*n = l->n;
	return l->entries;
}

size_t layer_checkpoints(const struct layer *l)
{
	return l->n_cps;
}

/* ---- the index file ---- */

/* The format of the index (layer.h, ocifs(1) PUBLISHED LAYER INDEXES); integers little-endian. */
#define IDX_MAGIC "OCIFSLX2"
#define IDX_MAGIC_OLD "OCIFSLX1"
#define IDX_NULL 0xffffffffu
/* The fewest bytes an entry takes in the file: bounds counts before allocating. */
#define IDX_ENTRY_MIN 57

static int put32(struct buf *b, uint32_t v)
{
	v = htole32(v);
	return buf_add(b, &v, sizeof(v));
}

static int put64(struct buf *b, int64_t v)
{
	uint64_t u = htole64((uint64_t)v);

	return buf_add(b, &u, sizeof(u));
}

static int putstr(struct buf *b, const char *s, size_t len)
{
	if (!s)
		return put32(b, IDX_NULL);
	return put32(b, (uint32_t)len) || buf_add(b, s, len) ? -ENOMEM : 0;
}

int layer_index_encode(const struct layer *l, struct buf *b)
{
	char td[DIGEST_STR_LEN + 1] = { 0 };
	size_t i, k, start = b->len;
	int ret;

	memcpy(td, l->tar_digest, sizeof(td));
	if (!l->spans)
		return -EINVAL;
	ret = buf_add(b, IDX_MAGIC, 8) || put32(b, l->codec) || put32(b, 0) ||
	      putstr(b, l->digest, strlen(l->digest)) || put64(b, l->blob_size) ||
	      put64(b, l->tar_size) || buf_add(b, td, sizeof(td)) || put32(b, LAYER_CHECK_SPAN) ||
	      put32(b, (uint32_t)l->n_spans) || buf_add(b, l->spans, l->n_spans * DIGEST_RAW_LEN) ||
	      put32(b, (uint32_t)l->n_cps);
	for (i = 0; !ret && i < l->n_cps; i++)
		ret = put64(b, l->cps[i].out) || put64(b, l->cps[i].in) ||
		      put32(b, l->cps[i].bits | (uint32_t)l->cps[i].prime << 8) ||
		      put32(b, l->cps[i].wlen) || buf_add(b, l->cps[i].window, l->cps[i].wlen);
	ret = ret || put32(b, (uint32_t)l->n);
	for (i = 0; !ret && i < l->n; i++) {
		const struct layer_entry *e = &l->entries[i];
		unsigned char type = (unsigned char)e->type;

		ret = buf_add(b, &type, 1) || put32(b, e->mode) || put32(b, e->uid) ||
		      put32(b, e->gid) || put64(b, e->mtime) || put64(b, e->size) ||
		      put64(b, e->offset) || put32(b, e->devmajor) || put32(b, e->devminor) ||
		      putstr(b, e->path, strlen(e->path)) ||
		      putstr(b, e->link, e->link ? strlen(e->link) : 0) ||
		      put32(b, (uint32_t)e->n_xattrs);
		for (k = 0; !ret && k < e->n_xattrs; k++)
			ret = putstr(b, e->xattrs[k].name, strlen(e->xattrs[k].name)) ||
			      putstr(b, e->xattrs[k].value, e->xattrs[k].len);
	}
	if (!ret)
		ret = put32(b,
			(uint32_t)crc32(0, (const Bytef *)b->data + start, (uInt)(b->len - start)));
	return ret ? -ENOMEM : 0;
}

/* A reader over the index's bytes; any read past the end sets bad. */
struct idx_rd {
	const unsigned char *p;
	size_t n, pos;
	bool bad;
};

static const void *take(struct idx_rd *r, size_t n)
{
	const void *v = r->p + r->pos;

	if (r->bad || n > r->n - r->pos) {
		r->bad = true;
		return NULL;
	}
	r->pos += n;
	return v;
}

static uint32_t get32(struct idx_rd *r)
{
	const void *p = take(r, 4);
	uint32_t v = 0;

	if (p)
		memcpy(&v, p, 4);
	return le32toh(v);
}

static int64_t get64(struct idx_rd *r)
{
	const void *p = take(r, 8);
	int64_t v = 0;

	if (p)
		memcpy(&v, p, 8);
	return (int64_t)le64toh((uint64_t)v);
}

/* A string of the file, malloc'd; NULL for none (*null set) or on damage (r->bad set). */
static char *getstr(struct idx_rd *r, size_t *len, bool *null)
{
	uint32_t n = get32(r);
	const char *p;
	char *s;

	*null = n == IDX_NULL;
	if (r->bad || *null)
		return NULL;
	p = take(r, n);
	if (!p)
		return NULL;
	s = malloc((size_t)n + 1);
	if (!s) {
		r->bad = true;
		return NULL;
	}
	memcpy(s, p, n);
	s[n] = '\0';
	if (len)
		*len = n;
	return s;
}

static struct layer *layer_alloc(const char *digest)
{
	struct layer *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->digest = strdup(digest);
	if (!l->digest) {
		free(l);
		return NULL;
	}
	pthread_mutex_init(&l->lock, NULL);
	snprintf(l->label, sizeof(l->label), "%s", digest);
	return l;
}

/* An empty layer of the blob digest (media_type, size bytes). */
static struct layer *layer_of_blob(const char *digest, const char *media_type, int64_t size)
{
	struct layer *l = layer_alloc(digest);

	if (l) {
		l->codec = codec_of(media_type);
		l->blob_size = size;
	}
	return l;
}

static int decode_entries(struct idx_rd *r, struct layer *l)
{
	uint32_t n = get32(r), i, k;
	bool null;

	if (r->bad || n > (r->n - r->pos) / IDX_ENTRY_MIN)
		return -EBADMSG;
	l->entries = calloc((size_t)n + 1, sizeof(*l->entries));
	if (!l->entries)
		return -ENOMEM;
	for (i = 0; i < n && !r->bad; i++) {
		struct layer_entry *e = &l->entries[i];
		const unsigned char *type = take(r, 1);
		uint32_t nx;
		size_t plen = 0;

		l->n++;
		e->type = type ? (char)*type : '0';
		e->mode = get32(r) & 07777;
		e->uid = get32(r);
		e->gid = get32(r);
		e->mtime = (time_t)get64(r);
		e->size = get64(r);
		e->offset = get64(r);
		e->devmajor = get32(r);
		e->devminor = get32(r);
		e->path = getstr(r, &plen, &null);
		if (!e->path || strlen(e->path) != plen)
			r->bad = true;
		e->link = getstr(r, NULL, &null);
		if (!e->link && !null)
			r->bad = true;
		nx = get32(r);
		if (r->bad || nx > (r->n - r->pos) / 8 || e->size < 0 || e->offset < 0 ||
			e->offset > l->tar_size || e->size > l->tar_size - e->offset) {
			r->bad = true;
			break;
		}
		e->xattrs = calloc((size_t)nx + 1, sizeof(*e->xattrs));
		if (!e->xattrs)
			return -ENOMEM;
		for (k = 0; k < nx && !r->bad; k++) {
			e->n_xattrs++;
			e->xattrs[k].name = getstr(r, NULL, &null);
			e->xattrs[k].value = getstr(r, &e->xattrs[k].len, &null);
			if (!e->xattrs[k].name || !e->xattrs[k].value)
				r->bad = true;
		}
	}
	return r->bad ? -EBADMSG : 0;
}

int layer_index_decode(const void *p, size_t n, const char *digest, struct layer **out)
{
	struct idx_rd r = { p, n, 0, false };
	struct layer *l;
	uint32_t ncp, codec, i, span, nspans, bp;
	const void *sp;
	const char *td;
	char *named;
	bool null;
	int ret;

	if (n < 12 || memcmp(p, IDX_MAGIC, 8) != 0)
		return -EBADMSG;
	r.n = n - 4;
	if (get32(&(struct idx_rd){ p, n, n - 4, false }) !=
		(uint32_t)crc32(0, (const Bytef *)p, (uInt)(n - 4)))
		return -EBADMSG;
	take(&r, 8);
	codec = get32(&r);
	get32(&r);
	/* the blob it describes: the one asked for, or (digest NULL) any it names */
	named = getstr(&r, NULL, &null);
	if (!named || !digest_supported(named) || (digest && strcmp(named, digest) != 0)) {
		free(named);
		return -EBADMSG;
	}
	l = layer_alloc(named);
	free(named);
	if (!l)
		return -ENOMEM;
	l->blob_size = get64(&r);
	l->tar_size = get64(&r);
	td = take(&r, DIGEST_STR_LEN + 1);
	span = get32(&r);
	nspans = get32(&r);
	ret = -EBADMSG;
	if (r.bad || codec > CODEC_ZSTD || l->blob_size <= 0 || l->tar_size < 0 ||
		td[DIGEST_STR_LEN] != '\0' ||
		(*td && !(strncmp(td, "sha256:", 7) == 0 && strlen(td) == DIGEST_STR_LEN)) ||
		span != LAYER_CHECK_SPAN ||
		nspans != (uint64_t)(l->blob_size + LAYER_CHECK_SPAN - 1) / LAYER_CHECK_SPAN ||
		!(sp = take(&r, (size_t)nspans * DIGEST_RAW_LEN)))
		goto fail;
	ret = -ENOMEM;
	l->n_spans = nspans;
	l->spans = malloc((size_t)nspans * DIGEST_RAW_LEN);
	l->span_ok = calloc(nspans, 1);
	if (!l->spans || !l->span_ok)
		goto fail;
	memcpy(l->spans, sp, (size_t)nspans * DIGEST_RAW_LEN);
	ncp = get32(&r);
	ret = -EBADMSG;
	if (r.bad || ncp < 1 || ncp > (r.n - r.pos) / 24)
		goto fail;
	l->codec = (enum codec)codec;
	memcpy(l->tar_digest, td, sizeof(l->tar_digest));
	ret = -ENOMEM;
	l->cps = calloc(ncp, sizeof(*l->cps));
	if (!l->cps)
		goto fail;
	ret = -EBADMSG;
	for (i = 0; i < ncp; i++) {
		struct layer_cp *cp = &l->cps[i];
		const void *w;

		cp->out = get64(&r);
		cp->in = get64(&r);
		bp = get32(&r);
		cp->bits = bp & 0xff;
		cp->prime = (unsigned char)(bp >> 8);
		cp->wlen = get32(&r);
		if (r.bad || cp->bits > 7 || (bp >> 16) || cp->wlen > WINDOW || cp->out < 0 ||
			cp->out > l->tar_size || cp->in > l->blob_size || (i == 0 && cp->in) ||
			(i == 0 && cp->out) ||
			(i > 0 && (cp->out <= l->cps[i - 1].out || cp->in <= l->cps[i - 1].in)) ||
			(cp->bits && cp->in < 1))
			goto fail;
		l->n_cps++;
		w = take(&r, cp->wlen);
		if (!w)
			goto fail;
		if (cp->wlen) {
			cp->window = malloc(cp->wlen);
			if (!cp->window) {
				ret = -ENOMEM;
				goto fail;
			}
			memcpy(cp->window, w, cp->wlen);
		}
	}
	ret = decode_entries(&r, l);
	if (!ret && r.pos != r.n)
		ret = -EBADMSG;
	if (!ret)
		ret = names_build(l);
	if (ret)
		goto fail;
	*out = l;
	return 0;
fail:
	layer_free(l);
	return ret;
}

/* ---- opening ---- */

void layer_free(struct layer *l)
{
	size_t i;

	if (!l)
		return;
	for (i = 0; i < CURSORS; i++)
		stream_free(l->cursors[i]);
	if (l->blob)
		cache_blob_close(l->blob);
	layer_entries_free(l->entries, l->n);
	for (i = 0; i < l->n_cps; i++)
		free(l->cps[i].window);
	free(l->cps);
	free(l->spans);
	free(l->span_ok);
	free(l->chunks);
	for (i = 0; i < CURSORS; i++)
		free(l->cbuf[i].buf);
	for (i = 0; i < l->n_names; i++)
		free(l->names[i].path);
	free(l->names);
	pthread_mutex_destroy(&l->lock);
	free(l->digest);
	free(l);
}

/* The index of <cache>/layers/<hex>.idx, when it is there, whole, and of this blob. */
static int index_load(const char *path, const char *digest, int64_t size, struct layer **out)
{
	struct file_src f;
	struct stat st;
	char *p;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) || st.st_size > 1024L * 1024 * 1024) {
		close(fd);
		return -EBADMSG;
	}
	p = malloc((size_t)st.st_size + 1);
	if (!p) {
		close(fd);
		return -ENOMEM;
	}
	f.fd = fd;
	f.size = st.st_size;
	ret = st.st_size ? file_read(&f, p, (size_t)st.st_size, 0) : -EBADMSG;
	close(fd);
	/* one of an earlier version: made again, without a word */
	if (!ret && st.st_size >= 8 && memcmp(p, IDX_MAGIC_OLD, 8) == 0)
		ret = -ENOENT;
	if (!ret)
		ret = layer_index_decode(p, (size_t)st.st_size, digest, out);
	free(p);
	if (!ret && (*out)->blob_size != size) {
		layer_free(*out);
		ret = -EBADMSG;
	}
	return ret;
}

static int index_store(const struct layer *l, const char *dir, const char *path)
{
	struct buf b = BUF_INIT;
	char tmp[PATH_MAX];
	int fd, ret;

	ret = layer_index_encode(l, &b);
	if (ret)
		return ret;
	if (snprintf(tmp, sizeof(tmp), "%s/.idx.XXXXXX", dir) >= (int)sizeof(tmp))
		ret = -ENAMETOOLONG;
	else if ((fd = mkstemp(tmp)) < 0)
		ret = -errno;
	else {
		size_t done = 0;

		while (!ret && done < b.len) {
			ssize_t w = write(fd, b.data + done, b.len - done);

			if (w < 0 && errno != EINTR)
				ret = -errno;
			else if (w > 0)
				done += (size_t)w;
		}
		if (close(fd) && !ret)
			ret = -errno;
		if (!ret && rename(tmp, path))
			ret = -errno;
		if (ret)
			unlink(tmp);
	}
	if (ret)
		log_warn("%s: index not kept in the cache: %s", l->label, strerror(-ret));
	buf_release(&b);
	return ret;
}

/* One pass over the blob: entries, checkpoints, sizes, and the tar's digest when asked. */
static int index_build(struct layer *l, bool tar_digest)
{
	struct stream *s = stream_new(l);
	struct layer_cp start = { .out = 0 };
	int ret;

	if (!s)
		return -ENOMEM;
	s->record = true;
	s->cps = calloc(1, sizeof(*s->cps));
	s->n_cps = s->cps ? 1 : 0;
	if (tar_digest)
		s->hash = digest_ctx_new();
	l->n_spans = (size_t)((l->blob_size + LAYER_CHECK_SPAN - 1) / LAYER_CHECK_SPAN);
	l->spans = calloc(l->n_spans ? l->n_spans : 1, DIGEST_RAW_LEN);
	s->span_hash = digest_ctx_new();
	ret = !s->cps || (tar_digest && !s->hash) || !l->spans || !s->span_hash
		      ? -ENOMEM
		      : stream_seek(s, &start);
	if (!ret)
		ret = layer_tar_index_read(
			stream_tar_read, s, INT64_MAX, l->label, &l->entries, &l->n);
	/* the rest (the zero blocks, padding): the tar's size, and the stream proved whole */
	while (!ret && !s->eof)
		ret = stream_fill(s);
	if (!ret) {
		size_t i;

		l->tar_size = s->out_base + (int64_t)s->ob_len;
		for (i = 0; i < l->n; i++)
			if (l->entries[i].offset + l->entries[i].size > l->tar_size) {
				log_err("%s: tar entry \"%.200s\": size past the end", l->label,
					l->entries[i].path);
				ret = -EBADMSG;
				break;
			}
	}
	if (!ret && s->hash)
		digest_ctx_final(s->hash, l->tar_digest);
	l->cps = s->cps;
	l->n_cps = s->n_cps;
	s->cps = NULL;
	digest_ctx_free(s->hash);
	digest_ctx_free(s->span_hash);
	stream_free(s);
	return ret;
}

int layer_open(struct cache *c, struct registry *r, const char *repo, const char *digest,
	const char *media_type, int64_t size, bool tar_digest, struct layer **out)
{
	char dir[PATH_MAX], path[PATH_MAX];
	struct layer *l = NULL;
	int ret;

	if (snprintf(dir, sizeof(dir), "%s/layers", cache_dir(c)) >= (int)sizeof(dir) - 80 ||
		snprintf(path, sizeof(path), "%s/%s.idx", dir, digest_hex(digest)) >=
			(int)sizeof(path))
		return -ENAMETOOLONG;
	ret = index_load(path, digest, size, &l);
	if (ret == -ENOMEM)
		return ret;
	if (!ret && tar_digest && !*l->tar_digest) {
		layer_free(l); /* made without the tar's digest: again, with it */
		l = NULL;
	}
	if (ret && ret != -ENOENT)
		log_warn("%s@%s: index in the cache unusable: made again", repo, digest);
	if (!l && !(l = layer_of_blob(digest, media_type, size)))
		return -ENOMEM;
	snprintf(l->label, sizeof(l->label), "%s@%s", repo, digest);
	ret = size > 0 ? cache_blob_open(c, r, repo, digest, size, &l->blob) : -EIO;
	if (ret)
		goto fail;
	if (!l->cps) {
		ret = index_build(l, tar_digest);
		if (!ret)
			ret = names_build(l);
		if (ret)
			goto fail;
		index_store(l, dir, path);
	}
	*out = l;
	return 0;
fail:
	layer_free(l);
	return ret == -ENOMEM ? ret : -EIO;
}

/* The most an index may take once decompressed. */
#define PUBLISHED_MAX (512L * 1024 * 1024)

/* The padded end of e's data: where the next entry's headers start. */
static int64_t entry_end(const struct layer_entry *e)
{
	return e->offset + (e->size + BLOCK - 1) / BLOCK * BLOCK;
}

/* The most header blocks (PAX records, GNU long names) one entry may have before it. */
#define HEADERS_MAX (META_MAX + 4 * BLOCK)

/*
 * Whether l's entries tile its tar: each entry's headers start where the
 * one before it ends (its data padded to a block), take at least a block
 * and at most HEADERS_MAX, and only regular files have data. An index that
 * adds an entry, or moves one onto another's bytes, does not.
 */
static bool entries_tile(const struct layer *l)
{
	int64_t end = 0;
	size_t i;

	for (i = 0; i < l->n; i++) {
		const struct layer_entry *e = &l->entries[i];

		if (e->offset % BLOCK || e->offset - end < BLOCK || e->offset - end > HEADERS_MAX ||
			(e->type != '0' && e->size) || e->size < 0)
			return false;
		end = entry_end(e);
		if (end > l->tar_size)
			return false;
	}
	return true;
}

int layer_open_published(struct cache *c, struct registry *r, const char *repo, const char *digest,
	const char *media_type, int64_t size, const void *z, size_t zlen, struct layer **out)
{
	unsigned long long n = ZSTD_getFrameContentSize(z, zlen);
	struct layer *l = NULL;
	void *p;
	size_t got;
	int ret;

	if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN || n > PUBLISHED_MAX) {
		log_err("%s@%s: the published index is not a zstd frame of known size", repo,
			digest);
		return -EBADMSG;
	}
	p = malloc(n ? (size_t)n : 1);
	if (!p)
		return -ENOMEM;
	got = ZSTD_decompress(p, (size_t)n, z, zlen);
	ret = ZSTD_isError(got) || got != n ? -EBADMSG
					    : layer_index_decode(p, (size_t)n, digest, &l);
	free(p);
	if (!ret && (l->blob_size != size || l->codec != codec_of(media_type)))
		ret = -EBADMSG;
	if (!ret && !entries_tile(l)) {
		log_err("%s@%s: the published index's entries do not tile the tar", repo, digest);
		ret = -EPROTO;
	}
	if (ret) {
		if (ret == -EBADMSG)
			log_err("%s@%s: the published index is damaged or of another blob", repo,
				digest);
		if (ret == -EPROTO)
			ret = -EBADMSG;
		layer_free(l);
		return ret;
	}
	l->published = true;
	snprintf(l->label, sizeof(l->label), "%s@%s", repo, digest);
	ret = cache_blob_open(c, r, repo, digest, size, &l->blob);
	if (ret) {
		layer_free(l);
		return ret == -ENOMEM ? ret : -EIO;
	}
	*out = l;
	return 0;
}

int layer_index_publishable(const struct layer *l, struct buf *out)
{
	struct buf b = BUF_INIT;
	size_t cap;
	int ret;

	ret = layer_index_encode(l, &b);
	cap = ZSTD_compressBound(b.len);
	if (!ret)
		ret = buf_reserve(out, cap);
	if (!ret) {
		size_t z = ZSTD_compress(out->data + out->len, cap, b.data, b.len, 3);

		if (ZSTD_isError(z))
			ret = -ENOMEM;
		else
			out->len += z;
		out->data[out->len] = '\0';
	}
	buf_release(&b);
	return ret;
}

bool layer_bad(struct layer *l)
{
	bool bad;

	pthread_mutex_lock(&l->lock);
	bad = l->bad;
	pthread_mutex_unlock(&l->lock);
	return bad;
}

bool layer_publishable(const struct layer *l)
{
	return l->spans && !l->published && !l->chunks;
}

/* A tar of n bytes in memory, for layer_tar_index_read(). */
struct mem_src {
	const unsigned char *p;
	int64_t n;
};

static int mem_read(void *ctx, void *p, size_t n, int64_t off)
{
	const struct mem_src *m = ctx;

	if (off >= m->n)
		return -ENODATA;
	if ((int64_t)n > m->n - off)
		return -EBADMSG;
	memcpy(p, m->p + off, n);
	return 0;
}

static bool str_same(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/* Whether two entries say the same of a file, every field of the header included. */
static bool entry_same(const struct layer_entry *a, const struct layer_entry *b)
{
	size_t i;

	if (!str_same(a->path, b->path) || !str_same(a->link, b->link) || a->type != b->type ||
		a->mode != b->mode || a->uid != b->uid || a->gid != b->gid ||
		a->mtime != b->mtime || a->size != b->size || a->offset != b->offset ||
		a->devmajor != b->devmajor || a->devminor != b->devminor ||
		a->n_xattrs != b->n_xattrs)
		return false;
	for (i = 0; i < a->n_xattrs; i++)
		if (!str_same(a->xattrs[i].name, b->xattrs[i].name) ||
			a->xattrs[i].len != b->xattrs[i].len ||
			memcmp(a->xattrs[i].value, b->xattrs[i].value, a->xattrs[i].len) != 0)
			return false;
	return true;
}

int layer_check_entry(struct layer *l, const struct layer_entry *e)
{
	struct layer_entry *got = NULL;
	struct mem_src m = { NULL, 0 };
	unsigned char *h = NULL;
	int64_t start;
	size_t n = 0, i;
	ssize_t r;
	bool ok = false;
	int ret;

	if (!l->published)
		return 0;
	i = (size_t)(e - l->entries);
	if (i >= l->n)
		return -EINVAL;
	/* its headers, from where the entry before it ends (the index tiles: entries_tile()) */
	start = i ? entry_end(&l->entries[i - 1]) : 0;
	if (e->offset - start >= BLOCK && e->offset - start <= HEADERS_MAX) {
		h = malloc((size_t)(e->offset - start));
		if (!h)
			return -ENOMEM;
	}
	if (h) {
		r = layer_read(l, h, (size_t)(e->offset - start), start);
		if (r < 0) {
			free(h);
			return (int)r;
		}
		/*
		 * Parsed as the archive is: one entry must come of them, ending
		 * at the data, and say what the index says, name (PAX and GNU long
		 * names too), type, mode, owner, size, link and device alike.
		 */
		m.p = h;
		m.n = r;
		ret = layer_tar_index_read(mem_read, &m, r + (e->size + BLOCK - 1) / BLOCK * BLOCK,
			l->label, &got, &n);
		if (!ret && n == 1) {
			got[0].offset += start;
			ok = r == e->offset - start && entry_same(&got[0], e);
		}
		if (ret == -ENOMEM) {
			free(h);
			return ret;
		}
		layer_entries_free(got, n);
		free(h);
	}
	if (ok)
		return 0;
	pthread_mutex_lock(&l->lock);
	if (!l->bad)
		log_err("%s: the tar header of \"%.200s\" is not what the published index says: it "
			"is not used again",
			l->label, e->path);
	l->bad = true;
	pthread_mutex_unlock(&l->lock);
	return -EIO;
}

bool layer_bad_claim(struct layer *l)
{
	bool first;

	pthread_mutex_lock(&l->lock);
	first = l->bad && !l->bad_claimed;
	if (first)
		l->bad_claimed = true;
	pthread_mutex_unlock(&l->lock);
	return first;
}

/* ---- reading ---- */

static ssize_t toc_read(struct layer *l, void *p, size_t n, int64_t off);

/*
 * In an array of n structs of size bytes sorted by the int64_t at byte at of
 * each, the last one whose is at or before off (0 when none is).
 */
static size_t last_at_or_before(const void *v, size_t n, size_t size, size_t at, int64_t off)
{
	size_t lo = 0, hi = n;

	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		int64_t k;

		memcpy(&k, (const char *)v + mid * size + at, sizeof(k));
		if (k <= off)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* The last checkpoint at or before off. */
static const struct layer_cp *cp_before(const struct layer *l, int64_t off)
{
	return &l->cps[last_at_or_before(
		l->cps, l->n_cps, sizeof(*l->cps), offsetof(struct layer_cp, out), off)];
}

/*
 * A cursor for a read at off, marked busy: one already between the nearest
 * checkpoint and off, or the least recently used one started at the
 * checkpoint. NULL when all are busy (the caller makes a stream of its own).
 * Caller holds l->lock.
 */
static struct stream *cursor_take(struct layer *l, int64_t off, const struct layer_cp *cp)
{
	struct stream *best = NULL, *old = NULL;
	size_t i;

	for (i = 0; i < CURSORS && l->cursors[i]; i++) {
		struct stream *s = l->cursors[i];

		if (s->busy)
			continue;
		if (s->valid && stream_pos(s) <= off && stream_pos(s) >= cp->out &&
			(!best || stream_pos(s) > stream_pos(best)))
			best = s;
		if (!old || s->used < old->used)
			old = s;
	}
	if (!best && i < CURSORS)
		old = l->cursors[i] = stream_new(l);
	if (!best && old) {
		best = old;
		best->valid = false;
	}
	if (best)
		best->busy = true;
	return best;
}

ssize_t layer_read(struct layer *l, void *p, size_t n, int64_t off)
{
	struct layer_cp here = { .out = off, .in = off };
	const struct layer_cp *cp;
	struct stream *s, *own = NULL;
	ssize_t r;

	if (off < 0)
		return -EINVAL;
	if (off >= l->tar_size || !n)
		return 0;
	if ((int64_t)n > l->tar_size - off)
		n = (size_t)(l->tar_size - off);
	if (!l->blob)
		return -EIO;
	if (l->chunks)
		return layer_bad(l) ? -EIO : toc_read(l, p, n, off);
	/* an uncompressed layer starts anywhere */
	cp = l->codec == CODEC_NONE ? &here : cp_before(l, off);
	pthread_mutex_lock(&l->lock);
	s = cursor_take(l, off, cp);
	pthread_mutex_unlock(&l->lock);
	if (!s)
		s = own = stream_new(l);
	if (!s)
		return -ENOMEM;
	r = s->valid ? 0 : stream_seek(s, cp);
	if (!r)
		r = stream_read(s, p, n, off);
	if (r < 0)
		s->valid = false;
	if (own) {
		stream_free(own);
	} else {
		pthread_mutex_lock(&l->lock);
		s->busy = false;
		s->used = ++l->clock;
		pthread_mutex_unlock(&l->lock);
	}
	/* the file's last bytes: only once the whole archive verified, as for a blob */
	if (r > 0 && l->single && off + r >= l->entries[0].offset + l->entries[0].size) {
		struct blob_reader rd = { 0 };
		int fd = cache_blob_prepare(l->blob, &rd, l->blob_size - 1, 1);

		if (fd < 0)
			return -EIO;
		cache_blob_done(l->blob, l->blob_size - 1, 1);
	}
	return r;
}

/* ---- a tar of one file ---- */

/* layer_tar_index_read()'s reader of a blob's ranges, fetched without waiting to verify. */
struct hop {
	struct blob *blob;
	int64_t size;
};

static int hop_read(void *ctx, void *p, size_t n, int64_t off)
{
	struct hop *h = ctx;
	struct blob_reader rd = { .own_check = true };
	int fd, ret;

	if (off >= h->size)
		return -ENODATA;
	if ((int64_t)n > h->size - off)
		return -EBADMSG;
	fd = cache_blob_prepare(h->blob, &rd, off, n);
	if (fd < 0)
		return fd;
	ret = file_read(&(struct file_src){ fd, h->size }, p, n, off) ? -EIO : 0;
	cache_blob_done(h->blob, off, n);
	return ret;
}

int layer_open_single(struct cache *c, struct registry *r, const char *repo, const char *digest,
	const char *media_type, int64_t size, const char *path, int64_t file_size,
	struct layer **out)
{
	struct layer *l;
	struct hop h;
	int ret;

	if (codec_of(media_type) != CODEC_NONE || size <= 0)
		return -EINVAL;
	l = layer_of_blob(digest, media_type, size);
	if (!l)
		return -ENOMEM;
	snprintf(l->label, sizeof(l->label), "%s@%s", repo, digest);
	ret = cache_blob_open(c, r, repo, digest, size, &l->blob);
	if (ret)
		goto fail;
	h.blob = l->blob;
	h.size = size;
	/* its headers and the end of the archive: two small ranges, whatever the file's size */
	ret = layer_tar_index_read(hop_read, &h, size, l->label, &l->entries, &l->n);
	if (ret)
		goto fail;
	if (!layer_holds_one(l, path, file_size)) {
		ret = -EBADMSG;
		goto fail;
	}
	l->tar_size = size;
	l->single = true;
	l->cps = calloc(1, sizeof(*l->cps));
	l->n_cps = l->cps ? 1 : 0;
	ret = l->cps ? names_build(l) : -ENOMEM;
	if (ret)
		goto fail;
	*out = l;
	return 0;
fail:
	layer_free(l);
	return ret == -ENOMEM ? ret : ret == -EBADMSG ? ret : -EIO;
}

bool layer_is_single(const struct layer *l)
{
	return l->single;
}

bool layer_holds_one(const struct layer *l, const char *path, int64_t size)
{
	char clean[PATH_MAX];

	return l->n == 1 && l->entries[0].type == '0' && l->entries[0].size == size &&
	       !layer_path_clean(l->entries[0].path, clean, sizeof(clean)) &&
	       strcmp(clean, path) == 0;
}

bool layer_verified(struct layer *l)
{
	/* a published index's spans, a TOC's chunks are checked before a byte of them is read */
	return l->blob &&
	       (cache_blob_verified(l->blob) || ((l->published || l->chunks) && !layer_bad(l)));
}

/* ---- layers with a table of contents ---- */

/* Bytes [off, off + n) of the blob, fetched (each range checked by the caller) into p. */
static int blob_range(struct layer *l, int64_t off, size_t n, void *p)
{
	struct blob_reader rd = { .own_check = true };
	int fd = cache_blob_prepare(l->blob, &rd, off, n), ret;

	if (fd < 0)
		return fd;
	ret = file_read(&(struct file_src){ fd, l->blob_size }, p, n, off) ? -EIO : 0;
	cache_blob_done(l->blob, off, n);
	return ret;
}

/* Chunk i decompressed and checked against its digest: *out (chunk->size bytes, malloc'd). */
static int chunk_load(struct layer *l, size_t i, unsigned char **out)
{
	const struct toc_chunk *c = &l->chunks[i];
	size_t zn = (size_t)(c->in_end - c->in);
	unsigned char *z = malloc(zn ? zn : 1), *b = malloc((size_t)c->size), md[DIGEST_RAW_LEN];
	size_t got = 0;
	int ret;

	ret = z && b ? blob_range(l, c->in, zn, z) : -ENOMEM;
	if (!ret && l->codec == CODEC_ZSTD) {
		ZSTD_DCtx *d = ZSTD_createDCtx();
		ZSTD_inBuffer in = { z, zn, 0 };

		ret = d ? 0 : -ENOMEM;
		while (!ret && got < (size_t)c->size) {
			ZSTD_outBuffer o = { b, (size_t)c->size, got };
			size_t r = ZSTD_decompressStream(d, &o, &in);

			if (ZSTD_isError(r) || (o.pos == got && in.pos == in.size))
				ret = -EIO;
			got = o.pos;
		}
		ZSTD_freeDCtx(d);
	} else if (!ret) {
		z_stream s;
		int zr;

		memset(&s, 0, sizeof(s));
		ret = inflateInit2(&s, 15 + 16) == Z_OK ? 0 : -ENOMEM;
		s.next_in = z;
		s.avail_in = (uInt)zn;
		s.next_out = b;
		s.avail_out = (uInt)c->size;
		while (!ret && s.avail_out) {
			zr = inflate(&s, Z_NO_FLUSH);
			if (zr != Z_OK && !(zr == Z_STREAM_END && !s.avail_out))
				ret = -EIO;
		}
		got = (size_t)c->size - s.avail_out;
		inflateEnd(&s);
	}
	free(z);
	if (!ret && got == (size_t)c->size) {
		digest_buffer_raw(b, got, md);
		if (memcmp(md, c->digest, DIGEST_RAW_LEN) != 0)
			ret = -EBADMSG;
	} else if (!ret) {
		ret = -EIO;
	}
	if (ret) {
		free(b);
		if (ret == -ENOMEM)
			return ret;
		pthread_mutex_lock(&l->lock);
		if (!l->bad)
			log_err("%s: chunk at %lld of the blob %s: its table of contents is not "
				"used "
				"again",
				l->label, (long long)c->in,
				ret == -EBADMSG ? "does not match its digest"
						: "does not decompress");
		l->bad = true;
		pthread_mutex_unlock(&l->lock);
		return -EIO;
	}
	*out = b;
	return 0;
}

/* Chunk i's bytes, from the ones kept or loaded: a slot with a ref, or NULL and *own. */
static int chunk_get(struct layer *l, size_t i, struct chunk_buf **slot, unsigned char **own)
{
	struct chunk_buf *free_slot = NULL;
	unsigned char *b;
	size_t k;
	int ret;

	*slot = NULL;
	*own = NULL;
	pthread_mutex_lock(&l->lock);
	for (k = 0; k < CURSORS; k++)
		if (l->cbuf[k].buf && l->cbuf[k].i == i) {
			l->cbuf[k].refs++;
			l->cbuf[k].used = ++l->clock;
			*slot = &l->cbuf[k];
			pthread_mutex_unlock(&l->lock);
			return 0;
		}
	pthread_mutex_unlock(&l->lock);
	ret = chunk_load(l, i, &b);
	if (ret)
		return ret;
	pthread_mutex_lock(&l->lock);
	for (k = 0; k < CURSORS; k++)
		if (!l->cbuf[k].refs && (!free_slot || l->cbuf[k].used < free_slot->used))
			free_slot = &l->cbuf[k];
	if (free_slot) {
		free(free_slot->buf);
		free_slot->buf = b;
		free_slot->i = i;
		free_slot->refs = 1;
		free_slot->used = ++l->clock;
		*slot = free_slot;
	} else {
		*own = b; /* every slot in use: this read's alone */
	}
	pthread_mutex_unlock(&l->lock);
	return 0;
}

static ssize_t toc_read(struct layer *l, void *p, size_t n, int64_t off)
{
	size_t done = 0;

	while (done < n) {
		int64_t at = off + (int64_t)done;
		size_t lo = last_at_or_before(l->chunks, l->n_chunks, sizeof(*l->chunks),
			       offsetof(struct toc_chunk, out), at),
		       k;
		struct chunk_buf *slot;
		unsigned char *own;
		const struct toc_chunk *c;
		int ret;

		c = &l->chunks[lo];
		if (!l->n_chunks || at < c->out || at >= c->out + c->size)
			return -EIO;
		ret = chunk_get(l, lo, &slot, &own);
		if (ret)
			return done ? (ssize_t)done : ret;
		k = (size_t)(c->out + c->size - at) < n - done ? (size_t)(c->out + c->size - at)
							       : n - done;
		memcpy((char *)p + done, (slot ? slot->buf : own) + (at - c->out), k);
		done += k;
		free(own);
		if (slot) {
			pthread_mutex_lock(&l->lock);
			slot->refs--;
			pthread_mutex_unlock(&l->lock);
		}
	}
	return (ssize_t)done;
}

int layer_open_toc(struct cache *c, struct registry *r, const char *repo, const char *digest,
	const char *media_type, int64_t size, const char *toc_digest, bool compressed,
	struct layer **out)
{
	unsigned char tail[TOC_TAIL], *z = NULL;
	char *json = NULL, got[DIGEST_STR_LEN + 1];
	struct toc t = { 0 };
	struct layer *l;
	size_t tn = size < TOC_TAIL ? (size_t)size : TOC_TAIL, jlen = 0;
	int64_t off = 0, len = 0;
	int ret;

	if (codec_of(media_type) == CODEC_NONE || size <= 0)
		return -EBADMSG;
	l = layer_of_blob(digest, media_type, size);
	if (!l)
		return -ENOMEM;
	snprintf(l->label, sizeof(l->label), "%s@%s", repo, digest);
	ret = cache_blob_open(c, r, repo, digest, size, &l->blob);
	if (!ret)
		ret = blob_range(l, size - (int64_t)tn, tn, tail);
	if (!ret && toc_locate(tail, tn, size, l->codec == CODEC_ZSTD, &off, &len)) {
		log_err("%s: no table of contents at the end of the blob", l->label);
		ret = -EBADMSG;
	}
	if (!ret && !(z = malloc((size_t)len)))
		ret = -ENOMEM;
	if (!ret)
		ret = blob_range(l, off, (size_t)len, z);
	if (!ret && compressed) {
		digest_buffer(z, (size_t)len, got);
		if (strcmp(got, toc_digest) != 0) {
			log_err("%s: the table of contents hashes to %s, not to %s as the manifest "
				"says",
				l->label, got, toc_digest);
			ret = -EBADMSG;
		}
	}
	if (!ret && toc_json(z, (size_t)len, l->codec == CODEC_ZSTD, &json, &jlen)) {
		log_err("%s: the table of contents does not decompress", l->label);
		ret = -EBADMSG;
	}
	if (!ret && !compressed) {
		digest_buffer(json, jlen, got);
		if (strcmp(got, toc_digest) != 0) {
			log_err("%s: the table of contents hashes to %s, not to %s as the manifest "
				"says",
				l->label, got, toc_digest);
			ret = -EBADMSG;
		}
	}
	if (!ret)
		ret = toc_parse(json, jlen, off, l->label, &t);
	free(z);
	free(json);
	if (!ret) {
		l->entries = t.entries;
		l->n = t.n;
		l->chunks = t.chunks;
		l->n_chunks = t.n_chunks;
		l->tar_size = t.data_size;
		ret = names_build(l);
	}
	if (ret) {
		layer_free(l); /* what toc_parse() made is l's, or was freed by it */
		return ret == -ENOMEM ? ret : -EBADMSG;
	}
	*out = l;
	return 0;
}

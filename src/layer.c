#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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

#define BLOCK 512
/* GNU long names and PAX headers bigger than this are not names: a damaged archive. */
#define META_MAX (1024 * 1024)
#define IO_BUF (256 * 1024)

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

static int read_at(int fd, void *p, size_t n, int64_t off)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = pread(fd, (char *)p + done, n - done, off + (int64_t)done);

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
		char *end;
		unsigned long len = strtoul(d + pos, &end, 10);
		const char *key, *eq, *val;
		size_t vlen;

		if (end == d + pos || *end != ' ' || len == 0 || len > n - pos)
			return -EBADMSG;
		key = end + 1;
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
	struct layer_entry *v = NULL;
	size_t nv = 0, cap = 0;
	struct pending p;
	unsigned char h[BLOCK];
	int64_t off = 0;
	int ret = 0;

	memset(&p, 0, sizeof(p));
	p.size = p.uid = p.gid = p.mtime = -1;
	while (off + BLOCK <= size) {
		struct layer_entry *e;
		int64_t dsize;
		char type;

		ret = read_at(fd, h, BLOCK, off);
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
				log_err("%s: tar header at %lld: oversized", label, (long long)off);
				ret = -EBADMSG;
				break;
			}
			d = malloc((size_t)dsize + 1);
			if (!d) {
				ret = -ENOMEM;
				break;
			}
			ret = read_at(fd, d, (size_t)dsize, off);
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

/* ---- decompression ---- */

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

enum codec { CODEC_NONE, CODEC_GZIP, CODEC_ZSTD };

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

static int write_all(int fd, const void *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p = (const char *)p + w;
		n -= (size_t)w;
	}
	return 0;
}

static int gunzip(int in, int64_t size, int out, const char *label)
{
	unsigned char *ib = malloc(IO_BUF), *ob = malloc(IO_BUF);
	z_stream z;
	int64_t off = 0;
	int zr = Z_OK, ret = 0;

	memset(&z, 0, sizeof(z));
	if (!ib || !ob || inflateInit2(&z, 15 + 32) != Z_OK) {
		free(ib);
		free(ob);
		return -ENOMEM;
	}
	while (!ret && off < size) {
		size_t want = size - off < IO_BUF ? (size_t)(size - off) : IO_BUF;

		ret = read_at(in, ib, want, off);
		if (ret)
			break;
		off += (int64_t)want;
		z.next_in = ib;
		z.avail_in = (uInt)want;
		while (!ret && z.avail_in > 0) {
			z.next_out = ob;
			z.avail_out = IO_BUF;
			zr = inflate(&z, Z_NO_FLUSH);
			if (zr != Z_OK && zr != Z_STREAM_END) {
				log_err("%s: gzip: %s", label, z.msg ? z.msg : "corrupt data");
				ret = -EIO;
				break;
			}
			ret = write_all(out, ob, IO_BUF - z.avail_out);
			/* concatenated gzip members, as pigz and some tools write */
			if (!ret && zr == Z_STREAM_END && z.avail_in > 0)
				inflateReset(&z);
		}
	}
	if (!ret && zr != Z_STREAM_END) {
		log_err("%s: gzip: truncated", label);
		ret = -EIO;
	}
	inflateEnd(&z);
	free(ib);
	free(ob);
	return ret;
}

static int unzstd(int in, int64_t size, int out, const char *label)
{
	ZSTD_DCtx *d = ZSTD_createDCtx();
	size_t ibn = ZSTD_DStreamInSize(), obn = ZSTD_DStreamOutSize(), zr = 1;
	unsigned char *ib = malloc(ibn), *ob = malloc(obn);
	int64_t off = 0;
	int ret = 0;

	if (!d || !ib || !ob) {
		ZSTD_freeDCtx(d);
		free(ib);
		free(ob);
		return -ENOMEM;
	}
	while (!ret && off < size) {
		size_t want = size - off < (int64_t)ibn ? (size_t)(size - off) : ibn;
		ZSTD_inBuffer zin = { ib, want, 0 };

		ret = read_at(in, ib, want, off);
		if (ret)
			break;
		off += (int64_t)want;
		while (!ret && zin.pos < zin.size) {
			ZSTD_outBuffer zout = { ob, obn, 0 };

			zr = ZSTD_decompressStream(d, &zout, &zin);
			if (ZSTD_isError(zr)) {
				log_err("%s: zstd: %s", label, ZSTD_getErrorName(zr));
				ret = -EIO;
				break;
			}
			ret = write_all(out, ob, zout.pos);
		}
	}
	if (!ret && zr != 0) {
		log_err("%s: zstd: truncated", label);
		ret = -EIO;
	}
	ZSTD_freeDCtx(d);
	free(ib);
	free(ob);
	return ret;
}

void layer_free(struct layer *l)
{
	if (!l)
		return;
	if (l->blob)
		cache_blob_close(l->blob);
	else if (l->fd >= 0)
		close(l->fd);
	layer_entries_free(l->entries, l->n);
	free(l->digest);
	free(l);
}

int layer_open(struct cache *c, struct registry *r, const char *repo, const char *digest,
	const char *media_type, int64_t size, struct layer **out)
{
	struct blob_reader rd = { 0, 0, 0 };
	struct layer *l = calloc(1, sizeof(*l));
	char path[PATH_MAX], tmp[PATH_MAX], label[600];
	enum codec codec = codec_of(media_type);
	struct blob *b = NULL;
	struct stat st;
	int bfd = -1, tfd, ret;

	if (!l)
		return -ENOMEM;
	l->fd = -1;
	l->digest = strdup(digest);
	if (!l->digest) {
		free(l);
		return -ENOMEM;
	}
	snprintf(label, sizeof(label), "%s@%s", repo, digest);
	snprintf(path, sizeof(path), "%s/layers/%s.tar", cache_dir(c), digest_hex(digest));
	if (codec != CODEC_NONE)
		l->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (l->fd < 0) {
		ret = cache_blob_open(c, r, repo, digest, size, &b);
		if (ret)
			goto fail;
		/* the whole blob, verified (its last chunk waits for that) */
		bfd = size > 0 ? cache_blob_prepare(b, &rd, 0, (size_t)size) : -EIO;
		if (bfd < 0) {
			ret = bfd;
			goto fail;
		}
		if (codec == CODEC_NONE) {
			l->fd = bfd;
			l->blob = b;
			b = NULL;
		} else {
			snprintf(tmp, sizeof(tmp), "%s/layers/.%s.XXXXXX", cache_dir(c),
				digest_hex(digest));
			tfd = mkstemp(tmp);
			if (tfd < 0) {
				ret = -errno;
				log_err("%s: %s", tmp, strerror(errno));
				goto fail;
			}
			ret = codec == CODEC_GZIP ? gunzip(bfd, size, tfd, label)
						  : unzstd(bfd, size, tfd, label);
			if (!ret && rename(tmp, path))
				ret = -errno;
			close(tfd);
			if (ret) {
				unlink(tmp);
				goto fail;
			}
			cache_blob_close(b);
			b = NULL;
			l->fd = open(path, O_RDONLY | O_CLOEXEC);
			if (l->fd < 0) {
				ret = -errno;
				goto fail;
			}
		}
	}
	if (fstat(l->fd, &st)) {
		ret = -errno;
		goto fail;
	}
	l->tar_size = codec == CODEC_NONE ? size : st.st_size;
	ret = layer_tar_index(l->fd, l->tar_size, label, &l->entries, &l->n);
	if (ret)
		goto fail;
	*out = l;
	return 0;
fail:
	if (b)
		cache_blob_close(b);
	layer_free(l);
	return ret == -ENOMEM ? ret : -EIO;
}

/* Layer tables of contents: eStargz and zstd:chunked. See toc.h. */
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/evp.h>
#include <zlib.h>
#include <zstd.h>

#include "log.h"
#include "manifest.h"
#include "ref.h"
#include "toc.h"

/* eStargz: an empty gzip member whose extra field says "%016x" STARGZ, the TOC's offset. */
#define STARGZ_FOOTER 51
/* zstd:chunked: a skippable frame of the TOC's offset, length, length uncompressed, type. */
#define ZCHUNKED_FOOTER 48
#define ZCHUNKED_MAGIC "GnUlInUx"

const char *toc_digest_of(const struct descriptor *d, bool *compressed)
{
	const char *s = annotation_get(d->annotations, d->n_annotations, ANN_TOC_DIGEST);
	size_t n = strlen(d->media_type);

	*compressed = false;
	if (s && ref_valid_digest(s))
		return s;
	s = annotation_get(d->annotations, d->n_annotations, ANN_ZCHUNKED_CHECKSUM);
	if (s && ref_valid_digest(s) && n > 5 && strcmp(d->media_type + n - 5, "+zstd") == 0) {
		*compressed = true;
		return s;
	}
	return NULL;
}

int toc_locate(const unsigned char *tail, size_t n, int64_t blob_size, bool zstd, int64_t *off,
	int64_t *len)
{
	const unsigned char *f;
	char hex[17];
	uint64_t o, l;

	if (zstd) {
		if (n < ZCHUNKED_FOOTER)
			return -EBADMSG;
		f = tail + n - ZCHUNKED_FOOTER;
		if (memcmp(f, "\x50\x2a\x4d\x18\x28\x00\x00\x00", 8) != 0 ||
			memcmp(f + 40, ZCHUNKED_MAGIC, 8) != 0)
			return -EBADMSG;
		memcpy(&o, f + 8, 8);
		memcpy(&l, f + 16, 8);
		o = le64toh(o);
		l = le64toh(l);
		if (o >= (uint64_t)blob_size || l == 0 || l > (uint64_t)TOC_MAX ||
			o + l > (uint64_t)blob_size - ZCHUNKED_FOOTER)
			return -EBADMSG;
		*off = (int64_t)o;
		*len = (int64_t)l;
		return 0;
	}
	if (n < STARGZ_FOOTER)
		return -EBADMSG;
	f = tail + n - STARGZ_FOOTER;
	if (f[0] != 0x1f || f[1] != 0x8b || f[3] != 4 || memcmp(f + 12, "SG", 2) != 0 ||
		memcmp(f + 32, "STARGZ", 6) != 0)
		return -EBADMSG;
	memcpy(hex, f + 16, 16);
	hex[16] = '\0';
	if (strspn(hex, "0123456789abcdef") != 16)
		return -EBADMSG;
	o = strtoull(hex, NULL, 16);
	if (o >= (uint64_t)blob_size - STARGZ_FOOTER ||
		blob_size - STARGZ_FOOTER - (int64_t)o > TOC_MAX)
		return -EBADMSG;
	*off = (int64_t)o;
	*len = blob_size - STARGZ_FOOTER - (int64_t)o;
	return 0;
}

/* A full output buffer twice as big: 0, -ENOMEM, or -EBADMSG past TOC_MAX. */
static int grow(unsigned char **b, size_t *cap)
{
	unsigned char *nb = *cap < TOC_MAX ? realloc(*b, *cap * 2) : NULL;

	if (!nb)
		return *cap < TOC_MAX ? -ENOMEM : -EBADMSG;
	*b = nb;
	*cap *= 2;
	return 0;
}

/* What a gzip member or a zstd frame holds, up to TOC_MAX bytes. */
static int inflate_all(
	const unsigned char *p, size_t n, bool zstd, unsigned char **out, size_t *len)
{
	size_t cap = 64 * 1024, got = 0;
	unsigned char *b = malloc(cap);
	int ret = 0;

	if (!b)
		return -ENOMEM;
	if (zstd) {
		ZSTD_DCtx *d = ZSTD_createDCtx();
		ZSTD_inBuffer in = { p, n, 0 };
		size_t r = 1;

		if (!d)
			ret = -ENOMEM;
		while (!ret && r != 0) {
			ZSTD_outBuffer o;

			if (got == cap && (ret = grow(&b, &cap)))
				break;
			o = (ZSTD_outBuffer){ b, cap, got };
			r = ZSTD_decompressStream(d, &o, &in);
			got = o.pos;
			if (ZSTD_isError(r) || (r != 0 && in.pos == in.size && o.pos < o.size))
				ret = -EBADMSG;
		}
		ZSTD_freeDCtx(d);
	} else {
		z_stream z;
		int zr = Z_OK;

		memset(&z, 0, sizeof(z));
		if (inflateInit2(&z, 15 + 16) != Z_OK) {
			free(b);
			return -ENOMEM;
		}
		z.next_in = (Bytef *)(uintptr_t)p;
		z.avail_in = (uInt)n;
		while (zr == Z_OK) {
			if (got == cap && (ret = grow(&b, &cap)))
				break;
			z.next_out = b + got;
			z.avail_out = (uInt)(cap - got);
			zr = inflate(&z, Z_NO_FLUSH);
			got = cap - z.avail_out;
			if (zr == Z_BUF_ERROR && z.avail_out)
				break;
			if (zr == Z_BUF_ERROR)
				zr = Z_OK;
		}
		if (!ret && zr != Z_STREAM_END)
			ret = -EBADMSG;
		inflateEnd(&z);
	}
	if (ret) {
		free(b);
		return ret;
	}
	*out = b;
	*len = got;
	return 0;
}

int toc_json(const unsigned char *p, size_t n, bool zstd, char **json, size_t *len)
{
	unsigned char *b = NULL, *nb;
	size_t got = 0, size;
	char sz[13];
	int ret;

	ret = inflate_all(p, n, zstd, &b, &got);
	if (ret)
		return ret;
	if (zstd) {
		size = got;
	} else {
		/* eStargz: a tar of one entry, stargz.index.json */
		if (got < 512 || strncmp((char *)b, "stargz.index.json", 100) != 0) {
			free(b);
			return -EBADMSG;
		}
		memcpy(sz, b + 124, 12);
		sz[12] = '\0';
		size = (size_t)strtoull(sz, NULL, 8);
		if (size > got - 512) {
			free(b);
			return -EBADMSG;
		}
		memmove(b, b + 512, size);
	}
	nb = realloc(b, size + 1);
	if (!nb) {
		free(b);
		return -ENOMEM;
	}
	nb[size] = '\0';
	*json = (char *)nb;
	*len = size;
	return 0;
}

static const char *jstr(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string)
		       ? json_object_get_string(v)
		       : NULL;
}

/* An integer member, def when absent; false for one of another type or negative. */
static bool jint(struct json_object *o, const char *k, int64_t def, int64_t *out)
{
	struct json_object *v;

	*out = def;
	if (!json_object_object_get_ex(o, k, &v))
		return true;
	if (!json_object_is_type(v, json_type_int))
		return false;
	*out = json_object_get_int64(v);
	return *out >= 0;
}

static bool raw_digest(const char *s, unsigned char *out)
{
	size_t i;

	if (!s || strncmp(s, "sha256:", 7) != 0 || strlen(s) != DIGEST_STR_LEN ||
		strspn(s + 7, "0123456789abcdef") != 64)
		return false;
	for (i = 0; i < DIGEST_RAW_LEN; i++) {
		unsigned v;

		sscanf(s + 7 + 2 * i, "%2x", &v);
		out[i] = (unsigned char)v;
	}
	return true;
}

static int xattrs_of(struct json_object *e, struct layer_entry *le)
{
	struct json_object *x;
	size_t i = 0;

	if (!json_object_object_get_ex(e, "xattrs", &x))
		return 0;
	if (!json_object_is_type(x, json_type_object))
		return -EBADMSG;
	le->xattrs = calloc((size_t)json_object_object_length(x) + 1, sizeof(*le->xattrs));
	if (!le->xattrs)
		return -ENOMEM;
	json_object_object_foreach(x, k, v)
	{
		const char *b64 = json_object_get_string(v);
		size_t n = b64 ? strlen(b64) : 0, pad = 0;
		unsigned char *val;
		int len;

		if (!json_object_is_type(v, json_type_string) || n % 4)
			return -EBADMSG;
		val = malloc(n / 4 * 3 + 1);
		if (!val)
			return -ENOMEM;
		len = n ? EVP_DecodeBlock(val, (const unsigned char *)b64, (int)n) : 0;
		while (n && pad < 2 && b64[n - 1 - pad] == '=')
			pad++;
		if (len < 0 || (size_t)len < pad) {
			free(val);
			return -EBADMSG;
		}
		val[len - (int)pad] = '\0';
		le->xattrs[i].name = strdup(k);
		le->xattrs[i].value = (char *)val;
		le->xattrs[i].len = (size_t)len - pad;
		le->n_xattrs = ++i;
		if (!le->xattrs[i - 1].name)
			return -ENOMEM;
	}
	return 0;
}

static int chunk_cmp_in(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

void toc_release(struct toc *t)
{
	layer_entries_free(t->entries, t->n);
	free(t->chunks);
	memset(t, 0, sizeof(*t));
}

/* The type of a TOC entry as a tar type, or 0 for one not known. */
static char tar_type(const char *t)
{
	static const char *const names[] = { "reg", "dir", "symlink", "hardlink", "char", "block",
		"fifo" };
	static const char types[] = { '0', '5', '2', '1', '3', '4', '6' };
	size_t i;

	for (i = 0; t && i < sizeof(types); i++)
		if (strcmp(t, names[i]) == 0)
			return types[i];
	return 0;
}

int toc_parse(const char *json, size_t len, int64_t toc_off, const char *label, struct toc *out)
{
	struct json_tokener *tok = json_tokener_new_ex(64);
	struct json_object *root = NULL, *ents, *v;
	struct toc t = { 0 };
	struct layer_entry *file = NULL; /* the regular file chunks go to */
	int64_t *starts = NULL, file_next = 0;
	size_t i, n = 0, cap_c = 0;
	int ret = -EBADMSG;

	if (tok)
		root = json_tokener_parse_ex(tok, json, (int)len);
	json_tokener_free(tok);
	if (!root || !json_object_object_get_ex(root, "version", &v) ||
		json_object_get_int(v) != 1 || !json_object_object_get_ex(root, "entries", &ents) ||
		!json_object_is_type(ents, json_type_array)) {
		log_err("%s: table of contents: not version 1 with entries", label);
		goto out;
	}
	n = json_object_array_length(ents);
	t.entries = calloc(n + 1, sizeof(*t.entries));
	starts = calloc(n + 1, sizeof(*starts));
	if (!t.entries || !starts) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(ents, i);
		const char *name = jstr(e, "name"), *type = jstr(e, "type"), *cd;
		int64_t size, off, coff, csize, mode, uid, gid, maj, min;
		unsigned char dg[DIGEST_RAW_LEN];
		struct layer_entry *le;
		struct toc_chunk *c;
		bool chunk = type && strcmp(type, "chunk") == 0;

		if (!name || !*name || !type || (!chunk && !tar_type(type)) ||
			!jint(e, "size", 0, &size) || !jint(e, "offset", 0, &off) ||
			!jint(e, "chunkOffset", 0, &coff) || !jint(e, "chunkSize", 0, &csize) ||
			!jint(e, "mode", 0, &mode) || !jint(e, "uid", 0, &uid) ||
			!jint(e, "gid", 0, &gid) || !jint(e, "devMajor", 0, &maj) ||
			!jint(e, "devMinor", 0, &min)) {
			log_err("%s: table of contents: entry %zu malformed", label, i);
			goto out;
		}
		if (!chunk) {
			/* eStargz's landmarks say what to prefetch: not part of the layer's tree */
			if (strcmp(name, ".prefetch.landmark") == 0 ||
				strcmp(name, ".no.prefetch.landmark") == 0) {
				file = NULL;
				continue;
			}
			le = &t.entries[t.n++];
			le->type = tar_type(type);
			le->path = strdup(name);
			le->link = jstr(e, "linkName") ? strdup(jstr(e, "linkName")) : NULL;
			le->mode = (mode_t)(mode & 07777);
			le->uid = (uid_t)uid;
			le->gid = (gid_t)gid;
			le->devmajor = (unsigned)maj;
			le->devminor = (unsigned)min;
			manifest_time_parse(jstr(e, "modtime"), &le->mtime);
			if (!le->path || (jstr(e, "linkName") && !le->link)) {
				ret = -ENOMEM;
				goto out;
			}
			ret = xattrs_of(e, le);
			if (ret)
				goto out;
			ret = -EBADMSG;
			file = NULL;
			if (le->type != '0')
				continue;
			le->size = size;
			le->offset = t.data_size;
			if (size > INT64_MAX / 2 - t.data_size)
				goto out;
			t.data_size += size;
			if (!size)
				continue;
			file = le;
			file_next = 0;
			coff = 0;
		} else if (!file || strcmp(name, file->path) != 0) {
			log_err("%s: table of contents: chunk of \"%.200s\" out of place", label,
				name);
			goto out;
		}
		/* a chunk: the file's bytes from chunkOffset, chunkSize of them (else the rest) */
		if (!csize)
			csize = file->size - coff;
		cd = jstr(e, "chunkDigest");
		/* a file in one chunk may give its digest only (containers/storage's zstd:chunked) */
		if (!cd && !chunk && csize == file->size)
			cd = jstr(e, "digest");
		if (coff != file_next || csize <= 0 || csize > file->size - coff || off <= 0 ||
			off >= toc_off || !raw_digest(cd, dg)) {
			log_err("%s: table of contents: chunk of \"%.200s\" at %lld malformed",
				label, file->path, (long long)coff);
			goto out;
		}
		if (t.n_chunks == cap_c) {
			size_t nc = cap_c ? 2 * cap_c : 64;
			struct toc_chunk *nv = realloc(t.chunks, nc * sizeof(*nv));

			if (!nv) {
				ret = -ENOMEM;
				goto out;
			}
			t.chunks = nv;
			cap_c = nc;
		}
		c = &t.chunks[t.n_chunks];
		c->out = file->offset + coff;
		c->size = csize;
		c->in = off;
		memcpy(c->digest, dg, sizeof(dg));
		starts[t.n_chunks++] = off;
		file_next = coff + csize;
	}
	/* every file's bytes in its chunks: chunks follow on (checked above) and add up */
	{
		int64_t covered = 0;

		for (i = 0; i < t.n_chunks; i++)
			covered += t.chunks[i].size;
		if (covered != t.data_size) {
			log_err("%s: table of contents: chunks do not cover the files", label);
			goto out;
		}
	}
	/* each chunk's compressed bytes end where the next member or frame starts */
	qsort(starts, t.n_chunks, sizeof(*starts), chunk_cmp_in);
	for (i = 0; i < t.n_chunks; i++) {
		size_t lo = 0, hi = t.n_chunks;

		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;

			if (starts[mid] <= t.chunks[i].in)
				lo = mid + 1;
			else
				hi = mid;
		}
		t.chunks[i].in_end = lo < t.n_chunks ? starts[lo] : toc_off;
	}
	ret = 0;
	*out = t;
	memset(&t, 0, sizeof(t));
out:
	toc_release(&t);
	free(starts);
	json_object_put(root);
	return ret;
}

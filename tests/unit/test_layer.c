/* layer.c: tar indexing (ustar, GNU long names, PAX records, base-256 sizes, damage) and paths. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>
#include <zstd.h>

#include "buf.h"
#include "cache.h"
#include "digest.h"
#include "layer.h"
#include "check.h"

static unsigned char *tarbuf;
static size_t tarlen, tarcap;

/* Room for n more bytes (and the two zero blocks that end an archive). */
static void room(size_t n)
{
	if (tarlen + n + 1024 <= tarcap)
		return;
	tarcap = (tarlen + n + 1024) * 2;
	tarbuf = realloc(tarbuf, tarcap);
	if (!tarbuf)
		abort();
}

/* Append a header block: name, type, size, and (optional) ustar prefix. */
static unsigned char *header(const char *name, char type, size_t size, const char *prefix)
{
	unsigned char *h;
	unsigned sum = 0;
	size_t i;

	room(512);
	h = tarbuf + tarlen;
	memset(h, 0, 512);
	snprintf((char *)h, 100, "%s", name);
	snprintf((char *)h + 100, 8, "%07o", 0644);
	snprintf((char *)h + 108, 8, "%07o", 1000);
	snprintf((char *)h + 116, 8, "%07o", 1001);
	snprintf((char *)h + 124, 12, "%011o", (unsigned)(size & 07777777777));
	snprintf((char *)h + 136, 12, "%011o", 1600000000);
	h[156] = (unsigned char)type;
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	if (prefix)
		snprintf((char *)h + 345, 155, "%s", prefix);
	memset(h + 148, ' ', 8);
	for (i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	tarlen += 512;
	return h;
}

static void data(const char *d, size_t n)
{
	room(n + 512);
	memset(tarbuf + tarlen, 0, (n + 511) / 512 * 512);
	memcpy(tarbuf + tarlen, d, n);
	tarlen += (n + 511) / 512 * 512;
}

/* Index what was built so far (two zero blocks end it). */
static int index_it(struct layer_entry **e, size_t *n)
{
	char path[] = "/tmp/ocifs-test-layer.XXXXXX";
	int fd = mkstemp(path), ret;

	if (fd < 0)
		return -errno;
	unlink(path);
	room(0);
	memset(tarbuf + tarlen, 0, 1024);
	if (write(fd, tarbuf, tarlen + 1024) != (ssize_t)(tarlen + 1024)) {
		close(fd);
		return -EIO;
	}
	ret = layer_tar_index(fd, (int64_t)(tarlen + 1024), "test", e, n);
	close(fd);
	return ret;
}

static void check_clean(const char *in, int want, const char *out)
{
	char buf[256];
	int ret = layer_path_clean(in, buf, sizeof(buf));

	CHECK(ret == want && (ret || strcmp(buf, out) == 0),
		"clean \"%s\": %d \"%s\" (got %d \"%s\")", in, want, out, ret, ret ? "" : buf);
}

/* ---- random access into compressed layers ---- */

#define FILE_SIZE (5 * 1024 * 1024)
#define N_FILES 3

/* gzip of p in members members (concatenated), malloc'd. */
static unsigned char *gz(const unsigned char *p, size_t n, int members, size_t *out)
{
	size_t cap = compressBound((uLong)n) + 1024 * (size_t)members, len = 0, i;
	unsigned char *o = malloc(cap);

	for (i = 0; o && i < (size_t)members; i++) {
		size_t from = n * i / (size_t)members, to = n * (i + 1) / (size_t)members;
		z_stream z;

		memset(&z, 0, sizeof(z));
		if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
			abort();
		z.next_in = (Bytef *)p + from;
		z.avail_in = (uInt)(to - from);
		z.next_out = o + len;
		z.avail_out = (uInt)(cap - len);
		if (deflate(&z, Z_FINISH) != Z_STREAM_END)
			abort();
		len = cap - z.avail_out;
		deflateEnd(&z);
	}
	*out = len;
	return o;
}

/* zstd of p in frames frames, malloc'd. */
static unsigned char *zst(const unsigned char *p, size_t n, int frames, size_t *out)
{
	size_t cap = ZSTD_compressBound(n) + 1024 * (size_t)frames, len = 0, i;
	unsigned char *o = malloc(cap);

	for (i = 0; o && i < (size_t)frames; i++) {
		size_t from = n * i / (size_t)frames, to = n * (i + 1) / (size_t)frames;
		size_t r = ZSTD_compress(o + len, cap - len, p + from, to - from, 3);

		if (ZSTD_isError(r))
			abort();
		len += r;
	}
	*out = len;
	return o;
}

static uint32_t lcg(uint32_t *s)
{
	*s = *s * 1664525u + 1013904223u;
	return *s;
}

static void index_damage(const struct layer *l, const char *what);

/* The layer blob (media type mt) put in the cache, indexed, and read at random. */
static void random_access(struct cache *c, const char *what, const char *mt,
	const unsigned char *blob, size_t blen, size_t min_cps)
{
	char path[] = "/tmp/ocifs-test-blob.XXXXXX", d[DIGEST_STR_LEN + 1], stored[4096];
	char want[DIGEST_STR_LEN + 1], idx[4200];
	unsigned char *got = malloc(300 * 1024);
	struct layer *l = NULL;
	const struct layer_entry *e;
	uint32_t seed = 7;
	size_t n, i, bad = 0;
	int fd = mkstemp(path), pass, ret;

	if (fd < 0 || !got || write(fd, blob, blen) != (ssize_t)blen)
		abort();
	close(fd);
	digest_buffer(blob, blen, d);
	digest_buffer(tarbuf, tarlen, want);
	if (cache_adopt(c, d, path, stored, sizeof(stored)))
		abort();
	for (pass = 0; pass < 3; pass++) {
		const char *how = pass == 0   ? "indexed"
				  : pass == 1 ? "from its index"
					      : "index damaged";

		if (pass == 2) {
			/* one byte of the stored index flipped: made again, not trusted */
			FILE *f;

			snprintf(idx, sizeof(idx), "%s/layers/%s.idx", cache_dir(c), digest_hex(d));
			f = fopen(idx, "r+");
			if (!f || fseek(f, 100, SEEK_SET) || fputc(0x5a ^ 0xff, f) == EOF)
				abort();
			fclose(f);
		}
		ret = layer_open(c, NULL, "test", d, mt, (int64_t)blen, true, &l);
		CHECK(ret == 0, "%s, %s: opened (%d)", what, how, ret);
		if (ret)
			break;
		e = layer_entries(l, &n);
		CHECK(n == N_FILES && e[N_FILES - 1].size == FILE_SIZE,
			"%s, %s: %d entries, sizes from the headers", what, how, N_FILES);
		CHECK(strcmp(layer_tar_digest(l), want) == 0, "%s, %s: the tar's digest", what,
			how);
		CHECK(layer_checkpoints(l) >= min_cps, "%s, %s: %zu checkpoints (at least %zu)",
			what, how, layer_checkpoints(l), min_cps);
		CHECK(layer_find(l, "f1") == &e[1] && !layer_find(l, "f") &&
				layer_has_below(l, "") && !layer_has_below(l, "f1"),
			"%s, %s: lookups by path", what, how);
		/* forwards, backwards, across checkpoints, the very end */
		for (i = 0; i < 60; i++) {
			int64_t off = (int64_t)(lcg(&seed) % tarlen);
			size_t len = lcg(&seed) % (300 * 1024);
			ssize_t r = layer_read(l, got, len, off);
			size_t exp = (size_t)off + len > tarlen ? tarlen - (size_t)off : len;

			if (r != (ssize_t)exp || memcmp(got, tarbuf + off, exp) != 0)
				bad++;
		}
		for (i = 0; i < 20; i++) {
			/* a file read through in order, as cat does */
			int64_t off = e[2].offset + (int64_t)i * 128 * 1024;

			if (layer_read(l, got, 128 * 1024, off) != 128 * 1024 ||
				memcmp(got, tarbuf + off, 128 * 1024) != 0)
				bad++;
		}
		CHECK(bad == 0, "%s, %s: 80 reads give the tar's bytes (%zu wrong)", what, how,
			bad);
		CHECK(layer_read(l, got, 10, (int64_t)tarlen) == 0, "%s, %s: nothing past the end",
			what, how);
		if (pass == 0)
			index_damage(l, what);
		layer_free(l);
	}
	free(got);
}

static void random_access_all(void)
{
	char dir[] = "/tmp/ocifs-test-cache.XXXXXX";
	struct cache_options o = { 0 };
	struct cache *c = NULL;
	unsigned char *blob;
	uint32_t seed = 1;
	size_t blen, i, k;
	char name[8];

	tarlen = 0;
	for (i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "f%zu", i);
		header(name, '0', FILE_SIZE, NULL);
		room(FILE_SIZE + 512);
		/* 16 symbols: compresses about 2:1, unlike a repeating pattern */
		for (k = 0; k < FILE_SIZE; k++)
			tarbuf[tarlen + k] = (unsigned char)"abcdefghijklmnop"[lcg(&seed) >> 28];
		tarlen += FILE_SIZE;
	}
	room(0);
	memset(tarbuf + tarlen, 0, 1024);
	tarlen += 1024;
	if (!mkdtemp(dir))
		abort();
	o.dir = dir;
	if (cache_new(&o, &c))
		abort();
	blob = gz(tarbuf, tarlen, 1, &blen);
	random_access(c, "gzip", "application/vnd.oci.image.layer.v1.tar+gzip", blob, blen,
		tarlen / LAYER_SPAN);
	free(blob);
	blob = gz(tarbuf, tarlen, 3, &blen);
	random_access(c, "gzip of 3 members", "application/vnd.oci.image.layer.v1.tar+gzip", blob,
		blen, tarlen / LAYER_SPAN);
	free(blob);
	blob = zst(tarbuf, tarlen, 6, &blen);
	random_access(c, "zstd of 6 frames", "application/vnd.oci.image.layer.v1.tar+zstd", blob,
		blen, 3);
	free(blob);
	random_access(
		c, "uncompressed", "application/vnd.oci.image.layer.v1.tar", tarbuf, tarlen, 1);
	cache_free(c);
	{
		char cmd[200];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd))
			abort();
	}
}

/*
 * The index of l damaged: cut short, and bytes changed (the checksum made
 * right again, so that the checks behind it are reached). Each decode is
 * EBADMSG or a layer, never a crash (the sanitizer build watches).
 */
static void index_damage(const struct layer *l, const char *what)
{
	struct buf b = BUF_INIT;
	unsigned char *p;
	size_t i, k, refused = 0, tried = 0, wrong = 0;

	if (layer_index_encode(l, &b))
		abort();
	p = malloc(b.len);
	for (i = 0; p && i < b.len; i += i < 4096 ? 1 : 997) {
		struct layer *d = NULL;
		int ret = layer_index_decode(b.data, i, layer_digest(l), &d);

		tried++;
		refused += ret == -EBADMSG;
		wrong += ret != -EBADMSG;
		layer_free(d);
	}
	CHECK(wrong == 0, "%s: its index cut short at %zu places: EBADMSG each time (%zu not)",
		what, tried, wrong);
	tried = wrong = 0;
	for (i = 8; p && i + 4 < b.len; i += i < 4096 ? 1 : 997) {
		static const unsigned char flip[] = { 0xff, 0x01, 0x80 };

		for (k = 0; k < sizeof(flip); k++) {
			struct layer *d = NULL;
			uint32_t crc;
			int ret;

			memcpy(p, b.data, b.len);
			p[i] ^= flip[k];
			crc = (uint32_t)crc32(0, p, (uInt)(b.len - 4));
			memcpy(p + b.len - 4, &crc, 4);
			ret = layer_index_decode(p, b.len, layer_digest(l), &d);
			tried++;
			refused += ret == -EBADMSG;
			wrong += ret != 0 && ret != -EBADMSG;
			layer_free(d);
		}
	}
	CHECK(wrong == 0, "%s: its index with %zu bytes changed: a layer or EBADMSG (%zu refused)",
		what, tried, refused);
	{
		struct layer *d = NULL;
		int ret;

		memcpy(p, b.data, b.len);
		p[b.len / 2] ^= 0x10;
		ret = layer_index_decode(p, b.len, layer_digest(l), &d);
		CHECK(ret == -EBADMSG, "%s: a changed byte without its checksum: EBADMSG", what);
		layer_free(d);
	}
	free(p);
	buf_release(&b);
}

int main(void)
{
	struct layer_entry *e = NULL;
	size_t n = 0;
	char pax[256], longname[300];
	int ret;

	check_clean("./etc/passwd", 0, "etc/passwd");
	check_clean("etc/", 0, "etc");
	check_clean("./", 0, "");
	check_clean("a/./b//c", 0, "a/b/c");
	check_clean("/etc/passwd", -EINVAL, "");
	check_clean("../x", -EINVAL, "");
	check_clean("a/../../x", -EINVAL, "");
	check_clean("a/b\x01", -EINVAL, "");

	/* a file, a directory, a symlink, a prefix name, a GNU long name, PAX records */
	tarlen = 0;
	header("./hello.txt", '0', 6, NULL);
	data("hello\n", 6);
	header("etc/", '5', 0, NULL);
	{
		unsigned char *h = header("etc/link", '2', 0, NULL);

		snprintf((char *)h + 157, 100, "../hello.txt");
		/* the checksum again, with the link name in */
		memset(h + 148, ' ', 8);
		{
			unsigned sum = 0;

			for (size_t i = 0; i < 512; i++)
				sum += h[i];
			snprintf((char *)h + 148, 8, "%06o", sum);
		}
	}
	header("file.bin", '0', 3, "deep/prefix/dir");
	data("abc", 3);
	memset(longname, 'l', 250);
	snprintf(longname + 250, 50, "/end.txt");
	header("././@LongLink", 'L', strlen(longname) + 1, NULL);
	data(longname, strlen(longname) + 1);
	header("truncated-name", '0', 2, NULL);
	data("ok", 2);
	snprintf(pax, sizeof(pax), "%s%s%s", "27 path=pax/renamed/file.x\n",
		"20 SCHILY.xattr.a=b\n", "20 mtime=1700000000\n");
	header("PaxHeader", 'x', strlen(pax), NULL);
	data(pax, strlen(pax));
	header("ignored-by-pax", '0', 4, NULL);
	data("pax!", 4);
	ret = index_it(&e, &n);
	CHECK(ret == 0 && n == 6, "six entries (got %d, %zu)", ret, n);
	if (ret == 0 && n == 6) {
		CHECK(strcmp(e[0].path, "./hello.txt") == 0 && e[0].type == '0' && e[0].size == 6 &&
				e[0].offset == 512,
			"a file: its path, size and data offset");
		CHECK(e[0].mode == 0644 && e[0].uid == 1000 && e[0].gid == 1001 &&
				e[0].mtime == 1600000000,
			"mode, owner and time from the header");
		CHECK(e[1].type == '5', "a directory");
		CHECK(e[2].type == '2' && e[2].link && strcmp(e[2].link, "../hello.txt") == 0,
			"a symlink and its target");
		CHECK(strcmp(e[3].path, "deep/prefix/dir/file.bin") == 0, "ustar prefix joined");
		CHECK(strcmp(e[4].path, longname) == 0, "GNU long name");
		CHECK(strcmp(e[5].path, "pax/renamed/file.x") == 0 && e[5].mtime == 1700000000,
			"PAX path and mtime win over the header");
		CHECK(e[5].n_xattrs == 1 && strcmp(e[5].xattrs[0].name, "a") == 0 &&
				strcmp(e[5].xattrs[0].value, "b") == 0,
			"PAX SCHILY.xattr");
	}
	layer_entries_free(e, n);

	/* base-256 size */
	tarlen = 0;
	{
		unsigned char *h = header("big", '0', 0, NULL);
		unsigned sum = 0;

		memset(h + 124, 0, 12);
		h[124] = 0x80;
		h[135] = 5; /* 5 bytes */
		memset(h + 148, ' ', 8);
		for (size_t i = 0; i < 512; i++)
			sum += h[i];
		snprintf((char *)h + 148, 8, "%06o", sum);
		data("12345", 5);
	}
	e = NULL;
	ret = index_it(&e, &n);
	CHECK(ret == 0 && n == 1 && e[0].size == 5, "base-256 size (got %d, size %lld)", ret,
		ret == 0 && n ? (long long)e[0].size : -1LL);
	layer_entries_free(e, n);

	/* damage: a bad checksum, a size past the end, malformed PAX records */
	tarlen = 0;
	header("bad", '0', 0, NULL)[148] = '7';
	CHECK(index_it(&e, &n) == -EBADMSG, "a bad checksum: EBADMSG");
	tarlen = 0;
	header("huge", '0', 1u << 29, NULL);
	CHECK(index_it(&e, &n) == -EBADMSG, "a size past the end: EBADMSG");
	tarlen = 0;
	header("PaxHeader", 'x', 5, NULL);
	data("zzzzz", 5);
	CHECK(index_it(&e, &n) == -EBADMSG, "malformed PAX records: EBADMSG");

	/* found by fuzz_layer: a record shorter than its own length field ("1 a=b")
	 * had its key start past its end, and the search for '=' ran off */
	tarlen = 0;
	header("PaxHeader", 'x', 6, NULL);
	data("1 a=b\n", 6);
	header("after", '0', 1, NULL);
	data("a", 1);
	CHECK(index_it(&e, &n) == -EBADMSG, "a PAX record shorter than its length field: EBADMSG");

	/* a PAX header too big to be names: its entry left out, the rest indexed */
	tarlen = 0;
	{
		size_t big = 2 * 1024 * 1024;
		char *junk = malloc(big);

		memset(junk, 'x', big);
		header("PaxHeader", 'x', big, NULL);
		data(junk, big);
		free(junk);
	}
	header("victim", '0', 3, NULL);
	data("vvv", 3);
	header("next", '0', 3, NULL);
	data("nnn", 3);
	ret = index_it(&e, &n);
	CHECK(ret == 0 && n == 1 && strcmp(e[0].path, "next") == 0,
		"an oversized PAX header: the entry it describes left out, the next one kept");
	layer_entries_free(e, n);

	CHECK(layer_media_type_ok("application/vnd.oci.image.layer.v1.tar+zstd") &&
			layer_media_type_ok("application/vnd.docker.image.rootfs.diff.tar.gzip") &&
			!layer_media_type_ok("application/vnd.oci.image.layer.v1.tar+bzip2"),
		"layer media types");
	random_access_all();
	return check_done();
}

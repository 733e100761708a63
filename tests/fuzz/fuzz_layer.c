/*
 * Fuzz target for the layer code: the first byte of an input says what the
 * rest is.
 *   0  a tar archive, indexed (layer_tar_index_read)
 *   1  a stored layer index, its checksum made right so that every check
 *      behind it is reached (layer_index_decode)
 *   2  a gzip layer, 3 a zstd layer: put in a cache, indexed in one pass
 *      and read at a few offsets (layer_open, layer_read)
 * Built with libFuzzer by tests/fuzz/run.sh; tests/fuzz/driver.c runs it
 * over the corpus and mutations of it in `make check`.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "cache.h"
#include "digest.h"
#include "layer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct mem {
	const uint8_t *p;
	size_t n;
};

static int mem_read(void *ctx, void *p, size_t n, int64_t off)
{
	struct mem *m = ctx;

	if ((uint64_t)off >= m->n)
		return -ENODATA;
	if (n > m->n - (size_t)off)
		return -EBADMSG;
	memcpy(p, m->p + off, n);
	return 0;
}

static void fuzz_tar(const uint8_t *p, size_t n)
{
	struct mem m = { p, n };
	struct layer_entry *e = NULL;
	size_t count = 0, i;
	char clean[4096];

	if (layer_tar_index_read(mem_read, &m, (int64_t)n, "fuzz", &e, &count))
		return;
	for (i = 0; i < count; i++) {
		if (e[i].offset < 0 || e[i].size < 0 || e[i].offset + e[i].size > (int64_t)n)
			abort(); /* an entry's data outside the archive */
		if (!layer_path_clean(e[i].path, clean, sizeof(clean)) &&
			(clean[0] == '/' || strstr(clean, "..") == clean))
			abort(); /* a cleaned path leading out */
	}
	layer_entries_free(e, count);
}

static void fuzz_index(const uint8_t *p, size_t n)
{
	uint8_t *q = malloc(n + 4);
	struct layer *l = NULL;
	uint32_t crc;

	if (!q)
		return;
	memcpy(q, p, n);
	crc = (uint32_t)crc32(0, q, (uInt)n);
	memcpy(q + n, &crc, 4);
	if (!layer_index_decode(q, n + 4, NULL, &l)) {
		const struct layer_entry *e;
		size_t count, i;
		char buf[64];

		e = layer_entries(l, &count);
		for (i = 0; i < count; i++)
			layer_find(l, e[i].path);
		layer_has_below(l, "");
		/* no blob behind a decoded index: EIO, never a read of nothing */
		if (layer_read(l, buf, sizeof(buf), 0) > 0)
			abort();
	}
	layer_free(l);
	free(q);
}

static void fuzz_layer(const uint8_t *p, size_t n, const char *mt)
{
	static struct cache *c;
	static char dir[] = "/tmp/ocifs-fuzz.XXXXXX";
	char path[4200], stored[4200], d[DIGEST_STR_LEN + 1], buf[4096];
	struct layer *l = NULL;
	FILE *f;

	if (!c) {
		struct cache_options o = { 0 };

		if (!mkdtemp(dir))
			abort();
		o.dir = dir;
		if (cache_new(&o, &c))
			abort();
	}
	if (!n)
		return;
	digest_buffer(p, n, d);
	snprintf(path, sizeof(path), "%s/in", dir);
	f = fopen(path, "w");
	if (!f || fwrite(p, 1, n, f) != n || fclose(f))
		abort();
	if (cache_adopt(c, d, path, stored, sizeof(stored)))
		abort();
	if (!layer_open(c, NULL, "fuzz", d, mt, (int64_t)n, true, &l)) {
		layer_read(l, buf, sizeof(buf), 0);
		layer_read(l, buf, sizeof(buf), 5000000);
		layer_read(l, buf, sizeof(buf), 512);
		layer_free(l);
	}
	/* the next input may hash the same: start from nothing */
	unlink(stored);
	snprintf(path, sizeof(path), "%s/layers/%s.idx", dir, digest_hex(d));
	unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 4) {
	case 0:
		fuzz_tar(data + 1, size - 1);
		break;
	case 1:
		fuzz_index(data + 1, size - 1);
		break;
	case 2:
		fuzz_layer(data + 1, size - 1, "application/vnd.oci.image.layer.v1.tar+gzip");
		break;
	default:
		fuzz_layer(data + 1, size - 1, "application/vnd.oci.image.layer.v1.tar+zstd");
		break;
	}
	return 0;
}

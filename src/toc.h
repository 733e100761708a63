/*
 * Tables of contents that layers carry themselves: eStargz (gzip) and the
 * zstd:chunked of stargz-snapshotter. Both keep a JSON TOC near the end of
 * the blob, its sha256 in the layer's annotation
 * containerd.io/snapshot/stargz/toc.digest, listing every entry and, for
 * regular files, chunks: each a gzip member or zstd frame of its own, with
 * the sha256 of its uncompressed bytes. No I/O here.
 */
#ifndef OCIFS_TOC_H
#define OCIFS_TOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "layer.h"

#define ANN_TOC_DIGEST "containerd.io/snapshot/stargz/toc.digest"
/* containers/storage's zstd:chunked (podman push --compression-format zstd:chunked) */
#define ANN_ZCHUNKED_CHECKSUM "io.containers.zstd-chunked.manifest-checksum"
/* The most of the blob's end toc_locate() wants. */
#define TOC_TAIL 64
/* The biggest TOC read (compressed or not). */
#define TOC_MAX (64L * 1024 * 1024)

/* A chunk of a regular file: its bytes are the first size bytes out of [in, in_end). */
struct toc_chunk {
	int64_t out; /* where in the layer's file-data space (entries' offsets) */
	int64_t size;
	int64_t in; /* the start of its gzip member or zstd frame in the blob */
	int64_t in_end; /* where the next member or frame (or the TOC) starts */
	unsigned char digest[DIGEST_RAW_LEN];
};

struct toc {
	struct layer_entry *entries; /* files' offsets in a space of their data, end to end */
	size_t n;
	struct toc_chunk *chunks; /* sorted by out */
	size_t n_chunks;
	int64_t data_size; /* the end of that space */
};

struct descriptor;
/*
 * The digest of the layer's TOC, as its annotations give it, or NULL:
 * stargz's toc.digest (of the TOC's JSON), else, for a zstd layer,
 * containers/storage's manifest-checksum (of the TOC's compressed bytes:
 * *compressed set). Borrowed from d.
 */
const char *toc_digest_of(const struct descriptor *d, bool *compressed);

/*
 * Where the TOC is, from the last n bytes of a blob of blob_size bytes
 * (n <= TOC_TAIL): *off and *len of its compressed bytes. zstd: the
 * zstd:chunked footer (*len is the TOC frame's), else the eStargz footer
 * (*len reaches the footer). 0 or -EBADMSG.
 */
int toc_locate(const unsigned char *tail, size_t n, int64_t blob_size, bool zstd, int64_t *off,
	int64_t *len);

/*
 * The JSON of the TOC from its compressed bytes (from toc_locate()): a
 * gzip member holding a tar of stargz.index.json, or a zstd frame. *json
 * malloc'd. 0 or -EBADMSG.
 */
int toc_json(const unsigned char *p, size_t n, bool zstd, char **json, size_t *len);

/*
 * The TOC's JSON parsed: entries and chunks, every offset checked to lie
 * in the blob before toc_off (where the TOC starts). 0, -EBADMSG (with a
 * log line naming label) or -ENOMEM. Release with toc_release().
 */
int toc_parse(const char *json, size_t len, int64_t toc_off, const char *label, struct toc *out);
void toc_release(struct toc *t);

#endif

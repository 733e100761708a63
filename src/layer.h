/*
 * Layers of container images as tar archives, read in place.
 *
 * One streaming pass over a layer blob (uncompressed, gzip or zstd) as it
 * downloads indexes it: every tar entry with its metadata and data offset,
 * and decompressor checkpoints every LAYER_SPAN bytes of output (gzip: the
 * deflate state and its 32 KiB window at a block boundary; zstd: a frame
 * boundary). The index is kept beside the cache as
 * <cache>/layers/<hex>.idx; afterwards a file of the layer reads by
 * decompressing from the nearest checkpoint before it, its compressed bytes
 * fetched lazily through the cache.
 */
#ifndef OCIFS_LAYER_H
#define OCIFS_LAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

struct buf;
struct cache;
struct layer;
struct registry;

/* The blob is checked in spans of this many bytes (a published index's digests). */
#define LAYER_CHECK_SPAN (1024 * 1024)

/* Decompressed bytes between two checkpoints (at most, for gzip; at least, for zstd frames). */
#define LAYER_SPAN (4 * 1024 * 1024)

struct layer_xattr {
	char *name;
	char *value;
	size_t len;
};

struct layer_entry {
	char *path; /* as in the archive, leading "./" and "/" kept: see layer_path_clean() */
	char *link; /* a symlink's target or a hard link's target path, or NULL */
	char type; /* '0' file, '1' hard link, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo */
	mode_t mode; /* permission bits, set-id and sticky included */
	uid_t uid;
	gid_t gid;
	time_t mtime;
	int64_t size; /* of a file's data */
	int64_t offset; /* of a file's data in the tar */
	unsigned devmajor;
	unsigned devminor;
	struct layer_xattr *xattrs; /* from PAX SCHILY.xattr.* records */
	size_t n_xattrs;
};

/*
 * The tar reader of layer_tar_index(): n bytes at off into p, offsets never
 * going back. 0, -ENODATA when off is the end (nothing there), -EBADMSG
 * when the archive ends within the n bytes, or -errno.
 */
typedef int (*layer_read_fn)(void *ctx, void *p, size_t n, int64_t off);

/*
 * Index a tar archive read sequentially through rd: every entry with its
 * metadata and data offset, GNU long names and PAX headers applied. limit
 * bounds the archive's size (INT64_MAX when unknown). 0, -EBADMSG for a
 * damaged archive (a bad checksum, a size past limit, an oversized header)
 * with a log line naming label, -ENOMEM, or what rd returned. Free with
 * layer_entries_free().
 */
int layer_tar_index_read(layer_read_fn rd, void *ctx, int64_t limit, const char *label,
	struct layer_entry **out, size_t *n);
/* The same over the size bytes of the file fd. */
int layer_tar_index(int fd, int64_t size, const char *label, struct layer_entry **out, size_t *n);
void layer_entries_free(struct layer_entry *e, size_t n);

/*
 * The path of an entry relative to the root ("" for the root itself):
 * a leading "./" and a trailing "/" dropped, "." components dropped.
 * Writes into out (size bytes). -EINVAL for absolute names, ".." components
 * or control characters: such entries point outside the archive's tree.
 */
int layer_path_clean(const char *path, char *out, size_t size);

/* Whether a layer media type is one this build unpacks (tar, tar+gzip, tar+zstd; OCI or Docker). */
bool layer_media_type_ok(const char *media_type);

/*
 * The layer blob digest (media_type, size bytes) of repo on r: its index
 * from the cache, or built in one pass over the blob (fetched through the
 * cache) and stored there. With tar_digest, the pass also hashes the tar
 * (layer_tar_digest()). 0 or -errno (-EIO for a blob that does not verify
 * or does not decompress, with a log line). r and repo are borrowed for the
 * layer's life. Thread-safe; free with layer_free().
 */
int layer_open(struct cache *c, struct registry *r, const char *repo, const char *digest,
	const char *media_type, int64_t size, bool tar_digest, struct layer **out);
void layer_free(struct layer *l);

/* The layer blob's digest (borrowed). */
const char *layer_digest(const struct layer *l);
/* "sha256:<hex>" of the uncompressed tar when layer_open() was asked for it, else "". */
const char *layer_tar_digest(const struct layer *l);
/* Every entry, in archive order (borrowed). */
const struct layer_entry *layer_entries(const struct layer *l, size_t *n);
/* How many decompressor checkpoints the index holds (the start counts as one). */
size_t layer_checkpoints(const struct layer *l);

/*
 * The last entry whose cleaned path (layer_path_clean()) is path, or NULL.
 * Entries whose names escape the root are never found.
 */
const struct layer_entry *layer_find(const struct layer *l, const char *path);
/* Whether some entry lies below the directory path ("" for the root). */
bool layer_has_below(const struct layer *l, const char *path);
/*
 * Call fn for each name directly below the directory path ("" for the
 * root): with the entry of that name, or with NULL when only entries below
 * it show it is a directory. A name may come more than once.
 */
void layer_list(const struct layer *l, const char *path,
	void (*fn)(void *arg, const char *name, const struct layer_entry *e), void *arg);

/*
 * Up to n bytes of the tar at off into p, decompressing from the nearest
 * checkpoint (or from where an earlier read stopped). Bytes read, fewer at
 * the tar's end, or -errno (-EIO for data that does not decompress).
 * Thread-safe.
 */
ssize_t layer_read(struct layer *l, void *p, size_t n, int64_t off);
/*
 * Whether every compressed byte layer_read() uses has been verified: against
 * the blob's digest, or (a published index) against its span's digest.
 */
bool layer_verified(struct layer *l);

/*
 * A layer from an index published for it: zlen bytes at z, a zstd frame of
 * the index file (layer_index_encode()). Its blob is opened in c but nothing
 * is fetched: a read fetches the LAYER_CHECK_SPAN spans it needs and checks
 * each against the index's digest for it before using a byte of it. One
 * that does not match makes the layer bad (layer_bad()): a log line, and
 * EIO for every read after. -EBADMSG (with a log line) for an index that is
 * damaged or describes another blob (its digest, size or compression).
 */
int layer_open_published(struct cache *c, struct registry *r, const char *repo, const char *digest,
	const char *media_type, int64_t size, const void *z, size_t zlen, struct layer **out);
/*
 * A layer that carries its own table of contents (eStargz, zstd:chunked),
 * toc_digest the sha256 its layer annotation gives the TOC's JSON (of its
 * compressed bytes with compressed; see toc_digest_of()): the
 * blob's footer and TOC fetched and checked, nothing else. A read fetches
 * the chunks it needs and checks each against the TOC's digest of it; one
 * that does not match makes the layer bad (layer_bad()). -EBADMSG (with a
 * log line) for a blob without a TOC there, or one that does not match.
 */
int layer_open_toc(struct cache *c, struct registry *r, const char *repo, const char *digest,
	const char *media_type, int64_t size, const char *toc_digest, bool compressed,
	struct layer **out);
/*
 * An uncompressed tar that the manifest says holds one file, path (clean)
 * of file_size bytes (a model's layer: model.h): indexed from its headers
 * and its end alone, two small ranges of the blob, whatever the file's
 * size. -EBADMSG when the archive is not that (the caller reads it whole
 * instead). The path and size shown are the manifest's; the bytes are
 * checked as a blob's are: a read that reaches the file's end waits for
 * the whole blob to verify. Not stored in the cache's indexes.
 */
int layer_open_single(struct cache *c, struct registry *r, const char *repo, const char *digest,
	const char *media_type, int64_t size, const char *path, int64_t file_size,
	struct layer **out);
/* Whether l came from layer_open_single(). */
bool layer_is_single(const struct layer *l);
/* Whether l holds just one entry, a regular file at path (clean) of size bytes. */
bool layer_holds_one(const struct layer *l, const char *path, int64_t size);
/* The index of l as layer_open_published() reads it, appended to out. 0 or -errno. */
int layer_index_publishable(const struct layer *l, struct buf *out);
/* Whether a span of l did not match its published index. */
bool layer_bad(struct layer *l);
/* Whether l was indexed here, so that its index can be published (not through a TOC). */
bool layer_publishable(const struct layer *l);
/*
 * An entry of l (from layer_find() or layer_entries()) that came from a
 * published index, checked against the tar: its headers, from where the
 * entry before it ends to its data, parsed as the archive is, must make
 * exactly that entry (every field: name with PAX or GNU long names, type,
 * mode, owner, mtime, size, link, device, xattrs). 0 (also for a layer
 * indexed here), or -EIO when they do not: then l is bad.
 */
int layer_check_entry(struct layer *l, const struct layer_entry *e);
/*
 * Whether l is bad and this is the first call to say so: the caller drops
 * what was made from it, once.
 */
bool layer_bad_claim(struct layer *l);

/*
 * The index of l as stored in the cache, appended to out; and back.
 * layer_index_decode() checks everything it reads (a damaged or foreign
 * file, or one naming a blob other than digest when digest is not NULL, is
 * -EBADMSG, never a crash); the layer it makes has no blob to read from
 * (layer_read() gives -EIO) until layer_open() makes it. 0 or -errno.
 *
 * The file, integers little-endian, strings a u32 length and their bytes:
 * "OCIFSLX2", u32 compression (0 none, 1 gzip, 2 zstd), u32 0, string the
 * blob's digest, i64 blob size, i64 tar size, 72 bytes the tar's digest or
 * zeros, u32 LAYER_CHECK_SPAN, u32 span count and each span's sha256 (32
 * bytes), u32 checkpoint count and each checkpoint (i64 tar offset, i64 blob
 * offset, u32 gzip bits | the byte they are in << 8, u32 window length and
 * the window), u32 entry count and each entry (u8 tar type, u32 mode, u32
 * uid, u32 gid, i64 mtime, i64 size, i64 data offset, u32 devmajor, u32
 * devminor, string path, string link or u32 0xffffffff, u32 xattr count and
 * each name and value string), u32 CRC-32 of all before it.
 */
int layer_index_encode(const struct layer *l, struct buf *out);
int layer_index_decode(const void *p, size_t n, const char *digest, struct layer **out);

#endif

/*
 * Layers of container images as tar archives: a layer blob (uncompressed,
 * gzip or zstd) is decompressed once, in one streaming pass, into the cache
 * (<cache>/layers/<hex>.tar) and its entries indexed; a file of the layer
 * then reads with pread() at its offset.
 */
#ifndef OCIFS_LAYER_H
#define OCIFS_LAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

struct blob;
struct cache;
struct registry;

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

struct layer {
	char *digest; /* of the layer blob */
	int fd; /* the uncompressed tar (or the blob itself when uncompressed) */
	struct blob *blob; /* held open when fd is the cache's blob, else NULL */
	int64_t tar_size; /* bytes of the tar in fd */
	struct layer_entry *entries;
	size_t n;
};

/*
 * Index the tar archive of size bytes in fd: every entry with its metadata
 * and data offset, GNU long names and PAX headers applied. 0, -EBADMSG for a
 * damaged archive (a bad checksum, a size past the end, an oversized
 * header) with a log line naming label, or -ENOMEM. Free with
 * layer_entries_free().
 */
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
 * The layer blob digest (media_type, size bytes) of repo on r, fetched
 * through the cache, decompressed and indexed. 0 or -errno (-EIO for a
 * blob that does not verify or does not decompress, with a log line).
 * Thread-safe; free with layer_free().
 */
int layer_open(struct cache *c, struct registry *r, const char *repo, const char *digest,
	const char *media_type, int64_t size, struct layer **out);
void layer_free(struct layer *l);

#endif

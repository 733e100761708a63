/* layer.c: tar indexing (ustar, GNU long names, PAX records, base-256 sizes, damage) and paths. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layer.h"
#include "check.h"

static unsigned char tarbuf[64 * 512];
static size_t tarlen;

/* Append a header block: name, type, size, and (optional) ustar prefix. */
static unsigned char *header(const char *name, char type, size_t size, const char *prefix)
{
	unsigned char *h = tarbuf + tarlen;
	unsigned sum = 0;
	size_t i;

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

	/* damage: a bad checksum, a size past the end, an oversized PAX header */
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

	CHECK(layer_media_type_ok("application/vnd.oci.image.layer.v1.tar+zstd") &&
			layer_media_type_ok("application/vnd.docker.image.rootfs.diff.tar.gzip") &&
			!layer_media_type_ok("application/vnd.oci.image.layer.v1.tar+bzip2"),
		"layer media types");
	return check_done();
}

/*
 * Runs a fuzz target without libFuzzer, for `make check`: every file of the
 * corpus given, then mutations of each (bytes changed, cut short, grown),
 * from a fixed seed so that a run repeats. A crash or a sanitizer report
 * fails the test; passing says only that those inputs were survived.
 *
 *   driver [-n MUTATIONS] [FILE...]
 *
 * Without files: every file of $srcdir/tests/fuzz/corpus/<this program's name>.
 */
#include "config.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t seed = 12345;

static uint32_t next(void)
{
	seed = seed * 1103515245u + 12345u;
	return seed >> 8;
}

static unsigned char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	unsigned char *p = NULL;
	long len;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
		(p = malloc((size_t)len + 1)) && fread(p, 1, (size_t)len, f) == (size_t)len) {
		*n = (size_t)len;
	} else {
		free(p);
		p = NULL;
	}
	fclose(f);
	return p;
}

/* The corpus files: the arguments, or $srcdir/tests/fuzz/corpus/<prog>/<all>, malloc'd. */
static char **corpus(const char *prog, int argc, char **argv, size_t *n)
{
	const char *src = getenv("srcdir");
	char **v = calloc((size_t)argc + 256, sizeof(*v)), dir[4096];
	struct dirent *de;
	DIR *d;
	int i;

	*n = 0;
	for (i = 0; v && i < argc; i++)
		v[(*n)++] = strdup(argv[i]);
	if (!v || *n)
		return v;
	snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s", src ? src : ".", prog);
	d = opendir(dir);
	while (d && (de = readdir(d)) && *n < 255) {
		if (de->d_name[0] == '.')
			continue;
		v[*n] = malloc(strlen(dir) + strlen(de->d_name) + 2);
		if (v[*n])
			sprintf(v[(*n)++], "%s/%s", dir, de->d_name);
	}
	if (d)
		closedir(d);
	return v;
}

int main(int argc, char **argv)
{
	const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	long mutations = 2000;
	size_t runs = 0, nfiles, i;
	char **files;

	/* libtool's wrapper runs the program as lt-<name> */
	if (strncmp(prog, "lt-", 3) == 0)
		prog += 3;
	if (argc > 2 && strcmp(argv[1], "-n") == 0) {
		mutations = atol(argv[2]);
		argc -= 2;
		argv += 2;
	}
	files = corpus(prog, argc - 1, argv + 1, &nfiles);
	if (!files || !nfiles) {
		printf("not ok - no fuzz corpus (set srcdir, or name files)\n");
		return 1;
	}
	for (i = 0; i < nfiles; i++) {
		size_t n = 0, k;
		unsigned char *orig = slurp(files[i], &n), *m;
		long j;

		if (!orig) {
			printf("not ok - fuzz corpus: %s cannot be read\n", files[i]);
			return 1;
		}
		LLVMFuzzerTestOneInput(orig, n);
		runs++;
		m = malloc(n + 64);
		for (j = 0; m && j < mutations; j++) {
			size_t len = n, changes = 1 + next() % 8;

			memcpy(m, orig, n);
			for (k = 0; k < changes && len > 1; k++) {
				size_t at =
					1 + next() % (len - 1); /* byte 0 says what the input is */

				switch (next() % 4) {
				case 0:
					m[at] ^= (unsigned char)(1u << (next() % 8));
					break;
				case 1:
					m[at] = (unsigned char)next();
					break;
				case 2:
					len = at; /* cut short */
					break;
				default:
					if (len < n + 64)
						m[len++] = (unsigned char)next();
					break;
				}
			}
			LLVMFuzzerTestOneInput(m, len);
			runs++;
		}
		free(m);
		free(orig);
		free(files[i]);
	}
	free(files);
	printf("ok - %s: %zu inputs (%zu seeds, %ld mutations each) run, none crashed it\n", prog,
		runs, nfiles, mutations);
	return 0;
}

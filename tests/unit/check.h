/*
 * A minimal TAP producer for the unit tests: each CHECK prints "ok - ..." or
 * "not ok - ...", and check_done() gives the exit status (0 pass, 1 fail).
 */
#ifndef OCIFS_CHECK_H
#define OCIFS_CHECK_H

#include <stdio.h>

static int check_failed;

#define CHECK(cond, ...) \
	do { \
		if (cond) { \
			printf("ok - "); \
		} else { \
			check_failed++; \
			printf("not ok - %s:%d: ", __FILE__, __LINE__); \
		} \
		printf(__VA_ARGS__); \
		printf("\n"); \
		fflush(stdout); \
	} while (0)

static inline int check_done(void)
{
	return check_failed ? 1 : 0;
}

#endif

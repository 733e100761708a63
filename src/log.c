#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>

#include "log.h"

static bool use_syslog;
static bool debug_on;

void log_init(bool to_syslog, bool debug)
{
	use_syslog = to_syslog;
	debug_on = debug;
	if (use_syslog)
		openlog("ocifs", LOG_PID, LOG_DAEMON);
}

void log_reopen(void)
{
	if (use_syslog) {
		closelog();
		openlog("ocifs", LOG_PID, LOG_DAEMON);
	}
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	static const char *const tag[] = { "error", "warning", "info", "debug" };
	char line[1024];
	va_list ap;

	if (lvl == LOG_LVL_DEBUG && !debug_on)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (use_syslog)
		syslog(prio[lvl], "%s", line);
	else
		/* One fprintf per line so that lines of threads do not interleave. */
		fprintf(stderr, "ocifs: %s: %s\n", tag[lvl], line);
}

void log_escape(const char *s, char *out, size_t n)
{
	size_t o = 0;

	for (; *s && o + 5 < n; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || c == 0x7f || c == '\\')
			o += (size_t)snprintf(out + o, n - o, "\\x%02x", c);
		else
			out[o++] = (char)c;
	}
	out[o] = '\0';
}

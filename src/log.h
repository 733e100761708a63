/* Logging: stderr in the foreground, syslog when detached. */
#ifndef OCIFS_LOG_H
#define OCIFS_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* Set where messages go and how verbose they are; call before threads start. */
void log_init(bool to_syslog, bool debug);

/* Reconnect to syslog (after it restarted, say); nothing for stderr. */
void log_reopen(void);

void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/*
 * s (a name from a registry: a title, a path) written into out (n bytes) to
 * go on one log line, whatever bytes it holds: control characters and '\\'
 * as \xNN; cut short to fit.
 */
void log_escape(const char *s, char *out, size_t n);

#endif

/*
 * log.h - leveled logger: one line per event on stderr.
 *
 * The level check happens before the arguments are formatted: use the
 * macros. Lines look like
 *   2026-11-25T08:00:00.123Z info  client 'sensor-1' 127.0.0.1:51234 connected (v5, clean)
 */
#ifndef STARLING_LOG_H
#define STARLING_LOG_H

enum {
    SL_LOG_DEBUG = 0,
    SL_LOG_INFO = 1,
    SL_LOG_WARNING = 2,
    SL_LOG_ERROR = 3,
    SL_LOG_NONE = 4,
};

extern int sl_log_level;

void sl_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* "debug" -> SL_LOG_DEBUG ...; -1 when unknown. */
int sl_log_level_parse(const char *s);
const char *sl_log_level_name(int level);

#define log_at(lvl, ...)                                                       \
    do {                                                                       \
        if ((lvl) >= sl_log_level)                                             \
            sl_log((lvl), __VA_ARGS__);                                        \
    } while (0)
#define log_debug(...) log_at(SL_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_at(SL_LOG_INFO, __VA_ARGS__)
#define log_warning(...) log_at(SL_LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_at(SL_LOG_ERROR, __VA_ARGS__)

#endif

/*
 * log.c - the leveled logger of log.h. Timestamps in UTC with milliseconds.
 */
#include "starling/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

int sl_log_level = SL_LOG_INFO;

static const char *names[] = {"debug", "info", "warning", "error", "none"};

int sl_log_level_parse(const char *s)
{
    for (int i = 0; i <= SL_LOG_NONE; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    if (strcasecmp(s, "warn") == 0)
        return SL_LOG_WARNING;
    return -1;
}

const char *sl_log_level_name(int level)
{
    if (level < 0 || level > SL_LOG_NONE)
        return "?";
    return names[level];
}

void sl_log(int level, const char *fmt, ...)
{
    char line[1024];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-7s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, (long)tv.tv_usec / 1000,
                     sl_log_level_name(level));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    fwrite(line, 1, len, stderr);
}

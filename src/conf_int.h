/*
 * conf_int.h - what the configuration's files share (private to them):
 *   conf_table.c  the table of every key (data only)
 *   conf_check.c  the checks of string values some keys name in the table
 *   conf.c        everything that reads the table: defaults, file, env,
 *                 flags, reload, --help and the documented config file
 */
#ifndef STARLING_CONF_INT_H
#define STARLING_CONF_INT_H

#include "starling/conf.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    T_STRING,   /* char *, heap-owned */
    T_INT,      /* int in [min, max] */
    T_UINT32,   /* uint32_t in [min, max] */
    T_SIZE,     /* uint32_t in [min, max]; may end in k, m or g (x1024) */
    T_BOOL,     /* bool */
    T_ENUM,     /* an enum stored as int; `names` indexed by value */
    T_LOGLEVEL, /* int, SL_LOG_* */
} opt_type_t;

/* Extra validation of a string value; writes the reason into msg. */
typedef int (*check_fn_t)(const char *value, char *msg, size_t len);

/* One key: the sl_conf_t field of the same name, at `offset`. */
typedef struct {
    const char *name;
    opt_type_t type;
    size_t offset;
    long long min, max;
    const char *const *names;
    const char *def; /* default as text; NULL = unset (strings only) */
    bool reloadable;
    check_fn_t check;
    const char *help;
} option_t;

/* conf_table.c: every key, in the order --help and the file list them. */
extern const option_t conf_options[];
extern const size_t conf_n_options;

/* conf_check.c: the `check` of string keys. Each writes a reason without
 * the key name into msg ("not a topic filter: 'a/#/b'"); the caller says
 * which key and where it came from. */
int conf_check_store(const char *value, char *msg, size_t len);
int conf_check_node_id(const char *value, char *msg, size_t len);
int conf_check_http_url(const char *value, char *msg, size_t len);
int conf_check_headers(const char *value, char *msg, size_t len);
int conf_check_events(const char *value, char *msg, size_t len);
int conf_check_filters(const char *value, char *msg, size_t len);
int conf_check_ws_path(const char *value, char *msg, size_t len);
int conf_check_origins(const char *value, char *msg, size_t len);
int conf_check_listeners(const char *value, char *msg, size_t len);
int conf_check_addrs(const char *value, char *msg, size_t len);

/* Format the reason into msg; returns SL_EINVAL. */
int conf_fail(char *msg, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif

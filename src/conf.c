/*
 * conf.c - the node's configuration, driven by the table of every key
 * (conf_table.c): defaults, the config file, STARLING_* env, --flags,
 * reload on SIGHUP, --help and the documented config file.
 *
 * Sources and their error prefixes:
 *   file   "port 1884"            /etc/starling.conf:12: port: ...
 *   env    STARLING_PORT=1884     STARLING_PORT: ...
 *   flag   --port 1884, --port=1884   --port: ...
 */
#include "conf_int.h"

#include "starling/err.h"
#include "starling/log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const bool_true[] = {"true", "yes", "on", "1", NULL};
static const char *const bool_false[] = {"false", "no", "off", "0", NULL};

int conf_fail(char *msg, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
    return SL_EINVAL;
}

static void *field(sl_conf_t *c, const option_t *o)
{
    return (char *)c + o->offset;
}

static const option_t *find_option(const char *name)
{
    for (size_t i = 0; i < conf_n_options; i++)
        if (strcmp(conf_options[i].name, name) == 0)
            return &conf_options[i];
    return NULL;
}

static int name_index(const char *const *names, const char *s)
{
    for (int i = 0; names[i]; i++)
        if (strcasecmp(names[i], s) == 0)
            return i;
    return -1;
}

/* --- value parsers --------------------------------------------------------
 * Each writes a reason without the key name into msg ("not a number: 'x'");
 * the caller says which key and where it came from. */

/* Decimal integer, optionally with a k/m/g suffix (allow_suffix). */
static int parse_number(const char *s, bool allow_suffix, long long *out,
                        char *msg, size_t len)
{
    if (!isdigit((unsigned char)s[0]) &&
        !((s[0] == '-' || s[0] == '+') && isdigit((unsigned char)s[1])))
        return conf_fail(msg, len, "not a number: '%s'", s);
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    long long mult = 1;
    if (allow_suffix && end[0] != '\0' && end[1] == '\0') {
        const char *units = "kmg";
        const char *u = strchr(units, tolower((unsigned char)end[0]));
        if (u) {
            mult = 1LL << (10 * (u - units + 1));
            end++;
        }
    }
    if (*end != '\0')
        return conf_fail(msg, len, "not a number: '%s'", s);
    if (errno == ERANGE || v > LLONG_MAX / mult || v < LLONG_MIN / mult)
        return conf_fail(msg, len, "'%s' is out of range", s);
    *out = v * mult;
    return SL_OK;
}

static int set_number(sl_conf_t *c, const option_t *o, const char *value,
                      char *msg, size_t len)
{
    long long v = 0;
    int rc = parse_number(value, o->type == T_SIZE, &v, msg, len);
    if (rc != SL_OK)
        return rc;
    if (v < o->min || v > o->max)
        return conf_fail(msg, len, "'%s' is out of range %lld..%lld",
                         value, o->min, o->max);
    if (o->type == T_INT)
        *(int *)field(c, o) = (int)v;
    else
        *(uint32_t *)field(c, o) = (uint32_t)v;
    return SL_OK;
}

static int set_bool(sl_conf_t *c, const option_t *o, const char *value,
                    char *msg, size_t len)
{
    if (name_index(bool_true, value) >= 0)
        *(bool *)field(c, o) = true;
    else if (name_index(bool_false, value) >= 0)
        *(bool *)field(c, o) = false;
    else
        return conf_fail(msg, len,
                         "expected true/false, yes/no, on/off or 1/0, got '%s'",
                         value);
    return SL_OK;
}

/* "a|b|c" from a NULL-terminated list of names. */
static void join_names(const char *const *names, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; names[i] && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? "|" : "",
                              names[i]);
}

static void level_names(const char **names, size_t count)
{
    size_t i = 0;
    for (; i + 1 < count && i <= SL_LOG_NONE; i++)
        names[i] = sl_log_level_name((int)i);
    names[i] = NULL;
}

static int set_enum(sl_conf_t *c, const option_t *o, const char *value,
                    char *msg, size_t len)
{
    const char *levels[SL_LOG_NONE + 2];
    const char *const *names = o->names;
    int v;
    if (o->type == T_LOGLEVEL) {
        level_names(levels, sizeof(levels) / sizeof(levels[0]));
        names = levels;
        v = sl_log_level_parse(value);
    } else {
        v = name_index(names, value);
    }
    if (v < 0) {
        char expected[128];
        join_names(names, expected, sizeof(expected));
        return conf_fail(msg, len, "expected %s, got '%s'", expected, value);
    }
    *(int *)field(c, o) = v;
    return SL_OK;
}

/* An empty value unsets a key without default and is refused otherwise. */
static int set_string(sl_conf_t *c, const option_t *o, const char *value,
                      char *msg, size_t len)
{
    char **slot = field(c, o);
    char *copy = NULL;
    if (value[0] == '\0' && o->def != NULL)
        return conf_fail(msg, len, "empty value");
    if (value[0] != '\0') {
        if (o->check) {
            int rc = o->check(value, msg, len);
            if (rc != SL_OK)
                return rc;
        }
        copy = strdup(value);
        if (!copy) {
            snprintf(msg, len, "out of memory");
            return SL_ENOMEM;
        }
    }
    free(*slot);
    *slot = copy;
    return SL_OK;
}

static int set_option(sl_conf_t *c, const option_t *o, const char *value,
                      char *msg, size_t len)
{
    switch (o->type) {
    case T_STRING:
        return set_string(c, o, value, msg, len);
    case T_INT:
    case T_UINT32:
    case T_SIZE:
        return set_number(c, o, value, msg, len);
    case T_BOOL:
        return set_bool(c, o, value, msg, len);
    case T_ENUM:
    case T_LOGLEVEL:
        return set_enum(c, o, value, msg, len);
    }
    return conf_fail(msg, len, "bad key type");
}

static size_t type_size(opt_type_t type)
{
    switch (type) {
    case T_STRING:
        return sizeof(char *);
    case T_UINT32:
    case T_SIZE:
        return sizeof(uint32_t);
    case T_BOOL:
        return sizeof(bool);
    case T_INT:
    case T_ENUM:
    case T_LOGLEVEL:
        break;
    }
    return sizeof(int);
}

/* Move one key's value from src to dst (strings change owner). */
static void move_option(sl_conf_t *dst, sl_conf_t *src, const option_t *o)
{
    if (o->type == T_STRING) {
        char **d = field(dst, o), **s = field(src, o);
        free(*d);
        *d = *s;
        *s = NULL;
        return;
    }
    memcpy(field(dst, o), field(src, o), type_size(o->type));
}

static void pin(sl_conf_t *c, const option_t *o)
{
    c->pinned |= UINT64_C(1) << (o - conf_options);
}

static int set_from(sl_conf_t *c, const option_t *o, const char *value,
                    char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Set key o from one source; a refused value gives err "SOURCE: reason",
 * SOURCE formatted from fmt (see the sources at the top). */
static int set_from(sl_conf_t *c, const option_t *o, const char *value,
                    char *err, size_t errlen, const char *fmt, ...)
{
    char msg[256];
    int rc = set_option(c, o, value, msg, sizeof(msg));
    if (rc == SL_OK)
        return rc;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < errlen)
        snprintf(err + n, errlen - (size_t)n, ": %s", msg);
    return rc;
}

/* --- public: set, init, fini ---------------------------------------------- */

int conf_set(sl_conf_t *c, const char *key, const char *value, char *err,
             size_t errlen)
{
    const option_t *o = find_option(key);
    if (!o) {
        snprintf(err, errlen, "unknown key '%s'", key);
        return SL_ENOTFOUND;
    }
    return set_from(c, o, value, err, errlen, "%s", key);
}

void conf_init(sl_conf_t *c)
{
    char msg[256];
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < conf_n_options; i++) {
        const option_t *o = &conf_options[i];
        if (o->def && set_option(c, o, o->def, msg, sizeof(msg)) != SL_OK)
            abort(); /* a bad default in the table, or out of memory */
    }
}

void conf_fini(sl_conf_t *c)
{
    for (size_t i = 0; i < conf_n_options; i++) {
        if (conf_options[i].type == T_STRING) {
            char **slot = field(c, &conf_options[i]);
            free(*slot);
            *slot = NULL;
        }
    }
    free(c->config_file);
    c->config_file = NULL;
}

bool conf_key_reloadable(const char *key)
{
    const option_t *o = find_option(key);
    return o && o->reloadable;
}

/* --- config file ---------------------------------------------------------- */

static char *skip_space(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

static void trim_end(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
}

/* One `key value` line; blank lines and '#' comments do nothing. */
static int apply_line(sl_conf_t *c, char *line, const char *path,
                      unsigned lineno, char *err, size_t errlen)
{
    char *key = skip_space(line);
    trim_end(key);
    if (*key == '\0' || *key == '#')
        return SL_OK;
    char *value = key + strcspn(key, " \t");
    if (*value != '\0')
        *value++ = '\0';
    value = skip_space(value);
    const option_t *o = find_option(key);
    if (!o) {
        snprintf(err, errlen, "%s:%u: unknown key '%s'", path, lineno, key);
        return SL_ENOTFOUND;
    }
    return set_from(c, o, value, err, errlen, "%s:%u: %s", path, lineno,
                    key);
}

int conf_load_file(sl_conf_t *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return SL_EIO;
    }
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    int rc = SL_OK;
    while (rc == SL_OK && getline(&line, &cap, f) >= 0)
        rc = apply_line(c, line, path, ++lineno, err, errlen);
    if (rc == SL_OK && ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        rc = SL_EIO;
    }
    free(line);
    fclose(f);
    return rc;
}

int conf_reload_file(sl_conf_t *c, const char *path, char *err, size_t errlen)
{
    sl_conf_t fresh;
    if (!path) {
        snprintf(err, errlen, "no config file to reload (start with -c)");
        return SL_EINVAL;
    }
    conf_init(&fresh);
    int rc = conf_load_file(&fresh, path, err, errlen);
    if (rc == SL_OK) {
        for (size_t i = 0; i < conf_n_options; i++) {
            bool pinned = c->pinned & (UINT64_C(1) << i);
            if (conf_options[i].reloadable && !pinned)
                move_option(c, &fresh, &conf_options[i]);
        }
    }
    conf_fini(&fresh);
    return rc;
}

/* --- environment ---------------------------------------------------------- */

#define ENV_PREFIX "STARLING_"

/* One "STARLING_KEY=value" entry; entries without '=' are skipped. */
static int apply_env(sl_conf_t *c, const char *entry, char *err, size_t errlen)
{
    const char *name = entry + strlen(ENV_PREFIX);
    const char *eq = strchr(name, '=');
    if (!eq)
        return SL_OK;
    size_t n = (size_t)(eq - name);
    int var_len = (int)(eq - entry);
    char key[64];
    size_t k = 0;
    for (; k < n && k + 1 < sizeof(key); k++)
        key[k] = (char)tolower((unsigned char)name[k]);
    key[k] = '\0';
    const option_t *o = k == n ? find_option(key) : NULL;
    if (!o) {
        snprintf(err, errlen, "%.*s: unknown key '%s'", var_len, entry, key);
        return SL_ENOTFOUND;
    }
    int rc = set_from(c, o, eq + 1, err, errlen, "%.*s", var_len, entry);
    if (rc != SL_OK)
        return rc;
    pin(c, o);
    return SL_OK;
}

int conf_load_env(sl_conf_t *c, char **envp, char *err, size_t errlen)
{
    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, ENV_PREFIX, strlen(ENV_PREFIX)) != 0)
            continue;
        int rc = apply_env(c, *e, err, errlen);
        if (rc != SL_OK)
            return rc;
    }
    return SL_OK;
}

/* --- command line --------------------------------------------------------- */

typedef struct {
    const char *config; /* -c FILE */
    bool help, version, check;
} args_t;

/* The value of argv[*i] (after '=' in `--name=value`) or the next argument,
 * advancing *i; NULL if there is none. */
static const char *arg_value(int argc, char **argv, int *i)
{
    const char *eq = strchr(argv[*i], '=');
    if (eq && strncmp(argv[*i], "--", 2) == 0)
        return eq + 1;
    if (*i + 1 >= argc || strncmp(argv[*i + 1], "--", 2) == 0)
        return NULL;
    return argv[++*i];
}

/* `--key value` / `--key=value`: checked, and applied to c unless NULL. */
static int key_flag(sl_conf_t *c, int argc, char **argv, int *i, char *err,
                    size_t errlen)
{
    const char *arg = argv[*i];
    size_t n = strcspn(arg + 2, "=");
    char key[64];
    const option_t *o = NULL;
    if (n < sizeof(key)) {
        memcpy(key, arg + 2, n);
        key[n] = '\0';
        o = find_option(key);
    }
    if (!o) {
        snprintf(err, errlen, "unknown option '--%.*s'", (int)n, arg + 2);
        return SL_ENOTFOUND;
    }
    const char *value = arg_value(argc, argv, i);
    if (!value) {
        snprintf(err, errlen, "--%s: missing value", key);
        return SL_EINVAL;
    }
    if (!c)
        return SL_OK;
    int rc = set_from(c, o, value, err, errlen, "--%s", key);
    if (rc != SL_OK)
        return rc;
    pin(c, o);
    return SL_OK;
}

static bool is_config_flag(const char *arg)
{
    return strcmp(arg, "-c") == 0 || strcmp(arg, "--config") == 0 ||
           strncmp(arg, "--config=", 9) == 0;
}

/*
 * Walk the command line. With c NULL only check it and fill *a; with c set,
 * apply the key flags to c (the second pass, after file and env, so flags
 * win whatever their position).
 */
static int scan_args(sl_conf_t *c, int argc, char **argv, args_t *a,
                     char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int rc = SL_OK;
        if (is_config_flag(arg)) {
            a->config = arg_value(argc, argv, &i);
            if (!a->config) {
                snprintf(err, errlen, "%s: missing file name", arg);
                rc = SL_EINVAL;
            }
        } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            a->help = true;
        } else if (strcmp(arg, "--version") == 0) {
            a->version = true;
        } else if (strcmp(arg, "--check-config") == 0) {
            a->check = true;
        } else if (strncmp(arg, "--", 2) == 0 && arg[2] != '\0') {
            rc = key_flag(c, argc, argv, &i, err, errlen);
        } else {
            snprintf(err, errlen, "unexpected argument '%s'", arg);
            rc = SL_EINVAL;
        }
        if (rc != SL_OK)
            return rc;
    }
    return SL_OK;
}

static int set_config_file(sl_conf_t *c, const char *path, char *err,
                           size_t errlen)
{
    char *copy = strdup(path);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    free(c->config_file);
    c->config_file = copy;
    return SL_OK;
}

int conf_from_args(sl_conf_t *c, int argc, char **argv, char **envp,
                   conf_action_t *action, char *err, size_t errlen)
{
    args_t a = {0};
    *action = CONF_RUN;
    int rc = scan_args(NULL, argc, argv, &a, err, errlen);
    if (rc != SL_OK)
        return rc;
    if (a.help) {
        conf_print_help(stdout);
        *action = CONF_HELP;
        return SL_OK;
    }
    if (a.version) {
        printf("starling %s\n", STARLING_VERSION);
        *action = CONF_VERSION;
        return SL_OK;
    }
    if (a.config) {
        rc = set_config_file(c, a.config, err, errlen);
        if (rc == SL_OK)
            rc = conf_load_file(c, a.config, err, errlen);
    }
    if (rc == SL_OK)
        rc = conf_load_env(c, envp, err, errlen);
    if (rc == SL_OK)
        rc = scan_args(c, argc, argv, &a, err, errlen);
    if (rc == SL_OK && a.check)
        *action = CONF_CHECK;
    return rc;
}

/* --- help and the documented config file ---------------------------------- */

/* What values a key takes: "0..65535", "debug|info|...", "string". */
static void type_text(const option_t *o, char *buf, size_t len)
{
    const char *levels[SL_LOG_NONE + 2];
    switch (o->type) {
    case T_STRING:
        snprintf(buf, len, "string");
        break;
    case T_INT:
    case T_UINT32:
        snprintf(buf, len, "%lld..%lld", o->min, o->max);
        break;
    case T_SIZE:
        snprintf(buf, len, "%lld..%lld (bytes, or k/m/g)", o->min, o->max);
        break;
    case T_BOOL:
        snprintf(buf, len, "true|false");
        break;
    case T_ENUM:
        join_names(o->names, buf, len);
        break;
    case T_LOGLEVEL:
        level_names(levels, sizeof(levels) / sizeof(levels[0]));
        join_names(levels, buf, len);
        break;
    }
}

/* Word-wrap text at width columns, each line starting with prefix. */
static void print_wrapped(FILE *out, const char *prefix, const char *text,
                          size_t width)
{
    size_t col = 0;
    const char *p = text;
    while (*p) {
        size_t n = strcspn(p, " ");
        if (col > 0 && col + 1 + n > width) {
            fputc('\n', out);
            col = 0;
        }
        if (col == 0) {
            fputs(prefix, out);
            col = strlen(prefix);
        } else {
            fputc(' ', out);
            col++;
        }
        fwrite(p, 1, n, out);
        col += n;
        p += n;
        while (*p == ' ')
            p++;
    }
    if (col > 0)
        fputc('\n', out);
}

static const char *const help_head =
    "usage: starling [-c FILE] [--KEY VALUE | --KEY=VALUE]...\n"
    "                [--check-config] [--help] [--version]\n"
    "\n"
    "  -c, --config FILE   read `key value` lines from FILE\n"
    "  --check-config      check the configuration, then exit\n"
    "  -h, --help          print this help, then exit\n"
    "  --version           print the version, then exit\n"
    "\n"
    "Keys. Each is also a `key value` line of the config file and a\n"
    "STARLING_<KEY> environment variable (upper case); precedence:\n"
    "flag > env > file > default. Reloadable keys change on SIGHUP.\n"
    "\n"
    "Listeners, each on the bind address (0 = off; only port is on by\n"
    "default), with their usual ports:\n"
    "  port      1883  MQTT over TCP\n"
    "  tls_port  8883  MQTT over TLS (tls_cert_file, tls_key_file)\n"
    "  ws_port   8083  MQTT over WebSocket (ws_path, ws_*)\n"
    "  wss_port  8084  MQTT over secure WebSocket (tls_* files, ws_*)\n";

void conf_print_help(FILE *out)
{
    char type[128];
    fputs(help_head, out);
    for (size_t i = 0; i < conf_n_options; i++) {
        const option_t *o = &conf_options[i];
        type_text(o, type, sizeof(type));
        fprintf(out, "\n  --%s %s\n      default: %s%s\n", o->name, type,
                o->def ? o->def : "unset",
                o->reloadable ? "; reloadable" : "");
        print_wrapped(out, "      ", o->help, 79);
    }
}

static const char *const file_head =
    "# starling.conf - configuration of a Starling MQTT broker node.\n"
    "#\n"
    "# One `key value` per line; the value is the rest of the line, trimmed.\n"
    "# '#' starts a comment only at the start of a line. When a key appears\n"
    "# twice, the last one wins; an unknown key is an error.\n"
    "#\n"
    "# Every key can also be set as a STARLING_<KEY> environment variable\n"
    "# (upper case) or a --key VALUE command-line flag. Precedence:\n"
    "# flag > env > file > default. Booleans: true/false, yes/no, on/off,\n"
    "# 1/0. Reloadable keys change on SIGHUP; the others need a restart.\n"
    "#\n"
    "# Listeners, each on the bind address (0 = off; only port is on by\n"
    "# default), with their usual ports:\n"
    "#   port      1883  MQTT over TCP\n"
    "#   tls_port  8883  MQTT over TLS (tls_cert_file, tls_key_file)\n"
    "#   ws_port   8083  MQTT over WebSocket (ws_path, ws_*)\n"
    "#   wss_port  8084  MQTT over secure WebSocket (tls_* files, ws_*)\n"
    "#\n"
    "# Each key below is commented out at its default value.\n";

void conf_print_file(FILE *out)
{
    char type[128];
    fputs(file_head, out);
    for (size_t i = 0; i < conf_n_options; i++) {
        const option_t *o = &conf_options[i];
        type_text(o, type, sizeof(type));
        fputc('\n', out);
        print_wrapped(out, "# ", o->help, 78);
        fprintf(out, "# %s; %s\n", type,
                o->reloadable ? "reloadable" : "restart to change");
        if (o->def)
            fprintf(out, "#%s %s\n", o->name, o->def);
        else
            fprintf(out, "#%s\n", o->name);
    }
}

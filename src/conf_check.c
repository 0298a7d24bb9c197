/*
 * conf_check.c - the checks of string values that some keys of the table
 * (conf_table.c) name: store URL, node id, HTTP URLs, header lists, webhook
 * events, topic filter lists, the WebSocket path, origins and proxy
 * addresses. Each writes a reason without the key name into
 * msg; the caller says which key and where it came from.
 */
#include "conf_int.h"

#include "starling/err.h"
#include "starling/topic.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const webhook_event_names[] = {
    "client.connected",     "client.disconnected",  "session.subscribed",
    "session.unsubscribed", "message.publish",      NULL};

/* The length of the scheme (one of schemes, NULL-ended) that value starts
 * with; 0 for none. nocase: ignoring case. */
static size_t scheme_len(const char *value, const char *const *schemes,
                         bool nocase)
{
    for (size_t i = 0; schemes[i]; i++) {
        size_t n = strlen(schemes[i]);
        if ((nocase ? strncasecmp(value, schemes[i], n)
                    : strncmp(value, schemes[i], n)) == 0)
            return n;
    }
    return 0;
}

int conf_check_store(const char *value, char *msg, size_t len)
{
    static const char *const schemes[] = {"redis://", "redis+cluster://",
                                          NULL};
    size_t n = scheme_len(value, schemes, false);
    if (strcmp(value, "memory") == 0 || (n && value[n] != '\0'))
        return SL_OK;
    return conf_fail(msg, len,
                     "expected memory, redis://HOST:PORT or "
                     "redis+cluster://HOST:PORT,..., got '%s'",
                     value);
}

int conf_check_node_id(const char *value, char *msg, size_t len)
{
    size_t n = strlen(value);
    if (n > 64)
        return conf_fail(msg, len, "longer than 64 characters");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)value[i];
        if (!isalnum(ch) && ch != '-' && ch != '_' && ch != '.')
            return conf_fail(msg, len, "character '%c' not allowed in '%s'",
                             ch, value);
    }
    return SL_OK;
}

int conf_check_http_url(const char *value, char *msg, size_t len)
{
    static const char *const schemes[] = {"http://", "https://", NULL};
    size_t n = scheme_len(value, schemes, true);
    if (n && value[n] != '\0' && value[n] != '/' &&
        !strpbrk(value, " \t\r\n"))
        return SL_OK;
    return conf_fail(msg, len,
                     "expected http://HOST[:PORT]/PATH or "
                     "https://HOST[:PORT]/PATH, got '%s'",
                     value);
}

/* "Name: value; Name2: value2": a name of token characters, then ':'. */
int conf_check_headers(const char *value, char *msg, size_t len)
{
    const char *p = value;
    while (*p) {
        size_t n = strcspn(p, ";");
        const char *colon = memchr(p, ':', n);
        const char *name = p;
        while (name < p + n && *name == ' ')
            name++;
        if (!colon || colon == name)
            return conf_fail(msg, len, "expected 'Name: value' in '%.*s'",
                             (int)n, p);
        for (const char *c = name; c < colon; c++)
            if (!isalnum((unsigned char)*c) && !strchr("-_!#$%&'*+.^`|~", *c))
                return conf_fail(msg, len, "bad header name '%.*s'",
                                 (int)(colon - name), name);
        p += n;
        if (*p == ';')
            p++;
    }
    return SL_OK;
}

/* Walk a comma-separated list, calling ok() on each trimmed item. */
static int check_list(const char *value, char *msg, size_t len,
                      bool (*ok)(const char *item, size_t n), const char *what)
{
    const char *p = value;
    for (;;) {
        size_t n = strcspn(p, ",");
        const char *item = p;
        size_t m = n;
        while (m > 0 && *item == ' ')
            item++, m--;
        while (m > 0 && item[m - 1] == ' ')
            m--;
        if (!ok(item, m))
            return conf_fail(msg, len, "not %s: '%.*s'", what, (int)m, item);
        if (p[n] == '\0')
            return SL_OK;
        p += n + 1;
    }
}

static bool event_ok(const char *item, size_t n)
{
    for (size_t i = 0; webhook_event_names[i]; i++)
        if (strlen(webhook_event_names[i]) == n &&
            strncmp(webhook_event_names[i], item, n) == 0)
            return true;
    return false;
}

static bool filter_ok(const char *item, size_t n)
{
    return n > 0 && topic_filter_check(item, n, 0) == SL_OK;
}

int conf_check_events(const char *value, char *msg, size_t len)
{
    return check_list(value, msg, len, event_ok, "a webhook event");
}

int conf_check_filters(const char *value, char *msg, size_t len)
{
    return check_list(value, msg, len, filter_ok, "a topic filter");
}

/* "/mqtt": an absolute path of printable characters, no query. */
int conf_check_ws_path(const char *value, char *msg, size_t len)
{
    if (value[0] != '/')
        return conf_fail(msg, len, "expected a path starting with '/', "
                         "got '%s'", value);
    for (const char *p = value; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f ||
            *p == '?' || *p == '#')
            return conf_fail(msg, len, "character '%c' not allowed in a "
                             "path: '%s'", *p, value);
    return SL_OK;
}

static bool origin_ok(const char *item, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)item[i] <= ' ' || (unsigned char)item[i] >= 0x7f)
            return false;
    return true;
}

/* A listener name of the proxy_protocol key. */
static bool listener_ok(const char *item, size_t n)
{
    static const char *const names[] = {"tcp", "tls", "ws", "wss"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == n && !memcmp(names[i], item, n))
            return true;
    return false;
}

int conf_check_listeners(const char *value, char *msg, size_t len)
{
    return check_list(value, msg, len, listener_ok,
                      "a listener (tcp, tls, ws, wss)");
}

int conf_check_origins(const char *value, char *msg, size_t len)
{
    return check_list(value, msg, len, origin_ok, "an origin");
}

/* An IPv4 or IPv6 address, or a CIDR range ADDR/BITS. */
static bool addr_ok(const char *item, size_t n)
{
    char buf[INET6_ADDRSTRLEN + 5];
    unsigned char bin[16];
    if (n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, item, n);
    buf[n] = '\0';
    char *slash = strchr(buf, '/');
    long bits = -1;
    if (slash) {
        char *end;
        *slash = '\0';
        if (!isdigit((unsigned char)slash[1]))
            return false;
        bits = strtol(slash + 1, &end, 10);
        if (*end != '\0')
            return false;
    }
    if (inet_pton(AF_INET, buf, bin) == 1)
        return bits <= 32;
    if (inet_pton(AF_INET6, buf, bin) == 1)
        return bits <= 128;
    return false;
}

int conf_check_addrs(const char *value, char *msg, size_t len)
{
    return check_list(value, msg, len, addr_ok,
                      "an IP address or CIDR range");
}

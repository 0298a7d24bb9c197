/*
 * names.c - topic name and topic filter rules (MQTT 3.1.1 §4.7, 5.0 §4.7)
 * and shared subscription names (MQTT 5.0 §4.8.2).
 *
 * A topic is a '/'-separated list of levels; levels may be empty:
 *   "a/b/c"   3 levels       "/"    2 empty levels      "a//b"  3 levels
 * Filters add two wildcards, each only as a whole level:
 *   "+"       exactly one level, possibly empty ("+/+" matches "/")
 *   "#"       the rest: zero or more levels, so "a/#" matches "a", "a/",
 *             "a/b/c"; it must be the last level
 *   valid:    "#", "+", "a/+/c", "+/#", "/+", "a/#"
 *   invalid:  "a#", "a/#/b", "a/b+", "++", "#+", "" (empty)
 * The $-rule (§4.7.2): a filter starting with a wildcard never matches a
 * topic starting with '$', so "#" and "+/x" skip "$SYS/x"; "$SYS/#" does not.
 *
 * The matching rules here are the reference for the trie (trie.c).
 */
#include <string.h>

#include "starling/err.h"
#include "starling/mqtt.h"
#include "starling/topic.h"

#define TOPIC_MAX_LEN 65535
#define SHARE_PREFIX "$share/"
#define SHARE_PREFIX_LEN (sizeof SHARE_PREFIX - 1)

/* Common checks of names and filters: non-empty, bounded, UTF-8 without
 * U+0000 (mqtt_utf8_valid rejects it). */
static bool length_ok(size_t len, size_t max_len)
{
    if (max_len == 0)
        max_len = TOPIC_MAX_LEN;
    return len > 0 && len <= max_len;
}

int topic_name_check(const char *s, size_t len, size_t max_len)
{
    if (!length_ok(len, max_len))
        return SL_ETOPIC;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '+' || s[i] == '#' || s[i] == '\0')
            return SL_ETOPIC;
    }
    if (!mqtt_utf8_valid((const uint8_t *)s, len))
        return SL_ETOPIC;
    return SL_OK;
}

/* '+' and '#' must fill their level; '#' must also be the last one. */
static bool wildcard_ok(const char *s, size_t len, size_t i)
{
    if (i > 0 && s[i - 1] != '/')
        return false;
    if (s[i] == '#')
        return i + 1 == len;
    return i + 1 == len || s[i + 1] == '/';
}

int topic_filter_check(const char *s, size_t len, size_t max_len)
{
    if (!length_ok(len, max_len))
        return SL_ETOPIC;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\0')
            return SL_ETOPIC;
        if ((s[i] == '+' || s[i] == '#') && !wildcard_ok(s, len, i))
            return SL_ETOPIC;
    }
    if (!mqtt_utf8_valid((const uint8_t *)s, len))
        return SL_ETOPIC;
    return SL_OK;
}

/* Every '/' starts a new level; "" counts as one (empty) level. */
size_t topic_levels(const char *s, size_t len)
{
    size_t n = 1;

    for (size_t i = 0; i < len; i++)
        n += s[i] == '/';
    return n;
}

/* End of the level that starts at pos: the next '/' or len. */
static size_t level_end(const char *s, size_t len, size_t pos)
{
    const char *slash = memchr(s + pos, '/', len - pos);

    return slash ? (size_t)(slash - s) : len;
}

static bool is_level(const char *s, size_t start, size_t end, char c)
{
    return end - start == 1 && s[start] == c;
}

/*
 * Walk both level by level. A position past the end (len + 1) means every
 * level is consumed; "a/#" then still matches "a" since '#' also matches
 * zero levels.
 */
bool topic_matches(const char *filter, size_t flen, const char *topic,
                   size_t tlen)
{
    size_t f = 0, t = 0;

    if (tlen > 0 && topic[0] == '$' && flen > 0 &&
        (filter[0] == '+' || filter[0] == '#'))
        return false;
    for (;;) {
        size_t fe = level_end(filter, flen, f);

        if (is_level(filter, f, fe, '#'))
            return true;
        if (t > tlen)
            return false;
        size_t te = level_end(topic, tlen, t);
        if (!is_level(filter, f, fe, '+') &&
            (fe - f != te - t || memcmp(filter + f, topic + t, te - t) != 0))
            return false;
        f = fe + 1;
        t = te + 1;
        if (f > flen)
            return t > tlen;
    }
}

/* MQTT 5.0 §4.8.2: "$share/" group "/" filter. */
int topic_share_parse(const char *s, size_t len, const char **group,
                      size_t *glen, const char **filter, size_t *flen)
{
    const char *g, *slash;
    size_t gl, rest;

    if (len < SHARE_PREFIX_LEN || memcmp(s, SHARE_PREFIX, SHARE_PREFIX_LEN))
        return 0;
    g = s + SHARE_PREFIX_LEN;
    rest = len - SHARE_PREFIX_LEN;
    slash = memchr(g, '/', rest);
    if (!slash)
        return SL_ETOPIC;
    gl = (size_t)(slash - g);
    if (gl == 0 || memchr(g, '+', gl) || memchr(g, '#', gl) ||
        !mqtt_utf8_valid((const uint8_t *)g, gl))
        return SL_ETOPIC;
    rest -= gl + 1;
    if (topic_filter_check(slash + 1, rest, 0) != SL_OK)
        return SL_ETOPIC;
    *group = g;
    *glen = gl;
    *filter = slash + 1;
    *flen = rest;
    return 1;
}

/*
 * test_topic.c - topic name and filter rules, matching and $share parsing
 * (src/topic/names.c).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "starling/err.h"
#include "starling/topic.h"

/* A string with an explicit length (some hold NUL bytes). */
#define S(lit) lit, sizeof(lit) - 1

struct check_case {
    const char *s;
    size_t len;
    int want;
    const char *why;
};

static const struct check_case name_cases[] = {
    {S("a/b/c"), SL_OK, "plain levels"},
    {S("a"), SL_OK, "one level"},
    {S("/"), SL_OK, "two empty levels"},
    {S("a//b"), SL_OK, "empty middle level"},
    {S("/a"), SL_OK, "leading slash"},
    {S("a/"), SL_OK, "trailing slash"},
    {S("//"), SL_OK, "three empty levels"},
    {S("$SYS/broker/uptime"), SL_OK, "$ topics are names too"},
    {S(" "), SL_OK, "a space is a character"},
    {S("caf\xc3\xa9/\xe2\x82\xac"), SL_OK, "multi-byte UTF-8"},
    {S("\xf0\x9f\x98\x80"), SL_OK, "4-byte UTF-8"},
    {S(""), SL_ETOPIC, "empty"},
    {S("a/+"), SL_ETOPIC, "'+' in a name"},
    {S("#"), SL_ETOPIC, "'#' in a name"},
    {S("a/b#"), SL_ETOPIC, "'#' inside a level of a name"},
    {S("a+b"), SL_ETOPIC, "'+' inside a level of a name"},
    {S("a\0b"), SL_ETOPIC, "U+0000"},
    {S("\xff"), SL_ETOPIC, "invalid UTF-8 byte"},
    {S("\xc3"), SL_ETOPIC, "truncated UTF-8 sequence"},
    {S("\xc0\xaf"), SL_ETOPIC, "overlong UTF-8"},
    {S("\xed\xa0\x80"), SL_ETOPIC, "UTF-16 surrogate"},
};

static const struct check_case filter_cases[] = {
    {S("a/b/c"), SL_OK, "plain levels"},
    {S("#"), SL_OK, "'#' alone"},
    {S("+"), SL_OK, "'+' alone"},
    {S("a/+/c"), SL_OK, "'+' in the middle"},
    {S("a/#"), SL_OK, "'#' last"},
    {S("+/#"), SL_OK, "'+' then '#'"},
    {S("+/+"), SL_OK, "two '+'"},
    {S("/+"), SL_OK, "'+' after an empty level"},
    {S("+/"), SL_OK, "'+' before an empty level"},
    {S("/#"), SL_OK, "'#' after an empty level"},
    {S("/"), SL_OK, "two empty levels"},
    {S("a//b"), SL_OK, "empty middle level"},
    {S("$SYS/#"), SL_OK, "$SYS subtree"},
    {S("$share"), SL_OK, "a plain level named $share"},
    {S("caf\xc3\xa9/+"), SL_OK, "multi-byte UTF-8"},
    {S(""), SL_ETOPIC, "empty"},
    {S("a#"), SL_ETOPIC, "'#' not alone in its level"},
    {S("#a"), SL_ETOPIC, "'#' followed by a character"},
    {S("a/#/b"), SL_ETOPIC, "'#' not last"},
    {S("#/"), SL_ETOPIC, "'#' followed by an empty level"},
    {S("##"), SL_ETOPIC, "two '#' in a level"},
    {S("a/b+"), SL_ETOPIC, "'+' after a character"},
    {S("+a"), SL_ETOPIC, "'+' before a character"},
    {S("++"), SL_ETOPIC, "two '+' in a level"},
    {S("#+"), SL_ETOPIC, "'#' and '+' in a level"},
    {S("+#"), SL_ETOPIC, "'+' and '#' in a level"},
    {S("a\0b"), SL_ETOPIC, "U+0000"},
    {S("a/\xfe"), SL_ETOPIC, "invalid UTF-8 byte"},
    {S("\xed\xbf\xbf/#"), SL_ETOPIC, "UTF-16 surrogate"},
};

#define NCASES(a) (sizeof(a) / sizeof((a)[0]))

Test(topic, name_check_table)
{
    for (size_t i = 0; i < NCASES(name_cases); i++) {
        const struct check_case *c = &name_cases[i];
        cr_expect_eq(topic_name_check(c->s, c->len, 0), c->want,
                     "name #%zu (%s): want %d", i, c->why, c->want);
    }
}

Test(topic, filter_check_table)
{
    for (size_t i = 0; i < NCASES(filter_cases); i++) {
        const struct check_case *c = &filter_cases[i];
        cr_expect_eq(topic_filter_check(c->s, c->len, 0), c->want,
                     "filter #%zu (%s): want %d", i, c->why, c->want);
    }
}

Test(topic, valid_names_are_valid_filters)
{
    for (size_t i = 0; i < NCASES(name_cases); i++) {
        const struct check_case *c = &name_cases[i];
        if (c->want == SL_OK)
            cr_expect_eq(topic_filter_check(c->s, c->len, 0), SL_OK,
                         "name #%zu (%s)", i, c->why);
    }
}

Test(topic, max_len)
{
    char *buf = malloc(65536);

    cr_assert_not_null(buf);
    memset(buf, 'a', 65536);
    cr_expect_eq(topic_name_check(buf, 10, 10), SL_OK);
    cr_expect_eq(topic_name_check(buf, 11, 10), SL_ETOPIC);
    cr_expect_eq(topic_filter_check(buf, 10, 10), SL_OK);
    cr_expect_eq(topic_filter_check(buf, 11, 10), SL_ETOPIC);
    /* max_len 0 means the protocol's 65535 */
    cr_expect_eq(topic_name_check(buf, 65535, 0), SL_OK);
    cr_expect_eq(topic_name_check(buf, 65536, 0), SL_ETOPIC);
    cr_expect_eq(topic_filter_check(buf, 65535, 0), SL_OK);
    cr_expect_eq(topic_filter_check(buf, 65536, 0), SL_ETOPIC);
    /* a larger configured maximum is honoured */
    cr_expect_eq(topic_name_check(buf, 65536, 70000), SL_OK);
    free(buf);
}

Test(topic, levels)
{
    cr_expect_eq(topic_levels(S("a")), 1);
    cr_expect_eq(topic_levels(S("a/b")), 2);
    cr_expect_eq(topic_levels(S("/")), 2);
    cr_expect_eq(topic_levels(S("a//b")), 3);
    cr_expect_eq(topic_levels(S("/a/")), 3);
    cr_expect_eq(topic_levels(S("+/#")), 2);
    cr_expect_eq(topic_levels(S("$SYS/a/b/c")), 4);
}

struct match_case {
    const char *filter;
    const char *topic;
    bool want;
};

static const struct match_case match_cases[] = {
    {"a/b/c", "a/b/c", true},
    {"a/b/c", "a/b", false},
    {"a/b", "a/b/c", false},
    {"a/b/c", "a/b/d", false},
    {"a/b/c", "A/b/c", false},
    {"a", "ab", false},
    {"ab", "a", false},
    {"+", "a", true},
    {"+", "a/b", false},
    {"+", "/", false},
    {"+/+", "/", true},
    {"/+", "/", true},
    {"+/", "/", true},
    {"+", "", true},
    {"a/+", "a/", true},
    {"a/+", "a", false},
    {"a/+/c", "a/b/c", true},
    {"a/+/c", "a//c", true},
    {"a/+/c", "a/b/d", false},
    {"a/+/c", "a/b/c/d", false},
    {"+/+/+", "a/b/c", true},
    {"+/+/+", "a/b", false},
    {"#", "a", true},
    {"#", "a/b/c", true},
    {"#", "/", true},
    {"#", "/a", true},
    {"a/#", "a", true},
    {"a/#", "a/", true},
    {"a/#", "a/b", true},
    {"a/#", "a/b/c", true},
    {"a/#", "b", false},
    {"a/#", "ab", false},
    {"a/#", "ab/c", false},
    {"a/b/#", "a", false},
    {"+/#", "a", true},
    {"+/#", "a/b/c", true},
    {"+/+/#", "a", false},
    {"+/+/#", "a/b", true},
    {"a/+/#", "a/b", true},
    {"/#", "/", true},
    {"/#", "/a/b", true},
    {"/#", "a", false},
    {"/a", "/a", true},
    {"/a", "a", false},
    {"a/", "a/", true},
    {"a/", "a", false},
    {"a//b", "a//b", true},
    {"a//b", "a/b", false},
    /* the $-rule */
    {"#", "$SYS", false},
    {"#", "$SYS/uptime", false},
    {"+", "$SYS", false},
    {"+/uptime", "$SYS/uptime", false},
    {"+/#", "$SYS/uptime", false},
    {"$SYS/#", "$SYS/uptime", true},
    {"$SYS/#", "$SYS", true},
    {"$SYS/+", "$SYS/uptime", true},
    {"$SYS/uptime", "$SYS/uptime", true},
    {"a/+", "a/$b", true},
    {"a/#", "a/$b", true},
    {"#", "a$", true},
    {"+/$x", "a/$x", true},
};

Test(topic, matches_table)
{
    for (size_t i = 0; i < NCASES(match_cases); i++) {
        const struct match_case *c = &match_cases[i];
        cr_expect_eq(topic_matches(c->filter, strlen(c->filter), c->topic,
                                   strlen(c->topic)),
                     c->want, "filter '%s' topic '%s': want %d", c->filter,
                     c->topic, c->want);
    }
}

struct share_case {
    const char *s;
    int want;
    const char *group;
    const char *filter;
};

static const struct share_case share_cases[] = {
    {"$share/g/a/b", 1, "g", "a/b"},
    {"$share/group/#", 1, "group", "#"},
    {"$share/g/+/x", 1, "g", "+/x"},
    {"$share/g//", 1, "g", "/"},
    {"$share/g/$SYS/#", 1, "g", "$SYS/#"},
    {"$share/g\xc3\xa9/a", 1, "g\xc3\xa9", "a"},
    {"a/b", 0, NULL, NULL},
    {"$share", 0, NULL, NULL},
    {"$SHARE/g/a", 0, NULL, NULL},
    {"$sharex/g/a", 0, NULL, NULL},
    {"$shar", 0, NULL, NULL},
    {"$share/", SL_ETOPIC, NULL, NULL},        /* no group */
    {"$share//a", SL_ETOPIC, NULL, NULL},      /* empty group */
    {"$share/g", SL_ETOPIC, NULL, NULL},       /* no filter */
    {"$share/g/", SL_ETOPIC, NULL, NULL},      /* empty filter */
    {"$share/+/a", SL_ETOPIC, NULL, NULL},     /* '+' in group */
    {"$share/g#/a", SL_ETOPIC, NULL, NULL},    /* '#' in group */
    {"$share/#/a", SL_ETOPIC, NULL, NULL},     /* '#' as group */
    {"$share/g/a/#/b", SL_ETOPIC, NULL, NULL}, /* invalid filter */
    {"$share/g/a+", SL_ETOPIC, NULL, NULL},    /* invalid filter */
    {"$share/\xff/a", SL_ETOPIC, NULL, NULL},  /* bad UTF-8 in group */
};

Test(topic, share_parse_table)
{
    for (size_t i = 0; i < NCASES(share_cases); i++) {
        const struct share_case *c = &share_cases[i];
        const char *g = NULL, *f = NULL;
        size_t gl = 0, fl = 0;
        int rc = topic_share_parse(c->s, strlen(c->s), &g, &gl, &f, &fl);

        cr_expect_eq(rc, c->want, "'%s': got %d want %d", c->s, rc, c->want);
        if (rc != 1 || c->want != 1)
            continue;
        cr_expect_eq(gl, strlen(c->group), "'%s' group length", c->s);
        cr_expect_eq(memcmp(g, c->group, gl), 0, "'%s' group", c->s);
        cr_expect_eq(fl, strlen(c->filter), "'%s' filter length", c->s);
        cr_expect_eq(memcmp(f, c->filter, fl), 0, "'%s' filter", c->s);
        cr_expect(g > c->s && f > g, "'%s' points into the input", c->s);
    }
}

Test(topic, share_parse_length_is_respected)
{
    /* the string continues past len: only len bytes are considered */
    const char s[] = "$share/g/abc";
    const char *g, *f;
    size_t gl, fl;

    cr_expect_eq(topic_share_parse(s, 10, &g, &gl, &f, &fl), 1);
    cr_expect_eq(fl, 1);
    cr_expect_eq(topic_share_parse(s, 9, &g, &gl, &f, &fl), SL_ETOPIC);
    cr_expect_eq(topic_share_parse(s, 8, &g, &gl, &f, &fl), SL_ETOPIC);
    cr_expect_eq(topic_share_parse(s, 6, &g, &gl, &f, &fl), 0);
}

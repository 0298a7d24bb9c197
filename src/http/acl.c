/*
 * acl.c - authorization rules: Mosquitto acl_file and EMQX rule lists.
 *
 * acl_file (Mosquitto's format):
 *
 *   # clients without a user name
 *   topic read public/#
 *   user alice
 *   topic readwrite alice/#          publish and subscribe
 *   topic deny alice/secret          refuses, whatever comes after
 *   topic sensors/+/temp             no access word: readwrite
 *   pattern write devices/%c/up      every client; %c client id, %u user
 *
 * The client's section is searched first, deny lines before the others,
 * then the patterns the same way. read is subscribe, write is publish.
 * A placeholder whose value is missing (no user name) or holds '+' or '#'
 * makes its line not apply, so a client cannot widen its own rights.
 *
 * EMQX 5.8 rule lists (the "acl" of an auth answer), first match wins:
 *
 *   [{"permission": "allow", "action": "publish", "topic": "t/${clientid}",
 *     "qos": [0, 1], "retain": false},
 *    {"permission": "deny", "action": "all", "topics": ["#", "eq a/#"]}]
 *
 * "eq a/#" stands for the text "a/#" itself: a subscription to exactly
 * that filter (a publish topic name is compared the same way).
 *
 * Matching. A PUBLISH topic name matches a rule topic as a subscription
 * would (topic_matches). A SUBSCRIBE filter f is allowed by rule topic p
 * when p covers f (every topic f matches, p matches) and denied by p when
 * they intersect (some topic matches both):
 *   p "a/#"   f "a/+/b"  covers          p "a/+"  f "a/#"  intersects only
 *   p "#"     f "$SYS/x" neither ('#' never matches a '$' topic)
 */
#include "auth_int.h"

#include "starling/err.h"
#include "starling/map.h"
#include "starling/topic.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- filter relations ----------------------------------------------------- */

/* The next '/'-separated level of s[0..len) from *pos; false after the last
 * one. */
static bool next_level(const char *s, size_t len, size_t *pos, const char **lv,
                       size_t *ln)
{
    if (*pos > len)
        return false;
    const char *start = s + *pos;
    const char *slash = memchr(start, '/', len - *pos);
    *lv = start;
    *ln = slash ? (size_t)(slash - start) : len - *pos;
    *pos += *ln + 1;
    return true;
}

static bool is_hash(const char *l, size_t n)
{
    return n == 1 && l[0] == '#';
}

static bool is_plus(const char *l, size_t n)
{
    return n == 1 && l[0] == '+';
}

static bool is_wild(const char *l, size_t n)
{
    return is_hash(l, n) || is_plus(l, n);
}

/* A first level that only a literal '$' level can match. */
static bool dollar(const char *l, size_t n)
{
    return n > 0 && l[0] == '$';
}

bool acl_filter_covers(const char *p, size_t plen, const char *f, size_t flen)
{
    size_t pp = 0, fp = 0, pn = 0, fn = 0;
    const char *pl = NULL, *fl = NULL;
    for (bool first = true;; first = false) {
        bool hp = next_level(p, plen, &pp, &pl, &pn);
        bool hf = next_level(f, flen, &fp, &fl, &fn);
        if (!hp)
            return !hf;
        if (is_hash(pl, pn))
            return !(first && hf && dollar(fl, fn));
        if (!hf)
            return false;
        if (is_plus(pl, pn)) {
            if (is_hash(fl, fn) || (first && dollar(fl, fn)))
                return false;
        } else if (pn != fn || memcmp(pl, fl, pn) != 0) {
            return false; /* also when f has a wildcard here */
        }
    }
}

/* Can wildcard level w (first level or not) meet level o? */
static bool wild_meets(const char *o, size_t on, bool first)
{
    return !(first && !is_wild(o, on) && dollar(o, on));
}

bool acl_filters_intersect(const char *a, size_t alen, const char *b,
                           size_t blen)
{
    size_t ap = 0, bp = 0, an = 0, bn = 0;
    const char *al = NULL, *bl = NULL;
    for (bool first = true;; first = false) {
        bool ha = next_level(a, alen, &ap, &al, &an);
        bool hb = next_level(b, blen, &bp, &bl, &bn);
        if (!ha || !hb)
            return ha ? is_hash(al, an) : !hb || is_hash(bl, bn);
        if (is_hash(al, an) || is_hash(bl, bn))
            return is_hash(al, an) ? wild_meets(bl, bn, first)
                                   : wild_meets(al, an, first);
        if (is_plus(al, an) || is_plus(bl, bn)) {
            if (!(is_plus(al, an) ? wild_meets(bl, bn, first)
                                  : wild_meets(al, an, first)))
                return false;
        } else if (an != bn || memcmp(al, bl, an) != 0) {
            return false;
        }
    }
}

/* Does rule topic p (allow or deny) apply to this topic or filter? */
static bool topic_applies(const char *p, size_t plen, bool allow,
                          authz_action_t act, const char *t, size_t tlen)
{
    if (act == AUTHZ_PUBLISH)
        return topic_matches(p, plen, t, tlen);
    return allow ? acl_filter_covers(p, plen, t, tlen)
                 : acl_filters_intersect(p, plen, t, tlen);
}

/* --- placeholders --------------------------------------------------------- */

typedef struct {
    const char *name; /* "%c", "${clientid}" */
    const char *value;
} subst_t;

/* A value that may stand in a topic: present, no wildcard. */
static bool value_ok(const char *v)
{
    return v && !strpbrk(v, "+#");
}

/* Replace every placeholder of s; NULL when one has no usable value (the
 * rule does not apply) or on no memory. */
static char *expand(const char *s, const subst_t *subs, size_t nsubs)
{
    size_t cap = strlen(s) + 1, n = 0;
    for (size_t i = 0; i < nsubs; i++)
        if (strstr(s, subs[i].name)) {
            if (!value_ok(subs[i].value))
                return NULL;
            cap += strlen(subs[i].value) * (cap / strlen(subs[i].name) + 1);
        }
    char *out = malloc(cap);
    while (out && *s) {
        size_t i = 0;
        while (i < nsubs && strncmp(s, subs[i].name, strlen(subs[i].name)))
            i++;
        if (i == nsubs) {
            out[n++] = *s++;
            continue;
        }
        size_t vl = strlen(subs[i].value);
        memcpy(out + n, subs[i].value, vl);
        n += vl;
        s += strlen(subs[i].name);
    }
    if (out)
        out[n] = '\0';
    return out;
}

/* --- EMQX rule lists ------------------------------------------------------ */

void acl_rules_fini(acl_rules_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i].topic);
    free(r->v);
    r->v = NULL;
    r->n = 0;
}

static int parse_actions(const cJSON *a, uint8_t *out)
{
    const char *s = cJSON_GetStringValue(a);
    if (!s)
        return SL_EMALFORMED;
    if (strcmp(s, "publish") == 0)
        *out = ACL_PUB;
    else if (strcmp(s, "subscribe") == 0)
        *out = ACL_SUB;
    else if (strcmp(s, "all") == 0)
        *out = ACL_PUB | ACL_SUB;
    else
        return SL_EMALFORMED;
    return SL_OK;
}

static int parse_qos(const cJSON *q, uint8_t *mask)
{
    *mask = 7;
    if (!q)
        return SL_OK;
    if (!cJSON_IsArray(q))
        return SL_EMALFORMED;
    *mask = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, q)
    {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 2 ||
            e->valuedouble != (int)e->valuedouble)
            return SL_EMALFORMED;
        *mask |= (uint8_t)(1u << (int)e->valuedouble);
    }
    return SL_OK;
}

static int parse_retain(const cJSON *r, int8_t *out)
{
    *out = -1;
    if (!r || (cJSON_IsString(r) && strcmp(r->valuestring, "all") == 0))
        return SL_OK;
    if (!cJSON_IsBool(r))
        return SL_EMALFORMED;
    *out = cJSON_IsTrue(r) ? 1 : 0;
    return SL_OK;
}

/* Append one rule for topic text t (with its "eq " prefix, if any). */
static int rule_add(acl_rules_t *out, const acl_rule_t *proto, const cJSON *t)
{
    const char *s = cJSON_GetStringValue(t);
    if (!s)
        return SL_EMALFORMED;
    bool eq = strncmp(s, "eq ", 3) == 0;
    if (eq)
        s += 3;
    if (topic_filter_check(s, strlen(s), 0) != SL_OK)
        return SL_EMALFORMED;
    acl_rule_t *v = realloc(out->v, (out->n + 1) * sizeof(*v));
    if (!v)
        return SL_ENOMEM;
    out->v = v;
    acl_rule_t *r = &v[out->n];
    *r = *proto;
    r->eq = eq;
    r->subst = !eq && (strstr(s, "${clientid}") || strstr(s, "${username}"));
    r->topic = strdup(s);
    if (!r->topic)
        return SL_ENOMEM;
    out->n++;
    return SL_OK;
}

static const cJSON *member(const cJSON *o, const char *name)
{
    return cJSON_GetObjectItemCaseSensitive(o, name);
}

static int rule_parse(acl_rules_t *out, const cJSON *o)
{
    acl_rule_t proto = {0};
    const char *perm = cJSON_GetStringValue(member(o, "permission"));
    if (!cJSON_IsObject(o) || !perm ||
        (strcmp(perm, "allow") != 0 && strcmp(perm, "deny") != 0))
        return SL_EMALFORMED;
    proto.allow = strcmp(perm, "allow") == 0;
    int rc = parse_actions(member(o, "action"), &proto.actions);
    if (rc == SL_OK)
        rc = parse_qos(member(o, "qos"), &proto.qos_mask);
    if (rc == SL_OK)
        rc = parse_retain(member(o, "retain"), &proto.retain);
    if (rc != SL_OK)
        return rc;
    const cJSON *topic = member(o, "topic");
    const cJSON *topics = member(o, "topics");
    if (topic)
        return rule_add(out, &proto, topic);
    if (!cJSON_IsArray(topics) || cJSON_GetArraySize(topics) == 0)
        return SL_EMALFORMED;
    const cJSON *t;
    cJSON_ArrayForEach(t, topics)
    {
        if ((rc = rule_add(out, &proto, t)) != SL_OK)
            return rc;
    }
    return SL_OK;
}

int acl_rules_parse(acl_rules_t *out, const cJSON *list)
{
    memset(out, 0, sizeof(*out));
    if (!cJSON_IsArray(list))
        return SL_EMALFORMED;
    const cJSON *o;
    cJSON_ArrayForEach(o, list)
    {
        int rc = rule_parse(out, o);
        if (rc != SL_OK) {
            acl_rules_fini(out);
            return rc;
        }
    }
    return SL_OK;
}

static bool rule_filters(const acl_rule_t *r, authz_action_t act, int qos,
                         bool retain)
{
    uint8_t bit = act == AUTHZ_PUBLISH ? ACL_PUB : ACL_SUB;
    if (!(r->actions & bit) || qos < 0 || qos > 2 ||
        !(r->qos_mask & (1u << qos)))
        return false;
    return act != AUTHZ_PUBLISH || r->retain < 0 || r->retain == retain;
}

static bool rule_applies(const acl_rule_t *r, const subst_t *subs,
                         authz_action_t act, const char *topic, size_t tlen)
{
    if (r->eq)
        return strlen(r->topic) == tlen && memcmp(r->topic, topic, tlen) == 0;
    if (!r->subst)
        return topic_applies(r->topic, strlen(r->topic), r->allow, act, topic,
                             tlen);
    char *t = expand(r->topic, subs, 2);
    bool hit = t && topic_applies(t, strlen(t), r->allow, act, topic, tlen);
    free(t);
    return hit;
}

int acl_rules_check(const acl_rules_t *r, const char *clientid,
                    const char *username, authz_action_t act,
                    const char *topic, size_t tlen, int qos, bool retain)
{
    subst_t subs[] = {{"${clientid}", clientid}, {"${username}", username}};
    for (size_t i = 0; i < r->n; i++) {
        const acl_rule_t *rule = &r->v[i];
        if (rule_filters(rule, act, qos, retain) &&
            rule_applies(rule, subs, act, topic, tlen))
            return rule->allow ? ACL_ALLOW : ACL_DENY;
    }
    return ACL_NOMATCH;
}

/* --- acl_file ------------------------------------------------------------- */

typedef struct file_rule {
    char *topic;
    uint8_t access; /* ACL_PUB (write) | ACL_SUB (read); 0 = deny */
} file_rule_t;

typedef struct rule_list {
    file_rule_t *v;
    size_t n;
} rule_list_t;

struct acl_file {
    rule_list_t anon;     /* topic lines before any user line */
    map_t *users;         /* user name -> rule_list_t */
    rule_list_t patterns; /* pattern lines */
};

static void list_fini(rule_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].topic);
    free(l->v);
}

static void list_free(void *l)
{
    list_fini(l);
    free(l);
}

void acl_file_free(acl_file_t *f)
{
    if (!f)
        return;
    list_fini(&f->anon);
    list_fini(&f->patterns);
    if (f->users)
        map_free(f->users, list_free);
    free(f);
}

static int list_add(rule_list_t *l, const char *topic, uint8_t access)
{
    file_rule_t *v = realloc(l->v, (l->n + 1) * sizeof(*v));
    if (!v)
        return SL_ENOMEM;
    l->v = v;
    v[l->n].topic = strdup(topic);
    v[l->n].access = access;
    if (!v[l->n].topic)
        return SL_ENOMEM;
    l->n++;
    return SL_OK;
}

static rule_list_t *user_list(acl_file_t *f, const char *name)
{
    rule_list_t *l = map_get(f->users, name, strlen(name));
    if (l)
        return l;
    l = calloc(1, sizeof(*l));
    if (l && map_put(f->users, name, strlen(name), l, NULL) != SL_OK) {
        free(l);
        return NULL;
    }
    return l;
}

static char *skip_blank(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* "[read|write|readwrite|deny] TOPIC": the access word is optional. */
static char *split_access(char *rest, uint8_t *access)
{
    static const struct {
        const char *word;
        uint8_t access;
    } words[] = {{"read", ACL_SUB},
                 {"write", ACL_PUB},
                 {"readwrite", ACL_SUB | ACL_PUB},
                 {"deny", 0}};
    *access = ACL_SUB | ACL_PUB;
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        size_t n = strlen(words[i].word);
        if (strncmp(rest, words[i].word, n) == 0 &&
            (rest[n] == ' ' || rest[n] == '\t')) {
            *access = words[i].access;
            return skip_blank(rest + n);
        }
    }
    return rest;
}

typedef struct {
    acl_file_t *f;
    rule_list_t *current; /* section of topic lines */
    const char *path;
    unsigned lineno;
    char *err;
    size_t errlen;
} file_parse_t;

static int line_error(file_parse_t *p, const char *what, const char *s)
{
    snprintf(p->err, p->errlen, "%s:%u: %s%s%s%s", p->path, p->lineno, what,
             s ? " '" : "", s ? s : "", s ? "'" : "");
    return SL_EINVAL;
}

static int topic_line(file_parse_t *p, char *rest, bool pattern)
{
    uint8_t access;
    char *topic = split_access(rest, &access);
    if (!*topic || topic_filter_check(topic, strlen(topic), 0) != SL_OK)
        return line_error(p, "not a valid topic filter", topic);
    return list_add(pattern ? &p->f->patterns : p->current, topic, access);
}

static int file_line(file_parse_t *p, char *line)
{
    size_t n = strlen(line);
    while (n > 0 && isspace((unsigned char)line[n - 1]))
        line[--n] = '\0';
    line = skip_blank(line);
    if (*line == '\0' || *line == '#')
        return SL_OK;
    char *rest = line + strcspn(line, " \t");
    if (*rest)
        *rest++ = '\0';
    rest = skip_blank(rest);
    if (strcmp(line, "user") == 0) {
        if (!*rest)
            return line_error(p, "user without a name", NULL);
        p->current = user_list(p->f, rest);
        return p->current ? SL_OK : SL_ENOMEM;
    }
    if (strcmp(line, "topic") == 0 || strcmp(line, "pattern") == 0)
        return topic_line(p, rest, line[0] == 'p');
    return line_error(p, "expected user, topic or pattern, got", line);
}

int acl_file_load(acl_file_t **out, const char *path, char *err,
                  size_t errlen)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return SL_EIO;
    }
    acl_file_t *f = calloc(1, sizeof(*f));
    int rc = f && (f->users = map_new()) ? SL_OK : SL_ENOMEM;
    file_parse_t p = {.f = f, .current = f ? &f->anon : NULL, .path = path,
                      .err = err, .errlen = errlen};
    char *line = NULL;
    size_t cap = 0;
    while (rc == SL_OK && getline(&line, &cap, fp) >= 0) {
        p.lineno++;
        rc = file_line(&p, line);
    }
    free(line);
    if (rc == SL_OK && ferror(fp)) {
        snprintf(err, errlen, "%s: read error", path);
        rc = SL_EIO;
    }
    fclose(fp);
    if (rc == SL_ENOMEM)
        snprintf(err, errlen, "%s: out of memory", path);
    if (rc != SL_OK) {
        acl_file_free(f);
        return rc;
    }
    *out = f;
    return SL_OK;
}

static bool file_rule_applies(const file_rule_t *r, bool deny,
                              const subst_t *subs, size_t nsubs,
                              authz_action_t act, const char *t, size_t tlen)
{
    if (!nsubs)
        return topic_applies(r->topic, strlen(r->topic), !deny, act, t, tlen);
    char *x = expand(r->topic, subs, nsubs);
    bool hit = x && topic_applies(x, strlen(x), !deny, act, t, tlen);
    free(x);
    return hit;
}

/* Deny lines first, then lines granting the action. */
static int list_check(const rule_list_t *l, const subst_t *subs,
                      size_t nsubs, authz_action_t act, const char *t,
                      size_t tlen)
{
    uint8_t bit = act == AUTHZ_PUBLISH ? ACL_PUB : ACL_SUB;
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].access == 0 &&
            file_rule_applies(&l->v[i], true, subs, nsubs, act, t, tlen))
            return ACL_DENY;
    for (size_t i = 0; i < l->n; i++)
        if ((l->v[i].access & bit) &&
            file_rule_applies(&l->v[i], false, subs, nsubs, act, t, tlen))
            return ACL_ALLOW;
    return ACL_NOMATCH;
}

int acl_file_check(const acl_file_t *f, const char *clientid,
                   const char *username, authz_action_t act,
                   const char *topic, size_t tlen)
{
    const rule_list_t *own =
        username ? map_get(f->users, username, strlen(username)) : &f->anon;
    int r = own ? list_check(own, NULL, 0, act, topic, tlen) : ACL_NOMATCH;
    if (r != ACL_NOMATCH)
        return r;
    subst_t subs[] = {{"%c", clientid}, {"%u", username}};
    return list_check(&f->patterns, subs, 2, act, topic, tlen);
}

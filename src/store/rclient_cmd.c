/*
 * rclient_cmd.c - commands of the Redis client (rclient.h): the arguments
 * recorded while a command is built, then written out once, in the
 * protocol (RESP), into the request that rclient_send() queues: keys with
 * their prefix, EVALSHA with the script's SHA1. Sending it is then one
 * copy into the connection's output buffer, however often it is sent.
 */
#include "rclient_int.h"

#include "blob.h"

#include <stdlib.h>
#include <string.h>

enum { A_BYTES, A_NUM, A_GKEY, A_CKEY, A_MSG, A_ENTRY, A_SHA };

void rcmd_init(rcmd_t *c, const char *prefix)
{
    c->prefix = prefix;
    c->argc = 0;
    c->cap = RCMD_MAX_ARGS;
    c->key = -1;
    c->script = -1;
    c->overflow = false;
    c->args = c->small;
}

void rcmd_init_n(rcmd_t *c, const char *prefix, int n)
{
    rcmd_init(c, prefix);
    if (n <= RCMD_MAX_ARGS)
        return;
    c->args = malloc((size_t)n * sizeof(*c->args));
    if (!c->args)
        abort(); /* a lost command would wedge its callers forever */
    c->cap = n;
}

void rcmd_fini(rcmd_t *c)
{
    if (c->args != c->small)
        free(c->args);
    c->args = c->small;
    c->cap = RCMD_MAX_ARGS;
}

static rarg_t *arg_add(rcmd_t *c, uint8_t kind)
{
    if (c->argc == c->cap) {
        c->overflow = true;
        return NULL;
    }
    rarg_t *a = &c->args[c->argc++];
    memset(a, 0, offsetof(rarg_t, num));
    a->kind = kind;
    return a;
}

void rcmd_bytes(rcmd_t *c, const void *p, size_t len)
{
    rarg_t *a = arg_add(c, A_BYTES);
    if (a) {
        a->p = p;
        a->len = len;
    }
}

void rcmd_str(rcmd_t *c, const char *s)
{
    rcmd_bytes(c, s, strlen(s));
}

void rcmd_u64(rcmd_t *c, uint64_t v)
{
    rarg_t *a = arg_add(c, A_NUM);
    if (!a)
        return;
    /* Digits from the end, then moved to the front: several per queue
     * operation, so not snprintf. */
    char tmp[20];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(a->num, tmp + sizeof(tmp) - n, n);
    a->len = n;
}

void rcmd_key(rcmd_t *c, const char *name)
{
    rarg_t *a = arg_add(c, A_GKEY);
    if (a) {
        a->p = name;
        a->len = strlen(c->prefix) + strlen(name);
        if (c->key < 0)
            c->key = c->argc - 1;
    }
}

void rcmd_ckey(rcmd_t *c, const char *cid, size_t clen, const char *sfx)
{
    rarg_t *a = arg_add(c, A_CKEY);
    if (a) {
        a->p = cid;
        a->sfx = sfx;
        a->clen = clen;
        a->len = strlen(c->prefix) + 3 + clen + 1 + strlen(sfx);
        if (c->key < 0)
            c->key = c->argc - 1;
    }
}

void rcmd_msg(rcmd_t *c, const msg_t *m)
{
    rarg_t *a = arg_add(c, A_MSG);
    if (a) {
        a->p = m;
        a->len = m ? blob_msg_size(m) : 0;
    }
}

void rcmd_entry(rcmd_t *c, uint8_t qos, const msg_t *m)
{
    rarg_t *a = arg_add(c, A_ENTRY);
    if (a) {
        a->p = m;
        a->qos = qos;
        a->len = 1 + blob_msg_size(m);
    }
}

void rcmd_evalsha(rcmd_t *c, int script, int numkeys)
{
    rcmd_str(c, "EVALSHA");
    rarg_t *a = arg_add(c, A_SHA);
    if (a)
        a->len = 40;
    c->script = script;
    rcmd_u64(c, (uint64_t)numkeys);
}

static char *arg_write(const rclient_t *cl, const rcmd_t *c, const rarg_t *a,
                       char *p)
{
    size_t plen = strlen(c->prefix);
    switch (a->kind) {
    case A_BYTES:
        if (a->len)
            memcpy(p, a->p, a->len);
        break;
    case A_NUM:
        memcpy(p, a->num, a->len);
        break;
    case A_GKEY:
        memcpy(p, c->prefix, plen);
        memcpy(p + plen, a->p, a->len - plen);
        break;
    case A_CKEY: {
        size_t clen = a->clen;
        size_t slen = strlen(a->sfx);
        memcpy(p, c->prefix, plen);
        memcpy(p + plen, "{c:", 3);
        if (clen)
            memcpy(p + plen + 3, a->p, clen);
        p[plen + 3 + clen] = '}';
        memcpy(p + plen + 4 + clen, a->sfx, slen);
        break;
    }
    case A_MSG:
        if (a->p)
            blob_msg_write(a->p, (uint8_t *)p);
        break;
    case A_ENTRY:
        p[0] = (char)a->qos;
        blob_msg_write(a->p, (uint8_t *)p + 1);
        break;
    case A_SHA:
        memcpy(p, cl->sha[c->script], 40);
        break;
    }
    return p + a->len;
}

/* Decimal digits of v. */
static size_t ndigits(size_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* "<lead><v>\r\n" at p; returns the end. */
static char *resp_head(char *p, char lead, size_t v)
{
    size_t n = ndigits(v);
    *p++ = lead;
    for (size_t i = n; i > 0; i--, v /= 10)
        p[i - 1] = (char)('0' + v % 10);
    p += n;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/* One allocation: the request, the ctx copy, the command written out in
 * the protocol ("*argc", then "$len" and the bytes of each argument), so
 * sending it (and again after a redirection or a lost connection) is one
 * copy into the connection's buffer. */
rreq_t *rreq_new(rclient_t *cl, const rcmd_t *c, rclient_fn fn,
                 const void *ctx, size_t ctxlen, const void *tail,
                 size_t taillen)
{
    size_t head = (sizeof(rreq_t) + 15) & ~(size_t)15;
    size_t cpad = (ctxlen + taillen + 1 + 15) & ~(size_t)15;
    size_t data = 3 + ndigits((size_t)c->argc);
    for (int i = 0; i < c->argc; i++)
        data += 5 + ndigits(c->args[i].len) + c->args[i].len;
    rreq_t *q = calloc(1, head + cpad + data + 1);
    if (!q)
        abort(); /* a lost completion would wedge its caller forever */
    q->cl = cl;
    q->fn = fn;
    q->ctx = (char *)q + head;
    if (ctxlen)
        memcpy(q->ctx, ctx, ctxlen);
    if (taillen)
        memcpy((char *)q->ctx + ctxlen, tail, taillen);
    char *start = (char *)q + head + cpad;
    char *p = resp_head(start, '*', (size_t)c->argc);
    q->slot = -1;
    for (int i = 0; i < c->argc; i++) {
        char *arg = resp_head(p, '$', c->args[i].len);
        p = arg_write(cl, c, &c->args[i], arg);
        if (i == c->key)
            q->slot = slots_key(arg, c->args[i].len);
        *p++ = '\r';
        *p++ = '\n';
    }
    q->cmd = start;
    q->cmdlen = (size_t)(p - start);
    q->script = c->script;
    return q;
}

/*
 * test_auth.c - unit tests of the auth module (src/http): password files
 * made by mosquitto_passwd, acl_file parsing and matching, EMQX rule
 * lists, endpoint answers and requests, webhook bodies, URL and header
 * parsing; then the whole module on a real event loop against an evhttp
 * server in the same process (auth chain, failure policy, cache, pool,
 * auth_free with requests pending, webhooks with retries).
 */
#include "../../src/http/auth_int.h"

#include "starling/err.h"
#include "starling/log.h"

#include <criterion/criterion.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Lines made by `mosquitto_passwd` 2.0.11 (-c -b; -H sha512 for carol,
 * -I 2000 for dave). */
static const char *const passwd_text =
    "# made by mosquitto_passwd\n"
    "alice:$7$101$u6CrY4qPsGVoq4cH$AOb6fbUpnmkpQcslKXdBLO3NENAeEsdJl9nmsn8TOx"
    "ktxv7Iei33JMmyyZfcFi0jfj3dvKSodjSBb+jmpP8cKA==\n"
    "bob smith:$7$101$9J1EtTOtDcsY1CMG$W0UNle3v0xv19sQGH446NmYWrx4APBf7ZhPhqb"
    "OOfl2nfzTRhFzYuX5ZTjnYXMhcD07VzTyVgzoYdDdzmO+pLQ==\n"
    "\n"
    "carol:$6$DwAv+syORYSim17F$4gK/44mwS9Hm9R0wDWnYK7On85Ut8ly0sV9UPeDuK1I3sf"
    "N2R17iJpY0I2TXI4qQBXgfFnSj6H6N/PTKPy6CKQ==\r\n"
    "empty:$7$101$se4IlZMseWWDM5QJ$uVytmg2MjOyngq6pghYwvgt2yx+CuLUBlvb94zbZAC"
    "3zF1wHQ89l7ZaMXV1qplmRCQcg23IkPHp32/CBc5EMWw==\n"
    "dave:$7$2000$9jmPOldtChe2fGYk$910R/PfWt3GhpK/W5Q69JNT1rpCfdxNlgm/Qpsqhve"
    "b3s0vf7U6i7znM525Nv8HDBEx4IfWbZDdA1fid+R1cdw==\n";

static char tmp_paths[4][64];
static int ntmp;

static void cleanup_tmp(void)
{
    for (int i = 0; i < ntmp; i++)
        unlink(tmp_paths[i]);
    ntmp = 0;
}

TestSuite(auth, .fini = cleanup_tmp);

static const char *write_tmp(const char *text)
{
    cr_assert(ntmp < 4);
    char *path = tmp_paths[ntmp++];
    strcpy(path, "/tmp/test_auth_XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
    return path;
}

static const uint8_t *u8(const char *s)
{
    return (const uint8_t *)s;
}

static auth_result_t pw_check(const passwd_t *p, const char *user,
                              const char *pw)
{
    return passwd_check(p, user, u8(pw ? pw : ""), pw ? strlen(pw) : 0,
                        pw != NULL);
}

/* --- password files ------------------------------------------------------- */

Test(auth, passwd_mosquitto_file)
{
    char err[256] = "";
    passwd_t *p = NULL;
    cr_assert_eq(passwd_load(&p, write_tmp(passwd_text), err, sizeof(err)),
                 SL_OK, "%s", err);
    cr_assert_eq(passwd_count(p), 5);
    cr_assert_eq(pw_check(p, "alice", "secret"), AUTH_ALLOW);
    cr_assert_eq(pw_check(p, "alice", "Secret"), AUTH_DENY);
    cr_assert_eq(pw_check(p, "alice", "secret "), AUTH_DENY);
    cr_assert_eq(pw_check(p, "alice", NULL), AUTH_DENY, "no password");
    cr_assert_eq(pw_check(p, "bob smith", "p@ss:w rd \xc3\xa9"), AUTH_ALLOW);
    cr_assert_eq(pw_check(p, "carol", "carol6"), AUTH_ALLOW, "$6$ + CRLF");
    cr_assert_eq(pw_check(p, "carol", "carol7"), AUTH_DENY);
    cr_assert_eq(pw_check(p, "empty", ""), AUTH_ALLOW);
    cr_assert_eq(pw_check(p, "empty", NULL), AUTH_DENY);
    cr_assert_eq(pw_check(p, "dave", "dave2000"), AUTH_ALLOW, "2000 rounds");
    cr_assert_eq(pw_check(p, "mallory", "secret"), AUTH_IGNORE);
    cr_assert_eq(pw_check(p, NULL, "secret"), AUTH_IGNORE);
    cr_assert_eq(pw_check(p, "Alice", "secret"), AUTH_IGNORE);
    passwd_free(p);
}

/* A file made now by the real tool, when it is installed. */
Test(auth, passwd_fresh_from_mosquitto_passwd)
{
    const char *tool = "/usr/bin/mosquitto_passwd";
    if (access(tool, X_OK) != 0)
        cr_skip_test("mosquitto_passwd not installed");
    const char *path = write_tmp("");
    char cmd[256];
    snprintf(cmd, sizeof(cmd),
             "%s -b %s zoe 'z0e pass' && %s -H sha512 -b %s yan yanpw",
             tool, path, tool, path);
    cr_assert_eq(system(cmd), 0);
    char err[256] = "";
    passwd_t *p = NULL;
    cr_assert_eq(passwd_load(&p, path, err, sizeof(err)), SL_OK, "%s", err);
    cr_assert_eq(pw_check(p, "zoe", "z0e pass"), AUTH_ALLOW);
    cr_assert_eq(pw_check(p, "zoe", "z0e"), AUTH_DENY);
    cr_assert_eq(pw_check(p, "yan", "yanpw"), AUTH_ALLOW);
    passwd_free(p);
}

Test(auth, passwd_verify_fields)
{
    const char *h7 = "$7$101$u6CrY4qPsGVoq4cH$AOb6fbUpnmkpQcslKXdBLO3NENAeEsdJl"
                     "9nmsn8TOxktxv7Iei33JMmyyZfcFi0jfj3dvKSodjSBb+jmpP8cKA==";
    cr_assert_eq(passwd_verify(h7, u8("secret"), 6), 1);
    cr_assert_eq(passwd_verify(h7, u8("secreT"), 6), 0);
    cr_assert_eq(passwd_verify("secret", u8("secret"), 6), SL_EINVAL);
    cr_assert_eq(passwd_verify("$7$0$u6CrY4qPsGVoq4cH$AA==", u8("x"), 1),
                 SL_EINVAL, "0 iterations");
    cr_assert_eq(passwd_verify("$7$101$u6CrY4qPsGVoq4cH$AA==", u8("x"), 1),
                 SL_EINVAL, "short hash");
    cr_assert_eq(passwd_verify("$7$101$!!!!$AA==", u8("x"), 1), SL_EINVAL);
    cr_assert_eq(passwd_verify("$7$101$u6CrY4qPsGVoq4cH", u8("x"), 1),
                 SL_EINVAL);
    cr_assert_eq(passwd_verify("$5$abc$def", u8("x"), 1), SL_EINVAL);
}

Test(auth, passwd_load_errors)
{
    char err[256] = "";
    passwd_t *p = NULL;
    cr_assert_eq(passwd_load(&p, "/nonexistent/pw", err, sizeof(err)),
                 SL_EIO);
    cr_assert(strstr(err, "/nonexistent/pw: cannot open"), "%s", err);

    const char *path = write_tmp("# users\nalice:plaintext\n");
    cr_assert_eq(passwd_load(&p, path, err, sizeof(err)), SL_EINVAL);
    cr_assert(strstr(err, ":2: user 'alice': not a $6$ or $7$"), "%s", err);
    cr_assert_null(strstr(err, "plaintext"), "the hash is never shown");

    path = write_tmp("no colon here\n");
    cr_assert_eq(passwd_load(&p, path, err, sizeof(err)), SL_EINVAL);
    cr_assert(strstr(err, ":1: expected user:hash"), "%s", err);
}

/* --- filter relations ----------------------------------------------------- */

static bool covers(const char *p, const char *f)
{
    return acl_filter_covers(p, strlen(p), f, strlen(f));
}

static bool meets(const char *a, const char *b)
{
    bool r = acl_filters_intersect(a, strlen(a), b, strlen(b));
    cr_assert_eq(r, acl_filters_intersect(b, strlen(b), a, strlen(a)),
                 "symmetric: %s %s", a, b);
    return r;
}

Test(auth, filter_covers)
{
    cr_assert(covers("a/b", "a/b"));
    cr_assert(!covers("a/b", "a/c"));
    cr_assert(covers("a/#", "a/+/b"));
    cr_assert(covers("a/#", "a/#"));
    cr_assert(covers("a/#", "a"), "a/# matches a");
    cr_assert(covers("a/#", "a/b/c/#"));
    cr_assert(covers("a/+", "a/x"));
    cr_assert(covers("a/+", "a/+"));
    cr_assert(!covers("a/+", "a/#"));
    cr_assert(!covers("a/+", "a/x/y"));
    cr_assert(!covers("a/x", "a/+"));
    cr_assert(!covers("a/b", "a/b/c"));
    cr_assert(!covers("a/b/c", "a/b"));
    cr_assert(covers("#", "a/b"));
    cr_assert(covers("#", "#"));
    cr_assert(covers("#", "+/x"));
    cr_assert(!covers("#", "$SYS/x"), "# never matches $ topics");
    cr_assert(!covers("+/x", "$SYS/x"));
    cr_assert(covers("$SYS/#", "$SYS/broker/+"));
    cr_assert(covers("+/+", "/"), "empty levels");
    cr_assert(!covers("a", ""));
}

Test(auth, filter_intersect)
{
    cr_assert(meets("a/b", "a/b"));
    cr_assert(!meets("a/b", "a/c"));
    cr_assert(meets("a/#", "a/secret"));
    cr_assert(meets("#", "a/secret"));
    cr_assert(meets("a/+", "a/#"));
    cr_assert(meets("a/+/c", "a/b/+"));
    cr_assert(!meets("a/+/c", "a/b/d"));
    cr_assert(meets("a", "a/#"));
    cr_assert(!meets("a", "a/+"));
    cr_assert(!meets("a/b", "a"));
    cr_assert(!meets("#", "$SYS/x"));
    cr_assert(!meets("+/#", "$SYS/#"));
    cr_assert(meets("$SYS/#", "$SYS/+"));
    cr_assert(meets("+", "#"));
    cr_assert(!meets("x/+", "y/#"));
}

/* --- acl_file ------------------------------------------------------------- */

static const char *const acl_text =
    "# anonymous clients\n"
    "topic read public/#\n"
    "\n"
    "user alice\n"
    "topic readwrite alice/#\n"
    "topic deny alice/secret\n"
    "  topic write   sensors/+/temp  \n"
    "topic shared space topic\n"
    "user bob\n"
    "topic read alice/pub/#\n"
    "pattern write devices/%c/up\n"
    "pattern read users/%u/#\n"
    "pattern deny devices/%c/locked\n";

static acl_file_t *load_acl(const char *text)
{
    char err[256] = "";
    acl_file_t *f = NULL;
    cr_assert_eq(acl_file_load(&f, write_tmp(text), err, sizeof(err)), SL_OK,
                 "%s", err);
    return f;
}

static int fcheck(const acl_file_t *f, const char *cid, const char *user,
                  authz_action_t act, const char *t)
{
    return acl_file_check(f, cid, user, act, t, strlen(t));
}

#define PUB AUTHZ_PUBLISH
#define SUB AUTHZ_SUBSCRIBE

Test(auth, acl_file_sections)
{
    acl_file_t *f = load_acl(acl_text);
    /* anonymous: the lines before the first user line */
    cr_assert_eq(fcheck(f, "c", NULL, SUB, "public/news"), ACL_ALLOW);
    cr_assert_eq(fcheck(f, "c", NULL, PUB, "public/news"), ACL_NOMATCH);
    cr_assert_eq(fcheck(f, "c", NULL, SUB, "alice/x"), ACL_NOMATCH);
    /* alice */
    cr_assert_eq(fcheck(f, "c", "alice", PUB, "alice/x/y"), ACL_ALLOW);
    cr_assert_eq(fcheck(f, "c", "alice", SUB, "alice/x/+"), ACL_ALLOW);
    cr_assert_eq(fcheck(f, "c", "alice", SUB, "alice/+"), ACL_DENY,
                 "alice/+ can match the denied alice/secret");
    cr_assert_eq(fcheck(f, "c", "alice", PUB, "alice/secret"), ACL_DENY,
                 "deny lines come first");
    cr_assert_eq(fcheck(f, "c", "alice", SUB, "alice/#"), ACL_DENY,
                 "a filter reaching a denied topic");
    cr_assert_eq(fcheck(f, "c", "alice", PUB, "sensors/k/temp"), ACL_ALLOW);
    cr_assert_eq(fcheck(f, "c", "alice", SUB, "sensors/k/temp"),
                 ACL_NOMATCH, "write only");
    cr_assert_eq(fcheck(f, "c", "alice", PUB, "shared space topic"),
                 ACL_ALLOW, "no access word, topic with spaces");
    cr_assert_eq(fcheck(f, "c", "alice", SUB, "public/news"), ACL_NOMATCH,
                 "anonymous lines are not for named users");
    /* bob */
    cr_assert_eq(fcheck(f, "c", "bob", SUB, "alice/pub/1"), ACL_ALLOW);
    cr_assert_eq(fcheck(f, "c", "bob", SUB, "alice/#"), ACL_NOMATCH,
                 "wider than granted");
    cr_assert_eq(fcheck(f, "c", "bob", PUB, "alice/pub/1"), ACL_NOMATCH);
    cr_assert_eq(fcheck(f, "c", "carol", PUB, "alice/x"), ACL_NOMATCH);
    acl_file_free(f);
}

Test(auth, acl_file_patterns)
{
    acl_file_t *f = load_acl(acl_text);
    cr_assert_eq(fcheck(f, "dev1", "bob", PUB, "devices/dev1/up"), ACL_ALLOW);
    cr_assert_eq(fcheck(f, "dev1", NULL, PUB, "devices/dev1/up"), ACL_ALLOW,
                 "patterns apply to anonymous clients");
    cr_assert_eq(fcheck(f, "dev2", "bob", PUB, "devices/dev1/up"),
                 ACL_NOMATCH);
    cr_assert_eq(fcheck(f, "dev1", "bob", PUB, "devices/dev1/locked"),
                 ACL_DENY);
    cr_assert_eq(fcheck(f, "c", "bob", SUB, "users/bob/inbox"), ACL_ALLOW);
    cr_assert_eq(fcheck(f, "c", "bob", SUB, "users/bob/#"), ACL_ALLOW);
    cr_assert_eq(fcheck(f, "c", "bob", SUB, "users/+/inbox"), ACL_NOMATCH);
    cr_assert_eq(fcheck(f, "c", NULL, SUB, "users//inbox"), ACL_NOMATCH,
                 "%%u without a user name never applies");
    cr_assert_eq(fcheck(f, "+", "bob", PUB, "devices/+/up"), ACL_NOMATCH,
                 "a client id with a wildcard never widens a pattern");
    cr_assert_eq(fcheck(f, "#", "bob", PUB, "devices/x/up"), ACL_NOMATCH);
    cr_assert_eq(fcheck(f, "c", "#", SUB, "users/a/b"), ACL_NOMATCH);
    acl_file_free(f);
}

Test(auth, acl_file_errors)
{
    char err[256] = "";
    acl_file_t *f = NULL;
    cr_assert_eq(acl_file_load(&f, write_tmp("user a\ntopics read x\n"), err,
                               sizeof(err)),
                 SL_EINVAL);
    cr_assert(strstr(err, ":2: expected user, topic or pattern, got 'topics'"),
              "%s", err);
    cr_assert_eq(acl_file_load(&f, write_tmp("topic read a/#/b\n"), err,
                               sizeof(err)),
                 SL_EINVAL);
    cr_assert(strstr(err, ":1: not a valid topic filter 'a/#/b'"), "%s", err);
    cr_assert_eq(acl_file_load(&f, write_tmp("topic read\n"), err,
                               sizeof(err)),
                 SL_OK, "a topic named 'read'");
    acl_file_free(f);
    cr_assert_eq(acl_file_load(&f, write_tmp("user\n"), err, sizeof(err)),
                 SL_EINVAL);
    cr_assert_eq(acl_file_load(&f, "/nonexistent/acl", err, sizeof(err)),
                 SL_EIO);
}

/* --- EMQX rule lists ------------------------------------------------------ */

static int parse_rules(acl_rules_t *r, const char *json)
{
    cJSON *j = cJSON_Parse(json);
    cr_assert_not_null(j, "%s", json);
    int rc = acl_rules_parse(r, j);
    cJSON_Delete(j);
    return rc;
}

static int rcheck(const acl_rules_t *r, authz_action_t act, const char *t,
                  int qos, bool retain)
{
    return acl_rules_check(r, "c1", "u1", act, t, strlen(t), qos, retain);
}

Test(auth, rules_emqx_format)
{
    acl_rules_t r;
    cr_assert_eq(
        parse_rules(&r,
                    "[{\"permission\":\"allow\",\"action\":\"publish\","
                    "\"topic\":\"t/${clientid}/#\",\"qos\":[0,1],"
                    "\"retain\":false},"
                    "{\"permission\":\"allow\",\"action\":\"subscribe\","
                    "\"topics\":[\"eq s/#\",\"in/${username}/+\"]},"
                    "{\"permission\":\"deny\",\"action\":\"all\","
                    "\"topic\":\"s/#\"},"
                    "{\"permission\":\"allow\",\"action\":\"all\","
                    "\"topic\":\"open/#\",\"retain\":\"all\"}]"),
        SL_OK);
    cr_assert_eq(r.n, 5, "topics expand into one rule each");
    cr_assert_eq(rcheck(&r, PUB, "t/c1/x", 1, false), ACL_ALLOW);
    cr_assert_eq(rcheck(&r, PUB, "t/c2/x", 1, false), ACL_NOMATCH);
    cr_assert_eq(rcheck(&r, PUB, "t/c1/x", 2, false), ACL_NOMATCH, "qos");
    cr_assert_eq(rcheck(&r, PUB, "t/c1/x", 0, true), ACL_NOMATCH, "retain");
    cr_assert_eq(rcheck(&r, SUB, "t/c1/x", 0, false), ACL_NOMATCH, "action");
    cr_assert_eq(rcheck(&r, SUB, "s/#", 1, false), ACL_ALLOW, "eq: literal");
    cr_assert_eq(rcheck(&r, SUB, "s/x", 1, false), ACL_DENY,
                 "eq does not match other filters");
    cr_assert_eq(rcheck(&r, SUB, "in/u1/a", 2, false), ACL_ALLOW);
    cr_assert_eq(rcheck(&r, SUB, "in/u2/a", 2, false), ACL_NOMATCH);
    cr_assert_eq(rcheck(&r, PUB, "open/x", 2, true), ACL_ALLOW);
    cr_assert_eq(rcheck(&r, SUB, "open/#", 2, true), ACL_ALLOW);
    cr_assert_eq(rcheck(&r, PUB, "other", 0, false), ACL_NOMATCH);
    cr_assert_eq(acl_rules_check(&r, "c1", NULL, SUB, "in//a", 5, 0, false),
                 ACL_NOMATCH, "${username} without a user name");
    acl_rules_fini(&r);
}

Test(auth, rules_invalid)
{
    acl_rules_t r;
    const char *bad[] = {
        "{}",
        "[1]",
        "[{\"action\":\"all\",\"topic\":\"a\"}]",
        "[{\"permission\":\"maybe\",\"action\":\"all\",\"topic\":\"a\"}]",
        "[{\"permission\":\"allow\",\"action\":\"read\",\"topic\":\"a\"}]",
        "[{\"permission\":\"allow\",\"action\":\"all\"}]",
        "[{\"permission\":\"allow\",\"action\":\"all\",\"topic\":\"a/#/b\"}]",
        "[{\"permission\":\"allow\",\"action\":\"all\",\"topics\":[]}]",
        "[{\"permission\":\"allow\",\"action\":\"all\",\"topic\":\"a\","
        "\"qos\":[3]}]",
        "[{\"permission\":\"allow\",\"action\":\"all\",\"topic\":\"a\","
        "\"qos\":1}]",
        "[{\"permission\":\"allow\",\"action\":\"all\",\"topic\":\"a\","
        "\"retain\":\"yes\"}]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(parse_rules(&r, bad[i]), SL_EMALFORMED, "%s", bad[i]);
    cr_assert_eq(parse_rules(&r, "[]"), SL_OK);
    cr_assert_eq(r.n, 0);
}

/* --- endpoint answers ----------------------------------------------------- */

static int reply(auth_reply_t *r, int status, const char *body)
{
    return auth_reply_parse(r, status, body, body ? strlen(body) : 0, true);
}

Test(auth, reply_statuses)
{
    auth_reply_t r;
    cr_assert_eq(reply(&r, 204, NULL), SL_OK);
    cr_assert_eq(r.result, AUTH_ALLOW);
    cr_assert_not(r.superuser);
    cr_assert_eq(reply(&r, 400, "{\"result\":\"allow\"}"), SL_OK);
    cr_assert_eq(r.result, AUTH_IGNORE, "4xx ignores, whatever the body");
    cr_assert_eq(reply(&r, 404, NULL), SL_OK);
    cr_assert_eq(r.result, AUTH_IGNORE);
    cr_assert_eq(reply(&r, 503, "oops"), SL_OK);
    cr_assert_eq(r.result, AUTH_IGNORE);
    cr_assert_eq(reply(&r, 302, NULL), SL_EMALFORMED);
    cr_assert_eq(reply(&r, 200, NULL), SL_EMALFORMED, "200 needs a body");
    cr_assert_eq(reply(&r, 200, "not json"), SL_EMALFORMED);
    cr_assert_eq(reply(&r, 200, "[]"), SL_EMALFORMED);
    cr_assert_eq(reply(&r, 200, "{}"), SL_EMALFORMED, "no result");
    cr_assert_eq(reply(&r, 200, "{\"result\":\"yes\"}"), SL_EMALFORMED);
    cr_assert_eq(reply(&r, 200, "{\"result\":true}"), SL_EMALFORMED);
    cr_assert_eq(reply(&r, 200, "{\"result\":\"allow\""), SL_EMALFORMED);
}

Test(auth, reply_bodies)
{
    auth_reply_t r;
    cr_assert_eq(reply(&r, 200, "{\"result\":\"deny\",\"is_superuser\":true}"),
                 SL_OK);
    cr_assert_eq(r.result, AUTH_DENY);
    cr_assert_not(r.superuser, "a denied client is nobody");
    cr_assert_eq(reply(&r, 200, "{\"result\":\"ignore\"}"), SL_OK);
    cr_assert_eq(r.result, AUTH_IGNORE);
    const char *supers[] = {"true", "\"true\"", "1"};
    for (size_t i = 0; i < 3; i++) {
        char body[96];
        snprintf(body, sizeof(body),
                 "{\"result\":\"allow\",\"is_superuser\":%s}", supers[i]);
        cr_assert_eq(reply(&r, 200, body), SL_OK);
        cr_assert(r.superuser, "%s", body);
    }
    cr_assert_eq(reply(&r, 200,
                       "{\"result\":\"allow\",\"is_superuser\":false,"
                       "\"client_attrs\":{\"role\":\"x\"},"
                       "\"expire_at\":1767225600,\"acl\":["
                       "{\"permission\":\"allow\",\"action\":\"all\","
                       "\"topic\":\"#\"}]}"),
                 SL_OK);
    cr_assert_eq(r.result, AUTH_ALLOW);
    cr_assert_not(r.superuser);
    cr_assert_eq(r.expire_at, 1767225600);
    cr_assert_eq(r.acl.n, 1);
    auth_reply_fini(&r);
    cr_assert_eq(reply(&r, 200,
                       "{\"result\":\"allow\",\"acl\":[{\"permission\":1}]}"),
                 SL_EMALFORMED, "a bad acl refuses the answer");
    cr_assert_eq(reply(&r, 200, "{\"result\":\"allow\",\"expire_at\":\"x\"}"),
                 SL_EMALFORMED);
    cr_assert_eq(auth_reply_parse(&r, 200, "{\"result\":\"allow\"} trailing",
                                  19, true),
                 SL_OK, "the body length is respected");
}

/* --- requests ------------------------------------------------------------- */

static const auth_client_t client1 = {
    .clientid = "c1",
    .username = "u1",
    .password = (const uint8_t *)"pw\"1",
    .password_len = 4,
    .has_password = true,
    .peer_host = "127.0.0.1",
    .peer_port = 5555,
    .proto_version = 5,
    .listener = "tcp",
};

Test(auth, request_bodies)
{
    cJSON *o = auth_request_connect(&client1);
    char *s = cJSON_PrintUnformatted(o);
    cr_assert_str_eq(s, "{\"clientid\":\"c1\",\"username\":\"u1\","
                        "\"password\":\"pw\\\"1\",\"peerhost\":\"127.0.0.1\","
                        "\"peerport\":5555,\"proto_ver\":5,"
                        "\"listener\":\"tcp\",\"cert_subject\":\"\","
                        "\"cert_common_name\":\"\"}");
    free(s);
    char *q = auth_query_string("/auth", o);
    cr_assert_str_eq(q, "/auth?clientid=c1&username=u1&password=pw%221&"
                        "peerhost=127.0.0.1&peerport=5555&proto_ver=5&"
                        "listener=tcp&cert_subject=&cert_common_name=");
    free(q);
    q = auth_query_string("/auth?key=k", o);
    cr_assert(strncmp(q, "/auth?key=k&clientid=c1&", 24) == 0, "%s", q);
    free(q);
    cJSON_Delete(o);

    o = auth_request_acl(&client1, AUTHZ_SUBSCRIBE, "a/+/bXX", 5, 1, false);
    s = cJSON_PrintUnformatted(o);
    cr_assert_str_eq(s, "{\"action\":\"subscribe\",\"topic\":\"a/+/b\","
                        "\"qos\":1,\"retain\":false,\"clientid\":\"c1\","
                        "\"username\":\"u1\",\"peerhost\":\"127.0.0.1\"}");
    free(s);
    cJSON_Delete(o);
}

Test(auth, webhook_bodies)
{
    char *s = hooks_event_json("message.publish", "n1", "c1", NULL, "a/b",
                               "hi", 2, 1, true, 1234);
    cr_assert_str_eq(s, "{\"event\":\"message.publish\",\"clientid\":\"c1\","
                        "\"username\":null,\"timestamp\":1234,\"node\":\"n1\","
                        "\"topic\":\"a/b\",\"qos\":1,\"retain\":true,"
                        "\"payload\":\"hi\",\"payload_encoding\":\"plain\"}");
    free(s);
    s = hooks_event_json("message.publish", NULL, "c1", "u", "a", "\0\xff", 2,
                         0, false, 1);
    cr_assert(strstr(s, "\"payload\":\"AP8=\",\"payload_encoding\":\"base64\""),
              "%s", s);
    free(s);
    s = hooks_event_json("session.subscribed", NULL, "c1", "u", "a/#", NULL,
                         0, 2, false, 1);
    cr_assert(strstr(s, "\"topic\":\"a/#\",\"qos\":2}"), "%s", s);
    free(s);
    s = hooks_event_json("session.unsubscribed", NULL, "c1", "u", "a/#",
                         NULL, 0, 0, false, 1);
    cr_assert(strstr(s, "\"topic\":\"a/#\"}"), "%s", s);
    free(s);
    s = hooks_event_json("client.connected", NULL, "c1", "u", NULL, NULL, 0, 0,
                         false, 7);
    cr_assert_str_eq(s, "{\"event\":\"client.connected\",\"clientid\":\"c1\","
                        "\"username\":\"u\",\"timestamp\":7}");
    free(s);
    cr_assert_null(hooks_event_json("client.exploded", NULL, "c", NULL, NULL,
                                    NULL, 0, 0, false, 1));
}

/* --- configuration keys --------------------------------------------------- */

Test(auth, conf_keys)
{
    sl_conf_t c;
    char err[256];
    conf_init(&c);
    cr_assert_eq(c.auth_http_method, AUTH_METHOD_POST);
    cr_assert_eq(c.auth_http_timeout, 5000);
    cr_assert_eq(c.auth_failure_policy, AUTH_POLICY_DENY);
    cr_assert_eq(c.auth_cache_ttl, 60);
    cr_assert_eq(c.auth_cache_size, 1000);
    cr_assert_eq(c.allow_anonymous, ANON_AUTO);
    cr_assert_eq(c.acl_deny_action_v3, ACL_DENY_DROP);
    cr_assert(c.auth_tls_verify);
    cr_assert_str_eq(c.webhook_topics, "#");
    cr_assert(strstr(c.webhook_events, "message.publish"));
    cr_assert_eq(c.webhook_queue_max, 10000);
    cr_assert_eq(c.webhook_retries, 3);
    cr_assert_null(c.auth_http_url);

    const char *good[][2] = {
        {"auth_http_url", "https://auth:8443/mqtt?x=1"},
        {"acl_http_url", "http://[::1]/acl"},
        {"auth_http_headers", "Authorization: Bearer x; X-Y: 1"},
        {"webhook_events", "client.connected, message.publish"},
        {"webhook_topics", "a/#, +/b"},
        {"allow_anonymous", "false"},
        {"acl_deny_action_v3", "disconnect"},
        {"auth_failure_policy", "ignore"},
        {"auth_http_method", "GET"},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        cr_assert_eq(conf_set(&c, good[i][0], good[i][1], err, sizeof(err)),
                     SL_OK, "%s", err);
    const char *bad[][2] = {
        {"auth_http_url", "ftp://x/"},
        {"auth_http_url", "http://"},
        {"auth_http_headers", "no colon"},
        {"auth_http_headers", "Bad Name: v"},
        {"webhook_events", "client.connected,client.exploded"},
        {"webhook_topics", "a/#/b"},
        {"webhook_topics", "a,,b"},
        {"allow_anonymous", "maybe"},
        {"auth_http_timeout", "0"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(conf_set(&c, bad[i][0], bad[i][1], err, sizeof(err)),
                     SL_EINVAL, "%s %s", bad[i][0], bad[i][1]);
    cr_assert_eq(conf_set(&c, "auth_http_url", "", err, sizeof(err)), SL_OK,
                 "an empty value unsets");
    cr_assert_null(c.auth_http_url);
    conf_fini(&c);
}

/* --- URLs and headers ----------------------------------------------------- */

Test(auth, url_parse)
{
    httpc_url_t u;
    cr_assert_eq(httpc_url_parse(&u, "http://auth.local/mqtt/auth?x=1"),
                 SL_OK);
    cr_assert_not(u.tls);
    cr_assert_str_eq(u.host, "auth.local");
    cr_assert_eq(u.port, 80);
    cr_assert_str_eq(u.path, "/mqtt/auth?x=1");
    httpc_url_fini(&u);
    cr_assert_eq(httpc_url_parse(&u, "HTTPS://[::1]:8443"), SL_OK);
    cr_assert(u.tls);
    cr_assert_str_eq(u.host, "::1");
    cr_assert_eq(u.port, 8443);
    cr_assert_str_eq(u.path, "/");
    httpc_url_fini(&u);
    cr_assert_eq(httpc_url_parse(&u, "https://h"), SL_OK);
    cr_assert_eq(u.port, 443);
    httpc_url_fini(&u);
    cr_assert_eq(httpc_url_parse(&u, "ftp://h/x"), SL_EINVAL);
    cr_assert_eq(httpc_url_parse(&u, "http:///x"), SL_EINVAL);
    cr_assert_eq(httpc_url_parse(&u, "http://u:p@h/x"), SL_EINVAL);
    cr_assert_eq(httpc_url_parse(&u, "http://h:0/"), SL_EINVAL);
    cr_assert_eq(httpc_url_parse(&u, "h/x"), SL_EINVAL);
}

Test(auth, headers_parse)
{
    httpc_headers_t h;
    cr_assert_eq(httpc_headers_parse(&h, " Authorization: Bearer a:b ;X-K:v;"),
                 SL_OK);
    cr_assert_eq(h.n, 2);
    cr_assert_str_eq(h.names[0], "Authorization");
    cr_assert_str_eq(h.values[0], "Bearer a:b");
    cr_assert_str_eq(h.names[1], "X-K");
    cr_assert_str_eq(h.values[1], "v");
    httpc_headers_fini(&h);
    cr_assert_eq(httpc_headers_parse(&h, NULL), SL_OK);
    cr_assert_eq(h.n, 0);
    cr_assert_eq(httpc_headers_parse(&h, "novalue"), SL_EINVAL);
    cr_assert_eq(httpc_headers_parse(&h, ": v"), SL_EINVAL);
}

/* --- the module on a loop, against an evhttp server ------------------------
 *
 * The server answers by the user name in an auth request and by the first
 * topic level in an ACL request (see srv_answer), counts requests and
 * connections, and can hold an answer (slow) or never send one. */

#define MAX_HELD 256

/* An answer not sent yet: later (ev set) or never (ev NULL). */
typedef struct {
    struct evhttp_request *req;
    struct event *ev;
    int status;
    const char *body;
} held_t;

typedef struct srv {
    struct event_base *base;
    struct evhttp *http;
    int port;
    int auth_calls, acl_calls, hook_calls;
    int hook_failures; /* answer 500 to this many webhook POSTs first */
    int peer_ports[MAX_HELD]; /* one per client connection seen */
    int conns;
    held_t held[MAX_HELD];
    char last_body[2048];
    char last_uri[2048];
    char last_auth_header[128];
} srv_t;

static void send_answer(struct evhttp_request *req, int status,
                        const char *body)
{
    struct evbuffer *b = evbuffer_new();
    if (body)
        evbuffer_add(b, body, strlen(body));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    evhttp_send_reply(req, status, "X", b);
    evbuffer_free(b);
}

static void held_send(held_t *h)
{
    if (h->ev)
        event_free(h->ev);
    send_answer(h->req, h->status, h->body); /* frees a detached request */
    memset(h, 0, sizeof(*h));
}

static void delayed_cb(evutil_socket_t fd, short what, void *arg)
{
    held_send(arg);
}

/* Answer after ms, or never (ms < 0: until srv_stop). */
static void answer_later(srv_t *s, struct evhttp_request *req, int ms,
                         int status, const char *body)
{
    held_t *h = NULL;
    for (int i = 0; i < MAX_HELD && !h; i++)
        if (!s->held[i].req)
            h = &s->held[i];
    cr_assert_not_null(h);
    *h = (held_t){req, NULL, status, body};
    if (ms < 0)
        return;
    h->ev = evtimer_new(s->base, delayed_cb, h);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(h->ev, &tv);
}

static void count_conn(srv_t *s, struct evhttp_request *req)
{
    char *addr;
    ev_uint16_t port;
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &addr,
                               &port);
    for (int i = 0; i < s->conns; i++)
        if (s->peer_ports[i] == port)
            return;
    if (s->conns < MAX_HELD)
        s->peer_ports[s->conns++] = port;
}

static const char *json_str(const cJSON *o, const char *k)
{
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(o, k));
    return v ? v : "";
}

/* Auth: by user name. */
static void auth_answer(srv_t *s, struct evhttp_request *req, const cJSON *o)
{
    const char *u = json_str(o, "username");
    s->auth_calls++;
    if (!strcmp(u, "allow") || !strcmp(u, "alice"))
        send_answer(req, 200, "{\"result\":\"allow\"}");
    else if (!strcmp(u, "super"))
        send_answer(req, 200, "{\"result\":\"allow\",\"is_superuser\":true}");
    else if (!strcmp(u, "rules"))
        send_answer(req, 200,
                    "{\"result\":\"allow\",\"acl\":["
                    "{\"permission\":\"allow\",\"action\":\"publish\","
                    "\"topic\":\"t/${clientid}/#\"},"
                    "{\"permission\":\"deny\",\"action\":\"all\","
                    "\"topic\":\"t/#\"}]}");
    else if (!strcmp(u, "deny"))
        send_answer(req, 200, "{\"result\":\"deny\"}");
    else if (!strcmp(u, "ignore"))
        send_answer(req, 200, "{\"result\":\"ignore\"}");
    else if (!strcmp(u, "nocontent"))
        send_answer(req, 204, NULL);
    else if (!strcmp(u, "e500"))
        send_answer(req, 500, "{\"result\":\"allow\"}");
    else if (!strcmp(u, "garbage"))
        send_answer(req, 200, "<html>");
    else if (!strcmp(u, "expired"))
        send_answer(req, 200, "{\"result\":\"allow\",\"expire_at\":1000}");
    else if (!strcmp(u, "slow"))
        answer_later(s, req, 300, 200, "{\"result\":\"allow\"}");
    else
        send_answer(req, 404, NULL);
}

/* ACL: by the topic's first level. */
static void acl_answer(srv_t *s, struct evhttp_request *req, const cJSON *o)
{
    const char *t = json_str(o, "topic");
    s->acl_calls++;
    if (!strncmp(t, "ok/", 3))
        send_answer(req, 200, "{\"result\":\"allow\"}");
    else if (!strncmp(t, "no/", 3))
        send_answer(req, 200, "{\"result\":\"deny\"}");
    else if (!strncmp(t, "ign/", 4))
        send_answer(req, 200, "{\"result\":\"ignore\"}");
    else if (!strncmp(t, "slow/", 5))
        answer_later(s, req, 300, 200, "{\"result\":\"allow\"}");
    else if (!strncmp(t, "bad/", 4))
        send_answer(req, 200, "{");
    else
        send_answer(req, 204, NULL);
}

static void srv_cb(struct evhttp_request *req, void *arg)
{
    srv_t *s = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    if (n >= sizeof(s->last_body))
        n = sizeof(s->last_body) - 1;
    evbuffer_copyout(in, s->last_body, n);
    s->last_body[n] = '\0';
    snprintf(s->last_uri, sizeof(s->last_uri), "%s",
             evhttp_request_get_uri(req));
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req),
                                       "Authorization");
    snprintf(s->last_auth_header, sizeof(s->last_auth_header), "%s",
             h ? h : "");
    count_conn(s, req);
    cJSON *o = cJSON_Parse(s->last_body);
    if (strncmp(s->last_uri, "/auth", 5) == 0)
        auth_answer(s, req, o);
    else if (strncmp(s->last_uri, "/acl", 4) == 0)
        acl_answer(s, req, o);
    else if (strncmp(s->last_uri, "/hook", 5) == 0) {
        s->hook_calls++;
        send_answer(req, s->hook_failures-- > 0 ? 500 : 200, NULL);
    } else if (strncmp(s->last_uri, "/never", 6) == 0) {
        answer_later(s, req, -1, 200, "{\"result\":\"allow\"}");
    } else
        send_answer(req, 404, NULL);
    cJSON_Delete(o);
}

static void srv_start(srv_t *s, struct event_base *base)
{
    memset(s, 0, sizeof(*s));
    s->base = base;
    s->http = evhttp_new(base);
    evhttp_set_gencb(s->http, srv_cb, s);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
    struct evhttp_bound_socket *bs =
        evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
    cr_assert_not_null(bs);
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sa, &len);
    s->port = ntohs(sa.sin_port);
}

/* A port nobody listens on. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    socklen_t len = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

typedef struct {
    struct event_base *base;
    srv_t srv;
    sl_conf_t conf;
    auth_t *auth;
    int pending;
} env_t;

static env_t E;

static void env_set(const char *key, const char *value)
{
    char err[256];
    cr_assert_eq(conf_set(&E.conf, key, value, err, sizeof(err)), SL_OK, "%s",
                 err);
}

static void env_url(const char *key, const char *path)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", E.srv.port, path);
    env_set(key, url);
}

static void env_init(void)
{
    sl_log_level = SL_LOG_NONE;
    E.base = event_base_new();
    srv_start(&E.srv, E.base);
    conf_init(&E.conf);
    E.auth = NULL;
    E.pending = 0;
}

static void env_fini(void)
{
    auth_free(E.auth);
    for (int i = 0; i < MAX_HELD; i++)
        if (E.srv.held[i].req)
            held_send(&E.srv.held[i]);
    evhttp_free(E.srv.http);
    conf_fini(&E.conf);
    event_base_free(E.base);
    cleanup_tmp();
}

static void env_start(void)
{
    cr_assert_eq(auth_new(&E.auth, E.base, &E.conf), SL_OK);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(E.base);
}

/* Run the loop until nothing is pending (or ms pass). */
static void run_until_done(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    struct event *guard = evtimer_new(E.base, stop_cb, NULL);
    evtimer_add(guard, &tv);
    while (E.pending > 0 && evtimer_pending(guard, NULL))
        event_base_loop(E.base, EVLOOP_ONCE);
    event_free(guard);
}

static void run_for(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(E.base, &tv);
    event_base_dispatch(E.base);
}

typedef struct {
    bool done;
    auth_result_t r;
    auth_identity_t *id;
} conn_result_t;

static void connect_cb(void *arg, auth_result_t r, auth_identity_t *id)
{
    conn_result_t *c = arg;
    cr_assert_not(c->done, "callback ran twice");
    c->done = true;
    c->r = r;
    c->id = id;
    E.pending--;
}

/* Authenticate user/password and wait for the answer. */
static conn_result_t try_connect(const char *user, const char *pw)
{
    conn_result_t res = {0};
    auth_client_t c = client1;
    c.username = user;
    c.password = u8(pw ? pw : "");
    c.password_len = pw ? strlen(pw) : 0;
    c.has_password = pw != NULL;
    E.pending++;
    auth_connect(E.auth, &c, connect_cb, &res);
    cr_assert_not(res.done, "auth_connect answered inside the call");
    run_until_done(5000);
    cr_assert(res.done, "no answer for user %s", user ? user : "(none)");
    cr_assert_eq(res.r == AUTH_ALLOW, res.id != NULL);
    return res;
}

static auth_result_t connect_result(const char *user, const char *pw)
{
    conn_result_t r = try_connect(user, pw);
    auth_identity_free(r.id);
    return r.r;
}

TestSuite(auth_loop, .init = env_init, .fini = env_fini, .timeout = 30);

Test(auth_loop, nothing_configured_allows_all)
{
    env_start();
    cr_assert_not(auth_enabled(E.auth));
    conn_result_t r = try_connect(NULL, NULL);
    cr_assert_eq(r.r, AUTH_ALLOW);
    cr_assert_not(auth_identity_superuser(r.id));
    cr_assert_eq(auth_check(E.auth, r.id, &client1, PUB, "a/b", 3, 0, false,
                            NULL, NULL),
                 1);
    cr_assert_eq(auth_stats(E.auth)->cache_misses, 0, "no rule, no cache");
    auth_identity_free(r.id);
}

Test(auth_loop, password_file_chain)
{
    env_set("password_file", write_tmp(passwd_text));
    env_start();
    cr_assert(auth_enabled(E.auth));
    cr_assert_eq(connect_result("alice", "secret"), AUTH_ALLOW);
    cr_assert_eq(connect_result("alice", "nope"), AUTH_DENY);
    cr_assert_eq(connect_result("alice", NULL), AUTH_DENY);
    cr_assert_eq(connect_result("empty", ""), AUTH_ALLOW, "empty password");
    cr_assert_eq(connect_result("empty", NULL), AUTH_DENY);
    cr_assert_eq(connect_result("nobody", "x"), AUTH_DENY,
                 "unknown: allow_anonymous auto is false here");
    cr_assert_eq(connect_result(NULL, NULL), AUTH_DENY);
    const auth_stats_t *st = auth_stats(E.auth);
    cr_assert_eq(st->connect_allowed, 2);
    cr_assert_eq(st->connect_denied, 5);
}

Test(auth_loop, password_file_with_anonymous)
{
    env_set("password_file", write_tmp(passwd_text));
    env_set("allow_anonymous", "true");
    env_start();
    cr_assert_eq(connect_result(NULL, NULL), AUTH_ALLOW);
    cr_assert_eq(connect_result("nobody", "x"), AUTH_ALLOW,
                 "a user no authenticator knows is anonymous");
    cr_assert_eq(connect_result("alice", "nope"), AUTH_DENY);
}

Test(auth_loop, http_answers)
{
    env_url("auth_http_url", "/auth");
    env_set("auth_http_headers", "Authorization: Bearer t0k");
    env_start();
    conn_result_t r = try_connect("super", "pw");
    cr_assert_eq(r.r, AUTH_ALLOW);
    cr_assert(auth_identity_superuser(r.id));
    cr_assert_eq(auth_check(E.auth, r.id, &client1, SUB, "#", 1, 2, false,
                            NULL, NULL),
                 1, "a superuser may do everything");
    auth_identity_free(r.id);
    cr_assert_str_eq(E.srv.last_auth_header, "Bearer t0k");
    cr_assert(strstr(E.srv.last_body, "\"username\":\"super\""));
    cr_assert(strstr(E.srv.last_body, "\"password\":\"pw\""));
    cr_assert(strstr(E.srv.last_body, "\"proto_ver\":5"));

    cr_assert_eq(connect_result("allow", "x"), AUTH_ALLOW);
    cr_assert_eq(connect_result("nocontent", "x"), AUTH_ALLOW);
    cr_assert_eq(connect_result("deny", "x"), AUTH_DENY);
    cr_assert_eq(connect_result("ignore", "x"), AUTH_DENY,
                 "all ignore, allow_anonymous auto = false");
    cr_assert_eq(connect_result("e500", "x"), AUTH_DENY, "5xx = ignore");
    cr_assert_eq(connect_result("unknown", "x"), AUTH_DENY, "404 = ignore");
    cr_assert_eq(connect_result("expired", "x"), AUTH_DENY);
    cr_assert_eq(auth_stats(E.auth)->http_failures, 0);
    cr_assert_eq(E.srv.auth_calls, 8);
    cr_assert_eq(E.srv.conns, 1, "one keep-alive connection for all");
}

Test(auth_loop, http_ignore_then_anonymous)
{
    env_url("auth_http_url", "/auth");
    env_set("allow_anonymous", "true");
    env_start();
    cr_assert_eq(connect_result("ignore", "x"), AUTH_ALLOW);
    cr_assert_eq(connect_result("e500", "x"), AUTH_ALLOW);
    cr_assert_eq(connect_result("deny", "x"), AUTH_DENY);
}

Test(auth_loop, password_file_before_http)
{
    env_set("password_file", write_tmp(passwd_text));
    env_url("auth_http_url", "/auth");
    env_start();
    cr_assert_eq(connect_result("alice", "secret"), AUTH_ALLOW);
    cr_assert_eq(E.srv.auth_calls, 0, "decided by the file");
    cr_assert_eq(connect_result("alice", "wrong"), AUTH_DENY);
    cr_assert_eq(E.srv.auth_calls, 0, "a file deny is final");
    cr_assert_eq(connect_result("allow", "x"), AUTH_ALLOW);
    cr_assert_eq(E.srv.auth_calls, 1, "unknown to the file: asked");
}

Test(auth_loop, http_get_method)
{
    env_url("auth_http_url", "/auth?k=1");
    env_set("auth_http_method", "get");
    env_start();
    cr_assert_eq(connect_result("alice", "p w"), AUTH_DENY,
                 "the test server reads JSON bodies only: 404 -> ignore");
    const char *want = "/auth?k=1&clientid=c1&username=alice&password=p%20w&";
    cr_assert(strncmp(E.srv.last_uri, want, strlen(want)) == 0, "%s",
              E.srv.last_uri);
    cr_assert_str_eq(E.srv.last_body, "");
}

static void failure_policy_case(const char *policy, const char *anon,
                                auth_result_t want)
{
    env_set("auth_failure_policy", policy);
    if (anon)
        env_set("allow_anonymous", anon);
    env_start();
    cr_assert_eq(connect_result("garbage", "x"), want, "garbage, %s", policy);
    cr_assert_eq(auth_stats(E.auth)->http_failures, 1);
}

Test(auth_loop, policy_on_garbage_deny)
{
    env_url("auth_http_url", "/auth");
    failure_policy_case("deny", "true", AUTH_DENY);
}

Test(auth_loop, policy_on_garbage_allow)
{
    env_url("auth_http_url", "/auth");
    failure_policy_case("allow", NULL, AUTH_ALLOW);
}

Test(auth_loop, policy_on_garbage_ignore)
{
    env_url("auth_http_url", "/auth");
    failure_policy_case("ignore", "true", AUTH_ALLOW);
}

Test(auth_loop, policy_on_timeout)
{
    env_url("auth_http_url", "/never");
    env_set("auth_http_timeout", "200");
    env_set("auth_failure_policy", "allow");
    env_start();
    cr_assert_eq(connect_result("alice", "x"), AUTH_ALLOW);
    cr_assert_eq(auth_stats(E.auth)->http_timeouts, 1);
    env_fini();
    env_init();
    env_url("auth_http_url", "/auth");
    env_set("auth_http_timeout", "100");
    env_start();
    cr_assert_eq(connect_result("slow", "x"), AUTH_DENY, "policy deny");
    cr_assert_eq(auth_stats(E.auth)->http_timeouts, 1);
    run_for(400); /* the late answer finds nobody */
    cr_assert_eq(connect_result("alice", "x"), AUTH_ALLOW,
                 "the pool recovers");
}

Test(auth_loop, policy_on_connection_refused)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/auth", dead_port());
    env_set("auth_http_url", url);
    env_set("auth_failure_policy", "allow");
    env_start();
    cr_assert_eq(connect_result("alice", "x"), AUTH_ALLOW);
    cr_assert_eq(connect_result("bob", "x"), AUTH_ALLOW);
    cr_assert_eq(auth_stats(E.auth)->http_failures, 2);
    cr_assert_eq(auth_stats(E.auth)->http_timeouts, 0);
}

Test(auth_loop, keep_alive_and_pool_bound)
{
    env_url("auth_http_url", "/auth");
    env_start();
    for (int i = 0; i < 5; i++)
        cr_assert_eq(connect_result("allow", "x"), AUTH_ALLOW);
    cr_assert_eq(E.srv.conns, 1, "one connection served all five");
    conn_result_t res[100];
    memset(res, 0, sizeof(res));
    auth_client_t c = client1;
    c.username = "slow";
    for (int i = 0; i < 100; i++) {
        E.pending++;
        auth_connect(E.auth, &c, connect_cb, &res[i]);
    }
    run_until_done(10000);
    for (int i = 0; i < 100; i++) {
        cr_assert(res[i].done);
        cr_assert_eq(res[i].r, AUTH_ALLOW, "request %d", i);
        auth_identity_free(res[i].id);
    }
    cr_assert_eq(E.srv.auth_calls, 105);
    cr_assert_leq(E.srv.conns, 16, "at most 16 connections per endpoint");
    cr_assert_geq(E.srv.conns, 2, "concurrent requests use the pool");
}

Test(auth_loop, rules_from_connect_and_cache)
{
    env_url("auth_http_url", "/auth");
    env_url("acl_http_url", "/acl");
    env_start();
    conn_result_t r = try_connect("rules", "x");
    cr_assert_eq(r.r, AUTH_ALLOW);
    auth_t *a = E.auth;
    cr_assert_eq(auth_check(a, r.id, &client1, PUB, "t/c1/x", 6, 1, false,
                            NULL, NULL),
                 1);
    cr_assert_eq(auth_check(a, r.id, &client1, PUB, "t/c2/x", 6, 1, false,
                            NULL, NULL),
                 0);
    cr_assert_eq(auth_check(a, r.id, &client1, SUB, "t/c1/x", 6, 1, false,
                            NULL, NULL),
                 0, "subscribe falls to the deny rule");
    cr_assert_eq(E.srv.acl_calls, 0, "the rules decided");
    cr_assert_eq(auth_check(a, r.id, &client1, PUB, "t/c1/x", 6, 1, false,
                            NULL, NULL),
                 1);
    cr_assert_eq(auth_stats(a)->cache_hits, 1);
    auth_identity_free(r.id);
}

typedef struct {
    int calls;
    bool allowed;
} check_result_t;

static void check_cb(void *arg, bool allowed)
{
    check_result_t *c = arg;
    c->calls++;
    c->allowed = allowed;
    E.pending--;
}

/* auth_check that may go to acl_http_url; waits for the answer. */
static int check_wait(auth_identity_t *id, authz_action_t act,
                      const char *topic, bool *went_http)
{
    check_result_t res = {0};
    E.pending++;
    int r = auth_check(E.auth, id, &client1, act, topic, strlen(topic), 1,
                       false, check_cb, &res);
    *went_http = r < 0;
    if (r >= 0) {
        E.pending--;
        return r;
    }
    run_until_done(5000);
    cr_assert_eq(res.calls, 1, "callback runs exactly once");
    return res.allowed;
}

Test(auth_loop, acl_http_and_cache)
{
    env_url("acl_http_url", "/acl");
    env_set("auth_cache_ttl", "1");
    env_start();
    conn_result_t r = try_connect("u", "p");
    cr_assert_eq(r.r, AUTH_ALLOW, "no authenticator: anonymous allowed");
    bool http;
    cr_assert_eq(check_wait(r.id, PUB, "ok/1", &http), 1);
    cr_assert(http);
    cr_assert(strstr(E.srv.last_body, "\"action\":\"publish\""));
    cr_assert_eq(check_wait(r.id, PUB, "ok/1", &http), 1);
    cr_assert_not(http, "cached");
    cr_assert_eq(E.srv.acl_calls, 1, "one request for both checks");
    cr_assert_eq(check_wait(r.id, SUB, "ok/1", &http), 1);
    cr_assert(http, "another action: another entry");
    cr_assert_eq(check_wait(r.id, PUB, "no/1", &http), 0);
    cr_assert_eq(check_wait(r.id, PUB, "ign/1", &http), 0,
                 "ignore: nothing decided, acl_http_url set: deny");
    cr_assert_eq(check_wait(r.id, PUB, "x/1", &http), 1, "204");
    cr_assert_eq(check_wait(r.id, PUB, "bad/1", &http), 0, "policy deny");
    cr_assert_eq(check_wait(r.id, PUB, "bad/1", &http), 0);
    cr_assert(http, "failures are not cached");
    int calls = E.srv.acl_calls;
    run_for(1100);
    cr_assert_eq(check_wait(r.id, PUB, "ok/1", &http), 1);
    cr_assert(http, "expired after auth_cache_ttl");
    cr_assert_eq(E.srv.acl_calls, calls + 1);
    auth_identity_free(r.id);
}

Test(auth_loop, cache_size_bound)
{
    env_url("acl_http_url", "/acl");
    env_set("auth_cache_size", "2");
    env_start();
    conn_result_t r = try_connect("u", "p");
    bool http;
    check_wait(r.id, PUB, "ok/1", &http);
    check_wait(r.id, PUB, "ok/2", &http);
    check_wait(r.id, PUB, "ok/3", &http); /* drops ok/1 */
    check_wait(r.id, PUB, "ok/3", &http);
    cr_assert_not(http);
    check_wait(r.id, PUB, "ok/2", &http);
    cr_assert_not(http);
    check_wait(r.id, PUB, "ok/1", &http);
    cr_assert(http, "the oldest entry was dropped");
    auth_identity_free(r.id);
}

Test(auth_loop, identity_freed_while_check_pending)
{
    env_url("acl_http_url", "/acl");
    env_start();
    conn_result_t r = try_connect("u", "p");
    check_result_t res = {0};
    E.pending++;
    cr_assert_eq(auth_check(E.auth, r.id, &client1, PUB, "slow/x", 6, 0, false,
                            check_cb, &res),
                 -1);
    auth_identity_free(r.id);
    run_until_done(5000);
    cr_assert_eq(res.calls, 1);
    cr_assert(res.allowed);
}

Test(auth_loop, acl_file_then_http)
{
    env_set("acl_file", write_tmp("user u\ntopic write mine/#\n"
                                  "topic deny ok/blocked\n"));
    env_url("acl_http_url", "/acl");
    env_start();
    conn_result_t r = try_connect("u", "p");
    auth_client_t c = client1;
    c.username = "u";
    cr_assert_eq(auth_check(E.auth, r.id, &c, PUB, "mine/a", 6, 0, false, NULL,
                            NULL),
                 1);
    cr_assert_eq(auth_check(E.auth, r.id, &c, PUB, "ok/blocked", 10, 0, false,
                            NULL, NULL),
                 0);
    cr_assert_eq(E.srv.acl_calls, 0);
    auth_identity_free(r.id);
}

Test(auth_loop, acl_file_alone_denies_the_rest)
{
    env_set("acl_file", write_tmp("topic readwrite open/#\n"));
    env_start();
    cr_assert_eq(auth_check(E.auth, NULL, &(auth_client_t){.clientid = "x"},
                            PUB, "open/1", 6, 0, false, NULL, NULL),
                 1);
    cr_assert_eq(auth_check(E.auth, NULL, &(auth_client_t){.clientid = "x"},
                            PUB, "closed", 6, 0, false, NULL, NULL),
                 0);
}

Test(auth_loop, free_with_requests_pending)
{
    env_url("auth_http_url", "/never");
    env_url("acl_http_url", "/never");
    env_start();
    conn_result_t a = {0}, b = {0}, c = {0};
    check_result_t k = {0};
    E.pending += 4;
    auth_connect(E.auth, &client1, connect_cb, &a);
    auth_connect(E.auth, &client1, connect_cb, &b);
    cr_assert_eq(auth_check(E.auth, NULL, &client1, PUB, "x", 1, 0, false,
                            check_cb, &k),
                 -1);
    run_for(50); /* now all waiting for /never */
    cr_assert_not(a.done || b.done || k.calls);
    auth_connect(E.auth, &client1, connect_cb, &c); /* not even started */
    auth_free(E.auth);
    E.auth = NULL;
    cr_assert(a.done && b.done && c.done);
    cr_assert_eq(a.r, AUTH_DENY);
    cr_assert_eq(b.r, AUTH_DENY);
    cr_assert_eq(c.r, AUTH_DENY);
    cr_assert_null(b.id);
    cr_assert_eq(k.calls, 1);
    cr_assert_not(k.allowed);
    cr_assert_eq(E.pending, 0);
}

Test(auth_loop, webhooks_with_retries)
{
    env_url("webhook_url", "/hook");
    env_set("webhook_events", "client.connected, message.publish");
    env_set("webhook_topics", "a/#");
    env_set("webhook_retries", "2");
    env_start();
    cr_assert_not(auth_enabled(E.auth), "webhooks alone are not auth");
    cr_assert(hook_wanted(E.auth, "client.connected"));
    cr_assert_not(hook_wanted(E.auth, "client.disconnected"));
    E.srv.hook_failures = 1;
    hook_event(E.auth, "client.connected", "c1", "u", NULL, NULL, 0, 0, false);
    hook_event(E.auth, "client.disconnected", "c1", "u", NULL, NULL, 0, 0,
               false);
    hook_event(E.auth, "message.publish", "c1", "u", "b/1", "x", 1, 0, false);
    hook_event(E.auth, "message.publish", "c1", "u", "a/1", "x", 1, 0, false);
    const auth_stats_t *st = auth_stats(E.auth);
    cr_assert_eq(st->hooks_queued, 2);
    run_for(1500);
    cr_assert_eq(E.srv.hook_calls, 3, "one 500, then a retry after 1 s");
    cr_assert_eq(st->hooks_sent, 2);
    cr_assert_eq(st->hooks_retried, 1);
    cr_assert_eq(st->hooks_queued, 0);
}

Test(auth_loop, webhooks_queue_bound_and_give_up)
{
    env_url("webhook_url", "/hook");
    env_set("webhook_queue_max", "3");
    env_set("webhook_retries", "0");
    env_start();
    E.srv.hook_failures = 100;
    for (int i = 0; i < 5; i++)
        hook_event(E.auth, "client.connected", "c", NULL, NULL, NULL, 0, 0,
                   false);
    const auth_stats_t *st = auth_stats(E.auth);
    cr_assert_eq(st->hooks_dropped, 2);
    run_for(300);
    cr_assert_eq(st->hooks_failed, 3);
    cr_assert_eq(st->hooks_queued, 0);
}

/* --- https ---------------------------------------------------------------- */

static char tls_dir[64];
static SSL_CTX *tls_srv_ctx;

static struct bufferevent *tls_bevcb(struct event_base *base, void *arg)
{
    return bufferevent_openssl_socket_new(base, -1, SSL_new(tls_srv_ctx),
                                          BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

/* A self-signed certificate for localhost and 127.0.0.1 (openssl CLI), and
 * the test server speaking TLS with it. */
static void tls_setup(void)
{
    if (access("/usr/bin/openssl", X_OK) != 0)
        cr_skip_test("openssl command not installed");
    strcpy(tls_dir, "/tmp/test_auth_tls_XXXXXX");
    cr_assert_not_null(mkdtemp(tls_dir));
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 "
             "-keyout %s/key.pem -out %s/cert.pem 2>/dev/null",
             tls_dir, tls_dir);
    cr_assert_eq(system(cmd), 0);
    tls_srv_ctx = SSL_CTX_new(TLS_server_method());
    char path[128];
    snprintf(path, sizeof(path), "%s/cert.pem", tls_dir);
    cr_assert_eq(SSL_CTX_use_certificate_chain_file(tls_srv_ctx, path), 1);
    snprintf(path, sizeof(path), "%s/key.pem", tls_dir);
    cr_assert_eq(
        SSL_CTX_use_PrivateKey_file(tls_srv_ctx, path, SSL_FILETYPE_PEM), 1);
    evhttp_set_bevcb(E.srv.http, tls_bevcb, NULL);
}

static void tls_teardown(void)
{
    SSL_CTX_free(tls_srv_ctx); /* the server's SSL objects keep a reference */
    tls_srv_ctx = NULL;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tls_dir);
    if (tls_dir[0] && system(cmd) != 0)
        tls_dir[0] = '\0';
}

static void env_https(const char *host, const char *cafile, bool verify)
{
    char url[128];
    snprintf(url, sizeof(url), "https://%s:%d/auth", host, E.srv.port);
    env_set("auth_http_url", url);
    if (cafile) {
        char path[128];
        snprintf(path, sizeof(path), "%s/%s", tls_dir, cafile);
        env_set("auth_tls_cafile", path);
    }
    env_set("auth_tls_verify", verify ? "true" : "false");
    env_start();
}

Test(auth_loop, https_verified_by_cafile)
{
    tls_setup();
    env_https("127.0.0.1", "cert.pem", true);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(connect_result("allow", "x"), AUTH_ALLOW);
    cr_assert_eq(connect_result("deny", "x"), AUTH_DENY);
    cr_assert_eq(E.srv.conns, 1, "the TLS connection is kept alive");
    cr_assert_eq(auth_stats(E.auth)->http_failures, 0);
    tls_teardown();
}

Test(auth_loop, https_by_host_name)
{
    tls_setup();
    env_https("localhost", "cert.pem", true);
    cr_assert_eq(connect_result("allow", "x"), AUTH_ALLOW);
    cr_assert_eq(auth_stats(E.auth)->http_failures, 0);
    tls_teardown();
}

Test(auth_loop, https_unknown_ca_fails)
{
    tls_setup();
    env_set("auth_failure_policy", "allow");
    env_https("127.0.0.1", NULL, true);
    cr_assert_eq(connect_result("deny", "x"), AUTH_ALLOW,
                 "the certificate is refused: policy allow applies");
    cr_assert_eq(auth_stats(E.auth)->http_failures, 1);
    cr_assert_eq(E.srv.auth_calls, 0);
    tls_teardown();
}

Test(auth_loop, https_without_verification)
{
    tls_setup();
    env_https("127.0.0.1", NULL, false);
    cr_assert_eq(connect_result("allow", "x"), AUTH_ALLOW);
    cr_assert_eq(connect_result("deny", "x"), AUTH_DENY);
    tls_teardown();
}

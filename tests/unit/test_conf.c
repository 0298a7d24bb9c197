/*
 * test_conf.c - unit tests of the configuration table (conf.c): defaults,
 * every value type and its bounds, the file, env and flag sources, their
 * precedence, SIGHUP reload, and conf/starling.conf staying equal to
 * conf_print_file().
 */
#include "starling/conf.h"

#include "starling/err.h"
#include "starling/log.h"

#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SOURCE_ROOT
#define SOURCE_ROOT "."
#endif

static sl_conf_t c;
static char err[512];
static char tmp_path[64];

static void setup(void)
{
    conf_init(&c);
    err[0] = '\0';
    tmp_path[0] = '\0';
}

static void teardown(void)
{
    conf_fini(&c);
    if (tmp_path[0])
        unlink(tmp_path);
}

/* A test's own .init runs after the suite's: it only redirects stdout. */
TestSuite(conf, .init = setup, .fini = teardown);

/* Write text to a fresh temporary file; its path is in tmp_path. */
static const char *write_tmp(const char *text)
{
    strcpy(tmp_path, "/tmp/test_conf_XXXXXX");
    int fd = mkstemp(tmp_path);
    cr_assert(fd >= 0);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
    return tmp_path;
}

/* Everything conf_print_file() writes, as a heap string. */
static char *print_file_text(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    conf_print_file(f);
    fclose(f);
    return buf;
}

static char *read_whole(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(m);
    fclose(f);
    return buf;
}

static int from_args(int argc, char **argv, char **envp, conf_action_t *act)
{
    return conf_from_args(&c, argc, argv, envp, act, err, sizeof(err));
}

/* --- defaults ------------------------------------------------------------- */

Test(conf, defaults)
{
    cr_assert_str_eq(c.bind, "0.0.0.0");
    cr_assert_eq(c.port, 1883);
    cr_assert_eq(c.log_level, SL_LOG_INFO);
    cr_assert_str_eq(c.store, "memory");
    cr_assert_null(c.node_id);
    cr_assert_eq(c.max_packet_size, 1048576u);
    cr_assert_eq(c.max_inflight_messages, 20);
    cr_assert_eq(c.max_queued_messages, 1000);
    cr_assert_eq(c.queue_drop, QUEUE_DROP_NEW);
    cr_assert_eq(c.max_connections, 100000);
    cr_assert(c.allow_zero_length_clientid);
    cr_assert(c.retain_available);
    cr_assert_eq(c.max_keepalive, 65535);
    cr_assert_eq(c.connect_timeout, 10);
    cr_assert_eq(c.max_topic_length, 65535);
    cr_assert_eq(c.max_topic_levels, 128);
    cr_assert_eq(c.max_subscriptions, 0);
    cr_assert_eq(c.receive_maximum, 100);
    cr_assert_eq(c.max_topic_alias, 10);
    cr_assert_eq(c.max_qos, 2);
    cr_assert_eq(c.persistent_client_expiration, 0u);
    cr_assert_eq(c.max_session_expiry, 0xFFFFFFFFu);
    cr_assert_eq(c.shared_subscription_strategy, SHARED_ROUND_ROBIN);
    cr_assert_null(c.subscribe_deny);
    cr_assert_eq(c.tls_port, 0, "no TLS listener unless asked");
    cr_assert_null(c.tls_cert_file);
    cr_assert_null(c.tls_key_file);
    cr_assert_null(c.tls_ca_file);
    cr_assert_not(c.tls_require_client_cert);
    cr_assert_eq(c.tls_min_version, TLS_MIN_1_2);
    cr_assert_null(c.tls_ciphers);
    cr_assert_null(c.config_file);
    cr_assert_eq(c.pinned, 0u);
}

/* --- conf_set: each type -------------------------------------------------- */

static void assert_set_fails(const char *key, const char *value,
                             const char *expected_err)
{
    int rc = conf_set(&c, key, value, err, sizeof(err));
    cr_assert_eq(rc, SL_EINVAL, "%s %s: rc %d", key, value, rc);
    cr_assert_str_eq(err, expected_err);
}

Test(conf, tls_keys)
{
    cr_assert_eq(conf_set(&c, "tls_port", "8883", err, sizeof(err)), SL_OK);
    cr_assert_eq(c.tls_port, 8883);
    cr_assert_eq(conf_set(&c, "tls_min_version", "TLS1.3", err, sizeof(err)),
                 SL_OK, "%s", err);
    cr_assert_eq(c.tls_min_version, TLS_MIN_1_3);
    assert_set_fails("tls_min_version", "tls1.1",
                     "tls_min_version: expected tls1.2|tls1.3, got 'tls1.1'");
    assert_set_fails("tls_port", "65536",
                     "tls_port: '65536' is out of range 0..65535");
    cr_assert_eq(conf_set(&c, "tls_cert_file", "/x/cert.pem", err,
                          sizeof(err)), SL_OK);
    cr_assert_str_eq(c.tls_cert_file, "/x/cert.pem");
    cr_assert_eq(conf_set(&c, "tls_cert_file", "", err, sizeof(err)), SL_OK);
    cr_assert_null(c.tls_cert_file, "an empty value unsets it");
}

Test(conf, ws_keys)
{
    cr_assert_eq(c.ws_port, 0);
    cr_assert_eq(c.wss_port, 0);
    cr_assert_str_eq(c.ws_path, "/mqtt");
    cr_assert_null(c.ws_allowed_origins);
    cr_assert_null(c.ws_trusted_proxies);
    cr_assert_eq(c.ws_max_frame_size, 0);
    cr_assert_eq(conf_set(&c, "ws_port", "8083", err, sizeof(err)), SL_OK);
    cr_assert_eq(conf_set(&c, "wss_port", "8084", err, sizeof(err)), SL_OK);
    cr_assert_eq(c.ws_port + c.wss_port, 8083 + 8084);
    cr_assert_eq(conf_set(&c, "ws_path", "/ws/mqtt", err, sizeof(err)),
                 SL_OK);
    cr_assert_str_eq(c.ws_path, "/ws/mqtt");
    assert_set_fails("ws_path", "mqtt",
                     "ws_path: expected a path starting with '/', got "
                     "'mqtt'");
    assert_set_fails("ws_path", "/a b",
                     "ws_path: character ' ' not allowed in a path: '/a b'");
    assert_set_fails("ws_path", "", "ws_path: empty value");
    cr_assert_eq(conf_set(&c, "ws_allowed_origins",
                          "https://a.example, http://localhost:8080", err,
                          sizeof(err)),
                 SL_OK, "%s", err);
    assert_set_fails("ws_allowed_origins", "https://a,,b",
                     "ws_allowed_origins: not an origin: ''");
    cr_assert_eq(conf_set(&c, "ws_trusted_proxies",
                          "127.0.0.1, 10.0.0.0/8,::1,fd00::/8", err,
                          sizeof(err)),
                 SL_OK, "%s", err);
    assert_set_fails("ws_trusted_proxies", "10.0.0.0/33",
                     "ws_trusted_proxies: not an IP address or CIDR range: "
                     "'10.0.0.0/33'");
    assert_set_fails("ws_trusted_proxies", "proxy.local",
                     "ws_trusted_proxies: not an IP address or CIDR range: "
                     "'proxy.local'");
    assert_set_fails("ws_trusted_proxies", "::1/",
                     "ws_trusted_proxies: not an IP address or CIDR range: "
                     "'::1/'");
    cr_assert_eq(conf_set(&c, "ws_max_frame_size", "2m", err, sizeof(err)),
                 SL_OK);
    cr_assert_eq(c.ws_max_frame_size, 2u << 20);
    cr_assert(conf_key_reloadable("ws_allowed_origins"));
    cr_assert_not(conf_key_reloadable("ws_port"));
}

Test(conf, set_int)
{
    cr_assert_eq(conf_set(&c, "port", "8883", err, sizeof(err)), SL_OK);
    cr_assert_eq(c.port, 8883);
    cr_assert_eq(conf_set(&c, "port", "0", err, sizeof(err)), SL_OK);
    cr_assert_eq(c.port, 0);
    cr_assert_eq(conf_set(&c, "port", "65535", err, sizeof(err)), SL_OK);
    assert_set_fails("port", "65536", "port: '65536' is out of range 0..65535");
    assert_set_fails("port", "-1", "port: '-1' is out of range 0..65535");
    assert_set_fails("port", "abc", "port: not a number: 'abc'");
    assert_set_fails("port", "12x", "port: not a number: '12x'");
    assert_set_fails("port", "", "port: not a number: ''");
    assert_set_fails("port", " 1", "port: not a number: ' 1'");
    assert_set_fails("port", "1k", "port: not a number: '1k'");
    assert_set_fails("port", "99999999999999999999",
                     "port: '99999999999999999999' is out of range");
    cr_assert_eq(c.port, 65535, "a refused value leaves the key unchanged");
}

Test(conf, int_bounds)
{
    static const struct {
        const char *key, *bad_low, *bad_high;
    } cases[] = {
        {"max_inflight_messages", "0", "65536"},
        {"receive_maximum", "0", "65536"},
        {"max_topic_alias", "-1", "65536"},
        {"max_qos", "-1", "3"},
        {"max_keepalive", "-1", "65536"},
        {"connect_timeout", "0", "3601"},
        {"max_topic_length", "0", "65536"},
        {"max_topic_levels", "0", "65536"},
        {"max_queued_messages", "-1", "2147483648"},
        {"max_connections", "-1", "2147483648"},
        {"max_subscriptions", "-1", "2147483648"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *bad[] = {cases[i].bad_low, cases[i].bad_high};
        for (int j = 0; j < 2; j++) {
            int rc = conf_set(&c, cases[i].key, bad[j], err, sizeof(err));
            cr_assert_eq(rc, SL_EINVAL, "%s %s", cases[i].key, bad[j]);
            cr_assert(strncmp(err, cases[i].key, strlen(cases[i].key)) == 0,
                      "error names the key: %s", err);
            cr_assert(strstr(err, "out of range"), "%s", err);
        }
    }
    cr_assert_eq(conf_set(&c, "max_qos", "1", err, sizeof(err)), SL_OK);
    cr_assert_eq(c.max_qos, 1);
    cr_assert_eq(conf_set(&c, "max_keepalive", "0", err, sizeof(err)), SL_OK);
    cr_assert_eq(c.max_keepalive, 0);
}

Test(conf, set_uint32)
{
    cr_assert_eq(conf_set(&c, "max_session_expiry", "4294967295", err,
                          sizeof(err)),
                 SL_OK);
    cr_assert_eq(c.max_session_expiry, 4294967295u);
    cr_assert_eq(conf_set(&c, "persistent_client_expiration", "86400", err,
                          sizeof(err)),
                 SL_OK);
    cr_assert_eq(c.persistent_client_expiration, 86400u);
    assert_set_fails("max_session_expiry", "4294967296",
                     "max_session_expiry: '4294967296' is out of range "
                     "0..4294967295");
    assert_set_fails("persistent_client_expiration", "-5",
                     "persistent_client_expiration: '-5' is out of range "
                     "0..4294967295");
}

Test(conf, set_size_with_suffix)
{
    cr_assert_eq(conf_set(&c, "max_packet_size", "64k", err, sizeof(err)),
                 SL_OK);
    cr_assert_eq(c.max_packet_size, 65536u);
    cr_assert_eq(conf_set(&c, "max_packet_size", "2M", err, sizeof(err)),
                 SL_OK);
    cr_assert_eq(c.max_packet_size, 2u << 20);
    cr_assert_eq(conf_set(&c, "max_packet_size", "16", err, sizeof(err)),
                 SL_OK);
    cr_assert_eq(c.max_packet_size, 16u);
    cr_assert_eq(conf_set(&c, "max_packet_size", "268435455", err,
                          sizeof(err)),
                 SL_OK);
    assert_set_fails("max_packet_size", "15",
                     "max_packet_size: '15' is out of range 16..268435455");
    assert_set_fails("max_packet_size", "1g",
                     "max_packet_size: '1g' is out of range 16..268435455");
    assert_set_fails("max_packet_size", "abc",
                     "max_packet_size: not a number: 'abc'");
    assert_set_fails("max_packet_size", "1kb",
                     "max_packet_size: not a number: '1kb'");
    assert_set_fails("max_packet_size", "k",
                     "max_packet_size: not a number: 'k'");
}

Test(conf, set_bool)
{
    static const char *yes[] = {"true", "yes", "on", "1", "TRUE", "Yes"};
    static const char *no[] = {"false", "no", "off", "0", "OFF"};
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        c.retain_available = true;
        cr_assert_eq(conf_set(&c, "retain_available", no[i], err,
                              sizeof(err)),
                     SL_OK, "%s", no[i]);
        cr_assert_not(c.retain_available, "%s", no[i]);
    }
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        c.retain_available = false;
        cr_assert_eq(conf_set(&c, "retain_available", yes[i], err,
                              sizeof(err)),
                     SL_OK, "%s", yes[i]);
        cr_assert(c.retain_available, "%s", yes[i]);
    }
    assert_set_fails("allow_zero_length_clientid", "maybe",
                     "allow_zero_length_clientid: expected true/false, "
                     "yes/no, on/off or 1/0, got 'maybe'");
    assert_set_fails("retain_available", "2",
                     "retain_available: expected true/false, yes/no, on/off "
                     "or 1/0, got '2'");
}

Test(conf, set_enum)
{
    cr_assert_eq(conf_set(&c, "queue_drop", "drop_oldest", err, sizeof(err)),
                 SL_OK);
    cr_assert_eq(c.queue_drop, QUEUE_DROP_OLDEST);
    cr_assert_eq(conf_set(&c, "queue_drop", "drop_new", err, sizeof(err)),
                 SL_OK);
    cr_assert_eq(c.queue_drop, QUEUE_DROP_NEW);
    cr_assert_eq(conf_set(&c, "shared_subscription_strategy", "random", err,
                          sizeof(err)),
                 SL_OK);
    cr_assert_eq(c.shared_subscription_strategy, SHARED_RANDOM);
    assert_set_fails("queue_drop", "drop_all",
                     "queue_drop: expected drop_new|drop_oldest, got "
                     "'drop_all'");
    assert_set_fails("shared_subscription_strategy", "sticky",
                     "shared_subscription_strategy: expected "
                     "round_robin|random, got 'sticky'");
}

Test(conf, set_log_level)
{
    static const struct {
        const char *name;
        int level;
    } cases[] = {{"debug", SL_LOG_DEBUG},     {"info", SL_LOG_INFO},
                 {"warning", SL_LOG_WARNING}, {"error", SL_LOG_ERROR},
                 {"none", SL_LOG_NONE}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_eq(conf_set(&c, "log_level", cases[i].name, err,
                              sizeof(err)),
                     SL_OK);
        cr_assert_eq(c.log_level, cases[i].level);
    }
    assert_set_fails("log_level", "verbose",
                     "log_level: expected debug|info|warning|error|none, got "
                     "'verbose'");
}

Test(conf, set_string_replaces_and_unsets)
{
    cr_assert_eq(conf_set(&c, "bind", "127.0.0.1", err, sizeof(err)), SL_OK);
    cr_assert_str_eq(c.bind, "127.0.0.1");
    cr_assert_eq(conf_set(&c, "bind", "::1", err, sizeof(err)), SL_OK);
    cr_assert_str_eq(c.bind, "::1");
    assert_set_fails("bind", "", "bind: empty value");
    cr_assert_str_eq(c.bind, "::1");

    cr_assert_eq(conf_set(&c, "subscribe_deny", "a/#,b/+", err, sizeof(err)),
                 SL_OK);
    cr_assert_str_eq(c.subscribe_deny, "a/#,b/+");
    cr_assert_eq(conf_set(&c, "subscribe_deny", "", err, sizeof(err)), SL_OK);
    cr_assert_null(c.subscribe_deny);
}

Test(conf, set_checked_strings)
{
    cr_assert_eq(conf_set(&c, "store", "redis://127.0.0.1:6379", err,
                          sizeof(err)),
                 SL_OK);
    cr_assert_str_eq(c.store, "redis://127.0.0.1:6379");
    cr_assert_eq(conf_set(&c, "store", "redis+cluster://a:1,b:2", err,
                          sizeof(err)),
                 SL_OK);
    assert_set_fails("store", "mysql://x",
                     "store: expected memory, redis://HOST:PORT or "
                     "redis+cluster://HOST:PORT,..., got 'mysql://x'");
    assert_set_fails("store", "redis://",
                     "store: expected memory, redis://HOST:PORT or "
                     "redis+cluster://HOST:PORT,..., got 'redis://'");

    cr_assert_eq(conf_set(&c, "node_id", "node-1.a_b", err, sizeof(err)),
                 SL_OK);
    cr_assert_str_eq(c.node_id, "node-1.a_b");
    assert_set_fails("node_id", "a:b",
                     "node_id: character ':' not allowed in 'a:b'");
    char longid[70];
    memset(longid, 'x', 65);
    longid[65] = '\0';
    assert_set_fails("node_id", longid,
                     "node_id: longer than 64 characters");
    cr_assert_eq(conf_set(&c, "node_id", "", err, sizeof(err)), SL_OK);
    cr_assert_null(c.node_id);
}

Test(conf, set_unknown_key)
{
    cr_assert_eq(conf_set(&c, "no_such_key", "1", err, sizeof(err)),
                 SL_ENOTFOUND);
    cr_assert_str_eq(err, "unknown key 'no_such_key'");
    cr_assert_eq(conf_set(&c, "PORT", "1", err, sizeof(err)), SL_ENOTFOUND);
}

Test(conf, key_reloadable)
{
    cr_assert(conf_key_reloadable("log_level"));
    cr_assert(conf_key_reloadable("max_connections"));
    cr_assert_not(conf_key_reloadable("port"));
    cr_assert_not(conf_key_reloadable("store"));
    cr_assert_not(conf_key_reloadable("no_such_key"));
}

/* --- config file ---------------------------------------------------------- */

Test(conf, file_parsing)
{
    const char *path = write_tmp("# a comment\n"
                                 "\n"
                                 "   # an indented comment\n"
                                 "port 1884\n"
                                 "\tbind   127.0.0.1  \n"
                                 "subscribe_deny   $SYS/#, secret/#\n"
                                 "port 1885\r\n"
                                 "   \t\n"
                                 "node_id\n"
                                 "log_level debug");
    cr_assert_eq(conf_load_file(&c, path, err, sizeof(err)), SL_OK, "%s", err);
    cr_assert_eq(c.port, 1885, "a repeated key: the last one wins");
    cr_assert_str_eq(c.bind, "127.0.0.1");
    cr_assert_str_eq(c.subscribe_deny, "$SYS/#, secret/#");
    cr_assert_null(c.node_id);
    cr_assert_eq(c.log_level, SL_LOG_DEBUG, "last line without newline");
    cr_assert_eq(c.pinned, 0u, "file keys are not pinned");
}

Test(conf, file_unknown_key)
{
    const char *path = write_tmp("port 1884\n\n# x\nfoo bar\n");
    cr_assert_eq(conf_load_file(&c, path, err, sizeof(err)), SL_ENOTFOUND);
    char expected[128];
    snprintf(expected, sizeof(expected), "%s:4: unknown key 'foo'", path);
    cr_assert_str_eq(err, expected);
}

Test(conf, file_bad_value)
{
    const char *path = write_tmp("port 1884\nmax_packet_size 10\n");
    cr_assert_eq(conf_load_file(&c, path, err, sizeof(err)), SL_EINVAL);
    char expected[160];
    snprintf(expected, sizeof(expected),
             "%s:2: max_packet_size: '10' is out of range 16..268435455",
             path);
    cr_assert_str_eq(err, expected);
}

Test(conf, file_comment_only_at_line_start)
{
    const char *path = write_tmp("port 1884 # the port\n");
    cr_assert_eq(conf_load_file(&c, path, err, sizeof(err)), SL_EINVAL);
    cr_assert(strstr(err, ":1: port: not a number: '1884 # the port'"), "%s",
              err);
}

Test(conf, file_missing)
{
    int rc = conf_load_file(&c, "/nonexistent/starling.conf", err,
                            sizeof(err));
    cr_assert_eq(rc, SL_EIO);
    cr_assert_str_eq(err, "/nonexistent/starling.conf: cannot open: No such "
                          "file or directory");
}

/* --- environment ---------------------------------------------------------- */

Test(conf, env_parsing)
{
    char *envp[] = {"HOME=/root", "STARLING_PORT=2883",
                    "STARLING_LOG_LEVEL=error", "STARLING_NODE_ID=n7",
                    "STARLINGX=1", NULL};
    cr_assert_eq(conf_load_env(&c, envp, err, sizeof(err)), SL_OK, "%s", err);
    cr_assert_eq(c.port, 2883);
    cr_assert_eq(c.log_level, SL_LOG_ERROR);
    cr_assert_str_eq(c.node_id, "n7");
    cr_assert_eq(conf_load_env(&c, NULL, err, sizeof(err)), SL_OK);
}

Test(conf, env_unknown_variable)
{
    char *envp[] = {"STARLING_PORT=2883", "STARLING_FOO=1", NULL};
    cr_assert_eq(conf_load_env(&c, envp, err, sizeof(err)), SL_ENOTFOUND);
    cr_assert_str_eq(err, "STARLING_FOO: unknown key 'foo'");
}

Test(conf, env_bad_value)
{
    char *envp[] = {"STARLING_MAX_QOS=3", NULL};
    cr_assert_eq(conf_load_env(&c, envp, err, sizeof(err)), SL_EINVAL);
    cr_assert_str_eq(err, "STARLING_MAX_QOS: '3' is out of range 0..2");
}

/* --- command line --------------------------------------------------------- */

Test(conf, precedence_flag_env_file_default)
{
    const char *path = write_tmp("port 1001\n"
                                 "max_qos 1\n"
                                 "connect_timeout 30\n"
                                 "max_inflight_messages 50\n");
    char *envp[] = {"STARLING_PORT=2002", "STARLING_CONNECT_TIMEOUT=40",
                    NULL};
    /* the flag comes before -c and still wins */
    char *argv[] = {"starling", "--port", "3003", "-c", (char *)path, NULL};
    conf_action_t act;
    cr_assert_eq(from_args(5, argv, envp, &act), SL_OK, "%s", err);
    cr_assert_eq(act, CONF_RUN);
    cr_assert_eq(c.port, 3003, "flag > env > file");
    cr_assert_eq(c.connect_timeout, 40, "env > file");
    cr_assert_eq(c.max_qos, 1, "file > default");
    cr_assert_eq(c.max_inflight_messages, 50, "file > default");
    cr_assert_eq(c.receive_maximum, 100, "default");
    cr_assert_str_eq(c.config_file, path);
}

Test(conf, flag_forms)
{
    char *argv[] = {"starling",         "--max_packet_size=2k",
                    "--bind",           "::",
                    "--node_id=",       "--queue_drop=drop_oldest",
                    "--port",           "1",
                    "--port=2",         NULL};
    conf_action_t act;
    cr_assert_eq(from_args(9, argv, NULL, &act), SL_OK, "%s", err);
    cr_assert_eq(c.max_packet_size, 2048u);
    cr_assert_str_eq(c.bind, "::");
    cr_assert_null(c.node_id);
    cr_assert_eq(c.queue_drop, QUEUE_DROP_OLDEST);
    cr_assert_eq(c.port, 2, "the last flag wins");
    cr_assert_null(c.config_file);
}

Test(conf, config_flag_forms)
{
    const char *path = write_tmp("port 1234\n");
    char arg[96];
    snprintf(arg, sizeof(arg), "--config=%s", path);
    char *argv1[] = {"starling", arg, NULL};
    conf_action_t act;
    cr_assert_eq(from_args(2, argv1, NULL, &act), SL_OK, "%s", err);
    cr_assert_eq(c.port, 1234);
    c.port = 0;
    char *argv2[] = {"starling", "--config", (char *)path, NULL};
    cr_assert_eq(from_args(3, argv2, NULL, &act), SL_OK, "%s", err);
    cr_assert_eq(c.port, 1234);
    cr_assert_str_eq(c.config_file, path);
}

Test(conf, flag_errors)
{
    conf_action_t act;
    char *missing[] = {"starling", "--port", NULL};
    cr_assert_eq(from_args(2, missing, NULL, &act), SL_EINVAL);
    cr_assert_str_eq(err, "--port: missing value");

    char *missing2[] = {"starling", "--node_id", "--port", "1", NULL};
    cr_assert_eq(from_args(4, missing2, NULL, &act), SL_EINVAL);
    cr_assert_str_eq(err, "--node_id: missing value");

    char *unknown[] = {"starling", "--no_such_key", "1", NULL};
    cr_assert_eq(from_args(3, unknown, NULL, &act), SL_ENOTFOUND);
    cr_assert_str_eq(err, "unknown option '--no_such_key'");

    char *unknown2[] = {"starling", "--bogus=1", NULL};
    cr_assert_eq(from_args(2, unknown2, NULL, &act), SL_ENOTFOUND);
    cr_assert_str_eq(err, "unknown option '--bogus'");

    char *stray[] = {"starling", "extra", NULL};
    cr_assert_eq(from_args(2, stray, NULL, &act), SL_EINVAL);
    cr_assert_str_eq(err, "unexpected argument 'extra'");

    char *noconf[] = {"starling", "-c", NULL};
    cr_assert_eq(from_args(2, noconf, NULL, &act), SL_EINVAL);
    cr_assert_str_eq(err, "-c: missing file name");

    char *bad[] = {"starling", "--max_qos", "5", NULL};
    cr_assert_eq(from_args(3, bad, NULL, &act), SL_EINVAL);
    cr_assert_str_eq(err, "--max_qos: '5' is out of range 0..2");
}

Test(conf, bad_file_from_args)
{
    const char *path = write_tmp("max_qos 7\n");
    char *argv[] = {"starling", "-c", (char *)path, NULL};
    conf_action_t act;
    cr_assert_eq(from_args(3, argv, NULL, &act), SL_EINVAL);
    char expected[128];
    snprintf(expected, sizeof(expected),
             "%s:1: max_qos: '7' is out of range 0..2", path);
    cr_assert_str_eq(err, expected);
}

Test(conf, action_help, .init = cr_redirect_stdout)
{
    char *argv[] = {"starling", "--port", "1", "--help", NULL};
    conf_action_t act;
    cr_assert_eq(from_args(4, argv, NULL, &act), SL_OK, "%s", err);
    cr_assert_eq(act, CONF_HELP);
    fflush(stdout);
    char out[16384];
    size_t n = fread(out, 1, sizeof(out) - 1, cr_get_redirected_stdout());
    out[n] = '\0';
    cr_assert(strncmp(out, "usage: starling ", 16) == 0, "%s", out);
    cr_assert(strstr(out, "\n  --port 0..65535\n      default: 1883\n"));
    cr_assert(strstr(out, "\n  --log_level debug|info|warning|error|none\n"
                          "      default: info; reloadable\n"));
    cr_assert(strstr(out, "\n  --node_id string\n      default: unset\n"));
    cr_assert(strstr(out, "--max_session_expiry"));
    cr_assert(strstr(out, "--subscribe_deny"));
    cr_assert_eq(c.port, 1883, "--help applies nothing");
}

Test(conf, action_version, .init = cr_redirect_stdout)
{
    char *argv[] = {"starling", "--version", NULL};
    conf_action_t act;
    cr_assert_eq(from_args(2, argv, NULL, &act), SL_OK, "%s", err);
    cr_assert_eq(act, CONF_VERSION);
    fflush(stdout);
    cr_assert_stdout_eq_str("starling " STARLING_VERSION "\n");
}

Test(conf, action_check_config)
{
    const char *path = write_tmp("port 1999\n");
    char *argv[] = {"starling", "--check-config", "-c", (char *)path, NULL};
    conf_action_t act;
    cr_assert_eq(from_args(4, argv, NULL, &act), SL_OK, "%s", err);
    cr_assert_eq(act, CONF_CHECK);
    cr_assert_eq(c.port, 1999, "the configuration is loaded and checked");

    char *bad[] = {"starling", "--check-config", "--port", "x", NULL};
    cr_assert_eq(from_args(4, bad, NULL, &act), SL_EINVAL);
}

/* --- reload --------------------------------------------------------------- */

Test(conf, reload_applies_only_reloadable_keys)
{
    const char *path = write_tmp("port 1001\n"
                                 "log_level debug\n"
                                 "max_connections 5\n"
                                 "subscribe_deny a/#\n");
    char *envp[] = {"STARLING_MAX_SUBSCRIPTIONS=7", NULL};
    char *argv[] = {"starling", "-c", (char *)path, "--connect_timeout", "20",
                    NULL};
    conf_action_t act;
    cr_assert_eq(from_args(5, argv, envp, &act), SL_OK, "%s", err);
    cr_assert_eq(c.max_connections, 5);

    /* the file changes: port (fixed), log level and deny list (reloadable),
     * max_connections removed, pinned keys set */
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("port 2002\n"
          "log_level error\n"
          "subscribe_deny b/#\n"
          "max_subscriptions 99\n"
          "connect_timeout 99\n",
          f);
    fclose(f);
    cr_assert_eq(conf_reload_file(&c, c.config_file, err, sizeof(err)), SL_OK,
                 "%s", err);
    cr_assert_eq(c.port, 1001, "not reloadable: unchanged");
    cr_assert_eq(c.log_level, SL_LOG_ERROR);
    cr_assert_str_eq(c.subscribe_deny, "b/#");
    cr_assert_eq(c.max_connections, 100000, "absent from file: default");
    cr_assert_eq(c.max_subscriptions, 7, "set by env: env still wins");
    cr_assert_eq(c.connect_timeout, 20, "set by flag: flag still wins");
}

Test(conf, reload_error_changes_nothing)
{
    const char *path = write_tmp("log_level error\nmax_qos 9\n");
    cr_assert_eq(conf_reload_file(&c, path, err, sizeof(err)), SL_EINVAL);
    cr_assert(strstr(err, ":2: max_qos: '9' is out of range 0..2"), "%s", err);
    cr_assert_eq(c.log_level, SL_LOG_INFO);
    cr_assert_eq(conf_reload_file(&c, "/nonexistent", err, sizeof(err)),
                 SL_EIO);
    cr_assert_eq(conf_reload_file(&c, c.config_file, err, sizeof(err)),
                 SL_EINVAL, "started without -c");
}

/* --- the documented config file ------------------------------------------- */

Test(conf, checked_in_file_matches_print_file)
{
    const char *path = SOURCE_ROOT "/conf/starling.conf";
    char *want = print_file_text();
    char *have = read_whole(path);
    if (!have || strcmp(have, want) != 0) {
        FILE *f = fopen("starling.conf.new", "w");
        if (f) {
            fputs(want, f);
            fclose(f);
        }
        char cwd[512];
        cr_assert_fail("%s differs from conf_print_file(); the expected text "
                       "is in %s/starling.conf.new",
                       path, getcwd(cwd, sizeof(cwd)) ? cwd : ".");
    }
    free(want);
    free(have);
}

/* Uncommenting every setting of the printed file gives the defaults. */
Test(conf, print_file_settings_are_the_defaults)
{
    char *text = print_file_text();
    sl_conf_t d;
    conf_init(&d);
    d.port = 1;
    d.max_qos = 0;
    int settings = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] != '#' || line[1] < 'a' || line[1] > 'z')
            continue;
        char *key = line + 1, *value = strchr(key, ' ');
        if (value)
            *value++ = '\0';
        cr_assert_eq(conf_set(&d, key, value ? value : "", err, sizeof(err)),
                     SL_OK, "%s", err);
        settings++;
    }
    cr_assert_eq(settings, 60, "one setting per key");
    cr_assert_eq(d.port, c.port);
    cr_assert_eq(d.max_qos, c.max_qos);
    cr_assert_str_eq(d.bind, c.bind);
    cr_assert_null(d.node_id);
    cr_assert_eq(d.max_session_expiry, c.max_session_expiry);
    conf_fini(&d);
    free(text);
}

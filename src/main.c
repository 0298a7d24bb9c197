/*
 * main.c - `starling [-c FILE] [--key value ...]`: configuration, signals,
 * the event loop. Exit codes: 0 clean shutdown, 1 configuration error,
 * 2 runtime failure.
 */
#include "starling/broker.h"
#include "starling/conf.h"
#include "starling/err.h"
#include "starling/log.h"

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

typedef struct app {
    broker_t *broker;
    sl_conf_t *conf;
} app_t;

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    app_t *app = arg;
    log_info("signal %d received", (int)sig);
    broker_stop(app->broker);
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    app_t *app = arg;
    char err[512];
    if (!app->conf->config_file) {
        log_info("SIGHUP: no config file to reload");
        return;
    }
    if (conf_reload_file(app->conf, app->conf->config_file, err,
                         sizeof(err)) != SL_OK) {
        log_error("SIGHUP: reload failed, keeping the running config: %s",
                  err);
        return;
    }
    sl_log_level = app->conf->log_level;
    log_info("SIGHUP: reloaded %s", app->conf->config_file);
}

int main(int argc, char **argv)
{
    sl_conf_t conf;
    conf_action_t action;
    char err[512];
    int status = 0;

    conf_init(&conf);
    if (conf_from_args(&conf, argc, argv, environ, &action, err,
                       sizeof(err)) != SL_OK) {
        fprintf(stderr, "starling: %s\n", err);
        conf_fini(&conf);
        return 1;
    }
    if (action != CONF_RUN) {
        if (action == CONF_CHECK)
            printf("configuration ok\n");
        conf_fini(&conf);
        return 0;
    }
    sl_log_level = conf.log_level;
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    signal(SIGPIPE, SIG_IGN);

    struct event_base *base = event_base_new();
    broker_t *broker = NULL;
    if (!base || broker_new(&broker, base, &conf) != SL_OK) {
        fprintf(stderr, "starling: out of memory\n");
        status = 2;
        goto done;
    }
    app_t app = {broker, &conf};
    struct event *sigint = evsignal_new(base, SIGINT, on_stop_signal, &app);
    struct event *sigterm = evsignal_new(base, SIGTERM, on_stop_signal, &app);
    struct event *sighup = evsignal_new(base, SIGHUP, on_hup, &app);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);
    event_add(sighup, NULL);

    if (broker_start(broker) != SL_OK) {
        status = 2;
    } else {
        event_base_dispatch(base);
        log_info("stopped");
    }
    event_free(sigint);
    event_free(sigterm);
    event_free(sighup);
done:
    broker_free(broker);
    if (base)
        event_base_free(base);
    conf_fini(&conf);
    return status;
}

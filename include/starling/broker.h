/*
 * broker.h - one Starling node: listeners, sessions, routing, store.
 *
 * main() builds a configuration, creates the broker on an event base, starts
 * it and runs the loop; broker_stop() begins a graceful shutdown (stop
 * accepting, disconnect clients, flush, then the loop exits).
 */
#ifndef STARLING_BROKER_H
#define STARLING_BROKER_H

#include "starling/conf.h"

struct event_base;
typedef struct broker broker_t;

/* The broker keeps a pointer to conf; it must outlive the broker. */
int broker_new(broker_t **out, struct event_base *base, sl_conf_t *conf);
/* Open the store, load indexes, start listeners. SL_OK or an error (logged). */
int broker_start(broker_t *b);
/* Graceful shutdown; safe to call from a signal event callback. */
void broker_stop(broker_t *b);
void broker_free(broker_t *b);

#endif

/*
 * subscribe.h - SUBSCRIBE and UNSUBSCRIBE (subscribe.c).
 */
#ifndef STARLING_BROKER_SUBSCRIBE_H
#define STARLING_BROKER_SUBSCRIBE_H

#include "session.h"

void handle_subscribe(sess_t *s, mqtt_packet_t *p);
void handle_unsubscribe(sess_t *s, mqtt_packet_t *p);

#endif

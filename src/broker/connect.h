/*
 * connect.h - CONNECT (connect.c).
 */
#ifndef STARLING_BROKER_CONNECT_H
#define STARLING_BROKER_CONNECT_H

#include "session.h"

void handle_connect(sess_t *s, mqtt_packet_t *p);

#endif

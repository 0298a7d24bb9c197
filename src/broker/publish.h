/*
 * publish.h - PUBLISH and PUBREL from a client (publish.c).
 */
#ifndef STARLING_BROKER_PUBLISH_H
#define STARLING_BROKER_PUBLISH_H

#include "session.h"

void handle_publish(sess_t *s, mqtt_packet_t *p);
void handle_pubrel(sess_t *s, const mqtt_packet_t *p);
/* A message from a PUBLISH's (or a will's) topic, payload and the v5
 * properties that travel with it; NULL when out of memory. */
msg_t *publish_msg_from(const mqtt_props_t *pr, int version,
                        const void *topic, size_t tlen, mqtt_bytes_t payload,
                        uint8_t qos, bool retain);
/* Free a PUBLISH still waiting for its authorization (session end). */
void publish_held_free(sess_t *s);

#endif

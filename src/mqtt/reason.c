/*
 * reason.c - the one table from Starling statuses (err.h) to what MQTT
 * says on the wire: the MQTT 5.0 reason code (§2.4), the MQTT 3.1/3.1.1
 * CONNACK return code, and the SUBACK failure code; and packet type names
 * for logs.
 *
 * Decoding errors: SL_EMALFORMED and SL_EUTF8 are a Malformed Packet (0x81);
 * SL_EPROTOCOL and SL_EPROPERTY a Protocol Error (0x82); SL_ETOPIC a Topic
 * Name invalid (0x90: a wildcard or an empty name where a topic name is
 * required, in PUBLISH or in a will); SL_ETOOLARGE 0x95; SL_EVERSION 0x84.
 * The broker's own refusals are rows of the same table, so no other file
 * picks a reason code.
 */
#include "starling/err.h"
#include "starling/mqtt.h"

#include <stddef.h>

typedef struct reason_row {
    int status;
    uint8_t v5;                  /* MQTT 5 reason code */
    uint8_t v3_connack;          /* MQTT 3 CONNACK return code refusing */
} reason_row_t;

/* Statuses not listed: v5 0x80 (unspecified), v3 CONNACK 3 (server
 * unavailable). A v3 client whose will is refused gets "not authorized"
 * (5), as Mosquitto answers. */
static const reason_row_t table[] = {
    {SL_OK, MQTT_RC_SUCCESS, MQTT_V3_ACCEPTED},
    {SL_NOMATCH, MQTT_RC_NO_MATCHING_SUBSCRIBERS, MQTT_V3_ACCEPTED},
    {SL_NOSUB, MQTT_RC_NO_SUBSCRIPTION_EXISTED, MQTT_V3_ACCEPTED},
    {SL_EMALFORMED, MQTT_RC_MALFORMED, MQTT_V3_SERVER_UNAVAILABLE},
    {SL_EUTF8, MQTT_RC_MALFORMED, MQTT_V3_SERVER_UNAVAILABLE},
    {SL_EPROTOCOL, MQTT_RC_PROTOCOL_ERROR, MQTT_V3_SERVER_UNAVAILABLE},
    {SL_EPROPERTY, MQTT_RC_PROTOCOL_ERROR, MQTT_V3_SERVER_UNAVAILABLE},
    {SL_ETOPIC, MQTT_RC_TOPIC_NAME_INVALID, MQTT_V3_NOT_AUTHORIZED},
    {SL_ETOOLARGE, MQTT_RC_PACKET_TOO_LARGE, MQTT_V3_SERVER_UNAVAILABLE},
    {SL_EVERSION, MQTT_RC_UNSUPPORTED_VERSION, MQTT_V3_BAD_VERSION},
    {SL_ECLIENTID, MQTT_RC_CLIENTID_NOT_VALID, MQTT_V3_ID_REJECTED},
    {SL_EAUTH, MQTT_RC_NOT_AUTHORIZED, MQTT_V3_NOT_AUTHORIZED},
    {SL_ESTALE, MQTT_RC_SESSION_TAKEN_OVER, MQTT_V3_SERVER_UNAVAILABLE},
    {SL_ETAKENOVER, MQTT_RC_SESSION_TAKEN_OVER, MQTT_V3_SERVER_UNAVAILABLE},
    {SL_ELIMIT, MQTT_RC_QUOTA_EXCEEDED, MQTT_V3_SERVER_UNAVAILABLE},
    {SL_EKEEPALIVE, MQTT_RC_KEEPALIVE_TIMEOUT, MQTT_V3_SERVER_UNAVAILABLE},
    {SL_ESHUTDOWN, MQTT_RC_SERVER_SHUTTING_DOWN, MQTT_V3_SERVER_UNAVAILABLE},
    {SL_EUNAVAILABLE, MQTT_RC_SERVER_UNAVAILABLE, MQTT_V3_SERVER_UNAVAILABLE},
    {SL_EALIAS, MQTT_RC_TOPIC_ALIAS_INVALID, MQTT_V3_SERVER_UNAVAILABLE},
    {SL_ERECEIVEMAX, MQTT_RC_RECEIVE_MAX_EXCEEDED, MQTT_V3_SERVER_UNAVAILABLE},
    {SL_EQOS, MQTT_RC_QOS_NOT_SUPPORTED, MQTT_V3_NOT_AUTHORIZED},
    {SL_ERETAIN, MQTT_RC_RETAIN_NOT_SUPPORTED, MQTT_V3_NOT_AUTHORIZED},
    {SL_EFILTER, MQTT_RC_TOPIC_FILTER_INVALID, MQTT_V3_SERVER_UNAVAILABLE},
    {SL_EAUTHMETHOD, MQTT_RC_BAD_AUTH_METHOD, MQTT_V3_SERVER_UNAVAILABLE},
    {SL_EPACKETID, MQTT_RC_PACKET_ID_NOT_FOUND, MQTT_V3_SERVER_UNAVAILABLE},
    /* Refused as Mosquitto refuses it; a v5 client is told Server Keep
     * Alive instead and never sees this. */
    {SL_EKEEPALIVEMAX, MQTT_RC_PROTOCOL_ERROR, MQTT_V3_ID_REJECTED},
};

static const reason_row_t *row(int status)
{
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (table[i].status == status)
            return &table[i];
    return NULL;
}

uint8_t mqtt_err_reason(int status)
{
    const reason_row_t *r = row(status);
    return r ? r->v5 : MQTT_RC_UNSPECIFIED;
}

uint8_t mqtt_connack_code(int status, int version)
{
    if (version == MQTT_V5)
        return mqtt_err_reason(status);
    const reason_row_t *r = row(status);
    return r ? r->v3_connack : MQTT_V3_SERVER_UNAVAILABLE;
}

/* The reason codes MQTT 5 allows in each acknowledgement (§3.4.2.1,
 * §3.5.2.1, §3.6.2.1, §3.7.2.1, §3.9.3, §3.11.3), 0-terminated after the
 * leading success code. */
static const uint8_t ack_codes_pub[] = {0x00, 0x10, 0x80, 0x83, 0x87, 0x90,
                                        0x91, 0x97, 0x99, 0};
static const uint8_t ack_codes_rel[] = {0x00, 0x92, 0};
static const uint8_t ack_codes_sub[] = {0x00, 0x01, 0x02, 0x80, 0x83, 0x87,
                                        0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
                                        0};
static const uint8_t ack_codes_unsub[] = {0x00, 0x11, 0x80, 0x83, 0x87,
                                          0x8F, 0x91, 0};

uint8_t mqtt_ack_code(int status, int type)
{
    const uint8_t *ok;
    switch (type) {
    case MQTT_PUBACK:
    case MQTT_PUBREC:
        ok = ack_codes_pub;
        break;
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        ok = ack_codes_rel;
        break;
    case MQTT_SUBACK:
        ok = ack_codes_sub;
        break;
    case MQTT_UNSUBACK:
        ok = ack_codes_unsub;
        break;
    default:
        return mqtt_err_reason(status);
    }
    uint8_t code = mqtt_err_reason(status);
    if (code == 0)
        return 0;
    for (const uint8_t *c = ok + 1; *c; c++)
        if (*c == code)
            return code;
    return MQTT_RC_UNSPECIFIED;
}

uint8_t mqtt_suback_code(int status, int version)
{
    return version == MQTT_V5 ? mqtt_ack_code(status, MQTT_SUBACK)
                              : MQTT_SUBACK_FAILURE;
}

const char *mqtt_type_name(int type)
{
    static const char *const names[] = {
        [MQTT_CONNECT] = "CONNECT",   [MQTT_CONNACK] = "CONNACK",
        [MQTT_PUBLISH] = "PUBLISH",   [MQTT_PUBACK] = "PUBACK",
        [MQTT_PUBREC] = "PUBREC",     [MQTT_PUBREL] = "PUBREL",
        [MQTT_PUBCOMP] = "PUBCOMP",   [MQTT_SUBSCRIBE] = "SUBSCRIBE",
        [MQTT_SUBACK] = "SUBACK",     [MQTT_UNSUBSCRIBE] = "UNSUBSCRIBE",
        [MQTT_UNSUBACK] = "UNSUBACK", [MQTT_PINGREQ] = "PINGREQ",
        [MQTT_PINGRESP] = "PINGRESP", [MQTT_DISCONNECT] = "DISCONNECT",
        [MQTT_AUTH] = "AUTH",
    };

    if (type < MQTT_CONNECT || type > MQTT_AUTH)
        return "UNKNOWN";
    return names[type];
}

/*
 * reason.c - the one mapping from Starling status codes to MQTT 5.0 reason
 * codes (§2.4), and packet type names for logs.
 *
 * Decoding errors: SL_EMALFORMED and SL_EUTF8 are a Malformed Packet (0x81);
 * SL_EPROTOCOL and SL_EPROPERTY a Protocol Error (0x82); SL_ETOPIC a Topic
 * Name invalid (0x90: a wildcard or an empty name where a topic name is
 * required, in PUBLISH or in a will); SL_ETOOLARGE 0x95; SL_EVERSION 0x84.
 * The broker's own refusals map to their CONNACK/DISCONNECT codes too, so
 * that no other file needs a table of its own.
 */
#include "starling/err.h"
#include "starling/mqtt.h"

uint8_t mqtt_err_reason(int err)
{
    switch (err) {
    case SL_OK:
        return MQTT_RC_SUCCESS;
    case SL_EMALFORMED:
    case SL_EUTF8:
        return MQTT_RC_MALFORMED;
    case SL_EPROTOCOL:
    case SL_EPROPERTY:
        return MQTT_RC_PROTOCOL_ERROR;
    case SL_ETOPIC:
        return MQTT_RC_TOPIC_NAME_INVALID;
    case SL_ETOOLARGE:
        return MQTT_RC_PACKET_TOO_LARGE;
    case SL_EVERSION:
        return MQTT_RC_UNSUPPORTED_VERSION;
    case SL_ECLIENTID:
        return MQTT_RC_CLIENTID_NOT_VALID;
    case SL_EAUTH:
        return MQTT_RC_NOT_AUTHORIZED;
    case SL_ESTALE:
        return MQTT_RC_SESSION_TAKEN_OVER;
    case SL_ELIMIT:
        return MQTT_RC_QUOTA_EXCEEDED;
    default:
        return MQTT_RC_UNSPECIFIED;
    }
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

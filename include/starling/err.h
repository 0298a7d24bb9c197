/*
 * err.h - the one status enum of Starling.
 *
 * Functions return int: 0 (SL_OK) on success, a negative SL_E* value on
 * failure, results through out-parameters. Decoders additionally return
 * SL_AGAIN (positive) when more input is needed.
 *
 * The broker's reasons for refusing or closing are statuses here too
 * (SL_EKEEPALIVE, SL_ERECEIVEMAX, ...); broker code picks a status, never
 * an MQTT reason code. The one table from status to MQTT 5 reason code,
 * MQTT 3 CONNACK return code and SUBACK failure code is src/mqtt/reason.c
 * (mqtt_err_reason(), mqtt_connack_code(), mqtt_suback_code() in mqtt.h).
 */
#ifndef STARLING_ERR_H
#define STARLING_ERR_H

enum {
    SL_OK = 0,
    SL_AGAIN = 1,            /* need more input (not an error) */
    SL_NOMATCH = 2,          /* done; no subscriber matched (v5 0x10) */
    SL_NOSUB = 3,            /* done; no such subscription (v5 0x11) */

    SL_ENOMEM = -1,          /* allocation failed */
    SL_EINVAL = -2,          /* bad argument / value */
    SL_EMALFORMED = -3,      /* MQTT: malformed packet */
    SL_EPROTOCOL = -4,       /* MQTT: protocol error */
    SL_EVERSION = -5,        /* MQTT: unsupported protocol name or level */
    SL_ETOOLARGE = -6,       /* packet larger than the permitted maximum */
    SL_EUTF8 = -7,           /* malformed UTF-8 string (also U+0000) */
    SL_ETOPIC = -8,          /* invalid topic name or filter */
    SL_ENOTFOUND = -9,       /* no such item */
    SL_EEXIST = -10,         /* already present */
    SL_ELIMIT = -11,         /* a configured resource limit was reached */
    SL_EIO = -12,            /* network or store I/O failed */
    SL_ETIMEOUT = -13,       /* operation timed out */
    SL_ESTALE = -14,         /* fenced: a newer owner holds the session */
    SL_ECLIENTID = -15,      /* client identifier not valid */
    SL_EPROPERTY = -16,      /* MQTT 5: property not allowed / duplicated */
    SL_EAUTH = -17,          /* authentication or authorization refused */
    SL_EKEEPALIVE = -18,     /* nothing from the client for 1.5 keep alive */
    SL_ETAKENOVER = -19,     /* another connection took the session */
    SL_ESHUTDOWN = -20,      /* the broker is shutting down */
    SL_EUNAVAILABLE = -21,   /* the broker cannot serve (store down) */
    SL_EALIAS = -22,         /* MQTT 5: topic alias out of range */
    SL_ERECEIVEMAX = -23,    /* MQTT 5: client exceeded Receive Maximum */
    SL_EQOS = -24,           /* QoS above max_qos */
    SL_ERETAIN = -25,        /* retain while retain_available is false */
    SL_EFILTER = -26,        /* invalid topic filter */
    SL_EAUTHMETHOD = -27,    /* MQTT 5: authentication method not supported */
    SL_EPACKETID = -28,      /* packet identifier not in use */
    SL_EKEEPALIVEMAX = -29,  /* v3 keep alive above max_keepalive */
};

/* A short, static, human readable text for a status code. */
const char *sl_strerror(int err);

#endif

/*
 * err.h - the one status enum of Starling.
 *
 * Functions return int: 0 (SL_OK) on success, a negative SL_E* value on
 * failure, results through out-parameters. Decoders additionally return
 * SL_AGAIN (positive) when more input is needed. The mapping of these codes to
 * MQTT reason codes lives in one place: mqtt_err_reason() in mqtt.h.
 */
#ifndef STARLING_ERR_H
#define STARLING_ERR_H

enum {
    SL_OK = 0,
    SL_AGAIN = 1,            /* need more input (not an error) */

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
};

/* A short, static, human readable text for a status code. */
const char *sl_strerror(int err);

#endif

/*
 * err.c - texts for the status codes of err.h.
 */
#include "starling/err.h"

const char *sl_strerror(int err)
{
    switch (err) {
    case SL_OK: return "ok";
    case SL_AGAIN: return "need more input";
    case SL_ENOMEM: return "out of memory";
    case SL_EINVAL: return "invalid argument";
    case SL_EMALFORMED: return "malformed packet";
    case SL_EPROTOCOL: return "protocol error";
    case SL_EVERSION: return "unsupported protocol version";
    case SL_ETOOLARGE: return "packet too large";
    case SL_EUTF8: return "malformed UTF-8 string";
    case SL_ETOPIC: return "invalid topic";
    case SL_ENOTFOUND: return "not found";
    case SL_EEXIST: return "already exists";
    case SL_ELIMIT: return "limit reached";
    case SL_EIO: return "I/O error";
    case SL_ETIMEOUT: return "timed out";
    case SL_ESTALE: return "session owned by a newer connection";
    case SL_ECLIENTID: return "client identifier not valid";
    case SL_EPROPERTY: return "invalid property";
    case SL_EAUTH: return "not authorized";
    case SL_NOMATCH: return "no matching subscribers";
    case SL_NOSUB: return "no subscription existed";
    case SL_EKEEPALIVE: return "keepalive timeout";
    case SL_ETAKENOVER: return "session taken over";
    case SL_ESHUTDOWN: return "server shutting down";
    case SL_EUNAVAILABLE: return "server unavailable";
    case SL_EALIAS: return "invalid topic alias";
    case SL_ERECEIVEMAX: return "receive maximum exceeded";
    case SL_EQOS: return "QoS not supported";
    case SL_ERETAIN: return "retain not supported";
    case SL_EFILTER: return "invalid topic filter";
    case SL_EAUTHMETHOD: return "authentication method not supported";
    case SL_EPACKETID: return "packet identifier not found";
    case SL_EKEEPALIVEMAX: return "keep alive above the server's maximum";
    }
    return "unknown error";
}

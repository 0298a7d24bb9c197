/*
 * mqtt.h - the MQTT wire codec (3.1, 3.1.1 and 5.0), without I/O.
 *
 * Decoding is two steps, like hiredis's reader:
 *   1. mqtt_frame() looks at the start of a byte buffer and says whether a
 *      whole packet is there (SL_OK + its total length), more bytes are
 *      needed (SL_AGAIN) or the fixed header is invalid / too large (error).
 *      It never reads past `len`, and rejects a packet whose announced size
 *      exceeds `max_size` before any of the body has arrived.
 *   2. mqtt_decode() parses one complete packet into an mqtt_packet_t whose
 *      strings and binaries are *views* (mqtt_bytes_t) into the caller's
 *      buffer: valid only as long as that buffer is. Nothing is allocated.
 *
 * Encoding writes into an mqtt_out_t: a caller-owned buffer with a capacity.
 * Writers never write beyond the capacity; they keep counting the length, so
 * if out.len > out.cap afterwards the caller retries with a buffer of
 * out.len bytes. Nothing is allocated here either.
 *
 * Protocol versions are the CONNECT protocol levels: 3 (3.1, "MQIsdp"),
 * 4 (3.1.1, "MQTT"), 5 (5.0, "MQTT"). Packets other than CONNECT are decoded
 * and encoded for the version negotiated by CONNECT.
 *
 * Sequences (topic filters in SUBSCRIBE/UNSUBSCRIBE, reason codes in
 * SUBACK/UNSUBACK, user properties) are validated in full by mqtt_decode()
 * and then walked with the *_next() iterators, which cannot fail on a
 * validated packet.
 */
#ifndef STARLING_MQTT_H
#define STARLING_MQTT_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define MQTT_V31 3
#define MQTT_V311 4
#define MQTT_V5 5

/* Largest remaining length the 4-byte variable byte integer can express. */
#define MQTT_MAX_REMAINING 268435455u

typedef enum {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_PUBREC = 5,
    MQTT_PUBREL = 6,
    MQTT_PUBCOMP = 7,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_UNSUBSCRIBE = 10,
    MQTT_UNSUBACK = 11,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
    MQTT_AUTH = 15,
} mqtt_type_t;

/* MQTT 5.0 reason codes (§2.4). v3 CONNACK return codes are 0..5. */
enum {
    MQTT_RC_SUCCESS = 0x00,
    MQTT_RC_GRANTED_QOS1 = 0x01,
    MQTT_RC_GRANTED_QOS2 = 0x02,
    MQTT_RC_DISCONNECT_WITH_WILL = 0x04,
    MQTT_RC_NO_MATCHING_SUBSCRIBERS = 0x10,
    MQTT_RC_NO_SUBSCRIPTION_EXISTED = 0x11,
    MQTT_RC_CONTINUE_AUTH = 0x18,
    MQTT_RC_REAUTHENTICATE = 0x19,
    MQTT_RC_UNSPECIFIED = 0x80,
    MQTT_RC_MALFORMED = 0x81,
    MQTT_RC_PROTOCOL_ERROR = 0x82,
    MQTT_RC_IMPL_SPECIFIC = 0x83,
    MQTT_RC_UNSUPPORTED_VERSION = 0x84,
    MQTT_RC_CLIENTID_NOT_VALID = 0x85,
    MQTT_RC_BAD_USER_OR_PASSWORD = 0x86,
    MQTT_RC_NOT_AUTHORIZED = 0x87,
    MQTT_RC_SERVER_UNAVAILABLE = 0x88,
    MQTT_RC_SERVER_BUSY = 0x89,
    MQTT_RC_BANNED = 0x8A,
    MQTT_RC_SERVER_SHUTTING_DOWN = 0x8B,
    MQTT_RC_BAD_AUTH_METHOD = 0x8C,
    MQTT_RC_KEEPALIVE_TIMEOUT = 0x8D,
    MQTT_RC_SESSION_TAKEN_OVER = 0x8E,
    MQTT_RC_TOPIC_FILTER_INVALID = 0x8F,
    MQTT_RC_TOPIC_NAME_INVALID = 0x90,
    MQTT_RC_PACKET_ID_IN_USE = 0x91,
    MQTT_RC_PACKET_ID_NOT_FOUND = 0x92,
    MQTT_RC_RECEIVE_MAX_EXCEEDED = 0x93,
    MQTT_RC_TOPIC_ALIAS_INVALID = 0x94,
    MQTT_RC_PACKET_TOO_LARGE = 0x95,
    MQTT_RC_MESSAGE_RATE_TOO_HIGH = 0x96,
    MQTT_RC_QUOTA_EXCEEDED = 0x97,
    MQTT_RC_ADMIN_ACTION = 0x98,
    MQTT_RC_PAYLOAD_FORMAT_INVALID = 0x99,
    MQTT_RC_RETAIN_NOT_SUPPORTED = 0x9A,
    MQTT_RC_QOS_NOT_SUPPORTED = 0x9B,
    MQTT_RC_USE_ANOTHER_SERVER = 0x9C,
    MQTT_RC_SERVER_MOVED = 0x9D,
    MQTT_RC_SHARED_SUB_NOT_SUPPORTED = 0x9E,
    MQTT_RC_CONNECTION_RATE_EXCEEDED = 0x9F,
    MQTT_RC_MAX_CONNECT_TIME = 0xA0,
    MQTT_RC_SUB_ID_NOT_SUPPORTED = 0xA1,
    MQTT_RC_WILDCARD_SUB_NOT_SUPPORTED = 0xA2,
};

/* MQTT 3.1 / 3.1.1 CONNACK return codes. */
enum {
    MQTT_V3_ACCEPTED = 0,
    MQTT_V3_BAD_VERSION = 1,
    MQTT_V3_ID_REJECTED = 2,
    MQTT_V3_SERVER_UNAVAILABLE = 3,
    MQTT_V3_BAD_USER_OR_PASSWORD = 4,
    MQTT_V3_NOT_AUTHORIZED = 5,
};

/* MQTT 3.1.1 SUBACK return code refusing a filter. */
#define MQTT_SUBACK_FAILURE 0x80

/* MQTT 5.0 property identifiers (§2.2.2.2). */
enum {
    MQTT_P_PAYLOAD_FORMAT = 0x01,
    MQTT_P_MESSAGE_EXPIRY = 0x02,
    MQTT_P_CONTENT_TYPE = 0x03,
    MQTT_P_RESPONSE_TOPIC = 0x08,
    MQTT_P_CORRELATION_DATA = 0x09,
    MQTT_P_SUBSCRIPTION_ID = 0x0B,
    MQTT_P_SESSION_EXPIRY = 0x11,
    MQTT_P_ASSIGNED_CLIENT_ID = 0x12,
    MQTT_P_SERVER_KEEP_ALIVE = 0x13,
    MQTT_P_AUTH_METHOD = 0x15,
    MQTT_P_AUTH_DATA = 0x16,
    MQTT_P_REQUEST_PROBLEM_INFO = 0x17,
    MQTT_P_WILL_DELAY = 0x18,
    MQTT_P_REQUEST_RESPONSE_INFO = 0x19,
    MQTT_P_RESPONSE_INFO = 0x1A,
    MQTT_P_SERVER_REFERENCE = 0x1C,
    MQTT_P_REASON_STRING = 0x1F,
    MQTT_P_RECEIVE_MAXIMUM = 0x21,
    MQTT_P_TOPIC_ALIAS_MAXIMUM = 0x22,
    MQTT_P_TOPIC_ALIAS = 0x23,
    MQTT_P_MAXIMUM_QOS = 0x24,
    MQTT_P_RETAIN_AVAILABLE = 0x25,
    MQTT_P_USER_PROPERTY = 0x26,
    MQTT_P_MAXIMUM_PACKET_SIZE = 0x27,
    MQTT_P_WILDCARD_SUB_AVAILABLE = 0x28,
    MQTT_P_SUB_ID_AVAILABLE = 0x29,
    MQTT_P_SHARED_SUB_AVAILABLE = 0x2A,
};

/* Pseudo "packet type" used to validate the properties of a CONNECT's will. */
#define MQTT_WILL_PROPS 16

/* A view into a buffer owned by someone else. p may be NULL when len == 0. */
typedef struct mqtt_bytes {
    const uint8_t *p;
    uint32_t len;
} mqtt_bytes_t;

/*
 * MQTT 5.0 properties of one packet. `present` has bit (1u << (id & 31))...
 * use mqtt_props_has(props, MQTT_P_x) to test. Multi-valued properties
 * (user property; subscription identifier in a server->client PUBLISH) are
 * counted here and walked with the iterators below, over `raw`, the whole
 * property block (without its length prefix) as it appeared on the wire.
 */
typedef struct mqtt_props {
    uint64_t present;            /* bit per property id (ids are < 64) */
    mqtt_bytes_t raw;

    uint8_t payload_format;
    uint32_t message_expiry;
    mqtt_bytes_t content_type;
    mqtt_bytes_t response_topic;
    mqtt_bytes_t correlation_data;
    uint32_t subscription_id;    /* first one; see n_subscription_ids */
    uint32_t session_expiry;
    mqtt_bytes_t assigned_client_id;
    uint16_t server_keep_alive;
    mqtt_bytes_t auth_method;
    mqtt_bytes_t auth_data;
    uint8_t request_problem_info;
    uint32_t will_delay;
    uint8_t request_response_info;
    mqtt_bytes_t response_info;
    mqtt_bytes_t server_reference;
    mqtt_bytes_t reason_string;
    uint16_t receive_maximum;
    uint16_t topic_alias_maximum;
    uint16_t topic_alias;
    uint8_t maximum_qos;
    uint8_t retain_available;
    uint32_t maximum_packet_size;
    uint8_t wildcard_sub_available;
    uint8_t sub_id_available;
    uint8_t shared_sub_available;

    uint16_t n_user;             /* number of user properties */
    uint16_t n_subscription_ids; /* number of subscription identifiers */
} mqtt_props_t;

static inline bool mqtt_props_has(const mqtt_props_t *p, int id)
{
    return (p->present >> id) & 1u;
}

/* One topic filter of a SUBSCRIBE (options) or UNSUBSCRIBE (options = 0). */
typedef struct mqtt_sub {
    mqtt_bytes_t filter;
    uint8_t qos;                 /* maximum QoS requested, 0..2 */
    bool no_local;               /* v5 only */
    bool retain_as_published;    /* v5 only */
    uint8_t retain_handling;     /* v5 only, 0..2 */
} mqtt_sub_t;

typedef struct mqtt_connect {
    uint8_t version;             /* 3, 4 or 5 */
    bool clean;                  /* clean session (v3) / clean start (v5) */
    uint16_t keepalive;
    mqtt_bytes_t client_id;
    bool will;
    uint8_t will_qos;
    bool will_retain;
    mqtt_props_t will_props;     /* v5 */
    mqtt_bytes_t will_topic;
    mqtt_bytes_t will_payload;
    bool has_username;
    mqtt_bytes_t username;
    bool has_password;
    mqtt_bytes_t password;
} mqtt_connect_t;

typedef struct mqtt_publish {
    bool dup;
    uint8_t qos;
    bool retain;
    mqtt_bytes_t topic;          /* may be empty in v5 when an alias is used */
    uint16_t packet_id;          /* 0 for QoS 0 */
    mqtt_bytes_t payload;
} mqtt_publish_t;

/*
 * A decoded packet. `props` is filled for v5 packets that carry properties
 * (zeroed otherwise). Fields that a packet type does not have are zero.
 */
typedef struct mqtt_packet {
    mqtt_type_t type;
    uint8_t flags;               /* low nibble of the fixed header */
    uint32_t size;               /* whole packet, fixed header included */
    mqtt_props_t props;
    union {
        mqtt_connect_t connect;
        struct {
            bool session_present;
            uint8_t code;        /* v3 return code or v5 reason code */
        } connack;
        mqtt_publish_t publish;
        struct {                 /* PUBACK, PUBREC, PUBREL, PUBCOMP */
            uint16_t packet_id;
            uint8_t code;        /* v5 reason code, 0 when absent */
        } ack;
        struct {                 /* SUBSCRIBE, UNSUBSCRIBE */
            uint16_t packet_id;
            uint32_t count;      /* number of filters (>= 1) */
            mqtt_bytes_t list;   /* the payload; walk with mqtt_sub_next() */
        } sub;
        struct {                 /* SUBACK, UNSUBACK */
            uint16_t packet_id;
            mqtt_bytes_t codes;  /* one byte per filter (v3.1.1 UNSUBACK: empty) */
        } suback;
        struct {                 /* DISCONNECT, AUTH */
            uint8_t code;        /* v5 reason code, 0 when absent */
        } reason;
    } u;
} mqtt_packet_t;

/* ---- decoding ---------------------------------------------------------- */

/*
 * Inspect the start of buf. On SL_OK *total is the size of the whole first
 * packet (fixed header + remaining length) and *type its packet type.
 * Errors: SL_EMALFORMED (remaining length longer than 4 bytes / non-minimal
 * is allowed), SL_ETOOLARGE (total > max_size; max_size 0 = no limit beyond
 * the protocol's), SL_EMALFORMED for packet type 0. SL_AGAIN: need more bytes.
 * On SL_AGAIN *total is the size the packet will have once the fixed header
 * is complete (so the caller can make room), 0 while it is not.
 */
int mqtt_frame(const uint8_t *buf, size_t len, uint32_t max_size,
               uint32_t *total, mqtt_type_t *type);

/*
 * Decode one complete packet of exactly `len` bytes (as framed above).
 * `version` is the negotiated protocol level; ignored for CONNECT (which
 * carries its own; then out->u.connect.version is set). Returns SL_OK or
 * SL_EMALFORMED / SL_EPROTOCOL / SL_EVERSION / SL_EUTF8 / SL_ETOPIC /
 * SL_EPROPERTY. Checks everything the spec makes a decoding concern:
 * reserved flag bits, QoS 3, wildcard in PUBLISH topic, empty SUBSCRIBE,
 * remaining length vs content, UTF-8 well-formedness and U+0000, property
 * identifiers allowed for the packet type and not duplicated (except user
 * property; subscription id in PUBLISH), property value ranges, will flags
 * consistency, packet id != 0 where required.
 * For CONNECT with an unknown protocol name/level it returns SL_EVERSION
 * with out->u.connect.version set to the level seen, so the caller can
 * answer with the right CONNACK.
 */
int mqtt_decode(const uint8_t *buf, size_t len, int version,
                mqtt_packet_t *out);
/*
 * Which error for what (a summary; the spec's wording decides):
 *   SL_EMALFORMED  fixed-header flags, QoS 3 (PUBLISH, will), DUP on QoS 0,
 *                  length fields past the end or leftover bytes, connect
 *                  flag bit 0, will flags without a will, password without
 *                  user name (3.1, 3.1.1), subscription options reserved
 *                  bits (and QoS 3 in 3.1/3.1.1), an unknown property or
 *                  one not allowed in the packet type, AUTH before 5.0.
 *   SL_EPROTOCOL   packet identifier 0; SUBSCRIBE/UNSUBSCRIBE/SUBACK/v5
 *                  UNSUBACK without entries; v5 subscription options with
 *                  QoS 3 or retain handling 3; empty v5 topic without a
 *                  topic alias; a reason/return code not defined for the
 *                  packet type.
 *   SL_EPROPERTY   a single-valued property repeated, a property value out
 *                  of range (0 where forbidden, not 0/1 where a flag);
 *                  CONNECT authentication data without a method.
 *   SL_EUTF8       a UTF-8 string field fails mqtt_utf8_valid().
 *   SL_ETOPIC      '+' or '#' in a PUBLISH or will topic; empty topic in
 *                  3.1/3.1.1 PUBLISH or in a will.
 *   SL_EVERSION    CONNECT protocol name/level not one of MQIsdp/3,
 *                  MQTT/4, MQTT/5 (u.connect.version = level byte).
 *   SL_EINVAL      `version` not 3, 4 or 5 for a packet other than CONNECT.
 * Not checked here (broker concerns): topic filter syntax, $share rules,
 * client id length, direction rules (e.g. a client's PUBLISH must not carry
 * a subscription identifier), limits negotiated in CONNECT/CONNACK.
 * 3.1 leniency: PUBREL/SUBSCRIBE/UNSUBSCRIBE may carry the DUP bit (3.1
 * retransmits them with DUP set); the 3.1 CONNACK first byte is unused.
 */

/* Iterate the filters of a decoded SUBSCRIBE/UNSUBSCRIBE. *cursor starts at
 * 0. Returns true and fills *sub while there are more. */
bool mqtt_sub_next(const mqtt_packet_t *pkt, int version, size_t *cursor,
                   mqtt_sub_t *sub);

/* Iterate user properties (key, value) of a decoded property block.
 * (n_user stops counting at 65535; the iterator always walks them all.) */
bool mqtt_props_user_next(const mqtt_props_t *props, size_t *cursor,
                          mqtt_bytes_t *key, mqtt_bytes_t *value);

/* Iterate subscription identifiers of a decoded property block. */
bool mqtt_props_subid_next(const mqtt_props_t *props, size_t *cursor,
                           uint32_t *id);

/* Validate UTF-8 as MQTT requires (§1.5.4): well-formed, no U+0000, no
 * surrogates. (Control characters and non-characters are allowed.) */
bool mqtt_utf8_valid(const uint8_t *s, size_t len);
/* The same with U+0000 allowed: well-formed UTF-8 as RFC 3629 has it. */
bool sl_utf8_valid(const uint8_t *s, size_t len);

/* The reason code a decoding error maps to (0x81 malformed, 0x82 protocol
 * error, 0x95 too large, 0x84 unsupported version...). One place. */
uint8_t mqtt_err_reason(int err);
/* The CONNACK code for a status: the v5 reason code, or for MQTT 3.1 and
 * 3.1.1 the CONNACK return code (0-5). */
uint8_t mqtt_connack_code(int status, int version);
/* The v5 reason code of a status in an acknowledgement of type `type`
 * (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK): a code the spec does
 * not allow there becomes 0x80 (Unspecified error). */
uint8_t mqtt_ack_code(int status, int type);
/* The SUBACK code refusing a filter for a status: the v5 reason code, or
 * 0x80 for MQTT 3. */
uint8_t mqtt_suback_code(int status, int version);
/* A reason code (received or sent) that reports a failure (>= 0x80). */
static inline bool mqtt_rc_failed(uint8_t code)
{
    return code >= 0x80;
}

/* A name for a packet type, for logs ("PUBLISH"). */
const char *mqtt_type_name(int type);

/* ---- encoding ---------------------------------------------------------- */

typedef struct mqtt_out {
    uint8_t *buf;
    size_t cap;
    size_t len;                  /* may exceed cap: then retry with len */
} mqtt_out_t;

static inline void mqtt_out_init(mqtt_out_t *o, uint8_t *buf, size_t cap)
{
    o->buf = buf;
    o->cap = cap;
    o->len = 0;
}

/*
 * What out.len becomes when something cannot be encoded at all: a string or
 * binary field over 65535 bytes, a variable byte integer or a remaining
 * length over MQTT_MAX_REMAINING. The writers then leave it there (nothing
 * more is written); such a packet must not be retried with a bigger buffer.
 */
#define MQTT_OUT_OVERFLOW SIZE_MAX

static inline bool mqtt_out_failed(const mqtt_out_t *o)
{
    return o->len == MQTT_OUT_OVERFLOW;
}

/* Low level writers (used by the packet encoders and by callers that build
 * property blocks). */
void mqtt_put_u8(mqtt_out_t *o, uint8_t v);
void mqtt_put_u16(mqtt_out_t *o, uint16_t v);
void mqtt_put_u32(mqtt_out_t *o, uint32_t v);
void mqtt_put_varint(mqtt_out_t *o, uint32_t v);
void mqtt_put_bytes(mqtt_out_t *o, const void *p, size_t len); /* raw */
void mqtt_put_str(mqtt_out_t *o, const void *p, size_t len);   /* u16 + bytes */
size_t mqtt_varint_size(uint32_t v);

/*
 * A property block under construction: callers append properties to a
 * small buffer, then hand it to a packet encoder, which writes the length
 * prefix. Append helpers write identifier + value.
 */
void mqtt_prop_u8(mqtt_out_t *o, int id, uint8_t v);
void mqtt_prop_u16(mqtt_out_t *o, int id, uint16_t v);
void mqtt_prop_u32(mqtt_out_t *o, int id, uint32_t v);
void mqtt_prop_varint(mqtt_out_t *o, int id, uint32_t v);
void mqtt_prop_str(mqtt_out_t *o, int id, const void *p, size_t len);
void mqtt_prop_pair(mqtt_out_t *o, int id, const void *k, size_t klen,
                    const void *v, size_t vlen); /* user property */

/*
 * Packet encoders. `version` selects the wire format; `props` is an encoded
 * property block (without length prefix), used only for v5 (NULL = none).
 */
void mqtt_enc_connect(mqtt_out_t *o, const mqtt_connect_t *c,
                      const mqtt_bytes_t *props);
/* For v5 the will properties are taken from c->will_props.raw. */
void mqtt_enc_connack(mqtt_out_t *o, int version, bool session_present,
                      uint8_t code, const mqtt_bytes_t *props);

/* Whole PUBLISH: header + payload. */
void mqtt_enc_publish(mqtt_out_t *o, int version, const mqtt_publish_t *p,
                      const mqtt_bytes_t *props);
/*
 * Only the PUBLISH header (fixed header, topic, packet id, properties),
 * sized for a payload of payload_len bytes that the caller sends after it
 * (zero-copy fan-out: one shared payload, a header per subscriber).
 */
void mqtt_enc_publish_header(mqtt_out_t *o, int version,
                             const mqtt_publish_t *p, size_t payload_len,
                             const mqtt_bytes_t *props);

/* PUBACK/PUBREC/PUBREL/PUBCOMP. v5: code and props are omitted when code is
 * 0 and props is empty (§3.4.2.1). */
void mqtt_enc_ack(mqtt_out_t *o, int version, mqtt_type_t type,
                  uint16_t packet_id, uint8_t code, const mqtt_bytes_t *props);

/* SUBSCRIBE with n filters. v3: only filter + qos are used. */
void mqtt_enc_subscribe(mqtt_out_t *o, int version, uint16_t packet_id,
                        const mqtt_sub_t *subs, size_t n,
                        const mqtt_bytes_t *props);
void mqtt_enc_unsubscribe(mqtt_out_t *o, int version, uint16_t packet_id,
                          const mqtt_bytes_t *filters, size_t n,
                          const mqtt_bytes_t *props);
/* SUBACK/UNSUBACK with n reason codes (v3.1.1 UNSUBACK: codes ignored). */
void mqtt_enc_suback(mqtt_out_t *o, int version, mqtt_type_t type,
                     uint16_t packet_id, const uint8_t *codes, size_t n,
                     const mqtt_bytes_t *props);
void mqtt_enc_pingreq(mqtt_out_t *o);
void mqtt_enc_pingresp(mqtt_out_t *o);
/* DISCONNECT / AUTH. v3 DISCONNECT: code and props ignored. v5: short form
 * when code is 0 and no props. */
void mqtt_enc_reason(mqtt_out_t *o, int version, mqtt_type_t type,
                     uint8_t code, const mqtt_bytes_t *props);

#endif

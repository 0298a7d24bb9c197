/*
 * scripts.h - the Lua scripts of the Redis backend: one per atomic session
 * operation (internal to src/store/).
 *
 * Every script touches only the keys passed in KEYS, and the per-client
 * keys of one call share the hash tag {c:<cid>} (one cluster slot); the one
 * exception, the queue script, takes several sessions' keys: any on a
 * standalone server, those of one slot on a cluster:
 *   s     sl:{c:<cid>}:s     hash: epoch ver exp will wd on at seq
 *   subs  sl:{c:<cid>}:subs  hash: filter -> 5-byte options (blob.h)
 *   q     sl:{c:<cid>}:q     stream: entry "<id>-0", field m = qos + message
 *   out   sl:{c:<cid>}:out   hash: entry id -> pid | state << 16 (sent ones)
 *   in    sl:{c:<cid>}:in    set: inbound QoS 2 packet ids
 * Standalone servers also get the global index keys (psessions, expiry) as
 * KEYS[n+1], KEYS[n+2], so the indexes change atomically with the session;
 * on a cluster they live in other slots and redis.c updates them with
 * separate commands after the script.
 *
 * Fenced scripts take the writer's epoch as ARGV[1] ("0" = any) and return
 * -9 (SL_ENOTFOUND) when the session does not exist, -14 (SL_ESTALE) when
 * the epoch is not the current one. Status results are the SL_* codes of
 * err.h.
 */
#ifndef STARLING_STORE_SCRIPTS_H
#define STARLING_STORE_SCRIPTS_H

enum {
    SCRIPT_CLAIM,
    SCRIPT_SESSION_PUT,
    SCRIPT_OFFLINE,
    SCRIPT_SESSION_DEL,
    SCRIPT_SUB_PUT,
    SCRIPT_SUB_DEL,
    SCRIPT_SUB_LOAD,
    SCRIPT_QUEUE,
    SCRIPT_N
};

/* The script bodies, indexed by SCRIPT_*. */
extern const char *const store_script_body[SCRIPT_N];

#endif

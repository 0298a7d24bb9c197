/*
 * scripts.c - the Lua bodies of the Redis backend's atomic session
 * operations (see scripts.h for the key layout and return conventions).
 *
 * Numbers that leave a script as strings go through string.format('%d'):
 * Lua's own number-to-string conversion switches to exponents past 14
 * digits. Epochs and times are milliseconds-sized, far below 2^53.
 */
#include "scripts.h"

/* ARGV[1] = epoch ("0" = any). Returns 0, -9 or -14. */
#define FENCE                                                                  \
    "local function fence(s, epoch)\n"                                         \
    "  local e = redis.call('HGET', s, 'epoch')\n"                             \
    "  if not e then return -9 end\n"                                          \
    "  if epoch ~= '0' and e ~= epoch then return -14 end\n"                   \
    "  return 0\n"                                                             \
    "end\n"                                                                    \
    "local f = fence(KEYS[1], ARGV[1])\n"                                      \
    "if f ~= 0 then return f end\n"

/*
 * KEYS s subs q out in [psessions expiry]
 * ARGV cid clean now_ms ver exp will will_delay
 * The new epoch is above the previous one and at least now_ms, so a session
 * deleted and created again never reuses an epoch a cut-off node may still
 * hold. An offline session whose expiry has passed is discarded (the
 * expiry sweep may not have run yet, e.g. when no node was up).
 * Returns {epoch, kept, existed, ver, exp, will, wd, subs, q, out, in}.
 */
static const char claim_lua[] =
    "local s = KEYS[1]\n"
    "local old = redis.call('HMGET', s, 'epoch', 'ver', 'exp', 'will', "
    "'wd', 'on', 'at')\n"
    "local now = tonumber(ARGV[3])\n"
    "local exists = old[1] ~= false\n"
    "local keep = exists and ARGV[2] == '0'\n"
    "if keep and old[6] == '0' and old[7] and old[7] ~= 'never' and\n"
    "   tonumber(old[7]) <= now then keep = false end\n"
    "local epoch = now\n"
    "if exists and tonumber(old[1]) >= epoch then\n"
    "  epoch = tonumber(old[1]) + 1\n"
    "end\n"
    "if not keep then\n"
    "  redis.call('DEL', s, KEYS[2], KEYS[3], KEYS[4], KEYS[5])\n"
    "end\n"
    "redis.call('HSET', s, 'epoch', string.format('%d', epoch), 'ver', "
    "ARGV[4], 'exp', ARGV[5], 'will', ARGV[6], 'wd', ARGV[7], 'on', '1')\n"
    "redis.call('HDEL', s, 'at')\n"
    "if KEYS[6] then\n"
    "  redis.call('SADD', KEYS[6], ARGV[1])\n"
    "  redis.call('ZREM', KEYS[7], ARGV[1])\n"
    "end\n"
    "local r = {epoch, keep and 1 or 0, exists and 1 or 0, old[2] or '',\n"
    "  old[3] or '', old[4] or '', old[5] or '', {}, {}, {}, {}}\n"
    "if keep then\n"
    "  r[8] = redis.call('HGETALL', KEYS[2])\n"
    "  r[9] = redis.call('XRANGE', KEYS[3], '-', '+')\n"
    "  r[10] = redis.call('HGETALL', KEYS[4])\n"
    "  r[11] = redis.call('SMEMBERS', KEYS[5])\n"
    "end\n"
    "return r\n";

/* KEYS s; ARGV epoch ver exp will will_delay */
static const char session_put_lua[] =
    FENCE "redis.call('HSET', KEYS[1], 'ver', ARGV[2], 'exp', ARGV[3], "
          "'will', ARGV[4], 'wd', ARGV[5])\n"
          "return 0\n";

/*
 * KEYS s [psessions expiry]; ARGV epoch now_ms cid
 * Returns {0, expire_at_ms} (-1 = never: expiry 0xFFFFFFFF).
 */
static const char offline_lua[] =
    FENCE "local exp = tonumber(redis.call('HGET', KEYS[1], 'exp') or '0')\n"
          "local at = -1\n"
          "if exp ~= 4294967295 then at = tonumber(ARGV[2]) + exp * 1000 end\n"
          "local ats = 'never'\n"
          "if at >= 0 then ats = string.format('%d', at) end\n"
          "redis.call('HSET', KEYS[1], 'on', '0', 'at', ats)\n"
          "if KEYS[2] then\n"
          "  redis.call('SADD', KEYS[2], ARGV[3])\n"
          "  if at >= 0 then redis.call('ZADD', KEYS[3], ats, ARGV[3])\n"
          "  else redis.call('ZREM', KEYS[3], ARGV[3]) end\n"
          "end\n"
          "return {0, at}\n";

/*
 * KEYS s subs q out in [psessions expiry]; ARGV epoch offline_only cid
 * With offline_only "1" a session that is online is refused (-14).
 */
static const char session_del_lua[] =
    "local v = redis.call('HMGET', KEYS[1], 'epoch', 'on')\n"
    "local rc = 0\n"
    "if not v[1] then rc = -9\n"
    "elseif ARGV[1] ~= '0' and v[1] ~= ARGV[1] then return -14\n"
    "elseif ARGV[2] == '1' and v[2] ~= '0' then return -14\n"
    "else redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])\n"
    "end\n"
    "if KEYS[6] then\n"
    "  redis.call('SREM', KEYS[6], ARGV[3])\n"
    "  redis.call('ZREM', KEYS[7], ARGV[3])\n"
    "end\n"
    "return rc\n";

/* KEYS s subs; ARGV epoch filter options */
static const char sub_put_lua[] =
    FENCE "redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])\n"
          "return 0\n";

/* KEYS s subs; ARGV epoch filter */
static const char sub_del_lua[] = FENCE "redis.call('HDEL', KEYS[2], ARGV[2])\n"
                                        "return 0\n";

/* KEYS s subs. The subscriptions, or nil when there is no session. */
static const char sub_load_lua[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return false end\n"
    "return redis.call('HGETALL', KEYS[2])\n";

/*
 * The queue operations of one batch (redis_queue.c), in issue order.
 * KEYS s q out in, once per session the batch touches (any number of
 * sessions on a standalone server; on a cluster all of them in one slot).
 * ARGV max_queued drop_oldest n_entries entry..., then the operations, each
 * a code (session index, 1-based, * 8 + kind) and its arguments:
 *   0 append  entry index (1-based), so a message going to many queues
 *             travels once                      -> the new id, -9 or -11
 *   1 mark    epoch id state ("0" = not sent)   -> 0, -9 or -14
 *   2 ack     epoch id                          -> 0, -9 or -14
 *   3 in_put  epoch pid  (inbound QoS 2 id)     -> 0, -9 or -14
 *   4 in_del  epoch pid                         -> 0, -9 or -14
 * Returns one result per operation.
 *
 * Append: max_queued counts the entries not sent yet (those not in out): a
 * queue holding that many refuses the new one (-11) or drops its oldest
 * entry never sent; entries in flight are never dropped. The common case
 * costs three calls: XLEN (HLEN only when the queue could be full), HINCRBY
 * and XADD. The session's existence is seen from HINCRBY: a first id of 1
 * means the field was absent, and then the record itself may be (it is
 * created by the HINCRBY, so it is deleted again). A session that does not
 * exist has no queue either (they are deleted together), so the limit
 * check before it never refuses or drops for a missing session.
 *
 * All but append are fenced by the epoch (ARGV of each operation, "0" =
 * any): the session's epoch is read once per script (nothing here changes
 * it).
 * Mark: the entry must exist; state "0" forgets its packet id. Ack: the
 * entry and its delivery state go; -9 when it was not there.
 */
static const char queue_lua[] =
    "local max = tonumber(ARGV[1])\n"
    "local ne = tonumber(ARGV[3])\n"
    "local epochs = {}\n"
    "local function fence(si, epoch)\n"
    "  local e = epochs[si]\n"
    "  if e == nil then\n"
    "    e = redis.call('HGET', KEYS[4 * si - 3], 'epoch')\n"
    "    epochs[si] = e\n"
    "  end\n"
    "  if not e then return -9 end\n"
    "  if epoch ~= '0' and e ~= epoch then return -14 end\n"
    "  return 0\n"
    "end\n"
    "local function append(s, q, out, entry)\n"
    "  if max > 0 then\n"
    "    local n = redis.call('XLEN', q)\n"
    "    local sent = n >= max and redis.call('HLEN', out) or 0\n"
    "    if n - sent >= max then\n"
    "      if ARGV[2] == '0' then return -11 end\n"
    "      local r = redis.call('XRANGE', q, '-', '+', 'COUNT', sent + 1)\n"
    "      for i = 1, #r do\n"
    "        local id = string.match(r[i][1], '^(%d+)')\n"
    "        if redis.call('HEXISTS', out, id) == 0 then\n"
    "          redis.call('XDEL', q, r[i][1])\n"
    "          break\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  local id = redis.call('HINCRBY', s, 'seq', '1')\n"
    "  if id == 1 and redis.call('HEXISTS', s, 'epoch') == 0 then\n"
    "    redis.call('DEL', s)\n"
    "    return -9\n"
    "  end\n"
    "  redis.call('XADD', q, string.format('%d-0', id), 'm', entry)\n"
    "  return id\n"
    "end\n"
    "local res = {}\n"
    "local i = 4 + ne\n"
    "while i <= #ARGV do\n"
    "  local c = tonumber(ARGV[i])\n"
    "  local k = c % 8\n"
    "  local si = (c - k) / 8\n"
    "  local q, out = KEYS[4 * si - 2], KEYS[4 * si - 1]\n"
    "  local r\n"
    "  if k == 0 then\n"
    "    r = append(KEYS[4 * si - 3], q, out, ARGV[3 + tonumber(ARGV[i + 1])])\n"
    "    i = i + 2\n"
    "  elseif k == 1 then\n"
    "    r = fence(si, ARGV[i + 1])\n"
    "    local id = ARGV[i + 2]\n"
    "    if r == 0 then\n"
    "      local e = id .. '-0'\n"
    "      if #redis.call('XRANGE', q, e, e) == 0 then r = -9\n"
    "      elseif ARGV[i + 3] == '0' then redis.call('HDEL', out, id)\n"
    "      else redis.call('HSET', out, id, ARGV[i + 3]) end\n"
    "    end\n"
    "    i = i + 4\n"
    "  elseif k == 2 then\n"
    "    r = fence(si, ARGV[i + 1])\n"
    "    local id = ARGV[i + 2]\n"
    "    if r == 0 then\n"
    "      local n = redis.call('XDEL', q, id .. '-0')\n"
    "      redis.call('HDEL', out, id)\n"
    "      if n == 0 then r = -9 end\n"
    "    end\n"
    "    i = i + 3\n"
    "  else\n"
    "    r = fence(si, ARGV[i + 1])\n"
    "    if r == 0 then\n"
    "      redis.call(k == 3 and 'SADD' or 'SREM', KEYS[4 * si], ARGV[i + 2])\n"
    "    end\n"
    "    i = i + 3\n"
    "  end\n"
    "  res[#res + 1] = r\n"
    "end\n"
    "return res\n";

const char *const store_script_body[SCRIPT_N] = {
    [SCRIPT_CLAIM] = claim_lua,
    [SCRIPT_SESSION_PUT] = session_put_lua,
    [SCRIPT_OFFLINE] = offline_lua,
    [SCRIPT_SESSION_DEL] = session_del_lua,
    [SCRIPT_SUB_PUT] = sub_put_lua,
    [SCRIPT_SUB_DEL] = sub_del_lua,
    [SCRIPT_SUB_LOAD] = sub_load_lua,
    [SCRIPT_QUEUE] = queue_lua,
};

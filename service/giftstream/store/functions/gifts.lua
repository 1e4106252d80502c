#!lua name=giftstream_gifts
--[[
The two halves of a gift. Each touches exactly one slot, so viewer and host may live on different
shards; the outbox on the viewer's slot carries the gift from the first half to the second.
Payloads are msgpack maps (cmsgpack keeps integers exact).

Idempotency has two tiers (docs/architecture.md, "Two-tier idempotency"). A request id's
stored answer {fingerprint hash, event, balance} stays in Valkey for the hot window: the archiver
deletes it once its ledger entry (which carries the same `fp` hash) is in PostgreSQL and older
than `idempotency_hot_s`; its ttl is only a safety net. For the whole idempotency ttl, a filter of
the user's request ids says whether an id with no stored answer may have been seen: a Bloom filter
in two bitmaps (`seen:0`, `seen:1`) of 64 + `bits` bits, one per generation of one ttl each
(generation g = floor(now / ttl) is in bitmap g % 2, whose first 64 bits hold g; a bitmap of an
older generation is cleared before reuse and expires at the end of generation g + 1). An id is
set at 3 positions from its SHA-1; a request of the last ttl is in generation g or g - 1.

giftstream_gift_debit   (viewer slot {u:<viewer>})
  KEYS: acct, idem (this request id's stored answer), ledger, outbox, streak, daily (spending
        today), bucket (the gift rate limit: tokens, at), pending (the slot's index of pending
        outboxes: a key with a hash tag of the viewer's slot), filter 0, filter 1
  ARGV: 1 the request, msgpack [request id, fingerprint, new event id, cost in coins, viewer id,
          room, host, gift id, gift name, count, streakable (bool), sender display name,
          video id ('' for a live gift), checked (bool: the ledger of record has no entry of
          this id: skip the filter)]
        2 the rules, msgpack [idempotency ttl (s), streak timeout (ms), gifts per second
          refilled, burst (bucket size), filter bits] (packed once per process)
  Two packed arguments rather than 19: each argument costs the client and the script.
  -> {'ok', event, balance, payload}      debited now; payload is the outbox entry to credit
     {'replay', event, balance, payload|nil}  this id was debited before (same content): the
                                          original answer; payload while its credit is pending
     {'conflict'}                         this id was used with other content; nothing changed
     {'cold'}                             no stored answer, but the filter may have seen the id:
                                          look it up in PostgreSQL (found: its answer; not found:
                                          call again with checked '1'); nothing changed
     {'no_user'}                          no such account; nothing changed
     {'insufficient', balance}            not enough coins; nothing changed
     {'spending_limit', cap, spent today} the daily cap would be exceeded; nothing changed
     {'rate_limited', retry after (ms)}   over the gift rate (a token bucket shared by every
                                          worker); nothing changed
     {'frozen'}                           the account is frozen; nothing changed
  Order: stored answer and filter first, then every check, and only then the writes.
  The streak (id, repeat) is assigned here, atomically with the debit: a tap is counted once.
  Ledger: user:<viewer> coins -cost, platform:spent coins +cost; the entry carries `request`
  and `fp` (the fingerprint hash), from which a replay past the hot window is answered.

giftstream_gift_answer  (read-only, viewer slot)
  KEYS: idem, filter 0, filter 1    ARGV: 1 request id, 2 fingerprint, 3 filter bits,
        4 idempotency ttl (s)
  -> {'replay', event, balance} | {'conflict'} | {'cold'} (as gift_debit) | {'new'} (never seen)

giftstream_gift_credit  (room slot {r:<room>})
  KEYS: room, credited (event -> 'gift offset:diamonds:total'), events (history), ledger,
        session, session gifts (gift -> count), session top (zset user -> coins),
        all-time top (zset), names (user -> display name), battle scores (the room's score
        outbox, battles.lua)
  ARGV: 1 payload (from giftstream_gift_debit), 2 pub/sub channel of the room, 3 the rules,
        msgpack [diamonds per coin numerator, denominator, history length kept, coins that make
        a long-time supporter, coins that make a big gift, leaderboard size] (packed once per
        process)
  -> {'ok', gift offset, credit offset, diamonds, total, score|nil}
     {'dup', gift offset, credit offset, diamonds, total}   already credited: nothing changed
     {'no_room'}                                            no such room; nothing changed
  Dedupes on the event id, credits the host's diamonds (carrying any fraction), appends a `gift`
  and a `credit` event to the room history with consecutive offsets, and publishes both. A gift
  to a video (payload.video) appends and publishes only the `credit` event.
  Boards: adds the coins to the session's and the all-time top gifters; the gift frame carries the
  sender's badge ({rank} in the session's top 3, {supporter} past the all-time threshold), the
  credit frame a `thank` reason for the host ('new' gifter this session, or a 'big' gift), and a
  `leaderboard` frame is published when the sender is on the session's board.
  Battle: a live gift in a room linked to a battle leaves its score (msgpack {battle, event,
  room, from, from_name, coins, ts: credit time}) in the room's score outbox, and returns it.
  Ledger: platform:diamonds diamonds -d, host:<host> diamonds +d.

giftstream_outbox_settle  (a user's slot {u:<user>})
  KEYS: outbox, pending (the slot's index)    ARGV: 1 user, 2.. event ids (none: only tidy)
  -> entries removed
  Removes credited entries from the outbox; the user leaves the index once the outbox is empty.

giftstream_outbox_pending
  (read-only; the index keys of many slots of one node: the one cross-slot call)
  KEYS: none    ARGV: 1 oldest time (ms) to report, 2 most users per index, 3.. index keys
  Each key is checked by its own command: a cluster refuses one command across slots (and in
  Valkey 9 that refusal inside a script breaks the scripts run after it).
  -> {user, time, user, time, ...}: users whose outbox has an entry pending since `time` or
     earlier. Flagged allow-cross-slot-keys: it reads only indexes, writes nothing, and is sent
     to the node that holds every key it names.
]]

-- Bits before a filter's positions: the generation it holds (i64).
local FILTER_HEADER = 64

local function fingerprint_hash(fingerprint)
  return string.sub(redis.sha1hex(fingerprint), 1, 16)
end

-- A stored answer: whether the content matches, its event, its balance. An answer stored before
-- the hash (a map with the whole fingerprint) is read too, until its ttl ends.
local function read_answer(stored, fingerprint, hash)
  local r = cmsgpack.unpack(stored)
  if r.fp then return r.fp == fingerprint, r.event, r.balance end
  return r[1] == hash, r[2], r[3]
end

-- The filter's view of a request id: its positions, the generation now, the generation each
-- bitmap holds, and whether one of the last two generations has every position set.
local function filter_state(filters, request_id, bits, span_ms, now)
  local h = redis.sha1hex(request_id)
  local positions = {}
  for i = 1, 3 do
    positions[i] = FILTER_HEADER + tonumber(string.sub(h, 8 * i - 7, 8 * i), 16) % bits
  end
  local generation = math.floor(now / span_ms)
  local held, seen = {}, false
  for i, key in ipairs(filters) do
    local got = redis.call('BITFIELD_RO', key, 'GET', 'i64', 0, 'GET', 'u1', positions[1],
      'GET', 'u1', positions[2], 'GET', 'u1', positions[3])
    held[i] = got[1]
    if got[1] >= generation - 1 and got[2] == 1 and got[3] == 1 and got[4] == 1 then
      seen = true
    end
  end
  return {positions = positions, generation = generation, held = held, seen = seen}
end

local function filter_add(filters, state, bits, span_ms)
  local g, p = state.generation, state.positions
  local slot = g % 2 + 1
  local key = filters[slot]
  if state.held[slot] ~= g then
    -- It holds generation g - 2 or older: ids past the ttl. Cleared, and at its full size at
    -- once (its last bit): a user's filter never grows.
    redis.call('DEL', key)
    redis.call('SETBIT', key, FILTER_HEADER + bits - 1, 0)
  end
  redis.call('BITFIELD', key, 'SET', 'i64', 0, g, 'SET', 'u1', p[1], 1, 'SET', 'u1', p[2], 1,
    'SET', 'u1', p[3], 1)
  if state.held[slot] ~= g then redis.call('PEXPIREAT', key, (g + 2) * span_ms) end
end

local function gift_debit(keys, args)
  local acct, idem, ledger, outbox, streak, daily = keys[1], keys[2], keys[3], keys[4], keys[5],
    keys[6]
  local bucket, pending = keys[7], keys[8]
  local filters = {keys[9], keys[10]}
  local q, rules = cmsgpack.unpack(args[1]), cmsgpack.unpack(args[2])
  local request_id, fingerprint, event, cost = q[1], q[2], q[3], q[4]
  local viewer, room, host, gift, name, count = q[5], q[6], q[7], q[8], q[9], q[10]
  local streakable, from_name, video, checked = q[11], q[12], q[13], q[14]
  local ttl, timeout, rate, burst, bits = rules[1], rules[2], rules[3], rules[4], rules[5]
  local hash = fingerprint_hash(fingerprint)

  local stored = redis.call('GET', idem)
  if stored then
    local same, original, balance = read_answer(stored, fingerprint, hash)
    if not same then return {'conflict'} end
    return {'replay', original, balance, redis.call('HGET', outbox, original)}
  end
  local now = now_ms()
  local filter = filter_state(filters, request_id, bits, ttl * 1000, now)
  if filter.seen and not checked then return {'cold'} end

  -- One read of each hash: a command from a script costs more than its own work.
  local a = redis.call('HMGET', acct, 'coins', 'frozen', 'daily_cap', 'spent')
  if not a[1] then return {'no_user'} end
  if a[2] == '1' then return {'frozen'} end
  local b = redis.call('HMGET', bucket, 'tokens', 'at')
  local tokens = burst
  if b[1] then tokens = math.min(burst, tonumber(b[1]) + (now - tonumber(b[2])) * rate / 1000) end
  if tokens < 1 then return {'rate_limited', math.ceil((1 - tokens) * 1000 / rate)} end
  local balance = tonumber(a[1])
  if balance < cost then return {'insufficient', balance} end

  local today = math.floor(now / 86400000)
  local spent_today = 0
  local d = redis.call('HMGET', daily, 'day', 'spent')
  if tonumber(d[1] or '-1') == today then spent_today = tonumber(d[2]) end
  local cap = a[3]
  if cap and spent_today + cost > tonumber(cap) then
    return {'spending_limit', tonumber(cap), spent_today}
  end

  local payload = {event = event, room = room, host = host, from = viewer, from_name = from_name,
    gift = gift, name = name, count = count, coins = cost, ts = now}
  if video ~= '' then payload.video = video end
  if streakable then
    local s = redis.call('HMGET', streak, 'id', 'room', 'gift', 'repeat', 'last')
    if s[1] and s[2] == room and s[3] == gift and now - tonumber(s[5]) <= timeout then
      payload.streak_id, payload.streak_repeat = s[1], tonumber(s[4]) + count
    else
      payload.streak_id, payload.streak_repeat = event, count
    end
    redis.call('HSET', streak, 'id', payload.streak_id, 'room', room, 'gift', gift,
      'repeat', payload.streak_repeat, 'last', now)
    redis.call('PEXPIRE', streak, timeout * 10)
  else
    -- A single gift interrupts any combo in progress.
    redis.call('DEL', streak)
  end

  local after = balance - cost
  redis.call('HSET', acct, 'coins', after, 'spent', tonumber(a[4] or '0') + cost)
  redis.call('HSET', bucket, 'tokens', tokens - 1, 'at', now)
  redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
  redis.call('HSET', daily, 'day', today, 'spent', spent_today + cost)
  redis.call('PEXPIRE', daily, 2 * 86400000)
  local packed = cmsgpack.pack(payload)
  redis.call('HSET', outbox, event, packed)
  redis.call('ZADD', pending, 'NX', now, viewer)
  post(ledger, 'gift', event, after,
    {{'user:' .. viewer, 'coins', -cost}, {'platform:spent', 'coins', cost}},
    {'room', room, 'host', host, 'gift', gift, 'count', count, 'request', request_id,
     'video', video, 'fp', hash}, now)
  redis.call('SET', idem, cmsgpack.pack({hash, event, after}), 'EX', ttl)
  filter_add(filters, filter, bits, ttl * 1000)
  return {'ok', event, after, packed}
end

local function gift_answer(keys, args)
  local fingerprint = args[2]
  local stored = redis.call('GET', keys[1])
  if stored then
    local same, event, balance = read_answer(stored, fingerprint, fingerprint_hash(fingerprint))
    if not same then return {'conflict'} end
    return {'replay', event, balance}
  end
  local ttl_ms = tonumber(args[4]) * 1000
  if filter_state({keys[2], keys[3]}, args[1], tonumber(args[3]), ttl_ms, now_ms()).seen then
    return {'cold'}
  end
  return {'new'}
end

local function leaderboard(top, names, size)
  local board = {}
  local ranked = redis.call('ZREVRANGE', top, 0, size - 1, 'WITHSCORES')
  for i = 1, #ranked, 2 do
    board[#board + 1] = {user = ranked[i], name = redis.call('HGET', names, ranked[i]),
      coins = tonumber(ranked[i + 1])}
  end
  return board
end

local function gift_credit(keys, args)
  local room, credited, events, ledger = keys[1], keys[2], keys[3], keys[4]
  local session, session_gifts, top, alltime, names = keys[5], keys[6], keys[7], keys[8], keys[9]
  local p, channel, rules = cmsgpack.unpack(args[1]), args[2], cmsgpack.unpack(args[3])
  local numerator, denominator, history = rules[1], rules[2], rules[3]
  local supporter_coins, big_coins, size = rules[4], rules[5], rules[6]

  local now = now_ms()
  local done = redis.call('HGET', credited, p.event)
  if done then
    local goff, diamonds, total = string.match(done, '^(%d+):(%d+):(%d+)$')
    goff = tonumber(goff)
    return {'dup', goff, goff + 1, tonumber(diamonds), tonumber(total)}
  end
  -- One read and one write of the room's hash: a command from a script costs more than its
  -- own work. The host field exists in every room.
  local r = redis.call('HMGET', room, 'host', 'carry', 'diamonds', 'earned', 'offset', 'live',
    'battle')
  if not r[1] then return {'no_room'} end

  -- The fraction of a diamond is carried in units of 1/denominator, never rounded away.
  local units = p.coins * numerator + tonumber(r[2] or '0')
  local diamonds = math.floor(units / denominator)
  local carry = units - diamonds * denominator
  local total = tonumber(r[3] or '0') + diamonds
  -- A live gift is two events (gift, credit); a gift to a video only its credit.
  local events_added = 2
  if p.video then events_added = 1 end
  local credit_offset = tonumber(r[5] or '0') + events_added
  local gift_offset = credit_offset - 1
  redis.call('HSET', room, 'diamonds', total, 'earned', tonumber(r[4] or '0') + diamonds,
    'carry', carry, 'offset', credit_offset)

  redis.call('HSET', names, p.from, p.from_name)
  local all_time = tonumber(redis.call('ZINCRBY', alltime, p.coins, p.from))
  local in_session = r[6] == '1' and not p.video
  local rank = nil
  local thank = nil
  if in_session then
    if not redis.call('ZSCORE', top, p.from) then thank = 'new' end
    redis.call('ZINCRBY', top, p.coins, p.from)
    rank = redis.call('ZREVRANK', top, p.from)
    redis.call('HINCRBY', session, 'diamonds', diamonds)
    redis.call('HINCRBY', session, 'coins', p.coins)
    redis.call('HINCRBY', session, 'gifts', p.count)
    redis.call('HINCRBY', session_gifts, p.gift, p.count)
  end
  if p.coins >= big_coins then thank = 'big' end

  local credit = {t = 'credit', room = p.room, event = p.event, offset = credit_offset,
    from = p.from, from_name = p.from_name, gift = p.gift, name = p.name, count = p.count,
    coins = p.coins, diamonds = diamonds, total = total, ts = p.ts, video = p.video,
    thank = thank}
  local frames = {}
  if not p.video then
    local gift = {t = 'gift', room = p.room, event = p.event, offset = gift_offset, from = p.from,
      from_name = p.from_name, to = p.host, gift = p.gift, name = p.name, count = p.count,
      coins = p.coins, diamonds = diamonds, ts = p.ts}
    if p.streak_id then
      gift.streak = {id = p.streak_id, ['repeat'] = p.streak_repeat, ['end'] = false}
    end
    local supporter = all_time >= supporter_coins
    if (rank and rank < 3) or supporter then
      gift.badge = {supporter = supporter}
      if rank and rank < 3 then gift.badge.rank = rank + 1 end
    end
    local packed = cmsgpack.pack(gift)
    redis.call('XADD', events, 'MAXLEN', '~', history, gift_offset .. '-0', 'f', packed)
    frames[1] = gift
  end
  redis.call('XADD', events, 'MAXLEN', '~', history, credit_offset .. '-0', 'f',
    cmsgpack.pack(credit))
  frames[#frames + 1] = credit
  redis.call('HSET', credited, p.event, gift_offset .. ':' .. diamonds .. ':' .. total)
  post(ledger, 'credit', p.event, total,
    {{'platform:diamonds', 'diamonds', -diamonds}, {'host:' .. p.host, 'diamonds', diamonds}},
    {'from', p.from, 'coins', p.coins, 'carry', carry, 'rate', numerator .. '/' .. denominator},
    now)
  local score = nil
  local battle = in_session and r[7]
  if battle then
    score = cmsgpack.pack({battle = battle, event = p.event, room = p.room, from = p.from,
      from_name = p.from_name, coins = p.coins, ts = now})
    redis.call('HSET', keys[10], p.event, score)
  end
  if rank and rank < size then
    frames[#frames + 1] = {t = 'leaderboard', room = p.room, top = leaderboard(top, names, size)}
  end
  redis.call('SPUBLISH', channel, cmsgpack.pack(frames))
  return {'ok', gift_offset, credit_offset, diamonds, total, score}
end

local function outbox_settle(keys, args)
  local outbox, pending = keys[1], keys[2]
  local removed = 0
  if #args > 1 then removed = redis.call('HDEL', outbox, unpack(args, 2)) end
  if redis.call('EXISTS', outbox) == 0 then redis.call('ZREM', pending, args[1]) end
  return removed
end

local function outbox_pending(keys, args)
  local found = {}
  for i = 3, #args do
    if redis.call('EXISTS', args[i]) == 1 then
      local users = redis.call('ZRANGE', args[i], '-inf', args[1], 'BYSCORE', 'LIMIT', 0,
        args[2], 'WITHSCORES')
      for j = 1, #users do found[#found + 1] = users[j] end
    end
  end
  return found
end

redis.register_function('giftstream_gift_debit', gift_debit)
redis.register_function{function_name = 'giftstream_gift_answer', callback = gift_answer,
  flags = {'no-writes'}}
redis.register_function('giftstream_gift_credit', gift_credit)
redis.register_function('giftstream_outbox_settle', outbox_settle)
redis.register_function{function_name = 'giftstream_outbox_pending', callback = outbox_pending,
  flags = {'no-writes', 'allow-cross-slot-keys'}}

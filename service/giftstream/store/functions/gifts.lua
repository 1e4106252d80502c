#!lua name=giftstream_gifts
--[[
The two halves of a gift. Each touches exactly one slot, so viewer and host may live on different
shards; the outbox on the viewer's slot carries the gift from the first half to the second.
Payloads are msgpack maps (cmsgpack keeps integers exact).

gift_debit   (viewer slot {u:<viewer>})
  KEYS: acct, idem (this request id's record), ledger, outbox, streak, daily (spending today),
        bucket (the gift rate limit: tokens, at), pending (the slot's index of pending outboxes:
        a key with a hash tag of the viewer's slot)
  ARGV: 1 request id, 2 fingerprint, 3 new event id, 4 cost in coins, 5 idempotency ttl (s),
        6 viewer id, 7 room, 8 host, 9 gift id, 10 gift name, 11 count, 12 streakable '1'|'0',
        13 streak timeout (ms), 14 sender display name, 15 video id ('' for a live gift),
        16 gifts per second refilled, 17 burst (bucket size)
  -> {'ok', event, balance, payload}      debited now; payload is the outbox entry to credit
     {'replay', event, balance, payload|nil}  this id was debited before (same content): the
                                          original answer; payload while its credit is pending
     {'conflict'}                         this id was used with other content; nothing changed
     {'no_user'}                          no such account; nothing changed
     {'insufficient', balance}            not enough coins; nothing changed
     {'spending_limit', cap, spent today} the daily cap would be exceeded; nothing changed
     {'rate_limited', retry after (ms)}   over the gift rate (a token bucket shared by every
                                          worker); nothing changed
     {'frozen'}                           the account is frozen; nothing changed
  Order: idempotency record first, then every check, and only then the writes.
  The streak (id, repeat) is assigned here, atomically with the debit: a tap is counted once.
  Ledger: user:<viewer> coins -cost, platform:spent coins +cost.

gift_credit  (room slot {r:<room>})
  KEYS: room, credited (event -> 'gift offset:diamonds:total'), events (history), ledger,
        session, session gifts (gift -> count), session top (zset user -> coins),
        all-time top (zset), names (user -> display name), battle scores (the room's score
        outbox, battles.lua)
  ARGV: 1 payload (from gift_debit), 2 diamonds per coin numerator, 3 denominator,
        4 history length kept, 5 pub/sub channel of the room, 6 coins that make a long-time
        supporter, 7 coins that make a big gift, 8 leaderboard size
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

outbox_settle  (a user's slot {u:<user>})
  KEYS: outbox, pending (the slot's index)    ARGV: 1 user, 2.. event ids (none: only tidy)
  -> entries removed
  Removes credited entries from the outbox; the user leaves the index once the outbox is empty.

outbox_pending  (read-only; the index keys of many slots of one node: the one cross-slot call)
  KEYS: none    ARGV: 1 oldest time (ms) to report, 2 most users per index, 3.. index keys
  Each key is checked by its own command: a cluster refuses one command across slots (and in
  Valkey 9 that refusal inside a script breaks the scripts run after it).
  -> {user, time, user, time, ...}: users whose outbox has an entry pending since `time` or
     earlier. Flagged allow-cross-slot-keys: it reads only indexes, writes nothing, and is sent
     to the node that holds every key it names.
]]

local function gift_debit(keys, args)
  local acct, idem, ledger, outbox, streak, daily = keys[1], keys[2], keys[3], keys[4], keys[5],
    keys[6]
  local bucket, pending = keys[7], keys[8]
  local request_id, fingerprint, event = args[1], args[2], args[3]
  local cost, ttl = tonumber(args[4]), tonumber(args[5])
  local viewer, room, host, gift, name = args[6], args[7], args[8], args[9], args[10]
  local count, streakable, timeout = tonumber(args[11]), args[12] == '1', tonumber(args[13])

  local stored = redis.call('GET', idem)
  if stored then
    local record = cmsgpack.unpack(stored)
    if record.fp ~= fingerprint then return {'conflict'} end
    local pending = redis.call('HGET', outbox, record.event)
    return {'replay', record.event, record.balance, pending}
  end

  local balance = redis.call('HGET', acct, 'coins')
  if not balance then return {'no_user'} end
  if redis.call('HGET', acct, 'frozen') == '1' then return {'frozen'} end
  local now = now_ms()
  local rate, burst = tonumber(args[16]), tonumber(args[17])
  local b = redis.call('HMGET', bucket, 'tokens', 'at')
  local tokens = burst
  if b[1] then tokens = math.min(burst, tonumber(b[1]) + (now - tonumber(b[2])) * rate / 1000) end
  if tokens < 1 then return {'rate_limited', math.ceil((1 - tokens) * 1000 / rate)} end
  balance = tonumber(balance)
  if balance < cost then return {'insufficient', balance} end

  local today = math.floor(now / 86400000)
  local spent_today = 0
  if tonumber(redis.call('HGET', daily, 'day') or '-1') == today then
    spent_today = tonumber(redis.call('HGET', daily, 'spent'))
  end
  local cap = redis.call('HGET', acct, 'daily_cap')
  if cap and spent_today + cost > tonumber(cap) then
    return {'spending_limit', tonumber(cap), spent_today}
  end

  local payload = {event = event, room = room, host = host, from = viewer, from_name = args[14],
    gift = gift, name = name, count = count, coins = cost, ts = now}
  if args[15] ~= '' then payload.video = args[15] end
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

  local after = redis.call('HINCRBY', acct, 'coins', -cost)
  redis.call('HINCRBY', acct, 'spent', cost)
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
     'video', args[15]})
  redis.call('SET', idem, cmsgpack.pack({fp = fingerprint, event = event, balance = after}),
    'EX', ttl)
  return {'ok', event, after, packed}
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
  local p = cmsgpack.unpack(args[1])
  local numerator, denominator = tonumber(args[2]), tonumber(args[3])
  local history, channel = args[4], args[5]

  local done = redis.call('HGET', credited, p.event)
  if done then
    local goff, diamonds, total = string.match(done, '^(%d+):(%d+):(%d+)$')
    goff = tonumber(goff)
    return {'dup', goff, goff + 1, tonumber(diamonds), tonumber(total)}
  end
  if redis.call('EXISTS', room) == 0 then return {'no_room'} end

  -- The fraction of a diamond is carried in units of 1/denominator, never rounded away.
  local units = p.coins * numerator + tonumber(redis.call('HGET', room, 'carry') or '0')
  local diamonds = math.floor(units / denominator)
  local carry = units - diamonds * denominator
  local total = redis.call('HINCRBY', room, 'diamonds', diamonds)
  redis.call('HINCRBY', room, 'earned', diamonds)
  redis.call('HSET', room, 'carry', carry)
  -- A live gift is two events (gift, credit); a gift to a video only its credit.
  local events_added = 2
  if p.video then events_added = 1 end
  local credit_offset = redis.call('HINCRBY', room, 'offset', events_added)
  local gift_offset = credit_offset - 1

  redis.call('HSET', names, p.from, p.from_name)
  local all_time = tonumber(redis.call('ZINCRBY', alltime, p.coins, p.from))
  local in_session = redis.call('HGET', room, 'live') == '1' and not p.video
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
  if p.coins >= tonumber(args[7]) then thank = 'big' end

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
    local supporter = all_time >= tonumber(args[6])
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
    {'from', p.from, 'coins', p.coins, 'carry', carry, 'rate', numerator .. '/' .. denominator})
  local score = nil
  local battle = in_session and redis.call('HGET', room, 'battle')
  if battle then
    score = cmsgpack.pack({battle = battle, event = p.event, room = p.room, from = p.from,
      from_name = p.from_name, coins = p.coins, ts = now_ms()})
    redis.call('HSET', keys[10], p.event, score)
  end
  local size = tonumber(args[8])
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

redis.register_function('gift_debit', gift_debit)
redis.register_function('gift_credit', gift_credit)
redis.register_function('outbox_settle', outbox_settle)
redis.register_function{function_name = 'outbox_pending', callback = outbox_pending,
  flags = {'no-writes', 'allow-cross-slot-keys'}}

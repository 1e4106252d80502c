#!lua name=giftstream_chests
--[[
Treasure chests. A viewer drops a chest of N coins into a room; it opens after a countdown; the
viewers present when it opens may claim while it is open; then the coins are split exactly
among the claimants and paid to them. Coins in a chest sit in the escrow account platform:chests.

Split rule: each of k claimants gets floor(N / k); the remainder r = N - k * floor(N / k) goes one
coin each to the r earliest claimants. If nobody claims, all N coins go back to the dropper.

giftstream_chest_fund     (dropper's slot {u:<id>})
  KEYS: acct, records, ledger, outbox, pending (the slot's index of pending outboxes)
  ARGV: request id, chest id, room, coins, display name, countdown (ms), claim window (ms)
  -> {'ok', chest, balance, payload} | {'replay', chest, balance, payload|nil}
     | {'conflict'} | {'insufficient', balance} | {'no_user'} | {'frozen'}
  Debits the dropper (user -N, platform:chests +N) and leaves the chest's creation in the outbox
  (idempotent on the request id, like a gift).
giftstream_chest_create   (room slot {r:<room>})
  KEYS: room, chest    ARGV: payload (from giftstream_chest_fund), channel
  -> {'ok'} | {'dup'} | {'no_room'}        publishes a `chest` frame
giftstream_chest_claim    (room slot)
  KEYS: chest, claimants (zset user -> claim order), names
  ARGV: user, display name, when the user joined the room (ms)
  -> {'ok', order} | {'not_found'} | {'not_open', opens_at} | {'closed'} | {'not_present'}
     | {'already', order} | {'own_chest'} (the dropper cannot claim its own chest)
giftstream_chest_settle   (room slot)
  KEYS: chest, claimants, plan (user -> coins to pay), names
  ARGV: channel
  -> {'ok', plan as flat list} | {'settled', plan as flat list} | {'not_due', closes_at}
     | {'not_found'}
  Splits the coins (see the rule above), stores the plan and the `chest_result` frame.
giftstream_chest_payout   (a claimant's or the dropper's slot)
  KEYS: acct, records, ledger    ARGV: chest, coins, kind ('share' | 'return')
  -> {'ok', balance} | {'replay', balance} | {'no_user'}
  platform:chests -coins, user +coins; once per (chest, user).
giftstream_chest_done     (room slot)
  KEYS: chest    ARGV: channel    -> {'ok'}
  Marks a settled chest as fully paid and publishes its `chest_result` frame (once).
]]

local function user_of(acct)
  return redis.call('HGET', acct, 'id')
end

local function room_id(key)
  return string.match(key, '{r:([^}]*)}')
end

local function chest_fund(keys, args)
  local acct, records, ledger, outbox, pending = keys[1], keys[2], keys[3], keys[4], keys[5]
  local request_id, chest, room, coins = args[1], args[2], args[3], tonumber(args[4])
  local ref = 'chest:' .. request_id
  local fingerprint = room .. ':' .. coins
  local previous = redis.call('HGET', records, ref)
  if previous then
    local r = cmsgpack.unpack(previous)
    if r.fp ~= fingerprint then return {'conflict'} end
    return {'replay', r.chest, r.balance, redis.call('HGET', outbox, r.chest)}
  end
  local balance = redis.call('HGET', acct, 'coins')
  if not balance then return {'no_user'} end
  if redis.call('HGET', acct, 'frozen') == '1' then return {'frozen'} end
  if tonumber(balance) < coins then return {'insufficient', tonumber(balance)} end
  local now = now_ms()
  local opens_at = now + tonumber(args[6])
  local user = user_of(acct)
  local after = redis.call('HINCRBY', acct, 'coins', -coins)
  post(ledger, 'chest', chest, after,
    {{'user:' .. user, 'coins', -coins}, {'platform:chests', 'coins', coins}}, {'room', room})
  local payload = cmsgpack.pack({kind = 'chest', chest = chest, room = room, from = user,
    from_name = args[5], coins = coins, opens_at = opens_at,
    closes_at = opens_at + tonumber(args[7]), ts = now})
  redis.call('HSET', outbox, chest, payload)
  redis.call('ZADD', pending, 'NX', now, user)
  redis.call('HSET', records, ref, cmsgpack.pack({fp = fingerprint, chest = chest, balance = after}))
  return {'ok', chest, after, payload}
end

local function chest_create(keys, args)
  local room, chest = keys[1], keys[2]
  if redis.call('EXISTS', chest) == 1 then return {'dup'} end
  if redis.call('EXISTS', room) == 0 then return {'no_room'} end
  local p = cmsgpack.unpack(args[1])
  redis.call('HSET', chest, 'id', p.chest, 'from', p.from, 'from_name', p.from_name,
    'coins', p.coins, 'opens_at', p.opens_at, 'closes_at', p.closes_at, 'state', 'waiting',
    'claims', 0)
  redis.call('SPUBLISH', args[2], cmsgpack.pack({{t = 'chest', room = room_id(room),
    chest = p.chest, from = p.from, from_name = p.from_name, coins = p.coins,
    opens_at = p.opens_at, closes_at = p.closes_at}}))
  return {'ok'}
end

local function chest_claim(keys, args)
  local chest, claimants, names = keys[1], keys[2], keys[3]
  local user, joined_at = args[1], tonumber(args[3])
  local c = redis.call('HMGET', chest, 'opens_at', 'closes_at', 'state', 'from')
  if not c[1] then return {'not_found'} end
  if c[4] == user then return {'own_chest'} end
  local now = now_ms()
  if now < tonumber(c[1]) then return {'not_open', tonumber(c[1])} end
  if now > tonumber(c[2]) or c[3] ~= 'waiting' then return {'closed'} end
  if joined_at > tonumber(c[1]) then return {'not_present'} end
  local order = redis.call('ZSCORE', claimants, user)
  if order then return {'already', tonumber(order)} end
  order = redis.call('HINCRBY', chest, 'claims', 1)
  redis.call('ZADD', claimants, order, user)
  redis.call('HSET', names, user, args[2])
  return {'ok', order}
end

local function chest_settle(keys, args)
  local chest, claimants, plan, names = keys[1], keys[2], keys[3], keys[4]
  local c = redis.call('HMGET', chest, 'coins', 'closes_at', 'state', 'from', 'id')
  if not c[1] then return {'not_found'} end
  if c[3] ~= 'waiting' then return {'settled', redis.call('HGETALL', plan)} end
  if now_ms() <= tonumber(c[2]) then return {'not_due', tonumber(c[2])} end
  local coins = tonumber(c[1])
  local ordered = redis.call('ZRANGE', claimants, 0, -1)
  local k = #ordered
  local share, remainder, returned = 0, 0, 0
  if k == 0 then
    returned = coins
    redis.call('HSET', plan, c[4], coins)
  else
    share = math.floor(coins / k)
    remainder = coins - share * k
    for i, user in ipairs(ordered) do
      local amount = share
      if i <= remainder then amount = amount + 1 end
      if amount > 0 then redis.call('HSET', plan, user, amount) end
    end
  end
  local shares = {}
  for i = 1, math.min(k, 20) do
    local amount = share
    if i <= remainder then amount = amount + 1 end
    shares[i] = {user = ordered[i], name = redis.call('HGET', names, ordered[i]), coins = amount}
  end
  -- Announced by giftstream_chest_done, once everyone is paid: a claimant who reads its wallet
  -- on the announcement finds its share there.
  local result = cmsgpack.pack({{t = 'chest_result', room = room_id(chest), chest = c[5],
    from = c[4], coins = coins, claimants = k, share = share, remainder = remainder,
    returned = returned, shares = shares}})
  redis.call('HSET', chest, 'state', 'settled', 'share', share, 'remainder', remainder,
    'result', result)
  return {'ok', redis.call('HGETALL', plan)}
end

local function chest_payout(keys, args)
  local acct, records, ledger = keys[1], keys[2], keys[3]
  local chest, coins, kind = args[1], tonumber(args[2]), args[3]
  local ref = 'chestpay:' .. chest
  if redis.call('HEXISTS', records, ref) == 1 then
    return {'replay', tonumber(redis.call('HGET', acct, 'coins'))}
  end
  if redis.call('EXISTS', acct) == 0 then return {'no_user'} end
  local after = redis.call('HINCRBY', acct, 'coins', coins)
  redis.call('HSET', records, ref, coins)
  post(ledger, 'chest_' .. kind, chest, after,
    {{'platform:chests', 'coins', -coins}, {'user:' .. user_of(acct), 'coins', coins}})
  return {'ok', after}
end

local function chest_done(keys, args)
  local chest = keys[1]
  if redis.call('HGET', chest, 'state') == 'settled' then
    redis.call('HSET', chest, 'state', 'paid')
    redis.call('SPUBLISH', args[1], redis.call('HGET', chest, 'result'))
  end
  return {'ok'}
end

redis.register_function('giftstream_chest_fund', chest_fund)
redis.register_function('giftstream_chest_create', chest_create)
redis.register_function('giftstream_chest_claim', chest_claim)
redis.register_function('giftstream_chest_settle', chest_settle)
redis.register_function('giftstream_chest_payout', chest_payout)
redis.register_function('giftstream_chest_done', chest_done)

#!lua name=giftstream_wallet
--[[
A user's coins and reward points. Every function touches one user's slot ({u:<id>}) only, checks
everything before its first write, and posts a balanced ledger entry with every change.
KEYS for all: acct, records (grants/purchases/exchanges by reference), ledger.

giftstream_user_create
                 ARGV: id, name, region, role, created_ms, coins, grant ref, age
                 -> {'ok', coins} | {'exists'}
giftstream_grant_coins
                 ARGV: ref, coins > 0, source               (dev grants)
                 -> {'ok', balance} | {'replay', balance} | {'conflict'} | {'no_user'}
giftstream_purchase
                 ARGV: receipt, fingerprint, coins, bonus, state ('paid'|'pending'), settle_at_ms,
                       price, currency, package, channel, region
                 -> {'ok', balance, credited}       paid now: coins + bonus credited
                    {'pending', settle_at_ms}       the store has not settled yet
                    {'replay', balance, credited, state}   this receipt was seen: its result
                                                    (the balance right after it was credited)
                    {'conflict'}                    this receipt was used for another purchase
                    {'no_user'} | {'frozen'}        (a frozen account buys nothing)
giftstream_purchase_settle
                 ARGV: receipt, outcome ('paid'|'declined')
                 -> {'ok', balance, credited} | {'replay', balance, credited, state}
                    | {'declined', balance} | {'not_found'}
giftstream_purchase_refund
                 ARGV: receipt
                 -> {'ok', balance, clawed back, unrecovered} | {'replay', balance, clawed back,
                    unrecovered} | {'not_found'} | {'not_paid'}
                 Claws back only unspent coins (never below zero); gifts already sent stay final.
giftstream_flag
                 ARGV: reason, ref      -> {'ok', flags}    (a ledger entry without postings)
giftstream_set_limits
                 ARGV: daily cap ('' = none), guardian code hash given ('' = none),
                       new guardian hash ('' = keep)
                 -> {'ok', cap} | {'guardian_required'} | {'no_user'}
                 With a guardian lock, raising or removing the cap, or changing the lock, needs
                 the guardian's code; lowering it never does.
giftstream_points_grant
                 ARGV: ref, points > 0, source     -> {'ok', points} | {'replay', points} | {'no_user'}
giftstream_set_frozen
                 ARGV: '1' | '0', reason      -> {'ok'} | {'no_user'}
                 An admin freezes or thaws the account (a ledger entry without postings); a
                 frozen account can neither buy, nor send gifts, nor drop chests.
giftstream_points_exchange
                 ARGV: ref, points > 0, points per coin
                 -> {'ok', coins balance, points balance, coins credited, points spent}
                    | {'replay', ...same} | {'conflict'} | {'insufficient_points', points} | {'too_few'}
]]

local function user_of(acct)
  return redis.call('HGET', acct, 'id')
end

local function apply_grant(acct, records, ledger, ref, coins, source)
  local after = redis.call('HINCRBY', acct, 'coins', coins)
  redis.call('HINCRBY', acct, 'granted', coins)
  redis.call('HSET', records, ref, coins)
  post(ledger, 'grant', ref, after,
    {{'platform:' .. source, 'coins', -coins}, {'user:' .. user_of(acct), 'coins', coins}})
  return after
end

local function user_create(keys, args)
  local acct, records, ledger = keys[1], keys[2], keys[3]
  if redis.call('EXISTS', acct) == 1 then return {'exists'} end
  redis.call('HSET', acct, 'id', args[1], 'name', args[2], 'region', args[3], 'role', args[4],
    'created', args[5], 'age', args[8], 'coins', 0, 'granted', 0, 'spent', 0, 'points', 0)
  local coins, balance = tonumber(args[6]), 0
  if coins > 0 then balance = apply_grant(acct, records, ledger, args[7], coins, 'dev') end
  return {'ok', balance}
end

local function grant_coins(keys, args)
  local acct, records, ledger = keys[1], keys[2], keys[3]
  local ref, coins = args[1], tonumber(args[2])
  local previous = redis.call('HGET', records, ref)
  if previous then
    if tonumber(previous) ~= coins then return {'conflict'} end
    return {'replay', tonumber(redis.call('HGET', acct, 'coins'))}
  end
  if redis.call('EXISTS', acct) == 0 then return {'no_user'} end
  return {'ok', apply_grant(acct, records, ledger, ref, coins, args[3])}
end

local function purchase_record(records, receipt)
  local raw = redis.call('HGET', records, 'purchase:' .. receipt)
  if raw then return cmsgpack.unpack(raw) end
  return nil
end

local function credit_purchase(acct, records, ledger, receipt, record)
  local total = record.coins + record.bonus
  local after = redis.call('HINCRBY', acct, 'coins', total)
  redis.call('HINCRBY', acct, 'purchased', total)
  local user = 'user:' .. user_of(acct)
  local postings = {{'platform:sales', 'coins', -record.coins}, {user, 'coins', total}}
  if record.bonus > 0 then
    postings[#postings + 1] = {'platform:promotions', 'coins', -record.bonus}
  end
  post(ledger, 'purchase', receipt, after, postings,
    {'price', record.price, 'currency', record.currency, 'channel', record.channel,
     'region', record.region})
  record.state = 'paid'
  record.credited = total
  record.balance = after
  redis.call('HSET', records, 'purchase:' .. receipt, cmsgpack.pack(record))
  return after
end

local function purchase(keys, args)
  local acct, records, ledger = keys[1], keys[2], keys[3]
  local receipt, fingerprint = args[1], args[2]
  local record = purchase_record(records, receipt)
  if record then
    if record.fp ~= fingerprint then return {'conflict'} end
    return {'replay', record.balance or tonumber(redis.call('HGET', acct, 'coins')),
      record.credited or 0, record.state}
  end
  if redis.call('EXISTS', acct) == 0 then return {'no_user'} end
  if redis.call('HGET', acct, 'frozen') == '1' then return {'frozen'} end
  record = {fp = fingerprint, coins = tonumber(args[3]), bonus = tonumber(args[4]),
    state = args[5], settle_at = tonumber(args[6]), price = args[7], currency = args[8],
    package = args[9], channel = args[10], region = args[11], credited = 0}
  if record.state == 'pending' then
    redis.call('HSET', records, 'purchase:' .. receipt, cmsgpack.pack(record))
    return {'pending', record.settle_at}
  end
  local after = credit_purchase(acct, records, ledger, receipt, record)
  return {'ok', after, record.credited}
end

local function purchase_settle(keys, args)
  local acct, records, ledger = keys[1], keys[2], keys[3]
  local receipt, outcome = args[1], args[2]
  local record = purchase_record(records, receipt)
  if not record then return {'not_found'} end
  if record.state ~= 'pending' then
    return {'replay', tonumber(redis.call('HGET', acct, 'coins')), record.credited or 0,
      record.state}
  end
  if outcome == 'declined' then
    record.state = 'declined'
    redis.call('HSET', records, 'purchase:' .. receipt, cmsgpack.pack(record))
    return {'declined', tonumber(redis.call('HGET', acct, 'coins'))}
  end
  local after = credit_purchase(acct, records, ledger, receipt, record)
  return {'ok', after, record.credited}
end

local function purchase_refund(keys, args)
  local acct, records, ledger = keys[1], keys[2], keys[3]
  local receipt = args[1]
  local record = purchase_record(records, receipt)
  if not record then return {'not_found'} end
  if record.state == 'refunded' then
    return {'replay', tonumber(redis.call('HGET', acct, 'coins')), record.clawed_back,
      record.unrecovered}
  end
  if record.state ~= 'paid' then return {'not_paid'} end
  local balance = tonumber(redis.call('HGET', acct, 'coins'))
  local clawed_back = math.min(balance, record.credited)
  local unrecovered = record.credited - clawed_back
  local after = redis.call('HINCRBY', acct, 'coins', -clawed_back)
  redis.call('HINCRBY', acct, 'refunded', clawed_back)
  post(ledger, 'refund', receipt, after,
    {{'user:' .. user_of(acct), 'coins', -clawed_back}, {'platform:refunds', 'coins', clawed_back}},
    {'unrecovered', unrecovered})
  record.state = 'refunded'
  record.clawed_back = clawed_back
  record.unrecovered = unrecovered
  redis.call('HSET', records, 'purchase:' .. receipt, cmsgpack.pack(record))
  return {'ok', after, clawed_back, unrecovered}
end

local function flag(keys, args)
  local acct, ledger = keys[1], keys[3]
  if redis.call('EXISTS', acct) == 0 then return {'no_user'} end
  local flags = redis.call('HINCRBY', acct, 'flags', 1)
  post(ledger, 'flag', args[2], tonumber(redis.call('HGET', acct, 'coins')), {},
    {'reason', args[1]})
  return {'ok', flags}
end

local function set_limits(keys, args)
  local acct = keys[1]
  if redis.call('EXISTS', acct) == 0 then return {'no_user'} end
  local cap, given, new_lock = args[1], args[2], args[3]
  local current = redis.call('HGET', acct, 'daily_cap')
  local lock = redis.call('HGET', acct, 'guardian')
  local loosens = cap == '' and current ~= false
    or (cap ~= '' and current and tonumber(cap) > tonumber(current))
  if lock and (loosens or new_lock ~= '') and given ~= lock then return {'guardian_required'} end
  if cap == '' then redis.call('HDEL', acct, 'daily_cap')
  else redis.call('HSET', acct, 'daily_cap', cap) end
  if new_lock ~= '' then redis.call('HSET', acct, 'guardian', new_lock) end
  return {'ok', cap}
end

local function points_grant(keys, args)
  local acct, records, ledger = keys[1], keys[2], keys[3]
  local ref, points = args[1], tonumber(args[2])
  if redis.call('HEXISTS', records, ref) == 1 then
    return {'replay', tonumber(redis.call('HGET', acct, 'points'))}
  end
  if redis.call('EXISTS', acct) == 0 then return {'no_user'} end
  local after = redis.call('HINCRBY', acct, 'points', points)
  redis.call('HSET', records, ref, points)
  post(ledger, 'points', ref, tonumber(redis.call('HGET', acct, 'coins')),
    {{'platform:' .. args[3], 'points', -points}, {'user:' .. user_of(acct), 'points', points}},
    {'points_balance', after})
  return {'ok', after}
end

local function points_exchange(keys, args)
  local acct, records, ledger = keys[1], keys[2], keys[3]
  local ref, points, rate = 'exchange:' .. args[1], tonumber(args[2]), tonumber(args[3])
  local previous = redis.call('HGET', records, ref)
  if previous then
    local r = cmsgpack.unpack(previous)
    if r.asked ~= points then return {'conflict'} end
    return {'replay', r.coins_after, r.points_after, r.coins, r.points}
  end
  local have = tonumber(redis.call('HGET', acct, 'points') or '0')
  if points > have then return {'insufficient_points', have} end
  local coins = math.floor(points / rate)
  if coins < 1 then return {'too_few'} end
  local spent = coins * rate
  local points_after = redis.call('HINCRBY', acct, 'points', -spent)
  local coins_after = redis.call('HINCRBY', acct, 'coins', coins)
  local user = 'user:' .. user_of(acct)
  post(ledger, 'exchange', ref, coins_after,
    {{user, 'points', -spent}, {'platform:points_redeemed', 'points', spent},
     {'platform:rewards', 'coins', -coins}, {user, 'coins', coins}},
    {'points_balance', points_after})
  redis.call('HSET', records, ref, cmsgpack.pack({asked = points, coins = coins, points = spent,
    coins_after = coins_after, points_after = points_after}))
  return {'ok', coins_after, points_after, coins, spent}
end

local function set_frozen(keys, args)
  local acct, ledger = keys[1], keys[3]
  if redis.call('EXISTS', acct) == 0 then return {'no_user'} end
  redis.call('HSET', acct, 'frozen', args[1])
  post(ledger, 'freeze', args[1], tonumber(redis.call('HGET', acct, 'coins')), {},
    {'reason', args[2]})
  return {'ok'}
end

redis.register_function('giftstream_user_create', user_create)
redis.register_function('giftstream_set_frozen', set_frozen)
redis.register_function('giftstream_grant_coins', grant_coins)
redis.register_function('giftstream_purchase', purchase)
redis.register_function('giftstream_purchase_settle', purchase_settle)
redis.register_function('giftstream_purchase_refund', purchase_refund)
redis.register_function('giftstream_flag', flag)
redis.register_function('giftstream_set_limits', set_limits)
redis.register_function('giftstream_points_grant', points_grant)
redis.register_function('giftstream_points_exchange', points_exchange)

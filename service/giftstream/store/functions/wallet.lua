#!lua name=giftstream_wallet
--[[
Coins that enter the system. Every function touches one user's slot ({u:<id>}) only.

user_create  KEYS: acct, grants, ledger
             ARGV: user id, name, region, role, created_ms, initial coins, grant id
             -> {'ok', coins} | {'exists'}
             Creates the account and, if coins > 0, grants them (ledger entry 'grant').

grant_coins  KEYS: acct, grants, ledger
             ARGV: grant id, coins (> 0), kind (e.g. 'dev')
             -> {'ok', balance} | {'replay', balance} | {'conflict'} | {'no_user'}
             Idempotent on the grant id: the same id with the same amount is applied once and
             answered with 'replay'; with another amount it is a 'conflict' and changes nothing.
]]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function apply_grant(acct, grants, ledger, grant_id, coins, kind)
  local after = redis.call('HINCRBY', acct, 'coins', coins)
  redis.call('HINCRBY', acct, 'granted', coins)
  redis.call('HSET', grants, grant_id, coins)
  redis.call('XADD', ledger, '*', 'kind', 'grant', 'coins', coins, 'balance', after,
    'ref', grant_id, 'source', kind, 'ts', now_ms())
  return after
end

local function grant_coins(keys, args)
  local acct, grants, ledger = keys[1], keys[2], keys[3]
  local grant_id, coins, kind = args[1], tonumber(args[2]), args[3]
  local previous = redis.call('HGET', grants, grant_id)
  if previous then
    if tonumber(previous) ~= coins then return {'conflict'} end
    return {'replay', tonumber(redis.call('HGET', acct, 'coins'))}
  end
  if redis.call('EXISTS', acct) == 0 then return {'no_user'} end
  return {'ok', apply_grant(acct, grants, ledger, grant_id, coins, kind)}
end

local function user_create(keys, args)
  local acct, grants, ledger = keys[1], keys[2], keys[3]
  if redis.call('EXISTS', acct) == 1 then return {'exists'} end
  local coins = tonumber(args[6])
  redis.call('HSET', acct, 'id', args[1], 'name', args[2], 'region', args[3], 'role', args[4],
    'created', args[5], 'coins', 0, 'granted', 0, 'spent', 0)
  local balance = 0
  if coins > 0 then balance = apply_grant(acct, grants, ledger, args[7], coins, 'dev') end
  return {'ok', balance}
end

redis.register_function('grant_coins', grant_coins)
redis.register_function('user_create', user_create)

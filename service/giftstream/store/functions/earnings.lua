#!lua name=giftstream_earnings
--[[
A host's diamonds, which live in the slot of the host's room ({r:<room>}).

giftstream_payout
         KEYS: room, payouts (request id -> record), ledger
         ARGV: request id, host id, diamonds, minimum diamonds, amount (USD, decimal string)
         -> {'ok', diamonds left, record}         the diamonds are debited now
            {'replay', diamonds left, record}     this request id was paid out before
            {'conflict'}                          this request id was used for another amount
            {'below_minimum', minimum}            under the minimum cash-out
            {'insufficient_diamonds', diamonds}   more than the host has
            {'forbidden'}                         not this room's host
         Ledger: host:<host> diamonds -d, platform:payouts diamonds +d.
]]

local function payout(keys, args)
  local room, payouts, ledger = keys[1], keys[2], keys[3]
  local request_id, host = args[1], args[2]
  local diamonds, minimum = tonumber(args[3]), tonumber(args[4])
  local previous = redis.call('HGET', payouts, request_id)
  if previous then
    local record = cmsgpack.unpack(previous)
    if record.diamonds ~= diamonds then return {'conflict'} end
    return {'replay', tonumber(redis.call('HGET', room, 'diamonds')), previous}
  end
  if redis.call('HGET', room, 'host') ~= host then return {'forbidden'} end
  if diamonds < minimum then return {'below_minimum', minimum} end
  local have = tonumber(redis.call('HGET', room, 'diamonds'))
  if diamonds > have then return {'insufficient_diamonds', have} end
  local left = redis.call('HINCRBY', room, 'diamonds', -diamonds)
  redis.call('HINCRBY', room, 'paid_out', diamonds)
  local record = cmsgpack.pack({id = request_id, diamonds = diamonds, amount = args[5],
    currency = 'USD', ts = now_ms(), state = 'paid'})
  redis.call('HSET', payouts, request_id, record)
  post(ledger, 'payout', request_id, left,
    {{'host:' .. host, 'diamonds', -diamonds}, {'platform:payouts', 'diamonds', diamonds}},
    {'amount', args[5], 'currency', 'USD'})
  return {'ok', left, record}
end

redis.register_function('giftstream_payout', payout)

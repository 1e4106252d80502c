#!lua name=giftstream_archive
--[[
The archiver's lease: one archiver active per deployment, with a fencing token that PostgreSQL
checks on every batch (a batch from an older holder is refused there).

giftstream_archive_lease
                 KEYS: lease (string 'token fence', expiring), fence (counter); one slot
                 ARGV: token, lease ms, floor (the highest fence PostgreSQL has accepted),
                       renew only '1'|'0' (the keeper's renewal: never a new lease)
                 -> fence (> 0)   the caller holds the lease (renewed, or newly acquired with a
                                  new fence above the counter and above floor)
                    0             another archiver holds it (or, renew only, nobody does)
giftstream_archive_release
                 KEYS: lease   ARGV: token
                 -> 1 released, 0 not the holder
]]

local function archive_lease(keys, args)
  local held = redis.call('GET', keys[1])
  if held then
    local token, fence = string.match(held, '^(%S+) (%d+)$')
    if token ~= args[1] then return 0 end
    redis.call('PEXPIRE', keys[1], args[2])
    return tonumber(fence)
  end
  if args[4] == '1' then return 0 end
  local fence = redis.call('INCR', keys[2])
  local floor = tonumber(args[3])
  if fence <= floor then
    fence = floor + 1
    redis.call('SET', keys[2], fence)
  end
  redis.call('SET', keys[1], args[1] .. ' ' .. fence, 'PX', args[2])
  return fence
end

local function archive_release(keys, args)
  local held = redis.call('GET', keys[1])
  if held and string.match(held, '^(%S+) ') == args[1] then
    redis.call('DEL', keys[1])
    return 1
  end
  return 0
end

redis.register_function('giftstream_archive_lease', archive_lease)
redis.register_function('giftstream_archive_release', archive_release)

#!lua name=giftstream_locks
--[[
Locks that one worker at a time holds (the relay's): the caller takes one with SET NX PX and a
token of its own, and releases it here, where only its holder can.

giftstream_lock_release
  KEYS: lock (string: the holder's token, expiring)    ARGV: token
  -> 1 released | 0 not the holder (the lock lapsed and another worker took it, or it is gone)
  Compares and deletes in one call: a holder whose lock lapsed mid-pass does not delete the lock
  of the worker that took it over.
]]

local function lock_release(keys, args)
  if redis.call('GET', keys[1]) == args[1] then
    return redis.call('DEL', keys[1])
  end
  return 0
end

redis.register_function('giftstream_lock_release', lock_release)

#!lua name=giftstream_rooms
--[[
Live rooms. A host has one room; going live again reopens it (same epoch, offsets go on).

room_claim  (host's slot {u:<host>})
  KEYS: acct    ARGV: proposed room id
  -> {'ok', room id}   the host's room: the one it had, or the proposed one, now recorded
     {'no_user'}

room_open   (room slot {r:<room>})
  KEYS: room    ARGV: host id, new epoch, pub/sub channel, host may receive gifts '1'|'0'
  -> {'ok', epoch} | {'forbidden'} (the room belongs to another host)
  Creates the room if needed, sets it live and publishes a `room` frame.

room_end    (room slot {r:<room>})
  KEYS: room    ARGV: host id, pub/sub channel
  -> {'ok'} | {'not_found'} | {'forbidden'} (not the room's host)
  Sets the room not live and publishes a `room` frame. Members stay until they leave.
]]

local function room_claim(keys, args)
  local acct = keys[1]
  if redis.call('EXISTS', acct) == 0 then return {'no_user'} end
  redis.call('HSETNX', acct, 'room', args[1])
  return {'ok', redis.call('HGET', acct, 'room')}
end

local function room_id(key)
  return string.match(key, '{r:(.*)}')
end

local function room_open(keys, args)
  local room, host, epoch, channel = keys[1], args[1], args[2], args[3]
  local owner = redis.call('HGET', room, 'host')
  if owner and owner ~= host then return {'forbidden'} end
  if not owner then
    redis.call('HSET', room, 'host', host, 'epoch', epoch, 'offset', 0, 'diamonds', 0,
      'carry', 0, 'viewers', 0, 'created', now_ms())
  end
  redis.call('HSET', room, 'live', 1, 'opened', now_ms(), 'receives', args[4])
  redis.call('SPUBLISH', channel, cmsgpack.pack({{t = 'room', room = room_id(room), live = true}}))
  return {'ok', redis.call('HGET', room, 'epoch')}
end

local function room_end(keys, args)
  local room, host, channel = keys[1], args[1], args[2]
  local owner = redis.call('HGET', room, 'host')
  if not owner then return {'not_found'} end
  if owner ~= host then return {'forbidden'} end
  redis.call('HSET', room, 'live', 0, 'ended', now_ms())
  redis.call('SPUBLISH', channel, cmsgpack.pack({{t = 'room', room = room_id(room), live = false}}))
  return {'ok'}
end

redis.register_function('room_claim', room_claim)
redis.register_function('room_open', room_open)
redis.register_function('room_end', room_end)

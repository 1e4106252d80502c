#!lua name=giftstream_rooms
--[[
Live rooms and their live sessions. A host has one room; each time it goes live a new session
starts (same epoch; offsets go on). Everything but giftstream_room_claim runs on the room's slot
{r:<room>}.

giftstream_room_claim  (host's slot {u:<host>})
  KEYS: acct    ARGV: proposed room id
  -> {'ok', room id} | {'no_user'}     the host's room: the one it had, or the proposed one

giftstream_room_open
  KEYS: room, session, session gifts, session top, sessions, events (the room's history)
  ARGV: host id, new epoch, channel, host may receive gifts '1'|'0', host region,
        host display name ('' keeps the one stored)
  -> {'ok', epoch, session id} | {'forbidden'} (the room belongs to another host)
  Creates the room if needed; if it is not live, starts a new session. Publishes a `room` frame.
  The history no longer expires (see giftstream_room_end).

giftstream_room_end
  KEYS: room, session, session gifts, session top, sessions, names, events (the room's history)
  ARGV: host id, channel, how long the history is kept after the end (ms; 0: for ever)
  -> {'ok', summary (msgpack)} | {'not_found'} | {'forbidden'} (not the room's host)
     {'not_live', last summary or nil}
  Ends the session: stores and publishes its summary (`session_summary`), then a `room` frame.
  Members stay until they leave. The history expires after the given time (members may still
  replay it meanwhile) unless the room goes live again.

giftstream_presence
  KEYS: room, presence (worker -> 'count:expires_ms'), session
  ARGV: worker id, this worker's member count, its entry's expiry (ms), channel
  -> {'ok', viewers}
  The room's viewer count is the sum over workers whose entry has not expired (a worker that
  dies stops counting once its entry expires). Keeps the session's peak and viewer-time
  integral (for the average), and publishes a `viewers` frame when the count changes.
]]

local function room_id(key)
  return string.match(key, '{r:(.*)}')
end

local function room_claim(keys, args)
  local acct = keys[1]
  if redis.call('EXISTS', acct) == 0 then return {'no_user'} end
  redis.call('HSETNX', acct, 'room', args[1])
  return {'ok', redis.call('HGET', acct, 'room')}
end

local function room_open(keys, args)
  local room, session, gifts, top, sessions = keys[1], keys[2], keys[3], keys[4], keys[5]
  local events = keys[6]
  local host, epoch, channel = args[1], args[2], args[3]
  local owner = redis.call('HGET', room, 'host')
  if owner and owner ~= host then return {'forbidden'} end
  local now = now_ms()
  if not owner then
    redis.call('HSET', room, 'host', host, 'epoch', epoch, 'offset', 0, 'diamonds', 0,
      'carry', 0, 'viewers', 0, 'sessions', 0, 'created', now)
  end
  redis.call('HSET', room, 'receives', args[4], 'region', args[5])
  if args[6] and args[6] ~= '' then redis.call('HSET', room, 'host_name', args[6]) end
  if redis.call('HGET', room, 'live') ~= '1' then
    local id = redis.call('HINCRBY', room, 'sessions', 1)
    redis.call('DEL', session, gifts, top)
    redis.call('HSET', session, 'id', id, 'started', now, 'diamonds', 0, 'coins', 0, 'gifts', 0,
      'peak', tonumber(redis.call('HGET', room, 'viewers') or '0'), 'viewer_ms', 0,
      'last_change', now)
    redis.call('HSET', room, 'live', 1, 'opened', now, 'session', id)
    redis.call('PERSIST', events)
  end
  redis.call('SPUBLISH', channel, cmsgpack.pack({{t = 'room', room = room_id(room), live = true,
    session = tonumber(redis.call('HGET', room, 'session'))}}))
  return {'ok', redis.call('HGET', room, 'epoch'), tonumber(redis.call('HGET', room, 'session'))}
end

-- The viewer-time integral up to now, for the average viewer count.
local function viewer_ms(room, session, now)
  local s = redis.call('HMGET', session, 'viewer_ms', 'last_change')
  local viewers = tonumber(redis.call('HGET', room, 'viewers') or '0')
  return tonumber(s[1] or '0') + viewers * (now - tonumber(s[2] or now))
end

local function room_end(keys, args)
  local room, session, gifts, top, sessions, names = keys[1], keys[2], keys[3], keys[4],
    keys[5], keys[6]
  local events = keys[7]
  local host, channel, keep_ms = args[1], args[2], tonumber(args[3])
  local owner = redis.call('HGET', room, 'host')
  if not owner then return {'not_found'} end
  if owner ~= host then return {'forbidden'} end
  local id = redis.call('HGET', room, 'session')
  if redis.call('HGET', room, 'live') ~= '1' then
    return {'not_live', id and redis.call('HGET', sessions, id) or false}
  end
  local now = now_ms()
  local s = redis.call('HMGET', session, 'started', 'diamonds', 'coins', 'gifts', 'peak')
  local duration = math.max(now - tonumber(s[1]), 1)
  local by_gift = {}
  local flat = redis.call('HGETALL', gifts)
  for i = 1, #flat, 2 do by_gift[#by_gift + 1] = {gift = flat[i], count = tonumber(flat[i + 1])} end
  local top_gifters = {}
  local ranked = redis.call('ZREVRANGE', top, 0, 9, 'WITHSCORES')
  for i = 1, #ranked, 2 do
    top_gifters[#top_gifters + 1] = {user = ranked[i], name = redis.call('HGET', names, ranked[i]),
      coins = tonumber(ranked[i + 1])}
  end
  local summary = {t = 'session_summary', room = room_id(room), session = tonumber(id),
    started = tonumber(s[1]), ended = now, duration_ms = duration, diamonds = tonumber(s[2]),
    coins = tonumber(s[3]), gifts = tonumber(s[4]), gifts_by_kind = by_gift,
    top_gifters = top_gifters, peak_viewers = tonumber(s[5]),
    average_viewers = math.floor(viewer_ms(room, session, now) / duration * 10 + 0.5) / 10}
  local packed = cmsgpack.pack(summary)
  redis.call('HSET', sessions, id, packed)
  redis.call('HSET', room, 'live', 0, 'ended', now)
  if keep_ms > 0 then redis.call('PEXPIRE', events, keep_ms) end
  redis.call('SPUBLISH', channel, cmsgpack.pack({summary,
    {t = 'room', room = room_id(room), live = false, session = tonumber(id)}}))
  return {'ok', packed}
end

local function presence(keys, args)
  local room, entries, session = keys[1], keys[2], keys[3]
  local worker, count, expires, channel = args[1], tonumber(args[2]), tonumber(args[3]), args[4]
  local now = now_ms()
  if count > 0 then
    redis.call('HSET', entries, worker, count .. ':' .. expires)
  else
    redis.call('HDEL', entries, worker)
  end
  local total = 0
  local flat = redis.call('HGETALL', entries)
  for i = 1, #flat, 2 do
    local n, until_ms = string.match(flat[i + 1], '^(%d+):(%d+)$')
    if tonumber(until_ms) < now then
      redis.call('HDEL', entries, flat[i])
    else
      total = total + tonumber(n)
    end
  end
  local before = tonumber(redis.call('HGET', room, 'viewers') or '0')
  if total ~= before then
    if redis.call('EXISTS', session) == 1 then
      redis.call('HSET', session, 'viewer_ms', viewer_ms(room, session, now), 'last_change', now)
      if total > tonumber(redis.call('HGET', session, 'peak') or '0') then
        redis.call('HSET', session, 'peak', total)
      end
    end
    redis.call('HSET', room, 'viewers', total)
    redis.call('SPUBLISH', channel, cmsgpack.pack({{t = 'viewers', room = room_id(room),
      viewers = total}}))
  end
  return {'ok', total}
end

redis.register_function('giftstream_room_claim', room_claim)
redis.register_function('giftstream_room_open', room_open)
redis.register_function('giftstream_room_end', room_end)
redis.register_function('giftstream_presence', presence)

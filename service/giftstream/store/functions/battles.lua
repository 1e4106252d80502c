#!lua name=giftstream_battles
--[[
LIVE battles: two to four live rooms linked for a while, each scored by the coins of the gifts
credited in it. The battle's keys share the hash tag {b:<id>} (its own slot); each room says
which battle it is in (field `battle` of the room hash, on the room's slot). A gift credited in
a linked room leaves its score in the room's score outbox (gift_credit); the battle counts it
once, by the gift's event id (giftstream_battle_score), and the outbox entry is removed after.

States: invited -> live -> ending -> ended, or invited -> declined.

giftstream_battle_create   (battle slot)
  KEYS: battle, accepted    ARGV: 1 id, 2 rooms (comma separated, the inviter's first),
        3 hosts (same order), 4 duration (ms), 5 invite ttl (ms), 6 top gifters kept per
        side at the end, 7 how long the battle's keys are kept once it is over (ms)
  -> {'ok', expires_at} | {'dup'} (the id exists; nothing changed)
giftstream_battle_link     (room slot {r:<room>})
  KEYS: room    ARGV: 1 battle id
  -> {'ok'}                        the room is in this battle (now or before)
     {'in_battle'}                 the room is in another battle; nothing changed
     {'room_not_live'}             the room is not live; nothing changed
     {'not_found'}                 no such room
giftstream_battle_invite_token  (room slot {r:<room>}, the inviter's)
  KEYS: bucket (tokens, at: the room's invites, a token bucket)
  ARGV: 1 invites refilled per minute, 2 burst (bucket size)
  -> {'ok'}                           a token taken: the invite may go
     {'rate_limited', retry after (ms)}  too many invites; nothing changed
giftstream_battle_unlink   (room slot)
  KEYS: room    ARGV: 1 battle id    -> {'ok'}  the room leaves this battle (if it was in it)
giftstream_battle_accept   (battle slot)
  KEYS: battle, accepted    ARGV: 1 room
  -> {'ok', started 1|0, started_at, ends_at}   started once every side accepted
     {'not_found'} | {'not_side'} (the room is no side of it) | {'battle_over'} (no longer
     invited: started, declined, expired or ended)
giftstream_battle_decline  (battle slot)
  KEYS: battle, accepted    ARGV: 1 room ('' when the invite expired)
  -> {'ok'} | {'not_found'} | {'not_side'} | {'battle_over'}
  The keys expire `keep_ms` later.
giftstream_battle_score    (battle slot)
  KEYS: battle, scores, scored, top (of the gift's room), names
  ARGV: 1 event, 2 room, 3 from, 4 from name, 5 coins, 6 credited at (ms)
  -> {'ok', counted 1|0, the room's score}
  Counted once per event, when the gift was credited between the start and the end of a live
  (or ending) battle; a repeat (or a gift outside that time) counts 0 and changes nothing.
giftstream_battle_stop     (battle slot)
  KEYS: battle    ARGV: 1 reason ('time' | 'early' | 'forfeit'), 2 room that forfeits or ''
  -> {'ok'} (ending now, or already ending or ended) | {'not_found'} | {'battle_over'} (never
     started: invited or declined)
  Ends the scoring: ends_at becomes now, unless the battle already ended on time.
giftstream_battle_finish   (battle slot)
  KEYS: battle, scores, names, scored, accepted, top of each side (in the battle's order of
        rooms)
  ARGV: none
  -> {'ok', result} | {'settled', result} (finished before)    result: the `ended` frame
  Only an ending battle finishes (once its rooms are unlinked and their outboxes counted).
  The winner has the highest score; equal highest scores are a draw; a room that forfeits
  cannot win. Every key of the battle expires `keep_ms` later (the result stays readable
  until then).
]]

local function split(csv)
  local parts = {}
  for part in string.gmatch(csv, '[^,]+') do parts[#parts + 1] = part end
  return parts
end

local function index_of(list, value)
  for i, v in ipairs(list) do
    if v == value then return i end
  end
  return nil
end

local function giftstream_battle_create(keys, args)
  local battle, accepted = keys[1], keys[2]
  if redis.call('EXISTS', battle) == 1 then return {'dup'} end
  local rooms = split(args[2])
  local now = now_ms()
  local expires_at = now + tonumber(args[5])
  redis.call('HSET', battle, 'id', args[1], 'state', 'invited', 'rooms', args[2],
    'hosts', args[3], 'duration_ms', args[4], 'created', now, 'expires_at', expires_at, 'top', args[6], 'keep_ms', args[7])
  redis.call('SADD', accepted, rooms[1])
  return {'ok', expires_at}
end

local function giftstream_battle_link(keys, args)
  local room = keys[1]
  local r = redis.call('HMGET', room, 'host', 'live', 'battle')
  if not r[1] then return {'not_found'} end
  if r[3] == args[1] then return {'ok'} end
  if r[3] then return {'in_battle'} end
  if r[2] ~= '1' then return {'room_not_live'} end
  redis.call('HSET', room, 'battle', args[1])
  return {'ok'}
end

local function giftstream_battle_invite_token(keys, args)
  local bucket = keys[1]
  local per_ms, burst = tonumber(args[1]) / 60000, tonumber(args[2])
  local now = now_ms()
  local b = redis.call('HMGET', bucket, 'tokens', 'at')
  local tokens = burst
  if b[1] then tokens = math.min(burst, tonumber(b[1]) + (now - tonumber(b[2])) * per_ms) end
  if tokens < 1 then return {'rate_limited', math.ceil((1 - tokens) / per_ms)} end
  redis.call('HSET', bucket, 'tokens', tokens - 1, 'at', now)
  -- Gone once full again: an idle room keeps no bucket.
  redis.call('PEXPIRE', bucket, math.ceil(burst / per_ms))
  return {'ok'}
end

local function giftstream_battle_unlink(keys, args)
  local room = keys[1]
  if redis.call('HGET', room, 'battle') == args[1] then redis.call('HDEL', room, 'battle') end
  return {'ok'}
end

local function giftstream_battle_accept(keys, args)
  local battle, accepted = keys[1], keys[2]
  local b = redis.call('HMGET', battle, 'state', 'rooms', 'expires_at', 'duration_ms')
  if not b[1] then return {'not_found'} end
  if not index_of(split(b[2]), args[1]) then return {'not_side'} end
  local now = now_ms()
  if b[1] ~= 'invited' or now > tonumber(b[3]) then return {'battle_over'} end
  redis.call('SADD', accepted, args[1])
  if redis.call('SCARD', accepted) < #split(b[2]) then return {'ok', 0, 0, 0} end
  local ends_at = now + tonumber(b[4])
  redis.call('HSET', battle, 'state', 'live', 'started_at', now, 'ends_at', ends_at)
  return {'ok', 1, now, ends_at}
end

local function giftstream_battle_decline(keys, args)
  local battle = keys[1]
  local b = redis.call('HMGET', battle, 'state', 'rooms')
  if not b[1] then return {'not_found'} end
  if args[1] ~= '' and not index_of(split(b[2]), args[1]) then return {'not_side'} end
  if b[1] ~= 'invited' then return {'battle_over'} end
  local reason = 'declined'
  if args[1] == '' then reason = 'expired' end
  redis.call('HSET', battle, 'state', 'declined', 'reason', reason, 'declined_by', args[1])
  local keep = tonumber(redis.call('HGET', battle, 'keep_ms'))
  for _, key in ipairs(keys) do redis.call('PEXPIRE', key, keep) end
  return {'ok'}
end

local function giftstream_battle_score(keys, args)
  local battle, scores, scored, top, names = keys[1], keys[2], keys[3], keys[4], keys[5]
  local event, room, from, coins, at = args[1], args[2], args[3], tonumber(args[5]),
    tonumber(args[6])
  if redis.call('HEXISTS', scored, event) == 1 then
    return {'ok', 0, tonumber(redis.call('HGET', scores, room) or '0')}
  end
  local b = redis.call('HMGET', battle, 'state', 'started_at', 'ends_at')
  local counting = (b[1] == 'live' or b[1] == 'ending') and at >= tonumber(b[2])
    and at <= tonumber(b[3])
  if not counting then return {'ok', 0, tonumber(redis.call('HGET', scores, room) or '0')} end
  redis.call('HSET', scored, event, room)
  local score = redis.call('HINCRBY', scores, room, coins)
  redis.call('ZINCRBY', top, coins, from)
  redis.call('HSET', names, from, args[4])
  return {'ok', 1, score}
end

local function giftstream_battle_stop(keys, args)
  local battle = keys[1]
  local b = redis.call('HMGET', battle, 'state', 'ends_at')
  if not b[1] then return {'not_found'} end
  if b[1] == 'ending' or b[1] == 'ended' then return {'ok'} end
  if b[1] ~= 'live' then return {'battle_over'} end
  local now = now_ms()
  local ends_at = math.min(now, tonumber(b[2]))
  redis.call('HSET', battle, 'state', 'ending', 'ends_at', ends_at, 'reason', args[1],
    'forfeit', args[2])
  return {'ok'}
end

local function giftstream_battle_finish(keys, args)
  local battle, scores, names = keys[1], keys[2], keys[3]
  local b = redis.call('HMGET', battle, 'state', 'rooms', 'hosts', 'reason', 'forfeit',
    'started_at', 'ends_at', 'result', 'id', 'top', 'duration_ms', 'keep_ms')
  if b[1] == 'ended' then return {'settled', b[8]} end
  if b[1] ~= 'ending' then return {'battle_over'} end
  local size = tonumber(b[10])
  local rooms, hosts = split(b[2]), split(b[3])
  local sides = {}
  local best, winners = -1, {}
  for i, room in ipairs(rooms) do
    local score = tonumber(redis.call('HGET', scores, room) or '0')
    local top = {}
    local ranked = redis.call('ZREVRANGE', keys[5 + i], 0, size - 1, 'WITHSCORES')
    for j = 1, #ranked, 2 do
      top[#top + 1] = {user = ranked[j], name = redis.call('HGET', names, ranked[j]),
        coins = tonumber(ranked[j + 1])}
    end
    sides[i] = {room = room, host = hosts[i], score = score, top = top}
    if room ~= b[5] then
      if score > best then
        best, winners = score, {room}
      elseif score == best then
        winners[#winners + 1] = room
      end
    end
  end
  local frame = {t = 'battle', state = 'ended', battle = b[9], sides = sides, left_s = 0,
    started_at = tonumber(b[6]), ends_at = tonumber(b[7]), reason = b[4],
    duration_s = math.floor(tonumber(b[11]) / 1000),
    draw = #winners ~= 1}
  if #winners == 1 then frame.winner = winners[1] end
  if b[5] ~= '' then frame.forfeit = b[5] end
  local packed = cmsgpack.pack(frame)
  redis.call('HSET', battle, 'state', 'ended', 'result', packed)
  for _, key in ipairs(keys) do redis.call('PEXPIRE', key, tonumber(b[12])) end
  return {'ok', packed}
end

redis.register_function('giftstream_battle_create', giftstream_battle_create)
redis.register_function('giftstream_battle_link', giftstream_battle_link)
redis.register_function('giftstream_battle_invite_token', giftstream_battle_invite_token)
redis.register_function('giftstream_battle_unlink', giftstream_battle_unlink)
redis.register_function('giftstream_battle_accept', giftstream_battle_accept)
redis.register_function('giftstream_battle_decline', giftstream_battle_decline)
redis.register_function('giftstream_battle_score', giftstream_battle_score)
redis.register_function('giftstream_battle_stop', giftstream_battle_stop)
redis.register_function('giftstream_battle_finish', giftstream_battle_finish)

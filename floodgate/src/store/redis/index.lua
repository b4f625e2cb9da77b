-- Applies one change of the index of bans that a call of redis.lua reported (the last three
-- numbers of its reply, see `index_ban` there). A call of its own: on a Redis Cluster the
-- index and the client's key lie in different slots.
--
-- KEYS[1]  the sorted set of banned clients, scored by the ban's end (NEVER for permanent)
-- KEYS[2]  the hash of "since reason" per client
-- ARGV[1]  the client's member; ARGV[2] the change: 1 a ban began, 2 the ban in force was
--          lengthened or replaced (its start is kept), 3 no ban in force any more
-- ARGV[3]  the ban's end (-1: never); ARGV[4] its reason; ARGV[5] now (ms)

local NEVER = 9007199254740992
local function num(s)
  local n = tonumber(s)
  if n == nil then return 0 end
  if n < 0 or n >= NEVER then return NEVER end
  return n
end

local bans, info, member, change = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
if change == '3' then
  redis.call('ZREM', bans, member)
  redis.call('HDEL', info, member)
  return 0
end
local since = string.format('%.0f', num(ARGV[5]))
if change == '2' then
  local known = redis.call('HGET', info, member)
  if known then since = string.match(known, '^(%S+)') or since end
end
redis.call('ZADD', bans, string.format('%.0f', num(ARGV[3])), member)
redis.call('HSET', info, member, since .. ' ' .. ARGV[4])
return 1

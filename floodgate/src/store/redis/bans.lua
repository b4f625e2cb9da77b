-- Lists the bans in force, from the index that redis.lua keeps (see `index_ban` there).
--
-- KEYS[1]  the sorted set of banned clients, scored by the ban's end (NEVER for permanent)
-- KEYS[2]  the hash of "since reason" per client
-- ARGV[1]  now (ms, from floodgate's clock)
-- ARGV[2]  the cursor's ban end ('' to start from the beginning); ARGV[3] its member
-- ARGV[4]  how many entries to return at most (the caller asks for one more than a page)
--
-- Replies member, end, "since reason" for each entry, in the order of the sorted set
-- (ban end, then member), which is the order of every floodgate store's listing.

local NEVER = 9007199254740992
local function num(s)
  local n = tonumber(s)
  if n == nil then return 0 end
  if n < 0 or n >= NEVER then return NEVER end
  return n
end
local function enc(n)
  if n >= NEVER then return '-1' end
  return string.format('%.0f', n)
end

local bans, info, now = KEYS[1], KEYS[2], num(ARGV[1])
-- Members of bans that ended (their client's key expired with them) leave first.
while true do
  local ended = redis.call('ZRANGEBYSCORE', bans, '-inf', now, 'LIMIT', 0, 1000)
  if #ended == 0 then break end
  redis.call('ZREM', bans, unpack(ended))
  redis.call('HDEL', info, unpack(ended))
end

local start = 0
if ARGV[2] ~= '' then
  local untl, member = num(ARGV[2]), ARGV[3]
  local score = redis.call('ZSCORE', bans, member)
  if score and num(score) == untl then
    start = redis.call('ZRANK', bans, member) + 1
  else
    -- The cursor's client left the index (unbanned, or its ban changed): start after the
    -- members that end before the cursor's end, and the ones ending with it that sort first.
    start = redis.call('ZCOUNT', bans, '-inf', '(' .. enc(untl))
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', bans, untl, untl)) do
      if m > member then break end
      start = start + 1
    end
  end
end

local page = redis.call('ZRANGE', bans, start, start + tonumber(ARGV[4]) - 1, 'WITHSCORES')
local out = {}
for i = 1, #page, 2 do
  local m = page[i]
  out[#out + 1] = m
  out[#out + 1] = enc(num(page[i + 1]))
  out[#out + 1] = redis.call('HGET', info, m) or ''
end
return out

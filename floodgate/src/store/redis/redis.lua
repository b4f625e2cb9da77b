-- floodgate's decision core (src/state.rs) ported to Redis Lua, so that every decision is
-- one round trip and atomic per client. Keep it line for line with state.rs: the
-- conformance tests run the same scenarios against MemoryStore and RedisStore.
--
-- KEYS[1]  the client's key; its value is the encoded ClientState (see `decode`).
-- ARGV[1]  operation: check | release | report | ban | extend | unban
-- ARGV[2]  now (ms since the epoch, from floodgate's clock; never Redis TIME)
-- ARGV[3]  operation arguments: for check, the plan in MessagePack (see `decode_plan`);
--          for the others, space separated (see each operation)
--
-- The call touches KEYS[1] only (one slot on a Redis Cluster). Its reply ends with three
-- numbers for the index of bans, which the caller updates with a call of its own (index.lua):
-- see `index_ban`.
--
-- Numbers are whole milliseconds; "never" (u64::MAX in Rust) is NEVER = 2^53 here, above
-- any real time and still exact in a double (-1 in text arguments and old text values).
-- Scope ids are u64 values that a double cannot hold: they stay strings.
--
-- Every time and duration is clamped to NEVER on the way in (`num`, and `lua_time`,
-- `push_time` and the plan's `time_field` in script.rs), and every time plus a duration
-- saturates at it (`sat`), so no time ever passes 2^54 and loses whole milliseconds: a
-- configured `Duration::MAX` (or any length from 2^53 ms, about 285,000 years, up) means
-- "forever", as u64::MAX does in Rust.

local NEVER = 9007199254740992
-- Locals for the library functions used on every call (cheaper than global lookups).
local tonumber, tostring, ipairs, pairs = tonumber, tostring, ipairs, pairs
local format, gmatch, tremove = string.format, string.gmatch, table.remove
local floor, mmax, mmin = math.floor, math.max, math.min
local mp_pack, mp_unpack, byte, pcall, type = cmsgpack.pack, cmsgpack.unpack, string.byte, pcall, type

local function num(s)
  local n = tonumber(s)
  if n == nil then return 0 end
  if n < 0 or n >= NEVER then return NEVER end
  return n
end

local function enc(n)
  if n < 1e14 then return tostring(n) end
  if n >= NEVER then return '-1' end
  return format('%.0f', n)
end

local function sat(a, b)
  local s = a + b
  if s > NEVER then return NEVER end
  return s
end

local function ssub(a, b)
  if a > b then return a - b end
  return 0
end

-- The successive space-separated tokens of `s` (nil past the end).
local function reader(s)
  return gmatch(s or '', '%S+')
end

-- ---- The bounded window (state/window.rs), kept apart from the rest -------------------
-- A rule of a count above EXACT_MAX counts per sub-window of width ceil(window / 60) ms in
-- the last SLOTS sub-windows: w = { width, base, total, slots = { [index] = units } } with
-- every index in base .. base + SLOTS - 1. Stored as this table (see `decode`).
local EXACT_MAX, SUB_WINDOWS, SLOTS = 128, 60, 61

-- floor(a / b) for whole a >= 0, b >= 1, exact up to 2^53 (`%` rounds a / b as a double:
-- its remainder is corrected into 0 .. b - 1, without a call to math.floor).
local function idiv(a, b)
  local r = a % b
  if r < 0 then r = r + b elseif r >= b then r = r - b end
  return (a - r) / b
end

local function width_for(window)
  local w = idiv(window, SUB_WINDOWS)
  if w * SUB_WINDOWS < window then w = w + 1 end
  return mmax(w, 1)
end

local function win_new(window)
  return { width = width_for(window), base = 0, total = 0, slots = {} }
end

-- Window::first_counted: the first sub-window holding a millisecond of (now - window, now].
local function win_first(w, now, window)
  return idiv(ssub(sat(now, 1), window), w.width)
end

-- Window::leaves_at
local function win_leaves(w, j, window)
  return sat((j + 1) * w.width, ssub(window, 1))
end

-- Window::live: the first live sub-window and the units from it on.
local function win_live(w, now, window)
  local first = mmax(win_first(w, now, window), w.base)
  if first - w.base >= SLOTS then return first, 0 end
  local gone = 0
  for j = w.base, first - 1 do gone = gone + (w.slots[j] or 0) end
  return first, ssub(w.total, gone)
end

-- Window::refusal
local function win_refusal(w, count, units, now, window)
  if units > count then return mmax(window, 1) end
  if window == 0 then return nil end
  local first, used = win_live(w, now, window)
  local excess = ssub(used + units, count)
  if excess == 0 then return nil end
  local drained = 0
  for j = first, w.base + SLOTS - 1 do
    drained = drained + (w.slots[j] or 0)
    if drained >= excess then return mmax(ssub(win_leaves(w, j, window), now), 1) end
  end
  return window
end

-- Window::quota
local function win_quota(w, count, now, window)
  local first, used = win_live(w, now, window)
  local oldest = nil
  for j, n in pairs(w.slots) do
    if n > 0 and j >= first and j < w.base + SLOTS and (oldest == nil or j < oldest) then
      oldest = j
    end
  end
  local reset = 0
  if oldest ~= nil then reset = ssub(win_leaves(w, oldest, window), now) end
  return ssub(count, used), reset
end

-- Window::add
local function win_add(w, now, units, window)
  local first = win_first(w, now, window)
  if first > w.base then
    if first - w.base >= SLOTS then
      w.slots, w.total = {}, 0
    else
      for j = w.base, first - 1 do
        local n = w.slots[j]
        if n ~= nil then
          w.total = w.total - n
          w.slots[j] = nil
        end
      end
    end
    w.base = first
  end
  local j = mmin(mmax(idiv(now, w.width), w.base), w.base + SLOTS - 1)
  w.slots[j] = (w.slots[j] or 0) + units
  w.total = w.total + units
end

-- The place of each large rule among the large rules of `rules` (its window in a log's
-- `wins`) and its sub-window width: `slot` and `width`, which `decode_plan` sets once.
local function place_rules(rules)
  local slot = 0
  for k = 1, #rules do
    local rule = rules[k]
    if rule.count > EXACT_MAX then
      slot = slot + 1
      rule.slot, rule.width = slot, width_for(rule.window)
    end
  end
end

-- The window of rule k of `rules` in `log`, when it has one of the rule's width.
local function log_window(log, rules, k)
  local rule = rules[k]
  if rule.count <= EXACT_MAX or log.wins == nil then return nil end
  if rule.slot == nil then place_rules(rules) end
  local w = log.wins[rule.slot]
  if w ~= nil and w.width == rule.width then return w end
  return nil
end

-- RuleLog::shape_windows: one window per large rule, a new one seeded with the log's times.
local function shape_windows(log, rules)
  local old, wins = log.wins or {}, {}
  local fits = log.wins ~= nil
  if fits then
    -- Usually every window is there already: check without building a new list.
    local n = 0
    for k = 1, #rules do
      local rule = rules[k]
      if rule.count > EXACT_MAX then
        n = n + 1
        local w = old[n]
        if w == nil or w.width ~= (rule.width or width_for(rule.window)) then
          fits = false
          break
        end
      end
    end
    if fits and n == #old then return end
  end
  for _, rule in ipairs(rules) do
    if rule.count > EXACT_MAX then
      local i = #wins + 1
      local w = old[i]
      if w == nil or w.width ~= width_for(rule.window) then
        fits = false
        w = win_new(rule.window)
        for _, t in ipairs(log.times) do win_add(w, t, 1, rule.window) end
      end
      wins[i] = w
    end
  end
  if fits and #wins == #old then return end
  log.wins = wins
end

-- Windows in the text encoding of versions 1 and 2 (read only, see `decode_text`).
local function decode_windows(nx)
  local n = tonumber(nx()) or 0
  if n == 0 then return nil end
  local wins = {}
  for i = 1, n do
    local w = { width = mmax(num(nx()), 1), base = num(nx()), total = 0, slots = {} }
    for _ = 1, tonumber(nx()) or 0 do
      local off, units = num(nx()), num(nx())
      if off < SLOTS then
        w.slots[w.base + off] = (w.slots[w.base + off] or 0) + units
        w.total = w.total + units
      end
    end
    wins[i] = w
  end
  return wins
end
-- ---- End of the bounded window ---------------------------------------------------------

local PF = {
  'window_start', 'count', 'carry', 'blocked_until', 'block_count', 'punished_until',
  'punishments', 'last_request', 'last_seen', 'last_block_at', 'grace_used_at',
  'grace_window', 'expires',
}

local function new_policy(id)
  local p = { id = id, kind = 'P' }
  for _, f in ipairs(PF) do p[f] = 0 end
  return p
end

local function new_state()
  return { last_seen = 0, ban_until = 0, ban_reason = 0, offences = {}, off_exp = 0, scopes = {} }
end

-- ClientState as written by versions 1 and 2 of this script (read only, for values stored
-- before version 3): "V last_seen ban_until ban_reason offences_expire n_off off.. n_scopes
-- scope.." with scope "L id expires n t.." | "P id <the 13 PF fields>", and from V = 2 every
-- "L" scope goes on with "nw (width base np (offset units)*)*". Times as text, -1 = never.
local function decode_text(blob)
  local st = new_state()
  local nx = reader(blob)
  local version = nx()
  if version ~= '1' and version ~= '2' then return st end
  st.last_seen = num(nx())
  st.ban_until = num(nx())
  st.ban_reason = tonumber(nx()) or 0
  st.off_exp = num(nx())
  for k = 1, tonumber(nx()) or 0 do st.offences[k] = num(nx()) end
  for k = 1, tonumber(nx()) or 0 do
    local kind, id = nx(), nx()
    if kind == 'L' then
      local log = { id = id, kind = 'L', expires = num(nx()), times = {} }
      for j = 1, tonumber(nx()) or 0 do log.times[j] = num(nx()) end
      if version == '2' then log.wins = decode_windows(nx) end
      st.scopes[k] = log
    else
      local p = { id = id, kind = 'P' }
      for _, f in ipairs(PF) do p[f] = num(nx()) end
      st.scopes[k] = p
    end
  end
  return st
end

-- ClientState (version 3): the MessagePack (cmsgpack) of two values, 3 and this table as it
-- is: `st` with its `offences` and `scopes` lists, each scope a log { id, kind = 'L',
-- expires, times, wins } (`wins` a list of windows { width, base, total, slots = {
-- [sub-window] = units } }, absent when the log has none) or a policy { id, kind = 'P', the
-- 13 PF fields }. Times are numbers (NEVER for never), scope ids strings; a table keyed 1..n
-- is an array, any other a map. Redis's C code reads and writes it in one call each: no
-- Lua loop over the value.
local function decode(blob)
  if not blob then return new_state() end
  local first = byte(blob, 1)
  if first == 49 or first == 50 then return decode_text(blob) end -- '1', '2'
  local ok, version, st = pcall(mp_unpack, blob)
  -- A value in an unknown format, or one that does not parse, reads as no state, as a
  -- value of an unknown version always did.
  if not ok or version ~= 3 or type(st) ~= 'table' or type(st.scopes) ~= 'table'
    or type(st.offences) ~= 'table' or type(st.last_seen) ~= 'number'
    or type(st.ban_until) ~= 'number' or type(st.ban_reason) ~= 'number'
    or type(st.off_exp) ~= 'number' then
    return new_state()
  end
  return st
end

local function encode(st)
  return mp_pack(3, st)
end

-- Plan: the MessagePack of this table (written by script.rs), which the script reads as is:
--   { ban_check, count, units, logs = { log.. }, policy = policy (absent when none) }
-- log: { scope, cap, longest, first, bounded, rules = { { count, window }.. } }, `first` the
--      0-based index of its first rule among the plan's limits, `bounded` how many of its
--      rules count above EXACT_MAX
-- policy: { scope, limit, amount, window, block_ms, block_limit, relative, reset, ban_base,
--      acc_cap, max_window, cooldown, grace_extra, grace_interval, factor, adaptive_max,
--      jitter }; ban_base is absent for a blacklist, and acc_cap, max_window, grace_extra
--      and factor when unset; jitter is the random extra already drawn.
-- Times arrive clamped to NEVER.
local function decode_plan(s)
  local plan = mp_unpack(s)
  for k = 1, #plan.logs do
    local lp = plan.logs[k]
    if lp.bounded > 0 then place_rules(lp.rules) end
  end
  -- Units of every limit one request uses (its cost).
  plan.units = mmax(plan.units or 1, 1)
  return plan
end

local function scope_index(st, id)
  local scopes = st.scopes
  for i = 1, #scopes do
    local s = scopes[i]
    if s.id == id then return i end
  end
  return nil
end

local function log_mut(st, id)
  local i = scope_index(st, id)
  if i == nil then
    i = #st.scopes + 1
    st.scopes[i] = { id = id, kind = 'L', expires = 0, times = {} }
  elseif st.scopes[i].kind ~= 'L' then
    st.scopes[i] = { id = id, kind = 'L', expires = 0, times = {} }
  end
  return st.scopes[i]
end

local function find_log(st, id)
  local i = scope_index(st, id)
  if i ~= nil and st.scopes[i].kind == 'L' then return st.scopes[i] end
  return nil
end

local function policy_mut(st, id)
  local i = scope_index(st, id)
  if i == nil then
    i = #st.scopes + 1
    st.scopes[i] = new_policy(id)
  elseif st.scopes[i].kind ~= 'P' then
    st.scopes[i] = new_policy(id)
  end
  return st.scopes[i]
end

-- RuleLog::in_window: entries in (now - window, now].
local function in_window(log, now, window)
  local floor = ssub(now, window)
  local first = 0
  local times = log.times
  for i = 1, #times do
    local t = times[i]
    if t <= floor then first = first + 1 else break end
  end
  return #log.times - first
end

-- RuleLog::refusal (rule k of lp, for a request of `units`)
local function refusal(log, lp, k, now, units)
  local rule = lp.rules[k]
  units = mmax(units, 1)
  if units > rule.count then return mmax(rule.window, 1) end
  local w = log_window(log, lp.rules, k)
  if w ~= nil then return win_refusal(w, rule.count, units, now, rule.window) end
  local need = rule.count - units + 1
  local len = #log.times
  if len < need then return nil end
  local leaves = sat(log.times[len - need + 1], rule.window)
  if leaves > now then return leaves - now end
  return nil
end

-- RuleLog::quota
local function log_quota(log, lp, k, now)
  local rule = lp.rules[k]
  local w = log_window(log, lp.rules, k)
  if w ~= nil then return win_quota(w, rule.count, now, rule.window) end
  local n = in_window(log, now, rule.window)
  local remaining = ssub(rule.count, n)
  local reset = 0
  if n > 0 then reset = ssub(sat(log.times[#log.times - n + 1], rule.window), now) end
  return remaining, reset
end

-- RuleLog::push
local function push(log, lp, now, units)
  units = mmax(units, 1)
  if lp.bounded > 0 then
    shape_windows(log, lp.rules)
    local i = 0
    for k = 1, #lp.rules do
      local rule = lp.rules[k]
      if rule.count > EXACT_MAX then
        i = i + 1
        win_add(log.wins[i], now, units, rule.window)
      end
    end
  else
    log.wins = nil
  end
  if lp.cap > 0 then
    for _ = 1, math.min(units, lp.cap) do
      while #log.times >= lp.cap do tremove(log.times, 1) end
      log.times[#log.times + 1] = now
    end
  elseif #log.times > 0 then
    log.times = {}
  end
  log.expires = sat(now, lp.longest)
end

-- PolicyState::roll
local function roll(p, pp, now)
  if p.last_seen ~= 0 and p.expires <= now then
    for _, f in ipairs(PF) do p[f] = 0 end
  end
  if p.punished_until ~= 0 and p.punished_until < NEVER and now >= p.punished_until then
    p.punished_until = 0
    if pp.reset then p.block_count = 0 else p.block_count = mmin(p.block_count, pp.block_limit) end
  end
  if p.window_start ~= 0 and now >= sat(p.window_start, pp.window) then
    local unused = ssub(pp.amount + p.carry, p.count)
    if pp.acc_cap ~= nil then p.carry = mmin(unused, pp.acc_cap) else p.carry = 0 end
    p.window_start = 0
    p.count = 0
  end
end

-- PolicyState::grace_eligible
local function grace_eligible(p, pp, now)
  if pp.grace_extra == nil then return false end
  local function long_ago(t) return t == 0 or ssub(now, t) >= pp.grace_interval end
  return long_ago(p.last_block_at) and long_ago(p.grace_used_at)
end

-- PolicyState::touch
local function touch(p, pp, now)
  p.last_seen = now
  local idle_end = NEVER
  if pp.max_window ~= nil then idle_end = sat(now, pp.max_window) end
  p.expires = mmax(idle_end, p.blocked_until, p.punished_until)
end

-- ClientState::set_ban: keeps a longer ban already in force.
local function set_ban(st, untl, reason)
  if st.ban_reason ~= 0 and st.ban_until >= untl then return end
  st.ban_until = untl
  st.ban_reason = reason
end

-- f64::powi as Rust computes it (compiler-rt's __powidf2: square and multiply), so that
-- every factor gives the same milliseconds as the memory store, not only whole ones.
local function powi(a, b)
  local r = 1.0
  while true do
    if b % 2 == 1 then r = r * a end
    b = floor(b / 2)
    if b == 0 then return r end
    a = a * a
  end
end

-- Adaptive::length (the factor arrives already normalised to >= 1). A zero base stays 0:
-- 0 x factor^n would be NaN once factor^n overflows to inf.
local function adaptive_length(pp, n)
  if pp.ban_base == 0 then return 0 end
  local ms = pp.ban_base * powi(pp.factor, mmin(n, 1024))
  ms = mmax(mmin(ms, pp.adaptive_max), 0)
  return floor(ms)
end

-- ClientState::block
local function block(st, pp, now)
  local p = policy_mut(st, pp.scope)
  p.blocked_until = sat(now, pp.block_ms)
  p.block_count = p.block_count + 1
  p.last_block_at = now
  local punish = p.block_count > pp.block_limit
  local untl = 0
  if punish then
    if pp.ban_base == nil then
      untl = NEVER
    else
      local length = pp.ban_base
      if pp.factor ~= nil then length = sat(adaptive_length(pp, p.punishments), pp.jitter) end
      untl = sat(now, length)
    end
    p.punishments = p.punishments + 1
    p.punished_until = untl
  end
  touch(p, pp, now)
  if punish then
    set_ban(st, untl, 3)
    return { 2, enc(untl), 3, 1 }
  end
  return { 1, 1, pp.limit, enc(p.blocked_until - now), 1 }
end

-- Decisions: {0, has_quota, limit, remaining, reset} allowed; {1, reason, limit, retry, started}
-- limited (reason 0 rule, 1 blocked, 2 cooldown); {2, until, reason, started} banned.
local function check(st, plan, now)
  st.last_seen = now
  if plan.ban_check and st.ban_reason ~= 0 then
    if st.ban_until > now then return { 2, enc(st.ban_until), st.ban_reason, 0 } end
    st.ban_until = 0
    st.ban_reason = 0
  end
  if not plan.count then return { 0, 0 } end

  local pp = plan.policy
  if pp then
    local p = policy_mut(st, pp.scope)
    roll(p, pp, now)
    local reason, wait
    if p.blocked_until > now then
      if pp.relative then p.blocked_until = sat(now, pp.block_ms) end
      reason, wait = 1, p.blocked_until - now
    elseif pp.cooldown > 0 and p.last_request ~= 0 and now < sat(p.last_request, pp.cooldown) then
      reason, wait = 2, sat(p.last_request, pp.cooldown) - now
    end
    touch(p, pp, now)
    if reason then return { 1, reason, pp.limit, enc(wait), 0 } end
  end

  local refused_limit, refused_wait = nil, nil
  for n = 1, #plan.logs do
    local lp = plan.logs[n]
    local log = find_log(st, lp.scope)
    for k = 1, #lp.rules do
      local rule = lp.rules[k]
      local wait
      if log == nil then
        if rule.count < plan.units then wait = mmax(rule.window, 1) end
      else
        wait = refusal(log, lp, k, now, plan.units)
      end
      if wait ~= nil and (refused_wait == nil or wait > refused_wait) then
        refused_limit, refused_wait = lp.first + k - 1, wait
      end
    end
  end
  if refused_wait ~= nil then return { 1, 0, refused_limit, enc(refused_wait), 0 } end

  local grace_taken = false
  if pp then
    local p = policy_mut(st, pp.scope)
    local eligible = grace_eligible(p, pp, now)
    local allowance = pp.amount + p.carry
    local after = p.count + plan.units
    if after > allowance and pp.grace_extra ~= nil then
      local in_grace = p.window_start ~= 0 and p.grace_window == p.window_start
      if in_grace or eligible then
        allowance = allowance + pp.grace_extra
        grace_taken = not in_grace
      end
    end
    if after > allowance then return block(st, pp, now) end
  end

  -- The quota shown: the limit with the fewest remaining, then the latest reset.
  local best, best_rem, best_reset = nil, 0, 0
  for n = 1, #plan.logs do
    local lp = plan.logs[n]
    local log = log_mut(st, lp.scope)
    push(log, lp, now, plan.units)
    for k = 1, #lp.rules do
      local remaining, reset = log_quota(log, lp, k, now)
      if best == nil or remaining < best_rem or (remaining == best_rem and reset > best_reset) then
        best, best_rem, best_reset = lp.first + k - 1, remaining, reset
      end
    end
  end
  if pp then
    local p = policy_mut(st, pp.scope)
    if p.window_start == 0 then p.window_start = now end
    p.count = p.count + plan.units
    p.last_request = now
    if grace_taken then
      p.grace_window = p.window_start
      p.grace_used_at = now
    end
    touch(p, pp, now)
    local remaining = ssub(pp.amount + p.carry, p.count)
    local reset = ssub(sat(p.window_start, pp.window), now)
    if best == nil or remaining < best_rem or (remaining == best_rem and reset > best_reset) then
      best, best_rem, best_reset = pp.limit, remaining, reset
    end
  end
  if best == nil then return { 0, 0 } end
  return { 0, 1, best, best_rem, enc(best_reset) }
end

-- ClientState::report; args "count window duration". {0, offences} or {1, until}.
local function report(st, args, now)
  local nx = reader(args)
  local count = mmax(num(nx()), 1)
  local window, duration = num(nx()), num(nx())
  st.last_seen = now
  while #st.offences >= count do tremove(st.offences, 1) end
  st.offences[#st.offences + 1] = now
  st.off_exp = sat(now, window)
  local floor = ssub(now, window)
  local n = 0
  for _, o in ipairs(st.offences) do
    if o > floor then n = n + 1 end
  end
  if n >= count then
    local untl = sat(now, duration)
    set_ban(st, untl, 1)
    st.offences = {}
    st.off_exp = 0
    return { 1, enc(untl) }
  end
  return { 0, n }
end

-- ClientState::unban; {1} when a ban was in force.
local function unban(st, now)
  local was = st.ban_reason ~= 0 and st.ban_until > now
  st.ban_until = 0
  st.ban_reason = 0
  st.offences = {}
  st.off_exp = 0
  for _, s in ipairs(st.scopes) do
    if s.kind == 'P' then
      s.blocked_until = 0
      s.block_count = 0
      s.punished_until = 0
    end
  end
  if was then return { 1 } end
  return { 0 }
end

-- ClientState::release (state/release.rs): gives back a request counted at `at` under
-- `plan` (the scopes whose rules count by response), as far as it can still be found.
local function release(st, plan, at)
  local units = plan.units
  for _, lp in ipairs(plan.logs) do
    local log = find_log(st, lp.scope)
    if log ~= nil then
      local left = mmin(units, lp.cap)
      for i = #log.times, 1, -1 do
        if left == 0 or log.times[i] < at then break end
        if log.times[i] == at then
          tremove(log.times, i)
          left = left - 1
        end
      end
      if log.wins ~= nil then
        local i = 0
        for _, rule in ipairs(lp.rules) do
          if rule.count > EXACT_MAX then
            i = i + 1
            local w = log.wins[i]
            local j = idiv(at, mmax(w and w.width or 1, 1))
            if w ~= nil and w.width == width_for(rule.window) and j >= w.base
                and j < w.base + SLOTS then
              local taken = mmin(w.slots[j] or 0, units)
              if taken > 0 then
                w.slots[j] = w.slots[j] - taken
                w.total = w.total - taken
              end
            end
          end
        end
      end
    end
  end
  local pp = plan.policy
  if pp ~= nil then
    local i = scope_index(st, pp.scope)
    local p = i and st.scopes[i]
    if p and p.kind == 'P' and p.window_start ~= 0 and p.window_start <= at
        and at < sat(p.window_start, pp.window) then
      p.count = ssub(p.count, units)
      if p.count == 0 and p.window_start == at and p.grace_window ~= at then
        p.window_start = 0
      end
    end
  end
end

-- ClientState::expires_at
local function expires_at(st)
  local expires = st.off_exp
  if st.ban_reason ~= 0 then expires = mmax(expires, st.ban_until) end
  local scopes = st.scopes
  for i = 1, #scopes do expires = mmax(expires, scopes[i].expires) end
  return expires
end

-- The key's life follows ClientState::expires_at, measured from floodgate's `now` (SET PX,
-- not PEXPIREAT: the injected clock need not be Redis's). Like the memory store, expired
-- parts stay in place until the whole state expires (so both stores hold the same state,
-- scope order included); a state that holds nothing is deleted.
-- The ban as the call found it, for `index_ban`.
local old_ban = { untl = 0, reason = 0 }

-- The change of the index of bans that listings read (bans.lua), for the caller to apply
-- (index.lua): when this call changed the client's ban, 1 (a ban began: since now), 2 (the
-- ban in force was lengthened or replaced: since kept) or 3 (no ban in force any more), then
-- the ban's end and reason. Calls that leave the ban as it was change nothing (0).
local index_change = { 0, 0, 0 }
local function index_ban(st, now)
  if st.ban_until == old_ban.untl and st.ban_reason == old_ban.reason then return end
  if st.ban_reason ~= 0 and st.ban_until > now then
    local kept = old_ban.reason ~= 0 and old_ban.untl > now
    index_change = { kept and 2 or 1, enc(st.ban_until), st.ban_reason }
  else
    index_change = { 3, 0, 0 }
  end
end

local function save(key, st, now)
  index_ban(st, now)
  local expires = expires_at(st)
  if expires <= now then
    redis.call('DEL', key)
  elseif expires >= NEVER then
    redis.call('SET', key, encode(st))
  else
    redis.call('SET', key, encode(st), 'PX', format('%.0f', expires - now))
  end
end

local key, op, now = KEYS[1], ARGV[1], num(ARGV[2])
local args = ARGV[3]
local blob = redis.call('GET', key)
if blob == false then blob = nil end
local st = decode(blob)
-- A state that expired by floodgate's clock is gone, as if swept, even when Redis's own
-- clock has not dropped the key yet.
if blob ~= nil and expires_at(st) <= now then
  blob = nil
  st = decode(nil)
end
old_ban.untl, old_ban.reason = st.ban_until, st.ban_reason

local function dispatch()
if op == 'check' then
  local plan = decode_plan(args)
  local counts = plan.count and (#plan.logs > 0 or plan.policy ~= nil)
  local decision = check(st, plan, now)
  if blob ~= nil or counts then save(key, st, now) end
  return decision
elseif op == 'release' then
  -- args: "at plan", the time as text, a space, then the plan in MessagePack
  if blob == nil then return { 0 } end
  local at, rest = string.match(args, '^(%S+) (.*)$')
  release(st, decode_plan(rest or ''), num(at))
  save(key, st, now)
  return { 0 }
elseif op == 'report' then
  local outcome = report(st, args, now)
  save(key, st, now)
  return outcome
elseif op == 'ban' then
  st.last_seen = mmax(st.last_seen, now)
  st.ban_until = num(reader(args)())
  st.ban_reason = 2
  save(key, st, now)
  return { 0 }
elseif op == 'extend' then
  -- ClientState::extend_ban: an automatic ban only ever lengthens the one in force.
  local nx = reader(args)
  local untl = num(nx())
  local reason = tonumber(nx()) or 2
  st.last_seen = mmax(st.last_seen, now)
  set_ban(st, untl, reason)
  save(key, st, now)
  return { enc(st.ban_until), st.ban_reason }
elseif op == 'unban' then
  if blob == nil then return { 0 } end
  local was = unban(st, now)
  save(key, st, now)
  return was
end
return redis.error_reply('floodgate: unknown operation ' .. tostring(op))
end

local reply = dispatch()
if type(reply) ~= 'table' or reply.err then return reply end
for _, v in ipairs(index_change) do reply[#reply + 1] = v end
return reply

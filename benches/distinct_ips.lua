-- wrk script: requests from many clients (x-ip header): CLIENTS addresses in turn (default
-- 2^24, so that every request of a run comes from a different client).
local clients = tonumber(os.getenv("CLIENTS") or "16777216")
local counter = 0
local thread_id = 0
local threads = 0

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

function init(args)
  thread_id = id
end

function request()
  counter = counter + 1
  local n = (thread_id * 1000003 + counter) % clients
  local ip = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format("GET", "/ping", { ["x-ip"] = ip })
end

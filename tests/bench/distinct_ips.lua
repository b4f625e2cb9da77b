-- wrk script: every request from a different client (x-ip header), cycling over 2^24 addresses.
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
  local n = (thread_id * 1000003 + counter) % 16777216
  local ip = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format("GET", "/ping", { ["x-ip"] = ip })
end

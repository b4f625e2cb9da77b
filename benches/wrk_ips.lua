-- wrk script of benches/http.sh: each request carries one of 10,000 distinct client
-- addresses (10.0.0.1, 10.0.0.2, ..., the order of floodgate_bench::client_ip) in the
-- x-client-ip header, in turn; requests are formatted once, in init, to keep wrk cheap.
-- done() prints one machine-readable line:
--   RESULT <requests/s> <p50 us> <p90 us> <p99 us> <p99.9 us> <non-2xx/3xx> <requests>

local requests = {}
local count = 10000
local next_index = 0

function init(args)
  for i = 1, count do
    local ip = string.format("10.%d.%d.%d", math.floor(i / 65536), math.floor(i / 256) % 256, i % 256)
    requests[i] = wrk.format("GET", "/", { ["x-client-ip"] = ip })
  end
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end

function done(summary, latency, _)
  io.write(string.format("RESULT %.1f %d %d %d %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), summary.errors.status, summary.requests))
end

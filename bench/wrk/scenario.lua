-- wrk script for the Shipshape benchmarks. Configured through the environment:
--   WRK_METHOD       GET (default), POST, ...
--   WRK_PATHS        comma-separated paths, used in turn (e.g. several product ids)
--   WRK_HEADERS      "Name: value" lines, separated by "|"
--   WRK_BODY         request body (sent with Content-Type: application/json)
--   WRK_BODIES       several bodies separated by newlines, used in turn (overrides WRK_BODY)
--   WRK_IDEMPOTENCY  "1": a distinct Idempotency-Key on every request (WRK_RUN_ID makes them unique per run)
-- Prints one JSON line with the counts and the 50th, 95th and 99th latency percentiles.

local method = os.getenv("WRK_METHOD") or "GET"
local body = os.getenv("WRK_BODY")
local bodies = {}
for b in string.gmatch(os.getenv("WRK_BODIES") or "", "[^\n]+") do
  table.insert(bodies, b)
end
if #bodies > 0 then body = bodies[1] end
local idempotency = os.getenv("WRK_IDEMPOTENCY") == "1"
local run_id = os.getenv("WRK_RUN_ID") or "run"

local paths = {}
for p in string.gmatch(os.getenv("WRK_PATHS") or "/", "[^,]+") do
  table.insert(paths, p)
end

local headers = {}
for line in string.gmatch(os.getenv("WRK_HEADERS") or "", "[^|]+") do
  local name, value = string.match(line, "^%s*([^:]+):%s*(.-)%s*$")
  if name then headers[name] = value end
end
if body then headers["Content-Type"] = "application/json" end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

local counter = 0
-- With neither idempotency keys nor several paths the request never changes: build it once — on
-- the first call, because wrk fills in the Host header only after the script has loaded.
local fixed = not idempotency and #paths == 1 and #bodies <= 1
local static = nil

function request()
  if static then return static end
  if fixed then
    static = wrk.format(method, paths[1], headers, body)
    return static
  end
  counter = counter + 1
  local h = headers
  if idempotency then
    h = {}
    for k, v in pairs(headers) do h[k] = v end
    h["Idempotency-Key"] = string.format("bench-%s-%s-%d", run_id, tostring(thread_number), counter)
  end
  local b = body
  if #bodies > 1 then b = bodies[(counter % #bodies) + 1] end
  return wrk.format(method, paths[(counter % #paths) + 1], h, b)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"durationUs":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"latencyUs":{"p50":%d,"p95":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end

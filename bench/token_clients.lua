-- wrk script: POST /token with HTTP Basic auth as one of many registered clients (picked at
-- random per request), a different sub per request, email, name and an audience.
-- AUTH_FILE: one "Basic ..." header value per line (bench/seed_clients.py --auth-file).
-- AUDIENCE: the audience to ask for (default https://sync.example).
local auth_file = os.getenv("AUTH_FILE")
local audience = os.getenv("AUDIENCE") or "https://sync.example"
local auths = {}
local n = 0
local counter = 0
local thread_id = 0
local next_thread = 0

function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  for line in io.lines(auth_file) do
    if #line > 0 then n = n + 1; auths[n] = line end
  end
  math.randomseed(os.time() * 1000 + thread_id)
  counter = 0
end

function request()
  counter = counter + 1
  local sub = string.format("user-%d-%d", thread_id, counter)
  local body = "grant_type=client_credentials&sub=" .. sub ..
      "&email=" .. sub .. "%40example.com&name=User%20" .. counter ..
      "&audience=" .. audience
  return wrk.format("POST", "/token", {
    ["Authorization"] = auths[math.random(n)],
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, body)
end

function done(summary, latency, requests)
  io.write(string.format("JSON {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, \"p99_us\": %d, \"non2xx\": %d, \"socket_errors\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end

-- wrk script: POST /token with HTTP Basic auth, a different sub per request,
-- email, name and an audience (the shape of a real backend's call).
-- Configure with environment variables: CLIENT_ID, CLIENT_SECRET, AUDIENCE.
local client_id = os.getenv("CLIENT_ID")
local client_secret = os.getenv("CLIENT_SECRET")
local audience = os.getenv("AUDIENCE") or "https://sync.example"

local function b64(data)
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

local auth = "Basic " .. b64(client_id .. ":" .. client_secret)
local counter = 0
local thread_id = 0

function setup(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  counter = 0
end

function request()
  counter = counter + 1
  local sub = string.format("user-%d-%d", thread_id, counter)
  local body = "grant_type=client_credentials&sub=" .. sub ..
      "&email=" .. sub .. "%40example.com&name=User%20" .. counter ..
      "&audience=" .. audience
  return wrk.format("POST", "/token", {
    ["Authorization"] = auth,
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, body)
end

local errors = 0
function response(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("JSON {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, \"p99_us\": %d, \"non2xx\": %d, \"socket_errors\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end

-- wrk script for tests.soak: rotates over a request mix and classifies every answer by its
-- body: the direct responses behind authz say "ok" (an allow we expect) or "LEAK" (an allow
-- the rules must refuse); a 503 whose body is authz's own "a service needed for
-- authorization is unavailable" (a dependency down: designed) is told apart from any other
-- 503 (Envoy's, when authz itself fails or is too slow). Args: mix, delay_ms, then
-- name=token pairs.
local threads = {}
local mixes = {
  load = {
    {"/soak/ok", "user"}, {"/soak/ok", "user"}, {"/soak/ok", "user"},
    {"/soak/admin", "user"}, {"/soak/badtoken", "garbage"}, {"/soak/badtoken", ""},
  },
  pg = {{"/soak/pg", "user"}},
  hook = {{"/soak/hook", "user"}},
  jwks = {{"/soak/ok", "jwks"}, {"/soak/badtoken", "unknownkid"}},
}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local mix = mixes[args[1]]
  delay_ms = tonumber(args[2])
  local tokens = {}
  for i = 3, #args do
    local k, v = args[i]:match("([^=]+)=(.*)")
    tokens[k] = v
  end
  reqs = {}
  for _, r in ipairs(mix) do
    local headers = {}
    if r[2] ~= "" then headers["authorization"] = "Bearer " .. tokens[r[2]] end
    table.insert(reqs, wrk.format("GET", r[1], headers))
  end
  n, good, leak, deny, dep503, s503, other = 0, 0, 0, 0, 0, 0, 0
end

function request()
  n = n + 1
  return reqs[(n % #reqs) + 1]
end

function delay()
  return delay_ms
end

function response(status, headers, body)
  if status == 200 and body == "ok" then good = good + 1
  elseif status == 200 and body == "LEAK" then leak = leak + 1
  elseif status == 503 and body ~= nil
      and body:find("service needed for authorization is unavailable", 1, true) then
    dep503 = dep503 + 1
  elseif status == 503 then s503 = s503 + 1
  elseif status >= 400 and status < 500 then deny = deny + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local t = {good = 0, leak = 0, deny = 0, dep503 = 0, s503 = 0, other = 0}
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + thread:get(k) end
  end
  local e = summary.errors
  io.write(string.format(
    'SOAK {"good":%d,"leak":%d,"deny":%d,"dep503":%d,"s503":%d,"other":%d,"requests":%d,' ..
    '"socket_errors":%d,"seconds":%f,"p50_ms":%f,"p99_ms":%f}\n',
    t.good, t.leak, t.deny, t.dep503, t.s503, t.other, summary.requests,
    e.connect + e.read + e.write + e.timeout, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end

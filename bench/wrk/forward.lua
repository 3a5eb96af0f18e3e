-- wrk script shared by every configuration of bench/proxy-compare.
--
-- Forward-proxy mode: wrk connects to the proxy named on its command line, and every request line
-- carries the absolute URL of the origin (absolute-form, RFC 9112 §3.2.2), with the Host header set
-- to the origin's authority, the way a browser configured with an HTTP proxy talks:
--
--   wrk -t2 -c32 -d10s --latency -s bench/wrk/forward.lua http://127.0.0.1:PROXY/ \
--       -- http://127.0.0.1:ORIGIN/1k
--
-- Direct mode (no argument after --): plain origin-form requests to the URL on the command line.
-- The direct baseline runs the same script so that every configuration pays the same Lua cost.
--
-- Either way, done() prints one line "proxy-compare-result {json}" with the request count, the
-- duration, the latency percentiles in microseconds and wrk's error counters, so the caller does
-- not have to parse wrk's human summary.

local request_bytes

function init(args)
  local target = args[1]
  if target == nil or target == "" then
    request_bytes = wrk.format("GET")
    return
  end
  local authority = target:match("^https?://([^/]+)")
  if authority == nil then
    error("forward.lua: expected an absolute http:// URL after --, got " .. target)
  end
  local headers = {}
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  headers["Host"] = authority
  request_bytes = wrk.format("GET", target, headers)
end

function request()
  return request_bytes
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'proxy-compare-result {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"non_2xx_3xx":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, e.connect, e.read, e.write, e.timeout, e.status))
end

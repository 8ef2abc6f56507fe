-- Send the pre-signed callbacks of a corpus file (bench/corpus.py), one line per request, in order.
--
--   wrk -t1 -c64 -d10s -s bench/wrk/callbacks.lua http://127.0.0.1:PORT -- CORPUS [OFFSET] [HOST]
--
-- A corpus line is "path<TAB>signature<TAB>body". Every request is formatted once, in init, so that
-- request() costs a table lookup. With one wrk thread (-t1) the counter is shared by all connections
-- and no line is sent twice until the whole file has been sent. done() prints one JSON line for
-- bench/wrk.py: counts, errors (errors.status counts the non-2xx/3xx answers) and latency in us.

local corpus = {}
local count = 0
local index = 0

function init(args)
  local path = args[1]
  local offset = tonumber(args[2] or "0")
  local host = args[3] or "127.0.0.1"
  for line in io.lines(path) do
    local target, signature, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
    count = count + 1
    corpus[count] = wrk.format("POST", target, {
      ["Host"] = host,
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["X-Twilio-Signature"] = signature,
    }, body)
  end
  index = offset % count
end

function request()
  index = index + 1
  if index > count then
    index = 1
  end
  return corpus[index]
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end

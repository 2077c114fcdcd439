-- wrk script for the benchmark: POST one prebuilt inference body again and again.
-- Usage: wrk -t1 -cN -dS -s v2_infer.lua URL -- BODY_FILE CONTENT_TYPE [BINARY_HEADER_LENGTH]
-- The body is built by the bench (JSON or binary tensors); BINARY_HEADER_LENGTH, when given,
-- is sent as Inference-Header-Content-Length (the binary tensor data extension).
local prepared

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  local headers = { ["Content-Type"] = args[2] }
  if args[3] ~= nil and args[3] ~= "" then
    headers["Inference-Header-Content-Length"] = args[3]
  end
  prepared = wrk.format("POST", nil, headers, body)
end

function request()
  return prepared
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'DAVIT-BENCH-RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(99.0)))
end

-- One benchmark target for wrk. Read from the environment (so the API key never shows in `ps`):
--   BENCH_PATH         the path to request; "{id}" in it is replaced by a device id
--   BENCH_IDS_FILE     file with one device id a line, rotated over when BENCH_PATH has "{id}"
--   BENCH_API_KEY      sent as x-platform-api-key, if set
--   BENCH_CUSTOMER_ID  sent as x-platform-cid, if set
-- Counts every answer that is not 200 (wrk itself only counts statuses above 399) and ends with
-- one line "BENCH_RESULT {json}" for the Python side to read.

local threads = {}

function setup(thread)
  thread:set("thread_number", #threads)
  table.insert(threads, thread)
end

local function read_ids(path)
  local ids = {}
  for line in io.lines(path) do
    if line ~= "" then
      table.insert(ids, line)
    end
  end
  return ids
end

function init(args)
  not_200 = 0
  local api_key = os.getenv("BENCH_API_KEY")
  local customer_id = os.getenv("BENCH_CUSTOMER_ID")
  if api_key then wrk.headers["x-platform-api-key"] = api_key end
  if customer_id then wrk.headers["x-platform-cid"] = customer_id end

  -- Every request is formatted once here, so the load generator spends its time sending.
  local path = os.getenv("BENCH_PATH")
  prepared = {}
  if path:find("{id}", 1, true) then
    for _, id in ipairs(read_ids(os.getenv("BENCH_IDS_FILE"))) do
      table.insert(prepared, wrk.format("GET", (path:gsub("{id}", id))))
    end
  else
    table.insert(prepared, wrk.format("GET", path))
  end
  -- Threads start at different devices so they do not ask for the same row in step.
  next_index = (thread_number * 7919) % #prepared + 1
end

function request()
  local req = prepared[next_index]
  next_index = next_index % #prepared + 1
  return req
end

function response(status, headers, body)
  if status ~= 200 then
    not_200 = not_200 + 1
  end
end

function done(summary, latency, requests)
  local total_not_200 = 0
  for _, thread in ipairs(threads) do
    total_not_200 = total_not_200 + thread:get("not_200")
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "not_200": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, total_not_200,
    errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end

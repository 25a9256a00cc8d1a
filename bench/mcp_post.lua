-- wrk script for bench/http_load.py: POST one MCP JSON-RPC request per wrk request, each with its own id.
--
--   wrk ... -s bench/mcp_post.lua http://127.0.0.1:PORT/mcp -- <settings.lua>
--
-- <settings.lua> (written by bench/http_load.py) returns a table:
--   path     the request path ("/mcp")
--   headers  a table of request headers (Content-Length is added by wrk.format)
--   prefix   the body up to the JSON-RPC id, e.g. '{"jsonrpc":"2.0","id":'
--   suffix   the body after the id, e.g. ',"method":"tools/call","params":{...}}'
--   cap      stop after this many responses per thread (0: run for wrk's --duration); with -t1 the run
--            then ends at the cap (through LuaJIT's ffi), else at the end of --duration
--   first_id the JSON-RPC ids of this run start above it (unique over the whole bench)
--
-- A response counts as "ok" when its status is 2xx and its body (JSON, or SSE "data:" lines) holds a
-- "result" and neither a JSON-RPC "error" object nor "isError":true. done() prints one line
--   @@bench {json}
-- with the totals, and the p50/p99 latency in microseconds, for bench/http_load.py to parse.

local threads = {}

has_ffi, ffi = pcall(require, "ffi")
if has_ffi then
  ffi.cdef("int kill(int pid, int sig); int getpid(void);")
end

function setup(thread)
  thread:set("thread_number", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local settings = dofile(args[1])
  path = settings.path
  headers = settings.headers
  prefix = settings.prefix
  suffix = settings.suffix
  cap = settings.cap or 0
  -- Ids are unique across threads and runs: thread n uses first_id + n * 10^9 + 1, + 2, ...
  base_id = (settings.first_id or 0) + thread_number * 1000000000
  sent = 0
  responses = 0
  ok = 0
  non2xx = 0
  rpc_errors = 0
  first_bad = ""
end

function request()
  sent = sent + 1
  return wrk.format("POST", path, headers, prefix .. string.format("%.0f", base_id + sent) .. suffix)
end

function response(status, hdrs, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_bad == "" then first_bad = "HTTP " .. status .. ": " .. string.sub(body or "", 1, 300) end
  elseif body == nil
      or not string.find(body, '"result"', 1, true)
      or string.find(body, '"error":{', 1, true)
      or string.find(body, '"isError":true', 1, true) then
    rpc_errors = rpc_errors + 1
    if first_bad == "" then first_bad = string.sub(body or "", 1, 300) end
  else
    ok = ok + 1
  end
  if cap > 0 and responses >= cap and not capped then
    capped = true
    wrk.thread:stop()
    -- wrk's main thread sleeps for the whole --duration; a SIGINT wakes it (wrk's own handler), and it then
    -- prints the summary as at the end of the duration, with the real elapsed time.
    if has_ffi then ffi.C.kill(ffi.C.getpid(), 2) end
  end
end

local function quote(s)
  s = string.gsub(s, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end)
  return '"' .. s .. '"'
end

function done(summary, latency, requests)
  local t_ok, t_non2xx, t_rpc, bad = 0, 0, 0, ""
  for _, thread in ipairs(threads) do
    t_ok = t_ok + (thread:get("ok") or 0)
    t_non2xx = t_non2xx + (thread:get("non2xx") or 0)
    t_rpc = t_rpc + (thread:get("rpc_errors") or 0)
    if bad == "" then bad = thread:get("first_bad") or "" end
  end
  local e = summary.errors
  io.write(string.format(
    '@@bench {"requests":%d,"duration_us":%d,"ok":%d,"non2xx":%d,"rpc_errors":%d,'
      .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
      .. '"p50_us":%d,"p99_us":%d,"max_us":%d,"first_bad":%s}\n',
    summary.requests, summary.duration, t_ok, t_non2xx, t_rpc,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, quote(bad)))
end

-- wrk script: prints one JSON line with the run's totals and latency
-- percentiles (microseconds) so that bench/proxy.ts need not parse wrk's text.
--
-- With WRK_RATE=N in the environment it also paces the requests: N per second
-- in all, each sent at its slot on one shared schedule (wrk asks delay() before
-- every request; a schedule that fell more than 100 ms behind starts again from
-- now). Every target then gets the same offered load, below its capacity, and
-- the latency percentiles compare how each one answers the same traffic rather
-- than how deep its queue grows when saturated. wrk times a request from when it
-- is written, so the wait for its slot is not counted.
local rate = tonumber(os.getenv('WRK_RATE') or '')
if rate ~= nil and rate > 0 then
  local ffi = require('ffi')
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } wrk_pace_timespec;
    int clock_gettime(int clock, wrk_pace_timespec *ts);
  ]]
  local ts = ffi.new('wrk_pace_timespec')
  local CLOCK_MONOTONIC = 1
  local function nowMs()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local interval = 1000 / rate
  local nextAt = 0
  delay = function()
    local t = nowMs()
    if nextAt < t - 100 then nextAt = t end
    local wait = nextAt - t
    nextAt = nextAt + interval
    return wait
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.max))
end

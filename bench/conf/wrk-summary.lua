-- Leaves wrk's request path untouched (no request/response hooks) and, at the end, prints one
-- JSON line with exact counts and percentiles in microseconds for bench/ to read.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"bench":"wrk","requests":%d,"durationUs":%d,"p50Us":%d,"p90Us":%d,"p99Us":%d,"p999Us":%d,' ..
    '"maxUs":%d,"errConnect":%d,"errRead":%d,"errWrite":%d,"errStatus":%d,"errTimeout":%d}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end

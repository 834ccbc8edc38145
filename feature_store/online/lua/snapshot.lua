-- Load a chunk of customer snapshot rows atomically (needs protobuf.lua before it). For each
-- key: when the stored history is newer than the snapshot's cutoff (the server appended after
-- it), skip it and report it so the caller merges; otherwise write the snapshot. A stored
-- timestamp it cannot read counts as newer (the caller's merge reads it with protobuf).
-- KEYS: customer keys; ARGV: the 3 value fields, the timestamp field, then per key: times,
-- amounts, ids, timestamp bytes, cutoff seconds, cutoff nanos. Returns the (1-based) positions
-- in KEYS of the keys it skipped.
local skipped = {}
for k = 1, #KEYS do
  local base = 4 + (k - 1) * 6
  local stored = redis.call('HGET', KEYS[k], ARGV[4])
  local newer = false
  if stored then
    local s, n = stamp(stored)
    local cs, cn = tonumber(ARGV[base + 5]), tonumber(ARGV[base + 6])
    -- a timestamp it cannot read: left to the caller's merge, which reads it with protobuf
    newer = s == nil or s > cs or (s == cs and n > cn)
  end
  if newer then
    skipped[#skipped + 1] = k
  else
    redis.call('HSET', KEYS[k], ARGV[1], ARGV[base + 1], ARGV[2], ARGV[base + 2],
               ARGV[3], ARGV[base + 3], ARGV[4], ARGV[base + 4])
  end
end
return skipped

-- Load a chunk of terminal snapshot rows (they replace what is stored). KEYS: terminal keys;
-- ARGV: the 2 value fields, the timestamp field, then per key: available, fraud, timestamp.
-- One call for hundreds of keys spares the client a pipelined command per key.
for k = 1, #KEYS do
  local base = 3 + (k - 1) * 3
  redis.call('HSET', KEYS[k], ARGV[1], ARGV[base + 1], ARGV[2], ARGV[base + 2],
             ARGV[3], ARGV[base + 3])
end
return #KEYS

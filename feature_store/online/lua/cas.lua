-- Compare-and-set of a customer's history: write only if TX_IDS still holds what was read.
-- KEYS[1]: the customer key; ARGV[1]: the TX_IDS field, ARGV[2]: the TX_IDS bytes read (empty:
-- none), then field, value pairs to write. Returns 1 when written, 0 when the history changed.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current == false then current = '' end
if current ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return 1

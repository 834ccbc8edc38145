-- Append scored transactions to a customer's history inside Redis, atomically (needs
-- protobuf.lua before it). The stored ValueProto bytes are edited in place of the Python
-- read-merge-encode-compare-and-set, so the server's appender sends a few small arguments
-- instead of the whole history, and no retry is ever needed. Same rule and bytes as
-- merge_customer + encode_customer (tested byte for byte): events whose id the history holds
-- (or an earlier event of the call) are skipped; the leading entries at or before the call's
-- newest event time minus ``keep`` are dropped, as are new events before that; then the
-- oldest entries beyond ``max`` (stored ones first); the timestamp becomes max(stored, the
-- call's newest event time).
-- Redis's Lua takes ~75 ns per byte a loop visits, so the script never walks the whole
-- history: it checks each value's envelope, counts entries by the amounts' length (8 bytes
-- each), decodes only the dropped leading entries, and finds ids with string.find, decoding
-- id records only up to a match (to tell a record from the same bytes inside a longer id).
-- With at most ``max`` entries stored and the caller's bound on events per call, the work of
-- one call is bounded whatever the customer's traffic or the caller's backlog. That the lists
-- have equal lengths is therefore not checked here (every writer keeps it).
-- Returns 1 when written; 0, writing nothing, for values it does not handle (an envelope or
-- an entry it reads that is not canonical, a number not exact in a Lua double, more than
-- ``max`` entries stored): the caller then takes the compare-and-set path, which trims.
-- KEYS[1]: the customer key; ARGV: times, amounts, ids and timestamp fields, keep (us), max
-- (entries), then per event: time (decimal us, 0 <= t < 2^53), amount (8 bytes,
-- little-endian double), transaction id.
local function encode(v)
  local out = {}
  while v >= 128 do
    out[#out + 1] = string.char(v % 128 + 128)
    v = math.floor(v / 128)
  end
  out[#out + 1] = string.char(v)
  return table.concat(out)
end
-- where the payload of a length-delimited field ``tag`` spanning all of value[at..] starts
local function field(value, at, tag)
  if string.byte(value, at) ~= tag then return nil end
  local n, i = varint(value, at + 1)
  if n == nil or i + n - 1 ~= #value then return nil end
  return i
end
-- where a list value's entries start: Value.<tag> { repeated entries }; packed numbers are one
-- more length-delimited field (1) inside
local function entries(value, tag)
  local i = field(value, 1, tag)
  if i == nil or i > #value or tag == 98 then return i end
  return field(value, i, 10)
end
-- a list value of ``kept`` (encoded entries) then ``new`` ones
local function list_value(tag, kept, new)
  local n = #kept
  for k = 1, #new do n = n + #new[k] end
  if n == 0 then return string.char(tag, 0) end
  local parts
  if tag == 98 then
    parts = {string.char(tag), encode(n), kept}
  else
    local size = encode(n)
    parts = {string.char(tag), encode(1 + #size + n), string.char(10), size, kept}
  end
  for k = 1, #new do parts[#parts + 1] = new[k] end
  return table.concat(parts)
end

local stored = redis.call('HMGET', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local t, a, s, stored_us = '', '', '', 0
local ti, ai, si = 1, 1, 1
if stored[1] and stored[2] and stored[3] and stored[4] then
  t, a, s = stored[1], stored[2], stored[3]
  ti, ai, si = entries(t, 114), entries(a, 122), entries(s, 98)
  if ti == nil or ai == nil or si == nil then return 0 end
  if (#a - ai + 1) % 8 ~= 0 or (#a - ai + 1) / 8 > tonumber(ARGV[6]) then return 0 end
  local seconds, nanos = stamp(stored[4])
  if seconds == nil then return 0 end
  stored_us = seconds * 1000000 + math.floor(nanos / 1000)
end
local newest = nil
for e = 7, #ARGV, 3 do
  local v = tonumber(ARGV[e])
  if newest == nil or v > newest then newest = v end
end
local cutoff = newest - tonumber(ARGV[5])
-- id record boundaries, decoded only as far as needed; false: not canonical
local boundary, scanned = {}, si
local function scan_to(at)
  while scanned <= at and scanned <= #s do
    if string.byte(s, scanned) ~= 10 then return false end
    local size, j = varint(s, scanned + 1)
    if size == nil or j + size - 1 > #s then return false end
    boundary[scanned] = true
    scanned = j + size
  end
  return true
end
-- the leading entries at or before the cutoff
while ti <= #t do
  local v, j = varint(t, ti)
  if v == nil then return 0 end
  if v > cutoff then break end
  if ai + 8 > #a + 1 or si > #s or not scan_to(si) then return 0 end
  ti, ai, si = j, ai + 8, scanned
end
local new_t, new_a, new_i, added = {}, {}, {}, {}
for e = 7, #ARGV, 3 do
  local id = ARGV[e + 2]
  local record = string.char(10) .. encode(#id) .. id
  local known = added[id] ~= nil
  local from = 1
  while not known do
    local at = string.find(s, record, from, true)
    if at == nil then break end
    if not scan_to(at) then return 0 end
    known = boundary[at] == true
    from = at + 1
  end
  if not known then
    added[id] = true
    local v = tonumber(ARGV[e])
    if v > cutoff then
      new_t[#new_t + 1] = encode(v)
      new_a[#new_a + 1] = ARGV[e + 1]
      new_i[#new_i + 1] = record
    end
  end
end
-- the bound: the oldest entries beyond max go, stored ones first
local excess = (#a - ai + 1) / 8 + #new_t - tonumber(ARGV[6])
while excess > 0 and ai <= #a do
  local _, j = varint(t, ti)
  if j == nil or string.byte(s, si) ~= 10 then return 0 end
  local size, k = varint(s, si + 1)
  if size == nil or k + size - 1 > #s then return 0 end
  ti, ai, si, excess = j, ai + 8, k + size, excess - 1
end
if excess > 0 then
  new_t = {unpack(new_t, excess + 1)}
  new_a = {unpack(new_a, excess + 1)}
  new_i = {unpack(new_i, excess + 1)}
end
if newest < stored_us then newest = stored_us end
local seconds = math.floor(newest / 1000000)
local nanos = (newest - seconds * 1000000) * 1000
local ts = ''
if seconds ~= 0 then ts = string.char(8) .. encode(seconds) end
if nanos ~= 0 then ts = ts .. string.char(16) .. encode(nanos) end
redis.call('HSET', KEYS[1],
           ARGV[1], list_value(114, string.sub(t, ti), new_t),
           ARGV[2], list_value(122, string.sub(a, ai), new_a),
           ARGV[3], list_value(98, string.sub(s, si), new_i),
           ARGV[4], ts)
return 1

-- Protobuf readers shared by the scripts that read Feast values in Redis (prepended to them).
-- varint(s, i): the varint at s[i] and the index after it; nil when it runs off the end or is
--   not exact in a Lua number (>= 2^53).
-- stamp(s): seconds and nanos of a serialized google.protobuf.Timestamp; nil for anything else.
local EXACT = 9007199254740992
local function varint(s, i)
  local value, scale = 0, 1
  while true do
    local b = string.byte(s, i)
    if b == nil then return nil end
    i = i + 1
    value = value + (b % 128) * scale
    if b < 128 then
      if value >= EXACT then return nil end
      return value, i
    end
    scale = scale * 128
    if scale >= EXACT then return nil end
  end
end
local function stamp(s)
  local seconds, nanos, i = 0, 0, 1
  while i <= #s do
    local tag = string.byte(s, i)
    local v
    v, i = varint(s, i + 1)
    if v == nil then return nil end
    if tag == 8 then seconds = v elseif tag == 16 then nanos = v else return nil end
  end
  return seconds, nanos
end

-- Add recording events that name no call (conference recordings) to their recording's hash: one
-- event per slot, the preferred one kept, at most a cap of slots. Touches only that key.
-- (A call's events are added by the worker itself and written under the call's compare-and-set:
-- callstate.eventset; this is the same rule for the hashes no state is derived from.)
-- KEYS[1] the hash.
-- ARGV[1] the cap (slots), ARGV[2] the preference width (bytes); then pairs: field (the slot),
-- value (the encoded event, preference first: workers.codec).
-- Of two values sharing a slot the one with the greater preference stays, whichever came first,
-- so the hash is a function of what was sent, not of its order. A new slot over the cap is refused.
-- Returns {added, replaced, refused}.
local cap, width = tonumber(ARGV[1]), tonumber(ARGV[2])

-- Byte order, not Lua's '<' (which follows the server's collation locale).
local function greater(a, b)
  for i = 1, width do
    local x, y = string.byte(a, i) or -1, string.byte(b, i) or -1
    if x ~= y then
      return x > y
    end
  end
  return false
end

local size = redis.call('HLEN', KEYS[1])
local added, replaced, refused = 0, 0, 0
for i = 3, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  local current = redis.call('HGET', KEYS[1], field)
  if not current then
    if size < cap then
      redis.call('HSET', KEYS[1], field, value)
      size = size + 1
      added = added + 1
    else
      refused = refused + 1
    end
  elseif current ~= value and greater(value, current) then
    redis.call('HSET', KEYS[1], field, value)
    replaced = replaced + 1
  end
end
return {added, replaced, refused}

-- Add events to one record's event set: one event per slot, the preferred one kept, at most a cap
-- of slots; and count the deliveries of the events kept. Touches only that record's keys (one
-- hash tag).
-- KEYS[1] the event set, KEYS[2] its deliveries hash (workers.deliveries).
-- ARGV[1] the cap (slots), ARGV[2] the preference width (bytes), ARGV[3] the deliveries hash's TTL
-- in seconds, or 0 not to count deliveries; then triples: field (the slot), value (the encoded
-- event, preference first: workers.codec), the time it was received ('' if unknown).
-- Of two values sharing a slot the one with the greater preference stays, whichever came first,
-- so the set is a function of what was sent, not of its order. A new slot over the cap is refused,
-- and not counted as a delivery either: a flood cannot grow either hash.
-- Returns {added, replaced, refused}.
local cap, width, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

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
local added, replaced, refused, counted = 0, 0, 0, 0
for i = 4, #ARGV, 3 do
  local field, value, received = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local current = redis.call('HGET', KEYS[1], field)
  local kept = true
  if not current then
    if size < cap then
      redis.call('HSET', KEYS[1], field, value)
      size = size + 1
      added = added + 1
    else
      refused = refused + 1
      kept = false
    end
  elseif current ~= value and greater(value, current) then
    redis.call('HSET', KEYS[1], field, value)
    replaced = replaced + 1
  end
  if kept and ttl > 0 then
    redis.call('HINCRBY', KEYS[2], field, 1)
    if received ~= '' then
      redis.call('HSETNX', KEYS[2], field .. '|first', received)
    end
    counted = counted + 1
  end
end
if counted > 0 then
  redis.call('EXPIRE', KEYS[2], ttl)
end
return {added, replaced, refused}

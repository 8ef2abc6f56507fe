-- Compare-and-set one call record: its event set and, if it changed, its state. Touches only that
-- record's keys (one hash tag).
-- KEYS[1] the call hash; KEYS[2] and KEYS[3] schema 2's event set and deliveries of the record,
-- deleted by a write that stores the event set (it holds what they held: workers.store).
-- ARGV[1] the version read, ARGV[2] the event set read ('' if none), ARGV[3] the new event set
-- ('' to leave it), ARGV[4] the new state ('' to leave it), ARGV[5] a TTL in seconds for the key,
-- or 0 to leave its TTL alone.
-- Both are written only if neither moved since they were read, so that the stored state is always
-- the reduction of the stored set. The version goes up by one with each new state.
-- Returns the version after the write, or -1 when something moved meanwhile (the caller re-reads).
local stored = redis.call('HMGET', KEYS[1], 'version', 'events')
if tonumber(stored[1] or '0') ~= tonumber(ARGV[1]) or (stored[2] or '') ~= ARGV[2] then
  return -1
end
local version = tonumber(ARGV[1])
if ARGV[4] ~= '' then
  version = version + 1
  redis.call('HSET', KEYS[1], 'state', ARGV[4], 'version', version)
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'events', ARGV[3])
  redis.call('DEL', KEYS[2], KEYS[3])
end
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
end
return version

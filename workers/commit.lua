-- Compare-and-set one call's reconciled state. Touches only that call's keys (one hash tag).
-- KEYS[1] the call hash, KEYS[2] the call's event set.
-- ARGV[1] the version the state was computed from, ARGV[2] the state JSON,
-- ARGV[3] a TTL in seconds for both keys, or 0 to leave their TTLs alone.
-- Returns the new version, or -1 when the version moved meanwhile (the caller re-reads).
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[1]) then
  return -1
end
local version = current + 1
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'version', version)
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return version

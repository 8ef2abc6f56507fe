-- Publish new call versions to the global indexes and the change stream, idempotently.
-- All keys share the {callstate} hash tag.
-- KEYS[1] published hash, KEYS[2] recent zset, KEYS[3] active zset, KEYS[4] final zset,
-- KEYS[5] changes stream, KEYS[6..15] the status zsets, in the order of workers.store.STATUSES
-- (workers.store.index_keys).
-- ARGV[1] the stream's MINID (ms): entries older than the retention are trimmed.
-- Then one group of five per call: record (CallSid or CallSid:tenant), version, status, final (0|1),
-- score (Unix seconds, already bounded by workers.store.index_score).
--
-- A version newer than the published one updates the indexes and adds a stream entry; an older
-- one (a worker that committed v but published after another published v+1) only adds its
-- stream entry, so every change has one; the published version itself is a repeat: nothing.
-- The published value is <version>:<status>:<mask>: bit k of the mask says version - k has its
-- stream entry, so that an older version published twice (by the worker that committed it and by
-- another job's outbox, both after a newer one) still gets only one. Versions more than WINDOW
-- below the published one are not remembered: they may get a second entry.
-- Returns the number of stream entries added.
local status_key = {}
for i = 6, #KEYS do
  status_key[string.match(KEYS[i], ':([^:]+)$')] = KEYS[i]
end

local count = (#ARGV - 1) / 5
local sids = {}
for i = 0, count - 1 do
  sids[i + 1] = ARGV[2 + i * 5]
end
local current = redis.call('HMGET', KEYS[1], unpack(sids))

local recent, active_add, active_rem, final_add, final_rem, published = {}, {}, {}, {}, {}, {}
local status_add, status_rem = {}, {}
local function push(groups, key, ...)
  local list = groups[key]
  if not list then
    list = {}
    groups[key] = list
  end
  for _, value in ipairs({...}) do
    list[#list + 1] = value
  end
end

local WINDOW = 30
local FULL = 0x7FFFFFFF
local added = 0
for i = 0, count - 1 do
  local sid, version = ARGV[2 + i * 5], tonumber(ARGV[3 + i * 5])
  local status, final, score = ARGV[4 + i * 5], ARGV[5 + i * 5], ARGV[6 + i * 5]
  local seen_version, seen_status, seen_mask = 0, nil, 0
  if current[i + 1] then
    local v, s, m = string.match(current[i + 1], '^(%d+):([^:]*):?(%d*)$')
    seen_version, seen_status, seen_mask = tonumber(v), s, tonumber(m) or 0
  end
  if version > seen_version then
    redis.call('XADD', KEYS[5], 'MINID', '~', ARGV[1], '*',
               'call', sid, 'version', version, 'status', status, 'final', final)
    added = added + 1
    local shift, mask = version - seen_version, 0
    if seen_version > 0 and shift <= WINDOW then
      mask = bit.band(bit.bor(bit.lshift(seen_mask, shift), bit.lshift(1, shift)), FULL)
    end
    if seen_status and seen_status ~= status and status_key[seen_status] then
      push(status_rem, status_key[seen_status], sid)
    end
    push(status_add, status_key[status], score, sid)
    push(recent, 'x', score, sid)
    if final == '1' then
      push(active_rem, 'x', sid)
      push(final_add, 'x', score, sid)
    else
      push(active_add, 'x', score, sid)
      push(final_rem, 'x', sid)
    end
    push(published, 'x', sid, version .. ':' .. status .. ':' .. mask)
  elseif version < seen_version then
    local below = seen_version - version
    if below > WINDOW or bit.band(seen_mask, bit.lshift(1, below)) == 0 then
      redis.call('XADD', KEYS[5], 'MINID', '~', ARGV[1], '*',
                 'call', sid, 'version', version, 'status', status, 'final', final)
      added = added + 1
      if below <= WINDOW then
        local mask = bit.bor(seen_mask, bit.lshift(1, below))
        push(published, 'x', sid, seen_version .. ':' .. seen_status .. ':' .. mask)
      end
    end
  end
end

-- unpack() takes fewer than 8,000 values (LUAI_MAXCSTACK): a big batch goes in slices of an even
-- size, so (score, member) and (field, value) pairs stay together.
local function each_slice(command, key, list)
  for i = 1, #list, 1000 do
    redis.call(command, key, unpack(list, i, math.min(i + 999, #list)))
  end
end

for key, members in pairs(status_rem) do each_slice('ZREM', key, members) end
for key, members in pairs(status_add) do each_slice('ZADD', key, members) end
if recent.x then each_slice('ZADD', KEYS[2], recent.x) end
if active_rem.x then each_slice('ZREM', KEYS[3], active_rem.x) end
if active_add.x then each_slice('ZADD', KEYS[3], active_add.x) end
if final_rem.x then each_slice('ZREM', KEYS[4], final_rem.x) end
if final_add.x then each_slice('ZADD', KEYS[4], final_add.x) end
if published.x then each_slice('HSET', KEYS[1], published.x) end
return added

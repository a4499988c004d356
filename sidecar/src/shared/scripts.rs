//! The Lua scripts: each protocol step that reads and then writes runs as one
//! atomic script. Every key a script touches is passed in `KEYS` and carries
//! the tenant's hash tag, so all of them live in one Redis Cluster slot.
//!
//! Keys: `KEYS[1]` the token record (a hash: `v` version, `exp` and `iat`
//! unix ms, `tok` the access token; its TTL is the token's remaining life),
//! `KEYS[2]` the fetch lock (the holder's id, `PX` = lock TTL), `KEYS[3]` the
//! version counter. Every value a script returns is a string.

/// Decides who fetches. ARGV: owner, lock TTL ms, the version the caller
/// holds (or rejects), "" for none.
///
/// - a record whose version differs from the caller's: `{"adopt", v, exp, iat, tok}`;
/// - else the lock is free or already the caller's: take or extend it, `{"won"}`;
/// - else `{"wait", pttl}`.
pub const ACQUIRE: &str = r#"
local rec = redis.call('HMGET', KEYS[1], 'v', 'exp', 'iat', 'tok')
if rec[1] and rec[4] and rec[1] ~= ARGV[3] then
  return {'adopt', rec[1], rec[2], rec[3], rec[4]}
end
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return {'won'}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'won'}
end
return {'wait', tostring(redis.call('PTTL', KEYS[2]))}
"#;

/// Writes a fetched token, but only while the caller still holds the lock, or
/// the lock is free and nobody published since the caller took it (compare
/// and set on lock and version). The new version is above the counter and at
/// least ARGV[7] (the caller's clock in µs), so versions keep rising even
/// after Redis lost its data. Publishes `tag version` on the channel and
/// releases the lock.
///
/// ARGV: owner, the version the caller replaced ("" for none), token,
/// exp ms, iat ms, record TTL ms, version floor, channel, tag.
/// Returns `{"ok", v}` or `{"lost", current_version_or_empty}`.
pub const PUBLISH: &str = r#"
local holder = redis.call('GET', KEYS[2])
local current = redis.call('HGET', KEYS[1], 'v') or ''
if holder ~= ARGV[1] and (holder or current ~= ARGV[2]) then
  return {'lost', current}
end
local n = tonumber(redis.call('GET', KEYS[3]) or '0') + 1
local floor = tonumber(ARGV[7])
if floor and n < floor then n = floor end
local v = string.format('%.0f', n)
redis.call('SET', KEYS[3], v)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', v, 'exp', ARGV[4], 'iat', ARGV[5], 'tok', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if holder == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[8], ARGV[9] .. ' ' .. v)
return {'ok', v}
"#;

/// Gives the lock up if the caller holds it. ARGV: owner.
pub const RELEASE: &str = r#"
if redis.call('GET', KEYS[2]) == ARGV[1] then
  return redis.call('DEL', KEYS[2])
end
return 0
"#;

//! The move, at connect, of the bans kept under the key names of releases before hash tags
//! (`keys::legacy`) to the current names: a ban (an operator's blacklist above all) must not
//! be lifted by an upgrade. Only banned clients move (the index lists them); the counts of
//! other clients start afresh under the new names, and their old keys expire by themselves.
//!
//! A single server only: a cluster store is new, with nothing to move. Idempotent and safe
//! when several servers of a fleet connect at once: a key already under its new name is
//! kept (the new one is the later), and each batch is one script, atomic.

use ::redis::{RedisResult, Script};

use super::cluster::Conn;
use super::keys::{self, legacy};
use crate::client::ClientKey;

/// Clients moved per script call, so that no call holds Redis long.
const BATCH: isize = 500;

/// KEYS: the old sorted set and hash, the new ones. ARGV: member, old key, new key, for each
/// client of the batch. The old index entries of the batch are removed.
const MOVE: &str = r#"
local old_set, old_info, set, info = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
for i = 1, #ARGV, 3 do
  local member, old, new = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('EXISTS', old) == 1 and redis.call('EXISTS', new) == 0 then
    redis.call('RENAME', old, new)
  end
  local score = redis.call('ZSCORE', old_set, member)
  if score and redis.call('ZSCORE', set, member) == false then
    redis.call('ZADD', set, score, member)
    local since = redis.call('HGET', old_info, member)
    if since then redis.call('HSET', info, member, since) end
  end
  redis.call('ZREM', old_set, member)
  redis.call('HDEL', old_info, member)
end
if redis.call('ZCARD', old_set) == 0 then redis.call('DEL', old_info) end
return 0
"#;

/// Moves the bans of `prefix` kept under the old names; one round trip when there are none.
pub(super) async fn legacy_bans(conn: &mut Conn, prefix: &str) -> RedisResult<()> {
    let (old_set, old_info) = legacy::ban_index_keys(prefix);
    let (set, info) = keys::ban_index_keys(prefix);
    let script = Script::new(MOVE);
    loop {
        let members: Vec<String> = ::redis::cmd("ZRANGE")
            .arg(&old_set)
            .arg(0)
            .arg(BATCH - 1)
            .query_async(conn)
            .await?;
        if members.is_empty() {
            return Ok(());
        }
        let mut invocation = script.prepare_invoke();
        invocation.key(&old_set).key(&old_info).key(&set).key(&info);
        for member in &members {
            // A member that names no client (never written by floodgate) only leaves the index.
            let (old, new) = match ClientKey::from_stored_name(member) {
                Some(client) => (
                    legacy::client_key(prefix, &client),
                    keys::client_key(prefix, &client),
                ),
                None => (String::new(), String::new()),
            };
            invocation.arg(member).arg(old).arg(new);
        }
        invocation.invoke_async::<i64>(conn).await?;
    }
}

//! Listing the Redis store's bans: the index that `redis.lua` keeps beside the clients'
//! keys, read by `bans.lua`.
//!
//! Key layout: `{prefix}:bans`, a sorted set of banned clients (members are the clients' key
//! texts, as in [`BanCursor`]) scored by the ban's end, and `{prefix}:bans:info`, a hash of
//! `"since reason"` per client. The decision script updates both in the same call that
//! changes a client's ban; a listing first removes the members whose ban ended.

use ::redis::Script;

use super::script::{ban_reason, lua_time, rust_time, until_of};
use super::{bounded, RedisStore};
use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::store::bans::{page_limit, BanCursor, BanEntry, BanPage};
use crate::store::StoreFuture;

/// The listing script (see the module docs).
const BANS_SCRIPT: &str = include_str!("bans.lua");

impl RedisStore {
    /// The keys of the index of bans: the sorted set and the hash.
    pub(super) fn ban_index_keys(&self) -> (String, String) {
        (
            format!("{}:bans", self.prefix),
            format!("{}:bans:info", self.prefix),
        )
    }

    pub(super) fn list_bans(
        &self,
        after: Option<&BanCursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreFuture<BanPage> {
        let limit = page_limit(limit);
        let (set, info) = self.ban_index_keys();
        let (from_until, from_key) = match after {
            Some(c) => (lua_time(c.until), c.key.clone()),
            None => (String::new(), String::new()),
        };
        let mut conn = self.conn.clone();
        let (timeout, addr) = (self.timeout, self.addr.clone());
        let now_arg = lua_time(now.as_millis());
        StoreFuture::pending(async move {
            let script = Script::new(BANS_SCRIPT);
            let mut invocation = script.prepare_invoke();
            invocation
                .key(set)
                .key(info)
                .arg(now_arg)
                .arg(from_until)
                .arg(from_key)
                .arg(limit + 1);
            let reply: Vec<String> = bounded(timeout, invocation.invoke_async(&mut conn))
                .await
                .map_err(|e| e.context(&format!("Redis at {addr}: bans")))?;
            page_of_reply(&reply, limit)
        })
    }
}

/// The ban's start in an entry of the hash (`"since reason"`); `None` when unknown.
pub(super) fn since_of_info(info: &str) -> Option<u64> {
    info.split(' ').next()?.parse().ok().filter(|&s| s > 0)
}

/// Reads the script's reply: member, end, "since reason" per entry.
fn page_of_reply(reply: &[String], limit: usize) -> Result<BanPage, StoreError> {
    let bad = || StoreError::new("malformed reply of the Redis ban listing");
    if !reply.len().is_multiple_of(3) {
        return Err(bad());
    }
    let mut bans = Vec::with_capacity(reply.len() / 3);
    let mut next = None;
    for (i, entry) in reply.chunks_exact(3).enumerate() {
        let until = rust_time(entry[1].parse::<i64>().map_err(|_| bad())?);
        if i == limit {
            break;
        }
        next = Some(BanCursor {
            until,
            key: entry[0].clone(),
        });
        let Some(client) = ClientKey::from_stored_name(&entry[0]) else {
            continue;
        };
        let reason = entry[2].split(' ').nth(1);
        let reason = reason.and_then(|r| r.parse::<i64>().ok()).unwrap_or(2);
        bans.push(BanEntry {
            client,
            reason: ban_reason(reason),
            since: since_of_info(&entry[2]).map(Timestamp::from_millis),
            until: until_of(until),
        });
    }
    let more = reply.len() / 3 > limit;
    Ok(BanPage {
        bans,
        next: if more { next } else { None },
    })
}

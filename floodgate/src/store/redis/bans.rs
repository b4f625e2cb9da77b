//! Listing the Redis store's bans: the index that `redis.lua` keeps beside the clients'
//! keys, read by `bans.lua`.
//!
//! Key layout (`keys.rs`): `{prefix}:{bans}`, a sorted set of banned clients (members are the
//! clients' key texts, as in [`BanCursor`]) scored by the ban's end, and
//! `{prefix}:{bans}:info`, a hash of `"since reason"` per client. The decision script reports
//! how a call changed the client's ban (the last three numbers of its reply); the store then
//! applies that change with `index.lua`, a call of its own, since on a Redis Cluster the
//! index and the client's key lie in different slots. Only calls that change a ban pay this
//! second round trip. A listing first removes the members whose ban ended.
//!
//! The index is for listings only: decisions read the client's own key. If the second call
//! fails, the ban holds but is missing from (or stays in) the listing until the client's ban
//! next changes or ends; the failure is logged. Likewise, two changes of one client's ban
//! made within one round trip of each other may reach the index in the other order.

use ::redis::Script;

use std::time::Duration;

use super::cluster::Conn;
use super::script::{ban_reason, lua_time, rust_time, until_of};
use super::{bounded, keys, RedisStore};
use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::store::bans::{key_text, page_limit, BanCursor, BanEntry, BanPage};
use crate::store::StoreFuture;

/// The listing script (see the module docs).
const BANS_SCRIPT: &str = include_str!("bans.lua");

/// The script that applies a change of the index (see the module docs).
const INDEX_SCRIPT: &str = include_str!("index.lua");

/// How a call of the decision script changed the client's ban: its reply's last three
/// numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IndexChange {
    /// 1 a ban began, 2 the ban in force changed (its start kept), 3 no ban any more.
    change: i64,
    until: i64,
    reason: i64,
}

impl IndexChange {
    /// Takes the change off the end of `reply`: `None` for a reply too short to hold one,
    /// `Some(None)` when the ban did not change.
    pub(super) fn split_off(reply: &mut Vec<i64>) -> Option<Option<IndexChange>> {
        let at = reply.len().checked_sub(3)?;
        let tail = reply.split_off(at);
        let change = IndexChange {
            change: tail[0],
            until: tail[1],
            reason: tail[2],
        };
        match change.change {
            0 => Some(None),
            1..=3 => Some(Some(change)),
            _ => None,
        }
    }
}

/// What applying a change needs: the index's keys and the client's member, on a connection.
pub(super) struct IndexWriter {
    conn: Conn,
    set: String,
    info: String,
    member: String,
}

impl IndexWriter {
    /// Applies `change`; a failure is logged, never the decision's answer (see the module
    /// docs).
    pub(super) async fn apply(mut self, change: IndexChange, now: Timestamp, timeout: Duration) {
        let script = Script::new(INDEX_SCRIPT);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&self.set)
            .key(&self.info)
            .arg(&self.member)
            .arg(change.change)
            .arg(change.until)
            .arg(change.reason)
            .arg(lua_time(now.as_millis()));
        let done = bounded(timeout, invocation.invoke_async::<i64>(&mut self.conn)).await;
        if let Err(e) = done {
            let e = e.context("Redis: the index of bans");
            log::warn!(
                "floodgate: the listing of bans may miss a change of {}'s ban: {e}",
                self.member
            );
        }
    }
}

impl RedisStore {
    /// The keys of the index of bans: the sorted set and the hash.
    pub(super) fn ban_index_keys(&self) -> (String, String) {
        keys::ban_index_keys(&self.prefix)
    }

    /// When `client`'s ban began, from the index (`"since reason"`, as read).
    pub(super) fn ban_since(
        &self,
        client: &ClientKey,
    ) -> impl std::future::Future<Output = ::redis::RedisResult<Option<String>>> + Send + 'static
    {
        let (_, info) = self.ban_index_keys();
        let member = key_text(client);
        let mut conn = self.conn.clone();
        async move {
            ::redis::cmd("HGET")
                .arg(&info)
                .arg(&member)
                .query_async(&mut conn)
                .await
        }
    }

    /// What [`IndexWriter::apply`] needs for `client`.
    pub(super) fn index_writer(&self, client: &ClientKey) -> IndexWriter {
        let (set, info) = self.ban_index_keys();
        IndexWriter {
            conn: self.conn.clone(),
            set,
            info,
            member: key_text(client),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_change_is_taken_off_the_end_of_a_reply() {
        let mut reply = vec![0, 1, 5, 4, 60, 1, -1, 2];
        let change = IndexChange::split_off(&mut reply).unwrap().unwrap();
        assert_eq!(
            change,
            IndexChange {
                change: 1,
                until: -1,
                reason: 2
            }
        );
        assert_eq!(reply, [0, 1, 5, 4, 60]);
        let mut unchanged = vec![1, 0, 0, 0];
        assert_eq!(IndexChange::split_off(&mut unchanged), Some(None));
        assert_eq!(unchanged, [1]);
        // A reply without the three numbers, or with an unknown change, is malformed.
        assert_eq!(IndexChange::split_off(&mut vec![0, 1]), None);
        assert_eq!(IndexChange::split_off(&mut vec![7, 0, 0]), None);
    }
}

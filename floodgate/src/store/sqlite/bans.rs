//! The SQLite store's index of bans: a table `"{table}:bans"` of (key, ban end) beside the
//! clients' table, kept in the transaction that changes a client's ban, so that listing the
//! bans in force reads the banned clients only, never the whole table.
//!
//! The client's state stays the authority on the ban (its reason and start): the index only
//! finds the rows. An index row whose ban ended is skipped by the listing and deleted by
//! the sweep.

use rusqlite::{Connection, Transaction};

use super::rows::{key_from_text, sql_now, sql_time};
use super::thread::{call_on, Worker};
use super::SqliteStore;
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::state::ClientState;
use crate::store::bans::{page_limit, BanCursor, BanEntry, BanPage};
use crate::store::StoreFuture;

/// The name of the index of `table` (validated: letters, digits and underscores only, so
/// that no floodgate table is ever named like an index).
pub(super) fn index_name(table: &str) -> String {
    format!("{table}:bans")
}

/// The statements on one table's index.
#[derive(Debug)]
pub(super) struct BanSql {
    put: String,
    remove: String,
    sweep: String,
    list: String,
}

impl BanSql {
    /// Deletes one key's index row.
    pub(super) fn remove(&self) -> &str {
        &self.remove
    }

    pub(super) fn new(table: &str) -> BanSql {
        let (t, i) = (format!("\"{table}\""), format!("\"{}\"", index_name(table)));
        BanSql {
            put: format!("REPLACE INTO {i} (key, ban_until) VALUES (?1, ?2)"),
            remove: format!("DELETE FROM {i} WHERE key = ?1"),
            sweep: format!("DELETE FROM {i} WHERE ban_until <= ?1"),
            // The (ban_until, key) index gives the order and the start; the row value
            // comparison resumes after the cursor.
            list: format!(
                "SELECT b.key, b.ban_until, t.state FROM {i} b JOIN {t} t ON t.key = b.key \
                 WHERE b.ban_until > ?1 AND (b.ban_until, b.key) > (?2, ?3) \
                 ORDER BY b.ban_until, b.key LIMIT ?4"
            ),
        }
    }
}

/// The ban end to index for `state` at `now`: `None` when no ban is in force.
pub(super) fn indexed_until(state: Option<&ClientState>, now: u64) -> Option<u64> {
    match state.and_then(ClientState::ban_slot) {
        Some((until, _)) if until > now => Some(until),
        _ => None,
    }
}

impl SqliteStore {
    /// Reads the file's index of bans (with [`Durability::Batched`](super::Durability) too:
    /// a change of a ban is written before it is answered).
    pub(super) fn list_bans(
        &self,
        after: Option<&BanCursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreFuture<BanPage> {
        let after = after.cloned();
        call_on(&self.jobs, now, move |w| {
            Ok((w.list_bans(after.as_ref(), limit, now.as_millis())?, false))
        })
    }
}

impl Worker {
    /// Records in the index that `key` is banned until `until` (ms), or is not banned.
    pub(super) fn index_ban(&self, key: &str, until: Option<u64>) -> rusqlite::Result<()> {
        match until {
            Some(until) => self
                .conn
                .prepare_cached(&self.bans.put)?
                .execute(rusqlite::params![key, sql_time(until)])?,
            None => self
                .conn
                .prepare_cached(&self.bans.remove)?
                .execute([key])?,
        };
        Ok(())
    }

    /// Deletes the index rows of bans that ended by `now`.
    pub(super) fn sweep_bans(&self, now: u64) -> rusqlite::Result<usize> {
        self.conn
            .prepare_cached(&self.bans.sweep)?
            .execute([sql_now(now)])
    }

    /// One page of the bans in force at `now`, after `after`.
    pub(super) fn list_bans(
        &self,
        after: Option<&BanCursor>,
        limit: usize,
        now: u64,
    ) -> rusqlite::Result<Result<BanPage, StoreError>> {
        let limit = page_limit(limit);
        let (from_until, from_key) = match after {
            Some(c) => (sql_time(c.until), c.key.as_str()),
            None => (i64::MIN, ""),
        };
        let mut stmt = self.conn.prepare_cached(&self.bans.list)?;
        let mut rows = stmt.query(rusqlite::params![
            sql_now(now),
            from_until,
            from_key,
            (limit + 1) as i64
        ])?;
        let (mut bans, mut seen, mut next) = (Vec::new(), 0, None);
        let at = Timestamp::from_millis(now);
        while let Some(row) = rows.next()? {
            let key: String = row.get(0)?;
            seen += 1;
            if seen > limit {
                // More remain: the next page starts after the last row of this one (whether
                // or not that row made an entry).
                break;
            }
            let until: i64 = row.get(1)?;
            // `sql_time` saturates the end of time at i64::MAX.
            let until = match until {
                i64::MAX => u64::MAX,
                u => u64::try_from(u).unwrap_or(0),
            };
            next = Some(BanCursor {
                until,
                key: key.clone(),
            });
            let bytes: Vec<u8> = row.get(2)?;
            let (Some(client), Ok(state)) = (key_from_text(&key), ClientState::decode(&bytes))
            else {
                log::warn!(
                    "floodgate: skipping the unreadable SQLite row of {key:?} in a ban listing"
                );
                continue;
            };
            // The state is the authority: an index row it contradicts is skipped.
            bans.extend(BanEntry::of_state(client, &state, at));
        }
        Ok(Ok(BanPage {
            bans,
            next: if seen > limit { next } else { None },
        }))
    }
}

/// Fills the index of `table` from its rows (a file written before the index existed).
pub(super) fn backfill(tx: &Transaction<'_>, table: &str) -> rusqlite::Result<()> {
    let conn: &Connection = tx;
    let mut select = conn.prepare(&format!("SELECT key, state FROM \"{table}\""))?;
    let mut put = conn.prepare(&format!(
        "REPLACE INTO \"{}\" (key, ban_until) VALUES (?1, ?2)",
        index_name(table)
    ))?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        let bytes: Vec<u8> = row.get(1)?;
        if let Some((until, _)) = ClientState::decode(&bytes).ok().and_then(|s| s.ban_slot()) {
            put.execute(rusqlite::params![key, sql_time(until)])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientKey;
    use crate::store::Store;
    use std::net::{IpAddr, Ipv4Addr};

    /// A file of schema version 2 (before the index) with one banned and one unbanned
    /// client: opening it migrates, and the listing finds the ban.
    #[test]
    fn a_file_from_before_the_index_is_indexed_when_it_is_migrated() {
        let path =
            std::env::temp_dir().join(format!("floodgate-bans-backfill-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let client = ClientKey::from_ip(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)), 64);
        let now = Timestamp::from_millis(1_000_000);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE floodgate_tables (name TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID;
                 INSERT INTO floodgate_tables VALUES ('floodgate_clients');
                 CREATE TABLE floodgate_clients (key TEXT PRIMARY KEY NOT NULL, \
                   state BLOB NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
                 PRAGMA user_version = 2;",
            )
            .unwrap();
            let mut banned = ClientState::new();
            banned.ban(None, now);
            let mut plain = ClientState::new();
            plain.ban(
                Some(Timestamp::from_millis(2_000)),
                Timestamp::from_millis(1_000),
            );
            for (key, state) in [("198.51.100.9", &banned), ("198.51.100.10", &plain)] {
                conn.execute(
                    "INSERT INTO floodgate_clients VALUES (?1, ?2, ?3)",
                    rusqlite::params![key, state.encode(), i64::MAX],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path).expect("open and migrate");
        let page = super::super::tests::wait(store.bans(None, 10, now)).unwrap();
        assert_eq!(page.bans.len(), 1, "{page:?}");
        assert_eq!(page.bans[0].client, client);
        assert_eq!(page.bans[0].until, None);
        drop(store);
        let _ = std::fs::remove_file(&path);
    }
}

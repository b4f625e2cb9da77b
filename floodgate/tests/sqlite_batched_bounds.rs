//! The memory bound of the SQLite store's `Durability::Batched` mode: the index of clients
//! whose state is only in the file stays under its cap, without a ban in the file ever being
//! missed; and rounds that fail do not grow memory past the documented bound.
#![cfg(feature = "sqlite")]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use floodgate::store::sqlite::BatchedUsage;
use floodgate::{
    BanRule, ClientKey, Decision, Durability, Plan, Rule, ScopeId, SqliteStore, SqliteStoreBuilder,
    Store, Timestamp,
};
use rusqlite::Connection;

#[path = "support/block_on.rs"]
mod block_on;
use block_on::{run, try_run};

fn key(n: u32) -> ClientKey {
    ClientKey::from_ip(IpAddr::V4(Ipv4Addr::from(n)), 64)
}

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

fn at(ms: u64) -> Timestamp {
    T0 + Duration::from_millis(ms)
}

fn plan() -> Arc<Plan> {
    Arc::new(Plan::new(
        [(
            ScopeId::GLOBAL,
            vec![Rule::new(5, Duration::from_secs(3_600))],
        )],
        None,
    ))
}

/// A fresh directory in the temp dir, deleted on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "floodgate-batched-bounds-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Batched store of 64 clients in memory and 64 in the index.
fn small(db: &Path) -> SqliteStoreBuilder {
    SqliteStore::builder(db)
        .durability(Durability::Batched)
        .busy_timeout(Duration::from_millis(200))
        .memory_clients(64)
        .spilled_clients(64)
}

fn usage(store: &SqliteStore) -> BatchedUsage {
    store.batched_usage().expect("a Batched store")
}

fn assert_bounded(store: &SqliteStore) {
    let u = usage(store);
    assert!(u.memory_clients <= u.memory_capacity, "{u:?}");
    assert!(u.spilled_clients <= u.spilled_capacity, "{u:?}");
    // The documented bound of changes waiting: about three per memory client.
    assert!(u.unwritten <= 3 * u.memory_capacity, "{u:?}");
}

fn banned(store: &SqliteStore, n: u32, t: Timestamp) -> bool {
    matches!(
        run(store.check(&key(n), &plan(), t)),
        Decision::Banned { .. }
    )
}

#[test]
fn the_spilled_index_stays_capped_and_evicted_bans_are_still_enforced() {
    let dir = TempDir::new("spilled");
    let db = dir.file("x.db");
    let store = small(&db).open().unwrap();
    let u = usage(&store);
    assert_eq!((u.memory_capacity, u.spilled_capacity), (64, 64));
    // 100 clients banned by a report for an hour: far past the memory's ban budget (16),
    // so most leave memory for the file.
    let rule = BanRule::new(1, Duration::from_secs(10), Duration::from_secs(3_600));
    for n in 0..100 {
        run(store.report(&key(n), &rule, at(u64::from(n))));
        assert_bounded(&store);
    }
    // A flood of plain clients, many times the index's cap.
    for n in 10_000..15_000 {
        run(store.check(&key(n), &plan(), at(1_000 + u64::from(n))));
        assert_bounded(&store);
    }
    assert!(usage(&store).spilled_clients > 0);
    // Every ban holds: in memory, in the index, or looked up in the file past the index.
    let t = at(60_000);
    for n in 0..100 {
        assert!(banned(&store, n, t), "client {n} was freed");
        assert_bounded(&store);
    }
    // A client the file never held is new, and counted.
    for _ in 0..5 {
        assert!(run(store.check(&key(99_999), &plan(), t)).is_allowed());
    }
    assert!(!run(store.check(&key(99_999), &plan(), t)).is_allowed());
    drop(store);

    // Reopened on a file with far more rows than the index holds: at most 64 indexed, and
    // every ban still holds.
    let store = small(&db).open().unwrap();
    assert!(usage(&store).spilled_clients <= 64);
    let t = at(120_000);
    for n in 0..100 {
        assert!(banned(&store, n, t), "client {n} was freed after reopening");
        assert_bounded(&store);
    }
    // And the evicted plain clients kept their counts through the file.
    for _ in 0..4 {
        assert!(run(store.check(&key(10_000), &plan(), t)).is_allowed());
    }
    assert!(!run(store.check(&key(10_000), &plan(), t)).is_allowed());
}

#[test]
fn failing_rounds_do_not_grow_memory_past_the_bound() {
    let dir = TempDir::new("failing");
    let db = dir.file("x.db");
    drop(SqliteStore::open(&db).unwrap());
    // Every write of a client row now fails, as on a full disk; reads still work.
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER no_writes BEFORE INSERT ON floodgate_clients \
         BEGIN SELECT RAISE(ABORT, 'injected write failure'); END;",
    )
    .unwrap();
    drop(conn);

    let store = small(&db).open().unwrap();
    // The operator's ban is not durable (its round fails, and says so), but it is in force
    // in memory and stays there.
    assert!(try_run(store.ban(&key(1), None, T0)).is_err());
    let mut refused = 0;
    for n in 10_000..15_000 {
        if try_run(store.check(&key(n), &plan(), at(u64::from(n)))).is_err() {
            refused += 1;
        }
        assert_bounded(&store);
    }
    let u = usage(&store);
    assert!(u.unwritten >= 64, "the backlog filled: {u:?}");
    assert!(
        refused > 4_000,
        "new clients follow the store-failure policy once the backlog is full ({refused})"
    );
    assert!(banned(&store, 1, at(20_000)), "the ban in memory was lost");
    assert_bounded(&store);
}

//! The store conformance suite: one table of scenarios (`support/scenarios.rs`, and the async
//! walks of `support/walks.rs`) run on the decision core alone (`support/core_store.rs`), the
//! memory store, SQLite in each durability mode, and, when `redis-server` is there, Redis
//! with and without its ban cache, Redis Cluster (three masters) and a failover store in
//! front of Redis; every store must give the same answers. A SQLite file reopened after a scenario must give every client the
//! state it had. Time is explicit `Timestamp`s; nothing sleeps.

use std::sync::Arc;

use floodgate::{
    BanReason, BanRule, ClientKey, ClientState, Decision, Plan, ReportOutcome, Store, StoreFuture,
    Timestamp,
};

#[path = "support/block_on.rs"]
mod block_on;
use block_on::{block_on, run};
#[path = "support/ban_listing.rs"]
mod ban_listing;
#[path = "support/bounded_traffic.rs"]
mod bounded_traffic;

#[path = "support/core_store.rs"]
mod core_store;
#[path = "support/scenarios.rs"]
mod scenarios;
#[path = "support/walks.rs"]
mod walks;

#[cfg(feature = "redis")]
#[path = "support/redis_cluster.rs"]
mod redis_cluster;
#[cfg(feature = "redis")]
#[path = "support/redis_server.rs"]
mod redis_server;
#[cfg(feature = "redis")]
#[path = "support/services.rs"]
mod services;

use scenarios::{
    bounded_rule_counts_until_its_sub_window_leaves, bounded_rules_keep_their_bound,
    concurrent_requests_are_counted_exactly, custom_keys_are_separate_from_addresses,
    expired_state_starts_afresh, operators_ban_blacklist_and_unban,
    policy_accumulation_cooldown_grace_and_adaptive, policy_ban_punishment_ends,
    policy_blocks_then_punishes, refusal_is_atomic_across_rules_and_scopes,
    released_requests_are_given_back, reports_ban_from_the_last_offence_and_are_spent,
    sliding_log_is_exact, state_reflects_the_client, sweep_deletes_expired_clients,
};

/// The async walks, as scenarios of the table.
macro_rules! walks {
    ($($walk:path => $name:ident),* $(,)?) => {
        $(
            fn $name(store: &dyn Store) {
                block_on($walk(store))
            }
        )*
    };
}

walks!(
    walks::sliding_log_is_exact_at_the_window_edge => walk_sliding_log_at_the_window_edge,
    walks::several_rules_and_scopes_refuse_atomically => walk_several_rules_and_scopes,
    walks::reports_ban_from_the_last_offence_and_are_spent => walk_reports_and_spent_offences,
    walks::operator_ban_blacklist_and_unban => walk_operator_ban_blacklist_and_unban,
    walks::policy_blocks_and_punishes => walk_policy_blocks_and_punishes,
    walks::policy_accumulation_cooldown_grace_and_adaptive => walk_policy_accumulation_to_adaptive,
    walks::state_and_expiry => walk_state_and_expiry,
    ban_listing::bans_are_listed_page_by_page => walk_bans_are_listed_page_by_page,
);

/// A store that notes every client it is asked about and the latest time, so that the
/// states a test left can be read back (from the same file, reopened).
struct Noting<S> {
    inner: S,
    seen: std::sync::Mutex<(Vec<ClientKey>, Timestamp)>,
}

impl<S: Store> Noting<S> {
    fn new(inner: S) -> Self {
        Noting {
            inner,
            seen: std::sync::Mutex::new((Vec::new(), Timestamp::from_millis(0))),
        }
    }

    fn note(&self, client: Option<&ClientKey>, now: Timestamp) {
        let mut seen = self.seen.lock().unwrap();
        if let Some(c) = client {
            if !seen.0.contains(c) {
                seen.0.push(c.clone());
            }
        }
        seen.1 = seen.1.max(now);
    }

    /// Every client noted, and the latest time noted.
    fn noted(&self) -> (Vec<ClientKey>, Timestamp) {
        self.seen.lock().unwrap().clone()
    }
}

/// The live state of each of `clients` at `now`.
fn states(
    store: &dyn Store,
    (clients, now): &(Vec<ClientKey>, Timestamp),
) -> Vec<(ClientKey, Option<ClientState>)> {
    assert!(!clients.is_empty());
    clients
        .iter()
        .map(|c| (c.clone(), run(store.state(c, *now))))
        .collect()
}

impl<S: Store> std::fmt::Debug for Noting<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Noting").field(&self.inner).finish()
    }
}

impl<S: Store> Store for Noting<S> {
    fn check(&self, client: &ClientKey, plan: &Arc<Plan>, now: Timestamp) -> StoreFuture<Decision> {
        self.note(Some(client), now);
        self.inner.check(client, plan, now)
    }
    fn report(
        &self,
        client: &ClientKey,
        rule: &BanRule,
        now: Timestamp,
    ) -> StoreFuture<ReportOutcome> {
        self.note(Some(client), now);
        self.inner.report(client, rule, now)
    }
    fn ban(&self, client: &ClientKey, until: Option<Timestamp>, now: Timestamp) -> StoreFuture<()> {
        self.note(Some(client), now);
        self.inner.ban(client, until, now)
    }
    fn extend_ban(
        &self,
        client: &ClientKey,
        until: Option<Timestamp>,
        reason: BanReason,
        now: Timestamp,
    ) -> StoreFuture<()> {
        self.note(Some(client), now);
        self.inner.extend_ban(client, until, reason, now)
    }
    fn release(
        &self,
        client: &ClientKey,
        plan: &Arc<Plan>,
        at: Timestamp,
        now: Timestamp,
    ) -> StoreFuture<()> {
        self.note(Some(client), now);
        self.inner.release(client, plan, at, now)
    }
    fn unban(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<bool> {
        self.note(Some(client), now);
        self.inner.unban(client, now)
    }
    fn state(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<Option<ClientState>> {
        self.note(Some(client), now);
        self.inner.state(client, now)
    }
    fn sweep(&self, now: Timestamp) -> StoreFuture<usize> {
        self.note(None, now);
        self.inner.sweep(now)
    }
    fn bans(
        &self,
        after: Option<&floodgate::BanCursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreFuture<floodgate::BanPage> {
        self.note(None, now);
        self.inner.bans(after, limit, now)
    }
}

/// Runs `test` on the store `open` gives, then checks that the file, reopened, gives every
/// client the test touched the same state as the store had when it was dropped.
#[cfg(feature = "sqlite")]
fn reopened_gives_the_same_state(open: impl Fn() -> floodgate::SqliteStore, test: fn(&dyn Store)) {
    let store = Noting::new(open());
    test(&store);
    let noted = store.noted();
    let before = states(&store.inner, &noted);
    drop(store);
    let again = open();
    let after = states(&again, &noted);
    assert_eq!(after, before, "the reopened file holds another state");
}

/// Runs `test` on a Redis store (in a database of its own on the binary's shared
/// `redis-server`) with a ban cache of `cache`, behind a failover store with a memory backup
/// when `failover`; returns at once without `redis-server` (see `support/services.rs`).
#[cfg(feature = "redis")]
fn on_redis(cache: std::time::Duration, failover: bool, test: fn(&dyn Store)) {
    let Some(server) = redis_server::RedisServer::shared() else {
        return;
    };
    // The Redis store's futures need a tokio runtime: one with a worker of its own, entered
    // here, so that the scenarios drive them from this thread as they drive every store's.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let _entered = rt.enter();
    let redis = block_on(redis_server::redis_store(&server, cache));
    if failover {
        let store = floodgate::FailoverStore::new(redis).backup(floodgate::MemoryStore::new());
        test(&store);
        assert!(!store.primary_down(), "every decision was Redis's");
    } else {
        test(&redis);
    }
}

/// Runs `test` on a Redis Cluster store (under a prefix of its own on the binary's shared
/// cluster of three masters); returns at once without `redis-server`.
#[cfg(feature = "redis")]
fn on_cluster(test: fn(&dyn Store)) {
    let Some(cluster) = redis_cluster::RedisCluster::shared() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let _entered = rt.enter();
    let store = block_on(redis_cluster::cluster_store(
        &cluster,
        std::time::Duration::from_secs(1),
    ));
    assert!(store.is_cluster());
    test(&store);
}

macro_rules! conformance {
    (everywhere: [$($test:ident),* $(,)?], local: [$($local:ident),* $(,)?], stores: [$($store:ident),* $(,)?] $(,)?) => {
        mod core {
            $(
                #[test]
                fn $test() {
                    super::$test(&super::core_store::CoreStore::default());
                }
            )*
            $(
                #[test]
                fn $local() {
                    super::$local(&super::core_store::CoreStore::default());
                }
            )*
        }

        mod memory {
            $(
                #[test]
                fn $test() {
                    super::$test(&floodgate::MemoryStore::new());
                }
            )*
            $(
                #[test]
                fn $store() {
                    super::$store(&floodgate::MemoryStore::new());
                }
            )*
            $(
                #[test]
                fn $local() {
                    super::$local(&floodgate::MemoryStore::new());
                }
            )*
        }

        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[test]
                fn $test() {
                    let db = super::TempDb::new(stringify!($test));
                    super::reopened_gives_the_same_state(
                        || floodgate::SqliteStore::open(&db.path).expect("open"),
                        super::$test,
                    );
                }
            )*
            $(
                #[test]
                fn $store() {
                    let db = super::TempDb::new(stringify!($store));
                    super::reopened_gives_the_same_state(
                        || floodgate::SqliteStore::open(&db.path).expect("open"),
                        super::$store,
                    );
                }
            )*
            $(
                #[test]
                fn $local() {
                    let db = super::TempDb::new(stringify!($local));
                    super::reopened_gives_the_same_state(
                        || floodgate::SqliteStore::open(&db.path).expect("open"),
                        super::$local,
                    );
                }
            )*
        }

        #[cfg(feature = "sqlite")]
        mod sqlite_batched {
            fn open(db: &super::TempDb) -> floodgate::SqliteStore {
                floodgate::SqliteStore::builder(&db.path)
                    .durability(floodgate::Durability::Batched)
                    .open()
                    .expect("open")
            }
            $(
                #[test]
                fn $test() {
                    let db = super::TempDb::new(concat!("batched-", stringify!($test)));
                    super::reopened_gives_the_same_state(|| open(&db), super::$test);
                }
            )*
            $(
                #[test]
                fn $store() {
                    let db = super::TempDb::new(concat!("batched-", stringify!($store)));
                    super::reopened_gives_the_same_state(|| open(&db), super::$store);
                }
            )*
            $(
                #[test]
                fn $local() {
                    let db = super::TempDb::new(concat!("batched-", stringify!($local)));
                    super::reopened_gives_the_same_state(|| open(&db), super::$local);
                }
            )*
        }

        // Redis expires keys by itself (its sweep has nothing to do), and its futures run on
        // the thread that entered the runtime: the local scenarios stay local.
        #[cfg(feature = "redis")]
        mod redis {
            $(
                #[test]
                fn $test() {
                    super::on_redis(std::time::Duration::from_secs(1), false, super::$test);
                }
            )*
            $(
                #[test]
                fn $store() {
                    super::on_redis(std::time::Duration::from_secs(1), false, super::$store);
                }
            )*
        }

        #[cfg(feature = "redis")]
        mod redis_without_ban_cache {
            $(
                #[test]
                fn $test() {
                    super::on_redis(std::time::Duration::ZERO, false, super::$test);
                }
            )*
            $(
                #[test]
                fn $store() {
                    super::on_redis(std::time::Duration::ZERO, false, super::$store);
                }
            )*
        }

        #[cfg(feature = "redis")]
        mod cluster {
            $(
                #[test]
                fn $test() {
                    super::on_cluster(super::$test);
                }
            )*
            $(
                #[test]
                fn $store() {
                    super::on_cluster(super::$store);
                }
            )*
        }

        #[cfg(feature = "redis")]
        mod failover_redis_with_a_backup {
            $(
                #[test]
                fn $test() {
                    super::on_redis(std::time::Duration::from_secs(1), true, super::$test);
                }
            )*
            $(
                #[test]
                fn $store() {
                    super::on_redis(std::time::Duration::from_secs(1), true, super::$store);
                }
            )*
        }
    };
}

conformance!(
    everywhere: [
        sliding_log_is_exact,
        refusal_is_atomic_across_rules_and_scopes,
        reports_ban_from_the_last_offence_and_are_spent,
        operators_ban_blacklist_and_unban,
        policy_blocks_then_punishes,
        policy_ban_punishment_ends,
        state_reflects_the_client,
        expired_state_starts_afresh,
        custom_keys_are_separate_from_addresses,
        bounded_rules_keep_their_bound,
        bounded_rule_counts_until_its_sub_window_leaves,
        released_requests_are_given_back,
        policy_accumulation_cooldown_grace_and_adaptive,
        walk_sliding_log_at_the_window_edge,
        walk_several_rules_and_scopes,
        walk_reports_and_spent_offences,
        walk_operator_ban_blacklist_and_unban,
        walk_policy_blocks_and_punishes,
        walk_policy_accumulation_to_adaptive,
        walk_state_and_expiry,
    ],
    local: [
        sweep_deletes_expired_clients,
        concurrent_requests_are_counted_exactly,
    ],
    // A store's own feature, beside the decision core.
    stores: [walk_bans_are_listed_page_by_page],
);

/// A database file in the temp dir, deleted (with its WAL files) on drop.
#[cfg(feature = "sqlite")]
struct TempDb {
    path: std::path::PathBuf,
}

#[cfg(feature = "sqlite")]
impl TempDb {
    fn new(name: &str) -> TempDb {
        let path = std::env::temp_dir().join(format!(
            "floodgate-conformance-{}-{name}.db",
            std::process::id()
        ));
        let db = TempDb { path };
        db.remove();
        db
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(feature = "sqlite")]
impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}

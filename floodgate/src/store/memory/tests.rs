//! Unit tests of `store/memory/mod.rs`.

use super::*;
use crate::rules::Rule;
use crate::state::ScopeId;
use crate::state::{Decision, Plan};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

pub(super) fn key(n: u32) -> ClientKey {
    ClientKey::from_ip(IpAddr::V4(Ipv4Addr::from(n)), 64)
}

pub(super) fn ready<T>(mut f: StoreFuture<T>) -> T {
    f.take_ready().unwrap().unwrap()
}

#[test]
fn bound_holds_and_banned_clients_survive_a_flood() {
    let store = MemoryStore::builder().max_clients(64).shards(4).build();
    let plan = Arc::new(Plan::new(
        [(ScopeId::GLOBAL, vec![Rule::new(5, Duration::from_secs(60))])],
        None,
    ));
    let t = Timestamp::from_millis(1_000_000);
    ready(store.ban(&key(0), None, t));
    for n in 1..10_000 {
        ready(store.check(&key(n), &plan, t + Duration::from_millis(u64::from(n))));
        assert!(store.len() <= store.capacity());
    }
    assert!(
        ready(store.state(&key(0), t)).is_some(),
        "banned client was evicted"
    );
    let d = ready(store.check(&key(0), &plan, t + Duration::from_secs(20)));
    assert!(matches!(d, Decision::Banned { until: None, .. }));
}

#[test]
fn budgets_leave_unbanned_clients_an_eighth() {
    let store = MemoryStore::builder()
        .max_clients(1_000)
        .shards(1)
        .ban_clients(5_000)
        .pinned_clients(5_000)
        .build();
    let b = store.budgets;
    assert_eq!((b.clients, b.pinned, b.bans), (1_000, 500, 375));
    // Small stores get fewer, fuller shards.
    let store = MemoryStore::builder().max_clients(100).shards(64).build();
    assert_eq!((store.shards.len(), store.budgets.clients), (2, 50));
}

#[test]
fn the_sizes_in_the_memory_docs_hold() {
    use super::journal::Spilled;
    use crate::state::{Extras, PolicyState, Scope};
    assert_eq!(std::mem::size_of::<Entry>(), 56);
    assert_eq!(std::mem::size_of::<(ScopeId, Scope)>(), 48);
    assert_eq!(std::mem::size_of::<PolicyState>(), 88);
    assert_eq!(std::mem::size_of::<Extras>(), 56);
    assert_eq!(std::mem::size_of::<Spilled>(), 40);
}

#[test]
fn sweep_removes_expired_clients() {
    let store = MemoryStore::new();
    let plan = Arc::new(Plan::new(
        [(ScopeId::GLOBAL, vec![Rule::new(5, Duration::from_secs(10))])],
        None,
    ));
    let t = Timestamp::from_millis(1_000_000);
    for n in 0..100 {
        ready(store.check(&key(n), &plan, t));
    }
    assert_eq!(store.len(), 100);
    assert_eq!(ready(store.sweep(t + Duration::from_secs(9))), 0);
    assert_eq!(ready(store.sweep(t + Duration::from_secs(10))), 100);
    assert!(store.is_empty());
}

#[test]
fn shards_sweep_themselves_on_the_request_path() {
    let store = MemoryStore::builder()
        .shards(1)
        .sweep_interval(Duration::from_secs(30))
        .build();
    let plan = Arc::new(Plan::new(
        [(ScopeId::GLOBAL, vec![Rule::new(5, Duration::from_secs(10))])],
        None,
    ));
    let t = Timestamp::from_millis(1_000_000);
    for n in 0..50 {
        ready(store.check(&key(n), &plan, t));
    }
    ready(store.check(&key(999), &plan, t + Duration::from_secs(31)));
    assert_eq!(store.len(), 1);
}

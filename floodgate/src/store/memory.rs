//! The in-memory store: sharded, bounded, swept.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hashbrown::HashTable;

use super::{Store, StoreFuture};
use crate::client::ClientKey;
use crate::clock::{duration_millis, Timestamp};
use crate::rules::BanRule;
use crate::state::{BanReason, ClientState, Decision, Plan, ReportOutcome};

/// Clients tracked by default before the least recently seen are evicted.
pub const DEFAULT_MAX_CLIENTS: usize = 200_000;

/// Client state in this process's memory. The default store of [`Floodgate::new`](crate::Floodgate::new).
///
/// - **Sharded**: clients are spread over independent shards, each behind its own short
///   lock, so workers never contend on one global lock.
/// - **Bounded**: at most [`max_clients`](MemoryStoreBuilder::max_clients) clients are
///   tracked. When a shard is full, expired clients go first, then the least recently seen
///   clients that are not banned, and banned clients last. A flood of forged addresses thus
///   costs bounded memory and does not free a banned client.
/// - **Swept**: each shard drops expired clients every
///   [`sweep_interval`](MemoryStoreBuilder::sweep_interval), on its own request path (no
///   background thread).
///
/// Keys are hashed with a randomly seeded hash (foldhash, seeded per store), so clients
/// cannot choose addresses that collide in advance.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Padded]>,
    hasher: RandomState,
    shard_bits: u32,
    per_shard: usize,
    sweep_ms: u64,
}

/// One shard on its own cache line, so that threads working on neighbouring shards do not
/// invalidate each other's lines (false sharing).
#[derive(Debug)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

#[derive(Debug)]
struct Shard {
    table: HashTable<Entry>,
    next_sweep: u64,
    /// Present when a write-behind store keeps this store as its mirror.
    journal: Option<Box<Journal>>,
}

/// What a write-behind store (the SQLite store's [`Durability::Batched`] mode) must still
/// write, per shard.
///
/// [`Durability::Batched`]: crate::Durability::Batched
#[derive(Debug, Default)]
struct Journal {
    /// Clients changed since the last [`MemoryStore::take_journal`] (repeats allowed).
    dirty: Vec<ClientKey>,
    /// Clients evicted while live, with their last state: written after `dirty`.
    evicted: Vec<Change>,
    /// Live clients whose state is only in the file (evicted, or there before this process
    /// started): a request from one of them loads its state before deciding.
    spilled: HashTable<Spilled>,
}

#[derive(Debug)]
struct Spilled {
    key: ClientKey,
    expires: u64,
}

/// The outcome of [`MemoryStore::with_journal`].
#[derive(Debug)]
pub(crate) enum Journaled<R> {
    /// `f` ran.
    Done(R),
    /// The client is unknown and `create` was false.
    Missing,
    /// The client's state is in the file: load it ([`MemoryStore::insert_loaded`]), then ask
    /// again.
    Load,
}

/// A change to write: the client's state (encoded, with its expiry in ms), or `None` when the
/// client is gone (swept).
pub(crate) type Change = (ClientKey, Option<Encoded>);

/// A state as [`ClientState::encode`] gives it, and when it expires (ms).
pub(crate) type Encoded = (Vec<u8>, u64);

fn encoded(state: &ClientState) -> Encoded {
    (state.encode(), state.expires_at().as_millis())
}

#[derive(Debug)]
struct Entry {
    key: ClientKey,
    state: ClientState,
}

/// Settings of a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryStoreBuilder {
    max_clients: usize,
    shards: usize,
    sweep_interval: Duration,
}

impl MemoryStoreBuilder {
    /// The most clients tracked at once (default [`DEFAULT_MAX_CLIENTS`]).
    pub fn max_clients(mut self, n: usize) -> Self {
        self.max_clients = n.max(1);
        self
    }

    /// The number of shards, rounded up to a power of two (default: 16 per CPU, at least 64).
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n.clamp(1, 1 << 16);
        self
    }

    /// How often each shard drops expired clients (default 60 s).
    pub fn sweep_interval(mut self, every: Duration) -> Self {
        self.sweep_interval = every;
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        self.build_with(false)
    }

    /// Builds the store, with a journal in each shard when `journal` is true.
    pub(crate) fn build_with(self, journal: bool) -> MemoryStore {
        let shards = self.shards.next_power_of_two();
        let shard_bits = shards.trailing_zeros();
        let per_shard = self.max_clients.div_ceil(shards).max(1);
        MemoryStore {
            shards: (0..shards)
                .map(|_| {
                    Padded(Mutex::new(Shard {
                        table: HashTable::new(),
                        next_sweep: 0,
                        journal: journal.then(Box::default),
                    }))
                })
                .collect(),
            hasher: RandomState::default(),
            shard_bits,
            per_shard,
            sweep_ms: duration_millis(self.sweep_interval).max(1),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::builder().build()
    }
}

impl MemoryStore {
    /// A store with the default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Settings for a store.
    pub fn builder() -> MemoryStoreBuilder {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        MemoryStoreBuilder {
            max_clients: DEFAULT_MAX_CLIENTS,
            shards: (cpus * 16).max(64),
            sweep_interval: Duration::from_secs(60),
        }
    }

    /// The number of clients tracked now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.0).table.len()).sum()
    }

    /// True when no client is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most clients this store tracks.
    pub fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        let index = if self.shard_bits == 0 {
            0
        } else {
            (hash >> (64 - self.shard_bits)) as usize
        };
        lock(&self.shards[index].0)
    }

    /// Runs `f` on the client's state, creating it when `create` is true.
    fn with_state<R>(
        &self,
        key: &ClientKey,
        now: Timestamp,
        create: bool,
        f: impl FnOnce(&mut ClientState) -> R,
    ) -> Option<R> {
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard(hash);
        let now_ms = now.as_millis();
        if now_ms >= shard.next_sweep {
            shard.sweep(now_ms);
            shard.next_sweep = now_ms.saturating_add(self.sweep_ms);
        }
        self.with_state_in(&mut shard, key, hash, now_ms, create, f)
    }
}

impl MemoryStore {
    /// Like `with_state`, for a journaled store: records the client as changed when `mark`,
    /// and asks for a load when the client's state is only in the file.
    pub(crate) fn with_journal<R>(
        &self,
        key: &ClientKey,
        now: Timestamp,
        create: bool,
        mark: bool,
        f: impl FnOnce(&mut ClientState) -> R,
    ) -> Journaled<R> {
        let hash = self.hasher.hash_one(key);
        let mut guard = self.shard(hash);
        let shard = &mut *guard;
        let now_ms = now.as_millis();
        if now_ms >= shard.next_sweep {
            shard.sweep(now_ms);
            shard.next_sweep = now_ms.saturating_add(self.sweep_ms);
        }
        let Some(journal) = shard.journal.as_deref_mut() else {
            return match self.with_state_in(shard, key, hash, now_ms, create, f) {
                Some(r) => Journaled::Done(r),
                None => Journaled::Missing,
            };
        };
        if shard.table.find(hash, |e| e.key == *key).is_none()
            && journal.spilled.find(hash, |s| s.key == *key).is_some()
        {
            return Journaled::Load;
        }
        let result = self.with_state_in(shard, key, hash, now_ms, create, f);
        match result {
            Some(r) => {
                if mark {
                    if let Some(j) = shard.journal.as_deref_mut() {
                        j.dirty.push(key.clone());
                    }
                }
                Journaled::Done(r)
            }
            None => Journaled::Missing,
        }
    }

    fn with_state_in<R>(
        &self,
        shard: &mut Shard,
        key: &ClientKey,
        hash: u64,
        now_ms: u64,
        create: bool,
        f: impl FnOnce(&mut ClientState) -> R,
    ) -> Option<R> {
        if let Some(entry) = shard.table.find_mut(hash, |e| e.key == *key) {
            return Some(f(&mut entry.state));
        }
        if !create {
            return None;
        }
        let mut state = ClientState::new();
        let result = f(&mut state);
        self.insert(shard, hash, key, state, now_ms);
        Some(result)
    }

    /// Adds a client that is not in `shard`, evicting others first when the shard is full.
    fn insert(
        &self,
        shard: &mut Shard,
        hash: u64,
        key: &ClientKey,
        state: ClientState,
        now_ms: u64,
    ) {
        if shard.table.len() >= self.per_shard {
            shard.evict(now_ms, self.per_shard, &self.hasher);
        }
        // The hash is recomputed from the key when the table grows (rare), instead of being
        // stored in every entry.
        let hasher = &self.hasher;
        shard.table.insert_unique(
            hash,
            Entry {
                key: key.clone(),
                state,
            },
            |e| hasher.hash_one(&e.key),
        );
    }

    /// The client's state, encoded, if it is here.
    pub(crate) fn snapshot(&self, key: &ClientKey) -> Option<Encoded> {
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash);
        shard
            .table
            .find(hash, |e| e.key == *key)
            .map(|e| encoded(&e.state))
    }

    /// Records that `key`'s live state (until `expires`) is in the file but not here.
    pub(crate) fn spill(&self, key: ClientKey, expires: u64) {
        let hash = self.hasher.hash_one(&key);
        let mut guard = self.shard(hash);
        let shard = &mut *guard;
        if shard.table.find(hash, |e| e.key == key).is_some() {
            return;
        }
        if let Some(j) = shard.journal.as_deref_mut() {
            spill_into(j, &self.hasher, hash, key, expires);
        }
    }

    /// Puts a state loaded from the file in place of its spilled record. Keeps the state
    /// already here, if a concurrent request loaded it first.
    pub(crate) fn insert_loaded(
        &self,
        key: &ClientKey,
        state: Option<ClientState>,
        now: Timestamp,
    ) {
        let hash = self.hasher.hash_one(key);
        let mut guard = self.shard(hash);
        let shard = &mut *guard;
        let Some(j) = shard.journal.as_deref_mut() else {
            return;
        };
        let Ok(spilled) = j.spilled.find_entry(hash, |s| s.key == *key) else {
            return;
        };
        spilled.remove();
        if shard.table.find(hash, |e| e.key == *key).is_some() {
            return;
        }
        if let Some(state) = state.filter(|s| s.expires_at() > now) {
            self.insert(shard, hash, key, state, now.as_millis());
        }
    }

    /// Takes every change recorded since the last call: the current state of each changed
    /// client (`None` when it is gone), then the last state of each evicted one.
    pub(crate) fn take_journal(&self) -> Vec<Change> {
        let mut out = Vec::new();
        for padded in self.shards.iter() {
            let mut guard = lock(&padded.0);
            let shard = &mut *guard;
            let Some(j) = shard.journal.as_deref_mut() else {
                continue;
            };
            if j.dirty.is_empty() && j.evicted.is_empty() {
                continue;
            }
            let mut dirty = std::mem::take(&mut j.dirty);
            let evicted = std::mem::take(&mut j.evicted);
            let hasher = &self.hasher;
            dirty.sort_unstable();
            dirty.dedup();
            for key in dirty {
                let hash = hasher.hash_one(&key);
                let state = shard
                    .table
                    .find(hash, |e| e.key == key)
                    .map(|e| encoded(&e.state));
                out.push((key, state));
            }
            out.extend(evicted);
        }
        out
    }
}

fn spill_into(j: &mut Journal, hasher: &RandomState, hash: u64, key: ClientKey, expires: u64) {
    match j.spilled.find_mut(hash, |s| s.key == key) {
        Some(s) => s.expires = expires,
        None => {
            j.spilled
                .insert_unique(hash, Spilled { key, expires }, |s| hasher.hash_one(&s.key));
        }
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // The decision core does not panic; should a panic ever poison a shard, its data is
    // still consistent at every await-free step, so carry on rather than fail requests.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shard {
    fn sweep(&mut self, now: u64) -> usize {
        let before = self.table.len();
        self.table
            .retain(|e| e.state.expires_at().as_millis() > now);
        if let Some(j) = self.journal.as_deref_mut() {
            j.spilled.retain(|s| s.expires > now);
        }
        before - self.table.len()
    }

    /// Makes room for at least one client (and up to an eighth of the shard, so that the
    /// scan is amortised): expired clients first, then the least recently seen unbanned
    /// ones, banned ones last.
    fn evict(&mut self, now: u64, cap: usize, hasher: &RandomState) {
        self.sweep(now);
        if self.table.len() < cap {
            return;
        }
        let target = (cap / 8).max(1);
        let now_ts = Timestamp::from_millis(now);
        let rank = |e: &Entry| (e.state.ban_at(now_ts).is_some(), e.state.last_seen);
        let mut ranks: Vec<(bool, u64)> = self.table.iter().map(rank).collect();
        let (_, &mut threshold, _) = ranks.select_nth_unstable(target - 1);
        let mut equal_budget = target - ranks.iter().filter(|r| **r < threshold).count();
        let mut journal = self.journal.as_deref_mut();
        self.table.retain(|e| {
            let r = rank(e);
            let keep = if r < threshold {
                false
            } else if r == threshold && equal_budget > 0 {
                equal_budget -= 1;
                false
            } else {
                true
            };
            if !keep {
                // A journaled store writes the evicted client's last state, and loads it
                // back when the client returns.
                if let Some(j) = journal.as_deref_mut() {
                    let expires = e.state.expires_at().as_millis();
                    let hash = hasher.hash_one(&e.key);
                    spill_into(j, hasher, hash, e.key.clone(), expires);
                    j.evicted.push((e.key.clone(), Some(encoded(&e.state))));
                }
            }
            keep
        });
    }
}

impl Store for MemoryStore {
    fn check(&self, client: &ClientKey, plan: &Arc<Plan>, now: Timestamp) -> StoreFuture<Decision> {
        let decision = self
            .with_state(client, now, plan.counts(), |s| s.check(plan, now))
            .unwrap_or(Decision::Allowed { quota: None });
        StoreFuture::ready(Ok(decision))
    }

    fn report(
        &self,
        client: &ClientKey,
        rule: &BanRule,
        now: Timestamp,
    ) -> StoreFuture<ReportOutcome> {
        let outcome = self
            .with_state(client, now, true, |s| s.report(rule, now))
            .unwrap_or(ReportOutcome::Recorded { offences: 0 });
        StoreFuture::ready(Ok(outcome))
    }

    fn ban(&self, client: &ClientKey, until: Option<Timestamp>, now: Timestamp) -> StoreFuture<()> {
        self.with_state(client, now, true, |s| s.ban(until, now));
        StoreFuture::ready(Ok(()))
    }

    fn extend_ban(
        &self,
        client: &ClientKey,
        until: Option<Timestamp>,
        reason: BanReason,
        now: Timestamp,
    ) -> StoreFuture<()> {
        self.with_state(client, now, true, |s| s.extend_ban(until, reason, now));
        StoreFuture::ready(Ok(()))
    }

    fn unban(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<bool> {
        let was = self.with_state(client, now, false, |s| s.unban(now));
        StoreFuture::ready(Ok(was.unwrap_or(false)))
    }

    fn state(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<Option<ClientState>> {
        let state = self
            .with_state(client, now, false, |s| {
                let mut copy = s.clone();
                copy.prune(now);
                copy
            })
            .filter(|s| s.expires_at() > now);
        StoreFuture::ready(Ok(state))
    }

    fn sweep(&self, now: Timestamp) -> StoreFuture<usize> {
        let swept = self
            .shards
            .iter()
            .map(|s| lock(&s.0).sweep(now.as_millis()))
            .sum();
        StoreFuture::ready(Ok(swept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Rule;
    use crate::state::ScopeId;
    use std::net::{IpAddr, Ipv4Addr};

    fn key(n: u32) -> ClientKey {
        ClientKey::from_ip(IpAddr::V4(Ipv4Addr::from(n)), 64)
    }

    fn ready<T>(mut f: StoreFuture<T>) -> T {
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
}

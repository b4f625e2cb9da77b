//! The in-memory store: sharded, bounded, swept.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hashbrown::HashTable;

use super::bans::{page_of, BanCursor, BanEntry, BanPage};
use super::state_access::{self, StateAccess};
use super::{Store, StoreFuture};
use crate::client::ClientKey;
use crate::clock::{duration_millis, Timestamp};
use crate::state::ClientState;

mod evict;
// The journal serves the SQLite store's Batched mode only.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
mod journal;

use journal::Journal;
#[cfg(feature = "sqlite")]
pub(crate) use journal::{Encoded, Journaled, LoadTicket};

/// Clients tracked by default before some are evicted.
pub const DEFAULT_MAX_CLIENTS: usize = 200_000;

/// The fewest clients a shard holds: a small store gets fewer shards, so that each shard's
/// budgets for bans and pinned clients hold at least a few clients.
const MIN_PER_SHARD: usize = 32;

/// Client state in this process's memory. The default store of [`Floodgate::new`](crate::Floodgate::new).
///
/// - **Sharded**: clients are spread over independent shards, each behind its own short
///   lock, so workers never contend on one global lock.
/// - **Bounded**: at most [`max_clients`](MemoryStoreBuilder::max_clients) clients are
///   tracked (see *Eviction* and *Memory* below).
/// - **Swept**: each shard drops expired clients every
///   [`sweep_interval`](MemoryStoreBuilder::sweep_interval), on its own request path (no
///   background thread).
///
/// Keys are hashed with a randomly seeded hash (foldhash, seeded per store), so clients
/// cannot choose addresses that collide in advance.
///
/// # Eviction
///
/// When a new client arrives at a full shard, the shard makes room (an eighth of the shard
/// at once, so that the work is amortised; a shard that is not full never evicts). Clients
/// fall into five classes, by what forgetting them would lose:
///
/// 1. **Operator bans** (any ban set by [`GateKeeper::ban`](crate::GateKeeper::ban) and
///    friends, timed or not) are never evicted.
/// 2. **Blacklists** (permanent bans from a policy punishment) are never evicted while they
///    fit in the [pinned budget](MemoryStoreBuilder::pinned_clients) together with the
///    operator bans, the longest-standing first. Blacklists past it compete with the
///    automatic bans below, as the longest-ending of them.
/// 3. **Automatic bans** (reported, punished with an end time, probes) have a
///    [budget](MemoryStoreBuilder::ban_clients) that unbanned clients cannot take: a flood
///    of new clients never evicts them. Once bans alone fill it, they give way to each other,
///    the soonest-ending first.
/// 4. **Escalation**: unbanned clients with something at stake (unspent offences, a policy
///    record with a block count, punishments, a running block or carried quota).
/// 5. **Counters**: unbanned clients with plain counters only.
///
/// Expired clients always go first. Then the bans beyond their budget (counting the new
/// client, when it arrives banned), soonest-ending first; then clients with counters only,
/// then clients with escalation at stake, least recently seen first in each class. A
/// flood of new clients (forged addresses, IPv6 /64s, custom keys) thus only ever evicts
/// unbanned clients, and the ones with nothing at stake first: it never lifts a ban within
/// its budget, a pinned blacklist or an operator ban, and never resets the escalation of a
/// client while plain ones remain.
///
/// # Memory
///
/// Per shard (`shards` of them; see [`capacity`](Self::capacity)), at most
/// `max_clients / shards` clients, of which `ban_clients / shards` are reserved for
/// automatic bans and `pinned_clients / shards` for pinned ones; unbanned clients always
/// keep the rest (at least an eighth). The one excess: operator bans are never evicted,
/// so a shard holding more of them than its pinned budget grows by those (an operator's
/// choice, never a client's).
///
/// A tracked client costs its slot in the hash table (a 56-byte entry and a control byte,
/// in a table kept between 44 % and 88 % full: 65 to 130 bytes) plus its own heap: 48 bytes
/// per counting scope (the global rules, each route's specific rules, each policy), 8 bytes
/// per request time a sliding log keeps (up to the largest count, at most 128, among the
/// scope's rules), 272 bytes per rule of a count above 128 (a bounded window, whatever the
/// count) plus 16 per scope holding such rules, 88 bytes per policy record, and 56 bytes
/// (plus 8 per unspent offence) for a client that is banned or was reported. A client under
/// one sliding-log rule of count 1 costs about 130 bytes; under a policy, about 210; under
/// a rule of count 100 with its log full, about 910; under rules of 100,000 per hour and
/// 1,000,000 per day, about 700. A [custom key](crate::ClientKey::custom) adds its length plus 16 bytes (plus the
/// allocator's overhead); the middleware uses no key longer than 1 KiB (such a request is
/// counted under its IP address), so a client-chosen key costs at most about 1 KiB more.
/// Allocator overhead (8 to 16 bytes per heap block) comes on top.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Padded]>,
    hasher: RandomState,
    shard_bits: u32,
    budgets: Budgets,
    sweep_ms: u64,
    /// Set by a write-behind store whose write backlog is full: no new client may enter a
    /// journaled shard until it is cleared.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    backlog_full: AtomicBool,
}

/// The bounds of one shard (see the eviction rules of [`MemoryStore`]).
#[derive(Debug, Clone, Copy)]
struct Budgets {
    /// The most clients.
    clients: usize,
    /// Room for operator bans and blacklists that no flood evicts.
    pinned: usize,
    /// Room for automatic bans that unbanned clients cannot take.
    bans: usize,
    /// The most clients whose live state is in the file but not here that a journaled
    /// shard indexes.
    spilled: usize,
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
    /// Operator bans beyond the pinned budget at the last eviction: the shard holds that
    /// many more clients.
    extra: usize,
    /// Present when a write-behind store keeps this store as its mirror.
    journal: Option<Box<Journal>>,
}

#[derive(Debug)]
struct Entry {
    key: ClientKey,
    state: ClientState,
}

/// Settings of a [`MemoryStore`].
///
/// The budgets are parts of [`max_clients`](Self::max_clients), not additions to it:
/// unbanned clients can always use the rest, and also the parts of the budgets that bans do
/// not use.
#[derive(Debug, Clone)]
pub struct MemoryStoreBuilder {
    max_clients: usize,
    shards: usize,
    sweep_interval: Duration,
    ban_clients: Option<usize>,
    pinned_clients: Option<usize>,
}

impl MemoryStoreBuilder {
    /// The most clients tracked at once (default [`DEFAULT_MAX_CLIENTS`]), banned or not.
    ///
    /// Memory: about 130 to 210 bytes per client under one small rule or policy, plus 8
    /// bytes per request time kept by sliding logs (at most 128 per rule; a rule of a larger
    /// count takes a fixed 272 bytes) and the length of custom keys (see [`MemoryStore`]).
    /// At the default, 26 to 42 MB under one small rule or policy.
    pub fn max_clients(mut self, n: usize) -> Self {
        self.max_clients = n.max(1);
        self
    }

    /// How many of the [`max_clients`](Self::max_clients) are kept for automatic bans
    /// (reported, punished with an end time, probes), which a flood of unbanned clients
    /// cannot evict (default a quarter of `max_clients`: 50,000). Past it, bans evict each
    /// other, the soonest-ending first. Lowered when needed so that, with the
    /// [pinned budget](Self::pinned_clients), it leaves unbanned clients at least an eighth
    /// of `max_clients`.
    ///
    /// Memory: part of `max_clients`; a client that is only banned costs about 120 bytes.
    pub fn ban_clients(mut self, n: usize) -> Self {
        self.ban_clients = Some(n);
        self
    }

    /// How many of the [`max_clients`](Self::max_clients) are kept for operator bans and
    /// blacklists, which are never evicted (default an eighth of `max_clients`: 25,000; at
    /// most half of it). Operator bans take it first and are never evicted even past it;
    /// blacklists take the rest, the longest-standing first, and those that do not fit
    /// compete in the [ban budget](Self::ban_clients) as the longest-ending bans, so that
    /// a flood of clients that each earn a blacklist costs bounded memory.
    ///
    /// Memory: part of `max_clients`; a blacklisted client costs about 200 bytes (its policy
    /// record is kept). Operator bans beyond this budget are the only clients that grow the
    /// store past `max_clients`.
    pub fn pinned_clients(mut self, n: usize) -> Self {
        self.pinned_clients = Some(n);
        self
    }

    /// The number of shards, rounded up to a power of two (default: 16 per CPU, at least 64),
    /// and lowered to keep at least 32 clients per shard.
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
        self.build_with(None)
    }

    /// Builds the store, with a journal in each shard that indexes at most `spilled` clients
    /// in all when `journal` is `Some(spilled)`.
    pub(crate) fn build_with(self, journal: Option<usize>) -> MemoryStore {
        let most_shards = (self.max_clients / MIN_PER_SHARD).max(1);
        // The largest power of two not above `most_shards`.
        let fitting = 1usize << (usize::BITS - 1 - most_shards.leading_zeros());
        let shards = self.shards.next_power_of_two().min(fitting);
        let shard_bits = shards.trailing_zeros();
        let per_shard = self.max_clients.div_ceil(shards).max(1);
        let share = |n: usize| n.div_ceil(shards);
        let pinned = share(self.pinned_clients.unwrap_or(self.max_clients / 8)).min(per_shard / 2);
        let reserve = (per_shard / 8).max(1);
        let bans = share(self.ban_clients.unwrap_or(self.max_clients / 4))
            .min(per_shard.saturating_sub(reserve + pinned));
        let budgets = Budgets {
            clients: per_shard,
            pinned,
            bans,
            spilled: share(journal.unwrap_or(0)),
        };
        MemoryStore {
            shards: (0..shards)
                .map(|_| {
                    Padded(Mutex::new(Shard {
                        table: HashTable::new(),
                        next_sweep: 0,
                        extra: 0,
                        journal: journal.map(|_| Box::default()),
                    }))
                })
                .collect(),
            hasher: RandomState::default(),
            shard_bits,
            budgets,
            sweep_ms: duration_millis(self.sweep_interval).max(1),
            backlog_full: AtomicBool::new(false),
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
            ban_clients: None,
            pinned_clients: None,
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

    /// The most clients this store tracks: [`max_clients`](MemoryStoreBuilder::max_clients)
    /// rounded up to a multiple of the number of shards. Only operator bans beyond the
    /// [pinned budget](MemoryStoreBuilder::pinned_clients) go past it.
    pub fn capacity(&self) -> usize {
        self.budgets.clients * self.shards.len()
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        let index = if self.shard_bits == 0 {
            0
        } else {
            (hash >> (64 - self.shard_bits)) as usize
        };
        lock(&self.shards[index].0)
    }

    /// The shard of `hash`, swept first when its sweep is due.
    fn swept_shard(&self, hash: u64, now_ms: u64) -> MutexGuard<'_, Shard> {
        let mut shard = self.shard(hash);
        if now_ms >= shard.next_sweep {
            shard.sweep(now_ms);
            shard.next_sweep = now_ms.saturating_add(self.sweep_ms);
        }
        shard
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
        let now_ms = now.as_millis();
        let mut shard = self.swept_shard(hash, now_ms);
        self.with_state_in(&mut shard, key, hash, now_ms, create, false, f)
    }

    /// Runs `f` on the client's state (creating it when `create`), and records the client
    /// as changed when `mark` and the shard has a journal.
    #[allow(clippy::too_many_arguments)]
    fn with_state_in<R>(
        &self,
        shard: &mut Shard,
        key: &ClientKey,
        hash: u64,
        now_ms: u64,
        create: bool,
        mark: bool,
        f: impl FnOnce(&mut ClientState) -> R,
    ) -> Option<R> {
        let result = if let Some(entry) = shard.table.find_mut(hash, |e| e.key == *key) {
            f(&mut entry.state)
        } else if create {
            let mut state = ClientState::new();
            let result = f(&mut state);
            self.insert(shard, hash, key, state, now_ms);
            result
        } else {
            return None;
        };
        if mark {
            if let Some(j) = shard.journal.as_deref_mut() {
                let hasher = &self.hasher;
                if j.dirty.find(hash, |k| k == key).is_none() {
                    j.dirty
                        .insert_unique(hash, key.clone(), |k| hasher.hash_one(k));
                }
            }
        }
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
        if shard.table.len() >= self.budgets.clients + shard.extra {
            let incoming = state.stake(Timestamp::from_millis(now_ms));
            shard.evict(now_ms, &self.budgets, incoming, &self.hasher);
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
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // The decision core does not panic; should a panic ever poison a shard, its data is
    // still consistent at every await-free step, so carry on rather than fail requests.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl StateAccess for MemoryStore {
    fn with_state<T, F>(
        &self,
        client: &ClientKey,
        now: Timestamp,
        create: bool,
        f: F,
    ) -> StoreFuture<Option<T>>
    where
        T: Send + 'static,
        F: Fn(&mut ClientState) -> T + Send + 'static,
    {
        StoreFuture::ready(Ok(MemoryStore::with_state(self, client, now, create, f)))
    }
}

impl Store for MemoryStore {
    state_access::state_changing_ops!();

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

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn tracked_clients(&self) -> Option<u64> {
        Some(self.len() as u64)
    }

    fn sweep(&self, now: Timestamp) -> StoreFuture<usize> {
        let swept = self
            .shards
            .iter()
            .map(|s| lock(&s.0).sweep(now.as_millis()))
            .sum();
        StoreFuture::ready(Ok(swept))
    }

    /// Scans every shard (one lock at a time): the memory store keeps no index of bans.
    fn bans(
        &self,
        after: Option<&BanCursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreFuture<BanPage> {
        let mut found = Vec::new();
        for shard in self.shards.iter() {
            let shard = lock(&shard.0);
            found.extend(
                shard
                    .table
                    .iter()
                    .filter_map(|e| BanEntry::of_state(e.key.clone(), &e.state, now)),
            );
        }
        StoreFuture::ready(Ok(page_of(found, after, limit)))
    }
}

#[cfg(test)]
mod tests;

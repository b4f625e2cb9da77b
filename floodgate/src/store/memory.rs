//! The in-memory store: sharded, bounded, swept.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hashbrown::HashTable;

use super::{Store, StoreFuture};
use crate::client::ClientKey;
use crate::clock::{duration_millis, Timestamp};
use crate::rules::BanRule;
use crate::state::{BanReason, ClientState, Decision, Plan, ReportOutcome, Stake};

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
/// in a table kept between 44 % and 88 % full: 65 to 130 bytes) plus its own heap: 40 bytes
/// per counting scope (the global rules, each route's specific rules, each policy), 8 bytes
/// per request time a sliding log keeps (up to the largest count among the scope's rules),
/// 88 bytes per policy record, and 48 bytes (plus 8 per unspent offence) for a client that
/// is banned or was reported. A client under one sliding-log rule of count 1 costs about
/// 120 bytes; under a policy, about 200; under a rule of count 100 with its log full, about
/// 900. A [custom key](crate::ClientKey::custom) adds its length plus 16 bytes (plus the
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

/// What a write-behind store (the SQLite store's [`Durability::Batched`] mode) must still
/// write, per shard.
///
/// [`Durability::Batched`]: crate::Durability::Batched
#[derive(Debug, Default)]
struct Journal {
    /// Clients changed since the last [`MemoryStore::take_journal`], once each: at most the
    /// shard's clients.
    dirty: HashTable<ClientKey>,
    /// Clients evicted while live, with their last state, oldest first: at most the shard's
    /// client budget between two rounds (past it, new clients wait for a round).
    evicted: Vec<Change>,
    /// Live clients whose state is only in the file (evicted, or there before this process
    /// started): a request from one of them loads its state before deciding. At most
    /// [`Budgets::spilled`] of them.
    spilled: HashTable<Spilled>,
    /// True once a client's live state went to the file without a record in `spilled` (the
    /// index was full): from then on, a client unknown here may be in the file, so it is
    /// looked up there before it is treated as new. Never cleared while the store runs.
    overflowed: bool,
    /// Evictions and sweeps so far: a load that ran while one happened may be stale.
    epoch: u64,
}

#[derive(Debug)]
struct Spilled {
    key: ClientKey,
    expires: u64,
    /// The journal's epoch when the client left memory.
    epoch: u64,
}

/// The outcome of [`MemoryStore::with_journal`] and [`MemoryStore::with_loaded`].
#[derive(Debug)]
pub(crate) enum Journaled<R> {
    /// `f` ran.
    Done(R),
    /// The client is unknown and `create` was false.
    Missing,
    /// The client's state may be in the file: load it, then call
    /// [`MemoryStore::with_loaded`] with this ticket.
    Load(LoadTicket),
    /// The client needs room that only a written round can free (the shard's journal or the
    /// store's write backlog is full): wait for a round, then ask again.
    Full,
}

/// When a load began, to tell a load that raced with an eviction of the same client.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoadTicket(u64);

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
    /// Memory: about 120 to 200 bytes per client under one small rule or policy, plus 8
    /// bytes per request time kept by sliding logs and the length of custom keys (see
    /// [`MemoryStore`]). At the default, 25 to 40 MB under one small rule or policy.
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

impl MemoryStore {
    /// Like `with_state`, for a journaled store: records the client as changed when `mark`,
    /// and asks for a load when the client's state may be only in the file.
    pub(crate) fn with_journal<R>(
        &self,
        key: &ClientKey,
        now: Timestamp,
        create: bool,
        mark: bool,
        f: impl FnOnce(&mut ClientState) -> R,
    ) -> Journaled<R> {
        let hash = self.hasher.hash_one(key);
        let now_ms = now.as_millis();
        let mut guard = self.swept_shard(hash, now_ms);
        let shard = &mut *guard;
        let Some(journal) = shard.journal.as_deref() else {
            return match self.with_state_in(shard, key, hash, now_ms, create, mark, f) {
                Some(r) => Journaled::Done(r),
                None => Journaled::Missing,
            };
        };
        if shard.table.find(hash, |e| e.key == *key).is_none() {
            if journal.overflowed || journal.spilled.find(hash, |s| s.key == *key).is_some() {
                return Journaled::Load(LoadTicket(journal.epoch));
            }
            if create && !self.has_room(shard, now_ms) {
                return Journaled::Full;
            }
        }
        match self.with_state_in(shard, key, hash, now_ms, create, mark, f) {
            Some(r) => Journaled::Done(r),
            None => Journaled::Missing,
        }
    }

    /// After a load that `with_journal` asked for (with `ticket`): puts the loaded state in
    /// place (unless a concurrent request loaded the client first), then runs `f` as
    /// `with_journal` does. Asks for the load again when an eviction or a sweep of the shard
    /// may have made the loaded state stale.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn with_loaded<R>(
        &self,
        key: &ClientKey,
        loaded: Option<ClientState>,
        ticket: LoadTicket,
        now: Timestamp,
        create: bool,
        mark: bool,
        f: impl FnOnce(&mut ClientState) -> R,
    ) -> Journaled<R> {
        let hash = self.hasher.hash_one(key);
        let now_ms = now.as_millis();
        let mut guard = self.shard(hash);
        let shard = &mut *guard;
        let in_table = shard.table.find(hash, |e| e.key == *key).is_some();
        if !in_table {
            let Some(j) = shard.journal.as_deref_mut() else {
                return Journaled::Missing;
            };
            // The client left memory (or the shard swept) after the load began: the file read
            // may predate its last state.
            let stale = match j.spilled.find(hash, |s| s.key == *key) {
                Some(s) => s.epoch > ticket.0,
                None => j.epoch > ticket.0,
            };
            if stale {
                return Journaled::Load(LoadTicket(j.epoch));
            }
            let live = loaded.filter(|s| s.expires_at() > now);
            if (live.is_some() || create) && !self.has_room(shard, now_ms) {
                return Journaled::Full;
            }
            if let Some(j) = shard.journal.as_deref_mut() {
                if let Ok(found) = j.spilled.find_entry(hash, |s| s.key == *key) {
                    found.remove();
                }
            }
            if let Some(state) = live {
                self.insert(shard, hash, key, state, now_ms);
            }
        }
        match self.with_state_in(shard, key, hash, now_ms, create, mark, f) {
            Some(r) => Journaled::Done(r),
            None => Journaled::Missing,
        }
    }

    /// Whether a new client may enter `shard` now: always in a store without a journal; in a
    /// journaled one, unless the write backlog is full, or the shard must evict and its
    /// journal already holds a shard's worth of evicted states.
    fn has_room(&self, shard: &mut Shard, now_ms: u64) -> bool {
        let Some(j) = shard.journal.as_deref() else {
            return true;
        };
        if self.backlog_full.load(Ordering::Relaxed) {
            return false;
        }
        let limit = self.budgets.clients + shard.extra;
        if shard.table.len() < limit || j.evicted.len() < self.budgets.clients {
            return true;
        }
        // Full, and the journal too: only expired clients may make room.
        shard.sweep(now_ms);
        shard.table.len() < limit
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

    /// The client's state, encoded, if it is here.
    pub(crate) fn snapshot(&self, key: &ClientKey) -> Option<Encoded> {
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash);
        shard
            .table
            .find(hash, |e| e.key == *key)
            .map(|e| encoded(&e.state))
    }

    /// Records that `key`'s live state (until `expires`) is in the file but not here. False
    /// when the shard's index is full: the shard then looks up every client it does not know.
    pub(crate) fn spill(&self, key: ClientKey, expires: u64) -> bool {
        let hash = self.hasher.hash_one(&key);
        let mut guard = self.shard(hash);
        let shard = &mut *guard;
        if shard.table.find(hash, |e| e.key == key).is_some() {
            return true;
        }
        match shard.journal.as_deref_mut() {
            Some(j) => spill_into(j, &self.hasher, self.budgets.spilled, hash, key, expires),
            None => true,
        }
    }

    /// Marks every journaled shard as not knowing all the clients in the file (a file with
    /// more rows than the index holds was opened).
    pub(crate) fn overflow_all(&self) {
        for padded in self.shards.iter() {
            if let Some(j) = lock(&padded.0).journal.as_deref_mut() {
                j.overflowed = true;
            }
        }
    }

    /// The most clients the journals index as spilled, in all.
    pub(crate) fn spill_capacity(&self) -> usize {
        self.budgets.spilled * self.shards.len()
    }

    /// The number of clients the journals index as spilled now.
    pub(crate) fn spilled_len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| lock(&s.0).journal.as_ref().map_or(0, |j| j.spilled.len()))
            .sum()
    }

    /// Opens or closes the journaled shards to new clients, as the write backlog fills and
    /// drains.
    pub(crate) fn set_backlog_full(&self, full: bool) {
        self.backlog_full.store(full, Ordering::Relaxed);
    }

    /// Takes every change recorded since the last call: the last state of each evicted
    /// client, oldest first, then the current state of each changed client (`None` when it
    /// is gone). A later change of the same client comes later.
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
            out.append(&mut j.evicted);
            let hasher = &self.hasher;
            for key in j.dirty.drain() {
                let hash = hasher.hash_one(&key);
                let state = shard
                    .table
                    .find(hash, |e| e.key == key)
                    .map(|e| encoded(&e.state));
                out.push((key, state));
            }
        }
        out
    }
}

/// Indexes `key` as spilled; false (and the journal marked as overflowed) when the index is
/// full.
fn spill_into(
    j: &mut Journal,
    hasher: &RandomState,
    cap: usize,
    hash: u64,
    key: ClientKey,
    expires: u64,
) -> bool {
    let epoch = j.epoch;
    let room = j.spilled.len() < cap;
    match j.spilled.find_mut(hash, |s| s.key == key) {
        Some(s) => {
            s.expires = expires;
            s.epoch = epoch;
            true
        }
        None if room => {
            j.spilled.insert_unique(
                hash,
                Spilled {
                    key,
                    expires,
                    epoch,
                },
                |s| hasher.hash_one(&s.key),
            );
            true
        }
        None => {
            j.overflowed = true;
            false
        }
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // The decision core does not panic; should a panic ever poison a shard, its data is
    // still consistent at every await-free step, so carry on rather than fail requests.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How one client ranks when a full shard makes room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Never evicted: an operator ban, or a blacklist within the pinned budget.
    Pinned,
    /// An automatic ban (or a blacklist past the pinned budget, as `until == NEVER`):
    /// `(until, last_seen)`, evicted smallest first, and only past the ban budget.
    Ban((u64, u64)),
    /// Unbanned: `(escalation at stake, last_seen)`, evicted smallest first.
    Unbanned((bool, u64)),
}

/// Picks the `n` smallest of a set of ranks: `take` says whether a rank is one of them.
/// Ties at the threshold are taken in the order they are offered, up to the count.
struct Cut<T> {
    threshold: Option<(T, usize)>,
}

impl<T: Ord + Copy> Cut<T> {
    fn new(ranks: &mut [T], n: usize) -> Self {
        let n = n.min(ranks.len());
        if n == 0 {
            return Cut { threshold: None };
        }
        let (_, &mut t, _) = ranks.select_nth_unstable(n - 1);
        let below = ranks.iter().filter(|r| **r < t).count();
        Cut {
            threshold: Some((t, n - below)),
        }
    }

    fn take(&mut self, rank: T) -> bool {
        match &mut self.threshold {
            Some((t, _)) if rank < *t => true,
            Some((t, equal)) if rank == *t && *equal > 0 => {
                *equal -= 1;
                true
            }
            _ => false,
        }
    }
}

impl Shard {
    fn sweep(&mut self, now: u64) -> usize {
        let before = self.table.len();
        self.table
            .retain(|e| e.state.expires_at().as_millis() > now);
        let swept = before - self.table.len();
        if let Some(j) = self.journal.as_deref_mut() {
            j.spilled.retain(|s| s.expires > now);
            if swept > 0 {
                j.epoch += 1;
            }
        }
        swept
    }

    /// Makes room for at least one client (and up to an eighth of the shard, so that the
    /// scan is amortised) that arrives with `incoming` at stake, following the eviction
    /// rules of [`MemoryStore`].
    fn evict(&mut self, now: u64, budgets: &Budgets, incoming: Stake, hasher: &RandomState) {
        self.sweep(now);
        if self.table.len() < budgets.clients + self.extra {
            return;
        }
        let now_ts = Timestamp::from_millis(now);

        // Which blacklists are pinned: what the operator bans leave of the pinned budget,
        // to the longest-standing (ties broken by the key's hash, so that the choice is the
        // same in every pass).
        let mut operators = 0;
        let mut blacklists: Vec<(u64, u64)> = Vec::new();
        for e in self.table.iter() {
            match e.state.stake(now_ts) {
                Stake::Operator => operators += 1,
                Stake::Blacklist { since } => blacklists.push((since, hasher.hash_one(&e.key))),
                _ => {}
            }
        }
        let pinned_room = budgets.pinned.saturating_sub(operators);
        // Operator bans past the pinned budget take no one's room: the shard grows by them.
        self.extra = operators.saturating_sub(budgets.pinned);
        let cap = budgets.clients + self.extra;
        let len = self.table.len();
        if len < cap {
            return;
        }
        let unpinned_from = (blacklists.len() > pinned_room).then(|| {
            let (_, &mut first, _) = blacklists.select_nth_unstable(pinned_room);
            first
        });
        let class = |e: &Entry| match e.state.stake(now_ts) {
            Stake::Counters => Class::Unbanned((false, e.state.last_seen)),
            Stake::Escalation => Class::Unbanned((true, e.state.last_seen)),
            Stake::Ban { until } => Class::Ban((until, e.state.last_seen)),
            Stake::Blacklist { since } => match unpinned_from {
                Some(first) if (since, hasher.hash_one(&e.key)) >= first => {
                    Class::Ban((u64::MAX, e.state.last_seen))
                }
                _ => Class::Pinned,
            },
            Stake::Operator => Class::Pinned,
        };

        let mut bans: Vec<(u64, u64)> = Vec::new();
        let mut unbanned: Vec<(bool, u64)> = Vec::new();
        for e in self.table.iter() {
            match class(e) {
                Class::Ban(r) => bans.push(r),
                Class::Unbanned(r) => unbanned.push(r),
                Class::Pinned => {}
            }
        }
        let incoming_ban = match incoming {
            Stake::Ban { .. } => true,
            Stake::Blacklist { .. } => blacklists.len() >= pinned_room,
            _ => false,
        };
        let excess = (bans.len() + usize::from(incoming_ban)).saturating_sub(budgets.bans);
        let to_free = len - cap + (budgets.clients / 8).max(1);
        let mut ban_cut = Cut::new(&mut bans, excess);
        let mut unbanned_cut = Cut::new(&mut unbanned, to_free.saturating_sub(excess));

        let mut journal = self.journal.as_deref_mut();
        if let Some(j) = journal.as_deref_mut() {
            j.epoch += 1;
        }
        self.table.retain(|e| {
            let evict = match class(e) {
                Class::Pinned => false,
                Class::Ban(r) => ban_cut.take(r),
                Class::Unbanned(r) => unbanned_cut.take(r),
            };
            if evict {
                // A journaled store writes the evicted client's last state, and loads it
                // back when the client returns.
                if let Some(j) = journal.as_deref_mut() {
                    let expires = e.state.expires_at().as_millis();
                    let hash = hasher.hash_one(&e.key);
                    if let Ok(dirty) = j.dirty.find_entry(hash, |k| *k == e.key) {
                        dirty.remove();
                    }
                    spill_into(j, hasher, budgets.spilled, hash, e.key.clone(), expires);
                    j.evicted.push((e.key.clone(), Some(encoded(&e.state))));
                }
            }
            !evict
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
    use crate::policy::{Policy, Punishment};
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

    const SECOND: Duration = Duration::from_secs(1);

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(1_000_000 + ms)
    }

    /// One shard of 64 clients: 8 pinned, 16 for bans, the rest (40) for unbanned clients.
    fn small_store() -> MemoryStore {
        let store = MemoryStore::builder().max_clients(64).shards(1).build();
        assert_eq!(store.shards.len(), 1);
        let b = store.budgets;
        assert_eq!((b.clients, b.pinned, b.bans), (64, 8, 16));
        store
    }

    fn log_plan() -> Arc<Plan> {
        Arc::new(Plan::new(
            [(
                ScopeId::GLOBAL,
                vec![Rule::new(5, Duration::from_secs(3600))],
            )],
            None,
        ))
    }

    /// One request per 10 s; the second within the window blocks; past `block_limit` blocks,
    /// `punishment`.
    fn policy_plan(block_limit: u32, punishment: Punishment) -> Arc<Plan> {
        let policy = Policy::new(1, Duration::from_secs(10))
            .block_limit(block_limit)
            .punishment(punishment);
        Arc::new(Plan::new([], Some((ScopeId::named("policy p"), policy))))
    }

    /// Clients `from..to` each make one counted request, a millisecond apart from `t`.
    fn flood(store: &MemoryStore, from: u32, to: u32, t: u64) {
        let plan = log_plan();
        for n in from..to {
            ready(store.check(&key(n), &plan, at(t + u64::from(n - from))));
            assert!(store.len() <= store.capacity());
        }
    }

    fn banned(store: &MemoryStore, n: u32, t: u64) -> bool {
        ready(store.state(&key(n), at(t))).is_some_and(|s| s.ban_at(at(t)).is_some())
    }

    /// Blacklists client `n` at `t` through a policy punishment.
    fn blacklist(store: &MemoryStore, n: u32, t: u64) {
        let plan = policy_plan(0, Punishment::Blacklist);
        assert!(ready(store.check(&key(n), &plan, at(t))).is_allowed());
        let d = ready(store.check(&key(n), &plan, at(t + 1)));
        assert!(matches!(d, Decision::Banned { until: None, .. }), "{d:?}");
    }

    #[test]
    fn floods_never_lift_blacklists_operator_bans_or_bans_within_their_budget() {
        let store = small_store();
        let report_bans = BanRule::new(1, SECOND, Duration::from_secs(86_400));
        ready(store.ban(&key(0), None, at(0)));
        ready(store.ban(&key(1), Some(at(86_400_000)), at(0)));
        blacklist(&store, 2, 0);
        ready(store.report(&key(3), &report_bans, at(0)));
        // Far more new clients than the store holds, many times over.
        flood(&store, 1_000, 20_000, 10);
        for n in 0..4 {
            assert!(
                banned(&store, n, 30_000),
                "client {n} was freed by the flood"
            );
        }
    }

    #[test]
    fn bans_past_their_budget_give_way_soonest_ending_first() {
        let store = small_store();
        // 30 reported bans, client n ending n hours from now: more than the budget of 16,
        // but they fit in the shard, so none is evicted yet.
        for n in 0..30u32 {
            let rule = BanRule::new(1, SECOND, Duration::from_secs(3_600 * u64::from(n + 1)));
            ready(store.report(&key(n), &rule, at(0)));
        }
        flood(&store, 1_000, 5_000, 10);
        let kept: Vec<u32> = (0..30).filter(|&n| banned(&store, n, 10_000)).collect();
        assert_eq!(
            kept,
            (14..30).collect::<Vec<_>>(),
            "the 16 longest-ending stay"
        );

        // New bans, all longer: each takes the place of the soonest-ending one.
        for n in 100..104u32 {
            let rule = BanRule::new(1, SECOND, Duration::from_secs(1_000_000));
            ready(store.report(&key(n), &rule, at(20_000)));
        }
        flood(&store, 5_000, 6_000, 30_000);
        let kept: Vec<u32> = (0..30)
            .chain(100..104)
            .filter(|&n| banned(&store, n, 40_000))
            .collect();
        assert_eq!(kept, (18..30).chain(100..104).collect::<Vec<_>>());
    }

    #[test]
    fn blacklists_past_the_pinned_budget_compete_as_the_longest_bans() {
        let store = small_store();
        // 40 blacklists, earned in turn: 8 fit in the pinned budget (the longest-standing),
        // 16 more in the ban budget, and the rest go first.
        for n in 0..40 {
            blacklist(&store, n, u64::from(n) * 100);
        }
        flood(&store, 1_000, 5_000, 10_000);
        let kept: Vec<u32> = (0..40).filter(|&n| banned(&store, n, 20_000)).collect();
        assert_eq!(kept.len(), 24, "{kept:?}");
        assert!(
            (0..8).all(|n| kept.contains(&n)),
            "the first 8 are pinned: {kept:?}"
        );
        // A flood of blacklisted clients stays bounded too.
        for n in 10_000..12_000 {
            blacklist(&store, n, 30_000 + u64::from(n));
            assert!(store.len() <= store.capacity());
        }
        assert!((0..8).all(|n| banned(&store, n, 50_000)));
    }

    #[test]
    fn operator_bans_are_never_evicted() {
        let store = small_store();
        for n in 0..100 {
            ready(store.ban(&key(n), None, at(u64::from(n))));
        }
        let plan = log_plan();
        for n in 1_000..3_000 {
            ready(store.check(&key(n), &plan, at(1_000 + u64::from(n))));
            // Only they go past the bound: the 92 beyond the pinned budget of 8.
            assert!(store.len() <= store.capacity() + 92, "{}", store.len());
        }
        assert!((0..100).all(|n| banned(&store, n, 10_000)));
        // Unbanned clients keep their room: the last 48 of the flood are all still counted.
        let counted = (2_952..3_000)
            .filter(|&n| ready(store.state(&key(n), at(10_000))).is_some())
            .count();
        assert_eq!(counted, 48);
    }

    #[test]
    fn escalation_outlives_plain_counters_in_a_flood() {
        let store = small_store();
        // Blocked once: one more block is punished with a ban.
        let plan = policy_plan(1, Punishment::Ban(Duration::from_secs(600)));
        let who = key(7);
        assert!(ready(store.check(&who, &plan, at(0))).is_allowed());
        assert!(matches!(
            ready(store.check(&who, &plan, at(1))),
            Decision::Limited { .. }
        ));
        // The least recently seen client of all, then a flood of fresh ones.
        flood(&store, 1_000, 20_000, 20_000);
        assert!(ready(store.check(&who, &plan, at(40_000))).is_allowed());
        let d = ready(store.check(&who, &plan, at(40_001)));
        assert!(
            matches!(d, Decision::Banned { .. }),
            "the block count was forgotten: {d:?}"
        );
    }

    #[test]
    fn plain_clients_go_least_recently_seen_first_and_expired_ones_before_all() {
        let store = small_store();
        let short = Arc::new(Plan::new(
            [(ScopeId::GLOBAL, vec![Rule::new(5, SECOND)])],
            None,
        ));
        // 20 clients that expire after a second, 44 that do not, seen in turn.
        for n in 0..20 {
            ready(store.check(&key(n), &short, at(0)));
        }
        flood(&store, 100, 144, 500);
        assert_eq!(store.len(), 64);
        // Full: the next client sweeps the 20 expired and evicts no one else.
        flood(&store, 200, 201, 2_000);
        assert_eq!(store.len(), 45);
        assert!((100..144).all(|n| ready(store.state(&key(n), at(3_000))).is_some()));
        // Full again: an eighth (8) goes, the least recently seen.
        flood(&store, 300, 320, 3_000);
        let gone: Vec<u32> = (100..144)
            .filter(|&n| ready(store.state(&key(n), at(4_000))).is_none())
            .collect();
        assert_eq!(gone, (100..108).collect::<Vec<_>>());
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
        use crate::state::{PolicyState, Rare, Scope};
        assert_eq!(std::mem::size_of::<Entry>(), 56);
        assert_eq!(std::mem::size_of::<(ScopeId, Scope)>(), 40);
        assert_eq!(std::mem::size_of::<PolicyState>(), 88);
        assert_eq!(std::mem::size_of::<Rare>(), 48);
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
}

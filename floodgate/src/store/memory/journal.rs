//! The write-behind journal of a [`MemoryStore`]: what the SQLite store's
//! [`Durability::Batched`](crate::Durability::Batched) mode must still write, the index of
//! clients whose live state is only in the file, and the loads that bring them back.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::sync::atomic::Ordering;

use hashbrown::HashTable;

use super::{lock, MemoryStore, Shard};
use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::state::ClientState;

/// What a write-behind store (the SQLite store's [`Durability::Batched`] mode) must still
/// write, per shard.
///
/// [`Durability::Batched`]: crate::Durability::Batched
#[derive(Debug, Default)]
pub(super) struct Journal {
    /// Clients changed since the last [`MemoryStore::take_journal`], once each: at most the
    /// shard's clients.
    pub(super) dirty: HashTable<ClientKey>,
    /// Clients evicted while live, with their last state, oldest first: at most the shard's
    /// client budget between two rounds (past it, new clients wait for a round).
    pub(super) evicted: Vec<Change>,
    /// Live clients whose state is only in the file (evicted, or there before this process
    /// started): a request from one of them loads its state before deciding. At most
    /// [`Budgets::spilled`](super::Budgets::spilled) of them.
    pub(super) spilled: HashTable<Spilled>,
    /// True once a client's live state went to the file without a record in `spilled` (the
    /// index was full): from then on, a client unknown here may be in the file, so it is
    /// looked up there before it is treated as new. Never cleared while the store runs.
    overflowed: bool,
    /// Evictions and sweeps so far: a load that ran while one happened may be stale.
    pub(super) epoch: u64,
}

#[derive(Debug)]
pub(super) struct Spilled {
    key: ClientKey,
    pub(super) expires: u64,
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

pub(super) fn encoded(state: &ClientState) -> Encoded {
    (state.encode(), state.expires_at().as_millis())
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
pub(super) fn spill_into(
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

//! [`Durability`]: what an answered decision of the SQLite store survives.

#[cfg(doc)]
use super::SqliteStore;
#[cfg(doc)]
use crate::MemoryStore;

/// How durable an answered decision is. Bans, blacklists, blocks and block counts are always
/// on disk (fsynced) before the request that caused them is answered, in every mode; the modes
/// differ only for plain counting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Every answered decision is fsynced (`PRAGMA synchronous = FULL`): nothing is lost even
    /// when the machine loses power. Costs one fsync per batch of decisions.
    Full,
    /// SQLite's `synchronous = NORMAL` in WAL mode for counting: an answered decision survives
    /// the process being killed (it is in the WAL, handed to the OS), but a power loss or an OS
    /// crash may roll back the last counts (clients then get a few more requests than their
    /// quota). A batch that bans, blacklists, blocks or changes a block count is committed with
    /// `synchronous = FULL`, so those are never lost. The default: counting is much faster on
    /// disks where fsync is slow.
    #[default]
    Normal,
    /// The fastest mode, for one process that owns the file. Client state is kept in this
    /// process's memory (a bounded [`MemoryStore`](crate::MemoryStore)) and decided there, on the request path,
    /// with no wait for the store thread; the store thread writes changed clients behind, in
    /// one transaction per round, a round every
    /// [`flush_interval`](super::SqliteStoreBuilder::flush_interval) (100 ms by default). A change
    /// to a ban, a blacklist, a block or a block count starts a round at once and is answered
    /// only once that round is committed with `synchronous = FULL`.
    ///
    /// The cost: the counts answered in the last round before a crash (the process killed,
    /// or the machine) may be lost, so a client may get that many more requests after a
    /// restart; a clean shutdown (the store dropped) writes everything. And the file is
    /// locked to this process for as long as the store is open (`locking_mode = EXCLUSIVE`):
    /// another process that opens it waits [`busy_timeout`](super::SqliteStoreBuilder::busy_timeout)
    /// and then gets a clear error. Fleets of processes on one file use
    /// [`Normal`](Durability::Normal) or [`Full`](Durability::Full), where every decision is
    /// made in the file.
    ///
    /// Clients beyond [`memory_clients`](super::SqliteStoreBuilder::memory_clients) are evicted from
    /// memory as the memory store does and stay in the file; a request from one of them
    /// (and the first request of each client after a restart) loads its state first.
    ///
    /// **Memory is bounded**, whatever the clients and whatever the file does, with `M` =
    /// [`memory_clients`](super::SqliteStoreBuilder::memory_clients) and `S` =
    /// [`spilled_clients`](super::SqliteStoreBuilder::spilled_clients) (default `M`):
    ///
    /// - the clients in memory: a [`MemoryStore`] of `M` clients (about 120 to 200 bytes
    ///   each under one small rule or policy; see its docs);
    /// - the index of clients whose state is only in the file: at most `S` records of 50
    ///   to 90 bytes (plus custom keys' length). Past it, a client unknown to memory is
    ///   looked up in the file before it is treated as new (one read on the store thread,
    ///   as in [`Normal`](Durability::Normal)), so a ban in the file is never missed. At
    ///   open, at most `S` rows are indexed; a file with more is handled the same way;
    /// - the changes waiting for a round: one per client (the newest), at most `M` changed
    ///   clients in memory and `M` evicted ones between two rounds;
    /// - when rounds fail (a full disk, a broken file), their changes are kept, one per
    ///   client, and written by the next round that succeeds; once `M` of them wait, the
    ///   memory store takes no new client: a request that needs one waits for the next
    ///   round and, when it fails too, fails with it (the
    ///   [`StoreFailure`](crate::StoreFailure) policy applies). Clients already in memory,
    ///   and so every ban and blacklist there, go on being decided. In all, at most about
    ///   `3 × M` changes (each a key and its encoded state, tens to hundreds of bytes).
    ///
    /// [`SqliteStore::batched_usage`] reports these figures.
    Batched,
}

impl Durability {
    pub(super) fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal | Durability::Batched => "NORMAL",
        }
    }
}

//! The SQLite store: client state in a database file that survives restarts and crashes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::bans::{BanCursor, BanPage};
use super::memory::{MemoryStore, DEFAULT_MAX_CLIENTS};
use super::state_access::{self, StateAccess};
use super::{Store, StoreFuture};
use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::error::{ConfigError, StoreError};
use crate::state::ClientState;

mod bans;
mod batched;
mod checkpoint;
mod durability;
mod rows;
mod schema;
mod thread;

pub use durability::Durability;

use batched::{spill_rows, Batched, BatchedRef};
use checkpoint::{start_checkpointer, CHECKPOINT_PAGES};
use rows::key_text;
use schema::{check_columns, migrate, path_error, validate_table};
use thread::{call_on, map, Job, Signal, Worker};

/// The table used when none is named.
pub const DEFAULT_TABLE: &str = "floodgate_clients";

/// The longest busy timeout SQLite takes (`sqlite3_busy_timeout` counts ms in a C `int`;
/// rusqlite panics past it).
const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// Client state in an SQLite database file, shared by every process that opens the file.
///
/// The embedded choice when state must survive a restart: bans, blacklists, block counts and
/// counters are all kept. Like FlaskFloodgate's `Sqlite3Handler(fp, table_name)`, but with
/// one connection, per-client rows, and errors reported.
///
/// # Examples
///
/// ```no_run
/// use floodgate::{Durability, Floodgate, SqliteStore};
///
/// # fn main() -> Result<(), floodgate::ConfigError> {
/// // Every decision made in the file: processes sharing the file share limits exactly.
/// let store = SqliteStore::builder("ip-data.db").table("IP_Data").open()?;
/// let floodgate = Floodgate::new().store(store);
///
/// // One process owns the file: decided in memory, written behind (much faster).
/// let store = SqliteStore::builder("single.db")
///     .durability(Durability::Batched)
///     .open()?;
/// # Ok(()) }
/// ```
///
/// # Design
///
/// This describes [`Durability::Normal`] and [`Durability::Full`]; see
/// [`Durability::Batched`] for the write-behind mode.
///
/// - **No database work on actix workers.** [`open`](SqliteStoreBuilder::open) starts one
///   thread that owns the connection. Requests send their work over a bounded channel and
///   await a oneshot reply; a full queue is a [`StoreError`] at once (the middleware then
///   follows its [`StoreFailure`](crate::StoreFailure) policy), never a blocked worker.
/// - **Atomic decisions, batched.** The thread takes every request waiting in the queue (up to
///   [`max_batch`](SqliteStoreBuilder::max_batch)) and decides them in one `BEGIN IMMEDIATE`
///   transaction: for each, read the client's row, run the decision core
///   ([`ClientState::check`] and friends), write the row back. Replies are sent only after
///   the commit, so an answered decision is stored. Several processes on one file serialize on
///   SQLite's write lock, so they share limits and bans exactly; nothing is cached between
///   transactions.
/// - **Schema**: one row per client (`key TEXT PRIMARY KEY, state BLOB, expires_at INTEGER`,
///   `WITHOUT ROWID`, no other index), the state in floodgate's compact binary
///   encoding ([`ClientState::encode`]). Migrations are keyed on `PRAGMA user_version` and
///   applied in one exclusive transaction at open. WAL journal, so readers never block.
/// - **Locks**: a file locked by another process is waited for at most
///   [`busy_timeout`](SqliteStoreBuilder::busy_timeout) (5 s by default), then the decision
///   fails with a clear error; never a hang.
/// - **Retention**: rows whose `expires_at` passed are deleted by [`Store::sweep`], and by
///   the store thread every [`sweep_interval`](SqliteStoreBuilder::sweep_interval) of the
///   floodgate clock, which walks the table in key order a thousand rows per transaction.
///   An expired row is never read back as live state.
/// - **Durability**: see [`Durability`]; bans, blacklists, blocks and block counts are fsynced
///   before they are answered in every mode.
/// - **Checkpoints** (copying the WAL back into the database) run on a second thread with its
///   own connection, so the store thread never waits for their fsyncs; should that thread
///   fall behind, the store thread checkpoints itself once the WAL passes 64 MiB.
/// - **Speed**: in [`Durability::Normal`] and [`Durability::Full`] every decision crosses to
///   the store thread and back, then reads and writes its row; [`Durability::Batched`]
///   decides in memory. The figures against the memory store, and the command that measures
///   them, are in
///   [BENCHMARKS.md](https://github.com/floodgate-rs/floodgate/blob/main/BENCHMARKS.md#sqlite-store-against-the-memory-store-benchessqlite-vs-memorysh).
pub struct SqliteStore {
    jobs: SyncSender<Job>,
    path: PathBuf,
    table: String,
    durability: Durability,
    /// The memory side of [`Durability::Batched`].
    batched: Option<Arc<Batched>>,
    /// The store thread, joined on drop in [`Durability::Batched`] mode (its last round).
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("table", &self.table)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

/// Settings of a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    table: String,
    busy_timeout: Duration,
    durability: Durability,
    queue: usize,
    max_batch: usize,
    sweep_interval: Duration,
    memory_clients: usize,
    spilled_clients: Option<usize>,
    flush_interval: Duration,
}

impl SqliteStoreBuilder {
    /// The table holding client rows (default [`DEFAULT_TABLE`], `floodgate_clients`;
    /// FlaskFloodgate's examples name theirs `IP_Data`). An ASCII letter or
    /// underscore, then letters, digits and underscores, at most 64 in all; checked by
    /// [`open`](Self::open), never put into SQL unchecked.
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// How long to wait for a lock held by another process before failing (default 5 s).
    ///
    /// SQLite counts this in milliseconds in a C `int`: anything longer than 2^31 - 1 ms
    /// (about 24.8 days, `Duration::MAX` included) waits that long.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout.min(MAX_BUSY_TIMEOUT);
        self
    }

    /// How durable plain counting is (default [`Durability::Normal`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The most requests waiting for the store thread (default 65 536); past it, decisions
    /// fail at once instead of queueing without bound.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue = n.max(1);
        self
    }

    /// The most decisions committed in one transaction (default 512).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// How often, on the floodgate clock, the store thread deletes expired rows (default 60 s).
    pub fn sweep_interval(mut self, every: Duration) -> Self {
        self.sweep_interval = every;
        self
    }

    /// With [`Durability::Batched`], how long plain counts may wait in memory before a round
    /// writes them (default 100 ms, of real time: this paces disk writes, not limits). A
    /// round also runs at once for a change that must be fsynced, and when the store is
    /// dropped. Ignored in the other modes.
    pub fn flush_interval(mut self, every: Duration) -> Self {
        self.flush_interval = every.max(Duration::from_millis(1));
        self
    }

    /// With [`Durability::Batched`], the most clients kept in memory (default
    /// [`DEFAULT_MAX_CLIENTS`]), evicted as the [`MemoryStore`] evicts (bans and clients
    /// with escalation at stake last); the others stay in the file. Ignored in the other
    /// modes.
    ///
    /// Memory: as a [`MemoryStore`] of this many clients (about 120 to 200 bytes each under
    /// one small rule or policy), plus the write-behind journal and backlog, at most about
    /// three changes per memory client (see [`Durability::Batched`]).
    pub fn memory_clients(mut self, n: usize) -> Self {
        self.memory_clients = n.max(1);
        self
    }

    /// With [`Durability::Batched`], the most clients indexed as "in the file, not in
    /// memory" (default: [`memory_clients`](Self::memory_clients)). Such a client's first
    /// request loads its state from the file. Past this bound (or when the file holds more
    /// rows than it at open), a client unknown to memory is looked up in the file before it
    /// is treated as new: correct, but each new client then costs a read on the store
    /// thread, as in [`Durability::Normal`]. A ban in the file is never missed either way.
    /// Ignored in the other modes.
    ///
    /// Memory: about 50 to 90 bytes per indexed client (a 40-byte record in a hash table),
    /// plus the length of custom keys.
    pub fn spilled_clients(mut self, n: usize) -> Self {
        self.spilled_clients = Some(n);
        self
    }

    /// Opens (creating when needed) the database and the table, migrates the schema, and
    /// starts the store thread.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the problem: `table` for an invalid table name or a table of
    /// that name that floodgate did not create; `path` for a path that cannot be opened or
    /// created, a file that is not an SQLite database, a database of a newer floodgate or of
    /// another application, or a file locked by another process past the busy timeout.
    pub fn open(self) -> Result<SqliteStore, ConfigError> {
        validate_table(&self.table)?;
        let shown = self.path.display().to_string();
        let err = |e: rusqlite::Error| path_error(&shown, &e, self.busy_timeout);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&self.path, flags).map_err(err)?;
        conn.busy_timeout(self.busy_timeout).map_err(err)?;
        let batched = self.durability == Durability::Batched;
        if batched {
            // Set before the file is first read, so that SQLite keeps the WAL index in this
            // process instead of shared memory, and never releases its locks.
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
                .map_err(err)?;
        }
        // Reads the header: fails here for a file that is not SQLite.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::warn!("floodgate: {shown} uses journal mode {mode}, not WAL");
        }
        conn.pragma_update(None, "synchronous", self.durability.pragma())
            .map_err(err)?;
        // A 4 MiB page cache (SQLite's default is 2): the b-tree's inner pages and the pages
        // being written stay in it, the rest is read from the OS's cache. Measured against
        // 64 MiB with the file mapped: 7 % more HTTP throughput, because SQLite scans its
        // whole page-cache hash table at the end of every transaction that splits a page,
        // and a big cache evicts the workers' data from the CPU caches.
        conn.pragma_update(None, "cache_size", -4_096)
            .map_err(err)?;
        // Checkpoint every 16 MiB of WAL rather than 4: a hot page rewritten by many batches
        // is copied back to the database once per checkpoint, so fewer checkpoints copy less.
        // (In the shared modes a checkpoint thread takes this over: `start_checkpointer`.)
        conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)
            .map_err(err)?;
        migrate(&mut conn, &self.table, &shown, self.busy_timeout)?;
        check_columns(&conn, &self.table).map_err(err)??;
        let batched = if batched {
            // Takes the write lock now and keeps it: other processes fail at open.
            conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
                .map_err(err)?;
            let mirror = MemoryStore::builder()
                .max_clients(self.memory_clients)
                .build_with(Some(self.spilled_clients.unwrap_or(self.memory_clients)));
            spill_rows(&conn, &self.table, &mirror).map_err(err)?;
            Some(Arc::new(Batched {
                mirror,
                waiters: Mutex::new(Vec::new()),
                latest: AtomicU64::new(0),
                unwritten: AtomicUsize::new(0),
            }))
        } else {
            None
        };

        let behind = match batched {
            None => Some(start_checkpointer(
                &mut conn,
                &self.path,
                flags,
                &shown,
                self.durability,
            )?),
            Some(_) => None,
        };

        let (jobs, rx) = mpsc::sync_channel(self.queue);
        let mut worker = Worker::new(conn, &self.table, &self);
        worker.wal_behind = behind;
        let shared = batched.clone();
        let thread = std::thread::Builder::new()
            .name("floodgate-sqlite".into())
            .spawn(move || match shared {
                Some(b) => worker.run_batched(rx, &b),
                None => worker.run(rx),
            })
            .map_err(|e| {
                ConfigError::invalid("path", format!("cannot start the store thread: {e}"))
            })?;
        Ok(SqliteStore {
            jobs,
            path: self.path,
            table: self.table,
            durability: self.durability,
            thread: batched.is_some().then_some(thread),
            batched,
        })
    }
}

impl SqliteStore {
    /// Opens the database at `path` with the default settings and table
    /// ([`DEFAULT_TABLE`], `floodgate_clients`).
    ///
    /// # Errors
    ///
    /// See [`SqliteStoreBuilder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, ConfigError> {
        SqliteStore::builder(path).open()
    }

    /// Settings for a store on the database at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_path_buf(),
            table: DEFAULT_TABLE.to_owned(),
            busy_timeout: Duration::from_secs(5),
            durability: Durability::default(),
            queue: 65_536,
            max_batch: 512,
            sweep_interval: Duration::from_secs(60),
            memory_clients: DEFAULT_MAX_CLIENTS,
            spilled_clients: None,
            flush_interval: Duration::from_millis(100),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The table holding client rows.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// With [`Durability::Batched`], what the store holds in memory now (see the bounds in
    /// [`Durability::Batched`]); `None` in the other modes.
    pub fn batched_usage(&self) -> Option<BatchedUsage> {
        let b = self.batched.as_ref()?;
        Some(BatchedUsage {
            memory_clients: b.mirror.len(),
            memory_capacity: b.mirror.capacity(),
            spilled_clients: b.mirror.spilled_len(),
            spilled_capacity: b.mirror.spill_capacity(),
            unwritten: b.unwritten.load(Ordering::Relaxed),
        })
    }
}

/// What a [`Durability::Batched`] store holds in memory ([`SqliteStore::batched_usage`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchedUsage {
    /// Clients whose state is in memory.
    pub memory_clients: usize,
    /// The most clients in memory (see [`MemoryStore::capacity`]).
    pub memory_capacity: usize,
    /// Clients indexed as having their state only in the file.
    pub spilled_clients: usize,
    /// The most clients that index holds.
    pub spilled_capacity: usize,
    /// Changes of clients that failed rounds left unwritten (0 while the file works).
    pub unwritten: usize,
}

impl SqliteStore {
    /// Sends `f` to the store thread; it runs inside the batch's transaction.
    fn call<T, F>(&self, now: Timestamp, f: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: FnMut(&Worker) -> rusqlite::Result<(Result<T, StoreError>, bool)> + Send + 'static,
    {
        call_on(&self.jobs, now, f)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            // The thread writes what is left, then stops.
            if self.jobs.send(Box::new(Signal { stop: true })).is_ok() {
                let _ = thread.join();
            }
        }
    }
}

impl StateAccess for SqliteStore {
    /// Runs `f` on `client`'s state (fresh when it has none and `create`), in one transaction
    /// (or in memory, with [`Durability::Batched`]).
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
        if let Some(b) = &self.batched {
            return self.batched(b, client, now, create, true, f);
        }
        let key = key_text(client);
        self.call(now, move |w| {
            w.with_state(&key, now.as_millis(), create, &f)
        })
    }
}

impl Store for SqliteStore {
    state_access::state_changing_ops!();

    fn state(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<Option<ClientState>> {
        if let Some(b) = &self.batched {
            let read = move |s: &mut ClientState| {
                let mut copy = s.clone();
                copy.prune(now);
                copy
            };
            return map(self.batched(b, client, now, false, false, read), move |s| {
                s.filter(|s| s.expires_at() > now)
            });
        }
        let key = key_text(client);
        self.call(now, move |w| Ok((w.read(&key, now.as_millis()), false)))
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }
    fn sweep(&self, now: Timestamp) -> StoreFuture<usize> {
        if let Some(b) = &self.batched {
            // Clients in memory, then rows of the file (after the round that deletes the
            // swept clients' rows); the count is of clients.
            let mut swept = b.mirror.sweep(now);
            let Some(Ok(n)) = swept.take_ready() else {
                return StoreFuture::ready(Err(StoreError::new("the memory sweep failed")));
            };
            BatchedRef { jobs: &self.jobs }.request_round();
            let rows = self.call(now, move |w| {
                Ok((
                    w.sweep(now.as_millis())
                        .map_err(|e| StoreError::new(w.describe(&e))),
                    false,
                ))
            });
            return map(rows, move |_| n);
        }
        self.call(now, move |w| {
            let n = w.sweep(now.as_millis())?;
            Ok((Ok(n), false))
        })
    }

    fn bans(
        &self,
        after: Option<&BanCursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreFuture<BanPage> {
        self.list_bans(after, limit, now)
    }
}

#[cfg(test)]
pub(super) mod tests;

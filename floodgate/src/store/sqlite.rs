//! The SQLite store: client state in a database file that survives restarts and crashes.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use super::memory::{Encoded, Journaled, LoadTicket, MemoryStore, DEFAULT_MAX_CLIENTS};
use super::{Store, StoreFuture};
use crate::client::ClientKey;
use crate::clock::{duration_millis, Timestamp};
use crate::error::{ConfigError, StoreError};
use crate::rules::BanRule;
use crate::state::{BanReason, ClientState, Decision, Plan, ReportOutcome, Scope};

/// The table used when none is named.
pub const DEFAULT_TABLE: &str = "floodgate_clients";

/// The longest busy timeout SQLite takes (`sqlite3_busy_timeout` counts ms in a C `int`;
/// rusqlite panics past it).
const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// The longest table name accepted.
const MAX_TABLE_LEN: usize = 64;

/// The table that lists floodgate's tables in a file, created by migration 1.
const REGISTRY: &str = "floodgate_tables";

/// Schema migrations, applied in order and never edited once shipped: migration `n` (from 1)
/// brings a file from `PRAGMA user_version = n - 1` to `n`. `file` runs once per file;
/// `table` runs for each floodgate table in the file, with `{table}` and `{index}` replaced
/// by the table's (validated, quoted) names. A table created later gets every `table` step.
struct Migration {
    file: &'static [&'static str],
    table: &'static [&'static str],
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        file: &["CREATE TABLE floodgate_tables (name TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID"],
        // WITHOUT ROWID: the key is the primary key, so a decision touches one b-tree (plus
        // the expiry index) instead of a rowid table and a key index.
        table: &[
            "CREATE TABLE {table} (key TEXT PRIMARY KEY NOT NULL, state BLOB NOT NULL, \
             expires_at INTEGER NOT NULL) WITHOUT ROWID",
            "CREATE INDEX {index} ON {table} (expires_at)",
        ],
    },
    // The expiry index cost every write a second b-tree update (a quarter of the store
    // thread's time) for the benefit of the sweep alone, which now walks the table in key
    // order, a chunk at a time.
    Migration {
        file: &[],
        table: &["DROP INDEX IF EXISTS {index}"],
    },
];

/// The columns a floodgate table has: name, declared type, part of the primary key.
const COLUMNS: &[(&str, &str, bool)] = &[
    ("key", "TEXT", true),
    ("state", "BLOB", false),
    ("expires_at", "INTEGER", false),
];

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
    /// process's memory (a bounded [`MemoryStore`]) and decided there, on the request path,
    /// with no wait for the store thread; the store thread writes changed clients behind, in
    /// one transaction per round, a round every
    /// [`flush_interval`](SqliteStoreBuilder::flush_interval) (100 ms by default). A change
    /// to a ban, a blacklist, a block or a block count starts a round at once and is answered
    /// only once that round is committed with `synchronous = FULL`.
    ///
    /// The cost: the counts answered in the last round before a crash (the process killed,
    /// or the machine) may be lost, so a client may get that many more requests after a
    /// restart; a clean shutdown (the store dropped) writes everything. And the file is
    /// locked to this process for as long as the store is open (`locking_mode = EXCLUSIVE`):
    /// another process that opens it waits [`busy_timeout`](SqliteStoreBuilder::busy_timeout)
    /// and then gets a clear error. Fleets of processes on one file use
    /// [`Normal`](Durability::Normal) or [`Full`](Durability::Full), where every decision is
    /// made in the file.
    ///
    /// Clients beyond [`memory_clients`](SqliteStoreBuilder::memory_clients) are evicted from
    /// memory as the memory store does and stay in the file; a request from one of them
    /// (and the first request of each client after a restart) loads its state first.
    ///
    /// **Memory is bounded**, whatever the clients and whatever the file does, with `M` =
    /// [`memory_clients`](SqliteStoreBuilder::memory_clients) and `S` =
    /// [`spilled_clients`](SqliteStoreBuilder::spilled_clients) (default `M`):
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
///   [BENCHMARKS.md](https://github.com/floodgate-rs/floodgate/blob/main/BENCHMARKS.md#sqlite-store-against-the-memory-store-testsbenchsqlite_vs_memorysh).
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

        if batched.is_none() {
            start_checkpointer(&mut conn, &self.path, flags, &shown, self.durability)?;
        }

        let (jobs, rx) = mpsc::sync_channel(self.queue);
        let worker = Worker::new(conn, &self.table, &self);
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

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal | Durability::Batched => "NORMAL",
        }
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

/// Sends `f` to the store thread on `jobs`; it runs inside the batch's transaction.
fn call_on<T, F>(jobs: &SyncSender<Job>, now: Timestamp, f: F) -> StoreFuture<T>
where
    T: Send + 'static,
    F: FnMut(&Worker) -> rusqlite::Result<(Result<T, StoreError>, bool)> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let job: Job = Box::new(Call {
        f,
        now: now.as_millis(),
        result: None,
        reply,
    });
    match jobs.try_send(job) {
        Ok(()) => StoreFuture::pending(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(StoreError::new("the SQLite store thread stopped")))
        }),
        Err(TrySendError::Full(_)) => StoreFuture::ready(Err(StoreError::new(
            "the SQLite store is overloaded: its queue is full",
        ))),
        Err(TrySendError::Disconnected(_)) => {
            StoreFuture::ready(Err(StoreError::new("the SQLite store thread stopped")))
        }
    }
}

/// Loads and round waits one [`Durability::Batched`] request may go through before it fails:
/// each retry follows an eviction racing with its load, or a round that freed no room.
const BATCHED_ATTEMPTS: usize = 8;

impl SqliteStore {
    /// [`Durability::Batched`]: runs `f` on the client's state in memory (loading it from the
    /// file first when it may be only there), records the change for the next round, and
    /// answers at once, or after the round when `f` changed a ban, a block or a block count.
    /// When the client needs room that only a round can free (the write backlog is full), it
    /// waits for the next round, and fails with it.
    fn batched<T, F>(
        &self,
        b: &Arc<Batched>,
        client: &ClientKey,
        now: Timestamp,
        create: bool,
        mark: bool,
        f: F,
    ) -> StoreFuture<Option<T>>
    where
        T: Send + 'static,
        F: Fn(&mut ClientState) -> T + Send + 'static,
    {
        b.note(now);
        let store = BatchedRef { jobs: &self.jobs };
        let outcome = b
            .mirror
            .with_journal(client, now, create, mark, |s| tracked(&f, s));
        let mut next = match store.answer(b, client, outcome) {
            Ok(answer) => return answer,
            Err(next) => next,
        };
        let (b, client, jobs) = (Arc::clone(b), client.clone(), self.jobs.clone());
        StoreFuture::pending(async move {
            let store = BatchedRef { jobs: &jobs };
            for _ in 0..BATCHED_ATTEMPTS {
                let outcome = match next {
                    Next::Load(ticket) => {
                        // Only in the file (or not known to be absent): load it on the store
                        // thread, then decide.
                        let (key, who) = (key_text(&client), client.clone());
                        let state = call_on(&jobs, now, move |w| {
                            Ok((w.read_batched(&who, &key, now.as_millis()), false))
                        })
                        .await?;
                        b.mirror
                            .with_loaded(&client, state, ticket, now, create, mark, |s| {
                                tracked(&f, s)
                            })
                    }
                    Next::Round => {
                        store.round_for(&b, &client).await?;
                        b.mirror
                            .with_journal(&client, now, create, mark, |s| tracked(&f, s))
                    }
                };
                match store.answer(&b, &client, outcome) {
                    Ok(answer) => return answer.await,
                    Err(again) => next = again,
                }
            }
            Err(StoreError::new(
                "the SQLite store could not load this client's state or make room for it \
                 (its write backlog is full)",
            ))
        })
    }
}

/// Runs `f`, and tells whether it changed the state's durable part (see [`durable_part`]).
fn tracked<T>(f: &impl Fn(&mut ClientState) -> T, s: &mut ClientState) -> (T, bool) {
    let before = durable_part(s);
    let result = f(s);
    (result, durable_part(s) != before)
}

/// What a [`Durability::Batched`] request must wait for before the memory store can answer.
#[derive(Clone, Copy, Debug)]
enum Next {
    /// A load of the client's state from the file.
    Load(LoadTicket),
    /// A round, to free room in the memory store.
    Round,
}

/// What the request path of [`Durability::Batched`] needs of the store: its queue.
struct BatchedRef<'a> {
    jobs: &'a SyncSender<Job>,
}

impl BatchedRef<'_> {
    /// The answer to an outcome of the memory store, or what must happen first.
    fn answer<T>(
        &self,
        b: &Arc<Batched>,
        client: &ClientKey,
        outcome: Journaled<(T, bool)>,
    ) -> Result<StoreFuture<Option<T>>, Next>
    where
        T: Send + 'static,
    {
        match outcome {
            Journaled::Load(ticket) => Err(Next::Load(ticket)),
            Journaled::Full => Err(Next::Round),
            Journaled::Missing => Ok(StoreFuture::ready(Ok(None))),
            // Written by the next round, at most a flush interval away.
            Journaled::Done((result, false)) => Ok(StoreFuture::ready(Ok(Some(result)))),
            Journaled::Done((result, true)) => {
                let round = self.round_for(b, client);
                Ok(StoreFuture::pending(async move {
                    round.await?;
                    Ok(Some(result))
                }))
            }
        }
    }

    /// Waits for the next round (written and fsynced), which also writes `client`'s state
    /// when it is in memory.
    fn round_for(
        &self,
        b: &Arc<Batched>,
        client: &ClientKey,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        lock(&b.waiters).push((client.clone(), tx));
        self.request_round();
        async move {
            match rx.await {
                Ok(answer) => answer,
                Err(_) => Err(StoreError::new("the SQLite store thread stopped")),
            }
        }
    }

    /// Wakes the store thread for a round now.
    fn request_round(&self) {
        // A full queue means the thread is busy: it runs a round after its current work.
        let _ = self.jobs.try_send(Box::new(Signal { stop: false }));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request waiting for a round to fsync its client's state.
type Waiter = (ClientKey, oneshot::Sender<Result<(), StoreError>>);

/// The memory side of [`Durability::Batched`], shared by the request path and the store
/// thread.
struct Batched {
    /// The clients' state: authoritative, since the file is locked to this process.
    mirror: MemoryStore,
    /// Requests waiting for their client's change to be fsynced.
    waiters: Mutex<Vec<Waiter>>,
    /// The latest floodgate time of a request (ms), for the store thread's sweeps.
    latest: AtomicU64,
    /// Changes that failed rounds left unwritten, as of the last round.
    unwritten: AtomicUsize,
}

impl Batched {
    fn note(&self, now: Timestamp) {
        let ms = now.as_millis();
        if ms > self.latest.load(Ordering::Relaxed) {
            self.latest.fetch_max(ms, Ordering::Relaxed);
        }
    }
}

/// WAL pages that start a checkpoint on the checkpoint thread.
const CHECKPOINT_PAGES: i32 = 4_096;

/// WAL pages past which the store thread checkpoints itself, should the checkpoint thread
/// fall behind (its checkpoints never block the writer, so they may not catch up under load).
const CHECKPOINT_BACKSTOP_PAGES: i32 = 4 * CHECKPOINT_PAGES;

/// Moves WAL checkpoints (copying pages back into the database, and their fsyncs) off the
/// store thread, whose every decision a request waits for: a thread with its own connection
/// runs them when the WAL grows past [`CHECKPOINT_PAGES`], in SQLite's `PASSIVE` mode, which
/// never blocks the store thread. Measured over HTTP: the CPU left idle while requests wait
/// for the store thread went from 13 % to 8.5 %, throughput up 2-9 %. Replaces SQLite's
/// automatic checkpoints on `conn`.
fn start_checkpointer(
    conn: &mut Connection,
    path: &Path,
    flags: OpenFlags,
    shown: &str,
    durability: Durability,
) -> Result<(), ConfigError> {
    let err = |e: rusqlite::Error| path_error(shown, &e, Duration::ZERO);
    let ckpt = Connection::open_with_flags(path, flags).map_err(err)?;
    ckpt.pragma_update(None, "synchronous", durability.pragma())
        .map_err(err)?;
    let (tx, rx) = mpsc::sync_channel::<()>(1);
    let shown_owned = shown.to_owned();
    std::thread::Builder::new()
        .name("floodgate-sqlite-checkpoint".into())
        .spawn(move || {
            // Ends when the store thread's connection (holding `tx`) is dropped.
            while rx.recv().is_ok() {
                let done =
                    ckpt.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
                if let Err(e) = done {
                    log::warn!("floodgate: checkpoint of {shown_owned} failed: {e}");
                }
            }
        })
        .map_err(|e| {
            ConfigError::invalid("path", format!("cannot start the checkpoint thread: {e}"))
        })?;
    conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
        if pages >= CHECKPOINT_BACKSTOP_PAGES {
            // Busy when the checkpoint thread is at work: then it is its job.
            let _ = wal.checkpoint(); // PASSIVE
        } else if pages >= CHECKPOINT_PAGES {
            // Full: a checkpoint is already asked for.
            let _ = tx.try_send(());
        }
        // An error here would fail the COMMIT that already happened: never return one.
        Ok(())
    }))
    .map_err(err)
}

/// Records the rows of `table` as spilled, up to the index's bound: their state is loaded on
/// the client's first request. A file with more rows marks every shard as overflowed, so that
/// clients it does not index are looked up in the file.
fn spill_rows(conn: &Connection, table: &str, mirror: &MemoryStore) -> rusqlite::Result<()> {
    let cap = mirror.spill_capacity();
    let mut stmt = conn.prepare(&format!("SELECT key, expires_at FROM \"{table}\" LIMIT ?1"))?;
    let mut rows = stmt.query([i64::try_from(cap.saturating_add(1)).unwrap_or(i64::MAX)])?;
    let mut seen = 0;
    while let Some(row) = rows.next()? {
        seen += 1;
        if seen > cap {
            mirror.overflow_all();
            break;
        }
        let text: String = row.get(0)?;
        let expires: i64 = row.get(1)?;
        if let Some(key) = key_from_text(&text) {
            // False when this key's shard is full: that shard then overflowed.
            let _ = mirror.spill(key, u64::try_from(expires).unwrap_or(0));
        }
    }
    Ok(())
}

/// The inverse of [`key_text`]; `None` for a key no floodgate wrote.
fn key_from_text(text: &str) -> Option<ClientKey> {
    if let Some(custom) = text.strip_prefix("custom:") {
        return Some(ClientKey::custom(custom));
    }
    match text.split_once('/') {
        Some((ip, prefix)) => {
            let ip: IpAddr = ip.parse().ok()?;
            let prefix: u8 = prefix.parse().ok()?;
            Some(ClientKey::from_ip(ip, prefix))
        }
        None => {
            let ip: IpAddr = text.parse().ok()?;
            Some(ClientKey::from_ip(ip, 128))
        }
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

fn map<T: Send + 'static, U>(
    f: StoreFuture<T>,
    g: impl FnOnce(T) -> U + Send + 'static,
) -> StoreFuture<U> {
    let mut f = f;
    match f.take_ready() {
        Some(r) => StoreFuture::ready(r.map(g)),
        None => StoreFuture::pending(async move { f.await.map(g) }),
    }
}

impl Store for SqliteStore {
    fn check(&self, client: &ClientKey, plan: &Arc<Plan>, now: Timestamp) -> StoreFuture<Decision> {
        let plan = Arc::clone(plan);
        let create = plan.counts();
        map(
            self.with_state(client, now, create, move |s| s.check(&plan, now)),
            |d| d.unwrap_or(Decision::Allowed { quota: None }),
        )
    }

    fn report(
        &self,
        client: &ClientKey,
        rule: &BanRule,
        now: Timestamp,
    ) -> StoreFuture<ReportOutcome> {
        let rule = *rule;
        map(
            self.with_state(client, now, true, move |s| s.report(&rule, now)),
            |o| o.unwrap_or(ReportOutcome::Recorded { offences: 0 }),
        )
    }

    fn ban(&self, client: &ClientKey, until: Option<Timestamp>, now: Timestamp) -> StoreFuture<()> {
        map(
            self.with_state(client, now, true, move |s| s.ban(until, now)),
            |_| (),
        )
    }

    fn extend_ban(
        &self,
        client: &ClientKey,
        until: Option<Timestamp>,
        reason: BanReason,
        now: Timestamp,
    ) -> StoreFuture<()> {
        map(
            self.with_state(client, now, true, move |s| s.extend_ban(until, reason, now)),
            |_| (),
        )
    }

    fn unban(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<bool> {
        map(
            self.with_state(client, now, false, move |s| s.unban(now)),
            |was| was.unwrap_or(false),
        )
    }

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
}

/// A client's row key: the address (`203.0.113.7`, `2001:db8::/64`), or `custom:` and the
/// custom key, so that a custom key never collides with an address.
fn key_text(client: &ClientKey) -> String {
    match client.ip() {
        // The common case without core::fmt: four numbers and three dots.
        Some(IpAddr::V4(v4)) => {
            let mut text = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                if octet >= 100 {
                    text.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    text.push(char::from(b'0' + octet / 10 % 10));
                }
                text.push(char::from(b'0' + octet % 10));
            }
            text
        }
        Some(IpAddr::V6(_)) => client.to_string(),
        None => format!("custom:{client}"),
    }
}

/// Milliseconds as an SQLite integer (`i64`), saturating: "never" stays the largest value.
/// An `expires_at` of `i64::MAX` so stands for any time from 2^63 - 1 ms on.
fn sql_time(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// `now` for comparing with stored `expires_at` values (`expires_at <= now`: expired):
/// below `i64::MAX`, so that a row saturated at `i64::MAX` (kept forever, or until some
/// time past 2^63 ms) is never taken for expired by SQL. The decoded state, compared in
/// `u64`, is the authority on the rest.
fn sql_now(now: u64) -> i64 {
    sql_time(now).min(i64::MAX - 1)
}

fn validate_table(name: &str) -> Result<(), ConfigError> {
    let mut chars = name.chars();
    let problem = match chars.next() {
        None => Some("is empty".to_owned()),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            Some("must start with an ASCII letter or an underscore".to_owned())
        }
        _ if name.len() > MAX_TABLE_LEN => {
            Some(format!("is longer than {MAX_TABLE_LEN} characters"))
        }
        _ if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Some("may hold only ASCII letters, digits and underscores".to_owned())
        }
        _ if name.to_ascii_lowercase().starts_with("sqlite_") => {
            Some("must not start with sqlite_ (reserved by SQLite)".to_owned())
        }
        _ if name.eq_ignore_ascii_case(REGISTRY) => Some(format!("{REGISTRY} is floodgate's own")),
        _ => None,
    };
    match problem {
        Some(p) => {
            let shown: String = name.chars().take(80).collect();
            Err(ConfigError::invalid(
                "table",
                format!("table name {shown:?} {p}"),
            ))
        }
        None => Ok(()),
    }
}

fn path_error(path: &str, e: &rusqlite::Error, busy: Duration) -> ConfigError {
    let message = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            format!("{path} is not an SQLite database (nor a floodgate one)")
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            format!("{path} is locked by another process (waited {busy:?}): {e}")
        }
        Some(ErrorCode::CannotOpen) => format!("cannot open or create {path}: {e}"),
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
            format!("{path} is not writable: {e}")
        }
        _ => format!("cannot use {path}: {e}"),
    };
    ConfigError::invalid("path", message)
}

/// Fills a migration step for one table. `table` is validated, so quoting it is enough.
fn fill(step: &str, table: &str) -> String {
    step.replace("{table}", &format!("\"{table}\""))
        .replace("{index}", &format!("\"{table}_expires_at\""))
}

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
}

/// Applies the migrations the file lacks and creates the table, in one exclusive transaction.
fn migrate(
    conn: &mut Connection,
    table: &str,
    path: &str,
    busy: Duration,
) -> Result<(), ConfigError> {
    let err = |e: rusqlite::Error| path_error(path, &e, busy);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(err)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    let latest = MIGRATIONS.len() as i64;
    let has_registry = table_exists(&tx, REGISTRY).map_err(err)?;
    if (version > 0) != has_registry {
        return Err(ConfigError::invalid(
            "path",
            format!(
                "{path} is not a floodgate database (user_version {version}, {} {REGISTRY} \
                 table); use another file",
                if has_registry { "a" } else { "no" }
            ),
        ));
    }
    if version > latest {
        return Err(ConfigError::invalid(
            "path",
            format!(
                "{path} has floodgate schema version {version}, newer than this floodgate \
                 knows ({latest}); upgrade floodgate"
            ),
        ));
    }
    let mut tables: Vec<String> = Vec::new();
    if has_registry {
        let mut stmt = tx
            .prepare("SELECT name FROM floodgate_tables")
            .map_err(err)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(err)?;
        for row in rows {
            let name: String = row.map_err(err)?;
            // Names were validated when they were registered; check again rather than trust
            // the file.
            if validate_table(&name).is_ok() {
                tables.push(name);
            }
        }
    }
    for m in &MIGRATIONS[version as usize..] {
        for step in m.file {
            tx.execute_batch(step).map_err(err)?;
        }
        for t in &tables {
            for step in m.table {
                tx.execute_batch(&fill(step, t)).map_err(err)?;
            }
        }
    }
    if version < latest {
        tx.pragma_update(None, "user_version", latest)
            .map_err(err)?;
    }
    if !tables.iter().any(|t| t.eq_ignore_ascii_case(table)) {
        if table_exists(&tx, table).map_err(err)? {
            return Err(ConfigError::invalid(
                "table",
                format!(
                    "{path} already has a table {table:?} that floodgate did not create; \
                     name another table"
                ),
            ));
        }
        for m in MIGRATIONS {
            for step in m.table {
                tx.execute_batch(&fill(step, table)).map_err(err)?;
            }
        }
        tx.execute("INSERT INTO floodgate_tables (name) VALUES (?1)", [table])
            .map_err(err)?;
    }
    tx.commit().map_err(err)
}

/// Checks that `table` has floodgate's columns.
fn check_columns(conn: &Connection, table: &str) -> rusqlite::Result<Result<(), ConfigError>> {
    let mut stmt = conn.prepare("SELECT name, type, pk FROM pragma_table_info(?1)")?;
    let found: Vec<(String, String, bool)> = stmt
        .query_map([table], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? > 0))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let expected = COLUMNS
        .iter()
        .map(|(n, t, pk)| ((*n).to_owned(), (*t).to_owned(), *pk))
        .collect::<Vec<_>>();
    let same = found.len() == expected.len()
        && found.iter().zip(&expected).all(|(f, e)| {
            f.0.eq_ignore_ascii_case(&e.0) && f.1.eq_ignore_ascii_case(&e.1) && f.2 == e.2
        });
    if same {
        return Ok(Ok(()));
    }
    let names: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
    Ok(Err(ConfigError::invalid(
        "table",
        format!(
            "table {table:?} has columns {names:?}, not floodgate's (key, state, expires_at); \
             name another table"
        ),
    )))
}

/// Work for the store thread: run inside a transaction (again, when the batch is redone with
/// full durability), then answer once the transaction is over.
trait Task: Send {
    /// The floodgate time of the request.
    fn now(&self) -> u64;
    /// Does the work; true when it changed a ban, a block or a block count.
    fn run(&mut self, w: &Worker) -> rusqlite::Result<bool>;
    /// Sends the answer, or `failure` when the transaction did not commit.
    fn finish(self: Box<Self>, failure: Option<&str>);
    /// True for the last job the thread runs.
    fn stops(&self) -> bool {
        false
    }
    /// True for a job that only wakes the thread ([`Signal`]).
    fn signal(&self) -> bool {
        false
    }
}

type Job = Box<dyn Task>;

/// Wakes the store thread of [`Durability::Batched`]: for a round now, or for a last round
/// before it stops (`stop`).
struct Signal {
    stop: bool,
}

impl Task for Signal {
    fn now(&self) -> u64 {
        0
    }
    fn run(&mut self, _: &Worker) -> rusqlite::Result<bool> {
        Ok(false)
    }
    fn finish(self: Box<Self>, _: Option<&str>) {}
    fn stops(&self) -> bool {
        self.stop
    }
    fn signal(&self) -> bool {
        true
    }
}

struct Call<T, F> {
    f: F,
    now: u64,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Task for Call<T, F>
where
    T: Send,
    F: FnMut(&Worker) -> rusqlite::Result<(Result<T, StoreError>, bool)> + Send,
{
    fn now(&self) -> u64 {
        self.now
    }

    fn run(&mut self, w: &Worker) -> rusqlite::Result<bool> {
        let (result, durable) = (self.f)(w)?;
        self.result = Some(result);
        Ok(durable)
    }

    fn finish(self: Box<Self>, failure: Option<&str>) {
        let result = match (failure, self.result) {
            (None, Some(result)) => result,
            (Some(msg), _) => Err(StoreError::new(msg.to_owned())),
            (None, None) => Err(StoreError::new("the SQLite store did not run the request")),
        };
        // The requester may have gone away; nothing to do then.
        let _ = self.reply.send(result);
    }
}

/// The store thread: owns the connection.
struct Worker {
    conn: Connection,
    select: String,
    upsert: String,
    delete: String,
    sweep_all: String,
    sweep_chunk: String,
    /// Where the periodic sweep goes on: the last key it looked at (empty: from the start).
    sweep_cursor: String,
    durability: Durability,
    max_batch: usize,
    busy: Duration,
    sweep_ms: u64,
    next_sweep: u64,
    flush_interval: Duration,
    /// [`Durability::Batched`]: the newest change of each client that no round has written
    /// yet (rounds failed), written again by the next round. Loads read it before the file.
    pending: HashMap<ClientKey, Option<Encoded>>,
    /// [`Durability::Batched`]: past this many pending changes, the memory store takes no
    /// new client until a round succeeds.
    backlog: usize,
}

/// Rows looked at per periodic sweep step, so that a sweep never holds the lock for long.
const SWEEP_CHUNK: usize = 1_000;

impl Worker {
    fn new(conn: Connection, table: &str, b: &SqliteStoreBuilder) -> Worker {
        let t = format!("\"{table}\"");
        Worker {
            conn,
            select: format!("SELECT state, expires_at FROM {t} WHERE key = ?1"),
            // A table without a secondary index: REPLACE overwrites the row in one seek,
            // where an upsert seeks for the conflict and again for the update.
            upsert: format!("REPLACE INTO {t} (key, state, expires_at) VALUES (?1, ?2, ?3)"),
            delete: format!("DELETE FROM {t} WHERE key = ?1"),
            sweep_all: format!("DELETE FROM {t} WHERE expires_at <= ?1"),
            sweep_chunk: format!(
                "SELECT key, expires_at FROM {t} WHERE key > ?1 ORDER BY key LIMIT {SWEEP_CHUNK}"
            ),
            sweep_cursor: String::new(),
            flush_interval: b.flush_interval,
            durability: b.durability,
            max_batch: b.max_batch,
            busy: b.busy_timeout,
            sweep_ms: duration_millis(b.sweep_interval).max(1),
            next_sweep: 0,
            pending: HashMap::new(),
            backlog: b.memory_clients,
        }
    }

    fn run(mut self, rx: Receiver<Job>) {
        let mut batch: Vec<Job> = Vec::with_capacity(self.max_batch);
        // Ends when every sender (the store) is dropped.
        while let Ok(first) = rx.recv() {
            batch.push(first);
            self.fill(&mut batch, &rx);
            let latest = batch.iter().map(|j| j.now()).max().unwrap_or(0);
            self.settle(&mut batch, Worker::execute);
            if latest >= self.next_sweep {
                self.sweep_step(latest);
            }
        }
    }

    /// Adds the jobs waiting in the queue to `batch`, up to `max_batch` jobs.
    fn fill(&self, batch: &mut Vec<Job>, rx: &Receiver<Job>) {
        while batch.len() < self.max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
    }

    /// Runs the batch with `run`, then answers each job: its result, or the failure of the
    /// batch (rolled back) for all of them.
    fn settle(
        &mut self,
        batch: &mut Vec<Job>,
        run: impl FnOnce(&mut Worker, &mut [Job]) -> rusqlite::Result<()>,
    ) {
        let outcome = catch_unwind(AssertUnwindSafe(|| run(self, batch)));
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(self.describe(&e)),
            Err(_) => Some("the SQLite store panicked on this batch".to_owned()),
        };
        if failure.is_some() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if let Some(f) = &failure {
            log::warn!("floodgate: SQLite batch of {} failed: {f}", batch.len());
        }
        for job in batch.drain(..) {
            job.finish(failure.as_deref());
        }
    }

    /// The store thread of [`Durability::Batched`]: each time it wakes, a round (every
    /// change recorded in memory, in one transaction), then the jobs that need the file
    /// (loads of spilled clients, sweeps).
    fn run_batched(mut self, rx: Receiver<Job>, b: &Batched) {
        let mut batch: Vec<Job> = Vec::with_capacity(self.max_batch);
        loop {
            let stop = match rx.recv_timeout(self.flush_interval) {
                Err(mpsc::RecvTimeoutError::Timeout) => false,
                Ok(first) => {
                    batch.push(first);
                    self.fill(&mut batch, &rx);
                    let stop = batch.iter().any(|j| j.stops());
                    batch.retain(|j| !j.signal());
                    stop
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => true,
            };
            self.round(b);
            if !batch.is_empty() {
                self.settle(&mut batch, |w, jobs| w.transaction(jobs, true).map(|_| ()));
            }
            let latest = b.latest.load(Ordering::Relaxed);
            if latest >= self.next_sweep && latest > 0 {
                self.sweep_step(latest);
            }
            if stop {
                // What was recorded since the round above.
                self.round(b);
                if !self.pending.is_empty() {
                    log::warn!(
                        "floodgate: SQLite store stopped with {} client changes unwritten",
                        self.pending.len()
                    );
                }
                return;
            }
        }
    }

    /// One round of [`Durability::Batched`]: writes every change recorded in memory (and
    /// those of failed rounds) in one transaction, fsynced when one of them must be, then
    /// answers the requests waiting for it.
    ///
    /// Changes are kept one per client, the newest, so that a file that stays broken costs
    /// memory bounded by the clients changed meanwhile; and once they pass
    /// [`backlog`](Worker::backlog), the memory store takes no new client (its requests
    /// wait for a round and fail with it) until a round succeeds.
    fn round(&mut self, b: &Batched) {
        let waiters = std::mem::take(&mut *lock(&b.waiters));
        // In order: a later change of a client replaces an earlier one.
        for (client, change) in b.mirror.take_journal() {
            self.pending.insert(client, change);
        }
        if self.pending.is_empty() && waiters.is_empty() {
            return;
        }
        // Each waiting client's state is written (again) in this fsynced transaction, so that
        // the fsync covers it even when an earlier round wrote it without one.
        let durable = !waiters.is_empty();
        for (client, _) in &waiters {
            if let Some(state) = b.mirror.snapshot(client) {
                self.pending.insert(client.clone(), Some(state));
            }
        }
        let now = b.latest.load(Ordering::Relaxed);
        let outcome = catch_unwind(AssertUnwindSafe(|| self.write(now, durable)));
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(self.describe(&e)),
            Err(_) => Some("the SQLite store panicked writing a round".to_owned()),
        };
        if let Some(f) = &failure {
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            if durable {
                let _ = self.conn.execute_batch("PRAGMA synchronous = NORMAL");
            }
            log::warn!(
                "floodgate: SQLite round of {} client changes failed (kept for the next): {f}",
                self.pending.len()
            );
        } else {
            self.pending.clear();
        }
        b.mirror
            .set_backlog_full(self.pending.len() >= self.backlog);
        b.unwritten.store(self.pending.len(), Ordering::Relaxed);
        for (_, w) in waiters {
            let answer = match &failure {
                None => Ok(()),
                Some(f) => Err(StoreError::new(f.clone())),
            };
            let _ = w.send(answer);
        }
    }

    /// [`Durability::Batched`]: the live state of `client` (row `key`): its pending change
    /// when a failed round left one (newer than the file), else the file's row.
    fn read_batched(
        &self,
        client: &ClientKey,
        key: &str,
        now: u64,
    ) -> Result<Option<ClientState>, StoreError> {
        match self.pending.get(client) {
            Some(Some((bytes, _))) => decode_live(key, bytes, now),
            Some(None) => Ok(None),
            None => self.read(key, now),
        }
    }

    /// Writes the pending changes in one transaction: each client's row replaced, or deleted
    /// when the client is gone or its state has expired by `now`.
    fn write(&mut self, now: u64, durable: bool) -> rusqlite::Result<()> {
        if durable {
            self.conn.execute_batch("PRAGMA synchronous = FULL")?;
        }
        // In key order: neighbouring rows share pages, so the b-tree is walked once.
        let mut rows: Vec<(String, &Option<Encoded>)> =
            self.pending.iter().map(|(c, s)| (key_text(c), s)).collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        {
            let mut upsert = self.conn.prepare_cached(&self.upsert)?;
            let mut delete = self.conn.prepare_cached(&self.delete)?;
            for (key, state) in rows {
                match state {
                    Some((bytes, expires)) if *expires > now => {
                        upsert.execute(rusqlite::params![key, bytes, sql_time(*expires)])?;
                    }
                    _ => {
                        delete.execute([key])?;
                    }
                }
            }
        }
        self.conn.execute_batch("COMMIT")?;
        if durable {
            self.conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        }
        Ok(())
    }

    fn describe(&self, e: &rusqlite::Error) -> String {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => format!(
                "the database is locked by another process (waited {:?}): {e}",
                self.busy
            ),
            _ => format!("SQLite error: {e}"),
        }
    }

    /// Decides a batch in one transaction. With [`Durability::Normal`], a batch that changed a
    /// ban, a block or a block count is rolled back and decided again under
    /// `synchronous = FULL` (which SQLite cannot change inside a transaction).
    fn execute(&mut self, batch: &mut [Job]) -> rusqlite::Result<()> {
        let durable = self.transaction(batch, false)?;
        if durable && self.durability == Durability::Normal {
            self.conn.execute_batch("PRAGMA synchronous = FULL")?;
            let again = self.transaction(batch, true);
            let restore = self.conn.execute_batch("PRAGMA synchronous = NORMAL");
            again?;
            restore?;
        }
        Ok(())
    }

    /// Runs the batch in a `BEGIN IMMEDIATE` transaction; returns whether it changed a ban,
    /// a block or a block count. Commits unless it did, in `Normal` mode, on the first pass.
    fn transaction(&mut self, batch: &mut [Job], redo: bool) -> rusqlite::Result<bool> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut durable = false;
        for job in batch.iter_mut() {
            durable |= job.run(self)?;
        }
        if durable && !redo && self.durability == Durability::Normal {
            self.conn.execute_batch("ROLLBACK")?;
        } else {
            self.conn.execute_batch("COMMIT")?;
        }
        Ok(durable)
    }

    /// The live state stored for `key`, if any.
    fn load(&self, key: &str, now: u64) -> rusqlite::Result<Option<(Vec<u8>, i64)>> {
        let row: Option<(Vec<u8>, i64)> = self
            .conn
            .prepare_cached(&self.select)?
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        // An expired row holds nothing that could affect a decision: as good as swept.
        Ok(row.filter(|(_, expires)| *expires > sql_now(now)))
    }

    fn read(&self, key: &str, now: u64) -> Result<Option<ClientState>, StoreError> {
        let row = self
            .load(key, now)
            .map_err(|e| StoreError::new(self.describe(&e)))?;
        let Some((bytes, _)) = row else {
            return Ok(None);
        };
        decode_live(key, &bytes, now)
    }

    /// Reads `key`'s state, runs `f` on it and writes it back. The outer error fails the
    /// batch; the inner one only this request (a corrupt row).
    fn with_state<T>(
        &self,
        key: &str,
        now: u64,
        create: bool,
        f: &dyn Fn(&mut ClientState) -> T,
    ) -> rusqlite::Result<(Result<Option<T>, StoreError>, bool)> {
        let row = self.load(key, now)?;
        let (mut state, old) = match row {
            Some((bytes, expires)) => match ClientState::decode(&bytes) {
                Ok(state) => (state, Some((bytes, expires))),
                Err(e) => {
                    let msg = format!("the SQLite row of {key} is corrupt");
                    return Ok((Err(StoreError::with_source(msg, e)), false));
                }
            },
            None if create => (ClientState::new(), None),
            None => return Ok((Ok(None), false)),
        };
        let before = durable_part(&state);
        let result = f(&mut state);
        let durable = durable_part(&state) != before;
        let expires = sql_time(state.expires_at().as_millis());
        if state.expires_at().as_millis() <= now {
            if old.is_some() {
                self.conn.prepare_cached(&self.delete)?.execute([key])?;
            }
        } else {
            let bytes = state.encode();
            let unchanged = matches!(&old, Some((b, e)) if *b == bytes && *e == expires);
            if !unchanged {
                self.conn
                    .prepare_cached(&self.upsert)?
                    .execute(rusqlite::params![key, bytes, expires])?;
            }
        }
        Ok((Ok(Some(result)), durable))
    }

    /// Deletes every row expired by `now`; returns how many.
    fn sweep(&self, now: u64) -> rusqlite::Result<usize> {
        self.conn
            .prepare_cached(&self.sweep_all)?
            .execute([sql_now(now)])
    }

    /// One step of the periodic sweep: looks at the next [`SWEEP_CHUNK`] rows in key order
    /// and deletes the expired ones, in one transaction. At the end of the table, the pass
    /// is over until the next [`sweep_interval`](SqliteStoreBuilder::sweep_interval).
    fn sweep_step(&mut self, now: u64) {
        let outcome = (|| -> rusqlite::Result<bool> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (seen, last, expired) = {
                let mut stmt = tx.prepare_cached(&self.sweep_chunk)?;
                let mut rows = stmt.query([&self.sweep_cursor])?;
                let (mut seen, mut last, mut expired) = (0, None, Vec::new());
                while let Some(row) = rows.next()? {
                    let key: String = row.get(0)?;
                    if row.get::<_, i64>(1)? <= sql_now(now) {
                        expired.push(key.clone());
                    }
                    seen += 1;
                    last = Some(key);
                }
                (seen, last, expired)
            };
            {
                let mut delete = tx.prepare_cached(&self.delete)?;
                for key in &expired {
                    delete.execute([key])?;
                }
            }
            tx.commit()?;
            self.sweep_cursor = last.unwrap_or_default();
            Ok(seen < SWEEP_CHUNK)
        })();
        match outcome {
            Ok(true) => {
                self.sweep_cursor.clear();
                self.next_sweep = now.saturating_add(self.sweep_ms);
            }
            Ok(false) => {}
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                log::warn!("floodgate: SQLite sweep failed: {}", self.describe(&e));
                self.next_sweep = now.saturating_add(self.sweep_ms);
            }
        }
    }
}

/// Decodes the state of row `key`, pruned to `now`; `None` when nothing of it is live.
fn decode_live(key: &str, bytes: &[u8], now: u64) -> Result<Option<ClientState>, StoreError> {
    let mut state = ClientState::decode(bytes)
        .map_err(|e| StoreError::with_source(format!("the SQLite row of {key} is corrupt"), e))?;
    let now_ts = Timestamp::from_millis(now);
    state.prune(now_ts);
    Ok(Some(state).filter(|s| s.expires_at() > now_ts))
}

/// The parts of a state that must be fsynced before they are answered: the ban, and each
/// policy's block end, block count and punishment end.
type DurablePart = (Option<(u64, BanReason)>, Vec<(u64, u32, u64)>);

fn durable_part(state: &ClientState) -> DurablePart {
    let policies = state
        .scopes
        .iter()
        .filter_map(|(_, scope)| match scope {
            Scope::Policy(p) => Some((p.blocked_until, p.block_count, p.punished_until)),
            Scope::Log(_) => None,
        })
        .collect();
    (state.ban_slot(), policies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_validated() {
        for ok in ["IP_Data", "_x", "floodgate_clients", "a1", &"t".repeat(64)] {
            assert!(validate_table(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "x\"; DROP TABLE y; --",
            "é",
            "sqlite_master",
            "floodgate_tables",
            &"t".repeat(65),
        ] {
            let err = validate_table(bad).unwrap_err();
            assert_eq!(err.field(), "table", "{bad}");
        }
    }

    #[test]
    fn keys_of_custom_clients_never_look_like_addresses() {
        use std::net::{IpAddr, Ipv4Addr};
        let ip = ClientKey::from_ip(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)), 64);
        assert_eq!(key_text(&ip), "1.2.3.4");
        assert_eq!(key_text(&ClientKey::custom("1.2.3.4")), "custom:1.2.3.4");
    }

    #[test]
    fn key_texts_are_the_addresses_and_read_back() {
        use std::net::{IpAddr, Ipv4Addr};
        let octets = [0u8, 1, 9, 10, 42, 99, 100, 199, 200, 255];
        for a in octets {
            for b in octets {
                let ip = Ipv4Addr::new(a, b, b, a);
                let key = ClientKey::from_ip(IpAddr::V4(ip), 64);
                assert_eq!(key_text(&key), ip.to_string());
                assert_eq!(key_from_text(&key_text(&key)), Some(key));
            }
        }
        for key in [
            ClientKey::from_ip("2001:db8::1".parse().unwrap(), 64),
            ClientKey::from_ip("2001:db8::1".parse().unwrap(), 128),
            ClientKey::custom("user:7"),
        ] {
            assert_eq!(key_from_text(&key_text(&key)), Some(key));
        }
        assert_eq!(key_from_text("not an address"), None);
    }

    /// Waits for a store answer on this thread.
    fn wait<T>(mut f: StoreFuture<T>) -> Result<T, StoreError> {
        use std::future::Future;
        use std::task::{Context, Poll, Wake, Waker};
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(r) = std::pin::Pin::new(&mut f).poll(&mut cx) {
                return r;
            }
            std::thread::park();
        }
    }

    #[test]
    fn a_busy_timeout_of_duration_max_opens() {
        let dir = std::env::temp_dir().join(format!("floodgate-busy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::builder(dir.join("busy.db"))
            .busy_timeout(Duration::MAX)
            .open();
        assert!(store.is_ok(), "{store:?}");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_batch_fails_on_durations_of_duration_max_or_times_at_the_end_of_time() {
        use crate::policy::{Adaptive, Policy, Punishment};
        use crate::rules::Rule;
        use crate::state::ScopeId;
        let dir = std::env::temp_dir().join(format!("floodgate-extreme-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = Policy::new(1, Duration::MAX)
            .cooldown(Duration::MAX)
            .block_duration(Duration::MAX)
            .block_limit(1)
            .max_window_duration(Some(Duration::MAX))
            .punishment(Punishment::Ban(Duration::MAX))
            .adaptive(Adaptive {
                factor: f64::MAX,
                max: Duration::MAX,
                jitter: Duration::MAX,
            });
        let plan = Arc::new(Plan::new(
            [(ScopeId::GLOBAL, vec![Rule::new(u32::MAX, Duration::MAX)])],
            Some((ScopeId::named("p"), policy)),
        ));
        let ban_rule = BanRule::new(2, Duration::MAX, Duration::MAX);
        for (i, durability) in [Durability::Normal, Durability::Full, Durability::Batched]
            .into_iter()
            .enumerate()
        {
            let store = SqliteStore::builder(dir.join(format!("extreme-{i}.db")))
                .durability(durability)
                .sweep_interval(Duration::MAX)
                .busy_timeout(Duration::MAX)
                .open()
                .unwrap();
            for (n, now) in [1, 1_700_000_000_000, u64::MAX - 1, u64::MAX]
                .into_iter()
                .enumerate()
            {
                let now = Timestamp::from_millis(now);
                let c = ClientKey::custom(format!("c{n}"));
                let first = wait(store.check(&c, &plan, now)).expect("first");
                assert!(first.is_allowed(), "{durability:?} {now}: {first:?}");
                // The cooldown of Duration::MAX refuses the next one (at the end of time,
                // the cooldown is over: it ends at the end of time).
                let second = wait(store.check(&c, &plan, now)).expect("second");
                assert_eq!(
                    second.is_allowed(),
                    now == Timestamp::NEVER,
                    "{durability:?} {now}: {second:?}"
                );
                wait(store.report(&c, &ban_rule, now)).expect("report");
                let out = wait(store.report(&c, &ban_rule, now)).expect("report");
                wait(store.ban(&c, Some(now + Duration::MAX), now)).expect("ban");
                let state = wait(store.state(&c, now)).expect("state");
                // At the end of time itself, every state has expired at once.
                if now < Timestamp::NEVER {
                    assert_eq!(
                        out,
                        ReportOutcome::Banned {
                            until: Timestamp::NEVER
                        }
                    );
                    let state = state.expect("kept forever");
                    assert_eq!(state.expires_at(), Timestamp::NEVER);
                    assert!(matches!(
                        wait(store.check(&c, &plan, now)).expect("third"),
                        Decision::Banned { until: None, .. }
                    ));
                }
                wait(store.unban(&c, now)).expect("unban");
                wait(store.sweep(now)).expect("sweep");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

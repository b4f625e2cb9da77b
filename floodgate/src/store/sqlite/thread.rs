//! The store thread: the job queue, the batches of jobs it decides in one transaction each,
//! and the periodic sweep.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use super::bans::{indexed_until, BanSql};
use super::rows::{decode_live, durable_part, sql_now, sql_time};
use super::{Durability, SqliteStoreBuilder};
use crate::client::ClientKey;
use crate::clock::{duration_millis, Timestamp};
use crate::error::StoreError;
use crate::state::ClientState;
use crate::store::memory::Encoded;
use crate::store::StoreFuture;

/// Maps a store's answer, synchronously when it is ready.
pub(super) fn map<T: Send + 'static, U>(
    f: StoreFuture<T>,
    g: impl FnOnce(T) -> U + Send + 'static,
) -> StoreFuture<U> {
    let mut f = f;
    match f.take_ready() {
        Some(r) => StoreFuture::ready(r.map(g)),
        None => StoreFuture::pending(async move { f.await.map(g) }),
    }
}

/// Sends `f` to the store thread on `jobs`; it runs inside the batch's transaction.
pub(super) fn call_on<T, F>(jobs: &SyncSender<Job>, now: Timestamp, f: F) -> StoreFuture<T>
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

/// Work for the store thread: run inside a transaction (again, when the batch is redone with
/// full durability), then answer once the transaction is over.
pub(super) trait Task: Send {
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

pub(super) type Job = Box<dyn Task>;

/// Wakes the store thread of [`Durability::Batched`]: for a round now, or for a last round
/// before it stops (`stop`).
pub(super) struct Signal {
    pub(super) stop: bool,
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
pub(super) struct Worker {
    pub(super) conn: Connection,
    select: String,
    pub(super) upsert: String,
    pub(super) delete: String,
    /// The statements on the index of bans.
    pub(super) bans: BanSql,
    sweep_all: String,
    sweep_chunk: String,
    /// Where the periodic sweep goes on: the last key it looked at (empty: from the start).
    sweep_cursor: String,
    durability: Durability,
    pub(super) max_batch: usize,
    busy: Duration,
    sweep_ms: u64,
    pub(super) next_sweep: u64,
    pub(super) flush_interval: Duration,
    /// [`Durability::Batched`]: the newest change of each client that no round has written
    /// yet (rounds failed), written again by the next round. Loads read it before the file.
    pub(super) pending: HashMap<ClientKey, Option<Encoded>>,
    /// [`Durability::Batched`]: past this many pending changes, the memory store takes no
    /// new client until a round succeeds.
    pub(super) backlog: usize,
    /// Raised when the WAL outgrew the checkpoint thread (see `checkpoint.rs`).
    pub(super) wal_behind: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Rows looked at per periodic sweep step, so that a sweep never holds the lock for long.
const SWEEP_CHUNK: usize = 1_000;

impl Worker {
    pub(super) fn new(conn: Connection, table: &str, b: &SqliteStoreBuilder) -> Worker {
        let t = format!("\"{table}\"");
        Worker {
            conn,
            select: format!("SELECT state, expires_at FROM {t} WHERE key = ?1"),
            // A table without a secondary index: REPLACE overwrites the row in one seek,
            // where an upsert seeks for the conflict and again for the update.
            upsert: format!("REPLACE INTO {t} (key, state, expires_at) VALUES (?1, ?2, ?3)"),
            delete: format!("DELETE FROM {t} WHERE key = ?1"),
            bans: BanSql::new(table),
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
            wal_behind: None,
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Job>) {
        let mut batch: Vec<Job> = Vec::with_capacity(self.max_batch);
        // Ends when every sender (the store) is dropped.
        while let Ok(first) = rx.recv() {
            batch.push(first);
            self.fill(&mut batch, &rx);
            let latest = batch.iter().map(|j| j.now()).max().unwrap_or(0);
            self.finish_batch(&mut batch, Worker::execute);
            if let Some(behind) = &self.wal_behind {
                super::checkpoint::restart_wal(&self.conn, behind);
            }
            if latest >= self.next_sweep {
                self.sweep_step(latest);
            }
        }
    }

    /// Adds the jobs waiting in the queue to `batch`, up to `max_batch` jobs.
    pub(super) fn fill(&self, batch: &mut Vec<Job>, rx: &Receiver<Job>) {
        while batch.len() < self.max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
    }

    /// Runs the batch with `run`, then answers each job: its result, or the failure of the
    /// batch (rolled back) for all of them.
    pub(super) fn finish_batch(
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

    pub(super) fn describe(&self, e: &rusqlite::Error) -> String {
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
    pub(super) fn transaction(&mut self, batch: &mut [Job], redo: bool) -> rusqlite::Result<bool> {
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

    pub(super) fn read(&self, key: &str, now: u64) -> Result<Option<ClientState>, StoreError> {
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
    pub(super) fn with_state<T>(
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
        let after = durable_part(&state);
        let durable = after != before;
        if after.0 != before.0 {
            self.index_ban(key, indexed_until(Some(&state), now))?;
        }
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
    pub(super) fn sweep(&self, now: u64) -> rusqlite::Result<usize> {
        self.sweep_bans(now)?;
        self.conn
            .prepare_cached(&self.sweep_all)?
            .execute([sql_now(now)])
    }

    /// One step of the periodic sweep: looks at the next [`SWEEP_CHUNK`] rows in key order
    /// and deletes the expired ones, in one transaction. At the end of the table, the pass
    /// is over until the next [`sweep_interval`](SqliteStoreBuilder::sweep_interval).
    pub(super) fn sweep_step(&mut self, now: u64) {
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
                let mut unindex = tx.prepare_cached(self.bans.remove())?;
                for key in &expired {
                    delete.execute([key])?;
                    unindex.execute([key])?;
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

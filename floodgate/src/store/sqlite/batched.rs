//! [`Durability::Batched`]: decided in a memory store, written
//! behind in rounds.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::bans::indexed_until;
use super::rows::{decode_live, durable_part, key_from_text, key_text, sql_time};
use super::thread::{call_on, Job, Signal, Worker};
#[cfg(doc)]
use super::Durability;
use super::SqliteStore;
use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::state::ClientState;
use crate::store::memory::{Encoded, Journaled, LoadTicket, MemoryStore};
use crate::store::StoreFuture;

/// Loads and round waits one [`Durability::Batched`] request may go through before it fails:
/// each retry follows an eviction racing with its load, or a round that freed no room.
const BATCHED_ATTEMPTS: usize = 8;

impl SqliteStore {
    /// [`Durability::Batched`]: runs `f` on the client's state in memory (loading it from the
    /// file first when it may be only there), records the change for the next round, and
    /// answers at once, or after the round when `f` changed a ban, a block or a block count.
    /// When the client needs room that only a round can free (the write backlog is full), it
    /// waits for the next round, and fails with it.
    pub(super) fn batched<T, F>(
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
pub(super) struct BatchedRef<'a> {
    pub(super) jobs: &'a SyncSender<Job>,
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
    pub(super) fn request_round(&self) {
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
pub(super) struct Batched {
    /// The clients' state: authoritative, since the file is locked to this process.
    pub(super) mirror: MemoryStore,
    /// Requests waiting for their client's change to be fsynced.
    pub(super) waiters: Mutex<Vec<Waiter>>,
    /// The latest floodgate time of a request (ms), for the store thread's sweeps.
    pub(super) latest: AtomicU64,
    /// Changes that failed rounds left unwritten, as of the last round.
    pub(super) unwritten: AtomicUsize,
}

impl Batched {
    fn note(&self, now: Timestamp) {
        let ms = now.as_millis();
        if ms > self.latest.load(Ordering::Relaxed) {
            self.latest.fetch_max(ms, Ordering::Relaxed);
        }
    }
}

/// Records the rows of `table` as spilled, up to the index's bound: their state is loaded on
/// the client's first request. A file with more rows marks every shard as overflowed, so that
/// clients it does not index are looked up in the file.
pub(super) fn spill_rows(
    conn: &Connection,
    table: &str,
    mirror: &MemoryStore,
) -> rusqlite::Result<()> {
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

impl Worker {
    /// The store thread of [`Durability::Batched`]: each time it wakes, a round (every
    /// change recorded in memory, in one transaction), then the jobs that need the file
    /// (loads of spilled clients, sweeps).
    pub(super) fn run_batched(mut self, rx: Receiver<Job>, b: &Batched) {
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
                self.finish_batch(&mut batch, |w, jobs| w.transaction(jobs, true).map(|_| ()));
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
                let until = match state {
                    Some((bytes, expires)) if *expires > now => {
                        upsert.execute(rusqlite::params![key, bytes, sql_time(*expires)])?;
                        indexed_until(ClientState::decode(bytes).ok().as_ref(), now)
                    }
                    _ => {
                        delete.execute([&key])?;
                        None
                    }
                };
                self.index_ban(&key, until)?;
            }
        }
        self.conn.execute_batch("COMMIT")?;
        if durable {
            self.conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        }
        Ok(())
    }
}

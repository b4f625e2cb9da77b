//! A store that survives the failure of another: [`FailoverStore`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::bans::{BanCursor, BanPage};
use super::memory::MemoryStore;
use super::{Store, StoreFuture};
use crate::client::ClientKey;
use crate::clock::{duration_millis, Timestamp};
use crate::error::StoreError;
use crate::rules::BanRule;
use crate::state::{BanReason, ClientState, Decision, Plan, ReportOutcome};

/// Wraps a primary store (typically a [`RedisStore`](crate::RedisStore)) so that its failure
/// never stops the app.
///
/// When the primary fails (an error or a timeout), decisions continue on the
/// [`backup`](FailoverStore::backup) store, usually a [`MemoryStore`]. Without a backup the
/// error goes to the middleware, which serves the request unlimited or refuses it with 503
/// as [`Floodgate::store_failure`](crate::Floodgate::store_failure) says. Either way the
/// failure is logged at warn once, when it starts, not per request.
///
/// While the primary is down, requests do not wait on it: one request at a time probes it,
/// first [`retry`](FailoverStore::retry) `min` after the failure, then with a delay doubling
/// up to `max`. As soon as a probe answers, the primary is taken back (logged at info).
/// Time is read from floodgate's clock (the `now` of each call), so a
/// [`FakeClock`](crate::FakeClock) drives the backoff in tests.
///
/// State written to the backup during an outage stays there: bans decided on the backup are
/// not copied to the primary when it returns.
///
/// # Examples
///
/// ```no_run
/// # #[cfg(feature = "redis")]
/// # async fn run() -> Result<(), floodgate::StoreError> {
/// use std::time::Duration;
/// use floodgate::{FailoverStore, Floodgate, MemoryStore, RedisStore};
///
/// let redis = RedisStore::builder("redis://127.0.0.1:6379/").connect().await?;
/// let store = FailoverStore::new(redis)
///     .backup(MemoryStore::new())
///     .retry(Duration::from_secs(1), Duration::from_secs(30));
/// let floodgate = Floodgate::new().store(store);
/// # Ok(()) }
/// ```
pub struct FailoverStore<P, B = MemoryStore> {
    primary: Arc<P>,
    backup: Option<Arc<B>>,
    min_ms: u64,
    max_ms: u64,
    health: Arc<Mutex<Health>>,
}

#[derive(Debug, Default)]
struct Health {
    down: bool,
    /// When the next probe of the primary may start (ms).
    retry_at: u64,
    backoff_ms: u64,
}

enum Route {
    Primary { probe: bool },
    Backup,
}

impl<P, B> Clone for FailoverStore<P, B> {
    fn clone(&self) -> Self {
        FailoverStore {
            primary: self.primary.clone(),
            backup: self.backup.clone(),
            min_ms: self.min_ms,
            max_ms: self.max_ms,
            health: self.health.clone(),
        }
    }
}

impl<P: fmt::Debug, B: fmt::Debug> fmt::Debug for FailoverStore<P, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailoverStore")
            .field("primary", &self.primary)
            .field("backup", &self.backup)
            .field("retry_min_ms", &self.min_ms)
            .field("retry_max_ms", &self.max_ms)
            .field(
                "primary_down",
                &self.health.lock().map(|h| h.down).unwrap_or(true),
            )
            .finish()
    }
}

impl<P: Store> FailoverStore<P, MemoryStore> {
    /// Wraps `primary`, with no backup yet and retries from 1 s up to 30 s.
    pub fn new(primary: P) -> Self {
        FailoverStore {
            primary: Arc::new(primary),
            backup: None,
            min_ms: 1_000,
            max_ms: 30_000,
            health: Arc::default(),
        }
    }
}

impl<P: Store, B: Store> FailoverStore<P, B> {
    /// Decides on `backup` while the primary is down.
    pub fn backup<B2: Store>(self, backup: B2) -> FailoverStore<P, B2> {
        FailoverStore {
            primary: self.primary,
            backup: Some(Arc::new(backup)),
            min_ms: self.min_ms,
            max_ms: self.max_ms,
            health: self.health,
        }
    }

    /// The first retry of a failed primary comes `min` after the failure; each failed retry
    /// doubles the delay, up to `max`.
    pub fn retry(mut self, min: Duration, max: Duration) -> Self {
        self.min_ms = duration_millis(min).max(1);
        self.max_ms = duration_millis(max).max(self.min_ms);
        self
    }

    /// True while the primary is considered down (decisions go to the backup).
    pub fn primary_down(&self) -> bool {
        self.lock().down
    }

    /// The primary store.
    pub fn primary(&self) -> &P {
        &self.primary
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn route(&self, now: u64) -> Route {
        let mut h = self.lock();
        if !h.down {
            Route::Primary { probe: false }
        } else if now >= h.retry_at {
            // This request probes; the others keep to the backup until it answers.
            h.retry_at = now.saturating_add(h.backoff_ms);
            Route::Primary { probe: true }
        } else {
            Route::Backup
        }
    }

    /// Records the primary's answer; returns the error when it failed.
    fn note_primary_answer<T>(
        &self,
        result: Result<T, StoreError>,
        probe: bool,
        now: u64,
    ) -> Result<T, StoreError> {
        let mut h = self.lock();
        match result {
            Ok(v) => {
                if h.down {
                    h.down = false;
                    h.backoff_ms = 0;
                    log::info!(
                        "floodgate: the primary store answers again; decisions are back on it"
                    );
                }
                Ok(v)
            }
            Err(err) => {
                if !h.down {
                    h.down = true;
                    h.backoff_ms = self.min_ms;
                    h.retry_at = now.saturating_add(self.min_ms);
                    if self.backup.is_some() {
                        log::warn!(
                            "floodgate: the primary store failed: {err}; decisions continue on \
                             the backup store until it answers (first retry in {} ms)",
                            self.min_ms
                        );
                    } else {
                        // The middleware logs the failures it is handed, at warn, once a minute.
                        log::debug!("floodgate: the primary store failed: {err}");
                    }
                } else if probe {
                    h.backoff_ms = h
                        .backoff_ms
                        .saturating_mul(2)
                        .clamp(self.min_ms, self.max_ms);
                    h.retry_at = now.saturating_add(h.backoff_ms);
                    log::debug!("floodgate: the primary store is still down: {err}");
                }
                Err(err)
            }
        }
    }

    fn call<T: Send + 'static>(
        &self,
        now: Timestamp,
        on_primary: impl FnOnce(&P) -> StoreFuture<T>,
        on_backup: impl FnOnce(&B) -> StoreFuture<T> + Send + 'static,
    ) -> StoreFuture<T> {
        let now_ms = now.as_millis();
        let probe = match self.route(now_ms) {
            Route::Backup => {
                return match &self.backup {
                    Some(b) => on_backup(b),
                    None => StoreFuture::ready(Err(StoreError::new(
                        "the primary store is down and there is no backup store",
                    ))),
                }
            }
            Route::Primary { probe } => probe,
        };
        let mut fut = on_primary(&self.primary);
        if let Some(result) = fut.take_ready() {
            return match (
                self.note_primary_answer(result, probe, now_ms),
                &self.backup,
            ) {
                (Ok(v), _) => StoreFuture::ready(Ok(v)),
                (Err(_), Some(b)) => on_backup(b),
                (Err(e), None) => StoreFuture::ready(Err(e)),
            };
        }
        let this = self.clone();
        StoreFuture::pending(async move {
            let result = fut.await;
            match (
                this.note_primary_answer(result, probe, now_ms),
                &this.backup,
            ) {
                (Ok(v), _) => Ok(v),
                (Err(_), Some(b)) => on_backup(b).await,
                (Err(e), None) => Err(e),
            }
        })
    }
}

impl<P: Store, B: Store> Store for FailoverStore<P, B> {
    fn check(&self, client: &ClientKey, plan: &Arc<Plan>, now: Timestamp) -> StoreFuture<Decision> {
        let (key, p) = (client.clone(), plan.clone());
        self.call(
            now,
            |s| s.check(client, plan, now),
            move |b| b.check(&key, &p, now),
        )
    }

    fn release(
        &self,
        client: &ClientKey,
        plan: &Arc<Plan>,
        at: Timestamp,
        now: Timestamp,
    ) -> StoreFuture<()> {
        let (key, p) = (client.clone(), plan.clone());
        self.call(
            now,
            |s| s.release(client, plan, at, now),
            move |b| b.release(&key, &p, at, now),
        )
    }

    fn report(
        &self,
        client: &ClientKey,
        rule: &BanRule,
        now: Timestamp,
    ) -> StoreFuture<ReportOutcome> {
        let (key, r) = (client.clone(), *rule);
        self.call(
            now,
            |s| s.report(client, rule, now),
            move |b| b.report(&key, &r, now),
        )
    }

    fn ban(&self, client: &ClientKey, until: Option<Timestamp>, now: Timestamp) -> StoreFuture<()> {
        let key = client.clone();
        self.call(
            now,
            |s| s.ban(client, until, now),
            move |b| b.ban(&key, until, now),
        )
    }

    fn extend_ban(
        &self,
        client: &ClientKey,
        until: Option<Timestamp>,
        reason: BanReason,
        now: Timestamp,
    ) -> StoreFuture<()> {
        let key = client.clone();
        self.call(
            now,
            |s| s.extend_ban(client, until, reason, now),
            move |b| b.extend_ban(&key, until, reason, now),
        )
    }

    fn unban(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<bool> {
        let key = client.clone();
        self.call(now, |s| s.unban(client, now), move |b| b.unban(&key, now))
    }

    fn state(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<Option<ClientState>> {
        let key = client.clone();
        self.call(now, |s| s.state(client, now), move |b| b.state(&key, now))
    }

    fn kind(&self) -> &'static str {
        "failover"
    }

    fn tracked_clients(&self) -> Option<u64> {
        self.primary.tracked_clients()
    }

    fn checks_together(&self) -> bool {
        self.primary.checks_together()
    }

    fn sweep(&self, now: Timestamp) -> StoreFuture<usize> {
        self.call(now, |s| s.sweep(now), move |b| b.sweep(now))
    }

    /// The bans of the store that decides now: the primary's, or the backup's while the
    /// primary is down.
    fn bans(
        &self,
        after: Option<&BanCursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreFuture<BanPage> {
        let owned = after.cloned();
        self.call(
            now,
            |s| s.bans(after, limit, now),
            move |b| b.bans(owned.as_ref(), limit, now),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Rule;
    use crate::state::ScopeId;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A store that fails while told to, answering from memory otherwise.
    #[derive(Debug, Default)]
    struct Flaky {
        failing: AtomicBool,
        calls: AtomicUsize,
        inner: MemoryStore,
    }

    impl Store for Flaky {
        fn check(&self, c: &ClientKey, p: &Arc<Plan>, now: Timestamp) -> StoreFuture<Decision> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return StoreFuture::ready(Err(StoreError::new("flaky primary down")));
            }
            self.inner.check(c, p, now)
        }
        fn report(&self, c: &ClientKey, r: &BanRule, now: Timestamp) -> StoreFuture<ReportOutcome> {
            self.inner.report(c, r, now)
        }
        fn ban(&self, c: &ClientKey, u: Option<Timestamp>, now: Timestamp) -> StoreFuture<()> {
            self.inner.ban(c, u, now)
        }
        fn extend_ban(
            &self,
            c: &ClientKey,
            u: Option<Timestamp>,
            r: BanReason,
            now: Timestamp,
        ) -> StoreFuture<()> {
            self.inner.extend_ban(c, u, r, now)
        }
        fn release(
            &self,
            c: &ClientKey,
            p: &Arc<Plan>,
            at: Timestamp,
            now: Timestamp,
        ) -> StoreFuture<()> {
            self.inner.release(c, p, at, now)
        }
        fn unban(&self, c: &ClientKey, now: Timestamp) -> StoreFuture<bool> {
            self.inner.unban(c, now)
        }
        fn state(&self, c: &ClientKey, now: Timestamp) -> StoreFuture<Option<ClientState>> {
            self.inner.state(c, now)
        }
        fn sweep(&self, now: Timestamp) -> StoreFuture<usize> {
            self.inner.sweep(now)
        }
    }

    /// Counts warnings about the flaky primary, whatever test logs them.
    struct WarnCounter;
    static FLAKY_WARNINGS: AtomicUsize = AtomicUsize::new(0);
    static COUNTER: WarnCounter = WarnCounter;

    impl log::Log for WarnCounter {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            if record.level() == log::Level::Warn
                && record.args().to_string().contains("flaky primary down")
            {
                FLAKY_WARNINGS.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn flush(&self) {}
    }

    fn ready<T>(mut f: StoreFuture<T>) -> Result<T, StoreError> {
        f.take_ready().expect("memory stores answer at once")
    }

    #[test]
    fn backup_takes_over_and_the_primary_is_retried_with_backoff() {
        let _ = log::set_logger(&COUNTER);
        log::set_max_level(log::LevelFilter::Debug);
        let primary = Arc::new(Flaky::default());
        let store = FailoverStore::new(primary.clone())
            .backup(MemoryStore::new())
            .retry(Duration::from_secs(1), Duration::from_secs(4));
        let plan = Arc::new(Plan::new(
            [(
                ScopeId::GLOBAL,
                vec![Rule::new(2, Duration::from_secs(3600))],
            )],
            None,
        ));
        let key = ClientKey::from_ip(IpAddr::V4(Ipv4Addr::LOCALHOST), 64);
        let t = |ms: u64| Timestamp::from_millis(1_000_000 + ms);
        primary.failing.store(true, Ordering::SeqCst);
        // The failing call falls through to the backup, which then counts alone.
        assert!(ready(store.check(&key, &plan, t(0))).unwrap().is_allowed());
        assert!(store.primary_down());
        assert!(ready(store.check(&key, &plan, t(10))).unwrap().is_allowed());
        assert!(!ready(store.check(&key, &plan, t(20))).unwrap().is_allowed());
        assert_eq!(
            primary.calls.load(Ordering::SeqCst),
            1,
            "no call while backing off"
        );
        // Probes at 1 s (fails: next in 2 s), then 3 s (fails: next in 4 s), then 7 s.
        for (ms, calls) in [(999, 1), (1_000, 2), (2_999, 2), (3_000, 3), (6_999, 3)] {
            ready(store.check(&key, &plan, t(ms))).unwrap();
            assert_eq!(primary.calls.load(Ordering::SeqCst), calls, "at {ms} ms");
        }
        primary.failing.store(false, Ordering::SeqCst);
        assert!(ready(store.check(&key, &plan, t(7_000)))
            .unwrap()
            .is_allowed());
        assert!(!store.primary_down());
        assert_eq!(primary.calls.load(Ordering::SeqCst), 4);
        assert_eq!(
            FLAKY_WARNINGS.load(Ordering::SeqCst),
            1,
            "one warning for the outage, none per request or per failed retry"
        );
    }

    #[test]
    fn without_a_backup_the_error_reaches_the_middleware_without_touching_the_primary() {
        let primary = Arc::new(Flaky::default());
        primary.failing.store(true, Ordering::SeqCst);
        let store = FailoverStore::new(primary.clone());
        let plan = Arc::new(Plan::new(
            [(ScopeId::GLOBAL, vec![Rule::new(2, Duration::from_secs(1))])],
            None,
        ));
        let key = ClientKey::custom("k");
        let now = Timestamp::from_millis(5_000);
        assert!(ready(store.check(&key, &plan, now)).is_err());
        assert!(ready(store.check(&key, &plan, now)).is_err());
        assert_eq!(primary.calls.load(Ordering::SeqCst), 1);
    }
}

//! Where client state lives: the [`Store`] trait and its implementations.
//!
//! A store keeps one [`ClientState`] per [`ClientKey`] and applies the decision core to it
//! atomically, in one round trip per decision. The memory store answers synchronously
//! ([`StoreFuture::ready`]), so the request path of the default configuration never
//! allocates a future; database stores answer with a boxed future and never block an actix
//! worker thread.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::rules::BanRule;
use crate::state::{BanReason, ClientState, Decision, Plan, ReportOutcome};
use bans::{BanCursor, BanPage};

pub mod bans;
pub mod failover;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub(crate) mod state_access;

/// The answer of a [`Store`]: either already there, or a future to await.
#[must_use = "a store future does nothing unless awaited"]
pub struct StoreFuture<T>(Inner<T>);

enum Inner<T> {
    Ready(Option<Result<T, StoreError>>),
    Pending(Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>),
}

// Never projects a pin into `T`.
impl<T> Unpin for StoreFuture<T> {}

impl<T> StoreFuture<T> {
    /// An answer computed synchronously.
    pub fn ready(result: Result<T, StoreError>) -> Self {
        StoreFuture(Inner::Ready(Some(result)))
    }

    /// An answer that will come later.
    pub fn pending(fut: impl Future<Output = Result<T, StoreError>> + Send + 'static) -> Self {
        StoreFuture(Inner::Pending(Box::pin(fut)))
    }

    /// The answer mapped by `g`: at once when it is already there.
    pub(crate) fn map<U>(mut self, g: impl FnOnce(T) -> U + Send + 'static) -> StoreFuture<U>
    where
        T: Send + 'static,
    {
        match self.take_ready() {
            Some(r) => StoreFuture::ready(r.map(g)),
            None => StoreFuture::pending(async move { self.await.map(g) }),
        }
    }

    /// Takes the answer when it was computed synchronously.
    pub fn take_ready(&mut self) -> Option<Result<T, StoreError>> {
        match &mut self.0 {
            Inner::Ready(r) => r.take(),
            Inner::Pending(_) => None,
        }
    }
}

impl<T> Future for StoreFuture<T> {
    type Output = Result<T, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Inner::Ready(r) => {
                Poll::Ready(r.take().unwrap_or_else(|| {
                    Err(StoreError::new("store future polled after completion"))
                }))
            }
            Inner::Pending(fut) => fut.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for StoreFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Inner::Ready(_) => f.write_str("StoreFuture::Ready"),
            Inner::Pending(_) => f.write_str("StoreFuture::Pending"),
        }
    }
}

/// Keeps client state and applies decisions to it atomically.
///
/// Every method is one round trip: an implementation reads, updates and writes a client's
/// state as a unit (a lock, a transaction, a script), so concurrent requests of one client
/// on several workers or servers are counted exactly. Implementations that do I/O must not
/// block the calling thread: return [`StoreFuture::pending`].
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Decides one request of `client` under `plan` (see [`ClientState::check`]).
    fn check(&self, client: &ClientKey, plan: &Arc<Plan>, now: Timestamp) -> StoreFuture<Decision>;

    /// Records one offence (see [`ClientState::report`]).
    fn report(
        &self,
        client: &ClientKey,
        rule: &BanRule,
        now: Timestamp,
    ) -> StoreFuture<ReportOutcome>;

    /// Bans `client` until `until`, or forever for `None` (see [`ClientState::ban`]).
    fn ban(&self, client: &ClientKey, until: Option<Timestamp>, now: Timestamp) -> StoreFuture<()>;

    /// Bans `client` until `until` (`None`: forever) for `reason`, unless a ban that ends
    /// later is in force (see [`ClientState::extend_ban`]): automatic bans, such as a probe's,
    /// only ever lengthen a ban.
    fn extend_ban(
        &self,
        client: &ClientKey,
        until: Option<Timestamp>,
        reason: BanReason,
        now: Timestamp,
    ) -> StoreFuture<()>;

    /// Lifts a ban (see [`ClientState::unban`]); true when one was in force.
    fn unban(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<bool>;

    /// Gives back a request that `check` allowed and counted under `plan` at `at` (see
    /// [`ClientState::release`]): response-based counting counts a request when it is decided
    /// and releases it when its response is not one its rules count. `plan` names only the
    /// scopes to release. A client without state is not created.
    fn release(
        &self,
        client: &ClientKey,
        plan: &Arc<Plan>,
        at: Timestamp,
        now: Timestamp,
    ) -> StoreFuture<()>;

    /// A copy of the client's live state, `None` for a client with none.
    fn state(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<Option<ClientState>>;

    /// Deletes the state of clients that expired by `now`; returns how many.
    fn sweep(&self, now: Timestamp) -> StoreFuture<usize>;

    /// One page of the bans in force at `now`, after `after` (from the start for `None`):
    /// at most `limit` entries (see [`page_limit`](bans::page_limit)), soonest-ending first,
    /// permanent bans last. Expired bans never appear.
    ///
    /// The stores of this crate answer from an index of banned clients (the memory store
    /// scans its shards). The default answers with an error, for stores written before
    /// this method.
    fn bans(
        &self,
        after: Option<&BanCursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreFuture<BanPage> {
        let _ = (after, limit, now);
        StoreFuture::ready(Err(StoreError::new(format!(
            "this store ({self:?}) cannot list bans"
        ))))
    }

    /// A short name of the kind of store, for metrics labels (`memory`, `sqlite`, `redis`).
    fn kind(&self) -> &'static str {
        "custom"
    }

    /// How many clients the store tracks, when it knows without I/O (for metrics).
    fn tracked_clients(&self) -> Option<u64> {
        None
    }

    /// Whether checks sent at once cost about one round trip (a network store whose
    /// connection pipelines them). False by default. When true, a request counted under a
    /// custom key has its address's ban checked together with the key's check instead of
    /// before it: one round trip rather than two, and the key counts the request even when
    /// the address turns out banned.
    fn checks_together(&self) -> bool {
        false
    }
}

impl<S: Store + ?Sized> Store for Arc<S> {
    fn check(&self, client: &ClientKey, plan: &Arc<Plan>, now: Timestamp) -> StoreFuture<Decision> {
        (**self).check(client, plan, now)
    }
    fn report(
        &self,
        client: &ClientKey,
        rule: &BanRule,
        now: Timestamp,
    ) -> StoreFuture<ReportOutcome> {
        (**self).report(client, rule, now)
    }
    fn ban(&self, client: &ClientKey, until: Option<Timestamp>, now: Timestamp) -> StoreFuture<()> {
        (**self).ban(client, until, now)
    }
    fn extend_ban(
        &self,
        client: &ClientKey,
        until: Option<Timestamp>,
        reason: BanReason,
        now: Timestamp,
    ) -> StoreFuture<()> {
        (**self).extend_ban(client, until, reason, now)
    }
    fn unban(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<bool> {
        (**self).unban(client, now)
    }
    fn release(
        &self,
        client: &ClientKey,
        plan: &Arc<Plan>,
        at: Timestamp,
        now: Timestamp,
    ) -> StoreFuture<()> {
        (**self).release(client, plan, at, now)
    }
    fn state(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<Option<ClientState>> {
        (**self).state(client, now)
    }
    fn sweep(&self, now: Timestamp) -> StoreFuture<usize> {
        (**self).sweep(now)
    }
    fn bans(
        &self,
        after: Option<&BanCursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreFuture<BanPage> {
        (**self).bans(after, limit, now)
    }
    fn kind(&self) -> &'static str {
        (**self).kind()
    }
    fn tracked_clients(&self) -> Option<u64> {
        (**self).tracked_clients()
    }
    fn checks_together(&self) -> bool {
        (**self).checks_together()
    }
}

/// What a request gets when the store fails to answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreFailure {
    /// Serve the request unlimited (the failure is logged at warn).
    #[default]
    Open,
    /// Refuse with 503 Service Unavailable.
    Closed,
}

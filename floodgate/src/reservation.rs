//! A request counted by a route that counts by response (`count = ..`): held until its
//! response is known, then kept or given back to the store. Given back too when the response
//! never comes (the future is dropped: the client went away, the handler panicked).

use std::future::Future;
use std::sync::Arc;

use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::count_when::CountWhen;
use crate::error::StoreError;
use crate::gatekeeper::Gate;
use crate::plans::{Release, RoutePlan};
use crate::state::Decision;

/// A counted request whose response decides whether it stays counted.
pub(crate) struct Reservation {
    shared: Arc<Gate>,
    key: ClientKey,
    release: Arc<Release>,
    /// When the request was decided (and counted).
    at: Timestamp,
    route: Arc<str>,
    settled: bool,
}

impl Reservation {
    /// The reservation of a request `route` allowed under `key` at `at`, when the route
    /// counts by response and the store counted the request.
    pub(crate) fn of(
        shared: &Arc<Gate>,
        route: &RoutePlan,
        key: &ClientKey,
        at: Timestamp,
        decision: &Result<Decision, StoreError>,
    ) -> Option<Reservation> {
        let release = route.release.as_ref()?;
        matches!(decision, Ok(Decision::Allowed { .. })).then(|| Reservation {
            shared: shared.clone(),
            key: key.clone(),
            release: release.clone(),
            at,
            route: route.label.clone(),
            settled: false,
        })
    }

    /// Which responses count.
    pub(crate) fn when(&self) -> &CountWhen {
        &self.release.when
    }

    /// The route's name, for logs.
    pub(crate) fn route(&self) -> &str {
        &self.route
    }

    /// The response is known: the request stays counted when `counts`, else it is given back.
    pub(crate) fn settle(mut self, counts: bool) {
        self.settled = true;
        if !counts {
            self.give_back();
        }
    }

    /// Gives the request back: at once for a store that answers synchronously, else on the
    /// current runtime (the response does not wait for it).
    fn give_back(&self) {
        let shared = &self.shared;
        let mut fut = shared
            .store
            .release(&self.key, &self.release.plan, self.at, shared.now());
        // Polled once here: a store that queues its commands (Redis) sends the release now,
        // ahead of the client's next request, rather than whenever the task first runs.
        let first = match fut.take_ready() {
            Some(done) => Some(done),
            None => match std::pin::Pin::new(&mut fut)
                .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
            {
                std::task::Poll::Ready(done) => Some(done),
                std::task::Poll::Pending => None,
            },
        };
        match first {
            Some(Ok(())) => {}
            Some(Err(err)) => shared.store_failed("a release", &err),
            None => match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let shared = shared.clone();
                    rt.spawn(async move {
                        if let Err(err) = fut.await {
                            shared.store_failed("a release", &err);
                        }
                    });
                }
                Err(_) => log::warn!(
                    target: shared.log_target(),
                    "floodgate: a request of route {} could not be given back (no runtime); \
                     it stays counted",
                    self.route
                ),
            },
        }
    }
}

impl Drop for Reservation {
    /// No response came: the client learnt nothing from the request, which is given back.
    fn drop(&mut self) {
        if !self.settled {
            self.settled = true;
            self.give_back();
        }
    }
}

//! What a request gets: the store's decision turned into headers to add or a refusal, and
//! [`FloodgateFuture`], which waits for the decision before the route runs.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready as ready_poll, Context, Poll};

use actix_web::dev::ServiceResponse;
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::Error;
use pin_project_lite::pin_project;

use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::gatekeeper::Shared;
use crate::metrics::{Outcome, RouteCounters};
use crate::plans::RoutePlan;
use crate::response::{self, Refusal, RefusalKind};
use crate::route_spec::WorkerCtx;
use crate::state::{Decision, Quota};
use crate::store::{StoreFailure, StoreFuture};
use crate::targeting::DenyReason;

/// What an allowed response gets: the RateLimit fields.
pub(crate) struct Headers {
    route: Rc<RoutePlan>,
    quota: Option<Quota>,
    ietf: bool,
    legacy: bool,
    /// The worker of the app-wide middleware: once a route of it decided on its own (routing
    /// deferred past Floodgate's call), fields a route set win over the app-wide ones.
    defer_to_route: Option<Rc<WorkerCtx>>,
}

impl Headers {
    fn apply(self, headers: &mut actix_web::http::header::HeaderMap) {
        if self
            .defer_to_route
            .as_ref()
            .is_some_and(|ctx| ctx.deferred_seen.get())
            && (headers.contains_key(response::RATELIMIT_POLICY)
                || headers.contains_key(response::RATELIMIT))
        {
            return;
        }
        if self.ietf {
            if let Some(v) = &self.route.policy_header {
                headers.insert(response::RATELIMIT_POLICY, v.clone());
            }
        }
        if let Some(q) = self.quota {
            response::insert_quota(
                headers,
                self.route.plan.limits(),
                q,
                &self.route.ratelimit,
                self.legacy,
                self.ietf,
            );
        }
    }
}

/// Turns the store's answer into what the request gets: headers to add, or a refusal.
pub(crate) fn settle(
    shared: &Shared,
    route: &Rc<RoutePlan>,
    key: &ClientKey,
    result: Result<Decision, StoreError>,
    now: Timestamp,
) -> Result<Option<Headers>, Error> {
    let headers_on = shared.ratelimit_headers || shared.legacy_headers;
    let decision = match result {
        Ok(d) => d,
        Err(err) => {
            shared.store_failed("a request", &err);
            return match shared.store_failure {
                StoreFailure::Open => Ok(None),
                StoreFailure::Closed => Err(refusal_error(
                    shared,
                    Refusal {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        client: key,
                        retry_after: Some(std::time::Duration::from_secs(1)),
                        kind: RefusalKind::StoreUnavailable,
                    },
                    None,
                )),
            };
        }
    };
    if let Some(c) = &route.counters {
        count(c, route, &decision);
    }
    match decision {
        Decision::Allowed { quota } => {
            log::trace!(target: shared.log_target(), "floodgate: {} allowed", key.logged());
            Ok(headers_on.then(|| Headers {
                route: route.clone(),
                quota,
                ietf: shared.ratelimit_headers,
                legacy: shared.legacy_headers,
                defer_to_route: None,
            }))
        }
        Decision::Limited {
            reason,
            limit,
            retry_after,
            started,
        } => {
            let limits = route.plan.limits();
            let Some(info) = limits.get(limit) else {
                // A store answered with a limit this plan does not have: refuse all the same.
                log::error!(target: shared.log_target(),
                    "floodgate: the store refused {} by limit {limit}, which this route's plan \
                     does not have; refused without naming a limit",
                    key.logged()
                );
                return Err(refusal_error(
                    shared,
                    Refusal {
                        status: StatusCode::TOO_MANY_REQUESTS,
                        client: key,
                        retry_after: Some(retry_after),
                        kind: RefusalKind::StoreUnavailable,
                    },
                    None,
                ));
            };
            if started {
                log::info!(target: shared.log_target(),
                    "floodgate: {} blocked for {}s by policy {}",
                    key.logged(),
                    response::retry_after_secs(retry_after),
                    info.name
                );
            } else {
                log::debug!(target: shared.log_target(),
                    "floodgate: {} limited by {} ({reason:?})",
                    key.logged(),
                    info.name
                );
            }
            let headers = headers_on.then(|| Headers {
                route: route.clone(),
                quota: Some(Quota {
                    limit,
                    remaining: 0,
                    reset: retry_after,
                }),
                ietf: shared.ratelimit_headers,
                legacy: shared.legacy_headers,
                defer_to_route: None,
            });
            Err(refusal_error(
                shared,
                Refusal {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    client: key,
                    retry_after: Some(retry_after),
                    kind: RefusalKind::Limited {
                        reason,
                        limit: info,
                    },
                },
                headers,
            ))
        }
        Decision::Banned {
            until,
            reason,
            started,
        } => {
            if started {
                if let Some(m) = &shared.metrics {
                    m.ban(key, until, crate::metrics::BanKind::of(reason, until));
                }
                match until {
                    Some(t) => {
                        log::warn!(target: shared.log_target(), "floodgate: {} banned until {t} ({reason:?})", key.logged())
                    }
                    None => {
                        log::warn!(target: shared.log_target(), "floodgate: {} blacklisted ({reason:?})", key.logged())
                    }
                }
                if let Some(step) = shared.note_ban(key, until, reason, now) {
                    actix_web::rt::spawn(async move {
                        if let Err(err) = step.await {
                            log::warn!("floodgate: store failed while banning a network: {err}");
                        }
                    });
                }
            } else {
                log::debug!(target: shared.log_target(), "floodgate: {} refused: banned ({reason:?})", key.logged());
            }
            let retry_after = until.map(|t| t.saturating_since(now));
            // The policy field only: a ban is not a spent quota, so no RateLimit field (whose
            // `r=0;t=..` would claim the route's quota is spent and resets at the ban's end).
            let headers = (headers_on && !route.plan.limits().is_empty()).then(|| Headers {
                route: route.clone(),
                quota: None,
                ietf: shared.ratelimit_headers,
                legacy: shared.legacy_headers,
                defer_to_route: None,
            });
            Err(refusal_error(
                shared,
                Refusal {
                    status: StatusCode::FORBIDDEN,
                    client: key,
                    retry_after,
                    kind: RefusalKind::Banned { until, reason },
                },
                headers,
            ))
        }
    }
}

/// Counts `decision` for the route's metrics.
fn count(c: &RouteCounters, route: &RoutePlan, decision: &Decision) {
    match decision {
        Decision::Allowed { quota } => {
            c.count(if route.exempt {
                Outcome::Exempt
            } else {
                Outcome::Allowed
            });
            // Less than 20% of the limit's quota left.
            let near = quota.is_some_and(|q| {
                route
                    .plan
                    .limits()
                    .get(q.limit)
                    .is_some_and(|l| u64::from(q.remaining) * 5 < u64::from(l.quota))
            });
            if near {
                c.near_limit();
            }
        }
        Decision::Limited { .. } => c.count(Outcome::Limited),
        Decision::Banned { .. } => c.count(Outcome::Banned),
    }
}

/// A client refused by a deny list, a country rule or a denying target (403, permanent).
pub(crate) fn denied(shared: &Shared, client: &ClientKey, reason: &DenyReason) -> Error {
    log::debug!(target: shared.log_target(), "floodgate: {} denied ({reason:?})", client.logged());
    refusal_error(
        shared,
        Refusal {
            status: StatusCode::FORBIDDEN,
            client,
            retry_after: None,
            kind: RefusalKind::Denied { reason },
        },
        None,
    )
}

/// A request without the key its route is counted under ([`MissingKey::Refuse`](crate::MissingKey::Refuse)).
pub(crate) fn key_missing(shared: &Shared, client: &ClientKey, status: StatusCode) -> Error {
    log::debug!(target: shared.log_target(),
        "floodgate: {} sent no key; refused with {status}",
        client.logged()
    );
    refusal_error(
        shared,
        Refusal {
            status,
            client,
            retry_after: None,
            kind: RefusalKind::MissingKey,
        },
        None,
    )
}

fn refusal_error(shared: &Shared, refusal: Refusal<'_>, headers: Option<Headers>) -> Error {
    let mut res = match &shared.refusal_hook {
        Some(hook) => hook(&refusal),
        None => refusal.default_response(),
    };
    let h = res.headers_mut();
    response::insert_retry_after(h, refusal.retry_after);
    if let Some(headers) = headers {
        if !h.contains_key(response::RATELIMIT) {
            headers.apply(h);
        }
    }
    InternalError::from_response("request refused by floodgate", res).into()
}

pub(crate) struct Waiting {
    pub(crate) shared: Arc<Shared>,
    pub(crate) route: Rc<RoutePlan>,
    pub(crate) key: ClientKey,
    pub(crate) now: Timestamp,
    pub(crate) defer_to_route: Option<Rc<WorkerCtx>>,
}

pin_project! {
    /// The response future of [`FloodgateMiddleware`](crate::FloodgateMiddleware).
    pub struct FloodgateFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Waiting for an asynchronous store; the route's future is not polled until allowed.
        Deciding {
            decision: StoreFuture<Decision>,
            fut: Option<F>,
            wait: Option<Box<Waiting>>,
        },
        Serving {
            #[pin]
            fut: F,
            headers: Option<Headers>,
        },
        Refused {
            error: Option<Error>,
        },
    }
}

impl<F> FloodgateFuture<F> {
    pub(crate) fn pass(fut: F, headers: Option<Headers>) -> Self {
        FloodgateFuture {
            state: State::Serving { fut, headers },
        }
    }

    /// Waits for `decision`, then serves `fut` or refuses.
    pub(crate) fn deciding(decision: StoreFuture<Decision>, fut: F, wait: Waiting) -> Self {
        FloodgateFuture {
            state: State::Deciding {
                decision,
                fut: Some(fut),
                wait: Some(Box::new(wait)),
            },
        }
    }

    /// Serves `fut` or refuses, as the store's answer says.
    pub(crate) fn decided(
        shared: &Arc<Shared>,
        route: &Rc<RoutePlan>,
        key: &ClientKey,
        mut decision: StoreFuture<Decision>,
        now: Timestamp,
        fut: F,
    ) -> Self
    where
        F: Sized,
    {
        match decision.take_ready() {
            Some(result) => match settle(shared, route, key, result, now) {
                Ok(headers) => FloodgateFuture::pass(fut, headers),
                Err(refusal) => FloodgateFuture::refused(refusal),
            },
            None => FloodgateFuture::deciding(
                decision,
                fut,
                Waiting {
                    shared: shared.clone(),
                    route: route.clone(),
                    key: key.clone(),
                    now,
                    defer_to_route: None,
                },
            ),
        }
    }

    /// Lets RateLimit fields set by the route (deciding on its own, when routing was deferred
    /// past Floodgate's call) win over the ones this future adds, once `ctx`'s worker has
    /// seen a route do so (the check costs two header lookups, so only then).
    pub(crate) fn defer_to_route(mut self, ctx: &Rc<WorkerCtx>) -> Self {
        match &mut self.state {
            State::Serving {
                headers: Some(h), ..
            } => h.defer_to_route = Some(ctx.clone()),
            State::Deciding { wait: Some(w), .. } => w.defer_to_route = Some(ctx.clone()),
            _ => {}
        }
        self
    }

    pub(crate) fn refused(error: Error) -> Self {
        FloodgateFuture {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<F> fmt::Debug for FloodgateFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FloodgateFuture")
    }
}

impl<F, B> Future for FloodgateFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = Result<ServiceResponse<B>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            match this.state.project() {
                StateProj::Deciding {
                    decision,
                    fut,
                    wait,
                } => {
                    let result = ready_poll!(Pin::new(decision).poll(cx));
                    let (Some(fut), Some(w)) = (fut.take(), wait.take()) else {
                        return Poll::Ready(Err(actix_web::error::ErrorInternalServerError(
                            "floodgate future polled after completion",
                        )));
                    };
                    let next = match settle(&w.shared, &w.route, &w.key, result, w.now) {
                        Ok(headers) => State::Serving {
                            fut,
                            headers: headers.map(|mut h| {
                                h.defer_to_route = w.defer_to_route.clone();
                                h
                            }),
                        },
                        Err(error) => State::Refused { error: Some(error) },
                    };
                    self.as_mut().project().state.set(next);
                }
                StateProj::Serving { fut, headers } => {
                    let mut res = ready_poll!(fut.poll(cx))?;
                    if let Some(h) = headers.take() {
                        h.apply(res.headers_mut());
                    }
                    return Poll::Ready(Ok(res));
                }
                StateProj::Refused { error } => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(|| {
                        actix_web::error::ErrorInternalServerError(
                            "floodgate future polled after completion",
                        )
                    })));
                }
            }
        }
    }
}

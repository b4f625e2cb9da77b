//! A verdict written into the response: the RateLimit fields of a served request, a refusal as
//! actix-web's error, and [`FloodgateFuture`], which waits for the store's decision before
//! the route runs.

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

use crate::error::StoreError;
use crate::gatekeeper::Gate;
use crate::pipeline::{verdict, Ask, Begin, FieldValues, Refused, Verdict, Why};
use crate::reservation::Reservation;
use crate::response::{self, Refusal, RefusalKind};
use crate::route_spec::WorkerCtx;
use crate::state::Decision;

/// The RateLimit fields a response gets.
pub(crate) struct RateLimitFields {
    values: FieldValues,
    ietf: bool,
    legacy: bool,
    /// The worker of the app-wide middleware: once a route of it decided on its own (routing
    /// deferred past Floodgate's call), fields a route set win over the app-wide ones.
    defer_to_route: Option<Rc<WorkerCtx>>,
}

impl RateLimitFields {
    fn new(shared: &Gate, values: FieldValues) -> Self {
        RateLimitFields {
            values,
            ietf: shared.ratelimit_headers,
            legacy: shared.legacy_headers,
            defer_to_route: None,
        }
    }

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
        let route = &self.values.route;
        if self.ietf {
            if let Some(v) = &route.policy_header {
                headers.insert(response::RATELIMIT_POLICY, v.clone());
            }
        }
        if let Some(q) = self.values.quota {
            response::insert_quota(
                headers,
                route.plan.limits(),
                q,
                &route.ratelimit,
                self.legacy,
                self.ietf,
            );
        }
    }
}

/// A refusal as the error actix-web answers with: the app's refusal response (or floodgate's
/// problem+json), `Retry-After` and the RateLimit fields. Starts the network bans it tipped.
pub(crate) fn refusal_error(shared: &Gate, refused: Refused) -> Error {
    let Refused {
        status,
        client,
        retry_after,
        why,
        fields,
        network_bans,
    } = refused;
    if let Some(step) = network_bans {
        actix_web::rt::spawn(async move {
            if let Err(err) = step.await {
                log::warn!("floodgate: store failed while banning a network: {err}");
            }
        });
    }
    let kind = match &why {
        Why::Limited {
            reason,
            route,
            limit,
        } => match route.plan.limits().get(*limit) {
            Some(limit) => RefusalKind::Limited {
                reason: *reason,
                limit,
            },
            None => RefusalKind::StoreUnavailable,
        },
        Why::Banned { until, reason } => RefusalKind::Banned {
            until: *until,
            reason: *reason,
        },
        Why::StoreUnavailable => RefusalKind::StoreUnavailable,
        Why::Denied(reason) => RefusalKind::Denied { reason },
        Why::MissingKey => RefusalKind::MissingKey,
    };
    shared.top.refused(&client, shared.now());
    let refusal = Refusal {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
        client: &client,
        retry_after,
        kind,
    };
    let mut res = match &shared.refusal_hook {
        Some(hook) => hook(&refusal),
        None => refusal.default_response(),
    };
    let h = res.headers_mut();
    response::insert_retry_after(h, refusal.retry_after);
    if let Some(values) = fields {
        if !h.contains_key(response::RATELIMIT) {
            RateLimitFields::new(shared, values).apply(h);
        }
    }
    InternalError::from_response("request refused by floodgate", res).into()
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
            ask: Box<Ask>,
            shared: Arc<Gate>,
            fut: Option<F>,
            defer_to_route: Option<Rc<WorkerCtx>>,
        },
        Serving {
            #[pin]
            fut: F,
            fields: Option<RateLimitFields>,
            // A request counted by response: kept or given back once the response is known.
            reservation: Option<Reservation>,
        },
        Refused {
            error: Option<Error>,
        },
    }
}

impl<F> FloodgateFuture<F> {
    fn serve(fut: F, fields: Option<RateLimitFields>) -> Self {
        FloodgateFuture {
            state: State::Serving {
                fut,
                fields,
                reservation: None,
            },
        }
    }

    /// Serves `fut` without counting anything.
    pub(crate) fn pass(fut: F) -> Self {
        Self::serve(fut, None)
    }

    pub(crate) fn refused(error: Error) -> Self {
        FloodgateFuture {
            state: State::Refused { error: Some(error) },
        }
    }

    /// Serves `fut`, refuses, or waits for the store, as the pipeline began.
    pub(crate) fn begin(shared: &Arc<Gate>, begin: Begin, fut: F) -> Self {
        match begin {
            Begin::Serve => Self::pass(fut),
            Begin::Refuse(refused) => Self::refused(refusal_error(shared, refused)),
            Begin::Ask(mut ask) => match ask.decision.take_ready() {
                Some(result) => Self::on_answer(shared, &ask, result, fut, None),
                None => FloodgateFuture {
                    state: State::Deciding {
                        ask: Box::new(ask),
                        shared: shared.clone(),
                        fut: Some(fut),
                        defer_to_route: None,
                    },
                },
            },
        }
    }

    /// Serves or refuses on the store's answer to `ask`.
    fn on_answer(
        shared: &Arc<Gate>,
        ask: &Ask,
        result: Result<Decision, StoreError>,
        fut: F,
        defer_to_route: Option<Rc<WorkerCtx>>,
    ) -> Self {
        let reservation = Reservation::of(shared, &ask.route, &ask.key, ask.now, &result);
        match verdict(shared, &ask.route, &ask.key, result, ask.now) {
            Verdict::Serve(values) => FloodgateFuture {
                state: State::Serving {
                    fut,
                    fields: values.map(|v| RateLimitFields {
                        defer_to_route,
                        ..RateLimitFields::new(shared, v)
                    }),
                    reservation,
                },
            },
            Verdict::Refuse(refused) => Self::refused(refusal_error(shared, refused)),
        }
    }

    /// Lets RateLimit fields set by the route (deciding on its own, when routing was deferred
    /// past Floodgate's call) win over the ones this future adds, once `ctx`'s worker has
    /// seen a route do so (the check costs two header lookups, so only then).
    pub(crate) fn defer_to_route(mut self, ctx: &Rc<WorkerCtx>) -> Self {
        match &mut self.state {
            State::Serving {
                fields: Some(f), ..
            } => f.defer_to_route = Some(ctx.clone()),
            State::Deciding { defer_to_route, .. } => *defer_to_route = Some(ctx.clone()),
            _ => {}
        }
        self
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
                    ask,
                    shared,
                    fut,
                    defer_to_route,
                } => {
                    let result = ready_poll!(Pin::new(&mut ask.decision).poll(cx));
                    let Some(fut) = fut.take() else {
                        return Poll::Ready(Err(actix_web::error::ErrorInternalServerError(
                            "floodgate future polled after completion",
                        )));
                    };
                    let next = Self::on_answer(shared, ask, result, fut, defer_to_route.take());
                    self.set(next);
                }
                StateProj::Serving {
                    fut,
                    fields,
                    reservation,
                } => {
                    let result = ready_poll!(fut.poll(cx));
                    let mut res = match (result, reservation.take()) {
                        (Ok(res), None) => res,
                        (Ok(res), Some(r)) => {
                            let (res, counts) = r.when().matches(r.route(), res);
                            r.settle(counts);
                            res
                        }
                        (Err(err), r) => {
                            if let Some(r) = r {
                                let counts = r
                                    .when()
                                    .matches_error(err.as_response_error().status_code());
                                r.settle(counts);
                            }
                            return Poll::Ready(Err(err));
                        }
                    };
                    if let Some(f) = fields.take() {
                        f.apply(res.headers_mut());
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

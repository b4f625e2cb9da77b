//! [`FloodgateMiddleware`]: the service of [`Floodgate`]. It reads a request's facts, lets
//! routing run, hands the facts to the decision pipeline (`pipeline`) and writes its verdict
//! into the response (`outcome`); it decides nothing itself.

use std::fmt;
use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::dev::{Extensions, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::Error;

use crate::builder::Floodgate;
use crate::gatekeeper::Gate;
use crate::not_found::{NotFoundReport, NotFoundReporter};
use crate::outcome::FloodgateFuture;
use crate::pipeline::{self, Facts};
use crate::route_spec::{WorkerCtx, WorkerLink};
use crate::state::ScopeId;
use crate::status::{ScopeInfo, ScopeKind};
use crate::worker_plans::WorkerPlans;

impl<S, B> Transform<S, ServiceRequest> for Floodgate
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = FloodgateMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        let shared = self.shared.clone();
        // The routes built on this worker's thread before this middleware: those it wraps.
        let routes = crate::route_spec::take_built();
        if let Err(err) = shared
            .validate()
            .and_then(|()| shared.validate_routes(&routes))
            .and_then(|()| crate::plans::validate_costs(&shared, &routes))
        {
            // actix-web takes no error value from a middleware's factory: say it here, where
            // the app fails to start, whether or not a logger is installed.
            log::error!(target: shared.log_target(), "floodgate: {err}; the app does not start");
            eprintln!("floodgate: configuration error: {err}; the app does not start");
            return ready(Err(()));
        }
        if !shared.global_rules.is_empty() {
            shared.register_scope(
                ScopeId::GLOBAL,
                ScopeInfo {
                    label: String::from("global"),
                    kind: ScopeKind::Rules(shared.global_rules.clone()),
                },
            );
        }
        if let Some(m) = &shared.metrics {
            m.attach(&shared.store, &shared.clock);
        }
        let ctx = Rc::new(WorkerCtx::default());
        let mut data = Extensions::new();
        data.insert(self.gatekeeper());
        data.insert(WorkerLink(ctx.clone()));
        ready(Ok(FloodgateMiddleware {
            service,
            plans: WorkerPlans::new(&shared, &routes),
            shared,
            ctx,
            data: Rc::new(data),
        }))
    }
}

/// The service of [`Floodgate`], one per worker.
pub struct FloodgateMiddleware<S> {
    service: S,
    shared: Arc<Gate>,
    ctx: Rc<WorkerCtx>,
    data: Rc<Extensions>,
    plans: WorkerPlans,
}

impl<S> fmt::Debug for FloodgateMiddleware<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FloodgateMiddleware")
            .field("floodgate", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for FloodgateMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = FloodgateFuture<NotFoundReport<S::Future, B>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let shared = &self.shared;
        // Read the facts now: after `call` the request belongs to the route.
        let ip = shared
            .ip_source
            .client_ip(req.peer_addr().map(|a| a.ip()), req.headers());
        let ip_key = shared.key_of(ip);
        let excluded = shared.excluded_methods.contains(req.method());
        let found = shared.targeting.before_routing(&req, ip);
        req.add_data_container(self.data.clone());

        // Routing: a route with floodgate rules leaves its mark in the worker's context.
        self.ctx.in_call.set(true);
        let fut = self.service.call(req);
        self.ctx.in_call.set(false);
        let route = self.ctx.mark.take();

        let fut = NotFoundReport::new(fut, NotFoundReporter::new(shared, &found, &ip_key));
        let facts = Facts {
            ip_key,
            excluded,
            found,
            route,
        };
        let begin = pipeline::begin(shared, &self.plans, facts);
        FloodgateFuture::begin(shared, begin, fut).defer_to_route(&self.ctx)
    }
}

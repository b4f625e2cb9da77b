//! [`FloodgateMiddleware`]: the service of [`Floodgate`], translating each request into the
//! decision steps and their answer into a response.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::dev::{Extensions, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::Error;

use crate::builder::Floodgate;
use crate::client::ClientKey;
use crate::decide::{self, NotFound, NotFoundReport};
use crate::gatekeeper::Shared;
use crate::metrics::Outcome;
use crate::outcome::{denied, key_missing, FloodgateFuture};
use crate::plans::{route_plans, RoutePlan, RoutePlans};
use crate::route_spec::{Mark, WorkerCtx, WorkerLink};
use crate::state::{Plan, ScopeId};
use crate::status::{ScopeInfo, ScopeKind};
use crate::targeting::KeyChoice;

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
        let global_rules = [(ScopeId::GLOBAL, shared.global_rules.clone())];
        let global = if shared.shadow {
            RoutePlan::split(
                &shared,
                Plan::new([], None),
                Some(Plan::new(global_rules, None)),
            )
        } else {
            RoutePlan::new(&shared, Plan::new(global_rules, None))
        };
        // Plans of the routes known now, so that their limits show in a client's status
        // before their first request.
        let plans = routes
            .iter()
            .map(|spec| {
                (
                    Arc::as_ptr(spec) as usize,
                    route_plans(&shared, spec, false),
                )
            })
            .collect();
        ready(Ok(FloodgateMiddleware {
            service,
            ban_only: RoutePlan::new(&shared, Plan::ban_only()),
            global,
            routes: RefCell::new(plans),
            targeted: RefCell::new(HashMap::new()),
            costed: RefCell::new(HashMap::new()),
            shared,
            ctx,
            data: Rc::new(data),
        }))
    }
}

/// The service of [`Floodgate`], one per worker.
pub struct FloodgateMiddleware<S> {
    service: S,
    shared: Arc<Shared>,
    ctx: Rc<WorkerCtx>,
    data: Rc<Extensions>,
    global: Rc<RoutePlan>,
    ban_only: Rc<RoutePlan>,
    routes: RefCell<HashMap<usize, RoutePlans>>,
    /// Route plans extended by matching targets, by (base plan, target bits).
    targeted: RefCell<HashMap<(usize, u64), Rc<RoutePlan>>>,
    /// Route plans of a cost function's answers, by (base plan, units).
    costed: RefCell<HashMap<(usize, u32), CostedPlan>>,
}

/// A plan with a cost function's units, and the plan it was made from (kept alive, so that
/// its address, the cache key, is not reused).
type CostedPlan = (Rc<RoutePlan>, Rc<RoutePlan>);

impl<S> fmt::Debug for FloodgateMiddleware<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FloodgateMiddleware")
            .field("floodgate", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<S> FloodgateMiddleware<S> {
    /// The plan for what routing chose; `None` when nothing applies (bypass).
    fn plan(&self, mark: Option<Mark>, excluded: bool) -> Option<Rc<RoutePlan>> {
        let Some(mark) = mark else {
            return Some(if excluded {
                self.ban_only.clone()
            } else {
                self.global.clone()
            });
        };
        if mark.spec.bypass {
            return None;
        }
        if excluded {
            return Some(self.ban_only.clone());
        }
        let key = Arc::as_ptr(&mark.spec) as usize;
        let mut routes = self.routes.borrow_mut();
        let plans = routes
            .entry(key)
            .or_insert_with(|| route_plans(&self.shared, &mark.spec, false));
        if mark.exempt {
            plans.exempt.clone()
        } else {
            plans.full.clone()
        }
    }

    /// `base` with each request using `units` (a cost function's answer), cached per worker.
    fn costed(&self, base: Rc<RoutePlan>, units: u32) -> Rc<RoutePlan> {
        let cache_key = (Rc::as_ptr(&base) as usize, units);
        if let Some((_, plan)) = self.costed.borrow().get(&cache_key) {
            return plan.clone();
        }
        let plan = base.with_units(&self.shared, units);
        let mut cache = self.costed.borrow_mut();
        if cache.len() >= 4096 {
            cache.clear();
            // Targeted plans are keyed by their base's address, which may now be reused.
            self.targeted.borrow_mut().clear();
        }
        // Holds `base` too, so that its address is not reused while the entry lives.
        cache.insert(cache_key, (base, plan.clone()));
        plan
    }

    /// `base` with the rules of the targets in `bits` added (targeting).
    fn targeted(&self, base: Rc<RoutePlan>, bits: u64) -> Rc<RoutePlan> {
        let cache_key = (Rc::as_ptr(&base) as usize, bits);
        if let Some(plan) = self.targeted.borrow().get(&cache_key) {
            return plan.clone();
        }
        let targeting = &self.shared.targeting;
        let with = |plan: &Plan, extra: Vec<_>| {
            let logs = plan.logs.iter().map(|l| (l.scope, l.rules.clone()));
            let policy = plan.policy.as_ref().map(|p| (p.scope, p.policy));
            Plan::new(logs.chain(extra), policy).with_units(plan.units())
        };
        // In app-wide shadow mode every target's rules are observed only.
        let (enforced, observed) = if self.shared.shadow {
            (Vec::new(), targeting.target_logs(bits, false))
        } else {
            (targeting.target_logs(bits, false), Vec::new())
        };
        let mut observed = observed;
        observed.extend(targeting.target_logs(bits, true));
        let shadow = match &base.shadow {
            Some(s) => Some(with(s, observed)),
            None if observed.is_empty() => None,
            None => Some(Plan::new(observed, None)),
        };
        let plan = base.relabel(RoutePlan::split(
            &self.shared,
            with(&base.plan, enforced),
            shadow,
        ));
        let mut cache = self.targeted.borrow_mut();
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(cache_key, plan.clone());
        plan
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
        // Read what the decision needs now: after `call` the request belongs to the route.
        let ip = shared
            .ip_source
            .client_ip(req.peer_addr().map(|a| a.ip()), req.headers());
        let ip_key = shared.key_of(ip);
        let excluded = shared.excluded_methods.contains(req.method());
        let mut pre = shared.targeting.before_routing(&req, ip);
        req.add_data_container(self.data.clone());

        self.ctx.in_call.set(true);
        let fut = self.service.call(req);
        self.ctx.in_call.set(false);
        let mut mark = self.ctx.mark.take();

        // Targeting: allow and deny lists, countries, keys, targets, probes.
        let fut = NotFoundReport::new(fut, NotFound::new(shared, &pre, &ip_key));
        // Counts a request decided here, before its route's plan (metrics).
        let count = |outcome| {
            if let Some(m) = &shared.metrics {
                m.request(mark.as_ref().map_or("other", |m| &m.spec.name), outcome);
            }
        };
        if pre.skip || mark.as_ref().is_some_and(|m| m.spec.bypass) {
            count(Outcome::Exempt);
            return FloodgateFuture::pass(fut, None);
        }
        if let Some(reason) = &pre.shadow_deny {
            count(Outcome::ShadowLimited);
            crate::shadow::would_deny(shared.log_target(), &ip_key, reason);
        }
        if let Some(reason) = &pre.deny {
            if !shared.shadow {
                count(Outcome::Denied);
                return FloodgateFuture::refused(denied(shared, &ip_key, reason));
            }
            count(Outcome::ShadowLimited);
            crate::shadow::would_deny(shared.log_target(), &ip_key, reason);
        }
        let route_key = mark.as_mut().and_then(|m| m.key.take());
        let units = mark.as_ref().map_or(1, |m| m.units);
        let (key, unlimited) = match shared.targeting.choose_key(&mut pre, route_key) {
            KeyChoice::Ip => (ip_key.clone(), false),
            KeyChoice::Custom(key) => (key, false),
            KeyChoice::Skip => (ip_key.clone(), true),
            KeyChoice::Refuse(status) => {
                return FloodgateFuture::refused(key_missing(shared, &ip_key, status))
            }
        };
        let Some(mut route) = self.plan(mark, excluded || unlimited) else {
            return FloodgateFuture::pass(fut, None);
        };
        if units != route.plan.units() && !excluded && !unlimited && route.plan.counts() {
            route = self.costed(route, units);
        }
        if pre.targets != 0 && !excluded && !unlimited {
            route = self.targeted(route, pre.targets);
        }
        let now = shared.now();
        let probe = pre
            .probe
            .then(|| decide::probe_step(shared, &ip_key, now))
            .flatten();
        let bans = ban_keys(shared, &ip_key, &key);
        let mut decision = decide::decide(&shared.store, bans, &key, &route.plan, now, probe);
        if let Some(shadow) = &route.shadow {
            let counters = route.counters.clone();
            decision =
                crate::shadow_check::then_shadow(shared, decision, &key, shadow, now, counters);
        }
        if let Some(m) = &shared.metrics {
            decision = m.timed(decision);
        }
        FloodgateFuture::decided(shared, &route, &key, decision, now, fut).defer_to_route(&self.ctx)
    }
}

/// The keys whose bans refuse a request counted under `key`, besides `key` itself: the IP
/// address's when the request is counted under another key, and the IPv6 networks around
/// it that [`Ipv6Rotation`] may have banned.
pub(crate) fn ban_keys(shared: &Shared, ip_key: &ClientKey, key: &ClientKey) -> Vec<ClientKey> {
    let mut bans = Vec::new();
    if key != ip_key {
        bans.push(ip_key.clone());
    }
    if shared.ipv6_rotation.is_on() {
        bans.extend(shared.ipv6_rotation.networks(ip_key));
    }
    bans
}

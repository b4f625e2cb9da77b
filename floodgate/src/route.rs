//! Per-route rules: what `#[specific]`, `#[bypass]` and `#[rate_limited]` attach, and
//! [`RouteRules`] for routes registered without the macros.
//!
//! How a route's rules reach the app-wide middleware: `RouteRules` is a resource-level
//! middleware. Routing in actix-web is synchronous: inside the app-wide `Floodgate`'s call to
//! its inner service, the router picks the resource and runs that resource's middleware
//! `call`, while handlers and extractors run only when the returned future is polled. So
//! `RouteRules::call` writes its route into a per-worker slot that `Floodgate` reads as soon as
//! its call returns: the decision is made before any handler or extractor code runs, knowing
//! exactly which route (and method) was chosen.
//!
//! A middleware between `Floodgate` and the routes may call them later, when its own future
//! is polled (`middleware::from_fn`, session and auth middleware): then `RouteRules` is called
//! after `Floodgate`'s call returned, and decides its route's own rules itself, still before
//! the handler runs (see `RouteRulesMiddleware::deferred`).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::Error;

use crate::gatekeeper::GateKeeper;
use crate::outcome::FloodgateFuture;
use crate::pipeline::{self, Facts};
use crate::plans::{route_plans, RoutePlans};
use crate::policy::{Policy, PolicyOverrides};
use crate::route_spec::{PolicySpec, RouteChoice, RouteSpec, WorkerLink};
use crate::rules::Rule;
use crate::targeting::keys::{extract_safely, Found};

/// Rules for one route registered without the attribute macros: wrap the resource with it.
///
/// The `name` identifies the route's counters: it must be unique per route and stable across
/// restarts (it keys persistent stores).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use actix_web::{web, App, HttpResponse};
/// use floodgate::{Floodgate, Policy, RouteRules, Rule};
///
/// let floodgate = Floodgate::new().rate_limit_rules(["20/1s".parse::<Rule>().unwrap()]);
/// let app = App::new()
///     .wrap(floodgate)
///     .service(
///         web::resource("/search")
///             .wrap(RouteRules::new("search").specific([Rule::new(1, Duration::from_secs(2))]))
///             .route(web::get().to(HttpResponse::Ok)),
///     )
///     .service(
///         web::resource("/health")
///             .wrap(RouteRules::new("health").bypass())
///             .route(web::get().to(HttpResponse::Ok)),
///     )
///     .service(
///         web::resource("/export")
///             .wrap(RouteRules::new("export").policy(Policy::new(5, Duration::from_secs(3600))))
///             .route(web::get().to(HttpResponse::Ok)),
///     );
/// ```
#[derive(Clone, Debug)]
pub struct RouteRules {
    spec: Arc<RouteSpec>,
}

impl RouteRules {
    /// Rules for the route named `name`; with nothing more, the app's global rules apply.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        RouteRules {
            spec: Arc::new(RouteSpec {
                name: name.into(),
                bypass: false,
                rules: Cow::Borrowed(&[]),
                standalone: false,
                policy: None,
                count: None,
                key: None,
                shadow: false,
                cost: None,
            }),
        }
    }

    #[doc(hidden)]
    pub fn from_static(spec: &'static RouteSpec) -> Self {
        RouteRules {
            spec: Arc::new(spec.clone()),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut RouteSpec)) -> Self {
        f(Arc::make_mut(&mut self.spec));
        self
    }

    /// Adds rules of this route, counted per client for this route only, on top of the global
    /// rules (see [`standalone`](Self::standalone)).
    pub fn specific(self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.edit(|s| s.rules.to_mut().extend(rules))
    }

    /// Only this route's own rules apply, not the global ones.
    pub fn standalone(self) -> Self {
        self.edit(|s| s.standalone = true)
    }

    /// Nothing applies on this route: no rule, no counting, no ban check.
    pub fn bypass(self) -> Self {
        self.edit(|s| s.bypass = true)
    }

    /// This route follows `policy` (the floodgate family).
    pub fn policy(self, policy: Policy) -> Self {
        self.edit(|s| s.policy = Some(PolicySpec::Full(policy)))
    }

    /// Counts this route's requests under the key `extractor` gives instead of the IP
    /// address (see [`KeyExtractor`](crate::KeyExtractor)); it runs during routing, so it
    /// can read the route's path parameters.
    pub fn key(self, extractor: impl crate::KeyExtractor) -> Self {
        let key = crate::targeting::keys::RouteKey::Dyn(Arc::new(extractor));
        self.edit(|s| s.key = Some(key))
    }

    /// This route follows the policy registered on the app as `name` (see
    /// [`Floodgate::policy`](crate::Floodgate::policy)), sharing its window, block count and
    /// punishment with every route that names it.
    pub fn shared_policy(self, name: impl Into<Cow<'static, str>>) -> Self {
        let name = name.into();
        self.edit(|s| s.policy = Some(PolicySpec::Shared(name)))
    }

    /// Shadow mode for this route's own rules and policy: every request is checked and
    /// counted as usual, but one they would refuse is logged (at info) and served, and a
    /// policy's block limit never punishes. The app's global rules and bans in force still
    /// apply; offences reported on this route never ban. See
    /// [`Floodgate::shadow`](crate::Floodgate::shadow).
    pub fn shadow(self, on: bool) -> Self {
        self.edit(|s| s.shadow = on)
    }

    /// Each request of this route uses `units` of every limit's count (its cost): under a
    /// rule of 100 per minute, twenty requests of cost 5 pass. A cost of 0, or above a count
    /// of a limit that applies to the route (no request could ever pass), stops the app from
    /// starting with a message naming the route.
    pub fn cost(self, units: u32) -> Self {
        self.edit(|s| s.cost = Some(crate::route_spec::RouteCost::Units(units)))
    }

    /// Each request of this route uses the units `cost` gives for it (at least 1: an answer
    /// of 0 counts 1). A request whose cost is above a limit's count is refused (429) for
    /// that limit's window: it could never pass. It runs during routing, before the decision.
    pub fn cost_fn(
        self,
        cost: impl Fn(&actix_web::HttpRequest) -> u32 + Send + Sync + 'static,
    ) -> Self {
        let cost = crate::route_spec::RouteCost::Dyn(Arc::new(cost));
        self.edit(|s| s.cost = Some(cost))
    }

    /// The route's own rules and policy count only the requests whose response `when`
    /// matches: `"4xx"`, a list of statuses, or a function (see [`CountWhen`]). A request is
    /// counted when it is decided, and given back once its response does not match; a
    /// client over the limit is refused before the handler runs. A route without rules or a
    /// policy of its own, or an invalid class or status, stops the app from starting with a
    /// message naming the route.
    ///
    /// [`CountWhen`]: crate::CountWhen
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_web::{web, App, HttpResponse};
    /// use floodgate::{CountWhen, Floodgate, RouteRules, Rule};
    ///
    /// // Five failed logins per 15 minutes; successful ones are not counted.
    /// let login = RouteRules::new("login")
    ///     .specific([Rule::new(5, Duration::from_secs(900))])
    ///     .count_when(CountWhen::statuses([401, 403]));
    /// let app = App::new().wrap(Floodgate::new()).service(
    ///     web::resource("/login").wrap(login).route(web::post().to(HttpResponse::Unauthorized)),
    /// );
    /// ```
    pub fn count_when(self, when: impl Into<crate::CountWhen>) -> Self {
        let when = when.into();
        self.edit(|s| s.count = Some(when))
    }

    /// This route follows the app's default policy.
    pub fn default_policy(self) -> Self {
        self.edit(|s| s.policy = Some(PolicySpec::Overrides(PolicyOverrides::NONE)))
    }
}

impl<S, B> Transform<S, ServiceRequest> for RouteRules
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = RouteRulesMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        if let Err(err) = self.spec.validate() {
            log::error!("floodgate: {err}; the app does not start");
            eprintln!("floodgate: configuration error: {err}; the app does not start");
            return ready(Err(()));
        }
        crate::route_spec::built(&self.spec);
        ready(Ok(RouteRulesMiddleware {
            service,
            spec: self.spec.clone(),
            plans: RefCell::new(None),
            warned: Cell::new(false),
        }))
    }
}

/// The service of [`RouteRules`]: marks the route for the app-wide middleware, or decides
/// itself when it is called after that middleware's call returned.
pub struct RouteRulesMiddleware<S> {
    service: S,
    spec: Arc<RouteSpec>,
    /// This route's plans without the global rules, for deferred routing, with the address
    /// of the floodgate settings they were built from.
    plans: RefCell<Option<(usize, RoutePlans)>>,
    /// Whether this worker's copy of the route has logged its warning.
    warned: Cell<bool>,
}

impl<S> fmt::Debug for RouteRulesMiddleware<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteRulesMiddleware")
            .field("route", &self.spec.name)
            .finish_non_exhaustive()
    }
}

impl<S> RouteRulesMiddleware<S> {
    /// Whether the policy's `request_data_check` exempts this request.
    fn exempt(&self, req: &ServiceRequest) -> bool {
        if self.spec.policy.is_none() {
            return false;
        }
        let Some(gk) = req.app_data::<GateKeeper>() else {
            return false;
        };
        let check = self.spec.data_check(&gk.shared.policy_source());
        check.is_some_and(|check| {
            // A panicking check must not take the worker down: count the request.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(req.request())))
                .unwrap_or_else(|_| {
                    log::error!(
                        "floodgate: request_data_check of route {} panicked; the request is \
                         counted",
                        self.spec.name
                    );
                    false
                })
        })
    }

    fn route_key(&self, req: &ServiceRequest) -> Option<Found> {
        self.spec.key.as_ref().map(|k| {
            extract_safely(&format!("route {}", self.spec.name), || {
                k.extract(req.request())
            })
        })
    }

    /// The units this request uses (1 without a cost).
    fn units(&self, req: &ServiceRequest) -> u32 {
        match &self.spec.cost {
            None => 1,
            Some(crate::route_spec::RouteCost::Units(n)) => (*n).max(1),
            Some(cost) => cost.units(&self.spec.name, req.request()),
        }
    }

    /// Logs `problem` once per route and worker.
    fn warn(&self, level: log::Level, problem: &str) {
        if !self.warned.replace(true) {
            log::log!(level, "floodgate: route {} {problem}", self.spec.name);
        }
    }
}

impl<S, B> Service<ServiceRequest> for RouteRulesMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = FloodgateFuture<S::Future>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if self.spec.shadow {
            // Offences reported on a shadow route never ban (see `GateKeeper::report`).
            actix_web::HttpMessage::extensions_mut(&req).insert(crate::shadow::ShadowRoute);
        }
        match req.app_data::<WorkerLink>() {
            Some(WorkerLink(ctx)) if ctx.in_call.get() => {
                let exempt = self.exempt(&req);
                let key = self.route_key(&req);
                let units = self.units(&req);
                ctx.mark.set(Some(RouteChoice {
                    spec: self.spec.clone(),
                    exempt,
                    key,
                    units,
                }));
                FloodgateFuture::pass(self.service.call(req))
            }
            Some(WorkerLink(ctx)) => {
                ctx.deferred_seen.set(true);
                self.deferred(req)
            }
            None => {
                self.warn(
                    log::Level::Error,
                    "carries floodgate rules, but no Floodgate wraps its App or scope: add \
                     .wrap(floodgate.clone()); its rules are not applied",
                );
                FloodgateFuture::pass(self.service.call(req))
            }
        }
    }
}

impl<S, B> RouteRulesMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    /// Routing happened after `Floodgate`'s call returned (a middleware between them calls
    /// the routes only when polled): `Floodgate` has already checked the bans and counted
    /// the global rules (and targets) under the app's key or the IP address, so this route
    /// decides its own rules and policy now, before its handler runs.
    fn deferred(&self, req: ServiceRequest) -> FloodgateFuture<S::Future> {
        let Some(shared) = req.app_data::<GateKeeper>().map(|gk| gk.shared.clone()) else {
            return FloodgateFuture::pass(self.service.call(req));
        };
        self.warn(
            log::Level::Debug,
            "is routed after the Floodgate middleware's call (a middleware between them defers \
             routing): it decides its own rules; the global rules were counted before routing",
        );
        let ip = shared
            .ip_source
            .client_ip(req.peer_addr().map(|a| a.ip()), req.headers());
        let facts = Facts {
            ip_key: shared.key_of(ip),
            excluded: shared.excluded_methods.contains(req.method()),
            found: shared.targeting.before_routing(&req, ip),
            route: Some(RouteChoice {
                spec: self.spec.clone(),
                exempt: self.exempt(&req),
                key: self.route_key(&req),
                units: self.units(&req),
            }),
        };
        let id = Arc::as_ptr(&shared) as usize;
        let plans = |mark: &RouteChoice| {
            let mut cache = self.plans.borrow_mut();
            let plans = match &mut *cache {
                Some((built_for, plans)) if *built_for == id => plans,
                slot => {
                    let plans = route_plans(&shared, &self.spec, true);
                    &mut slot.insert((id, plans)).1
                }
            };
            if mark.exempt {
                plans.exempt.clone()
            } else {
                plans.full.clone()
            }
        };
        let begin = pipeline::begin_deferred(&shared, plans, facts);
        FloodgateFuture::begin(&shared, begin, self.service.call(req))
    }
}

//! [`Floodgate`]: the app-wide middleware and its settings.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready as ready_poll, Context, Poll};

use actix_web::dev::{Extensions, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::error::InternalError;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{Error, HttpResponse};
use ipnet::IpNet;
use pin_project_lite::pin_project;

use crate::client::{ClientKey, IpSource};
use crate::clock::{Clock, Timestamp};
use crate::error::{ConfigError, StoreError};
use crate::gatekeeper::{GateKeeper, Shared};
use crate::policy::Policy;
use crate::response::{self, Refusal, RefusalKind};
use crate::route::{PolicySpec, RouteSpec, WorkerCtx, WorkerLink};
use crate::rules::{BanRule, Rule};
use crate::state::{Decision, Plan, Quota, ScopeId};
use crate::status::{ScopeInfo, ScopeKind};
use crate::store::{Store, StoreFailure, StoreFuture};
use crate::targeting::{self, DenyReason, KeyChoice, NotFound, NotFoundReport};

/// Rate limiting and banning for an actix-web `App` (or scope): wrap it with this.
///
/// `Floodgate` is `Clone`; all clones, and so all workers, share one state. With no rules it
/// lets everything through (operator bans still apply).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use actix_web::{get, http::Method, App, HttpServer};
/// use floodgate::{BanRule, Floodgate, Rule};
///
/// #[get("/ping")]
/// async fn ping() -> &'static str { "ok" }
///
/// #[actix_web::main]
/// async fn main() -> std::io::Result<()> {
///     let floodgate = Floodgate::new()
///         .ban_rule(BanRule::new(3, Duration::from_secs(10), Duration::from_secs(600)))
///         .rate_limit_rules([Rule::new(20, Duration::from_secs(1)), Rule::new(100, Duration::from_secs(10))])
///         .excluded_methods([Method::HEAD]);
///     HttpServer::new(move || App::new().wrap(floodgate.clone()).service(ping))
///         .bind(("127.0.0.1", 8080))?
///         .run()
///         .await
/// }
/// ```
///
/// # Security
///
/// By default the client is the TCP peer. Behind a reverse proxy every client would then be
/// the proxy: use [`ip_header`](Self::ip_header) or [`trusted_proxies`](Self::trusted_proxies).
/// `ip_header` trusts the header blindly, so it is only safe when the proxy always sets it and
/// clients cannot reach the app directly; otherwise any client can pick its own address and
/// evade limits or frame another client. `trusted_proxies` reads forwarding headers only from
/// the listed proxies.
#[derive(Clone)]
pub struct Floodgate {
    pub(crate) shared: Arc<Shared>,
}

impl Default for Floodgate {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Floodgate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl Floodgate {
    /// A floodgate with no rules, keeping state in a [`MemoryStore`](crate::MemoryStore).
    pub fn new() -> Self {
        Floodgate {
            shared: Arc::new(Shared::new()),
        }
    }

    pub(crate) fn edit(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        if Arc::get_mut(&mut self.shared).is_none() {
            self.shared = Arc::new(self.shared.fork());
        }
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            f(shared);
        }
        self
    }

    /// Reads the client's address from this header, set by your reverse proxy (the right-most
    /// value when it holds a list). A missing or unparsable value falls back to the peer.
    ///
    /// An invalid header name is logged as an error and the peer address is used; see
    /// [`try_ip_header`](Self::try_ip_header) to get the error instead.
    pub fn ip_header(self, name: &str) -> Self {
        match self.clone().try_ip_header(name) {
            Ok(this) => this,
            Err(err) => {
                log::error!("floodgate: {err}; using the peer address");
                self
            }
        }
    }

    /// Like [`ip_header`](Self::ip_header), but an invalid header name is an error.
    pub fn try_ip_header(self, name: &str) -> Result<Self, ConfigError> {
        let header = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            ConfigError::invalid("ip_header", format!("{name:?} is not a valid header name"))
        })?;
        Ok(self.edit(|s| s.ip_source = IpSource::Header(header)))
    }

    /// Trusts `Forwarded` and `X-Forwarded-For` only from these proxies (CIDRs such as
    /// `"10.0.0.0/8"` or single addresses): the client is the right-most hop that is not a
    /// trusted proxy. Requests from anyone else are keyed by their peer address.
    pub fn trusted_proxies<I, T>(self, proxies: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let mut nets = Vec::new();
        for p in proxies {
            let p = p.as_ref().trim();
            let net = p
                .parse::<IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError::invalid(
                        "trusted_proxies",
                        format!("{p:?} is not an address or CIDR range"),
                    )
                })?;
            nets.push(net);
        }
        Ok(self.edit(|s| s.ip_source = IpSource::TrustedProxies(nets.into())))
    }

    /// Keys IPv6 clients by their first `bits` bits (default 64; 128 keys each address).
    pub fn ipv6_prefix(self, bits: u8) -> Self {
        self.edit(|s| s.v6_prefix = bits.clamp(1, 128))
    }

    /// Bans a client when reported offences reach this rule (see [`GateKeeper::report`]).
    pub fn ban_rule(self, rule: BanRule) -> Self {
        self.edit(|s| s.ban_rule = Some(rule))
    }

    /// The global rules, applied to every route that is not `standalone` or `#[bypass]`.
    pub fn rate_limit_rules(self, rules: impl IntoIterator<Item = Rule>) -> Self {
        let rules: Vec<Rule> = rules.into_iter().collect();
        for r in &rules {
            if r.count() == 0 || r.window().is_zero() {
                log::warn!("floodgate: global rule {r} refuses every request or never refuses");
            }
        }
        self.edit(|s| s.global_rules = rules)
    }

    /// Requests with these methods are neither counted nor rate-checked (bans still apply).
    pub fn excluded_methods(self, methods: impl IntoIterator<Item = Method>) -> Self {
        let methods = methods.into_iter().collect();
        self.edit(|s| s.excluded_methods = methods)
    }

    /// The policy of `#[rate_limited]` routes; their attribute keys override it.
    pub fn default_policy(self, policy: Policy) -> Self {
        self.edit(|s| s.default_policy = policy)
    }

    /// Whether the global rules also apply on routes with a policy (default `true`).
    pub fn policies_use_global_rules(self, yes: bool) -> Self {
        self.edit(|s| s.policies_use_global_rules = yes)
    }

    /// Keeps state in `store` instead of memory.
    pub fn store(self, store: impl Store) -> Self {
        let store: Arc<dyn Store> = Arc::new(store);
        self.edit(|s| s.store = store)
    }

    /// Reads time from `clock` (a [`FakeClock`](crate::FakeClock) in tests).
    pub fn clock(self, clock: impl Clock) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(clock);
        self.edit(|s| s.clock = clock)
    }

    /// Whether limited routes carry `RateLimit-Policy` and `RateLimit` (default `true`).
    pub fn ratelimit_headers(self, yes: bool) -> Self {
        self.edit(|s| s.ratelimit_headers = yes)
    }

    /// Whether limited routes also carry `X-RateLimit-Limit`, `-Remaining` and `-Reset`
    /// (default `false`).
    pub fn legacy_headers(self, yes: bool) -> Self {
        self.edit(|s| s.legacy_headers = yes)
    }

    /// Builds refusal responses with `f` instead of the default problem+json body.
    /// `Retry-After` and the RateLimit fields are added unless `f` sets them.
    pub fn refusal_response(
        self,
        f: impl Fn(&Refusal<'_>) -> HttpResponse + Send + Sync + 'static,
    ) -> Self {
        let f: crate::gatekeeper::RefusalHook = Arc::new(f);
        self.edit(|s| s.refusal_hook = Some(f))
    }

    /// What requests get when the store fails (default [`StoreFailure::Open`]).
    pub fn store_failure(self, policy: StoreFailure) -> Self {
        self.edit(|s| s.store_failure = policy)
    }

    /// The handle on this floodgate's state.
    pub fn gatekeeper(&self) -> GateKeeper {
        GateKeeper {
            shared: self.shared.clone(),
        }
    }
}

/// A route's plan with what its responses need.
#[derive(Debug)]
struct RoutePlan {
    plan: Arc<Plan>,
    policy_header: Option<HeaderValue>,
    ratelimit: response::RateLimitCache,
}

/// Plans for one annotated route.
#[derive(Debug)]
struct RoutePlans {
    /// Keeps the spec alive, so its address (the cache key) is never reused.
    _spec: Arc<RouteSpec>,
    full: Option<Rc<RoutePlan>>,
    /// Without the policy, for requests its `request_data_check` exempts.
    exempt: Option<Rc<RoutePlan>>,
}

impl RoutePlan {
    fn new(shared: &Shared, plan: Plan) -> Option<Rc<RoutePlan>> {
        let policy_header = if shared.ratelimit_headers {
            response::policy_header(plan.limits())
        } else {
            None
        };
        Some(Rc::new(RoutePlan {
            plan: Arc::new(plan),
            policy_header,
            ratelimit: response::RateLimitCache::default(),
        }))
    }
}

fn route_plans(shared: &Shared, spec: &Arc<RouteSpec>) -> RoutePlans {
    if spec.bypass {
        return RoutePlans {
            _spec: spec.clone(),
            full: None,
            exempt: None,
        };
    }
    let policy = spec.policy.map(|p| match p {
        PolicySpec::Full(p) => p,
        PolicySpec::Overrides(o) => shared.default_policy.with_overrides(&o),
    });
    let use_global = !spec.standalone && (policy.is_none() || shared.policies_use_global_rules);
    let mut logs = Vec::new();
    if use_global && !shared.global_rules.is_empty() {
        logs.push((ScopeId::GLOBAL, shared.global_rules.clone()));
    }
    if !spec.rules.is_empty() {
        let label = format!("rules {}", spec.name);
        let id = ScopeId::named(&label);
        shared.register_scope(
            id,
            ScopeInfo {
                label,
                kind: ScopeKind::Rules(spec.rules.to_vec()),
            },
        );
        logs.push((id, spec.rules.to_vec()));
    }
    let policy = policy.map(|p| {
        let label = format!("policy {}", spec.name);
        let id = ScopeId::named(&label);
        shared.register_scope(
            id,
            ScopeInfo {
                label,
                kind: ScopeKind::Policy(p),
            },
        );
        (id, p)
    });
    let exempt = policy
        .is_some()
        .then(|| RoutePlan::new(shared, Plan::new(logs.clone(), None)))
        .flatten();
    RoutePlans {
        _spec: spec.clone(),
        full: RoutePlan::new(shared, Plan::new(logs, policy)),
        exempt,
    }
}

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
        if !shared.global_rules.is_empty() {
            shared.register_scope(
                ScopeId::GLOBAL,
                ScopeInfo {
                    label: String::from("global"),
                    kind: ScopeKind::Rules(shared.global_rules.clone()),
                },
            );
        }
        let ctx = Rc::new(WorkerCtx::default());
        let mut data = Extensions::new();
        data.insert(self.gatekeeper());
        data.insert(WorkerLink(ctx.clone()));
        let global = RoutePlan::new(
            &shared,
            Plan::new([(ScopeId::GLOBAL, shared.global_rules.clone())], None),
        );
        ready(Ok(FloodgateMiddleware {
            service,
            ban_only: RoutePlan::new(&shared, Plan::ban_only()),
            global,
            routes: RefCell::new(HashMap::new()),
            targeted: RefCell::new(HashMap::new()),
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
    global: Option<Rc<RoutePlan>>,
    ban_only: Option<Rc<RoutePlan>>,
    routes: RefCell<HashMap<usize, RoutePlans>>,
    /// Route plans extended by matching targets, by (base plan, target bits).
    targeted: RefCell<HashMap<(usize, u64), Rc<RoutePlan>>>,
}

impl<S> fmt::Debug for FloodgateMiddleware<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FloodgateMiddleware")
            .field("floodgate", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<S> FloodgateMiddleware<S> {
    /// The plan for what routing chose; `None` when nothing applies (bypass).
    fn plan(&self, mark: Option<crate::route::Mark>, excluded: bool) -> Option<Rc<RoutePlan>> {
        let Some(mark) = mark else {
            return if excluded {
                self.ban_only.clone()
            } else {
                self.global.clone()
            };
        };
        if mark.spec.bypass {
            return None;
        }
        if excluded {
            return self.ban_only.clone();
        }
        let key = Arc::as_ptr(&mark.spec) as usize;
        let mut routes = self.routes.borrow_mut();
        let plans = routes
            .entry(key)
            .or_insert_with(|| route_plans(&self.shared, &mark.spec));
        if mark.exempt {
            plans.exempt.clone()
        } else {
            plans.full.clone()
        }
    }

    /// `base` with the rules of the targets in `bits` added (targeting).
    fn targeted(&self, base: Rc<RoutePlan>, bits: u64) -> Rc<RoutePlan> {
        let cache_key = (Rc::as_ptr(&base) as usize, bits);
        if let Some(plan) = self.targeted.borrow().get(&cache_key) {
            return plan.clone();
        }
        let extra = self.shared.targeting.target_logs(bits);
        let logs = base.plan.logs.iter().map(|l| (l.scope, l.rules.clone()));
        let policy = base.plan.policy.as_ref().map(|p| (p.scope, p.policy));
        let Some(plan) = RoutePlan::new(&self.shared, Plan::new(logs.chain(extra), policy)) else {
            return base;
        };
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
        if pre.skip || mark.as_ref().is_some_and(|m| m.spec.bypass) {
            return FloodgateFuture::pass(fut, None);
        }
        if let Some(reason) = &pre.deny {
            return FloodgateFuture::refused(denied(shared, &ip_key, reason));
        }
        let route_key = mark.as_mut().and_then(|m| m.key.take());
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
        if pre.targets != 0 && !excluded && !unlimited {
            route = self.targeted(route, pre.targets);
        }
        let now = shared.now();
        let probe = pre
            .probe
            .then(|| shared.targeting.probe_step(shared, &ip_key, now))
            .flatten();
        let mut pending = targeting::decide(&shared.store, &ip_key, &key, &route.plan, now, probe);
        match pending.take_ready() {
            Some(result) => match settle(shared, &route, &key, result, now) {
                Ok(headers) => FloodgateFuture::pass(fut, headers),
                Err(refusal) => FloodgateFuture::refused(refusal),
            },
            None => FloodgateFuture {
                state: State::Deciding {
                    decision: pending,
                    fut: Some(fut),
                    wait: Some(Box::new(Waiting {
                        shared: shared.clone(),
                        route,
                        key,
                        now,
                    })),
                },
            },
        }
    }
}

/// What an allowed response gets: the RateLimit fields.
struct Headers {
    route: Rc<RoutePlan>,
    quota: Option<Quota>,
    ietf: bool,
    legacy: bool,
}

impl Headers {
    fn apply(self, headers: &mut actix_web::http::header::HeaderMap) {
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
fn settle(
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
    match decision {
        Decision::Allowed { quota } => {
            log::trace!("floodgate: {key} allowed");
            Ok(headers_on.then(|| Headers {
                route: route.clone(),
                quota,
                ietf: shared.ratelimit_headers,
                legacy: shared.legacy_headers,
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
                return Ok(None);
            };
            if started {
                log::info!(
                    "floodgate: {key} blocked for {}s by policy {}",
                    response::retry_after_secs(retry_after),
                    info.name
                );
            } else {
                log::debug!("floodgate: {key} limited by {} ({reason:?})", info.name);
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
                match until {
                    Some(t) => log::warn!("floodgate: {key} banned until {t} ({reason:?})"),
                    None => log::warn!("floodgate: {key} blacklisted ({reason:?})"),
                }
            } else {
                log::debug!("floodgate: {key} refused: banned ({reason:?})");
            }
            let retry_after = until.map(|t| t.saturating_since(now));
            // A blacklist has no reset time: the policy field only, no RateLimit field.
            let headers = (headers_on && !route.plan.limits().is_empty()).then(|| Headers {
                route: route.clone(),
                quota: retry_after.map(|reset| Quota {
                    limit: 0,
                    remaining: 0,
                    reset,
                }),
                ietf: shared.ratelimit_headers,
                legacy: shared.legacy_headers,
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

/// A client refused by a deny list, a country rule or a denying target (403, permanent).
fn denied(shared: &Shared, client: &ClientKey, reason: &DenyReason) -> Error {
    log::debug!("floodgate: {client} denied ({reason:?})");
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
fn key_missing(shared: &Shared, client: &ClientKey, status: StatusCode) -> Error {
    log::debug!("floodgate: {client} sent no key; refused with {status}");
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

struct Waiting {
    shared: Arc<Shared>,
    route: Rc<RoutePlan>,
    key: ClientKey,
    now: Timestamp,
}

pin_project! {
    /// The response future of [`FloodgateMiddleware`].
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
    fn pass(fut: F, headers: Option<Headers>) -> Self {
        FloodgateFuture {
            state: State::Serving { fut, headers },
        }
    }

    fn refused(error: Error) -> Self {
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
                        Ok(headers) => State::Serving { fut, headers },
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

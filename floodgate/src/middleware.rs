//! [`Floodgate`]: the app-wide middleware and its settings.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::dev::{Extensions, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::HeaderName;
use actix_web::http::Method;
use actix_web::{Error, HttpResponse};
use ipnet::IpNet;

use crate::client::{ClientKey, IpSource, ProxyHeader};
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::gatekeeper::{GateKeeper, Shared};
use crate::outcome::{denied, key_missing, FloodgateFuture};
use crate::plans::{route_plans, RoutePlan, RoutePlans};
use crate::policy::Policy;
use crate::response::Refusal;
use crate::rotation::Ipv6Rotation;
use crate::route_spec::{Mark, WorkerCtx, WorkerLink};
use crate::rules::{BanRule, Rule};
use crate::state::{Plan, ScopeId};
use crate::status::{ScopeInfo, ScopeKind};
use crate::store::{Store, StoreFailure};
use crate::targeting::{self, KeyChoice, NotFound, NotFoundReport};

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
/// # Configuration mistakes
///
/// A setting that cannot work (a rule of count 0 or a window under a millisecond, a target
/// that does nothing, an invalid header name given to an infallible setter, ...) stops the app
/// from starting: the middleware's factory fails and the message, naming the setting, is
/// logged at error and printed to stderr. Call [`validate`](Self::validate) first to get it
/// as a [`ConfigError`].
///
/// # Security
///
/// By default the client is the TCP peer. Behind a reverse proxy every client would then be
/// the proxy: use [`trusted_proxies`](Self::trusted_proxies) (with
/// [`proxy_header`](Self::proxy_header)) or [`ip_header`](Self::ip_header). `ip_header`
/// trusts the header blindly, so it is only safe when the proxy always sets it and clients
/// cannot reach the app directly; otherwise any client can pick its own address and evade
/// limits or frame another client. `trusted_proxies` reads the forwarding header only from
/// the listed proxies. See the README's threat model.
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
    /// An invalid header name stops the app from starting (see [`validate`](Self::validate));
    /// [`try_ip_header`](Self::try_ip_header) gives the error at once.
    pub fn ip_header(self, name: &str) -> Self {
        match self.clone().try_ip_header(name) {
            Ok(this) => this,
            Err(err) => self.edit(|s| s.config_errors.push(err)),
        }
    }

    /// Like [`ip_header`](Self::ip_header), but an invalid header name is an error.
    pub fn try_ip_header(self, name: &str) -> Result<Self, ConfigError> {
        let header = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            ConfigError::invalid("ip_header", format!("{name:?} is not a valid header name"))
        })?;
        Ok(self.edit(|s| s.ip_source = IpSource::Header(header)))
    }

    /// Trusts the forwarding header (`X-Forwarded-For` by default, see
    /// [`proxy_header`](Self::proxy_header)) only from these proxies (CIDRs such as
    /// `"10.0.0.0/8"` or single addresses): the client is the right-most hop that is not a
    /// trusted proxy. Requests from anyone else are keyed by their peer address.
    ///
    /// # Security
    ///
    /// Only the named header is read, never the other one: a client that sends its own
    /// `Forwarded` through a proxy that writes `X-Forwarded-For` changes nothing. A hop that
    /// is not an address (`unknown`, an obfuscated identifier, junk) ends the walk: such a
    /// request is keyed as an unknown client (the key `unknown`, shared by all of them, on no
    /// allow list), never as the proxy. List every proxy of the chain, and nothing else.
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
        Ok(self.edit(|s| {
            s.ip_source = IpSource::TrustedProxies(nets.into(), s.proxy_header.unwrap_or_default())
        }))
    }

    /// The header your trusted proxies write: [`ProxyHeader::XForwardedFor`] (the default) or
    /// [`ProxyHeader::Forwarded`] (RFC 7239). Only this header is read. Needs
    /// [`trusted_proxies`](Self::trusted_proxies) (before or after this call).
    pub fn proxy_header(self, header: ProxyHeader) -> Self {
        self.edit(|s| {
            s.proxy_header = Some(header);
            if let IpSource::TrustedProxies(nets, _) = &s.ip_source {
                s.ip_source = IpSource::TrustedProxies(nets.clone(), header);
            }
        })
    }

    /// Bans a whole IPv6 network when enough of its client networks (/64s) were banned within
    /// a window (see [`Ipv6Rotation`]; on by default, [`Ipv6Rotation::off`] to turn it off).
    pub fn ipv6_rotation(self, rotation: Ipv6Rotation) -> Self {
        self.edit(|s| s.ipv6_rotation = rotation)
    }

    /// Checks the settings as the app's start will: the first configuration mistake, naming
    /// the setting. An app whose floodgate fails this does not start.
    ///
    /// ```
    /// use std::time::Duration;
    /// use floodgate::{Floodgate, Rule};
    ///
    /// let bad = Floodgate::new().rate_limit_rules([Rule::new(10, Duration::ZERO)]);
    /// let err = bad.validate().unwrap_err();
    /// assert_eq!(err.field(), "rate_limit_rules");
    /// assert!(Floodgate::new().validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.shared.validate()
    }

    /// Keys IPv6 clients by their first `bits` bits (default 64; 128 keys each address).
    pub fn ipv6_prefix(self, bits: u8) -> Self {
        self.edit(|s| s.v6_prefix = bits.clamp(1, 128))
    }

    /// Bans a client when reported offences reach this rule (see [`GateKeeper::report`]).
    pub fn ban_rule(self, rule: BanRule) -> Self {
        self.edit(|s| s.ban_rule = Some(rule))
    }

    /// The global rules, applied to every route that is not `standalone` or `#[bypass]`. A
    /// rule of count 0 or with a window under a millisecond stops the app from starting.
    pub fn rate_limit_rules(self, rules: impl IntoIterator<Item = Rule>) -> Self {
        let rules: Vec<Rule> = rules.into_iter().collect();
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

    /// Registers `policy` as `name`, for routes that share it: every route naming it
    /// (`#[rate_limited(policy = "api")]`, [`RouteRules::shared_policy`](crate::RouteRules::shared_policy))
    /// counts into one window, one block count and one punishment per client, as
    /// FlaskFloodgate's handler shared by several routes does. A route naming a policy that is
    /// not registered stops the app from starting; so does a name registered twice.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_web::{get, web, App, HttpResponse};
    /// use floodgate::{rate_limited, Floodgate, Policy, RouteRules};
    ///
    /// #[rate_limited(policy = "api")]
    /// #[get("/a")]
    /// async fn a() -> &'static str { "a" }
    ///
    /// let floodgate = Floodgate::new()
    ///     .policy("api", Policy::new(20, Duration::from_secs(60)).block_limit(5));
    /// let app = App::new().wrap(floodgate).service(a).service(
    ///     web::resource("/b")
    ///         .wrap(RouteRules::new("b").shared_policy("api"))
    ///         .to(HttpResponse::Ok),
    /// );
    /// ```
    pub fn policy(self, name: &str, policy: Policy) -> Self {
        self.edit(|s| {
            if s.shared_policies.iter().any(|(n, _)| &**n == name) {
                s.config_errors.push(ConfigError::invalid(
                    "policy",
                    format!("two policies are registered as {name:?}"),
                ));
            } else {
                s.shared_policies.push((Arc::from(name), policy));
            }
        })
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

    /// Logs this floodgate's decisions (refusals, blocks, bans, reports), operator actions
    /// and store failures under the `log` target `target` (default `"floodgate"`), so that an
    /// app can route or filter them (`RUST_LOG=myapp::limits=info`), as FlaskFloodgate's
    /// `logger=` does. Levels: debug for each refusal, info for a block, warn for a ban, a
    /// blacklist and a store failure. Lines logged by the stores themselves (the SQLite and
    /// Redis connections) keep their module targets under `floodgate::`.
    pub fn log_target(self, target: &str) -> Self {
        let target: Arc<str> = Arc::from(target);
        self.edit(|s| s.log_target = target)
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
        let ctx = Rc::new(WorkerCtx::default());
        let mut data = Extensions::new();
        data.insert(self.gatekeeper());
        data.insert(WorkerLink(ctx.clone()));
        let global = RoutePlan::new(
            &shared,
            Plan::new([(ScopeId::GLOBAL, shared.global_rules.clone())], None),
        );
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

    /// `base` with the rules of the targets in `bits` added (targeting).
    fn targeted(&self, base: Rc<RoutePlan>, bits: u64) -> Rc<RoutePlan> {
        let cache_key = (Rc::as_ptr(&base) as usize, bits);
        if let Some(plan) = self.targeted.borrow().get(&cache_key) {
            return plan.clone();
        }
        let extra = self.shared.targeting.target_logs(bits);
        let logs = base.plan.logs.iter().map(|l| (l.scope, l.rules.clone()));
        let policy = base.plan.policy.as_ref().map(|p| (p.scope, p.policy));
        let plan = RoutePlan::new(&self.shared, Plan::new(logs.chain(extra), policy));
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
        let bans = ban_keys(shared, &ip_key, &key);
        let decision = targeting::decide(&shared.store, bans, &key, &route.plan, now, probe);
        FloodgateFuture::decided(shared, &route, &key, decision, now, fut)
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

//! [`Floodgate`]: the app-wide settings, every one of them set here.

use std::fmt;
use std::sync::Arc;

use actix_web::http::header::HeaderName;
use actix_web::http::Method;
use actix_web::HttpResponse;
use ipnet::IpNet;

use crate::client::{IpSource, ProxyHeader};
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::gatekeeper::{Gate, GateKeeper};
use crate::policy::Policy;
use crate::response::Refusal;
use crate::rotation::Ipv6Rotation;
use crate::rules::{BanRule, Rule};
use crate::settings::Settings;
use crate::status::{ScopeInfo, ScopeKind};
use crate::store::{Store, StoreFailure};
use crate::targeting::{
    Action, GeoBlock, GeoDb, IpList, KeyExtractor, MissingKey, ProbeBan, Target, Targeting,
    MAX_TARGETS,
};

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
    pub(crate) shared: Arc<Gate>,
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
            shared: Arc::new(Gate::new(Settings::default())),
        }
    }

    /// Changes a setting: in place while this is the only handle, else on a fork.
    pub(crate) fn edit(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        if Arc::get_mut(&mut self.shared).is_none() {
            self.shared = Arc::new(self.shared.fork());
        }
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            f(&mut shared.settings);
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
        let f: crate::settings::RefusalHook = Arc::new(f);
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

    /// Shadow mode (a dry run), app-wide: every request is checked and counted as usual, but
    /// one that a rule, a policy, a deny list or a target would refuse is logged (at info,
    /// saying which limit would have refused) and served. Shadow mode never bans: a policy's
    /// block limit never punishes, reported offences and probes never ban (what would have
    /// been banned is logged at warn). A ban already in force (an operator's, or one from
    /// before shadow mode) is still enforced. A client's status shows the windows, blocks and
    /// block counts that it earned, as they would have been.
    ///
    /// Use it to watch new limits against real traffic before they enforce. For one route,
    /// see `shadow` in the attributes and [`RouteRules::shadow`](crate::RouteRules::shadow);
    /// for one target, [`Target::shadow`](crate::Target::shadow).
    pub fn shadow(self, on: bool) -> Self {
        self.edit(|s| s.shadow = on)
    }

    /// Registers floodgate's Prometheus metrics into `registry` (feature `metrics`):
    /// `floodgate_requests_total{route,decision}` (decision: `allowed`, `limited`, `banned`,
    /// `denied`, `shadow_limited`, `exempt`), `floodgate_bans_total{reason}`,
    /// `floodgate_bans_active`, `floodgate_tracked_clients` (stores that know it, such as the
    /// memory store), `floodgate_store_errors_total{store,operation}`,
    /// `floodgate_store_duration_seconds{store}` (stores that do I/O) and
    /// `floodgate_near_limit_total{route}` (allowed requests that left less than 20% of a
    /// limit's quota). Serve them with [`metrics::exposition`](crate::metrics::exposition).
    ///
    /// Labels never hold a client address or key: `route` is a route's name (`other` for
    /// requests no annotated route takes, unrouted paths included), so the number of series
    /// is bounded by the app's routes.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics(self, registry: &mut prometheus_client::registry::Registry) -> Self {
        let metrics = crate::metrics::Metrics::register(registry);
        self.edit(|s| s.metrics = Some(metrics))
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

    /// The operator's API of this floodgate, to mount at `path` with `App::service` once it
    /// has a [`token`](crate::admin::Admin::token) (see the [`admin`](crate::admin) module).
    #[cfg(feature = "admin")]
    #[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
    pub fn admin(&self, path: &str) -> crate::admin::Admin {
        crate::admin::Admin::new(path, self.gatekeeper())
    }
}
/// Request targeting (see the [`targeting`](crate::targeting) module).
impl Floodgate {
    /// Clients on this list skip every limit and ban, like fail2ban's `ignoreip` (repeat for
    /// several lists). Keep its handle to [`reload`](IpList::reload) it.
    ///
    /// # Security
    ///
    /// Lists match the client's address as floodgate reads it: with
    /// [`ip_header`](Self::ip_header), a client that can reach the app without your proxy
    /// can claim an allowed address. Use [`trusted_proxies`](Self::trusted_proxies) or make
    /// sure only the proxy reaches the app.
    pub fn allow_list(self, list: IpList) -> Self {
        self.edit(|s| Arc::make_mut(&mut s.targeting).allow.push(list))
    }

    /// Clients on this list get 403 on every route but `#[bypass]` ones (repeat for several
    /// lists). The allow list wins over it. Keep its handle to [`reload`](IpList::reload) it.
    pub fn deny_list(self, list: IpList) -> Self {
        self.edit(|s| Arc::make_mut(&mut s.targeting).deny.push(list))
    }

    /// Bans clients that probe for scanner paths (see [`ProbeBan`]).
    pub fn probe_ban(self, probes: ProbeBan) -> Self {
        self.edit(|s| Arc::make_mut(&mut s.targeting).probes = Some(probes))
    }

    /// Counts every request under the key `extractor` gives (an API key, a user id) instead
    /// of its IP address. Runs before routing; a route's own `key` wins over it. Bans of the
    /// client's IP address still apply. See [`KeyExtractor`].
    pub fn key(self, extractor: impl KeyExtractor) -> Self {
        let extractor: Arc<dyn KeyExtractor> = Arc::new(extractor);
        self.edit(|s| Arc::make_mut(&mut s.targeting).key = Some(extractor))
    }

    /// What a request whose key cannot be extracted gets (default [`MissingKey::UseIp`]).
    pub fn missing_key(self, outcome: MissingKey) -> Self {
        self.edit(|s| Arc::make_mut(&mut s.targeting).missing_key = outcome)
    }

    /// Where clients' countries come from, for [`geo_block`](Self::geo_block) and targets.
    pub fn geo_database(self, db: GeoDb) -> Self {
        self.edit(|s| Arc::make_mut(&mut s.targeting).geo = Some(db))
    }

    /// Allows only, or denies, some countries app-wide (403 on every route but `#[bypass]`
    /// ones). Needs [`geo_database`](Self::geo_database).
    pub fn geo_block(self, block: GeoBlock) -> Self {
        if block.countries.is_empty() && block.allow_listed {
            log::warn!(
                "floodgate: GeoBlock::allow_only with no country refuses every known country"
            );
        }
        self.edit(|s| Arc::make_mut(&mut s.targeting).geo_block = Some(block))
    }

    /// Adds a targeted rule set (see [`Target`]). An invalid target (a bad country code or
    /// header name, no rules and no deny, a rule of count 0) stops the app from starting with
    /// a message naming it; see [`try_target`](Self::try_target) to get the error at once.
    pub fn target(self, target: Target) -> Self {
        match self.clone().try_target(target) {
            Ok(this) => this,
            Err(err) => self.edit(|s| s.config_errors.push(err)),
        }
    }

    /// Like [`target`](Self::target), but an invalid target is an error.
    pub fn try_target(self, target: Target) -> Result<Self, ConfigError> {
        if let Some(err) = target.invalid.clone() {
            return Err(err);
        }
        let existing = &self.shared.targeting.targets;
        if existing.iter().any(|t| t.name == target.name) {
            return Err(ConfigError::invalid(
                "target",
                format!("two targets are called {}", target.name),
            ));
        }
        if existing.len() >= MAX_TARGETS {
            return Err(ConfigError::invalid(
                "target",
                format!("at most {MAX_TARGETS} targets"),
            ));
        }
        let single = Targeting {
            targets: vec![target.clone()],
            ..Targeting::default()
        };
        single.validate()?;
        if target.needs_country() && self.shared.targeting.geo.is_none() {
            log::warn!(
                "floodgate: target {} uses countries but no geo database is set (yet): \
                 every client counts as of unknown country",
                target.name
            );
        }
        if let Action::Limit(rules) = &target.action {
            self.shared.register_scope(
                target.scope(),
                ScopeInfo {
                    label: format!("target {}", target.name),
                    kind: ScopeKind::Rules(rules.clone()),
                },
            );
        }
        Ok(self.edit(|s| Arc::make_mut(&mut s.targeting).targets.push(target)))
    }
}

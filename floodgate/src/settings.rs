//! A floodgate's settings: one `Clone` value that the builder (`builder.rs`) fills, and the
//! checks of it as a whole that run when the app starts.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::Method;
use actix_web::HttpResponse;

use crate::client::{ClientKey, IpSource, ProxyHeader};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::error::ConfigError;
use crate::policy::Policy;
use crate::response::Refusal;
use crate::rotation::Ipv6Rotation;
use crate::rules::{BanRule, Rule};
use crate::store::memory::MemoryStore;
use crate::store::{Store, StoreFailure};

/// A response hook: builds the response of a refusal in place of floodgate's own.
pub(crate) type RefusalHook = Arc<dyn Fn(&Refusal<'_>) -> HttpResponse + Send + Sync>;

/// Every setting of a floodgate. Clones share the store, the clock and the targeting.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) ip_source: IpSource,
    /// The header trusted proxies write (used by `trusted_proxies`).
    pub(crate) proxy_header: Option<ProxyHeader>,
    pub(crate) v6_prefix: u8,
    pub(crate) ipv6_rotation: Ipv6Rotation,
    /// Mistakes made with infallible builder methods, reported when the app starts.
    pub(crate) config_errors: Vec<ConfigError>,
    /// The `log` target of this floodgate's decisions and operator actions.
    pub(crate) log_target: Arc<str>,
    pub(crate) ban_rule: Option<BanRule>,
    pub(crate) global_rules: Vec<Rule>,
    pub(crate) excluded_methods: Vec<Method>,
    pub(crate) default_policy: Policy,
    /// Policies registered by name, shared by every route naming them.
    pub(crate) shared_policies: Vec<(Arc<str>, Policy)>,
    pub(crate) policies_use_global_rules: bool,
    pub(crate) ratelimit_headers: bool,
    pub(crate) legacy_headers: bool,
    pub(crate) refusal_hook: Option<RefusalHook>,
    pub(crate) store_failure: StoreFailure,
    /// Shadow mode, app-wide (see `Floodgate::shadow`).
    pub(crate) shadow: bool,
    /// The metrics registered with `Floodgate::metrics`.
    pub(crate) metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Lists, geo, probes, targets and custom keys (see `targeting`).
    pub(crate) targeting: Arc<crate::targeting::Targeting>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            store: Arc::new(MemoryStore::new()),
            clock: Arc::new(SystemClock),
            ip_source: IpSource::Peer,
            proxy_header: None,
            v6_prefix: 64,
            ipv6_rotation: Ipv6Rotation::new(),
            config_errors: Vec::new(),
            log_target: Arc::from("floodgate"),
            ban_rule: None,
            global_rules: Vec::new(),
            excluded_methods: Vec::new(),
            default_policy: Policy::default(),
            shared_policies: Vec::new(),
            policies_use_global_rules: true,
            ratelimit_headers: true,
            legacy_headers: false,
            refusal_hook: None,
            store_failure: StoreFailure::Open,
            shadow: false,
            metrics: None,
            targeting: Arc::default(),
        }
    }
}

impl Settings {
    /// The `log` target of this floodgate's lines.
    pub(crate) fn log_target(&self) -> &str {
        &self.log_target
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn key_of_ip(&self, ip: IpAddr) -> ClientKey {
        ClientKey::from_ip(ip, self.v6_prefix)
    }

    /// Every configuration mistake, the first one first: recorded ones, then the checks of
    /// the settings as a whole.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(err) = self.config_errors.first() {
            return Err(err.clone());
        }
        crate::validate::rules("rate_limit_rules", &self.global_rules)?;
        if let Some(rule) = &self.ban_rule {
            crate::validate::ban_rule(rule)?;
        }
        crate::validate::policy("default_policy", &self.default_policy)?;
        for (name, p) in &self.shared_policies {
            crate::validate::policy(&format!("policy {name}"), p)?;
        }
        self.ipv6_rotation.validate(self.v6_prefix)?;
        if self.proxy_header.is_some() && !matches!(self.ip_source, IpSource::TrustedProxies(..)) {
            return Err(ConfigError::invalid(
                "proxy_header",
                "is set, but no trusted_proxies are: set Floodgate::trusted_proxies to the \
                 addresses of the proxies that write it",
            ));
        }
        self.targeting.validate()
    }

    /// What routes' policies are resolved against.
    pub(crate) fn policy_source(&self) -> crate::route_spec::PolicySource<'_> {
        crate::route_spec::PolicySource {
            default: &self.default_policy,
            shared: &self.shared_policies,
        }
    }

    /// Checks the routes built under this floodgate: every shared policy they name is
    /// registered.
    pub(crate) fn validate_routes(
        &self,
        routes: &[Arc<crate::route_spec::RouteSpec>],
    ) -> Result<(), ConfigError> {
        // A route's name keys its counters: two routes of one name share them, which only
        // works when they count alike.
        let mut seen: HashMap<&str, String> = HashMap::new();
        for spec in routes {
            let shape = format!(
                "{:?}",
                (&spec.rules, spec.standalone, &spec.policy, spec.bypass)
            );
            match seen.get(&*spec.name) {
                Some(other) if *other != shape => {
                    return Err(ConfigError::invalid(
                        "RouteRules",
                        format!(
                            "two routes are named {:?} with different rules; a route's name keys \
                             its counters, so give each route its own name",
                            spec.name
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    seen.insert(&spec.name, shape);
                }
            }
            if let Some(name) = spec.shared_policy() {
                if self.policy_source().named(name).is_none() {
                    return Err(ConfigError::invalid(
                        "policy",
                        format!(
                            "route {} names the shared policy {name:?}, which is not \
                             registered: add Floodgate::policy({name:?}, Policy::new(..))",
                            spec.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Floodgate")
            .field("store", &self.store)
            .field("clock", &self.clock)
            .field("ip_source", &self.ip_source)
            .field("ipv6_prefix", &self.v6_prefix)
            .field("ban_rule", &self.ban_rule)
            .field("rate_limit_rules", &self.global_rules)
            .field("excluded_methods", &self.excluded_methods)
            .field("default_policy", &self.default_policy)
            .field("policies", &self.shared_policies)
            .field("store_failure", &self.store_failure)
            .field("targeting", &self.targeting)
            .finish_non_exhaustive()
    }
}

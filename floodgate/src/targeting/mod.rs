//! Request targeting: allow and deny lists ([`IpList`]), geo-blocking ([`GeoDb`],
//! [`GeoBlock`]), probe bans ([`ProbeBan`]), targeted rules ([`Target`]) and custom client
//! keys ([`KeyExtractor`], [`MissingKey`]), all set on the [`Floodgate`](crate::Floodgate) builder.
//!
//! In what order a request meets them: an allow-listed client skips everything; then, on
//! every route but `#[bypass]` ones, a deny list, the app's [`GeoBlock`] or a denying
//! [`Target`] refuses it with 403; then its key is chosen (the route's `key`, else the
//! app's, else its IP address) and a missing key gets the [`MissingKey`] outcome; then a
//! probe bans (or reports) its IP, and the route's limits, extended by the matching
//! targets' rules, are checked together with the bans of its IP address.

// How it fits in the middleware: `Floodgate`'s call asks `Targeting::before_routing` about
// the request (lists, countries, targets, probe paths, the app-wide key) before actix routes
// it, then, knowing the route, picks the key (`Targeting::choose_key`) and decides with
// the decide module: a probe's ban or report first, then the IP's ban when the request is
// counted under another key, then the route's plan extended by the matching targets. The
// builder methods are on `Floodgate` (middleware.rs).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use actix_web::dev::ServiceRequest;
use actix_web::http::StatusCode;

use crate::client::ClientKey;
use crate::error::ConfigError;
use crate::rules::Rule;
use crate::state::ScopeId;

pub(crate) mod geo;
pub(crate) mod ipset;
pub(crate) mod keys;
pub(crate) mod lists;
pub(crate) mod probe;
pub(crate) mod target;

pub use geo::{Country, GeoBlock, GeoDb};
pub use keys::{HeaderKey, KeyExtractor, MissingKey};
pub use lists::{IpList, ListError};
pub use probe::{ProbeAction, ProbeBan};
pub use target::Target;

pub(crate) use target::Action;

/// At most this many targets with rules (their matches are a bit set).
pub(crate) const MAX_TARGETS: usize = 64;

/// Why a client was denied (403) by targeting.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyReason {
    /// Its address is on this deny list.
    List {
        /// The list's name.
        name: Arc<str>,
    },
    /// Its country is refused by the app's [`GeoBlock`] (`None`: unknown country).
    Country {
        /// The client's country.
        country: Option<Country>,
    },
    /// It matches a [`Target`] that denies.
    Target {
        /// The target's name.
        name: Arc<str>,
    },
}

/// The targeting settings of a floodgate.
#[derive(Clone, Default)]
pub(crate) struct Targeting {
    pub(crate) allow: Vec<IpList>,
    pub(crate) deny: Vec<IpList>,
    pub(crate) probes: Option<ProbeBan>,
    pub(crate) key: Option<Arc<dyn KeyExtractor>>,
    pub(crate) missing_key: MissingKey,
    pub(crate) targets: Vec<Target>,
    pub(crate) geo: Option<GeoDb>,
    pub(crate) geo_block: Option<GeoBlock>,
}

impl fmt::Debug for Targeting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Targeting")
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .field("probes", &self.probes)
            .field("key", &self.key.is_some())
            .field("missing_key", &self.missing_key)
            .field("targets", &self.targets)
            .field("geo", &self.geo)
            .field("geo_block", &self.geo_block)
            .finish()
    }
}

/// What targeting found before routing.
#[derive(Default)]
pub(crate) struct Findings {
    /// Allow-listed: nothing applies.
    pub(crate) skip: bool,
    pub(crate) deny: Option<DenyReason>,
    /// What a target in shadow mode would have denied the request for.
    pub(crate) shadow_deny: Option<DenyReason>,
    /// A probe path that no route matches.
    pub(crate) probe: bool,
    /// The app-wide extractor's answer, when there is one.
    pub(crate) app_key: Option<keys::Found>,
    /// The targets with rules that match, as bits.
    pub(crate) targets: u64,
}

/// Which key a request is counted under.
pub(crate) enum KeyChoice {
    /// Its IP key.
    Ip,
    Custom(ClientKey),
    /// Not limited (bans of its IP still apply).
    Skip,
    Refuse(StatusCode),
}

impl Targeting {
    pub(crate) fn before_routing(&self, req: &ServiceRequest, ip: Option<IpAddr>) -> Findings {
        let mut pre = Findings::default();
        if let Some(ip) = ip {
            if self.allow.iter().any(|l| l.contains(ip)) {
                pre.skip = true;
                return pre;
            }
            if let Some(list) = self.deny.iter().find(|l| l.contains(ip)) {
                pre.deny = Some(DenyReason::List {
                    name: list.name().into(),
                });
            }
        }
        let mut looked_up = None;
        let mut country = || {
            *looked_up.get_or_insert_with(|| match (&self.geo, ip) {
                (Some(db), Some(ip)) => db.country(ip),
                _ => None,
            })
        };
        if let (None, Some(block)) = (&pre.deny, &self.geo_block) {
            let c = country();
            if block.refuses(c) {
                pre.deny = Some(DenyReason::Country { country: c });
            }
        }
        for (i, t) in self.targets.iter().enumerate() {
            match &t.action {
                Action::None => {}
                Action::Deny if pre.deny.is_some() => {}
                Action::Deny => {
                    if t.matches(req, &mut country) {
                        let reason = DenyReason::Target {
                            name: t.name.clone(),
                        };
                        if t.shadow {
                            pre.shadow_deny.get_or_insert(reason);
                        } else {
                            pre.deny = Some(reason);
                        }
                    }
                }
                Action::Limit(_) => {
                    if t.matches(req, &mut country) {
                        pre.targets |= 1 << i;
                    }
                }
            }
        }
        if let Some(p) = &self.probes {
            pre.probe = p.is_probe(routed_path(req)) && req.request().match_pattern().is_none();
        }
        if let Some(k) = &self.key {
            pre.app_key = Some(keys::extract_safely("the app", || k.extract(req.request())));
        }
        pre
    }

    /// The key: the route's extractor's (found during routing), else the app's, else the IP.
    pub(crate) fn choose_key(
        &self,
        pre: &mut Findings,
        route_key: Option<keys::Found>,
    ) -> KeyChoice {
        let found = match route_key.or_else(|| pre.app_key.take()) {
            None => return KeyChoice::Ip,
            Some(found) => found,
        };
        match (found, self.missing_key) {
            (keys::Found::Key(k), _) => KeyChoice::Custom(k),
            (keys::Found::Unusable, _) => KeyChoice::Ip,
            (keys::Found::Missing, MissingKey::UseIp) => KeyChoice::Ip,
            (keys::Found::Missing, MissingKey::Skip) => KeyChoice::Skip,
            (keys::Found::Missing, MissingKey::Refuse(status)) => KeyChoice::Refuse(status),
        }
    }

    /// Configuration mistakes: targets that limit nothing or with unusable rules, key
    /// extractors with an invalid setting.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for t in &self.targets {
            let field = format!("target {}", t.name);
            match &t.action {
                Action::None => {
                    return Err(ConfigError::invalid(
                        field,
                        "has neither rules (.limit) nor .deny(): it would do nothing",
                    ))
                }
                Action::Limit(rules) if rules.is_empty() => {
                    return Err(ConfigError::invalid(field, "has an empty rule list"))
                }
                Action::Limit(rules) => crate::validate::rules(&field, rules)?,
                Action::Deny => {}
            }
        }
        if let Some(k) = &self.key {
            k.validate().map_err(|e| e.in_field("key"))?;
        }
        Ok(())
    }

    /// The `(scope, rules)` of the targets in `bits`.
    /// The rules of the targets in `bits`: those in shadow mode when `shadow`, the others
    /// otherwise.
    pub(crate) fn target_logs(&self, bits: u64, shadow: bool) -> Vec<(ScopeId, Vec<Rule>)> {
        self.targets
            .iter()
            .enumerate()
            .filter(|(i, t)| bits & (1 << i) != 0 && t.shadow == shadow)
            .filter_map(|(_, t)| match &t.action {
                Action::Limit(rules) => Some((t.scope(), rules.clone())),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn reports_not_found(&self) -> bool {
        self.probes.as_ref().is_some_and(|p| p.not_found)
    }

    /// What a probe asks for, when probe bans are on.
    pub(crate) fn probe_action(&self) -> Option<ProbeAction> {
        self.probes.as_ref().map(|p| p.action)
    }
}

/// The path as actix-web's router matches it: percent-decoded (but for `%2F`, `%25` and `%2B`),
/// so that `/%6Cogin` is `/login` for targets and probe patterns, as it is for the route.
pub(crate) fn routed_path(req: &ServiceRequest) -> &str {
    req.match_info().as_str()
}

/// The `detail` of a denial's problem+json body.
pub(crate) fn deny_detail(reason: &DenyReason) -> String {
    match reason {
        DenyReason::List { .. } => String::from("This client's address is denied."),
        DenyReason::Country { country: Some(c) } => {
            format!("Requests from this country ({c}) are not served.")
        }
        DenyReason::Country { country: None } => {
            String::from("Requests from an unknown country are not served.")
        }
        DenyReason::Target { .. } => String::from("This request is not served."),
    }
}

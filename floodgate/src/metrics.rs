//! Prometheus metrics (feature `metrics`): what floodgate decided, per route and decision,
//! the bans it imposed, and how its store behaves, registered into the app's own
//! `Registry` (prometheus-client's) by [`Floodgate::metrics`](crate::Floodgate::metrics), and
//! served with `exposition`.
//!
//! Labels never hold a client: a route's label is its name (the handler's path for the
//! attributes, the name given to [`RouteRules`](crate::RouteRules)), and every request that no
//! annotated route takes (unrouted paths included) is labelled `other`, so the number of
//! series is bounded by the app's routes, whatever paths clients ask for.

// Each route plan holds its counters, so an allowed request costs one atomic increment.
// Without the feature, `Metrics` and `RouteCounters` are empty types that no value can have:
// every call site compiles, and the optimiser removes it.

#[cfg(feature = "metrics")]
mod on;
#[cfg(feature = "metrics")]
pub use on::{exposition, CONTENT_TYPE};
#[cfg(feature = "metrics")]
pub(crate) use on::{Metrics, RouteCounters};
/// The registry type [`Floodgate::metrics`](crate::Floodgate::metrics) registers into
/// (re-exported from prometheus-client, so that versions match).
#[cfg(feature = "metrics")]
pub use prometheus_client::registry::Registry;

#[cfg(not(feature = "metrics"))]
mod off {
    use crate::client::ClientKey;
    use crate::clock::Timestamp;
    use crate::store::StoreFuture;

    /// Never built without the feature.
    #[derive(Debug)]
    pub(crate) enum Metrics {}

    /// Never built without the feature.
    #[derive(Debug)]
    pub(crate) enum RouteCounters {}

    impl Metrics {
        pub(crate) fn attach(
            &self,
            _: &std::sync::Arc<dyn crate::store::Store>,
            _: &std::sync::Arc<dyn crate::clock::Clock>,
        ) {
            match *self {}
        }
        pub(crate) fn route(&self, _: &str) -> RouteCounters {
            match *self {}
        }
        pub(crate) fn request(&self, _: &str, _: super::Outcome) {
            match *self {}
        }
        pub(crate) fn ban(&self, _: &ClientKey, _: Option<Timestamp>, _: super::BanKind) {
            match *self {}
        }
        pub(crate) fn unban(&self, _: &ClientKey) {
            match *self {}
        }
        pub(crate) fn store_error(&self, _: &'static str) {
            match *self {}
        }
        pub(crate) fn timed<T: Send + 'static>(&self, _: StoreFuture<T>) -> StoreFuture<T> {
            match *self {}
        }
    }

    impl RouteCounters {
        pub(crate) fn count(&self, _: super::Outcome) {
            match *self {}
        }
        pub(crate) fn near_limit(&self) {
            match *self {}
        }
    }
}
#[cfg(not(feature = "metrics"))]
pub(crate) use off::{Metrics, RouteCounters};

/// The `decision` label of `floodgate_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    Allowed,
    Limited,
    Banned,
    Denied,
    ShadowLimited,
    Exempt,
}

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
impl Outcome {
    pub(crate) const ALL: [Outcome; 6] = [
        Outcome::Allowed,
        Outcome::Limited,
        Outcome::Banned,
        Outcome::Denied,
        Outcome::ShadowLimited,
        Outcome::Exempt,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Limited => "limited",
            Outcome::Banned => "banned",
            Outcome::Denied => "denied",
            Outcome::ShadowLimited => "shadow_limited",
            Outcome::Exempt => "exempt",
        }
    }
}

/// The `reason` label of `floodgate_bans_total` (the admin API's ban reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BanKind {
    Report,
    Probe,
    Policy,
    Operator,
    Blacklist,
}

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
impl BanKind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            BanKind::Report => "report",
            BanKind::Probe => "probe",
            BanKind::Policy => "policy",
            BanKind::Operator => "operator",
            BanKind::Blacklist => "blacklist",
        }
    }

    /// The kind of a ban of `reason` ending at `until` (`None`: a blacklist).
    pub(crate) fn of(reason: crate::state::BanReason, until: Option<Timestamp>) -> BanKind {
        use crate::state::BanReason;
        match (until, reason) {
            (None, _) => BanKind::Blacklist,
            (_, BanReason::Reported) => BanKind::Report,
            (_, BanReason::Probe) => BanKind::Probe,
            (_, BanReason::Punished) => BanKind::Policy,
            _ => BanKind::Operator,
        }
    }
}

use crate::clock::Timestamp;

/// Counts a ban that starts, when metrics are on.
pub(crate) fn ban(
    m: &Option<std::sync::Arc<Metrics>>,
    client: &crate::client::ClientKey,
    until: Option<Timestamp>,
    kind: BanKind,
) {
    if let Some(m) = m {
        m.ban(client, until, kind);
    }
}

/// Notes an operator's unban, when metrics are on.
pub(crate) fn unban(m: &Option<std::sync::Arc<Metrics>>, client: &crate::client::ClientKey) {
    if let Some(m) = m {
        m.unban(client);
    }
}

/// Counts a failed store operation (`what` as the store-failure log says it).
pub(crate) fn store_error(m: &Option<std::sync::Arc<Metrics>>, what: &str) {
    if let Some(m) = m {
        m.store_error(operation_label(what));
    }
}

/// The label of an operation for `floodgate_store_errors_total`, from what failed.
pub(crate) fn operation_label(what: &str) -> &'static str {
    match what {
        "a request" | "a shadow check" => "check",
        "report" => "report",
        "an IPv6 network ban" => "ban",
        _ => "other",
    }
}

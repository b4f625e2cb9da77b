//! The decision of one request, free of actix: the facts the middleware read from the request
//! go in, a [`Begin`] comes out (serve, refuse, or ask the store), and the store's answer
//! becomes a [`Verdict`]. The middleware (`middleware.rs`, and `route.rs` when routing was
//! deferred) only translates between actix and these functions.
//!
//! The order of checks, first match wins:
//!
//! 1. an allow-listed address, or a `#[bypass]` route: served, nothing counted;
//! 2. a deny list, a refused country or a denying target: 403;
//! 3. the key the request is counted under: the route's extractor's, else the app's, else
//!    the address; a missing key is refused, skipped (bans only) or counted by address;
//! 4. the plan: bans only for an excluded method or a skipped key, the route's plan (its
//!    rules, its policy, the global rules unless standalone), plus matching targets;
//! 5. a probe's ban or report of the address, before the decision it may change;
//! 6. the bans of the address and its IPv6 networks (when counted under another key);
//! 7. the plan under the key: every rule and the policy together.

mod steps;
#[cfg(test)]
mod tests;
mod verdict;

use std::rc::Rc;
use std::sync::Arc;

pub(crate) use verdict::{verdict, FieldValues, Refused, Verdict, Why};

use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::gatekeeper::Gate;
use crate::metrics::Outcome;
use crate::plans::RoutePlan;
use crate::route_spec::RouteChoice;
use crate::state::Decision;
use crate::store::StoreFuture;
use crate::targeting::{Findings, KeyChoice};
use crate::worker_plans::WorkerPlans;

/// What the middleware read from a request.
pub(crate) struct Facts {
    /// The client's address as a key (or `unknown`).
    pub(crate) ip_key: ClientKey,
    /// Its method is one of `excluded_methods`: bans only.
    pub(crate) excluded: bool,
    /// What targeting found before routing.
    pub(crate) found: Findings,
    /// What routing chose, when the route carries floodgate rules.
    pub(crate) route: Option<RouteChoice>,
}

/// The first part of a decision.
pub(crate) enum Begin {
    /// Serve without counting.
    Serve,
    /// Refuse without asking the store.
    Refuse(Refused),
    /// The store decides; [`verdict`] turns its answer into a verdict.
    Ask(Ask),
}

/// A store decision under way.
pub(crate) struct Ask {
    pub(crate) route: Rc<RoutePlan>,
    pub(crate) key: ClientKey,
    pub(crate) decision: StoreFuture<Decision>,
    pub(crate) now: Timestamp,
}

impl Ask {
    /// The verdict, when the store answered at once.
    #[cfg(test)]
    pub(crate) fn ready_verdict(&mut self, shared: &Gate) -> Option<Verdict> {
        let result = self.decision.take_ready()?;
        Some(verdict(shared, &self.route, &self.key, result, self.now))
    }
}

/// Steps 1 to 7 for a request of the app-wide middleware.
pub(crate) fn begin(shared: &Arc<Gate>, plans: &WorkerPlans, facts: Facts) -> Begin {
    let Facts {
        ip_key,
        excluded,
        mut found,
        route: mut mark,
    } = facts;
    // Counts a request decided before its route's plan (metrics, and the recent refusals
    // per route).
    let count = |mark: &Option<RouteChoice>, outcome| {
        let route = mark.as_ref().map_or("other", |m| &*m.spec.name);
        match outcome {
            Outcome::Denied => shared.route_refusals.refused(route, shared.now()),
            Outcome::ShadowLimited => shared.route_refusals.shadow_refused(route, shared.now()),
            _ => {}
        }
        if let Some(m) = &shared.metrics {
            m.request(route, outcome);
        }
    };
    if found.skip || mark.as_ref().is_some_and(|m| m.spec.bypass) {
        count(&mark, Outcome::Exempt);
        return Begin::Serve;
    }
    if let Some(reason) = &found.shadow_deny {
        count(&mark, Outcome::ShadowLimited);
        crate::shadow::would_deny(shared.log_target(), &ip_key, reason);
    }
    if let Some(reason) = found.deny.take() {
        if !shared.shadow {
            count(&mark, Outcome::Denied);
            return Begin::Refuse(verdict::denied(shared, &ip_key, reason));
        }
        count(&mark, Outcome::ShadowLimited);
        crate::shadow::would_deny(shared.log_target(), &ip_key, &reason);
    }
    let route_key = mark.as_mut().and_then(|m| m.key.take());
    let units = mark.as_ref().map_or(1, |m| m.units);
    let (key, counted) = match shared.targeting.choose_key(&mut found, route_key) {
        KeyChoice::Ip => (ip_key.clone(), true),
        KeyChoice::Custom(key) => (key, true),
        KeyChoice::Skip => (ip_key.clone(), false),
        KeyChoice::Refuse(status) => {
            let route = mark.as_ref().map_or("other", |m| &*m.spec.name);
            shared.route_refusals.refused(route, shared.now());
            return Begin::Refuse(verdict::key_missing(shared, &ip_key, status.as_u16()));
        }
    };
    let limited = counted && !excluded;
    let Some(mut route) = plans.choose(shared, mark.as_ref(), limited) else {
        return Begin::Serve;
    };
    if units != route.plan.units() && limited && route.plan.counts() {
        route = plans.costed(shared, route, units);
    }
    if found.targets != 0 && limited {
        route = plans.targeted(shared, route, found.targets);
    }
    let now = shared.now();
    let probe = found
        .probe
        .then(|| steps::probe_step(shared, &ip_key, now))
        .flatten();
    let bans = steps::ban_keys(shared, &ip_key, &key);
    let decision = steps::decide(&shared.store, bans, &key, &route.plan, now, probe);
    Begin::Ask(ask(shared, route, key, decision, now))
}

/// The store's decision, then the route's shadow limits when it allows (observed only), timed
/// for metrics.
fn ask(
    shared: &Arc<Gate>,
    route: Rc<RoutePlan>,
    key: ClientKey,
    mut decision: StoreFuture<Decision>,
    now: Timestamp,
) -> Ask {
    if let Some(shadow) = &route.shadow {
        let counters = route.counters.clone();
        let label = route.label.clone();
        decision =
            crate::shadow_check::then_shadow(shared, decision, &key, shadow, now, counters, label);
    }
    if let Some(m) = &shared.metrics {
        decision = m.timed(decision);
    }
    Ask {
        route,
        key,
        decision,
        now,
    }
}

/// The decision of a route that was called after the app-wide middleware's call returned
/// (a middleware between them defers routing): that middleware already checked the bans,
/// denials, probes and targets and counted the global rules, so the route decides its own
/// rules and policy under its key (steps 1, 3, 4 and 7). `plans` gives the route's plans
/// without the global rules: full, or for a request its policy exempts.
pub(crate) fn begin_deferred(
    shared: &Arc<Gate>,
    plans: impl FnOnce(&RouteChoice) -> Option<Rc<RoutePlan>>,
    facts: Facts,
) -> Begin {
    let Facts {
        ip_key,
        excluded,
        mut found,
        route,
    } = facts;
    let Some(mut mark) = route else {
        return Begin::Serve;
    };
    if mark.spec.bypass || excluded || found.skip {
        return Begin::Serve;
    }
    let key = match shared.targeting.choose_key(&mut found, mark.key.take()) {
        KeyChoice::Ip => ip_key,
        KeyChoice::Custom(key) => key,
        KeyChoice::Skip => return Begin::Serve,
        KeyChoice::Refuse(status) => {
            return Begin::Refuse(verdict::key_missing(shared, &ip_key, status.as_u16()))
        }
    };
    let Some(mut route) = plans(&mark) else {
        return Begin::Serve;
    };
    if !mark.exempt && mark.units != route.plan.units() {
        route = route.with_units(shared, mark.units);
    }
    let now = shared.now();
    let decision = shared.store.check(&key, &route.plan, now);
    Begin::Ask(ask(shared, route, key, decision, now))
}

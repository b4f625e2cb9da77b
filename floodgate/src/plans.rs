//! Route plans: what is checked for a request on one route (the global rules, its own rules,
//! its policy), with the response parts that depend only on the plan, built once per route and
//! worker.

use std::rc::Rc;
use std::sync::Arc;

use actix_web::http::header::HeaderValue;

use crate::count_when::CountWhen;
use crate::gatekeeper::Gate;
use crate::metrics::RouteCounters;
use crate::response;
use crate::route_spec::{RouteCost, RouteSpec};
use crate::state::{Plan, ScopeId};
use crate::status::{ScopeInfo, ScopeKind};

/// A route's plan with what its responses need.
#[derive(Debug)]
pub(crate) struct RoutePlan {
    pub(crate) plan: Arc<Plan>,
    /// The limits in shadow mode, checked after `plan` allows and only observed.
    pub(crate) shadow: Option<Arc<Plan>>,
    /// The route's name for metrics (`other` for requests no annotated route takes).
    pub(crate) label: Arc<str>,
    /// Its metrics counters, when metrics are on.
    pub(crate) counters: Option<Arc<RouteCounters>>,
    /// Requests a `request_data_check` exempts: counted as `exempt` in metrics.
    pub(crate) exempt: bool,
    /// The route counts by response: what to give back when a response does not match.
    pub(crate) release: Option<Arc<Release>>,
    pub(crate) policy_header: Option<HeaderValue>,
    pub(crate) ratelimit: response::RateLimitCache,
}

/// What a route that counts by response gives back of a request whose response does not
/// match: its own scopes (rules and policy), in the request's units.
#[derive(Debug)]
pub(crate) struct Release {
    pub(crate) plan: Arc<Plan>,
    pub(crate) when: CountWhen,
}

/// Plans for one annotated route.
#[derive(Debug)]
pub(crate) struct RoutePlans {
    /// Keeps the spec alive, so its address (the cache key) is never reused.
    _spec: Arc<RouteSpec>,
    /// `None` for a `#[bypass]` route.
    pub(crate) full: Option<Rc<RoutePlan>>,
    /// Without the policy, for requests its `request_data_check` exempts.
    pub(crate) exempt: Option<Rc<RoutePlan>>,
}

impl RoutePlan {
    pub(crate) fn new(shared: &Gate, plan: Plan) -> Rc<RoutePlan> {
        RoutePlan::split(shared, plan, None)
    }

    /// `plan` and `shadow` (see [`split`](Self::split)) for the route labelled `label`.
    pub(crate) fn labeled(
        shared: &Gate,
        plan: Plan,
        shadow: Option<Plan>,
        label: &Arc<str>,
        exempt: bool,
    ) -> Rc<RoutePlan> {
        let mut route = RoutePlan::split(shared, plan, shadow);
        if let Some(r) = Rc::get_mut(&mut route) {
            r.label = label.clone();
            r.counters = shared.metrics.as_ref().map(|m| Arc::new(m.route(label)));
            r.exempt = exempt;
        }
        route
    }

    /// This route plan with each request using `units` (a cost function's answer).
    pub(crate) fn with_units(&self, shared: &Gate, units: u32) -> Rc<RoutePlan> {
        let plan = (*self.plan).clone().with_units(units);
        let shadow = self
            .shadow
            .as_ref()
            .map(|s| (**s).clone().with_units(units));
        let mut derived = self.relabel(RoutePlan::split(shared, plan, shadow));
        if let (Some(r), Some(release)) = (Rc::get_mut(&mut derived), &self.release) {
            r.release = Some(Arc::new(Release {
                plan: Arc::new((*release.plan).clone().with_units(units)),
                when: release.when.clone(),
            }));
        }
        derived
    }

    /// `derived` with this plan's label and counters.
    pub(crate) fn relabel(&self, mut derived: Rc<RoutePlan>) -> Rc<RoutePlan> {
        if let Some(r) = Rc::get_mut(&mut derived) {
            r.label = self.label.clone();
            r.counters = self.counters.clone();
            r.exempt = self.exempt;
            r.release = self.release.clone();
        }
        derived
    }

    /// `plan` enforcing, with `shadow` (when it counts anything) observed after it.
    pub(crate) fn split(shared: &Gate, plan: Plan, shadow: Option<Plan>) -> Rc<RoutePlan> {
        let shadow = shadow
            .filter(Plan::counts)
            .map(|p| Arc::new(p.without_ban_check()));
        let policy_header = if shared.ratelimit_headers {
            response::policy_header(plan.limits())
        } else {
            None
        };
        Rc::new(RoutePlan {
            plan: Arc::new(plan),
            shadow,
            label: Arc::from("other"),
            counters: shared.metrics.as_ref().map(|m| Arc::new(m.route("other"))),
            exempt: false,
            release: None,
            policy_header,
            ratelimit: response::RateLimitCache::default(),
        })
    }
}

/// The plans of the route `spec`. `global_applied`: the app-wide middleware already counted
/// the global rules for this request (routing was deferred past its call), so they are left
/// out.
pub(crate) fn route_plans(
    shared: &Gate,
    spec: &Arc<RouteSpec>,
    global_applied: bool,
) -> RoutePlans {
    if spec.bypass {
        return RoutePlans {
            _spec: spec.clone(),
            full: None,
            exempt: None,
        };
    }
    let policy = spec.resolve_policy(&shared.policy_source());
    let use_global = !global_applied
        && !spec.standalone
        && (policy.is_none() || shared.policies_use_global_rules);
    // Shadow mode moves limits from the enforcing plan to the observed one.
    let route_shadow = shared.shadow || spec.shadow;
    let mut logs = Vec::new();
    let mut shadow_logs = Vec::new();
    // The route's own scopes, which `count = ..` counts by response.
    let mut own_logs = Vec::new();
    if use_global && !shared.global_rules.is_empty() {
        let to = if shared.shadow {
            &mut shadow_logs
        } else {
            &mut logs
        };
        to.push((ScopeId::GLOBAL, shared.global_rules.clone()));
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
        let to = if route_shadow {
            &mut shadow_logs
        } else {
            &mut logs
        };
        to.push((id, spec.rules.to_vec()));
        own_logs.push((id, spec.rules.to_vec()));
    }
    let policy = policy.map(|p| {
        // Routes naming one shared policy share its scope: one window, one block count and
        // one punishment per client across all of them.
        let label = match spec.shared_policy() {
            Some(name) => format!("shared policy {name}"),
            None => format!("policy {}", spec.name),
        };
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
    // A request the policy's `request_data_check` exempts is served without being counted
    // anywhere; bans still apply.
    let label: Arc<str> = Arc::from(&*spec.name);
    let exempt = policy
        .is_some()
        .then(|| RoutePlan::labeled(shared, Plan::ban_only(), None, &label, true));
    // A constant cost is in the plan; a cost function's answer replaces it per request.
    let units = match spec.cost {
        Some(RouteCost::Units(n)) => n,
        _ => 1,
    };
    let release = spec.count.as_ref().map(|when| {
        Arc::new(Release {
            plan: Arc::new(Plan::new(own_logs, policy).with_units(units)),
            when: when.clone(),
        })
    });
    let mut full = if route_shadow {
        let shadow_policy = policy.map(|(id, p)| (id, crate::shadow::shadow_policy(p)));
        RoutePlan::labeled(
            shared,
            Plan::new(logs, None).with_units(units),
            Some(Plan::new(shadow_logs, shadow_policy).with_units(units)),
            &label,
            false,
        )
    } else {
        let plan = Plan::new(logs, policy).with_units(units);
        RoutePlan::labeled(shared, plan, None, &label, false)
    };
    if let Some(r) = Rc::get_mut(&mut full) {
        r.release = release;
    }
    RoutePlans {
        _spec: spec.clone(),
        full: Some(full),
        exempt,
    }
}

/// Checks the constant costs of `routes`: a cost above a count of a limit of its route would
/// let no request pass.
pub(crate) fn validate_costs(
    shared: &Gate,
    routes: &[Arc<RouteSpec>],
) -> Result<(), crate::error::ConfigError> {
    for spec in routes {
        let Some(RouteCost::Units(units)) = spec.cost else {
            continue;
        };
        let Some(full) = route_plans(shared, spec, false).full else {
            continue;
        };
        let shadow = full.shadow.as_ref().map(|s| s.limits()).unwrap_or_default();
        if let Some(limit) = full
            .plan
            .limits()
            .iter()
            .chain(shadow)
            .find(|l| units > l.quota)
        {
            return Err(crate::error::ConfigError::invalid(
                "cost",
                format!(
                    "route {} costs {units} units, more than its limit {} allows in a window: \
                     no request could pass; lower the cost or raise the limit",
                    spec.name, limit.name
                ),
            ));
        }
    }
    Ok(())
}

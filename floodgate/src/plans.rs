//! Route plans: what is checked for a request on one route (the global rules, its own rules,
//! its policy), with the response parts that depend only on the plan, built once per route and
//! worker.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::http::header::HeaderValue;

use crate::gatekeeper::Shared;
use crate::response;
use crate::route_spec::{Mark, RouteSpec};
use crate::state::{Plan, ScopeId};
use crate::status::{ScopeInfo, ScopeKind};

/// A route's plan with what its responses need.
#[derive(Debug)]
pub(crate) struct RoutePlan {
    pub(crate) plan: Arc<Plan>,
    pub(crate) policy_header: Option<HeaderValue>,
    pub(crate) ratelimit: response::RateLimitCache,
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
    pub(crate) fn new(shared: &Shared, plan: Plan) -> Rc<RoutePlan> {
        let policy_header = if shared.ratelimit_headers {
            response::policy_header(plan.limits())
        } else {
            None
        };
        Rc::new(RoutePlan {
            plan: Arc::new(plan),
            policy_header,
            ratelimit: response::RateLimitCache::default(),
        })
    }
}

/// The plans of the route `spec`. `global_applied`: the app-wide middleware already counted
/// the global rules for this request (routing was deferred past its call), so they are left
/// out.
pub(crate) fn route_plans(
    shared: &Shared,
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
    let exempt = policy
        .is_some()
        .then(|| RoutePlan::new(shared, Plan::ban_only()));
    RoutePlans {
        _spec: spec.clone(),
        full: Some(RoutePlan::new(shared, Plan::new(logs, policy))),
        exempt,
    }
}

/// One worker's plans, built on first use: the global rules, bans alone, each annotated
/// route's, and those extended by matching targets.
#[derive(Debug)]
pub(crate) struct WorkerPlans {
    global: Rc<RoutePlan>,
    ban_only: Rc<RoutePlan>,
    /// By the address of the route's spec.
    routes: RefCell<HashMap<usize, RoutePlans>>,
    /// Route plans extended by matching targets, by (base plan, target bits).
    targeted: RefCell<HashMap<(usize, u64), Rc<RoutePlan>>>,
}

/// At most this many target-extended plans are cached per worker (then the cache restarts).
const MAX_TARGETED: usize = 4096;

impl WorkerPlans {
    /// The plans of a worker whose app wraps `routes` (built now, so that their limits show
    /// in a client's status before their first request).
    pub(crate) fn new(shared: &Shared, routes: &[Arc<RouteSpec>]) -> WorkerPlans {
        WorkerPlans {
            global: RoutePlan::new(
                shared,
                Plan::new([(ScopeId::GLOBAL, shared.global_rules.clone())], None),
            ),
            ban_only: RoutePlan::new(shared, Plan::ban_only()),
            routes: RefCell::new(
                routes
                    .iter()
                    .map(|spec| (Arc::as_ptr(spec) as usize, route_plans(shared, spec, false)))
                    .collect(),
            ),
            targeted: RefCell::new(HashMap::new()),
        }
    }

    /// The plan for what routing chose (`None`: a route not annotated), bans alone when the
    /// request is not limited; `None` when nothing applies (`#[bypass]`).
    pub(crate) fn choose(
        &self,
        shared: &Shared,
        route: Option<&Mark>,
        limited: bool,
    ) -> Option<Rc<RoutePlan>> {
        let Some(mark) = route else {
            return Some(if limited {
                self.global.clone()
            } else {
                self.ban_only.clone()
            });
        };
        if mark.spec.bypass {
            return None;
        }
        if !limited {
            return Some(self.ban_only.clone());
        }
        let key = Arc::as_ptr(&mark.spec) as usize;
        let mut routes = self.routes.borrow_mut();
        let plans = routes
            .entry(key)
            .or_insert_with(|| route_plans(shared, &mark.spec, false));
        if mark.exempt {
            plans.exempt.clone()
        } else {
            plans.full.clone()
        }
    }

    /// `base` with the rules of the targets in `bits` added.
    pub(crate) fn targeted(
        &self,
        shared: &Shared,
        base: Rc<RoutePlan>,
        bits: u64,
    ) -> Rc<RoutePlan> {
        let cache_key = (Rc::as_ptr(&base) as usize, bits);
        if let Some(plan) = self.targeted.borrow().get(&cache_key) {
            return plan.clone();
        }
        let extra = shared.targeting.target_logs(bits);
        let logs = base.plan.logs.iter().map(|l| (l.scope, l.rules.clone()));
        let policy = base.plan.policy.as_ref().map(|p| (p.scope, p.policy));
        let plan = RoutePlan::new(shared, Plan::new(logs.chain(extra), policy));
        let mut cache = self.targeted.borrow_mut();
        if cache.len() >= MAX_TARGETED {
            cache.clear();
        }
        cache.insert(cache_key, plan.clone());
        plan
    }
}

//! One worker's route plans: the global rules, bans alone, each annotated route's, and those
//! a request's cost or matching targets derive from them, built on first use and cached.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::gatekeeper::Gate;
use crate::plans::{route_plans, RoutePlan, RoutePlans};
use crate::route_spec::{RouteChoice, RouteSpec};
use crate::state::{Plan, ScopeId};

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
    /// Route plans of a cost function's answers, by (base plan, units).
    costed: RefCell<HashMap<(usize, u32), CostedPlan>>,
}

/// A plan with a cost function's units, and the plan it was made from (kept alive, so that
/// its address, the cache key, is not reused).
type CostedPlan = (Rc<RoutePlan>, Rc<RoutePlan>);

/// At most this many derived plans of each kind are cached per worker (then the cache
/// restarts).
const MAX_DERIVED: usize = 4096;

impl WorkerPlans {
    /// The plans of a worker whose app wraps `routes` (built now, so that their limits show
    /// in a client's status before their first request).
    pub(crate) fn new(shared: &Gate, routes: &[Arc<RouteSpec>]) -> WorkerPlans {
        let global_rules = [(ScopeId::GLOBAL, shared.global_rules.clone())];
        // In app-wide shadow mode the global rules are observed only.
        let global = if shared.shadow {
            RoutePlan::split(
                shared,
                Plan::new([], None),
                Some(Plan::new(global_rules, None)),
            )
        } else {
            RoutePlan::new(shared, Plan::new(global_rules, None))
        };
        WorkerPlans {
            global,
            ban_only: RoutePlan::new(shared, Plan::ban_only()),
            routes: RefCell::new(
                routes
                    .iter()
                    .map(|spec| (Arc::as_ptr(spec) as usize, route_plans(shared, spec, false)))
                    .collect(),
            ),
            targeted: RefCell::new(HashMap::new()),
            costed: RefCell::new(HashMap::new()),
        }
    }

    /// The plan for what routing chose (`None`: a route not annotated), bans alone when the
    /// request is not limited; `None` when nothing applies (`#[bypass]`).
    pub(crate) fn choose(
        &self,
        shared: &Gate,
        route: Option<&RouteChoice>,
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

    /// `base` with each request using `units` (a cost function's answer).
    pub(crate) fn costed(&self, shared: &Gate, base: Rc<RoutePlan>, units: u32) -> Rc<RoutePlan> {
        let cache_key = (Rc::as_ptr(&base) as usize, units);
        if let Some((_, plan)) = self.costed.borrow().get(&cache_key) {
            return plan.clone();
        }
        let plan = base.with_units(shared, units);
        let mut cache = self.costed.borrow_mut();
        if cache.len() >= MAX_DERIVED {
            cache.clear();
            // Targeted plans are keyed by their base's address, which may now be reused.
            self.targeted.borrow_mut().clear();
        }
        // Holds `base` too, so that its address is not reused while the entry lives.
        cache.insert(cache_key, (base, plan.clone()));
        plan
    }

    /// `base` with the rules of the targets in `bits` added: observed only for shadow
    /// targets, and for every target in app-wide shadow mode.
    pub(crate) fn targeted(&self, shared: &Gate, base: Rc<RoutePlan>, bits: u64) -> Rc<RoutePlan> {
        let cache_key = (Rc::as_ptr(&base) as usize, bits);
        if let Some(plan) = self.targeted.borrow().get(&cache_key) {
            return plan.clone();
        }
        let targeting = &shared.targeting;
        let with = |plan: &Plan, extra: Vec<_>| {
            let logs = plan.logs.iter().map(|l| (l.scope, l.rules.clone()));
            let policy = plan.policy.as_ref().map(|p| (p.scope, p.policy));
            Plan::new(logs.chain(extra), policy).with_units(plan.units())
        };
        let (enforced, mut observed) = if shared.shadow {
            (Vec::new(), targeting.target_logs(bits, false))
        } else {
            (targeting.target_logs(bits, false), Vec::new())
        };
        observed.extend(targeting.target_logs(bits, true));
        let shadow = match &base.shadow {
            Some(s) => Some(with(s, observed)),
            None if observed.is_empty() => None,
            None => Some(Plan::new(observed, None)),
        };
        let plan = base.relabel(RoutePlan::split(shared, with(&base.plan, enforced), shadow));
        let mut cache = self.targeted.borrow_mut();
        if cache.len() >= MAX_DERIVED {
            cache.clear();
        }
        cache.insert(cache_key, plan.clone());
        plan
    }
}

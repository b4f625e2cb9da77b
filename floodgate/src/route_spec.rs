//! What the app-wide middleware needs to know of a route: its rules ([`RouteSpec`]), and the
//! per-worker slot through which a route's `RouteRules` tells `Floodgate` which route routing
//! chose ([`RouteChoice`], [`WorkerCtx`]).

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use crate::error::ConfigError;
use crate::policy::{Policy, PolicyOverrides};
use crate::rules::Rule;
use crate::targeting::keys::{Found, RouteKey};

/// The rules of one route. Built by the attribute macros (as a `static`) or by [`RouteRules`].
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct RouteSpec {
    /// Stable and unique per route: the handler's module path and name for the macros.
    pub name: Cow<'static, str>,
    pub bypass: bool,
    pub rules: Cow<'static, [Rule]>,
    pub standalone: bool,
    pub policy: Option<PolicySpec>,
    /// The route's key extractor (`key = path::to::fn`), evaluated during routing.
    pub key: Option<RouteKey>,
    /// Shadow mode: the route's own rules and policy are checked and counted, and what they
    /// would refuse is logged and served.
    pub shadow: bool,
    /// Units of every limit one request uses (`cost = ..`); `None`: 1.
    pub cost: Option<RouteCost>,
    /// Which responses the route's own rules and policy count (`count = ..`); `None`: all.
    pub count: Option<crate::count_when::CountWhen>,
}

/// What one request of a route costs, in units of every limit's count.
#[doc(hidden)]
#[derive(Clone)]
pub enum RouteCost {
    /// The same for every request (at least 1).
    Units(u32),
    /// A function of the request (`cost = path::to::fn`).
    Fn(fn(&actix_web::HttpRequest) -> u32),
    /// A closure (`RouteRules::cost_fn`).
    Dyn(Arc<dyn Fn(&actix_web::HttpRequest) -> u32 + Send + Sync>),
}

impl fmt::Debug for RouteCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteCost::Units(n) => write!(f, "Units({n})"),
            RouteCost::Fn(_) | RouteCost::Dyn(_) => f.write_str("Fn"),
        }
    }
}

impl RouteCost {
    /// The units `req` uses: a function's answer, at least 1; a function that panics
    /// counts 1 (logged), so a request is never free and never takes the worker down.
    pub(crate) fn units(&self, route: &str, req: &actix_web::HttpRequest) -> u32 {
        let f = |req: &actix_web::HttpRequest| match self {
            RouteCost::Units(n) => *n,
            RouteCost::Fn(f) => f(req),
            RouteCost::Dyn(f) => f(req),
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(req)))
            .unwrap_or_else(|_| {
                log::error!(
                    "floodgate: the cost function of route {route} panicked; the request costs 1"
                );
                1
            })
            .max(1)
    }
}

/// A route's policy: keys given in an attribute (over the app's default policy), a whole
/// [`Policy`], or the name of a policy registered on the app and shared by every route
/// naming it.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub enum PolicySpec {
    Overrides(PolicyOverrides),
    Full(Policy),
    Shared(Cow<'static, str>),
}

/// The app-wide settings a route's policy is resolved against.
pub(crate) struct PolicySource<'a> {
    pub(crate) default: &'a Policy,
    pub(crate) shared: &'a [(Arc<str>, Policy)],
}

impl PolicySource<'_> {
    /// The policy registered as `name`.
    pub(crate) fn named(&self, name: &str) -> Option<&Policy> {
        self.shared
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, p)| p)
    }
}

impl RouteSpec {
    /// Configuration mistakes of this route, naming it.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let field = format!("route {}", self.name);
        crate::validate::rules(&field, &self.rules)?;
        if let Some(PolicySpec::Full(p)) = &self.policy {
            crate::validate::policy(&field, p)?;
        }
        if let Some(k) = &self.key {
            k.validate().map_err(|e| e.in_field(&field))?;
        }
        if let Some(count) = &self.count {
            count.validate(&field)?;
            if self.rules.is_empty() && self.policy.is_none() {
                return Err(ConfigError::invalid(
                    &field,
                    "count = ..: the route has no rules or policy of its own to count by \
                     response (the app's global rules count every request); give it \
                     `rate_limit_rules` or a policy",
                ));
            }
        }
        if let Some(RouteCost::Units(0)) = self.cost {
            return Err(ConfigError::invalid(
                &field,
                "cost = 0: a request must use at least 1 unit (to serve requests uncounted, \
                 use request_data_check)",
            ));
        }
        Ok(())
    }

    /// The route's policy, resolved: `None` without a policy; for a shared policy that is not
    /// registered (a mistake the app's start reports), the default policy.
    pub(crate) fn resolve_policy(&self, from: &PolicySource<'_>) -> Option<Policy> {
        Some(match self.policy.as_ref()? {
            PolicySpec::Full(p) => *p,
            PolicySpec::Overrides(o) => from.default.with_overrides(o),
            PolicySpec::Shared(name) => match from.named(name) {
                Some(p) => *p,
                None => {
                    log::error!(
                        "floodgate: route {} names the shared policy {name:?}, which is not \
                         registered with Floodgate::policy; the default policy applies",
                        self.name
                    );
                    *from.default
                }
            },
        })
    }

    /// The `request_data_check` of the route's policy: its own, else the app's default
    /// policy's (for keys left out of `#[rate_limited]`), else the shared policy's.
    pub(crate) fn data_check(
        &self,
        from: &PolicySource<'_>,
    ) -> Option<crate::policy::RequestCheck> {
        match self.policy.as_ref()? {
            PolicySpec::Overrides(o) => o.request_data_check.or(from.default.request_data_check),
            PolicySpec::Full(p) => p.request_data_check,
            PolicySpec::Shared(name) => from.named(name).and_then(|p| p.request_data_check),
        }
    }

    /// The name of the shared policy the route follows, if any.
    pub(crate) fn shared_policy(&self) -> Option<&str> {
        match &self.policy {
            Some(PolicySpec::Shared(name)) => Some(name),
            _ => None,
        }
    }
}

/// What routing chose, written by `RouteRules` during the app-wide middleware's call.
#[derive(Debug)]
pub(crate) struct RouteChoice {
    pub(crate) spec: Arc<RouteSpec>,
    /// The policy's `request_data_check` returned true for this request.
    pub(crate) exempt: bool,
    /// What the route's key extractor found, when it has one.
    pub(crate) key: Option<Found>,
    /// Units this request uses (its cost); 1 without `cost`.
    pub(crate) units: u32,
}

/// Per-worker state shared by `Floodgate` and the `RouteRules` of that worker's routes.
#[derive(Default)]
pub(crate) struct WorkerCtx {
    pub(crate) in_call: Cell<bool>,
    pub(crate) mark: Cell<Option<RouteChoice>>,
    /// A route of this worker was called after `Floodgate`'s call returned (a middleware in
    /// between defers routing), and decided on its own.
    pub(crate) deferred_seen: Cell<bool>,
}

impl fmt::Debug for WorkerCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerCtx")
            .field("in_call", &self.in_call.get())
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Routes whose `RouteRules` were built on this thread since a `Floodgate` last took them:
    /// actix-web builds a resource's middleware before the app's, on the worker's thread, so
    /// `Floodgate`'s factory learns here which routes it wraps (to check the shared policies
    /// they name, and to know their limits before their first request).
    static BUILT: std::cell::RefCell<Vec<Arc<RouteSpec>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// At most this many routes wait for a `Floodgate` on one thread.
const MAX_BUILT: usize = 65_536;

/// Notes that a route's `RouteRules` was built on this thread.
pub(crate) fn built(spec: &Arc<RouteSpec>) {
    BUILT.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < MAX_BUILT {
            b.push(spec.clone());
        }
    });
}

/// The routes built on this thread since the last call.
pub(crate) fn take_built() -> Vec<Arc<RouteSpec>> {
    BUILT.with(|b| std::mem::take(&mut *b.borrow_mut()))
}

/// How `RouteRules` finds its worker's `Floodgate` (through the request's app data).
#[derive(Clone, Debug)]
pub(crate) struct WorkerLink(pub(crate) Rc<WorkerCtx>);

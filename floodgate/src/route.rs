//! Per-route rules: what `#[specific]`, `#[bypass]` and `#[rate_limited]` attach, and
//! [`RouteRules`] for routes registered without the macros.
//!
//! How a route's rules reach the app-wide middleware: `RouteRules` is a resource-level
//! middleware. Routing in actix-web is synchronous: inside the app-wide `Floodgate`'s call to
//! its inner service, the router picks the resource and runs that resource's middleware
//! `call`, while handlers and extractors run only when the returned future is polled. So
//! `RouteRules::call` writes its route into a per-worker slot that `Floodgate` reads as soon as
//! its call returns: the decision is made before any handler or extractor code runs, knowing
//! exactly which route (and method) was chosen.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::Error;

use crate::policy::{Policy, PolicyOverrides};
use crate::rules::Rule;

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
    pub key: Option<crate::targeting::keys::RouteKey>,
}

/// A route's policy: keys given in an attribute (over the app's default policy), or a whole
/// [`Policy`].
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub enum PolicySpec {
    Overrides(PolicyOverrides),
    Full(Policy),
}

impl RouteSpec {
    pub(crate) fn data_check(&self) -> Option<crate::policy::RequestCheck> {
        match &self.policy {
            Some(PolicySpec::Overrides(o)) => o.request_data_check,
            Some(PolicySpec::Full(p)) => p.request_data_check,
            None => None,
        }
    }
}

/// Rules for one route registered without the attribute macros: wrap the resource with it.
///
/// The `name` identifies the route's counters: it must be unique per route and stable across
/// restarts (it keys persistent stores).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use actix_web::{web, App, HttpResponse};
/// use floodgate::{Floodgate, Policy, RouteRules, Rule};
///
/// let floodgate = Floodgate::new().rate_limit_rules(["20/1s".parse::<Rule>().unwrap()]);
/// let app = App::new()
///     .wrap(floodgate)
///     .service(
///         web::resource("/search")
///             .wrap(RouteRules::new("search").specific([Rule::new(1, Duration::from_secs(2))]))
///             .route(web::get().to(HttpResponse::Ok)),
///     )
///     .service(
///         web::resource("/health")
///             .wrap(RouteRules::new("health").bypass())
///             .route(web::get().to(HttpResponse::Ok)),
///     )
///     .service(
///         web::resource("/export")
///             .wrap(RouteRules::new("export").policy(Policy::new(5, Duration::from_secs(3600))))
///             .route(web::get().to(HttpResponse::Ok)),
///     );
/// ```
#[derive(Clone, Debug)]
pub struct RouteRules {
    spec: Arc<RouteSpec>,
}

impl RouteRules {
    /// Rules for the route named `name`; with nothing more, the app's global rules apply.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        RouteRules {
            spec: Arc::new(RouteSpec {
                name: name.into(),
                bypass: false,
                rules: Cow::Borrowed(&[]),
                standalone: false,
                policy: None,
                key: None,
            }),
        }
    }

    #[doc(hidden)]
    pub fn from_static(spec: &'static RouteSpec) -> Self {
        RouteRules {
            spec: Arc::new(spec.clone()),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut RouteSpec)) -> Self {
        f(Arc::make_mut(&mut self.spec));
        self
    }

    /// Adds rules of this route, counted per client for this route only, on top of the global
    /// rules (see [`standalone`](Self::standalone)).
    pub fn specific(self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.edit(|s| s.rules.to_mut().extend(rules))
    }

    /// Only this route's own rules apply, not the global ones.
    pub fn standalone(self) -> Self {
        self.edit(|s| s.standalone = true)
    }

    /// Nothing applies on this route: no rule, no counting, no ban check.
    pub fn bypass(self) -> Self {
        self.edit(|s| s.bypass = true)
    }

    /// This route follows `policy` (the floodgate family).
    pub fn policy(self, policy: Policy) -> Self {
        self.edit(|s| s.policy = Some(PolicySpec::Full(policy)))
    }

    /// Counts this route's requests under the key `extractor` gives instead of the IP
    /// address (see [`KeyExtractor`](crate::KeyExtractor)); it runs during routing, so it
    /// can read the route's path parameters.
    pub fn key(self, extractor: impl crate::KeyExtractor) -> Self {
        let key = crate::targeting::keys::RouteKey::Dyn(Arc::new(extractor));
        self.edit(|s| s.key = Some(key))
    }

    /// This route follows the app's default policy.
    pub fn default_policy(self) -> Self {
        self.edit(|s| s.policy = Some(PolicySpec::Overrides(PolicyOverrides::NONE)))
    }
}

/// What routing chose, written by `RouteRules` during the app-wide middleware's call.
#[derive(Debug)]
pub(crate) struct Mark {
    pub(crate) spec: Arc<RouteSpec>,
    /// The policy's `request_data_check` returned true for this request.
    pub(crate) exempt: bool,
    /// What the route's key extractor found, when it has one.
    pub(crate) key: Option<Option<crate::ClientKey>>,
}

/// Per-worker state shared by `Floodgate` and the `RouteRules` of that worker's routes.
#[derive(Default)]
pub(crate) struct WorkerCtx {
    pub(crate) in_call: Cell<bool>,
    pub(crate) mark: Cell<Option<Mark>>,
}

impl fmt::Debug for WorkerCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerCtx")
            .field("in_call", &self.in_call.get())
            .finish_non_exhaustive()
    }
}

/// How `RouteRules` finds its worker's `Floodgate` (through the request's app data).
#[derive(Clone, Debug)]
pub(crate) struct WorkerLink(pub(crate) Rc<WorkerCtx>);

impl<S, B> Transform<S, ServiceRequest> for RouteRules
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = RouteRulesMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RouteRulesMiddleware {
            service,
            spec: self.spec.clone(),
        }))
    }
}

/// The service of [`RouteRules`]: marks the route and calls through.
pub struct RouteRulesMiddleware<S> {
    service: S,
    spec: Arc<RouteSpec>,
}

impl<S> fmt::Debug for RouteRulesMiddleware<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteRulesMiddleware")
            .field("route", &self.spec.name)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for RouteRulesMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = S::Future;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        match req.app_data::<WorkerLink>() {
            Some(WorkerLink(ctx)) if ctx.in_call.get() => {
                let exempt = self.spec.data_check().is_some_and(|check| {
                    // A panicking check must not take the worker down: count the request.
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(req.request())))
                        .unwrap_or_else(|_| {
                            log::error!(
                                "floodgate: request_data_check of route {} panicked; the request is counted",
                                self.spec.name
                            );
                            false
                        })
                });
                let key = self.spec.key.as_ref().map(|k| k.extract(req.request()));
                ctx.mark.set(Some(Mark {
                    spec: self.spec.clone(),
                    exempt,
                    key,
                }));
            }
            Some(_) => warn_once(&self.spec.name, "was routed after the Floodgate middleware returned: a middleware between Floodgate and the routes defers routing. call .wrap(floodgate) before that middleware's .wrap(), so that Floodgate sits inside it, next to the routes"),
            None => warn_once(&self.spec.name, "carries floodgate rules, but no Floodgate wraps its App or scope: add .wrap(floodgate.clone())"),
        }
        self.service.call(req)
    }
}

fn warn_once(route: &str, problem: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED
        .call_once(|| log::error!("floodgate: route {route} {problem}; its rules are not applied"));
}

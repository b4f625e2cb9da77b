//! What the app-wide middleware needs to know of a route: its rules ([`RouteSpec`]), and the
//! per-worker slot through which a route's `RouteRules` tells `Floodgate` which route routing
//! chose ([`Mark`], [`WorkerCtx`]).

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
        Ok(())
    }

    pub(crate) fn data_check(&self) -> Option<crate::policy::RequestCheck> {
        match &self.policy {
            Some(PolicySpec::Overrides(o)) => o.request_data_check,
            Some(PolicySpec::Full(p)) => p.request_data_check,
            None => None,
        }
    }
}

/// What routing chose, written by `RouteRules` during the app-wide middleware's call.
#[derive(Debug)]
pub(crate) struct Mark {
    pub(crate) spec: Arc<RouteSpec>,
    /// The policy's `request_data_check` returned true for this request.
    pub(crate) exempt: bool,
    /// What the route's key extractor found, when it has one.
    pub(crate) key: Option<Found>,
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

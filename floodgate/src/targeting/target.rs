//! Targeted rules: rules (or a refusal) that apply only to requests with certain traits.

use std::sync::Arc;

use actix_web::dev::ServiceRequest;
use actix_web::http::header::HeaderName;
use actix_web::http::Method;

use super::geo::{countries, Country};
use super::probe::Glob;
use crate::error::ConfigError;
use crate::rules::Rule;
use crate::state::ScopeId;

#[derive(Clone, Debug)]
pub(crate) enum Place {
    In(Vec<Country>),
    NotIn(Vec<Country>),
}

#[derive(Clone, Debug)]
pub(crate) enum Action {
    None,
    Limit(Vec<Rule>),
    Deny,
}

/// Rules that apply only to requests matching traits: method, path pattern, header present
/// or matching, country. Every trait given must match (and, within one trait, any of the
/// values given).
///
/// A target's rules are counted per client and per target, on top of whatever else applies
/// to the route (global, specific and policy limits), and all are checked together. Targets
/// apply on every route but `#[bypass]` ones, and not to excluded methods.
///
/// Paths are patterns in which `*` matches anything (`/api/*`), matched against the request
/// path, case sensitive. Countries need a [`GeoDb`](crate::GeoDb)
/// ([`Floodgate::geo_database`](crate::Floodgate::geo_database)): a client of unknown
/// country is *outside* every list of countries, so it matches
/// [`outside_countries`](Self::outside_countries) and never [`countries`](Self::countries).
///
/// # Examples
///
/// "POST /login from outside the EU: 3 per minute":
///
/// ```
/// use std::time::Duration;
/// use actix_web::http::Method;
/// use floodgate::{Country, Floodgate, Rule, Target};
///
/// let floodgate = Floodgate::new().target(
///     Target::new("login-outside-eu")
///         .method(Method::POST)
///         .path("/login")
///         .outside(Country::eu())
///         .limit([Rule::new(3, Duration::from_secs(60))]),
/// );
/// ```
#[derive(Clone, Debug)]
pub struct Target {
    pub(crate) name: Arc<str>,
    methods: Vec<Method>,
    paths: Vec<Glob>,
    headers: Vec<(HeaderName, Option<Glob>)>,
    pub(crate) place: Option<Place>,
    pub(crate) action: Action,
    pub(crate) invalid: Option<ConfigError>,
    /// Shadow mode: what this target would refuse is logged and served.
    pub(crate) shadow: bool,
}

impl Target {
    /// A target called `name` (unique per app: it names the counters and shows in
    /// refusals). With no trait, it matches every request.
    pub fn new(name: impl Into<String>) -> Self {
        Target {
            name: Arc::from(name.into()),
            methods: Vec::new(),
            paths: Vec::new(),
            headers: Vec::new(),
            place: None,
            action: Action::None,
            invalid: None,
            shadow: false,
        }
    }

    /// Matches requests with this method (repeat for several).
    pub fn method(mut self, method: Method) -> Self {
        self.methods.push(method);
        self
    }

    /// Matches requests whose path matches `pattern` (`*` matches anything; repeat for
    /// several).
    pub fn path(mut self, pattern: &str) -> Self {
        self.paths.push(Glob::new(pattern, false));
        self
    }

    /// Matches requests carrying header `name`, whatever its value.
    pub fn header(self, name: &str) -> Self {
        self.header_entry(name, None)
    }

    /// Matches requests whose header `name` has a value matching `pattern` (`*` matches
    /// anything, ASCII case ignored): `.header_matches("user-agent", "*curl*")`.
    pub fn header_matches(self, name: &str, pattern: &str) -> Self {
        self.header_entry(name, Some(Glob::new(pattern, true)))
    }

    fn header_entry(mut self, name: &str, value: Option<Glob>) -> Self {
        match HeaderName::from_bytes(name.trim().as_bytes()) {
            Ok(h) => self.headers.push((h, value)),
            Err(_) => {
                self.invalid = Some(ConfigError::invalid(
                    "target",
                    format!("target {}: {name:?} is not a header name", self.name),
                ))
            }
        }
        self
    }

    /// Matches clients from these countries (codes such as `"FR"`, or [`Country`] values).
    pub fn countries<I, T>(self, codes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.place_of(codes, true)
    }

    /// Matches clients from outside these countries, and of unknown country.
    pub fn outside_countries<I, T>(self, codes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.place_of(codes, false)
    }

    /// Matches clients from outside these countries (and of unknown country):
    /// `.outside(Country::eu())`.
    pub fn outside(mut self, list: impl IntoIterator<Item = Country>) -> Self {
        let mut list: Vec<Country> = list.into_iter().collect();
        list.sort();
        list.dedup();
        self.place = Some(Place::NotIn(list));
        self
    }

    fn place_of<I, T>(mut self, codes: I, inside: bool) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        match countries(codes) {
            Ok(list) if inside => self.place = Some(Place::In(list)),
            Ok(list) => self.place = Some(Place::NotIn(list)),
            Err(err) => {
                self.invalid = Some(ConfigError::invalid(
                    "target",
                    format!("target {}: {err}", self.name),
                ))
            }
        }
        self
    }

    /// Matching requests are also limited by these rules.
    pub fn limit(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.action = Action::Limit(rules.into_iter().collect());
        self
    }

    /// Matching requests are refused with 403 (a per-route geo-block, say).
    pub fn deny(mut self) -> Self {
        self.action = Action::Deny;
        self
    }

    /// Shadow mode for this target: its rules are checked and counted as usual, but a
    /// request they (or its [`deny`](Self::deny)) would refuse is logged and served. The
    /// app's other rules still apply to it. See [`Floodgate::shadow`](crate::Floodgate::shadow).
    pub fn shadow(mut self) -> Self {
        self.shadow = true;
        self
    }

    pub(crate) fn scope(&self) -> ScopeId {
        ScopeId::named(&format!("target {}", self.name))
    }

    pub(crate) fn needs_country(&self) -> bool {
        self.place.is_some()
    }

    /// Whether `req` matches; `country` is looked up at most once, when needed.
    pub(crate) fn matches(
        &self,
        req: &ServiceRequest,
        country: &mut impl FnMut() -> Option<Country>,
    ) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(req.method()) {
            return false;
        }
        if !self.paths.is_empty() {
            let path = super::routed_path(req);
            if !self.paths.iter().any(|g| g.matches(path)) {
                return false;
            }
        }
        for (name, value) in &self.headers {
            let mut values = req.headers().get_all(name);
            let ok = match value {
                None => values.next().is_some(),
                // Bytes that are not visible ASCII must not hide a value from its pattern.
                Some(g) => values.any(|v| g.matches(&String::from_utf8_lossy(v.as_bytes()))),
            };
            if !ok {
                return false;
            }
        }
        match &self.place {
            None => true,
            Some(Place::In(list)) => country().is_some_and(|c| list.binary_search(&c).is_ok()),
            Some(Place::NotIn(list)) => country().is_none_or(|c| list.binary_search(&c).is_err()),
        }
    }
}

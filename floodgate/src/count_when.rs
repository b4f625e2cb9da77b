//! [`CountWhen`]: which responses a route's rules count (response-based counting), and how a
//! response is matched against it.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;

use crate::error::ConfigError;

/// Which responses a route's own rules and policy count: `count = ..` in `#[specific]` and
/// `#[rate_limited]`, [`RouteRules::count_when`](crate::RouteRules::count_when).
///
/// The decision still comes before the handler: a client over its limit is refused without
/// running it. An allowed request is counted at once (so that requests in flight together can
/// never pass the last unit of a quota between them), and given back when its response turns
/// out not to match. A request whose response never comes (the client went away, the handler
/// panicked) is given back too: its client learnt nothing from it. The app's global rules
/// and targets still count every request.
///
/// # Examples
///
/// ```
/// use floodgate::CountWhen;
///
/// let failed_logins: CountWhen = "4xx".parse().unwrap();
/// assert!(failed_logins.matches_status(401));
/// assert!(!failed_logins.matches_status(200));
/// assert!(CountWhen::statuses([401, 403]).matches_status(403));
/// assert!("42x".parse::<CountWhen>().is_err());
/// ```
#[derive(Clone)]
pub enum CountWhen {
    /// Responses of one status class: `Class(4)` for `"4xx"`, `Class(5)` for `"5xx"`.
    Class(u8),
    /// Responses of these statuses: `count = [401, 403]`.
    Statuses(Cow<'static, [u16]>),
    /// Responses for which the function returns true (`count = path::to::fn`). The response
    /// it sees has the status, headers and request, but not the body.
    Fn(fn(&ServiceResponse) -> bool),
    /// A closure (`RouteRules::count_when_fn`).
    Dyn(Arc<dyn Fn(&ServiceResponse) -> bool + Send + Sync>),
}

impl fmt::Debug for CountWhen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CountWhen::Class(c) => write!(f, "\"{c}xx\""),
            CountWhen::Statuses(s) => f.debug_list().entries(s.iter()).finish(),
            CountWhen::Fn(_) | CountWhen::Dyn(_) => f.write_str("Fn"),
        }
    }
}

impl CountWhen {
    /// Responses of these statuses.
    pub fn statuses(statuses: impl IntoIterator<Item = u16>) -> CountWhen {
        CountWhen::Statuses(Cow::Owned(statuses.into_iter().collect()))
    }

    /// Responses for which `f` returns true.
    pub fn when(f: impl Fn(&ServiceResponse) -> bool + Send + Sync + 'static) -> CountWhen {
        CountWhen::Dyn(Arc::new(f))
    }

    /// Whether a response of `status` counts, for a class or a list of statuses; true for a
    /// function, which needs the whole response to say.
    pub fn matches_status(&self, status: u16) -> bool {
        match self {
            CountWhen::Class(c) => status / 100 == u16::from(*c),
            CountWhen::Statuses(s) => s.contains(&status),
            CountWhen::Fn(_) | CountWhen::Dyn(_) => true,
        }
    }

    /// Configuration mistakes, for the setting `field`.
    pub(crate) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        match self {
            CountWhen::Class(c) if !(1..=5).contains(c) => Err(ConfigError::invalid(
                field,
                format!("count = \"{c}xx\": the status classes are 1xx to 5xx"),
            )),
            CountWhen::Statuses(s) if s.is_empty() => Err(ConfigError::invalid(
                field,
                "count = []: the list of statuses is empty, so no request would ever count",
            )),
            CountWhen::Statuses(s) => match s.iter().find(|&&n| !(100..=999).contains(&n)) {
                Some(n) => Err(ConfigError::invalid(
                    field,
                    format!("count = [.., {n}, ..]: {n} is not an HTTP status (100 to 999)"),
                )),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Whether `res` counts: a function sees the response without its body (taken out and put
    /// back, no copy); a function that panics counts the request (logged).
    pub(crate) fn matches<B>(
        &self,
        route: &str,
        res: ServiceResponse<B>,
    ) -> (ServiceResponse<B>, bool) {
        let f: &dyn Fn(&ServiceResponse) -> bool = match self {
            CountWhen::Fn(f) => f,
            CountWhen::Dyn(f) => &**f,
            _ => {
                let counts = self.matches_status(res.status().as_u16());
                return (res, counts);
            }
        };
        let (req, res) = res.into_parts();
        let (head, body) = res.into_parts();
        let view = ServiceResponse::new(req, head.set_body(BoxBody::new(())));
        let counts = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&view)))
            .unwrap_or_else(|_| {
                log::error!(
                    "floodgate: the count function of route {route} panicked; the request counts"
                );
                true
            });
        let (req, head) = view.into_parts();
        (ServiceResponse::new(req, head.set_body(body)), counts)
    }

    /// Whether an error that a service inside returned instead of a response counts: by its
    /// status for a class or a list; always for a function (there is no response to show it).
    pub(crate) fn matches_error(&self, status: StatusCode) -> bool {
        self.matches_status(status.as_u16())
    }
}

impl std::str::FromStr for CountWhen {
    type Err = ConfigError;

    /// `"4xx"` (a class, `1xx` to `5xx`) or one status, such as `"401"`.
    fn from_str(s: &str) -> Result<CountWhen, ConfigError> {
        let t = s.trim();
        let bytes = t.as_bytes();
        let when = match bytes {
            [c @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => CountWhen::Class(c - b'0'),
            _ => match t.parse::<u16>() {
                Ok(n) => CountWhen::Statuses(Cow::Owned(vec![n])),
                Err(_) => {
                    return Err(ConfigError::invalid(
                        "count",
                        format!("{s:?} is neither a status class (\"4xx\") nor a status (\"401\")"),
                    ))
                }
            },
        };
        when.validate("count")?;
        Ok(when)
    }
}

impl From<StatusCode> for CountWhen {
    fn from(status: StatusCode) -> CountWhen {
        CountWhen::Statuses(Cow::Owned(vec![status.as_u16()]))
    }
}

impl<const N: usize> From<[u16; N]> for CountWhen {
    fn from(statuses: [u16; N]) -> CountWhen {
        CountWhen::statuses(statuses)
    }
}

impl From<fn(&ServiceResponse) -> bool> for CountWhen {
    fn from(f: fn(&ServiceResponse) -> bool) -> CountWhen {
        CountWhen::Fn(f)
    }
}

//! Custom client keys: limit by API key, user id or any function of the request instead of
//! the IP address.

use std::fmt;
use std::sync::Arc;

use actix_web::http::header::HeaderName;
use actix_web::http::StatusCode;
use actix_web::HttpRequest;

use crate::client::ClientKey;
use crate::error::ConfigError;

/// Computes the key a request's limits are counted under; `None` when the request has none
/// (see [`MissingKey`]).
///
/// Closures `Fn(&HttpRequest) -> Option<K>` implement it, for any `K` that converts into a
/// [`ClientKey`] (`String`, `&'static str`, `ClientKey`), as tower's policies do.
///
/// # Examples
///
/// ```
/// use actix_web::HttpRequest;
/// use floodgate::{Floodgate, MissingKey};
///
/// let floodgate = Floodgate::new()
///     .key(|req: &HttpRequest| {
///         req.headers().get("x-api-key")?.to_str().ok().map(|k| format!("api:{k}"))
///     })
///     .missing_key(MissingKey::UseIp);
/// ```
///
/// # Security
///
/// A key read from the request is chosen by the client. Use keys the app verifies (a signed
/// token, a session), or pair a key limit with IP limits: a client inventing a new API key
/// on every request otherwise gets a fresh quota every time. Bans of the client's IP address
/// apply whatever the key.
pub trait KeyExtractor: Send + Sync + 'static {
    /// The request's key, `None` when it has none.
    fn extract(&self, req: &HttpRequest) -> Option<ClientKey>;
}

impl<F, K> KeyExtractor for F
where
    F: Fn(&HttpRequest) -> Option<K> + Send + Sync + 'static,
    K: Into<ClientKey>,
{
    fn extract(&self, req: &HttpRequest) -> Option<ClientKey> {
        self(req).map(Into::into)
    }
}

/// Keys requests by the value of a header (an API key), prefixed with the header's name so
/// that it never collides with another kind of key.
#[derive(Clone, Debug)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys by header `name`. A header missing, empty, not text or longer than 1 KiB gives no
    /// key. An invalid header name is logged as an error and gives an extractor that never
    /// finds a key; see [`try_new`](Self::try_new) to get the error instead.
    pub fn new(name: &str) -> Self {
        HeaderKey::try_new(name).unwrap_or_else(|err| {
            log::error!("floodgate: {err}; HeaderKey finds no key");
            HeaderKey {
                name: HeaderName::from_static("x-floodgate-invalid-header-name"),
            }
        })
    }

    /// Like [`new`](Self::new), but an invalid header name is an error.
    pub fn try_new(name: &str) -> Result<Self, ConfigError> {
        HeaderName::from_bytes(name.trim().as_bytes())
            .map(|name| HeaderKey { name })
            .map_err(|_| {
                ConfigError::invalid("key", format!("{name:?} is not a valid header name"))
            })
    }
}

impl KeyExtractor for HeaderKey {
    fn extract(&self, req: &HttpRequest) -> Option<ClientKey> {
        let v = req.headers().get(&self.name)?.to_str().ok()?.trim();
        if v.is_empty() || v.len() > 1024 {
            return None;
        }
        Some(ClientKey::custom(format!("{}:{v}", self.name)))
    }
}

impl From<String> for ClientKey {
    fn from(key: String) -> Self {
        ClientKey::custom(key)
    }
}

impl From<&str> for ClientKey {
    fn from(key: &str) -> Self {
        ClientKey::custom(key)
    }
}

impl From<Arc<str>> for ClientKey {
    fn from(key: Arc<str>) -> Self {
        ClientKey::custom(key)
    }
}

/// What a request gets when its key cannot be extracted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissingKey {
    /// Count it under its IP address, as without a key extractor (the default).
    #[default]
    UseIp,
    /// Refuse it with this status (a 4xx such as 400 or 401); no handler runs.
    Refuse(StatusCode),
    /// Serve it without limits (bans of its IP still apply).
    Skip,
}

/// A route's key extractor, as the attributes' `key = path::to::fn` and
/// [`RouteRules::key`](crate::RouteRules::key) set it.
#[doc(hidden)]
#[derive(Clone)]
pub enum RouteKey {
    Fn(fn(&HttpRequest) -> Option<ClientKey>),
    Dyn(Arc<dyn KeyExtractor>),
}

impl RouteKey {
    pub(crate) fn extract(&self, req: &HttpRequest) -> Option<ClientKey> {
        match self {
            RouteKey::Fn(f) => f(req),
            RouteKey::Dyn(k) => k.extract(req),
        }
    }
}

impl fmt::Debug for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RouteKey")
    }
}

/// Turns what a `key = ..` function returns into a key (used by generated code).
#[doc(hidden)]
pub fn into_key<K: Into<ClientKey>>(key: Option<K>) -> Option<ClientKey> {
    key.map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn header_keys_and_closures() {
        assert!(HeaderKey::try_new("bad header").is_err());
        let k = HeaderKey::new("X-Api-Key");
        let req = TestRequest::default()
            .insert_header(("x-api-key", " abc "))
            .to_http_request();
        assert_eq!(k.extract(&req), Some(ClientKey::custom("x-api-key:abc")));
        for bad in ["", "   "] {
            let req = TestRequest::default()
                .insert_header(("x-api-key", bad))
                .to_http_request();
            assert_eq!(k.extract(&req), None, "{bad:?}");
        }
        let long = "k".repeat(2000);
        let req = TestRequest::default()
            .insert_header(("x-api-key", long.as_str()))
            .to_http_request();
        assert_eq!(k.extract(&req), None);
        assert_eq!(HeaderKey::new("bad header").extract(&req), None);

        let by_path = |req: &HttpRequest| Some(format!("path:{}", req.path()));
        let req = TestRequest::with_uri("/a/b").to_http_request();
        assert_eq!(by_path.extract(&req), Some(ClientKey::custom("path:/a/b")));
        let never = |_: &HttpRequest| None::<&'static str>;
        assert_eq!(never.extract(&req), None);
    }
}

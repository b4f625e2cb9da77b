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

    /// A configuration mistake in this extractor (an invalid header name, say). Checked when
    /// the app starts: an error stops it from starting, naming the setting.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Custom keys longer than this are not used: the request is counted under its IP address
/// (a key of megabytes must not cost megabytes of every store).
pub(crate) const MAX_KEY_LEN: usize = 1024;

/// What a key extractor found for one request.
#[derive(Debug)]
pub(crate) enum Found {
    Key(ClientKey),
    /// The request has no key: the [`MissingKey`] outcome applies.
    Missing,
    /// The extractor panicked or gave a key longer than [`MAX_KEY_LEN`]: the request is
    /// counted under its IP address, whatever [`MissingKey`] says (a client must not escape
    /// its limits by making the extractor fail).
    Unusable,
}

/// Runs an extractor, isolating a panic and refusing over-long keys.
pub(crate) fn extract_safely(who: &str, f: impl FnOnce() -> Option<ClientKey>) -> Found {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Some(key)) if key.custom_len() > MAX_KEY_LEN => {
            log::debug!(
                "floodgate: the key extractor of {who} gave a key of {} bytes (over {MAX_KEY_LEN}); \
                 the request is counted under its IP address",
                key.custom_len()
            );
            Found::Unusable
        }
        Ok(Some(key)) => Found::Key(key),
        Ok(None) => Found::Missing,
        Err(_) => {
            log::error!(
                "floodgate: the key extractor of {who} panicked; the request is counted under \
                 its IP address"
            );
            Found::Unusable
        }
    }
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
    invalid: Option<ConfigError>,
}

impl HeaderKey {
    /// Keys by header `name`. A header missing, empty, not text or longer than 1 KiB gives no
    /// key. An invalid header name stops the app from starting (the `Floodgate` or
    /// `RouteRules` it is given to reports it); see [`try_new`](Self::try_new) to get the
    /// error at once instead.
    pub fn new(name: &str) -> Self {
        HeaderKey::try_new(name).unwrap_or_else(|err| HeaderKey {
            name: HeaderName::from_static("x-floodgate-invalid-header-name"),
            invalid: Some(err),
        })
    }

    /// Like [`new`](Self::new), but an invalid header name is an error.
    pub fn try_new(name: &str) -> Result<Self, ConfigError> {
        HeaderName::from_bytes(name.trim().as_bytes())
            .map(|name| HeaderKey {
                name,
                invalid: None,
            })
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

    fn validate(&self) -> Result<(), ConfigError> {
        self.invalid.clone().map_or(Ok(()), Err)
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

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match self {
            RouteKey::Fn(_) => Ok(()),
            RouteKey::Dyn(k) => k.validate(),
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
        assert!(HeaderKey::new("bad header").validate().is_err());
        assert!(HeaderKey::new("x-api-key").validate().is_ok());

        let by_path = |req: &HttpRequest| Some(format!("path:{}", req.path()));
        let req = TestRequest::with_uri("/a/b").to_http_request();
        assert_eq!(by_path.extract(&req), Some(ClientKey::custom("path:/a/b")));
        let never = |_: &HttpRequest| None::<&'static str>;
        assert_eq!(never.extract(&req), None);
    }
}

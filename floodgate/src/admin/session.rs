//! The dashboard's sign-in: the cookies it sets, how a request is authorised (Bearer header
//! or cookie), and the anti-CSRF value of its forms.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::ServiceRequest;
use actix_web::http::{header, Method};
use actix_web::HttpRequest;
use subtle::ConstantTimeEq;

use super::Settings;

/// The cookie holding the token once signed in.
pub(crate) const SESSION_COOKIE: &str = "floodgate_admin";
/// The cookie holding the anti-CSRF value that forms echo.
pub(crate) const CSRF_COOKIE: &str = "floodgate_csrf";

/// How a request proved that it may use the admin service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Auth {
    /// `Authorization: Bearer <token>`: anything.
    Bearer,
    /// The dashboard's cookie: reading, and the dashboard's forms (anti-CSRF checked there).
    Cookie,
    /// Neither.
    None,
}

fn same(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// How `req` is authorised against `token`.
pub(crate) fn auth_of(token: &str, req: &ServiceRequest) -> Auth {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let v = value.as_bytes();
        let given = v
            .strip_prefix(b"Bearer ")
            .or_else(|| v.strip_prefix(b"bearer "));
        if given.is_some_and(|g| same(g, token.as_bytes())) {
            return Auth::Bearer;
        }
    }
    match req.cookie(SESSION_COOKIE) {
        Some(c) if same(c.value().as_bytes(), token.as_bytes()) => Auth::Cookie,
        _ => Auth::None,
    }
}

/// What `auth` lets `req` (to path `rel`, under the mount path) do: `true` to go on.
/// The sign-in page, its stylesheet and the sign-in form need nothing.
pub(crate) fn permits(auth: Auth, method: &Method, rel: &str) -> bool {
    let public = matches!(
        (method, rel),
        (&Method::GET, "" | "/" | "/dashboard.css") | (&Method::POST, "/login")
    );
    match auth {
        Auth::Bearer => true,
        Auth::Cookie => {
            public
                || method == Method::GET
                || method == Method::HEAD
                || (method == Method::POST && matches!(rel, "/unban" | "/logout"))
        }
        Auth::None => public,
    }
}

/// 128 unpredictable bits, hex: two SipHash outputs under fresh OS-seeded keys.
pub(crate) fn random_hex() -> String {
    let mut out = String::with_capacity(32);
    for i in 0..2u8 {
        let mut h = RandomState::new().build_hasher();
        h.write_u8(i);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// A cookie of the dashboard: `HttpOnly`, `SameSite=Strict`, scoped to the mount path,
/// `Secure` when the request came over HTTPS.
pub(crate) fn cookie(
    s: &Settings,
    req: &HttpRequest,
    name: &'static str,
    value: String,
) -> Cookie<'static> {
    let path = if s.path.is_empty() {
        "/".to_owned()
    } else {
        s.path.clone()
    };
    Cookie::build(name, value)
        .path(path)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(req.connection_info().scheme() == "https")
        .finish()
}

/// Whether a dashboard form's `csrf` field matches its cookie, and the request comes from
/// the same origin (when the browser says where it comes from).
pub(crate) fn form_is_genuine(req: &HttpRequest, csrf_field: &str) -> bool {
    let Some(cookie) = req.cookie(CSRF_COOKIE) else {
        return false;
    };
    if cookie.value().len() < 32 || !same(cookie.value().as_bytes(), csrf_field.as_bytes()) {
        return false;
    }
    match req.headers().get(header::ORIGIN).map(|o| o.to_str()) {
        None => true,
        Some(Ok(origin)) => {
            let info = req.connection_info();
            origin == format!("{}://{}", info.scheme(), info.host())
        }
        Some(Err(_)) => false,
    }
}

/// Text for HTML: `&`, `<`, `>`, `"` and `'` escaped, and control characters shown escaped,
/// so that a client-chosen key can neither add markup nor break out of an attribute.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            escape("<script>alert('x')</script>\" onmouseover=\"&\n"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot; onmouseover=&quot;&amp;\\n"
        );
    }

    #[test]
    fn cookies_read_and_post_only_the_dashboard_forms() {
        let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
        assert!(permits(Auth::Cookie, &get, "/api/bans"));
        assert!(permits(Auth::Cookie, &post, "/unban"));
        assert!(!permits(Auth::Cookie, &put, "/api/clients/1.2.3.4/ban"));
        assert!(!permits(Auth::Cookie, &delete, "/api/clients/1.2.3.4/ban"));
        assert!(!permits(Auth::Cookie, &post, "/api/lists/reload"));
        assert!(permits(Auth::None, &get, "/"));
        assert!(permits(Auth::None, &post, "/login"));
        assert!(!permits(Auth::None, &get, "/api/bans"));
        assert!(!permits(Auth::None, &post, "/unban"));
        assert!(permits(Auth::Bearer, &delete, "/api/clients/x/ban"));
        assert_ne!(random_hex(), random_hex());
        assert_eq!(random_hex().len(), 32);
    }
}

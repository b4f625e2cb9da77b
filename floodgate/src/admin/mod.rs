//! The operator's API: a service the app mounts beside its routes (cargo feature `admin`).
//!
//! [`Floodgate::admin`](crate::Floodgate::admin) returns an [`Admin`]; give it a token and
//! mount it with `App::service`. Every request under its path needs
//! `Authorization: Bearer <token>`; JSON answers give times as RFC 3339 UTC strings.
//!
//! | method and path (under the mount path) | does |
//! |---|---|
//! | `GET /api/bans?limit=N&cursor=C` | the bans in force, a page at a time |
//! | `GET /api/clients/{client}` | one client's status (ban, offences, windows) |
//! | `PUT /api/clients/{client}/ban` | bans: body `{"for": "1h"}` or `{"forever": true}` |
//! | `DELETE /api/clients/{client}/ban` | lifts a ban: `{"was_banned": bool}` |
//! | `GET /api/top?limit=N` | the clients refused or reported most lately (see [`GateKeeper::top_offenders`](crate::GateKeeper::top_offenders)) |
//! | `POST /api/lists/reload` | reloads the allow and deny lists whose files changed |
//! | `GET /api/health` | whether the store answers |
//! | `GET /` | the dashboard (HTML; sign in with the token) |
//!
//! `{client}` is an IP address, a network (`2001:db8::/64`, as listings show it), or a
//! custom key, percent-encoded.
//!
//! # Security
//!
//! - The token is compared in constant time; a token shorter than 16 bytes (or none) stops
//!   the app from starting, so the API is never open. Use a long random one (`openssl rand
//!   -hex 32`) from the environment or a secrets file, and serve the API over TLS or on a
//!   private interface: a Bearer token on plain HTTP is readable on the wire.
//! - [`allow`](Admin::allow) restricts the API to some addresses (403 for the others), seen
//!   as the [`Floodgate`](crate::Floodgate) sees clients (its trusted proxies included).
//! - floodgate never limits, bans or refuses these routes: an operator whose own address was
//!   banned (by a colleague, or by a hostile client's reports forged in its name) can still
//!   lift the ban. The routes are `#[bypass]` routes to the app-wide middleware, so no global
//!   rule counts them, whether or not the request is authorised.
//! - The dashboard signs in with the token in a form (never in a URL): it sets an
//!   `HttpOnly`, `SameSite=Strict` cookie scoped to the mount path (`Secure` over HTTPS),
//!   which authorises reading only; its one action, unban, is a form POST that must also
//!   carry the page's anti-CSRF value (a second cookie, echoed in the form) and come from the
//!   same origin. Every other change needs the Bearer header. Pages are served under a
//!   strict Content-Security-Policy (no script, no inline style, no external asset), and
//!   every client key is HTML-escaped: clients choose their keys.
//! - Every action (ban, blacklist, unban, reload) is logged at info with the operator's
//!   address; refused requests are logged at warn with theirs.

use std::fmt;
use std::sync::Arc;

use actix_web::dev::{AppService, HttpServiceFactory};
use actix_web::web;

use crate::gatekeeper::GateKeeper;
use crate::route::RouteRules;
use crate::targeting::IpList;

mod api;
mod auth;
mod dashboard;
#[cfg(feature = "metrics")]
mod metrics;
mod problem;
mod session;

/// The shortest token accepted, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;

/// The operator's API of one [`Floodgate`](crate::Floodgate): mount it with `App::service`.
///
/// # Examples
///
/// ```no_run
/// use actix_web::{App, HttpServer};
/// use floodgate::Floodgate;
///
/// # async fn run() -> std::io::Result<()> {
/// let floodgate = Floodgate::new();
/// let token = std::env::var("FLOODGATE_TOKEN").expect("FLOODGATE_TOKEN");
/// HttpServer::new(move || {
///     App::new()
///         .wrap(floodgate.clone())
///         .service(floodgate.admin("/_floodgate").token(token.clone()))
/// })
/// .bind(("127.0.0.1", 8080))?
/// .run()
/// .await
/// # }
/// ```
#[derive(Clone)]
pub struct Admin {
    path: String,
    settings: Arc<Settings>,
}

/// What the admin service's parts share.
pub(crate) struct Settings {
    /// The mount path, without a trailing slash.
    pub(crate) path: String,
    pub(crate) gatekeeper: GateKeeper,
    pub(crate) token: Option<String>,
    pub(crate) allow: Option<IpList>,
    /// The registry `GET /metrics` writes out.
    #[cfg(feature = "metrics")]
    pub(crate) metrics: metrics::Exposed,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        f.debug_struct("Admin")
            .field("path", &self.path)
            .field("token", &self.settings.token.as_ref().map(|_| "<set>"))
            .field("allow", &self.settings.allow)
            .finish()
    }
}

impl Admin {
    pub(crate) fn new(path: &str, gatekeeper: GateKeeper) -> Admin {
        let path = path.trim_end_matches('/').to_owned();
        Admin {
            path: path.clone(),
            settings: Arc::new(Settings {
                path,
                gatekeeper,
                token: None,
                allow: None,
                #[cfg(feature = "metrics")]
                metrics: None,
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        let mut s = Settings {
            path: self.settings.path.clone(),
            gatekeeper: self.settings.gatekeeper.clone(),
            token: self.settings.token.clone(),
            allow: self.settings.allow.clone(),
            #[cfg(feature = "metrics")]
            metrics: self.settings.metrics.clone(),
        };
        f(&mut s);
        self.settings = Arc::new(s);
        self
    }

    /// The Bearer token every request must carry: at least [`MIN_TOKEN_LEN`] bytes, or the
    /// app does not start.
    pub fn token(self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.edit(|s| s.token = Some(token))
    }

    /// Serves only clients on `list` (403 problem+json for the others, before the token is
    /// looked at).
    pub fn allow(self, list: IpList) -> Self {
        self.edit(|s| s.allow = Some(list))
    }

    /// Serves `registry` (the one given to [`Floodgate::metrics`](crate::Floodgate::metrics))
    /// as Prometheus text at `GET /metrics`, behind the same token.
    #[cfg(feature = "metrics")]
    pub fn metrics(self, registry: Arc<crate::metrics::Registry>) -> Self {
        self.edit(|s| s.metrics = Some(registry))
    }
}

impl HttpServiceFactory for Admin {
    fn register(self, config: &mut AppService) {
        let settings = web::Data::from(self.settings);
        let name = format!("floodgate-admin {}", self.path);
        let scope = web::scope(&self.path)
            .app_data(settings.clone())
            .configure(api::configure)
            .configure(dashboard::configure);
        #[cfg(feature = "metrics")]
        let scope = scope.configure(metrics::configure);
        let scope = scope
            // Last: a routed 404 for the rest, so that an operator's mistyped path is never
            // reported as a probe (floodgate reports only unrouted 404s).
            .route("/{rest:.*}", web::to(api::not_found))
            .wrap(auth::AdminAuth::new(settings.into_inner()))
            // Outermost, so that the app-wide middleware learns of the bypass during routing,
            // before the token is checked: unauthorised requests are not counted either.
            .wrap(RouteRules::new(name).bypass());
        scope.register(config);
    }
}

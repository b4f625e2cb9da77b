//! Rate limiting and abuse banning for [actix-web](https://docs.rs/actix-web).
//!
//! floodgate sits in front of your handlers and decides, per client, whether a request is
//! served (and with which `RateLimit` header fields), limited (429) or refused because the
//! client is banned (403). Two families of limits can be combined on one app:
//!
//! - **The gatekeeper family** (as flask-gatekeeper): global sliding-log [`Rule`]s, per-route
//!   rules with [`#[specific]`](specific), [`#[bypass]`](bypass), and bans earned by reported
//!   offences ([`GateKeeper::report`] with a [`BanRule`]).
//! - **The floodgate family** (as FlaskFloodgate): per-route [`Policy`]s with
//!   [`#[rate_limited]`](rate_limited): fixed windows, blocks, block limits, bans or
//!   blacklists for repeat offenders, accumulation, cooldown, grace period and adaptive
//!   punishment.
//!
//! State lives in a [`Store`]: in memory by default ([`MemoryStore`]: sharded, bounded,
//! swept), or in a database.
//!
//! # Quick start
//!
//! ```no_run
//! use std::time::Duration;
//! use actix_web::{get, post, App, HttpRequest, HttpResponse, HttpServer};
//! use floodgate::{bypass, rate_limited, specific, BanRule, Floodgate, GateKeeper, Rule};
//!
//! #[post("/login")]
//! async fn login(req: HttpRequest, gk: GateKeeper) -> HttpResponse {
//!     gk.report(&req).await; // a failed login: one offence
//!     HttpResponse::Unauthorized().finish()
//! }
//!
//! #[specific(rate_limit_rules = [(1, "2s")])]
//! #[get("/search")]
//! async fn search() -> &'static str { "results" }
//!
//! #[rate_limited(amount = 20, time_window = "1m", block_limit = 5, block_exceed_duration = "forever")]
//! #[get("/export")]
//! async fn export() -> &'static str { "data" }
//!
//! #[bypass]
//! #[get("/health")]
//! async fn health() -> &'static str { "ok" }
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let floodgate = Floodgate::new()
//!         .ban_rule(BanRule::new(3, Duration::from_secs(10), Duration::from_secs(600)))
//!         .rate_limit_rules([Rule::new(20, Duration::from_secs(1))]);
//!     HttpServer::new(move || {
//!         App::new()
//!             .wrap(floodgate.clone())
//!             .service(login)
//!             .service(search)
//!             .service(export)
//!             .service(health)
//!     })
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await
//! }
//! ```
//!
//! # Refusals are errors that carry their response
//!
//! A refused request is answered before routing finishes, so its handler never runs. The
//! middleware returns the refusal as an [`actix_web::Error`][actix-error] holding the complete
//! response (status, `Retry-After`, RateLimit fields, problem+json body). Clients see a normal
//! response. Two consequences: middleware registered *outside* `Floodgate` (a later
//! `.wrap()`) that only decorates successful responses, such as `Logger`, does not see
//! refusals (floodgate logs them itself: debug per refusal, info for blocks, warn for bans);
//! and in `actix_web::test`, call the service with `app.call(req).await` and turn an `Err`
//! into its response with `ResponseError::error_response`, since `test::call_service`
//! panics on errors.
//!
//! [actix-error]: https://docs.rs/actix-web/4/actix_web/error/struct.Error.html
//!
//! # Features
//!
//! - `macros` (default): the attribute macros [`#[rate_limited]`](rate_limited),
//!   [`#[specific]`](specific) and [`#[bypass]`](bypass). Without it, attach rules with
//!   [`RouteRules`].
//! - `sqlite` (default): [`SqliteStore`], state in an SQLite file (SQLite is bundled, so no
//!   system library is needed). The table is `floodgate_clients` unless you name another.
//! - `redis`: [`RedisStore`], state in one Redis shared by a fleet of servers (one round trip
//!   per decision); [`FailoverStore`] adds a backup store for when it is down.
//! - `geoip`: [`GeoDb::maxmind_file`], countries from MaxMind-format databases (GeoIP2,
//!   GeoLite2, DB-IP). Geofeeds ([`GeoDb::geofeed_file`]) need no feature.
//! - `admin`: `Floodgate::admin`, the operator's API and dashboard (the `admin` module):
//!   bans in force, client status, ban and unban, top offenders, over HTTP.
//!
//! # Logging
//!
//! floodgate logs through the [`log`](https://docs.rs/log) crate: debug for each refusal,
//! info for blocks, warn for bans, blacklists and store failures (client-chosen strings are
//! escaped). `log` only hands records to a logger that the application installs: until it
//! does, nothing is printed, whatever `RUST_LOG` says. With
//! [env_logger](https://docs.rs/env_logger), call `env_logger::init()` at the top of `main`,
//! then run with `RUST_LOG=info` (or `RUST_LOG=floodgate=debug` to see every refusal).
//!
//! # Time
//!
//! Every time-dependent decision reads the injected [`Clock`]; tests use [`FakeClock`] and
//! never sleep.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// docs.rs (`--cfg docsrs`, see Cargo.toml): mark each item with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
mod builder;
mod client;
mod clock;
mod count_when;
mod error;
mod gatekeeper;
pub mod metrics;
mod middleware;
mod not_found;
mod outcome;
mod pipeline;
mod plans;
mod policy;
mod reservation;
mod response;
mod rotation;
mod route;
mod route_refusals;
mod route_spec;
mod rules;
mod settings;
mod shadow;
mod shadow_check;
mod state;
mod state_codec;
mod status;
pub mod store;
mod stored_name;
pub mod targeting;
mod top;
mod validate;
mod worker_plans;

#[cfg(feature = "admin")]
pub use admin::Admin;
pub use builder::Floodgate;
pub use client::{Client, ClientKey, ProxyHeader};
pub use clock::{Clock, FakeClock, SystemClock, Timestamp};
pub use count_when::CountWhen;
pub use error::{ConfigError, DecodeError, StoreError};
pub use gatekeeper::GateKeeper;
pub use middleware::FloodgateMiddleware;
pub use outcome::FloodgateFuture;
pub use policy::{Adaptive, Grace, Policy, Punishment, RequestCheck};
pub use response::{
    Refusal, RefusalKind, PROBLEM_ABNORMAL_USAGE, PROBLEM_QUOTA_EXCEEDED, PROBLEM_REDUCED_CAPACITY,
    RATELIMIT, RATELIMIT_POLICY,
};
pub use rotation::Ipv6Rotation;
pub use route::{RouteRules, RouteRulesMiddleware};
pub use rules::{parse_duration, BanRule, Rule};
pub use state::{
    BanReason, ClientState, Decision, LimitInfo, LimitReason, Plan, Quota, ReportOutcome, ScopeId,
};
pub use status::{BanStatus, ClientStatus, WindowStatus};
pub use store::bans::{BanCursor, BanEntry, BanPage};
pub use store::failover::FailoverStore;
pub use store::memory::{MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "redis")]
pub use store::redis::{RedisStore, RedisStoreBuilder};
#[cfg(feature = "sqlite")]
pub use store::sqlite::{BatchedUsage, Durability, SqliteStore, SqliteStoreBuilder};
pub use store::{Store, StoreFailure, StoreFuture};
pub use targeting::{
    Country, DenyReason, GeoBlock, GeoDb, HeaderKey, IpList, KeyExtractor, ListError, MissingKey,
    ProbeAction, ProbeBan, Target,
};
pub use top::Offender;

#[cfg(feature = "macros")]
pub use floodgate_macros::{bypass, rate_limited, specific};

#[doc(hidden)]
pub mod __private {
    pub use crate::count_when::CountWhen;
    pub use crate::policy::PolicyOverrides;
    pub use crate::route_spec::{PolicySpec, RouteCost, RouteSpec};
    pub use crate::targeting::keys::{into_key, RouteKey};
    pub use actix_web::dev::ServiceResponse;
    pub use actix_web::HttpRequest;
    pub use std::borrow::Cow;
    pub use std::time::Duration;
}

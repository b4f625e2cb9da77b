//! What every example shares: logging, the port to listen on, and a `/status` route that
//! shows what floodgate holds on the caller.

use actix_web::{get, HttpRequest, HttpResponse, Responder};
use floodgate::GateKeeper;

/// Logs at info by default (`RUST_LOG` overrides): floodgate logs blocks at info and bans at
/// warn.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}

/// The port from the `PORT` environment variable, or `default`.
pub fn port(default: u16) -> u16 {
    std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(default)
}

/// The caller's windows, blocks and ban, as floodgate's `GateKeeper` reports them.
#[get("/status")]
// The route macro nests this function, `pub` included, inside the service it generates.
#[allow(unreachable_pub)]
pub async fn status(req: HttpRequest, gk: GateKeeper) -> impl Responder {
    match gk.status(gk.client_key(&req)).await {
        Ok(status) => HttpResponse::Ok().body(format!("{status:#?}\n")),
        Err(err) => HttpResponse::ServiceUnavailable().body(err.to_string()),
    }
}

/// The Rust blocks of README.md, compiled (and run, unless `no_run`) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The Rust blocks of docs/migrating.md, compiled (and run, unless `no_run`) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/migrating.md")]
pub struct MigratingDoctests;

//! The hello-world servers of the HTTP benchmark, one per configuration.
//!
//! Each serves `GET /` ("Hello, world!") on 127.0.0.1 with one worker, and `GET /shutdown`,
//! which stops the server gracefully so that the process exits by itself (callgrind writes
//! its profile only on a clean exit). The port comes from `BENCH_PORT` (default 8080).
//!
//! The store configurations read where their store lives from the environment:
//! `BENCH_SQLITE_DIR` (a directory for the database file; default a fresh directory under
//! the system temp dir) and `BENCH_REDIS_URL` (default `redis://127.0.0.1:6379/`).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_governor::{Governor, GovernorConfigBuilder, KeyExtractor, SimpleKeyExtractionError};
use actix_web::dev::{ServerHandle, ServiceRequest};
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::IP_HEADER;

/// A server configuration under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    /// actix-web with no middleware.
    Bare,
    /// Floodgate, memory store, two global rules that nothing reaches, a ban rule, RateLimit
    /// headers on.
    Floodgate,
    /// [`Config::Floodgate`] with the RateLimit header fields off.
    FloodgateNoHeaders,
    /// The same with rules so low that nearly every request is refused (429).
    FloodgateRefusing,
    /// [`Config::Floodgate`] with its Prometheus metrics registered (`Floodgate::metrics`).
    FloodgateMetrics,
    /// [`Config::Floodgate`] on a [`floodgate::SqliteStore`] (default settings) in a fresh
    /// file: `floodgate.db` in `BENCH_SQLITE_DIR`.
    FloodgateSqlite,
    /// [`Config::FloodgateSqlite`] with [`floodgate::Durability::Batched`] (decided in memory,
    /// written behind).
    FloodgateSqliteBatched,
    /// [`Config::Floodgate`] on a [`floodgate::RedisStore`] (prefix `bench`) at
    /// `BENCH_REDIS_URL`.
    FloodgateRedis,
    /// actix-governor keyed on the same header, a per-IP quota equivalent to
    /// [`Config::Floodgate`]'s first rule (a burst of 100, one more every 10 ms), its
    /// `x-ratelimit-*` headers on.
    Governor,
    /// [`Config::Governor`] without its `x-ratelimit-*` headers.
    GovernorNoHeaders,
    /// actix-governor with one request per client per minute (nearly every request refused).
    GovernorRefusing,
}

/// actix-governor's key: the address in [`IP_HEADER`], else the peer address (the same
/// fallback floodgate's `ip_header` uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderIpKeyExtractor;

impl KeyExtractor for HeaderIpKeyExtractor {
    type Key = IpAddr;
    type KeyExtractionError = SimpleKeyExtractionError<&'static str>;

    fn extract(&self, req: &ServiceRequest) -> Result<Self::Key, Self::KeyExtractionError> {
        req.headers()
            .get(IP_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse().ok())
            .or_else(|| req.peer_addr().map(|a| a.ip()))
            .ok_or_else(|| SimpleKeyExtractionError::new("no client address"))
    }
}

async fn hello() -> &'static str {
    "Hello, world!"
}

type SharedHandle = Arc<Mutex<Option<ServerHandle>>>;

/// How long a stopped server waits before it exits (see `serve!`): ample for the worker
/// thread's teardown, even under valgrind.
const TEARDOWN: Duration = Duration::from_secs(2);

async fn shutdown(handle: web::Data<SharedHandle>) -> HttpResponse {
    let handle = handle.lock().ok().and_then(|h| h.clone());
    if let Some(handle) = handle {
        actix_web::rt::spawn(async move { handle.stop(true).await });
    }
    HttpResponse::Ok().body("bye")
}

/// Builds the app of one configuration: the routes, wrapped by `$wrap` when given.
macro_rules! serve {
    ($port:expr, $handle:expr, $($wrap:expr)?) => {{
        let handle: SharedHandle = $handle;
        let data = web::Data::new(handle.clone());
        let server = HttpServer::new(move || {
            App::new()
                $(.wrap($wrap))?
                .app_data(data.clone())
                .route("/", web::get().to(hello))
                .route("/shutdown", web::get().to(shutdown))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(("127.0.0.1", $port))?
        .run();
        if let Ok(mut slot) = handle.lock() {
            *slot = Some(server.handle());
        }
        let served = server.await;
        // The worker thread drops its app (and the limiter's state) after the server stopped;
        // a process that exited first would leave that work out of one profile and not of
        // another. Waiting makes the teardown part of every run, so that it cancels out.
        std::thread::sleep(TEARDOWN);
        served
    }};
}

/// The directory for the SQLite file: `BENCH_SQLITE_DIR`, else a new directory under the
/// system temp dir (left behind, so that the file can be looked at).
fn sqlite_dir() -> std::io::Result<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("BENCH_SQLITE_DIR") {
        return Ok(dir.into());
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("floodgate-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

/// Runs the server of `config` until `GET /shutdown`.
pub fn run(config: Config) -> std::io::Result<()> {
    let port: u16 = std::env::var("BENCH_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let handle = SharedHandle::default();
    actix_web::rt::System::new().block_on(async move {
        match config {
            Config::Bare => serve!(port, handle,),
            Config::Floodgate | Config::FloodgateRefusing => {
                let floodgate = crate::floodgate(config == Config::FloodgateRefusing);
                serve!(port, handle, floodgate.clone())
            }
            Config::FloodgateNoHeaders => {
                let floodgate = crate::floodgate(false).ratelimit_headers(false);
                serve!(port, handle, floodgate.clone())
            }
            Config::FloodgateMetrics => {
                let mut registry = floodgate::metrics::Registry::default();
                let floodgate = crate::floodgate(false).metrics(&mut registry);
                serve!(port, handle, floodgate.clone())
            }
            Config::FloodgateSqlite | Config::FloodgateSqliteBatched => {
                let durability = if config == Config::FloodgateSqliteBatched {
                    floodgate::Durability::Batched
                } else {
                    floodgate::Durability::Normal
                };
                let store = floodgate::SqliteStore::builder(sqlite_dir()?.join("floodgate.db"))
                    .durability(durability)
                    .open()
                    .map_err(std::io::Error::other)?;
                let floodgate = crate::floodgate(false).store(store);
                serve!(port, handle, floodgate.clone())
            }
            Config::FloodgateRedis => {
                let url = std::env::var("BENCH_REDIS_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
                let store = floodgate::RedisStore::builder(url)
                    .prefix("bench")
                    .connect()
                    .await
                    .map_err(std::io::Error::other)?;
                let floodgate = crate::floodgate(false).store(store);
                serve!(port, handle, floodgate.clone())
            }
            Config::Governor | Config::GovernorRefusing => {
                let (period, burst) = if config == Config::Governor {
                    (Duration::from_millis(10), 100)
                } else {
                    (Duration::from_secs(60), 1)
                };
                let governor = GovernorConfigBuilder::default()
                    .period(period)
                    .burst_size(burst)
                    .key_extractor(HeaderIpKeyExtractor)
                    .use_headers()
                    .finish()
                    .ok_or_else(|| std::io::Error::other("invalid governor quota"))?;
                serve!(port, handle, Governor::new(&governor))
            }
            Config::GovernorNoHeaders => {
                let governor = GovernorConfigBuilder::default()
                    .period(Duration::from_millis(10))
                    .burst_size(100)
                    .key_extractor(HeaderIpKeyExtractor)
                    .finish()
                    .ok_or_else(|| std::io::Error::other("invalid governor quota"))?;
                serve!(port, handle, Governor::new(&governor))
            }
        }
    })
}

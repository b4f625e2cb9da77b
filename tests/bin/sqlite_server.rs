//! A tiny server over a SQLite store, for the process tests (restart, crash, locks,
//! exactness across workers) and the throughput benchmark. Test-only: its time comes from
//! `FLOODGATE_FAKE_NOW_MS` (a `FakeClock`), which `/admin/advance/{ms}` moves.
//!
//! Environment: `FLOODGATE_DB` (database file; `memory` for the memory store),
//! `FLOODGATE_FAKE_NOW_MS`, `PORT` (0: any; the bound port is printed as
//! `listening on 127.0.0.1:PORT`), `FLOODGATE_BUSY_MS` (busy timeout), `FLOODGATE_DURABILITY`
//! (`full`, `normal` or `batched`), `FLOODGATE_GLOBAL` (global rules such as `20/1s,100/10s`),
//! `FLOODGATE_WORKERS` (default 2), `FLOODGATE_FLUSH_MS` (flush interval of
//! `batched`).

use std::io::Write;
use std::time::Duration;

use actix_web::{get, post, web, App, HttpRequest, HttpResponse, HttpServer};
use floodgate::{
    bypass, rate_limited, specific, BanRule, Durability, FakeClock, Floodgate, GateKeeper,
    MemoryStore, ReportOutcome, Rule, SqliteStore, StoreFailure, Timestamp,
};

#[get("/ping")]
async fn ping() -> &'static str {
    "ok"
}

#[specific(rate_limit_rules = [(50, "1h")], standalone)]
#[get("/exact")]
async fn exact() -> &'static str {
    "ok"
}

#[rate_limited(
    amount = 2,
    time_window = "1m",
    block_limit = 1,
    block_exceed_duration = "forever",
    max_window_duration = "forever"
)]
#[get("/limited")]
async fn limited() -> &'static str {
    "ok"
}

#[bypass]
#[post("/report")]
async fn report(req: HttpRequest, gk: GateKeeper) -> HttpResponse {
    match gk.report(&req).await {
        Some(ReportOutcome::Banned { .. }) => HttpResponse::Ok().body("banned"),
        Some(ReportOutcome::Recorded { offences }) => {
            HttpResponse::Ok().body(format!("recorded {offences}"))
        }
        None => HttpResponse::ServiceUnavailable().body("store failed"),
    }
}

/// Bans `ip` for `secs` seconds; 0 blacklists.
#[bypass]
#[post("/admin/ban/{ip}/{secs}")]
async fn ban(gk: GateKeeper, path: web::Path<(std::net::IpAddr, u64)>) -> HttpResponse {
    let (ip, secs) = path.into_inner();
    let result = if secs == 0 {
        gk.blacklist(ip).await
    } else {
        gk.ban(ip, Duration::from_secs(secs)).await
    };
    match result {
        Ok(()) => HttpResponse::Ok().body("ok"),
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}

#[bypass]
#[post("/admin/advance/{ms}")]
async fn advance(clock: web::Data<FakeClock>, ms: web::Path<u64>) -> String {
    clock.advance(Duration::from_millis(ms.into_inner()));
    format!("{}", clock.now_ms())
}

trait NowMs {
    fn now_ms(&self) -> u64;
}

impl NowMs for FakeClock {
    fn now_ms(&self) -> u64 {
        floodgate::Clock::now(self).as_millis()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let now: u64 = env("FLOODGATE_FAKE_NOW_MS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_700_000_000_000);
    let clock = FakeClock::starting_at(Timestamp::from_millis(now));
    let db = env("FLOODGATE_DB").unwrap_or_else(|| "floodgate-test.db".into());
    let mut floodgate = Floodgate::new()
        .ip_header("x-ip")
        .clock(clock.clone())
        .ban_rule(BanRule::new(
            3,
            Duration::from_secs(10),
            Duration::from_secs(600),
        ))
        .store_failure(StoreFailure::Closed);
    if db != "memory" {
        let durability = match env("FLOODGATE_DURABILITY").as_deref() {
            Some("full") => Durability::Full,
            Some("batched") => Durability::Batched,
            _ => Durability::Normal,
        };
        let busy = env("FLOODGATE_BUSY_MS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(5_000);
        let mut builder = SqliteStore::builder(&db)
            .busy_timeout(Duration::from_millis(busy))
            .durability(durability);
        if let Some(ms) = env("FLOODGATE_FLUSH_MS").and_then(|v| v.parse().ok()) {
            builder = builder.flush_interval(Duration::from_millis(ms));
        }
        let store = builder.open().map_err(std::io::Error::other)?;
        floodgate = floodgate.store(store);
    } else {
        floodgate = floodgate.store(MemoryStore::new());
    }
    if let Some(rules) = env("FLOODGATE_GLOBAL") {
        let rules: Vec<Rule> = rules
            .split(',')
            .map(|r| r.parse().map_err(std::io::Error::other))
            .collect::<Result<_, _>>()?;
        floodgate = floodgate.rate_limit_rules(rules);
    }
    let workers: usize = env("FLOODGATE_WORKERS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let port: u16 = env("PORT").and_then(|p| p.parse().ok()).unwrap_or(0);

    let clock_data = web::Data::new(clock);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(clock_data.clone())
            .wrap(floodgate.clone())
            .service(ping)
            .service(exact)
            .service(limited)
            .service(report)
            .service(ban)
            .service(advance)
    })
    .workers(workers)
    .bind(("127.0.0.1", port))?;
    let bound = server.addrs()[0];
    let mut out = std::io::stdout();
    writeln!(out, "listening on {bound}")?;
    out.flush()?;
    server.run().await
}

//! floodgate for a fleet: limits and bans shared through Redis, with a local ban cache and a
//! fail-over to memory when Redis is down.
//!
//! Run a Redis, then one or more copies of this server on different ports:
//!
//! ```text
//! redis-server --port 6379 --save '' &
//! PORT=8082 cargo run -p floodgate-examples --bin floodgate-redis &
//! PORT=8083 cargo run -p floodgate-examples --bin floodgate-redis &
//! for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code} ' localhost:$((8082 + i % 2))/ping; done
//! ```
//!
//! The 12 requests, spread over both servers, get 10 × 200 and 2 × 429: one limit for the
//! fleet. `POST /login` with a wrong password reports an offence; 3 within 10 s ban the
//! client on every server. `REDIS_URL` (default `redis://127.0.0.1:6379/`) and `PORT`
//! (default 8082) configure it; it listens on 127.0.0.1 only.

use std::time::Duration;

use actix_web::{get, post, web, App, HttpRequest, HttpResponse, HttpServer};
use floodgate::{
    BanRule, FailoverStore, Floodgate, GateKeeper, MemoryStore, RedisStore, Rule, StoreFailure,
};

#[get("/ping")]
async fn ping() -> &'static str {
    "pong"
}

#[post("/login")]
async fn login(req: HttpRequest, gk: GateKeeper, body: web::Bytes) -> HttpResponse {
    if body.as_ref() == b"password" {
        return HttpResponse::Ok().body("token");
    }
    gk.report(&req).await;
    HttpResponse::Unauthorized().body("bad password")
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    floodgate_examples::init_logging();
    let port = floodgate_examples::port(8082);
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());

    // A clear error at start when Redis is unreachable or refuses the credentials.
    let connecting = RedisStore::builder(url.as_str())
        .prefix("floodgate-example")
        .ban_cache(Duration::from_secs(1))
        .connect();
    let redis = match connecting.await {
        Ok(redis) => redis,
        Err(err) => {
            log::error!("{err}");
            std::process::exit(1);
        }
    };
    // Should Redis fail later, decide in memory and retry Redis with backoff.
    let store = FailoverStore::new(redis)
        .backup(MemoryStore::new())
        .retry(Duration::from_secs(1), Duration::from_secs(30));

    let floodgate = Floodgate::new()
        .store(store)
        .store_failure(StoreFailure::Open)
        .ban_rule(BanRule::new(
            3,
            Duration::from_secs(10),
            Duration::from_secs(600),
        ))
        .rate_limit_rules([Rule::new(10, Duration::from_secs(60))]);

    log::info!("floodgate-redis on http://127.0.0.1:{port}, state in {url}");
    HttpServer::new(move || {
        App::new()
            .wrap(floodgate.clone())
            .service(ping)
            .service(login)
            .service(floodgate_examples::status)
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await
}

//! FlaskFloodgate's "Using Sqlite3" example, on floodgate: client state kept in `ip-data.db`,
//! table `IP_Data`, so limits, blocks, bans and blacklists survive a restart.
//!
//! Run: `cargo run -p floodgate-examples --bin floodgate-sqlite`, then
//! `curl -i http://127.0.0.1:8081/rate-limited` (20 per minute; a request with the header
//! `key: value` is not counted). Listens on 127.0.0.1:8081 (set `PORT` to change).

use actix_web::{get, App, HttpRequest, HttpServer};
use floodgate::{rate_limited, Floodgate, SqliteStore};

/// Requests that carry `key: value` are served without being counted.
fn check_data(req: &HttpRequest) -> bool {
    req.headers()
        .get("key")
        .is_some_and(|v| v.as_bytes() == b"value")
}

#[rate_limited(
    amount = 20,
    time_window = "1m",
    block_limit = 5,
    block_exceed_duration = "forever",
    relative_block = false,
    block_exceed_reset = true,
    max_window_duration = "forever",
    accumulate_requests = true,
    request_data_check = check_data
)]
#[get("/rate-limited")]
async fn rate_limited_route() -> &'static str {
    "Hello!"
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    floodgate_examples::init_logging();
    let port = floodgate_examples::port(8081);

    // A bad path or table name, or a file that is not a floodgate database, stops here with
    // a message naming the problem. Every decision is made in the file, so several processes
    // may share it; a server that owns its file can add
    // `.durability(floodgate::Durability::Batched)` to decide in memory and write behind.
    let store = SqliteStore::builder("ip-data.db")
        .table("IP_Data")
        .open()
        .map_err(std::io::Error::other)?;
    let floodgate = Floodgate::new().store(store);

    log::info!("floodgate + SQLite on http://127.0.0.1:{port}");
    HttpServer::new(move || {
        App::new()
            .wrap(floodgate.clone())
            .service(rate_limited_route)
    })
    .workers(2)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}

//! FlaskFloodgate's README usage ("Using Memory"), on floodgate: one route limited by a
//! policy of the floodgate family, with state in memory.
//!
//! Run: `cargo run -p floodgate-examples --bin floodgate-memory` (127.0.0.1:8080, or `PORT`),
//! then `for i in $(seq 25); do curl -s -o /dev/null -w '%{http_code} ' localhost:8080/rate-limited; done`:
//! 20 × 200, then 429 until the block ends; after 5 blocks, 403 for 7 days.

use actix_web::{get, App, HttpServer};
use floodgate::{rate_limited, Floodgate};

// No need to specify all the parameters: what is left out comes from the app's default policy.
#[rate_limited(
    amount = 20,
    time_window = "1m",
    block_limit = 5,
    block_exceed_duration = "7d",
    relative_block = false,
    block_exceed_reset = true,
    max_window_duration = "30d",
    accumulate_requests = true
)]
#[get("/rate-limited")]
async fn rate_limited_route() -> &'static str {
    "Hello!"
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    // Decisions at debug, blocks at info, bans and blacklists at warn.
    floodgate_examples::init_logging();
    let port = floodgate_examples::port(8080);
    let floodgate = Floodgate::new();
    log::info!("FlaskFloodgate memory example on http://127.0.0.1:{port}/rate-limited");
    HttpServer::new(move || {
        App::new()
            .wrap(floodgate.clone())
            .service(rate_limited_route)
            .service(floodgate_examples::status)
    })
    .workers(2)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}

//! The flask-gatekeeper demo, on floodgate: global rules, a login route that reports failed
//! passwords (3 reports in 10 s ban for 10 minutes), a route with an extra rule, a standalone
//! route and a bypassed one.
//!
//! Run: `cargo run -p floodgate-examples --bin gatekeeper-demo`, then try the routes with curl
//! (see README.md). Listens on 127.0.0.1:8080 (set `PORT` to change).

use std::time::Duration;

use actix_web::{get, http::Method, post, web, App, HttpRequest, HttpResponse, HttpServer};
use floodgate::{bypass, specific, BanRule, Floodgate, GateKeeper, Rule};

#[get("/ping")] // rate limited by the global rules
async fn ping() -> &'static str {
    "ok"
}

#[post("/login")] // also rate limited by the global rules
async fn login(req: HttpRequest, gk: GateKeeper, body: web::Bytes) -> HttpResponse {
    if body.as_ref() == b"password" {
        return HttpResponse::Ok().body("token");
    }
    // One offence for this client; after 3 within 10 s it is banned for 600 s.
    gk.report(&req).await;
    HttpResponse::Unauthorized().body("bad password")
}

#[specific(rate_limit_rules = [(1, "2s")])] // on top of the global rules
#[get("/global_plus_specific")]
async fn global_plus_specific() -> &'static str {
    "ok"
}

#[specific(rate_limit_rules = [(10, "1h")], standalone)] // only this rule
#[get("/standalone")]
async fn standalone() -> &'static str {
    "ok"
}

#[bypass] // nothing applies
#[get("/bypass")]
async fn bypassed() -> &'static str {
    "ok"
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    floodgate_examples::init_logging();
    let port = floodgate_examples::port(8080);

    let floodgate = Floodgate::new()
        .ip_header("x-my-ip") // the client IP, as set by your reverse proxy
        .ban_rule(BanRule::new(
            3,
            Duration::from_secs(10),
            Duration::from_secs(600),
        ))
        .rate_limit_rules([
            Rule::new(20, Duration::from_secs(1)),
            Rule::new(100, Duration::from_secs(10)),
        ])
        .excluded_methods([Method::HEAD]);

    log::info!("gatekeeper demo on http://127.0.0.1:{port}");
    HttpServer::new(move || {
        App::new()
            .wrap(floodgate.clone())
            .service(ping)
            .service(login)
            .service(global_plus_specific)
            .service(standalone)
            .service(bypassed)
            .service(floodgate_examples::status)
    })
    .workers(2)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}

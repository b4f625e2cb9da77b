//! Request targeting on floodgate: a deny list, a country rule and a probe ban.
//!
//! - Clients on the deny list get 403 (in code here; set `DENY_LIST` to a file of addresses
//!   and CIDR ranges, re-read every 30 s when it changes).
//! - Countries come from a small RFC 8805 geofeed (documentation prefixes): `POST /login`
//!   from outside the EU is limited to 3 per minute.
//! - Requests for scanner paths (`/.env`, `/wp-login.php`, ...) that are not routes of the
//!   app ban the client for an hour.
//!
//! Run: `cargo run -p floodgate-examples --bin floodgate-targeting`. Listens on
//! 127.0.0.1:8083 (set `PORT` to change). Then, for example:
//!
//! ```sh
//! curl -i -H 'x-my-ip: 198.51.100.66' localhost:8083/               # 403: deny list
//! curl -i -H 'x-my-ip: 203.0.113.5' -X POST localhost:8083/login    # US: the 4th in a minute is 429
//! curl -i -H 'x-my-ip: 192.0.2.5' -X POST localhost:8083/login      # FR: not limited
//! curl -i -H 'x-my-ip: 192.0.2.77' localhost:8083/.env              # 403, and banned for an hour
//! curl -i -H 'x-my-ip: 192.0.2.77' localhost:8083/                  # 403 while banned
//! ```

use std::time::Duration;

use actix_web::http::Method;
use actix_web::{get, post, App, HttpServer};
use floodgate::{BanRule, Country, Floodgate, GeoDb, IpList, ProbeBan, Rule, Target};

#[get("/")]
async fn index() -> &'static str {
    "hello\n"
}

#[post("/login")]
async fn login() -> &'static str {
    "welcome\n"
}

/// Which country each documentation prefix stands for in this demo.
const GEOFEED: &str = "\
192.0.2.0/24,FR,FR-75,Paris,
198.51.100.0/24,DE,DE-BE,Berlin,
203.0.113.0/24,US,US-CA,San Francisco,
";

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    floodgate_examples::init_logging();
    let port = floodgate_examples::port(8083);
    let invalid = |e: floodgate::ListError| std::io::Error::new(std::io::ErrorKind::InvalidData, e);

    let mut deny = IpList::new("demo-deny")
        .entries(["198.51.100.64/26", "2001:db8:bad::/48"])
        .map_err(invalid)?;
    if let Ok(path) = std::env::var("DENY_LIST") {
        deny = deny
            .file(&path)
            .map_err(invalid)?
            .reload_every(Duration::from_secs(30));
    }
    let geo = GeoDb::geofeed(GEOFEED).map_err(invalid)?;

    let floodgate = Floodgate::new()
        .ip_header("x-my-ip") // the client IP, as set by your reverse proxy
        .ban_rule(BanRule::new(
            3,
            Duration::from_secs(60),
            Duration::from_secs(600),
        ))
        .deny_list(deny)
        .geo_database(geo)
        .target(
            Target::new("login-outside-eu")
                .method(Method::POST)
                .path("/login")
                .outside(Country::eu())
                .limit([Rule::new(3, Duration::from_secs(60))]),
        )
        .probe_ban(ProbeBan::common().ban_for(Duration::from_secs(3600)));

    log::info!("targeting demo on http://127.0.0.1:{port}");
    HttpServer::new(move || {
        App::new()
            .wrap(floodgate.clone())
            .service(index)
            .service(login)
    })
    .workers(2)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}

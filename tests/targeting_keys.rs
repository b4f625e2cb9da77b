//! Custom client keys (request targeting) over real HTTP: limits per API key or user id
//! instead of per IP, app-wide and per route, and the outcomes of a missing key.

mod targeting_common;

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{get, web, App, HttpRequest, HttpResponse};
use floodgate::{
    rate_limited, specific, FakeClock, Floodgate, HeaderKey, MissingKey, RouteRules, Rule,
};
use targeting_common::send;

const IP: &str = "198.51.100.7";

async fn get_with(srv: &actix_test::TestServer, path: &str, key: Option<&str>) -> u16 {
    match key {
        Some(k) => send(srv, "GET", path, IP, &[("x-api-key", k)]).await,
        None => send(srv, "GET", path, IP, &[]).await,
    }
}

#[get("/ping")]
async fn ping() -> &'static str {
    "ok"
}

fn app_wide(clock: &FakeClock, missing: MissingKey) -> actix_test::TestServer {
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header("x-client")
        .rate_limit_rules([Rule::new(2, Duration::from_secs(60))])
        .key(HeaderKey::new("x-api-key"))
        .missing_key(missing);
    actix_test::start_with(actix_test::config().workers(2), move || {
        App::new().wrap(fg.clone()).service(ping)
    })
}

#[actix_web::test]
async fn two_clients_behind_one_ip_with_different_keys_get_separate_limits() {
    let clock = FakeClock::new();
    let srv = app_wide(&clock, MissingKey::UseIp);
    for key in ["alice", "bob"] {
        assert_eq!(get_with(&srv, "/ping", Some(key)).await, 200, "{key}");
        assert_eq!(get_with(&srv, "/ping", Some(key)).await, 200, "{key}");
    }
    assert_eq!(get_with(&srv, "/ping", Some("alice")).await, 429);
    assert_eq!(get_with(&srv, "/ping", Some("bob")).await, 429);
    // A third key behind the same IP still has its whole quota.
    assert_eq!(get_with(&srv, "/ping", Some("carol")).await, 200);
    clock.advance(Duration::from_secs(60));
    assert_eq!(get_with(&srv, "/ping", Some("alice")).await, 200);
}

#[actix_web::test]
async fn a_missing_key_falls_back_to_the_ip_by_default() {
    let clock = FakeClock::new();
    let srv = app_wide(&clock, MissingKey::UseIp);
    assert_eq!(get_with(&srv, "/ping", None).await, 200);
    assert_eq!(get_with(&srv, "/ping", None).await, 200);
    assert_eq!(get_with(&srv, "/ping", None).await, 429);
    // The IP's own limit does not touch the keys behind it.
    assert_eq!(get_with(&srv, "/ping", Some("alice")).await, 200);
}

#[actix_web::test]
async fn a_missing_key_can_be_refused_or_served_unlimited() {
    let clock = FakeClock::new();
    let srv = app_wide(&clock, MissingKey::Refuse(StatusCode::UNAUTHORIZED));
    assert_eq!(get_with(&srv, "/ping", None).await, 401);
    assert_eq!(get_with(&srv, "/ping", Some("")).await, 401);
    assert_eq!(get_with(&srv, "/ping", Some("alice")).await, 200);

    let srv = app_wide(&clock, MissingKey::Skip);
    for _ in 0..5 {
        assert_eq!(get_with(&srv, "/ping", None).await, 200);
    }
}

#[actix_web::test]
async fn bans_of_the_ip_apply_whatever_the_key() {
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header("x-client")
        .rate_limit_rules([Rule::new(2, Duration::from_secs(60))])
        .key(HeaderKey::new("x-api-key"));
    let gk = fg.gatekeeper();
    let srv = actix_test::start_with(actix_test::config().workers(2), move || {
        App::new().wrap(fg.clone()).service(ping)
    });
    gk.ban(
        IP.parse::<std::net::IpAddr>().unwrap(),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(get_with(&srv, "/ping", Some("alice")).await, 403);
    clock.advance(Duration::from_secs(30));
    assert_eq!(get_with(&srv, "/ping", Some("alice")).await, 200);
}

fn api_key(req: &HttpRequest) -> Option<String> {
    let key = req.headers().get("x-api-key")?.to_str().ok()?;
    (!key.is_empty()).then(|| format!("api:{key}"))
}

/// Reads the route's path parameter: route keys run during routing.
fn user_of(req: &HttpRequest) -> Option<String> {
    req.match_info().get("user").map(|u| format!("user:{u}"))
}

#[specific(rate_limit_rules = [(1, "1m")], standalone, key = api_key)]
#[get("/search")]
async fn search() -> &'static str {
    "results"
}

#[rate_limited(amount = 1, time_window = "1m", key = user_of)]
#[get("/users/{user}/feed")]
async fn feed() -> &'static str {
    "feed"
}

#[actix_web::test]
async fn per_route_keys_through_the_attributes_and_route_rules() {
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header("x-client")
        .missing_key(MissingKey::Refuse(StatusCode::BAD_REQUEST));
    let srv = actix_test::start_with(actix_test::config().workers(2), move || {
        App::new()
            .wrap(fg.clone())
            .service(search)
            .service(feed)
            .service(
                web::resource("/export")
                    .wrap(
                        RouteRules::new("export")
                            .specific([Rule::new(1, Duration::from_secs(60))])
                            .standalone()
                            .key(HeaderKey::new("x-api-key")),
                    )
                    .route(web::get().to(HttpResponse::Ok)),
            )
    });
    for path in ["/search", "/export"] {
        assert_eq!(get_with(&srv, path, Some("k1")).await, 200, "{path}");
        assert_eq!(get_with(&srv, path, Some("k1")).await, 429, "{path}");
        assert_eq!(get_with(&srv, path, Some("k2")).await, 200, "{path}");
        assert_eq!(get_with(&srv, path, None).await, 400, "{path}");
    }
    assert_eq!(get_with(&srv, "/users/ann/feed", None).await, 200);
    assert_eq!(get_with(&srv, "/users/ann/feed", None).await, 429);
    assert_eq!(get_with(&srv, "/users/bo/feed", None).await, 200);
}

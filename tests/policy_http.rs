//! Policy features over a real HTTP server (2 workers, loopback): `request_data_check` (one
//! that panics too), cooldown, the grace period, excluded methods on policy routes and
//! `policies_use_global_rules`, driven by the fake clock.

use std::time::Duration;

use actix_web::http::Method;
use actix_web::{get, route, App, HttpRequest};
use floodgate::{rate_limited, FakeClock, Floodgate, Rule};

fn has_api_key(req: &HttpRequest) -> bool {
    req.headers().get("key").is_some_and(|v| v == "value")
}

#[rate_limited(amount = 2, time_window = "1m", request_data_check = has_api_key)]
#[get("/data-check")]
async fn data_check() -> &'static str {
    "ok"
}

#[rate_limited(amount = 100, time_window = "1m", cooldown = "2s")]
#[get("/cooldown")]
async fn cooldown() -> &'static str {
    "ok"
}

#[rate_limited(amount = 3, time_window = "1m", grace_extra = 1, grace_interval = "1h")]
#[get("/grace")]
async fn grace() -> &'static str {
    "ok"
}

fn server(clock: &FakeClock) -> actix_test::TestServer {
    let fg = Floodgate::new().clock(clock.clone()).ip_header("x-client");
    actix_test::start_with(actix_test::config().workers(2), move || {
        App::new()
            .wrap(fg.clone())
            .service(data_check)
            .service(cooldown)
            .service(grace)
    })
}

async fn get(
    srv: &actix_test::TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>) {
    let mut req = srv.get(path).insert_header(("x-client", "198.51.100.7"));
    for &(k, v) in headers {
        req = req.insert_header((k, v));
    }
    let res = req.send().await.expect("request");
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (res.status().as_u16(), retry)
}

#[actix_web::test]
async fn request_data_check_serves_matching_requests_uncounted() {
    let clock = FakeClock::new();
    let srv = server(&clock);
    let key = [("key", "value")];
    for _ in 0..10 {
        assert_eq!(get(&srv, "/data-check", &key).await, (200, None));
    }
    // None of those were counted: the quota of 2 is intact.
    assert_eq!(get(&srv, "/data-check", &[]).await, (200, None));
    assert_eq!(
        get(&srv, "/data-check", &[("key", "wrong")]).await,
        (200, None)
    );
    assert_eq!(get(&srv, "/data-check", &[]).await.0, 429);
    // SPEC 5: a request the check approves is served, even while the client is blocked.
    assert_eq!(get(&srv, "/data-check", &key).await, (200, None));
    assert_eq!(get(&srv, "/data-check", &[]).await.0, 429);
}

#[actix_web::test]
async fn cooldown_spaces_requests_of_one_client() {
    let clock = FakeClock::new();
    let srv = server(&clock);
    assert_eq!(get(&srv, "/cooldown", &[]).await, (200, None));
    assert_eq!(get(&srv, "/cooldown", &[]).await, (429, Some("2".into())));
    clock.advance(Duration::from_millis(1_200));
    assert_eq!(get(&srv, "/cooldown", &[]).await, (429, Some("1".into())));
    clock.advance(Duration::from_millis(800));
    assert_eq!(get(&srv, "/cooldown", &[]).await, (200, None));
    // Cooldown refusals are not blocks: right after the cooldown, it passes again.
    clock.advance(Duration::from_secs(2));
    assert_eq!(get(&srv, "/cooldown", &[]).await, (200, None));
}

#[actix_web::test]
async fn grace_period_forgives_one_slight_excess_of_a_rare_client() {
    let clock = FakeClock::new();
    let srv = server(&clock);
    // A new client: 3 allowed, plus 1 of grace; the 5th is blocked.
    for _ in 0..4 {
        assert_eq!(get(&srv, "/grace", &[]).await, (200, None));
    }
    assert_eq!(get(&srv, "/grace", &[]).await, (429, Some("60".into())));
    // Next window, within the hour: no grace.
    clock.advance(Duration::from_secs(60));
    for _ in 0..3 {
        assert_eq!(get(&srv, "/grace", &[]).await, (200, None));
    }
    assert_eq!(get(&srv, "/grace", &[]).await.0, 429);
    // An hour without blocks: rare again, grace again.
    clock.advance(Duration::from_secs(3_600));
    for _ in 0..4 {
        assert_eq!(get(&srv, "/grace", &[]).await, (200, None));
    }
    assert_eq!(get(&srv, "/grace", &[]).await.0, 429);
}

/// Panics for requests with a `boom` header.
fn panicking_check(req: &HttpRequest) -> bool {
    if req.headers().contains_key("boom") {
        panic!("a request_data_check that panics");
    }
    req.headers().contains_key("key")
}

#[rate_limited(amount = 2, time_window = "1m", request_data_check = panicking_check)]
#[get("/panicking-check")]
async fn panicking_check_route() -> &'static str {
    "ok"
}

#[rate_limited(
    amount = 2,
    time_window = "1m",
    block_limit = 1,
    block_exceed_duration = "forever"
)]
#[route("/excluded", method = "GET", method = "HEAD")]
async fn excluded_route() -> &'static str {
    "ok"
}

#[rate_limited(amount = 4, time_window = "1m")]
#[get("/with-globals")]
async fn with_globals() -> &'static str {
    "ok"
}

#[actix_web::test]
async fn a_panicking_request_data_check_counts_the_request_and_keeps_serving() {
    let clock = FakeClock::new();
    let fg = Floodgate::new().clock(clock.clone()).ip_header("x-client");
    let srv = actix_test::start_with(actix_test::config().workers(2), move || {
        App::new().wrap(fg.clone()).service(panicking_check_route)
    });
    let boom = [("boom", "1")];
    // Counted, as if the check had said no: 2 served, then blocked; never a 500.
    assert_eq!(get(&srv, "/panicking-check", &boom).await, (200, None));
    assert_eq!(get(&srv, "/panicking-check", &boom).await, (200, None));
    assert_eq!(
        get(&srv, "/panicking-check", &boom).await,
        (429, Some("60".into()))
    );
    // The workers live on, and a check that returns true still exempts.
    for _ in 0..4 {
        assert_eq!(get(&srv, "/panicking-check", &[("key", "1")]).await.0, 200);
    }
}

#[actix_web::test]
async fn excluded_methods_skip_policy_counting_and_blocks_but_not_its_blacklist() {
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header("x-client")
        .excluded_methods([Method::HEAD]);
    let srv = actix_test::start_with(actix_test::config().workers(2), move || {
        App::new().wrap(fg.clone()).service(excluded_route)
    });
    let head = |srv: &actix_test::TestServer| {
        let req = srv
            .head("/excluded")
            .insert_header(("x-client", "198.51.100.7"));
        async move { req.send().await.expect("request").status().as_u16() }
    };
    // HEAD is not counted: the policy's quota of 2 is intact after many.
    for _ in 0..5 {
        assert_eq!(head(&srv).await, 200);
    }
    assert_eq!(get(&srv, "/excluded", &[]).await, (200, None));
    assert_eq!(get(&srv, "/excluded", &[]).await, (200, None));
    assert_eq!(get(&srv, "/excluded", &[]).await, (429, Some("60".into())));
    // Nor rate-checked: served during the block.
    assert_eq!(head(&srv).await, 200);
    // The second block exceeds block_limit = 1: blacklisted, which HEAD does not escape.
    clock.advance(Duration::from_secs(60));
    assert_eq!(get(&srv, "/excluded", &[]).await, (200, None));
    assert_eq!(get(&srv, "/excluded", &[]).await, (200, None));
    assert_eq!(get(&srv, "/excluded", &[]).await, (403, None));
    assert_eq!(head(&srv).await, 403);
}

async fn globals_and_policy(use_global: bool) -> Vec<u16> {
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header("x-client")
        .rate_limit_rules([Rule::new(2, Duration::from_secs(60))])
        .policies_use_global_rules(use_global);
    let srv = actix_test::start_with(actix_test::config().workers(2), move || {
        App::new().wrap(fg.clone()).service(with_globals)
    });
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(get(&srv, "/with-globals", &[]).await.0);
    }
    codes
}

#[actix_web::test]
async fn policies_use_global_rules_by_default_and_not_when_told() {
    // Global 2/1m beside a policy of 4/1m: the global rule refuses the third request.
    assert_eq!(
        globals_and_policy(true).await,
        [200, 200, 429, 429, 429, 429]
    );
    // Without the global rules on policy routes: the policy's 4, then its block.
    assert_eq!(
        globals_and_policy(false).await,
        [200, 200, 200, 200, 429, 429]
    );
}

//! Policy features over a real HTTP server (2 workers, loopback): `request_data_check`,
//! cooldown and the grace period, driven by the fake clock.

use std::time::Duration;

use actix_web::{get, App, HttpRequest};
use floodgate::{rate_limited, FakeClock, Floodgate};

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

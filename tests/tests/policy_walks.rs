//! The floodgate policy family (SPEC 5) through `#[rate_limited(..)]` and through `Policy`:
//! each parameter walked step by step on the fake clock, asserting the status code and
//! `Retry-After` of every response.

use std::time::Duration;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{get, test, App, HttpRequest};
use floodgate::{rate_limited, FakeClock, Floodgate, Policy, Punishment, RouteRules};

/// (advance the clock by ms, expected status, expected Retry-After)
type Step = (u64, u16, Option<u64>);

async fn walk<S>(app: &S, clock: &FakeClock, path: &str, steps: &[Step])
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    for (i, &(advance, status, retry)) in steps.iter().enumerate() {
        clock.advance(Duration::from_millis(advance));
        let req = test::TestRequest::get()
            .uri(path)
            .insert_header(("x-client", "203.0.113.9"))
            .to_request();
        // Refusals come back as errors that carry the whole response.
        let res = match app.call(req).await {
            Ok(res) => res.into_parts().1,
            Err(err) => err.error_response(),
        };
        let got_retry = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        assert_eq!(
            (res.status().as_u16(), got_retry),
            (status, retry),
            "step {i} of {path}: +{advance} ms"
        );
    }
}

fn floodgate(clock: &FakeClock) -> Floodgate {
    Floodgate::new().clock(clock.clone()).ip_header("x-client")
}

#[rate_limited(amount = 2, time_window = "10s")]
#[get("/amount")]
async fn amount() -> &'static str {
    "ok"
}

#[actix_web::test]
async fn amount_and_time_window() {
    let clock = FakeClock::new();
    let app = test::init_service(App::new().wrap(floodgate(&clock)).service(amount)).await;
    walk(
        &app,
        &clock,
        "/amount",
        &[
            (0, 200, None),
            (1_000, 200, None),
            (1_000, 429, Some(10)), // amount+1 blocks for block_duration = time_window
            (8_500, 429, Some(2)),  // 1.5 s left, rounded up
            (1_500, 200, None),     // block over at 12 s; new window
            (0, 200, None),
            (0, 429, Some(10)),
        ],
    )
    .await;
}

#[rate_limited(amount = 1, time_window = "10s", block_duration = "30s")]
#[get("/block-duration")]
async fn block_duration() -> &'static str {
    "ok"
}

#[actix_web::test]
async fn block_duration_outlasts_the_window() {
    let clock = FakeClock::new();
    let app = test::init_service(App::new().wrap(floodgate(&clock)).service(block_duration)).await;
    walk(
        &app,
        &clock,
        "/block-duration",
        &[
            (0, 200, None),
            (100, 429, Some(30)),
            (20_000, 429, Some(10)), // the window ended, the block did not
            (9_900, 429, Some(1)),   // 100 ms left: never below 1
            (100, 200, None),
        ],
    )
    .await;
}

#[rate_limited(
    amount = 1,
    time_window = "10s",
    block_limit = 2,
    block_exceed_duration = "1m"
)]
#[get("/block-limit")]
async fn block_limit() -> &'static str {
    "ok"
}

#[actix_web::test]
async fn block_limit_then_ban_then_recovery() {
    let clock = FakeClock::new();
    let app = test::init_service(App::new().wrap(floodgate(&clock)).service(block_limit)).await;
    walk(
        &app,
        &clock,
        "/block-limit",
        &[
            (0, 200, None),
            (1, 429, Some(10)), // block 1
            (10_000, 200, None),
            (1, 429, Some(10)), // block 2
            (10_000, 200, None),
            (1, 403, Some(60)), // block 3 > limit 2: banned for 1 min
            (30_000, 403, Some(30)),
            (30_000, 200, None), // recovered; the count was reset
            (1, 429, Some(10)),
        ],
    )
    .await;
}

#[rate_limited(
    amount = 1,
    time_window = "10s",
    block_limit = 0,
    block_exceed_duration = "forever"
)]
#[get("/blacklist")]
async fn blacklist() -> &'static str {
    "ok"
}

#[actix_web::test]
async fn forever_blacklists_until_an_operator_unbans() {
    let clock = FakeClock::new();
    let fg = floodgate(&clock);
    let gk = fg.gatekeeper();
    let app = test::init_service(App::new().wrap(fg).service(blacklist)).await;
    walk(
        &app,
        &clock,
        "/blacklist",
        &[
            (0, 200, None),
            (1, 403, None),
            (86_400_000 * 365, 403, None),
        ],
    )
    .await;
    let ip: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    assert!(gk.status(ip).await.unwrap().is_blacklisted());
    assert!(gk.unban(ip).await.unwrap());
    walk(&app, &clock, "/blacklist", &[(1, 200, None)]).await;
}

// The four combinations of relative_block x block_exceed_reset, each walked through
// requests, blocks, a punishment and recovery.

#[rate_limited(
    amount = 1,
    time_window = "10s",
    block_limit = 1,
    block_exceed_duration = "100s",
    relative_block = false,
    block_exceed_reset = true
)]
#[get("/fixed-reset")]
async fn fixed_reset() -> &'static str {
    "ok"
}

#[rate_limited(
    amount = 1,
    time_window = "10s",
    block_limit = 1,
    block_exceed_duration = "100s",
    relative_block = false,
    block_exceed_reset = false
)]
#[get("/fixed-keep")]
async fn fixed_keep() -> &'static str {
    "ok"
}

#[rate_limited(
    amount = 1,
    time_window = "10s",
    block_limit = 1,
    block_exceed_duration = "100s",
    relative_block = true,
    block_exceed_reset = true
)]
#[get("/relative-reset")]
async fn relative_reset() -> &'static str {
    "ok"
}

#[rate_limited(
    amount = 1,
    time_window = "10s",
    block_limit = 1,
    block_exceed_duration = "100s",
    relative_block = true,
    block_exceed_reset = false
)]
#[get("/relative-keep")]
async fn relative_keep() -> &'static str {
    "ok"
}

/// Steps shared by the four walks up to the punishment; `relative` changes the block's end.
fn to_punishment(relative: bool) -> Vec<Step> {
    let mut steps = vec![
        (0, 200, None),
        (1_000, 429, Some(10)), // block 1 at 1 s, ends at 11 s
    ];
    if relative {
        // A refusal at 6 s pushes the end to 16 s.
        steps.extend([(5_000, 429, Some(10)), (9_000, 429, Some(10))]); // now 15 s -> 25 s
        steps.push((10_000, 200, None)); // 25 s: block over, new window
    } else {
        steps.extend([(5_000, 429, Some(5)), (4_500, 429, Some(1))]); // 10.5 s: 0.5 s left
        steps.push((500, 200, None)); // 11 s: block over, new window
    }
    steps.push((1, 403, Some(100))); // block 2 > limit 1: banned 100 s
    steps.push((50_000, 403, Some(50)));
    steps
}

#[actix_web::test]
async fn relative_block_false_and_block_exceed_reset_true() {
    let clock = FakeClock::new();
    let app = test::init_service(App::new().wrap(floodgate(&clock)).service(fixed_reset)).await;
    let mut steps = to_punishment(false);
    // Punishment over: the block count is back to 0, so the next block is only a block.
    steps.extend([(50_000, 200, None), (1, 429, Some(10))]);
    walk(&app, &clock, "/fixed-reset", &steps).await;
}

#[actix_web::test]
async fn relative_block_false_and_block_exceed_reset_false() {
    let clock = FakeClock::new();
    let app = test::init_service(App::new().wrap(floodgate(&clock)).service(fixed_keep)).await;
    let mut steps = to_punishment(false);
    // The count stays at the limit: the next block punishes again at once.
    steps.extend([(50_000, 200, None), (1, 403, Some(100))]);
    walk(&app, &clock, "/fixed-keep", &steps).await;
}

#[actix_web::test]
async fn relative_block_true_and_block_exceed_reset_true() {
    let clock = FakeClock::new();
    let app = test::init_service(App::new().wrap(floodgate(&clock)).service(relative_reset)).await;
    let mut steps = to_punishment(true);
    steps.extend([
        (50_000, 200, None),
        (1, 429, Some(10)),
        (3_000, 429, Some(10)),
    ]);
    walk(&app, &clock, "/relative-reset", &steps).await;
}

#[actix_web::test]
async fn relative_block_true_and_block_exceed_reset_false() {
    let clock = FakeClock::new();
    let app = test::init_service(App::new().wrap(floodgate(&clock)).service(relative_keep)).await;
    let mut steps = to_punishment(true);
    steps.extend([(50_000, 200, None), (1, 403, Some(100))]);
    walk(&app, &clock, "/relative-keep", &steps).await;
}

#[rate_limited(
    amount = 2,
    time_window = "10s",
    accumulate_requests = true,
    block_duration = "1s"
)]
#[get("/accumulate")]
async fn accumulate() -> &'static str {
    "ok"
}

#[actix_web::test]
async fn accumulate_requests_carries_unused_quota_with_a_cap() {
    let clock = FakeClock::new();
    let app = test::init_service(App::new().wrap(floodgate(&clock)).service(accumulate)).await;
    walk(
        &app,
        &clock,
        "/accumulate",
        &[
            // Window 1: 1 of 2 used.
            (0, 200, None),
            // Window 2 (opens at 10 s): 2 + 1 carried = 3.
            (10_000, 200, None),
            (0, 200, None),
            (0, 200, None),
            (0, 429, Some(1)),
            // Window 3 (opens at 20 s): nothing unused in window 2, so 2 again.
            (10_000, 200, None),
            (0, 200, None),
            (0, 429, Some(1)),
            // Long idle: only the last opened window carries (nothing here), no compounding.
            (1_000_000, 200, None), // window of 2: 1 unused
            (10_000, 200, None),    // window of 3: 2 unused
            (10_000, 200, None),    // window of 4 (carry capped at amount = 2): 3 unused
            (10_000, 200, None),    // still a window of 4, never more
            (0, 200, None),
            (0, 200, None),
            (0, 200, None),
            (0, 429, Some(1)),
        ],
    )
    .await;
}

#[rate_limited(
    amount = 1,
    time_window = "1s",
    max_window_duration = "1m",
    block_limit = 9
)]
#[get("/max-window")]
async fn max_window() -> &'static str {
    "ok"
}

#[actix_web::test]
async fn max_window_duration_deletes_idle_records_from_store_and_status() {
    let clock = FakeClock::new();
    let fg = floodgate(&clock);
    let gk = fg.gatekeeper();
    let app = test::init_service(App::new().wrap(fg).service(max_window)).await;
    walk(
        &app,
        &clock,
        "/max-window",
        &[(0, 200, None), (1, 429, Some(1))],
    )
    .await;
    let ip: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    let status = gk.status(ip).await.unwrap();
    assert_eq!(status.windows.len(), 1);
    assert_eq!(status.windows[0].block_count, 1);
    clock.advance(Duration::from_secs(59));
    assert_eq!(gk.sweep().await.unwrap(), 0);
    assert_eq!(gk.status(ip).await.unwrap().windows.len(), 1);
    clock.advance(Duration::from_millis(1_001));
    assert_eq!(gk.sweep().await.unwrap(), 1);
    let status = gk.status(ip).await.unwrap();
    assert!(status.windows.is_empty());
    assert_eq!(status.last_seen, None);
}

#[rate_limited(amount = 1, time_window = "10s", max_window_duration = "forever")]
#[get("/kept")]
async fn kept() -> &'static str {
    "ok"
}

#[actix_web::test]
async fn max_window_duration_forever_keeps_records() {
    let clock = FakeClock::new();
    let fg = floodgate(&clock);
    let gk = fg.gatekeeper();
    let app = test::init_service(App::new().wrap(fg).service(kept)).await;
    walk(&app, &clock, "/kept", &[(0, 200, None), (1, 429, Some(10))]).await;
    clock.advance(Duration::from_secs(86_400 * 3_650));
    assert_eq!(gk.sweep().await.unwrap(), 0);
    let status = gk
        .status("203.0.113.9".parse::<std::net::IpAddr>().unwrap())
        .await
        .unwrap();
    assert_eq!(status.windows[0].block_count, 1);
    assert!(!status.windows[0].active);
}

#[rate_limited(
    amount = 1,
    time_window = "1s",
    block_limit = 0,
    block_exceed_duration = "10s",
    adaptive_factor = 2,
    adaptive_max = "35s",
    block_exceed_reset = true
)]
#[get("/adaptive")]
async fn adaptive() -> &'static str {
    "ok"
}

#[actix_web::test]
async fn adaptive_blocking_lengthens_each_punishment_up_to_the_cap() {
    let clock = FakeClock::new();
    let app = test::init_service(App::new().wrap(floodgate(&clock)).service(adaptive)).await;
    walk(
        &app,
        &clock,
        "/adaptive",
        &[
            (0, 200, None),
            (1, 403, Some(10)),
            (10_000, 200, None),
            (1, 403, Some(20)),
            (20_000, 200, None),
            (1, 403, Some(35)), // 40 s capped at 35 s
            (35_000, 200, None),
            (1, 403, Some(35)),
        ],
    )
    .await;
}

#[actix_web::test]
async fn the_policy_api_works_without_macros() {
    let clock = FakeClock::new();
    let policy = Policy::new(1, Duration::from_secs(10))
        .block_limit(0)
        .punishment(Punishment::Ban(Duration::from_secs(30)));
    let app = test::init_service(
        App::new().wrap(floodgate(&clock)).service(
            actix_web::web::resource("/manual")
                .wrap(RouteRules::new("manual").policy(policy))
                .route(actix_web::web::get().to(|_: HttpRequest| async { "ok" })),
        ),
    )
    .await;
    walk(
        &app,
        &clock,
        "/manual",
        &[(0, 200, None), (1, 403, Some(30)), (30_000, 200, None)],
    )
    .await;
}

#[rate_limited]
#[get("/default")]
async fn default_policy() -> &'static str {
    "ok"
}

#[rate_limited(amount = 2)]
#[get("/default-amount")]
async fn default_policy_amount() -> &'static str {
    "ok"
}

#[actix_web::test]
async fn bare_rate_limited_follows_the_app_default_policy_and_keys_override_it() {
    let clock = FakeClock::new();
    let fg = floodgate(&clock).default_policy(Policy::new(1, Duration::from_secs(5)));
    let app = test::init_service(
        App::new()
            .wrap(fg)
            .service(default_policy)
            .service(default_policy_amount),
    )
    .await;
    walk(
        &app,
        &clock,
        "/default",
        &[(0, 200, None), (0, 429, Some(5))],
    )
    .await;
    walk(
        &app,
        &clock,
        "/default-amount",
        &[(0, 200, None), (0, 200, None), (0, 429, Some(5))],
    )
    .await;
}

//! What refused and allowed responses carry (SPEC 6): status codes, `Retry-After`, the IETF
//! RateLimit fields and the legacy ones, the problem+json body, and a custom refusal response,
//! for every kind of refusal (limits, bans, denied clients, missing keys, a failed store).
//! Every time in a response comes from the fake clock, so every value is checked exactly.

use std::net::IpAddr;

use actix_web::http::StatusCode;
use actix_web::{get, App, HttpResponse};
use floodgate::{
    bypass, FakeClock, Floodgate, HeaderKey, IpList, MissingKey, Refusal, RefusalKind, Rule,
    StoreFailure,
};
use floodgate_tests::{get_as, millis, secs, server_config, Resp, IP_HEADER};
use serde_json::json;

#[get("/limited")]
async fn limited() -> &'static str {
    "ok"
}

#[bypass]
#[get("/bypass")]
async fn bypassed() -> &'static str {
    "bypassed"
}

const POLICY: &str = r#""3/10s";q=3;w=10"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn base(clock: &FakeClock) -> Floodgate {
    Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .rate_limit_rules([Rule::new(3, secs(10))])
}

fn start(fg: &Floodgate) -> actix_test::TestServer {
    let fg = fg.clone();
    actix_test::start_with(server_config(), move || {
        App::new()
            .wrap(fg.clone())
            .service(limited)
            .service(bypassed)
    })
}

/// The IETF fields of a response: (`RateLimit-Policy`, `RateLimit`).
fn ietf(r: &Resp) -> (Option<&str>, Option<&str>) {
    assert!(r.header_count("ratelimit-policy") <= 1);
    assert!(r.header_count("ratelimit") <= 1);
    (r.header("ratelimit-policy"), r.header("ratelimit"))
}

/// The legacy fields of a response: (`X-RateLimit-Limit`, `-Remaining`, `-Reset`).
fn legacy(r: &Resp) -> (Option<&str>, Option<&str>, Option<&str>) {
    (
        r.header("x-ratelimit-limit"),
        r.header("x-ratelimit-remaining"),
        r.header("x-ratelimit-reset"),
    )
}

/// Asserts a 429 from the 3/10s rule with this `Retry-After` and `RateLimit` reset.
fn assert_limited(r: &Resp, retry_after: &str) {
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some(retry_after));
    assert_eq!(r.header_count("retry-after"), 1);
    let rl = format!(r#""3/10s";r=0;t={retry_after}"#);
    assert_eq!(ietf(r), (Some(POLICY), Some(rl.as_str())));
}

#[actix_web::test]
async fn rate_limited_requests_get_429_and_retry_after_rounded_up_never_below_one() {
    let clock = FakeClock::new();
    let srv = start(&base(&clock));
    let who = "10.3.0.1";

    // t0
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!((r.code(), r.text()), (200, "ok"));
    assert_eq!(ietf(&r), (Some(POLICY), Some(r#""3/10s";r=2;t=10"#)));
    assert_eq!(r.header("retry-after"), None);
    // t0 + 2.5 s: the oldest request leaves the window in 7.5 s, shown as 8.
    clock.advance(millis(2500));
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(ietf(&r), (Some(POLICY), Some(r#""3/10s";r=1;t=8"#)));
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(ietf(&r), (Some(POLICY), Some(r#""3/10s";r=0;t=8"#)));
    assert_eq!(r.code(), 200);

    // Refused: 7.5 s to wait, rounded up.
    let r = get_as(&srv, "/limited", who).await;
    assert_limited(&r, "8");
    // t0 + 7.5 s: 2.5 s left.
    clock.advance(secs(5));
    assert_limited(&get_as(&srv, "/limited", who).await, "3");
    // t0 + 9.5 s: half a second left is 1 s.
    clock.advance(secs(2));
    assert_limited(&get_as(&srv, "/limited", who).await, "1");
    // t0 + 9.999 s: one millisecond left is still 1 s.
    clock.advance(millis(499));
    assert_limited(&get_as(&srv, "/limited", who).await, "1");
    // t0 + 10 s: the first request left the window.
    clock.advance(millis(1));
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(r.code(), 200);
    // The two requests of t0 + 2.5 s leave at t0 + 12.5 s.
    assert_eq!(ietf(&r), (Some(POLICY), Some(r#""3/10s";r=0;t=3"#)));
    assert_limited(&get_as(&srv, "/limited", who).await, "3");
    clock.advance(millis(2500));
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(r.code(), 200);
    assert_eq!(ietf(&r), (Some(POLICY), Some(r#""3/10s";r=1;t=8"#)));
}

#[actix_web::test]
async fn several_rules_are_all_listed_and_the_closest_to_refusing_is_reported() {
    let clock = FakeClock::new();
    let fg = base(&clock).rate_limit_rules([Rule::new(3, secs(10)), Rule::new(5, secs(60))]);
    let srv = start(&fg);
    let who = "10.3.1.1";
    let policy = Some(r#""3/10s";q=3;w=10, "5/1m";q=5;w=60"#);

    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(ietf(&r), (policy, Some(r#""3/10s";r=2;t=10"#)));
    get_as(&srv, "/limited", who).await;
    get_as(&srv, "/limited", who).await;
    // A whole number of seconds to wait is not rounded up further.
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(r.code(), 429);
    assert_eq!(r.header("retry-after"), Some("10"));
    assert_eq!(ietf(&r), (policy, Some(r#""3/10s";r=0;t=10"#)));
    assert_eq!(r.json()["limit"], "3/10s");

    clock.advance(secs(10));
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(ietf(&r), (policy, Some(r#""5/1m";r=1;t=50"#)));
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(ietf(&r), (policy, Some(r#""5/1m";r=0;t=50"#)));
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(r.code(), 429);
    assert_eq!(r.header("retry-after"), Some("50"));
    assert_eq!(ietf(&r), (policy, Some(r#""5/1m";r=0;t=50"#)));
    assert_eq!(
        r.json(),
        json!({
            "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
            "title": "Request cannot be satisfied as assigned quota has been exceeded",
            "status": 429,
            "violated-policies": ["5/1m"],
            "limit": "5/1m",
            "detail": "Rate limit 5/1m exceeded. Retry in 50 s.",
            "retry_after": 50,
        })
    );
}

#[actix_web::test]
async fn refusals_are_problem_json_naming_the_limit_and_the_wait() {
    let clock = FakeClock::new();
    let fg = base(&clock);
    let srv = start(&fg);
    let who = "10.3.2.1";

    for _ in 0..3 {
        get_as(&srv, "/limited", who).await;
    }
    clock.advance(millis(1200));
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(r.code(), 429);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        r.json(),
        json!({
            "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
            "title": "Request cannot be satisfied as assigned quota has been exceeded",
            "status": 429,
            "violated-policies": ["3/10s"],
            "limit": "3/10s",
            "detail": "Rate limit 3/10s exceeded. Retry in 9 s.",
            "retry_after": 9,
        })
    );

    // A ban: 403, problem+json, Retry-After from the fake clock.
    let banned = "10.3.2.2";
    fg.gatekeeper().ban(ip(banned), secs(600)).await.unwrap();
    let r = get_as(&srv, "/limited", banned).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.header("retry-after"), Some("600"));
    assert_eq!(
        ietf(&r),
        (Some(POLICY), None),
        "a ban is not a spent quota: the policy field only, no RateLimit field"
    );
    assert_eq!(
        r.json(),
        json!({
            "type": "https://iana.org/assignments/http-problem-types#abnormal-usage-detected",
            "title": "Request not satisfied due to detection of abnormal request pattern",
            "status": 403,
            "detail": "This client is banned. Retry in 600 s.",
            "retry_after": 600,
        })
    );
    clock.advance(millis(500));
    let r = get_as(&srv, "/limited", banned).await;
    assert_eq!(r.header("retry-after"), Some("600"));
    assert_eq!(r.json()["retry_after"], 600);
    clock.advance(millis(599_400)); // 100 ms left
    let r = get_as(&srv, "/limited", banned).await;
    assert_eq!((r.code(), r.header("retry-after")), (403, Some("1")));
    assert_eq!(r.json()["retry_after"], 1);
    clock.advance(millis(100));
    assert_eq!(get_as(&srv, "/limited", banned).await.code(), 200);

    // A blacklist: 403 with no Retry-After and no retry_after.
    let listed = "10.3.2.3";
    fg.gatekeeper().blacklist(ip(listed)).await.unwrap();
    let r = get_as(&srv, "/limited", listed).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        r.json(),
        json!({
            "type": "https://iana.org/assignments/http-problem-types#abnormal-usage-detected",
            "title": "Request not satisfied due to detection of abnormal request pattern",
            "status": 403,
            "detail": "This client is blacklisted.",
        })
    );
    assert_eq!(r.header("ratelimit-policy"), Some(POLICY));
    // A blacklist never resets, so there is no RateLimit field (whose `t` would claim a reset).
    assert_eq!(r.header("ratelimit"), None);
}

#[actix_web::test]
async fn bypassed_routes_carry_no_ratelimit_fields() {
    let clock = FakeClock::new();
    let srv = start(&base(&clock).legacy_headers(true));
    let who = "10.3.3.1";
    for _ in 0..5 {
        let r = get_as(&srv, "/bypass", who).await;
        assert_eq!((r.code(), r.text()), (200, "bypassed"));
        assert_eq!(ietf(&r), (None, None));
        assert_eq!(legacy(&r), (None, None, None));
        assert_eq!(r.header("retry-after"), None);
    }
    // While the limited route carries them.
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(ietf(&r), (Some(POLICY), Some(r#""3/10s";r=2;t=10"#)));
}

#[actix_web::test]
async fn routes_without_limits_carry_no_ratelimit_fields() {
    let clock = FakeClock::new();
    // No rules at all: a pass-through that still enforces bans.
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .legacy_headers(true);
    let srv = start(&fg);
    let r = get_as(&srv, "/limited", "10.3.4.1").await;
    assert_eq!(r.code(), 200);
    assert_eq!(ietf(&r), (None, None));
    assert_eq!(legacy(&r), (None, None, None));
    fg.gatekeeper().ban(ip("10.3.4.1"), secs(5)).await.unwrap();
    let r = get_as(&srv, "/limited", "10.3.4.1").await;
    assert_eq!((r.code(), r.header("retry-after")), (403, Some("5")));
    assert_eq!(ietf(&r), (None, None));
    assert_eq!(legacy(&r), (None, None, None));
}

#[actix_web::test]
async fn ratelimit_headers_can_be_switched_off() {
    let clock = FakeClock::new();
    let fg = base(&clock).ratelimit_headers(false);
    let srv = start(&fg);
    let who = "10.3.5.1";
    for _ in 0..3 {
        let r = get_as(&srv, "/limited", who).await;
        assert_eq!(r.code(), 200);
        assert_eq!(ietf(&r), (None, None));
        assert_eq!(legacy(&r), (None, None, None));
    }
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(r.code(), 429);
    assert_eq!(r.header("retry-after"), Some("10"));
    assert_eq!(ietf(&r), (None, None));
    assert_eq!(legacy(&r), (None, None, None));
    fg.gatekeeper().ban(ip(who), secs(30)).await.unwrap();
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!((r.code(), r.header("retry-after")), (403, Some("30")));
    assert_eq!(ietf(&r), (None, None));
}

#[actix_web::test]
async fn legacy_headers_can_be_switched_on() {
    let clock = FakeClock::new();
    let srv = start(&base(&clock).legacy_headers(true));
    let who = "10.3.6.1";

    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(legacy(&r), (Some("3"), Some("2"), Some("10")));
    assert_eq!(ietf(&r), (Some(POLICY), Some(r#""3/10s";r=2;t=10"#)));
    clock.advance(millis(2500));
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(legacy(&r), (Some("3"), Some("1"), Some("8")));
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(legacy(&r), (Some("3"), Some("0"), Some("8")));
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(r.code(), 429);
    assert_eq!(legacy(&r), (Some("3"), Some("0"), Some("8")));
    assert_eq!(r.header("retry-after"), Some("8"));

    // Legacy alone.
    let clock = FakeClock::new();
    let srv = start(&base(&clock).ratelimit_headers(false).legacy_headers(true));
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(legacy(&r), (Some("3"), Some("2"), Some("10")));
    assert_eq!(ietf(&r), (None, None));
    get_as(&srv, "/limited", who).await;
    get_as(&srv, "/limited", who).await;
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(r.code(), 429);
    assert_eq!(legacy(&r), (Some("3"), Some("0"), Some("10")));
    assert_eq!(ietf(&r), (None, None));
}

#[actix_web::test]
async fn a_custom_refusal_response_replaces_the_body_and_keeps_retry_after() {
    let clock = FakeClock::new();
    let fg = base(&clock).refusal_response(|r| {
        let what = match r.kind {
            RefusalKind::Limited { limit, .. } => format!("slow down ({})", limit.name),
            RefusalKind::Banned { until: None, .. } => String::from("go away for good"),
            RefusalKind::Banned { .. } => String::from("go away"),
            _ => String::from("other"),
        };
        let mut res = HttpResponse::build(r.status);
        res.content_type("text/plain; charset=utf-8")
            .insert_header(("x-refused-client", r.client.to_string()));
        if r.client.to_string() == "10.3.7.4" {
            // The hook's own Retry-After is kept.
            res.insert_header(("retry-after", "12345"));
        }
        res.body(what)
    });
    let srv = start(&fg);

    let who = "10.3.7.1";
    for _ in 0..3 {
        let r = get_as(&srv, "/limited", who).await;
        assert_eq!((r.code(), r.text()), (200, "ok"));
    }
    clock.advance(millis(3300));
    let r = get_as(&srv, "/limited", who).await;
    assert_eq!(r.code(), 429);
    assert_eq!(r.text(), "slow down (3/10s)");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("x-refused-client"), Some(who));
    assert_eq!(r.header("retry-after"), Some("7"), "6.7 s rounded up");
    assert_eq!(ietf(&r), (Some(POLICY), Some(r#""3/10s";r=0;t=7"#)));

    let banned = "10.3.7.2";
    fg.gatekeeper().ban(ip(banned), millis(4500)).await.unwrap();
    let r = get_as(&srv, "/limited", banned).await;
    assert_eq!((r.code(), r.text()), (403, "go away"));
    assert_eq!(r.header("retry-after"), Some("5"));

    let listed = "10.3.7.3";
    fg.gatekeeper().blacklist(ip(listed)).await.unwrap();
    let r = get_as(&srv, "/limited", listed).await;
    assert_eq!((r.code(), r.text()), (403, "go away for good"));
    assert_eq!(r.header("retry-after"), None);

    let own = "10.3.7.4";
    fg.gatekeeper().ban(ip(own), secs(60)).await.unwrap();
    let r = get_as(&srv, "/limited", own).await;
    assert_eq!(r.code(), 403);
    assert_eq!(r.header("retry-after"), Some("12345"));
    assert_eq!(r.header_count("retry-after"), 1);
}

#[actix_web::test]
async fn a_failing_store_fails_open_by_default_and_closed_with_503_on_request() {
    let clock = FakeClock::new();
    // The default: served, unlimited, without RateLimit fields (nothing was decided).
    assert_eq!(StoreFailure::default(), StoreFailure::Open);
    let srv = start(&base(&clock).store(floodgate_tests::DownStore));
    for _ in 0..10 {
        let r = get_as(&srv, "/limited", "10.3.8.1").await;
        assert_eq!((r.code(), r.text()), (200, "ok"));
        assert_eq!(ietf(&r), (None, None));
    }
    // Fail-closed: 503, problem+json, retry in a second.
    let srv = start(
        &base(&clock)
            .store(floodgate_tests::DownStore)
            .store_failure(StoreFailure::Closed),
    );
    let r = get_as(&srv, "/limited", "10.3.8.1").await;
    assert_eq!(r.code(), 503);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.json(),
        json!({
            "type": "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity",
            "title": "Request cannot be satisfied due to temporary server capacity constraints",
            "status": 503,
            "detail": "The rate limiter is unavailable; try again later. Retry in 1 s.",
            "retry_after": 1
        })
    );
    // A bypassed route never asks the store.
    assert_eq!(get_as(&srv, "/bypass", "10.3.8.1").await.code(), 200);
}

/// The kinds of refusals beyond limits and bans: a denied client, a missing key and a
/// store that failed closed, with their default bodies, and each as a custom response sees
/// it.
fn targeting(clock: &FakeClock) -> Floodgate {
    base(clock)
        .deny_list(IpList::new("deny").entries(["10.3.9.0/24"]).unwrap())
        .key(HeaderKey::new("x-api-key"))
        .missing_key(MissingKey::Refuse(StatusCode::UNAUTHORIZED))
}

async fn keyed(srv: &actix_test::TestServer, ip: &str, key: Option<&str>) -> Resp {
    let mut req = srv.get("/limited").insert_header((IP_HEADER, ip));
    if let Some(k) = key {
        req = req.insert_header(("x-api-key", k));
    }
    floodgate_tests::send(req).await
}

#[actix_web::test]
async fn denied_missing_key_and_store_unavailable_refusals_have_default_bodies() {
    let clock = FakeClock::new();
    let srv = start(&targeting(&clock));
    let r = keyed(&srv, "10.3.9.1", Some("alice")).await;
    assert_eq!(r.code(), 403);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(
        r.json(),
        json!({
            "type": "about:blank",
            "title": "Forbidden",
            "status": 403,
            "detail": "This client's address is denied."
        })
    );
    let r = keyed(&srv, "10.3.10.1", None).await;
    assert_eq!(r.code(), 401);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        r.json(),
        json!({
            "type": "about:blank",
            "title": "Unauthorized",
            "status": 401,
            "detail": "This request needs a client key (such as an API key)."
        })
    );
    assert_eq!(keyed(&srv, "10.3.10.1", Some("alice")).await.code(), 200);
}

#[actix_web::test]
async fn a_custom_refusal_response_sees_denied_missing_key_and_store_unavailable() {
    let clock = FakeClock::new();
    let hook = |r: &Refusal<'_>| {
        let what = match r.kind {
            RefusalKind::Denied { .. } => "denied",
            RefusalKind::MissingKey => "missing key",
            RefusalKind::StoreUnavailable => "store unavailable",
            _ => "other",
        };
        HttpResponse::build(r.status)
            .content_type("text/plain")
            .body(format!("{what} {} {}", r.status.as_u16(), r.client))
    };
    let srv = start(&targeting(&clock).refusal_response(hook));
    let r = keyed(&srv, "10.3.9.1", Some("alice")).await;
    assert_eq!((r.code(), r.text()), (403, "denied 403 10.3.9.1"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = keyed(&srv, "10.3.10.1", None).await;
    assert_eq!((r.code(), r.text()), (401, "missing key 401 10.3.10.1"));

    let failing = base(&clock)
        .store(floodgate_tests::DownStore)
        .store_failure(StoreFailure::Closed)
        .refusal_response(hook);
    let srv = start(&failing);
    let r = get_as(&srv, "/limited", "10.3.10.2").await;
    assert_eq!(
        (r.code(), r.text()),
        (503, "store unavailable 503 10.3.10.2")
    );
    assert_eq!(
        r.header("retry-after"),
        Some("1"),
        "added to the custom response"
    );
}

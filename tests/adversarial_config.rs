//! Settings that would fail open: a configuration mistake stops the app from starting with a
//! message naming the setting, and a key extractor or a store that fails never lets a
//! request through unprotected when the settings say it must not.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{get, web, App, HttpRequest, HttpResponse, HttpServer};
use floodgate::{
    BanReason, BanRule, ClientKey, ClientState, Decision, FakeClock, Floodgate, HeaderKey,
    MemoryStore, MissingKey, Plan, Policy, ReportOutcome, RouteRules, Rule, Store, StoreError,
    StoreFailure, StoreFuture, Target, Timestamp,
};
use floodgate_tests::{app_starts, get_as, secs, send, server_config, IP_HEADER};

#[get("/ping")]
async fn ping() -> &'static str {
    "ok"
}

async fn starts(fg: Floodgate) -> bool {
    app_starts(App::new().wrap(fg).service(ping)).await
}

#[actix_web::test]
async fn mistakes_in_the_floodgate_stop_the_app_naming_the_setting() {
    let cases: Vec<(&str, Floodgate)> = vec![
        ("ip_header", Floodgate::new().ip_header("bad header")),
        (
            "target",
            Floodgate::new().target(Target::new("admins").header("bad header").deny()),
        ),
        (
            "target",
            Floodgate::new().target(Target::new("eu").countries(["XX1"]).deny()),
        ),
        (
            "target nothing",
            Floodgate::new().target(Target::new("nothing")),
        ),
        (
            "target empty",
            Floodgate::new().target(Target::new("empty").limit([])),
        ),
        (
            "target zero",
            Floodgate::new().target(Target::new("zero").limit([Rule::new(0, secs(1))])),
        ),
        (
            "rate_limit_rules",
            Floodgate::new().rate_limit_rules([Rule::new(5, Duration::ZERO)]),
        ),
        (
            "rate_limit_rules",
            Floodgate::new().rate_limit_rules([Rule::new(0, secs(1))]),
        ),
        (
            "default_policy",
            Floodgate::new().default_policy(Policy::new(5, Duration::from_micros(500))),
        ),
        (
            "ban_rule",
            Floodgate::new().ban_rule(BanRule::new(3, secs(10), Duration::ZERO)),
        ),
        ("key", Floodgate::new().key(HeaderKey::new("bad header"))),
        (
            "ipv6_rotation",
            Floodgate::new().ipv6_rotation(floodgate::Ipv6Rotation::new().level(64, 3)),
        ),
    ];
    for (what, fg) in cases {
        let err = fg.validate().expect_err(what);
        let field = what.split(' ').next().unwrap();
        assert!(err.field().starts_with(field), "{what}: {err}");
        assert!(!starts(fg).await, "{what}: the app started");
    }
    assert!(starts(Floodgate::new()).await);
}

#[actix_web::test]
async fn mistakes_in_route_rules_stop_the_app_naming_the_route() {
    let fg = Floodgate::new();
    let bad_routes = [
        RouteRules::new("export").policy(Policy::new(5, Duration::from_micros(500))),
        RouteRules::new("search").specific([Rule::new(3, Duration::ZERO)]),
        RouteRules::new("keyed").key(HeaderKey::new("bad header")),
    ];
    for rules in bad_routes {
        let app = App::new()
            .wrap(fg.clone())
            .service(web::resource("/r").wrap(rules.clone()).to(HttpResponse::Ok));
        assert!(!app_starts(app).await, "{rules:?}");
    }
    // Two routes of one name with different rules would share counters that count unlike.
    let clash = App::new()
        .wrap(fg.clone())
        .service(
            web::resource("/a")
                .wrap(RouteRules::new("b").specific([Rule::new(3, secs(1))]))
                .to(HttpResponse::Ok),
        )
        .service(
            web::resource("/b")
                .wrap(RouteRules::new("b").specific([Rule::new(5, secs(1))]))
                .to(HttpResponse::Ok),
        );
    assert!(!app_starts(clash).await);
    // The same rules under one name: shared counters, on purpose.
    let shared = App::new()
        .wrap(fg.clone())
        .service(
            web::resource("/a")
                .wrap(RouteRules::new("b").specific([Rule::new(3, secs(1))]))
                .to(HttpResponse::Ok),
        )
        .service(
            web::resource("/b")
                .wrap(RouteRules::new("b").specific([Rule::new(3, secs(1))]))
                .to(HttpResponse::Ok),
        );
    assert!(app_starts(shared).await);
    let good = App::new().wrap(fg.clone()).service(
        web::resource("/r")
            .wrap(RouteRules::new("ok").specific([Rule::new(3, secs(1))]))
            .to(HttpResponse::Ok),
    );
    assert!(app_starts(good).await);
}

#[actix_web::test]
async fn a_server_with_a_mistake_does_not_start() {
    let fg = Floodgate::new().target(Target::new("admins").header("bad header").deny());
    let server = HttpServer::new(move || App::new().wrap(fg.clone()).service(ping))
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap()
        .run();
    // The server's future ends with an error once its worker fails to start; the bound only
    // keeps a regression from hanging the suite.
    let ended = actix_web::rt::time::timeout(Duration::from_secs(30), server).await;
    match ended {
        Ok(result) => assert!(result.is_err(), "the server ran: {result:?}"),
        Err(_) => panic!("the server kept running with a configuration mistake"),
    }
}

/// An app-wide key extractor that panics on requests carrying `x-panic`.
fn fragile_key(req: &HttpRequest) -> Option<String> {
    if req.headers().contains_key("x-panic") {
        panic!("the extractor met a request it did not expect");
    }
    let user = req.headers().get("x-user")?.to_str().ok()?;
    Some(format!("user:{user}"))
}

#[actix_web::test]
async fn a_panicking_or_overlong_key_counts_the_request_under_its_ip() {
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .rate_limit_rules([Rule::new(2, secs(60))])
        // Requests without a key would be served unlimited: a client must not get there by
        // making the extractor fail.
        .missing_key(MissingKey::Skip)
        .key(fragile_key);
    let srv = actix_test::start_with(server_config(), {
        let fg = fg.clone();
        move || App::new().wrap(fg.clone()).service(ping)
    });
    let mut codes = Vec::new();
    for _ in 0..4 {
        let req = srv
            .get("/ping")
            .insert_header((IP_HEADER, "6.6.6.6"))
            .insert_header(("x-panic", "1"));
        codes.push(send(req).await.code());
    }
    assert_eq!(codes, [200, 200, 429, 429]);
    let long = "u".repeat(5000);
    let mut codes = Vec::new();
    for _ in 0..3 {
        let req = srv
            .get("/ping")
            .insert_header((IP_HEADER, "6.6.6.7"))
            .insert_header(("x-user", long.as_str()));
        codes.push(send(req).await.code());
    }
    assert_eq!(codes, [200, 200, 429]);
    // A request without a key is still skipped, as configured.
    for _ in 0..4 {
        assert_eq!(get_as(&srv, "/ping", "6.6.6.8").await.code(), 200);
    }
}

/// A memory store whose address keys fail (an unreachable shard, say); custom keys answer.
#[derive(Debug, Default)]
struct FailingForAddresses(MemoryStore);

fn fails<T>(client: &ClientKey) -> Option<StoreFuture<T>> {
    client
        .ip()
        .map(|_| StoreFuture::ready(Err(StoreError::new("address shard unreachable"))))
}

impl Store for FailingForAddresses {
    fn check(&self, c: &ClientKey, plan: &Arc<Plan>, now: Timestamp) -> StoreFuture<Decision> {
        fails(c).unwrap_or_else(|| self.0.check(c, plan, now))
    }
    fn report(&self, c: &ClientKey, r: &BanRule, now: Timestamp) -> StoreFuture<ReportOutcome> {
        fails(c).unwrap_or_else(|| self.0.report(c, r, now))
    }
    fn ban(&self, c: &ClientKey, until: Option<Timestamp>, now: Timestamp) -> StoreFuture<()> {
        self.0.ban(c, until, now)
    }
    fn extend_ban(
        &self,
        c: &ClientKey,
        until: Option<Timestamp>,
        reason: BanReason,
        now: Timestamp,
    ) -> StoreFuture<()> {
        self.0.extend_ban(c, until, reason, now)
    }
    fn release(
        &self,
        c: &ClientKey,
        plan: &Arc<Plan>,
        at: Timestamp,
        now: Timestamp,
    ) -> StoreFuture<()> {
        fails(c).unwrap_or_else(|| self.0.release(c, plan, at, now))
    }
    fn unban(&self, c: &ClientKey, now: Timestamp) -> StoreFuture<bool> {
        self.0.unban(c, now)
    }
    fn state(&self, c: &ClientKey, now: Timestamp) -> StoreFuture<Option<ClientState>> {
        self.0.state(c, now)
    }
    fn sweep(&self, now: Timestamp) -> StoreFuture<usize> {
        self.0.sweep(now)
    }
}

#[actix_web::test]
async fn fail_closed_covers_the_ip_ban_check_of_a_keyed_request() {
    for (policy, expected) in [(StoreFailure::Closed, 503), (StoreFailure::Open, 200)] {
        let fg = Floodgate::new()
            .clock(FakeClock::new())
            .ip_header(IP_HEADER)
            .store(FailingForAddresses::default())
            .store_failure(policy)
            .rate_limit_rules([Rule::new(5, secs(60))])
            .key(HeaderKey::new("x-api-key"));
        let srv = actix_test::start_with(server_config(), {
            let fg = fg.clone();
            move || App::new().wrap(fg.clone()).service(ping)
        });
        let req = srv
            .get("/ping")
            .insert_header((IP_HEADER, "7.7.7.7"))
            .insert_header(("x-api-key", "k1"));
        assert_eq!(send(req).await.code(), expected, "{policy:?}");
    }
}

#[actix_web::test]
async fn an_address_the_proxy_cannot_name_is_unknown_not_the_proxy() {
    // Direct check of the fallback key, for the README's threat model.
    let fg = Floodgate::new().trusted_proxies(["127.0.0.1"]).unwrap();
    let gk = fg.gatekeeper();
    let req = actix_web::test::TestRequest::default()
        .peer_addr("127.0.0.1:9".parse().unwrap())
        .insert_header(("x-forwarded-for", "unknown"))
        .to_http_request();
    assert_eq!(gk.client_key(&req), ClientKey::custom("unknown"));
    let req = actix_web::test::TestRequest::default()
        .peer_addr("127.0.0.1:9".parse().unwrap())
        .to_http_request();
    assert_eq!(
        gk.client_key(&req),
        ClientKey::from_ip("127.0.0.1".parse::<IpAddr>().unwrap(), 64)
    );
}

//! Bans by report and by operator (SPEC 4), and excluded methods, over HTTP with a fake clock;
//! reports without a ban rule and on a store that fails.

use std::net::IpAddr;

use actix_web::http::Method;
use actix_web::{get, route, web, App, HttpRequest, HttpResponse};
use floodgate::{
    bypass, specific, BanReason, BanRule, ClientKey, FakeClock, Floodgate, GateKeeper,
    ReportOutcome, Rule, StoreFailure,
};
use floodgate_tests::{
    codes_as, from_ip, get_as, millis, secs, send, server_config, Resp, IP_HEADER,
};

#[get("/ping")]
async fn ping() -> &'static str {
    "pong"
}

/// Reports one offence of the caller: what a failed login does.
#[get("/report")]
async fn report(req: HttpRequest, gk: GateKeeper) -> HttpResponse {
    match gk.report(&req).await {
        Some(outcome) => HttpResponse::Ok().body(format!("{outcome:?}")),
        None => HttpResponse::Ok().body("not recorded"),
    }
}

/// Reports too, but bypassed: reachable by a banned client.
#[bypass]
#[get("/bypass/report")]
async fn bypass_report(req: HttpRequest, gk: GateKeeper) -> HttpResponse {
    match gk.report(&req).await {
        Some(outcome) => HttpResponse::Ok().body(format!("{outcome:?}")),
        None => HttpResponse::Ok().body("not recorded"),
    }
}

#[bypass]
#[get("/health")]
async fn health() -> &'static str {
    "healthy"
}

#[specific(rate_limit_rules = [(1, "1m")])]
#[route("/specific", method = "GET", method = "HEAD")]
async fn specific_route() -> &'static str {
    "specific"
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn start(clock: &FakeClock, global: Option<Rule>) -> (actix_test::TestServer, Floodgate) {
    let mut fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .ban_rule(BanRule::new(3, secs(10), secs(600)))
        .excluded_methods([Method::HEAD]);
    if let Some(rule) = global {
        fg = fg.rate_limit_rules([rule]);
    }
    let app_fg = fg.clone();
    let srv = actix_test::start_with(server_config(), move || {
        App::new()
            .wrap(app_fg.clone())
            .service(ping)
            .service(report)
            .service(bypass_report)
            .service(health)
            .service(specific_route)
            // GET and HEAD (and any other method) on one resource, global rules only.
            .service(web::resource("/any").to(HttpResponse::Ok))
    });
    (srv, fg)
}

async fn report_as(srv: &actix_test::TestServer, who: &str) -> Resp {
    get_as(srv, "/report", who).await
}

async fn head_as(srv: &actix_test::TestServer, path: &str, who: &str) -> Resp {
    send(from_ip(srv.head(path), who)).await
}

#[actix_web::test]
async fn the_third_report_within_the_window_bans_at_once_everywhere_but_bypass() {
    let clock = FakeClock::new();
    let (srv, fg) = start(&clock, None);
    let who = "10.2.0.1";

    let r = report_as(&srv, who).await;
    assert_eq!(r.text(), "Recorded { offences: 1 }");
    clock.advance(secs(4));
    let r = report_as(&srv, who).await;
    assert_eq!(r.text(), "Recorded { offences: 2 }");
    assert_eq!(get_as(&srv, "/ping", who).await.code(), 200);
    clock.advance(secs(5)); // 9 s after the first: all three within 10 s
    let r = report_as(&srv, who).await;
    assert_eq!(r.code(), 200, "the reporting request itself is served");
    assert!(r.text().starts_with("Banned"), "{}", r.text());

    // In force at once, on the next request, on every non-bypassed route.
    let r = get_as(&srv, "/ping", who).await;
    assert_eq!(r.code(), 403);
    assert_eq!(r.header("retry-after"), Some("600"));
    assert_eq!(report_as(&srv, who).await.code(), 403);
    assert_eq!(get_as(&srv, "/specific", who).await.code(), 403);
    assert_eq!(get_as(&srv, "/any", who).await.code(), 403);
    assert_eq!(codes_as(&srv, "/health", who, 3).await, [200, 200, 200]);
    assert_eq!(get_as(&srv, "/bypass/report", who).await.code(), 200);

    let status = fg.gatekeeper().status(ip(who)).await.unwrap();
    let ban = status.ban.expect("banned");
    assert_eq!(ban.reason, BanReason::Reported);
    // Other clients are untouched.
    assert_eq!(get_as(&srv, "/ping", "10.2.0.2").await.code(), 200);
}

#[actix_web::test]
async fn a_ban_lasts_its_duration_from_the_last_offence() {
    let clock = FakeClock::new();
    let (srv, fg) = start(&clock, None);
    let who = "10.2.1.1";
    let start = clock_now(&fg);

    report_as(&srv, who).await;
    clock.advance(secs(4));
    report_as(&srv, who).await;
    clock.advance(secs(4));
    report_as(&srv, who).await; // the last offence, at +8 s: banned until +608 s
    let status = fg.gatekeeper().status(ip(who)).await.unwrap();
    assert_eq!(
        status.ban.and_then(|b| b.until),
        Some(start + secs(608)),
        "ban should end 600 s after the last offence"
    );

    // +600 s after the first offence (592 s after the last): still banned.
    clock.advance(secs(592));
    let r = get_as(&srv, "/ping", who).await;
    assert_eq!((r.code(), r.header("retry-after")), (403, Some("8")));
    // +599 s after the last offence.
    clock.advance(secs(7));
    let r = get_as(&srv, "/ping", who).await;
    assert_eq!((r.code(), r.header("retry-after")), (403, Some("1")));
    clock.advance(millis(999));
    let r = get_as(&srv, "/ping", who).await;
    assert_eq!((r.code(), r.header("retry-after")), (403, Some("1")));
    // +600 s after the last offence: over.
    clock.advance(millis(1));
    let r = get_as(&srv, "/ping", who).await;
    assert_eq!((r.code(), r.text()), (200, "pong"));
    assert!(!fg.gatekeeper().status(ip(who)).await.unwrap().is_banned());
}

#[actix_web::test]
async fn spent_offences_never_trigger_a_ban_again() {
    let clock = FakeClock::new();
    let (srv, fg) = start(&clock, None);
    let who = "10.2.2.1";

    for _ in 0..3 {
        report_as(&srv, who).await;
    }
    assert_eq!(get_as(&srv, "/ping", who).await.code(), 403);
    assert_eq!(fg.gatekeeper().status(ip(who)).await.unwrap().offences, 0);
    clock.advance(secs(600));
    assert_eq!(get_as(&srv, "/ping", who).await.code(), 200);

    // One more offence after the ban: one unspent offence, no ban.
    let r = report_as(&srv, who).await;
    assert_eq!(r.text(), "Recorded { offences: 1 }");
    assert_eq!(get_as(&srv, "/ping", who).await.code(), 200);
    assert_eq!(fg.gatekeeper().status(ip(who)).await.unwrap().offences, 1);
    // A second one still does not ban; a third within the window does.
    let r = report_as(&srv, who).await;
    assert_eq!(r.text(), "Recorded { offences: 2 }");
    assert_eq!(get_as(&srv, "/ping", who).await.code(), 200);
    report_as(&srv, who).await;
    assert_eq!(get_as(&srv, "/ping", who).await.code(), 403);
}

#[actix_web::test]
async fn offences_spread_wider_than_the_window_never_ban() {
    let clock = FakeClock::new();
    let (srv, fg) = start(&clock, None);
    let who = "10.2.3.1";

    // One offence every 6 s: any three span 12 s, more than the 10 s window.
    for n in 0..10u32 {
        let r = report_as(&srv, who).await;
        assert_eq!(r.code(), 200, "report {n}");
        let expected = n.min(1) + 1;
        assert_eq!(r.text(), format!("Recorded {{ offences: {expected} }}"));
        let status = fg.gatekeeper().status(ip(who)).await.unwrap();
        assert_eq!(status.offences, expected, "report {n}: {status:?}");
        assert!(!status.is_banned());
        assert_eq!(get_as(&srv, "/ping", who).await.code(), 200, "report {n}");
        clock.advance(secs(6));
    }
    // Exactly on the window's edge does not count either: offences at t, t+5 s, t+10 s.
    let who = "10.2.3.2";
    for _ in 0..3 {
        report_as(&srv, who).await;
        clock.advance(secs(5));
    }
    assert_eq!(get_as(&srv, "/ping", who).await.code(), 200);
}

#[actix_web::test]
async fn operator_ban_blacklist_unban_and_status_work_for_ips_never_seen() {
    let clock = FakeClock::new();
    let (srv, fg) = start(&clock, Some(Rule::new(100, secs(60))));
    let gk = fg.gatekeeper();

    // Status of a client never seen: nothing.
    let status = gk.status(ip("10.2.4.1")).await.unwrap();
    assert!(!status.is_banned());
    assert_eq!(status.offences, 0);
    assert!(status.windows.is_empty());
    assert_eq!(status.last_seen, None);

    // A timed ban of a client never seen.
    gk.ban(ip("10.2.4.1"), secs(90)).await.unwrap();
    let status = gk.status(ip("10.2.4.1")).await.unwrap();
    assert!(status.is_banned() && !status.is_blacklisted());
    let ban = status.ban.unwrap();
    assert_eq!(ban.reason, BanReason::Operator);
    assert_eq!(ban.until, Some(gk.now() + secs(90)));
    let r = get_as(&srv, "/ping", "10.2.4.1").await;
    assert_eq!((r.code(), r.header("retry-after")), (403, Some("90")));
    assert_eq!(get_as(&srv, "/health", "10.2.4.1").await.code(), 200);
    clock.advance(secs(90));
    assert_eq!(get_as(&srv, "/ping", "10.2.4.1").await.code(), 200);
    assert!(!gk.status(ip("10.2.4.1")).await.unwrap().is_banned());

    // A blacklist of a client never seen: no end, until unbanned.
    gk.blacklist(ip("10.2.4.2")).await.unwrap();
    assert!(gk.status(ip("10.2.4.2")).await.unwrap().is_blacklisted());
    let r = get_as(&srv, "/ping", "10.2.4.2").await;
    assert_eq!((r.code(), r.header("retry-after")), (403, None));
    clock.advance(secs(86_400 * 365));
    assert_eq!(get_as(&srv, "/ping", "10.2.4.2").await.code(), 403);
    assert!(
        gk.unban(ip("10.2.4.2")).await.unwrap(),
        "a ban was in force"
    );
    assert_eq!(get_as(&srv, "/ping", "10.2.4.2").await.code(), 200);
    assert!(!gk.status(ip("10.2.4.2")).await.unwrap().is_banned());
    // Unbanning a client with no ban says so.
    assert!(!gk.unban(ip("10.2.4.3")).await.unwrap());

    // Unban lifts a ban earned by reports, and forgets the offences.
    let who = "10.2.4.4";
    for _ in 0..3 {
        report_as(&srv, who).await;
    }
    assert_eq!(get_as(&srv, "/ping", who).await.code(), 403);
    assert!(gk.unban(ip(who)).await.unwrap());
    assert_eq!(get_as(&srv, "/ping", who).await.code(), 200);

    // A ban replaces a ban in force, shorter or longer.
    gk.ban(ip(who), secs(1000)).await.unwrap();
    gk.ban(ip(who), secs(10)).await.unwrap();
    let r = get_as(&srv, "/ping", who).await;
    assert_eq!((r.code(), r.header("retry-after")), (403, Some("10")));

    // Status reflects counted requests.
    let who = "10.2.4.5";
    assert_eq!(codes_as(&srv, "/ping", who, 3).await, [200, 200, 200]);
    let status = gk.status(ip(who)).await.unwrap();
    let global = status
        .windows
        .iter()
        .find(|w| w.scope == "global")
        .expect("a global window");
    assert_eq!(
        (global.used, global.remaining, global.active),
        (3, 97, true)
    );
    assert_eq!(status.last_seen, Some(gk.now()));
}

#[actix_web::test]
async fn excluded_head_requests_are_neither_counted_nor_limited_but_bans_apply() {
    let clock = FakeClock::new();
    let (srv, fg) = start(&clock, Some(Rule::new(2, secs(60))));
    let who = "10.2.5.1";

    // Many HEADs: all served, none counted.
    for _ in 0..5 {
        assert_eq!(head_as(&srv, "/any", who).await.code(), 200);
        assert_eq!(head_as(&srv, "/specific", who).await.code(), 200);
    }
    let status = fg.gatekeeper().status(ip(who)).await.unwrap();
    assert!(status.windows.iter().all(|w| w.used == 0), "{status:?}");
    assert_eq!(codes_as(&srv, "/any", who, 3).await, [200, 200, 429]);
    // Over the limit: HEAD is still not limited.
    for _ in 0..3 {
        assert_eq!(head_as(&srv, "/any", who).await.code(), 200);
    }
    // The specific rule's quota is also untouched by HEAD requests.
    let who = "10.2.5.2";
    assert_eq!(head_as(&srv, "/specific", who).await.code(), 200);
    assert_eq!(codes_as(&srv, "/specific", who, 2).await, [200, 429]);
    assert_eq!(head_as(&srv, "/specific", who).await.code(), 200);

    // A banned client's HEAD is refused.
    let who = "10.2.5.3";
    fg.gatekeeper().ban(ip(who), secs(60)).await.unwrap();
    let r = head_as(&srv, "/any", who).await;
    assert_eq!((r.code(), r.header("retry-after")), (403, Some("60")));
    assert_eq!(head_as(&srv, "/specific", who).await.code(), 403);
    // Banned by reports, too (made on a bypassed route, which the global rule leaves alone).
    let who = "10.2.5.4";
    for _ in 0..3 {
        assert_eq!(get_as(&srv, "/bypass/report", who).await.code(), 200);
    }
    assert_eq!(head_as(&srv, "/any", who).await.code(), 403);
}

fn clock_now(fg: &Floodgate) -> floodgate::Timestamp {
    fg.gatekeeper().now()
}

#[actix_web::test]
async fn report_client_records_offences_of_a_client_named_by_the_operator() {
    let clock = FakeClock::new();
    let (srv, fg) = start(&clock, None);
    let gk = fg.gatekeeper();
    let who = "10.2.5.1";
    let start = clock_now(&fg);
    assert_eq!(
        gk.report_client(ip(who)).await,
        Some(ReportOutcome::Recorded { offences: 1 })
    );
    clock.advance(secs(2));
    assert_eq!(
        gk.report_client(ip(who)).await,
        Some(ReportOutcome::Recorded { offences: 2 })
    );
    assert_eq!(get_as(&srv, "/ping", who).await.code(), 200);
    // Mixed with a report over HTTP: the same client, the same count.
    let r = report_as(&srv, who).await;
    assert_eq!(
        r.text(),
        format!(
            "{:?}",
            ReportOutcome::Banned {
                until: start + secs(602)
            }
        )
    );
    let r = get_as(&srv, "/ping", who).await;
    assert_eq!((r.code(), r.header("retry-after")), (403, Some("600")));
    // A custom key is a client of its own: its offences count apart.
    let key = ClientKey::custom("user-7");
    assert_eq!(
        gk.report_client(&key).await,
        Some(ReportOutcome::Recorded { offences: 1 })
    );
    assert_eq!(gk.status(key).await.unwrap().offences, 1);
    assert_eq!(gk.status(ip("10.2.5.2")).await.unwrap().offences, 0);
}

#[actix_web::test]
async fn unblacklist_lifts_a_blacklist_and_says_whether_there_was_one() {
    let clock = FakeClock::new();
    let (srv, fg) = start(&clock, None);
    let gk = fg.gatekeeper();
    let who = "10.2.6.1";
    assert!(!gk.unblacklist(ip(who)).await.unwrap(), "nothing to lift");
    gk.blacklist(ip(who)).await.unwrap();
    let r = get_as(&srv, "/ping", who).await;
    assert_eq!((r.code(), r.header("retry-after")), (403, None));
    assert!(gk.status(ip(who)).await.unwrap().is_blacklisted());
    assert!(gk.unblacklist(ip(who)).await.unwrap());
    assert_eq!(get_as(&srv, "/ping", who).await.code(), 200);
    assert!(!gk.unblacklist(ip(who)).await.unwrap(), "lifted already");
    // It lifts a timed ban too (the same operation as unban).
    gk.ban(ip(who), secs(60)).await.unwrap();
    assert!(gk.unblacklist(ip(who)).await.unwrap());
    assert_eq!(get_as(&srv, "/ping", who).await.code(), 200);
}

#[actix_web::test]
async fn report_without_a_ban_rule_records_nothing_and_serves_the_handler() {
    let clock = FakeClock::new();
    let fg = Floodgate::new().clock(clock.clone()).ip_header(IP_HEADER);
    let app_fg = fg.clone();
    let srv = actix_test::start_with(server_config(), move || {
        App::new()
            .wrap(app_fg.clone())
            .service(ping)
            .service(report)
    });
    let who = "10.2.7.1";
    for _ in 0..10 {
        let r = report_as(&srv, who).await;
        assert_eq!((r.code(), r.text()), (200, "not recorded"));
    }
    assert_eq!(fg.gatekeeper().report_client(ip(who)).await, None);
    let status = fg.gatekeeper().status(ip(who)).await.unwrap();
    assert_eq!((status.offences, status.ban), (0, None));
    assert_eq!(get_as(&srv, "/ping", who).await.code(), 200);
}

#[actix_web::test]
async fn report_after_a_store_failure_returns_none_and_never_fails_the_handler() {
    let clock = FakeClock::new();
    // Fail-closed, so that the report route is bypassed to reach its handler at all.
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .store(floodgate_tests::DownStore)
        .store_failure(StoreFailure::Closed)
        .ban_rule(BanRule::new(1, secs(10), secs(600)));
    let app_fg = fg.clone();
    let srv = actix_test::start_with(server_config(), move || {
        App::new().wrap(app_fg.clone()).service(bypass_report)
    });
    let who = "10.2.8.1";
    for _ in 0..3 {
        let r = get_as(&srv, "/bypass/report", who).await;
        assert_eq!((r.code(), r.text()), (200, "not recorded"));
    }
    assert_eq!(fg.gatekeeper().report_client(ip(who)).await, None);
    assert!(fg.gatekeeper().ban(ip(who), secs(1)).await.is_err());
    assert!(fg.gatekeeper().unblacklist(ip(who)).await.is_err());
}

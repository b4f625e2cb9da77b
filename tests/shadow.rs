//! Shadow mode over real HTTP, on the memory, SQLite and Redis stores: every decision is
//! made and counted, a refusal is logged and served, and shadow mode never bans (policy
//! punishments, reports); app-wide, per route (attributes and `RouteRules`) and per target.

use actix_web::{get, web, App, HttpRequest, HttpResponse};
use floodgate::{
    rate_limited, specific, BanRule, ClientStatus, FakeClock, Floodgate, GateKeeper, RouteRules,
    Rule, Target,
};
use floodgate_tests::{codes_as, get_as, logs, on_every_store, secs, server_config, IP_HEADER};

#[get("/ping")]
async fn ping() -> &'static str {
    "pong"
}

#[rate_limited(
    amount = 1,
    time_window = "1m",
    block_limit = 0,
    block_exceed_duration = "forever"
)]
#[get("/policy")]
async fn policy() -> &'static str {
    "policy"
}

#[rate_limited(
    amount = 1,
    time_window = "1m",
    block_limit = 0,
    block_exceed_duration = "forever",
    shadow
)]
#[get("/shadow/policy")]
async fn shadow_policy() -> &'static str {
    "shadow policy"
}

#[specific(rate_limit_rules = [(1, "1m")], shadow)]
#[get("/shadow/rules")]
async fn shadow_rules() -> &'static str {
    "shadow rules"
}

#[specific(rate_limit_rules = [(1, "1m")])]
#[get("/enforced")]
async fn enforced() -> &'static str {
    "enforced"
}

#[get("/report")]
async fn report(req: HttpRequest, gk: GateKeeper) -> HttpResponse {
    gk.report(&req).await;
    HttpResponse::Ok().body("reported")
}

#[specific(rate_limit_rules = [(100, "1m")], shadow)]
#[get("/shadow/report")]
async fn shadow_report(req: HttpRequest, gk: GateKeeper) -> HttpResponse {
    gk.report(&req).await;
    HttpResponse::Ok().body("reported")
}

async fn status(fg: &Floodgate, ip: &str) -> ClientStatus {
    let ip: std::net::IpAddr = ip.parse().unwrap();
    fg.gatekeeper().status(ip).await.unwrap()
}

fn window<'a>(s: &'a ClientStatus, limit: &str) -> &'a floodgate::WindowStatus {
    s.windows
        .iter()
        .find(|w| w.limit == limit)
        .unwrap_or_else(|| panic!("no window {limit}: {s:?}"))
}

#[actix_web::test]
async fn app_wide_shadow_serves_what_it_would_refuse_counts_as_usual_and_never_bans() {
    logs::capture();
    for (store, base) in on_every_store("shadow-app").await {
        let clock = FakeClock::new();
        let fg = base
            .clock(clock.clone())
            .ip_header(IP_HEADER)
            .shadow(true)
            .rate_limit_rules([Rule::new(2, secs(60))])
            .ban_rule(BanRule::new(1, secs(10), secs(600)));
        let app = fg.clone();
        let srv = actix_test::start_with(server_config(), move || {
            App::new()
                .wrap(app.clone())
                .service(ping)
                .service(policy)
                .service(report)
        });

        // A global rule of 2 per minute: five requests served, two counted (a request the
        // rule refuses consumes nothing, as when enforced).
        assert_eq!(
            codes_as(&srv, "/ping", "10.0.0.1", 5).await,
            [200; 5],
            "{store}"
        );
        let a = status(&fg, "10.0.0.1").await;
        let global = window(&a, "2/1m");
        assert_eq!((global.used, global.remaining), (2, 0), "{store}: {a:?}");
        // Clients are not shown limits that are not enforced.
        let res = get_as(&srv, "/ping", "10.0.0.1").await;
        assert_eq!(res.header("ratelimit"), None, "{store}");
        let lines = logs::records();
        assert!(
            lines
                .iter()
                .any(|(_, _, l)| l.contains("shadow: 10.0.0.1 would have been limited by 2/1m")),
            "{store}: {lines:?}"
        );

        // A policy whose first block blacklists: blocked (in the status) but never banned.
        assert_eq!(
            codes_as(&srv, "/policy", "10.0.0.2", 4).await,
            [200; 4],
            "{store}"
        );
        let b = status(&fg, "10.0.0.2").await;
        let p = window(&b, "1/1m");
        assert!(
            p.blocked_until.is_some() && p.block_count >= 1,
            "{store}: {b:?}"
        );
        assert!(!b.is_banned(), "{store}: {b:?}");

        // Reports reach the ban rule (one offence bans) but never ban.
        assert_eq!(
            codes_as(&srv, "/report", "10.0.0.3", 3).await,
            [200; 3],
            "{store}"
        );
        assert!(!status(&fg, "10.0.0.3").await.is_banned(), "{store}");
        let lines = logs::records();
        assert!(
            lines
                .iter()
                .any(|(_, _, l)| l.contains("shadow: 10.0.0.3 would have been banned for 600s")),
            "{store}: {lines:?}"
        );
    }
}

#[actix_web::test]
async fn shadow_routes_observe_their_own_rules_while_global_rules_and_bans_enforce() {
    for (store, base) in on_every_store("shadow-route").await {
        let clock = FakeClock::new();
        let fg = base
            .clock(clock.clone())
            .ip_header(IP_HEADER)
            .rate_limit_rules([Rule::new(4, secs(60))])
            .ban_rule(BanRule::new(1, secs(10), secs(600)));
        let app = fg.clone();
        let srv = actix_test::start_with(server_config(), move || {
            App::new()
                .wrap(app.clone())
                .service(shadow_policy)
                .service(shadow_rules)
                .service(enforced)
                .service(report)
                .service(shadow_report)
                .service(
                    web::resource("/built/shadow")
                        .wrap(
                            RouteRules::new("built")
                                .specific([Rule::new(1, secs(60))])
                                .shadow(true),
                        )
                        .route(web::get().to(HttpResponse::Ok)),
                )
        });

        // The route's policy would blacklist at its first block: served, never banned, so the
        // client's next request elsewhere is judged by that route's own (enforced) rule.
        assert_eq!(
            codes_as(&srv, "/shadow/policy", "10.0.1.1", 3).await,
            [200; 3],
            "{store}"
        );
        let a = status(&fg, "10.0.1.1").await;
        assert!(!a.is_banned(), "{store}: {a:?}");
        assert!(window(&a, "1/1m").blocked_until.is_some(), "{store}: {a:?}");
        assert_eq!(
            codes_as(&srv, "/enforced", "10.0.1.1", 2).await,
            [200, 429],
            "{store}"
        );

        // A shadow route's own rule (1 per minute) serves; the global rule (4 per minute)
        // still refuses on it.
        assert_eq!(
            codes_as(&srv, "/shadow/rules", "10.0.1.2", 5).await,
            [200, 200, 200, 200, 429],
            "{store}"
        );
        assert_eq!(
            codes_as(&srv, "/built/shadow", "10.0.1.3", 5).await,
            [200, 200, 200, 200, 429],
            "{store}"
        );

        // An offence reported on a shadow route never bans; on another route it does.
        assert_eq!(get_as(&srv, "/shadow/report", "10.0.1.4").await.code(), 200);
        assert!(!status(&fg, "10.0.1.4").await.is_banned(), "{store}");
        assert_eq!(get_as(&srv, "/report", "10.0.1.4").await.code(), 200);
        assert!(status(&fg, "10.0.1.4").await.is_banned(), "{store}");
        assert_eq!(
            get_as(&srv, "/shadow/rules", "10.0.1.4").await.code(),
            403,
            "{store}: bans in force still apply"
        );
    }
}

#[actix_web::test]
async fn shadow_targets_observe_their_rules_and_denials_while_others_enforce() {
    for (store, base) in on_every_store("shadow-target").await {
        let clock = FakeClock::new();
        let fg = base
            .clock(clock.clone())
            .ip_header(IP_HEADER)
            .target(
                Target::new("watched")
                    .path("/ping")
                    .limit([Rule::new(1, secs(60))])
                    .shadow(),
            )
            .target(Target::new("would-deny").header("x-bot").deny().shadow())
            .target(
                Target::new("enforced")
                    .header("x-limited")
                    .limit([Rule::new(2, secs(60))]),
            );
        let app = fg.clone();
        let srv = actix_test::start_with(server_config(), move || {
            App::new().wrap(app.clone()).service(ping)
        });
        assert_eq!(
            codes_as(&srv, "/ping", "10.0.2.1", 3).await,
            [200; 3],
            "{store}"
        );
        let a = status(&fg, "10.0.2.1").await;
        assert_eq!(window(&a, "1/1m").used, 1, "{store}: {a:?}");

        let bot = |ip: &'static str| {
            let req = srv.get("/ping").insert_header(("x-bot", "1"));
            floodgate_tests::send(floodgate_tests::from_ip(req, ip))
        };
        assert_eq!(bot("10.0.2.2").await.code(), 200, "{store}");

        // A client matching both a shadow target and an enforcing one is limited by the latter.
        let mut codes = Vec::new();
        for _ in 0..3 {
            let req = srv.get("/ping").insert_header(("x-limited", "1"));
            codes.push(
                floodgate_tests::send(floodgate_tests::from_ip(req, "10.0.2.3"))
                    .await
                    .code(),
            );
        }
        assert_eq!(codes, [200, 200, 429], "{store}");
    }
}

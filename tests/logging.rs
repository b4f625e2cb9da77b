//! What floodgate logs, at which level and under which target (`Floodgate::log_target`), for
//! a refusal, a block, a ban, a report and a store failure.

use actix_web::{get, App, HttpRequest};
use floodgate::{rate_limited, BanRule, ClientKey, FakeClock, Floodgate, GateKeeper, Rule};
use floodgate_tests::logs::{capture, records};
use floodgate_tests::{get_as, secs, server_config, IP_HEADER};

/// The records under `target` whose message contains `text`, with their levels.
fn levels(target: &str, text: &str) -> Vec<log::Level> {
    records()
        .into_iter()
        .filter(|(_, t, m)| t == target && m.contains(text))
        .map(|(l, _, _)| l)
        .collect()
}

#[rate_limited(
    amount = 1,
    time_window = "1m",
    block_limit = 1,
    block_exceed_duration = "1h"
)]
#[get("/policy")]
async fn policy() -> &'static str {
    "policy"
}

#[get("/plain")]
async fn plain() -> &'static str {
    "plain"
}

#[get("/login")]
async fn login(req: HttpRequest, gk: GateKeeper) -> &'static str {
    gk.report(&req).await;
    "bad password"
}

#[actix_web::test]
async fn decisions_are_logged_under_the_apps_target_at_their_levels() {
    capture();
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .log_target("shop::limits")
        .rate_limit_rules([Rule::new(1, secs(60))])
        .ban_rule(BanRule::new(1, secs(60), secs(600)))
        .policies_use_global_rules(false);
    let srv = actix_test::start_with(server_config(), {
        let fg = fg.clone();
        move || {
            App::new()
                .wrap(fg.clone())
                .service(policy)
                .service(plain)
                .service(login)
        }
    });
    // A refusal by a rule: debug.
    assert_eq!(get_as(&srv, "/plain", "1.1.1.1").await.code(), 200);
    assert_eq!(get_as(&srv, "/plain", "1.1.1.1").await.code(), 429);
    assert_eq!(
        levels("shop::limits", "1.1.1.1 limited by 1/1m"),
        [log::Level::Debug]
    );
    // A block: info; the punishment (the second block): warn.
    assert_eq!(get_as(&srv, "/policy", "2.2.2.2").await.code(), 200);
    assert_eq!(get_as(&srv, "/policy", "2.2.2.2").await.code(), 429);
    assert_eq!(
        levels("shop::limits", "2.2.2.2 blocked for 60s"),
        [log::Level::Info]
    );
    clock.advance(secs(60));
    assert_eq!(get_as(&srv, "/policy", "2.2.2.2").await.code(), 200);
    assert_eq!(get_as(&srv, "/policy", "2.2.2.2").await.code(), 403);
    assert_eq!(
        levels("shop::limits", "2.2.2.2 banned until"),
        [log::Level::Warn]
    );
    // A request refused while banned: debug.
    assert_eq!(get_as(&srv, "/plain", "2.2.2.2").await.code(), 403);
    assert_eq!(
        levels("shop::limits", "2.2.2.2 refused: banned"),
        [log::Level::Debug]
    );
    // A ban by report: warn.
    assert_eq!(get_as(&srv, "/login", "3.3.3.3").await.code(), 200);
    assert_eq!(
        levels("shop::limits", "3.3.3.3 banned until"),
        [log::Level::Warn]
    );
    // An operator's ban: warn; an unban: info.
    let gk = fg.gatekeeper();
    gk.ban(ClientKey::custom("user:7"), secs(60)).await.unwrap();
    gk.unban(ClientKey::custom("user:7")).await.unwrap();
    assert_eq!(
        levels("shop::limits", "user:7 banned by operator"),
        [log::Level::Warn]
    );
    assert_eq!(
        levels("shop::limits", "user:7 unbanned"),
        [log::Level::Info]
    );
    // Nothing of these went to another target.
    assert!(levels("floodgate", "1.1.1.1").is_empty());
}

#[actix_web::test]
async fn a_store_failure_is_logged_at_warn_under_the_apps_target() {
    capture();
    let fg = Floodgate::new()
        .clock(FakeClock::new())
        .ip_header(IP_HEADER)
        .log_target("shop::store")
        .store(floodgate_tests::DownStore)
        .rate_limit_rules([Rule::new(1, secs(60))]);
    let srv = actix_test::start_with(server_config(), {
        let fg = fg.clone();
        move || App::new().wrap(fg.clone()).service(plain)
    });
    // Fail-open (the default): served, and the failure logged once a minute at warn.
    for _ in 0..3 {
        assert_eq!(get_as(&srv, "/plain", "4.4.4.4").await.code(), 200);
    }
    let warned = levels("shop::store", "store failed during a request");
    assert_eq!(warned, [log::Level::Warn]);
    let line = records()
        .iter()
        .find(|(_, t, m)| t == "shop::store" && m.contains("store failed"))
        .map(|(_, _, m)| m.clone())
        .unwrap();
    assert!(
        line.contains("the test store is down") && line.contains("served unlimited"),
        "{line}"
    );
}

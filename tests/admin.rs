//! The admin API over HTTP: the token and the allow list, bans made by reports listed and
//! lifted, operator bans, pagination, bad input, and admin requests never counted, limited
//! or refused by floodgate itself. Time is a fake clock.

use actix_web::{get, App, HttpRequest, HttpResponse};
use floodgate::{BanRule, FakeClock, Floodgate, GateKeeper, IpList, Rule, Timestamp};
use floodgate_tests::{
    app_starts, from_ip, get_as, logs, secs, send, send_body, server_config, Resp, IP_HEADER,
};

const TOKEN: &str = "s3cret-token-0123456789abcdef";
const ADMIN: &str = "/_floodgate";
/// 2026-12-06T01:37:51Z
const START: Timestamp = Timestamp::from_millis(1_796_521_071_000);

#[get("/ping")]
async fn ping() -> &'static str {
    "pong"
}

/// Reports one offence of the caller, as a failed login does.
#[get("/report")]
async fn report(req: HttpRequest, gk: GateKeeper) -> HttpResponse {
    gk.report(&req).await;
    HttpResponse::Ok().finish()
}

fn floodgate(clock: &FakeClock) -> Floodgate {
    Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .ban_rule(BanRule::new(3, secs(10), secs(600)))
        .rate_limit_rules([Rule::new(5, secs(60))])
}

fn start_with(fg: Floodgate, allow: Option<IpList>) -> actix_test::TestServer {
    actix_test::start_with(server_config(), move || {
        let mut admin = fg.admin(ADMIN).token(TOKEN);
        if let Some(list) = &allow {
            admin = admin.allow(list.clone());
        }
        App::new()
            .wrap(fg.clone())
            .service(ping)
            .service(report)
            .service(admin)
    })
}

fn start(clock: &FakeClock) -> actix_test::TestServer {
    start_with(floodgate(clock), None)
}

fn url(path: &str) -> String {
    format!("{ADMIN}{path}")
}

async fn admin_get(srv: &actix_test::TestServer, path: &str, ip: &str) -> Resp {
    let req = from_ip(srv.get(url(path)), ip).bearer_auth(TOKEN);
    send(req).await
}

async fn admin_put(srv: &actix_test::TestServer, path: &str, ip: &str, body: &str) -> Resp {
    let req = from_ip(srv.put(url(path)), ip)
        .bearer_auth(TOKEN)
        .insert_header(("content-type", "application/json"));
    send_body(req, body.to_owned()).await
}

async fn admin_delete(srv: &actix_test::TestServer, path: &str, ip: &str) -> Resp {
    send(from_ip(srv.delete(url(path)), ip).bearer_auth(TOKEN)).await
}

fn assert_problem(r: &Resp, code: u16) {
    assert_eq!(r.code(), code, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["status"], code);
}

#[actix_web::test]
async fn requests_without_the_token_get_401_problem_json() {
    let clock = FakeClock::starting_at(START);
    let srv = start(&clock);
    let op = "192.0.2.5";
    let none = send(from_ip(srv.get(url("/api/bans")), op)).await;
    assert_problem(&none, 401);
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"floodgate\"")
    );
    for wrong in [
        "s3cret-token-0123456789abcdeX",
        "s3cret-token-0123456789abcde",
        "s3cret-token-0123456789abcdef0",
        "",
    ] {
        let r = send(from_ip(srv.get(url("/api/bans")), op).bearer_auth(wrong)).await;
        assert_problem(&r, 401);
    }
    let basic =
        send(from_ip(srv.get(url("/api/bans")), op).insert_header(("authorization", TOKEN))).await;
    assert_problem(&basic, 401);
    let ok = admin_get(&srv, "/api/bans", op).await;
    assert_eq!(ok.code(), 200);
    assert_eq!(ok.json(), serde_json::json!({"bans": [], "next": null}));
}

#[actix_web::test]
async fn a_ban_made_by_reports_is_listed_then_lifted_and_the_client_served_again() {
    logs::capture();
    let clock = FakeClock::starting_at(START);
    let srv = start(&clock);
    let (op, bad) = ("192.0.2.5", "203.0.113.9");
    for _ in 0..3 {
        get_as(&srv, "/report", bad).await;
        clock.advance(secs(1));
    }
    assert_eq!(get_as(&srv, "/ping", bad).await.code(), 403);

    let listed = admin_get(&srv, "/api/bans", op).await.json();
    assert_eq!(
        listed,
        serde_json::json!({"bans": [{
            "client": bad,
            "reason": "report",
            "since": "2026-12-06T01:37:53Z",
            "until": "2026-12-06T01:47:53Z",
        }], "next": null})
    );
    let status = admin_get(&srv, &format!("/api/clients/{bad}"), op)
        .await
        .json();
    assert_eq!(status["ban"]["reason"], "report");
    assert_eq!(status["ban"]["until"], "2026-12-06T01:47:53Z");

    let lifted = admin_delete(&srv, &format!("/api/clients/{bad}/ban"), op).await;
    assert_eq!(lifted.json(), serde_json::json!({"was_banned": true}));
    assert_eq!(get_as(&srv, "/ping", bad).await.code(), 200);
    let again = admin_delete(&srv, &format!("/api/clients/{bad}/ban"), op).await;
    assert_eq!(again.json(), serde_json::json!({"was_banned": false}));
    assert!(
        logs::records()
            .iter()
            .any(|(level, _, msg)| *level == log::Level::Info
                && msg == &format!("floodgate admin: unban of {bad} by {op}")),
        "the unban is logged at info with the operator's address"
    );
}

#[actix_web::test]
async fn operators_ban_and_blacklist_and_listings_go_page_by_page() {
    let clock = FakeClock::starting_at(START);
    let srv = start(&clock);
    let op = "192.0.2.5";
    let timed = admin_put(
        &srv,
        "/api/clients/198.51.100.1/ban",
        op,
        r#"{"for": "1h"}"#,
    )
    .await;
    assert_eq!(timed.code(), 200, "{}", timed.text());
    assert_eq!(timed.json()["ban"]["until"], "2026-12-06T02:37:51Z");
    let forever = admin_put(
        &srv,
        "/api/clients/198.51.100.2/ban",
        op,
        r#"{"forever": true}"#,
    )
    .await;
    assert_eq!(forever.json()["ban"]["reason"], "blacklist");
    // A custom key, percent-encoded, with a slash in it.
    let custom = admin_put(&srv, "/api/clients/user%2F7/ban", op, r#"{"for": "2h"}"#).await;
    assert_eq!(custom.json()["client"], "user/7");
    assert_eq!(get_as(&srv, "/ping", "198.51.100.1").await.code(), 403);
    assert_eq!(get_as(&srv, "/ping", "198.51.100.2").await.code(), 403);

    let mut seen = Vec::new();
    let mut path = "/api/bans?limit=1".to_owned();
    loop {
        let page = admin_get(&srv, &path, op).await.json();
        let bans = page["bans"].as_array().unwrap();
        assert_eq!(bans.len(), 1);
        seen.push((
            bans[0]["client"].clone(),
            bans[0]["reason"].clone(),
            bans[0]["until"].clone(),
        ));
        match page["next"].as_str() {
            Some(next) => {
                let next: String = next
                    .bytes()
                    .map(|b| match b {
                        b' ' => "%20".to_owned(),
                        b'/' => "%2F".to_owned(),
                        b'%' => "%25".to_owned(),
                        b => (b as char).to_string(),
                    })
                    .collect();
                path = format!("/api/bans?limit=1&cursor={next}");
            }
            None => break,
        }
    }
    assert_eq!(
        seen,
        vec![
            (
                "198.51.100.1".into(),
                "operator".into(),
                "2026-12-06T02:37:51Z".into()
            ),
            (
                "user/7".into(),
                "operator".into(),
                "2026-12-06T03:37:51Z".into()
            ),
            (
                "198.51.100.2".into(),
                "blacklist".into(),
                serde_json::Value::Null
            ),
        ]
    );
    clock.advance(secs(3_600));
    let later = admin_get(&srv, "/api/bans", op).await.json();
    assert_eq!(
        later["bans"].as_array().unwrap().len(),
        2,
        "the ended ban is gone"
    );
}

#[actix_web::test]
async fn bad_input_gets_400_problem_json() {
    let clock = FakeClock::starting_at(START);
    let srv = start(&clock);
    let op = "192.0.2.5";
    for path in [
        "/api/bans?limit=0",
        "/api/bans?limit=100000",
        "/api/bans?limit=x",
        "/api/bans?cursor=nonsense",
        "/api/clients/%FF%FE",
        "/api/clients/a%0Ab",
    ] {
        assert_problem(&admin_get(&srv, path, op).await, 400);
    }
    for body in [
        "",
        "[]",
        "{}",
        r#"{"for": "soon"}"#,
        r#"{"for": "0s"}"#,
        r#"{"forever": false}"#,
        r#"{"for": "1h", "forever": true}"#,
    ] {
        let r = admin_put(&srv, "/api/clients/198.51.100.1/ban", op, body).await;
        assert_problem(&r, 400);
    }
    let long = "k".repeat(1025);
    assert_problem(
        &admin_get(&srv, &format!("/api/clients/{long}"), op).await,
        400,
    );
    assert_eq!(
        get_as(&srv, "/ping", "198.51.100.1").await.code(),
        200,
        "nothing was banned"
    );
}

#[actix_web::test]
async fn admin_requests_are_never_counted_limited_or_refused_by_floodgate() {
    let clock = FakeClock::starting_at(START);
    let fg = floodgate(&clock);
    let srv = start_with(fg.clone(), None);
    let op = "192.0.2.5";
    // More admin requests than the global rule's 5 a minute, with and without the token.
    for _ in 0..6 {
        assert_eq!(admin_get(&srv, "/api/health", op).await.code(), 200);
        assert_eq!(
            send(from_ip(srv.get(url("/api/health")), op)).await.code(),
            401
        );
    }
    assert_eq!(get_as(&srv, "/ping", op).await.code(), 200, "not counted");
    // The operator's own address blacklisted: the API still answers, and can lift it.
    fg.gatekeeper()
        .blacklist(op.parse::<std::net::IpAddr>().unwrap())
        .await
        .unwrap();
    assert_eq!(get_as(&srv, "/ping", op).await.code(), 403);
    let r = admin_delete(&srv, &format!("/api/clients/{op}/ban"), op).await;
    assert_eq!(r.json(), serde_json::json!({"was_banned": true}));
    assert_eq!(get_as(&srv, "/ping", op).await.code(), 200);
}

#[actix_web::test]
async fn the_allow_list_refuses_other_addresses_with_403() {
    let clock = FakeClock::starting_at(START);
    let allow = IpList::new("operators").entries(["192.0.2.0/24"]).unwrap();
    let srv = start_with(floodgate(&clock), Some(allow));
    assert_problem(&admin_get(&srv, "/api/bans", "198.51.100.7").await, 403);
    assert_eq!(admin_get(&srv, "/api/bans", "192.0.2.77").await.code(), 200);
}

#[actix_web::test]
async fn an_admin_api_without_a_long_token_stops_the_app() {
    let fg = Floodgate::new();
    assert!(!app_starts(App::new().wrap(fg.clone()).service(fg.admin(ADMIN))).await);
    assert!(!app_starts(App::new().service(fg.admin(ADMIN).token(""))).await);
    assert!(!app_starts(App::new().service(fg.admin(ADMIN).token("short"))).await);
    assert!(!app_starts(App::new().service(fg.admin(ADMIN).token(format!("{TOKEN} x")))).await);
    assert!(
        app_starts(
            App::new()
                .wrap(fg.clone())
                .service(fg.admin(ADMIN).token(TOKEN))
        )
        .await
    );
}

#[actix_web::test]
async fn health_and_list_reload_answer() {
    let clock = FakeClock::starting_at(START);
    let srv = start(&clock);
    let op = "192.0.2.5";
    assert_eq!(
        admin_get(&srv, "/api/health", op).await.json(),
        serde_json::json!({"store": "ok"})
    );
    let r = send(from_ip(srv.post(url("/api/lists/reload")), op).bearer_auth(TOKEN)).await;
    assert_eq!(r.json(), serde_json::json!({"reloaded": 0}));
}

#[actix_web::test]
async fn top_offenders_count_refusals_and_reports_but_not_allowed_requests() {
    let clock = FakeClock::starting_at(START);
    let srv = start(&clock);
    let op = "192.0.2.5";
    // 8 requests against a rule of 5 a minute: 3 refusals.
    let codes: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(get_as(&srv, "/ping", "198.51.100.20").await.code());
        }
        v
    };
    assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429, 429]);
    get_as(&srv, "/report", "198.51.100.21").await;
    for _ in 0..4 {
        get_as(&srv, "/ping", "198.51.100.22").await; // allowed only: not an offender
    }
    let top = admin_get(&srv, "/api/top", op).await.json();
    assert_eq!(
        top,
        serde_json::json!({"clients": [
            {"client": "198.51.100.20", "refusals": 3, "reports": 0},
            {"client": "198.51.100.21", "refusals": 0, "reports": 1},
        ]})
    );
    assert_eq!(
        admin_get(&srv, "/api/top?limit=1", op).await.json()["clients"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_problem(&admin_get(&srv, "/api/top?limit=0", op).await, 400);
    // Twenty minutes on, the window has passed.
    clock.advance(secs(20 * 60 + 1));
    assert_eq!(
        admin_get(&srv, "/api/top", op).await.json(),
        serde_json::json!({"clients": []})
    );
}

#[actix_web::test]
async fn an_operators_mistyped_path_is_a_404_never_reported_as_a_probe() {
    let clock = FakeClock::starting_at(START);
    let fg = floodgate(&clock)
        .probe_ban(floodgate::ProbeBan::new(["/wp-login.php"]).not_found_reports(true));
    let srv = start_with(fg, None);
    let op = "192.0.2.5";
    for _ in 0..4 {
        assert_problem(&admin_get(&srv, "/api/nope", op).await, 404);
    }
    assert_eq!(
        get_as(&srv, "/ping", op).await.code(),
        200,
        "3 offences would have banned"
    );
    // Unrouted 404s elsewhere are still reported: the rule bans at the third.
    for _ in 0..3 {
        get_as(&srv, "/nope", "198.51.100.40").await;
    }
    assert_eq!(get_as(&srv, "/ping", "198.51.100.40").await.code(), 403);
}

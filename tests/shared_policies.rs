//! Shared policies (SPEC 10) over real HTTP: routes naming one registered policy share one
//! window, one block count and one punishment per client, in every embedded store; and the
//! policy's `request_data_check` exempts a request from every count.

use std::time::Duration;

use actix_web::{get, web, App, HttpRequest, HttpResponse};
use floodgate::{
    rate_limited, specific, Durability, FakeClock, Floodgate, Policy, RouteRules, Rule, SqliteStore,
};
use floodgate_tests::{app_starts, get_as, secs, server_config, IP_HEADER};

#[rate_limited(policy = "api")]
#[get("/a")]
async fn a() -> &'static str {
    "a"
}

#[rate_limited(policy = "api")]
#[get("/b")]
async fn b() -> &'static str {
    "b"
}

#[rate_limited(policy = "other")]
#[get("/other")]
async fn other() -> &'static str {
    "other"
}

fn start(fg: &Floodgate) -> actix_test::TestServer {
    let fg = fg.clone();
    actix_test::start_with(server_config(), move || {
        App::new()
            .wrap(fg.clone())
            .service(a)
            .service(b)
            .service(other)
            .service(
                web::resource("/c")
                    .wrap(RouteRules::new("c").shared_policy("api"))
                    .to(HttpResponse::Ok),
            )
    })
}

/// 3 requests a minute across the routes naming "api"; a block lasts the window; the second
/// block bans for an hour.
fn floodgate(clock: &FakeClock) -> Floodgate {
    Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .policy(
            "api",
            Policy::new(3, secs(60))
                .block_limit(1)
                .block_exceed_duration(Some(secs(3600))),
        )
        .policy("other", Policy::new(1, secs(60)))
}

async fn walk(fg: Floodgate, clock: &FakeClock, store: &str) {
    let srv = start(&fg);
    let me = "1.2.3.4";
    // One window across three routes: a, b, c, then the fourth request is refused on any.
    assert_eq!(get_as(&srv, "/a", me).await.code(), 200, "{store}");
    assert_eq!(get_as(&srv, "/b", me).await.code(), 200, "{store}");
    assert_eq!(get_as(&srv, "/c", me).await.code(), 200, "{store}");
    let blocked = get_as(&srv, "/a", me).await;
    assert_eq!(blocked.code(), 429, "{store}");
    assert_eq!(blocked.header("retry-after"), Some("60"), "{store}");
    // The block holds on every route of the policy, and not on a route of another policy.
    assert_eq!(get_as(&srv, "/b", me).await.code(), 429, "{store}");
    assert_eq!(get_as(&srv, "/c", me).await.code(), 429, "{store}");
    assert_eq!(get_as(&srv, "/other", me).await.code(), 200, "{store}");
    // Another client has its own window.
    assert_eq!(get_as(&srv, "/c", "5.6.7.8").await.code(), 200, "{store}");

    // One block count: the second block, on another route, is the punishment.
    clock.advance(secs(60));
    for path in ["/c", "/b", "/a"] {
        assert_eq!(get_as(&srv, path, me).await.code(), 200, "{store}: {path}");
    }
    let banned = get_as(&srv, "/b", me).await;
    assert_eq!(banned.code(), 403, "{store}");
    assert_eq!(banned.header("retry-after"), Some("3600"), "{store}");
    // One punishment: refused on every route of the policy, and on any other limited route.
    for path in ["/a", "/c", "/other"] {
        assert_eq!(get_as(&srv, path, me).await.code(), 403, "{store}: {path}");
    }
    let status = fg
        .gatekeeper()
        .status(me.parse::<std::net::IpAddr>().unwrap())
        .await
        .unwrap();
    let shared: Vec<_> = status
        .windows
        .iter()
        .filter(|w| w.scope == "shared policy api")
        .collect();
    assert_eq!(shared.len(), 1, "{store}: {status:?}");
    clock.advance(secs(3600));
    assert_eq!(get_as(&srv, "/c", me).await.code(), 200, "{store}");
}

#[actix_web::test]
async fn three_routes_share_one_window_block_count_and_punishment_in_memory() {
    let clock = FakeClock::new();
    walk(floodgate(&clock), &clock, "memory").await;
}

#[actix_web::test]
async fn three_routes_share_one_window_block_count_and_punishment_in_sqlite() {
    for durability in [Durability::Normal, Durability::Batched] {
        let dir = std::env::temp_dir().join(format!(
            "floodgate-shared-policies-{}-{durability:?}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::builder(dir.join("ip-data.db"))
            .durability(durability)
            .open()
            .unwrap();
        let clock = FakeClock::new();
        walk(
            floodgate(&clock).store(store),
            &clock,
            &format!("{durability:?}"),
        )
        .await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[actix_web::test]
async fn a_route_naming_an_unregistered_policy_stops_the_app() {
    let fg = Floodgate::new().policy("other", Policy::new(1, secs(60)));
    let err_app = App::new().wrap(fg.clone()).service(a);
    assert!(!app_starts(err_app).await);
    let err_app = App::new().wrap(fg.clone()).service(
        web::resource("/c")
            .wrap(RouteRules::new("c").shared_policy("missing"))
            .to(HttpResponse::Ok),
    );
    assert!(!app_starts(err_app).await);
    let ok_app = App::new().wrap(fg.clone()).service(other);
    assert!(app_starts(ok_app).await);
    // Registered twice: a mistake too.
    let twice = Floodgate::new()
        .policy("api", Policy::new(1, secs(60)))
        .policy("api", Policy::new(2, secs(60)));
    assert_eq!(twice.validate().unwrap_err().field(), "policy");
    // A shared policy that cannot work is named.
    let bad = Floodgate::new().policy("api", Policy::new(0, secs(60)));
    assert_eq!(bad.validate().unwrap_err().field(), "policy api");
}

// ---- request_data_check: served without being counted, anywhere ----

fn internal(req: &HttpRequest) -> bool {
    req.headers().contains_key("x-internal")
}

#[rate_limited(amount = 2, time_window = "1m", request_data_check = internal)]
#[specific(rate_limit_rules = [(3, "1m")])]
#[get("/checked")]
async fn checked() -> &'static str {
    "checked"
}

#[rate_limited]
#[get("/default")]
async fn default_policy_route() -> &'static str {
    "default"
}

fn start_checked(fg: &Floodgate) -> actix_test::TestServer {
    let fg = fg.clone();
    actix_test::start_with(server_config(), move || {
        App::new()
            .wrap(fg.clone())
            .service(checked)
            .service(default_policy_route)
            .service(
                web::resource("/checked-rr")
                    .wrap(
                        RouteRules::new("checked-rr")
                            .specific([Rule::new(3, secs(60))])
                            .policy(Policy::new(2, secs(60)).request_data_check(internal)),
                    )
                    .to(HttpResponse::Ok),
            )
            .service(
                web::resource("/default-rr")
                    .wrap(RouteRules::new("default-rr").default_policy())
                    .to(HttpResponse::Ok),
            )
    })
}

async fn internal_get(srv: &actix_test::TestServer, path: &str, client: &str) -> u16 {
    let req = srv
        .get(path)
        .insert_header((IP_HEADER, client))
        .insert_header(("x-internal", "1"));
    floodgate_tests::send(req).await.code()
}

#[actix_web::test]
async fn exempt_requests_are_counted_nowhere() {
    let clock = FakeClock::new();
    // Global 4/min, the route's specific 3/min, its policy 2/min.
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .rate_limit_rules([Rule::new(4, secs(60))]);
    let srv = start_checked(&fg);
    for path in ["/checked", "/checked-rr"] {
        let client = if path == "/checked" {
            "9.9.9.1"
        } else {
            "9.9.9.2"
        };
        // Ten exempt requests: all served, and none counted in any rule.
        for _ in 0..10 {
            assert_eq!(internal_get(&srv, path, client).await, 200, "{path}");
        }
        let status = fg
            .gatekeeper()
            .status(client.parse::<std::net::IpAddr>().unwrap())
            .await
            .unwrap();
        assert!(
            status.windows.iter().all(|w| w.used == 0),
            "{path}: {status:?}"
        );
        // Then the ordinary quota is whole: 2 by the policy.
        assert_eq!(get_as(&srv, path, client).await.code(), 200, "{path}");
        assert_eq!(get_as(&srv, path, client).await.code(), 200, "{path}");
        assert_eq!(get_as(&srv, path, client).await.code(), 429, "{path}");
    }
}

#[actix_web::test]
async fn the_default_policys_request_data_check_applies() {
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .default_policy(Policy::new(1, secs(60)).request_data_check(internal));
    let srv = start_checked(&fg);
    for (path, client) in [("/default", "8.8.8.1"), ("/default-rr", "8.8.8.2")] {
        for _ in 0..5 {
            assert_eq!(internal_get(&srv, path, client).await, 200, "{path}");
        }
        assert_eq!(get_as(&srv, path, client).await.code(), 200, "{path}");
        assert_eq!(get_as(&srv, path, client).await.code(), 429, "{path}");
    }
}

#[actix_web::test]
async fn a_routes_limits_show_in_a_status_before_its_first_request() {
    let dir = std::env::temp_dir().join(format!("floodgate-status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ip-data.db");
    let client = "4.4.4.4".parse::<std::net::IpAddr>().unwrap();
    let clock = FakeClock::new();
    {
        let fg = floodgate(&clock).store(SqliteStore::open(&path).unwrap());
        let srv = start(&fg);
        assert_eq!(get_as(&srv, "/a", "4.4.4.4").await.code(), 200);
        assert_eq!(get_as(&srv, "/c", "4.4.4.4").await.code(), 200);
        srv.stop().await;
    }
    // A restart: no request has reached /a or /c since, yet the status knows their limit.
    let fg = floodgate(&clock).store(SqliteStore::open(&path).unwrap());
    let srv = start(&fg);
    // Another client's request on another route: the server's workers are up.
    assert_eq!(get_as(&srv, "/other", "7.7.7.7").await.code(), 200);
    let status = fg.gatekeeper().status(client).await.unwrap();
    let window = status
        .windows
        .iter()
        .find(|w| w.scope == "shared policy api")
        .unwrap_or_else(|| panic!("{status:?}"));
    assert_eq!(
        (window.limit.as_str(), window.used),
        ("3/1m", 2),
        "{status:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = Duration::ZERO;
}

//! `Duration::MAX` in every setting that takes a duration, over real HTTP (2 workers, the
//! SQLite store in a temp dir, fail-closed so that a store failure would show as 503): every
//! request gets its right status, never a 500, and a wait that saturates at the end of time
//! is announced as such in `Retry-After`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse};
use floodgate::{
    Adaptive, BanRule, Clock, Durability, FakeClock, Floodgate, GateKeeper, Grace, Policy,
    Punishment, RouteRules, Rule, SqliteStore, StoreFailure, Timestamp,
};
use floodgate_tests::{get_as, server_config, Resp};

const MAX: Duration = Duration::MAX;
const END: u64 = u64::MAX;

/// Every duration `Duration::MAX`, every count the largest.
fn endless_policy() -> Policy {
    Policy::new(u32::MAX, MAX)
        .block_duration(MAX)
        .cooldown(MAX)
        .punishment(Punishment::Ban(MAX))
        .max_window_duration(Some(MAX))
        .accumulate_cap(u32::MAX)
        .grace(Grace {
            extra: u32::MAX,
            interval: MAX,
        })
        .adaptive(Adaptive {
            factor: f64::MAX,
            max: MAX,
            jitter: MAX,
        })
}

async fn report(req: HttpRequest, gk: GateKeeper) -> HttpResponse {
    gk.report(&req).await;
    HttpResponse::Ok().body("reported")
}

/// A temp dir for the SQLite file, deleted on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn server(
    clock: &FakeClock,
    durability: Durability,
) -> (actix_test::TestServer, Floodgate, TempDir) {
    let dir = std::env::temp_dir().join(format!(
        "floodgate-overflow-{}-{durability:?}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::builder(dir.join("overflow.db"))
        .durability(durability)
        .busy_timeout(MAX)
        .sweep_interval(MAX)
        .open()
        .expect("Duration::MAX settings open");
    let fg = Floodgate::new()
        .clock(clock.clone())
        .store(store)
        .store_failure(StoreFailure::Closed)
        .ip_header("x-client-ip")
        .legacy_headers(true)
        .ban_rule(BanRule::new(1, MAX, MAX))
        .rate_limit_rules([Rule::new(u32::MAX, MAX)])
        .default_policy(endless_policy());
    let app_fg = fg.clone();
    let srv = actix_test::start_with(server_config(), move || {
        let resource = |path: &str, rules: RouteRules| {
            web::resource(path.to_owned())
                .wrap(rules)
                .route(web::get().to(HttpResponse::Ok))
        };
        App::new()
            .wrap(app_fg.clone())
            .service(resource("/global", RouteRules::new("global only")))
            .service(resource(
                "/once",
                RouteRules::new("once").specific([Rule::new(1, MAX), Rule::new(u32::MAX, MAX)]),
            ))
            .service(resource(
                "/cooldown",
                RouteRules::new("cooldown").default_policy(),
            ))
            .service(resource(
                "/block",
                RouteRules::new("block").policy(
                    endless_policy()
                        .with_amount(1)
                        .cooldown(Duration::ZERO)
                        .grace(Grace {
                            extra: 0,
                            interval: MAX,
                        }),
                ),
            ))
            .service(resource(
                "/punish",
                RouteRules::new("punish").policy(
                    endless_policy()
                        .with_amount(1)
                        .cooldown(Duration::ZERO)
                        .block_limit(0)
                        .grace(Grace {
                            extra: 0,
                            interval: MAX,
                        }),
                ),
            ))
            .route("/report", web::get().to(report))
    });
    (srv, fg, TempDir(dir))
}

/// `Retry-After` for a wait from `now` to the end of time: whole seconds, rounded up.
fn until_the_end(now: u64) -> String {
    (END - now).div_ceil(1000).to_string()
}

fn status(r: &Resp) -> (u16, Option<&str>) {
    (r.code(), r.header("retry-after"))
}

async fn walk(durability: Durability) {
    let clock = FakeClock::new();
    let (srv, fg, _dir) = server(&clock, durability);
    let now = clock.now().as_millis();
    let end = until_the_end(now);

    // The global rule (u32::MAX per Duration::MAX) never refuses a handful of requests.
    for _ in 0..5 {
        let r = get_as(&srv, "/global", "198.51.100.1").await;
        assert_eq!(status(&r), (200, None));
        let limit = r.header("ratelimit-policy").unwrap();
        assert_eq!(
            limit,
            format!(
                "\"4294967295/18446744073709551615ms\";q=4294967295;w={}",
                u64::MAX / 1000 + 1
            )
        );
    }

    // One request per Duration::MAX: the next waits until the end of time.
    assert_eq!(
        status(&get_as(&srv, "/once", "198.51.100.2").await),
        (200, None)
    );
    let r = get_as(&srv, "/once", "198.51.100.2").await;
    assert_eq!(status(&r), (429, Some(end.as_str())));
    assert_eq!(r.json()["retry_after"].as_u64(), Some(end.parse().unwrap()));

    // A cooldown of Duration::MAX (the default policy): the same.
    assert_eq!(
        status(&get_as(&srv, "/cooldown", "198.51.100.3").await),
        (200, None)
    );
    let r = get_as(&srv, "/cooldown", "198.51.100.3").await;
    assert_eq!(status(&r), (429, Some(end.as_str())));

    // A block of Duration::MAX under block_limit 5: blocked for good, never punished.
    assert_eq!(
        status(&get_as(&srv, "/block", "198.51.100.4").await),
        (200, None)
    );
    for _ in 0..3 {
        assert_eq!(
            status(&get_as(&srv, "/block", "198.51.100.4").await),
            (429, Some(end.as_str()))
        );
    }

    // Block limit 0, a ban of Duration::MAX grown by f64::MAX^n plus up to Duration::MAX of
    // jitter: banned for good (403, no Retry-After), on every limited route.
    assert_eq!(
        status(&get_as(&srv, "/punish", "198.51.100.5").await),
        (200, None)
    );
    assert_eq!(
        status(&get_as(&srv, "/punish", "198.51.100.5").await),
        (403, None)
    );
    assert_eq!(
        status(&get_as(&srv, "/global", "198.51.100.5").await),
        (403, None)
    );

    // One report bans for Duration::MAX: for good.
    assert_eq!(
        status(&get_as(&srv, "/report", "198.51.100.6").await),
        (200, None)
    );
    assert_eq!(
        status(&get_as(&srv, "/global", "198.51.100.6").await),
        (403, None)
    );

    // An operator ban of Duration::MAX: for good.
    let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    fg.gatekeeper().ban(ip, MAX).await.unwrap();
    assert_eq!(
        status(&get_as(&srv, "/global", "198.51.100.7").await),
        (403, None)
    );
    let st = fg.gatekeeper().status(ip).await.unwrap();
    assert!(st.is_banned(), "{st:?}");

    // A millisecond before the end of time, all of it still holds, the waits down to 1 s.
    clock.set(Timestamp::from_millis(END - 1));
    for (path, ip, want) in [
        ("/once", "198.51.100.2", (429, Some("1"))),
        ("/cooldown", "198.51.100.3", (429, Some("1"))),
        ("/block", "198.51.100.4", (429, Some("1"))),
        ("/punish", "198.51.100.5", (403, None)),
        ("/global", "198.51.100.6", (403, None)),
        ("/global", "198.51.100.7", (403, None)),
        ("/global", "198.51.100.8", (200, None)),
    ] {
        let r = get_as(&srv, path, ip).await;
        assert_eq!(status(&r), want, "{path} as {ip} at the end of time - 1 ms");
    }

    // The clock cannot go further; every request is still answered, and never with a 500.
    clock.advance(MAX);
    assert_eq!(clock.now(), Timestamp::NEVER);
    for (path, ip) in [
        ("/once", "198.51.100.2"),
        ("/cooldown", "198.51.100.3"),
        ("/block", "198.51.100.4"),
        ("/punish", "198.51.100.5"),
        ("/global", "198.51.100.6"),
        ("/report", "198.51.100.9"),
    ] {
        let r = get_as(&srv, path, ip).await;
        assert!([200, 403, 429].contains(&r.code()), "{path} as {ip}: {r:?}");
    }
    srv.stop().await;
}

#[actix_web::test]
async fn duration_max_everywhere_over_http_with_sqlite() {
    walk(Durability::Normal).await;
}

#[actix_web::test]
async fn duration_max_everywhere_over_http_with_batched_sqlite() {
    walk(Durability::Batched).await;
}

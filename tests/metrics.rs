//! Prometheus metrics over real HTTP: requests by route and decision, bans, near-limit
//! requests, the gauges, store errors and timings; labels that never name a client and whose
//! number stays bounded under a flood of distinct paths; and an exposition that
//! `promtool check metrics` accepts.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use actix_web::{get, App};
use floodgate::metrics::{exposition, Registry};
use floodgate::{bypass, rate_limited, specific, FakeClock, Floodgate, Rule, SqliteStore};
use floodgate_tests::{codes_as, get_as, pipelined, secs, server_config, DownStore, IP_HEADER};

#[get("/ping")]
async fn ping() -> &'static str {
    "pong"
}

#[specific(rate_limit_rules = [(5, "1m")])]
#[get("/search")]
async fn search() -> &'static str {
    "results"
}

#[rate_limited(
    amount = 1,
    time_window = "1m",
    block_limit = 0,
    block_exceed_duration = "forever"
)]
#[get("/export")]
async fn export() -> &'static str {
    "data"
}

#[specific(rate_limit_rules = [(1, "1m")], shadow)]
#[get("/watched")]
async fn watched() -> &'static str {
    "watched"
}

#[bypass]
#[get("/health")]
async fn health() -> &'static str {
    "ok"
}

fn app(fg: &Floodgate) -> actix_test::TestServer {
    let fg = fg.clone();
    actix_test::start_with(server_config(), move || {
        App::new()
            .wrap(fg.clone())
            .service(ping)
            .service(search)
            .service(export)
            .service(watched)
            .service(health)
    })
}

/// The value of the sample `series` (name and labels as exposed), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The series (name and labels) of the samples whose name starts with `prefix`.
fn series(text: &str, prefix: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
        .collect()
}

/// `base` with the tests' client header and global rule, its metrics in the registry returned.
fn metered(base: Floodgate) -> (Floodgate, Registry) {
    let mut registry = Registry::default();
    let fg = base
        .ip_header(IP_HEADER)
        .rate_limit_rules([Rule::new(100, secs(60))])
        .metrics(&mut registry);
    (fg, registry)
}

fn route(name: &str) -> String {
    format!("metrics::{name}")
}

#[actix_web::test]
async fn near_limits_are_counted_with_the_ratelimit_fields_off() {
    // Without the fields, the metrics alone still need each allowed request's quota.
    let clock = FakeClock::new();
    let (fg, registry) = metered(
        Floodgate::new()
            .clock(clock.clone())
            .ratelimit_headers(false),
    );
    let srv = app(&fg);
    for expected in [200, 200, 200, 200, 200, 429] {
        let r = get_as(&srv, "/search", "10.4.1.1").await;
        assert_eq!(r.code(), expected);
        assert_eq!(r.header("ratelimit"), None);
    }
    let text = exposition(&registry).unwrap();
    let near = format!(
        "floodgate_near_limit_total{{route=\"{}\"}}",
        route("search")
    );
    assert_eq!(sample(&text, &near), 1.0, "{text}");
}

#[actix_web::test]
async fn requests_bans_and_near_limits_are_counted_by_route_and_decision() {
    let clock = FakeClock::new();
    let (fg, registry) = metered(Floodgate::new().clock(clock.clone()));
    let srv = app(&fg);

    assert_eq!(
        codes_as(&srv, "/search", "10.4.0.1", 6).await,
        [200, 200, 200, 200, 200, 429]
    );
    assert_eq!(
        codes_as(&srv, "/export", "10.4.0.2", 3).await,
        [200, 403, 403]
    );
    assert_eq!(codes_as(&srv, "/watched", "10.4.0.3", 3).await, [200; 3]);
    assert_eq!(codes_as(&srv, "/health", "10.4.0.4", 2).await, [200; 2]);
    assert_eq!(codes_as(&srv, "/ping", "10.4.0.5", 2).await, [200; 2]);

    let text = exposition(&registry).unwrap();
    let requests = |r: &str, d: &str| {
        sample(
            &text,
            &format!("floodgate_requests_total{{route=\"{r}\",decision=\"{d}\"}}"),
        )
    };
    assert_eq!(requests(&route("search"), "allowed"), 5.0, "{text}");
    assert_eq!(requests(&route("search"), "limited"), 1.0, "{text}");
    assert_eq!(requests(&route("export"), "allowed"), 1.0, "{text}");
    assert_eq!(requests(&route("export"), "banned"), 2.0, "{text}");
    assert_eq!(requests(&route("watched"), "allowed"), 3.0, "{text}");
    assert_eq!(requests(&route("watched"), "shadow_limited"), 2.0, "{text}");
    assert_eq!(requests(&route("health"), "exempt"), 2.0, "{text}");
    assert_eq!(requests("other", "allowed"), 2.0, "{text}");
    // 5 per minute: the fifth request left 0 of 5 (under 20%); the fourth left 1 (20%).
    let near = format!(
        "floodgate_near_limit_total{{route=\"{}\"}}",
        route("search")
    );
    assert_eq!(sample(&text, &near), 1.0, "{text}");
    // The policy's first block blacklists.
    assert_eq!(
        sample(&text, "floodgate_bans_total{reason=\"blacklist\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(sample(&text, "floodgate_bans_active"), 1.0, "{text}");
    assert!(sample(&text, "floodgate_tracked_clients") >= 4.0, "{text}");
    // Operator bans count, and an unban ends one.
    let gk = fg.gatekeeper();
    let ip: std::net::IpAddr = "10.4.0.9".parse().unwrap();
    gk.ban(ip, secs(60)).await.unwrap();
    let text = exposition(&registry).unwrap();
    assert_eq!(
        sample(&text, "floodgate_bans_total{reason=\"operator\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(sample(&text, "floodgate_bans_active"), 2.0, "{text}");
    clock.advance(secs(61));
    assert_eq!(
        sample(&exposition(&registry).unwrap(), "floodgate_bans_active"),
        1.0
    );
    gk.unban("10.4.0.2".parse::<std::net::IpAddr>().unwrap())
        .await
        .unwrap();
    assert_eq!(
        sample(&exposition(&registry).unwrap(), "floodgate_bans_active"),
        0.0
    );

    // No label names a client.
    let text = exposition(&registry).unwrap();
    assert!(!text.contains("10.4."), "{text}");
}

#[actix_web::test]
async fn a_flood_of_distinct_paths_and_clients_adds_no_series() {
    let clock = FakeClock::new();
    let (fg, registry) = metered(Floodgate::new().clock(clock.clone()));
    let srv = app(&fg);
    assert_eq!(get_as(&srv, "/nowhere", "10.5.0.1").await.code(), 404);
    assert_eq!(get_as(&srv, "/search", "10.5.0.1").await.code(), 200);
    let before = series(&exposition(&registry).unwrap(), "floodgate_");

    const FLOOD: usize = 20_000;
    let addr = srv.addr();
    let requests: Vec<String> = (0..FLOOD)
        .map(|i| {
            let who = format!("172.{}.{}.{}", 16 + (i >> 16), (i >> 8) & 255, i & 255);
            format!("GET /p/{i}/%2e{i} HTTP/1.1\r\nhost: localhost\r\n{IP_HEADER}: {who}\r\n\r\n")
        })
        .collect();
    let threads: Vec<_> = requests
        .chunks(FLOOD / 4)
        .map(<[String]>::to_vec)
        .map(|reqs| std::thread::spawn(move || pipelined(addr, &reqs)))
        .collect();
    for t in threads {
        let codes = t.join().expect("flood thread");
        assert!(codes.iter().all(|&c| c == 404), "{codes:?}");
    }

    let text = exposition(&registry).unwrap();
    assert_eq!(series(&text, "floodgate_"), before, "{text}");
    let other = sample(
        &text,
        "floodgate_requests_total{route=\"other\",decision=\"allowed\"}",
    );
    assert_eq!(other, (FLOOD + 1) as f64);
}

#[actix_web::test]
async fn store_errors_and_store_timings_are_exposed() {
    let (fg, registry) = metered(Floodgate::new().store(DownStore));
    let srv = app(&fg);
    assert_eq!(
        codes_as(&srv, "/ping", "10.6.0.1", 3).await,
        [200; 3],
        "fail-open"
    );
    let text = exposition(&registry).unwrap();
    let errors = "floodgate_store_errors_total{store=\"custom\",operation=\"check\"}";
    assert_eq!(sample(&text, errors), 3.0, "{text}");

    let dir = std::env::temp_dir().join(format!("floodgate-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = SqliteStore::open(dir.join("ip-data.db")).unwrap();
    let (fg, registry) = metered(Floodgate::new().store(sqlite));
    let srv = app(&fg);
    assert_eq!(codes_as(&srv, "/ping", "10.6.0.2", 4).await, [200; 4]);
    let text = exposition(&registry).unwrap();
    let count = "floodgate_store_duration_seconds_count{store=\"sqlite\"}";
    assert_eq!(sample(&text, count), 4.0, "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether `promtool` can run; when it cannot, a notice (once), unless
/// `FLOODGATE_REQUIRE_PROMTOOL=1` (set by `.ci/run`) makes that a failure.
fn promtool() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    assert!(
        std::env::var("FLOODGATE_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
        "FLOODGATE_REQUIRE_PROMTOOL=1 but promtool is not on PATH (apt-get install prometheus)"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED the promtool check of tests/metrics.rs: `promtool` is not on PATH (apt-get \
         install prometheus; FLOODGATE_REQUIRE_PROMTOOL=1 makes this a failure)"
    );
    false
}

#[actix_web::test]
async fn promtool_accepts_the_exposition() {
    let clock = FakeClock::new();
    let (fg, registry) = metered(Floodgate::new().clock(clock.clone()));
    let srv = app(&fg);
    codes_as(&srv, "/search", "10.7.0.1", 6).await;
    codes_as(&srv, "/export", "10.7.0.2", 2).await;
    let text = exposition(&registry).unwrap();
    if !promtool() {
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The admin service serves the registry at `/metrics`, behind its token like every admin
/// path; the app-wide middleware never counts the scrape.
#[actix_web::test]
async fn the_admin_service_serves_the_registry_behind_its_token() {
    const TOKEN: &str = "metrics-token-0123456789abcdef";
    let (fg, registry) = metered(Floodgate::new());
    let registry = std::sync::Arc::new(registry);
    let srv = {
        let (fg, registry) = (fg.clone(), registry.clone());
        actix_test::start_with(floodgate_tests::server_config(), move || {
            App::new().wrap(fg.clone()).service(ping).service(
                fg.admin("/_floodgate")
                    .token(TOKEN)
                    .metrics(registry.clone()),
            )
        })
    };
    let _ = codes_as(&srv, "/ping", "10.9.0.1", 3).await;

    let anonymous = floodgate_tests::send(floodgate_tests::from_ip(
        srv.get("/_floodgate/metrics"),
        "10.9.0.2",
    ))
    .await;
    assert_eq!(anonymous.status.as_u16(), 401);
    let scraped = floodgate_tests::send(
        floodgate_tests::from_ip(srv.get("/_floodgate/metrics"), "10.9.0.2").bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(scraped.status.as_u16(), 200);
    assert_eq!(
        scraped.headers.get("content-type").unwrap(),
        floodgate::metrics::CONTENT_TYPE
    );
    let text = std::str::from_utf8(&scraped.body).unwrap();
    assert_eq!(text, exposition(&registry).unwrap());
    let allowed = sample(
        text,
        "floodgate_requests_total{route=\"other\",decision=\"allowed\"}",
    );
    assert_eq!(allowed, 3.0, "{text}");
}

//! Allow and deny lists (request targeting) over real HTTP: files with IPv4, IPv6, CIDR and
//! comment lines; reload while requests flow; malformed lines named by file and line.

mod targeting_common;

use std::time::Duration;

use actix_web::{get, App};
use floodgate::{bypass, FakeClock, Floodgate, IpList, Rule};
use futures_util::future::join_all;
use targeting_common::{get, temp_file};

#[get("/ping")]
async fn ping() -> &'static str {
    "ok"
}

#[bypass]
#[get("/health")]
async fn health() -> &'static str {
    "ok"
}

fn server(fg: Floodgate) -> actix_test::TestServer {
    actix_test::start_with(actix_test::config().workers(2), move || {
        App::new().wrap(fg.clone()).service(ping).service(health)
    })
}

const DENY: &str = "\
# Spamhaus DROP style: prefix ; comment
; a whole-line comment in the DROP form

198.51.100.0/24 ; SBL000001
203.0.113.7
2001:db8:bad::/48 ; an IPv6 range
2001:db8::dead   # one IPv6 address
";

const ALLOW: &str = "\
# the office
192.0.2.0/28
2001:db8:1::/48
";

#[actix_web::test]
async fn allow_and_deny_lists_from_files() {
    let deny = IpList::new("drop")
        .file(temp_file("deny.txt", DENY))
        .unwrap();
    let allow = IpList::new("office")
        .file(temp_file("allow.txt", ALLOW))
        .unwrap();
    assert_eq!((deny.ranges(), allow.ranges()), (4, 2));
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header("x-client")
        .rate_limit_rules([Rule::new(2, Duration::from_secs(60))])
        .allow_list(allow)
        .deny_list(deny);
    let srv = server(fg.clone());

    for ip in [
        "198.51.100.9",
        "198.51.100.255",
        "203.0.113.7",
        "2001:db8:bad:1::5",
        "2001:db8::dead",
        "::ffff:198.51.100.1",
    ] {
        assert_eq!(get(&srv, "/ping", ip).await, 403, "{ip} is denied");
        // Like a ban, a deny list does not reach #[bypass] routes.
        assert_eq!(
            get(&srv, "/health", ip).await,
            200,
            "{ip} on a bypassed route"
        );
    }
    let res = srv
        .get("/ping")
        .insert_header(("x-client", "203.0.113.7"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
    assert!(res.headers().get("retry-after").is_none());

    // Neighbours of denied entries are ordinary clients: limited by the global rule.
    for ip in ["203.0.113.8", "198.51.101.0", "2001:db8::beef"] {
        assert_eq!(get(&srv, "/ping", ip).await, 200, "{ip}");
        assert_eq!(get(&srv, "/ping", ip).await, 200, "{ip}");
        assert_eq!(get(&srv, "/ping", ip).await, 429, "{ip}");
    }

    // Allowed clients skip every limit and ban.
    fg.gatekeeper()
        .blacklist("192.0.2.5".parse::<std::net::IpAddr>().unwrap())
        .await
        .unwrap();
    for ip in ["192.0.2.5", "192.0.2.15", "2001:db8:1:ff::9"] {
        for _ in 0..6 {
            assert_eq!(get(&srv, "/ping", ip).await, 200, "{ip} is allowed");
        }
    }
    // Just outside the /28: an ordinary client.
    assert_eq!(get(&srv, "/ping", "192.0.2.16").await, 200);
    assert_eq!(get(&srv, "/ping", "192.0.2.16").await, 200);
    assert_eq!(get(&srv, "/ping", "192.0.2.16").await, 429);
}

#[actix_web::test]
async fn lists_in_code_and_allow_wins_over_deny() {
    let fg = Floodgate::new()
        .ip_header("x-client")
        .allow_list(IpList::new("ops").entries(["10.0.0.7"]).unwrap())
        .deny_list(
            IpList::new("corp")
                .entries(["10.0.0.0/8", "fd00::/8"])
                .unwrap(),
        );
    let srv = server(fg);
    assert_eq!(get(&srv, "/ping", "10.0.0.7").await, 200);
    assert_eq!(get(&srv, "/ping", "10.0.0.8").await, 403);
    assert_eq!(get(&srv, "/ping", "fd12::1").await, 403);
    assert_eq!(get(&srv, "/ping", "11.0.0.1").await, 200);
}

#[actix_web::test]
async fn reload_swaps_the_list_while_requests_flow() {
    let v1 = "198.51.100.0/24\n";
    let v2 = "198.51.100.0/24\n203.0.113.0/24 ; added\n";
    let path = temp_file("drop.txt", v1);
    let list = IpList::new("drop").file(&path).unwrap();
    let srv = server(
        Floodgate::new()
            .ip_header("x-client")
            .deny_list(list.clone()),
    );
    assert_eq!(get(&srv, "/ping", "203.0.113.5").await, 200);

    // Clients whose answer is the same in both versions keep it through every swap.
    let client = |ip: &'static str, expected: u16| {
        let srv = &srv;
        async move {
            for i in 0..40 {
                assert_eq!(get(srv, "/ping", ip).await, expected, "{ip}, request {i}");
            }
        }
    };
    let reloads = async {
        for i in 0..40 {
            std::fs::write(&path, if i % 2 == 0 { v2 } else { v1 }).unwrap();
            assert!(list.reload().is_ok());
            actix_rt::task::yield_now().await;
        }
    };
    let flows = join_all([
        client("198.51.100.1", 403),
        client("198.51.100.200", 403),
        client("192.0.2.1", 200),
        client("2001:db8::1", 200),
    ]);
    futures_util::future::join(flows, reloads).await;

    std::fs::write(&path, v2).unwrap();
    assert_eq!(list.reload().unwrap(), 2);
    assert_eq!(get(&srv, "/ping", "203.0.113.5").await, 403);
    std::fs::write(&path, v1).unwrap();
    assert_eq!(list.reload().unwrap(), 1);
    assert_eq!(get(&srv, "/ping", "203.0.113.5").await, 200);
}

#[actix_web::test]
async fn malformed_lines_are_named_by_file_and_line() {
    // At load: an error naming the file and the line.
    let bad = temp_file("bad.txt", "# ok\n10.0.0.0/8\nnot-an-address\n");
    let err = IpList::new("bad").file(&bad).unwrap_err();
    assert_eq!(err.path.as_deref(), Some(bad.as_path()));
    assert_eq!(err.line, 3);
    let text = err.to_string();
    assert!(
        text.contains("bad.txt:3") && text.contains("not-an-address"),
        "{text}"
    );
    let err = IpList::new("bad")
        .file(temp_file("cidr.txt", "10.0.0.0/33\n"))
        .unwrap_err();
    assert_eq!(err.line, 1);
    let missing = IpList::new("gone")
        .file("/nonexistent/floodgate/list.txt")
        .unwrap_err();
    assert_eq!(missing.line, 0);

    // At reload: the old list is kept, the error is returned (and logged).
    let path = temp_file("drop.txt", "198.51.100.0/24\n");
    let list = IpList::new("drop").file(&path).unwrap();
    let srv = server(
        Floodgate::new()
            .ip_header("x-client")
            .deny_list(list.clone()),
    );
    std::fs::write(&path, "203.0.113.0/24\n2001:db8::/33\n2001:db8::/129\n").unwrap();
    let err = list.reload().unwrap_err();
    assert_eq!((err.path.as_deref(), err.line), (Some(path.as_path()), 3));
    assert_eq!(get(&srv, "/ping", "198.51.100.1").await, 403);
    assert_eq!(get(&srv, "/ping", "203.0.113.1").await, 200);
    std::fs::remove_file(&path).unwrap();
    assert!(list.reload().is_err());
    assert_eq!(get(&srv, "/ping", "198.51.100.1").await, 403);
}

#[actix_web::test]
async fn reload_if_changed_and_reload_lists_from_the_gatekeeper() {
    let deny_path = temp_file("deny.txt", "198.51.100.0/24\n");
    let allow_path = temp_file("allow.txt", "192.0.2.1\n");
    let deny = IpList::new("drop").file(&deny_path).unwrap();
    let allow = IpList::new("ops").file(&allow_path).unwrap();
    let fg = Floodgate::new()
        .ip_header("x-client")
        .rate_limit_rules([Rule::new(1, Duration::from_secs(60))])
        .allow_list(allow)
        .deny_list(deny.clone());
    let gk = fg.gatekeeper();
    let srv = server(fg);

    // Unchanged files are not reloaded.
    assert!(!deny.reload_if_changed().unwrap());
    assert_eq!(gk.reload_lists().unwrap(), 0);

    // The same bytes written again are no change either.
    std::fs::write(&deny_path, "198.51.100.0/24\n").unwrap();
    assert!(!deny.reload_if_changed().unwrap());

    std::fs::write(&deny_path, "203.0.113.0/24\n").unwrap();
    std::fs::write(&allow_path, "192.0.2.2\n").unwrap();
    assert_eq!(gk.reload_lists().unwrap(), 2);
    assert!(!deny.reload_if_changed().unwrap());
    assert_eq!(get(&srv, "/ping", "198.51.100.1").await, 200);
    assert_eq!(get(&srv, "/ping", "203.0.113.1").await, 403);
    for _ in 0..3 {
        assert_eq!(get(&srv, "/ping", "192.0.2.2").await, 200);
    }

    // One bad file: the other list still reloads; the error names the bad one.
    std::fs::write(&deny_path, "203.0.113.0/24\n198.51.100.0/24\nbogus\n").unwrap();
    std::fs::write(&allow_path, "192.0.2.3\n").unwrap();
    let err = gk.reload_lists().unwrap_err();
    assert_eq!(
        (err.path.as_deref(), err.line),
        (Some(deny_path.as_path()), 3)
    );
    // Still not denied (its one request a minute is used: 429, not 403).
    assert_eq!(get(&srv, "/ping", "198.51.100.1").await, 429);
    assert_eq!(get(&srv, "/ping", "203.0.113.1").await, 403);
    assert_eq!(get(&srv, "/ping", "192.0.2.3").await, 200);
    assert_eq!(get(&srv, "/ping", "192.0.2.3").await, 200);
}

#[actix_web::test]
async fn reload_every_picks_up_a_changed_file_by_itself() {
    let path = temp_file("reload-every.txt", "203.0.113.1\n");
    let list = IpList::new("every")
        .file(&path)
        .unwrap()
        .reload_every(Duration::from_millis(5));
    let fg = Floodgate::new()
        .clock(FakeClock::new())
        .ip_header("x-client")
        .deny_list(list.clone());
    let srv = server(fg);
    assert_eq!(get(&srv, "/ping", "203.0.113.1").await, 403);
    assert_eq!(get(&srv, "/ping", "203.0.113.2").await, 200);

    std::fs::write(&path, "203.0.113.2\n").unwrap();
    // The interval is real time (it paces file reads, not limits): poll the reload thread.
    // The deadline only keeps a broken reload from hanging the suite.
    let changed = "203.0.113.2".parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !list.contains(changed) {
        assert!(
            std::time::Instant::now() < deadline,
            "the list was never reloaded"
        );
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(get(&srv, "/ping", "203.0.113.2").await, 403);
    assert_eq!(get(&srv, "/ping", "203.0.113.1").await, 200);
    assert_eq!(list.ranges(), 1);
}

//! Floods against a small memory store (SPEC 7 and 8): thousands of new addresses, IPv6
//! /64s, and clients that each earn a ban or a blacklist, over real HTTP with a fake clock.
//! None of them lifts a blacklist, an operator's ban or a reported ban, or resets a client's
//! escalation, and the store stays within its bound throughout.
//!
//! Floods are sent as raw pipelined HTTP/1.1 on plain sockets (see `bad_input.rs`), two
//! connections per batch so that both workers take part.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::{get, App, HttpRequest, HttpResponse};
use floodgate::{rate_limited, BanRule, FakeClock, Floodgate, GateKeeper, MemoryStore, Rule};
use floodgate_tests::{get_as, millis, pipelined, secs, server_config, IP_HEADER};

#[get("/limited")]
async fn limited() -> &'static str {
    "ok"
}

/// Reports one offence of the caller: two within 10 s ban it for an hour.
#[get("/report")]
async fn report(req: HttpRequest, gk: GateKeeper) -> HttpResponse {
    gk.report(&req).await;
    HttpResponse::Ok().body("reported")
}

/// The second request within 10 s blocks, and the first block blacklists.
#[rate_limited(
    amount = 1,
    time_window = "10s",
    block_limit = 0,
    block_exceed_duration = "forever"
)]
#[get("/blacklist")]
async fn blacklist() -> &'static str {
    "ok"
}

/// The second request within 10 s blocks; the second block bans for an hour.
#[rate_limited(
    amount = 1,
    time_window = "10s",
    block_limit = 1,
    block_exceed_duration = "1h"
)]
#[get("/escalate")]
async fn escalate() -> &'static str {
    "ok"
}

/// The most clients of every store here: 8 shards of 32, each with room for 4 pinned
/// clients and 8 automatic bans.
const MAX_CLIENTS: usize = 256;

struct Server {
    srv: actix_test::TestServer,
    fg: Floodgate,
    store: Arc<MemoryStore>,
    clock: FakeClock,
}

fn start() -> Server {
    let clock = FakeClock::new();
    let store = Arc::new(MemoryStore::builder().max_clients(MAX_CLIENTS).build());
    assert_eq!(store.capacity(), MAX_CLIENTS);
    let fg = Floodgate::new()
        .clock(clock.clone())
        .store(store.clone())
        .ip_header(IP_HEADER)
        .ban_rule(BanRule::new(2, secs(10), secs(3_600)))
        .rate_limit_rules([Rule::new(1_000, secs(60))]);
    let app_fg = fg.clone();
    let srv = actix_test::start_with(server_config(), move || {
        App::new()
            .wrap(app_fg.clone())
            .service(limited)
            .service(report)
            .service(blacklist)
            .service(escalate)
    });
    Server {
        srv,
        fg,
        store,
        clock,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A distinct IPv4 address for each `i`, away from the test's own clients.
fn v4(i: usize) -> String {
    format!("172.{}.{}.{}", 16 + (i >> 16), (i >> 8) & 255, i & 255)
}

/// A distinct IPv6 /64 for each `i`.
fn v6_net(i: usize) -> String {
    format!("2001:db8:{:x}:{:x}::1", 0x100 + (i >> 16), i & 0xffff)
}

impl Server {
    /// Sends `GET path` as each client of `clients` (`times` requests each, in a row), in
    /// pipelined batches; checks the store's bound after every batch and advances the clock
    /// 10 ms. Returns the status codes.
    fn flood(&self, path: &str, clients: &[String], times: usize) -> Vec<u16> {
        const BATCH: usize = 250;
        let addr = self.srv.addr();
        let mut codes = Vec::new();
        for batch in clients.chunks(BATCH) {
            let requests: Vec<String> = batch
                .iter()
                .flat_map(|who| {
                    std::iter::repeat_n(
                        format!(
                            "GET {path} HTTP/1.1\r\nhost: localhost\r\n{IP_HEADER}: {who}\r\n\r\n"
                        ),
                        times,
                    )
                })
                .collect();
            // Two connections, a client's requests on one of them, in order.
            let half = (batch.len().div_ceil(2)) * times;
            let parts: Vec<Vec<String>> = requests.chunks(half).map(<[String]>::to_vec).collect();
            let threads: Vec<_> = parts
                .into_iter()
                .map(|reqs| std::thread::spawn(move || pipelined(addr, &reqs)))
                .collect();
            for t in threads {
                codes.extend(t.join().expect("flood thread"));
            }
            let len = self.store.len();
            assert!(
                len <= MAX_CLIENTS,
                "{len} clients tracked, bound {MAX_CLIENTS}"
            );
            self.clock.advance(millis(10));
        }
        codes
    }

    async fn code(&self, path: &str, who: &str) -> u16 {
        get_as(&self.srv, path, who).await.code()
    }
}

#[actix_web::test]
async fn blacklists_and_operator_bans_outlast_floods_of_new_and_banned_clients() {
    let s = start();
    let gk = s.fg.gatekeeper();
    // Blacklisted by the policy's punishment, and banned by an operator, forever and for
    // a day.
    let (listed, forever, day) = ("198.51.100.1", "198.51.100.2", "198.51.100.3");
    assert_eq!(s.code("/blacklist", listed).await, 200);
    assert_eq!(s.code("/blacklist", listed).await, 403);
    gk.blacklist(ip(forever)).await.unwrap();
    gk.ban(ip(day), secs(86_400)).await.unwrap();
    // The flood comes later (blacklists earned in the same millisecond rank by their hash).
    s.clock.advance(secs(1));

    // 2,000 clients that each earn a blacklist, then 2,000 that each earn a reported ban:
    // the pinned and ban budgets overflow many times over.
    let listers: Vec<String> = (0..2_000).map(v4).collect();
    let codes = s.flood("/blacklist", &listers, 2);
    assert!(
        codes.chunks(2).all(|c| c == [200, 403]),
        "every flooder blacklisted"
    );
    let reported: Vec<String> = (2_000..4_000).map(v4).collect();
    // Each second report bans (the reporting request itself is served).
    let codes = s.flood("/report", &reported, 2);
    assert!(codes.iter().all(|&c| c == 200), "{codes:?}");
    // Then 5,000 new addresses.
    let fresh: Vec<String> = (10_000..15_000).map(v4).collect();
    assert!(s.flood("/limited", &fresh, 1).iter().all(|&c| c == 200));

    for who in [listed, forever, day] {
        assert_eq!(s.code("/limited", who).await, 403, "{who} was freed");
    }
    assert!(gk.status(ip(listed)).await.unwrap().is_blacklisted());
    assert!(gk.status(ip(forever)).await.unwrap().is_blacklisted());
    let r = get_as(&s.srv, "/limited", day).await;
    assert_eq!(r.header("retry-after"), Some("86399"));
    // An unbanned client is still counted and served.
    assert_eq!(s.code("/limited", "198.51.100.50").await, 200);
    assert!(s.store.len() <= MAX_CLIENTS);
}

#[actix_web::test]
async fn a_reported_ban_survives_a_flood_of_unbanned_clients() {
    let s = start();
    let who = "198.51.100.7";
    assert_eq!(s.code("/report", who).await, 200);
    assert_eq!(s.code("/report", who).await, 200);
    assert_eq!(s.code("/limited", who).await, 403);

    let fresh: Vec<String> = (0..8_000).map(v4).collect();
    assert!(s.flood("/limited", &fresh, 1).iter().all(|&c| c == 200));

    let r = get_as(&s.srv, "/limited", who).await;
    assert_eq!(r.code(), 403, "the reported ban was lifted by the flood");
    // 320 ms of the hour passed during the flood.
    assert_eq!(r.header("retry-after"), Some("3600"));
}

#[actix_web::test]
async fn escalation_at_stake_survives_a_flood_of_fresh_clients() {
    let s = start();
    let who = "198.51.100.9";
    // Block 1 of the allowed 1.
    assert_eq!(s.code("/escalate", who).await, 200);
    assert_eq!(s.code("/escalate", who).await, 429);
    s.clock.advance(secs(11));

    // The client is now the least recently seen of all: a flood of fresh ones.
    let fresh: Vec<String> = (0..8_000).map(v4).collect();
    assert!(s.flood("/limited", &fresh, 1).iter().all(|&c| c == 200));

    s.clock.advance(secs(11));
    assert_eq!(s.code("/escalate", who).await, 200);
    // Block 2 > 1: punished. Had the flood evicted the client, this would be block 1 (429).
    let r = get_as(&s.srv, "/escalate", who).await;
    assert_eq!(
        (r.code(), r.header("retry-after")),
        (403, Some("3600")),
        "the block count was forgotten"
    );
}

#[actix_web::test]
async fn a_flood_of_distinct_ipv6_64s_does_not_lift_a_ban() {
    let s = start();
    let gk = s.fg.gatekeeper();
    // Banned by reports from one address of its /64, and an operator ban of another /64.
    let reported = "2001:db8:1:2::1";
    assert_eq!(s.code("/report", reported).await, 200);
    assert_eq!(s.code("/report", reported).await, 200);
    gk.ban(ip("2001:db8:7:7::"), secs(7_200)).await.unwrap();

    let nets: Vec<String> = (0..8_000).map(v6_net).collect();
    assert!(s.flood("/limited", &nets, 1).iter().all(|&c| c == 200));

    // Any address of the banned /64s is still refused.
    assert_eq!(s.code("/limited", "2001:db8:1:2::beef").await, 403);
    assert_eq!(s.code("/limited", "2001:db8:7:7:1:2:3:4").await, 403);
    // A neighbouring /64 is not.
    assert_eq!(s.code("/limited", "2001:db8:1:3::1").await, 200);
}

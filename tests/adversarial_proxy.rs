//! Attacks on client identity behind trusted proxies, over real HTTP (SPEC 9). Every test
//! server listens on 127.0.0.1, which the tests configure as the trusted proxy, so each
//! request plays the part of a request forwarded by that proxy.

use std::net::IpAddr;

use actix_web::{get, App};
use floodgate::{FakeClock, Floodgate, GateKeeper, IpList, ProxyHeader, Rule};
use floodgate_tests::{app_starts, secs, send, server_config};

#[get("/limited")]
async fn limited() -> &'static str {
    "ok"
}

#[get("/report")]
async fn report(req: actix_web::HttpRequest, gk: GateKeeper) -> &'static str {
    gk.report(&req).await;
    "reported"
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One request a minute per client, behind the loopback proxy writing `header`.
fn behind_proxy(clock: &FakeClock, header: Option<ProxyHeader>) -> Floodgate {
    let fg = Floodgate::new()
        .clock(clock.clone())
        .rate_limit_rules([Rule::new(1, secs(60))])
        .ban_rule(floodgate::BanRule::new(1, secs(60), secs(600)))
        .trusted_proxies(["127.0.0.0/8"])
        .unwrap();
    match header {
        Some(h) => fg.proxy_header(h),
        None => fg,
    }
}

fn start(fg: &Floodgate) -> actix_test::TestServer {
    let fg = fg.clone();
    actix_test::start_with(server_config(), move || {
        App::new().wrap(fg.clone()).service(limited).service(report)
    })
}

async fn get_with(srv: &actix_test::TestServer, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = srv.get(path);
    for (name, value) in headers {
        req = req.append_header((*name, *value));
    }
    send(req).await.code()
}

#[actix_web::test]
async fn a_client_forwarded_header_does_not_change_who_it_is_when_the_proxy_writes_xff() {
    let clock = FakeClock::new();
    let fg = behind_proxy(&clock, None);
    let srv = start(&fg);
    // The proxy appended the real client, 5.5.5.5, to X-Forwarded-For and passed the
    // client's own `Forwarded` through untouched.
    let srv = &srv;
    let as_client = |fake: &'static str| {
        let fake = format!("for={fake}");
        async move {
            get_with(
                srv,
                "/limited",
                &[("forwarded", &fake), ("x-forwarded-for", "5.5.5.5")],
            )
            .await
        }
    };
    assert_eq!(as_client("1.1.1.1").await, 200);
    // A new forged address each time: still 5.5.5.5, still limited.
    assert_eq!(as_client("1.1.1.2").await, 429);
    assert_eq!(as_client("unknown").await, 429);
    assert_eq!(as_client("\"[2001:db8::1]:80\"").await, 429);
    let gk = fg.gatekeeper();
    for forged in ["1.1.1.1", "1.1.1.2"] {
        let status = gk.status(ip(forged)).await.unwrap();
        assert!(
            status.windows.iter().all(|w| w.used == 0),
            "{forged}: {status:?}"
        );
    }
    let real = gk.status(ip("5.5.5.5")).await.unwrap();
    assert_eq!(real.windows.iter().map(|w| w.used).sum::<u32>(), 1);
}

#[actix_web::test]
async fn with_proxy_header_forwarded_a_client_x_forwarded_for_is_ignored() {
    let clock = FakeClock::new();
    let fg = behind_proxy(&clock, Some(ProxyHeader::Forwarded));
    let srv = start(&fg);
    let srv = &srv;
    let send_as = |fake: &'static str| async move {
        get_with(
            srv,
            "/limited",
            &[
                ("x-forwarded-for", fake),
                ("forwarded", "for=6.6.6.6;proto=https"),
            ],
        )
        .await
    };
    assert_eq!(send_as("1.1.1.1").await, 200);
    assert_eq!(send_as("1.1.1.2").await, 429);
    assert_eq!(send_as("garbage").await, 429);
}

#[actix_web::test]
async fn a_forged_hop_cannot_ban_an_innocent_address() {
    let clock = FakeClock::new();
    let fg = behind_proxy(&clock, None);
    let srv = start(&fg);
    // An attacker at 7.7.7.7 claims, in the Forwarded header it sends itself, to be the
    // innocent 9.9.9.9, and gets itself reported (one report bans).
    assert_eq!(
        get_with(
            &srv,
            "/report",
            &[("forwarded", "for=9.9.9.9"), ("x-forwarded-for", "7.7.7.7")]
        )
        .await,
        200
    );
    let gk = fg.gatekeeper();
    assert!(gk.status(ip("7.7.7.7")).await.unwrap().ban.is_some());
    assert!(gk.status(ip("9.9.9.9")).await.unwrap().ban.is_none());
    // The innocent client is served; the attacker is refused whatever it claims.
    assert_eq!(
        get_with(&srv, "/limited", &[("x-forwarded-for", "9.9.9.9")]).await,
        200
    );
    assert_eq!(
        get_with(
            &srv,
            "/limited",
            &[("forwarded", "for=9.9.9.8"), ("x-forwarded-for", "7.7.7.7")]
        )
        .await,
        403
    );
}

#[actix_web::test]
async fn an_unparsable_hop_never_makes_the_proxy_the_client() {
    let clock = FakeClock::new();
    // The proxy's own address is allow-listed (its health checks must never be limited).
    let allow = IpList::new("proxies").entries(["127.0.0.1"]).unwrap();
    let fg = behind_proxy(&clock, Some(ProxyHeader::Forwarded)).allow_list(allow);
    let srv = start(&fg);
    // The proxy itself (no forwarding header) is allow-listed: never limited.
    for _ in 0..3 {
        assert_eq!(get_with(&srv, "/limited", &[]).await, 200);
    }
    // A client the proxy could not name (`for=unknown`, an obfuscated identifier, junk)
    // is not the proxy: it is not allow-listed, and all of them share one limited key.
    assert_eq!(
        get_with(&srv, "/limited", &[("forwarded", "for=unknown")]).await,
        200
    );
    for hop in [
        "for=unknown",
        "for=_hidden",
        "for=junk",
        "proto=https",
        "for=\"1.2.3.4",
    ] {
        assert_eq!(
            get_with(&srv, "/limited", &[("forwarded", hop)]).await,
            429,
            "{hop}"
        );
    }
    // And a client behind the unknown hop cannot claim an address to its left.
    assert_eq!(
        get_with(
            &srv,
            "/limited",
            &[("forwarded", "for=8.8.8.8, for=unknown")]
        )
        .await,
        429
    );
    let gk = fg.gatekeeper();
    let unknown = gk
        .status(floodgate::ClientKey::custom("unknown"))
        .await
        .unwrap();
    assert_eq!(unknown.windows.iter().map(|w| w.used).sum::<u32>(), 1);
    assert!(gk
        .status(ip("8.8.8.8"))
        .await
        .unwrap()
        .windows
        .iter()
        .all(|w| w.used == 0));
}

#[actix_web::test]
async fn a_client_cannot_claim_an_allow_listed_address() {
    let clock = FakeClock::new();
    let allow = IpList::new("partners").entries(["203.0.113.0/24"]).unwrap();
    let fg = behind_proxy(&clock, None).allow_list(allow);
    let srv = start(&fg);
    let attack = [
        ("forwarded", "for=203.0.113.9"),
        ("x-forwarded-for", "203.0.113.9, 6.6.6.6"),
    ];
    // The proxy wrote 6.6.6.6 last: the client's own "203.0.113.9" to its left is not believed.
    assert_eq!(get_with(&srv, "/limited", &attack).await, 200);
    assert_eq!(get_with(&srv, "/limited", &attack).await, 429);
    // The partner itself is allow-listed.
    for _ in 0..3 {
        assert_eq!(
            get_with(&srv, "/limited", &[("x-forwarded-for", "203.0.113.9")]).await,
            200
        );
    }
}

#[actix_web::test]
async fn proxy_header_without_trusted_proxies_stops_the_app() {
    let fg = Floodgate::new().proxy_header(ProxyHeader::Forwarded);
    let err = fg.validate().unwrap_err();
    assert_eq!(err.field(), "proxy_header");
    assert!(
        !app_starts(App::new().wrap(fg).service(limited)).await,
        "an app with this mistake must not start"
    );
}

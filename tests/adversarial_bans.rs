//! Attacks on bans over real HTTP: a probe must never shorten a longer ban or a blacklist,
//! and a client rotating through the /64s of its IPv6 network gets the network banned.

use std::net::IpAddr;
use std::time::Duration;

use actix_web::{get, App, HttpRequest};
use floodgate::{
    BanReason, BanRule, FakeClock, Floodgate, GateKeeper, Ipv6Rotation, Policy, ProbeBan,
    RouteRules,
};
use floodgate_tests::{get_as, secs, server_config, IP_HEADER};

#[get("/ping")]
async fn ping() -> &'static str {
    "ok"
}

#[get("/login")]
async fn login(req: HttpRequest, gk: GateKeeper) -> &'static str {
    gk.report(&req).await;
    "bad password"
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn start(fg: &Floodgate) -> actix_test::TestServer {
    let fg = fg.clone();
    actix_test::start_with(server_config(), move || {
        App::new()
            .wrap(fg.clone())
            .service(ping)
            .service(login)
            .service(
                actix_web::web::resource("/strict")
                    .wrap(
                        RouteRules::new("strict").policy(
                            Policy::new(1, secs(60))
                                .block_limit(0)
                                .block_exceed_duration(None),
                        ),
                    )
                    .to(|| async { "strict" }),
            )
    })
}

fn floodgate(clock: &FakeClock) -> Floodgate {
    Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .ban_rule(BanRule::new(1, secs(60), Duration::from_secs(7 * 86_400)))
        .probe_ban(ProbeBan::new(["/wp-login.php"]).ban_for(secs(3600)))
}

#[actix_web::test]
async fn a_probe_never_shortens_a_blacklist() {
    let clock = FakeClock::new();
    let fg = floodgate(&clock);
    let srv = start(&fg);
    let gk = fg.gatekeeper();

    // Blacklisted by an operator, and by a policy punishment (block_limit 0: the first block
    // punishes, and the punishment is a blacklist).
    gk.blacklist(ip("6.6.6.6")).await.unwrap();
    assert_eq!(get_as(&srv, "/strict", "7.7.7.7").await.code(), 200);
    assert_eq!(get_as(&srv, "/strict", "7.7.7.7").await.code(), 403);
    for client in ["6.6.6.6", "7.7.7.7"] {
        assert!(
            gk.status(ip(client)).await.unwrap().is_blacklisted(),
            "{client}"
        );
        // The probe: before the fix, its one-hour ban replaced the blacklist.
        assert_eq!(get_as(&srv, "/wp-login.php", client).await.code(), 403);
        clock.advance(secs(3601));
        assert_eq!(get_as(&srv, "/ping", client).await.code(), 403, "{client}");
        let status = gk.status(ip(client)).await.unwrap();
        assert!(status.is_blacklisted(), "{client}: {status:?}");
    }
}

#[actix_web::test]
async fn a_probe_never_shortens_a_longer_ban_but_lengthens_a_shorter_one() {
    let clock = FakeClock::new();
    let fg = floodgate(&clock);
    let srv = start(&fg);
    let gk = fg.gatekeeper();

    // A week's ban by report, then a probe (one hour): still a week.
    assert_eq!(get_as(&srv, "/login", "5.5.5.5").await.code(), 200);
    let week = gk.status(ip("5.5.5.5")).await.unwrap().ban.unwrap();
    assert_eq!(week.reason, BanReason::Reported);
    assert_eq!(get_as(&srv, "/wp-login.php", "5.5.5.5").await.code(), 403);
    clock.advance(secs(3601));
    assert_eq!(get_as(&srv, "/ping", "5.5.5.5").await.code(), 403);
    assert_eq!(gk.status(ip("5.5.5.5")).await.unwrap().ban, Some(week));

    // A one-minute operator ban, then a probe: the probe's hour wins.
    gk.ban(ip("4.4.4.4"), secs(60)).await.unwrap();
    let start = gk.now();
    assert_eq!(get_as(&srv, "/wp-login.php", "4.4.4.4").await.code(), 403);
    let ban = gk.status(ip("4.4.4.4")).await.unwrap().ban.unwrap();
    assert_eq!(ban.reason, BanReason::Probe);
    assert_eq!(ban.until, Some(start + secs(3600)));
    clock.advance(secs(61));
    assert_eq!(get_as(&srv, "/ping", "4.4.4.4").await.code(), 403);
    // Only an operator's unban shortens it.
    assert!(gk.unban(ip("4.4.4.4")).await.unwrap());
    assert_eq!(get_as(&srv, "/ping", "4.4.4.4").await.code(), 200);
}

/// The /64s of `2001:db8:0:NN00::/56` (NN = `net`), client `i`.
fn v6(net: u8, i: u8) -> String {
    format!("2001:db8:0:{net:02x}{i:02x}::1")
}

#[actix_web::test]
async fn rotating_through_the_64s_of_a_56_bans_the_56() {
    let clock = FakeClock::new();
    let fg = floodgate(&clock).ipv6_rotation(Ipv6Rotation::new().level(56, 3));
    let srv = start(&fg);

    // Three /64s of one /56, each banned by one failed login.
    for i in 0..3 {
        assert_eq!(get_as(&srv, "/login", &v6(1, i)).await.code(), 200);
        assert_eq!(get_as(&srv, "/ping", &v6(1, i)).await.code(), 403);
    }
    // A fresh /64 of the same /56 is refused before it did anything.
    assert_eq!(get_as(&srv, "/ping", &v6(1, 0x77)).await.code(), 403);
    let status = fg
        .gatekeeper()
        .status(floodgate::ClientKey::from_ip(ip("2001:db8:0:100::"), 56))
        .await
        .unwrap();
    assert!(status.is_banned(), "{status:?}");
    // Another /56 is not touched.
    assert_eq!(get_as(&srv, "/ping", &v6(2, 0)).await.code(), 200);
    // The network's ban ends with the ban that tipped it (capped at a day).
    clock.advance(secs(86_400));
    assert_eq!(get_as(&srv, "/ping", &v6(1, 0x77)).await.code(), 200);
}

#[actix_web::test]
async fn rotation_can_be_turned_off_and_ipv4_never_rotates() {
    let clock = FakeClock::new();
    let fg = floodgate(&clock).ipv6_rotation(Ipv6Rotation::off());
    let srv = start(&fg);
    for i in 0..8 {
        assert_eq!(get_as(&srv, "/login", &v6(3, i)).await.code(), 200);
    }
    assert_eq!(get_as(&srv, "/ping", &v6(3, 0x77)).await.code(), 200);

    let fg = floodgate(&clock).ipv6_rotation(Ipv6Rotation::new().level(56, 2));
    let srv = start(&fg);
    for i in 1..5 {
        assert_eq!(
            get_as(&srv, "/login", &format!("192.0.2.{i}")).await.code(),
            200
        );
    }
    assert_eq!(get_as(&srv, "/ping", "192.0.2.77").await.code(), 200);
}

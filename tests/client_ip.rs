//! Who the client is (SPEC 4, "Client IP"): the socket peer by default, a configured header
//! (its right-most value), forwarding headers from trusted proxies only, and IPv6 clients
//! keyed by their /64 unless configured otherwise. Every test server listens on 127.0.0.1, so
//! the peer of every request is 127.0.0.1.

use std::net::IpAddr;

use actix_web::{get, App};
use floodgate::{FakeClock, Floodgate, Rule};
use floodgate_tests::{get_as, secs, send, server_config, IP_HEADER};

#[get("/limited")]
async fn limited() -> &'static str {
    "ok"
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A floodgate allowing one request a minute per client.
fn one_per_minute(clock: &FakeClock) -> Floodgate {
    Floodgate::new()
        .clock(clock.clone())
        .rate_limit_rules([Rule::new(1, secs(60))])
}

fn start(fg: &Floodgate) -> actix_test::TestServer {
    let fg = fg.clone();
    actix_test::start_with(server_config(), move || {
        App::new().wrap(fg.clone()).service(limited)
    })
}

/// GET /limited with these headers.
async fn get_with(srv: &actix_test::TestServer, headers: &[(&str, &str)]) -> u16 {
    let mut req = srv.get("/limited");
    for (name, value) in headers {
        req = req.append_header((*name, *value));
    }
    send(req).await.code()
}

/// Requests used under the client's key, per floodgate's status.
async fn used(fg: &Floodgate, who: &str) -> u32 {
    let status = fg.gatekeeper().status(ip(who)).await.unwrap();
    status.windows.iter().map(|w| w.used).sum()
}

#[actix_web::test]
async fn by_default_the_client_is_the_peer_and_headers_are_ignored() {
    let clock = FakeClock::new();
    let fg = one_per_minute(&clock);
    let srv = start(&fg);

    assert_eq!(get_with(&srv, &[(IP_HEADER, "1.1.1.1")]).await, 200);
    assert_eq!(get_with(&srv, &[(IP_HEADER, "2.2.2.2")]).await, 429);
    assert_eq!(get_with(&srv, &[("x-forwarded-for", "3.3.3.3")]).await, 429);
    assert_eq!(get_with(&srv, &[("forwarded", "for=4.4.4.4")]).await, 429);
    assert_eq!(get_with(&srv, &[]).await, 429);
    assert_eq!(used(&fg, "127.0.0.1").await, 1);
    assert_eq!(used(&fg, "1.1.1.1").await, 0);
}

#[actix_web::test]
async fn ip_header_takes_the_rightmost_value_of_a_list() {
    let clock = FakeClock::new();
    let fg = one_per_minute(&clock).ip_header(IP_HEADER);
    let srv = start(&fg);

    // Counted as 2.2.2.2, the right-most.
    assert_eq!(
        get_with(&srv, &[(IP_HEADER, "1.1.1.1, 2.2.2.2")]).await,
        200
    );
    assert_eq!(get_as(&srv, "/limited", "2.2.2.2").await.code(), 429);
    assert_eq!(get_as(&srv, "/limited", "1.1.1.1").await.code(), 200);
    // Several header lines: the right-most value of the last one.
    assert_eq!(
        get_with(
            &srv,
            &[(IP_HEADER, "5.5.5.5"), (IP_HEADER, "6.6.6.6, 7.7.7.7")]
        )
        .await,
        200
    );
    assert_eq!(used(&fg, "7.7.7.7").await, 1);
    assert_eq!(used(&fg, "5.5.5.5").await, 0);
    assert_eq!(used(&fg, "6.6.6.6").await, 0);
    // Forms with a port and brackets name the same client.
    assert_eq!(get_with(&srv, &[(IP_HEADER, "8.8.8.8:443")]).await, 200);
    assert_eq!(get_as(&srv, "/limited", "8.8.8.8").await.code(), 429);
    assert_eq!(
        get_with(&srv, &[(IP_HEADER, "[2001:db8:9::1]:443")]).await,
        200
    );
    assert_eq!(get_as(&srv, "/limited", "2001:db8:9::1").await.code(), 429);
    // The peer was never counted.
    assert_eq!(used(&fg, "127.0.0.1").await, 0);
}

#[actix_web::test]
async fn a_missing_or_unparsable_ip_header_falls_back_to_the_peer() {
    let clock = FakeClock::new();
    let fg = one_per_minute(&clock).ip_header(IP_HEADER);
    let srv = start(&fg);

    // Missing: the peer, 127.0.0.1.
    assert_eq!(get_with(&srv, &[]).await, 200);
    assert_eq!(used(&fg, "127.0.0.1").await, 1);
    // Unparsable: the peer again, so refused.
    assert_eq!(get_with(&srv, &[(IP_HEADER, "not an ip")]).await, 429);
    assert_eq!(
        get_with(&srv, &[(IP_HEADER, "1.1.1.1, garbage")]).await,
        429
    );
    // The peer's own address in the header is the same client.
    assert_eq!(get_as(&srv, "/limited", "127.0.0.1").await.code(), 429);
    // A good header is its own client.
    assert_eq!(get_as(&srv, "/limited", "9.9.9.9").await.code(), 200);
    // After the window, the peer is allowed again through the fallback.
    clock.advance(secs(60));
    assert_eq!(get_with(&srv, &[(IP_HEADER, "garbage")]).await, 200);
    assert_eq!(get_with(&srv, &[]).await, 429);
}

#[actix_web::test]
async fn trusted_proxies_read_forwarding_headers_from_the_loopback_peer() {
    let clock = FakeClock::new();
    let fg = one_per_minute(&clock)
        .trusted_proxies(["127.0.0.0/8"])
        .unwrap();
    let srv = start(&fg);

    // X-Forwarded-For from a trusted peer: the client is the header's address.
    assert_eq!(get_with(&srv, &[("x-forwarded-for", "9.9.9.9")]).await, 200);
    assert_eq!(get_with(&srv, &[("x-forwarded-for", "9.9.9.9")]).await, 429);
    assert_eq!(used(&fg, "9.9.9.9").await, 1);
    // The right-most hop that is not a trusted proxy.
    assert_eq!(
        get_with(&srv, &[("x-forwarded-for", "6.6.6.6, 9.9.9.9, 127.0.0.9")]).await,
        429
    );
    assert_eq!(
        get_with(&srv, &[("x-forwarded-for", "9.9.9.9, 5.5.5.5")]).await,
        200
    );
    assert_eq!(used(&fg, "5.5.5.5").await, 1);
    // Forwarded is not the header this proxy writes: never read.
    assert_eq!(
        get_with(&srv, &[("forwarded", "for=4.4.4.4;proto=http")]).await,
        200
    );
    assert_eq!(used(&fg, "4.4.4.4").await, 0);
    assert_eq!(used(&fg, "127.0.0.1").await, 1);
    // No forwarding header: the proxy itself is the client.
    assert_eq!(get_with(&srv, &[]).await, 429);
    assert_eq!(used(&fg, "127.0.0.1").await, 1);
    // The ip_header is not consulted in this mode.
    assert_eq!(get_with(&srv, &[(IP_HEADER, "3.3.3.3")]).await, 429);
}

#[actix_web::test]
async fn trusted_proxies_writing_forwarded_are_read_through_it() {
    let clock = FakeClock::new();
    let fg = one_per_minute(&clock)
        .trusted_proxies(["127.0.0.0/8"])
        .unwrap()
        .proxy_header(floodgate::ProxyHeader::Forwarded);
    let srv = start(&fg);

    // Forwarded (RFC 7239), with quoting and a port.
    assert_eq!(
        get_with(&srv, &[("forwarded", "for=4.4.4.4;proto=http")]).await,
        200
    );
    assert_eq!(
        get_with(
            &srv,
            &[("forwarded", "for=\"4.4.4.4:8080\", for=127.0.0.2")]
        )
        .await,
        429
    );
    assert_eq!(
        get_with(&srv, &[("forwarded", "for=\"[2001:db8:4::1]:80\"")]).await,
        200
    );
    assert_eq!(used(&fg, "2001:db8:4::1").await, 1);
    // X-Forwarded-For is not the header this proxy writes: never read.
    assert_eq!(get_with(&srv, &[("x-forwarded-for", "9.9.9.9")]).await, 200);
    assert_eq!(used(&fg, "9.9.9.9").await, 0);
    assert_eq!(used(&fg, "127.0.0.1").await, 1);
}

#[actix_web::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let clock = FakeClock::new();
    let fg = one_per_minute(&clock)
        .trusted_proxies(["10.0.0.0/8"])
        .unwrap();
    let srv = start(&fg);

    // The loopback peer is not a trusted proxy: its forwarding headers are forged.
    assert_eq!(get_with(&srv, &[("x-forwarded-for", "9.9.9.9")]).await, 200);
    assert_eq!(get_with(&srv, &[("x-forwarded-for", "8.8.8.8")]).await, 429);
    assert_eq!(get_with(&srv, &[("forwarded", "for=7.7.7.7")]).await, 429);
    assert_eq!(used(&fg, "127.0.0.1").await, 1);
    assert_eq!(used(&fg, "9.9.9.9").await, 0);
}

#[actix_web::test]
async fn ipv6_clients_in_one_64_share_limits_and_other_64s_do_not() {
    let clock = FakeClock::new();
    let fg = one_per_minute(&clock).ip_header(IP_HEADER);
    let srv = start(&fg);

    assert_eq!(
        get_as(&srv, "/limited", "2001:db8:1:2::1").await.code(),
        200
    );
    // Same /64, other interface id: the same client.
    assert_eq!(
        get_as(&srv, "/limited", "2001:db8:1:2:ffff:eeee:dddd:cccc")
            .await
            .code(),
        429
    );
    // Neighbouring /64s: other clients.
    assert_eq!(
        get_as(&srv, "/limited", "2001:db8:1:3::1").await.code(),
        200
    );
    assert_eq!(
        get_as(&srv, "/limited", "2001:db8:1:1::1").await.code(),
        200
    );
    // The status of any address of the /64 is the /64's.
    let status = fg
        .gatekeeper()
        .status(ip("2001:db8:1:2::abcd"))
        .await
        .unwrap();
    assert_eq!(status.client.to_string(), "2001:db8:1:2::/64");
    assert_eq!(status.windows.iter().map(|w| w.used).sum::<u32>(), 1);
    // A ban of one address bans its /64.
    fg.gatekeeper()
        .ban(ip("2001:db8:7:7::1"), secs(60))
        .await
        .unwrap();
    assert_eq!(
        get_as(&srv, "/limited", "2001:db8:7:7::2").await.code(),
        403
    );
    assert_eq!(
        get_as(&srv, "/limited", "2001:db8:7:8::1").await.code(),
        200
    );
    // IPv4-mapped addresses are their IPv4 client.
    assert_eq!(get_as(&srv, "/limited", "192.0.2.1").await.code(), 200);
    assert_eq!(
        get_as(&srv, "/limited", "::ffff:192.0.2.1").await.code(),
        429
    );
}

#[actix_web::test]
async fn ipv6_prefix_128_keys_each_address() {
    let clock = FakeClock::new();
    let fg = one_per_minute(&clock).ip_header(IP_HEADER).ipv6_prefix(128);
    let srv = start(&fg);

    assert_eq!(
        get_as(&srv, "/limited", "2001:db8:1:2::1").await.code(),
        200
    );
    assert_eq!(
        get_as(&srv, "/limited", "2001:db8:1:2::2").await.code(),
        200
    );
    assert_eq!(
        get_as(&srv, "/limited", "2001:db8:1:2::1").await.code(),
        429
    );
    assert_eq!(
        get_as(&srv, "/limited", "2001:db8:1:2::2").await.code(),
        429
    );
    let status = fg.gatekeeper().status(ip("2001:db8:1:2::1")).await.unwrap();
    assert_eq!(status.client.to_string(), "2001:db8:1:2::1");

    // A /48 keys a whole site.
    let clock = FakeClock::new();
    let fg = one_per_minute(&clock).ip_header(IP_HEADER).ipv6_prefix(48);
    let srv = start(&fg);
    assert_eq!(
        get_as(&srv, "/limited", "2001:db8:1:2::1").await.code(),
        200
    );
    assert_eq!(
        get_as(&srv, "/limited", "2001:db8:1:3::1").await.code(),
        429
    );
    assert_eq!(
        get_as(&srv, "/limited", "2001:db8:2:2::1").await.code(),
        200
    );
}

#[actix_web::test]
async fn try_ip_header_takes_a_valid_name_and_refuses_an_invalid_one() {
    let clock = FakeClock::new();
    // Surrounding blanks are trimmed; the header then works as with ip_header.
    let fg = one_per_minute(&clock)
        .try_ip_header(&format!(" {IP_HEADER} "))
        .expect("a valid header name");
    let srv = start(&fg);
    assert_eq!(get_with(&srv, &[(IP_HEADER, "198.51.100.1")]).await, 200);
    assert_eq!(get_with(&srv, &[(IP_HEADER, "198.51.100.1")]).await, 429);
    assert_eq!(get_with(&srv, &[(IP_HEADER, "198.51.100.2")]).await, 200);

    for bad in ["", " ", "x ip", "x:ip", "x\tip", "é"] {
        let err = Floodgate::new().try_ip_header(bad).unwrap_err();
        assert_eq!(err.field(), "ip_header", "{bad:?}");
        assert_eq!(
            err.to_string(),
            format!("invalid ip_header: {bad:?} is not a valid header name")
        );
        // ip_header keeps the mistake for validate(), which stops the app from starting.
        let err = Floodgate::new().ip_header(bad).validate().unwrap_err();
        assert_eq!(err.field(), "ip_header", "{bad:?}");
    }
}

#[actix_web::test]
async fn invalid_trusted_proxies_are_an_error_naming_the_entry() {
    for bad in [
        "10.0.0.0/33",
        "10.0.0",
        "proxy.example",
        "",
        "::1/129",
        "10.0.0.0/8/8",
    ] {
        let err = Floodgate::new()
            .trusted_proxies(["10.0.0.0/8", bad])
            .unwrap_err();
        assert_eq!(err.field(), "trusted_proxies", "{bad:?}");
        assert_eq!(
            err.to_string(),
            format!("invalid trusted_proxies: {bad:?} is not an address or CIDR range")
        );
    }
    // Addresses, ranges and blanks around them are fine.
    let ok = Floodgate::new().trusted_proxies([" 127.0.0.1 ", "10.0.0.0/8", "::1", "fd00::/8"]);
    assert!(ok.is_ok());
    let clock = FakeClock::new();
    let fg = one_per_minute(&clock)
        .trusted_proxies([" 127.0.0.1 "])
        .unwrap();
    let srv = start(&fg);
    let xff = "x-forwarded-for";
    assert_eq!(get_with(&srv, &[(xff, "198.51.100.3")]).await, 200);
    assert_eq!(get_with(&srv, &[(xff, "198.51.100.3")]).await, 429);
    assert_eq!(get_with(&srv, &[(xff, "198.51.100.4")]).await, 200);
}

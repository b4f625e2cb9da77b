//! Unit tests of `client.rs`.

use super::*;
use actix_web::http::header::{HeaderName, HeaderValue};

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v).unwrap(),
        );
    }
    map
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn the_dotted_quad_fast_path_agrees_with_the_standard_parser() {
    let cases = [
        "1.2.3.4",
        "0.0.0.0",
        "255.255.255.255",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3",
        "1.2.3.4.5",
        "1..3.4",
        ".1.2.3",
        "1.2.3.",
        "10.0.0.10",
        "1.2.3.4 ",
        "1.2.3.04",
        "100.200.300.1",
        "1.2.3.a",
        "0.00.0.0",
    ];
    for c in cases {
        assert_eq!(
            dotted_quad(c.as_bytes()),
            c.parse::<std::net::Ipv4Addr>().ok(),
            "{c}"
        );
    }
    for n in [0u32, 1, 255, 256, 65_535, 16_777_216, u32::MAX, 0x0A00_000A] {
        let text = std::net::Ipv4Addr::from(n).to_string();
        assert_eq!(dotted_quad(text.as_bytes()), Some(n.into()), "{text}");
    }
}

proptest::proptest! {
    #[test]
    fn the_dotted_quad_fast_path_agrees_with_the_standard_parser_on_any_text(
        text in "[0-9.a ]{0,17}"
    ) {
        proptest::prop_assert_eq!(
            dotted_quad(text.as_bytes()),
            text.parse::<std::net::Ipv4Addr>().ok(),
            "{}", text
        );
    }
}

#[test]
fn ipv6_is_keyed_by_its_64() {
    let a = ClientKey::from_ip(ip("2001:db8:1:2:aaaa::1"), 64);
    let b = ClientKey::from_ip(ip("2001:db8:1:2:bbbb::9"), 64);
    let c = ClientKey::from_ip(ip("2001:db8:1:3::1"), 64);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.to_string(), "2001:db8:1:2::/64");
    assert_eq!(
        ClientKey::from_ip(ip("2001:db8::1"), 128).to_string(),
        "2001:db8::1"
    );
    assert_eq!(
        ClientKey::from_ip(ip("::ffff:192.0.2.1"), 64),
        ClientKey::from_ip(ip("192.0.2.1"), 64)
    );
}

#[test]
fn header_takes_the_rightmost_value_and_falls_back_to_the_peer() {
    let src = IpSource::Header(HeaderName::from_static("x-my-ip"));
    let peer = Some(ip("10.0.0.1"));
    let h = headers(&[("x-my-ip", b"1.1.1.1, 2.2.2.2")]);
    assert_eq!(src.client_ip(peer, &h), Some(ip("2.2.2.2")));
    for bad in [
        &b"not an ip"[..],
        b"",
        b"\xff\xfe",
        b"1.1.1.1, garbage",
        b"1.2.3.4:",
        b"1.2.3.4:123456",
        b"[2001:db8::1",
        b"[::1]garbage",
        b"[2001:db8::1]:",
        b"[1.2.3.4]",
        b"\"1.2.3.4",
        b"\"",
    ] {
        let h = headers(&[("x-my-ip", bad)]);
        assert_eq!(src.client_ip(peer, &h), peer, "{bad:?}");
    }
    let huge = format!("{}1.1.1.1", " ".repeat(9000));
    let h = headers(&[("x-my-ip", huge.as_bytes())]);
    assert_eq!(src.client_ip(peer, &h), peer);
    assert_eq!(src.client_ip(peer, &HeaderMap::new()), peer);
    let h = headers(&[("x-my-ip", b"\"1.2.3.4\"")]);
    assert_eq!(src.client_ip(peer, &h), Some(ip("1.2.3.4")));
    let h = headers(&[("x-my-ip", b"[2001:db8::7]:443")]);
    assert_eq!(src.client_ip(peer, &h), Some(ip("2001:db8::7")));
    let h = headers(&[("x-my-ip", b"1.1.1.1"), ("x-my-ip", b"3.3.3.3:80")]);
    assert_eq!(src.client_ip(peer, &h), Some(ip("3.3.3.3")));
}

fn nets(list: &[&str]) -> Arc<[IpNet]> {
    list.iter()
        .map(|n| n.parse().unwrap())
        .collect::<Vec<_>>()
        .into()
}

#[test]
fn trusted_proxies_walk_from_the_right() {
    let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::XForwardedFor);
    let h = headers(&[("x-forwarded-for", b"6.6.6.6, 5.5.5.5, 10.1.1.1")]);
    // From a trusted proxy: the first untrusted hop from the right.
    assert_eq!(src.client_ip(Some(ip("10.0.0.2")), &h), Some(ip("5.5.5.5")));
    // From anyone else, the header is ignored.
    assert_eq!(src.client_ip(Some(ip("7.7.7.7")), &h), Some(ip("7.7.7.7")));
    // The proxy's own request, with no header: the proxy is the client.
    assert_eq!(
        src.client_ip(Some(ip("10.0.0.2")), &HeaderMap::new()),
        Some(ip("10.0.0.2"))
    );
    // Every hop trusted: the left-most one sent the request.
    let h = headers(&[("x-forwarded-for", b"10.9.9.9, 10.1.1.1")]);
    assert_eq!(
        src.client_ip(Some(ip("10.0.0.2")), &h),
        Some(ip("10.9.9.9"))
    );
    // Several header lines are one list, in order.
    let h = headers(&[
        ("x-forwarded-for", b"6.6.6.6"),
        ("x-forwarded-for", b"5.5.5.5, 10.1.1.1"),
    ]);
    assert_eq!(src.client_ip(Some(ip("10.0.0.2")), &h), Some(ip("5.5.5.5")));
}

#[test]
fn an_unparsable_hop_never_makes_a_proxy_the_client() {
    let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::XForwardedFor);
    let proxy = Some(ip("10.0.0.2"));
    for bad in [
        &b"6.6.6.6, garbage, 10.1.1.1"[..],
        b"unknown",
        b"6.6.6.6, ",
        b"_hidden",
        b"",
        b"\xff\xfe",
    ] {
        let h = headers(&[("x-forwarded-for", bad)]);
        assert_eq!(src.client_ip(proxy, &h), None, "{bad:?}");
    }
    let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::Forwarded);
    for bad in [
        &b"for=unknown"[..],
        b"for=_hidden",
        b"proto=https",
        b"for=1.2.3.4;for=5.6.7.8",
        b"for=\"1.2.3.4",
        b",",
    ] {
        let h = headers(&[("forwarded", bad)]);
        assert_eq!(src.client_ip(proxy, &h), None, "{bad:?}");
    }
    // A hop list longer than the walk's bound, all trusted: not known.
    let long = vec!["10.1.1.1"; MAX_HOPS + 5].join(", ");
    let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::XForwardedFor);
    let h = headers(&[("x-forwarded-for", long.as_bytes())]);
    assert_eq!(src.client_ip(proxy, &h), None);
}

#[test]
fn only_the_named_forwarding_header_is_read() {
    let xff = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::XForwardedFor);
    let fwd = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::Forwarded);
    let proxy = Some(ip("10.0.0.2"));
    // The client sent its own Forwarded; the proxy wrote X-Forwarded-For.
    let h = headers(&[
        ("forwarded", b"for=1.1.1.1"),
        ("x-forwarded-for", b"5.5.5.5"),
    ]);
    assert_eq!(xff.client_ip(proxy, &h), Some(ip("5.5.5.5")));
    assert_eq!(fwd.client_ip(proxy, &h), Some(ip("1.1.1.1")));
    // The other header alone is never a fallback.
    let h = headers(&[("forwarded", b"for=1.1.1.1")]);
    assert_eq!(xff.client_ip(proxy, &h), proxy);
    let h = headers(&[("x-forwarded-for", b"5.5.5.5")]);
    assert_eq!(fwd.client_ip(proxy, &h), proxy);
    // Forwarded with quotes, ports, brackets, case and commas inside quotes.
    let h = headers(&[(
        "forwarded",
        b"for=6.6.6.6, For=\"[2001:db8::1]:80\";proto=https, for=10.1.1.1",
    )]);
    assert_eq!(fwd.client_ip(proxy, &h), Some(ip("2001:db8::1")));
    let h = headers(&[("forwarded", b"for=\"1.2.3.4, 10.1.1.1\"")]);
    assert_eq!(fwd.client_ip(proxy, &h), None);
    let h = headers(&[("forwarded", b"proto=https;for=\"4.4.4.4:8080\";by=10.0.0.2")]);
    assert_eq!(fwd.client_ip(proxy, &h), Some(ip("4.4.4.4")));
    // A client's unbalanced quote does not swallow the hop the proxy appended to its line.
    for forged in [
        &b"for=\"1.2.3.4, for=5.6.7.8"[..],
        b"for=\"a\\\", for=\"5.6.7.8:80\"",
    ] {
        let h = headers(&[("forwarded", forged)]);
        assert_eq!(fwd.client_ip(proxy, &h), Some(ip("5.6.7.8")), "{forged:?}");
    }
}

mod props {
    //! Property tests: the forwarding-header walk against a reference model, over hops
    //! written every way a proxy (or a lying client) writes them.
    use super::*;
    use proptest::prelude::*;

    /// One hop: an address written in some style, or something that is not an address.
    #[derive(Clone, Debug)]
    enum Hop {
        Addr(IpAddr, u8),
        Junk(&'static str),
    }

    fn addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            // Trusted proxies (10.0.0.0/8) and clients, IPv4 and IPv6.
            (any::<u8>(), any::<u8>()).prop_map(|(a, b)| IpAddr::from([10, a, b, 1])),
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u16; 8]>().prop_map(|s| IpAddr::from(Ipv6Addr::from(s))),
        ]
    }

    fn hop() -> impl Strategy<Value = Hop> {
        prop_oneof![
            4 => (addr(), 0u8..4).prop_map(|(a, style)| Hop::Addr(a, style)),
            1 => prop::sample::select(vec![
                "unknown", "_hidden", "_a1-b2", "", "garbage", "1.2.3", "[::1", "1.2.3.4:",
                "::1]:80", "\"1.2.3.4",
            ])
            .prop_map(Hop::Junk),
        ]
    }

    /// The hop as X-Forwarded-For writes it.
    fn xff_text(h: &Hop) -> String {
        match h {
            Hop::Addr(IpAddr::V4(a), 1) => format!("{a}:8080"),
            Hop::Addr(IpAddr::V6(a), 1) => format!("[{a}]:443"),
            Hop::Addr(IpAddr::V6(a), 2) => format!("[{a}]"),
            Hop::Addr(a, 3) => format!(" \"{a}\" "),
            Hop::Addr(a, _) => format!(" {a}"),
            Hop::Junk(j) => (*j).to_owned(),
        }
    }

    /// The hop as a `Forwarded` element.
    fn forwarded_text(h: &Hop) -> String {
        match h {
            Hop::Addr(IpAddr::V4(a), 1) => format!("for=\"{a}:8080\";proto=https"),
            Hop::Addr(IpAddr::V6(a), 1) => format!("For=\"[{a}]:443\""),
            Hop::Addr(IpAddr::V6(a), _) => format!("proto=http;for=\"[{a}]\";by=_p"),
            Hop::Addr(a, _) => format!("for={a}"),
            Hop::Junk("") => "proto=https".to_owned(),
            Hop::Junk(j) => format!("for={j}"),
        }
    }

    /// Whether a junk hop could be read as an address in this header (never: the junk
    /// list holds none).
    fn trusted(ip: &IpAddr) -> bool {
        matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10)
    }

    /// The reference: from the right, skip trusted proxies; the first other address is
    /// the client; a hop that is not an address, or a walk past 64 hops, is unknown; all
    /// trusted: the left-most; none: the peer.
    fn model(hops: &[Hop], peer: IpAddr) -> Option<IpAddr> {
        if hops.is_empty() {
            return Some(peer);
        }
        for (i, h) in hops.iter().rev().enumerate() {
            if i >= MAX_HOPS {
                return None;
            }
            match h {
                Hop::Addr(a, _) if trusted(a) => continue,
                Hop::Addr(a, _) => return Some(*a),
                Hop::Junk(_) => return None,
            }
        }
        match &hops[0] {
            Hop::Addr(a, _) => Some(*a),
            Hop::Junk(_) => None,
        }
    }

    /// `parts` joined by `sep`, cut into header lines at the `cuts` positions.
    fn lines(parts: &[String], cuts: &[usize]) -> Vec<String> {
        let mut out = Vec::new();
        let mut current: Vec<String> = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            if cuts.contains(&i) && !current.is_empty() {
                out.push(current.join(","));
                current.clear();
            }
            current.push(p.clone());
        }
        if !current.is_empty() {
            out.push(current.join(","));
        }
        out
    }

    fn map(name: &str, values: &[String], other: (&str, &str)) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                actix_web::http::header::HeaderValue::from_str(v).unwrap(),
            );
        }
        // The header the proxy does not write, as a client would forge it.
        m.append(
            HeaderName::from_bytes(other.0.as_bytes()).unwrap(),
            actix_web::http::header::HeaderValue::from_str(other.1).unwrap(),
        );
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn the_xff_walk_matches_the_model(
            hops in prop::collection::vec(hop(), 0..8),
            cuts in prop::collection::vec(0usize..8, 0..3),
            forged in addr(),
        ) {
            let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::XForwardedFor);
            let peer = IpAddr::from([10, 0, 0, 2]);
            let parts: Vec<String> = hops.iter().map(xff_text).collect();
            let forged = format!("for={forged}");
            let h = map("x-forwarded-for", &lines(&parts, &cuts), ("forwarded", &forged));
            prop_assert_eq!(src.client_ip(Some(peer), &h), model(&hops, peer));
        }

        #[test]
        fn the_forwarded_walk_matches_the_model(
            hops in prop::collection::vec(hop(), 0..8),
            cuts in prop::collection::vec(0usize..8, 0..3),
            forged in addr(),
        ) {
            let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::Forwarded);
            let peer = IpAddr::from([10, 0, 0, 2]);
            let parts: Vec<String> = hops.iter().map(forwarded_text).collect();
            let forged = forged.to_string();
            let h = map("forwarded", &lines(&parts, &cuts), ("x-forwarded-for", &forged));
            prop_assert_eq!(src.client_ip(Some(peer), &h), model(&hops, peer));
        }

        #[test]
        fn an_untrusted_peer_is_always_the_client(
            hops in prop::collection::vec(hop(), 0..8),
            peer in any::<[u8; 4]>().prop_filter("not a proxy", |p| p[0] != 10),
        ) {
            let peer = IpAddr::from(peer);
            let parts: Vec<String> = hops.iter().map(xff_text).collect();
            let h = map("x-forwarded-for", &[parts.join(",")], ("forwarded", "for=1.1.1.1"));
            for header in [ProxyHeader::XForwardedFor, ProxyHeader::Forwarded] {
                let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), header);
                prop_assert_eq!(src.client_ip(Some(peer), &h), Some(peer));
            }
        }

        #[test]
        fn any_bytes_give_an_answer_and_never_a_proxy_from_junk(
            values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..4),
        ) {
            let peer = IpAddr::from([10, 0, 0, 2]);
            for (name, header) in [
                ("x-forwarded-for", ProxyHeader::XForwardedFor),
                ("forwarded", ProxyHeader::Forwarded),
            ] {
                let mut m = HeaderMap::new();
                for v in &values {
                    if let Ok(v) = actix_web::http::header::HeaderValue::from_bytes(v) {
                        m.append(HeaderName::from_static(name), v);
                    }
                }
                let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), header);
                let found = src.client_ip(Some(peer), &m);
                // Whatever the bytes, the result is the peer only when no hop was sent.
                if found == Some(peer) {
                    prop_assert!(m.get(name).is_none());
                }
                let ip_header = IpSource::Header(HeaderName::from_static(name));
                prop_assert!(ip_header.client_ip(Some(peer), &m).is_some());
            }
        }
    }
}

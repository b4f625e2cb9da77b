//! Hostile input (SPEC 8): forged, malformed, multi-valued, huge and non-UTF-8 client-IP
//! headers get a correct decision keyed by the fallback (the peer, 127.0.0.1), never a crash;
//! a flood of distinct addresses stays within the memory store's bound and does not free a
//! banned client. The flood is sent as raw pipelined HTTP/1.1 on plain sockets, which costs a
//! fraction of a full client's CPU, so that 20,000 requests take about a second.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{get, App};
use floodgate::{FakeClock, Floodgate, MemoryStore, Rule};
use floodgate_tests::{from_ip_bytes, get_as, millis, secs, send, server_config, IP_HEADER};

#[get("/limited")]
async fn limited() -> &'static str {
    "ok"
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn start(fg: &Floodgate) -> actix_test::TestServer {
    let fg = fg.clone();
    actix_test::start_with(server_config(), move || {
        App::new().wrap(fg.clone()).service(limited)
    })
}

/// A value of more than 8 KB whose right-most entry is a good address.
fn huge_list() -> Vec<u8> {
    let mut v = "1.1.1.1, ".repeat(1000).into_bytes(); // 9000 bytes
    v.extend_from_slice(b"2.2.2.2");
    v
}

/// Malformed, forged-looking, huge and non-UTF-8 values of the client-IP header: none names a
/// client, so each must be keyed by the peer.
fn bad_values() -> Vec<Vec<u8>> {
    let mut values: Vec<Vec<u8>> = [
        &b"not-an-ip"[..],
        b"",
        b" ",
        b",",
        b"999.999.999.999",
        b"256.1.1.1",
        b"1.2.3",
        b"1.2.3.4.5",
        b"01.02.03.04x",
        b"::gg",
        b"2001:db8::1::2",
        b"fe80::1%eth0",
        b"1.1.1.1, garbage",
        b"1.1.1.1,",
        b"unknown",
        b"_hidden",
        b"1.2.3.4:http",
        b"1.2.3.4:",
        b"[2001:db8::1",
        b"[::1]garbage",
        b"[2001:db8::1]:",
        b"[1.2.3.4]",
        b"\"1.2.3.4",
        b"for=1.2.3.4",
        b"localhost",
        b"\xff\xfe\xfd",
        b"1.1.1.1\xff",
        b"\x801.1.1.1",
        b"1.1.1.1\tx",
    ]
    .iter()
    .map(|v| v.to_vec())
    .collect();
    values.push(huge_list());
    values.push(vec![b' '; 16 * 1024]);
    // (Spaces around a value are not part of it: HTTP parsers strip them.)
    values.push(format!("junk{}2.2.2.2", " ".repeat(9000)).into_bytes());
    values
}

#[actix_web::test]
async fn malformed_huge_and_non_utf8_ip_headers_are_keyed_by_the_peer() {
    let clock = FakeClock::new();
    let store = Arc::new(MemoryStore::new());
    let values = bad_values();
    let n = values.len();
    let fg = Floodgate::new()
        .clock(clock.clone())
        .store(store.clone())
        .ip_header(IP_HEADER)
        .rate_limit_rules([Rule::new(n as u32, secs(60))]);
    let srv = start(&fg);

    // Each is a request of the peer: all n fit its quota...
    for value in &values {
        let r = send(from_ip_bytes(srv.get("/limited"), value)).await;
        assert_eq!(
            (r.code(), r.text()),
            (200, "ok"),
            "value {:?}",
            String::from_utf8_lossy(&value[..value.len().min(40)])
        );
    }
    let status = fg.gatekeeper().status(ip("127.0.0.1")).await.unwrap();
    assert_eq!(
        status.windows.iter().map(|w| w.used).sum::<u32>(),
        n as u32,
        "every bad value should be counted under the peer"
    );
    assert_eq!(store.len(), 1, "no other client was created");
    // ...and the next one, whatever it holds, is refused like the peer itself.
    for value in &values {
        let r = send(from_ip_bytes(srv.get("/limited"), value)).await;
        assert_eq!(r.code(), 429);
        assert_eq!(r.header("retry-after"), Some("60"));
    }
    assert_eq!(get_as(&srv, "/limited", "127.0.0.1").await.code(), 429);
    let r = send(srv.get("/limited")).await;
    assert_eq!(r.code(), 429);

    // The server keeps serving everyone else.
    assert_eq!(get_as(&srv, "/limited", "2.2.2.2").await.code(), 200);
    assert_eq!(get_as(&srv, "/limited", "2001:db8::1").await.code(), 200);
    assert_eq!(store.len(), 3);
}

#[actix_web::test]
async fn multi_valued_ip_headers_use_the_last_value_or_fall_back_to_the_peer() {
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .rate_limit_rules([Rule::new(1, secs(60))]);
    let srv = start(&fg);
    let name = HeaderName::from_static(IP_HEADER);
    let value = |v: &[u8]| HeaderValue::from_bytes(v).unwrap();

    // Last line unusable: the peer, not the earlier good value.
    let req = srv
        .get("/limited")
        .append_header((name.clone(), value(b"1.1.1.1")))
        .append_header((name.clone(), value(b"garbage")));
    assert_eq!(send(req).await.code(), 200);
    assert_eq!(get_as(&srv, "/limited", "127.0.0.1").await.code(), 429);
    assert_eq!(get_as(&srv, "/limited", "1.1.1.1").await.code(), 200);

    // Many lines of junk, then non-UTF-8: the peer, refused.
    let mut req = srv.get("/limited");
    for k in 0..60 {
        req = req.append_header((name.clone(), value(format!("junk{k}").as_bytes())));
    }
    req = req.append_header((name.clone(), value(b"\xff\xff")));
    let r = send(req).await;
    assert_eq!(r.code(), 429);

    // Good last line among bad ones: that client.
    let req = srv
        .get("/limited")
        .append_header((name.clone(), value(b"\xfe\xfe")))
        .append_header((name.clone(), value(b"junk, 3.3.3.3")));
    assert_eq!(send(req).await.code(), 200);
    assert_eq!(get_as(&srv, "/limited", "3.3.3.3").await.code(), 429);

    // Still serving.
    assert_eq!(get_as(&srv, "/limited", "4.4.4.4").await.code(), 200);
}

#[actix_web::test]
async fn forged_forwarding_headers_are_keyed_by_the_peer() {
    let clock = FakeClock::new();
    // Loopback is not a trusted proxy here: every forwarding header is forged.
    let untrusted = Floodgate::new()
        .clock(clock.clone())
        .trusted_proxies(["10.0.0.0/8", "192.168.0.0/16"])
        .unwrap()
        .rate_limit_rules([Rule::new(4, secs(60))]);
    let srv = start(&untrusted);
    let forged: [(&str, &[u8]); 4] = [
        ("x-forwarded-for", b"9.9.9.9"),
        ("forwarded", b"for=9.9.9.9"),
        ("x-forwarded-for", b"\xff\xfe"),
        ("x-forwarded-for", &huge_list()),
    ];
    for (name, v) in forged {
        let r = send(
            srv.get("/limited")
                .insert_header((name, HeaderValue::from_bytes(v).unwrap())),
        )
        .await;
        assert_eq!(r.code(), 200, "{name}");
    }
    let r = send(
        srv.get("/limited")
            .insert_header(("x-forwarded-for", "8.8.8.8")),
    )
    .await;
    assert_eq!(r.code(), 429, "all forged requests were the peer's");

    // From a trusted proxy (loopback trusted), an unusable hop of the header it writes
    // (X-Forwarded-For) makes the client unknown, never the proxy itself; the header it does
    // not write (Forwarded) is never read, so the proxy's own requests stay its own.
    let clock = FakeClock::new();
    let trusted = Floodgate::new()
        .clock(clock.clone())
        .trusted_proxies(["127.0.0.0/8"])
        .unwrap()
        .rate_limit_rules([Rule::new(6, secs(60))]);
    let srv = start(&trusted);
    let huge = huge_list();
    let unknown: [&[u8]; 4] = [b"garbage", b"9.9.9.9, garbage", b"unknown", &huge];
    for v in unknown {
        let r = send(
            srv.get("/limited")
                .insert_header(("x-forwarded-for", HeaderValue::from_bytes(v).unwrap())),
        )
        .await;
        assert_eq!(
            r.code(),
            200,
            "{:?}",
            String::from_utf8_lossy(&v[..v.len().min(40)])
        );
    }
    let ignored: [&[u8]; 3] = [
        b"for=unknown",
        b"for=\"_obfuscated\";proto=https",
        b"\xff\xfe",
    ];
    for v in ignored {
        let r = send(
            srv.get("/limited")
                .insert_header(("forwarded", HeaderValue::from_bytes(v).unwrap())),
        )
        .await;
        assert_eq!(r.code(), 200, "{:?}", String::from_utf8_lossy(v));
    }
    let gk = trusted.gatekeeper();
    let used = |status: floodgate::ClientStatus| status.windows.iter().map(|w| w.used).sum::<u32>();
    let status = gk
        .status(floodgate::ClientKey::custom("unknown"))
        .await
        .unwrap();
    assert_eq!(used(status), 4);
    let status = gk.status(ip("127.0.0.1")).await.unwrap();
    assert_eq!(used(status), 3);
    let status = gk.status(ip("9.9.9.9")).await.unwrap();
    assert_eq!(used(status), 0);
    assert_eq!(
        send(
            srv.get("/limited")
                .insert_header(("x-forwarded-for", "9.9.9.9"))
        )
        .await
        .code(),
        200
    );
}

#[actix_web::test]
async fn a_flood_of_distinct_clients_stays_bounded_and_keeps_a_banned_client_banned() {
    const FLOOD: usize = 20_000;
    const BATCH: usize = 250;
    let clock = FakeClock::new();
    let store = Arc::new(MemoryStore::builder().max_clients(1000).build());
    let capacity = store.capacity();
    assert!((1000..1100).contains(&capacity), "capacity {capacity}");
    let fg = Floodgate::new()
        .clock(clock.clone())
        .store(store.clone())
        .ip_header(IP_HEADER)
        .rate_limit_rules([Rule::new(5, secs(60))]);
    let srv = start(&fg);
    let gk = fg.gatekeeper();

    // A banned client, and one blacklisted, before the flood.
    gk.ban(ip("203.0.113.9"), secs(3600)).await.unwrap();
    gk.blacklist(ip("203.0.113.10")).await.unwrap();
    assert_eq!(get_as(&srv, "/limited", "203.0.113.9").await.code(), 403);

    // Pipelined requests on two connections per batch (one per worker); the bound is checked
    // after every batch, 80 times in all.
    let addr = srv.addr();
    let mut served = 0;
    for start in (0..FLOOD).step_by(BATCH) {
        let batch: Vec<String> = (start..start + BATCH)
            .map(|i| {
                let who = format!("172.{}.{}.{}", 16 + (i >> 16), (i >> 8) & 255, i & 255);
                format!("GET /limited HTTP/1.1\r\nhost: localhost\r\n{IP_HEADER}: {who}\r\n\r\n")
            })
            .collect();
        let halves: Vec<Vec<String>> = batch.chunks(BATCH / 2).map(<[String]>::to_vec).collect();
        let threads: Vec<_> = halves
            .into_iter()
            .map(|reqs| std::thread::spawn(move || floodgate_tests::pipelined(addr, &reqs)))
            .collect();
        for t in threads {
            let codes = t.join().expect("flood thread");
            assert!(codes.iter().all(|&c| c == 200), "{codes:?}");
            served += codes.len();
        }
        let len = store.len();
        assert!(
            len <= capacity,
            "{len} clients tracked, capacity {capacity}"
        );
        clock.advance(millis(10));
    }
    assert_eq!(served, FLOOD);
    assert!(store.len() <= capacity);

    // The banned clients survived the flood.
    let r = get_as(&srv, "/limited", "203.0.113.9").await;
    assert_eq!(r.code(), 403);
    assert_eq!(r.header("retry-after"), Some("3600"));
    assert!(gk.status(ip("203.0.113.9")).await.unwrap().is_banned());
    let r = get_as(&srv, "/limited", "203.0.113.10").await;
    assert_eq!((r.code(), r.header("retry-after")), (403, None));
    // The server still serves and limits.
    assert_eq!(get_as(&srv, "/limited", "198.51.100.1").await.code(), 200);
    let last = FLOOD - 1;
    let recent = format!(
        "172.{}.{}.{}",
        16 + (last >> 16),
        (last >> 8) & 255,
        last & 255
    );
    let codes = floodgate_tests::codes_as(&srv, "/limited", &recent, 5).await;
    assert_eq!(
        codes,
        [200, 200, 200, 200, 429],
        "a recent client is still counted"
    );
    assert!(store.len() <= capacity);
}

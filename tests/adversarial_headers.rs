//! Hostile requests against an app that uses many features at once (SPEC 8): random header
//! names and values (forwarding headers, the key header, `user-agent`, cookies, values up
//! to 64 KiB, tabs, obs-text and invalid UTF-8), random paths (percent-encodings, `//`,
//! `..`, unicode) and random peers. Whatever they hold: no panic, never a 5xx, only the
//! statuses the features give, and a valid `Retry-After` on every 429.
//!
//! A failure prints the shrunk requests; proptest saves its seed in
//! `tests/adversarial_headers.proptest-regressions`, replayed first by every later run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use actix_web::dev::Service;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode, Uri};
use actix_web::test::{init_service, TestRequest};
use actix_web::{get, web, App, HttpRequest, HttpResponse};
use floodgate::{
    bypass, rate_limited, specific, BanRule, FakeClock, Floodgate, GateKeeper, HeaderKey, Policy,
    ProbeBan, RouteRules, Rule, Target,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

#[specific(rate_limit_rules = [(2, "1s")])]
#[get("/specific")]
async fn specific_route() -> &'static str {
    "specific"
}

#[rate_limited(
    amount = 2,
    time_window = "1m",
    block_limit = 1,
    block_exceed_duration = "1h"
)]
#[get("/policy")]
async fn policy_route() -> &'static str {
    "policy"
}

#[bypass]
#[get("/health")]
async fn health() -> &'static str {
    "ok"
}

#[get("/report")]
async fn report(req: HttpRequest, gk: GateKeeper) -> &'static str {
    gk.report(&req).await;
    "reported"
}

fn floodgate() -> Floodgate {
    Floodgate::new()
        .clock(FakeClock::new())
        .ip_header("x-real-ip")
        .ban_rule(BanRule::new(
            2,
            Duration::from_secs(60),
            Duration::from_secs(600),
        ))
        .rate_limit_rules([Rule::new(3, Duration::from_secs(1))])
        .excluded_methods([Method::HEAD])
        .key(HeaderKey::new("x-api-key"))
        .probe_ban(ProbeBan::common().ban_for(Duration::from_secs(60)))
        .target(
            Target::new("bots")
                .header_matches("user-agent", "*bot*")
                .limit([Rule::new(1, Duration::from_secs(1))]),
        )
        .target(Target::new("admin").path("/admin*").deny())
        .target(
            Target::new("cookie monsters")
                .path("/specific*")
                .header_matches("cookie", "*session=*")
                .limit([Rule::new(1, Duration::from_secs(60))]),
        )
}

/// Statuses the features above can give: served, refused, banned or denied, no route, a
/// route without that method.
const EXPECTED: [u16; 5] = [200, 403, 404, 405, 429];

/// One request, as generated.
#[derive(Clone, Debug)]
struct Req {
    method: Method,
    path: String,
    peer: Option<SocketAddr>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

const NAMES: [&str; 11] = [
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "x-api-key",
    "user-agent",
    "cookie",
    "host",
    "x-client-ip",
    "authorization",
    "accept",
    "x-forwarded-host",
];

fn any_header_name() -> impl Strategy<Value = HeaderName> {
    prop_oneof![
        4 => prop::sample::select(NAMES.to_vec()).prop_map(HeaderName::from_static),
        1 => "[a-z0-9!#$%&'*+.^_`|~-]{1,24}"
            .prop_filter_map("a header name", |n| HeaderName::from_bytes(n.as_bytes()).ok()),
    ]
}

/// Bytes a `HeaderValue` accepts: tab, visible ASCII and space, obs-text (0x80-0xFF, which
/// is never valid UTF-8 alone).
fn value_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(b'\t'),
        0x20u8..=0x7e,
        0x80u8..=0xff,
        prop::sample::select(b",;=:[]\"%. ".to_vec()),
    ]
}

fn any_ip_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<Ipv6Addr>().prop_map(|ip| ip.to_string()),
        any::<Ipv6Addr>().prop_map(|ip| format!("[{ip}]:8080")),
        (any::<Ipv4Addr>(), any::<u16>()).prop_map(|(ip, port)| format!("{ip}:{port}")),
        prop::sample::select(vec![
            "unknown",
            "_hidden",
            "",
            " ",
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "::ffff:1.2.3.4",
            "999.1.1.1",
            "1.2.3",
            "fe80::1%eth0",
        ])
        .prop_map(str::to_owned),
    ]
}

fn any_header_value() -> impl Strategy<Value = HeaderValue> {
    let bytes = prop_oneof![
        // Forwarding chains and RFC 7239 elements, with junk around them.
        4 => (prop::collection::vec(any_ip_text(), 1..6), prop::sample::select(vec![", ", ",", " , ", ";"]))
            .prop_map(|(ips, sep)| ips.join(sep).into_bytes()),
        2 => prop::collection::vec(any_ip_text(), 1..4).prop_map(|ips| {
            ips.iter()
                .map(|ip| format!("for=\"{ip}\";proto=https;by=_x"))
                .collect::<Vec<_>>()
                .join(", ")
                .into_bytes()
        }),
        2 => "(bot|Bot|curl|session=[a-z0-9]{0,8}|[a-zA-Z0-9 ;=/.]{0,40})".prop_map(String::into_bytes),
        4 => prop::collection::vec(value_byte(), 0..80),
        // Huge values, up to 64 KiB: a random pattern repeated.
        1 => (prop::collection::vec(value_byte(), 1..16), 1_000usize..=65_536)
            .prop_map(|(pattern, len)| pattern.iter().copied().cycle().take(len).collect()),
    ];
    bytes.prop_filter_map("a header value", |b| HeaderValue::from_bytes(&b).ok())
}

fn any_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            "specific", "policy", "health", "report", "rr", "rr-policy", "admin", "wp-login.php",
            ".env", ".git", "config", "nowhere",
        ])
        .prop_map(str::to_owned),
        2 => "[a-zA-Z0-9._~!$&'()*+,;=:@-]{0,8}",
        1 => prop::sample::select(vec!["", ".", "..", "%2e%2e", "%2F", "%00", "%zz", "%", "%%"])
            .prop_map(str::to_owned),
        1 => prop::collection::vec(any::<u8>(), 1..6)
            .prop_map(|b| b.iter().map(|b| format!("%{b:02X}")).collect()),
        1 => "\\PC{1,4}".prop_map(|s: String| {
            s.bytes().map(|b| format!("%{b:02x}")).collect()
        }),
    ]
}

/// The app's routes, so that most requests reach a handler (and its limits).
const ROUTES: [&str; 6] = [
    "/specific",
    "/policy",
    "/health",
    "/report",
    "/rr",
    "/rr-policy",
];

fn any_path() -> impl Strategy<Value = String> {
    let path = prop_oneof![
        6 => prop::sample::select(ROUTES.to_vec()).prop_map(str::to_owned),
        2 => prop::collection::vec(any_segment(), 1..5)
            .prop_map(|segments| format!("/{}", segments.join("/"))),
        1 => (prop::sample::select(ROUTES.to_vec()), prop::collection::vec(any_segment(), 1..3))
            .prop_map(|(route, segments)| format!("{route}/{}", segments.join("/"))),
    ];
    (path, prop::option::weighted(0.2, "[a-z=&%0-9]{0,12}"))
        .prop_map(|(mut path, query)| {
            if let Some(q) = query {
                path.push('?');
                path.push_str(&q);
            }
            path
        })
        .prop_filter("a valid URI", |p| Uri::try_from(p.as_str()).is_ok())
}

fn any_peer() -> impl Strategy<Value = Option<SocketAddr>> {
    prop::option::weighted(
        0.9,
        prop_oneof![
            // Few distinct peers, so that limits and bans are reached.
            (0u8..2).prop_map(|n| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)), 5000)),
            any::<SocketAddr>(),
        ],
    )
}

fn any_req() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(vec![
            Method::GET,
            Method::GET,
            Method::GET,
            Method::GET,
            Method::POST,
            Method::HEAD,
        ]),
        any_path(),
        any_peer(),
        prop::collection::vec((any_header_name(), any_header_value()), 0..6),
    )
        .prop_map(|(method, path, peer, headers)| Req {
            method,
            path,
            peer,
            headers,
        })
}

async fn run(reqs: Vec<Req>) -> Result<(), TestCaseError> {
    let fg = floodgate();
    let app = init_service(
        App::new()
            .wrap(fg)
            .service(specific_route)
            .service(policy_route)
            .service(health)
            .service(report)
            .service(
                web::resource("/rr")
                    .wrap(RouteRules::new("rr").specific([Rule::new(1, Duration::from_secs(5))]))
                    .route(web::get().to(HttpResponse::Ok)),
            )
            .service(
                web::resource("/rr-policy")
                    .wrap(
                        RouteRules::new("rr-policy")
                            .policy(Policy::new(1, Duration::from_secs(10)).block_limit(0))
                            .key(HeaderKey::new("x-api-key")),
                    )
                    .route(web::get().to(HttpResponse::Ok)),
            ),
    )
    .await;
    for (i, r) in reqs.into_iter().enumerate() {
        let mut req = TestRequest::default().method(r.method.clone()).uri(&r.path);
        if let Some(peer) = r.peer {
            req = req.peer_addr(peer);
        }
        for (name, value) in &r.headers {
            req = req.append_header((name.clone(), value.clone()));
        }
        let res = match app.call(req.to_request()).await {
            Ok(res) => res.into_parts().1,
            // Refusals are errors carrying their response (see the crate docs).
            Err(err) => err.error_response(),
        };
        let status = res.status();
        prop_assert!(
            EXPECTED.contains(&status.as_u16()),
            "request {i} ({} {}) got {status}",
            r.method,
            r.path
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry = res
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok());
            let secs = retry.and_then(|v| v.parse::<u64>().ok());
            prop_assert!(
                secs.is_some_and(|s| s >= 1),
                "request {i}: Retry-After {retry:?}"
            );
        }
    }
    Ok(())
}

proptest! {
    // Failures are saved beside this file (see the top), wherever the crate's lib.rs is.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn hostile_headers_and_paths_get_a_decision_never_a_crash(
        reqs in prop::collection::vec(any_req(), 1..16),
    ) {
        actix_rt::System::new().block_on(run(reqs))?;
    }
}

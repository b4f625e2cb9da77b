//! The middleware alone: one request through the service built by `actix_web::test::init_service` to a hello-world
//! service, bare and wrapped, so that the difference is what the middleware costs in-process
//! (no sockets, no HTTP parsing).
//!
//! A refused request's response is built from the error the middleware returns, as actix-web
//! does when it writes it.
//!
//! Requests carry one of 10,000 client addresses in turn. floodgate reads a fake clock that
//! advances 1 ms per request (outside the timed part), so each client comes back every 10 s:
//! the "allowed" configuration never refuses, the "refusing" one refuses all but the first
//! request of each client per minute.

use std::hint::black_box;
use std::time::Duration;

use actix_governor::{Governor, GovernorConfigBuilder};
use actix_web::dev::Service;
use actix_web::http::StatusCode;
use actix_web::test::{init_service, TestRequest};
use actix_web::{web, App};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use floodgate::FakeClock;
use floodgate_bench::server::HeaderIpKeyExtractor;
use floodgate_bench::{client_ip, DISTINCT_IPS, IP_HEADER};

async fn hello() -> &'static str {
    "Hello, world!"
}

macro_rules! bench_app {
    ($group:expr, $sys:expr, $name:expr, $clock:expr, $expect:expr, $($wrap:expr)?) => {{
        let app = $sys.block_on(init_service(
            App::new()
                $(.wrap($wrap))?
                .route("/", web::get().to(hello)),
        ));
        let ips: Vec<String> = (0..DISTINCT_IPS).map(|n| client_ip(n).to_string()).collect();
        let clock: Option<&FakeClock> = $clock;
        let mut n = 0usize;
        $group.bench_function($name, |b| {
            b.iter_batched(
                || {
                    n = (n + 1) % ips.len();
                    if let Some(c) = clock {
                        c.advance(Duration::from_millis(1));
                    }
                    TestRequest::get()
                        .uri("/")
                        .insert_header((IP_HEADER, ips[n].as_str()))
                        .to_request()
                },
                |req| {
                    // A refusal comes back as an `Err` holding its response.
                    let status = match $sys.block_on(app.call(req)) {
                        Ok(res) => black_box(res).status(),
                        Err(err) => black_box(err.error_response()).status(),
                    };
                    debug_assert!($expect(status));
                    status
                },
                BatchSize::SmallInput,
            )
        });
    }};
}

fn middleware(c: &mut Criterion) {
    let sys = actix_rt::System::new();
    let mut group = c.benchmark_group("middleware_call_service");
    let ok = |s: StatusCode| s == StatusCode::OK;
    let any = |_: StatusCode| true;

    bench_app!(group, sys, "bare", None, ok,);

    let clock = FakeClock::starting_at(floodgate::Timestamp::from_millis(1_700_000_000_000));
    let floodgate = floodgate_bench::floodgate(false).clock(clock.clone());
    bench_app!(group, sys, "floodgate", Some(&clock), ok, floodgate.clone());

    let clock = FakeClock::starting_at(floodgate::Timestamp::from_millis(1_700_000_000_000));
    let refusing = floodgate_bench::floodgate(true).clock(clock.clone());
    bench_app!(
        group,
        sys,
        "floodgate_refusing",
        Some(&clock),
        any,
        refusing.clone()
    );

    let governor = GovernorConfigBuilder::default()
        .period(Duration::from_millis(10))
        .burst_size(100)
        .key_extractor(HeaderIpKeyExtractor)
        .use_headers()
        .finish()
        .expect("valid quota");
    bench_app!(group, sys, "governor", None, any, Governor::new(&governor));
    group.finish();
}

criterion_group!(benches, middleware);
criterion_main!(benches);

//! The app of the Redis fleet and fault tests: `/ping` under one global rule, `/report`
//! reporting the client, keyed by the `x-client` header, on the fake clock. Included by
//! `#[path]`.
#![allow(dead_code)]

use std::time::Duration;

use actix_web::{get, App, HttpRequest};
use floodgate::{bypass, BanRule, FakeClock, Floodgate, GateKeeper, Rule, Store, StoreFailure};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[get("/ping")]
async fn ping() -> &'static str {
    "pong"
}

#[bypass]
#[get("/report")]
async fn report(req: HttpRequest, gk: GateKeeper) -> &'static str {
    gk.report(&req).await;
    "reported"
}

pub(crate) fn app(
    store: impl Store,
    clock: &FakeClock,
    failure: StoreFailure,
) -> (actix_test::TestServer, Floodgate) {
    let fg = Floodgate::new()
        .store(store)
        .clock(clock.clone())
        .ip_header("x-client")
        .store_failure(failure)
        .ban_rule(BanRule::new(2, secs(60), secs(600)))
        .rate_limit_rules([Rule::new(10, secs(3_600))]);
    let inner = fg.clone();
    let srv = actix_test::start_with(actix_test::config().workers(2), move || {
        App::new().wrap(inner.clone()).service(ping).service(report)
    });
    (srv, fg)
}

pub(crate) async fn get(srv: &actix_test::TestServer, path: &str, ip: &str) -> u16 {
    let res = srv
        .get(path)
        .insert_header(("x-client", ip))
        .send()
        .await
        .expect("response");
    res.status().as_u16()
}

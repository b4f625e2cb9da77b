//! Targeting with a store that answers asynchronously (as SQLite and Redis do): probe bans,
//! 404 reports and IP bans under custom keys take the deferred path of the middleware, and
//! behave exactly as with the synchronous memory store.

mod targeting_common;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{get, App};
use floodgate::{
    BanReason, BanRule, ClientKey, ClientState, Decision, FakeClock, Floodgate, HeaderKey,
    MemoryStore, Plan, ProbeBan, ReportOutcome, Rule, Store, StoreFuture, Timestamp,
};
use targeting_common::{get, send};

/// The memory store, answering every call through a boxed future.
#[derive(Debug, Default)]
struct Deferred(MemoryStore);

fn defer<T: Send + 'static>(f: StoreFuture<T>) -> StoreFuture<T> {
    StoreFuture::pending(async move {
        // One extra turn of the executor, as a database round trip would take.
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                std::task::Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        })
        .await;
        f.await
    })
}

impl Store for Deferred {
    fn check(&self, c: &ClientKey, plan: &Arc<Plan>, now: Timestamp) -> StoreFuture<Decision> {
        defer(self.0.check(c, plan, now))
    }
    fn report(&self, c: &ClientKey, r: &BanRule, now: Timestamp) -> StoreFuture<ReportOutcome> {
        defer(self.0.report(c, r, now))
    }
    fn ban(&self, c: &ClientKey, until: Option<Timestamp>, now: Timestamp) -> StoreFuture<()> {
        defer(self.0.ban(c, until, now))
    }
    fn extend_ban(
        &self,
        c: &ClientKey,
        until: Option<Timestamp>,
        reason: BanReason,
        now: Timestamp,
    ) -> StoreFuture<()> {
        defer(self.0.extend_ban(c, until, reason, now))
    }
    fn release(
        &self,
        c: &ClientKey,
        plan: &Arc<Plan>,
        at: Timestamp,
        now: Timestamp,
    ) -> StoreFuture<()> {
        defer(self.0.release(c, plan, at, now))
    }
    fn unban(&self, c: &ClientKey, now: Timestamp) -> StoreFuture<bool> {
        defer(self.0.unban(c, now))
    }
    fn state(&self, c: &ClientKey, now: Timestamp) -> StoreFuture<Option<ClientState>> {
        defer(self.0.state(c, now))
    }
    fn sweep(&self, now: Timestamp) -> StoreFuture<usize> {
        defer(self.0.sweep(now))
    }
}

#[get("/ping")]
async fn ping() -> &'static str {
    "ok"
}

fn server(fg: Floodgate) -> actix_test::TestServer {
    actix_test::start_with(actix_test::config().workers(2), move || {
        App::new().wrap(fg.clone()).service(ping)
    })
}

#[actix_web::test]
async fn probes_and_404_reports_through_an_async_store() {
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .store(Deferred::default())
        .clock(clock.clone())
        .ip_header("x-client")
        .ban_rule(BanRule::new(
            2,
            Duration::from_secs(60),
            Duration::from_secs(600),
        ))
        .probe_ban(
            ProbeBan::new(["/.env"])
                .ban_for(Duration::from_secs(60))
                .not_found_reports(true),
        );
    let srv = server(fg);
    assert_eq!(get(&srv, "/.env", "203.0.113.1").await, 403);
    assert_eq!(get(&srv, "/ping", "203.0.113.1").await, 403);
    clock.advance(Duration::from_secs(60));
    assert_eq!(get(&srv, "/ping", "203.0.113.1").await, 200);

    assert_eq!(get(&srv, "/gone", "203.0.113.2").await, 404);
    assert_eq!(get(&srv, "/ping", "203.0.113.2").await, 200);
    assert_eq!(get(&srv, "/gone", "203.0.113.2").await, 404);
    assert_eq!(get(&srv, "/ping", "203.0.113.2").await, 403);
}

#[actix_web::test]
async fn custom_keys_and_ip_bans_through_an_async_store() {
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .store(Deferred::default())
        .clock(clock.clone())
        .ip_header("x-client")
        .rate_limit_rules([Rule::new(1, Duration::from_secs(60))])
        .key(HeaderKey::new("x-api-key"));
    let gk = fg.gatekeeper();
    let srv = server(fg);
    let ip = "198.51.100.3";
    for key in ["a", "b"] {
        assert_eq!(
            send(&srv, "GET", "/ping", ip, &[("x-api-key", key)]).await,
            200
        );
        assert_eq!(
            send(&srv, "GET", "/ping", ip, &[("x-api-key", key)]).await,
            429
        );
    }
    gk.ban(
        ip.parse::<std::net::IpAddr>().unwrap(),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(
        send(&srv, "GET", "/ping", ip, &[("x-api-key", "c")]).await,
        403
    );
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        send(&srv, "GET", "/ping", ip, &[("x-api-key", "c")]).await,
        200
    );
}

//! A request counted under a custom key costs one Redis round trip: the check of its
//! address's ban and the check of its key leave together. Proved over HTTP through a proxy
//! that holds Redis's answers (both commands reach Redis before any answer comes back), and
//! measured with a proxy that delays each answer (one delay, where checking one after the
//! other waits two). Skips without `redis-server` unless `FLOODGATE_REQUIRE_REDIS=1`.
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{get, App};
use floodgate::{
    BanReason, BanRule, ClientKey, ClientState, Decision, FakeClock, Floodgate, HeaderKey, Plan,
    RedisStore, ReportOutcome, Rule, Store, StoreFuture, Timestamp,
};

#[path = "support/services.rs"]
mod services;

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

#[path = "support/redis_proxy.rs"]
mod redis_proxy;
use redis_proxy::RedisProxy;

#[get("/ping")]
async fn ping() -> &'static str {
    "pong"
}

/// An app counting requests under the `x-api-key` header, clients' addresses from
/// `x-client`.
fn app(store: impl Store, clock: &FakeClock) -> actix_test::TestServer {
    let fg = Floodgate::new()
        .store(store)
        .clock(clock.clone())
        .ip_header("x-client")
        .key(HeaderKey::new("x-api-key"))
        .rate_limit_rules([Rule::new(3, Duration::from_secs(3_600))]);
    actix_test::start(move || App::new().wrap(fg.clone()).service(ping))
}

async fn get(srv: &actix_test::TestServer, ip: &str, key: &str) -> u16 {
    srv.get("/ping")
        .insert_header(("x-client", ip))
        .insert_header(("x-api-key", key))
        .send()
        .await
        .expect("response")
        .status()
        .as_u16()
}

async fn store_through(proxy: &RedisProxy) -> RedisStore {
    RedisStore::builder(proxy.url())
        .prefix("test")
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect through the proxy")
}

#[actix_rt::test]
async fn the_address_ban_and_the_key_are_checked_in_one_round_trip() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let proxy = RedisProxy::start(server.port, server.db).await;
    let clock = FakeClock::new();
    let srv = app(store_through(&proxy).await, &clock);

    proxy.hold();
    let (scripts, delivered) = (proxy.scripts(), proxy.delivered());
    let request = actix_rt::spawn(async move {
        let status = get(&srv, "198.51.100.7", "alice").await;
        (status, srv)
    });
    assert!(
        proxy
            .scripts_reach(scripts + 2, Duration::from_secs(5))
            .await,
        "the key's check waited for the address's answer: {} script(s) sent",
        proxy.scripts() - scripts
    );
    assert_eq!(proxy.delivered(), delivered, "no answer came back yet");
    proxy.release();
    let (status, srv) = request.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(proxy.scripts() - scripts, 2, "exactly the two checks");

    // Same answers as one after the other: the key's limit, and a banned address refused
    // whatever its key.
    assert_eq!(get(&srv, "198.51.100.8", "alice").await, 200);
    assert_eq!(get(&srv, "198.51.100.9", "alice").await, 200);
    assert_eq!(get(&srv, "198.51.100.9", "alice").await, 429);
    assert_eq!(get(&srv, "198.51.100.9", "bob").await, 200);
    let redis = store_through(&proxy).await;
    let ip = ClientKey::from_ip("198.51.100.9".parse().unwrap(), 128);
    redis
        .ban(&ip, None, floodgate::Clock::now(&clock))
        .await
        .unwrap();
    assert_eq!(get(&srv, "198.51.100.9", "bob").await, 403);
    assert_eq!(get(&srv, "198.51.100.10", "bob").await, 200);
}

/// Round trips of one request through a proxy that delays each answer by `delay`.
async fn latency(store: impl Store, proxy: &RedisProxy, delay: Duration) -> Duration {
    let clock = FakeClock::new();
    let srv = app(store, &clock);
    proxy.set_delay(delay);
    let mut times = Vec::new();
    for i in 0..5 {
        let start = Instant::now();
        let (ip, key) = (format!("198.51.100.{}", 20 + i), format!("carol-{i}"));
        assert_eq!(get(&srv, &ip, &key).await, 200);
        times.push(start.elapsed());
    }
    proxy.set_delay(Duration::ZERO);
    times.sort();
    times[times.len() / 2]
}

#[actix_rt::test]
async fn a_custom_key_request_waits_one_delay_where_one_by_one_waits_two() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let proxy = RedisProxy::start(server.port, server.db).await;
    let delay = Duration::from_millis(60);
    let one_by_one = latency(OneByOne(store_through(&proxy).await), &proxy, delay).await;
    let together = latency(store_through(&proxy).await, &proxy, delay).await;
    // Printed for BENCHMARKS-style reports (`-- --nocapture`).
    println!("custom-key request, answers delayed {delay:?}: one by one {one_by_one:?}, together {together:?}");
    assert!(one_by_one >= 2 * delay, "{one_by_one:?}");
    assert!(together >= delay && together < 2 * delay, "{together:?}");
}

/// A store that sends one check at a time (the default of [`Store::checks_together`]): the
/// behaviour before checks were sent together, as a baseline.
#[derive(Debug)]
struct OneByOne<S>(S);

impl<S: Store> Store for OneByOne<S> {
    fn check(&self, client: &ClientKey, plan: &Arc<Plan>, now: Timestamp) -> StoreFuture<Decision> {
        self.0.check(client, plan, now)
    }
    fn report(&self, c: &ClientKey, rule: &BanRule, now: Timestamp) -> StoreFuture<ReportOutcome> {
        self.0.report(c, rule, now)
    }
    fn ban(&self, c: &ClientKey, until: Option<Timestamp>, now: Timestamp) -> StoreFuture<()> {
        self.0.ban(c, until, now)
    }
    fn extend_ban(
        &self,
        c: &ClientKey,
        until: Option<Timestamp>,
        reason: BanReason,
        now: Timestamp,
    ) -> StoreFuture<()> {
        self.0.extend_ban(c, until, reason, now)
    }
    fn release(
        &self,
        c: &ClientKey,
        plan: &Arc<Plan>,
        at: Timestamp,
        now: Timestamp,
    ) -> StoreFuture<()> {
        self.0.release(c, plan, at, now)
    }
    fn unban(&self, c: &ClientKey, now: Timestamp) -> StoreFuture<bool> {
        self.0.unban(c, now)
    }
    fn state(&self, c: &ClientKey, now: Timestamp) -> StoreFuture<Option<ClientState>> {
        self.0.state(c, now)
    }
    fn sweep(&self, now: Timestamp) -> StoreFuture<usize> {
        self.0.sweep(now)
    }
}

#[actix_rt::test]
async fn a_banned_address_cannot_drain_another_clients_key() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let clock = FakeClock::new();
    // The app's store caches bans for a second (the default).
    let srv = app(
        redis_server::redis_store(&server, Duration::from_secs(1)).await,
        &clock,
    );
    let operator = redis_server::redis_store(&server, Duration::ZERO).await;
    let attacker = ClientKey::from_ip("198.51.100.66".parse().unwrap(), 128);
    operator
        .ban(&attacker, None, floodgate::Clock::now(&clock))
        .await
        .unwrap();
    // The banned address floods with the victim's key: refused; what the key's check counted
    // for its first request (sent with the key's check, before the ban was known here) is
    // given back, and the cached ban answers the others before any call: the victim keeps
    // its whole quota of 3.
    for _ in 0..20 {
        assert_eq!(get(&srv, "198.51.100.66", "victim").await, 403);
    }
    for _ in 0..3 {
        assert_eq!(get(&srv, "198.51.100.67", "victim").await, 200);
    }
    assert_eq!(get(&srv, "198.51.100.67", "victim").await, 429);
}

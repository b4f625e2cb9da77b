//! A fleet of actix servers sharing one real `redis-server`: limits and bans hold across
//! them. Skips without `redis-server` unless `FLOODGATE_REQUIRE_REDIS=1` (see
//! `support/services.rs`).
#![cfg(feature = "redis")]

use std::net::IpAddr;
use std::time::Duration;

use floodgate::{FakeClock, Policy};

#[path = "support/services.rs"]
mod services;

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::{redis_store, RedisServer};

#[path = "support/walks.rs"]
mod walks;
use walks::*;

#[path = "support/redis_apps.rs"]
mod redis_apps;
use redis_apps::{app, get};

use actix_web::{get, App};
use floodgate::{Floodgate, StoreFailure};
use futures_util::future::join_all;

#[actix_rt::test]
async fn two_servers_share_one_limit_exactly() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    let clock = FakeClock::new();
    let (a, _) = app(
        redis_store(&redis, secs(1)).await,
        &clock,
        StoreFailure::Open,
    );
    let (b, _) = app(
        redis_store(&redis, secs(1)).await,
        &clock,
        StoreFailure::Open,
    );
    let ip = "198.51.100.20";
    let statuses = join_all((0..20).map(|i| {
        let srv = if i % 2 == 0 { &a } else { &b };
        get(srv, "/ping", ip)
    }))
    .await;
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!((ok, limited), (10, 10), "{statuses:?}");
    assert_eq!(get(&a, "/ping", ip).await, 429);
    assert_eq!(get(&b, "/ping", ip).await, 429);
    // Another client has its own quota on both.
    assert_eq!(get(&b, "/ping", "198.51.100.21").await, 200);
}

#[actix_rt::test]
async fn a_ban_reported_on_one_server_holds_on_the_other_at_once() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    let clock = FakeClock::new();
    let (a, fg_a) = app(
        redis_store(&redis, secs(1)).await,
        &clock,
        StoreFailure::Open,
    );
    let (b, _) = app(
        redis_store(&redis, secs(1)).await,
        &clock,
        StoreFailure::Open,
    );
    let ip = "198.51.100.30";
    assert_eq!(get(&b, "/ping", ip).await, 200);
    assert_eq!(get(&a, "/report", ip).await, 200);
    assert_eq!(get(&a, "/report", ip).await, 200);
    // The second offence banned the client: both servers refuse it now.
    assert_eq!(get(&b, "/ping", ip).await, 403);
    assert_eq!(get(&a, "/ping", ip).await, 403);
    // An operator unban on A frees the client on A at once ...
    let addr: IpAddr = ip.parse().unwrap();
    assert!(fg_a.gatekeeper().unban(addr).await.unwrap());
    assert_eq!(get(&a, "/ping", ip).await, 200);
    // ... and on B when B's cached ban ends (ban_cache = 1 s), not later.
    assert_eq!(
        get(&b, "/ping", ip).await,
        403,
        "B still holds its cached ban"
    );
    clock.advance(Duration::from_millis(999));
    assert_eq!(get(&b, "/ping", ip).await, 403);
    clock.advance(Duration::from_millis(1));
    assert_eq!(get(&b, "/ping", ip).await, 200);
}

#[floodgate::rate_limited(policy = "api")]
#[get("/a")]
async fn route_a() -> &'static str {
    "a"
}

#[floodgate::rate_limited(policy = "api")]
#[get("/b")]
async fn route_b() -> &'static str {
    "b"
}

/// A server with two routes sharing the policy "api": 3 a minute, the second block
/// bans for an hour.
async fn shared_policy_app(redis: &RedisServer, clock: &FakeClock) -> actix_test::TestServer {
    let fg = Floodgate::new()
        .store(redis_store(redis, secs(1)).await)
        .clock(clock.clone())
        .ip_header("x-client")
        .policy(
            "api",
            Policy::new(3, secs(60))
                .block_limit(1)
                .block_exceed_duration(Some(secs(3_600))),
        );
    actix_test::start_with(actix_test::config().workers(2), move || {
        App::new()
            .wrap(fg.clone())
            .service(route_a)
            .service(route_b)
    })
}

#[actix_rt::test]
async fn a_shared_policy_is_one_window_block_count_and_punishment_across_a_fleet() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    let clock = FakeClock::new();
    let one = shared_policy_app(&redis, &clock).await;
    let two = shared_policy_app(&redis, &clock).await;
    let ip = "198.51.100.40";
    // One window across routes and servers.
    assert_eq!(get(&one, "/a", ip).await, 200);
    assert_eq!(get(&two, "/b", ip).await, 200);
    assert_eq!(get(&one, "/b", ip).await, 200);
    assert_eq!(get(&two, "/a", ip).await, 429);
    assert_eq!(get(&one, "/a", ip).await, 429);
    // One block count: the second block, on the other server and route, punishes.
    clock.advance(secs(60));
    for (srv, path) in [(&two, "/a"), (&one, "/a"), (&two, "/b")] {
        assert_eq!(get(srv, path, ip).await, 200, "{path}");
    }
    assert_eq!(get(&one, "/b", ip).await, 403);
    // One punishment, everywhere.
    assert_eq!(get(&two, "/a", ip).await, 403);
    clock.advance(secs(3_600));
    assert_eq!(get(&two, "/b", ip).await, 200);
}

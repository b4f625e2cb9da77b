//! The Redis store when Redis fails: killed during a load run, fail-over to a backup,
//! fail-open, fail-closed, recovery; bad URLs and passwords. Each test that kills its
//! server starts one of its own. Skips without `redis-server` unless
//! `FLOODGATE_REQUIRE_REDIS=1` (see `support/services.rs`).
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use floodgate::{FailoverStore, FakeClock, MemoryStore, RedisStore};

#[path = "support/services.rs"]
mod services;

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::{free_port, redis_store, RedisServer};

#[path = "support/walks.rs"]
mod walks;
use walks::*;

#[path = "support/redis_apps.rs"]
mod redis_apps;
use redis_apps::{app, get};

use floodgate::StoreFailure;
use futures_util::future::join_all;

/// Sends `n` concurrent requests of `ip`; returns the count of each status.
async fn load(srv: &actix_test::TestServer, ip: &str, n: usize) -> Vec<(u16, usize)> {
    let statuses = join_all((0..n).map(|_| get(srv, "/ping", ip))).await;
    let mut counts: Vec<(u16, usize)> = Vec::new();
    for s in statuses {
        match counts.iter_mut().find(|(k, _)| *k == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s, 1)),
        }
    }
    counts.sort();
    counts
}

/// Moves floodgate's clock past the retry delay and sends requests until `done` holds
/// (the primary answers again); a bounded poll, since reconnecting takes real time.
async fn until_recovered(
    srv: &actix_test::TestServer,
    clock: &FakeClock,
    ip: &str,
    done: impl Fn() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "the primary was never taken back"
        );
        clock.advance(secs(10));
        let status = get(srv, "/ping", ip).await;
        assert_ne!(status, 500);
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

fn failover(redis: RedisStore) -> FailoverStore<RedisStore> {
    FailoverStore::new(redis).retry(secs(1), secs(8))
}

#[actix_rt::test]
async fn killed_redis_fails_over_to_the_backup_and_is_taken_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let clock = FakeClock::new();
    let store = failover(redis_store(&redis, secs(1)).await).backup(MemoryStore::new());
    let (srv, _) = app(store.clone(), &clock, StoreFailure::Closed);
    let ip = "198.51.100.40";
    assert_eq!(load(&srv, ip, 4).await, [(200, 4)]);
    redis.stop();
    // The backup knows nothing of the 4 requests counted in Redis: it allows 10 more.
    assert_eq!(load(&srv, ip, 20).await, [(200, 10), (429, 10)]);
    assert!(store.primary_down());
    redis.run();
    until_recovered(&srv, &clock, ip, || !store.primary_down()).await;
    // Decisions are back on Redis (which restarted empty, without persistence).
    let _ = get(&srv, "/ping", "198.51.100.41").await;
    assert_eq!(redis.cli(&["EXISTS", "test:{ip:198.51.100.41}"]), "1");
}

#[actix_rt::test]
async fn killed_redis_fails_open_without_a_backup() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let clock = FakeClock::new();
    let store = failover(redis_store(&redis, secs(1)).await);
    let (srv, _) = app(store.clone(), &clock, StoreFailure::Open);
    let ip = "198.51.100.42";
    assert_eq!(load(&srv, ip, 12).await, [(200, 10), (429, 2)]);
    redis.stop();
    assert_eq!(load(&srv, ip, 20).await, [(200, 20)], "served unlimited");
    redis.run();
    until_recovered(&srv, &clock, ip, || !store.primary_down()).await;
    let _ = get(&srv, "/ping", "198.51.100.43").await;
    assert_eq!(redis.cli(&["EXISTS", "test:{ip:198.51.100.43}"]), "1");
}

#[actix_rt::test]
async fn killed_redis_fails_closed_with_503() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let clock = FakeClock::new();
    // A bare RedisStore: every request tries Redis, and each failure is a 503.
    let (srv, _) = app(
        redis_store(&redis, secs(1)).await,
        &clock,
        StoreFailure::Closed,
    );
    let ip = "198.51.100.44";
    assert_eq!(load(&srv, ip, 3).await, [(200, 3)]);
    redis.stop();
    assert_eq!(load(&srv, ip, 20).await, [(503, 20)]);
    redis.run();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match get(&srv, "/ping", ip).await {
            503 => assert!(Instant::now() < deadline, "Redis never came back"),
            status => {
                assert_eq!(status, 200, "a fresh Redis counts from zero");
                break;
            }
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 300 requests of 30 clients, 10 each, one client after the other, 16 in flight;
/// redis-server is killed once 100 are answered, so that most clients send all their
/// requests either to Redis or after the kill. Returns the statuses answered before and
/// after the kill.
async fn load_with_a_kill(
    srv: &actix_test::TestServer,
    redis: &mut RedisServer,
) -> (Vec<u16>, Vec<u16>) {
    use futures_util::stream::{self, StreamExt};
    use std::cell::RefCell;
    let answered = RefCell::new((Vec::new(), Vec::new(), false));
    let requests = stream::iter(0..300)
        .map(|i| async move { get(srv, "/ping", &format!("198.51.100.{}", 100 + i / 10)).await })
        .buffer_unordered(16)
        .for_each(|status| {
            let mut a = answered.borrow_mut();
            if a.2 {
                a.1.push(status);
            } else {
                a.0.push(status);
            }
            async {}
        });
    let killer = async {
        while answered.borrow().0.len() < 100 {
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        }
        redis.stop();
        answered.borrow_mut().2 = true;
    };
    futures_util::future::join(requests, killer).await;
    let (before, after, _) = answered.into_inner();
    (before, after)
}

#[actix_rt::test]
async fn redis_killed_mid_load_never_yields_a_500() {
    for mode in ["backup", "open", "closed"] {
        let Some(mut redis) = RedisServer::start() else {
            return;
        };
        let clock = FakeClock::new();
        let primary = redis_store(&redis, secs(1)).await;
        let (srv, _) = match mode {
            "backup" => app(
                failover(primary).backup(MemoryStore::new()),
                &clock,
                StoreFailure::Closed,
            ),
            "open" => app(failover(primary), &clock, StoreFailure::Open),
            _ => app(failover(primary), &clock, StoreFailure::Closed),
        };
        let (before, after) = load_with_a_kill(&srv, &mut redis).await;
        assert_eq!(before.len() + after.len(), 300);
        assert!(
            !after.is_empty(),
            "{mode}: the kill came before the end of the run"
        );
        // Each of the 30 clients sends exactly 10 requests, against a 10/h rule: a 429
        // is never right (one would mean a request counted twice). Before the kill,
        // Redis decides: every request is served.
        let label = format!("{mode}: before {before:?}, after {after:?}");
        assert!(before.iter().all(|&s| s == 200), "{label}");
        if mode == "closed" {
            // Only the requests in flight at the kill (16 at most) may have been decided
            // before it; every later one is refused with 503.
            assert!(after.iter().all(|&s| s == 200 || s == 503), "{label}");
            let served = after.iter().filter(|&&s| s == 200).count();
            assert!(served <= 16, "{label}");
            assert!(after.contains(&503), "{label}");
        } else {
            // The backup starts from zero, and fail-open serves unlimited: all 200.
            assert!(after.iter().all(|&s| s == 200), "{label}");
        }
    }
}

#[actix_rt::test]
async fn unreachable_redis_is_a_clear_error_at_start() {
    let port = free_port();
    let err = RedisStore::builder(format!("redis://127.0.0.1:{port}/"))
        .connect()
        .await
        .expect_err("nothing listens there");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("cannot connect to Redis at 127.0.0.1:{port}")),
        "{msg}"
    );

    let err = RedisStore::builder("http://127.0.0.1/")
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("invalid Redis URL"), "{err}");
    let err = RedisStore::builder("redis://127.0.0.1/")
        .prefix("a b")
        .connect()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("invalid Redis key prefix"),
        "{err}"
    );
}

#[actix_rt::test]
async fn a_wrong_password_is_a_clear_error_that_hides_the_password() {
    // A user with a password on the shared server (the default user needs none there).
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    let user = format!("floodgate-test-{}", redis.db);
    let acl = [
        "ACL",
        "SETUSER",
        &user,
        "on",
        ">right-secret",
        "~*",
        "&*",
        "+@all",
    ];
    assert_eq!(redis.cli(&acl), "OK");
    let err = RedisStore::builder(format!(
        "redis://{user}:wrong-secret@127.0.0.1:{}/",
        redis.port
    ))
    .connect()
    .await
    .expect_err("refused credentials");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "cannot connect to Redis at 127.0.0.1:{}",
            redis.port
        )),
        "{msg}"
    );
    assert!(
        msg.to_lowercase().contains("authentication failed"),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong-secret") && !msg.contains("right-secret"),
        "{msg}"
    );
    let ok = RedisStore::builder(format!(
        "redis://{user}:right-secret@127.0.0.1:{}/",
        redis.port
    ))
    .connect()
    .await;
    assert!(ok.is_ok(), "{ok:?}");
}

#[actix_rt::test]
async fn a_lazy_store_starts_on_the_backup_while_redis_is_down() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    redis.stop();
    let lazy = RedisStore::builder(redis.url())
        .prefix("test")
        .timeout(Duration::from_millis(300))
        .connect_lazy()
        .expect("a well-formed URL");
    let store = failover(lazy).backup(MemoryStore::new());
    let plan = global(&[(1, 60)]);
    let c = client(60);
    assert!(check(&store, &c, &plan, 0).await.is_allowed());
    assert!(store.primary_down(), "decided on the backup");
    assert!(
        !check(&store, &c, &plan, 1).await.is_allowed(),
        "the backup counts"
    );
    redis.run();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ms = 1_000;
    while store.primary_down() {
        assert!(Instant::now() < deadline, "Redis never taken back");
        ms += 10_000;
        let _ = check(&store, &client(61), &plan, ms).await;
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(redis.cli(&["EXISTS", "test:{ip:203.0.113.61}"]), "1");
}

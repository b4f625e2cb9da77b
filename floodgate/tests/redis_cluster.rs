//! The Redis store over a real Redis Cluster of three masters that the tests start themselves
//! (`support/redis_cluster.rs`): each client's state in the slot of its hash tag, clients
//! spread over every master, a fleet of two app servers sharing limits and bans through the
//! cluster, a slot moved between masters (ASK, then MOVED), and a master killed under load
//! (never a 500). The conformance scenarios run on
//! the cluster too (`conformance.rs`, module `cluster`).
//!
//! Time is floodgate's fake clock; the only real waits are bounded polls for the cluster to
//! come up. Skips without `redis-server` unless `FLOODGATE_REQUIRE_REDIS=1`.
#![cfg(feature = "redis")]

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use floodgate::{ClientKey, FakeClock, Plan, RedisStore, Rule, ScopeId, Store, StoreFailure};
use futures_util::future::join_all;

#[path = "support/services.rs"]
mod services;

#[path = "support/redis_server.rs"]
mod redis_server;

#[path = "support/redis_cluster.rs"]
mod redis_cluster;
use redis_cluster::{cluster_store, RedisCluster, MASTERS};

#[path = "support/redis_apps.rs"]
mod redis_apps;
use redis_apps::{app, get};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ip_client(ip: &str) -> ClientKey {
    ClientKey::from_ip(ip.parse::<IpAddr>().unwrap(), 128)
}

/// `per_master` addresses of 198.51.100.0/24 (from `first` up) for each master, by the
/// slot of their key under `store`.
fn addresses_on_every_master(
    cluster: &RedisCluster,
    store: &RedisStore,
    first: u8,
    per_master: usize,
) -> BTreeMap<u16, Vec<String>> {
    let mut by_master: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for n in first..=255 {
        let ip = format!("198.51.100.{n}");
        let port = cluster.master_of(&store.key_of(&ip_client(&ip)));
        let list = by_master.entry(port).or_default();
        if list.len() < per_master {
            list.push(ip);
        }
        if by_master.len() == MASTERS && by_master.values().all(|l| l.len() == per_master) {
            return by_master;
        }
    }
    panic!("198.51.100.{first}-255 do not cover every master: {by_master:?}");
}

/// Two app servers (`redis_apps.rs`) on one fake clock, each with a store of its own on
/// `cluster`: A fails open, B as `b_failure` says.
struct Fleet {
    store: RedisStore,
    a: actix_test::TestServer,
    b: actix_test::TestServer,
    _clock: FakeClock,
}

async fn fleet(cluster: &RedisCluster, b_failure: StoreFailure) -> Fleet {
    let clock = FakeClock::new();
    let store = cluster_store(cluster, secs(1)).await;
    let (a, _) = app(store.clone(), &clock, StoreFailure::Open);
    let (b, _) = app(cluster_store(cluster, secs(1)).await, &clock, b_failure);
    Fleet {
        store,
        a,
        b,
        _clock: clock,
    }
}

#[actix_rt::test]
async fn each_client_lies_in_one_slot_and_clients_spread_over_every_master() {
    let Some(cluster) = RedisCluster::shared() else {
        return;
    };
    let store = cluster_store(&cluster, secs(1)).await;
    assert!(store.is_cluster());
    let plan = Arc::new(Plan::new(
        [(ScopeId(1), vec![Rule::new(5, secs(60))])],
        None,
    ));
    let now = floodgate::Timestamp::from_millis(1_000);
    let mut clients: Vec<ClientKey> = (0..60)
        .map(|n| ip_client(&format!("203.0.113.{n}")))
        .collect();
    clients.extend((0..30).map(|n| ClientKey::custom(format!("user:{n}"))));
    for c in &clients {
        assert!(store.check(c, &plan, now).await.unwrap().is_allowed());
    }
    // One key per client, on the master of its slot; every master holds some.
    let mut total = 0;
    for &port in &cluster.ports {
        let keys = cluster.keys_on(port);
        assert!(!keys.is_empty(), "master {port} holds no client");
        for key in keys.iter().take(3) {
            assert_eq!(cluster.master_of(key), port, "{key}");
        }
        total += keys.len();
    }
    assert_eq!(total, clients.len());
    let key = store.key_of(&clients[0]);
    assert_eq!(key, format!("{}:{{ip:203.0.113.0}}", cluster.prefix()));

    // The index of bans: two keys in one slot, listed whatever master the clients are on.
    for c in &clients[..6] {
        store.ban(c, None, now).await.unwrap();
    }
    let set = format!("{}:{{bans}}", cluster.prefix());
    assert_eq!(
        cluster.master_of(&set),
        cluster.master_of(&format!("{set}:info"))
    );
    let page = store.bans(None, 100, now).await.unwrap();
    let mut listed: Vec<ClientKey> = page.bans.into_iter().map(|b| b.client).collect();
    listed.sort_by_key(|c| c.to_string());
    let mut banned = clients[..6].to_vec();
    banned.sort_by_key(|c| c.to_string());
    assert_eq!(listed, banned);
    // A ban's start is read from the index, in another slot than the client's state.
    let state = store.state(&clients[0], now).await.unwrap().unwrap();
    assert_eq!(state.ban_since(now), Some(now));
    assert!(store.unban(&clients[0], now).await.unwrap());
    assert_eq!(store.bans(None, 100, now).await.unwrap().bans.len(), 5);
}

#[actix_rt::test]
async fn two_app_servers_share_limits_and_bans_through_the_cluster() {
    let Some(cluster) = RedisCluster::shared() else {
        return;
    };
    let Fleet { store, a, b, .. } = fleet(&cluster, StoreFailure::Open).await;
    let clients: Vec<String> = addresses_on_every_master(&cluster, &store, 1, 2)
        .into_values()
        .flatten()
        .collect();
    // Each client: 20 requests at once, half on each server: exactly its 10.
    let statuses = join_all(clients.iter().flat_map(|ip| {
        let (a, b) = (&a, &b);
        (0..20).map(move |i| async move {
            let srv = if i % 2 == 0 { a } else { b };
            (ip.clone(), get(srv, "/ping", ip).await)
        })
    }))
    .await;
    let mut per_client: HashMap<String, (usize, usize)> = HashMap::new();
    for (ip, status) in statuses {
        let e = per_client.entry(ip).or_default();
        match status {
            200 => e.0 += 1,
            429 => e.1 += 1,
            other => panic!("status {other}"),
        }
    }
    for ip in &clients {
        assert_eq!(per_client[ip], (10, 10), "{ip}");
    }
    // A ban reported on one server holds on the other at once.
    let ip = "198.51.100.250";
    assert_eq!(get(&b, "/ping", ip).await, 200);
    assert_eq!(get(&a, "/report", ip).await, 200);
    assert_eq!(get(&a, "/report", ip).await, 200);
    assert_eq!(get(&b, "/ping", ip).await, 403);
    assert_eq!(get(&a, "/ping", ip).await, 403);
}

#[actix_rt::test]
async fn a_master_killed_under_load_never_gives_a_500() {
    let Some(mut cluster) = RedisCluster::start() else {
        return;
    };
    // Server A fails open (serves), B fails closed (503).
    let Fleet { store, a, b, .. } = fleet(&cluster, StoreFailure::Closed).await;
    let by_master = addresses_on_every_master(&cluster, &store, 1, 2);
    let victim = *by_master.keys().next().unwrap();
    let on = |port: u16| by_master[&port].clone();
    let survivors: Vec<String> = by_master
        .iter()
        .filter(|(&p, _)| p != victim)
        .flat_map(|(_, ips)| ips.clone())
        .collect();
    let all: Vec<String> = by_master.values().flatten().cloned().collect();

    // Six rounds, each client once on A and once on B per round (the rule: 10 an hour).
    let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
    let mut per_round: Vec<HashMap<(String, char), u16>> = Vec::new();
    for round in 0..6 {
        // The master goes down while round 3's requests are in flight.
        let killer = (round == 3).then(|| {
            let mut master = cluster.take_master(victim);
            std::thread::spawn(move || {
                let _ = master.kill();
                let _ = master.wait();
            })
        });
        let answers = join_all(all.iter().flat_map(|ip| {
            let (a, b) = (&a, &b);
            [('a', a), ('b', b)]
                .into_iter()
                .map(move |(name, srv)| async move {
                    ((ip.clone(), name), get(srv, "/ping", ip).await)
                })
        }))
        .await;
        if let Some(k) = killer {
            k.join().unwrap();
        }
        for (_, status) in &answers {
            *seen.entry(*status).or_default() += 1;
        }
        per_round.push(answers.into_iter().collect());
    }
    assert!(!seen.contains_key(&500), "a 500: {seen:?}");
    println!("statuses over the run: {seen:?}");

    // Survivors are counted exactly throughout: 5 rounds x 2 allowed, then refused.
    for ip in &survivors {
        let allowed = per_round
            .iter()
            .flat_map(|r| ['a', 'b'].map(|s| r[&(ip.clone(), s)]))
            .filter(|&s| s == 200)
            .count();
        let refused = per_round
            .iter()
            .flat_map(|r| ['a', 'b'].map(|s| r[&(ip.clone(), s)]))
            .filter(|&s| s == 429)
            .count();
        assert_eq!((allowed, refused), (10, 2), "{ip} on a live master");
    }
    // The dead master's clients: served by A (fail-open), refused with 503 by B
    // (fail-closed), from the round after the kill on.
    for ip in on(victim) {
        for r in &per_round[4..] {
            assert_eq!(r[&(ip.clone(), 'a')], 200, "{ip} on A");
            assert_eq!(r[&(ip.clone(), 'b')], 503, "{ip} on B");
        }
    }
}

#[actix_rt::test]
async fn bad_cluster_settings_are_clear_errors_at_start() {
    let msg = |r: Result<RedisStore, floodgate::StoreError>| match r {
        Ok(_) => panic!("connected"),
        Err(e) => e.to_string(),
    };
    let none = msg(RedisStore::cluster(Vec::<String>::new()).connect().await);
    assert!(none.contains("no node given"), "{none}");
    assert!(RedisStore::cluster(Vec::<String>::new())
        .connect_lazy()
        .is_err());
    let bad = msg(RedisStore::cluster(["redis://127.0.0.1:1", "http://x/"])
        .connect()
        .await);
    assert!(
        bad.starts_with("invalid Redis Cluster node URL #2"),
        "{bad}"
    );
    // Nothing listens there: named in the message, the password never.
    let port = redis_server::free_port();
    let down = msg(
        RedisStore::cluster([format!("redis://user:hunter2@127.0.0.1:{port}")])
            .connect_timeout(secs(2))
            .connect()
            .await,
    );
    assert!(
        down.starts_with(&format!(
            "cannot connect to Redis Cluster at 127.0.0.1:{port}"
        )),
        "{down}"
    );
    assert!(!down.contains("hunter2"), "{down}");
    let prefix = msg(RedisStore::cluster(["redis://127.0.0.1:1"])
        .prefix("")
        .connect()
        .await);
    assert!(prefix.contains("invalid Redis key prefix"), "{prefix}");
    // A server that is not a cluster.
    let Some(single) = redis_server::RedisServer::shared() else {
        return;
    };
    let not_cluster = msg(
        RedisStore::cluster([format!("redis://127.0.0.1:{}", single.port)])
            .connect_timeout(secs(2))
            .connect()
            .await,
    );
    assert!(
        not_cluster.starts_with("cannot connect to Redis Cluster"),
        "{not_cluster}"
    );
}

#[actix_rt::test]
async fn a_slot_moved_to_another_master_is_followed_through_ask_and_moved() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let store = cluster_store(&cluster, Duration::ZERO).await;
    let plan = Arc::new(Plan::new(
        [(ScopeId(1), vec![Rule::new(10, secs(3_600))])],
        None,
    ));
    let client = ClientKey::custom("mover");
    let key = store.key_of(&client);
    let mut ms = 1_000;
    let mut check = || {
        ms += 1;
        store.check(&client, &plan, floodgate::Timestamp::from_millis(ms))
    };
    for _ in 0..4 {
        assert!(check().await.unwrap().is_allowed());
    }
    let from = cluster.master_of(&key);
    let to = *cluster.ports.iter().find(|&&p| p != from).unwrap();
    let slot = cluster.cli(from, &["CLUSTER", "KEYSLOT", &key]);
    let id = |port: u16| cluster.cli(port, &["CLUSTER", "MYID"]);
    // The slot half-way (Redis's resharding steps): the key on the new master, the slot still
    // the old one's, which answers ASK.
    assert_eq!(
        cluster.cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &id(from)]),
        "OK"
    );
    assert_eq!(
        cluster.cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &id(to)]),
        "OK"
    );
    let port = to.to_string();
    let migrate = ["MIGRATE", "127.0.0.1", &port, &key, "0", "5000"];
    assert_eq!(cluster.cli(from, &migrate), "OK");
    assert!(cluster.keys_on(from).is_empty());
    for _ in 0..3 {
        assert!(check().await.unwrap().is_allowed(), "followed ASK");
    }
    // The slot moved: the old master answers MOVED.
    for port in &cluster.ports {
        let owner = id(to);
        assert_eq!(
            cluster.cli(*port, &["CLUSTER", "SETSLOT", &slot, "NODE", &owner]),
            "OK"
        );
    }
    for _ in 0..3 {
        assert!(check().await.unwrap().is_allowed(), "followed MOVED");
    }
    assert!(
        !check().await.unwrap().is_allowed(),
        "one count throughout: 10"
    );
    assert_eq!(cluster.keys_on(to), std::slice::from_ref(&key));
    assert_eq!(cluster.master_of(&key), to);
}

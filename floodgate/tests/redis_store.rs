//! The Redis store against a real `redis-server` (`support/redis_server.rs`).
//!
//! - A seeded differential run that replays the same random operations on the memory store
//!   and on Redis and compares every answer and every state. (The scenarios every store must
//!   pass, Redis included, are the conformance suite's: `conformance.rs`.)
//! - Redis specifics: key layout and expiry, round trips per decision, `NOSCRIPT`, jitter.
//! - Fleet: two actix servers sharing one Redis share limits and bans.
//! - Faults: Redis killed during a load run, fail-over to a backup, fail-open, fail-closed,
//!   recovery; bad URLs and passwords.
//!
//! Time is floodgate's fake clock everywhere; the only real waits are bounded polls for a
//! `redis-server` to come up or for a connection to come back.
//!
//! Without `redis-server` and `redis-cli` on `PATH`, every test that needs them returns early
//! after one notice on stderr (`support/services.rs`); `FLOODGATE_REQUIRE_REDIS=1`, which CI
//! sets, makes that a failure instead.
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::time::Duration;

use floodgate::{
    Adaptive, BanReason, BanRule, ClientKey, Decision, Grace, LimitReason, MemoryStore, Plan,
    Policy, Punishment, RedisStore, ReportOutcome, Rule, ScopeId, Store, Timestamp,
};

#[path = "support/bounded_traffic.rs"]
mod bounded_traffic;
#[path = "support/services.rs"]
mod services;

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::{redis_store, RedisServer};

#[path = "support/walks.rs"]
mod walks;
use walks::*;

/// Replays one seeded random run of checks, reports, bans and unbans on two stores and
/// compares every answer; with `same_state`, every client's state too. Both stores are
/// swept before each step, as Redis drops expired keys by itself (the contract of
/// `ClientState::expires_at` is that this changes no decision). Returns the kinds of
/// decisions seen.
async fn differential(
    a: impl Store,
    b: impl Store,
    seed: u64,
    same_state: bool,
) -> Vec<&'static str> {
    let route = ScopeId::named("route r");
    let pol = ScopeId::named("policy q");
    let pol2 = ScopeId::named("policy q2");
    let plans = [
        global(&[(3, 10), (5, 60)]),
        Arc::new(Plan::new(
            [
                (ScopeId::GLOBAL, rules(&[(3, 10)])),
                (route, rules(&[(1, 2)])),
            ],
            None,
        )),
        Arc::new(Plan::new(
            [(ScopeId::GLOBAL, rules(&[(4, 10)]))],
            Some((
                pol,
                Policy::new(2, secs(5))
                    .block_limit(1)
                    .punishment(Punishment::Ban(secs(30))),
            )),
        )),
        Arc::new(Plan::new(
            [],
            Some((
                pol2,
                Policy::new(2, secs(5))
                    .block_limit(2)
                    .relative_block(true)
                    .block_exceed_reset(false)
                    .accumulate_requests(true)
                    .cooldown(Duration::from_millis(300))
                    .grace(Grace {
                        extra: 1,
                        interval: secs(20),
                    })
                    .adaptive(Adaptive {
                        factor: 2.0,
                        max: secs(120),
                        jitter: Duration::ZERO,
                    })
                    .punishment(Punishment::Ban(secs(10)))
                    .max_window_duration(Some(secs(40))),
            )),
        )),
        Arc::new(Plan::new(
            [],
            Some((
                route,
                Policy::new(1, secs(3))
                    .block_limit(0)
                    .punishment(Punishment::Blacklist),
            )),
        )),
        Arc::new(Plan::ban_only()),
        // Requests of cost 2: two units of every limit.
        Arc::new(Plan::new([(ScopeId::GLOBAL, rules(&[(3, 10), (5, 60)]))], None).with_units(2)),
        Arc::new(
            Plan::new(
                [(ScopeId::GLOBAL, rules(&[(4, 10)]))],
                Some((
                    pol,
                    Policy::new(2, secs(5))
                        .block_limit(1)
                        .punishment(Punishment::Ban(secs(30))),
                )),
            )
            .with_units(2),
        ),
    ];
    let ban_rule = BanRule::new(3, secs(10), secs(20));
    let clients: Vec<ClientKey> = (100..103).map(client).collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut now = 0u64;
    let mut seen = Vec::new();
    for step in 0..1_500 {
        now += match rng.u8(0..100) {
            0..=69 => rng.u64(0..100),
            70..=96 => rng.u64(100..3_000),
            _ => rng.u64(3_000..60_000),
        };
        let c = &clients[rng.usize(0..clients.len())];
        let t = at(now);
        a.sweep(t).await.unwrap();
        b.sweep(t).await.unwrap();
        let what = rng.u8(0..100);
        let label = format!("seed {seed} step {step} at {now} on {c:?}, op {what}");
        match what {
            0..=79 => {
                // The blacklisting plan is rare, or clients would spend the run blacklisted.
                let mut i = match rng.u8(0..100) {
                    0..=19 => 0,
                    20..=34 => 1,
                    35..=69 => 2,
                    70..=89 => 3,
                    90..=92 => 4,
                    _ => 5,
                };
                // Every fifth step, the first plans at a cost of 2 (drawing nothing more, so
                // the seeds keep the runs they were chosen for).
                if step % 5 == 0 && (i == 0 || i == 2) {
                    i = 6 + i / 2;
                }
                let plan = &plans[i];
                let d = a.check(c, plan, t).await.unwrap();
                assert_eq!(d, b.check(c, plan, t).await.unwrap(), "{label}");
                seen.push(match d {
                    Decision::Allowed { .. } => "allowed",
                    Decision::Limited {
                        reason: LimitReason::Rule,
                        ..
                    } => "rule",
                    Decision::Limited {
                        reason: LimitReason::Blocked,
                        ..
                    } => "blocked",
                    Decision::Limited { .. } => "cooldown",
                    Decision::Banned {
                        reason: BanReason::Punished,
                        until: None,
                        ..
                    } => "blacklisted",
                    Decision::Banned {
                        reason: BanReason::Punished,
                        ..
                    } => "punished",
                    Decision::Banned {
                        reason: BanReason::Reported,
                        ..
                    } => "reported",
                    Decision::Banned { .. } => "operator",
                });
            }
            80..=91 => {
                assert_eq!(
                    a.report(c, &ban_rule, t).await.unwrap(),
                    b.report(c, &ban_rule, t).await.unwrap(),
                    "{label}"
                );
            }
            92..=94 => {
                let until = match rng.u8(0..3) {
                    0 => None,
                    _ => Some(t + Duration::from_millis(rng.u64(0..30_000))),
                };
                a.ban(c, until, t).await.unwrap();
                b.ban(c, until, t).await.unwrap();
            }
            _ => {
                assert_eq!(
                    a.unban(c, t).await.unwrap(),
                    b.unban(c, t).await.unwrap(),
                    "{label}"
                );
            }
        }
        if same_state {
            for c in &clients {
                assert_eq!(
                    a.state(c, t).await.unwrap(),
                    b.state(c, t).await.unwrap(),
                    "{label}: state of {c:?}"
                );
            }
        }
    }
    seen
}

/// Random traffic under a rule of a large count beside a small one (see
/// `support/bounded_traffic.rs`); the bounds of each hold. Returns every decision.
async fn bounded_traffic(s: &impl Store, c: &ClientKey) -> Vec<Decision> {
    let plan = bounded_traffic::plan();
    let mut bound = bounded_traffic::Bound::default();
    let mut decisions = Vec::new();
    for now in bounded_traffic::times(2_000) {
        let d = check(s, c, &plan, now).await;
        bound.answer(now, d);
        decisions.push(d);
    }
    bound.assert_exercised();
    decisions
}

#[actix_rt::test]
async fn bounded_windows_decide_and_store_as_in_memory() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let redis = redis_store(&server, secs(1)).await;
    let memory = MemoryStore::new();
    let c = client(41);
    let on_redis = bounded_traffic(&redis, &c).await;
    let on_memory = bounded_traffic(&memory, &c).await;
    assert_eq!(on_redis, on_memory);
    let end = at(1);
    let state = redis.state(&c, end).await.unwrap();
    assert!(state.is_some());
    assert_eq!(state, memory.state(&c, end).await.unwrap());
}

/// Several rules of large counts in one scope, each counting in a window of its own width
/// (the script finds each rule's window by its place among the large rules), beside a small
/// rule and a large rule of another scope: every decision and the state as in memory, and
/// each large rule refused at some point.
#[actix_rt::test]
async fn several_bounded_windows_in_one_scope_decide_and_store_as_in_memory() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let redis = redis_store(&server, secs(1)).await;
    let memory = MemoryStore::new();
    let ms = Duration::from_millis;
    let plan = Arc::new(Plan::new(
        [
            (
                ScopeId::GLOBAL,
                vec![
                    Rule::new(300, ms(6_000)),
                    Rule::new(40, ms(100)),
                    Rule::new(160, ms(1_500)),
                ],
            ),
            (ScopeId::named("route r"), vec![Rule::new(200, ms(2_500))]),
        ],
        None,
    ));
    let c = client(44);
    let mut refused = std::collections::BTreeSet::new();
    let mut end = 0;
    for now in bounded_traffic::times(3_000) {
        let d = check(&memory, &c, &plan, now).await;
        assert_eq!(d, check(&redis, &c, &plan, now).await, "at {now}");
        if let Decision::Limited { limit, .. } = d {
            refused.insert(limit);
        }
        end = now;
    }
    assert!([0, 2, 3].iter().all(|l| refused.contains(l)), "{refused:?}");
    let state = redis.state(&c, at(end)).await.unwrap();
    assert!(state.is_some());
    assert_eq!(state, memory.state(&c, at(end)).await.unwrap());
}

/// A value written before bounded windows existed (version 1): a full log of 1,000 times
/// under a rule of 1,000 per minute, which now counts in a bounded window.
#[actix_rt::test]
async fn an_old_value_with_a_long_log_keeps_its_count_in_the_bounded_window() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let s = redis_store(&server, secs(1)).await;
    let c = client(42);
    let plan = global(&[(1_000, 60)]);
    let times: Vec<String> = (0..1_000).map(|i| (T0 + i).to_string()).collect();
    let old = format!(
        "1 {} 0 0 0 0 1 L {} {} 1000 {}",
        T0 + 999,
        ScopeId::GLOBAL.0,
        T0 + 60_999,
        times.join(" ")
    );
    server.cli(&["SET", &s.key_of(&c), &old]);
    match check(&s, &c, &plan, 1_000).await {
        Decision::Limited { retry_after, .. } => {
            assert_eq!(retry_after, Duration::from_millis(59_000))
        }
        other => panic!("{other:?}"),
    }
    assert!(check(&s, &c, &plan, 60_000).await.is_allowed());
    assert_rewritten_in_version_3(&server, &s.key_of(&c));
    // The log's 1,000 fell in one sub-window, which leaves whole at 61 s - 1 ms.
    assert!(!check(&s, &c, &plan, 60_998).await.is_allowed());
    assert!(check(&s, &c, &plan, 60_999).await.is_allowed());
}

/// The value at `key` is the script's current encoding: the MessagePack of the version, 3,
/// then of a map (the state), never the text of an earlier version; and small.
fn assert_rewritten_in_version_3(server: &RedisServer, key: &str) {
    let reply = server.cli(&[
        "EVAL",
        "local v = redis.call('GET', KEYS[1]) return {string.byte(v, 1, 2)} ",
        "1",
        key,
    ]);
    let bytes: Vec<u32> = reply.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(bytes[0], 3, "{bytes:?}");
    assert!((0x80..=0x8f).contains(&bytes[1]), "a map: {bytes:?}");
    let len: usize = server.cli(&["STRLEN", key]).parse().unwrap();
    assert!(len < 200, "{len} bytes");
}

/// A value written by the previous version (2, text, with a bounded window): a rule of 1,000
/// per minute whose window holds 1,000 units in the sub-window of `T0`. The script reads it
/// (the limit holds until that sub-window leaves) and rewrites it in version 3, which the
/// store reads back with the same window.
#[actix_rt::test]
async fn a_value_of_the_previous_version_keeps_its_window_and_is_rewritten() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let s = redis_store(&server, secs(1)).await;
    let c = client(43);
    let plan = global(&[(1_000, 60)]);
    let j = T0 / 1_000;
    let old = format!(
        "2 {T0} 0 0 0 0 1 L {} {} 0 1 1000 {} 1 2 1000",
        ScopeId::GLOBAL.0,
        T0 + 61_000,
        j - 2
    );
    server.cli(&["SET", &s.key_of(&c), &old]);
    let before = s.state(&c, at(0)).await.unwrap().unwrap();
    match check(&s, &c, &plan, 1_000).await {
        Decision::Limited { retry_after, .. } => {
            assert_eq!(retry_after, Duration::from_millis(59_999))
        }
        other => panic!("{other:?}"),
    }
    assert_rewritten_in_version_3(&server, &s.key_of(&c));
    let after = s.state(&c, at(1_000)).await.unwrap().unwrap();
    assert_eq!(
        format!("{before:?}").replace(&(T0).to_string(), "last_seen"),
        format!("{after:?}").replace(&(T0 + 1_000).to_string(), "last_seen"),
        "the refusal changed nothing but the time last seen"
    );
    assert!(!check(&s, &c, &plan, 60_998).await.is_allowed());
    assert!(check(&s, &c, &plan, 60_999).await.is_allowed());
}

/// A value the script cannot read (not its MessagePack, cut short, another version, a state
/// of the wrong shape) reads as no state, as a value of an unknown version always did: the
/// decision is made, never a script error, and the value is replaced by a valid one.
#[actix_rt::test]
async fn a_damaged_value_reads_as_no_state() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let s = redis_store(&server, secs(1)).await;
    let plan = global(&[(2, 60)]);
    for (n, value) in [
        "return 'garbage'",
        "return string.sub(cmsgpack.pack(3, {scopes = {}, offences = {}}), 1, 4)",
        "return cmsgpack.pack(4, {scopes = {}, offences = {}})",
        "return cmsgpack.pack(3, {scopes = 'x', offences = {}})",
        "return cmsgpack.pack(3, {scopes = {}, offences = {}})",
        "return cmsgpack.pack(3)",
        "return ''",
    ]
    .into_iter()
    .enumerate()
    {
        let c = client(60 + n as u8);
        let key = s.key_of(&c);
        let script = format!("redis.call('SET', KEYS[1], (function() {value} end)()) return 1");
        assert_eq!(server.cli(&["EVAL", &script, "1", &key]), "1");
        assert!(check(&s, &c, &plan, 0).await.is_allowed(), "{value}");
        assert!(check(&s, &c, &plan, 1).await.is_allowed(), "{value}");
        assert!(!check(&s, &c, &plan, 2).await.is_allowed(), "{value}");
        assert_rewritten_in_version_3(&server, &key);
    }
}

/// Every kind of decision came up in the runs, so the comparison covered them all.
fn assert_covered(seen: &[&str]) {
    for kind in [
        "allowed",
        "rule",
        "blocked",
        "cooldown",
        "blacklisted",
        "punished",
        "reported",
        "operator",
    ] {
        assert!(seen.contains(&kind), "no {kind} decision in the runs");
    }
}

/// One seeded differential run (states compared too), in a database of its own; the seeds
/// run as separate tests, in parallel.
async fn redis_decides_and_stores_exactly_what_memory_does(seed: u64) {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let store = redis_store(&server, Duration::ZERO).await;
    let seen = differential(MemoryStore::new(), store, seed, true).await;
    assert_covered(&seen);
}

#[actix_rt::test]
async fn redis_decides_and_stores_exactly_what_memory_does_seed_1() {
    redis_decides_and_stores_exactly_what_memory_does(1).await;
}

#[actix_rt::test]
async fn redis_decides_and_stores_exactly_what_memory_does_seed_6() {
    redis_decides_and_stores_exactly_what_memory_does(6).await;
}

#[actix_rt::test]
async fn redis_decides_and_stores_exactly_what_memory_does_seed_3() {
    redis_decides_and_stores_exactly_what_memory_does(3).await;
}

#[actix_rt::test]
async fn the_ban_cache_changes_no_decision() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let mut seen = Vec::new();
    for seed in [4, 5] {
        server.cli(&["FLUSHDB"]);
        let store = redis_store(&server, secs(1)).await;
        seen.extend(differential(MemoryStore::new(), store, seed, false).await);
    }
    assert_covered(&seen);
}

// ---------------------------------------------------------------------------------------
// Redis specifics: key layout, expiry, round trips, NOSCRIPT.

#[actix_rt::test]
async fn keys_are_prefixed_and_expire_with_the_state() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let s = redis_store(&server, secs(1)).await;
    let c = client(50);
    assert_eq!(s.key_of(&c), "test:{ip:203.0.113.50}");
    assert_eq!(s.key_of(&ClientKey::custom("alice")), "test:{key:alice}");
    check(&s, &c, &global(&[(3, 10)]), 0).await;
    let pttl: i64 = server
        .cli(&["PTTL", "test:{ip:203.0.113.50}"])
        .parse()
        .unwrap();
    assert!(
        (9_000..=10_000).contains(&pttl),
        "the key lives as long as the 10 s window: {pttl}"
    );
    // Permanent bans and "forever" records never expire.
    s.ban(&c, None, at(1)).await.unwrap();
    assert_eq!(server.cli(&["PTTL", "test:{ip:203.0.113.50}"]), "-1");
    // The unban leaves only the log, whose window decides the key's life again.
    assert!(s.unban(&c, at(2)).await.unwrap());
    let pttl: i64 = server
        .cli(&["PTTL", "test:{ip:203.0.113.50}"])
        .parse()
        .unwrap();
    assert!((9_000..=9_998).contains(&pttl), "{pttl}");
    // A state that holds nothing more is deleted at once.
    let d = ClientKey::custom("alice");
    s.ban(&d, Some(at(5_000)), at(0)).await.unwrap();
    assert_eq!(server.cli(&["EXISTS", "test:{key:alice}"]), "1");
    assert!(s.unban(&d, at(1)).await.unwrap());
    assert_eq!(server.cli(&["EXISTS", "test:{key:alice}"]), "0");
    // Nothing else was written: one key per client, all under the prefix.
    assert_eq!(server.cli(&["KEYS", "*"]), "test:{ip:203.0.113.50}");
    // Another prefix is another app: it shares nothing.
    let other = RedisStore::builder(server.url())
        .prefix("other")
        .connect()
        .await
        .unwrap();
    assert!(other.state(&c, at(3)).await.unwrap().is_none());
    assert!(s.state(&c, at(3)).await.unwrap().is_some());
}

/// 2^53 ms: the script's "never" (see `RedisStore`'s docs, "Very long durations").
const LUA_NEVER: u64 = 1 << 53;

#[actix_rt::test]
async fn durations_of_duration_max_mean_forever_in_the_script_too() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let redis = redis_store(&server, Duration::ZERO).await;
    let memory = MemoryStore::new();
    let stores = (&redis, &memory);
    async fn both(
        (redis, memory): (&RedisStore, &MemoryStore),
        plan: Arc<Plan>,
        c: ClientKey,
        ms: u64,
    ) -> (Decision, Decision) {
        let r = redis
            .check(&c, &plan, at(ms))
            .await
            .expect("the script answers");
        let m = memory.check(&c, &plan, at(ms)).await.unwrap();
        (r, m)
    }
    let forever = |d: Decision| matches!(d, Decision::Banned { until: None, .. });

    // A rule and a cooldown of Duration::MAX: refused until "never", which the script holds
    // as 2^53 ms (memory: u64::MAX ms). Odd times: a sum past 2^53 would round.
    let rule = Arc::new(Plan::new(
        [(ScopeId::GLOBAL, vec![Rule::new(1, Duration::MAX)])],
        None,
    ));
    let cooldown = policy_plan(Policy::new(u32::MAX, Duration::MAX).cooldown(Duration::MAX));
    for (plan, c) in [(rule, client(60)), (cooldown, client(61))] {
        let (r, m) = both(stores, plan.clone(), c.clone(), 1).await;
        assert!(r.is_allowed() && m.is_allowed(), "{r:?} {m:?}");
        for ms in [1, 3, 1_001] {
            let (r, m) = both(stores, plan.clone(), c.clone(), ms).await;
            let now = T0 + ms;
            assert_eq!(
                retry(r),
                Some(Duration::from_millis(LUA_NEVER - now)),
                "{r:?}"
            );
            assert_eq!(
                retry(m),
                Some(Duration::from_millis(u64::MAX - now)),
                "{m:?}"
            );
        }
    }

    // A block and an adaptive punishment of Duration::MAX (factor f64::MAX, jitter
    // Duration::MAX): blocked to the end, then banned for good, in both stores.
    let punish = policy_plan(
        Policy::new(1, Duration::MAX)
            .block_duration(Duration::MAX)
            .block_limit(1)
            .punishment(Punishment::Ban(Duration::MAX))
            .adaptive(Adaptive {
                factor: f64::MAX,
                max: Duration::MAX,
                jitter: Duration::MAX,
            }),
    );
    let c = client(62);
    let (r, m) = both(stores, punish.clone(), c.clone(), 1).await;
    assert!(r.is_allowed() && m.is_allowed());
    let (r, m) = both(stores, punish.clone(), c.clone(), 3).await;
    assert_eq!(
        retry(r),
        Some(Duration::from_millis(LUA_NEVER - (T0 + 3))),
        "{r:?}"
    );
    assert_eq!(
        retry(m),
        Some(Duration::from_millis(u64::MAX - (T0 + 3))),
        "{m:?}"
    );
    assert!(redis.unban(&c, at(5)).await.unwrap() == memory.unban(&c, at(5)).await.unwrap());

    // Ban rules and operator bans of Duration::MAX: permanent in both.
    let ban_rule = BanRule::new(1, Duration::MAX, Duration::MAX);
    let c = client(63);
    let r = redis.report(&c, &ban_rule, at(7)).await.unwrap();
    let m = memory.report(&c, &ban_rule, at(7)).await.unwrap();
    assert_eq!(
        (r, m),
        (
            ReportOutcome::Banned {
                until: Timestamp::NEVER
            },
            r
        )
    );
    let (r, m) = both(stores, global(&[(1, 1)]), c.clone(), 9).await;
    assert!(forever(r) && forever(m), "{r:?} {m:?}");
    let c = client(64);
    for s in [&redis as &dyn Store, &memory] {
        s.ban(&c, Some(at(11) + Duration::MAX), at(11))
            .await
            .unwrap();
    }
    let (r, m) = both(stores, global(&[(1, 1)]), c.clone(), 13).await;
    assert!(forever(r) && forever(m), "{r:?} {m:?}");
    assert_eq!(server.cli(&["PTTL", "test:{ip:203.0.113.64}"]), "-1");

    // A zero-length ban under an adaptive factor whose powers overflow to infinity: 0 x inf
    // is NaN in the script's doubles, which it must not answer with. Every third punishment.
    let zero = policy_plan(
        Policy::new(1, Duration::from_millis(1))
            .block_limit(0)
            .punishment(Punishment::Ban(Duration::ZERO))
            .adaptive(Adaptive {
                factor: 1e300,
                max: Duration::from_secs(60),
                jitter: Duration::ZERO,
            }),
    );
    let c = client(65);
    for n in 0..4 {
        let t = 100 + n * 10;
        let (r, m) = both(stores, zero.clone(), c.clone(), t).await;
        assert_eq!(r, m, "request {n}");
        let (r, m) = both(stores, zero.clone(), c.clone(), t).await;
        assert_eq!(r, m, "punishment {n}");
        assert!(
            matches!(r, Decision::Banned { until: Some(u), .. } if u == at(t)),
            "a zero-length ban: {r:?}"
        );
    }
}

/// The script adds the jitter drawn for a punishment (`fastrand`, on the deciding thread:
/// seeded here, so a failure replays) to the adaptive length, never more than the bound.
#[actix_rt::test]
async fn adaptive_jitter_on_redis_stays_within_its_bound_and_varies() {
    const SEED: u64 = 0x5eed_0017;
    fastrand::seed(SEED);
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let s = redis_store(&server, Duration::ZERO).await;
    let plan = policy_plan(
        Policy::new(1, secs(1))
            .block_limit(0)
            .punishment(Punishment::Ban(secs(10)))
            .adaptive(Adaptive {
                factor: 2.0,
                max: secs(1_000),
                jitter: secs(5),
            }),
    );
    let c = client(70);
    let mut t = 0;
    let mut extras = Vec::new();
    for n in 0..12u32 {
        let label = format!("seed {SEED:#x}, punishment {n}");
        assert!(check(&s, &c, &plan, t).await.is_allowed(), "{label}");
        let length = match check(&s, &c, &plan, t + 1).await {
            Decision::Banned { until: Some(u), .. } => u.as_millis() - T0 - (t + 1),
            d => panic!("{label}: {d:?}"),
        };
        let base = (10_000u64 << n).min(1_000_000);
        assert!(
            (base..=base + 5_000).contains(&length),
            "{label}: {length} ms, base {base} ms, jitter at most 5000 ms"
        );
        extras.push(length - base);
        t += 1 + length + 5_000;
    }
    extras.sort_unstable();
    extras.dedup();
    assert!(
        extras.len() > 1,
        "seed {SEED:#x}: the jitter never varied: {extras:?}"
    );
}

#[actix_rt::test]
async fn one_round_trip_per_decision_and_none_for_a_cached_ban() {
    let Some(server) = RedisServer::shared_exclusive() else {
        return;
    };
    let a = redis_store(&server, secs(1)).await;
    let b = redis_store(&server, secs(1)).await;
    let plan = global(&[(1_000, 60)]);
    let c = client(51);
    let before = server.round_trips();
    for ms in 0..100 {
        assert!(check(&a, &c, &plan, ms).await.is_allowed());
    }
    assert_eq!(
        server.round_trips() - before,
        100,
        "one round trip per decision"
    );
    let stats = server.cli(&["INFO", "commandstats"]);
    assert!(
        stats.contains("cmdstat_evalsha:calls=100,"),
        "all of them EVALSHA: {stats}"
    );

    a.ban(&c, Some(at(60_000)), at(100)).await.unwrap();
    let before = server.round_trips();
    for ms in 101..201 {
        assert!(matches!(
            check(&a, &c, &plan, ms).await,
            Decision::Banned { .. }
        ));
    }
    assert_eq!(
        server.round_trips() - before,
        0,
        "the banning instance knows the ban"
    );
    for ms in 101..201 {
        assert!(matches!(
            check(&b, &c, &plan, ms).await,
            Decision::Banned { .. }
        ));
    }
    assert_eq!(
        server.round_trips() - before,
        1,
        "another instance asks once, then caches"
    );
    // After the cache time, one round trip refreshes it.
    assert!(matches!(
        check(&b, &c, &plan, 1_201).await,
        Decision::Banned { .. }
    ));
    assert_eq!(server.round_trips() - before, 2);
}

#[actix_rt::test]
async fn a_redis_that_lost_the_script_gets_it_again() {
    let Some(server) = RedisServer::shared_exclusive() else {
        return;
    };
    let s = redis_store(&server, Duration::ZERO).await;
    let plan = global(&[(2, 60)]);
    let c = client(52);
    assert!(check(&s, &c, &plan, 0).await.is_allowed());
    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
    assert!(check(&s, &c, &plan, 1).await.is_allowed());
    assert!(
        !check(&s, &c, &plan, 2).await.is_allowed(),
        "the state survived the flush"
    );
}

//! The store scenarios, written once as plain functions over `&dyn Store` (time is explicit
//! `Timestamp`s; nothing sleeps): `floodgate/tests/conformance.rs` runs each on the decision
//! core alone, the memory store, SQLite in every durability mode, Redis (with and without its
//! ban cache) and a failover store; `redis_store.rs` shares their helpers. Included by
//! `#[path]`, so each test binary uses the part it needs.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::thread::{self};
use std::time::Duration;

use floodgate::{
    Adaptive, BanReason, BanRule, ClientKey, Decision, Grace, LimitReason, Plan, Policy,
    Punishment, ReportOutcome, Rule, ScopeId, Store, Timestamp,
};

use super::block_on::run;

pub(crate) fn key(n: u32) -> ClientKey {
    ClientKey::from_ip(IpAddr::V4(Ipv4Addr::from(n)), 64)
}

pub(crate) const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

pub(crate) fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(T0.as_millis() + ms)
}

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub(crate) fn global(rules: Vec<Rule>) -> Arc<Plan> {
    Arc::new(Plan::new([(ScopeId::GLOBAL, rules)], None))
}

pub(crate) fn limited_wait(d: Decision) -> Duration {
    match d {
        Decision::Limited { retry_after, .. } => retry_after,
        other => panic!("expected Limited, got {other:?}"),
    }
}

pub(crate) fn sliding_log_is_exact(store: &dyn Store) {
    let plan = global(vec![Rule::new(3, secs(10))]);
    let c = key(1);
    for (i, ms) in [0, 1_000, 2_000].into_iter().enumerate() {
        match run(store.check(&c, &plan, at(ms))) {
            Decision::Allowed { quota: Some(q) } => assert_eq!(q.remaining, 2 - i as u32),
            other => panic!("request {i}: {other:?}"),
        }
    }
    // The oldest counted request (at 0) leaves the window at 10 s.
    assert_eq!(
        limited_wait(run(store.check(&c, &plan, at(3_000)))),
        secs(7)
    );
    assert_eq!(
        limited_wait(run(store.check(&c, &plan, at(9_999)))),
        Duration::from_millis(1)
    );
    assert!(run(store.check(&c, &plan, at(10_000))).is_allowed());
    // Now 1 s, 2 s and 10 s are counted: the next slot opens at 11 s.
    assert_eq!(
        limited_wait(run(store.check(&c, &plan, at(10_500)))),
        Duration::from_millis(500)
    );
    // Another client is not affected.
    assert!(run(store.check(&key(2), &plan, at(10_500))).is_allowed());
}

pub(crate) fn refusal_is_atomic_across_rules_and_scopes(store: &dyn Store) {
    let route = ScopeId::named("route");
    let both = Arc::new(Plan::new(
        [
            (ScopeId::GLOBAL, vec![Rule::new(5, secs(60))]),
            (
                route,
                vec![Rule::new(2, secs(60)), Rule::new(10, secs(3600))],
            ),
        ],
        None,
    ));
    let only_global = global(vec![Rule::new(5, secs(60))]);
    let c = key(1);
    assert!(run(store.check(&c, &both, at(0))).is_allowed());
    assert!(run(store.check(&c, &both, at(1))).is_allowed());
    for ms in 2..10 {
        match run(store.check(&c, &both, at(ms))) {
            Decision::Limited { reason, limit, .. } => {
                assert_eq!(reason, LimitReason::Rule);
                assert_eq!(both.limits()[limit].quota, 2);
            }
            other => panic!("{other:?}"),
        }
    }
    // The refused requests consumed nothing from the global rule: 3 of 5 are left.
    match run(store.check(&c, &only_global, at(20))) {
        Decision::Allowed { quota: Some(q) } => assert_eq!(q.remaining, 2),
        other => panic!("{other:?}"),
    }
}

pub(crate) fn reports_ban_from_the_last_offence_and_are_spent(store: &dyn Store) {
    let rule = BanRule::new(3, secs(10), secs(60));
    let c = key(7);
    let plan = global(vec![Rule::new(100, secs(1))]);
    assert_eq!(
        run(store.report(&c, &rule, at(0))),
        ReportOutcome::Recorded { offences: 1 }
    );
    // Out of the window of a later offence: not counted.
    assert_eq!(
        run(store.report(&c, &rule, at(11_000))),
        ReportOutcome::Recorded { offences: 1 }
    );
    assert_eq!(
        run(store.report(&c, &rule, at(12_000))),
        ReportOutcome::Recorded { offences: 2 }
    );
    assert_eq!(
        run(store.report(&c, &rule, at(13_000))),
        ReportOutcome::Banned { until: at(73_000) }
    );
    assert_eq!(
        run(store.check(&c, &plan, at(20_000))),
        Decision::Banned {
            until: Some(at(73_000)),
            reason: BanReason::Reported,
            started: false
        }
    );
    assert!(run(store.check(&c, &plan, at(73_000))).is_allowed());
    // The offences that led to the ban are spent.
    assert_eq!(
        run(store.report(&c, &rule, at(73_001))),
        ReportOutcome::Recorded { offences: 1 }
    );
}

pub(crate) fn operators_ban_blacklist_and_unban(store: &dyn Store) {
    let plan = global(vec![Rule::new(100, secs(1))]);
    let c = key(9);
    assert!(!run(store.unban(&c, at(0))), "unban of an unknown client");
    run(store.ban(&c, Some(at(30_000)), at(0)));
    assert_eq!(
        run(store.check(&c, &plan, at(1))),
        Decision::Banned {
            until: Some(at(30_000)),
            reason: BanReason::Operator,
            started: false
        }
    );
    // Bans apply to ban-only plans (excluded methods) too.
    assert!(!run(store.check(&c, &Arc::new(Plan::ban_only()), at(2))).is_allowed());
    assert!(run(store.check(&c, &plan, at(30_000))).is_allowed());

    run(store.ban(&c, None, at(31_000)));
    let far = at(365 * 86_400_000);
    assert_eq!(
        run(store.check(&c, &plan, far)),
        Decision::Banned {
            until: None,
            reason: BanReason::Operator,
            started: false
        }
    );
    assert_eq!(run(store.sweep(far)), 0, "a blacklist is never swept");
    assert!(run(store.unban(&c, far)));
    assert!(!run(store.unban(&c, far)));
    assert!(run(store.check(&c, &plan, far)).is_allowed());
}

pub(crate) fn policy_blocks_then_punishes(store: &dyn Store) {
    let scope = ScopeId::named("policy");
    let policy = Policy::new(2, secs(60))
        .block_limit(1)
        .block_exceed_duration(None);
    let plan = Arc::new(Plan::new([], Some((scope, policy))));
    let c = key(3);
    assert!(run(store.check(&c, &plan, at(0))).is_allowed());
    assert!(run(store.check(&c, &plan, at(1_000))).is_allowed());
    match run(store.check(&c, &plan, at(2_000))) {
        Decision::Limited {
            reason: LimitReason::Blocked,
            retry_after,
            started: true,
            ..
        } => assert_eq!(retry_after, secs(60)),
        other => panic!("{other:?}"),
    }
    // Blocked until 62 s (relative_block = false: refusals do not extend it).
    assert_eq!(
        run(store.check(&c, &plan, at(30_000))),
        Decision::Limited {
            reason: LimitReason::Blocked,
            limit: 0,
            retry_after: secs(32),
            started: false
        }
    );
    let status = run(store.state(&c, at(30_000))).expect("state");
    assert!(status.ban_at(at(30_000)).is_none());
    // The block ended; a new window; the second block exceeds block_limit = 1: blacklisted.
    assert!(run(store.check(&c, &plan, at(62_000))).is_allowed());
    assert!(run(store.check(&c, &plan, at(62_001))).is_allowed());
    assert_eq!(
        run(store.check(&c, &plan, at(62_002))),
        Decision::Banned {
            until: None,
            reason: BanReason::Punished,
            started: true
        }
    );
    let later = at(10 * 86_400_000);
    assert!(matches!(
        run(store.check(&c, &plan, later)),
        Decision::Banned { until: None, .. }
    ));
    assert!(run(store.unban(&c, later)));
    assert!(run(store.check(&c, &plan, later)).is_allowed());
}

pub(crate) fn policy_ban_punishment_ends(store: &dyn Store) {
    let scope = ScopeId::named("policy-ban");
    let policy = Policy::new(1, secs(10))
        .block_limit(0)
        .block_exceed_duration(Some(secs(100)));
    let plan = Arc::new(Plan::new([], Some((scope, policy))));
    let c = key(4);
    assert!(run(store.check(&c, &plan, at(0))).is_allowed());
    assert_eq!(
        run(store.check(&c, &plan, at(1))),
        Decision::Banned {
            until: Some(at(100_001)),
            reason: BanReason::Punished,
            started: true
        }
    );
    assert!(!run(store.check(&c, &plan, at(100_000))).is_allowed());
    assert!(run(store.check(&c, &plan, at(100_001))).is_allowed());
}

pub(crate) fn state_reflects_the_client(store: &dyn Store) {
    let c = key(5);
    assert_eq!(run(store.state(&c, at(0))), None);
    // A plan that only checks bans creates no state.
    assert!(run(store.check(&c, &Arc::new(Plan::ban_only()), at(0))).is_allowed());
    assert_eq!(run(store.state(&c, at(0))), None);
    let plan = global(vec![Rule::new(5, secs(10))]);
    run(store.check(&c, &plan, at(1_000)));
    let state = run(store.state(&c, at(2_000))).expect("state");
    assert_eq!(state.last_seen(), at(1_000));
    assert_eq!(state.expires_at(), at(11_000));
    assert_eq!(run(store.state(&c, at(11_000))), None, "expired");
}

pub(crate) fn sweep_deletes_expired_clients(store: &dyn Store) {
    let plan = global(vec![Rule::new(5, secs(10))]);
    for n in 0..100 {
        run(store.check(&key(n), &plan, at(u64::from(n))));
    }
    run(store.ban(&key(1000), Some(at(60_000)), at(0)));
    assert_eq!(run(store.sweep(at(9_999))), 0);
    assert_eq!(run(store.sweep(at(10_049))), 50);
    assert_eq!(run(store.sweep(at(10_099))), 50);
    assert!(run(store.state(&key(99), at(0))).is_none(), "swept");
    assert!(run(store.state(&key(1000), at(10_100))).is_some(), "banned");
    assert_eq!(run(store.sweep(at(60_000))), 1);
}

pub(crate) fn expired_state_starts_afresh(store: &dyn Store) {
    let plan = global(vec![Rule::new(1, secs(10))]);
    let c = key(6);
    assert!(run(store.check(&c, &plan, at(0))).is_allowed());
    assert!(!run(store.check(&c, &plan, at(5_000))).is_allowed());
    // Nothing swept, but the state expired: a new window.
    assert!(run(store.check(&c, &plan, at(10_000))).is_allowed());
    let rule = BanRule::new(2, secs(10), secs(5));
    run(store.report(&c, &rule, at(10_000)));
    assert_eq!(
        run(store.report(&c, &rule, at(20_001))),
        ReportOutcome::Recorded { offences: 1 },
        "an offence out of the window expired"
    );
}

pub(crate) fn concurrent_requests_are_counted_exactly(store: &dyn Store) {
    let plan = global(vec![Rule::new(50, secs(3600))]);
    let c = key(42);
    let allowed: usize = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let plan = &plan;
                let c = &c;
                s.spawn(move || {
                    (0..50)
                        .filter(|i| run(store.check(c, plan, at(t * 50 + i))).is_allowed())
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(allowed, 50);
}

pub(crate) fn custom_keys_are_separate_from_addresses(store: &dyn Store) {
    let plan = global(vec![Rule::new(1, secs(10))]);
    let ip = ClientKey::from_ip(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)), 64);
    let custom = ClientKey::custom("1.2.3.4");
    assert!(run(store.check(&ip, &plan, at(0))).is_allowed());
    assert!(run(store.check(&custom, &plan, at(0))).is_allowed());
    let v6 = ClientKey::from_ip("2001:db8::1".parse().unwrap(), 64);
    let v6_same_net = ClientKey::from_ip("2001:db8::2".parse().unwrap(), 64);
    assert!(run(store.check(&v6, &plan, at(0))).is_allowed());
    assert!(!run(store.check(&v6_same_net, &plan, at(1))).is_allowed());
}

pub(crate) fn policy_accumulation_cooldown_grace_and_adaptive(store: &dyn Store) {
    let plan = |p: Policy| Arc::new(Plan::new([], Some((ScopeId::named("roadmap"), p))));
    let allowed = |c: &ClientKey, plan: &Arc<Plan>, ms: u64| {
        let d = run(store.check(c, plan, at(ms)));
        assert!(d.is_allowed(), "at {ms}: {d:?}");
    };
    let refused = |c: &ClientKey, plan: &Arc<Plan>, ms: u64| -> Decision {
        let d = run(store.check(c, plan, at(ms)));
        assert!(!d.is_allowed(), "at {ms}: {d:?}");
        d
    };

    // Accumulation capped above amount: amount 2, cap 5. One request a window leaves one
    // more unused each window until the carry reaches the cap: then a window allows 2 + 5.
    let acc = plan(Policy::new(2, secs(10)).accumulate_cap(5));
    let c = key(20);
    for w in 0..6 {
        allowed(&c, &acc, w * 20_000);
    }
    for ms in 120_000..120_007 {
        allowed(&c, &acc, ms);
    }
    refused(&c, &acc, 120_007);
    // ... below amount: amount 3, cap 1 (two unused, one carried); and at amount.
    let acc = plan(Policy::new(3, secs(10)).accumulate_cap(1));
    let c = key(21);
    allowed(&c, &acc, 0);
    for ms in 20_000..20_004 {
        allowed(&c, &acc, ms);
    }
    refused(&c, &acc, 20_004);
    let acc = plan(Policy::new(2, secs(10)).accumulate_requests(true));
    let c = key(22);
    for w in 0..5 {
        allowed(&c, &acc, w * 20_000);
    }
    for ms in 100_000..100_004 {
        allowed(&c, &acc, ms);
    }
    refused(&c, &acc, 100_004);

    // Cooldown: 2 s between requests; a refusal is not a block.
    let cool = plan(Policy::new(10, secs(60)).cooldown(secs(2)));
    let c = key(23);
    allowed(&c, &cool, 0);
    assert_eq!(
        refused(&c, &cool, 500),
        Decision::Limited {
            reason: LimitReason::Cooldown,
            limit: 0,
            retry_after: Duration::from_millis(1_500),
            started: false
        }
    );
    allowed(&c, &cool, 2_000);
    allowed(&c, &cool, 4_000);

    // Grace: a new (or rare) client may exceed amount 3 by 1 once; not again within the hour.
    let grace = plan(Policy::new(3, secs(10)).grace(Grace {
        extra: 1,
        interval: secs(3_600),
    }));
    let c = key(24);
    for ms in 0..4 {
        allowed(&c, &grace, ms);
    }
    refused(&c, &grace, 4);
    for ms in 20_000..20_003 {
        allowed(&c, &grace, ms);
    }
    refused(&c, &grace, 20_003);
    let later = 20_003 + 3_600_000;
    for ms in later..later + 4 {
        allowed(&c, &grace, ms);
    }
    refused(&c, &grace, later + 4);

    // Adaptive punishment: 10 s x 3^n, capped at 200 s.
    let adaptive = plan(
        Policy::new(1, secs(1))
            .block_limit(0)
            .punishment(Punishment::Ban(secs(10)))
            .adaptive(Adaptive {
                factor: 3.0,
                max: secs(200),
                jitter: Duration::ZERO,
            }),
    );
    let c = key(25);
    let mut t = 0;
    let mut lengths = Vec::new();
    for _ in 0..5 {
        allowed(&c, &adaptive, t);
        match refused(&c, &adaptive, t + 1) {
            Decision::Banned {
                until: Some(u),
                reason: BanReason::Punished,
                ..
            } => {
                let end = u.as_millis() - T0.as_millis();
                lengths.push((end - (t + 1)) / 1_000);
                t = end + 5_000;
            }
            d => panic!("{d:?}"),
        }
    }
    assert_eq!(lengths, [10, 30, 90, 200, 200]);
}

/// A burst at the start of a sub-window stays counted (and stored) until the whole
/// sub-window has left the window: the state must not expire a window after the burst.
pub(crate) fn bounded_rule_counts_until_its_sub_window_leaves(store: &dyn Store) {
    let plan = global(vec![Rule::new(200, secs(60))]);
    let c = key(10);
    for _ in 0..200 {
        assert!(run(store.check(&c, &plan, at(1_000))).is_allowed());
    }
    assert_eq!(
        limited_wait(run(store.check(&c, &plan, at(61_000)))),
        Duration::from_millis(999)
    );
    assert!(run(store.check(&c, &plan, at(61_999))).is_allowed());
}

/// Random traffic under a rule of a large count beside a small one (see
/// `support/bounded_traffic.rs`): the bounds of each hold.
pub(crate) fn bounded_rules_keep_their_bound(store: &dyn Store) {
    let (plan, c, mut bound) = (
        super::bounded_traffic::plan(),
        key(9),
        super::bounded_traffic::Bound::default(),
    );
    for now in super::bounded_traffic::times(4_000) {
        bound.answer(now, run(store.check(&c, &plan, at(now))));
    }
    bound.assert_exercised();
}

/// Response-based counting: a request given back (`Store::release`) frees its units in the
/// route's scopes (sliding log, bounded window, policy) and nowhere else; a release of a
/// client without state creates none.
pub(crate) fn released_requests_are_given_back(store: &dyn Store) {
    let (route, policy) = (
        ScopeId::named("rules login"),
        ScopeId::named("policy login"),
    );
    let rules = || vec![Rule::new(2, secs(60)), Rule::new(200, secs(3600))];
    let own = Arc::new(Plan::new(
        [(route, rules())],
        Some((policy, Policy::new(3, secs(60)))),
    ));
    let all = Arc::new(Plan::new(
        [
            (ScopeId::GLOBAL, vec![Rule::new(4, secs(60))]),
            (route, rules()),
        ],
        Some((policy, Policy::new(3, secs(60)))),
    ));
    let c = key(11);
    run(store.release(&c, &own, at(0), at(0)));
    assert!(run(store.state(&c, at(0))).is_none(), "nothing created");

    assert!(run(store.check(&c, &all, at(1_000))).is_allowed());
    assert!(run(store.check(&c, &all, at(2_000))).is_allowed());
    assert!(!run(store.check(&c, &all, at(3_000))).is_allowed(), "2/60s");
    run(store.release(&c, &own, at(2_000), at(3_000)));
    assert!(
        run(store.check(&c, &all, at(4_000))).is_allowed(),
        "given back"
    );
    assert!(!run(store.check(&c, &all, at(5_000))).is_allowed());
    run(store.release(&c, &own, at(4_000), at(5_000)));
    run(store.release(&c, &own, at(1_000), at(5_000)));
    // The route's scopes are empty; the global rule still counts 1, 2 and 4 s.
    assert!(run(store.check(&c, &all, at(6_000))).is_allowed());
    match run(store.check(&c, &all, at(7_000))) {
        Decision::Limited { limit: 0, .. } => {}
        other => panic!("expected the global rule (limit 0) to refuse: {other:?}"),
    }
    // A release of a time at which nothing is counted (no log entry, a sub-window past the
    // window's ring) changes nothing.
    let before = run(store.state(&c, at(7_000)));
    run(store.release(&c, &own, at(200_000), at(7_000)));
    assert_eq!(run(store.state(&c, at(7_000))), before);
}

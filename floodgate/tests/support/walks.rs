//! Store scenarios written as async walks over `&dyn Store` (time is explicit; nothing
//! sleeps), each mirroring a unit test of the state module; `conformance.rs` runs them on
//! every store beside `scenarios.rs`, and `redis_store.rs` uses their helpers. Included by
//! `#[path]`.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use floodgate::{
    Adaptive, BanReason, BanRule, ClientKey, Decision, Grace, LimitReason, Plan, Policy,
    Punishment, ReportOutcome, Rule, ScopeId, Store, Timestamp,
};

// ---------------------------------------------------------------------------------------
// Behavioural scenarios, generic over the store. Each mirrors a unit test of the state module.

pub(crate) const T0: u64 = 1_700_000_000_000;

pub(crate) fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub(crate) fn client(n: u8) -> ClientKey {
    ClientKey::from_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, n)), 64)
}

pub(crate) fn rules(list: &[(u32, u64)]) -> Vec<Rule> {
    list.iter().map(|&(c, s)| Rule::new(c, secs(s))).collect()
}

pub(crate) fn global(list: &[(u32, u64)]) -> Arc<Plan> {
    Arc::new(Plan::new([(ScopeId::GLOBAL, rules(list))], None))
}

pub(crate) fn policy_plan(p: Policy) -> Arc<Plan> {
    Arc::new(Plan::new([], Some((ScopeId::named("policy p"), p))))
}

pub(crate) async fn check(s: &dyn Store, c: &ClientKey, plan: &Arc<Plan>, ms: u64) -> Decision {
    s.check(c, plan, at(ms)).await.expect("store answers")
}

pub(crate) fn retry(d: Decision) -> Option<Duration> {
    match d {
        Decision::Limited { retry_after, .. } => Some(retry_after),
        _ => None,
    }
}

/// (status, retry or ban length in ms from T0)
pub(crate) fn code(d: Decision) -> (u16, Option<u64>) {
    match d {
        Decision::Allowed { .. } => (200, None),
        Decision::Limited { retry_after, .. } => (429, Some(retry_after.as_millis() as u64)),
        Decision::Banned { until, .. } => (403, until.map(|t| t.as_millis() - T0)),
    }
}

pub(crate) async fn sliding_log_is_exact_at_the_window_edge(s: &dyn Store) {
    let (plan, c) = (global(&[(3, 10)]), client(1));
    for ms in [0, 1_000, 2_000] {
        assert!(check(s, &c, &plan, ms).await.is_allowed());
    }
    assert_eq!(
        retry(check(s, &c, &plan, 9_999).await),
        Some(Duration::from_millis(1))
    );
    assert!(check(s, &c, &plan, 10_000).await.is_allowed());
    assert_eq!(
        retry(check(s, &c, &plan, 10_500).await),
        Some(Duration::from_millis(500))
    );
    assert!(check(s, &c, &plan, 11_000).await.is_allowed());
}

pub(crate) async fn several_rules_and_scopes_refuse_atomically(s: &dyn Store) {
    let route = ScopeId::named("rules r");
    let plan = Arc::new(Plan::new(
        [
            (ScopeId::GLOBAL, rules(&[(5, 60)])),
            (route, rules(&[(1, 2)])),
        ],
        None,
    ));
    let (global_only, route_only) = (
        global(&[(5, 60)]),
        Arc::new(Plan::new([(route, rules(&[(1, 2)]))], None)),
    );
    let c = client(2);
    assert!(check(s, &c, &plan, 0).await.is_allowed());
    for ms in [100, 200, 300, 400] {
        let d = check(s, &c, &plan, ms).await;
        assert!(
            matches!(
                d,
                Decision::Limited {
                    limit: 1,
                    reason: LimitReason::Rule,
                    ..
                }
            ),
            "{d:?}"
        );
    }
    // The refusals consumed nothing of the global rule: 4 more fit.
    for ms in [500, 600, 700, 800] {
        assert!(check(s, &c, &global_only, ms).await.is_allowed(), "{ms}");
    }
    let d = check(s, &c, &plan, 3_000).await;
    assert!(matches!(d, Decision::Limited { limit: 0, .. }), "{d:?}");
    // ... and the route's log was not touched by that refusal either.
    assert!(check(s, &c, &route_only, 3_001).await.is_allowed());
    // The longest wait among refusing rules, and the most constrained quota.
    let plan = global(&[(1, 1), (2, 60)]);
    let c = client(3);
    assert!(check(s, &c, &plan, 0).await.is_allowed());
    assert!(check(s, &c, &plan, 1_000).await.is_allowed());
    let d = check(s, &c, &plan, 1_100).await;
    assert_eq!(retry(d), Some(Duration::from_millis(58_900)));
    let plan = global(&[(20, 1), (3, 10)]);
    let c = client(4);
    let Decision::Allowed { quota: Some(q) } = check(s, &c, &plan, 0).await else {
        panic!("allowed")
    };
    assert_eq!((q.limit, q.remaining, q.reset), (1, 2, secs(10)));
    let Decision::Allowed { quota: Some(q) } = check(s, &c, &plan, 4_000).await else {
        panic!("allowed")
    };
    assert_eq!((q.limit, q.remaining, q.reset), (1, 1, secs(6)));
    // Zero counts refuse, zero windows never do.
    let none = Arc::new(Plan::new(
        [(ScopeId::GLOBAL, vec![Rule::new(0, secs(5))])],
        None,
    ));
    assert_eq!(retry(check(s, &client(5), &none, 0).await), Some(secs(5)));
    let free = Arc::new(Plan::new(
        [(ScopeId::GLOBAL, vec![Rule::new(1, Duration::ZERO)])],
        None,
    ));
    for ms in 0..5 {
        assert!(check(s, &client(5), &free, ms).await.is_allowed());
    }
}

pub(crate) async fn reports_ban_from_the_last_offence_and_are_spent(s: &dyn Store) {
    let rule = BanRule::new(3, secs(10), secs(600));
    let plan = global(&[(100, 1)]);
    let c = client(6);
    assert_eq!(
        s.report(&c, &rule, at(0)).await.unwrap(),
        ReportOutcome::Recorded { offences: 1 }
    );
    assert_eq!(
        s.report(&c, &rule, at(4_000)).await.unwrap(),
        ReportOutcome::Recorded { offences: 2 }
    );
    assert_eq!(
        s.report(&c, &rule, at(9_000)).await.unwrap(),
        ReportOutcome::Banned { until: at(609_000) }
    );
    let d = check(s, &c, &plan, 608_999).await;
    assert_eq!(
        d,
        Decision::Banned {
            until: Some(at(609_000)),
            reason: BanReason::Reported,
            started: false
        }
    );
    assert!(check(s, &c, &plan, 609_000).await.is_allowed());
    // Spent: one more offence does not ban again.
    assert_eq!(
        s.report(&c, &rule, at(609_500)).await.unwrap(),
        ReportOutcome::Recorded { offences: 1 }
    );
    assert!(check(s, &c, &plan, 610_000).await.is_allowed());
    // Offences spread wider than the window never ban: each one 5.001 s after the last, so
    // the window holds it and the one before, never three.
    let c = client(7);
    let mut counts = Vec::new();
    for i in 0..10 {
        match s.report(&c, &rule, at(i * 5_001)).await.unwrap() {
            ReportOutcome::Recorded { offences } => counts.push(offences),
            out => panic!("offence {i}: {out:?}"),
        }
    }
    assert_eq!(counts, [1, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
    assert!(check(s, &c, &plan, 60_000).await.is_allowed());
}

pub(crate) async fn operator_ban_blacklist_and_unban(s: &dyn Store) {
    let plan = global(&[(1, 1)]);
    let c = client(8);
    s.ban(&c, None, at(0)).await.unwrap();
    assert!(matches!(
        check(s, &c, &plan, 10_000_000).await,
        Decision::Banned {
            until: None,
            reason: BanReason::Operator,
            ..
        }
    ));
    assert_eq!(
        s.state(&c, at(10_000_000))
            .await
            .unwrap()
            .unwrap()
            .expires_at(),
        Timestamp::NEVER
    );
    assert!(s.unban(&c, at(10_000_001)).await.unwrap());
    assert!(!s.unban(&c, at(10_000_002)).await.unwrap());
    assert!(check(s, &c, &plan, 10_000_003).await.is_allowed());
    // A timed ban replaces the blacklist, and ends by itself.
    s.ban(&c, None, at(10_000_004)).await.unwrap();
    s.ban(&c, Some(at(10_005_000)), at(10_000_005))
        .await
        .unwrap();
    assert_eq!(
        code(check(s, &c, &plan, 10_004_999).await),
        (403, Some(10_005_000))
    );
    assert!(check(s, &c, &plan, 10_005_000).await.is_allowed());
    // Unban of a client never seen: false, and no state created.
    assert!(!s.unban(&client(9), at(0)).await.unwrap());
    assert!(s.state(&client(9), at(0)).await.unwrap().is_none());
    // A ban-only plan checks the ban and creates nothing.
    let c = client(10);
    assert!(check(s, &c, &Arc::new(Plan::ban_only()), 0)
        .await
        .is_allowed());
    assert!(s.state(&c, at(0)).await.unwrap().is_none());
}

pub(crate) async fn policy_blocks_and_punishes(s: &dyn Store) {
    let plan = policy_plan(Policy::new(3, secs(60)).block_duration(secs(30)));
    let c = client(11);
    for ms in [0, 10, 20] {
        assert_eq!(code(check(s, &c, &plan, ms).await), (200, None));
    }
    assert_eq!(code(check(s, &c, &plan, 1_000).await), (429, Some(30_000)));
    assert_eq!(code(check(s, &c, &plan, 11_000).await), (429, Some(20_000)));
    assert_eq!(code(check(s, &c, &plan, 31_000).await), (429, Some(30_000)));
    assert_eq!(code(check(s, &c, &plan, 61_000).await), (200, None));

    let plan = policy_plan(Policy::new(1, secs(10)).relative_block(true));
    let c = client(12);
    assert_eq!(code(check(s, &c, &plan, 0).await), (200, None));
    for ms in [1_000, 8_000, 17_999] {
        assert_eq!(code(check(s, &c, &plan, ms).await), (429, Some(10_000)));
    }
    assert_eq!(code(check(s, &c, &plan, 37_999).await), (200, None));

    let ban = policy_plan(
        Policy::new(1, secs(10))
            .block_limit(1)
            .punishment(Punishment::Ban(secs(100))),
    );
    let c = client(13);
    assert_eq!(code(check(s, &c, &ban, 0).await), (200, None));
    assert_eq!(code(check(s, &c, &ban, 1).await), (429, Some(10_000)));
    assert_eq!(code(check(s, &c, &ban, 10_001).await), (200, None));
    assert_eq!(
        check(s, &c, &ban, 10_002).await,
        Decision::Banned {
            until: Some(at(110_002)),
            reason: BanReason::Punished,
            started: true
        }
    );
    assert_eq!(
        code(check(s, &c, &ban, 110_001).await),
        (403, Some(110_002))
    );
    assert_eq!(code(check(s, &c, &ban, 110_002).await), (200, None));

    let black = policy_plan(
        Policy::new(1, secs(10))
            .block_limit(0)
            .punishment(Punishment::Blacklist),
    );
    let c = client(14);
    assert_eq!(code(check(s, &c, &black, 0).await), (200, None));
    assert_eq!(code(check(s, &c, &black, 1).await), (403, None));
    assert_eq!(code(check(s, &c, &black, 999_999_999).await), (403, None));
    assert!(s.unban(&c, at(1_000_000_000)).await.unwrap());
    assert_eq!(code(check(s, &c, &black, 1_000_000_001).await), (200, None));

    for (n, reset) in [(15, true), (16, false)] {
        let plan = policy_plan(
            Policy::new(1, secs(10))
                .block_limit(1)
                .punishment(Punishment::Ban(secs(100)))
                .block_exceed_reset(reset),
        );
        let c = client(n);
        check(s, &c, &plan, 0).await;
        check(s, &c, &plan, 1).await;
        check(s, &c, &plan, 10_001).await;
        assert_eq!(code(check(s, &c, &plan, 10_002).await).0, 403);
        assert_eq!(code(check(s, &c, &plan, 200_000).await), (200, None));
        let d = code(check(s, &c, &plan, 200_001).await);
        if reset {
            assert_eq!(d, (429, Some(10_000)));
        } else {
            assert_eq!(d, (403, Some(300_001)));
        }
    }
}

pub(crate) async fn policy_accumulation_cooldown_grace_and_adaptive(s: &dyn Store) {
    let plan = policy_plan(Policy::new(2, secs(10)).accumulate_requests(true));
    let c = client(20);
    assert_eq!(code(check(s, &c, &plan, 0).await), (200, None));
    for ms in [20_000, 20_001, 20_002] {
        assert_eq!(code(check(s, &c, &plan, ms).await), (200, None), "{ms}");
    }
    assert_eq!(code(check(s, &c, &plan, 20_003).await).0, 429);
    let c = client(21);
    check(s, &c, &plan, 0).await;
    for w in 1..10u64 {
        check(s, &c, &plan, w * 100_000).await;
    }
    let mut allowed = 0;
    for ms in 0..10 {
        allowed += usize::from(check(s, &c, &plan, 2_000_000 + ms).await.is_allowed());
    }
    assert_eq!(allowed, 4, "the carry is capped at amount");

    // A cap above amount: amount 2, cap 5. One request a window leaves one more unused
    // each window, until the carry reaches the cap: then a window allows 2 + 5.
    let plan = policy_plan(Policy::new(2, secs(10)).accumulate_cap(5));
    let c = client(25);
    for w in 0..6u64 {
        assert_eq!(
            code(check(s, &c, &plan, w * 20_000).await),
            (200, None),
            "{w}"
        );
    }
    for ms in 120_000..120_007 {
        assert_eq!(code(check(s, &c, &plan, ms).await), (200, None), "{ms}");
    }
    assert_eq!(code(check(s, &c, &plan, 120_007).await).0, 429);
    // A cap below amount: amount 3, cap 1: two unused, one carried.
    let plan = policy_plan(Policy::new(3, secs(10)).accumulate_cap(1));
    let c = client(26);
    assert_eq!(code(check(s, &c, &plan, 0).await), (200, None));
    for ms in 20_000..20_004 {
        assert_eq!(code(check(s, &c, &plan, ms).await), (200, None), "{ms}");
    }
    assert_eq!(code(check(s, &c, &plan, 20_004).await).0, 429);

    let plan = policy_plan(Policy::new(10, secs(60)).cooldown(secs(2)));
    let c = client(22);
    assert_eq!(code(check(s, &c, &plan, 0).await), (200, None));
    let d = check(s, &c, &plan, 500).await;
    assert!(matches!(
        d,
        Decision::Limited {
            reason: LimitReason::Cooldown,
            ..
        }
    ));
    assert_eq!(code(d), (429, Some(1_500)));
    assert_eq!(code(check(s, &c, &plan, 2_000).await), (200, None));

    let plan = policy_plan(Policy::new(3, secs(10)).grace(Grace {
        extra: 2,
        interval: secs(3_600),
    }));
    let c = client(23);
    for ms in 0..5 {
        assert_eq!(code(check(s, &c, &plan, ms).await), (200, None), "{ms}");
    }
    assert_eq!(code(check(s, &c, &plan, 5).await).0, 429);
    for ms in 0..3 {
        assert_eq!(code(check(s, &c, &plan, 20_000 + ms).await), (200, None));
    }
    assert_eq!(code(check(s, &c, &plan, 20_003).await).0, 429);
    let later = 20_003 + 3_600_000;
    for ms in 0..5 {
        assert_eq!(
            code(check(s, &c, &plan, later + ms).await),
            (200, None),
            "{ms}"
        );
    }

    let plan = policy_plan(
        Policy::new(1, secs(1))
            .block_limit(0)
            .block_exceed_reset(true)
            .punishment(Punishment::Ban(secs(10)))
            .adaptive(Adaptive {
                factor: 3.0,
                max: secs(200),
                jitter: Duration::ZERO,
            }),
    );
    let c = client(24);
    let mut t = 0;
    let mut lengths = Vec::new();
    for _ in 0..5 {
        assert!(check(s, &c, &plan, t).await.is_allowed());
        match check(s, &c, &plan, t + 1).await {
            Decision::Banned { until: Some(u), .. } => {
                lengths.push((u.as_millis() - T0 - (t + 1)) / 1000);
                t = u.as_millis() - T0 + 5_000;
            }
            d => panic!("{d:?}"),
        }
    }
    assert_eq!(lengths, [10, 30, 90, 200, 200]);
}

pub(crate) async fn state_and_expiry(s: &dyn Store) {
    let plan = Arc::new(Plan::new(
        [(ScopeId::GLOBAL, rules(&[(5, 1), (50, 60)]))],
        None,
    ));
    let c = client(30);
    check(s, &c, &plan, 0).await;
    let st = s.state(&c, at(1)).await.unwrap().expect("state");
    assert_eq!(st.expires_at(), at(60_000));
    assert_eq!(st.last_seen(), at(0));
    assert!(st.ban_at(at(1)).is_none());
    assert!(s.state(&c, at(59_999)).await.unwrap().is_some());
    assert!(s.state(&c, at(60_000)).await.unwrap().is_none());
    // Policy records idle longer than max_window_duration are forgotten; "forever" keeps them.
    let plan = policy_plan(Policy::new(1, secs(10)).max_window_duration(Some(secs(100))));
    let c = client(31);
    check(s, &c, &plan, 0).await;
    check(s, &c, &plan, 1).await;
    assert_eq!(
        s.state(&c, at(2)).await.unwrap().unwrap().expires_at(),
        at(100_001)
    );
    assert!(s.state(&c, at(100_001)).await.unwrap().is_none());
    let forever = policy_plan(Policy::new(1, secs(10)).max_window_duration(None));
    let c = client(32);
    check(s, &c, &forever, 0).await;
    assert_eq!(
        s.state(&c, at(0)).await.unwrap().unwrap().expires_at(),
        Timestamp::NEVER
    );
    // A reported ban shows in the state until it ends.
    let c = client(33);
    let rule = BanRule::new(1, secs(10), secs(30));
    s.report(&c, &rule, at(0)).await.unwrap();
    let st = s.state(&c, at(1)).await.unwrap().unwrap();
    assert_eq!(
        st.ban_at(at(1)),
        Some((Some(at(30_000)), BanReason::Reported))
    );
    assert!(s.state(&c, at(30_000)).await.unwrap().is_none());
}

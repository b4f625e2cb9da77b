//! Unit tests of `state/client_state.rs`.

use super::*;
use crate::policy::{Adaptive, Grace, Policy};
use crate::rules::Rule;

const T0: u64 = 1_700_000_000_000;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn rules(list: &[(u32, u64)]) -> Vec<Rule> {
    list.iter().map(|&(c, s)| Rule::new(c, secs(s))).collect()
}

fn global(list: &[(u32, u64)]) -> Plan {
    Plan::new([(ScopeId::GLOBAL, rules(list))], None)
}

fn retry(d: Decision) -> Option<Duration> {
    match d {
        Decision::Limited { retry_after, .. } => Some(retry_after),
        _ => None,
    }
}

#[test]
fn clients_never_reported_or_banned_carry_no_rare_parts() {
    let plan = global(&[(3, 10)]);
    let mut s = ClientState::new();
    s.check(&plan, at(0));
    assert!(s.rare.is_none());
    s.ban(Some(at(1_000)), at(0));
    assert!(s.rare.is_some());
    s.prune(at(1_000));
    assert!(s.rare.is_none(), "an expired ban frees its box");
    s.report(&BanRule::new(2, secs(10), secs(60)), at(2_000));
    assert!(!s.unban(at(2_001)) && s.rare.is_none());
}

#[test]
fn a_request_of_cost_n_uses_n_units_of_every_rule_and_policy() {
    // 100 per minute admits twenty requests of cost 5, then refuses until the first
    // leaves the window.
    let plan = global(&[(100, 60)]).with_units(5);
    let mut s = ClientState::new();
    for n in 0..20 {
        let d = s.check(&plan, at(T0 + n));
        assert!(d.is_allowed(), "request {n}: {d:?}");
    }
    assert_eq!(
        retry(s.check(&plan, at(T0 + 20))),
        Some(Duration::from_millis(59_980))
    );
    assert!(s.check(&plan, at(T0 + 60_000)).is_allowed());
    // What is left is reported in units; a cheaper request fits where a dearer one does not.
    let mut s = ClientState::new();
    let plan3 = global(&[(10, 60)]).with_units(3);
    for _ in 0..3 {
        assert!(s.check(&plan3, at(T0)).is_allowed());
    }
    assert!(!s.check(&plan3, at(T0)).is_allowed(), "9 + 3 > 10");
    let one = global(&[(10, 60)]);
    match s.check(&one, at(T0)) {
        Decision::Allowed { quota: Some(q) } => assert_eq!(q.remaining, 0),
        d => panic!("{d:?}"),
    }
    // More units than a count never pass, on an empty log too.
    let mut s = ClientState::new();
    assert!(!s
        .check(&global(&[(4, 60)]).with_units(5), at(T0))
        .is_allowed());
    // A policy of 10 per window: two requests of cost 4, then the third blocks.
    let p = policy_plan(Policy::new(10, secs(60))).with_units(4);
    let mut s = ClientState::new();
    assert!(s.check(&p, at(T0)).is_allowed());
    assert!(s.check(&p, at(T0 + 1)).is_allowed());
    assert!(matches!(
        s.check(&p, at(T0 + 2)),
        Decision::Limited { started: true, .. }
    ));
}

#[test]
fn sliding_log_refuses_the_count_plus_first_request_in_any_window() {
    let plan = global(&[(3, 10)]);
    let mut s = ClientState::new();
    for ms in [0, 1_000, 2_000] {
        assert!(s.check(&plan, at(ms)).is_allowed());
    }
    // The 4th within 10 s is refused until the first leaves the window.
    assert_eq!(
        retry(s.check(&plan, at(9_999))),
        Some(Duration::from_millis(1))
    );
    // At exactly 10 s the first request is out of (now - 10 s, now].
    assert!(s.check(&plan, at(10_000)).is_allowed());
    assert_eq!(
        retry(s.check(&plan, at(10_500))),
        Some(Duration::from_millis(500))
    );
    assert!(s.check(&plan, at(11_000)).is_allowed());
}

#[test]
fn refused_requests_consume_nothing_in_any_rule_or_scope() {
    let route = ScopeId::named("rules r");
    let plan = Plan::new(
        [
            (ScopeId::GLOBAL, rules(&[(5, 60)])),
            (route, rules(&[(1, 2)])),
        ],
        None,
    );
    let global_only = global(&[(5, 60)]);
    let mut s = ClientState::new();
    assert!(s.check(&plan, at(0)).is_allowed());
    // Refused by the route's 1/2s rule: the global 5/60s rule must not count them.
    for ms in [100, 200, 300, 400] {
        let d = s.check(&plan, at(ms));
        assert!(matches!(d, Decision::Limited { limit: 1, .. }), "{d:?}");
    }
    for ms in [500, 600, 700, 800] {
        assert!(s.check(&global_only, at(ms)).is_allowed(), "{ms}");
    }
    // Now the global rule is full: refused, and the route's log is untouched.
    let d = s.check(&plan, at(3_000));
    assert!(matches!(d, Decision::Limited { limit: 0, .. }), "{d:?}");
    assert_eq!(s.log(route).unwrap().times.len(), 1);
}

#[test]
fn the_longest_wait_among_refusing_rules_is_reported() {
    let plan = global(&[(1, 1), (2, 60)]);
    let mut s = ClientState::new();
    assert!(s.check(&plan, at(0)).is_allowed());
    assert!(s.check(&plan, at(1_000)).is_allowed());
    let d = s.check(&plan, at(1_100));
    assert_eq!(retry(d), Some(Duration::from_millis(58_900)));
    assert!(matches!(d, Decision::Limited { limit: 1, .. }));
}

#[test]
fn allowed_decisions_report_the_most_constrained_quota() {
    let plan = global(&[(20, 1), (3, 10)]);
    let mut s = ClientState::new();
    let Decision::Allowed { quota: Some(q) } = s.check(&plan, at(0)) else {
        panic!("allowed")
    };
    assert_eq!((q.limit, q.remaining, q.reset), (1, 2, secs(10)));
    let Decision::Allowed { quota: Some(q) } = s.check(&plan, at(4_000)) else {
        panic!("allowed")
    };
    assert_eq!((q.limit, q.remaining, q.reset), (1, 1, secs(6)));
}

#[test]
fn zero_count_refuses_and_zero_window_never_refuses() {
    let mut s = ClientState::new();
    let none = Plan::new([(ScopeId::GLOBAL, vec![Rule::new(0, secs(5))])], None);
    assert_eq!(retry(s.check(&none, at(0))), Some(secs(5)));
    let free = Plan::new(
        [(ScopeId::GLOBAL, vec![Rule::new(1, Duration::ZERO)])],
        None,
    );
    for ms in 0..5 {
        assert!(s.check(&free, at(ms)).is_allowed());
    }
}

#[test]
fn ban_only_plans_check_bans_and_count_nothing() {
    let mut s = ClientState::new();
    let plan = Plan::ban_only();
    assert!(!plan.counts());
    assert!(s.check(&plan, at(0)).is_allowed());
    assert!(s.scopes.is_empty());
    s.ban(Some(at(5_000)), at(0));
    assert!(matches!(
        s.check(&plan, at(4_999)),
        Decision::Banned {
            reason: BanReason::Operator,
            ..
        }
    ));
    assert!(s.check(&plan, at(5_000)).is_allowed());
}

#[test]
fn reports_ban_from_the_last_offence_and_are_then_spent() {
    let rule = BanRule::new(3, secs(10), secs(600));
    let plan = global(&[(100, 1)]);
    let mut s = ClientState::new();
    assert_eq!(
        s.report(&rule, at(0)),
        ReportOutcome::Recorded { offences: 1 }
    );
    assert_eq!(
        s.report(&rule, at(4_000)),
        ReportOutcome::Recorded { offences: 2 }
    );
    assert_eq!(
        s.report(&rule, at(9_000)),
        ReportOutcome::Banned { until: at(609_000) }
    );
    assert!(matches!(
        s.check(&plan, at(608_999)),
        Decision::Banned { until: Some(t), reason: BanReason::Reported, .. } if t == at(609_000)
    ));
    assert!(s.check(&plan, at(609_000)).is_allowed());
    // The offences were spent: one more does not ban again.
    assert_eq!(
        s.report(&rule, at(609_500)),
        ReportOutcome::Recorded { offences: 1 }
    );
    assert!(s.check(&plan, at(610_000)).is_allowed());
}

#[test]
fn offences_spread_wider_than_the_window_never_ban() {
    let rule = BanRule::new(3, secs(10), secs(600));
    let mut s = ClientState::new();
    for i in 0..10 {
        let out = s.report(&rule, at(i * 5_001));
        assert!(
            matches!(out, ReportOutcome::Recorded { offences } if offences <= 2),
            "{out:?}"
        );
    }
    assert!(s.ban_at(at(60_000)).is_none());
}

#[test]
fn operator_ban_blacklist_and_unban() {
    let plan = global(&[(1, 1)]);
    let mut s = ClientState::new();
    s.ban(None, at(0));
    assert!(matches!(
        s.check(&plan, at(10_000_000)),
        Decision::Banned { until: None, .. }
    ));
    assert_eq!(s.expires_at(), Timestamp::NEVER);
    assert!(s.unban(at(10_000_001)));
    assert!(!s.unban(at(10_000_002)));
    assert!(s.check(&plan, at(10_000_003)).is_allowed());
}

#[test]
fn expiry_and_prune_follow_the_longest_window() {
    let plan = Plan::new([(ScopeId::GLOBAL, rules(&[(5, 1), (50, 60)]))], None);
    let mut s = ClientState::new();
    s.check(&plan, at(0));
    assert_eq!(s.expires_at(), at(60_000));
    s.prune(at(59_999));
    assert_eq!(s.scopes.len(), 1);
    s.prune(at(60_000));
    assert!(s.scopes.is_empty());
}

fn policy_plan(p: Policy) -> Plan {
    Plan::new([], Some((ScopeId::named("policy p"), p)))
}

fn code(d: Decision) -> (u16, Option<u64>) {
    match d {
        Decision::Allowed { .. } => (200, None),
        Decision::Limited { retry_after, .. } => (429, Some(retry_after.as_millis() as u64)),
        Decision::Banned { until, .. } => (403, until.map(|t| t.as_millis() - T0)),
    }
}

mod extremes;
mod policy;

//! Unit tests of `state/release.rs`: a released request is as if it had never been counted,
//! and a release never gives back more than was counted.

use std::time::Duration;

use super::super::{ClientState, Decision, Plan, ScopeId};
use crate::clock::Timestamp;
use crate::policy::Policy;
use crate::rules::Rule;

const T0: u64 = 1_700_000_000_000;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

fn route(list: &[(u32, u64)]) -> Plan {
    let rules = list
        .iter()
        .map(|&(c, s)| Rule::new(c, Duration::from_secs(s)))
        .collect();
    Plan::new([(ScopeId::named("rules login"), rules)], None)
}

fn policy(p: Policy) -> Plan {
    Plan::new([], Some((ScopeId::named("policy login"), p)))
}

fn allowed(d: Decision) -> bool {
    d.is_allowed()
}

#[test]
fn a_released_request_frees_its_unit_of_a_sliding_log() {
    let plan = route(&[(2, 10)]);
    let mut s = ClientState::new();
    assert!(allowed(s.check(&plan, at(0))));
    assert!(allowed(s.check(&plan, at(5))));
    assert!(
        !allowed(s.check(&plan, at(6))),
        "two in flight hold the quota"
    );
    s.release(&plan, at(5));
    assert!(allowed(s.check(&plan, at(7))), "the released unit is free");
    assert!(!allowed(s.check(&plan, at(8))));
}

#[test]
fn releasing_a_request_that_was_not_counted_changes_nothing() {
    let plan = route(&[(2, 10)]);
    let mut s = ClientState::new();
    assert!(allowed(s.check(&plan, at(0))));
    assert!(allowed(s.check(&plan, at(1))));
    let before = s.clone();
    s.release(&plan, at(3));
    assert_eq!(s, before, "no request was counted at 3");
    // Released twice: the second release finds nothing more to take.
    s.release(&plan, at(1));
    let once = s.clone();
    s.release(&plan, at(1));
    assert_eq!(s, once);
    assert!(allowed(s.check(&plan, at(2))));
    assert!(!allowed(s.check(&plan, at(3))));
}

#[test]
fn a_release_touches_only_the_scopes_of_its_plan() {
    let global = Plan::new(
        [(ScopeId::GLOBAL, vec![Rule::new(2, Duration::from_secs(10))])],
        None,
    );
    let own = route(&[(5, 10)]);
    let both = {
        let logs = global.logs.iter().chain(own.logs.iter());
        Plan::new(
            logs.map(|l| (l.scope, l.rules.clone())).collect::<Vec<_>>(),
            None,
        )
    };
    let mut s = ClientState::new();
    assert!(allowed(s.check(&both, at(0))));
    assert!(allowed(s.check(&both, at(1))));
    // Only the route's scope gives the request back: the global rule still counts it.
    s.release(&own, at(1));
    assert!(!allowed(s.check(&both, at(2))), "the global rule is full");
}

#[test]
fn a_bounded_window_gives_back_the_units_of_a_released_request() {
    // 200 per hour counts in a bounded window; a request of cost 200 fills it.
    let plan = route(&[(200, 3_600)]).with_units(200);
    let mut s = ClientState::new();
    assert!(allowed(s.check(&plan, at(0))));
    assert!(!allowed(s.check(&plan, at(10))));
    s.release(&plan, at(0));
    assert!(allowed(s.check(&plan, at(20))), "the window is empty again");
    assert!(!allowed(s.check(&plan, at(30))));
    // A release once the request's sub-window has left the ring takes nothing.
    let later = at(20 + 3_700_000);
    assert!(allowed(s.check(&plan, later)));
    let before = s.clone();
    s.release(&plan, at(20));
    assert_eq!(s, before);
}

#[test]
fn a_released_request_gives_back_its_units_of_a_policy_window() {
    let plan = policy(Policy::new(2, Duration::from_secs(60)));
    let mut s = ClientState::new();
    assert!(allowed(s.check(&plan, at(0))));
    assert!(allowed(s.check(&plan, at(1_000))));
    s.release(&plan, at(1_000));
    assert!(
        allowed(s.check(&plan, at(2_000))),
        "the second unit is free"
    );
    assert!(
        !allowed(s.check(&plan, at(3_000))),
        "then the window is full"
    );
}

#[test]
fn a_policy_window_opened_by_a_released_request_closes_again() {
    let plan = policy(Policy::new(1, Duration::from_secs(60)));
    let mut s = ClientState::new();
    assert!(allowed(s.check(&plan, at(0))));
    s.release(&plan, at(0));
    // The next counted request opens the window: its quota lasts 60 s from there.
    assert!(allowed(s.check(&plan, at(50_000))));
    assert!(
        !allowed(s.check(&plan, at(70_000))),
        "the window opened at 50 s runs until 110 s"
    );
}

#[test]
fn a_release_after_its_policy_window_closed_takes_nothing_from_the_next() {
    let plan = policy(Policy::new(1, Duration::from_secs(10)));
    let mut s = ClientState::new();
    assert!(allowed(s.check(&plan, at(0))));
    assert!(allowed(s.check(&plan, at(10_000))), "a new window");
    s.release(&plan, at(0));
    assert!(
        !allowed(s.check(&plan, at(10_001))),
        "the request of the closed window gives nothing back to the open one"
    );
}

#[test]
fn a_release_never_lifts_a_block() {
    let plan =
        policy(Policy::new(1, Duration::from_secs(60)).block_duration(Duration::from_secs(30)));
    let mut s = ClientState::new();
    assert!(allowed(s.check(&plan, at(0))));
    assert!(!allowed(s.check(&plan, at(1))), "blocked");
    s.release(&plan, at(0));
    assert!(!allowed(s.check(&plan, at(2))), "still blocked");
}

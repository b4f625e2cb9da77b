//! The pipeline without actix: facts in, verdicts out, on the memory store and the fake clock.
//! Each test pins one step of the documented order of checks.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::builder::Floodgate;
use crate::clock::FakeClock;
use crate::route_spec::RouteSpec;
use crate::rules::{BanRule, Rule};
use crate::state::{BanReason, LimitReason};
use crate::store::Store;
use crate::targeting::keys::Found;
use crate::targeting::{DenyReason, MissingKey, ProbeBan};

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

struct Harness {
    shared: Arc<Gate>,
    plans: WorkerPlans,
    clock: FakeClock,
}

fn gate(fg: Floodgate) -> Harness {
    let clock = FakeClock::starting_at(T0);
    let fg = fg.clock(clock.clone());
    let shared = fg.shared.clone();
    let plans = WorkerPlans::new(&shared, &[]);
    Harness {
        shared,
        plans,
        clock,
    }
}

fn one_per_minute() -> Floodgate {
    Floodgate::new().rate_limit_rules([Rule::new(1, Duration::from_secs(60))])
}

fn ip(n: u8) -> ClientKey {
    ClientKey::from_ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)), 64)
}

fn facts(ip_key: ClientKey, found: Findings, route: Option<RouteChoice>) -> Facts {
    Facts {
        ip_key,
        excluded: false,
        found,
        route,
    }
}

fn route(bypass: bool, rules: Vec<Rule>, key: Option<Found>) -> RouteChoice {
    RouteChoice {
        spec: Arc::new(RouteSpec {
            name: Cow::Borrowed("pipeline::tests::route"),
            bypass,
            rules: Cow::Owned(rules),
            standalone: true,
            policy: None,
            key: None,
            shadow: false,
            cost: None,
            count: None,
        }),
        exempt: false,
        key,
        units: 1,
    }
}

fn denied_by_list() -> Findings {
    Findings {
        deny: Some(DenyReason::List {
            name: Arc::from("bad"),
        }),
        ..Findings::default()
    }
}

/// What the request got, in a form tests compare.
#[derive(Debug, PartialEq)]
enum Got {
    /// Served without asking the store.
    Served,
    /// Served after the store's decision, with the quota left (RateLimit fields on).
    Allowed(Option<u32>),
    Limited(usize, Option<Duration>),
    Banned(BanReason, Option<Duration>),
    Denied,
    MissingKey(u16),
    Unavailable(u16),
}

impl Harness {
    fn got(&self, begin: Begin) -> Got {
        let verdict = match begin {
            Begin::Serve => return Got::Served,
            Begin::Refuse(r) => Verdict::Refuse(r),
            Begin::Ask(mut ask) => ask
                .ready_verdict(&self.shared)
                .expect("the memory store answers at once"),
        };
        match verdict {
            Verdict::Serve(fields) => {
                Got::Allowed(fields.and_then(|f| f.quota).map(|q| q.remaining))
            }
            Verdict::Refuse(r) => match r.why {
                Why::Limited { limit, .. } => {
                    assert_eq!(r.status, 429);
                    Got::Limited(limit, r.retry_after)
                }
                Why::Banned { reason, .. } => {
                    assert_eq!(r.status, 403);
                    Got::Banned(reason, r.retry_after)
                }
                Why::Denied(_) => {
                    assert_eq!((r.status, r.retry_after), (403, None));
                    Got::Denied
                }
                Why::MissingKey => Got::MissingKey(r.status),
                Why::StoreUnavailable => Got::Unavailable(r.status),
            },
        }
    }

    fn request(&self, facts: Facts) -> Got {
        self.got(begin(&self.shared, &self.plans, facts))
    }

    fn ban(&self, key: &ClientKey, reason_forever: bool) {
        let now = self.shared.now();
        let until = (!reason_forever).then(|| now + Duration::from_secs(3_600));
        let mut ban = self.shared.store.ban(key, until, now);
        ban.take_ready().expect("ready").expect("banned");
    }

    fn counted(&self, key: &ClientKey) -> bool {
        let mut state = self.shared.store.state(key, self.shared.now());
        state.take_ready().expect("ready").expect("state").is_some()
    }
}

#[test]
fn the_global_rules_count_under_the_address_with_time_from_the_clock() {
    let g = gate(one_per_minute());
    assert_eq!(
        g.request(facts(ip(1), Findings::default(), None)),
        Got::Allowed(Some(0))
    );
    g.clock.advance(Duration::from_secs(20));
    assert_eq!(
        g.request(facts(ip(1), Findings::default(), None)),
        Got::Limited(0, Some(Duration::from_secs(40)))
    );
    assert_eq!(
        g.request(facts(ip(2), Findings::default(), None)),
        Got::Allowed(Some(0))
    );
    g.clock.advance(Duration::from_secs(40));
    assert_eq!(
        g.request(facts(ip(1), Findings::default(), None)),
        Got::Allowed(Some(0))
    );
}

#[test]
fn step_1_an_allow_listed_client_is_served_uncounted_though_denied_and_banned() {
    let g = gate(one_per_minute());
    g.ban(&ip(1), true);
    let found = Findings {
        skip: true,
        ..denied_by_list()
    };
    assert_eq!(g.request(facts(ip(1), found, None)), Got::Served);
    // A bypass route likewise, before the deny.
    let bypass = route(true, vec![], None);
    assert_eq!(
        g.request(facts(ip(3), denied_by_list(), Some(bypass))),
        Got::Served
    );
    assert!(!g.counted(&ip(3)), "a bypassed request is counted nowhere");
}

#[test]
fn step_2_a_deny_refuses_before_the_key_and_the_store() {
    let g = gate(one_per_minute().missing_key(MissingKey::Skip));
    let r = route(false, vec![], Some(Found::Missing));
    assert_eq!(
        g.request(facts(ip(1), denied_by_list(), Some(r))),
        Got::Denied
    );
    assert!(!g.counted(&ip(1)), "a denied request is counted nowhere");
}

#[test]
fn step_3_a_custom_key_counts_apart_from_its_address_but_the_address_ban_applies() {
    let g = gate(Floodgate::new());
    let rules = vec![Rule::new(1, Duration::from_secs(60))];
    let keyed = |k: &str| {
        Some(route(
            false,
            rules.clone(),
            Some(Found::Key(ClientKey::custom(k))),
        ))
    };
    assert_eq!(
        g.request(facts(ip(1), Findings::default(), keyed("a"))),
        Got::Allowed(Some(0))
    );
    assert_eq!(
        g.request(facts(ip(1), Findings::default(), keyed("b"))),
        Got::Allowed(Some(0))
    );
    assert!(matches!(
        g.request(facts(ip(2), Findings::default(), keyed("a"))),
        Got::Limited(0, _)
    ));
    assert!(
        !g.counted(&ip(1)),
        "counted under the keys, not the address"
    );
    g.ban(&ip(1), false);
    assert_eq!(
        g.request(facts(ip(1), Findings::default(), keyed("c"))),
        Got::Banned(BanReason::Operator, Some(Duration::from_secs(3_600)))
    );
}

#[test]
fn step_3_a_missing_key_is_skipped_or_counted_by_address_as_configured() {
    let missing = || {
        Some(route(
            false,
            vec![Rule::new(1, Duration::from_secs(60))],
            Some(Found::Missing),
        ))
    };
    let skip = gate(Floodgate::new().missing_key(MissingKey::Skip));
    for _ in 0..3 {
        assert_eq!(
            skip.request(facts(ip(1), Findings::default(), missing())),
            Got::Allowed(None)
        );
    }
    skip.ban(&ip(1), true);
    assert_eq!(
        skip.request(facts(ip(1), Findings::default(), missing())),
        Got::Banned(BanReason::Operator, None),
        "a skipped key still meets its address's ban"
    );
    let by_ip = gate(Floodgate::new().missing_key(MissingKey::UseIp));
    assert_eq!(
        by_ip.request(facts(ip(1), Findings::default(), missing())),
        Got::Allowed(Some(0))
    );
    assert!(matches!(
        by_ip.request(facts(ip(1), Findings::default(), missing())),
        Got::Limited(0, _)
    ));
}

#[test]
fn step_4_an_excluded_method_meets_bans_only() {
    let g = gate(one_per_minute());
    let excluded = |key| Facts {
        excluded: true,
        ..facts(key, Findings::default(), None)
    };
    for _ in 0..3 {
        assert_eq!(g.request(excluded(ip(1))), Got::Allowed(None));
    }
    assert_eq!(
        g.request(facts(ip(1), Findings::default(), None)),
        Got::Allowed(Some(0))
    );
    g.ban(&ip(2), true);
    assert_eq!(
        g.request(excluded(ip(2))),
        Got::Banned(BanReason::Operator, None)
    );
}

#[test]
fn step_5_a_probe_bans_before_the_decision_it_changes() {
    let g = gate(
        one_per_minute().probe_ban(ProbeBan::new(["/.env"]).ban_for(Duration::from_secs(600))),
    );
    let probe = Findings {
        probe: true,
        ..Findings::default()
    };
    assert_eq!(
        g.request(facts(ip(1), probe, None)),
        Got::Banned(BanReason::Probe, Some(Duration::from_secs(600)))
    );
    // A probe's report counts an offence instead, under the ban rule.
    let g = gate(
        Floodgate::new()
            .ban_rule(BanRule::new(
                2,
                Duration::from_secs(60),
                Duration::from_secs(900),
            ))
            .probe_ban(ProbeBan::new(["/.env"]).report()),
    );
    let probe = || Findings {
        probe: true,
        ..Findings::default()
    };
    assert_eq!(g.request(facts(ip(1), probe(), None)), Got::Allowed(None));
    assert_eq!(
        g.request(facts(ip(1), probe(), None)),
        Got::Banned(BanReason::Reported, Some(Duration::from_secs(900)))
    );
}

#[test]
fn step_7_every_rule_of_the_plan_decides_together_and_names_the_limit() {
    let g = gate(Floodgate::new().rate_limit_rules([Rule::new(5, Duration::from_secs(60))]));
    let r = || {
        Some(RouteChoice {
            spec: Arc::new(RouteSpec {
                standalone: false,
                ..(*route(false, vec![Rule::new(2, Duration::from_secs(10))], None).spec).clone()
            }),
            exempt: false,
            key: None,
            units: 1,
        })
    };
    assert_eq!(
        g.request(facts(ip(1), Findings::default(), r())),
        Got::Allowed(Some(1))
    );
    assert_eq!(
        g.request(facts(ip(1), Findings::default(), r())),
        Got::Allowed(Some(0))
    );
    // The route's rule (limit 1, after the global rule 0) refuses; nothing was counted.
    assert_eq!(
        g.request(facts(ip(1), Findings::default(), r())),
        Got::Limited(1, Some(Duration::from_secs(10)))
    );
    // The route's window passed: its rule has 1 left, the global rule 2 (3 of 5 counted).
    g.clock.advance(Duration::from_secs(10));
    assert_eq!(
        g.request(facts(ip(1), Findings::default(), r())),
        Got::Allowed(Some(1))
    );
    // Without the route, the global rule alone: 4, then 5 counted of 5.
    assert_eq!(
        g.request(facts(ip(1), Findings::default(), None)),
        Got::Allowed(Some(1))
    );
    assert_eq!(
        g.request(facts(ip(1), Findings::default(), None)),
        Got::Allowed(Some(0))
    );
    assert!(matches!(
        g.request(facts(ip(1), Findings::default(), None)),
        Got::Limited(0, _)
    ));
}

#[test]
fn deferred_routes_decide_their_own_plan_and_skip_what_the_app_checked() {
    let g = gate(one_per_minute());
    let own = |_: &RouteChoice| {
        Some(crate::plans::RoutePlan::new(
            &g.shared,
            crate::state::Plan::new(
                [(
                    crate::state::ScopeId::named("late"),
                    vec![Rule::new(1, Duration::from_secs(30))],
                )],
                None,
            ),
        ))
    };
    let late = |mark: Option<RouteChoice>, found: Findings| {
        g.got(begin_deferred(&g.shared, own, facts(ip(1), found, mark)))
    };
    assert_eq!(late(None, Findings::default()), Got::Served);
    assert_eq!(
        late(Some(route(true, vec![], None)), Findings::default()),
        Got::Served
    );
    let allowed = Findings {
        skip: true,
        ..Findings::default()
    };
    assert_eq!(late(Some(route(false, vec![], None)), allowed), Got::Served);
    assert_eq!(
        late(Some(route(false, vec![], None)), Findings::default()),
        Got::Allowed(Some(0))
    );
    assert_eq!(
        late(Some(route(false, vec![], None)), Findings::default()),
        Got::Limited(0, Some(Duration::from_secs(30)))
    );
    // A deny was the app-wide middleware's to refuse: not checked again.
    g.clock.advance(Duration::from_secs(30));
    assert_eq!(
        late(Some(route(false, vec![], None)), denied_by_list()),
        Got::Allowed(Some(0))
    );
}

#[test]
fn a_limit_the_plan_lacks_is_refused_all_the_same() {
    let g = gate(one_per_minute());
    let route = g.plans.choose(&g.shared, None, true).expect("global plan");
    let odd = crate::state::Decision::Limited {
        reason: LimitReason::Rule,
        limit: 7,
        retry_after: Duration::from_secs(5),
        started: false,
    };
    match verdict(&g.shared, &route, &ip(1), Ok(odd), g.shared.now()) {
        Verdict::Refuse(r) => {
            assert_eq!(
                (r.status, r.retry_after),
                (429, Some(Duration::from_secs(5)))
            );
            assert!(matches!(r.why, Why::StoreUnavailable));
        }
        Verdict::Serve(_) => panic!("served"),
    }
}

#[test]
fn a_store_error_serves_or_refuses_as_store_failure_says() {
    let err = || Err(crate::error::StoreError::new("down"));
    let open = gate(one_per_minute());
    let route = open.plans.choose(&open.shared, None, true).expect("plan");
    assert!(matches!(
        verdict(&open.shared, &route, &ip(1), err(), T0),
        Verdict::Serve(None)
    ));
    let closed = gate(one_per_minute().store_failure(crate::store::StoreFailure::Closed));
    let route = closed
        .plans
        .choose(&closed.shared, None, true)
        .expect("plan");
    match verdict(&closed.shared, &route, &ip(1), err(), T0) {
        Verdict::Refuse(r) => {
            assert_eq!(
                (r.status, r.retry_after),
                (503, Some(Duration::from_secs(1)))
            );
            assert!(matches!(r.why, Why::StoreUnavailable));
        }
        Verdict::Serve(_) => panic!("served"),
    }
}

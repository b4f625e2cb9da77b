//! The decision core against a reference model (SPEC 4).
//!
//! The model is the contract written as plainly as possible: every accepted request time
//! per scope in a `Vec`, offences in a `Vec`, one ban slot, and every question answered by
//! filtering those lists. Random operation sequences (time advancing by random steps, checks
//! under one of two plans, reports, operator bans and unbans) run on both the model and
//! `floodgate::ClientState`, and every answer must be identical: allowed with the same quota,
//! limited by the same rule with the same `retry_after`, banned with the same `until`.
//!
//! A failure prints the shrunk operation sequence; proptest saves its seed in
//! `floodgate/tests/core_model.proptest-regressions`, replayed first by every later run.

use std::time::Duration;

use floodgate::{
    BanReason, BanRule, ClientState, Decision, LimitReason, Plan, Quota, ReportOutcome, Rule,
    ScopeId, Timestamp,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const T0: u64 = 1_700_000_000_000;

/// A rule as the model sees it: `count` accepted requests in the last `window` ms.
#[derive(Clone, Copy, Debug)]
struct ModelRule {
    count: usize,
    window: u64,
}

/// One plan: its scopes in order, each with its rules; `None` for `Plan::ban_only`.
#[derive(Clone, Debug)]
struct ModelPlan {
    scopes: Option<Vec<(ScopeId, Vec<ModelRule>)>>,
}

impl ModelPlan {
    fn to_plan(&self) -> Plan {
        match &self.scopes {
            None => Plan::ban_only(),
            Some(scopes) => Plan::new(
                scopes.iter().map(|(id, rules)| {
                    let rules = rules
                        .iter()
                        .map(|r| Rule::new(r.count as u32, Duration::from_millis(r.window)))
                        .collect();
                    (*id, rules)
                }),
                None,
            ),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Model {
    /// Accepted request times per scope.
    accepted: Vec<(ScopeId, Vec<u64>)>,
    /// Unspent offences.
    offences: Vec<u64>,
    /// (until, reason); `u64::MAX` is forever.
    ban: Option<(u64, BanReason)>,
}

/// Accepted times of `times` within the `window` ending at `now`: `(now - window, now]`.
fn in_window(times: &[u64], now: u64, window: u64) -> Vec<u64> {
    times
        .iter()
        .copied()
        .filter(|&t| t <= now && now - t < window)
        .collect()
}

impl Model {
    fn times(&self, scope: ScopeId) -> &[u64] {
        self.accepted
            .iter()
            .find(|(s, _)| *s == scope)
            .map_or(&[], |(_, t)| t)
    }

    fn ban_in_force(&self, now: u64) -> Option<(u64, BanReason)> {
        self.ban.filter(|&(until, _)| until > now)
    }

    fn check(&mut self, plan: &ModelPlan, now: u64) -> Decision {
        if let Some((until, reason)) = self.ban_in_force(now) {
            return Decision::Banned {
                until: (until != u64::MAX).then_some(Timestamp::from_millis(until)),
                reason,
                started: false,
            };
        }
        let Some(scopes) = &plan.scopes else {
            return Decision::Allowed { quota: None };
        };
        // Refused when any rule already has `count` accepted requests in its window; the
        // wait is until enough of them leave it, the longest among the refusing rules (the
        // first such rule on a tie).
        let mut refused: Option<(usize, u64)> = None;
        let mut limit = 0;
        for (scope, rules) in scopes {
            for rule in rules {
                let inside = in_window(self.times(*scope), now, rule.window);
                if inside.len() >= rule.count {
                    // The request that must leave: the count-th most recent.
                    let leaving = inside[inside.len() - rule.count];
                    let wait = leaving + rule.window - now;
                    if refused.is_none_or(|(_, w)| wait > w) {
                        refused = Some((limit, wait));
                    }
                }
                limit += 1;
            }
        }
        if let Some((limit, wait)) = refused {
            return Decision::Limited {
                reason: LimitReason::Rule,
                limit,
                retry_after: Duration::from_millis(wait),
                started: false,
            };
        }
        // Accepted: recorded in every scope of the plan.
        for (scope, _) in scopes {
            match self.accepted.iter_mut().find(|(s, _)| s == scope) {
                Some((_, times)) => times.push(now),
                None => self.accepted.push((*scope, vec![now])),
            }
        }
        // The quota closest to refusing: fewest remaining, then the longest reset, then the
        // first.
        let mut best: Option<Quota> = None;
        let mut limit = 0;
        for (scope, rules) in scopes {
            for rule in rules {
                let inside = in_window(self.times(*scope), now, rule.window);
                let q = Quota {
                    limit,
                    remaining: rule.count.saturating_sub(inside.len()) as u32,
                    reset: Duration::from_millis(inside[0] + rule.window - now),
                };
                let better = best.is_none_or(|b| {
                    q.remaining < b.remaining || (q.remaining == b.remaining && q.reset > b.reset)
                });
                if better {
                    best = Some(q);
                }
                limit += 1;
            }
        }
        Decision::Allowed { quota: best }
    }

    fn report(&mut self, rule: &BanRule, now: u64) -> ReportOutcome {
        self.offences.push(now);
        let window = rule.window().as_millis() as u64;
        let inside = in_window(&self.offences, now, window).len();
        if inside >= rule.count() as usize {
            // Banned for `duration` from this offence, unless a longer ban is in force; the
            // offences are spent.
            let until = now + rule.duration().as_millis() as u64;
            if !matches!(self.ban, Some((current, _)) if current >= until) {
                self.ban = Some((until, BanReason::Reported));
            }
            self.offences.clear();
            return ReportOutcome::Banned {
                until: Timestamp::from_millis(until),
            };
        }
        ReportOutcome::Recorded {
            offences: inside as u32,
        }
    }

    fn ban(&mut self, until: Option<u64>) {
        self.ban = Some((until.unwrap_or(u64::MAX), BanReason::Operator));
    }

    fn unban(&mut self, now: u64) -> bool {
        let was = self.ban_in_force(now).is_some();
        self.ban = None;
        self.offences.clear();
        was
    }
}

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    Check(usize),
    Report,
    /// Operator ban for this many ms from now; `None`: forever.
    Ban(Option<u64>),
    Unban,
}

fn any_rule() -> impl Strategy<Value = ModelRule> {
    (1usize..=3, prop_oneof![1u64..=5, 1u64..=3_000])
        .prop_map(|(count, window)| ModelRule { count, window })
}

fn any_rules() -> impl Strategy<Value = Vec<ModelRule>> {
    prop::collection::vec(any_rule(), 1..=3)
}

/// Two plans, as an app has them: the global rules alone, and a route's (with the global
/// rules, standalone, or a ban-only excluded method). A scope always has the same rules, as
/// `Plan::new` requires: a log keeps only as many times as its own rules' largest count, so
/// checking one scope under two rule sets lets the smaller count drop times the larger one
/// still counts (this model finds that at once when the plans below share a scope).
fn any_plans() -> impl Strategy<Value = Vec<ModelPlan>> {
    (any_rules(), any_rules(), 0..3).prop_map(|(global, route, kind)| {
        let g = (ScopeId::GLOBAL, global);
        let r = (ScopeId::named("route"), route);
        let second = match kind {
            0 => Some(vec![g.clone(), r]),
            1 => Some(vec![r]),
            _ => None,
        };
        vec![
            ModelPlan {
                scopes: Some(vec![g]),
            },
            ModelPlan { scopes: second },
        ]
    })
}

fn any_ban_rule() -> impl Strategy<Value = BanRule> {
    (1u32..=3, 1u64..=3_000, 0u64..=5_000).prop_map(|(count, window, duration)| {
        BanRule::new(
            count,
            Duration::from_millis(window),
            Duration::from_millis(duration),
        )
    })
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop_oneof![0u64..=2, 0u64..=1_500, 0u64..=20_000].prop_map(Op::Advance),
        6 => (0usize..2).prop_map(Op::Check),
        2 => Just(Op::Report),
        1 => prop::option::weighted(0.8, 0u64..=5_000).prop_map(Op::Ban),
        1 => Just(Op::Unban),
    ]
}

proptest! {
    // Failures are saved beside this file (see the top), wherever the crate's lib.rs is.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_core_decides_as_the_model(
        plans in any_plans(),
        ban_rule in any_ban_rule(),
        ops in prop::collection::vec(any_op(), 1..120),
    ) {
        let built: Vec<Plan> = plans.iter().map(ModelPlan::to_plan).collect();
        let mut core = ClientState::new();
        let mut model = Model::default();
        let mut now = T0;
        for (i, op) in ops.iter().enumerate() {
            let at = Timestamp::from_millis(now);
            match *op {
                Op::Advance(ms) => now += ms,
                Op::Check(p) => {
                    let got = core.check(&built[p], at);
                    let want = model.check(&plans[p], now);
                    prop_assert_eq!(got, want, "op {} ({:?}) at +{} ms", i, op, now - T0);
                }
                Op::Report => {
                    let got = core.report(&ban_rule, at);
                    let want = model.report(&ban_rule, now);
                    prop_assert_eq!(got, want, "op {} ({:?}) at +{} ms", i, op, now - T0);
                }
                Op::Ban(ms) => {
                    let until = ms.map(|ms| now + ms);
                    core.ban(until.map(Timestamp::from_millis), at);
                    model.ban(until);
                }
                Op::Unban => {
                    let got = core.unban(at);
                    let want = model.unban(now);
                    prop_assert_eq!(got, want, "op {} ({:?}) at +{} ms", i, op, now - T0);
                }
            }
            let want_ban = model.ban_in_force(now).map(|(until, reason)| {
                ((until != u64::MAX).then_some(Timestamp::from_millis(until)), reason)
            });
            prop_assert_eq!(core.ban_at(Timestamp::from_millis(now)), want_ban, "ban after op {}", i);
        }
    }
}

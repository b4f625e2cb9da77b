//! Extreme values: everything saturates, nothing panics (debug builds check).

use super::*;

const END: u64 = u64::MAX;

/// Times near the epoch, now, past what a double holds exactly, and the end of time.
const EXTREME_NOWS: [u64; 6] = [1, T0, 1 << 53, END - 2, END - 1, END];

fn wait_ms(d: Decision) -> u64 {
    match d {
        Decision::Limited { retry_after, .. } => duration_millis(retry_after),
        d => panic!("expected Limited, got {d:?}"),
    }
}

fn ts(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

#[test]
fn rules_of_the_largest_count_and_window_wait_until_the_end_of_time() {
    let huge = Rule::new(u32::MAX, Duration::MAX);
    assert_eq!((huge.count(), huge.window_ms()), (u32::MAX, END));
    let zero = Plan::new(
        [
            (ScopeId::GLOBAL, vec![huge]),
            (ScopeId::named("r"), vec![Rule::new(0, Duration::MAX)]),
        ],
        None,
    );
    let one = Plan::new(
        [(ScopeId::GLOBAL, vec![huge, Rule::new(1, Duration::MAX)])],
        None,
    );
    for now in EXTREME_NOWS {
        let mut s = ClientState::new();
        // A zero count refuses for its whole window: the longest wait there is.
        let d = s.check(&zero, ts(now));
        assert!(matches!(d, Decision::Limited { limit: 1, .. }), "{d:?}");
        assert_eq!(wait_ms(d), END);
        let Decision::Allowed { quota: Some(q) } = s.check(&one, ts(now)) else {
            panic!("the first request is allowed")
        };
        assert_eq!((q.limit, q.remaining), (1, 0));
        assert_eq!(duration_millis(q.reset), END - now);
        if now == END {
            continue; // the request leaves its window at the end of time, which is now
        }
        // The request stays in its window until the end of time.
        for later in [now, now + 1, END - 1].into_iter().filter(|&t| t < END) {
            let d = s.check(&one, ts(later));
            assert!(matches!(d, Decision::Limited { limit: 1, .. }), "{d:?}");
            assert_eq!(wait_ms(d), END - later, "at {later}");
        }
        assert_eq!(s.expires_at(), Timestamp::NEVER);
        s.prune(ts(END - 1));
        assert_eq!(s.scopes.len(), 1, "kept until the end of time");
    }
}

fn extreme_policy() -> Policy {
    Policy::new(u32::MAX, Duration::MAX)
        .block_duration(Duration::MAX)
        .cooldown(Duration::MAX)
        .punishment(Punishment::Ban(Duration::MAX))
        .max_window_duration(Some(Duration::MAX))
        .accumulate_cap(u32::MAX)
        .grace(Grace {
            extra: u32::MAX,
            interval: Duration::MAX,
        })
        .adaptive(Adaptive {
            factor: f64::MAX,
            max: Duration::MAX,
            jitter: Duration::MAX,
        })
}

#[test]
fn a_cooldown_of_duration_max_lasts_until_the_end_of_time() {
    let plan = policy_plan(extreme_policy());
    for now in EXTREME_NOWS {
        let mut s = ClientState::new();
        assert!(s.check(&plan, ts(now)).is_allowed(), "{now}");
        if now == END {
            continue;
        }
        for later in [now, now + 1, END - 1].into_iter().filter(|&t| t < END) {
            let d = s.check(&plan, ts(later));
            assert!(
                matches!(
                    d,
                    Decision::Limited {
                        reason: LimitReason::Cooldown,
                        ..
                    }
                ),
                "{d:?}"
            );
            assert_eq!(wait_ms(d), END - later);
        }
    }
}

#[test]
fn blocks_and_punishments_of_duration_max_last_until_the_end_of_time() {
    // Amount 1, no cooldown: the second request blocks for `Duration::MAX`.
    let block = policy_plan(extreme_policy().with_amount(1).cooldown(Duration::ZERO));
    // Block limit 0: the block punishes at once, for `Duration::MAX` x f64::MAX^n + jitter.
    let punish = policy_plan(
        extreme_policy()
            .with_amount(1)
            .cooldown(Duration::ZERO)
            .block_limit(0)
            .grace(Grace {
                extra: 0,
                interval: Duration::MAX,
            }),
    );
    let relative = policy_plan(
        extreme_policy()
            .with_amount(0)
            .cooldown(Duration::ZERO)
            .relative_block(true)
            .grace(Grace {
                extra: 0,
                interval: Duration::MAX,
            }),
    );
    for now in EXTREME_NOWS.into_iter().filter(|&t| t < END - 1) {
        let mut s = ClientState::new();
        assert!(s.check(&block, ts(now)).is_allowed());
        // The grace (extra u32::MAX) lets this one through: a first offender.
        assert!(s.check(&block, ts(now)).is_allowed());
        let mut s = ClientState::new();
        assert!(s.check(&punish, ts(now)).is_allowed());
        let d = s.check(&punish, ts(now + 1));
        assert!(
            matches!(
                d,
                Decision::Banned {
                    until: None,
                    reason: BanReason::Punished,
                    started: true
                }
            ),
            "a ban to the end of time is permanent: {d:?}"
        );
        assert!(matches!(
            s.check(&punish, ts(END - 1)),
            Decision::Banned { until: None, .. }
        ));
        // No reset ever comes; an unban clears it.
        assert!(s.unban(ts(now + 1)));
        let mut s = ClientState::new();
        let d = s.check(&relative, ts(now));
        assert!(
            matches!(
                d,
                Decision::Limited {
                    reason: LimitReason::Blocked,
                    started: true,
                    ..
                }
            ),
            "{d:?}"
        );
        assert_eq!(wait_ms(d), END - now, "the wait ends with the block");
        let d = s.check(&relative, ts(now + 1));
        assert_eq!(wait_ms(d), END - (now + 1));
    }
}

#[test]
fn ban_rules_and_operator_bans_of_duration_max_are_permanent() {
    let plan = global(&[(1, 1)]);
    for rule in [
        BanRule::new(1, Duration::MAX, Duration::MAX),
        BanRule::new(u32::MAX, Duration::MAX, Duration::MAX),
    ] {
        for now in EXTREME_NOWS.into_iter().filter(|&t| t < END) {
            let mut s = ClientState::new();
            let mut out = s.report(&rule, ts(now));
            for n in 2..=rule.count().min(3) {
                assert_eq!(out, ReportOutcome::Recorded { offences: n - 1 });
                out = s.report(&rule, ts(now));
            }
            if rule.count() > 3 {
                assert_eq!(out, ReportOutcome::Recorded { offences: 3 });
                assert_eq!(s.offences().unwrap().1, END, "offences kept forever");
                continue;
            }
            assert_eq!(
                out,
                ReportOutcome::Banned {
                    until: Timestamp::NEVER
                }
            );
            assert!(matches!(
                s.check(&plan, ts(END - 1)),
                Decision::Banned {
                    until: None,
                    reason: BanReason::Reported,
                    ..
                }
            ));
            s.ban(Some(ts(now) + Duration::MAX), ts(now));
            assert_eq!(s.ban_at(ts(END - 1)), Some((None, BanReason::Operator)));
            assert_eq!(s.expires_at(), Timestamp::NEVER);
        }
    }
}

#[test]
fn stored_times_near_the_end_of_time_never_overflow() {
    // What a corrupt or hostile row may hold: every time at or near u64::MAX.
    let mut plans = Vec::new();
    for p in [
        extreme_policy(),
        extreme_policy().with_amount(0).relative_block(true),
        Policy::new(1, secs(1)).cooldown(secs(1)).block_limit(0),
    ] {
        plans.push(Plan::new(
            [(
                ScopeId::GLOBAL,
                vec![Rule::new(u32::MAX, Duration::MAX), Rule::new(1, secs(1))],
            )],
            Some((ScopeId::named("p"), p)),
        ));
    }
    for v in [END, END - 1, 1 << 53, 0] {
        let policy = PolicyState {
            window_start: v,
            count: u32::MAX,
            carry: u32::MAX,
            blocked_until: v,
            block_count: u32::MAX,
            punished_until: v,
            punishments: u32::MAX,
            last_request: v,
            last_seen: v,
            last_block_at: v,
            grace_used_at: v,
            grace_window: v,
            expires: v,
        };
        let state = ClientState::from_parts(
            v,
            Some((v, BanReason::Punished)),
            [v, END].into_iter().collect(),
            v,
            vec![
                (
                    ScopeId::GLOBAL,
                    Scope::RuleLog(RuleLog {
                        times: [0, v, END, 1].into_iter().collect(),
                        expires: v,
                        windows: None,
                    }),
                ),
                (ScopeId::named("p"), Scope::Policy(Box::new(policy))),
            ],
        );
        for now in EXTREME_NOWS {
            for plan in &plans {
                let mut s = state.clone();
                for _ in 0..3 {
                    match s.check(plan, ts(now)) {
                        Decision::Banned { until: Some(u), .. } => assert!(u > ts(now)),
                        Decision::Limited { retry_after, .. } => {
                            assert!(duration_millis(retry_after) <= END - now.min(END - 1))
                        }
                        _ => {}
                    }
                    s.report(&BanRule::new(2, Duration::MAX, Duration::MAX), ts(now));
                }
                s.prune(ts(now));
                assert!(s.unban(ts(now)) || s.ban_at(ts(now)).is_none());
            }
        }
    }
}

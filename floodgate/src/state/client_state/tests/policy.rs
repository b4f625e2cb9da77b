//! The policy family: windows, blocks, punishments, accumulation, cooldown, grace and
//! adaptive punishments.

use super::*;

#[test]
fn policy_allows_amount_per_window_then_blocks_for_block_duration() {
    let plan = policy_plan(Policy::new(3, secs(60)).block_duration(secs(30)));
    let mut s = ClientState::new();
    for ms in [0, 10, 20] {
        assert_eq!(code(s.check(&plan, at(ms))), (200, None));
    }
    // Request amount+1 blocks for 30 s from this first refusal.
    assert_eq!(code(s.check(&plan, at(1_000))), (429, Some(30_000)));
    assert_eq!(code(s.check(&plan, at(11_000))), (429, Some(20_000)));
    // The block ended but the window (opened at 0) runs until 60 s: blocked again.
    assert_eq!(code(s.check(&plan, at(31_000))), (429, Some(30_000)));
    let st = s.policy_mut(ScopeId::named("policy p")).clone();
    assert_eq!(st.block_count, 2);
    assert_eq!(code(s.check(&plan, at(61_000))), (200, None));
}

#[test]
fn relative_block_pushes_the_end_on_every_refusal() {
    let plan = policy_plan(Policy::new(1, secs(10)).relative_block(true));
    let mut s = ClientState::new();
    assert_eq!(code(s.check(&plan, at(0))), (200, None));
    assert_eq!(code(s.check(&plan, at(1_000))), (429, Some(10_000)));
    assert_eq!(code(s.check(&plan, at(8_000))), (429, Some(10_000)));
    assert_eq!(code(s.check(&plan, at(17_999))), (429, Some(10_000)));
    assert_eq!(code(s.check(&plan, at(37_999))), (200, None));
}

#[test]
fn exceeding_the_block_limit_bans_or_blacklists() {
    let ban = policy_plan(
        Policy::new(1, secs(10))
            .block_limit(1)
            .punishment(Punishment::Ban(secs(100))),
    );
    let mut s = ClientState::new();
    assert_eq!(code(s.check(&ban, at(0))), (200, None));
    assert_eq!(code(s.check(&ban, at(1))), (429, Some(10_000)));
    assert_eq!(code(s.check(&ban, at(10_001))), (200, None));
    // Second block > block_limit 1: banned for 100 s.
    assert_eq!(code(s.check(&ban, at(10_002))), (403, Some(110_002)));
    assert_eq!(code(s.check(&ban, at(110_001))), (403, Some(110_002)));
    assert_eq!(code(s.check(&ban, at(110_002))), (200, None));

    let black = policy_plan(
        Policy::new(1, secs(10))
            .block_limit(0)
            .punishment(Punishment::Blacklist),
    );
    let mut s = ClientState::new();
    assert_eq!(code(s.check(&black, at(0))), (200, None));
    assert_eq!(code(s.check(&black, at(1))), (403, None));
    assert_eq!(code(s.check(&black, at(999_999_999))), (403, None));
    assert!(s.unban(at(1_000_000_000)));
    assert_eq!(code(s.check(&black, at(1_000_000_001))), (200, None));
}

#[test]
fn block_exceed_reset_decides_whether_the_next_block_punishes_again() {
    for reset in [true, false] {
        let plan = policy_plan(
            Policy::new(1, secs(10))
                .block_limit(1)
                .punishment(Punishment::Ban(secs(100)))
                .block_exceed_reset(reset),
        );
        let mut s = ClientState::new();
        s.check(&plan, at(0));
        s.check(&plan, at(1)); // block 1
        s.check(&plan, at(10_001));
        assert_eq!(code(s.check(&plan, at(10_002))).0, 403); // block 2: punished
                                                             // After the punishment: one allowed request, then a block.
        assert_eq!(code(s.check(&plan, at(200_000))), (200, None));
        let d = code(s.check(&plan, at(200_001)));
        if reset {
            assert_eq!(d, (429, Some(10_000)), "reset: the count restarted at 0");
        } else {
            assert_eq!(
                d,
                (403, Some(300_001)),
                "no reset: the next block punishes again"
            );
        }
    }
}

#[test]
fn accumulation_carries_unused_quota_capped() {
    let plan = policy_plan(Policy::new(2, secs(10)).accumulate_requests(true));
    let mut s = ClientState::new();
    // Window 1 (0..10 s): 0 of 2 used beyond the opening request -> 1 unused.
    assert_eq!(code(s.check(&plan, at(0))), (200, None));
    // Window 2 opens at 20 s with carry 1: 3 allowed.
    for ms in [20_000, 20_001, 20_002] {
        assert_eq!(code(s.check(&plan, at(ms))), (200, None), "{ms}");
    }
    assert_eq!(code(s.check(&plan, at(20_003))).0, 429);
    // Several idle windows never compound beyond the cap (2 extra: 4 per window).
    let mut s = ClientState::new();
    s.check(&plan, at(0));
    for w in 1..10u64 {
        s.check(&plan, at(w * 100_000));
    }
    let mut allowed = 0;
    for ms in 0..10 {
        if s.check(&plan, at(2_000_000 + ms)).is_allowed() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 4);
}

#[test]
fn cooldown_refuses_requests_too_close_together_without_blocking() {
    let plan = policy_plan(Policy::new(10, secs(60)).cooldown(secs(2)));
    let mut s = ClientState::new();
    assert_eq!(code(s.check(&plan, at(0))), (200, None));
    assert_eq!(code(s.check(&plan, at(500))), (429, Some(1_500)));
    assert_eq!(code(s.check(&plan, at(2_000))), (200, None));
    assert_eq!(s.policy_mut(ScopeId::named("policy p")).block_count, 0);
}

#[test]
fn grace_lets_a_rare_client_exceed_slightly_once() {
    let grace = Grace {
        extra: 2,
        interval: secs(3_600),
    };
    let plan = policy_plan(Policy::new(3, secs(10)).grace(grace));
    let mut s = ClientState::new();
    // First window: 3 + 2 grace allowed, the 6th blocks.
    for ms in 0..5 {
        assert_eq!(code(s.check(&plan, at(ms))), (200, None), "{ms}");
    }
    assert_eq!(code(s.check(&plan, at(5))).0, 429);
    // Within the hour: no grace again.
    for ms in 0..3 {
        assert_eq!(code(s.check(&plan, at(20_000 + ms))), (200, None));
    }
    assert_eq!(code(s.check(&plan, at(20_003))).0, 429);
    // An hour after the last block and grace: eligible again.
    let later = 20_003 + 3_600_000;
    for ms in 0..5 {
        assert_eq!(code(s.check(&plan, at(later + ms))), (200, None), "{ms}");
    }
}

#[test]
fn adaptive_punishments_grow_to_the_cap() {
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
    let mut s = ClientState::new();
    let mut t = 0;
    let mut lengths = Vec::new();
    for _ in 0..5 {
        assert!(s.check(&plan, at(t)).is_allowed());
        match s.check(&plan, at(t + 1)) {
            Decision::Banned { until: Some(u), .. } => {
                lengths.push((u.as_millis() - T0 - (t + 1)) / 1000);
                t = u.as_millis() - T0 + 5_000;
            }
            d => panic!("{d:?}"),
        }
    }
    assert_eq!(lengths, [10, 30, 90, 200, 200]);
}

#[test]
fn adaptive_jitter_comes_from_the_draw_and_stays_within_its_bound() {
    let a = Adaptive {
        factor: 2.0,
        max: secs(1_000),
        jitter: secs(5),
    };
    let plan = policy_plan(
        Policy::new(1, secs(1))
            .block_limit(0)
            .punishment(Punishment::Ban(secs(10)))
            .adaptive(a),
    );
    let length = |draw: u64| {
        let mut s = ClientState::new();
        s.check_with_draw(&plan, at(0), draw);
        let Decision::Banned { until: Some(u), .. } = s.check_with_draw(&plan, at(1), draw) else {
            panic!("banned")
        };
        u.as_millis() - T0 - 1
    };
    // The same draw gives the same punishment: the decision is a function of its inputs.
    assert_eq!(length(1_234), length(1_234));
    assert_eq!(length(0), 10_000);
    assert_eq!(length(5_000), 15_000);
    assert_eq!(length(5_001), 10_000);
    assert_eq!(length(u64::MAX), 10_000 + u64::MAX % 5_001);
    for draw in [1, 77, 4_999, 123_456_789, u64::MAX - 1] {
        assert!((10_000..=15_000).contains(&length(draw)), "draw {draw}");
    }
    // Random draws vary it.
    let mut lengths: Vec<u64> = (0..50).map(|_| length(fastrand::u64(..))).collect();
    lengths.sort_unstable();
    lengths.dedup();
    assert!(lengths.len() > 1, "the jitter never varied");
}

#[test]
fn idle_policy_records_are_forgotten_after_max_window_duration() {
    let plan = policy_plan(Policy::new(1, secs(10)).max_window_duration(Some(secs(100))));
    let mut s = ClientState::new();
    s.check(&plan, at(0));
    s.check(&plan, at(1)); // a block
    assert_eq!(s.expires_at(), at(100_001));
    s.prune(at(100_001));
    assert!(s.scopes.is_empty());
    // Never-expiring records when max_window_duration is "forever".
    let forever = policy_plan(Policy::new(1, secs(10)).max_window_duration(None));
    let mut s = ClientState::new();
    s.check(&forever, at(0));
    assert_eq!(s.expires_at(), Timestamp::NEVER);
}

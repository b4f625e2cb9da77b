//! Unit tests of `state_codec.rs`.

use super::*;
use proptest::prelude::*;

fn policy(v: u64, small: u32) -> PolicyState {
    PolicyState {
        window_start: v,
        count: small,
        carry: small,
        blocked_until: v,
        block_count: small,
        punished_until: v,
        punishments: small,
        last_request: v,
        last_seen: v,
        last_block_at: v,
        grace_used_at: v,
        grace_window: v,
        expires: v,
    }
}

fn edge_states() -> Vec<ClientState> {
    let mut out = vec![ClientState::new()];
    for (v, small) in [(0, 0), (1, 1), (u64::MAX, u32::MAX), (1 << 63, 1 << 31)] {
        for reason in [
            BanReason::Reported,
            BanReason::Operator,
            BanReason::Punished,
            BanReason::Probe,
        ] {
            out.push(ClientState::from_parts(
                v,
                Some((v, reason)),
                [v, 0, u64::MAX, 5, 5, 1 << 63].into_iter().collect(),
                v,
                vec![
                    (
                        ScopeId(v),
                        Scope::RuleLog(RuleLog {
                            times: [u64::MAX, 0, v, 1_700_000_000_000].into_iter().collect(),
                            expires: v,
                            windows: None,
                        }),
                    ),
                    (ScopeId::GLOBAL, Scope::Policy(Box::new(policy(v, small)))),
                    (ScopeId(0), Scope::RuleLog(RuleLog::default())),
                    (ScopeId(u64::MAX), Scope::Policy(Box::default())),
                ],
            ));
        }
    }
    out
}

#[test]
fn edge_values_round_trip() {
    for state in edge_states() {
        let bytes = state.encode();
        assert_eq!(ClientState::decode(&bytes), Ok(state));
    }
}

#[test]
fn a_dense_log_is_compact() {
    let log = RuleLog {
        times: (0..100).map(|i| 1_700_000_000_000 + i * 10).collect(),
        expires: 1_700_000_060_000,
        windows: None,
    };
    let state = ClientState::from_parts(
        0,
        None,
        Times::default(),
        0,
        vec![(ScopeId::GLOBAL, Scope::RuleLog(log))],
    );
    let bytes = state.encode();
    assert!(bytes.len() < 140, "{} bytes", bytes.len());
}

#[test]
fn every_truncation_and_trailing_byte_is_rejected() {
    for state in edge_states() {
        let bytes = state.encode();
        for len in 0..bytes.len() {
            assert!(ClientState::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ClientState::decode(&longer).is_err());
    }
}

#[test]
fn bad_tags_and_formats_are_rejected() {
    let base = ClientState::new().encode();
    let mut bad_format = base.clone();
    bad_format[0] = 3;
    let err = ClientState::decode(&bad_format).unwrap_err();
    assert!(err.to_string().contains("unknown format 3"), "{err}");

    let mut bad_ban = base.clone();
    bad_ban[2] = 7; // format, last_seen = 0, ban tag
    assert!(ClientState::decode(&bad_ban).is_err());

    let banned = ClientState::from_parts(
        0,
        Some((5, BanReason::Operator)),
        Times::default(),
        0,
        Vec::new(),
    );
    let mut bad_reason = banned.encode();
    bad_reason[4] = 9; // format, last_seen, tag, until = 5, reason
    assert!(ClientState::decode(&bad_reason).is_err());

    // A scope kind of 2.
    let mut bad_kind = base.clone();
    *bad_kind.last_mut().unwrap() = 1; // one scope
    bad_kind.extend_from_slice(&[0; 8]);
    bad_kind.push(2);
    assert!(ClientState::decode(&bad_kind).is_err());
}

#[test]
fn overflowing_numbers_and_huge_counts_are_rejected() {
    // A varint of 11 bytes, and one of 10 whose last byte carries more than one bit.
    let mut long = vec![FORMAT];
    long.extend_from_slice(&[0xff; 10]);
    long.push(0x01);
    assert!(ClientState::decode(&long).is_err());
    let mut wide = vec![FORMAT];
    wide.extend_from_slice(&[0xff; 9]);
    wide.push(0x02);
    assert!(ClientState::decode(&wide).is_err());

    // An offence count of u64::MAX with nothing behind it.
    let mut huge = vec![FORMAT, 0, 0];
    put(&mut huge, u64::MAX);
    assert!(ClientState::decode(&huge).is_err());

    // A policy count above u32::MAX.
    let state = ClientState::from_parts(
        0,
        None,
        Times::default(),
        0,
        vec![(ScopeId(1), Scope::Policy(Box::default()))],
    );
    let bytes = state.encode();
    let count_at = bytes.len() - 13 + 1; // window_start is 0 (one byte), then count
    let mut over = bytes[..count_at].to_vec();
    put(&mut over, u64::from(u32::MAX) + 1);
    over.extend_from_slice(&bytes[count_at + 1..]);
    let err = ClientState::decode(&over).unwrap_err();
    assert!(err.to_string().contains("count overflows 32 bits"), "{err}");
}

#[test]
fn every_bit_flip_of_an_edge_state_fails_or_decodes_to_a_usable_state() {
    for state in edge_states() {
        let bytes = state.encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut m = bytes.clone();
                m[i] ^= 1 << bit;
                assert_usable(&m);
            }
        }
    }
}

/// `bytes` either fail to decode, or decode to a state that re-encodes to itself and that
/// the core can decide on at any time without panicking.
fn assert_usable(bytes: &[u8]) {
    let Ok(state) = ClientState::decode(bytes) else {
        return;
    };
    assert_eq!(ClientState::decode(&state.encode()).as_ref(), Ok(&state));
    use crate::policy::{Adaptive, Grace, Policy, Punishment};
    use crate::rules::{BanRule, Rule};
    use crate::state::Plan;
    use crate::Timestamp;
    use std::time::Duration;
    // Plans naming the scopes a state may hold (GLOBAL, 0, 1, u64::MAX) with extreme values.
    let policy = Policy::new(1, Duration::MAX)
        .block_limit(0)
        .cooldown(Duration::MAX)
        .punishment(Punishment::Ban(Duration::MAX))
        .grace(Grace {
            extra: u32::MAX,
            interval: Duration::MAX,
        })
        .adaptive(Adaptive {
            factor: f64::MAX,
            max: Duration::MAX,
            jitter: Duration::MAX,
        })
        .accumulate_cap(u32::MAX);
    let plans = [
        Plan::new(
            [
                (ScopeId::GLOBAL, vec![Rule::new(u32::MAX, Duration::MAX)]),
                (
                    ScopeId(0),
                    vec![Rule::new(1, Duration::MAX), Rule::new(0, Duration::MAX)],
                ),
            ],
            Some((ScopeId(1), policy)),
        ),
        Plan::new(
            [(ScopeId(1), vec![Rule::new(2, Duration::from_secs(1))])],
            None,
        ),
        Plan::new([], Some((ScopeId::GLOBAL, Policy::new(0, Duration::ZERO)))),
        Plan::new([], Some((ScopeId(u64::MAX), policy.relative_block(true)))),
        Plan::ban_only(),
    ];
    for now in [0, 1, 1_700_000_000_000, u64::MAX - 1, u64::MAX] {
        let now = Timestamp::from_millis(now);
        let mut s = state.clone();
        // Twice each: the second request meets the first one's log, cooldown and block.
        for plan in plans.iter().chain(&plans) {
            s.check(plan, now);
        }
        s.report(&BanRule::new(u32::MAX, Duration::MAX, Duration::MAX), now);
        s.report(&BanRule::new(1, Duration::MAX, Duration::MAX), now);
        let _ = (s.expires_at(), s.ban_at(now), s.last_seen());
        s.prune(now);
        s.unban(now);
        s.ban(Some(Timestamp::NEVER), now);
        let _ = ClientState::decode(&s.encode()).expect("a used state encodes");
    }
}

// Property tests. A failure prints the shrunk input, and proptest saves its seed in
// `floodgate/proptest-regressions/state_codec.txt`, replayed first by every later run
// (commit that file to keep the case).

fn any_time() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(u64::MAX),
        Just(1 << 63),
        1_700_000_000_000u64..1_700_000_100_000,
        any::<u64>(),
    ]
}

fn any_small() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(u32::MAX), 0u32..10, any::<u32>()]
}

fn any_times(max: usize) -> impl Strategy<Value = Times> {
    prop::collection::vec(any_time(), 0..max).prop_map(|v| v.into_iter().collect())
}

fn any_windows() -> impl Strategy<Value = Option<Box<Windows>>> {
    let window = (
        prop_oneof![Just(1u64), Just(60_000), any::<u64>()],
        any_time(),
        prop::collection::vec((0u64..70, any_small()), 0..8),
    )
        .prop_filter_map("width 0", |(width, base, parts)| {
            let parts = parts.into_iter().map(|(j, n)| (base.saturating_add(j), n));
            Window::from_parts(width, base, parts)
        });
    prop::option::of(
        prop::collection::vec(window, 1..3)
            .prop_map(|list| Box::new(Windows(list.into_boxed_slice()))),
    )
}

fn any_policy() -> impl Strategy<Value = PolicyState> {
    (
        prop::array::uniform9(any_time()),
        prop::array::uniform4(any_small()),
    )
        .prop_map(|(t, n)| PolicyState {
            window_start: t[0],
            count: n[0],
            carry: n[1],
            blocked_until: t[1],
            block_count: n[2],
            punished_until: t[2],
            punishments: n[3],
            last_request: t[3],
            last_seen: t[4],
            last_block_at: t[5],
            grace_used_at: t[6],
            grace_window: t[7],
            expires: t[8],
        })
}

fn any_scope() -> impl Strategy<Value = (ScopeId, Scope)> {
    // The scopes `assert_usable` checks, and others.
    let id = prop_oneof![
        prop::sample::select(vec![
            ScopeId::GLOBAL,
            ScopeId(0),
            ScopeId(1),
            ScopeId(u64::MAX)
        ]),
        any::<u64>().prop_map(ScopeId),
    ];
    let scope = prop_oneof![
        (any_times(40), any_time()).prop_map(|(times, expires)| Scope::RuleLog(RuleLog {
            times,
            expires,
            windows: None
        })),
        (any_times(8), any_time(), any_windows()).prop_map(|(times, expires, windows)| {
            Scope::RuleLog(RuleLog {
                times,
                expires,
                windows,
            })
        }),
        any_policy().prop_map(|p| Scope::Policy(Box::new(p))),
    ];
    (id, scope)
}

fn any_state() -> impl Strategy<Value = ClientState> {
    let reason = prop_oneof![
        Just(BanReason::Reported),
        Just(BanReason::Operator),
        Just(BanReason::Punished),
    ];
    (
        any_time(),
        prop::option::of((any_time(), reason)),
        any_times(6),
        any_time(),
        prop::collection::vec(any_scope(), 0..5),
        any_time(),
    )
        .prop_map(|(last_seen, ban, offences, expire, scopes, since)| {
            let mut state = ClientState::from_parts(last_seen, ban, offences, expire, scopes);
            state.set_ban_since(since);
            state
        })
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn any_mutation() -> impl Strategy<Value = Mutation> {
    // Positions are taken modulo the length at the time of the mutation.
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match *m {
        Mutation::Flip(i, bit) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            bytes[i] ^= 1 << bit;
        }
        Mutation::Set(i, b) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            bytes[i] = b;
        }
        Mutation::Insert(i, b) => bytes.insert(at(i, bytes.len() + 1), b),
        Mutation::Remove(i) if !bytes.is_empty() => {
            bytes.remove(at(i, bytes.len()));
        }
        Mutation::Truncate(n) => bytes.truncate(at(n, bytes.len() + 1)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_state_round_trips_exactly(state in any_state()) {
        let bytes = state.encode();
        prop_assert_eq!(ClientState::decode(&bytes), Ok(state));
    }

    #[test]
    fn any_bytes_decode_to_an_error_or_a_usable_state(
        format_byte in any::<bool>(),
        mut bytes in prop::collection::vec(any::<u8>(), 0..96),
    ) {
        if format_byte && !bytes.is_empty() {
            bytes[0] = FORMAT;
        }
        assert_usable(&bytes);
    }

    #[test]
    fn mutated_encodings_decode_to_an_error_or_a_usable_state(
        state in any_state(),
        mutations in prop::collection::vec(any_mutation(), 1..4),
    ) {
        let mut bytes = state.encode();
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        assert_usable(&bytes);
    }
}

//! A compact, versioned binary encoding of [`ClientState`], for stores that persist it
//! (SQLite, and stores of your own; the Redis script keeps its own text encoding).
//!
//! Layout of formats 1 and 2 (integers are LEB128 varints unless said otherwise):
//!
//! ```text
//! format: u8 = 1, or 2 when a log holds bounded windows
//! last_seen
//! ban: u8 (0 = none, 1 = some, 2 = some with its start)
//!      [until, reason: u8 (0 reported, 1 operator, 2 punished, 3 probe), [since if 2]]
//! offences: times
//! offences_expire
//! scopes: count, then each: id: u64 little-endian, kind: u8
//!   0 = sliding log: times, expires, and in format 2 only: windows
//!   1 = policy: window_start, count, carry, blocked_until, block_count, punished_until,
//!       punishments, last_request, last_seen, last_block_at, grace_used_at, grace_window,
//!       expires
//! times: count, first time, then each next time as a zigzag varint of its wrapping
//!        difference from the previous one (so any u64 round-trips, and a log of requests
//!        a few milliseconds apart costs one or two bytes per entry)
//! windows: count, then each: width, base, count of parts, then each part: the offset of its
//!          sub-window from base, units (the bounded window of a rule of a large count)
//! ```
//!
//! A state without bounded windows is written in format 1, which older versions read.
//!
//! Decoding checks every byte: truncated input, trailing bytes, an unknown format, tag or
//! reason, an over-long varint or a count larger than the input could hold are errors, never
//! panics, and never allocate more than the input's size.

use crate::error::DecodeError;
use crate::state::{
    BanReason, ClientState, Log, PolicyState, Scope, ScopeId, Times, Window, Windows,
};

/// The format written by [`ClientState::encode`] for a state without bounded windows.
const FORMAT: u8 = 1;
/// The format written when a log holds bounded windows.
const FORMAT_WINDOWS: u8 = 2;

impl ClientState {
    /// Encodes this state in floodgate's compact binary format (see [`ClientState::decode`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use floodgate::{BanRule, ClientState, Timestamp};
    /// use std::time::Duration;
    ///
    /// let mut state = ClientState::new();
    /// state.report(&BanRule::new(3, Duration::from_secs(10), Duration::from_secs(60)),
    ///              Timestamp::from_millis(1_000));
    /// let bytes = state.encode();
    /// assert_eq!(ClientState::decode(&bytes).unwrap(), state);
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let offences = self.offences();
        let mut out = Vec::with_capacity(32 + 8 * offences.map_or(0, |(o, _)| o.len()));
        let windows = self
            .scopes
            .iter()
            .any(|(_, s)| matches!(s, Scope::Log(log) if log.windows.is_some()));
        out.push(if windows { FORMAT_WINDOWS } else { FORMAT });
        put(&mut out, self.last_seen);
        match self.ban_slot() {
            None => out.push(0),
            Some((until, reason)) => {
                // Tag 1 (no start) keeps states of bans without a known start byte-identical
                // to what earlier versions wrote.
                let since = self.ban_since_ms();
                out.push(if since == 0 { 1 } else { 2 });
                put(&mut out, until);
                out.push(match reason {
                    BanReason::Reported => 0,
                    BanReason::Operator => 1,
                    BanReason::Punished => 2,
                    BanReason::Probe => 3,
                });
                if since != 0 {
                    put(&mut out, since);
                }
            }
        }
        match offences {
            Some((times, expire)) => {
                put_times(&mut out, times);
                put(&mut out, expire);
            }
            None => {
                put_times(&mut out, &Times::default());
                put(&mut out, 0);
            }
        }
        put(&mut out, self.scopes.len() as u64);
        for (id, scope) in self.scopes.iter() {
            out.extend_from_slice(&id.0.to_le_bytes());
            match scope {
                Scope::Log(log) => {
                    out.push(0);
                    put_times(&mut out, &log.times);
                    put(&mut out, log.expires);
                    if windows {
                        put_windows(&mut out, log.windows.as_deref());
                    }
                }
                Scope::Policy(p) => {
                    out.push(1);
                    for v in [
                        p.window_start,
                        u64::from(p.count),
                        u64::from(p.carry),
                        p.blocked_until,
                        u64::from(p.block_count),
                        p.punished_until,
                        u64::from(p.punishments),
                        p.last_request,
                        p.last_seen,
                        p.last_block_at,
                        p.grace_used_at,
                        p.grace_window,
                        p.expires,
                    ] {
                        put(&mut out, v);
                    }
                }
            }
        }
        out
    }

    /// Decodes bytes written by [`ClientState::encode`]. Corrupt, truncated or unknown input is
    /// an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<ClientState, DecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let format = r.byte("format")?;
        if format != FORMAT && format != FORMAT_WINDOWS {
            return Err(DecodeError::new(format!(
                "unknown format {format} (this version reads formats {FORMAT} and {FORMAT_WINDOWS})"
            )));
        }
        let last_seen = r.varint("last_seen")?;
        let mut since = 0;
        let ban = match r.byte("ban")? {
            0 => None,
            tag @ (1 | 2) => {
                let until = r.varint("ban until")?;
                let reason = match r.byte("ban reason")? {
                    0 => BanReason::Reported,
                    1 => BanReason::Operator,
                    2 => BanReason::Punished,
                    3 => BanReason::Probe,
                    n => return Err(DecodeError::new(format!("unknown ban reason {n}"))),
                };
                if tag == 2 {
                    since = r.varint("ban since")?;
                }
                Some((until, reason))
            }
            n => return Err(DecodeError::new(format!("unknown ban tag {n}"))),
        };
        let offences = r.times("offences")?;
        let offences_expire = r.varint("offences_expire")?;
        // Each scope takes at least 9 bytes (its id and kind).
        let count = r.count("scopes", 9)?;
        let mut scopes = Vec::with_capacity(count);
        for _ in 0..count {
            let id = ScopeId(r.u64_le("scope id")?);
            let scope = match r.byte("scope kind")? {
                0 => Scope::Log(Log {
                    times: r.times("log")?,
                    expires: r.varint("log expires")?,
                    windows: if format == FORMAT_WINDOWS {
                        r.windows()?
                    } else {
                        None
                    },
                }),
                1 => Scope::Policy(Box::new(PolicyState {
                    window_start: r.varint("window_start")?,
                    count: r.u32("count")?,
                    carry: r.u32("carry")?,
                    blocked_until: r.varint("blocked_until")?,
                    block_count: r.u32("block_count")?,
                    punished_until: r.varint("punished_until")?,
                    punishments: r.u32("punishments")?,
                    last_request: r.varint("last_request")?,
                    last_seen: r.varint("policy last_seen")?,
                    last_block_at: r.varint("last_block_at")?,
                    grace_used_at: r.varint("grace_used_at")?,
                    grace_window: r.varint("grace_window")?,
                    expires: r.varint("policy expires")?,
                })),
                n => return Err(DecodeError::new(format!("unknown scope kind {n}"))),
            };
            scopes.push((id, scope));
        }
        if r.pos != bytes.len() {
            return Err(DecodeError::new(format!(
                "{} trailing bytes",
                bytes.len() - r.pos
            )));
        }
        let mut state = ClientState::from_parts(last_seen, ban, offences, offences_expire, scopes);
        state.set_ban_since(since);
        Ok(state)
    }
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_times(out: &mut Vec<u8>, times: &Times) {
    put(out, times.len() as u64);
    let mut prev = 0u64;
    for t in times.iter() {
        let delta = t.wrapping_sub(prev) as i64;
        put(out, ((delta << 1) ^ (delta >> 63)) as u64);
        prev = t;
    }
}

fn put_windows(out: &mut Vec<u8>, windows: Option<&Windows>) {
    let list = windows.map_or(&[][..], |ws| &ws.0[..]);
    put(out, list.len() as u64);
    for w in list {
        put(out, w.width);
        put(out, w.base);
        let parts: Vec<(u64, u32)> = w.parts().collect();
        put(out, parts.len() as u64);
        for (j, n) in parts {
            put(out, j - w.base);
            put(out, u64::from(n));
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self, what: &str) -> Result<u8, DecodeError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| DecodeError::new(format!("truncated at {what}")))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self, what: &str) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::new(format!("{what} overflows 64 bits")));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::new(format!("{what} overflows 64 bits")))
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        u32::try_from(self.varint(what)?)
            .map_err(|_| DecodeError::new(format!("{what} overflows 32 bits")))
    }

    fn u64_le(&mut self, what: &str) -> Result<u64, DecodeError> {
        let end = self.pos + 8;
        let raw = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| DecodeError::new(format!("truncated at {what}")))?;
        let mut buf = [0u8; 8];
        buf.copy_from_slice(raw);
        self.pos = end;
        Ok(u64::from_le_bytes(buf))
    }

    /// A count of items that take at least `min_size` bytes each: no larger than the rest of
    /// the input could hold, so that a corrupt count cannot make us allocate much.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize, DecodeError> {
        let n = self.varint(what)?;
        let room = (self.bytes.len() - self.pos) / min_size;
        match usize::try_from(n) {
            Ok(n) if n <= room => Ok(n),
            _ => Err(DecodeError::new(format!(
                "{what}: count {n} exceeds the remaining input"
            ))),
        }
    }

    fn windows(&mut self) -> Result<Option<Box<Windows>>, DecodeError> {
        // A window takes at least 3 bytes (width, base, part count); a part at least 2.
        let n = self.count("windows", 3)?;
        if n == 0 {
            return Ok(None);
        }
        let mut list = Vec::with_capacity(n);
        for _ in 0..n {
            let width = self.varint("window width")?;
            let base = self.varint("window base")?;
            let parts = self.count("window parts", 2)?;
            let mut units = Vec::with_capacity(parts);
            for _ in 0..parts {
                let offset = self.varint("window part")?;
                units.push((base.saturating_add(offset), self.u32("window units")?));
            }
            let w = Window::from_parts(width, base, units)
                .ok_or_else(|| DecodeError::new("window width 0"))?;
            list.push(w);
        }
        Ok(Some(Box::new(Windows(list.into_boxed_slice()))))
    }

    fn times(&mut self, what: &str) -> Result<Times, DecodeError> {
        let n = self.count(what, 1)?;
        let mut times = Vec::with_capacity(n);
        let mut prev = 0u64;
        for _ in 0..n {
            let z = self.varint(what)?;
            let delta = ((z >> 1) as i64) ^ -((z & 1) as i64);
            prev = prev.wrapping_add(delta as u64);
            times.push(prev);
        }
        Ok(times.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
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
                            Scope::Log(Log {
                                times: [u64::MAX, 0, v, 1_700_000_000_000].into_iter().collect(),
                                expires: v,
                                windows: None,
                            }),
                        ),
                        (ScopeId::GLOBAL, Scope::Policy(Box::new(policy(v, small)))),
                        (ScopeId(0), Scope::Log(Log::default())),
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
        let log = Log {
            times: (0..100).map(|i| 1_700_000_000_000 + i * 10).collect(),
            expires: 1_700_000_060_000,
            windows: None,
        };
        let state = ClientState::from_parts(
            0,
            None,
            Times::default(),
            0,
            vec![(ScopeId::GLOBAL, Scope::Log(log))],
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
            (any_times(40), any_time()).prop_map(|(times, expires)| Scope::Log(Log {
                times,
                expires,
                windows: None
            })),
            (any_times(8), any_time(), any_windows()).prop_map(|(times, expires, windows)| {
                Scope::Log(Log {
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
}

//! The calls of `redis.lua`: the arguments it reads (times, plans) and the replies it gives
//! (decisions, encoded states).

use std::fmt::Write as _;
use std::time::Duration;

use super::msgpack::{self, Value, Writer};

use crate::clock::{duration_millis, Timestamp};
use crate::error::StoreError;
use crate::state::{
    BanReason, ClientState, Decision, LimitReason, Plan, PolicyState, Quota, RuleLog, Scope,
    ScopeId, Times, Window, Windows,
};

/// The decision core in Lua (see the module docs).
pub(super) const SCRIPT: &str = include_str!("redis.lua");

/// Times and durations at or above this are "never" in the script: 2^53 ms (about 285,000
/// years), the last integer from which every smaller one is exact in a double. Clamping here
/// (`lua_time`, `push_time`) keeps every number the script adds below 2^54, so that huge
/// configured values (`Duration::MAX`) can neither make it fail nor round its arithmetic.
const LUA_NEVER: u64 = 1 << 53;

/// A time for the script: `-1` ("never") from [`LUA_NEVER`] up.
pub(super) fn lua_time(ms: u64) -> String {
    if ms >= LUA_NEVER {
        "-1".to_owned()
    } else {
        ms.to_string()
    }
}

pub(super) fn rust_time(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Appends a time or duration for the script, clamped as by [`lua_time`].
pub(super) fn push_time(out: &mut String, ms: u64) {
    if ms >= LUA_NEVER {
        out.push_str(" -1");
    } else {
        let _ = write!(out, " {ms}");
    }
}

/// A time for the script as a number: clamped to "never" ([`LUA_NEVER`]).
fn plan_time(w: &mut Writer, ms: u64) {
    w.uint(ms.min(LUA_NEVER));
}

/// An optional setting: `false` when unset.
fn plan_opt(w: &mut Writer, v: Option<u64>) {
    match v {
        Some(v) => plan_time(w, v),
        None => w.boolean(false),
    }
}

/// The plan as the script reads it: one MessagePack array (see `decode_plan` in `redis.lua`).
pub(super) fn encode_plan(plan: &Plan) -> Vec<u8> {
    let rules: usize = plan.logs.iter().map(|lp| 5 + 2 * lp.rules.len()).sum();
    let policy = if plan.policy.is_some() { 17 } else { 0 };
    let mut w = Writer::array(3 + rules + 1 + policy + 1);
    w.boolean(plan.ban_check);
    w.boolean(plan.count);
    w.uint(plan.logs.len() as u64);
    for lp in &plan.logs {
        w.short_str(&lp.scope.0.to_string());
        w.uint(lp.cap as u64);
        plan_time(&mut w, lp.longest_ms);
        w.uint(lp.first_limit as u64);
        w.uint(lp.rules.len() as u64);
        for rule in &lp.rules {
            w.uint(u64::from(rule.count()));
            plan_time(&mut w, rule.window_ms());
        }
    }
    w.boolean(plan.policy.is_some());
    if let Some(pp) = &plan.policy {
        let p = &pp.policy;
        w.short_str(&pp.scope.0.to_string());
        w.uint(pp.limit as u64);
        w.uint(u64::from(p.amount));
        plan_time(&mut w, p.time_window_ms);
        plan_time(&mut w, p.block_ms());
        w.uint(u64::from(p.block_limit));
        w.boolean(p.relative_block);
        w.boolean(p.block_exceed_reset);
        plan_opt(
            &mut w,
            match p.punishment {
                crate::policy::Punishment::Blacklist => None,
                crate::policy::Punishment::Ban(base) => Some(duration_millis(base)),
            },
        );
        plan_opt(&mut w, p.accumulate_cap.map(u64::from));
        plan_opt(&mut w, p.max_window_ms);
        plan_time(&mut w, p.cooldown_ms);
        plan_opt(&mut w, p.grace.map(|g| u64::from(g.extra)));
        plan_time(&mut w, p.grace.map_or(0, |g| duration_millis(g.interval)));
        match p.adaptive {
            Some(a) => {
                // Adaptive::length treats a factor that is not finite and above 1 as 1.
                let factor = if a.factor.is_finite() && a.factor > 1.0 {
                    a.factor
                } else {
                    1.0
                };
                w.float(factor);
                plan_time(&mut w, duration_millis(a.max));
                // The random extra is drawn here, as the other stores draw it for the core.
                plan_time(&mut w, a.jitter_millis(fastrand::u64(..)));
            }
            None => {
                w.boolean(false);
                w.uint(0);
                w.uint(0);
            }
        }
    }
    w.uint(u64::from(plan.units.max(1)));
    w.0
}

/// The script's code of a ban reason (see `decode` in `redis.lua`).
pub(super) fn ban_code(reason: BanReason) -> i64 {
    match reason {
        BanReason::Reported => 1,
        BanReason::Operator => 2,
        BanReason::Punished => 3,
        BanReason::Probe => 4,
    }
}

pub(super) fn ban_reason(code: i64) -> BanReason {
    match code {
        1 => BanReason::Reported,
        3 => BanReason::Punished,
        4 => BanReason::Probe,
        _ => BanReason::Operator,
    }
}

pub(super) fn until_of(ms: u64) -> Option<Timestamp> {
    (ms != u64::MAX).then_some(Timestamp::from_millis(ms))
}

pub(super) fn malformed(what: &str, reply: &[i64]) -> StoreError {
    StoreError::new(format!("malformed {what} reply from Redis: {reply:?}"))
}

pub(super) fn decision_of(reply: &[i64]) -> Result<Decision, StoreError> {
    let at = |i: usize| {
        reply
            .get(i)
            .copied()
            .ok_or_else(|| malformed("check", reply))
    };
    let to_usize = |v: i64| usize::try_from(v).map_err(|_| malformed("check", reply));
    Ok(match at(0)? {
        0 => Decision::Allowed {
            quota: if at(1)? == 0 {
                None
            } else {
                Some(Quota {
                    limit: to_usize(at(2)?)?,
                    remaining: u32::try_from(at(3)?).unwrap_or(0),
                    reset: Duration::from_millis(rust_time(at(4)?)),
                })
            },
        },
        1 => Decision::Limited {
            reason: match at(1)? {
                0 => LimitReason::Rule,
                1 => LimitReason::Blocked,
                _ => LimitReason::Cooldown,
            },
            limit: to_usize(at(2)?)?,
            retry_after: Duration::from_millis(rust_time(at(3)?)),
            started: at(4)? != 0,
        },
        2 => Decision::Banned {
            until: until_of(rust_time(at(1)?)),
            reason: ban_reason(at(2)?),
            started: at(3)? != 0,
        },
        _ => return Err(malformed("check", reply)),
    })
}

/// The fields of a stored state, from either encoding the script has written.
trait Fields<'a> {
    /// A plain integer (a count, a code, a width).
    fn int(&mut self) -> Option<i64>;
    /// A time or duration; "never" reads as `u64::MAX`.
    fn time(&mut self) -> Option<u64>;
    /// A scope's kind or id.
    fn text(&mut self) -> Option<&'a str>;

    fn count(&mut self) -> Option<usize> {
        usize::try_from(self.int()?).ok()
    }
}

/// Versions 1 and 2: space-separated text, `-1` for never.
impl<'a, I: Iterator<Item = &'a str>> Fields<'a> for I {
    fn int(&mut self) -> Option<i64> {
        self.next()?.parse().ok()
    }

    fn time(&mut self) -> Option<u64> {
        Some(rust_time(self.int()?))
    }

    fn text(&mut self) -> Option<&'a str> {
        self.next()
    }
}

/// Version 3: a MessagePack array, numbers as numbers, "never" as 2^53 ([`LUA_NEVER`]).
impl<'a> Fields<'a> for msgpack::Reader<'a> {
    fn int(&mut self) -> Option<i64> {
        match self.next_value()? {
            Value::Int(v) => i64::try_from(v).ok(),
            // cmsgpack writes a whole number held in a double as an integer; accept one
            // written as a float all the same.
            Value::Float(v) if v.fract() == 0.0 && v.abs() < 9e15 => Some(v as i64),
            _ => None,
        }
    }

    fn time(&mut self) -> Option<u64> {
        let v = self.int()?;
        Some(match u64::try_from(v) {
            Ok(ms) if ms < LUA_NEVER => ms,
            _ => u64::MAX,
        })
    }

    fn text(&mut self) -> Option<&'a str> {
        match self.next_value()? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Reads a client state as the script stores it (see `decode` in `redis.lua`): version 3,
/// or the text of versions 1 and 2 that earlier releases wrote.
pub(super) fn decode_state(blob: &[u8]) -> Option<ClientState> {
    match blob.first()? {
        b'1' | b'2' => {
            let mut t = std::str::from_utf8(blob).ok()?.split_ascii_whitespace();
            let windows = match t.next()? {
                "1" => false,
                "2" => true,
                _ => return None,
            };
            decode_fields(&mut t, windows)
        }
        _ => {
            let mut r = msgpack::Reader::array(blob)?;
            if r.int()? != 3 {
                return None;
            }
            let state = decode_fields(&mut r, true)?;
            r.finished().then_some(state)
        }
    }
}

/// Everything after the version: "last_seen ban_until ban_reason offences_expire n_off off..
/// n_scopes scope.." (see `decode` in `redis.lua`).
fn decode_fields<'a>(t: &mut impl Fields<'a>, windows: bool) -> Option<ClientState> {
    let last_seen = t.time()?;
    let ban_until = t.time()?;
    let reason = t.int()?;
    let ban = (reason != 0).then(|| (ban_until, ban_reason(reason)));
    let offences_expire = t.time()?;
    let n = t.count()?;
    let offences = (0..n).map(|_| t.time()).collect::<Option<Times>>()?;
    let count = t.count()?;
    let mut scopes = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let kind = t.text()?;
        let id = ScopeId(t.text()?.parse().ok()?);
        let scope = if kind == "L" {
            let expires = t.time()?;
            let n = t.count()?;
            let times = (0..n).map(|_| t.time()).collect::<Option<Times>>()?;
            let windows = if windows { decode_windows(t)? } else { None };
            Scope::RuleLog(RuleLog {
                times,
                expires,
                windows,
            })
        } else {
            let mut f = [0u64; 13];
            for v in &mut f {
                *v = t.time()?;
            }
            let small = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            Scope::Policy(Box::new(PolicyState {
                window_start: f[0],
                count: small(f[1]),
                carry: small(f[2]),
                blocked_until: f[3],
                block_count: small(f[4]),
                punished_until: f[5],
                punishments: small(f[6]),
                last_request: f[7],
                last_seen: f[8],
                last_block_at: f[9],
                grace_used_at: f[10],
                grace_window: f[11],
                expires: f[12],
            }))
        };
        scopes.push((id, scope));
    }
    Some(ClientState::from_parts(
        last_seen,
        ban,
        offences,
        offences_expire,
        scopes,
    ))
}

/// The bounded windows of one log: "nw (width base np (offset units)*)*".
fn decode_windows<'a>(t: &mut impl Fields<'a>) -> Option<Option<Box<Windows>>> {
    let n = t.count()?;
    if n == 0 {
        return Some(None);
    }
    let mut list = Vec::with_capacity(n.min(8));
    for _ in 0..n {
        let width = u64::try_from(t.int()?).ok()?;
        let base = u64::try_from(t.int()?).ok()?;
        let parts = t.count()?;
        let mut units = Vec::with_capacity(parts.min(64));
        for _ in 0..parts {
            let offset = u64::try_from(t.int()?).ok()?;
            units.push((base.saturating_add(offset), u32::try_from(t.int()?).ok()?));
        }
        list.push(Window::from_parts(width, base, units)?);
    }
    Some(Some(Box::new(Windows(list.into_boxed_slice()))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Adaptive, Grace, Policy, Punishment};
    use crate::rules::Rule;

    #[test]
    fn state_encoding_round_trips_through_the_rust_decoder() {
        let blob = "1 1700000000000 -1 2 0 2 5 6 2 L 42 1700000060000 2 1 2 P 7 1 2 3 4 5 6 7 8 9 10 11 12 -1";
        let st = decode_state(blob.as_bytes()).unwrap();
        assert_eq!(st.ban_slot(), Some((u64::MAX, BanReason::Operator)));
        assert_eq!(st.offences().unwrap().0, &[5, 6]);
        assert_eq!(st.scopes.len(), 2);
        let Scope::Policy(p) = &st.scopes[1].1 else {
            panic!("policy")
        };
        assert_eq!(
            (p.window_start, p.grace_window, p.expires),
            (1, 12, u64::MAX)
        );
        assert!(decode_state(b"3 whatever").is_none());
        // Format 2: a log with the bounded window of a rule of 1,000 per minute.
        let blob = "2 1700000000000 0 0 0 0 1 L 42 1700000060000 0 1 1000 1700000000 2 0 7 61 3";
        let st = decode_state(blob.as_bytes()).unwrap();
        let Scope::RuleLog(log) = &st.scopes[0].1 else {
            panic!("log")
        };
        let w = &log.windows.as_ref().unwrap().0[0];
        let parts: Vec<_> = w.parts().collect();
        assert_eq!(
            parts,
            [(1_700_000_000, 7)],
            "offsets past the ring are dropped"
        );
        assert!(
            decode_state(b"2 1 0 0 0 0 1 L 42 5 0 1 0 1 0").is_none(),
            "width 0"
        );
        assert!(decode_state(b"1 5").is_none());
    }

    /// A version 3 value as the script writes it (see `encode` in `redis.lua`): a log with
    /// one time and the window of a rule of 1,000 per minute, and a policy.
    fn version_3() -> Vec<u8> {
        let mut w = Writer::array(34);
        for v in [3, 1_700_000_000_000, 1 << 53, 3, 0, 1, 1_699_999_999_000, 2] {
            w.uint(v);
        }
        w.short_str("L");
        w.short_str("42");
        for v in [
            1_700_000_060_000,
            1,
            1_700_000_000_000,
            1,
            1_000,
            1_699_999,
            1,
            1,
            7,
        ] {
            w.uint(v);
        }
        w.short_str("P");
        w.short_str("18446744073709551615");
        for v in 1..=12 {
            w.uint(v);
        }
        w.uint(1 << 53);
        w.0
    }

    #[test]
    fn version_3_values_decode_and_damaged_ones_are_refused() {
        let blob = version_3();
        let st = decode_state(&blob).unwrap();
        assert_eq!(st.ban_slot(), Some((u64::MAX, BanReason::Punished)));
        assert_eq!(st.offences().unwrap().0, &[1_699_999_999_000]);
        let Scope::RuleLog(log) = &st.scopes[0].1 else {
            panic!("log")
        };
        assert_eq!((log.expires, log.times.len()), (1_700_000_060_000, 1));
        let w = &log.windows.as_ref().unwrap().0[0];
        assert_eq!(w.parts().collect::<Vec<_>>(), [(1_700_000, 7)]);
        assert_eq!(st.scopes[1].0, ScopeId(u64::MAX));
        let Scope::Policy(p) = &st.scopes[1].1 else {
            panic!("policy")
        };
        assert_eq!((p.window_start, p.expires), (1, u64::MAX));
        // Every truncation, a trailing byte, another version: no state, and no panic.
        for end in 0..blob.len() {
            assert!(decode_state(&blob[..end]).is_none(), "cut at {end}");
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert!(decode_state(&longer).is_none());
        let mut other = blob.clone();
        other[3] = 4;
        assert!(decode_state(&other).is_none());
    }

    #[test]
    fn plans_encode_every_setting_the_script_reads() {
        let plan = Plan::new(
            [(ScopeId(9), vec![Rule::new(3, Duration::from_secs(10))])],
            Some((
                ScopeId(11),
                Policy::new(2, Duration::from_secs(60))
                    .punishment(Punishment::Blacklist)
                    .grace(Grace {
                        extra: 1,
                        interval: Duration::from_secs(5),
                    })
                    .adaptive(Adaptive {
                        factor: 0.5,
                        max: Duration::from_secs(9),
                        jitter: Duration::ZERO,
                    })
                    .max_window_duration(None),
            )),
        );
        let plan_bytes = encode_plan(&plan);
        let mut r = msgpack::Reader::array(&plan_bytes).unwrap();
        let values: Vec<Value> = std::iter::from_fn(|| r.next_value()).collect();
        assert!(r.finished());
        use Value::{Bool as B, Float as F, Int as I, Str as S};
        let scope = |id: u64| id.to_string();
        let (s9, s11) = (scope(9), scope(11));
        assert_eq!(
            values,
            [
                B(true),
                B(true),
                I(1),
                // the log: scope, cap, longest, first limit, its rules (count, window)
                S(&s9),
                I(3),
                I(10_000),
                I(0),
                I(1),
                I(3),
                I(10_000),
                // the policy
                B(true),
                S(&s11),
                I(1),
                I(2),
                I(60_000),
                I(60_000),
                I(5),
                B(false),
                B(true),
                B(false), // blacklist
                B(false), // no accumulation cap
                B(false), // no max window
                I(0),
                I(1),
                I(5_000),
                F(1.0), // a factor below 1 is 1
                I(9_000),
                I(0),
                // units
                I(1),
            ]
        );
        // A request's cost (units) comes last; durations past 2^53 ms are "never".
        let costly = encode_plan(&plan.with_units(5));
        assert_eq!(costly.last(), Some(&5));
        let forever = Plan::new([(ScopeId(9), vec![Rule::new(3, Duration::MAX)])], None);
        let bytes = encode_plan(&forever);
        let mut r = msgpack::Reader::array(&bytes).unwrap();
        let values: Vec<Value> = std::iter::from_fn(|| r.next_value()).collect();
        assert_eq!(values[5], I(i128::from(LUA_NEVER)), "longest");
        assert_eq!(values[9], I(i128::from(LUA_NEVER)), "window");
    }
}

//! The calls of `redis.lua`: the arguments it reads (times, plans) and the replies it gives
//! (decisions, encoded states).

use std::fmt::Write as _;
use std::time::Duration;

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

/// The plan in the script's argument format (see `decode_plan` in `redis.lua`).
pub(super) fn encode_plan(plan: &Plan) -> String {
    let mut out = String::with_capacity(64);
    out.push_str(if plan.ban_check { "1" } else { "0" });
    out.push_str(if plan.count { " 1" } else { " 0" });
    let _ = write!(out, " {}", plan.logs.len());
    for lp in &plan.logs {
        let _ = write!(out, " {} {}", lp.scope.0, lp.cap);
        push_time(&mut out, lp.longest_ms);
        let _ = write!(out, " {} {}", lp.first_limit, lp.rules.len());
        for rule in &lp.rules {
            let _ = write!(out, " {}", rule.count());
            push_time(&mut out, rule.window_ms());
        }
    }
    match &plan.policy {
        None => out.push_str(" 0"),
        Some(pp) => {
            let p = &pp.policy;
            let _ = write!(out, " 1 {} {} {}", pp.scope.0, pp.limit, p.amount);
            push_time(&mut out, p.time_window_ms);
            push_time(&mut out, p.block_ms());
            let _ = write!(
                out,
                " {} {} {}",
                p.block_limit,
                u8::from(p.relative_block),
                u8::from(p.block_exceed_reset)
            );
            match p.punishment {
                crate::policy::Punishment::Blacklist => out.push_str(" b"),
                crate::policy::Punishment::Ban(base) => push_time(&mut out, duration_millis(base)),
            }
            match p.accumulate_cap {
                Some(cap) => {
                    let _ = write!(out, " {cap}");
                }
                None => out.push_str(" n"),
            }
            match p.max_window_ms {
                Some(ms) => push_time(&mut out, ms),
                None => out.push_str(" n"),
            }
            push_time(&mut out, p.cooldown_ms);
            match p.grace {
                Some(g) => {
                    let _ = write!(out, " {}", g.extra);
                    push_time(&mut out, duration_millis(g.interval));
                }
                None => out.push_str(" n 0"),
            }
            match p.adaptive {
                Some(a) => {
                    // Adaptive::length treats a factor that is not finite and above 1 as 1.
                    let factor = if a.factor.is_finite() && a.factor > 1.0 {
                        a.factor
                    } else {
                        1.0
                    };
                    let _ = write!(out, " {factor:?}");
                    push_time(&mut out, duration_millis(a.max));
                    // The random extra is drawn here, as the other stores draw it for the core.
                    push_time(&mut out, a.jitter_millis(fastrand::u64(..)));
                }
                None => out.push_str(" n 0 0"),
            }
        }
    }
    let _ = write!(out, " {}", plan.units.max(1));
    out
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

/// Reads a client state in the script's encoding (see `decode` in `redis.lua`).
pub(super) fn decode_state(blob: &str) -> Option<ClientState> {
    let mut t = blob.split_ascii_whitespace();
    let windows = match t.next()? {
        "1" => false,
        "2" => true,
        _ => return None,
    };
    let time = |s: &str| -> Option<u64> {
        let v: i64 = s.parse().ok()?;
        Some(rust_time(v))
    };
    let last_seen = time(t.next()?)?;
    let ban_until = time(t.next()?)?;
    let reason: i64 = t.next()?.parse().ok()?;
    let ban = (reason != 0).then(|| (ban_until, ban_reason(reason)));
    let offences_expire = time(t.next()?)?;
    let n: usize = t.next()?.parse().ok()?;
    let offences = (0..n).map(|_| time(t.next()?)).collect::<Option<Times>>()?;
    let count: usize = t.next()?.parse().ok()?;
    let mut scopes = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let kind = t.next()?;
        let id = ScopeId(t.next()?.parse().ok()?);
        let scope = if kind == "L" {
            let expires = time(t.next()?)?;
            let n: usize = t.next()?.parse().ok()?;
            let times = (0..n).map(|_| time(t.next()?)).collect::<Option<Times>>()?;
            let windows = if windows {
                decode_windows(&mut t)?
            } else {
                None
            };
            Scope::RuleLog(RuleLog {
                times,
                expires,
                windows,
            })
        } else {
            let mut f = [0u64; 13];
            for v in &mut f {
                *v = time(t.next()?)?;
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
fn decode_windows<'a>(t: &mut impl Iterator<Item = &'a str>) -> Option<Option<Box<Windows>>> {
    let n: usize = t.next()?.parse().ok()?;
    if n == 0 {
        return Some(None);
    }
    let mut list = Vec::with_capacity(n.min(8));
    for _ in 0..n {
        let width: u64 = t.next()?.parse().ok()?;
        let base: u64 = t.next()?.parse().ok()?;
        let parts: usize = t.next()?.parse().ok()?;
        let mut units = Vec::with_capacity(parts.min(64));
        for _ in 0..parts {
            let offset: u64 = t.next()?.parse().ok()?;
            units.push((base.saturating_add(offset), t.next()?.parse().ok()?));
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
        let st = decode_state(blob).unwrap();
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
        assert!(decode_state("3 whatever").is_none());
        // Format 2: a log with the bounded window of a rule of 1,000 per minute.
        let blob = "2 1700000000000 0 0 0 0 1 L 42 1700000060000 0 1 1000 1700000000 2 0 7 61 3";
        let st = decode_state(blob).unwrap();
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
            decode_state("2 1 0 0 0 0 1 L 42 5 0 1 0 1 0").is_none(),
            "width 0"
        );
        assert!(decode_state("1 5").is_none());
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
        assert_eq!(
            encode_plan(&plan),
            "1 1 1 9 3 10000 0 1 3 10000 1 11 1 2 60000 60000 5 0 1 b n n 0 1 5000 1.0 9000 0 1"
        );
        // A request's cost (units) comes last.
        assert!(encode_plan(&plan.with_units(5)).ends_with(" 9000 0 5"));
    }
}

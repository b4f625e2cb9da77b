//! The calls of `redis.lua`: the arguments it reads (times, plans) and the replies it gives
//! (decisions, encoded states).

use std::fmt::Write as _;
use std::time::Duration;

use super::msgpack::Writer;

use crate::clock::{duration_millis, Timestamp};
use crate::error::StoreError;
use crate::state::{BanReason, Decision, LimitReason, Plan, Quota};

/// The decision core in Lua (see the module docs).
pub(super) const SCRIPT: &str = include_str!("redis.lua");

/// Times and durations at or above this are "never" in the script: 2^53 ms (about 285,000
/// years), the last integer from which every smaller one is exact in a double. Clamping here
/// (`lua_time`, `push_time`) keeps every number the script adds below 2^54, so that huge
/// configured values (`Duration::MAX`) can neither make it fail nor round its arithmetic.
pub(super) const LUA_NEVER: u64 = 1 << 53;

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
fn time_field(w: &mut Writer, key: &str, ms: u64) {
    w.short_str(key);
    w.uint(ms.min(LUA_NEVER));
}

fn bool_field(w: &mut Writer, key: &str, v: bool) {
    w.short_str(key);
    w.boolean(v);
}

/// The plan as the script reads it: the MessagePack of the Lua table that `decode_plan` in
/// `redis.lua` describes.
pub(super) fn encode_plan(plan: &Plan) -> Vec<u8> {
    let mut w = Writer::default();
    w.map(if plan.policy.is_some() { 5 } else { 4 });
    bool_field(&mut w, "ban_check", plan.ban_check);
    bool_field(&mut w, "count", plan.count);
    time_field(&mut w, "units", u64::from(plan.units.max(1)));
    w.short_str("logs");
    w.array(plan.logs.len());
    for lp in &plan.logs {
        w.map(6);
        w.short_str("scope");
        w.short_str(&lp.scope.0.to_string());
        time_field(&mut w, "cap", lp.cap as u64);
        time_field(&mut w, "longest", lp.longest_ms);
        time_field(&mut w, "first", lp.first_limit as u64);
        time_field(&mut w, "bounded", lp.bounded as u64);
        w.short_str("rules");
        w.array(lp.rules.len());
        for rule in &lp.rules {
            w.map(2);
            time_field(&mut w, "count", u64::from(rule.count()));
            time_field(&mut w, "window", rule.window_ms());
        }
    }
    if let Some(pp) = &plan.policy {
        let p = &pp.policy;
        let ban_base = match p.punishment {
            crate::policy::Punishment::Blacklist => None,
            crate::policy::Punishment::Ban(base) => Some(duration_millis(base)),
        };
        // Adaptive::length treats a factor that is not finite and above 1 as 1.
        let factor = p.adaptive.map(|a| {
            if a.factor.is_finite() && a.factor > 1.0 {
                a.factor
            } else {
                1.0
            }
        });
        let optional = [
            ("ban_base", ban_base),
            ("acc_cap", p.accumulate_cap.map(u64::from)),
            ("max_window", p.max_window_ms),
            ("grace_extra", p.grace.map(|g| u64::from(g.extra))),
        ];
        let present = optional.iter().filter(|(_, v)| v.is_some()).count();
        w.short_str("policy");
        w.map(12 + present + usize::from(factor.is_some()));
        w.short_str("scope");
        w.short_str(&pp.scope.0.to_string());
        time_field(&mut w, "limit", pp.limit as u64);
        time_field(&mut w, "amount", u64::from(p.amount));
        time_field(&mut w, "window", p.time_window_ms);
        time_field(&mut w, "block_ms", p.block_ms());
        time_field(&mut w, "block_limit", u64::from(p.block_limit));
        bool_field(&mut w, "relative", p.relative_block);
        bool_field(&mut w, "reset", p.block_exceed_reset);
        for (key, v) in optional {
            if let Some(v) = v {
                time_field(&mut w, key, v);
            }
        }
        time_field(&mut w, "cooldown", p.cooldown_ms);
        time_field(
            &mut w,
            "grace_interval",
            p.grace.map_or(0, |g| duration_millis(g.interval)),
        );
        if let Some(factor) = factor {
            w.short_str("factor");
            w.float(factor);
        }
        let max = p.adaptive.map_or(0, |a| duration_millis(a.max));
        time_field(&mut w, "adaptive_max", max);
        // The random extra is drawn here, as the other stores draw it for the core.
        let jitter = p.adaptive.map_or(0, |a| a.jitter_millis(fastrand::u64(..)));
        time_field(&mut w, "jitter", jitter);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Adaptive, Grace, Policy, Punishment};
    use crate::rules::Rule;
    use crate::state::ScopeId;
    use crate::store::redis::msgpack::{self, Value};

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
        let bytes = encode_plan(&plan);
        let values = msgpack::read_all(&bytes).unwrap();
        let [plan_table] = values.as_slice() else {
            panic!("{values:?}")
        };
        let int = |v: &Value, k: &str| v.get(k).and_then(Value::int);
        let (b_true, b_false) = (Some(&Value::Bool(true)), Some(&Value::Bool(false)));
        assert_eq!(plan_table.get("ban_check"), b_true);
        assert_eq!(plan_table.get("count"), b_true);
        assert_eq!(int(plan_table, "units"), Some(1));
        let logs = plan_table.get("logs").and_then(Value::items).unwrap();
        let log = &logs[0];
        assert_eq!(log.get("scope"), Some(&Value::Str("9")));
        let log_fields = ["cap", "longest", "first", "bounded"].map(|k| int(log, k));
        assert_eq!(log_fields, [Some(3), Some(10_000), Some(0), Some(0)]);
        let rules = log.get("rules").and_then(Value::items).unwrap();
        assert_eq!(
            (int(&rules[0], "count"), int(&rules[0], "window")),
            (Some(3), Some(10_000))
        );
        let policy = plan_table.get("policy").unwrap();
        assert_eq!(policy.get("scope"), Some(&Value::Str("11")));
        let fields = [
            "limit",
            "amount",
            "window",
            "block_ms",
            "block_limit",
            "cooldown",
            "grace_extra",
            "grace_interval",
            "adaptive_max",
            "jitter",
        ]
        .map(|k| int(policy, k));
        let expected = [1, 2, 60_000, 60_000, 5, 0, 1, 5_000, 9_000, 0].map(Some);
        assert_eq!(fields, expected);
        assert_eq!(policy.get("relative"), b_false);
        assert_eq!(policy.get("reset"), b_true);
        // A factor below 1 is 1; a blacklist has no ban base; unset settings are absent.
        assert_eq!(policy.get("factor"), Some(&Value::Float(1.0)));
        for absent in ["ban_base", "acc_cap", "max_window"] {
            assert_eq!(policy.get(absent), None, "{absent}");
        }
        // A request's cost (units); durations past 2^53 ms are "never".
        let costly = encode_plan(&plan.with_units(5));
        let costly = msgpack::read_all(&costly).unwrap();
        assert_eq!(int(&costly[0], "units"), Some(5));
        let forever = Plan::new([(ScopeId(9), vec![Rule::new(3, Duration::MAX)])], None);
        let bytes = encode_plan(&forever);
        let values = msgpack::read_all(&bytes).unwrap();
        assert_eq!(values[0].get("policy"), None);
        let log = &values[0].get("logs").and_then(Value::items).unwrap()[0];
        assert_eq!(int(log, "longest"), Some(i128::from(LUA_NEVER)));
        let rule = &log.get("rules").and_then(Value::items).unwrap()[0];
        assert_eq!(int(rule, "window"), Some(i128::from(LUA_NEVER)));
    }
}

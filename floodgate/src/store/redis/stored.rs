//! The client state as `redis.lua` stores it, read back for [`Store::state`](crate::Store::state):
//! version 3 (MessagePack, see `decode` in `redis.lua`), and the text of versions 1 and 2
//! that earlier releases wrote, which a deployment upgrading still holds.

use super::msgpack::{self, Value};
use super::script::{ban_reason, rust_time, LUA_NEVER};
use crate::state::{ClientState, PolicyState, RuleLog, Scope, ScopeId, Times, Window, Windows};

/// Reads a client state as the script stores it; `None` when the value is not one.
pub(super) fn decode_state(blob: &[u8]) -> Option<ClientState> {
    match blob.first()? {
        b'1' | b'2' => decode_text(std::str::from_utf8(blob).ok()?),
        _ => decode_packed(blob),
    }
}

/// A time or duration of version 3: "never" is 2^53 ([`LUA_NEVER`]) and up.
fn time(v: &Value<'_>) -> Option<u64> {
    Some(match u64::try_from(v.int()?) {
        Ok(ms) if ms < LUA_NEVER => ms,
        _ => u64::MAX,
    })
}

fn times(v: &Value<'_>) -> Option<Times> {
    v.items()?.iter().map(time).collect()
}

/// Version 3: the values 3 and the script's state table (see `decode` in `redis.lua`).
fn decode_packed(blob: &[u8]) -> Option<ClientState> {
    let values = msgpack::read_all(blob)?;
    let [version, st] = values.as_slice() else {
        return None;
    };
    if version.int()? != 3 {
        return None;
    }
    let ban_until = time(st.get("ban_until")?)?;
    let reason = i64::try_from(st.get("ban_reason")?.int()?).ok()?;
    let ban = (reason != 0).then(|| (ban_until, ban_reason(reason)));
    let scopes = st.get("scopes")?.items()?;
    let mut parts = Vec::with_capacity(scopes.len());
    for s in scopes {
        let Value::Str(id) = s.get("id")? else {
            return None;
        };
        let id = ScopeId(id.parse().ok()?);
        let scope = if *s.get("kind")? == Value::Str("L") {
            Scope::RuleLog(RuleLog {
                times: times(s.get("times")?)?,
                expires: time(s.get("expires")?)?,
                windows: match s.get("wins") {
                    Some(wins) => packed_windows(wins)?,
                    None => None,
                },
            })
        } else {
            let t = |k: &str| time(s.get(k)?);
            let small = |k: &str| Some(u32::try_from(t(k)?).unwrap_or(u32::MAX));
            Scope::Policy(Box::new(PolicyState {
                window_start: t("window_start")?,
                count: small("count")?,
                carry: small("carry")?,
                blocked_until: t("blocked_until")?,
                block_count: small("block_count")?,
                punished_until: t("punished_until")?,
                punishments: small("punishments")?,
                last_request: t("last_request")?,
                last_seen: t("last_seen")?,
                last_block_at: t("last_block_at")?,
                grace_used_at: t("grace_used_at")?,
                grace_window: t("grace_window")?,
                expires: t("expires")?,
            }))
        };
        parts.push((id, scope));
    }
    Some(ClientState::from_parts(
        time(st.get("last_seen")?)?,
        ban,
        times(st.get("offences")?)?,
        time(st.get("off_exp")?)?,
        parts,
    ))
}

/// A log's windows in version 3: each { width, base, total, slots }, `slots` keyed by
/// sub-window (an array when its keys happen to be 1..n).
fn packed_windows(wins: &Value<'_>) -> Option<Option<Box<Windows>>> {
    let wins = wins.items()?;
    if wins.is_empty() {
        return Some(None);
    }
    let mut list = Vec::with_capacity(wins.len());
    for w in wins {
        let whole = |k: &str| u64::try_from(w.get(k)?.int()?).ok();
        let units = |v: &Value<'_>| u32::try_from(v.int()?).ok();
        let parts: Vec<(u64, u32)> = match w.get("slots")? {
            Value::Map(pairs) => pairs
                .iter()
                .map(|(j, n)| Some((u64::try_from(j.int()?).ok()?, units(n)?)))
                .collect::<Option<_>>()?,
            slots => (1..)
                .zip(slots.items()?)
                .map(|(j, n)| Some((j, units(n)?)))
                .collect::<Option<_>>()?,
        };
        list.push(Window::from_parts(whole("width")?, whole("base")?, parts)?);
    }
    Some(Some(Box::new(Windows(list.into_boxed_slice()))))
}

/// Versions 1 and 2: "V last_seen ban_until ban_reason offences_expire n_off off.. n_scopes
/// scope..", times as text, `-1` for never (see `decode_text` in `redis.lua`).
fn decode_text(blob: &str) -> Option<ClientState> {
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
            let windows = if windows { text_windows(&mut t)? } else { None };
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
fn text_windows<'a>(t: &mut impl Iterator<Item = &'a str>) -> Option<Option<Box<Windows>>> {
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
mod tests;

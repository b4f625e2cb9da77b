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
    BanReason, ClientState, PolicyState, RuleLog, Scope, ScopeId, Times, Window, Windows,
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
            .any(|(_, s)| matches!(s, Scope::RuleLog(log) if log.windows.is_some()));
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
                Scope::RuleLog(log) => {
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
                0 => Scope::RuleLog(RuleLog {
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
mod tests;

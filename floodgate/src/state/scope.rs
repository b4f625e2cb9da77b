//! The records a client keeps per scope: a sliding log per rule scope, a policy record per
//! policy.

use super::{Times, NEVER};
use crate::clock::duration_millis;
use crate::policy::Policy;
use crate::rules::Rule;

/// A sliding log: the times of accepted requests, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Log {
    pub(crate) times: Times,
    pub(crate) expires: u64,
}

impl Log {
    /// How many entries lie in `(now - window, now]`.
    fn in_window(&self, now: u64, window: u64) -> usize {
        let floor = now.saturating_sub(window);
        let first = self.times.partition_point(|t| t <= floor);
        self.times.len() - first
    }

    /// When a rule of `count` per `window` refuses a request of `units` now, the wait until
    /// it would not. More units than the count never pass: refused for a whole window.
    pub(super) fn refusal(&self, rule: &Rule, now: u64, units: u32) -> Option<u64> {
        let count = rule.count() as usize;
        let units = units.max(1) as usize;
        if units > count {
            return Some(rule.window_ms().max(1));
        }
        // Refused while `count - units + 1` counted units lie in the window.
        let need = count - units + 1;
        let len = self.times.len();
        if len < need {
            return None;
        }
        let oldest_counted = self.times.get(len - need);
        let leaves_at = oldest_counted.saturating_add(rule.window_ms());
        (leaves_at > now).then(|| leaves_at - now)
    }

    pub(super) fn quota(&self, rule: &Rule, now: u64) -> (u32, u64) {
        let n = self.in_window(now, rule.window_ms());
        let remaining = (rule.count() as usize).saturating_sub(n) as u32;
        let reset = if n == 0 {
            0
        } else {
            let oldest = self.times.get(self.times.len() - n);
            oldest.saturating_add(rule.window_ms()).saturating_sub(now)
        };
        (remaining, reset)
    }

    /// Records `units` at `now` (one entry per unit).
    pub(super) fn push(&mut self, now: u64, cap: usize, longest: u64, units: u32) {
        for _ in 0..units.max(1) {
            self.times.push_capped(now, cap);
        }
        self.expires = now.saturating_add(longest);
    }
}

/// One client's state under one policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PolicyState {
    /// Start of the open window; 0 when none is open.
    pub(crate) window_start: u64,
    pub(crate) count: u32,
    /// Extra allowance carried into the open (or next) window.
    pub(crate) carry: u32,
    pub(crate) blocked_until: u64,
    pub(crate) block_count: u32,
    /// End of the running punishment; 0 when none; `NEVER` for a blacklist.
    pub(crate) punished_until: u64,
    pub(crate) punishments: u32,
    pub(crate) last_request: u64,
    pub(crate) last_seen: u64,
    pub(crate) last_block_at: u64,
    pub(crate) grace_used_at: u64,
    /// `window_start` of the window in which a grace was taken.
    pub(crate) grace_window: u64,
    pub(crate) expires: u64,
}

impl PolicyState {
    /// Brings the record up to `now`: forgets it when idle past `max_window_duration`, ends a
    /// finished punishment, and closes an ended window (carrying unused quota).
    pub(super) fn roll(&mut self, p: &Policy, now: u64) {
        if self.last_seen != 0 && self.expires <= now {
            *self = PolicyState::default();
        }
        if self.punished_until != 0 && self.punished_until != NEVER && now >= self.punished_until {
            self.punished_until = 0;
            self.block_count = if p.block_exceed_reset {
                0
            } else {
                self.block_count.min(p.block_limit)
            };
        }
        if self.window_start != 0 && now >= self.window_start.saturating_add(p.time_window_ms) {
            let allowance = p.amount.saturating_add(self.carry);
            let unused = allowance.saturating_sub(self.count);
            self.carry = p.accumulate_cap.map_or(0, |cap| unused.min(cap));
            self.window_start = 0;
            self.count = 0;
        }
    }

    pub(super) fn grace_eligible(&self, p: &Policy, now: u64) -> bool {
        let Some(g) = p.grace else { return false };
        let interval = duration_millis(g.interval);
        let long_ago = |t: u64| t == 0 || now.saturating_sub(t) >= interval;
        long_ago(self.last_block_at) && long_ago(self.grace_used_at)
    }

    pub(super) fn touch(&mut self, p: &Policy, now: u64) {
        self.last_seen = now;
        let idle_end = p.max_window_ms.map_or(NEVER, |max| now.saturating_add(max));
        self.expires = idle_end.max(self.blocked_until).max(self.punished_until);
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    Log(Log),
    Policy(Box<PolicyState>),
}

impl Scope {
    pub(super) fn expires(&self) -> u64 {
        match self {
            Scope::Log(log) => log.expires,
            Scope::Policy(p) => p.expires,
        }
    }
}

//! The records a client keeps per scope: a sliding log per rule scope, a policy record per
//! policy.

use super::window::{is_bounded, width_for, Window};
use super::{LogPlan, Times, NEVER};
use crate::clock::duration_millis;
use crate::policy::Policy;
use crate::rules::Rule;

/// A sliding log: the times of accepted requests, oldest first, for the scope's rules of
/// small counts, and a bounded [`Window`] per rule of a larger count (see `window.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RuleLog {
    pub(crate) times: Times,
    pub(crate) expires: u64,
    /// One window per rule above [`EXACT_MAX`](super::window::EXACT_MAX), in the rules'
    /// order; `None` until such a rule counts a request (and for logs of small rules only).
    pub(crate) windows: Option<Box<Windows>>,
}

/// The bounded windows of one log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Windows(pub(crate) Box<[Window]>);

/// The index among `rules`' bounded windows of rule `k`, if it counts in one.
fn window_index(rules: &[Rule], k: usize) -> Option<usize> {
    is_bounded(rules[k].count())
        .then(|| rules[..k].iter().filter(|r| is_bounded(r.count())).count())
}

impl RuleLog {
    /// How many entries lie in `(now - window, now]`.
    fn in_window(&self, now: u64, window: u64) -> usize {
        let floor = now.saturating_sub(window);
        let first = self.times.partition_point(|t| t <= floor);
        self.times.len() - first
    }

    /// The bounded window of rule `k` of `rules`, when it has one of the rule's shape.
    fn window(&self, rules: &[Rule], k: usize) -> Option<&Window> {
        let i = window_index(rules, k)?;
        let w = self.windows.as_ref()?.0.get(i)?;
        (w.width == width_for(rules[k].window_ms())).then_some(w)
    }

    /// Requests counted by rule `k` of `rules` at `now`, and when the oldest of them stops
    /// counting (`None` when none count).
    pub(crate) fn usage(&self, rules: &[Rule], k: usize, now: u64) -> (u64, Option<u64>) {
        let rule = &rules[k];
        if let Some(w) = self.window(rules, k) {
            let (_, reset) = w.quota(rule.count(), now, rule.window_ms());
            let used = w.used(now, rule.window_ms());
            return (used, (used > 0).then(|| now.saturating_add(reset)));
        }
        let n = self.in_window(now, rule.window_ms());
        let oldest = (n > 0).then(|| self.times.get(self.times.len() - n));
        (n as u64, oldest.map(|t| t.saturating_add(rule.window_ms())))
    }

    /// When rule `k` of `rules` refuses a request of `units` now, the wait until it would
    /// not. More units than the count never pass: refused for a whole window.
    pub(super) fn refusal(&self, rules: &[Rule], k: usize, now: u64, units: u32) -> Option<u64> {
        let rule = &rules[k];
        let count = rule.count() as usize;
        let units = units.max(1) as usize;
        if units > count {
            return Some(rule.window_ms().max(1));
        }
        if let Some(w) = self.window(rules, k) {
            return w.refusal(rule.count(), units as u32, now, rule.window_ms());
        }
        // A small rule, or a large one whose window is not built yet: the log (of a state
        // stored before windows existed, or empty) is exact. Refused while
        // `count - units + 1` counted units lie in the window.
        let need = count - units + 1;
        let len = self.times.len();
        if len < need {
            return None;
        }
        let oldest_counted = self.times.get(len - need);
        let leaves_at = oldest_counted.saturating_add(rule.window_ms());
        (leaves_at > now).then(|| leaves_at - now)
    }

    pub(super) fn quota(&self, rules: &[Rule], k: usize, now: u64) -> (u32, u64) {
        let rule = &rules[k];
        if let Some(w) = self.window(rules, k) {
            return w.quota(rule.count(), now, rule.window_ms());
        }
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

    /// Counts a request of `units` at `now` under `plan`: in the exact log (one entry a unit,
    /// kept to the largest small count) and in each large rule's window, built on first use from the times the log
    /// holds (so a state stored before windows existed keeps its count).
    pub(super) fn push(&mut self, plan: &LogPlan, now: u64, units: u32) {
        let units = units.max(1);
        if plan.bounded > 0 {
            self.shape_windows(&plan.rules, plan.bounded);
            if let Some(ws) = &mut self.windows {
                let big = plan.rules.iter().filter(|r| is_bounded(r.count()));
                for (w, rule) in ws.0.iter_mut().zip(big) {
                    w.add(now, units, rule.window_ms());
                }
            }
        } else {
            self.windows = None;
        }
        if plan.cap > 0 {
            for _ in 0..(units as usize).min(plan.cap) {
                self.times.push_capped(now, plan.cap);
            }
        } else if !self.times.is_empty() {
            self.times.clear();
        }
        self.expires = now.saturating_add(plan.longest_ms);
    }

    /// Makes `windows` hold one window per large rule, of the rule's width, seeding a new
    /// one with the log's times.
    fn shape_windows(&mut self, rules: &[Rule], bounded: usize) {
        let big = || rules.iter().filter(|r| is_bounded(r.count()));
        // The common case, on every counted request: the windows fit. Checked without
        // allocating.
        let fits = self.windows.as_ref().is_some_and(|ws| {
            ws.0.len() == bounded
                && ws
                    .0
                    .iter()
                    .zip(big())
                    .all(|(w, r)| w.width == width_for(r.window_ms()))
        });
        if fits {
            return;
        }
        let old = self.windows.take();
        let mut list = Vec::with_capacity(bounded);
        for (i, rule) in big().enumerate() {
            let wms = rule.window_ms();
            list.push(match old.as_ref().and_then(|ws| ws.0.get(i)) {
                Some(w) if w.width == width_for(wms) => w.clone(),
                _ => {
                    let mut w = Window::new(wms);
                    for t in self.times.iter() {
                        w.add(t, 1, wms);
                    }
                    w
                }
            });
        }
        self.windows = Some(Box::new(Windows(list.into_boxed_slice())));
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
    RuleLog(RuleLog),
    Policy(Box<PolicyState>),
}

impl Scope {
    pub(super) fn expires(&self) -> u64 {
        match self {
            Scope::RuleLog(log) => log.expires,
            Scope::Policy(p) => p.expires,
        }
    }
}

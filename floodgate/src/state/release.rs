//! Giving back a counted request: response-based counting counts a request when it is
//! decided (so that two requests in flight can never both pass the last unit of a quota) and
//! gives the units back once its response turns out not to be one its rules count.

use super::{ClientState, Plan, PolicyState, RuleLog, Scope};
use crate::clock::Timestamp;
use crate::policy::Policy;

impl ClientState {
    /// Gives back a request that `plan` allowed and counted at `at`: its units leave every
    /// sliding log and bounded window of the plan's scopes, and the policy's count of the
    /// window it was counted in. What cannot be found any more (a window that closed, a time
    /// that left the log) is left as it is: a release never gives back more than was counted,
    /// and never touches another scope, a block, a punishment or a ban. Call it once per
    /// counted request: a bounded window cannot tell one request's units from another's
    /// counted in the same sub-window.
    pub fn release(&mut self, plan: &Plan, at: Timestamp) {
        let at = at.as_millis();
        let units = plan.units.max(1);
        for lp in &plan.logs {
            if let Some(log) = self.scope_mut(lp.scope).and_then(|s| match s {
                Scope::RuleLog(log) => Some(log),
                Scope::Policy(_) => None,
            }) {
                log.release(&lp.rules, lp.cap, at, units);
            }
        }
        if let Some(pp) = &plan.policy {
            if let Some(Scope::Policy(st)) = self.scope_mut(pp.scope) {
                st.release(&pp.policy, at, units);
            }
        }
    }

    fn scope_mut(&mut self, id: super::ScopeId) -> Option<&mut Scope> {
        self.scopes
            .iter_mut()
            .find(|(s, _)| *s == id)
            .map(|(_, scope)| scope)
    }
}

impl RuleLog {
    /// Takes `units` counted at `at` out of the exact log (at most `cap` entries, as many as
    /// counting put there) and out of each bounded window of `rules`.
    fn release(&mut self, rules: &[crate::rules::Rule], cap: usize, at: u64, units: u32) {
        for _ in 0..(units as usize).min(cap) {
            if !self.times.remove_one(at) {
                break;
            }
        }
        if let Some(ws) = &mut self.windows {
            let big = rules.iter().filter(|r| super::is_bounded(r.count()));
            for (w, rule) in ws.0.iter_mut().zip(big) {
                if w.width == super::window::width_for(rule.window_ms()) {
                    w.remove(at, units);
                }
            }
        }
    }
}

impl PolicyState {
    /// Takes `units` counted at `at` out of the open window's count, when `at` lies in it; a
    /// window that the request opened and that now counts nothing closes again, so the next
    /// counted request opens it, as if the released one never came.
    fn release(&mut self, p: &Policy, at: u64, units: u32) {
        let open = self.window_start != 0
            && self.window_start <= at
            && at < self.window_start.saturating_add(p.time_window_ms);
        if !open {
            return;
        }
        self.count = self.count.saturating_sub(units);
        if self.count == 0 && self.window_start == at && self.grace_window != at {
            self.window_start = 0;
        }
    }
}

#[cfg(test)]
#[path = "release_tests.rs"]
mod tests;

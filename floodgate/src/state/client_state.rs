//! One client's state, and the decisions on it: check, report, ban and unban.

use std::time::Duration;

use super::{
    BanReason, Decision, LimitReason, Plan, PolicyPlan, PolicyState, Quota, ReportOutcome, RuleLog,
    Scope, ScopeId, Times, NEVER,
};
use crate::clock::{duration_millis, Timestamp};
use crate::policy::Punishment;
use crate::rules::BanRule;

/// Everything floodgate knows about one client: its sliding logs, policy records, unspent
/// offences and ban. Stores keep one per client.
///
/// Laid out for memory: most clients are never banned or reported, so the ban and the
/// offences live in one optional box, and the scopes in a boxed slice (no spare capacity).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientState {
    pub(crate) last_seen: u64,
    pub(crate) rare: Option<Box<Extras>>,
    pub(crate) scopes: Box<[(ScopeId, Scope)]>,
}

/// The parts of a client's state that most clients never have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Extras {
    /// (until, reason); until is `NEVER` for a permanent ban.
    pub(crate) ban: Option<(u64, BanReason)>,
    /// When the ban in force began (ms); 0 when unknown (a state written before it was kept).
    pub(crate) ban_since: u64,
    pub(crate) offences: Times,
    pub(crate) offences_expire: u64,
}

impl ClientState {
    /// A client never seen before.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reassembles a state from its parts (for decoders).
    pub(crate) fn from_parts(
        last_seen: u64,
        ban: Option<(u64, BanReason)>,
        offences: Times,
        offences_expire: u64,
        scopes: Vec<(ScopeId, Scope)>,
    ) -> Self {
        let mut state = ClientState {
            last_seen,
            rare: Some(Box::new(Extras {
                ban,
                ban_since: 0,
                offences,
                offences_expire,
            })),
            scopes: scopes.into_boxed_slice(),
        };
        state.tidy_rare();
        state
    }

    /// The ban slot: (until, reason).
    pub(crate) fn ban_slot(&self) -> Option<(u64, BanReason)> {
        self.rare.as_ref().and_then(|r| r.ban)
    }

    /// When the ban slot's ban began (ms), 0 when unknown (for decoders).
    pub(crate) fn ban_since_ms(&self) -> u64 {
        self.rare.as_ref().map_or(0, |r| r.ban_since)
    }

    /// Sets when the ban slot's ban began (for decoders).
    pub(crate) fn set_ban_since(&mut self, since: u64) {
        if let Some(rare) = self.rare.as_mut().filter(|r| r.ban.is_some()) {
            rare.ban_since = since;
        }
    }

    /// When the ban in force at `now` began: the start of the stretch of banned time that
    /// it continues (a ban lengthened or replaced while in force keeps its start). `None`
    /// without a ban in force, or for a ban stored before floodgate kept its start.
    pub fn ban_since(&self, now: Timestamp) -> Option<Timestamp> {
        self.ban_at(now)?;
        let since = self.ban_since_ms();
        (since != 0).then_some(Timestamp::from_millis(since))
    }

    /// Unspent offences, oldest first, and when they expire; `None` when there are none.
    pub(crate) fn offences(&self) -> Option<(&Times, u64)> {
        self.rare.as_ref().map(|r| (&r.offences, r.offences_expire))
    }

    fn rare_mut(&mut self) -> &mut Extras {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Frees the box of rare parts when it holds nothing.
    fn tidy_rare(&mut self) {
        if self
            .rare
            .as_ref()
            .is_some_and(|r| r.ban.is_none() && r.offences.is_empty() && r.offences_expire == 0)
        {
            self.rare = None;
        }
    }

    fn push_scope(&mut self, id: ScopeId, scope: Scope) -> usize {
        // Exactly the room needed: no growth, and no shrink into the boxed slice.
        let mut scopes = Vec::with_capacity(self.scopes.len() + 1);
        scopes.extend(std::mem::take(&mut self.scopes).into_vec());
        scopes.push((id, scope));
        self.scopes = scopes.into_boxed_slice();
        self.scopes.len() - 1
    }

    /// The last time this client made a request or was reported.
    pub fn last_seen(&self) -> Timestamp {
        Timestamp::from_millis(self.last_seen)
    }

    /// After this time the state holds nothing that could affect a decision, and may be
    /// deleted. [`Timestamp::NEVER`] for a permanent ban or a record kept forever.
    pub fn expires_at(&self) -> Timestamp {
        let scopes = self.scopes.iter().map(|(_, s)| s.expires()).max();
        let (ban, offences) = self.rare.as_ref().map_or((0, 0), |r| {
            (r.ban.map_or(0, |(until, _)| until), r.offences_expire)
        });
        Timestamp::from_millis(scopes.unwrap_or(0).max(ban).max(offences))
    }

    /// The ban in force at `now`: `Some(None)` for a permanent one.
    pub fn ban_at(&self, now: Timestamp) -> Option<(Option<Timestamp>, BanReason)> {
        match self.ban_slot() {
            Some((until, reason)) if until > now.as_millis() => Some((
                (until != NEVER).then_some(Timestamp::from_millis(until)),
                reason,
            )),
            _ => None,
        }
    }

    fn scope_index(&self, id: ScopeId) -> Option<usize> {
        self.scopes.iter().position(|(s, _)| *s == id)
    }

    fn log_mut(&mut self, id: ScopeId) -> &mut RuleLog {
        let i = match self.scope_index(id) {
            Some(i) if matches!(self.scopes[i].1, Scope::RuleLog(_)) => i,
            Some(i) => {
                self.scopes[i].1 = Scope::RuleLog(RuleLog::default());
                i
            }
            None => self.push_scope(id, Scope::RuleLog(RuleLog::default())),
        };
        match &mut self.scopes[i].1 {
            Scope::RuleLog(log) => log,
            Scope::Policy(_) => unreachable!("scope {i} was just made a log"),
        }
    }

    fn log(&self, id: ScopeId) -> Option<&RuleLog> {
        self.scopes.iter().find_map(|(s, scope)| match scope {
            Scope::RuleLog(log) if *s == id => Some(log),
            _ => None,
        })
    }

    fn policy_mut(&mut self, id: ScopeId) -> &mut PolicyState {
        let i = match self.scope_index(id) {
            Some(i) if matches!(self.scopes[i].1, Scope::Policy(_)) => i,
            Some(i) => {
                self.scopes[i].1 = Scope::Policy(Box::default());
                i
            }
            None => self.push_scope(id, Scope::Policy(Box::default())),
        };
        match &mut self.scopes[i].1 {
            Scope::Policy(p) => p,
            Scope::RuleLog(_) => unreachable!("scope {i} was just made a policy"),
        }
    }

    /// Drops scopes that expired, so that status and storage hold only live records.
    pub fn prune(&mut self, now: Timestamp) {
        let now = now.as_millis();
        if self.scopes.iter().any(|(_, s)| s.expires() <= now) {
            let mut scopes = std::mem::take(&mut self.scopes).into_vec();
            scopes.retain(|(_, s)| s.expires() > now);
            self.scopes = scopes.into_boxed_slice();
        }
        if let Some(rare) = &mut self.rare {
            if matches!(rare.ban, Some((until, _)) if until <= now) {
                rare.ban = None;
                rare.ban_since = 0;
            }
            if rare.offences_expire <= now {
                rare.offences.clear();
                rare.offences_expire = 0;
            }
        }
        self.tidy_rare();
    }

    /// Decides one request under `plan` at `now`, and records it when it is allowed; an
    /// adaptive punishment's jitter is drawn from `fastrand` (see
    /// [`check_with_draw`](Self::check_with_draw)).
    pub fn check(&mut self, plan: &Plan, now: Timestamp) -> Decision {
        self.check_with_draw(plan, now, fastrand::u64(..))
    }

    /// Decides one request under `plan` at `now`, and records it when it is allowed: a pure
    /// function of the state, the plan, the time and `draw`, a uniformly random number the
    /// caller drew, which sets an adaptive punishment's jitter
    /// ([`Adaptive::jitter_millis`](crate::Adaptive::jitter_millis)).
    ///
    /// All limits are checked together: a refused request consumes no quota anywhere. A
    /// policy's refusal may still start a block or a punishment, which is its purpose.
    pub fn check_with_draw(&mut self, plan: &Plan, now: Timestamp, draw: u64) -> Decision {
        let now = now.as_millis();
        self.last_seen = now;
        if plan.ban_check {
            if let Some((until, reason)) = self.ban_slot() {
                if until > now {
                    return Decision::Banned {
                        until: (until != NEVER).then_some(Timestamp::from_millis(until)),
                        reason,
                        started: false,
                    };
                }
                let rare = self.rare_mut();
                rare.ban = None;
                rare.ban_since = 0;
                self.tidy_rare();
            }
        }
        if !plan.count {
            return Decision::Allowed { quota: None };
        }

        // Policy refusals that need no counting: a running block, the cooldown.
        if let Some(pp) = &plan.policy {
            let p = &pp.policy;
            let st = self.policy_mut(pp.scope);
            st.roll(p, now);
            // Saturating: a cooldown of `Duration::MAX` ends at `NEVER`, never past it.
            let cooldown_ends = st.last_request.saturating_add(p.cooldown_ms);
            let refusal = if st.blocked_until > now {
                if p.relative_block {
                    st.blocked_until = now.saturating_add(p.block_ms());
                }
                Some((LimitReason::Blocked, st.blocked_until - now))
            } else if p.cooldown_ms > 0 && st.last_request != 0 && now < cooldown_ends {
                Some((LimitReason::Cooldown, cooldown_ends - now))
            } else {
                None
            };
            st.touch(p, now);
            if let Some((reason, wait)) = refusal {
                return Decision::Limited {
                    reason,
                    limit: pp.limit,
                    retry_after: Duration::from_millis(wait),
                    started: false,
                };
            }
        }

        // Sliding logs: refuse when any rule is full, with the longest wait among them.
        let mut refused: Option<(usize, u64)> = None;
        for lp in &plan.logs {
            let Some(log) = self.log(lp.scope) else {
                // An empty log refuses only a request of more units than the count.
                for (k, rule) in lp.rules.iter().enumerate() {
                    if rule.count() < plan.units.max(1) {
                        let wait = rule.window_ms().max(1);
                        if refused.is_none_or(|(_, w)| wait > w) {
                            refused = Some((lp.first_limit + k, wait));
                        }
                    }
                }
                continue;
            };
            for k in 0..lp.rules.len() {
                if let Some(wait) = log.refusal(&lp.rules, k, now, plan.units) {
                    if refused.is_none_or(|(_, w)| wait > w) {
                        refused = Some((lp.first_limit + k, wait));
                    }
                }
            }
        }
        if let Some((limit, wait)) = refused {
            return Decision::Limited {
                reason: LimitReason::Rule,
                limit,
                retry_after: Duration::from_millis(wait),
                started: false,
            };
        }

        // The policy's quota.
        let mut grace_taken = false;
        if let Some(pp) = &plan.policy {
            let p = &pp.policy;
            let eligible = self.policy_mut(pp.scope).grace_eligible(p, now);
            let st = self.policy_mut(pp.scope);
            let mut allowance = p.amount.saturating_add(st.carry);
            // The counts after this request, in units.
            let after = st.count.saturating_add(plan.units.max(1));
            if after > allowance {
                if let Some(g) = p.grace {
                    let in_grace = st.window_start != 0 && st.grace_window == st.window_start;
                    if in_grace || eligible {
                        allowance = allowance.saturating_add(g.extra);
                        grace_taken = !in_grace;
                    }
                }
            }
            if after > allowance {
                return self.block(pp, now, draw);
            }
        }

        // Allowed: record it everywhere.
        let mut best: Option<Quota> = None;
        let mut consider = |q: Quota| {
            let better = match best {
                None => true,
                Some(b) => {
                    q.remaining < b.remaining || (q.remaining == b.remaining && q.reset > b.reset)
                }
            };
            if better {
                best = Some(q);
            }
        };
        for lp in &plan.logs {
            let log = self.log_mut(lp.scope);
            log.push(lp, now, plan.units);
            if !plan.quota {
                continue;
            }
            for k in 0..lp.rules.len() {
                let (remaining, reset) = log.quota(&lp.rules, k, now);
                consider(Quota {
                    limit: lp.first_limit + k,
                    remaining,
                    reset: Duration::from_millis(reset),
                });
            }
        }
        if let Some(pp) = &plan.policy {
            let p = &pp.policy;
            let st = self.policy_mut(pp.scope);
            if st.window_start == 0 {
                st.window_start = now;
            }
            // `count < allowance <= u32::MAX` here, but a decoded state is not trusted.
            st.count = st.count.saturating_add(plan.units.max(1));
            st.last_request = now;
            if grace_taken {
                st.grace_window = st.window_start;
                st.grace_used_at = now;
            }
            st.touch(p, now);
            let allowance = p.amount.saturating_add(st.carry);
            if !plan.quota {
                return Decision::Allowed { quota: None };
            }
            consider(Quota {
                limit: pp.limit,
                remaining: allowance.saturating_sub(st.count),
                reset: Duration::from_millis(
                    st.window_start
                        .saturating_add(p.time_window_ms)
                        .saturating_sub(now),
                ),
            });
        }
        Decision::Allowed { quota: best }
    }

    /// The request exceeded the policy's allowance: block, and punish past the block limit.
    fn block(&mut self, pp: &PolicyPlan, now: u64, draw: u64) -> Decision {
        let p = &pp.policy;
        let st = self.policy_mut(pp.scope);
        st.blocked_until = now.saturating_add(p.block_ms());
        // `block_ms`, unless the block's end saturated at the end of time.
        let wait = st.blocked_until - now;
        st.block_count = st.block_count.saturating_add(1);
        st.last_block_at = now;
        let punish = st.block_count > p.block_limit;
        let mut until = 0;
        if punish {
            until = match p.punishment {
                Punishment::Blacklist => NEVER,
                Punishment::Ban(base) => {
                    let length = match p.adaptive {
                        Some(a) => duration_millis(a.length(base, st.punishments))
                            .saturating_add(a.jitter_millis(draw)),
                        None => duration_millis(base),
                    };
                    now.saturating_add(length)
                }
            };
            st.punishments = st.punishments.saturating_add(1);
            st.punished_until = until;
        }
        st.touch(p, now);
        if punish {
            self.set_ban(until, BanReason::Punished, now);
            return Decision::Banned {
                until: (until != NEVER).then_some(Timestamp::from_millis(until)),
                reason: BanReason::Punished,
                started: true,
            };
        }
        Decision::Limited {
            reason: LimitReason::Blocked,
            limit: pp.limit,
            retry_after: Duration::from_millis(wait),
            started: true,
        }
    }

    /// Sets a ban ending at `until` (ms), keeping a longer one already in force.
    fn set_ban(&mut self, until: u64, reason: BanReason, now: u64) {
        match self.ban_slot() {
            Some((current, _)) if current >= until => {}
            _ => self.replace_ban(until, reason, now),
        }
    }

    /// Puts a ban in the slot; it began at `now` unless it continues one in force.
    fn replace_ban(&mut self, until: u64, reason: BanReason, now: u64) {
        let continues = matches!(self.ban_slot(), Some((current, _)) if current > now);
        let rare = self.rare_mut();
        if !continues || rare.ban_since == 0 {
            rare.ban_since = now;
        }
        rare.ban = Some((until, reason));
    }

    /// Records one offence; bans the client when the rule's count of unspent offences lies
    /// within its window. Offences that lead to a ban are spent.
    pub fn report(&mut self, rule: &BanRule, now: Timestamp) -> ReportOutcome {
        let now = now.as_millis();
        self.last_seen = now;
        let count = rule.count().max(1) as usize;
        let rare = self.rare_mut();
        rare.offences.push_capped(now, count);
        rare.offences_expire = now.saturating_add(rule.window_ms());
        let floor = now.saturating_sub(rule.window_ms());
        let in_window = rare.offences.iter().filter(|&t| t > floor).count();
        if in_window >= count {
            let until = now.saturating_add(rule.duration_ms());
            rare.offences.clear();
            rare.offences_expire = 0;
            self.set_ban(until, BanReason::Reported, now);
            return ReportOutcome::Banned {
                until: Timestamp::from_millis(until),
            };
        }
        ReportOutcome::Recorded {
            offences: in_window as u32,
        }
    }

    /// Bans the client until `until` (`None`: forever), by an operator. Replaces any ban in
    /// force, shorter or longer.
    pub fn ban(&mut self, until: Option<Timestamp>, now: Timestamp) {
        self.last_seen = self.last_seen.max(now.as_millis());
        let until = until.map_or(NEVER, Timestamp::as_millis);
        self.replace_ban(until, BanReason::Operator, now.as_millis());
    }

    /// Bans the client until `until` (`None`: forever) for `reason`, unless a ban that ends
    /// later is in force: automatic bans only ever lengthen a ban (a probe never shortens a
    /// blacklist). Only an operator's [`ban`](Self::ban) or [`unban`](Self::unban) shortens one.
    pub fn extend_ban(&mut self, until: Option<Timestamp>, reason: BanReason, now: Timestamp) {
        self.last_seen = self.last_seen.max(now.as_millis());
        self.set_ban(
            until.map_or(NEVER, Timestamp::as_millis),
            reason,
            now.as_millis(),
        );
    }

    /// Lifts any ban or blacklist, forgets unspent offences, and clears policy blocks and
    /// block counts. Returns whether a ban was in force.
    pub fn unban(&mut self, now: Timestamp) -> bool {
        let was = self.ban_at(now).is_some();
        self.rare = None;
        for (_, scope) in self.scopes.iter_mut() {
            if let Scope::Policy(st) = scope {
                st.blocked_until = 0;
                st.block_count = 0;
                st.punished_until = 0;
            }
        }
        was
    }
}
#[cfg(test)]
mod tests;

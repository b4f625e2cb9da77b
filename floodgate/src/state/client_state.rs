//! One client's state, and the decisions on it: check, report, ban and unban.

use std::time::Duration;

use super::{
    BanReason, Decision, LimitReason, Log, Plan, PolicyPlan, PolicyState, Quota, ReportOutcome,
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
    pub(crate) rare: Option<Box<Rare>>,
    pub(crate) scopes: Box<[(ScopeId, Scope)]>,
}

/// The parts of a client's state that most clients never have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Rare {
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
            rare: Some(Box::new(Rare {
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

    fn rare_mut(&mut self) -> &mut Rare {
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
        let mut scopes = std::mem::take(&mut self.scopes).into_vec();
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

    fn log_mut(&mut self, id: ScopeId) -> &mut Log {
        let i = match self.scope_index(id) {
            Some(i) if matches!(self.scopes[i].1, Scope::Log(_)) => i,
            Some(i) => {
                self.scopes[i].1 = Scope::Log(Log::default());
                i
            }
            None => self.push_scope(id, Scope::Log(Log::default())),
        };
        match &mut self.scopes[i].1 {
            Scope::Log(log) => log,
            Scope::Policy(_) => unreachable!("scope {i} was just made a log"),
        }
    }

    fn log(&self, id: ScopeId) -> Option<&Log> {
        self.scopes.iter().find_map(|(s, scope)| match scope {
            Scope::Log(log) if *s == id => Some(log),
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
            Scope::Log(_) => unreachable!("scope {i} was just made a policy"),
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
mod tests {
    use super::*;
    use crate::policy::{Adaptive, Grace, Policy};
    use crate::rules::Rule;

    const T0: u64 = 1_700_000_000_000;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(T0 + ms)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn rules(list: &[(u32, u64)]) -> Vec<Rule> {
        list.iter().map(|&(c, s)| Rule::new(c, secs(s))).collect()
    }

    fn global(list: &[(u32, u64)]) -> Plan {
        Plan::new([(ScopeId::GLOBAL, rules(list))], None)
    }

    fn retry(d: Decision) -> Option<Duration> {
        match d {
            Decision::Limited { retry_after, .. } => Some(retry_after),
            _ => None,
        }
    }

    #[test]
    fn clients_never_reported_or_banned_carry_no_rare_parts() {
        let plan = global(&[(3, 10)]);
        let mut s = ClientState::new();
        s.check(&plan, at(0));
        assert!(s.rare.is_none());
        s.ban(Some(at(1_000)), at(0));
        assert!(s.rare.is_some());
        s.prune(at(1_000));
        assert!(s.rare.is_none(), "an expired ban frees its box");
        s.report(&BanRule::new(2, secs(10), secs(60)), at(2_000));
        assert!(!s.unban(at(2_001)) && s.rare.is_none());
    }

    #[test]
    fn a_request_of_cost_n_uses_n_units_of_every_rule_and_policy() {
        // 100 per minute admits twenty requests of cost 5, then refuses until the first
        // leaves the window.
        let plan = global(&[(100, 60)]).with_units(5);
        let mut s = ClientState::new();
        for n in 0..20 {
            let d = s.check(&plan, at(T0 + n));
            assert!(d.is_allowed(), "request {n}: {d:?}");
        }
        assert_eq!(
            retry(s.check(&plan, at(T0 + 20))),
            Some(Duration::from_millis(59_980))
        );
        assert!(s.check(&plan, at(T0 + 60_000)).is_allowed());
        // What is left is reported in units; a cheaper request fits where a dearer one does not.
        let mut s = ClientState::new();
        let plan3 = global(&[(10, 60)]).with_units(3);
        for _ in 0..3 {
            assert!(s.check(&plan3, at(T0)).is_allowed());
        }
        assert!(!s.check(&plan3, at(T0)).is_allowed(), "9 + 3 > 10");
        let one = global(&[(10, 60)]);
        match s.check(&one, at(T0)) {
            Decision::Allowed { quota: Some(q) } => assert_eq!(q.remaining, 0),
            d => panic!("{d:?}"),
        }
        // More units than a count never pass, on an empty log too.
        let mut s = ClientState::new();
        assert!(!s
            .check(&global(&[(4, 60)]).with_units(5), at(T0))
            .is_allowed());
        // A policy of 10 per window: two requests of cost 4, then the third blocks.
        let p = policy_plan(Policy::new(10, secs(60))).with_units(4);
        let mut s = ClientState::new();
        assert!(s.check(&p, at(T0)).is_allowed());
        assert!(s.check(&p, at(T0 + 1)).is_allowed());
        assert!(matches!(
            s.check(&p, at(T0 + 2)),
            Decision::Limited { started: true, .. }
        ));
    }

    #[test]
    fn sliding_log_refuses_the_count_plus_first_request_in_any_window() {
        let plan = global(&[(3, 10)]);
        let mut s = ClientState::new();
        for ms in [0, 1_000, 2_000] {
            assert!(s.check(&plan, at(ms)).is_allowed());
        }
        // The 4th within 10 s is refused until the first leaves the window.
        assert_eq!(
            retry(s.check(&plan, at(9_999))),
            Some(Duration::from_millis(1))
        );
        // At exactly 10 s the first request is out of (now - 10 s, now].
        assert!(s.check(&plan, at(10_000)).is_allowed());
        assert_eq!(
            retry(s.check(&plan, at(10_500))),
            Some(Duration::from_millis(500))
        );
        assert!(s.check(&plan, at(11_000)).is_allowed());
    }

    #[test]
    fn refused_requests_consume_nothing_in_any_rule_or_scope() {
        let route = ScopeId::named("rules r");
        let plan = Plan::new(
            [
                (ScopeId::GLOBAL, rules(&[(5, 60)])),
                (route, rules(&[(1, 2)])),
            ],
            None,
        );
        let global_only = global(&[(5, 60)]);
        let mut s = ClientState::new();
        assert!(s.check(&plan, at(0)).is_allowed());
        // Refused by the route's 1/2s rule: the global 5/60s rule must not count them.
        for ms in [100, 200, 300, 400] {
            let d = s.check(&plan, at(ms));
            assert!(matches!(d, Decision::Limited { limit: 1, .. }), "{d:?}");
        }
        for ms in [500, 600, 700, 800] {
            assert!(s.check(&global_only, at(ms)).is_allowed(), "{ms}");
        }
        // Now the global rule is full: refused, and the route's log is untouched.
        let d = s.check(&plan, at(3_000));
        assert!(matches!(d, Decision::Limited { limit: 0, .. }), "{d:?}");
        assert_eq!(s.log(route).unwrap().times.len(), 1);
    }

    #[test]
    fn the_longest_wait_among_refusing_rules_is_reported() {
        let plan = global(&[(1, 1), (2, 60)]);
        let mut s = ClientState::new();
        assert!(s.check(&plan, at(0)).is_allowed());
        assert!(s.check(&plan, at(1_000)).is_allowed());
        let d = s.check(&plan, at(1_100));
        assert_eq!(retry(d), Some(Duration::from_millis(58_900)));
        assert!(matches!(d, Decision::Limited { limit: 1, .. }));
    }

    #[test]
    fn allowed_decisions_report_the_most_constrained_quota() {
        let plan = global(&[(20, 1), (3, 10)]);
        let mut s = ClientState::new();
        let Decision::Allowed { quota: Some(q) } = s.check(&plan, at(0)) else {
            panic!("allowed")
        };
        assert_eq!((q.limit, q.remaining, q.reset), (1, 2, secs(10)));
        let Decision::Allowed { quota: Some(q) } = s.check(&plan, at(4_000)) else {
            panic!("allowed")
        };
        assert_eq!((q.limit, q.remaining, q.reset), (1, 1, secs(6)));
    }

    #[test]
    fn zero_count_refuses_and_zero_window_never_refuses() {
        let mut s = ClientState::new();
        let none = Plan::new([(ScopeId::GLOBAL, vec![Rule::new(0, secs(5))])], None);
        assert_eq!(retry(s.check(&none, at(0))), Some(secs(5)));
        let free = Plan::new(
            [(ScopeId::GLOBAL, vec![Rule::new(1, Duration::ZERO)])],
            None,
        );
        for ms in 0..5 {
            assert!(s.check(&free, at(ms)).is_allowed());
        }
    }

    #[test]
    fn ban_only_plans_check_bans_and_count_nothing() {
        let mut s = ClientState::new();
        let plan = Plan::ban_only();
        assert!(!plan.counts());
        assert!(s.check(&plan, at(0)).is_allowed());
        assert!(s.scopes.is_empty());
        s.ban(Some(at(5_000)), at(0));
        assert!(matches!(
            s.check(&plan, at(4_999)),
            Decision::Banned {
                reason: BanReason::Operator,
                ..
            }
        ));
        assert!(s.check(&plan, at(5_000)).is_allowed());
    }

    #[test]
    fn reports_ban_from_the_last_offence_and_are_then_spent() {
        let rule = BanRule::new(3, secs(10), secs(600));
        let plan = global(&[(100, 1)]);
        let mut s = ClientState::new();
        assert_eq!(
            s.report(&rule, at(0)),
            ReportOutcome::Recorded { offences: 1 }
        );
        assert_eq!(
            s.report(&rule, at(4_000)),
            ReportOutcome::Recorded { offences: 2 }
        );
        assert_eq!(
            s.report(&rule, at(9_000)),
            ReportOutcome::Banned { until: at(609_000) }
        );
        assert!(matches!(
            s.check(&plan, at(608_999)),
            Decision::Banned { until: Some(t), reason: BanReason::Reported, .. } if t == at(609_000)
        ));
        assert!(s.check(&plan, at(609_000)).is_allowed());
        // The offences were spent: one more does not ban again.
        assert_eq!(
            s.report(&rule, at(609_500)),
            ReportOutcome::Recorded { offences: 1 }
        );
        assert!(s.check(&plan, at(610_000)).is_allowed());
    }

    #[test]
    fn offences_spread_wider_than_the_window_never_ban() {
        let rule = BanRule::new(3, secs(10), secs(600));
        let mut s = ClientState::new();
        for i in 0..10 {
            let out = s.report(&rule, at(i * 5_001));
            assert!(
                matches!(out, ReportOutcome::Recorded { offences } if offences <= 2),
                "{out:?}"
            );
        }
        assert!(s.ban_at(at(60_000)).is_none());
    }

    #[test]
    fn operator_ban_blacklist_and_unban() {
        let plan = global(&[(1, 1)]);
        let mut s = ClientState::new();
        s.ban(None, at(0));
        assert!(matches!(
            s.check(&plan, at(10_000_000)),
            Decision::Banned { until: None, .. }
        ));
        assert_eq!(s.expires_at(), Timestamp::NEVER);
        assert!(s.unban(at(10_000_001)));
        assert!(!s.unban(at(10_000_002)));
        assert!(s.check(&plan, at(10_000_003)).is_allowed());
    }

    #[test]
    fn expiry_and_prune_follow_the_longest_window() {
        let plan = Plan::new([(ScopeId::GLOBAL, rules(&[(5, 1), (50, 60)]))], None);
        let mut s = ClientState::new();
        s.check(&plan, at(0));
        assert_eq!(s.expires_at(), at(60_000));
        s.prune(at(59_999));
        assert_eq!(s.scopes.len(), 1);
        s.prune(at(60_000));
        assert!(s.scopes.is_empty());
    }

    // ---- the policy family (SPEC 5) ----

    fn policy_plan(p: Policy) -> Plan {
        Plan::new([], Some((ScopeId::named("policy p"), p)))
    }

    fn code(d: Decision) -> (u16, Option<u64>) {
        match d {
            Decision::Allowed { .. } => (200, None),
            Decision::Limited { retry_after, .. } => (429, Some(retry_after.as_millis() as u64)),
            Decision::Banned { until, .. } => (403, until.map(|t| t.as_millis() - T0)),
        }
    }

    #[test]
    fn policy_allows_amount_per_window_then_blocks_for_block_duration() {
        let plan = policy_plan(Policy::new(3, secs(60)).block_duration(secs(30)));
        let mut s = ClientState::new();
        for ms in [0, 10, 20] {
            assert_eq!(code(s.check(&plan, at(ms))), (200, None));
        }
        // Request amount+1 blocks for 30 s from this first refusal.
        assert_eq!(code(s.check(&plan, at(1_000))), (429, Some(30_000)));
        assert_eq!(code(s.check(&plan, at(11_000))), (429, Some(20_000)));
        // The block ended but the window (opened at 0) runs until 60 s: blocked again.
        assert_eq!(code(s.check(&plan, at(31_000))), (429, Some(30_000)));
        let st = s.policy_mut(ScopeId::named("policy p")).clone();
        assert_eq!(st.block_count, 2);
        assert_eq!(code(s.check(&plan, at(61_000))), (200, None));
    }

    #[test]
    fn relative_block_pushes_the_end_on_every_refusal() {
        let plan = policy_plan(Policy::new(1, secs(10)).relative_block(true));
        let mut s = ClientState::new();
        assert_eq!(code(s.check(&plan, at(0))), (200, None));
        assert_eq!(code(s.check(&plan, at(1_000))), (429, Some(10_000)));
        assert_eq!(code(s.check(&plan, at(8_000))), (429, Some(10_000)));
        assert_eq!(code(s.check(&plan, at(17_999))), (429, Some(10_000)));
        assert_eq!(code(s.check(&plan, at(37_999))), (200, None));
    }

    #[test]
    fn exceeding_the_block_limit_bans_or_blacklists() {
        let ban = policy_plan(
            Policy::new(1, secs(10))
                .block_limit(1)
                .punishment(Punishment::Ban(secs(100))),
        );
        let mut s = ClientState::new();
        assert_eq!(code(s.check(&ban, at(0))), (200, None));
        assert_eq!(code(s.check(&ban, at(1))), (429, Some(10_000)));
        assert_eq!(code(s.check(&ban, at(10_001))), (200, None));
        // Second block > block_limit 1: banned for 100 s.
        assert_eq!(code(s.check(&ban, at(10_002))), (403, Some(110_002)));
        assert_eq!(code(s.check(&ban, at(110_001))), (403, Some(110_002)));
        assert_eq!(code(s.check(&ban, at(110_002))), (200, None));

        let black = policy_plan(
            Policy::new(1, secs(10))
                .block_limit(0)
                .punishment(Punishment::Blacklist),
        );
        let mut s = ClientState::new();
        assert_eq!(code(s.check(&black, at(0))), (200, None));
        assert_eq!(code(s.check(&black, at(1))), (403, None));
        assert_eq!(code(s.check(&black, at(999_999_999))), (403, None));
        assert!(s.unban(at(1_000_000_000)));
        assert_eq!(code(s.check(&black, at(1_000_000_001))), (200, None));
    }

    #[test]
    fn block_exceed_reset_decides_whether_the_next_block_punishes_again() {
        for reset in [true, false] {
            let plan = policy_plan(
                Policy::new(1, secs(10))
                    .block_limit(1)
                    .punishment(Punishment::Ban(secs(100)))
                    .block_exceed_reset(reset),
            );
            let mut s = ClientState::new();
            s.check(&plan, at(0));
            s.check(&plan, at(1)); // block 1
            s.check(&plan, at(10_001));
            assert_eq!(code(s.check(&plan, at(10_002))).0, 403); // block 2: punished
                                                                 // After the punishment: one allowed request, then a block.
            assert_eq!(code(s.check(&plan, at(200_000))), (200, None));
            let d = code(s.check(&plan, at(200_001)));
            if reset {
                assert_eq!(d, (429, Some(10_000)), "reset: the count restarted at 0");
            } else {
                assert_eq!(
                    d,
                    (403, Some(300_001)),
                    "no reset: the next block punishes again"
                );
            }
        }
    }

    #[test]
    fn accumulation_carries_unused_quota_capped() {
        let plan = policy_plan(Policy::new(2, secs(10)).accumulate_requests(true));
        let mut s = ClientState::new();
        // Window 1 (0..10 s): 0 of 2 used beyond the opening request -> 1 unused.
        assert_eq!(code(s.check(&plan, at(0))), (200, None));
        // Window 2 opens at 20 s with carry 1: 3 allowed.
        for ms in [20_000, 20_001, 20_002] {
            assert_eq!(code(s.check(&plan, at(ms))), (200, None), "{ms}");
        }
        assert_eq!(code(s.check(&plan, at(20_003))).0, 429);
        // Several idle windows never compound beyond the cap (2 extra: 4 per window).
        let mut s = ClientState::new();
        s.check(&plan, at(0));
        for w in 1..10u64 {
            s.check(&plan, at(w * 100_000));
        }
        let mut allowed = 0;
        for ms in 0..10 {
            if s.check(&plan, at(2_000_000 + ms)).is_allowed() {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 4);
    }

    #[test]
    fn cooldown_refuses_requests_too_close_together_without_blocking() {
        let plan = policy_plan(Policy::new(10, secs(60)).cooldown(secs(2)));
        let mut s = ClientState::new();
        assert_eq!(code(s.check(&plan, at(0))), (200, None));
        assert_eq!(code(s.check(&plan, at(500))), (429, Some(1_500)));
        assert_eq!(code(s.check(&plan, at(2_000))), (200, None));
        assert_eq!(s.policy_mut(ScopeId::named("policy p")).block_count, 0);
    }

    #[test]
    fn grace_lets_a_rare_client_exceed_slightly_once() {
        let grace = Grace {
            extra: 2,
            interval: secs(3_600),
        };
        let plan = policy_plan(Policy::new(3, secs(10)).grace(grace));
        let mut s = ClientState::new();
        // First window: 3 + 2 grace allowed, the 6th blocks.
        for ms in 0..5 {
            assert_eq!(code(s.check(&plan, at(ms))), (200, None), "{ms}");
        }
        assert_eq!(code(s.check(&plan, at(5))).0, 429);
        // Within the hour: no grace again.
        for ms in 0..3 {
            assert_eq!(code(s.check(&plan, at(20_000 + ms))), (200, None));
        }
        assert_eq!(code(s.check(&plan, at(20_003))).0, 429);
        // An hour after the last block and grace: eligible again.
        let later = 20_003 + 3_600_000;
        for ms in 0..5 {
            assert_eq!(code(s.check(&plan, at(later + ms))), (200, None), "{ms}");
        }
    }

    #[test]
    fn adaptive_punishments_grow_to_the_cap() {
        let plan = policy_plan(
            Policy::new(1, secs(1))
                .block_limit(0)
                .block_exceed_reset(true)
                .punishment(Punishment::Ban(secs(10)))
                .adaptive(Adaptive {
                    factor: 3.0,
                    max: secs(200),
                    jitter: Duration::ZERO,
                }),
        );
        let mut s = ClientState::new();
        let mut t = 0;
        let mut lengths = Vec::new();
        for _ in 0..5 {
            assert!(s.check(&plan, at(t)).is_allowed());
            match s.check(&plan, at(t + 1)) {
                Decision::Banned { until: Some(u), .. } => {
                    lengths.push((u.as_millis() - T0 - (t + 1)) / 1000);
                    t = u.as_millis() - T0 + 5_000;
                }
                d => panic!("{d:?}"),
            }
        }
        assert_eq!(lengths, [10, 30, 90, 200, 200]);
    }

    #[test]
    fn adaptive_jitter_comes_from_the_draw_and_stays_within_its_bound() {
        let a = Adaptive {
            factor: 2.0,
            max: secs(1_000),
            jitter: secs(5),
        };
        let plan = policy_plan(
            Policy::new(1, secs(1))
                .block_limit(0)
                .punishment(Punishment::Ban(secs(10)))
                .adaptive(a),
        );
        let length = |draw: u64| {
            let mut s = ClientState::new();
            s.check_with_draw(&plan, at(0), draw);
            let Decision::Banned { until: Some(u), .. } = s.check_with_draw(&plan, at(1), draw)
            else {
                panic!("banned")
            };
            u.as_millis() - T0 - 1
        };
        // The same draw gives the same punishment: the decision is a function of its inputs.
        assert_eq!(length(1_234), length(1_234));
        assert_eq!(length(0), 10_000);
        assert_eq!(length(5_000), 15_000);
        assert_eq!(length(5_001), 10_000);
        assert_eq!(length(u64::MAX), 10_000 + u64::MAX % 5_001);
        for draw in [1, 77, 4_999, 123_456_789, u64::MAX - 1] {
            assert!((10_000..=15_000).contains(&length(draw)), "draw {draw}");
        }
        // Random draws vary it.
        let mut lengths: Vec<u64> = (0..50).map(|_| length(fastrand::u64(..))).collect();
        lengths.sort_unstable();
        lengths.dedup();
        assert!(lengths.len() > 1, "the jitter never varied");
    }

    #[test]
    fn idle_policy_records_are_forgotten_after_max_window_duration() {
        let plan = policy_plan(Policy::new(1, secs(10)).max_window_duration(Some(secs(100))));
        let mut s = ClientState::new();
        s.check(&plan, at(0));
        s.check(&plan, at(1)); // a block
        assert_eq!(s.expires_at(), at(100_001));
        s.prune(at(100_001));
        assert!(s.scopes.is_empty());
        // Never-expiring records when max_window_duration is "forever".
        let forever = policy_plan(Policy::new(1, secs(10)).max_window_duration(None));
        let mut s = ClientState::new();
        s.check(&forever, at(0));
        assert_eq!(s.expires_at(), Timestamp::NEVER);
    }

    // ---- extreme values: everything saturates, nothing panics (debug builds check) ----

    const END: u64 = u64::MAX;

    /// Times near the epoch, now, past what a double holds exactly, and the end of time.
    const EXTREME_NOWS: [u64; 6] = [1, T0, 1 << 53, END - 2, END - 1, END];

    fn wait_ms(d: Decision) -> u64 {
        match d {
            Decision::Limited { retry_after, .. } => duration_millis(retry_after),
            d => panic!("expected Limited, got {d:?}"),
        }
    }

    fn ts(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn rules_of_the_largest_count_and_window_wait_until_the_end_of_time() {
        let huge = Rule::new(u32::MAX, Duration::MAX);
        assert_eq!((huge.count(), huge.window_ms()), (u32::MAX, END));
        let zero = Plan::new(
            [
                (ScopeId::GLOBAL, vec![huge]),
                (ScopeId::named("r"), vec![Rule::new(0, Duration::MAX)]),
            ],
            None,
        );
        let one = Plan::new(
            [(ScopeId::GLOBAL, vec![huge, Rule::new(1, Duration::MAX)])],
            None,
        );
        for now in EXTREME_NOWS {
            let mut s = ClientState::new();
            // A zero count refuses for its whole window: the longest wait there is.
            let d = s.check(&zero, ts(now));
            assert!(matches!(d, Decision::Limited { limit: 1, .. }), "{d:?}");
            assert_eq!(wait_ms(d), END);
            let Decision::Allowed { quota: Some(q) } = s.check(&one, ts(now)) else {
                panic!("the first request is allowed")
            };
            assert_eq!((q.limit, q.remaining), (1, 0));
            assert_eq!(duration_millis(q.reset), END - now);
            if now == END {
                continue; // the request leaves its window at the end of time, which is now
            }
            // The request stays in its window until the end of time.
            for later in [now, now + 1, END - 1].into_iter().filter(|&t| t < END) {
                let d = s.check(&one, ts(later));
                assert!(matches!(d, Decision::Limited { limit: 1, .. }), "{d:?}");
                assert_eq!(wait_ms(d), END - later, "at {later}");
            }
            assert_eq!(s.expires_at(), Timestamp::NEVER);
            s.prune(ts(END - 1));
            assert_eq!(s.scopes.len(), 1, "kept until the end of time");
        }
    }

    fn extreme_policy() -> Policy {
        Policy::new(u32::MAX, Duration::MAX)
            .block_duration(Duration::MAX)
            .cooldown(Duration::MAX)
            .punishment(Punishment::Ban(Duration::MAX))
            .max_window_duration(Some(Duration::MAX))
            .accumulate_cap(u32::MAX)
            .grace(Grace {
                extra: u32::MAX,
                interval: Duration::MAX,
            })
            .adaptive(Adaptive {
                factor: f64::MAX,
                max: Duration::MAX,
                jitter: Duration::MAX,
            })
    }

    #[test]
    fn a_cooldown_of_duration_max_lasts_until_the_end_of_time() {
        let plan = policy_plan(extreme_policy());
        for now in EXTREME_NOWS {
            let mut s = ClientState::new();
            assert!(s.check(&plan, ts(now)).is_allowed(), "{now}");
            if now == END {
                continue;
            }
            for later in [now, now + 1, END - 1].into_iter().filter(|&t| t < END) {
                let d = s.check(&plan, ts(later));
                assert!(
                    matches!(
                        d,
                        Decision::Limited {
                            reason: LimitReason::Cooldown,
                            ..
                        }
                    ),
                    "{d:?}"
                );
                assert_eq!(wait_ms(d), END - later);
            }
        }
    }

    #[test]
    fn blocks_and_punishments_of_duration_max_last_until_the_end_of_time() {
        // Amount 1, no cooldown: the second request blocks for `Duration::MAX`.
        let block = policy_plan(extreme_policy().with_amount(1).cooldown(Duration::ZERO));
        // Block limit 0: the block punishes at once, for `Duration::MAX` x f64::MAX^n + jitter.
        let punish = policy_plan(
            extreme_policy()
                .with_amount(1)
                .cooldown(Duration::ZERO)
                .block_limit(0)
                .grace(Grace {
                    extra: 0,
                    interval: Duration::MAX,
                }),
        );
        let relative = policy_plan(
            extreme_policy()
                .with_amount(0)
                .cooldown(Duration::ZERO)
                .relative_block(true)
                .grace(Grace {
                    extra: 0,
                    interval: Duration::MAX,
                }),
        );
        for now in EXTREME_NOWS.into_iter().filter(|&t| t < END - 1) {
            let mut s = ClientState::new();
            assert!(s.check(&block, ts(now)).is_allowed());
            // The grace (extra u32::MAX) lets this one through: a first offender.
            assert!(s.check(&block, ts(now)).is_allowed());
            let mut s = ClientState::new();
            assert!(s.check(&punish, ts(now)).is_allowed());
            let d = s.check(&punish, ts(now + 1));
            assert!(
                matches!(
                    d,
                    Decision::Banned {
                        until: None,
                        reason: BanReason::Punished,
                        started: true
                    }
                ),
                "a ban to the end of time is permanent: {d:?}"
            );
            assert!(matches!(
                s.check(&punish, ts(END - 1)),
                Decision::Banned { until: None, .. }
            ));
            // No reset ever comes; an unban clears it.
            assert!(s.unban(ts(now + 1)));
            let mut s = ClientState::new();
            let d = s.check(&relative, ts(now));
            assert!(
                matches!(
                    d,
                    Decision::Limited {
                        reason: LimitReason::Blocked,
                        started: true,
                        ..
                    }
                ),
                "{d:?}"
            );
            assert_eq!(wait_ms(d), END - now, "the wait ends with the block");
            let d = s.check(&relative, ts(now + 1));
            assert_eq!(wait_ms(d), END - (now + 1));
        }
    }

    #[test]
    fn ban_rules_and_operator_bans_of_duration_max_are_permanent() {
        let plan = global(&[(1, 1)]);
        for rule in [
            BanRule::new(1, Duration::MAX, Duration::MAX),
            BanRule::new(u32::MAX, Duration::MAX, Duration::MAX),
        ] {
            for now in EXTREME_NOWS.into_iter().filter(|&t| t < END) {
                let mut s = ClientState::new();
                let mut out = s.report(&rule, ts(now));
                for n in 2..=rule.count().min(3) {
                    assert_eq!(out, ReportOutcome::Recorded { offences: n - 1 });
                    out = s.report(&rule, ts(now));
                }
                if rule.count() > 3 {
                    assert_eq!(out, ReportOutcome::Recorded { offences: 3 });
                    assert_eq!(s.offences().unwrap().1, END, "offences kept forever");
                    continue;
                }
                assert_eq!(
                    out,
                    ReportOutcome::Banned {
                        until: Timestamp::NEVER
                    }
                );
                assert!(matches!(
                    s.check(&plan, ts(END - 1)),
                    Decision::Banned {
                        until: None,
                        reason: BanReason::Reported,
                        ..
                    }
                ));
                s.ban(Some(ts(now) + Duration::MAX), ts(now));
                assert_eq!(s.ban_at(ts(END - 1)), Some((None, BanReason::Operator)));
                assert_eq!(s.expires_at(), Timestamp::NEVER);
            }
        }
    }

    #[test]
    fn stored_times_near_the_end_of_time_never_overflow() {
        // What a corrupt or hostile row may hold: every time at or near u64::MAX.
        let mut plans = Vec::new();
        for p in [
            extreme_policy(),
            extreme_policy().with_amount(0).relative_block(true),
            Policy::new(1, secs(1)).cooldown(secs(1)).block_limit(0),
        ] {
            plans.push(Plan::new(
                [(
                    ScopeId::GLOBAL,
                    vec![Rule::new(u32::MAX, Duration::MAX), Rule::new(1, secs(1))],
                )],
                Some((ScopeId::named("p"), p)),
            ));
        }
        for v in [END, END - 1, 1 << 53, 0] {
            let policy = PolicyState {
                window_start: v,
                count: u32::MAX,
                carry: u32::MAX,
                blocked_until: v,
                block_count: u32::MAX,
                punished_until: v,
                punishments: u32::MAX,
                last_request: v,
                last_seen: v,
                last_block_at: v,
                grace_used_at: v,
                grace_window: v,
                expires: v,
            };
            let state = ClientState::from_parts(
                v,
                Some((v, BanReason::Punished)),
                [v, END].into_iter().collect(),
                v,
                vec![
                    (
                        ScopeId::GLOBAL,
                        Scope::Log(Log {
                            times: [0, v, END, 1].into_iter().collect(),
                            expires: v,
                            windows: None,
                        }),
                    ),
                    (ScopeId::named("p"), Scope::Policy(Box::new(policy))),
                ],
            );
            for now in EXTREME_NOWS {
                for plan in &plans {
                    let mut s = state.clone();
                    for _ in 0..3 {
                        match s.check(plan, ts(now)) {
                            Decision::Banned { until: Some(u), .. } => assert!(u > ts(now)),
                            Decision::Limited { retry_after, .. } => {
                                assert!(duration_millis(retry_after) <= END - now.min(END - 1))
                            }
                            _ => {}
                        }
                        s.report(&BanRule::new(2, Duration::MAX, Duration::MAX), ts(now));
                    }
                    s.prune(ts(now));
                    assert!(s.unban(ts(now)) || s.ban_at(ts(now)).is_none());
                }
            }
        }
    }
}

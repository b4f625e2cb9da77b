//! The decision core: one client's state and the pure functions that decide on it.
//!
//! Nothing here knows about actix-web, threads or storage. A [`Store`](crate::Store) keeps one
//! [`ClientState`] per client and runs [`ClientState::check`] or [`ClientState::report`] on it
//! atomically; the result is a [`Decision`]. Every function takes the current time as an
//! argument, so the whole family of rules is tested with plain values in microseconds.

use std::collections::VecDeque;
use std::time::Duration;

use crate::clock::{duration_millis, Timestamp};
use crate::policy::{Policy, Punishment};
use crate::rules::{BanRule, Rule};

const NEVER: u64 = u64::MAX;

/// Identifies one counting scope of a client: the global rules, one route's specific rules,
/// or one route's policy. Stable across processes (it is a hash of the scope's name), so
/// persistent stores and fleets agree on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeId(pub u64);

impl ScopeId {
    /// The scope of the app's global rules.
    pub const GLOBAL: ScopeId = ScopeId::named("global");

    /// The scope for a name (FNV-1a, so that it is the same in every process and version).
    pub const fn named(name: &str) -> ScopeId {
        let bytes = name.as_bytes();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        ScopeId(hash)
    }
}

/// One limit of a [`Plan`], as shown to clients in headers and refusal bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitInfo {
    /// The name in the `RateLimit` fields, such as `"20/1s"`.
    pub name: String,
    /// Requests allowed per window.
    pub quota: u32,
    /// The window.
    pub window: Duration,
}

#[derive(Clone, Debug)]
pub(crate) struct LogPlan {
    pub(crate) scope: ScopeId,
    pub(crate) rules: Vec<Rule>,
    /// Entries to keep: the largest count among the rules.
    cap: usize,
    longest_ms: u64,
    /// Index of the first rule's entry in `Plan::limits`.
    first_limit: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct PolicyPlan {
    pub(crate) scope: ScopeId,
    pub(crate) policy: Policy,
    limit: usize,
}

/// What to check for one request: the ban, the sliding-log scopes and the policy that apply
/// to its route. Built once per route and shared.
#[derive(Clone, Debug)]
pub struct Plan {
    ban_check: bool,
    count: bool,
    pub(crate) logs: Vec<LogPlan>,
    pub(crate) policy: Option<PolicyPlan>,
    limits: Vec<LimitInfo>,
}

impl Plan {
    /// A plan that only checks the client's ban (for excluded methods).
    pub fn ban_only() -> Plan {
        Plan {
            ban_check: true,
            count: false,
            logs: Vec::new(),
            policy: None,
            limits: Vec::new(),
        }
    }

    /// A plan checking the ban, then every `(scope, rules)` sliding log and the policy.
    pub fn new(
        logs: impl IntoIterator<Item = (ScopeId, Vec<Rule>)>,
        policy: Option<(ScopeId, Policy)>,
    ) -> Plan {
        let mut limits = Vec::new();
        let mut log_plans = Vec::new();
        for (scope, rules) in logs {
            if rules.is_empty() {
                continue;
            }
            let first_limit = limits.len();
            limits.extend(rules.iter().map(|r| LimitInfo {
                name: r.to_string(),
                quota: r.count(),
                window: r.window(),
            }));
            log_plans.push(LogPlan {
                scope,
                cap: rules.iter().map(|r| r.count() as usize).max().unwrap_or(0),
                longest_ms: rules.iter().map(Rule::window_ms).max().unwrap_or(0),
                rules,
                first_limit,
            });
        }
        let policy = policy.map(|(scope, policy)| {
            limits.push(LimitInfo {
                name: policy.name(),
                quota: policy.amount,
                window: policy.window(),
            });
            PolicyPlan {
                scope,
                policy,
                limit: limits.len() - 1,
            }
        });
        Plan {
            ban_check: true,
            count: true,
            logs: log_plans,
            policy,
            limits,
        }
    }

    /// The limits this plan enforces, in the order [`Quota::limit`] indexes them.
    pub fn limits(&self) -> &[LimitInfo] {
        &self.limits
    }

    /// True when the plan counts requests (false: it only checks the ban). A store need not
    /// create state for a client under a plan that does not count.
    pub fn counts(&self) -> bool {
        self.count && (!self.logs.is_empty() || self.policy.is_some())
    }
}

/// How close a client is to one limit, for the `RateLimit` header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Index into [`Plan::limits`].
    pub limit: usize,
    /// Requests left before this limit refuses.
    pub remaining: u32,
    /// Time until the quota recovers (for a sliding log: until its oldest counted request
    /// leaves the window; for a policy: until the window ends).
    pub reset: Duration,
}

/// Why a request was limited (429).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitReason {
    /// A sliding-log rule is full.
    Rule,
    /// The client is blocked by a policy.
    Blocked,
    /// The policy's cooldown between two requests has not passed.
    Cooldown,
}

/// Why a client is banned (403).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BanReason {
    /// Reported offences reached the ban rule.
    Reported,
    /// An operator banned the client.
    Operator,
    /// A policy's block limit was exceeded.
    Punished,
}

/// The outcome of checking one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve the request. `quota` is the limit closest to refusing, if any applies.
    Allowed {
        /// The most constrained limit after counting this request.
        quota: Option<Quota>,
    },
    /// Refuse with 429.
    Limited {
        /// Which kind of limit refused.
        reason: LimitReason,
        /// Index into [`Plan::limits`] of the limit that refused.
        limit: usize,
        /// When the client may try again.
        retry_after: Duration,
        /// True when this request started a policy block (it was not blocked before).
        started: bool,
    },
    /// Refuse with 403.
    Banned {
        /// When the ban ends; `None` for a permanent ban (blacklist).
        until: Option<Timestamp>,
        /// Why.
        reason: BanReason,
        /// True when this request caused the ban (a policy punishment).
        started: bool,
    },
}

impl Decision {
    /// True for [`Decision::Allowed`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

/// The outcome of one reported offence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Recorded; `offences` unspent offences now lie in the ban rule's window.
    Recorded {
        /// Unspent offences within the ban rule's window, this one included.
        offences: u32,
    },
    /// This offence triggered a ban, in force until `until`.
    Banned {
        /// When the ban ends.
        until: Timestamp,
    },
}

/// A sliding log: the times of accepted requests, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Log {
    pub(crate) times: VecDeque<u64>,
    pub(crate) expires: u64,
}

impl Log {
    /// How many entries lie in `(now - window, now]`.
    fn in_window(&self, now: u64, window: u64) -> usize {
        let floor = now.saturating_sub(window);
        let first = self.times.partition_point(|&t| t <= floor);
        self.times.len() - first
    }

    /// When a rule of `count` per `window` refuses now, the wait until it would not.
    fn refusal(&self, rule: &Rule, now: u64) -> Option<u64> {
        let count = rule.count() as usize;
        if count == 0 {
            return Some(rule.window_ms().max(1));
        }
        let len = self.times.len();
        if len < count {
            return None;
        }
        let oldest_counted = self.times[len - count];
        let leaves_at = oldest_counted.saturating_add(rule.window_ms());
        (leaves_at > now).then(|| leaves_at - now)
    }

    fn quota(&self, rule: &Rule, now: u64) -> (u32, u64) {
        let n = self.in_window(now, rule.window_ms());
        let remaining = (rule.count() as usize).saturating_sub(n) as u32;
        let reset = if n == 0 {
            0
        } else {
            let oldest = self.times[self.times.len() - n];
            oldest.saturating_add(rule.window_ms()).saturating_sub(now)
        };
        (remaining, reset)
    }

    fn push(&mut self, now: u64, cap: usize, longest: u64) {
        while self.times.len() >= cap.max(1) {
            self.times.pop_front();
        }
        self.times.push_back(now);
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
    fn roll(&mut self, p: &Policy, now: u64) {
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

    fn grace_eligible(&self, p: &Policy, now: u64) -> bool {
        let Some(g) = p.grace else { return false };
        let interval = duration_millis(g.interval);
        let long_ago = |t: u64| t == 0 || now.saturating_sub(t) >= interval;
        long_ago(self.last_block_at) && long_ago(self.grace_used_at)
    }

    fn touch(&mut self, p: &Policy, now: u64) {
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
    fn expires(&self) -> u64 {
        match self {
            Scope::Log(log) => log.expires,
            Scope::Policy(p) => p.expires,
        }
    }
}

/// Everything floodgate knows about one client: its sliding logs, policy records, unspent
/// offences and ban. Stores keep one per client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientState {
    pub(crate) last_seen: u64,
    /// (until, reason); until is `NEVER` for a permanent ban.
    pub(crate) ban: Option<(u64, BanReason)>,
    pub(crate) offences: VecDeque<u64>,
    pub(crate) offences_expire: u64,
    pub(crate) scopes: Vec<(ScopeId, Scope)>,
}

impl ClientState {
    /// A client never seen before.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last time this client made a request or was reported.
    pub fn last_seen(&self) -> Timestamp {
        Timestamp::from_millis(self.last_seen)
    }

    /// After this time the state holds nothing that could affect a decision, and may be
    /// deleted. [`Timestamp::NEVER`] for a permanent ban or a record kept forever.
    pub fn expires_at(&self) -> Timestamp {
        let scopes = self.scopes.iter().map(|(_, s)| s.expires()).max();
        let ban = self.ban.map_or(0, |(until, _)| until);
        Timestamp::from_millis(scopes.unwrap_or(0).max(ban).max(self.offences_expire))
    }

    /// The ban in force at `now`: `Some(None)` for a permanent one.
    pub fn ban_at(&self, now: Timestamp) -> Option<(Option<Timestamp>, BanReason)> {
        match self.ban {
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
            None => {
                self.scopes.push((id, Scope::Log(Log::default())));
                self.scopes.len() - 1
            }
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
            None => {
                self.scopes.push((id, Scope::Policy(Box::default())));
                self.scopes.len() - 1
            }
        };
        match &mut self.scopes[i].1 {
            Scope::Policy(p) => p,
            Scope::Log(_) => unreachable!("scope {i} was just made a policy"),
        }
    }

    /// Drops scopes that expired, so that status and storage hold only live records.
    pub fn prune(&mut self, now: Timestamp) {
        let now = now.as_millis();
        self.scopes.retain(|(_, s)| s.expires() > now);
        if matches!(self.ban, Some((until, _)) if until <= now) {
            self.ban = None;
        }
        if self.offences_expire <= now {
            self.offences.clear();
        }
    }

    /// Decides one request under `plan` at `now`, and records it when it is allowed.
    ///
    /// All limits are checked together: a refused request consumes no quota anywhere. A
    /// policy's refusal may still start a block or a punishment, which is its purpose.
    pub fn check(&mut self, plan: &Plan, now: Timestamp) -> Decision {
        let now = now.as_millis();
        self.last_seen = now;
        if plan.ban_check {
            if let Some((until, reason)) = self.ban {
                if until > now {
                    return Decision::Banned {
                        until: (until != NEVER).then_some(Timestamp::from_millis(until)),
                        reason,
                        started: false,
                    };
                }
                self.ban = None;
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
            let refusal = if st.blocked_until > now {
                if p.relative_block {
                    st.blocked_until = now.saturating_add(p.block_ms());
                }
                Some((LimitReason::Blocked, st.blocked_until - now))
            } else if p.cooldown_ms > 0
                && st.last_request != 0
                && now < st.last_request.saturating_add(p.cooldown_ms)
            {
                Some((LimitReason::Cooldown, st.last_request + p.cooldown_ms - now))
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
                // An empty log refuses only for a zero-count rule.
                for (k, rule) in lp.rules.iter().enumerate() {
                    if rule.count() == 0 {
                        let wait = rule.window_ms().max(1);
                        if refused.is_none_or(|(_, w)| wait > w) {
                            refused = Some((lp.first_limit + k, wait));
                        }
                    }
                }
                continue;
            };
            for (k, rule) in lp.rules.iter().enumerate() {
                if let Some(wait) = log.refusal(rule, now) {
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
            if st.count >= allowance {
                if let Some(g) = p.grace {
                    let in_grace = st.window_start != 0 && st.grace_window == st.window_start;
                    if in_grace || eligible {
                        allowance = allowance.saturating_add(g.extra);
                        grace_taken = !in_grace;
                    }
                }
            }
            if st.count >= allowance {
                return self.block(pp, now);
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
            log.push(now, lp.cap, lp.longest_ms);
            for (k, rule) in lp.rules.iter().enumerate() {
                let (remaining, reset) = log.quota(rule, now);
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
            st.count += 1;
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
    fn block(&mut self, pp: &PolicyPlan, now: u64) -> Decision {
        let p = &pp.policy;
        let st = self.policy_mut(pp.scope);
        st.blocked_until = now.saturating_add(p.block_ms());
        st.block_count = st.block_count.saturating_add(1);
        st.last_block_at = now;
        let punish = st.block_count > p.block_limit;
        let mut until = 0;
        if punish {
            until = match p.punishment {
                Punishment::Blacklist => NEVER,
                Punishment::Ban(base) => {
                    let length = match p.adaptive {
                        Some(a) => {
                            let jitter = duration_millis(a.jitter);
                            let extra = if jitter == 0 {
                                0
                            } else {
                                fastrand::u64(0..=jitter)
                            };
                            duration_millis(a.length(base, st.punishments)).saturating_add(extra)
                        }
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
            self.set_ban(until, BanReason::Punished);
            return Decision::Banned {
                until: (until != NEVER).then_some(Timestamp::from_millis(until)),
                reason: BanReason::Punished,
                started: true,
            };
        }
        Decision::Limited {
            reason: LimitReason::Blocked,
            limit: pp.limit,
            retry_after: Duration::from_millis(p.block_ms()),
            started: true,
        }
    }

    /// Sets a ban ending at `until` (ms), keeping a longer one already in force.
    fn set_ban(&mut self, until: u64, reason: BanReason) {
        match self.ban {
            Some((current, _)) if current >= until => {}
            _ => self.ban = Some((until, reason)),
        }
    }

    /// Records one offence; bans the client when the rule's count of unspent offences lies
    /// within its window. Offences that lead to a ban are spent.
    pub fn report(&mut self, rule: &BanRule, now: Timestamp) -> ReportOutcome {
        let now = now.as_millis();
        self.last_seen = now;
        let count = rule.count().max(1) as usize;
        while self.offences.len() >= count {
            self.offences.pop_front();
        }
        self.offences.push_back(now);
        self.offences_expire = now.saturating_add(rule.window_ms());
        let floor = now.saturating_sub(rule.window_ms());
        let in_window = self.offences.iter().filter(|&&t| t > floor).count();
        if in_window >= count {
            let until = now.saturating_add(rule.duration_ms());
            self.set_ban(until, BanReason::Reported);
            self.offences.clear();
            self.offences_expire = 0;
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
        self.ban = Some((until, BanReason::Operator));
    }

    /// Lifts any ban or blacklist, forgets unspent offences, and clears policy blocks and
    /// block counts. Returns whether a ban was in force.
    pub fn unban(&mut self, now: Timestamp) -> bool {
        let was = self.ban_at(now).is_some();
        self.ban = None;
        self.offences.clear();
        self.offences_expire = 0;
        for (_, scope) in &mut self.scopes {
            if let Scope::Policy(st) = scope {
                st.blocked_until = 0;
                st.block_count = 0;
                st.punished_until = 0;
            }
        }
        was
    }
}

//! The decision core: one client's state and the pure functions that decide on it.
//!
//! Nothing here knows about actix-web, threads or storage. A [`Store`](crate::Store) keeps one
//! [`ClientState`] per client and runs [`ClientState::check`] or [`ClientState::report`] on it
//! atomically; the result is a [`Decision`]. Every function takes the current time as an
//! argument, so the whole family of rules is tested with plain values in microseconds.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::policy::Policy;
use crate::rules::Rule;

mod client_state;
mod release;
mod scope;
mod stake;
mod times;
mod window;

pub use client_state::ClientState;
pub(crate) use scope::{PolicyState, RuleLog, Scope, Windows};
pub(crate) use stake::Stake;
pub(crate) use times::Times;
pub(crate) use window::{is_bounded, Window};

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
    /// Times to keep in the exact log: the largest count among the rules that count there
    /// (those of at most `window::EXACT_MAX`); 0 when every rule counts in a window.
    pub(crate) cap: usize,
    /// How many rules count in a bounded window.
    pub(crate) bounded: usize,
    /// How long a request stays counted, at most: the longest window, plus a sub-window
    /// less one millisecond for a rule counting in a bounded window.
    pub(crate) longest_ms: u64,
    /// Index of the first rule's entry in `Plan::limits`.
    pub(crate) first_limit: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct PolicyPlan {
    pub(crate) scope: ScopeId,
    pub(crate) policy: Policy,
    pub(crate) limit: usize,
}

/// How long after a request a rule may still count it: its window, and for a bounded
/// window the rest of the request's sub-window too (so that the state does not expire, and
/// forget the request, while the window still counts it).
fn keep_ms(rule: &Rule) -> u64 {
    let window = rule.window_ms();
    if is_bounded(rule.count()) {
        window.saturating_add(window::width_for(window) - 1)
    } else {
        window
    }
}

/// What to check for one request: the ban, the sliding-log scopes and the policy that apply
/// to its route. Built once per route and shared.
#[derive(Clone, Debug)]
pub struct Plan {
    pub(crate) ban_check: bool,
    pub(crate) count: bool,
    pub(crate) logs: Vec<LogPlan>,
    pub(crate) policy: Option<PolicyPlan>,
    /// Units of every limit's count one request uses (its cost); at least 1.
    pub(crate) units: u32,
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
            units: 1,
            limits: Vec::new(),
        }
    }

    /// A plan checking the ban, then every `(scope, rules)` sliding log and the policy.
    ///
    /// Every plan that names a scope must give it the same rules: a log keeps only as many
    /// times as its largest count needs, so a scope checked under a smaller count too would
    /// forget requests that the larger one still counts.
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
                cap: rules
                    .iter()
                    .filter(|r| !is_bounded(r.count()))
                    .map(|r| r.count() as usize)
                    .max()
                    .unwrap_or(0),
                bounded: rules.iter().filter(|r| is_bounded(r.count())).count(),
                longest_ms: rules.iter().map(keep_ms).max().unwrap_or(0),
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
            units: 1,
            limits,
        }
    }

    /// This plan with each request using `units` of every limit's count (at least 1): a
    /// request of cost 5 under a rule of 100 per minute is one of twenty.
    pub fn with_units(mut self, units: u32) -> Plan {
        self.units = units.max(1);
        self
    }

    /// Units of every limit's count that one request uses.
    pub fn units(&self) -> u32 {
        self.units
    }

    /// This plan without its ban check, for shadow mode: the ban is the enforcing plan's to
    /// check (the one [`Store::check`](crate::Store::check) runs first).
    pub(crate) fn without_ban_check(mut self) -> Plan {
        self.ban_check = false;
        self
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
    /// The client asked for a scanner path ([`ProbeBan`](crate::ProbeBan)).
    Probe,
}

impl BanReason {
    /// The reason's name in listings, JSON and logs: `report`, `operator`, `policy` or
    /// `probe`.
    pub const fn as_str(self) -> &'static str {
        match self {
            BanReason::Reported => "report",
            BanReason::Operator => "operator",
            BanReason::Punished => "policy",
            BanReason::Probe => "probe",
        }
    }

    /// The name a listing gives a ban of this reason ending at `until`: `blacklist` for a
    /// permanent ban (`until` is `None`), else [`as_str`](Self::as_str).
    pub const fn listed_as(self, until: Option<crate::clock::Timestamp>) -> &'static str {
        match until {
            None => "blacklist",
            Some(_) => self.as_str(),
        }
    }
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

/// Re-exported for the memory store's test of its documented sizes.
#[cfg(test)]
pub(crate) use client_state::Extras;

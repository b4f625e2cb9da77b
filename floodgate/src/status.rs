//! A client's status, for operators: bans, offences, and every window.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::client::ClientKey;
use crate::clock::{duration_millis, Timestamp};
use crate::policy::Policy;
use crate::rules::Rule;
use crate::state::{BanReason, ClientState, Scope, ScopeId};

/// What a scope id stands for.
#[derive(Clone, Debug)]
pub(crate) struct ScopeInfo {
    pub(crate) label: String,
    pub(crate) kind: ScopeKind,
}

#[derive(Clone, Debug)]
pub(crate) enum ScopeKind {
    Rules(Vec<Rule>),
    Policy(Policy),
}

/// A client's ban or blacklist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanStatus {
    /// When it ends; `None` for a blacklist (permanent).
    pub until: Option<Timestamp>,
    /// When it began (see [`ClientState::ban_since`]); `None` when unknown.
    pub since: Option<Timestamp>,
    /// Why.
    pub reason: BanReason,
}

/// One window of a client: a sliding-log rule, or a policy's fixed window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowStatus {
    /// Where it applies: `"global"`, or the route's name with `rules` or `policy`.
    pub scope: String,
    /// The limit, such as `"20/1s"`.
    pub limit: String,
    /// True while the window counts requests (a request lies in the sliding window, or the
    /// policy window is open); false when it has lapsed.
    pub active: bool,
    /// Requests counted in the window.
    pub used: u32,
    /// Requests left before a refusal.
    pub remaining: u32,
    /// When the window ends (policy) or its oldest request leaves it (sliding log).
    pub resets_at: Option<Timestamp>,
    /// Policy only: the end of a running block.
    pub blocked_until: Option<Timestamp>,
    /// Policy only: the blocks counted towards the block limit.
    pub block_count: u32,
    /// Policy only: punishments so far (drives adaptive punishment).
    pub punishments: u32,
}

/// Everything floodgate holds about one client. From [`GateKeeper::status`](crate::GateKeeper::status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientStatus {
    /// The client.
    pub client: ClientKey,
    /// The ban or blacklist in force, if any.
    pub ban: Option<BanStatus>,
    /// Unspent reported offences within the ban rule's window.
    pub offences: u32,
    /// Every window floodgate keeps for this client.
    pub windows: Vec<WindowStatus>,
    /// The client's last request or report, `None` when nothing is stored.
    pub last_seen: Option<Timestamp>,
}

impl ClientStatus {
    /// True when a ban or blacklist is in force.
    pub fn is_banned(&self) -> bool {
        self.ban.is_some()
    }

    /// True when a permanent ban (blacklist) is in force.
    pub fn is_blacklisted(&self) -> bool {
        matches!(self.ban, Some(BanStatus { until: None, .. }))
    }

    pub(crate) fn new(
        client: ClientKey,
        state: Option<&ClientState>,
        scopes: &HashMap<ScopeId, ScopeInfo>,
        offence_window: Option<Duration>,
        now: Timestamp,
    ) -> Self {
        let Some(state) = state else {
            return ClientStatus {
                client,
                ban: None,
                offences: 0,
                windows: Vec::new(),
                last_seen: None,
            };
        };
        let now_ms = now.as_millis();
        let at = |ms: u64| (ms > now_ms).then_some(Timestamp::from_millis(ms));
        let mut windows = Vec::new();
        for (id, scope) in &state.scopes {
            let info = scopes.get(id);
            let label = info.map_or_else(|| format!("scope {:016x}", id.0), |i| i.label.clone());
            match (scope, info.map(|i| &i.kind)) {
                (Scope::RuleLog(log), Some(ScopeKind::Rules(rules))) => {
                    for (k, rule) in rules.iter().enumerate() {
                        let (used, resets) = log.usage(rules, k, now_ms);
                        let used = u32::try_from(used).unwrap_or(u32::MAX);
                        windows.push(WindowStatus {
                            scope: label.clone(),
                            limit: rule.to_string(),
                            active: used > 0,
                            used,
                            remaining: rule.count().saturating_sub(used),
                            resets_at: resets.and_then(at),
                            blocked_until: None,
                            block_count: 0,
                            punishments: 0,
                        });
                    }
                }
                (Scope::RuleLog(log), _) => windows.push(WindowStatus {
                    scope: label,
                    limit: String::from("unknown"),
                    active: log.expires > now_ms,
                    used: log.times.len() as u32,
                    remaining: 0,
                    resets_at: at(log.expires),
                    blocked_until: None,
                    block_count: 0,
                    punishments: 0,
                }),
                (Scope::Policy(p), kind) => {
                    let policy = match kind {
                        Some(ScopeKind::Policy(policy)) => Some(policy),
                        _ => None,
                    };
                    let window_ms = policy.map_or(0, |p| p.time_window_ms);
                    let end = p.window_start.saturating_add(window_ms);
                    let active = p.window_start != 0 && end > now_ms;
                    let allowance = policy.map_or(0, |pol| pol.amount.saturating_add(p.carry));
                    let used = if active { p.count } else { 0 };
                    windows.push(WindowStatus {
                        scope: label,
                        limit: policy.map_or_else(|| String::from("unknown"), Policy::name),
                        active,
                        used,
                        remaining: allowance.saturating_sub(used),
                        resets_at: if active { at(end) } else { None },
                        blocked_until: at(p.blocked_until),
                        block_count: p.block_count,
                        punishments: p.punishments,
                    });
                }
            }
        }
        let ban = state.ban_at(now).map(|(until, reason)| BanStatus {
            until,
            since: state.ban_since(now),
            reason,
        });
        // Only the offences that still lie in the ban rule's window count: the log keeps
        // older ones until the next report pushes them out.
        let offences = match state.offences() {
            Some((times, expire)) if expire > now_ms => {
                let floor = offence_window.map_or(0, |w| now_ms.saturating_sub(duration_millis(w)));
                times.iter().filter(|&t| t > floor).count() as u32
            }
            _ => 0,
        };
        ClientStatus {
            client,
            ban,
            offences,
            windows,
            last_seen: Some(state.last_seen()),
        }
    }
}

/// For people: the client, its ban, offences and last request, then one line per window,
/// times in RFC 3339 UTC.
///
/// ```text
/// 203.0.113.7: banned until 2026-12-06T01:37:51Z (report) since 2026-12-06T01:27:51Z, 0 offences, last seen 2026-12-06T01:27:51Z
///   global 20/1s: 3 used, 17 left, resets at 2026-12-06T01:27:52Z
/// ```
impl fmt::Display for ClientStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.client.logged())?;
        match &self.ban {
            Some(BanStatus {
                until: Some(until),
                reason,
                ..
            }) => write!(f, "banned until {until} ({})", reason.as_str())?,
            Some(BanStatus { until: None, .. }) => f.write_str("blacklisted")?,
            None => f.write_str("not banned")?,
        }
        if let Some(since) = self.ban.as_ref().and_then(|b| b.since) {
            write!(f, " since {since}")?;
        }
        write!(f, ", {} offences", self.offences)?;
        match self.last_seen {
            Some(t) => write!(f, ", last seen {t}")?,
            None => f.write_str(", never seen")?,
        }
        for w in &self.windows {
            write!(
                f,
                "\n  {} {}: {} used, {} left",
                w.scope, w.limit, w.used, w.remaining
            )?;
            if let Some(t) = w.resets_at {
                write!(f, ", resets at {t}")?;
            }
            if let Some(t) = w.blocked_until {
                write!(f, ", blocked until {t}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::BanRule;

    #[test]
    fn offences_count_only_those_within_the_ban_rules_window() {
        let rule = BanRule::new(3, Duration::from_secs(10), Duration::from_secs(600));
        let mut state = ClientState::new();
        let t0 = Timestamp::from_millis(1_000_000);
        for n in 0..3 {
            state.report(&rule, t0 + Duration::from_secs(6 * n));
        }
        let key = ClientKey::custom("k");
        let status_at = |now| {
            ClientStatus::new(
                key.clone(),
                Some(&state),
                &HashMap::new(),
                Some(rule.window()),
                now,
            )
        };
        // Offences at 0, 6 and 12 s: at 12 s only the last two lie in the 10 s window.
        assert_eq!(status_at(t0 + Duration::from_secs(12)).offences, 2);
        assert_eq!(status_at(t0 + Duration::from_secs(17)).offences, 1);
        assert_eq!(status_at(t0 + Duration::from_secs(22)).offences, 0);
        assert!(!status_at(t0 + Duration::from_secs(12)).is_banned());
    }

    #[test]
    fn statuses_read_with_rfc_3339_times_and_escaped_keys() {
        let rule = BanRule::new(1, Duration::from_secs(10), Duration::from_secs(600));
        let mut state = ClientState::new();
        let t0 = Timestamp::from_millis(1_796_521_071_000); // 2026-12-06T01:37:51Z
        state.report(&rule, t0);
        let status = ClientStatus::new(
            ClientKey::custom("evil\nkey"),
            Some(&state),
            &HashMap::new(),
            Some(rule.window()),
            t0,
        );
        assert_eq!(
            status.to_string(),
            "evil\\nkey: banned until 2026-12-06T01:47:51Z (report) since \
             2026-12-06T01:37:51Z, 0 offences, last seen 2026-12-06T01:37:51Z"
        );
        let mut black = ClientState::new();
        black.ban(None, t0);
        let status = ClientStatus::new(
            ClientKey::custom("k"),
            Some(&black),
            &HashMap::new(),
            None,
            t0,
        );
        assert!(status
            .to_string()
            .starts_with("k: blacklisted since 2026-12-06T01:37:51Z"));
    }
}

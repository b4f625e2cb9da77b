//! What a bounded store would lose by forgetting a client.

use super::{BanReason, ClientState, Scope, NEVER};
use crate::clock::Timestamp;

/// What a bounded store would lose by forgetting a client, from least to most: how it ranks
/// the client when it must make room (see [`MemoryStore`](crate::MemoryStore)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stake {
    /// Only counters that rebuild themselves: sliding logs, a policy window's count.
    Counters,
    /// Escalation: unspent offences, or a policy record with a block count, punishments, a
    /// running block or carried quota. Forgetting it would let the client start over.
    Escalation,
    /// A ban in force until `until` (ms) that no operator set: reported, punished, probed.
    Ban {
        /// When it ends (ms); never `NEVER`.
        until: u64,
    },
    /// A permanent ban that no operator set (a policy's blacklist).
    Blacklist {
        /// When it began (ms): the block that earned it, else the client's last request.
        since: u64,
    },
    /// A ban set by an operator, timed or not.
    Operator,
}

impl ClientState {
    /// What forgetting this client at `now` would lose.
    pub(crate) fn stake(&self, now: Timestamp) -> Stake {
        let now = now.as_millis();
        if let Some((until, reason)) = self.ban_slot().filter(|&(until, _)| until > now) {
            return match reason {
                BanReason::Operator => Stake::Operator,
                _ if until == NEVER => Stake::Blacklist {
                    since: self
                        .scopes
                        .iter()
                        .find_map(|(_, s)| match s {
                            Scope::Policy(p) if p.punished_until == NEVER => Some(p.last_block_at),
                            _ => None,
                        })
                        .unwrap_or(self.last_seen),
                },
                _ => Stake::Ban { until },
            };
        }
        let offences = self
            .rare
            .as_ref()
            .is_some_and(|r| !r.offences.is_empty() && r.offences_expire > now);
        let escalation = offences
            || self.scopes.iter().any(|(_, s)| match s {
                Scope::Policy(p) => {
                    p.expires > now
                        && (p.block_count > 0
                            || p.punishments > 0
                            || p.carry > 0
                            || p.blocked_until > now
                            || p.punished_until > now)
                }
                Scope::RuleLog(_) => false,
            });
        if escalation {
            Stake::Escalation
        } else {
            Stake::Counters
        }
    }
}

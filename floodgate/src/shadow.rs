//! Shadow mode: a route's (or the app's, or a target's) limits checked and counted as usual,
//! with what they would refuse logged and served. This file says what shadow mode changes;
//! `shadow_check.rs` runs the observed half of a request's plan.
//!
//! A request's plan is split in two: the enforcing plan (the ban check and the limits not in
//! shadow mode) decides; when it allows, the shadow plan (the limits in shadow mode, without
//! the ban check) is checked under the same key and only observed. A request the enforcing
//! plan refuses never reaches the shadow plan: it would have consumed nothing there either.
//! Shadow policies never punish (their block limit is lifted), so shadow mode never bans.

use crate::client::ClientKey;
use crate::policy::Policy;
use crate::rules::BanRule;
use crate::targeting::DenyReason;

/// Marks a request routed to a route in shadow mode (in its extensions).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShadowRoute;

/// `policy` as shadow mode runs it: blocks count, punishments never come.
pub(crate) fn shadow_policy(mut policy: Policy) -> Policy {
    policy.block_limit = u32::MAX;
    policy
}

/// The ban rule reports run under in shadow mode: offences count and a ban is reached as
/// usual, but it ends as it starts, so it is never in force.
pub(crate) fn shadow_ban_rule(rule: BanRule) -> BanRule {
    BanRule::new(rule.count(), rule.window(), std::time::Duration::ZERO)
}

/// Logs a refusal that shadow mode turned into a served request.
pub(crate) fn would_deny(log_target: &str, client: &ClientKey, reason: &DenyReason) {
    log::info!(target: log_target,
        "floodgate: shadow: {} would have been denied ({reason:?}); served",
        client.logged()
    );
}

/// Logs the ban a report or a probe would have caused.
pub(crate) fn would_ban(
    log_target: &str,
    client: &ClientKey,
    what: &str,
    length: std::time::Duration,
) {
    log::warn!(target: log_target,
        "floodgate: shadow: {} would have been banned for {}s after {what}; not banned",
        client.logged(),
        length.as_secs()
    );
}

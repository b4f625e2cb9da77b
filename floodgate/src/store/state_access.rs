//! The one shape of the stores that run the decision core themselves (memory, SQLite): each
//! gives a read-modify-write of one client's state ([`StateAccess::with_state`], under a shard
//! lock or in one transaction) and the [`Store`](super::Store) operations that change a state
//! are written once here on top of it. The Redis store runs the same decisions in its script.

use std::sync::Arc;

use super::StoreFuture;
use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::rules::BanRule;
use crate::state::{BanReason, ClientState, Decision, Plan, ReportOutcome};

/// A read-modify-write of one client's state.
pub(crate) trait StateAccess {
    /// Runs `f` on `client`'s state at `now`, atomically, creating a fresh state when it has
    /// none and `create`; `None` when it has none and not `create`. `f` may run more than once
    /// (a store may retry a failed transaction); it is a function of the state it is given.
    fn with_state<T, F>(
        &self,
        client: &ClientKey,
        now: Timestamp,
        create: bool,
        f: F,
    ) -> StoreFuture<Option<T>>
    where
        T: Send + 'static,
        F: Fn(&mut ClientState) -> T + Send + 'static;
}

/// [`Store::check`](super::Store::check): a client without state and a plan that counts
/// nothing creates none. The random draw for an adaptive punishment is made here, outside the
/// core, once per decision.
pub(crate) fn check(
    s: &impl StateAccess,
    client: &ClientKey,
    plan: &Arc<Plan>,
    now: Timestamp,
) -> StoreFuture<Decision> {
    let plan = Arc::clone(plan);
    let create = plan.counts();
    let draw = fastrand::u64(..);
    s.with_state(client, now, create, move |st| {
        st.check_with_draw(&plan, now, draw)
    })
    .map(|d| d.unwrap_or(Decision::Allowed { quota: None }))
}

/// [`Store::release`](super::Store::release): a client without state is not created.
pub(crate) fn release(
    s: &impl StateAccess,
    client: &ClientKey,
    plan: &Arc<Plan>,
    at: Timestamp,
    now: Timestamp,
) -> StoreFuture<()> {
    let plan = Arc::clone(plan);
    s.with_state(client, now, false, move |st| st.release(&plan, at))
        .map(drop)
}

/// [`Store::report`](super::Store::report).
pub(crate) fn report(
    s: &impl StateAccess,
    client: &ClientKey,
    rule: &BanRule,
    now: Timestamp,
) -> StoreFuture<ReportOutcome> {
    let rule = *rule;
    s.with_state(client, now, true, move |st| st.report(&rule, now))
        .map(|o| o.unwrap_or(ReportOutcome::Recorded { offences: 0 }))
}

/// [`Store::ban`](super::Store::ban).
pub(crate) fn ban(
    s: &impl StateAccess,
    client: &ClientKey,
    until: Option<Timestamp>,
    now: Timestamp,
) -> StoreFuture<()> {
    s.with_state(client, now, true, move |st| st.ban(until, now))
        .map(drop)
}

/// [`Store::extend_ban`](super::Store::extend_ban).
pub(crate) fn extend_ban(
    s: &impl StateAccess,
    client: &ClientKey,
    until: Option<Timestamp>,
    reason: BanReason,
    now: Timestamp,
) -> StoreFuture<()> {
    s.with_state(client, now, true, move |st| {
        st.extend_ban(until, reason, now)
    })
    .map(drop)
}

/// [`Store::unban`](super::Store::unban): a client never seen is not created.
pub(crate) fn unban(s: &impl StateAccess, client: &ClientKey, now: Timestamp) -> StoreFuture<bool> {
    s.with_state(client, now, false, move |st| st.unban(now))
        .map(|was| was.unwrap_or(false))
}

/// The [`Store`](super::Store) methods that change a state, for a store that gives
/// [`StateAccess`]: written once here, expanded inside each such store's `impl Store`.
macro_rules! state_changing_ops {
    () => {
        fn check(
            &self,
            client: &$crate::client::ClientKey,
            plan: &::std::sync::Arc<$crate::state::Plan>,
            now: $crate::clock::Timestamp,
        ) -> $crate::store::StoreFuture<$crate::state::Decision> {
            $crate::store::state_access::check(self, client, plan, now)
        }

        fn release(
            &self,
            client: &$crate::client::ClientKey,
            plan: &::std::sync::Arc<$crate::state::Plan>,
            at: $crate::clock::Timestamp,
            now: $crate::clock::Timestamp,
        ) -> $crate::store::StoreFuture<()> {
            $crate::store::state_access::release(self, client, plan, at, now)
        }

        fn report(
            &self,
            client: &$crate::client::ClientKey,
            rule: &$crate::rules::BanRule,
            now: $crate::clock::Timestamp,
        ) -> $crate::store::StoreFuture<$crate::state::ReportOutcome> {
            $crate::store::state_access::report(self, client, rule, now)
        }

        fn ban(
            &self,
            client: &$crate::client::ClientKey,
            until: Option<$crate::clock::Timestamp>,
            now: $crate::clock::Timestamp,
        ) -> $crate::store::StoreFuture<()> {
            $crate::store::state_access::ban(self, client, until, now)
        }

        fn extend_ban(
            &self,
            client: &$crate::client::ClientKey,
            until: Option<$crate::clock::Timestamp>,
            reason: $crate::state::BanReason,
            now: $crate::clock::Timestamp,
        ) -> $crate::store::StoreFuture<()> {
            $crate::store::state_access::extend_ban(self, client, until, reason, now)
        }

        fn unban(
            &self,
            client: &$crate::client::ClientKey,
            now: $crate::clock::Timestamp,
        ) -> $crate::store::StoreFuture<bool> {
            $crate::store::state_access::unban(self, client, now)
        }
    };
}
pub(crate) use state_changing_ops;

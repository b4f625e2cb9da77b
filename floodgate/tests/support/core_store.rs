//! The decision core as a store: each client's `ClientState` in a map, and nothing else (no
//! shards, no eviction, no I/O), so that the store scenarios run on the core itself. The
//! randomness the core takes is drawn here, outside it. Included by `#[path]`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use floodgate::{
    BanReason, BanRule, ClientKey, ClientState, Decision, Plan, ReportOutcome, Store, StoreFuture,
    Timestamp,
};

#[derive(Debug, Default)]
pub(crate) struct CoreStore {
    states: Mutex<HashMap<ClientKey, ClientState>>,
}

impl CoreStore {
    fn with<R>(
        &self,
        client: &ClientKey,
        create: bool,
        f: impl FnOnce(&mut ClientState) -> R,
    ) -> Option<R> {
        let mut states = self.states.lock().unwrap();
        match states.get_mut(client) {
            Some(state) => Some(f(state)),
            None if create => Some(f(states.entry(client.clone()).or_default())),
            None => None,
        }
    }
}

impl Store for CoreStore {
    fn check(&self, client: &ClientKey, plan: &Arc<Plan>, now: Timestamp) -> StoreFuture<Decision> {
        let draw = fastrand::u64(..);
        let decision = self
            .with(client, plan.counts(), |s| {
                s.check_with_draw(plan, now, draw)
            })
            .unwrap_or(Decision::Allowed { quota: None });
        StoreFuture::ready(Ok(decision))
    }

    fn report(
        &self,
        client: &ClientKey,
        rule: &BanRule,
        now: Timestamp,
    ) -> StoreFuture<ReportOutcome> {
        let outcome = self.with(client, true, |s| s.report(rule, now));
        StoreFuture::ready(Ok(outcome.expect("created")))
    }

    fn ban(&self, client: &ClientKey, until: Option<Timestamp>, now: Timestamp) -> StoreFuture<()> {
        self.with(client, true, |s| s.ban(until, now));
        StoreFuture::ready(Ok(()))
    }

    fn extend_ban(
        &self,
        client: &ClientKey,
        until: Option<Timestamp>,
        reason: BanReason,
        now: Timestamp,
    ) -> StoreFuture<()> {
        self.with(client, true, |s| s.extend_ban(until, reason, now));
        StoreFuture::ready(Ok(()))
    }

    fn release(
        &self,
        client: &ClientKey,
        plan: &Arc<Plan>,
        at: Timestamp,
        _now: Timestamp,
    ) -> StoreFuture<()> {
        self.with(client, false, |s| s.release(plan, at));
        StoreFuture::ready(Ok(()))
    }

    fn unban(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<bool> {
        let was = self.with(client, false, |s| s.unban(now));
        StoreFuture::ready(Ok(was.unwrap_or(false)))
    }

    fn state(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<Option<ClientState>> {
        let state = self
            .with(client, false, |s| {
                let mut copy = s.clone();
                copy.prune(now);
                copy
            })
            .filter(|s| s.expires_at() > now);
        StoreFuture::ready(Ok(state))
    }

    fn sweep(&self, now: Timestamp) -> StoreFuture<usize> {
        let mut states = self.states.lock().unwrap();
        let before = states.len();
        states.retain(|_, s| s.expires_at() > now);
        StoreFuture::ready(Ok(before - states.len()))
    }
}

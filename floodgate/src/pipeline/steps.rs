//! The store steps of one decision: a probe's ban or report, the bans of the client's address
//! and IPv6 networks, then the route's plan under the client's key, in one future that is
//! ready at once on a synchronous store.

use std::future::Future;
use std::sync::Arc;

use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::gatekeeper::Gate;
use crate::state::{BanReason, Decision, Plan};
use crate::store::{Store, StoreFuture};
use crate::targeting::ProbeAction;

/// The keys whose bans refuse a request counted under `key`, besides `key` itself: the IP
/// address's when the request is counted under another key, and the IPv6 networks around
/// it that [`Ipv6Rotation`](crate::Ipv6Rotation) may have banned.
pub(crate) fn ban_keys(shared: &Gate, ip_key: &ClientKey, key: &ClientKey) -> Vec<ClientKey> {
    let mut bans = Vec::new();
    if key != ip_key {
        bans.push(ip_key.clone());
    }
    if shared.ipv6_rotation.is_on() {
        bans.extend(shared.ipv6_rotation.networks(ip_key));
    }
    bans
}

/// The store operation a probe asks for, on the client's IP key.
pub(crate) fn probe_step(
    shared: &Gate,
    ip_key: &ClientKey,
    now: Timestamp,
) -> Option<StoreFuture<()>> {
    let action = shared.targeting.probe_action()?;
    log::info!(target: shared.log_target(),
        "floodgate: {} probed a scanner path ({action:?})",
        ip_key.logged()
    );
    match action {
        // Shadow mode never bans.
        ProbeAction::Ban(duration) if shared.shadow => {
            let length = duration.unwrap_or(std::time::Duration::MAX);
            crate::shadow::would_ban(shared.log_target(), ip_key, "a probe", length);
            None
        }
        // Never shortens a longer ban or a blacklist in force.
        ProbeAction::Ban(duration) => {
            let until = duration.map(|d| now + d);
            let ban = shared
                .store
                .extend_ban(ip_key, until, BanReason::Probe, now);
            let network = shared.note_ban(ip_key, until, BanReason::Probe, now);
            if let Some(m) = &shared.metrics {
                m.ban(
                    ip_key,
                    until,
                    crate::metrics::BanKind::of(BanReason::Probe, until),
                );
            }
            Some(then(ban, network))
        }
        ProbeAction::Report => {
            let Some(rule) = shared.ban_rule else {
                log::warn!(target: shared.log_target(), "floodgate: probe reports need a ban rule: set Floodgate::ban_rule");
                return None;
            };
            let rule = if shared.shadow {
                crate::shadow::shadow_ban_rule(rule)
            } else {
                rule
            };
            let mut f = shared.store.report(ip_key, &rule, now);
            Some(match f.take_ready() {
                Some(r) => StoreFuture::ready(r.map(drop)),
                None => StoreFuture::pending(async move { f.await.map(drop) }),
            })
        }
    }
}

/// The decision for one request: the probe's store operation first, then the bans of `bans`
/// (the IP address's when the request is counted under another key, the IPv6 networks around
/// it), then `plan` under `key`. A ban found anywhere refuses. A store failure while checking
/// `bans` is the answer unless `plan` refuses, so that the store-failure policy applies to it
/// (fail-closed refuses with 503). Synchronous stores answer at once; otherwise the steps
/// left run in one future. On a store that [checks together](Store::checks_together), the
/// checks of `bans` and of `key` are sent at once (one round trip), same answer.
pub(crate) fn decide(
    store: &Arc<dyn Store>,
    bans: Vec<ClientKey>,
    key: &ClientKey,
    plan: &Arc<Plan>,
    now: Timestamp,
    probe: Option<StoreFuture<()>>,
) -> StoreFuture<Decision> {
    if probe.is_none() && bans.is_empty() {
        // The common case: one store call, nothing to clone.
        return store.check(key, plan, now);
    }
    let mut steps = Steps {
        store: store.clone(),
        bans,
        next: 0,
        key: key.clone(),
        plan: plan.clone(),
        now,
        failed: None,
    };
    if let Some(mut step) = probe {
        match step.take_ready() {
            Some(r) => log_failure(r),
            None => {
                return StoreFuture::pending(async move {
                    log_failure(step.await);
                    steps.finish().await
                })
            }
        }
    }
    if store.checks_together() {
        return steps.together();
    }
    while let Some(ban_key) = steps.bans.get(steps.next) {
        let mut ban = store.check(ban_key, ban_only(), now);
        steps.next += 1;
        match ban.take_ready() {
            Some(r) => {
                if let Some(banned) = steps.ban_answer(r) {
                    return StoreFuture::ready(Ok(banned));
                }
            }
            None => {
                return StoreFuture::pending(async move {
                    if let Some(banned) = steps.ban_answer(ban.await) {
                        return Ok(banned);
                    }
                    steps.finish().await
                })
            }
        }
    }
    let mut main = store.check(key, plan, now);
    match main.take_ready() {
        Some(r) => StoreFuture::ready(steps.combine(r)),
        None => StoreFuture::pending(async move { steps.combine(main.await) }),
    }
}

/// The steps of [`decide`] left to run.
struct Steps {
    store: Arc<dyn Store>,
    bans: Vec<ClientKey>,
    next: usize,
    key: ClientKey,
    plan: Arc<Plan>,
    now: Timestamp,
    failed: Option<StoreError>,
}

impl Steps {
    /// A ban check's answer: the refusal when it found a ban.
    fn ban_answer(&mut self, r: Result<Decision, StoreError>) -> Option<Decision> {
        match r {
            Ok(d @ Decision::Banned { .. }) => Some(d),
            Ok(_) => None,
            Err(err) => {
                self.failed.get_or_insert(err);
                None
            }
        }
    }

    fn combine(self, r: Result<Decision, StoreError>) -> Result<Decision, StoreError> {
        match (r, self.failed) {
            (Ok(Decision::Allowed { .. }), Some(err)) => Err(err),
            (r, _) => r,
        }
    }

    /// The checks left, all sent at once; a ban found in the cache answers without sending
    /// the others.
    fn together(mut self) -> StoreFuture<Decision> {
        let mut pending = Vec::with_capacity(self.bans.len() - self.next + 1);
        while let Some(ban_key) = self.bans.get(self.next) {
            self.next += 1;
            let mut ban = self.store.check(ban_key, ban_only(), self.now);
            match ban.take_ready() {
                Some(r) => {
                    if let Some(banned) = self.ban_answer(r) {
                        return StoreFuture::ready(Ok(banned));
                    }
                }
                None => pending.push(ban),
            }
        }
        let mut main = self.store.check(&self.key, &self.plan, self.now);
        if pending.is_empty() {
            if let Some(r) = main.take_ready() {
                return StoreFuture::ready(self.combine(r));
            }
        }
        pending.push(main);
        StoreFuture::pending(async move {
            let mut answers = all(pending).await;
            let Some(main) = answers.pop() else {
                return Err(StoreError::new("floodgate: a check went unanswered"));
            };
            // In the order of `bans`, as the one-by-one steps would have found them.
            for r in answers {
                if let Some(banned) = self.ban_answer(r) {
                    // The key's check ran beside the ban's: what it counted is given back,
                    // so that a banned address cannot spend the quota of the key it sends.
                    if matches!(main, Ok(Decision::Allowed { .. })) {
                        let back = self
                            .store
                            .release(&self.key, &self.plan, self.now, self.now);
                        if let Err(err) = back.await {
                            log::warn!(
                                "floodgate: store failed while giving back the count of a \
                                 banned address's request: {err}"
                            );
                        }
                    }
                    return Ok(banned);
                }
            }
            self.combine(main)
        })
    }

    async fn finish(mut self) -> Result<Decision, StoreError> {
        if self.store.checks_together() {
            return self.together().await;
        }
        while let Some(ban_key) = self.bans.get(self.next).cloned() {
            self.next += 1;
            let r = self.store.check(&ban_key, ban_only(), self.now).await;
            if let Some(banned) = self.ban_answer(r) {
                return Ok(banned);
            }
        }
        let r = self.store.check(&self.key, &self.plan, self.now).await;
        self.combine(r)
    }
}

/// Every answer of `futures`, in their order; all of them polled from the first poll on, so
/// that a pipelining store sends them together.
async fn all(mut futures: Vec<StoreFuture<Decision>>) -> Vec<Result<Decision, StoreError>> {
    let mut answers: Vec<Option<Result<Decision, StoreError>>> =
        futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (fut, answer) in futures.iter_mut().zip(answers.iter_mut()) {
            if answer.is_none() {
                match std::pin::Pin::new(fut).poll(cx) {
                    std::task::Poll::Ready(r) => *answer = Some(r),
                    std::task::Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(answers.iter_mut().filter_map(Option::take).collect())
        }
    })
    .await
}

fn ban_only() -> &'static Arc<Plan> {
    static PLAN: std::sync::OnceLock<Arc<Plan>> = std::sync::OnceLock::new();
    PLAN.get_or_init(|| Arc::new(Plan::ban_only()))
}

/// `first`, then `second` when there is one.
fn then(mut first: StoreFuture<()>, second: Option<StoreFuture<()>>) -> StoreFuture<()> {
    let Some(mut second) = second else {
        return first;
    };
    match (first.take_ready(), second.take_ready()) {
        (Some(a), Some(b)) => StoreFuture::ready(a.and(b)),
        (a, b) => StoreFuture::pending(async move {
            let a = match a {
                Some(a) => a,
                None => first.await,
            };
            let b = match b {
                Some(b) => b,
                None => second.await,
            };
            a.and(b)
        }),
    }
}

fn log_failure(r: Result<(), crate::error::StoreError>) {
    if let Err(err) = r {
        log::warn!("floodgate: store failed while banning a probe: {err}");
    }
}

#[cfg(test)]
#[path = "steps_tests.rs"]
mod tests;

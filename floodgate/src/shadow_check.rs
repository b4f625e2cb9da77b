//! The observed half of a request's plan in shadow mode (see `shadow.rs`): checked under the
//! request's key once the enforcing half allows, and only logged.

use std::sync::Arc;

use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::gatekeeper::Gate;
use crate::metrics::{Outcome, RouteCounters};
use crate::state::{Decision, Plan};
use crate::store::StoreFuture;

/// `enforced`, then, when it allows, the shadow plan under the same key, observed only.
pub(crate) fn then_shadow(
    shared: &Arc<Gate>,
    mut enforced: StoreFuture<Decision>,
    key: &ClientKey,
    shadow: &Arc<Plan>,
    now: Timestamp,
    counters: Option<Arc<RouteCounters>>,
    route: Arc<str>,
) -> StoreFuture<Decision> {
    match enforced.take_ready() {
        Some(Ok(allowed @ Decision::Allowed { .. })) => {
            let mut observed = shared.store.check(key, shadow, now);
            match observed.take_ready() {
                Some(r) => {
                    observe(shared, key, shadow, r, counters.as_deref(), &route, now);
                    StoreFuture::ready(Ok(allowed))
                }
                None => {
                    let (shared, key, shadow) = (shared.clone(), key.clone(), shadow.clone());
                    StoreFuture::pending(async move {
                        observe(
                            &shared,
                            &key,
                            &shadow,
                            observed.await,
                            counters.as_deref(),
                            &route,
                            now,
                        );
                        Ok(allowed)
                    })
                }
            }
        }
        Some(other) => StoreFuture::ready(other),
        None => {
            let (shared, key, shadow) = (shared.clone(), key.clone(), shadow.clone());
            StoreFuture::pending(async move {
                let allowed = enforced.await?;
                if allowed.is_allowed() {
                    let r = shared.store.check(&key, &shadow, now).await;
                    observe(&shared, &key, &shadow, r, counters.as_deref(), &route, now);
                }
                Ok(allowed)
            })
        }
    }
}

/// Logs what the shadow plan would have done.
fn observe(
    shared: &Gate,
    key: &ClientKey,
    plan: &Plan,
    r: Result<Decision, StoreError>,
    counters: Option<&RouteCounters>,
    route: &str,
    now: Timestamp,
) {
    if let Ok(d) = &r {
        if !d.is_allowed() {
            if let Some(c) = counters {
                c.count(Outcome::ShadowLimited);
            }
            shared.route_refusals.shadow_refused(route, now);
        }
    }
    match r {
        Ok(Decision::Allowed { .. }) => {}
        Ok(Decision::Limited {
            reason,
            limit,
            retry_after,
            ..
        }) => {
            let name = plan.limits().get(limit).map_or("?", |l| l.name.as_str());
            log::info!(target: shared.log_target(),
                "floodgate: shadow: {} would have been limited by {name} ({reason:?}) for {}s; served",
                key.logged(),
                crate::response::retry_after_secs(retry_after),
            );
        }
        // A shadow plan checks no ban and its policies never punish.
        Ok(Decision::Banned { reason, .. }) => {
            log::info!(target: shared.log_target(),
                "floodgate: shadow: {} would have been refused ({reason:?}); served",
                key.logged()
            );
        }
        Err(err) => shared.store_failed("a shadow check", &err),
    }
}

//! The store's answer turned into a verdict: serve (with the RateLimit field values) or
//! refuse (with what the refusal says), with the log lines it deserves and the IPv6 network
//! bans a new ban tips. No HTTP here: `outcome.rs` writes a verdict into the response.

use std::rc::Rc;
use std::time::Duration;

use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::gatekeeper::Gate;
use crate::metrics::{BanKind, Outcome, RouteCounters};
use crate::plans::RoutePlan;
use crate::response;
use crate::state::{BanReason, Decision, LimitReason, Quota};
use crate::store::{StoreFailure, StoreFuture};
use crate::targeting::DenyReason;

/// The values of the RateLimit fields for a response under `route`.
pub(crate) struct FieldValues {
    pub(crate) route: Rc<RoutePlan>,
    /// `None`: the policy field only (a ban is not a spent quota).
    pub(crate) quota: Option<Quota>,
}

/// What a request gets.
pub(crate) enum Verdict {
    /// Served; with the RateLimit field values when the fields are on.
    Serve(Option<FieldValues>),
    Refuse(Refused),
}

/// A refusal, before it is an HTTP response.
pub(crate) struct Refused {
    /// 429, 403, 503, or the status `MissingKey::Refuse` names.
    pub(crate) status: u16,
    pub(crate) client: ClientKey,
    /// When to retry; `None`: never (a blacklist) or not said.
    pub(crate) retry_after: Option<Duration>,
    pub(crate) why: Why,
    pub(crate) fields: Option<FieldValues>,
    /// The bans of IPv6 networks that this refusal's new ban tipped, left to run.
    pub(crate) network_bans: Option<StoreFuture<()>>,
}

/// Why a request is refused.
pub(crate) enum Why {
    /// Limit number `limit` of `route`'s plan.
    Limited {
        reason: LimitReason,
        route: Rc<RoutePlan>,
        limit: usize,
    },
    Banned {
        until: Option<Timestamp>,
        reason: BanReason,
    },
    /// The store failed and the app is fail-closed, or the store named a limit the plan lacks.
    StoreUnavailable,
    Denied(DenyReason),
    MissingKey,
}

pub(crate) const TOO_MANY_REQUESTS: u16 = 429;
pub(crate) const FORBIDDEN: u16 = 403;
pub(crate) const SERVICE_UNAVAILABLE: u16 = 503;

impl Refused {
    fn new(status: u16, client: &ClientKey, retry_after: Option<Duration>, why: Why) -> Refused {
        Refused {
            status,
            client: client.clone(),
            retry_after,
            why,
            fields: None,
            network_bans: None,
        }
    }
}

/// The verdict on the store's answer for `key` under `route` at `now`; a refusal is counted
/// among the route's recent refusals.
pub(crate) fn verdict(
    shared: &Gate,
    route: &Rc<RoutePlan>,
    key: &ClientKey,
    result: Result<Decision, StoreError>,
    now: Timestamp,
) -> Verdict {
    let verdict = judge(shared, route, key, result, now);
    if matches!(verdict, Verdict::Refuse(_)) {
        shared.route_refusals.refused(&route.label, now);
    }
    verdict
}

fn judge(
    shared: &Gate,
    route: &Rc<RoutePlan>,
    key: &ClientKey,
    result: Result<Decision, StoreError>,
    now: Timestamp,
) -> Verdict {
    let fields_on = shared.ratelimit_headers || shared.legacy_headers;
    let decision = match result {
        Ok(d) => d,
        Err(err) => {
            shared.store_failed("a request", &err);
            return match shared.store_failure {
                StoreFailure::Open => Verdict::Serve(None),
                StoreFailure::Closed => Verdict::Refuse(Refused::new(
                    SERVICE_UNAVAILABLE,
                    key,
                    Some(Duration::from_secs(1)),
                    Why::StoreUnavailable,
                )),
            };
        }
    };
    if let Some(c) = &route.counters {
        count(c, route, &decision);
    }
    match decision {
        Decision::Allowed { quota } => {
            log::trace!(target: shared.log_target(), "floodgate: {} allowed", key.logged());
            Verdict::Serve(fields_on.then(|| FieldValues {
                route: route.clone(),
                quota,
            }))
        }
        Decision::Limited {
            reason,
            limit,
            retry_after,
            started,
        } => {
            let Some(info) = route.plan.limits().get(limit) else {
                // A store answered with a limit this plan does not have: refuse all the same.
                log::error!(target: shared.log_target(),
                    "floodgate: the store refused {} by limit {limit}, which this route's plan \
                     does not have; refused without naming a limit",
                    key.logged()
                );
                return Verdict::Refuse(Refused::new(
                    TOO_MANY_REQUESTS,
                    key,
                    Some(retry_after),
                    Why::StoreUnavailable,
                ));
            };
            if started {
                log::info!(target: shared.log_target(),
                    "floodgate: {} blocked for {}s by policy {}",
                    key.logged(),
                    response::retry_after_secs(retry_after),
                    info.name
                );
            } else {
                log::debug!(target: shared.log_target(),
                    "floodgate: {} limited by {} ({reason:?})",
                    key.logged(),
                    info.name
                );
            }
            let mut refused = Refused::new(
                TOO_MANY_REQUESTS,
                key,
                Some(retry_after),
                Why::Limited {
                    reason,
                    route: route.clone(),
                    limit,
                },
            );
            refused.fields = fields_on.then(|| FieldValues {
                route: route.clone(),
                quota: Some(Quota {
                    limit,
                    remaining: 0,
                    reset: retry_after,
                }),
            });
            Verdict::Refuse(refused)
        }
        Decision::Banned {
            until,
            reason,
            started,
        } => {
            let mut network_bans = None;
            if started {
                if let Some(m) = &shared.metrics {
                    m.ban(key, until, BanKind::of(reason, until));
                }
                match until {
                    Some(t) => {
                        log::warn!(target: shared.log_target(), "floodgate: {} banned until {t} ({reason:?})", key.logged())
                    }
                    None => {
                        log::warn!(target: shared.log_target(), "floodgate: {} blacklisted ({reason:?})", key.logged())
                    }
                }
                network_bans = shared.note_ban(key, until, reason, now);
            } else {
                log::debug!(target: shared.log_target(), "floodgate: {} refused: banned ({reason:?})", key.logged());
            }
            let retry_after = until.map(|t| t.saturating_since(now));
            let mut refused =
                Refused::new(FORBIDDEN, key, retry_after, Why::Banned { until, reason });
            // The policy field only: a ban is not a spent quota, so no RateLimit field (whose
            // `r=0;t=..` would claim the route's quota is spent and resets at the ban's end).
            refused.fields = (fields_on && !route.plan.limits().is_empty()).then(|| FieldValues {
                route: route.clone(),
                quota: None,
            });
            refused.network_bans = network_bans;
            Verdict::Refuse(refused)
        }
    }
}

/// Counts `decision` for the route's metrics: its outcome, and whether it left less than 20%
/// of a limit's quota.
fn count(c: &RouteCounters, route: &RoutePlan, decision: &Decision) {
    match decision {
        Decision::Allowed { quota } => {
            c.count(if route.exempt {
                Outcome::Exempt
            } else {
                Outcome::Allowed
            });
            let near = quota.is_some_and(|q| {
                route
                    .plan
                    .limits()
                    .get(q.limit)
                    .is_some_and(|l| u64::from(q.remaining) * 5 < u64::from(l.quota))
            });
            if near {
                c.near_limit();
            }
        }
        Decision::Limited { .. } => c.count(Outcome::Limited),
        Decision::Banned { .. } => c.count(Outcome::Banned),
    }
}

/// A client refused by a deny list, a country rule or a denying target (403, permanent).
pub(crate) fn denied(shared: &Gate, client: &ClientKey, reason: DenyReason) -> Refused {
    log::debug!(target: shared.log_target(), "floodgate: {} denied ({reason:?})", client.logged());
    Refused::new(FORBIDDEN, client, None, Why::Denied(reason))
}

/// A request without the key its route is counted under ([`MissingKey::Refuse`](crate::MissingKey::Refuse)).
pub(crate) fn key_missing(shared: &Gate, client: &ClientKey, status: u16) -> Refused {
    log::debug!(target: shared.log_target(),
        "floodgate: {} sent no key; refused with {status}",
        client.logged()
    );
    Refused::new(status, client, None, Why::MissingKey)
}

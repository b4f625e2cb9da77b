//! Request targeting: allow and deny lists ([`IpList`]), geo-blocking ([`GeoDb`],
//! [`GeoBlock`]), probe bans ([`ProbeBan`]), targeted rules ([`Target`]) and custom client
//! keys ([`KeyExtractor`], [`MissingKey`]), all set on the [`Floodgate`] builder.
//!
//! In what order a request meets them: an allow-listed client skips everything; then, on
//! every route but `#[bypass]` ones, a deny list, the app's [`GeoBlock`] or a denying
//! [`Target`] refuses it with 403; then its key is chosen (the route's `key`, else the
//! app's, else its IP address) and a missing key gets the [`MissingKey`] outcome; then a
//! probe bans (or reports) its IP, and the route's limits, extended by the matching
//! targets' rules, are checked together with the bans of its IP address.

// How it fits in the middleware: `Floodgate`'s call asks `Targeting::before_routing` about
// the request (lists, countries, targets, probe paths, the app-wide key) before actix routes
// it, then, knowing the route, picks the key (`Targeting::choose_key`) and decides with
// `decide`: a probe's ban or report first, then the IP's ban when the request is counted
// under another key, then the route's plan extended by the matching targets. A 404 for an
// unrouted path is reported by `NotFoundReport` once the response is known.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::Error;
use pin_project_lite::pin_project;

use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::error::{ConfigError, StoreError};
use crate::gatekeeper::Shared;
use crate::middleware::Floodgate;
use crate::rules::Rule;
use crate::state::{BanReason, Decision, Plan, ReportOutcome, ScopeId};
use crate::status::{ScopeInfo, ScopeKind};
use crate::store::{Store, StoreFuture};

pub(crate) mod geo;
pub(crate) mod ipset;
pub(crate) mod keys;
pub(crate) mod lists;
pub(crate) mod probe;
pub(crate) mod target;

pub use geo::{Country, GeoBlock, GeoDb};
pub use keys::{HeaderKey, KeyExtractor, MissingKey};
pub use lists::{IpList, ListError};
pub use probe::{ProbeAction, ProbeBan};
pub use target::Target;

use target::Action;

/// At most this many targets with rules (their matches are a bit set).
const MAX_TARGETS: usize = 64;

/// Why a client was denied (403) by targeting.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyReason {
    /// Its address is on this deny list.
    List {
        /// The list's name.
        name: Arc<str>,
    },
    /// Its country is refused by the app's [`GeoBlock`] (`None`: unknown country).
    Country {
        /// The client's country.
        country: Option<Country>,
    },
    /// It matches a [`Target`] that denies.
    Target {
        /// The target's name.
        name: Arc<str>,
    },
}

/// The targeting settings of a floodgate.
#[derive(Clone, Default)]
pub(crate) struct Targeting {
    allow: Vec<IpList>,
    deny: Vec<IpList>,
    probes: Option<ProbeBan>,
    key: Option<Arc<dyn KeyExtractor>>,
    missing_key: MissingKey,
    targets: Vec<Target>,
    geo: Option<GeoDb>,
    geo_block: Option<GeoBlock>,
}

impl fmt::Debug for Targeting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Targeting")
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .field("probes", &self.probes)
            .field("key", &self.key.is_some())
            .field("missing_key", &self.missing_key)
            .field("targets", &self.targets)
            .field("geo", &self.geo)
            .field("geo_block", &self.geo_block)
            .finish()
    }
}

/// What targeting found before routing.
#[derive(Default)]
pub(crate) struct Pre {
    /// Allow-listed: nothing applies.
    pub(crate) skip: bool,
    pub(crate) deny: Option<DenyReason>,
    /// A probe path that no route matches.
    pub(crate) probe: bool,
    /// The app-wide extractor's answer, when there is one.
    app_key: Option<keys::Found>,
    /// The targets with rules that match, as bits.
    pub(crate) targets: u64,
}

/// Which key a request is counted under.
pub(crate) enum KeyChoice {
    /// Its IP key.
    Ip,
    Custom(ClientKey),
    /// Not limited (bans of its IP still apply).
    Skip,
    Refuse(StatusCode),
}

impl Targeting {
    pub(crate) fn before_routing(&self, req: &ServiceRequest, ip: Option<IpAddr>) -> Pre {
        let mut pre = Pre::default();
        if let Some(ip) = ip {
            if self.allow.iter().any(|l| l.contains(ip)) {
                pre.skip = true;
                return pre;
            }
            if let Some(list) = self.deny.iter().find(|l| l.contains(ip)) {
                pre.deny = Some(DenyReason::List {
                    name: list.name().into(),
                });
            }
        }
        let mut looked_up = None;
        let mut country = || {
            *looked_up.get_or_insert_with(|| match (&self.geo, ip) {
                (Some(db), Some(ip)) => db.country(ip),
                _ => None,
            })
        };
        if let (None, Some(block)) = (&pre.deny, &self.geo_block) {
            let c = country();
            if block.refuses(c) {
                pre.deny = Some(DenyReason::Country { country: c });
            }
        }
        for (i, t) in self.targets.iter().enumerate() {
            match &t.action {
                Action::None => {}
                Action::Deny if pre.deny.is_some() => {}
                Action::Deny => {
                    if t.matches(req, &mut country) {
                        pre.deny = Some(DenyReason::Target {
                            name: t.name.clone(),
                        });
                    }
                }
                Action::Limit(_) => {
                    if t.matches(req, &mut country) {
                        pre.targets |= 1 << i;
                    }
                }
            }
        }
        if let Some(p) = &self.probes {
            pre.probe = p.is_probe(routed_path(req)) && req.request().match_pattern().is_none();
        }
        if let Some(k) = &self.key {
            pre.app_key = Some(keys::extract_safely("the app", || k.extract(req.request())));
        }
        pre
    }

    /// The key: the route's extractor's (found during routing), else the app's, else the IP.
    pub(crate) fn choose_key(&self, pre: &mut Pre, route_key: Option<keys::Found>) -> KeyChoice {
        let found = match route_key.or_else(|| pre.app_key.take()) {
            None => return KeyChoice::Ip,
            Some(found) => found,
        };
        match (found, self.missing_key) {
            (keys::Found::Key(k), _) => KeyChoice::Custom(k),
            (keys::Found::Unusable, _) => KeyChoice::Ip,
            (keys::Found::Missing, MissingKey::UseIp) => KeyChoice::Ip,
            (keys::Found::Missing, MissingKey::Skip) => KeyChoice::Skip,
            (keys::Found::Missing, MissingKey::Refuse(status)) => KeyChoice::Refuse(status),
        }
    }

    /// Configuration mistakes: targets that limit nothing or with unusable rules, key
    /// extractors with an invalid setting.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for t in &self.targets {
            let field = format!("target {}", t.name);
            match &t.action {
                Action::None => {
                    return Err(ConfigError::invalid(
                        field,
                        "has neither rules (.limit) nor .deny(): it would do nothing",
                    ))
                }
                Action::Limit(rules) if rules.is_empty() => {
                    return Err(ConfigError::invalid(field, "has an empty rule list"))
                }
                Action::Limit(rules) => crate::validate::rules(&field, rules)?,
                Action::Deny => {}
            }
        }
        if let Some(k) = &self.key {
            k.validate().map_err(|e| e.in_field("key"))?;
        }
        Ok(())
    }

    /// The `(scope, rules)` of the targets in `bits`.
    pub(crate) fn target_logs(&self, bits: u64) -> Vec<(ScopeId, Vec<Rule>)> {
        self.targets
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .filter_map(|(_, t)| match &t.action {
                Action::Limit(rules) => Some((t.scope(), rules.clone())),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn reports_not_found(&self) -> bool {
        self.probes.as_ref().is_some_and(|p| p.not_found)
    }

    /// The store operation a probe asks for, on the client's IP key.
    pub(crate) fn probe_step(
        &self,
        shared: &Shared,
        ip_key: &ClientKey,
        now: Timestamp,
    ) -> Option<StoreFuture<()>> {
        let action = self.probes.as_ref()?.action;
        log::info!(target: shared.log_target(),
            "floodgate: {} probed a scanner path ({action:?})",
            ip_key.logged()
        );
        match action {
            // Never shortens a longer ban or a blacklist in force.
            ProbeAction::Ban(duration) => {
                let until = duration.map(|d| now + d);
                let ban = shared
                    .store
                    .extend_ban(ip_key, until, BanReason::Probe, now);
                let network = shared.note_ban(ip_key, until, BanReason::Probe, now);
                Some(then(ban, network))
            }
            ProbeAction::Report => {
                let Some(rule) = shared.ban_rule else {
                    log::warn!(target: shared.log_target(), "floodgate: probe reports need a ban rule: set Floodgate::ban_rule");
                    return None;
                };
                let mut f = shared.store.report(ip_key, &rule, now);
                Some(match f.take_ready() {
                    Some(r) => StoreFuture::ready(r.map(drop)),
                    None => StoreFuture::pending(async move { f.await.map(drop) }),
                })
            }
        }
    }
}

/// The decision for one request: the probe's store operation first, then the bans of `bans`
/// (the IP address's when the request is counted under another key, the IPv6 networks around
/// it), then `plan` under `key`. A ban found anywhere refuses. A store failure while checking
/// `bans` is the answer unless `plan` refuses, so that the store-failure policy applies to it
/// (fail-closed refuses with 503). Synchronous stores answer at once; otherwise the steps
/// left run in one future.
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

    async fn finish(mut self) -> Result<Decision, StoreError> {
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

/// The path as actix-web's router matches it: percent-decoded (but for `%2F`, `%25` and `%2B`),
/// so that `/%6Cogin` is `/login` for targets and probe patterns, as it is for the route.
pub(crate) fn routed_path(req: &ServiceRequest) -> &str {
    req.match_info().as_str()
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

/// What reporting a 404 needs.
pub(crate) struct NotFound {
    shared: Arc<Shared>,
    key: ClientKey,
}

impl NotFound {
    /// Feeds a ban this reporter caused to IPv6 rotation.
    fn note_ban(&self, until: Timestamp, now: Timestamp) {
        if let Some(step) = self
            .shared
            .note_ban(&self.key, Some(until), BanReason::Reported, now)
        {
            actix_web::rt::spawn(async move {
                if let Err(err) = step.await {
                    log::warn!("floodgate: store failed while banning a network: {err}");
                }
            });
        }
    }

    /// The reporter for this request, when 404s count and it can be reported.
    pub(crate) fn new(shared: &Arc<Shared>, pre: &Pre, ip_key: &ClientKey) -> Option<Box<Self>> {
        (shared.targeting.reports_not_found()
            && !pre.skip
            && !pre.probe
            && shared.ban_rule.is_some())
        .then(|| {
            Box::new(NotFound {
                shared: shared.clone(),
                key: ip_key.clone(),
            })
        })
    }
}

pin_project! {
    /// The inner service's future, reporting a 404 for an unrouted path as an offence (when
    /// [`ProbeBan::not_found_reports`] is on) before the response goes out.
    pub struct NotFoundReport<F, B> {
        #[pin]
        fut: F,
        reporter: Option<Box<NotFound>>,
        // Boxed: rare, and a large response would make every request's future larger.
        held: Option<Box<(StoreFuture<ReportOutcome>, ServiceResponse<B>)>>,
    }
}

impl<F, B> NotFoundReport<F, B> {
    pub(crate) fn new(fut: F, reporter: Option<Box<NotFound>>) -> Self {
        NotFoundReport {
            fut,
            reporter,
            held: None,
        }
    }
}

impl<F, B> fmt::Debug for NotFoundReport<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NotFoundReport")
    }
}

impl<F, B> Future for NotFoundReport<F, B>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = Result<ServiceResponse<B>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(held) = this.held.as_mut() {
            let report = &mut held.0;
            let r = ready!(Pin::new(report).poll(cx));
            log_report(r);
            return match this.held.take() {
                Some(held) => Poll::Ready(Ok(held.1)),
                None => Poll::Ready(Err(actix_web::error::ErrorInternalServerError(
                    "floodgate future polled after completion",
                ))),
            };
        }
        let out = ready!(this.fut.poll(cx));
        let Some(reporter) = this.reporter.take() else {
            return Poll::Ready(out);
        };
        let res = match out {
            Ok(res)
                if res.status() == StatusCode::NOT_FOUND
                    && res.request().match_pattern().is_none() =>
            {
                res
            }
            other => return Poll::Ready(other),
        };
        let Some(rule) = reporter.shared.ban_rule else {
            return Poll::Ready(Ok(res));
        };
        log::debug!(target: reporter.shared.log_target(),
            "floodgate: {} got a 404 for an unrouted path: reported",
            reporter.key.logged()
        );
        let now = reporter.shared.now();
        let mut report = reporter.shared.store.report(&reporter.key, &rule, now);
        match report.take_ready() {
            Some(r) => {
                if let Ok(ReportOutcome::Banned { until }) = r {
                    reporter.note_ban(until, now);
                }
                log_report(r);
                Poll::Ready(Ok(res))
            }
            None => {
                *this.held = Some(Box::new((report, res)));
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

fn log_report(r: Result<ReportOutcome, crate::error::StoreError>) {
    match r {
        Ok(ReportOutcome::Banned { until }) => {
            log::warn!("floodgate: a client banned until {until} after 404s and probes")
        }
        Ok(_) => {}
        Err(err) => log::warn!("floodgate: store failed while reporting a 404: {err}"),
    }
}

/// Request targeting: reloading lists from an operator endpoint.
impl crate::GateKeeper {
    /// Reloads every allow and deny list of this floodgate whose files changed (see
    /// [`IpList::reload_if_changed`]); returns how many lists were reloaded. Each list is
    /// swapped atomically; a list whose file is unusable keeps its previous entries, and the
    /// first such error is returned after every other list was tried.
    pub fn reload_lists(&self) -> Result<usize, ListError> {
        let t = &self.shared.targeting;
        let mut reloaded = 0;
        let mut first_error = None;
        for list in t.allow.iter().chain(&t.deny) {
            match list.reload_if_changed() {
                Ok(true) => reloaded += 1,
                Ok(false) => {}
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(reloaded), Err)
    }
}

/// Request targeting (see the [`targeting`](crate::targeting) module).
impl Floodgate {
    /// Clients on this list skip every limit and ban, like fail2ban's `ignoreip` (repeat for
    /// several lists). Keep its handle to [`reload`](IpList::reload) it.
    ///
    /// # Security
    ///
    /// Lists match the client's address as floodgate reads it: with
    /// [`ip_header`](Self::ip_header), a client that can reach the app without your proxy
    /// can claim an allowed address. Use [`trusted_proxies`](Self::trusted_proxies) or make
    /// sure only the proxy reaches the app.
    pub fn allow_list(self, list: IpList) -> Self {
        self.edit(|s| Arc::make_mut(&mut s.targeting).allow.push(list))
    }

    /// Clients on this list get 403 on every route but `#[bypass]` ones (repeat for several
    /// lists). The allow list wins over it. Keep its handle to [`reload`](IpList::reload) it.
    pub fn deny_list(self, list: IpList) -> Self {
        self.edit(|s| Arc::make_mut(&mut s.targeting).deny.push(list))
    }

    /// Bans clients that probe for scanner paths (see [`ProbeBan`]).
    pub fn probe_ban(self, probes: ProbeBan) -> Self {
        self.edit(|s| Arc::make_mut(&mut s.targeting).probes = Some(probes))
    }

    /// Counts every request under the key `extractor` gives (an API key, a user id) instead
    /// of its IP address. Runs before routing; a route's own `key` wins over it. Bans of the
    /// client's IP address still apply. See [`KeyExtractor`].
    pub fn key(self, extractor: impl KeyExtractor) -> Self {
        let extractor: Arc<dyn KeyExtractor> = Arc::new(extractor);
        self.edit(|s| Arc::make_mut(&mut s.targeting).key = Some(extractor))
    }

    /// What a request whose key cannot be extracted gets (default [`MissingKey::UseIp`]).
    pub fn missing_key(self, outcome: MissingKey) -> Self {
        self.edit(|s| Arc::make_mut(&mut s.targeting).missing_key = outcome)
    }

    /// Where clients' countries come from, for [`geo_block`](Self::geo_block) and targets.
    pub fn geo_database(self, db: GeoDb) -> Self {
        self.edit(|s| Arc::make_mut(&mut s.targeting).geo = Some(db))
    }

    /// Allows only, or denies, some countries app-wide (403 on every route but `#[bypass]`
    /// ones). Needs [`geo_database`](Self::geo_database).
    pub fn geo_block(self, block: GeoBlock) -> Self {
        if block.countries.is_empty() && block.allow_listed {
            log::warn!(
                "floodgate: GeoBlock::allow_only with no country refuses every known country"
            );
        }
        self.edit(|s| Arc::make_mut(&mut s.targeting).geo_block = Some(block))
    }

    /// Adds a targeted rule set (see [`Target`]). An invalid target (a bad country code or
    /// header name, no rules and no deny, a rule of count 0) stops the app from starting with
    /// a message naming it; see [`try_target`](Self::try_target) to get the error at once.
    pub fn target(self, target: Target) -> Self {
        match self.clone().try_target(target) {
            Ok(this) => this,
            Err(err) => self.edit(|s| s.config_errors.push(err)),
        }
    }

    /// Like [`target`](Self::target), but an invalid target is an error.
    pub fn try_target(self, target: Target) -> Result<Self, ConfigError> {
        if let Some(err) = target.invalid.clone() {
            return Err(err);
        }
        let existing = &self.shared.targeting.targets;
        if existing.iter().any(|t| t.name == target.name) {
            return Err(ConfigError::invalid(
                "target",
                format!("two targets are called {}", target.name),
            ));
        }
        if existing.len() >= MAX_TARGETS {
            return Err(ConfigError::invalid(
                "target",
                format!("at most {MAX_TARGETS} targets"),
            ));
        }
        let single = Targeting {
            targets: vec![target.clone()],
            ..Targeting::default()
        };
        single.validate()?;
        if target.needs_country() && self.shared.targeting.geo.is_none() {
            log::warn!(
                "floodgate: target {} uses countries but no geo database is set (yet): \
                 every client counts as of unknown country",
                target.name
            );
        }
        Ok(self.edit(|s| {
            if let Action::Limit(rules) = &target.action {
                s.register_scope(
                    target.scope(),
                    ScopeInfo {
                        label: format!("target {}", target.name),
                        kind: ScopeKind::Rules(rules.clone()),
                    },
                );
            }
            Arc::make_mut(&mut s.targeting).targets.push(target)
        }))
    }
}

/// The `detail` of a denial's problem+json body.
pub(crate) fn deny_detail(reason: &DenyReason) -> String {
    match reason {
        DenyReason::List { .. } => String::from("This client's address is denied."),
        DenyReason::Country { country: Some(c) } => {
            format!("Requests from this country ({c}) are not served.")
        }
        DenyReason::Country { country: None } => {
            String::from("Requests from an unknown country are not served.")
        }
        DenyReason::Target { .. } => String::from("This request is not served."),
    }
}

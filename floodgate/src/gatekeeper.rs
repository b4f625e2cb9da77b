//! [`GateKeeper`]: the handle on floodgate's shared state, for handlers and operators.

use std::collections::HashMap;
use std::fmt;
use std::future::{ready, Ready};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};

use crate::client::{Client, ClientKey};
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::metrics::BanKind::{Blacklist, Operator};
use crate::rotation::RotationWatch;
use crate::settings::Settings;
use crate::state::BanReason;
use crate::state::{ReportOutcome, ScopeId};
use crate::status::{ClientStatus, ScopeInfo};
use crate::store::{Store, StoreFailure};
use crate::top::{Offender, TopOffenders};

/// A floodgate's settings (see [`Settings`]) and the runtime state that all clones of a
/// `Floodgate` and all workers share. Reads of a setting go through `Deref`.
pub(crate) struct Gate {
    pub(crate) settings: Settings,
    /// The clients refused and reported most lately (shared by every fork).
    pub(crate) top: Arc<TopOffenders>,
    /// Each route's recent refusals (shared by every fork).
    pub(crate) route_refusals: Arc<crate::route_refusals::RouteRefusals>,
    /// What each scope id stands for, filled as plans are built; read by `status`.
    pub(crate) scopes: Mutex<HashMap<ScopeId, ScopeInfo>>,
    /// The bans seen per IPv6 network (shared by every fork of these settings).
    pub(crate) rotation_watch: Arc<RotationWatch>,
    /// Last time (ms) a store failure was logged, so failures are logged once per interval.
    last_failure_log: AtomicU64,
    /// Whether the "unknown client address" warning was logged (once per floodgate).
    unknown_logged: AtomicBool,
}

impl std::ops::Deref for Gate {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.settings
    }
}

impl Gate {
    pub(crate) fn new(settings: Settings) -> Self {
        Gate {
            settings,
            scopes: Mutex::new(HashMap::new()),
            rotation_watch: Arc::default(),
            last_failure_log: AtomicU64::new(0),
            unknown_logged: AtomicBool::new(false),
            top: Arc::default(),
            route_refusals: Arc::default(),
        }
    }

    /// A copy of the settings, for a builder to change, that keeps the same store, clock,
    /// scope names and IPv6 rotation watch; its log throttles start afresh.
    pub(crate) fn fork(&self) -> Self {
        Gate {
            settings: self.settings.clone(),
            scopes: Mutex::new(self.scopes.lock().map(|s| s.clone()).unwrap_or_default()),
            rotation_watch: self.rotation_watch.clone(),
            last_failure_log: AtomicU64::new(0),
            unknown_logged: AtomicBool::new(false),
            top: self.top.clone(),
            route_refusals: self.route_refusals.clone(),
        }
    }

    /// The client key of a request: its address per the configured source.
    pub(crate) fn client_key(
        &self,
        peer: Option<IpAddr>,
        headers: &actix_web::http::header::HeaderMap,
    ) -> ClientKey {
        self.key_of(self.ip_source.client_ip(peer, headers))
    }

    /// The client key of a request whose address (per the configured source) is `ip`.
    pub(crate) fn key_of(&self, ip: Option<IpAddr>) -> ClientKey {
        match ip {
            Some(ip) => self.key_of_ip(ip),
            None => {
                self.log_once(
                    "floodgate: a request's client address is not known (no peer address, as on \
                     a Unix socket, or a trusted proxy forwarded a hop that is not an address, \
                     such as `unknown`); such requests share the client key \"unknown\" (logged \
                     once)",
                );
                ClientKey::custom("unknown")
            }
        }
    }

    pub(crate) fn register_scope(&self, id: ScopeId, info: ScopeInfo) {
        if let Ok(mut scopes) = self.scopes.lock() {
            scopes.entry(id).or_insert(info);
        }
    }

    /// Logs a store failure at warn, at most once a minute.
    pub(crate) fn store_failed(&self, what: &str, err: &StoreError) {
        crate::metrics::store_error(&self.metrics, what);
        let now = self.now().as_millis();
        let last = self.last_failure_log.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 60_000)
            && self
                .last_failure_log
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(target: self.log_target(),
                "floodgate: store failed during {what}: {err}; requests are {} until it answers \
                 (logged once a minute)",
                match self.store_failure {
                    StoreFailure::Open => "served unlimited",
                    StoreFailure::Closed => "refused with 503",
                }
            );
        }
    }

    fn log_once(&self, message: &str) {
        if !self.unknown_logged.swap(true, Ordering::Relaxed) {
            log::warn!(target: self.log_target(), "{message}");
        }
    }

    /// Notes a ban of `client` for IPv6 rotation, and imposes the network bans it tips.
    pub(crate) fn note_ban(
        &self,
        client: &ClientKey,
        until: Option<Timestamp>,
        reason: BanReason,
        now: Timestamp,
    ) -> Option<crate::store::StoreFuture<()>> {
        if !self.ipv6_rotation.is_on() {
            return None;
        }
        let tipped = self
            .rotation_watch
            .banned(&self.ipv6_rotation, client, until, reason, now);
        if tipped.is_empty() {
            return None;
        }
        let mut steps = Vec::with_capacity(tipped.len());
        for ban in tipped {
            log::warn!(target: self.log_target(),
                "floodgate: network {} banned until {} ({reason:?}): {} was the last of enough \
                 of its client networks banned within {:?} (IPv6 rotation)",
                ban.network,
                ban.until,
                client.logged(),
                self.ipv6_rotation.window(),
            );
            steps.push(
                self.store
                    .extend_ban(&ban.network, Some(ban.until), ban.reason, now),
            );
        }
        let mut ready = true;
        for step in &mut steps {
            match step.take_ready() {
                Some(Err(err)) => self.store_failed("an IPv6 network ban", &err),
                Some(Ok(())) => {}
                None => ready = false,
            }
        }
        if ready {
            return None;
        }
        Some(crate::store::StoreFuture::pending(async move {
            for step in steps {
                step.await?;
            }
            Ok(())
        }))
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.fmt(f)
    }
}

/// The handle on floodgate's shared state: report offences, ban and unban clients, and read
/// their status.
///
/// Extract it in a handler (it implements [`FromRequest`][from-request] on apps wrapped by
/// [`Floodgate`](crate::Floodgate)), or get it from [`Floodgate::gatekeeper`](crate::Floodgate::gatekeeper)
/// for operator tools. All handles of one `Floodgate` share one state.
///
/// [from-request]: https://docs.rs/actix-web/4/actix_web/trait.FromRequest.html
///
/// # Examples
///
/// ```
/// use actix_web::{post, HttpRequest, HttpResponse};
/// use floodgate::GateKeeper;
///
/// #[post("/login")]
/// async fn login(req: HttpRequest, gk: GateKeeper) -> HttpResponse {
///     let password_ok = false;
///     if !password_ok {
///         // One offence; with BanRule::new(3, 10s, 600s), the third within 10 s bans.
///         gk.report(&req).await;
///         return HttpResponse::Unauthorized().body("bad password");
///     }
///     HttpResponse::Ok().finish()
/// }
/// ```
#[derive(Clone)]
pub struct GateKeeper {
    pub(crate) shared: Arc<Gate>,
}

impl fmt::Debug for GateKeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("GateKeeper").field(&self.shared).finish()
    }
}

impl GateKeeper {
    /// The key `client` is counted under.
    #[cfg(feature = "admin")]
    pub(crate) fn key_of_client(&self, client: Client) -> ClientKey {
        self.key(client)
    }

    fn key(&self, client: Client) -> ClientKey {
        match client {
            Client::Ip(ip) => self.shared.key_of_ip(ip),
            Client::Key(k) => k,
        }
    }

    /// The key this request's client is counted under.
    pub fn client_key(&self, req: &HttpRequest) -> ClientKey {
        self.shared
            .client_key(req.peer_addr().map(|a| a.ip()), req.headers())
    }

    /// Records one offence for this request's client (a failed login, say).
    ///
    /// When the [`BanRule`](crate::BanRule)'s count of offences lies within its window, the client is banned at
    /// once, for the rule's duration from this offence. When this returns, the offence is
    /// stored and any ban it triggered is in force. It never fails the handler: without a ban
    /// rule it does nothing (and returns `None`), and a store failure is logged and returns
    /// `None`.
    /// In shadow mode (app-wide or on a shadow route) it never bans: it logs what would have.
    pub async fn report(&self, req: &HttpRequest) -> Option<ReportOutcome> {
        let key = self.client_key(req);
        let shadow =
            actix_web::HttpMessage::extensions(req).contains::<crate::shadow::ShadowRoute>();
        self.report_key(key, shadow).await
    }

    /// Records one offence for `client`, as [`report`](Self::report) does for a request.
    pub async fn report_client(&self, client: impl Into<Client>) -> Option<ReportOutcome> {
        let key = self.key(client.into());
        self.report_key(key, false).await
    }

    async fn report_key(&self, key: ClientKey, shadow_route: bool) -> Option<ReportOutcome> {
        let real = self.shared.ban_rule?;
        let shadow = self.shared.shadow || shadow_route;
        let rule = if shadow {
            crate::shadow::shadow_ban_rule(real)
        } else {
            real
        };
        let now = self.shared.now();
        match self.shared.store.report(&key, &rule, now).await {
            Ok(outcome) => {
                self.shared.top.reported(&key, now);
                match outcome {
                    ReportOutcome::Banned { .. } if shadow => crate::shadow::would_ban(
                        self.shared.log_target(),
                        &key,
                        "reported offences",
                        real.duration(),
                    ),
                    ReportOutcome::Banned { until } => {
                        let kind = crate::metrics::BanKind::Report;
                        crate::metrics::ban(&self.shared.metrics, &key, Some(until), kind);
                        log::warn!(target: self.shared.log_target(),
                            "floodgate: {} banned until {until} after {} reported offences",
                            key.logged(),
                            rule.count()
                        );
                        let network =
                            self.shared
                                .note_ban(&key, Some(until), BanReason::Reported, now);
                        if let Some(step) = network {
                            if let Err(err) = step.await {
                                self.shared.store_failed("an IPv6 network ban", &err);
                            }
                        }
                    }
                    ReportOutcome::Recorded { offences } => {
                        log::debug!(target: self.shared.log_target(),
                            "floodgate: offence {offences}/{} for {}",
                            rule.count(),
                            key.logged()
                        )
                    }
                }
                Some(outcome)
            }
            Err(err) => {
                self.shared.store_failed("report", &err);
                None
            }
        }
    }

    /// Bans `client` for `duration` from now (403 on every route but `#[bypass]` ones),
    /// replacing any ban in force. Works for clients never seen.
    pub async fn ban(
        &self,
        client: impl Into<Client>,
        duration: Duration,
    ) -> Result<(), StoreError> {
        let key = self.key(client.into());
        let now = self.shared.now();
        self.shared
            .store
            .ban(&key, Some(now + duration), now)
            .await?;
        crate::metrics::ban(&self.shared.metrics, &key, Some(now + duration), Operator);
        log::warn!(target: self.shared.log_target(),
            "floodgate: {} banned by operator for {duration:?}",
            key.logged()
        );
        Ok(())
    }

    /// Blacklists `client`: banned until [`unban`](Self::unban). Works for clients never seen.
    pub async fn blacklist(&self, client: impl Into<Client>) -> Result<(), StoreError> {
        let key = self.key(client.into());
        let now = self.shared.now();
        self.shared.store.ban(&key, None, now).await?;
        crate::metrics::ban(&self.shared.metrics, &key, None, Blacklist);
        log::warn!(target: self.shared.log_target(), "floodgate: {} blacklisted by operator", key.logged());
        Ok(())
    }

    /// Lifts `client`'s ban or blacklist, forgets its unspent offences and clears its policy
    /// blocks and block counts. Returns whether a ban was in force.
    pub async fn unban(&self, client: impl Into<Client>) -> Result<bool, StoreError> {
        let key = self.key(client.into());
        let was = self.shared.store.unban(&key, self.shared.now()).await?;
        crate::metrics::unban(&self.shared.metrics, &key);
        log::info!(target: self.shared.log_target(),
            "floodgate: {} unbanned by operator (was banned: {was})",
            key.logged()
        );
        Ok(was)
    }

    /// Same as [`unban`](Self::unban).
    pub async fn unblacklist(&self, client: impl Into<Client>) -> Result<bool, StoreError> {
        self.unban(client).await
    }

    /// `client`'s status: its ban, unspent offences, and every window it has, active or not.
    pub async fn status(&self, client: impl Into<Client>) -> Result<ClientStatus, StoreError> {
        let key = self.key(client.into());
        let now = self.shared.now();
        let state = self.shared.store.state(&key, now).await?;
        let scopes = self
            .shared
            .scopes
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let offence_window = self.shared.ban_rule.map(|r| r.window());
        Ok(ClientStatus::new(
            key,
            state.as_ref(),
            &scopes,
            offence_window,
            now,
        ))
    }

    /// Deletes every client whose state has expired; returns how many. Stores also do this on
    /// their own; call it to free memory at a time of your choosing.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        self.shared.store.sweep(self.shared.now()).await
    }

    /// Reloads every allow and deny list of this floodgate whose files changed (see
    /// [`IpList::reload_if_changed`](crate::IpList::reload_if_changed)); returns how many lists were reloaded. Each list is
    /// swapped atomically; a list whose file is unusable keeps its previous entries, and the
    /// first such error is returned after every other list was tried.
    pub fn reload_lists(&self) -> Result<usize, crate::targeting::ListError> {
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

    /// The `n` clients refused (limits, bans, deny lists) or reported most over the last 10
    /// to 20 minutes, most first. Counted in constant memory (256 counters a window), so the
    /// counts are lower bounds; a client that stands out keeps its counter whatever the
    /// number of others.
    pub fn top_offenders(&self, n: usize) -> Vec<Offender> {
        self.shared.top.top(n, self.shared.now())
    }

    /// The current time on floodgate's clock.
    pub fn now(&self) -> Timestamp {
        self.shared.now()
    }
}

impl FromRequest for GateKeeper {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match req.app_data::<GateKeeper>() {
            Some(gk) => Ok(gk.clone()),
            None => {
                log::error!(
                    "floodgate: GateKeeper extracted on a route that no Floodgate wraps; add \
                     .wrap(floodgate.clone()) to the App or scope"
                );
                Err(actix_web::error::ErrorInternalServerError(
                    "GateKeeper is unavailable on this route: no Floodgate middleware wraps it \
                     (see the server's log)",
                ))
            }
        })
    }
}

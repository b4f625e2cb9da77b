//! The Redis store: one state for a fleet of app servers (feature `redis`).
//!
//! # Design
//!
//! - **One round trip per decision, atomic per client.** The decision core of
//!   [`ClientState`] is ported to a Lua script (`redis.lua`, kept line for line with
//!   `state/`) that reads the client's key, decides, writes the key back and sets its
//!   expiry, all inside Redis. The script is loaded once at connect and called by its hash
//!   (`EVALSHA`); a Redis that lost it (`NOSCRIPT`, after a restart or `SCRIPT FLUSH`) gets it
//!   again on the next call.
//! - **Key layout.** One string per client: `{prefix}:{ip:ADDRESS}` for IP clients
//!   (`shop:{ip:203.0.113.7}`, `shop:{ip:2001:db8:1:2::/64}`) and `{prefix}:{key:KEY}` for
//!   custom keys; the braces are Redis Cluster's hash tag, so each decision touches one key in
//!   one slot (see `keys.rs`). The value is the client's whole [`ClientState`] in MessagePack
//!   (times in milliseconds), which the script reads and writes in one call of Redis's
//!   `cmsgpack` (see `stored.rs`); values in the space-separated text of earlier versions are
//!   still read, and rewritten on the client's next decision.
//! - **Redis Cluster** ([`RedisStore::cluster`]): the same script on the slot of the client's
//!   key; the index of bans is kept by a call of its own (see `bans.rs`).
//! - **Keys expire on their own**: after each write the script sets the key's TTL to the
//!   time left until [`ClientState::expires_at`], measured from floodgate's clock. Permanent
//!   bans and records kept "forever" have no TTL; state that holds nothing is deleted.
//! - **Time comes from floodgate's [`Clock`](crate::Clock)**, passed to the script as an
//!   argument, never from Redis's `TIME`: every server of the fleet and every test with a
//!   [`FakeClock`](crate::FakeClock) decides on the same time.
//! - **Ban cache.** Bans and blacklists this process learnt of (a request refused with 403,
//!   an operator ban made here) are kept in process for
//!   [`ban_cache`](RedisStoreBuilder::ban_cache) (1 s by default, by floodgate's clock), so a
//!   banned client flooding the app costs no round trip per request. An unban clears this
//!   process's cache at once (and answers asked for before it cannot cache the old ban
//!   again); other servers learn of it when their cached entry ends, within `ban_cache`.
//! - **Failures** are [`StoreError`]s, bounded by [`timeout`](RedisStoreBuilder::timeout):
//!   the middleware then follows its [`StoreFailure`](crate::StoreFailure) policy, or a
//!   [`FailoverStore`](crate::store::failover::FailoverStore) takes over with a backup. The
//!   connection is a [`ConnectionManager`][manager], which reconnects by itself when Redis is
//!   back.
//!
//! [manager]: https://docs.rs/redis/1/redis/aio/struct.ConnectionManager.html

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::{RedisError, Script};

use super::bans::{BanCursor, BanPage};
use super::{Store, StoreFuture};
use crate::client::ClientKey;
use crate::clock::{duration_millis, Timestamp};
use crate::error::StoreError;
use crate::rules::BanRule;
use crate::state::{BanReason, ClientState, Decision, Plan, ReportOutcome};

mod bans;
mod cache;
mod cluster;
mod join;
mod keys;
mod migrate;
mod msgpack;
mod script;
mod stored;

use bans::IndexChange;
use cache::BanCache;
use cluster::{Conn, Target};
use script::{
    ban_code, ban_reason, decision_of, encode_plan, lua_time, malformed, push_time, rust_time,
    SCRIPT,
};
use stored::decode_state;

/// Client state in Redis, shared by every server of a fleet. Clones share the connection
/// and the ban cache.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), floodgate::StoreError> {
/// use std::time::Duration;
/// use floodgate::{Floodgate, RedisStore, Rule};
///
/// let redis = RedisStore::builder("redis://127.0.0.1:6379/")
///     .prefix("shop")
///     .ban_cache(Duration::from_secs(1))
///     .connect()
///     .await?;
/// let floodgate = Floodgate::new()
///     .store(redis)
///     .rate_limit_rules([Rule::new(20, Duration::from_secs(1))]);
/// # Ok(()) }
/// ```
///
/// # Very long durations
///
/// The decision script runs in Redis's Lua, whose numbers are doubles, so times and durations
/// of 2^53 ms (about 285,000 years) or more are held as "never" there. A rule window, block,
/// cooldown or ban that long (such as `Duration::MAX`) lasts forever, as in the other stores;
/// the differences are only in what is shown: a ban that long reads as permanent (no
/// `Retry-After`), and the wait of a refusal that long counts to 2^53 ms after the epoch
/// rather than further.
///
/// # Security
///
/// Anyone who can write to the Redis database can ban or unban any client: give floodgate its
/// own Redis user or database, and a [`prefix`](RedisStoreBuilder::prefix) of its own when
/// several apps share one Redis.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    script: Arc<Script>,
    prefix: Arc<str>,
    timeout: Duration,
    cache: Option<Arc<BanCache>>,
    addr: Arc<str>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("addr", &self.addr)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("ban_cache", &self.cache.as_ref().map(|c| c.ttl_ms))
            .finish_non_exhaustive()
    }
}

/// Settings of a [`RedisStore`]; [`connect`](RedisStoreBuilder::connect) builds it.
#[derive(Clone, Debug)]
pub struct RedisStoreBuilder {
    target: Target,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    ban_cache: Duration,
    ban_cache_capacity: usize,
}

impl RedisStoreBuilder {
    /// The prefix of every key (default `"floodgate"`), so that several apps share one Redis.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The longest a decision waits for Redis before it fails (default 500 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The longest [`connect`](RedisStoreBuilder::connect) waits for Redis (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long a ban or blacklist seen by this process is answered from memory without asking
    /// Redis (default 1 s; zero disables the cache). An unban on another server reaches this
    /// one within this time.
    pub fn ban_cache(mut self, ttl: Duration) -> Self {
        self.ban_cache = ttl;
        self
    }

    /// The most bans cached in process (default 100 000).
    pub fn ban_cache_capacity(mut self, n: usize) -> Self {
        self.ban_cache_capacity = n.max(1);
        self
    }

    /// Builds the store without connecting: it connects on its first decision and again after
    /// each failure, loading the script when Redis lacks it. Use it to start while Redis is
    /// down, under a [`FailoverStore`](crate::FailoverStore) whose backup decides until Redis
    /// answers. Must be called within a Tokio runtime (such as actix's).
    ///
    /// # Errors
    ///
    /// A malformed URL or prefix.
    ///
    /// Bans kept under the key names of earlier releases are not moved (see
    /// [`connect`](RedisStoreBuilder::connect)).
    pub fn connect_lazy(self) -> Result<RedisStore, StoreError> {
        self.check_prefix()?;
        let (conn, addr) = self.lazy_conn()?;
        Ok(self.store(conn, Script::new(SCRIPT), addr))
    }

    fn new(target: Target) -> RedisStoreBuilder {
        RedisStoreBuilder {
            target,
            prefix: "floodgate".to_owned(),
            timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(5),
            ban_cache: Duration::from_secs(1),
            ban_cache_capacity: 100_000,
        }
    }

    fn check_prefix(&self) -> Result<(), StoreError> {
        if self.prefix.is_empty() || self.prefix.contains(char::is_whitespace) {
            return Err(StoreError::new(format!(
                "invalid Redis key prefix {:?}: it must be non-empty and without spaces",
                self.prefix
            )));
        }
        Ok(())
    }

    fn store(self, conn: Conn, script: Script, addr: Arc<str>) -> RedisStore {
        let ttl_ms = duration_millis(self.ban_cache);
        RedisStore {
            conn,
            script: Arc::new(script),
            prefix: self.prefix.into(),
            timeout: self.timeout,
            cache: (ttl_ms > 0).then(|| {
                Arc::new(BanCache {
                    ttl_ms,
                    capacity: self.ban_cache_capacity,
                    len: AtomicUsize::new(0),
                    unbans: AtomicU64::new(0),
                    map: Mutex::new(HashMap::new()),
                })
            }),
            addr,
        }
    }

    /// Connects, checks the credentials and loads the script (into every master of a
    /// cluster). On a single server, bans kept under the key names of releases before hash
    /// tags (`{prefix}:ip:…`, `{prefix}:bans`) move to the current names, once.
    ///
    /// # Errors
    ///
    /// A malformed URL, an empty node list, an unreachable server or cluster, refused
    /// credentials or a server without scripting: the message names the address (never the
    /// password).
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        self.check_prefix()?;
        let (mut conn, addr) = self.conn().await?;
        let script = Script::new(SCRIPT);
        bounded(self.connect_timeout, script.load_async(&mut conn))
            .await
            .map_err(|e| {
                e.context(&format!(
                    "cannot load floodgate's script into Redis at {addr}"
                ))
            })?;
        if let Conn::Server(_) = conn {
            bounded(
                self.connect_timeout,
                migrate::legacy_bans(&mut conn, &self.prefix),
            )
            .await
            .map_err(|e| {
                e.context(&format!(
                    "cannot move the bans of an earlier release in Redis at {addr}"
                ))
            })?;
        }
        Ok(self.store(conn, script, addr))
    }
}

/// A Redis error or a timeout, turned into a [`StoreError`] later with context.
enum Failure {
    Redis(RedisError),
    Timeout(Duration),
}

impl Failure {
    fn context(self, what: &str) -> StoreError {
        match self {
            Failure::Redis(e) => StoreError::with_source(what.to_owned(), e),
            Failure::Timeout(t) => StoreError::new(format!("{what}: no answer within {t:?}")),
        }
    }
}

async fn bounded<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Redis(e)),
        Err(_) => Err(Failure::Timeout(timeout)),
    }
}

impl RedisStore {
    /// Settings for a store at `url` (`redis://[user:password@]host:port/[db]`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Target::Server(url.into()))
    }

    /// The Redis key holding `client`'s state: `{prefix}:{ip:ADDRESS}` or
    /// `{prefix}:{key:KEY}`, hash-tagged on the client part.
    pub fn key_of(&self, client: &ClientKey) -> String {
        keys::client_key(&self.prefix, client)
    }

    /// Runs one operation of the script: one round trip, and a second one to the index of
    /// bans when the operation changed the client's ban.
    fn run(&self, client: &ClientKey, op: &'static str, at: Timestamp, args: Vec<u8>) -> Pending {
        let mut conn = self.conn.clone();
        let script = self.script.clone();
        let key = self.key_of(client);
        let index = self.index_writer(client);
        let timeout = self.timeout;
        let addr = self.addr.clone();
        let now = lua_time(at.as_millis());
        Box::pin(async move {
            let mut invocation = script.prepare_invoke();
            invocation.key(key).arg(op).arg(now).arg(args);
            let mut reply = bounded(timeout, invocation.invoke_async::<Vec<i64>>(&mut conn))
                .await
                .map_err(|e| e.context(&format!("Redis at {addr}: {op}")))?;
            match IndexChange::split_off(&mut reply) {
                Some(Some(change)) => index.apply(change, at, timeout).await,
                Some(None) => {}
                None => return Err(malformed(op, &reply)),
            }
            Ok(reply)
        })
    }
}

type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<i64>, StoreError>> + Send>>;

impl Store for RedisStore {
    fn check(&self, client: &ClientKey, plan: &Arc<Plan>, now: Timestamp) -> StoreFuture<Decision> {
        if let (true, Some(cache)) = (plan.ban_check, &self.cache) {
            if let Some(banned) = cache.get(client, now.as_millis()) {
                return StoreFuture::ready(Ok(banned));
            }
        }
        let epoch = self.cache.as_ref().map_or(0, |c| c.epoch());
        let call = self.run(client, "check", now, encode_plan(plan));
        let cache = self.cache.clone();
        let client = client.clone();
        StoreFuture::pending(async move {
            let reply = call.await?;
            let decision = decision_of(&reply)?;
            if let (Some(cache), Decision::Banned { until, reason, .. }) = (&cache, decision) {
                let until = until.map_or(u64::MAX, Timestamp::as_millis);
                cache.put(&client, until, reason, now.as_millis(), epoch);
            }
            Ok(decision)
        })
    }

    fn release(
        &self,
        client: &ClientKey,
        plan: &Arc<Plan>,
        at: Timestamp,
        now: Timestamp,
    ) -> StoreFuture<()> {
        // "at plan": the time as text, a space, the plan in MessagePack.
        let mut args = lua_time(at.as_millis()).into_bytes();
        args.push(b' ');
        args.extend_from_slice(&encode_plan(plan));
        let call = self.run(client, "release", now, args);
        StoreFuture::pending(async move {
            call.await?;
            Ok(())
        })
    }

    fn report(
        &self,
        client: &ClientKey,
        rule: &BanRule,
        now: Timestamp,
    ) -> StoreFuture<ReportOutcome> {
        let mut args = rule.count().to_string();
        push_time(&mut args, rule.window_ms());
        push_time(&mut args, rule.duration_ms());
        let call = self.run(client, "report", now, args.into_bytes());
        StoreFuture::pending(async move {
            let reply = call.await?;
            // Not cached: a longer ban of another kind may be in force; the next check
            // learns the one that is.
            match reply.as_slice() {
                [0, n] => Ok(ReportOutcome::Recorded {
                    offences: u32::try_from(*n).unwrap_or(0),
                }),
                [1, until] => Ok(ReportOutcome::Banned {
                    until: Timestamp::from_millis(rust_time(*until)),
                }),
                _ => Err(malformed("report", &reply)),
            }
        })
    }

    fn ban(&self, client: &ClientKey, until: Option<Timestamp>, now: Timestamp) -> StoreFuture<()> {
        let until = until.map_or(u64::MAX, Timestamp::as_millis);
        let call = self.run(client, "ban", now, lua_time(until).into_bytes());
        let cache = self.cache.clone();
        let client = client.clone();
        StoreFuture::pending(async move {
            // An operator ban replaces any other, shorter or longer.
            let epoch = cache.as_ref().map(|c| {
                c.remove(&client);
                c.epoch()
            });
            call.await?;
            if let (Some(cache), Some(epoch)) = (&cache, epoch) {
                cache.put(&client, until, BanReason::Operator, now.as_millis(), epoch);
            }
            Ok(())
        })
    }

    fn extend_ban(
        &self,
        client: &ClientKey,
        until: Option<Timestamp>,
        reason: BanReason,
        now: Timestamp,
    ) -> StoreFuture<()> {
        let mut args = lua_time(until.map_or(u64::MAX, Timestamp::as_millis));
        let _ = write!(args, " {}", ban_code(reason));
        let epoch = self.cache.as_ref().map_or(0, |c| c.epoch());
        let call = self.run(client, "extend", now, args.into_bytes());
        let cache = self.cache.clone();
        let client = client.clone();
        StoreFuture::pending(async move {
            let reply = call.await?;
            match reply.as_slice() {
                [until, code] => {
                    if let Some(cache) = &cache {
                        // The ban now in force: this one, or a longer one kept.
                        let until = rust_time(*until);
                        cache.put(&client, until, ban_reason(*code), now.as_millis(), epoch);
                    }
                    Ok(())
                }
                _ => Err(malformed("extend", &reply)),
            }
        })
    }

    fn unban(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<bool> {
        if let Some(cache) = &self.cache {
            cache.remove(client);
        }
        let call = self.run(client, "unban", now, Vec::new());
        let cache = self.cache.clone();
        let client = client.clone();
        StoreFuture::pending(async move {
            let reply = call.await;
            // A check that raced with the unban may have cached the old ban again.
            if let Some(cache) = &cache {
                cache.remove(&client);
            }
            match reply?.as_slice() {
                [was] => Ok(*was != 0),
                other => Err(malformed("unban", other)),
            }
        })
    }

    fn state(&self, client: &ClientKey, now: Timestamp) -> StoreFuture<Option<ClientState>> {
        let key = self.key_of(client);
        let since = self.ban_since(client);
        let mut conn = self.conn.clone();
        let timeout = self.timeout;
        let addr = self.addr.clone();
        StoreFuture::pending(async move {
            // The state and, from the index of bans (another slot on a cluster), when its ban
            // began: two commands sent together, one round trip.
            let mut get = ::redis::cmd("GET");
            get.arg(&key);
            let blob = get.query_async::<Option<Vec<u8>>>(&mut conn);
            let (blob, since) = bounded(timeout, join::both(blob, since))
                .await
                .map_err(|e| e.context(&format!("Redis at {addr}: state")))?;
            let Some(blob) = blob else { return Ok(None) };
            let mut state = decode_state(&blob)
                .ok_or_else(|| StoreError::new(format!("malformed client state in {key}")))?;
            if let Some(since) = since.as_deref().and_then(bans::since_of_info) {
                state.set_ban_since(since);
            }
            state.prune(now);
            Ok((state.expires_at() > now).then_some(state))
        })
    }

    /// Redis expires keys by itself: nothing to sweep, always 0.
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn sweep(&self, _now: Timestamp) -> StoreFuture<usize> {
        StoreFuture::ready(Ok(0))
    }

    /// Calls made at once share the connection's pipeline: one round trip.
    fn checks_together(&self) -> bool {
        true
    }

    fn bans(
        &self,
        after: Option<&BanCursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreFuture<BanPage> {
        self.list_bans(after, limit, now)
    }
}

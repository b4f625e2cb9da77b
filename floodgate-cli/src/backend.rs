//! Where the command acts: a floodgate store opened directly (SQLite, Redis, Redis Cluster),
//! or a running app's admin API. Every answer has the admin API's JSON shape, whichever the
//! backend.

use std::net::IpAddr;
use std::time::Duration;

use floodgate::{
    BanCursor, BanReason, ClientKey, ClientState, RedisStore, RedisStoreBuilder, SqliteStore,
    Store, Timestamp,
};
use serde_json::{json, Value};

use crate::http::Api;
use crate::{Cli, Failure};

pub(crate) enum Backend {
    Store {
        store: Box<dyn Store>,
        v6_prefix: u8,
    },
    Api(Api),
}

/// The client named on the command line: an address, a network or a custom key.
pub(crate) fn client_key(text: &str, v6_prefix: u8) -> Result<ClientKey, Failure> {
    if text.is_empty() || text.len() > 1024 || text.chars().any(char::is_control) {
        return Err(Failure::usage(
            "a client is 1 to 1024 bytes without control characters",
        ));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ClientKey::from_ip(ip, v6_prefix));
    }
    if let Some((ip, prefix)) = text.split_once('/') {
        if let (Ok(ip), Ok(prefix)) = (ip.parse::<IpAddr>(), prefix.parse::<u8>()) {
            return Ok(ClientKey::from_ip(ip, prefix));
        }
    }
    Ok(ClientKey::custom(text))
}

fn time(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}

fn now() -> Timestamp {
    use floodgate::Clock;
    floodgate::SystemClock.now()
}

fn failed(e: floodgate::StoreError) -> Failure {
    Failure::new(e.to_string())
}

/// The Redis store `builder` sets up (a server's or a cluster's), connected with the
/// command's settings: its prefix, and no ban cache (the command reads what Redis holds now).
async fn redis_store(builder: RedisStoreBuilder, cli: &Cli) -> Result<Box<dyn Store>, Failure> {
    let store = builder
        .prefix(cli.prefix.clone())
        .ban_cache(Duration::ZERO)
        .connect()
        .await
        .map_err(failed)?;
    Ok(Box::new(store))
}

/// The node URLs of `--redis-cluster`, trimmed; a usage error when there is none or one is
/// blank (`a,,b`, a trailing comma).
fn cluster_nodes(given: &[String]) -> Result<Vec<String>, Failure> {
    let nodes: Vec<String> = given.iter().map(|n| n.trim().to_owned()).collect();
    if nodes.is_empty() || nodes.iter().any(String::is_empty) {
        return Err(Failure::usage(
            "--redis-cluster takes node URLs separated by commas, none of them empty \
             (redis://10.0.0.1:6379,redis://10.0.0.2:6379)",
        ));
    }
    Ok(nodes)
}

/// A client's status in the admin API's shape (without windows: only the app knows its
/// rules).
fn status_json(client: &ClientKey, state: Option<&ClientState>, now: Timestamp) -> Value {
    let ban = state.and_then(|s| s.ban_at(now)).map(|(until, reason)| {
        json!({
            "reason": BanReason::listed_as(reason, until),
            "since": time(state.and_then(|s| s.ban_since(now))),
            "until": time(until),
        })
    });
    json!({
        "client": client.to_string(),
        "ban": ban,
        "last_seen": time(state.map(ClientState::last_seen)),
    })
}

impl Backend {
    pub(crate) async fn open(cli: &Cli) -> Result<Backend, Failure> {
        let v6_prefix = cli.ipv6_prefix;
        if cli.table.is_some() && cli.sqlite.is_none() {
            // Said here: clap's `requires` lets `--table` pass beside `--redis` or `--url`,
            // where it would be silently ignored.
            return Err(Failure::usage(
                "--table names a table of a SQLite file: it goes with --sqlite FILE",
            ));
        }
        if let Some(path) = &cli.sqlite {
            let table = cli
                .table
                .as_deref()
                .unwrap_or(floodgate::store::sqlite::DEFAULT_TABLE);
            let store = SqliteStore::builder(path)
                .table(table)
                .open()
                .map_err(|e| Failure::new(e.to_string()))?;
            return Ok(Backend::Store {
                store: Box::new(store),
                v6_prefix,
            });
        }
        if let Some(url) = &cli.redis {
            let store = redis_store(RedisStore::builder(url.clone()), cli).await?;
            return Ok(Backend::Store { store, v6_prefix });
        }
        if let Some(nodes) = &cli.redis_cluster {
            let nodes = cluster_nodes(nodes)?;
            let store = redis_store(RedisStore::cluster(nodes), cli).await?;
            return Ok(Backend::Store { store, v6_prefix });
        }
        if let Some(url) = &cli.url {
            let Some(token) = cli.token.clone().filter(|t| !t.is_empty()) else {
                return Err(Failure::usage(
                    "--url needs the admin token: --token or FLOODGATE_TOKEN",
                ));
            };
            return Ok(Backend::Api(Api::new(url, token)));
        }
        Err(Failure::usage(
            "say where floodgate's state is: --sqlite FILE, --redis URL, \
             --redis-cluster URL[,URL..] or --url URL",
        ))
    }

    pub(crate) async fn bans(&self) -> Result<Value, Failure> {
        match self {
            Backend::Api(api) => api.bans().await,
            Backend::Store { store, .. } => {
                let now = now();
                let mut all = Vec::new();
                let mut cursor: Option<BanCursor> = None;
                loop {
                    let page = store
                        .bans(cursor.as_ref(), 1_000, now)
                        .await
                        .map_err(failed)?;
                    all.extend(page.bans.iter().map(|e| {
                        json!({
                            "client": e.client.to_string(),
                            "reason": BanReason::listed_as(e.reason, e.until),
                            "since": time(e.since),
                            "until": time(e.until),
                        })
                    }));
                    match page.next {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                Ok(json!({ "bans": all, "next": null }))
            }
        }
    }

    pub(crate) async fn status(&self, client: &str) -> Result<Value, Failure> {
        match self {
            Backend::Api(api) => api.status(client).await,
            Backend::Store { store, v6_prefix } => {
                let key = client_key(client, *v6_prefix)?;
                let now = now();
                let state = store.state(&key, now).await.map_err(failed)?;
                Ok(status_json(&key, state.as_ref(), now))
            }
        }
    }

    /// Bans `client` for `length`, or forever for `None`; answers its status.
    pub(crate) async fn ban(
        &self,
        client: &str,
        length: Option<Duration>,
    ) -> Result<Value, Failure> {
        match self {
            Backend::Api(api) => api.ban(client, length).await,
            Backend::Store { store, v6_prefix } => {
                let key = client_key(client, *v6_prefix)?;
                let now = now();
                let until = length.map(|d| now + d);
                store.ban(&key, until, now).await.map_err(failed)?;
                let state = store.state(&key, now).await.map_err(failed)?;
                Ok(status_json(&key, state.as_ref(), now))
            }
        }
    }

    /// Lifts `client`'s ban; whether one was in force.
    pub(crate) async fn unban(&self, client: &str) -> Result<bool, Failure> {
        match self {
            Backend::Api(api) => api.unban(client).await,
            Backend::Store { store, v6_prefix } => {
                let key = client_key(client, *v6_prefix)?;
                store.unban(&key, now()).await.map_err(failed)
            }
        }
    }

    pub(crate) async fn top(&self, limit: usize) -> Result<Value, Failure> {
        match self {
            Backend::Api(api) => api.top(limit).await,
            Backend::Store { .. } => Err(Failure::usage(
                "top offenders are counted by the running app: use --url and --token",
            )),
        }
    }
}

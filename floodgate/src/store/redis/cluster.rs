//! Where a [`RedisStore`] connects: one Redis server (through a [`ConnectionManager`]) or a
//! Redis Cluster (through redis-rs's cluster client, which keeps the map of slots and
//! follows `MOVED` and `ASK` redirections by itself).
//!
//! Every key one decision touches is in one slot (see `keys.rs`); the index of bans is kept
//! by a call of its own (see `bans.rs`), so no script ever spans two slots.

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::io::tcp::TcpSettings;
use ::redis::{Cmd, Pipeline, RedisFuture, Value};

use super::{bounded, RedisStore, RedisStoreBuilder};
use crate::error::StoreError;

/// What the builder was given: a server's URL or the nodes of a cluster.
#[derive(Clone, Debug)]
pub(super) enum Target {
    Server(String),
    Cluster(Vec<String>),
}

/// A connection to a server or to a cluster; clones share it. Concurrent calls are
/// pipelined on it (several requests in flight, one round trip for calls sent together).
#[derive(Clone)]
pub(super) enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// `TCP_NODELAY`: calls sent together (a custom key's two checks) that leave in two writes
/// must not wait for the first one's acknowledgement (Nagle), which costs the second round
/// trip that sending them together saves.
fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

impl RedisStore {
    /// Settings for a store over a Redis Cluster, given the URLs of some of its nodes
    /// (`redis://[user:password@]host:port`; one reachable node is enough, the client learns
    /// the others and the slots from it). Each client's state lies in one slot, so clients
    /// spread over every master; redirections (`MOVED`, `ASK`) during a resharding or a
    /// failover are followed by the client.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), floodgate::StoreError> {
    /// use floodgate::RedisStore;
    ///
    /// let redis = RedisStore::cluster(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"])
    ///     .prefix("shop")
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn cluster<I>(nodes: I) -> RedisStoreBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        RedisStoreBuilder::new(Target::Cluster(nodes.into_iter().map(Into::into).collect()))
    }

    /// Whether this store runs over a Redis Cluster ([`RedisStore::cluster`]).
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }
}

impl RedisStoreBuilder {
    /// The connection, not yet made; the address (or addresses) for messages.
    pub(super) fn lazy_conn(&self) -> Result<(Conn, Arc<str>), StoreError> {
        match &self.target {
            Target::Server(url) => {
                let (client, addr) = self.server_client(url)?;
                let conn = ConnectionManager::new_lazy_with_config(client, self.manager_config())
                    .map_err(|e| {
                    StoreError::with_source(format!("cannot set up Redis at {addr}"), e)
                })?;
                Ok((Conn::Server(conn), addr))
            }
            Target::Cluster(nodes) => {
                let (client, addr) = self.cluster_client(nodes)?;
                let conn = client.get_pending_async_connection_with_config(self.cluster_config());
                Ok((Conn::Cluster(conn), addr))
            }
        }
    }

    /// The connection, made within `connect_timeout`.
    pub(super) async fn conn(&self) -> Result<(Conn, Arc<str>), StoreError> {
        match &self.target {
            Target::Server(url) => {
                let (client, addr) = self.server_client(url)?;
                let connecting = ConnectionManager::new_with_config(client, self.manager_config());
                let conn = bounded(self.connect_timeout, connecting)
                    .await
                    .map_err(|e| e.context(&format!("cannot connect to Redis at {addr}")))?;
                Ok((Conn::Server(conn), addr))
            }
            Target::Cluster(nodes) => {
                let (client, addr) = self.cluster_client(nodes)?;
                let connecting = client.get_async_connection_with_config(self.cluster_config());
                let conn = bounded(self.connect_timeout, connecting)
                    .await
                    .map_err(|e| {
                        e.context(&format!("cannot connect to Redis Cluster at {addr}"))
                    })?;
                Ok((Conn::Cluster(conn), addr))
            }
        }
    }

    fn server_client(&self, url: &str) -> Result<(::redis::Client, Arc<str>), StoreError> {
        let info = ::redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| StoreError::with_source("invalid Redis URL", e))?
            .set_tcp_settings(tcp_settings());
        let client = ::redis::Client::open(info)
            .map_err(|e| StoreError::with_source("invalid Redis URL", e))?;
        let addr: Arc<str> = client.get_connection_info().addr().to_string().into();
        Ok((client, addr))
    }

    fn cluster_client(&self, nodes: &[String]) -> Result<(ClusterClient, Arc<str>), StoreError> {
        if nodes.is_empty() {
            return Err(StoreError::new(
                "RedisStore::cluster: no node given (at least one node URL is needed)",
            ));
        }
        let mut addrs = Vec::with_capacity(nodes.len());
        for node in nodes {
            // Each URL checked alone, so that the message names the bad one (never a password).
            let info =
                ::redis::IntoConnectionInfo::into_connection_info(node.as_str()).map_err(|e| {
                    StoreError::with_source(
                        format!("invalid Redis Cluster node URL #{}", addrs.len() + 1),
                        e,
                    )
                })?;
            addrs.push(info.addr().to_string());
        }
        let client = ClusterClient::builder(nodes.iter().map(String::as_str))
            .tcp_settings(tcp_settings())
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .build()
            .map_err(|e| StoreError::with_source("invalid Redis Cluster settings", e))?;
        Ok((client, addrs.join(",").into()))
    }

    pub(super) fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
    }

    fn cluster_config(&self) -> ClusterConfig {
        ClusterConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
    }
}

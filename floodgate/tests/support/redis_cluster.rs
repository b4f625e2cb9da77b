//! Redis Clusters of the tests' own: three masters (`redis-server --cluster-enabled yes` x3
//! on loopback ports, joined by `redis-cli --cluster create`), no replicas. One per test binary
//! shared by the tests that leave it running (each under a key prefix of its own: a cluster
//! has one database), and one of its own for a test that kills a master. Every process is
//! stopped when the binary exits (the shared one) or the handle drops. Included by `#[path]`;
//! needs `support/redis_server.rs` as `redis_server` and `support/services.rs` as `services`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use floodgate::RedisStore;

use super::redis_server::{cli_on, redis_args, redis_installed, wait_until_up};

/// Masters of each cluster.
pub(crate) const MASTERS: usize = 3;

/// A cluster of three masters: the binary's shared one (a prefix of its own per handle), or
/// one of its own, killed and cleaned up on drop.
pub(crate) struct RedisCluster {
    pub(crate) ports: Vec<u16>,
    dir: PathBuf,
    /// The masters' processes, on a cluster of its own (`None` once killed).
    children: Vec<Option<Child>>,
    prefix: String,
}

struct Shared {
    ports: Vec<u16>,
    dir: PathBuf,
    _stdin: Mutex<ChildStdin>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();
static NEXT_PREFIX: AtomicU32 = AtomicU32::new(0);

/// A port whose cluster bus port (port + 10000) is free too, below the ephemeral range.
fn free_cluster_port() -> u16 {
    loop {
        let port = 20_000 + fastrand::u16(..10_000);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

fn node_args(port: u16, dir: &Path) -> Vec<String> {
    let mut args = redis_args(port, dir);
    args.extend(
        [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &format!("nodes-{port}.conf"),
            // A dead master is noticed within a second, and the others keep serving the
            // slots they hold.
            "--cluster-node-timeout",
            "1000",
            "--cluster-require-full-coverage",
            "no",
        ]
        .map(String::from),
    );
    args
}

/// Joins the masters on `ports` into one cluster and waits until every node reports it ok;
/// false when that fails (the caller starts over on other ports).
fn create(ports: &[u16]) -> bool {
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli");
    if !out.status.success() {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let ok = ports.iter().all(|&p| {
            let info = cli_on(p, 0, &["CLUSTER", "INFO"]);
            info.contains("cluster_state:ok")
                && info.contains(&format!("cluster_known_nodes:{}", ports.len()))
                && info.contains("cluster_slots_ok:16384")
        });
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn temp_dir(kind: &str, port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "floodgate-cluster-{}-{kind}-{port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn shared_cluster() -> &'static Shared {
    SHARED.get_or_init(|| {
        for _ in 0..5 {
            let ports: Vec<u16> = (0..MASTERS).map(|_| free_cluster_port()).collect();
            let dir = temp_dir("shared", ports[0]);
            // One `sh` runs the three masters and stops them (and deletes the directory)
            // when its stdin closes, at the binary's exit.
            let mut script = String::new();
            for (i, port) in ports.iter().enumerate() {
                let args: Vec<String> = node_args(*port, &dir)
                    .iter()
                    .map(|a| format!("'{a}'"))
                    .collect();
                script.push_str(&format!(
                    "redis-server {} >/dev/null 2>&1 & p{i}=$!; ",
                    args.join(" ")
                ));
            }
            script.push_str("cat >/dev/null; kill $p0 $p1 $p2; wait; rm -rf \"$0\"");
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg(&dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sh");
            let stdin = child.stdin.take().unwrap();
            let up = ports.iter().all(|&p| wait_until_up(&mut child, p, &dir));
            if up && create(&ports) {
                return Shared {
                    ports,
                    dir,
                    _stdin: Mutex::new(stdin),
                };
            }
            drop(stdin);
            let _ = child.wait();
        }
        panic!("could not start the shared Redis Cluster (apt-get install redis-server)");
    })
}

impl RedisCluster {
    /// A prefix of its own on the binary's shared cluster.
    pub(crate) fn shared() -> Option<Self> {
        if !redis_installed() {
            return None;
        }
        let shared = shared_cluster();
        Some(RedisCluster {
            ports: shared.ports.clone(),
            dir: shared.dir.clone(),
            children: Vec::new(),
            prefix: format!("c{}", NEXT_PREFIX.fetch_add(1, Ordering::Relaxed)),
        })
    }

    /// A cluster of its own, for a test that kills a master.
    pub(crate) fn start() -> Option<Self> {
        if !redis_installed() {
            return None;
        }
        for _ in 0..5 {
            let ports: Vec<u16> = (0..MASTERS).map(|_| free_cluster_port()).collect();
            let dir = temp_dir("own", ports[0]);
            let mut cluster = RedisCluster {
                ports: ports.clone(),
                dir: dir.clone(),
                children: Vec::new(),
                prefix: "own".to_owned(),
            };
            let mut up = true;
            for &port in &ports {
                let mut child = Command::new("redis-server")
                    .args(node_args(port, &dir))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server");
                up &= wait_until_up(&mut child, port, &dir);
                cluster.children.push(Some(child));
            }
            if up && create(&ports) {
                return Some(cluster);
            }
            // Dropped: its processes stop and its directory goes.
        }
        panic!("could not start a Redis Cluster on free ports");
    }

    /// The key prefix of this handle.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The masters' URLs.
    pub(crate) fn nodes(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// Runs `redis-cli` against the master on `port`.
    pub(crate) fn cli(&self, port: u16, args: &[&str]) -> String {
        cli_on(port, 0, args)
    }

    /// The port of the master that holds `key`'s slot.
    pub(crate) fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = self
            .cli(self.ports[0], &["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("CLUSTER KEYSLOT");
        for line in self.cli(self.ports[0], &["CLUSTER", "NODES"]).lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(port) = fields
                .get(1)
                .and_then(|a| a.split(['@', ':']).nth(1))
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            for range in fields.iter().skip(8) {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>()) {
                    if (lo..=hi).contains(&slot) {
                        return port;
                    }
                }
            }
        }
        panic!("no master holds slot {slot} of {key}");
    }

    /// Keys of this handle's prefix on the master on `port`.
    pub(crate) fn keys_on(&self, port: u16) -> Vec<String> {
        let pattern = format!("{}:*", self.prefix);
        let out = self.cli(port, &["KEYS", &pattern]);
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The process of the master on `port`, for the test to kill (SIGKILL: no goodbye to
    /// the others), on a cluster of its own.
    pub(crate) fn take_master(&mut self, port: u16) -> Child {
        let i = self
            .ports
            .iter()
            .position(|&p| p == port)
            .expect("a master of this cluster");
        assert!(!self.children.is_empty(), "a cluster of its own");
        self.children[i].take().expect("a master still running")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        if self.children.is_empty() {
            return; // the shared cluster: stopped when the binary exits
        }
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A store on `cluster` under its prefix, with a ban cache of `cache`.
pub(crate) async fn cluster_store(cluster: &RedisCluster, cache: Duration) -> RedisStore {
    RedisStore::cluster(cluster.nodes())
        .prefix(cluster.prefix())
        .ban_cache(cache)
        .timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect("connect to the test cluster")
}

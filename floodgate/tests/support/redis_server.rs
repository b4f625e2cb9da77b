//! `redis-server`s of the tests' own: one per test binary, shared by the tests that leave it
//! running (each in a database of its own), and one of its own for each test that kills or
//! restarts its server. Every process is stopped when the binary exits. Included by `#[path]`;
//! needs `support/services.rs` as the including binary's `services` module.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use floodgate::RedisStore;

use super::services;

// ---------------------------------------------------------------------------------------
// redis-servers of our own.

/// A `redis-server` on a free loopback port, without persistence, in its own temp dir.
/// Either the binary's shared server (one database of it per handle) or a server of its
/// own, killed and cleaned up on drop.
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    pub(crate) dir: PathBuf,
    pub(crate) extra: Vec<String>,
    pub(crate) child: Option<Child>,
    /// The database this handle uses (0 on a server of its own).
    pub(crate) db: u32,
    /// Held by handles on the shared server: shared by all, exclusive for a test that reads
    /// server-wide statistics.
    _gate: Option<Gate>,
}

/// The shared server: the `sh` that runs it waits on its stdin, which closes when this test
/// binary exits, and then stops the server and deletes its directory.
struct Shared {
    port: u16,
    dir: PathBuf,
    _stdin: Mutex<ChildStdin>,
}

/// Databases of the shared server: one per handle.
const SHARED_DATABASES: u32 = 1_000;

static SHARED: OnceLock<Shared> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);
static GATE: RwLock<()> = RwLock::new(());

#[allow(dead_code)] // held for its drop
enum Gate {
    Shared(RwLockReadGuard<'static, ()>),
    Exclusive(RwLockWriteGuard<'static, ()>),
}

pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().unwrap().port()
}

pub(crate) fn redis_args(port: u16, dir: &std::path::Path) -> Vec<String> {
    vec![
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        String::new(),
        "--appendonly".into(),
        "no".into(),
        "--dir".into(),
        dir.to_string_lossy().into_owned(),
    ]
}

/// Waits until the server on `port` is the one started in `dir`; false when `child` exits
/// first (another process took the port) or after 10 s.
pub(crate) fn wait_until_up(child: &mut Child, port: u16, dir: &std::path::Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().expect("redis-server status").is_some() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let out = cli_on(port, 0, &["CONFIG", "GET", "dir"]);
            if out.contains(&*dir.to_string_lossy()) {
                return true;
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(crate) fn cli_on(port: u16, db: u32, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-n", &db.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn shared_server() -> &'static Shared {
    SHARED.get_or_init(|| {
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "floodgate-redis-{}-shared-{port}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let mut args = redis_args(port, &dir);
            args.extend(["--databases".into(), SHARED_DATABASES.to_string()]);
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(
                    "redis-server \"$@\" >/dev/null 2>&1 & pid=$!; cat >/dev/null; \
                     kill $pid; wait $pid; rm -rf \"$0\"",
                )
                .arg(&dir)
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sh");
            let stdin = child.stdin.take().unwrap();
            if wait_until_up(&mut child, port, &dir) {
                // The child is left to run: it stops when `stdin` closes, at exit.
                return Shared {
                    port,
                    dir,
                    _stdin: Mutex::new(stdin),
                };
            }
            drop(stdin);
            let _ = child.wait();
        }
        panic!("could not start the shared redis-server (apt-get install redis-server)");
    })
}

/// Whether `redis-server` and `redis-cli` are installed. When they are not, each
/// constructor of [`RedisServer`] gives `None` and its test returns early (see
/// `support/services.rs`; `FLOODGATE_REQUIRE_REDIS=1` panics instead).
pub(crate) fn redis_installed() -> bool {
    services::available(
        "the Redis suites and the Redis runs of the suites on every store",
        &["redis-server", "redis-cli"],
    )
}

impl RedisServer {
    /// A database of its own on the binary's shared server.
    pub(crate) fn shared() -> Option<Self> {
        if !redis_installed() {
            return None;
        }
        let gate = Gate::Shared(GATE.read().unwrap_or_else(|p| p.into_inner()));
        Some(Self::on_shared(gate))
    }

    /// A database on the shared server, while no other test uses it: for tests that read
    /// server-wide statistics (`INFO commandstats`, reset first) or flush its scripts.
    pub(crate) fn shared_exclusive() -> Option<Self> {
        if !redis_installed() {
            return None;
        }
        let gate = Gate::Exclusive(GATE.write().unwrap_or_else(|p| p.into_inner()));
        let server = Self::on_shared(gate);
        assert_eq!(server.cli(&["CONFIG", "RESETSTAT"]), "OK");
        Some(server)
    }

    fn on_shared(gate: Gate) -> Self {
        let shared = shared_server();
        let db = NEXT_DB.fetch_add(1, Ordering::Relaxed);
        assert!(db < SHARED_DATABASES, "raise SHARED_DATABASES");
        RedisServer {
            port: shared.port,
            dir: shared.dir.clone(),
            extra: Vec::new(),
            child: None,
            db,
            _gate: Some(gate),
        }
    }

    /// A server of its own, for a test that stops it.
    pub(crate) fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    pub(crate) fn start_with(extra: &[&str]) -> Option<Self> {
        if !redis_installed() {
            return None;
        }
        for _ in 0..5 {
            let port = free_port();
            let dir =
                std::env::temp_dir().join(format!("floodgate-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let mut server = RedisServer {
                port,
                dir,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                child: None,
                db: 0,
                _gate: None,
            };
            if server.try_run() {
                return Some(server);
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// Starts the process again on the same port, and waits until it accepts connections.
    pub(crate) fn run(&mut self) {
        assert!(
            self.try_run(),
            "redis-server did not come back on port {}",
            self.port
        );
    }

    /// Starts the process; false when it exits at once (another process took the port).
    /// Waits until the server on the port is this one (its `dir` is ours).
    pub(crate) fn try_run(&mut self) -> bool {
        assert!(
            self.child.is_none() && self._gate.is_none(),
            "a server of its own"
        );
        let mut child = Command::new("redis-server")
            .args(redis_args(self.port, &self.dir))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        if wait_until_up(&mut child, self.port, &self.dir) {
            self.child = Some(child);
            true
        } else {
            let _ = child.kill();
            let _ = child.wait();
            false
        }
    }

    pub(crate) fn stop(&mut self) {
        assert!(self._gate.is_none(), "the shared server is never stopped");
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/{}", self.port, self.db)
    }

    /// Runs `redis-cli` against this server's database.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        cli_on(self.port, self.db, args)
    }

    /// Round trips so far: calls of every command (from `INFO commandstats`) but INFO itself
    /// (and the SELECT that `redis-cli -n` sends first), and those that floodgate's script
    /// runs inside Redis (GET, SET, DEL), which commandstats also counts. Server-wide: only
    /// for [`RedisServer::shared_exclusive`].
    pub(crate) fn round_trips(&self) -> u64 {
        const INNER: [&str; 6] = [
            "cmdstat_info:",
            "cmdstat_select:",
            "cmdstat_get:",
            "cmdstat_set:",
            "cmdstat_del:",
            "cmdstat_config|resetstat:",
        ];
        self.cli(&["INFO", "commandstats"])
            .lines()
            .filter(|l| l.starts_with("cmdstat_") && !INNER.iter().any(|p| l.starts_with(p)))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self._gate.is_some() {
            return; // the shared server: stopped when the binary exits
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) async fn redis_store(server: &RedisServer, cache: Duration) -> RedisStore {
    RedisStore::builder(server.url())
        .prefix("test")
        .ban_cache(cache)
        .timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect("connect to the test redis-server")
}

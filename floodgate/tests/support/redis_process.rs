//! A `redis-server` of a test binary's own, on a free loopback port, for suites over real HTTP
//! that run on every store. It stops when the binary exits (its wrapper shell kills it when
//! its stdin closes) and removes its directory.
//!
//! Shared through `#[path]`, beside `services.rs` (which it needs as `super::services`, or at
//! the crate root as `services`).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running server; `url(db)` names one of its databases.
pub(crate) struct RedisProcess {
    port: u16,
    _stdin: Mutex<ChildStdin>,
    /// The wrapper shell: it ends when `_stdin` closes, as the binary exits.
    _child: Mutex<Child>,
    _dir: PathBuf,
}

impl RedisProcess {
    /// `redis://` for database `db` of this server.
    pub(crate) fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }
}

/// The binary's server, started on first use; `None` (after a notice) when `redis-server` is
/// not installed, unless `FLOODGATE_REQUIRE_REDIS=1` makes that a failure.
pub(crate) fn redis(suite: &str) -> Option<&'static RedisProcess> {
    if !crate::services::available(suite, &["redis-server", "redis-cli"]) {
        return None;
    }
    static SERVER: OnceLock<RedisProcess> = OnceLock::new();
    Some(SERVER.get_or_init(start))
}

fn start() -> RedisProcess {
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a loopback port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("floodgate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(
                "redis-server --port \"$1\" --bind 127.0.0.1 --save '' --appendonly no \
                 --dir \"$0\" >/dev/null 2>&1 & pid=$!; cat >/dev/null; kill $pid; wait $pid; \
                 rm -rf \"$0\"",
            )
            .arg(&dir)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        let stdin = child.stdin.take().expect("stdin");
        // The server is ours when it answers with our directory.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let out = Command::new("redis-cli")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port.to_string(),
                        "CONFIG",
                        "GET",
                        "dir",
                    ])
                    .output()
                    .expect("redis-cli");
                if String::from_utf8_lossy(&out.stdout).contains(&*dir.to_string_lossy()) {
                    return RedisProcess {
                        port,
                        _stdin: Mutex::new(stdin),
                        _child: Mutex::new(child),
                        _dir: dir,
                    };
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(stdin);
        let _ = child.wait();
    }
    panic!("could not start redis-server on a free port");
}

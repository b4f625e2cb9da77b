//! The SQLite store across processes: a server process stopped and started again on the same
//! file, a server killed under load, a database locked by another process, and exact counting
//! across two workers. The server is `bin/sqlite_server.rs`; its time is a fake clock set from
//! the environment, so every Retry-After is exact. No test sleeps to wait for a window.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const T0: u64 = 1_700_000_000_000;

/// A server child process, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// A server whose SQLite store has the given durability (`normal`, `full`, `batched`).
    fn start_with(db: &Path, now_ms: u64, durability: &str) -> Server {
        Self::try_start(db, now_ms, &[("FLOODGATE_DURABILITY", durability)]).expect("server start")
    }

    fn try_start(db: &Path, now_ms: u64, env: &[(&str, &str)]) -> Result<Server, String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_floodgate-test-server"));
        cmd.env("FLOODGATE_DB", db)
            .env("FLOODGATE_FAKE_NOW_MS", now_ms.to_string())
            .env("PORT", "0")
            .env("RUST_LOG", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the test server");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        match line.trim().rsplit_once(':') {
            Some((_, port)) if line.starts_with("listening on") => Ok(Server {
                port: port.parse().unwrap(),
                child,
            }),
            _ => {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                let _ = child.wait();
                Err(err)
            }
        }
    }

    fn request(&self, method: &str, path: &str, ip: &str) -> Response {
        self.try_request(method, path, ip).expect("request")
    }

    fn try_request(&self, method: &str, path: &str, ip: &str) -> std::io::Result<Response> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-ip: {ip}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        Response::parse(&raw).ok_or_else(|| std::io::Error::other(format!("bad response: {raw:?}")))
    }

    fn advance(&self, ms: u64) {
        let r = self.request("POST", &format!("/admin/advance/{ms}"), "127.0.0.1");
        assert_eq!(r.status, 200);
    }

    /// Stops the process (SIGKILL: nothing gets a chance to flush).
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    retry_after: Option<u64>,
    body: String,
}

impl Response {
    fn parse(raw: &str) -> Option<Response> {
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let mut lines = head.lines();
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let retry_after = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, v)| v.trim().parse().ok());
        Some(Response {
            status,
            retry_after,
            body: body.to_owned(),
        })
    }
}

/// A fresh directory, deleted on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("floodgate-process-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bans_blacklists_and_blocks_survive_a_restart(durability: &str) {
    let dir = TempDir::new(&format!("restart-{durability}"));
    let db = dir.0.join("state.db");
    let s = Server::start_with(&db, T0, durability);

    // E: two blocks on /limited (block_limit = 1, "forever"): blacklisted by the policy.
    for _ in 0..2 {
        assert_eq!(s.request("GET", "/limited", "10.0.0.5").status, 200);
    }
    assert_eq!(s.request("GET", "/limited", "10.0.0.5").status, 429);
    s.advance(60_000); // now T0 + 60 s
    for _ in 0..2 {
        assert_eq!(s.request("GET", "/limited", "10.0.0.5").status, 200);
    }
    let r = s.request("GET", "/limited", "10.0.0.5");
    assert_eq!((r.status, r.retry_after), (403, None), "{r:?}");

    // A: banned by 3 reports, until T0 + 660 s.
    for expected in ["recorded 1", "recorded 2", "banned"] {
        assert_eq!(s.request("POST", "/report", "10.0.0.1").body, expected);
    }
    // B: blacklisted by an operator. D: banned by an operator for 300 s (until T0 + 360 s).
    assert_eq!(s.request("POST", "/admin/ban/10.0.0.2/0", "x").status, 200);
    assert_eq!(
        s.request("POST", "/admin/ban/10.0.0.4/300", "x").status,
        200
    );
    // C: blocked on /limited until T0 + 120 s.
    for _ in 0..2 {
        assert_eq!(s.request("GET", "/limited", "10.0.0.3").status, 200);
    }
    assert_eq!(
        s.request("GET", "/limited", "10.0.0.3").retry_after,
        Some(60)
    );
    s.kill();

    // Started again on the same file, 20 s later.
    let s = Server::start_with(&db, T0 + 80_000, durability);
    let check = |ip: &str, path: &str, status: u16, retry: Option<u64>| {
        let r = s.request("GET", path, ip);
        assert_eq!(
            (r.status, r.retry_after),
            (status, retry),
            "{ip} {path}: {r:?}"
        );
    };
    check("10.0.0.1", "/ping", 403, Some(580));
    check("10.0.0.2", "/ping", 403, None);
    check("10.0.0.3", "/limited", 429, Some(40));
    check("10.0.0.4", "/ping", 403, Some(280));
    check("10.0.0.5", "/limited", 403, None);
    check("10.0.0.6", "/ping", 200, None);
    drop(s);

    // Once the bans and the block have ended, only the blacklists remain.
    let s = Server::start_with(&db, T0 + 700_000, durability);
    let check = |ip: &str, path: &str, status: u16| {
        assert_eq!(s.request("GET", path, ip).status, status, "{ip} {path}");
    };
    check("10.0.0.1", "/ping", 200);
    check("10.0.0.2", "/ping", 403);
    check("10.0.0.3", "/limited", 200);
    check("10.0.0.4", "/ping", 200);
    check("10.0.0.5", "/limited", 403);
}

#[test]
fn bans_blacklists_and_blocks_survive_a_restart_normal() {
    bans_blacklists_and_blocks_survive_a_restart("normal");
}

#[test]
fn bans_blacklists_and_blocks_survive_a_restart_batched() {
    bans_blacklists_and_blocks_survive_a_restart("batched");
}

fn every_answered_ban_survives_sigkill_under_load(durability: &str) {
    let dir = TempDir::new(&format!("crash-{durability}"));
    let db = dir.0.join("state.db");
    let s = Server::start_with(&db, T0, durability);
    let banned = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let server = Arc::new(s);
    let mut threads = Vec::new();
    for t in 0..8u32 {
        let (banned, stop, server) = (banned.clone(), stop.clone(), server.clone());
        threads.push(thread::spawn(move || {
            for n in 0u32.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let ip = format!("10.{t}.{}.{}", n / 256, n % 256);
                // Three offences ban; only a "banned" answer that arrived counts.
                let mut last = None;
                for _ in 0..3 {
                    last = server.try_request("POST", "/report", &ip).ok();
                }
                // Background load: counted requests of other clients.
                let _ = server.try_request("GET", "/ping", &format!("11.{t}.0.{}", n % 256));
                match last {
                    Some(r) if r.body == "banned" => banned.lock().unwrap().push(ip),
                    Some(_) => {}
                    None => break,
                }
            }
        }));
    }
    let started = Instant::now();
    while banned.lock().unwrap().len() < 200 && started.elapsed() < Duration::from_secs(60) {
        thread::sleep(Duration::from_millis(20)); // polls the load, not a rate-limit window
    }
    // Kill the server mid-flight; requests still in the air fail.
    let pid = server.child.id();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    drop(server);
    let banned = banned.lock().unwrap().clone();
    assert!(banned.len() >= 200, "only {} bans under load", banned.len());

    let conn = rusqlite::Connection::open(&db).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    drop(conn);

    // Every ban that was answered is in force after a restart.
    let s = Server::start_with(&db, T0 + 1_000, durability);
    for ip in &banned {
        let r = s.request("GET", "/ping", ip);
        assert_eq!(r.status, 403, "{ip}: {r:?}");
    }
}

#[test]
fn every_answered_ban_survives_sigkill_under_load_normal() {
    every_answered_ban_survives_sigkill_under_load("normal");
}

#[test]
fn every_answered_ban_survives_sigkill_under_load_batched() {
    every_answered_ban_survives_sigkill_under_load("batched");
}

fn concurrent_requests_across_two_workers_are_counted_exactly(durability: &str) {
    let dir = TempDir::new(&format!("exact-{durability}"));
    let db = dir.0.join("state.db");
    let s = Arc::new(Server::start_with(&db, T0, durability));
    let barrier = Arc::new(Barrier::new(200));
    let statuses: Vec<u16> = (0..200)
        .map(|_| {
            let (s, barrier) = (s.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                s.request("GET", "/exact", "192.0.2.9").status
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|&&c| c == 200).count(), 50);
    assert_eq!(statuses.iter().filter(|&&c| c == 429).count(), 150);
}

#[test]
fn concurrent_requests_across_two_workers_are_counted_exactly_normal() {
    concurrent_requests_across_two_workers_are_counted_exactly("normal");
}

#[test]
fn concurrent_requests_across_two_workers_are_counted_exactly_batched() {
    concurrent_requests_across_two_workers_are_counted_exactly("batched");
}

#[test]
fn a_database_locked_by_another_process_fails_in_bounded_time() {
    let dir = TempDir::new("locked");
    let db = dir.0.join("state.db");
    let fast = [("FLOODGATE_BUSY_MS", "300")];
    let s = Server::try_start(&db, T0, &fast).unwrap();
    assert_eq!(s.request("GET", "/ping", "10.0.0.1").status, 200);

    // This test process is "another process" holding the write lock.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = Instant::now();
    let r = s.request("GET", "/ping", "10.0.0.1");
    assert_eq!(r.status, 503, "fail-closed server: {r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // A server started meanwhile reports the lock and exits.
    let started = Instant::now();
    let err = match Server::try_start(&db, T0, &fast) {
        Ok(_) => panic!("started on a locked database"),
        Err(e) => e,
    };
    assert!(err.contains("locked by another process"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    holder.execute_batch("COMMIT").unwrap();
    assert_eq!(s.request("GET", "/ping", "10.0.0.1").status, 200);
}

//! The example servers, end to end, driven as README.md and their own docs drive them with
//! curl: each test starts the built binary on a free loopback port (`PORT`), waits until it
//! listens, sends the walkthrough's requests over plain HTTP/1.1, checks every status, and
//! kills the server.
//!
//! The examples keep real time (`SystemClock`), so a walk only holds while its requests fall
//! within the example's window (2 s at the shortest). A walk that finds its window passed is
//! run again with fresh clients, and that is allowed only when the walk really took longer
//! than the window (the machine stalled): an early failure is a failure. No assertion is
//! about time; every wait is a bounded poll. Distinct clients come from distinct loopback
//! addresses (127.0.0.n) where an example reads the socket peer, or from the `x-my-ip`
//! header where it reads that.
//!
//! `floodgate-redis` needs a `redis-server` (started here on a free port); without one on
//! `PATH` its test returns early with a notice, unless `FLOODGATE_REQUIRE_REDIS=1`.

#[path = "../../floodgate/tests/support/services.rs"]
mod services;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// The longest a server may take to listen, and a request to be answered.
const PATIENCE: Duration = Duration::from_secs(60);

/// How many times a walk may be run again after a stall longer than its window.
const RETRIES: u8 = 3;

// ---------------------------------------------------------------------------------------
// Processes.

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// A directory of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "floodgate-e2e-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running process listening on `port`: killed on drop, its log (stderr) printed when the
/// test fails.
struct Process {
    name: String,
    port: u16,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program` with `args` and `env`, its working directory `dir`, on a free port
    /// (given by `port_args`), and waits until it listens. A process that exits at once
    /// (another one took the port) is started again on another port.
    fn start(
        name: &str,
        program: &str,
        dir: &Path,
        env: &[(&str, &str)],
        port_args: impl Fn(u16) -> (Vec<String>, Vec<(String, String)>),
    ) -> Process {
        for attempt in 0..5 {
            let port = free_port();
            let log = dir.join(format!("{name}-{attempt}.log"));
            let (args, port_env) = port_args(port);
            let child = Command::new(program)
                .args(&args)
                .envs(env.iter().copied())
                .envs(port_env)
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("create a log file"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
            let mut process = Process {
                name: name.to_owned(),
                port,
                child,
                log,
            };
            if process.wait_listening() {
                return process;
            }
        }
        panic!("{name} did not start on a free port in 5 attempts");
    }

    /// Polls until the port accepts connections (true) or the process exits (false); panics
    /// past [`PATIENCE`].
    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.child.try_wait().expect("process status").is_some() {
                return false;
            }
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on port {} within {PATIENCE:?}:\n{}",
                self.name,
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.name, self.log_text());
        }
    }
}

/// An example binary of this package, started with `PORT` set.
fn example(name: &str, bin: &str, dir: &Path, env: &[(&str, &str)]) -> Process {
    Process::start(name, bin, dir, env, |port| {
        (Vec::new(), vec![("PORT".to_owned(), port.to_string())])
    })
}

// ---------------------------------------------------------------------------------------
// HTTP.

/// A response: status, raw header block, body.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One request as curl sends it, from the loopback address `from`, on a new connection.
fn send(
    port: u16,
    from: Ipv4Addr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket
        .connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into(),
            PATIENCE,
        )
        .unwrap_or_else(|e| panic!("connect to port {port}: {e}"));
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read the response to {method} {path}: {e}"));
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response to {method} {path}: {raw:?}"));
    Resp {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `GET path` from 127.0.0.1 with the `x-my-ip` header the gatekeeper and targeting demos
/// read, as the README's curl lines send it.
fn get_as(server: &Process, ip: &str, path: &str) -> Resp {
    send(
        server.port,
        Ipv4Addr::LOCALHOST,
        "GET",
        path,
        &[("x-my-ip", ip)],
        "",
    )
}

fn post_as(server: &Process, ip: &str, path: &str, body: &str) -> Resp {
    send(
        server.port,
        Ipv4Addr::LOCALHOST,
        "POST",
        path,
        &[("x-my-ip", ip)],
        body,
    )
}

/// `GET path` from the loopback address `from`, for examples that key clients by peer.
fn get_from(server: &Process, from: Ipv4Addr, path: &str, headers: &[(&str, &str)]) -> Resp {
    send(server.port, from, "GET", path, headers, "")
}

/// Runs `walk` (given the attempt number, from 1, to pick fresh clients) and checks that it
/// saw `expected`. A walk that saw something else is run again only when it took longer
/// than `window`, the shortest real-time window it relies on.
fn within_window(window: Duration, expected: &[u16], mut walk: impl FnMut(u8) -> Vec<u16>) {
    for attempt in 1..=RETRIES + 1 {
        let started = Instant::now();
        let seen = walk(attempt);
        if seen == expected {
            return;
        }
        let took = started.elapsed();
        assert!(
            took >= window && attempt <= RETRIES,
            "attempt {attempt}: expected {expected:?}, got {seen:?}"
        );
        eprintln!("attempt {attempt} took {took:?}, past its {window:?} window: again");
    }
}

fn codes(responses: impl IntoIterator<Item = Resp>) -> Vec<u16> {
    responses.into_iter().map(|r| r.status).collect()
}

// ---------------------------------------------------------------------------------------
// The walks.

/// README.md, "Two commands": the flask-gatekeeper demo.
#[test]
fn gatekeeper_demo_answers_as_the_readme_says() {
    let dir = TempDir::new("gatekeeper");
    let demo = example(
        "gatekeeper-demo",
        env!("CARGO_BIN_EXE_gatekeeper-demo"),
        &dir.0,
        &[],
    );

    // curl -i -H 'x-my-ip: 1.2.3.4' localhost:8080/global_plus_specific   # 200, then 429 within 2 s
    within_window(Duration::from_secs(2), &[200, 429], |n| {
        let ip = format!("1.2.3.{n}");
        let first = get_as(&demo, &ip, "/global_plus_specific");
        let second = get_as(&demo, &ip, "/global_plus_specific");
        if second.status == 429 {
            assert!(second.header("retry-after").is_some(), "{second:?}");
        }
        codes([first, second])
    });

    // curl -i -H 'x-my-ip: 5.5.5.5' -X POST -d wrong localhost:8080/login  # 401; the 3rd within 10 s bans
    // curl -i -H 'x-my-ip: 5.5.5.5' localhost:8080/ping                    # 403 while banned
    let mut banned = String::new();
    within_window(Duration::from_secs(10), &[401, 401, 401, 403], |n| {
        banned = format!("5.5.5.{n}");
        let mut seen = codes((0..3).map(|_| post_as(&demo, &banned, "/login", "wrong")));
        seen.push(get_as(&demo, &banned, "/ping").status);
        seen
    });
    let refused = get_as(&demo, &banned, "/ping");
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json"),
        "{refused:?}"
    );
    // The right password is no way around a ban either.
    assert_eq!(post_as(&demo, &banned, "/login", "password").status, 403);

    // curl -i -H 'x-my-ip: 5.5.5.5' localhost:8080/bypass                  # 200: nothing applies here
    let bypass = get_as(&demo, &banned, "/bypass");
    assert_eq!((bypass.status, bypass.body.as_str()), (200, "ok"));

    // curl -i -H 'x-my-ip: 1.2.3.4' localhost:8080/status                  # what floodgate holds on you
    let status = get_as(&demo, "1.2.3.4", "/status");
    assert_eq!(status.status, 200, "{status:?}");
    assert!(status.body.contains("1.2.3.4"), "{}", status.body);

    // A client in good standing on the other routes.
    assert_eq!(get_as(&demo, "9.9.9.9", "/ping").status, 200);
    assert_eq!(post_as(&demo, "9.9.9.9", "/login", "password").status, 200);
    assert_eq!(get_as(&demo, "9.9.9.9", "/standalone").status, 200);
}

/// FlaskFloodgate's "Using Memory", as `examples/floodgate_memory.rs` drives it:
/// `for i in $(seq 25); do curl .. localhost:8080/rate-limited; done` gives 20 × 200, then 429.
#[test]
fn floodgate_memory_blocks_the_21st_request() {
    let dir = TempDir::new("memory");
    let server = example(
        "floodgate-memory",
        env!("CARGO_BIN_EXE_floodgate-memory"),
        &dir.0,
        &[],
    );
    let mut expected = vec![200; 20];
    expected.extend([429; 5]);
    within_window(Duration::from_secs(60), &expected, |n| {
        let client = Ipv4Addr::new(127, 0, 0, 10 + n);
        codes((0..25).map(|_| get_from(&server, client, "/rate-limited", &[])))
    });
    // Another client has its own window.
    let other = get_from(&server, Ipv4Addr::new(127, 0, 0, 20), "/rate-limited", &[]);
    assert_eq!((other.status, other.body.as_str()), (200, "Hello!"));
}

/// FlaskFloodgate's "Using Sqlite3", as `examples/floodgate_sqlite.rs` drives it: 20 per
/// minute, a request with `key: value` is not counted, state in `ip-data.db` (table
/// `IP_Data`) that survives a restart.
#[test]
fn floodgate_sqlite_blocks_and_remembers_across_a_restart() {
    let dir = TempDir::new("sqlite");
    let bin = env!("CARGO_BIN_EXE_floodgate-sqlite");
    let mut expected = vec![200; 20];
    expected.extend([429, 200, 429]);
    let mut run = 0;
    within_window(Duration::from_secs(60), &expected, |n| {
        let client = Ipv4Addr::new(127, 0, 0, 30 + n);
        run += 1;
        let server = example(&format!("floodgate-sqlite-{run}"), bin, &dir.0, &[]);
        let mut seen = codes((0..21).map(|_| get_from(&server, client, "/rate-limited", &[])));
        // Served without being counted, even while blocked.
        seen.push(get_from(&server, client, "/rate-limited", &[("key", "value")]).status);
        // Killed (no clean shutdown) and started again on the same file: still blocked.
        drop(server);
        let again = example(&format!("floodgate-sqlite-{run}-again"), bin, &dir.0, &[]);
        seen.push(get_from(&again, client, "/rate-limited", &[]).status);
        seen
    });
    assert!(dir.0.join("ip-data.db").is_file(), "no ip-data.db");
}

/// README.md, "A fleet on Redis", as `examples/floodgate_redis.rs` drives it: two servers
/// on one Redis share one limit (10 per minute: 12 requests spread over both give 10 × 200
/// and 2 × 429) and bans (3 failed logins on one ban on both).
#[test]
fn floodgate_redis_servers_share_limits_and_bans() {
    if !services::available(
        "the floodgate-redis walk (examples/tests/examples_e2e.rs)",
        &["redis-server"],
    ) {
        return;
    }
    let dir = TempDir::new("redis");
    let redis = Process::start("redis-server", "redis-server", &dir.0, &[], |port| {
        let args = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
            .into_iter()
            .chain(["--save", "", "--appendonly", "no"])
            .map(str::to_owned)
            .collect();
        (args, Vec::new())
    });
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let bin = env!("CARGO_BIN_EXE_floodgate-redis");
    let env = [("REDIS_URL", url.as_str())];
    let a = example("floodgate-redis-a", bin, &dir.0, &env);
    let b = example("floodgate-redis-b", bin, &dir.0, &env);

    // for i in $(seq 12); do curl .. localhost:$((8082 + i % 2))/ping; done
    within_window(Duration::from_secs(60), &[10, 2], |n| {
        let client = Ipv4Addr::new(127, 0, 0, 40 + n);
        let seen = codes((0..12).map(|i| {
            let server = if i % 2 == 0 { &a } else { &b };
            get_from(server, client, "/ping", &[])
        }));
        let count = |code| seen.iter().filter(|&&s| s == code).count() as u16;
        assert_eq!(count(200) + count(429), 12, "{seen:?}");
        vec![count(200), count(429)]
    });

    // POST /login with a wrong password, 3 times within 10 s on one server: banned on both.
    within_window(Duration::from_secs(10), &[401, 401, 401, 403, 403], |n| {
        let client = Ipv4Addr::new(127, 0, 0, 50 + n);
        let login =
            |server: &Process| send(server.port, client, "POST", "/login", &[], "wrong").status;
        let mut seen = vec![login(&a), login(&a), login(&a)];
        seen.push(get_from(&b, client, "/ping", &[]).status);
        seen.push(get_from(&a, client, "/ping", &[]).status);
        seen
    });
    // Others are served.
    let other = get_from(&b, Ipv4Addr::new(127, 0, 0, 60), "/ping", &[]);
    assert_eq!((other.status, other.body.as_str()), (200, "pong"));
}

/// Request targeting, as `examples/targeting.rs` drives it (README.md, "Request targeting").
#[test]
fn floodgate_targeting_denies_limits_and_bans_probes() {
    let dir = TempDir::new("targeting");
    let demo = example(
        "floodgate-targeting",
        env!("CARGO_BIN_EXE_floodgate-targeting"),
        &dir.0,
        &[],
    );

    // curl -i -H 'x-my-ip: 198.51.100.66' localhost:8083/               # 403: deny list
    let denied = get_as(&demo, "198.51.100.66", "/");
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(
        get_as(&demo, "198.51.100.5", "/").status,
        200,
        "DE, not listed"
    );

    // curl -i -H 'x-my-ip: 203.0.113.5' -X POST localhost:8083/login    # US: the 4th in a minute is 429
    within_window(Duration::from_secs(60), &[200, 200, 200, 429], |n| {
        let ip = format!("203.0.113.{n}");
        codes((0..4).map(|_| post_as(&demo, &ip, "/login", "")))
    });

    // curl -i -H 'x-my-ip: 192.0.2.5' -X POST localhost:8083/login      # FR: not limited
    let fr = codes((0..6).map(|_| post_as(&demo, "192.0.2.5", "/login", "")));
    assert_eq!(fr, [200; 6]);

    // curl -i -H 'x-my-ip: 192.0.2.77' localhost:8083/.env              # 403, and banned for an hour
    // curl -i -H 'x-my-ip: 192.0.2.77' localhost:8083/                  # 403 while banned
    assert_eq!(get_as(&demo, "192.0.2.77", "/.env").status, 403);
    assert_eq!(get_as(&demo, "192.0.2.77", "/").status, 403);
    assert_eq!(get_as(&demo, "192.0.2.78", "/").status, 200, "a neighbour");
}

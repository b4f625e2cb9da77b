//! The Redis store against a real `redis-server`: one per test binary, shared by the tests
//! that leave it running (each in a database of its own), and one of its own for each test
//! that kills or restarts its server. Every process is stopped when the binary exits.
//!
//! - `conformance`: behavioural scenarios written once, generic over `impl Store`, run on
//!   [`MemoryStore`] and on [`RedisStore`] (with and without the ban cache), plus a seeded
//!   differential run that replays the same random operations on both stores and compares
//!   every answer and every state.
//! - Redis specifics: key layout and expiry, round trips per decision, `NOSCRIPT`, jitter.
//! - Fleet: two actix servers sharing one Redis share limits and bans.
//! - Faults: Redis killed during a load run, fail-over to a backup, fail-open, fail-closed,
//!   recovery; bad URLs and passwords.
//!
//! Time is floodgate's fake clock everywhere; the only real waits are bounded polls for a
//! `redis-server` to come up or for a connection to come back.
//!
//! Without `redis-server` and `redis-cli` on `PATH`, every test that needs them returns early
//! after one notice on stderr (`support/services.rs`); `FLOODGATE_REQUIRE_REDIS=1`, which CI
//! sets, makes that a failure instead.
#![cfg(feature = "redis")]

use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use floodgate::{
    Adaptive, BanReason, BanRule, ClientKey, Decision, FailoverStore, FakeClock, Grace,
    LimitReason, MemoryStore, Plan, Policy, Punishment, RedisStore, ReportOutcome, Rule, ScopeId,
    Store, Timestamp,
};

#[path = "support/services.rs"]
mod services;

// ---------------------------------------------------------------------------------------
// redis-servers of our own.

/// A `redis-server` on a free loopback port, without persistence, in its own temp dir.
/// Either the binary's shared server (one database of it per handle) or a server of its
/// own, killed and cleaned up on drop.
struct RedisServer {
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
    /// The database this handle uses (0 on a server of its own).
    db: u32,
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

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().unwrap().port()
}

fn redis_args(port: u16, dir: &std::path::Path) -> Vec<String> {
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
fn wait_until_up(child: &mut Child, port: u16, dir: &std::path::Path) -> bool {
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

fn cli_on(port: u16, db: u32, args: &[&str]) -> String {
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
fn redis_installed() -> bool {
    services::available(
        "the Redis suite (floodgate/tests/redis_store.rs)",
        &["redis-server", "redis-cli"],
    )
}

impl RedisServer {
    /// A database of its own on the binary's shared server.
    fn shared() -> Option<Self> {
        if !redis_installed() {
            return None;
        }
        let gate = Gate::Shared(GATE.read().unwrap_or_else(|p| p.into_inner()));
        Some(Self::on_shared(gate))
    }

    /// A database on the shared server, while no other test uses it: for tests that read
    /// server-wide statistics (`INFO commandstats`, reset first) or flush its scripts.
    fn shared_exclusive() -> Option<Self> {
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
    fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Option<Self> {
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
    fn run(&mut self) {
        assert!(
            self.try_run(),
            "redis-server did not come back on port {}",
            self.port
        );
    }

    /// Starts the process; false when it exits at once (another process took the port).
    /// Waits until the server on the port is this one (its `dir` is ours).
    fn try_run(&mut self) -> bool {
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

    fn stop(&mut self) {
        assert!(self._gate.is_none(), "the shared server is never stopped");
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/{}", self.port, self.db)
    }

    /// Runs `redis-cli` against this server's database.
    fn cli(&self, args: &[&str]) -> String {
        cli_on(self.port, self.db, args)
    }

    /// Round trips so far: calls of every command (from `INFO commandstats`) but INFO itself
    /// (and the SELECT that `redis-cli -n` sends first), and those that floodgate's script
    /// runs inside Redis (GET, SET, DEL), which commandstats also counts. Server-wide: only
    /// for [`RedisServer::shared_exclusive`].
    fn round_trips(&self) -> u64 {
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

async fn redis_store(server: &RedisServer, cache: Duration) -> RedisStore {
    RedisStore::builder(server.url())
        .prefix("test")
        .ban_cache(cache)
        .timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect("connect to the test redis-server")
}

// ---------------------------------------------------------------------------------------
// Behavioural scenarios, generic over the store. Each mirrors a unit test of the state module.

const T0: u64 = 1_700_000_000_000;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn client(n: u8) -> ClientKey {
    ClientKey::from_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, n)), 64)
}

fn rules(list: &[(u32, u64)]) -> Vec<Rule> {
    list.iter().map(|&(c, s)| Rule::new(c, secs(s))).collect()
}

fn global(list: &[(u32, u64)]) -> Arc<Plan> {
    Arc::new(Plan::new([(ScopeId::GLOBAL, rules(list))], None))
}

fn policy_plan(p: Policy) -> Arc<Plan> {
    Arc::new(Plan::new([], Some((ScopeId::named("policy p"), p))))
}

async fn check(s: &impl Store, c: &ClientKey, plan: &Arc<Plan>, ms: u64) -> Decision {
    s.check(c, plan, at(ms)).await.expect("store answers")
}

fn retry(d: Decision) -> Option<Duration> {
    match d {
        Decision::Limited { retry_after, .. } => Some(retry_after),
        _ => None,
    }
}

/// (status, retry or ban length in ms from T0)
fn code(d: Decision) -> (u16, Option<u64>) {
    match d {
        Decision::Allowed { .. } => (200, None),
        Decision::Limited { retry_after, .. } => (429, Some(retry_after.as_millis() as u64)),
        Decision::Banned { until, .. } => (403, until.map(|t| t.as_millis() - T0)),
    }
}

async fn sliding_log_is_exact_at_the_window_edge(s: impl Store) {
    let (plan, c) = (global(&[(3, 10)]), client(1));
    for ms in [0, 1_000, 2_000] {
        assert!(check(&s, &c, &plan, ms).await.is_allowed());
    }
    assert_eq!(
        retry(check(&s, &c, &plan, 9_999).await),
        Some(Duration::from_millis(1))
    );
    assert!(check(&s, &c, &plan, 10_000).await.is_allowed());
    assert_eq!(
        retry(check(&s, &c, &plan, 10_500).await),
        Some(Duration::from_millis(500))
    );
    assert!(check(&s, &c, &plan, 11_000).await.is_allowed());
}

async fn several_rules_and_scopes_refuse_atomically(s: impl Store) {
    let route = ScopeId::named("rules r");
    let plan = Arc::new(Plan::new(
        [
            (ScopeId::GLOBAL, rules(&[(5, 60)])),
            (route, rules(&[(1, 2)])),
        ],
        None,
    ));
    let (global_only, route_only) = (
        global(&[(5, 60)]),
        Arc::new(Plan::new([(route, rules(&[(1, 2)]))], None)),
    );
    let c = client(2);
    assert!(check(&s, &c, &plan, 0).await.is_allowed());
    for ms in [100, 200, 300, 400] {
        let d = check(&s, &c, &plan, ms).await;
        assert!(
            matches!(
                d,
                Decision::Limited {
                    limit: 1,
                    reason: LimitReason::Rule,
                    ..
                }
            ),
            "{d:?}"
        );
    }
    // The refusals consumed nothing of the global rule: 4 more fit.
    for ms in [500, 600, 700, 800] {
        assert!(check(&s, &c, &global_only, ms).await.is_allowed(), "{ms}");
    }
    let d = check(&s, &c, &plan, 3_000).await;
    assert!(matches!(d, Decision::Limited { limit: 0, .. }), "{d:?}");
    // ... and the route's log was not touched by that refusal either.
    assert!(check(&s, &c, &route_only, 3_001).await.is_allowed());
    // The longest wait among refusing rules, and the most constrained quota.
    let plan = global(&[(1, 1), (2, 60)]);
    let c = client(3);
    assert!(check(&s, &c, &plan, 0).await.is_allowed());
    assert!(check(&s, &c, &plan, 1_000).await.is_allowed());
    let d = check(&s, &c, &plan, 1_100).await;
    assert_eq!(retry(d), Some(Duration::from_millis(58_900)));
    let plan = global(&[(20, 1), (3, 10)]);
    let c = client(4);
    let Decision::Allowed { quota: Some(q) } = check(&s, &c, &plan, 0).await else {
        panic!("allowed")
    };
    assert_eq!((q.limit, q.remaining, q.reset), (1, 2, secs(10)));
    let Decision::Allowed { quota: Some(q) } = check(&s, &c, &plan, 4_000).await else {
        panic!("allowed")
    };
    assert_eq!((q.limit, q.remaining, q.reset), (1, 1, secs(6)));
    // Zero counts refuse, zero windows never do.
    let none = Arc::new(Plan::new(
        [(ScopeId::GLOBAL, vec![Rule::new(0, secs(5))])],
        None,
    ));
    assert_eq!(retry(check(&s, &client(5), &none, 0).await), Some(secs(5)));
    let free = Arc::new(Plan::new(
        [(ScopeId::GLOBAL, vec![Rule::new(1, Duration::ZERO)])],
        None,
    ));
    for ms in 0..5 {
        assert!(check(&s, &client(5), &free, ms).await.is_allowed());
    }
}

async fn reports_ban_from_the_last_offence_and_are_spent(s: impl Store) {
    let rule = BanRule::new(3, secs(10), secs(600));
    let plan = global(&[(100, 1)]);
    let c = client(6);
    assert_eq!(
        s.report(&c, &rule, at(0)).await.unwrap(),
        ReportOutcome::Recorded { offences: 1 }
    );
    assert_eq!(
        s.report(&c, &rule, at(4_000)).await.unwrap(),
        ReportOutcome::Recorded { offences: 2 }
    );
    assert_eq!(
        s.report(&c, &rule, at(9_000)).await.unwrap(),
        ReportOutcome::Banned { until: at(609_000) }
    );
    let d = check(&s, &c, &plan, 608_999).await;
    assert_eq!(
        d,
        Decision::Banned {
            until: Some(at(609_000)),
            reason: BanReason::Reported,
            started: false
        }
    );
    assert!(check(&s, &c, &plan, 609_000).await.is_allowed());
    // Spent: one more offence does not ban again.
    assert_eq!(
        s.report(&c, &rule, at(609_500)).await.unwrap(),
        ReportOutcome::Recorded { offences: 1 }
    );
    assert!(check(&s, &c, &plan, 610_000).await.is_allowed());
    // Offences spread wider than the window never ban: each one 5.001 s after the last, so
    // the window holds it and the one before, never three.
    let c = client(7);
    let mut counts = Vec::new();
    for i in 0..10 {
        match s.report(&c, &rule, at(i * 5_001)).await.unwrap() {
            ReportOutcome::Recorded { offences } => counts.push(offences),
            out => panic!("offence {i}: {out:?}"),
        }
    }
    assert_eq!(counts, [1, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
    assert!(check(&s, &c, &plan, 60_000).await.is_allowed());
}

async fn operator_ban_blacklist_and_unban(s: impl Store) {
    let plan = global(&[(1, 1)]);
    let c = client(8);
    s.ban(&c, None, at(0)).await.unwrap();
    assert!(matches!(
        check(&s, &c, &plan, 10_000_000).await,
        Decision::Banned {
            until: None,
            reason: BanReason::Operator,
            ..
        }
    ));
    assert_eq!(
        s.state(&c, at(10_000_000))
            .await
            .unwrap()
            .unwrap()
            .expires_at(),
        Timestamp::NEVER
    );
    assert!(s.unban(&c, at(10_000_001)).await.unwrap());
    assert!(!s.unban(&c, at(10_000_002)).await.unwrap());
    assert!(check(&s, &c, &plan, 10_000_003).await.is_allowed());
    // A timed ban replaces the blacklist, and ends by itself.
    s.ban(&c, None, at(10_000_004)).await.unwrap();
    s.ban(&c, Some(at(10_005_000)), at(10_000_005))
        .await
        .unwrap();
    assert_eq!(
        code(check(&s, &c, &plan, 10_004_999).await),
        (403, Some(10_005_000))
    );
    assert!(check(&s, &c, &plan, 10_005_000).await.is_allowed());
    // Unban of a client never seen: false, and no state created.
    assert!(!s.unban(&client(9), at(0)).await.unwrap());
    assert!(s.state(&client(9), at(0)).await.unwrap().is_none());
    // A ban-only plan checks the ban and creates nothing.
    let c = client(10);
    assert!(check(&s, &c, &Arc::new(Plan::ban_only()), 0)
        .await
        .is_allowed());
    assert!(s.state(&c, at(0)).await.unwrap().is_none());
}

async fn policy_blocks_and_punishes(s: impl Store) {
    let plan = policy_plan(Policy::new(3, secs(60)).block_duration(secs(30)));
    let c = client(11);
    for ms in [0, 10, 20] {
        assert_eq!(code(check(&s, &c, &plan, ms).await), (200, None));
    }
    assert_eq!(code(check(&s, &c, &plan, 1_000).await), (429, Some(30_000)));
    assert_eq!(
        code(check(&s, &c, &plan, 11_000).await),
        (429, Some(20_000))
    );
    assert_eq!(
        code(check(&s, &c, &plan, 31_000).await),
        (429, Some(30_000))
    );
    assert_eq!(code(check(&s, &c, &plan, 61_000).await), (200, None));

    let plan = policy_plan(Policy::new(1, secs(10)).relative_block(true));
    let c = client(12);
    assert_eq!(code(check(&s, &c, &plan, 0).await), (200, None));
    for ms in [1_000, 8_000, 17_999] {
        assert_eq!(code(check(&s, &c, &plan, ms).await), (429, Some(10_000)));
    }
    assert_eq!(code(check(&s, &c, &plan, 37_999).await), (200, None));

    let ban = policy_plan(
        Policy::new(1, secs(10))
            .block_limit(1)
            .punishment(Punishment::Ban(secs(100))),
    );
    let c = client(13);
    assert_eq!(code(check(&s, &c, &ban, 0).await), (200, None));
    assert_eq!(code(check(&s, &c, &ban, 1).await), (429, Some(10_000)));
    assert_eq!(code(check(&s, &c, &ban, 10_001).await), (200, None));
    assert_eq!(
        check(&s, &c, &ban, 10_002).await,
        Decision::Banned {
            until: Some(at(110_002)),
            reason: BanReason::Punished,
            started: true
        }
    );
    assert_eq!(
        code(check(&s, &c, &ban, 110_001).await),
        (403, Some(110_002))
    );
    assert_eq!(code(check(&s, &c, &ban, 110_002).await), (200, None));

    let black = policy_plan(
        Policy::new(1, secs(10))
            .block_limit(0)
            .punishment(Punishment::Blacklist),
    );
    let c = client(14);
    assert_eq!(code(check(&s, &c, &black, 0).await), (200, None));
    assert_eq!(code(check(&s, &c, &black, 1).await), (403, None));
    assert_eq!(code(check(&s, &c, &black, 999_999_999).await), (403, None));
    assert!(s.unban(&c, at(1_000_000_000)).await.unwrap());
    assert_eq!(
        code(check(&s, &c, &black, 1_000_000_001).await),
        (200, None)
    );

    for (n, reset) in [(15, true), (16, false)] {
        let plan = policy_plan(
            Policy::new(1, secs(10))
                .block_limit(1)
                .punishment(Punishment::Ban(secs(100)))
                .block_exceed_reset(reset),
        );
        let c = client(n);
        check(&s, &c, &plan, 0).await;
        check(&s, &c, &plan, 1).await;
        check(&s, &c, &plan, 10_001).await;
        assert_eq!(code(check(&s, &c, &plan, 10_002).await).0, 403);
        assert_eq!(code(check(&s, &c, &plan, 200_000).await), (200, None));
        let d = code(check(&s, &c, &plan, 200_001).await);
        if reset {
            assert_eq!(d, (429, Some(10_000)));
        } else {
            assert_eq!(d, (403, Some(300_001)));
        }
    }
}

async fn policy_accumulation_cooldown_grace_and_adaptive(s: impl Store) {
    let plan = policy_plan(Policy::new(2, secs(10)).accumulate_requests(true));
    let c = client(20);
    assert_eq!(code(check(&s, &c, &plan, 0).await), (200, None));
    for ms in [20_000, 20_001, 20_002] {
        assert_eq!(code(check(&s, &c, &plan, ms).await), (200, None), "{ms}");
    }
    assert_eq!(code(check(&s, &c, &plan, 20_003).await).0, 429);
    let c = client(21);
    check(&s, &c, &plan, 0).await;
    for w in 1..10u64 {
        check(&s, &c, &plan, w * 100_000).await;
    }
    let mut allowed = 0;
    for ms in 0..10 {
        allowed += usize::from(check(&s, &c, &plan, 2_000_000 + ms).await.is_allowed());
    }
    assert_eq!(allowed, 4, "the carry is capped at amount");

    // A cap above amount: amount 2, cap 5. One request a window leaves one more unused
    // each window, until the carry reaches the cap: then a window allows 2 + 5.
    let plan = policy_plan(Policy::new(2, secs(10)).accumulate_cap(5));
    let c = client(25);
    for w in 0..6u64 {
        assert_eq!(
            code(check(&s, &c, &plan, w * 20_000).await),
            (200, None),
            "{w}"
        );
    }
    for ms in 120_000..120_007 {
        assert_eq!(code(check(&s, &c, &plan, ms).await), (200, None), "{ms}");
    }
    assert_eq!(code(check(&s, &c, &plan, 120_007).await).0, 429);
    // A cap below amount: amount 3, cap 1: two unused, one carried.
    let plan = policy_plan(Policy::new(3, secs(10)).accumulate_cap(1));
    let c = client(26);
    assert_eq!(code(check(&s, &c, &plan, 0).await), (200, None));
    for ms in 20_000..20_004 {
        assert_eq!(code(check(&s, &c, &plan, ms).await), (200, None), "{ms}");
    }
    assert_eq!(code(check(&s, &c, &plan, 20_004).await).0, 429);

    let plan = policy_plan(Policy::new(10, secs(60)).cooldown(secs(2)));
    let c = client(22);
    assert_eq!(code(check(&s, &c, &plan, 0).await), (200, None));
    let d = check(&s, &c, &plan, 500).await;
    assert!(matches!(
        d,
        Decision::Limited {
            reason: LimitReason::Cooldown,
            ..
        }
    ));
    assert_eq!(code(d), (429, Some(1_500)));
    assert_eq!(code(check(&s, &c, &plan, 2_000).await), (200, None));

    let plan = policy_plan(Policy::new(3, secs(10)).grace(Grace {
        extra: 2,
        interval: secs(3_600),
    }));
    let c = client(23);
    for ms in 0..5 {
        assert_eq!(code(check(&s, &c, &plan, ms).await), (200, None), "{ms}");
    }
    assert_eq!(code(check(&s, &c, &plan, 5).await).0, 429);
    for ms in 0..3 {
        assert_eq!(code(check(&s, &c, &plan, 20_000 + ms).await), (200, None));
    }
    assert_eq!(code(check(&s, &c, &plan, 20_003).await).0, 429);
    let later = 20_003 + 3_600_000;
    for ms in 0..5 {
        assert_eq!(
            code(check(&s, &c, &plan, later + ms).await),
            (200, None),
            "{ms}"
        );
    }

    let plan = policy_plan(
        Policy::new(1, secs(1))
            .block_limit(0)
            .block_exceed_reset(true)
            .punishment(Punishment::Ban(secs(10)))
            .adaptive(Adaptive {
                factor: 3.0,
                max: secs(200),
                jitter: Duration::ZERO,
            }),
    );
    let c = client(24);
    let mut t = 0;
    let mut lengths = Vec::new();
    for _ in 0..5 {
        assert!(check(&s, &c, &plan, t).await.is_allowed());
        match check(&s, &c, &plan, t + 1).await {
            Decision::Banned { until: Some(u), .. } => {
                lengths.push((u.as_millis() - T0 - (t + 1)) / 1000);
                t = u.as_millis() - T0 + 5_000;
            }
            d => panic!("{d:?}"),
        }
    }
    assert_eq!(lengths, [10, 30, 90, 200, 200]);
}

async fn state_and_expiry(s: impl Store) {
    let plan = Arc::new(Plan::new(
        [(ScopeId::GLOBAL, rules(&[(5, 1), (50, 60)]))],
        None,
    ));
    let c = client(30);
    check(&s, &c, &plan, 0).await;
    let st = s.state(&c, at(1)).await.unwrap().expect("state");
    assert_eq!(st.expires_at(), at(60_000));
    assert_eq!(st.last_seen(), at(0));
    assert!(st.ban_at(at(1)).is_none());
    assert!(s.state(&c, at(59_999)).await.unwrap().is_some());
    assert!(s.state(&c, at(60_000)).await.unwrap().is_none());
    // Policy records idle longer than max_window_duration are forgotten; "forever" keeps them.
    let plan = policy_plan(Policy::new(1, secs(10)).max_window_duration(Some(secs(100))));
    let c = client(31);
    check(&s, &c, &plan, 0).await;
    check(&s, &c, &plan, 1).await;
    assert_eq!(
        s.state(&c, at(2)).await.unwrap().unwrap().expires_at(),
        at(100_001)
    );
    assert!(s.state(&c, at(100_001)).await.unwrap().is_none());
    let forever = policy_plan(Policy::new(1, secs(10)).max_window_duration(None));
    let c = client(32);
    check(&s, &c, &forever, 0).await;
    assert_eq!(
        s.state(&c, at(0)).await.unwrap().unwrap().expires_at(),
        Timestamp::NEVER
    );
    // A reported ban shows in the state until it ends.
    let c = client(33);
    let rule = BanRule::new(1, secs(10), secs(30));
    s.report(&c, &rule, at(0)).await.unwrap();
    let st = s.state(&c, at(1)).await.unwrap().unwrap();
    assert_eq!(
        st.ban_at(at(1)),
        Some((Some(at(30_000)), BanReason::Reported))
    );
    assert!(s.state(&c, at(30_000)).await.unwrap().is_none());
}

/// Replays one seeded random run of checks, reports, bans and unbans on two stores and
/// compares every answer; with `same_state`, every client's state too. Both stores are
/// swept before each step, as Redis drops expired keys by itself (the contract of
/// `ClientState::expires_at` is that this changes no decision). Returns the kinds of
/// decisions seen.
async fn differential(
    a: impl Store,
    b: impl Store,
    seed: u64,
    same_state: bool,
) -> Vec<&'static str> {
    let route = ScopeId::named("route r");
    let pol = ScopeId::named("policy q");
    let pol2 = ScopeId::named("policy q2");
    let plans = [
        global(&[(3, 10), (5, 60)]),
        Arc::new(Plan::new(
            [
                (ScopeId::GLOBAL, rules(&[(3, 10)])),
                (route, rules(&[(1, 2)])),
            ],
            None,
        )),
        Arc::new(Plan::new(
            [(ScopeId::GLOBAL, rules(&[(4, 10)]))],
            Some((
                pol,
                Policy::new(2, secs(5))
                    .block_limit(1)
                    .punishment(Punishment::Ban(secs(30))),
            )),
        )),
        Arc::new(Plan::new(
            [],
            Some((
                pol2,
                Policy::new(2, secs(5))
                    .block_limit(2)
                    .relative_block(true)
                    .block_exceed_reset(false)
                    .accumulate_requests(true)
                    .cooldown(Duration::from_millis(300))
                    .grace(Grace {
                        extra: 1,
                        interval: secs(20),
                    })
                    .adaptive(Adaptive {
                        factor: 2.0,
                        max: secs(120),
                        jitter: Duration::ZERO,
                    })
                    .punishment(Punishment::Ban(secs(10)))
                    .max_window_duration(Some(secs(40))),
            )),
        )),
        Arc::new(Plan::new(
            [],
            Some((
                route,
                Policy::new(1, secs(3))
                    .block_limit(0)
                    .punishment(Punishment::Blacklist),
            )),
        )),
        Arc::new(Plan::ban_only()),
        // Requests of cost 2: two units of every limit.
        Arc::new(Plan::new([(ScopeId::GLOBAL, rules(&[(3, 10), (5, 60)]))], None).with_units(2)),
        Arc::new(
            Plan::new(
                [(ScopeId::GLOBAL, rules(&[(4, 10)]))],
                Some((
                    pol,
                    Policy::new(2, secs(5))
                        .block_limit(1)
                        .punishment(Punishment::Ban(secs(30))),
                )),
            )
            .with_units(2),
        ),
    ];
    let ban_rule = BanRule::new(3, secs(10), secs(20));
    let clients: Vec<ClientKey> = (100..103).map(client).collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut now = 0u64;
    let mut seen = Vec::new();
    for step in 0..1_500 {
        now += match rng.u8(0..100) {
            0..=69 => rng.u64(0..100),
            70..=96 => rng.u64(100..3_000),
            _ => rng.u64(3_000..60_000),
        };
        let c = &clients[rng.usize(0..clients.len())];
        let t = at(now);
        a.sweep(t).await.unwrap();
        b.sweep(t).await.unwrap();
        let what = rng.u8(0..100);
        let label = format!("seed {seed} step {step} at {now} on {c:?}, op {what}");
        match what {
            0..=79 => {
                // The blacklisting plan is rare, or clients would spend the run blacklisted.
                let mut i = match rng.u8(0..100) {
                    0..=19 => 0,
                    20..=34 => 1,
                    35..=69 => 2,
                    70..=89 => 3,
                    90..=92 => 4,
                    _ => 5,
                };
                // Every fifth step, the first plans at a cost of 2 (drawing nothing more, so
                // the seeds keep the runs they were chosen for).
                if step % 5 == 0 && (i == 0 || i == 2) {
                    i = 6 + i / 2;
                }
                let plan = &plans[i];
                let d = a.check(c, plan, t).await.unwrap();
                assert_eq!(d, b.check(c, plan, t).await.unwrap(), "{label}");
                seen.push(match d {
                    Decision::Allowed { .. } => "allowed",
                    Decision::Limited {
                        reason: LimitReason::Rule,
                        ..
                    } => "rule",
                    Decision::Limited {
                        reason: LimitReason::Blocked,
                        ..
                    } => "blocked",
                    Decision::Limited { .. } => "cooldown",
                    Decision::Banned {
                        reason: BanReason::Punished,
                        until: None,
                        ..
                    } => "blacklisted",
                    Decision::Banned {
                        reason: BanReason::Punished,
                        ..
                    } => "punished",
                    Decision::Banned {
                        reason: BanReason::Reported,
                        ..
                    } => "reported",
                    Decision::Banned { .. } => "operator",
                });
            }
            80..=91 => {
                assert_eq!(
                    a.report(c, &ban_rule, t).await.unwrap(),
                    b.report(c, &ban_rule, t).await.unwrap(),
                    "{label}"
                );
            }
            92..=94 => {
                let until = match rng.u8(0..3) {
                    0 => None,
                    _ => Some(t + Duration::from_millis(rng.u64(0..30_000))),
                };
                a.ban(c, until, t).await.unwrap();
                b.ban(c, until, t).await.unwrap();
            }
            _ => {
                assert_eq!(
                    a.unban(c, t).await.unwrap(),
                    b.unban(c, t).await.unwrap(),
                    "{label}"
                );
            }
        }
        if same_state {
            for c in &clients {
                assert_eq!(
                    a.state(c, t).await.unwrap(),
                    b.state(c, t).await.unwrap(),
                    "{label}: state of {c:?}"
                );
            }
        }
    }
    seen
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[actix_rt::test]
                async fn $scenario() {
                    super::$scenario(floodgate::MemoryStore::new()).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[actix_rt::test]
                async fn $scenario() {
                    let Some(server) = super::RedisServer::shared() else { return; };
                    super::$scenario(super::redis_store(&server, std::time::Duration::from_secs(1)).await).await;
                }
            )*
        }
        mod on_failover_redis_with_a_backup {
            $(
                #[actix_rt::test]
                async fn $scenario() {
                    let Some(server) = super::RedisServer::shared() else { return; };
                    let redis = super::redis_store(&server, std::time::Duration::from_secs(1)).await;
                    let store = floodgate::FailoverStore::new(redis).backup(floodgate::MemoryStore::new());
                    super::$scenario(store.clone()).await;
                    assert!(!store.primary_down(), "every decision was Redis's");
                }
            )*
        }
        mod on_redis_without_ban_cache {
            $(
                #[actix_rt::test]
                async fn $scenario() {
                    let Some(server) = super::RedisServer::shared() else { return; };
                    super::$scenario(super::redis_store(&server, std::time::Duration::ZERO).await).await;
                }
            )*
        }
    };
}

conformance!(
    sliding_log_is_exact_at_the_window_edge,
    several_rules_and_scopes_refuse_atomically,
    reports_ban_from_the_last_offence_and_are_spent,
    operator_ban_blacklist_and_unban,
    policy_blocks_and_punishes,
    policy_accumulation_cooldown_grace_and_adaptive,
    state_and_expiry,
);

/// Every kind of decision came up in the runs, so the comparison covered them all.
fn assert_covered(seen: &[&str]) {
    for kind in [
        "allowed",
        "rule",
        "blocked",
        "cooldown",
        "blacklisted",
        "punished",
        "reported",
        "operator",
    ] {
        assert!(seen.contains(&kind), "no {kind} decision in the runs");
    }
}

/// One seeded differential run (states compared too), in a database of its own; the seeds
/// run as separate tests, in parallel.
async fn redis_decides_and_stores_exactly_what_memory_does(seed: u64) {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let store = redis_store(&server, Duration::ZERO).await;
    let seen = differential(MemoryStore::new(), store, seed, true).await;
    assert_covered(&seen);
}

#[actix_rt::test]
async fn redis_decides_and_stores_exactly_what_memory_does_seed_1() {
    redis_decides_and_stores_exactly_what_memory_does(1).await;
}

#[actix_rt::test]
async fn redis_decides_and_stores_exactly_what_memory_does_seed_6() {
    redis_decides_and_stores_exactly_what_memory_does(6).await;
}

#[actix_rt::test]
async fn redis_decides_and_stores_exactly_what_memory_does_seed_3() {
    redis_decides_and_stores_exactly_what_memory_does(3).await;
}

#[actix_rt::test]
async fn the_ban_cache_changes_no_decision() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let mut seen = Vec::new();
    for seed in [4, 5] {
        server.cli(&["FLUSHDB"]);
        let store = redis_store(&server, secs(1)).await;
        seen.extend(differential(MemoryStore::new(), store, seed, false).await);
    }
    assert_covered(&seen);
}

// ---------------------------------------------------------------------------------------
// Redis specifics: key layout, expiry, round trips, NOSCRIPT.

#[actix_rt::test]
async fn keys_are_prefixed_and_expire_with_the_state() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let s = redis_store(&server, secs(1)).await;
    let c = client(50);
    assert_eq!(s.key_of(&c), "test:ip:203.0.113.50");
    assert_eq!(s.key_of(&ClientKey::custom("alice")), "test:key:alice");
    check(&s, &c, &global(&[(3, 10)]), 0).await;
    let pttl: i64 = server
        .cli(&["PTTL", "test:ip:203.0.113.50"])
        .parse()
        .unwrap();
    assert!(
        (9_000..=10_000).contains(&pttl),
        "the key lives as long as the 10 s window: {pttl}"
    );
    // Permanent bans and "forever" records never expire.
    s.ban(&c, None, at(1)).await.unwrap();
    assert_eq!(server.cli(&["PTTL", "test:ip:203.0.113.50"]), "-1");
    // The unban leaves only the log, whose window decides the key's life again.
    assert!(s.unban(&c, at(2)).await.unwrap());
    let pttl: i64 = server
        .cli(&["PTTL", "test:ip:203.0.113.50"])
        .parse()
        .unwrap();
    assert!((9_000..=9_998).contains(&pttl), "{pttl}");
    // A state that holds nothing more is deleted at once.
    let d = ClientKey::custom("alice");
    s.ban(&d, Some(at(5_000)), at(0)).await.unwrap();
    assert_eq!(server.cli(&["EXISTS", "test:key:alice"]), "1");
    assert!(s.unban(&d, at(1)).await.unwrap());
    assert_eq!(server.cli(&["EXISTS", "test:key:alice"]), "0");
    // Nothing else was written: one key per client, all under the prefix.
    assert_eq!(server.cli(&["KEYS", "*"]), "test:ip:203.0.113.50");
    // Another prefix is another app: it shares nothing.
    let other = RedisStore::builder(server.url())
        .prefix("other")
        .connect()
        .await
        .unwrap();
    assert!(other.state(&c, at(3)).await.unwrap().is_none());
    assert!(s.state(&c, at(3)).await.unwrap().is_some());
}

/// 2^53 ms: the script's "never" (see `RedisStore`'s docs, "Very long durations").
const LUA_NEVER: u64 = 1 << 53;

#[actix_rt::test]
async fn durations_of_duration_max_mean_forever_in_the_script_too() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let redis = redis_store(&server, Duration::ZERO).await;
    let memory = MemoryStore::new();
    let stores = (&redis, &memory);
    async fn both(
        (redis, memory): (&RedisStore, &MemoryStore),
        plan: Arc<Plan>,
        c: ClientKey,
        ms: u64,
    ) -> (Decision, Decision) {
        let r = redis
            .check(&c, &plan, at(ms))
            .await
            .expect("the script answers");
        let m = memory.check(&c, &plan, at(ms)).await.unwrap();
        (r, m)
    }
    let forever = |d: Decision| matches!(d, Decision::Banned { until: None, .. });

    // A rule and a cooldown of Duration::MAX: refused until "never", which the script holds
    // as 2^53 ms (memory: u64::MAX ms). Odd times: a sum past 2^53 would round.
    let rule = Arc::new(Plan::new(
        [(ScopeId::GLOBAL, vec![Rule::new(1, Duration::MAX)])],
        None,
    ));
    let cooldown = policy_plan(Policy::new(u32::MAX, Duration::MAX).cooldown(Duration::MAX));
    for (plan, c) in [(rule, client(60)), (cooldown, client(61))] {
        let (r, m) = both(stores, plan.clone(), c.clone(), 1).await;
        assert!(r.is_allowed() && m.is_allowed(), "{r:?} {m:?}");
        for ms in [1, 3, 1_001] {
            let (r, m) = both(stores, plan.clone(), c.clone(), ms).await;
            let now = T0 + ms;
            assert_eq!(
                retry(r),
                Some(Duration::from_millis(LUA_NEVER - now)),
                "{r:?}"
            );
            assert_eq!(
                retry(m),
                Some(Duration::from_millis(u64::MAX - now)),
                "{m:?}"
            );
        }
    }

    // A block and an adaptive punishment of Duration::MAX (factor f64::MAX, jitter
    // Duration::MAX): blocked to the end, then banned for good, in both stores.
    let punish = policy_plan(
        Policy::new(1, Duration::MAX)
            .block_duration(Duration::MAX)
            .block_limit(1)
            .punishment(Punishment::Ban(Duration::MAX))
            .adaptive(Adaptive {
                factor: f64::MAX,
                max: Duration::MAX,
                jitter: Duration::MAX,
            }),
    );
    let c = client(62);
    let (r, m) = both(stores, punish.clone(), c.clone(), 1).await;
    assert!(r.is_allowed() && m.is_allowed());
    let (r, m) = both(stores, punish.clone(), c.clone(), 3).await;
    assert_eq!(
        retry(r),
        Some(Duration::from_millis(LUA_NEVER - (T0 + 3))),
        "{r:?}"
    );
    assert_eq!(
        retry(m),
        Some(Duration::from_millis(u64::MAX - (T0 + 3))),
        "{m:?}"
    );
    assert!(redis.unban(&c, at(5)).await.unwrap() == memory.unban(&c, at(5)).await.unwrap());

    // Ban rules and operator bans of Duration::MAX: permanent in both.
    let ban_rule = BanRule::new(1, Duration::MAX, Duration::MAX);
    let c = client(63);
    let r = redis.report(&c, &ban_rule, at(7)).await.unwrap();
    let m = memory.report(&c, &ban_rule, at(7)).await.unwrap();
    assert_eq!(
        (r, m),
        (
            ReportOutcome::Banned {
                until: Timestamp::NEVER
            },
            r
        )
    );
    let (r, m) = both(stores, global(&[(1, 1)]), c.clone(), 9).await;
    assert!(forever(r) && forever(m), "{r:?} {m:?}");
    let c = client(64);
    for s in [&redis as &dyn Store, &memory] {
        s.ban(&c, Some(at(11) + Duration::MAX), at(11))
            .await
            .unwrap();
    }
    let (r, m) = both(stores, global(&[(1, 1)]), c.clone(), 13).await;
    assert!(forever(r) && forever(m), "{r:?} {m:?}");
    assert_eq!(server.cli(&["PTTL", "test:ip:203.0.113.64"]), "-1");

    // A zero-length ban under an adaptive factor whose powers overflow to infinity: 0 x inf
    // is NaN in the script's doubles, which it must not answer with. Every third punishment.
    let zero = policy_plan(
        Policy::new(1, Duration::from_millis(1))
            .block_limit(0)
            .punishment(Punishment::Ban(Duration::ZERO))
            .adaptive(Adaptive {
                factor: 1e300,
                max: Duration::from_secs(60),
                jitter: Duration::ZERO,
            }),
    );
    let c = client(65);
    for n in 0..4 {
        let t = 100 + n * 10;
        let (r, m) = both(stores, zero.clone(), c.clone(), t).await;
        assert_eq!(r, m, "request {n}");
        let (r, m) = both(stores, zero.clone(), c.clone(), t).await;
        assert_eq!(r, m, "punishment {n}");
        assert!(
            matches!(r, Decision::Banned { until: Some(u), .. } if u == at(t)),
            "a zero-length ban: {r:?}"
        );
    }
}

/// The script adds the jitter drawn for a punishment (`fastrand`, on the deciding thread:
/// seeded here, so a failure replays) to the adaptive length, never more than the bound.
#[actix_rt::test]
async fn adaptive_jitter_on_redis_stays_within_its_bound_and_varies() {
    const SEED: u64 = 0x5eed_0017;
    fastrand::seed(SEED);
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let s = redis_store(&server, Duration::ZERO).await;
    let plan = policy_plan(
        Policy::new(1, secs(1))
            .block_limit(0)
            .punishment(Punishment::Ban(secs(10)))
            .adaptive(Adaptive {
                factor: 2.0,
                max: secs(1_000),
                jitter: secs(5),
            }),
    );
    let c = client(70);
    let mut t = 0;
    let mut extras = Vec::new();
    for n in 0..12u32 {
        let label = format!("seed {SEED:#x}, punishment {n}");
        assert!(check(&s, &c, &plan, t).await.is_allowed(), "{label}");
        let length = match check(&s, &c, &plan, t + 1).await {
            Decision::Banned { until: Some(u), .. } => u.as_millis() - T0 - (t + 1),
            d => panic!("{label}: {d:?}"),
        };
        let base = (10_000u64 << n).min(1_000_000);
        assert!(
            (base..=base + 5_000).contains(&length),
            "{label}: {length} ms, base {base} ms, jitter at most 5000 ms"
        );
        extras.push(length - base);
        t += 1 + length + 5_000;
    }
    extras.sort_unstable();
    extras.dedup();
    assert!(
        extras.len() > 1,
        "seed {SEED:#x}: the jitter never varied: {extras:?}"
    );
}

#[actix_rt::test]
async fn one_round_trip_per_decision_and_none_for_a_cached_ban() {
    let Some(server) = RedisServer::shared_exclusive() else {
        return;
    };
    let a = redis_store(&server, secs(1)).await;
    let b = redis_store(&server, secs(1)).await;
    let plan = global(&[(1_000, 60)]);
    let c = client(51);
    let before = server.round_trips();
    for ms in 0..100 {
        assert!(check(&a, &c, &plan, ms).await.is_allowed());
    }
    assert_eq!(
        server.round_trips() - before,
        100,
        "one round trip per decision"
    );
    let stats = server.cli(&["INFO", "commandstats"]);
    assert!(
        stats.contains("cmdstat_evalsha:calls=100,"),
        "all of them EVALSHA: {stats}"
    );

    a.ban(&c, Some(at(60_000)), at(100)).await.unwrap();
    let before = server.round_trips();
    for ms in 101..201 {
        assert!(matches!(
            check(&a, &c, &plan, ms).await,
            Decision::Banned { .. }
        ));
    }
    assert_eq!(
        server.round_trips() - before,
        0,
        "the banning instance knows the ban"
    );
    for ms in 101..201 {
        assert!(matches!(
            check(&b, &c, &plan, ms).await,
            Decision::Banned { .. }
        ));
    }
    assert_eq!(
        server.round_trips() - before,
        1,
        "another instance asks once, then caches"
    );
    // After the cache time, one round trip refreshes it.
    assert!(matches!(
        check(&b, &c, &plan, 1_201).await,
        Decision::Banned { .. }
    ));
    assert_eq!(server.round_trips() - before, 2);
}

#[actix_rt::test]
async fn a_redis_that_lost_the_script_gets_it_again() {
    let Some(server) = RedisServer::shared_exclusive() else {
        return;
    };
    let s = redis_store(&server, Duration::ZERO).await;
    let plan = global(&[(2, 60)]);
    let c = client(52);
    assert!(check(&s, &c, &plan, 0).await.is_allowed());
    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
    assert!(check(&s, &c, &plan, 1).await.is_allowed());
    assert!(
        !check(&s, &c, &plan, 2).await.is_allowed(),
        "the state survived the flush"
    );
}

// ---------------------------------------------------------------------------------------
// Fleet: two actix servers, one Redis.

mod fleet {
    use super::*;
    use actix_web::{get, App, HttpRequest};
    use floodgate::{bypass, Floodgate, GateKeeper, StoreFailure};
    use futures_util::future::join_all;

    #[get("/ping")]
    async fn ping() -> &'static str {
        "pong"
    }

    #[bypass]
    #[get("/report")]
    async fn report(req: HttpRequest, gk: GateKeeper) -> &'static str {
        gk.report(&req).await;
        "reported"
    }

    pub(super) fn app(
        store: impl Store,
        clock: &FakeClock,
        failure: StoreFailure,
    ) -> (actix_test::TestServer, Floodgate) {
        let fg = Floodgate::new()
            .store(store)
            .clock(clock.clone())
            .ip_header("x-client")
            .store_failure(failure)
            .ban_rule(BanRule::new(2, secs(60), secs(600)))
            .rate_limit_rules([Rule::new(10, secs(3_600))]);
        let inner = fg.clone();
        let srv = actix_test::start_with(actix_test::config().workers(2), move || {
            App::new().wrap(inner.clone()).service(ping).service(report)
        });
        (srv, fg)
    }

    pub(super) async fn get(srv: &actix_test::TestServer, path: &str, ip: &str) -> u16 {
        let res = srv
            .get(path)
            .insert_header(("x-client", ip))
            .send()
            .await
            .expect("response");
        res.status().as_u16()
    }

    #[actix_rt::test]
    async fn two_servers_share_one_limit_exactly() {
        let Some(redis) = RedisServer::shared() else {
            return;
        };
        let clock = FakeClock::new();
        let (a, _) = app(
            redis_store(&redis, secs(1)).await,
            &clock,
            StoreFailure::Open,
        );
        let (b, _) = app(
            redis_store(&redis, secs(1)).await,
            &clock,
            StoreFailure::Open,
        );
        let ip = "198.51.100.20";
        let statuses = join_all((0..20).map(|i| {
            let srv = if i % 2 == 0 { &a } else { &b };
            get(srv, "/ping", ip)
        }))
        .await;
        let ok = statuses.iter().filter(|&&s| s == 200).count();
        let limited = statuses.iter().filter(|&&s| s == 429).count();
        assert_eq!((ok, limited), (10, 10), "{statuses:?}");
        assert_eq!(get(&a, "/ping", ip).await, 429);
        assert_eq!(get(&b, "/ping", ip).await, 429);
        // Another client has its own quota on both.
        assert_eq!(get(&b, "/ping", "198.51.100.21").await, 200);
    }

    #[actix_rt::test]
    async fn a_ban_reported_on_one_server_holds_on_the_other_at_once() {
        let Some(redis) = RedisServer::shared() else {
            return;
        };
        let clock = FakeClock::new();
        let (a, fg_a) = app(
            redis_store(&redis, secs(1)).await,
            &clock,
            StoreFailure::Open,
        );
        let (b, _) = app(
            redis_store(&redis, secs(1)).await,
            &clock,
            StoreFailure::Open,
        );
        let ip = "198.51.100.30";
        assert_eq!(get(&b, "/ping", ip).await, 200);
        assert_eq!(get(&a, "/report", ip).await, 200);
        assert_eq!(get(&a, "/report", ip).await, 200);
        // The second offence banned the client: both servers refuse it now.
        assert_eq!(get(&b, "/ping", ip).await, 403);
        assert_eq!(get(&a, "/ping", ip).await, 403);
        // An operator unban on A frees the client on A at once ...
        let addr: IpAddr = ip.parse().unwrap();
        assert!(fg_a.gatekeeper().unban(addr).await.unwrap());
        assert_eq!(get(&a, "/ping", ip).await, 200);
        // ... and on B when B's cached ban ends (ban_cache = 1 s), not later.
        assert_eq!(
            get(&b, "/ping", ip).await,
            403,
            "B still holds its cached ban"
        );
        clock.advance(Duration::from_millis(999));
        assert_eq!(get(&b, "/ping", ip).await, 403);
        clock.advance(Duration::from_millis(1));
        assert_eq!(get(&b, "/ping", ip).await, 200);
    }

    #[floodgate::rate_limited(policy = "api")]
    #[get("/a")]
    async fn route_a() -> &'static str {
        "a"
    }

    #[floodgate::rate_limited(policy = "api")]
    #[get("/b")]
    async fn route_b() -> &'static str {
        "b"
    }

    /// A server with two routes sharing the policy "api": 3 a minute, the second block
    /// bans for an hour.
    async fn shared_policy_app(redis: &RedisServer, clock: &FakeClock) -> actix_test::TestServer {
        let fg = Floodgate::new()
            .store(redis_store(redis, secs(1)).await)
            .clock(clock.clone())
            .ip_header("x-client")
            .policy(
                "api",
                Policy::new(3, secs(60))
                    .block_limit(1)
                    .block_exceed_duration(Some(secs(3_600))),
            );
        actix_test::start_with(actix_test::config().workers(2), move || {
            App::new()
                .wrap(fg.clone())
                .service(route_a)
                .service(route_b)
        })
    }

    #[actix_rt::test]
    async fn a_shared_policy_is_one_window_block_count_and_punishment_across_a_fleet() {
        let Some(redis) = RedisServer::shared() else {
            return;
        };
        let clock = FakeClock::new();
        let one = shared_policy_app(&redis, &clock).await;
        let two = shared_policy_app(&redis, &clock).await;
        let ip = "198.51.100.40";
        // One window across routes and servers.
        assert_eq!(get(&one, "/a", ip).await, 200);
        assert_eq!(get(&two, "/b", ip).await, 200);
        assert_eq!(get(&one, "/b", ip).await, 200);
        assert_eq!(get(&two, "/a", ip).await, 429);
        assert_eq!(get(&one, "/a", ip).await, 429);
        // One block count: the second block, on the other server and route, punishes.
        clock.advance(secs(60));
        for (srv, path) in [(&two, "/a"), (&one, "/a"), (&two, "/b")] {
            assert_eq!(get(srv, path, ip).await, 200, "{path}");
        }
        assert_eq!(get(&one, "/b", ip).await, 403);
        // One punishment, everywhere.
        assert_eq!(get(&two, "/a", ip).await, 403);
        clock.advance(secs(3_600));
        assert_eq!(get(&two, "/b", ip).await, 200);
    }
}

// ---------------------------------------------------------------------------------------
// Faults: Redis killed during a load run; bad URLs and passwords.

mod faults {
    use super::fleet::{app, get};
    use super::*;
    use floodgate::StoreFailure;
    use futures_util::future::join_all;

    /// Sends `n` concurrent requests of `ip`; returns the count of each status.
    async fn load(srv: &actix_test::TestServer, ip: &str, n: usize) -> Vec<(u16, usize)> {
        let statuses = join_all((0..n).map(|_| get(srv, "/ping", ip))).await;
        let mut counts: Vec<(u16, usize)> = Vec::new();
        for s in statuses {
            match counts.iter_mut().find(|(k, _)| *k == s) {
                Some((_, n)) => *n += 1,
                None => counts.push((s, 1)),
            }
        }
        counts.sort();
        counts
    }

    /// Moves floodgate's clock past the retry delay and sends requests until `done` holds
    /// (the primary answers again); a bounded poll, since reconnecting takes real time.
    async fn until_recovered(
        srv: &actix_test::TestServer,
        clock: &FakeClock,
        ip: &str,
        done: impl Fn() -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "the primary was never taken back"
            );
            clock.advance(secs(10));
            let status = get(srv, "/ping", ip).await;
            assert_ne!(status, 500);
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn failover(redis: RedisStore) -> FailoverStore<RedisStore> {
        FailoverStore::new(redis).retry(secs(1), secs(8))
    }

    #[actix_rt::test]
    async fn killed_redis_fails_over_to_the_backup_and_is_taken_back() {
        let Some(mut redis) = RedisServer::start() else {
            return;
        };
        let clock = FakeClock::new();
        let store = failover(redis_store(&redis, secs(1)).await).backup(MemoryStore::new());
        let (srv, _) = app(store.clone(), &clock, StoreFailure::Closed);
        let ip = "198.51.100.40";
        assert_eq!(load(&srv, ip, 4).await, [(200, 4)]);
        redis.stop();
        // The backup knows nothing of the 4 requests counted in Redis: it allows 10 more.
        assert_eq!(load(&srv, ip, 20).await, [(200, 10), (429, 10)]);
        assert!(store.primary_down());
        redis.run();
        until_recovered(&srv, &clock, ip, || !store.primary_down()).await;
        // Decisions are back on Redis (which restarted empty, without persistence).
        let _ = get(&srv, "/ping", "198.51.100.41").await;
        assert_eq!(redis.cli(&["EXISTS", "test:ip:198.51.100.41"]), "1");
    }

    #[actix_rt::test]
    async fn killed_redis_fails_open_without_a_backup() {
        let Some(mut redis) = RedisServer::start() else {
            return;
        };
        let clock = FakeClock::new();
        let store = failover(redis_store(&redis, secs(1)).await);
        let (srv, _) = app(store.clone(), &clock, StoreFailure::Open);
        let ip = "198.51.100.42";
        assert_eq!(load(&srv, ip, 12).await, [(200, 10), (429, 2)]);
        redis.stop();
        assert_eq!(load(&srv, ip, 20).await, [(200, 20)], "served unlimited");
        redis.run();
        until_recovered(&srv, &clock, ip, || !store.primary_down()).await;
        let _ = get(&srv, "/ping", "198.51.100.43").await;
        assert_eq!(redis.cli(&["EXISTS", "test:ip:198.51.100.43"]), "1");
    }

    #[actix_rt::test]
    async fn killed_redis_fails_closed_with_503() {
        let Some(mut redis) = RedisServer::start() else {
            return;
        };
        let clock = FakeClock::new();
        // A bare RedisStore: every request tries Redis, and each failure is a 503.
        let (srv, _) = app(
            redis_store(&redis, secs(1)).await,
            &clock,
            StoreFailure::Closed,
        );
        let ip = "198.51.100.44";
        assert_eq!(load(&srv, ip, 3).await, [(200, 3)]);
        redis.stop();
        assert_eq!(load(&srv, ip, 20).await, [(503, 20)]);
        redis.run();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match get(&srv, "/ping", ip).await {
                503 => assert!(Instant::now() < deadline, "Redis never came back"),
                status => {
                    assert_eq!(status, 200, "a fresh Redis counts from zero");
                    break;
                }
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// 300 requests of 30 clients, 10 each, one client after the other, 16 in flight;
    /// redis-server is killed once 100 are answered, so that most clients send all their
    /// requests either to Redis or after the kill. Returns the statuses answered before and
    /// after the kill.
    async fn load_with_a_kill(
        srv: &actix_test::TestServer,
        redis: &mut RedisServer,
    ) -> (Vec<u16>, Vec<u16>) {
        use futures_util::stream::{self, StreamExt};
        use std::cell::RefCell;
        let answered = RefCell::new((Vec::new(), Vec::new(), false));
        let requests = stream::iter(0..300)
            .map(
                |i| async move { get(srv, "/ping", &format!("198.51.100.{}", 100 + i / 10)).await },
            )
            .buffer_unordered(16)
            .for_each(|status| {
                let mut a = answered.borrow_mut();
                if a.2 {
                    a.1.push(status);
                } else {
                    a.0.push(status);
                }
                async {}
            });
        let killer = async {
            while answered.borrow().0.len() < 100 {
                actix_rt::time::sleep(Duration::from_millis(1)).await;
            }
            redis.stop();
            answered.borrow_mut().2 = true;
        };
        futures_util::future::join(requests, killer).await;
        let (before, after, _) = answered.into_inner();
        (before, after)
    }

    #[actix_rt::test]
    async fn redis_killed_mid_load_never_yields_a_500() {
        for mode in ["backup", "open", "closed"] {
            let Some(mut redis) = RedisServer::start() else {
                return;
            };
            let clock = FakeClock::new();
            let primary = redis_store(&redis, secs(1)).await;
            let (srv, _) = match mode {
                "backup" => app(
                    failover(primary).backup(MemoryStore::new()),
                    &clock,
                    StoreFailure::Closed,
                ),
                "open" => app(failover(primary), &clock, StoreFailure::Open),
                _ => app(failover(primary), &clock, StoreFailure::Closed),
            };
            let (before, after) = load_with_a_kill(&srv, &mut redis).await;
            assert_eq!(before.len() + after.len(), 300);
            assert!(
                !after.is_empty(),
                "{mode}: the kill came before the end of the run"
            );
            // Each of the 30 clients sends exactly 10 requests, against a 10/h rule: a 429
            // is never right (one would mean a request counted twice). Before the kill,
            // Redis decides: every request is served.
            let label = format!("{mode}: before {before:?}, after {after:?}");
            assert!(before.iter().all(|&s| s == 200), "{label}");
            if mode == "closed" {
                // Only the requests in flight at the kill (16 at most) may have been decided
                // before it; every later one is refused with 503.
                assert!(after.iter().all(|&s| s == 200 || s == 503), "{label}");
                let served = after.iter().filter(|&&s| s == 200).count();
                assert!(served <= 16, "{label}");
                assert!(after.contains(&503), "{label}");
            } else {
                // The backup starts from zero, and fail-open serves unlimited: all 200.
                assert!(after.iter().all(|&s| s == 200), "{label}");
            }
        }
    }

    #[actix_rt::test]
    async fn unreachable_redis_is_a_clear_error_at_start() {
        let port = free_port();
        let err = RedisStore::builder(format!("redis://127.0.0.1:{port}/"))
            .connect()
            .await
            .expect_err("nothing listens there");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("cannot connect to Redis at 127.0.0.1:{port}")),
            "{msg}"
        );

        let err = RedisStore::builder("http://127.0.0.1/")
            .connect()
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("invalid Redis URL"), "{err}");
        let err = RedisStore::builder("redis://127.0.0.1/")
            .prefix("a b")
            .connect()
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("invalid Redis key prefix"),
            "{err}"
        );
    }

    #[actix_rt::test]
    async fn a_wrong_password_is_a_clear_error_that_hides_the_password() {
        // A user with a password on the shared server (the default user needs none there).
        let Some(redis) = RedisServer::shared() else {
            return;
        };
        let user = format!("floodgate-test-{}", redis.db);
        let acl = [
            "ACL",
            "SETUSER",
            &user,
            "on",
            ">right-secret",
            "~*",
            "&*",
            "+@all",
        ];
        assert_eq!(redis.cli(&acl), "OK");
        let err = RedisStore::builder(format!(
            "redis://{user}:wrong-secret@127.0.0.1:{}/",
            redis.port
        ))
        .connect()
        .await
        .expect_err("refused credentials");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "cannot connect to Redis at 127.0.0.1:{}",
                redis.port
            )),
            "{msg}"
        );
        assert!(
            msg.to_lowercase().contains("authentication failed"),
            "{msg}"
        );
        assert!(
            !msg.contains("wrong-secret") && !msg.contains("right-secret"),
            "{msg}"
        );
        let ok = RedisStore::builder(format!(
            "redis://{user}:right-secret@127.0.0.1:{}/",
            redis.port
        ))
        .connect()
        .await;
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[actix_rt::test]
    async fn a_lazy_store_starts_on_the_backup_while_redis_is_down() {
        let Some(mut redis) = RedisServer::start() else {
            return;
        };
        redis.stop();
        let lazy = RedisStore::builder(redis.url())
            .prefix("test")
            .timeout(Duration::from_millis(300))
            .connect_lazy()
            .expect("a well-formed URL");
        let store = failover(lazy).backup(MemoryStore::new());
        let plan = global(&[(1, 60)]);
        let c = client(60);
        assert!(check(&store, &c, &plan, 0).await.is_allowed());
        assert!(store.primary_down(), "decided on the backup");
        assert!(
            !check(&store, &c, &plan, 1).await.is_allowed(),
            "the backup counts"
        );
        redis.run();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ms = 1_000;
        while store.primary_down() {
            assert!(Instant::now() < deadline, "Redis never taken back");
            ms += 10_000;
            let _ = check(&store, &client(61), &plan, ms).await;
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(redis.cli(&["EXISTS", "test:ip:203.0.113.61"]), "1");
    }
}

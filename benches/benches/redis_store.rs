//! Decision throughput of the Redis store against the memory store, and Redis round trips
//! per decision (from `INFO commandstats`).
//!
//! `cargo bench -p floodgate-bench --bench redis_store` starts its own
//! `redis-server` on a free loopback port (or uses `REDIS_URL` when set) and prints a table.
//! `N` sets the number of decisions per measurement (default 20 000), `RULES` the rules
//! (default `20/1s,100/10s`).

use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floodgate::{ClientKey, MemoryStore, Plan, RedisStore, Rule, ScopeId, Store, Timestamp};
use futures_util::stream::{self, StreamExt};

struct Server(Option<Child>, u16, std::path::PathBuf);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.2);
    }
}

fn start_redis() -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("floodgate-bench-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    Server(Some(child), port, dir)
}

fn evalsha_calls(port: u16) -> u64 {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "commandstats"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
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

fn script_usec(port: u16) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "commandstats"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| {
            l.split("usec_per_call=")
                .nth(1)?
                .split(',')
                .next()
                .map(|v| format!("{v} us"))
        })
        .unwrap_or_default()
}

fn key(i: u32) -> ClientKey {
    ClientKey::from_ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i % 10_000))), 64)
}

/// `n` decisions over 10 000 clients, `parallel` in flight at once; decisions per second.
async fn run(store: &impl Store, plan: &Arc<Plan>, n: u32, parallel: usize, t0: u64) -> f64 {
    let start = Instant::now();
    stream::iter(0..n)
        .map(|i| store.check(&key(i), plan, Timestamp::from_millis(t0 + u64::from(i))))
        .buffer_unordered(parallel)
        .for_each(|d| async move {
            d.expect("decision");
        })
        .await;
    f64::from(n) / start.elapsed().as_secs_f64()
}

fn main() {
    let n: u32 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let server = start_redis();
    let port = server.1;
    let url = std::env::var("REDIS_URL").unwrap_or(format!("redis://127.0.0.1:{port}/"));
    let rules_text = std::env::var("RULES").unwrap_or_else(|_| "20/1s,100/10s".into());
    let rules: Vec<Rule> = rules_text
        .split(',')
        .map(|r| {
            r.trim()
                .parse()
                .expect("RULES: rules such as 20/1s,100/10s")
        })
        .collect();
    let plan = Arc::new(Plan::new([(ScopeId::GLOBAL, rules)], None));
    actix_rt::System::new().block_on(async move {
        let memory = MemoryStore::new();
        let redis = RedisStore::builder(&url)
            .prefix("bench")
            .connect()
            .await
            .expect("connect");
        let t0 = 1_700_000_000_000;
        println!("{n} decisions, rules {rules_text}, 10 000 clients, one process");
        println!("{:<34} {:>14}", "store", "decisions/s");
        let m = run(&memory, &plan, n, 1, t0).await;
        println!("{:<34} {:>14.0}", "memory", m);
        for parallel in [1, 16, 128] {
            let before = evalsha_calls(port);
            let r = run(
                &redis,
                &plan,
                n,
                parallel,
                t0 + 10_000_000 * parallel as u64,
            )
            .await;
            let trips = (evalsha_calls(port) - before) as f64 / f64::from(n);
            println!(
                "{:<34} {:>14.0}   {:.3} round trips/decision, {:.1} us/decision",
                format!("redis, {parallel} in flight"),
                r,
                trips,
                1e6 / r
            );
        }
        // A banned client flooding: answered from the ban cache.
        let banned = key(1);
        let now = Timestamp::from_millis(t0 + 100_000_000);
        redis.ban(&banned, None, now).await.unwrap();
        let before = evalsha_calls(port);
        let start = Instant::now();
        for i in 0..n {
            let d = redis
                .check(
                    &banned,
                    &plan,
                    Timestamp::from_millis(now.as_millis() + u64::from(i) % 900),
                )
                .await
                .unwrap();
            assert!(!d.is_allowed());
        }
        let r = f64::from(n) / start.elapsed().as_secs_f64();
        let trips = (evalsha_calls(port) - before) as f64 / f64::from(n);
        println!(
            "{:<34} {:>14.0}   {:.3} round trips/decision",
            "redis, banned client (cached)", r, trips
        );
        println!(
            "Redis server time per decision (INFO commandstats): {}",
            script_usec(port)
        );
    });
}

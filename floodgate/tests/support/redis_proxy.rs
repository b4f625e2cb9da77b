//! A TCP proxy in front of a `redis-server`, on a loopback port, that can hold Redis's answers
//! (released by the test) or deliver each one a fixed time after Redis sent it: a network
//! round trip the tests see and count. Runs on the test's Tokio runtime; its tasks end with
//! the runtime. Included by `#[path]`.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

struct State {
    /// True while answers are held.
    hold: watch::Sender<bool>,
    /// The delay of each answer.
    delay: Mutex<Duration>,
    /// `EVALSHA` commands sent to Redis so far.
    scripts: watch::Sender<usize>,
    /// Chunks of answers delivered to the client so far.
    delivered: AtomicUsize,
}

/// The proxy: `url()` is Redis's URL through it.
pub(crate) struct RedisProxy {
    port: u16,
    db: u32,
    state: Arc<State>,
}

impl RedisProxy {
    /// A proxy to the Redis on `upstream` (`db`: the database in `url()`).
    pub(crate) async fn start(upstream: u16, db: u32) -> RedisProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            hold: watch::channel(false).0,
            delay: Mutex::new(Duration::ZERO),
            scripts: watch::channel(0).0,
            delivered: AtomicUsize::new(0),
        });
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                pipe(client, server, shared.clone());
            }
        });
        RedisProxy { port, db, state }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/{}", self.port, self.db)
    }

    /// Holds every answer from now on until [`release`](Self::release).
    pub(crate) fn hold(&self) {
        self.state.hold.send_replace(true);
    }

    pub(crate) fn release(&self) {
        self.state.hold.send_replace(false);
    }

    /// Each answer reaches the client `delay` after Redis sent it.
    pub(crate) fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// `EVALSHA` commands that reached Redis so far.
    pub(crate) fn scripts(&self) -> usize {
        *self.state.scripts.borrow()
    }

    /// Waits until `n` `EVALSHA` commands in all reached Redis; false if that takes longer
    /// than `limit` (a bound for a failing test, never waited out by a passing one).
    pub(crate) async fn scripts_reach(&self, n: usize, limit: Duration) -> bool {
        let mut seen = self.state.scripts.subscribe();
        tokio::time::timeout(limit, seen.wait_for(|&s| s >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Chunks of answers that reached the client so far.
    pub(crate) fn delivered(&self) -> usize {
        self.state.delivered.load(Ordering::SeqCst)
    }
}

fn pipe(client: TcpStream, server: TcpStream, state: Arc<State>) {
    // As Redis does: no Nagle delay on small answers written one after the other.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = state.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = client_rx.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            let scripts = chunk.windows(7).filter(|w| w == b"EVALSHA").count();
            if server_tx.write_all(chunk).await.is_err() {
                break;
            }
            up.scripts.send_modify(|s| *s += scripts);
        }
    });
    // Answers: stamped when Redis sent them, delivered at stamp + delay once not held.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = server_rx.read(&mut buf).await {
            if n == 0 || tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut held = state.hold.subscribe();
        while let Some((at, chunk)) = rx.recv().await {
            let delay = *state.delay.lock().unwrap();
            tokio::time::sleep_until(at + delay).await;
            if held.wait_for(|h| !h).await.is_err() {
                break;
            }
            if client_tx.write_all(&chunk).await.is_err() {
                break;
            }
            state.delivered.fetch_add(1, Ordering::SeqCst);
        }
    });
}

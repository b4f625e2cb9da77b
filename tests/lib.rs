//! Shared helpers of floodgate's integration tests over real HTTP.
//!
//! Every test starts a real actix-web server on a loopback port with [`WORKERS`] workers
//! ([`server_config`]), drives time with a [`floodgate::FakeClock`], and talks HTTP to it with
//! an awc client. Distinct clients are simulated with the [`IP_HEADER`] header.

use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;

/// The header the tests configure with `Floodgate::ip_header`.
pub const IP_HEADER: &str = "x-client-ip";

/// Workers of every test server: at least two, so that state sharing across workers is
/// always exercised.
pub const WORKERS: usize = 2;

/// The configuration of every test server: HTTP/1 on a loopback port, [`WORKERS`] workers.
pub fn server_config() -> actix_test::TestServerConfig {
    actix_test::config().workers(WORKERS)
}

/// `n` whole seconds.
pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `n` milliseconds.
pub const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A response, read in full.
#[derive(Debug, Clone)]
pub struct Resp {
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Resp {
    /// The status code as a number.
    pub fn code(&self) -> u16 {
        self.status.as_u16()
    }

    /// A header's value as text, `None` when absent (panics when it is not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header value is not visible ASCII"))
    }

    /// How many values the response holds for this header.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers.get_all(name).count()
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("body is not UTF-8")
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// Sends `req` and reads the whole response.
pub async fn send(req: awc::ClientRequest) -> Resp {
    send_body(req, Bytes::new()).await
}

/// Sends `req` with `body` and reads the whole response.
pub async fn send_body(req: awc::ClientRequest, body: impl Into<Bytes>) -> Resp {
    let body: Bytes = body.into();
    let sent = if body.is_empty() {
        req.send()
    } else {
        req.send_body(body)
    };
    let mut res = sent.await.expect("request failed");
    let body = res.body().limit(1 << 20).await.expect("body failed");
    Resp {
        status: res.status(),
        headers: res.headers().clone(),
        body,
    }
}

/// Adds the client-IP header to a request.
pub fn from_ip(req: awc::ClientRequest, ip: &str) -> awc::ClientRequest {
    req.insert_header((IP_HEADER, ip))
}

/// Adds the client-IP header with raw bytes (which need not be UTF-8).
pub fn from_ip_bytes(req: awc::ClientRequest, value: &[u8]) -> awc::ClientRequest {
    let value = HeaderValue::from_bytes(value).expect("not a legal header value");
    req.insert_header((HeaderName::from_static(IP_HEADER), value))
}

/// GET `path` as client `ip` (through [`IP_HEADER`]).
pub async fn get_as(srv: &actix_test::TestServer, path: &str, ip: &str) -> Resp {
    send(from_ip(srv.get(path), ip)).await
}

/// POST `path` as client `ip` (through [`IP_HEADER`]).
pub async fn post_as(srv: &actix_test::TestServer, path: &str, ip: &str) -> Resp {
    send(from_ip(srv.post(path), ip)).await
}

/// The status codes of `n` sequential GETs of `path` as client `ip`.
pub async fn codes_as(srv: &actix_test::TestServer, path: &str, ip: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get_as(srv, path, ip).await.code());
    }
    out
}

/// `ok` times 200 followed by `refused` times `code`.
pub fn expect_codes(ok: usize, refused: usize, code: u16) -> Vec<u16> {
    let mut v = vec![200; ok];
    v.extend(std::iter::repeat_n(code, refused));
    v
}

/// A client with its own connection pool, so that its requests open new connections (which
/// the server spreads over its workers).
pub fn fresh_client() -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().conn_lifetime(Duration::ZERO))
        .timeout(secs(20))
        .finish()
}

/// Sends `requests` (raw HTTP/1.1 request heads, each ending in an empty line) pipelined on
/// one connection to `addr`, and returns the status code of each response, in order.
///
/// A plain socket and a minimal response reader: much cheaper than a full client, for floods.
/// Responses must carry a `content-length` (actix-web's do for fixed bodies).
pub fn pipelined(addr: std::net::SocketAddr, requests: &[String]) -> Vec<u16> {
    use std::io::{Read, Write};

    let stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(secs(30))).expect("timeout");
    let mut writer = stream.try_clone().expect("clone socket");
    let payload: Vec<u8> = requests.iter().flat_map(|r| r.bytes()).collect();
    // Write on another thread: the server answers while it reads, and would stall on a full
    // socket if nobody read its answers.
    let write = std::thread::spawn(move || writer.write_all(&payload));

    let mut reader = stream;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut codes = Vec::with_capacity(requests.len());
    let mut pos = 0;
    let mut chunk = [0u8; 64 * 1024];
    while codes.len() < requests.len() {
        // Parse every complete response in the buffer.
        while let Some(end) = find(&buf[pos..], b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[pos..pos + end]).expect("response head");
            let code: u16 = head
                .get(9..12)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("bad status line: {head:?}"));
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())
                        .flatten()
                })
                .unwrap_or_else(|| panic!("no content-length: {head:?}"));
            let total = end + 4 + len;
            if buf.len() - pos < total {
                break;
            }
            codes.push(code);
            pos += total;
        }
        if codes.len() == requests.len() {
            break;
        }
        let n = reader.read(&mut chunk).expect("read");
        assert!(n > 0, "connection closed after {} responses", codes.len());
        buf.drain(..pos);
        pos = 0;
        buf.extend_from_slice(&chunk[..n]);
    }
    write.join().expect("writer").expect("write");
    codes
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether `app` starts: its service factory (every middleware's `new_transform` included)
/// builds, as a server's worker builds it at start-up.
pub async fn app_starts<T, B>(app: actix_web::App<T>) -> bool
where
    T: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: actix_web::body::MessageBody + 'static,
{
    use actix_service::{IntoServiceFactory, ServiceFactory};
    let factory = app.into_factory();
    factory
        .new_service(actix_web::dev::AppConfig::default())
        .await
        .is_ok()
}

/// A store whose every call fails with "the test store is down", as a database that is down.
#[derive(Debug, Clone, Copy, Default)]
pub struct DownStore;

fn down<T>() -> floodgate::StoreFuture<T> {
    floodgate::StoreFuture::ready(Err(floodgate::StoreError::new("the test store is down")))
}

impl floodgate::Store for DownStore {
    fn check(
        &self,
        _: &floodgate::ClientKey,
        _: &std::sync::Arc<floodgate::Plan>,
        _: floodgate::Timestamp,
    ) -> floodgate::StoreFuture<floodgate::Decision> {
        down()
    }
    fn report(
        &self,
        _: &floodgate::ClientKey,
        _: &floodgate::BanRule,
        _: floodgate::Timestamp,
    ) -> floodgate::StoreFuture<floodgate::ReportOutcome> {
        down()
    }
    fn ban(
        &self,
        _: &floodgate::ClientKey,
        _: Option<floodgate::Timestamp>,
        _: floodgate::Timestamp,
    ) -> floodgate::StoreFuture<()> {
        down()
    }
    fn extend_ban(
        &self,
        _: &floodgate::ClientKey,
        _: Option<floodgate::Timestamp>,
        _: floodgate::BanReason,
        _: floodgate::Timestamp,
    ) -> floodgate::StoreFuture<()> {
        down()
    }
    fn release(
        &self,
        _: &floodgate::ClientKey,
        _: &std::sync::Arc<floodgate::Plan>,
        _: floodgate::Timestamp,
        _: floodgate::Timestamp,
    ) -> floodgate::StoreFuture<()> {
        down()
    }
    fn unban(
        &self,
        _: &floodgate::ClientKey,
        _: floodgate::Timestamp,
    ) -> floodgate::StoreFuture<bool> {
        down()
    }
    fn state(
        &self,
        _: &floodgate::ClientKey,
        _: floodgate::Timestamp,
    ) -> floodgate::StoreFuture<Option<floodgate::ClientState>> {
        down()
    }
    fn sweep(&self, _: floodgate::Timestamp) -> floodgate::StoreFuture<usize> {
        down()
    }
}

#[path = "../floodgate/tests/support/redis_server.rs"]
mod redis_server;
#[path = "../floodgate/tests/support/services.rs"]
mod services;

/// A `Floodgate` on each store, for the suites that run on every store: memory, SQLite (a
/// fresh file for `test`), and Redis (prefix `test`, on a `redis-server` this binary starts)
/// when `redis-server` is installed; without it the Redis run is skipped with a notice,
/// unless `FLOODGATE_REQUIRE_REDIS=1` makes that a failure.
pub async fn on_every_store(test: &str) -> Vec<(&'static str, floodgate::Floodgate)> {
    use floodgate::{Floodgate, SqliteStore};
    let dir = std::env::temp_dir().join(format!("floodgate-stores-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sqlite = SqliteStore::open(dir.join("ip-data.db")).expect("open the SQLite store");
    let mut out = vec![
        ("memory", Floodgate::new()),
        ("sqlite", Floodgate::new().store(sqlite)),
    ];
    // A database of its own on this binary's redis-server.
    if let Some(redis) = redis_server::RedisServer::shared() {
        let store = floodgate::RedisStore::builder(redis.url())
            .prefix(test)
            .connect()
            .await
            .expect("connect to the test's redis-server");
        out.push(("redis", Floodgate::new().store(store)));
    }
    out
}

pub mod logs {
    use std::sync::Mutex;

    static RECORDS: Mutex<Vec<(log::Level, String, String)>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, r: &log::Record<'_>) {
            let record = (r.level(), r.target().to_owned(), r.args().to_string());
            RECORDS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(record);
        }
        fn flush(&self) {}
    }

    /// Installs the logger (once per test binary), at every level.
    pub fn capture() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            static CAPTURE: Capture = Capture;
            log::set_logger(&CAPTURE).expect("no other logger in this test binary");
            log::set_max_level(log::LevelFilter::Trace);
        });
    }

    /// Every record so far.
    pub fn records() -> Vec<(log::Level, String, String)> {
        RECORDS.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

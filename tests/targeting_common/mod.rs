//! Helpers shared by the targeting tests.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Writes `contents` to a fresh file in this process's temporary folder.
pub fn temp_file(name: &str, contents: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "floodgate-targeting-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("temp file");
    path
}

/// Sends `method path` as client `ip` (through `x-client`) with `headers`; the status.
pub async fn send(
    srv: &actix_test::TestServer,
    method: &str,
    path: &str,
    ip: &str,
    headers: &[(&str, &str)],
) -> u16 {
    let method = actix_web::http::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = srv
        .request(method, srv.url(path))
        .insert_header(("x-client", ip));
    for &(k, v) in headers {
        req = req.insert_header((k, v));
    }
    req.send().await.expect("request").status().as_u16()
}

/// `GET path` as client `ip`.
pub async fn get(srv: &actix_test::TestServer, path: &str, ip: &str) -> u16 {
    send(srv, "GET", path, ip, &[]).await
}

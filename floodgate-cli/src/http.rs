//! The admin API of a running app, over HTTP.

use std::time::Duration;

use serde_json::{json, Value};

use crate::Failure;

pub(crate) struct Api {
    base: String,
    token: String,
    client: awc::Client,
}

/// Percent-encodes everything but unreserved characters (and `:`, for IPv6 addresses).
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Api {
    pub(crate) fn new(base: &str, token: String) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            token,
            client: awc::Client::builder()
                .timeout(Duration::from_secs(15))
                .finish(),
        }
    }

    /// Sends one request; the JSON answer, or a failure naming the API's problem detail.
    async fn call(
        &self,
        method: awc::http::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.base);
        let req = self
            .client
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        let sent = match body {
            Some(body) => req
                .insert_header(("content-type", "application/json"))
                .send_body(body.to_string()),
            None => req.send(),
        };
        let mut res = sent
            .await
            .map_err(|e| Failure::new(format!("{method} {url}: {e}")))?;
        let bytes = res
            .body()
            .limit(64 << 20)
            .await
            .map_err(|e| Failure::new(format!("{method} {url}: {e}")))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !res.status().is_success() {
            let detail = value["detail"].as_str().unwrap_or("no detail");
            return Err(Failure::new(format!(
                "{method} {url}: {}: {detail}",
                res.status()
            )));
        }
        if value.is_null() {
            return Err(Failure::new(format!(
                "{method} {url}: the answer is not JSON"
            )));
        }
        Ok(value)
    }

    /// Every page of the listing.
    pub(crate) async fn bans(&self) -> Result<Value, Failure> {
        let mut all = Vec::new();
        let mut path = "/api/bans?limit=1000".to_owned();
        loop {
            let page = self.call(awc::http::Method::GET, &path, None).await?;
            if let Some(bans) = page["bans"].as_array() {
                all.extend(bans.iter().cloned());
            }
            match page["next"].as_str() {
                Some(next) => path = format!("/api/bans?limit=1000&cursor={}", encode(next)),
                None => break,
            }
        }
        Ok(json!({ "bans": all, "next": null }))
    }

    pub(crate) async fn status(&self, client: &str) -> Result<Value, Failure> {
        let path = format!("/api/clients/{}", encode(client));
        self.call(awc::http::Method::GET, &path, None).await
    }

    pub(crate) async fn ban(
        &self,
        client: &str,
        length: Option<Duration>,
    ) -> Result<Value, Failure> {
        let path = format!("/api/clients/{}/ban", encode(client));
        let body = match length {
            Some(d) => json!({ "for": format!("{}ms", d.as_millis()) }),
            None => json!({ "forever": true }),
        };
        self.call(awc::http::Method::PUT, &path, Some(body)).await
    }

    pub(crate) async fn unban(&self, client: &str) -> Result<bool, Failure> {
        let path = format!("/api/clients/{}/ban", encode(client));
        let v = self.call(awc::http::Method::DELETE, &path, None).await?;
        Ok(v["was_banned"].as_bool().unwrap_or(false))
    }

    pub(crate) async fn top(&self, limit: usize) -> Result<Value, Failure> {
        let path = format!("/api/top?limit={limit}");
        self.call(awc::http::Method::GET, &path, None).await
    }
}

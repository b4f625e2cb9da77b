//! The admin API's JSON endpoints (see the module docs of `admin`).

use std::net::IpAddr;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::auth::operator_ip;
use super::problem::problem;
use super::Settings;
use crate::client::{Client, ClientKey};
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::rules::parse_duration;
use crate::status::ClientStatus;
use crate::store::bans::{BanCursor, BanEntry, MAX_BAN_PAGE};

/// The longest `{client}` accepted, decoded (the middleware's bound on custom keys).
const MAX_CLIENT_LEN: usize = 1024;

/// The page size of a listing without `limit`.
const DEFAULT_PAGE: usize = 100;

/// Adds the JSON endpoints to the admin scope.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/bans", web::get().to(bans))
        .route("/api/clients/{client}", web::get().to(status))
        .route("/api/clients/{client}/ban", web::put().to(ban))
        .route("/api/clients/{client}/ban", web::delete().to(unban))
        .route("/api/top", web::get().to(top))
        .route("/api/lists/reload", web::post().to(reload))
        .route("/api/health", web::get().to(health));
}

fn ok(body: Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("cache-control", "no-store"))
        .body(body.to_string())
}

fn time(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}

fn store_failed(err: &StoreError) -> HttpResponse {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("the store failed: {err}"),
    )
}

/// Logs an operator's action at info, with the operator's address.
pub(super) fn log_action(s: &Settings, req: &HttpRequest, what: &str, client: &ClientKey) {
    let who =
        operator_ip(s, req).map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string());
    log::info!(target: s.gatekeeper.shared.log_target(),
        "floodgate admin: {what} {} by {who}", client.logged());
}

/// Decodes a raw path segment's percent-escapes; `None` for a malformed escape or bytes
/// that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `{client}` of the path: an address, a network as listings show it, or a custom key.
fn client_of(req: &HttpRequest) -> Result<Client, &'static str> {
    // From the raw path: routing decodes invalid UTF-8 lossily, which would act on another
    // client than the one named.
    let raw = req.uri().path();
    let segment = raw
        .rfind("/api/clients/")
        .map(|at| &raw[at + "/api/clients/".len()..])
        .map(|rest| rest.split('/').next().unwrap_or_default());
    let Some(text) = segment.and_then(percent_decode) else {
        return Err("the client is not valid percent-encoded UTF-8");
    };
    client_from_text(&text)
}

/// A client as listings show it: an address, a network (`2001:db8::/64`) or a custom key.
pub(super) fn client_from_text(text: &str) -> Result<Client, &'static str> {
    if text.is_empty() || text.len() > MAX_CLIENT_LEN || text.chars().any(char::is_control) {
        return Err("a client is 1 to 1024 bytes without control characters");
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Client::Ip(ip));
    }
    if let Some((ip, prefix)) = text.split_once('/') {
        if let (Ok(ip), Ok(prefix)) = (ip.parse::<IpAddr>(), prefix.parse::<u8>()) {
            return Ok(Client::Key(ClientKey::from_ip(ip, prefix)));
        }
    }
    Ok(Client::Key(ClientKey::custom(text)))
}

fn entry_json(e: &BanEntry) -> Value {
    json!({
        "client": e.client.to_string(),
        "reason": e.reason.listed_as(e.until),
        "since": time(e.since),
        "until": time(e.until),
    })
}

async fn bans(s: web::Data<Settings>, req: HttpRequest) -> HttpResponse {
    let query = match web::Query::<Vec<(String, String)>>::from_query(req.query_string()) {
        Ok(q) => q.into_inner(),
        Err(_) => return problem(StatusCode::BAD_REQUEST, "malformed query string"),
    };
    let (mut limit, mut cursor) = (DEFAULT_PAGE, None);
    for (name, value) in query {
        match name.as_str() {
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_BAN_PAGE).contains(&n) => limit = n,
                _ => {
                    let detail = format!("limit is a number from 1 to {MAX_BAN_PAGE}");
                    return problem(StatusCode::BAD_REQUEST, &detail);
                }
            },
            "cursor" => match value.parse::<BanCursor>() {
                Ok(c) => cursor = Some(c),
                Err(_) => {
                    let detail = "cursor is not one that a listing gave";
                    return problem(StatusCode::BAD_REQUEST, detail);
                }
            },
            _ => {}
        }
    }
    let shared = &s.gatekeeper.shared;
    match shared
        .store
        .bans(cursor.as_ref(), limit, shared.now())
        .await
    {
        Ok(page) => ok(json!({
            "bans": page.bans.iter().map(entry_json).collect::<Vec<_>>(),
            "next": page.next.map(|c| c.to_string()),
        })),
        Err(err) => store_failed(&err),
    }
}

pub(crate) fn status_json(st: &ClientStatus) -> Value {
    let windows: Vec<Value> = st
        .windows
        .iter()
        .map(|w| {
            json!({
                "scope": w.scope, "limit": w.limit, "active": w.active, "used": w.used,
                "remaining": w.remaining, "resets_at": time(w.resets_at),
                "blocked_until": time(w.blocked_until), "block_count": w.block_count,
                "punishments": w.punishments,
            })
        })
        .collect();
    json!({
        "client": st.client.to_string(),
        "ban": st.ban.as_ref().map(|b| json!({
            "reason": b.reason.listed_as(b.until),
            "since": time(b.since),
            "until": time(b.until),
        })),
        "offences": st.offences,
        "last_seen": time(st.last_seen),
        "windows": windows,
    })
}

async fn status(s: web::Data<Settings>, req: HttpRequest) -> HttpResponse {
    let client = match client_of(&req) {
        Ok(c) => c,
        Err(detail) => return problem(StatusCode::BAD_REQUEST, detail),
    };
    match s.gatekeeper.status(client).await {
        Ok(st) => ok(status_json(&st)),
        Err(err) => store_failed(&err),
    }
}

/// What a `PUT .../ban` body asks for: a length, or forever.
fn ban_request(body: &[u8]) -> Result<Option<std::time::Duration>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Some(obj) = value.as_object() else {
        return Err(r#"send {"for": "1h"} or {"forever": true}"#.into());
    };
    match (obj.get("for"), obj.get("forever")) {
        (Some(Value::String(d)), None) => match parse_duration(d) {
            Ok(d) if !d.is_zero() => Ok(Some(d)),
            Ok(_) => Err("a ban lasts longer than 0".into()),
            Err(e) => Err(e.to_string()),
        },
        (None, Some(Value::Bool(true))) => Ok(None),
        _ => Err(r#"send {"for": "1h"} or {"forever": true}"#.into()),
    }
}

async fn ban(s: web::Data<Settings>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let client = match client_of(&req) {
        Ok(c) => c,
        Err(detail) => return problem(StatusCode::BAD_REQUEST, detail),
    };
    let length = match ban_request(&body) {
        Ok(l) => l,
        Err(detail) => return problem(StatusCode::BAD_REQUEST, &detail),
    };
    let gk = &s.gatekeeper;
    let key = gk.key_of_client(client);
    let result = match length {
        Some(d) => gk.ban(key.clone(), d).await,
        None => gk.blacklist(key.clone()).await,
    };
    if let Err(err) = result {
        return store_failed(&err);
    }
    let what = match length {
        Some(d) => format!("ban for {d:?} of"),
        None => "blacklist of".to_owned(),
    };
    log_action(&s, &req, &what, &key);
    match gk.status(key).await {
        Ok(st) => ok(status_json(&st)),
        Err(err) => store_failed(&err),
    }
}

async fn unban(s: web::Data<Settings>, req: HttpRequest) -> HttpResponse {
    let client = match client_of(&req) {
        Ok(c) => c,
        Err(detail) => return problem(StatusCode::BAD_REQUEST, detail),
    };
    let key = s.gatekeeper.key_of_client(client);
    match s.gatekeeper.unban(key.clone()).await {
        Ok(was) => {
            log_action(&s, &req, "unban of", &key);
            ok(json!({ "was_banned": was }))
        }
        Err(err) => store_failed(&err),
    }
}

/// The clients shown by `/api/top` without `limit`, and the most it shows.
const TOP_SHOWN: usize = 20;
const TOP_MAX: usize = 256;

async fn top(s: web::Data<Settings>, req: HttpRequest) -> HttpResponse {
    let mut limit = TOP_SHOWN;
    if let Ok(q) = web::Query::<Vec<(String, String)>>::from_query(req.query_string()) {
        for (name, value) in q.into_inner() {
            if name == "limit" {
                match value.parse::<usize>() {
                    Ok(n) if (1..=TOP_MAX).contains(&n) => limit = n,
                    _ => {
                        let detail = format!("limit is a number from 1 to {TOP_MAX}");
                        return problem(StatusCode::BAD_REQUEST, &detail);
                    }
                }
            }
        }
    }
    let clients: Vec<Value> = s
        .gatekeeper
        .top_offenders(limit)
        .into_iter()
        .map(|o| json!({"client": o.client.to_string(), "refusals": o.refusals, "reports": o.reports}))
        .collect();
    ok(json!({ "clients": clients }))
}

async fn reload(s: web::Data<Settings>, req: HttpRequest) -> HttpResponse {
    let who =
        operator_ip(&s, &req).map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string());
    log::info!(target: s.gatekeeper.shared.log_target(), "floodgate admin: list reload by {who}");
    match s.gatekeeper.reload_lists() {
        Ok(n) => ok(json!({ "reloaded": n })),
        Err(err) => problem(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

async fn health(s: web::Data<Settings>) -> HttpResponse {
    let shared = &s.gatekeeper.shared;
    let probe = ClientKey::custom("floodgate-admin-health");
    match shared.store.state(&probe, shared.now()).await {
        Ok(_) => ok(json!({ "store": "ok" })),
        Err(err) => HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .body(json!({ "store": "failing", "error": err.to_string() }).to_string()),
    }
}

/// Any other path under the mount path.
pub(super) async fn not_found() -> HttpResponse {
    problem(StatusCode::NOT_FOUND, "no such admin endpoint")
}

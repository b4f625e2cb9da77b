//! Errors of the admin API as RFC 9457 problem details (`application/problem+json`).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

/// A problem response: `status`, a short `title` and a `detail` for this occurrence.
pub(crate) fn problem(status: StatusCode, detail: &str) -> HttpResponse {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    HttpResponse::build(status)
        .content_type("application/problem+json")
        .insert_header(("cache-control", "no-store"))
        .body(body.to_string())
}

//! Refusal responses and the RateLimit header fields, built from a decision and the
//! injected clock, never from the wall clock.

use std::fmt::Write as _;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::state::{BanReason, LimitInfo, LimitReason, Quota};

/// The problem type of a refusal for a spent quota (draft-ietf-httpapi-ratelimit-headers).
pub const PROBLEM_QUOTA_EXCEEDED: &str =
    "https://iana.org/assignments/http-problem-types#quota-exceeded";
/// The problem type of a refusal of a banned client (draft-ietf-httpapi-ratelimit-headers).
pub const PROBLEM_ABNORMAL_USAGE: &str =
    "https://iana.org/assignments/http-problem-types#abnormal-usage-detected";
/// The problem type of a refusal while the store does not answer (fail-closed).
pub const PROBLEM_REDUCED_CAPACITY: &str =
    "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity";

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// What was refused, handed to a custom refusal response
/// ([`Floodgate::refusal_response`](crate::Floodgate::refusal_response)).
#[derive(Debug)]
pub struct Refusal<'a> {
    /// 429, 403, or 503 when the store failed and the app is configured fail-closed.
    pub status: StatusCode,
    /// The client refused.
    pub client: &'a ClientKey,
    /// When to retry; `None` for a blacklist.
    pub retry_after: Option<Duration>,
    /// Why.
    pub kind: RefusalKind<'a>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum RefusalKind<'a> {
    /// A rate limit (429).
    Limited {
        /// Which kind of limit.
        reason: LimitReason,
        /// The limit.
        limit: &'a LimitInfo,
    },
    /// A ban or blacklist (403).
    Banned {
        /// When it ends; `None` for a blacklist.
        until: Option<Timestamp>,
        /// Why.
        reason: BanReason,
    },
    /// The store failed and the app is fail-closed (503).
    StoreUnavailable,
    /// A deny list, a country rule or a target refused the client (403, no `Retry-After`).
    Denied {
        /// Which.
        reason: &'a crate::targeting::DenyReason,
    },
    /// The request has no key where one is required
    /// ([`MissingKey::Refuse`](crate::MissingKey::Refuse)).
    MissingKey,
}

/// Whole seconds, rounded up, never below 1.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).clamp(1, u128::from(u64::MAX)) as u64
}

/// Whole seconds, rounded up (0 stays 0).
fn secs_ceil(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).min(u128::from(u64::MAX)) as u64
}

impl Refusal<'_> {
    /// The default response: `application/problem+json` (RFC 9457) naming the limit and when
    /// to retry, with `Retry-After`.
    pub fn default_response(&self) -> HttpResponse {
        let (kind, title) = self.problem_type();
        let retry = self.retry_after.map(retry_after_secs);
        let mut ints = itoa::Buffer::new();
        let mut body = String::with_capacity(288);
        body.push_str("{\"type\":\"");
        body.push_str(kind);
        body.push_str("\",\"title\":\"");
        body.push_str(title);
        body.push_str("\",\"status\":");
        body.push_str(ints.format(self.status.as_u16()));
        // The detail is built in pieces: (prefix, limit name, suffix).
        let (before, name, after): (&str, &str, &str) = match self.kind {
            RefusalKind::Limited { reason, limit } => {
                body.push_str(",\"violated-policies\":[");
                push_json_string(&mut body, &limit.name);
                body.push_str("],\"limit\":");
                push_json_string(&mut body, &limit.name);
                match reason {
                    LimitReason::Cooldown => (
                        "Too soon after the previous request (limit ",
                        &limit.name,
                        ").",
                    ),
                    LimitReason::Blocked => {
                        ("Blocked for exceeding the rate limit ", &limit.name, ".")
                    }
                    _ => ("Rate limit ", &limit.name, " exceeded."),
                }
            }
            RefusalKind::Banned { until: None, .. } => ("This client is blacklisted.", "", ""),
            RefusalKind::Banned {
                reason: BanReason::Punished,
                ..
            } => (
                "This client is banned for repeatedly exceeding the rate limit.",
                "",
                "",
            ),
            RefusalKind::Banned { .. } => ("This client is banned.", "", ""),
            RefusalKind::StoreUnavailable => {
                ("The rate limiter is unavailable; try again later.", "", "")
            }
            RefusalKind::Denied { reason } => {
                let detail = crate::targeting::deny_detail(reason);
                return self.finish(body, &detail, retry);
            }
            RefusalKind::MissingKey => (
                "This request needs a client key (such as an API key).",
                "",
                "",
            ),
        };
        let mut detail = String::with_capacity(before.len() + name.len() + after.len());
        detail.push_str(before);
        detail.push_str(name);
        detail.push_str(after);
        self.finish(body, &detail, retry)
    }

    /// The problem type (RFC 9457) and its title: those of draft-ietf-httpapi-ratelimit-
    /// headers for a spent quota (429), a ban (403, abnormal usage) and a store that does not
    /// answer (503, reduced capacity); `about:blank` and the status's phrase otherwise.
    fn problem_type(&self) -> (&'static str, &'static str) {
        match (&self.kind, self.status.as_u16()) {
            (RefusalKind::Limited { .. }, 429) => (
                PROBLEM_QUOTA_EXCEEDED,
                "Request cannot be satisfied as assigned quota has been exceeded",
            ),
            (RefusalKind::Banned { .. }, _) => (
                PROBLEM_ABNORMAL_USAGE,
                "Request not satisfied due to detection of abnormal request pattern",
            ),
            (RefusalKind::StoreUnavailable, 503) => (
                PROBLEM_REDUCED_CAPACITY,
                "Request cannot be satisfied due to temporary server capacity constraints",
            ),
            _ => (
                "about:blank",
                self.status.canonical_reason().unwrap_or("Refused"),
            ),
        }
    }

    fn finish(&self, mut body: String, detail: &str, retry: Option<u64>) -> HttpResponse {
        let mut ints = itoa::Buffer::new();
        body.push_str(",\"detail\":");
        let mut text = String::with_capacity(detail.len() + 24);
        text.push_str(detail);
        if let Some(secs) = retry {
            text.push_str(" Retry in ");
            text.push_str(ints.format(secs));
            text.push_str(" s.");
        }
        push_json_string(&mut body, &text);
        if let Some(secs) = retry {
            body.push_str(",\"retry_after\":");
            body.push_str(ints.format(secs));
        }
        body.push('}');
        HttpResponse::build(self.status)
            .insert_header((CONTENT_TYPE, "application/problem+json"))
            .body(body)
    }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// An sf-string: printable ASCII, with `"` and `\` escaped; anything else becomes `?`.
fn push_sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

/// `RateLimit-Policy` for a route's limits: `"20/1s";q=20;w=1, "100/10s";q=100;w=10`.
pub(crate) fn policy_header(limits: &[LimitInfo]) -> Option<HeaderValue> {
    if limits.is_empty() {
        return None;
    }
    let mut v = String::new();
    for (i, l) in limits.iter().enumerate() {
        if i > 0 {
            v.push_str(", ");
        }
        push_sf_string(&mut v, &l.name);
        let _ = write!(v, ";q={};w={}", l.quota, secs_ceil(l.window).max(1));
    }
    HeaderValue::try_from(v).ok()
}

/// The `RateLimit` field value `"name";r=R;t=T`, written without `core::fmt`.
pub(crate) fn ratelimit_value(
    limit: &LimitInfo,
    remaining: u32,
    reset_secs: u64,
) -> Option<HeaderValue> {
    let mut name = String::with_capacity(limit.name.len() + 2);
    push_sf_string(&mut name, &limit.name);
    let mut ints = itoa::Buffer::new();
    let mut v = Vec::with_capacity(name.len() + 24);
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(b";r=");
    v.extend_from_slice(ints.format(remaining).as_bytes());
    v.extend_from_slice(b";t=");
    v.extend_from_slice(ints.format(reset_secs).as_bytes());
    HeaderValue::from_maybe_shared(actix_web::web::Bytes::from(v)).ok()
}

/// Built `RateLimit` values of one route, per worker. The same (limit, remaining, reset)
/// triples recur across clients, so a small direct-mapped cache turns formatting and header
/// validation into a lookup and a reference-count increment.
#[derive(Debug, Default)]
pub(crate) struct RateLimitCache {
    slots: std::cell::RefCell<Vec<Option<(u64, HeaderValue)>>>,
}

const CACHE_SLOTS: usize = 64;

impl RateLimitCache {
    pub(crate) fn value(&self, limits: &[LimitInfo], quota: Quota) -> Option<HeaderValue> {
        let limit = limits.get(quota.limit)?;
        let reset = secs_ceil(quota.reset);
        // Pack the triple into one word when it fits; otherwise build without caching.
        if quota.limit >= 1 << 16 || quota.remaining >= 1 << 24 || reset >= 1 << 24 {
            return ratelimit_value(limit, quota.remaining, reset);
        }
        let key = (quota.limit as u64) << 48 | u64::from(quota.remaining) << 24 | reset;
        let slot = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % CACHE_SLOTS;
        let mut slots = self.slots.borrow_mut();
        if slots.is_empty() {
            slots.resize(CACHE_SLOTS, None);
        }
        if let Some((k, v)) = &slots[slot] {
            if *k == key {
                return Some(v.clone());
            }
        }
        let v = ratelimit_value(limit, quota.remaining, reset)?;
        slots[slot] = Some((key, v.clone()));
        Some(v)
    }
}

/// Adds `RateLimit` (and the legacy fields when asked) for `quota`.
pub(crate) fn insert_quota(
    headers: &mut HeaderMap,
    limits: &[LimitInfo],
    quota: Quota,
    cache: &RateLimitCache,
    legacy: bool,
    ietf: bool,
) {
    let Some(limit) = limits.get(quota.limit) else {
        return;
    };
    if ietf {
        if let Some(v) = cache.value(limits, quota) {
            headers.insert(RATELIMIT, v);
        }
    }
    if legacy {
        headers.insert(X_LIMIT, HeaderValue::from(limit.quota));
        headers.insert(X_REMAINING, HeaderValue::from(quota.remaining));
        headers.insert(X_RESET, HeaderValue::from(secs_ceil(quota.reset)));
    }
}

/// Adds `Retry-After` unless the response has one.
pub(crate) fn insert_retry_after(headers: &mut HeaderMap, retry_after: Option<Duration>) {
    if let Some(d) = retry_after {
        if !headers.contains_key(RETRY_AFTER) {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(d)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_below_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(600)), 600);
    }

    #[test]
    fn policy_header_lists_every_limit() {
        let limits = [
            LimitInfo {
                name: "20/1s".into(),
                quota: 20,
                window: Duration::from_secs(1),
            },
            LimitInfo {
                name: "a\"b".into(),
                quota: 5,
                window: Duration::from_millis(1500),
            },
        ];
        let v = policy_header(&limits).unwrap();
        assert_eq!(v.to_str().unwrap(), r#""20/1s";q=20;w=1, "a\"b";q=5;w=2"#);
    }

    #[test]
    fn problem_body_escapes_and_names_the_limit() {
        // A name with a quote, a backslash and a control character (a route's own name).
        let limit = LimitInfo {
            name: "5/1m \"a\\b\u{1}".into(),
            quota: 5,
            window: Duration::from_secs(60),
        };
        let key = ClientKey::custom("k");
        let r = Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            client: &key,
            retry_after: Some(Duration::from_millis(2500)),
            kind: RefusalKind::Limited {
                reason: LimitReason::Rule,
                limit: &limit,
            },
        };
        let res = r.default_response();
        assert_eq!(res.status(), 429);
        assert_eq!(
            res.headers().get(CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
        let body = actix_web::body::to_bytes(res.into_body());
        let body = futures_util::FutureExt::now_or_never(body)
            .unwrap()
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"type":"https://iana.org/assignments/http-problem-types#quota-exceeded","#
                .to_owned()
                + r#""title":"Request cannot be satisfied as assigned quota has been exceeded","#
                + r#""status":429,"violated-policies":["5/1m \"a\\b\u0001"],"#
                + r#""limit":"5/1m \"a\\b\u0001","#
                + r#""detail":"Rate limit 5/1m \"a\\b\u0001 exceeded. Retry in 3 s.","#
                + r#""retry_after":3}"#
        );
    }

    #[test]
    fn the_longest_durations_give_the_largest_header_values() {
        let max = u64::MAX.to_string();
        // Duration::MAX is u64::MAX s + 999 999 999 ns: rounded up, one past u64::MAX.
        assert_eq!(retry_after_secs(Duration::MAX), u64::MAX);
        assert_eq!(secs_ceil(Duration::MAX), u64::MAX);
        assert_eq!(
            retry_after_secs(Duration::from_millis(u64::MAX)),
            u64::MAX / 1000 + 1
        );
        let mut headers = HeaderMap::new();
        insert_retry_after(&mut headers, Some(Duration::MAX));
        assert_eq!(headers.get(RETRY_AFTER).unwrap().to_str().unwrap(), max);

        let limits = [LimitInfo {
            name: "4294967295/18446744073709551615ms".into(),
            quota: u32::MAX,
            window: Duration::MAX,
        }];
        let v = policy_header(&limits).unwrap();
        assert_eq!(
            v.to_str().unwrap(),
            format!("\"4294967295/18446744073709551615ms\";q=4294967295;w={max}")
        );
        let quota = Quota {
            limit: 0,
            remaining: u32::MAX,
            reset: Duration::MAX,
        };
        let cache = RateLimitCache::default();
        insert_quota(&mut headers, &limits, quota, &cache, true, true);
        assert_eq!(
            headers.get(RATELIMIT).unwrap().to_str().unwrap(),
            format!("\"4294967295/18446744073709551615ms\";r=4294967295;t={max}")
        );
        assert_eq!(headers.get(X_RESET).unwrap().to_str().unwrap(), max);
        assert_eq!(
            headers.get(X_REMAINING).unwrap().to_str().unwrap(),
            "4294967295"
        );

        let key = ClientKey::custom("k");
        let res = Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            client: &key,
            retry_after: Some(Duration::MAX),
            kind: RefusalKind::Limited {
                reason: LimitReason::Cooldown,
                limit: &limits[0],
            },
        }
        .default_response();
        assert_eq!(res.status(), 429);
        let body = actix_web::body::to_bytes(res.into_body());
        let body = futures_util::FutureExt::now_or_never(body)
            .unwrap()
            .unwrap();
        let body = std::str::from_utf8(&body).unwrap();
        assert!(body.contains(&format!("\"retry_after\":{max}}}")), "{body}");
    }
}

#![deny(unused_imports)]
//! Every form of the attributes compiles, registers on an `App` and serves; where a form
//! attaches a strict rule, the rule is checked to be in force on exactly that handler.

use actix_web::http::{Method, StatusCode};
use actix_web::test::{self, TestRequest};
use actix_web::{get, post, query, route, routes, web, App, HttpRequest, Responder};
use floodgate::{bypass, rate_limited, specific, FakeClock, Floodgate, GateKeeper};

fn has_api_key(req: &HttpRequest) -> bool {
    req.headers().contains_key("x-api-key")
}

mod checks {
    pub fn internal(req: &actix_web::HttpRequest) -> bool {
        req.path().starts_with("/internal")
    }
}

// ---- #[rate_limited] ----

#[rate_limited]
#[get("/bare")]
async fn bare() -> &'static str {
    "ok"
}

#[rate_limited()]
#[get("/empty-parens")]
async fn empty_parens() -> &'static str {
    "ok"
}

// A policy registered on the app and shared by every route naming it.
#[rate_limited(policy = "api")]
#[get("/shared")]
async fn shared_policy() -> &'static str {
    "ok"
}

// The argument list of SPEC section 2.
#[rate_limited(amount = 20, time_window = "1m", block_limit = 5,
               block_exceed_duration = "forever", relative_block = false,
               block_exceed_reset = true, max_window_duration = "30d",
               accumulate_requests = true, request_data_check = has_api_key)]
#[get("/rate-limited")]
async fn rate_limited_route() -> &'static str {
    "Hello!"
}

// Every key, a bare boolean, a path into a module and a trailing comma.
#[rate_limited(
    amount = 10,
    time_window = "10s",
    block_duration = "500ms",
    block_limit = 0,
    block_exceed_duration = "1h",
    relative_block,
    block_exceed_reset = false,
    max_window_duration = "forever",
    accumulate_requests = true,
    accumulate_cap = 5,
    request_data_check = checks::internal,
    cooldown = "100ms",
    grace_extra = 2,
    grace_interval = "1d",
    adaptive_factor = 1.5,
    adaptive_max = "7d",
    adaptive_jitter = "1m",
)]
#[get("/every-key")]
async fn every_key() -> &'static str {
    "ok"
}

// Spelled-out units, a whole-number factor, weeks.
#[rate_limited(
    time_window = "10 seconds",
    block_exceed_duration = "2 hours",
    adaptive_factor = 2,
    max_window_duration = "1w"
)]
#[get("/spelled-out")]
async fn spelled_out() -> &'static str {
    "ok"
}

#[rate_limited(amount = 1, time_window = "1h")]
#[post("/post")]
async fn post_handler(body: String) -> String {
    body
}

// ---- #[specific] ----

#[specific(rate_limit_rules = [(1, "2s"), "100/1h", "5 per minute"], standalone)]
#[get("/standalone")]
async fn standalone() -> &'static str {
    "ok"
}

#[specific(rate_limit_rules = [(1, "1h")], standalone = true)]
#[get("/once")]
async fn once() -> &'static str {
    "ok"
}

#[specific(rate_limit_rules = ["10/1s"], standalone = false)]
#[get("/not-standalone")]
async fn not_standalone() -> &'static str {
    "ok"
}

// ---- #[bypass] ----

#[bypass]
#[get("/health")]
async fn health() -> &'static str {
    "ok"
}

#[bypass()]
#[get("/health-parens")]
async fn health_parens() -> &'static str {
    "ok"
}

// ---- path-qualified attributes ----

#[floodgate::specific(rate_limit_rules = [(1, "1h")])]
#[get("/qualified")]
async fn qualified() -> &'static str {
    "ok"
}

#[::floodgate::rate_limited(amount = 3)]
#[actix_web::get("/fully-qualified")]
async fn fully_qualified() -> &'static str {
    "ok"
}

#[floodgate::bypass]
#[actix_web::post("/qualified-bypass")]
async fn qualified_bypass() -> &'static str {
    "ok"
}

// ---- route attribute forms ----

#[specific(rate_limit_rules = [(1, "1h")], standalone)]
#[route("/multi", method = "GET", method = "POST")]
async fn multi() -> &'static str {
    "ok"
}

#[rate_limited(amount = 5)]
#[routes]
#[get("/a")]
#[post("/b")]
async fn several() -> &'static str {
    "ok"
}

#[rustfmt::skip] // keeps the trailing comma under test
#[specific(rate_limit_rules = [(1, "1h")], standalone)]
#[get("/named", name = "renamed",)]
async fn named() -> &'static str {
    "ok"
}

#[rustfmt::skip] // keeps the trailing comma under test
#[bypass]
#[get("/trailing-comma",)]
async fn trailing_comma() -> &'static str {
    "ok"
}

// A `wrap` of the user's own is kept.
#[rate_limited]
#[get(
    "/wrapped",
    wrap = "actix_web::middleware::DefaultHeaders::new().add((\"x-wrapped\", \"yes\"))"
)]
async fn wrapped() -> &'static str {
    "ok"
}

#[specific(rate_limit_rules = [(1, "1h")], standalone)]
#[query("/query")]
async fn query_handler() -> &'static str {
    "ok"
}

// ---- two floodgate attributes on one handler ----

#[specific(rate_limit_rules = [(1, "1h")], standalone)]
#[rate_limited(amount = 5, time_window = "1s")]
#[get("/merged")]
async fn merged() -> &'static str {
    "ok"
}

#[rate_limited(amount = 5)]
#[floodgate::specific(rate_limit_rules = ["1/1h"], standalone)]
#[get("/merged-other-order")]
async fn merged_other_order() -> &'static str {
    "ok"
}

// ---- handler shapes ----

/// A documented public handler with extractors and other attributes around it.
#[specific(rate_limit_rules = [(5, "1s")])]
#[allow(clippy::unused_async)]
#[get("/documented/{name}")]
#[allow(unused_variables)]
pub async fn documented(
    name: web::Path<String>,
    req: HttpRequest,
    gk: GateKeeper,
) -> impl Responder {
    name.into_inner()
}

#[rate_limited]
#[get("/type")]
async fn r#type() -> &'static str {
    "ok"
}

// Same function name as the top-level `once`: its own rules and its own counter.
mod api {
    use super::*;

    #[specific(rate_limit_rules = [(1, "1h")], standalone)]
    #[get("/api/once")]
    pub async fn once() -> &'static str {
        "ok"
    }

    pub mod nested {
        #[floodgate::bypass]
        #[actix_web::get("/api/nested")]
        pub(crate) async fn nested() -> &'static str {
            "ok"
        }
    }
}

#[actix_web::scope("/scoped")]
mod scoped {
    use super::*;

    #[specific(rate_limit_rules = [(1, "1h")], standalone)]
    #[get("/inner")]
    pub async fn inner() -> &'static str {
        "ok"
    }
}

// Generated code names only absolute paths: local items named like std or floodgate ones do
// not get in the way.
mod shadowing {
    #![allow(dead_code, non_camel_case_types)]
    struct Option;
    struct RouteRules;
    struct Some;
    struct None;
    mod core {}

    #[floodgate::rate_limited(amount = 3, block_exceed_duration = "forever")]
    #[actix_web::get("/shadowing")]
    pub async fn shadowing() -> &'static str {
        "ok"
    }
}

fn local_routes(cfg: &mut web::ServiceConfig) {
    #[specific(rate_limit_rules = [(1, "1h")], standalone)]
    #[get("/local")]
    async fn local() -> &'static str {
        "ok"
    }
    cfg.service(local);
}

/// Sends one request from the same client and returns the response's status (floodgate
/// returns a refusal as the service's error, rendered into the response actix would send).
macro_rules! call {
    ($app:expr, $method:expr, $uri:expr) => {{
        let req = TestRequest::default()
            .method($method)
            .uri($uri)
            .peer_addr("192.0.2.7:4000".parse().unwrap())
            .to_request();
        match test::try_call_service($app, req).await {
            Ok(res) => res.status(),
            Err(err) => err.error_response().status(),
        }
    }};
}

#[actix_web::main]
async fn main() {
    let floodgate = Floodgate::new().clock(FakeClock::new()).policy(
        "api",
        floodgate::Policy::new(20, std::time::Duration::from_secs(60)),
    );
    let app = test::init_service(
        App::new()
            .wrap(floodgate)
            .service(bare)
            .service(empty_parens)
            .service(shared_policy)
            .service(rate_limited_route)
            .service(every_key)
            .service(spelled_out)
            .service(post_handler)
            .service(standalone)
            .service(once)
            .service(not_standalone)
            .service(health)
            .service(health_parens)
            .service(qualified)
            .service(fully_qualified)
            .service(qualified_bypass)
            .service(multi)
            .service(several)
            .service(named)
            .service(trailing_comma)
            .service(wrapped)
            .service(query_handler)
            .service(merged)
            .service(merged_other_order)
            .service(documented)
            .service(r#type)
            .service(api::once)
            .service(api::nested::nested)
            .service(scoped::inner)
            .service(shadowing::shadowing)
            .configure(local_routes),
    )
    .await;

    let get = Method::GET;
    let post = Method::POST;
    let query = Method::from_bytes(b"QUERY").unwrap();
    let every_route = [
        (&get, "/bare"),
        (&get, "/empty-parens"),
        (&get, "/rate-limited"),
        (&get, "/every-key"),
        (&get, "/spelled-out"),
        (&post, "/post"),
        (&get, "/standalone"),
        (&get, "/not-standalone"),
        (&get, "/health"),
        (&get, "/health-parens"),
        (&get, "/fully-qualified"),
        (&post, "/qualified-bypass"),
        (&get, "/a"),
        (&post, "/b"),
        (&get, "/trailing-comma"),
        (&get, "/wrapped"),
        (&get, "/documented/ann"),
        (&get, "/type"),
        (&get, "/api/nested"),
        (&get, "/shadowing"),
    ];
    for (method, uri) in every_route {
        assert_eq!(
            call!(&app, method.clone(), uri),
            StatusCode::OK,
            "{method} {uri}"
        );
    }

    // Each of these handlers has a standalone rule of one request per hour: the first request
    // is served, the second refused, so the attribute's rules are in force on it.
    let once_an_hour = [
        (&get, "/once"),
        (&get, "/api/once"),
        (&post, "/multi"),
        (&get, "/named"),
        (&query, "/query"),
        (&get, "/merged"),
        (&get, "/merged-other-order"),
        (&get, "/qualified"),
        (&get, "/scoped/inner"),
        (&get, "/local"),
    ];
    for (method, uri) in once_an_hour {
        assert_eq!(
            call!(&app, method.clone(), uri),
            StatusCode::OK,
            "{method} {uri}"
        );
        assert_eq!(
            call!(&app, method.clone(), uri),
            StatusCode::TOO_MANY_REQUESTS,
            "second {method} {uri}"
        );
    }

    // The `wrap` the user wrote is still applied next to floodgate's.
    let req = TestRequest::get()
        .uri("/wrapped")
        .peer_addr("192.0.2.8:4000".parse().unwrap())
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.headers().get("x-wrapped").unwrap(), "yes");
}

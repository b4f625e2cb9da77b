//! Per-route rules behind a middleware that defers routing, over real HTTP: a middleware
//! between `Floodgate` and the routes that calls them only when polled (actix-web's
//! `middleware::from_fn`, session and auth middleware) must not make `#[specific]`,
//! `#[rate_limited]`, `key = ..` or `RouteRules` stop applying.

use std::sync::Mutex;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{get, web, App, Error, HttpRequest, HttpResponse};
use floodgate::{rate_limited, specific, FakeClock, Floodgate, RouteRules, Rule};
use floodgate_tests::{get_as, secs, send, server_config, IP_HEADER};

/// (handler, client) of every handler run, for the tests running in parallel in this binary.
static RAN: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());

fn ran(handler: &'static str, req: &HttpRequest) {
    let client = req
        .headers()
        .get(IP_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    RAN.lock().unwrap().push((handler, client));
}

/// How many times `handler` ran for `client`.
fn runs(handler: &str, client: &str) -> usize {
    RAN.lock()
        .unwrap()
        .iter()
        .filter(|(h, c)| *h == handler && c == client)
        .count()
}

/// Like an auth middleware: does some asynchronous work first, then calls the routes.
async fn deferring(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    actix_web::rt::task::yield_now().await;
    next.call(req).await
}

#[specific(rate_limit_rules = [(1, "1m")], standalone)]
#[get("/specific")]
async fn specific_route(req: HttpRequest) -> &'static str {
    ran("specific", &req);
    "specific"
}

#[rate_limited(amount = 2, time_window = "1m")]
#[get("/policy")]
async fn policy_route(req: HttpRequest) -> &'static str {
    ran("policy", &req);
    "policy"
}

fn api_key(req: &HttpRequest) -> Option<String> {
    Some(req.headers().get("x-api-key")?.to_str().ok()?.to_owned())
}

#[specific(rate_limit_rules = [(1, "1m")], standalone, key = api_key)]
#[get("/keyed")]
async fn keyed() -> &'static str {
    "keyed"
}

#[get("/plain")]
async fn plain() -> &'static str {
    "plain"
}

fn start(fg: &Floodgate) -> actix_test::TestServer {
    let fg = fg.clone();
    actix_test::start_with(server_config(), move || {
        App::new()
            .wrap(from_fn(deferring))
            .wrap(fg.clone())
            .service(specific_route)
            .service(policy_route)
            .service(keyed)
            .service(plain)
            .service(
                web::resource("/resource")
                    .wrap(RouteRules::new("resource").specific([Rule::new(1, secs(60))]))
                    .to(|req: HttpRequest| async move {
                        ran("resource", &req);
                        HttpResponse::Ok().body("resource")
                    }),
            )
    })
}

fn floodgate(clock: &FakeClock) -> Floodgate {
    Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .rate_limit_rules([Rule::new(100, secs(60))])
}

#[actix_web::test]
async fn specific_rules_apply_and_refused_requests_never_reach_the_handler() {
    let clock = FakeClock::new();
    let srv = start(&floodgate(&clock));
    assert_eq!(get_as(&srv, "/specific", "1.1.1.1").await.code(), 200);
    for _ in 0..3 {
        assert_eq!(get_as(&srv, "/specific", "1.1.1.1").await.code(), 429);
    }
    assert_eq!(runs("specific", "1.1.1.1"), 1);
    assert_eq!(get_as(&srv, "/specific", "1.1.1.2").await.code(), 200);
    clock.advance(secs(60));
    assert_eq!(get_as(&srv, "/specific", "1.1.1.1").await.code(), 200);

    // The route's own RateLimit fields reach the client (its rule, not the global 100/1m),
    // from the first request on.
    let r = get_as(&srv, "/resource", "1.1.1.1").await;
    assert_eq!(r.code(), 200);
    assert_eq!(r.header("ratelimit"), Some(r#""1/1m";r=0;t=60"#));
    assert_eq!(get_as(&srv, "/resource", "1.1.1.1").await.code(), 429);
    assert_eq!(runs("resource", "1.1.1.1"), 1);
}

#[actix_web::test]
async fn policies_apply_and_block() {
    let clock = FakeClock::new();
    let srv = start(&floodgate(&clock));
    let codes: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(get_as(&srv, "/policy", "2.2.2.2").await.code());
        }
        v
    };
    assert_eq!(codes, [200, 200, 429, 429]);
    assert_eq!(runs("policy", "2.2.2.2"), 2);
    let resp = get_as(&srv, "/policy", "2.2.2.2").await;
    assert_eq!(resp.header("retry-after"), Some("60"));
}

#[actix_web::test]
async fn route_keys_apply() {
    let clock = FakeClock::new();
    let srv = start(&floodgate(&clock));
    let srv = &srv;
    let with_key = |client: &'static str, key: &'static str| {
        let req = srv
            .get("/keyed")
            .insert_header((IP_HEADER, client))
            .insert_header(("x-api-key", key));
        async move { send(req).await.code() }
    };
    // One key from two addresses shares one limit; another key has its own.
    assert_eq!(with_key("3.3.3.1", "k1").await, 200);
    assert_eq!(with_key("3.3.3.2", "k1").await, 429);
    assert_eq!(with_key("3.3.3.2", "k2").await, 200);
}

#[actix_web::test]
async fn bans_and_global_rules_still_apply() {
    let clock = FakeClock::new();
    let fg = floodgate(&clock).rate_limit_rules([Rule::new(2, secs(60))]);
    let srv = start(&fg);
    assert_eq!(get_as(&srv, "/plain", "4.4.4.4").await.code(), 200);
    assert_eq!(get_as(&srv, "/plain", "4.4.4.4").await.code(), 200);
    assert_eq!(get_as(&srv, "/plain", "4.4.4.4").await.code(), 429);
    // The global rules are counted once per request, not once more by the route.
    assert_eq!(get_as(&srv, "/resource", "4.4.4.5").await.code(), 200);
    assert_eq!(get_as(&srv, "/plain", "4.4.4.5").await.code(), 200);
    assert_eq!(get_as(&srv, "/plain", "4.4.4.5").await.code(), 429);
    fg.gatekeeper()
        .ban("5.5.5.5".parse::<std::net::IpAddr>().unwrap(), secs(60))
        .await
        .unwrap();
    for path in ["/plain", "/specific", "/policy", "/resource"] {
        assert_eq!(get_as(&srv, path, "5.5.5.5").await.code(), 403, "{path}");
    }
}

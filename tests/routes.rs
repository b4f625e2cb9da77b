//! Where rules apply (SPEC 3 and 4): each attribute attaches its rules to exactly the handler
//! it annotates, whatever the path, method, scope, resource name or function name; `#[bypass]`,
//! `standalone` and global + specific behave as specified; rules attach without macros through
//! `RouteRules`; and a refused request runs no extractor and no handler code.

use std::future::{ready, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{get, post, web, App, FromRequest, HttpRequest, HttpResponse};
use floodgate::{bypass, specific, FakeClock, Floodgate, RouteRules, Rule};
use floodgate_tests::{
    codes_as, expect_codes, from_ip, get_as, post_as, secs, send_body, server_config, IP_HEADER,
};

// ---------------------------------------------------------------------------------------------
// Handlers

#[get("/plain")] // global rules only
async fn plain() -> &'static str {
    "plain"
}

#[specific(rate_limit_rules = [(1, "1m")])]
#[get("/login")]
async fn login_get() -> &'static str {
    "login form"
}

#[specific(rate_limit_rules = [(2, "1m")])]
#[post("/login")]
async fn login_post() -> &'static str {
    "logged in"
}

/// Mounted under `web::scope("/api")`.
#[specific(rate_limit_rules = [(1, "1m")])]
#[get("/item")]
async fn api_item() -> &'static str {
    "api item"
}

/// Mounted at the root, same path as `api_item` inside its scope; no rules of its own.
#[get("/item")]
async fn root_item() -> &'static str {
    "root item"
}

/// Mounted under `web::scope("/api")`, no rules of its own.
#[get("/other")]
async fn api_other() -> &'static str {
    "api other"
}

#[specific(rate_limit_rules = [(1, "1m")])]
#[get("/x", name = "renamed")]
async fn renamed(req: HttpRequest) -> String {
    // The resource name is still in effect.
    req.url_for_static("renamed")
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|e| format!("no url: {e}"))
}

mod first {
    use super::*;

    #[specific(rate_limit_rules = [(1, "1m")])]
    #[get("/first/handler")]
    pub(crate) async fn handler() -> &'static str {
        "first"
    }
}

mod second {
    use super::*;

    #[specific(rate_limit_rules = [(1, "1m")])]
    #[get("/second/handler")]
    pub(crate) async fn handler() -> &'static str {
        "second"
    }
}

#[bypass]
#[get("/health")]
async fn health() -> &'static str {
    "healthy"
}

#[specific(rate_limit_rules = [(3, "1m")], standalone)]
#[get("/standalone")]
async fn standalone() -> &'static str {
    "standalone"
}

#[specific(rate_limit_rules = [(1, "1m")])]
#[get("/gs")]
async fn global_plus_specific() -> &'static str {
    "global plus specific"
}

// Handler and extractor that count their runs.

#[derive(Debug, Default)]
struct Counters {
    extractor: AtomicUsize,
    handler: AtomicUsize,
}

impl Counters {
    fn get(&self) -> (usize, usize) {
        (
            self.extractor.load(Ordering::SeqCst),
            self.handler.load(Ordering::SeqCst),
        )
    }
}

/// An extractor that counts how often it runs.
struct Counted;

impl FromRequest for Counted {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        if let Some(c) = req.app_data::<web::Data<Counters>>() {
            c.extractor.fetch_add(1, Ordering::SeqCst);
        }
        ready(Ok(Counted))
    }
}

async fn counted_body(
    _: Counted,
    counters: web::Data<Counters>,
    _body: web::Bytes,
) -> HttpResponse {
    counters.handler.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok().body("counted")
}

#[specific(rate_limit_rules = [(2, "1m")])]
#[post("/counted")]
async fn counted(c: Counted, counters: web::Data<Counters>, body: web::Bytes) -> HttpResponse {
    counted_body(c, counters, body).await
}

// ---------------------------------------------------------------------------------------------
// The app

fn start(clock: &FakeClock, global: Rule) -> (actix_test::TestServer, Floodgate) {
    start_with_counters(clock, global, Arc::default())
}

fn start_with_counters(
    clock: &FakeClock,
    global: Rule,
    counters: Arc<Counters>,
) -> (actix_test::TestServer, Floodgate) {
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .rate_limit_rules([global]);
    let app_fg = fg.clone();
    let counters = web::Data::from(counters);
    let srv = actix_test::start_with(server_config(), move || {
        App::new()
            .wrap(app_fg.clone())
            .app_data(counters.clone())
            .service(plain)
            .service(login_get)
            .service(login_post)
            .service(web::scope("/api").service(api_item).service(api_other))
            .service(root_item)
            .service(renamed)
            .service(first::handler)
            .service(second::handler)
            .service(health)
            .service(standalone)
            .service(global_plus_specific)
            .service(counted)
            // Without macros.
            .service(
                web::resource("/res/specific")
                    .wrap(RouteRules::new("res-specific").specific([Rule::new(1, secs(60))]))
                    .route(web::get().to(HttpResponse::Ok)),
            )
            .service(
                web::resource("/res/standalone")
                    .wrap(
                        RouteRules::new("res-standalone")
                            .specific([Rule::new(3, secs(60))])
                            .standalone(),
                    )
                    .route(web::get().to(HttpResponse::Ok)),
            )
            .service(
                web::resource("/res/bypass")
                    .wrap(RouteRules::new("res-bypass").bypass())
                    .route(web::get().to(HttpResponse::Ok)),
            )
            .service(
                web::scope("/res-scope").service(
                    web::resource("/deep")
                        .wrap(RouteRules::new("res-deep").specific([Rule::new(2, secs(60))]))
                        .route(web::get().to(HttpResponse::Ok)),
                ),
            )
            .service(
                web::resource("/res/counted")
                    .wrap(RouteRules::new("res-counted").specific([Rule::new(1, secs(60))]))
                    .route(web::post().to(counted_body)),
            )
            .service(web::resource("/counted-global").route(web::post().to(counted_body)))
    });
    (srv, fg)
}

/// A global rule loose enough never to refuse in a test that is about specific rules.
const LOOSE: Rule = Rule::new(1000, std::time::Duration::from_secs(60));

// ---------------------------------------------------------------------------------------------
// Tests

#[actix_web::test]
async fn same_path_different_methods_each_get_their_own_rules() {
    let clock = FakeClock::new();
    let (srv, _) = start(&clock, LOOSE);
    let ip = "10.1.0.1";

    // GET /login allows 1 a minute.
    let r = get_as(&srv, "/login", ip).await;
    assert_eq!((r.code(), r.text()), (200, "login form"));
    assert_eq!(
        r.header("ratelimit-policy"),
        Some(r#""1000/1m";q=1000;w=60, "1/1m";q=1;w=60"#)
    );
    assert_eq!(get_as(&srv, "/login", ip).await.code(), 429);

    // POST /login allows 2 a minute, untouched by the GET refusals.
    let r = post_as(&srv, "/login", ip).await;
    assert_eq!((r.code(), r.text()), (200, "logged in"));
    assert_eq!(
        r.header("ratelimit-policy"),
        Some(r#""1000/1m";q=1000;w=60, "2/1m";q=2;w=60"#)
    );
    assert_eq!(post_as(&srv, "/login", ip).await.code(), 200);
    let r = post_as(&srv, "/login", ip).await;
    assert_eq!(r.code(), 429);
    assert_eq!(r.json()["limit"], "2/1m");

    // And the other way round for another client: POST exhausted first leaves GET alone.
    let ip = "10.1.0.2";
    assert_eq!(post_as(&srv, "/login", ip).await.code(), 200);
    assert_eq!(post_as(&srv, "/login", ip).await.code(), 200);
    assert_eq!(post_as(&srv, "/login", ip).await.code(), 429);
    let r = get_as(&srv, "/login", ip).await;
    assert_eq!(r.code(), 200);
    let r = get_as(&srv, "/login", ip).await;
    assert_eq!(r.code(), 429);
    assert_eq!(r.json()["limit"], "1/1m");
}

#[actix_web::test]
async fn a_handler_under_a_scope_gets_its_rules_and_its_neighbours_do_not() {
    let clock = FakeClock::new();
    let (srv, _) = start(&clock, LOOSE);
    let ip = "10.1.1.1";

    let r = get_as(&srv, "/api/item", ip).await;
    assert_eq!((r.code(), r.text()), (200, "api item"));
    assert_eq!(get_as(&srv, "/api/item", ip).await.code(), 429);
    // Same path at the root, and another handler in the same scope: global rules only.
    for _ in 0..3 {
        let r = get_as(&srv, "/item", ip).await;
        assert_eq!((r.code(), r.text()), (200, "root item"));
        let r = get_as(&srv, "/api/other", ip).await;
        assert_eq!((r.code(), r.text()), (200, "api other"));
        assert_eq!(
            r.header("ratelimit-policy"),
            Some(r#""1000/1m";q=1000;w=60"#)
        );
    }
    assert_eq!(get_as(&srv, "/api/item", ip).await.code(), 429);
}

#[actix_web::test]
async fn a_renamed_resource_gets_its_rules() {
    let clock = FakeClock::new();
    let (srv, _) = start(&clock, LOOSE);
    let ip = "10.1.2.1";

    let r = get_as(&srv, "/x", ip).await;
    assert_eq!((r.code(), r.text()), (200, "/x"));
    assert_eq!(
        r.header("ratelimit-policy"),
        Some(r#""1000/1m";q=1000;w=60, "1/1m";q=1;w=60"#)
    );
    assert_eq!(get_as(&srv, "/x", ip).await.code(), 429);
    assert_eq!(codes_as(&srv, "/plain", ip, 3).await, [200, 200, 200]);
    clock.advance(secs(60));
    assert_eq!(codes_as(&srv, "/x", ip, 2).await, [200, 429]);
}

#[actix_web::test]
async fn handlers_with_the_same_name_in_two_modules_count_separately() {
    let clock = FakeClock::new();
    let (srv, _) = start(&clock, LOOSE);
    let ip = "10.1.3.1";

    // Both allow 1 a minute; exhausting one leaves the other untouched.
    let r = get_as(&srv, "/first/handler", ip).await;
    assert_eq!((r.code(), r.text()), (200, "first"));
    assert_eq!(get_as(&srv, "/first/handler", ip).await.code(), 429);
    let r = get_as(&srv, "/second/handler", ip).await;
    assert_eq!((r.code(), r.text()), (200, "second"));
    assert_eq!(get_as(&srv, "/second/handler", ip).await.code(), 429);
}

#[actix_web::test]
async fn bypass_neither_counts_nor_checks_bans() {
    let clock = FakeClock::new();
    let (srv, fg) = start(&clock, Rule::new(2, secs(60)));
    let ip = "10.1.4.1";

    // Many bypassed requests: all served, none counted.
    for _ in 0..5 {
        let r = get_as(&srv, "/health", ip).await;
        assert_eq!((r.code(), r.text()), (200, "healthy"));
    }
    assert_eq!(codes_as(&srv, "/plain", ip, 3).await, [200, 200, 429]);
    // Global quota spent: the bypassed route still serves.
    assert_eq!(codes_as(&srv, "/health", ip, 3).await, [200, 200, 200]);
    let status = fg
        .gatekeeper()
        .status(ip.parse::<std::net::IpAddr>().unwrap())
        .await
        .unwrap();
    let used: u32 = status.windows.iter().map(|w| w.used).sum();
    assert_eq!(used, 2, "only the /plain requests are counted: {status:?}");

    // A banned client is refused everywhere but on the bypassed route.
    let banned = "10.1.4.2";
    fg.gatekeeper()
        .ban(banned.parse::<std::net::IpAddr>().unwrap(), secs(600))
        .await
        .unwrap();
    assert_eq!(get_as(&srv, "/plain", banned).await.code(), 403);
    assert_eq!(get_as(&srv, "/standalone", banned).await.code(), 403);
    assert_eq!(get_as(&srv, "/res/specific", banned).await.code(), 403);
    assert_eq!(codes_as(&srv, "/health", banned, 3).await, [200, 200, 200]);
    assert_eq!(
        codes_as(&srv, "/res/bypass", banned, 3).await,
        [200, 200, 200]
    );
}

#[actix_web::test]
async fn standalone_routes_ignore_global_rules_and_consume_no_global_quota() {
    let clock = FakeClock::new();
    let (srv, fg) = start(&clock, Rule::new(2, secs(60)));

    // Standalone first: its 3 allowed exceed the global 2, and leave the global quota whole.
    let ip = "10.1.5.1";
    let r = get_as(&srv, "/standalone", ip).await;
    assert_eq!(r.header("ratelimit-policy"), Some(r#""3/1m";q=3;w=60"#));
    assert_eq!(codes_as(&srv, "/standalone", ip, 3).await, [200, 200, 429]);
    assert_eq!(codes_as(&srv, "/plain", ip, 3).await, [200, 200, 429]);

    // Global quota spent first: the standalone route still allows its own 3.
    let ip = "10.1.5.2";
    assert_eq!(codes_as(&srv, "/plain", ip, 3).await, [200, 200, 429]);
    assert_eq!(
        codes_as(&srv, "/standalone", ip, 4).await,
        expect_codes(3, 1, 429)
    );

    // Bans still apply on standalone routes.
    let banned = "10.1.5.3";
    fg.gatekeeper()
        .blacklist(banned.parse::<std::net::IpAddr>().unwrap())
        .await
        .unwrap();
    assert_eq!(get_as(&srv, "/standalone", banned).await.code(), 403);
}

#[actix_web::test]
async fn global_and_specific_both_apply_and_a_specific_refusal_consumes_no_global_quota() {
    let clock = FakeClock::new();
    let (srv, fg) = start(&clock, Rule::new(3, secs(60)));

    // Specific rule refuses /gs after one; the four refusals take no global quota.
    let ip = "10.1.6.1";
    let r = get_as(&srv, "/gs", ip).await;
    assert_eq!(r.code(), 200);
    assert_eq!(
        r.header("ratelimit-policy"),
        Some(r#""3/1m";q=3;w=60, "1/1m";q=1;w=60"#)
    );
    for _ in 0..4 {
        let r = get_as(&srv, "/gs", ip).await;
        assert_eq!(r.code(), 429);
        assert_eq!(r.json()["limit"], "1/1m");
    }
    assert_eq!(codes_as(&srv, "/plain", ip, 3).await, [200, 200, 429]);

    // The global rule applies on /gs too, and its refusal takes no specific quota.
    let ip = "10.1.6.2";
    assert_eq!(codes_as(&srv, "/plain", ip, 3).await, [200, 200, 200]);
    for _ in 0..3 {
        let r = get_as(&srv, "/gs", ip).await;
        assert_eq!(r.code(), 429);
        assert_eq!(r.json()["limit"], "3/1m");
    }
    let status = fg
        .gatekeeper()
        .status(ip.parse::<std::net::IpAddr>().unwrap())
        .await
        .unwrap();
    let specific_used: u32 = status
        .windows
        .iter()
        .filter(|w| w.scope != "global")
        .map(|w| w.used)
        .sum();
    let global_used: u32 = status
        .windows
        .iter()
        .filter(|w| w.scope == "global")
        .map(|w| w.used)
        .sum();
    assert_eq!((global_used, specific_used), (3, 0), "{status:?}");
}

#[actix_web::test]
async fn route_rules_attach_rules_without_macros() {
    let clock = FakeClock::new();
    let (srv, _) = start(&clock, Rule::new(2, secs(60)));
    let ip = "10.1.7.1";

    // Specific on top of the global rules.
    let r = get_as(&srv, "/res/specific", ip).await;
    assert_eq!(r.code(), 200);
    assert_eq!(
        r.header("ratelimit-policy"),
        Some(r#""2/1m";q=2;w=60, "1/1m";q=1;w=60"#)
    );
    assert_eq!(get_as(&srv, "/res/specific", ip).await.code(), 429);
    // Standalone: only its own 3, no global quota taken.
    assert_eq!(
        codes_as(&srv, "/res/standalone", ip, 4).await,
        expect_codes(3, 1, 429)
    );
    // Bypass: nothing counted.
    assert_eq!(codes_as(&srv, "/res/bypass", ip, 5).await, [200; 5]);
    // The global quota holds the single /res/specific request.
    assert_eq!(codes_as(&srv, "/plain", ip, 2).await, [200, 429]);
    // A resource inside a scope.
    let ip = "10.1.7.2";
    assert_eq!(
        codes_as(&srv, "/res-scope/deep", ip, 3).await,
        [200, 200, 429]
    );
}

#[actix_web::test]
async fn a_refused_request_runs_no_extractor_and_no_handler() {
    let clock = FakeClock::new();
    let counters = Arc::new(Counters::default());
    let (srv, fg) = start_with_counters(&clock, Rule::new(4, secs(60)), counters.clone());
    let ip = "10.1.8.1";

    // #[specific] 2/1m: 2 of 5 allowed.
    let mut allowed = 0;
    for _ in 0..5 {
        let r = send_body(from_ip(srv.post("/counted"), ip), "payload").await;
        allowed += usize::from(r.code() == 200);
    }
    assert_eq!(allowed, 2);
    assert_eq!(counters.get(), (2, 2));

    // RouteRules 1/1m: 1 of 3 allowed (global: 3 of 4 used).
    for _ in 0..3 {
        let r = send_body(from_ip(srv.post("/res/counted"), ip), "payload").await;
        allowed += usize::from(r.code() == 200);
    }
    assert_eq!(allowed, 3);
    assert_eq!(counters.get(), (3, 3));

    // Global only: 1 of 3 allowed.
    for _ in 0..3 {
        let r = send_body(from_ip(srv.post("/counted-global"), ip), "payload").await;
        allowed += usize::from(r.code() == 200);
    }
    assert_eq!(allowed, 4);
    assert_eq!(counters.get(), (4, 4));

    // Banned: refused everywhere, nothing runs.
    let banned = "10.1.8.2";
    fg.gatekeeper()
        .ban(banned.parse::<std::net::IpAddr>().unwrap(), secs(60))
        .await
        .unwrap();
    for path in ["/counted", "/res/counted", "/counted-global"] {
        let r = send_body(from_ip(srv.post(path), banned), "payload").await;
        assert_eq!(r.code(), 403);
    }
    assert_eq!(counters.get(), (4, 4));

    // When the window has passed, requests run the extractor and handler again.
    clock.advance(secs(60));
    let r = send_body(from_ip(srv.post("/counted"), ip), "payload").await;
    assert_eq!((r.code(), r.text()), (200, "counted"));
    assert_eq!(counters.get(), (5, 5));
}

//! Response-based counting over real HTTP, on the memory, SQLite and Redis stores: a route's
//! rules count only the responses `count = ..` names (a failed login's 401s), the decision
//! still comes before the handler, two requests in flight can never both pass the last unit,
//! a request whose response never comes is given back, and a mistaken `count` stops the app
//! from starting.

use std::future::Future;
use std::sync::{Arc, Mutex};

use actix_web::dev::{Service, ServiceResponse};
use actix_web::test::{self, TestRequest};
use actix_web::{get, post, web, App, HttpRequest, HttpResponse};
use floodgate::{
    rate_limited, specific, CountWhen, FakeClock, Floodgate, GateKeeper, RouteRules, Rule,
};
use floodgate_tests::{
    app_starts, from_ip, on_every_store, secs, send, server_config, Resp, IP_HEADER,
};
use futures_util::future::{select, Either};
use futures_util::FutureExt;
use tokio::sync::Notify;

/// The client of every login handler run, to prove that a refused request never reaches the
/// handler (by client: the tests of this binary run in parallel).
static LOGIN_RUNS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// How many times the login handler ran for `client`.
fn login_runs(client: &str) -> usize {
    LOGIN_RUNS
        .lock()
        .unwrap()
        .iter()
        .filter(|c| *c == client)
        .count()
}

/// 401 unless the request carries the right password.
fn login_response(req: &HttpRequest) -> HttpResponse {
    let client = req.headers().get(IP_HEADER).and_then(|v| v.to_str().ok());
    LOGIN_RUNS
        .lock()
        .unwrap()
        .push(client.unwrap_or_default().to_owned());
    match req.headers().get("x-password").map(|v| v.as_bytes()) {
        Some(b"right") => HttpResponse::Ok().body("welcome"),
        _ => HttpResponse::Unauthorized().body("wrong password"),
    }
}

// Three failed logins per 15 minutes; successful logins are never counted.
#[specific(rate_limit_rules = [(3, "15m")], standalone, count = [401, 403])]
#[post("/login")]
async fn login(req: HttpRequest) -> HttpResponse {
    login_response(&req)
}

// A policy of 2 per minute counting client errors only.
#[rate_limited(amount = 2, time_window = "1m", block_limit = 100, count = "4xx")]
#[get("/lookup")]
async fn lookup(req: HttpRequest) -> HttpResponse {
    if req.query_string() == "missing" {
        HttpResponse::NotFound().body("no such thing")
    } else {
        HttpResponse::Ok().body("found")
    }
}

/// Counts the responses the handler marks as a failure.
fn marked_failed(res: &ServiceResponse) -> bool {
    res.headers().contains_key("x-login-failed")
}

#[specific(rate_limit_rules = [(2, "1m")], standalone, count = marked_failed)]
#[post("/sso")]
async fn sso(req: HttpRequest) -> HttpResponse {
    if req.query_string() == "fail" {
        HttpResponse::Ok()
            .insert_header(("x-login-failed", "1"))
            .body("sso failed, body intact")
    } else {
        HttpResponse::Ok().body("sso ok")
    }
}

async fn attempt(srv: &actix_test::TestServer, path: &str, ip: &str, password: &str) -> u16 {
    let req = from_ip(srv.post(path), ip).insert_header(("x-password", password));
    send(req).await.code()
}

fn app(
    fg: &Floodgate,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .wrap(fg.clone())
        .service(login)
        .service(lookup)
        .service(sso)
        .service(
            web::resource("/built")
                .wrap(
                    RouteRules::new("built")
                        .specific([Rule::new(2, secs(60))])
                        .standalone()
                        .count_when(CountWhen::when(|res| res.status().is_server_error())),
                )
                .route(web::get().to(|req: HttpRequest| async move {
                    if req.query_string() == "boom" {
                        HttpResponse::ServiceUnavailable().finish()
                    } else {
                        HttpResponse::Ok().finish()
                    }
                })),
        )
}

#[actix_web::test]
async fn rules_count_only_the_responses_they_name_on_every_store() {
    for (store, base) in on_every_store("response-count").await {
        let clock = FakeClock::new();
        let fg = base
            .clock(clock.clone())
            .ip_header(IP_HEADER)
            .rate_limit_rules([Rule::new(1_000, secs(60))]);
        let f = fg.clone();
        let srv = actix_test::start_with(server_config(), move || app(&f));

        // Successful logins are not counted: many pass.
        for n in 0..10 {
            assert_eq!(
                attempt(&srv, "/login", "10.9.0.1", "right").await,
                200,
                "{store}: success {n}"
            );
        }
        // Three failures fill the rule; the fourth attempt, even with the right password,
        // is refused before the handler runs.
        for n in 0..3 {
            assert_eq!(
                attempt(&srv, "/login", "10.9.0.1", "guess").await,
                401,
                "{store}: failure {n}"
            );
        }
        let runs = login_runs("10.9.0.1");
        assert_eq!(
            attempt(&srv, "/login", "10.9.0.1", "right").await,
            429,
            "{store}"
        );
        assert_eq!(
            login_runs("10.9.0.1"),
            runs,
            "{store}: a refused login never reaches the handler"
        );
        // Another client is not affected; after the window the client may try again.
        assert_eq!(
            attempt(&srv, "/login", "10.9.0.2", "guess").await,
            401,
            "{store}"
        );
        clock.advance(secs(15 * 60));
        assert_eq!(
            attempt(&srv, "/login", "10.9.0.1", "right").await,
            200,
            "{store}"
        );

        // A policy counting 4xx: found pages pass, two misses block.
        for _ in 0..5 {
            let res = send(from_ip(srv.get("/lookup"), "10.9.0.3")).await;
            assert_eq!(res.code(), 200, "{store}");
        }
        for _ in 0..2 {
            let res = send(from_ip(srv.get("/lookup?missing"), "10.9.0.3")).await;
            assert_eq!(res.code(), 404, "{store}");
        }
        let res = send(from_ip(srv.get("/lookup"), "10.9.0.3")).await;
        assert_eq!(res.code(), 429, "{store}: two 404s used the policy's quota");

        // A function of the response: it sees the headers; the body reaches the client.
        for _ in 0..4 {
            let res = send(from_ip(srv.post("/sso"), "10.9.0.4")).await;
            assert_eq!(res.text(), "sso ok", "{store}");
        }
        for _ in 0..2 {
            let res = send(from_ip(srv.post("/sso?fail"), "10.9.0.4")).await;
            assert_eq!(
                (res.code(), res.text()),
                (200, "sso failed, body intact"),
                "{store}"
            );
        }
        let res = send(from_ip(srv.post("/sso"), "10.9.0.4")).await;
        assert_eq!(res.code(), 429, "{store}");

        // RouteRules::count_when with a closure: 5xx only.
        for _ in 0..3 {
            let res = send(from_ip(srv.get("/built"), "10.9.0.5")).await;
            assert_eq!(res.code(), 200, "{store}");
        }
        for _ in 0..2 {
            let res = send(from_ip(srv.get("/built?boom"), "10.9.0.5")).await;
            assert_eq!(res.code(), 503, "{store}");
        }
        let res = send(from_ip(srv.get("/built"), "10.9.0.5")).await;
        assert_eq!(res.code(), 429, "{store}");
    }
}

/// Signals between the test and a handler that waits to answer.
#[derive(Default)]
struct Gates {
    entered: Notify,
    answer: Notify,
}

/// Waits until the handler holding `/slow?hold` has been entered; fails (rather than waiting
/// forever) when the request is answered first.
async fn until_entered(gates: &Gates, request: &mut actix_web::rt::task::JoinHandle<Resp>) {
    let entered = std::pin::pin!(gates.entered.notified());
    if let Either::Right((answered, _)) = select(entered, request).await {
        panic!(
            "answered {} before its handler was entered",
            answered.expect("request task").code()
        );
    }
}

#[actix_web::test]
async fn two_requests_in_flight_never_both_pass_the_last_unit() {
    for (store, base) in on_every_store("response-count-race").await {
        let gates = Arc::new(Gates::default());
        let fg = base.clock(FakeClock::new()).ip_header(IP_HEADER);
        let (f, g) = (fg.clone(), gates.clone());
        let srv = actix_test::start_with(server_config(), move || {
            let g = g.clone();
            App::new().wrap(f.clone()).service(
                web::resource("/slow")
                    .wrap(
                        RouteRules::new("slow")
                            .specific([Rule::new(1, secs(60))])
                            .standalone()
                            .count_when(CountWhen::Class(4)),
                    )
                    .route(web::get().to(move |req: HttpRequest| {
                        let g = g.clone();
                        async move {
                            if req.query_string() == "hold" {
                                g.entered.notify_one();
                                g.answer.notified().await;
                            }
                            HttpResponse::Ok().finish()
                        }
                    })),
            )
        });
        let mut first = actix_web::rt::spawn(send(from_ip(srv.get("/slow?hold"), "10.9.1.1")));
        until_entered(&gates, &mut first).await;
        // The first request holds the only unit while its response is unknown.
        let second = send(from_ip(srv.get("/slow"), "10.9.1.1")).await;
        assert_eq!(second.code(), 429, "{store}: the unit is reserved");
        gates.answer.notify_one();
        assert_eq!(first.await.unwrap().code(), 200, "{store}");
        // Its 200 is not counted: the unit is free again, and again after this one.
        for n in 0..3 {
            let next = send(from_ip(srv.get("/slow"), "10.9.1.1")).await;
            assert_eq!(next.code(), 200, "{store}: released ({n})");
        }
    }
}

async fn count_of(gk: &GateKeeper, ip: &str) -> u32 {
    let ip: std::net::IpAddr = ip.parse().unwrap();
    let status = gk.status(ip).await.expect("status");
    status.windows.iter().map(|w| w.used).sum()
}

#[actix_web::test]
async fn a_request_whose_response_never_comes_is_given_back() {
    // The service-level path of a client that went away or a handler that panicked: the
    // response future is dropped before the response.
    let clock = FakeClock::new();
    let fg = Floodgate::new().clock(clock.clone()).ip_header(IP_HEADER);
    let gk = fg.gatekeeper();
    let app = test::init_service(
        App::new().wrap(fg).service(
            web::resource("/hang")
                .wrap(
                    RouteRules::new("hang")
                        .specific([Rule::new(1, secs(60))])
                        .standalone()
                        .count_when([401]),
                )
                .route(web::get().to(|req: HttpRequest| async move {
                    if req.query_string() == "panic" {
                        panic!("the handler panics");
                    }
                    std::future::pending::<HttpResponse>().await
                })),
        ),
    )
    .await;
    let req = || {
        TestRequest::get()
            .uri("/hang")
            .insert_header((IP_HEADER, "10.9.2.1"))
    };
    let mut fut = Box::pin(app.call(req().to_request()));
    let once = std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
    assert!(once.is_pending(), "the handler waits");
    assert_eq!(
        count_of(&gk, "10.9.2.1").await,
        1,
        "counted while in flight"
    );
    drop(fut);
    assert_eq!(
        count_of(&gk, "10.9.2.1").await,
        0,
        "given back when dropped"
    );

    let panicked = std::panic::AssertUnwindSafe(app.call(req().uri("/hang?panic").to_request()))
        .catch_unwind()
        .await;
    assert!(panicked.is_err(), "the handler panicked");
    assert_eq!(
        count_of(&gk, "10.9.2.1").await,
        0,
        "given back after a panic"
    );
}

#[actix_web::test]
async fn a_mistaken_count_stops_the_app_from_starting() {
    let route = |rules: RouteRules| {
        App::new().wrap(Floodgate::new()).service(
            web::resource("/r")
                .wrap(rules)
                .route(web::get().to(HttpResponse::Ok)),
        )
    };
    let own = RouteRules::new("r").specific([Rule::new(5, secs(60))]);
    assert!(app_starts(route(own.clone().count_when(CountWhen::Class(4)))).await);
    assert!(!app_starts(route(own.clone().count_when(CountWhen::Class(9)))).await);
    assert!(!app_starts(route(own.clone().count_when(CountWhen::statuses([])))).await);
    assert!(!app_starts(route(own.count_when([42]))).await);
    // Nothing of its own to count by response: the global rules count every request.
    assert!(!app_starts(route(RouteRules::new("r").count_when([401]))).await);
    assert!("4xx".parse::<CountWhen>().is_ok());
    assert!("4XX".parse::<CountWhen>().is_ok());
    assert!("401".parse::<CountWhen>().is_ok());
    for bad in ["42x", "6xx", "", "4xxx", "99", "1000"] {
        let err = bad.parse::<CountWhen>().unwrap_err().to_string();
        assert!(err.contains("count"), "{bad}: {err}");
    }
}

/// A middleware between `Floodgate` and the routes that calls them only when polled (as
/// `from_fn`, session and auth middleware do): routing is deferred past `Floodgate`'s call.
async fn deferring(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    next.call(req).await
}

#[actix_web::test]
async fn counting_by_response_holds_behind_a_middleware_that_defers_routing() {
    for (store, base) in on_every_store("response-count-deferred").await {
        let fg = base.clock(FakeClock::new()).ip_header(IP_HEADER);
        let f = fg.clone();
        let srv = actix_test::start_with(server_config(), move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(deferring))
                .wrap(f.clone())
                .service(login)
        });
        for _ in 0..5 {
            assert_eq!(
                attempt(&srv, "/login", "10.9.3.1", "right").await,
                200,
                "{store}"
            );
        }
        for _ in 0..3 {
            assert_eq!(
                attempt(&srv, "/login", "10.9.3.1", "guess").await,
                401,
                "{store}"
            );
        }
        let runs = login_runs("10.9.3.1");
        assert_eq!(
            attempt(&srv, "/login", "10.9.3.1", "right").await,
            429,
            "{store}: three failures, behind the deferring middleware too"
        );
        assert_eq!(login_runs("10.9.3.1"), runs, "{store}");
    }
}

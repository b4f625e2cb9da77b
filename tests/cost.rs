//! Request cost over real HTTP, on the memory, SQLite and Redis stores: a request of cost N
//! uses N units of every limit (global rules, a route's rules, its policy), the RateLimit
//! fields count units, a cost function's answer is used per request (0 counts 1, a panic
//! counts 1, more than a limit is refused), and a constant cost of 0 or above a limit stops
//! the app from starting.

use actix_web::{get, web, App, HttpRequest, HttpResponse};
use floodgate::{rate_limited, specific, FakeClock, Floodgate, RouteRules, Rule};
use floodgate_tests::{
    app_starts, codes_as, from_ip, get_as, on_every_store, secs, send, server_config, IP_HEADER,
};

#[specific(rate_limit_rules = [(100, "1m")], standalone, cost = 5)]
#[get("/heavy")]
async fn heavy() -> &'static str {
    "heavy"
}

/// The cost the client asks for in `x-cost` (as an app might weigh a batch by its size).
fn asked(req: &HttpRequest) -> u32 {
    let cost = req.headers().get("x-cost").and_then(|v| v.to_str().ok());
    match cost {
        Some("panic") => panic!("a cost function that panics"),
        Some(n) => n.parse().unwrap_or(1),
        None => 1,
    }
}

#[rate_limited(amount = 10, time_window = "1m", block_limit = 100, cost = asked)]
#[get("/batch")]
async fn batch() -> &'static str {
    "batch"
}

#[specific(rate_limit_rules = [(30, "1m")], cost = 8)]
#[get("/global_too")]
async fn global_too() -> &'static str {
    "global too"
}

async fn with_cost(srv: &actix_test::TestServer, path: &str, ip: &str, cost: &str) -> u16 {
    let req = from_ip(srv.get(path), ip).insert_header(("x-cost", cost));
    send(req).await.code()
}

#[actix_web::test]
async fn a_request_uses_its_cost_in_every_limit_on_every_store() {
    for (store, base) in on_every_store("cost-walk").await {
        let clock = FakeClock::new();
        let fg = base
            .clock(clock.clone())
            .ip_header(IP_HEADER)
            .rate_limit_rules([Rule::new(20, secs(60))]);
        let app = fg.clone();
        let srv = actix_test::start_with(server_config(), move || {
            App::new()
                .wrap(app.clone())
                .service(heavy)
                .service(batch)
                .service(global_too)
                .service(
                    web::resource("/built")
                        .wrap(RouteRules::new("built").cost(10))
                        .route(web::get().to(HttpResponse::Ok)),
                )
                .service(
                    web::resource("/built_fn")
                        .wrap(
                            RouteRules::new("built_fn")
                                .specific([Rule::new(6, secs(60))])
                                .standalone()
                                .cost_fn(|req| if req.query_string() == "big" { 4 } else { 1 }),
                        )
                        .route(web::get().to(HttpResponse::Ok)),
                )
        });

        // 100 per minute at cost 5: twenty pass, and the fields count units.
        let first = get_as(&srv, "/heavy", "10.1.0.1").await;
        assert_eq!(first.code(), 200, "{store}");
        let field = first.header("ratelimit").unwrap_or_default().to_owned();
        assert!(field.contains(";r=95;"), "{store}: {field}");
        let mut codes = codes_as(&srv, "/heavy", "10.1.0.1", 20).await;
        assert_eq!(codes.pop(), Some(429), "{store}");
        assert_eq!(codes, [200; 19], "{store}");
        clock.advance(secs(60));
        assert_eq!(
            get_as(&srv, "/heavy", "10.1.0.1").await.code(),
            200,
            "{store}"
        );

        // A policy of 10 per minute, each request weighed by the function.
        assert_eq!(
            with_cost(&srv, "/batch", "10.1.0.2", "4").await,
            200,
            "{store}"
        );
        assert_eq!(
            with_cost(&srv, "/batch", "10.1.0.2", "4").await,
            200,
            "{store}"
        );
        assert_eq!(
            with_cost(&srv, "/batch", "10.1.0.2", "4").await,
            429,
            "{store}: 8 + 4 > 10"
        );
        // Costs the function gets wrong are never free and never crash: 0 and a panic count 1.
        assert_eq!(
            with_cost(&srv, "/batch", "10.1.0.3", "0").await,
            200,
            "{store}"
        );
        assert_eq!(
            with_cost(&srv, "/batch", "10.1.0.3", "panic").await,
            200,
            "{store}"
        );
        assert_eq!(
            with_cost(&srv, "/batch", "10.1.0.3", "8").await,
            200,
            "{store}: 2 used"
        );
        assert_eq!(
            with_cost(&srv, "/batch", "10.1.0.3", "1").await,
            429,
            "{store}: 10 used"
        );
        // More than the limit can never pass: refused, as any request over the quota (for a
        // policy, that starts a block).
        assert_eq!(
            with_cost(&srv, "/batch", "10.1.0.7", "11").await,
            429,
            "{store}"
        );
        assert_eq!(
            with_cost(&srv, "/batch", "10.1.0.7", "1").await,
            429,
            "{store}: blocked"
        );
        assert_eq!(
            get_as(&srv, "/heavy", "10.1.0.7").await.code(),
            200,
            "{store}"
        );

        // The global rule (20 per minute) counts the cost too: two of cost 8, then 24 > 20.
        assert_eq!(
            codes_as(&srv, "/global_too", "10.1.0.4", 2).await,
            [200, 200],
            "{store}"
        );
        assert_eq!(
            get_as(&srv, "/global_too", "10.1.0.4").await.code(),
            429,
            "{store}"
        );
        assert_eq!(
            codes_as(&srv, "/built", "10.1.0.5", 3).await,
            [200, 200, 429],
            "{store}"
        );
        let big = |ip| send(from_ip(srv.get("/built_fn?big"), ip));
        assert_eq!(big("10.1.0.6").await.code(), 200, "{store}");
        assert_eq!(
            codes_as(&srv, "/built_fn", "10.1.0.6", 3).await,
            [200, 200, 429],
            "{store}"
        );
    }
}

#[actix_web::test]
async fn a_constant_cost_of_zero_or_above_a_limit_stops_the_app() {
    let fg = Floodgate::new().rate_limit_rules([Rule::new(10, secs(60))]);
    let route = |rules: RouteRules| {
        App::new().wrap(fg.clone()).service(
            web::resource("/r")
                .wrap(rules)
                .route(web::get().to(HttpResponse::Ok)),
        )
    };
    assert!(app_starts(route(RouteRules::new("r").cost(10))).await);
    assert!(!app_starts(route(RouteRules::new("r").cost(0))).await);
    assert!(
        !app_starts(route(RouteRules::new("r").cost(11))).await,
        "above the global 10/1m"
    );
    let own = RouteRules::new("r")
        .specific([Rule::new(20, secs(60))])
        .standalone();
    assert!(app_starts(route(own.clone().cost(20))).await);
    assert!(!app_starts(route(own.cost(21))).await);
    let err = Floodgate::new().validate();
    assert!(err.is_ok());
}

//! One state for all workers: a client's requests are counted together whichever worker and
//! connection serves them, and the count is exact under concurrency.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{get, web, App};
use floodgate::{BanRule, FakeClock, Floodgate, GateKeeper, Rule};
use floodgate_tests::{fresh_client, from_ip, secs, send, server_config, IP_HEADER};
use futures_util::future::join_all;

/// Answers with the id of the worker thread that ran it.
#[get("/limited")]
async fn limited(hits: web::Data<AtomicUsize>) -> String {
    hits.fetch_add(1, Ordering::SeqCst);
    format!("{:?}", std::thread::current().id())
}

#[get("/report")]
async fn report(req: actix_web::HttpRequest, gk: GateKeeper) -> String {
    gk.report(&req).await;
    format!("{:?}", std::thread::current().id())
}

fn floodgate(clock: &FakeClock, rule: Rule) -> Floodgate {
    Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .rate_limit_rules([rule])
        .ban_rule(BanRule::new(3, secs(10), secs(600)))
}

fn start(fg: Floodgate, hits: Arc<AtomicUsize>) -> actix_test::TestServer {
    let hits = web::Data::from(hits);
    actix_test::start_with(server_config(), move || {
        App::new()
            .wrap(fg.clone())
            .app_data(hits.clone())
            .service(limited)
            .service(report)
    })
}

#[actix_web::test]
async fn one_clients_requests_over_fresh_connections_on_two_workers_are_counted_together() {
    let clock = FakeClock::new();
    let hits = Arc::new(AtomicUsize::new(0));
    let srv = start(floodgate(&clock, Rule::new(5, secs(60))), hits.clone());

    let mut codes = Vec::new();
    let mut workers = HashSet::new();
    for _ in 0..10 {
        // A new client each time: a new connection, which the server hands to its workers in
        // turn.
        let res = send(from_ip(fresh_client().get(srv.url("/limited")), "10.0.0.1")).await;
        if res.code() == 200 {
            workers.insert(res.text().to_owned());
        }
        codes.push(res.code());
    }
    assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429, 429, 429, 429]);
    assert_eq!(
        workers.len(),
        2,
        "the 5 allowed requests should have been served by both workers: {workers:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 5);

    // Another client has its own quota, on every worker.
    for _ in 0..5 {
        let res = send(from_ip(fresh_client().get(srv.url("/limited")), "10.0.0.2")).await;
        assert_eq!(res.code(), 200);
    }
    let res = send(from_ip(fresh_client().get(srv.url("/limited")), "10.0.0.2")).await;
    assert_eq!(res.code(), 429);
}

#[actix_web::test]
async fn a_ban_reported_through_one_worker_is_in_force_on_every_worker() {
    let clock = FakeClock::new();
    let srv = start(
        floodgate(&clock, Rule::new(1000, secs(60))),
        Arc::new(AtomicUsize::new(0)),
    );
    // Three reports, each on a new connection: they alternate between the workers.
    let mut workers = HashSet::new();
    for _ in 0..3 {
        let res = send(from_ip(fresh_client().get(srv.url("/report")), "10.0.0.3")).await;
        assert_eq!(res.code(), 200);
        workers.insert(res.text().to_owned());
    }
    assert_eq!(
        workers.len(),
        2,
        "the reports should have reached both workers"
    );
    // Four new connections, two per worker: the ban is in force on each.
    for _ in 0..4 {
        let res = send(from_ip(fresh_client().get(srv.url("/limited")), "10.0.0.3")).await;
        assert_eq!(res.code(), 403, "banned client served on some worker");
    }
}

#[actix_web::test]
async fn two_hundred_concurrent_requests_against_a_limit_of_fifty_give_exactly_fifty() {
    let clock = FakeClock::new();
    let hits = Arc::new(AtomicUsize::new(0));
    let srv = start(floodgate(&clock, Rule::new(50, secs(60))), hits.clone());

    // No connection limit: all 200 requests are in flight at once, over many connections
    // spread across both workers.
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(0))
        .timeout(secs(30))
        .finish();
    let url = srv.url("/limited");
    let responses = join_all((0..200).map(|_| send(from_ip(client.get(&url), "10.0.0.4")))).await;

    let ok = responses.iter().filter(|r| r.code() == 200).count();
    let refused = responses.iter().filter(|r| r.code() == 429).count();
    assert_eq!((ok, refused), (50, 150));
    let workers: HashSet<_> = responses
        .iter()
        .filter(|r| r.code() == 200)
        .map(|r| r.text().to_owned())
        .collect();
    assert_eq!(workers.len(), 2, "both workers should have served requests");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        50,
        "handler runs = allowed requests"
    );
    // Time does not move: every refusal waits for the whole window.
    for r in responses.iter().filter(|r| r.code() == 429) {
        assert_eq!(r.header("retry-after"), Some("60"));
    }

    // The window slides on the fake clock only: at +59.999 s still refused, at +60 s allowed.
    clock.advance(secs(60) - floodgate_tests::millis(1));
    assert_eq!(
        send(from_ip(client.get(&url), "10.0.0.4")).await.code(),
        429
    );
    clock.advance(floodgate_tests::millis(1));
    let again = join_all((0..60).map(|_| send(from_ip(client.get(&url), "10.0.0.4")))).await;
    assert_eq!(again.iter().filter(|r| r.code() == 200).count(), 50);
    assert_eq!(again.iter().filter(|r| r.code() == 429).count(), 10);
}

//! A rule of a large count (it counts in a bounded window of 60 sub-windows) over real HTTP,
//! at the sub-window edges a client would aim at: it never lets more than its count through
//! within its window, and refuses at most one sub-window longer than an exact log would.

use std::net::IpAddr;

use actix_web::{get, App, HttpResponse};
use floodgate::{FakeClock, Floodgate, Rule, Timestamp};
use floodgate_tests::{codes_as, expect_codes, get_as, millis, secs, server_config};

const T0: u64 = 1_700_000_000_000; // a multiple of the sub-window (1 s)

#[get("/ping")]
async fn ping() -> HttpResponse {
    HttpResponse::Ok().body("pong")
}

fn app(clock: &FakeClock) -> (actix_test::TestServer, Floodgate) {
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header("x-client-ip")
        .rate_limit_rules([Rule::new(200, secs(60))]);
    let app_fg = fg.clone();
    let srv = actix_test::start_with(server_config(), move || {
        App::new().wrap(app_fg.clone()).service(ping)
    });
    (srv, fg)
}

#[actix_web::test]
async fn a_burst_at_the_end_of_a_sub_window_gets_no_more_than_the_count() {
    let clock = FakeClock::starting_at(Timestamp::from_millis(T0 + 999));
    let (srv, fg) = app(&clock);
    // 200 in the last millisecond of a sub-window, then more in the next one.
    assert_eq!(
        codes_as(&srv, "/ping", "9.9.9.9", 201).await,
        expect_codes(200, 1, 429)
    );
    clock.advance(millis(1));
    let r = get_as(&srv, "/ping", "9.9.9.9").await;
    assert_eq!(r.code(), 429);
    assert_eq!(r.header("retry-after"), Some("60"));
    let status = fg
        .gatekeeper()
        .status("9.9.9.9".parse::<IpAddr>().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (status.windows[0].used, status.windows[0].remaining),
        (200, 0)
    );
    // The burst leaves exactly when an exact log would let the next one in: at T0 + 60.999 s.
    clock.set(Timestamp::from_millis(T0 + 60_998));
    assert_eq!(get_as(&srv, "/ping", "9.9.9.9").await.code(), 429);
    clock.advance(millis(1));
    assert_eq!(
        codes_as(&srv, "/ping", "9.9.9.9", 201).await,
        expect_codes(200, 1, 429)
    );
}

#[actix_web::test]
async fn a_burst_at_the_start_of_a_sub_window_waits_at_most_one_sub_window_more() {
    let clock = FakeClock::starting_at(Timestamp::from_millis(T0 + 1_000));
    let (srv, _fg) = app(&clock);
    assert_eq!(
        codes_as(&srv, "/ping", "8.8.8.8", 201).await,
        expect_codes(200, 1, 429)
    );
    // An exact log would admit again at T0 + 61 s; the window counts the burst's whole
    // sub-window, so it admits 999 ms later (less than one sub-window, 1/60 of the window).
    clock.set(Timestamp::from_millis(T0 + 61_000));
    let r = get_as(&srv, "/ping", "8.8.8.8").await;
    assert_eq!((r.code(), r.header("retry-after")), (429, Some("1")));
    clock.set(Timestamp::from_millis(T0 + 61_998));
    assert_eq!(get_as(&srv, "/ping", "8.8.8.8").await.code(), 429);
    clock.advance(millis(1));
    assert_eq!(get_as(&srv, "/ping", "8.8.8.8").await.code(), 200);
}

//! Probe bans (request targeting) over real HTTP: scanner paths ban at once or count as
//! reports, the app's own routes never ban, and a 404 counts as a report only when enabled.

mod targeting_common;

use std::time::Duration;

use actix_web::{get, web, App, HttpResponse};
use floodgate::{BanRule, FakeClock, Floodgate, ProbeBan};
use targeting_common::get;

#[get("/ping")]
async fn ping() -> &'static str {
    "ok"
}

/// A real route whose path is also a probe pattern (`/admin*`).
#[get("/admin")]
async fn admin() -> &'static str {
    "the app's own admin page"
}

/// A real route that answers 404 itself.
#[get("/users/{id}")]
async fn user() -> HttpResponse {
    HttpResponse::NotFound().body("no such user")
}

fn server(fg: Floodgate) -> actix_test::TestServer {
    actix_test::start_with(actix_test::config().workers(2), move || {
        App::new()
            .wrap(fg.clone())
            .service(ping)
            .service(admin)
            .service(user)
            .service(web::scope("/api").route("/.env", web::get().to(HttpResponse::Ok)))
    })
}

fn floodgate(clock: &FakeClock) -> Floodgate {
    Floodgate::new()
        .clock(clock.clone())
        .ip_header("x-client")
        .ban_rule(BanRule::new(
            2,
            Duration::from_secs(60),
            Duration::from_secs(600),
        ))
}

#[actix_web::test]
async fn a_probe_bans_at_once_but_the_apps_routes_never_do() {
    let clock = FakeClock::new();
    let fg = floodgate(&clock).probe_ban(
        ProbeBan::new(["/wp-login.php", "/.env", "/.git/*", "/admin*", "*/.env"])
            .ban_for(Duration::from_secs(3600)),
    );
    let srv = server(fg.clone());

    // Registered routes matching a probe pattern: served, never banned, on any method.
    for _ in 0..5 {
        assert_eq!(get(&srv, "/admin", "198.51.100.1").await, 200);
        assert_eq!(get(&srv, "/api/.env", "198.51.100.1").await, 200);
    }
    // A method the route lacks gets actix-web's answer, not a ban.
    assert_eq!(
        targeting_common::send(&srv, "POST", "/admin", "198.51.100.1", &[]).await,
        404
    );
    assert_eq!(get(&srv, "/ping", "198.51.100.1").await, 200);

    // A scanner: the probe itself is refused, and so is everything after.
    assert_eq!(get(&srv, "/.env", "203.0.113.9").await, 403);
    assert_eq!(get(&srv, "/ping", "203.0.113.9").await, 403);
    let status = fg
        .gatekeeper()
        .status("203.0.113.9".parse::<std::net::IpAddr>().unwrap())
        .await
        .unwrap();
    assert!(status.is_banned() && !status.is_blacklisted());
    // Case and sub-paths: `/.GIT/config` is `/.git/*`; `/admin/setup.php` is `/admin*`.
    assert_eq!(get(&srv, "/.GIT/config", "203.0.113.10").await, 403);
    assert_eq!(get(&srv, "/admin/setup.php", "203.0.113.11").await, 403);
    assert_eq!(get(&srv, "/ping", "203.0.113.11").await, 403);

    // The ban lasts its duration, on the fake clock.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(get(&srv, "/ping", "203.0.113.9").await, 200);
    // An ordinary 404 is not a probe.
    assert_eq!(get(&srv, "/nothing-here", "198.51.100.2").await, 404);
    assert_eq!(get(&srv, "/ping", "198.51.100.2").await, 200);
}

#[actix_web::test]
async fn a_probe_can_count_as_a_report() {
    let clock = FakeClock::new();
    let fg = floodgate(&clock).probe_ban(ProbeBan::common().report());
    let srv = server(fg);
    // One offence: the probe gets the app's 404; the second completes the ban rule.
    assert_eq!(get(&srv, "/wp-login.php", "203.0.113.20").await, 404);
    assert_eq!(get(&srv, "/ping", "203.0.113.20").await, 200);
    assert_eq!(get(&srv, "/.env", "203.0.113.20").await, 403);
    assert_eq!(get(&srv, "/ping", "203.0.113.20").await, 403);
    clock.advance(Duration::from_secs(600));
    assert_eq!(get(&srv, "/ping", "203.0.113.20").await, 200);
}

#[actix_web::test]
async fn a_404_counts_as_a_report_when_enabled() {
    let clock = FakeClock::new();
    let fg = floodgate(&clock).probe_ban(ProbeBan::new(["/.env"]).not_found_reports(true));
    let srv = server(fg);
    // The app's own 404s (a handler's answer) never count.
    for _ in 0..5 {
        assert_eq!(get(&srv, "/users/42", "198.51.100.30").await, 404);
    }
    assert_eq!(get(&srv, "/ping", "198.51.100.30").await, 200);
    // Unrouted paths: two 404s within the ban rule's window ban the client; the ban is in
    // force when the second 404 has been answered.
    assert_eq!(get(&srv, "/old-page", "203.0.113.30").await, 404);
    assert_eq!(get(&srv, "/ping", "203.0.113.30").await, 200);
    assert_eq!(get(&srv, "/other-page", "203.0.113.30").await, 404);
    assert_eq!(get(&srv, "/ping", "203.0.113.30").await, 403);
    // 404s far apart do not add up.
    assert_eq!(get(&srv, "/a", "203.0.113.31").await, 404);
    clock.advance(Duration::from_secs(61));
    assert_eq!(get(&srv, "/b", "203.0.113.31").await, 404);
    assert_eq!(get(&srv, "/ping", "203.0.113.31").await, 200);
}

#[actix_web::test]
async fn a_404_is_not_a_report_by_default() {
    let clock = FakeClock::new();
    let fg = floodgate(&clock).probe_ban(ProbeBan::new(["/.env"]));
    let srv = server(fg.clone());
    for i in 0..6 {
        assert_eq!(
            get(&srv, &format!("/missing/{i}"), "203.0.113.40").await,
            404
        );
    }
    assert_eq!(get(&srv, "/ping", "203.0.113.40").await, 200);
    // And without any probe configuration either.
    let srv = server(floodgate(&clock));
    for i in 0..6 {
        assert_eq!(
            get(&srv, &format!("/missing/{i}"), "203.0.113.41").await,
            404
        );
    }
    assert_eq!(get(&srv, "/ping", "203.0.113.41").await, 200);
}

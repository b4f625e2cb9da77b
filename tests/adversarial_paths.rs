//! Encoded paths over real HTTP: targets and probe patterns match the path the router
//! matches (percent-decoded), so `/%6Cogin` meets `/login`'s target like `/login` does.

use actix_web::{post, App};
use floodgate::{FakeClock, Floodgate, ProbeBan, Rule, Target};
use floodgate_tests::{secs, send, server_config, IP_HEADER};

#[post("/login")]
async fn login() -> &'static str {
    "login handler ran"
}

#[post("/admin/delete")]
async fn delete() -> &'static str {
    "delete handler ran"
}

fn start(fg: &Floodgate) -> actix_test::TestServer {
    let fg = fg.clone();
    actix_test::start_with(server_config(), move || {
        App::new().wrap(fg.clone()).service(login).service(delete)
    })
}

async fn post_raw(srv: &actix_test::TestServer, path: &str, client: &str) -> (u16, String) {
    let resp = send(srv.post(path).insert_header((IP_HEADER, client))).await;
    (resp.code(), resp.text().to_owned())
}

/// Spellings of `/login` that the router routes to the `/login` handler.
const LOGIN_SPELLINGS: [&str; 4] = ["/login", "/%6Cogin", "/%6c%6F%67%69%6E", "/lo%67in"];

#[actix_web::test]
async fn encoded_paths_meet_the_targets_limit() {
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .target(
            Target::new("logins")
                .path("/login")
                .limit([Rule::new(2, secs(60))]),
        );
    let srv = start(&fg);
    // Every spelling reaches the handler, and every one counts against the same limit.
    let mut codes = Vec::new();
    for path in LOGIN_SPELLINGS {
        let (code, body) = post_raw(&srv, path, "1.1.1.1").await;
        if code == 200 {
            assert_eq!(body, "login handler ran", "{path}");
        }
        codes.push(code);
    }
    assert_eq!(codes, [200, 200, 429, 429]);
    // Encoded first, too.
    for path in ["/%6Cogin", "/%6Cogin", "/%6Cogin"] {
        codes.push(post_raw(&srv, path, "2.2.2.2").await.0);
    }
    assert_eq!(&codes[4..], [200, 200, 429]);
}

#[actix_web::test]
async fn encoded_paths_meet_a_denying_target() {
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .target(Target::new("no admin").path("/admin/*").deny());
    let srv = start(&fg);
    for path in [
        "/admin/delete",
        "/%61dmin/delete",
        "/admin/%64elete",
        "/%61%64%6D%69%6E/delete",
    ] {
        let (code, body) = post_raw(&srv, path, "3.3.3.3").await;
        assert_eq!(code, 403, "{path}: {body}");
        assert!(!body.contains("handler ran"), "{path}");
    }
}

#[actix_web::test]
async fn encoded_probe_paths_still_ban() {
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .probe_ban(ProbeBan::new(["/.env", "/wp-login.php"]).ban_for(secs(3600)));
    let srv = start(&fg);
    for (client, path) in [
        ("4.4.4.1", "/%2Eenv"),
        ("4.4.4.2", "/%2eenv"),
        ("4.4.4.3", "/wp%2Dlogin.php"),
        ("4.4.4.4", "/%77p-login%2Ephp"),
    ] {
        // The probe itself is refused, and so is everything after.
        assert_eq!(post_raw(&srv, path, client).await.0, 403, "{path}");
        assert_eq!(post_raw(&srv, "/login", client).await.0, 403, "{path}");
    }
}

//! Client-chosen strings in log lines: a custom key taken from a path parameter or a header
//! may hold newlines and terminal escapes; every log line shows them escaped, so a client
//! cannot forge log lines (or fool a fail2ban-style log watcher).

use actix_web::{get, App, HttpRequest};
use floodgate::{specific, FakeClock, Floodgate, GateKeeper, HeaderKey, Rule};
use floodgate_tests::logs::{capture, records};
use floodgate_tests::{secs, send, server_config, IP_HEADER};

fn user_of(req: &HttpRequest) -> Option<String> {
    Some(format!("user:{}", req.match_info().get("id")?))
}

#[specific(rate_limit_rules = [(1, "1m")], standalone, key = user_of)]
#[get("/users/{id}")]
async fn user(req: HttpRequest, gk: GateKeeper) -> &'static str {
    gk.report(&req).await;
    "ok"
}

#[actix_web::test]
async fn keys_with_control_characters_are_escaped_in_every_log_line() {
    capture();
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .ban_rule(floodgate::BanRule::new(1, secs(60), secs(60)))
        .target(
            floodgate::Target::new("api")
                .header("x-api-key")
                .limit([Rule::new(1, secs(60))]),
        )
        .key(HeaderKey::new("x-api-key"));
    let srv = actix_test::start_with(server_config(), {
        let fg = fg.clone();
        move || App::new().wrap(fg.clone()).service(user)
    });
    // A path parameter decoded into a newline, a carriage return and an escape sequence.
    let forged = "/users/x%0AWARN%20floodgate:%201.2.3.4%20unbanned%0D%1B[2J";
    for _ in 0..2 {
        send(srv.get(forged).insert_header((IP_HEADER, "8.8.8.8"))).await;
    }
    // A header key with a tab (the one control character a header value may hold).
    for _ in 0..2 {
        let req = srv
            .get("/nowhere")
            .insert_header((IP_HEADER, "8.8.8.9"))
            .insert_header(("x-api-key", "a\tbc"));
        send(req).await;
    }
    // floodgate's lines, as "LEVEL message".
    let lines: Vec<String> = records()
        .into_iter()
        .filter(|(_, target, _)| target.starts_with("floodgate"))
        .map(|(level, _, message)| format!("{level} {message}"))
        .collect();
    let about_forged: Vec<&String> = lines.iter().filter(|l| l.contains("user:x")).collect();
    assert!(
        about_forged.len() >= 2,
        "the refusal and the report are logged: {lines:#?}"
    );
    for line in &lines {
        assert!(
            !line.contains(['\n', '\r', '\x1b', '\t', '\x7f']),
            "a raw control character reached a log line: {line:?}"
        );
    }
    assert!(
        about_forged
            .iter()
            .any(|l| l.contains("user:x\\nWARN floodgate: 1.2.3.4 unbanned\\r\\u{1b}[2J")),
        "{about_forged:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("x-api-key:a\\tbc")),
        "{lines:#?}"
    );
}

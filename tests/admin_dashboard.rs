//! The dashboard over HTTP: sign-in with the token in a form, its cookies, a strict CSP,
//! client keys escaped, unban by form with its anti-CSRF value, and what the cookie may not do.

use actix_web::{get, App, HttpRequest, HttpResponse};
use floodgate::{BanRule, FakeClock, Floodgate, GateKeeper, Timestamp};
use floodgate_tests::{from_ip, get_as, secs, send, send_body, server_config, Resp, IP_HEADER};

const TOKEN: &str = "dashboard-token-0123456789abcdef";
const START: Timestamp = Timestamp::from_millis(1_796_521_071_000);

#[get("/ping")]
async fn ping() -> &'static str {
    "pong"
}

#[get("/report")]
async fn report(req: HttpRequest, gk: GateKeeper) -> HttpResponse {
    gk.report(&req).await;
    HttpResponse::Ok().finish()
}

fn start(clock: &FakeClock) -> actix_test::TestServer {
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .ban_rule(BanRule::new(3, secs(10), secs(600)));
    actix_test::start_with(server_config(), move || {
        App::new()
            .wrap(fg.clone())
            .service(ping)
            .service(report)
            .service(fg.admin("/_floodgate").token(TOKEN))
    })
}

/// A client that shows redirects instead of following them.
fn post(srv: &actix_test::TestServer, path: &str) -> awc::ClientRequest {
    awc::Client::builder()
        .disable_redirects()
        .finish()
        .post(srv.url(path))
}

/// The `name=value` of each Set-Cookie of `r`, with its attributes.
fn set_cookies(r: &Resp) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn cookie_value(r: &Resp, name: &str) -> Option<String> {
    set_cookies(r).iter().find_map(|c| {
        c.split(';')
            .next()
            .and_then(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    })
}

async fn sign_in(srv: &actix_test::TestServer) -> (String, String) {
    let r = send_body(
        from_ip(post(srv, "/_floodgate/login"), "192.0.2.5")
            .insert_header(("content-type", "application/x-www-form-urlencoded")),
        format!("token={TOKEN}"),
    )
    .await;
    assert_eq!(r.code(), 303);
    assert_eq!(r.header("location"), Some("/_floodgate/"));
    for c in set_cookies(&r) {
        assert!(
            c.contains("HttpOnly")
                && c.contains("SameSite=Strict")
                && c.contains("Path=/_floodgate"),
            "{c}"
        );
    }
    let session = cookie_value(&r, "floodgate_admin").expect("session cookie");
    let csrf = cookie_value(&r, "floodgate_csrf").expect("csrf cookie");
    (session, csrf)
}

async fn dashboard(srv: &actix_test::TestServer, session: &str, csrf: &str) -> Resp {
    send(
        from_ip(srv.get("/_floodgate/"), "192.0.2.5").insert_header((
            "cookie",
            format!("floodgate_admin={session}; floodgate_csrf={csrf}"),
        )),
    )
    .await
}

async fn unban_form(
    srv: &actix_test::TestServer,
    session: &str,
    csrf_cookie: &str,
    csrf_field: &str,
    client: &str,
    origin: Option<&str>,
) -> Resp {
    let mut req = from_ip(post(srv, "/_floodgate/unban"), "192.0.2.5")
        .insert_header(("content-type", "application/x-www-form-urlencoded"))
        .insert_header((
            "cookie",
            format!("floodgate_admin={session}; floodgate_csrf={csrf_cookie}"),
        ));
    if let Some(o) = origin {
        req = req.insert_header(("origin", o));
    }
    let body = format!("client={}&csrf={csrf_field}", client.replace(':', "%3A"));
    send_body(req, body).await
}

#[actix_web::test]
async fn sign_in_see_a_ban_by_reports_and_unban_it_with_the_form() {
    let clock = FakeClock::starting_at(START);
    let srv = start(&clock);
    let bad = "203.0.113.9";

    let page = get_as(&srv, "/_floodgate/", "192.0.2.5").await;
    assert_eq!(page.code(), 200);
    assert!(page.text().contains("name=\"token\"") && !page.text().contains(TOKEN));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(!page.text().contains("<script"));
    let css = get_as(&srv, "/_floodgate/dashboard.css", "192.0.2.5").await;
    assert_eq!(
        (css.code(), css.header("content-type")),
        (200, Some("text/css; charset=utf-8"))
    );

    let wrong = send_body(
        from_ip(post(&srv, "/_floodgate/login"), "192.0.2.5")
            .insert_header(("content-type", "application/x-www-form-urlencoded")),
        "token=guess-guess-guess-guess",
    )
    .await;
    assert_eq!(wrong.code(), 401);
    assert!(set_cookies(&wrong).is_empty());

    for _ in 0..3 {
        get_as(&srv, "/report", bad).await;
    }
    assert_eq!(get_as(&srv, "/ping", bad).await.code(), 403);
    let (session, csrf) = sign_in(&srv).await;
    let page = dashboard(&srv, &session, &csrf).await;
    assert_eq!(page.code(), 200);
    let text = page.text();
    assert!(
        text.contains(&format!("<td class=\"key\">{bad}</td><td>report</td>")),
        "{text}"
    );
    assert!(text.contains(&format!("name=\"csrf\" value=\"{csrf}\"")));
    assert!(text.contains("<td>10m 0s</td>"), "time left: {text}");

    // A form without the page's value, or from another origin, does nothing.
    assert_eq!(
        unban_form(
            &srv,
            &session,
            &csrf,
            "0000000000000000ffffffffffffffff",
            bad,
            None
        )
        .await
        .code(),
        403
    );
    assert_eq!(
        unban_form(
            &srv,
            &session,
            &csrf,
            &csrf,
            bad,
            Some("https://evil.example")
        )
        .await
        .code(),
        403
    );
    assert_eq!(get_as(&srv, "/ping", bad).await.code(), 403);

    let done = unban_form(&srv, &session, &csrf, &csrf, bad, None).await;
    assert_eq!(
        (done.code(), done.header("location")),
        (303, Some("/_floodgate/"))
    );
    assert_eq!(get_as(&srv, "/ping", bad).await.code(), 200, "served again");
    assert!(dashboard(&srv, &session, &csrf)
        .await
        .text()
        .contains("Nobody is banned."));
}

#[actix_web::test]
async fn client_keys_are_escaped_and_the_cookie_cannot_change_bans() {
    let clock = FakeClock::starting_at(START);
    let srv = start(&clock);
    let hostile = "<script>alert(1)</script>\"'&";
    let encoded: String = hostile.bytes().map(|b| format!("%{b:02X}")).collect();
    let r = send_body(
        from_ip(
            srv.put(format!("/_floodgate/api/clients/{encoded}/ban")),
            "192.0.2.5",
        )
        .bearer_auth(TOKEN)
        .insert_header(("content-type", "application/json")),
        r#"{"forever": true}"#,
    )
    .await;
    assert_eq!(r.code(), 200, "{}", r.text());
    let (session, csrf) = sign_in(&srv).await;
    let text = dashboard(&srv, &session, &csrf).await.text().to_owned();
    assert!(!text.contains("<script"), "{text}");
    assert!(
        text.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"),
        "{text}"
    );

    // The dashboard's cookie reads, but never bans or unbans through the API.
    let cookie = format!("floodgate_admin={session}; floodgate_csrf={csrf}");
    let get = send(
        from_ip(srv.get("/_floodgate/api/bans"), "192.0.2.5")
            .insert_header(("cookie", cookie.clone())),
    )
    .await;
    assert_eq!(get.code(), 200);
    let put = send_body(
        from_ip(
            srv.put("/_floodgate/api/clients/198.51.100.1/ban"),
            "192.0.2.5",
        )
        .insert_header(("cookie", cookie.clone()))
        .insert_header(("content-type", "application/json")),
        r#"{"forever": true}"#,
    )
    .await;
    assert_eq!(put.code(), 401);
    let delete = send(
        from_ip(
            srv.delete(format!("/_floodgate/api/clients/{encoded}/ban")),
            "192.0.2.5",
        )
        .insert_header(("cookie", cookie)),
    )
    .await;
    assert_eq!(delete.code(), 401);
    // A forged session cookie reads nothing.
    let forged = send(
        from_ip(srv.get("/_floodgate/api/bans"), "192.0.2.5")
            .insert_header(("cookie", "floodgate_admin=dashboard-token-0123456789abcdeX")),
    )
    .await;
    assert_eq!(forged.code(), 401);
}

#[floodgate::specific(rate_limit_rules = [(1, "1m")], standalone)]
#[get("/search")]
async fn search() -> &'static str {
    "results"
}

#[floodgate::specific(rate_limit_rules = [(1, "1m")], standalone, shadow)]
#[get("/trial")]
async fn trial() -> &'static str {
    "trial"
}

#[actix_web::test]
async fn the_dashboard_shows_the_limits_and_each_routes_recent_refusals_shadow_ones_too() {
    let clock = FakeClock::starting_at(START);
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .rate_limit_rules([floodgate::Rule::new(100, secs(60))]);
    let srv = {
        let fg = fg.clone();
        actix_test::start_with(server_config(), move || {
            App::new()
                .wrap(fg.clone())
                .service(search)
                .service(trial)
                .service(fg.admin("/_floodgate").token(TOKEN))
        })
    };
    let (session, csrf) = sign_in(&srv).await;
    let quiet = dashboard(&srv, &session, &csrf).await;
    let quiet = std::str::from_utf8(&quiet.body).unwrap().to_owned();
    assert!(quiet.contains("No refusals lately."), "{quiet}");

    let mut search_codes = Vec::new();
    let mut trial_codes = Vec::new();
    for _ in 0..3 {
        search_codes.push(get_as(&srv, "/search", "198.51.100.7").await.code());
        trial_codes.push(get_as(&srv, "/trial", "198.51.100.7").await.code());
    }
    assert_eq!(search_codes, [200, 429, 429]);
    assert_eq!(trial_codes, [200, 200, 200], "shadow mode serves");

    let page = dashboard(&srv, &session, &csrf).await;
    assert_eq!(page.code(), 200);
    let html = std::str::from_utf8(&page.body).unwrap();
    let routes = &html[html.find("id=\"routes\"").expect("the routes table")..];
    let row = |route: &str| {
        let start = routes
            .find(&format!(">{route}<"))
            .unwrap_or_else(|| panic!("{route}: {routes}"));
        let end = routes[start..].find("</tr>").unwrap() + start;
        routes[start..end].to_owned()
    };
    assert!(
        row("admin_dashboard::search").contains("<td>2</td><td>0</td>"),
        "{routes}"
    );
    assert!(
        row("admin_dashboard::trial").contains("<td>0</td><td>2</td>"),
        "{routes}"
    );
    // The limits in force: the global rule and each route's own.
    let limits = &html[html.find("id=\"limits\"").expect("the limits table")..];
    assert!(limits.contains("100/1m"), "{limits}");
    assert!(limits.contains("rules admin_dashboard::search"), "{limits}");

    // Twenty minutes on, the refusals are no longer recent.
    clock.advance(secs(20 * 60 + 1));
    let later = dashboard(&srv, &session, &csrf).await;
    let later = std::str::from_utf8(&later.body).unwrap().to_owned();
    assert!(later.contains("No refusals lately."), "{later}");
}

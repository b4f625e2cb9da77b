//! The dashboard: server-rendered HTML at the admin root, readable without JavaScript and
//! served under a strict Content-Security-Policy (no script, no inline style, no external
//! asset). Sign in with the token; unban with a form.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};

use super::api::{client_from_text, log_action};
use super::auth::operator_ip;
use super::session::{
    cookie, escape, form_is_genuine, random_hex, Auth, CSRF_COOKIE, SESSION_COOKIE,
};
use super::Settings;
use crate::clock::Timestamp;
use crate::status::ScopeKind;
use crate::store::bans::BanPage;

/// Bans shown on the page (the API pages through the rest).
const SHOWN_BANS: usize = 200;

const CSP: &str = "default-src 'none'; style-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:2em auto;max-width:70em;\
color:#222;padding:0 1em}h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35em .6em;\
border-bottom:1px solid #ddd;font-variant-numeric:tabular-nums}th{background:#f4f4f4}\
td.key{font-family:ui-monospace,monospace;word-break:break-all}button{cursor:pointer}\
.bad{color:#a00}.ok{color:#070}header{display:flex;justify-content:space-between;\
align-items:center}form.inline{margin:0}input[type=password]{width:24em}";

/// Adds the dashboard's routes to the admin scope.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::get().to(page))
        .route("/", web::get().to(page))
        .route("/dashboard.css", web::get().to(css))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/unban", web::post().to(unban));
}

fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // Not no-referrer: browsers then send `Origin: null` with the forms, which fail the
        // same-origin check.
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

fn redirect(s: &Settings) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("{}/", s.path)))
        .finish()
}

fn shell(s: &Settings, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>floodgate</title>\
         <link rel=\"stylesheet\" href=\"{p}/dashboard.css\"></head><body>{body}</body></html>",
        p = escape(&s.path)
    )
}

fn sign_in(s: &Settings, note: &str) -> String {
    shell(
        s,
        &format!(
            "<h1>floodgate</h1>{note}<form method=\"post\" action=\"{p}/login\">\
             <label>Admin token <input type=\"password\" name=\"token\" id=\"token\" \
             autocomplete=\"current-password\" required></label> \
             <button type=\"submit\" id=\"sign-in\">Sign in</button></form>",
            p = escape(&s.path)
        ),
    )
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(CSS)
}

/// `9m 52s`, `3h 2m`, `2d 4h`.
fn left(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3_599 => format!("{}m {}s", s / 60, s % 60),
        3_600..=86_399 => format!("{}h {}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3_600),
    }
}

fn bans_html(s: &Settings, page: &BanPage, csrf: &str, now: Timestamp) -> String {
    let p = escape(&s.path);
    let mut out = format!(
        "<h2>Bans in force ({}{})</h2>",
        page.bans.len(),
        if page.next.is_some() { "+" } else { "" }
    );
    if page.bans.is_empty() {
        return out + "<p>Nobody is banned.</p>";
    }
    out.push_str("<table id=\"bans\"><tr><th>Client</th><th>Reason</th><th>Since</th><th>Until</th><th>Left</th><th></th></tr>");
    for e in &page.bans {
        let client = escape(&e.client.to_string());
        let since = e.since.map_or_else(|| "-".to_owned(), |t| t.to_string());
        let (until, rest) = match e.until {
            Some(t) => (t.to_string(), left(t.saturating_since(now))),
            None => ("never".to_owned(), "forever".to_owned()),
        };
        out.push_str(&format!(
            "<tr><td class=\"key\">{client}</td><td>{}</td><td>{since}</td><td>{until}</td>\
             <td>{rest}</td><td><form class=\"inline\" method=\"post\" action=\"{p}/unban\">\
             <input type=\"hidden\" name=\"client\" value=\"{client}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\">Unban</button></form></td></tr>",
            e.reason.listed_as(e.until)
        ));
    }
    out + "</table>"
}

async fn page(s: web::Data<Settings>, req: HttpRequest) -> HttpResponse {
    let auth = req
        .extensions()
        .get::<Auth>()
        .copied()
        .unwrap_or(Auth::None);
    if auth == Auth::None {
        return html(StatusCode::OK, sign_in(&s, ""));
    }
    let shared = &s.gatekeeper.shared;
    let now = shared.now();
    let csrf = req
        .cookie(CSRF_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| v.len() >= 32 && v.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(random_hex);
    let (health, bans) = match shared.store.bans(None, SHOWN_BANS, now).await {
        Ok(page) => (
            "<p class=\"ok\">The store answers.</p>".to_owned(),
            bans_html(&s, &page, &csrf, now),
        ),
        Err(err) => (
            format!(
                "<p class=\"bad\">The store fails: {}</p>",
                escape(&err.to_string())
            ),
            String::new(),
        ),
    };
    let mut top = String::from("<h2>Top offenders (last 10 to 20 minutes)</h2>");
    let offenders = s.gatekeeper.top_offenders(20);
    if offenders.is_empty() {
        top.push_str("<p>No refusals or reports lately.</p>");
    } else {
        top.push_str("<table id=\"top\"><tr><th>Client</th><th>Refusals</th><th>Reports</th></tr>");
        for o in offenders {
            top.push_str(&format!(
                "<tr><td class=\"key\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(&o.client.to_string()),
                o.refusals,
                o.reports
            ));
        }
        top.push_str("</table>");
    }
    let routes = routes_html(shared, now);
    let body = format!(
        "<header><h1>floodgate</h1><form class=\"inline\" method=\"post\" action=\"{p}/logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\">Sign out</button>\
         </form></header><p>Times are UTC; now {now}.</p><h2>Store</h2>{health}{bans}{top}{routes}",
        p = escape(&s.path)
    );
    let mut res = html(StatusCode::OK, shell(&s, &body));
    let _ = res.add_cookie(&cookie(&s, &req, CSRF_COOKIE, csrf));
    res
}

/// The limits in force (each scope's rules or policy) and each route's recent refusals,
/// shadow mode's would-be refusals among them.
fn routes_html(shared: &crate::gatekeeper::Gate, now: Timestamp) -> String {
    let mut out = String::from("<h2>Limits</h2>");
    let mut limits: Vec<(String, String)> = shared
        .scopes
        .lock()
        .map(|scopes| {
            scopes
                .values()
                .map(|info| {
                    let what = match &info.kind {
                        ScopeKind::Rules(rules) => rules
                            .iter()
                            .map(|r| r.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        ScopeKind::Policy(p) => format!("policy {p}"),
                    };
                    (info.label.clone(), what)
                })
                .collect()
        })
        .unwrap_or_default();
    limits.sort();
    if limits.is_empty() {
        out.push_str("<p>No limits.</p>");
    } else {
        out.push_str("<table id=\"limits\"><tr><th>Scope</th><th>Limits</th></tr>");
        for (label, what) in limits {
            out.push_str(&format!(
                "<tr><td class=\"key\">{}</td><td>{}</td></tr>",
                escape(&label),
                escape(&what)
            ));
        }
        out.push_str("</table>");
    }
    out.push_str("<h2>Refusals by route (last 10 to 20 minutes)</h2>");
    let recent = shared.route_refusals.recent(now);
    if recent.is_empty() {
        out.push_str("<p>No refusals lately.</p>");
    } else {
        out.push_str(
            "<table id=\"routes\"><tr><th>Route</th><th>Refused</th><th>Shadow mode would have refused</th></tr>",
        );
        for r in recent {
            out.push_str(&format!(
                "<tr><td class=\"key\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.route),
                r.refused,
                r.shadow
            ));
        }
        out.push_str("</table>");
    }
    out
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

async fn login(
    s: web::Data<Settings>,
    req: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
) -> HttpResponse {
    let token = s.token.as_deref().unwrap_or_default();
    let given = field(&form, "token");
    let who =
        operator_ip(&s, &req).map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string());
    let target = s.gatekeeper.shared.log_target();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        token.as_bytes(),
    )) {
        log::warn!(target: target, "floodgate admin: dashboard sign-in from {who} refused");
        let note = "<p class=\"bad\" id=\"refused\">That is not the admin token.</p>";
        return html(StatusCode::UNAUTHORIZED, sign_in(&s, note));
    }
    log::info!(target: target, "floodgate admin: dashboard sign-in by {who}");
    let mut res = redirect(&s);
    let _ = res.add_cookie(&cookie(&s, &req, SESSION_COOKIE, token.to_owned()));
    let _ = res.add_cookie(&cookie(&s, &req, CSRF_COOKIE, random_hex()));
    res
}

async fn logout(
    s: web::Data<Settings>,
    req: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
) -> HttpResponse {
    if !form_is_genuine(&req, field(&form, "csrf")) {
        return html(
            StatusCode::FORBIDDEN,
            shell(&s, "<p class=\"bad\">Stale form: reload the page.</p>"),
        );
    }
    let mut res = redirect(&s);
    for name in [SESSION_COOKIE, CSRF_COOKIE] {
        let mut c = cookie(&s, &req, name, String::new());
        c.make_removal();
        let _ = res.add_cookie(&c);
    }
    res
}

async fn unban(
    s: web::Data<Settings>,
    req: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
) -> HttpResponse {
    if !form_is_genuine(&req, field(&form, "csrf")) {
        return html(
            StatusCode::FORBIDDEN,
            shell(&s, "<p class=\"bad\">Stale form: reload the page.</p>"),
        );
    }
    let text = field(&form, "client");
    let Ok(client) = client_from_text(text) else {
        return html(
            StatusCode::BAD_REQUEST,
            shell(&s, "<p class=\"bad\">Not a client.</p>"),
        );
    };
    let key = s.gatekeeper.key_of_client(client);
    match s.gatekeeper.unban(key.clone()).await {
        Ok(_) => {
            log_action(&s, &req, "unban (dashboard) of", &key);
            redirect(&s)
        }
        Err(err) => html(
            StatusCode::SERVICE_UNAVAILABLE,
            shell(
                &s,
                &format!(
                    "<p class=\"bad\">The store fails: {}</p>",
                    escape(&err.to_string())
                ),
            ),
        ),
    }
}

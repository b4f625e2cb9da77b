//! The dashboard in headless Chromium: sign in with the token, see a ban made by reports,
//! press unban, see the client served again. Saves a screenshot of the page with the ban
//! (`target/tmp/dashboard.png`, and `$FLOODGATE_SCREENSHOT` when set).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::{get, App, HttpRequest, HttpResponse};
use fantoccini::{ClientBuilder, Locator};
use floodgate::{BanRule, FakeClock, Floodgate, GateKeeper, Timestamp};

const TOKEN: &str = "browser-test-token-0123456789abcdef";
const IP_HEADER: &str = "x-client-ip";
/// 2026-12-06T01:37:51Z
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

/// chromedriver on a free loopback port, stopped on drop.
struct Driver(Child, u16);

impl Driver {
    fn start() -> Option<Driver> {
        if Command::new("chromedriver")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("FLOODGATE_REQUIRE_BROWSER").is_none(),
                "FLOODGATE_REQUIRE_BROWSER is set but chromedriver is not installed \
                 (Debian: apt-get install chromium chromium-driver)"
            );
            eprintln!(
                "SKIPPED: chromedriver is not installed (set FLOODGATE_REQUIRE_BROWSER=1 to fail instead)"
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Driver(child, port))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get_as(path: &str, ip: &str, srv: &actix_test::TestServer) -> u16 {
    let res = srv
        .get(path)
        .insert_header((IP_HEADER, ip))
        .send()
        .await
        .expect("request");
    res.status().as_u16()
}

#[actix_web::test]
async fn sign_in_see_a_ban_by_reports_unban_it_and_the_client_is_served_again() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let clock = FakeClock::starting_at(START);
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header(IP_HEADER)
        .ban_rule(BanRule::new(
            3,
            Duration::from_secs(10),
            Duration::from_secs(600),
        ));
    let srv = actix_test::start(move || {
        App::new()
            .wrap(fg.clone())
            .service(ping)
            .service(report)
            .service(fg.admin("/_floodgate").token(TOKEN))
    });
    let bad = "203.0.113.9";
    for _ in 0..3 {
        get_as("/report", bad, &srv).await;
        clock.advance(Duration::from_secs(1));
    }
    get_as("/report", "198.51.100.23", &srv).await;
    assert_eq!(get_as("/ping", bad, &srv).await, 403);

    let profile = std::env::temp_dir().join(format!("floodgate-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1100,700",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a WebDriver session");

    browser
        .goto(&srv.url("/_floodgate/"))
        .await
        .expect("open the dashboard");
    browser
        .find(Locator::Css("#token"))
        .await
        .expect("the sign-in form")
        .send_keys(TOKEN)
        .await
        .unwrap();
    browser
        .find(Locator::Css("#sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let bans = browser
        .wait()
        .for_element(Locator::Css("#bans"))
        .await
        .expect("the bans table after signing in");
    let text = bans.text().await.unwrap();
    assert!(text.contains(bans_row_start(bad).as_str()), "{text}");
    assert!(
        !browser
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains(TOKEN),
        "no token in URLs"
    );

    let png = browser.screenshot().await.expect("screenshot");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(dir.join("dashboard.png"), &png).unwrap();
    if let Some(path) = std::env::var_os("FLOODGATE_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }
    eprintln!("screenshot: {}", dir.join("dashboard.png").display());

    let button = format!("//tr[td[text()='{bad}']]//button");
    browser
        .find(Locator::XPath(&button))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::XPath("//p[text()='Nobody is banned.']"))
        .await
        .expect("the ban is gone from the page");
    browser.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert_eq!(get_as("/ping", bad, &srv).await, 200, "served again");
}

fn bans_row_start(client: &str) -> String {
    format!("{client} report")
}

//! Geo-blocking and targeted rules (request targeting) over real HTTP: countries from an
//! RFC 8805 geofeed and from a MaxMind-format database built here; allowed, denied and
//! unknown countries; "POST /login from outside the EU: 3 per minute".

mod targeting_common;

use std::time::Duration;

use actix_web::http::Method;
use actix_web::{get, post, App};
use floodgate::{bypass, Country, FakeClock, Floodgate, GeoBlock, GeoDb, Rule, Target};
use targeting_common::{get, send, temp_file};

const FR: &str = "192.0.2.10";
const DE: &str = "198.51.100.10";
const US: &str = "203.0.113.10";
const FR6: &str = "2001:db8:f::1";
const UNKNOWN: &str = "100.64.0.1";

const FEED: &str = "\
# prefix,country,region,city,postal (RFC 8805)
192.0.2.0/24,FR,FR-75,Paris,
198.51.100.0/24,de,DE-BE,Berlin,
203.0.113.0/24,US,US-CA,,
2001:db8:f::/48,FR,,,
100.64.0.0/10,,,,
";

#[get("/ping")]
async fn ping() -> &'static str {
    "ok"
}

#[get("/login")]
async fn login_page() -> &'static str {
    "form"
}

#[post("/login")]
async fn login() -> &'static str {
    "welcome"
}

#[get("/admin")]
async fn admin() -> &'static str {
    "admin"
}

#[bypass]
#[get("/health")]
async fn health() -> &'static str {
    "ok"
}

fn server(fg: Floodgate) -> actix_test::TestServer {
    actix_test::start_with(actix_test::config().workers(2), move || {
        App::new()
            .wrap(fg.clone())
            .service(ping)
            .service(login_page)
            .service(login)
            .service(admin)
            .service(health)
    })
}

fn geofeed() -> GeoDb {
    GeoDb::geofeed_file(temp_file("geofeed.csv", FEED)).unwrap()
}

async fn walk_allow_only_fr(db: GeoDb) {
    let srv = server(
        Floodgate::new()
            .ip_header("x-client")
            .geo_database(db.clone())
            .geo_block(GeoBlock::allow_only(["FR"]).unwrap()),
    );
    assert_eq!(get(&srv, "/ping", FR).await, 200);
    assert_eq!(get(&srv, "/ping", FR6).await, 200);
    assert_eq!(get(&srv, "/ping", DE).await, 403);
    assert_eq!(get(&srv, "/ping", US).await, 403);
    assert_eq!(
        get(&srv, "/health", US).await,
        200,
        "#[bypass] is not geo-blocked"
    );
    // Unknown country: served by default ...
    assert_eq!(get(&srv, "/ping", UNKNOWN).await, 200);
    assert_eq!(get(&srv, "/ping", "127.0.0.1").await, 200);
    // ... refused when asked.
    let srv = server(
        Floodgate::new()
            .ip_header("x-client")
            .geo_database(db)
            .geo_block(GeoBlock::allow_only(["FR"]).unwrap().deny_unknown(true)),
    );
    assert_eq!(get(&srv, "/ping", FR).await, 200);
    assert_eq!(get(&srv, "/ping", UNKNOWN).await, 403);
}

#[actix_web::test]
async fn geofeed_allowed_denied_and_unknown_countries() {
    let db = geofeed();
    walk_allow_only_fr(db.clone()).await;

    let srv = server(
        Floodgate::new()
            .ip_header("x-client")
            .geo_database(db)
            .geo_block(GeoBlock::deny(["de", "US"]).unwrap()),
    );
    let res = srv
        .get("/ping")
        .insert_header(("x-client", DE))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(get(&srv, "/ping", US).await, 403);
    assert_eq!(get(&srv, "/ping", FR).await, 200);
    assert_eq!(get(&srv, "/ping", UNKNOWN).await, 200);
}

#[derive(serde::Serialize)]
struct CountryRecord {
    country: IsoCode,
}

#[derive(serde::Serialize)]
struct IsoCode {
    iso_code: String,
}

/// A small GeoIP2-Country-shaped database: `country.iso_code` per network.
fn maxmind_db() -> Vec<u8> {
    let mut writer = mmdb_writer::Writer::new("GeoIP2-Country");
    for (net, code) in [
        ("192.0.2.0/24", "FR"),
        ("198.51.100.0/24", "DE"),
        ("203.0.113.0/24", "US"),
        ("2001:db8:f::/48", "FR"),
    ] {
        let record = CountryRecord {
            country: IsoCode {
                iso_code: code.into(),
            },
        };
        writer
            .insert(net.parse::<ipnet::IpNet>().unwrap(), &record)
            .unwrap();
    }
    writer.to_bytes().unwrap()
}

#[actix_web::test]
async fn maxmind_database_allowed_denied_and_unknown_countries() {
    let path = temp_file("country.mmdb", "");
    std::fs::write(&path, maxmind_db()).unwrap();
    let db = GeoDb::maxmind_file(&path).unwrap();
    let fr = db.country(FR.parse().unwrap());
    assert_eq!(fr.map(|c| c.to_string()), Some("FR".into()));
    assert_eq!(db.country("::ffff:192.0.2.10".parse().unwrap()), fr);
    assert_eq!(db.country(UNKNOWN.parse().unwrap()), None);
    walk_allow_only_fr(db).await;

    let garbage = temp_file("garbage.mmdb", "not a database");
    let err = GeoDb::maxmind_file(&garbage).unwrap_err();
    assert_eq!(err.path.as_deref(), Some(garbage.as_path()));
}

#[actix_web::test]
async fn post_login_from_outside_the_eu_three_per_minute() {
    let clock = FakeClock::new();
    let fg = Floodgate::new()
        .clock(clock.clone())
        .ip_header("x-client")
        .geo_database(geofeed())
        .target(
            Target::new("login-outside-eu")
                .method(Method::POST)
                .path("/login")
                .outside(Country::eu())
                .limit([Rule::new(3, Duration::from_secs(60))]),
        )
        .target(
            Target::new("admin-from-france-only")
                .path("/admin*")
                .outside_countries(["FR"])
                .deny(),
        )
        .target(
            Target::new("curl-pings")
                .path("/ping")
                .header_matches("user-agent", "*curl*")
                .limit([Rule::new(1, Duration::from_secs(60))]),
        );
    let srv = server(fg);

    // From the US (and from an unknown country): 3 per minute, then 429.
    for ip in [US, UNKNOWN] {
        for _ in 0..3 {
            assert_eq!(send(&srv, "POST", "/login", ip, &[]).await, 200, "{ip}");
        }
        assert_eq!(send(&srv, "POST", "/login", ip, &[]).await, 429, "{ip}");
        // Other methods and paths are not targeted.
        assert_eq!(get(&srv, "/login", ip).await, 200, "{ip}");
        assert_eq!(get(&srv, "/ping", ip).await, 200, "{ip}");
    }
    // From inside the EU: not targeted.
    for ip in [FR, DE] {
        for _ in 0..6 {
            assert_eq!(send(&srv, "POST", "/login", ip, &[]).await, 200, "{ip}");
        }
    }
    clock.advance(Duration::from_secs(60));
    assert_eq!(send(&srv, "POST", "/login", US, &[]).await, 200);

    // A per-route geo-block.
    assert_eq!(get(&srv, "/admin", FR).await, 200);
    assert_eq!(get(&srv, "/admin", DE).await, 403);
    assert_eq!(get(&srv, "/admin", UNKNOWN).await, 403);

    // Header traits.
    let curl = [("user-agent", "curl/8.5")];
    assert_eq!(send(&srv, "GET", "/ping", DE, &curl).await, 200);
    assert_eq!(send(&srv, "GET", "/ping", DE, &curl).await, 429);
    assert_eq!(
        send(&srv, "GET", "/ping", DE, &[("user-agent", "Firefox")]).await,
        200
    );
}

#[actix_web::test]
async fn invalid_targets_are_errors() {
    let err = Floodgate::new()
        .try_target(Target::new("t").countries(["France"]).deny())
        .unwrap_err();
    assert_eq!(err.field(), "target");
    assert!(Floodgate::new()
        .try_target(Target::new("t").header("bad header").deny())
        .is_err());
    let fg = Floodgate::new()
        .try_target(Target::new("t").deny())
        .unwrap();
    assert!(fg.try_target(Target::new("t").deny()).is_err());
    assert!(GeoBlock::deny(["XYZ"]).is_err());
    let err = GeoDb::geofeed("192.0.2.0/24,FR\n198.51.100.0/24,Germany\n").unwrap_err();
    assert_eq!(err.line, 2);
}

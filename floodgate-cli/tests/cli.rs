//! The `floodgate` binary end to end: against a real SQLite file, a running app's admin API,
//! a FlaskFloodgate file to import, and (in `cli/redis.rs`) a real redis-server and Redis
//! Cluster that the tests start themselves (skipped with a notice when redis-server is not
//! installed, unless FLOODGATE_REQUIRE_REDIS=1).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use actix_web::App;
use floodgate::{BanRule, ClientKey, Clock, Floodgate, SqliteStore, Store, SystemClock};

#[path = "../../floodgate/tests/support/redis_cluster.rs"]
mod redis_cluster;
#[path = "../../floodgate/tests/support/redis_server.rs"]
mod redis_server;
#[path = "../../floodgate/tests/support/services.rs"]
mod services;

#[path = "cli/redis.rs"]
mod redis;

const TOKEN: &str = "cli-test-token-0123456789";

fn floodgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .args(args)
        .env_remove("FLOODGATE_TOKEN")
        .output()
        .expect("run the floodgate binary")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("floodgate-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for a StoreFuture on this thread (the SQLite store answers from its own thread).
fn wait<T>(f: floodgate::StoreFuture<T>) -> T {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v.expect("store");
        }
        std::thread::park();
    }
}

fn ip(s: &str) -> ClientKey {
    ClientKey::from_ip(s.parse::<IpAddr>().unwrap(), 64)
}

#[test]
fn sqlite_file_bans_listed_set_and_lifted() {
    let dir = TempDir::new("sqlite");
    let db = dir.file("ip-data.db");
    {
        let store = SqliteStore::builder(&db).table("IP_Data").open().unwrap();
        let now = SystemClock.now();
        let rule = BanRule::new(1, Duration::from_secs(60), Duration::from_secs(600));
        wait(store.report(&ip("203.0.113.9"), &rule, now));
        wait(store.ban(&ip("198.51.100.1"), None, now));
    }
    let listed = json(&floodgate(&[
        "--sqlite", &db, "--table", "IP_Data", "bans", "--json",
    ]));
    let bans = listed["bans"].as_array().unwrap();
    assert_eq!(bans.len(), 2, "{listed}");
    assert_eq!(
        (bans[0]["client"].as_str(), bans[0]["reason"].as_str()),
        (Some("203.0.113.9"), Some("report"))
    );
    assert_eq!(
        (bans[1]["client"].as_str(), bans[1]["reason"].as_str()),
        (Some("198.51.100.1"), Some("blacklist"))
    );
    assert!(
        bans[0]["until"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 UTC"
    );

    let table = floodgate(&["--sqlite", &db, "--table", "IP_Data", "bans"]);
    assert_eq!(table.status.code(), Some(0));
    let text = stdout(&table);
    assert!(text.starts_with("CLIENT"), "{text}");
    assert!(
        text.contains("203.0.113.9") && text.contains("report"),
        "{text}"
    );

    let ban = floodgate(&[
        "--sqlite",
        &db,
        "--table",
        "IP_Data",
        "ban",
        "192.0.2.7",
        "--for",
        "1h",
    ]);
    assert_eq!(
        ban.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ban.stderr)
    );
    assert!(
        stdout(&ban).starts_with("192.0.2.7: banned until "),
        "{}",
        stdout(&ban)
    );
    let status = json(&floodgate(&[
        "--sqlite",
        &db,
        "--table",
        "IP_Data",
        "status",
        "192.0.2.7",
        "--json",
    ]));
    assert_eq!(status["ban"]["reason"], "operator");

    let unban = floodgate(&[
        "--sqlite",
        &db,
        "--table",
        "IP_Data",
        "unban",
        "203.0.113.9",
    ]);
    assert_eq!(stdout(&unban), "unbanned\n");
    let again = floodgate(&[
        "--sqlite",
        &db,
        "--table",
        "IP_Data",
        "unban",
        "203.0.113.9",
    ]);
    assert_eq!(
        (again.status.code(), stdout(&again)),
        (Some(0), "was not banned\n".to_owned())
    );
    let black = json(&floodgate(&[
        "--sqlite",
        &db,
        "--table",
        "IP_Data",
        "blacklist",
        "user:42",
        "--json",
    ]));
    assert_eq!(
        (black["client"].as_str(), black["ban"]["until"].is_null()),
        (Some("user:42"), true)
    );
    let left = json(&floodgate(&[
        "--sqlite", &db, "--table", "IP_Data", "bans", "--json",
    ]));
    let clients: Vec<&str> = left["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["client"].as_str().unwrap())
        .collect();
    assert_eq!(clients, ["192.0.2.7", "198.51.100.1", "user:42"]);
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1() {
    let dir = TempDir::new("usage");
    let db = dir.file("x.db");
    for args in [
        vec!["bans"],                            // nowhere to look
        vec!["--sqlite", &db, "ban", "1.2.3.4"], // neither --for nor --forever
        vec!["--sqlite", &db, "ban", "1.2.3.4", "--for", "soon"],
        vec![
            "--sqlite",
            &db,
            "ban",
            "1.2.3.4",
            "--for",
            "1h",
            "--forever",
        ],
        vec!["--sqlite", &db, "--redis", "redis://127.0.0.1/", "bans"],
        vec!["--sqlite", &db, "--prefix", "shop", "bans"], // a prefix is Redis's
        vec!["--sqlite", &db, "top"],                      // only the app counts offenders
        vec!["--table", "t", "bans"],                      // a table is SQLite's
        vec!["--redis", "redis://127.0.0.1:9/", "--table", "t", "bans"],
        vec![
            "--url",
            "http://127.0.0.1:9/_floodgate",
            "--token",
            "0123456789abcdef0123",
            "--table",
            "t",
            "bans",
        ],
        vec!["--url", "http://127.0.0.1:9/_floodgate", "bans"], // no token
        vec!["frobnicate"],
    ] {
        let o = floodgate(&args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let not_sqlite = dir.file("text.db");
    std::fs::write(
        &not_sqlite,
        "not a database at all, just some text long enough",
    )
    .unwrap();
    let o = floodgate(&["--sqlite", &not_sqlite, "bans"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not an SQLite database"));
    let refused = floodgate(&[
        "--url",
        "http://127.0.0.1:9/_floodgate",
        "--token",
        TOKEN,
        "bans",
    ]);
    assert_eq!(refused.status.code(), Some(1), "nothing listens on port 9");
}

#[test]
fn import_flaskfloodgate_carries_blacklists_and_running_blocks() {
    let dir = TempDir::new("import");
    let old = dir.file("old.db");
    let new = dir.file("ip-data.db");
    let future = SystemClock.now().as_millis() / 1000 + 3_600;
    {
        let conn = rusqlite::Connection::open(&old).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE IP_Data (ip TEXT PRIMARY KEY, amount INTEGER, \
               last_window_request_limit INTEGER, blocked INTEGER);
             CREATE TABLE IP_DataBlacklist (ip TEXT NOT NULL);
             INSERT INTO IP_DataBlacklist VALUES ('198.51.100.66'), ('not an ip'), (' 2001:db8::1 ');
             INSERT INTO IP_Data VALUES ('203.0.113.5', 30, {future}, 1);
             INSERT INTO IP_Data VALUES ('203.0.113.6', 3, {future}, 0);
             INSERT INTO IP_Data VALUES ('203.0.113.7', 30, 1000, 2);"
        ))
        .unwrap();
    }
    let o = floodgate(&[
        "import-flaskfloodgate",
        &old,
        "--table",
        "IP_Data",
        "--into",
        &new,
        "--amount",
        "20",
        "--json",
    ]);
    let summary = json(&o);
    assert_eq!(
        (
            summary["blacklisted"].as_u64(),
            summary["blocked"].as_u64(),
            summary["skipped"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    let listed = json(&floodgate(&["--sqlite", &new, "bans", "--json"]));
    let got: Vec<(String, String)> = listed["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["client"].as_str().unwrap().to_owned(),
                b["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("203.0.113.5".to_owned(), "operator".to_owned()),
            ("198.51.100.66".to_owned(), "blacklist".to_owned()),
            ("2001:db8::/64".to_owned(), "blacklist".to_owned()),
        ]
    );
    // A file rewritten by 1.0.1's UPDATE without WHERE: no blocks, a warning.
    let old2 = dir.file("old2.db");
    {
        let conn = rusqlite::Connection::open(&old2).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE T (ip TEXT PRIMARY KEY, amount INTEGER, last_window_request_limit INTEGER, blocked INTEGER);
             CREATE TABLE TBlacklist (ip TEXT NOT NULL);
             INSERT INTO T VALUES ('192.0.2.1', 50, {future}, 3), ('192.0.2.2', 50, {future}, 3);"
        ))
        .unwrap();
    }
    let o = floodgate(&[
        "import-flaskfloodgate",
        &old2,
        "--table",
        "T",
        "--into",
        &dir.file("n2.db"),
        "--amount",
        "20",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("0 blocked") && stdout(&o).contains("UPDATE without WHERE"),
        "{}",
        stdout(&o)
    );
    // A hostile table name never reaches SQL.
    let o = floodgate(&[
        "import-flaskfloodgate",
        &old,
        "--table",
        "x\"; DROP TABLE y; --",
        "--into",
        &new,
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = floodgate(&[
        "import-flaskfloodgate",
        &old,
        "--table",
        "Missing",
        "--into",
        &new,
    ]);
    assert_eq!(o.status.code(), Some(1));
}

#[actix_web::test]
async fn the_admin_api_of_a_running_app() {
    let fg = Floodgate::new();
    let app_fg = fg.clone();
    let srv = actix_test::start(move || {
        App::new()
            .wrap(app_fg.clone())
            .service(app_fg.admin("/_floodgate").token(TOKEN))
    });
    let url = srv.url("/_floodgate");
    let run = |args: &[&str]| {
        let mut all = vec!["--url", url.as_str(), "--token", TOKEN];
        all.extend_from_slice(args);
        floodgate(&all)
    };
    let o = run(&["ban", "203.0.113.50", "--for", "90m"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(&["blacklist", "user/7 with space"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let listed = json(&run(&["bans", "--json"]));
    let clients: Vec<&str> = listed["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["client"].as_str().unwrap())
        .collect();
    assert_eq!(clients, ["203.0.113.50", "user/7 with space"]);
    assert_eq!(
        json(&run(&["top", "--json"])),
        serde_json::json!({"clients": []})
    );
    assert_eq!(stdout(&run(&["unban", "203.0.113.50"])), "unbanned\n");
    let wrong = floodgate(&["--url", &url, "--token", "wrong-token-wrong-token", "bans"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));
}

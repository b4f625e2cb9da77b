//! The `floodgate` binary on Redis: a redis-server and a Redis Cluster of three masters that
//! the test binary starts itself (the shared helpers of `floodgate/tests/support`), each test
//! returning early with a notice when redis-server is not installed, unless
//! FLOODGATE_REQUIRE_REDIS=1 makes that a failure.

use std::collections::BTreeSet;
use std::process::Output;

use crate::redis_cluster::RedisCluster;
use crate::redis_server::{free_port, RedisServer};
use crate::{floodgate, json, stdout};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The clients of a `bans --json` listing, with their reasons, in its order.
fn listed(o: &Output) -> Vec<(String, String)> {
    let listing = json(o);
    listing["bans"]
        .as_array()
        .unwrap_or_else(|| panic!("a list of bans: {listing}"))
        .iter()
        .map(|b| {
            (
                b["client"].as_str().unwrap().to_owned(),
                b["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_redis_server() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    let url = redis.url();
    let run = |args: &[&str]| {
        let mut all = vec!["--redis", url.as_str(), "--prefix", "shop"];
        all.extend_from_slice(args);
        floodgate(&all)
    };
    assert_eq!(
        run(&["ban", "1.2.3.4", "--for", "1h"]).status.code(),
        Some(0)
    );
    assert_eq!(run(&["blacklist", "2001:db8::1"]).status.code(), Some(0));
    let got = listed(&run(&["bans", "--json"]));
    assert_eq!(
        got,
        [
            ("1.2.3.4".to_owned(), "operator".to_owned()),
            ("2001:db8::/64".to_owned(), "blacklist".to_owned())
        ]
    );
    let status = json(&run(&["status", "1.2.3.4", "--json"]));
    assert_eq!(status["ban"]["reason"], "operator");
    assert!(status["ban"]["since"].as_str().is_some(), "{status}");
    assert_eq!(stdout(&run(&["unban", "1.2.3.4"])), "unbanned\n");
    let other = floodgate(&["--redis", &url, "--prefix", "other", "bans", "--json"]);
    assert_eq!(
        json(&other)["bans"],
        serde_json::json!([]),
        "prefixes are apart"
    );
}

/// Clients banned through `--redis-cluster`: their states lie on every master (each
/// client's key in its own slot), and the command lists, reads and lifts them all.
#[test]
fn a_redis_cluster_over_all_its_masters() {
    let Some(cluster) = RedisCluster::shared() else {
        return;
    };
    let nodes = cluster.nodes().join(",");
    let prefix = cluster.prefix().to_owned();
    let run = |args: &[&str]| {
        let mut all = vec!["--redis-cluster", nodes.as_str(), "--prefix", &prefix];
        all.extend_from_slice(args);
        floodgate(&all)
    };
    // Bans of different lengths, so that the listing (soonest-ending first) has one order.
    let clients = [
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.3",
        "198.51.100.4",
        "2001:db8::1",
    ];
    for (i, client) in clients.iter().enumerate() {
        let o = run(&["ban", client, "--for", &format!("{}h", i + 1)]);
        assert_eq!(o.status.code(), Some(0), "{client}: {}", stderr(&o));
        assert!(
            stdout(&o).contains(": banned until "),
            "{client}: {}",
            stdout(&o)
        );
    }
    let o = run(&["blacklist", "user:42"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Every master holds the state of some of these clients (the index of bans, one key
    // pair in one slot, left aside).
    let holders: BTreeSet<u16> = cluster
        .ports
        .iter()
        .copied()
        .filter(|&port| {
            cluster
                .keys_on(port)
                .iter()
                .any(|key| !key.contains("{bans}"))
        })
        .collect();
    assert_eq!(
        holders,
        cluster.ports.iter().copied().collect(),
        "the clients' states spread over every master"
    );

    let mut expected: Vec<(String, String)> = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .into_iter()
        .chain(["198.51.100.4", "2001:db8::/64"])
        .map(|c| (c.to_owned(), "operator".to_owned()))
        .collect();
    expected.push(("user:42".to_owned(), "blacklist".to_owned()));
    assert_eq!(listed(&run(&["bans", "--json"])), expected);

    let table = run(&["bans"]);
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(text.starts_with("CLIENT"), "{text}");
    for (client, reason) in &expected {
        assert!(
            text.lines()
                .any(|l| l.contains(client.as_str()) && l.contains(reason.as_str())),
            "{client} {reason} in\n{text}"
        );
    }

    for client in clients {
        let status = json(&run(&["status", client, "--json"]));
        assert_eq!(status["ban"]["reason"], "operator", "{status}");
        assert!(status["ban"]["since"].as_str().is_some(), "{status}");
        assert!(status["ban"]["until"].as_str().is_some(), "{status}");
    }
    let status = json(&run(&["status", "user:42", "--json"]));
    assert_eq!(
        (
            status["ban"]["reason"].as_str(),
            status["ban"]["until"].is_null()
        ),
        (Some("blacklist"), true),
        "{status}"
    );

    // Lifted, one by one, wherever each lies; a second unban finds nothing.
    for client in ["198.51.100.2", "198.51.100.4", "2001:db8::1", "user:42"] {
        assert_eq!(stdout(&run(&["unban", client])), "unbanned\n", "{client}");
        let again = run(&["unban", client]);
        assert_eq!(
            (again.status.code(), stdout(&again)),
            (Some(0), "was not banned\n".to_owned()),
            "{client}"
        );
        let status = json(&run(&["status", client, "--json"]));
        assert!(status["ban"].is_null(), "{status}");
    }
    let left: Vec<String> = listed(&run(&["bans", "--json"]))
        .into_iter()
        .map(|(client, _)| client)
        .collect();
    assert_eq!(left, ["198.51.100.1", "198.51.100.3"]);

    let other = floodgate(&[
        "--redis-cluster",
        &nodes,
        "--prefix",
        "other",
        "bans",
        "--json",
    ]);
    assert_eq!(
        json(&other)["bans"],
        serde_json::json!([]),
        "prefixes are apart"
    );
}

/// A bad `--redis-cluster`: no node (usage, exit 2), or a node URL that does not parse,
/// answers nothing or is no cluster (a store error, exit 1), each with a message that says
/// so and never shows a password.
#[test]
fn a_bad_redis_cluster_value() {
    let bans = |value: &str| floodgate(&["--redis-cluster", value, "bans"]);
    for empty in ["", ",", " , ", "redis://127.0.0.1:7000,"] {
        let o = bans(empty);
        assert_eq!(o.status.code(), Some(2), "{empty:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--redis-cluster takes node URLs"),
            "{empty:?}: {}",
            stderr(&o)
        );
    }
    let o = floodgate(&[
        "--redis-cluster",
        "redis://127.0.0.1:7000",
        "--redis",
        "redis://127.0.0.1/",
        "bans",
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "one place at a time: {}",
        stderr(&o)
    );

    let port = free_port();
    let o = bans(&format!(
        "redis://127.0.0.1:{port},redis://ops:hunter2-secret@[nowhere"
    ));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("invalid Redis Cluster node URL #2"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));

    let o = bans(&format!("redis://ops:hunter2-secret@127.0.0.1:{port}"));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "cannot connect to Redis Cluster at 127.0.0.1:{port}"
        )),
        "nothing listens: {}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));

    let Some(server) = RedisServer::shared() else {
        return;
    };
    let o = bans(&format!("redis://127.0.0.1:{}", server.port));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot connect to Redis Cluster")
            && stderr(&o).contains("cluster support disabled"),
        "a server that is no cluster: {}",
        stderr(&o)
    );
}

//! An upgrade from the key names before hash tags (`{prefix}:ip:…`, `{prefix}:key:…`,
//! `{prefix}:bans`, `{prefix}:bans:info`): `connect` moves the banned clients' states and the
//! index of bans to the new names once, so that no ban is lifted by the upgrade; other
//! clients' counts start afresh. Against a real `redis-server`; skips without it unless
//! `FLOODGATE_REQUIRE_REDIS=1`.
#![cfg(feature = "redis")]

use floodgate::{ClientKey, Decision, Store};

#[path = "support/services.rs"]
mod services;

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::{redis_store, RedisServer};

#[path = "support/walks.rs"]
mod walks;
use walks::*;

/// The name an earlier release gave `client`'s key (prefix `test`).
fn old_name(client: &ClientKey) -> String {
    match client.ip() {
        Some(_) => format!("test:ip:{}", client.stored_name()),
        None => format!("test:{}", client.stored_name()),
    }
}

#[actix_rt::test]
async fn bans_under_the_names_of_earlier_releases_move_at_connect() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let plan = global(&[(2, 3_600)]);
    let (forever, until, counted) = (client(1), ClientKey::custom("mallory"), client(3));
    {
        // A store's keys, then renamed to the old names: an earlier release's data.
        let s = redis_store(&server, secs(0)).await;
        s.ban(&forever, None, at(0)).await.unwrap();
        s.ban(&until, Some(at(600_000)), at(10)).await.unwrap();
        assert!(check(&s, &counted, &plan, 20).await.is_allowed());
        assert!(check(&s, &counted, &plan, 30).await.is_allowed());
        for c in [&forever, &until, &counted] {
            assert_eq!(server.cli(&["RENAME", &s.key_of(c), &old_name(c)]), "OK");
        }
        assert_eq!(server.cli(&["RENAME", "test:{bans}", "test:bans"]), "OK");
        assert_eq!(
            server.cli(&["RENAME", "test:{bans}:info", "test:bans:info"]),
            "OK"
        );
        // A member that names no client only leaves the index.
        assert_eq!(server.cli(&["ZADD", "test:bans", "5", "not a client"]), "1");
    }

    let s = redis_store(&server, secs(0)).await;
    assert!(matches!(
        check(&s, &forever, &plan, 40).await,
        Decision::Banned { until: None, .. }
    ));
    assert!(matches!(
        check(&s, &until, &plan, 40).await,
        Decision::Banned { until: Some(t), .. } if t == at(600_000)
    ));
    let page = s.bans(None, 10, at(40)).await.unwrap();
    let listed: Vec<_> = page
        .bans
        .iter()
        .map(|b| (b.client.clone(), b.since))
        .collect();
    assert_eq!(
        listed,
        [
            (until.clone(), Some(at(10))),
            (forever.clone(), Some(at(0)))
        ],
        "listed, each with the start it had"
    );
    // The old index is gone; an unbanned client's count starts afresh (its old key is left
    // to expire).
    assert_eq!(server.cli(&["EXISTS", "test:bans", "test:bans:info"]), "0");
    assert_eq!(server.cli(&["EXISTS", &old_name(&forever)]), "0");
    assert!(check(&s, &counted, &plan, 50).await.is_allowed());
    assert!(check(&s, &counted, &plan, 60).await.is_allowed());
    assert!(!check(&s, &counted, &plan, 70).await.is_allowed());

    // Connecting again moves nothing and changes nothing.
    let again = redis_store(&server, secs(0)).await;
    assert_eq!(again.bans(None, 10, at(80)).await.unwrap().bans.len(), 2);
    assert!(s.unban(&forever, at(90)).await.unwrap());
    assert!(check(&again, &forever, &plan, 100).await.is_allowed());
}

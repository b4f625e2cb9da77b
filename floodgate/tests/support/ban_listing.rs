//! The ban listing scenario, written once for every store (memory, SQLite in each
//! durability mode, Redis): shared by the store suites through `#[path]`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use floodgate::{
    BanCursor, BanEntry, BanReason, BanRule, ClientKey, Plan, Policy, ScopeId, Store, Timestamp,
};

const T0: u64 = 1_700_000_000_000;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

fn ip(n: u8) -> ClientKey {
    ClientKey::from_ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)), 64)
}

/// Every page of the listing at `now`, `limit` entries at a time, each page's cursor passed
/// through its text form as an API would.
async fn all_pages(store: &dyn Store, limit: usize, now: Timestamp) -> Vec<Vec<BanEntry>> {
    let mut pages = Vec::new();
    let mut cursor: Option<BanCursor> = None;
    loop {
        let page = store
            .bans(cursor.as_ref(), limit, now)
            .await
            .expect("list bans");
        assert!(page.bans.len() <= limit, "a page holds at most its limit");
        pages.push(page.bans);
        match page.next {
            Some(next) => cursor = Some(next.to_string().parse().expect("cursor text")),
            None => return pages,
        }
        assert!(pages.len() < 100, "the listing ends");
    }
}

fn summary(entries: &[BanEntry]) -> Vec<(ClientKey, BanReason, Option<u64>, Option<u64>)> {
    entries
        .iter()
        .map(|e| {
            let ms = |t: Option<Timestamp>| t.map(|t| t.as_millis() - T0);
            (e.client.clone(), e.reason, ms(e.since), ms(e.until))
        })
        .collect()
}

/// Bans of every reason are listed soonest-ending first (permanent last), with their
/// reason, start and end; pages resume after their cursor; a ban lengthened keeps its
/// start; expired and lifted bans never appear.
pub(crate) async fn bans_are_listed_page_by_page(store: &dyn Store) {
    let (reported, operator, blacklisted, punished, probed, custom, lifted) = (
        ip(1),
        ip(2),
        ip(3),
        ip(4),
        ip(5),
        ClientKey::custom("user:7"),
        ip(6),
    );
    let none = store.bans(None, 10, at(0)).await.expect("list bans");
    assert!(
        none.bans.is_empty() && none.next.is_none(),
        "nobody is banned yet"
    );

    // Reported twice: banned from 1 s for 60 s.
    let rule = BanRule::new(2, Duration::from_secs(10), Duration::from_secs(60));
    store.report(&reported, &rule, at(0)).await.unwrap();
    store.report(&reported, &rule, at(1_000)).await.unwrap();
    store
        .ban(&operator, Some(at(30_000)), at(2_000))
        .await
        .unwrap();
    store.ban(&blacklisted, None, at(3_000)).await.unwrap();
    store
        .extend_ban(&probed, Some(at(90_000)), BanReason::Probe, at(4_000))
        .await
        .unwrap();
    store
        .ban(&custom, Some(at(30_000)), at(5_000))
        .await
        .unwrap();
    store
        .ban(&lifted, Some(at(50_000)), at(5_000))
        .await
        .unwrap();
    // A policy of one request per 10 s that punishes its first block with a 20 s ban.
    let policy = Policy::new(1, Duration::from_secs(10))
        .block_limit(0)
        .block_exceed_duration(Some(Duration::from_secs(20)));
    let plan = Arc::new(Plan::new([], Some((ScopeId::named("listing"), policy))));
    assert!(store
        .check(&punished, &plan, at(6_000))
        .await
        .unwrap()
        .is_allowed());
    assert!(!store
        .check(&punished, &plan, at(6_001))
        .await
        .unwrap()
        .is_allowed());
    assert!(store.unban(&lifted, at(6_500)).await.unwrap());
    // The probe's ban lengthened while in force keeps its start.
    store
        .extend_ban(&probed, Some(at(95_000)), BanReason::Probe, at(7_000))
        .await
        .unwrap();

    let now = at(8_000);
    let pages = all_pages(store, 2, now).await;
    assert_eq!(pages.len(), 3, "six bans, two a page");
    let listed: Vec<BanEntry> = pages.concat();
    assert_eq!(
        summary(&listed),
        vec![
            (
                punished.clone(),
                BanReason::Punished,
                Some(6_001),
                Some(26_001)
            ),
            (
                operator.clone(),
                BanReason::Operator,
                Some(2_000),
                Some(30_000)
            ),
            (
                custom.clone(),
                BanReason::Operator,
                Some(5_000),
                Some(30_000)
            ),
            (
                reported.clone(),
                BanReason::Reported,
                Some(1_000),
                Some(61_000)
            ),
            (probed.clone(), BanReason::Probe, Some(4_000), Some(95_000)),
            (blacklisted.clone(), BanReason::Operator, Some(3_000), None),
        ],
        "order: soonest-ending first (ties by key text), permanent last"
    );
    assert!(
        !listed.iter().any(|e| e.client == lifted),
        "a lifted ban never appears"
    );

    // At 30 s the operator's two 30 s bans and the punishment have ended.
    let later = summary(&all_pages(store, 100, at(30_000)).await.concat());
    let clients: Vec<&ClientKey> = later.iter().map(|e| &e.0).collect();
    assert_eq!(
        clients,
        vec![&reported, &probed, &blacklisted],
        "expired bans never appear"
    );

    // A cursor whose client was unbanned between two pages still resumes in place.
    let first = store.bans(None, 1, at(30_000)).await.unwrap();
    assert_eq!(first.bans[0].client, reported);
    assert!(store.unban(&reported, at(30_000)).await.unwrap());
    let rest = store
        .bans(first.next.as_ref(), 10, at(30_000))
        .await
        .unwrap();
    let rest: Vec<&ClientKey> = rest.bans.iter().map(|e| &e.client).collect();
    assert_eq!(rest, vec![&probed, &blacklisted]);
}

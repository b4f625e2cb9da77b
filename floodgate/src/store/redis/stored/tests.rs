use super::*;
use crate::state::BanReason;
use msgpack::Writer;

#[test]
fn text_values_of_versions_1_and_2_decode() {
    let blob =
        "1 1700000000000 -1 2 0 2 5 6 2 L 42 1700000060000 2 1 2 P 7 1 2 3 4 5 6 7 8 9 10 11 12 -1";
    let st = decode_state(blob.as_bytes()).unwrap();
    assert_eq!(st.ban_slot(), Some((u64::MAX, BanReason::Operator)));
    assert_eq!(st.offences().unwrap().0, &[5, 6]);
    assert_eq!(st.scopes.len(), 2);
    let Scope::Policy(p) = &st.scopes[1].1 else {
        panic!("policy")
    };
    assert_eq!(
        (p.window_start, p.grace_window, p.expires),
        (1, 12, u64::MAX)
    );
    assert!(decode_state(b"3 whatever").is_none());
    // Format 2: a log with the bounded window of a rule of 1,000 per minute.
    let blob = "2 1700000000000 0 0 0 0 1 L 42 1700000060000 0 1 1000 1700000000 2 0 7 61 3";
    let st = decode_state(blob.as_bytes()).unwrap();
    let Scope::RuleLog(log) = &st.scopes[0].1 else {
        panic!("log")
    };
    let w = &log.windows.as_ref().unwrap().0[0];
    let parts: Vec<_> = w.parts().collect();
    assert_eq!(
        parts,
        [(1_700_000_000, 7)],
        "offsets past the ring are dropped"
    );
    assert!(
        decode_state(b"2 1 0 0 0 0 1 L 42 5 0 1 0 1 0").is_none(),
        "width 0"
    );
    assert!(decode_state(b"1 5").is_none());
}

fn key(w: &mut Writer, k: &str) {
    w.short_str(k);
}

/// A version 3 value as the script writes it: a log with one time and the window of a rule
/// of 1,000 per minute (its slots a map), a log whose window's slots are keyed 1..2 (an
/// array, as cmsgpack writes such a table), and a policy.
fn version_3() -> Vec<u8> {
    let mut w = Writer::default();
    w.uint(3);
    w.map(6);
    for (k, v) in [
        ("last_seen", 1_700_000_000_000),
        ("ban_until", 1 << 53),
        ("ban_reason", 3),
    ] {
        key(&mut w, k);
        w.uint(v);
    }
    key(&mut w, "offences");
    w.array(1);
    w.uint(1_699_999_999_000);
    key(&mut w, "off_exp");
    w.uint(0);
    key(&mut w, "scopes");
    w.array(3);
    for (id, slots_as_array) in [("42", false), ("43", true)] {
        w.map(5);
        key(&mut w, "id");
        w.short_str(id);
        key(&mut w, "kind");
        w.short_str("L");
        key(&mut w, "expires");
        w.uint(1_700_000_060_000);
        key(&mut w, "times");
        w.array(1);
        w.uint(1_700_000_000_000);
        key(&mut w, "wins");
        w.array(1);
        w.map(4);
        key(&mut w, "width");
        w.uint(1_000);
        key(&mut w, "base");
        if slots_as_array {
            w.uint(1);
            key(&mut w, "total");
            w.uint(5);
            key(&mut w, "slots");
            w.array(2);
            w.uint(2);
            w.uint(3);
        } else {
            w.uint(1_699_999);
            key(&mut w, "total");
            w.uint(7);
            key(&mut w, "slots");
            w.map(1);
            w.uint(1_700_000);
            w.uint(7);
        }
    }
    w.map(15);
    key(&mut w, "id");
    w.short_str("18446744073709551615");
    key(&mut w, "kind");
    w.short_str("P");
    for (i, f) in [
        "window_start",
        "count",
        "carry",
        "blocked_until",
        "block_count",
        "punished_until",
        "punishments",
        "last_request",
        "last_seen",
        "last_block_at",
        "grace_used_at",
        "grace_window",
    ]
    .into_iter()
    .enumerate()
    {
        key(&mut w, f);
        w.uint(i as u64 + 1);
    }
    key(&mut w, "expires");
    w.uint(1 << 53);
    w.0
}

#[test]
fn version_3_values_decode_and_damaged_ones_are_refused() {
    let blob = version_3();
    let st = decode_state(&blob).unwrap();
    assert_eq!(st.ban_slot(), Some((u64::MAX, BanReason::Punished)));
    assert_eq!(st.offences().unwrap().0, &[1_699_999_999_000]);
    let window = |k: usize| {
        let Scope::RuleLog(log) = &st.scopes[k].1 else {
            panic!("log")
        };
        assert_eq!((log.expires, log.times.len()), (1_700_000_060_000, 1));
        log.windows.as_ref().unwrap().0[0]
            .parts()
            .collect::<Vec<_>>()
    };
    assert_eq!(window(0), [(1_700_000, 7)]);
    assert_eq!(window(1), [(1, 2), (2, 3)]);
    assert_eq!(st.scopes[2].0, ScopeId(u64::MAX));
    let Scope::Policy(p) = &st.scopes[2].1 else {
        panic!("policy")
    };
    assert_eq!(
        (p.window_start, p.grace_window, p.expires),
        (1, 12, u64::MAX)
    );
    // Every truncation, a trailing value, another version, a field missing: no state, and
    // no panic.
    for end in 0..blob.len() {
        assert!(decode_state(&blob[..end]).is_none(), "cut at {end}");
    }
    let mut longer = blob.clone();
    longer.push(0);
    assert!(decode_state(&longer).is_none());
    let mut other = blob.clone();
    other[0] = 4;
    assert!(decode_state(&other).is_none());
    let renamed = String::from_utf8_lossy(&blob).replace("off_exp", "off_exq");
    assert!(decode_state(renamed.as_bytes()).is_none());
}

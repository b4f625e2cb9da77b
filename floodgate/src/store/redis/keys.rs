//! The names of the Redis store's keys: one authority for them.
//!
//! - A client's state: `{prefix}:{ip:ADDRESS}` (`shop:{ip:203.0.113.7}`,
//!   `shop:{ip:2001:db8:1:2::/64}`) or `{prefix}:{key:KEY}` for a custom key. The braces are
//!   Redis Cluster's hash tag: the slot comes from the client part alone, so clients spread
//!   over every master while each decision touches one key in one slot.
//! - The index of bans: `{prefix}:{bans}` (a sorted set) and `{prefix}:{bans}:info` (a hash),
//!   one hash tag for both, so that the listing script reads them in one slot.
//!
//! Releases before hash tags named them `{prefix}:ip:ADDRESS`, `{prefix}:key:KEY`,
//! `{prefix}:bans` and `{prefix}:bans:info`; [`legacy`] keeps those names for the move of
//! the bans at connect (see `migrate.rs`).

use crate::client::ClientKey;

/// The key of `client`'s state.
pub(super) fn client_key(prefix: &str, client: &ClientKey) -> String {
    let name = client.stored_name();
    // `ip:` before an address; a custom key's stored name starts with `key:`.
    let ip = if client.ip().is_some() { "ip:" } else { "" };
    let mut key = String::with_capacity(prefix.len() + ip.len() + name.len() + 3);
    key.push_str(prefix);
    key.push_str(":{");
    key.push_str(ip);
    key.push_str(&name);
    key.push('}');
    key
}

/// The keys of the index of bans: the sorted set and the hash.
pub(super) fn ban_index_keys(prefix: &str) -> (String, String) {
    (
        format!("{prefix}:{{bans}}"),
        format!("{prefix}:{{bans}}:info"),
    )
}

/// The names of releases before hash tags.
pub(super) mod legacy {
    use crate::client::ClientKey;

    /// The key of `client`'s state.
    pub(in super::super) fn client_key(prefix: &str, client: &ClientKey) -> String {
        match client.ip() {
            Some(_) => format!("{prefix}:ip:{}", client.stored_name()),
            None => format!("{prefix}:{}", client.stored_name()),
        }
    }

    /// The keys of the index of bans.
    pub(in super::super) fn ban_index_keys(prefix: &str) -> (String, String) {
        (format!("{prefix}:bans"), format!("{prefix}:bans:info"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// Redis Cluster's slot of a key (CRC16/XMODEM of its hash tag, or of the whole key).
    fn slot(key: &str) -> u16 {
        let bytes = key.as_bytes();
        let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
            let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &bytes[open + 1..open + 1 + close])
        });
        let mut crc: u16 = 0;
        for &b in tagged.unwrap_or(bytes) {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16_384
    }

    #[test]
    fn client_keys_are_hash_tagged_on_the_client_part() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let c = ClientKey::from_ip(ip, 128);
        assert_eq!(client_key("shop", &c), "shop:{ip:203.0.113.7}");
        let net = ClientKey::from_ip("2001:db8:1:2::9".parse().unwrap(), 64);
        assert_eq!(client_key("shop", &net), "shop:{ip:2001:db8:1:2::/64}");
        let custom = ClientKey::custom("alice");
        assert_eq!(client_key("shop", &custom), "shop:{key:alice}");
        // The slot follows the client, not the prefix: two apps' keys of one client share it.
        assert_eq!(slot(&client_key("a", &c)), slot(&client_key("b", &c)));
        assert_eq!(slot("shop:{ip:203.0.113.7}"), slot("ip:203.0.113.7"));
        // Known slots (`CLUSTER KEYSLOT`): the checksum above is Redis's.
        assert_eq!(slot("foo"), 12_182);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
    }

    #[test]
    fn clients_spread_over_slots_and_the_index_shares_one() {
        let slots: std::collections::HashSet<u16> = (0..=255u8)
            .map(|n| {
                let ip = IpAddr::from([198, 51, 100, n]);
                slot(&client_key("fg", &ClientKey::from_ip(ip, 128)))
            })
            .collect();
        assert!(slots.len() > 200, "256 clients in {} slots", slots.len());
        let (set, info) = ban_index_keys("fg");
        assert_eq!(
            (set.as_str(), info.as_str()),
            ("fg:{bans}", "fg:{bans}:info")
        );
        assert_eq!(slot(&set), slot(&info));
    }

    #[test]
    fn a_custom_key_with_braces_still_names_one_key_of_its_own() {
        // A hostile key cannot reach another client's key or the index: the names differ.
        for hostile in ["}", "{bans}", "a}b", "{", "bans}:info"] {
            let key = client_key("fg", &ClientKey::custom(hostile));
            assert!(key.starts_with("fg:{key:"), "{key}");
            let (set, info) = ban_index_keys("fg");
            assert!(key != set && key != info);
        }
        assert_ne!(
            client_key("fg", &ClientKey::custom("a}b")),
            client_key("fg", &ClientKey::custom("a")),
        );
    }

    #[test]
    fn legacy_names_are_those_of_earlier_releases() {
        let c = ClientKey::from_ip("203.0.113.7".parse().unwrap(), 128);
        assert_eq!(legacy::client_key("test", &c), "test:ip:203.0.113.7");
        let custom = ClientKey::custom("alice");
        assert_eq!(legacy::client_key("test", &custom), "test:key:alice");
        assert_eq!(
            legacy::ban_index_keys("test"),
            ("test:bans".to_owned(), "test:bans:info".to_owned())
        );
    }
}

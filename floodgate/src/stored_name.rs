//! The one spelling of a client key in every store: an address (`203.0.113.7`), an IPv6
//! network (`2001:db8::/64`), or `key:` and a custom key, so that a custom key never
//! collides with an address. SQLite rows are keyed by it; Redis keys end with it.

use std::net::IpAddr;

use crate::client::ClientKey;

/// The prefix of a custom key's stored name.
pub(crate) const CUSTOM_PREFIX: &str = "key:";

impl ClientKey {
    /// The name every store keeps this client under: `203.0.113.7`, `2001:db8::/64`, or
    /// `key:` and the custom key. [`ClientKey::from_stored_name`] reads it back.
    pub fn stored_name(&self) -> String {
        match self.ip() {
            // The common case without core::fmt: four numbers and three dots.
            Some(IpAddr::V4(v4)) => {
                let mut text = String::with_capacity(15);
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push('.');
                    }
                    if octet >= 100 {
                        text.push(char::from(b'0' + octet / 100));
                    }
                    if octet >= 10 {
                        text.push(char::from(b'0' + octet / 10 % 10));
                    }
                    text.push(char::from(b'0' + octet % 10));
                }
                text
            }
            Some(IpAddr::V6(_)) => self.to_string(),
            None => format!("{CUSTOM_PREFIX}{self}"),
        }
    }

    /// The client a [`stored_name`](ClientKey::stored_name) names; `None` for a name no
    /// floodgate writes.
    pub fn from_stored_name(name: &str) -> Option<ClientKey> {
        if let Some(custom) = name.strip_prefix(CUSTOM_PREFIX) {
            return Some(ClientKey::custom(custom));
        }
        match name.split_once('/') {
            Some((ip, prefix)) => {
                let ip: IpAddr = ip.parse().ok()?;
                let prefix: u8 = prefix.parse().ok()?;
                Some(ClientKey::from_ip(ip, prefix))
            }
            None => {
                let ip: IpAddr = name.parse().ok()?;
                Some(ClientKey::from_ip(ip, 128))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn every_kind_of_key_round_trips_and_a_custom_key_never_reads_as_an_address() {
        let keys = [
            ClientKey::from_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), 64),
            ClientKey::from_ip(IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)), 64),
            ClientKey::from_ip(IpAddr::V4(Ipv4Addr::new(10, 200, 9, 255)), 64),
            ClientKey::from_ip(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6)),
                64,
            ),
            ClientKey::from_ip(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
            ClientKey::custom("1.2.3.4"),
            ClientKey::custom("key:nested"),
            ClientKey::custom(""),
            ClientKey::custom("tenant/42 ü"),
        ];
        for key in &keys {
            let name = key.stored_name();
            assert_eq!(
                ClientKey::from_stored_name(&name).as_ref(),
                Some(key),
                "{name}"
            );
        }
        assert_eq!(keys[0].stored_name(), "203.0.113.7");
        assert_eq!(keys[3].stored_name(), "2001:db8:1:2::/64");
        assert_eq!(keys[5].stored_name(), "key:1.2.3.4");
        assert_eq!(ClientKey::from_stored_name("custom:x"), None);
        assert_eq!(ClientKey::from_stored_name("2001:db8::/999"), None);
    }
}

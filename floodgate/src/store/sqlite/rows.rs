//! Rows of the SQLite store: a client's key text, times as SQLite integers, and the
//! decoding of stored state.

use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::state::{BanReason, ClientState, Scope};

/// A client's row key: its [`ClientKey::stored_name`].
pub(super) fn key_text(client: &ClientKey) -> String {
    client.stored_name()
}

/// Milliseconds as an SQLite integer (`i64`), saturating: "never" stays the largest value.
/// An `expires_at` of `i64::MAX` so stands for any time from 2^63 - 1 ms on.
pub(super) fn sql_time(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// `now` for comparing with stored `expires_at` values (`expires_at <= now`: expired):
/// below `i64::MAX`, so that a row saturated at `i64::MAX` (kept forever, or until some
/// time past 2^63 ms) is never taken for expired by SQL. The decoded state, compared in
/// `u64`, is the authority on the rest.
pub(super) fn sql_now(now: u64) -> i64 {
    sql_time(now).min(i64::MAX - 1)
}

/// The inverse of [`key_text`]; `None` for a key no floodgate wrote.
pub(super) fn key_from_text(text: &str) -> Option<ClientKey> {
    ClientKey::from_stored_name(text)
}

/// Decodes the state of row `key`, pruned to `now`; `None` when nothing of it is live.
pub(super) fn decode_live(
    key: &str,
    bytes: &[u8],
    now: u64,
) -> Result<Option<ClientState>, StoreError> {
    let mut state = ClientState::decode(bytes)
        .map_err(|e| StoreError::with_source(format!("the SQLite row of {key} is corrupt"), e))?;
    let now_ts = Timestamp::from_millis(now);
    state.prune(now_ts);
    Ok(Some(state).filter(|s| s.expires_at() > now_ts))
}

/// The parts of a state that must be fsynced before they are answered: the ban, and each
/// policy's block end, block count and punishment end.
type DurablePart = (Option<(u64, BanReason)>, Vec<(u64, u32, u64)>);

pub(super) fn durable_part(state: &ClientState) -> DurablePart {
    let policies = state
        .scopes
        .iter()
        .filter_map(|(_, scope)| match scope {
            Scope::Policy(p) => Some((p.blocked_until, p.block_count, p.punished_until)),
            Scope::RuleLog(_) => None,
        })
        .collect();
    (state.ban_slot(), policies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_custom_clients_never_look_like_addresses() {
        use std::net::{IpAddr, Ipv4Addr};
        let ip = ClientKey::from_ip(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)), 64);
        assert_eq!(key_text(&ip), "1.2.3.4");
        assert_eq!(key_text(&ClientKey::custom("1.2.3.4")), "key:1.2.3.4");
    }

    #[test]
    fn key_texts_are_the_addresses_and_read_back() {
        use std::net::{IpAddr, Ipv4Addr};
        let octets = [0u8, 1, 9, 10, 42, 99, 100, 199, 200, 255];
        for a in octets {
            for b in octets {
                let ip = Ipv4Addr::new(a, b, b, a);
                let key = ClientKey::from_ip(IpAddr::V4(ip), 64);
                assert_eq!(key_text(&key), ip.to_string());
                assert_eq!(key_from_text(&key_text(&key)), Some(key));
            }
        }
        for key in [
            ClientKey::from_ip("2001:db8::1".parse().unwrap(), 64),
            ClientKey::from_ip("2001:db8::1".parse().unwrap(), 128),
            ClientKey::custom("user:7"),
        ] {
            assert_eq!(key_from_text(&key_text(&key)), Some(key));
        }
        assert_eq!(key_from_text("not an address"), None);
    }
}

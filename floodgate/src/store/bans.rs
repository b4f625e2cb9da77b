//! Listing the bans in force: [`BanEntry`], pages of them and the cursor between pages.
//!
//! Every store lists bans in one order, soonest-ending first (permanent bans last), clients
//! that end at the same time in the order of their key text, so that a cursor (the last
//! entry's end and key) resumes a listing at the same place in any store, even when bans
//! were added or lifted between two pages.

use std::fmt;
use std::str::FromStr;

use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::state::{BanReason, ClientState};

/// The most entries one page holds, whatever the caller asks for.
pub const MAX_BAN_PAGE: usize = 1_000;

/// One ban in force.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BanEntry {
    /// The banned client.
    pub client: ClientKey,
    /// Why.
    pub reason: BanReason,
    /// When the ban began (the start of the stretch of banned time it continues); `None`
    /// for a ban stored before floodgate kept its start.
    pub since: Option<Timestamp>,
    /// When it ends; `None` for a permanent ban (a blacklist).
    pub until: Option<Timestamp>,
}

impl BanEntry {
    /// The ban in force at `now` in `state`, if any.
    pub fn of_state(client: ClientKey, state: &ClientState, now: Timestamp) -> Option<BanEntry> {
        let (until, reason) = state.ban_at(now)?;
        Some(BanEntry {
            client,
            reason,
            since: state.ban_since(now),
            until,
        })
    }

    /// Where this entry sits in a listing.
    pub fn cursor(&self) -> BanCursor {
        BanCursor {
            until: self.until.map_or(u64::MAX, Timestamp::as_millis),
            key: key_text(&self.client),
        }
    }
}

/// One page of a listing of bans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BanPage {
    /// The bans, in listing order.
    pub bans: Vec<BanEntry>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<BanCursor>,
}

impl BanPage {
    /// A page of `bans` (at most `limit` of them are kept) with a cursor when more remain.
    pub fn new(mut bans: Vec<BanEntry>, limit: usize) -> BanPage {
        let limit = page_limit(limit);
        let next = (bans.len() > limit).then(|| bans[limit - 1].cursor());
        bans.truncate(limit);
        BanPage { bans, next }
    }
}

/// The number of entries a page holds for a caller's `limit`: at least 1, at most
/// [`MAX_BAN_PAGE`].
pub fn page_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_BAN_PAGE)
}

/// A place in a listing of bans: after the entry that ends at `until` for the client whose
/// key text is `key`. Written `"{until in ms} {key text}"`; it is opaque to callers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BanCursor {
    pub(crate) until: u64,
    pub(crate) key: String,
}

impl BanCursor {
    /// True when an entry ending at `until` for the client with key text `key` comes after
    /// this cursor.
    pub(crate) fn is_before(&self, until: u64, key: &str) -> bool {
        (self.until, self.key.as_str()) < (until, key)
    }
}

impl fmt::Display for BanCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.until, self.key)
    }
}

/// A cursor that no listing wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadCursor;

impl fmt::Display for BadCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a cursor of a ban listing")
    }
}

impl std::error::Error for BadCursor {}

impl FromStr for BanCursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> Result<Self, BadCursor> {
        let (until, key) = s.split_once(' ').ok_or(BadCursor)?;
        let until = until.parse().map_err(|_| BadCursor)?;
        if key.is_empty() || key.len() > 2048 {
            return Err(BadCursor);
        }
        Ok(BanCursor {
            until,
            key: key.to_owned(),
        })
    }
}

/// A client's key text, the order of clients ending at the same time: its
/// [`ClientKey::stored_name`] (the SQLite store's row key, so that the file's index gives the
/// same order).
pub(crate) fn key_text(client: &ClientKey) -> String {
    client.stored_name()
}

/// A page of the bans in `entries` (in any order) that come after `after`: for stores that
/// scan their clients.
pub(crate) fn page_of(
    entries: impl IntoIterator<Item = BanEntry>,
    after: Option<&BanCursor>,
    limit: usize,
) -> BanPage {
    let mut keyed: Vec<(BanCursor, BanEntry)> = entries
        .into_iter()
        .map(|e| (e.cursor(), e))
        .filter(|(c, _)| after.is_none_or(|a| a.is_before(c.until, &c.key)))
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    keyed.truncate(page_limit(limit) + 1);
    BanPage::new(keyed.into_iter().map(|(_, e)| e).collect(), limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn entry(n: u8, until: Option<u64>) -> BanEntry {
        BanEntry {
            client: ClientKey::from_ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)), 64),
            reason: BanReason::Operator,
            since: None,
            until: until.map(Timestamp::from_millis),
        }
    }

    #[test]
    fn pages_go_soonest_ending_first_then_by_key_and_resume_after_the_cursor() {
        let all = vec![
            entry(3, None),
            entry(1, Some(50)),
            entry(2, Some(20)),
            entry(4, None),
            entry(5, Some(20)),
        ];
        let first = page_of(all.clone(), None, 2);
        assert_eq!(first.bans, vec![entry(2, Some(20)), entry(5, Some(20))]);
        let next = first.next.expect("more");
        assert_eq!(next.to_string(), "20 10.0.0.5");
        let cursor: BanCursor = next.to_string().parse().unwrap();
        let second = page_of(all.clone(), Some(&cursor), 2);
        assert_eq!(second.bans, vec![entry(1, Some(50)), entry(3, None)]);
        let third = page_of(all, second.next.as_ref(), 2);
        assert_eq!(third.bans, vec![entry(4, None)]);
        assert_eq!(third.next, None);
    }

    #[test]
    fn limits_are_clamped_and_bad_cursors_rejected() {
        let all: Vec<_> = (0..5).map(|n| entry(n, Some(10))).collect();
        assert_eq!(page_of(all, None, 0).bans.len(), 1);
        for bad in ["", "12", "x 1.2.3.4", "12 ", "-1 a"] {
            assert_eq!(bad.parse::<BanCursor>(), Err(BadCursor), "{bad:?}");
        }
    }
}

//! The top offenders: the clients refused or reported most in a recent window, in constant
//! memory whatever the number of clients (Space-Saving, Metwally et al., 2005).
//!
//! Two summaries of [`TOP_CAPACITY`] counters each: the current window's and the previous
//! one's, swapped every [`TOP_WINDOW`] on floodgate's clock, so a listing covers the last one
//! to two windows. A summary that is full replaces its smallest counter with the newcomer,
//! which inherits that count as its error: any client refused or reported more than
//! `1 / TOP_CAPACITY` of the window's events keeps its counter, so a flood of forged
//! addresses cannot hide a heavy offender (it only churns the small counters). The refusals
//! and reports shown are those counted since the client last entered the summary: lower
//! bounds, exact for a client that never left it.
//!
//! Allowed requests never reach this: only refusals (limits, bans, deny lists, missing keys)
//! and reports are counted.

use std::sync::Mutex;

use foldhash::fast::RandomState;
use hashbrown::HashMap;

use crate::client::ClientKey;
use crate::clock::Timestamp;

/// Counters per window.
pub(crate) const TOP_CAPACITY: usize = 256;

/// The length of one window, in milliseconds (10 minutes).
pub(crate) const TOP_WINDOW: u64 = 10 * 60 * 1000;

/// One of the top offenders.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Offender {
    /// The client.
    pub client: ClientKey,
    /// Requests refused (limits, bans, deny lists) in the window.
    pub refusals: u64,
    /// Offences reported in the window.
    pub reports: u64,
}

#[derive(Debug)]
struct Slot {
    key: ClientKey,
    /// The rank: error + refusals + reports.
    count: u64,
    refusals: u64,
    reports: u64,
}

/// One window's Space-Saving summary.
#[derive(Debug, Default)]
struct Summary {
    slots: Vec<Slot>,
    index: HashMap<ClientKey, usize, RandomState>,
}

impl Summary {
    fn add(&mut self, key: &ClientKey, refusal: bool) {
        let i = match self.index.get(key) {
            Some(&i) => i,
            None if self.slots.len() < TOP_CAPACITY => {
                self.slots.push(Slot {
                    key: key.clone(),
                    count: 0,
                    refusals: 0,
                    reports: 0,
                });
                self.index.insert(key.clone(), self.slots.len() - 1);
                self.slots.len() - 1
            }
            None => {
                // Full: the smallest counter goes; the newcomer inherits its count.
                let (i, _) = self
                    .slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.count)
                    .expect("a full summary has slots");
                let slot = &mut self.slots[i];
                self.index.remove(&slot.key);
                slot.key = key.clone();
                slot.refusals = 0;
                slot.reports = 0;
                self.index.insert(key.clone(), i);
                i
            }
        };
        let slot = &mut self.slots[i];
        slot.count = slot.count.saturating_add(1);
        if refusal {
            slot.refusals = slot.refusals.saturating_add(1);
        } else {
            slot.reports = slot.reports.saturating_add(1);
        }
    }
}

#[derive(Debug, Default)]
struct Windows {
    /// Where the current window began (ms).
    start: u64,
    current: Summary,
    previous: Summary,
}

impl Windows {
    fn rotate(&mut self, now: u64) {
        if now < self.start.saturating_add(TOP_WINDOW) {
            return;
        }
        let elapsed = now - self.start;
        if elapsed >= 2 * TOP_WINDOW {
            self.previous = Summary::default();
            self.current = Summary::default();
        } else {
            self.previous = std::mem::take(&mut self.current);
        }
        self.start = now - elapsed % TOP_WINDOW;
    }
}

/// The top offenders of one floodgate (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct TopOffenders {
    windows: Mutex<Windows>,
}

impl TopOffenders {
    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one refused request of `client`.
    pub(crate) fn refused(&self, client: &ClientKey, now: Timestamp) {
        self.record(client, true, now);
    }

    /// Counts one reported offence of `client`.
    pub(crate) fn reported(&self, client: &ClientKey, now: Timestamp) {
        self.record(client, false, now);
    }

    fn record(&self, client: &ClientKey, refusal: bool, now: Timestamp) {
        let mut w = self.lock();
        w.rotate(now.as_millis());
        w.current.add(client, refusal);
    }

    /// The `n` clients refused or reported most over the last one to two windows, most
    /// first (ties in key order).
    pub(crate) fn top(&self, n: usize, now: Timestamp) -> Vec<Offender> {
        let mut w = self.lock();
        w.rotate(now.as_millis());
        let mut merged: HashMap<&ClientKey, (u64, u64, u64), RandomState> = HashMap::default();
        for slot in w.previous.slots.iter().chain(&w.current.slots) {
            let e = merged.entry(&slot.key).or_default();
            e.0 = e.0.saturating_add(slot.count);
            e.1 = e.1.saturating_add(slot.refusals);
            e.2 = e.2.saturating_add(slot.reports);
        }
        let mut all: Vec<(u64, Offender)> = merged
            .into_iter()
            .map(|(key, (count, refusals, reports))| {
                let client = key.clone();
                (
                    count,
                    Offender {
                        client,
                        refusals,
                        reports,
                    },
                )
            })
            .collect();
        all.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| a.1.client.to_string().cmp(&b.1.client.to_string()))
        });
        all.into_iter().take(n).map(|(_, o)| o).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn ip(n: u32) -> ClientKey {
        ClientKey::from_ip(IpAddr::V4(Ipv4Addr::from(n)), 64)
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(1_000_000_000 + ms)
    }

    #[test]
    fn heavy_offenders_survive_a_flood_of_forged_addresses_in_constant_memory() {
        let top = TopOffenders::default();
        for round in 0..50_000u32 {
            // Each round: the heavy client twice, a report of a second one every 10th
            // round, and one never-seen forged address.
            top.refused(&ip(1), at(0));
            top.refused(&ip(1), at(0));
            if round % 10 == 0 {
                top.reported(&ip(2), at(0));
            }
            top.refused(&ip(1_000_000 + round), at(0));
        }
        let w = top.lock();
        assert!(w.current.slots.len() <= TOP_CAPACITY && w.current.index.len() <= TOP_CAPACITY);
        drop(w);
        let best = top.top(2, at(1));
        assert_eq!(best[0].client, ip(1));
        assert_eq!((best[0].refusals, best[0].reports), (100_000, 0));
        assert_eq!(best[1].client, ip(2));
        assert_eq!((best[1].refusals, best[1].reports), (0, 5_000));
    }

    #[test]
    fn counts_cover_the_last_one_to_two_windows() {
        let top = TopOffenders::default();
        top.refused(&ip(1), at(0));
        top.refused(&ip(2), at(TOP_WINDOW + 1));
        top.refused(&ip(2), at(TOP_WINDOW + 2));
        let both = top.top(10, at(TOP_WINDOW + 3));
        assert_eq!(
            both.iter().map(|o| &o.client).collect::<Vec<_>>(),
            vec![&ip(2), &ip(1)]
        );
        // Two windows on, the first window's refusal is forgotten.
        let later = top.top(10, at(2 * TOP_WINDOW + 5));
        assert_eq!(
            later.iter().map(|o| o.refusals).collect::<Vec<_>>(),
            vec![2]
        );
        assert!(
            top.top(10, at(10 * TOP_WINDOW)).is_empty(),
            "long idle: nothing"
        );
    }
}

//! The local ban cache of a [`RedisStore`](super::RedisStore).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::script::until_of;
use crate::client::ClientKey;
use crate::state::{BanReason, Decision};

/// Bans seen by this process, answered without a round trip while fresh.
#[derive(Debug)]
pub(super) struct BanCache {
    pub(super) ttl_ms: u64,
    pub(super) capacity: usize,
    /// Entries in `map`, read without the lock: with no ban cached (the usual case), the
    /// request path takes no lock at all.
    pub(super) len: AtomicUsize,
    /// Bumped by every unban: a decision asked for before an unban must not cache a ban
    /// after it.
    pub(super) unbans: AtomicU64,
    pub(super) map: Mutex<HashMap<ClientKey, CachedBan>>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct CachedBan {
    /// End of the ban (ms); `u64::MAX` for a blacklist.
    until: u64,
    reason: BanReason,
    /// End of this entry's freshness (ms).
    fresh_until: u64,
}

impl BanCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, CachedBan>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, client: &ClientKey, now: u64) -> Option<Decision> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut map = self.lock();
        let hit = map.get(client)?;
        if now < hit.fresh_until && now < hit.until {
            return Some(Decision::Banned {
                until: until_of(hit.until),
                reason: hit.reason,
                started: false,
            });
        }
        map.remove(client);
        self.len.store(map.len(), Ordering::Relaxed);
        None
    }

    pub(super) fn epoch(&self) -> u64 {
        self.unbans.load(Ordering::SeqCst)
    }

    /// Remembers a ban learnt from an answer asked for at `epoch`.
    pub(super) fn put(
        &self,
        client: &ClientKey,
        until: u64,
        reason: BanReason,
        now: u64,
        epoch: u64,
    ) {
        if until <= now {
            return;
        }
        let mut map = self.lock();
        if self.epoch() != epoch {
            return;
        }
        if map.len() >= self.capacity && !map.contains_key(client) {
            map.retain(|_, b| now < b.fresh_until && now < b.until);
            self.len.store(map.len(), Ordering::Relaxed);
            if map.len() >= self.capacity {
                return;
            }
        }
        map.insert(
            client.clone(),
            CachedBan {
                until,
                reason,
                fresh_until: now.saturating_add(self.ttl_ms),
            },
        );
        self.len.store(map.len(), Ordering::Relaxed);
    }

    pub(super) fn remove(&self, client: &ClientKey) {
        let mut map = self.lock();
        self.unbans.fetch_add(1, Ordering::SeqCst);
        map.remove(client);
        self.len.store(map.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ban_cache_is_bounded_and_drops_stale_entries_first() {
        let cache = BanCache {
            ttl_ms: 1_000,
            capacity: 2,
            len: AtomicUsize::new(0),
            unbans: AtomicU64::new(0),
            map: Mutex::new(HashMap::new()),
        };
        let key = |n: &str| ClientKey::custom(n);
        cache.put(&key("a"), 5_000, BanReason::Operator, 0, 0);
        cache.put(&key("b"), 5_000, BanReason::Operator, 500, 0);
        cache.put(&key("c"), 5_000, BanReason::Operator, 600, 0);
        assert!(cache.get(&key("c"), 600).is_none(), "full: not cached");
        // At 1 000 ms, a's entry is stale and makes room.
        cache.put(&key("c"), 5_000, BanReason::Operator, 1_000, 0);
        assert!(cache.get(&key("c"), 1_000).is_some());
        assert!(cache.get(&key("a"), 1_000).is_none());
        assert!(cache.get(&key("b"), 1_499).is_some());
        assert!(
            cache.get(&key("b"), 1_500).is_none(),
            "fresh for ban_cache only"
        );
        // An answer asked for before an unban is not cached after it.
        let epoch = cache.epoch();
        cache.remove(&key("d"));
        cache.put(&key("d"), 5_000, BanReason::Reported, 1_600, epoch);
        assert!(cache.get(&key("d"), 1_600).is_none());
    }
}

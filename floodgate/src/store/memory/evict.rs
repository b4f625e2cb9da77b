//! Sweeping and eviction in a full shard of a [`MemoryStore`](super::MemoryStore), by what
//! each client has at stake and within the shard's budgets.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use super::journal::{encoded, spill_into};
use super::{Budgets, Entry, Shard};
use crate::clock::Timestamp;
use crate::state::Stake;

/// How one client ranks when a full shard makes room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Never evicted: an operator ban, or a blacklist within the pinned budget.
    Pinned,
    /// An automatic ban (or a blacklist past the pinned budget, as `until == NEVER`):
    /// `(until, last_seen)`, evicted smallest first, and only past the ban budget.
    Ban((u64, u64)),
    /// Unbanned: `(escalation at stake, last_seen)`, evicted smallest first.
    Unbanned((bool, u64)),
}

/// Picks the `n` smallest of a set of ranks: `take` says whether a rank is one of them.
/// Ties at the threshold are taken in the order they are offered, up to the count.
struct Cut<T> {
    threshold: Option<(T, usize)>,
}

impl<T: Ord + Copy> Cut<T> {
    fn new(ranks: &mut [T], n: usize) -> Self {
        let n = n.min(ranks.len());
        if n == 0 {
            return Cut { threshold: None };
        }
        let (_, &mut t, _) = ranks.select_nth_unstable(n - 1);
        let below = ranks.iter().filter(|r| **r < t).count();
        Cut {
            threshold: Some((t, n - below)),
        }
    }

    fn take(&mut self, rank: T) -> bool {
        match &mut self.threshold {
            Some((t, _)) if rank < *t => true,
            Some((t, equal)) if rank == *t && *equal > 0 => {
                *equal -= 1;
                true
            }
            _ => false,
        }
    }
}

impl Shard {
    pub(super) fn sweep(&mut self, now: u64) -> usize {
        let before = self.table.len();
        self.table
            .retain(|e| e.state.expires_at().as_millis() > now);
        let swept = before - self.table.len();
        if let Some(j) = self.journal.as_deref_mut() {
            j.spilled.retain(|s| s.expires > now);
            if swept > 0 {
                j.epoch += 1;
            }
        }
        swept
    }

    /// Makes room for at least one client (and up to an eighth of the shard, so that the
    /// scan is amortised) that arrives with `incoming` at stake, following the eviction
    /// rules of [`MemoryStore`](super::MemoryStore).
    pub(super) fn evict(
        &mut self,
        now: u64,
        budgets: &Budgets,
        incoming: Stake,
        hasher: &RandomState,
    ) {
        self.sweep(now);
        if self.table.len() < budgets.clients + self.extra {
            return;
        }
        let now_ts = Timestamp::from_millis(now);

        // Which blacklists are pinned: what the operator bans leave of the pinned budget,
        // to the longest-standing (ties broken by the key's hash, so that the choice is the
        // same in every pass).
        let mut operators = 0;
        let mut blacklists: Vec<(u64, u64)> = Vec::new();
        for e in self.table.iter() {
            match e.state.stake(now_ts) {
                Stake::Operator => operators += 1,
                Stake::Blacklist { since } => blacklists.push((since, hasher.hash_one(&e.key))),
                _ => {}
            }
        }
        let pinned_room = budgets.pinned.saturating_sub(operators);
        // Operator bans past the pinned budget take no one's room: the shard grows by them.
        self.extra = operators.saturating_sub(budgets.pinned);
        let cap = budgets.clients + self.extra;
        let len = self.table.len();
        if len < cap {
            return;
        }
        let unpinned_from = (blacklists.len() > pinned_room).then(|| {
            let (_, &mut first, _) = blacklists.select_nth_unstable(pinned_room);
            first
        });
        let class = |e: &Entry| match e.state.stake(now_ts) {
            Stake::Counters => Class::Unbanned((false, e.state.last_seen)),
            Stake::Escalation => Class::Unbanned((true, e.state.last_seen)),
            Stake::Ban { until } => Class::Ban((until, e.state.last_seen)),
            Stake::Blacklist { since } => match unpinned_from {
                Some(first) if (since, hasher.hash_one(&e.key)) >= first => {
                    Class::Ban((u64::MAX, e.state.last_seen))
                }
                _ => Class::Pinned,
            },
            Stake::Operator => Class::Pinned,
        };

        let mut bans: Vec<(u64, u64)> = Vec::new();
        let mut unbanned: Vec<(bool, u64)> = Vec::new();
        for e in self.table.iter() {
            match class(e) {
                Class::Ban(r) => bans.push(r),
                Class::Unbanned(r) => unbanned.push(r),
                Class::Pinned => {}
            }
        }
        let incoming_ban = match incoming {
            Stake::Ban { .. } => true,
            Stake::Blacklist { .. } => blacklists.len() >= pinned_room,
            _ => false,
        };
        let excess = (bans.len() + usize::from(incoming_ban)).saturating_sub(budgets.bans);
        let to_free = len - cap + (budgets.clients / 8).max(1);
        let mut ban_cut = Cut::new(&mut bans, excess);
        let mut unbanned_cut = Cut::new(&mut unbanned, to_free.saturating_sub(excess));

        let mut journal = self.journal.as_deref_mut();
        if let Some(j) = journal.as_deref_mut() {
            j.epoch += 1;
        }
        self.table.retain(|e| {
            let evict = match class(e) {
                Class::Pinned => false,
                Class::Ban(r) => ban_cut.take(r),
                Class::Unbanned(r) => unbanned_cut.take(r),
            };
            if evict {
                // A journaled store writes the evicted client's last state, and loads it
                // back when the client returns.
                if let Some(j) = journal.as_deref_mut() {
                    let expires = e.state.expires_at().as_millis();
                    let hash = hasher.hash_one(&e.key);
                    if let Ok(dirty) = j.dirty.find_entry(hash, |k| *k == e.key) {
                        dirty.remove();
                    }
                    spill_into(j, hasher, budgets.spilled, hash, e.key.clone(), expires);
                    j.evicted.push((e.key.clone(), Some(encoded(&e.state))));
                }
            }
            !evict
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{key, ready};
    use super::super::MemoryStore;
    use crate::clock::Timestamp;
    use crate::policy::{Policy, Punishment};
    use crate::rules::{BanRule, Rule};
    use crate::state::{Decision, Plan, ScopeId};
    use crate::store::Store;
    use std::sync::Arc;
    use std::time::Duration;

    const SECOND: Duration = Duration::from_secs(1);

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(1_000_000 + ms)
    }

    /// One shard of 64 clients: 8 pinned, 16 for bans, the rest (40) for unbanned clients.
    fn small_store() -> MemoryStore {
        let store = MemoryStore::builder().max_clients(64).shards(1).build();
        assert_eq!(store.shards.len(), 1);
        let b = store.budgets;
        assert_eq!((b.clients, b.pinned, b.bans), (64, 8, 16));
        store
    }

    fn log_plan() -> Arc<Plan> {
        Arc::new(Plan::new(
            [(
                ScopeId::GLOBAL,
                vec![Rule::new(5, Duration::from_secs(3600))],
            )],
            None,
        ))
    }

    /// One request per 10 s; the second within the window blocks; past `block_limit` blocks,
    /// `punishment`.
    fn policy_plan(block_limit: u32, punishment: Punishment) -> Arc<Plan> {
        let policy = Policy::new(1, Duration::from_secs(10))
            .block_limit(block_limit)
            .punishment(punishment);
        Arc::new(Plan::new([], Some((ScopeId::named("policy p"), policy))))
    }

    /// Clients `from..to` each make one counted request, a millisecond apart from `t`.
    fn flood(store: &MemoryStore, from: u32, to: u32, t: u64) {
        let plan = log_plan();
        for n in from..to {
            ready(store.check(&key(n), &plan, at(t + u64::from(n - from))));
            assert!(store.len() <= store.capacity());
        }
    }

    fn banned(store: &MemoryStore, n: u32, t: u64) -> bool {
        ready(store.state(&key(n), at(t))).is_some_and(|s| s.ban_at(at(t)).is_some())
    }

    /// Blacklists client `n` at `t` through a policy punishment.
    fn blacklist(store: &MemoryStore, n: u32, t: u64) {
        let plan = policy_plan(0, Punishment::Blacklist);
        assert!(ready(store.check(&key(n), &plan, at(t))).is_allowed());
        let d = ready(store.check(&key(n), &plan, at(t + 1)));
        assert!(matches!(d, Decision::Banned { until: None, .. }), "{d:?}");
    }

    #[test]
    fn floods_never_lift_blacklists_operator_bans_or_bans_within_their_budget() {
        let store = small_store();
        let report_bans = BanRule::new(1, SECOND, Duration::from_secs(86_400));
        ready(store.ban(&key(0), None, at(0)));
        ready(store.ban(&key(1), Some(at(86_400_000)), at(0)));
        blacklist(&store, 2, 0);
        ready(store.report(&key(3), &report_bans, at(0)));
        // Far more new clients than the store holds, many times over.
        flood(&store, 1_000, 20_000, 10);
        for n in 0..4 {
            assert!(
                banned(&store, n, 30_000),
                "client {n} was freed by the flood"
            );
        }
    }

    #[test]
    fn bans_past_their_budget_give_way_soonest_ending_first() {
        let store = small_store();
        // 30 reported bans, client n ending n hours from now: more than the budget of 16,
        // but they fit in the shard, so none is evicted yet.
        for n in 0..30u32 {
            let rule = BanRule::new(1, SECOND, Duration::from_secs(3_600 * u64::from(n + 1)));
            ready(store.report(&key(n), &rule, at(0)));
        }
        flood(&store, 1_000, 5_000, 10);
        let kept: Vec<u32> = (0..30).filter(|&n| banned(&store, n, 10_000)).collect();
        assert_eq!(
            kept,
            (14..30).collect::<Vec<_>>(),
            "the 16 longest-ending stay"
        );

        // New bans, all longer: each takes the place of the soonest-ending one.
        for n in 100..104u32 {
            let rule = BanRule::new(1, SECOND, Duration::from_secs(1_000_000));
            ready(store.report(&key(n), &rule, at(20_000)));
        }
        flood(&store, 5_000, 6_000, 30_000);
        let kept: Vec<u32> = (0..30)
            .chain(100..104)
            .filter(|&n| banned(&store, n, 40_000))
            .collect();
        assert_eq!(kept, (18..30).chain(100..104).collect::<Vec<_>>());
    }

    #[test]
    fn blacklists_past_the_pinned_budget_compete_as_the_longest_bans() {
        let store = small_store();
        // 40 blacklists, earned in turn: 8 fit in the pinned budget (the longest-standing),
        // 16 more in the ban budget, and the rest go first.
        for n in 0..40 {
            blacklist(&store, n, u64::from(n) * 100);
        }
        flood(&store, 1_000, 5_000, 10_000);
        let kept: Vec<u32> = (0..40).filter(|&n| banned(&store, n, 20_000)).collect();
        assert_eq!(kept.len(), 24, "{kept:?}");
        assert!(
            (0..8).all(|n| kept.contains(&n)),
            "the first 8 are pinned: {kept:?}"
        );
        // A flood of blacklisted clients stays bounded too.
        for n in 10_000..12_000 {
            blacklist(&store, n, 30_000 + u64::from(n));
            assert!(store.len() <= store.capacity());
        }
        assert!((0..8).all(|n| banned(&store, n, 50_000)));
    }

    #[test]
    fn operator_bans_are_never_evicted() {
        let store = small_store();
        for n in 0..100 {
            ready(store.ban(&key(n), None, at(u64::from(n))));
        }
        let plan = log_plan();
        for n in 1_000..3_000 {
            ready(store.check(&key(n), &plan, at(1_000 + u64::from(n))));
            // Only they go past the bound: the 92 beyond the pinned budget of 8.
            assert!(store.len() <= store.capacity() + 92, "{}", store.len());
        }
        assert!((0..100).all(|n| banned(&store, n, 10_000)));
        // Unbanned clients keep their room: the last 48 of the flood are all still counted.
        let counted = (2_952..3_000)
            .filter(|&n| ready(store.state(&key(n), at(10_000))).is_some())
            .count();
        assert_eq!(counted, 48);
    }

    #[test]
    fn escalation_outlives_plain_counters_in_a_flood() {
        let store = small_store();
        // Blocked once: one more block is punished with a ban.
        let plan = policy_plan(1, Punishment::Ban(Duration::from_secs(600)));
        let who = key(7);
        assert!(ready(store.check(&who, &plan, at(0))).is_allowed());
        assert!(matches!(
            ready(store.check(&who, &plan, at(1))),
            Decision::Limited { .. }
        ));
        // The least recently seen client of all, then a flood of fresh ones.
        flood(&store, 1_000, 20_000, 20_000);
        assert!(ready(store.check(&who, &plan, at(40_000))).is_allowed());
        let d = ready(store.check(&who, &plan, at(40_001)));
        assert!(
            matches!(d, Decision::Banned { .. }),
            "the block count was forgotten: {d:?}"
        );
    }

    #[test]
    fn plain_clients_go_least_recently_seen_first_and_expired_ones_before_all() {
        let store = small_store();
        let short = Arc::new(Plan::new(
            [(ScopeId::GLOBAL, vec![Rule::new(5, SECOND)])],
            None,
        ));
        // 20 clients that expire after a second, 44 that do not, seen in turn.
        for n in 0..20 {
            ready(store.check(&key(n), &short, at(0)));
        }
        flood(&store, 100, 144, 500);
        assert_eq!(store.len(), 64);
        // Full: the next client sweeps the 20 expired and evicts no one else.
        flood(&store, 200, 201, 2_000);
        assert_eq!(store.len(), 45);
        assert!((100..144).all(|n| ready(store.state(&key(n), at(3_000))).is_some()));
        // Full again: an eighth (8) goes, the least recently seen.
        flood(&store, 300, 320, 3_000);
        let gone: Vec<u32> = (100..144)
            .filter(|&n| ready(store.state(&key(n), at(4_000))).is_none())
            .collect();
        assert_eq!(gone, (100..108).collect::<Vec<_>>());
    }
}

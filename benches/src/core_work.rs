//! The decisions of the core benchmarks, shared by the criterion benchmark
//! (`benches/decision.rs`) and its deterministic twin `bench-decisions` (run under callgrind).
//!
//! Every client sends one request (or is reported once) every 5 s of fake time, which every
//! rule below allows, so each decision is the common path: an allowed request of a known
//! client, recorded. Through the store, 10,000 distinct clients per thread take turns; each
//! has made [`FILL_ROUNDS`] requests before measuring starts (continue with operation
//! `FILL_ROUNDS * 10_000`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use floodgate::{
    BanRule, ClientKey, ClientState, Decision, MemoryStore, Plan, Policy, Rule, ScopeId, Store,
    Timestamp,
};

use crate::{client_key, DISTINCT_IPS};

/// The fake time the benchmarks start at.
pub const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
/// The fake time between two requests of one client.
pub const CLIENT_INTERVAL_MS: u64 = 5_000;

/// What is decided: a request under a plan, or a reported offence.
#[derive(Clone, Debug)]
pub enum Work {
    /// `Store::check` / `ClientState::check` under this plan.
    Check(Arc<Plan>),
    /// `Store::report` / `ClientState::report` under this ban rule.
    Report(BanRule),
}

/// The decision kinds measured, by name.
pub fn kinds() -> Vec<(&'static str, Work)> {
    let minute = Duration::from_secs(60);
    vec![
        (
            "sliding_log_1_rule",
            Work::Check(Arc::new(Plan::new(
                [(ScopeId::GLOBAL, vec![Rule::new(20, minute)])],
                None,
            ))),
        ),
        (
            "sliding_log_2_rules",
            Work::Check(Arc::new(Plan::new(
                [(
                    ScopeId::GLOBAL,
                    vec![Rule::new(20, minute), Rule::new(200, 10 * minute)],
                )],
                None,
            ))),
        ),
        (
            "fixed_window_policy",
            Work::Check(Arc::new(Plan::new(
                [],
                Some((ScopeId::named("p"), Policy::new(20, minute))),
            ))),
        ),
        ("ban_check", Work::Check(Arc::new(Plan::ban_only()))),
        (
            "report",
            Work::Report(BanRule::new(3, Duration::from_secs(10), minute * 10)),
        ),
    ]
}

/// One decision on a bare client state, `CLIENT_INTERVAL_MS` after its previous one.
#[inline]
pub fn bare_op(state: &mut ClientState, work: &Work, now: &mut Timestamp) {
    *now = *now + Duration::from_millis(CLIENT_INTERVAL_MS);
    match work {
        Work::Check(plan) => {
            let d = state.check(black_box(plan), *now);
            debug_assert!(d.is_allowed());
            black_box(d);
        }
        Work::Report(rule) => {
            black_box(state.report(black_box(rule), *now));
        }
    }
}

/// One decision through the store for the `op`-th operation of a thread whose clients are
/// `keys`; the fake clock follows the operation count.
pub fn store_op(store: &MemoryStore, work: &Work, keys: &[ClientKey], op: u64) {
    let n = keys.len() as u64;
    // Each client's turn comes every `n` operations: make that CLIENT_INTERVAL_MS.
    let now = T0 + Duration::from_millis(op * CLIENT_INTERVAL_MS / n);
    let key = &keys[(op % n) as usize];
    match work {
        Work::Check(plan) => {
            let d = store.check(key, plan, now).take_ready();
            debug_assert!(matches!(d, Some(Ok(Decision::Allowed { .. }))));
            black_box(d);
        }
        Work::Report(rule) => {
            black_box(store.report(key, rule, now).take_ready());
        }
    }
}

/// Requests each client makes before measuring starts: enough to fill a log of count 20, so
/// that the single-rule case is measured in its steady state (no log growth).
pub const FILL_ROUNDS: u64 = 25;

/// A store tracking `threads` x 10,000 clients under `work`, and each thread's keys.
pub fn filled_store(work: &Work, threads: u32) -> (MemoryStore, Vec<Vec<ClientKey>>) {
    let store = MemoryStore::new();
    let keys: Vec<Vec<ClientKey>> = (0..threads)
        .map(|t| {
            (0..DISTINCT_IPS)
                .map(|i| client_key(t * DISTINCT_IPS + i))
                .collect()
        })
        .collect();
    // Ban checks create no state: give their clients some, as if they had been counted,
    // kept for a day so that it does not expire while the benchmark runs.
    let fill = match work {
        Work::Check(plan) if !plan.counts() => &Work::Check(Arc::new(Plan::new(
            [(
                ScopeId::GLOBAL,
                vec![Rule::new(20, Duration::from_secs(86_400))],
            )],
            None,
        ))),
        w => w,
    };
    for k in &keys {
        for op in 0..FILL_ROUNDS * u64::from(DISTINCT_IPS) {
            store_op(&store, fill, k, op);
        }
    }
    (store, keys)
}

//! One decision of floodgate's core, for each rule kind: on a bare `ClientState`, and through
//! the `MemoryStore` from one thread and from two threads sharing the store.
//!
//! Every client sends one request (or is reported once) every 5 s of fake time, which every
//! rule below allows, so each iteration measures the common path: an allowed request of a
//! known client, recorded. Through the store, 10,000 distinct clients per thread take turns
//! (the clock advances 1 ms every 2 decisions), all tracked before measuring starts.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use floodgate::{
    BanRule, ClientKey, ClientState, Decision, MemoryStore, Plan, Policy, Rule, ScopeId, Store,
    Timestamp,
};
use floodgate_bench::{client_key, DISTINCT_IPS};

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
/// The fake time between two requests of one client.
const CLIENT_INTERVAL_MS: u64 = 5_000;

/// What is decided: a request under a plan, or a reported offence.
#[derive(Clone)]
enum Work {
    Check(Arc<Plan>),
    Report(BanRule),
}

fn kinds() -> Vec<(&'static str, Work)> {
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

fn bare_state(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_bare_state");
    for (name, work) in kinds() {
        let mut state = ClientState::new();
        let mut now = T0;
        group.bench_function(name, |b| {
            b.iter(|| {
                now = now + Duration::from_millis(CLIENT_INTERVAL_MS);
                match &work {
                    Work::Check(plan) => {
                        let d = state.check(black_box(plan), now);
                        debug_assert!(d.is_allowed());
                        black_box(d);
                    }
                    Work::Report(rule) => {
                        black_box(state.report(black_box(rule), now));
                    }
                }
            })
        });
    }
    group.finish();
}

/// One decision through the store for the `op`-th operation of a thread whose clients are
/// `keys`; the fake clock follows the operation count.
fn store_op(store: &MemoryStore, work: &Work, keys: &[ClientKey], op: u64) {
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

/// A store tracking `threads` x 10,000 clients under `work`, and each thread's keys.
fn filled_store(work: &Work, threads: u32) -> (MemoryStore, Vec<Vec<ClientKey>>) {
    let store = MemoryStore::new();
    let keys: Vec<Vec<ClientKey>> = (0..threads)
        .map(|t| {
            (0..DISTINCT_IPS)
                .map(|i| client_key(t * DISTINCT_IPS + i))
                .collect()
        })
        .collect();
    // Ban checks create no state: give their clients some, as if they had been counted.
    let fill = match work {
        Work::Check(plan) if !plan.counts() => &Work::Check(Arc::new(Plan::new(
            [(
                ScopeId::GLOBAL,
                vec![Rule::new(20, Duration::from_secs(60))],
            )],
            None,
        ))),
        w => w,
    };
    for k in &keys {
        for op in 0..u64::from(DISTINCT_IPS) {
            store_op(&store, fill, k, op);
        }
    }
    (store, keys)
}

fn memory_store(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_memory_store_1_thread");
    for (name, work) in kinds() {
        let (store, keys) = filled_store(&work, 1);
        let mut op = u64::from(DISTINCT_IPS);
        group.bench_function(name, |b| {
            b.iter(|| {
                store_op(&store, &work, &keys[0], op);
                op += 1;
            })
        });
    }
    group.finish();

    // Two threads on one shared store, each with its own 10,000 clients. The time reported
    // is wall time / decisions of both threads: the aggregate cost of one decision.
    let mut group = c.benchmark_group("core_memory_store_2_threads");
    for (name, work) in kinds() {
        let (store, keys) = filled_store(&work, 2);
        let ops = [
            AtomicU64::new(u64::from(DISTINCT_IPS)),
            AtomicU64::new(u64::from(DISTINCT_IPS)),
        ];
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(2);
                let barrier = Barrier::new(3);
                std::thread::scope(|s| {
                    for (t, keys) in keys.iter().enumerate() {
                        let (store, work, barrier, ops) = (&store, &work, &barrier, &ops[t]);
                        s.spawn(move || {
                            let first = ops.fetch_add(per_thread, Ordering::Relaxed);
                            barrier.wait();
                            for op in first..first + per_thread {
                                store_op(store, work, keys, op);
                            }
                        });
                    }
                    barrier.wait();
                    let start = Instant::now();
                    // Leaving the scope joins both threads.
                    start
                })
                .elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bare_state, memory_store);
criterion_main!(benches);

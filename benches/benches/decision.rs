//! One decision of floodgate's core, for each rule kind: on a bare `ClientState`, and through
//! the `MemoryStore` from one thread and from two threads sharing the store.
//!
//! The workload is described in `floodgate_bench::core_work`: each client comes back every
//! 5 s of fake time and is always allowed; through the store, 10,000 distinct clients per
//! thread take turns, all tracked before measuring starts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use floodgate::ClientState;
use floodgate_bench::core_work::{bare_op, filled_store, kinds, store_op, FILL_ROUNDS, T0};
use floodgate_bench::DISTINCT_IPS;

fn bare_state(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_bare_state");
    for (name, work) in kinds() {
        let mut state = ClientState::new();
        let mut now = T0;
        group.bench_function(name, |b| b.iter(|| bare_op(&mut state, &work, &mut now)));
    }
    group.finish();
}

fn memory_store(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_memory_store_1_thread");
    for (name, work) in kinds() {
        let (store, keys) = filled_store(&work, 1);
        let mut op = FILL_ROUNDS * u64::from(DISTINCT_IPS);
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
            AtomicU64::new(FILL_ROUNDS * u64::from(DISTINCT_IPS)),
            AtomicU64::new(FILL_ROUNDS * u64::from(DISTINCT_IPS)),
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

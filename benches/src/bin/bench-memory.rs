//! Memory of the `MemoryStore`, measured with a counting global allocator.
//!
//! 1. Bytes per tracked client: the heap growth of a `MemoryStore` when 100,000 distinct
//!    clients are added, divided by 100,000, for each rule kind (sliding log of count 1, 10
//!    and 100 after one request and with the log full; a fixed-window policy; a ban).
//! 2. A flood of 1,000,000 distinct addresses against `MemoryStore::new()` (bound 200,000)
//!    under two sliding-log rules: peak heap, tracked clients (bounded?), decisions per second.
//!
//! `bench-memory [CLIENTS] [FLOOD]` (defaults 100000 and 1000000). Run it in release mode.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floodgate::{
    ClientKey, ClientState, MemoryStore, Plan, Policy, Rule, ScopeId, Store, Timestamp,
};
use floodgate_bench::{client_key, high_rules};

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Counts the bytes in use (requested sizes) and their peak, then defers to `System`.
struct Counting;

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(by: usize) {
    CURRENT.fetch_sub(by, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees carry over; the counters only observe sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            grew(new_size);
            shrank(layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

fn heap() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

/// Peak resident set size of this process, from /proc (kB), when available.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn ready<T>(mut f: floodgate::StoreFuture<T>) -> T {
    match f.take_ready() {
        Some(Ok(v)) => v,
        _ => panic!("the memory store answers synchronously"),
    }
}

/// One kind of state to give every client.
enum Kind {
    /// `requests` allowed requests, 1 s apart, under `plan`.
    Check { plan: Arc<Plan>, requests: u32 },
    /// An operator ban of an hour.
    Ban,
}

fn bytes_per_client(clients: u32, kind: &Kind) -> f64 {
    let keys: Vec<ClientKey> = (0..clients).map(client_key).collect();
    let store = MemoryStore::new();
    let before = heap();
    match kind {
        Kind::Check { plan, requests } => {
            for r in 0..*requests {
                let now = T0 + Duration::from_secs(u64::from(r));
                for key in &keys {
                    let d = ready(store.check(key, plan, now));
                    assert!(
                        d.is_allowed(),
                        "the memory benchmark only counts allowed requests"
                    );
                }
            }
        }
        Kind::Ban => {
            for key in &keys {
                ready(store.ban(key, Some(T0 + Duration::from_secs(3_600)), T0));
            }
        }
    }
    assert_eq!(store.len(), clients as usize, "every client is tracked");
    let grown = heap() - before;
    drop(store);
    grown as f64 / f64::from(clients)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let clients: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let flood: u32 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);

    println!(
        "size_of::<ClientState>() = {} bytes (plus the key and hash in each table entry)",
        std::mem::size_of::<ClientState>()
    );
    println!(
        "size_of::<ClientKey>() = {} bytes",
        std::mem::size_of::<ClientKey>()
    );
    println!("== bytes per tracked client ({clients} clients in a MemoryStore) ==");
    let log = |count: u32| {
        Arc::new(Plan::new(
            [(
                ScopeId::GLOBAL,
                // A window long enough that `count` requests 1 s apart are all allowed.
                vec![Rule::new(count, Duration::from_secs(3_600))],
            )],
            None,
        ))
    };
    let policy = Arc::new(Plan::new(
        [],
        Some((
            ScopeId::named("p"),
            Policy::new(20, Duration::from_secs(60)),
        )),
    ));
    let cases: Vec<(String, Kind)> = vec![
        (
            "sliding log, count 1".into(),
            Kind::Check {
                plan: log(1),
                requests: 1,
            },
        ),
        (
            "sliding log, count 10, 1 request".into(),
            Kind::Check {
                plan: log(10),
                requests: 1,
            },
        ),
        (
            "sliding log, count 10, full".into(),
            Kind::Check {
                plan: log(10),
                requests: 10,
            },
        ),
        (
            "sliding log, count 100, 1 request".into(),
            Kind::Check {
                plan: log(100),
                requests: 1,
            },
        ),
        (
            "sliding log, count 100, full".into(),
            Kind::Check {
                plan: log(100),
                requests: 100,
            },
        ),
        (
            "fixed-window policy".into(),
            Kind::Check {
                plan: policy,
                requests: 1,
            },
        ),
        ("ban (operator, 1 h)".into(), Kind::Ban),
    ];
    for (name, kind) in &cases {
        println!(
            "{name:<36} {:>8.1} bytes/client",
            bytes_per_client(clients, kind)
        );
    }

    println!();
    println!("== flood: {flood} distinct addresses against MemoryStore::new() ==");
    let store = MemoryStore::new();
    let plan = Arc::new(Plan::new([(ScopeId::GLOBAL, high_rules().to_vec())], None));
    let keys: Vec<ClientKey> = (0..flood).map(client_key).collect();
    let base = heap();
    PEAK.store(base, Ordering::Relaxed);
    let mut max_len = 0;
    let start = Instant::now();
    for (i, key) in keys.iter().enumerate() {
        // 100 new addresses per millisecond of fake time: 100,000 per second.
        let now = T0 + Duration::from_millis(i as u64 / 100);
        std::hint::black_box(ready(store.check(key, &plan, now)));
        if i % 100_000 == 99_999 {
            let len = store.len();
            max_len = max_len.max(len);
            println!(
                "after {:>9} decisions: {:>7} clients tracked, heap {:>6.1} MiB",
                i + 1,
                len,
                (heap() - base) as f64 / 1048576.0
            );
        }
    }
    let elapsed = start.elapsed();
    println!(
        "capacity {}; most tracked {}; bounded: {}",
        store.capacity(),
        max_len,
        max_len <= store.capacity()
    );
    println!(
        "peak heap of the store {:.1} MiB ({:.0} bytes per tracked client at the bound); peak RSS of the process {} kB",
        (PEAK.load(Ordering::Relaxed) - base) as f64 / 1048576.0,
        (PEAK.load(Ordering::Relaxed) - base) as f64 / store.capacity() as f64,
        peak_rss_kb().map_or("?".into(), |k| k.to_string())
    );
    println!(
        "{} decisions in {:.2} s: {:.0} decisions/s ({:.0} ns each), single thread",
        flood,
        elapsed.as_secs_f64(),
        f64::from(flood) / elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / f64::from(flood)
    );
}

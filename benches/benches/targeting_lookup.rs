//! The cost of an IP list lookup on the request path: `IpList::contains` over 100,000
//! ranges (an `ArcSwap` load and a binary search), IPv4 and IPv6 mixed, half hits.
//!
//! `cargo bench -p floodgate-bench --bench targeting_lookup` (a timed loop; no criterion).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use floodgate::IpList;

fn main() {
    let mut rng = fastrand::Rng::with_seed(42);
    let mut entries = Vec::with_capacity(100_000);
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for i in 0..100_000 {
        if i % 2 == 0 {
            let a = Ipv4Addr::from(rng.u32(..) & 0xffff_ff00);
            entries.push(format!("{a}/24"));
            v4.push(a);
        } else {
            let a = Ipv6Addr::from(rng.u128(..) & !((1u128 << 80) - 1));
            entries.push(format!("{a}/48"));
            v6.push(a);
        }
    }
    let start = Instant::now();
    let list = IpList::new("bench")
        .entries(&entries)
        .expect("valid entries");
    println!(
        "built {} entries into {} ranges in {:?}",
        entries.len(),
        list.ranges(),
        start.elapsed()
    );

    // Probes: half inside listed ranges, half random (almost all misses).
    let probes: Vec<IpAddr> = (0..1 << 16)
        .map(|i| match i % 4 {
            0 => IpAddr::V4(Ipv4Addr::from(
                u32::from(v4[rng.usize(..v4.len())]) | rng.u32(..256),
            )),
            1 => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6[rng.usize(..v6.len())]) | rng.u128(..1 << 80),
            )),
            2 => IpAddr::V4(Ipv4Addr::from(rng.u32(..))),
            _ => IpAddr::V6(Ipv6Addr::from(rng.u128(..))),
        })
        .collect();
    let hits = probes.iter().filter(|ip| list.contains(**ip)).count();
    assert!(hits >= probes.len() / 2, "every in-range probe hits");

    let rounds = 200;
    let cpu_start = cpu_ticks();
    let start = Instant::now();
    let mut found = 0usize;
    for _ in 0..rounds {
        for ip in &probes {
            found += usize::from(list.contains(black_box(*ip)));
        }
    }
    let elapsed = start.elapsed();
    let cpu = cpu_ticks().zip(cpu_start).map(|(b, a)| b.saturating_sub(a));
    let n = rounds * probes.len();
    black_box(found);
    println!(
        "IpList::contains over {} ranges: {:.1} ns per lookup ({} lookups in {:?}, {hits}/{} probes hit)",
        list.ranges(),
        elapsed.as_nanos() as f64 / n as f64,
        n,
        elapsed,
        probes.len()
    );
    // On a shared machine wall time includes waiting for a core: CPU time is the cost.
    if let Some(ticks) = cpu {
        println!(
            "  on CPU time (Linux, 10 ms ticks): {:.1} ns per lookup",
            ticks as f64 * 1e7 / n as f64
        );
    }
}

/// This process's user + system CPU time in clock ticks (100 per second), on Linux.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3) here.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

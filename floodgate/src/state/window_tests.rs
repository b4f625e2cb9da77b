//! The bounded window beside the exact log, on random traffic.

use super::*;
use proptest::prelude::*;

/// Admitted times in `(to - len, to]`.
fn admitted_within(admitted: &[u64], to: u64, len: u64) -> u64 {
    admitted
        .iter()
        .filter(|&&t| t <= to && t + len > to)
        .count() as u64
}

/// What the window answers at `now`, recomputed slot by slot from its parts: (units
/// counted, wait until the oldest counted sub-window leaves, or 0).
fn recount(w: &Window, now: u64, window_ms: u64) -> (u64, u64) {
    let first = (now.saturating_add(1).saturating_sub(window_ms) / w.width).max(w.base);
    let live: Vec<(u64, u32)> = w.parts().filter(|&(j, _)| j >= first).collect();
    let used = live.iter().map(|&(_, n)| u64::from(n)).sum();
    let reset = live.first().map_or(0, |&(j, _)| {
        ((j + 1) * w.width + window_ms - 1).saturating_sub(now)
    });
    (used, reset)
}

/// The window's answers agree with [`recount`] (its occupied bits are a faithful index).
fn agrees_with_recount(w: &Window, count: u32, now: u64, window_ms: u64) {
    assert!(w.bits_match_slots(), "{w:?}");
    let (used, reset) = recount(w, now, window_ms);
    assert_eq!(w.used(now, window_ms), used, "{w:?} at {now}");
    let (remaining, r) = w.quota(count, now, window_ms);
    assert_eq!(u64::from(remaining), u64::from(count).saturating_sub(used));
    assert_eq!(r, reset, "{w:?} at {now}");
}

/// Runs `gaps` (ms between requests) through a window of `count` per `window_ms` and checks
/// the documented bounds against the exact record of what it admitted.
fn run_traffic(count: u32, window_ms: u64, start: u64, gaps: &[u64]) {
    let width = width_for(window_ms);
    let mut w = Window::new(window_ms);
    let mut admitted: Vec<u64> = Vec::new();
    let mut now = start;
    for &gap in gaps {
        now += gap;
        agrees_with_recount(&w, count, now, window_ms);
        match w.refusal(count, 1, now, window_ms) {
            None => {
                w.add(now, 1, window_ms);
                agrees_with_recount(&w, count, now, window_ms);
                admitted.push(now);
                // Never more than `count` within any window: the window ending now holds
                // every window's worst case (checked at each admission).
                let n = admitted_within(&admitted, now, window_ms);
                assert!(
                    n <= u64::from(count),
                    "{n} admitted within {window_ms} ms at {now}"
                );
                let (remaining, reset) = w.quota(count, now, window_ms);
                assert!(u64::from(remaining) <= u64::from(count) - n);
                assert!(reset >= 1 && reset <= window_ms + width);
            }
            Some(wait) => {
                // Refused only when the widened window is full.
                let wide = window_ms + width - 1;
                let n = admitted_within(&admitted, now, wide);
                assert!(
                    n + 1 > u64::from(count),
                    "refused at {now} with only {n} admitted within {wide} ms"
                );
                assert!(wait >= 1 && wait <= wide, "wait {wait}");
                // The wait is exact for the window: one ms earlier still refuses, at the
                // end it admits.
                assert!(w.refusal(count, 1, now + wait, window_ms).is_none());
                if wait > 1 {
                    assert!(w.refusal(count, 1, now + wait - 1, window_ms).is_some());
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn bounded_window_keeps_the_documented_bounds(
        count in 129u32..400,
        window_ms in prop_oneof![1u64..200, 1_000u64..5_000, Just(3_600_000u64)],
        start in 0u64..10_000_000,
        gaps in prop::collection::vec(
            prop_oneof![0u64..3, 0u64..50, 0u64..2_000, Just(59_999u64)], 1..3_000),
    ) {
        let gaps: Vec<u64> = gaps.iter().map(|g| g % (window_ms + 1)).collect();
        run_traffic(count, window_ms, start, &gaps);
    }
}

#[test]
fn a_burst_at_a_sub_window_edge_gets_no_extra_room() {
    // 200 per 60 s: sub-windows of 1 s. 200 at the last ms of a sub-window, then 200 tried at
    // the first ms after it and all through the next window: none pass until the first
    // burst's sub-window has wholly left.
    let (count, window) = (200, 60_000);
    let mut w = Window::new(window);
    for _ in 0..count {
        assert!(w.refusal(count, 1, 999, window).is_none());
        w.add(999, 1, window);
    }
    for now in [1_000, 30_000, 59_998] {
        assert_eq!(w.refusal(count, 1, now, window), Some(60_999 - now));
    }
    assert!(w.refusal(count, 1, 60_999, window).is_none());
    // Exactly the exact log's answer at 60_999: the burst (at 999) is outside (939, 60_999].
    run_traffic(count, window, 999, &[0; 500]);
}

#[test]
fn memory_and_work_do_not_grow_with_the_count() {
    let mut w = Window::new(86_400_000);
    for i in 0..1_000_000u64 {
        w.add(i * 80, 1, 86_400_000);
    }
    assert_eq!(std::mem::size_of::<Window>(), 272);
    assert_eq!(w.used(80 * 999_999, 86_400_000), 1_000_000);
    assert!(w.refusal(1_000_000, 1, 80 * 999_999, 86_400_000).is_some());
}

#[test]
fn stored_parts_round_trip_and_bad_ones_are_dropped() {
    let mut w = Window::new(60_000);
    for t in [0, 5, 1_000, 59_000, 61_000] {
        w.add(t, 3, 60_000);
    }
    let parts: Vec<_> = w.parts().collect();
    assert_eq!(
        Window::from_parts(w.width, w.base, parts.clone()),
        Some(w.clone())
    );
    // Parts outside the live range, a zero width, the end of time: no panic.
    let far = Window::from_parts(1, u64::MAX - 3, [(u64::MAX, u32::MAX), (0, 5)]).unwrap();
    assert_eq!(far.used(u64::MAX, 10), u64::from(u32::MAX));
    assert!(Window::from_parts(0, 0, parts).is_none());
    let mut end = Window::new(u64::MAX);
    end.add(u64::MAX, u32::MAX, u64::MAX);
    end.add(u64::MAX, u32::MAX, u64::MAX);
    assert!(end.refusal(u32::MAX, 1, u64::MAX, u64::MAX).is_some());
}

#[test]
fn remove_takes_units_from_the_sub_window_of_their_time_and_keeps_the_bits() {
    let window = 60_000;
    let mut w = Window::new(window);
    w.add(1_000, 3, window);
    w.add(30_000, 2, window);
    w.remove(1_500, 2);
    assert!(w.bits_match_slots());
    assert_eq!(w.used(30_000, window), 3);
    w.remove(1_000, 5);
    assert!(w.bits_match_slots(), "an emptied sub-window clears its bit");
    assert_eq!(w.used(30_000, window), 2);
    assert_eq!(w.quota(10, 30_000, window).0, 8);
    // A time whose sub-window has left the ring takes nothing.
    w.add(200_000, 1, window);
    w.remove(30_000, 2);
    assert!(w.bits_match_slots());
    assert_eq!(w.used(200_000, window), 1);
}

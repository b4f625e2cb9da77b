//! Random traffic (a fixed seed) for a rule of a large count, which counts in a bounded
//! window, beside a small one, which keeps the exact log; and the check of every answer
//! against the exact record of what was admitted. Shared by the store tests through `#[path]`.

use std::sync::Arc;
use std::time::Duration;

use floodgate::{Decision, Plan, Rule, ScopeId};

const BIG: u32 = 300;
const BIG_MS: u64 = 6_000;
/// The bounded window's sub-window: 1/60 of `BIG_MS`.
const WIDTH: u64 = 100;
const SMALL: u32 = 40;
const SMALL_MS: u64 = 100;

/// The plan: limit 0 the large rule, limit 1 the small one.
pub(crate) fn plan() -> Arc<Plan> {
    Arc::new(Plan::new(
        [(
            ScopeId::GLOBAL,
            vec![
                Rule::new(BIG, Duration::from_millis(BIG_MS)),
                Rule::new(SMALL, Duration::from_millis(SMALL_MS)),
            ],
        )],
        None,
    ))
}

/// The times of `n` requests (ms from the start): bursts, steady runs, pauses.
pub(crate) fn times(n: usize) -> Vec<u64> {
    let (mut now, mut seed) = (0u64, 0x9e37_79b9_7f4a_7c15u64);
    (0..n)
        .map(|_| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            now += match seed >> 56 {
                0 => 700,
                1..=64 => 0,
                _ => (seed >> 33) % 12,
            };
            now
        })
        .collect()
}

/// The requests admitted so far, and the checks on each answer.
#[derive(Default)]
pub(crate) struct Bound {
    admitted: Vec<u64>,
    refused: usize,
}

impl Bound {
    fn within(&self, to: u64, len: u64) -> u32 {
        self.admitted
            .iter()
            .filter(|&&t| t <= to && t + len > to)
            .count() as u32
    }

    /// Checks the answer at `now`: the large rule never admits more than its count within
    /// its window and refuses only when the window widened by a sub-window (less 1 ms) is
    /// full; the small rule is exact.
    pub(crate) fn answer(&mut self, now: u64, d: Decision) {
        match d {
            Decision::Allowed { .. } => {
                self.admitted.push(now);
                assert!(self.within(now, BIG_MS) <= BIG, "too many at {now}");
                assert!(self.within(now, SMALL_MS) <= SMALL, "too many at {now}");
            }
            Decision::Limited {
                limit: 0,
                retry_after,
                ..
            } => {
                self.refused += 1;
                let wide = BIG_MS + WIDTH - 1;
                assert!(self.within(now, wide) >= BIG, "refused at {now}");
                assert!(retry_after <= Duration::from_millis(wide));
            }
            Decision::Limited { limit: 1, .. } => {
                self.refused += 1;
                assert_eq!(self.within(now, SMALL_MS), SMALL, "refused at {now}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// The traffic made both rules work: many refused, many admitted.
    pub(crate) fn assert_exercised(&self) {
        assert!(
            self.refused > 100 && self.admitted.len() > 500,
            "{} refused, {} admitted",
            self.refused,
            self.admitted.len()
        );
    }
}

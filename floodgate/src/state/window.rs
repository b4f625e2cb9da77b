//! The bounded sliding window: what a rule counts with once its count is too large for an
//! exact log of request times.
//!
//! A rule of `count` per `window` (above [`EXACT_MAX`]) divides time into sub-windows of
//! `width = ceil(window / 60)` milliseconds, aligned on multiples of `width`, and keeps the
//! units counted in each of the last [`SLOTS`] of them: a fixed 272 bytes and a bounded
//! amount of work per decision, whatever the count.
//!
//! At time `now`, every sub-window that holds a millisecond of `(now - window, now]` counts
//! whole: the sum may include requests up to `width - 1` milliseconds older than the window,
//! never fewer than the window holds. Hence the guarantees (proved against the exact log on
//! random traffic in `tests/window_bound.rs` of this module's tests):
//!
//! - **never more than `count` units are admitted within any `window` milliseconds**, as with
//!   the exact log: a sub-window edge opens no gap, since a sub-window stops counting only
//!   once its last millisecond has left the window;
//! - a request is refused only when the units admitted within the last
//!   `window + width - 1` milliseconds, plus its own, exceed `count`: at worst the rule acts
//!   as `count` per `window + width - 1` (for 100,000 per hour: per 61 minutes minus 1 ms).
//!
//! Both hold while the times a client's state sees do not go backwards; a time earlier than
//! one already seen is counted in the oldest live sub-window (so it counts longer, never
//! shorter).

/// Rules of at most this count keep the exact log (8 bytes per counted request); larger ones
/// count in a [`Window`].
pub(crate) const EXACT_MAX: u32 = 128;

/// Sub-windows per rule window.
const SUB_WINDOWS: u64 = 60;

/// Sub-windows kept: one rule window spans at most `SUB_WINDOWS + 1` of them.
pub(crate) const SLOTS: usize = SUB_WINDOWS as usize + 1;

/// True for a rule that counts in a [`Window`] rather than in the exact log.
pub(crate) fn is_bounded(count: u32) -> bool {
    count > EXACT_MAX
}

/// The sub-window width for a rule window (at least 1 ms).
pub(crate) fn width_for(window_ms: u64) -> u64 {
    window_ms.div_ceil(SUB_WINDOWS).max(1)
}

/// Units counted per sub-window, in a ring of [`SLOTS`].
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Window {
    /// Sub-window width in milliseconds (see [`width_for`]).
    pub(crate) width: u64,
    /// Index (time / width) of the oldest sub-window that may still count; the live ones are
    /// `base .. base + SLOTS`, sub-window `j` in slot `j % SLOTS`.
    pub(crate) base: u64,
    /// The sum of `slots`.
    total: u64,
    slots: [u32; SLOTS],
}

impl Window {
    /// An empty window for a rule window of `window_ms`.
    pub(crate) fn new(window_ms: u64) -> Window {
        Window {
            width: width_for(window_ms),
            base: 0,
            total: 0,
            slots: [0; SLOTS],
        }
    }

    /// Rebuilds a window from stored parts: `(sub-window index, units)` pairs; pairs outside
    /// `base .. base + SLOTS` are dropped. `None` for a zero width.
    pub(crate) fn from_parts(
        width: u64,
        base: u64,
        units: impl IntoIterator<Item = (u64, u32)>,
    ) -> Option<Window> {
        if width == 0 {
            return None;
        }
        let mut w = Window {
            width,
            base,
            total: 0,
            slots: [0; SLOTS],
        };
        for (j, n) in units {
            if j >= base && j - base < SLOTS as u64 {
                let slot = &mut w.slots[(j % SLOTS as u64) as usize];
                *slot = slot.saturating_add(n);
            }
        }
        w.total = w.slots.iter().map(|&n| u64::from(n)).sum();
        Some(w)
    }

    /// The live sub-windows that hold units, oldest first: `(index, units)`.
    pub(crate) fn parts(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        (self.base..=self.last())
            .map(|j| (j, self.slot(j)))
            .filter(|&(_, n)| n > 0)
    }

    /// The newest sub-window the ring can hold.
    fn last(&self) -> u64 {
        self.base.saturating_add(SLOTS as u64 - 1)
    }

    fn slot(&self, j: u64) -> u32 {
        self.slots[(j % SLOTS as u64) as usize]
    }

    /// The first sub-window that holds a millisecond of `(now - window, now]`.
    fn first_counted(&self, now: u64, window_ms: u64) -> u64 {
        now.saturating_add(1).saturating_sub(window_ms) / self.width
    }

    /// When sub-window `j` stops counting: once `(now - window, now]` starts after it.
    fn leaves_at(&self, j: u64, window_ms: u64) -> u64 {
        j.saturating_add(1)
            .saturating_mul(self.width)
            .saturating_add(window_ms.saturating_sub(1))
    }

    /// The first live sub-window at `now`, and the units it and the later ones hold.
    fn live(&self, now: u64, window_ms: u64) -> (u64, u64) {
        let first = self.first_counted(now, window_ms).max(self.base);
        let stale = (first - self.base).min(SLOTS as u64);
        let gone: u64 = (self.base..self.base + stale)
            .map(|j| u64::from(self.slot(j)))
            .sum();
        (first, self.total.saturating_sub(gone))
    }

    /// The live sub-windows from `first`, oldest first.
    fn from(&self, first: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        (first..=self.last()).map(|j| (j, self.slot(j)))
    }

    /// Units counted at `now` (an upper bound of those admitted in the window).
    pub(crate) fn used(&self, now: u64, window_ms: u64) -> u64 {
        self.live(now, window_ms).1
    }

    /// When `units` more would exceed `count` at `now`, the wait until they would not.
    pub(crate) fn refusal(&self, count: u32, units: u32, now: u64, window_ms: u64) -> Option<u64> {
        if units > count {
            return Some(window_ms.max(1));
        }
        if window_ms == 0 {
            return None;
        }
        let (first, used) = self.live(now, window_ms);
        let excess = (used + u64::from(units)).saturating_sub(u64::from(count));
        if excess == 0 {
            return None;
        }
        let mut drained = 0u64;
        for (j, n) in self.from(first) {
            drained += u64::from(n);
            if drained >= excess {
                return Some(self.leaves_at(j, window_ms).saturating_sub(now).max(1));
            }
        }
        // Unreachable while `total` is the sum of the slots; refuse for a whole window.
        Some(window_ms)
    }

    /// Units left under `count` at `now`, and the wait until the oldest counted ones leave
    /// (0 when none count).
    pub(crate) fn quota(&self, count: u32, now: u64, window_ms: u64) -> (u32, u64) {
        let (first, used) = self.live(now, window_ms);
        let remaining = u64::from(count).saturating_sub(used) as u32;
        let reset = self
            .first_nonzero_from(first)
            .map_or(0, |j| self.leaves_at(j, window_ms).saturating_sub(now));
        (remaining, reset)
    }

    /// The oldest sub-window from `first` on that holds units: a walk of the ring by index,
    /// without a division per sub-window (this runs on every counted request).
    fn first_nonzero_from(&self, first: u64) -> Option<u64> {
        let last = self.last();
        if first > last {
            return None;
        }
        let mut i = (first % SLOTS as u64) as usize;
        for j in first..=last {
            if self.slots[i] != 0 {
                return Some(j);
            }
            i += 1;
            if i == SLOTS {
                i = 0;
            }
        }
        None
    }

    /// Counts `units` at `now`, first forgetting the sub-windows that left the window.
    pub(crate) fn add(&mut self, now: u64, units: u32, window_ms: u64) {
        let first = self.first_counted(now, window_ms);
        if first > self.base {
            if first - self.base >= SLOTS as u64 {
                self.slots = [0; SLOTS];
                self.total = 0;
            } else {
                for j in self.base..first {
                    let slot = &mut self.slots[(j % SLOTS as u64) as usize];
                    self.total -= u64::from(*slot);
                    *slot = 0;
                }
            }
            self.base = first;
        }
        let j = (now / self.width).clamp(self.base, self.last());
        let slot = &mut self.slots[(j % SLOTS as u64) as usize];
        let before = *slot;
        *slot = before.saturating_add(units);
        self.total += u64::from(*slot - before);
    }
}

impl Window {
    /// Takes back up to `units` counted at `at` (a request whose response its rule does not
    /// count): from `at`'s sub-window while it is live; nothing once it has left the ring.
    pub(crate) fn remove(&mut self, at: u64, units: u32) {
        let j = at / self.width;
        if j < self.base || j > self.last() {
            return;
        }
        let slot = &mut self.slots[(j % SLOTS as u64) as usize];
        let taken = (*slot).min(units);
        *slot -= taken;
        self.total -= u64::from(taken);
    }
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("width", &self.width)
            .field("base", &self.base)
            .field("units", &self.parts().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;

//! The `Times` ring: the request times of a sliding log, and a client's unspent offences.

/// Times in order, oldest first, in a ring that grows (doubling) up to the capacity its
/// owner asks for. 24 bytes inline, against 32 for a `VecDeque`, and no spare room: the
/// time of a count-1 rule costs 8 bytes of heap.
#[derive(Clone, Default)]
pub(crate) struct Times {
    buf: Box<[u64]>,
    head: u32,
    len: u32,
}

impl Times {
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th time, oldest first.
    pub(crate) fn get(&self, i: usize) -> u64 {
        // `head < buf.len()` and `i < len <= buf.len()`: one subtraction instead of a division.
        let j = self.head as usize + i;
        let n = self.buf.len();
        self.buf[if j >= n { j - n } else { j }]
    }

    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = u64> + ExactSizeIterator + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    pub(crate) fn front(&self) -> Option<u64> {
        (!self.is_empty()).then(|| self.get(0))
    }

    pub(crate) fn pop_front(&mut self) -> Option<u64> {
        let t = self.front()?;
        self.head = if self.head as usize + 1 == self.buf.len() {
            0
        } else {
            self.head + 1
        };
        self.len -= 1;
        Some(t)
    }

    /// Appends `t`, first dropping the oldest times so that at most `cap` remain.
    pub(crate) fn push_capped(&mut self, t: u64, cap: usize) {
        let cap = cap.clamp(1, u32::MAX as usize);
        while self.len() >= cap {
            self.pop_front();
        }
        if self.len() == self.buf.len() {
            // Grow: room for twice as many, never more than `cap`; a first log gets room for
            // two, since a client that comes once usually comes again.
            let size = (self.buf.len() * 2).clamp(2, cap.max(2)).min(cap);
            let mut buf = Vec::with_capacity(size);
            buf.extend(self.iter());
            buf.resize(size, 0);
            self.buf = buf.into_boxed_slice();
            self.head = 0;
        }
        let (at, n) = (self.head as usize + self.len(), self.buf.len());
        self.buf[if at >= n { at - n } else { at }] = t;
        self.len += 1;
    }

    /// Removes one time equal to `t` (the newest such), if the ring holds one; true if it did.
    pub(crate) fn remove_one(&mut self, t: u64) -> bool {
        let end = self.partition_point(|x| x <= t);
        if end == 0 || self.get(end - 1) != t {
            return false;
        }
        let n = self.buf.len();
        for i in end - 1..self.len() - 1 {
            let next = self.get(i + 1);
            let j = self.head as usize + i;
            self.buf[if j >= n { j - n } else { j }] = next;
        }
        self.len -= 1;
        true
    }

    pub(crate) fn clear(&mut self) {
        *self = Times::default();
    }

    /// The number of leading times for which `pred` holds (times are sorted).
    pub(crate) fn partition_point(&self, pred: impl Fn(u64) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

impl FromIterator<u64> for Times {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Self {
        let buf: Box<[u64]> = iter.into_iter().collect();
        Times {
            len: buf.len().min(u32::MAX as usize) as u32,
            buf,
            head: 0,
        }
    }
}

impl PartialEq for Times {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Times {}

impl<const N: usize> PartialEq<[u64; N]> for Times {
    fn eq(&self, other: &[u64; N]) -> bool {
        self.len() == N && self.iter().eq(other.iter().copied())
    }
}

impl std::fmt::Debug for Times {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_one_takes_the_newest_equal_time_across_the_ring_edge() {
        // A ring of 4 whose head has wrapped: times 30, 40 | 50, 50 stored around the end.
        let mut t = Times::default();
        for v in [10, 20, 30, 40, 50, 50] {
            t.push_capped(v, 4);
        }
        assert_eq!(t, [30, 40, 50, 50]);
        assert!(t.head != 0, "the ring has wrapped");
        assert!(t.remove_one(50));
        assert_eq!(t, [30, 40, 50]);
        assert!(!t.remove_one(45), "no such time");
        assert!(t.remove_one(30));
        assert_eq!(t, [40, 50]);
        assert!(t.remove_one(50) && t.remove_one(40));
        assert!(t.is_empty() && !t.remove_one(40));
        t.push_capped(60, 4);
        assert_eq!(t, [60]);
    }

    #[test]
    fn times_ring_keeps_the_newest_in_order_through_growth_and_wrap_around() {
        let mut t = Times::default();
        let mut model = std::collections::VecDeque::new();
        let mut largest_cap = 0;
        for (i, cap) in [
            1usize, 3, 3, 3, 5, 5, 5, 5, 5, 5, 2, 7, 7, 7, 7, 7, 7, 7, 7, 1,
        ]
        .into_iter()
        .enumerate()
        {
            let v = i as u64 * 10;
            largest_cap = largest_cap.max(cap);
            t.push_capped(v, cap);
            while model.len() >= cap {
                model.pop_front();
            }
            model.push_back(v);
            assert!(
                t.iter().eq(model.iter().copied()),
                "step {i}: {t:?} vs {model:?}"
            );
            assert!(
                t.buf.len() <= largest_cap,
                "never more room than a cap asked for"
            );
            for probe in [0, 35, 95, 1_000] {
                assert_eq!(
                    t.partition_point(|x| x <= probe),
                    model.partition_point(|&x| x <= probe)
                );
            }
        }
        assert_eq!(t.pop_front(), model.pop_front());
        t.clear();
        assert!(t.is_empty() && t.front().is_none());
    }
}

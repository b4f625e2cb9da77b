//! Time sources.
//!
//! Every time-dependent decision in floodgate reads the injected [`Clock`]. Production code
//! uses [`SystemClock`]; tests use [`FakeClock`] and move time with
//! [`advance`](FakeClock::advance), so no test ever waits on the wall clock.

use std::fmt;
use std::ops::{Add, Sub};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: whole milliseconds since the Unix epoch.
///
/// Milliseconds since the epoch (rather than [`std::time::Instant`]) because state outlives
/// the process: SQLite and Redis stores persist timestamps, and several servers compare them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch itself.
    pub const EPOCH: Timestamp = Timestamp(0);
    /// A time later than any real one; used for "never expires".
    pub const NEVER: Timestamp = Timestamp(u64::MAX);

    /// Builds a timestamp from milliseconds since the Unix epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// This time as a [`SystemTime`], at most 9999-12-31T23:59:59.999Z: the last instant
    /// that every platform's `SystemTime` (Windows' ends some 30,000 years from now) and
    /// RFC 3339 can hold, so [`Timestamp::NEVER`] converts everywhere, and alike.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.min(LAST_RFC3339_MILLI))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_millis(rhs)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration_millis(rhs)))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, as people read times in logs and listings: `2026-12-06T01:37:51Z`,
    /// with the milliseconds when there are some (`2026-12-06T01:37:51.250Z`). `never` for
    /// [`Timestamp::NEVER`]; a time past the end of year 9999 shows as its last millisecond.
    ///
    /// ```
    /// use floodgate::Timestamp;
    ///
    /// assert_eq!(Timestamp::from_millis(1_796_521_071_000).to_string(), "2026-12-06T01:37:51Z");
    /// assert_eq!(Timestamp::from_millis(1_796_521_071_250).to_string(), "2026-12-06T01:37:51.250Z");
    /// assert_eq!(Timestamp::NEVER.to_string(), "never");
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Timestamp::NEVER {
            return f.write_str("never");
        }
        let ms = self.0.min(LAST_RFC3339_MILLI) as i64;
        match chrono::DateTime::from_timestamp_millis(ms) {
            Some(t) => f.write_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            // Unreachable within year 9999; a number rather than a panic all the same.
            None => write!(f, "{ms} ms after the epoch"),
        }
    }
}

/// 9999-12-31T23:59:59.999Z in milliseconds since the epoch.
const LAST_RFC3339_MILLI: u64 = 253_402_300_799_999;

/// A duration in whole milliseconds, saturating instead of overflowing.
pub(crate) fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A source of the current time.
///
/// Implementations must be cheap: the middleware reads the clock once per request.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The operating system's real-time clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        // A clock set before 1970 reads as the epoch rather than failing a request.
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(duration_millis(since))
    }
}

/// A clock that only moves when told to. Clones share one time.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use floodgate::{Clock, FakeClock};
///
/// let clock = FakeClock::new();
/// let handle = clock.clone();
/// let t0 = clock.now();
/// handle.advance(Duration::from_secs(2));
/// assert_eq!(clock.now().saturating_since(t0), Duration::from_secs(2));
/// ```
#[derive(Clone, Debug)]
pub struct FakeClock {
    now: Arc<AtomicU64>,
}

impl FakeClock {
    /// A fake clock starting at a fixed, arbitrary time (2023-11-14T22:13:20Z), so that tests
    /// are repeatable.
    pub fn new() -> Self {
        Self::starting_at(Timestamp::from_millis(1_700_000_000_000))
    }

    /// A fake clock starting at `start`.
    pub fn starting_at(start: Timestamp) -> Self {
        FakeClock {
            now: Arc::new(AtomicU64::new(start.as_millis())),
        }
    }

    /// Moves time forward by `by` (millisecond precision).
    pub fn advance(&self, by: Duration) {
        let by = duration_millis(by);
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(by))
            });
    }

    /// Sets the time.
    pub fn set(&self, to: Timestamp) {
        self.now.store(to.as_millis(), Ordering::SeqCst);
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_clones_share_time() {
        let a = FakeClock::new();
        let b = a.clone();
        let start = a.now();
        b.advance(Duration::from_millis(1500));
        assert_eq!(a.now().as_millis() - start.as_millis(), 1500);
        a.set(Timestamp::from_millis(5));
        assert_eq!(b.now(), Timestamp::from_millis(5));
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        assert_eq!(Timestamp::NEVER + Duration::from_secs(1), Timestamp::NEVER);
        assert_eq!(Timestamp::EPOCH - Duration::from_secs(1), Timestamp::EPOCH);
        assert_eq!(
            Timestamp::from_millis(10).saturating_since(Timestamp::from_millis(20)),
            Duration::ZERO
        );
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now().as_millis() > 1_577_836_800_000);
    }

    #[test]
    fn duration_max_saturates_everywhere() {
        assert_eq!(duration_millis(Duration::MAX), u64::MAX);
        assert_eq!(duration_millis(Duration::from_millis(u64::MAX)), u64::MAX);
        assert_eq!(
            duration_millis(Duration::from_millis(u64::MAX) + Duration::from_micros(999)),
            u64::MAX
        );
        let near_end = Timestamp::from_millis(u64::MAX - 1);
        for t in [
            Timestamp::EPOCH,
            Timestamp::from_millis(1),
            near_end,
            Timestamp::NEVER,
        ] {
            assert_eq!(t + Duration::MAX, Timestamp::NEVER);
            assert_eq!(t - Duration::MAX, Timestamp::EPOCH);
            assert_eq!(
                Timestamp::NEVER.saturating_since(t),
                Duration::from_millis(u64::MAX - t.as_millis())
            );
            assert_eq!(t.saturating_since(Timestamp::NEVER), Duration::ZERO);
        }
        assert_eq!(near_end + Duration::from_millis(1), Timestamp::NEVER);
        assert_eq!(Timestamp::NEVER.to_string(), "never");
        assert_eq!(near_end.to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn system_times_stop_at_the_year_9999() {
        let last = UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
        assert_eq!(Timestamp::NEVER.to_system_time(), last);
        assert_eq!(Timestamp::from_millis(u64::MAX - 1).to_system_time(), last);
        assert_eq!(
            Timestamp::from_millis(253_402_300_799_999).to_system_time(),
            last
        );
        assert_eq!(
            Timestamp::from_millis(1_500).to_system_time(),
            UNIX_EPOCH + Duration::from_millis(1_500)
        );
    }

    #[test]
    fn a_fake_clock_advanced_past_the_end_of_time_stays_there() {
        let clock = FakeClock::starting_at(Timestamp::from_millis(u64::MAX - 5));
        clock.advance(Duration::from_millis(3));
        assert_eq!(clock.now(), Timestamp::from_millis(u64::MAX - 2));
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), Timestamp::NEVER);
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), Timestamp::NEVER);
    }
}

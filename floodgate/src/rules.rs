//! Rate-limit rules and ban rules, and their string forms.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::ConfigError;

/// A sliding-log limit: at most `count` accepted requests of one client in any `window`.
///
/// The (count+1)-th request inside any window of that length is refused, and a refused
/// request consumes nothing. Rules are cheap to copy.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use floodgate::Rule;
///
/// let a = Rule::new(20, Duration::from_secs(1));
/// let b: Rule = "20/1s".parse().unwrap();
/// let c: Rule = "20 per 1 second".parse().unwrap();
/// assert_eq!(a, b);
/// assert_eq!(b, c);
/// assert_eq!(a.to_string(), "20/1s");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    count: u32,
    window_ms: u64,
}

impl Rule {
    /// A rule allowing `count` requests per `window` (millisecond precision).
    ///
    /// This constructor never fails: a `count` of 0 refuses every request, and a zero
    /// `window` never refuses. Use [`Rule::try_new`] or string parsing to reject both.
    pub const fn new(count: u32, window: Duration) -> Self {
        let ms = window.as_millis();
        Rule {
            count,
            window_ms: if ms > u64::MAX as u128 {
                u64::MAX
            } else {
                ms as u64
            },
        }
    }

    /// Like [`Rule::new`], but a zero count or a window under one millisecond is an error.
    pub fn try_new(count: u32, window: Duration) -> Result<Self, ConfigError> {
        if count == 0 {
            return Err(ConfigError::invalid("count", "must be at least 1"));
        }
        if window < Duration::from_millis(1) {
            return Err(ConfigError::invalid("window", "must be at least 1ms"));
        }
        Ok(Rule::new(count, window))
    }

    /// The number of requests allowed per window.
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// The window length.
    pub const fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    pub(crate) const fn window_ms(&self) -> u64 {
        self.window_ms
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, DisplayDuration(self.window()))
    }
}

impl FromStr for Rule {
    type Err = ConfigError;

    /// Parses `"20/1s"`, `"20 per 1s"`, `"100 per 10 seconds"` or `"5 per minute"`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let s = s.trim();
        let (count, window) = if let Some((c, w)) = s.split_once('/') {
            (c, w)
        } else if let Some((c, w)) = s.split_once(" per ") {
            (c, w)
        } else {
            return Err(ConfigError::invalid(
                "rule",
                format!("{s:?} is not of the form \"20/1s\" or \"20 per 1 second\""),
            ));
        };
        let count: u32 = count.trim().parse().map_err(|_| {
            ConfigError::invalid("rule", format!("{:?} is not a request count", count.trim()))
        })?;
        let window = parse_duration(window).map_err(|e| e.in_field("rule"))?;
        Rule::try_new(count, window).map_err(|e| e.in_field("rule"))
    }
}

/// When to ban a client on reported offences: `count` offences within `window` ban it for
/// `duration`, counted from the last offence.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use floodgate::BanRule;
///
/// // 3 reports within 10 s ban for 10 minutes.
/// let rule = BanRule::new(3, Duration::from_secs(10), Duration::from_secs(600));
/// assert_eq!(rule.count(), 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BanRule {
    trigger: Rule,
    duration_ms: u64,
}

impl BanRule {
    /// `count` offences within `window` ban the client for `duration`.
    ///
    /// A `count` of 0 is treated as 1 (the first offence bans).
    pub const fn new(count: u32, window: Duration, duration: Duration) -> Self {
        let count = if count == 0 { 1 } else { count };
        BanRule {
            trigger: Rule::new(count, window),
            duration_ms: Rule::new(1, duration).window_ms(),
        }
    }

    /// Offences needed for a ban.
    pub const fn count(&self) -> u32 {
        self.trigger.count
    }

    /// The window in which the offences must lie.
    pub const fn window(&self) -> Duration {
        self.trigger.window()
    }

    /// How long a ban lasts, from the offence that triggered it.
    pub const fn duration(&self) -> Duration {
        Duration::from_millis(self.duration_ms)
    }

    pub(crate) const fn window_ms(&self) -> u64 {
        self.trigger.window_ms
    }

    pub(crate) const fn duration_ms(&self) -> u64 {
        self.duration_ms
    }
}

/// Parses a duration: `"500ms"`, `"2s"`, `"1m"`, `"1h"`, `"7d"`, `"1w"`, also spelled out
/// (`"10 seconds"`, `"minute"`, `"2 hours"`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// assert_eq!(floodgate::parse_duration("1m").unwrap(), Duration::from_secs(60));
/// assert_eq!(floodgate::parse_duration("500 ms").unwrap(), Duration::from_millis(500));
/// assert!(floodgate::parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    floodgate_duration::millis(text)
        .map(Duration::from_millis)
        .map_err(|e| ConfigError::invalid("duration", format!("{text:?} {e}")))
}

/// Formats a duration in the shortest exact unit: `1s`, `90s`, `1m`, `1500ms`.
pub(crate) struct DisplayDuration(pub(crate) Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = crate::clock::duration_millis(self.0);
        for (unit, len) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms >= len && ms.is_multiple_of(len) {
                return write!(f, "{}{unit}", ms / len);
            }
        }
        write!(f, "{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rule_forms() {
        let want = Rule::new(100, Duration::from_secs(10));
        for s in [
            "100/10s",
            " 100 / 10s ",
            "100 per 10 seconds",
            "100 per 10s",
        ] {
            assert_eq!(s.parse::<Rule>().unwrap(), want, "{s}");
        }
        assert_eq!(
            "5 per minute".parse::<Rule>().unwrap(),
            Rule::new(5, Duration::from_secs(60))
        );
    }

    #[test]
    fn rejects_bad_rules_with_a_message() {
        for s in [
            "",
            "20",
            "x/1s",
            "0/1s",
            "20/0s",
            "20/1 fortnight",
            "99999999999/1s",
        ] {
            let err = s.parse::<Rule>().unwrap_err();
            assert!(err.to_string().contains("rule"), "{s}: {err}");
        }
    }

    #[test]
    fn durations_round_trip_through_display() {
        for (s, ms) in [
            ("500ms", 500),
            ("2s", 2000),
            ("90s", 90_000),
            ("1m", 60_000),
            ("7d", 604_800_000),
        ] {
            let d = parse_duration(s).unwrap();
            assert_eq!(d, Duration::from_millis(ms));
            assert_eq!(DisplayDuration(d).to_string(), s);
        }
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("9999999999999999w").is_err());
    }

    #[test]
    fn zero_count_ban_rule_bans_on_first_offence() {
        assert_eq!(
            BanRule::new(0, Duration::from_secs(1), Duration::from_secs(1)).count(),
            1
        );
    }

    #[test]
    fn the_largest_rules_saturate_and_round_trip() {
        let huge = Rule::new(u32::MAX, Duration::MAX);
        assert_eq!(huge.count(), u32::MAX);
        assert_eq!(huge.window(), Duration::from_millis(u64::MAX));
        assert_eq!(huge.to_string(), "4294967295/18446744073709551615ms");
        assert_eq!(huge.to_string().parse::<Rule>().unwrap(), huge);
        assert_eq!(Rule::try_new(u32::MAX, Duration::MAX).unwrap(), huge);
        // Past the largest count or window: errors, never a wrap or a panic.
        for s in [
            "4294967296/1s",
            "1/18446744073709551616ms",
            "1/18446744073709551615s",
            "1/213503982335d",
            "1/99999999999999999999999999999999w",
        ] {
            let err = s.parse::<Rule>().unwrap_err();
            assert!(err.to_string().contains("rule"), "{s}: {err}");
        }
        assert_eq!(
            parse_duration("18446744073709551615ms").unwrap(),
            Duration::from_millis(u64::MAX)
        );
        assert_eq!(
            parse_duration("30500568904w").unwrap(),
            Duration::from_millis(30_500_568_904 * 604_800_000)
        );
        assert!(parse_duration("30500568905w").is_err());
    }

    #[test]
    fn ban_rules_of_duration_max_saturate() {
        let rule = BanRule::new(u32::MAX, Duration::MAX, Duration::MAX);
        assert_eq!(rule.count(), u32::MAX);
        assert_eq!((rule.window_ms(), rule.duration_ms()), (u64::MAX, u64::MAX));
        assert_eq!(rule.duration(), Duration::from_millis(u64::MAX));
        let rule = BanRule::new(0, Duration::ZERO, Duration::ZERO);
        assert_eq!(
            (rule.count(), rule.window_ms(), rule.duration_ms()),
            (1, 0, 0)
        );
    }
}

//! The duration strings of floodgate's rules, parsed by one function for the runtime
//! (`floodgate::parse_duration`, `"..".parse::<Rule>()`) and the attribute macros, so that a
//! rule reads the same in both.

use std::fmt;

/// Why a text is not a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    /// No known unit (or none at all, or a sign, a fraction, junk).
    NotADuration,
    /// The number, or the number times its unit, does not fit in `u64` milliseconds.
    TooLong,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DurationError::NotADuration => {
                "is not a duration such as \"500ms\", \"2s\", \"1m\", \"1h\" or \"7d\""
            }
            DurationError::TooLong => "is too long a duration",
        })
    }
}

impl std::error::Error for DurationError {}

/// The milliseconds of `"500ms"`, `"2s"`, `"1m"`, `"1h"`, `"7d"`, `"1w"`, also spelled out
/// (`"10 seconds"`, `"2 hours"`); a unit alone is one of it (`"minute"`, as in `"5 per
/// minute"`). Spaces around and between the number and the unit are allowed; signs,
/// fractions and anything else are not.
///
/// ```
/// use floodgate_duration::{millis, DurationError};
/// assert_eq!(millis("1m"), Ok(60_000));
/// assert_eq!(millis(" 500 ms "), Ok(500));
/// assert_eq!(millis("soon"), Err(DurationError::NotADuration));
/// ```
pub fn millis(text: &str) -> Result<u64, DurationError> {
    let s = text.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let unit_ms: u64 = match unit.trim() {
        "ms" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 604_800_000,
        _ => return Err(DurationError::NotADuration),
    };
    if digits.is_empty() {
        return Ok(unit_ms);
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .ok_or(DurationError::TooLong)
}

#[cfg(test)]
mod tests {
    use super::{millis, DurationError};

    #[test]
    fn parses_every_unit_and_spelling() {
        for (text, ms) in [
            ("500ms", 500),
            ("2s", 2_000),
            ("1m", 60_000),
            ("1h", 3_600_000),
            ("7d", 604_800_000),
            ("1w", 604_800_000),
            ("10 seconds", 10_000),
            (" 500 ms ", 500),
            ("2 hours", 7_200_000),
            (" 3 min ", 180_000),
            ("0s", 0),
            ("minute", 60_000),
            ("second", 1_000),
            ("h", 3_600_000),
            ("18446744073709551615ms", u64::MAX),
        ] {
            assert_eq!(millis(text), Ok(ms), "{text:?}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_duration_and_what_overflows() {
        for bad in [
            "",
            "2",
            "2 fortnights",
            "-1s",
            "+1s",
            "1.5s",
            "1 s s",
            "forever",
            "s1",
        ] {
            assert_eq!(millis(bad), Err(DurationError::NotADuration), "{bad:?}");
        }
        for long in [
            "99999999999999999999s",
            "18446744073709551615s",
            "9999999999999999w",
        ] {
            assert_eq!(millis(long), Err(DurationError::TooLong), "{long:?}");
        }
    }
}

//! Duration strings, checked at compile time.

/// Milliseconds of `"500ms"`, `"2s"`, `"1m"`, `"1h"`, `"7d"`, `"1w"` (or spelled out), or a
/// message saying what is wrong: the runtime's parser (`floodgate-duration`), so that a rule
/// reads the same in an attribute and in `"..".parse::<Rule>()`.
pub(crate) fn millis(text: &str) -> Result<u64, String> {
    floodgate_duration::millis(text).map_err(|e| match e {
        floodgate_duration::DurationError::NotADuration => format!(
            "`{text}` is not a duration; write a number and a unit, such as \"500ms\", \"2s\", \"1m\", \"1h\" or \"7d\""
        ),
        floodgate_duration::DurationError::TooLong => format!("`{text}` is too long a duration"),
    })
}

#[cfg(test)]
mod tests {
    use super::millis;

    #[test]
    fn parses_units() {
        assert_eq!(millis("500ms"), Ok(500));
        assert_eq!(millis("2s"), Ok(2_000));
        assert_eq!(millis("1m"), Ok(60_000));
        assert_eq!(millis("1h"), Ok(3_600_000));
        assert_eq!(millis("7d"), Ok(604_800_000));
        assert_eq!(millis("10 seconds"), Ok(10_000));
        assert_eq!(millis(" 500 ms "), Ok(500));
        assert_eq!(millis("1w"), Ok(7 * 86_400_000));
        assert_eq!(millis("0s"), Ok(0)); // callers reject zero with their own message
    }

    #[test]
    fn a_unit_alone_is_one_of_it() {
        assert_eq!(millis("minute"), Ok(60_000));
        assert_eq!(millis("second"), Ok(1_000));
        assert_eq!(millis("h"), Ok(3_600_000));
    }

    #[test]
    fn agrees_with_the_runtime_parser() {
        for text in [
            "500ms",
            "2s",
            "1m",
            "1h",
            "7d",
            "1w",
            "10 seconds",
            "minute",
            "2 hours",
            " 3 min ",
            "0s",
            "",
            "2",
            "2 fortnights",
            "-1s",
            "1.5s",
            "+1s",
            "1 s s",
            "forever",
            "99999999999999999999s",
            "18446744073709551615ms",
            "18446744073709551615s",
        ] {
            let runtime = floodgate::parse_duration(text)
                .ok()
                .map(|d| u64::try_from(d.as_millis()).unwrap());
            assert_eq!(millis(text).ok(), runtime, "{text:?}");
        }
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "2",
            "2 fortnights",
            "-1s",
            "1.5s",
            "99999999999999999999s",
        ] {
            assert!(millis(bad).is_err(), "{bad}");
        }
    }
}

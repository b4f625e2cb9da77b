//! Duration strings, checked at compile time.

/// Milliseconds of `"500ms"`, `"2s"`, `"1m"`, `"1h"`, `"7d"`, `"1w"` (or spelled out:
/// `"10 seconds"`), or a message saying what is wrong.
pub(crate) fn millis(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(trimmed.len(), |(i, _)| i);
    let number = &trimmed[..digits_end];
    let unit = trimmed[digits_end..].trim();
    let scale: u64 = match unit {
        "ms" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * 1_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 60 * 60 * 1_000,
        "d" | "day" | "days" => 24 * 60 * 60 * 1_000,
        "w" | "week" | "weeks" => 7 * 24 * 60 * 60 * 1_000,
        _ => {
            return Err(format!(
                "`{text}` is not a duration; write a number and a unit, such as \"500ms\", \"2s\", \"1m\", \"1h\" or \"7d\""
            ))
        }
    };
    if number.is_empty() {
        return Err(format!("`{text}` has no number; write e.g. \"1{unit}\""));
    }
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("`{text}` is too long a duration"))
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
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "s",
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

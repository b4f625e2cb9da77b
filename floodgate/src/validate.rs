//! Configuration checks made when the app starts: a mistake stops it from starting with a
//! message naming the setting, instead of serving requests unprotected.

use std::time::Duration;

use crate::error::ConfigError;
use crate::policy::{Policy, Punishment};
use crate::rules::{BanRule, Rule};

/// Every rule counts at least one request in a window of at least a millisecond: a zero
/// count refuses every request (use a denying `Target` for that), a zero window never
/// refuses.
pub(crate) fn rules(field: &str, rules: &[Rule]) -> Result<(), ConfigError> {
    for r in rules {
        if r.count() == 0 {
            return Err(ConfigError::invalid(
                field,
                format!("rule {r} has a count of 0 and would refuse every request"),
            ));
        }
        if r.window() < Duration::from_millis(1) {
            return Err(ConfigError::invalid(
                field,
                format!(
                    "rule {}/{:?} has a window under 1ms and would never refuse",
                    r.count(),
                    r.window()
                ),
            ));
        }
    }
    Ok(())
}

/// A ban rule bans after at least one offence within a window, for a while.
pub(crate) fn ban_rule(rule: &BanRule) -> Result<(), ConfigError> {
    let field = "ban_rule";
    if rule.count() == 0 {
        return Err(ConfigError::invalid(field, "the count must be at least 1"));
    }
    if rule.window() < Duration::from_millis(1) {
        return Err(ConfigError::invalid(
            field,
            "the window must be at least 1ms",
        ));
    }
    if rule.duration() < Duration::from_millis(1) {
        return Err(ConfigError::invalid(
            field,
            "the ban must last at least 1ms",
        ));
    }
    Ok(())
}

/// A policy allows at least one request per window of at least a millisecond, and its
/// blocks and punishments last.
pub(crate) fn policy(field: &str, p: &Policy) -> Result<(), ConfigError> {
    let fail = |what: String| Err(ConfigError::invalid(field, what));
    if p.amount == 0 {
        return fail(format!(
            "policy {}: amount is 0, so every request would be refused",
            p.name()
        ));
    }
    if p.time_window_ms == 0 {
        return fail(format!(
            "policy with amount {}: the time window is under 1ms, so it would never limit",
            p.amount
        ));
    }
    if p.block_duration_ms == Some(0) {
        return fail(format!(
            "policy {}: block_duration is under 1ms, so a block would never hold",
            p.name()
        ));
    }
    if let Punishment::Ban(d) = p.punishment {
        if d < Duration::from_millis(1) {
            return fail(format!(
                "policy {}: block_exceed_duration is under 1ms, so a punishment would never hold",
                p.name()
            ));
        }
    }
    if let Some(a) = p.adaptive {
        if !a.factor.is_finite() || a.factor < 1.0 {
            return fail(format!(
                "policy {}: the adaptive factor must be a finite number of at least 1, got {}",
                p.name(),
                a.factor
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Adaptive;

    #[test]
    fn mistakes_name_the_setting() {
        let err = rules("rate_limit_rules", &[Rule::new(0, Duration::from_secs(1))]).unwrap_err();
        assert!(err.to_string().contains("rate_limit_rules"), "{err}");
        assert!(rules("x", &[Rule::new(1, Duration::from_micros(999))]).is_err());
        assert!(rules("x", &[Rule::new(1, Duration::from_millis(1))]).is_ok());

        // BanRule::new makes a count of 0 one offence.
        assert!(ban_rule(&BanRule::new(
            0,
            Duration::from_secs(1),
            Duration::from_secs(1)
        ))
        .is_ok());
        assert!(ban_rule(&BanRule::new(1, Duration::ZERO, Duration::from_secs(1))).is_err());
        assert!(ban_rule(&BanRule::new(1, Duration::from_secs(1), Duration::ZERO)).is_err());
        assert!(ban_rule(&BanRule::new(
            3,
            Duration::from_secs(1),
            Duration::from_secs(1)
        ))
        .is_ok());

        let ok = Policy::new(5, Duration::from_secs(60));
        assert!(policy("default_policy", &ok).is_ok());
        let err = policy("default_policy", &Policy::new(5, Duration::from_micros(10))).unwrap_err();
        assert!(err.to_string().contains("default_policy"), "{err}");
        assert!(policy("p", &Policy::new(0, Duration::from_secs(1))).is_err());
        assert!(policy("p", &ok.block_duration(Duration::ZERO)).is_err());
        assert!(policy("p", &ok.block_exceed_duration(Some(Duration::ZERO))).is_err());
        assert!(policy("p", &ok.block_exceed_duration(None)).is_ok());
        let nan = Adaptive {
            factor: f64::NAN,
            max: Duration::from_secs(60),
            jitter: Duration::ZERO,
        };
        assert!(policy("p", &ok.adaptive(nan)).is_err());
    }
}

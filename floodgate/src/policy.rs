//! The floodgate policy family: fixed windows with blocks, block limits, punishments,
//! accumulation, cooldown, grace period and adaptive punishment.

use std::fmt;
use std::time::Duration;

use actix_web::HttpRequest;

use crate::clock::duration_millis;
use crate::rules::DisplayDuration;

/// A function that exempts a request from a policy when it returns `true`
/// (FlaskFloodgate's `request_data_check`). The request is then served without being counted.
pub type RequestCheck = fn(&HttpRequest) -> bool;

/// What happens to a client whose block count exceeds the policy's `block_limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Punishment {
    /// Banned (403) for this long.
    Ban(Duration),
    /// Blacklisted: 403 on every limited route until an operator unbans it.
    Blacklist,
}

/// Grace period: a client that was not blocked recently may exceed the limit slightly,
/// once, without being blocked.
///
/// "Rarely" means: the client has had no block, and no grace, during the last `interval`
/// (a client seen for the first time qualifies). "Slightly" means: up to `extra` requests
/// over the window's allowance, in the one window where the grace is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grace {
    /// Extra requests allowed in the window where the grace is taken.
    pub extra: u32,
    /// How long a client must have gone without a block (and without a grace) to qualify.
    pub interval: Duration,
}

/// Adaptive punishment (as fail2ban's `bantime.increment`): the n-th punishment of the same
/// client lasts `base x factor^n`, capped at `max`, plus a random `0..=jitter`, where `base` is
/// the policy's ban duration and n counts the client's earlier punishments (0 for the first).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adaptive {
    /// Growth factor per punishment; values below 1 are treated as 1.
    pub factor: f64,
    /// The longest punishment.
    pub max: Duration,
    /// Up to this much random time added to each punishment, so that punished clients do not
    /// all return at once.
    pub jitter: Duration,
}

impl Adaptive {
    /// The random extra (ms) added to a punishment, from `draw`, a uniformly random number
    /// that the caller drew: at most `jitter`, so a decision is a function of its inputs.
    pub fn jitter_millis(&self, draw: u64) -> u64 {
        match duration_millis(self.jitter) {
            0 => 0,
            u64::MAX => draw,
            j => draw % (j + 1),
        }
    }

    /// The length of punishment number `n` (0-based) for a base duration, before jitter.
    pub fn length(&self, base: Duration, n: u32) -> Duration {
        let factor = if self.factor.is_finite() && self.factor > 1.0 {
            self.factor
        } else {
            1.0
        };
        let base_ms = duration_millis(base);
        if base_ms == 0 {
            // 0 x factor^n is 0, even when factor^n overflows to infinity (0 x inf is NaN).
            return Duration::ZERO;
        }
        let max_ms = duration_millis(self.max) as f64;
        // Past f64's range the product is +inf, which `min` caps; a float-to-integer `as`
        // saturates, so a `max` of `Duration::MAX` (2^64 - 1 ms, 2^64 as f64) gives
        // `u64::MAX` ms rather than wrapping.
        let ms = (base_ms as f64) * factor.powi(n.min(1024) as i32);
        Duration::from_millis(ms.min(max_ms).max(0.0) as u64)
    }
}

/// A per-client policy of the floodgate family (FlaskFloodgate's rate limiting: fixed
/// windows, blocks and punishments), attached to a route with `#[rate_limited(..)]` or
/// [`RouteRules::policy`](crate::RouteRules::policy).
///
/// Per client, a fixed window opens at the client's first counted request. `amount`
/// requests are allowed in it; the next one *blocks* the client (429) for `block_duration`.
/// Each block counts once; a client blocked more than `block_limit` times is punished
/// ([`Punishment`]).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use floodgate::{Policy, Punishment};
///
/// let policy = Policy::new(20, Duration::from_secs(60))
///     .block_limit(5)
///     .punishment(Punishment::Blacklist)
///     .accumulate_requests(true);
/// assert_eq!(policy.amount(), 20);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub(crate) amount: u32,
    pub(crate) time_window_ms: u64,
    pub(crate) block_duration_ms: Option<u64>,
    pub(crate) block_limit: u32,
    pub(crate) punishment: Punishment,
    pub(crate) relative_block: bool,
    pub(crate) block_exceed_reset: bool,
    pub(crate) max_window_ms: Option<u64>,
    pub(crate) accumulate_cap: Option<u32>,
    pub(crate) cooldown_ms: u64,
    pub(crate) grace: Option<Grace>,
    pub(crate) adaptive: Option<Adaptive>,
    pub(crate) request_data_check: Option<RequestCheck>,
}

impl Default for Policy {
    /// 20 requests per minute, block for the window, ban for a day after 5 blocks, records
    /// kept 30 days after the client's last request.
    fn default() -> Self {
        Policy::new(20, Duration::from_secs(60))
    }
}

impl Policy {
    /// `amount` requests per `time_window`, with the defaults of every other parameter:
    /// `block_duration` = `time_window`, `block_limit` = 5, a ban of one day as punishment,
    /// `relative_block` = false, `block_exceed_reset` = true, `max_window_duration` = 30 days,
    /// no accumulation, no cooldown, no grace, no adaptive punishment.
    pub const fn new(amount: u32, time_window: Duration) -> Self {
        Policy {
            amount,
            time_window_ms: crate::rules::Rule::new(1, time_window).window_ms(),
            block_duration_ms: None,
            block_limit: 5,
            punishment: Punishment::Ban(Duration::from_secs(86_400)),
            relative_block: false,
            block_exceed_reset: true,
            max_window_ms: Some(30 * 86_400_000),
            accumulate_cap: None,
            cooldown_ms: 0,
            grace: None,
            adaptive: None,
            request_data_check: None,
        }
    }

    /// Requests allowed per window.
    pub const fn amount(&self) -> u32 {
        self.amount
    }

    /// The window length.
    pub const fn window(&self) -> Duration {
        Duration::from_millis(self.time_window_ms)
    }

    /// How long a block lasts (defaults to the window length).
    pub const fn block_length(&self) -> Duration {
        match self.block_duration_ms {
            Some(ms) => Duration::from_millis(ms),
            None => Duration::from_millis(self.time_window_ms),
        }
    }

    /// Sets the requests allowed per window.
    pub const fn with_amount(mut self, amount: u32) -> Self {
        self.amount = amount;
        self
    }

    /// Sets the window length.
    pub fn time_window(mut self, window: Duration) -> Self {
        self.time_window_ms = duration_millis(window);
        self
    }

    /// Sets how long a block lasts.
    pub fn block_duration(mut self, d: Duration) -> Self {
        self.block_duration_ms = Some(duration_millis(d));
        self
    }

    /// Sets how many blocks a client may collect before it is punished.
    pub const fn block_limit(mut self, limit: u32) -> Self {
        self.block_limit = limit;
        self
    }

    /// Sets the punishment for exceeding the block limit.
    pub const fn punishment(mut self, p: Punishment) -> Self {
        self.punishment = p;
        self
    }

    /// `block_exceed_duration`: a ban of this length, or `None` to blacklist ("forever").
    pub const fn block_exceed_duration(self, d: Option<Duration>) -> Self {
        match d {
            Some(d) => self.punishment(Punishment::Ban(d)),
            None => self.punishment(Punishment::Blacklist),
        }
    }

    /// `true`: every refused request during a block pushes the block's end to
    /// `block_duration` after that request. `false` (default): a block ends
    /// `block_duration` after the first refused request.
    pub const fn relative_block(mut self, yes: bool) -> Self {
        self.relative_block = yes;
        self
    }

    /// `true` (default): the block count returns to 0 when a punishment ends. `false`: it
    /// stays at `block_limit`, so the next block punishes again.
    pub const fn block_exceed_reset(mut self, yes: bool) -> Self {
        self.block_exceed_reset = yes;
        self
    }

    /// A client record idle longer than this is deleted; `None` keeps records forever.
    pub fn max_window_duration(mut self, d: Option<Duration>) -> Self {
        self.max_window_ms = d.map(duration_millis);
        self
    }

    /// Carries unused quota of an ended window into the next one, capped at `amount` extra.
    pub const fn accumulate_requests(mut self, yes: bool) -> Self {
        self.accumulate_cap = if yes { Some(self.amount) } else { None };
        self
    }

    /// Carries unused quota into the next window, capped at `cap` extra requests.
    pub const fn accumulate_cap(mut self, cap: u32) -> Self {
        self.accumulate_cap = Some(cap);
        self
    }

    /// A minimum interval between two requests of one client. A request sooner than that
    /// is refused with 429 (and does not count as a block). Zero turns it off.
    pub fn cooldown(mut self, d: Duration) -> Self {
        self.cooldown_ms = duration_millis(d);
        self
    }

    /// Turns the grace period on. See [`Grace`].
    pub const fn grace(mut self, grace: Grace) -> Self {
        self.grace = Some(grace);
        self
    }

    /// Turns adaptive punishment on. See [`Adaptive`].
    pub const fn adaptive(mut self, adaptive: Adaptive) -> Self {
        self.adaptive = Some(adaptive);
        self
    }

    /// Requests for which `check` returns true are served without being counted.
    pub const fn request_data_check(mut self, check: RequestCheck) -> Self {
        self.request_data_check = Some(check);
        self
    }

    /// The name used in the `RateLimit` header fields and refusal bodies: `"20/1m"`.
    pub fn name(&self) -> String {
        format!(
            "{}/{}",
            self.amount,
            DisplayDuration(Duration::from_millis(self.time_window_ms))
        )
    }

    pub(crate) fn block_ms(&self) -> u64 {
        self.block_duration_ms.unwrap_or(self.time_window_ms)
    }

    /// Applies the keys given in a `#[rate_limited(..)]` attribute on top of this policy.
    pub(crate) fn with_overrides(mut self, o: &PolicyOverrides) -> Self {
        if let Some(v) = o.amount {
            self.amount = v;
            if self.accumulate_cap.is_some() && o.accumulate_cap.is_none() {
                self.accumulate_cap = Some(v);
            }
        }
        if let Some(v) = o.time_window_ms {
            self.time_window_ms = v;
        }
        if o.block_duration_ms.is_some() {
            self.block_duration_ms = o.block_duration_ms;
        }
        if let Some(v) = o.block_limit {
            self.block_limit = v;
        }
        match o.block_exceed_ms {
            Some(None) => self.punishment = Punishment::Blacklist,
            Some(Some(ms)) => self.punishment = Punishment::Ban(Duration::from_millis(ms)),
            None => {}
        }
        if let Some(v) = o.relative_block {
            self.relative_block = v;
        }
        if let Some(v) = o.block_exceed_reset {
            self.block_exceed_reset = v;
        }
        if let Some(v) = o.max_window_ms {
            self.max_window_ms = v;
        }
        match (o.accumulate, o.accumulate_cap) {
            (Some(false), _) => self.accumulate_cap = None,
            (_, Some(cap)) => self.accumulate_cap = Some(cap),
            (Some(true), None) => self.accumulate_cap = Some(self.amount),
            (None, None) => {}
        }
        if let Some(v) = o.cooldown_ms {
            self.cooldown_ms = v;
        }
        if let Some((extra, interval_ms)) = o.grace {
            self.grace = Some(Grace {
                extra,
                interval: Duration::from_millis(interval_ms),
            });
        }
        if let Some((factor, max_ms, jitter_ms)) = o.adaptive {
            self.adaptive = Some(Adaptive {
                factor,
                max: Duration::from_millis(max_ms),
                jitter: Duration::from_millis(jitter_ms),
            });
        }
        if o.request_data_check.is_some() {
            self.request_data_check = o.request_data_check;
        }
        self
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The keys written in one `#[rate_limited(..)]` attribute; what is absent comes from the
/// app's default policy. Built by the macro; not part of the stable API.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct PolicyOverrides {
    pub amount: Option<u32>,
    pub time_window_ms: Option<u64>,
    pub block_duration_ms: Option<u64>,
    pub block_limit: Option<u32>,
    /// `Some(None)` is "forever".
    pub block_exceed_ms: Option<Option<u64>>,
    pub relative_block: Option<bool>,
    pub block_exceed_reset: Option<bool>,
    /// `Some(None)` is "forever".
    pub max_window_ms: Option<Option<u64>>,
    pub accumulate: Option<bool>,
    pub accumulate_cap: Option<u32>,
    pub cooldown_ms: Option<u64>,
    /// (extra, interval ms)
    pub grace: Option<(u32, u64)>,
    /// (factor, max ms, jitter ms)
    pub adaptive: Option<(f64, u64, u64)>,
    pub request_data_check: Option<RequestCheck>,
}

impl PolicyOverrides {
    /// No key given: the app's default policy as it is.
    pub const NONE: PolicyOverrides = PolicyOverrides {
        amount: None,
        time_window_ms: None,
        block_duration_ms: None,
        block_limit: None,
        block_exceed_ms: None,
        relative_block: None,
        block_exceed_reset: None,
        max_window_ms: None,
        accumulate: None,
        accumulate_cap: None,
        cooldown_ms: None,
        grace: None,
        adaptive: None,
        request_data_check: None,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_lengths_grow_to_the_cap() {
        let a = Adaptive {
            factor: 2.0,
            max: Duration::from_secs(50),
            jitter: Duration::ZERO,
        };
        let base = Duration::from_secs(10);
        let got: Vec<u64> = (0..5).map(|n| a.length(base, n).as_secs()).collect();
        assert_eq!(got, [10, 20, 40, 50, 50]);
        assert_eq!(a.length(base, u32::MAX), Duration::from_secs(50));
    }

    #[test]
    fn overrides_apply_on_top_of_defaults() {
        let o = PolicyOverrides {
            amount: Some(3),
            block_exceed_ms: Some(None),
            accumulate: Some(true),
            ..PolicyOverrides::NONE
        };
        let p = Policy::default().with_overrides(&o);
        assert_eq!(p.amount, 3);
        assert_eq!(p.punishment, Punishment::Blacklist);
        assert_eq!(p.accumulate_cap, Some(3));
        assert_eq!(p.time_window_ms, 60_000);
    }

    #[test]
    fn adaptive_lengths_saturate_and_a_zero_base_stays_zero() {
        let huge = Adaptive {
            factor: f64::MAX,
            max: Duration::MAX,
            jitter: Duration::MAX,
        };
        // factor^n overflows f64 to +inf; the cap holds it, and Duration::MAX caps at
        // u64::MAX ms (2^64 as f64 casts back saturating).
        for n in [0, 1, 2, 1024, u32::MAX] {
            let want = if n == 0 { 1 } else { u64::MAX };
            assert_eq!(
                huge.length(Duration::from_millis(1), n),
                Duration::from_millis(want)
            );
            assert_eq!(
                huge.length(Duration::MAX, n),
                Duration::from_millis(u64::MAX)
            );
            // 0 x inf is NaN, which the cap would turn into `max`: a zero base is zero.
            assert_eq!(huge.length(Duration::ZERO, n), Duration::ZERO, "n = {n}");
        }
        let odd = Adaptive {
            factor: f64::NAN,
            max: Duration::ZERO,
            jitter: Duration::ZERO,
        };
        assert_eq!(odd.length(Duration::MAX, 7), Duration::ZERO);
    }

    #[test]
    fn every_duration_setting_takes_duration_max() {
        let p = Policy::new(u32::MAX, Duration::MAX)
            .time_window(Duration::MAX)
            .block_duration(Duration::MAX)
            .cooldown(Duration::MAX)
            .max_window_duration(Some(Duration::MAX))
            .block_exceed_duration(Some(Duration::MAX))
            .accumulate_requests(true);
        let max = Duration::from_millis(u64::MAX);
        assert_eq!((p.window(), p.block_length()), (max, max));
        assert_eq!((p.block_ms(), p.cooldown_ms), (u64::MAX, u64::MAX));
        assert_eq!(p.max_window_ms, Some(u64::MAX));
        assert_eq!(p.accumulate_cap, Some(u32::MAX));
        assert_eq!(p.name(), "4294967295/18446744073709551615ms");
    }
}

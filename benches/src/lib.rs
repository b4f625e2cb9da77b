//! Shared pieces of floodgate's benchmarks: the client-address scheme, the configurations
//! under test and the hello-world servers built from them.
//!
//! Every configuration reads the client from the [`IP_HEADER`] header, which the load
//! generators fill with one of [`DISTINCT_IPS`] addresses, so that limits are counted per
//! client as behind a reverse proxy.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use floodgate::{BanRule, ClientKey, Floodgate, Rule};

pub mod core_work;
pub mod server;

/// The header carrying the client address in every benchmark.
pub const IP_HEADER: &str = "x-client-ip";

/// How many distinct client addresses the load generators cycle through.
pub const DISTINCT_IPS: u32 = 10_000;

/// The `n`-th client address: 10.0.0.1, 10.0.0.2, ... (the same order as `wrk_ips.lua`).
pub fn client_ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0001_u32.wrapping_add(n)))
}

/// The floodgate key of the `n`-th client address.
pub fn client_key(n: u32) -> ClientKey {
    ClientKey::from_ip(client_ip(n), 64)
}

/// The global rules of the "allowed" floodgate configuration: far above what 10,000 clients
/// reach under the load generator, so nothing is refused.
pub fn high_rules() -> [Rule; 2] {
    [
        Rule::new(100, Duration::from_secs(1)),
        Rule::new(1_000, Duration::from_secs(60)),
    ]
}

/// The global rules of the "refusing" configuration: one request per client per minute, so
/// all but each client's first request are refused.
pub fn low_rules() -> [Rule; 2] {
    [
        Rule::new(1, Duration::from_secs(60)),
        Rule::new(5, Duration::from_secs(3_600)),
    ]
}

/// The ban rule of both floodgate configurations (nothing reports, so it is only checked).
pub fn ban_rule() -> BanRule {
    BanRule::new(3, Duration::from_secs(10), Duration::from_secs(600))
}

/// Floodgate with the memory store, two global sliding-log rules, a ban rule and the
/// RateLimit header fields on (the default); `refusing` picks [`low_rules`].
pub fn floodgate(refusing: bool) -> Floodgate {
    Floodgate::new()
        .ip_header(IP_HEADER)
        .ban_rule(ban_rule())
        .rate_limit_rules(if refusing { low_rules() } else { high_rules() })
        .ratelimit_headers(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core_work::{bare_op, kinds, Work, T0};
    use floodgate::{ClientState, Decision};

    #[test]
    fn addresses_follow_the_wrk_script() {
        // benches/wrk_ips.lua sends 10.0.0.1 .. 10.0.39.16 in this order.
        assert_eq!(client_ip(0).to_string(), "10.0.0.1");
        assert_eq!(client_ip(255).to_string(), "10.0.1.0");
        assert_eq!(client_ip(DISTINCT_IPS - 1).to_string(), "10.0.39.16");
    }

    #[test]
    fn the_core_workload_is_always_allowed() {
        for (name, work) in kinds() {
            let mut state = ClientState::new();
            let mut now = T0;
            for _ in 0..300 {
                bare_op(&mut state, &work, &mut now);
            }
            now = now + Duration::from_millis(crate::core_work::CLIENT_INTERVAL_MS);
            match &work {
                Work::Check(plan) => {
                    assert!(state.check(plan, now).is_allowed(), "{name}");
                }
                Work::Report(rule) => {
                    let outcome = state.report(rule, now);
                    assert!(
                        matches!(outcome, floodgate::ReportOutcome::Recorded { .. }),
                        "{name}"
                    );
                    assert!(!matches!(
                        state.check(&floodgate::Plan::ban_only(), now),
                        Decision::Banned { .. }
                    ));
                }
            }
        }
    }
}

//! IPv6 rotation: a client that hops between the /64s of one network gets the whole network
//! banned.
//!
//! An IPv6 subscriber usually holds a /56 or a /48, so 256 or 65,536 /64s: keying clients by
//! their /64 (the default) lets one of them start afresh after every ban. [`Ipv6Rotation`]
//! counts, per wider network, the distinct /64s banned within a window; once a level's count
//! is reached, that network is banned (a ban of the prefix key, checked on every request from
//! inside it), so a flood from one network becomes one ban.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;

use crate::client::ClientKey;
use crate::clock::{duration_millis, Timestamp};
use crate::error::ConfigError;
use crate::state::BanReason;

/// At most this many networks are watched at once (the oldest are forgotten first).
const MAX_NETWORKS: usize = 4096;

/// At most this many levels.
const MAX_LEVELS: usize = 4;

/// Bans a whole IPv6 network once enough of its /64s were banned within a window; see
/// [`Floodgate::ipv6_rotation`](crate::Floodgate::ipv6_rotation).
///
/// The default: a /56 after 4 of its /64s were banned within an hour, a /48 after 8. The
/// network's ban ends when the ban that tipped it does, but lasts at most
/// [`max_ban`](Self::max_ban) (default one day; a blacklist counts as that long), so a shared
/// network is never blacklisted for good by its worst subscriber.
///
/// Counting is per process: in a fleet sharing a [`RedisStore`](crate::Floodgate::store), each
/// server counts the bans it saw, and the network's ban, once made, applies everywhere.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use floodgate::{Floodgate, Ipv6Rotation};
///
/// let floodgate = Floodgate::new().ipv6_rotation(
///     Ipv6Rotation::new()
///         .level(56, 3)
///         .level(48, 6)
///         .within(Duration::from_secs(600)),
/// );
/// let without = Floodgate::new().ipv6_rotation(Ipv6Rotation::off());
/// # let _ = (floodgate, without);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Rotation {
    /// (prefix length, banned /64s), widest last; `len` of them are used.
    levels: [(u8, u32); MAX_LEVELS],
    len: usize,
    /// True while `level` has not been called: the first call replaces the defaults.
    defaults: bool,
    window: Duration,
    max_ban: Duration,
}

impl Default for Ipv6Rotation {
    fn default() -> Self {
        Ipv6Rotation::new()
    }
}

impl Ipv6Rotation {
    /// The default levels: a /56 after 4 banned /64s, a /48 after 8, within an hour.
    pub const fn new() -> Self {
        Ipv6Rotation {
            levels: [(56, 4), (48, 8), (0, 0), (0, 0)],
            len: 2,
            defaults: true,
            window: Duration::from_secs(3600),
            max_ban: Duration::from_secs(86_400),
        }
    }

    /// No network is ever banned for its /64s.
    pub const fn off() -> Self {
        Ipv6Rotation {
            levels: [(0, 0); MAX_LEVELS],
            len: 0,
            defaults: false,
            window: Duration::from_secs(3600),
            max_ban: Duration::from_secs(86_400),
        }
    }

    /// Bans the `/prefix` network once `banned` of its client networks (its /64s, or what
    /// [`ipv6_prefix`](crate::Floodgate::ipv6_prefix) keys) were banned within the window.
    /// The first call replaces the default levels; repeat for several (at most 4).
    pub fn level(mut self, prefix: u8, banned: u32) -> Self {
        if self.defaults {
            self.len = 0;
            self.defaults = false;
        }
        if self.len < MAX_LEVELS {
            self.levels[self.len] = (prefix, banned);
        }
        self.len += 1;
        self
    }

    /// The window in which the bans are counted (default one hour).
    pub const fn within(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The longest ban of a network (default one day).
    pub const fn max_ban(mut self, d: Duration) -> Self {
        self.max_ban = d;
        self
    }

    /// The window in which the bans are counted.
    pub const fn window(&self) -> Duration {
        self.window
    }

    /// Whether any level is set.
    pub const fn is_on(&self) -> bool {
        self.len > 0
    }

    fn levels(&self) -> &[(u8, u32)] {
        &self.levels[..self.len.min(MAX_LEVELS)]
    }

    /// The wider networks to check for a client keyed by `key` (an IPv6 client network).
    pub(crate) fn networks(&self, key: &ClientKey) -> impl Iterator<Item = ClientKey> + '_ {
        let v6 = key.v6_network();
        self.levels()
            .iter()
            .filter_map(move |&(prefix, _)| match v6 {
                Some((addr, bits)) if prefix < bits => {
                    Some(ClientKey::from_ip(IpAddr::V6(addr), prefix))
                }
                _ => None,
            })
    }

    /// Checks the settings against the client prefix (`v6_prefix` bits).
    pub(crate) fn validate(&self, v6_prefix: u8) -> Result<(), ConfigError> {
        let field = "ipv6_rotation";
        if self.len > MAX_LEVELS {
            return Err(ConfigError::invalid(
                field,
                format!("at most {MAX_LEVELS} levels"),
            ));
        }
        for &(prefix, banned) in self.levels() {
            // The default levels apply only where they are wider than the client prefix.
            if self.defaults {
                break;
            }
            if !(8..v6_prefix).contains(&prefix) {
                return Err(ConfigError::invalid(
                    field,
                    format!(
                        "a level's prefix must be from /8 to /{} (clients are keyed by their \
                         /{v6_prefix}); got /{prefix}",
                        v6_prefix.saturating_sub(1)
                    ),
                ));
            }
            if banned < 2 {
                return Err(ConfigError::invalid(
                    field,
                    format!("the /{prefix} level needs at least 2 banned networks, got {banned}"),
                ));
            }
        }
        if self.is_on() && self.window < Duration::from_millis(1) {
            return Err(ConfigError::invalid(
                field,
                "the window must be at least 1ms",
            ));
        }
        if self.is_on() && self.max_ban < Duration::from_millis(1) {
            return Err(ConfigError::invalid(field, "max_ban must be at least 1ms"));
        }
        Ok(())
    }
}

/// A network's ban to impose: the prefix key, until when, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NetworkBan {
    pub(crate) network: ClientKey,
    pub(crate) until: Timestamp,
    pub(crate) reason: BanReason,
}

/// The bans seen per watched network (this process's count).
#[derive(Debug, Default)]
pub(crate) struct RotationWatch {
    networks: Mutex<Watched>,
}

#[derive(Debug, Default)]
struct Watched {
    /// (prefix bits, network) -> banned client networks: (address, when banned).
    map: HashMap<(u8, u128), Vec<(u128, u64)>>,
    /// Insertion order, for forgetting the oldest network when full.
    order: std::collections::VecDeque<(u8, u128)>,
}

impl RotationWatch {
    /// Notes that `client` was banned until `until` (`None`: forever) at `now`; returns the
    /// bans of the networks this tipped.
    pub(crate) fn banned(
        &self,
        settings: &Ipv6Rotation,
        client: &ClientKey,
        until: Option<Timestamp>,
        reason: BanReason,
        now: Timestamp,
    ) -> Vec<NetworkBan> {
        let Some((addr, bits)) = client.v6_network() else {
            return Vec::new();
        };
        let addr = u128::from(addr);
        let now_ms = now.as_millis();
        let window = duration_millis(settings.window);
        let cap = now + settings.max_ban;
        let until = until.map_or(cap, |u| u.min(cap));
        let mut tipped = Vec::new();
        let Ok(mut watched) = self.networks.lock() else {
            return tipped;
        };
        for &(prefix, needed) in settings.levels() {
            if prefix >= bits {
                continue;
            }
            let network = addr & mask(prefix);
            let id = (prefix, network);
            if !watched.map.contains_key(&id) {
                if watched.map.len() >= MAX_NETWORKS {
                    if let Some(old) = watched.order.pop_front() {
                        watched.map.remove(&old);
                    }
                }
                watched.order.push_back(id);
            }
            let seen = watched.map.entry(id).or_default();
            seen.retain(|&(a, t)| a != addr && now_ms.saturating_sub(t) < window);
            seen.push((addr, now_ms));
            // Never more than the level needs: the oldest go first.
            let needed = needed.max(2) as usize;
            if seen.len() > needed {
                let extra = seen.len() - needed;
                seen.drain(..extra);
            }
            if seen.len() >= needed {
                seen.clear();
                tipped.push(NetworkBan {
                    network: ClientKey::from_ip(IpAddr::V6(Ipv6Addr::from(network)), prefix),
                    until,
                    reason,
                });
            }
        }
        tipped
    }
}

fn mask(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p.min(128))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ClientKey {
        ClientKey::from_ip(s.parse().unwrap(), 64)
    }

    fn at(s: u64) -> Timestamp {
        Timestamp::from_millis(1_000_000 + s * 1000)
    }

    #[test]
    fn enough_banned_64s_of_one_56_ban_the_56_then_the_48() {
        let settings = Ipv6Rotation::new();
        let watch = RotationWatch::default();
        let ban = |k: &str, s: u64| {
            watch.banned(
                &settings,
                &key(k),
                Some(at(s + 600)),
                BanReason::Reported,
                at(s),
            )
        };
        assert!(ban("2001:db8:0:100::1", 0).is_empty());
        assert!(ban("2001:db8:0:101::1", 1).is_empty());
        // The same /64 again does not count twice.
        assert!(ban("2001:db8:0:101::9", 2).is_empty());
        assert!(ban("2001:db8:0:102::1", 3).is_empty());
        let tipped = ban("2001:db8:0:103::1", 4);
        assert_eq!(
            tipped,
            vec![NetworkBan {
                network: ClientKey::from_ip("2001:db8:0:100::".parse().unwrap(), 56),
                until: at(604),
                reason: BanReason::Reported,
            }]
        );
        assert_eq!(tipped[0].network.to_string(), "2001:db8:0:100::/56");
        // Four more /64s in other /56s of the same /48 tip the /48 (8 in all).
        for (i, s) in [
            "2001:db8:0:200::1",
            "2001:db8:0:300::1",
            "2001:db8:0:400::1",
        ]
        .iter()
        .enumerate()
        {
            assert!(ban(s, 10 + i as u64).is_empty(), "{s}");
        }
        let tipped = ban("2001:db8:0:500::1", 20);
        assert_eq!(tipped.len(), 1);
        assert_eq!(tipped[0].network.to_string(), "2001:db8::/48");
    }

    #[test]
    fn bans_older_than_the_window_do_not_count() {
        let settings = Ipv6Rotation::new()
            .level(56, 2)
            .within(Duration::from_secs(60));
        let watch = RotationWatch::default();
        let ban =
            |k: &str, s: u64| watch.banned(&settings, &key(k), None, BanReason::Punished, at(s));
        assert!(ban("2001:db8:0:100::1", 0).is_empty());
        assert!(ban("2001:db8:0:101::1", 60).is_empty());
        let tipped = ban("2001:db8:0:102::1", 61);
        assert_eq!(tipped.len(), 1);
        // A blacklist tips a ban of max_ban, not a blacklist of the network.
        assert_eq!(tipped[0].until, at(61) + Duration::from_secs(86_400));
    }

    #[test]
    fn ipv4_and_custom_keys_and_off_never_tip() {
        let watch = RotationWatch::default();
        let on = Ipv6Rotation::new().level(56, 2);
        for k in [ClientKey::custom("user:1"), key("192.0.2.1")] {
            for s in 0..5 {
                assert!(watch
                    .banned(&on, &k, None, BanReason::Reported, at(s))
                    .is_empty());
            }
        }
        let off = Ipv6Rotation::off();
        for i in 0..10 {
            let k = key(&format!("2001:db8:0:1{i:02}::1"));
            assert!(watch
                .banned(&off, &k, None, BanReason::Reported, at(i))
                .is_empty());
        }
        assert_eq!(off.networks(&key("2001:db8::1")).count(), 0);
        let nets: Vec<String> = Ipv6Rotation::new()
            .networks(&key("2001:db8:1:2::1"))
            .map(|k| k.to_string())
            .collect();
        assert_eq!(nets, ["2001:db8:1::/56", "2001:db8:1::/48"]);
    }

    #[test]
    fn the_watch_is_bounded() {
        let watch = RotationWatch::default();
        let settings = Ipv6Rotation::new();
        for i in 0..(MAX_NETWORKS as u128 * 2) {
            let addr = Ipv6Addr::from((0x2001_0db8u128 << 96) | (i << 72));
            let k = ClientKey::from_ip(IpAddr::V6(addr), 64);
            watch.banned(&settings, &k, None, BanReason::Reported, at(0));
        }
        let watched = watch.networks.lock().unwrap();
        assert!(watched.map.len() <= MAX_NETWORKS);
        assert_eq!(watched.map.len(), watched.order.len());
    }

    #[test]
    fn settings_are_validated() {
        assert!(Ipv6Rotation::new().validate(64).is_ok());
        assert!(Ipv6Rotation::off().validate(64).is_ok());
        // Clients keyed by their /48: the default levels (/56, /48) simply never apply.
        assert!(Ipv6Rotation::new().validate(48).is_ok());
        assert!(Ipv6Rotation::new().level(48, 4).validate(48).is_err());
        assert!(Ipv6Rotation::new().level(64, 4).validate(64).is_err());
        assert!(Ipv6Rotation::new().level(56, 1).validate(64).is_err());
        assert!(Ipv6Rotation::new().level(4, 4).validate(64).is_err());
        assert!(Ipv6Rotation::new()
            .within(Duration::ZERO)
            .validate(64)
            .is_err());
        let err = Ipv6Rotation::new()
            .level(56, 2)
            .level(52, 2)
            .level(48, 2)
            .level(44, 2)
            .level(40, 2)
            .validate(64)
            .unwrap_err();
        assert!(err.to_string().contains("ipv6_rotation"), "{err}");
    }
}

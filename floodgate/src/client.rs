//! Who is the client: the key that limits and bans are counted under.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use actix_web::http::header::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// The identity a client's limits and bans are counted under: an IPv4 address, an IPv6
/// network (a /64 by default, since one subscriber usually holds a whole /64), or a custom
/// key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientKey(Repr);

impl std::hash::Hash for ClientKey {
    /// One or two words per key (the derived impl writes a tag, a length and each byte).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match &self.0 {
            Repr::V4(o) => state.write_u64(u64::from(u32::from_be_bytes(*o))),
            Repr::V6(o, prefix) => {
                state.write_u128(u128::from_be_bytes(*o));
                state.write_u8(*prefix);
            }
            Repr::Custom(k) => state.write(k.as_bytes()),
        }
    }
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Repr {
    V4([u8; 4]),
    /// The masked address and the prefix length.
    V6([u8; 16], u8),
    Custom(Arc<str>),
}

impl ClientKey {
    /// The key of an IP address, keying IPv6 by its first `v6_prefix` bits (1 to 128).
    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are keyed as the IPv4 address.
    pub fn from_ip(ip: IpAddr, v6_prefix: u8) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey(Repr::V4(v4.octets())),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(Repr::V4(v4.octets())),
                None => {
                    let prefix = v6_prefix.clamp(1, 128);
                    let mask = u128::MAX << (128 - u32::from(prefix));
                    let masked = u128::from(v6) & mask;
                    ClientKey(Repr::V6(masked.to_be_bytes(), prefix))
                }
            },
        }
    }

    /// A key that is not an address: an API key, a user id.
    pub fn custom(key: impl Into<Arc<str>>) -> Self {
        ClientKey(Repr::Custom(key.into()))
    }

    /// The address, for IP keys (the network address for IPv6).
    pub fn ip(&self) -> Option<IpAddr> {
        match &self.0 {
            Repr::V4(o) => Some(IpAddr::from(*o)),
            Repr::V6(o, _) => Some(IpAddr::V6(Ipv6Addr::from(*o))),
            Repr::Custom(_) => None,
        }
    }
}

impl fmt::Display for ClientKey {
    /// `203.0.113.7`, `2001:db8:1:2::/64`, or the custom key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::V4(o) => write!(f, "{}", IpAddr::from(*o)),
            Repr::V6(o, 128) => write!(f, "{}", Ipv6Addr::from(*o)),
            Repr::V6(o, p) => write!(f, "{}/{p}", Ipv6Addr::from(*o)),
            Repr::Custom(k) => f.write_str(k),
        }
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey({self})")
    }
}

/// Where the client's address comes from.
#[derive(Clone, Debug, Default)]
pub(crate) enum IpSource {
    /// The TCP peer.
    #[default]
    Peer,
    /// A header set by the app's own proxy; the right-most value of a list.
    Header(HeaderName),
    /// `Forwarded` or `X-Forwarded-For`, read only when the peer is a trusted proxy, and walked
    /// from the right past every trusted proxy.
    TrustedProxies(Arc<[IpNet]>),
}

/// Header values longer than this are not parsed (a forged header of megabytes costs nothing).
const MAX_HEADER_LEN: usize = 8 * 1024;

impl IpSource {
    /// The client's address; falls back to the peer when the header is missing or unusable.
    pub(crate) fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        match self {
            IpSource::Peer => peer,
            IpSource::Header(name) => {
                let mut last = None;
                for value in headers.get_all(name) {
                    last = Some(value.as_bytes());
                }
                last.and_then(rightmost).or(peer)
            }
            IpSource::TrustedProxies(proxies) => {
                let peer = peer?;
                let trusted = |ip: &IpAddr| proxies.iter().any(|net| net.contains(&unmap(*ip)));
                if !trusted(&peer) {
                    return Some(peer);
                }
                let hops = forwarded_hops(headers);
                let mut client = peer;
                for hop in hops.iter().rev() {
                    match hop {
                        Some(ip) => {
                            client = *ip;
                            if !trusted(ip) {
                                return Some(client);
                            }
                        }
                        // An unparsable hop: nothing to its left can be trusted.
                        None => return Some(client),
                    }
                }
                Some(client)
            }
        }
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The right-most address of a comma-separated header value.
fn rightmost(value: &[u8]) -> Option<IpAddr> {
    // The common case, one bare IPv4 address, without UTF-8 checks or splitting.
    if let Some(v4) = dotted_quad(value) {
        return Some(IpAddr::V4(v4));
    }
    if value.len() > MAX_HEADER_LEN {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    parse_node(text.rsplit(',').next()?)
}

/// A bare dotted quad such as `203.0.113.7`, as the standard parser reads it (no leading
/// zeros, no spaces); `None` for anything else, which then takes the general path.
fn dotted_quad(b: &[u8]) -> Option<std::net::Ipv4Addr> {
    if !(7..=15).contains(&b.len()) {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut part = 0;
    let (mut value, mut digits, mut leading_zero) = (0u16, 0u8, false);
    for &c in b {
        match c {
            b'0'..=b'9' => {
                if digits == 0 {
                    leading_zero = c == b'0';
                } else if leading_zero {
                    return None;
                }
                value = value * 10 + u16::from(c - b'0');
                digits += 1;
                if value > 255 {
                    return None;
                }
            }
            b'.' if digits > 0 && part < 3 => {
                octets[part] = value as u8;
                part += 1;
                (value, digits) = (0, 0);
            }
            _ => return None,
        }
    }
    if part != 3 || digits == 0 {
        return None;
    }
    octets[3] = value as u8;
    Some(octets.into())
}

/// Parses `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`, optionally quoted (one
/// pair of quotes around the whole node). Anything else, such as an unclosed bracket, text
/// after the bracket, an empty port or an unbalanced quote, is not an address.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = match s.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => s,
    };
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let is_port = |p: &str| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok
            .then(|| host.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
            .flatten();
    }
    let (host, port) = s.rsplit_once(':')?;
    if is_port(port) {
        return host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4);
    }
    None
}

/// Every hop of `Forwarded` (its `for=` parameters) or, when absent, `X-Forwarded-For`, in
/// order; `None` for a hop that is not an address (`unknown`, an obfuscated name, garbage).
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    let forwarded: Vec<_> = headers
        .get_all(actix_web::http::header::FORWARDED)
        .collect();
    if !forwarded.is_empty() {
        for value in forwarded {
            let Some(text) = std::str::from_utf8(value.as_bytes())
                .ok()
                .filter(|t| t.len() <= MAX_HEADER_LEN)
            else {
                hops.push(None);
                continue;
            };
            for element in text.split(',') {
                let for_value = element.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then_some(v)
                });
                hops.push(for_value.and_then(parse_node));
            }
        }
        return hops;
    }
    for value in headers.get_all("x-forwarded-for") {
        match std::str::from_utf8(value.as_bytes())
            .ok()
            .filter(|t| t.len() <= MAX_HEADER_LEN)
        {
            Some(text) => hops.extend(text.split(',').map(parse_node)),
            None => hops.push(None),
        }
    }
    hops
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_dotted_quad_fast_path_agrees_with_the_standard_parser() {
        let cases = [
            "1.2.3.4",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1..3.4",
            ".1.2.3",
            "1.2.3.",
            "10.0.0.10",
            "1.2.3.4 ",
            "1.2.3.04",
            "100.200.300.1",
            "1.2.3.a",
            "0.00.0.0",
        ];
        for c in cases {
            assert_eq!(
                dotted_quad(c.as_bytes()),
                c.parse::<std::net::Ipv4Addr>().ok(),
                "{c}"
            );
        }
        for n in [0u32, 1, 255, 256, 65_535, 16_777_216, u32::MAX, 0x0A00_000A] {
            let text = std::net::Ipv4Addr::from(n).to_string();
            assert_eq!(dotted_quad(text.as_bytes()), Some(n.into()), "{text}");
        }
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        let a = ClientKey::from_ip(ip("2001:db8:1:2:aaaa::1"), 64);
        let b = ClientKey::from_ip(ip("2001:db8:1:2:bbbb::9"), 64);
        let c = ClientKey::from_ip(ip("2001:db8:1:3::1"), 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            ClientKey::from_ip(ip("2001:db8::1"), 128).to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            ClientKey::from_ip(ip("::ffff:192.0.2.1"), 64),
            ClientKey::from_ip(ip("192.0.2.1"), 64)
        );
    }

    #[test]
    fn header_takes_the_rightmost_value_and_falls_back_to_the_peer() {
        let src = IpSource::Header(HeaderName::from_static("x-my-ip"));
        let peer = Some(ip("10.0.0.1"));
        let h = headers(&[("x-my-ip", b"1.1.1.1, 2.2.2.2")]);
        assert_eq!(src.client_ip(peer, &h), Some(ip("2.2.2.2")));
        for bad in [
            &b"not an ip"[..],
            b"",
            b"\xff\xfe",
            b"1.1.1.1, garbage",
            b"1.2.3.4:",
            b"1.2.3.4:123456",
            b"[2001:db8::1",
            b"[::1]garbage",
            b"[2001:db8::1]:",
            b"[1.2.3.4]",
            b"\"1.2.3.4",
            b"\"",
        ] {
            let h = headers(&[("x-my-ip", bad)]);
            assert_eq!(src.client_ip(peer, &h), peer, "{bad:?}");
        }
        let huge = format!("{}1.1.1.1", " ".repeat(9000));
        let h = headers(&[("x-my-ip", huge.as_bytes())]);
        assert_eq!(src.client_ip(peer, &h), peer);
        assert_eq!(src.client_ip(peer, &HeaderMap::new()), peer);
        let h = headers(&[("x-my-ip", b"\"1.2.3.4\"")]);
        assert_eq!(src.client_ip(peer, &h), Some(ip("1.2.3.4")));
        let h = headers(&[("x-my-ip", b"[2001:db8::7]:443")]);
        assert_eq!(src.client_ip(peer, &h), Some(ip("2001:db8::7")));
        let h = headers(&[("x-my-ip", b"1.1.1.1"), ("x-my-ip", b"3.3.3.3:80")]);
        assert_eq!(src.client_ip(peer, &h), Some(ip("3.3.3.3")));
    }

    #[test]
    fn trusted_proxies_walk_from_the_right() {
        let nets: Arc<[IpNet]> = vec!["10.0.0.0/8".parse().unwrap()].into();
        let src = IpSource::TrustedProxies(nets);
        let h = headers(&[("x-forwarded-for", b"6.6.6.6, 5.5.5.5, 10.1.1.1")]);
        // From a trusted proxy: the first untrusted hop from the right.
        assert_eq!(src.client_ip(Some(ip("10.0.0.2")), &h), Some(ip("5.5.5.5")));
        // From anyone else, the header is ignored.
        assert_eq!(src.client_ip(Some(ip("7.7.7.7")), &h), Some(ip("7.7.7.7")));
        let h = headers(&[(
            "forwarded",
            b"for=6.6.6.6, for=\"[2001:db8::1]:80\";proto=https",
        )]);
        assert_eq!(
            src.client_ip(Some(ip("10.0.0.2")), &h),
            Some(ip("2001:db8::1"))
        );
        let h = headers(&[("x-forwarded-for", b"6.6.6.6, garbage, 10.1.1.1")]);
        assert_eq!(
            src.client_ip(Some(ip("10.0.0.2")), &h),
            Some(ip("10.1.1.1"))
        );
        assert_eq!(
            src.client_ip(Some(ip("10.0.0.2")), &HeaderMap::new()),
            Some(ip("10.0.0.2"))
        );
    }
}

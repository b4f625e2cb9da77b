//! Who is the client: the key that limits and bans are counted under.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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

    /// The network and prefix length of an IPv6 key.
    pub(crate) fn v6_network(&self) -> Option<(Ipv6Addr, u8)> {
        match &self.0 {
            Repr::V6(o, prefix) => Some((Ipv6Addr::from(*o), *prefix)),
            _ => None,
        }
    }

    /// The length in bytes of a custom key (0 for an address).
    pub(crate) fn custom_len(&self) -> usize {
        match &self.0 {
            Repr::Custom(k) => k.len(),
            _ => 0,
        }
    }

    /// The key for log lines: control characters of a custom key (which a client may choose,
    /// from a path parameter or a header) are escaped, so a key cannot forge log lines.
    pub(crate) fn logged(&self) -> Logged<'_> {
        Logged(self)
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

/// A [`ClientKey`] shown in a log line (see [`ClientKey::logged`]).
pub(crate) struct Logged<'a>(&'a ClientKey);

impl fmt::Display for Logged<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 .0 {
            Repr::Custom(k) => write_escaped(f, k),
            _ => fmt::Display::fmt(self.0, f),
        }
    }
}

/// Writes `text` with its control characters (and backslashes) escaped as Rust does
/// (`\n`, `\u{1b}`), leaving every other character as it is.
pub(crate) fn write_escaped(f: &mut impl fmt::Write, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() || c == '\\' {
            for e in c.escape_default() {
                f.write_char(e)?;
            }
        } else {
            f.write_char(c)?;
        }
    }
    Ok(())
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey({})", self.logged())
    }
}

/// A client to act on: an IP address (keyed as configured, so an IPv6 address stands for its
/// /64 by default) or a [`ClientKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Client {
    /// An address.
    Ip(IpAddr),
    /// A key as floodgate counts it.
    Key(ClientKey),
}

impl From<IpAddr> for Client {
    fn from(ip: IpAddr) -> Self {
        Client::Ip(ip)
    }
}

impl From<Ipv4Addr> for Client {
    fn from(ip: Ipv4Addr) -> Self {
        Client::Ip(ip.into())
    }
}

impl From<Ipv6Addr> for Client {
    fn from(ip: Ipv6Addr) -> Self {
        Client::Ip(ip.into())
    }
}

impl From<ClientKey> for Client {
    fn from(key: ClientKey) -> Self {
        Client::Key(key)
    }
}

impl From<&ClientKey> for Client {
    fn from(key: &ClientKey) -> Self {
        Client::Key(key.clone())
    }
}

/// Which forwarding header the trusted proxies write (see
/// [`Floodgate::proxy_header`](crate::Floodgate::proxy_header)).
///
/// Only the named header is ever read: a client that sends the other one itself (proxies
/// usually pass unknown headers through untouched) changes nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx's `$proxy_add_x_forwarded_for`,
    /// HAProxy's `option forwardfor`, most cloud load balancers). The default.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for=proxy1`: its `for=` parameters.
    Forwarded,
}

/// Where the client's address comes from.
#[derive(Clone, Debug, Default)]
pub(crate) enum IpSource {
    /// The TCP peer.
    #[default]
    Peer,
    /// A header set by the app's own proxy; the right-most value of a list.
    Header(HeaderName),
    /// The operator's forwarding header, read only when the peer is a trusted proxy, and
    /// walked from the right past every trusted proxy.
    TrustedProxies(Arc<[IpNet]>, ProxyHeader),
}

/// Header values longer than this are not parsed (a forged header of megabytes costs nothing).
const MAX_HEADER_LEN: usize = 8 * 1024;

/// At most this many hops are walked (a forged header of thousands of hops costs nothing).
const MAX_HOPS: usize = 64;

impl IpSource {
    /// The client's address. `None` when it cannot be known: no peer address (a Unix
    /// socket), or a trusted proxy forwarded a hop that is not an address (`unknown`, an
    /// obfuscated identifier, junk). Such requests share one client key that is never a
    /// proxy's address and is on no allow list.
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
            IpSource::TrustedProxies(proxies, header) => {
                let peer = peer?;
                let trusted = |ip: &IpAddr| proxies.iter().any(|net| net.contains(&unmap(*ip)));
                if !trusted(&peer) {
                    return Some(peer);
                }
                let hops = forwarded_hops(headers, *header);
                if hops.is_empty() {
                    // The proxy's own request (a health check): it is the client.
                    return Some(peer);
                }
                for (i, hop) in hops.iter().rev().enumerate() {
                    match hop {
                        // Past the walk's bound, the client is not known.
                        _ if i >= MAX_HOPS => return None,
                        Some(ip) if trusted(ip) => continue,
                        Some(ip) => return Some(*ip),
                        // An unparsable hop: its client is not known, and nothing to its
                        // left can be believed. Never fall back to the proxy.
                        None => return None,
                    }
                }
                // Every hop is a trusted proxy: the left-most one sent the request itself.
                hops.first().copied().flatten()
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

/// Every hop of the operator's forwarding header, left to right over all its lines; `None`
/// for a hop that is not an address (`unknown`, an obfuscated identifier, junk, an element of
/// `Forwarded` without `for=`, a line too long or not UTF-8).
fn forwarded_hops(headers: &HeaderMap, header: ProxyHeader) -> Vec<Option<IpAddr>> {
    let name = match header {
        ProxyHeader::XForwardedFor => actix_web::http::header::X_FORWARDED_FOR,
        ProxyHeader::Forwarded => actix_web::http::header::FORWARDED,
    };
    let mut hops = Vec::new();
    for value in headers.get_all(name) {
        let Some(text) = std::str::from_utf8(value.as_bytes())
            .ok()
            .filter(|t| t.len() <= MAX_HEADER_LEN)
        else {
            hops.push(None);
            continue;
        };
        match header {
            ProxyHeader::XForwardedFor => hops.extend(text.split(',').map(parse_node)),
            ProxyHeader::Forwarded => {
                for element in split_unquoted(text, ',') {
                    let mut for_value = None;
                    let mut pairs = 0;
                    for pair in split_unquoted(element, ';') {
                        pairs += 1;
                        let Some((k, v)) = pair.split_once('=') else {
                            continue;
                        };
                        if k.trim().eq_ignore_ascii_case("for") {
                            // Two `for=` in one element: ambiguous, so not an address.
                            for_value = match for_value {
                                None => Some(Some(v)),
                                Some(_) => Some(None),
                            };
                        }
                    }
                    if pairs == 0 && element.trim().is_empty() {
                        hops.push(None);
                        continue;
                    }
                    hops.push(for_value.flatten().and_then(parse_node));
                }
            }
        }
    }
    hops
}

/// Splits `text` at `sep` outside double quotes (RFC 7230 quoted strings, with backslash
/// escapes), so that `for="[2001:db8::1]:80, x"` stays one element. A quote left open splits
/// at every `sep`: a client's unbalanced quote must not swallow the hop a proxy appends
/// after it.
fn split_unquoted(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    if quoted {
        return text.split(sep).collect();
    }
    parts.push(&text[start..]);
    parts
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

    fn nets(list: &[&str]) -> Arc<[IpNet]> {
        list.iter()
            .map(|n| n.parse().unwrap())
            .collect::<Vec<_>>()
            .into()
    }

    #[test]
    fn trusted_proxies_walk_from_the_right() {
        let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", b"6.6.6.6, 5.5.5.5, 10.1.1.1")]);
        // From a trusted proxy: the first untrusted hop from the right.
        assert_eq!(src.client_ip(Some(ip("10.0.0.2")), &h), Some(ip("5.5.5.5")));
        // From anyone else, the header is ignored.
        assert_eq!(src.client_ip(Some(ip("7.7.7.7")), &h), Some(ip("7.7.7.7")));
        // The proxy's own request, with no header: the proxy is the client.
        assert_eq!(
            src.client_ip(Some(ip("10.0.0.2")), &HeaderMap::new()),
            Some(ip("10.0.0.2"))
        );
        // Every hop trusted: the left-most one sent the request.
        let h = headers(&[("x-forwarded-for", b"10.9.9.9, 10.1.1.1")]);
        assert_eq!(
            src.client_ip(Some(ip("10.0.0.2")), &h),
            Some(ip("10.9.9.9"))
        );
        // Several header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", b"6.6.6.6"),
            ("x-forwarded-for", b"5.5.5.5, 10.1.1.1"),
        ]);
        assert_eq!(src.client_ip(Some(ip("10.0.0.2")), &h), Some(ip("5.5.5.5")));
    }

    #[test]
    fn an_unparsable_hop_never_makes_a_proxy_the_client() {
        let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::XForwardedFor);
        let proxy = Some(ip("10.0.0.2"));
        for bad in [
            &b"6.6.6.6, garbage, 10.1.1.1"[..],
            b"unknown",
            b"6.6.6.6, ",
            b"_hidden",
            b"",
            b"\xff\xfe",
        ] {
            let h = headers(&[("x-forwarded-for", bad)]);
            assert_eq!(src.client_ip(proxy, &h), None, "{bad:?}");
        }
        let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::Forwarded);
        for bad in [
            &b"for=unknown"[..],
            b"for=_hidden",
            b"proto=https",
            b"for=1.2.3.4;for=5.6.7.8",
            b"for=\"1.2.3.4",
            b",",
        ] {
            let h = headers(&[("forwarded", bad)]);
            assert_eq!(src.client_ip(proxy, &h), None, "{bad:?}");
        }
        // A hop list longer than the walk's bound, all trusted: not known.
        let long = vec!["10.1.1.1"; MAX_HOPS + 5].join(", ");
        let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", long.as_bytes())]);
        assert_eq!(src.client_ip(proxy, &h), None);
    }

    #[test]
    fn only_the_named_forwarding_header_is_read() {
        let xff = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::XForwardedFor);
        let fwd = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::Forwarded);
        let proxy = Some(ip("10.0.0.2"));
        // The client sent its own Forwarded; the proxy wrote X-Forwarded-For.
        let h = headers(&[
            ("forwarded", b"for=1.1.1.1"),
            ("x-forwarded-for", b"5.5.5.5"),
        ]);
        assert_eq!(xff.client_ip(proxy, &h), Some(ip("5.5.5.5")));
        assert_eq!(fwd.client_ip(proxy, &h), Some(ip("1.1.1.1")));
        // The other header alone is never a fallback.
        let h = headers(&[("forwarded", b"for=1.1.1.1")]);
        assert_eq!(xff.client_ip(proxy, &h), proxy);
        let h = headers(&[("x-forwarded-for", b"5.5.5.5")]);
        assert_eq!(fwd.client_ip(proxy, &h), proxy);
        // Forwarded with quotes, ports, brackets, case and commas inside quotes.
        let h = headers(&[(
            "forwarded",
            b"for=6.6.6.6, For=\"[2001:db8::1]:80\";proto=https, for=10.1.1.1",
        )]);
        assert_eq!(fwd.client_ip(proxy, &h), Some(ip("2001:db8::1")));
        let h = headers(&[("forwarded", b"for=\"1.2.3.4, 10.1.1.1\"")]);
        assert_eq!(fwd.client_ip(proxy, &h), None);
        let h = headers(&[("forwarded", b"proto=https;for=\"4.4.4.4:8080\";by=10.0.0.2")]);
        assert_eq!(fwd.client_ip(proxy, &h), Some(ip("4.4.4.4")));
        // A client's unbalanced quote does not swallow the hop the proxy appended to its line.
        for forged in [
            &b"for=\"1.2.3.4, for=5.6.7.8"[..],
            b"for=\"a\\\", for=\"5.6.7.8:80\"",
        ] {
            let h = headers(&[("forwarded", forged)]);
            assert_eq!(fwd.client_ip(proxy, &h), Some(ip("5.6.7.8")), "{forged:?}");
        }
    }

    mod props {
        //! Property tests: the forwarding-header walk against a reference model, over hops
        //! written every way a proxy (or a lying client) writes them.
        use super::*;
        use proptest::prelude::*;

        /// One hop: an address written in some style, or something that is not an address.
        #[derive(Clone, Debug)]
        enum Hop {
            Addr(IpAddr, u8),
            Junk(&'static str),
        }

        fn addr() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                // Trusted proxies (10.0.0.0/8) and clients, IPv4 and IPv6.
                (any::<u8>(), any::<u8>()).prop_map(|(a, b)| IpAddr::from([10, a, b, 1])),
                any::<[u8; 4]>().prop_map(IpAddr::from),
                any::<[u16; 8]>().prop_map(|s| IpAddr::from(Ipv6Addr::from(s))),
            ]
        }

        fn hop() -> impl Strategy<Value = Hop> {
            prop_oneof![
                4 => (addr(), 0u8..4).prop_map(|(a, style)| Hop::Addr(a, style)),
                1 => prop::sample::select(vec![
                    "unknown", "_hidden", "_a1-b2", "", "garbage", "1.2.3", "[::1", "1.2.3.4:",
                    "::1]:80", "\"1.2.3.4",
                ])
                .prop_map(Hop::Junk),
            ]
        }

        /// The hop as X-Forwarded-For writes it.
        fn xff_text(h: &Hop) -> String {
            match h {
                Hop::Addr(IpAddr::V4(a), 1) => format!("{a}:8080"),
                Hop::Addr(IpAddr::V6(a), 1) => format!("[{a}]:443"),
                Hop::Addr(IpAddr::V6(a), 2) => format!("[{a}]"),
                Hop::Addr(a, 3) => format!(" \"{a}\" "),
                Hop::Addr(a, _) => format!(" {a}"),
                Hop::Junk(j) => (*j).to_owned(),
            }
        }

        /// The hop as a `Forwarded` element.
        fn forwarded_text(h: &Hop) -> String {
            match h {
                Hop::Addr(IpAddr::V4(a), 1) => format!("for=\"{a}:8080\";proto=https"),
                Hop::Addr(IpAddr::V6(a), 1) => format!("For=\"[{a}]:443\""),
                Hop::Addr(IpAddr::V6(a), _) => format!("proto=http;for=\"[{a}]\";by=_p"),
                Hop::Addr(a, _) => format!("for={a}"),
                Hop::Junk("") => "proto=https".to_owned(),
                Hop::Junk(j) => format!("for={j}"),
            }
        }

        /// Whether a junk hop could be read as an address in this header (never: the junk
        /// list holds none).
        fn trusted(ip: &IpAddr) -> bool {
            matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10)
        }

        /// The reference: from the right, skip trusted proxies; the first other address is
        /// the client; a hop that is not an address, or a walk past 64 hops, is unknown; all
        /// trusted: the left-most; none: the peer.
        fn model(hops: &[Hop], peer: IpAddr) -> Option<IpAddr> {
            if hops.is_empty() {
                return Some(peer);
            }
            for (i, h) in hops.iter().rev().enumerate() {
                if i >= MAX_HOPS {
                    return None;
                }
                match h {
                    Hop::Addr(a, _) if trusted(a) => continue,
                    Hop::Addr(a, _) => return Some(*a),
                    Hop::Junk(_) => return None,
                }
            }
            match &hops[0] {
                Hop::Addr(a, _) => Some(*a),
                Hop::Junk(_) => None,
            }
        }

        /// `parts` joined by `sep`, cut into header lines at the `cuts` positions.
        fn lines(parts: &[String], cuts: &[usize]) -> Vec<String> {
            let mut out = Vec::new();
            let mut current: Vec<String> = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                if cuts.contains(&i) && !current.is_empty() {
                    out.push(current.join(","));
                    current.clear();
                }
                current.push(p.clone());
            }
            if !current.is_empty() {
                out.push(current.join(","));
            }
            out
        }

        fn map(name: &str, values: &[String], other: (&str, &str)) -> HeaderMap {
            let mut m = HeaderMap::new();
            for v in values {
                m.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    actix_web::http::header::HeaderValue::from_str(v).unwrap(),
                );
            }
            // The header the proxy does not write, as a client would forge it.
            m.append(
                HeaderName::from_bytes(other.0.as_bytes()).unwrap(),
                actix_web::http::header::HeaderValue::from_str(other.1).unwrap(),
            );
            m
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn the_xff_walk_matches_the_model(
                hops in prop::collection::vec(hop(), 0..8),
                cuts in prop::collection::vec(0usize..8, 0..3),
                forged in addr(),
            ) {
                let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::XForwardedFor);
                let peer = IpAddr::from([10, 0, 0, 2]);
                let parts: Vec<String> = hops.iter().map(xff_text).collect();
                let forged = format!("for={forged}");
                let h = map("x-forwarded-for", &lines(&parts, &cuts), ("forwarded", &forged));
                prop_assert_eq!(src.client_ip(Some(peer), &h), model(&hops, peer));
            }

            #[test]
            fn the_forwarded_walk_matches_the_model(
                hops in prop::collection::vec(hop(), 0..8),
                cuts in prop::collection::vec(0usize..8, 0..3),
                forged in addr(),
            ) {
                let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), ProxyHeader::Forwarded);
                let peer = IpAddr::from([10, 0, 0, 2]);
                let parts: Vec<String> = hops.iter().map(forwarded_text).collect();
                let forged = forged.to_string();
                let h = map("forwarded", &lines(&parts, &cuts), ("x-forwarded-for", &forged));
                prop_assert_eq!(src.client_ip(Some(peer), &h), model(&hops, peer));
            }

            #[test]
            fn an_untrusted_peer_is_always_the_client(
                hops in prop::collection::vec(hop(), 0..8),
                peer in any::<[u8; 4]>().prop_filter("not a proxy", |p| p[0] != 10),
            ) {
                let peer = IpAddr::from(peer);
                let parts: Vec<String> = hops.iter().map(xff_text).collect();
                let h = map("x-forwarded-for", &[parts.join(",")], ("forwarded", "for=1.1.1.1"));
                for header in [ProxyHeader::XForwardedFor, ProxyHeader::Forwarded] {
                    let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), header);
                    prop_assert_eq!(src.client_ip(Some(peer), &h), Some(peer));
                }
            }

            #[test]
            fn any_bytes_give_an_answer_and_never_a_proxy_from_junk(
                values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..4),
            ) {
                let peer = IpAddr::from([10, 0, 0, 2]);
                for (name, header) in [
                    ("x-forwarded-for", ProxyHeader::XForwardedFor),
                    ("forwarded", ProxyHeader::Forwarded),
                ] {
                    let mut m = HeaderMap::new();
                    for v in &values {
                        if let Ok(v) = actix_web::http::header::HeaderValue::from_bytes(v) {
                            m.append(HeaderName::from_static(name), v);
                        }
                    }
                    let src = IpSource::TrustedProxies(nets(&["10.0.0.0/8"]), header);
                    let found = src.client_ip(Some(peer), &m);
                    // Whatever the bytes, the result is the peer only when no hop was sent.
                    if found == Some(peer) {
                        prop_assert!(m.get(name).is_none());
                    }
                    let ip_header = IpSource::Header(HeaderName::from_static(name));
                    prop_assert!(ip_header.client_ip(Some(peer), &m).is_some());
                }
            }
        }
    }
}

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
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        // One to three digits, no leading zero, at most 255.
        let start = i;
        let mut value = 0u32;
        while let Some(d) = b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|&d| d <= 9) {
            if i - start == 3 {
                return None;
            }
            value = value * 10 + u32::from(d);
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || value > 255 || (digits > 1 && b[start] == b'0') {
            return None;
        }
        *octet = value as u8;
    }
    (i == b.len()).then(|| octets.into())
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
mod tests;

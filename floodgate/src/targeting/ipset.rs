//! Prefix lookup for IP lists and geo feeds: sorted, non-overlapping address ranges searched
//! by bisection.
//!
//! Every address is mapped into the IPv6 space (IPv4 as `::ffff:a.b.c.d`), so one sorted
//! `Vec` holds both families and a lookup is one binary search: 100,000 ranges take 17
//! comparisons. CIDR networks either nest or are disjoint, so building resolves overlaps in
//! one sweep, the most specific network winning (longest-prefix match).

use std::net::IpAddr;

use ipnet::IpNet;

/// An address as a point in the IPv6 space.
pub(crate) fn point(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => 0xffff_0000_0000 | u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The first and last points of a network.
pub(crate) fn span(net: &IpNet) -> (u128, u128) {
    let (base, len) = match net {
        IpNet::V4(n) => (point(IpAddr::V4(n.network())), 96 + u32::from(n.prefix_len())),
        IpNet::V6(n) => (point(IpAddr::V6(n.network())), u32::from(n.prefix_len())),
    };
    let host = u128::MAX.checked_shr(len).unwrap_or(0);
    (base & !host, base | host)
}

/// Ranges `start..=end`, sorted and disjoint, each with a value.
#[derive(Clone, Debug, Default)]
pub(crate) struct RangeMap<V> {
    starts: Vec<u128>,
    ends: Vec<u128>,
    values: Vec<V>,
}

impl<V: Clone + PartialEq> RangeMap<V> {
    /// Builds the map; where networks overlap, the more specific one wins, and among equal
    /// networks the last one given.
    pub(crate) fn build(entries: impl IntoIterator<Item = (IpNet, V)>) -> Self {
        let mut items: Vec<(u128, u128, usize, V)> = entries
            .into_iter()
            .enumerate()
            .map(|(i, (net, v))| {
                let (s, e) = span(&net);
                (s, e, i, v)
            })
            .collect();
        // Broad before narrow at the same start, and in input order among equals, so the
        // later of two equal networks nests inside the earlier one and wins.
        items.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let mut map = RangeMap {
            starts: Vec::new(),
            ends: Vec::new(),
            values: Vec::new(),
        };
        // Open networks, outermost first; `cursor` is the first point not yet emitted
        // (`None` once the whole space is emitted).
        let mut stack: Vec<(u128, V)> = Vec::new();
        let mut cursor: Option<u128> = Some(0);
        for (start, end, _, value) in items {
            while let Some((top_end, _)) = stack.last() {
                if *top_end >= start {
                    break;
                }
                let (top_end, top) = stack.pop().expect("checked non-empty");
                map.emit(&mut cursor, top_end, top);
            }
            if let (Some((_, top)), Some(c)) = (stack.last(), cursor) {
                if c < start {
                    map.push(c, start - 1, top.clone());
                }
            }
            // Everything before `start` is emitted now.
            cursor = Some(start);
            stack.push((end, value));
        }
        while let Some((end, value)) = stack.pop() {
            map.emit(&mut cursor, end, value);
        }
        map.starts.shrink_to_fit();
        map.ends.shrink_to_fit();
        map.values.shrink_to_fit();
        map
    }

    /// Emits `cursor..=end` with `value` and moves the cursor past `end`.
    fn emit(&mut self, cursor: &mut Option<u128>, end: u128, value: V) {
        if let Some(c) = *cursor {
            if c <= end {
                self.push(c, end, value);
                *cursor = end.checked_add(1);
            }
        }
    }

    fn push(&mut self, start: u128, end: u128, value: V) {
        // Merge with the previous range when adjacent and equal: keeps the map small.
        if let (Some(last_end), Some(last_value)) = (self.ends.last_mut(), self.values.last()) {
            if last_end.checked_add(1) == Some(start) && *last_value == value {
                *last_end = end;
                return;
            }
        }
        self.starts.push(start);
        self.ends.push(end);
        self.values.push(value);
    }
}

impl<V> RangeMap<V> {
    /// The value of the range holding `ip`.
    #[inline]
    pub(crate) fn get(&self, ip: IpAddr) -> Option<&V> {
        let p = point(ip);
        let i = self.starts.partition_point(|&s| s <= p);
        if i == 0 || self.ends[i - 1] < p {
            return None;
        }
        self.values.get(i - 1)
    }

    /// How many disjoint ranges the map holds (after merging).
    pub(crate) fn ranges(&self) -> usize {
        self.starts.len()
    }
}

/// A set of networks.
pub(crate) type IpSet = RangeMap<()>;

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn set_matches_v4_v6_and_mapped_addresses() {
        let set = IpSet::build(
            ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "10.1.0.0/16"]
                .into_iter()
                .map(|n| (net(n), ())),
        );
        assert_eq!(set.ranges(), 3);
        for yes in ["10.0.0.0", "10.255.255.255", "192.0.2.7", "2001:db8:ffff::1", "::ffff:10.2.3.4"] {
            assert!(set.get(ip(yes)).is_some(), "{yes}");
        }
        for no in ["9.255.255.255", "11.0.0.0", "192.0.2.6", "192.0.2.8", "2001:db9::", "::"] {
            assert!(set.get(ip(no)).is_none(), "{no}");
        }
    }

    #[test]
    fn most_specific_network_wins() {
        let map = RangeMap::build([
            (net("0.0.0.0/0"), 'w'),
            (net("10.0.0.0/8"), 'a'),
            (net("10.1.0.0/16"), 'b'),
            (net("10.1.2.0/24"), 'c'),
            (net("10.200.0.0/16"), 'd'),
            (net("10.0.0.0/8"), 'e'),
        ]);
        let at = |s: &str| map.get(ip(s)).copied();
        assert_eq!(at("9.0.0.1"), Some('w'));
        assert_eq!(at("10.0.0.1"), Some('e'));
        assert_eq!(at("10.1.1.1"), Some('b'));
        assert_eq!(at("10.1.2.3"), Some('c'));
        assert_eq!(at("10.1.3.0"), Some('b'));
        assert_eq!(at("10.2.0.0"), Some('e'));
        assert_eq!(at("10.200.9.9"), Some('d'));
        assert_eq!(at("10.201.0.0"), Some('e'));
        assert_eq!(at("11.0.0.0"), Some('w'));
        assert_eq!(at("255.255.255.255"), Some('w'));
        assert_eq!(at("2001:db8::1"), None);
    }

    #[test]
    fn whole_space_and_edges() {
        let map = RangeMap::build([(net("::/0"), 1), (net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), 2)]);
        assert_eq!(map.get(ip("::")), Some(&1));
        assert_eq!(map.get(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")), Some(&1));
        assert_eq!(map.get(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")), Some(&2));
        let empty = IpSet::build([]);
        assert!(empty.get(ip("1.2.3.4")).is_none());
    }

    #[test]
    fn agrees_with_a_linear_scan() {
        let mut rng = fastrand::Rng::with_seed(7);
        let nets: Vec<(IpNet, u8)> = (0..400)
            .map(|i| {
                let len = rng.u8(4..=32);
                let addr = std::net::Ipv4Addr::from(rng.u32(..));
                (IpNet::V4(ipnet::Ipv4Net::new(addr, len).unwrap().trunc()), (i % 5) as u8)
            })
            .collect();
        let map = RangeMap::build(nets.clone());
        for _ in 0..20_000 {
            let probe = IpAddr::V4(rng.u32(..).into());
            // Longest prefix, the last given among equals.
            let expected = nets
                .iter()
                .enumerate()
                .filter(|(_, (n, _))| n.contains(&probe))
                .max_by_key(|(i, (n, _))| (n.prefix_len(), *i))
                .map(|(_, (_, v))| *v);
            assert_eq!(map.get(probe).copied(), expected, "{probe}");
        }
    }
}

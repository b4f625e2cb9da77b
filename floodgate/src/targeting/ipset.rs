//! Prefix lookup for IP lists and geo feeds: sorted, non-overlapping address ranges,
//! searched by bisection within a bucket.
//!
//! IPv4 and IPv6 ranges are kept apart (IPv4 as `u32`, so 100,000 IPv4 ranges take 800 KB
//! and stay in cache), and IPv4-mapped IPv6 addresses are looked up as IPv4. A table indexed
//! by the address's first 16 bits narrows each search to the ranges starting in that
//! bucket, so a lookup touches a handful of cache lines whatever the list's size. CIDR
//! networks either nest or are disjoint, so building resolves overlaps in one sweep, the
//! most specific network winning (longest-prefix match).

use std::net::IpAddr;

use ipnet::IpNet;

/// The mapped IPv4 space, `::ffff:0.0.0.0/96`.
const MAPPED: (u128, u128) = (0xffff_0000_0000, 0xffff_ffff_ffff);

/// A point in its family's space: `(is_v6, value)`; IPv4-mapped IPv6 addresses are IPv4.
#[inline]
fn point(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (false, u128::from(u32::from(v4))),
            None => (true, u128::from(v6)),
        },
    }
}

/// The first and last points of a network in its family's space; an IPv6 network that
/// covers mapped IPv4 addresses also gives its IPv4 part.
fn spans(net: &IpNet) -> Vec<(bool, u128, u128)> {
    match net {
        IpNet::V4(n) => {
            let host = u32::MAX.checked_shr(u32::from(n.prefix_len())).unwrap_or(0);
            let base = u32::from(n.network());
            vec![(false, u128::from(base & !host), u128::from(base | host))]
        }
        IpNet::V6(n) => {
            let host = u128::MAX
                .checked_shr(u32::from(n.prefix_len()))
                .unwrap_or(0);
            let base = u128::from(n.network());
            let (s, e) = (base & !host, base | host);
            let mut out = vec![(true, s, e)];
            // The mapped part, as IPv4: nets nest, so it is all of it or a sub-network.
            let (ms, me) = (s.max(MAPPED.0), e.min(MAPPED.1));
            if ms <= me {
                out.push((false, ms - MAPPED.0, me - MAPPED.0));
            }
            out
        }
    }
}

/// Ranges of one family, sorted and disjoint, each with a value.
#[derive(Clone, Debug)]
struct Family<P, V> {
    starts: Vec<P>,
    ends: Vec<P>,
    values: Vec<V>,
    /// For large families: `index[b]` is the first range starting in bucket `b` or later.
    index: Option<Box<[u32]>>,
    shift: u32,
}

/// Below this many ranges a plain bisection is as fast as the bucket table.
const INDEX_FROM: usize = 512;

impl<P: Copy + Ord + TryFrom<u128> + Into<u128>, V: Clone + PartialEq> Family<P, V> {
    /// Sweeps `(start, end, order, value)` networks into disjoint ranges.
    fn build(mut items: Vec<(u128, u128, usize, V)>, shift: u32) -> Self {
        // Broad before narrow at the same start, and in input order among equals, so the
        // later of two equal networks nests inside the earlier one and wins.
        items.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let mut out: Vec<(u128, u128, V)> = Vec::new();
        // Open networks, outermost first; `cursor` is the first point not yet emitted
        // (`None` once the whole space is).
        let mut stack: Vec<(u128, V)> = Vec::new();
        let mut cursor: Option<u128> = Some(0);
        for (start, end, _, value) in items {
            while let Some((top_end, _)) = stack.last() {
                if *top_end >= start {
                    break;
                }
                let (top_end, top) = stack.pop().expect("checked non-empty");
                emit(&mut out, &mut cursor, top_end, top);
            }
            if let (Some((_, top)), Some(c)) = (stack.last(), cursor) {
                if c < start {
                    push(&mut out, c, start - 1, top.clone());
                }
            }
            // Everything before `start` is emitted now.
            cursor = Some(start);
            stack.push((end, value));
        }
        while let Some((end, value)) = stack.pop() {
            emit(&mut out, &mut cursor, end, value);
        }
        let narrow = |x: u128| P::try_from(x).ok().expect("points fit their family");
        let starts: Vec<P> = out.iter().map(|r| narrow(r.0)).collect();
        let ends: Vec<P> = out.iter().map(|r| narrow(r.1)).collect();
        let values: Vec<V> = out.into_iter().map(|r| r.2).collect();
        let index = (starts.len() >= INDEX_FROM).then(|| {
            let mut index = Vec::with_capacity(65_537);
            let mut i = 0;
            for b in 0..=65_536u128 {
                while i < starts.len() && (starts[i].into() >> shift) < b {
                    i += 1;
                }
                index.push(u32::try_from(i).unwrap_or(u32::MAX));
            }
            index.into_boxed_slice()
        });
        Family {
            starts,
            ends,
            values,
            index,
            shift,
        }
    }

    #[inline]
    fn get(&self, p: u128) -> Option<&V> {
        let Ok(key) = P::try_from(p) else { return None };
        let (lo, hi) = match &self.index {
            Some(index) => {
                let b = (p >> self.shift) as usize;
                (index[b] as usize, index[b + 1] as usize)
            }
            None => (0, self.starts.len()),
        };
        let i = lo + self.starts[lo..hi].partition_point(|&s| s <= key);
        if i == 0 || self.ends[i - 1] < key {
            return None;
        }
        self.values.get(i - 1)
    }
}

/// Appends a range, merged with the previous one when adjacent and equal (keeps maps small).
fn push<V: PartialEq>(out: &mut Vec<(u128, u128, V)>, start: u128, end: u128, value: V) {
    if let Some(last) = out.last_mut() {
        if last.1.checked_add(1) == Some(start) && last.2 == value {
            last.1 = end;
            return;
        }
    }
    out.push((start, end, value));
}

/// Emits `cursor..=end` with `value` and moves the cursor past `end`.
fn emit<V: PartialEq>(
    out: &mut Vec<(u128, u128, V)>,
    cursor: &mut Option<u128>,
    end: u128,
    value: V,
) {
    if let Some(c) = *cursor {
        if c <= end {
            push(out, c, end, value);
            *cursor = end.checked_add(1);
        }
    }
}

/// Address ranges with a value each.
#[derive(Clone, Debug)]
pub(crate) struct RangeMap<V> {
    v4: Family<u32, V>,
    v6: Family<u128, V>,
}

impl<V: Clone + PartialEq> RangeMap<V> {
    /// Builds the map; where networks overlap, the more specific one wins, and among equal
    /// networks the last one given.
    pub(crate) fn build(entries: impl IntoIterator<Item = (IpNet, V)>) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (i, (net, value)) in entries.into_iter().enumerate() {
            for (is_v6, s, e) in spans(&net) {
                let item = (s, e, i, value.clone());
                if is_v6 {
                    v6.push(item);
                } else {
                    v4.push(item);
                }
            }
        }
        RangeMap {
            v4: Family::build(v4, 16),
            v6: Family::build(v6, 112),
        }
    }
}

impl<V: Clone + PartialEq> RangeMap<V> {
    /// The value of the range holding `ip`.
    #[inline]
    pub(crate) fn get(&self, ip: IpAddr) -> Option<&V> {
        match point(ip) {
            (false, p) => self.v4.get(p),
            (true, p) => self.v6.get(p),
        }
    }

    /// How many disjoint ranges the map holds (after merging).
    pub(crate) fn ranges(&self) -> usize {
        self.v4.starts.len() + self.v6.starts.len()
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
        for yes in [
            "10.0.0.0",
            "10.255.255.255",
            "192.0.2.7",
            "2001:db8:ffff::1",
            "::ffff:10.2.3.4",
        ] {
            assert!(set.get(ip(yes)).is_some(), "{yes}");
        }
        for no in [
            "9.255.255.255",
            "11.0.0.0",
            "192.0.2.6",
            "192.0.2.8",
            "2001:db9::",
            "::",
        ] {
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
        let map = RangeMap::build([
            (net("::/0"), 1),
            (net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), 2),
        ]);
        assert_eq!(map.get(ip("::")), Some(&1));
        assert_eq!(
            map.get(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")),
            Some(&1)
        );
        assert_eq!(
            map.get(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            Some(&2)
        );
        let empty = IpSet::build([]);
        assert!(empty.get(ip("1.2.3.4")).is_none());
    }

    #[test]
    fn mapped_ipv6_entries_match_ipv4_clients() {
        let set = IpSet::build([(net("::ffff:10.0.0.0/104"), ()), (net("64:ff9b::/96"), ())]);
        assert!(set.get(ip("10.1.2.3")).is_some());
        assert!(set.get(ip("::ffff:10.1.2.3")).is_some());
        assert!(set.get(ip("11.0.0.1")).is_none());
        assert!(set.get(ip("64:ff9b::1.2.3.4")).is_some());
    }

    /// Longest prefix, the last given among equals.
    fn scan(nets: &[(IpNet, u8)], probe: IpAddr) -> Option<u8> {
        nets.iter()
            .enumerate()
            .filter(|(_, (n, _))| n.contains(&probe))
            .max_by_key(|(i, (n, _))| (n.prefix_len(), *i))
            .map(|(_, (_, v))| *v)
    }

    #[test]
    fn agrees_with_a_linear_scan() {
        let mut rng = fastrand::Rng::with_seed(7);
        // Enough ranges in each family for the bucket table to be used.
        let mut nets: Vec<(IpNet, u8)> = Vec::new();
        for i in 0..1500u32 {
            let len = rng.u8(4..=32);
            let addr = std::net::Ipv4Addr::from(rng.u32(..));
            let v4 = ipnet::Ipv4Net::new(addr, len).unwrap().trunc();
            nets.push((IpNet::V4(v4), (i % 5) as u8));
            let len = rng.u8(8..=64);
            let addr = std::net::Ipv6Addr::from(rng.u128(..) >> rng.u32(0..4));
            let v6 = ipnet::Ipv6Net::new(addr, len).unwrap().trunc();
            nets.push((IpNet::V6(v6), (i % 7) as u8));
        }
        let map = RangeMap::build(nets.clone());
        assert!(map.v4.index.is_some() && map.v6.index.is_some());
        let v4: Vec<&(IpNet, u8)> = nets
            .iter()
            .filter(|(n, _)| matches!(n, IpNet::V4(_)))
            .collect();
        let v6: Vec<&(IpNet, u8)> = nets
            .iter()
            .filter(|(n, _)| matches!(n, IpNet::V6(_)))
            .collect();
        for i in 0..4000 {
            // Half the probes inside some listed network, half anywhere.
            let probe = match i % 4 {
                0 => IpAddr::V4(rng.u32(..).into()),
                1 => IpAddr::V6(rng.u128(..).into()),
                2 => match v4[rng.usize(..v4.len())].0 {
                    IpNet::V4(n) => IpAddr::V4(
                        (u32::from(n.network()) | (rng.u32(..) & u32::from(n.hostmask()))).into(),
                    ),
                    IpNet::V6(_) => unreachable!(),
                },
                _ => match v6[rng.usize(..v6.len())].0 {
                    IpNet::V6(n) => IpAddr::V6(
                        (u128::from(n.network()) | (rng.u128(..) & u128::from(n.hostmask())))
                            .into(),
                    ),
                    IpNet::V4(_) => unreachable!(),
                },
            };
            assert_eq!(map.get(probe).copied(), scan(&nets, probe), "{probe}");
        }
    }
}

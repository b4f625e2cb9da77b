//! The subset of MessagePack that `redis.lua` exchanges through Redis's `cmsgpack`: arrays,
//! maps, integers, floats, booleans and short strings. The script reads a plan, and reads and
//! writes a client's state, as Lua tables in one C call each (`cmsgpack.unpack`,
//! `cmsgpack.pack`), instead of splitting and formatting text token by token.

/// Appends MessagePack values to a buffer.
#[derive(Default)]
pub(super) struct Writer(pub(super) Vec<u8>);

impl Writer {
    fn header(&mut self, len: usize, fix: u8, x16: u8) {
        let out = &mut self.0;
        match u16::try_from(len) {
            Ok(n) if n < 16 => out.push(fix | n as u8),
            Ok(n) => {
                out.push(x16);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Err(_) => {
                out.push(x16 + 1);
                out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            }
        }
    }

    /// The header of an array of `len` values (which follow).
    pub(super) fn array(&mut self, len: usize) {
        self.header(len, 0x90, 0xdc);
    }

    /// The header of a map of `len` pairs (each a key, then its value, follow).
    pub(super) fn map(&mut self, len: usize) {
        self.header(len, 0x80, 0xde);
    }

    pub(super) fn uint(&mut self, v: u64) {
        let out = &mut self.0;
        if v < 0x80 {
            out.push(v as u8);
        } else if v <= 0xff {
            out.extend_from_slice(&[0xcc, v as u8]);
        } else if v <= 0xffff {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        } else if v <= 0xffff_ffff {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    pub(super) fn boolean(&mut self, b: bool) {
        self.0.push(if b { 0xc3 } else { 0xc2 });
    }

    pub(super) fn float(&mut self, v: f64) {
        self.0.push(0xcb);
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    /// A string of fewer than 256 bytes (keys, and scope ids of at most 20 digits).
    pub(super) fn short_str(&mut self, s: &str) {
        let len = s.len().min(0xff);
        if len < 32 {
            self.0.push(0xa0 | len as u8);
        } else {
            self.0.extend_from_slice(&[0xd9, len as u8]);
        }
        self.0.extend_from_slice(&s.as_bytes()[..len]);
    }
}

/// One value read by [`read_all`].
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value<'a> {
    Int(i128),
    Float(f64),
    Str(&'a str),
    Bool(bool),
    Nil,
    Array(Vec<Value<'a>>),
    Map(Vec<(Value<'a>, Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The value of `key` in a map (`None` when absent or not a map).
    pub(super) fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| *k == Value::Str(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The items of an array; an empty map too, as cmsgpack writes no table as an empty map.
    pub(super) fn items(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::Array(items) => Some(items),
            Value::Map(pairs) if pairs.is_empty() => Some(&[]),
            _ => None,
        }
    }

    /// A whole number (cmsgpack writes a whole double as an integer; accept one written as a
    /// float all the same).
    pub(super) fn int(&self) -> Option<i128> {
        match *self {
            Value::Int(v) => Some(v),
            Value::Float(v) if v.fract() == 0.0 && v.abs() < 9e15 => Some(v as i128),
            _ => None,
        }
    }
}

/// Nesting deeper than this is refused (a state nests 6 deep).
const MAX_DEPTH: usize = 16;

/// Every value of `bytes`, one after the other; `None` on truncated input, a type outside
/// the subset (binaries, extensions) or nesting deeper than [`MAX_DEPTH`]. Counts larger
/// than the input could hold are refused before anything is allocated for them.
pub(super) fn read_all(bytes: &[u8]) -> Option<Vec<Value<'_>>> {
    let mut r = Reader { bytes, pos: 0 };
    let mut values = Vec::new();
    while r.pos < bytes.len() {
        values.push(r.value(0)?);
    }
    Some(values)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn be<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// A count of items that take at least one byte each.
    fn count(&mut self, n: usize) -> Option<usize> {
        (n <= self.bytes.len() - self.pos).then_some(n)
    }

    fn str_of(&mut self, n: usize) -> Option<Value<'a>> {
        Some(Value::Str(std::str::from_utf8(self.take(n)?).ok()?))
    }

    fn array(&mut self, n: usize, depth: usize) -> Option<Value<'a>> {
        let n = self.count(n)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Some(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Option<Value<'a>> {
        let n = self.count(n.checked_mul(2)?)? / 2;
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            pairs.push((self.value(depth + 1)?, self.value(depth + 1)?));
        }
        Some(Value::Map(pairs))
    }

    fn value(&mut self, depth: usize) -> Option<Value<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        let tag = self.take(1)?[0];
        let u16_len = |r: &mut Self| Some(usize::from(u16::from_be_bytes(r.be()?)));
        let u32_len = |r: &mut Self| usize::try_from(u32::from_be_bytes(r.be()?)).ok();
        Some(match tag {
            0x00..=0x7f => Value::Int(i128::from(tag)),
            0xe0..=0xff => Value::Int(i128::from(tag as i8)),
            0x80..=0x8f => return self.map(usize::from(tag & 0x0f), depth),
            0x90..=0x9f => return self.array(usize::from(tag & 0x0f), depth),
            0xa0..=0xbf => return self.str_of(usize::from(tag & 0x1f)),
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xca => Value::Float(f64::from(f32::from_be_bytes(self.be()?))),
            0xcb => Value::Float(f64::from_be_bytes(self.be()?)),
            0xcc => Value::Int(i128::from(u8::from_be_bytes(self.be()?))),
            0xcd => Value::Int(i128::from(u16::from_be_bytes(self.be()?))),
            0xce => Value::Int(i128::from(u32::from_be_bytes(self.be()?))),
            0xcf => Value::Int(i128::from(u64::from_be_bytes(self.be()?))),
            0xd0 => Value::Int(i128::from(i8::from_be_bytes(self.be()?))),
            0xd1 => Value::Int(i128::from(i16::from_be_bytes(self.be()?))),
            0xd2 => Value::Int(i128::from(i32::from_be_bytes(self.be()?))),
            0xd3 => Value::Int(i128::from(i64::from_be_bytes(self.be()?))),
            0xd9 => {
                let n = self.be::<1>()?[0];
                return self.str_of(usize::from(n));
            }
            0xda => {
                let n = u16_len(self)?;
                return self.str_of(n);
            }
            0xdb => {
                let n = u32_len(self)?;
                return self.str_of(n);
            }
            0xdc => {
                let n = u16_len(self)?;
                return self.array(n, depth);
            }
            0xdd => {
                let n = u32_len(self)?;
                return self.array(n, depth);
            }
            0xde => {
                let n = u16_len(self)?;
                return self.map(n, depth);
            }
            0xdf => {
                let n = u32_len(self)?;
                return self.map(n, depth);
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let mut w = Writer::default();
        w.uint(3);
        w.map(2);
        w.short_str("list");
        w.array(7);
        for v in [0, 127, 128, 65_535, 65_536, 1 << 53, u64::MAX] {
            w.uint(v);
        }
        w.short_str("more");
        w.array(3);
        w.boolean(true);
        w.short_str("18446744073709551615");
        w.float(1.5);
        let values = read_all(&w.0).unwrap();
        assert_eq!(values.len(), 2);
        assert_eq!(values[0], Value::Int(3));
        let ints: Vec<_> = values[1].get("list").unwrap().items().unwrap().to_vec();
        assert_eq!(
            ints,
            [0, 127, 128, 65_535, 65_536, 1 << 53, i128::from(u64::MAX)].map(Value::Int)
        );
        assert_eq!(
            values[1].get("more").unwrap(),
            &Value::Array(vec![
                Value::Bool(true),
                Value::Str("18446744073709551615"),
                Value::Float(1.5)
            ])
        );
        assert_eq!(values[1].get("none"), None);
        let mut long = Writer::default();
        long.array(70_000);
        assert_eq!(long.0, [0xdd, 0x00, 0x01, 0x11, 0x70]);
        let mut map = Writer::default();
        map.map(16);
        assert_eq!(map.0, [0xde, 0x00, 0x10]);
    }

    #[test]
    fn cmsgpack_forms_read() {
        // What cmsgpack writes: array16, negative fixint, int8, float32, str8, nil, and a map
        // keyed by integers.
        let bytes = [
            0xdc, 0x00, 0x06, 0xff, 0xd0, 0x80, 0xca, 0x3f, 0xc0, 0x00, 0x00, 0xd9, 0x01, b'L',
            0xc0, 0x81, 0xce, 0x01, 0xb0, 0x56, 0x8d, 0x05,
        ];
        let values = read_all(&bytes).unwrap();
        assert_eq!(
            values,
            [Value::Array(vec![
                Value::Int(-1),
                Value::Int(-128),
                Value::Float(1.5),
                Value::Str("L"),
                Value::Nil,
                Value::Map(vec![(Value::Int(28_333_709), Value::Int(5))]),
            ])]
        );
        assert_eq!(Value::Float(3.0).int(), Some(3));
        assert_eq!(Value::Float(3.5).int(), None);
        assert_eq!(Value::Map(vec![]).items(), Some(&[][..]));
    }

    #[test]
    fn bad_input_is_refused_without_a_panic() {
        for bytes in [
            &[0xdc, 0x00][..],
            &[0x92, 0xcf, 0x00],
            &[0xa5, b'a'],
            &[0xc4, 0x01, 0x00],
            &[0xa2, 0xff, 0xfe],
            &[0x91],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            &[0xdf, 0x7f, 0xff, 0xff, 0xff, 0x00],
        ] {
            assert_eq!(read_all(bytes), None, "{bytes:?}");
        }
        let nested = |n: usize| [vec![0x91; n], vec![0x90]].concat();
        assert!(read_all(&nested(16)).is_some());
        assert_eq!(read_all(&nested(17)), None, "nested too deep");
        // Every prefix of a valid value is refused or reads as less.
        let mut w = Writer::default();
        w.array(3);
        w.uint(1 << 40);
        w.short_str("42");
        w.float(2.0);
        for end in 0..w.0.len() {
            assert_eq!(
                read_all(&w.0[..end]).map(|v| v.len()),
                (end == 0).then_some(0)
            );
        }
    }
}

//! The subset of MessagePack that `redis.lua` exchanges through Redis's `cmsgpack`: one array
//! of integers, floats, booleans and short strings. The script reads a plan in one C call
//! (`cmsgpack.unpack`) and writes a client's state in one (`cmsgpack.pack`), instead of
//! splitting and formatting text token by token.

/// Appends MessagePack values to a buffer.
pub(super) struct Writer(pub(super) Vec<u8>);

impl Writer {
    /// A writer whose first value is an array header of `len` items.
    pub(super) fn array(len: usize) -> Writer {
        let mut out = Vec::with_capacity(16 + 5 * len);
        match u32::try_from(len) {
            Ok(n) if n < 16 => out.push(0x90 | n as u8),
            Ok(n) if n <= 0xffff => {
                out.push(0xdc);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(0xdd);
                out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            }
        }
        Writer(out)
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

    /// A string of fewer than 256 bytes (scope ids are at most 20 digits).
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

/// One value read by [`Reader`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Value<'a> {
    Int(i128),
    Float(f64),
    Str(&'a str),
    Bool(bool),
    Nil,
}

/// Reads the values of a MessagePack array, one at a time; `None` at the end of the array,
/// on truncated input or on a type outside the subset (maps, binaries, extensions).
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    left: usize,
}

impl<'a> Reader<'a> {
    /// A reader of the array that `bytes` holds (`None` when it holds none).
    pub(super) fn array(bytes: &'a [u8]) -> Option<Reader<'a>> {
        let mut r = Reader {
            bytes,
            pos: 0,
            left: 0,
        };
        let tag = r.take(1)?[0];
        r.left = match tag {
            0x90..=0x9f => usize::from(tag & 0x0f),
            0xdc => usize::from(u16::from_be_bytes(r.take(2)?.try_into().ok()?)),
            0xdd => usize::try_from(u32::from_be_bytes(r.take(4)?.try_into().ok()?)).ok()?,
            _ => return None,
        };
        Some(r)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn be<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// True when every value of the array was read and nothing follows it.
    pub(super) fn finished(&self) -> bool {
        self.left == 0 && self.pos == self.bytes.len()
    }

    pub(super) fn next_value(&mut self) -> Option<Value<'a>> {
        let left = self.left.checked_sub(1)?;
        let value = self.value()?;
        self.left = left;
        Some(value)
    }

    fn value(&mut self) -> Option<Value<'a>> {
        let tag = self.take(1)?[0];
        let str_of =
            |r: &mut Self, n: usize| Some(Value::Str(std::str::from_utf8(r.take(n)?).ok()?));
        Some(match tag {
            0x00..=0x7f => Value::Int(i128::from(tag)),
            0xe0..=0xff => Value::Int(i128::from(tag as i8)),
            0xa0..=0xbf => return str_of(self, usize::from(tag & 0x1f)),
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
                return str_of(self, usize::from(n));
            }
            0xda => {
                let n = u16::from_be_bytes(self.be()?);
                return str_of(self, usize::from(n));
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
        let mut w = Writer::array(9);
        for v in [0, 127, 128, 65_535, 65_536, 1 << 53, u64::MAX] {
            w.uint(v);
        }
        w.boolean(true);
        w.short_str("18446744073709551615");
        w.float(1.5);
        let mut r = Reader::array(&w.0).unwrap();
        let got: Vec<_> = std::iter::from_fn(|| r.next_value()).collect();
        assert_eq!(
            got,
            [
                Value::Int(0),
                Value::Int(127),
                Value::Int(128),
                Value::Int(65_535),
                Value::Int(65_536),
                Value::Int(1 << 53),
                Value::Int(i128::from(u64::MAX)),
                Value::Bool(true),
                Value::Str("18446744073709551615"),
            ],
            "the header said 9 values: the float after them is not read"
        );
        assert!(!r.finished(), "a value follows the array");
    }

    #[test]
    fn arrays_of_every_length_header_and_cmsgpack_number_forms_read() {
        // What cmsgpack writes: array16, negative fixint, int8, float32, str8.
        let bytes = [
            0xdc, 0x00, 0x05, 0xff, 0xd0, 0x80, 0xca, 0x3f, 0xc0, 0x00, 0x00, 0xd9, 0x01, b'L',
            0xc0,
        ];
        let mut r = Reader::array(&bytes).unwrap();
        let got: Vec<_> = std::iter::from_fn(|| r.next_value()).collect();
        assert_eq!(
            got,
            [
                Value::Int(-1),
                Value::Int(-128),
                Value::Float(1.5),
                Value::Str("L"),
                Value::Nil
            ]
        );
        assert!(r.finished());
        let long = Writer::array(70_000);
        assert_eq!(&long.0[..5], &[0xdd, 0x00, 0x01, 0x11, 0x70]);
    }

    #[test]
    fn bad_input_ends_the_read_without_a_panic() {
        assert!(Reader::array(&[]).is_none());
        assert!(Reader::array(&[0x80]).is_none(), "a map");
        assert!(Reader::array(&[0xdc, 0x00]).is_none(), "truncated header");
        for bytes in [
            &[0x92, 0xcf, 0x00][..],
            &[0x91, 0xa5, b'a'],
            &[0x91, 0xc4, 0x01, 0x00],
            &[0x91, 0xa2, 0xff, 0xfe],
            &[0x91],
        ] {
            let mut r = Reader::array(bytes).unwrap();
            assert_eq!(r.next_value(), None, "{bytes:?}");
        }
        // Every prefix of a valid array reads as far as its bytes go.
        let mut w = Writer::array(3);
        w.uint(1 << 40);
        w.short_str("42");
        w.float(2.0);
        for end in 0..w.0.len() {
            if let Some(mut r) = Reader::array(&w.0[..end]) {
                while r.next_value().is_some() {}
                assert!(!r.finished());
            }
        }
    }
}

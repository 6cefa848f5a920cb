//! Little-endian binary reading with every length checked.

/// A cursor over untrusted bytes. Every read is bounds-checked; a short read
/// is an error naming what was being read.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// The position, from the start.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "{what}: needs {n} bytes at offset {}, {} left",
                    self.pos,
                    self.remaining()
                )
            })?;
        let out = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| format!("{what}: out of bounds"))?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let b = self.take(N, what)?;
        b.try_into().map_err(|_| format!("{what}: out of bounds"))
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(u8::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn bytes32(&mut self, what: &str) -> Result<[u8; 32], String> {
        self.array(what)
    }
}

/// The longest LEB128 encoding of a `u64`.
pub(crate) const MAX_VARINT_LEN: usize = 10;

impl Cursor<'_> {
    /// An unsigned LEB128 varint of at most 64 bits in its shortest form:
    /// a truncated one, one past 64 bits, or one with a redundant final
    /// zero byte is refused.
    pub(crate) fn varint(&mut self, what: &str) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..MAX_VARINT_LEN {
            let byte = self.u8(what)?;
            let low = u64::from(byte & 0x7f);
            let shift = 7u32.saturating_mul(i as u32);
            if i == MAX_VARINT_LEN - 1 && low > 1 {
                return Err(format!("{what}: varint exceeds 64 bits"));
            }
            value |= low << shift;
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(format!(
                        "{what}: varint is not in its shortest form (offset {})",
                        self.pos.saturating_sub(1)
                    ));
                }
                return Ok(value);
            }
        }
        Err(format!("{what}: varint exceeds 64 bits"))
    }

    /// A signed varint: zigzag, then [`Cursor::varint`].
    pub(crate) fn zigzag(&mut self, what: &str) -> Result<i64, String> {
        let v = self.varint(what)?;
        Ok(((v >> 1) as i64) ^ ((v & 1) as i64).wrapping_neg())
    }
}

/// Append `v` as an unsigned LEB128 varint (shortest form).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Append `v` zigzag-encoded as a varint.
pub(crate) fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: u64) {
        let mut b = Vec::new();
        put_varint(&mut b, v);
        let mut c = Cursor::new(&b);
        assert_eq!(c.varint("v"), Ok(v));
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn varints_round_trip() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            round_trip(v);
        }
        for v in [0i64, 1, -1, 63, -64, i64::MIN, i64::MAX] {
            let mut b = Vec::new();
            put_zigzag(&mut b, v);
            assert_eq!(Cursor::new(&b).zigzag("z"), Ok(v));
        }
        let mut b = Vec::new();
        put_varint(&mut b, u64::MAX);
        assert_eq!(b.len(), MAX_VARINT_LEN);
    }

    #[test]
    fn truncated_varint_is_refused() {
        assert_eq!(
            Cursor::new(&[0x80, 0x80]).varint("offset"),
            Err("offset: needs 1 bytes at offset 2, 0 left".to_string())
        );
    }

    #[test]
    fn varint_past_64_bits_is_refused() {
        let eleven = [0xff; 11];
        assert_eq!(
            Cursor::new(&eleven).varint("x"),
            Err("x: varint exceeds 64 bits".to_string())
        );
        let mut ten = [0xff; 10];
        ten[9] = 0x02;
        assert_eq!(
            Cursor::new(&ten).varint("x"),
            Err("x: varint exceeds 64 bits".to_string())
        );
    }

    #[test]
    fn overlong_varint_is_refused() {
        assert_eq!(
            Cursor::new(&[0x81, 0x00]).varint("x"),
            Err("x: varint is not in its shortest form (offset 1)".to_string())
        );
    }
}

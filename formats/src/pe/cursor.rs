//! A bounds-checked little-endian reader over a byte slice, for the PDB
//! streams this reader decodes itself.

/// A read position in a byte slice. Every read is checked: it returns
/// `None` rather than reading past the end.
#[derive(Clone, Debug)]
pub(super) struct Cursor<'a> {
    /// The bytes.
    data: &'a [u8],
    /// Offset of the next byte to read.
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `data`.
    pub(super) fn new(data: &'a [u8]) -> Self {
        Cursor { data, pos: 0 }
    }

    /// Offset of the next byte to read.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    /// Whether every byte has been read.
    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next `n` bytes.
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// The next byte.
    pub(super) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    /// The next little-endian `u16`.
    pub(super) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    /// The next little-endian `u32`.
    pub(super) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// The next little-endian `u64`.
    pub(super) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// The next 16 bytes.
    pub(super) fn bytes16(&mut self) -> Option<[u8; 16]> {
        self.array()
    }

    /// A NUL-terminated string (without its NUL).
    pub(super) fn cstr(&mut self) -> Option<&'a [u8]> {
        let rest = self.data.get(self.pos..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        let s = rest.get(..len)?;
        self.pos = self.pos.checked_add(len)?.checked_add(1)?;
        Some(s)
    }

    /// Skip to the next multiple of `align` (a power of two), if that is
    /// still inside the data (or exactly at its end).
    pub(super) fn align(&mut self, align: usize) -> Option<()> {
        let mask = align.checked_sub(1)?;
        let aligned = self.pos.checked_add(mask)? & !mask;
        if aligned > self.data.len() {
            return None;
        }
        self.pos = aligned;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let mut c = Cursor::new(&[1, 0, 2, 0, 0, 0, b'a', 0, 9]);
        assert_eq!(c.u16(), Some(1));
        assert_eq!(c.u32(), Some(2));
        assert_eq!(c.cstr(), Some(&b"a"[..]));
        assert_eq!(c.pos(), 8);
        assert_eq!(c.u16(), None);
        assert_eq!(c.cstr(), None);
        assert_eq!(c.u8(), Some(9));
        assert!(c.is_empty());
        assert_eq!(c.take(usize::MAX), None);
        let mut c = Cursor::new(&[0; 6]);
        c.take(1).unwrap();
        assert_eq!(c.align(4), Some(()));
        assert_eq!(c.pos(), 4);
        c.take(1).unwrap();
        assert_eq!(c.align(4), None);
        assert_eq!(c.pos(), 5);
    }
}

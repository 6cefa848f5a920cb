//! A bounded in-memory [`pdb::Source`].
//!
//! The `pdb` crate asks its source for views made of page runs that the
//! (untrusted) stream directory lists. Its default source allocates whatever
//! is asked for before reading, so a small crafted file could make it
//! allocate gigabytes. This source checks every request against the file
//! first: each run must lie inside the file, one view can never be larger
//! than the file (a stream's pages are distinct), and all views together are
//! held to a budget of a few times the file size. A view of one run borrows
//! the file's bytes instead of copying them.

use std::fmt;
use std::io;

use pdb::{SourceSlice, SourceView};

/// How many times the file size all views together may copy or borrow. A
/// well-formed PDB is read about once; the slack covers re-reading the
/// stream directory and the DBI header.
const BUDGET_FACTOR: u64 = 8;

/// Fixed allowance on top of [`BUDGET_FACTOR`] times the file size, so that
/// small files are not starved.
const BUDGET_BASE: u64 = 64 << 20;

/// The PDB file's bytes, served to the `pdb` crate.
pub(super) struct MemSource<'s> {
    /// The whole file.
    data: &'s [u8],
    /// Bytes that views may still cover.
    budget: u64,
}

impl<'s> MemSource<'s> {
    /// A source over the whole file.
    pub(super) fn new(data: &'s [u8]) -> Self {
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        MemSource {
            data,
            budget: len
                .saturating_mul(BUDGET_FACTOR)
                .saturating_add(BUDGET_BASE),
        }
    }

    /// The bytes of one run, if it lies inside the file.
    fn run(&self, slice: &SourceSlice) -> io::Result<&'s [u8]> {
        let start = usize::try_from(slice.offset).ok();
        let end = start.and_then(|s| s.checked_add(slice.size));
        start
            .zip(end)
            .and_then(|(s, e)| self.data.get(s..e))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the file is truncated: a stream needs bytes {:#x}..{:#x} but the file has {:#x}",
                        slice.offset,
                        slice.offset.saturating_add(u64::try_from(slice.size).unwrap_or(u64::MAX)),
                        self.data.len()
                    ),
                )
            })
    }
}

impl fmt::Debug for MemSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemSource({} bytes)", self.data.len())
    }
}

/// A view: a copy of the runs asked for, in order.
struct Owned(Vec<u8>);

impl fmt::Debug for Owned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Owned({} bytes)", self.0.len())
    }
}

impl SourceView<'_> for Owned {
    fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl<'s> pdb::Source<'s> for MemSource<'s> {
    fn view(&mut self, slices: &[SourceSlice]) -> io::Result<Box<dyn SourceView<'s>>> {
        let total = slices
            .iter()
            .try_fold(0usize, |acc, s| acc.checked_add(s.size))
            .filter(|&t| t <= self.data.len())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a stream is larger than the whole file (its page list repeats pages)",
                )
            })?;
        let total64 = u64::try_from(total).unwrap_or(u64::MAX);
        self.budget = self.budget.checked_sub(total64).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "the streams read add up to many times the file size (pages shared between streams?)",
            )
        })?;
        let mut bytes = Vec::with_capacity(total);
        for slice in slices {
            bytes.extend_from_slice(self.run(slice)?);
        }
        Ok(Box::new(Owned(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pdb::Source;

    fn slice(offset: u64, size: usize) -> SourceSlice {
        SourceSlice { offset, size }
    }

    #[test]
    fn views_are_checked_against_the_file() {
        let data: Vec<u8> = (0..=255).collect();
        let mut src = MemSource::new(&data);
        let view = src.view(&[slice(16, 4), slice(0, 2)]).unwrap();
        assert_eq!(view.as_slice(), &[16, 17, 18, 19, 0, 1]);
        assert!(src.view(&[slice(250, 10)]).is_err());
        assert!(src.view(&[slice(u64::MAX, 1)]).is_err());
        // The same page over and over: larger than the file.
        let again = vec![slice(0, 128); 3];
        assert!(src.view(&again).is_err());
        assert!(src.view(&[slice(0, usize::MAX), slice(0, 2)]).is_err());
    }

    #[test]
    fn views_share_a_budget() {
        let data = vec![0u8; 1024];
        let mut src = MemSource::new(&data);
        src.budget = 3000;
        assert!(src.view(&[slice(0, 1024)]).is_ok());
        assert!(src.view(&[slice(0, 1024)]).is_ok());
        assert!(src.view(&[slice(0, 1024)]).is_err());
    }
}

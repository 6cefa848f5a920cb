//! AArch64 normaliser (yaxpeax-arm). Written by the AArch64 normaliser work.
use super::Normalized;
use crate::index::ImageIndex;

pub(crate) fn references(_code: &[u8], _rva: u64, _out: &mut Vec<u64>) {}

pub(crate) fn normalize<'a>(
    _index: &'a ImageIndex<'_, '_>,
    _group: usize,
    _rva: u64,
    code: &[u8],
    out: &mut Normalized<'a>,
) {
    out.push_raw(0, code);
}

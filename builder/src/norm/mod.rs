//! Normalisation: decode a function and replace every address-dependent
//! operand with a [`SymRef`], so that two builds of unchanged code compare
//! equal however far it moved.
//!
//! Two passes per image:
//! 1. [`references`] lists every address the code refers to. The index uses
//!    them as anchors that cut anonymous data (string literals, jump tables,
//!    literal pools) into blocks.
//! 2. [`normalize_part`] turns each part of a function into a stream of
//!    [`NormInsn`]: one per instruction, with a hash of the instruction's
//!    address-independent form.
//!
//! Normalisation never fails: bytes that do not decode become opaque tokens
//! of their raw value, so they still compare exactly.

use std::hash::{Hash, Hasher};

use hotpatch_formats::Arch;

use crate::index::{ImageIndex, SymRef};
use crate::key::Key;

pub(crate) mod arm64;
pub(crate) mod x86;

/// One normalised instruction (or one opaque datum inside code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormInsn {
    /// Offset from the start of its part.
    pub offset: u32,
    /// Length in bytes.
    pub len: u8,
    /// Hash of the address-independent form: equal hashes mean equal
    /// instructions (up to hash collisions).
    pub hash: u64,
}

/// The normalised form of one function part.
#[derive(Clone, Debug, Default)]
pub struct Normalized<'a> {
    /// The instruction stream.
    pub insns: Vec<NormInsn>,
    /// Every named data object the code refers to (duplicates allowed).
    pub data_refs: Vec<&'a Key>,
    /// Every other function part the code refers to: key and clone
    /// signature (duplicates allowed).
    pub fn_refs: Vec<(&'a Key, &'a str)>,
}

impl<'a> Normalized<'a> {
    /// Record a reference: data objects are remembered for the read-only
    /// propagation, functions for the clone checks.
    pub(crate) fn note(&mut self, r: &SymRef<'a>) {
        match *r {
            SymRef::Data { key, .. } => self.data_refs.push(key),
            SymRef::Function { key, part, .. } => self.fn_refs.push((key, part)),
            _ => {}
        }
    }

    /// Push one instruction whose address-independent form has already
    /// been fed to `h`.
    pub(crate) fn push(&mut self, offset: usize, len: usize, h: std::hash::DefaultHasher) {
        self.insns.push(NormInsn {
            offset: offset as u32,
            len: len.min(255) as u8,
            hash: h.finish(),
        });
    }

    /// Push an opaque token for bytes that are not (decodable) instructions.
    pub(crate) fn push_raw(&mut self, offset: usize, bytes: &[u8]) {
        let mut h = std::hash::DefaultHasher::new();
        (0xffu8, bytes).hash(&mut h);
        self.push(offset, bytes.len(), h);
    }
}

/// Pass 1: append to `out` every address (RVA) that the code at `rva`
/// refers to outside itself: branch and call targets, RIP-relative and
/// ADRP/ADR/literal addresses, and the tables those lead to.
pub fn references(arch: Arch, code: &[u8], rva: u64, out: &mut Vec<u64>) {
    match arch {
        Arch::X86_64 => x86::references(code, rva, out),
        Arch::Aarch64 => arm64::references(code, rva, out),
    }
}

/// Pass 2: normalise part `part` of group `group` of `index`'s image,
/// appending to `out`.
pub fn normalize_part<'a>(
    index: &'a ImageIndex<'_, '_>,
    group: usize,
    part: usize,
    out: &mut Normalized<'a>,
) {
    let p = &index.groups[group].parts[part];
    let Some(code) = index.image.bytes_at(p.rva, p.size) else {
        // Not file-backed (should not happen for code): compare by size.
        out.push_raw(0, &p.size.to_le_bytes());
        return;
    };
    match index.image.arch {
        Arch::X86_64 => x86::normalize(index, group, p.rva, code, out),
        Arch::Aarch64 => arm64::normalize(index, group, p.rva, code, out),
    }
}

//! Normalisation: decode a function and replace every address-dependent
//! operand with a [`SymRef`], so that two builds of unchanged code compare
//! equal however far it moved.
//!
//! [`normalize_group`] (or [`normalize_part`] for one part alone) turns each
//! part of a function into a stream of [`NormInsn`]: one per instruction,
//! with a hash of the instruction's address-independent form.
//!
//! Anonymous data (string literals, jump tables, constants) is identified by
//! the digest of its block, and the blocks are cut at every address any code
//! refers to. Those addresses are only all known once all code is decoded,
//! so one decode does both jobs:
//!
//! - Against an index not yet finished, a reference to anonymous bytes is a
//!   [`SymRef::Deferred`]: the instruction hashes only that it has one, and
//!   [`Normalized::deferred`] keeps the address. Every such address also
//!   goes to [`Normalized::anchors`], which is what the index needs to fix
//!   its blocks ([`ImageIndex::finish`]). The diff then compares the
//!   deferred addresses of two streams pair by pair.
//! - A jump table in anonymous data runs until its block ends, so it is
//!   measured provisionally ([`Normalized::tables`]) and checked again once
//!   the index is finished; only a part whose table measures differently
//!   then is normalised again.
//! - Code that is not compared (functions only one build has) is normalised
//!   the same way, for its anchors alone.
//!
//! Normalisation never fails: bytes that do not decode become opaque tokens
//! of their raw value, so they still compare exactly.
//!
//! # Padding and instruction lengths
//!
//! Code inside a function moves when the compiler's padding or encoding
//! choices change, without any change of meaning: an alignment `NOP` before
//! a loop head appears or disappears when the function's own start moves
//! relative to the loop alignment (GCC aligns loops more strictly than
//! functions), and an x86 branch relaxes from rel8 to rel32. Two rules keep
//! such code equal:
//!
//! - `NOP`s are not part of the stream: they land in [`Normalized::nops`].
//!   Only encodings that do nothing at all count: on x86-64 `nop` (`90`,
//!   `66 90` = `xchg ax,ax`, `REX.W 90`) and `nop r/m` (`0F 1F /0`, any
//!   prefixes), not `pause`, `int3` or the other reserved-`NOP` opcodes; on
//!   AArch64 the word `0xd503201f` only, not other `HINT`s, and never a word
//!   that is data (a literal pool).
//! - A reference into the function's own code ([`SymRef::Local`]: branch
//!   targets, jump table entries, `ADR`s, relocated pointers to it) is not
//!   hashed by its byte offset. The normaliser hashes a placeholder and
//!   records the place; once every part of the group is decoded, the place
//!   is converted to a position in the `NOP`-free stream and folded into the
//!   referring instruction's hash, in the order recorded (see [`Place`]).
//!
//! A part normalised alone ([`normalize_part`]) cannot see the other parts of
//! its group, so there a reference to another part (a `.cold` split) keeps
//! the part and byte offset; [`normalize_group`] resolves those by position
//! too. Both sides of a comparison must use the same function.

use std::borrow::Cow;
use std::cell::RefCell;
use std::hash::{Hash, Hasher};

use hotpatch_formats::Arch;

use crate::index::{ImageIndex, SymRef};
use crate::key::Key;

/// The hasher of normalised instructions: one 128-bit multiply per word.
///
/// Instruction hashes are only compared with each other inside one run, so
/// they need to be fast and well mixed, not keyed against attackers (the
/// updated build comes from the vendor's own pipeline). A wyhash-style
/// folded multiply gives that for about a tenth of SipHash's cost, and it is
/// deterministic across runs and machines.
#[derive(Clone, Copy, Debug, Default)]
pub struct InsnHasher {
    state: u64,
}

const MUL_A: u64 = 0xa076_1d64_78bd_642f;
const MUL_B: u64 = 0xe703_7ed1_a0b4_28db;

/// Multiply to 128 bits and fold the halves together.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let r = u128::from(a).wrapping_mul(u128::from(b));
    (r as u64) ^ ((r >> 64) as u64)
}

impl Hasher for InsnHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" and "ab\0" apart.
            self.write_u64(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.state = fold(self.state ^ i ^ MUL_A, MUL_B);
    }

    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold(self.state ^ MUL_B, MUL_A)
    }
}

pub(crate) mod arm64;
pub(crate) mod x86;

/// One normalised instruction (or one opaque datum inside code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormInsn {
    /// Offset from the start of its part, in bytes.
    pub offset: u32,
    /// Length in bytes.
    pub len: u8,
    /// Hash of the address-independent form: equal hashes mean equal
    /// instructions (up to hash collisions).
    pub hash: u64,
}

/// Bytes of a part that are left out of the instruction stream (a `NOP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Offset from the start of its part, in bytes.
    pub offset: u32,
    /// Length in bytes.
    pub len: u8,
}

/// A reference into the code of the group being normalised, waiting for
/// [`finish_parts`] to turn it into a [`Place`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fixup {
    /// Position in `insns` of the instruction that refers to it.
    insn: u32,
    /// The part referred to (index in the group).
    part: u32,
    /// Byte offset in that part.
    offset: u64,
}

/// Where a reference into the group's code lands, independent of padding
/// and instruction lengths. Compared exactly: two references are the same
/// when their places are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Place {
    /// The start of instruction `index` of the `NOP`-free stream of `part`.
    /// A place on a dropped `NOP` is the next kept instruction (`index` is
    /// the stream's length after trailing `NOP`s).
    At {
        /// The part.
        part: u32,
        /// Position in the part's stream.
        index: u32,
    },
    /// `delta` bytes into instruction `index` of `part`.
    Inside {
        /// The part.
        part: u32,
        /// Position in the part's stream.
        index: u32,
        /// Bytes from the instruction's start.
        delta: u64,
    },
    /// `delta` bytes into a dropped `NOP` that precedes instruction `index`
    /// of `part` (a jump into a multi-byte `NOP` executes something else).
    InsideNop {
        /// The part.
        part: u32,
        /// Position of the next kept instruction.
        index: u32,
        /// Bytes from the `NOP`'s start.
        delta: u64,
    },
    /// Not covered by any instruction or `NOP` (past the end of the part):
    /// `delta` bytes after the last covered byte before it, which precedes
    /// instruction `index`.
    Beyond {
        /// The part.
        part: u32,
        /// Position of the next kept instruction.
        index: u32,
        /// Bytes after the last covered byte.
        delta: u64,
    },
    /// Another part that was not normalised along with this one
    /// ([`normalize_part`]): the part and the byte offset in it.
    Bytes {
        /// The part.
        part: u32,
        /// Byte offset in the part.
        offset: u64,
    },
}

impl Place {
    /// Where byte `offset` of part `part` lands, given that part's kept
    /// instructions and dropped `NOP`s (both sorted by offset).
    pub fn locate(part: u32, insns: &[NormInsn], nops: &[Skipped], offset: u64) -> Place {
        let k = insns.partition_point(|i| u64::from(i.offset) < offset);
        let index = u32::try_from(k).unwrap_or(u32::MAX);
        if insns.get(k).is_some_and(|i| u64::from(i.offset) == offset) {
            return Place::At { part, index };
        }
        let mut covered = 0u64;
        if let Some(prev) = k.checked_sub(1).and_then(|p| insns.get(p)) {
            let start = u64::from(prev.offset);
            let end = start + u64::from(prev.len);
            if offset < end {
                return Place::Inside {
                    part,
                    index: index - 1,
                    delta: offset - start,
                };
            }
            covered = end;
        }
        let j = nops.partition_point(|n| u64::from(n.offset) <= offset);
        if let Some(nop) = j.checked_sub(1).and_then(|p| nops.get(p)) {
            let start = u64::from(nop.offset);
            let end = start + u64::from(nop.len);
            if offset == start {
                return Place::At { part, index };
            }
            if offset < end {
                return Place::InsideNop {
                    part,
                    index,
                    delta: offset - start,
                };
            }
            covered = covered.max(end);
        }
        Place::Beyond {
            part,
            index,
            delta: offset.saturating_sub(covered),
        }
    }

    /// Fold the place into the hash `h` of the instruction that refers to
    /// it. The instruction's own hash is already a SipHash digest and a
    /// place is three small words, so a few 128-bit multiplications (as in
    /// wyhash) mix them well enough, at a tenth of the cost of hashing again.
    fn fold_into(&self, h: u64) -> u64 {
        /// wyhash's secret.
        const P: [u64; 4] = [
            0xa076_1d64_78bd_642f,
            0xe703_7ed1_a0b4_28db,
            0x8ebc_6af0_9c88_c6e3,
            0x5899_65cc_7537_4cc3,
        ];
        let [w0, w1, w2] = self.words();
        let a = mum(w0 ^ P[0], w1 ^ P[1]);
        let b = mum(w2 ^ P[2], h ^ P[3]);
        mum(a ^ P[1], b ^ P[0])
    }

    /// The place as three words: kind and part, position, delta.
    fn words(&self) -> [u64; 3] {
        let (kind, part, a, b) = match *self {
            Place::At { part, index } => (0u64, part, u64::from(index), 0),
            Place::Inside { part, index, delta } => (1, part, u64::from(index), delta),
            Place::InsideNop { part, index, delta } => (2, part, u64::from(index), delta),
            Place::Beyond { part, index, delta } => (3, part, u64::from(index), delta),
            Place::Bytes { part, offset } => (4, part, offset, 0),
        };
        [kind | u64::from(part) << 8, a, b]
    }
}

/// The 128-bit product of `a` and `b`, its halves xor-ed together.
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// A reference to anonymous bytes whose block is not known yet
/// ([`SymRef::Deferred`]), in the instruction that makes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deferred {
    /// Position in [`Normalized::insns`] of the referring instruction.
    pub insn: u32,
    /// The RVA referred to.
    pub rva: u64,
}

/// The normalised form of one function part.
#[derive(Clone, Debug, Default)]
pub struct Normalized<'a> {
    /// The instruction stream, `NOP`s left out.
    pub insns: Vec<NormInsn>,
    /// The `NOP`s left out of [`Normalized::insns`], sorted by offset.
    pub nops: Vec<Skipped>,
    /// Every named data object the code refers to (duplicates allowed).
    pub data_refs: Vec<&'a Key<'a>>,
    /// Every other function part the code refers to: key and clone
    /// signature (duplicates allowed).
    pub fn_refs: Vec<(&'a Key<'a>, &'a Cow<'a, str>)>,
    /// References to anonymous bytes made before the index was finished,
    /// in the order hashed. Two streams with equal hashes are equal when
    /// their deferred references resolve alike, pair by pair.
    pub deferred: Vec<Deferred>,
    /// Addresses of anonymous bytes the code refers to: the anchors that cut
    /// anonymous data into blocks.
    pub anchors: Vec<u64>,
    /// Jump tables in anonymous data measured before the index was finished
    /// (address, entries). A table runs until its entries leave the function
    /// or its block ends, and blocks may end earlier once every anchor is
    /// known: if [`table_len`] then measures one differently, this form is
    /// stale and the part must be normalised again.
    pub tables: Vec<(u64, usize)>,
    /// References into the group's code, in instruction order, until
    /// [`finish_parts`] folds them into the hashes.
    fixups: Vec<Fixup>,
}

impl<'a> Normalized<'a> {
    /// Empty everything, keeping the allocations.
    pub fn clear(&mut self) {
        self.insns.clear();
        self.nops.clear();
        self.data_refs.clear();
        self.fn_refs.clear();
        self.deferred.clear();
        self.anchors.clear();
        self.tables.clear();
        self.fixups.clear();
    }

    /// Record that the instruction about to be pushed refers to anonymous
    /// bytes at `rva`, not yet resolved.
    pub(crate) fn defer(&mut self, rva: u64) {
        self.deferred.push(Deferred {
            insn: u32::try_from(self.insns.len()).unwrap_or(u32::MAX),
            rva,
        });
    }

    /// Record a reference: data objects are remembered for the read-only
    /// propagation, functions for the clone checks.
    pub(crate) fn note(&mut self, r: &SymRef<'a>) {
        match *r {
            SymRef::Data { key, .. } => self.data_refs.push(key),
            SymRef::Function { key, part, .. } => self.fn_refs.push((key, part)),
            _ => {}
        }
    }

    /// Record that the instruction about to be pushed refers to byte
    /// `offset` of part `part` of its own group. The caller hashes only the
    /// fact that there is such a reference; the place is folded into the
    /// instruction's hash when the group is finished, in the order recorded.
    pub(crate) fn local(&mut self, part: u32, offset: u64) {
        self.fixups.push(Fixup {
            insn: u32::try_from(self.insns.len()).unwrap_or(u32::MAX),
            part,
            offset,
        });
    }

    /// Record that instruction `insn` (already pushed) refers to `places`
    /// (part, byte offset) of its own group, after the references it
    /// already recorded.
    pub(crate) fn locals_at(&mut self, insn: u32, places: &[(u32, u64)]) {
        let at = self.fixups.partition_point(|f| f.insn <= insn);
        self.fixups.splice(
            at..at,
            places
                .iter()
                .map(|&(part, offset)| Fixup { insn, part, offset }),
        );
    }

    /// How many local references are recorded, for [`Normalized::rollback`].
    pub(crate) fn mark(&self) -> usize {
        self.fixups.len()
    }

    /// Forget the local references recorded since `mark` (a tentative
    /// interpretation that did not hold).
    pub(crate) fn rollback(&mut self, mark: usize) {
        self.fixups.truncate(mark);
    }

    /// Push one instruction whose address-independent form has already
    /// been fed to `h`.
    pub(crate) fn push(&mut self, offset: usize, len: usize, h: InsnHasher) {
        self.insns.push(NormInsn {
            offset: offset as u32,
            len: len.min(255) as u8,
            hash: h.finish(),
        });
    }

    /// Leave a `NOP` of `len` bytes at `offset` out of the stream. It must
    /// not have recorded local references.
    pub(crate) fn push_nop(&mut self, offset: usize, len: usize) {
        self.nops.push(Skipped {
            offset: offset as u32,
            len: len.min(255) as u8,
        });
    }

    /// Push an opaque token for bytes that are not (decodable) instructions.
    pub(crate) fn push_raw(&mut self, offset: usize, bytes: &[u8]) {
        let mut h = InsnHasher::default();
        (0xffu8, bytes).hash(&mut h);
        self.push(offset, bytes.len(), h);
    }

    /// Replace the hash of the instruction at byte `offset` (already
    /// pushed) by `hash`, dropping the local references it recorded.
    pub(crate) fn rehash(&mut self, offset: usize, hash: u64) {
        let k = self.insns.partition_point(|i| (i.offset as usize) < offset);
        let Some(insn) = self
            .insns
            .get_mut(k)
            .filter(|i| i.offset as usize == offset)
        else {
            return;
        };
        insn.hash = hash;
        let k = u32::try_from(k).unwrap_or(u32::MAX);
        let lo = self.fixups.partition_point(|f| f.insn < k);
        let hi = self.fixups.partition_point(|f| f.insn <= k);
        if lo < hi {
            self.fixups.drain(lo..hi);
        }
        let lo = self.deferred.partition_point(|d| d.insn < k);
        let hi = self.deferred.partition_point(|d| d.insn <= k);
        if lo < hi {
            self.deferred.drain(lo..hi);
        }
    }
}

/// Hash a reference for an instruction that is being built: a place in the
/// group's own code is recorded with [`Normalized::local`] and an unresolved
/// anonymous one with [`Normalized::defer`] (only their kind is hashed),
/// anything else is hashed as itself.
#[inline]
pub(crate) fn hash_ref<'a>(r: &SymRef<'a>, h: &mut InsnHasher, out: &mut Normalized<'a>) {
    match *r {
        SymRef::Local { part, offset } => {
            out.local(part, offset);
            LOCAL_MARK.hash(h);
        }
        SymRef::Deferred(rva) => {
            out.defer(rva);
            DEFERRED_MARK.hash(h);
        }
        _ => r.hash(h),
    }
}

/// What [`hash_ref`] hashes for a local reference; the place itself is
/// folded in by [`finish_parts`].
const LOCAL_MARK: u64 = 0x4c4f_4341_4c00_0000;

/// What [`hash_ref`] hashes for a deferred reference.
pub(crate) const DEFERRED_MARK: u64 = 0x4445_4645_5252_4544;

/// Largest part, in bytes, for which [`finish_parts`] keeps a direct table
/// from byte offset to position; references into larger ones are searched.
const MAX_DIRECT: usize = 1 << 20;

thread_local! {
    /// Scratch of [`finish_parts`], reused by every part a thread finishes:
    /// for each byte offset of the part being finished, the position of the
    /// instruction that starts there. Entries at offsets where no instruction
    /// starts are stale (from earlier parts) and harmless: every hit is
    /// checked against the instruction's own offset.
    static STARTS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Fold the recorded local references of every part into the hashes.
/// `parts[i]` is part `first + i` of the group; a reference to a part outside
/// the slice is taken as [`Place::Bytes`].
fn finish_parts(parts: &mut [Normalized<'_>], first: u32) {
    STARTS.with_borrow_mut(|starts| {
        for p in 0..parts.len() {
            let own = u32::try_from(p).ok().and_then(|p| first.checked_add(p));
            let Some(cur) = parts.get_mut(p).filter(|n| !n.fixups.is_empty()) else {
                continue;
            };
            let fixups = std::mem::take(&mut cur.fixups);
            // Almost every reference is into the part itself: index its
            // instruction starts directly.
            let end = cur.insns.last().map_or(0, |i| i.offset as usize + 1);
            let direct = end <= MAX_DIRECT;
            if direct {
                if starts.len() < end {
                    starts.resize(end, 0);
                }
                for (k, insn) in cur.insns.iter().enumerate() {
                    if let Some(slot) = starts.get_mut(insn.offset as usize) {
                        *slot = k as u32;
                    }
                }
            }
            let mut i = 0;
            while let Some(head) = fixups.get(i) {
                let at = head.insn as usize;
                let mut h = parts
                    .get(p)
                    .and_then(|n| n.insns.get(at))
                    .map_or(0, |n| n.hash);
                while let Some(f) = fixups.get(i).filter(|f| f.insn == head.insn) {
                    let target = f
                        .part
                        .checked_sub(first)
                        .and_then(|q| parts.get(q as usize));
                    let hit = if direct && Some(f.part) == own {
                        target.and_then(|t| {
                            let k = *starts.get(usize::try_from(f.offset).ok()?)?;
                            let insn = t.insns.get(k as usize)?;
                            (u64::from(insn.offset) == f.offset).then_some(k)
                        })
                    } else {
                        None
                    };
                    let place = match (hit, target) {
                        (Some(index), _) => Place::At {
                            part: f.part,
                            index,
                        },
                        (None, Some(t)) => Place::locate(f.part, &t.insns, &t.nops, f.offset),
                        (None, None) => Place::Bytes {
                            part: f.part,
                            offset: f.offset,
                        },
                    };
                    h = place.fold_into(h);
                    i += 1;
                }
                if let Some(insn) = parts.get_mut(p).and_then(|n| n.insns.get_mut(at)) {
                    insn.hash = h;
                }
            }
            let mut fixups = fixups;
            fixups.clear();
            if let Some(cur) = parts.get_mut(p) {
                cur.fixups = fixups;
            }
        }
    });
}

/// The instruction at the start of `code` (at `rva`), as assembly text, for
/// reasons shown to people. `None` when it does not decode.
pub fn render(arch: Arch, code: &[u8], rva: u64) -> Option<String> {
    match arch {
        Arch::X86_64 => {
            use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};
            let mut d = Decoder::with_ip(64, code, rva, DecoderOptions::NONE);
            let mut insn = Instruction::default();
            d.decode_out(&mut insn);
            if insn.is_invalid() {
                return None;
            }
            let mut text = String::new();
            IntelFormatter::new().format(&insn, &mut text);
            Some(text)
        }
        Arch::Aarch64 => {
            use yaxpeax_arch::{Decoder, U8Reader};
            use yaxpeax_arm::armv8::a64::InstDecoder;
            let word = code.get(..4)?;
            let insn = InstDecoder::default()
                .decode(&mut U8Reader::new(word))
                .ok()?;
            Some(insn.to_string())
        }
    }
}

/// How many entries the jump table at `table` in anonymous data, used by
/// group `group`, has with `index`'s blocks as they are now (see
/// [`Normalized::tables`]).
pub fn table_len(index: &ImageIndex<'_, '_>, group: usize, table: u64) -> usize {
    match index.image.arch {
        Arch::X86_64 => x86::table_len(index, group, table),
        // AArch64 tables are measured by their bounds check, not their block.
        Arch::Aarch64 => 0,
    }
}

/// Pass 2 for one part: normalise part `part` of group `group` of `index`'s
/// image into `out` (emptied first). References to other parts of the
/// group keep their byte offset (see the module documentation); use
/// [`normalize_group`] to compare whole functions.
pub fn normalize_part<'a>(
    index: &'a ImageIndex<'_, '_>,
    group: usize,
    part: usize,
    out: &mut Normalized<'a>,
) {
    out.clear();
    decode_part(index, group, part, out);
    finish_parts(
        std::slice::from_mut(out),
        u32::try_from(part).unwrap_or(u32::MAX),
    );
}

/// Pass 2 for a whole function: normalise every part of group `group` into
/// `out` (one [`Normalized`] per part, in the group's order; the vector and
/// its elements are reused). References between the parts are resolved to
/// positions in the `NOP`-free streams, like references inside a part.
pub fn normalize_group<'a>(
    index: &'a ImageIndex<'_, '_>,
    group: usize,
    out: &mut Vec<Normalized<'a>>,
) {
    let n = index.parts(group).len();
    out.truncate(n);
    out.resize_with(n, Normalized::default);
    for (p, o) in out.iter_mut().enumerate() {
        o.clear();
        decode_part(index, group, p, o);
    }
    finish_parts(out, 0);
}

/// The part being normalised: where it is, and how an address resolves
/// from inside it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scope<'a, 'i, 'd> {
    /// The image's index.
    pub index: &'a ImageIndex<'i, 'd>,
    /// The function group being normalised.
    pub group: usize,
    /// The part's position in its group.
    pub part: u32,
    /// RVA of the part's first byte.
    pub rva: u64,
    /// The part's length in bytes.
    pub len: u64,
}

impl<'a> Scope<'a, '_, '_> {
    /// Resolve `target`: an address inside this part is
    /// [`SymRef::Local`] without a look-up, anything else goes to the index.
    #[inline]
    pub fn resolve(&self, target: u64) -> SymRef<'a> {
        let offset = target.wrapping_sub(self.rva);
        if offset < self.len {
            return SymRef::Local {
                part: self.part,
                offset,
            };
        }
        self.index.resolve(target, Some(self.group))
    }
}

/// Decode and hash one part, leaving its local references pending.
fn decode_part<'a>(
    index: &'a ImageIndex<'_, '_>,
    group: usize,
    part: usize,
    out: &mut Normalized<'a>,
) {
    let Some(p) = index.parts(group).get(part) else {
        return;
    };
    let Some(code) = index.image.bytes_at(p.rva, p.size) else {
        // Not file-backed (should not happen for code): compare by size.
        out.push_raw(0, &p.size.to_le_bytes());
        return;
    };
    // About one instruction in five or six refers to its own function (one
    // per 22 to 25 bytes of generated GCC code): one allocation, not a
    // string of reallocations.
    out.fixups.reserve(code.len() / 16);
    let scope = Scope {
        index,
        group,
        part: u32::try_from(part).unwrap_or(u32::MAX),
        rva: p.rva,
        len: code.len() as u64,
    };
    match index.image.arch {
        Arch::X86_64 => x86::normalize(scope, code, out),
        Arch::Aarch64 => arm64::normalize(scope, code, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream of instructions `(offset, len)` with `NOP`s `(offset, len)`.
    fn stream(insns: &[(u32, u8)], nops: &[(u32, u8)]) -> (Vec<NormInsn>, Vec<Skipped>) {
        (
            insns
                .iter()
                .map(|&(offset, len)| NormInsn {
                    offset,
                    len,
                    hash: u64::from(offset),
                })
                .collect(),
            nops.iter()
                .map(|&(offset, len)| Skipped { offset, len })
                .collect(),
        )
    }

    /// Every kind of place: an instruction start, a `NOP` (start: the next
    /// instruction; inside: distinct), inside an instruction, past the end.
    #[test]
    fn places_by_position_not_bytes() {
        // 0: 2-byte insn, 2: 3-byte nop, 5: 1-byte nop, 6: 4-byte insn,
        // 10: 1-byte insn, 11: 2-byte nop (trailing).
        let (insns, nops) = stream(&[(0, 2), (6, 4), (10, 1)], &[(2, 3), (5, 1), (11, 2)]);
        let at = |o| Place::locate(7, &insns, &nops, o);
        assert_eq!(at(0), Place::At { part: 7, index: 0 });
        assert_eq!(at(6), Place::At { part: 7, index: 1 });
        assert_eq!(at(2), Place::At { part: 7, index: 1 });
        assert_eq!(at(5), Place::At { part: 7, index: 1 });
        assert_eq!(at(11), Place::At { part: 7, index: 3 });
        assert_eq!(
            at(1),
            Place::Inside {
                part: 7,
                index: 0,
                delta: 1
            }
        );
        assert_eq!(
            at(9),
            Place::Inside {
                part: 7,
                index: 1,
                delta: 3
            }
        );
        assert_eq!(
            at(3),
            Place::InsideNop {
                part: 7,
                index: 1,
                delta: 1
            }
        );
        assert_eq!(
            at(15),
            Place::Beyond {
                part: 7,
                index: 3,
                delta: 2
            }
        );
        // The same code without its NOPs gives the same places.
        let (tight, none) = stream(&[(0, 2), (2, 4), (6, 1)], &[]);
        assert_eq!(Place::locate(7, &tight, &none, 2), at(6));
        assert_eq!(Place::locate(7, &tight, &none, 6), at(10));
        assert_eq!(Place::locate(7, &tight, &none, 5), at(9));
    }

    /// Folding distinct places into one instruction hash gives distinct
    /// hashes (no collision among a few hundred thousand nearby places).
    #[test]
    fn folded_places_stay_distinct() {
        let mut seen = std::collections::HashSet::new();
        let mut n = 0;
        for part in 0..3 {
            for index in 0..2000 {
                for delta in 0..8 {
                    let places = [
                        Place::Inside { part, index, delta },
                        Place::InsideNop { part, index, delta },
                        Place::Beyond { part, index, delta },
                        Place::Bytes {
                            part,
                            offset: u64::from(index) * 8 + delta,
                        },
                    ];
                    for p in places {
                        seen.insert(p.fold_into(0x1234_5678));
                        n += 1;
                    }
                }
                seen.insert(Place::At { part, index }.fold_into(0x1234_5678));
                n += 1;
            }
        }
        assert_eq!(seen.len(), n);
    }

    /// Local references fold into the referring instruction's hash in the
    /// order recorded; a replaced instruction drops its references.
    #[test]
    fn fixups_fold_in_order_and_rehash_drops_them() {
        let build = |targets: &[u64]| {
            let mut n = Normalized::default();
            n.push(0, 1, InsnHasher::default());
            for &t in targets {
                n.local(0, t);
            }
            n.push(1, 1, InsnHasher::default());
            n.push(2, 1, InsnHasher::default());
            n.push(3, 1, InsnHasher::default());
            finish_parts(std::slice::from_mut(&mut n), 0);
            n.insns.iter().map(|i| i.hash).collect::<Vec<_>>()
        };
        assert_eq!(build(&[2, 3]), build(&[2, 3]));
        assert_ne!(build(&[2, 3]), build(&[3, 2]));
        assert_ne!(build(&[2]), build(&[3]));
        let mut n = Normalized::default();
        n.push(0, 1, InsnHasher::default());
        n.local(0, 0);
        n.push(1, 1, InsnHasher::default());
        n.local(0, 1);
        n.push(2, 1, InsnHasher::default());
        n.rehash(1, 42);
        assert_eq!(n.mark(), 1);
        finish_parts(std::slice::from_mut(&mut n), 0);
        assert_eq!(n.insns[1].hash, 42);
    }
}

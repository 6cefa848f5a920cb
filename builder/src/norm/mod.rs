//! Normalisation: decode a function and replace every address-dependent
//! operand with a [`SymRef`], so that two builds of unchanged code compare
//! equal however far it moved.
//!
//! [`normalize_group`] (or [`normalize_part`] for one part alone) turns each
//! part of a function into a stream of [`NormInsn`]: one per instruction,
//! each with its address-independent form, exactly (see below).
//!
//! Anonymous data (string literals, jump tables, constants) is identified by
//! the digest of its block, and the blocks are cut at every address any code
//! refers to. Those addresses are only all known once all code is decoded,
//! so one decode does both jobs:
//!
//! - Against an index not yet finished, a reference to anonymous bytes is a
//!   [`SymRef::Deferred`]: the instruction records only that it has one, and
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
//! # Exact equality
//!
//! An instruction's form is written through [`std::hash::Hash`] into its
//! [`Normalized`] (which is the [`Hasher`] of the instruction being built),
//! but nothing is hashed: every word is kept, in [`Normalized::words`].
//! References to other symbols keep their exact identity in
//! [`Normalized::refs`] (names compared, anonymous blocks by SHA-256), and
//! places in the function's own code in [`Normalized::places`]. Two parts
//! are equal when [`exact_difference`] finds nothing: the same words,
//! references and places, made by the same instructions. No decision rests
//! on a hash, so no crafted collision can make changed code look
//! unchanged.
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
//!   written by its byte offset. The normaliser writes a placeholder and
//!   records the place; once every part of the group is decoded, the place
//!   is converted to a position in the `NOP`-free stream and kept, with the
//!   referring instruction, in the order recorded (see [`Place`]).
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

/// A fast 64-bit hasher: one 128-bit multiply per word.
///
/// It buckets (the [`fingerprint`](crate::index::fingerprint)s that
/// [`SymRef`]s hash by) and nothing more: it is not keyed, so collisions can
/// be crafted, and no decision rests on it (see [`exact_difference`]). A
/// wyhash-style folded multiply gives speed for about a tenth of SipHash's
/// cost, and it is deterministic across runs and machines.
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

/// Cut `bytes` into the little-endian words a hasher takes: whole words,
/// then the remainder with its length in the top bits (so that `"ab"` and
/// `"ab\0"` stay apart).
#[inline]
fn bytes_to_words(bytes: &[u8], mut word: impl FnMut(u64)) {
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        word(u64::from_le_bytes(w));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w.iter_mut().zip(rest).for_each(|(d, s)| *d = *s);
        word(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
    }
}

impl Hasher for InsnHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        bytes_to_words(bytes, |w| self.write_u64(w));
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

/// Implements [`Hasher`] for a type whose field `$words` (a `Vec<u64>`)
/// keeps every word written: integers as one word each, byte strings cut
/// by [`bytes_to_words`]. `finish` is meaningless (nothing is hashed).
macro_rules! word_recorder {
    ($t:ty, $words:ident) => {
        impl Hasher for $t {
            #[inline]
            fn write(&mut self, bytes: &[u8]) {
                bytes_to_words(bytes, |w| self.$words.push(w));
            }

            #[inline]
            fn write_u8(&mut self, i: u8) {
                self.$words.push(u64::from(i));
            }

            #[inline]
            fn write_u16(&mut self, i: u16) {
                self.$words.push(u64::from(i));
            }

            #[inline]
            fn write_u32(&mut self, i: u32) {
                self.$words.push(u64::from(i));
            }

            #[inline]
            fn write_u64(&mut self, i: u64) {
                self.$words.push(i);
            }

            #[inline]
            fn write_u128(&mut self, i: u128) {
                self.$words.push(i as u64);
                self.$words.push((i >> 64) as u64);
            }

            #[inline]
            fn write_usize(&mut self, i: usize) {
                self.$words.push(i as u64);
            }

            /// Nothing is hashed: the words themselves are the form.
            #[inline]
            fn finish(&self) -> u64 {
                0
            }
        }
    };
}

/// A form built apart from the instruction stream (a replacement form for
/// `Normalized::rehash`, the words a jump table adds to its `lea`): every
/// word written is kept, as [`Normalized`] keeps those of the instruction
/// being built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Canon {
    /// Everything written, word by word.
    words: Vec<u64>,
}

word_recorder!(Canon, words);

pub(crate) mod arm64;
pub(crate) mod x86;
pub(crate) mod x86_quick;
mod x86_twin;

/// One normalised instruction (or one opaque datum inside code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormInsn {
    /// Offset from the start of its part, in bytes.
    pub offset: u32,
    /// Length in bytes.
    pub len: u8,
    /// Where the instruction's words start in [`Normalized::words`].
    pub start: u32,
    /// How many words it has.
    pub count: u32,
    /// Whether its form is its bytes alone (an x86-64 instruction with no
    /// address in it and no relocation): the same bytes at the same offset
    /// of another build are the same instruction with the same form.
    pub plain: bool,
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
            let end = start.saturating_add(u64::from(prev.len));
            if offset < end {
                return Place::Inside {
                    part,
                    index: index.saturating_sub(1),
                    delta: offset.saturating_sub(start),
                };
            }
            covered = end;
        }
        let j = nops.partition_point(|n| u64::from(n.offset) <= offset);
        if let Some(nop) = j.checked_sub(1).and_then(|p| nops.get(p)) {
            let start = u64::from(nop.offset);
            let end = start.saturating_add(u64::from(nop.len));
            if offset == start {
                return Place::At { part, index };
            }
            if offset < end {
                return Place::InsideNop {
                    part,
                    index,
                    delta: offset.saturating_sub(start),
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
}

/// An address that an instruction (or a datum in the code) of a part
/// holds, and how it is encoded: what relinking the part's bytes elsewhere
/// must rewrite. Reading the field with `kind` at the part's own address
/// gives `target + addend` (see [`hotpatch_formats::package::RelocKind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrField {
    /// Position in [`Normalized::insns`] of the instruction that holds it.
    pub insn: u32,
    /// Offset of the field in the part (of its instruction, on AArch64).
    pub offset: u32,
    /// How the field encodes its value.
    pub kind: FieldKind,
    /// The address it refers to, in this image.
    pub target: u64,
    /// What the encoding adds to the target (`-4` for an x86 `rel32` that
    /// ends its instruction).
    pub addend: i64,
    /// AArch64: the register an `ADRP` writes, or the base register of an
    /// instruction that adds the low 12 bits to it (a packager pairs them
    /// by register and page).
    pub reg: Option<u8>,
}

/// How an [`AddrField`] encodes its value: a package relocation kind, or a
/// form no relocation can express once the code moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// A kind the package format relinks.
    Reloc(hotpatch_formats::package::RelocKind),
    /// An x86 8-bit branch displacement (`jmp short`): fine inside the
    /// code that moves with it, out of range anywhere else.
    Rel8,
    /// A 32-bit absolute pointer (a 32-bit base relocation).
    Abs32,
    /// An AArch64 use of an `ADRP` page that no relocation kind writes (an
    /// unscaled `LDUR`/`STUR`, an `ADD ..., LSL #12`).
    A64Unsupported,
}

/// A jump table in anonymous read-only data that a part dispatches
/// through: the function owns it, so relinking the function relinks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedTable {
    /// Its address.
    pub rva: u64,
    /// Its entries' fields (offsets from the table's start).
    pub entries: Vec<AddrField>,
    /// Its size in bytes.
    pub size: u64,
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
    /// The exact form of every instruction: the words written to its
    /// [`Canon`] (see [`NormInsn::start`]).
    pub words: Vec<u64>,
    /// Every reference to another symbol or to anonymous data (not into
    /// the group's own code, not deferred), with the position in `insns`
    /// of the instruction that makes it, in the order made.
    pub refs: Vec<(u32, SymRef<'a>)>,
    /// Every reference into the group's own code, as the place it lands,
    /// with the position of the instruction that makes it (filled when the
    /// group is finished).
    pub places: Vec<(u32, Place)>,
    /// Words added to an instruction after it was pushed (what a jump table
    /// in anonymous data adds to its `lea`), with its position.
    pub late: Vec<(u32, u64)>,
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
    /// Every address field of the part's code, in order (what a packager
    /// turns into relocation records).
    pub fields: Vec<AddrField>,
    /// The jump tables in anonymous data the part dispatches through.
    pub owned_tables: Vec<OwnedTable>,
    /// Whether to record [`Normalized::fields`] and
    /// [`Normalized::owned_tables`] (a packager's need; the diff does not
    /// pay for it).
    pub want_fields: bool,
    /// References into the group's code, in instruction order, until
    /// [`finish_parts`] folds them into the hashes.
    fixups: Vec<Fixup>,
    /// Where the words of the instruction being built start in `words`.
    cur_start: usize,
}

impl<'a> Normalized<'a> {
    /// Empty everything, keeping the allocations.
    pub fn clear(&mut self) {
        self.insns.clear();
        self.fields.clear();
        self.owned_tables.clear();
        self.words.clear();
        self.cur_start = 0;
        self.refs.clear();
        self.places.clear();
        self.late.clear();
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

    /// Record that instructions already pushed refer to places of their
    /// own group: `(instruction, part, byte offset)`, each after the
    /// references its instruction already recorded, in the order given.
    /// One merge for all of them, so that late references cost
    /// `O(n)` however many instructions make them.
    pub(crate) fn locals_late(&mut self, late: &[(u32, u32, u64)]) {
        if late.is_empty() {
            return;
        }
        let split = self.fixups.len();
        self.fixups.extend(
            late.iter()
                .map(|&(insn, part, offset)| Fixup { insn, part, offset }),
        );
        let (earlier, added) = self.fixups.split_at(split);
        if !earlier.is_sorted_by_key(|f| f.insn) || !added.is_sorted_by_key(|f| f.insn) {
            // Not each in order (cannot happen): one stable sort.
            self.fixups.sort_by_key(|f| f.insn);
            return;
        }
        // Both runs are in instruction order: merge them, each
        // instruction's earlier references first. Only the earlier
        // references past the first late one move.
        let first = added.first().map_or(u32::MAX, |f| f.insn);
        let from = earlier.partition_point(|f| f.insn <= first);
        let tail = earlier.get(from..).unwrap_or(&[]);
        let mut merged = Vec::with_capacity(tail.len().saturating_add(added.len()));
        let (mut i, mut j) = (0, 0);
        while let (Some(x), Some(y)) = (tail.get(i), added.get(j)) {
            if y.insn < x.insn {
                merged.push(*y);
                j = j.saturating_add(1);
            } else {
                merged.push(*x);
                i = i.saturating_add(1);
            }
        }
        merged.extend_from_slice(tail.get(i..).unwrap_or(&[]));
        merged.extend_from_slice(added.get(j..).unwrap_or(&[]));
        self.fixups.truncate(from);
        self.fixups.extend_from_slice(&merged);
    }

    /// Push the instruction being built, whose address-independent form
    /// has been written to `self` (the [`Hasher`] of the instruction being
    /// built), and start the next one.
    pub(crate) fn push(&mut self, offset: usize, len: usize) {
        self.push_as(offset, len, false);
    }

    /// [`Normalized::push`] for an instruction whose form is its bytes
    /// alone (see [`NormInsn::plain`]).
    #[inline]
    pub(crate) fn push_plain(&mut self, offset: usize, len: usize) {
        self.push_as(offset, len, true);
    }

    #[inline]
    fn push_as(&mut self, offset: usize, len: usize, plain: bool) {
        let start = self.cur_start.min(self.words.len());
        self.insns.push(NormInsn {
            offset: offset as u32,
            len: len.min(255) as u8,
            start: u32::try_from(start).unwrap_or(u32::MAX),
            count: u32::try_from(self.words.len().saturating_sub(start)).unwrap_or(u32::MAX),
            plain,
        });
        self.cur_start = self.words.len();
    }

    /// Push plain instructions taken over from another stream: `insns`,
    /// whose words are `words` (contiguous, in order, starting with the
    /// first one's).
    pub(crate) fn push_plain_run(&mut self, insns: &[NormInsn], words: &[u64]) {
        let Some(first) = insns.first() else {
            return;
        };
        self.discard();
        let base = u32::try_from(self.words.len()).unwrap_or(u32::MAX);
        self.words.extend_from_slice(words);
        self.insns.extend(insns.iter().map(|i| NormInsn {
            start: i.start.wrapping_sub(first.start).wrapping_add(base),
            ..*i
        }));
        self.cur_start = self.words.len();
    }

    /// Forget what was written for the instruction being built.
    pub(crate) fn discard(&mut self) {
        self.words.truncate(self.cur_start);
    }

    /// Record an address field of the instruction about to be pushed, at
    /// byte `offset` of the part.
    #[inline]
    pub(crate) fn field(&mut self, offset: usize, kind: FieldKind, target: u64, addend: i64) {
        self.reg_field(offset, kind, target, addend, None);
    }

    /// [`Normalized::field`] with an AArch64 page register.
    pub(crate) fn reg_field(
        &mut self,
        offset: usize,
        kind: FieldKind,
        target: u64,
        addend: i64,
        reg: Option<u8>,
    ) {
        self.fields.push(AddrField {
            insn: u32::try_from(self.insns.len()).unwrap_or(u32::MAX),
            offset: u32::try_from(offset).unwrap_or(u32::MAX),
            kind,
            target,
            addend,
            reg,
        });
    }

    /// Record that the instruction about to be pushed refers to `r`, which
    /// is neither into the group's own code nor deferred.
    #[inline]
    pub(crate) fn reference(&mut self, r: SymRef<'a>) {
        let at = u32::try_from(self.insns.len()).unwrap_or(u32::MAX);
        self.refs.push((at, r));
    }

    /// The exact words of instruction `insn`.
    pub fn words_of(&self, insn: &NormInsn) -> &[u64] {
        let start = insn.start as usize;
        self.words
            .get(start..start.saturating_add(insn.count as usize))
            .unwrap_or(&[])
    }

    /// Leave a `NOP` of `len` bytes at `offset` out of the stream. It must
    /// not have recorded local references.
    pub(crate) fn push_nop(&mut self, offset: usize, len: usize) {
        self.discard();
        self.nops.push(Skipped {
            offset: offset as u32,
            len: len.min(255) as u8,
        });
    }

    /// Push an opaque token for bytes that are not (decodable) instructions.
    pub(crate) fn push_raw(&mut self, offset: usize, bytes: &[u8]) {
        self.discard();
        (0xffu8, bytes).hash(self);
        self.push(offset, bytes.len());
    }

    /// Replace the forms of instructions already pushed: each
    /// `(offset, form)` of `forms` replaces the instruction at that byte
    /// offset, dropping every reference it recorded. One pass over the
    /// recorded references for all of them.
    pub(crate) fn rehash(&mut self, forms: &[(usize, Canon)]) {
        let mut replaced: Vec<u32> = Vec::with_capacity(forms.len());
        for (offset, c) in forms {
            let k = self
                .insns
                .partition_point(|i| (i.offset as usize) < *offset);
            let start = u32::try_from(self.words.len()).unwrap_or(u32::MAX);
            let Some(insn) = self
                .insns
                .get_mut(k)
                .filter(|i| i.offset as usize == *offset)
            else {
                continue;
            };
            insn.start = start;
            insn.count = u32::try_from(c.words.len()).unwrap_or(u32::MAX);
            self.words.extend_from_slice(&c.words);
            replaced.push(u32::try_from(k).unwrap_or(u32::MAX));
        }
        if replaced.is_empty() {
            return;
        }
        replaced.sort_unstable();
        replaced.dedup();
        let kept = |i: u32| replaced.binary_search(&i).is_err();
        self.refs.retain(|&(i, _)| kept(i));
        self.late.retain(|&(i, _)| kept(i));
        self.fixups.retain(|f| kept(f.insn));
        self.deferred.retain(|d| kept(d.insn));
    }
}

// `Normalized` is the [`Hasher`] of the instruction being built: every
// word written is kept in [`Normalized::words`], its exact form;
// [`Normalized::push`] ends the instruction.
word_recorder!(Normalized<'_>, words);

/// Write a reference into an instruction that is being built: a place in
/// the group's own code is recorded with [`Normalized::local`], an
/// unresolved anonymous one with [`Normalized::defer`], anything else
/// exactly in [`Normalized::refs`]; the instruction's words get a marker of
/// the kind.
#[inline]
pub(crate) fn hash_ref<'a>(r: &SymRef<'a>, out: &mut Normalized<'a>) {
    match *r {
        SymRef::Local { part, offset } => {
            out.local(part, offset);
            out.write_u64(LOCAL_MARK);
        }
        SymRef::Deferred(rva) => {
            out.defer(rva);
            out.write_u64(DEFERRED_MARK);
        }
        _ => {
            out.reference(*r);
            out.write_u64(REF_MARK);
        }
    }
}

/// What [`hash_ref`] hashes for a local reference; the place itself is
/// folded in by [`finish_parts`].
const LOCAL_MARK: u64 = 0x4c4f_4341_4c00_0000;

/// What [`hash_ref`] hashes for a deferred reference.
pub(crate) const DEFERRED_MARK: u64 = 0x4445_4645_5252_4544;

/// What [`hash_ref`] writes for a reference recorded in
/// [`Normalized::refs`].
const REF_MARK: u64 = 0x5245_4600_0000_0000;

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
            let mut places = std::mem::take(&mut cur.places);
            // Almost every reference is into the part itself: index its
            // instruction starts directly.
            let end = cur
                .insns
                .last()
                .map_or(0, |i| (i.offset as usize).saturating_add(1));
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
            for f in &fixups {
                {
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
                    places.push((f.insn, place));
                }
            }
            let mut fixups = fixups;
            fixups.clear();
            if let Some(cur) = parts.get_mut(p) {
                cur.fixups = fixups;
                cur.places = places;
            }
        }
    });
}

/// The position in the streams of the first instruction at which two
/// normalised parts differ exactly, or `None` when they are equal: the
/// same instructions (every word), the same references
/// ([`Normalized::refs`], compared exactly), the same places and the same
/// late words, each made by the same instruction. References not yet
/// resolved ([`Normalized::deferred`]) are compared by the caller once the
/// indexes are finished.
pub fn exact_difference(b: &Normalized<'_>, u: &Normalized<'_>) -> Option<usize> {
    // Equal streams (the common case) cost one comparison of all the
    // words; only a difference is located instruction by instruction.
    // Ranges may leave the stream's order after a `rehash`, but they do so
    // alike in equal streams.
    let same_ranges = b.insns.len() == u.insns.len()
        && b.insns
            .iter()
            .zip(&u.insns)
            .all(|(x, y)| x.start == y.start && x.count == y.count);
    let mut first = if same_ranges && b.words == u.words {
        None
    } else {
        b.insns
            .iter()
            .zip(&u.insns)
            .position(|(x, y)| x.count != y.count || b.words_of(x) != u.words_of(y))
            .or(Some(b.insns.len().min(u.insns.len())))
    };
    let earliest = |first: Option<usize>, at: Option<usize>| match (first, at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    first = earliest(first, list_difference(&b.refs, &u.refs));
    first = earliest(first, list_difference(&b.places, &u.places));
    earliest(first, list_difference(&b.late, &u.late))
}

/// The instruction position of the first element at which two lists of
/// `(position, item)` differ.
fn list_difference<T: PartialEq>(a: &[(u32, T)], b: &[(u32, T)]) -> Option<usize> {
    let i = a.iter().zip(b).position(|(x, y)| x != y);
    let at = match i {
        Some(i) => match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) => x.0.min(y.0),
            _ => return None,
        },
        None if a.len() == b.len() => return None,
        None => {
            let k = a.len().min(b.len());
            a.get(k).or_else(|| b.get(k)).map_or(u32::MAX, |x| x.0)
        }
    };
    Some(at as usize)
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

/// Whether the jump table at `table` in anonymous data, measured at `len`
/// entries before `index` was finished (see [`Normalized::tables`]),
/// measures the same now: what [`table_len`] would say, without walking
/// the entries again.
///
/// Finishing only adds anchors, so a table's block can only end sooner.
/// The first `len` entries were all inside the old limit and all landed in
/// the function; the walk stopped after them because the next one did not
/// land or lay past the old limit, and either still holds. So the measure
/// is unchanged exactly when the new limit still holds `len` entries.
pub fn table_measure_holds(index: &ImageIndex<'_, '_>, table: u64, len: usize) -> bool {
    match index.image.arch {
        Arch::X86_64 => x86::table_room(index, table) >= len,
        Arch::Aarch64 => len == 0,
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
    decode_part_with(index, group, part, None, None, out);
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
    normalize_group_as(index, group, None, out);
}

/// The other build's form of a part and the part's bytes, which the part
/// being normalised may repeat: see [`normalize_group_hinted`].
#[derive(Clone, Copy)]
pub(crate) struct Hint<'h, 'n> {
    /// Its normalised form.
    pub form: &'h Normalized<'n>,
    /// Its bytes.
    pub code: &'h [u8],
}

/// [`normalize_group`], given the same function of the other build
/// (group `hint_group` of `hint_index`) already normalised (`hint`, part by
/// part): code that repeats the other build's bytes is taken over without
/// decoding where that gives the same form (see [`NormInsn::plain`]). The
/// result is exactly that of [`normalize_group`]; a hint only saves work,
/// however well it fits.
pub fn normalize_group_hinted<'a>(
    index: &'a ImageIndex<'_, '_>,
    group: usize,
    hint_index: &ImageIndex<'_, '_>,
    hint_group: usize,
    hint: &[Normalized<'_>],
    out: &mut Vec<Normalized<'a>>,
) {
    normalize_group_as(index, group, Some((hint_index, hint_group, hint)), out);
}

/// [`normalize_group`] with an optional hint (see
/// [`normalize_group_hinted`]).
fn normalize_group_as<'a>(
    index: &'a ImageIndex<'_, '_>,
    group: usize,
    hint: Option<(&ImageIndex<'_, '_>, usize, &[Normalized<'_>])>,
    out: &mut Vec<Normalized<'a>>,
) {
    let n = index.parts(group).len();
    out.truncate(n);
    out.resize_with(n, Normalized::default);
    for (p, o) in out.iter_mut().enumerate() {
        o.clear();
        let part_hint = hint.and_then(|(idx, g, forms)| {
            let part = idx.parts(g).get(p)?;
            Some(Hint {
                form: forms.get(p)?,
                code: idx.image.bytes_at(part.rva, part.size)?,
            })
        });
        decode_part_with(index, group, p, None, part_hint, o);
    }
    finish_parts(out, 0);
}

/// A reference to anonymous bytes not yet in a block, made at the same
/// place of two builds of a function that [`same_code`] found the same: it
/// holds if both addresses resolve alike once the indexes are finished
/// (what [`Normalized::deferred`] of two equal streams leaves to compare).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SameDeferred {
    /// The part.
    pub part: u32,
    /// Position of the referring instruction in the part's stream.
    pub insn: u32,
    /// Its byte offset in the part (the same in both builds).
    pub offset: u32,
    /// The addresses referred to: baseline, update.
    pub rvas: (u64, u64),
}

/// Whether group `bg` of `base` and group `ug` of `upd` are the same
/// code laid out alike: the same instructions at the same offsets of the
/// same parts, whose references are the same (see `x86_twin`). Then
/// [`normalize_group`] would make equal streams of both, and this found
/// out without making them: `bn` and `un` get, per part, only what the
/// streams would have recorded besides the code (the
/// [`Normalized::anchors`], [`Normalized::data_refs`],
/// [`Normalized::fn_refs`] and [`Normalized::tables`]), and `deferred` the
/// references to anonymous bytes left to compare once the indexes are
/// finished, in stream order.
///
/// `false` means "not known to be" (changed code, another layout,
/// relocations, a jump table inside the code, bytes that do not decode,
/// AArch64): normalise both groups. The answer is never "the same" where
/// the streams would differ.
pub fn same_code<'a>(
    base: &'a ImageIndex<'_, '_>,
    bg: usize,
    upd: &'a ImageIndex<'_, '_>,
    ug: usize,
    bn: &mut Vec<Normalized<'a>>,
    un: &mut Vec<Normalized<'a>>,
    deferred: &mut Vec<SameDeferred>,
) -> bool {
    deferred.clear();
    if base.image.arch != Arch::X86_64 || upd.image.arch != Arch::X86_64 {
        return false;
    }
    let (bparts, uparts) = (base.parts(bg), upd.parts(ug));
    if bparts.len() != uparts.len() {
        return false;
    }
    for out in [&mut *bn, &mut *un] {
        out.truncate(bparts.len());
        out.resize_with(bparts.len(), Normalized::default);
        out.iter_mut().for_each(Normalized::clear);
    }
    for (p, ((bp, up), (bo, uo))) in bparts
        .iter()
        .zip(uparts)
        .zip(bn.iter_mut().zip(un.iter_mut()))
        .enumerate()
    {
        if bp.size != up.size
            || !base.relocations_in(bp.rva, bp.size).is_empty()
            || !upd.relocations_in(up.rva, up.size).is_empty()
        {
            return false;
        }
        let (Some(bcode), Some(ucode)) = (
            base.image.bytes_at(bp.rva, bp.size),
            upd.image.bytes_at(up.rva, up.size),
        ) else {
            return false;
        };
        let part = u32::try_from(p).unwrap_or(u32::MAX);
        let side = |index, group, rva, code, out| x86_twin::Side {
            scope: Scope {
                index,
                group,
                part,
                rva,
                len: bp.size,
            },
            code,
            out,
            tables: Vec::new(),
        };
        if !x86_twin::same_part(
            side(base, bg, bp.rva, bcode, bo),
            side(upd, ug, up.rva, ucode, uo),
            deferred,
        ) {
            return false;
        }
    }
    true
}

/// [`normalize_group`], also recording every address field and owned jump
/// table ([`Normalized::fields`], [`Normalized::owned_tables`]): what a
/// packager needs to relink the function's code elsewhere.
pub fn normalize_group_with_fields<'a>(
    index: &'a ImageIndex<'_, '_>,
    group: usize,
) -> Vec<Normalized<'a>> {
    let n = index.parts(group).len();
    let mut out: Vec<Normalized<'a>> = (0..n)
        .map(|_| Normalized {
            want_fields: true,
            ..Normalized::default()
        })
        .collect();
    for (p, o) in out.iter_mut().enumerate() {
        decode_part_with(index, group, p, None, None, o);
    }
    finish_parts(&mut out, 0);
    out
}

/// [`normalize_group`], with some parts' code replaced: `patched` lists
/// `(part, code)` to normalise instead of the image's bytes (at the same
/// address, of the same length). What a comparison "as if only these bytes
/// differed" needs (see [`crate::lines`]).
pub fn normalize_group_patched<'a>(
    index: &'a ImageIndex<'_, '_>,
    group: usize,
    patched: &[(usize, Vec<u8>)],
    out: &mut Vec<Normalized<'a>>,
) {
    let n = index.parts(group).len();
    out.truncate(n);
    out.resize_with(n, Normalized::default);
    for (p, o) in out.iter_mut().enumerate() {
        o.clear();
        let code = patched
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, c)| c.as_slice());
        decode_part_with(index, group, p, code, None, o);
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

/// Decode and hash one part, leaving its local references pending: from
/// `code` instead of the image's bytes when given (it must have the part's
/// length), with the other build's form of the part as a `hint` when given
/// (see [`normalize_group_hinted`]).
fn decode_part_with<'a>(
    index: &'a ImageIndex<'_, '_>,
    group: usize,
    part: usize,
    code: Option<&[u8]>,
    hint: Option<Hint<'_, '_>>,
    out: &mut Normalized<'a>,
) {
    let Some(p) = index.parts(group).get(part) else {
        return;
    };
    let code = code
        .filter(|c| c.len() as u64 == p.size)
        .or_else(|| index.image.bytes_at(p.rva, p.size));
    let Some(code) = code else {
        // Not file-backed (should not happen for code): compare by size.
        out.push_raw(0, &p.size.to_le_bytes());
        return;
    };
    // About one instruction in five or six refers to its own function (one
    // per 22 to 25 bytes of generated GCC code): one allocation, not a
    // string of reallocations.
    out.fixups.reserve(code.len() / 16);
    // About three words per x86 instruction of four bytes, one per AArch64
    // word.
    out.words.reserve(code.len());
    let scope = Scope {
        index,
        group,
        part: u32::try_from(part).unwrap_or(u32::MAX),
        rva: p.rva,
        len: code.len() as u64,
    };
    match index.image.arch {
        Arch::X86_64 => x86::normalize(scope, code, hint, out),
        Arch::Aarch64 => arm64::normalize(scope, code, out),
    }
}

#[cfg(test)]
impl Normalized<'_> {
    /// One digest per instruction of its exact form (its words, and the
    /// references, places and late words it makes), for tests that compare
    /// streams instruction by instruction.
    pub(crate) fn insn_digests(&self) -> Vec<u64> {
        let mut h: Vec<InsnHasher> = self
            .insns
            .iter()
            .map(|i| {
                let mut h = InsnHasher::default();
                self.words_of(i).hash(&mut h);
                h
            })
            .collect();
        for (at, r) in &self.refs {
            if let Some(h) = h.get_mut(*at as usize) {
                (1u8, r).hash(h);
            }
        }
        for (at, p) in &self.places {
            if let Some(h) = h.get_mut(*at as usize) {
                (2u8, p).hash(h);
            }
        }
        for (at, w) in &self.late {
            if let Some(h) = h.get_mut(*at as usize) {
                (3u8, w).hash(h);
            }
        }
        h.iter().map(Hasher::finish).collect()
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
                    start: 0,
                    count: 0,
                    plain: false,
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

    /// Local references are kept as places with the referring instruction,
    /// in the order recorded; a replaced instruction drops its references.
    #[test]
    fn fixups_fold_in_order_and_rehash_drops_them() {
        let build = |targets: &[u64]| {
            let mut n = Normalized::default();
            n.push(0, 1);
            for &t in targets {
                n.local(0, t);
            }
            n.push(1, 1);
            n.push(2, 1);
            n.push(3, 1);
            finish_parts(std::slice::from_mut(&mut n), 0);
            n
        };
        let hashes = |n: &Normalized<'_>| n.insn_digests();
        assert_eq!(hashes(&build(&[2, 3])), hashes(&build(&[2, 3])));
        assert_eq!(exact_difference(&build(&[2, 3]), &build(&[2, 3])), None);
        assert_ne!(hashes(&build(&[2, 3])), hashes(&build(&[3, 2])));
        assert_eq!(exact_difference(&build(&[2, 3]), &build(&[3, 2])), Some(1));
        assert_ne!(hashes(&build(&[2])), hashes(&build(&[3])));
        assert_eq!(
            build(&[2, 3]).places,
            [
                (1, Place::At { part: 0, index: 2 }),
                (1, Place::At { part: 0, index: 3 })
            ]
        );
        let mut n = Normalized::default();
        n.push(0, 1);
        n.local(0, 0);
        n.push(1, 1);
        n.local(0, 1);
        n.push(2, 1);
        let mut form = Canon::default();
        form.write_u64(42);
        n.rehash(&[(1, form.clone())]);
        assert_eq!((n.fixups.len(), n.refs.len(), n.deferred.len()), (1, 0, 0));
        finish_parts(std::slice::from_mut(&mut n), 0);
        assert_eq!(n.words_of(&n.insns[1]), [42]);
        assert!(n.places.iter().all(|&(at, _)| at != 1));
    }

    /// Everything a normalised part holds that a comparison reads.
    type PartView<'a> = (
        &'a [NormInsn],
        &'a [u64],
        &'a [(u32, SymRef<'a>)],
        &'a [(u32, Place)],
        &'a [(u32, u64)],
        &'a [Skipped],
        &'a [Deferred],
        &'a [u64],
        &'a [(u64, usize)],
    );

    /// The [`PartView`] of every part.
    fn parts_view<'a>(n: &'a [Normalized<'a>]) -> Vec<PartView<'a>> {
        n.iter()
            .map(|p| {
                (
                    &p.insns[..],
                    &p.words[..],
                    &p.refs[..],
                    &p.places[..],
                    &p.late[..],
                    &p.nops[..],
                    &p.deferred[..],
                    &p.anchors[..],
                    &p.tables[..],
                )
            })
            .collect()
    }

    /// A hint only saves work: on real compiler output (x86-64, ELF and
    /// PE), every updated function normalised with its baseline as the
    /// hint, and with an unrelated function's form as the hint, is exactly
    /// what normalising it alone gives; and the hint really is taken.
    #[test]
    fn hinted_normalisation_is_exactly_normalisation() {
        use crate::testutil::{corpus, corpus_file, read};
        let mut scenarios: Vec<String> = std::fs::read_dir(corpus())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.as_bytes().first().is_some_and(u8::is_ascii_digit))
            .collect();
        scenarios.sort();
        assert!(scenarios.len() > 10);
        let mut taken = 0usize;
        for target in ["x86_64-linux", "x86_64-windows"] {
            for scenario in &scenarios {
                if !corpus_file(scenario, target, "v2").exists() {
                    continue;
                }
                let (bb, bo) = read(&corpus_file(scenario, target, "v1"));
                let (ub, uo) = read(&corpus_file(scenario, target, "v2"));
                let base_image = hotpatch_formats::read::parse(&bb, &bo).unwrap();
                let upd_image = hotpatch_formats::read::parse(&ub, &uo).unwrap();
                let base = crate::diff::index(&base_image);
                let upd = crate::diff::index(&upd_image);
                let groups = upd.groups.len();
                assert!(groups > 0, "{scenario} {target}");
                for ug in 0..groups {
                    let key = upd.key(ug);
                    let Some(bg) = (0..base.groups.len()).find(|&g| base.key(g) == key) else {
                        continue;
                    };
                    let (mut hint, mut plain, mut hinted, mut other) =
                        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                    normalize_group(&base, bg, &mut hint);
                    normalize_group(&upd, ug, &mut plain);
                    normalize_group_hinted(&upd, ug, &base, bg, &hint, &mut hinted);
                    assert_eq!(
                        parts_view(&plain),
                        parts_view(&hinted),
                        "{scenario} {target} {key}"
                    );
                    let mut unrelated = Vec::new();
                    let other_g = (bg + 1) % base.groups.len();
                    normalize_group(&base, other_g, &mut unrelated);
                    normalize_group_hinted(&upd, ug, &base, other_g, &unrelated, &mut other);
                    assert_eq!(
                        parts_view(&plain),
                        parts_view(&other),
                        "{scenario} {target} {key}"
                    );
                    taken += plain
                        .iter()
                        .zip(&hint)
                        .map(|(p, h)| {
                            p.insns
                                .iter()
                                .filter(|i| {
                                    i.plain
                                        && h.insns.iter().any(|j| j.plain && j.offset == i.offset)
                                })
                                .count()
                        })
                        .sum::<usize>();
                }
            }
        }
        assert!(taken > 100, "the hint was taken {taken} times");
    }

    /// Two instruction forms chosen so that the fast 64-bit fold collides
    /// (the state after `[a, b]` equals the state after `[a', b']` when
    /// `b' = b ^ s(a) ^ s(a')`), as the old engine's per-instruction hash
    /// did: the exact comparison still tells them apart.
    #[test]
    fn crafted_fold_collision_is_found_by_the_exact_comparison() {
        let after = |words: &[u64]| {
            let mut n = Normalized::default();
            for &w in words {
                n.write_u64(w);
            }
            n.push(0, 4);
            n
        };
        let fast = |words: &[u64]| {
            let mut h = InsnHasher::default();
            for &w in words {
                h.write_u64(w);
            }
            h.finish()
        };
        // The state after one word, with the hasher's own step.
        let state = |a: u64| fold(a ^ MUL_A, MUL_B);
        let (a, b, a2) = (1u64, 7u64, 2u64);
        let b2 = b ^ state(a) ^ state(a2);
        assert_eq!(fast(&[a, b]), fast(&[a2, b2]), "the fold collides");
        let (p, q) = (after(&[a, b]), after(&[a2, b2]));
        assert_eq!(exact_difference(&p, &q), Some(0));
        assert_eq!(exact_difference(&p, &p.clone()), None);
    }

    /// References compare exactly, by position: the same instructions with
    /// references in other instructions, or other references, differ.
    #[test]
    fn references_and_late_words_compare_by_position() {
        let two = |late_at: u32| {
            let mut n = Normalized::default();
            n.push(0, 1);
            n.push(1, 1);
            n.late.push((late_at, 9));
            n
        };
        assert_eq!(exact_difference(&two(0), &two(0)), None);
        assert_eq!(exact_difference(&two(0), &two(1)), Some(0));
        let mut extra = two(1);
        extra.late.push((1, 10));
        assert_eq!(exact_difference(&two(1), &extra), Some(1));
    }
}

//! Per-image index: functions grouped by [`Key`], data objects, relocations,
//! and the anonymous data blocks between them, so that any address the code
//! refers to can be turned into an address-independent [`SymRef`].

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use hotpatch_formats::{Arch, DataObject, Image, RelocTarget, Relocation, Visibility};
use rayon::prelude::*;

use crate::key::{is_split_part, split_clone, unit_stem, Key};

/// One symbol of a function group: the function itself, or one of its GCC
/// clones or split parts.
#[derive(Clone, Debug)]
pub struct Part<'i> {
    /// The clone signature (`""` for the plain function, `"cold"`, `"isra"`, ...).
    pub signature: Cow<'i, str>,
    /// The full symbol name.
    pub symbol: &'i str,
    /// RVA of the first byte.
    pub rva: u64,
    /// Size in bytes.
    pub size: u64,
    /// Whether callers can enter here (every part but a `.cold` split).
    pub entry: bool,
}

/// A source-level function: every symbol whose name folds to one [`Key`].
/// Its parts are [`ImageIndex::parts`].
#[derive(Clone, Debug)]
pub struct Group<'i> {
    /// The key.
    pub key: Key<'i>,
    /// Other names of the same function: symbols at the same address with
    /// the same size (see `fold_aliases`), sorted.
    pub aliases: Vec<Key<'i>>,
    /// Whether its name is only its address: a function of a stripped image
    /// that the reader named `sub_<rva>` (no exported symbol starts there).
    /// Such a name says nothing across builds, so the function is never
    /// matched by it, and references to it are [`SymRef::Unnamed`].
    pub unnamed: bool,
    /// For an unnamed group: what references to it are (see
    /// [`SymRef::Unnamed`] and [`ImageIndex::set_identity`]).
    identity: u64,
    /// Where its parts lie in the index's flat list of parts.
    first: u32,
    /// How many parts it has.
    count: u32,
}

/// A data object with its key.
#[derive(Clone, Debug)]
pub struct DataEntry<'i> {
    /// The key.
    pub key: Key<'i>,
    /// Other names of the same object (same address, same size), sorted.
    pub aliases: Vec<Key<'i>>,
    /// Index into [`Image::data`].
    pub object: usize,
}

/// An address-independent reference.
///
/// Two instructions of two builds that refer to "the same thing" produce equal
/// `SymRef`s, however far that thing moved.
///
/// Hashing one reads no names: functions and data objects hash by their
/// [`fingerprint`], which the index computes once per symbol. Equality is
/// exact: it compares the keys themselves (after the fingerprints, which
/// settle almost every inequality without reading a name), and anonymous
/// blocks by their SHA-256 digest.
#[derive(Clone, Copy, Debug)]
pub enum SymRef<'a> {
    /// Inside the function being normalised: which part, and the offset in it.
    Local {
        /// Index of the part in its group (parts are sorted by signature, so
        /// this is stable across builds when the parts are the same).
        part: u32,
        /// Offset from the part's start.
        offset: u64,
    },
    /// Another function: its key, the part's clone signature, and the offset.
    Function {
        /// The function's key.
        key: &'a Key<'a>,
        /// The clone signature of the part referred to (borrowed as it is
        /// stored, so that making the reference reads nothing).
        part: &'a Cow<'a, str>,
        /// Offset from the part's start.
        offset: u64,
        /// Digest of `key` and `part` (see [`fingerprint`]), which is what
        /// hashing a `SymRef` reads instead of the names.
        fingerprint: u64,
    },
    /// Another function whose name is only its address
    /// ([`Group::unnamed`]). It is identified by what the diff's structural
    /// matching made of it ([`ImageIndex::set_identity`]): a matched pair
    /// shares one identity in both builds, and a function left unmatched
    /// has one that nothing in the other build has. Until the diff sets
    /// them, every unnamed function has the same identity
    /// ([`UNASSIGNED`]): a placeholder, which is what structural
    /// fingerprints want. Equality reads the identity and the offset only.
    Unnamed {
        /// The group in its own index (not compared: it is an address).
        group: u32,
        /// Offset from the start of its (only) part.
        offset: u64,
        /// Its identity (see above).
        identity: u64,
    },
    /// A named data object and the offset in it.
    Data {
        /// The object's key.
        key: &'a Key<'a>,
        /// Offset from the object's start.
        offset: u64,
        /// Digest of `key` (see [`fingerprint`]).
        fingerprint: u64,
    },
    /// Anonymous bytes (string literal, jump table, literal pool, constant):
    /// identified by the digest of the block's normalised contents.
    Anon {
        /// SHA-256 of the block's contents, pointers normalised (computed
        /// by the index when first needed; see [`BlockDigest`]).
        digest: &'a BlockDigest,
        /// Offset from the block's start.
        offset: u64,
    },
    /// A symbol the dynamic loader resolves (ELF `GLOB_DAT`/absolute
    /// relocations against a symbol), with its addend.
    External {
        /// The symbol name.
        name: &'a str,
        /// The addend.
        addend: i64,
    },
    /// An address outside every mapped section. It cannot be made
    /// address-independent, so it compares by value.
    Unmapped(u64),
    /// Anonymous bytes at this RVA, met before the anonymous blocks are
    /// fixed ([`ImageIndex::finish`]). The normalisers hash only the fact that
    /// there is one and record the RVA (see
    /// [`Normalized::deferred`](crate::norm::Normalized::deferred)); the
    /// diff resolves it to [`SymRef::Anon`] once every block is known.
    Deferred(u64),
}

impl Hash for SymRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match *self {
            SymRef::Local { part, offset } => (0u8, part, offset).hash(h),
            SymRef::Function {
                fingerprint,
                offset,
                ..
            } => (1u8, fingerprint, offset).hash(h),
            SymRef::Data {
                fingerprint,
                offset,
                ..
            } => (2u8, fingerprint, offset).hash(h),
            SymRef::Anon { digest, offset } => (3u8, digest.short(), offset).hash(h),
            SymRef::External { name, addend } => (4u8, name, addend).hash(h),
            SymRef::Unmapped(rva) => (5u8, rva).hash(h),
            SymRef::Deferred(rva) => (6u8, rva).hash(h),
            SymRef::Unnamed {
                identity, offset, ..
            } => (7u8, identity, offset).hash(h),
        }
    }
}

impl PartialEq for SymRef<'_> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        match (*self, *other) {
            (SymRef::Local { part: a, offset: x }, SymRef::Local { part: b, offset: y }) => {
                a == b && x == y
            }
            (
                SymRef::Function {
                    key: ka,
                    part: pa,
                    offset: x,
                    fingerprint: fa,
                },
                SymRef::Function {
                    key: kb,
                    part: pb,
                    offset: y,
                    fingerprint: fb,
                },
            ) => fa == fb && x == y && ka == kb && pa == pb,
            (
                SymRef::Data {
                    key: ka,
                    offset: x,
                    fingerprint: fa,
                },
                SymRef::Data {
                    key: kb,
                    offset: y,
                    fingerprint: fb,
                },
            ) => fa == fb && x == y && ka == kb,
            (
                SymRef::Anon {
                    digest: a,
                    offset: x,
                },
                SymRef::Anon {
                    digest: b,
                    offset: y,
                },
            ) => x == y && a == b,
            (SymRef::External { name: a, addend: x }, SymRef::External { name: b, addend: y }) => {
                x == y && a == b
            }
            (SymRef::Unmapped(a), SymRef::Unmapped(b)) => a == b,
            (SymRef::Deferred(a), SymRef::Deferred(b)) => a == b,
            (
                SymRef::Unnamed {
                    identity: a,
                    offset: x,
                    ..
                },
                SymRef::Unnamed {
                    identity: b,
                    offset: y,
                    ..
                },
            ) => a == b && x == y,
            _ => false,
        }
    }
}

impl Eq for SymRef<'_> {}

/// The identity of every unnamed function until the diff sets them
/// ([`ImageIndex::set_identity`]).
pub const UNASSIGNED: u64 = u64::MAX;

/// The SHA-256 digest of an anonymous block's normalised contents: what
/// makes two anonymous references equal. A collision-resistant digest, not
/// a fast hash, because "equal" here decides that code is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockDigest(pub [u8; 32]);

impl BlockDigest {
    /// The digest of nothing: what a block that cannot be read resolves to.
    pub const NONE: BlockDigest = BlockDigest([0; 32]);

    /// The first eight bytes, for hashing.
    pub fn short(&self) -> u64 {
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        u64::from_le_bytes([a, b, c, d, e, f, g, h])
    }
}

/// A [`Hasher`] that feeds SHA-256: the `Hash` encodings of what is written
/// (length-prefixed slices, `0xff`-terminated strings, fixed-width
/// integers) go in byte for byte, so the digest identifies them.
struct Sha256Writer(sha2::Sha256);

impl Hasher for Sha256Writer {
    fn write(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }

    fn finish(&self) -> u64 {
        // Only the full digest is ever used (see `Sha256Writer::digest`).
        0
    }
}

impl Sha256Writer {
    fn digest(self) -> BlockDigest {
        BlockDigest(sha2::Digest::finalize(self.0).into())
    }
}

/// The digest of a function part's or data object's identity: its key and
/// (for functions) the part's clone signature. Equal identities give equal
/// fingerprints in any image, so [`SymRef`]s hash without reading names.
pub fn fingerprint(key: &Key<'_>, part: Option<&str>) -> u64 {
    let mut h = crate::norm::InsnHasher::default();
    (key, part).hash(&mut h);
    h.finish()
}

impl SymRef<'_> {
    /// Whether this is anonymous bytes, resolved or not yet.
    pub fn is_anon(&self) -> bool {
        matches!(self, SymRef::Anon { .. } | SymRef::Deferred(_))
    }
}

/// A resolved anonymous block: `[start, end)` and its initialised bytes.
#[derive(Clone, Copy, Debug)]
pub struct Block<'d> {
    /// RVA of the first byte.
    pub start: u64,
    /// RVA one past the last byte.
    pub end: u64,
    /// The file-backed bytes of the block (shorter than the block for `.bss`).
    pub bytes: &'d [u8],
    /// Whether the block lies in executable memory.
    pub executable: bool,
    /// Whether the block lies in writable memory (after relocation).
    pub writable: bool,
}

/// Something with a start address, kept in a [`Sorted`] list.
trait Start {
    /// The address the list is sorted by.
    fn start(&self) -> u64;
}

impl Start for u64 {
    fn start(&self) -> u64 {
        *self
    }
}

impl Start for Relocation {
    fn start(&self) -> u64 {
        self.rva
    }
}

/// A table of buckets over a list sorted by start address, so that "how
/// many start at or below `rva`" costs one or two cache lines instead of a
/// binary search over the whole list (resolving addresses is the
/// normalisers' inner loop).
#[derive(Debug, Default)]
struct Buckets {
    /// The first start.
    base: u64,
    /// log2 of a bucket's width in bytes.
    shift: u32,
    /// For bucket `k` (starts from `base + (k << shift)`), the index of the
    /// first item that starts in it or after it.
    table: Vec<u32>,
}

impl Buckets {
    /// Buckets over `items`, sorted by start.
    fn new<T: Start>(items: &[T]) -> Self {
        let (Some(base), Some(last)) = (items.first().map(T::start), items.last().map(T::start))
        else {
            return Buckets::default();
        };
        // About one item per bucket.
        let span = last.wrapping_sub(base);
        let mut shift = 0u32;
        while shift < 63 && (span >> shift) as usize >= items.len() {
            shift = shift.saturating_add(1);
        }
        let count = ((span >> shift) as usize).saturating_add(2);
        let mut table = Vec::with_capacity(count);
        let mut i = 0usize;
        for k in 0..count as u128 {
            // Wide arithmetic: the last buckets may begin past `u64::MAX`.
            let begin = u128::from(base).saturating_add(k << shift);
            while items.get(i).is_some_and(|x| u128::from(x.start()) < begin) {
                i = i.saturating_add(1);
            }
            table.push(u32::try_from(i).unwrap_or(u32::MAX));
        }
        Buckets { base, shift, table }
    }

    /// How many of `items` (those the buckets were made from) start at or
    /// below `rva`.
    #[inline]
    fn upto<T: Start>(&self, items: &[T], rva: u64) -> usize {
        if rva < self.base || items.is_empty() {
            return 0;
        }
        let k = (rva.wrapping_sub(self.base) >> self.shift) as usize;
        let (Some(&lo), Some(&hi)) = (self.table.get(k), self.table.get(k.saturating_add(1)))
        else {
            return items.len();
        };
        let (lo, hi) = (lo as usize, (hi as usize).min(items.len()));
        lo.saturating_add(
            items
                .get(lo..hi)
                .map_or(0, |s| s.partition_point(|x| x.start() <= rva)),
        )
    }

    /// How many of `items` start below `rva`.
    #[inline]
    fn below<T: Start>(&self, items: &[T], rva: u64) -> usize {
        rva.checked_sub(1).map_or(0, |r| self.upto(items, r))
    }
}

/// Items sorted by start address, with their [`Buckets`].
#[derive(Debug)]
struct Sorted<T> {
    /// The items, sorted by start (equal starts allowed).
    items: Vec<T>,
    /// Buckets over `items`.
    buckets: Buckets,
}

impl<T> Default for Sorted<T> {
    fn default() -> Self {
        Sorted {
            items: Vec::new(),
            buckets: Buckets::default(),
        }
    }
}

impl<T: Start> Sorted<T> {
    /// Index `items`, sorted by start.
    fn new(items: Vec<T>) -> Self {
        let buckets = Buckets::new(&items);
        Sorted { items, buckets }
    }

    /// How many items start at or below `rva`.
    #[inline]
    fn upto(&self, rva: u64) -> usize {
        self.buckets.upto(&self.items, rva)
    }

    /// The last of the (at most `back`) items starting at or below `rva`
    /// that `covers` accepts, searching backwards.
    #[inline]
    fn find_back(&self, rva: u64, back: usize, covers: impl Fn(&T) -> bool) -> Option<&T> {
        let i = self.upto(rva);
        self.items
            .get(i.saturating_sub(back)..i)?
            .iter()
            .rev()
            .find(|x| covers(x))
    }
}

/// A function part's extent.
#[derive(Clone, Copy, Debug)]
struct Range {
    /// Its first byte.
    start: u64,
    /// One past its last byte.
    end: u64,
    /// Its [`fingerprint`].
    fingerprint: u64,
    /// Its group.
    group: u32,
    /// Its position in the index's flat list of parts.
    flat: u32,
    /// Whether its group is unnamed ([`Group::unnamed`]), kept here so
    /// that resolving a reference to a named function reads no group.
    unnamed: bool,
}

impl Start for Range {
    fn start(&self) -> u64 {
        self.start
    }
}

/// A data object's extent.
#[derive(Clone, Copy, Debug)]
struct DataRange {
    /// Its first byte.
    start: u64,
    /// One past its last byte.
    end: u64,
    /// Its [`fingerprint`].
    fingerprint: u64,
    /// Its index in [`ImageIndex::data`].
    entry: usize,
}

impl Start for DataRange {
    fn start(&self) -> u64 {
        self.start
    }
}

/// The index of one image. Build it with [`ImageIndex::new`], add the anchors
/// that code refers to with [`ImageIndex::finish`], then resolve addresses.
#[derive(Debug)]
pub struct ImageIndex<'i, 'd> {
    /// The image.
    pub image: &'i Image<'d>,
    /// Function groups, sorted by key.
    pub groups: Vec<Group<'i>>,
    /// Every group's parts, group after group, each group's sorted by
    /// signature then RVA.
    parts: Vec<Part<'i>>,
    /// Data objects with their keys, sorted by key.
    pub data: Vec<DataEntry<'i>>,
    /// The function parts' extents.
    ranges: Sorted<Range>,
    /// The data objects' extents.
    data_ranges: Sorted<DataRange>,
    /// Starts and ends of everything named (sections, functions, data,
    /// linker pieces, relocation targets), sorted and deduplicated: the
    /// anchors known before any code is decoded.
    named: Sorted<u64>,
    /// The anonymous blocks, once [`ImageIndex::finish`] has fixed them.
    blocks: OnceLock<Blocks>,
    /// Buckets over the image's relocations (sorted by RVA).
    relocs: Buckets,
    /// [`ImageIndex::block_with_digest`]'s table, built on first use.
    by_digest: OnceLock<std::collections::HashMap<BlockDigest, u64>>,
    /// [`ImageIndex::import_stub`]'s table, built on first use.
    stubs: OnceLock<std::collections::HashMap<String, u64>>,
    /// [`ImageIndex::slot_holding`]'s table, built on first use.
    slots: OnceLock<Vec<(u64, SymRefKey)>>,
}

/// What a pointer slot holds, by name (comparable across indexes): a
/// function or data object and offset, an import, or an address.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SymRefKey {
    /// A function part (key text, signature) and offset.
    Function(String, String, u64),
    /// A data object (key text) and offset.
    Data(String, u64),
    /// An import and addend.
    External(String, i64),
    /// Anything else, by address.
    Other(String),
}

impl SymRefKey {
    fn of(r: &SymRef<'_>) -> Self {
        match *r {
            SymRef::Function {
                key, part, offset, ..
            } => SymRefKey::Function(key.to_string(), part.to_string(), offset),
            SymRef::Data { key, offset, .. } => SymRefKey::Data(key.to_string(), offset),
            SymRef::External { name, addend } => SymRefKey::External(name.to_string(), addend),
            ref other => SymRefKey::Other(format!("{other:?}")),
        }
    }
}

/// The anonymous blocks of a finished index.
#[derive(Debug)]
struct Blocks {
    /// Starts of anonymous blocks and of everything named, so that a block
    /// ends where the next thing starts (sorted, deduplicated).
    anchors: Sorted<u64>,
    /// Digest of the block at each anchor ([`BlockDigest::NONE`] where
    /// none starts), computed when first asked for: few blocks are ever
    /// compared.
    digests: Vec<OnceLock<BlockDigest>>,
}

/// The order of `items` under `cmp`, which must order first by `name`
/// (bytewise). Most comparisons are settled by the names' first sixteen
/// bytes, compared as one number, without touching the items.
fn sorted_order<T>(
    items: &[T],
    name: impl Fn(&T) -> &str,
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> Vec<u32> {
    let mut order: Vec<(u128, u32)> = items
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let mut prefix = [0u8; 16];
            let n = name(x).as_bytes();
            for (p, b) in prefix.iter_mut().zip(n) {
                *p = *b;
            }
            (u128::from_be_bytes(prefix), i as u32)
        })
        .collect();
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0).then_with(
            || match (items.get(a.1 as usize), items.get(b.1 as usize)) {
                (Some(x), Some(y)) => cmp(x, y),
                _ => a.1.cmp(&b.1),
            },
        )
    });
    order.into_iter().map(|(_, i)| i).collect()
}

/// The key of a symbol: local symbols carry their unit's stem.
fn key_for<'i>(name: &'i str, unit: Option<&'i str>, visibility: Visibility) -> Key<'i> {
    Key {
        name,
        unit: match visibility {
            Visibility::Local => unit.map(unit_stem),
            _ => None,
        },
    }
}

/// The slot an x86-64 stub at `rva` (bytes `code`) jumps through:
/// `[endbr64] [bnd] [rex] jmp qword ptr [rip+disp32]`.
fn x86_stub_slot(rva: u64, code: &[u8]) -> Option<u64> {
    let mut at = 0usize;
    if code.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
        at = 4;
    }
    if code.get(at) == Some(&0xf2) {
        at = at.saturating_add(1);
    }
    if code.get(at).is_some_and(|b| b & 0xf0 == 0x40) {
        at = at.saturating_add(1);
    }
    if code.get(at..at.saturating_add(2)) != Some(&[0xff, 0x25]) {
        return None;
    }
    let disp = code.get(at.saturating_add(2)..at.saturating_add(6))?;
    let disp = i32::from_le_bytes(disp.try_into().ok()?);
    let next = rva.wrapping_add(at.saturating_add(6) as u64);
    Some(next.wrapping_add_signed(i64::from(disp)))
}

/// What an AArch64 stub forwards through.
enum Arm64Stub {
    /// A PLT entry or import thunk: the pointer slot it loads.
    Slot(u64),
    /// A range-extension veneer: the address it branches to.
    Veneer(u64),
}

/// The AArch64 stub at `rva` (bytes `code`): `adrp x16|x17, page`, then
/// `ldr xN, [x16|x17, #imm]` or `add x16|x17, x16|x17, #imm`, then (for a
/// slot, possibly after an `add`) a `br`.
fn arm64_stub(rva: u64, code: &[u8]) -> Option<Arm64Stub> {
    let word = |k: usize| -> Option<u32> {
        let b = code.get(k.checked_mul(4)?..k.checked_mul(4)?.checked_add(4)?)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    };
    let adrp = word(0)?;
    if adrp & 0x9f00_0000 != 0x9000_0000 {
        return None;
    }
    let reg = adrp & 31;
    if reg != 16 && reg != 17 {
        return None;
    }
    let imm = u64::from(((adrp >> 3) & 0x1f_fffc) | ((adrp >> 29) & 3));
    // Sign-extend the 21-bit page count.
    let pages = ((imm << 43) as i64) >> 43;
    let page = (rva & !0xfff).wrapping_add_signed(pages.wrapping_mul(4096));
    let next = word(1)?;
    if (next >> 5) & 31 != reg {
        return None;
    }
    let lo12 = u64::from((next >> 10) & 0xfff);
    let is_br = |w: u32| w & 0xffff_fc1f == 0xd61f_0000;
    if next & 0xffc0_0000 == 0xf940_0000 {
        // LDR Xt, [Xn, #imm*8], then BR (PE thunk) or ADD + BR (PLT).
        let br = word(2).is_some_and(is_br) || word(3).is_some_and(is_br);
        return br.then_some(Arm64Stub::Slot(page.wrapping_add(lo12 << 3)));
    }
    if next & 0xffc0_0000 == 0x9100_0000 && next & 31 == reg {
        return word(2)
            .is_some_and(is_br)
            .then_some(Arm64Stub::Veneer(page.wrapping_add(lo12)));
    }
    None
}

/// Whether the symbol of part `p` is a name the reader made up from its
/// address (`sub_<rva>`, lower-case hexadecimal) for a function of a
/// stripped image that no exported symbol names.
fn made_up(image: &Image<'_>, p: &Part<'_>) -> bool {
    let Some(hex) = p.symbol.strip_prefix("sub_") else {
        return false;
    };
    let canonical = !hex.is_empty()
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && (hex == "0" || !hex.starts_with('0'));
    if !canonical || u64::from_str_radix(hex, 16).ok() != Some(p.rva) {
        return false;
    }
    let first = image.functions.partition_point(|f| f.rva < p.rva);
    image
        .functions
        .get(first..)
        .unwrap_or(&[])
        .iter()
        .take_while(|f| f.rva == p.rva)
        .filter(|f| f.name == p.symbol)
        .all(|f| f.visibility != Visibility::Exported)
}

/// The longest string literal [`ImageIndex::string_at`] recognises.
const MAX_STRING: usize = 64 << 10;

/// A symbol for [`fold_aliases`]: its key, visibility, and `(rva, size)`
/// when it may have aliases.
type Named<'i> = (Key<'i>, Visibility, Option<(u64, u64)>);

/// Aliases: symbols with different keys at one address with one size are
/// one function (or object) with several names (`xmlIsID` and
/// `xmlIsID__internal_alias`). `items` holds, for each symbol, its key, its
/// visibility, and its `(rva, size)` when it may have aliases (`None` for
/// clone parts and empty symbols). Every alias's key is rewritten to the
/// set's canonical key: the most visible name (exported, then global, then
/// local), then the shortest, then the first in byte order, so that both
/// builds pick the same one whatever other names they add. Returns the
/// canonical keys with their other names, sorted.
fn fold_aliases<'i>(items: &mut [Named<'i>]) -> Vec<(Key<'i>, Vec<Key<'i>>)> {
    let rank = |k: &Key<'i>, v: Visibility| {
        let v = match v {
            Visibility::Exported => 0u8,
            Visibility::Global => 1,
            Visibility::Local => 2,
        };
        (v, k.name.len(), k.name, k.unit)
    };
    let mut at: Vec<((u64, u64), usize)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, (_, _, place))| place.map(|p| (p, i)))
        .collect();
    at.sort_unstable();
    let mut out = Vec::new();
    for run in at.chunk_by(|a, b| a.0 == b.0) {
        let best = run
            .iter()
            .filter_map(|&(_, i)| items.get(i).map(|(k, v, _)| (rank(k, *v), *k)))
            .min();
        let Some((_, canonical)) = best else {
            continue;
        };
        let mut others: Vec<Key<'i>> = Vec::new();
        for &(_, i) in run {
            if let Some(item) = items.get_mut(i) {
                if item.0 != canonical {
                    others.push(item.0);
                    item.0 = canonical;
                }
            }
        }
        if !others.is_empty() {
            others.sort_unstable();
            others.dedup();
            out.push((canonical, others));
        }
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    // A key may own several addresses (never in practice): merge.
    out.dedup_by(|later, first| {
        if later.0 == first.0 {
            first.1.append(&mut later.1);
            first.1.sort_unstable();
            first.1.dedup();
            true
        } else {
            false
        }
    });
    out
}

/// The aliases recorded for `key` by [`fold_aliases`].
fn aliases_of<'i>(aliases: &[(Key<'i>, Vec<Key<'i>>)], key: &Key<'i>) -> Vec<Key<'i>> {
    aliases
        .binary_search_by(|(k, _)| k.cmp(key))
        .ok()
        .and_then(|i| aliases.get(i))
        .map(|(_, a)| a.clone())
        .unwrap_or_default()
}

impl<'i, 'd> ImageIndex<'i, 'd> {
    /// Group the functions and data objects of `image`.
    pub fn new(image: &'i Image<'d>) -> Self {
        // Functions: fold clones into their parent. A local clone of a global
        // parent (GCC emits `parse.cold` as a local) joins the global group.
        let mut items: Vec<(Key<'i>, Part<'i>)> = image
            .functions
            .iter()
            .map(|f| {
                let (base, signature) = split_clone(&f.name);
                let key = key_for(base, f.unit.as_deref(), f.visibility);
                let entry = !is_split_part(&signature);
                let part = Part {
                    signature,
                    symbol: &f.name,
                    rva: f.rva,
                    size: f.size,
                    entry,
                };
                (key, part)
            })
            .collect();
        let mut globals: Vec<&str> = items
            .iter()
            .zip(&image.functions)
            .filter(|(_, f)| f.visibility != Visibility::Local)
            .map(|((k, _), _)| k.name)
            .collect();
        globals.sort_unstable();
        globals.dedup();
        for (key, part) in &mut items {
            if key.unit.is_some()
                && !part.signature.is_empty()
                && globals.binary_search(&key.name).is_ok()
            {
                key.unit = None;
            }
        }
        drop(globals);
        // Aliases of plain functions fold into one group.
        let mut named: Vec<Named<'i>> = items
            .iter()
            .zip(&image.functions)
            .map(|((k, p), f)| {
                let place = (p.signature.is_empty() && p.size > 0).then_some((p.rva, p.size));
                (*k, f.visibility, place)
            })
            .collect();
        let fn_aliases = fold_aliases(&mut named);
        for ((key, _), (folded, _, _)) in items.iter_mut().zip(named) {
            *key = folded;
        }
        let order = sorted_order(
            &items,
            |(k, _)| k.name,
            |(ka, a), (kb, b)| {
                (ka, &a.signature, a.rva, a.symbol).cmp(&(kb, &b.signature, b.rva, b.symbol))
            },
        );
        let mut groups: Vec<Group<'i>> = Vec::with_capacity(items.len());
        let mut parts: Vec<Part<'i>> = Vec::with_capacity(items.len());
        let mut last: Option<&(Key<'i>, Part<'i>)> = None;
        for &i in &order {
            let Some(item @ (key, part)) = items.get(i as usize) else {
                continue;
            };
            // Aliases (two names, one address) are one part.
            if last.is_some_and(|(k, p)| {
                k == key && p.rva == part.rva && p.signature == part.signature
            }) {
                continue;
            }
            last = Some(item);
            let at = u32::try_from(parts.len()).unwrap_or(u32::MAX);
            match groups.last_mut() {
                Some(g) if g.key == *key => g.count = g.count.saturating_add(1),
                _ => groups.push(Group {
                    key: *key,
                    aliases: aliases_of(&fn_aliases, key),
                    unnamed: false,
                    identity: UNASSIGNED,
                    first: at,
                    count: 1,
                }),
            }
            parts.push(part.clone());
        }
        drop(items);
        if image.stripped {
            for g in &mut groups {
                let one = parts.get(g.first as usize..).and_then(|p| {
                    p.get(..g.count as usize)
                        .filter(|p| p.len() == 1)
                        .and_then(|p| p.first())
                });
                g.unnamed = g.aliases.is_empty()
                    && g.key.unit.is_none()
                    && one.is_some_and(|p| {
                        p.signature.is_empty() && g.key.name == p.symbol && made_up(image, p)
                    });
            }
        }
        let mut ranges: Vec<Range> = Vec::with_capacity(parts.len());
        for (gi, g) in groups.iter().enumerate() {
            for flat in g.first..g.first.saturating_add(g.count) {
                let Some(p) = parts.get(flat as usize) else {
                    continue;
                };
                if p.size > 0 {
                    ranges.push(Range {
                        start: p.rva,
                        end: p.rva.saturating_add(p.size),
                        fingerprint: fingerprint(&g.key, Some(&p.signature)),
                        group: gi as u32,
                        flat,
                        unnamed: g.unnamed,
                    });
                }
            }
        }
        ranges.sort_unstable_by_key(|r| (r.start, r.end, r.group, r.flat));

        let mut named: Vec<Named<'i>> = image
            .data
            .iter()
            .map(|d| {
                let key = key_for(&d.name, d.unit.as_deref(), d.visibility);
                (key, d.visibility, (d.size > 0).then_some((d.rva, d.size)))
            })
            .collect();
        let data_aliases = fold_aliases(&mut named);
        let all: Vec<DataEntry<'i>> = named
            .into_iter()
            .enumerate()
            .map(|(i, (key, _, _))| DataEntry {
                key,
                aliases: aliases_of(&data_aliases, &key),
                object: i,
            })
            .collect();
        let order = sorted_order(
            &all,
            |d| d.key.name,
            |a, b| (a.key, a.object).cmp(&(b.key, b.object)),
        );
        let mut data: Vec<DataEntry<'i>> = order
            .iter()
            .filter_map(|&i| all.get(i as usize).cloned())
            .collect();
        drop(all);
        // Duplicate keys (aliases, folded above) keep the first.
        data.dedup_by(|a, b| a.key == b.key);
        let mut data_ranges: Vec<DataRange> = data
            .iter()
            .enumerate()
            .filter_map(|(entry, d)| {
                let o = image.data.get(d.object)?;
                (o.size > 0).then(|| DataRange {
                    start: o.rva,
                    end: o.rva.saturating_add(o.size),
                    fingerprint: fingerprint(&d.key, None),
                    entry,
                })
            })
            .collect();
        data_ranges.sort_unstable_by_key(|r| (r.start, r.end, r.entry));

        let mut anchors: Vec<u64> = Vec::new();
        anchors.extend(image.sections.iter().map(|s| s.rva));
        anchors.extend(image.sections.iter().map(|s| s.rva.saturating_add(s.size)));
        anchors.extend(ranges.iter().flat_map(|r| [r.start, r.end]));
        anchors.extend(data_ranges.iter().flat_map(|r| [r.start, r.end]));
        anchors.extend(image.boundaries.iter().copied());
        for r in &image.relocations {
            if let RelocTarget::Rva(t) = r.target {
                anchors.push(t);
            }
        }
        anchors.sort_unstable();
        anchors.dedup();
        ImageIndex {
            image,
            groups,
            parts,
            data,
            ranges: Sorted::new(ranges),
            data_ranges: Sorted::new(data_ranges),
            named: Sorted::new(anchors),
            blocks: OnceLock::new(),
            relocs: Buckets::new(&image.relocations),
            by_digest: OnceLock::new(),
            stubs: OnceLock::new(),
            slots: OnceLock::new(),
        }
    }

    /// Add the addresses that code refers to (the normalisers'
    /// [`Normalized::anchors`](crate::norm::Normalized::anchors)) and fix the anonymous
    /// blocks (their digests are computed when first needed). Only the first
    /// call counts: the blocks never change once fixed.
    pub fn finish(&self, referenced: impl IntoIterator<Item = u64>) {
        if self.blocks.get().is_some() {
            return;
        }
        let mut anchors = self.named.items.clone();
        anchors.extend(referenced);
        anchors.par_sort_unstable();
        anchors.dedup();
        let anchors = Sorted::new(anchors);
        let digests = std::iter::repeat_with(OnceLock::new)
            .take(anchors.items.len())
            .collect();
        // A concurrent caller may have won; its blocks are the same.
        let _ = self.blocks.set(Blocks { anchors, digests });
    }

    /// The anchors that cut anonymous data: all of them once finished, the
    /// named ones before.
    fn anchors(&self) -> &Sorted<u64> {
        self.blocks.get().map_or(&self.named, |b| &b.anchors)
    }

    /// Every anchor that cuts anonymous data, once finished (the named ones
    /// before): what another index over the same bytes needs to cut them
    /// alike (the packager's relink check).
    pub fn finished_anchors(&self) -> Vec<u64> {
        self.anchors().items.clone()
    }

    /// Where anonymous data with this digest starts, if a block of this
    /// image has it (a string literal by its bytes, any other block by its
    /// contents): what a new body's reference to an unchanged constant is
    /// pointed at. Builds its table on first use (every anchor's digest).
    pub fn block_with_digest(&self, digest: &BlockDigest) -> Option<u64> {
        let table = self.by_digest.get_or_init(|| {
            let mut t = std::collections::HashMap::new();
            if let Some(blocks) = self.blocks.get() {
                for (at, &a) in blocks.anchors.items.iter().enumerate() {
                    let d = *self.digest_at(blocks, at);
                    if d != BlockDigest::NONE {
                        t.entry(d).or_insert(a);
                    }
                }
            }
            t
        });
        table.get(digest).copied()
    }

    /// Where this image calls the import `name` through a stub (a PLT
    /// entry, a PE import thunk), if it has one: found once, among the
    /// executable bytes no function covers.
    pub fn import_stub(&self, name: &str) -> Option<u64> {
        let table = self.stubs.get_or_init(|| {
            let mut t = std::collections::HashMap::new();
            let step = match self.image.arch {
                Arch::X86_64 => 2,
                Arch::Aarch64 => 4,
            };
            for s in self.image.sections.iter().filter(|s| s.perms.execute) {
                let end = s.rva.saturating_add(s.data.len() as u64);
                let mut at = s.rva;
                while at < end {
                    if let Some(r) = self.range_at(at) {
                        at = r.end.max(at.saturating_add(1));
                        continue;
                    }
                    if let Some(SymRef::External { name, .. }) = self.stub(at, None) {
                        t.entry(name.to_string()).or_insert(at);
                    }
                    at = at.saturating_add(step);
                }
            }
            t
        });
        table.get(name).copied()
    }

    /// A pointer slot of this image (a GOT entry, an IAT slot, any
    /// relocated pointer outside code) holding `what`: where a new body
    /// loads it from.
    pub fn slot_holding(&self, what: &SymRef<'_>) -> Option<u64> {
        let table = self.slots.get_or_init(|| {
            let mut t: Vec<(u64, SymRefKey)> = Vec::new();
            for r in &self.image.relocations {
                let in_code = self.image.section_at(r.rva).is_none_or(|s| s.perms.execute);
                if r.width != 8 || in_code || self.data_at(r.rva).is_some() {
                    continue;
                }
                t.push((r.rva, SymRefKey::of(&self.resolve_reloc(r, None))));
            }
            t
        });
        let key = SymRefKey::of(what);
        table.iter().find(|(_, k)| *k == key).map(|&(rva, _)| rva)
    }

    /// Whether any group's name is only its address ([`Group::unnamed`]).
    pub fn has_unnamed(&self) -> bool {
        self.image.stripped && self.groups.iter().any(|g| g.unnamed)
    }

    /// Whether group `group` is unnamed ([`Group::unnamed`]).
    pub fn is_unnamed(&self, group: usize) -> bool {
        self.groups.get(group).is_some_and(|g| g.unnamed)
    }

    /// Set what references to unnamed group `group` are
    /// ([`SymRef::Unnamed`]): the diff gives a structurally matched pair
    /// one identity in both builds, and every function left unmatched one
    /// that nothing in the other build has. Must happen before anything is
    /// compared, and before [`ImageIndex::finish`] (anonymous blocks that
    /// point at the function digest its identity). Ignored for a named
    /// group.
    pub fn set_identity(&mut self, group: usize, identity: u64) {
        if let Some(g) = self.groups.get_mut(group).filter(|g| g.unnamed) {
            g.identity = identity;
        }
    }

    /// The group with this key.
    pub fn group(&self, key: &Key<'_>) -> Option<usize> {
        self.groups.binary_search_by(|g| g.key.cmp(key)).ok()
    }

    /// The parts of group `group` (empty for an index out of range).
    pub fn parts(&self, group: usize) -> &[Part<'i>] {
        self.groups
            .get(group)
            .and_then(|g| self.parts.get(g.first as usize..)?.get(..g.count as usize))
            .unwrap_or(&[])
    }

    /// The part callers of group `group` enter first: the plain function,
    /// else the first entry clone.
    pub fn primary(&self, group: usize) -> Option<&Part<'i>> {
        let parts = self.parts(group);
        parts
            .iter()
            .find(|p| p.signature.is_empty())
            .or_else(|| parts.iter().find(|p| p.entry))
    }

    /// Total code size of all parts of group `group`.
    pub fn group_size(&self, group: usize) -> u64 {
        self.parts(group).iter().map(|p| p.size).sum()
    }

    /// The key of group `group` (an empty key for an index out of range,
    /// which the index never hands out).
    pub fn key(&self, group: usize) -> Key<'i> {
        self.groups.get(group).map_or(
            Key {
                name: "",
                unit: None,
            },
            |g| g.key,
        )
    }

    /// Data entry `d` with its object in the image.
    pub fn data_object(&self, d: usize) -> Option<(&DataEntry<'i>, &'i DataObject)> {
        let e = self.data.get(d)?;
        Some((e, self.image.data.get(e.object)?))
    }

    /// The data entry with this key.
    pub fn data_entry(&self, key: &Key<'_>) -> Option<usize> {
        self.data.binary_search_by(|d| d.key.cmp(key)).ok()
    }

    /// (group, part) of the function part containing `rva`.
    #[inline]
    pub fn function_at(&self, rva: u64) -> Option<(usize, usize)> {
        let r = self.range_at(rva)?;
        let first = self.groups.get(r.group as usize)?.first;
        Some((r.group as usize, r.flat.wrapping_sub(first) as usize))
    }

    /// The group of the function part containing `rva` (as
    /// [`ImageIndex::function_at`]), with addresses `[lo, hi)` around `rva`
    /// for all of which the answer is the same: what a walk over many
    /// nearby addresses (a jump table's entries) can reuse.
    pub fn function_span(&self, rva: u64) -> Option<(usize, u64, u64)> {
        let i = self.ranges.upto(rva);
        let last = i.checked_sub(1).and_then(|k| self.ranges.items.get(k))?;
        if rva < last.end {
            // Up to the next part's start, `last` is the nearest part
            // starting at or below, and it covers.
            let next = self.ranges.items.get(i).map_or(u64::MAX, |n| n.start);
            return Some((last.group as usize, last.start, last.end.min(next)));
        }
        let (g, _) = self.function_at(rva)?;
        Some((g, rva, rva.saturating_add(1)))
    }

    /// The [`Range`] of the function part containing `rva`. Parts that
    /// start at or before `rva` are searched backwards: the nearest one may
    /// be a short part that ends before `rva` while an earlier one (a
    /// function containing a nested alias) covers it.
    #[inline]
    fn range_at(&self, rva: u64) -> Option<&Range> {
        self.ranges.find_back(rva, 4, |r| rva < r.end)
    }

    /// The [`DataRange`] of the data object containing `rva`.
    #[inline]
    fn data_range_at(&self, rva: u64) -> Option<&DataRange> {
        self.data_ranges.find_back(rva, 4, |r| rva < r.end)
    }

    /// Index into [`ImageIndex::data`] of the data object containing `rva`.
    #[inline]
    pub fn data_at(&self, rva: u64) -> Option<usize> {
        self.data_range_at(rva).map(|r| r.entry)
    }

    /// The anonymous block containing `rva`: from the nearest anchor at or
    /// before it to the next anchor, inside one section.
    /// Before [`ImageIndex::finish`], only named things cut blocks.
    pub fn block(&self, rva: u64) -> Option<Block<'d>> {
        self.block_in(self.anchors(), rva).map(|(b, _)| b)
    }

    /// The block containing `rva` between `anchors`, with the index of the
    /// anchor it starts at (`usize::MAX` when it starts at its section's
    /// start instead).
    fn block_in(&self, anchors: &Sorted<u64>, rva: u64) -> Option<(Block<'d>, usize)> {
        let section = self.image.section_at(rva)?;
        let i = anchors.upto(rva);
        let anchors = &anchors.items;
        let (start, at) = match i.checked_sub(1).and_then(|k| Some((anchors.get(k)?, k))) {
            Some((&a, k)) if a >= section.rva => (a, k),
            _ => (section.rva, usize::MAX),
        };
        let section_end = section.rva.saturating_add(section.size);
        let end = anchors
            .get(i)
            .copied()
            .unwrap_or(section_end)
            .min(section_end);
        let from = usize::try_from(start.wrapping_sub(section.rva)).ok()?;
        let to = usize::try_from(end.wrapping_sub(section.rva)).ok()?;
        let bytes = section
            .data
            .get(from.min(section.data.len())..to.min(section.data.len()))
            .unwrap_or(&[]);
        Some((
            Block {
                start,
                end,
                bytes,
                executable: section.perms.execute,
                writable: section.perms.write,
            },
            at,
        ))
    }

    /// The relocation whose patched bytes start inside `[rva, rva + len)`.
    pub fn relocation_in(&self, rva: u64, len: u64) -> Option<&'i Relocation> {
        let relocs = &self.image.relocations;
        let i = self.relocs.below(relocs, rva);
        relocs.get(i).filter(|r| r.rva < rva.saturating_add(len))
    }

    /// Every relocation whose patched bytes start inside `[rva, rva + len)`.
    pub fn relocations_in(&self, rva: u64, len: u64) -> &'i [Relocation] {
        let relocs = &self.image.relocations;
        let a = self.relocs.below(relocs, rva);
        let b = self.relocs.below(relocs, rva.saturating_add(len)).max(a);
        relocs.get(a..b).unwrap_or(&[])
    }

    /// Turn an address into a [`SymRef`]. `current` is the group being
    /// normalised: references into any of its parts become [`SymRef::Local`].
    pub fn resolve(&self, rva: u64, current: Option<usize>) -> SymRef<'_> {
        self.resolve_as(rva, current, true)
    }

    /// [`ImageIndex::resolve`]; `stubs` says whether an import thunk, PLT
    /// entry or veneer is followed to what it forwards to (once: a stub's
    /// own target is resolved without following another).
    fn resolve_as(&self, rva: u64, current: Option<usize>, stubs: bool) -> SymRef<'_> {
        if let Some(r) = self.range_at(rva) {
            let g = r.group as usize;
            let offset = rva.wrapping_sub(r.start);
            if Some(g) == current {
                let first = self.groups.get(g).map_or(0, |g| g.first);
                return SymRef::Local {
                    part: r.flat.wrapping_sub(first),
                    offset,
                };
            }
            if r.unnamed {
                if let Some(group) = self.groups.get(g) {
                    return SymRef::Unnamed {
                        group: r.group,
                        offset,
                        identity: group.identity,
                    };
                }
            } else if let (Some(group), Some(part)) =
                (self.groups.get(g), self.parts.get(r.flat as usize))
            {
                // Only addresses are taken: nothing of the group is read.
                return SymRef::Function {
                    key: &group.key,
                    part: &part.signature,
                    offset,
                    fingerprint: r.fingerprint,
                };
            }
        }
        if let Some(r) = self.data_range_at(rva) {
            if let Some(entry) = self.data.get(r.entry) {
                return SymRef::Data {
                    key: &entry.key,
                    offset: rva.wrapping_sub(r.start),
                    fingerprint: r.fingerprint,
                };
            }
        }
        if stubs {
            if let Some(s) = self.stub(rva, current) {
                return s;
            }
        }
        let Some(blocks) = self.blocks.get() else {
            return match self.image.section_at(rva) {
                Some(_) => SymRef::Deferred(rva),
                None => SymRef::Unmapped(rva),
            };
        };
        match self.block_in(&blocks.anchors, rva) {
            Some((b, at)) => SymRef::Anon {
                digest: self.digest_at(blocks, at),
                offset: rva.wrapping_sub(b.start),
            },
            None => SymRef::Unmapped(rva),
        }
    }

    /// If `rva`, in executable memory outside every function, starts a stub
    /// that forwards to something else, what that is:
    ///
    /// - x86-64: `[endbr64] [bnd] jmp [rip+slot]` (an ELF PLT entry, a PE
    ///   import thunk `jmp [__imp_f]`): what the slot's relocation points at
    ///   (`dll!name`, or the symbol);
    /// - AArch64: `adrp x16|x17, page` then `ldr xN, [x16|x17, #off]` (a PLT
    ///   entry or an import thunk: the slot's relocation, else the slot) or
    ///   `add x16|x17, x16|x17, #off` (a range-extension veneer: its target).
    ///
    /// Stubs have no symbols and move between builds; the import they stand
    /// for does not. So a call to one, and a pointer to one in code or data,
    /// means that import.
    fn stub(&self, rva: u64, current: Option<usize>) -> Option<SymRef<'_>> {
        let section = self.image.section_at(rva)?;
        if !section.perms.execute {
            return None;
        }
        let avail = section
            .rva
            .saturating_add(section.data.len() as u64)
            .checked_sub(rva)?;
        let bytes = self.image.bytes_at(rva, avail.min(16))?;
        let slot = match self.image.arch {
            Arch::X86_64 => x86_stub_slot(rva, bytes)?,
            Arch::Aarch64 => match arm64_stub(rva, bytes)? {
                Arm64Stub::Slot(slot) => slot,
                Arm64Stub::Veneer(target) => return Some(self.resolve_as(target, current, false)),
            },
        };
        match self.relocation_in(slot, 1).filter(|r| r.rva == slot) {
            Some(r) => Some(self.resolve_reloc_as(r, current, false)),
            // A slot without a load-time relocation (an AArch64 GOT entry
            // of a static link): the slot itself. x86 requires one.
            None if self.image.arch == Arch::Aarch64 => Some(self.resolve_as(slot, current, false)),
            None => None,
        }
    }

    /// The digest of the block at anchor `at` of `blocks`
    /// ([`BlockDigest::NONE`] for an anchor inside a function or data
    /// object, or past the end).
    fn digest_at<'s>(&'s self, blocks: &'s Blocks, at: usize) -> &'s BlockDigest {
        let (Some(cell), Some(&a)) = (blocks.digests.get(at), blocks.anchors.items.get(at)) else {
            return &BlockDigest::NONE;
        };
        cell.get_or_init(|| {
            if self.function_at(a).is_some() || self.data_at(a).is_some() {
                return BlockDigest::NONE;
            }
            if let Some(text) = self.string_at(a) {
                let mut h = Sha256Writer(sha2::Sha256::default());
                (b"string", text).hash(&mut h);
                return h.digest();
            }
            match self.block_in(&blocks.anchors, a) {
                Some((block, _)) if block.start == a => {
                    self.compute_digest(&block, &blocks.anchors)
                }
                _ => BlockDigest::NONE,
            }
        })
    }

    /// The string literal at `rva`, with its terminating NUL: when `rva`
    /// lies in anonymous read-only, non-executable data and the bytes from
    /// it to the first NUL (at least one, at most `MAX_STRING`) are text
    /// (printable ASCII, tab, newline, carriage return, or UTF-8 bytes).
    ///
    /// An anonymous reference that meets text is to a string literal, and
    /// a literal is exactly its bytes up to the NUL. Its anonymous block,
    /// cut by the addresses the code refers to, is not: when the linker
    /// merges strings, a neighbour that the update no longer refers to
    /// joins the block, and the users of an unchanged string would look
    /// changed. (Named arrays of text are data objects, compared whole.)
    ///
    /// Bytes that a load-time relocation patches are never text: a table of
    /// pointers in RELRO data (read-only once relocated) holds its
    /// addends, and `d0 00 04 00` would otherwise read as a one-byte
    /// string whose value is an address.
    pub fn string_at(&self, rva: u64) -> Option<&'d [u8]> {
        let section = self.image.section_at(rva)?;
        if section.perms.write || section.perms.execute {
            return None;
        }
        let start = usize::try_from(rva.checked_sub(section.rva)?).ok()?;
        let rest = section.data.get(start..)?;
        let rest = rest.get(..rest.len().min(MAX_STRING.saturating_add(1)))?;
        let nul = rest.iter().position(|&b| b == 0)?;
        if nul == 0 {
            return None;
        }
        let text = rest.get(..nul)?;
        let is_text = |b: u8| matches!(b, 0x20..=0x7e | b'\t' | b'\n' | b'\r' | 0x80..);
        if !text.iter().all(|&b| is_text(b)) {
            return None;
        }
        // A relocation that starts up to 7 bytes before `rva` may cover it.
        let from = rva.saturating_sub(7);
        let len = (nul as u64).saturating_add(8);
        let end = rva.saturating_add(nul as u64).saturating_add(1);
        let patched = self
            .relocations_in(from, len)
            .iter()
            .any(|r| r.rva < end && r.rva.saturating_add(u64::from(r.width)) > rva);
        if patched {
            return None;
        }
        rest.get(..=nul)
    }

    /// Resolve the target of a relocation.
    pub fn resolve_reloc(&self, r: &'i Relocation, current: Option<usize>) -> SymRef<'_> {
        self.resolve_reloc_as(r, current, true)
    }

    /// [`ImageIndex::resolve_reloc`], following stubs or not (see
    /// [`ImageIndex::resolve_as`]).
    fn resolve_reloc_as(
        &self,
        r: &'i Relocation,
        current: Option<usize>,
        stubs: bool,
    ) -> SymRef<'_> {
        match &r.target {
            RelocTarget::Rva(t) => self.resolve_as(*t, current, stubs),
            RelocTarget::Symbol { name, addend } => SymRef::External {
                name,
                addend: *addend,
            },
        }
    }

    /// Digest of a block's contents, with each relocated pointer replaced by
    /// what it points at. A pointer to another anonymous block is taken by
    /// its position in that block and the block's length, not by the block's
    /// contents, so digests never recurse.
    fn compute_digest(&self, block: &Block<'_>, anchors: &Sorted<u64>) -> BlockDigest {
        let mut h = Sha256Writer(sha2::Sha256::default());
        block.end.wrapping_sub(block.start).hash(&mut h);
        let mut pos = block.start;
        for r in self.relocations_in(block.start, block.end.wrapping_sub(block.start)) {
            let lo = pos.wrapping_sub(block.start) as usize;
            let hi = r.rva.wrapping_sub(block.start) as usize;
            block
                .bytes
                .get(lo.min(block.bytes.len())..hi.min(block.bytes.len()))
                .hash(&mut h);
            match &r.target {
                RelocTarget::Rva(t) => {
                    // Named targets by name; an anonymous one by its place
                    // in its block (never by the block's digest: digests
                    // must not recurse).
                    let function = self
                        .function_at(*t)
                        .and_then(|(g, p)| Some((self.groups.get(g)?, self.parts(g).get(p)?)));
                    let data = self.data_at(*t).and_then(|d| {
                        let e = self.data.get(d)?;
                        Some((e, self.image.data.get(e.object)?))
                    });
                    if let Some((group, part)) = function {
                        let offset = t.wrapping_sub(part.rva);
                        if group.unnamed {
                            (6u8, group.identity, offset).hash(&mut h);
                        } else {
                            (0u8, &group.key, &part.signature, offset).hash(&mut h);
                        }
                    } else if let Some((entry, object)) = data {
                        (1u8, &entry.key, t.wrapping_sub(object.rva)).hash(&mut h);
                    } else if let Some(text) = self.string_at(*t) {
                        (5u8, text).hash(&mut h);
                    } else if let Some((b, _)) = self.block_in(anchors, *t) {
                        (2u8, t.wrapping_sub(b.start), b.end.wrapping_sub(b.start)).hash(&mut h);
                    } else {
                        (3u8, *t).hash(&mut h);
                    }
                }
                RelocTarget::Symbol { name, addend } => (4u8, name, addend).hash(&mut h),
            }
            pos = r.rva.saturating_add(u64::from(r.width));
        }
        let lo = pos.saturating_sub(block.start) as usize;
        block.bytes.get(lo.min(block.bytes.len())..).hash(&mut h);
        h.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{image as bare, section};
    use hotpatch_formats::{Arch, Format};

    /// `.rdata` with a string literal followed by a linker structure whose
    /// bytes change every build (a debug directory's GUID).
    fn image(rdata: &[u8], boundaries: Vec<u64>) -> Image<'_> {
        Image {
            boundaries,
            ..bare(
                Format::Pe,
                Arch::X86_64,
                vec![section(".rdata", 0x2000, rdata, false, false)],
                &[],
            )
        }
    }

    /// The digest of the anonymous reference to 0x2000 in `.rdata` holding
    /// `bytes`, with these linker `boundaries`.
    fn digest(bytes: &'static [u8], boundaries: Vec<u64>) -> BlockDigest {
        let img = image(bytes, boundaries);
        let idx = ImageIndex::new(&img);
        idx.finish([0x2000]);
        match idx.resolve(0x2000, None) {
            SymRef::Anon { digest, offset: 0 } => *digest,
            other => panic!("{other:?}"),
        }
    }

    /// A constant (not text) followed by a linker structure whose bytes
    /// change every build (a debug directory's GUID): the PDB contribution's
    /// end keeps the constant's block from running into it.
    #[test]
    fn constant_block_stops_at_linker_boundary_before_debug_directory() {
        let a = b"\x01\x02\x03\x04\x05\x06\x07\x08\0\0\0\0\0\0\0\0GUID-build-one!!";
        let b = b"\x01\x02\x03\x04\x05\x06\x07\x08\0\0\0\0\0\0\0\0GUID-build-two!!";
        // Without the boundary the constant's block runs into the GUID.
        assert_ne!(digest(a, vec![]), digest(b, vec![]));
        // With the PDB contribution's end as a boundary it does not.
        assert_eq!(
            digest(a, vec![0x2000, 0x2010]),
            digest(b, vec![0x2000, 0x2010])
        );
    }

    /// A table of pointers in RELRO data (read-only at run time) holds
    /// its relocations' addends: `d0 00 04 00 ...` is no one-byte string
    /// literal. Two builds whose tables point at the same functions at
    /// other addresses must digest alike (lcms2's `FormattersAlpha` in a
    /// stripped AArch64 build).
    #[test]
    fn relocated_pointer_table_in_relro_is_not_a_string_literal() {
        let digest_of = |table: &'static [u8], targets: [u64; 2]| {
            let mut img = bare(
                Format::Elf,
                Arch::Aarch64,
                vec![
                    section(".text", 0x10000, &[0u8; 0x100], false, true),
                    section(".data.rel.ro", 0x2000, table, false, false),
                ],
                &[
                    ("f", 0x10000 + targets[0], 8),
                    ("g", 0x10000 + targets[1], 8),
                ],
            );
            img.relocations = (0..2)
                .map(|i| Relocation {
                    rva: 0x2000 + 8 * i as u64,
                    width: 8,
                    target: RelocTarget::Rva(0x10000 + targets[i]),
                })
                .collect();
            let idx = ImageIndex::new(&img);
            assert_eq!(idx.string_at(0x2000), None);
            idx.finish([0x2000]);
            match idx.resolve(0x2000, None) {
                SymRef::Anon { digest, offset: 0 } => *digest,
                other => panic!("{other:?}"),
            }
        };
        // The addends, as GNU ld leaves them in place: 0x100d0, 0x100e0.
        let a = digest_of(b"\xd0\0\x01\0\0\0\0\0\xe0\0\x01\0\0\0\0\0", [0xd0, 0xe0]);
        let b = digest_of(b"\x70\0\x01\0\0\0\0\0\x80\0\x01\0\0\0\0\0", [0x70, 0x80]);
        assert_eq!(a, b);
    }

    /// A string literal is its bytes up to the NUL, whatever its block
    /// runs on into: a merged neighbour the update no longer refers to
    /// (libexif's `table` of tag names), or a debug directory. A change to
    /// the literal itself still shows.
    #[test]
    fn string_literal_is_its_bytes_up_to_the_nul() {
        let a = b"hotpatch-name\0\0\0GUID-build-one!!";
        let b = b"hotpatch-name\0\0\0GUID-build-two!!";
        let c = b"hotpatch-nama\0\0\0GUID-build-one!!";
        let d = b"hotpatch-name\0neighbour gone\0";
        assert_eq!(digest(a, vec![]), digest(b, vec![]));
        assert_eq!(digest(a, vec![]), digest(d, vec![]));
        assert_ne!(digest(a, vec![]), digest(c, vec![]));
    }
}

//! The payload: relocatable items (function bodies, data, whole images),
//! each with its bytes and its relocation records.
//!
//! The manifest refers to items by index ([`ItemRef`]). The binary encoding
//! is specified in `formats/SPEC.md`; this module is its reference
//! implementation.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zstd::zstd_safe;

use super::codec::{put_varint, put_zigzag, Cursor};
use super::digest::Sha256Digest;
use super::error::{PackageError, Result};
use super::reloc::{FieldError, RelocKind, Site};

/// The most items a payload may hold.
pub const MAX_ITEMS: u32 = 1 << 20;
/// The largest alignment an item may ask for (one 64 KiB granule).
pub const MAX_ALIGN: u32 = 1 << 16;
/// The longest import name, in bytes.
pub const MAX_IMPORT_NAME: usize = 1024;
/// The largest decoded item (the payload's own cap).
pub const MAX_ITEM_SIZE: u64 = super::header::MAX_PAYLOAD_UNCOMPRESSED_LEN;
/// zstd level for delta-encoded bodies: 9 gives the same sizes as 19 on the
/// real pairs (expat: 12,188 against 12,190 bytes) at a quarter of the time,
/// as level 19 sets up large tables for every body.
pub const DELTA_LEVEL: i32 = 9;
/// Largest zstd window (log2) accepted when decoding: 128 MiB.
pub const MAX_WINDOW_LOG: u32 = 27;

/// The most distinct imports a payload's import table may hold.
pub const MAX_IMPORTS: u64 = 1 << 20;
/// The largest baseline RVA a relocation target may name (the target
/// varint holds it shifted left by 2).
pub const MAX_TARGET_RVA: u64 = (1 << 62) - 1;

/// Smallest encoding of an item (flags, encoding, a size of 0, no
/// relocations), to bound counts.
const MIN_ITEM_BYTES: usize = 1 + 1 + 1;
/// Smallest encoding of a relocation record (gap, kind, target, addend).
const MIN_RELOC_BYTES: usize = 1 + 1 + 1 + 1;
/// Smallest encoding of an import (slot, name length, one byte of name).
const MIN_IMPORT_BYTES: usize = 1 + 1 + 1;
/// Target tags, in the low 2 bits of the target varint.
const TAG_RVA: u64 = 0;
const TAG_ITEM: u64 = 1;
const TAG_IMPORT: u64 = 2;

/// Bytes that share one buffer: a decoded payload's items are slices of
/// the decompressed payload, not copies. Compared and hashed by content.
#[derive(Clone)]
pub struct Bytes {
    buf: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl Bytes {
    /// The bytes `range` of these bytes, sharing the buffer; `None` if the
    /// range is out of bounds.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Option<Bytes> {
        let start = self.start.checked_add(range.start)?;
        let end = self.start.checked_add(range.end)?;
        (start <= end && end <= self.end).then(|| Bytes {
            buf: Arc::clone(&self.buf),
            start,
            end,
        })
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        let end = v.len();
        Bytes {
            buf: Arc::new(v),
            start: 0,
            end,
        }
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Self {
        Bytes::from(v.to_vec())
    }
}

impl From<&Vec<u8>> for Bytes {
    fn from(v: &Vec<u8>) -> Self {
        Bytes::from(v.clone())
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Bytes {}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.len())
    }
}

/// The index of an item in the payload; the manifest's reference to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ItemRef(pub u32);

impl std::fmt::Display for ItemRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "item {}", self.0)
    }
}

/// The decoded payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Payload {
    items: Vec<Item>,
}

/// One relocatable item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Where it may be placed: its address must be a multiple of this (a
    /// power of two, at most [`MAX_ALIGN`]).
    pub align: u32,
    /// Its bytes, whole or as a delta against baseline bytes.
    pub body: Body,
    /// Its relocation records, sorted by offset, fields not overlapping.
    pub relocations: Vec<Relocation>,
}

/// The bytes of an item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// The bytes themselves.
    Raw(Bytes),
    /// A zstd frame that decodes to the bytes with baseline bytes as its
    /// (raw-content) prefix.
    Delta(Delta),
}

/// A body encoded against bytes the device already holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    /// The baseline bytes used as reference.
    pub reference: Reference,
    /// The size of the decoded body.
    pub size: u64,
    /// One zstd frame.
    pub frame: Bytes,
}

/// A range of the baseline image and the SHA-256 of its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Reference {
    /// The RVA of the first byte in the baseline image.
    pub rva: u64,
    /// The number of bytes.
    pub size: u64,
    /// SHA-256 of exactly those bytes; checked before decoding.
    pub sha256: Sha256Digest,
}

/// A relocation record: write the address of `target` plus `addend` into
/// the field at `offset`, encoded as `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Relocation {
    /// Offset of the field in the item (of the instruction, on AArch64).
    pub offset: u64,
    /// How the value is encoded.
    pub kind: RelocKind,
    /// What the value points at.
    pub target: Target,
    /// Added to the target's address.
    pub addend: i64,
}

/// What a relocation points at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// An address in the baseline image: an unchanged function, or an
    /// existing data object (whose live state the patch must use).
    BaselineRva(u64),
    /// The first byte of another item of this package (or of this one).
    Item(ItemRef),
    /// An import, through the baseline's slot for it: the IAT slot (PE) or
    /// GOT entry (ELF) at `slot_rva`. The value is the slot's address; the
    /// code loads the import's address from it.
    Import {
        /// RVA of the slot in the baseline image.
        slot_rva: u64,
        /// The imported symbol's name, as the baseline's import records it.
        name: String,
    },
}

impl Item {
    /// An item of raw bytes.
    pub fn raw(align: u32, bytes: impl Into<Bytes>, relocations: Vec<Relocation>) -> Self {
        Item {
            align,
            body: Body::Raw(bytes.into()),
            relocations,
        }
    }

    /// The baseline bytes a delta-encoded item needs to be decoded (pass
    /// them to [`Payload::contents`]); `None` for raw bytes.
    pub fn reference(&self) -> Option<&Reference> {
        match &self.body {
            Body::Raw(_) => None,
            Body::Delta(d) => Some(&d.reference),
        }
    }

    /// The size of the item's bytes once decoded.
    pub fn size(&self) -> u64 {
        match &self.body {
            Body::Raw(b) => b.len() as u64,
            Body::Delta(d) => d.size,
        }
    }
}

impl Body {
    /// Encode `bytes` as a zstd delta against `reference` (the baseline's
    /// bytes at `reference_rva`), at [`DELTA_LEVEL`], single-threaded.
    pub fn delta(bytes: &[u8], reference_rva: u64, reference: &[u8]) -> Result<Body> {
        let err = |code| PackageError::Zstd {
            what: "delta encoding".into(),
            detail: zstd_safe::get_error_name(code).into(),
        };
        let mut cctx = zstd_safe::CCtx::create();
        cctx.set_parameter(zstd_safe::CParameter::CompressionLevel(DELTA_LEVEL))
            .map_err(err)?;
        cctx.set_parameter(zstd_safe::CParameter::ContentSizeFlag(true))
            .map_err(err)?;
        cctx.set_parameter(zstd_safe::CParameter::ChecksumFlag(false))
            .map_err(err)?;
        cctx.ref_prefix(reference).map_err(err)?;
        let mut frame = Vec::with_capacity(zstd_safe::compress_bound(bytes.len()));
        cctx.compress2(&mut frame, bytes).map_err(err)?;
        Ok(Body::Delta(Delta {
            reference: Reference {
                rva: reference_rva,
                size: reference.len() as u64,
                sha256: Sha256Digest::of(reference),
            },
            size: bytes.len() as u64,
            frame: frame.into(),
        }))
    }
}

impl Payload {
    /// An empty payload.
    pub fn new() -> Self {
        Payload::default()
    }

    /// Add an item; the manifest refers to it by the returned reference.
    pub fn push(&mut self, item: Item) -> ItemRef {
        let index = u32::try_from(self.items.len()).unwrap_or(u32::MAX);
        self.items.push(item);
        ItemRef(index)
    }

    /// The items, in order.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The item `r` refers to.
    pub fn get(&self, r: ItemRef) -> Option<&Item> {
        self.items.get(usize::try_from(r.0).ok()?)
    }

    /// The decoded bytes of item `r`. A delta-encoded item needs its
    /// reference: the baseline's bytes of [`Delta::reference`], whose
    /// SHA-256 is checked before anything is decoded; decoding stops at the
    /// item's declared size.
    pub fn contents(&self, r: ItemRef, reference: Option<&[u8]>) -> Result<Cow<'_, [u8]>> {
        self.contents_with(&mut Decoder::new(), r, reference)
    }

    /// [`Payload::contents`] with a [`Decoder`] reused across items:
    /// decoding many delta items then sets up one zstd context instead of
    /// one per item.
    pub fn contents_with<'r>(
        &self,
        decoder: &mut Decoder<'r>,
        r: ItemRef,
        reference: Option<&'r [u8]>,
    ) -> Result<Cow<'_, [u8]>> {
        let item = self.get(r).ok_or_else(|| PackageError::Payload {
            detail: format!("{r} does not exist ({} items)", self.items.len()),
        })?;
        match &item.body {
            Body::Raw(b) => Ok(Cow::Borrowed(b)),
            Body::Delta(d) => {
                let reference = reference.ok_or_else(|| PackageError::Payload {
                    detail: format!(
                        "{r} is a delta against baseline bytes {:#x}+{}, which were not given",
                        d.reference.rva, d.reference.size
                    ),
                })?;
                let actual = Sha256Digest::of(reference);
                if actual != d.reference.sha256 || reference.len() as u64 != d.reference.size {
                    return Err(PackageError::ReferenceMismatch {
                        item: r.0,
                        rva: d.reference.rva,
                        size: d.reference.size,
                        expected: d.reference.sha256,
                        actual,
                    });
                }
                decode_delta(decoder, r, d, reference).map(Cow::Owned)
            }
        }
    }

    /// Check the items: alignments, sizes, and relocation records (sorted,
    /// not overlapping, inside the item, AArch64 instructions 4-aligned,
    /// item targets existing, import names sane).
    pub fn validate(&self) -> Result<()> {
        let count = self.items.len();
        if count > MAX_ITEMS as usize {
            return Err(payload_err(format!(
                "{count} items exceed the cap of {MAX_ITEMS}"
            )));
        }
        for (i, item) in self.items.iter().enumerate() {
            validate_item(i, item, count)?;
        }
        Ok(())
    }

    /// The binary encoding (before compression), `formats/SPEC.md`
    /// section 5.1: the import table, then the items with their
    /// relocation records as varints.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let imports = self.import_table();
        let mut out = Vec::new();
        put_varint(&mut out, imports.len() as u64);
        for (slot_rva, name) in &imports {
            put_varint(&mut out, *slot_rva);
            put_varint(&mut out, name.len() as u64);
            out.extend_from_slice(name.as_bytes());
        }
        put_varint(&mut out, self.items.len() as u64);
        for item in &self.items {
            let align_log2 = item.align.trailing_zeros() as u8;
            match &item.body {
                Body::Raw(b) => {
                    out.push(align_log2);
                    put_varint(&mut out, b.len() as u64);
                    out.extend_from_slice(b);
                }
                Body::Delta(d) => {
                    out.push(align_log2 | ENCODING_DELTA);
                    put_varint(&mut out, d.size);
                    put_varint(&mut out, d.reference.rva);
                    put_varint(&mut out, d.reference.size);
                    out.extend_from_slice(d.reference.sha256.as_bytes());
                    put_varint(&mut out, d.frame.len() as u64);
                    out.extend_from_slice(&d.frame);
                }
            }
            put_varint(&mut out, item.relocations.len() as u64);
            let mut end_of_previous = 0u64;
            for r in &item.relocations {
                // validate() checked the order: the gap is never negative.
                put_varint(&mut out, r.offset.saturating_sub(end_of_previous));
                end_of_previous = r.offset.saturating_add(r.kind.width() as u64);
                out.push(r.kind.code() | r.kind.scale() << 5);
                let target = match &r.target {
                    Target::BaselineRva(rva) => rva << 2 | TAG_RVA,
                    Target::Item(ItemRef(i)) => u64::from(*i) << 2 | TAG_ITEM,
                    Target::Import { slot_rva, name } => {
                        let k = imports
                            .binary_search_by(|(s, n)| (*s, *n).cmp(&(*slot_rva, name.as_str())))
                            .map_err(|_| payload_err("import missing from its table".into()))?;
                        (k as u64) << 2 | TAG_IMPORT
                    }
                };
                put_varint(&mut out, target);
                put_zigzag(&mut out, r.addend);
            }
        }
        Ok(out)
    }

    /// Every import the relocations name, once, sorted by slot then name.
    fn import_table(&self) -> Vec<(u64, &str)> {
        let set: std::collections::BTreeSet<(u64, &str)> = self
            .items
            .iter()
            .flat_map(|i| &i.relocations)
            .filter_map(|r| match &r.target {
                Target::Import { slot_rva, name } => Some((*slot_rva, name.as_str())),
                _ => None,
            })
            .collect();
        set.into_iter().collect()
    }

    /// Decode the binary encoding, checking every count against the bytes
    /// left before allocating for it, then [`Payload::validate`]. The items'
    /// bytes share `bytes`' buffer.
    pub fn decode(bytes: impl Into<Bytes>) -> Result<Payload> {
        let shared: Bytes = bytes.into();
        let mut c = Cursor::new(&shared);
        let imports = decode_imports(&mut c)?;
        let mut used = vec![false; imports.len()];
        let count = c.varint("item count").map_err(payload_err)?;
        if count > u64::from(MAX_ITEMS) {
            return Err(payload_err(format!(
                "item count {count} exceeds the cap of {MAX_ITEMS}"
            )));
        }
        bounded_count(count, MIN_ITEM_BYTES, c.remaining(), "item count").map_err(payload_err)?;
        let mut items = Vec::with_capacity(usize_len(count));
        for i in 0..count {
            items.push(
                decode_item(&mut c, &shared, &imports, &mut used)
                    .map_err(|e| payload_err(format!("item {i}: {e}")))?,
            );
        }
        if c.remaining() != 0 {
            return Err(payload_err(format!(
                "{} trailing bytes after the last item (at offset {})",
                c.remaining(),
                c.position()
            )));
        }
        if let Some(k) = used.iter().position(|u| !u) {
            return Err(payload_err(format!(
                "import {k} of the import table is used by no relocation"
            )));
        }
        let payload = Payload { items };
        payload.validate()?;
        Ok(payload)
    }
}

/// Bit 5 of an item's first byte: the body is a zstd delta.
const ENCODING_DELTA: u8 = 0x20;

/// The import table: sorted by (slot, name), no duplicates.
fn decode_imports(c: &mut Cursor<'_>) -> Result<Vec<(u64, String)>> {
    let count = c.varint("import count").map_err(payload_err)?;
    if count > MAX_IMPORTS {
        return Err(payload_err(format!(
            "import count {count} exceeds the cap of {MAX_IMPORTS}"
        )));
    }
    bounded_count(count, MIN_IMPORT_BYTES, c.remaining(), "import count").map_err(payload_err)?;
    let mut imports: Vec<(u64, String)> = Vec::with_capacity(usize_len(count));
    for k in 0..count {
        let err = |e: String| payload_err(format!("import {k}: {e}"));
        let slot_rva = c.varint("slot rva").map_err(err)?;
        let len = c.varint("name length").map_err(err)?;
        if len == 0 || len > MAX_IMPORT_NAME as u64 {
            return Err(err(format!(
                "name length {len} is not within 1..={MAX_IMPORT_NAME}"
            )));
        }
        let name = c.take(usize_len(len), "import name").map_err(err)?;
        let name =
            std::str::from_utf8(name).map_err(|_| err("import name is not UTF-8".to_string()))?;
        if name.contains('\0') {
            return Err(err("import name contains NUL".to_string()));
        }
        if let Some((s, n)) = imports.last() {
            if (*s, n.as_str()) >= (slot_rva, name) {
                return Err(err(
                    "the import table is not sorted by slot and name, or repeats an entry".into(),
                ));
            }
        }
        imports.push((slot_rva, name.to_string()));
    }
    Ok(imports)
}

/// The bytes `c` just read (the last `len` bytes before its position), as
/// a slice of `shared`.
fn shared_slice(c: &Cursor<'_>, shared: &Bytes, len: usize) -> std::result::Result<Bytes, String> {
    let end = c.position();
    end.checked_sub(len)
        .and_then(|start| shared.slice(start..end))
        .ok_or_else(|| "data out of bounds".to_string())
}

fn decode_item(
    c: &mut Cursor<'_>,
    shared: &Bytes,
    imports: &[(u64, String)],
    used: &mut [bool],
) -> std::result::Result<Item, String> {
    let flags = c.u8("flags")?;
    let align_log2 = flags & 0x1f;
    if align_log2 > MAX_ALIGN.trailing_zeros() as u8 {
        return Err(format!(
            "alignment 2^{align_log2} exceeds the cap of {MAX_ALIGN}"
        ));
    }
    let align = 1u32 << align_log2;
    let size = c.varint("size")?;
    if size > MAX_ITEM_SIZE {
        return Err(format!("size {size} exceeds the cap of {MAX_ITEM_SIZE}"));
    }
    let body = match flags & !0x1f {
        0 => {
            let len = usize_of(size)?;
            c.take(len, "data")?;
            Body::Raw(shared_slice(c, shared, len)?)
        }
        ENCODING_DELTA => {
            let rva = c.varint("reference rva")?;
            let ref_size = c.varint("reference size")?;
            let sha = c.bytes32("reference sha256")?;
            let len = c.varint("frame length")?;
            if len > c.remaining() as u64 {
                return Err(format!(
                    "delta frame of {len} bytes, {} are left",
                    c.remaining()
                ));
            }
            let len = usize_of(len)?;
            c.take(len, "delta frame")?;
            let frame = shared_slice(c, shared, len)?;
            Body::Delta(Delta {
                reference: Reference {
                    rva,
                    size: ref_size,
                    sha256: Sha256Digest(sha),
                },
                size,
                frame,
            })
        }
        e => return Err(format!("unknown body encoding {:#x}", e >> 5)),
    };
    let count = c.varint("relocation count")?;
    bounded_count(count, MIN_RELOC_BYTES, c.remaining(), "relocation count")?;
    let mut relocations = Vec::with_capacity(usize_len(count));
    let mut end_of_previous = 0u64;
    for k in 0..count {
        let r = decode_reloc(c, end_of_previous, imports, used)
            .map_err(|e| format!("relocation {k}: {e}"))?;
        end_of_previous = r.offset.saturating_add(r.kind.width() as u64);
        relocations.push(r);
    }
    Ok(Item {
        align,
        body,
        relocations,
    })
}

fn decode_reloc(
    c: &mut Cursor<'_>,
    end_of_previous: u64,
    imports: &[(u64, String)],
    used: &mut [bool],
) -> std::result::Result<Relocation, String> {
    let gap = c.varint("offset gap")?;
    let offset = end_of_previous
        .checked_add(gap)
        .filter(|&o| o <= MAX_ITEM_SIZE)
        .ok_or_else(|| format!("offset gap {gap} runs past the largest item"))?;
    let byte = c.u8("kind")?;
    let (code, scale) = (byte & 0x1f, byte >> 5);
    let kind = RelocKind::from_code(code, scale)
        .ok_or_else(|| format!("unknown relocation kind {code} with scale {scale}"))?;
    let t = c.varint("target")?;
    let target = match t & 3 {
        TAG_RVA => Target::BaselineRva(t >> 2),
        TAG_ITEM => Target::Item(ItemRef(
            u32::try_from(t >> 2).map_err(|_| format!("item target {} is too large", t >> 2))?,
        )),
        TAG_IMPORT => {
            let k = usize::try_from(t >> 2).unwrap_or(usize::MAX);
            let (slot_rva, name) = imports.get(k).ok_or_else(|| {
                format!(
                    "import {} is not in the import table of {}",
                    t >> 2,
                    imports.len()
                )
            })?;
            if let Some(u) = used.get_mut(k) {
                *u = true;
            }
            Target::Import {
                slot_rva: *slot_rva,
                name: name.clone(),
            }
        }
        tag => return Err(format!("unknown target tag {tag}")),
    };
    let addend = c.zigzag("addend")?;
    Ok(Relocation {
        offset,
        kind,
        target,
        addend,
    })
}

fn validate_item(index: usize, item: &Item, count: usize) -> Result<()> {
    let err = |detail: String| payload_err(format!("item {index}: {detail}"));
    if !item.align.is_power_of_two() || item.align > MAX_ALIGN {
        return Err(err(format!(
            "alignment {} is not a power of two up to {MAX_ALIGN}",
            item.align
        )));
    }
    let size = item.size();
    if size > MAX_ITEM_SIZE {
        return Err(err(format!(
            "size {size} exceeds the cap of {MAX_ITEM_SIZE}"
        )));
    }
    if let Body::Delta(d) = &item.body {
        if d.reference.size == 0 || d.reference.size > MAX_ITEM_SIZE {
            return Err(err(format!(
                "delta reference size {} is not within 1..={MAX_ITEM_SIZE}",
                d.reference.size
            )));
        }
        if d.reference.rva.checked_add(d.reference.size).is_none() {
            return Err(err("delta reference range overflows".into()));
        }
    }
    let mut end_of_previous = 0u64;
    for (k, r) in item.relocations.iter().enumerate() {
        let rerr =
            |detail: String| err(format!("relocation {k} (offset {:#x}): {detail}", r.offset));
        if k > 0 && r.offset < end_of_previous {
            return Err(rerr(format!(
                "not sorted by offset, or overlaps the previous field (which ends at {end_of_previous:#x})"
            )));
        }
        let end = r
            .offset
            .checked_add(r.kind.width() as u64)
            .filter(|&e| e <= size)
            .ok_or_else(|| {
                rerr(format!(
                    "{}-byte {} field runs past the item's {size} bytes",
                    r.kind.width(),
                    r.kind
                ))
            })?;
        if r.kind.is_a64_instruction() && r.offset % 4 != 0 {
            return Err(rerr(format!(
                "{} instruction is not 4-byte aligned",
                r.kind
            )));
        }
        match &r.target {
            Target::BaselineRva(rva) if *rva > MAX_TARGET_RVA => {
                return Err(rerr(format!(
                    "baseline RVA {rva:#x} exceeds the largest encodable {MAX_TARGET_RVA:#x}"
                )));
            }
            Target::Item(ItemRef(t)) if *t as usize >= count => {
                return Err(rerr(format!("targets item {t}, the payload has {count}")));
            }
            Target::Import { name, .. }
                if name.is_empty() || name.len() > MAX_IMPORT_NAME || name.contains('\0') =>
            {
                return Err(rerr(format!(
                    "import name must be 1..={MAX_IMPORT_NAME} bytes without NUL"
                )));
            }
            _ => {}
        }
        end_of_previous = end;
    }
    Ok(())
}

/// Link `bytes` (an item's decoded bytes) for placement at `address`:
/// apply every relocation, with `resolve` giving each target's address.
/// This is the one linker the builder's relink check and the applier share.
pub fn link(
    item: ItemRef,
    bytes: &mut [u8],
    relocations: &[Relocation],
    address: u64,
    image_base: u64,
    mut resolve: impl FnMut(&Target) -> Option<u64>,
) -> Result<()> {
    for r in relocations {
        let ferr = |error: FieldError| PackageError::Field {
            item: item.0,
            offset: r.offset,
            error,
        };
        let target = resolve(&r.target).ok_or_else(|| PackageError::Payload {
            detail: format!(
                "{item}: relocation at offset {:#x}: cannot resolve its target {:?}",
                r.offset, r.target
            ),
        })?;
        let value = target.checked_add_signed(r.addend).ok_or_else(|| {
            ferr(FieldError::Overflow {
                target,
                addend: r.addend,
            })
        })?;
        let place = address.checked_add(r.offset).ok_or_else(|| {
            ferr(FieldError::Overflow {
                target: address,
                addend: 0,
            })
        })?;
        let field = usize::try_from(r.offset)
            .ok()
            .and_then(|o| bytes.get_mut(o..))
            .ok_or_else(|| {
                ferr(FieldError::Short {
                    kind: r.kind,
                    needed: r.kind.width(),
                    available: 0,
                })
            })?;
        r.kind
            .write(
                field,
                Site {
                    address: place,
                    image_base,
                },
                value,
            )
            .map_err(ferr)?;
    }
    Ok(())
}

/// What [`Payload::contents_with`] keeps between items: a zstd decoding
/// context, limited to the payload's window, reset before each item.
pub struct Decoder<'r> {
    dctx: Option<zstd_safe::DCtx<'r>>,
}

impl std::fmt::Debug for Decoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoder")
    }
}

impl Default for Decoder<'_> {
    fn default() -> Self {
        Decoder::new()
    }
}

impl<'r> Decoder<'r> {
    /// A decoder; its zstd context is made when a first delta needs it.
    pub fn new() -> Self {
        Decoder { dctx: None }
    }
}

fn decode_delta<'r>(
    decoder: &mut Decoder<'r>,
    r: ItemRef,
    d: &Delta,
    reference: &'r [u8],
) -> Result<Vec<u8>> {
    let zerr = |code| PackageError::Zstd {
        what: format!("{r} (delta)"),
        detail: zstd_safe::get_error_name(code).into(),
    };
    match zstd_safe::get_frame_content_size(&d.frame) {
        Ok(Some(n)) if n == d.size => {}
        Ok(Some(n)) => {
            return Err(PackageError::Payload {
                detail: format!("{r}: delta frame declares {n} bytes, the item {}", d.size),
            })
        }
        _ => {
            return Err(PackageError::Payload {
                detail: format!("{r}: delta frame does not declare its size"),
            })
        }
    }
    if zstd_safe::find_frame_compressed_size(&d.frame) != Ok(d.frame.len()) {
        return Err(PackageError::Payload {
            detail: format!("{r}: delta is not exactly one zstd frame"),
        });
    }
    let dctx = match &mut decoder.dctx {
        Some(dctx) => {
            // A new session (a failed item leaves no state behind); the
            // window limit stays.
            dctx.reset(zstd_safe::ResetDirective::SessionOnly)
                .map_err(zerr)?;
            dctx
        }
        slot @ None => {
            let mut dctx = zstd_safe::DCtx::create();
            dctx.set_parameter(zstd_safe::DParameter::WindowLogMax(MAX_WINDOW_LOG))
                .map_err(zerr)?;
            slot.insert(dctx)
        }
    };
    dctx.ref_prefix(reference).map_err(zerr)?;
    let mut out = Vec::with_capacity(usize_of(d.size).map_err(payload_err)?);
    dctx.decompress(&mut out, &d.frame).map_err(zerr)?;
    if out.len() as u64 != d.size {
        return Err(PackageError::Payload {
            detail: format!(
                "{r}: delta decodes to {} bytes, the item {}",
                out.len(),
                d.size
            ),
        });
    }
    Ok(out)
}

/// Refuse a count whose smallest encoding would not fit in what is left.
fn bounded_count(
    count: u64,
    min_bytes: usize,
    remaining: usize,
    what: &str,
) -> std::result::Result<(), String> {
    let need = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(min_bytes));
    if need.is_none_or(|n| n > remaining) {
        return Err(format!(
            "{what} {count} needs at least {} bytes, {remaining} are left",
            need.map_or_else(|| "too many".to_string(), |n| n.to_string())
        ));
    }
    Ok(())
}

fn usize_of(n: u64) -> std::result::Result<usize, String> {
    usize::try_from(n).map_err(|_| format!("length {n} does not fit in memory"))
}

/// A count already bounded by the bytes left, as `usize`.
fn usize_len(n: u64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

fn payload_err(detail: String) -> PackageError {
    PackageError::Payload { detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Payload {
        let mut p = Payload::new();
        let data = p.push(Item::raw(8, vec![0; 16], vec![]));
        // call rel32 to a baseline function, lea rip-relative to the data item,
        // call through the GOT.
        let code = vec![
            0xe8, 0, 0, 0, 0, // call
            0x48, 0x8d, 0x05, 0, 0, 0, 0, // lea rax, [rip+x]
            0xff, 0x15, 0, 0, 0, 0, // call [rip+slot]
            0xc3,
        ];
        p.push(Item::raw(
            16,
            code,
            vec![
                Relocation {
                    offset: 1,
                    kind: RelocKind::Rel32,
                    target: Target::BaselineRva(0x1130),
                    addend: -4,
                },
                Relocation {
                    offset: 8,
                    kind: RelocKind::Rel32,
                    target: Target::Item(data),
                    addend: -4,
                },
                Relocation {
                    offset: 14,
                    kind: RelocKind::Rel32,
                    target: Target::Import {
                        slot_rva: 0x3fd8,
                        name: "memcpy".into(),
                    },
                    addend: -4,
                },
            ],
        ));
        p
    }

    #[test]
    fn encode_decode_round_trips() {
        let p = sample();
        let bytes = p.encode().unwrap();
        assert_eq!(Payload::decode(&bytes).unwrap(), p);
        // Every truncation is refused, none panics.
        for n in 0..bytes.len() {
            assert!(Payload::decode(&bytes[..n]).is_err(), "prefix {n} accepted");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            Payload::decode(&long).unwrap_err().to_string(),
            format!(
                "payload: 1 trailing bytes after the last item (at offset {})",
                bytes.len()
            )
        );
    }

    /// One decoder serves many delta items, each against its own
    /// reference, and a failed item leaves nothing for the next one.
    #[test]
    fn one_decoder_decodes_many_deltas() {
        let refs: Vec<Vec<u8>> = (0..3u8)
            .map(|k| {
                (0..200u8)
                    .map(|i| i.wrapping_mul(7).wrapping_add(k))
                    .collect()
            })
            .collect();
        let news: Vec<Vec<u8>> = refs
            .iter()
            .map(|r| {
                let mut n = r.clone();
                n[10] ^= 0x55;
                n.extend_from_slice(b"tail");
                n
            })
            .collect();
        let mut p = Payload::new();
        for (k, (r, n)) in refs.iter().zip(&news).enumerate() {
            let body = Body::delta(n, 0x1000 * k as u64, r).unwrap();
            p.push(Item {
                align: 1,
                body,
                relocations: vec![],
            });
        }
        let mut dec = Decoder::new();
        // An item whose first block cannot be decoded: zstd fails inside
        // the frame.
        let mut bad = p.clone();
        if let Body::Delta(d) = &mut bad.items[1].body {
            let mut frame = d.frame.to_vec();
            // Magic, descriptor, window byte (unless single segment),
            // dictionary id, content size: then the first block header.
            let fhd = frame[4];
            let single = fhd & 0x20 != 0;
            let did = [0, 1, 2, 4][usize::from(fhd & 3)];
            let fcs = match fhd >> 6 {
                0 => usize::from(single),
                1 => 2,
                2 => 4,
                _ => 8,
            };
            let at = 5 + usize::from(!single) + did + fcs;
            // The block's content (its header, and so the frame's
            // layout, kept): literals and sequences headers that cannot be.
            let block = u32::from_le_bytes([frame[at], frame[at + 1], frame[at + 2], 0]);
            assert_eq!((block >> 1) & 3, 2, "a compressed block");
            frame[at + 3..].fill(0xff);
            d.frame = Bytes::from(frame);
        }
        let e = bad
            .contents_with(&mut dec, ItemRef(1), Some(&refs[1]))
            .unwrap_err();
        assert!(e.to_string().starts_with("item 1 (delta): zstd: "), "{e}");
        for k in [0, 2, 1, 0] {
            let got = p
                .contents_with(&mut dec, ItemRef(k as u32), Some(&refs[k]))
                .unwrap();
            assert_eq!(&*got, &news[k][..], "item {k}");
            assert_eq!(p.contents(ItemRef(k as u32), Some(&refs[k])).unwrap(), got);
        }
    }

    #[test]
    fn decoded_items_share_the_payload_buffer() {
        let bytes = sample().encode().unwrap();
        let p = Payload::decode(bytes).unwrap();
        let (Body::Raw(a), Body::Raw(b)) = (&p.items()[0].body, &p.items()[1].body) else {
            panic!()
        };
        assert!(Arc::ptr_eq(&a.buf, &b.buf));
        assert_eq!(a.slice(0..16).unwrap(), *a);
        assert_eq!(a.slice(2..4).unwrap().len(), 2);
        assert!(a.slice(0..17).is_none());
        assert!(a.slice(usize::MAX - 1..usize::MAX).is_none());
        assert!(a.slice(3..usize::MAX).is_none());
    }

    fn varint(v: u64) -> Vec<u8> {
        let mut b = Vec::new();
        put_varint(&mut b, v);
        b
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut b = [varint(0), varint(u32::MAX as u64)].concat();
        assert_eq!(
            Payload::decode(&b).unwrap_err().to_string(),
            format!(
                "payload: item count {} exceeds the cap of {MAX_ITEMS}",
                u32::MAX
            )
        );
        b = [varint(0), varint(1000)].concat();
        assert_eq!(
            Payload::decode(&b).unwrap_err().to_string(),
            "payload: item count 1000 needs at least 3000 bytes, 0 are left"
        );
        b = varint(1 << 40);
        assert_eq!(
            Payload::decode(&b).unwrap_err().to_string(),
            format!(
                "payload: import count {} exceeds the cap of {MAX_IMPORTS}",
                1u64 << 40
            )
        );
    }

    /// The encoding of one raw item of `data` with `relocs` (already
    /// encoded records) after an empty import table.
    fn one_item(data: &[u8], relocs: &[&[u8]]) -> Vec<u8> {
        let mut b = [varint(0), varint(1), vec![0], varint(data.len() as u64)].concat();
        b.extend_from_slice(data);
        b.extend(varint(relocs.len() as u64));
        for r in relocs {
            b.extend_from_slice(r);
        }
        b
    }

    #[test]
    fn relocation_count_larger_than_the_data_is_refused() {
        let mut b = one_item(&[0; 8], &[]);
        b.pop();
        b.extend(varint(50));
        b.extend_from_slice(&[0; 20]);
        assert_eq!(
            Payload::decode(&b).unwrap_err().to_string(),
            "payload: item 0: relocation count 50 needs at least 200 bytes, 20 are left"
        );
    }

    #[test]
    fn truncated_varint_in_a_relocation_is_refused() {
        // gap 0, rel32, then a target varint cut short at the end.
        let b = one_item(&[0; 8], &[&[0, 1, 0x80, 0x80, 0x80]]);
        assert_eq!(
            Payload::decode(&b).unwrap_err().to_string(),
            format!(
                "payload: item 0: relocation 0: target: needs 1 bytes at offset {}, 0 left",
                b.len()
            )
        );
        // A varint that never ends.
        let b = one_item(&[0; 8], &[&[0x80; 12]]);
        assert_eq!(
            Payload::decode(&b).unwrap_err().to_string(),
            "payload: item 0: relocation 0: offset gap: varint exceeds 64 bits"
        );
    }

    #[test]
    fn delta_frame_longer_than_the_data_is_refused() {
        let mut b = [varint(0), varint(1), vec![4 | ENCODING_DELTA], varint(10)].concat();
        b.extend(varint(0x1000));
        b.extend(varint(10));
        b.extend_from_slice(&[0; 32]);
        b.extend(varint(1 << 30));
        b.extend_from_slice(&[0; 4]);
        assert_eq!(
            Payload::decode(&b).unwrap_err().to_string(),
            "payload: item 0: delta frame of 1073741824 bytes, 4 are left"
        );
    }

    #[test]
    fn import_table_must_be_sorted_and_used() {
        let import = |slot: u64, name: &str| {
            [
                varint(slot),
                varint(name.len() as u64),
                name.as_bytes().to_vec(),
            ]
            .concat()
        };
        let tail = [varint(0)].concat();
        let b = [varint(2), import(8, "b"), import(8, "a"), tail.clone()].concat();
        assert_eq!(
            Payload::decode(&b).unwrap_err().to_string(),
            "payload: import 1: the import table is not sorted by slot and name, or repeats an entry"
        );
        let b = [varint(1), import(8, "a"), tail.clone()].concat();
        assert_eq!(
            Payload::decode(&b).unwrap_err().to_string(),
            "payload: import 0 of the import table is used by no relocation"
        );
        let b = [varint(1), import(8, ""), tail].concat();
        assert_eq!(
            Payload::decode(&b).unwrap_err().to_string(),
            "payload: import 0: name length 0 is not within 1..=1024"
        );
    }

    #[test]
    fn relocations_are_delta_coded_and_imports_named_once() {
        let mut p = sample();
        let code = p.items[1].clone();
        p.push(code);
        let bytes = p.encode().unwrap();
        // "memcpy" appears once although two items import it.
        assert_eq!(bytes.windows(6).filter(|w| w == b"memcpy").count(), 1);
        assert_eq!(Payload::decode(&bytes).unwrap(), p);
        // Three records of at most 1 + 1 + 3 + 1 bytes each, far from 27.
        let item1 = one_item(&[0; 19], &[]).len();
        assert!(
            bytes.len() < 16 + 3 * item1 + 2 * 3 * 6 + 12,
            "{}",
            bytes.len()
        );
    }

    #[test]
    fn link_applies_every_record() {
        let p = sample();
        let item = &p.items()[1];
        let mut bytes = p.contents(ItemRef(1), None).unwrap().into_owned();
        let base = 0x7f00_0000_0000;
        let here = base + 0x10_0000;
        let data_at = base + 0x10_1000;
        link(
            ItemRef(1),
            &mut bytes,
            &item.relocations,
            here,
            base,
            |t| match t {
                Target::BaselineRva(rva) => Some(base + rva),
                Target::Item(ItemRef(0)) => Some(data_at),
                Target::Import { slot_rva, .. } => Some(base + slot_rva),
                Target::Item(_) => None,
            },
        )
        .unwrap();
        let rel = |o: usize| i32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as i64;
        assert_eq!((here as i64 + 5 + rel(1)) as u64, base + 0x1130);
        assert_eq!((here as i64 + 12 + rel(8)) as u64, data_at);
        assert_eq!((here as i64 + 18 + rel(14)) as u64, base + 0x3fd8);
        // Out of range: the data 4 GiB away.
        let err = link(
            ItemRef(1),
            &mut bytes,
            &item.relocations,
            here,
            base,
            |t| match t {
                Target::Item(_) => Some(here + (5 << 30)),
                _ => Some(here),
            },
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("item 1: relocation at offset 0x8: rel32 field: V - P"),
            "{err}"
        );
    }

    #[test]
    fn validation_refuses_bad_records() {
        let mut p = sample();
        p.items[1].relocations.swap(0, 1);
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not sorted by offset"));
        let mut p = sample();
        p.items[1].relocations[2].offset = 16;
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "payload: item 1: relocation 2 (offset 0x10): 4-byte rel32 field runs past the item's 19 bytes"
        );
        let mut p = sample();
        p.items[1].relocations[1].target = Target::Item(ItemRef(7));
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .ends_with("targets item 7, the payload has 2"));
        let mut p = sample();
        p.items[0].align = 3;
        assert!(p.validate().is_err());
        let mut p = sample();
        p.items[1].relocations[0].kind = RelocKind::A64Branch26;
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not 4-byte aligned"));
    }

    #[test]
    fn delta_round_trips_and_checks_its_reference() {
        let old: Vec<u8> = (0..4000u32).flat_map(|i| (i * 7).to_le_bytes()).collect();
        let mut new = old.clone();
        new[100] ^= 0xff;
        new.extend_from_slice(b"a few new bytes");
        let body = Body::delta(&new, 0x4000, &old).unwrap();
        let Body::Delta(d) = &body else { panic!() };
        assert!(d.frame.len() < 100, "delta is {} bytes", d.frame.len());
        let mut p = Payload::new();
        let r = p.push(Item {
            align: 16,
            body,
            relocations: vec![],
        });
        let p = Payload::decode(p.encode().unwrap()).unwrap();
        assert_eq!(p.contents(r, Some(&old)).unwrap().as_ref(), &new[..]);
        let mut wrong = old.clone();
        wrong[0] ^= 1;
        assert!(matches!(
            p.contents(r, Some(&wrong)),
            Err(PackageError::ReferenceMismatch {
                item: 0,
                rva: 0x4000,
                ..
            })
        ));
        assert!(p
            .contents(r, None)
            .unwrap_err()
            .to_string()
            .contains("which were not given"));
        // Deterministic.
        assert_eq!(
            Body::delta(&new, 0x4000, &old).unwrap(),
            Body::delta(&new, 0x4000, &old).unwrap()
        );
    }

    #[test]
    fn delta_lying_about_its_size_is_refused() {
        let old = vec![1u8; 64];
        let body = Body::delta(&[2u8; 5000], 0, &old).unwrap();
        let Body::Delta(mut d) = body else { panic!() };
        d.size = 10;
        let mut p = Payload::new();
        let r = p.push(Item {
            align: 1,
            body: Body::Delta(d),
            relocations: vec![],
        });
        assert_eq!(
            p.contents(r, Some(&old)).unwrap_err().to_string(),
            "payload: item 0: delta frame declares 5000 bytes, the item 10"
        );
    }
}

//! Sizes of data objects from the PDB's type stream (TPI).
//!
//! Only what a variable's size needs is decoded, straight from the record
//! bytes (the `pdb` crate's type parser asserts on some malformed records,
//! so it is not used on this untrusted input):
//!
//! - primitive type indexes (below `0x1000`) by their kind and pointer mode;
//! - `LF_POINTER` by its size field (or its kind when the field is zero);
//! - `LF_MODIFIER` (`const`, `volatile`, `__unaligned`) by the modified type;
//! - `LF_ARRAY` by its byte-size field;
//! - `LF_CLASS`, `LF_STRUCTURE`, `LF_INTERFACE`, `LF_UNION` by their size
//!   field; a forward reference is resolved to the full definition with the
//!   same unique name (when it has one) or else the same name, provided all
//!   such definitions agree on the size;
//! - `LF_ENUM` by its underlying type.
//!
//! Anything else (function types, unknown leaves, damaged records, a size of
//! zero) gives no size; the caller then falls back to the gap to the next
//! symbol.

use std::collections::HashMap;

use super::cursor::Cursor;

/// `LF_MODIFIER`.
const LF_MODIFIER: u16 = 0x1001;
/// `LF_POINTER`.
const LF_POINTER: u16 = 0x1002;
/// `LF_ARRAY`.
const LF_ARRAY: u16 = 0x1503;
/// `LF_CLASS`.
const LF_CLASS: u16 = 0x1504;
/// `LF_STRUCTURE`.
const LF_STRUCTURE: u16 = 0x1505;
/// `LF_UNION`.
const LF_UNION: u16 = 0x1506;
/// `LF_ENUM`.
const LF_ENUM: u16 = 0x1507;
/// `LF_INTERFACE`.
const LF_INTERFACE: u16 = 0x1519;

/// Numeric leaves that follow a value in a record (`LF_CHAR` and on).
const LF_NUMERIC: u16 = 0x8000;
/// `LF_CHAR`: a signed 8-bit value follows.
const LF_CHAR: u16 = 0x8000;
/// `LF_SHORT`: a signed 16-bit value follows.
const LF_SHORT: u16 = 0x8001;
/// `LF_USHORT`: an unsigned 16-bit value follows.
const LF_USHORT: u16 = 0x8002;
/// `LF_LONG`: a signed 32-bit value follows.
const LF_LONG: u16 = 0x8003;
/// `LF_ULONG`: an unsigned 32-bit value follows.
const LF_ULONG: u16 = 0x8004;
/// `LF_QUADWORD`: a signed 64-bit value follows.
const LF_QUADWORD: u16 = 0x8009;
/// `LF_UQUADWORD`: an unsigned 64-bit value follows.
const LF_UQUADWORD: u16 = 0x800a;

/// Property bit: this record is a forward reference.
const PROP_FORWARD_REF: u16 = 0x0080;
/// Property bit: a unique (decorated) name follows the name.
const PROP_HAS_UNIQUE_NAME: u16 = 0x0200;

/// The first type index stored in the stream; lower ones are primitive.
const FIRST_NON_PRIMITIVE: u32 = 0x1000;

/// How deep a chain of modifiers, arrays of records and so on may go. Real
/// chains are a handful long; the limit stops crafted cycles.
const MAX_DEPTH: u32 = 32;

/// Byte length of the TPI stream header fields this reader uses.
const HEADER_MIN: usize = 16;

/// Which tag namespace a record type lives in, for forward references.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Tag {
    /// `class`, `struct` or `interface`.
    Record,
    /// `union`.
    Union,
}

/// What resolving a name to a definition found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Definition {
    /// All definitions with this name have this size.
    Size(u64),
    /// Definitions with this name disagree on the size.
    Ambiguous,
}

/// A numeric leaf, if it holds a non-negative value.
pub(super) fn numeric(c: &mut Cursor<'_>) -> Option<u64> {
    let leaf = c.u16()?;
    if leaf < LF_NUMERIC {
        return Some(u64::from(leaf));
    }
    match leaf {
        LF_CHAR => u64::try_from(i8::from_le_bytes([c.u8()?])).ok(),
        LF_SHORT => u64::try_from(i16::from_le_bytes(c.u16()?.to_le_bytes())).ok(),
        LF_USHORT => c.u16().map(u64::from),
        LF_LONG => u64::try_from(i32::from_le_bytes(c.u32()?.to_le_bytes())).ok(),
        LF_ULONG => c.u32().map(u64::from),
        LF_QUADWORD => u64::try_from(i64::from_le_bytes(c.u64()?.to_le_bytes())).ok(),
        LF_UQUADWORD => c.u64(),
        _ => None,
    }
}

/// The parts of a class, structure, interface or union record that matter.
pub(super) struct Aggregate<'a> {
    /// Its tag namespace.
    tag: Tag,
    /// Whether it is only a forward reference.
    pub(super) forward: bool,
    /// Its field list (`LF_FIELDLIST` type index; 0 for none).
    pub(super) fields: u32,
    /// Its size field, if readable and not negative.
    pub(super) size: Option<u64>,
    /// Its name.
    pub(super) name: &'a [u8],
    /// Its unique (decorated) name, if it has one.
    unique_name: Option<&'a [u8]>,
}

/// Decode a class/structure/interface/union record (`kind` and the bytes
/// after it).
pub(super) fn aggregate(kind: u16, body: &[u8]) -> Option<Aggregate<'_>> {
    let mut c = Cursor::new(body);
    let _count = c.u16()?;
    let props = c.u16()?;
    let fields = c.u32()?;
    let tag = match kind {
        LF_CLASS | LF_STRUCTURE | LF_INTERFACE => {
            let _derived = c.u32()?;
            let _vshape = c.u32()?;
            Tag::Record
        }
        LF_UNION => Tag::Union,
        _ => return None,
    };
    let size = numeric(&mut c);
    let name = c.cstr()?;
    let unique_name = if props & PROP_HAS_UNIQUE_NAME != 0 {
        c.cstr()
    } else {
        None
    };
    Some(Aggregate {
        tag,
        forward: props & PROP_FORWARD_REF != 0,
        fields,
        size,
        name,
        unique_name,
    })
}

/// Record a definition's size under `key`, marking disagreements.
fn note<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Definition>, key: K, size: u64) {
    map.entry(key)
        .and_modify(|d| {
            if *d != Definition::Size(size) {
                *d = Definition::Ambiguous;
            }
        })
        .or_insert(Definition::Size(size));
}

/// The type records of a PDB, indexed for size queries.
pub(super) struct TypeTable<'a> {
    /// Type index of `records[0]`.
    first_index: u32,
    /// Each record: its leaf kind and the bytes after the kind.
    records: Vec<(u16, &'a [u8])>,
    /// Full definitions by unique name.
    by_unique_name: HashMap<(Tag, &'a [u8]), Definition>,
    /// Full definitions by name.
    by_name: HashMap<(Tag, &'a [u8]), Definition>,
}

impl<'a> TypeTable<'a> {
    /// A table with no records: only primitive types resolve.
    pub(super) fn empty() -> Self {
        TypeTable {
            first_index: FIRST_NON_PRIMITIVE,
            records: Vec::new(),
            by_unique_name: HashMap::new(),
            by_name: HashMap::new(),
        }
    }

    /// Index the TPI stream's bytes. Errors describe what is damaged.
    pub(super) fn parse(stream: &'a [u8]) -> Result<Self, String> {
        Self::parse_named(stream, "type stream (TPI)")
    }

    /// Index a stream laid out like the TPI stream (the TPI stream, or the
    /// IPI stream of item records), named `what` in errors.
    pub(super) fn parse_named(stream: &'a [u8], what: &str) -> Result<Self, String> {
        if stream.is_empty() {
            return Ok(Self::empty());
        }
        if stream.len() < HEADER_MIN {
            return Err(format!(
                "the {what} is {} bytes, too short for its header",
                stream.len()
            ));
        }
        let mut header = Cursor::new(stream);
        let _version = header.u32();
        let header_size = header.u32().unwrap_or_default();
        let first_index = header.u32().unwrap_or_default();
        let end_index = header.u32().unwrap_or_default();
        if first_index < FIRST_NON_PRIMITIVE || end_index < first_index {
            return Err(format!(
                "the {what} header has an invalid index range {first_index:#x}..{end_index:#x}"
            ));
        }
        let body = usize::try_from(header_size)
            .ok()
            .filter(|&h| h >= HEADER_MIN)
            .and_then(|h| stream.get(h..))
            .ok_or_else(|| {
                format!(
                    "the {what} header size {header_size} is outside the {}-byte stream",
                    stream.len()
                )
            })?;
        let declared = end_index.saturating_sub(first_index);
        let mut records = Vec::new();
        let mut c = Cursor::new(body);
        // Records are only trusted up to the declared count; each one takes
        // at least four bytes, so the vector is bounded by the stream size.
        while !c.is_empty() && u32::try_from(records.len()).is_ok_and(|n| n < declared) {
            let at = c.pos();
            let record = c
                .u16()
                .and_then(|len| c.take(usize::from(len)))
                .filter(|r| r.len() >= 2)
                .ok_or_else(|| {
                    format!(
                        "the {what} is damaged: the record at offset {:#x} is truncated or too short",
                        at.saturating_add(usize::try_from(header_size).unwrap_or_default())
                    )
                })?;
            let kind = u16::from_le_bytes([
                record.first().copied().unwrap_or_default(),
                record.get(1).copied().unwrap_or_default(),
            ]);
            records.push((kind, record.get(2..).unwrap_or_default()));
        }

        let mut by_unique_name = HashMap::new();
        let mut by_name = HashMap::new();
        for &(kind, body) in &records {
            let Some(agg) = aggregate(kind, body) else {
                continue;
            };
            if agg.forward {
                continue;
            }
            let Some(size) = agg.size else {
                continue;
            };
            if let Some(unique) = agg.unique_name {
                note(&mut by_unique_name, (agg.tag, unique), size);
            }
            note(&mut by_name, (agg.tag, agg.name), size);
        }
        Ok(TypeTable {
            first_index,
            records,
            by_unique_name,
            by_name,
        })
    }

    /// The record at type index `index`: its leaf kind and the bytes after
    /// the kind (`None` for a primitive index or one past the stream).
    pub(super) fn record(&self, index: u32) -> Option<(u16, &'a [u8])> {
        let slot = usize::try_from(index.checked_sub(self.first_index)?).ok()?;
        self.records.get(slot).copied()
    }

    /// Every record with its type index, in stream order.
    pub(super) fn records(&self) -> impl Iterator<Item = (u32, u16, &'a [u8])> + '_ {
        self.records
            .iter()
            .zip(self.first_index..)
            .map(|(&(kind, body), index)| (index, kind, body))
    }

    /// The size in bytes of an object of type `index`, when the type says.
    pub(super) fn size_of(&self, index: u32) -> Option<u64> {
        self.size_at(index, 0).filter(|&s| s > 0)
    }

    /// [`Self::size_of`], `depth` levels into a chain of references.
    fn size_at(&self, index: u32, depth: u32) -> Option<u64> {
        if depth > MAX_DEPTH {
            return None;
        }
        let next = depth.checked_add(1)?;
        if index < FIRST_NON_PRIMITIVE {
            return primitive_size(index);
        }
        let slot = usize::try_from(index.checked_sub(self.first_index)?).ok()?;
        let &(kind, body) = self.records.get(slot)?;
        let mut c = Cursor::new(body);
        match kind {
            LF_MODIFIER => self.size_at(c.u32()?, next),
            LF_POINTER => {
                let _referent = c.u32()?;
                pointer_size(c.u32()?)
            }
            LF_ARRAY => {
                let _element = c.u32()?;
                let _index_type = c.u32()?;
                numeric(&mut c)
            }
            LF_ENUM => {
                let _count = c.u16()?;
                let _props = c.u16()?;
                self.size_at(c.u32()?, next)
            }
            LF_CLASS | LF_STRUCTURE | LF_INTERFACE | LF_UNION => {
                let agg = aggregate(kind, body)?;
                if !agg.forward {
                    return agg.size;
                }
                let found = match agg.unique_name {
                    Some(unique) => self.by_unique_name.get(&(agg.tag, unique)),
                    None => self.by_name.get(&(agg.tag, agg.name)),
                };
                match found {
                    Some(Definition::Size(size)) => Some(*size),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// Size of a pointer from its `LF_POINTER` attributes.
fn pointer_size(attrs: u32) -> Option<u64> {
    let size = (attrs >> 13) & 0x3f;
    if size != 0 {
        return Some(u64::from(size));
    }
    match attrs & 0x1f {
        // Near16 / Far16 / Huge16 and the based 16-bit kinds.
        0x00 => Some(2),
        0x01 | 0x02 => Some(4),
        // Near32, far 16:32, 64-bit.
        0x0a => Some(4),
        0x0b => Some(6),
        0x0c => Some(8),
        _ => None,
    }
}

/// Size of a primitive type (`index` below `0x1000`).
fn primitive_size(index: u32) -> Option<u64> {
    let mode = (index >> 8) & 0xf;
    let kind = index & 0xff;
    match mode {
        0 => {}
        // Near 16-bit pointer.
        1 => return Some(2),
        // Far / huge 16:16 pointers and near 32-bit pointers.
        2..=4 => return Some(4),
        // Far 16:32 pointer.
        5 => return Some(6),
        // 64-bit pointer.
        6 => return Some(8),
        // 128-bit pointer.
        7 => return Some(16),
        _ => return None,
    }
    let size = match kind {
        // HRESULT.
        0x08 => 4,
        // signed char, unsigned char, char8_t, char, int8, uint8.
        0x10 | 0x20 | 0x70 | 0x68 | 0x69 | 0x7c => 1,
        // short, unsigned short, wchar_t, char16_t, int16, uint16.
        0x11 | 0x21 | 0x71 | 0x7a | 0x72 | 0x73 => 2,
        // long, unsigned long, char32_t, int32, uint32.
        0x12 | 0x22 | 0x7b | 0x74 | 0x75 => 4,
        // __int64, unsigned __int64, int64, uint64.
        0x13 | 0x23 | 0x76 | 0x77 => 8,
        // 128-bit integers.
        0x14 | 0x24 | 0x78 | 0x79 => 16,
        // bool8, bool16, bool32, bool64.
        0x30 => 1,
        0x31 => 2,
        0x32 => 4,
        0x33 => 8,
        // float32, float64, float80, float128, float48, float32pp, float16.
        0x40 => 4,
        0x41 => 8,
        0x42 => 10,
        0x43 => 16,
        0x44 => 6,
        0x45 => 4,
        0x46 => 2,
        // complex32, complex64, complex80, complex128.
        0x50 => 8,
        0x51 => 16,
        0x52 => 20,
        0x53 => 32,
        // No type, void and anything unknown.
        _ => return None,
    };
    Some(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TPI stream from records (each: kind and body).
    fn stream(records: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&20040203u32.to_le_bytes());
        out.extend_from_slice(&56u32.to_le_bytes());
        out.extend_from_slice(&0x1000u32.to_le_bytes());
        let end = 0x1000 + records.len() as u32;
        out.extend_from_slice(&end.to_le_bytes());
        out.resize(56, 0);
        for (kind, body) in records {
            let len = (body.len() + 2) as u16;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(body);
        }
        out
    }

    /// A structure or union record body.
    fn agg(kind: u16, props: u16, size: u16, name: &str, unique: Option<&str>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&props.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        if kind != LF_UNION {
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
        }
        b.extend_from_slice(&size.to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        if let Some(u) = unique {
            b.extend_from_slice(u.as_bytes());
            b.push(0);
        }
        b
    }

    #[test]
    fn primitives() {
        assert_eq!(primitive_size(0x74), Some(4)); // int
        assert_eq!(primitive_size(0x13), Some(8)); // __int64
        assert_eq!(primitive_size(0x41), Some(8)); // double
        assert_eq!(primitive_size(0x30), Some(1)); // bool
        assert_eq!(primitive_size(0x674), Some(8)); // int *
        assert_eq!(primitive_size(0x03), None); // void
    }

    #[test]
    fn records_and_forward_references() {
        let mut modifier = 0x1002u32.to_le_bytes().to_vec();
        modifier.extend_from_slice(&3u16.to_le_bytes());
        let mut array = 0x1002u32.to_le_bytes().to_vec();
        array.extend_from_slice(&0x23u32.to_le_bytes());
        array.extend_from_slice(&LF_ULONG.to_le_bytes());
        array.extend_from_slice(&(40_000u32).to_le_bytes());
        array.push(0);
        let mut ptr = 0x1000u32.to_le_bytes().to_vec();
        ptr.extend_from_slice(&(0x0cu32 | (8 << 13)).to_le_bytes());
        let mut en = 0u16.to_le_bytes().to_vec();
        en.extend_from_slice(&0u16.to_le_bytes());
        en.extend_from_slice(&0x74u32.to_le_bytes());
        en.extend_from_slice(&0u32.to_le_bytes());
        en.extend_from_slice(b"E\0");
        let t = stream(&[
            (
                LF_STRUCTURE,
                agg(LF_STRUCTURE, PROP_FORWARD_REF, 0, "S", None),
            ), // 0x1000
            (LF_MODIFIER, modifier),                             // 0x1001
            (LF_STRUCTURE, agg(LF_STRUCTURE, 0, 24, "S", None)), // 0x1002
            (LF_ARRAY, array),                                   // 0x1003
            (LF_POINTER, ptr),                                   // 0x1004
            (LF_ENUM, en),                                       // 0x1005
            (LF_UNION, agg(LF_UNION, PROP_FORWARD_REF, 0, "U", None)), // 0x1006
            (LF_UNION, agg(LF_UNION, 0, 12, "U", None)),         // 0x1007
            (
                LF_STRUCTURE,
                agg(
                    LF_STRUCTURE,
                    PROP_FORWARD_REF | PROP_HAS_UNIQUE_NAME,
                    0,
                    "T",
                    Some(".?AUT@@"),
                ),
            ), // 0x1008
            (
                LF_STRUCTURE,
                agg(LF_STRUCTURE, PROP_HAS_UNIQUE_NAME, 7, "T", Some(".?AUT@@")),
            ), // 0x1009
        ]);
        let table = TypeTable::parse(&t).unwrap();
        assert_eq!(table.size_of(0x1000), Some(24));
        assert_eq!(table.size_of(0x1001), Some(24));
        assert_eq!(table.size_of(0x1003), Some(40_000));
        assert_eq!(table.size_of(0x1004), Some(8));
        assert_eq!(table.size_of(0x1005), Some(4));
        assert_eq!(table.size_of(0x1006), Some(12));
        assert_eq!(table.size_of(0x1008), Some(7));
        assert_eq!(table.size_of(0x100a), None);
    }

    #[test]
    fn ambiguous_forward_reference_and_cycles() {
        let mut m1 = 0x1003u32.to_le_bytes().to_vec();
        m1.extend_from_slice(&1u16.to_le_bytes());
        let mut m2 = 0x1002u32.to_le_bytes().to_vec();
        m2.extend_from_slice(&1u16.to_le_bytes());
        let t = stream(&[
            (
                LF_STRUCTURE,
                agg(LF_STRUCTURE, PROP_FORWARD_REF, 0, "S", None),
            ),
            (LF_STRUCTURE, agg(LF_STRUCTURE, 0, 8, "S", None)),
            (LF_MODIFIER, m1),
            (LF_MODIFIER, m2),
            (LF_STRUCTURE, agg(LF_STRUCTURE, 0, 16, "S", None)),
        ]);
        let table = TypeTable::parse(&t).unwrap();
        assert_eq!(table.size_of(0x1000), None);
        assert_eq!(table.size_of(0x1002), None);
    }

    #[test]
    fn damaged_streams() {
        assert!(TypeTable::parse(&[1, 2, 3]).is_err());
        let mut t = stream(&[(LF_STRUCTURE, agg(LF_STRUCTURE, 0, 8, "S", None))]);
        t.truncate(t.len() - 3);
        assert!(TypeTable::parse(&t).is_err());
        let mut bad_range = stream(&[]);
        bad_range[8..12].copy_from_slice(&0x10u32.to_le_bytes());
        assert!(TypeTable::parse(&bad_range).is_err());
    }
}

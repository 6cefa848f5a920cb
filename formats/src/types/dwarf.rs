//! Layouts and type uses from DWARF (`.debug_info`, `.debug_abbrev`,
//! `.debug_str`, `.debug_line_str`, `.debug_str_offsets`, `.debug_addr`,
//! `.debug_rnglists`/`.debug_ranges`, and DWARF 4 `.debug_types`), versions 2
//! to 5, through gimli.
//!
//! One pass over every unit's entries (a raw cursor of this module,
//! [`Fast`], that skips what it does not read by sizes planned once per
//! abbreviation, and reads what it does as gimli's raw entry reader
//! does; the tests hold the two to the same result) records the entries
//! that matter: types (structures, unions, classes, typedefs, pointers,
//! references, qualifiers, arrays), functions (`DW_TAG_subprogram`, concrete
//! and abstract) with their parameters and variables at any depth of lexical
//! blocks and inlined subroutines, and the abstract origins of those inlined
//! subroutines. Entries are kept in file order, so a reference is found by
//! binary search. Then:
//!
//! - every complete, named structure, union or class becomes a
//!   [`TypeLayout`];
//! - every function with code (a `DW_AT_low_pc`, or the starts of its
//!   `DW_AT_ranges`, inside an executable section) gets the names of the
//!   types its return type, parameters and variables reach, following
//!   `DW_AT_abstract_origin` and `DW_AT_specification` (GCC describes an
//!   out-of-line or inlined instance by reference to an abstract instance
//!   that holds the types), and the same for every subroutine inlined into
//!   it;
//! - every function with code gets its first line
//!   ([`FunctionLine`]): its `DW_AT_decl_line`, or the one its abstract
//!   origin or specification carries. The declaration line rather than the
//!   line program's row at the entry: it moves with the function's text
//!   exactly as a `__LINE__` in it does, it needs no pass over
//!   `.debug_line`, and it does not depend on which instruction the
//!   compiler scheduled first.
//!
//! Type units (DWARF 4 `.debug_types`, DWARF 5 `DW_UT_type`) are followed
//! through `DW_AT_signature` stand-ins, and a C++ type that a type unit
//! defines at its top level takes the scope of the declaration its
//! `DW_AT_specification` names. GCC's DWARF 2, 4 and 5, with and without
//! `-fdebug-types-section`, give the same layouts and uses for the same
//! source (checked by hand for C and C++, and for clang's DWARF 4 and 5).
//!
//! Not handled: split DWARF (`.dwo` files), supplementary object files
//! (`DW_FORM_GNU_ref_alt`), and compressed sections, which give
//! [`TypeInfo::Unsupported`](crate::image::TypeInfo::Unsupported). A member
//! whose location is not a constant (a virtual base class) is left out of its
//! layout.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::Path;

use gimli::{
    constants as dw, AttributeValue, EndianSlice, LittleEndian, Reader, Section as _, SectionId,
};
use object::elf;
use object::read::elf::{SectionHeader, SectionTable};
use object::Endianness;

use super::{is_placeholder_name, Found, MAX_CHAIN, MAX_FLATTEN, MAX_MEMBERS};
use crate::error::{Error, Result};
use crate::image::{Field, FunctionLine, TypeInfo, TypeKind, TypeLayout, TypeUse};
use crate::name::escape_name;

/// The DWARF reader type: slices of the file.
type R<'d> = EndianSlice<'d, LittleEndian>;

/// The ELF section table type of the readers.
pub(crate) type ElfSections<'d> = SectionTable<'d, object::elf::FileHeader64<Endianness>, &'d [u8]>;

/// What [`Error::Malformed`] says it was reading.
const WHAT: &str = "DWARF debug information";

/// How deep entries may nest. Compilers nest a few dozen levels at most
/// (namespaces, classes, functions, blocks); the limit bounds the context
/// stack on crafted input.
const MAX_NESTING: usize = 1024;

/// This bit of a [`Key`] marks an entry of `.debug_types`. Section offsets
/// are below 2^32 (images are at most 4 GiB), so it is free.
const TYPES_SECTION: u64 = 1 << 40;

/// This bit of a [`Ref`] marks an index into [`Scan::signatures_used`]
/// rather than a key.
const SIG_FLAG: u64 = 1 << 41;

/// This bit of a [`Ref`] in [`Scan::vars`] marks an abstract origin rather
/// than a type.
const ORIGIN_FLAG: u64 = 1 << 42;

/// An entry's identity: its offset in `.debug_info`, or in `.debug_types`
/// with [`TYPES_SECTION`] set.
type Key = u64;

/// A reference from one entry to another, in 8 bytes (and so is an
/// `Option<Ref>`): the key of the entry, or with [`SIG_FLAG`] the index of a
/// type-unit signature (`DW_FORM_ref_sig8`) in [`Scan::signatures_used`].
/// Keys are never 0 (offset 0 is a unit header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ref(NonZeroU64);

impl Ref {
    /// A reference to the entry at `key`.
    fn die(key: Key) -> Option<Ref> {
        if key >= SIG_FLAG {
            return None;
        }
        NonZeroU64::new(key).map(Ref)
    }

    /// A reference to the `index`th signature used.
    fn sig(index: usize) -> Option<Ref> {
        let index = u64::try_from(index).ok().filter(|&i| i < SIG_FLAG)?;
        NonZeroU64::new(index | SIG_FLAG).map(Ref)
    }

    /// The key, unless this is a signature.
    fn key(self) -> Option<Key> {
        let v = self.0.get() & !ORIGIN_FLAG;
        (v & SIG_FLAG == 0).then_some(v)
    }

    /// The signature index, if this is one.
    fn sig_index(self) -> Option<usize> {
        let v = self.0.get() & !ORIGIN_FLAG;
        if v & SIG_FLAG == 0 {
            return None;
        }
        usize::try_from(v & !SIG_FLAG).ok()
    }

    /// This reference marked as an abstract origin (for [`Scan::vars`]).
    fn as_origin(self) -> Ref {
        Ref(self.0 | ORIGIN_FLAG)
    }

    /// Whether it is marked as an abstract origin, and the plain reference.
    fn split_origin(self) -> (bool, Ref) {
        let v = self.0.get();
        let plain = NonZeroU64::new(v & !ORIGIN_FLAG).map_or(self, Ref);
        (v & ORIGIN_FLAG != 0, plain)
    }
}

/// The kinds of type entries kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    /// `DW_TAG_structure_type`.
    Struct,
    /// `DW_TAG_union_type`.
    Union,
    /// `DW_TAG_class_type`.
    Class,
    /// `DW_TAG_typedef`.
    Typedef,
    /// `const`, `volatile`, `restrict`, `_Atomic` and the like: same size,
    /// same type underneath.
    Qualifier,
    /// Pointers, references and pointers to members.
    Pointer,
    /// `DW_TAG_array_type`.
    Array,
    /// Base and enumeration types: a size, and nothing underneath.
    Leaf,
}

impl Tag {
    /// Whether this is a structure, union or class.
    fn is_record(self) -> bool {
        matches!(self, Tag::Struct | Tag::Union | Tag::Class)
    }
}

/// One type entry.
#[derive(Clone, Debug)]
struct TypeDie<'d> {
    /// Where it is.
    key: Key,
    /// Its kind.
    tag: Tag,
    /// `DW_AT_name` (kept for records and typedefs only).
    name: Option<&'d [u8]>,
    /// `DW_AT_type`.
    ty: Option<Ref>,
    /// `DW_AT_signature`: this entry stands for a type defined in a type
    /// unit.
    signature: Option<Ref>,
    /// `DW_AT_specification`: the declaration that completes this one
    /// (GCC's type units define a C++ type at their top level and declare
    /// it in its namespace).
    specification: Option<Ref>,
    /// `DW_AT_byte_size`; for an array, its number of elements.
    size: Option<u64>,
    /// `DW_AT_declaration`.
    declaration: bool,
    /// Index into [`Scan::scopes`] of the C++ scope that encloses it (0: none).
    scope: u32,
    /// Index into [`Scan::members`] (records only).
    members: u32,
    /// Index into [`Scan::units`] of its unit.
    unit: u32,
}

/// One `DW_TAG_subprogram`: concrete (with code), abstract, or a declaration.
#[derive(Clone, Copy, Debug)]
struct Sub {
    /// Where it is.
    key: Key,
    /// `DW_AT_type`: the return type.
    ty: Option<Ref>,
    /// `DW_AT_abstract_origin` or `DW_AT_specification`.
    origin: Option<Ref>,
    /// Index into [`Scan::units`] of its unit.
    unit: u32,
    /// `DW_AT_decl_line`; 0 when it has none (DWARF's "no line").
    line: u32,
}

/// A data member, or a base class, of a record, as written.
#[derive(Clone, Debug, Default)]
struct Member<'d> {
    /// `DW_AT_name`.
    name: Option<&'d [u8]>,
    /// `DW_AT_type`.
    ty: Option<Ref>,
    /// `DW_AT_data_member_location` as a byte offset; `Err(())` when it is an
    /// expression this reader does not evaluate.
    location: Option<std::result::Result<u64, ()>>,
    /// `DW_AT_data_bit_offset` (DWARF 4 and later).
    data_bit_offset: Option<u64>,
    /// `DW_AT_bit_offset` (DWARF 2 and 3: from the most significant bit of
    /// the storage unit).
    bit_offset: Option<u64>,
    /// `DW_AT_bit_size`.
    bit_size: Option<u64>,
    /// `DW_AT_byte_size` (the storage unit of a DWARF 2/3 bit-field).
    byte_size: Option<u64>,
    /// A static member (`DW_AT_external` or `DW_AT_declaration`): no storage
    /// in the object.
    is_static: bool,
    /// `DW_TAG_inheritance`: a base class.
    base: bool,
}

/// Where one unit's entries lie in the tables of [`Scan`], so that its
/// references (nearly all within the unit) are found in a few steps.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    /// Keys of the unit: `[start, end)`.
    keys: (Key, Key),
    /// Its range of [`Scan::types`].
    types: (usize, usize),
    /// Its range of [`Scan::subs`].
    subs: (usize, usize),
    /// Its range of [`Scan::var_types`].
    var_types: (usize, usize),
}

/// What one unit's context on the nesting stack is.
#[derive(Clone, Copy, Debug)]
enum Ctx {
    /// Inside a function (directly, or in a block or inlined subroutine of
    /// it): parameters and variables belong to this entry of [`Scan::subs`].
    Func(u32),
    /// Inside a record: members belong to this entry of [`Scan::members`],
    /// and nested types are named within this entry of [`Scan::scopes`].
    Record {
        /// Index into [`Scan::members`].
        members: u32,
        /// Index into [`Scan::scopes`].
        scope: u32,
    },
    /// Inside an array type: subranges give its dimensions (index into
    /// [`Scan::types`]).
    Array(usize),
    /// Inside a namespace: names are qualified by this entry of
    /// [`Scan::scopes`].
    Scope(u32),
    /// Anything else with children (enumerations, subroutine types, call
    /// sites): their children are not parameters, variables or members.
    Opaque,
}

/// What the pass over the units collects. Every table is in file order,
/// so sorted by key.
#[derive(Default)]
struct Scan<'d> {
    /// Type entries.
    types: Vec<TypeDie<'d>>,
    /// Functions.
    subs: Vec<Sub>,
    /// Every parameter and variable: the function (index into
    /// [`Scan::subs`]) and its `DW_AT_type`, or its `DW_AT_abstract_origin`
    /// (the variable of the abstract instance that has the type) marked
    /// with [`Ref::as_origin`].
    vars: Vec<(u32, Ref)>,
    /// Parameters and variables that have a `DW_AT_type`, by key: the
    /// targets of abstract origins.
    var_types: Vec<(Key, Ref)>,
    /// Subroutines inlined into a function: the function and the abstract
    /// origin.
    inlined: Vec<(u32, Ref)>,
    /// Entry RVAs of functions with code: the function and the RVA.
    entries: Vec<(u32, u64)>,
    /// Member lists of records.
    members: Vec<Vec<Member<'d>>>,
    /// Qualified C++ scope prefixes (`ns::outer`); entry 0 is the empty scope.
    scopes: Vec<String>,
    /// Type-unit signatures to the key of their type.
    signatures: HashMap<u64, Key>,
    /// The signatures references use, indexed by [`Ref::sig`].
    signatures_used: Vec<u64>,
    /// Each unit's part of the tables.
    units: Vec<Span>,
    /// Whether keys arrived out of order (only in a damaged file); then the
    /// tables are sorted before use.
    unordered: bool,
}

/// What the ELF reader hands over.
pub(crate) struct Input<'a, 'd> {
    /// The whole file.
    pub(crate) data: &'d [u8],
    /// Its byte order.
    pub(crate) endian: Endianness,
    /// Its section table.
    pub(crate) sections: &'a ElfSections<'d>,
    /// The preferred base: an RVA is a virtual address minus this.
    pub(crate) base: u64,
    /// Executable ranges `(rva, size)`: a function's entry must lie in one.
    pub(crate) code: &'a [(u64, u64)],
    /// The image's path, for messages.
    pub(crate) path: &'a Path,
}

/// A [`Error::Malformed`] about the DWARF of `path`. gimli's messages can
/// span lines: the detail is folded into one.
fn malformed(path: &Path, detail: impl Into<String>) -> Error {
    let detail: String = detail.into();
    Error::Malformed {
        path: path.to_path_buf(),
        what: WHAT,
        detail: detail.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Read the layouts and type uses of an ELF image's DWARF.
pub(crate) fn read(input: &Input<'_, '_>) -> Result<Found> {
    read_with(input, !gimli_cursor())
}

/// Whether to read with gimli's cursor instead of [`Fast`]: never, but in
/// the tests that compare the two.
#[cfg(not(test))]
fn gimli_cursor() -> bool {
    false
}

#[cfg(test)]
use tests::gimli_cursor;

/// [`read`], walking the entries with this module's own cursor ([`Fast`])
/// when `fast`, otherwise with gimli's (`EntriesRaw`): the two must agree.
fn read_with(input: &Input<'_, '_>, fast: bool) -> Result<Found> {
    let path = input.path;
    // Compressed sections are valid but not decompressed here.
    let mut compressed = Vec::new();
    let mut has_info = false;
    for sh in input.sections.iter() {
        let Ok(name) = input.sections.section_name(input.endian, sh) else {
            continue;
        };
        if !name.starts_with(b".debug_") && !name.starts_with(b".zdebug_") {
            continue;
        }
        if name == b".debug_info" && sh.sh_size(input.endian) > 0 {
            has_info = true;
        }
        if name.starts_with(b".zdebug_")
            || sh.sh_flags(input.endian) & u64::from(elf::SHF_COMPRESSED) != 0
        {
            compressed.push(escape_name(name));
        }
    }
    if !compressed.is_empty() {
        return Ok(Found::unsupported(format!(
            "the DWARF sections are compressed ({}), which this reader does not decompress; rebuild without -gz",
            compressed.join(", ")
        )));
    }
    if !has_info {
        return Ok(Found::absent());
    }

    let load = |id: SectionId| -> Result<R<'_>> {
        let bytes = match input
            .sections
            .section_by_name(input.endian, id.name().as_bytes())
        {
            Some((_, sh)) if sh.sh_type(input.endian) != elf::SHT_NOBITS => sh
                .data(input.endian, input.data)
                .map_err(|_| malformed(path, format!("{} lies outside the file", id.name())))?,
            _ => &[][..],
        };
        Ok(EndianSlice::new(bytes, LittleEndian))
    };
    let dwarf = gimli::Dwarf::load(load)?;

    let mut scan = Scan {
        scopes: vec![String::new()],
        ..Scan::default()
    };
    // Room for what a unit of GCC output holds per byte, so that the
    // tables are not copied as they grow (untouched room costs nothing).
    let info = dwarf.debug_info.reader().len();
    scan.vars.reserve(info / 24);
    scan.var_types.reserve(info / 24);
    scan.subs.reserve(info / 64);
    scan.entries.reserve(info / 128);
    let mut units = dwarf.units();
    while let Some(header) = units
        .next()
        .map_err(|e| malformed(path, format!(".debug_info: unit header: {e}")))?
    {
        let at = unit_key(header.offset());
        let unit = dwarf
            .unit(header)
            .map_err(|e| malformed(path, format!(".debug_info: unit at offset {at:#x}: {e}")))?;
        scan_unit_with(&dwarf, &unit, input, &mut scan, fast)
            .map_err(|e| malformed(path, format!(".debug_info: unit at offset {at:#x}: {e}")))?;
    }
    let mut type_units = dwarf.type_units();
    while let Some(header) = type_units
        .next()
        .map_err(|e| malformed(path, format!(".debug_types: unit header: {e}")))?
    {
        let at = unit_key(header.offset()) & !TYPES_SECTION;
        let unit = dwarf
            .unit(header)
            .map_err(|e| malformed(path, format!(".debug_types: unit at offset {at:#x}: {e}")))?;
        scan_unit_with(&dwarf, &unit, input, &mut scan, fast)
            .map_err(|e| malformed(path, format!(".debug_types: unit at offset {at:#x}: {e}")))?;
    }
    scan.finish();

    let model = Model::new(&scan);
    let types = model.layouts().map_err(|e| malformed(path, e))?;
    let uses = model.uses().map_err(|e| malformed(path, e))?;
    let lines = model.lines();
    Ok(Found {
        info: TypeInfo::Read,
        types,
        uses,
        lines,
    })
}

/// The key of a unit's first byte.
fn unit_key(offset: gimli::UnitSectionOffset<usize>) -> Key {
    match offset {
        gimli::UnitSectionOffset::DebugInfoOffset(o) => o.0 as u64,
        gimli::UnitSectionOffset::DebugTypesOffset(o) => (o.0 as u64) | TYPES_SECTION,
    }
}

/// The languages whose type names are not qualified by their scope (C has
/// one namespace for tags, whatever the nesting).
fn is_c(lang: gimli::DwLang) -> bool {
    matches!(
        lang,
        dw::DW_LANG_C89 | dw::DW_LANG_C | dw::DW_LANG_C99 | dw::DW_LANG_C11 | dw::DW_LANG_C17
    )
}

/// A reference attribute value, as a [`Ref`]; a signature is added to
/// `used`.
fn reference(unit_base: Key, value: &AttributeValue<R<'_>>, used: &mut Vec<u64>) -> Option<Ref> {
    match *value {
        AttributeValue::UnitRef(o) => unit_base.checked_add(o.0 as u64).and_then(Ref::die),
        AttributeValue::DebugInfoRef(o) => Ref::die(o.0 as u64),
        AttributeValue::DebugTypesRef(sig) => {
            used.push(sig.0);
            Ref::sig(used.len().saturating_sub(1))
        }
        _ => None,
    }
}

/// A constant, non-negative attribute value.
fn constant(value: &AttributeValue<R<'_>>) -> Option<u64> {
    match *value {
        AttributeValue::Sdata(v) => u64::try_from(v).ok(),
        _ => value.udata_value(),
    }
}

/// A flag attribute value.
fn flag(value: &AttributeValue<R<'_>>) -> bool {
    matches!(value, AttributeValue::Flag(true))
}

/// `DW_AT_data_member_location`: a constant, or the DWARF 2 form of one
/// (`DW_OP_plus_uconst N` or `DW_OP_constu N`).
fn member_location(value: &AttributeValue<R<'_>>) -> std::result::Result<u64, ()> {
    if let Some(v) = constant(value) {
        return Ok(v);
    }
    let AttributeValue::Exprloc(expr) = value else {
        return Err(());
    };
    let mut r = expr.0;
    let op = r.read_u8().map_err(|_| ())?;
    if op != dw::DW_OP_plus_uconst.0 && op != dw::DW_OP_constu.0 {
        return Err(());
    }
    let v = r.read_uleb128().map_err(|_| ())?;
    if r.is_empty() {
        Ok(v)
    } else {
        Err(())
    }
}

/// The kind of type entry a tag is, if it is one this reader keeps.
fn type_tag(tag: gimli::DwTag) -> Option<Tag> {
    Some(match tag {
        dw::DW_TAG_structure_type => Tag::Struct,
        dw::DW_TAG_union_type => Tag::Union,
        dw::DW_TAG_class_type => Tag::Class,
        dw::DW_TAG_typedef => Tag::Typedef,
        dw::DW_TAG_const_type
        | dw::DW_TAG_volatile_type
        | dw::DW_TAG_restrict_type
        | dw::DW_TAG_atomic_type
        | dw::DW_TAG_immutable_type
        | dw::DW_TAG_packed_type
        | dw::DW_TAG_shared_type => Tag::Qualifier,
        dw::DW_TAG_pointer_type
        | dw::DW_TAG_reference_type
        | dw::DW_TAG_rvalue_reference_type
        | dw::DW_TAG_ptr_to_member_type => Tag::Pointer,
        dw::DW_TAG_array_type => Tag::Array,
        dw::DW_TAG_base_type | dw::DW_TAG_enumeration_type => Tag::Leaf,
        _ => return None,
    })
}

/// One unit's entries into `scan`.
fn scan_unit_with<'d>(
    dwarf: &gimli::Dwarf<R<'d>>,
    unit: &gimli::Unit<R<'d>>,
    input: &Input<'_, 'd>,
    scan: &mut Scan<'d>,
    fast: bool,
) -> std::result::Result<(), ScanError> {
    let gimli = || -> std::result::Result<Gimli<'d, '_>, ScanError> {
        Ok(Gimli {
            unit,
            raw: unit.entries_raw(None)?,
        })
    };
    match Fast::new(unit).filter(|_| fast) {
        Some(entries) => scan_unit(dwarf, unit, input, scan, entries),
        // gimli's, or a unit without entries.
        None => scan_unit(dwarf, unit, input, scan, gimli()?),
    }
}

/// Scan one unit's entries with the cursor `entries`, which starts at its
/// first entry.
fn scan_unit<'d, 'u, C: Dies<'d, 'u>>(
    dwarf: &gimli::Dwarf<R<'d>>,
    unit: &'u gimli::Unit<R<'d>>,
    input: &Input<'_, 'd>,
    scan: &mut Scan<'d>,
    mut entries: C,
) -> std::result::Result<(), ScanError> {
    let base = unit_key(unit.header.offset());
    let unit_index = u32::try_from(scan.units.len()).unwrap_or(u32::MAX);
    let mut span = Span {
        keys: (
            base,
            base.saturating_add(unit.header.length_including_self() as u64),
        ),
        types: (scan.types.len(), scan.types.len()),
        subs: (scan.subs.len(), scan.subs.len()),
        var_types: (scan.var_types.len(), scan.var_types.len()),
    };
    if let gimli::UnitType::Type {
        type_signature,
        type_offset,
    } = unit.header.type_()
    {
        if let Some(key) = base.checked_add(type_offset.0 as u64) {
            scan.signatures.entry(type_signature.0).or_insert(key);
        }
    }
    let mut qualify = true;
    let mut stack: Vec<(isize, Ctx)> = Vec::new();
    // Depth of the entries' start: a cursor started again at a sibling
    // (see `skip_to`) counts depth from there.
    let mut depth_base: isize = 0;
    while !entries.is_empty() {
        let depth = depth_base.saturating_add(entries.next_depth());
        let offset = entries.next_offset();
        let key = base.saturating_add(offset.0 as u64);
        let Some(abbrev) = entries.read_abbreviation()? else {
            continue;
        };
        while stack.last().is_some_and(|&(d, _)| d >= depth) {
            stack.pop();
        }
        let ctx = stack.last().map(|&(_, c)| c);
        let scope = match ctx {
            Some(Ctx::Scope(s) | Ctx::Record { scope: s, .. }) => s,
            _ => 0,
        };
        let func = match ctx {
            Some(Ctx::Func(f)) => Some(f),
            _ => None,
        };
        let tag = abbrev.tag();
        // The context this entry opens for its children, if it has any.
        let mut opens = Ctx::Opaque;
        // Where this entry's next sibling starts, when its children are of
        // no use (a call site's parameters, a declaration's parameters):
        // the scan jumps there instead of reading them.
        let mut skip_to: Option<gimli::UnitOffset> = None;
        if let Some(t) = type_tag(tag) {
            let mut die = TypeDie {
                key,
                tag: t,
                name: None,
                ty: None,
                signature: None,
                specification: None,
                size: None,
                declaration: false,
                scope,
                members: 0,
                unit: unit_index,
            };
            let named = matches!(t, Tag::Struct | Tag::Union | Tag::Class | Tag::Typedef);
            entries.read_attrs(
                abbrev.attributes(),
                &[
                    dw::DW_AT_name,
                    dw::DW_AT_type,
                    dw::DW_AT_signature,
                    dw::DW_AT_specification,
                    dw::DW_AT_byte_size,
                    dw::DW_AT_declaration,
                ],
                |attr| {
                    match attr.name() {
                        dw::DW_AT_name if named => {
                            die.name = Some(dwarf.attr_string(unit, attr.value())?.slice())
                        }
                        dw::DW_AT_type => {
                            die.ty = reference(base, &attr.value(), &mut scan.signatures_used)
                        }
                        dw::DW_AT_signature => {
                            die.signature =
                                reference(base, &attr.value(), &mut scan.signatures_used)
                        }
                        dw::DW_AT_specification => {
                            die.specification =
                                reference(base, &attr.value(), &mut scan.signatures_used)
                        }
                        dw::DW_AT_byte_size => die.size = constant(&attr.value()),
                        dw::DW_AT_declaration => die.declaration = flag(&attr.value()),
                        _ => {}
                    }
                    Ok(())
                },
            )?;
            match t {
                Tag::Struct | Tag::Union | Tag::Class => {
                    die.members = u32::try_from(scan.members.len()).unwrap_or(u32::MAX);
                    scan.members.push(Vec::new());
                    // Types nested in a C++ record are named within it.
                    let inner = match die.name {
                        Some(name) if qualify && abbrev.has_children() => {
                            push_scope(scan, scope, name)
                        }
                        _ => scope,
                    };
                    opens = Ctx::Record {
                        members: die.members,
                        scope: inner,
                    };
                }
                Tag::Array => {
                    opens = Ctx::Array(scan.types.len());
                    // Elements: the product of the subranges' counts.
                    die.size = Some(1);
                }
                _ => {}
            }
            if scan.types.last().is_some_and(|last| last.key >= key) {
                scan.unordered = true;
            }
            scan.types.push(die);
        } else {
            match tag {
                dw::DW_TAG_subprogram => {
                    let mut sub = Sub {
                        key,
                        ty: None,
                        origin: None,
                        unit: unit_index,
                        line: 0,
                    };
                    let (mut low_pc, mut ranges, mut declaration) = (None, None, false);
                    let mut sibling = None;
                    entries.read_attrs(
                        abbrev.attributes(),
                        &[
                            dw::DW_AT_declaration,
                            dw::DW_AT_type,
                            dw::DW_AT_abstract_origin,
                            dw::DW_AT_specification,
                            dw::DW_AT_low_pc,
                            dw::DW_AT_ranges,
                            dw::DW_AT_decl_line,
                            dw::DW_AT_sibling,
                        ],
                        |attr| {
                            match attr.name() {
                                dw::DW_AT_sibling => sibling = sibling_of(offset, &attr.value()),
                                dw::DW_AT_declaration => declaration = flag(&attr.value()),
                                // A line that is not a constant, or too
                                // large, is no line.
                                dw::DW_AT_decl_line => {
                                    sub.line = constant(&attr.value())
                                        .and_then(|l| u32::try_from(l).ok())
                                        .unwrap_or(0)
                                }
                                dw::DW_AT_type => {
                                    sub.ty =
                                        reference(base, &attr.value(), &mut scan.signatures_used)
                                }
                                dw::DW_AT_abstract_origin | dw::DW_AT_specification => {
                                    sub.origin =
                                        reference(base, &attr.value(), &mut scan.signatures_used)
                                }
                                dw::DW_AT_low_pc => {
                                    low_pc = dwarf.attr_address(unit, attr.value())?
                                }
                                dw::DW_AT_ranges => {
                                    ranges = dwarf.attr_ranges_offset(unit, attr.value())?
                                }
                                _ => {}
                            }
                            Ok(())
                        },
                    )?;
                    let index = u32::try_from(scan.subs.len()).unwrap_or(u32::MAX);
                    let in_code = |vaddr: u64| {
                        let rva = vaddr.wrapping_sub(input.base);
                        input
                            .code
                            .iter()
                            .any(|&(s, n)| rva.checked_sub(s).is_some_and(|d| d < n))
                            .then_some(rva)
                    };
                    if let Some(pc) = low_pc {
                        if let Some(rva) = in_code(pc) {
                            scan.entries.push((index, rva));
                        }
                    } else if let Some(offset) = ranges {
                        let mut iter = dwarf.ranges(unit, offset)?;
                        let mut count = 0usize;
                        while let Some(r) = iter.next()? {
                            count = count.saturating_add(1);
                            if count > MAX_RANGES {
                                break;
                            }
                            if let Some(rva) = in_code(r.begin).filter(|_| r.end > r.begin) {
                                let known = scan
                                    .entries
                                    .iter()
                                    .rev()
                                    .take_while(|e| e.0 == index)
                                    .any(|e| e.1 == rva);
                                if !known {
                                    scan.entries.push((index, rva));
                                }
                            }
                        }
                    }
                    if scan.subs.last().is_some_and(|last| last.key >= key) {
                        scan.unordered = true;
                    }
                    scan.subs.push(sub);
                    // A declaration's parameters repeat the definition's,
                    // which has its own; only its return type is needed
                    // (through DW_AT_specification).
                    if !declaration {
                        opens = Ctx::Func(index);
                    } else if abbrev.has_children() {
                        skip_to = sibling;
                    }
                }
                dw::DW_TAG_call_site | dw::DW_TAG_GNU_call_site if abbrev.has_children() => {
                    // Its children describe the arguments at the call:
                    // nothing a layout or a use depends on.
                    entries.read_attrs(abbrev.attributes(), &[dw::DW_AT_sibling], |attr| {
                        skip_to = sibling_of(offset, &attr.value());
                        Ok(())
                    })?;
                }
                dw::DW_TAG_formal_parameter | dw::DW_TAG_variable if func.is_some() => {
                    let (mut ty, mut origin) = (None, None);
                    entries.read_attrs(
                        abbrev.attributes(),
                        &[dw::DW_AT_type, dw::DW_AT_abstract_origin],
                        |attr| {
                            match attr.name() {
                                dw::DW_AT_type => {
                                    ty = reference(base, &attr.value(), &mut scan.signatures_used)
                                }
                                dw::DW_AT_abstract_origin => {
                                    origin =
                                        reference(base, &attr.value(), &mut scan.signatures_used)
                                }
                                _ => {}
                            }
                            Ok(())
                        },
                    )?;
                    let f = func.unwrap_or_default();
                    if let Some(t) = ty {
                        if scan.var_types.last().is_some_and(|&(last, _)| last >= key) {
                            scan.unordered = true;
                        }
                        scan.var_types.push((key, t));
                        scan.vars.push((f, t));
                    } else if let Some(o) = origin {
                        scan.vars.push((f, o.as_origin()));
                    }
                }
                dw::DW_TAG_compile_unit | dw::DW_TAG_partial_unit | dw::DW_TAG_type_unit => {
                    entries.read_attrs(abbrev.attributes(), &[dw::DW_AT_language], |attr| {
                        if let (dw::DW_AT_language, AttributeValue::Language(lang)) =
                            (attr.name(), attr.value())
                        {
                            qualify = !is_c(lang);
                        }
                        Ok(())
                    })?;
                    opens = Ctx::Scope(0);
                }
                dw::DW_TAG_namespace if qualify => {
                    let mut name = None;
                    entries.read_attrs(abbrev.attributes(), &[dw::DW_AT_name], |attr| {
                        if attr.name() == dw::DW_AT_name {
                            name = Some(dwarf.attr_string(unit, attr.value())?.slice());
                        }
                        Ok(())
                    })?;
                    let ns: &[u8] = name.unwrap_or(b"(anonymous namespace)");
                    opens = Ctx::Scope(push_scope(scan, scope, ns));
                }
                dw::DW_TAG_lexical_block | dw::DW_TAG_inlined_subroutine if func.is_some() => {
                    let mut origin = None;
                    entries.read_attrs(
                        abbrev.attributes(),
                        &[dw::DW_AT_abstract_origin],
                        |attr| {
                            if attr.name() == dw::DW_AT_abstract_origin
                                && tag == dw::DW_TAG_inlined_subroutine
                            {
                                origin = reference(base, &attr.value(), &mut scan.signatures_used);
                            }
                            Ok(())
                        },
                    )?;
                    if let (Some(o), Some(f)) = (origin, func) {
                        scan.inlined.push((f, o));
                    }
                    opens = ctx.unwrap_or(Ctx::Opaque);
                }
                dw::DW_TAG_member | dw::DW_TAG_inheritance
                    if matches!(ctx, Some(Ctx::Record { .. })) =>
                {
                    let mut m = Member {
                        base: tag == dw::DW_TAG_inheritance,
                        ..Member::default()
                    };
                    entries.read_attrs(
                        abbrev.attributes(),
                        &[
                            dw::DW_AT_name,
                            dw::DW_AT_type,
                            dw::DW_AT_data_member_location,
                            dw::DW_AT_data_bit_offset,
                            dw::DW_AT_bit_offset,
                            dw::DW_AT_bit_size,
                            dw::DW_AT_byte_size,
                            dw::DW_AT_external,
                            dw::DW_AT_declaration,
                        ],
                        |attr| {
                            let value = attr.value();
                            match attr.name() {
                                dw::DW_AT_name => {
                                    m.name = Some(dwarf.attr_string(unit, value)?.slice())
                                }
                                dw::DW_AT_type => {
                                    m.ty = reference(base, &value, &mut scan.signatures_used)
                                }
                                dw::DW_AT_data_member_location => {
                                    m.location = Some(member_location(&value))
                                }
                                dw::DW_AT_data_bit_offset => m.data_bit_offset = constant(&value),
                                dw::DW_AT_bit_offset => m.bit_offset = constant(&value),
                                dw::DW_AT_bit_size => m.bit_size = constant(&value),
                                dw::DW_AT_byte_size => m.byte_size = constant(&value),
                                dw::DW_AT_external | dw::DW_AT_declaration => {
                                    m.is_static |= flag(&value)
                                }
                                _ => {}
                            }
                            Ok(())
                        },
                    )?;
                    if let Some(Ctx::Record { members, .. }) = ctx {
                        if let Some(list) = scan.members.get_mut(members as usize) {
                            list.push(m);
                        }
                    }
                }
                dw::DW_TAG_subrange_type if matches!(ctx, Some(Ctx::Array(_))) => {
                    let (mut count, mut lower, mut upper) = (None, None, None);
                    entries.read_attrs(
                        abbrev.attributes(),
                        &[
                            dw::DW_AT_count,
                            dw::DW_AT_lower_bound,
                            dw::DW_AT_upper_bound,
                        ],
                        |attr| {
                            let value = attr.value();
                            match attr.name() {
                                dw::DW_AT_count => count = Some(constant(&value)),
                                dw::DW_AT_lower_bound => lower = Some(constant(&value)),
                                dw::DW_AT_upper_bound => upper = Some(constant(&value)),
                                _ => {}
                            }
                            Ok(())
                        },
                    )?;
                    // An unknown dimension (a flexible array member, a VLA)
                    // makes the whole array's element count unknown.
                    let n = match (count, upper) {
                        (Some(c), _) => c,
                        (None, Some(Some(u))) => match lower {
                            None => u.checked_add(1),
                            Some(Some(l)) => u.checked_add(1).and_then(|e| e.checked_sub(l)),
                            Some(None) => None,
                        },
                        _ => None,
                    };
                    if let Some(Ctx::Array(i)) = ctx {
                        if let Some(arr) = scan.types.get_mut(i) {
                            arr.size = match (arr.size, n) {
                                (Some(a), Some(n)) => a.checked_mul(n),
                                _ => None,
                            };
                        }
                    }
                }
                _ => entries.read_attrs(abbrev.attributes(), &[], |_| Ok(()))?,
            }
        }
        // A sibling outside the unit is not followed: the children are
        // read instead.
        if skip_to.is_some_and(|s| entries.restart(s)) {
            depth_base = depth;
            continue;
        }
        if abbrev.has_children() {
            push_ctx(&mut stack, depth, opens)?;
        }
    }
    span.types.1 = scan.types.len();
    span.subs.1 = scan.subs.len();
    span.var_types.1 = scan.var_types.len();
    scan.units.push(span);
    Ok(())
}

/// The sibling an entry at `offset` names (`DW_AT_sibling`), when it lies
/// after the entry: a reference back (a damaged file) is not followed, so
/// every jump moves the scan forward.
fn sibling_of(
    offset: gimli::UnitOffset,
    value: &AttributeValue<R<'_>>,
) -> Option<gimli::UnitOffset> {
    match *value {
        AttributeValue::UnitRef(to) if to.0 > offset.0 => Some(to),
        _ => None,
    }
}

/// How many ranges of one function's `DW_AT_ranges` are read (GCC writes
/// two: the hot and the cold part).
const MAX_RANGES: usize = 64;

impl Scan<'_> {
    /// Put the tables in the order the model expects: sorted by key (they
    /// are unless the file is damaged), and the per-function lists grouped
    /// by function.
    fn finish(&mut self) {
        if self.unordered {
            // Keys out of order mean overlapping units: unit-local lookups
            // cannot be trusted, so every lookup searches everything.
            self.types.sort_by_key(|t| t.key);
            self.subs.sort_by_key(|s| s.key);
            self.var_types.sort_by_key(|v| v.0);
            self.units.clear();
        }
        // Functions nested in functions interleave their lists.
        if !self.vars.is_sorted_by_key(|v| v.0) {
            self.vars.sort_by_key(|v| v.0);
        }
        if !self.inlined.is_sorted_by_key(|v| v.0) {
            self.inlined.sort_by_key(|v| v.0);
        }
        if !self.entries.is_sorted_by_key(|v| v.0) {
            self.entries.sort_by_key(|v| v.0);
        }
    }
}

/// An attribute as read: its name and its value, normalised as gimli's
/// `Attribute::value` normalises it.
#[derive(Clone, Copy, Debug)]
struct Attr<'d> {
    /// `DW_AT_*`.
    name: gimli::DwAt,
    /// The value.
    value: AttributeValue<R<'d>>,
}

impl<'d> Attr<'d> {
    /// The attribute's name.
    fn name(&self) -> gimli::DwAt {
        self.name
    }

    /// The attribute's value.
    fn value(&self) -> AttributeValue<R<'d>> {
        self.value
    }
}

/// A cursor over one unit's entries, in the manner of gimli's
/// `EntriesRaw`: read an entry's abbreviation, then each of its
/// attributes in order (read or skipped).
trait Dies<'d, 'u>: Sized {
    /// Whether the entries are exhausted.
    fn is_empty(&self) -> bool;
    /// The depth of the next entry, relative to where the cursor started
    /// (each entry with children opens a level, each null entry closes one).
    fn next_depth(&self) -> isize;
    /// The offset of the next entry in its unit.
    fn next_offset(&self) -> gimli::UnitOffset;
    /// Read the next entry's abbreviation (`None` for a null entry).
    fn read_abbreviation(&mut self) -> gimli::Result<Option<&'u gimli::Abbreviation>>;
    /// Read the next attribute, which `spec` describes.
    fn read_attribute(&mut self, spec: gimli::AttributeSpecification) -> gimli::Result<Attr<'d>>;
    /// Skip the next attributes, which `specs` describe.
    fn skip_attributes(&mut self, specs: &[gimli::AttributeSpecification]) -> gimli::Result<()>;
    /// Move to the entry at `at` of the same unit, at depth 0; `false` (and
    /// nothing moves) when `at` is not inside the unit's entries.
    fn restart(&mut self, at: gimli::UnitOffset) -> bool;

    /// Read the attributes named in `wanted` of the entry whose attributes
    /// `specs` describe (those of the abbreviation just read), handing each
    /// to `f`, and skip the others in runs.
    fn read_attrs(
        &mut self,
        specs: &[gimli::AttributeSpecification],
        wanted: &[gimli::DwAt],
        f: impl FnMut(Attr<'d>) -> std::result::Result<(), ScanError>,
    ) -> std::result::Result<(), ScanError> {
        read_attrs_by_runs(self, specs, wanted, f)
    }
}

/// [`Dies::read_attrs`] with nothing planned: skip the runs of attributes
/// not wanted, read each wanted one.
fn read_attrs_by_runs<'d, 'u, C: Dies<'d, 'u>>(
    entries: &mut C,
    specs: &[gimli::AttributeSpecification],
    wanted: &[gimli::DwAt],
    mut f: impl FnMut(Attr<'d>) -> std::result::Result<(), ScanError>,
) -> std::result::Result<(), ScanError> {
    let mut at = 0;
    while at < specs.len() {
        let run = specs
            .get(at..)
            .unwrap_or_default()
            .iter()
            .take_while(|s| !wanted.contains(&s.name()))
            .count();
        if run > 0 {
            let end = at.saturating_add(run);
            entries.skip_attributes(specs.get(at..end).unwrap_or_default())?;
            at = end;
        }
        if let Some(spec) = specs.get(at) {
            f(entries.read_attribute(*spec)?)?;
            at = at.saturating_add(1);
        }
    }
    Ok(())
}

/// gimli's cursor over a unit's entries, with its unit (to start again
/// elsewhere in it).
struct Gimli<'d, 'u> {
    /// The unit.
    unit: &'u gimli::Unit<R<'d>>,
    /// The cursor.
    raw: gimli::EntriesRaw<'u, 'u, R<'d>>,
}

impl<'d, 'u> Dies<'d, 'u> for Gimli<'d, 'u> {
    fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
    fn next_depth(&self) -> isize {
        self.raw.next_depth()
    }
    fn next_offset(&self) -> gimli::UnitOffset {
        self.raw.next_offset()
    }
    fn read_abbreviation(&mut self) -> gimli::Result<Option<&'u gimli::Abbreviation>> {
        self.raw.read_abbreviation()
    }
    fn read_attribute(&mut self, spec: gimli::AttributeSpecification) -> gimli::Result<Attr<'d>> {
        let a = self.raw.read_attribute(spec)?;
        Ok(Attr {
            name: a.name(),
            value: a.value(),
        })
    }
    fn skip_attributes(&mut self, specs: &[gimli::AttributeSpecification]) -> gimli::Result<()> {
        self.raw.skip_attributes(specs)
    }
    fn restart(&mut self, at: gimli::UnitOffset) -> bool {
        match self.unit.entries_raw(Some(at)) {
            Ok(raw) => {
                self.raw = raw;
                true
            }
            Err(_) => false,
        }
    }
}

/// This module's cursor over a unit's entries: the same reading as gimli's
/// `EntriesRaw` (the tests check that both give the same result on real
/// output of several compilers and DWARF versions), in less work. Bytes
/// are read through gimli's reader; the sizes of fixed-size forms come from
/// gimli, so that skipping them is planned once per abbreviation; the
/// attributes the scan reads most (references, flags, `DW_AT_low_pc`
/// addresses, `DW_AT_decl_line`) are decoded here, and every other value,
/// read or skipped, by gimli's cursor from the same bytes.
struct Fast<'d, 'u> {
    /// The unit.
    unit: &'u gimli::Unit<R<'d>>,
    /// The unit's entries (the bytes after its header).
    entries: R<'d>,
    /// The rest of them, from the next byte to read.
    input: R<'d>,
    /// The size of the unit's header: the offset of `entries` in the unit.
    header: usize,
    /// Depth of the next entry.
    depth: isize,
    /// The size of each standard form below [`FORMS`] in this unit's
    /// encoding ([`VARIABLE`] when it has none).
    sizes: [u8; FORMS],
    /// The code of the abbreviation read last.
    code: u64,
    /// The plans made so far, by abbreviation code (below [`MAX_PLANNED`]):
    /// for each, the attribute list and the wanted list it is for (by
    /// address) and where its steps are in [`Fast::steps`].
    plans: Vec<Vec<(usize, usize, usize, usize)>>,
    /// The steps of every plan.
    steps: Vec<Step>,
}

/// Abbreviation codes below this get their plans kept (GCC and clang
/// number a unit's abbreviations from 1, a few hundred at most); others
/// are read attribute by attribute.
const MAX_PLANNED: u64 = 4096;

/// One step of reading an entry's attributes: see [`Fast::plan`].
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Skip this many bytes (attributes of fixed sizes).
    Skip(u32),
    /// Skip attribute `i`, whose size is in its bytes.
    Var(u16),
    /// Read attribute `i`.
    Read(u16),
}

/// Forms below this (the standard ones, `DW_FORM_addr` to
/// `DW_FORM_addrx4`) have their sizes in [`Fast::sizes`].
const FORMS: usize = 0x2d;

/// [`Fast::sizes`] of a form whose size is not fixed.
const VARIABLE: u8 = u8::MAX;

impl<'d, 'u> Fast<'d, 'u> {
    /// A cursor at the first entry of `unit`; `None` when it has none.
    fn new(unit: &'u gimli::Unit<R<'d>>) -> Option<Self> {
        let header = unit.header.header_size();
        let entries = unit.header.range_from(gimli::UnitOffset(header)..).ok()?;
        let mut sizes = [VARIABLE; FORMS];
        for (form, size) in sizes.iter_mut().enumerate() {
            let form = gimli::DwForm(u16::try_from(form).unwrap_or(0));
            // An implicit constant has its value in the abbreviation, none
            // in the entry (and gimli wants one to describe it).
            let value = (form == dw::DW_FORM_implicit_const).then_some(0);
            let spec = gimli::AttributeSpecification::new(dw::DW_AT_name, form, value);
            if let Some(n) = spec
                .size(&unit.header)
                .filter(|&n| n < usize::from(VARIABLE))
            {
                *size = n as u8;
            }
        }
        Some(Fast {
            unit,
            entries,
            input: entries,
            header,
            depth: 0,
            sizes,
            code: 0,
            plans: Vec::new(),
            steps: Vec::new(),
        })
    }

    /// The position of the next byte in the entries.
    fn pos(&self) -> usize {
        self.entries.len().wrapping_sub(self.input.len())
    }

    /// Let gimli's cursor do `f` from the next byte on, and move past
    /// what it read.
    fn through_gimli<T>(
        &mut self,
        f: impl FnOnce(&mut gimli::EntriesRaw<'_, '_, R<'d>>) -> gimli::Result<T>,
    ) -> gimli::Result<T> {
        let mut e = self.unit.entries_raw(Some(self.next_offset()))?;
        let value = f(&mut e)?;
        let mut rest = self.entries;
        rest.skip(e.next_offset().0.wrapping_sub(self.header))?;
        self.input = rest;
        Ok(value)
    }

    /// The steps that read the attributes `wanted` of the abbreviation just
    /// read (whose attributes are `specs`) and skip the others: `(start,
    /// len)` in [`Fast::steps`], made once per abbreviation and list.
    /// `None` for an abbreviation whose plans are not kept.
    fn plan(
        &mut self,
        specs: &[gimli::AttributeSpecification],
        wanted: &[gimli::DwAt],
    ) -> Option<(usize, usize)> {
        if self.code >= MAX_PLANNED {
            return None;
        }
        let key = (specs.as_ptr() as usize, wanted.as_ptr() as usize);
        let code = self.code as usize;
        let known = self
            .plans
            .get(code)
            .and_then(|list| list.iter().find(|p| (p.0, p.1) == key));
        if let Some(&(_, _, start, len)) = known {
            return Some((start, len));
        }
        let start = self.steps.len();
        let mut skip = 0u32;
        for (i, spec) in specs.iter().enumerate() {
            let i = u16::try_from(i).unwrap_or(u16::MAX);
            let size = self
                .sizes
                .get(usize::from(spec.form().0))
                .copied()
                .unwrap_or(VARIABLE);
            let read = wanted.contains(&spec.name());
            if !read && size != VARIABLE {
                skip = skip.saturating_add(u32::from(size));
                continue;
            }
            if skip != 0 {
                self.steps.push(Step::Skip(skip));
                skip = 0;
            }
            self.steps
                .push(if read { Step::Read(i) } else { Step::Var(i) });
        }
        if skip != 0 {
            self.steps.push(Step::Skip(skip));
        }
        let len = self.steps.len().saturating_sub(start);
        if self.plans.len() <= code {
            self.plans.resize_with(code.saturating_add(1), Vec::new);
        }
        if let Some(list) = self.plans.get_mut(code) {
            list.push((key.0, key.1, start, len));
        }
        Some((start, len))
    }
}

impl<'d, 'u> Dies<'d, 'u> for Fast<'d, 'u> {
    fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    fn next_depth(&self) -> isize {
        self.depth
    }

    fn next_offset(&self) -> gimli::UnitOffset {
        gimli::UnitOffset(self.header.wrapping_add(self.pos()))
    }

    #[inline]
    fn read_abbreviation(&mut self) -> gimli::Result<Option<&'u gimli::Abbreviation>> {
        let code = self.input.read_uleb128()?;
        if code == 0 {
            self.depth = self.depth.wrapping_sub(1);
            return Ok(None);
        }
        let abbrev = self
            .unit
            .abbreviations
            .get(code)
            .ok_or(gimli::Error::UnknownAbbreviation(code))?;
        if abbrev.has_children() {
            self.depth = self.depth.wrapping_add(1);
        }
        self.code = code;
        Ok(Some(abbrev))
    }

    #[inline]
    fn read_attribute(&mut self, spec: gimli::AttributeSpecification) -> gimli::Result<Attr<'d>> {
        let name = spec.name();
        let unit_ref = |v: u64| {
            usize::try_from(v)
                .map(|o| AttributeValue::UnitRef(gimli::UnitOffset(o)))
                .map_err(|_| gimli::Error::UnsupportedOffset)
        };
        let input = &mut self.input;
        let value = match spec.form() {
            dw::DW_FORM_ref1 => unit_ref(input.read_u8()?.into())?,
            dw::DW_FORM_ref2 => unit_ref(input.read_u16()?.into())?,
            dw::DW_FORM_ref4 => unit_ref(input.read_u32()?.into())?,
            dw::DW_FORM_ref8 => unit_ref(input.read_u64()?)?,
            dw::DW_FORM_ref_udata => unit_ref(input.read_uleb128()?)?,
            dw::DW_FORM_flag_present => AttributeValue::Flag(true),
            dw::DW_FORM_flag => AttributeValue::Flag(input.read_u8()? != 0),
            dw::DW_FORM_addr if name == dw::DW_AT_low_pc => {
                AttributeValue::Addr(input.read_address(self.unit.header.address_size())?)
            }
            dw::DW_FORM_data1 if name == dw::DW_AT_decl_line => {
                AttributeValue::Udata(input.read_u8()?.into())
            }
            dw::DW_FORM_data2 if name == dw::DW_AT_decl_line => {
                AttributeValue::Udata(input.read_u16()?.into())
            }
            _ => {
                let a = self.through_gimli(|e| e.read_attribute(spec))?;
                a.value()
            }
        };
        Ok(Attr { name, value })
    }

    fn skip_attributes(&mut self, specs: &[gimli::AttributeSpecification]) -> gimli::Result<()> {
        self.through_gimli(|e| e.skip_attributes(specs))
    }

    fn restart(&mut self, at: gimli::UnitOffset) -> bool {
        let mut rest = self.entries;
        match at.0.checked_sub(self.header) {
            Some(pos) if pos < rest.len() && rest.skip(pos).is_ok() => {
                self.input = rest;
                self.depth = 0;
                true
            }
            _ => false,
        }
    }

    fn read_attrs(
        &mut self,
        specs: &[gimli::AttributeSpecification],
        wanted: &[gimli::DwAt],
        mut f: impl FnMut(Attr<'d>) -> std::result::Result<(), ScanError>,
    ) -> std::result::Result<(), ScanError> {
        let Some((start, len)) = self.plan(specs, wanted) else {
            return read_attrs_by_runs(self, specs, wanted, f);
        };
        for k in start..start.saturating_add(len) {
            match self.steps.get(k).copied() {
                Some(Step::Skip(n)) => self.input.skip(n as usize)?,
                Some(Step::Var(i)) => {
                    let i = usize::from(i);
                    // The variable forms compilers use in every variable's
                    // entry (a location expression, a LEB number, a short
                    // name in place) are skipped here; gimli skips the
                    // others.
                    match specs.get(i).map(|s| s.form()) {
                        Some(dw::DW_FORM_exprloc | dw::DW_FORM_block) => {
                            let n = self.input.read_uleb128()?;
                            self.input.skip(
                                usize::try_from(n).map_err(|_| gimli::Error::UnsupportedOffset)?,
                            )?
                        }
                        Some(dw::DW_FORM_udata | dw::DW_FORM_sdata) => self.input.skip_leb128()?,
                        Some(dw::DW_FORM_string) => {
                            self.input.read_null_terminated_slice()?;
                        }
                        _ => self.skip_attributes(specs.get(i..=i).unwrap_or_default())?,
                    }
                }
                Some(Step::Read(i)) => {
                    if let Some(spec) = specs.get(usize::from(i)) {
                        f(self.read_attribute(*spec)?)?;
                    }
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// Why a unit could not be scanned.
#[derive(Debug)]
enum ScanError {
    /// gimli could not decode it.
    Gimli(gimli::Error),
    /// Entries nest deeper than [`MAX_NESTING`].
    TooDeep,
}

impl From<gimli::Error> for ScanError {
    fn from(e: gimli::Error) -> Self {
        ScanError::Gimli(e)
    }
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanError::Gimli(e) => write!(f, "{e}"),
            ScanError::TooDeep => write!(f, "entries nest deeper than {MAX_NESTING} levels"),
        }
    }
}

/// Push a context, refusing nesting deeper than [`MAX_NESTING`].
fn push_ctx(
    stack: &mut Vec<(isize, Ctx)>,
    depth: isize,
    ctx: Ctx,
) -> std::result::Result<(), ScanError> {
    if stack.len() >= MAX_NESTING {
        return Err(ScanError::TooDeep);
    }
    stack.push((depth, ctx));
    Ok(())
}

/// A new scope `outer::name`; returns its index.
fn push_scope(scan: &mut Scan<'_>, outer: u32, name: &[u8]) -> u32 {
    let name = escape_name(name);
    let full = match scan.scopes.get(outer as usize) {
        Some(prefix) if !prefix.is_empty() => format!("{prefix}::{name}"),
        _ => name,
    };
    scan.scopes.push(full);
    u32::try_from(scan.scopes.len().saturating_sub(1)).unwrap_or(0)
}

/// The qualified form of `name` in `scope`.
fn qualified(scan: &Scan<'_>, scope: u32, name: &[u8]) -> String {
    let name = escape_name(name);
    match scan.scopes.get(scope as usize) {
        Some(prefix) if !prefix.is_empty() => format!("{prefix}::{name}"),
        _ => name,
    }
}

/// The index of `key` in a key-sorted table, searching the unit's part
/// first (references nearly always stay within their unit).
fn search<T>(
    table: &[T],
    key_of: impl Fn(&T) -> Key,
    key: Key,
    local: Option<((Key, Key), (usize, usize))>,
) -> Option<usize> {
    if let Some(((start, end), (lo, hi))) = local {
        if key >= start && key < end {
            let part = table.get(lo..hi)?;
            return part
                .binary_search_by_key(&key, key_of)
                .ok()
                .and_then(|i| i.checked_add(lo));
        }
    }
    table.binary_search_by_key(&key, key_of).ok()
}

/// Not yet computed, in [`Model::records`].
const UNKNOWN: u32 = u32::MAX;
/// No record at the end of the chain, in [`Model::records`].
const NONE: u32 = u32::MAX - 1;

/// The scanned entries, indexed for resolving references.
struct Model<'s, 'd> {
    /// What the scan found.
    scan: &'s Scan<'d>,
    /// Names that typedefs give to anonymous records, by record index.
    typedef_names: HashMap<usize, String>,
    /// For each type entry, the record (index into [`Scan::types`]) a chain
    /// of typedefs, qualifiers, pointers and arrays from it ends in, or
    /// [`NONE`].
    records: Vec<u32>,
    /// Where each function's variables, inlined subroutines and entries
    /// start in [`Scan::vars`], [`Scan::inlined`], [`Scan::entries`].
    starts: [Vec<usize>; 3],
}

impl<'s, 'd> Model<'s, 'd> {
    /// Index the scan.
    fn new(scan: &'s Scan<'d>) -> Self {
        let mut model = Model {
            scan,
            typedef_names: HashMap::new(),
            records: Vec::new(),
            starts: [Vec::new(), Vec::new(), Vec::new()],
        };
        let mut names = HashMap::new();
        for die in &scan.types {
            let (Tag::Typedef, Some(name), Some(target)) = (die.tag, die.name, die.ty) else {
                continue;
            };
            let Some(t) = model.find_type(target, Some(die.unit)) else {
                continue;
            };
            let anonymous_record = scan
                .types
                .get(t)
                .is_some_and(|r| r.tag.is_record() && r.name.is_none_or(is_placeholder_name));
            if anonymous_record {
                // The first typedef in the file names it.
                names
                    .entry(t)
                    .or_insert_with(|| qualified(scan, die.scope, name));
            }
        }
        model.typedef_names = names;
        model.records = (0..scan.types.len())
            .map(|i| {
                let die = scan.types.get(i);
                let r = die.and_then(|d| Ref::die(d.key));
                match r.and_then(|r| model.record_of(r, die.map(|d| d.unit), true)) {
                    Some(rec) => u32::try_from(rec).unwrap_or(NONE),
                    None => NONE,
                }
            })
            .collect();
        let subs = scan.subs.len();
        model.starts = [
            starts(scan.vars.iter().map(|v| v.0), subs),
            starts(scan.inlined.iter().map(|v| v.0), subs),
            starts(scan.entries.iter().map(|v| v.0), subs),
        ];
        model
    }

    /// The local part of table `part` of `unit`, for [`search`].
    fn local(
        &self,
        unit: Option<u32>,
        part: fn(&Span) -> (usize, usize),
    ) -> Option<((Key, Key), (usize, usize))> {
        let span = self.scan.units.get(unit? as usize)?;
        Some((span.keys, part(span)))
    }

    /// The index in [`Scan::types`] of the entry `r` points at.
    fn find_type(&self, r: Ref, unit: Option<u32>) -> Option<usize> {
        let (key, unit) = match r.key() {
            Some(key) => (key, unit),
            None => {
                let sig = self.scan.signatures_used.get(r.sig_index()?)?;
                (*self.scan.signatures.get(sig)?, None)
            }
        };
        search(
            &self.scan.types,
            |t| t.key,
            key,
            self.local(unit, |s| s.types),
        )
    }

    /// The index in [`Scan::subs`] of the function `r` points at.
    fn find_sub(&self, r: Ref, unit: Option<u32>) -> Option<usize> {
        let key = r.key()?;
        search(
            &self.scan.subs,
            |s| s.key,
            key,
            self.local(unit, |s| s.subs),
        )
    }

    /// The type of the variable `r` points at.
    fn var_type(&self, r: Ref, unit: Option<u32>) -> Option<Ref> {
        let key = r.key()?;
        let i = search(
            &self.scan.var_types,
            |v| v.0,
            key,
            self.local(unit, |s| s.var_types),
        )?;
        self.scan.var_types.get(i).map(|v| v.1)
    }

    /// The record (index into [`Scan::types`]) a chain of typedefs and
    /// qualifiers (and pointers and arrays, if `through_pointers`) from `r`
    /// ends in.
    fn record_of(&self, mut r: Ref, unit: Option<u32>, through_pointers: bool) -> Option<usize> {
        for _ in 0..MAX_CHAIN {
            let i = self.find_type(r, unit)?;
            let die = self.scan.types.get(i)?;
            match die.tag {
                Tag::Struct | Tag::Union | Tag::Class => return Some(i),
                Tag::Typedef | Tag::Qualifier => r = die.ty?,
                Tag::Pointer | Tag::Array if through_pointers => r = die.ty?,
                _ => return None,
            }
        }
        None
    }

    /// The record a type reference reaches through any chain, from the
    /// precomputed table.
    fn record_reached(&self, r: Ref, unit: Option<u32>) -> Option<usize> {
        let i = self.find_type(r, unit)?;
        match *self.records.get(i)? {
            NONE | UNKNOWN => None,
            rec => Some(rec as usize),
        }
    }

    /// The name of a record: its tag name (qualified for C++), or the name a
    /// typedef gives it, or (for a declaration of a type-unit type) the
    /// name of the definition.
    fn record_name(&self, i: usize) -> Option<String> {
        self.record_name_at(i, 0)
    }

    /// [`Self::record_name`], `depth` stand-ins into a chain of signatures.
    fn record_name_at(&self, i: usize, depth: usize) -> Option<String> {
        let die = self.scan.types.get(i)?;
        if let Some(signature) = die.signature.filter(|_| depth < MAX_CHAIN) {
            // A stand-in (GCC writes one with only the signature, or a
            // declaration) for a type defined in a type unit: the
            // definition has the name and the scope.
            let d = self.find_type(signature, None)?;
            if d != i && self.scan.types.get(d).is_some_and(|t| t.tag.is_record()) {
                return self.record_name_at(d, depth.saturating_add(1));
            }
        }
        if let Some(name) = die.name.filter(|n| !is_placeholder_name(n)) {
            // The declaration it completes says in which scope it is.
            let scope = die
                .specification
                .filter(|_| die.scope == 0)
                .and_then(|s| self.scan.types.get(self.find_type(s, Some(die.unit))?))
                .map_or(die.scope, |d| d.scope);
            return Some(qualified(self.scan, scope, name));
        }
        self.typedef_names.get(&i).cloned()
    }

    /// The size in bytes of an object of type `r`.
    fn size_of(&self, mut r: Ref, unit: Option<u32>) -> Option<u64> {
        // Elements of the arrays passed on the way.
        let mut count: u64 = 1;
        for _ in 0..MAX_CHAIN {
            let die = self.scan.types.get(self.find_type(r, unit)?)?;
            match die.tag {
                Tag::Struct | Tag::Union | Tag::Class
                    if die.declaration || (die.size.is_none() && die.signature.is_some()) =>
                {
                    r = die.signature?
                }
                Tag::Struct | Tag::Union | Tag::Class | Tag::Leaf => {
                    return die.size?.checked_mul(count)
                }
                // Every target of this reader has 8-byte pointers.
                Tag::Pointer => return die.size.unwrap_or(8).checked_mul(count),
                Tag::Typedef | Tag::Qualifier => r = die.ty?,
                Tag::Array => {
                    count = count.checked_mul(die.size?)?;
                    r = die.ty?;
                }
            }
        }
        None
    }

    /// Every complete, named record as a layout.
    fn layouts(&self) -> std::result::Result<Vec<TypeLayout>, String> {
        let mut out = Vec::new();
        for (i, die) in self.scan.types.iter().enumerate() {
            let kind = match die.tag {
                Tag::Struct => TypeKind::Struct,
                Tag::Union => TypeKind::Union,
                Tag::Class => TypeKind::Class,
                _ => continue,
            };
            let Some(size) = die.size.filter(|_| !die.declaration) else {
                continue;
            };
            let Some(name) = self.record_name(i) else {
                continue;
            };
            let mut fields = Vec::new();
            let mut budget = MAX_MEMBERS;
            if self.fields(die, 0, 0, &mut fields, &mut budget).is_err() {
                return Err(format!(
                    "{} {name} at offset {:#x} has more than {MAX_MEMBERS} members, counting those of its anonymous members",
                    kind.keyword(),
                    die.key & !TYPES_SECTION
                ));
            }
            out.push(TypeLayout {
                name,
                kind,
                size,
                fields,
            });
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The fields of `record`, at `base` bytes into the outermost record,
    /// into `out`. Anonymous record members are flattened. Each member
    /// visited takes one from `budget`; `Err` when it runs out.
    fn fields(
        &self,
        record: &TypeDie<'d>,
        base: u64,
        depth: usize,
        out: &mut Vec<Field>,
        budget: &mut usize,
    ) -> std::result::Result<(), ()> {
        let Some(members) = self.scan.members.get(record.members as usize) else {
            return Ok(());
        };
        let unit = Some(record.unit);
        for m in members {
            *budget = budget.checked_sub(1).ok_or(())?;
            if m.is_static {
                continue;
            }
            let location = match m.location {
                Some(Ok(v)) => v,
                // A virtual base class: its offset is found at run time.
                Some(Err(())) => continue,
                // Union members, and DWARF 4+ bit-fields, have none.
                None => 0,
            };
            let Some(byte) = base.checked_add(location) else {
                continue;
            };
            let type_size = m.ty.and_then(|t| self.size_of(t, unit));
            if m.base {
                let class =
                    m.ty.and_then(|t| self.record_of(t, unit, false))
                        .and_then(|i| self.record_name(i))
                        .unwrap_or_else(|| "?".to_owned());
                out.push(Field {
                    offset: byte,
                    bit: None,
                    size: type_size.unwrap_or(0),
                    name: format!("base {class}"),
                });
                continue;
            }
            if let Some(bits) = m.bit_size {
                let Some(name) = m.name else {
                    // Unnamed padding bits.
                    continue;
                };
                let storage = m.byte_size.or(type_size);
                let first = match (m.data_bit_offset, m.bit_offset) {
                    (Some(dbo), _) => base.checked_mul(8).and_then(|b| b.checked_add(dbo)),
                    // DWARF 2/3 counts from the storage unit's most
                    // significant bit; these targets are little-endian.
                    (None, Some(bo)) => storage.and_then(|s| {
                        byte.checked_mul(8)?
                            .checked_add(s.checked_mul(8)?)?
                            .checked_sub(bo)?
                            .checked_sub(bits)
                    }),
                    (None, None) => byte.checked_mul(8),
                };
                let (Some(first), Ok(width)) = (first, u32::try_from(bits)) else {
                    continue;
                };
                // `first % 8` is below 8: the conversion cannot fail.
                let within = u32::try_from(first % 8).unwrap_or(0);
                out.push(Field {
                    offset: first / 8,
                    bit: Some((within, width)),
                    size: storage.unwrap_or(0),
                    name: escape_name(name),
                });
                continue;
            }
            match m.name {
                Some(name) => out.push(Field {
                    offset: byte,
                    bit: None,
                    size: type_size.unwrap_or(0),
                    name: escape_name(name),
                }),
                None if depth < MAX_FLATTEN => {
                    let inner =
                        m.ty.and_then(|t| self.record_of(t, unit, false))
                            .and_then(|i| self.scan.types.get(i));
                    if let Some(inner) = inner {
                        self.fields(inner, byte, depth.saturating_add(1), out, budget)?;
                    }
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Items `[starts[s], starts[s + 1])` of `table`.
    fn of<'t, T>(&self, table: &'t [T], which: usize, s: usize) -> &'t [T] {
        let Some(starts) = self.starts.get(which) else {
            return &[];
        };
        match (starts.get(s), starts.get(s.saturating_add(1))) {
            (Some(&a), Some(&b)) => table.get(a..b).unwrap_or_default(),
            _ => &[],
        }
    }

    /// The records function `s` uses, into `records`; `visited` holds the
    /// functions already walked for this one. Each function and variable
    /// walked takes one from `budget`; `Err` when it runs out.
    fn collect(
        &self,
        s: usize,
        records: &mut Vec<usize>,
        visited: &mut Vec<usize>,
        depth: usize,
        budget: &mut usize,
    ) -> std::result::Result<(), ()> {
        if depth > MAX_CHAIN || visited.len() >= MAX_VISITED || visited.contains(&s) {
            return Ok(());
        }
        *budget = budget.checked_sub(1).ok_or(())?;
        visited.push(s);
        let Some(sub) = self.scan.subs.get(s) else {
            return Ok(());
        };
        let unit = Some(sub.unit);
        if let Some(rec) = sub.ty.and_then(|t| self.record_reached(t, unit)) {
            records.push(rec);
        }
        let vars = self.of(&self.scan.vars, 0, s);
        *budget = budget.checked_sub(vars.len()).ok_or(())?;
        for &(_, v) in vars {
            let ty = match v.split_origin() {
                (false, t) => Some(t),
                (true, o) => self.var_type(o, unit),
            };
            if let Some(rec) = ty.and_then(|t| self.record_reached(t, unit)) {
                records.push(rec);
            }
        }
        let next = depth.saturating_add(1);
        for &(_, o) in self.of(&self.scan.inlined, 1, s) {
            if let Some(i) = self.find_sub(o, unit) {
                self.collect(i, records, visited, next, budget)?;
            }
        }
        if let Some(i) = sub.origin.and_then(|o| self.find_sub(o, unit)) {
            self.collect(i, records, visited, next, budget)?;
        }
        Ok(())
    }

    /// The type uses of every function with code.
    fn uses(&self) -> std::result::Result<Vec<TypeUse>, String> {
        // Walking abstract origins and inlined subroutines costs a small
        // multiple of the entries in real output; a crafted file could make
        // every function reach the same huge tree.
        let mut budget = WALK_FACTOR
            .saturating_mul(self.scan.vars.len().saturating_add(self.scan.subs.len()))
            .saturating_add(WALK_BASE);
        let mut out = Vec::new();
        let mut records = Vec::new();
        let mut visited = Vec::new();
        let mut names: HashMap<usize, Option<String>> = HashMap::new();
        for s in 0..self.scan.subs.len() {
            let entries = self.of(&self.scan.entries, 2, s);
            if entries.is_empty() {
                continue;
            }
            records.clear();
            visited.clear();
            if self
                .collect(s, &mut records, &mut visited, 0, &mut budget)
                .is_err()
            {
                return Err(format!(
                    "following abstract origins and inlined subroutines takes more than {WALK_FACTOR} steps per entry"
                ));
            }
            if records.is_empty() {
                continue;
            }
            records.sort_unstable();
            records.dedup();
            let mut used: Vec<String> = records
                .iter()
                .filter_map(|&r| {
                    names
                        .entry(r)
                        .or_insert_with(|| self.record_name(r))
                        .clone()
                })
                .collect();
            if used.is_empty() {
                continue;
            }
            used.sort_unstable();
            used.dedup();
            for &(_, rva) in entries {
                out.push(TypeUse {
                    rva,
                    types: used.clone(),
                });
            }
        }
        Ok(out)
    }
}

impl Model<'_, '_> {
    /// The first line of every function with code: its own
    /// `DW_AT_decl_line`, or that of the first entry along its chain of
    /// abstract origins and specifications that has one (at most
    /// [`MAX_CHAIN`] steps), for each of its entry RVAs.
    fn lines(&self) -> Vec<FunctionLine> {
        let mut out = Vec::new();
        for (s, sub) in self.scan.subs.iter().enumerate() {
            let entries = self.of(&self.scan.entries, 2, s);
            if entries.is_empty() {
                continue;
            }
            let Some(line) = self.decl_line(sub) else {
                continue;
            };
            out.extend(entries.iter().map(|&(_, rva)| FunctionLine { rva, line }));
        }
        out
    }

    /// The declaration line of `sub`, following its origins.
    fn decl_line(&self, first: &Sub) -> Option<u32> {
        let mut sub = *first;
        for _ in 0..MAX_CHAIN {
            if sub.line != 0 {
                return Some(sub.line);
            }
            let next = self.find_sub(sub.origin?, Some(sub.unit))?;
            sub = *self.scan.subs.get(next)?;
        }
        None
    }
}

/// Where each function's items start in a table grouped by function: entry
/// `s` is the first item of function `s`, entry `subs` the end.
fn starts(owners: impl Iterator<Item = u32>, subs: usize) -> Vec<usize> {
    let mut counts = vec![0usize; subs.saturating_add(1)];
    for o in owners {
        if let Some(c) = counts.get_mut(o as usize) {
            *c = c.saturating_add(1);
        }
    }
    let mut at = 0usize;
    for c in &mut counts {
        let n = *c;
        *c = at;
        at = at.saturating_add(n);
    }
    counts
}

/// How many functions (a function, its origins and the subroutines inlined
/// into it) one function's uses may walk.
const MAX_VISITED: usize = 4096;

/// The walk of all functions' uses may take this many steps per function
/// and variable entry (plus [`WALK_BASE`]).
const WALK_FACTOR: usize = 256;

/// The fixed part of the walk's allowance.
const WALK_BASE: usize = 1 << 16;

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::path::PathBuf;

    thread_local! {
        /// Read with gimli's cursor instead of [`Fast`].
        static GIMLI: Cell<bool> = const { Cell::new(false) };
    }

    /// Whether this thread reads with gimli's cursor.
    pub(super) fn gimli_cursor() -> bool {
        GIMLI.get()
    }

    /// What the DWARF reader gives an image.
    type Read = (TypeInfo, Vec<TypeLayout>, Vec<TypeUse>, Vec<FunctionLine>);

    /// The type information of the ELF image in `bytes`, read with gimli's
    /// cursor or with [`Fast`].
    fn both(bytes: &[u8], path: &Path) -> [Read; 2] {
        [true, false].map(|gimli| {
            GIMLI.set(gimli);
            let image = crate::read::parse(bytes, &crate::read::ReadOptions::new(path))
                .unwrap_or_else(|e| panic!("{e}"));
            GIMLI.set(false);
            (image.type_info, image.types, image.type_uses, image.lines)
        })
    }

    /// C and C++ sources with records, bit-fields, arrays, nested and
    /// local types, namespaces, inlined functions and calls: compiled
    /// below for every DWARF form the compilers offer.
    const C_SOURCE: &str = r#"
        typedef struct point { int x, y; unsigned flags : 3; char name[7]; } point;
        union u { long l; double d; struct { short a, b; } pair; };
        static inline int norm(const point *p) { return p->x * p->x + p->y * p->y; }
        int use_union(union u *v, int k) { if (k) v->l = k; return (int)v->pair.a; }
        int area(point *p, int n) {
            struct local { int total; point *last; } acc = { 0, 0 };
            for (int i = 0; i < n; i++) { acc.total += norm(&p[i]); acc.last = &p[i]; }
            return acc.total + (acc.last ? acc.last->flags : 0);
        }
        point table[4];
        int lookup(int i) { switch (i & 3) { case 0: return table[0].x; case 1: return area(table, 2);
            case 2: return norm(&table[2]); default: return use_union(0, 0); } }
    "#;
    const CXX_SOURCE: &str = r#"
        namespace geo {
            struct base { virtual int kind() const { return id; } int id; };
            template <typename T> struct box : base { T items[3]; int count; T get(int i) const { return items[i]; } };
            struct shape { struct inner { int a; } in; box<int> ints; double w; };
        }
        int total(const geo::shape &s) { return s.in.a + s.ints.get(1) + s.ints.count; }
        extern geo::box<double> boxes[2];
        double first(int i) { return boxes[i & 1].get(0); }
    "#;

    /// [`Fast`] reads exactly what gimli's cursor reads: the same layouts,
    /// uses and lines, from every ELF image of the corpus (GCC, x86-64 and
    /// AArch64) and from C and C++ compiled by GCC and clang for DWARF 2, 4
    /// and 5, with and without type units, unoptimised and optimised.
    #[test]
    fn fast_cursor_reads_what_gimli_reads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
        let mut images: Vec<PathBuf> = Vec::new();
        for scenario in std::fs::read_dir(&root).unwrap() {
            for target in ["x86_64-linux", "aarch64-linux"] {
                let dir = scenario.as_ref().unwrap().path().join("bin").join(target);
                if let Ok(files) = std::fs::read_dir(&dir) {
                    images.extend(
                        files
                            .map(|f| f.unwrap().path())
                            .filter(|p| p.extension().is_some_and(|e| e == "so")),
                    );
                }
            }
        }
        assert!(images.len() > 40, "{} corpus images", images.len());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.c"), C_SOURCE).unwrap();
        std::fs::write(dir.path().join("t.cc"), CXX_SOURCE).unwrap();
        let mut compiled = 0;
        for (compiler, source, lang) in [
            ("cc", "t.c", "c"),
            ("clang-19", "t.c", "c"),
            ("clang-19", "t.cc", "c++"),
        ] {
            for dwarf in ["-gdwarf-2", "-gdwarf-4", "-gdwarf-5"] {
                for extra in [&["-O0"][..], &["-O2"], &["-O2", "-fdebug-types-section"]] {
                    let out = dir.path().join(format!("{compiled}.so"));
                    let status = std::process::Command::new(compiler)
                        .args(["-shared", "-fPIC", "-nostdlib", "-x", lang, dwarf])
                        .args(extra)
                        .arg(dir.path().join(source))
                        .arg("-o")
                        .arg(&out)
                        .status()
                        .unwrap_or_else(|e| panic!("{compiler}: {e}"));
                    assert!(status.success(), "{compiler} {dwarf} {extra:?}");
                    images.push(out);
                    compiled += 1;
                }
            }
        }
        let (mut read, mut records, mut uses) = (0, 0, 0);
        for path in &images {
            let bytes = std::fs::read(path).unwrap();
            let [gimli, fast] = both(&bytes, path);
            assert_eq!(gimli, fast, "{}", path.display());
            read += usize::from(gimli.0 == TypeInfo::Read);
            records += gimli.1.len();
            uses += gimli.2.len();
        }
        // Only the stripped scenario's images have no DWARF.
        assert!(read + 4 >= images.len(), "{read} of {} read", images.len());
        assert!(
            records > 100 && uses > 100,
            "{records} layouts, {uses} uses"
        );
    }

    fn ty(
        key: Key,
        tag: Tag,
        name: Option<&'static str>,
        to: Option<Key>,
        size: Option<u64>,
    ) -> TypeDie<'static> {
        TypeDie {
            key,
            tag,
            name: name.map(str::as_bytes),
            ty: to.and_then(Ref::die),
            signature: None,
            specification: None,
            size,
            declaration: false,
            scope: 0,
            members: 0,
            unit: 0,
        }
    }

    fn r(key: Key) -> Ref {
        Ref::die(key).unwrap()
    }

    #[test]
    fn packed_references() {
        let d = r(0x1234);
        assert_eq!((d.key(), d.sig_index()), (Some(0x1234), None));
        assert_eq!(d.as_origin().split_origin(), (true, d));
        assert_eq!(d.split_origin(), (false, d));
        assert_eq!(d.as_origin().key(), Some(0x1234));
        let s = Ref::sig(5).unwrap();
        assert_eq!((s.key(), s.sig_index()), (None, Some(5)));
        assert_eq!(Ref::die(0), None);
        assert_eq!(Ref::die(SIG_FLAG), None);
        assert!(Ref::die(TYPES_SECTION | 8).is_some());
        assert_eq!(std::mem::size_of::<Option<Ref>>(), 8);
    }

    fn scan(types: Vec<TypeDie<'static>>) -> Scan<'static> {
        Scan {
            types,
            scopes: vec![String::new()],
            ..Scan::default()
        }
    }

    #[test]
    fn cyclic_type_chains_end() {
        let s = scan(vec![
            ty(10, Tag::Typedef, Some("a"), Some(20), None),
            ty(20, Tag::Qualifier, None, Some(30), None),
            ty(30, Tag::Pointer, None, Some(10), Some(8)),
            ty(40, Tag::Array, None, Some(40), Some(3)),
        ]);
        let m = Model::new(&s);
        assert!(m.record_of(r(10), None, true).is_none());
        assert_eq!(m.size_of(r(10), None), Some(8));
        assert_eq!(m.size_of(r(40), None), None);
        assert!(m.record_of(r(40), None, true).is_none());
        // A reference to nothing, and a signature no unit defines.
        assert_eq!(m.size_of(r(99), None), None);
        assert!(m.record_of(Ref::sig(7).unwrap(), None, true).is_none());
    }

    #[test]
    fn cyclic_origins_end() {
        let mut s = scan(vec![
            ty(400, Tag::Struct, Some("s"), None, Some(4)),
            ty(401, Tag::Pointer, None, Some(400), Some(8)),
        ]);
        s.members.push(Vec::new());
        // f (100) has code, and its origin g (200) has f as origin; each
        // inlines the other.
        s.subs = vec![
            Sub {
                key: 100,
                ty: None,
                origin: Some(r(200)),
                unit: 0,
                line: 0,
            },
            Sub {
                key: 200,
                ty: None,
                origin: Some(r(100)),
                unit: 0,
                line: 0,
            },
        ];
        s.entries = vec![(0, 0x1000)];
        s.inlined = vec![(0, r(100)), (0, r(200)), (1, r(100))];
        // f's variable refers to a variable that refers back: no type.
        s.vars = vec![(0, r(300).as_origin()), (1, r(401))];
        s.var_types = vec![(402, r(401))];
        let m = Model::new(&s);
        assert_eq!(m.var_type(r(300), None), None);
        assert_eq!(
            m.uses().unwrap(),
            [TypeUse {
                rva: 0x1000,
                types: vec!["s".into()]
            }]
        );
        // The cycle of origins carries no line: none, after a bounded walk.
        assert_eq!(m.lines(), []);
    }

    /// A function's line is its own `DW_AT_decl_line`, else the first one
    /// along its origins (GCC's out-of-line copy of an inline function and
    /// its clones describe themselves by their abstract instance), for each
    /// of its entries.
    #[test]
    fn function_lines_follow_origins() {
        let mut s = scan(vec![ty(1, Tag::Leaf, Some("int"), None, Some(4))]);
        let sub = |key: u64, origin: Option<u64>, line: u32| Sub {
            key,
            ty: None,
            origin: origin.map(r),
            unit: 0,
            line,
        };
        s.subs = vec![
            sub(100, None, 7),       // abstract instance, line 7
            sub(110, Some(100), 0),  // concrete copy: line 7
            sub(120, Some(110), 0),  // clone of the copy: line 7
            sub(130, Some(100), 12), // its own line wins
            sub(140, None, 0),       // no line anywhere
            sub(150, Some(999), 0),  // origin not found
        ];
        s.entries = vec![
            (1, 0x1000),
            (2, 0x2000),
            (2, 0x2800),
            (3, 0x3000),
            (4, 0x4000),
            (5, 0x5000),
        ];
        let m = Model::new(&s);
        let line = |rva, line| FunctionLine { rva, line };
        assert_eq!(
            m.lines(),
            [
                line(0x1000, 7),
                line(0x2000, 7),
                line(0x2800, 7),
                line(0x3000, 12)
            ]
        );
    }

    fn member(name: Option<&'static str>, ty: Key, location: Option<u64>) -> Member<'static> {
        Member {
            name: name.map(str::as_bytes),
            ty: Ref::die(ty),
            location: location.map(Ok),
            ..Member::default()
        }
    }

    #[test]
    fn fields_of_every_form() {
        let mut s = scan(vec![
            ty(1, Tag::Leaf, Some("int"), None, Some(4)),
            ty(2, Tag::Union, None, None, Some(8)),
            ty(3, Tag::Struct, Some("outer"), None, Some(40)),
            ty(4, Tag::Struct, None, None, Some(8)),
            ty(5, Tag::Typedef, Some("anon_t"), Some(4), None),
            ty(6, Tag::Class, Some("base"), None, Some(4)),
            ty(7, Tag::Array, None, Some(1), Some(0)),
        ]);
        s.types[1].members = 0;
        s.types[2].members = 1;
        s.types[3].members = 2;
        s.types[5].members = 3;
        s.members = vec![
            // The anonymous union: two members at its start.
            vec![member(Some("u1"), 1, None), member(Some("u2"), 1, None)],
            vec![
                Member {
                    base: true,
                    ..member(None, 6, Some(0))
                },
                member(Some("a"), 1, Some(4)),
                // DWARF 2/3 bit-field: 3 bits at the top of a 4-byte unit.
                Member {
                    bit_offset: Some(0),
                    bit_size: Some(3),
                    byte_size: Some(4),
                    ..member(Some("hi"), 1, Some(8))
                },
                // DWARF 4+ bit-field.
                Member {
                    data_bit_offset: Some(99),
                    bit_size: Some(5),
                    ..member(Some("lo"), 1, None)
                },
                member(None, 2, Some(16)),
                member(Some("t"), 5, Some(24)),
                Member {
                    is_static: true,
                    ..member(Some("st"), 1, None)
                },
                Member {
                    location: Some(Err(())),
                    ..member(Some("vbase"), 6, None)
                },
                member(Some("flex"), 7, Some(32)),
            ],
            vec![member(Some("x"), 1, Some(0))],
            Vec::new(),
        ];
        let m = Model::new(&s);
        let layouts = m.layouts().unwrap();
        let names: Vec<_> = layouts.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["anon_t", "base", "outer"]);
        let outer = &layouts[2];
        let got: Vec<_> = outer
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.offset, f.size, f.bit))
            .collect();
        assert_eq!(
            got,
            [
                ("base base", 0, 4, None),
                ("a", 4, 4, None),
                ("hi", 11, 4, Some((5, 3))),
                ("lo", 12, 4, Some((3, 5))),
                ("u1", 16, 4, None),
                ("u2", 16, 4, None),
                ("t", 24, 8, None),
                ("flex", 32, 0, None),
            ]
        );
    }

    #[test]
    fn exploding_anonymous_members_are_an_error() {
        // Each level has 100 anonymous members of the next level's type.
        let mut types = vec![ty(1, Tag::Struct, Some("top"), None, Some(8))];
        for level in 0..17u64 {
            types.push(ty(10 + level, Tag::Union, None, None, Some(8)));
        }
        let mut s = scan(types);
        for (i, t) in s.types.iter_mut().enumerate() {
            t.members = i as u32;
        }
        s.members = (0..18u64)
            .map(|i| (0..100).map(|_| member(None, 10 + i, Some(0))).collect())
            .collect();
        let e = Model::new(&s).layouts().unwrap_err();
        assert!(e.contains("more than 65536 members"), "{e}");
    }

    #[test]
    fn walks_beyond_the_allowance_are_an_error() {
        // 800 functions with code each inline one abstract function with
        // 800 variables: 640,000 steps for 1,601 entries.
        let mut s = scan(vec![ty(1, Tag::Leaf, Some("int"), None, Some(4))]);
        s.subs = (0..801u64)
            .map(|i| Sub {
                key: 100 + i,
                ty: None,
                origin: None,
                unit: 0,
                line: 0,
            })
            .collect();
        s.vars = (0..800).map(|_| (800, r(1))).collect();
        s.inlined = (0..800).map(|i| (i, r(900))).collect();
        s.entries = (0..800).map(|i| (i, u64::from(i) * 16)).collect();
        let e = Model::new(&s).uses().unwrap_err();
        assert!(e.contains("more than 256 steps per entry"), "{e}");
    }

    #[test]
    fn type_and_member_names_with_control_characters_are_escaped() {
        let mut s = scan(vec![
            ty(1, Tag::Leaf, Some("int"), None, Some(4)),
            ty(2, Tag::Struct, Some("evil\x1b[2J"), None, Some(4)),
        ]);
        s.types[1].members = 0;
        s.types[1].scope = 1;
        s.members = vec![vec![member(Some("m\u{202e}x"), 1, Some(0))]];
        let scope = push_scope(&mut s, 0, b"ns\n");
        assert_eq!(scope, 1);
        let m = Model::new(&s);
        let layouts = m.layouts().unwrap();
        assert_eq!(layouts.len(), 1);
        assert_eq!(layouts[0].name, "ns\\x0a::evil\\x1b[2J");
        assert_eq!(layouts[0].fields[0].name, "m\\u{202e}x");
    }

    #[test]
    fn type_unit_stand_ins_and_specifications() {
        // A C++ type defined at a type unit's top level (20), completing
        // its declaration in namespace `net` (10); a compile unit refers to
        // it through a stand-in with only the signature (30).
        let mut s = scan(vec![
            ty(10, Tag::Class, Some("conn"), None, None),
            ty(20, Tag::Class, Some("conn"), None, Some(8)),
            ty(30, Tag::Class, None, None, None),
            ty(40, Tag::Pointer, None, Some(30), Some(8)),
        ]);
        s.scopes.push("net".into());
        s.types[0].scope = 1;
        s.types[0].declaration = true;
        s.types[1].specification = Some(r(10));
        s.types[1].members = 0;
        s.types[2].signature = Ref::sig(0);
        s.signatures.insert(0xabc, 20);
        s.signatures_used.push(0xabc);
        s.members.push(vec![member(Some("x"), 40, Some(0))]);
        let m = Model::new(&s);
        assert_eq!(m.record_name(1).as_deref(), Some("net::conn"));
        assert_eq!(m.record_name(2).as_deref(), Some("net::conn"));
        assert_eq!(m.size_of(r(30), None), Some(8));
        assert_eq!(m.record_reached(r(40), None), Some(2));
        let layouts = m.layouts().unwrap();
        assert_eq!(layouts.len(), 1);
        assert_eq!(
            (layouts[0].name.as_str(), layouts[0].size),
            ("net::conn", 8)
        );
    }

    #[test]
    fn item_starts() {
        assert_eq!(starts([0u32, 0, 2, 2, 2].into_iter(), 4), [0, 2, 2, 5, 5]);
        assert_eq!(starts([9u32].into_iter(), 2), [0, 0, 0]);
    }

    #[test]
    fn member_locations() {
        let expr = |b: &'static [u8]| {
            AttributeValue::Exprloc(gimli::Expression(EndianSlice::new(b, LittleEndian)))
        };
        assert_eq!(member_location(&AttributeValue::Udata(12)), Ok(12));
        assert_eq!(member_location(&AttributeValue::Sdata(-1)), Err(()));
        assert_eq!(member_location(&expr(&[0x23, 0x90, 0x01])), Ok(0x90));
        assert_eq!(member_location(&expr(&[0x23])), Err(()));
        assert_eq!(member_location(&expr(&[0x23, 0x08, 0x06])), Err(()));
        assert_eq!(member_location(&expr(&[0x12, 0x06])), Err(()));
    }
}

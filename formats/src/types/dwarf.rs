//! Layouts and type uses from DWARF (`.debug_info`, `.debug_abbrev`,
//! `.debug_str`, `.debug_line_str`, `.debug_str_offsets`, `.debug_addr`,
//! `.debug_rnglists`/`.debug_ranges`, and DWARF 4 `.debug_types`), versions 2
//! to 5, through gimli.
//!
//! One pass over every unit's entries (gimli's raw entry reader: attributes
//! of uninteresting entries are skipped, not decoded) records the entries
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
//!   it.
//!
//! Not handled: split DWARF (`.dwo` files), supplementary object files
//! (`DW_FORM_GNU_ref_alt`), and compressed sections, which give
//! [`TypeInfo::Unsupported`](crate::image::TypeInfo::Unsupported). A member
//! whose location is not a constant (a virtual base class) is left out of its
//! layout.

// Untrusted input: keep the usual panic sources out.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

use std::collections::HashMap;
use std::path::Path;

use gimli::{constants as dw, AttributeValue, EndianSlice, LittleEndian, Reader, SectionId};
use object::elf;
use object::read::elf::{SectionHeader, SectionTable};
use object::Endianness;

use super::{is_placeholder_name, Found, MAX_CHAIN, MAX_FLATTEN};
use crate::error::{Error, Result};
use crate::image::{Field, TypeInfo, TypeKind, TypeLayout, TypeUse};

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

/// Bit 63 of a [`Key`] marks an entry of `.debug_types`.
const TYPES_SECTION: u64 = 1 << 63;

/// An entry's identity: its offset in `.debug_info`, or in `.debug_types`
/// with [`TYPES_SECTION`] set.
type Key = u64;

/// A reference from one entry to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ref {
    /// An entry at a known offset.
    Die(Key),
    /// A type unit's type, by signature (`DW_FORM_ref_sig8`).
    Sig(u64),
}

/// The kinds of entries kept.
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
    /// `DW_TAG_subprogram`.
    Subprogram,
    /// `DW_TAG_formal_parameter` or `DW_TAG_variable` inside a function.
    Variable,
}

impl Tag {
    /// Whether this is a structure, union or class.
    fn is_record(self) -> bool {
        matches!(self, Tag::Struct | Tag::Union | Tag::Class)
    }
}

/// One kept entry.
#[derive(Clone, Debug)]
struct Die<'d> {
    /// Its kind.
    tag: Tag,
    /// `DW_AT_name`.
    name: Option<&'d [u8]>,
    /// `DW_AT_type`.
    ty: Option<Ref>,
    /// `DW_AT_abstract_origin` or `DW_AT_specification` (functions and
    /// variables), or `DW_AT_signature` (a declaration of a type defined in
    /// a type unit).
    origin: Option<Ref>,
    /// `DW_AT_byte_size`; for an array, its number of elements.
    size: Option<u64>,
    /// `DW_AT_declaration`.
    declaration: bool,
    /// Index into [`Scan::scopes`] of the C++ scope that encloses it (0: none).
    scope: u32,
    /// Index into [`Scan::members`] (records) or [`Scan::funcs`]
    /// (subprograms); unused otherwise.
    extra: u32,
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

/// A function as written: concrete (with code) or abstract.
#[derive(Clone, Debug, Default)]
struct Func {
    /// Entry RVAs (none for an abstract instance or a declaration).
    entries: Vec<u64>,
    /// Its parameters and variables, at any depth.
    vars: Vec<Key>,
    /// The abstract origins of the subroutines inlined into it.
    inlined: Vec<Ref>,
}

/// What one unit's context on the nesting stack is.
#[derive(Clone, Copy, Debug)]
enum Ctx {
    /// Inside a function (directly, or in a block or inlined subroutine of
    /// it): parameters and variables belong to this entry of [`Scan::funcs`].
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
    /// [`Scan::dies`]).
    Array(usize),
    /// Inside a namespace (or a C++ record without members of interest):
    /// names are qualified by this entry of [`Scan::scopes`].
    Scope(u32),
    /// Anything else with children (enumerations, subroutine types, call
    /// sites): their children are not parameters, variables or members.
    Opaque,
}

/// What the pass over the units collects.
#[derive(Default)]
struct Scan<'d> {
    /// Kept entries, sorted by key (units are read in file order).
    dies: Vec<(Key, Die<'d>)>,
    /// Member lists of records.
    members: Vec<Vec<Member<'d>>>,
    /// Functions.
    funcs: Vec<Func>,
    /// Qualified C++ scope prefixes (`ns::outer`); entry 0 is the empty scope.
    scopes: Vec<String>,
    /// Type-unit signatures to the key of their type.
    signatures: HashMap<u64, Key>,
    /// Whether the keys arrived in increasing order (they do, unless the
    /// file is damaged); if not, [`Scan::dies`] is sorted before use.
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
    let path = input.path;
    // Where each section is, and refuse compressed ones up front: they are
    // valid but not decompressed here.
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
            compressed.push(String::from_utf8_lossy(name).into_owned());
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
    let mut units = dwarf.units();
    while let Some(header) = units
        .next()
        .map_err(|e| malformed(path, format!(".debug_info: unit header: {e}")))?
    {
        let at = unit_key(header.offset());
        let unit = dwarf
            .unit(header)
            .map_err(|e| malformed(path, format!(".debug_info: unit at offset {at:#x}: {e}")))?;
        scan_unit(&dwarf, &unit, input, &mut scan)
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
        scan_unit(&dwarf, &unit, input, &mut scan)
            .map_err(|e| malformed(path, format!(".debug_types: unit at offset {at:#x}: {e}")))?;
    }
    if scan.unordered {
        scan.dies.sort_by_key(|d| d.0);
    }

    let model = Model::new(&scan);
    Ok(Found {
        info: TypeInfo::Read,
        types: model.layouts(),
        uses: model.uses(),
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

/// A reference attribute value, as a [`Ref`].
fn reference(unit_base: Key, value: &AttributeValue<R<'_>>) -> Option<Ref> {
    match *value {
        AttributeValue::UnitRef(o) => unit_base.checked_add(o.0 as u64).map(Ref::Die),
        AttributeValue::DebugInfoRef(o) => Some(Ref::Die(o.0 as u64)),
        AttributeValue::DebugTypesRef(sig) => Some(Ref::Sig(sig.0)),
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

/// One unit's entries into `scan`.
fn scan_unit<'d>(
    dwarf: &gimli::Dwarf<R<'d>>,
    unit: &gimli::Unit<R<'d>>,
    input: &Input<'_, 'd>,
    scan: &mut Scan<'d>,
) -> std::result::Result<(), ScanError> {
    let base = unit_key(unit.header.offset());
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
    let mut entries = unit.entries_raw(None)?;
    while !entries.is_empty() {
        let depth = entries.next_depth();
        let key = base.saturating_add(entries.next_offset().0 as u64);
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
        let kept = match tag {
            dw::DW_TAG_structure_type => Some(Tag::Struct),
            dw::DW_TAG_union_type => Some(Tag::Union),
            dw::DW_TAG_class_type => Some(Tag::Class),
            dw::DW_TAG_typedef => Some(Tag::Typedef),
            dw::DW_TAG_const_type
            | dw::DW_TAG_volatile_type
            | dw::DW_TAG_restrict_type
            | dw::DW_TAG_atomic_type
            | dw::DW_TAG_immutable_type
            | dw::DW_TAG_packed_type
            | dw::DW_TAG_shared_type => Some(Tag::Qualifier),
            dw::DW_TAG_pointer_type
            | dw::DW_TAG_reference_type
            | dw::DW_TAG_rvalue_reference_type
            | dw::DW_TAG_ptr_to_member_type => Some(Tag::Pointer),
            dw::DW_TAG_array_type => Some(Tag::Array),
            dw::DW_TAG_base_type | dw::DW_TAG_enumeration_type => Some(Tag::Leaf),
            dw::DW_TAG_subprogram => Some(Tag::Subprogram),
            dw::DW_TAG_formal_parameter | dw::DW_TAG_variable if func.is_some() => {
                Some(Tag::Variable)
            }
            _ => None,
        };

        // The context this entry opens for its children, if it has any.
        let mut opens = Ctx::Opaque;
        if let Some(t) = kept {
            let mut die = Die {
                tag: t,
                name: None,
                ty: None,
                origin: None,
                size: None,
                declaration: false,
                scope,
                extra: 0,
            };
            let mut low_pc = None;
            let mut ranges = None;
            for spec in abbrev.attributes() {
                let attr = entries.read_attribute(*spec)?;
                let value = attr.value();
                match attr.name() {
                    dw::DW_AT_name => die.name = Some(dwarf.attr_string(unit, value)?.slice()),
                    dw::DW_AT_type => die.ty = reference(base, &value),
                    dw::DW_AT_abstract_origin | dw::DW_AT_specification | dw::DW_AT_signature => {
                        die.origin = reference(base, &value)
                    }
                    dw::DW_AT_byte_size => die.size = constant(&value),
                    dw::DW_AT_declaration => die.declaration = flag(&value),
                    dw::DW_AT_low_pc if t == Tag::Subprogram => {
                        low_pc = dwarf.attr_address(unit, value)?
                    }
                    dw::DW_AT_ranges if t == Tag::Subprogram => {
                        ranges = dwarf.attr_ranges_offset(unit, value)?
                    }
                    _ => {}
                }
            }
            match t {
                Tag::Struct | Tag::Union | Tag::Class => {
                    die.extra = u32::try_from(scan.members.len()).unwrap_or(u32::MAX);
                    scan.members.push(Vec::new());
                    // Types nested in a C++ record are named within it.
                    let inner = match die.name {
                        Some(name) if qualify && abbrev.has_children() => {
                            push_scope(scan, scope, name)
                        }
                        _ => scope,
                    };
                    opens = Ctx::Record {
                        members: die.extra,
                        scope: inner,
                    };
                }
                Tag::Array => {
                    opens = Ctx::Array(scan.dies.len());
                    // Elements: the product of the subranges' counts.
                    die.size = Some(1);
                }
                Tag::Subprogram => {
                    let mut f = Func::default();
                    let mut add = |vaddr: u64| {
                        let rva = vaddr.wrapping_sub(input.base);
                        if input
                            .code
                            .iter()
                            .any(|&(s, n)| rva.checked_sub(s).is_some_and(|d| d < n))
                            && !f.entries.contains(&rva)
                        {
                            f.entries.push(rva);
                        }
                    };
                    if let Some(pc) = low_pc {
                        add(pc);
                    } else if let Some(offset) = ranges {
                        let mut iter = dwarf.ranges(unit, offset)?;
                        while let Some(r) = iter.next()? {
                            if r.end > r.begin {
                                add(r.begin);
                            }
                        }
                    }
                    die.extra = u32::try_from(scan.funcs.len()).unwrap_or(u32::MAX);
                    opens = Ctx::Func(die.extra);
                    scan.funcs.push(f);
                }
                Tag::Variable => {
                    if let Some(f) = func.and_then(|f| scan.funcs.get_mut(f as usize)) {
                        f.vars.push(key);
                    }
                }
                _ => {}
            }
            if scan.dies.last().is_some_and(|&(last, _)| last >= key) {
                scan.unordered = true;
            }
            scan.dies.push((key, die));
        } else {
            match tag {
                dw::DW_TAG_compile_unit | dw::DW_TAG_partial_unit | dw::DW_TAG_type_unit => {
                    for spec in abbrev.attributes() {
                        let attr = entries.read_attribute(*spec)?;
                        if let (dw::DW_AT_language, AttributeValue::Language(lang)) =
                            (attr.name(), attr.value())
                        {
                            qualify = !is_c(lang);
                        }
                    }
                    opens = Ctx::Scope(0);
                }
                dw::DW_TAG_namespace if qualify => {
                    let mut name = None;
                    for spec in abbrev.attributes() {
                        let attr = entries.read_attribute(*spec)?;
                        if attr.name() == dw::DW_AT_name {
                            name = Some(dwarf.attr_string(unit, attr.value())?.slice());
                        }
                    }
                    let ns: &[u8] = name.unwrap_or(b"(anonymous namespace)");
                    opens = Ctx::Scope(push_scope(scan, scope, ns));
                }
                dw::DW_TAG_lexical_block | dw::DW_TAG_inlined_subroutine if func.is_some() => {
                    let mut origin = None;
                    for spec in abbrev.attributes() {
                        let attr = entries.read_attribute(*spec)?;
                        if attr.name() == dw::DW_AT_abstract_origin
                            && tag == dw::DW_TAG_inlined_subroutine
                        {
                            origin = reference(base, &attr.value());
                        }
                    }
                    if let (Some(o), Some(f)) =
                        (origin, func.and_then(|f| scan.funcs.get_mut(f as usize)))
                    {
                        f.inlined.push(o);
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
                    for spec in abbrev.attributes() {
                        let attr = entries.read_attribute(*spec)?;
                        let value = attr.value();
                        match attr.name() {
                            dw::DW_AT_name => {
                                m.name = Some(dwarf.attr_string(unit, value)?.slice())
                            }
                            dw::DW_AT_type => m.ty = reference(base, &value),
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
                    }
                    if let Some(Ctx::Record { members, .. }) = ctx {
                        if let Some(list) = scan.members.get_mut(members as usize) {
                            list.push(m);
                        }
                    }
                }
                dw::DW_TAG_subrange_type if matches!(ctx, Some(Ctx::Array(_))) => {
                    let (mut count, mut lower, mut upper) = (None, None, None);
                    for spec in abbrev.attributes() {
                        let attr = entries.read_attribute(*spec)?;
                        let value = attr.value();
                        match attr.name() {
                            dw::DW_AT_count => count = Some(constant(&value)),
                            dw::DW_AT_lower_bound => lower = Some(constant(&value)),
                            dw::DW_AT_upper_bound => upper = Some(constant(&value)),
                            _ => {}
                        }
                    }
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
                        if let Some((_, arr)) = scan.dies.get_mut(i) {
                            arr.size = match (arr.size, n) {
                                (Some(a), Some(n)) => a.checked_mul(n),
                                _ => None,
                            };
                        }
                    }
                }
                _ => {
                    entries.skip_attributes(abbrev.attributes())?;
                }
            }
        }
        if abbrev.has_children() {
            push_ctx(&mut stack, depth, opens)?;
        }
    }
    Ok(())
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
    let name = String::from_utf8_lossy(name);
    let full = match scan.scopes.get(outer as usize) {
        Some(prefix) if !prefix.is_empty() => format!("{prefix}::{name}"),
        _ => name.into_owned(),
    };
    scan.scopes.push(full);
    u32::try_from(scan.scopes.len().saturating_sub(1)).unwrap_or(0)
}

/// The scanned entries, indexed for resolving references.
struct Model<'s, 'd> {
    /// What the scan found.
    scan: &'s Scan<'d>,
    /// Names that typedefs give to anonymous records, by record key.
    typedef_names: HashMap<Key, String>,
}

/// The qualified form of `name` in `scope`.
fn qualified(scan: &Scan<'_>, scope: u32, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match scan.scopes.get(scope as usize) {
        Some(prefix) if !prefix.is_empty() => format!("{prefix}::{name}"),
        _ => name.into_owned(),
    }
}

impl<'s, 'd> Model<'s, 'd> {
    /// Index the scan.
    fn new(scan: &'s Scan<'d>) -> Self {
        let mut model = Model {
            scan,
            typedef_names: HashMap::new(),
        };
        let mut names = HashMap::new();
        for (_, die) in &scan.dies {
            let (Tag::Typedef, Some(name), Some(Ref::Die(target))) = (die.tag, die.name, die.ty)
            else {
                continue;
            };
            let anonymous_record = model
                .find(target)
                .is_some_and(|t| t.tag.is_record() && t.name.is_none_or(is_placeholder_name));
            if anonymous_record {
                // The first typedef in the file names it.
                names
                    .entry(target)
                    .or_insert_with(|| qualified(scan, die.scope, name));
            }
        }
        model.typedef_names = names;
        model
    }

    /// The entry at `key`.
    fn find(&self, key: Key) -> Option<&'s Die<'d>> {
        let dies = &self.scan.dies;
        let i = dies.binary_search_by_key(&key, |d| d.0).ok()?;
        dies.get(i).map(|(_, d)| d)
    }

    /// The entry a reference points at, with its key.
    fn resolve(&self, r: Ref) -> Option<(Key, &'s Die<'d>)> {
        let key = match r {
            Ref::Die(k) => k,
            Ref::Sig(sig) => *self.scan.signatures.get(&sig)?,
        };
        Some((key, self.find(key)?))
    }

    /// The record a chain of typedefs, qualifiers, pointers, references and
    /// arrays starting at `r` ends in, if it ends in one.
    fn record_of(&self, mut r: Ref, through_pointers: bool) -> Option<(Key, &'s Die<'d>)> {
        for _ in 0..MAX_CHAIN {
            let (key, die) = self.resolve(r)?;
            match die.tag {
                Tag::Struct | Tag::Union | Tag::Class => return Some((key, die)),
                Tag::Typedef | Tag::Qualifier => r = die.ty?,
                Tag::Pointer | Tag::Array if through_pointers => r = die.ty?,
                _ => return None,
            }
        }
        None
    }

    /// The name of a record: its tag name (qualified for C++), or the name a
    /// typedef gives it, or (for a declaration of a type-unit type) the
    /// name of the definition.
    fn record_name(&self, key: Key, die: &Die<'d>) -> Option<String> {
        if let Some(name) = die.name.filter(|n| !is_placeholder_name(n)) {
            return Some(qualified(self.scan, die.scope, name));
        }
        if let Some(name) = self.typedef_names.get(&key) {
            return Some(name.clone());
        }
        if die.declaration {
            // A declaration of a type defined in a type unit.
            let (k, d) = self.resolve(die.origin?)?;
            if k != key && d.tag.is_record() {
                if let Some(name) = d.name.filter(|n| !is_placeholder_name(n)) {
                    return Some(qualified(self.scan, d.scope, name));
                }
                return self.typedef_names.get(&k).cloned();
            }
        }
        None
    }

    /// The size in bytes of an object of type `r`.
    fn size_of(&self, mut r: Ref) -> Option<u64> {
        // Elements of the arrays passed on the way.
        let mut count: u64 = 1;
        for _ in 0..MAX_CHAIN {
            let (_, die) = self.resolve(r)?;
            match die.tag {
                Tag::Struct | Tag::Union | Tag::Class if die.declaration => r = die.origin?,
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
                Tag::Subprogram | Tag::Variable => return None,
            }
        }
        None
    }

    /// Every complete, named record as a layout.
    fn layouts(&self) -> Vec<TypeLayout> {
        let mut out = Vec::new();
        for &(key, ref die) in &self.scan.dies {
            let kind = match die.tag {
                Tag::Struct => TypeKind::Struct,
                Tag::Union => TypeKind::Union,
                Tag::Class => TypeKind::Class,
                _ => continue,
            };
            let Some(size) = die.size.filter(|_| !die.declaration) else {
                continue;
            };
            let Some(name) = self.record_name(key, die) else {
                continue;
            };
            let mut fields = Vec::new();
            self.fields(die.extra, 0, 0, &mut fields);
            out.push(TypeLayout {
                name,
                kind,
                size,
                fields,
            });
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The fields of member list `list`, at `base` bytes into the outermost
    /// record, into `out`. Anonymous record members are flattened.
    fn fields(&self, list: u32, base: u64, depth: usize, out: &mut Vec<Field>) {
        let Some(members) = self.scan.members.get(list as usize) else {
            return;
        };
        for m in members {
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
            let type_size = m.ty.and_then(|t| self.size_of(t));
            if m.base {
                let class =
                    m.ty.and_then(|t| self.record_of(t, false))
                        .and_then(|(k, d)| self.record_name(k, d))
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
                    name: String::from_utf8_lossy(name).into_owned(),
                });
                continue;
            }
            match m.name {
                Some(name) => out.push(Field {
                    offset: byte,
                    bit: None,
                    size: type_size.unwrap_or(0),
                    name: String::from_utf8_lossy(name).into_owned(),
                }),
                None if depth < MAX_FLATTEN => {
                    if let Some((_, inner)) = m.ty.and_then(|t| self.record_of(t, false)) {
                        self.fields(inner.extra, byte, depth.saturating_add(1), out);
                    }
                }
                None => {}
            }
        }
    }

    /// The type of a parameter or variable, from it or its origin.
    fn type_of_var(&self, key: Key) -> Option<Ref> {
        let mut die = self.find(key)?;
        for _ in 0..MAX_CHAIN {
            if let Some(t) = die.ty {
                return Some(t);
            }
            die = self.resolve(die.origin?)?.1;
        }
        None
    }

    /// The records function `key` uses, into `records` (keys); `visited`
    /// holds the functions already walked for this one.
    fn collect(
        &self,
        key: Key,
        die: &Die<'d>,
        records: &mut Vec<Key>,
        visited: &mut Vec<Key>,
        depth: usize,
    ) {
        if depth > MAX_CHAIN || visited.len() >= MAX_VISITED || visited.contains(&key) {
            return;
        }
        visited.push(key);
        if let Some((k, _)) = die.ty.and_then(|t| self.record_of(t, true)) {
            records.push(k);
        }
        let Some(func) = self.scan.funcs.get(die.extra as usize) else {
            return;
        };
        for &v in &func.vars {
            if let Some((k, _)) = self.type_of_var(v).and_then(|t| self.record_of(t, true)) {
                records.push(k);
            }
        }
        let next = depth.saturating_add(1);
        for &o in &func.inlined {
            if let Some((k, d)) = self.resolve(o).filter(|(_, d)| d.tag == Tag::Subprogram) {
                self.collect(k, d, records, visited, next);
            }
        }
        if let Some((k, d)) = die
            .origin
            .and_then(|o| self.resolve(o))
            .filter(|(_, d)| d.tag == Tag::Subprogram)
        {
            self.collect(k, d, records, visited, next);
        }
    }

    /// The type uses of every function with code.
    fn uses(&self) -> Vec<TypeUse> {
        let mut out = Vec::new();
        let mut records = Vec::new();
        let mut visited = Vec::new();
        for &(key, ref die) in &self.scan.dies {
            if die.tag != Tag::Subprogram {
                continue;
            }
            let Some(func) = self.scan.funcs.get(die.extra as usize) else {
                continue;
            };
            if func.entries.is_empty() {
                continue;
            }
            records.clear();
            visited.clear();
            self.collect(key, die, &mut records, &mut visited, 0);
            records.sort_unstable();
            records.dedup();
            let mut names: Vec<String> = records
                .iter()
                .filter_map(|&k| self.record_name(k, self.find(k)?))
                .collect();
            if names.is_empty() {
                continue;
            }
            names.sort_unstable();
            names.dedup();
            for &rva in &func.entries {
                out.push(TypeUse {
                    rva,
                    types: names.clone(),
                });
            }
        }
        out
    }
}

/// How many functions (a function, its origins and the subroutines inlined
/// into it) one function's uses may walk.
const MAX_VISITED: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    fn die(
        tag: Tag,
        name: Option<&'static str>,
        ty: Option<Key>,
        size: Option<u64>,
    ) -> Die<'static> {
        Die {
            tag,
            name: name.map(str::as_bytes),
            ty: ty.map(Ref::Die),
            origin: None,
            size,
            declaration: false,
            scope: 0,
            extra: 0,
        }
    }

    fn scan(dies: Vec<(Key, Die<'static>)>) -> Scan<'static> {
        Scan {
            dies,
            scopes: vec![String::new()],
            ..Scan::default()
        }
    }

    #[test]
    fn cyclic_type_chains_end() {
        let s = scan(vec![
            (10, die(Tag::Typedef, Some("a"), Some(20), None)),
            (20, die(Tag::Qualifier, None, Some(30), None)),
            (30, die(Tag::Pointer, None, Some(10), Some(8))),
            (40, die(Tag::Array, None, Some(40), Some(3))),
        ]);
        let m = Model::new(&s);
        assert!(m.record_of(Ref::Die(10), true).is_none());
        assert_eq!(m.size_of(Ref::Die(10)), Some(8));
        assert_eq!(m.size_of(Ref::Die(40)), None);
        assert!(m.record_of(Ref::Die(40), true).is_none());
        // A reference to nothing, and a signature no unit defines.
        assert_eq!(m.size_of(Ref::Die(99)), None);
        assert!(m.record_of(Ref::Sig(7), true).is_none());
    }

    #[test]
    fn cyclic_origins_end() {
        let mut s = scan(vec![
            (100, die(Tag::Subprogram, Some("f"), None, None)),
            (200, die(Tag::Subprogram, None, None, None)),
            (300, die(Tag::Variable, None, None, None)),
            (301, die(Tag::Variable, None, None, None)),
            (400, die(Tag::Struct, Some("s"), None, Some(4))),
            (401, die(Tag::Pointer, None, Some(400), Some(8))),
            (402, die(Tag::Variable, Some("p"), Some(401), None)),
        ]);
        s.dies[0].1.origin = Some(Ref::Die(200));
        s.dies[1].1.origin = Some(Ref::Die(100));
        s.dies[1].1.extra = 1;
        s.dies[2].1.origin = Some(Ref::Die(301));
        s.dies[3].1.origin = Some(Ref::Die(300));
        s.members.push(Vec::new());
        s.funcs = vec![
            Func {
                entries: vec![0x1000],
                vars: vec![300],
                inlined: vec![Ref::Die(100), Ref::Die(200)],
            },
            Func {
                entries: Vec::new(),
                vars: vec![402],
                inlined: vec![Ref::Die(100)],
            },
        ];
        s.dies[4].1.extra = 0;
        let m = Model::new(&s);
        assert_eq!(m.type_of_var(300), None);
        let uses = m.uses();
        assert_eq!(
            uses,
            [TypeUse {
                rva: 0x1000,
                types: vec!["s".into()]
            }]
        );
    }

    fn member(name: Option<&'static str>, ty: Key, location: Option<u64>) -> Member<'static> {
        Member {
            name: name.map(str::as_bytes),
            ty: Some(Ref::Die(ty)),
            location: location.map(Ok),
            ..Member::default()
        }
    }

    #[test]
    fn fields_of_every_form() {
        let mut s = scan(vec![
            (1, die(Tag::Leaf, Some("int"), None, Some(4))),
            (2, die(Tag::Union, None, None, Some(8))),
            (3, die(Tag::Struct, Some("outer"), None, Some(40))),
            (4, die(Tag::Struct, None, None, Some(8))),
            (5, die(Tag::Typedef, Some("anon_t"), Some(4), None)),
            (6, die(Tag::Class, Some("base"), None, Some(4))),
            (7, die(Tag::Array, None, Some(1), Some(0))),
        ]);
        s.dies[1].1.extra = 0;
        s.dies[2].1.extra = 1;
        s.dies[3].1.extra = 2;
        s.dies[5].1.extra = 3;
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
        let layouts = m.layouts();
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

//! The format-independent image model.
//!
//! Both the PE/PDB reader and the ELF reader produce an [`Image`]. After
//! reading, nothing downstream needs to know which format an image came from,
//! except through [`Image::format`] where the formats really differ.
//!
//! Addresses are relative virtual addresses (RVAs): offsets from the image's
//! load base. For ELF shared objects, whose first segment is linked at 0, the
//! RVA equals the symbol value.

use serde::{Deserialize, Serialize};

/// The container format an image was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Portable Executable (Windows), with its symbols from a PDB (or, without
    /// one, its functions from the exception directory and the exports).
    Pe,
    /// Executable and Linkable Format (Linux), with `.symtab` or `.dynsym` symbols.
    Elf,
}

impl Format {
    /// The usual name: `PE` or `ELF`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Pe => "PE",
            Format::Elf => "ELF",
        }
    }
}

/// The instruction-set architecture of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86-64 (AMD64).
    X86_64,
    /// AArch64 (ARM64).
    Aarch64,
}

impl Arch {
    /// The conventional short name: `x86_64` or `aarch64`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

/// Memory permissions of a mapped section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Permissions {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub execute: bool,
}

impl std::fmt::Display for Permissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = if self.read { 'r' } else { '-' };
        let w = if self.write { 'w' } else { '-' };
        let x = if self.execute { 'x' } else { '-' };
        write!(f, "{r}{w}{x}")
    }
}

/// A section mapped into memory when the image is loaded.
///
/// `data` borrows the file's bytes. It may be shorter than `size` (for
/// example `.bss`, or a PE section whose raw data is smaller than its virtual
/// size); the rest of the section is zero-filled when loaded.
#[derive(Clone, Debug)]
pub struct Section<'data> {
    /// Section name, such as `.text` or `.rodata`.
    pub name: String,
    /// RVA of the first byte.
    pub rva: u64,
    /// Size in memory.
    pub size: u64,
    /// Memory permissions.
    pub perms: Permissions,
    /// The initialised bytes from the file (at most `size` bytes).
    pub data: &'data [u8],
}

impl<'data> Section<'data> {
    /// Whether `rva` lies inside this section's memory range.
    pub fn contains(&self, rva: u64) -> bool {
        rva.checked_sub(self.rva).is_some_and(|off| off < self.size)
    }

    /// The initialised bytes for `[rva, rva + len)`, or `None` when the range
    /// is not entirely inside this section's file-backed bytes.
    pub fn bytes_at(&self, rva: u64, len: u64) -> Option<&'data [u8]> {
        let start = rva.checked_sub(self.rva)?;
        let end = start.checked_add(len)?;
        let start = usize::try_from(start).ok()?;
        let end = usize::try_from(end).ok()?;
        self.data.get(start..end)
    }
}

/// Symbol visibility, unified over PE and ELF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Local to its translation unit (C `static`; ELF `STB_LOCAL`; PDB `S_LPROC32`/`S_LDATA32`).
    Local,
    /// Global inside the image but not exported.
    Global,
    /// Exported from the image (PE export table; ELF default-visibility dynamic symbol).
    Exported,
}

/// A function of the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Function {
    /// The symbol name as the toolchain wrote it (GCC clone suffixes such as
    /// `.cold` or `.isra.0` are kept; the builder folds them).
    pub name: String,
    /// RVA of the entry point.
    pub rva: u64,
    /// Size of the code in bytes.
    pub size: u64,
    /// The translation unit: the PDB module name (PE), or the preceding
    /// `STT_FILE` symbol for local ELF symbols. `None` when the format does not
    /// record it (global ELF symbols, or a stripped image).
    pub unit: Option<String>,
    /// Visibility.
    pub visibility: Visibility,
    /// Where the name and extent come from.
    pub extent: Extent,
}

/// Where a [`Function`]'s name and extent come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Extent {
    /// A record that gives the function's name and size: an ELF symbol
    /// (`st_size`) or a PDB procedure record (`S_GPROC32`/`S_LPROC32`).
    #[default]
    Symbol,
    /// A stripped image ([`Image::stripped`]): unwind data (`.eh_frame`
    /// FDEs, `.pdata` entries) and the exported names.
    Stripped,
    /// A PDB public symbol (`S_PUB32`) that no procedure record describes
    /// (code built without CodeView, such as mingw's runtime library), whose
    /// extent is the `.pdata` entry that starts at it.
    PublicUnwind,
    /// A PDB public symbol (`S_PUB32`) that no procedure record describes
    /// and no `.pdata` entry starts (a leaf function): its extent runs to the
    /// next known start in its section contribution, capped at the
    /// contribution's end, less the linker's fill.
    PublicContribution,
    /// Code that neither a procedure record nor a public symbol names (a
    /// static function of an object built without CodeView) but that has
    /// a `.pdata` entry inside one section contribution: a local function
    /// of that contribution's module, named by its offset in the module's
    /// code (`code+0x40`), its extent the `.pdata` entry's.
    StaticUnwind,
}

impl Extent {
    /// Whether a PE function has no procedure record in its PDB (see the
    /// variants): a public symbol, or static code found by its unwind data.
    pub fn without_procedure(self) -> bool {
        matches!(
            self,
            Extent::PublicUnwind | Extent::PublicContribution | Extent::StaticUnwind
        )
    }

    /// A short description, for reports: `symbol`, `stripped`,
    /// `public, .pdata`, `public, contribution` or `no symbol, .pdata`.
    pub fn describe(self) -> &'static str {
        match self {
            Extent::Symbol => "symbol",
            Extent::Stripped => "stripped",
            Extent::PublicUnwind => "public, .pdata",
            Extent::PublicContribution => "public, contribution",
            Extent::StaticUnwind => "no symbol, .pdata",
        }
    }
}

/// A data object of the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DataObject {
    /// The symbol name.
    pub name: String,
    /// RVA of the first byte.
    pub rva: u64,
    /// Size in bytes (from the ELF symbol, or from the PDB type record).
    pub size: u64,
    /// Name of the section that holds it.
    pub section: String,
    /// The translation unit, where the format records it (see [`Function::unit`]).
    pub unit: Option<String>,
    /// Visibility.
    pub visibility: Visibility,
}

/// An exported entry point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Export {
    /// The exported name.
    pub name: String,
    /// RVA of the exported function or object.
    pub rva: u64,
}

/// What a load-time relocation makes the patched location point at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelocTarget {
    /// An address inside this image, given as an RVA. PE base relocations
    /// (the RVA is the stored pointer minus the preferred base) and ELF
    /// `*_RELATIVE` relocations (the RVA is the addend).
    Rva(u64),
    /// A symbol resolved by the dynamic loader, plus an addend: ELF absolute
    /// relocations such as `R_X86_64_64` or `R_AARCH64_ABS64`, `GLOB_DAT` and
    /// `JUMP_SLOT`.
    Symbol {
        /// The symbol name.
        name: String,
        /// The addend.
        addend: i64,
    },
}

/// A location that the loader adjusts when the image is loaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Relocation {
    /// RVA of the patched location.
    pub rva: u64,
    /// Width of the patched value in bytes (4 or 8).
    pub width: u8,
    /// What the location points at once loaded.
    pub target: RelocTarget,
}

/// A CodeView (RSDS) debug record of a PE image: the key that ties it to its PDB.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CodeView {
    /// The PDB GUID, as its 16 raw bytes in file order.
    pub guid: [u8; 16],
    /// The PDB age.
    pub age: u32,
    /// The PDB path written by the linker.
    pub path: String,
}

impl CodeView {
    /// The GUID in the usual `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` form.
    pub fn guid_string(&self) -> String {
        guid_to_string(&self.guid)
    }
}

/// Format a raw little-endian Windows GUID as `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`.
pub fn guid_to_string(g: &[u8; 16]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        g[8],
        g[9],
        g[10],
        g[11],
        g[12],
        g[13],
        g[14],
        g[15]
    )
}

/// Whether a [`TypeLayout`] is a `struct`, a `union` or a `class`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TypeKind {
    /// `struct` (DWARF `DW_TAG_structure_type`, PDB `LF_STRUCTURE`).
    Struct,
    /// `union` (DWARF `DW_TAG_union_type`, PDB `LF_UNION`).
    Union,
    /// `class` (DWARF `DW_TAG_class_type`, PDB `LF_CLASS` and `LF_INTERFACE`).
    Class,
}

impl TypeKind {
    /// The C/C++ keyword: `struct`, `union` or `class`.
    pub fn keyword(self) -> &'static str {
        match self {
            TypeKind::Struct => "struct",
            TypeKind::Union => "union",
            TypeKind::Class => "class",
        }
    }
}

/// One data member of a [`TypeLayout`].
///
/// Members of an anonymous `struct` or `union` member are listed as members
/// of the enclosing type, at their offset in it (that is how C and C++ name
/// them). A base class is a field named `base <class name>`, and the hidden
/// pointer to a virtual function table a field named `vfptr` (PDB) or
/// `_vptr.<class>` (GCC). Static members, methods and nested types are not
/// fields.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Field {
    /// Byte offset from the start of the type. For a bit-field, the byte that
    /// holds its first bit.
    pub offset: u64,
    /// For a bit-field: its first bit, counted from bit 0 of the byte at
    /// [`Field::offset`] (so `offset * 8 + bit.0` is its bit offset in the
    /// type, on these little-endian targets), and its width in bits.
    pub bit: Option<(u32, u32)>,
    /// Size in bytes of the member's type (for a bit-field, of its declared
    /// type, such as 4 for `unsigned int x : 3`); 0 for a flexible array
    /// member or a type whose size the debug information does not give.
    pub size: u64,
    /// The member's name.
    pub name: String,
}

/// A `struct`, `union` or `class` layout from the debug information
/// (DWARF in ELF images, the PDB type stream for PE images).
///
/// Only complete definitions are layouts; declarations and forward
/// references are not. The same name can have several layouts in one image
/// (two unrelated `struct node` in two source files): each is its own entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TypeLayout {
    /// The tag name (`struct conn` is `conn`); the `typedef` name of an
    /// anonymous type named only through a `typedef`; the qualified name of
    /// a C++ type (`net::conn`). Types with no reachable name are not read.
    pub name: String,
    /// `struct`, `union` or `class`.
    pub kind: TypeKind,
    /// Size in bytes (`sizeof`).
    pub size: u64,
    /// Data members, sorted by offset, bit, size and name.
    pub fields: Vec<Field>,
}

/// The struct, union and class types one function uses, by name.
///
/// A function uses a type when its debug information gives it a parameter,
/// a local variable (at any scope, including those of subroutines inlined
/// into it) or a return value of that type, or of a pointer, reference,
/// array, `typedef` or `const`/`volatile` qualification of it, through any
/// chain of those. A type reached only through another type's members is
/// not a use.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TypeUse {
    /// RVA of the function's entry point (the `rva` of its
    /// [`Function`]); for a function split into parts (GCC's hot and
    /// `.cold` parts), one entry per part.
    pub rva: u64,
    /// Names of the types it uses (as in [`TypeLayout::name`]), sorted,
    /// without duplicates.
    pub types: Vec<String>,
}

/// The first source line of one function, from the debug information.
///
/// - ELF: the function's `DW_AT_decl_line` (the line of its declarator), on
///   the `DW_TAG_subprogram` that has its code or, when that one has none
///   (GCC's out-of-line copy of an inline function, a `.part`/`.isra`
///   clone), on the entry its `DW_AT_abstract_origin` or
///   `DW_AT_specification` chain leads to. Every part of a function split
///   by GCC (hot and `.cold`) has the same line.
/// - PE: the smallest line of the function's line table in the PDB (the
///   C13 `DEBUG_S_LINES` subsection of its module that starts at the
///   function's address), in the source file of its lowest offset: the
///   function's opening brace, or for a leaf function that clang emits
///   without a prologue, its first statement that has code.
///
/// Either way, when lines are added or removed above a function, its line
/// moves by the same amount as every `__LINE__` written in it: the
/// difference between two builds is the function's line shift.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct FunctionLine {
    /// RVA of the function's entry point (of each part, for a function in
    /// several parts).
    pub rva: u64,
    /// The line, counted from 1.
    pub line: u32,
}

/// Where an image's [`TypeLayout`]s and [`TypeUse`]s come from, and whether
/// they are complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "lowercase")]
pub enum TypeInfo {
    /// No debug information about types: an ELF image without
    /// `.debug_info` (stripped, or built without `-g`), or a PDB without
    /// a type stream. Layouts cannot be compared.
    Absent,
    /// Read from DWARF (ELF) or from the PDB's type and symbol streams (PE).
    Read,
    /// The debug information is there but in a form this reader does not
    /// read (for example compressed DWARF sections); the text says what.
    /// Layouts cannot be compared.
    Unsupported(String),
}

/// Format-specific identity fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum FormatIdentity {
    /// PE header fields and the CodeView record.
    Pe {
        /// `IMAGE_FILE_HEADER.TimeDateStamp` (a content hash under `/Brepro`).
        time_date_stamp: u32,
        /// `IMAGE_OPTIONAL_HEADER.SizeOfImage`.
        size_of_image: u32,
        /// `IMAGE_OPTIONAL_HEADER.CheckSum`.
        checksum: u32,
        /// The CodeView record, if the image has one.
        codeview: Option<CodeView>,
    },
    /// ELF identity.
    Elf {
        /// The GNU build-id note (`NT_GNU_BUILD_ID`), if present.
        build_id: Option<Vec<u8>>,
    },
}

/// What the format records to identify one exact build of an image. The
/// file's own digest is [`Image::sha256`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Format-specific fields.
    pub format: FormatIdentity,
}

/// One image, whatever its format.
///
/// Sections borrow the file's bytes (`'data`); everything else is owned.
/// Functions, data objects, exports and relocations are sorted by RVA (then
/// by name), so that the same input always gives the same model.
#[derive(Clone, Debug)]
pub struct Image<'data> {
    /// The whole file, as read.
    pub file: &'data [u8],
    /// Container format.
    pub format: Format,
    /// Architecture.
    pub arch: Arch,
    /// Preferred load address.
    pub preferred_base: u64,
    /// Sections that are mapped when loaded.
    pub sections: Vec<Section<'data>>,
    /// Functions.
    pub functions: Vec<Function>,
    /// Data objects.
    pub data: Vec<DataObject>,
    /// Exported entry points.
    pub exports: Vec<Export>,
    /// Load-time relocations.
    pub relocations: Vec<Relocation>,
    /// Build identity.
    pub identity: Identity,
    /// RVAs where the linker joined one input piece to the next, beyond the
    /// symbols: PE section contributions from the PDB (each COMDAT constant,
    /// string literal or jump table is its own piece) and the ends of the
    /// PE data directories. Anonymous data is never taken to run across one.
    /// Sorted, without duplicates; empty for ELF.
    pub boundaries: Vec<u64>,
    /// Whether function boundaries came from a fallback rather than a full
    /// symbol table: `.eh_frame` ranges on a stripped ELF, the exception
    /// directory and the exports on a PE image read without its PDB. Such
    /// an image has no symbols for its data.
    pub stripped: bool,
    /// Whether [`Image::types`] and [`Image::type_uses`] could be read: the
    /// image may lack the debug information they come from, and then they
    /// are empty because nothing could be read, not because the program has
    /// no types.
    pub type_info: TypeInfo,
    /// Struct, union and class layouts, sorted (by name, kind, size, then
    /// fields) and without duplicates.
    pub types: Vec<TypeLayout>,
    /// The types each function uses, sorted by RVA, one entry per RVA.
    /// Functions that use no struct, union or class have no entry.
    pub type_uses: Vec<TypeUse>,
    /// The first source line of each function whose debug information
    /// gives one (see [`FunctionLine`]), sorted by RVA, one entry per RVA.
    /// An RVA that two records give different lines has no entry (the
    /// line is unknown, not guessed). Used to recognise changes that are
    /// only `__LINE__` moving with the source; a function without a line
    /// is never taken for one. Line information that is damaged where the
    /// rest of the debug information is sound (a PDB module's C13 line
    /// subsections) does not fail the read: that module's functions just
    /// have no line. On ELF the line is an attribute of `.debug_info`,
    /// which the type reader already checks.
    pub lines: Vec<FunctionLine>,
}

impl<'data> Image<'data> {
    /// SHA-256 of the whole file, computed on each call (it reads every
    /// byte; the diff never needs it, a package binds to it once).
    pub fn sha256(&self) -> [u8; 32] {
        crate::read::sha256(self.file)
    }

    /// The section that contains `rva`, if any.
    pub fn section_at(&self, rva: u64) -> Option<&Section<'data>> {
        self.sections.iter().find(|s| s.contains(rva))
    }

    /// The initialised bytes of `[rva, rva + len)`, if they lie entirely in one
    /// section's file-backed data.
    pub fn bytes_at(&self, rva: u64, len: u64) -> Option<&'data [u8]> {
        self.section_at(rva)?.bytes_at(rva, len)
    }

    /// The code bytes of a function, if its range is file-backed.
    pub fn function_bytes(&self, f: &Function) -> Option<&'data [u8]> {
        self.bytes_at(f.rva, f.size)
    }

    /// Sort every table into its canonical order (by RVA, then name).
    pub(crate) fn canonicalise(&mut self) {
        self.sections
            .sort_by(|a, b| (a.rva, &a.name).cmp(&(b.rva, &b.name)));
        // Every field takes part in the order, so an unstable sort gives
        // one result whatever the input order.
        self.functions.sort_unstable_by(|a, b| {
            (a.rva, &a.name, &a.unit, a.size, a.visibility).cmp(&(
                b.rva,
                &b.name,
                &b.unit,
                b.size,
                b.visibility,
            ))
        });
        self.functions.dedup();
        self.data.sort_unstable_by(|a, b| {
            (a.rva, &a.name, &a.unit, a.size, &a.section, a.visibility).cmp(&(
                b.rva,
                &b.name,
                &b.unit,
                b.size,
                &b.section,
                b.visibility,
            ))
        });
        self.data.dedup();
        self.exports
            .sort_by(|a, b| (a.rva, &a.name).cmp(&(b.rva, &b.name)));
        self.exports.dedup();
        self.relocations.sort_by_key(|r| r.rva);
        self.boundaries.sort_unstable();
        self.boundaries.dedup();
        for t in &mut self.types {
            t.fields.sort_unstable();
        }
        self.types.sort_unstable();
        self.types.dedup();
        self.type_uses.sort_unstable();
        // One entry per RVA: merge the names of entries that share one.
        let mut merged: Vec<TypeUse> = Vec::with_capacity(self.type_uses.len());
        for u in self.type_uses.drain(..) {
            match merged.last_mut() {
                Some(last) if last.rva == u.rva => last.types.extend(u.types),
                _ => merged.push(u),
            }
        }
        for u in &mut merged {
            u.types.sort_unstable();
            u.types.dedup();
        }
        merged.retain(|u| !u.types.is_empty());
        self.type_uses = merged;
        // One line per RVA; an RVA with two different lines has none.
        self.lines.sort_unstable();
        self.lines.dedup();
        let mut lines: Vec<FunctionLine> = Vec::with_capacity(self.lines.len());
        let mut ambiguous: Option<u64> = None;
        for l in self.lines.drain(..) {
            if ambiguous == Some(l.rva) {
                continue;
            }
            if lines.last().is_some_and(|last| last.rva == l.rva) {
                lines.pop();
                ambiguous = Some(l.rva);
                continue;
            }
            lines.push(l);
        }
        self.lines = lines;
    }

    /// The first source line of the function entered at `rva` (see
    /// [`Image::lines`]), if known.
    pub fn line_at(&self, rva: u64) -> Option<u32> {
        let i = self.lines.binary_search_by_key(&rva, |l| l.rva).ok()?;
        self.lines.get(i).map(|l| l.line)
    }

    /// The layouts named `name` (usually one; several when unrelated types
    /// share a name), in canonical order.
    pub fn layouts_named<'s>(&'s self, name: &str) -> &'s [TypeLayout] {
        let start = self.types.partition_point(|t| t.name.as_str() < name);
        let len = self
            .types
            .get(start..)
            .map_or(0, |rest| rest.iter().take_while(|t| t.name == name).count());
        self.types
            .get(start..start.saturating_add(len))
            .unwrap_or_default()
    }

    /// The names of the types the function entered at `rva` uses (empty when
    /// it uses none, or has no debug information).
    pub fn types_used_at(&self, rva: u64) -> &[String] {
        match self.type_uses.binary_search_by_key(&rva, |u| u.rva) {
            Ok(i) => self.type_uses.get(i).map_or(&[][..], |u| &u.types),
            Err(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bare(lines: Vec<FunctionLine>) -> Image<'static> {
        Image {
            file: &[],
            format: Format::Elf,
            arch: Arch::X86_64,
            preferred_base: 0,
            sections: Vec::new(),
            functions: Vec::new(),
            data: Vec::new(),
            exports: Vec::new(),
            relocations: Vec::new(),
            identity: Identity {
                format: FormatIdentity::Elf { build_id: None },
            },
            boundaries: Vec::new(),
            stripped: false,
            type_info: TypeInfo::Absent,
            types: Vec::new(),
            type_uses: Vec::new(),
            lines,
        }
    }

    /// Lines are sorted by RVA, one per RVA: repeated records of one line
    /// count once, and an RVA given two different lines has none.
    #[test]
    fn function_lines_are_canonical_and_never_guessed() {
        let l = |rva, line| FunctionLine { rva, line };
        let mut img = bare(vec![
            l(0x30, 9),
            l(0x10, 5),
            l(0x20, 7),
            l(0x10, 5),
            l(0x20, 8),
            l(0x20, 7),
        ]);
        img.canonicalise();
        assert_eq!(img.lines, [l(0x10, 5), l(0x30, 9)]);
        assert_eq!(img.line_at(0x10), Some(5));
        assert_eq!(img.line_at(0x20), None);
        assert_eq!(img.line_at(0x30), Some(9));
        assert_eq!(img.line_at(0x31), None);
    }
}

//! The ELF reader: 64-bit little-endian x86-64 and AArch64 images.
//!
//! Functions and data objects come from `.symtab`, with the translation unit
//! taken from the `STT_FILE` symbol that precedes each local symbol. When an
//! image is stripped (no `.symtab`, or one without functions), functions come
//! from the `.eh_frame` FDE ranges, named from `.dynsym` where an exported
//! symbol starts at the same address (see [`eh_frame_ranges`]).

use std::collections::{BTreeMap, HashSet};

use object::elf;
use object::read::elf::{
    FileHeader, ProgramHeader, Rela, SectionHeader, SectionTable, Sym, SymbolTable,
};
use object::read::StringTable;
use object::Endianness;

use crate::error::{Error, Result};
use crate::image::{
    Arch, DataObject, Export, Extent, Format, FormatIdentity, Function, Identity, Image,
    Permissions, RelocTarget, Relocation, Section, Visibility,
};
use crate::name::escape_name;
use crate::read::ReadOptions;

/// Offset of the class byte (32/64-bit) in `e_ident`.
const EI_CLASS: usize = 4;
/// Offset of the data-encoding byte (endianness) in `e_ident`.
const EI_DATA: usize = 5;

type Header = elf::FileHeader64<Endianness>;
type Sections<'data> = SectionTable<'data, Header, &'data [u8]>;

/// Name of an ELF machine, for messages.
fn machine_name(machine: u16) -> String {
    let name = match machine {
        elf::EM_386 => "EM_386 (i386)",
        elf::EM_ARM => "EM_ARM (32-bit ARM)",
        elf::EM_PPC64 => "EM_PPC64",
        elf::EM_RISCV => "EM_RISCV",
        elf::EM_S390 => "EM_S390",
        elf::EM_MIPS => "EM_MIPS",
        elf::EM_X86_64 => "EM_X86_64",
        elf::EM_AARCH64 => "EM_AARCH64",
        _ => return format!("{machine}"),
    };
    format!("{machine} ({name})")
}

fn malformed(opts: &ReadOptions, detail: impl Into<String>) -> Error {
    Error::Malformed {
        path: opts.path.clone(),
        what: "ELF image",
        detail: detail.into(),
    }
}

/// One section header, as the checks and data objects need it.
#[derive(Clone, Debug)]
struct SecInfo {
    /// Its name, escaped.
    name: String,
    /// Its address.
    addr: u64,
    /// Its size in memory.
    size: u64,
    /// `SHF_ALLOC`: mapped when loaded.
    alloc: bool,
}

impl SecInfo {
    /// Whether `[addr, addr + len)` lies inside this section (a zero-length
    /// range may sit at its very end).
    fn holds(&self, addr: u64, len: u64) -> bool {
        addr.checked_sub(self.addr)
            .and_then(|off| off.checked_add(len))
            .is_some_and(|end| end <= self.size)
    }

    /// `.data (0x4000..0x4020)`, for messages.
    fn describe(&self, base: u64) -> String {
        let start = self.addr.wrapping_sub(base);
        format!(
            "{} ({start:#x}..{:#x})",
            self.name,
            start.saturating_add(self.size)
        )
    }
}

/// A memory range of a segment: `[start, end)` in virtual addresses.
type Range = (u64, u64);

/// Parse an ELF image.
pub(crate) fn parse<'data>(data: &'data [u8], opts: &ReadOptions) -> Result<Image<'data>> {
    // Class and data encoding come first: a 32-bit or big-endian image is a
    // clear "unsupported", not a parse failure.
    let class = *data
        .get(EI_CLASS)
        .ok_or_else(|| malformed(opts, "truncated ELF identification"))?;
    let encoding = *data
        .get(EI_DATA)
        .ok_or_else(|| malformed(opts, "truncated ELF identification"))?;
    let raw_machine = |le: bool| -> Option<u16> {
        let b: [u8; 2] = data.get(18..20)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    if encoding != elf::ELFDATA2LSB {
        let m = raw_machine(false).map_or_else(|| "unknown".to_string(), machine_name);
        return Err(Error::UnsupportedMachine {
            path: opts.path.clone(),
            machine: format!("big-endian ELF, machine {m}"),
        });
    }
    if class != elf::ELFCLASS64 {
        let m = raw_machine(true).map_or_else(|| "unknown".to_string(), machine_name);
        return Err(Error::UnsupportedMachine {
            path: opts.path.clone(),
            machine: format!("32-bit ELF, machine {m}"),
        });
    }

    let header = Header::parse(data).map_err(|e| malformed(opts, e.to_string()))?;
    let endian = header
        .endian()
        .map_err(|e| malformed(opts, e.to_string()))?;
    let machine = header.e_machine(endian);
    let arch = match machine {
        elf::EM_X86_64 => Arch::X86_64,
        elf::EM_AARCH64 => Arch::Aarch64,
        other => {
            return Err(Error::UnsupportedMachine {
                path: opts.path.clone(),
                machine: machine_name(other),
            })
        }
    };
    match header.e_type(endian) {
        elf::ET_DYN | elf::ET_EXEC => {}
        elf::ET_REL => {
            return Err(malformed(
                opts,
                "this is a relocatable object file (.o), not a linked image",
            ))
        }
        other => return Err(malformed(opts, format!("unexpected ELF type {other}"))),
    }

    let segments = header
        .program_headers(endian, data)
        .map_err(|e| malformed(opts, format!("program headers: {e}")))?;
    let sections = header
        .sections(endian, data)
        .map_err(|e| malformed(opts, format!("section headers: {e}")))?;
    if sections.is_empty() {
        return Err(malformed(opts, "no section headers"));
    }

    // The preferred base is the lowest loadable address, page-aligned. For a
    // shared object it is 0, and an RVA equals a virtual address.
    let mut base = u64::MAX;
    let mut relro: Option<Range> = None;
    let mut loads: Vec<Range> = Vec::new();
    let mut tls: Option<Range> = None;
    for (i, ph) in segments.iter().enumerate() {
        let start = ph.p_vaddr(endian);
        let end = start.checked_add(ph.p_memsz(endian));
        match ph.p_type(endian) {
            elf::PT_LOAD => {
                let align = ph.p_align(endian).max(1);
                base = base.min(start.saturating_sub(start.checked_rem(align).unwrap_or(0)));
                let end = end.ok_or_else(|| {
                    malformed(opts, format!("program header {i} (PT_LOAD) overflows"))
                })?;
                loads.push((start, end));
            }
            elf::PT_GNU_RELRO => {
                let end = end.ok_or_else(|| malformed(opts, "PT_GNU_RELRO segment overflows"))?;
                relro = Some((start, end));
            }
            elf::PT_TLS => {
                let end = end.ok_or_else(|| malformed(opts, "PT_TLS segment overflows"))?;
                tls = Some((start, end));
            }
            _ => {}
        }
    }
    if base == u64::MAX {
        return Err(malformed(opts, "no loadable segment"));
    }
    let rva_of = |vaddr: u64| vaddr.wrapping_sub(base);

    let mut out_sections = Vec::new();
    // Every section by index, for the symbol checks and data objects.
    let mut infos: Vec<SecInfo> = Vec::with_capacity(sections.len());
    for (index, sh) in sections.enumerate() {
        let name = sections
            .section_name(endian, sh)
            .map_err(|e| malformed(opts, format!("section {}: name: {e}", index.0)))?;
        let name = escape_name(name);
        let flags = sh.sh_flags(endian);
        let addr = sh.sh_addr(endian);
        let size = sh.sh_size(endian);
        let alloc = flags & u64::from(elf::SHF_ALLOC) != 0 && index.0 != 0;
        let is_tls = flags & u64::from(elf::SHF_TLS) != 0;
        let nobits = sh.sh_type(endian) == elf::SHT_NOBITS;
        infos.push(SecInfo {
            name: name.clone(),
            addr,
            size,
            alloc,
        });
        if !alloc {
            continue;
        }
        let end = addr
            .checked_add(size)
            .ok_or_else(|| malformed(opts, format!("section {name} overflows")))?;
        // A loaded section lies in the memory of a loadable segment; the
        // thread-local template (.tdata, .tbss) in PT_TLS.
        let inside = |r: &Range| addr >= r.0 && end <= r.1;
        let placed = if is_tls {
            tls.as_ref().is_some_and(inside)
        } else {
            loads.iter().any(inside)
        };
        if !placed {
            return Err(malformed(
                opts,
                format!(
                    "section {name} ({:#x}..{:#x}) lies outside every {} segment",
                    rva_of(addr),
                    rva_of(addr).saturating_add(size),
                    if is_tls { "PT_TLS" } else { "loadable" }
                ),
            ));
        }
        let bytes: &[u8] = if nobits {
            &[]
        } else {
            sh.data(endian, data)
                .map_err(|_| malformed(opts, format!("section {name} lies outside the file")))?
        };
        if is_tls && nobits {
            // .tbss takes no memory in the image: each thread gets its own
            // zeroed copy. Its addresses overlap the sections after it, so
            // it is not a section of the model.
            continue;
        }
        // Runtime permissions: a section inside PT_GNU_RELRO is made
        // read-only once the loader has applied its relocations.
        let in_relro = relro.is_some_and(|(s, e)| addr >= s && end <= e);
        out_sections.push(Section {
            name,
            rva: rva_of(addr),
            size,
            perms: Permissions {
                read: true,
                write: flags & u64::from(elf::SHF_WRITE) != 0 && !in_relro,
                execute: flags & u64::from(elf::SHF_EXECINSTR) != 0,
            },
            data: bytes,
        });
    }

    check_overlaps(&out_sections, opts)?;
    let mapped = Mapped::new(&out_sections, base);

    let dynsym = sections
        .symbols(endian, data, elf::SHT_DYNSYM)
        .map_err(|e| malformed(opts, format!(".dynsym: {e}")))?;
    let symtab = sections
        .symbols(endian, data, elf::SHT_SYMTAB)
        .map_err(|e| malformed(opts, format!(".symtab: {e}")))?;
    let checker = Checker {
        opts,
        endian,
        sections: &infos,
        mapped: &mapped,
        loads: &loads,
        base,
    };

    // Exports: defined global or weak dynamic symbols of default or
    // protected visibility, in a section (absolute symbols, such as the
    // version-definition symbols, are not addresses in the image).
    let mut exports = Vec::new();
    let mut exported: HashSet<(String, u64)> = HashSet::new();
    for (index, sym) in dynsym.enumerate() {
        if !is_global(sym.st_bind()) {
            continue;
        }
        if !matches!(sym.st_visibility(), elf::STV_DEFAULT | elf::STV_PROTECTED) {
            continue;
        }
        let kind = sym.st_type();
        if !matches!(
            kind,
            elf::STT_FUNC | elf::STT_GNU_IFUNC | elf::STT_OBJECT | elf::STT_NOTYPE
        ) {
            continue;
        }
        let name = symbol_name(opts, dynsym.strings(), sym.st_name(endian))?;
        if name.is_empty() {
            continue;
        }
        if checker
            .dyn_place(&dynsym, sym, index, kind, &name)?
            .is_none()
        {
            continue;
        }
        let rva = rva_of(sym.st_value(endian));
        exported.insert((name.clone(), rva));
        exports.push(Export { name, rva });
    }

    // Room for every symbol (untouched room costs no memory): the tables
    // are not copied as they grow.
    let mut functions = Vec::with_capacity(symtab.len());
    let mut data_objects = Vec::new();
    let mut unit: Option<String> = None;
    for (index, sym) in symtab.enumerate() {
        let kind = sym.st_type();
        if kind == elf::STT_FILE {
            let name = symbol_name(opts, symtab.strings(), sym.st_name(endian))?;
            unit = (!name.is_empty()).then_some(name);
            continue;
        }
        if !matches!(kind, elf::STT_FUNC | elf::STT_GNU_IFUNC | elf::STT_OBJECT) {
            continue;
        }
        let name = symbol_name(opts, symtab.strings(), sym.st_name(endian))?;
        if name.is_empty() {
            continue;
        }
        let Some(section) = checker.section_of(&symtab, sym, index, ".symtab", &name)? else {
            continue;
        };
        checker.extent(section, sym, kind, &name, ".symtab")?;
        let rva = rva_of(sym.st_value(endian));
        let size = sym.st_size(endian);
        let local = sym.st_bind() == elf::STB_LOCAL;
        let visibility = if local {
            Visibility::Local
        } else if exported.contains(&(name.clone(), rva)) {
            Visibility::Exported
        } else {
            Visibility::Global
        };
        // ELF records the translation unit only for local symbols: globals
        // follow all locals in .symtab, after the last STT_FILE.
        let sym_unit = if local { unit.clone() } else { None };
        if kind == elf::STT_OBJECT {
            data_objects.push(DataObject {
                name,
                rva,
                size,
                section: section.name.clone(),
                unit: sym_unit,
                visibility,
            });
        } else {
            functions.push(Function {
                name,
                rva,
                size,
                unit: sym_unit,
                visibility,
                extent: Extent::Symbol,
            });
        }
    }

    let stripped = functions.is_empty();
    if stripped {
        let ranges = eh_frame_ranges(data, endian, &sections, opts)?;
        if ranges.is_empty() {
            return Err(Error::NoSymbols {
                path: opts.path.clone(),
                detail: "no .symtab functions and no .eh_frame FDEs".into(),
            });
        }
        // Name each range from an exported function that starts there.
        let mut dyn_funcs: BTreeMap<u64, String> = BTreeMap::new();
        for (index, sym) in dynsym.enumerate() {
            if !matches!(sym.st_type(), elf::STT_FUNC | elf::STT_GNU_IFUNC) {
                continue;
            }
            let name = symbol_name(opts, dynsym.strings(), sym.st_name(endian))?;
            if checker
                .dyn_place(&dynsym, sym, index, sym.st_type(), &name)?
                .is_none()
            {
                continue;
            }
            // Keep the first name in symbol-table order for aliases.
            dyn_funcs
                .entry(rva_of(sym.st_value(endian)))
                .or_insert(name);
        }
        for (start, len) in ranges {
            // An FDE describes code: it lies in one loaded section.
            if mapped.holding(start, len).is_none() {
                return Err(malformed(
                    opts,
                    format!(
                        ".eh_frame: the FDE for {:#x}..{:#x} lies outside every loaded section",
                        rva_of(start),
                        rva_of(start).saturating_add(len)
                    ),
                ));
            }
            let rva = rva_of(start);
            let (name, visibility) = match dyn_funcs.get(&rva) {
                Some(n) => (n.clone(), Visibility::Exported),
                None => (format!("sub_{rva:x}"), Visibility::Global),
            };
            functions.push(Function {
                name,
                rva,
                size: len,
                unit: None,
                visibility,
                extent: Extent::Stripped,
            });
        }
        for (index, sym) in dynsym.enumerate() {
            if sym.st_type() != elf::STT_OBJECT {
                continue;
            }
            let name = symbol_name(opts, dynsym.strings(), sym.st_name(endian))?;
            let Some(section) = checker.dyn_place(&dynsym, sym, index, elf::STT_OBJECT, &name)?
            else {
                continue;
            };
            data_objects.push(DataObject {
                name,
                rva: rva_of(sym.st_value(endian)),
                size: sym.st_size(endian),
                section,
                unit: None,
                visibility: Visibility::Exported,
            });
        }
    }

    let relocations = dynamic_relocations(data, endian, arch, &sections, &mapped, opts)?;

    let build_id = gnu_build_id(data, endian, &sections, opts)?;

    let code: Vec<(u64, u64)> = out_sections
        .iter()
        .filter(|s| s.perms.execute)
        .map(|s| (s.rva, s.size))
        .collect();
    let types = crate::types::dwarf::read(&crate::types::dwarf::Input {
        data,
        endian,
        sections: &sections,
        base,
        code: &code,
        path: &opts.path,
    })?;

    Ok(Image {
        file: data,
        format: Format::Elf,
        arch,
        preferred_base: base,
        sections: out_sections,
        functions,
        data: data_objects,
        exports,
        relocations,
        identity: Identity {
            format: FormatIdentity::Elf { build_id },
        },
        boundaries: Vec::new(),
        stripped,
        type_info: types.info,
        types: types.types,
        type_uses: types.uses,
        lines: types.lines,
    })
}

/// The symbol checks: every function, data object and export lies inside
/// its section.
///
/// For `.symtab` the section is the one the symbol names (`st_shndx`). For
/// `.dynsym` it is the loaded section that holds the symbol's address: the
/// dynamic loader never looks at a defined symbol's section index, and
/// post-link optimisers leave it stale (BOLT, which the Rust toolchain's
/// `libLLVM.so` and `librustc_driver.so` go through, moves sections and keeps
/// the old indexes in `.dynsym`).
struct Checker<'a, 'data> {
    /// The options, for messages.
    opts: &'a ReadOptions,
    /// The image's byte order.
    endian: Endianness,
    /// Every section, by index.
    sections: &'a [SecInfo],
    /// The loaded sections, by address.
    mapped: &'a Mapped<'a, 'data>,
    /// The loadable segments' memory ranges.
    loads: &'a [Range],
    /// The preferred base, to show RVAs.
    base: u64,
}

impl<'a> Checker<'a, '_> {
    /// The section a defined symbol is in, or `None` for an undefined,
    /// absolute or common symbol, or one in a section that is not loaded
    /// (glibc's `__evoke_link_warning_*` objects live in `.gnu.warning.*`
    /// sections, which the loader never maps): none of those places anything
    /// in the image. A symbol that names a section the image does not have
    /// is refused.
    fn section_of<'d>(
        &self,
        table: &SymbolTable<'d, Header, &'d [u8]>,
        sym: &elf::Sym64<Endianness>,
        index: object::SymbolIndex,
        which: &str,
        name: &str,
    ) -> Result<Option<&'a SecInfo>> {
        let section = table
            .symbol_section(self.endian, sym, index)
            .map_err(|e| malformed(self.opts, format!("{which}: symbol `{name}`: {e}")))?;
        let Some(section) = section else {
            return Ok(None);
        };
        let info = self.sections.get(section.0).ok_or_else(|| {
            malformed(
                self.opts,
                format!(
                    "{which}: symbol `{name}` names section {}, but the image has {} sections",
                    section.0,
                    self.sections.len()
                ),
            )
        })?;
        Ok(info.alloc.then_some(info))
    }

    /// Where a `.dynsym` symbol lies: `None` for an undefined, absolute or
    /// common symbol, and for one whose section index names no loaded
    /// section (rustc's `rust_metadata_*` objects live in the unloaded
    /// `.rustc` section, and after BOLT their index can point past the
    /// section table): none of those places anything in the loaded image.
    /// Otherwise the name of the loaded section that holds
    /// `[value, value + size)`. A label (no type, or size zero) may lie
    /// between sections, inside a loadable segment (its section name is
    /// then empty); anything else outside every loaded section is refused.
    fn dyn_place<'d>(
        &self,
        table: &SymbolTable<'d, Header, &'d [u8]>,
        sym: &elf::Sym64<Endianness>,
        index: object::SymbolIndex,
        kind: u8,
        name: &str,
    ) -> Result<Option<String>> {
        let defined = table
            .symbol_section(self.endian, sym, index)
            .map_err(|e| malformed(self.opts, format!(".dynsym: symbol `{name}`: {e}")))?;
        let Some(named) = defined else {
            return Ok(None);
        };
        if !self.sections.get(named.0).is_some_and(|s| s.alloc) {
            return Ok(None);
        }
        let value = sym.st_value(self.endian);
        let size = if kind == elf::STT_NOTYPE {
            0
        } else {
            sym.st_size(self.endian)
        };
        if let Some(s) = self.mapped.holding(value, size) {
            return Ok(Some(s.name.clone()));
        }
        if size == 0 && self.loads.iter().any(|&(s, e)| value >= s && value <= e) {
            return Ok(Some(String::new()));
        }
        let what = match kind {
            elf::STT_OBJECT => "data object",
            elf::STT_FUNC | elf::STT_GNU_IFUNC => "function",
            _ => "symbol",
        };
        Err(malformed(
            self.opts,
            format!(
                ".dynsym: {what} `{name}` ({:#x}, {size} bytes) lies outside every loaded section",
                value.wrapping_sub(self.base)
            ),
        ))
    }

    /// Check that a function's or data object's `[value, value + size)` lies
    /// inside its section.
    ///
    /// A symbol of no type or of size zero places no bytes: it is a label,
    /// and the linker defines some of them by address alone, naming a
    /// section nearby (`__bss_start`, `_edata` and `_end` before or after
    /// their section; `__TMC_END__` in the alignment padding after `.data`).
    /// For those only the address is checked: it must lie in, or at the end
    /// of, a loadable segment.
    fn extent(
        &self,
        section: &SecInfo,
        sym: &elf::Sym64<Endianness>,
        kind: u8,
        name: &str,
        which: &str,
    ) -> Result<()> {
        let value = sym.st_value(self.endian);
        let size = sym.st_size(self.endian);
        if kind == elf::STT_NOTYPE || size == 0 {
            if self.loads.iter().any(|&(s, e)| value >= s && value <= e) {
                return Ok(());
            }
            return Err(malformed(
                self.opts,
                format!(
                    "{which}: symbol `{name}` ({:#x}) lies outside every loadable segment",
                    value.wrapping_sub(self.base)
                ),
            ));
        }
        if section.holds(value, size) {
            return Ok(());
        }
        let what = if kind == elf::STT_OBJECT {
            "data object"
        } else {
            "function"
        };
        Err(malformed(
            self.opts,
            format!(
                "{which}: {what} `{name}` ({:#x}, {size} bytes) extends past its section {}",
                value.wrapping_sub(self.base),
                section.describe(self.base)
            ),
        ))
    }
}

/// Refuse two loaded sections that share bytes of memory: every address
/// of the image belongs to one section at most (`.tbss`, which overlaps by
/// design, is not a section of the model).
fn check_overlaps(sections: &[Section<'_>], opts: &ReadOptions) -> Result<()> {
    let mut by_rva: Vec<&Section<'_>> = sections.iter().filter(|s| s.size > 0).collect();
    by_rva.sort_by_key(|s| s.rva);
    for pair in by_rva.windows(2) {
        let [a, b] = pair else { continue };
        let a_end = a.rva.saturating_add(a.size);
        if b.rva < a_end {
            return Err(malformed(
                opts,
                format!(
                    "sections {} ({:#x}..{a_end:#x}) and {} ({:#x}..{:#x}) overlap",
                    a.name,
                    a.rva,
                    b.name,
                    b.rva,
                    b.rva.saturating_add(b.size)
                ),
            ));
        }
    }
    Ok(())
}

/// The model's sections sorted by address, for lookups in logarithmic
/// time (an image may have tens of thousands of sections and millions of
/// relocations). The sections do not overlap ([`check_overlaps`]).
struct Mapped<'s, 'data> {
    /// Sections of non-zero size, by RVA.
    sorted: Vec<&'s Section<'data>>,
    /// The preferred base: virtual address minus RVA.
    base: u64,
}

impl<'s, 'data> Mapped<'s, 'data> {
    /// Index `sections`.
    fn new(sections: &'s [Section<'data>], base: u64) -> Self {
        let mut sorted: Vec<&Section<'data>> = sections.iter().filter(|s| s.size > 0).collect();
        sorted.sort_by_key(|s| s.rva);
        Mapped { sorted, base }
    }

    /// The section that holds `[vaddr, vaddr + len)` (a zero-length range
    /// may sit at a section's end).
    fn holding(&self, vaddr: u64, len: u64) -> Option<&'s Section<'data>> {
        let rva = vaddr.checked_sub(self.base)?;
        let after = self.sorted.partition_point(|s| s.rva <= rva);
        let s = *self.sorted.get(after.checked_sub(1)?)?;
        let end = rva.checked_sub(s.rva)?.checked_add(len)?;
        (end <= s.size).then_some(s)
    }
}

fn is_global(bind: u8) -> bool {
    matches!(bind, elf::STB_GLOBAL | elf::STB_WEAK | elf::STB_GNU_UNIQUE)
}

fn symbol_name(opts: &ReadOptions, strings: StringTable<'_>, offset: u32) -> Result<String> {
    let bytes = strings
        .get(offset)
        .map_err(|_| malformed(opts, format!("symbol name offset {offset} is out of range")))?;
    Ok(escape_name(bytes))
}

/// The `NT_GNU_BUILD_ID` note, if any.
fn gnu_build_id(
    data: &[u8],
    endian: Endianness,
    sections: &Sections<'_>,
    opts: &ReadOptions,
) -> Result<Option<Vec<u8>>> {
    for sh in sections.iter() {
        let Some(mut notes) = sh
            .notes(endian, data)
            .map_err(|e| malformed(opts, format!("note section: {e}")))?
        else {
            continue;
        };
        while let Some(note) = notes
            .next()
            .map_err(|e| malformed(opts, format!("note: {e}")))?
        {
            if note.name() == elf::ELF_NOTE_GNU && note.n_type(endian) == elf::NT_GNU_BUILD_ID {
                return Ok(Some(note.desc().to_vec()));
            }
        }
    }
    Ok(None)
}

/// Relocation types this reader understands, per architecture.
struct RelocTypes {
    none: u32,
    copy: u32,
    relative: u32,
    abs64: u32,
    glob_dat: u32,
    jump_slot: u32,
    irelative: u32,
    /// The thread-local storage relocations, and the suffix that names
    /// what each makes the loader write.
    tls: [(u32, &'static str); 4],
}

/// The suffixes of thread-local relocation targets.
const DTPMOD: &str = "@dtpmod";
/// See [`DTPMOD`].
const DTPOFF: &str = "@dtpoff";
/// See [`DTPMOD`].
const TPOFF: &str = "@tpoff";
/// See [`DTPMOD`].
const TLSDESC: &str = "@tlsdesc";

const X86_64_RELOCS: RelocTypes = RelocTypes {
    none: elf::R_X86_64_NONE,
    copy: elf::R_X86_64_COPY,
    relative: elf::R_X86_64_RELATIVE,
    abs64: elf::R_X86_64_64,
    glob_dat: elf::R_X86_64_GLOB_DAT,
    jump_slot: elf::R_X86_64_JUMP_SLOT,
    irelative: elf::R_X86_64_IRELATIVE,
    tls: [
        (elf::R_X86_64_DTPMOD64, DTPMOD),
        (elf::R_X86_64_DTPOFF64, DTPOFF),
        (elf::R_X86_64_TPOFF64, TPOFF),
        (elf::R_X86_64_TLSDESC, TLSDESC),
    ],
};

const AARCH64_RELOCS: RelocTypes = RelocTypes {
    none: elf::R_AARCH64_NONE,
    copy: elf::R_AARCH64_COPY,
    relative: elf::R_AARCH64_RELATIVE,
    abs64: elf::R_AARCH64_ABS64,
    glob_dat: elf::R_AARCH64_GLOB_DAT,
    jump_slot: elf::R_AARCH64_JUMP_SLOT,
    irelative: elf::R_AARCH64_IRELATIVE,
    tls: [
        (elf::R_AARCH64_TLS_DTPMOD, DTPMOD),
        (elf::R_AARCH64_TLS_DTPREL, DTPOFF),
        (elf::R_AARCH64_TLS_TPREL, TPOFF),
        (elf::R_AARCH64_TLSDESC, TLSDESC),
    ],
};

/// Every dynamic relocation (`SHT_RELA` sections that are loaded, and `SHT_RELR`).
///
/// A copy relocation (`R_*_COPY`, in executables) makes the loader copy a
/// shared library's initial value of a variable into this image's `.bss`:
/// it stores no address, so it is not a relocation of the model (its site
/// is still checked).
///
/// Each patched location must lie inside a loaded section. RELR entries
/// must be in increasing address order (as the format's encoders write
/// them): besides being a sign of damage, a RELR bitmap that repeats
/// addresses would turn every 8 bytes of input into up to 63 relocations.
fn dynamic_relocations(
    data: &[u8],
    endian: Endianness,
    arch: Arch,
    sections: &Sections<'_>,
    mapped: &Mapped<'_, '_>,
    opts: &ReadOptions,
) -> Result<Vec<Relocation>> {
    let base = mapped.base;
    let types = match arch {
        Arch::X86_64 => &X86_64_RELOCS,
        Arch::Aarch64 => &AARCH64_RELOCS,
    };
    let mut out = Vec::new();
    for sh in sections.iter() {
        // Only relocations the dynamic loader applies: allocated sections.
        if sh.sh_flags(endian) & u64::from(elf::SHF_ALLOC) == 0 {
            continue;
        }
        if let Some(relr) = sh
            .relr(endian, data)
            .map_err(|e| malformed(opts, format!("RELR section: {e}")))?
        {
            let mut last: Option<u64> = None;
            for vaddr in relr {
                let rva = vaddr.wrapping_sub(base);
                if last.is_some_and(|l| vaddr <= l) {
                    return Err(malformed(
                        opts,
                        format!("RELR relocation at {rva:#x} is not above the one before it: the entries must be in increasing address order"),
                    ));
                }
                last = Some(vaddr);
                // RELR stores the addend in place.
                let bytes = mapped.holding(vaddr, 8).and_then(|s| s.bytes_at(rva, 8));
                let target = read_u64(bytes, opts, rva)?;
                out.push(Relocation {
                    rva,
                    width: 8,
                    target: RelocTarget::Rva(target.wrapping_sub(base)),
                });
            }
            continue;
        }
        let Some((relas, symtab_index)) = sh
            .rela(endian, data)
            .map_err(|e| malformed(opts, format!("RELA section: {e}")))?
        else {
            continue;
        };
        // A static executable's IRELATIVE relocations name no symbol table.
        let symbols = if symtab_index.0 == 0 {
            None
        } else {
            Some(
                sections
                    .symbol_table_by_index(endian, data, symtab_index)
                    .map_err(|e| malformed(opts, format!("relocation symbol table: {e}")))?,
            )
        };
        for rela in relas {
            let r_type = rela.r_type(endian, false);
            let vaddr = rela.r_offset(endian);
            let rva = vaddr.wrapping_sub(base);
            let addend = rela.r_addend(endian);
            let sym_index = rela.r_sym(endian, false);
            // Thread-local relocations may name no symbol (index 0): a
            // local-dynamic module slot, or an offset in this module's own
            // block given by the addend.
            let sym_name = |none_allowed: bool| -> Result<String> {
                if sym_index == 0 && none_allowed {
                    return Ok(String::new());
                }
                let missing = || {
                    malformed(
                        opts,
                        format!(
                            "relocation at {rva:#x} names symbol {sym_index}, which does not exist"
                        ),
                    )
                };
                let symbols = symbols.as_ref().ok_or_else(missing)?;
                let sym = symbols
                    .symbol(object::SymbolIndex(sym_index as usize))
                    .map_err(|_| missing())?;
                symbol_name(opts, symbols.strings(), sym.st_name(endian))
            };
            let tls = types.tls.iter().find(|(t, _)| *t == r_type);
            let (target, width) = if r_type == types.none {
                continue;
            } else if r_type == types.copy {
                if mapped.holding(vaddr, 0).is_none() {
                    return Err(malformed(
                        opts,
                        format!("copy relocation at {rva:#x} lies outside every loaded section"),
                    ));
                }
                continue;
            } else if r_type == types.relative || r_type == types.irelative {
                (RelocTarget::Rva((addend as u64).wrapping_sub(base)), 8)
            } else if r_type == types.abs64 || r_type == types.glob_dat || r_type == types.jump_slot
            {
                let target = RelocTarget::Symbol {
                    name: sym_name(false)?,
                    addend,
                };
                (target, 8)
            } else if let Some(&(_, suffix)) = tls {
                // A TLS descriptor is two words: resolver and argument.
                let width = if suffix == TLSDESC { 16 } else { 8 };
                let target = RelocTarget::Symbol {
                    name: format!("{}{suffix}", sym_name(true)?),
                    addend,
                };
                (target, width)
            } else {
                return Err(malformed(
                    opts,
                    format!("unsupported dynamic relocation type {r_type} at {rva:#x}"),
                ));
            };
            if mapped.holding(vaddr, u64::from(width)).is_none() {
                return Err(malformed(
                    opts,
                    format!(
                        "relocation at {rva:#x} ({width} bytes) lies outside every loaded section"
                    ),
                ));
            }
            out.push(Relocation { rva, width, target });
        }
    }
    Ok(out)
}

fn read_u64(bytes: Option<&[u8]>, opts: &ReadOptions, rva: u64) -> Result<u64> {
    bytes
        .and_then(|b| b.get(..8))
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| {
            malformed(
                opts,
                format!("relocated pointer at {rva:#x} lies outside the file"),
            )
        })
}

/// The `[start, length)` code ranges (virtual addresses) of every FDE in
/// `.eh_frame`, sorted by start, without duplicates and without empty ranges.
///
/// This is how a stripped image still yields every function that has unwind
/// information: GCC emits one FDE per function, and one more for each
/// `.cold` part.
pub(crate) fn eh_frame_ranges(
    data: &[u8],
    endian: Endianness,
    sections: &Sections<'_>,
    opts: &ReadOptions,
) -> Result<Vec<(u64, u64)>> {
    use gimli::UnwindSection;

    let Some((_, eh)) = sections.section_by_name(endian, b".eh_frame") else {
        return Ok(Vec::new());
    };
    if eh.sh_type(endian) == elf::SHT_NOBITS {
        return Ok(Vec::new());
    }
    let bytes = eh
        .data(endian, data)
        .map_err(|e| malformed(opts, format!(".eh_frame: {e}")))?;
    let mut bases = gimli::BaseAddresses::default().set_eh_frame(eh.sh_addr(endian));
    if let Some((_, text)) = sections.section_by_name(endian, b".text") {
        bases = bases.set_text(text.sh_addr(endian));
    }
    if let Some((_, got)) = sections.section_by_name(endian, b".got") {
        bases = bases.set_got(got.sh_addr(endian));
    }
    let eh_frame = gimli::EhFrame::new(bytes, gimli::LittleEndian);
    let mut entries = eh_frame.entries(&bases);
    // Room for the smallest FDEs (untouched room costs no memory).
    let mut ranges = Vec::with_capacity(bytes.len() / 32);
    let bad = |e: gimli::Error| malformed(opts, format!(".eh_frame: {e}"));
    while let Some(entry) = entries.next().map_err(bad)? {
        if let gimli::CieOrFde::Fde(partial) = entry {
            let fde = partial
                .parse(|section, bases, offset| section.cie_from_offset(bases, offset))
                .map_err(bad)?;
            if fde.len() > 0 {
                ranges.push((fde.initial_address(), fde.len()));
            }
        }
    }
    ranges.sort_unstable();
    ranges.dedup();
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_elf;

    fn corpus(scenario: &str, target: &str, version: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../corpus")
            .join(scenario)
            .join("bin")
            .join(target)
            .join(format!("{version}.so"));
        std::fs::read(p).unwrap()
    }

    fn message(d: &[u8]) -> String {
        match crate::read::parse(d, &ReadOptions::new("v2.so")) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn data_symbol_with_a_huge_size_is_refused() {
        for target in ["x86_64-linux", "aarch64-linux"] {
            let good = corpus("08-struct-grows", target, "v2");
            let session = test_elf::symbol(&good, "session");
            for size in [1u64 << 40, u64::MAX, u64::MAX - 7, session.size + 1] {
                let mut d = good.clone();
                test_elf::set_size(&mut d, &session, size);
                let data = test_elf::section(&d, ".data");
                assert_eq!(
                    message(&d),
                    format!(
                        "v2.so: malformed ELF image: .symtab: data object `session` ({:#x}, {size} bytes) extends past its section .data ({:#x}..{:#x})",
                        session.value,
                        data.addr,
                        data.addr + data.size
                    )
                );
            }
        }
    }

    #[test]
    fn function_past_its_section_is_refused() {
        let mut d = corpus("08-struct-grows", "x86_64-linux", "v1");
        let f = test_elf::symbol(&d, "sess_frames");
        test_elf::set_size(&mut d, &f, 0x1000);
        let msg = message(&d);
        assert!(
            msg.starts_with("v2.so: malformed ELF image: .symtab: function `sess_frames` (0x1070, 4096 bytes) extends past its section .text (0x1000..0x1078)"),
            "{msg}"
        );
        // Moved before its section.
        let mut d = corpus("08-struct-grows", "x86_64-linux", "v1");
        test_elf::set_value(&mut d, &f, 0x10);
        assert!(message(&d).contains("function `sess_frames` (0x10, 8 bytes) extends past"));
    }

    #[test]
    fn legitimate_edge_symbols_are_accepted() {
        let good = corpus("08-struct-grows", "x86_64-linux", "v1");
        let data = test_elf::section(&good, ".data");
        let session = test_elf::symbol(&good, "session");
        // An object that fills its section exactly, and a zero-size one at
        // its very end, or just outside it (as `__TMC_END__` can be, in the
        // padding after `.data`).
        for (value, size) in [
            (data.addr, data.size),
            (data.addr + data.size, 0),
            (data.addr - 8, 0),
        ] {
            let mut d = good.clone();
            test_elf::set_value(&mut d, &session, value);
            test_elf::set_size(&mut d, &session, size);
            let image = crate::read::parse(&d, &ReadOptions::new("v1.so")).unwrap();
            let o = image.data.iter().find(|o| o.name == "session").unwrap();
            assert_eq!((o.rva, o.size, o.section.as_str()), (value, size, ".data"));
        }
        // A zero-size symbol far outside any segment is still a lie.
        let mut d = good.clone();
        test_elf::set_value(&mut d, &session, 1 << 40);
        test_elf::set_size(&mut d, &session, 0);
        assert!(
            message(&d).contains("`session` (0x10000000000) lies outside every loadable segment")
        );
    }

    #[test]
    fn section_larger_than_its_segment_is_refused() {
        let mut d = corpus("08-struct-grows", "x86_64-linux", "v1");
        let data = test_elf::section(&d, ".data");
        d[data.at + 32..data.at + 40].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let msg = message(&d);
        assert!(
            msg.contains(
                "section .data (0x4000..0x10000004000) lies outside every loadable segment"
            ),
            "{msg}"
        );
    }

    #[test]
    fn overlapping_sections_are_refused() {
        // Found by fuzzing (parse_elf): .dynsym moved onto .bss, so a data
        // object's address fell in two sections. Here .data is moved onto
        // .dynamic, in the same segment.
        let mut d = corpus("08-struct-grows", "x86_64-linux", "v1");
        let dynamic = test_elf::section(&d, ".dynamic");
        let data = test_elf::section(&d, ".data");
        d[data.at + 16..data.at + 24].copy_from_slice(&(dynamic.addr + 8).to_le_bytes());
        let msg = message(&d);
        assert!(
            msg.contains(&format!(
                "sections .dynamic ({:#x}..{:#x}) and .data ({:#x}..{:#x}) overlap",
                dynamic.addr,
                dynamic.addr + dynamic.size,
                dynamic.addr + 8,
                dynamic.addr + 8 + data.size
            )),
            "{msg}"
        );
    }

    #[test]
    fn symbol_in_a_missing_section_is_refused() {
        let mut d = corpus("08-struct-grows", "x86_64-linux", "v1");
        let s = test_elf::symbol(&d, "session");
        d[s.at + 6..s.at + 8].copy_from_slice(&0x7000u16.to_le_bytes());
        let msg = message(&d);
        assert!(
            msg.contains("symbol `session` names section 28672, but the image has"),
            "{msg}"
        );
    }

    #[test]
    fn relocation_outside_every_section_is_refused() {
        let mut d = corpus("11-function-pointer-table", "x86_64-linux", "v1");
        let rela = test_elf::section(&d, ".rela.dyn");
        d[rela.offset..rela.offset + 8].copy_from_slice(&0x9_0000u64.to_le_bytes());
        let msg = message(&d);
        assert!(
            msg.contains("relocation at 0x90000 (8 bytes) lies outside every loaded section"),
            "{msg}"
        );
    }

    #[test]
    fn names_are_escaped_at_read_time() {
        let mut d = corpus("08-struct-grows", "x86_64-linux", "v1");
        let f = test_elf::symbol(&d, "sess_frames");
        test_elf::rename(&mut d, &f, b"a\x1b[2J\n\xff");
        let image = crate::read::parse(&d, &ReadOptions::new("v1.so")).unwrap();
        assert!(image
            .functions
            .iter()
            .any(|f| f.name == "a\\x1b[2J\\x0a\\xff"));
        // And in a message.
        let f = test_elf::symbol(&d, "a\u{1b}[2J\n\u{fffd}");
        test_elf::set_size(&mut d, &f, 1 << 20);
        let msg = message(&d);
        assert!(msg.contains("function `a\\x1b[2J\\x0a\\xff`"), "{msg}");
        assert!(!msg.contains('\n') && !msg.contains('\u{1b}'), "{msg:?}");
    }
}

//! The VM's own image loader: lays a PE or ELF image out in memory at a
//! chosen base, as the Windows or Linux loader would, without running it.
//!
//! The result is a host-side picture ([`Layout`]): the image's bytes from
//! RVA 0 to the end of its last page, relocated for the base; the page runs
//! to map with their final protections; exports by name; imports, each with
//! the slots that point at its trap stub; and every slot the loader adjusted.
//! [`crate::Vm`] maps it.

use std::collections::BTreeMap;

use object::elf;
use object::pe;
use object::read::elf::{FileHeader, ProgramHeader, Rela, SectionHeader, Sym};
use object::read::pe::{ExportTarget, ImageNtHeaders as _, Import, PeFile64};
use object::{Endianness, LittleEndian as LE};

use hotpatch_formats::{Arch, Format, Permissions};

use crate::error::{Error, Result};

/// The VM's page size (x86-64 and the AArch64 4 KiB granule).
pub const PAGE: u64 = 0x1000;

/// Images whose memory span is larger than this are refused before
/// anything is allocated (256 MiB).
pub const MAX_SPAN: u64 = 256 << 20;

/// Where an image is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// The preferred base plus this many bytes (a multiple of the page
    /// size). A non-zero bias proves that relocations were applied.
    Bias(u64),
    /// Exactly this address (a multiple of the page size).
    At(u64),
}

/// A run of pages of the image with one protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// RVA of the first byte (page aligned).
    pub rva: u64,
    /// Size in bytes (a multiple of the page size).
    pub size: u64,
    /// Protection.
    pub perms: Permissions,
}

/// An imported function or object the VM does not provide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportStub {
    /// `library!name` (PE; `library!#ordinal` by ordinal) or the symbol
    /// name (ELF).
    pub name: String,
    /// RVAs of the slots (IAT entries, GOT entries) that hold its stub's
    /// address.
    pub slots: Vec<u64>,
    /// Address of its trap stub: calling it stops the call with
    /// [`Error::ImportCalled`].
    pub stub: u64,
}

/// What a slot the loader adjusted now points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotTarget {
    /// An address inside the image, as an RVA.
    Image(u64),
    /// The trap stub of import number `n` (an index into
    /// [`crate::LoadedImage::imports`]), plus an addend.
    Import(usize, i64),
    /// A fixed value that is not an address in the image (an undefined
    /// weak symbol is 0).
    Absolute(u64),
}

/// One location the loader wrote: a base relocation, an ELF dynamic
/// relocation, or an import slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelocSlot {
    /// RVA of the slot.
    pub rva: u64,
    /// Its width in bytes (8, or 4 for a PE `HIGHLOW`).
    pub width: u8,
    /// What it now points at.
    pub target: SlotTarget,
}

/// The loader's picture of an image laid out at a base.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub format: Format,
    pub arch: Arch,
    pub preferred_base: u64,
    pub base: u64,
    /// Bytes from RVA 0 to `span` (a multiple of the page size).
    pub bytes: Vec<u8>,
    /// Page runs to map, sorted, with their final protections.
    pub regions: Vec<Region>,
    pub exports: BTreeMap<String, u64>,
    pub imports: Vec<ImportStub>,
    pub slots: Vec<RelocSlot>,
}

/// Bytes per import trap stub.
pub(crate) const STUB_SIZE: u64 = 16;

struct Ctx<'a> {
    image: &'a str,
}

impl Ctx<'_> {
    fn bad(&self, detail: impl Into<String>) -> Error {
        Error::BadImage {
            image: self.image.to_owned(),
            detail: detail.into(),
        }
    }
    fn unsupported(&self, detail: impl Into<String>) -> Error {
        Error::Unsupported {
            image: self.image.to_owned(),
            detail: detail.into(),
        }
    }
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    v.checked_add(a.wrapping_sub(1))
        .map(|x| x & !a.wrapping_sub(1))
}

fn align_down(v: u64, a: u64) -> u64 {
    v & !a.wrapping_sub(1)
}

/// The final address for an image whose preferred base is `preferred`.
fn choose_base(ctx: &Ctx<'_>, preferred: u64, span: u64, base: Base) -> Result<u64> {
    let chosen = match base {
        Base::Bias(bias) => preferred.checked_add(bias),
        Base::At(at) => Some(at),
    };
    let bad = |b: u64, detail: &str| Error::BadBase {
        image: ctx.image.to_owned(),
        base: b,
        detail: detail.to_owned(),
    };
    let Some(b) = chosen else {
        return Err(bad(preferred, "the preferred base plus the bias overflows"));
    };
    if b % PAGE != 0 {
        return Err(bad(b, "not a multiple of the page size"));
    }
    if b < crate::vm::LOWEST_ADDRESS {
        return Err(bad(b, "below the lowest usable address"));
    }
    match b.checked_add(span) {
        Some(end) if end <= crate::vm::IMAGE_LIMIT => Ok(b),
        _ => Err(bad(b, "the image would end above the VM's image area")),
    }
}

/// Union of the protections of the segments that touch each page, as
/// sorted runs.
fn page_runs(pieces: &[(u64, u64, Permissions)]) -> Vec<Region> {
    let mut pages: BTreeMap<u64, Permissions> = BTreeMap::new();
    for &(start, end, perms) in pieces {
        let mut p = align_down(start, PAGE);
        while p < end {
            let e = pages.entry(p).or_default();
            e.read |= perms.read;
            e.write |= perms.write;
            e.execute |= perms.execute;
            p = p.saturating_add(PAGE);
        }
    }
    runs(pages.into_iter())
}

fn runs(pages: impl Iterator<Item = (u64, Permissions)>) -> Vec<Region> {
    let mut out: Vec<Region> = Vec::new();
    for (p, perms) in pages {
        match out.last_mut() {
            Some(last) if last.rva.checked_add(last.size) == Some(p) && last.perms == perms => {
                last.size = last.size.saturating_add(PAGE)
            }
            _ => out.push(Region {
                rva: p,
                size: PAGE,
                perms,
            }),
        }
    }
    out
}

/// Copy `src` to `bytes[at..]`, checked.
fn put(ctx: &Ctx<'_>, bytes: &mut [u8], at: u64, src: &[u8], what: &str) -> Result<()> {
    let start = usize::try_from(at).map_err(|_| ctx.bad(format!("{what} lies too high")))?;
    let end = start
        .checked_add(src.len())
        .ok_or_else(|| ctx.bad(format!("{what} overflows")))?;
    bytes
        .get_mut(start..end)
        .ok_or_else(|| ctx.bad(format!("{what} lies outside the image's memory")))?
        .copy_from_slice(src);
    Ok(())
}

fn get_u64(ctx: &Ctx<'_>, bytes: &[u8], rva: u64) -> Result<u64> {
    let s = usize::try_from(rva).ok();
    s.and_then(|s| bytes.get(s..s.checked_add(8)?))
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| {
            ctx.bad(format!(
                "relocated slot at RVA {rva:#x} lies outside the image"
            ))
        })
}

fn get_u32(ctx: &Ctx<'_>, bytes: &[u8], rva: u64) -> Result<u32> {
    let s = usize::try_from(rva).ok();
    s.and_then(|s| bytes.get(s..s.checked_add(4)?))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| {
            ctx.bad(format!(
                "relocated slot at RVA {rva:#x} lies outside the image"
            ))
        })
}

fn set_u64(ctx: &Ctx<'_>, bytes: &mut [u8], rva: u64, v: u64) -> Result<()> {
    put(ctx, bytes, rva, &v.to_le_bytes(), "a relocated slot")
}

/// Lay out `data` (the whole file) at `base`; import `n` gets the trap stub
/// at `trap_base + n * STUB_SIZE`.
pub(crate) fn lay_out(image: &str, data: &[u8], base: Base, trap_base: u64) -> Result<Layout> {
    let ctx = Ctx { image };
    match data {
        [0x7f, b'E', b'L', b'F', ..] => elf_layout(&ctx, data, base, trap_base),
        [b'M', b'Z', ..] => pe_layout(&ctx, data, base, trap_base),
        _ => Err(ctx.bad("neither an ELF nor a PE file")),
    }
}

// ---------------------------------------------------------------- ELF

type ElfHeader = elf::FileHeader64<Endianness>;

fn elf_layout(ctx: &Ctx<'_>, data: &[u8], base: Base, trap_base: u64) -> Result<Layout> {
    if data.get(4) != Some(&elf::ELFCLASS64) {
        return Err(ctx.unsupported("32-bit ELF images"));
    }
    if data.get(5) != Some(&elf::ELFDATA2LSB) {
        return Err(ctx.unsupported("big-endian ELF images"));
    }
    let header = ElfHeader::parse(data).map_err(|e| ctx.bad(format!("ELF header: {e}")))?;
    let endian = header
        .endian()
        .map_err(|e| ctx.bad(format!("ELF header: {e}")))?;
    let arch = match header.e_machine(endian) {
        elf::EM_X86_64 => Arch::X86_64,
        elf::EM_AARCH64 => Arch::Aarch64,
        m => return Err(ctx.unsupported(format!("ELF machine {m}"))),
    };
    if header.e_type(endian) != elf::ET_DYN {
        return Err(
            ctx.unsupported("ELF images that are not position independent (e_type is not ET_DYN)")
        );
    }
    let segments = header
        .program_headers(endian, data)
        .map_err(|e| ctx.bad(format!("program headers: {e}")))?;

    let mut preferred = u64::MAX;
    let mut end = 0u64;
    let mut relro: Option<(u64, u64)> = None;
    for ph in segments {
        match ph.p_type(endian) {
            elf::PT_LOAD => {
                let align = ph.p_align(endian).max(1);
                if !align.is_power_of_two() {
                    return Err(ctx.bad(format!(
                        "PT_LOAD alignment {align:#x} is not a power of two"
                    )));
                }
                let vaddr = ph.p_vaddr(endian);
                preferred = preferred.min(align_down(vaddr, align).min(align_down(vaddr, PAGE)));
                let e = vaddr
                    .checked_add(ph.p_memsz(endian))
                    .ok_or_else(|| ctx.bad("a PT_LOAD segment overflows"))?;
                end = end.max(e);
            }
            elf::PT_GNU_RELRO => {
                let s = ph.p_vaddr(endian);
                let e = s
                    .checked_add(ph.p_memsz(endian))
                    .ok_or_else(|| ctx.bad("the PT_GNU_RELRO segment overflows"))?;
                relro = Some((s, e));
            }
            elf::PT_TLS => return Err(ctx.unsupported("thread-local storage (PT_TLS)")),
            _ => {}
        }
    }
    if preferred == u64::MAX {
        return Err(ctx.bad("no PT_LOAD segment"));
    }
    let span = align_up(end.saturating_sub(preferred), PAGE)
        .ok_or_else(|| ctx.bad("segments overflow"))?;
    if span > MAX_SPAN {
        return Err(ctx.bad(format!(
            "its segments span {span:#x} bytes, over the {MAX_SPAN:#x}-byte limit"
        )));
    }
    let base = choose_base(ctx, preferred, span, base)?;
    let len = usize::try_from(span).map_err(|_| ctx.bad("image too large"))?;
    let mut bytes = vec![0u8; len];

    let mut pieces = Vec::new();
    for ph in segments {
        if ph.p_type(endian) != elf::PT_LOAD {
            continue;
        }
        let rva = ph.p_vaddr(endian).saturating_sub(preferred);
        let memsz = ph.p_memsz(endian);
        let filesz = ph.p_filesz(endian);
        if filesz > memsz {
            return Err(ctx.bad(format!(
                "PT_LOAD at {:#x} has more file bytes ({filesz:#x}) than memory ({memsz:#x})",
                ph.p_vaddr(endian)
            )));
        }
        let file_bytes = ph.data(endian, data).map_err(|_| {
            ctx.bad(format!(
                "PT_LOAD at {:#x} lies outside the file",
                ph.p_vaddr(endian)
            ))
        })?;
        put(ctx, &mut bytes, rva, file_bytes, "a PT_LOAD segment")?;
        let flags = ph.p_flags(endian);
        let perms = Permissions {
            read: flags & elf::PF_R != 0,
            write: flags & elf::PF_W != 0,
            execute: flags & elf::PF_X != 0,
        };
        if memsz > 0 {
            pieces.push((rva, rva.saturating_add(memsz), perms));
        }
    }
    let mut regions = page_runs(&pieces);
    // After relocation the loader makes RELRO read-only: whole pages from
    // the one holding its start up to the one holding its end (exclusive),
    // as glibc does.
    if let Some((s, e)) = relro {
        let (s, e) = (
            align_down(s.saturating_sub(preferred), PAGE),
            align_down(e.saturating_sub(preferred), PAGE),
        );
        let mut pages: BTreeMap<u64, Permissions> = BTreeMap::new();
        for r in &regions {
            let mut p = r.rva;
            while p < r.rva.saturating_add(r.size) {
                let mut perms = r.perms;
                if p >= s && p < e {
                    perms.write = false;
                }
                pages.insert(p, perms);
                p = p.saturating_add(PAGE);
            }
        }
        regions = runs(pages.into_iter());
    }

    let sections = header
        .sections(endian, data)
        .map_err(|e| ctx.bad(format!("section headers: {e}")))?;

    // Exports: defined global or weak dynamic symbols of default or
    // protected visibility.
    let dynsym = sections
        .symbols(endian, data, elf::SHT_DYNSYM)
        .map_err(|e| ctx.bad(format!(".dynsym: {e}")))?;
    let mut exports = BTreeMap::new();
    for sym in dynsym.iter() {
        if sym.st_shndx(endian) == elf::SHN_UNDEF
            || !matches!(sym.st_bind(), elf::STB_GLOBAL | elf::STB_WEAK)
            || !matches!(sym.st_visibility(), elf::STV_DEFAULT | elf::STV_PROTECTED)
        {
            continue;
        }
        let name = sym
            .name(endian, dynsym.strings())
            .map_err(|e| ctx.bad(format!(".dynsym name: {e}")))?;
        if name.is_empty() {
            continue;
        }
        let name = String::from_utf8_lossy(name).into_owned();
        exports
            .entry(name)
            .or_insert(sym.st_value(endian).wrapping_sub(preferred));
    }

    // Dynamic relocations, applied as the dynamic loader would with
    // immediate binding; undefined symbols get trap stubs.
    let (relative, irelative, abs64, glob_dat, jump_slot) = match arch {
        Arch::X86_64 => (
            elf::R_X86_64_RELATIVE,
            elf::R_X86_64_IRELATIVE,
            elf::R_X86_64_64,
            elf::R_X86_64_GLOB_DAT,
            elf::R_X86_64_JUMP_SLOT,
        ),
        Arch::Aarch64 => (
            elf::R_AARCH64_RELATIVE,
            elf::R_AARCH64_IRELATIVE,
            elf::R_AARCH64_ABS64,
            elf::R_AARCH64_GLOB_DAT,
            elf::R_AARCH64_JUMP_SLOT,
        ),
    };
    let none = match arch {
        Arch::X86_64 => elf::R_X86_64_NONE,
        Arch::Aarch64 => elf::R_AARCH64_NONE,
    };
    let mut imports: Vec<ImportStub> = Vec::new();
    let mut import_index: BTreeMap<String, usize> = BTreeMap::new();
    let mut slots = Vec::new();
    let in_image = |v: u64| -> Result<u64> {
        let rva = v.wrapping_sub(preferred);
        if rva >= span {
            return Err(ctx.bad(format!("a relocation points at {v:#x}, outside the image")));
        }
        Ok(rva)
    };
    for sh in sections.iter() {
        if sh.sh_flags(endian) & u64::from(elf::SHF_ALLOC) == 0 {
            continue;
        }
        if sh.sh_type(endian) == elf::SHT_REL {
            return Err(ctx.unsupported("SHT_REL relocations (only RELA and RELR)"));
        }
        if let Some(relr) = sh
            .relr(endian, data)
            .map_err(|e| ctx.bad(format!("RELR section: {e}")))?
        {
            for vaddr in relr {
                let rva = in_image(vaddr)?;
                // RELR holds the link-time address in place.
                let target = in_image(get_u64(ctx, &bytes, rva)?)?;
                set_u64(ctx, &mut bytes, rva, base.wrapping_add(target))?;
                slots.push(RelocSlot {
                    rva,
                    width: 8,
                    target: SlotTarget::Image(target),
                });
            }
            continue;
        }
        let Some((relas, symtab_index)) = sh
            .rela(endian, data)
            .map_err(|e| ctx.bad(format!("RELA section: {e}")))?
        else {
            continue;
        };
        let symbols = sections
            .symbol_table_by_index(endian, data, symtab_index)
            .map_err(|e| ctx.bad(format!("relocation symbol table: {e}")))?;
        for rela in relas {
            let r_type = rela.r_type(endian, false);
            let offset = rela.r_offset(endian);
            let rva = in_image(offset)?;
            let addend = rela.r_addend(endian);
            if r_type == none {
                continue;
            }
            if r_type == relative {
                let target = in_image(addend as u64)?;
                set_u64(ctx, &mut bytes, rva, base.wrapping_add(target))?;
                slots.push(RelocSlot {
                    rva,
                    width: 8,
                    target: SlotTarget::Image(target),
                });
                continue;
            }
            if r_type == irelative {
                return Err(
                    ctx.unsupported(format!("IFUNC relocations (R_*_IRELATIVE at {offset:#x})"))
                );
            }
            if r_type != abs64 && r_type != glob_dat && r_type != jump_slot {
                return Err(
                    ctx.unsupported(format!("dynamic relocation type {r_type} at {offset:#x}"))
                );
            }
            let sym_index = rela.r_sym(endian, false);
            let sym = symbols
                .symbol(object::SymbolIndex(sym_index as usize))
                .map_err(|_| {
                    ctx.bad(format!(
                        "relocation at {offset:#x} names symbol {sym_index}, which does not exist"
                    ))
                })?;
            let name = sym
                .name(endian, symbols.strings())
                .map_err(|e| ctx.bad(format!("relocation symbol name: {e}")))?;
            let name = String::from_utf8_lossy(name).into_owned();
            if sym.st_shndx(endian) != elf::SHN_UNDEF {
                // Resolved against the image's own definition: it is the
                // only image in the VM.
                if sym.st_type() == elf::STT_GNU_IFUNC {
                    return Err(ctx.unsupported(format!("IFUNC symbol `{name}`")));
                }
                if sym.st_type() == elf::STT_TLS {
                    return Err(ctx.unsupported(format!("TLS symbol `{name}`")));
                }
                let target = in_image(sym.st_value(endian))?.wrapping_add(addend as u64);
                set_u64(ctx, &mut bytes, rva, base.wrapping_add(target))?;
                slots.push(RelocSlot {
                    rva,
                    width: 8,
                    target: SlotTarget::Image(target),
                });
            } else if sym.st_bind() == elf::STB_WEAK {
                // An undefined weak symbol resolves to 0, as with ld.so.
                let v = addend as u64;
                set_u64(ctx, &mut bytes, rva, v)?;
                slots.push(RelocSlot {
                    rva,
                    width: 8,
                    target: SlotTarget::Absolute(v),
                });
            } else {
                let n = *import_index.entry(name.clone()).or_insert_with(|| {
                    imports.push(ImportStub {
                        name,
                        slots: Vec::new(),
                        stub: 0,
                    });
                    imports.len().saturating_sub(1)
                });
                let stub = stub_address(ctx, trap_base, n)?;
                if let Some(imp) = imports.get_mut(n) {
                    imp.stub = stub;
                    imp.slots.push(rva);
                }
                set_u64(ctx, &mut bytes, rva, stub.wrapping_add(addend as u64))?;
                slots.push(RelocSlot {
                    rva,
                    width: 8,
                    target: SlotTarget::Import(n, addend),
                });
            }
        }
    }
    slots.sort_by_key(|s| s.rva);
    Ok(Layout {
        format: Format::Elf,
        arch,
        preferred_base: preferred,
        base,
        bytes,
        regions,
        exports,
        imports,
        slots,
    })
}

fn stub_address(ctx: &Ctx<'_>, trap_base: u64, n: usize) -> Result<u64> {
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    if n >= crate::vm::TRAP_SIZE / STUB_SIZE {
        return Err(ctx.unsupported(format!(
            "more than {} imports",
            crate::vm::TRAP_SIZE / STUB_SIZE
        )));
    }
    // `n` is below TRAP_SIZE / STUB_SIZE: the product lies inside the trap area.
    Ok(trap_base.saturating_add(n.saturating_mul(STUB_SIZE)))
}

// ---------------------------------------------------------------- PE

fn pe_layout(ctx: &Ctx<'_>, data: &[u8], base: Base, trap_base: u64) -> Result<Layout> {
    let file = PeFile64::parse(data).map_err(|e| ctx.bad(format!("PE headers: {e}")))?;
    let nt = file.nt_headers();
    let arch = match nt.file_header().machine.get(LE) {
        pe::IMAGE_FILE_MACHINE_AMD64 => Arch::X86_64,
        pe::IMAGE_FILE_MACHINE_ARM64 => Arch::Aarch64,
        m => return Err(ctx.unsupported(format!("PE machine {m:#06x}"))),
    };
    let optional = nt.optional_header();
    let preferred = optional.image_base.get(LE);
    let span = align_up(u64::from(optional.size_of_image.get(LE)), PAGE)
        .ok_or_else(|| ctx.bad("SizeOfImage overflows"))?;
    if span > MAX_SPAN {
        return Err(ctx.bad(format!(
            "SizeOfImage {span:#x} is over the {MAX_SPAN:#x}-byte limit"
        )));
    }
    if preferred % PAGE != 0 {
        return Err(ctx.bad(format!("ImageBase {preferred:#x} is not page aligned")));
    }
    let base = choose_base(ctx, preferred, span, base)?;
    let len = usize::try_from(span).map_err(|_| ctx.bad("image too large"))?;
    let mut bytes = vec![0u8; len];

    // The headers, read-only, as Windows maps them.
    let headers_size = u64::from(optional.size_of_headers.get(LE)).min(span);
    let header_bytes = data
        .get(..usize::try_from(headers_size).unwrap_or(usize::MAX))
        .ok_or_else(|| ctx.bad("SizeOfHeaders runs past the end of the file"))?;
    put(ctx, &mut bytes, 0, header_bytes, "the headers")?;
    let mut pieces = vec![(
        0,
        headers_size.max(1),
        Permissions {
            read: true,
            write: false,
            execute: false,
        },
    )];

    let sections = file.section_table();
    for header in sections.iter() {
        let name = String::from_utf8_lossy(header.raw_name())
            .trim_end_matches('\0')
            .to_owned();
        let rva = u64::from(header.virtual_address.get(LE));
        let vsize = u64::from(header.virtual_size.get(LE));
        let raw = u64::from(header.size_of_raw_data.get(LE));
        let size = if vsize == 0 { raw } else { vsize };
        let file_bytes = header
            .pe_data(data)
            .map_err(|_| ctx.bad(format!("section {name} lies outside the file")))?;
        let keep = usize::try_from(size.min(file_bytes.len() as u64)).unwrap_or(0);
        let file_bytes = file_bytes.get(..keep).unwrap_or_default();
        if rva.checked_add(size).is_none_or(|e| e > span) {
            return Err(ctx.bad(format!("section {name} runs past SizeOfImage")));
        }
        put(ctx, &mut bytes, rva, file_bytes, "a section")?;
        let c = header.characteristics.get(LE);
        let perms = Permissions {
            read: c & pe::IMAGE_SCN_MEM_READ != 0,
            write: c & pe::IMAGE_SCN_MEM_WRITE != 0,
            execute: c & pe::IMAGE_SCN_MEM_EXECUTE != 0,
        };
        if size > 0 {
            pieces.push((rva, rva.saturating_add(size), perms));
        }
    }
    let regions = page_runs(&pieces);

    // Base relocations.
    let delta = base.wrapping_sub(preferred);
    let mut slots = Vec::new();
    let dirs = file.data_directories();
    if let Some(mut blocks) = dirs
        .relocation_blocks(data, &sections)
        .map_err(|e| ctx.bad(format!("base relocations: {e}")))?
    {
        while let Some(block) = blocks
            .next()
            .map_err(|e| ctx.bad(format!("base relocations: {e}")))?
        {
            for r in block {
                let rva = u64::from(r.virtual_address);
                match r.typ {
                    pe::IMAGE_REL_BASED_ABSOLUTE => {}
                    pe::IMAGE_REL_BASED_DIR64 => {
                        let stored = get_u64(ctx, &bytes, rva)?;
                        let target = stored.wrapping_sub(preferred);
                        set_u64(ctx, &mut bytes, rva, stored.wrapping_add(delta))?;
                        slots.push(RelocSlot {
                            rva,
                            width: 8,
                            target: SlotTarget::Image(target),
                        });
                    }
                    pe::IMAGE_REL_BASED_HIGHLOW => {
                        let stored = get_u32(ctx, &bytes, rva)?;
                        let new = stored.wrapping_add(delta as u32);
                        put(ctx, &mut bytes, rva, &new.to_le_bytes(), "a relocated slot")?;
                        slots.push(RelocSlot {
                            rva,
                            width: 4,
                            target: SlotTarget::Image(u64::from(
                                stored.wrapping_sub(preferred as u32),
                            )),
                        });
                    }
                    t => {
                        return Err(
                            ctx.unsupported(format!("base relocation type {t} at RVA {rva:#x}"))
                        )
                    }
                }
            }
        }
    }

    // Exports by name (forwarders are not callable here and are left out).
    let mut exports = BTreeMap::new();
    if let Some(table) = file
        .export_table()
        .map_err(|e| ctx.bad(format!("export table: {e}")))?
    {
        let list = table
            .exports()
            .map_err(|e| ctx.bad(format!("export table: {e}")))?;
        for e in list {
            if let (Some(name), ExportTarget::Address(rva)) = (e.name, e.target) {
                exports
                    .entry(String::from_utf8_lossy(name).into_owned())
                    .or_insert(u64::from(rva));
            }
        }
    }

    // Imports, ordinary and delay-loaded: every IAT slot gets its trap stub.
    let mut imports: Vec<ImportStub> = Vec::new();
    let mut import_index: BTreeMap<String, usize> = BTreeMap::new();
    let mut bind = |name: String, slot: u64, bytes: &mut Vec<u8>, slots: &mut Vec<RelocSlot>| {
        let n = *import_index.entry(name.clone()).or_insert_with(|| {
            imports.push(ImportStub {
                name,
                slots: Vec::new(),
                stub: 0,
            });
            imports.len().saturating_sub(1)
        });
        let stub = stub_address(ctx, trap_base, n)?;
        if let Some(imp) = imports.get_mut(n) {
            imp.stub = stub;
            imp.slots.push(slot);
        }
        set_u64(ctx, bytes, slot, stub)?;
        slots.push(RelocSlot {
            rva: slot,
            width: 8,
            target: SlotTarget::Import(n, 0),
        });
        Ok::<(), Error>(())
    };
    let import_name = |library: &[u8], import: Import<'_>| {
        let library = String::from_utf8_lossy(library);
        match import {
            Import::Ordinal(o) => format!("{library}!#{o}"),
            Import::Name(_, name) => format!("{library}!{}", String::from_utf8_lossy(name)),
        }
    };
    if let Some(table) = file
        .import_table()
        .map_err(|e| ctx.bad(format!("import table: {e}")))?
    {
        let mut descriptors = table
            .descriptors()
            .map_err(|e| ctx.bad(format!("import table: {e}")))?;
        while let Some(d) = descriptors
            .next()
            .map_err(|e| ctx.bad(format!("import table: {e}")))?
        {
            let library = table
                .name(d.name.get(LE))
                .map_err(|e| ctx.bad(format!("import library name: {e}")))?;
            let iat = d.first_thunk.get(LE);
            let lookup = match d.original_first_thunk.get(LE) {
                0 => iat,
                o => o,
            };
            let mut thunks = table
                .thunks(lookup)
                .map_err(|e| ctx.bad(format!("import lookup table: {e}")))?;
            let mut i = 0u64;
            while let Some(thunk) = thunks
                .next::<pe::ImageNtHeaders64>()
                .map_err(|e| ctx.bad(format!("import lookup table: {e}")))?
            {
                let import = table
                    .import::<pe::ImageNtHeaders64>(thunk)
                    .map_err(|e| ctx.bad(format!("import: {e}")))?;
                let slot = u64::from(iat).saturating_add(i.saturating_mul(8));
                bind(import_name(library, import), slot, &mut bytes, &mut slots)?;
                i = i.saturating_add(1);
            }
        }
    }
    if let Some(table) = dirs
        .delay_load_import_table(data, &sections)
        .map_err(|e| ctx.bad(format!("delay-load import table: {e}")))?
    {
        let mut descriptors = table
            .descriptors()
            .map_err(|e| ctx.bad(format!("delay-load import table: {e}")))?;
        while let Some(d) = descriptors
            .next()
            .map_err(|e| ctx.bad(format!("delay-load import table: {e}")))?
        {
            let library = table
                .name(d.dll_name_rva.get(LE))
                .map_err(|e| ctx.bad(format!("delay-load library name: {e}")))?;
            let iat = d.import_address_table_rva.get(LE);
            let mut thunks = table
                .thunks(d.import_name_table_rva.get(LE))
                .map_err(|e| ctx.bad(format!("delay-load name table: {e}")))?;
            let mut i = 0u64;
            while let Some(thunk) = thunks
                .next::<pe::ImageNtHeaders64>()
                .map_err(|e| ctx.bad(format!("delay-load name table: {e}")))?
            {
                let import = table
                    .import::<pe::ImageNtHeaders64>(thunk)
                    .map_err(|e| ctx.bad(format!("delay-load import: {e}")))?;
                let slot = u64::from(iat).saturating_add(i.saturating_mul(8));
                bind(import_name(library, import), slot, &mut bytes, &mut slots)?;
                i = i.saturating_add(1);
            }
        }
    }
    slots.sort_by_key(|s| s.rva);
    Ok(Layout {
        format: Format::Pe,
        arch,
        preferred_base: preferred,
        base,
        bytes,
        regions,
        exports,
        imports,
        slots,
    })
}

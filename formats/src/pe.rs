//! The PE reader: a PE32+ image (x86-64 or ARM64) together with its PDB.
//!
//! The image itself gives the sections, the exports, the base relocations, the
//! import address table and the identity (header fields and the CodeView
//! record). Functions and data
//! objects come from the PDB that matches the image's CodeView GUID and age;
//! see [`symbols`] for that part and [`types`] for the data sizes. Struct,
//! union and class layouts and the types each function uses come from the
//! same PDB, read in the same pass ([`layouts`]). Code that the PDB knows
//! only by public symbols (a runtime library built without CodeView) gets
//! its functions from them, with extents from `.pdata` or the section
//! contributions ([`publics`]).
//!
//! An image given without a PDB, and with none beside it, is read as a
//! stripped image (a DLL as distributions ship it), as the ELF reader reads
//! a stripped shared object: functions from the exception directory and the
//! exports, no data objects, no types ([`unwind`]). An explicit PDB that is
//! missing stays an error.
//!
//! Every value read from either file is untrusted: offsets and sizes are
//! checked before use, arithmetic on them is checked, and every failure is a
//! one-line [`Error`] naming the file.

mod cursor;
#[cfg(test)]
mod damage_tests;
mod layouts;
mod publics;
mod source;
mod streams;
mod symbols;
#[cfg(test)]
pub(crate) mod test_msf;
mod types;
mod unwind;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, Import, PeFile64};
use object::{Object, ObjectSection};

use crate::error::{Error, Result};
use crate::image::{
    Arch, CodeView, Export, Format, FormatIdentity, Identity, Image, Permissions, RelocTarget,
    Relocation, Section, TypeInfo,
};
use crate::name::escape_name;
use crate::read::ReadOptions;

/// Where the PDB of a PE image comes from.
pub(crate) enum Pdb<'a> {
    /// [`ReadOptions::pdb`], or `<image stem>.pdb` beside the image, read
    /// from disk with [`crate::read::load_pdb`].
    FromDisk,
    /// Bytes already in memory; messages name [`ReadOptions::pdb`] or the
    /// default path.
    InMemory(&'a [u8]),
}

/// The PDB [`parse`] reads, once it is known that there is one.
enum PdbBytes<'a> {
    /// A file, read after the image's CodeView record is checked.
    Disk(PathBuf),
    /// Bytes in memory ([`Pdb::InMemory`]).
    Memory(&'a [u8]),
}

/// What [`Error::Malformed`] says it was reading when the image is damaged.
const WHAT_IMAGE: &str = "PE image";

/// Size of the DOS header (`IMAGE_DOS_HEADER`).
const DOS_HEADER_SIZE: usize = 64;
/// Offset of `e_lfanew` in the DOS header.
const E_LFANEW_OFFSET: usize = 0x3c;
/// Size of `IMAGE_FILE_HEADER`.
const FILE_HEADER_SIZE: usize = 20;
/// `IMAGE_OPTIONAL_HEADER.Magic` of a PE32 (32-bit) image.
const PE32_MAGIC: u16 = 0x10b;
/// `IMAGE_OPTIONAL_HEADER.Magic` of a PE32+ (64-bit) image.
const PE32PLUS_MAGIC: u16 = 0x20b;
/// Offset of `CHPEMetadataPointer` in `IMAGE_LOAD_CONFIG_DIRECTORY64`.
const LOAD_CONFIG_CHPE_OFFSET: usize = 200;

/// A [`Error::Malformed`] about the image at `path`.
fn malformed(path: &Path, detail: impl Into<String>) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        what: WHAT_IMAGE,
        detail: detail.into(),
    }
}

/// A readable name for a COFF machine type, as in `0x14c (i386)`.
fn machine_name(machine: u16) -> String {
    let name = match machine {
        pe::IMAGE_FILE_MACHINE_UNKNOWN => "unknown",
        pe::IMAGE_FILE_MACHINE_I386 => "i386",
        pe::IMAGE_FILE_MACHINE_R3000 | pe::IMAGE_FILE_MACHINE_R4000 => "MIPS",
        pe::IMAGE_FILE_MACHINE_R10000 => "MIPS R10000",
        pe::IMAGE_FILE_MACHINE_WCEMIPSV2 => "MIPS WCE v2",
        pe::IMAGE_FILE_MACHINE_MIPS16 => "MIPS16",
        pe::IMAGE_FILE_MACHINE_MIPSFPU => "MIPS with FPU",
        pe::IMAGE_FILE_MACHINE_MIPSFPU16 => "MIPS16 with FPU",
        pe::IMAGE_FILE_MACHINE_ALPHA => "Alpha",
        pe::IMAGE_FILE_MACHINE_ALPHA64 => "Alpha64",
        pe::IMAGE_FILE_MACHINE_SH3
        | pe::IMAGE_FILE_MACHINE_SH3DSP
        | pe::IMAGE_FILE_MACHINE_SH3E
        | pe::IMAGE_FILE_MACHINE_SH4
        | pe::IMAGE_FILE_MACHINE_SH5 => "SuperH",
        pe::IMAGE_FILE_MACHINE_ARM => "ARM",
        pe::IMAGE_FILE_MACHINE_THUMB => "Thumb",
        pe::IMAGE_FILE_MACHINE_ARMNT => "ARMNT, 32-bit ARM",
        pe::IMAGE_FILE_MACHINE_AM33 => "AM33",
        pe::IMAGE_FILE_MACHINE_POWERPC | pe::IMAGE_FILE_MACHINE_POWERPCFP => "PowerPC",
        pe::IMAGE_FILE_MACHINE_POWERPCBE => "PowerPC big-endian",
        pe::IMAGE_FILE_MACHINE_IA64 => "IA-64",
        pe::IMAGE_FILE_MACHINE_TRICORE => "TriCore",
        pe::IMAGE_FILE_MACHINE_CEF => "CEF",
        pe::IMAGE_FILE_MACHINE_EBC => "EFI byte code",
        pe::IMAGE_FILE_MACHINE_AMD64 => "x86-64",
        pe::IMAGE_FILE_MACHINE_M32R => "M32R",
        pe::IMAGE_FILE_MACHINE_ARM64 => "ARM64",
        pe::IMAGE_FILE_MACHINE_ARM64EC => "ARM64EC",
        pe::IMAGE_FILE_MACHINE_ARM64X => "ARM64X",
        pe::IMAGE_FILE_MACHINE_CEE => "CEE",
        pe::IMAGE_FILE_MACHINE_RISCV32 => "RISC-V 32-bit",
        pe::IMAGE_FILE_MACHINE_RISCV64 => "RISC-V 64-bit",
        pe::IMAGE_FILE_MACHINE_RISCV128 => "RISC-V 128-bit",
        pe::IMAGE_FILE_MACHINE_CHPE_X86 => "CHPE x86",
        _ => "unrecognised",
    };
    format!("{machine:#x} ({name})")
}

/// A little-endian `u16` at `offset`, if the bytes are there.
fn le_u16(data: &[u8], offset: usize) -> Option<u16> {
    let end = offset.checked_add(2)?;
    let b = data.get(offset..end)?;
    Some(u16::from_le_bytes([*b.first()?, *b.get(1)?]))
}

/// A little-endian `u32` at `offset`, if the bytes are there.
fn le_u32(data: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    let b: [u8; 4] = data.get(offset..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// A little-endian `u64` at `offset`, if the bytes are there.
fn le_u64(data: &[u8], offset: usize) -> Option<u64> {
    let end = offset.checked_add(8)?;
    let b: [u8; 8] = data.get(offset..end)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// Check the headers in front of the section table by hand, before `object`
/// parses them, so that the common failures get precise messages: a short
/// file, a DOS executable without a PE header, a machine this tool does not
/// handle, or a 32-bit image. Returns the machine type.
fn check_headers(data: &[u8], path: &Path) -> Result<u16> {
    let len = data.len();
    if len < DOS_HEADER_SIZE {
        return Err(malformed(
            path,
            format!("the file is truncated: {len} bytes, shorter than the {DOS_HEADER_SIZE}-byte DOS header"),
        ));
    }
    let nt = le_u32(data, E_LFANEW_OFFSET)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| malformed(path, "cannot read e_lfanew from the DOS header"))?;
    let signature = nt.checked_add(4).and_then(|end| data.get(nt..end));
    match signature {
        None => {
            return Err(malformed(
                path,
                format!(
                    "the PE header offset {nt:#x} (e_lfanew) is past the end of the {len}-byte file: truncated, or not a PE image"
                ),
            ))
        }
        Some(sig) if sig != b"PE\0\0" => {
            return Err(malformed(
                path,
                format!("no PE signature at offset {nt:#x} (e_lfanew); a DOS program or a damaged header"),
            ))
        }
        Some(_) => {}
    }
    let file_header = nt.saturating_add(4);
    let optional_header = file_header
        .checked_add(FILE_HEADER_SIZE)
        .filter(|&end| end <= len)
        .ok_or_else(|| {
            malformed(
                path,
                format!(
                    "the file is truncated inside the COFF file header at offset {file_header:#x}"
                ),
            )
        })?;
    let machine = le_u16(data, file_header).unwrap_or_default();
    match machine {
        pe::IMAGE_FILE_MACHINE_AMD64 | pe::IMAGE_FILE_MACHINE_ARM64 => {}
        other => {
            return Err(Error::UnsupportedMachine {
                path: path.to_path_buf(),
                machine: machine_name(other),
            })
        }
    }
    let magic = le_u16(data, optional_header).ok_or_else(|| {
        malformed(
            path,
            format!(
                "the file is truncated before the optional header at offset {optional_header:#x}"
            ),
        )
    })?;
    match magic {
        PE32PLUS_MAGIC => Ok(machine),
        PE32_MAGIC => Err(malformed(
            path,
            format!(
                "machine {} with a 32-bit (PE32) optional header; only PE32+ images are supported",
                machine_name(machine)
            ),
        )),
        other => Err(malformed(
            path,
            format!(
                "unknown optional header magic {other:#x} (expected {PE32PLUS_MAGIC:#x} for PE32+)"
            ),
        )),
    }
}

/// A section as laid out in the section table, in table order (PDB section
/// numbers are 1-based indexes into this order).
#[derive(Clone, Debug)]
pub(crate) struct SectionInfo {
    /// Section name.
    pub(crate) name: String,
    /// RVA of the first byte.
    pub(crate) rva: u64,
    /// Size in memory.
    pub(crate) size: u64,
}

/// Read the section table into model sections, in table order, and check
/// the layout the Windows loader requires: every section starts at a
/// multiple of `SectionAlignment`, directly after the previous one (rounded
/// up to the alignment: no gaps, no overlaps, ascending), and the last one
/// ends within `SizeOfImage`.
fn read_sections<'data>(
    file: &PeFile64<'data>,
    data: &'data [u8],
    path: &Path,
) -> Result<Vec<Section<'data>>> {
    let optional = file.nt_headers().optional_header();
    let alignment = u64::from(optional.section_alignment());
    let size_of_image = u64::from(optional.size_of_image());
    if !alignment.is_power_of_two() {
        return Err(malformed(
            path,
            format!("SectionAlignment {alignment:#x} is not a power of two"),
        ));
    }
    let align_up = |v: u64| {
        v.checked_add(alignment.saturating_sub(1))
            .map(|x| x & !alignment.saturating_sub(1))
    };
    let mut sections: Vec<Section<'data>> = Vec::new();
    for (i, section) in file.sections().enumerate() {
        let number = i.saturating_add(1);
        let header = section.pe_section();
        let raw = header.raw_name();
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let name = match section.name() {
            // A long name (`/123` into the COFF string table), resolved.
            Ok(name) if raw.first() == Some(&b'/') => escape_name(name.as_bytes()),
            _ => escape_name(raw.get(..end).unwrap_or_default()),
        };
        let virtual_size = header.virtual_size.get(object::LittleEndian);
        let raw_size = header.size_of_raw_data.get(object::LittleEndian);
        // A zero VirtualSize means "as large as the raw data" to the loader.
        let size = if virtual_size == 0 {
            raw_size
        } else {
            virtual_size
        };
        let rva = u64::from(header.virtual_address.get(object::LittleEndian));
        let size = u64::from(size);
        if rva & alignment.saturating_sub(1) != 0 {
            return Err(malformed(
                path,
                format!(
                    "section {number} `{name}` starts at RVA {rva:#x}, not a multiple of SectionAlignment {alignment:#x}"
                ),
            ));
        }
        if let Some(prev) = sections.last() {
            let expected = prev
                .rva
                .checked_add(prev.size)
                .and_then(align_up)
                .unwrap_or(u64::MAX);
            if rva != expected {
                return Err(malformed(
                    path,
                    format!(
                        "section {number} `{name}` starts at RVA {rva:#x}, but section {i} `{}` ({:#x}..{:#x}) ends at {expected:#x} once aligned: the loader requires sections to follow each other without gap or overlap (a damaged section size or address)",
                        prev.name,
                        prev.rva,
                        prev.rva.saturating_add(prev.size)
                    ),
                ));
            }
        }
        let end = rva.saturating_add(size);
        if end > size_of_image {
            return Err(malformed(
                path,
                format!(
                    "section {number} `{name}` ({rva:#x}..{end:#x}) extends past SizeOfImage {size_of_image:#x}"
                ),
            ));
        }
        let offset = header.pointer_to_raw_data.get(object::LittleEndian);
        let backed = u64::from(raw_size).min(size);
        let bytes = if backed == 0 {
            &[][..]
        } else {
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let end = usize::try_from(backed)
                .ok()
                .and_then(|n| start.checked_add(n));
            end.and_then(|end| data.get(start..end)).ok_or_else(|| {
                malformed(
                    path,
                    format!(
                        "section {number} `{name}`: its {backed:#x} bytes of raw data at file offset {offset:#x} extend past the end of the {}-byte file",
                        data.len()
                    ),
                )
            })?
        };
        let characteristics = header.characteristics.get(object::LittleEndian);
        sections.push(Section {
            name,
            rva,
            size,
            perms: Permissions {
                read: characteristics & pe::IMAGE_SCN_MEM_READ != 0,
                write: characteristics & pe::IMAGE_SCN_MEM_WRITE != 0,
                execute: characteristics & pe::IMAGE_SCN_MEM_EXECUTE != 0,
            },
            data: bytes,
        });
    }
    Ok(sections)
}

/// The section that starts last at or before `rva`: the only one that can
/// hold it. `sections` is in table order, which [`read_sections`] has
/// checked to be ascending and without overlaps, so this is a binary search.
fn holding<'s, 'data>(sections: &'s [Section<'data>], rva: u64) -> Option<&'s Section<'data>> {
    let after = sections.partition_point(|s| s.rva <= rva);
    sections.get(after.checked_sub(1)?)
}

/// Whether `[rva, rva + len)` lies inside one section's memory range (a
/// zero-length range may sit at a section's end).
fn in_section(sections: &[Section<'_>], rva: u64, len: u64) -> bool {
    holding(sections, rva).is_some_and(|s| {
        rva.checked_sub(s.rva)
            .and_then(|off| off.checked_add(len))
            .is_some_and(|end| end <= s.size)
    })
}

/// The initialised bytes of `[rva, rva + len)` in one of `sections`.
fn bytes_at<'data>(sections: &[Section<'data>], rva: u64, len: u64) -> Option<&'data [u8]> {
    holding(sections, rva)?.bytes_at(rva, len)
}

/// Refuse hybrid images: an ARM64X image (machine ARM64) or an ARM64EC image
/// (machine x86-64) carries a CHPE metadata pointer in its load configuration.
/// A load configuration that cannot be read is not an error here: it only
/// matters for this check.
fn check_hybrid(
    file: &PeFile64<'_>,
    sections: &[Section<'_>],
    machine: u16,
    path: &Path,
) -> Result<()> {
    let Some(dir) = file.data_directory(pe::IMAGE_DIRECTORY_ENTRY_LOAD_CONFIG) else {
        return Ok(());
    };
    let (rva, dir_size) = dir.address_range();
    if rva == 0 || dir_size == 0 {
        return Ok(());
    }
    let Some(bytes) = bytes_at(sections, u64::from(rva), u64::from(dir_size)) else {
        return Ok(());
    };
    // The structure's own Size field says which fields are present.
    let declared = le_u32(bytes, 0)
        .and_then(|s| usize::try_from(s).ok())
        .unwrap_or(0);
    let Some(end) = LOAD_CONFIG_CHPE_OFFSET.checked_add(8) else {
        return Ok(());
    };
    if declared < end {
        return Ok(());
    }
    let chpe = le_u64(bytes, LOAD_CONFIG_CHPE_OFFSET).unwrap_or(0);
    if chpe == 0 {
        return Ok(());
    }
    let kind = if machine == pe::IMAGE_FILE_MACHINE_ARM64 {
        "ARM64X"
    } else {
        "ARM64EC"
    };
    Err(Error::UnsupportedMachine {
        path: path.to_path_buf(),
        machine: format!("{machine:#x} with CHPE metadata ({kind} hybrid image)"),
    })
}

/// The named exports of the image. Forwarded exports are skipped (they are
/// not in this image). An export with no name, only an ordinal, is named
/// `#<ordinal>`.
///
/// An export whose RVA lies outside every section is refused.
fn read_exports(file: &PeFile64<'_>, sections: &[Section<'_>], path: &Path) -> Result<Vec<Export>> {
    let table = file
        .export_table()
        .map_err(|e| malformed(path, format!("export directory: {e}")))?;
    let Some(table) = table else {
        return Ok(Vec::new());
    };
    let exports = table
        .exports()
        .map_err(|e| malformed(path, format!("export directory: {e}")))?;
    let mut out = Vec::new();
    for export in exports {
        let object::read::pe::ExportTarget::Address(rva) = export.target else {
            continue;
        };
        let name = match export.name {
            Some(name) => escape_name(name),
            None => format!("#{}", export.ordinal),
        };
        let rva = u64::from(rva);
        if !in_section(sections, rva, 0) {
            return Err(malformed(
                path,
                format!("export `{name}` is at RVA {rva:#x}, outside every section"),
            ));
        }
        out.push(Export { name, rva });
    }
    Ok(out)
}

/// Every slot of the import address table, as a relocation against the
/// symbol the loader puts there: `dll!name`, or `dll!#ordinal` for an import
/// by ordinal. Code that calls or loads through a slot then compares by what
/// it imports, not by where the slot or its hint/name entry happens to lie.
/// (Delay-load imports are not read: their slots hold base-relocated
/// pointers to loader thunks until first use.)
///
/// Every slot must lie inside a section.
fn read_imports(
    file: &PeFile64<'_>,
    sections: &[Section<'_>],
    path: &Path,
) -> Result<Vec<Relocation>> {
    let bad = |e: object::Error| malformed(path, format!("import directory: {e}"));
    let Some(table) = file.import_table().map_err(bad)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut descriptors = table.descriptors().map_err(bad)?;
    while let Some(d) = descriptors.next().map_err(bad)? {
        let dll = escape_name(table.name(d.name.get(object::LittleEndian)).map_err(bad)?);
        let iat = u64::from(d.first_thunk.get(object::LittleEndian));
        let lookup = match d.original_first_thunk.get(object::LittleEndian) {
            0 => d.first_thunk.get(object::LittleEndian),
            rva => rva,
        };
        let mut thunks = table.thunks(lookup).map_err(bad)?;
        let mut slot = iat;
        while let Some(thunk) = thunks.next::<pe::ImageNtHeaders64>().map_err(bad)? {
            let name = match table.import::<pe::ImageNtHeaders64>(thunk).map_err(bad)? {
                Import::Name(_, name) => format!("{dll}!{}", escape_name(name)),
                Import::Ordinal(ordinal) => format!("{dll}!#{ordinal}"),
            };
            if !in_section(sections, slot, 8) {
                return Err(malformed(
                    path,
                    format!(
                        "import address table slot for `{name}` at RVA {slot:#x} lies outside every section"
                    ),
                ));
            }
            out.push(Relocation {
                rva: slot,
                width: 8,
                target: RelocTarget::Symbol { name, addend: 0 },
            });
            slot = slot.checked_add(8).ok_or_else(|| {
                malformed(path, "import address table runs past the address space")
            })?;
        }
    }
    Ok(out)
}

/// Every base relocation, with the RVA it points at once loaded.
fn read_relocations(
    file: &PeFile64<'_>,
    data: &[u8],
    sections: &[Section<'_>],
    image_base: u64,
    path: &Path,
) -> Result<Vec<Relocation>> {
    let blocks = file
        .data_directories()
        .relocation_blocks(data, &file.section_table())
        .map_err(|e| malformed(path, format!("base relocation directory: {e}")))?;
    let Some(mut blocks) = blocks else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    while let Some(block) = blocks
        .next()
        .map_err(|e| malformed(path, format!("base relocation directory: {e}")))?
    {
        for reloc in block {
            let rva = u64::from(reloc.virtual_address);
            let (width, kind) = match reloc.typ {
                // Padding that keeps blocks 4-byte aligned.
                pe::IMAGE_REL_BASED_ABSOLUTE => continue,
                pe::IMAGE_REL_BASED_DIR64 => (8u8, "DIR64"),
                pe::IMAGE_REL_BASED_HIGHLOW => (4u8, "HIGHLOW"),
                other => {
                    return Err(malformed(
                        path,
                        format!(
                            "base relocation at RVA {rva:#x} has type {other}, which is not DIR64 (10) or HIGHLOW (3)"
                        ),
                    ))
                }
            };
            let bytes = bytes_at(sections, rva, u64::from(width)).ok_or_else(|| {
                malformed(
                    path,
                    format!(
                        "{kind} base relocation at RVA {rva:#x} is outside the file-backed bytes of every section"
                    ),
                )
            })?;
            let target = if width == 8 {
                let stored = le_u64(bytes, 0).unwrap_or_default();
                stored.checked_sub(image_base).ok_or_else(|| {
                    malformed(
                        path,
                        format!(
                            "DIR64 base relocation at RVA {rva:#x} holds {stored:#x}, below the image base {image_base:#x}"
                        ),
                    )
                })?
            } else {
                // HIGHLOW patches the low 32 bits of the address: the target
                // is the stored value less the low half of the image base.
                let stored = le_u32(bytes, 0).unwrap_or_default();
                let base_low = image_base & u64::from(u32::MAX);
                u64::from(stored).checked_sub(base_low).ok_or_else(|| {
                    malformed(
                        path,
                        format!(
                            "HIGHLOW base relocation at RVA {rva:#x} holds {stored:#x}, below the image base {image_base:#x}"
                        ),
                    )
                })?
            };
            out.push(Relocation {
                rva,
                width,
                target: RelocTarget::Rva(target),
            });
        }
    }
    Ok(out)
}

/// The image's CodeView (RSDS) record, if it has one.
fn read_codeview(file: &PeFile64<'_>, path: &Path) -> Result<Option<CodeView>> {
    let info = file
        .pdb_info()
        .map_err(|e| malformed(path, format!("debug directory: {e}")))?;
    Ok(info.map(|cv| CodeView {
        guid: cv.guid(),
        age: cv.age(),
        path: escape_name(cv.path()),
    }))
}

/// Where the PDB is: the explicit one, or `<image path with .pdb>` beside
/// the image when that is a file. `None` when neither: the image is then
/// read without a PDB. A missing explicit PDB is reported by reading it
/// ([`Error::Io`] naming it).
fn pdb_path(opts: &ReadOptions) -> Option<PathBuf> {
    if let Some(pdb) = &opts.pdb {
        return Some(pdb.clone());
    }
    let beside = opts.path.with_extension("pdb");
    beside.is_file().then_some(beside)
}

/// Parse a PE32+ image and its PDB. See the module documentation.
pub(crate) fn parse<'data>(
    data: &'data [u8],
    opts: &ReadOptions,
    pdb: Pdb<'_>,
) -> Result<Image<'data>> {
    let path = opts.path.as_path();
    let machine = check_headers(data, path)?;
    let file = PeFile64::parse(data).map_err(|e| malformed(path, e.to_string()))?;
    let nt = file.nt_headers();
    let optional = nt.optional_header();
    let image_base = optional.image_base();

    let sections = read_sections(&file, data, path)?;
    check_hybrid(&file, &sections, machine, path)?;
    let exports = read_exports(&file, &sections, path)?;
    let mut relocations = read_relocations(&file, data, &sections, image_base, path)?;
    relocations.extend(read_imports(&file, &sections, path)?);
    let codeview = read_codeview(&file, path)?;

    let arch = if machine == pe::IMAGE_FILE_MACHINE_ARM64 {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };

    let file_header = nt.file_header();
    let identity = Identity {
        format: FormatIdentity::Pe {
            time_date_stamp: file_header.time_date_stamp.get(object::LittleEndian),
            size_of_image: optional.size_of_image(),
            checksum: optional.check_sum(),
            codeview: codeview.clone(),
        },
    };
    let pdb = match pdb {
        Pdb::FromDisk => match pdb_path(opts) {
            Some(p) => PdbBytes::Disk(p),
            // No PDB given and none beside the image: a stripped image.
            None => {
                let functions = unwind::functions(&file, &sections, arch, &exports, path)?;
                if functions.is_empty() {
                    return Err(Error::NoSymbols {
                        path: path.to_path_buf(),
                        detail: format!(
                            "no PDB was given and none is beside the image (looked for {}), and without one there is nothing to find functions from: no unwind data (.pdata) and no exported code; pass its PDB with --pdb",
                            opts.path.with_extension("pdb").display()
                        ),
                    });
                }
                return Ok(Image {
                    file: data,
                    format: Format::Pe,
                    arch,
                    preferred_base: image_base,
                    sections,
                    functions,
                    data: Vec::new(),
                    exports,
                    relocations,
                    identity,
                    boundaries: directory_boundaries(&file),
                    stripped: true,
                    type_info: TypeInfo::Absent,
                    types: Vec::new(),
                    type_uses: Vec::new(),
                    lines: Vec::new(),
                });
            }
        },
        Pdb::InMemory(bytes) => PdbBytes::Memory(bytes),
    };

    let Some(cv) = codeview.as_ref() else {
        let pdb = match &opts.pdb {
            Some(pdb) => format!("the given PDB {}", pdb.display()),
            None => "a PDB".to_owned(),
        };
        return Err(Error::NoSymbols {
            path: path.to_path_buf(),
            detail: format!(
                "the image has no CodeView (RSDS) debug record, so {pdb} cannot be matched to it; relink with /DEBUG"
            ),
        });
    };
    let loaded;
    let (pdb_path, pdb_bytes) = match pdb {
        PdbBytes::Disk(pdb_path) => {
            loaded = crate::read::load_pdb(&pdb_path)?;
            (pdb_path, loaded.as_slice())
        }
        PdbBytes::Memory(bytes) => (opts.pdb_or_default(), bytes),
    };
    let layout: Vec<SectionInfo> = sections
        .iter()
        .map(|s| SectionInfo {
            name: s.name.clone(),
            rva: s.rva,
            size: s.size,
        })
        .collect();
    let export_index: HashMap<u64, Vec<&str>> =
        exports.iter().fold(HashMap::new(), |mut map, e| {
            map.entry(e.rva).or_default().push(e.name.as_str());
            map
        });
    let found = symbols::read(&symbols::Request {
        pdb: pdb_bytes,
        pdb_path: &pdb_path,
        image_path: path,
        codeview: cv,
        machine,
        sections: &layout,
        exports: &export_index,
    })?;

    let iat_slots: HashSet<u64> = relocations
        .iter()
        .filter(|r| matches!(r.target, RelocTarget::Symbol { .. }))
        .map(|r| r.rva)
        .collect();
    let mut functions = found.functions;
    let from_publics = publics::functions(
        &publics::Request {
            sections: &sections,
            arch,
            procedures: &functions,
            publics: &found.publics,
            contributions: &found.contributions,
            iat_slots: &iat_slots,
            exports: &export_index,
            pdb_path: &pdb_path,
        },
        || unwind::extents(&file, &sections, arch, path),
    )?;
    functions.extend(from_publics);

    let mut boundaries = found.boundaries;
    boundaries.extend(directory_boundaries(&file));
    Ok(Image {
        file: data,
        format: Format::Pe,
        arch,
        preferred_base: image_base,
        sections,
        functions,
        data: found.data,
        exports,
        relocations,
        identity,
        boundaries,
        stripped: false,
        type_info: found.types.info,
        types: found.types.types,
        type_uses: found.types.uses,
        lines: found.lines,
    })
}

/// Start and end RVAs of every non-empty data directory (export, import,
/// debug, load configuration, ...): linker-made structures that anonymous
/// data must not be taken to run into.
fn directory_boundaries(file: &PeFile64<'_>) -> Vec<u64> {
    file.data_directories()
        .iter()
        .filter(|d| d.size.get(object::LittleEndian) > 0)
        .flat_map(|d| {
            let start = u64::from(d.virtual_address.get(object::LittleEndian));
            let end = start.saturating_add(u64::from(d.size.get(object::LittleEndian)));
            [start, end]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE_BASE: u64 = 0x1_8000_0000;
    const OPT: usize = 0x58;
    const SECTIONS: usize = OPT + 240;
    const RELOC_FILE: usize = 0x600;
    const DATA_FILE: usize = 0x400;

    fn put16(d: &mut [u8], at: usize, v: u16) {
        d[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn put32(d: &mut [u8], at: usize, v: u32) {
        d[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put64(d: &mut [u8], at: usize, v: u64) {
        d[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// A minimal PE32+ DLL: `.text`, `.data` holding one pointer to `.text`,
    /// and `.reloc` with one DIR64 relocation for it. No debug directory.
    fn image() -> Vec<u8> {
        let mut d = vec![0u8; 0x800];
        d[0..2].copy_from_slice(b"MZ");
        put32(&mut d, E_LFANEW_OFFSET, 0x40);
        d[0x40..0x44].copy_from_slice(b"PE\0\0");
        put16(&mut d, 0x44, pe::IMAGE_FILE_MACHINE_AMD64);
        put16(&mut d, 0x46, 3);
        put32(&mut d, 0x48, 0x1234_5678);
        put16(&mut d, 0x54, 240);
        put16(&mut d, 0x56, 0x2022);
        put16(&mut d, OPT, PE32PLUS_MAGIC);
        put64(&mut d, OPT + 24, IMAGE_BASE);
        put32(&mut d, OPT + 32, 0x1000);
        put32(&mut d, OPT + 36, 0x200);
        put32(&mut d, OPT + 56, 0x4000);
        put32(&mut d, OPT + 60, 0x200);
        put32(&mut d, OPT + 64, 0xabcd);
        put32(&mut d, OPT + 108, 16);
        // Data directory 5: base relocations.
        put32(&mut d, OPT + 112 + 5 * 8, 0x3000);
        put32(&mut d, OPT + 112 + 5 * 8 + 4, 12);
        let sections: [(&[u8], u32, u32, u32); 3] = [
            (b".text", 0x1000, 0x200, 0x6000_0020),
            (b".data", 0x2000, DATA_FILE as u32, 0xc000_0040),
            (b".reloc", 0x3000, RELOC_FILE as u32, 0x4200_0040),
        ];
        for (i, (name, va, file, ch)) in sections.iter().enumerate() {
            let at = SECTIONS + i * 40;
            d[at..at + name.len()].copy_from_slice(name);
            put32(&mut d, at + 8, 0x10);
            put32(&mut d, at + 12, *va);
            put32(&mut d, at + 16, 0x200);
            put32(&mut d, at + 20, *file);
            put32(&mut d, at + 36, *ch);
        }
        d[0x200] = 0xc3;
        put64(&mut d, DATA_FILE, IMAGE_BASE + 0x1000);
        put32(&mut d, RELOC_FILE, 0x2000);
        put32(&mut d, RELOC_FILE + 4, 12);
        put16(&mut d, RELOC_FILE + 8, pe::IMAGE_REL_BASED_DIR64 << 12);
        put16(&mut d, RELOC_FILE + 10, 0);
        d
    }

    fn opts() -> ReadOptions {
        ReadOptions::new("/nonexistent/test.dll")
    }

    fn message(r: Result<Image<'_>>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn valid_headers_are_read() {
        let d = image();
        let file = PeFile64::parse(&d[..]).unwrap();
        let sections = read_sections(&file, &d, Path::new("t")).unwrap();
        let names: Vec<_> = sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [".text", ".data", ".reloc"]);
        assert_eq!(sections[0].rva, 0x1000);
        assert_eq!(sections[0].size, 0x10);
        assert_eq!(sections[0].data.len(), 0x10);
        assert_eq!(sections[0].perms.to_string(), "r-x");
        assert_eq!(sections[1].perms.to_string(), "rw-");
        let relocs = read_relocations(&file, &d, &sections, IMAGE_BASE, Path::new("t")).unwrap();
        assert_eq!(
            relocs,
            [Relocation {
                rva: 0x2000,
                width: 8,
                target: RelocTarget::Rva(0x1000)
            }]
        );
        assert!(read_exports(&file, &sections, Path::new("t"))
            .unwrap()
            .is_empty());
        assert_eq!(read_codeview(&file, Path::new("t")).unwrap(), None);
    }

    #[test]
    fn no_codeview_record_is_a_clear_error() {
        let d = image();
        let msg = message(parse(&d, &opts().with_pdb("/tmp/given.pdb"), Pdb::FromDisk));
        assert!(msg.contains("no CodeView (RSDS) debug record"), "{msg}");
        assert!(msg.contains("the given PDB /tmp/given.pdb"), "{msg}");
        let msg = message(parse(&d, &opts(), Pdb::InMemory(b"")));
        assert!(msg.contains("no CodeView (RSDS) debug record"), "{msg}");
    }

    /// Without a PDB (none given, none beside it) the image is read as a
    /// stripped one; this one has neither unwind data nor exports, so
    /// there is nothing to find functions from, and the message says what
    /// to do.
    #[test]
    fn no_pdb_and_nothing_to_read_without_one() {
        let d = image();
        let msg = message(parse(&d, &opts(), Pdb::FromDisk));
        assert_eq!(
            msg,
            "/nonexistent/test.dll: no symbols: no PDB was given and none is beside the image (looked for /nonexistent/test.pdb), and without one there is nothing to find functions from: no unwind data (.pdata) and no exported code; pass its PDB with --pdb"
        );
    }

    #[test]
    fn other_machines_are_refused() {
        for (machine, name) in [
            (pe::IMAGE_FILE_MACHINE_I386, "0x14c (i386)"),
            (pe::IMAGE_FILE_MACHINE_ARMNT, "0x1c4 (ARMNT, 32-bit ARM)"),
            (pe::IMAGE_FILE_MACHINE_ARM64EC, "0xa641 (ARM64EC)"),
            (0x1234, "0x1234 (unrecognised)"),
        ] {
            let mut d = image();
            put16(&mut d, 0x44, machine);
            match parse(&d, &opts(), Pdb::FromDisk) {
                Err(Error::UnsupportedMachine { machine, .. }) => assert_eq!(machine, name),
                other => panic!("{:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn pe32_is_refused() {
        let mut d = image();
        put16(&mut d, OPT, PE32_MAGIC);
        let msg = message(parse(&d, &opts(), Pdb::FromDisk));
        assert!(
            msg.contains("malformed PE image") && msg.contains("PE32"),
            "{msg}"
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let d = image();
        for n in 0..d.len() {
            let msg = message(parse(&d[..n], &opts(), Pdb::FromDisk));
            assert!(msg.starts_with("/nonexistent/test.dll: "), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn garbage_after_mz_is_an_error() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for len in [2usize, 3, 63, 64, 65, 200, 0x150, 0x800, 0x2000] {
            for _ in 0..50 {
                let mut d: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect();
                d[0..2].copy_from_slice(b"MZ");
                if len > 0x40 && state & 1 == 0 {
                    // Sometimes a plausible e_lfanew, to get further in.
                    put32(&mut d, E_LFANEW_OFFSET, 0x40);
                }
                assert!(parse(&d, &opts(), Pdb::FromDisk).is_err());
            }
        }
    }

    #[test]
    fn damaged_image_headers() {
        let mut d = image();
        put32(&mut d, E_LFANEW_OFFSET, 0xffff_fff0);
        assert!(message(parse(&d, &opts(), Pdb::FromDisk)).contains("e_lfanew"));

        let mut d = image();
        d[0x40] = b'X';
        assert!(message(parse(&d, &opts(), Pdb::FromDisk)).contains("no PE signature"));

        let mut d = image();
        put16(&mut d, OPT, 0x107);
        assert!(message(parse(&d, &opts(), Pdb::FromDisk)).contains("optional header magic 0x107"));

        let mut d = image();
        put32(&mut d, SECTIONS + 2 * 40 + 20, 0x10_0000);
        let msg = message(parse(&d, &opts(), Pdb::FromDisk));
        assert!(
            msg.contains("`.reloc`") && msg.contains("past the end"),
            "{msg}"
        );
    }

    #[test]
    fn section_layout_is_checked() {
        // .data moved up: a gap after .text.
        let mut d = image();
        put32(&mut d, SECTIONS + 40 + 12, 0x3000);
        let msg = message(parse(&d, &opts(), Pdb::FromDisk));
        assert!(
            msg.contains("section 2 `.data` starts at RVA 0x3000, but section 1 `.text` (0x1000..0x1010) ends at 0x2000 once aligned"),
            "{msg}"
        );
        // .text grown into .data.
        let mut d = image();
        put32(&mut d, SECTIONS + 8, 0x1001);
        let msg = message(parse(&d, &opts(), Pdb::FromDisk));
        assert!(msg.contains("section 2 `.data` starts at RVA 0x2000, but section 1 `.text` (0x1000..0x2001) ends at 0x3000"), "{msg}");
        // Not aligned.
        let mut d = image();
        put32(&mut d, SECTIONS + 12, 0x1010);
        assert!(message(parse(&d, &opts(), Pdb::FromDisk))
            .contains("not a multiple of SectionAlignment 0x1000"));
        // Past SizeOfImage.
        let mut d = image();
        put32(&mut d, OPT + 56, 0x3008);
        let msg = message(parse(&d, &opts(), Pdb::FromDisk));
        assert!(
            msg.contains("section 3 `.reloc` (0x3000..0x3010) extends past SizeOfImage 0x3008"),
            "{msg}"
        );
        // A section name with a terminal escape in it is escaped.
        let mut d = image();
        d[SECTIONS..SECTIONS + 8].copy_from_slice(b"\x1b]0;x\x07\n\0");
        let file = PeFile64::parse(&d[..]).unwrap();
        let sections = read_sections(&file, &d, Path::new("t")).unwrap();
        assert_eq!(sections[0].name, "\\x1b]0;x\\x07\\x0a");
    }

    #[test]
    fn unknown_relocation_type() {
        let mut d = image();
        put16(&mut d, RELOC_FILE + 8, 5 << 12);
        let msg = message(parse(&d, &opts(), Pdb::FromDisk));
        assert!(msg.contains("has type 5"), "{msg}");
    }

    #[test]
    fn relocation_outside_file_backed_bytes() {
        let mut d = image();
        put32(&mut d, RELOC_FILE, 0x9000);
        let msg = message(parse(&d, &opts(), Pdb::FromDisk));
        assert!(msg.contains("outside the file-backed bytes"), "{msg}");
        // The last bytes of a section: an 8-byte value would run past them.
        let mut d = image();
        put16(
            &mut d,
            RELOC_FILE + 8,
            (pe::IMAGE_REL_BASED_DIR64 << 12) | 0xc,
        );
        let msg = message(parse(&d, &opts(), Pdb::FromDisk));
        assert!(msg.contains("outside the file-backed bytes"), "{msg}");
    }

    #[test]
    fn relocation_below_image_base() {
        let mut d = image();
        put64(&mut d, DATA_FILE, 0x1000);
        let msg = message(parse(&d, &opts(), Pdb::FromDisk));
        assert!(msg.contains("below the image base"), "{msg}");
    }

    #[test]
    fn highlow_relocation() {
        let mut d = image();
        put16(&mut d, RELOC_FILE + 8, pe::IMAGE_REL_BASED_HIGHLOW << 12);
        put32(&mut d, DATA_FILE, 0x8000_1000);
        let file = PeFile64::parse(&d[..]).unwrap();
        let sections = read_sections(&file, &d, Path::new("t")).unwrap();
        let relocs = read_relocations(&file, &d, &sections, IMAGE_BASE, Path::new("t")).unwrap();
        assert_eq!(relocs[0].width, 4);
        assert_eq!(relocs[0].target, RelocTarget::Rva(0x1000));
    }
}

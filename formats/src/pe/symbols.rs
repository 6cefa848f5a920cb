//! Functions and data objects from the PDB.
//!
//! The PDB is checked against the image first: its GUID (PDB information
//! stream) and its age must equal the image's CodeView record. lld writes the
//! CodeView age into both the PDB information stream and the DBI stream; the
//! DBI age is the one a linker never bumps afterwards, so it is the one
//! compared (the information-stream age only when the DBI stream records
//! none).
//!
//! Functions are the procedure records of every module stream. Data objects
//! are the `S_GDATA32`/`S_LDATA32` records of the module streams and of the
//! global symbol stream, deduplicated by name and address. Addresses in the
//! PDB are `section:offset` with a 1-based section number; they are turned
//! into RVAs through the image's section table (lld writes no OMAP, so the
//! PDB's sections are the image's; a PDB with an OMAP is refused).
//!
//! # No panics
//!
//! The `pdb` crate is used for the MSF container only: [`PDB::open`] and
//! [`PDB::raw_stream`]. Its MSF layer checks every page number it reads
//! against the header, and its only assertions check that the source
//! returned the bytes asked for, which [`MemSource`] always does (or
//! fails); its arithmetic is on `u32` values widened to 64-bit `usize`,
//! which cannot overflow. The superblock is checked here before the crate
//! sees it. Everything inside the streams (DBI header, module list, section
//! contributions, symbol records, types) is decoded by this crate's own
//! checked code ([`super::streams`], [`TypeTable`]), not by the crate's
//! parsers, some of which assert or index unchecked on damaged input. So
//! there is no panic to catch, and none is caught.
//!
//! # Which file is wrong
//!
//! A PDB record that places a function, data object or section
//! contribution outside the image's section is a damaged PDB, unless the
//! PDB's own copy of the section headers (written by the linker with the
//! image) says that section was larger or elsewhere and the record fits
//! that copy: then the image's section table is what was damaged, and the
//! error names the image.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use pdb::{StreamIndex, PDB};

use super::layouts;
use super::source::MemSource;
use super::streams::{self, Module, RecordedSection, NO_STREAM};
use super::types::TypeTable;
use super::SectionInfo;
use crate::error::{Error, Result};
use crate::image::{
    guid_to_string, CodeView, DataObject, Extent, Function, FunctionLine, Visibility,
};

/// What [`Error::Malformed`] says it was reading when the PDB is damaged.
const WHAT_PDB: &str = "PDB";

/// Size of the MSF 7.00 superblock fields read here.
const MSF7_HEADER: usize = 56;
/// Block sizes an MSF 7.00 file may use (LLVM accepts the same).
const MSF_BLOCK_SIZES: [u64; 7] = [512, 1024, 2048, 4096, 8192, 16384, 32768];

/// The PDB information stream's fixed index.
const INFO_STREAM: u16 = 1;
/// The type stream's fixed index.
const TPI_STREAM: u16 = 2;
/// The DBI stream's fixed index.
const DBI_STREAM: u16 = 3;
/// The item (id) stream's fixed index.
const IPI_STREAM: u16 = 4;

/// `S_LPROC32`.
const S_LPROC32: u16 = 0x110f;
/// `S_GPROC32`.
const S_GPROC32: u16 = 0x1110;
/// `S_LPROC32_ID`.
const S_LPROC32_ID: u16 = 0x1146;
/// `S_GPROC32_ID`.
const S_GPROC32_ID: u16 = 0x1147;
/// `S_LPROC32_DPC`.
const S_LPROC32_DPC: u16 = 0x1155;
/// `S_LPROC32_DPC_ID`.
const S_LPROC32_DPC_ID: u16 = 0x1156;
/// `S_LDATA32`.
const S_LDATA32: u16 = 0x110c;
/// `S_GDATA32`.
const S_GDATA32: u16 = 0x110d;
/// `S_PUB32`.
const S_PUB32: u16 = 0x110e;
/// `CVPSF_FUNCTION` in an `S_PUB32` record's flags.
pub(super) const PUBLIC_FUNCTION: u32 = 0x2;

/// Everything the PDB reader needs from the image.
pub(super) struct Request<'a> {
    /// The PDB's bytes.
    pub(super) pdb: &'a [u8],
    /// The PDB's path, for messages.
    pub(super) pdb_path: &'a Path,
    /// The image's path, for messages.
    pub(super) image_path: &'a Path,
    /// The image's CodeView record, which the PDB must match.
    pub(super) codeview: &'a CodeView,
    /// The image's COFF machine type.
    pub(super) machine: u16,
    /// The image's sections in section-table order.
    pub(super) sections: &'a [SectionInfo],
    /// Export names by RVA.
    pub(super) exports: &'a HashMap<u64, Vec<&'a str>>,
}

/// What the PDB yields.
pub(super) struct Found {
    /// Every procedure.
    pub(super) functions: Vec<Function>,
    /// Every static data object.
    pub(super) data: Vec<DataObject>,
    /// Start and end RVAs of every section contribution.
    pub(super) boundaries: Vec<u64>,
    /// The first line of every function line table (see
    /// [`crate::image::FunctionLine`]).
    pub(super) lines: Vec<FunctionLine>,
    /// Struct, union and class layouts and the types each function uses.
    pub(super) types: crate::types::Found,
    /// Every public symbol (`S_PUB32`) that lies in a section, in record
    /// order; [`super::publics`] makes functions of some of them.
    pub(super) publics: Vec<Public>,
    /// The section contributions, sorted by start, with the name of the
    /// module that made each.
    pub(super) contributions: Vec<NamedContribution>,
}

/// A public symbol (`S_PUB32`), placed in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Public {
    /// The symbol name.
    pub(super) name: String,
    /// Its RVA.
    pub(super) rva: u64,
    /// Index into the section table.
    pub(super) section: usize,
    /// Its `CV_PUBSYMFLAGS` ([`PUBLIC_FUNCTION`]).
    pub(super) flags: u32,
}

/// A section contribution, `[start, end)` in RVAs, and the module that
/// made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct NamedContribution {
    /// First RVA.
    pub(super) start: u64,
    /// RVA just past it.
    pub(super) end: u64,
    /// The module's name.
    pub(super) module: String,
}

/// A [`Error::Malformed`] about the PDB at `path`.
fn malformed(path: &Path, detail: impl Into<String>) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        what: WHAT_PDB,
        detail: detail.into(),
    }
}

/// Check the MSF superblock: the signature, a block size MSF allows, and
/// that the file holds all the blocks it declares and a stream directory
/// no larger than itself.
fn check_msf_header(data: &[u8], path: &Path) -> Result<()> {
    crate::read::check_pdb_magic(path, data.get(..32).unwrap_or(data))?;
    let field = |offset: usize| -> Option<u64> {
        let end = offset.checked_add(4)?;
        let b: [u8; 4] = data.get(offset..end)?.try_into().ok()?;
        Some(u64::from(u32::from_le_bytes(b)))
    };
    let (Some(block_size), Some(blocks), Some(directory)) = (field(32), field(40), field(44))
    else {
        return Err(malformed(
            path,
            format!(
                "the file is truncated: {} bytes, shorter than the {MSF7_HEADER}-byte MSF header",
                data.len()
            ),
        ));
    };
    if !MSF_BLOCK_SIZES.contains(&block_size) {
        return Err(malformed(
            path,
            format!("the MSF header declares a block size of {block_size} bytes (MSF allows 512 to 32768, a power of two)"),
        ));
    }
    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
    match block_size.checked_mul(blocks) {
        Some(need) if need <= len => {}
        _ => {
            return Err(malformed(
                path,
                format!(
                    "the file is truncated: the MSF header declares {blocks} blocks of {block_size} bytes but the file has {len} bytes"
                ),
            ))
        }
    }
    if directory > len {
        return Err(malformed(
            path,
            format!(
                "the MSF stream directory is {directory} bytes, larger than the {len}-byte file"
            ),
        ));
    }
    Ok(())
}

/// What an error of the `pdb` crate's MSF layer means for this file.
fn msf_error(e: pdb::Error) -> String {
    match e {
        pdb::Error::StreamNotFound(n) => {
            format!("the MSF stream directory has no stream {n}")
        }
        pdb::Error::UnexpectedEof => {
            "the MSF stream directory ends before the stream's page list".to_owned()
        }
        pdb::Error::PageReferenceOutOfRange(page) => {
            format!(
                "the MSF stream directory names block {page}, past the blocks the file declares"
            )
        }
        other => other.to_string(),
    }
}

/// A stream's bytes, or `None` for [`NO_STREAM`].
fn stream<'s>(
    pdb: &mut PDB<'s, MemSource<'s>>,
    index: u16,
    path: &Path,
    what: &str,
) -> Result<Option<impl std::ops::Deref<Target = [u8]> + 's>> {
    pdb.raw_stream(StreamIndex(index))
        .map_err(|e| malformed(path, format!("{what} (stream {index}): {}", msf_error(e))))
}

/// A data symbol before its size is known.
struct Candidate {
    /// The symbol name.
    name: String,
    /// Its RVA.
    rva: u64,
    /// Index into the section table.
    section: usize,
    /// Where it is, as the PDB says it: section number and offset.
    at: (u16, u32),
    /// The record, for messages.
    record: String,
    /// Its type, in the type stream.
    type_index: u32,
    /// The module that defines it, when known.
    unit: Option<String>,
    /// `S_LDATA32` (rather than `S_GDATA32`).
    local: bool,
}

/// Read functions and data objects from the PDB of [`Request`].
pub(super) fn read(req: &Request<'_>) -> Result<Found> {
    let path = req.pdb_path;
    check_msf_header(req.pdb, path)?;
    let mut pdb = PDB::open(MemSource::new(req.pdb)).map_err(|e| {
        malformed(
            path,
            format!("cannot open the MSF container: {}", msf_error(e)),
        )
    })?;

    // Identity first: a PDB of another build is refused before anything else.
    let info = stream(&mut pdb, INFO_STREAM, path, "PDB information stream")?
        .ok_or_else(|| malformed(path, "no PDB information stream"))?;
    let info = streams::info(&info).map_err(|e| malformed(path, e))?;
    let dbi_stream = stream(&mut pdb, DBI_STREAM, path, "DBI stream")?
        .ok_or_else(|| malformed(path, "no DBI stream"))?;
    let dbi = streams::dbi(&dbi_stream).map_err(|e| malformed(path, e))?;
    let found_age = if dbi.age == 0 { info.age } else { dbi.age };
    if info.guid != req.codeview.guid || found_age != req.codeview.age {
        return Err(Error::PdbMismatch {
            pdb: path.to_path_buf(),
            image: req.image_path.to_path_buf(),
            expected_guid: req.codeview.guid_string(),
            expected_age: req.codeview.age,
            found_guid: guid_to_string(&info.guid),
            found_age,
        });
    }

    // An ARM64EC image says x86-64 in its header; without a load
    // configuration (CHPE metadata) only its PDB tells.
    if let m @ (object::pe::IMAGE_FILE_MACHINE_ARM64EC | object::pe::IMAGE_FILE_MACHINE_ARM64X) =
        dbi.machine
    {
        return Err(Error::UnsupportedMachine {
            path: req.image_path.to_path_buf(),
            machine: format!(
                "{}, built as {} (its PDB records that machine)",
                super::machine_name(req.machine),
                super::machine_name(m)
            ),
        });
    }
    if dbi.omap_stream().is_some() {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            detail: "the PDB carries an OMAP address map (its image was rewritten after linking), which this reader does not apply".into(),
        });
    }

    let recorded = match dbi.section_header_stream() {
        Some(index) => match stream(&mut pdb, index, path, "section header stream")? {
            Some(s) => streams::section_headers(&s).map_err(|e| malformed(path, e))?,
            None => Vec::new(),
        },
        None => Vec::new(),
    };
    let layout = Layout {
        image: req.sections,
        recorded,
        image_path: req.image_path,
        pdb_path: path,
    };

    let tpi = stream(&mut pdb, TPI_STREAM, path, "type stream (TPI)")?;
    let types = match &tpi {
        Some(s) => TypeTable::parse(s).map_err(|e| malformed(path, e))?,
        None => TypeTable::empty(),
    };
    // The item stream: only procedures' `_ID` records and inline sites
    // refer to it, so a PDB without one just has none of those.
    let ipi = match pdb.raw_stream(StreamIndex(IPI_STREAM)) {
        Err(pdb::Error::StreamNotFound(_)) => None,
        other => other.map_err(|e| {
            malformed(
                path,
                format!("id stream (IPI) (stream {IPI_STREAM}): {}", msf_error(e)),
            )
        })?,
    };
    let ids = match &ipi {
        Some(s) => TypeTable::parse_named(s, "id stream (IPI)").map_err(|e| malformed(path, e))?,
        None => TypeTable::empty(),
    };
    let mut type_reader = layouts::Reader::new(&types, &ids, req.sections);

    let modules = dbi.modules().map_err(|e| malformed(path, e))?;
    check_module_streams(&modules, path)?;
    let mut functions = Vec::new();
    let mut lines = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    for (number, module) in modules.iter().enumerate() {
        if module.stream == NO_STREAM {
            continue;
        }
        let where_ = format!("module {number} `{}`", module.name);
        let Some(bytes) = stream(&mut pdb, module.stream, path, &where_)? else {
            continue;
        };
        let mut records = streams::module_records(&bytes, module.symbols_size)
            .map_err(|e| malformed(path, format!("{where_}: {e}")))?;
        // Lines are optional: damaged line tables cost this module its
        // lines (its functions are then never taken for `__LINE__`-only
        // changes), not the read.
        if let Ok(first) = streams::first_lines(&bytes, module) {
            lines.extend(first.iter().filter_map(|f| line_rva(req.sections, f)));
        }
        if let Some(r) = type_reader.as_mut() {
            r.module();
        }
        while let Some(record) = records
            .next_record()
            .map_err(|e| malformed(path, format!("{where_}: {e}")))?
        {
            let at = || format!("{where_}: symbol record at offset {:#x}", record.offset);
            if let Some(r) = type_reader.as_mut() {
                r.symbol(record.kind, record.body)
                    .map_err(|e| malformed(path, format!("{}: {e}", at())))?;
            }
            match record.kind {
                S_LPROC32 | S_GPROC32 | S_LPROC32_ID | S_GPROC32_ID | S_LPROC32_DPC
                | S_LPROC32_DPC_ID => {
                    let proc_ = streams::procedure(record.body).ok_or_else(|| {
                        malformed(path, format!("{}: the procedure record is truncated", at()))
                    })?;
                    // A procedure at section 0 was discarded by the linker:
                    // it has no code in the image (llvm-pdbutil shows it at
                    // 0000:0000), so it is not a function of the image.
                    let Some((rva, _)) = layout.place(
                        &Placed {
                            what: "function",
                            name: &proc_.name,
                            section: proc_.section,
                            offset: proc_.offset,
                            len: u64::from(proc_.len),
                        },
                        &at,
                    )?
                    else {
                        continue;
                    };
                    let global = matches!(record.kind, S_GPROC32 | S_GPROC32_ID);
                    let visibility = if is_exported(req.exports, rva, &proc_.name) {
                        Visibility::Exported
                    } else if global {
                        Visibility::Global
                    } else {
                        Visibility::Local
                    };
                    functions.push(Function {
                        name: proc_.name,
                        rva,
                        size: u64::from(proc_.len),
                        unit: Some(module.name.clone()),
                        visibility,
                        extent: Extent::Symbol,
                    });
                }
                S_LDATA32 | S_GDATA32 => {
                    if let Some(c) =
                        data_candidate(&layout, record.kind, record.body, Some(&module.name), &at)?
                    {
                        candidates.push(c);
                    }
                }
                // Thread-local variables (S_LTHREAD32, S_GTHREAD32) are
                // offsets into the TLS block, not RVAs: not data objects
                // of the image. Everything else places nothing.
                _ => {}
            }
        }
    }

    // The global symbol stream holds the global variables (lld moves them
    // out of the module streams), copies of the module-local ones, and the
    // public symbols (`S_PUB32`: every external symbol, with or without
    // debug information).
    let mut publics = Vec::new();
    if dbi.symbol_records != NO_STREAM {
        if let Some(globals) = stream(&mut pdb, dbi.symbol_records, path, "global symbol stream")? {
            let mut records = streams::records(&globals);
            while let Some(record) = records
                .next_record()
                .map_err(|e| malformed(path, format!("global symbol stream: {e}")))?
            {
                let at = || {
                    format!(
                        "global symbol stream: symbol record at offset {:#x}",
                        record.offset
                    )
                };
                if matches!(record.kind, S_LDATA32 | S_GDATA32) {
                    if let Some(c) = data_candidate(&layout, record.kind, record.body, None, &at)? {
                        candidates.push(c);
                    }
                } else if record.kind == S_PUB32 {
                    if let Some(p) = public(&layout, record.body, &at)? {
                        publics.push(p);
                    }
                }
            }
        }
    }

    // Deduplicate by name and address, keeping the first record: module
    // records come first and know their unit.
    let mut seen = HashSet::new();
    candidates.retain(|c| seen.insert((c.name.clone(), c.rva)));

    // Global variables found only in the global stream get their unit from
    // the section contributions: the module whose contribution holds them.
    let contributions = contributions(&dbi, &layout, modules.len())?;
    for c in candidates.iter_mut().filter(|c| c.unit.is_none()) {
        c.unit = contribution_at(&contributions, c.rva)
            .and_then(|m| modules.get(m))
            .map(|m| m.name.clone());
    }

    let data = sized(req, &layout, &types, &functions, candidates)?;
    let boundaries = contributions
        .iter()
        .flat_map(|&(start, end, _)| [start, end])
        .collect();
    let types = match type_reader {
        Some(r) => r.finish().map_err(|e| malformed(path, e))?,
        None => crate::types::Found::absent(),
    };
    let contributions = contributions
        .iter()
        .map(|&(start, end, m)| NamedContribution {
            start,
            end,
            module: modules.get(m).map(|m| m.name.clone()).unwrap_or_default(),
        })
        .collect();
    Ok(Found {
        functions,
        data,
        boundaries,
        lines,
        types,
        publics,
        contributions,
    })
}

/// A line table's first line at its RVA, when its `section:offset` lies in
/// one of the image's sections (a table elsewhere places no function).
fn line_rva(sections: &[SectionInfo], f: &streams::FirstLine) -> Option<FunctionLine> {
    let s = sections.get(usize::from(f.section).checked_sub(1)?)?;
    let offset = u64::from(f.offset);
    (offset < s.size).then_some(FunctionLine {
        rva: s.rva.checked_add(offset)?,
        line: f.line,
    })
}

/// Refuse a module list in which two modules claim the same symbol stream:
/// every module has its own, and a crafted list that repeats one large
/// stream would make the reader copy it again and again.
fn check_module_streams(modules: &[Module], path: &Path) -> Result<()> {
    let mut owner: HashMap<u16, usize> = HashMap::new();
    for (number, m) in modules.iter().enumerate() {
        if m.stream == NO_STREAM {
            continue;
        }
        if let Some(first) = owner.insert(m.stream, number) {
            return Err(malformed(
                path,
                format!(
                    "DBI module list: modules {first} and {number} (`{}`) both claim symbol stream {}",
                    m.name, m.stream
                ),
            ));
        }
    }
    Ok(())
}

/// Something a PDB record places in a section.
struct Placed<'a> {
    /// What it is: `function`, `data object`, `section contribution`.
    what: &'a str,
    /// Its name.
    name: &'a str,
    /// 1-based section number (0: none).
    section: u16,
    /// Offset in the section.
    offset: u32,
    /// Length in bytes.
    len: u64,
}

impl Placed<'_> {
    /// `function `f``, or just `section contribution` for a nameless one.
    fn describe(&self) -> String {
        if self.name.is_empty() {
            self.what.to_owned()
        } else {
            format!("{} `{}`", self.what, self.name)
        }
    }

    /// Whether `[offset, offset + len)` fits in a section of `size` bytes.
    fn fits(&self, size: u64) -> bool {
        u64::from(self.offset)
            .checked_add(self.len)
            .is_some_and(|end| end <= size)
    }
}

/// The image's section table, and the linker's copy of it in the PDB.
struct Layout<'a> {
    /// The image's sections, in table order.
    image: &'a [SectionInfo],
    /// The PDB's copy (empty when it has none).
    recorded: Vec<RecordedSection>,
    /// The image, for messages.
    image_path: &'a Path,
    /// The PDB, for messages.
    pdb_path: &'a Path,
}

impl Layout<'_> {
    /// The RVA and section-table index of what a record places, or `None`
    /// for section 0 (discarded by the linker). Anything that does not fit
    /// in its section is an error that names the damaged file (see the
    /// module documentation).
    fn place(&self, p: &Placed<'_>, record: &dyn Fn() -> String) -> Result<Option<(u64, usize)>> {
        if p.section == 0 {
            return Ok(None);
        }
        let index = usize::from(p.section).saturating_sub(1);
        let section = self.image.get(index);
        if let Some(s) = section.filter(|s| p.fits(s.size)) {
            return match s.rva.checked_add(u64::from(p.offset)) {
                Some(rva) => Ok(Some((rva, index))),
                None => Err(malformed(
                    self.pdb_path,
                    format!(
                        "{}: {} has an address that overflows",
                        record(),
                        p.describe()
                    ),
                )),
            };
        }
        if let Some(r) = self.recorded.get(index).filter(|r| p.fits(r.size)) {
            let differs = section.is_none_or(|s| s.rva != r.rva || s.size != r.size);
            if differs {
                return Err(self.image_damaged(index, r, p));
            }
        }
        let detail = match section {
            None => format!(
                "{}: {} is in section {}, but the image has {} sections",
                record(),
                p.describe(),
                p.section,
                self.image.len()
            ),
            Some(s) => format!(
                "{}: {} ({:#x}, {} bytes) extends past its section {} ({:#x}..{:#x})",
                record(),
                p.describe(),
                s.rva.saturating_add(u64::from(p.offset)),
                p.len,
                s.name,
                s.rva,
                s.rva.saturating_add(s.size)
            ),
        };
        Err(malformed(self.pdb_path, detail))
    }

    /// The error for an image whose section table disagrees with the copy
    /// the linker wrote into the (matching) PDB, where a record fits the copy.
    fn image_damaged(&self, index: usize, r: &RecordedSection, p: &Placed<'_>) -> Error {
        let number = index.saturating_add(1);
        let place = format!(
            "places {} ({:#x}, {} bytes) inside it",
            p.describe(),
            r.rva.saturating_add(u64::from(p.offset)),
            p.len
        );
        let detail = match self.image.get(index) {
            Some(s) => format!(
                "section {number} `{}` is {:#x}..{:#x}, but its PDB {} recorded it as {:#x}..{:#x} at link time and {place}: the image's section table is damaged",
                s.name,
                s.rva,
                s.rva.saturating_add(s.size),
                self.pdb_path.display(),
                r.rva,
                r.rva.saturating_add(r.size),
            ),
            None => format!(
                "the image has {} sections, but its PDB {} recorded section {number} `{}` ({:#x}..{:#x}) at link time and {place}: the image's section table is damaged",
                self.image.len(),
                self.pdb_path.display(),
                r.name,
                r.rva,
                r.rva.saturating_add(r.size),
            ),
        };
        Error::Malformed {
            path: self.image_path.to_path_buf(),
            what: super::WHAT_IMAGE,
            detail,
        }
    }
}

/// Whether an export at `rva` names this symbol: the same name, or a
/// decorated C++ name (`?...`), since the PDB records C++ names undecorated.
pub(super) fn is_exported(exports: &HashMap<u64, Vec<&str>>, rva: u64, name: &str) -> bool {
    exports
        .get(&rva)
        .is_some_and(|names| names.iter().any(|n| *n == name || n.starts_with('?')))
}

/// A data candidate from an `S_GDATA32`/`S_LDATA32` record, or `None` for a
/// record at section 0 (discarded by the linker).
fn data_candidate(
    layout: &Layout<'_>,
    kind: u16,
    body: &[u8],
    unit: Option<&str>,
    at: &dyn Fn() -> String,
) -> Result<Option<Candidate>> {
    let data = streams::data(body).ok_or_else(|| {
        malformed(
            layout.pdb_path,
            format!("{}: the data record is truncated", at()),
        )
    })?;
    let placed = Placed {
        what: "data object",
        name: &data.name,
        section: data.section,
        offset: data.offset,
        len: 0,
    };
    let Some((rva, section)) = layout.place(&placed, at)? else {
        return Ok(None);
    };
    Ok(Some(Candidate {
        rva,
        section,
        at: (data.section, data.offset),
        record: at(),
        type_index: data.type_index,
        unit: unit.map(str::to_owned),
        local: kind == S_LDATA32,
        name: data.name,
    }))
}

/// A public symbol from an `S_PUB32` record, or `None` for one at section 0
/// (an absolute symbol). One outside its section is an error that names
/// the damaged file ([`Layout::place`]).
fn public(layout: &Layout<'_>, body: &[u8], at: &dyn Fn() -> String) -> Result<Option<Public>> {
    let record = streams::public(body).ok_or_else(|| {
        malformed(
            layout.pdb_path,
            format!("{}: the public symbol record is truncated", at()),
        )
    })?;
    let placed = Placed {
        what: "public symbol",
        name: &record.name,
        section: record.section,
        offset: record.offset,
        len: 0,
    };
    let Some((rva, section)) = layout.place(&placed, at)? else {
        return Ok(None);
    };
    Ok(Some(Public {
        name: record.name,
        rva,
        section,
        flags: record.flags,
    }))
}

/// A section contribution: `[start, end)` in RVAs, and its module number.
type Contribution = (u64, u64, usize);

/// The DBI section contributions, as RVA ranges sorted by start. Ones at
/// section 0 place nothing and are left out; one outside its section, or
/// that names a module the DBI stream does not list, is an error.
fn contributions(
    dbi: &streams::Dbi<'_>,
    layout: &Layout<'_>,
    modules: usize,
) -> Result<Vec<Contribution>> {
    let path = layout.pdb_path;
    let mut out = Vec::new();
    let list = dbi.contributions().map_err(|e| malformed(path, e))?;
    for (i, c) in list.iter().enumerate() {
        let record = || format!("DBI section contribution {i}");
        let placed = Placed {
            what: "section contribution",
            name: "",
            section: c.section,
            offset: c.offset,
            len: u64::from(c.size),
        };
        let Some((start, _)) = layout.place(&placed, &record)? else {
            continue;
        };
        let module = usize::from(c.module);
        if module >= modules {
            return Err(malformed(
                path,
                format!(
                    "{}: it names module {module}, but the DBI stream lists {modules} modules",
                    record()
                ),
            ));
        }
        let end = start.saturating_add(u64::from(c.size));
        if end > start {
            out.push((start, end, module));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The module whose contribution holds `rva`.
fn contribution_at(contributions: &[Contribution], rva: u64) -> Option<usize> {
    let after = contributions.partition_point(|c| c.0 <= rva);
    let &(_, end, module) = contributions.get(after.checked_sub(1)?)?;
    (rva < end).then_some(module)
}

/// Give every candidate its size and visibility.
///
/// The size comes from the type record ([`TypeTable::size_of`]); an object
/// whose type says it extends past its section is refused (the error names
/// the damaged file, see [`Layout::place`]). When the type does not give a
/// size (an unknown or damaged record, a forward reference with no
/// unambiguous definition, a zero size) the size falls back to the gap up
/// to the next function or data object in the same section, capped by the
/// section's end.
fn sized(
    req: &Request<'_>,
    layout: &Layout<'_>,
    types: &TypeTable<'_>,
    functions: &[Function],
    candidates: Vec<Candidate>,
) -> Result<Vec<DataObject>> {
    let mut starts: Vec<u64> = functions
        .iter()
        .map(|f| f.rva)
        .chain(candidates.iter().map(|c| c.rva))
        .collect();
    starts.sort_unstable();
    starts.dedup();

    let mut out = Vec::with_capacity(candidates.len());
    for c in candidates {
        let Some(section) = req.sections.get(c.section) else {
            continue;
        };
        let section_end = section.rva.saturating_add(section.size);
        let size = match types.size_of(c.type_index) {
            Some(size) => {
                let record = || c.record.clone();
                layout.place(
                    &Placed {
                        what: "data object",
                        name: &c.name,
                        section: c.at.0,
                        offset: c.at.1,
                        len: size,
                    },
                    &record,
                )?;
                size
            }
            None => {
                let next = starts.partition_point(|&s| s <= c.rva);
                let limit = starts
                    .get(next)
                    .copied()
                    .unwrap_or(section_end)
                    .min(section_end);
                limit.saturating_sub(c.rva)
            }
        };
        let visibility = if is_exported(req.exports, c.rva, &c.name) {
            Visibility::Exported
        } else if c.local {
            Visibility::Local
        } else {
            Visibility::Global
        };
        out.push(DataObject {
            name: c.name,
            rva: c.rva,
            size,
            section: section.name.clone(),
            unit: c.unit,
            visibility,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::MSF7_MAGIC;

    fn msf(block_size: u32, blocks: u32, len: usize) -> Vec<u8> {
        let mut d = vec![0u8; len.max(MSF7_HEADER)];
        d[..MSF7_MAGIC.len()].copy_from_slice(MSF7_MAGIC);
        d[32..36].copy_from_slice(&block_size.to_le_bytes());
        d[40..44].copy_from_slice(&blocks.to_le_bytes());
        d.truncate(len);
        d
    }

    fn detail(r: Result<()>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn msf_header_checks() {
        let p = Path::new("x.pdb");
        assert!(check_msf_header(&msf(4096, 2, 8192), p).is_ok());
        assert!(detail(check_msf_header(b"\x7fELF", p)).contains("not a PDB file"));
        assert!(detail(check_msf_header(crate::read::MSF2_MAGIC, p)).contains("MSF 2.00"));
        let msg = detail(check_msf_header(&msf(4096, 2, 40), p));
        assert!(
            msg.starts_with("x.pdb: malformed PDB: the file is truncated"),
            "{msg}"
        );
        let msg = detail(check_msf_header(&msf(4096, 3, 8192), p));
        assert!(msg.contains("declares 3 blocks of 4096 bytes"), "{msg}");
        let msg = detail(check_msf_header(&msf(4097, 1, 8192), p));
        assert!(msg.contains("block size of 4097"), "{msg}");
        assert!(check_msf_header(&msf(u32::MAX, u32::MAX, 8192), p).is_err());
        let mut d = msf(4096, 2, 8192);
        d[44..48].copy_from_slice(&9000u32.to_le_bytes());
        assert!(detail(check_msf_header(&d, p)).contains("stream directory is 9000 bytes"));
    }

    #[test]
    fn contributions_by_rva() {
        let c = [
            (0x1000, 0x1010, 0),
            (0x1010, 0x1100, 1),
            (0x3000, 0x3040, 2),
        ];
        assert_eq!(contribution_at(&c, 0xfff), None);
        assert_eq!(contribution_at(&c, 0x1000), Some(0));
        assert_eq!(contribution_at(&c, 0x100f), Some(0));
        assert_eq!(contribution_at(&c, 0x1010), Some(1));
        assert_eq!(contribution_at(&c, 0x2000), None);
        assert_eq!(contribution_at(&c, 0x303f), Some(2));
        assert_eq!(contribution_at(&c, 0x3040), None);
    }

    #[test]
    fn export_matching() {
        let mut exports = HashMap::new();
        exports.insert(0x1000, vec!["f"]);
        exports.insert(0x2000, vec!["?g@ns@@YAHH@Z"]);
        assert!(is_exported(&exports, 0x1000, "f"));
        assert!(!is_exported(&exports, 0x1000, "other"));
        assert!(!is_exported(&exports, 0x1010, "f"));
        assert!(is_exported(&exports, 0x2000, "ns::g"));
    }

    fn text(size: u64) -> SectionInfo {
        SectionInfo {
            name: ".text".into(),
            rva: 0x1000,
            size,
        }
    }

    fn placed(section: u16, offset: u32, len: u64) -> Placed<'static> {
        Placed {
            what: "function",
            name: "f",
            section,
            offset,
            len,
        }
    }

    #[test]
    fn pdb_addresses() {
        let sections = [text(0x100)];
        let layout = Layout {
            image: &sections,
            recorded: Vec::new(),
            image_path: Path::new("x.dll"),
            pdb_path: Path::new("x.pdb"),
        };
        let rec = || "record".to_owned();
        let place = |p| layout.place(&p, &rec);
        assert_eq!(place(placed(1, 0x10, 0x20)).unwrap(), Some((0x1010, 0)));
        assert_eq!(place(placed(0, 0, 0)).unwrap(), None);
        // Zero-size at the very end fits; one byte more does not.
        assert_eq!(place(placed(1, 0x100, 0)).unwrap(), Some((0x1100, 0)));
        let msg = place(placed(1, 0xf0, 0x11)).unwrap_err().to_string();
        assert_eq!(
            msg,
            "x.pdb: malformed PDB: record: function `f` (0x10f0, 17 bytes) extends past its section .text (0x1000..0x1100)"
        );
        let msg = place(placed(2, 0, 0)).unwrap_err().to_string();
        assert_eq!(
            msg,
            "x.pdb: malformed PDB: record: function `f` is in section 2, but the image has 1 sections"
        );
        assert!(place(placed(1, u32::MAX, u64::MAX)).is_err());
    }

    #[test]
    fn a_damaged_image_section_table_blames_the_image() {
        let sections = [text(0x10)];
        let layout = Layout {
            image: &sections,
            recorded: vec![RecordedSection {
                name: ".text".into(),
                rva: 0x1000,
                size: 0x1e7,
            }],
            image_path: Path::new("x.dll"),
            pdb_path: Path::new("x.pdb"),
        };
        let rec = || "record".to_owned();
        let msg = layout
            .place(&placed(1, 0x100, 0x20), &rec)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "x.dll: malformed PE image: section 1 `.text` is 0x1000..0x1010, but its PDB x.pdb recorded it as 0x1000..0x11e7 at link time and places function `f` (0x1100, 32 bytes) inside it: the image's section table is damaged"
        );
        // A record that fits neither is the PDB's fault.
        let msg = layout
            .place(&placed(1, 0x1e0, 0x20), &rec)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("x.pdb: malformed PDB: record: function `f`"),
            "{msg}"
        );
        // A missing section the PDB recorded.
        let layout = Layout {
            image: &[],
            ..layout
        };
        let msg = layout
            .place(&placed(1, 0, 4), &rec)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("x.dll: malformed PE image: the image has 0 sections, but its PDB x.pdb recorded section 1 `.text`"), "{msg}");
    }
}

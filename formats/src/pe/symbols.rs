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
//! PDB's sections are the image's).

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use pdb::{FallibleIterator, PdbInternalSectionOffset, StreamIndex, PDB};

use super::source::MemSource;
use super::types::TypeTable;
use super::SectionInfo;
use crate::error::{Error, Result};
use crate::image::{guid_to_string, CodeView, DataObject, Function, Visibility};

/// What [`Error::Malformed`] says it was reading when the PDB is damaged.
const WHAT_PDB: &str = "PDB";

/// Signature of an MSF 7.00 ("big MSF") file, which every modern PDB is.
const MSF7_MAGIC: &[u8] = b"Microsoft C/C++ MSF 7.00\r\n\x1a\x44\x53\x00\x00\x00";
/// Signature of the old MSF 2.00 format, which is not supported.
const MSF2_MAGIC: &[u8] = b"Microsoft C/C++ program database 2.00\r\n\x1a\x4a\x47";
/// Size of the MSF 7.00 superblock fields read here.
const MSF7_HEADER: usize = 56;

/// The type stream's fixed index.
const TPI_STREAM: u16 = 2;
/// The DBI stream's fixed index.
const DBI_STREAM: u16 = 3;
/// Offset of the machine type in the DBI stream header.
const DBI_MACHINE_OFFSET: usize = 58;

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
}

/// A [`Error::Malformed`] about the PDB at `path`.
fn malformed(path: &Path, detail: impl Into<String>) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        what: WHAT_PDB,
        detail: detail.into(),
    }
}

/// Read functions and data objects from the PDB of [`Request`].
///
/// The `pdb` crate is not free of assertions on damaged input. Its limits
/// are guarded before it is called where they are known (the MSF header is
/// checked here, [`MemSource`] bounds every read, and the type stream is
/// decoded by [`TypeTable`] instead); anything that still panics inside it
/// is caught and reported as a malformed PDB rather than taking the process
/// down.
pub(super) fn read(req: &Request<'_>) -> Result<Found> {
    check_msf_header(req.pdb, req.pdb_path)?;
    match catch_unwind(AssertUnwindSafe(|| read_checked(req))) {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown failure".to_owned());
            Err(malformed(
                req.pdb_path,
                format!("the PDB parser stopped on damaged data: {what}"),
            ))
        }
    }
}

/// Check the MSF superblock: the signature, and that the file holds all the
/// blocks it declares.
fn check_msf_header(data: &[u8], path: &Path) -> Result<()> {
    if data.starts_with(MSF2_MAGIC) {
        return Err(malformed(
            path,
            "an old MSF 2.00 PDB; only MSF 7.00 PDBs are supported",
        ));
    }
    if !data.starts_with(MSF7_MAGIC) {
        return Err(malformed(
            path,
            "not a PDB file: it lacks the MSF 7.00 signature",
        ));
    }
    let field = |offset: usize| -> Option<u64> {
        let end = offset.checked_add(4)?;
        let b: [u8; 4] = data.get(offset..end)?.try_into().ok()?;
        Some(u64::from(u32::from_le_bytes(b)))
    };
    let (Some(block_size), Some(blocks)) = (field(32), field(40)) else {
        return Err(malformed(
            path,
            format!(
                "the file is truncated: {} bytes, shorter than the {MSF7_HEADER}-byte MSF header",
                data.len()
            ),
        ));
    };
    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
    match block_size.checked_mul(blocks) {
        Some(need) if need <= len => Ok(()),
        _ => Err(malformed(
            path,
            format!(
                "the file is truncated: the MSF header declares {blocks} blocks of {block_size} bytes but the file has {len} bytes"
            ),
        )),
    }
}

/// A wrapper that turns a `pdb` error into a malformed-PDB error with context.
fn ctx<'a>(path: &'a Path, what: &'a str) -> impl Fn(pdb::Error) -> Error + 'a {
    move |e| malformed(path, format!("{what}: {e}"))
}

/// A data symbol before its size is known.
struct Candidate {
    /// The symbol name.
    name: String,
    /// Its RVA.
    rva: u64,
    /// Index into the section table.
    section: usize,
    /// Its type, in the type stream.
    type_index: u32,
    /// The module that defines it, when known.
    unit: Option<String>,
    /// `S_LDATA32` (rather than `S_GDATA32`).
    local: bool,
}

/// The work of [`read`], under its panic guard.
fn read_checked(req: &Request<'_>) -> Result<Found> {
    let path = req.pdb_path;
    let mut pdb = PDB::open(MemSource::new(req.pdb)).map_err(ctx(path, "cannot open the PDB"))?;

    // Identity first: a PDB of another build is refused before anything else.
    let info = pdb
        .pdb_information()
        .map_err(ctx(path, "PDB information stream"))?;
    let dbi = pdb.debug_information().map_err(ctx(path, "DBI stream"))?;
    let found_guid = info.guid.to_bytes_le();
    let found_age = dbi.age().unwrap_or(info.age);
    if found_guid != req.codeview.guid || found_age != req.codeview.age {
        return Err(Error::PdbMismatch {
            pdb: path.to_path_buf(),
            image: req.image_path.to_path_buf(),
            expected_guid: req.codeview.guid_string(),
            expected_age: req.codeview.age,
            found_guid: guid_to_string(&found_guid),
            found_age,
        });
    }

    // An ARM64EC image says x86-64 in its header; without a load
    // configuration (CHPE metadata) only its PDB tells.
    let dbi_raw = pdb
        .raw_stream(StreamIndex(DBI_STREAM))
        .map_err(ctx(path, "DBI stream"))?;
    let dbi_machine = dbi_raw.as_ref().and_then(|s| {
        let end = DBI_MACHINE_OFFSET.checked_add(2)?;
        let b = s.as_slice().get(DBI_MACHINE_OFFSET..end)?;
        Some(u16::from_le_bytes([*b.first()?, *b.get(1)?]))
    });
    drop(dbi_raw);
    if let Some(
        m @ (object::pe::IMAGE_FILE_MACHINE_ARM64EC | object::pe::IMAGE_FILE_MACHINE_ARM64X),
    ) = dbi_machine
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

    let tpi = pdb
        .raw_stream(StreamIndex(TPI_STREAM))
        .map_err(ctx(path, "type stream (TPI)"))?;
    let types = match &tpi {
        Some(stream) => TypeTable::parse(stream.as_slice()).map_err(|e| malformed(path, e))?,
        None => TypeTable::empty(),
    };

    let mut modules = Vec::new();
    let mut iter = dbi.modules().map_err(ctx(path, "DBI module list"))?;
    while let Some(module) = iter.next().map_err(ctx(path, "DBI module list"))? {
        modules.push(module);
    }

    let mut functions = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut unit_names = Vec::with_capacity(modules.len());
    for (number, module) in modules.iter().enumerate() {
        let unit = module.module_name().into_owned();
        let where_ = format!("module {number} `{unit}`");
        let stream = pdb
            .module_info(module)
            .map_err(|e| malformed(path, format!("{where_}: {e}")))?;
        if let Some(stream) = stream {
            let mut symbols = stream
                .symbols()
                .map_err(|e| malformed(path, format!("{where_}: {e}")))?;
            while let Some(symbol) = symbols
                .next()
                .map_err(|e| malformed(path, format!("{where_}: symbol records: {e}")))?
            {
                let at = || format!("{where_}: symbol record at offset {}", symbol.index());
                match symbol.raw_kind() {
                    S_LPROC32 | S_GPROC32 | S_LPROC32_ID | S_GPROC32_ID | S_LPROC32_DPC
                    | S_LPROC32_DPC_ID => {
                        let parsed = symbol
                            .parse()
                            .map_err(|e| malformed(path, format!("{}: {e}", at())))?;
                        let pdb::SymbolData::Procedure(proc_) = parsed else {
                            continue;
                        };
                        let name = proc_.name.to_string().into_owned();
                        // A procedure at section 0 was discarded by the linker:
                        // it has no code in the image (llvm-pdbutil shows it at
                        // 0000:0000), so it is not a function of the image.
                        let Some((rva, _)) = locate(req.sections, proc_.offset, path, &name, at)?
                        else {
                            continue;
                        };
                        let visibility = if is_exported(req.exports, rva, &name) {
                            Visibility::Exported
                        } else if proc_.global {
                            Visibility::Global
                        } else {
                            Visibility::Local
                        };
                        functions.push(Function {
                            name,
                            rva,
                            size: u64::from(proc_.len),
                            unit: Some(unit.clone()),
                            visibility,
                        });
                    }
                    S_LDATA32 | S_GDATA32 => {
                        if let Some(c) = data_candidate(req, &symbol, Some(&unit), at)? {
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
        unit_names.push(unit);
    }

    // The global symbol stream holds the global variables (lld moves them
    // out of the module streams) and copies of the module-local ones.
    let globals = pdb
        .global_symbols()
        .map_err(ctx(path, "global symbol stream"))?;
    let mut iter = globals.iter();
    while let Some(symbol) = iter
        .next()
        .map_err(ctx(path, "global symbol stream: symbol records"))?
    {
        if matches!(symbol.raw_kind(), S_LDATA32 | S_GDATA32) {
            let at = || format!("global symbol stream: record at offset {}", symbol.index());
            if let Some(c) = data_candidate(req, &symbol, None, at)? {
                candidates.push(c);
            }
        }
    }

    // Deduplicate by name and address, keeping the first record: module
    // records come first and know their unit.
    let mut seen = HashSet::new();
    candidates.retain(|c| seen.insert((c.name.clone(), c.rva)));

    // Global variables found only in the global stream get their unit from
    // the section contributions: the module whose contribution holds them.
    let contributions = contributions(&dbi, req.sections, path)?;
    for c in candidates.iter_mut().filter(|c| c.unit.is_none()) {
        c.unit = contribution_at(&contributions, c.rva)
            .and_then(|m| unit_names.get(m))
            .cloned();
    }

    let data = sized(req, &types, &functions, candidates);
    let boundaries = contributions
        .iter()
        .flat_map(|&(start, end, _)| [start, end])
        .collect();
    Ok(Found {
        functions,
        data,
        boundaries,
    })
}

/// Turn a PDB `section:offset` into an RVA and a section-table index.
///
/// `Ok(None)` for section 0, the linker's mark of a discarded symbol. A
/// section number past the section table, or an offset past the section's
/// end, is a damaged PDB.
fn locate(
    sections: &[SectionInfo],
    at: PdbInternalSectionOffset,
    path: &Path,
    name: &str,
    record: impl Fn() -> String,
) -> Result<Option<(u64, usize)>> {
    if at.section == 0 {
        return Ok(None);
    }
    let index = usize::from(at.section).saturating_sub(1);
    let section = sections.get(index).ok_or_else(|| {
        malformed(
            path,
            format!(
                "{}: `{name}` is in section {}, but the image has {} sections",
                record(),
                at.section,
                sections.len()
            ),
        )
    })?;
    let offset = u64::from(at.offset);
    if offset >= section.size {
        return Err(malformed(
            path,
            format!(
                "{}: `{name}` at {:04X}:{:08X} is past the end of section `{}` ({:#x} bytes)",
                record(),
                at.section,
                at.offset,
                section.name,
                section.size
            ),
        ));
    }
    let rva = section.rva.checked_add(offset).ok_or_else(|| {
        malformed(
            path,
            format!("{}: `{name}` has an address that overflows", record()),
        )
    })?;
    Ok(Some((rva, index)))
}

/// Whether an export at `rva` names this symbol: the same name, or a
/// decorated C++ name (`?...`), since the PDB records C++ names undecorated.
fn is_exported(exports: &HashMap<u64, Vec<&str>>, rva: u64, name: &str) -> bool {
    exports
        .get(&rva)
        .is_some_and(|names| names.iter().any(|n| *n == name || n.starts_with('?')))
}

/// A data candidate from an `S_GDATA32`/`S_LDATA32` record, or `None` for a
/// record at section 0 (discarded by the linker).
fn data_candidate(
    req: &Request<'_>,
    symbol: &pdb::Symbol<'_>,
    unit: Option<&str>,
    at: impl Fn() -> String,
) -> Result<Option<Candidate>> {
    let parsed = symbol
        .parse()
        .map_err(|e| malformed(req.pdb_path, format!("{}: {e}", at())))?;
    let pdb::SymbolData::Data(data) = parsed else {
        return Ok(None);
    };
    let name = data.name.to_string().into_owned();
    let Some((rva, section)) = locate(req.sections, data.offset, req.pdb_path, &name, &at)? else {
        return Ok(None);
    };
    Ok(Some(Candidate {
        name,
        rva,
        section,
        type_index: data.type_index.0,
        unit: unit.map(str::to_owned),
        local: !data.global,
    }))
}

/// A section contribution: `[start, end)` in RVAs, and its module number.
type Contribution = (u64, u64, usize);

/// The DBI section contributions, as RVA ranges sorted by start. Ones at
/// section 0 or outside the section table are left out: they place nothing.
fn contributions(
    dbi: &pdb::DebugInformation<'_>,
    sections: &[SectionInfo],
    path: &Path,
) -> Result<Vec<Contribution>> {
    let mut out = Vec::new();
    let mut iter = dbi
        .section_contributions()
        .map_err(ctx(path, "DBI section contributions"))?;
    while let Some(c) = iter
        .next()
        .map_err(ctx(path, "DBI section contributions"))?
    {
        let Some(section) = usize::from(c.offset.section)
            .checked_sub(1)
            .and_then(|i| sections.get(i))
        else {
            continue;
        };
        let Some(start) = section.rva.checked_add(u64::from(c.offset.offset)) else {
            continue;
        };
        let Some(end) = start.checked_add(u64::from(c.size)) else {
            continue;
        };
        if end > start {
            out.push((start, end, c.module));
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
/// The size comes from the type record ([`TypeTable::size_of`]). When the
/// type does not give one (an unknown or damaged record, a forward reference
/// with no unambiguous definition, a zero size) the size falls back to the
/// gap up to the next function or data object in the same section, capped by
/// the section's end. A size from the type is capped by the section's end
/// too: no object extends past its section.
fn sized(
    req: &Request<'_>,
    types: &TypeTable<'_>,
    functions: &[Function],
    candidates: Vec<Candidate>,
) -> Vec<DataObject> {
    let mut starts: Vec<u64> = functions
        .iter()
        .map(|f| f.rva)
        .chain(candidates.iter().map(|c| c.rva))
        .collect();
    starts.sort_unstable();
    starts.dedup();

    candidates
        .into_iter()
        .filter_map(|c| {
            let section = req.sections.get(c.section)?;
            let section_end = section.rva.saturating_add(section.size);
            let room = section_end.saturating_sub(c.rva);
            let size = match types.size_of(c.type_index) {
                Some(size) => size.min(room),
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
            Some(DataObject {
                name: c.name,
                rva: c.rva,
                size,
                section: section.name.clone(),
                unit: c.unit,
                visibility,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(detail(check_msf_header(MSF2_MAGIC, p)).contains("MSF 2.00"));
        let msg = detail(check_msf_header(&msf(4096, 2, 40), p));
        assert!(
            msg.starts_with("x.pdb: malformed PDB: the file is truncated"),
            "{msg}"
        );
        let msg = detail(check_msf_header(&msf(4096, 3, 8192), p));
        assert!(msg.contains("declares 3 blocks of 4096 bytes"), "{msg}");
        assert!(check_msf_header(&msf(u32::MAX, u32::MAX, 8192), p).is_err());
    }

    #[test]
    fn garbage_pdb_is_malformed_not_a_panic() {
        let cv = CodeView {
            guid: [0; 16],
            age: 1,
            path: String::new(),
        };
        let exports = HashMap::new();
        // A valid superblock whose directory points nowhere useful, and
        // pages of noise.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..64u32 {
            let mut d = msf(512, 16, 512 * 16);
            for b in d.iter_mut().skip(MSF7_HEADER) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            if round % 2 == 0 {
                // A small directory size and a plausible block map address.
                d[44..48].copy_from_slice(&(round * 4 + 8).to_le_bytes());
                d[52..56].copy_from_slice(&3u32.to_le_bytes());
            }
            let req = Request {
                pdb: &d,
                pdb_path: Path::new("g.pdb"),
                image_path: Path::new("g.dll"),
                codeview: &cv,
                machine: object::pe::IMAGE_FILE_MACHINE_AMD64,
                sections: &[],
                exports: &exports,
            };
            let err = read(&req).err().unwrap().to_string();
            assert!(err.starts_with("g.pdb: "), "{err}");
        }
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

    #[test]
    fn pdb_addresses() {
        let sections = [SectionInfo {
            name: ".text".into(),
            rva: 0x1000,
            size: 0x100,
        }];
        let p = Path::new("x.pdb");
        let at = |section, offset| PdbInternalSectionOffset { offset, section };
        let rec = || "record".to_owned();
        assert_eq!(
            locate(&sections, at(1, 0x10), p, "f", rec).unwrap(),
            Some((0x1010, 0))
        );
        assert_eq!(locate(&sections, at(0, 0), p, "f", rec).unwrap(), None);
        assert!(locate(&sections, at(2, 0), p, "f", rec).is_err());
        assert!(locate(&sections, at(1, 0x100), p, "f", rec).is_err());
    }
}

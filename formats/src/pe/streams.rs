//! The PDB streams this reader decodes itself: the PDB information stream,
//! the DBI stream (header, module list, section contributions, optional
//! debug header), the section header copy, and CodeView symbol records.
//!
//! The `pdb` crate gives the streams' bytes (its MSF layer, over the bounded
//! [`super::source::MemSource`]); everything inside them is decoded here with
//! checked reads, so that damaged input is an error that says where, never a
//! panic, and so that names stay raw bytes until [`crate::escape_name`]
//! escapes them (the crate's own accessors decode them lossily). Layouts
//! follow the LLVM PDB documentation (`llvm/docs/PDB/*.rst`).
//!
//! Every function returns `Err` with a description of the damage; the
//! caller adds the PDB's path.

use super::cursor::Cursor;
use crate::name::escape_name;

/// The DBI stream's header signature (`-1`: the "new" header).
const DBI_SIGNATURE: u32 = u32::MAX;
/// Size of the DBI stream header.
const DBI_HEADER_SIZE: usize = 64;
/// Size of a module info record before its two names.
const MODULE_HEADER_SIZE: usize = 64;
/// Section contribution substream version 6.0.
const SC_VER_60: u32 = 0xeffe_0000_u32.wrapping_add(19_970_605);
/// Section contribution substream version 2 (with a COFF section index).
const SC_VER_2: u32 = 0xeffe_0000_u32.wrapping_add(20_140_516);
/// Size of a version 6.0 section contribution.
const SC_SIZE_60: usize = 28;
/// Size of a version 2 section contribution.
const SC_SIZE_2: usize = 32;
/// Index of the section header stream in the optional debug header.
const DBG_SECTION_HEADERS: usize = 5;
/// Index of the "OMAP from source" stream in the optional debug header.
const DBG_OMAP_FROM_SRC: usize = 4;
/// Size of an `IMAGE_SECTION_HEADER`.
const SECTION_HEADER_SIZE: usize = 40;
/// The signature at the start of a module's symbol substream (C13).
const CV_SIGNATURE_C13: u32 = 4;
/// "No stream".
pub(super) const NO_STREAM: u16 = 0xffff;

/// The PDB information stream's identity fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Info {
    /// The age.
    pub(super) age: u32,
    /// The GUID, raw bytes in file order.
    pub(super) guid: [u8; 16],
}

/// Decode the PDB information stream (stream 1): version, signature, age,
/// GUID.
pub(super) fn info(stream: &[u8]) -> Result<Info, String> {
    let mut c = Cursor::new(stream);
    let fields = (|| {
        let _version = c.u32()?;
        let _signature = c.u32()?;
        let age = c.u32()?;
        let guid = c.bytes16()?;
        Some(Info { age, guid })
    })();
    fields.ok_or_else(|| {
        format!(
            "the PDB information stream is {} bytes, too short for its 28-byte header",
            stream.len()
        )
    })
}

/// The parts of the DBI stream this reader uses.
#[derive(Debug)]
pub(super) struct Dbi<'a> {
    /// The age (0: not recorded).
    pub(super) age: u32,
    /// The machine the PDB was linked for.
    pub(super) machine: u16,
    /// The global symbol record stream.
    pub(super) symbol_records: u16,
    /// The module info substream.
    modules: &'a [u8],
    /// The section contribution substream.
    contributions: &'a [u8],
    /// The optional debug header substream (stream indexes).
    debug_header: &'a [u8],
}

/// Decode the DBI stream's header and cut it into its substreams, each
/// checked to lie inside the stream.
pub(super) fn dbi(stream: &[u8]) -> Result<Dbi<'_>, String> {
    let mut c = Cursor::new(stream);
    let short = || {
        format!(
            "the DBI stream is {} bytes, too short for its {DBI_HEADER_SIZE}-byte header",
            stream.len()
        )
    };
    let signature = c.u32().ok_or_else(short)?;
    if signature != DBI_SIGNATURE {
        return Err(format!(
            "the DBI stream header signature is {signature:#x}, not 0xffffffff (an old or damaged DBI stream)"
        ));
    }
    let _version = c.u32().ok_or_else(short)?;
    let age = c.u32().ok_or_else(short)?;
    let _global_stream = c.u16().ok_or_else(short)?;
    let _build = c.u16().ok_or_else(short)?;
    let _public_stream = c.u16().ok_or_else(short)?;
    let _dll_version = c.u16().ok_or_else(short)?;
    let symbol_records = c.u16().ok_or_else(short)?;
    let _rebuild = c.u16().ok_or_else(short)?;
    let mut sizes = [0u32; 8];
    for s in &mut sizes {
        *s = c.u32().ok_or_else(short)?;
    }
    let [modules, contributions, section_map, files, type_servers, _mfc, debug_header, ec] = sizes;
    let _flags = c.u16().ok_or_else(short)?;
    let machine = c.u16().ok_or_else(short)?;
    let _reserved = c.u32().ok_or_else(short)?;

    // The substreams follow the header in this order.
    let mut take = |size: u32, what: &str| -> Result<&[u8], String> {
        let at = c.pos();
        usize::try_from(size)
            .ok()
            .and_then(|n| c.take(n))
            .ok_or_else(|| {
                format!(
                    "the DBI stream's {what} substream ({size} bytes at offset {at:#x}) runs past the end of the {}-byte stream",
                    stream.len()
                )
            })
    };
    let modules = take(modules, "module info")?;
    let contributions = take(contributions, "section contribution")?;
    take(section_map, "section map")?;
    take(files, "file info")?;
    take(type_servers, "type server map")?;
    take(ec, "EC")?;
    let debug_header = take(debug_header, "optional debug header")?;
    Ok(Dbi {
        age,
        machine,
        symbol_records,
        modules,
        contributions,
        debug_header,
    })
}

/// One module (translation unit) of the DBI module list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Module {
    /// Its name, escaped.
    pub(super) name: String,
    /// Its symbol stream, or [`NO_STREAM`].
    pub(super) stream: u16,
    /// Bytes of symbol records at the start of that stream (with the
    /// 4-byte signature).
    pub(super) symbols_size: u32,
    /// Bytes of C11 line information after the symbols (old compilers).
    pub(super) c11_size: u32,
    /// Bytes of C13 debug subsections after those (line tables, file
    /// checksums, inlinee lines).
    pub(super) c13_size: u32,
}

impl Dbi<'_> {
    /// The module list.
    pub(super) fn modules(&self) -> Result<Vec<Module>, String> {
        let mut out = Vec::new();
        let mut c = Cursor::new(self.modules);
        while !c.is_empty() {
            let at = c.pos();
            let number = out.len();
            let bad =
                |what: &str| format!("DBI module list: module {number} (offset {at:#x}): {what}");
            let header = c
                .take(MODULE_HEADER_SIZE)
                .ok_or_else(|| bad("the record is truncated"))?;
            let mut h = Cursor::new(header);
            // Skip the unused field, the module's first section
            // contribution (28 bytes) and the flags.
            h.take(4 + SC_SIZE_60 + 2)
                .ok_or_else(|| bad("the record is truncated"))?;
            let stream = h.u16().ok_or_else(|| bad("the record is truncated"))?;
            let symbols_size = h.u32().ok_or_else(|| bad("the record is truncated"))?;
            let c11_size = h.u32().ok_or_else(|| bad("the record is truncated"))?;
            let c13_size = h.u32().ok_or_else(|| bad("the record is truncated"))?;
            let name = c
                .cstr()
                .ok_or_else(|| bad("the module name has no terminating NUL"))?;
            c.cstr()
                .ok_or_else(|| bad("the object file name has no terminating NUL"))?;
            c.align(4)
                .ok_or_else(|| bad("the record's padding runs past the list"))?;
            out.push(Module {
                name: escape_name(name),
                stream,
                symbols_size,
                c11_size,
                c13_size,
            });
        }
        Ok(out)
    }

    /// The section contributions, in stream order.
    pub(super) fn contributions(&self) -> Result<Vec<Contribution>, String> {
        if self.contributions.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = Cursor::new(self.contributions);
        let version = c
            .u32()
            .ok_or("the DBI section contribution substream is too short for its version")?;
        let size = match version {
            SC_VER_60 => SC_SIZE_60,
            SC_VER_2 => SC_SIZE_2,
            other => {
                return Err(format!(
                    "the DBI section contribution substream has unknown version {other:#x}"
                ))
            }
        };
        let body = self.contributions.get(4..).unwrap_or_default();
        if body.len().checked_rem(size) != Some(0) {
            return Err(format!(
                "the DBI section contribution substream holds {} bytes, not a whole number of {size}-byte entries",
                body.len()
            ));
        }
        let mut out = Vec::with_capacity(body.len().checked_div(size).unwrap_or(0));
        let mut c = Cursor::new(body);
        while let Some(entry) = c.take(size) {
            let mut e = Cursor::new(entry);
            let parsed = (|| {
                let section = e.u16()?;
                let _pad = e.u16()?;
                let offset = e.u32()?;
                let size = e.u32()?;
                let _characteristics = e.u32()?;
                let module = e.u16()?;
                Some(Contribution {
                    section,
                    offset,
                    size,
                    module,
                })
            })();
            // The entry is `size` bytes long: the fields are there.
            if let Some(p) = parsed {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// A stream index from the optional debug header, if recorded.
    fn debug_stream(&self, index: usize) -> Option<u16> {
        let at = index.checked_mul(2)?;
        let end = at.checked_add(2)?;
        let b = self.debug_header.get(at..end)?;
        let stream = u16::from_le_bytes([*b.first()?, *b.get(1)?]);
        (stream != NO_STREAM).then_some(stream)
    }

    /// The stream holding the linker's copy of the image's section headers.
    pub(super) fn section_header_stream(&self) -> Option<u16> {
        self.debug_stream(DBG_SECTION_HEADERS)
    }

    /// The OMAP stream, present when a tool rewrote the image after linking.
    pub(super) fn omap_stream(&self) -> Option<u16> {
        self.debug_stream(DBG_OMAP_FROM_SRC)
    }
}

/// A section contribution: a piece of one object file placed by the linker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Contribution {
    /// 1-based section number (0: none).
    pub(super) section: u16,
    /// Offset in the section.
    pub(super) offset: u32,
    /// Size in bytes.
    pub(super) size: u32,
    /// The module that contributed it.
    pub(super) module: u16,
}

/// One section header of the linker's copy in the PDB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RecordedSection {
    /// Its name, escaped.
    pub(super) name: String,
    /// Its RVA.
    pub(super) rva: u64,
    /// Its size in memory (the virtual size, or the raw size when that is 0).
    pub(super) size: u64,
}

/// Decode the section header stream: `IMAGE_SECTION_HEADER`s back to back.
pub(super) fn section_headers(stream: &[u8]) -> Result<Vec<RecordedSection>, String> {
    if stream.len().checked_rem(SECTION_HEADER_SIZE) != Some(0) {
        return Err(format!(
            "the section header stream is {} bytes, not a whole number of {SECTION_HEADER_SIZE}-byte headers",
            stream.len()
        ));
    }
    let mut out = Vec::with_capacity(stream.len().checked_div(SECTION_HEADER_SIZE).unwrap_or(0));
    let mut c = Cursor::new(stream);
    while let Some(header) = c.take(SECTION_HEADER_SIZE) {
        let mut h = Cursor::new(header);
        let parsed = (|| {
            let raw_name = h.take(8)?;
            let virtual_size = h.u32()?;
            let rva = h.u32()?;
            let raw_size = h.u32()?;
            let end = raw_name.iter().position(|&b| b == 0).unwrap_or(8);
            Some(RecordedSection {
                name: escape_name(raw_name.get(..end)?),
                rva: u64::from(rva),
                size: u64::from(if virtual_size == 0 {
                    raw_size
                } else {
                    virtual_size
                }),
            })
        })();
        if let Some(p) = parsed {
            out.push(p);
        }
    }
    Ok(out)
}

/// One CodeView symbol record.
#[derive(Clone, Copy, Debug)]
pub(super) struct Record<'a> {
    /// Offset of the record (its length field) in its stream.
    pub(super) offset: usize,
    /// Its kind.
    pub(super) kind: u16,
    /// The bytes after the kind.
    pub(super) body: &'a [u8],
}

/// Iterator over the CodeView symbol records of a stream.
#[derive(Debug)]
pub(super) struct Records<'a> {
    /// The records; the cursor's position is the offset in the stream.
    c: Cursor<'a>,
}

/// The symbol records of a module stream: the first `symbols_size` bytes,
/// after the C13 signature.
pub(super) fn module_records(stream: &[u8], symbols_size: u32) -> Result<Records<'_>, String> {
    let size = usize::try_from(symbols_size).unwrap_or(usize::MAX);
    let symbols = stream.get(..size).ok_or_else(|| {
        format!(
            "its symbol substream is {symbols_size} bytes, but the stream has only {}",
            stream.len()
        )
    })?;
    if symbols.is_empty() {
        return Ok(Records {
            c: Cursor::new(symbols),
        });
    }
    let mut c = Cursor::new(symbols);
    match c.u32() {
        Some(CV_SIGNATURE_C13) => Ok(Records { c }),
        Some(other) => Err(format!(
            "its symbol substream has signature {other}, not 4 (C13)"
        )),
        None => Err("its symbol substream is too short for its signature".into()),
    }
}

/// The symbol records of the global symbol record stream.
pub(super) fn records(stream: &[u8]) -> Records<'_> {
    Records {
        c: Cursor::new(stream),
    }
}

impl<'a> Records<'a> {
    /// The next record, `Ok(None)` at the end, or `Err` for a damaged one.
    pub(super) fn next_record(&mut self) -> Result<Option<Record<'a>>, String> {
        if self.c.is_empty() {
            return Ok(None);
        }
        let offset = self.c.pos();
        let bad = || format!("the symbol record at offset {offset:#x} is truncated");
        let len = self.c.u16().ok_or_else(bad)?;
        if len < 2 {
            return Err(format!(
                "the symbol record at offset {offset:#x} has length {len}, too short for its kind"
            ));
        }
        let data = self.c.take(usize::from(len)).ok_or_else(bad)?;
        let mut r = Cursor::new(data);
        let kind = r.u16().ok_or_else(bad)?;
        Ok(Some(Record {
            offset,
            kind,
            body: data.get(2..).unwrap_or_default(),
        }))
    }
}

/// `DEBUG_S_LINES`: a C13 subsection holding one line table.
const DEBUG_S_LINES: u32 = 0xf2;
/// Line-table flag: each block has a column entry per line after its lines.
const CV_LINES_HAVE_COLUMNS: u16 = 1;
/// Size of a line table's header (offset, segment, flags, code size).
const LINES_HEADER_SIZE: usize = 12;
/// Size of a line block's header (file, line count, block size).
const LINE_BLOCK_HEADER_SIZE: usize = 12;
/// Size of a line entry (offset, line and flags).
const LINE_ENTRY_SIZE: usize = 8;
/// Size of a column entry.
const COLUMN_ENTRY_SIZE: usize = 4;
/// Line numbers that mark code with no source line: MSVC's "hidden"
/// (`0xfeefee`) and "always step into" (`0xf00f00`) markers, and 0.
const NO_LINE: [u32; 3] = [0, 0x00fe_efee, 0x00f0_0f00];

/// The first line of one C13 line table: where its code starts
/// (`section:offset`, the function's address for the tables clang and
/// MSVC write, one per function) and its first line (see [`first_line`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FirstLine {
    /// 1-based section number.
    pub(super) section: u16,
    /// Offset in the section.
    pub(super) offset: u32,
    /// The line.
    pub(super) line: u32,
}

/// The first line of every line table (`DEBUG_S_LINES`) in a module
/// stream's C13 subsections, which follow its `symbols_size` bytes of
/// symbols and `c11_size` bytes of C11 lines. `Err` describes the first
/// damage found; the caller decides what the damage costs (lines are
/// optional: it drops the module's lines).
pub(super) fn first_lines(stream: &[u8], module: &Module) -> Result<Vec<FirstLine>, String> {
    let start = u64::from(module.symbols_size).saturating_add(u64::from(module.c11_size));
    let end = start.saturating_add(u64::from(module.c13_size));
    let c13 = usize::try_from(start)
        .ok()
        .zip(usize::try_from(end).ok())
        .and_then(|(a, b)| stream.get(a..b))
        .ok_or_else(|| {
            format!(
                "its C13 line information ({} bytes at offset {start:#x}) runs past the end of the {}-byte stream",
                module.c13_size,
                stream.len()
            )
        })?;
    let mut out = Vec::new();
    let mut c = Cursor::new(c13);
    while !c.is_empty() {
        let at = start.saturating_add(c.pos() as u64);
        let bad = |what: &str| format!("C13 subsection at offset {at:#x}: {what}");
        let kind = c.u32().ok_or_else(|| bad("the header is truncated"))?;
        let len = c.u32().ok_or_else(|| bad("the header is truncated"))?;
        let body = usize::try_from(len)
            .ok()
            .and_then(|n| c.take(n))
            .ok_or_else(|| bad(&format!("its {len} bytes run past the C13 information")))?;
        // Subsections are padded to 4 bytes (the last one may end without).
        if !c.is_empty() {
            c.align(4)
                .ok_or_else(|| bad("its padding runs past the C13 information"))?;
        }
        // Other kinds (file checksums, inlinee lines, and any kind with the
        // "ignore" bit 0x80000000 set) place no function's first line.
        if kind != DEBUG_S_LINES {
            continue;
        }
        if let Some(first) = first_line(body).map_err(|e| bad(&e))? {
            out.push(first);
        }
    }
    Ok(out)
}

/// The first line of one `DEBUG_S_LINES` subsection body: the smallest
/// line of the source file that its lowest offset belongs to, leaving out
/// [`NO_LINE`] markers; `None` when it has no line at all. For a function
/// with a prologue that is its opening brace; for a leaf function that
/// clang emits without one, the first statement that has code, whichever
/// instruction the compiler scheduled first.
fn first_line(body: &[u8]) -> Result<Option<FirstLine>, String> {
    let mut c = Cursor::new(body);
    let header = (|| Some((c.u32()?, c.u16()?, c.u16()?, c.u32()?)))();
    let Some((offset, section, flags, _code_size)) = header else {
        return Err(format!(
            "the line table is {} bytes, too short for its {LINES_HEADER_SIZE}-byte header",
            body.len()
        ));
    };
    let per_line = if flags & CV_LINES_HAVE_COLUMNS != 0 {
        LINE_ENTRY_SIZE.saturating_add(COLUMN_ENTRY_SIZE)
    } else {
        LINE_ENTRY_SIZE
    };
    // (file, offset, line) of every real line; at most one per 8 bytes.
    let mut entries: Vec<(u32, u32, u32)> = Vec::new();
    while !c.is_empty() {
        let at = c.pos();
        let bad = |what: &str| format!("line block at +{at:#x}: {what}");
        let block = (|| Some((c.u32()?, c.u32()?, c.u32()?)))();
        let Some((file, count, size)) = block else {
            return Err(bad("the header is truncated"));
        };
        let need = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(per_line))
            .and_then(|n| n.checked_add(LINE_BLOCK_HEADER_SIZE));
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if need != Some(size) {
            return Err(bad(&format!(
                "it says {size} bytes, but {count} lines take {}",
                need.map_or_else(|| "more".to_string(), |n| n.to_string())
            )));
        }
        let rest = size.saturating_sub(LINE_BLOCK_HEADER_SIZE);
        let data = c
            .take(rest)
            .ok_or_else(|| bad("its lines run past the line table"))?;
        let mut lines = Cursor::new(data);
        for _ in 0..count {
            let (Some(off), Some(bits)) = (lines.u32(), lines.u32()) else {
                return Err(bad("its lines are truncated"));
            };
            let line = bits & 0x00ff_ffff;
            if !NO_LINE.contains(&line) {
                entries.push((file, off, line));
            }
        }
    }
    // The file of the lowest offset (the first such entry), then its
    // smallest line.
    let mut first: Option<(u32, u32)> = None;
    for &(file, off, _) in &entries {
        if first.is_none_or(|(_, o)| off < o) {
            first = Some((file, off));
        }
    }
    let Some((file, _)) = first else {
        return Ok(None);
    };
    let line = entries.iter().filter(|e| e.0 == file).map(|e| e.2).min();
    Ok(line.map(|line| FirstLine {
        section,
        offset,
        line,
    }))
}

/// A procedure record (`S_GPROC32`, `S_LPROC32` and their `_ID` and DPC
/// variants).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Procedure {
    /// Code length in bytes.
    pub(super) len: u32,
    /// Offset in the section.
    pub(super) offset: u32,
    /// 1-based section number (0: discarded by the linker).
    pub(super) section: u16,
    /// The name, escaped.
    pub(super) name: String,
}

/// Decode a procedure record's body.
pub(super) fn procedure(body: &[u8]) -> Option<Procedure> {
    let mut c = Cursor::new(body);
    // Parent, end and next record offsets.
    c.take(12)?;
    let len = c.u32()?;
    // Debug start and end offsets, type index.
    c.take(12)?;
    let offset = c.u32()?;
    let section = c.u16()?;
    let _flags = c.u8()?;
    let name = c.cstr()?;
    Some(Procedure {
        len,
        offset,
        section,
        name: escape_name(name),
    })
}

/// A data record (`S_GDATA32`, `S_LDATA32`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DataRecord {
    /// Its type index.
    pub(super) type_index: u32,
    /// Offset in the section.
    pub(super) offset: u32,
    /// 1-based section number (0: discarded by the linker).
    pub(super) section: u16,
    /// The name, escaped.
    pub(super) name: String,
}

/// Decode a data record's body.
pub(super) fn data(body: &[u8]) -> Option<DataRecord> {
    let mut c = Cursor::new(body);
    let type_index = c.u32()?;
    let offset = c.u32()?;
    let section = c.u16()?;
    let name = c.cstr()?;
    Some(DataRecord {
        type_index,
        offset,
        section,
        name: escape_name(name),
    })
}

/// A public symbol record (`S_PUB32`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PublicRecord {
    /// `CV_PUBSYMFLAGS`: bit 0 code, bit 1 function, bit 2 managed code,
    /// bit 3 MSIL.
    pub(super) flags: u32,
    /// Offset in the section.
    pub(super) offset: u32,
    /// 1-based section number (0: an absolute symbol, in no section).
    pub(super) section: u16,
    /// The name, escaped.
    pub(super) name: String,
}

/// Decode a public symbol record's body.
pub(super) fn public(body: &[u8]) -> Option<PublicRecord> {
    let mut c = Cursor::new(body);
    let flags = c.u32()?;
    let offset = c.u32()?;
    let section = c.u16()?;
    let name = c.cstr()?;
    Some(PublicRecord {
        flags,
        offset,
        section,
        name: escape_name(name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DBI stream: header, then the given substreams.
    pub(crate) fn dbi_stream(modules: &[u8], contributions: &[u8], debug_header: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&u32::MAX.to_le_bytes());
        d.extend_from_slice(&19_990_903u32.to_le_bytes());
        d.extend_from_slice(&3u32.to_le_bytes()); // age
        d.extend_from_slice(&[0xff; 8]); // streams and versions
        d.extend_from_slice(&7u16.to_le_bytes()); // symbol records
        d.extend_from_slice(&0u16.to_le_bytes());
        for size in [
            modules.len(),
            contributions.len(),
            0,
            0,
            0,
            0,
            debug_header.len(),
            0,
        ] {
            d.extend_from_slice(&(size as u32).to_le_bytes());
        }
        d.extend_from_slice(&0u16.to_le_bytes());
        d.extend_from_slice(&0x8664u16.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(d.len(), DBI_HEADER_SIZE);
        d.extend_from_slice(modules);
        d.extend_from_slice(contributions);
        d.extend_from_slice(debug_header);
        d
    }

    fn module(name: &[u8], stream: u16, symbols_size: u32) -> Vec<u8> {
        let mut m = vec![0u8; MODULE_HEADER_SIZE];
        m[34..36].copy_from_slice(&stream.to_le_bytes());
        m[36..40].copy_from_slice(&symbols_size.to_le_bytes());
        m.extend_from_slice(name);
        m.push(0);
        m.extend_from_slice(b"x.obj\0");
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn dbi_header_and_modules() {
        let mut mods = module(b"a.obj", 11, 100);
        mods.extend(module(b"bad\x1b[31m\xff.obj", NO_STREAM, 0));
        let mut sc = SC_VER_60.to_le_bytes().to_vec();
        let mut entry = vec![0u8; SC_SIZE_60];
        entry[0..2].copy_from_slice(&1u16.to_le_bytes());
        entry[4..8].copy_from_slice(&0x10u32.to_le_bytes());
        entry[8..12].copy_from_slice(&0x20u32.to_le_bytes());
        entry[16..18].copy_from_slice(&1u16.to_le_bytes());
        sc.extend_from_slice(&entry);
        let dbg: Vec<u8> = [NO_STREAM, NO_STREAM, NO_STREAM, NO_STREAM, NO_STREAM, 9]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let stream = dbi_stream(&mods, &sc, &dbg);
        let dbi = dbi(&stream).unwrap();
        assert_eq!((dbi.age, dbi.machine, dbi.symbol_records), (3, 0x8664, 7));
        assert_eq!(
            dbi.modules().unwrap(),
            [
                Module {
                    name: "a.obj".into(),
                    stream: 11,
                    symbols_size: 100,
                    c11_size: 0,
                    c13_size: 0
                },
                Module {
                    name: "bad\\x1b[31m\\xff.obj".into(),
                    stream: NO_STREAM,
                    symbols_size: 0,
                    c11_size: 0,
                    c13_size: 0
                }
            ]
        );
        assert_eq!(
            dbi.contributions().unwrap(),
            [Contribution {
                section: 1,
                offset: 0x10,
                size: 0x20,
                module: 1
            }]
        );
        assert_eq!(dbi.section_header_stream(), Some(9));
        assert_eq!(dbi.omap_stream(), None);
    }

    #[test]
    fn damaged_dbi_streams() {
        let good = dbi_stream(&module(b"a.obj", 11, 100), &[], &[]);
        for n in 0..good.len() {
            // Every truncation is an error, never a panic.
            let r = dbi(&good[..n]).and_then(|d| d.modules().map(|_| ()));
            assert!(r.is_err(), "{n}");
        }
        let mut huge = good.clone();
        huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        let msg = dbi(&huge).unwrap_err();
        assert!(
            msg.contains(
                "module info substream (4294967295 bytes at offset 0x40) runs past the end"
            ),
            "{msg}"
        );
        let mut sig = good.clone();
        sig[0] = 0;
        assert!(dbi(&sig).unwrap_err().contains("signature"));
        // A module name without its NUL.
        let mut m = module(b"a.obj", 11, 100);
        m.truncate(MODULE_HEADER_SIZE + 3);
        let stream = dbi_stream(&m, &[], &[]);
        assert!(dbi(&stream)
            .unwrap()
            .modules()
            .unwrap_err()
            .contains("no terminating NUL"));
        // Contributions: unknown version, ragged length.
        let stream = dbi_stream(&[], &[1, 2, 3, 4], &[]);
        assert!(dbi(&stream)
            .unwrap()
            .contributions()
            .unwrap_err()
            .contains("unknown version"));
        let mut sc = SC_VER_60.to_le_bytes().to_vec();
        sc.extend_from_slice(&[0; 27]);
        let stream = dbi_stream(&[], &sc, &[]);
        assert!(dbi(&stream)
            .unwrap()
            .contributions()
            .unwrap_err()
            .contains("not a whole number"));
    }

    /// A `DEBUG_S_LINES` subsection body: header at `section:offset`, then
    /// blocks of `(offset, line)` entries (with column entries if
    /// `columns`).
    fn line_table(section: u16, offset: u32, columns: bool, blocks: &[&[(u32, u32)]]) -> Vec<u8> {
        let files: Vec<(u32, &[(u32, u32)])> = blocks.iter().map(|b| (0x18, *b)).collect();
        line_table_in(section, offset, columns, &files)
    }

    /// [`line_table`] with each block's file (its checksum offset).
    fn line_table_in(
        section: u16,
        offset: u32,
        columns: bool,
        blocks: &[(u32, &[(u32, u32)])],
    ) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&section.to_le_bytes());
        b.extend_from_slice(&u16::from(columns).to_le_bytes());
        b.extend_from_slice(&0x40u32.to_le_bytes());
        for &(file, lines) in blocks {
            let per = if columns { 12 } else { 8 };
            b.extend_from_slice(&file.to_le_bytes());
            b.extend_from_slice(&(lines.len() as u32).to_le_bytes());
            b.extend_from_slice(&((12 + per * lines.len()) as u32).to_le_bytes());
            for &(off, line) in lines {
                b.extend_from_slice(&off.to_le_bytes());
                // Is-statement bit and a delta to the end line set.
                b.extend_from_slice(&(line | 0x8100_0000).to_le_bytes());
            }
            if columns {
                b.extend(std::iter::repeat_n(0u8, 4 * lines.len()));
            }
        }
        b
    }

    /// A subsection: kind, length, body, padding to 4.
    fn subsection(kind: u32, body: &[u8]) -> Vec<u8> {
        let mut s = kind.to_le_bytes().to_vec();
        s.extend_from_slice(&(body.len() as u32).to_le_bytes());
        s.extend_from_slice(body);
        while s.len() % 4 != 0 {
            s.push(0);
        }
        s
    }

    /// A module stream: `symbols` bytes of symbols, then the subsections.
    fn module_stream(symbols: usize, c13: &[u8]) -> (Vec<u8>, Module) {
        let mut stream = vec![0u8; symbols];
        stream.extend_from_slice(c13);
        stream.extend_from_slice(&0u32.to_le_bytes()); // global refs size
        let m = Module {
            name: "m.obj".into(),
            stream: 12,
            symbols_size: symbols as u32,
            c11_size: 0,
            c13_size: c13.len() as u32,
        };
        (stream, m)
    }

    /// The first line of each line table is the smallest line of the file
    /// of its lowest offset, over all its blocks, skipping "no line"
    /// markers; other subsections (file checksums, inlinee lines, ignored
    /// ones) are passed over.
    #[test]
    fn first_lines_of_c13_line_tables() {
        let mut c13 = subsection(0xf4, &[1, 2, 3, 4, 5, 6]); // file checksums
        c13.extend(subsection(
            0xf2,
            &line_table(1, 0x10, false, &[&[(0, 50), (0, 53), (0xf, 54)]]),
        ));
        c13.extend(subsection(0xf6, &[0; 12])); // inlinee lines
        c13.extend(subsection(
            0xf2,
            &line_table(
                1,
                0x60,
                true,
                &[&[(4, 70), (9, 71)], &[(0, 0xfeefee), (2, 67), (6, 66)]],
            ),
        ));
        // The lowest offset is in file 0x30: file 0x18's line 20 is
        // another file's.
        c13.extend(subsection(
            0xf2,
            &line_table_in(
                1,
                0x80,
                false,
                &[(0x18, &[(4, 20)]), (0x30, &[(0, 60), (8, 58)])],
            ),
        ));
        c13.extend(subsection(
            0x8000_00f2,
            &line_table(1, 0xa0, false, &[&[(0, 1)]]),
        ));
        c13.extend(subsection(
            0xf2,
            &line_table(2, 0x0, false, &[&[(0, 0xf00f00)]]),
        ));
        let (stream, m) = module_stream(0x20, &c13);
        assert_eq!(
            first_lines(&stream, &m).unwrap(),
            [
                FirstLine {
                    section: 1,
                    offset: 0x10,
                    line: 50
                },
                FirstLine {
                    section: 1,
                    offset: 0x60,
                    line: 66
                },
                FirstLine {
                    section: 1,
                    offset: 0x80,
                    line: 58
                }
            ]
        );
        // No C13 information: no lines.
        let (stream, m) = module_stream(0x20, &[]);
        assert_eq!(first_lines(&stream, &m).unwrap(), []);
    }

    /// Damaged line information is an error that says where, never a panic:
    /// every truncation of the subsections, and sizes that lie.
    #[test]
    fn damaged_c13_line_tables_are_errors() {
        let table = line_table(1, 0x10, true, &[&[(0, 50), (3, 51)]]);
        let c13 = subsection(0xf2, &table);
        for n in 1..c13.len() {
            let (stream, m) = module_stream(8, &c13[..n]);
            assert!(first_lines(&stream, &m).is_err(), "{n}");
        }
        // Sizes past the stream.
        let (stream, mut m) = module_stream(8, &c13);
        m.c13_size = u32::MAX;
        let e = first_lines(&stream, &m).unwrap_err();
        assert!(e.contains("runs past the end of the"), "{e}");
        m.c13_size = c13.len() as u32;
        m.c11_size = u32::MAX;
        assert!(first_lines(&stream, &m).is_err());
        // A block whose size disagrees with its line count.
        let mut bad = table.clone();
        bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        let (stream, m) = module_stream(8, &subsection(0xf2, &bad));
        let e = first_lines(&stream, &m).unwrap_err();
        assert!(
            e.starts_with("C13 subsection at offset 0x8: line block at +0xc: it says"),
            "{e}"
        );
    }

    #[test]
    fn symbol_records() {
        let mut s = CV_SIGNATURE_C13.to_le_bytes().to_vec();
        let mut proc_ = vec![0u8; 12];
        proc_.extend_from_slice(&0x30u32.to_le_bytes());
        proc_.extend_from_slice(&[0; 12]);
        proc_.extend_from_slice(&0x100u32.to_le_bytes());
        proc_.extend_from_slice(&1u16.to_le_bytes());
        proc_.push(0);
        proc_.extend_from_slice(b"f\n\0");
        s.extend_from_slice(&((proc_.len() + 2) as u16).to_le_bytes());
        s.extend_from_slice(&0x1110u16.to_le_bytes());
        s.extend_from_slice(&proc_);
        let mut r = module_records(&s, s.len() as u32).unwrap();
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!((rec.offset, rec.kind), (4, 0x1110));
        assert_eq!(
            procedure(rec.body),
            Some(Procedure {
                len: 0x30,
                offset: 0x100,
                section: 1,
                name: "f\\x0a".into()
            })
        );
        assert!(r.next_record().unwrap().is_none());
        // Truncated record, too-short record, wrong signature, oversize.
        assert!(module_records(&s[..s.len() - 1], s.len() as u32).is_err());
        let mut r = module_records(&s[..s.len() - 1], (s.len() - 1) as u32).unwrap();
        assert!(r.next_record().unwrap_err().contains("truncated"));
        let mut r = records(&[1, 0, 0]);
        assert!(r.next_record().unwrap_err().contains("too short"));
        assert!(module_records(&[5, 0, 0, 0], 4)
            .unwrap_err()
            .contains("signature 5"));
        assert_eq!(procedure(&proc_[..proc_.len() - 1]), None);
        assert_eq!(data(&[0; 10]), None);
    }

    #[test]
    fn public_records() {
        let mut body = 2u32.to_le_bytes().to_vec();
        body.extend_from_slice(&0x4_6420u32.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(b"floor\x1b\0");
        assert_eq!(
            public(&body),
            Some(PublicRecord {
                flags: 2,
                offset: 0x4_6420,
                section: 1,
                name: "floor\\x1b".into()
            })
        );
        // Without the name's terminator, or cut in the fixed fields.
        assert_eq!(public(&body[..body.len() - 1]), None);
        assert_eq!(public(&body[..9]), None);
    }

    #[test]
    fn recorded_section_headers() {
        let mut h = vec![0u8; SECTION_HEADER_SIZE];
        h[..5].copy_from_slice(b".text");
        h[8..12].copy_from_slice(&0x1e7u32.to_le_bytes());
        h[12..16].copy_from_slice(&0x1000u32.to_le_bytes());
        assert_eq!(
            section_headers(&h).unwrap(),
            [RecordedSection {
                name: ".text".into(),
                rva: 0x1000,
                size: 0x1e7
            }]
        );
        assert!(section_headers(&h[..39]).is_err());
    }

    #[test]
    fn info_stream() {
        let mut s = vec![0u8; 12];
        s[8] = 2;
        s.extend(1..=16u8);
        let i = info(&s).unwrap();
        assert_eq!(i.age, 2);
        assert_eq!(i.guid[0], 1);
        assert!(info(&s[..27]).is_err());
    }
}

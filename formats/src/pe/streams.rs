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
                    symbols_size: 100
                },
                Module {
                    name: "bad\\x1b[31m\\xff.obj".into(),
                    stream: NO_STREAM,
                    symbols_size: 0
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

//! Damaged PDBs that get past the identity check.
//!
//! Each test takes a corpus image and its PDB, keeps the MSF layout and the
//! PDB information stream (so that the GUID and age still match the image),
//! and damages one of the streams the reader decodes after that: the DBI
//! stream (header, module list, section contributions), the type stream
//! (whose records also give the layouts), the item stream, the module
//! symbol streams (which also give the types each function uses), the
//! global symbol stream and the section header copy. Every result must be an image or a clean one-line error
//! that names the PDB (or, for what the PDB says about the image's machine,
//! the image). A panic or an abort fails the test: nothing catches them.
//!
//! Every test also counts where the errors came from and requires that each
//! of those parsers was reached, so a change that stops the damage at the
//! door (the identity check) fails it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::streams;
use super::test_msf::Msf;
use super::{parse, Pdb};
use crate::error::Error;
use crate::read::ReadOptions;

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// A value that tends to break size and count arithmetic.
    fn nasty_u32(&mut self) -> u32 {
        const NASTY: [u32; 10] = [
            0,
            1,
            2,
            0x7fff,
            0xffff,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_fffe,
            0xffff_ffff,
            0x1000,
        ];
        if self.next() % 4 == 0 {
            self.next() as u32
        } else {
            NASTY[self.below(NASTY.len())]
        }
    }

    fn nasty_u16(&mut self) -> u16 {
        const NASTY: [u16; 8] = [0, 1, 2, 3, 0x7fff, 0x8000, 0xfffe, 0xffff];
        if self.next() % 4 == 0 {
            self.next() as u16
        } else {
            NASTY[self.below(NASTY.len())]
        }
    }
}

/// A corpus image and its PDB.
struct Sample {
    name: String,
    image: Vec<u8>,
    pdb: Vec<u8>,
}

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

fn samples() -> Vec<Sample> {
    let mut out = Vec::new();
    for scenario in [
        "05-jump-table",
        "07-new-global",
        "09-duplicate-static",
        "13-cumulative-series",
    ] {
        for target in ["x86_64-windows", "aarch64-windows"] {
            let dir = corpus().join(scenario).join("bin").join(target);
            out.push(Sample {
                name: format!("{scenario}/{target}"),
                image: std::fs::read(dir.join("v2.dll")).unwrap(),
                pdb: std::fs::read(dir.join("v2.pdb")).unwrap(),
            });
        }
    }
    out
}

/// The streams worth damaging, by name.
fn targets(msf: &Msf, pdb: &[u8]) -> Vec<(String, usize)> {
    let dbi_bytes = msf.read(pdb, 3);
    let dbi = streams::dbi(&dbi_bytes).unwrap();
    let mut out = vec![
        ("TPI".to_owned(), 2),
        ("DBI".to_owned(), 3),
        ("IPI".to_owned(), 4),
    ];
    out.push(("globals".to_owned(), usize::from(dbi.symbol_records)));
    if let Some(s) = dbi.section_header_stream() {
        out.push(("section headers".to_owned(), usize::from(s)));
    }
    for m in dbi.modules().unwrap() {
        if m.stream != streams::NO_STREAM {
            out.push((format!("module {}", m.name), usize::from(m.stream)));
        }
    }
    out
}

/// The result of one damaged parse, checked for shape.
fn outcome(image: &[u8], pdb: &[u8], what: &str) -> Result<(), String> {
    let opts = ReadOptions::new("g.dll").with_pdb("g.pdb");
    match parse(image, &opts, Pdb::InMemory(pdb)) {
        Ok(_) => Ok(()),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "{what}: not one line: {msg:?}");
            // What the PDB says about the image's machine is about the image.
            let names_image = matches!(e, Error::UnsupportedMachine { .. });
            if names_image {
                assert!(msg.starts_with("g.dll: "), "{what}: {msg}");
            } else {
                assert!(
                    msg.starts_with("g.pdb: "),
                    "{what}: an intact image is blamed: {msg}"
                );
            }
            Err(msg)
        }
    }
}

/// Tally of outcomes, by the part of the PDB an error names.
#[derive(Default)]
struct Tally(BTreeMap<&'static str, usize>);

impl Tally {
    fn add(&mut self, r: &Result<(), String>) {
        const PLACES: [&str; 11] = [
            "extends past its section",
            "symbol record",
            "section contribution",
            "DBI module list",
            "type record",
            "id stream",
            "type stream",
            "DBI stream",
            "section header stream",
            "MSF",
            "stream",
        ];
        let key = match r {
            Ok(()) => "ok",
            Err(msg) => PLACES
                .iter()
                .find(|p| msg.contains(*p))
                .copied()
                .unwrap_or("other"),
        };
        if key == "other" || std::env::var_os("DAMAGE_VERBOSE").is_some() {
            if let Err(msg) = r {
                eprintln!("{msg}");
            }
        }
        *self.0.entry(key).or_default() += 1;
    }

    fn require(&self, key: &str, at_least: usize) {
        let n = self.0.get(key).copied().unwrap_or(0);
        assert!(
            n >= at_least,
            "only {n} outcomes of kind `{key}`: {:?}",
            self.0
        );
    }
}

/// Damage one stream in one of several ways.
fn damage(rng: &mut Rng, msf: &Msf, pdb: &mut [u8], stream: usize) {
    let size = msf.size(stream);
    if size == 0 {
        return;
    }
    match rng.below(6) {
        0 => {
            for _ in 0..=rng.below(4) {
                let at = rng.below(size);
                let bit = 1u8 << rng.below(8);
                let mut b = msf.read(pdb, stream)[at];
                b ^= bit;
                msf.write(pdb, stream, at, &[b]);
            }
        }
        1 if size >= 4 => {
            let at = rng.below(size - 3);
            let v = rng.nasty_u32();
            msf.write(pdb, stream, at, &v.to_le_bytes());
        }
        2 if size >= 2 => {
            let at = rng.below(size - 1);
            let v = rng.nasty_u16();
            msf.write(pdb, stream, at, &v.to_le_bytes());
        }
        3 => {
            // Truncate, keeping the number of blocks (and so the layout of
            // every other stream) unless the new size is 0.
            let new = rng.below(size);
            msf.set_size(pdb, stream, new as u32);
        }
        4 => {
            let at = rng.below(size);
            let len = rng.below(size - at) + 1;
            msf.write(pdb, stream, at, &vec![0u8; len]);
        }
        _ => {
            // Garbage over a random range.
            let at = rng.below(size);
            let len = (rng.below(size - at) + 1).min(64);
            let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            msf.write(pdb, stream, at, &junk);
        }
    }
}

#[test]
fn damaged_pdb_streams_are_clean_errors() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut tally = Tally::default();
    for s in samples() {
        outcome(&s.image, &s.pdb, &s.name).expect("the intact pair parses");
        let msf = Msf::parse(&s.pdb);
        let targets = targets(&msf, &s.pdb);
        for round in 0..400 {
            let (what, stream) = &targets[round % targets.len()];
            let mut pdb = s.pdb.clone();
            damage(&mut rng, &msf, &mut pdb, *stream);
            if rng.below(3) == 0 {
                // A second blow to the same stream.
                damage(&mut rng, &msf, &mut pdb, *stream);
            }
            let r = outcome(&s.image, &pdb, &format!("{}: {what} round {round}", s.name));
            tally.add(&r);
        }
    }
    eprintln!("{:?}", tally.0);
    for key in [
        "ok",
        "symbol record",
        "section contribution",
        "DBI module list",
        "type stream",
        "DBI stream",
        "extends past its section",
    ] {
        tally.require(key, 5);
    }
}

/// Structure-aware damage: the fields that size and count things.
#[test]
fn damaged_pdb_sizes_and_counts_are_clean_errors() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut tally = Tally::default();
    for s in samples() {
        let msf = Msf::parse(&s.pdb);
        let dbi_bytes = msf.read(&s.pdb, 3);
        let dbi = streams::dbi(&dbi_bytes).unwrap();
        let modules = dbi.modules().unwrap();
        let module_list_size = u32::from_le_bytes(dbi_bytes[24..28].try_into().unwrap()) as usize;
        let sc_start = 64 + module_list_size;
        let sc_count = (u32::from_le_bytes(dbi_bytes[28..32].try_into().unwrap()) as usize)
            .saturating_sub(4)
            / 28;
        let tpi = msf.read(&s.pdb, 2);
        let layout_records = layout_records(&tpi);
        for round in 0..350 {
            let mut pdb = s.pdb.clone();
            let what;
            match round % 7 {
                0 => {
                    // A DBI header size field (module list, contributions,
                    // section map, file info, type servers, MFC, debug
                    // header, EC).
                    let field = 24 + 4 * rng.below(8);
                    what = format!("DBI header field at {field}");
                    msf.write(&mut pdb, 3, field, &rng.nasty_u32().to_le_bytes());
                }
                1 => {
                    // A module record: its stream or its symbol size.
                    let mut at = 64;
                    let n = rng.below(modules.len());
                    for m in modules.iter().take(n) {
                        at += 64 + m.name.len() + 1;
                        let obj = dbi_bytes[at..].iter().position(|&b| b == 0).unwrap();
                        at = (at + obj + 1).next_multiple_of(4);
                    }
                    if rng.below(2) == 0 {
                        what = format!("module {n} stream");
                        msf.write(&mut pdb, 3, at + 34, &rng.nasty_u16().to_le_bytes());
                    } else {
                        what = format!("module {n} symbol size");
                        msf.write(&mut pdb, 3, at + 36, &rng.nasty_u32().to_le_bytes());
                    }
                }
                2 if sc_count > 0 => {
                    // A section contribution: section, offset, size, module.
                    let entry = sc_start + 4 + 28 * rng.below(sc_count);
                    let (field, len) = [(0, 2), (4, 4), (8, 4), (16, 2)][rng.below(4)];
                    what = format!("contribution field {field}");
                    if len == 2 {
                        msf.write(&mut pdb, 3, entry + field, &rng.nasty_u16().to_le_bytes());
                    } else {
                        msf.write(&mut pdb, 3, entry + field, &rng.nasty_u32().to_le_bytes());
                    }
                }
                3 => {
                    // A symbol record of a module: length, kind, or a
                    // procedure's length, offset or section.
                    let Some(m) = modules
                        .iter()
                        .filter(|m| m.stream != streams::NO_STREAM)
                        .nth(rng.below(modules.len()))
                    else {
                        continue;
                    };
                    let stream = usize::from(m.stream);
                    let bytes = msf.read(&pdb, stream);
                    let mut starts = Vec::new();
                    let mut at = 4;
                    while at + 4 <= m.symbols_size as usize {
                        starts.push(at);
                        at += 2 + u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
                    }
                    let rec = starts[rng.below(starts.len())];
                    let kind = u16::from_le_bytes([bytes[rec + 2], bytes[rec + 3]]);
                    let field = match rng.below(3) {
                        0 => 0,
                        1 => 2,
                        _ if matches!(kind, 0x110f | 0x1110 | 0x1146 | 0x1147) => {
                            // len (16), offset (32), section (36).
                            [16, 32, 36][rng.below(3)]
                        }
                        _ => 0,
                    };
                    what = format!("module `{}` record at {rec:#x} field {field}", m.name);
                    if field == 16 || field == 32 {
                        msf.write(
                            &mut pdb,
                            stream,
                            rec + 4 + field - 4,
                            &rng.nasty_u32().to_le_bytes(),
                        );
                    } else {
                        msf.write(
                            &mut pdb,
                            stream,
                            rec + field,
                            &rng.nasty_u16().to_le_bytes(),
                        );
                    }
                }
                5 if !layout_records.is_empty() => {
                    // A record the layouts come from: a field list, a
                    // structure, class or union, or a bit-field.
                    let (start, len) = layout_records[rng.below(layout_records.len())];
                    let at = start + 4 + rng.below(len.saturating_sub(5).max(1));
                    what = format!("TPI record at {start:#x}, byte {at:#x}");
                    if rng.below(2) == 0 {
                        msf.write(&mut pdb, 2, at, &rng.nasty_u16().to_le_bytes());
                    } else {
                        msf.write(&mut pdb, 2, at, &[rng.next() as u8]);
                    }
                }
                4 => {
                    // The TPI header: header size, first and end index.
                    let field = [4, 8, 12][rng.below(3)];
                    what = format!("TPI header field {field}");
                    msf.write(&mut pdb, 2, field, &rng.nasty_u32().to_le_bytes());
                }
                _ => {
                    // A stream size in the directory, to anything.
                    let stream = [2, 3, usize::from(dbi.symbol_records)][rng.below(3)];
                    what = format!("size of stream {stream}");
                    msf.set_size(&mut pdb, stream, rng.nasty_u32());
                }
            }
            let r = outcome(&s.image, &pdb, &format!("{}: {what}", s.name));
            tally.add(&r);
        }
    }
    eprintln!("{:?}", tally.0);
    for key in [
        "symbol record",
        "section contribution",
        "DBI stream",
        "type stream",
        "type record",
        "extends past its section",
    ] {
        tally.require(key, 5);
    }
}

/// Offset and length (with the length field) of the TPI records the layouts
/// are read from: field lists, structures, classes, unions, bit-fields.
fn layout_records(tpi: &[u8]) -> Vec<(usize, usize)> {
    let header = u32::from_le_bytes(tpi[4..8].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut at = header;
    while at + 4 <= tpi.len() {
        let len = 2 + u16::from_le_bytes([tpi[at], tpi[at + 1]]) as usize;
        let kind = u16::from_le_bytes([tpi[at + 2], tpi[at + 3]]);
        if matches!(kind, 0x1203 | 0x1504 | 0x1505 | 0x1506 | 0x1205) {
            out.push((at, len));
        }
        at += len;
    }
    out
}

#[test]
fn parse_with_pdb_reads_a_pdb_from_memory() {
    let s = &samples()[0];
    let opts = ReadOptions::new("dir/v2.dll");
    let image = crate::read::parse_with_pdb(&s.image, &s.pdb, &opts).unwrap();
    assert!(!image.functions.is_empty());
    // Messages name the default PDB path when none is given.
    let msg = crate::read::parse_with_pdb(&s.image, b"not a pdb", &opts)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        msg,
        "dir/v2.pdb: malformed PDB: not a PDB file: it lacks the MSF 7.00 signature"
    );
    let elf = std::fs::read(corpus().join("07-new-global/bin/x86_64-linux/v1.so")).unwrap();
    let msg = crate::read::parse_with_pdb(&elf, &s.pdb, &opts)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("it is an ELF image, which has no PDB"),
        "{msg}"
    );
}

/// Damaged line information (a module's C13 subsections, or the sizes the
/// module list gives them) costs that module its function lines, never the
/// read: functions, data and types are those of the intact PDB.
#[test]
fn damaged_line_tables_cost_only_lines() {
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let opts = ReadOptions::new("g.dll").with_pdb("g.pdb");
    let (mut rounds, mut fewer) = (0usize, 0usize);
    for s in samples() {
        let intact = parse(&s.image, &opts, Pdb::InMemory(&s.pdb)).unwrap();
        assert!(!intact.lines.is_empty(), "{}: no lines", s.name);
        let msf = Msf::parse(&s.pdb);
        let dbi_bytes = msf.read(&s.pdb, 3);
        let dbi = streams::dbi(&dbi_bytes).unwrap();
        let modules = dbi.modules().unwrap();
        // Where each module record starts in the DBI stream.
        let mut records = Vec::new();
        let mut at = 64;
        for m in &modules {
            records.push(at);
            at += 64 + m.name.len() + 1;
            let obj = dbi_bytes[at..].iter().position(|&b| b == 0).unwrap();
            at = (at + obj + 1).next_multiple_of(4);
        }
        let with_lines: Vec<usize> = (0..modules.len())
            .filter(|&i| modules[i].c13_size > 0 && modules[i].stream != streams::NO_STREAM)
            .collect();
        assert!(!with_lines.is_empty(), "{}", s.name);
        for round in 0..150 {
            let i = with_lines[rng.below(with_lines.len())];
            let m = &modules[i];
            let mut pdb = s.pdb.clone();
            let what = match rng.below(4) {
                0 => {
                    msf.write(&mut pdb, 3, records[i] + 44, &rng.nasty_u32().to_le_bytes());
                    "C13 size".to_owned()
                }
                1 => {
                    msf.write(&mut pdb, 3, records[i] + 40, &rng.nasty_u32().to_le_bytes());
                    "C11 size".to_owned()
                }
                _ => {
                    let start = m.symbols_size as usize + m.c11_size as usize;
                    let at = start + rng.below(m.c13_size as usize);
                    let room = (start + m.c13_size as usize).saturating_sub(at);
                    if room >= 4 && rng.below(2) == 0 {
                        msf.write(
                            &mut pdb,
                            usize::from(m.stream),
                            at,
                            &rng.nasty_u32().to_le_bytes(),
                        );
                    } else {
                        msf.write(&mut pdb, usize::from(m.stream), at, &[rng.next() as u8]);
                    }
                    format!("C13 byte {at:#x}")
                }
            };
            let what = format!("{} module `{}` round {round}: {what}", s.name, m.name);
            let damaged = parse(&s.image, &opts, Pdb::InMemory(&pdb))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(damaged.functions, intact.functions, "{what}");
            assert_eq!(damaged.data, intact.data, "{what}");
            assert_eq!(damaged.types, intact.types, "{what}");
            assert_eq!(damaged.type_uses, intact.type_uses, "{what}");
            rounds += 1;
            fewer += usize::from(damaged.lines.len() < intact.lines.len());
        }
    }
    // Most damage is caught and drops the module's lines.
    assert!(fewer * 3 > rounds, "{fewer} of {rounds} rounds lost lines");
}

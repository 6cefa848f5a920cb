//! Functions that the PDB knows only by a public symbol.
//!
//! A PDB describes a function with a procedure record (`S_GPROC32`,
//! `S_LPROC32`) only when the object that defines it was compiled with
//! CodeView. Code without it, such as mingw's runtime library (`floor`,
//! `exp`, `log` from libmingwex, compiled by GCC) or hand-written assembly
//! (`___chkstk_ms`), still has a public symbol (`S_PUB32`) in the global
//! symbol stream, since lld writes one for every external symbol. Without
//! these functions, a call into one is a call into unnamed code: a branch
//! target that moves between builds with everything linked before it.
//!
//! # Which publics are functions
//!
//! A public becomes a function of the image when all of these hold:
//!
//! - it lies in an executable section (a public flagged as a function,
//!   `CVPSF_FUNCTION`, in a section that is not executable is not code, and
//!   a public without the flag in an executable section is: lld sets the
//!   flag from the COFF symbol type, which assembly sources leave unset);
//! - no procedure record covers its address (a public at a procedure's
//!   start is that procedure, under its decorated or undecorated name; one
//!   inside it is a label of that procedure);
//! - it is not an import thunk: a `jmp [slot]` (x86-64) or
//!   `adrp x16; ldr x16, [x16, #off]; br x16` (ARM64) through a slot of the
//!   import address table, which lld makes for every imported function
//!   (`strcpy`, `log10`) and which the builder already reads as the import
//!   it forwards to.
//!
//! Several publics at one address (`strtoll` and `strtoimax`) are one
//! function with several names, each given the same extent.
//!
//! # Its extent
//!
//! - **Unwind data**: the image's `.pdata` extent that starts at the
//!   public (x86-64 `RUNTIME_FUNCTION`s, ARM64 packed or `.xdata` lengths,
//!   with chained parts and fragments that directly follow folded in, as
//!   [`super::unwind`] reads them for an image without its PDB)
//!   ([`Extent::PublicUnwind`]).
//! - **Otherwise** (a leaf function, which needs no unwind data): from the
//!   public up to the next known start (a procedure, another public, a
//!   `.pdata` entry) in the same section contribution of the DBI stream,
//!   capped at that contribution's end, less trailing linker fill (`int3`
//!   bytes on x86-64, zero words on ARM64) ([`Extent::PublicContribution`]).
//!   An assembler's or compiler's own alignment padding before the next
//!   function (GNU as and clang pad with `nop`s) is code to the reader and
//!   stays in the extent; it is the same in both builds of one object. A
//!   public that no contribution holds has no bound that the PDB vouches
//!   for and is left out; one whose extent is all fill is left out too.
//!
//! # Static code
//!
//! The same objects call static functions of their own, which have no
//! public symbol. Those with unwind data become local functions of their
//! module, named by their offset in its code (`code+0x40`,
//! [`Extent::StaticUnwind`]); see [`static_code`]. Static leaf functions
//! without unwind data are not found: they stay anonymous code.
//!
//! # Checks
//!
//! `.pdata` is read only when some public needs an extent, so an image
//! whose every function has a procedure record reads as before. Every
//! extent must lie in the initialised bytes of the public's executable
//! section, inside the contribution that holds it, and clear of every
//! procedure; on ARM64 a public flagged as a function must start on a
//! 4-byte instruction boundary. Anything else is a one-line error naming
//! the PDB and the symbol.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use super::symbols::{is_exported, NamedContribution, Public, PUBLIC_FUNCTION};
use crate::error::{Error, Result};
use crate::image::{Arch, Extent, Function, Section, Visibility};

/// Everything [`functions`] needs.
pub(super) struct Request<'a, 'data> {
    /// The image's sections, in table order.
    pub(super) sections: &'a [Section<'data>],
    /// The image's architecture.
    pub(super) arch: Arch,
    /// The functions the procedure records give.
    pub(super) procedures: &'a [Function],
    /// The public symbols, placed.
    pub(super) publics: &'a [Public],
    /// The section contributions, sorted by start.
    pub(super) contributions: &'a [NamedContribution],
    /// RVAs of the import address table's slots.
    pub(super) iat_slots: &'a HashSet<u64>,
    /// Export names by RVA.
    pub(super) exports: &'a HashMap<u64, Vec<&'a str>>,
    /// The PDB's path, for messages.
    pub(super) pdb_path: &'a Path,
}

/// A [`Error::Malformed`] about the PDB.
fn lie(path: &Path, detail: String) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        what: "PDB",
        detail,
    }
}

/// The functions known only by public symbols (see the module
/// documentation). `unwind` gives the image's folded `.pdata` extents,
/// sorted; it is called only when some public needs them.
pub(super) fn functions(
    req: &Request<'_, '_>,
    unwind: impl FnOnce() -> Result<Vec<(u64, u64)>>,
) -> Result<Vec<Function>> {
    let mut procs: Vec<(u64, u64, &str)> = req
        .procedures
        .iter()
        .map(|f| (f.rva, f.rva.saturating_add(f.size), f.name.as_str()))
        .collect();
    procs.sort_unstable();
    // The procedure whose extent holds `rva` (or that starts there, even
    // with no length).
    let covering = |rva: u64| -> Option<&(u64, u64, &str)> {
        let after = procs.partition_point(|p| p.0 <= rva);
        let p = procs.get(after.checked_sub(1)?)?;
        (p.0 == rva || rva < p.1).then_some(p)
    };

    // Candidates by address, names in record order, each once.
    let mut by_rva: BTreeMap<u64, Vec<&Public>> = BTreeMap::new();
    for p in req.publics {
        let Some(section) = req.sections.get(p.section) else {
            continue;
        };
        if !section.perms.execute || covering(p.rva).is_some() {
            continue;
        }
        if is_import_thunk(section, p.rva, req.arch, req.iat_slots) {
            continue;
        }
        if req.arch == Arch::Aarch64 && p.rva % 4 != 0 {
            if p.flags & PUBLIC_FUNCTION != 0 {
                return Err(lie(
                    req.pdb_path,
                    format!(
                        "public symbol `{}` at {:#x} is flagged as a function but does not start on a 4-byte instruction boundary",
                        p.name, p.rva
                    ),
                ));
            }
            // A label of data or of a literal pool in ARM64 code.
            continue;
        }
        let names = by_rva.entry(p.rva).or_default();
        if !names.iter().any(|q| q.name == p.name) {
            names.push(p);
        }
    }
    if by_rva.is_empty() {
        return Ok(Vec::new());
    }

    let unwind = unwind()?;
    let unwind_end: HashMap<u64, u64> = unwind.iter().copied().collect();
    let starts: BTreeSet<u64> = procs
        .iter()
        .map(|p| p.0)
        .chain(
            req.publics
                .iter()
                .filter(|p| req.sections.get(p.section).is_some_and(|s| s.perms.execute))
                .map(|p| p.rva),
        )
        .chain(unwind.iter().map(|u| u.0))
        .collect();

    let mut out = Vec::new();
    // The end of the last public function: a public inside it is a label
    // of that function, as one inside a procedure is.
    let mut last_end = 0;
    for (&rva, names) in &by_rva {
        let Some(first) = names.first() else {
            continue;
        };
        if rva < last_end {
            continue;
        }
        let Some(section) = req.sections.get(first.section) else {
            continue;
        };
        let what = || format!("public symbol `{}` at {rva:#x}", first.name);
        let contribution = contribution_at(req.contributions, rva);
        let (end, extent) = match unwind_end.get(&rva) {
            Some(&end) => {
                if let Some(c) = contribution.filter(|c| end > c.end) {
                    return Err(lie(
                        req.pdb_path,
                        format!(
                            "{}: its unwind data ({rva:#x}..{end:#x}) runs past the end of the section contribution of `{}` that holds it ({:#x}..{:#x})",
                            what(),
                            c.module,
                            c.start,
                            c.end
                        ),
                    ));
                }
                (end, Extent::PublicUnwind)
            }
            None => {
                let Some(c) = contribution else {
                    continue;
                };
                let limit = starts
                    .range(rva.saturating_add(1)..)
                    .next()
                    .map_or(c.end, |&next| next.min(c.end));
                let bytes = section.bytes_at(rva, limit.saturating_sub(rva));
                let len = bytes.map_or(0, |b| super::unwind::code_length(b, req.arch));
                if bytes.is_some() && len == 0 {
                    // Nothing but fill: no code to call.
                    continue;
                }
                (rva.saturating_add(len), Extent::PublicContribution)
            }
        };
        let size = end.saturating_sub(rva);
        if section.bytes_at(rva, size).is_none() || size == 0 {
            return Err(lie(
                req.pdb_path,
                format!(
                    "{}: its extent ({rva:#x}..{end:#x}) lies outside the initialised bytes of section `{}` ({:#x}..{:#x})",
                    what(),
                    section.name,
                    section.rva,
                    section
                        .rva
                        .saturating_add(u64::try_from(section.data.len()).unwrap_or(u64::MAX))
                ),
            ));
        }
        let after = procs.partition_point(|p| p.0 < rva);
        if let Some(p) = procs.get(after).filter(|p| p.0 < end) {
            return Err(lie(
                req.pdb_path,
                format!(
                    "{}: its extent ({rva:#x}..{end:#x}) overlaps procedure `{}` ({:#x}..{:#x})",
                    what(),
                    p.2,
                    p.0,
                    p.1
                ),
            ));
        }
        last_end = end;
        let unit = contribution.map(|c| c.module.clone());
        for p in names {
            out.push(Function {
                name: p.name.clone(),
                rva,
                size,
                unit: unit.clone(),
                visibility: if is_exported(req.exports, rva, &p.name) {
                    Visibility::Exported
                } else {
                    Visibility::Global
                },
                extent,
            });
        }
    }
    out.extend(static_code(req, &procs, &out, &unwind));
    Ok(out)
}

/// Code that neither a procedure nor a public names but that has unwind
/// data: the static functions of objects built without CodeView (mingw's
/// `dtoa_lock`, dllcrt2's `__DllMainCRTStartup`), which their public
/// neighbours call. Each `.pdata` extent that no known function overlaps
/// and that lies inside one section contribution is a local function of
/// that contribution's module, named by its place in the module's code:
/// `code+0x40` for offset 0x40 of the module's first contribution to an
/// executable section, `code2+0x40` in its second, and so on. The same
/// object linked into two builds gives the same names, wherever the linker
/// puts it.
fn static_code(
    req: &Request<'_, '_>,
    procs: &[(u64, u64, &str)],
    publics: &[Function],
    unwind: &[(u64, u64)],
) -> Vec<Function> {
    let mut known: Vec<(u64, u64)> = procs
        .iter()
        .map(|p| (p.0, p.1.max(p.0.saturating_add(1))))
        .chain(
            publics
                .iter()
                .map(|f| (f.rva, f.rva.saturating_add(f.size.max(1)))),
        )
        .collect();
    known.sort_unstable();
    // Known extents do not overlap one another, so `[begin, end)` overlaps
    // one exactly when the last that starts before `end` ends after `begin`.
    let overlaps = |begin: u64, end: u64| {
        let after = known.partition_point(|k| k.0 < end);
        after
            .checked_sub(1)
            .and_then(|i| known.get(i))
            .is_some_and(|k| begin < k.1)
    };
    // Each contribution to an executable section: its place among its
    // module's (0 for the first).
    let mut ordinal: HashMap<u64, usize> = HashMap::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for c in req.contributions {
        if holding_section(req.sections, c.start).is_some_and(|s| s.perms.execute) {
            let n = seen.entry(c.module.as_str()).or_default();
            ordinal.insert(c.start, *n);
            *n = n.saturating_add(1);
        }
    }
    let mut out = Vec::new();
    for &(begin, end) in unwind {
        if overlaps(begin, end) {
            continue;
        }
        let Some(c) = contribution_at(req.contributions, begin).filter(|c| end <= c.end) else {
            continue;
        };
        let offset = begin.saturating_sub(c.start);
        let name = match ordinal.get(&c.start).copied().unwrap_or_default() {
            0 => format!("code+{offset:#x}"),
            n => format!("code{}+{offset:#x}", n.saturating_add(1)),
        };
        out.push(Function {
            name,
            rva: begin,
            size: end.saturating_sub(begin),
            unit: Some(c.module.clone()),
            visibility: Visibility::Local,
            extent: Extent::StaticUnwind,
        });
    }
    out
}

/// The section that holds `rva`.
fn holding_section<'s, 'data>(
    sections: &'s [Section<'data>],
    rva: u64,
) -> Option<&'s Section<'data>> {
    super::holding(sections, rva)
}

/// The contribution that holds `rva`.
fn contribution_at(contributions: &[NamedContribution], rva: u64) -> Option<&NamedContribution> {
    let after = contributions.partition_point(|c| c.start <= rva);
    contributions
        .get(after.checked_sub(1)?)
        .filter(|c| rva < c.end)
}

/// Whether the code at `rva` is an import thunk: a jump through a slot of
/// the import address table, as lld makes them (x86-64 `jmp [rip+disp32]`;
/// ARM64 `adrp x16, page; ldr x16, [x16, #off]; br x16`).
fn is_import_thunk(section: &Section<'_>, rva: u64, arch: Arch, iat_slots: &HashSet<u64>) -> bool {
    let slot = match arch {
        Arch::X86_64 => section.bytes_at(rva, 6).and_then(|b| {
            let (op, disp) = b.split_at_checked(2)?;
            if op != [0xff, 0x25] {
                return None;
            }
            let disp = i32::from_le_bytes(disp.try_into().ok()?);
            rva.checked_add(6)?.checked_add_signed(i64::from(disp))
        }),
        Arch::Aarch64 => section.bytes_at(rva, 12).and_then(|b| {
            let word = |k: usize| -> Option<u32> {
                let at = k.checked_mul(4)?;
                Some(u32::from_le_bytes(
                    b.get(at..at.checked_add(4)?)?.try_into().ok()?,
                ))
            };
            let (adrp, ldr, br) = (word(0)?, word(1)?, word(2)?);
            // adrp x16; ldr x16, [x16, #imm12 * 8]; br x16.
            if adrp & 0x9f00_001f != 0x9000_0010
                || ldr & 0xffc0_03ff != 0xf940_0210
                || br != 0xd61f_0200
            {
                return None;
            }
            let immlo = u64::from((adrp >> 29) & 3);
            let immhi = u64::from((adrp >> 5) & 0x7_ffff);
            let pages = i64::try_from((immhi << 2) | immlo).ok()?;
            // Sign-extend the 21-bit page count.
            let pages = if pages & (1 << 20) != 0 {
                pages.checked_sub(1 << 21)?
            } else {
                pages
            };
            let page = (rva & !0xfff).checked_add_signed(pages.checked_mul(4096)?)?;
            page.checked_add(u64::from((ldr >> 10) & 0xfff).checked_mul(8)?)
        }),
    };
    slot.is_some_and(|s| iat_slots.contains(&s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Permissions;

    const TEXT: u64 = 0x1000;

    fn text(data: &[u8]) -> Section<'_> {
        Section {
            name: ".text".into(),
            rva: TEXT,
            size: data.len() as u64,
            perms: Permissions {
                read: true,
                write: false,
                execute: true,
            },
            data,
        }
    }

    fn public(name: &str, rva: u64, flags: u32) -> Public {
        Public {
            name: name.into(),
            rva,
            section: 0,
            flags,
        }
    }

    fn contribution(start: u64, end: u64) -> NamedContribution {
        NamedContribution {
            start,
            end,
            module: "m.o".into(),
        }
    }

    fn procedure(name: &str, rva: u64, size: u64) -> Function {
        Function {
            name: name.into(),
            rva,
            size,
            unit: Some("p.obj".into()),
            visibility: Visibility::Global,
            extent: Extent::Symbol,
        }
    }

    struct Case<'a> {
        sections: Vec<Section<'a>>,
        arch: Arch,
        procedures: Vec<Function>,
        publics: Vec<Public>,
        contributions: Vec<NamedContribution>,
        iat: HashSet<u64>,
        unwind: Vec<(u64, u64)>,
    }

    impl Case<'_> {
        fn run(&self) -> Result<Vec<(String, u64, u64, Extent)>> {
            let exports = HashMap::new();
            let req = Request {
                sections: &self.sections,
                arch: self.arch,
                procedures: &self.procedures,
                publics: &self.publics,
                contributions: &self.contributions,
                iat_slots: &self.iat,
                exports: &exports,
                pdb_path: Path::new("t.pdb"),
            };
            let found = functions(&req, || Ok(self.unwind.clone()))?;
            Ok(found
                .into_iter()
                .map(|f| (f.name, f.rva, f.size, f.extent))
                .collect())
        }
    }

    /// 0x1000: a procedure (16 bytes); 0x1010: a public with unwind data
    /// (0x1010..0x1018); 0x1020: a leaf public, 3 bytes of code and int3
    /// fill; 0x1030: an import thunk through the IAT slot at 0x2000;
    /// 0x1038: static code with unwind data. One contribution of `m.o`
    /// from 0x1010 to 0x1040.
    fn case(code: &[u8]) -> Case<'_> {
        Case {
            sections: vec![text(code)],
            arch: Arch::X86_64,
            procedures: vec![procedure("p", 0x1000, 0x10)],
            publics: vec![
                public("p", 0x1000, PUBLIC_FUNCTION),
                public("inside_p", 0x1004, 0),
                public("f", 0x1010, PUBLIC_FUNCTION),
                public("f_alias", 0x1010, PUBLIC_FUNCTION),
                public("leaf", 0x1020, 0),
                public("strcpy", 0x1030, 0),
            ],
            contributions: vec![
                NamedContribution {
                    module: "p.obj".into(),
                    ..contribution(0x1000, 0x1010)
                },
                contribution(0x1010, 0x1040),
            ],
            iat: HashSet::from([0x2000]),
            unwind: vec![(0x1010, 0x1018), (0x1038, 0x103c)],
        }
    }

    fn code() -> Vec<u8> {
        let mut c = vec![0x90u8; 0x40];
        c[0x20..0x23].copy_from_slice(&[0x8d, 0x04, 0xc3]);
        c[0x23..0x30].fill(0xcc);
        // jmp [rip + 0x2000 - 0x1036]
        c[0x30..0x36].copy_from_slice(&[0xff, 0x25, 0xca, 0x0f, 0x00, 0x00]);
        c
    }

    #[test]
    fn publics_become_functions_with_their_extents() {
        let code = code();
        assert_eq!(
            case(&code).run().unwrap(),
            [
                ("f".to_owned(), 0x1010, 8, Extent::PublicUnwind),
                ("f_alias".to_owned(), 0x1010, 8, Extent::PublicUnwind),
                ("leaf".to_owned(), 0x1020, 3, Extent::PublicContribution),
                ("code+0x28".to_owned(), 0x1038, 4, Extent::StaticUnwind),
            ]
        );
    }

    #[test]
    fn without_publics_the_unwind_data_is_not_read() {
        let code = code();
        let mut c = case(&code);
        c.publics.retain(|p| p.name == "p" || p.name == "strcpy");
        let exports = HashMap::new();
        let req = Request {
            sections: &c.sections,
            arch: c.arch,
            procedures: &c.procedures,
            publics: &c.publics,
            contributions: &c.contributions,
            iat_slots: &c.iat,
            exports: &exports,
            pdb_path: Path::new("t.pdb"),
        };
        let found = functions(&req, || panic!("read .pdata")).unwrap();
        assert!(found.is_empty());
    }

    #[test]
    fn a_lying_pdb_is_refused_naming_the_symbol() {
        let code = code();
        // The contribution ends inside the unwind extent.
        let mut c = case(&code);
        c.contributions = vec![contribution(0x1010, 0x1014)];
        assert_eq!(
            c.run().unwrap_err().to_string(),
            "t.pdb: malformed PDB: public symbol `f` at 0x1010: its unwind data (0x1010..0x1018) runs past the end of the section contribution of `m.o` that holds it (0x1010..0x1014)"
        );
        // The unwind extent runs into a procedure.
        let mut c = case(&code);
        c.procedures.push(procedure("q", 0x1014, 4));
        assert_eq!(
            c.run().unwrap_err().to_string(),
            "t.pdb: malformed PDB: public symbol `f` at 0x1010: its extent (0x1010..0x1018) overlaps procedure `q` (0x1014..0x1018)"
        );
        // A leaf public past the initialised bytes.
        let short = &code[..0x21];
        let c = case(short);
        assert_eq!(
            c.run().unwrap_err().to_string(),
            "t.pdb: malformed PDB: public symbol `leaf` at 0x1020: its extent (0x1020..0x1020) lies outside the initialised bytes of section `.text` (0x1000..0x1021)"
        );
        // ARM64: a function that does not start on an instruction.
        let mut c = case(&code);
        c.arch = Arch::Aarch64;
        c.publics = vec![public("g", 0x1012, PUBLIC_FUNCTION)];
        assert_eq!(
            c.run().unwrap_err().to_string(),
            "t.pdb: malformed PDB: public symbol `g` at 0x1012 is flagged as a function but does not start on a 4-byte instruction boundary"
        );
    }
}

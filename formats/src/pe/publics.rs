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
//!   capped at that contribution's end, less the fill the linker or the
//!   assembler leaves after code (trailing `int3` bytes on x86-64, zero
//!   words on ARM64) ([`Extent::PublicContribution`]). A public that no
//!   contribution holds has no bound that the PDB vouches for and is left
//!   out; one whose extent is all fill is left out too.
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

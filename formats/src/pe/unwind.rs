//! Functions of a PE image read without its PDB: a distribution-style
//! "stripped" DLL, read as the ELF reader reads a stripped shared object.
//!
//! The exception directory (`.pdata`) gives the extent of every function
//! that has unwind data, as `.eh_frame` FDEs do for ELF:
//!
//! - **x86-64**: each `RUNTIME_FUNCTION` gives `[BeginAddress, EndAddress)`.
//!   An entry whose `UNWIND_INFO` carries `UNW_FLAG_CHAININFO` (or whose
//!   unwind address has its low bit set, an indirect entry) is a secondary
//!   part of the function its chain ends at: when it directly follows that
//!   function's extent it is folded into it; elsewhere (a part moved out of
//!   line) it is a function of its own, as GCC's `.cold` FDEs are.
//! - **ARM64**: each entry gives the start; the length is the packed
//!   `FunctionLength` field (flags 1 and 2) or the one in the `.xdata`
//!   header it points at (flag 0), in units of 4 bytes. A packed fragment
//!   (flag 2: code without prologue or epilogue, the continuation of a
//!   function split in parts) that directly follows the previous extent is
//!   folded into it; elsewhere it is a function of its own.
//!
//! A function is named by the export table where an export points at its
//! start (every export name there: aliases, which the builder folds) and
//! `sub_<rva>` otherwise, exactly as the ELF reader names FDE ranges from
//! `.dynsym`.
//!
//! One thing has no ELF counterpart: the x64 and ARM64 ABIs need no unwind
//! data for a *leaf* function (one that neither calls nor touches the stack),
//! and linkers emit none, where GCC emits an FDE for every function. An
//! export that points into executable code that no `.pdata` extent covers
//! is such a leaf function; its extent runs to the next known function start
//! (or the end of its section's initialised bytes), less the fill the
//! linker puts between functions (`int3` bytes on x86-64, zero words on
//! ARM64). Code that neither `.pdata` nor an export starts (a leaf function
//! that is not exported) is not found; when it follows an exported leaf
//! function, it is counted in that function's extent.
//!
//! There are no data objects: nothing names the image's data without the
//! PDB (exported data is not told apart from code by the export table).
//!
//! Every entry is checked: it lies inside the initialised bytes of one
//! executable section, its unwind data inside a section, entries do not
//! overlap, and chains end within [`CHAIN_LIMIT`] links.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use object::pe;
use object::read::pe::PeFile64;

use super::{bytes_at, holding, le_u32, malformed};
use crate::error::Result;
use crate::image::{Arch, Export, Extent, Function, Section, Visibility};

/// Size of an x86-64 `RUNTIME_FUNCTION`.
const X64_ENTRY: usize = 12;
/// Size of an ARM64 `.pdata` entry.
const ARM64_ENTRY: usize = 8;
/// `UNW_FLAG_CHAININFO` in the flags of an x86-64 `UNWIND_INFO`.
const UNW_FLAG_CHAININFO: u8 = 0x4;
/// `RUNTIME_FUNCTION_INDIRECT`: the low bit of an x86-64 unwind address
/// marks a pointer to another `RUNTIME_FUNCTION`, whose unwind data applies.
const RUNTIME_FUNCTION_INDIRECT: u32 = 0x1;
/// How many chained unwind records are followed before the chain is taken
/// to be a loop (the Windows unwinder's own limit).
pub(super) const CHAIN_LIMIT: usize = 32;
/// The ARM64 `.xdata` header's `FunctionLength` field (in 4-byte units).
const XDATA_LENGTH_MASK: u32 = 0x3_ffff;
/// The ARM64 packed entry's `FunctionLength` field, after its shift.
const PACKED_LENGTH_MASK: u32 = 0x7ff;

/// What an exception directory entry continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PartOf {
    /// Nothing: it starts a function.
    Nothing,
    /// The function that starts at this RVA (an x86-64 chained entry).
    Function(u64),
    /// Whatever extent ends where it starts (an ARM64 packed fragment).
    Previous,
}

/// One checked exception directory entry.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Its index in the directory, for messages.
    index: usize,
    /// RVA of its first byte of code.
    begin: u64,
    /// RVA just past its code.
    end: u64,
    /// What it continues.
    part_of: PartOf,
}

/// The functions of the image, from the exception directory and the
/// exports. See the module documentation.
pub(super) fn functions(
    file: &PeFile64<'_>,
    sections: &[Section<'_>],
    arch: Arch,
    exports: &[Export],
    path: &Path,
) -> Result<Vec<Function>> {
    let extents = extents(file, sections, arch, path)?;
    let mut names: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for e in exports {
        names.entry(e.rva).or_default().push(e.name.as_str());
    }
    let leaves = leaf_exports(sections, arch, &extents, &names);
    let mut out = Vec::new();
    for &(rva, end) in extents.iter().chain(&leaves) {
        let size = end.saturating_sub(rva);
        match names.get(&rva) {
            Some(list) => out.extend(list.iter().map(|name| Function {
                name: (*name).to_owned(),
                rva,
                size,
                unit: None,
                visibility: Visibility::Exported,
                extent: Extent::Stripped,
            })),
            None => out.push(Function {
                name: format!("sub_{rva:x}"),
                rva,
                size,
                unit: None,
                visibility: Visibility::Global,
                extent: Extent::Stripped,
            }),
        }
    }
    Ok(out)
}

/// The extents of the image's exception directory: every entry checked,
/// secondary parts folded into the function they continue, sorted (see the
/// module documentation). Used for an image read with its PDB too, for the
/// functions it knows only by public symbols ([`super::publics`]).
pub(super) fn extents(
    file: &PeFile64<'_>,
    sections: &[Section<'_>],
    arch: Arch,
    path: &Path,
) -> Result<Vec<(u64, u64)>> {
    fold(entries(file, sections, arch, path)?, path)
}

/// Every entry of the image's exception directory (see [`table_entries`]).
fn entries(
    file: &PeFile64<'_>,
    sections: &[Section<'_>],
    arch: Arch,
    path: &Path,
) -> Result<Vec<Entry>> {
    let Some(dir) = file.data_directory(pe::IMAGE_DIRECTORY_ENTRY_EXCEPTION) else {
        return Ok(Vec::new());
    };
    let (rva, size) = dir.address_range();
    if rva == 0 || size == 0 {
        return Ok(Vec::new());
    }
    table_entries(sections, arch, u64::from(rva), u64::from(size), path)
}

/// The entries of the exception directory at `[rva, rva + size)`, checked,
/// in directory order (entries of all zeros, which some linkers leave as
/// padding, skipped).
fn table_entries(
    sections: &[Section<'_>],
    arch: Arch,
    rva: u64,
    size: u64,
    path: &Path,
) -> Result<Vec<Entry>> {
    let width = match arch {
        Arch::X86_64 => X64_ENTRY,
        Arch::Aarch64 => ARM64_ENTRY,
    };
    let table = bytes_at(sections, rva, size).ok_or_else(|| {
        malformed(
            path,
            format!(
                "exception directory ({rva:#x}..{:#x}) lies outside the initialised bytes of every section",
                rva.saturating_add(size)
            ),
        )
    })?;
    let chunks = table.chunks_exact(width);
    if !chunks.remainder().is_empty() {
        return Err(malformed(
            path,
            format!(
                "exception directory at {rva:#x} is {size} bytes, not a whole number of {width}-byte entries"
            ),
        ));
    }
    let mut out = Vec::with_capacity(chunks.len());
    for (index, raw) in chunks.enumerate() {
        if raw.iter().all(|&b| b == 0) {
            continue;
        }
        let word = |at: usize| le_u32(raw, at).unwrap_or_default();
        let entry = match arch {
            Arch::X86_64 => x64_entry(sections, index, [word(0), word(4), word(8)], path)?,
            Arch::Aarch64 => arm64_entry(sections, index, word(0), word(4), path)?,
        };
        out.push(entry);
    }
    Ok(out)
}

/// `entry N (0xBEGIN..0xEND)`, for messages.
fn describe(index: usize, begin: u64, end: u64) -> String {
    format!("exception directory entry {index} ({begin:#x}..{end:#x})")
}

/// Check that `[begin, end)` is code: not empty, inside the initialised
/// bytes of one executable section.
fn check_code(
    sections: &[Section<'_>],
    index: usize,
    begin: u64,
    end: u64,
    path: &Path,
) -> Result<()> {
    let what = || describe(index, begin, end);
    let len = end
        .checked_sub(begin)
        .filter(|&n| n > 0)
        .ok_or_else(|| malformed(path, format!("{} is empty or reversed", what())))?;
    let code = holding(sections, begin)
        .filter(|s| s.perms.execute)
        .and_then(|s| s.bytes_at(begin, len));
    if code.is_none() {
        return Err(malformed(
            path,
            format!(
                "{} lies outside the initialised bytes of every executable section",
                what()
            ),
        ));
    }
    Ok(())
}

/// An x86-64 `RUNTIME_FUNCTION` (`[begin, end, unwind]`), checked, with the
/// function its unwind chain ends at.
fn x64_entry(
    sections: &[Section<'_>],
    index: usize,
    [begin, end, unwind]: [u32; 3],
    path: &Path,
) -> Result<Entry> {
    let (begin, end) = (u64::from(begin), u64::from(end));
    check_code(sections, index, begin, end, path)?;
    let root = x64_chain_root(sections, index, (begin, end), unwind, path)?;
    Ok(Entry {
        index,
        begin,
        end,
        part_of: match root {
            Some(root) if root != begin => PartOf::Function(root),
            _ => PartOf::Nothing,
        },
    })
}

/// The start of the function an x86-64 entry's unwind data chains to
/// (through `UNW_FLAG_CHAININFO` records and indirect entries), or `None`
/// when it chains to nothing.
fn x64_chain_root(
    sections: &[Section<'_>],
    index: usize,
    (begin, end): (u64, u64),
    mut unwind: u32,
    path: &Path,
) -> Result<Option<u64>> {
    let what = || describe(index, begin, end);
    let read_entry = |at: u64| -> Result<(u64, u32)> {
        let raw = bytes_at(sections, at, 12).ok_or_else(|| {
            malformed(
                path,
                format!(
                    "{}: the runtime function its unwind data chains to, at {at:#x}, lies outside the initialised bytes of every section",
                    what()
                ),
            )
        })?;
        let field = |o: usize| le_u32(raw, o).unwrap_or_default();
        Ok((u64::from(field(0)), field(8)))
    };
    let mut root = None;
    for _ in 0..CHAIN_LIMIT {
        if unwind & RUNTIME_FUNCTION_INDIRECT != 0 {
            let (b, u) = read_entry(u64::from(unwind & !RUNTIME_FUNCTION_INDIRECT))?;
            root = Some(b);
            unwind = u;
            continue;
        }
        let at = u64::from(unwind);
        let info = bytes_at(sections, at, 4).ok_or_else(|| {
            malformed(
                path,
                format!(
                    "{}: its unwind information at {at:#x} lies outside the initialised bytes of every section",
                    what()
                ),
            )
        })?;
        let flags = info.first().copied().unwrap_or_default() >> 3;
        if flags & UNW_FLAG_CHAININFO == 0 {
            return Ok(root);
        }
        // The chained RUNTIME_FUNCTION follows the unwind codes, whose
        // count is rounded up to an even number of 2-byte slots.
        let codes = u64::from(info.get(2).copied().unwrap_or_default());
        let slots = codes.saturating_add(codes & 1);
        let (b, u) = read_entry(at.saturating_add(4).saturating_add(slots.saturating_mul(2)))?;
        root = Some(b);
        unwind = u;
    }
    Err(malformed(
        path,
        format!(
            "{}: its unwind data chains through more than {CHAIN_LIMIT} records (a loop)",
            what()
        ),
    ))
}

/// An ARM64 `.pdata` entry (`begin`, and the packed unwind data or the
/// `.xdata` RVA), checked.
fn arm64_entry(
    sections: &[Section<'_>],
    index: usize,
    begin: u32,
    word: u32,
    path: &Path,
) -> Result<Entry> {
    let begin = u64::from(begin);
    let units = match word & 3 {
        0 => {
            let at = u64::from(word);
            let header = bytes_at(sections, at, 4)
                .and_then(|b| le_u32(b, 0))
                .ok_or_else(|| {
                    malformed(
                        path,
                        format!(
                            "exception directory entry {index} (at {begin:#x}): its unwind data at {at:#x} lies outside the initialised bytes of every section"
                        ),
                    )
                })?;
            header & XDATA_LENGTH_MASK
        }
        1 | 2 => (word >> 2) & PACKED_LENGTH_MASK,
        _ => {
            return Err(malformed(
                path,
                format!(
                "exception directory entry {index} (at {begin:#x}) has the reserved unwind flag 3"
            ),
            ))
        }
    };
    let end = begin.saturating_add(u64::from(units).saturating_mul(4));
    if begin % 4 != 0 {
        return Err(malformed(
            path,
            format!(
                "{} does not start on a 4-byte instruction boundary",
                describe(index, begin, end)
            ),
        ));
    }
    check_code(sections, index, begin, end, path)?;
    Ok(Entry {
        index,
        begin,
        end,
        part_of: if word & 3 == 2 {
            PartOf::Previous
        } else {
            PartOf::Nothing
        },
    })
}

/// Sort the entries, refuse overlaps, and fold each secondary part that
/// directly follows the extent it continues into it. Returns the extents
/// `(begin, end)`, sorted.
fn fold(mut entries: Vec<Entry>, path: &Path) -> Result<Vec<(u64, u64)>> {
    entries.sort_unstable_by_key(|e| (e.begin, e.end, e.index));
    for pair in entries.windows(2) {
        if let [a, b] = pair {
            if b.begin < a.end {
                return Err(malformed(
                    path,
                    format!(
                        "{} and {} overlap",
                        describe(a.index, a.begin, a.end),
                        describe(b.index, b.begin, b.end)
                    ),
                ));
            }
        }
    }
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(entries.len());
    for e in entries {
        let last = out.last_mut();
        let follows = last.as_ref().is_some_and(|(begin, end)| {
            *end == e.begin
                && match e.part_of {
                    PartOf::Nothing => false,
                    PartOf::Function(root) => *begin == root,
                    PartOf::Previous => true,
                }
        });
        match last {
            Some(extent) if follows => extent.1 = e.end,
            _ => out.push((e.begin, e.end)),
        }
    }
    Ok(out)
}

/// Exported leaf functions: exports into executable code that no extent
/// covers, each running to the next known start or the end of its
/// section's initialised bytes, less the linker's fill. Sorted.
fn leaf_exports(
    sections: &[Section<'_>],
    arch: Arch,
    extents: &[(u64, u64)],
    names: &BTreeMap<u64, Vec<&str>>,
) -> Vec<(u64, u64)> {
    let covered = |rva: u64| {
        let after = extents.partition_point(|&(begin, _)| begin <= rva);
        after
            .checked_sub(1)
            .and_then(|i| extents.get(i))
            .is_some_and(|&(_, end)| rva < end)
    };
    let code = |rva: u64| holding(sections, rva).filter(|s| s.perms.execute && s.contains(rva));
    let starts: Vec<u64> = names
        .keys()
        .copied()
        .filter(|&rva| code(rva).is_some() && !covered(rva))
        .filter(|&rva| arch == Arch::X86_64 || rva % 4 == 0)
        .collect();
    let every: BTreeSet<u64> = extents
        .iter()
        .map(|&(begin, _)| begin)
        .chain(starts.iter().copied())
        .collect();
    let mut out = Vec::new();
    for rva in starts {
        let Some(section) = code(rva) else {
            continue;
        };
        let data_len = u64::try_from(section.data.len()).unwrap_or(u64::MAX);
        let section_end = section.rva.saturating_add(data_len.min(section.size));
        let limit = every
            .range(rva.saturating_add(1)..)
            .next()
            .map_or(section_end, |&next| next.min(section_end));
        let Some(bytes) = section.bytes_at(rva, limit.saturating_sub(rva)) else {
            continue;
        };
        let len = code_length(bytes, arch);
        if len > 0 {
            out.push((rva, rva.saturating_add(len)));
        }
    }
    out
}

/// The length of `bytes` without the fill the linker leaves after a
/// function: trailing `int3` (0xCC) bytes on x86-64, trailing zero words
/// (`udf #0`) on ARM64, whose code is whole 4-byte words.
pub(super) fn code_length(bytes: &[u8], arch: Arch) -> u64 {
    let len = match arch {
        Arch::X86_64 => bytes
            .iter()
            .rposition(|&b| b != 0xcc)
            .map_or(0, |i| i.saturating_add(1)),
        Arch::Aarch64 => {
            let mut n = bytes.len() / 4;
            while let Some(prev) = n.checked_sub(1) {
                if le_u32(bytes, prev.saturating_mul(4)).is_some_and(|w| w != 0) {
                    break;
                }
                n = prev;
            }
            n.saturating_mul(4)
        }
    };
    u64::try_from(len).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Permissions;
    use crate::read::{parse, ReadOptions};
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn section<'d>(name: &str, rva: u64, data: &'d [u8], execute: bool) -> Section<'d> {
        Section {
            name: name.into(),
            rva,
            size: data.len() as u64,
            perms: Permissions {
                read: true,
                write: false,
                execute,
            },
            data,
        }
    }

    fn put32(d: &mut [u8], at: usize, v: u32) {
        d[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// A directory of x86-64 entries at 0x2000 in `rdata`.
    fn x64_table(rdata: &mut [u8], entries: &[[u32; 3]]) -> u64 {
        for (i, e) in entries.iter().enumerate() {
            for (j, w) in e.iter().enumerate() {
                put32(rdata, i * 12 + j * 4, *w);
            }
        }
        (entries.len() * 12) as u64
    }

    fn extents(
        code: &[u8],
        rdata: &[u8],
        arch: Arch,
        size: u64,
    ) -> std::result::Result<Vec<(u64, u64)>, String> {
        let sections = [
            section(".text", 0x1000, code, true),
            section(".rdata", 0x2000, rdata, false),
        ];
        let p = Path::new("t.dll");
        table_entries(&sections, arch, 0x2000, size, p)
            .and_then(|e| fold(e, p))
            .map_err(|e| e.to_string())
    }

    /// UNWIND_INFO at `at`: version 1, `flags`, `codes` unwind codes, and
    /// (when chained) the RUNTIME_FUNCTION after them.
    fn unwind_info(rdata: &mut [u8], at: usize, codes: u8, chained: Option<[u32; 3]>) {
        let flags = if chained.is_some() {
            UNW_FLAG_CHAININFO
        } else {
            0
        };
        rdata[at] = 1 | (flags << 3);
        rdata[at + 2] = codes;
        if let Some(rf) = chained {
            let slots = usize::from(codes) + usize::from(codes & 1);
            for (j, w) in rf.iter().enumerate() {
                put32(rdata, at + 4 + slots * 2 + j * 4, *w);
            }
        }
    }

    #[test]
    fn x64_chained_parts_fold_into_their_function() {
        let code = vec![0x90u8; 0x100];
        let mut rdata = vec![0u8; 0x400];
        unwind_info(&mut rdata, 0x100, 0, None);
        // One code (odd): the chained function sits after two slots.
        unwind_info(&mut rdata, 0x110, 1, Some([0x1000, 0x1010, 0x2100]));
        unwind_info(&mut rdata, 0x130, 0, Some([0x1000, 0x1010, 0x2100]));
        let size = x64_table(
            &mut rdata,
            &[
                [0x1000, 0x1010, 0x2100],
                // Chained to 0x1000 and right after it: folded.
                [0x1010, 0x1020, 0x2110],
                // Chained to 0x1000, out of line: a function of its own.
                [0x1040, 0x1050, 0x2130],
                [0x1050, 0x1060, 0x2100],
                // Indirect, to the entry above (index 3), right after it.
                [0x1060, 0x1070, (0x2000 + 3 * 12) | 1],
                // Padding.
                [0, 0, 0],
            ],
        );
        assert_eq!(
            extents(&code, &rdata, Arch::X86_64, size).unwrap(),
            [(0x1000, 0x1020), (0x1040, 0x1050), (0x1050, 0x1070)]
        );
    }

    #[test]
    fn x64_damaged_entries_are_refused() {
        let code = vec![0x90u8; 0x100];
        let check = |entries: &[[u32; 3]], prepare: &dyn Fn(&mut Vec<u8>), want: &str| {
            let mut rdata = vec![0u8; 0x400];
            unwind_info(&mut rdata, 0x100, 0, None);
            prepare(&mut rdata);
            let size = x64_table(&mut rdata, entries);
            let msg = extents(&code, &rdata, Arch::X86_64, size).unwrap_err();
            assert!(msg.starts_with("t.dll: malformed PE image: "), "{msg}");
            assert!(msg.contains(want), "{msg}");
        };
        check(
            &[[0x1000, 0x1010, 0x2100], [0x1008, 0x1018, 0x2100]],
            &|_| {},
            "exception directory entry 0 (0x1000..0x1010) and exception directory entry 1 (0x1008..0x1018) overlap",
        );
        check(
            &[[0x1010, 0x1010, 0x2100]],
            &|_| {},
            "entry 0 (0x1010..0x1010) is empty or reversed",
        );
        check(
            &[[0x2000, 0x2010, 0x2100]],
            &|_| {},
            "(0x2000..0x2010) lies outside the initialised bytes of every executable section",
        );
        check(
            &[[0x10f0, 0x1110, 0x2100]],
            &|_| {},
            "outside the initialised bytes of every executable section",
        );
        check(
            &[[0x1000, 0x1010, 0x9000]],
            &|_| {},
            "its unwind information at 0x9000 lies outside",
        );
        // A chain that leads back to itself.
        check(
            &[[0x1000, 0x1010, 0x2200]],
            &|r| unwind_info(r, 0x200, 0, Some([0x1000, 0x1010, 0x2200])),
            "chains through more than 32 records (a loop)",
        );
        // A chained function past the end of the data.
        check(
            &[[0x1000, 0x1010, 0x23fc]],
            &|r| r[0x3fc] = 1 | (UNW_FLAG_CHAININFO << 3),
            "the runtime function its unwind data chains to, at 0x2400, lies outside",
        );
        // The directory itself.
        let rdata = vec![0u8; 0x400];
        let msg = extents(&code, &rdata, Arch::X86_64, 13).unwrap_err();
        assert!(
            msg.contains("is 13 bytes, not a whole number of 12-byte entries"),
            "{msg}"
        );
        let msg = extents(&code, &rdata, Arch::X86_64, 0x1000).unwrap_err();
        assert!(
            msg.contains("exception directory (0x2000..0x3000) lies outside"),
            "{msg}"
        );
    }

    #[test]
    fn arm64_lengths_and_fragments() {
        let code = vec![0x1fu8; 0x100];
        let mut rdata = vec![0u8; 0x400];
        // .xdata: FunctionLength 8 words, with other header bits set.
        put32(&mut rdata, 0x100, 8 | (1 << 21) | (3 << 27));
        let entries: [[u32; 2]; 5] = [
            // Packed, 4 words.
            [0x1000, 1 | (4 << 2) | (0x1f << 23)],
            // A packed fragment right after it: folded.
            [0x1010, 2 | (2 << 2)],
            // Unpacked.
            [0x1020, 0x2100],
            // A packed fragment elsewhere: a function of its own.
            [0x1048, 2 | (2 << 2)],
            [0, 0],
        ];
        for (i, e) in entries.iter().enumerate() {
            put32(&mut rdata, i * 8, e[0]);
            put32(&mut rdata, i * 8 + 4, e[1]);
        }
        assert_eq!(
            extents(&code, &rdata, Arch::Aarch64, 40).unwrap(),
            [(0x1000, 0x1018), (0x1020, 0x1040), (0x1048, 0x1050)]
        );
        for (entry, want) in [
            (
                [0x1000, 3 | (4 << 2)],
                "entry 0 (at 0x1000) has the reserved unwind flag 3",
            ),
            (
                [0x1002, 1 | (4 << 2)],
                "entry 0 (0x1002..0x1012) does not start on a 4-byte instruction boundary",
            ),
            ([0x1000, 0x9000], "its unwind data at 0x9000 lies outside"),
            ([0x1000, 1], "entry 0 (0x1000..0x1000) is empty or reversed"),
            (
                [0x10f0, 1 | (8 << 2)],
                "entry 0 (0x10f0..0x1110) lies outside the initialised bytes",
            ),
        ] {
            let mut rdata = vec![0u8; 0x400];
            put32(&mut rdata, 0, entry[0]);
            put32(&mut rdata, 4, entry[1]);
            let msg = extents(&code, &rdata, Arch::Aarch64, 8).unwrap_err();
            assert!(msg.contains(want), "{msg}");
        }
    }

    #[test]
    fn fill_after_a_function_is_not_code() {
        assert_eq!(
            code_length(&[0x31, 0xc0, 0xc3, 0xcc, 0xcc], Arch::X86_64),
            3
        );
        assert_eq!(code_length(&[0xcc, 0xcc], Arch::X86_64), 0);
        let ret = 0xd65f_03c0u32.to_le_bytes();
        let mut words = ret.to_vec();
        words.extend([0; 8]);
        assert_eq!(code_length(&words, Arch::Aarch64), 4);
        // A partial word at the end is not code.
        words.truncate(6);
        assert_eq!(code_length(&words, Arch::Aarch64), 4);
        assert_eq!(code_length(&[0; 8], Arch::Aarch64), 0);
    }

    #[test]
    fn exported_leaf_functions_run_to_the_next_start() {
        let mut code = vec![0xccu8; 0x40];
        code[0x10] = 0xc3; // leaf export at 0x1010: `ret`, then fill
        code[0x20..0x24].copy_from_slice(&[0x31, 0xc0, 0xc3, 0x90]);
        let data = [0u8; 16];
        let sections = [
            section(".text", 0x1000, &code, true),
            section(".data", 0x2000, &data, false),
        ];
        let mut names: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
        for (rva, name) in [
            (0x1004, "inside"),
            (0x1010, "leaf"),
            (0x1020, "last"),
            (0x2000, "data"),
        ] {
            names.entry(rva).or_default().push(name);
        }
        let leaves = leaf_exports(&sections, Arch::X86_64, &[(0x1000, 0x1008)], &names);
        assert_eq!(leaves, [(0x1010, 0x1011), (0x1020, 0x1024)]);
    }

    /// Damage in the exception directory and the unwind data it points at
    /// (every entry and header rewritten with random words, many times) is
    /// either read or refused with one line naming the image: never a
    /// panic.
    #[test]
    fn damaged_unwind_data_is_read_or_refused() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut read, mut refused) = (0, 0);
        for target in ["x86_64-windows", "aarch64-windows"] {
            let dll = corpus
                .join("13-cumulative-series/bin")
                .join(target)
                .join("v1.dll");
            let good = std::fs::read(&dll).unwrap();
            let file = PeFile64::parse(&good[..]).unwrap();
            let (rva, size) = file
                .data_directory(pe::IMAGE_DIRECTORY_ENTRY_EXCEPTION)
                .unwrap()
                .address_range();
            let offset = |rva: u32| {
                file.section_table()
                    .pe_file_range_at(rva)
                    .map(|(o, _)| o as usize)
                    .unwrap()
            };
            let table = offset(rva);
            // The unwind data sits in .rdata: damage the words there too.
            let (xdata, xlen) = file
                .section_table()
                .iter()
                .find(|s| &s.name[..6] == b".rdata")
                .map(|s| s.pe_file_range())
                .map(|(o, l)| (o as usize, l as usize))
                .unwrap();
            let opts = ReadOptions::new("/nonexistent/damaged.dll");
            for _ in 0..2000 {
                let mut d = good.clone();
                for _ in 0..1 + next() % 4 {
                    let at = if next() % 2 == 0 {
                        table + (next() as usize % size as usize) / 4 * 4
                    } else {
                        xdata + (next() as usize % xlen) / 4 * 4
                    };
                    let word = match next() % 4 {
                        0 => next() as u32,
                        1 => rva + (next() % 0x40) as u32,
                        2 => 0x1000 + (next() % 0x800) as u32,
                        _ => (next() as u32) | 3,
                    };
                    d[at..at + 4].copy_from_slice(&word.to_le_bytes());
                }
                match parse(&d, &opts) {
                    Ok(image) => {
                        assert!(image.stripped);
                        read += 1;
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        assert!(msg.starts_with("/nonexistent/damaged.dll: "), "{msg}");
                        assert!(!msg.contains('\n'), "{msg}");
                        refused += 1;
                    }
                }
            }
        }
        assert!(
            read > 100 && refused > 100,
            "{read} read, {refused} refused"
        );
    }

    /// The corpus DLLs, read with and without their PDB: every function the
    /// PDB lists with a `.pdata` entry is found at the same RVA with the
    /// same size; every exported function without one (a leaf) is found
    /// at its RVA under its name, with its size, or larger only where it
    /// swallows a function that nothing starts; nothing else is found, and
    /// nothing is invented.
    #[test]
    fn corpus_functions_without_the_pdb_equal_those_with_it() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
        let mut dlls: Vec<PathBuf> = Vec::new();
        for scenario in std::fs::read_dir(&corpus).unwrap() {
            for target in ["x86_64-windows", "aarch64-windows"] {
                let Ok(dir) =
                    std::fs::read_dir(scenario.as_ref().unwrap().path().join("bin").join(target))
                else {
                    continue;
                };
                dlls.extend(
                    dir.map(|e| e.unwrap().path())
                        .filter(|p| p.extension().is_some_and(|e| e == "dll"))
                        .filter(|p| p.with_extension("pdb").is_file()),
                );
            }
        }
        dlls.sort();
        let mut with_pdata: HashMap<Arch, usize> = HashMap::new();
        let mut leaves: HashMap<Arch, usize> = HashMap::new();
        for dll in &dlls {
            let bytes = std::fs::read(dll).unwrap();
            let full = parse(&bytes, &ReadOptions::new(dll)).unwrap();
            let lonely = PathBuf::from("/nonexistent").join(dll.file_name().unwrap());
            let ours = parse(&bytes, &ReadOptions::new(&lonely)).unwrap();
            let what = dll.display();
            assert!(ours.stripped && !full.stripped, "{what}");
            assert!(ours.data.is_empty(), "{what}");
            assert_eq!(ours.type_info, crate::image::TypeInfo::Absent, "{what}");
            // .pdata starts, decoded here on their own.
            let file = PeFile64::parse(&bytes[..]).unwrap();
            let (rva, size) = file
                .data_directory(pe::IMAGE_DIRECTORY_ENTRY_EXCEPTION)
                .map_or((0, 0), |d| d.address_range());
            let width = if full.arch == Arch::X86_64 { 12 } else { 8 };
            let table = full
                .bytes_at(u64::from(rva), u64::from(size))
                .unwrap_or(&[]);
            let starts: BTreeSet<u64> = table
                .chunks_exact(width)
                .map(|e| u64::from(u32::from_le_bytes(e[..4].try_into().unwrap())))
                .collect();
            let exported: BTreeSet<u64> = full.exports.iter().map(|e| e.rva).collect();
            for f in &full.functions {
                let found: Vec<&Function> =
                    ours.functions.iter().filter(|g| g.rva == f.rva).collect();
                if starts.contains(&f.rva) {
                    assert!(!found.is_empty(), "{what}: {} lost", f.name);
                    for g in &found {
                        assert_eq!(g.size, f.size, "{what}: {}", f.name);
                    }
                    *with_pdata.entry(full.arch).or_default() += 1;
                } else if exported.contains(&f.rva) {
                    let g = found
                        .iter()
                        .find(|g| g.name == f.name)
                        .unwrap_or_else(|| panic!("{what}: leaf {} lost", f.name));
                    assert_eq!(g.visibility, Visibility::Exported, "{what}");
                    let swallowed = full
                        .functions
                        .iter()
                        .any(|h| h.rva > f.rva && h.rva < g.rva + g.size);
                    if swallowed {
                        assert!(g.size > f.size, "{what}: {}", f.name);
                    } else {
                        assert_eq!(g.size, f.size, "{what}: {}", f.name);
                    }
                    *leaves.entry(full.arch).or_default() += 1;
                } else {
                    assert!(found.is_empty(), "{what}: {} found", f.name);
                }
            }
            // Nothing invented, and the names.
            for g in &ours.functions {
                let f = full
                    .functions
                    .iter()
                    .find(|f| f.rva == g.rva)
                    .unwrap_or_else(|| panic!("{what}: {} at {:#x} invented", g.name, g.rva));
                if exported.contains(&g.rva) {
                    assert_eq!(g.name, f.name, "{what}");
                } else {
                    assert_eq!(g.name, format!("sub_{:x}", g.rva), "{what}");
                    assert_eq!(g.visibility, Visibility::Global, "{what}");
                }
                assert_eq!(g.unit, None, "{what}");
            }
        }
        // Both architectures, many functions of each kind.
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let (p, l) = (with_pdata[&arch], leaves[&arch]);
            assert!(p >= 20 && l >= 60, "{arch:?}: {p} with .pdata, {l} leaves");
        }
    }
}

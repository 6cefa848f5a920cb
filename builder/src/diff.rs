//! The function-level diff of a baseline image and its update.
//!
//! [`diff`] matches functions and data objects by [`Key`], compares the
//! normalised code of every matched function in parallel, compares data with
//! pointers normalised, spreads changed read-only data to the functions that
//! use it, and decides whether the update can be applied to a running
//! process. Everything that cannot is a [`Blocker`] with a precise reason.

use std::collections::{BTreeSet, HashMap, HashSet};

use hotpatch_formats::Image;
use rayon::prelude::*;
use serde::Serialize;

use crate::index::{Group, ImageIndex};
use crate::key::Key;
use crate::norm::{self, Normalized};
use crate::patchability::{entry_scheme, EntryScheme};

/// A diff error: the two images cannot be compared at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The images are of different architectures or formats.
    #[error("baseline is {baseline} but the update is {updated}")]
    Incompatible {
        /// Format and architecture of the baseline.
        baseline: String,
        /// Format and architecture of the update.
        updated: String,
    },
}

/// What happened to a function or data object between the two builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// In both, with a different normalised form.
    Changed,
    /// Only in the update.
    Added,
    /// Only in the baseline.
    Removed,
    /// In both, equal once normalised.
    Unchanged,
}

/// One function or data object in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Source-level name (clone suffixes folded).
    pub name: String,
    /// Translation unit stem, for local symbols.
    pub unit: Option<String>,
    /// What happened to it.
    pub status: Status,
    /// RVA in the baseline (primary part, for functions).
    pub baseline_rva: Option<u64>,
    /// RVA in the update.
    pub updated_rva: Option<u64>,
    /// Size in the baseline (all parts, for functions).
    pub baseline_size: Option<u64>,
    /// Size in the update.
    pub updated_size: Option<u64>,
    /// Why it differs, for changed entries.
    pub reason: Option<String>,
}

impl Entry {
    /// The key, as `unit:name` for local symbols.
    pub fn display_name(&self) -> String {
        match &self.unit {
            Some(u) => format!("{u}:{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Why an update cannot be applied to a running process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockerKind {
    /// The initial value of existing writable data changed.
    WritableDataChanged,
    /// The size of existing writable data changed.
    WritableDataResized,
    /// A changed function has no room for its entry redirection.
    FunctionTooSmall,
    /// A changed function's compiler clone (with its own calling convention)
    /// has no counterpart in the update and still has unchanged callers.
    CloneWithoutCounterpart,
}

impl BlockerKind {
    /// The kebab-case name used in JSON and in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockerKind::WritableDataChanged => "writable-data-changed",
            BlockerKind::WritableDataResized => "writable-data-resized",
            BlockerKind::FunctionTooSmall => "function-too-small",
            BlockerKind::CloneWithoutCounterpart => "clone-without-counterpart",
        }
    }
}

/// One reason the update is not hotpatchable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Blocker {
    /// The function or data object at fault.
    pub object: String,
    /// The kind of problem.
    pub kind: BlockerKind,
    /// A precise, human-readable reason.
    pub reason: String,
    /// Functions involved (the users of the object, or the callers of a clone).
    pub functions: Vec<String>,
}

/// The result of [`diff`].
#[derive(Clone, Debug, Serialize)]
pub struct Diff {
    /// Every function of either image, sorted by status then name.
    pub functions: Vec<Entry>,
    /// Every data object of either image, sorted by status then name.
    pub data: Vec<Entry>,
    /// Whether the update can be applied to a running process.
    pub hotpatchable: bool,
    /// Why not, if not.
    pub blockers: Vec<Blocker>,
}

impl Diff {
    /// The functions with the given status.
    pub fn functions_with(&self, status: Status) -> impl Iterator<Item = &Entry> {
        self.functions.iter().filter(move |e| e.status == status)
    }

    /// The data objects with the given status.
    pub fn data_with(&self, status: Status) -> impl Iterator<Item = &Entry> {
        self.data.iter().filter(move |e| e.status == status)
    }
}

/// Sections whose symbols are loader metadata, not program data: their
/// contents always move with the layout and no code patch touches them.
const LOADER_SECTIONS: [&str; 8] = [
    ".dynamic",
    ".got",
    ".got.plt",
    ".eh_frame",
    ".eh_frame_hdr",
    ".dynsym",
    ".dynstr",
    ".interp",
];

fn describe(image: &Image<'_>) -> String {
    format!("{} {}", image.format.name(), image.arch.name())
}

/// Index an image and run pass 1 (references) over all its code, in parallel.
pub(crate) fn index<'i, 'd>(image: &'i Image<'d>) -> ImageIndex<'i, 'd> {
    let mut idx = ImageIndex::new(image);
    let arch = image.arch;
    let parts: Vec<(u64, u64)> = idx
        .groups
        .iter()
        .flat_map(|g| g.parts.iter().map(|p| (p.rva, p.size)))
        .collect();
    let named = &idx;
    let refs: Vec<u64> = parts
        .par_iter()
        .fold(Vec::new, |mut acc, &(rva, size)| {
            if let Some(code) = image.bytes_at(rva, size) {
                let from = acc.len();
                norm::references(arch, code, rva, &mut acc);
                // Only addresses outside functions cut anonymous data; the
                // many branch and call targets inside them do not.
                let mut keep = from;
                for i in from..acc.len() {
                    if named.function_at(acc[i]).is_none() {
                        acc[keep] = acc[i];
                        keep += 1;
                    }
                }
                acc.truncate(keep);
            }
            acc
        })
        .reduce(Vec::new, |mut a, mut b| {
            a.append(&mut b);
            a
        });
    idx.finish(refs);
    idx
}

/// Normalise every part of a group together, so that references between
/// the parts (a `.cold` split) compare by position, like those inside one.
fn normalize_group<'a>(idx: &'a ImageIndex<'_, '_>, g: usize) -> Vec<Normalized<'a>> {
    let mut parts = Vec::new();
    norm::normalize_group(idx, g, &mut parts);
    parts
}

/// The comparison of one matched function.
struct Compared<'a> {
    reason: Option<String>,
    /// Data objects referenced by either build (keys borrowed from the
    /// indexes; sorted, no duplicates).
    data_refs: Vec<&'a Key>,
    /// Function parts the baseline build calls (key, clone signature;
    /// sorted, no duplicates).
    base_calls: Vec<(&'a Key, &'a str)>,
}

fn part_label(group: &Group, part: usize) -> String {
    match group.parts.get(part).map(|p| p.signature.as_str()) {
        Some("") | None => String::new(),
        Some(sig) => format!(" in its .{sig} part"),
    }
}

fn compare<'a>(
    base: &'a ImageIndex<'_, '_>,
    bg: usize,
    upd: &'a ImageIndex<'_, '_>,
    ug: usize,
) -> Compared<'a> {
    let bgroup = &base.groups[bg];
    let ugroup = &upd.groups[ug];
    let bn = normalize_group(base, bg);
    let un = normalize_group(upd, ug);
    let mut data_refs: Vec<&Key> = Vec::new();
    let mut base_calls: Vec<(&Key, &str)> = Vec::new();
    for n in &bn {
        data_refs.extend(&n.data_refs);
        base_calls.extend(&n.fn_refs);
    }
    for n in &un {
        data_refs.extend(&n.data_refs);
    }
    data_refs.sort_unstable();
    data_refs.dedup();
    base_calls.sort_unstable();
    base_calls.dedup();
    data_refs.shrink_to_fit();
    base_calls.shrink_to_fit();
    let bsigs: Vec<&str> = bgroup.parts.iter().map(|p| p.signature.as_str()).collect();
    let usigs: Vec<&str> = ugroup.parts.iter().map(|p| p.signature.as_str()).collect();
    let reason = if bsigs != usigs {
        let show = |s: &[&str]| {
            s.iter()
                .map(|x| {
                    if x.is_empty() {
                        "body".to_string()
                    } else {
                        format!(".{x}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        Some(format!(
            "compiled into different parts: baseline [{}], update [{}]",
            show(&bsigs),
            show(&usigs)
        ))
    } else {
        bn.iter().zip(&un).enumerate().find_map(|(p, (b, u))| {
            first_difference(b, u).map(|(d, at)| {
                let shown = match (at, bgroup.parts.get(p), ugroup.parts.get(p)) {
                    (Some(at), Some(bp), Some(up)) => show_instructions(base, bp, upd, up, at),
                    _ => String::new(),
                };
                format!("{d}{}{shown}", part_label(bgroup, p))
            })
        })
    };
    Compared {
        reason,
        data_refs,
        base_calls,
    }
}

/// Where two instruction streams first differ: the reason, and the byte
/// offsets of the differing instructions (baseline, update) when both exist.
fn first_difference(
    b: &Normalized<'_>,
    u: &Normalized<'_>,
) -> Option<(String, Option<(u32, u32)>)> {
    for (x, y) in b.insns.iter().zip(&u.insns) {
        // The hash is the whole comparison: lengths may differ for one
        // meaning (a branch relaxed from rel8 to rel32).
        if x.hash != y.hash {
            return Some((
                format!("different instruction at +{:#x}", x.offset),
                Some((x.offset, y.offset)),
            ));
        }
    }
    // Equal up to the shorter stream: the longer one has extra code.
    let (side, longer, shorter) = if b.insns.len() >= u.insns.len() {
        ("baseline", b, u)
    } else {
        ("update", u, b)
    };
    let extra = longer.insns.get(shorter.insns.len())?;
    Some((
        format!(
            "{side} has {} more instructions from +{:#x}",
            longer.insns.len() - shorter.insns.len(),
            extra.offset
        ),
        None,
    ))
}

/// The differing instructions as text: `` (`a` → `b`) ``, or nothing when
/// either does not decode.
fn show_instructions(
    base: &ImageIndex<'_, '_>,
    bpart: &crate::index::Part,
    upd: &ImageIndex<'_, '_>,
    upart: &crate::index::Part,
    (bo, uo): (u32, u32),
) -> String {
    let text = |idx: &ImageIndex<'_, '_>, part: &crate::index::Part, off: u32| {
        let rva = part.rva.checked_add(u64::from(off))?;
        let len = part.size.checked_sub(u64::from(off))?.min(15);
        norm::render(idx.image.arch, idx.image.bytes_at(rva, len)?, rva)
    };
    match (text(base, bpart, bo), text(upd, upart, uo)) {
        (Some(a), Some(b)) => format!(": `{a}` → `{b}`"),
        _ => String::new(),
    }
}

/// Compare two data objects: size, then contents with pointers normalised.
/// Returns the reason they differ.
fn compare_data(
    base: &ImageIndex<'_, '_>,
    bd: usize,
    upd: &ImageIndex<'_, '_>,
    ud: usize,
) -> Option<String> {
    let bo = &base.image.data[base.data[bd].object];
    let uo = &upd.image.data[upd.data[ud].object];
    if bo.size != uo.size {
        return Some(format!(
            "size changed from {} to {} bytes",
            bo.size, uo.size
        ));
    }
    let bytes = |idx: &ImageIndex<'_, '_>, rva: u64, size: u64| -> Vec<u8> {
        // File-backed bytes, zero-filled to the object's size (`.bss`).
        let mut v = idx
            .image
            .section_at(rva)
            .and_then(|s| {
                let start = usize::try_from(rva - s.rva).ok()?;
                s.data.get(start.min(s.data.len())..)
            })
            .unwrap_or(&[])
            .iter()
            .take(usize::try_from(size).unwrap_or(usize::MAX))
            .copied()
            .collect::<Vec<u8>>();
        v.resize(usize::try_from(size).unwrap_or(0), 0);
        v
    };
    let mut bb = bytes(base, bo.rva, bo.size);
    let mut ub = bytes(upd, uo.rva, uo.size);
    // Pointer slots: compare what they point at, then blank them.
    let brel = base.relocations_in(bo.rva, bo.size);
    let urel = upd.relocations_in(uo.rva, uo.size);
    let boffs: Vec<u64> = brel.iter().map(|r| r.rva - bo.rva).collect();
    let uoffs: Vec<u64> = urel.iter().map(|r| r.rva - uo.rva).collect();
    if boffs != uoffs {
        let at = boffs
            .iter()
            .zip(&uoffs)
            .find(|(a, b)| a != b)
            .map(|(a, _)| *a)
            .or_else(|| {
                boffs
                    .get(uoffs.len())
                    .or_else(|| uoffs.get(boffs.len()))
                    .copied()
            })
            .unwrap_or(0);
        return Some(format!("pointer layout differs at +{at:#x}"));
    }
    for ((br, ur), off) in brel.iter().zip(urel).zip(&boffs) {
        let bt = base.resolve_reloc(br, None);
        let ut = upd.resolve_reloc(ur, None);
        // Anonymous blocks compare by digest, which covers their contents.
        if bt != ut {
            return Some(format!("pointer at +{off:#x} points elsewhere"));
        }
        let o = usize::try_from(*off).unwrap_or(usize::MAX);
        let w = usize::from(br.width);
        for buf in [&mut bb, &mut ub] {
            if let Some(s) = buf.get_mut(o..o.saturating_add(w)) {
                s.fill(0);
            }
        }
    }
    bb.iter()
        .zip(&ub)
        .position(|(a, b)| a != b)
        .map(|i| format!("initial value differs at +{i:#x}"))
}

/// Diff a baseline image against its update.
///
/// ```no_run
/// use hotpatch_formats::{read, ReadOptions};
/// let (a, b) = ("v1.so", "v2.so");
/// let (da, db) = (read::load_file(a.as_ref())?, read::load_file(b.as_ref())?);
/// let base = read::parse(&da, &ReadOptions::new(a))?;
/// let upd = read::parse(&db, &ReadOptions::new(b))?;
/// let d = hotpatch_builder::diff::diff(&base, &upd).expect("same architecture");
/// for f in d.functions_with(hotpatch_builder::diff::Status::Changed) {
///     println!("{} changed: {}", f.display_name(), f.reason.as_deref().unwrap_or(""));
/// }
/// # Ok::<(), hotpatch_formats::Error>(())
/// ```
pub fn diff(baseline: &Image<'_>, updated: &Image<'_>) -> Result<Diff, Error> {
    if baseline.arch != updated.arch || baseline.format != updated.format {
        return Err(Error::Incompatible {
            baseline: describe(baseline),
            updated: describe(updated),
        });
    }
    let (base, upd) = rayon::join(|| index(baseline), || index(updated));

    // Match functions by key.
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    let mut functions: Vec<Entry> = Vec::new();
    for (bi, g) in base.groups.iter().enumerate() {
        match upd.group(&g.key) {
            Some(ui) => pairs.push((bi, ui)),
            None => functions.push(group_entry(&g.key, Some(g), None, Status::Removed, None)),
        }
    }
    for g in &upd.groups {
        if base.group(&g.key).is_none() {
            functions.push(group_entry(&g.key, None, Some(g), Status::Added, None));
        }
    }

    let compared: Vec<Compared> = pairs
        .par_iter()
        .map(|&(b, u)| compare(&base, b, &upd, u))
        .collect();

    // Data objects.
    let is_program_data = |idx: &ImageIndex<'_, '_>, d: usize| {
        let o = &idx.image.data[idx.data[d].object];
        !LOADER_SECTIONS.contains(&o.section.as_str())
            && !matches!(o.name.as_str(), "_DYNAMIC" | "_GLOBAL_OFFSET_TABLE_")
    };
    let mut data: Vec<Entry> = Vec::new();
    let mut changed_rodata: BTreeSet<Key> = BTreeSet::new();
    let mut writable_changes: Vec<(Key, BlockerKind, String)> = Vec::new();
    for (bd, entry) in base.data.iter().enumerate() {
        if !is_program_data(&base, bd) {
            continue;
        }
        let bo = &baseline.data[entry.object];
        let Some(ud) = upd.data_entry(&entry.key) else {
            data.push(data_entry(
                &entry.key,
                Some(bo),
                None,
                Status::Removed,
                None,
            ));
            continue;
        };
        let uo = &updated.data[upd.data[ud].object];
        let reason = compare_data(&base, bd, &upd, ud);
        let status = if reason.is_some() {
            Status::Changed
        } else {
            Status::Unchanged
        };
        if let Some(r) = &reason {
            let writable = baseline.section_at(bo.rva).is_some_and(|s| s.perms.write);
            if writable {
                let kind = if bo.size != uo.size {
                    BlockerKind::WritableDataResized
                } else {
                    BlockerKind::WritableDataChanged
                };
                writable_changes.push((entry.key.clone(), kind, r.clone()));
            } else {
                changed_rodata.insert(entry.key.clone());
            }
        }
        data.push(data_entry(&entry.key, Some(bo), Some(uo), status, reason));
    }
    for (ud, entry) in upd.data.iter().enumerate() {
        if is_program_data(&upd, ud) && base.data_entry(&entry.key).is_none() {
            let uo = &updated.data[entry.object];
            data.push(data_entry(&entry.key, None, Some(uo), Status::Added, None));
        }
    }

    // Matched functions: changed if their code differs, or if they use a
    // changed read-only object (the package carries its new copy).
    let mut changed_keys: HashSet<&Key> = HashSet::new();
    let mut users: HashMap<&Key, Vec<&Key>> = HashMap::new();
    for (&(b, u), c) in pairs.iter().zip(&compared) {
        let g = &base.groups[b];
        for &k in &c.data_refs {
            users.entry(k).or_default().push(&g.key);
        }
        let reason = c.reason.clone().or_else(|| {
            c.data_refs
                .iter()
                .find(|k| changed_rodata.contains(*k))
                .map(|k| format!("references changed read-only object `{k}`"))
        });
        let status = if reason.is_some() {
            changed_keys.insert(&g.key);
            Status::Changed
        } else {
            Status::Unchanged
        };
        functions.push(group_entry(
            &g.key,
            Some(g),
            Some(&upd.groups[u]),
            status,
            reason,
        ));
    }

    // Blockers.
    let mut blockers = Vec::new();
    for (key, kind, reason) in writable_changes {
        let mut fns: Vec<String> = users
            .remove(&key)
            .unwrap_or_default()
            .into_iter()
            .map(Key::to_string)
            .collect();
        fns.sort();
        fns.dedup();
        let used = if fns.is_empty() {
            String::new()
        } else {
            format!("; used by {}", fns.join(", "))
        };
        blockers.push(Blocker {
            object: key.to_string(),
            kind,
            reason: format!(
                "writable data `{key}` {reason}{used}. A running process holds the old state, so this fix needs a restart-required (baseline) release"
            ),
            functions: fns,
        });
    }
    // Callers of each baseline function part, for the clone check.
    let mut callers: HashMap<(&Key, &str), Vec<&Key>> = HashMap::new();
    for (&(b, _), c) in pairs.iter().zip(&compared) {
        for &(k, s) in &c.base_calls {
            callers.entry((k, s)).or_default().push(&base.groups[b].key);
        }
    }
    for &(b, u) in &pairs {
        let g = &base.groups[b];
        if !changed_keys.contains(&g.key) {
            continue;
        }
        let ug = &upd.groups[u];
        for part in g.parts.iter().filter(|p| p.entry) {
            match entry_scheme(&base, part.rva, part.size) {
                EntryScheme::TooSmall { needed } => blockers.push(Blocker {
                    object: g.key.to_string(),
                    kind: BlockerKind::FunctionTooSmall,
                    reason: format!(
                        "changed function `{}` is {} bytes, too small for its entry redirection on {} ({needed}){}",
                        part.symbol,
                        part.size,
                        describe(baseline),
                        if part.signature.is_empty() { String::new() } else { format!(" (clone of `{}`)", g.key) }
                    ),
                    functions: vec![g.key.to_string()],
                }),
                EntryScheme::Fits(_) => {}
            }
            if part.signature.is_empty() || ug.parts.iter().any(|p| p.signature == part.signature) {
                continue;
            }
            // A clone with its own calling convention disappears: only safe
            // if every caller is replaced too.
            let mut unchanged: Vec<String> = callers
                .get(&(&g.key, part.signature.as_str()))
                .into_iter()
                .flatten()
                .filter(|k| !changed_keys.contains(*k))
                .map(|k| k.to_string())
                .collect();
            unchanged.sort();
            unchanged.dedup();
            if !unchanged.is_empty() {
                blockers.push(Blocker {
                    object: g.key.to_string(),
                    kind: BlockerKind::CloneWithoutCounterpart,
                    reason: format!(
                        "compiler clone `{}` has no counterpart in the update, and unchanged functions still call it with its private calling convention: {}",
                        part.symbol,
                        unchanged.join(", ")
                    ),
                    functions: unchanged,
                });
            }
        }
    }

    let order =
        |a: &Entry, b: &Entry| (a.status, &a.name, &a.unit).cmp(&(b.status, &b.name, &b.unit));
    functions.sort_by(order);
    data.sort_by(order);
    blockers.sort_by(|a, b| (&a.object, a.kind).cmp(&(&b.object, b.kind)));
    Ok(Diff {
        hotpatchable: blockers.is_empty(),
        functions,
        data,
        blockers,
    })
}

fn group_entry(
    key: &Key,
    b: Option<&Group>,
    u: Option<&Group>,
    status: Status,
    reason: Option<String>,
) -> Entry {
    Entry {
        name: key.name.clone(),
        unit: key.unit.clone(),
        status,
        baseline_rva: b.and_then(Group::primary).map(|p| p.rva),
        updated_rva: u.and_then(Group::primary).map(|p| p.rva),
        baseline_size: b.map(Group::size),
        updated_size: u.map(Group::size),
        reason,
    }
}

fn data_entry(
    key: &Key,
    b: Option<&hotpatch_formats::DataObject>,
    u: Option<&hotpatch_formats::DataObject>,
    status: Status,
    reason: Option<String>,
) -> Entry {
    Entry {
        name: key.name.clone(),
        unit: key.unit.clone(),
        status,
        baseline_rva: b.map(|o| o.rva),
        updated_rva: u.map(|o| o.rva),
        baseline_size: b.map(|o| o.size),
        updated_size: u.map(|o| o.size),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::norm::NormInsn;

    fn stream(hashes: &[u64]) -> Normalized<'static> {
        let mut n = Normalized::default();
        n.insns = hashes
            .iter()
            .enumerate()
            .map(|(i, &hash)| NormInsn {
                offset: 4 * i as u32,
                len: 4,
                hash,
            })
            .collect();
        n
    }

    #[test]
    fn first_difference_names_the_side_with_extra_code() {
        let (a, b) = (stream(&[1, 2, 3]), stream(&[1, 2]));
        assert_eq!(first_difference(&a, &a), None);
        assert_eq!(
            first_difference(&a, &b),
            Some(("baseline has 1 more instructions from +0x8".into(), None))
        );
        assert_eq!(
            first_difference(&b, &a),
            Some(("update has 1 more instructions from +0x8".into(), None))
        );
        assert_eq!(
            first_difference(&a, &stream(&[1, 9, 3])),
            Some(("different instruction at +0x4".into(), Some((4, 4))))
        );
    }
}

//! The function-level diff of a baseline image and its update.
//!
//! [`diff`] matches functions and data objects by [`Key`], compares the
//! normalised code of every matched function in parallel, compares data with
//! pointers normalised, spreads changed read-only data to the functions that
//! use it, and decides whether the update can be applied to a running
//! process. Everything that cannot is a [`Blocker`] with a precise reason.
//!
//! Each function's code is decoded once: the comparison also collects the
//! addresses that cut anonymous data into blocks, and references to
//! anonymous data are settled after every block is fixed (see
//! [`crate::norm`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use hotpatch_formats::Image;
use rayon::prelude::*;
use serde::Serialize;

use crate::index::{ImageIndex, Part, SymRef};
use crate::key::Key;
use crate::matching::{self, Confidence, Match};
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
pub struct Entry<'i> {
    /// Source-level name (clone suffixes folded).
    pub name: &'i str,
    /// Translation unit stem, for local symbols.
    pub unit: Option<&'i str>,
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
    /// Its other names in either build (symbols at the same address with
    /// the same size), as `unit:name` for local ones.
    pub aliases: Vec<String>,
    /// For a function whose names are only its addresses (a stripped
    /// image), how it was paired with its counterpart by structure, with
    /// the evidence; `null` for everything matched by name, and for added
    /// and removed entries.
    #[serde(rename = "match")]
    pub matched: Option<Match<'i>>,
    /// For a changed function whose first source line both builds' debug
    /// information gives: how far it moved (update minus baseline).
    pub line_shift: Option<i64>,
    /// A changed function whose code differs only in immediates that grew
    /// by exactly its [`Entry::line_shift`] (`__LINE__` moving with the
    /// source; see [`crate::lines`]), and that uses no changed read-only
    /// data. It stays `changed`; packages leave it out by default.
    pub lines_only: bool,
}

impl Entry<'_> {
    /// The key, as `unit:name` for local symbols.
    pub fn display_name(&self) -> String {
        match self.unit {
            Some(u) => format!("{u}:{}", self.name),
            None => self.name.to_string(),
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
    /// An image has no symbols for its data (stripped): nothing shows
    /// whether writable data changed.
    NoDataSymbols,
    /// Writable bytes that no data symbol covers differ between the
    /// builds: state the diff cannot name changed.
    UnaccountedWritableData,
    /// A struct, union or class that a changed function uses changed its
    /// size or field offsets: objects made before the patch keep the old
    /// layout.
    TypeLayoutChanged,
    /// An image has no (readable) debug information for its types, so the
    /// diff cannot tell whether a type that changed code uses grew.
    NoTypeInfo,
    /// An AArch64 `ADRP` of changed or added code serves objects that
    /// cannot lie on one page once patched (an existing object that stays
    /// in the baseline and a new one the package carries): relocations can
    /// give it only one page.
    SharedPage,
}

impl BlockerKind {
    /// Whether a reviewed override may lift a blocker of this kind: a
    /// type's layout (`type:NAME`), or the lack of type information
    /// (`type:*`), which only an engineer who knows the fix can vouch for.
    /// Changed writable data never: the running process holds it.
    pub fn overridable(self) -> bool {
        matches!(
            self,
            BlockerKind::TypeLayoutChanged | BlockerKind::NoTypeInfo
        )
    }

    /// The kebab-case name used in JSON and in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockerKind::WritableDataChanged => "writable-data-changed",
            BlockerKind::WritableDataResized => "writable-data-resized",
            BlockerKind::FunctionTooSmall => "function-too-small",
            BlockerKind::CloneWithoutCounterpart => "clone-without-counterpart",
            BlockerKind::NoDataSymbols => "no-data-symbols",
            BlockerKind::UnaccountedWritableData => "unaccounted-writable-data",
            BlockerKind::TypeLayoutChanged => "type-layout-changed",
            BlockerKind::NoTypeInfo => "no-type-info",
            BlockerKind::SharedPage => "shared-page",
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

/// A reviewed override of a blocker, recorded by a release engineer who
/// knows why it is safe (for a type: that no object of it outlives a call).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Allow {
    /// What it allows, as `type:NAME`.
    pub object: String,
    /// Why it is safe, in the engineer's words.
    pub reason: String,
}

/// What the caller tells [`diff_with`] beyond the two images.
#[derive(Clone, Debug)]
pub struct Options {
    /// How blockers name the baseline image (its path).
    pub baseline_name: String,
    /// How blockers name the updated image.
    pub updated_name: String,
    /// Reviewed overrides of blockers.
    pub allow: Vec<Allow>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            baseline_name: "baseline".into(),
            updated_name: "update".into(),
            allow: Vec::new(),
        }
    }
}

/// A blocker that a reviewed override lifted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Overridden {
    /// The blocker, as it would have been reported.
    pub blocker: Blocker,
    /// The override's reason.
    pub reason: String,
}

/// A struct, union or class whose layout differs between the builds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TypeEntry<'i> {
    /// The type's name.
    pub name: &'i str,
    /// `struct`, `union` or `class`.
    pub kind: &'static str,
    /// Size in the baseline.
    pub baseline_size: u64,
    /// Size in the update.
    pub updated_size: u64,
    /// What changed: sizes and the fields that moved or appeared.
    pub reason: String,
    /// Every function that uses it in either build (parameters, locals,
    /// return type, through pointers and typedefs), sorted.
    pub users: Vec<String>,
    /// The changed functions among them.
    pub changed_users: Vec<String>,
    /// Whether it blocks the update: a changed function uses it.
    pub blocking: bool,
}

/// The outcome of structural matching, when either image names functions
/// only by their addresses (see [`crate::matching`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Structural<'i> {
    /// Pairs matched by structure (each entry's `match` says how).
    pub matched: usize,
    /// How many of them with high confidence.
    pub high: usize,
    /// With medium confidence.
    pub medium: usize,
    /// With low confidence.
    pub low: usize,
    /// Baseline functions without names left unmatched (reported
    /// removed), in key order.
    pub unmatched_baseline: Vec<&'i str>,
    /// Update functions without names left unmatched (reported added).
    pub unmatched_update: Vec<&'i str>,
}

/// The result of [`diff`]. Names borrow from the two images.
#[derive(Clone, Debug, Serialize)]
pub struct Diff<'i> {
    /// Every function of either image, sorted by status then name.
    pub functions: Vec<Entry<'i>>,
    /// Every data object of either image, sorted by status then name.
    pub data: Vec<Entry<'i>>,
    /// Every type whose layout changed, sorted by name.
    pub types: Vec<TypeEntry<'i>>,
    /// Whether the update can be applied to a running process.
    pub hotpatchable: bool,
    /// Why not, if not.
    pub blockers: Vec<Blocker>,
    /// Blockers lifted by a reviewed override ([`Options::allow`]).
    pub overridden: Vec<Overridden>,
    /// Overrides that matched no blocker (most likely a misspelt name).
    pub unused_overrides: Vec<Allow>,
    /// Structural matching of functions without names (stripped images);
    /// `None` when every function of both images has a name.
    pub structural: Option<Structural<'i>>,
}

impl<'i> Diff<'i> {
    /// The functions with the given status.
    pub fn functions_with(&self, status: Status) -> impl Iterator<Item = &Entry<'i>> {
        self.functions.iter().filter(move |e| e.status == status)
    }

    /// The data objects with the given status.
    pub fn data_with(&self, status: Status) -> impl Iterator<Item = &Entry<'i>> {
        self.data.iter().filter(move |e| e.status == status)
    }
}

/// Sections whose contents are loader metadata, not program data: they
/// always move with the layout and no code patch touches them (ELF dynamic
/// linking and unwind tables; PE import, export, relocation and unwind
/// tables, which MinGW links keep in sections of their own).
const LOADER_SECTIONS: [&str; 14] = [
    ".dynamic",
    ".got",
    ".got.plt",
    ".eh_frame",
    ".eh_frame_hdr",
    ".dynsym",
    ".dynstr",
    ".interp",
    ".idata",
    ".didat",
    ".edata",
    ".reloc",
    ".pdata",
    ".xdata",
];

fn describe(image: &Image<'_>) -> String {
    format!("{} {}", image.format.name(), image.arch.name())
}

/// The anchors of some groups' code: what the comparison collects from
/// matched functions, for functions no comparison decodes. Their code is
/// normalised against the unfinished index, in parallel, for the anchors
/// alone. Must run before [`ImageIndex::finish`].
fn anchors_of(idx: &ImageIndex<'_, '_>, groups: &[usize]) -> Vec<u64> {
    groups
        .par_iter()
        .fold(
            || (Vec::new(), Vec::new()),
            |(mut acc, mut scratch), &g| {
                norm::normalize_group(idx, g, &mut scratch);
                for n in &scratch {
                    acc.extend(&n.anchors);
                }
                (acc, scratch)
            },
        )
        .map(|(acc, _)| acc)
        .reduce(Vec::new, |mut a, mut b| {
            a.append(&mut b);
            a
        })
}

/// Index an image, collect the anchors of all its code and finish the
/// index: what [`diff`] does along the way, step by step (for tests that
/// normalise single functions against a finished index).
#[cfg(test)]
pub(crate) fn index<'i, 'd>(image: &'i Image<'d>) -> ImageIndex<'i, 'd> {
    let idx = ImageIndex::new(image);
    let all: Vec<usize> = (0..idx.groups.len()).collect();
    let refs = anchors_of(&idx, &all);
    idx.finish(refs);
    idx
}

/// Matched functions compared per parallel task: enough to reuse the
/// scratch streams, few enough to balance the load.
const CHUNK: usize = 64;

/// Where two normalised groups first differ.
struct Difference {
    /// Part, and position in that part's stream.
    at: (usize, usize),
    /// Why, for people.
    reason: String,
}

/// A pair of references to anonymous bytes, at the same place in both
/// builds, that the comparison could not resolve before every block was
/// known.
#[derive(Debug, PartialEq, Eq)]
struct Pending {
    /// Part, and position in that part's stream.
    at: (usize, usize),
    /// Byte offsets of the referring instructions in their parts.
    offsets: (u32, u32),
    /// The addresses referred to (baseline, update).
    rvas: (u64, u64),
}

/// The comparison of one matched function, before the anonymous blocks are
/// fixed.
struct Compared {
    /// The first difference not involving anonymous data.
    difference: Option<Difference>,
    /// This pair's pending references: a range of [`ChunkOut::pending`].
    pending: std::ops::Range<usize>,
    /// This pair's provisional jump tables: a range of [`ChunkOut::tables`].
    tables: std::ops::Range<usize>,
}

/// What the comparison of one chunk of matched functions found.
#[derive(Default)]
struct ChunkOut<'a> {
    /// One per pair of the chunk.
    compared: Vec<Compared>,
    /// Their pending references.
    pending: Vec<Pending>,
    /// Their provisional jump tables: (in the update?, address, entries).
    tables: Vec<(bool, u64, usize)>,
    /// Anchors found in the baseline's code and in the update's.
    anchors: (Vec<u64>, Vec<u64>),
    /// (pair, data object) for every data object either build refers to.
    data_refs: Vec<(usize, Key<'a>)>,
    /// (pair, clone, signature) for every baseline call to a compiler clone
    /// that vanishes in the update.
    clone_calls: Vec<(usize, Key<'a>, &'a str)>,
}

/// Scratch streams of one task, reused from pair to pair.
#[derive(Default)]
struct Scratch<'a> {
    base: Vec<Normalized<'a>>,
    upd: Vec<Normalized<'a>>,
    keys: Vec<Key<'a>>,
    same: Vec<norm::SameDeferred>,
}

fn part_label(parts: &[Part<'_>], part: usize) -> String {
    match parts.get(part).map(|p| &*p.signature) {
        Some("") | None => String::new(),
        Some(sig) => format!(" in its .{sig} part"),
    }
}

/// Why two groups with different parts differ, when they do.
fn parts_differ(bparts: &[Part<'_>], uparts: &[Part<'_>]) -> Option<String> {
    if bparts.len() == uparts.len()
        && bparts
            .iter()
            .zip(uparts)
            .all(|(b, u)| b.signature == u.signature)
    {
        return None;
    }
    let show = |s: &[Part<'_>]| {
        s.iter()
            .map(|p| {
                if p.signature.is_empty() {
                    "body".to_string()
                } else {
                    format!(".{}", p.signature)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "compiled into different parts: baseline [{}], update [{}]",
        show(bparts),
        show(uparts)
    ))
}

/// The reason for a differing instruction at byte offsets `(bo, uo)` of
/// part `p`: where, and the two instructions as text.
fn instruction_reason(
    base: &ImageIndex<'_, '_>,
    bg: usize,
    upd: &ImageIndex<'_, '_>,
    ug: usize,
    p: usize,
    (bo, uo): (u32, u32),
) -> String {
    let (bparts, uparts) = (base.parts(bg), upd.parts(ug));
    let shown = match (bparts.get(p), uparts.get(p)) {
        (Some(bp), Some(up)) => show_instructions(base, bp, upd, up, (bo, uo)),
        _ => String::new(),
    };
    format!(
        "different instruction at +{bo:#x}{}{shown}",
        part_label(bparts, p)
    )
}

/// The first difference of two normalised groups with the same parts.
fn first_group_difference(
    base: &ImageIndex<'_, '_>,
    bg: usize,
    upd: &ImageIndex<'_, '_>,
    ug: usize,
    bn: &[Normalized<'_>],
    un: &[Normalized<'_>],
) -> Option<Difference> {
    bn.iter().zip(un).enumerate().find_map(|(p, (b, u))| {
        let (k, kind) = first_difference(b, u)?;
        let reason = match kind {
            Mismatch::Instruction(offsets) => instruction_reason(base, bg, upd, ug, p, offsets),
            Mismatch::Extra(text) => format!("{text}{}", part_label(base.parts(bg), p)),
        };
        Some(Difference { at: (p, k), reason })
    })
}

/// Compare one matched function (groups `bg` of `base` and `ug` of `upd`),
/// appending what it found to `out`. `vanished` lists the baseline's
/// compiler clones that the update lacks (sorted).
#[allow(clippy::too_many_arguments)]
fn compare_pair<'a>(
    base: &'a ImageIndex<'_, '_>,
    bg: usize,
    upd: &'a ImageIndex<'_, '_>,
    ug: usize,
    pair: usize,
    vanished: &[(Key<'a>, &'a str)],
    scratch: &mut Scratch<'a>,
    out: &mut ChunkOut<'a>,
) {
    let (bn, un) = (&mut scratch.base, &mut scratch.upd);
    // The same code at another address (most pairs) is found without
    // normalising either build.
    let parts = parts_differ(base.parts(bg), upd.parts(ug));
    let same = parts.is_none() && norm::same_code(base, bg, upd, ug, bn, un, &mut scratch.same);
    if same {
        #[cfg(debug_assertions)]
        debug_check_same(base, bg, upd, ug, bn, un, &scratch.same);
    } else {
        norm::normalize_group(base, bg, bn);
        norm::normalize_group_hinted(upd, ug, base, bg, bn, un);
    }
    for n in bn.iter() {
        out.anchors.0.extend(&n.anchors);
    }
    for n in un.iter() {
        out.anchors.1.extend(&n.anchors);
    }
    let keys = &mut scratch.keys;
    keys.clear();
    keys.extend(
        bn.iter()
            .chain(un.iter())
            .flat_map(|n| n.data_refs.iter().copied().copied()),
    );
    keys.sort_unstable();
    keys.dedup();
    out.data_refs.extend(keys.iter().map(|&k| (pair, k)));
    // Repeated calls repeat the caller; the blocker deduplicates callers.
    if !vanished.is_empty() {
        for n in bn.iter() {
            for &(k, sig) in &n.fn_refs {
                let sig: &str = sig;
                if vanished.binary_search(&(*k, sig)).is_ok() {
                    out.clone_calls.push((pair, *k, sig));
                }
            }
        }
    }
    let first_table = out.tables.len();
    for (update, side) in [(false, &*bn), (true, &*un)] {
        for n in side {
            out.tables
                .extend(n.tables.iter().map(|&(t, len)| (update, t, len)));
        }
    }
    let start = out.pending.len();
    let difference = if same {
        out.pending.extend(scratch.same.iter().map(same_pending));
        None
    } else {
        match parts {
            Some(reason) => Some(Difference { at: (0, 0), reason }),
            None => {
                let d = first_group_difference(base, bg, upd, ug, bn, un);
                // Anonymous references before the first difference (the
                // streams agree up to there, so these pair up one to one).
                let until = d.as_ref().map_or((usize::MAX, usize::MAX), |d| d.at);
                stream_pending(bn, un, until, &mut out.pending);
                d
            }
        }
    };
    out.compared.push(Compared {
        difference,
        pending: start..out.pending.len(),
        tables: first_table..out.tables.len(),
    });
}

/// The pending pairs of references to anonymous bytes that two normalised
/// groups make at the same places before `until` (part, position): the
/// streams agree up to there, so their deferred references pair up one to
/// one.
fn stream_pending(
    bn: &[Normalized<'_>],
    un: &[Normalized<'_>],
    until: (usize, usize),
    pending: &mut Vec<Pending>,
) {
    for (p, (b, u)) in bn.iter().zip(un.iter()).enumerate() {
        for (x, y) in b.deferred.iter().zip(&u.deferred) {
            let at = (p, x.insn as usize);
            if at >= until || x.insn != y.insn {
                break;
            }
            let offset = |n: &Normalized<'_>| n.insns.get(at.1).map_or(0, |i| i.offset);
            pending.push(Pending {
                at,
                offsets: (offset(b), offset(u)),
                rvas: (x.rva, y.rva),
            });
        }
    }
}

/// The pending pair of a reference to anonymous bytes that
/// [`norm::same_code`] found at the same place of both builds.
fn same_pending(d: &norm::SameDeferred) -> Pending {
    Pending {
        at: (d.part as usize, d.insn as usize),
        offsets: (d.offset, d.offset),
        rvas: d.rvas,
    }
}

/// In builds with debug assertions (the tests, fuzzing), check a pair that
/// [`norm::same_code`] found the same against the normaliser: equal
/// streams, the same deferred references, and the same anchors and noted
/// references in `bn` and `un`.
#[cfg(debug_assertions)]
fn debug_check_same(
    base: &ImageIndex<'_, '_>,
    bg: usize,
    upd: &ImageIndex<'_, '_>,
    ug: usize,
    bn: &[Normalized<'_>],
    un: &[Normalized<'_>],
    same: &[norm::SameDeferred],
) {
    let (mut nb, mut nu) = (Vec::new(), Vec::new());
    norm::normalize_group(base, bg, &mut nb);
    norm::normalize_group(upd, ug, &mut nu);
    let name = base.key(bg).to_string();
    debug_assert!(
        first_group_difference(base, bg, upd, ug, &nb, &nu).is_none(),
        "`{name}`: the twin walk found the same code, the normaliser a difference"
    );
    let mut streams = Vec::new();
    stream_pending(&nb, &nu, (usize::MAX, usize::MAX), &mut streams);
    let twin: Vec<Pending> = same.iter().map(same_pending).collect();
    debug_assert_eq!(streams, twin, "`{name}`: deferred references");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    for (twin, streams) in [(bn, &nb), (un, &nu)] {
        let refs = |n: &[Normalized<'_>]| {
            let mut anchors: Vec<u64> = n.iter().flat_map(|x| x.anchors.iter().copied()).collect();
            anchors.sort_unstable();
            anchors.dedup();
            let data = sorted(
                n.iter()
                    .flat_map(|x| x.data_refs.iter().map(|k| k.to_string()))
                    .collect(),
            );
            let fns = sorted(
                n.iter()
                    .flat_map(|x| x.fn_refs.iter().map(|(k, s)| format!("{k}/{s}")))
                    .collect(),
            );
            let tables: usize = n.iter().map(|x| x.tables.len()).sum();
            (anchors, data, fns, tables)
        };
        debug_assert_eq!(refs(twin), refs(streams), "`{name}`: recorded references");
    }
}

/// Why groups `bg` of `base` and `ug` of `upd` differ, normalising both
/// against their finished indexes (no reference left deferred).
fn finished_reason(
    base: &ImageIndex<'_, '_>,
    bg: usize,
    upd: &ImageIndex<'_, '_>,
    ug: usize,
) -> Option<String> {
    parts_differ(base.parts(bg), upd.parts(ug)).or_else(|| {
        let (mut bn, mut un) = (Vec::new(), Vec::new());
        norm::normalize_group(base, bg, &mut bn);
        norm::normalize_group(upd, ug, &mut un);
        first_group_difference(base, bg, upd, ug, &bn, &un).map(|d| d.reason)
    })
}

/// The reason a matched function differs, once both indexes are finished.
fn settle(
    base: &ImageIndex<'_, '_>,
    bg: usize,
    upd: &ImageIndex<'_, '_>,
    ug: usize,
    c: &Compared,
    chunk: &ChunkOut<'_>,
) -> Option<String> {
    // A jump table measured differently now that every anchor is known: the
    // provisional forms are stale.
    let stale = chunk
        .tables
        .get(c.tables.clone())
        .unwrap_or(&[])
        .iter()
        .any(|&(update, table, len)| {
            let idx = if update { upd } else { base };
            !norm::table_measure_holds(idx, table, len)
        });
    if stale {
        return finished_reason(base, bg, upd, ug);
    }
    // The first pending pair that resolves differently comes before the
    // first other difference.
    for p in chunk.pending.get(c.pending.clone()).unwrap_or(&[]) {
        if base.resolve(p.rvas.0, None) != upd.resolve(p.rvas.1, None) {
            return Some(instruction_reason(base, bg, upd, ug, p.at.0, p.offsets));
        }
    }
    c.difference.as_ref().map(|d| d.reason.clone())
}

/// How two instruction streams first differ.
#[derive(Debug, PartialEq, Eq)]
enum Mismatch {
    /// Different instructions, at these byte offsets (baseline, update).
    Instruction((u32, u32)),
    /// One stream has extra instructions after the other ends.
    Extra(String),
}

/// Where two instruction streams first differ: the position in the streams,
/// and how. Exact: the fast hashes only find a difference sooner; equal
/// hashes are confirmed word by word, and the references and places are
/// compared themselves (see [`norm::exact_difference`]).
fn first_difference(b: &Normalized<'_>, u: &Normalized<'_>) -> Option<(usize, Mismatch)> {
    let k = norm::exact_difference(b, u)?;
    if let (Some(x), Some(y)) = (b.insns.get(k), u.insns.get(k)) {
        return Some((k, Mismatch::Instruction((x.offset, y.offset))));
    }
    // Equal up to the shorter stream: the longer one has extra code.
    let (side, longer) = if b.insns.len() >= u.insns.len() {
        ("baseline", b)
    } else {
        ("update", u)
    };
    let extra = longer.insns.get(k)?;
    Some((
        k,
        Mismatch::Extra(format!(
            "{side} has {} more instructions from +{:#x}",
            longer.insns.len().saturating_sub(k),
            extra.offset
        )),
    ))
}

/// The differing instructions as text: `` (`a` → `b`) ``, or nothing when
/// either does not decode.
fn show_instructions(
    base: &ImageIndex<'_, '_>,
    bpart: &Part<'_>,
    upd: &ImageIndex<'_, '_>,
    upart: &Part<'_>,
    (bo, uo): (u32, u32),
) -> String {
    let text = |idx: &ImageIndex<'_, '_>, part: &Part<'_>, off: u32| {
        let rva = part.rva.checked_add(u64::from(off))?;
        let len = part.size.checked_sub(u64::from(off))?.min(15);
        norm::render(idx.image.arch, idx.image.bytes_at(rva, len)?, rva)
    };
    match (text(base, bpart, bo), text(upd, upart, uo)) {
        (Some(a), Some(b)) => format!(": `{a}` → `{b}`"),
        _ => String::new(),
    }
}

/// The file-backed bytes of `[rva, rva + size)`: at most `size` bytes,
/// fewer when the object runs into zero-filled memory (`.bss`), borrowed
/// from the image (never allocated from a declared size).
fn file_bytes<'d>(idx: &ImageIndex<'_, 'd>, rva: u64, size: u64) -> &'d [u8] {
    idx.image
        .section_at(rva)
        .and_then(|s| {
            let start = usize::try_from(rva.checked_sub(s.rva)?).ok()?;
            let rest = s.data.get(start.min(s.data.len())..)?;
            let len = usize::try_from(size).unwrap_or(usize::MAX).min(rest.len());
            rest.get(..len)
        })
        .unwrap_or(&[])
}

/// The first offset in `[from, to)` at which two byte strings differ, each
/// taken as zero-extended past its end. Costs at most the length of the
/// file-backed bytes, however large the range.
fn first_byte_difference(a: &[u8], b: &[u8], from: u64, to: u64) -> Option<u64> {
    fn clip(x: &[u8], from: u64, to: u64) -> &[u8] {
        let len = x.len() as u64;
        let (lo, hi) = (from.min(len) as usize, to.min(len) as usize);
        x.get(lo..hi.max(lo)).unwrap_or(&[])
    }
    let (x, y) = (clip(a, from, to), clip(b, from, to));
    let common = x.len().min(y.len());
    if let Some(i) = x.iter().zip(y).position(|(p, q)| p != q) {
        return Some(from.saturating_add(i as u64));
    }
    // Past the shorter one, the other must be zero.
    let longer = if x.len() > y.len() { x } else { y };
    longer
        .get(common..)
        .and_then(|rest| rest.iter().position(|&v| v != 0))
        .map(|i| from.saturating_add(common.saturating_add(i) as u64))
}

/// Compare two data objects: size, then contents with pointers normalised.
/// Returns the reason they differ.
fn compare_data(
    base: &ImageIndex<'_, '_>,
    bd: usize,
    upd: &ImageIndex<'_, '_>,
    ud: usize,
) -> Option<String> {
    let (Some((_, bo)), Some((_, uo))) = (base.data_object(bd), upd.data_object(ud)) else {
        return None;
    };
    if bo.size != uo.size {
        return Some(format!(
            "size changed from {} to {} bytes",
            bo.size, uo.size
        ));
    }
    let bb = file_bytes(base, bo.rva, bo.size);
    let ub = file_bytes(upd, uo.rva, uo.size);
    // Pointer slots: compare what they point at; their bytes are skipped.
    let brel = base.relocations_in(bo.rva, bo.size);
    let urel = upd.relocations_in(uo.rva, uo.size);
    let offsets = |rel: &[hotpatch_formats::Relocation], at: u64| -> Vec<u64> {
        rel.iter().map(|r| r.rva.wrapping_sub(at)).collect()
    };
    let (boffs, uoffs) = (offsets(brel, bo.rva), offsets(urel, uo.rva));
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
    let mut pos = 0u64;
    for ((br, ur), &off) in brel.iter().zip(urel).zip(&boffs) {
        // Anonymous blocks compare by digest, which covers their contents.
        if base.resolve_reloc(br, None) != upd.resolve_reloc(ur, None) {
            return Some(format!("pointer at +{off:#x} points elsewhere"));
        }
        if let Some(i) = first_byte_difference(bb, ub, pos, off) {
            return Some(format!("initial value differs at +{i:#x}"));
        }
        pos = pos.max(off.saturating_add(u64::from(br.width)));
    }
    first_byte_difference(bb, ub, pos, bo.size).map(|i| format!("initial value differs at +{i:#x}"))
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
pub fn diff<'i>(baseline: &'i Image<'_>, updated: &'i Image<'_>) -> Result<Diff<'i>, Error> {
    diff_with(baseline, updated, &Options::default())
}

/// [`diff`], with the images' names for blockers and reviewed overrides.
pub fn diff_with<'i>(
    baseline: &'i Image<'_>,
    updated: &'i Image<'_>,
    options: &Options,
) -> Result<Diff<'i>, Error> {
    compare(baseline, updated, options).map(|c| c.report)
}

/// The whole comparison of a baseline and its update: both images'
/// finished indexes, the functions matched between them, and the report.
/// What the report, the blocker policy and the packager all read.
#[derive(Debug)]
pub struct Comparison<'i, 'd> {
    /// The baseline's index.
    pub base: ImageIndex<'i, 'd>,
    /// The update's index.
    pub upd: ImageIndex<'i, 'd>,
    /// Matched function groups (baseline group, update group), in the
    /// baseline's key order.
    pub pairs: Vec<(usize, usize)>,
    /// For each pair, whether it changed.
    pub changed: Vec<bool>,
    /// For each pair, whether it changed only in its line numbers (see
    /// [`Entry::lines_only`]).
    pub lines_only: Vec<bool>,
    /// Update groups without a baseline counterpart.
    pub added: Vec<usize>,
    /// Baseline groups without an update counterpart.
    pub removed: Vec<usize>,
    /// The report.
    pub report: Diff<'i>,
}

/// Compare a baseline with its update (see [`diff`]), keeping everything a
/// packager needs.
pub fn compare<'i, 'd>(
    baseline: &'i Image<'d>,
    updated: &'i Image<'d>,
    options: &Options,
) -> Result<Comparison<'i, 'd>, Error> {
    if baseline.arch != updated.arch || baseline.format != updated.format {
        return Err(Error::Incompatible {
            baseline: describe(baseline),
            updated: describe(updated),
        });
    }
    let (mut base, mut upd) =
        rayon::join(|| ImageIndex::new(baseline), || ImageIndex::new(updated));

    // Match functions by key (both lists are sorted by key).
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    for m in merge_by_key(&base.groups, &upd.groups, |g| &g.key) {
        match m {
            (Some(b), Some(u)) => pairs.push((b, u)),
            (Some(b), None) => removed.push(b),
            (None, Some(u)) => added.push(u),
            (None, None) => {}
        }
    }
    let group_names = |update: bool, g: usize| {
        let idx = if update { &upd } else { &base };
        idx.groups
            .get(g)
            .map(|g| {
                std::iter::once(g.key)
                    .chain(g.aliases.iter().copied())
                    .collect()
            })
            .unwrap_or_default()
    };
    pair_aliases(group_names, &mut pairs, &mut removed, &mut added);
    let (structural, matches) =
        match_unnamed(&mut base, &mut upd, &mut pairs, &mut removed, &mut added);
    let run = compare_indexes(
        baseline,
        &base,
        updated,
        &upd,
        options,
        Matched {
            pairs,
            removed,
            added,
            structural,
            matches,
        },
    );
    let mut cmp = Comparison {
        base,
        upd,
        pairs: run.pairs,
        changed: run.changed,
        lines_only: run.lines_only,
        added: run.added,
        removed: run.removed,
        report: run.report,
    };
    shared_page_blockers(&mut cmp);
    Ok(cmp)
}

/// One `shared-page` blocker per function whose new body has an ADRP that
/// could not serve its users once patched ([`crate::assemble::page_conflicts`]):
/// the packager's own analysis, so that the verdict and the packager agree.
fn shared_page_blockers(cmp: &mut Comparison<'_, '_>) {
    let conflicts = crate::assemble::page_conflicts(cmp);
    if conflicts.is_empty() {
        return;
    }
    let mut by_function: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in conflicts {
        by_function.entry(c.function).or_default().push(c.detail);
    }
    let report = &mut cmp.report;
    for (function, details) in by_function {
        report.blockers.push(Blocker {
            object: function.clone(),
            kind: BlockerKind::SharedPage,
            reason: details.join("; "),
            functions: vec![function],
        });
    }
    report
        .blockers
        .sort_by(|a, b| (&a.object, a.kind).cmp(&(&b.object, b.kind)));
    report.hotpatchable = false;
}

/// How the functions of two builds were matched, before comparing them.
struct Matched<'i> {
    pairs: Vec<(usize, usize)>,
    removed: Vec<usize>,
    added: Vec<usize>,
    structural: Option<Structural<'i>>,
    matches: HashMap<usize, Match<'i>>,
}

/// What [`compare_indexes`] found (see [`Comparison`]).
struct Run<'i> {
    pairs: Vec<(usize, usize)>,
    changed: Vec<bool>,
    lines_only: Vec<bool>,
    added: Vec<usize>,
    removed: Vec<usize>,
    report: Diff<'i>,
}

/// The comparison proper, over the two matched indexes (which it
/// finishes).
fn compare_indexes<'i>(
    baseline: &'i Image<'_>,
    base: &ImageIndex<'i, '_>,
    updated: &'i Image<'_>,
    upd: &ImageIndex<'i, '_>,
    options: &Options,
    matched: Matched<'i>,
) -> Run<'i> {
    let Matched {
        pairs,
        removed,
        added,
        structural,
        matches,
    } = matched;
    // Compiler clones of the baseline that the update lacks: their callers
    // are recorded during the comparison.
    let mut vanished: Vec<(Key<'_>, &str)> = Vec::new();
    for &(b, u) in &pairs {
        let uparts = upd.parts(u);
        for p in base.parts(b) {
            if p.entry
                && !p.signature.is_empty()
                && !uparts.iter().any(|q| q.signature == p.signature)
            {
                vanished.push((base.key(b), &*p.signature));
            }
        }
    }
    vanished.sort_unstable();
    vanished.dedup();

    // Compare every matched function, in parallel. The same decode finds the
    // anchors that fix the anonymous blocks, so references to
    // anonymous data are compared once the blocks are known, below.
    let chunks: Vec<ChunkOut<'_>> = {
        let (base, upd, vanished) = (&base, &upd, &vanished);
        pairs
            .par_chunks(CHUNK)
            .enumerate()
            .map_init(Scratch::default, |scratch, (c, chunk)| {
                let mut out = ChunkOut::default();
                for (i, &(b, u)) in chunk.iter().enumerate() {
                    let pair = c.saturating_mul(CHUNK).saturating_add(i);
                    compare_pair(base, b, upd, u, pair, vanished, scratch, &mut out);
                }
                for a in [&mut out.anchors.0, &mut out.anchors.1] {
                    a.sort_unstable();
                    a.dedup();
                }
                out
            })
            .collect()
    };
    let (mut base_anchors, mut upd_anchors) =
        rayon::join(|| anchors_of(base, &removed), || anchors_of(upd, &added));
    for c in &chunks {
        base_anchors.extend(&c.anchors.0);
        upd_anchors.extend(&c.anchors.1);
    }
    rayon::join(|| base.finish(base_anchors), || upd.finish(upd_anchors));

    // Data objects.
    let is_program_data = |idx: &ImageIndex<'_, '_>, d: usize| {
        idx.data_object(d).is_some_and(|(_, o)| {
            !LOADER_SECTIONS.contains(&o.section.as_str())
                && !matches!(o.name.as_str(), "_DYNAMIC" | "_GLOBAL_OFFSET_TABLE_")
        })
    };
    let mut data: Vec<Entry<'_>> = Vec::new();
    let mut changed_rodata: BTreeSet<Key<'_>> = BTreeSet::new();
    let mut writable_changes: Vec<(Key<'_>, BlockerKind, String)> = Vec::new();
    let (mut dpairs, mut dremoved, mut dadded) = (Vec::new(), Vec::new(), Vec::new());
    for m in merge_by_key(&base.data, &upd.data, |d| &d.key) {
        match m {
            (Some(b), Some(u)) => dpairs.push((b, u)),
            (Some(b), None) => dremoved.push(b),
            (None, Some(u)) => dadded.push(u),
            (None, None) => {}
        }
    }
    let data_names = |update: bool, d: usize| {
        let idx = if update { upd } else { base };
        idx.data
            .get(d)
            .map(|e| {
                std::iter::once(e.key)
                    .chain(e.aliases.iter().copied())
                    .collect()
            })
            .unwrap_or_default()
    };
    pair_aliases(data_names, &mut dpairs, &mut dremoved, &mut dadded);
    // In key order again (pairs and removals by the baseline's key).
    let mut matched: Vec<(Key<'_>, Option<usize>, Option<usize>)> = dpairs
        .iter()
        .map(|&(b, u)| (base.data.get(b).map(|e| e.key), Some(b), Some(u)))
        .chain(
            dremoved
                .iter()
                .map(|&b| (base.data.get(b).map(|e| e.key), Some(b), None)),
        )
        .chain(
            dadded
                .iter()
                .map(|&u| (upd.data.get(u).map(|e| e.key), None, Some(u))),
        )
        .filter_map(|(k, b, u)| Some((k?, b, u)))
        .collect();
    matched.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let entry_names = |b: Option<usize>, u: Option<usize>| -> Vec<Key<'_>> {
        let mut all = Vec::new();
        if let Some(b) = b {
            all.extend(data_names(false, b));
        }
        if let Some(u) = u {
            all.extend(data_names(true, u));
        }
        all
    };
    // The comparisons, in parallel.
    let compared: Vec<Option<String>> = matched
        .par_iter()
        .map(|&(_, b, u)| match (b, u) {
            (Some(bd), Some(ud)) if is_program_data(base, bd) => compare_data(base, bd, upd, ud),
            _ => None,
        })
        .collect();
    for ((_, b, u), reason) in matched.into_iter().zip(compared) {
        let m = (b, u);
        let names = entry_names(b, u);
        match m {
            (Some(bd), Some(ud)) if is_program_data(base, bd) => {
                let (Some((e, bo)), Some((_, uo))) = (base.data_object(bd), upd.data_object(ud))
                else {
                    continue;
                };
                let key = e.key;
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
                        writable_changes.push((key, kind, r.clone()));
                    } else {
                        changed_rodata.insert(key);
                    }
                }
                data.push(data_entry(key, names, Some(bo), Some(uo), status, reason));
            }
            (Some(bd), None) if is_program_data(base, bd) => {
                if let Some((e, bo)) = base.data_object(bd) {
                    data.push(data_entry(
                        e.key,
                        names,
                        Some(bo),
                        None,
                        Status::Removed,
                        None,
                    ));
                }
            }
            (None, Some(ud)) if is_program_data(upd, ud) => {
                if let Some((e, uo)) = upd.data_object(ud) {
                    data.push(data_entry(
                        e.key,
                        names,
                        None,
                        Some(uo),
                        Status::Added,
                        None,
                    ));
                }
            }
            _ => {}
        }
    }

    // Users of the changed data objects: the first changed read-only object
    // each matched function refers to, and every user of changed writable
    // data (for its blocker).
    let writable_keys: BTreeSet<Key<'_>> = writable_changes.iter().map(|w| w.0).collect();
    let mut rodata_use: Vec<Option<Key<'_>>> = vec![None; pairs.len()];
    let mut users: HashMap<Key<'_>, Vec<Key<'_>>> = HashMap::new();
    for c in &chunks {
        for &(pair, key) in &c.data_refs {
            if changed_rodata.contains(&key) {
                if let Some(first) = rodata_use.get_mut(pair) {
                    if first.is_none_or(|f| key < f) {
                        *first = Some(key);
                    }
                }
            }
            if writable_keys.contains(&key) {
                if let Some(&(b, _)) = pairs.get(pair) {
                    users.entry(key).or_default().push(base.key(b));
                }
            }
        }
    }

    // Matched functions: changed if their code differs, or if they use a
    // changed read-only object (the package carries its new copy).
    let compared = chunks
        .iter()
        .flat_map(|c| c.compared.iter().map(move |x| (x, c)));
    let reasons: Vec<Option<String>> = pairs
        .par_iter()
        .zip(compared.collect::<Vec<_>>())
        .zip(&rodata_use)
        .map(|((&(b, u), (c, chunk)), rodata)| {
            settle(base, b, upd, u, c, chunk)
                .or_else(|| rodata.map(|k| format!("references changed read-only object `{k}`")))
        })
        .collect();
    // In report order: by status, each in key order (the indexes' order).
    let mut functions: Vec<Entry<'_>> = Vec::with_capacity(
        pairs
            .len()
            .saturating_add(added.len())
            .saturating_add(removed.len()),
    );
    let mut changed_keys: HashSet<Key<'_>> = HashSet::new();
    let changed: Vec<bool> = reasons.iter().map(Option::is_some).collect();
    // Changed functions whose code differs only by `__LINE__` immediates
    // shifted by their own line shift, and that use no changed read-only
    // object (whose new copy only a packaged function would reach).
    let lines: Vec<(Option<i64>, bool)> = pairs
        .par_iter()
        .zip(&changed)
        .zip(&rodata_use)
        .map(|((&(b, u), &c), rodata)| {
            if !c {
                return (None, false);
            }
            let shift = crate::lines::line_shift(base, b, upd, u);
            let only = rodata.is_none()
                && shift.is_some_and(|s| s != 0 && crate::lines::lines_only(base, b, upd, u, s));
            (shift, only)
        })
        .collect();
    let lines_only: Vec<bool> = lines.iter().map(|l| l.1).collect();
    let how = |b: usize| matches.get(&b).cloned();
    for ((&(b, u), reason), &(shift, only)) in pairs.iter().zip(reasons).zip(&lines) {
        if let Some(reason) = reason {
            changed_keys.insert(base.key(b));
            let mut e = group_entry(base, Some(b), upd, Some(u), Status::Changed, Some(reason));
            e.matched = how(b);
            e.line_shift = shift;
            e.lines_only = only;
            functions.push(e);
        }
    }
    for &u in &added {
        functions.push(group_entry(base, None, upd, Some(u), Status::Added, None));
    }
    for &b in &removed {
        functions.push(group_entry(base, Some(b), upd, None, Status::Removed, None));
    }
    // Unchanged functions, most of them: made in parallel, in order, in
    // place.
    let unchanged: Vec<(usize, usize)> = pairs
        .iter()
        .zip(&changed)
        .filter(|(_, &c)| !c)
        .map(|(&p, _)| p)
        .collect();
    functions.par_extend(unchanged.par_iter().map(|&(b, u)| {
        let mut e = group_entry(base, Some(b), upd, Some(u), Status::Unchanged, None);
        e.matched = how(b);
        e
    }));

    // Blockers.
    let mut blockers = Vec::new();
    for (key, kind, reason) in writable_changes {
        let mut fns: Vec<String> = users
            .remove(&key)
            .unwrap_or_default()
            .into_iter()
            .map(|k| k.to_string())
            .collect();
        fns.sort();
        fns.dedup();
        let used = if fns.is_empty() {
            String::new()
        } else {
            format!("; used by {}", listing(&fns))
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
    // Baseline callers of each vanished clone.
    let mut callers: HashMap<(Key<'_>, &str), Vec<Key<'_>>> = HashMap::new();
    for c in &chunks {
        for &(pair, k, s) in &c.clone_calls {
            if let Some(&(b, _)) = pairs.get(pair) {
                callers.entry((k, s)).or_default().push(base.key(b));
            }
        }
    }
    for (&(b, _), _) in pairs.iter().zip(&changed).filter(|(_, &c)| c) {
        let Some(g) = base.groups.get(b) else {
            continue;
        };
        for part in base.parts(b).iter().filter(|p| p.entry) {
            match entry_scheme(base, part.rva, part.size) {
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
            if vanished.binary_search(&(g.key, &*part.signature)).is_err() {
                continue;
            }
            // A clone with its own calling convention disappears: only safe
            // if every caller is replaced too.
            let mut unchanged: Vec<String> = callers
                .get(&(g.key, &*part.signature))
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
                        listing(&unchanged)
                    ),
                    functions: unchanged,
                });
            }
        }
    }

    // Data entries were made in key order, so grouping them by status keeps
    // them sorted by status, then name and unit.
    let data = by_status(data);
    debug_assert!(functions.is_sorted_by_key(|e| (e.status, e.name, e.unit)));
    debug_assert!(data.is_sorted_by_key(|e| (e.status, e.name, e.unit)));
    // What the diff cannot see: data without symbols, and writable bytes
    // that no symbol covers.
    for (image, name) in [
        (baseline, &options.baseline_name),
        (updated, &options.updated_name),
    ] {
        if image.stripped {
            let remedy = match image.format {
                hotpatch_formats::Format::Pe => "give the PDBs of both builds",
                hotpatch_formats::Format::Elf => {
                    "diff the unstripped builds (or give their debug files)"
                }
            };
            blockers.push(Blocker {
                object: name.clone(),
                kind: BlockerKind::NoDataSymbols,
                reason: format!(
                    "`{name}` has no symbols for its data (stripped), so the diff cannot tell whether writable data changed; {remedy}"
                ),
                functions: Vec::new(),
            });
        }
    }
    if !baseline.stripped && !updated.stripped {
        if let Some(reason) = unaccounted_writable(base, upd) {
            blockers.push(Blocker {
                object: options.updated_name.clone(),
                kind: BlockerKind::UnaccountedWritableData,
                reason,
                functions: Vec::new(),
            });
        }
    }
    // Types: a changed layout that changed code uses blocks; one that only
    // unchanged code uses is reported.
    // New code (changed and added functions) runs against objects the old
    // code made.
    let mut new_code = changed_keys.clone();
    new_code.extend(added.iter().map(|&u| upd.key(u)));
    let types = type_entries(baseline, base, updated, upd, &new_code);
    for t in types.iter().filter(|t| t.blocking) {
        blockers.push(Blocker {
            object: format!("type:{}", t.name),
            kind: BlockerKind::TypeLayoutChanged,
            reason: format!(
                "{}; used by changed functions {}",
                t.reason,
                listing(&t.changed_users)
            ),
            functions: t.changed_users.clone(),
        });
    }
    if !new_code.is_empty() {
        for (image, name) in [
            (baseline, &options.baseline_name),
            (updated, &options.updated_name),
        ] {
            let missing = match &image.type_info {
                hotpatch_formats::TypeInfo::Read => continue,
                hotpatch_formats::TypeInfo::Absent => {
                    "has no debug information for its types (build it with -g, or give its PDB)"
                        .to_string()
                }
                hotpatch_formats::TypeInfo::Unsupported(why) => {
                    format!("has type information this tool cannot read ({why})")
                }
            };
            blockers.push(Blocker {
                object: name.clone(),
                kind: BlockerKind::NoTypeInfo,
                reason: format!(
                    "`{name}` {missing}, so the diff cannot tell whether a structure that changed code uses changed its layout; after review, --allow 'type:*' accepts that"
                ),
                functions: Vec::new(),
            });
        }
    }
    blockers.sort_by(|a, b| (&a.object, a.kind).cmp(&(&b.object, b.kind)));
    let (blockers, overridden, unused_overrides) = apply_overrides(blockers, &options.allow);
    let report = Diff {
        hotpatchable: blockers.is_empty(),
        functions,
        data,
        types,
        blockers,
        overridden,
        unused_overrides,
        structural,
    };
    Run {
        pairs,
        changed,
        lines_only,
        added,
        removed,
        report,
    }
}

/// Structural matching, when either index has functions whose names are
/// only their addresses ([`crate::index::Group::unnamed`]): such names
/// never match by name (pairs made by them are undone), the unnamed
/// functions left over are paired by [`matching::match_unnamed`], the
/// pairs join `pairs`, and every unnamed function gets its identity
/// ([`ImageIndex::set_identity`]): its baseline group for a matched pair
/// (in both builds), one of its own for a function left unmatched. Returns
/// the summary and each pair's [`Match`] by baseline group. Costs nothing
/// when every function has a name.
fn match_unnamed<'i>(
    base: &mut ImageIndex<'i, '_>,
    upd: &mut ImageIndex<'i, '_>,
    pairs: &mut Vec<(usize, usize)>,
    removed: &mut Vec<usize>,
    added: &mut Vec<usize>,
) -> (Option<Structural<'i>>, HashMap<usize, Match<'i>>) {
    if !base.has_unnamed() && !upd.has_unnamed() {
        return (None, HashMap::new());
    }
    pairs.retain(|&(b, u)| {
        let by_address = base.is_unnamed(b) || upd.is_unnamed(u);
        if by_address {
            removed.push(b);
            added.push(u);
        }
        !by_address
    });
    removed.sort_unstable();
    added.sort_unstable();
    let found = matching::match_unnamed(base, upd, pairs, removed, added);
    let (mut taken_b, mut taken_u) = (HashSet::new(), HashSet::new());
    for p in &found {
        pairs.push((p.baseline, p.update));
        taken_b.insert(p.baseline);
        taken_u.insert(p.update);
        base.set_identity(p.baseline, p.baseline as u64);
        upd.set_identity(p.update, p.baseline as u64);
    }
    pairs.sort_unstable();
    removed.retain(|b| !taken_b.contains(b));
    added.retain(|u| !taken_u.contains(u));
    // Identities nothing in the other build has.
    for &b in removed.iter() {
        base.set_identity(b, (1u64 << 62) | b as u64);
    }
    for &u in added.iter() {
        upd.set_identity(u, (1u64 << 63) | u as u64);
    }
    let count = |c: Confidence| found.iter().filter(|p| p.found.confidence == c).count();
    let unmatched = |idx: &ImageIndex<'i, '_>, list: &[usize]| -> Vec<&'i str> {
        list.iter()
            .filter(|&&g| idx.is_unnamed(g))
            .map(|&g| idx.key(g).name)
            .collect()
    };
    let summary = Structural {
        matched: found.len(),
        high: count(Confidence::High),
        medium: count(Confidence::Medium),
        low: count(Confidence::Low),
        unmatched_baseline: unmatched(base, removed),
        unmatched_update: unmatched(upd, added),
    };
    let matches = found.into_iter().map(|p| (p.baseline, p.found)).collect();
    (Some(summary), matches)
}

/// Split `blockers` into those that stand and those a reviewed override
/// lifts, and list the overrides that matched nothing. Only type layouts
/// can be overridden (`type:NAME`): the other blockers are facts about
/// state the running process already holds.
fn apply_overrides(
    blockers: Vec<Blocker>,
    allow: &[Allow],
) -> (Vec<Blocker>, Vec<Overridden>, Vec<Allow>) {
    let mut used = vec![false; allow.len()];
    let mut stand = Vec::new();
    let mut lifted = Vec::new();
    for b in blockers {
        let hit = allow.iter().position(|a| match b.kind {
            BlockerKind::TypeLayoutChanged => a.object == b.object,
            BlockerKind::NoTypeInfo => a.object == "type:*",
            _ => false,
        });
        match hit {
            Some(i) => {
                if let Some(u) = used.get_mut(i) {
                    *u = true;
                }
                let reason = allow.get(i).map(|a| a.reason.clone()).unwrap_or_default();
                lifted.push(Overridden { blocker: b, reason });
            }
            None => stand.push(b),
        }
    }
    let unused = allow
        .iter()
        .zip(&used)
        .filter(|(_, &u)| !u)
        .map(|(a, _)| a.clone())
        .collect();
    (stand, lifted, unused)
}

/// The types whose layout changed, with their users by name, and whether
/// new code (`changed`: changed and added functions, by key) uses them.
fn type_entries<'i>(
    baseline: &'i Image<'_>,
    base: &ImageIndex<'i, '_>,
    updated: &'i Image<'_>,
    upd: &ImageIndex<'i, '_>,
    changed: &HashSet<Key<'i>>,
) -> Vec<TypeEntry<'i>> {
    let mut out: Vec<TypeEntry<'i>> = crate::types::compare_types(baseline, updated)
        .into_iter()
        .map(|t| {
            let mut users: Vec<Key<'i>> = Vec::new();
            for (idx, rvas) in [(base, &t.users_baseline), (upd, &t.users_updated)] {
                for &rva in rvas {
                    if let Some((g, _)) = idx.function_at(rva) {
                        users.push(idx.key(g));
                    }
                }
            }
            users.sort_unstable();
            users.dedup();
            let changed_users: Vec<String> = users
                .iter()
                .filter(|k| changed.contains(k))
                .map(ToString::to_string)
                .collect();
            TypeEntry {
                name: t.name,
                kind: t.kind.keyword(),
                baseline_size: t.old_size(),
                updated_size: t.new_size(),
                reason: t.reason(),
                users: users.iter().map(ToString::to_string).collect(),
                blocking: !changed_users.is_empty(),
                changed_users,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(b.name));
    out
}

/// Unnamed writable state of one section: its name, its non-zero bytes, and
/// its pointers' targets (see [`unnamed_writable`]).
type UnnamedState<'a> = (&'a str, Vec<u8>, Vec<Option<SymRef<'a>>>);

/// What an image's writable memory holds outside every data object (and
/// outside the loader's own sections), per section: the non-zero bytes in
/// address order, and what every relocated pointer among them points at.
/// Zeros are left out because padding and `.bss` gaps are zeros, and how
/// the unnamed bytes are cut into runs changes whenever a named object moves
/// or appears between them; the content does not. A pointer into code that
/// no symbol names (a MinGW runtime's functions, which carry no debug
/// records) is taken as just that, `None`: such code's bytes hold
/// displacements that change with every layout, so they say nothing.
fn unnamed_writable<'a>(idx: &'a ImageIndex<'_, '_>) -> Vec<UnnamedState<'a>> {
    let image = idx.image;
    let mut covered: Vec<(u64, u64)> = image
        .data
        .iter()
        .map(|d| (d.rva, d.rva.saturating_add(d.size)))
        .collect();
    covered.sort_unstable();
    let mut out = Vec::new();
    for s in &image.sections {
        if !s.perms.write || LOADER_SECTIONS.contains(&s.name.as_str()) {
            continue;
        }
        let end = s.rva.saturating_add(s.data.len() as u64);
        let mut pos = s.rva;
        let (mut bytes, mut targets) = (Vec::new(), Vec::new());
        let mut take = |from: u64, to: u64| {
            if from >= to {
                return;
            }
            let len = to.saturating_sub(from);
            let run = image.bytes_at(from, len).unwrap_or(&[]);
            let mut skip: Vec<(u64, u64)> = Vec::new();
            for r in idx.relocations_in(from, len) {
                let t = idx.resolve_reloc(r, None);
                let code = t.is_anon()
                    && match r.target {
                        hotpatch_formats::RelocTarget::Rva(t) => {
                            image.section_at(t).is_some_and(|s| s.perms.execute)
                        }
                        hotpatch_formats::RelocTarget::Symbol { .. } => false,
                    };
                targets.push((!code).then_some(t));
                skip.push((r.rva, r.rva.saturating_add(u64::from(r.width))));
            }
            for (a, &v) in (from..).zip(run) {
                if v != 0 && !skip.iter().any(|&(lo, hi)| a >= lo && a < hi) {
                    bytes.push(v);
                }
            }
        };
        let first = covered.partition_point(|&(_, e)| e <= s.rva);
        for &(start, stop) in covered.get(first..).unwrap_or(&[]) {
            if start >= end {
                break;
            }
            take(pos, start.min(end));
            pos = pos.max(stop);
        }
        take(pos, end);
        if !bytes.is_empty() || !targets.is_empty() {
            out.push((s.name.as_str(), bytes, targets));
        }
    }
    out
}

/// Why the writable bytes that no data symbol covers differ between the
/// two builds, if they do.
fn unaccounted_writable(base: &ImageIndex<'_, '_>, upd: &ImageIndex<'_, '_>) -> Option<String> {
    let (b, u) = (unnamed_writable(base), unnamed_writable(upd));
    if b == u {
        return None;
    }
    let describe = |runs: &[UnnamedState<'_>]| -> String {
        let bytes: usize = runs.iter().map(|r| r.1.len()).sum();
        let pointers: usize = runs.iter().map(|r| r.2.len()).sum();
        let mut names: Vec<&str> = runs.iter().map(|r| r.0).collect();
        names.dedup();
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "{} and {} in {}",
            plural(bytes, "non-zero byte", "non-zero bytes"),
            plural(pointers, "pointer", "pointers"),
            if names.is_empty() {
                "no section".to_string()
            } else {
                names.join(", ")
            }
        )
    };
    Some(format!(
        "writable bytes that no data symbol covers differ (baseline: {}; update: {}), so state the diff cannot name may have changed; a running process holds the old state",
        describe(&b),
        describe(&u)
    ))
}

/// How many names a reason lists before it gives a count of the rest (the
/// blocker's `functions` keep them all).
const LISTED: usize = 5;

/// `names` for a reason: the first [`LISTED`], then how many more, so that
/// a global used by four hundred functions does not bury the verdict.
fn listing(names: &[String]) -> String {
    let shown = names.get(..LISTED.min(names.len())).unwrap_or(names);
    let rest = names.len().saturating_sub(shown.len());
    if rest == 0 {
        shown.join(", ")
    } else {
        format!("{} and {rest} more", shown.join(", "))
    }
}

/// `entries` grouped by status, in [`Status`] order, keeping their order
/// within each status.
fn by_status(entries: Vec<Entry<'_>>) -> Vec<Entry<'_>> {
    let mut buckets: [Vec<Entry<'_>>; 4] = Default::default();
    for e in entries {
        let b = match e.status {
            Status::Changed => 0,
            Status::Added => 1,
            Status::Removed => 2,
            Status::Unchanged => 3,
        };
        if let Some(bucket) = buckets.get_mut(b) {
            bucket.push(e);
        }
    }
    buckets.into_iter().flatten().collect()
}

/// Walk two lists sorted by `key` together: `(Some(a), Some(b))` for a key
/// in both, `(Some(a), None)` or `(None, Some(b))` for a key in one.
fn merge_by_key<'k, T, K: Ord>(
    a: &'k [T],
    b: &'k [T],
    key: impl Fn(&'k T) -> K + 'k,
) -> impl Iterator<Item = (Option<usize>, Option<usize>)> + 'k {
    let (mut i, mut j) = (0usize, 0usize);
    std::iter::from_fn(move || {
        let (x, y) = (a.get(i), b.get(j));
        let order = match (x, y) {
            (Some(x), Some(y)) => key(x).cmp(&key(y)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => return None,
        };
        let (ai, bj) = (i, j);
        Some(match order {
            std::cmp::Ordering::Less => {
                i = i.saturating_add(1);
                (Some(ai), None)
            }
            std::cmp::Ordering::Greater => {
                j = j.saturating_add(1);
                (None, Some(bj))
            }
            std::cmp::Ordering::Equal => {
                i = i.saturating_add(1);
                j = j.saturating_add(1);
                (Some(ai), Some(bj))
            }
        })
    })
}

/// The report entry of a function group: `b` in the baseline, `u` in the update.
fn group_entry<'i>(
    base: &ImageIndex<'i, '_>,
    b: Option<usize>,
    upd: &ImageIndex<'i, '_>,
    u: Option<usize>,
    status: Status,
    reason: Option<String>,
) -> Entry<'i> {
    let key = match (b, u) {
        (Some(b), _) => base.key(b),
        (None, Some(u)) => upd.key(u),
        (None, None) => Key {
            name: "",
            unit: None,
        },
    };
    // A name that is only an address is no alias: the entry's `match`
    // gives the update's. Most entries have no alias at all: no list.
    let bg = b.and_then(|g| base.groups.get(g));
    let ug = u.and_then(|g| upd.groups.get(g));
    let aliased = bg.is_some_and(|g| !g.aliases.is_empty())
        || ug.is_some_and(|g| !g.aliases.is_empty())
        || bg.zip(ug).is_some_and(|(x, y)| x.key != y.key);
    let mut aliases: Vec<Key<'i>> = Vec::new();
    if aliased {
        for g in [bg, ug].into_iter().flatten() {
            if !g.unnamed {
                aliases.push(g.key);
            }
            aliases.extend(g.aliases.iter().copied());
        }
    }
    Entry {
        name: key.name,
        unit: key.unit,
        status,
        baseline_rva: b.and_then(|b| base.primary(b)).map(|p| p.rva),
        updated_rva: u.and_then(|u| upd.primary(u)).map(|p| p.rva),
        baseline_size: b.map(|b| base.group_size(b)),
        updated_size: u.map(|u| upd.group_size(u)),
        reason,
        aliases: other_names(key, aliases),
        matched: None,
        line_shift: None,
        lines_only: false,
    }
}

/// The names in `all` other than `key`, displayed, sorted, once each.
fn other_names(key: Key<'_>, mut all: Vec<Key<'_>>) -> Vec<String> {
    if all.is_empty() {
        return Vec::new();
    }
    all.retain(|k| *k != key);
    all.sort_unstable();
    all.dedup();
    all.iter().map(ToString::to_string).collect()
}

/// Pair functions (or data objects) that only one side's canonical name
/// left apart: a `removed` entry and an `added` one that share any name
/// (one build added or dropped an alias, and the canonical name moved with
/// it). `names(side, i)` lists entry `i`'s key and aliases.
fn pair_aliases<'i>(
    names: impl Fn(bool, usize) -> Vec<Key<'i>>,
    pairs: &mut Vec<(usize, usize)>,
    removed: &mut Vec<usize>,
    added: &mut Vec<usize>,
) {
    if removed.is_empty() || added.is_empty() {
        return;
    }
    let mut by_name: HashMap<Key<'i>, usize> = HashMap::new();
    for &u in added.iter() {
        for k in names(true, u) {
            by_name.entry(k).or_insert(u);
        }
    }
    let mut taken: HashSet<usize> = HashSet::new();
    let mut found = false;
    removed.retain(|&b| {
        let hit = names(false, b)
            .iter()
            .find_map(|k| by_name.get(k).copied().filter(|u| !taken.contains(u)));
        match hit {
            Some(u) => {
                taken.insert(u);
                pairs.push((b, u));
                found = true;
                false
            }
            None => true,
        }
    });
    if found {
        added.retain(|u| !taken.contains(u));
        pairs.sort_unstable();
    }
}

fn data_entry<'i>(
    key: Key<'i>,
    aliases: Vec<Key<'i>>,
    b: Option<&hotpatch_formats::DataObject>,
    u: Option<&hotpatch_formats::DataObject>,
    status: Status,
    reason: Option<String>,
) -> Entry<'i> {
    Entry {
        aliases: other_names(key, aliases),
        name: key.name,
        unit: key.unit,
        status,
        baseline_rva: b.map(|o| o.rva),
        updated_rva: u.map(|o| o.rva),
        baseline_size: b.map(|o| o.size),
        updated_size: u.map(|o| o.size),
        reason,
        matched: None,
        line_shift: None,
        lines_only: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::norm::NormInsn;
    use crate::testutil::{corpus, image, read, section};
    use hotpatch_formats::{read::parse, Arch, Format, Section};

    /// An x86-64 ELF image with `text` at 0x1000 and read-only `rodata` at
    /// 0x3000.
    fn code_and_rodata<'d>(
        text: &'d [u8],
        rodata: &'d [u8],
        functions: &[(&str, u64, u64)],
    ) -> Image<'d> {
        image(
            Format::Elf,
            Arch::X86_64,
            vec![
                section(".text", 0x1000, text, false, true),
                section(".rodata", 0x3000, rodata, false, false),
            ],
            functions,
        )
    }

    /// A function with a switch of `entries` table entries over `cases`
    /// (offsets of the case bodies in the function, each `mov eax, n; ret`,
    /// with `extra` bytes of `add eax, eax` in the first), at `at`, whose
    /// table of 32-bit entries relative to the table lies at `table`:
    /// `cmp edi, N; ja default; lea rdx, [rip+table]; movsxd rax,
    /// [rdx+rdi*4]; add rax, rdx; jmp rax`.
    fn switch_function(at: u64, table: u64, entries: u8, extra: usize) -> (Vec<u8>, Vec<u8>) {
        let mut code = vec![0x83, 0xff, entries - 1, 0x77, 0x00];
        code.extend_from_slice(&[0x48, 0x8d, 0x15]);
        let rel = table as i64 - (at as i64 + code.len() as i64 + 4);
        code.extend_from_slice(&(rel as i32).to_le_bytes());
        code.extend_from_slice(&[0x48, 0x63, 0x04, 0xba, 0x48, 0x01, 0xd0, 0xff, 0xe0]);
        let mut cases = Vec::new();
        for n in 0..3u8 {
            cases.push(code.len());
            code.extend_from_slice(&[0xb8, n + 1, 0, 0, 0]);
            if n == 0 {
                for _ in 0..extra {
                    code.extend_from_slice(&[0x01, 0xc0]);
                }
            }
            code.push(0xc3);
        }
        let default = code.len();
        code[4] = (default - 5) as u8;
        code.extend_from_slice(&[0x31, 0xc0, 0xc3]);
        let mut entries_bytes = Vec::new();
        for k in 0..entries as usize {
            let case = at + cases[k % 3] as u64;
            entries_bytes.extend_from_slice(&((case as i64 - table as i64) as i32).to_le_bytes());
        }
        (code, entries_bytes)
    }

    /// `f`'s jump table is followed in `.rodata` by `g`'s, and `g` follows
    /// `f` in `.text`, so that `g`'s entries, read as if they were `f`'s,
    /// land in `f`'s last bytes. Only `g`'s own reference ends `f`'s table
    /// there; the comparison measures `f`'s table before it has seen `g`'s
    /// code, so the measure must be checked again once every anchor is
    /// known. `g` grows in the update: `f` is unchanged all the same.
    #[test]
    fn jump_table_followed_by_another_functions_table_is_measured_again() {
        let build = |extra: usize| {
            let (rodata, f_at) = (0x3000u64, 0x1000u64);
            let (f, f_table) = switch_function(f_at, rodata, 8, 0);
            let g_at = f_at + f.len() as u64;
            let (g, g_table) = switch_function(g_at, rodata + 32, 3, extra);
            let text = [f.clone(), g.clone()].concat();
            let ro = [f_table, g_table].concat();
            (text, ro, f.len() as u64, g.len() as u64)
        };
        let (text_a, ro_a, f_a, g_a) = build(0);
        let (text_b, ro_b, f_b, g_b) = build(3);
        let a = code_and_rodata(
            &text_a,
            &ro_a,
            &[("f", 0x1000, f_a), ("g", 0x1000 + f_a, g_a)],
        );
        let b = code_and_rodata(
            &text_b,
            &ro_b,
            &[("f", 0x1000, f_b), ("g", 0x1000 + f_b, g_b)],
        );
        // The misread really happens before the blocks are fixed: `g`'s
        // first entries, taken relative to `f`'s table, land in `f`.
        let idx = ImageIndex::new(&a);
        let (f_group, _) = idx.function_at(0x1000).unwrap();
        assert!(crate::norm::table_len(&idx, f_group, 0x3000) > 8);
        // Once finished, the table's block no longer holds that many.
        let done = crate::diff::index(&a);
        assert_eq!(crate::norm::table_len(&done, f_group, 0x3000), 8);
        assert!(!crate::norm::table_measure_holds(&done, 0x3000, 9));
        assert!(crate::norm::table_measure_holds(&done, 0x3000, 8));
        let d = diff(&a, &b).unwrap();
        let changed: Vec<&str> = d.functions_with(Status::Changed).map(|e| e.name).collect();
        assert_eq!(changed, ["g"]);
        assert_eq!(d.functions_with(Status::Unchanged).count(), 1);
    }

    /// `f`, `g` and `h` each pass a line number (`mov ecx, line`) that
    /// grows by one in the update, where each function's first line moved
    /// by one too; `g` also loads a read-only table that changes, and `h`
    /// has no line in either build. Only `f` changed in its line numbers
    /// alone: `g` needs the new table, which only a packaged `g` reaches,
    /// and `h`'s shift is unknown.
    #[test]
    fn line_only_needs_a_known_shift_and_no_changed_read_only_data() {
        // f: mov ecx, line; ret (6 bytes) at 0x1000.
        // g: mov ecx, line; lea rax, [rip+tbl]; ret (13 bytes) at 0x1010.
        // h: mov ecx, line; ret at 0x1020.
        let text = |line: u32| {
            let mut t = vec![0xcc; 0x30];
            for at in [0x00usize, 0x10, 0x20] {
                t[at] = 0xb9;
                t[at + 1..at + 5].copy_from_slice(&(line + at as u32).to_le_bytes());
                t[at + 5] = 0xc3;
            }
            let rel = (0x3000i64 - (0x1010 + 5 + 7)) as i32;
            t[0x15..0x18].copy_from_slice(&[0x48, 0x8d, 0x05]);
            t[0x18..0x1c].copy_from_slice(&rel.to_le_bytes());
            t[0x1c] = 0xc3;
            t
        };
        let (ta, tb) = (text(100), text(101));
        let (ra, rb) = ([1u8, 2, 3, 4], [1u8, 2, 3, 5]);
        let build = |t: &'static [u8], r: &'static [u8], first: u32| {
            let mut img = code_and_rodata(
                t,
                r,
                &[("f", 0x1000, 6), ("g", 0x1010, 13), ("h", 0x1020, 6)],
            );
            img.data = vec![hotpatch_formats::DataObject {
                name: "tbl".into(),
                rva: 0x3000,
                size: 4,
                section: ".rodata".into(),
                unit: None,
                visibility: hotpatch_formats::Visibility::Global,
            }];
            img.lines = vec![
                hotpatch_formats::FunctionLine {
                    rva: 0x1000,
                    line: first,
                },
                hotpatch_formats::FunctionLine {
                    rva: 0x1010,
                    line: first + 10,
                },
            ];
            img
        };
        let leak = |v: Vec<u8>| -> &'static [u8] { Box::leak(v.into_boxed_slice()) };
        let a = build(leak(ta), leak(ra.to_vec()), 90);
        let b = build(leak(tb), leak(rb.to_vec()), 91);
        let d = diff(&a, &b).unwrap();
        let got: Vec<(&str, Status, Option<i64>, bool)> = d
            .functions
            .iter()
            .map(|e| (e.name, e.status, e.line_shift, e.lines_only))
            .collect();
        assert_eq!(
            got,
            [
                ("f", Status::Changed, Some(1), true),
                ("g", Status::Changed, Some(1), false),
                ("h", Status::Changed, None, false),
            ]
        );
        let c = compare(&a, &b, &Options::default()).unwrap();
        assert_eq!(c.lines_only, [true, false, false]);
        // Without the changed table, `g` is line-only too.
        let b2 = build(leak(text(101)), leak(ra.to_vec()), 91);
        let d = diff(&a, &b2).unwrap();
        let only: Vec<&str> = d
            .functions
            .iter()
            .filter(|e| e.lines_only)
            .map(|e| e.name)
            .collect();
        assert_eq!(only, ["f", "g"]);
    }

    /// `f` and `h` each load a string literal (anonymous `.rodata`, cut into
    /// blocks by the references themselves) and then differ in nothing else.
    /// `f`'s string changes in the update, `h`'s does not: only `f` changes,
    /// and the reason points at its `lea`, found once the blocks are fixed.
    #[test]
    fn changed_string_literal_is_found_after_the_blocks_are_fixed() {
        let build = |first: &'static [u8]| {
            // f: lea rdi, [rip+S1]; jmp h   h: lea rdi, [rip+S2]; ret
            let mut text = vec![0x48, 0x8d, 0x3d];
            text.extend_from_slice(&((0x3000i64 - 0x1007) as i32).to_le_bytes());
            text.extend_from_slice(&[0xeb, 0x00]);
            text.extend_from_slice(&[0x48, 0x8d, 0x3d]);
            text.extend_from_slice(&((0x3008i64 - 0x1010) as i32).to_le_bytes());
            text.push(0xc3);
            let ro = [first, b"second\0\0"].concat();
            (text, ro)
        };
        let (text_a, ro_a) = build(b"first\0\0\0");
        let (text_b, ro_b) = build(b"FIRST\0\0\0");
        let functions = [("f", 0x1000, 9), ("h", 0x1009, 8)];
        let a = code_and_rodata(&text_a, &ro_a, &functions);
        let b = code_and_rodata(&text_b, &ro_b, &functions);
        let d = diff(&a, &b).unwrap();
        let changed: Vec<(&str, Option<&str>)> = d
            .functions_with(Status::Changed)
            .map(|e| (e.name, e.reason.as_deref()))
            .collect();
        assert_eq!(
            changed,
            [(
                "f",
                Some("different instruction at +0x0: `lea rdi,[3000h]` → `lea rdi,[3000h]`")
            )]
        );
    }

    /// The comparison resolves references to anonymous data after the fact
    /// (and measures jump tables provisionally). On every corpus scenario,
    /// update and target it must give exactly what comparing against
    /// finished indexes gives: the same changed set, for the same reasons.
    #[test]
    fn deferred_comparison_equals_comparison_after_finish() {
        let mut pairs = 0;
        for scenario in std::fs::read_dir(corpus()).unwrap() {
            let bin = scenario.unwrap().path().join("bin");
            let Ok(targets) = std::fs::read_dir(&bin) else {
                continue;
            };
            for target in targets {
                let dir = target.unwrap().path();
                let mut versions: Vec<_> = std::fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| {
                        matches!(p.extension().and_then(|e| e.to_str()), Some("so" | "dll"))
                    })
                    .collect();
                versions.sort();
                let (base_bytes, base_opts) = read(&versions[0]);
                let baseline = parse(&base_bytes, &base_opts).unwrap();
                let base = index(&baseline);
                for v in &versions {
                    let (bytes, opts) = read(v);
                    let updated = parse(&bytes, &opts).unwrap();
                    let upd = index(&updated);
                    let d = diff(&baseline, &updated).unwrap();
                    for e in &d.functions {
                        let key = Key {
                            name: e.name,
                            unit: e.unit,
                        };
                        let (Some(bg), Some(ug)) = (base.group(&key), upd.group(&key)) else {
                            continue;
                        };
                        let expected = finished_reason(&base, bg, &upd, ug);
                        let got = e
                            .reason
                            .clone()
                            .filter(|r| !r.starts_with("references changed read-only"));
                        assert_eq!(got, expected, "{} {key}", v.display());
                        pairs += 1;
                    }
                }
            }
        }
        assert!(pairs > 400, "{pairs}");
    }

    /// Two names at one address with one size are one function
    /// (`xmlIsID` and `xmlIsID__internal_alias` in libxml2): reported once,
    /// under its most visible name, with the other listed, and matched by
    /// any name, even when one build drops the alias that was canonical.
    #[test]
    fn aliases_are_one_function_matched_by_any_name() {
        // f: mov eax, N; ret
        let text = |n: u8| vec![0xb8, n, 0, 0, 0, 0xc3];
        let (ta, tb) = (text(1), text(2));
        let with = |t: &'static [u8], names: &[(&str, hotpatch_formats::Visibility)]| {
            let mut img = image(
                Format::Elf,
                Arch::X86_64,
                vec![section(".text", 0x1000, t, false, true)],
                &[],
            );
            img.functions = names
                .iter()
                .map(|&(name, visibility)| hotpatch_formats::Function {
                    name: name.into(),
                    rva: 0x1000,
                    size: 6,
                    unit: None,
                    visibility,
                    extent: hotpatch_formats::Extent::Symbol,
                })
                .collect();
            img
        };
        use hotpatch_formats::Visibility::{Exported, Global};
        let ta: &'static [u8] = Box::leak(ta.into_boxed_slice());
        let tb: &'static [u8] = Box::leak(tb.into_boxed_slice());
        let a = with(
            ta,
            &[("xmlIsID__internal_alias", Global), ("xmlIsID", Exported)],
        );
        let b = with(
            tb,
            &[("xmlIsID", Exported), ("xmlIsID__internal_alias", Global)],
        );
        let d = diff(&a, &b).unwrap();
        let changed: Vec<(&str, Vec<String>)> = d
            .functions_with(Status::Changed)
            .map(|e| (e.name, e.aliases.clone()))
            .collect();
        assert_eq!(
            changed,
            [("xmlIsID", vec!["xmlIsID__internal_alias".to_string()])]
        );
        assert_eq!(d.functions.len(), 1);
        // The update drops the exported name: the alias still matches.
        let c = with(tb, &[("xmlIsID__internal_alias", Global)]);
        let d = diff(&a, &c).unwrap();
        let all: Vec<(&str, Status)> = d.functions.iter().map(|e| (e.name, e.status)).collect();
        assert_eq!(all, [("xmlIsID", Status::Changed)]);
    }

    /// A data object whose declared size is far beyond its file bytes (a
    /// 1 TiB `.bss` array, or a lie) used to make `compare_data` allocate
    /// that size (abort) or overflow a capacity (panic). It is compared over
    /// its file bytes, zero-extended, without allocating.
    #[test]
    fn huge_data_object_is_compared_without_allocating_its_size() {
        let build = |init: &'static [u8]| {
            let mut img = image(
                Format::Elf,
                Arch::X86_64,
                vec![Section {
                    size: 1 << 40,
                    ..section(".data", 0x4000, init, true, false)
                }],
                &[],
            );
            img.data = vec![hotpatch_formats::DataObject {
                name: "huge".into(),
                rva: 0x4000,
                size: (1 << 40) - 8,
                section: ".data".into(),
                unit: None,
                visibility: hotpatch_formats::Visibility::Global,
            }];
            img
        };
        let (a, b, c) = (build(&[1, 2, 0, 0]), build(&[1, 2]), build(&[1, 2, 0, 3]));
        let d = diff(&a, &b).unwrap();
        let st: Vec<_> = d.data.iter().map(|e| (e.name, e.status)).collect();
        assert_eq!(st, [("huge", Status::Unchanged)]);
        let d = diff(&a, &c).unwrap();
        assert_eq!(
            d.data[0].reason.as_deref(),
            Some("initial value differs at +0x3")
        );
        assert_eq!(d.blockers[0].kind, BlockerKind::WritableDataChanged);
    }

    #[test]
    fn listing_shows_the_first_few_and_counts_the_rest() {
        let names = |n: usize| (0..n).map(|i| format!("f{i}")).collect::<Vec<_>>();
        assert_eq!(listing(&names(2)), "f0, f1");
        assert_eq!(listing(&names(5)), "f0, f1, f2, f3, f4");
        assert_eq!(listing(&names(400)), "f0, f1, f2, f3, f4 and 395 more");
    }

    /// Zero-extended comparison over any range, reading only file bytes.
    #[test]
    fn first_byte_difference_zero_extends_both_sides() {
        assert_eq!(first_byte_difference(b"ab", b"ab\0\0", 0, 1 << 50), None);
        assert_eq!(first_byte_difference(b"ab", b"ab\0c", 0, 1 << 50), Some(3));
        assert_eq!(first_byte_difference(b"ab\0c", b"ab", 0, 3), None);
        assert_eq!(first_byte_difference(b"xb", b"ab", 1, 2), None);
        assert_eq!(first_byte_difference(b"", b"", 5, 1), None);
    }

    fn stream(hashes: &[u64]) -> Normalized<'static> {
        let mut n = Normalized::default();
        n.insns = hashes
            .iter()
            .enumerate()
            .map(|(i, _)| NormInsn {
                offset: 4 * i as u32,
                len: 4,
                start: i as u32,
                count: 1,
                plain: false,
            })
            .collect();
        n.words = hashes.to_vec();
        n
    }

    #[test]
    fn first_difference_names_the_side_with_extra_code() {
        let (a, b) = (stream(&[1, 2, 3]), stream(&[1, 2]));
        assert_eq!(first_difference(&a, &a), None);
        assert_eq!(
            first_difference(&a, &b),
            Some((
                2,
                Mismatch::Extra("baseline has 1 more instructions from +0x8".into())
            ))
        );
        assert_eq!(
            first_difference(&b, &a),
            Some((
                2,
                Mismatch::Extra("update has 1 more instructions from +0x8".into())
            ))
        );
        assert_eq!(
            first_difference(&a, &stream(&[1, 9, 3])),
            Some((1, Mismatch::Instruction((4, 4))))
        );
    }
}

//! Package assembly: the relocatable bodies of a hotpatch, proven by a
//! relink check.
//!
//! [`assemble`] takes a [`Comparison`] of a baseline and its update and
//! adds to a [`Payload`] one item per part of every changed and added
//! function (the update's bytes), one per jump table such a function owns,
//! and one per constant or string the baseline lacks, each with the
//! relocation records that place it anywhere in range of the running
//! baseline. It returns the image's manifest entry.
//!
//! Every address a new body holds (the normaliser's
//! [`AddrField`]s) becomes a record whose target is:
//!
//! - another item of the package: a part of a changed or added function
//!   (a call from new code to changed code goes straight to its new body),
//!   an owned jump table, a copied constant;
//! - a baseline RVA: an unchanged function (the matched baseline part), an
//!   existing data object (the running process's state lives there), the
//!   baseline's identical read-only block (by content), or the baseline's
//!   own stub for an import;
//! - an import through the baseline's slot for it (GOT entry, IAT slot).
//!
//! A reference that cannot be expressed so is an [`AssembleError`] naming
//! the function and the instruction, never a silent miscompile.
//!
//! A changed function whose only change is its `__LINE__` immediates
//! ([`crate::diff::Entry::lines_only`]) is left out and listed in
//! [`TargetImage::lines_only`], unless
//! [`AssembleOptions::include_lines_only`]: the baseline's copy does the
//! same, and packaged code calls it there.
//!
//! **Relink check.** Before anything is written, the items are linked at a
//! pretend address beside the baseline (an image made of the baseline plus
//! one section holding the items, the replaced functions' names moved to
//! their new bodies), and every packaged function is normalised there with
//! the diff's own normaliser. Its form must equal the update's exactly, or
//! the build fails naming the function. This proves the records complete
//! and correct without an applier.

use std::collections::{BTreeMap, HashMap};

use hotpatch_formats::package::{
    link, AddedFunction, Body, ChangedFunction, FunctionName, ImageIdentity, Item, ItemRef,
    NewData, Payload, Redirect, RedirectScheme, RelocKind, Relocation, Site, Target, TargetImage,
};
use hotpatch_formats::{Arch, DataObject, Function, Image, Permissions, RelocTarget, Section};

use crate::diff::{Comparison, Status};
use crate::index::{ImageIndex, SymRef};
use crate::norm::arm64::PageFlow;
use crate::norm::{self, AddrField, FieldKind, Normalized};
use crate::patchability::{entry_scheme, EntryScheme, Scheme};

/// Why a package cannot be assembled. Each is one line naming what.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssembleError {
    /// The update has blockers: it is not hotpatchable.
    #[error(
        "{image}: not hotpatchable: {blockers}; build it with --kind baseline (restart required)"
    )]
    Blocked {
        /// The image.
        image: String,
        /// The blockers, one after another.
        blockers: String,
    },
    /// A new body holds a reference no relocation record can express.
    #[error("{image}: function `{function}`: {detail}")]
    Inexpressible {
        /// The image.
        image: String,
        /// The function.
        function: String,
        /// The instruction and why.
        detail: String,
    },
    /// One ADRP of a new body serves objects that cannot lie on one page
    /// once patched (the diff reports it as a `shared-page` blocker, so
    /// this is only met when assembling without the diff's verdict).
    #[error("{image}: function `{function}`: {detail}")]
    SharedPage {
        /// The image.
        image: String,
        /// The function.
        function: String,
        /// The instruction and the objects it serves.
        detail: String,
    },
    /// The relink check found a body that does not normalise to the
    /// update's function.
    #[error("{image}: relink check failed for `{function}`: {detail}")]
    Relink {
        /// The image.
        image: String,
        /// The function.
        function: String,
        /// Where the linked body differs.
        detail: String,
    },
    /// The package container refused an item.
    #[error("{image}: {0}", image = .1)]
    Package(hotpatch_formats::package::PackageError, String),
}

/// What [`assemble`] needs beyond the comparison.
#[derive(Clone, Debug)]
pub struct AssembleOptions {
    /// The image's file name, for the manifest and messages.
    pub name: String,
    /// Whether functions whose only change is `__LINE__` immediates are
    /// carried (by default they are left out and listed).
    pub include_lines_only: bool,
}

/// A changed or added function being packaged: update group and its
/// baseline counterpart (none for an added one).
#[derive(Clone, Copy, Debug)]
struct Packaged {
    upd: usize,
    base: Option<usize>,
}

/// Add the relocatable bodies of `cmp`'s update to `payload` and return the
/// image's manifest entry.
pub fn assemble(
    cmp: &Comparison<'_, '_>,
    options: &AssembleOptions,
    payload: &mut Payload,
) -> Result<TargetImage, AssembleError> {
    let report = &cmp.report;
    if !report.hotpatchable {
        let blockers = report
            .blockers
            .iter()
            .map(|b| format!("{} [{}]", b.object, b.kind.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(AssembleError::Blocked {
            image: options.name.clone(),
            blockers,
        });
    }
    let (base, upd) = (&cmp.base, &cmp.upd);
    let Prepared {
        mut cx,
        packaged,
        forms,
        lines_only,
    } = prepare(
        cmp,
        &options.name,
        options.include_lines_only,
        payload.items().len(),
        false,
    )?;
    if let Some(c) = cx.conflicts.first() {
        return Err(AssembleError::SharedPage {
            image: options.name.clone(),
            function: c.function.clone(),
            detail: c.detail.clone(),
        });
    }
    cx.drop_unreferenced();
    relink_check(&cx, &packaged, &forms)?;

    // The items, in order: bodies of changed functions as deltas against
    // their old bodies.
    let mut bodies: Vec<Option<(u64, &[u8])>> = vec![None; cx.items.len()];
    for p in &packaged {
        let Some(b) = p.base else { continue };
        for (i, part) in upd.parts(p.upd).iter().enumerate() {
            let old = base
                .parts(b)
                .iter()
                .find(|q| q.signature == part.signature)
                .and_then(|q| Some((q.rva, base.image.bytes_at(q.rva, q.size)?)));
            if let (Some(&item), Some(old)) = (cx.part_items.get(&(p.upd, i)), old) {
                if let Some(slot) = item
                    .0
                    .checked_sub(cx.first_item as u32)
                    .and_then(|k| bodies.get_mut(k as usize))
                {
                    *slot = Some(old);
                }
            }
        }
    }
    for (k, (pending, reference)) in cx.items.iter().zip(&bodies).enumerate() {
        let body = match reference {
            Some((rva, old)) => {
                let item = ItemRef(u32::try_from(cx.first_item.saturating_add(k)).unwrap_or(0));
                let err = |e| AssembleError::Package(e, options.name.clone());
                let plain = Body::delta(&pending.bytes, *rva, old).map_err(err)?;
                let bytes = linked_at_reference(item, &pending.bytes, &pending.relocations, *rva);
                let linked = Body::delta(&bytes, *rva, old).map_err(err)?;
                // Whichever is smaller: pre-linking helps bodies whose
                // instructions kept their places, and can hurt others.
                match (&plain, &linked) {
                    (Body::Delta(p), Body::Delta(l)) if l.frame.len() < p.frame.len() => linked,
                    _ => plain,
                }
            }
            None => Body::Raw(pending.bytes.clone().into()),
        };
        payload.push(Item {
            align: pending.align,
            body,
            relocations: pending.relocations.clone(),
        });
    }

    // The manifest entry.
    let mut functions = Vec::new();
    let mut added_functions = Vec::new();
    for p in &packaged {
        let key = upd.key(p.upd);
        match p.base {
            Some(b) => {
                for (i, part) in upd.parts(p.upd).iter().enumerate() {
                    if !part.entry {
                        continue;
                    }
                    let Some(old) = base.parts(b).iter().find(|q| q.signature == part.signature)
                    else {
                        continue;
                    };
                    let scheme = match entry_scheme(base, old.rva, old.size) {
                        EntryScheme::Fits(Scheme::PaddingShortJump) => {
                            RedirectScheme::X64PaddingShortJump
                        }
                        EntryScheme::Fits(Scheme::NearJump) => RedirectScheme::X64NearJump,
                        EntryScheme::Fits(Scheme::Branch) => RedirectScheme::A64Branch,
                        EntryScheme::TooSmall { .. } => {
                            return Err(cx.inexpressible(p.upd, "too small for its redirect".into()))
                        }
                    };
                    let redirect = Redirect::from_baseline(base.image, scheme, old.rva)
                        .ok_or_else(|| {
                            cx.inexpressible(p.upd, "its entry is not in the file".into())
                        })?;
                    let Some(&body) = cx.part_items.get(&(p.upd, i)) else {
                        continue;
                    };
                    functions.push(ChangedFunction {
                        name: old.symbol.to_string(),
                        unit: key.unit.map(str::to_string),
                        rva: old.rva,
                        size: old.size,
                        redirect,
                        body,
                    });
                }
            }
            None => {
                if let Some(&body) = cx.part_items.get(&(p.upd, 0)) {
                    added_functions.push(AddedFunction {
                        name: key.name.to_string(),
                        unit: key.unit.map(str::to_string),
                        body,
                    });
                }
            }
        }
    }
    functions.sort_by_key(|f| f.rva);
    let data = cx.new_data.clone();
    Ok(TargetImage {
        name: options.name.clone(),
        format: upd.image.format,
        arch: upd.image.arch,
        baseline: ImageIdentity::of(base.image),
        updated: ImageIdentity::of(upd.image),
        image: None,
        functions,
        added_functions,
        data,
        lines_only,
    })
}

/// What [`prepare`] leaves for assembly: the packager's state with every
/// item reserved and every relocation record made, the functions packaged
/// with their normalised forms, and the left-out line-only functions.
struct Prepared<'c, 'i, 'd> {
    cx: Context<'c, 'i, 'd>,
    packaged: Vec<Packaged>,
    forms: Vec<Vec<Normalized<'c>>>,
    lines_only: Vec<FunctionName>,
}

/// The first two steps of [`assemble`]: one item per part, jump table and
/// piece of data the new code needs, then the relocation records, for
/// items numbered from `first_item`. With `survey`, a function that cannot
/// be expressed is skipped instead of failing the whole, so that every
/// page conflict is found (see [`page_conflicts`]).
fn prepare<'c, 'i, 'd>(
    cmp: &'c Comparison<'i, 'd>,
    name: &'c str,
    include_lines_only: bool,
    first_item: usize,
    survey: bool,
) -> Result<Prepared<'c, 'i, 'd>, AssembleError> {
    let report = &cmp.report;
    let (base, upd) = (&cmp.base, &cmp.upd);
    let mut packaged: Vec<Packaged> = Vec::new();
    let mut lines_only: Vec<FunctionName> = Vec::new();
    for ((&(b, u), &changed), &only) in cmp.pairs.iter().zip(&cmp.changed).zip(&cmp.lines_only) {
        if !changed {
            continue;
        }
        // A function whose only change is its `__LINE__` immediates stays
        // as it is in the baseline (calls from packaged code go to it
        // there), unless asked for.
        if only && !include_lines_only {
            let key = base.key(b);
            lines_only.push(FunctionName {
                name: key.name.to_string(),
                unit: key.unit.map(str::to_string),
            });
            continue;
        }
        packaged.push(Packaged {
            upd: u,
            base: Some(b),
        });
    }
    lines_only.sort();
    lines_only.dedup();
    for &u in &cmp.added {
        packaged.push(Packaged { upd: u, base: None });
    }
    let mut cx = Context {
        base,
        upd,
        name,
        baseline_of: cmp.pairs.iter().map(|&(b, u)| (u, b)).collect(),
        part_items: HashMap::new(),
        table_items: BTreeMap::new(),
        data_items: BTreeMap::new(),
        extra_items: HashMap::new(),
        slot_loads: std::collections::HashSet::new(),
        new_data: Vec::new(),
        items: Vec::new(),
        first_item,
        conflicts: Vec::new(),
        changed_data: report
            .data_with(Status::Changed)
            .map(|e| (e.name.to_string(), e.unit.map(str::to_string)))
            .collect(),
    };
    // Items for every part first, so that references between packaged
    // functions resolve to them.
    let mut forms: Vec<Vec<Normalized<'_>>> = Vec::with_capacity(packaged.len());
    for p in &packaged {
        let parts = norm::normalize_group_with_fields(upd, p.upd);
        for (i, part) in upd.parts(p.upd).iter().enumerate() {
            let bytes = upd
                .image
                .bytes_at(part.rva, part.size)
                .ok_or_else(|| cx.inexpressible(p.upd, "its code is not in the file".into()))?;
            let at = cx.reserve(bytes.to_vec(), align_of(upd.image.arch), Class::Code);
            cx.part_items.insert((p.upd, i), at);
        }
        for n in &parts {
            for t in &n.owned_tables {
                if !cx.table_items.contains_key(&t.rva) {
                    let bytes = upd.image.bytes_at(t.rva, t.size).ok_or_else(|| {
                        cx.inexpressible(
                            p.upd,
                            format!("jump table at {:#x} is not in the file", t.rva),
                        )
                    })?;
                    let at = cx.reserve(bytes.to_vec(), 4, Class::ReadOnly);
                    cx.table_items.insert(t.rva, (at, t.size));
                }
            }
        }
        forms.push(parts);
    }
    // Relocation records. A survey goes on past a function it cannot
    // express, to find every page conflict.
    for (p, parts) in packaged.iter().zip(&forms) {
        let done = (|| {
            for (i, n) in parts.iter().enumerate() {
                let Some(&item) = cx.part_items.get(&(p.upd, i)) else {
                    continue;
                };
                let relocs = cx.part_relocations(p.upd, i, n, parts)?;
                cx.set_relocations(item, relocs);
                for t in &n.owned_tables {
                    if let Some(&(item, _)) = cx.table_items.get(&t.rva) {
                        let relocs = cx.table_relocations(p.upd, t.rva, &t.entries)?;
                        cx.set_relocations(item, relocs);
                    }
                }
            }
            Ok(())
        })();
        match done {
            Err(_) if survey => {}
            other => other?,
        }
    }
    Ok(Prepared {
        cx,
        packaged,
        forms,
        lines_only,
    })
}

/// A new body's ADRP that serves objects which cannot share one page once
/// patched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageConflict {
    /// The function (its key).
    pub function: String,
    /// The ADRP's offset in its part.
    pub offset: u32,
    /// The objects it serves, each with where it lies once patched.
    pub objects: Vec<String>,
    /// One line: the instruction, the objects, and why.
    pub detail: String,
}

/// Every ADRP of the update's changed and added functions (AArch64) that
/// would have to serve objects on different pages once patched: an
/// existing object that stays in the baseline and a new one the package
/// carries, or two objects the package carries apart. Relocations give an
/// ADRP one page; only rewriting the instructions could serve both. The
/// diff turns each into a `shared-page` blocker, so that its verdict and
/// the packager agree.
pub fn page_conflicts(cmp: &Comparison<'_, '_>) -> Vec<PageConflict> {
    if cmp.upd.image.arch != Arch::Aarch64 {
        return Vec::new();
    }
    match prepare(cmp, "", false, 0, true) {
        Ok(p) => p.cx.conflicts,
        Err(_) => Vec::new(),
    }
}

/// Alignment of a function body.
fn align_of(arch: Arch) -> u32 {
    match arch {
        Arch::X86_64 => 16,
        Arch::Aarch64 => 4,
    }
}

/// A low-12-bit user of an ADRP page: its target and offset, its record's
/// index in the part's records, the update address it reaches, and its
/// instruction's offset in the part.
type PageUser = (Target, i64, usize, u64, u32);

/// What memory an item needs once placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Code.
    Code,
    /// Read-only data (jump tables, constants).
    ReadOnly,
    /// Writable data.
    Writable,
}

/// An item being assembled.
#[derive(Clone, Debug)]
struct Pending {
    bytes: Vec<u8>,
    align: u32,
    relocations: Vec<Relocation>,
    class: Class,
    /// For a data item: the update's object it copies (its name, unit and
    /// visibility).
    object: Option<DataObject>,
}

/// The packager's state for one image.
struct Context<'c, 'i, 'd> {
    base: &'c ImageIndex<'i, 'd>,
    upd: &'c ImageIndex<'i, 'd>,
    name: &'c str,
    /// Update group → baseline group, for matched functions.
    baseline_of: HashMap<usize, usize>,
    /// (update group, part) → its item.
    part_items: HashMap<(usize, usize), ItemRef>,
    /// Owned jump table (update RVA) → its item and size.
    table_items: BTreeMap<u64, (ItemRef, u64)>,
    /// Copied or new data (update RVA of its start) → item and size.
    data_items: BTreeMap<u64, (ItemRef, u64)>,
    /// Import stubs and pointer slots the baseline lacks, carried by the
    /// package: by what they lead to.
    extra_items: HashMap<String, ItemRef>,
    /// Instructions (group, index in its part) that load through a
    /// baseline pointer slot holding what the update's slot holds: the
    /// relink check compares what the slot holds, not the bytes around it.
    slot_loads: std::collections::HashSet<(usize, u32)>,
    /// Manifest entries of the data items.
    new_data: Vec<NewData>,
    /// The items, in payload order from `first_item`.
    items: Vec<Pending>,
    /// The payload's item count before this image's.
    first_item: usize,
    /// ADRPs that cannot serve their users once patched.
    conflicts: Vec<PageConflict>,
    /// Data objects the diff found changed (name, unit): a read-only one
    /// is carried as a new copy, not reached in the baseline.
    changed_data: std::collections::HashSet<(String, Option<String>)>,
}

impl Context<'_, '_, '_> {
    fn reserve(&mut self, bytes: Vec<u8>, align: u32, class: Class) -> ItemRef {
        let at = ItemRef(
            u32::try_from(self.first_item.saturating_add(self.items.len())).unwrap_or(u32::MAX),
        );
        self.items.push(Pending {
            bytes,
            align,
            relocations: Vec::new(),
            class,
            object: None,
        });
        at
    }

    /// Drop the items nothing reaches any more (a copy that a shared page
    /// block replaced) and number the rest densely, in their order.
    fn drop_unreferenced(&mut self) {
        let first = self.first_item;
        let index = |r: ItemRef| usize::try_from(r.0).ok().and_then(|i| i.checked_sub(first));
        let mut live = vec![false; self.items.len()];
        let mut work: Vec<usize> = self.part_items.values().filter_map(|&r| index(r)).collect();
        while let Some(k) = work.pop() {
            match live.get_mut(k) {
                Some(l) if !*l => *l = true,
                _ => continue,
            }
            if let Some(p) = self.items.get(k) {
                for r in &p.relocations {
                    if let Target::Item(i) = r.target {
                        work.extend(index(i));
                    }
                }
            }
        }
        if live.iter().all(|&l| l) {
            return;
        }
        let mut renumber: Vec<Option<ItemRef>> = Vec::with_capacity(live.len());
        let mut next = first;
        for &l in &live {
            renumber.push(l.then(|| {
                let r = ItemRef(u32::try_from(next).unwrap_or(u32::MAX));
                next = next.saturating_add(1);
                r
            }));
        }
        let map = |r: ItemRef| index(r).and_then(|k| renumber.get(k).copied().flatten());
        let items = std::mem::take(&mut self.items);
        for (p, &l) in items.into_iter().zip(&live) {
            if l {
                self.items.push(p);
            }
        }
        for p in &mut self.items {
            for r in &mut p.relocations {
                if let Target::Item(i) = r.target {
                    if let Some(n) = map(i) {
                        r.target = Target::Item(n);
                    }
                }
            }
        }
        for r in self.part_items.values_mut() {
            *r = map(*r).unwrap_or(*r);
        }
        self.table_items.retain(|_, (r, _)| map(*r).is_some());
        for (r, _) in self.table_items.values_mut() {
            *r = map(*r).unwrap_or(*r);
        }
        self.data_items.retain(|_, (r, _)| map(*r).is_some());
        for (r, _) in self.data_items.values_mut() {
            *r = map(*r).unwrap_or(*r);
        }
        self.extra_items.retain(|_, r| map(*r).is_some());
        for r in self.extra_items.values_mut() {
            *r = map(*r).unwrap_or(*r);
        }
        self.new_data.retain(|d| map(d.body).is_some());
        for d in &mut self.new_data {
            d.body = map(d.body).unwrap_or(d.body);
        }
    }

    fn set_relocations(&mut self, item: ItemRef, mut relocs: Vec<Relocation>) {
        relocs.sort_by_key(|r| r.offset);
        if let Some(p) = item
            .0
            .checked_sub(self.first_item as u32)
            .and_then(|k| self.items.get_mut(k as usize))
        {
            // The linker rewrites every field; shipping them cleared makes
            // the bodies smaller once compressed, and the relink check
            // proves that nothing depended on their old contents.
            for r in &relocs {
                let value = match r.kind {
                    RelocKind::Abs64
                    | RelocKind::ImageRel32
                    | RelocKind::A64Lo12 { .. }
                    | RelocKind::A64PairLo12 { .. } => 0,
                    _ => r.offset,
                };
                let site = Site {
                    address: r.offset,
                    image_base: 0,
                };
                if let Some(field) = usize::try_from(r.offset)
                    .ok()
                    .and_then(|o| p.bytes.get_mut(o..))
                {
                    let _ = r.kind.write(field, site, value);
                }
            }
            p.relocations = relocs;
        }
    }

    fn inexpressible(&self, group: usize, detail: String) -> AssembleError {
        AssembleError::Inexpressible {
            image: self.name.to_string(),
            function: self.upd.key(group).to_string(),
            detail,
        }
    }

    /// The relocation records of part `part` of update group `group`.
    fn part_relocations(
        &mut self,
        group: usize,
        part: usize,
        n: &Normalized<'_>,
        all: &[Normalized<'_>],
    ) -> Result<Vec<Relocation>, AssembleError> {
        let Some(p) = self.upd.parts(group).get(part) else {
            return Ok(Vec::new());
        };
        let (prva, psize) = (p.rva, p.size);
        let mut out = Vec::new();
        // ADRP pages by (register, page): the targets of their users.
        // Each user: its target and offset, its record in `out`, and the
        // update address it reaches.
        let mut pages: HashMap<(u8, u64), Vec<PageUser>> = HashMap::new();
        let mut adrps: Vec<&AddrField> = Vec::new();
        for f in &n.fields {
            let kind = match f.kind {
                FieldKind::Reloc(RelocKind::A64AdrpPage21) => {
                    adrps.push(f);
                    continue;
                }
                FieldKind::Reloc(k) => k,
                FieldKind::Rel8 => {
                    if f.target >= prva && f.target < prva.saturating_add(psize) {
                        continue;
                    }
                    return Err(self.inexpressible(
                        group,
                        format!(
                            "instruction at +{:#x}: a short branch to {:#x}, outside the function (rebuild with -ffunction-sections)",
                            f.offset, f.target
                        ),
                    ));
                }
                FieldKind::Abs32 => {
                    return Err(self.inexpressible(
                        group,
                        format!("instruction at +{:#x}: a 32-bit absolute address", f.offset),
                    ))
                }
                FieldKind::A64Unsupported => {
                    return Err(self.inexpressible(
                        group,
                        format!(
                            "instruction at +{:#x}: a use of an ADRP page that no relocation kind writes",
                            f.offset
                        ),
                    ))
                }
            };
            let pc_relative = matches!(
                kind,
                RelocKind::Rel32
                    | RelocKind::A64Branch26
                    | RelocKind::A64CondBranch19
                    | RelocKind::A64TestBranch14
                    | RelocKind::A64Adr
                    | RelocKind::A64LdrLiteral19
            );
            // Inside the part itself: the distance moves with it.
            if pc_relative && f.target >= prva && f.target < prva.saturating_add(psize) {
                continue;
            }
            let (target, extra) = self.target_of(group, f)?;
            if let (Some(reg), RelocKind::A64Lo12 { .. } | RelocKind::A64PairLo12 { .. }) =
                (f.reg, kind)
            {
                pages.entry((reg, f.target & !0xfff)).or_default().push((
                    target.clone(),
                    extra.saturating_add(f.addend),
                    out.len(),
                    f.target.wrapping_add_signed(f.addend),
                    f.offset,
                ));
            }
            out.push(Relocation {
                offset: u64::from(f.offset),
                kind,
                target,
                addend: extra.saturating_add(f.addend),
            });
        }
        // Which users each ADRP serves: exactly the ones it provably
        // alone serves (its value dies in straight-line code), else every
        // user of its register and page that no such ADRP claims.
        let adrps = self.pair_pages(n, all, prva, psize, adrps, &pages);
        for (f, users) in adrps {
            let Some(users) = users else {
                return Err(self.inexpressible(
                    group,
                    format!(
                        "ADRP at +{:#x}: no instruction of the function uses its page {:#x}",
                        f.offset, f.target
                    ),
                ));
            };
            let targets: Vec<(Target, i64)> = users.iter().map(|u| (u.0.clone(), u.1)).collect();
            let (target, extra) = match self.shared_page(&targets) {
                Some(t) => t,
                None => {
                    // Read-only data reached from one page: one copy of
                    // the span keeps it on one page.
                    let reached: Vec<u64> = users.iter().map(|u| u.3).collect();
                    match self.page_block(&reached) {
                        Some((block, lo)) => {
                            for u in &users {
                                if let Some(r) = out.get_mut(u.2) {
                                    r.target = Target::Item(block);
                                    r.addend = u.3.wrapping_sub(lo) as i64;
                                }
                            }
                            (Target::Item(block), 0)
                        }
                        None => {
                            let conflict = self.page_conflict(group, f, &users);
                            self.conflicts.push(conflict);
                            targets
                                .first()
                                .cloned()
                                .unwrap_or((Target::BaselineRva(0), 0))
                        }
                    }
                }
            };
            out.push(Relocation {
                offset: u64::from(f.offset),
                kind: RelocKind::A64AdrpPage21,
                target,
                addend: extra,
            });
        }
        Ok(out)
    }

    /// The conflict of an ADRP (`adrp`, in update group `group`) whose
    /// `users` cannot share one page once patched: each object it serves,
    /// named from the update, with where it lies once patched.
    fn page_conflict(&self, group: usize, adrp: &AddrField, users: &[PageUser]) -> PageConflict {
        let mut objects: Vec<String> = Vec::new();
        for (target, _, _, addr, _) in users {
            let upd = self.upd;
            let name = match upd.data_at(*addr).and_then(|d| upd.data_object(d)) {
                Some((e, _)) => format!("`{}`", e.key),
                None => match upd.function_at(*addr) {
                    Some((g, _)) => format!("`{}`", upd.key(g)),
                    None => format!("the update's {addr:#x}"),
                },
            };
            let place = match target {
                Target::BaselineRva(r) => format!("stays in the baseline at {r:#x}"),
                Target::Import { slot_rva, .. } => {
                    format!("the baseline's import slot at {slot_rva:#x}")
                }
                Target::Item(i) => {
                    let new = usize::try_from(i.0)
                        .ok()
                        .and_then(|k| k.checked_sub(self.first_item))
                        .and_then(|k| self.items.get(k))
                        .is_some_and(|p| p.class == Class::Writable);
                    if new {
                        "new: the package carries it".to_string()
                    } else {
                        "carried by the package".to_string()
                    }
                }
            };
            let o = format!("{name} ({place})");
            if !objects.contains(&o) {
                objects.push(o);
            }
        }
        let function = self.upd.key(group).to_string();
        let detail = format!(
            "ADRP at +{:#x} serves {}: once patched they are not on one page, and an ADRP can only be relinked to one; the instructions would have to be rewritten",
            adrp.offset,
            objects.join(" and ")
        );
        PageConflict {
            function,
            offset: adrp.offset,
            objects,
            detail,
        }
    }

    /// Each ADRP of a part with the users whose page it serves (see
    /// [`PageFlow`]): the users it provably alone serves, else the users of
    /// its register and page that no such ADRP claims (all of them when
    /// every one is claimed: its value reaches no user). `None` when no
    /// instruction uses its register and page.
    fn pair_pages<'f>(
        &self,
        n: &Normalized<'_>,
        all: &[Normalized<'_>],
        prva: u64,
        psize: u64,
        adrps: Vec<&'f AddrField>,
        pages: &HashMap<(u8, u64), Vec<PageUser>>,
    ) -> Vec<(&'f AddrField, Option<Vec<PageUser>>)> {
        if adrps.is_empty() {
            return Vec::new();
        }
        let inside = |t: u64| {
            t.checked_sub(prva)
                .filter(|&o| o < psize)
                .and_then(|o| u32::try_from(o).ok())
        };
        // Where control can enter the part other than by falling through:
        // anything in the group's code or its tables that points into it.
        let extra: Vec<u32> = all
            .iter()
            .flat_map(|m| {
                m.fields
                    .iter()
                    .chain(m.owned_tables.iter().flat_map(|t| t.entries.iter()))
            })
            .filter(|f| !matches!(f.kind, FieldKind::Reloc(RelocKind::A64AdrpPage21)))
            .filter_map(|f| inside(f.target))
            .collect();
        let code = self.upd.image.bytes_at(prva, psize).unwrap_or(&[]);
        let flow = PageFlow::new(code, extra, n.owned_tables.len());
        let mut sole: Vec<Option<Vec<PageUser>>> = Vec::with_capacity(adrps.len());
        let mut claimed: std::collections::HashSet<u32> = std::collections::HashSet::new();
        for f in &adrps {
            let found = f.reg.and_then(|reg| {
                let same_page = pages.get(&(reg, f.target))?;
                let on_reg: Vec<u32> = pages
                    .iter()
                    .filter(|((r, _), _)| *r == reg)
                    .flat_map(|(_, us)| us.iter().map(|u| u.4))
                    .collect();
                let offsets = flow.sole_users(f.offset, &on_reg)?;
                // Every user it serves must have been read against its page.
                let users = offsets
                    .iter()
                    .map(|o| same_page.iter().find(|u| u.4 == *o).cloned())
                    .collect::<Option<Vec<_>>>()?;
                (!users.is_empty()).then_some(users)
            });
            if let Some(users) = &found {
                claimed.extend(users.iter().map(|u| u.4));
            }
            sole.push(found);
        }
        adrps
            .into_iter()
            .zip(sole)
            .map(|(f, found)| {
                let users = found.or_else(|| {
                    let all_users = pages.get(&(f.reg?, f.target))?;
                    let free: Vec<PageUser> = all_users
                        .iter()
                        .filter(|u| !claimed.contains(&u.4))
                        .cloned()
                        .collect();
                    Some(if free.is_empty() {
                        all_users.clone()
                    } else {
                        free
                    })
                });
                (f, users)
            })
            .collect()
    }

    /// The target of an ADRP whose page its `users` (target and offset of
    /// each low-12-bit user) share. One page must serve them all wherever
    /// the package is placed: one baseline page, or one item that is kept
    /// from crossing a page boundary. Anything else would need the
    /// instructions rewritten: `None`.
    fn shared_page(&mut self, users: &[(Target, i64)]) -> Option<(Target, i64)> {
        let first = users.first().cloned()?;
        // One target: the ADRP and its users are linked against one value.
        if users.iter().all(|u| *u == first) {
            return Some(first);
        }
        let page = |t: &Target, off: i64| match t {
            Target::BaselineRva(r) | Target::Import { slot_rva: r, .. } => {
                Some(r.wrapping_add_signed(off) & !0xfff)
            }
            Target::Item(_) => None,
        };
        let all_baseline_page = users
            .iter()
            .map(|(t, o)| page(t, *o))
            .collect::<Option<Vec<_>>>()
            .is_some_and(|p| p.iter().all(|x| Some(x) == p.first()));
        if all_baseline_page {
            return Some(first);
        }
        if let Target::Item(item) = first.0 {
            if users.iter().all(|(t, _)| *t == Target::Item(item)) {
                let (lo, hi) = users.iter().fold((i64::MAX, i64::MIN), |(lo, hi), (_, o)| {
                    (lo.min(*o), hi.max(*o))
                });
                if lo == hi {
                    return Some(first);
                }
                // Offsets within one item: keep the item inside one page.
                let k = usize::try_from(item.0)
                    .ok()
                    .and_then(|i| i.checked_sub(self.first_item));
                if let Some(p) = k.and_then(|k| self.items.get_mut(k)) {
                    let size = p.bytes.len() as u64;
                    if lo >= 0 && size <= 0x1000 && (hi as u64) < size.max(1) {
                        let align = size.max(16).next_power_of_two();
                        p.align = p.align.max(u32::try_from(align).unwrap_or(0x1000));
                        return Some(first);
                    }
                }
            }
        }
        None
    }

    /// One item holding a copy of the update's read-only bytes that
    /// `reached` (addresses on one page) lie in, from the lowest to the end
    /// of what the highest starts, kept from crossing a page boundary.
    /// `None` when any of it is writable or code, or holds a pointer.
    fn page_block(&mut self, reached: &[u64]) -> Option<(ItemRef, u64)> {
        let lo = reached.iter().copied().min()?;
        let hi = reached.iter().copied().max()?;
        let section = self.upd.image.section_at(lo)?;
        if section.perms.write || section.perms.execute {
            return None;
        }
        let section_end = section.rva.saturating_add(section.data.len() as u64);
        if hi >= section_end {
            return None;
        }
        // The extent of what the highest address starts: a string, a data
        // object or an anonymous block.
        let extent = match self.upd.string_at(hi) {
            Some(s) => s.len() as u64,
            None => match self.upd.data_at(hi).and_then(|d| self.upd.data_object(d)) {
                Some((_, o)) => o.rva.saturating_add(o.size).saturating_sub(hi),
                None => self.upd.block(hi).map_or(1, |b| b.end.saturating_sub(hi)),
            },
        };
        let end = hi.saturating_add(extent.max(1)).min(section_end);
        let size = end.checked_sub(lo)?;
        if size > 0x1000 || !self.upd.relocations_in(lo, size).is_empty() {
            return None;
        }
        let key = format!("page:{lo:#x}:{size:#x}");
        if let Some(&item) = self.extra_items.get(&key) {
            return Some((item, lo));
        }
        let bytes = self.upd.image.bytes_at(lo, size)?.to_vec();
        let align = u32::try_from(size.max(16).next_power_of_two()).ok()?;
        let item = self.reserve(bytes, align, Class::ReadOnly);
        self.extra_items.insert(key, item);
        Some((item, lo))
    }

    /// The relocation records of an owned jump table's entries.
    fn table_relocations(
        &mut self,
        group: usize,
        _table: u64,
        entries: &[AddrField],
    ) -> Result<Vec<Relocation>, AssembleError> {
        let mut out = Vec::new();
        for e in entries {
            let FieldKind::Reloc(kind) = e.kind else {
                continue;
            };
            let (target, extra) = self.target_of(group, e)?;
            out.push(Relocation {
                offset: u64::from(e.offset),
                kind,
                target,
                addend: extra.saturating_add(e.addend),
            });
        }
        Ok(out)
    }

    /// Where field `f`'s target goes, as a package target and the offset
    /// from it (added to the field's own addend).
    fn target_of(&mut self, group: usize, f: &AddrField) -> Result<(Target, i64), AssembleError> {
        let t = f.target;
        let upd = self.upd;
        // A part of a packaged function (this one or another).
        if let Some((g, p)) = upd.function_at(t) {
            if let Some(&item) = self.part_items.get(&(g, p)) {
                let start = upd.parts(g).get(p).map_or(t, |q| q.rva);
                return Ok((Target::Item(item), t.wrapping_sub(start) as i64));
            }
            // An unchanged function: the baseline's part of the same kind.
            let part = upd.parts(g).get(p);
            let found = self.baseline_of.get(&g).and_then(|&b| {
                let sig = &part?.signature;
                let q = self.base.parts(b).iter().find(|q| &q.signature == sig)?;
                Some(q.rva.wrapping_add(t.wrapping_sub(part?.rva)))
            });
            return match found {
                Some(rva) => Ok((Target::BaselineRva(rva), 0)),
                None => Err(self.inexpressible(
                    group,
                    format!(
                        "instruction at +{:#x}: refers to `{}`, which the baseline lacks and the package does not carry",
                        f.offset,
                        upd.key(g)
                    ),
                )),
            };
        }
        // An owned jump table.
        if let Some((&rva, &(item, size))) = self.table_items.range(..=t).next_back() {
            if t < rva.saturating_add(size) {
                return Ok((Target::Item(item), t.wrapping_sub(rva) as i64));
            }
        }
        // A data object: the baseline's (its state lives there).
        if let Some(d) = upd.data_at(t) {
            if let Some((e, o)) = upd.data_object(d) {
                let key = e.key;
                let off = t.wrapping_sub(o.rva);
                let writable = upd.image.section_at(o.rva).is_some_and(|s| s.perms.write);
                let changed_constant = !writable
                    && self
                        .changed_data
                        .contains(&(key.name.to_string(), key.unit.map(str::to_string)));
                if let Some(bd) = self.base.data_entry(&key).filter(|_| !changed_constant) {
                    if let Some((_, bo)) = self.base.data_object(bd) {
                        if bo.size == o.size {
                            return Ok((Target::BaselineRva(bo.rva.wrapping_add(off)), 0));
                        }
                    }
                }
                // A new object (or a changed read-only one): a copy.
                let item = self.copy_data(group, o.rva, o.size, &key.to_string(), o)?;
                return Ok((Target::Item(item), off as i64));
            }
        }
        // A stub or a slot for an import, or an anonymous block.
        let resolved = upd.resolve(t, Some(group));
        match &resolved {
            SymRef::External { name, .. } => {
                let is_code = upd.image.section_at(t).is_some_and(|s| s.perms.execute);
                if is_code {
                    if let Some(stub) = self.base.import_stub(name) {
                        return Ok((Target::BaselineRva(stub), 0));
                    }
                    // No stub in the baseline (it called the import
                    // through its slot directly, or not at all): carry
                    // one that jumps through the baseline's slot.
                    if let Some(slot) = self.base.slot_holding(&resolved) {
                        let item = self.import_stub_item(name, slot);
                        return Ok((Target::Item(item), 0));
                    }
                    return Err(self.inexpressible(
                        group,
                        format!(
                            "instruction at +{:#x}: calls `{name}`, which the baseline does not import (a new import needs a restart)",
                            f.offset
                        ),
                    ));
                }
                self.slot_target(group, f)
            }
            &SymRef::Anon { digest, offset } => {
                // A pointer slot (a GOT entry holding a local address).
                if upd.relocation_in(t, 1).is_some_and(|r| r.rva == t) {
                    return self.slot_target(group, f);
                }
                // The baseline's copy must live in the same kind of memory:
                // a constant that the update keeps in `.rdata` is not to be
                // read from bytes that happen to be equal in a baseline's
                // code (an assembly routine's constants) or writable data.
                let start = t.wrapping_sub(offset);
                let perms = |img: &hotpatch_formats::Image<'_>, rva: u64| {
                    img.section_at(rva).map(|s| s.perms)
                };
                if let Some(rva) = self
                    .base
                    .block_with_digest(digest)
                    .filter(|&rva| perms(self.base.image, rva) == perms(upd.image, start))
                {
                    return Ok((Target::BaselineRva(rva), offset as i64));
                }
                if upd.image.section_at(start).is_some_and(|s| s.perms.execute) {
                    return Err(self.inexpressible(
                        group,
                        format!(
                            "instruction at +{:#x}: refers to unnamed code at {start:#x} that differs from the baseline's",
                            f.offset
                        ),
                    ));
                }
                let size = match upd.string_at(start) {
                    Some(s) => s.len() as u64,
                    None => upd.block(start).map_or(0, |b| b.end.wrapping_sub(b.start)),
                };
                let name = format!("{}.const.{start:x}", upd.key(group));
                let item = self.copy_anon(group, start, size, &name)?;
                Ok((Target::Item(item), offset as i64))
            }
            _ if upd.relocation_in(t, 1).is_some_and(|r| r.rva == t) => self.slot_target(group, f),
            other => Err(self.inexpressible(
                group,
                format!(
                    "instruction at +{:#x}: refers to {:#x} ({other:?}), which no relocation can express",
                    f.offset, t
                ),
            )),
        }
    }

    /// A slot the new body loads a pointer from: the baseline's slot that
    /// holds the same thing.
    fn slot_target(&mut self, group: usize, f: &AddrField) -> Result<(Target, i64), AssembleError> {
        let t = f.target;
        let holds = self
            .upd
            .relocation_in(t, 1)
            .filter(|r| r.rva == t)
            .map(|r| (self.upd.resolve_reloc(r, None), r.target.clone()));
        let Some((what, raw)) = holds else {
            return Err(self.inexpressible(
                group,
                format!(
                    "instruction at +{:#x}: loads through {t:#x}, which is no pointer slot",
                    f.offset
                ),
            ));
        };
        match (self.base.slot_holding(&what), raw) {
            (Some(slot), RelocTarget::Symbol { name, .. }) => Ok((
                Target::Import {
                    slot_rva: slot,
                    name,
                },
                0,
            )),
            (Some(slot), RelocTarget::Rva(_)) => {
                self.slot_loads.insert((group, f.insn));
                Ok((Target::BaselineRva(slot), 0))
            }
            // A pointer to something of this image that no baseline slot
            // holds (a new GOT entry, a `.refptr`): carry the slot.
            // A writable pointer is state the running process holds (a
            // lazily bound import pointer, a function pointer variable):
            // only the baseline's own may be used.
            (None, RelocTarget::Rva(_))
                if self.upd.image.section_at(t).is_some_and(|s| s.perms.write) =>
            {
                Err(self.inexpressible(
                    group,
                    format!(
                        "instruction at +{:#x}: calls or loads through the writable pointer at {t:#x}, whose initial target differs from the baseline's (state the running process holds)",
                        f.offset
                    ),
                ))
            }
            (None, RelocTarget::Rva(to)) => {
                let key = format!("slot:{to:#x}");
                if let Some(&item) = self.extra_items.get(&key) {
                    return Ok((Target::Item(item), 0));
                }
                let field = AddrField {
                    kind: FieldKind::Reloc(RelocKind::Abs64),
                    target: to,
                    addend: 0,
                    reg: None,
                    ..*f
                };
                let (target, extra) = self.target_of(group, &field)?;
                let item = self.reserve(vec![0; 8], 8, Class::ReadOnly);
                self.set_relocations(
                    item,
                    vec![Relocation {
                        offset: 0,
                        kind: RelocKind::Abs64,
                        target,
                        addend: extra,
                    }],
                );
                self.extra_items.insert(key, item);
                Ok((Target::Item(item), 0))
            }
            (None, RelocTarget::Symbol { name, .. }) => Err(self.inexpressible(
                group,
                format!(
                    "instruction at +{:#x}: loads the address of `{name}`, which the baseline does not import (a new import needs a restart)",
                    f.offset
                ),
            )),
        }
    }

    /// An item holding a stub that jumps to import `name` through the
    /// baseline's slot at `slot` (x86-64 `jmp [rip+slot]`; AArch64
    /// `adrp x16; ldr x16, [x16, #lo]; br x16`).
    fn import_stub_item(&mut self, name: &str, slot: u64) -> ItemRef {
        let key = format!("stub:{name}");
        if let Some(&item) = self.extra_items.get(&key) {
            return item;
        }
        let target = Target::Import {
            slot_rva: slot,
            name: name.to_string(),
        };
        let (bytes, relocs) = match self.upd.image.arch {
            Arch::X86_64 => (
                vec![0xff, 0x25, 0, 0, 0, 0],
                vec![Relocation {
                    offset: 2,
                    kind: RelocKind::Rel32,
                    target,
                    addend: -4,
                }],
            ),
            Arch::Aarch64 => {
                let mut code = Vec::with_capacity(12);
                for insn in [0x9000_0010u32, 0xf940_0210, 0xd61f_0200] {
                    code.extend_from_slice(&insn.to_le_bytes());
                }
                (
                    code,
                    vec![
                        Relocation {
                            offset: 0,
                            kind: RelocKind::A64AdrpPage21,
                            target: target.clone(),
                            addend: 0,
                        },
                        Relocation {
                            offset: 4,
                            kind: RelocKind::A64Lo12 { scale: 3 },
                            target,
                            addend: 0,
                        },
                    ],
                )
            }
        };
        let item = self.reserve(bytes, align_of(self.upd.image.arch), Class::Code);
        self.set_relocations(item, relocs);
        self.extra_items.insert(key, item);
        item
    }

    /// An item holding a copy of update data object `o` (new, or changed
    /// read-only data).
    fn copy_data(
        &mut self,
        group: usize,
        rva: u64,
        size: u64,
        name: &str,
        o: &DataObject,
    ) -> Result<ItemRef, AssembleError> {
        if let Some(&(item, _)) = self.data_items.get(&rva) {
            return Ok(item);
        }
        if !self.upd.relocations_in(rva, size).is_empty() {
            return Err(self.inexpressible(
                group,
                format!("refers to new data `{name}`, which holds pointers (not supported yet)"),
            ));
        }
        let writable = self
            .upd
            .image
            .section_at(rva)
            .is_some_and(|s| s.perms.write);
        let mut bytes = self
            .upd
            .image
            .bytes_at(rva, size)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        bytes.resize(usize::try_from(size).unwrap_or(0).min(1 << 24), 0);
        let class = if writable {
            Class::Writable
        } else {
            Class::ReadOnly
        };
        let item = self.reserve(bytes, 16, class);
        if let Some(p) = self.items.last_mut() {
            p.object = Some(o.clone());
        }
        self.data_items.insert(rva, (item, size));
        self.new_data.push(NewData {
            name: o.name.clone(),
            unit: o.unit.clone(),
            writable,
            body: item,
        });
        Ok(item)
    }

    /// An item holding a copy of anonymous read-only bytes.
    fn copy_anon(
        &mut self,
        group: usize,
        rva: u64,
        size: u64,
        name: &str,
    ) -> Result<ItemRef, AssembleError> {
        if let Some(&(item, _)) = self.data_items.get(&rva) {
            return Ok(item);
        }
        if size == 0 || !self.upd.relocations_in(rva, size).is_empty() {
            return Err(self.inexpressible(
                group,
                format!("refers to anonymous data at {rva:#x} that the baseline lacks and that holds pointers"),
            ));
        }
        let bytes = self
            .upd
            .image
            .bytes_at(rva, size)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                self.inexpressible(
                    group,
                    format!("anonymous data at {rva:#x} is not in the file"),
                )
            })?;
        let item = self.reserve(bytes, 16, Class::ReadOnly);
        self.data_items.insert(rva, (item, size));
        self.new_data.push(NewData {
            name: name.to_string(),
            unit: None,
            writable: false,
            body: item,
        });
        Ok(item)
    }
}

/// The relink check (see the module documentation).
fn relink_check(
    cx: &Context<'_, '_, '_>,
    packaged: &[Packaged],
    forms: &[Vec<Normalized<'_>>],
) -> Result<(), AssembleError> {
    let base = cx.base.image;
    // The pretend sections, one per class of item, after everything the
    // baseline maps, each 64 KiB aligned.
    let end = base
        .sections
        .iter()
        .map(|s| s.rva.saturating_add(s.size))
        .max()
        .unwrap_or(0);
    let mut placed: Vec<u64> = vec![0; cx.items.len()];
    let mut areas: Vec<(Class, u64, Vec<u8>)> = Vec::new();
    let mut next = end.saturating_add(0xffff) & !0xffff;
    for class in [Class::Code, Class::ReadOnly, Class::Writable] {
        let start = next;
        let mut at = start;
        for (k, p) in cx.items.iter().enumerate() {
            if p.class != class {
                continue;
            }
            let a = u64::from(p.align.max(1));
            at = at.saturating_add(a.saturating_sub(1)) & !a.saturating_sub(1);
            if let Some(slot) = placed.get_mut(k) {
                *slot = at;
            }
            at = at.saturating_add(p.bytes.len() as u64);
        }
        areas.push((
            class,
            start,
            vec![0u8; usize::try_from(at.saturating_sub(start)).unwrap_or(0)],
        ));
        next = at.saturating_add(0x1_ffff) & !0xffff;
    }
    let item_rva = |r: ItemRef| -> Option<u64> {
        placed
            .get(usize::try_from(r.0).ok()?.checked_sub(cx.first_item)?)
            .copied()
    };
    let mut relocations = base.relocations.clone();
    for (k, p) in cx.items.iter().enumerate() {
        let (Some(&rva), Some(item)) = (
            placed.get(k),
            u32::try_from(cx.first_item.saturating_add(k)).ok(),
        ) else {
            continue;
        };
        let mut bytes = p.bytes.clone();
        link(
            ItemRef(item),
            &mut bytes,
            &p.relocations,
            rva,
            0,
            |t| match t {
                Target::BaselineRva(r) => Some(*r),
                Target::Item(i) => item_rva(*i),
                Target::Import { slot_rva, .. } => Some(*slot_rva),
            },
        )
        .map_err(|e| AssembleError::Relink {
            image: cx.name.to_string(),
            function: format!("item {item}"),
            detail: e.to_string(),
        })?;
        for r in &p.relocations {
            if r.kind == RelocKind::Abs64 {
                let target = match &r.target {
                    Target::BaselineRva(x) => Some(*x),
                    Target::Item(i) => item_rva(*i),
                    Target::Import { slot_rva, .. } => Some(*slot_rva),
                };
                if let Some(t) = target {
                    relocations.push(hotpatch_formats::Relocation {
                        rva: rva.saturating_add(r.offset),
                        width: 8,
                        target: RelocTarget::Rva(t.wrapping_add_signed(r.addend)),
                    });
                }
            }
        }
        if let Some((_, start, area)) = areas.iter_mut().find(|(c, _, _)| *c == p.class) {
            let off = usize::try_from(rva.saturating_sub(*start)).unwrap_or(usize::MAX);
            if let Some(slot) = area.get_mut(off..off.saturating_add(bytes.len())) {
                slot.copy_from_slice(&bytes);
            }
        }
    }
    // The image the linked bodies live in: the baseline, its replaced
    // functions' names moved to their new bodies, new data named.
    let replaced: Vec<(u64, u64)> = packaged
        .iter()
        .filter_map(|p| p.base)
        .flat_map(|b| cx.base.parts(b).iter().map(|q| (q.rva, q.size)))
        .collect();
    let mut functions: Vec<Function> = base
        .functions
        .iter()
        .filter(|f| !replaced.contains(&(f.rva, f.size)))
        .cloned()
        .collect();
    for p in packaged {
        for (i, part) in cx.upd.parts(p.upd).iter().enumerate() {
            let (Some(&item), Some(f)) = (
                cx.part_items.get(&(p.upd, i)),
                cx.upd
                    .image
                    .functions
                    .iter()
                    .find(|f| f.rva == part.rva && f.name == part.symbol),
            ) else {
                continue;
            };
            if let Some(rva) = item_rva(item) {
                functions.push(Function { rva, ..f.clone() });
            }
        }
    }
    let mut data = base.data.clone();
    for (k, p) in cx.items.iter().enumerate() {
        let (Some(o), Some(&rva)) = (&p.object, placed.get(k)) else {
            continue;
        };
        // A changed constant's name moves to its new copy.
        data.retain(|d| !(d.name == o.name && d.unit == o.unit));
        data.push(DataObject {
            rva,
            size: p.bytes.len() as u64,
            section: ".hotpatch.data".into(),
            ..o.clone()
        });
    }
    let mut sections = base.sections.clone();
    for (class, start, area) in &areas {
        sections.push(Section {
            name: ".hotpatch".into(),
            rva: *start,
            size: area.len() as u64,
            perms: Permissions {
                read: true,
                write: *class == Class::Writable,
                execute: *class == Class::Code,
            },
            data: area,
        });
    }
    let image = Image {
        sections,
        functions,
        data,
        relocations,
        ..base.clone()
    };
    let mut image = image;
    image.relocations.sort_by_key(|r| r.rva);
    let idx = ImageIndex::new(&image);
    let mut anchors = cx.base.finished_anchors();
    for p in packaged {
        let key = cx.upd.key(p.upd);
        if let Some(g) = idx.group(&key) {
            let mut n = Vec::new();
            norm::normalize_group(&idx, g, &mut n);
            anchors.extend(n.iter().flat_map(|x| x.anchors.iter().copied()));
        }
    }
    idx.finish(anchors);
    for (p, want) in packaged.iter().zip(forms) {
        let key = cx.upd.key(p.upd);
        let fail = |detail: String| AssembleError::Relink {
            image: cx.name.to_string(),
            function: key.to_string(),
            detail,
        };
        let g = idx
            .group(&key)
            .ok_or_else(|| fail("its new body is not where the check placed it".into()))?;
        let mut got = Vec::new();
        norm::normalize_group(&idx, g, &mut got);
        // The update's form, against its finished index (as assembly
        // normalised it).
        let expected = want;
        if got.len() != expected.len() {
            return Err(fail(format!(
                "{} parts linked, {} expected",
                got.len(),
                expected.len()
            )));
        }
        for (k, (a, b)) in got.iter().zip(expected.iter()).enumerate() {
            if let Some(at) = norm::exact_difference(a, b)
                .and_then(|at| tolerant_difference(cx, p.upd, a, b).map(|_| at))
            {
                let off = b.insns.get(at).map_or(0, |i| i.offset);
                return Err(fail(format!(
                    "part {k} differs from the update at instruction +{off:#x}"
                )));
            }
        }
    }
    Ok(())
}

/// [`norm::exact_difference`], except that an anonymous reference made by
/// an instruction that loads through a baseline pointer slot (see
/// `Context::slot_loads`) may name a different block: the slot was chosen
/// because it holds what the update's slot holds.
fn tolerant_difference(
    cx: &Context<'_, '_, '_>,
    group: usize,
    a: &Normalized<'_>,
    b: &Normalized<'_>,
) -> Option<usize> {
    let tolerated = |_: &Normalized<'_>, i: u32| cx.slot_loads.contains(&(group, i));
    fn strip<'n>(
        n: &Normalized<'n>,
        tolerated: impl Fn(&Normalized<'n>, u32) -> bool,
    ) -> Normalized<'n> {
        let mut m = n.clone();
        m.refs
            .retain(|(i, r)| !(matches!(r, SymRef::Anon { .. }) && tolerated(n, *i)));
        m
    }
    norm::exact_difference(&strip(a, tolerated), &strip(b, tolerated))
}

/// The bytes of a new body as the delta encodes them: every field a
/// relocation record overwrites holds the value it would have with the
/// body placed at `reference_rva` (its old body's place) against the
/// baseline, so that unchanged instructions before any shift match the old
/// body byte for byte (Courgette's idea, without help from the applier:
/// the linker overwrites these fields wherever the body is placed).
/// Fields that point at package items, or that do not fit, keep the
/// updated image's bytes.
fn linked_at_reference(
    item: ItemRef,
    bytes: &[u8],
    relocations: &[Relocation],
    reference_rva: u64,
) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for r in relocations {
        let target = match &r.target {
            Target::BaselineRva(rva) => *rva,
            Target::Import { slot_rva, .. } => *slot_rva,
            Target::Item(_) => continue,
        };
        let mut field = out.clone();
        let one = std::slice::from_ref(r);
        if link(item, &mut field, one, reference_rva, 0, |_| Some(target)).is_ok() {
            out = field;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{compare, Options};
    use crate::testutil::{corpus, read};
    use hotpatch_formats::read::parse;

    /// Every hotpatchable update of every corpus scenario, on all four
    /// targets, assembles and passes its relink check; every other one is
    /// refused with its blockers.
    #[test]
    fn every_corpus_update_assembles_or_is_refused() {
        let mut built = 0;
        let mut failures = Vec::new();
        for scenario in std::fs::read_dir(corpus()).unwrap() {
            let scenario = scenario.unwrap().path();
            let Ok(targets) = std::fs::read_dir(scenario.join("bin")) else {
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
                let (bb, bo) = read(&versions[0]);
                let baseline = parse(&bb, &bo).unwrap();
                for v in &versions[1..] {
                    let (ub, uo) = read(v);
                    let updated = parse(&ub, &uo).unwrap();
                    let cmp = compare(&baseline, &updated, &Options::default()).unwrap();
                    let mut payload = Payload::new();
                    let opts = AssembleOptions {
                        name: "x".into(),
                        include_lines_only: false,
                    };
                    match assemble(&cmp, &opts, &mut payload) {
                        Ok(t) => {
                            built += 1;
                            assert!(cmp.report.hotpatchable);
                            assert!(
                                !t.functions.is_empty()
                                    || !t.added_functions.is_empty()
                                    || cmp
                                        .report
                                        .functions
                                        .iter()
                                        .all(|e| e.status != Status::Changed),
                                "{}",
                                v.display()
                            );
                        }
                        Err(AssembleError::Blocked { .. }) => assert!(!cmp.report.hotpatchable),
                        Err(e) => failures.push(format!("{}: {e}", v.display())),
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} built; failures:\n{}",
            built,
            failures.join("\n")
        );
        assert!(built > 40, "{built}");
    }

    /// Regression: 07-new-global on aarch64-windows was refused ("ADRP at
    /// +0xe0 serves 2 accesses that cannot share one page") although the
    /// diff called it hotpatchable. clang's `pin_check` forms `&logins` by
    /// `adrp x10, P; add x10, x10, #8` on one path and `&fail_count` by
    /// `adrp x10, P; add x10, x10, #4` on the other; pairing users with
    /// ADRPs by register and page alone made one ADRP of the two, serving
    /// an existing global (in the baseline) and a new one (in the package).
    /// Each ADRP serves exactly its own `ADD`: the one for `logins` must be
    /// linked against the baseline's `logins`, the one for `fail_count`
    /// against the package's copy, and the one that serves `fail_count` on
    /// both paths (`x9`, live across a branch) against that copy too.
    #[test]
    fn two_adrps_of_one_register_and_page_are_not_one_shared_page() {
        let file = |v| crate::testutil::corpus_file("07-new-global", "aarch64-windows", v);
        let ((bb, bo), (ub, uo)) = (read(&file("v1")), read(&file("v2")));
        let (base, upd) = (parse(&bb, &bo).unwrap(), parse(&ub, &uo).unwrap());
        let cmp = compare(&base, &upd, &Options::default()).unwrap();
        assert!(cmp.report.hotpatchable);
        let mut payload = Payload::new();
        let opts = AssembleOptions {
            name: "v2.dll".into(),
            include_lines_only: false,
        };
        let t = assemble(&cmp, &opts, &mut payload).unwrap();
        let names: Vec<&str> = t.functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["pin_check"]);
        let fail_count: Vec<_> = t
            .data
            .iter()
            .map(|d| (d.name.as_str(), d.writable))
            .collect();
        assert_eq!(fail_count, [("fail_count", true)]);
        let copy = Target::Item(t.data[0].body);
        let logins = base.data.iter().find(|d| d.name == "logins").unwrap().rva;
        let body = payload.get(t.functions[0].body).unwrap();
        let adrps: Vec<(u64, Target, i64)> = body
            .relocations
            .iter()
            .filter(|r| r.kind == RelocKind::A64AdrpPage21)
            .map(|r| (r.offset, r.target.clone(), r.addend))
            .collect();
        let stored_hash = base
            .data
            .iter()
            .find(|d| d.name == "stored_hash")
            .unwrap()
            .rva;
        assert_eq!(
            adrps,
            [
                (0x14, copy.clone(), 0),
                (0xcc, Target::BaselineRva(stored_hash), 0),
                (0xe0, Target::BaselineRva(logins), 0),
                (0xfc, copy, 0),
            ]
        );
    }

    /// The diff and the packager agree on an ADRP that really serves an
    /// existing global and a new one (LLVM's merged globals, GCC's section
    /// anchors): `shared-page` blocks the update, naming the function, the
    /// instruction and both objects, and the packager refuses it for that
    /// blocker. Reached by an ADRP of its own, the new global is carried.
    #[test]
    fn an_adrp_serving_existing_and_new_data_is_a_shared_page_blocker() {
        use crate::norm::arm64::synth::*;
        let data = |s: &mut Synth, new: bool| {
            put_data(s, "count", 0x3000, 4);
            if new {
                put_data(s, "hits", 0x3004, 4);
            }
        };
        let run = |body: fn(u64) -> Vec<u32>| {
            let mut b = Synth::new(0x1000, 0x2000, 0x3000);
            data(&mut b, false);
            place(&mut b, "f", 0x1000, |pc| {
                vec![adrp(8, pc, 0x3000), ldr_w(0, 8, 0), RET]
            });
            let mut u = Synth::new(0x1000, 0x2000, 0x3000);
            data(&mut u, true);
            place(&mut u, "f", 0x1000, body);
            let (bt, ut) = (b.text_bytes(), u.text_bytes());
            let (base, upd) = (b.image(&bt), u.image(&ut));
            let opts = Options {
                allow: vec![crate::diff::Allow {
                    object: "type:*".into(),
                    reason: "synthetic images have no types".into(),
                }],
                ..Options::default()
            };
            let cmp = compare(&base, &upd, &opts).unwrap();
            let blockers: Vec<(String, &str, String)> = cmp
                .report
                .blockers
                .iter()
                .map(|b| (b.object.clone(), b.kind.as_str(), b.reason.clone()))
                .collect();
            let mut payload = Payload::new();
            let opts = AssembleOptions {
                name: "x".into(),
                include_lines_only: false,
            };
            let built = assemble(&cmp, &opts, &mut payload)
                .map(|t| {
                    let f = &t.functions[0];
                    payload
                        .get(f.body)
                        .unwrap()
                        .relocations
                        .iter()
                        .filter(|r| r.kind == RelocKind::A64AdrpPage21)
                        .map(|r| (r.offset, r.target.clone()))
                        .collect::<Vec<_>>()
                })
                .map_err(|e| e.to_string());
            (blockers, cmp.report.hotpatchable, built)
        };
        // One ADRP, two users: `count` stays at 0x3000, `hits` moves.
        let (blockers, hotpatchable, built) =
            run(|pc| vec![adrp(8, pc, 0x3000), ldr_w(0, 8, 0), ldr_w(1, 8, 4), RET]);
        assert!(!hotpatchable);
        assert_eq!(
            blockers,
            [(
                "f".to_string(),
                "shared-page",
                "ADRP at +0x0 serves `count` (stays in the baseline at 0x3000) and `hits` (new: the package carries it): once patched they are not on one page, and an ADRP can only be relinked to one; the instructions would have to be rewritten".to_string()
            )]
        );
        assert_eq!(
            built,
            Err("x: not hotpatchable: f [shared-page]; build it with --kind baseline (restart required)".to_string())
        );
        // An ADRP each (one register, one page): no conflict.
        let (blockers, hotpatchable, built) = run(|pc| {
            vec![
                adrp(8, pc, 0x3000),
                ldr_w(0, 8, 0),
                adrp(8, pc + 8, 0x3000),
                ldr_w(1, 8, 4),
                RET,
            ]
        });
        assert!(hotpatchable, "{blockers:?}");
        let built = built.unwrap();
        assert_eq!(built.len(), 2);
        assert_eq!(built[0], (0, Target::BaselineRva(0x3000)));
        assert!(matches!(built[1], (8, Target::Item(_))), "{built:?}");
    }

    /// Regression: a changed `static const` table (06-rodata-table's
    /// `suite_strength`) was reached in the baseline, with its old values,
    /// because it kept its name and size; the patched functions then
    /// behaved as v1. The package must carry the new copy, read-only, and
    /// the bodies must refer to it.
    #[test]
    fn changed_read_only_data_is_carried_not_reached_in_the_baseline() {
        for target in [
            "x86_64-linux",
            "aarch64-linux",
            "x86_64-windows",
            "aarch64-windows",
        ] {
            let (bb, bo) = read(&crate::testutil::corpus_file(
                "06-rodata-table",
                target,
                "v1",
            ));
            let (ub, uo) = read(&crate::testutil::corpus_file(
                "06-rodata-table",
                target,
                "v2",
            ));
            let (base, upd) = (parse(&bb, &bo).unwrap(), parse(&ub, &uo).unwrap());
            let cmp = compare(&base, &upd, &Options::default()).unwrap();
            let mut payload = Payload::new();
            let opts = AssembleOptions {
                name: "x".into(),
                include_lines_only: false,
            };
            let t = assemble(&cmp, &opts, &mut payload).unwrap();
            let copy = t
                .data
                .iter()
                .find(|d| d.name == "suite_strength")
                .unwrap_or_else(|| panic!("{target}: {:?}", t.data));
            assert!(!copy.writable, "{target}");
            let table = upd
                .data
                .iter()
                .find(|d| d.name == "suite_strength")
                .unwrap();
            assert_eq!(
                payload.get(copy.body).unwrap().body,
                Body::Raw(upd.bytes_at(table.rva, table.size).unwrap().into()),
                "{target}"
            );
            let old = base
                .data
                .iter()
                .find(|d| d.name == "suite_strength")
                .unwrap();
            for f in &t.functions {
                let relocs = &payload.get(f.body).unwrap().relocations;
                assert!(
                    relocs.iter().any(|r| r.target == Target::Item(copy.body)),
                    "{target}: {} does not use the new table",
                    f.name
                );
                assert!(
                    !relocs.iter().any(|r| matches!(r.target, Target::BaselineRva(x) if x >= old.rva && x < old.rva + old.size)),
                    "{target}: {} still reads the old table",
                    f.name
                );
            }
        }
    }

    /// Regression: a new body's constant was pointed at equal bytes that
    /// the baseline holds in code (a mingw assembly routine keeps `1.0`
    /// in `.text`), because anonymous blocks are found by their contents
    /// alone; the relink check then refused the libexif Windows update.
    /// The constant must come from the same kind of section, here by
    /// carrying a read-only copy.
    #[test]
    fn a_constant_is_not_taken_from_equal_bytes_in_baseline_code() {
        use crate::testutil::{image, section};
        use hotpatch_formats::{Arch, Format};
        let one = 1.0f64.to_le_bytes();
        let two = 2.0f64.to_le_bytes();
        // g: movsd xmm1, [rip -> 0x1020]; ret. f: movsd xmm0, [rip ->
        // 0x3000]; ret. 0x1020: the bytes of 1.0, in code, outside every
        // function.
        let mut text = vec![0xccu8; 0x28];
        text[0..8].copy_from_slice(&[0xf2, 0x0f, 0x10, 0x0d, 0x18, 0, 0, 0]);
        text[8] = 0xc3;
        text[0x10..0x18].copy_from_slice(&[0xf2, 0x0f, 0x10, 0x05, 0xe8, 0x1f, 0, 0]);
        text[0x18] = 0xc3;
        text[0x20..0x28].copy_from_slice(&one);
        let functions = [("g", 0x1000, 9), ("f", 0x1010, 9)];
        let mut base = image(
            Format::Elf,
            Arch::X86_64,
            vec![
                section(".text", 0x1000, &text, false, true),
                section(".rodata", 0x3000, &two, false, false),
            ],
            &functions,
        );
        let mut upd = image(
            Format::Elf,
            Arch::X86_64,
            vec![
                section(".text", 0x1000, &text, false, true),
                section(".rodata", 0x3000, &one, false, false),
            ],
            &functions,
        );
        // Debug information that says no type changed.
        base.type_info = hotpatch_formats::TypeInfo::Read;
        upd.type_info = hotpatch_formats::TypeInfo::Read;
        let cmp = compare(&base, &upd, &Options::default()).unwrap();
        let changed: Vec<&str> = cmp
            .report
            .functions
            .iter()
            .filter(|e| e.status == Status::Changed)
            .map(|e| e.name)
            .collect();
        assert_eq!(changed, ["f"]);
        let mut payload = Payload::new();
        let opts = AssembleOptions {
            name: "x".into(),
            include_lines_only: false,
        };
        let t = assemble(&cmp, &opts, &mut payload).unwrap();
        let [f] = t.functions.as_slice() else {
            panic!("{:?}", t.functions)
        };
        let relocs = &payload.get(f.body).unwrap().relocations;
        assert!(
            !relocs.iter().any(
                |r| matches!(r.target, Target::BaselineRva(x) if (0x1000..0x1028).contains(&x))
            ),
            "{relocs:?}"
        );
        let copy = t
            .data
            .iter()
            .find(|d| relocs.iter().any(|r| r.target == Target::Item(d.body)))
            .unwrap_or_else(|| panic!("{relocs:?} {:?}", t.data));
        assert!(!copy.writable);
        assert_eq!(
            payload.get(copy.body).unwrap().body,
            Body::Raw(one.to_vec().into())
        );
    }
}

//! Comparison of struct, union and class layouts between two builds.
//!
//! A security fix that adds a field to a heap object is as dangerous to
//! hotpatch as one that grows a global: objects allocated before the patch
//! keep the old size and the old field offsets, and the patched code would
//! read and write past them or at the wrong place. [`compare_types`] finds
//! the types whose layout changed, from the layouts both images' debug
//! information gives ([`Image::types`]), and which functions use them in
//! each build ([`Image::type_uses`]: parameters, locals, return types,
//! through pointers and typedefs). Whether a change blocks the update (it
//! does when a changed function uses the type) is the caller's decision: it
//! knows which functions changed.
//!
//! What counts as a change of one type name:
//!
//! - A layout is its kind (`struct`/`union`/`class`), its size, and the
//!   offset, bit position and size of each field. Field *names* are not
//!   part of it: a field renamed at the same offset and size is not a
//!   layout change (if the type changed otherwise, the rename is mentioned
//!   in the [`TypeChange::reason`] as such).
//! - One image can have several layouts under one name (two unrelated
//!   `struct node` in two source files). The layouts of a name are compared
//!   as sets: layouts present in both builds are set aside, and what is left
//!   on each side is paired by the most field names in common. A name is
//!   changed when at least one such pair exists.
//! - A name that only one build defines (a new type, a removed type), or a
//!   layout with no counterpart, is not a change: no object of the other
//!   build can have that layout.

use std::collections::BTreeSet;

use hotpatch_formats::{Field, Image, TypeKind, TypeLayout};

/// How many fields of one kind (moved, added, ...) a reason names before it
/// says "and N more".
const REASON_FIELDS: usize = 6;

/// A field present in both layouts at a different place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldMove<'i> {
    /// The field's name.
    pub name: &'i str,
    /// Its offset in the baseline layout.
    pub old_offset: u64,
    /// Its offset in the updated layout.
    pub new_offset: u64,
}

/// A field present in both layouts with a different size or bit range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldResize<'i> {
    /// The baseline field.
    pub old: &'i Field,
    /// The updated field.
    pub new: &'i Field,
}

/// A field whose name changed while its offset, size and bits did not: not a
/// layout change by itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRename<'i> {
    /// The baseline field.
    pub old: &'i Field,
    /// The updated field.
    pub new: &'i Field,
}

/// How one baseline layout became one updated layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutChange<'i> {
    /// The baseline layout (`None`: a layout only the update has, reported
    /// beside the pairs that changed).
    pub old: Option<&'i TypeLayout>,
    /// The updated layout (`None`: a baseline layout the update no longer
    /// has).
    pub new: Option<&'i TypeLayout>,
    /// Fields at another offset.
    pub moved: Vec<FieldMove<'i>>,
    /// Fields only the updated layout has.
    pub added: Vec<&'i Field>,
    /// Fields only the baseline layout has.
    pub removed: Vec<&'i Field>,
    /// Fields of another size or bit range (at the same or another offset).
    pub resized: Vec<FieldResize<'i>>,
    /// Fields renamed in place (not a change by themselves).
    pub renamed: Vec<FieldRename<'i>>,
}

/// A type whose layout differs between the two builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeChange<'i> {
    /// The type's name (as in [`TypeLayout::name`]).
    pub name: &'i str,
    /// Its kind in the baseline.
    pub kind: TypeKind,
    /// The layouts that changed: one, unless several unrelated types share
    /// the name. The first one has both sides.
    pub layouts: Vec<LayoutChange<'i>>,
    /// Entry RVAs of the baseline functions that use the type, sorted.
    pub users_baseline: Vec<u64>,
    /// Entry RVAs of the updated functions that use the type, sorted.
    pub users_updated: Vec<u64>,
}

impl<'i> TypeChange<'i> {
    /// Size of the (first) baseline layout that changed.
    pub fn old_size(&self) -> u64 {
        self.layouts
            .first()
            .and_then(|l| l.old)
            .map_or(0, |l| l.size)
    }

    /// Size of the (first) updated layout that changed.
    pub fn new_size(&self) -> u64 {
        self.layouts
            .first()
            .and_then(|l| l.new)
            .map_or(0, |l| l.size)
    }

    /// The blocker's one-line text: the type, its old and new size, the
    /// fields that moved, appeared, disappeared or changed size, and why it
    /// matters. It names no functions: the caller, which knows their names,
    /// adds the users.
    ///
    /// ```text
    /// struct conn changed layout: size 16 -> 24 bytes; field `bytes` moved
    /// from +8 to +16; field `limit` added at +8 (8 bytes); objects made
    /// before the patch keep the old layout
    /// ```
    pub fn reason(&self) -> String {
        let mut parts = Vec::new();
        for (i, l) in self.layouts.iter().enumerate() {
            let mut p = l.describe();
            if i > 0 {
                p = format!("another layout named {}: {p}", self.name);
            }
            parts.push(p);
        }
        format!(
            "{} {} changed layout: {}; objects made before the patch keep the old layout",
            self.kind.keyword(),
            self.name,
            parts.join("; ")
        )
    }
}

impl<'i> LayoutChange<'i> {
    /// One layout's change in words.
    fn describe(&self) -> String {
        let (old, new) = match (self.old, self.new) {
            (Some(o), Some(n)) => (o, n),
            (Some(o), None) => {
                return format!("the {}-byte layout no longer exists", o.size);
            }
            (None, Some(n)) => return format!("a new {}-byte layout appears", n.size),
            (None, None) => return String::new(),
        };
        let mut items = Vec::new();
        if old.kind != new.kind {
            items.push(format!(
                "{} became a {}",
                old.kind.keyword(),
                new.kind.keyword()
            ));
        }
        if old.size == new.size {
            items.push(format!("size {} bytes (unchanged)", old.size));
        } else {
            items.push(format!("size {} -> {} bytes", old.size, new.size));
        }
        let list = |mut v: Vec<String>| {
            if v.len() > REASON_FIELDS {
                let more = v.len().saturating_sub(REASON_FIELDS);
                v.truncate(REASON_FIELDS);
                v.push(format!("and {more} more"));
            }
            v.join(", ")
        };
        if !self.moved.is_empty() {
            items.push(format!(
                "moved: {}",
                list(
                    self.moved
                        .iter()
                        .map(|m| format!("`{}` +{} -> +{}", m.name, m.old_offset, m.new_offset))
                        .collect()
                )
            ));
        }
        if !self.added.is_empty() {
            items.push(format!(
                "added: {}",
                list(self.added.iter().map(|f| place(f)).collect())
            ));
        }
        if !self.removed.is_empty() {
            items.push(format!(
                "removed: {}",
                list(self.removed.iter().map(|f| place(f)).collect())
            ));
        }
        if !self.resized.is_empty() {
            items.push(format!(
                "resized: {}",
                list(
                    self.resized
                        .iter()
                        .map(|r| format!("`{}` {} -> {}", r.new.name, extent(r.old), extent(r.new)))
                        .collect()
                )
            ));
        }
        if !self.renamed.is_empty() {
            items.push(format!(
                "renamed in place (not a layout change): {}",
                list(
                    self.renamed
                        .iter()
                        .map(|r| format!("`{}` -> `{}`", r.old.name, r.new.name))
                        .collect()
                )
            ));
        }
        items.join(", ")
    }
}

/// A field and where it lies: `` `len` at +8 (4 bytes) ``.
fn place(f: &Field) -> String {
    format!("`{}` at +{} ({})", f.name, f.offset, extent(f))
}

/// A field's extent: `4 bytes`, or `3 bits at bit 5`.
fn extent(f: &Field) -> String {
    match f.bit {
        Some((bit, width)) => format!("{width} bits at bit {bit}"),
        None => format!("{} bytes", f.size),
    }
}

/// Where one field lies: offset, bit range, size.
type Extent = (u64, Option<(u32, u32)>, u64);

/// What a layout is, for comparison: everything but the field names.
fn shape(t: &TypeLayout) -> (TypeKind, u64, Vec<Extent>) {
    let mut fields: Vec<_> = t.fields.iter().map(|f| (f.offset, f.bit, f.size)).collect();
    fields.sort_unstable();
    (t.kind, t.size, fields)
}

/// How a baseline layout became an updated one, field by field.
fn layout_change<'i>(old: &'i TypeLayout, new: &'i TypeLayout) -> LayoutChange<'i> {
    let mut change = LayoutChange {
        old: Some(old),
        new: Some(new),
        moved: Vec::new(),
        added: Vec::new(),
        removed: Vec::new(),
        resized: Vec::new(),
        renamed: Vec::new(),
    };
    let find = |fields: &'i [Field], name: &str| fields.iter().find(|f| f.name == name);
    for o in &old.fields {
        match find(&new.fields, &o.name) {
            Some(n) => {
                if n.offset != o.offset {
                    change.moved.push(FieldMove {
                        name: &o.name,
                        old_offset: o.offset,
                        new_offset: n.offset,
                    });
                }
                if n.size != o.size || n.bit != o.bit {
                    change.resized.push(FieldResize { old: o, new: n });
                }
            }
            None => change.removed.push(o),
        }
    }
    change.added = new
        .fields
        .iter()
        .filter(|n| find(&old.fields, &n.name).is_none())
        .collect();
    // A removed and an added field at the same place are one field renamed.
    let mut i = 0;
    while i < change.removed.len() {
        let Some(o) = change.removed.get(i).copied() else {
            break;
        };
        match change
            .added
            .iter()
            .position(|n| (n.offset, n.bit, n.size) == (o.offset, o.bit, o.size))
        {
            Some(j) => {
                let n = change.added.remove(j);
                change.removed.remove(i);
                change.renamed.push(FieldRename { old: o, new: n });
            }
            None => i = i.saturating_add(1),
        }
    }
    change
}

/// How many field names two layouts share.
fn common_names(a: &TypeLayout, b: &TypeLayout) -> usize {
    let names: BTreeSet<&str> = a.fields.iter().map(|f| f.name.as_str()).collect();
    b.fields
        .iter()
        .filter(|f| names.contains(f.name.as_str()))
        .count()
}

/// Entry RVAs of the functions of `image` that use the type `name`, sorted.
pub fn users(image: &Image<'_>, name: &str) -> Vec<u64> {
    // Type uses are sorted by RVA, one entry per RVA.
    image
        .type_uses
        .iter()
        .filter(|u| u.types.binary_search_by(|t| t.as_str().cmp(name)).is_ok())
        .map(|u| u.rva)
        .collect()
}

/// The types whose layout differs between `baseline` and `updated`, sorted
/// by name, with the functions that use each in either build.
///
/// Images without type information ([`hotpatch_formats::TypeInfo`] other
/// than `Read`) have no layouts, so nothing is compared: the caller must
/// check [`Image::type_info`] to tell "no change" from "not checked".
pub fn compare_types<'i>(baseline: &'i Image<'_>, updated: &'i Image<'_>) -> Vec<TypeChange<'i>> {
    let mut out = Vec::new();
    let names: BTreeSet<&str> = baseline.types.iter().map(|t| t.name.as_str()).collect();
    for name in names {
        let old = baseline.layouts_named(name);
        let new = updated.layouts_named(name);
        if new.is_empty() {
            continue;
        }
        // Set aside the layouts both builds have.
        let mut left_old: Vec<&TypeLayout> = Vec::new();
        let mut left_new: Vec<&TypeLayout> = new.iter().collect();
        for o in old {
            let s = shape(o);
            match left_new.iter().position(|n| shape(n) == s) {
                Some(j) => {
                    left_new.remove(j);
                }
                None => left_old.push(o),
            }
        }
        if left_old.is_empty() || left_new.is_empty() {
            // Nothing changed, or only layouts one build alone has.
            continue;
        }
        // Pair what is left, best pair first: the most field names in
        // common, then the same kind, then the first in canonical order.
        let mut layouts = Vec::new();
        loop {
            let mut best: Option<((usize, bool), usize, usize)> = None;
            for (i, o) in left_old.iter().enumerate() {
                for (j, n) in left_new.iter().enumerate() {
                    let score = (common_names(o, n), n.kind == o.kind);
                    if best.is_none_or(|(b, _, _)| score > b) {
                        best = Some((score, i, j));
                    }
                }
            }
            let Some((_, i, j)) = best else {
                break;
            };
            let o = left_old.remove(i);
            let n = left_new.remove(j);
            layouts.push(layout_change(o, n));
        }
        for o in left_old {
            layouts.push(LayoutChange {
                old: Some(o),
                new: None,
                moved: Vec::new(),
                added: Vec::new(),
                removed: Vec::new(),
                resized: Vec::new(),
                renamed: Vec::new(),
            });
        }
        for n in left_new {
            layouts.push(LayoutChange {
                old: None,
                new: Some(n),
                moved: Vec::new(),
                added: Vec::new(),
                removed: Vec::new(),
                resized: Vec::new(),
                renamed: Vec::new(),
            });
        }
        let kind = layouts
            .first()
            .and_then(|l| l.old)
            .map_or(TypeKind::Struct, |l| l.kind);
        out.push(TypeChange {
            name,
            kind,
            layouts,
            users_baseline: users(baseline, name),
            users_updated: users(updated, name),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use hotpatch_formats::{Arch, Format, TypeUse};
    use serde::Deserialize;

    use super::*;
    use crate::testutil::{corpus, corpus_file, image, read};

    const TARGETS: [&str; 4] = [
        "x86_64-windows",
        "aarch64-windows",
        "x86_64-linux",
        "aarch64-linux",
    ];

    fn field(name: &str, offset: u64, size: u64) -> Field {
        Field {
            offset,
            bit: None,
            size,
            name: name.into(),
        }
    }

    fn layout(name: &str, size: u64, fields: Vec<Field>) -> TypeLayout {
        TypeLayout {
            name: name.into(),
            kind: TypeKind::Struct,
            size,
            fields,
        }
    }

    fn with_types(types: Vec<TypeLayout>, uses: Vec<(u64, &[&str])>) -> Image<'static> {
        let mut i = image(Format::Elf, Arch::X86_64, Vec::new(), &[]);
        i.types = types;
        i.types.sort();
        i.type_uses = uses
            .into_iter()
            .map(|(rva, t)| TypeUse {
                rva,
                types: t.iter().map(|s| s.to_string()).collect(),
            })
            .collect();
        i
    }

    #[test]
    fn growth_moves_and_renames() {
        let old = with_types(
            vec![
                layout(
                    "conn",
                    16,
                    vec![
                        field("id", 0, 4),
                        field("flags", 4, 4),
                        field("bytes", 8, 8),
                    ],
                ),
                layout("same", 8, vec![field("a", 0, 8)]),
                layout("gone", 8, vec![field("a", 0, 8)]),
            ],
            vec![
                (0x10, &["conn"]),
                (0x20, &["conn", "same"]),
                (0x30, &["same"]),
            ],
        );
        let new = with_types(
            vec![
                layout(
                    "conn",
                    24,
                    vec![
                        field("id", 0, 4),
                        field("mode", 4, 4),
                        field("limit", 8, 8),
                        field("bytes", 16, 8),
                    ],
                ),
                // Only renamed: not a layout change.
                layout("same", 8, vec![field("b", 0, 8)]),
                layout("fresh", 8, vec![field("a", 0, 8)]),
            ],
            vec![(0x10, &["conn"]), (0x40, &["conn"])],
        );
        let changes = compare_types(&old, &new);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let c = &changes[0];
        assert_eq!(
            (c.name, c.kind, c.old_size(), c.new_size()),
            ("conn", TypeKind::Struct, 16, 24)
        );
        assert_eq!(c.users_baseline, [0x10, 0x20]);
        assert_eq!(c.users_updated, [0x10, 0x40]);
        let l = &c.layouts[0];
        assert_eq!(
            l.moved,
            [FieldMove {
                name: "bytes",
                old_offset: 8,
                new_offset: 16
            }]
        );
        assert_eq!(l.added, [&field("limit", 8, 8)]);
        assert!(l.removed.is_empty() && l.resized.is_empty());
        assert_eq!(l.renamed.len(), 1);
        assert_eq!(
            c.reason(),
            "struct conn changed layout: size 16 -> 24 bytes, moved: `bytes` +8 -> +16, \
             added: `limit` at +8 (8 bytes), renamed in place (not a layout change): \
             `flags` -> `mode`; objects made before the patch keep the old layout"
        );
    }

    #[test]
    fn same_size_resized_and_removed_fields() {
        let old = with_types(
            vec![layout(
                "s",
                16,
                vec![field("a", 0, 4), field("b", 4, 4), field("c", 8, 8)],
            )],
            vec![],
        );
        let mut bits = field("a", 0, 4);
        bits.bit = Some((0, 3));
        let new = with_types(vec![layout("s", 16, vec![bits, field("c", 8, 8)])], vec![]);
        let changes = compare_types(&old, &new);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].reason(),
            "struct s changed layout: size 16 bytes (unchanged), removed: `b` at +4 (4 bytes), \
             resized: `a` 4 bytes -> 3 bits at bit 0; objects made before the patch keep the old layout"
        );
    }

    #[test]
    fn several_layouts_under_one_name() {
        let a16 = layout("node", 16, vec![field("next", 0, 8), field("v", 8, 4)]);
        let b8 = layout("node", 8, vec![field("key", 0, 8)]);
        let b16 = layout("node", 16, vec![field("key", 0, 8), field("hash", 8, 8)]);
        // The unchanged one pairs with itself; the other grew.
        let old = with_types(vec![a16.clone(), b8.clone()], vec![]);
        let new = with_types(vec![a16.clone(), b16.clone()], vec![]);
        let changes = compare_types(&old, &new);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].layouts.len(), 1);
        assert_eq!(changes[0].old_size(), 8);
        assert_eq!(changes[0].new_size(), 16);
        // A second, new layout under an existing name is not a change.
        let new = with_types(vec![a16.clone(), b8.clone(), b16.clone()], vec![]);
        assert!(compare_types(&old, &new).is_empty());
        // Neither is a layout that disappears.
        let new = with_types(vec![a16.clone()], vec![]);
        assert!(compare_types(&old, &new).is_empty());
        // Two changed, one left over.
        let old = with_types(vec![a16.clone(), b8.clone()], vec![]);
        let mut a24 = a16.clone();
        a24.size = 24;
        let new = with_types(vec![a24], vec![]);
        let c = compare_types(&old, &new);
        assert_eq!(c[0].layouts.len(), 2);
        assert!(c[0]
            .reason()
            .contains("another layout named node: the 8-byte layout no longer exists"));
    }

    /// What this test reads from a scenario's expected.toml.
    #[derive(Deserialize)]
    struct Expected {
        update: Vec<Update>,
    }

    #[derive(Deserialize)]
    struct Update {
        version: String,
        changed: Vec<String>,
        #[serde(default)]
        types_changed: Vec<String>,
        #[serde(default)]
        blockers: Vec<String>,
        #[serde(default)]
        overridden: Vec<String>,
        #[serde(default)]
        blocker_kinds: BTreeMap<String, String>,
    }

    /// The source-level name of a function: GCC clone suffixes dropped.
    fn base_name(name: &str) -> &str {
        name.split('.').next().unwrap_or(name)
    }

    /// On every scenario, update and target of the corpus, the changed types
    /// are exactly the answer key's `types_changed`; and a changed type is a
    /// blocker (or a recorded override) exactly when a function the answer
    /// key lists as changed uses it.
    #[test]
    fn corpus_types_changed_match_the_answer_key() {
        let mut scenarios: Vec<_> = std::fs::read_dir(corpus())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("expected.toml").is_file())
            .collect();
        scenarios.sort();
        let mut blocking = 0;
        for dir in scenarios {
            let scenario = dir.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(dir.join("expected.toml")).unwrap();
            let exp: Expected = toml::from_str(&text).unwrap();
            for u in &exp.update {
                for target in TARGETS {
                    let (b, bo) = read(&corpus_file(&scenario, target, "v1"));
                    let (n, no) = read(&corpus_file(&scenario, target, &u.version));
                    let base = hotpatch_formats::read::parse(&b, &bo).unwrap();
                    let upd = hotpatch_formats::read::parse(&n, &no).unwrap();
                    let what = format!("{scenario} v1->{} {target}", u.version);
                    let changes = compare_types(&base, &upd);
                    let names: Vec<&str> = changes.iter().map(|c| c.name).collect();
                    assert_eq!(names, u.types_changed, "{what}");
                    for c in &changes {
                        let users = |image: &Image<'_>, rvas: &[u64]| -> BTreeSet<String> {
                            image
                                .functions
                                .iter()
                                .filter(|f| rvas.contains(&f.rva))
                                .map(|f| base_name(&f.name).to_string())
                                .collect()
                        };
                        let mut all = users(&base, &c.users_baseline);
                        all.extend(users(&upd, &c.users_updated));
                        let blocks = all.iter().any(|f| u.changed.contains(f));
                        let object = format!("type:{}", c.name);
                        let listed = u.blockers.contains(&object) || u.overridden.contains(&object);
                        assert_eq!(blocks, listed, "{what}: {object} used by {all:?}");
                        if blocks {
                            blocking += 1;
                            assert_eq!(
                                u.blocker_kinds.get(&object).map(String::as_str),
                                Some("type-layout-changed"),
                                "{what}"
                            );
                            let reason = c.reason();
                            assert!(
                                reason.contains(&format!(
                                    "{} -> {} bytes",
                                    c.old_size(),
                                    c.new_size()
                                )) && reason
                                    .contains("objects made before the patch keep the old layout"),
                                "{reason}"
                            );
                        }
                    }
                }
            }
        }
        assert_eq!(blocking, 8, "14 and 15 block on all four targets");
    }

    #[test]
    fn heap_struct_growth_is_described_exactly() {
        for target in TARGETS {
            let (b, bo) = read(&corpus_file("14-heap-struct-grows", target, "v1"));
            let (n, no) = read(&corpus_file("14-heap-struct-grows", target, "v2"));
            let base = hotpatch_formats::read::parse(&b, &bo).unwrap();
            let upd = hotpatch_formats::read::parse(&n, &no).unwrap();
            let changes = compare_types(&base, &upd);
            assert_eq!(changes.len(), 1, "{target}");
            assert_eq!(
                changes[0].reason(),
                "struct conn changed layout: size 16 -> 24 bytes, moved: `bytes` +8 -> +16, \
                 added: `limit` at +8 (8 bytes); objects made before the patch keep the old layout",
                "{target}"
            );
            let names = |image: &Image<'_>, rvas: &[u64]| -> Vec<String> {
                let mut v: Vec<String> = rvas
                    .iter()
                    .map(|r| {
                        let f = image.functions.iter().find(|f| f.rva == *r).unwrap();
                        base_name(&f.name).to_string()
                    })
                    .collect();
                v.sort();
                v
            };
            let want = ["conn_accept", "conn_bytes", "conn_open", "conn_recv"];
            assert_eq!(names(&base, &changes[0].users_baseline), want, "{target}");
            assert_eq!(names(&upd, &changes[0].users_updated), want, "{target}");
        }
        let _ = Path::new("");
    }
}

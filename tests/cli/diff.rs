//! `hotpatch diff` against the corpus answer key: for every scenario, every
//! update (cumulative against v1) and all four targets, the changed, added
//! and removed sets, the changed functions marked line-only, the data sets,
//! the verdict and the blockers must equal `expected.toml` exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::common::{expected, hotpatch_ok, image_files, scenarios, Sets, TARGETS};

#[derive(Debug, Deserialize)]
pub struct DiffJson {
    pub functions: Vec<EntryJson>,
    pub data: Vec<EntryJson>,
    pub hotpatchable: bool,
    pub blockers: Vec<BlockerJson>,
    #[serde(default)]
    pub types: Vec<TypeJson>,
    #[serde(default)]
    pub overridden: Vec<OverriddenJson>,
    #[serde(default)]
    pub unused_overrides: Vec<AllowJson>,
}

#[derive(Debug, Deserialize)]
pub struct TypeJson {
    pub name: String,
    pub blocking: bool,
    pub changed_users: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct OverriddenJson {
    pub blocker: BlockerJson,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
pub struct AllowJson {
    pub object: String,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
pub struct EntryJson {
    pub name: String,
    pub unit: Option<String>,
    pub status: String,
    pub baseline_rva: Option<u64>,
    pub updated_rva: Option<u64>,
    pub reason: Option<String>,
    pub baseline_size: Option<u64>,
    #[serde(default)]
    pub lines_only: bool,
    #[serde(default)]
    pub line_shift: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct BlockerJson {
    pub object: String,
    pub kind: String,
    pub reason: String,
}

/// The image (and PDB, unless the scenario ships none) of one version of a
/// scenario for a target.
fn image_args(dir: &Path, target: &str, version: &str, side: &str) -> Vec<String> {
    let (image, pdb) = image_files(dir, target, version);
    let mut args = vec![format!("--{side}"), image.display().to_string()];
    if let Some(pdb) = pdb {
        args.extend([format!("--{side}-pdb"), pdb.display().to_string()]);
    }
    args
}

/// Run `hotpatch diff --json` on v1 → `version`.
pub fn run_diff(dir: &Path, target: &str, version: &str) -> DiffJson {
    run_diff_allowing(dir, target, version, &[])
}

/// [`run_diff`] with reviewed overrides (`--allow OBJECT --reason TEXT`).
pub fn run_diff_allowing(
    dir: &Path,
    target: &str,
    version: &str,
    allow: &[crate::common::Allow],
) -> DiffJson {
    let mut args = vec!["diff".to_string(), "--json".to_string()];
    args.extend(image_args(dir, target, "v1", "baseline"));
    args.extend(image_args(dir, target, version, "updated"));
    for a in allow {
        args.extend([
            "--allow".to_string(),
            a.object.clone(),
            "--reason".to_string(),
            a.reason.clone(),
        ]);
    }
    serde_json::from_str(&hotpatch_ok(&args)).expect("diff --json is not JSON")
}

/// The expected.toml spelling of a name: `file.c:name` becomes `file:name`
/// (unit stem), plain names stay plain.
fn canon_expected(name: &str) -> String {
    match name.split_once(':') {
        Some((file, n)) => {
            let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
            format!("{stem}:{n}")
        }
        None => name.to_string(),
    }
}

/// Our spelling, comparable with [`canon_expected`]: qualified by unit only
/// when the bare name is ambiguous among `all`.
fn canon_ours(e: &EntryJson, ambiguous: &BTreeSet<String>) -> String {
    match (&e.unit, ambiguous.contains(&e.name)) {
        (Some(u), true) => format!("{u}:{}", e.name),
        _ => e.name.clone(),
    }
}

fn ambiguous_names(entries: &[EntryJson]) -> BTreeSet<String> {
    let mut seen: BTreeMap<&str, BTreeSet<Option<&str>>> = BTreeMap::new();
    for e in entries {
        seen.entry(&e.name).or_default().insert(e.unit.as_deref());
    }
    seen.into_iter()
        .filter(|(_, u)| u.len() > 1)
        .map(|(n, _)| n.to_string())
        .collect()
}

fn set_of(entries: &[EntryJson], status: &str) -> BTreeSet<String> {
    let amb = ambiguous_names(entries);
    entries
        .iter()
        .filter(|e| e.status == status)
        .map(|e| canon_ours(e, &amb))
        .collect()
}

pub(crate) fn expected_set(v: &[String]) -> BTreeSet<String> {
    v.iter().map(|n| canon_expected(n)).collect()
}

/// A blocker's object spelt like the expected ones: an image (the diff
/// names it by the path it was given) by its file name, `v1.dll`.
fn blocker_object(object: &str) -> &str {
    match object.rsplit_once('/') {
        Some((_, file)) if file.ends_with(".dll") || file.ends_with(".so") => file,
        _ => object,
    }
}

/// Blocker objects in our output, spelt like the expected ones.
fn blocker_set(d: &DiffJson) -> BTreeSet<String> {
    let mut all: Vec<&EntryJson> = d.functions.iter().collect();
    all.extend(&d.data);
    d.blockers
        .iter()
        .map(|b| blocker_object(&b.object))
        .map(|object| {
            // "unit:name" → "name" when the name is unique ("type:NAME"
            // stays as it is).
            match object.split_once(':').filter(|(u, _)| *u != "type") {
                Some((_, n))
                    if all
                        .iter()
                        .filter(|e| e.name == n)
                        .map(|e| &e.unit)
                        .collect::<BTreeSet<_>>()
                        .len()
                        <= 1 =>
                {
                    n.to_string()
                }
                _ => object.to_string(),
            }
        })
        .collect()
}

/// Every mismatch between our diff and the answer key for one target.
fn mismatches(target: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for dir in scenarios() {
        let exp = expected(&dir);
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        for u in &exp.update {
            let want: Sets = resolve(&u.sets, u.targets.get(target));
            let d = run_diff_allowing(&dir, target, &u.version, &want.allow);
            let amb = ambiguous_names(&d.functions);
            let got_lines: BTreeSet<String> = d
                .functions
                .iter()
                .filter(|e| e.lines_only)
                .map(|e| canon_ours(e, &amb))
                .collect();
            if let Some(e) = d
                .functions
                .iter()
                .find(|e| e.lines_only && (e.status != "changed" || e.line_shift.is_none()))
            {
                bad.push(format!(
                    "{name} v1→{} {target}: {} is marked lines_only but is {} with line shift {:?}",
                    u.version, e.name, e.status, e.line_shift
                ));
            }
            let checks: [(&str, BTreeSet<String>, BTreeSet<String>); 6] = [
                ("lines_only", got_lines, expected_set(&want.lines_only)),
                (
                    "changed",
                    set_of(&d.functions, "changed"),
                    expected_set(&want.changed),
                ),
                (
                    "added",
                    set_of(&d.functions, "added"),
                    expected_set(&want.added),
                ),
                (
                    "removed",
                    set_of(&d.functions, "removed"),
                    expected_set(&want.removed),
                ),
                (
                    "data_changed",
                    set_of(&d.data, "changed"),
                    expected_set(&want.data_changed),
                ),
                (
                    "data_added",
                    set_of(&d.data, "added"),
                    expected_set(&want.data_added),
                ),
            ];
            for (what, got, want) in checks {
                if got != want {
                    bad.push(format!(
                        "{name} v1→{} {target}: {what}: got {got:?}, expected {want:?}",
                        u.version
                    ));
                }
            }
            if d.hotpatchable != want.hotpatchable {
                bad.push(format!(
                    "{name} v1→{} {target}: hotpatchable {} expected {}; blockers {:?}",
                    u.version,
                    d.hotpatchable,
                    want.hotpatchable,
                    d.blockers.iter().map(|b| &b.reason).collect::<Vec<_>>()
                ));
            }
            let got_t: BTreeSet<String> = d.types.iter().map(|t| t.name.clone()).collect();
            let want_t = expected_set(&want.types_changed);
            if got_t != want_t {
                bad.push(format!(
                    "{name} v1→{} {target}: types changed {got_t:?}, expected {want_t:?}",
                    u.version
                ));
            }
            let got_o: BTreeSet<String> = d
                .overridden
                .iter()
                .map(|o| o.blocker.object.clone())
                .collect();
            let want_o = expected_set(&want.overridden);
            if got_o != want_o {
                bad.push(format!(
                    "{name} v1→{} {target}: overridden {got_o:?}, expected {want_o:?}",
                    u.version
                ));
            }
            if let Some(o) = d.overridden.iter().find(|o| {
                !want
                    .allow
                    .iter()
                    .any(|a| a.object == o.blocker.object && a.reason == o.reason)
            }) {
                bad.push(format!(
                    "{name} v1→{} {target}: override of {} recorded with another reason: {:?}",
                    u.version, o.blocker.object, o.reason
                ));
            }
            let got_b = blocker_set(&d);
            let want_b = expected_set(&want.blockers);
            if got_b != want_b {
                bad.push(format!(
                    "{name} v1→{} {target}: blockers {got_b:?}, expected {want_b:?}",
                    u.version
                ));
            }
            // The kind of each blocker the key gives one for: one of the
            // object's blockers is of that kind (an image can be blocked
            // for two reasons, no data symbols and no type information).
            for (object, kind) in &want.blocker_kinds {
                if !want.blockers.contains(object) {
                    continue;
                }
                let kinds: Vec<&String> = d
                    .blockers
                    .iter()
                    .filter(|b| {
                        let o = blocker_object(&b.object);
                        o == object || o.rsplit_once(':').is_some_and(|(_, n)| n == object)
                    })
                    .map(|b| &b.kind)
                    .collect();
                if !kinds.contains(&kind) {
                    bad.push(format!(
                        "{name} v1→{} {target}: blocker {object} should be of kind {kind}, got {kinds:?}",
                        u.version
                    ));
                }
            }
        }
    }
    bad
}

pub(crate) fn resolve(base: &Sets, o: Option<&crate::common::SetsOverride>) -> Sets {
    let mut s = base.clone();
    if let Some(o) = o {
        let pick =
            |v: &Option<Vec<String>>, d: &Vec<String>| v.clone().unwrap_or_else(|| d.clone());
        s.changed = pick(&o.changed, &base.changed);
        s.added = pick(&o.added, &base.added);
        s.removed = pick(&o.removed, &base.removed);
        s.data_changed = pick(&o.data_changed, &base.data_changed);
        s.data_added = pick(&o.data_added, &base.data_added);
        s.blockers = pick(&o.blockers, &base.blockers);
        s.types_changed = pick(&o.types_changed, &base.types_changed);
        s.overridden = pick(&o.overridden, &base.overridden);
        s.lines_only = pick(&o.lines_only, &base.lines_only);
        s.blocker_kinds = o
            .blocker_kinds
            .clone()
            .unwrap_or_else(|| base.blocker_kinds.clone());
        s.hotpatchable = o.hotpatchable.unwrap_or(base.hotpatchable);
    }
    s
}

fn check_target(target: &str) {
    assert!(TARGETS.contains(&target));
    let bad = mismatches(target);
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn diff_matches_expected_x86_64_windows() {
    check_target("x86_64-windows");
}

#[test]
fn diff_matches_expected_aarch64_windows() {
    check_target("aarch64-windows");
}

#[test]
fn diff_matches_expected_x86_64_linux() {
    check_target("x86_64-linux");
}

#[test]
fn diff_matches_expected_aarch64_linux() {
    check_target("aarch64-linux");
}

fn scenario(fragment: &str) -> std::path::PathBuf {
    scenarios()
        .into_iter()
        .find(|d| d.to_string_lossy().contains(fragment))
        .unwrap_or_else(|| panic!("no scenario matching {fragment}"))
}

#[test]
fn unchanged_rebuild_has_zero_changes_on_every_target() {
    let dir = scenario("relink-order");
    for target in TARGETS {
        let d = run_diff(&dir, target, "v2");
        let moved: Vec<&EntryJson> = d
            .functions
            .iter()
            .chain(&d.data)
            .filter(|e| e.status != "unchanged")
            .collect();
        assert!(moved.is_empty(), "{target}: {moved:?}");
        assert!(d.hotpatchable && d.blockers.is_empty(), "{target}");
        // The rebuild really moved code, so this is not a trivial pass.
        assert!(
            d.functions.iter().any(|e| e.baseline_rva != e.updated_rva),
            "{target}: no function moved; the scenario does not test address shifts"
        );
    }
}

#[test]
fn struct_growth_is_blocked_by_the_global() {
    let dir = scenario("struct-grows");
    let exp = expected(&dir);
    let want = &exp.update[0].sets.blockers;
    assert_eq!(want.len(), 1, "the scenario names one blocking global");
    for target in TARGETS {
        let d = run_diff(&dir, target, "v2");
        assert!(!d.hotpatchable, "{target}");
        let b = d
            .blockers
            .iter()
            .find(|b| b.kind == "writable-data-resized")
            .unwrap_or_else(|| panic!("{target}: no resize blocker: {:?}", d.blockers));
        assert!(b.object.ends_with(want[0].as_str()), "{target}: {b:?}");
        assert!(
            b.reason.contains(want[0].as_str()) && b.reason.contains("restart"),
            "{b:?}"
        );
    }
}

#[test]
fn duplicate_static_reports_only_the_right_unit() {
    let dir = scenario("duplicate-static");
    let exp = expected(&dir);
    let want = expected_set(&exp.update[0].sets.changed);
    let qualified: Vec<&String> = want.iter().filter(|n| n.contains(':')).collect();
    assert_eq!(
        qualified.len(),
        1,
        "expected.toml names one unit-qualified static: {want:?}"
    );
    let (unit, name) = qualified[0].split_once(':').unwrap();
    for target in TARGETS {
        let d = run_diff(&dir, target, "v2");
        let same_name: Vec<&EntryJson> = d.functions.iter().filter(|e| e.name == name).collect();
        assert_eq!(
            same_name.len(),
            2,
            "{target}: both statics must be matched: {same_name:?}"
        );
        for e in same_name {
            let is_changed_unit = e.unit.as_deref() == Some(unit);
            assert_eq!(e.status == "changed", is_changed_unit, "{target}: {e:?}");
        }
    }
}

#[test]
fn diff_output_is_deterministic() {
    let dir = scenario("cumulative");
    for target in TARGETS {
        let mut args = vec!["diff".to_string(), "--json".to_string()];
        args.extend(image_args(&dir, target, "v1", "baseline"));
        args.extend(image_args(&dir, target, "v3", "updated"));
        let a = hotpatch_ok(&args);
        let b = hotpatch_ok(&args);
        assert_eq!(a, b, "{target}");
    }
}

#[test]
fn changed_rodata_table_is_named_in_the_users_reasons() {
    let dir = scenario("rodata-table");
    let exp = expected(&dir);
    let table = &exp.update[0].sets.data_changed;
    assert_eq!(table.len(), 1, "{table:?}");
    for target in TARGETS {
        let d = run_diff(&dir, target, "v2");
        let t = d
            .data
            .iter()
            .find(|e| e.name == table[0])
            .unwrap_or_else(|| panic!("{target}: no data entry {}", table[0]));
        assert_eq!(t.status, "changed", "{target}");
        assert!(
            t.reason
                .as_deref()
                .unwrap_or("")
                .contains("initial value differs"),
            "{t:?}"
        );
        // On ELF the users' code is byte-identical: the table is the only
        // reason they change, and the reason must say so.
        if target.ends_with("-linux") {
            for f in d.functions.iter().filter(|f| f.status == "changed") {
                let r = f.reason.as_deref().unwrap_or("");
                assert!(
                    r.contains("read-only object") && r.contains(&table[0]),
                    "{target}: {}: {r}",
                    f.name
                );
            }
        }
    }
}

/// Every GCC clone the corpus really contains folds into its parent: no
/// clone name reaches the report, and the parent's size counts its parts.
#[test]
fn gcc_clones_fold_into_their_parents() {
    #[derive(Deserialize)]
    struct Syms {
        functions: Vec<Sym>,
    }
    #[derive(Deserialize)]
    struct Sym {
        name: String,
        size: u64,
    }
    let mut folded = 0;
    for dir in scenarios() {
        let exp = expected(&dir);
        for target in ["x86_64-linux", "aarch64-linux"] {
            let v1 = dir.join("bin").join(target).join("v1.so");
            let syms: Syms = serde_json::from_str(&hotpatch_ok([
                "symbols",
                "--json",
                &v1.display().to_string(),
            ]))
            .unwrap();
            let d = run_diff(&dir, target, &exp.update[0].version);
            for e in &d.functions {
                assert!(
                    !e.name.contains('.'),
                    "{target}: clone name in report: {e:?}"
                );
            }
            for clone in syms.functions.iter().filter(|f| f.name.contains('.')) {
                let parent = clone.name.split('.').next().unwrap();
                let parts: u64 = syms
                    .functions
                    .iter()
                    .filter(|f| f.name == parent || f.name.starts_with(&format!("{parent}.")))
                    .map(|f| f.size)
                    .sum();
                let entry = d
                    .functions
                    .iter()
                    .find(|e| e.name == parent)
                    .unwrap_or_else(|| panic!("{target}: {} has no parent entry", clone.name));
                assert_eq!(entry.baseline_size, Some(parts), "{target}: {}", clone.name);
                folded += 1;
            }
        }
    }
    // hb_echo.cold, align_up.constprop, digest.part, event_bytes.isra (per the corpus report).
    assert!(folded >= 6, "only {folded} clones met");
}

#[test]
fn reasons_show_the_differing_instructions() {
    let dir = scenario("tiny-function");
    let d = run_diff(&dir, "x86_64-linux", "v2");
    let f = d
        .functions
        .iter()
        .find(|f| f.name == "strict_mode")
        .unwrap();
    assert_eq!(
        f.reason.as_deref(),
        Some("different instruction at +0x0: `xor eax,eax` → `mov eax,1`")
    );
    let d = run_diff(&dir, "aarch64-linux", "v2");
    let f = d
        .functions
        .iter()
        .find(|f| f.name == "strict_mode")
        .unwrap();
    let r = f.reason.as_deref().unwrap_or("");
    assert!(
        r.starts_with("different instruction at +0x0: `") && r.contains("#0x1"),
        "{r}"
    );
}

#[test]
fn added_function_carries_only_the_updated_side() {
    let dir = scenario("new-helper");
    let exp = expected(&dir);
    let added = &exp.update[0].sets.added;
    assert_eq!(added.len(), 1, "{added:?}");
    for target in TARGETS {
        let d = run_diff(&dir, target, "v2");
        let f = d
            .functions
            .iter()
            .find(|f| f.name == added[0])
            .unwrap_or_else(|| panic!("{target}: {} missing", added[0]));
        assert_eq!(f.status, "added", "{target}");
        assert!(
            f.baseline_rva.is_none() && f.updated_rva.is_some(),
            "{target}: {f:?}"
        );
        assert!(f.baseline_size.is_none(), "{target}: {f:?}");
    }
}

/// The line-only functions of `18-line-shift` carry their line shift in the
/// JSON (5 above the fix's own added line, 6 below it), the fix carries its
/// own, and the text report counts and lists them apart, on all four
/// targets.
#[test]
fn line_only_changes_are_marked_with_their_shift() {
    let dir = scenario("line-shift");
    let want = [
        ("cfg_set_port", Some(5), true),
        ("cfg_set_timeout", Some(5), false),
        ("cfg_set_level", Some(6), true),
        ("cfg_set_retries", Some(6), true),
    ];
    for target in TARGETS {
        let d = run_diff(&dir, target, "v2");
        for (name, shift, only) in want {
            let f = d
                .functions
                .iter()
                .find(|f| f.name == name)
                .unwrap_or_else(|| panic!("{target}: {name} missing"));
            assert_eq!(
                (f.status.as_str(), f.line_shift, f.lines_only),
                ("changed", shift, only),
                "{target}: {name}"
            );
        }
        // Unchanged functions carry no shift, even where their line moved.
        let fail = d.functions.iter().find(|f| f.name == "cfg_fail").unwrap();
        assert_eq!(
            (fail.status.as_str(), fail.line_shift, fail.lines_only),
            ("unchanged", None, false),
            "{target}"
        );
        let mut args = vec!["diff".to_string()];
        let bin = dir.join("bin").join(target);
        for (side, v) in [("baseline", "v1"), ("updated", "v2")] {
            if target.ends_with("-windows") {
                args.extend([
                    format!("--{side}"),
                    bin.join(format!("{v}.dll")).display().to_string(),
                    format!("--{side}-pdb"),
                    bin.join(format!("{v}.pdb")).display().to_string(),
                ]);
            } else {
                args.extend([
                    format!("--{side}"),
                    bin.join(format!("{v}.so")).display().to_string(),
                ]);
            }
        }
        let text = hotpatch_ok(&args);
        assert!(
            text.contains("functions: 4 changed (3 in line numbers only), 0 added, 0 removed,"),
            "{target}: {text}"
        );
        assert!(
            text.contains("\nchanged functions (1):\n  cfg_set_timeout ")
                && text.contains(
                    "\nchanged in line numbers only, left out of packages by default (3):\n"
                ),
            "{target}: {text}"
        );
        let port = text
            .lines()
            .find(|l| l.trim_start().starts_with("cfg_set_port "))
            .unwrap_or_default();
        assert!(
            port.contains("line numbers only (lines moved by +5): different instruction at +"),
            "{target}: {port}"
        );
    }
}

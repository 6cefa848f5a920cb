//! The stripped-ELF fallback: function boundaries from `.eh_frame`, names
//! from `.dynsym`; and diffs of stripped pairs, whose functions without
//! names are matched by structure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use hotpatch_builder::key::{split_clone, unit_stem};
use serde::Deserialize;

use crate::common::{corpus_images, hotpatch_ok, run_tool, scenarios, shipped_stripped, versions};

#[derive(Debug, Deserialize)]
struct SymbolsJson {
    stripped: bool,
    functions: Vec<FunctionJson>,
}

#[derive(Debug, Deserialize)]
struct FunctionJson {
    name: String,
    rva: u64,
    size: u64,
}

fn symbols(path: &std::path::Path) -> SymbolsJson {
    let out = hotpatch_ok(["symbols", "--json", &path.display().to_string()]);
    serde_json::from_str(&out).expect("JSON")
}

/// `[start, end)` of every FDE, as `llvm-dwarfdump-19 --eh-frame` prints them.
pub(crate) fn fde_ranges(path: &std::path::Path) -> BTreeSet<(u64, u64)> {
    let text = run_tool(
        "llvm-dwarfdump-19",
        &["--eh-frame", &path.display().to_string()],
    );
    text.lines()
        .filter(|l| l.contains(" FDE "))
        .map(|l| {
            let pc = l.split("pc=").nth(1).expect("pc=");
            let (a, b) = pc.split_once("...").expect("range");
            let a = u64::from_str_radix(a.trim(), 16).expect("hex");
            let b = u64::from_str_radix(b.trim(), 16).expect("hex");
            (a, b)
        })
        .filter(|(a, b)| b > a)
        .collect()
}

#[test]
fn stripped_fallback_finds_every_eh_frame_function() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    // A scenario shipped stripped has no unstripped image to compare with
    // here (its images are checked against the dumpers in `symbols`).
    for img in corpus_images().iter().filter(|i| i.is_elf() && !i.stripped) {
        let stripped = dir.path().join(format!(
            "{}-{}-{}.so",
            img.scenario, img.target, img.version
        ));
        run_tool(
            "llvm-strip-19",
            &[
                "--strip-all",
                "-o",
                &stripped.display().to_string(),
                &img.path.display().to_string(),
            ],
        );
        let full = symbols(&img.path);
        assert!(!full.stripped);
        let ours = symbols(&stripped);
        assert!(
            ours.stripped,
            "{}: not seen as stripped",
            stripped.display()
        );

        let fdes = fde_ranges(&stripped);
        assert!(!fdes.is_empty(), "{}: no FDEs", stripped.display());
        let found: BTreeSet<(u64, u64)> = ours
            .functions
            .iter()
            .map(|f| (f.rva, f.rva + f.size))
            .collect();
        assert_eq!(found, fdes, "{}", img.path.display());

        // Every sized function of the unstripped image is found at the same
        // range, and exported ones keep their names.
        for f in full.functions.iter().filter(|f| f.size > 0) {
            let hit = ours
                .functions
                .iter()
                .find(|g| g.rva == f.rva && g.size == f.size)
                .unwrap_or_else(|| {
                    panic!(
                        "{}: {} at {:#x} lost when stripped",
                        img.path.display(),
                        f.name,
                        f.rva
                    )
                });
            if !hit.name.starts_with("sub_") {
                assert_eq!(hit.name, f.name, "{}", img.path.display());
            }
        }
        checked += 1;
    }
    assert!(checked >= 26, "only {checked} ELF images checked");
}

/// What these tests read of `hotpatch diff --json`.
#[derive(Debug, Deserialize)]
struct DiffJson {
    functions: Vec<DiffEntry>,
    structural: Option<StructuralJson>,
}

#[derive(Debug, Deserialize)]
struct DiffEntry {
    name: String,
    unit: Option<String>,
    status: String,
    baseline_rva: Option<u64>,
    updated_rva: Option<u64>,
    #[serde(rename = "match")]
    matched: Option<MatchJson>,
}

#[derive(Debug, Deserialize)]
struct MatchJson {
    how: String,
    confidence: String,
    updated_name: String,
    evidence: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct StructuralJson {
    matched: usize,
    high: usize,
    medium: usize,
    low: usize,
    unmatched_baseline: Vec<String>,
    unmatched_update: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct NamedSymbols {
    functions: Vec<NamedFunction>,
}

#[derive(Debug, Deserialize)]
struct NamedFunction {
    name: String,
    rva: u64,
    unit: Option<String>,
    visibility: String,
}

fn diff_json(a: &Path, b: &Path) -> DiffJson {
    let out = hotpatch_ok([
        "diff",
        "--json",
        "--baseline",
        &a.display().to_string(),
        "--updated",
        &b.display().to_string(),
    ]);
    serde_json::from_str(&out).expect("JSON")
}

/// The diff's key (`unit:name` for local symbols) of every function part
/// of an unstripped image, by the RVA it starts at: what a stripped
/// function at that address is. Clone suffixes fold into the parent, and
/// a local clone of a global parent is global, as the diff keys them.
fn keys_by_rva(path: &Path) -> BTreeMap<u64, String> {
    let out = hotpatch_ok(["symbols", "--json", &path.display().to_string()]);
    let syms: NamedSymbols = serde_json::from_str(&out).expect("JSON");
    let globals: BTreeSet<&str> = syms
        .functions
        .iter()
        .filter(|f| f.visibility != "local")
        .map(|f| split_clone(&f.name).0)
        .collect();
    syms.functions
        .iter()
        .map(|f| {
            let (base, signature) = split_clone(&f.name);
            // A local clone of a global parent joins the global group.
            let local =
                f.visibility == "local" && (signature.is_empty() || !globals.contains(base));
            let key = match (&f.unit, local) {
                (Some(u), true) => format!("{}:{base}", unit_stem(u)),
                _ => base.to_string(),
            };
            (f.rva, key)
        })
        .collect()
}

/// Functions that a stripped diff of the corpus reports changed and the
/// unstripped diff does not, for both orders of each pair of versions:
/// each refers to writable data (`.data`, `.bss`) that only the symbol
/// table names. Stripped, that data is anonymous bytes, cut into blocks
/// only where code refers to it, and a block's extent changes when a
/// neighbour moves, grows or is added. (The diff blocks every stripped
/// pair with `no-data-symbols` for that reason.)
const DATA_ONLY: [(&str, &str, &[&str]); 5] = [
    // A new global sits between `pin_logins`'s counter and the next one.
    ("07-new-global", "x86_64-linux", &["pin_logins"]),
    ("07-new-global", "aarch64-linux", &["pin_logins"]),
    // The `session` object grows: `sess_frames` reads a field of it.
    ("08-struct-grows", "aarch64-linux", &["sess_frames"]),
    // The update links the globals in another order.
    (
        "12-relink-order",
        "x86_64-linux",
        &["enc_pair", "rec_byte", "rec_crc", "rec_encode"],
    ),
    (
        "12-relink-order",
        "aarch64-linux",
        &["enc_pair", "rec_byte", "rec_crc", "rec_encode"],
    ),
];

/// Every corpus scenario stripped (`llvm-strip-19 --strip-all`, here), on
/// both ELF targets, every ordered pair of versions: every function the
/// stripped diff pairs without names is the same function (by the
/// unstripped images' symbols at the same addresses), nothing the
/// unstripped diff matches is left added or removed, and the changed sets
/// are equal, but for [`DATA_ONLY`].
#[test]
fn stripped_corpus_pairs_match_like_the_unstripped_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut pairs = 0;
    let mut structural = 0;
    for scenario in scenarios() {
        if shipped_stripped(&scenario) {
            // No unstripped images to take the truth from.
            continue;
        }
        let name = scenario.file_name().unwrap().to_string_lossy().into_owned();
        let versions = versions(&scenario);
        for target in ["x86_64-linux", "aarch64-linux"] {
            let bin = scenario.join("bin").join(target);
            let named = |v: &str| bin.join(format!("{v}.so"));
            let stripped = |v: &str| dir.path().join(format!("{name}-{target}-{v}.so"));
            for v in &versions {
                run_tool(
                    "llvm-strip-19",
                    &[
                        "--strip-all",
                        "-o",
                        &stripped(v).display().to_string(),
                        &named(v).display().to_string(),
                    ],
                );
            }
            let extra: BTreeSet<String> = DATA_ONLY
                .iter()
                .filter(|(s, t, _)| *s == name && *t == target)
                .flat_map(|(_, _, f)| f.iter().map(|f| f.to_string()))
                .collect();
            for a in &versions {
                for b in versions.iter().filter(|b| *b != a) {
                    let what = format!("{name} {target} {a}→{b}");
                    let (ka, kb) = (keys_by_rva(&named(a)), keys_by_rva(&named(b)));
                    let truth = diff_json(&named(a), &named(b));
                    let got = diff_json(&stripped(a), &stripped(b));
                    assert!(truth.structural.is_none(), "{what}");
                    // Without a function named after its address (every
                    // function exported), nothing is matched by structure.
                    let none = StructuralJson::default();
                    let summary = match &got.structural {
                        Some(s) => s,
                        None => {
                            assert!(
                                got.functions.iter().all(|e| !e.name.starts_with("sub_")),
                                "{what}"
                            );
                            &none
                        }
                    };
                    let key = |e: &DiffEntry| match &e.unit {
                        Some(u) => format!("{u}:{}", e.name),
                        None => e.name.clone(),
                    };
                    let at = |keys: &BTreeMap<u64, String>, rva: Option<u64>| {
                        rva.and_then(|r| keys.get(&r).cloned())
                            .unwrap_or_else(|| panic!("{what}: no symbol at {rva:?}"))
                    };
                    // Every structural pair is one function.
                    let mut matched = 0;
                    for e in &got.functions {
                        let Some(m) = &e.matched else {
                            continue;
                        };
                        matched += 1;
                        assert_eq!(
                            at(&ka, e.baseline_rva),
                            at(&kb, e.updated_rva),
                            "{what}: {} paired with {} ({}, {}: {:?})",
                            e.name,
                            m.updated_name,
                            m.how,
                            m.confidence,
                            m.evidence
                        );
                        assert!(!m.evidence.is_empty(), "{what}");
                    }
                    assert_eq!(summary.matched, matched, "{what}");
                    assert_eq!(
                        summary.high + summary.medium + summary.low,
                        matched,
                        "{what}"
                    );
                    structural += matched;
                    // Nothing the unstripped diff matched is left over.
                    let kept: BTreeSet<String> = truth
                        .functions
                        .iter()
                        .filter(|e| e.status == "changed" || e.status == "unchanged")
                        .map(key)
                        .collect();
                    let left: Vec<String> = got
                        .functions
                        .iter()
                        .filter_map(|e| match e.status.as_str() {
                            "removed" => Some(at(&ka, e.baseline_rva)),
                            "added" => Some(at(&kb, e.updated_rva)),
                            _ => None,
                        })
                        .filter(|k| kept.contains(k))
                        .collect();
                    assert!(left.is_empty(), "{what}: left unmatched: {left:?}");
                    let unmatched =
                        summary.unmatched_baseline.len() + summary.unmatched_update.len();
                    assert!(
                        unmatched
                            <= got
                                .functions
                                .iter()
                                .filter(|e| e.status == "added" || e.status == "removed")
                                .count(),
                        "{what}"
                    );
                    // The same changed functions, but for DATA_ONLY.
                    let want: BTreeSet<String> = truth
                        .functions
                        .iter()
                        .filter(|e| e.status == "changed")
                        .map(key)
                        .collect();
                    let found: BTreeSet<String> = got
                        .functions
                        .iter()
                        .filter(|e| e.status == "changed")
                        .map(|e| at(&ka, e.baseline_rva))
                        .collect();
                    let missed: Vec<&String> = want.difference(&found).collect();
                    assert!(missed.is_empty(), "{what}: missed {missed:?}");
                    let more: BTreeSet<String> = found.difference(&want).cloned().collect();
                    assert_eq!(more, extra, "{what}: changed beyond the unstripped diff");
                    pairs += 1;
                }
            }
        }
    }
    assert!(pairs >= 72, "only {pairs} stripped pairs checked");
    // 94 with the 16 scenarios of this writing; more scenarios, more.
    assert!(structural >= 94, "only {structural} structural matches");
}

/// The text report of a stripped pair: the structural summary, and each
/// structural match with how, how sure, and its evidence.
#[test]
fn stripped_text_report_shows_structural_matches_and_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let bin = crate::common::root().join("corpus/01-bounds-check/bin/x86_64-linux");
    let mut paths = Vec::new();
    for v in ["v1", "v2"] {
        let out = dir.path().join(format!("{v}.so"));
        run_tool(
            "llvm-strip-19",
            &[
                "--strip-all",
                "-o",
                &out.display().to_string(),
                &bin.join(format!("{v}.so")).display().to_string(),
            ],
        );
        paths.push(out.display().to_string());
    }
    let text = hotpatch_ok(["diff", "--baseline", &paths[0], "--updated", &paths[1]]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"without names: 2 matched by structure (1 high, 1 medium, 0 low confidence); left unmatched: 0 in the baseline (removed), 0 in the update (added)"), "{text}");
    // hb_echo's .cold part, at the same address in both builds.
    assert!(lines.contains(&"  sub_100d → sub_100d  changed    call-graph (medium): call-graph: function reference #1 of `hb_echo`, in both builds; address-order: between `sub_1000` and `hb_load` in both builds, nothing matched in between; similar: 7 → 10 instructions, 2 → 3 function references, 0 of 0 named references shared"), "{text}");
    assert!(lines.contains(&"matched by structure (2):"), "{text}");
}

/// The functions a JSON diff reports as not unchanged, with their status
/// (and line shift, for a change in line numbers only), and the verdict.
fn changes(out: &str) -> (BTreeSet<(String, String)>, bool) {
    let v: serde_json::Value = serde_json::from_str(out).expect("JSON");
    let set = v["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .filter(|e| e["status"] != "unchanged")
        .map(|e| {
            // A change in line numbers only says so: the debug file gives
            // the lines.
            let status = e["status"].as_str().unwrap();
            let status = match (&e["lines_only"], &e["line_shift"]) {
                (serde_json::Value::Bool(true), shift) => format!("{status}, lines only {shift}"),
                _ => status.to_string(),
            };
            (e["name"].as_str().unwrap().to_string(), status)
        })
        .collect();
    (set, v["hotpatchable"].as_bool().expect("verdict"))
}

/// Distributions ship stripped images and separate debug files: with the
/// debug files (given, or found by build-id), a stripped pair diffs exactly
/// like the unstripped one, line-only changes included; a debug file of
/// another build is refused.
#[test]
fn stripped_images_with_debug_files_diff_like_unstripped_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for (target, objcopy) in [
        ("x86_64-linux", "objcopy"),
        ("aarch64-linux", "aarch64-linux-gnu-objcopy"),
    ] {
        for scenario in [
            "08-struct-grows",
            "13-cumulative-series",
            "05-jump-table",
            "18-line-shift",
        ] {
            let bin = crate::common::root()
                .join("corpus")
                .join(scenario)
                .join("bin")
                .join(target);
            let (v1, v2) = (bin.join("v1.so"), bin.join("v2.so"));
            let p = |n: &str| d.join(format!("{scenario}-{target}-{n}"));
            for (v, n) in [(&v1, "v1"), (&v2, "v2")] {
                let s = |x: &Path| x.display().to_string();
                run_tool(
                    objcopy,
                    &["--only-keep-debug", &s(v), &s(&p(&format!("{n}.debug")))],
                );
                run_tool(objcopy, &["--strip-all", &s(v), &s(&p(&format!("{n}.so")))]);
            }
            let want = changes(&hotpatch_ok([
                "diff",
                "--json",
                "--baseline",
                v1.to_str().unwrap(),
                "--updated",
                v2.to_str().unwrap(),
            ]));
            let got = changes(&hotpatch_ok([
                "diff",
                "--json",
                "--baseline",
                p("v1.so").to_str().unwrap(),
                "--baseline-debug",
                p("v1.debug").to_str().unwrap(),
                "--updated",
                p("v2.so").to_str().unwrap(),
                "--updated-debug",
                p("v2.debug").to_str().unwrap(),
            ]));
            assert_eq!(got, want, "{scenario} {target}");
            // Found by build-id in a debug directory.
            let dir = d.join(format!("debug-{scenario}-{target}"));
            for n in ["v1", "v2"] {
                let text = run_tool("readelf", &["-n", p(&format!("{n}.so")).to_str().unwrap()]);
                let id = text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("Build ID: "))
                    .expect("build-id")
                    .to_string();
                let place = dir.join(".build-id").join(&id[..2]);
                std::fs::create_dir_all(&place).unwrap();
                std::fs::copy(
                    p(&format!("{n}.debug")),
                    place.join(format!("{}.debug", &id[2..])),
                )
                .unwrap();
            }
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_hotpatch"))
                .args(["diff", "--json", "--baseline"])
                .arg(p("v1.so"))
                .arg("--updated")
                .arg(p("v2.so"))
                .env("HOTPATCH_DEBUG_DIRS", &dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                changes(&String::from_utf8(out.stdout).unwrap()),
                want,
                "{scenario} {target} by build-id"
            );
        }
        // Another build's debug file: refused, naming both files.
        let bin = crate::common::root()
            .join("corpus/08-struct-grows/bin")
            .join(target);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hotpatch"))
            .args(["symbols", "--debug"])
            .arg(d.join(format!("08-struct-grows-{target}-v2.debug")))
            .arg(bin.join("v1.so"))
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("debug file does not match image") && err.lines().count() == 1,
            "{err}"
        );
    }
}

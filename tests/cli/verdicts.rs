//! Verdicts that must never be confident without the facts: stripped
//! inputs, writable bytes no symbol names, and reviewed overrides.

use std::path::{Path, PathBuf};

use crate::common::{hotpatch, root, run_tool};
use crate::diff::DiffJson;

/// `08-struct-grows` image `version` for `target`.
fn struct_grows(target: &str, version: &str) -> PathBuf {
    root().join(format!("corpus/08-struct-grows/bin/{target}/{version}.so"))
}

/// Run `hotpatch diff --json` and parse the result (the diff must run).
fn diff_json(base: &Path, upd: &Path, extra: &[&str]) -> DiffJson {
    let mut args = vec![
        "diff".to_string(),
        "--json".into(),
        "--baseline".into(),
        base.display().to_string(),
        "--updated".into(),
        upd.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = hotpatch(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("diff --json output")
}

/// A copy of `08-struct-grows` v1 and v2 for `target`, each passed through
/// `llvm-objcopy-19` with `args`, in `dir`.
fn objcopied(dir: &Path, target: &str, args: &[&str]) -> (PathBuf, PathBuf) {
    let copy = |v: &str| {
        let out = dir.join(format!("{target}-{v}.so"));
        let src = struct_grows(target, v);
        let mut all: Vec<&str> = args.to_vec();
        let (s, o) = (src.display().to_string(), out.display().to_string());
        all.extend([s.as_str(), o.as_str()]);
        run_tool("llvm-objcopy-19", &all);
        out
    };
    (copy("v1"), copy("v2"))
}

/// Stripping the `08-struct-grows` pair used to make the diff say
/// "hotpatchable": without symbols it saw no data objects at all, so the
/// resized writable global went unseen. A stripped image now blocks, naming
/// itself, on both architectures.
#[test]
fn stripped_struct_growth_is_not_a_confident_verdict() {
    let dir = tempfile::tempdir().unwrap();
    for target in ["x86_64-linux", "aarch64-linux"] {
        let (v1, v2) = objcopied(dir.path(), target, &["--strip-all"]);
        let d = diff_json(&v1, &v2, &[]);
        assert!(!d.hotpatchable, "{target}");
        let objects: Vec<(&str, &str)> = d
            .blockers
            .iter()
            .map(|b| (b.kind.as_str(), b.object.as_str()))
            .collect();
        let (n1, n2) = (v1.display().to_string(), v2.display().to_string());
        // No symbols for data, and (stripped of DWARF too) no types.
        assert_eq!(
            objects,
            [
                ("no-data-symbols", n1.as_str()),
                ("no-type-info", n1.as_str()),
                ("no-data-symbols", n2.as_str()),
                ("no-type-info", n2.as_str())
            ],
            "{target}"
        );
        assert!(
            d.blockers[0].reason.contains("stripped"),
            "{:?}",
            d.blockers
        );
        // The unstripped pair blocks on the global itself.
        let d = diff_json(
            &struct_grows(target, "v1"),
            &struct_grows(target, "v2"),
            &[],
        );
        assert!(d.blockers.iter().all(|b| b.kind == "writable-data-resized"));
    }
}

/// With the data symbol removed (and the functions' kept), the resized
/// global is writable bytes that no symbol names: they differ, so the diff
/// says what it cannot account for instead of passing it. The same image
/// against itself has nothing unaccounted.
#[test]
fn unnamed_writable_bytes_that_differ_block() {
    let dir = tempfile::tempdir().unwrap();
    for target in ["x86_64-linux", "aarch64-linux"] {
        let (v1, v2) = objcopied(dir.path(), target, &["--strip-symbol=session"]);
        let d = diff_json(&v1, &v2, &[]);
        let kinds: Vec<&str> = d.blockers.iter().map(|b| b.kind.as_str()).collect();
        assert_eq!(kinds, ["unaccounted-writable-data"], "{target}");
        assert!(
            d.blockers[0].reason.contains(
                "(baseline: 1 non-zero byte and 0 pointers in .data; update: 4 non-zero bytes and 0 pointers in .data)"
            ),
            "{:?}",
            d.blockers[0]
        );
        let same = diff_json(&v1, &v1, &[]);
        assert!(same.hotpatchable && same.blockers.is_empty(), "{target}");
    }
}

/// `--allow` is a reviewed override of a type layout: each needs its own
/// reason, and nothing else can be overridden. Misuse is a usage error
/// (exit 2, one line), not a silent pass.
#[test]
fn allow_needs_a_type_and_a_reason() {
    let v1 = struct_grows("x86_64-linux", "v1");
    let v2 = struct_grows("x86_64-linux", "v2");
    let base = [
        "diff",
        "--baseline",
        v1.to_str().unwrap(),
        "--updated",
        v2.to_str().unwrap(),
    ];
    let cases: [(&[&str], &str); 4] = [
        (
            &["--allow", "type:session"],
            "every --allow needs its own --reason",
        ),
        (
            &["--allow", "session", "--reason", "checked"],
            "only type layouts",
        ),
        (
            &["--allow", "type:", "--reason", "checked"],
            "only type layouts",
        ),
        (
            &["--allow", "type:session", "--reason", " "],
            "the --reason is empty",
        ),
    ];
    for (extra, message) in cases {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let out = hotpatch(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(message), "{extra:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

/// An override that matches no blocker is kept in the JSON and warned about
/// in the text report (most likely a misspelt type), and changes nothing:
/// the writable global still blocks.
#[test]
fn unused_override_is_reported_and_lifts_nothing() {
    let v1 = struct_grows("x86_64-linux", "v1");
    let v2 = struct_grows("x86_64-linux", "v2");
    let extra = [
        "--allow",
        "type:sesion",
        "--reason",
        "reviewed: per-call only",
    ];
    let d = diff_json(&v1, &v2, &extra);
    assert!(!d.hotpatchable);
    assert_eq!(d.unused_overrides.len(), 1);
    assert_eq!(d.unused_overrides[0].object, "type:sesion");
    assert_eq!(d.unused_overrides[0].reason, "reviewed: per-call only");
    assert!(d.overridden.is_empty());
    let mut args = vec![
        "diff",
        "--baseline",
        v1.to_str().unwrap(),
        "--updated",
        v2.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = hotpatch(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warning: --allow type:sesion matched no blocker"),
        "{text}"
    );
}

/// The libxslt case in miniature (`14-heap-struct-grows`): a heap struct
/// grows and changed code allocates and reads it. It blocks on the type,
/// on all four targets, naming the type, both sizes, the fields that moved
/// or appeared, and the changed functions that use it.
#[test]
fn heap_struct_growth_blocks_on_the_type() {
    let dir = root().join("corpus/14-heap-struct-grows");
    for target in crate::common::TARGETS {
        let d = crate::diff::run_diff(&dir, target, "v2");
        assert!(!d.hotpatchable, "{target}");
        let b = d
            .blockers
            .iter()
            .find(|b| b.kind == "type-layout-changed")
            .unwrap_or_else(|| panic!("{target}: {:?}", d.blockers));
        assert_eq!(b.object, "type:conn");
        for part in [
            "struct conn changed layout: size 16 -> 24 bytes",
            "`bytes` +8 -> +16",
            "`limit` at +8",
            "objects made before the patch keep the old layout",
            "conn_bytes",
            "conn_recv",
        ] {
            assert!(b.reason.contains(part), "{target}: {part} in {}", b.reason);
        }
        let t = d.types.iter().find(|t| t.name == "conn").unwrap();
        assert!(t.blocking);
        assert!(t.changed_users.iter().any(|u| u.ends_with("conn_open")));
    }
}

/// The same growth with a reviewed override recorded (`15`): hotpatchable,
/// with the lifted blocker and the engineer's reason in the report.
/// Without the override it blocks.
#[test]
fn reviewed_override_lifts_the_type_blocker_and_is_reported() {
    let dir = root().join("corpus/15-heap-struct-override");
    let allow = crate::common::expected(&dir).update[0].sets.allow.clone();
    assert_eq!(allow.len(), 1);
    for target in crate::common::TARGETS {
        let d = crate::diff::run_diff_allowing(&dir, target, "v2", &allow);
        assert!(d.hotpatchable, "{target}: {:?}", d.blockers);
        assert_eq!(d.overridden.len(), 1);
        assert_eq!(d.overridden[0].blocker.object, "type:bucket");
        assert_eq!(d.overridden[0].reason, allow[0].reason);
        let blocked = crate::diff::run_diff(&dir, target, "v2");
        assert!(!blocked.hotpatchable, "{target}");
    }
    // The text report shows the override and its reason.
    let bin = dir.join("bin/x86_64-linux");
    let out = hotpatch([
        "diff",
        "--baseline",
        bin.join("v1.so").to_str().unwrap(),
        "--updated",
        bin.join("v2.so").to_str().unwrap(),
        "--allow",
        &allow[0].object,
        "--reason",
        &allow[0].reason,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("overridden after review (1):"), "{text}");
    assert!(
        text.contains(&format!("allowed because: {}", allow[0].reason)),
        "{text}"
    );
    assert!(text.contains("verdict: hotpatchable"), "{text}");
}

/// A changed type that only unchanged code uses (`16`) is reported, and
/// does not block.
#[test]
fn type_change_used_only_by_unchanged_code_is_reported_not_blocking() {
    let dir = root().join("corpus/16-struct-unchanged-users");
    for target in crate::common::TARGETS {
        let d = crate::diff::run_diff(&dir, target, "v2");
        assert!(d.hotpatchable, "{target}: {:?}", d.blockers);
        let t = d.types.iter().find(|t| t.name == "stats").unwrap();
        assert!(!t.blocking && t.changed_users.is_empty(), "{target}");
    }
}

/// Without debug information for types (symbols kept, DWARF stripped), the
/// diff cannot see a heap struct grow: it says so, naming each image, and
/// only a reviewed `--allow 'type:*'` accepts that.
#[test]
fn without_type_information_the_verdict_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |v: &str| {
        let out = dir.path().join(format!("{v}.so"));
        let src = root().join(format!(
            "corpus/14-heap-struct-grows/bin/x86_64-linux/{v}.so"
        ));
        run_tool(
            "llvm-objcopy-19",
            &[
                "--strip-debug",
                src.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
        out
    };
    let (v1, v2) = (copy("v1"), copy("v2"));
    let d = diff_json(&v1, &v2, &[]);
    let kinds: Vec<(&str, &str)> = d
        .blockers
        .iter()
        .map(|b| (b.kind.as_str(), b.object.as_str()))
        .collect();
    let (n1, n2) = (v1.display().to_string(), v2.display().to_string());
    assert_eq!(
        kinds,
        [("no-type-info", n1.as_str()), ("no-type-info", n2.as_str())]
    );
    assert!(d.blockers[0]
        .reason
        .contains("no debug information for its types"));
    let d = diff_json(
        &v1,
        &v2,
        &["--allow", "type:*", "--reason", "reviewed: no heap types"],
    );
    assert!(d.hotpatchable, "{:?}", d.blockers);
    assert_eq!(d.overridden.len(), 2);
}

/// `17-struct-grows-stripped` is `08-struct-grows` as a distribution ships
/// it: its ELF images are 08's through `llvm-strip-19 --strip-all`, its
/// DLLs are 08's, without the PDBs. On all four targets the stripped diff
/// finds every function the unstripped one finds changed, and blocks on
/// both images (`no-data-symbols`) where the unstripped one blocks on the
/// growing global itself.
#[test]
fn shipped_stripped_scenario_is_struct_growth_stripped() {
    use crate::common::{image_files, TARGETS};
    use crate::diff::run_diff;
    let corpus = root().join("corpus");
    let (full, stripped) = (
        corpus.join("08-struct-grows"),
        corpus.join("17-struct-grows-stripped"),
    );
    assert!(crate::common::shipped_stripped(&stripped));
    let dir = tempfile::tempdir().unwrap();
    for target in TARGETS {
        for v in ["v1", "v2"] {
            let (ours, pdb) = image_files(&stripped, target, v);
            assert!(pdb.is_none(), "{target}");
            let (twin, _) = image_files(&full, target, v);
            let want = if target.ends_with("-linux") {
                let out = dir.path().join(format!("{target}-{v}.so"));
                run_tool(
                    "llvm-strip-19",
                    &[
                        "--strip-all",
                        "-o",
                        &out.display().to_string(),
                        &twin.display().to_string(),
                    ],
                );
                std::fs::read(out).unwrap()
            } else {
                std::fs::read(twin).unwrap()
            };
            assert!(std::fs::read(&ours).unwrap() == want, "{}", ours.display());
        }
        let truth = run_diff(&full, target, "v2");
        let got = run_diff(&stripped, target, "v2");
        let changed = |d: &DiffJson| -> Vec<String> {
            d.functions
                .iter()
                .filter(|e| e.status == "changed")
                .map(|e| e.name.clone())
                .collect()
        };
        let (want, found) = (changed(&truth), changed(&got));
        assert!(
            want.iter().all(|f| found.contains(f)),
            "{target}: {want:?} not all in {found:?}"
        );
        assert!(!got.hotpatchable && got.data.is_empty(), "{target}");
        for v in ["v1", "v2"] {
            let image = image_files(&stripped, target, v).0.display().to_string();
            let kinds: Vec<&str> = got
                .blockers
                .iter()
                .filter(|b| b.object == image)
                .map(|b| b.kind.as_str())
                .collect();
            assert_eq!(kinds, ["no-data-symbols", "no-type-info"], "{target} {v}");
        }
        assert!(truth
            .blockers
            .iter()
            .any(|b| b.kind == "writable-data-resized" && b.object.ends_with("session")));
    }
}

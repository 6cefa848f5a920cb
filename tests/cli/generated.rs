//! Generated pairs: the diff finds exactly the functions the generator
//! changed, on every target, among hundreds that merely moved.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::common::{hotpatch_ok, root, TARGETS};
use crate::diff::DiffJson;

/// The generator binary, built on demand: `cargo build --release -p
/// hotpatch-corpus-gen` with the cargo that runs the tests, once per test
/// process (a `OnceLock` holds off parallel tests until it is built), so
/// that `cargo test --workspace` works on a fresh checkout. The path comes
/// from cargo's own report of the artifact, so `CARGO_TARGET_DIR` and
/// `build.target-dir` are honoured. When `scripts/test` has built it
/// already, this is a no-op build.
fn generator() -> PathBuf {
    static GENERATOR: OnceLock<PathBuf> = OnceLock::new();
    GENERATOR
        .get_or_init(|| {
            let out = Command::new(env!("CARGO"))
                .args(["build", "--release", "-p", "hotpatch-corpus-gen"])
                .args(["--message-format=json-render-diagnostics"])
                .current_dir(root())
                .stderr(Stdio::inherit())
                .output()
                .expect("cannot run cargo to build the generator");
            assert!(out.status.success(), "building hotpatch-corpus-gen failed");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|m| m["reason"] == "compiler-artifact")
                .filter(|m| m["target"]["name"] == "hotpatch-corpus-gen")
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .expect("cargo did not report the hotpatch-corpus-gen executable")
        })
        .clone()
}

#[test]
fn generated_pairs_diff_exactly_to_their_changed_sets() {
    let gen = generator();
    let tmp = tempfile::tempdir().unwrap();
    for (i, target) in TARGETS.iter().enumerate() {
        let out = tmp.path().join(target);
        let status = Command::new(&gen)
            .args(["--out", &out.display().to_string()])
            .args(["--functions", "600", "--changed", "15", "--target", target])
            .args(["--seed", &(11 + i).to_string()])
            .output()
            .expect("cannot run the generator");
        assert!(
            status.status.success(),
            "generator failed for {target}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let (a, b) = if target.ends_with("-windows") {
            ("v1.dll", "v2.dll")
        } else {
            ("v1.so", "v2.so")
        };
        let s = |p: PathBuf| p.display().to_string();
        let mut args = vec!["diff".to_string(), "--json".into()];
        args.extend([
            "--baseline".into(),
            s(out.join(a)),
            "--updated".into(),
            s(out.join(b)),
        ]);
        if target.ends_with("-windows") {
            args.extend(["--baseline-pdb".into(), s(out.join("v1.pdb"))]);
            args.extend(["--updated-pdb".into(), s(out.join("v2.pdb"))]);
        }
        let d: DiffJson = serde_json::from_str(&hotpatch_ok(&args)).unwrap();
        let changed: BTreeSet<String> = d
            .functions
            .iter()
            .filter(|f| f.status == "changed")
            .map(|f| f.name.clone())
            .collect();
        let want: BTreeSet<String> = std::fs::read_to_string(out.join("changed.txt"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(want.len(), 15, "{target}");
        assert_eq!(changed, want, "{target}");
        assert!(
            d.functions
                .iter()
                .all(|f| f.status != "added" && f.status != "removed"),
            "{target}"
        );
        assert!(
            d.hotpatchable,
            "{target}: {:?}",
            d.blockers.iter().map(|b| &b.reason).collect::<Vec<_>>()
        );
        // Most functions moved: the test is about address shifts.
        let moved = d
            .functions
            .iter()
            .filter(|f| f.status == "unchanged" && f.baseline_rva != f.updated_rva)
            .count();
        assert!(
            moved > 100,
            "{target}: only {moved} unchanged functions moved"
        );
    }
}

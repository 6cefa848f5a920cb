//! A Windows build whose runtime code has no CodeView (as mingw's
//! libmingwex): the PDB knows those functions only by public symbols. An
//! update that grows one function moves that code, and must change nothing
//! else: calls into it are calls to named functions, not to unnamed code.
//!
//! Built here with clang-19 in mingw mode, lld and a PDB, for both Windows
//! targets: `fix.c` with CodeView, `rt.c` without.

use std::path::Path;

use serde_json::Value;

use crate::common::{hotpatch_ok, run_tool_in};

/// The runtime: a leaf function, functions with unwind data, and a static
/// helper.
const RUNTIME: &str = r#"
int rt_sink(int);
int rt_leaf(int x) { return x * 3 + 1; }
static __attribute__((noinline)) int helper(int x) { return rt_sink(x) + rt_leaf(x); }
int rt_call(int x) { return helper(x) * 2; }
int rt_sink(int x) { volatile int v = x; return v; }
"#;

/// The library: `fixed` grows in the update, which moves the runtime.
fn library(update: bool) -> String {
    let body = if update {
        "x > 10 ? rt_call(x) * 7 + rt_leaf(x) : x - 1"
    } else {
        "x > 10 ? 10 : x"
    };
    format!(
        r#"
int rt_call(int x);
int rt_leaf(int x);
__declspec(dllexport) int fixed(int x) {{ return {body}; }}
__declspec(dllexport) int entry(int x) {{ return rt_call(x) + rt_leaf(x); }}
"#
    )
}

/// Build `v1` and `v2` (DLL and PDB) for `arch` in `dir`.
fn build(dir: &Path, arch: &str) {
    let target = format!("--target={arch}-w64-mingw32");
    std::fs::write(dir.join("rt.c"), RUNTIME).unwrap();
    run_tool_in(
        dir,
        "clang-19",
        &[&target, "-O2", "-c", "rt.c", "-o", "rt.o"],
    );
    for (v, update) in [("v1", false), ("v2", true)] {
        let (src, obj) = (format!("{v}.c"), format!("{v}.o"));
        std::fs::write(dir.join(&src), library(update)).unwrap();
        run_tool_in(
            dir,
            "clang-19",
            &[&target, "-O2", "-g", "-gcodeview", "-c", &src, "-o", &obj],
        );
        let (pdb, dll) = (format!("-Wl,--pdb={v}.pdb"), format!("{v}.dll"));
        run_tool_in(
            dir,
            "clang-19",
            &[
                &target,
                "-fuse-ld=lld",
                "-shared",
                "-nostdlib",
                "-Wl,-e,entry",
                &pdb,
                &obj,
                "rt.o",
                "-o",
                &dll,
            ],
        );
    }
}

/// The names of the functions with `status` in a `diff --json` report.
fn with_status(report: &Value, status: &str) -> Vec<String> {
    let mut names: Vec<String> = report["functions"]
        .as_array()
        .expect("functions array")
        .iter()
        .filter(|f| f["status"] == status)
        .map(|f| f["name"].as_str().expect("name").to_string())
        .collect();
    names.sort();
    names
}

/// The bug: calls into mingw runtime functions known only by PDB publics
/// were calls into unnamed code, so every caller of a moved runtime
/// function looked changed ("branch-target") and the packager refused the
/// update ("refers to unnamed code").
#[test]
fn calls_into_runtime_code_known_only_by_publics_change_nothing() {
    for arch in ["x86_64", "aarch64"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        build(d, arch);
        let p = |name: &str| d.join(name).to_str().unwrap().to_owned();
        let images = [
            "--baseline",
            &p("v1.dll"),
            "--baseline-pdb",
            &p("v1.pdb"),
            "--updated",
            &p("v2.dll"),
            "--updated-pdb",
            &p("v2.pdb"),
        ];
        let mut args = vec!["diff", "--json"];
        args.extend(images);
        let report: Value = serde_json::from_str(&hotpatch_ok(&args)).unwrap();
        assert_eq!(with_status(&report, "changed"), ["fixed"], "{arch}");
        assert_eq!(
            with_status(&report, "unchanged"),
            ["code+0x20", "entry", "rt_call", "rt_leaf", "rt_sink"],
            "{arch}"
        );
        // The runtime moved: the test shows nothing if it did not.
        let rva = |side: &str| {
            report["functions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == "rt_call")
                .map(|f| f[side].as_u64().unwrap())
                .unwrap()
        };
        assert_ne!(rva("baseline_rva"), rva("updated_rva"), "{arch}");

        let mut args = vec![
            "build",
            "--product",
            "t",
            "--release",
            "2026-12",
            "--baseline-release",
            "2026-11",
            "-o",
        ];
        let out = p("u.hpk");
        args.push(&out);
        args.extend(images);
        args.push("--json");
        let manifest: Value = serde_json::from_str(&hotpatch_ok(&args)).unwrap();
        let changed: Vec<&str> = manifest["targets"][0]["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(changed, ["fixed"], "{arch}");
    }
}

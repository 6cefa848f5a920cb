//! Calls into another library: an update that imports one more function
//! moves every import slot (PE import address table, ELF GOT and PLT) and
//! every hint/name entry, and must change no function but the one that makes
//! the new call.
//!
//! The libraries are built here, for all four targets, with the corpus's
//! toolchains: the corpus is freestanding and imports nothing.

use std::path::Path;

use serde_json::Value;

use crate::common::{hotpatch_ok, run_tool_in, TARGETS};

/// The library imported from.
const DEP: &str = r#"
#include "abi.h"
EXPORT int dep_0(int x) { return x - 1; }
EXPORT int dep_a(int x) { return x + 3; }
EXPORT int dep_b(int x) { return x * 5; }
"#;

/// Import and export markers for either format.
const ABI: &str = r#"
#ifdef _WIN32
#define IMPORT __declspec(dllimport)
#define EXPORT __declspec(dllexport)
#else
#define IMPORT
#define EXPORT __attribute__((visibility("default")))
#endif
"#;

/// The importing library. The update calls `dep_0`, which sorts before the
/// other imports, from `fixed` only.
fn user(update: bool) -> String {
    let (decl, call) = if update {
        ("IMPORT int dep_0(int);", "dep_0(x)")
    } else {
        ("", "10")
    };
    format!(
        r#"
#include "abi.h"
IMPORT int dep_a(int);
IMPORT int dep_b(int);
{decl}
EXPORT int use_a(int x) {{ return dep_a(x) + 1; }}
EXPORT int use_b(int x) {{ return dep_b(x) * 2; }}
EXPORT int fixed(int x) {{ return x > 10 ? {call} : x; }}
"#
    )
}

/// Run a build step in `dir`, failing the test with its output.
fn run(dir: &Path, program: &str, args: &[&str]) {
    run_tool_in(dir, program, args);
}

/// Build `dep`, `v1` and `v2` for `target` in `dir`; returns the image
/// extension.
fn build(dir: &Path, target: &str) -> &'static str {
    std::fs::write(dir.join("abi.h"), ABI).unwrap();
    std::fs::write(dir.join("dep.c"), DEP).unwrap();
    std::fs::write(dir.join("v1.c"), user(false)).unwrap();
    std::fs::write(dir.join("v2.c"), user(true)).unwrap();
    let free = [
        "-O2",
        "-ffreestanding",
        "-fno-builtin",
        "-fno-stack-protector",
    ];
    if let Some(arch) = target.strip_suffix("-windows") {
        let (triple, machine, pad) = match arch {
            "x86_64" => (
                "--target=x86_64-pc-windows-msvc",
                "/machine:x64",
                "/functionpadmin:6",
            ),
            _ => (
                "--target=aarch64-pc-windows-msvc",
                "/machine:arm64",
                "/functionpadmin:4",
            ),
        };
        let cflags = [
            triple,
            "-g",
            "-gcodeview",
            "-ffunction-sections",
            "-mno-stack-arg-probe",
        ];
        let link = ["/dll", "/noentry", "/nodefaultlib", "/debug", machine];
        for unit in ["dep", "v1", "v2"] {
            let (src, obj) = (format!("{unit}.c"), format!("{unit}.obj"));
            let mut args: Vec<&str> = cflags.iter().chain(&free).copied().collect();
            args.extend(["-c", &src, "-o", &obj]);
            run(dir, "clang-19", &args);
        }
        let mut args: Vec<&str> = link.to_vec();
        args.extend(["/out:dep.dll", "/implib:dep.lib", "dep.obj"]);
        run(dir, "lld-link-19", &args);
        for v in ["v1", "v2"] {
            let (out, pdb, obj) = (
                format!("/out:{v}.dll"),
                format!("/pdb:{v}.pdb"),
                format!("{v}.obj"),
            );
            let mut args: Vec<&str> = link.to_vec();
            args.extend([pad, &out, &pdb, &obj, "dep.lib"]);
            run(dir, "lld-link-19", &args);
        }
        "dll"
    } else {
        let cc = if target.starts_with("aarch64") {
            "aarch64-linux-gnu-gcc"
        } else {
            "gcc"
        };
        let elf = ["-fPIC", "-shared", "-nostdlib"];
        let mut args: Vec<&str> = free.iter().chain(&elf).copied().collect();
        args.extend(["-o", "libdep.so", "dep.c"]);
        run(dir, cc, &args);
        for v in ["v1", "v2"] {
            let (out, src) = (format!("{v}.so"), format!("{v}.c"));
            let mut args: Vec<&str> = free.iter().chain(&elf).copied().collect();
            args.extend(["-o", &out, &src, "-L.", "-ldep"]);
            run(dir, cc, &args);
        }
        "so"
    }
}

/// The names of the functions with `status` in a `diff --json` report.
fn with_status(report: &Value, status: &str) -> Vec<String> {
    report["functions"]
        .as_array()
        .expect("functions array")
        .iter()
        .filter(|f| f["status"] == status)
        .map(|f| f["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn new_import_changes_no_caller_of_the_other_imports() {
    for target in TARGETS {
        let dir = tempfile::tempdir().unwrap();
        let ext = build(dir.path(), target);
        let (v1, v2) = (
            dir.path().join(format!("v1.{ext}")),
            dir.path().join(format!("v2.{ext}")),
        );
        let report: Value = serde_json::from_str(&hotpatch_ok([
            "diff".as_ref(),
            "--json".as_ref(),
            "--baseline".as_ref(),
            v1.as_os_str(),
            "--updated".as_ref(),
            v2.as_os_str(),
        ]))
        .unwrap();
        assert_eq!(with_status(&report, "changed"), ["fixed"], "{target}");
        assert_eq!(
            with_status(&report, "unchanged"),
            ["use_a", "use_b"],
            "{target}"
        );
    }
}

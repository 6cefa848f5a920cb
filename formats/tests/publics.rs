//! Functions that a PDB knows only by public symbols: code built without
//! CodeView, as mingw's runtime library is, linked by clang-19 in mingw mode
//! with lld and a PDB at test time. Every extent is checked against what
//! the LLVM tools say of the same files: the object's symbol table
//! (`llvm-nm-19`), the image's unwind data (`llvm-readobj-19 --unwind`) and
//! the PDB's section contributions (`llvm-pdbutil-19`).

// Test code: the crate's panic lints (Cargo.toml) are for the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::run;
use hotpatch_formats::{read, Extent, Function, ReadOptions, Visibility};

/// Built with CodeView: the one procedure the PDB describes.
const WITH_DEBUG: &str = r#"
int pubfn(int x);
int leaf(int x);
__declspec(dllexport) int entry(int x) { return pubfn(x) + leaf(x); }
"#;

/// Built without: a leaf function (no unwind data on x86-64), functions
/// with unwind data, and a static one that only the unwind data shows.
const WITHOUT_DEBUG: &str = r#"
int sink(int);
int leaf(int x) { return x * 3 + 1; }
static __attribute__((noinline)) int helper(int x) { return sink(x) + leaf(x); }
int pubfn(int x) { return helper(x) * 2; }
int sink(int x) { volatile int v = x; return v; }
"#;

/// Build the DLL and its PDB for `arch` in `dir`.
fn build(dir: &Path, arch: &str) {
    let target = format!("--target={arch}-w64-mingw32");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    std::fs::write(dir.join("a.c"), WITH_DEBUG).unwrap();
    std::fs::write(dir.join("b.c"), WITHOUT_DEBUG).unwrap();
    run(
        "clang-19",
        &[
            &target,
            "-O2",
            "-g",
            "-gcodeview",
            "-c",
            &p("a.c"),
            "-o",
            &p("a.o"),
        ],
    );
    run(
        "clang-19",
        &[&target, "-O2", "-c", &p("b.c"), "-o", &p("b.o")],
    );
    run(
        "clang-19",
        &[
            &target,
            "-fuse-ld=lld",
            "-shared",
            "-nostdlib",
            "-Wl,-e,entry",
            &format!("-Wl,--pdb={}", p("t.pdb")),
            &p("a.o"),
            &p("b.o"),
            "-o",
            &p("t.dll"),
        ],
    );
}

/// `llvm-nm` of an object: symbol name to (offset in `.text`, local).
fn object_symbols(obj: &Path) -> BTreeMap<String, (u64, bool)> {
    run("llvm-nm-19", &[obj.to_str().unwrap()])
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (value, kind, name) = (w.next()?, w.next()?, w.next()?);
            matches!(kind, "t" | "T").then(|| {
                (
                    name.to_owned(),
                    (u64::from_str_radix(value, 16).unwrap(), kind == "t"),
                )
            })
        })
        .collect()
}

/// `.pdata` extents as RVAs, start to end, from `llvm-readobj --unwind`.
fn unwind_extents(dll: &Path, base: u64, arch: &str) -> BTreeMap<u64, u64> {
    let text = run("llvm-readobj-19", &["--unwind", dll.to_str().unwrap()]);
    let hex = |l: &str| {
        let v = l.split("(0x").nth(1).unwrap().trim_end_matches(')');
        u64::from_str_radix(v, 16).unwrap() - base
    };
    let mut out = BTreeMap::new();
    let mut start = None;
    for l in text.lines().map(str::trim) {
        if arch == "x86_64" {
            if l.starts_with("StartAddress:") {
                start = Some(hex(l));
            } else if l.starts_with("EndAddress:") {
                out.insert(start.take().unwrap(), hex(l));
            }
        } else if let Some(v) = l.strip_prefix("Function: ") {
            // `Function: 0x180001000 (name)` then `FunctionLength: 16`.
            let v = v
                .split_whitespace()
                .next()
                .unwrap()
                .trim_start_matches("0x");
            start = Some(u64::from_str_radix(v, 16).unwrap() - base);
        } else if let Some(n) = l.strip_prefix("FunctionLength: ") {
            let s = start.take().unwrap();
            out.insert(s, s + n.parse::<u64>().unwrap());
        }
    }
    out
}

/// The RVA of module `b.o`'s contribution to `.text`, from the PDB.
fn contribution_of_b(pdb: &Path, text_rva: u64) -> u64 {
    let dump = run(
        "llvm-pdbutil-19",
        &["dump", "--section-contribs", pdb.to_str().unwrap()],
    );
    let line = dump
        .lines()
        .find(|l| l.contains("SC[.text]") && l.contains("mod = 1,"))
        .unwrap_or_else(|| panic!("no .text contribution of module 1 in\n{dump}"));
    let at = line.split("0001:").nth(1).unwrap();
    let offset: u64 = at.split(',').next().unwrap().trim().parse().unwrap();
    text_rva + offset
}

/// The bug: calls into mingw runtime functions (`floor`, `exp`) were calls
/// into unnamed code, because the reader made functions from procedure
/// records only and the PDB knows that code only by public symbols.
fn mingw_runtime_functions_known_only_by_publics(arch: &str) {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), arch);
    let dll = dir.path().join("t.dll");
    let bytes = read::load_file(&dll).unwrap();
    let image = read::parse(
        &bytes,
        &ReadOptions::new(&dll).with_pdb(dir.path().join("t.pdb")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = image.sections.iter().find(|s| s.name == ".text").unwrap();
    let unwind = unwind_extents(&dll, image.preferred_base, arch);
    let symbols = object_symbols(&dir.path().join("b.o"));
    let start = contribution_of_b(&dir.path().join("t.pdb"), text.rva);

    // What the tools say each function of b.o is.
    let mut expected: Vec<(String, u64, u64, Extent, Visibility)> = Vec::new();
    let offsets: Vec<u64> = symbols.values().map(|s| s.0).collect();
    for (name, &(offset, local)) in &symbols {
        let rva = start + offset;
        let (size, extent) = match unwind.get(&rva) {
            Some(end) if local => (end - rva, Extent::StaticUnwind),
            Some(end) => (end - rva, Extent::PublicUnwind),
            // A static leaf function has no record at all: not found.
            None if local => continue,
            None => {
                // To the next symbol of the object: x86-64 clang pads
                // with multi-byte nops (code to the reader), not int3.
                let next = offsets.iter().copied().filter(|&o| o > offset).min();
                let end = next.expect("the leaf function is not the object's last");
                (end - offset, Extent::PublicContribution)
            }
        };
        let (name, visibility) = if local {
            (format!("code+{offset:#x}"), Visibility::Local)
        } else {
            (name.clone(), Visibility::Global)
        };
        expected.push((name, rva, size, extent, visibility));
    }
    expected.sort();
    let mut found: Vec<(String, u64, u64, Extent, Visibility)> = image
        .functions
        .iter()
        .filter(|f| f.extent != Extent::Symbol)
        .map(|f: &Function| (f.name.clone(), f.rva, f.size, f.extent, f.visibility))
        .collect();
    found.sort();
    assert_eq!(found, expected, "{arch}");
    // The test covers every kind of extent on x86-64, where the leaf
    // function has no unwind data.
    if arch == "x86_64" {
        let kinds: Vec<Extent> = found.iter().map(|f| f.3).collect();
        for k in [
            Extent::PublicUnwind,
            Extent::PublicContribution,
            Extent::StaticUnwind,
        ] {
            assert!(kinds.contains(&k), "{k:?} in {found:?}");
        }
    }
    // Every one of them is in b.o's module.
    for f in image
        .functions
        .iter()
        .filter(|f| f.extent != Extent::Symbol)
    {
        assert!(
            f.unit.as_deref().is_some_and(|u| u.ends_with("b.o")),
            "{f:?}"
        );
    }
    // The procedure is read as before.
    let entry: Vec<_> = image
        .functions
        .iter()
        .filter(|f| f.extent == Extent::Symbol)
        .map(|f| (f.name.as_str(), f.visibility))
        .collect();
    assert_eq!(entry, [("entry", Visibility::Exported)]);
}

#[test]
fn mingw_runtime_functions_known_only_by_publics_x86_64() {
    mingw_runtime_functions_known_only_by_publics("x86_64");
}

#[test]
fn mingw_runtime_functions_known_only_by_publics_aarch64() {
    mingw_runtime_functions_known_only_by_publics("aarch64");
}

//! The stripped-ELF fallback: function boundaries from `.eh_frame`, names
//! from `.dynsym`.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::common::{corpus_images, hotpatch_ok, run_tool};

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
fn fde_ranges(path: &std::path::Path) -> BTreeSet<(u64, u64)> {
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
    for img in corpus_images().iter().filter(|i| i.is_elf()) {
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

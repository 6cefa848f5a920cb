//! Each function's first source line ([`Image::lines`]) read from the
//! corpus, checked against the sources: on ELF the line of the function's
//! name in its definition (GCC's `DW_AT_decl_line`, also for its `.cold`,
//! `.part`, `.isra` and `.constprop` copies), on PE the smallest line of
//! clang's line table for the function: its opening brace, or for a leaf
//! function without a prologue the line of its first statement that has
//! code, inside its body.

// Test code: the crate's panic lints (Cargo.toml) are for the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hotpatch_formats::{read, Image, ReadOptions};

const TARGETS: [&str; 4] = [
    "x86_64-windows",
    "aarch64-windows",
    "x86_64-linux",
    "aarch64-linux",
];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

/// A function definition in the sources: its file's stem, the line of its
/// name, the line of its opening brace and that of its closing brace (the
/// next `}` at column 0).
#[derive(Clone, Debug)]
struct Definition {
    stem: String,
    name_line: u32,
    brace_line: u32,
    end_line: u32,
}

/// The function definitions of one version's sources, by name: a line at
/// column 0 that names `f(` and reaches a `{` before any `;`.
fn definitions(dir: &Path) -> BTreeMap<String, Vec<Definition>> {
    let mut out: BTreeMap<String, Vec<Definition>> = BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    files.sort();
    for file in files {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let first = l.chars().next();
            if first.is_none_or(|c| !(c.is_ascii_alphabetic() || c == '_')) {
                continue;
            }
            let Some(paren) = l.find('(') else { continue };
            let name: String = l[..paren]
                .trim_end()
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if name.is_empty() {
                continue;
            }
            // A definition reaches `{` before `;`.
            let mut brace = None;
            'scan: for (j, m) in lines.iter().enumerate().skip(i) {
                let from = if j == i { paren } else { 0 };
                for c in m[from..].chars() {
                    match c {
                        '{' => {
                            brace = Some(j);
                            break 'scan;
                        }
                        ';' => break 'scan,
                        _ => {}
                    }
                }
            }
            if let Some(b) = brace {
                let end = (b + 1..lines.len())
                    .find(|&k| lines[k].starts_with('}'))
                    .unwrap_or(b);
                out.entry(name).or_default().push(Definition {
                    stem: stem.clone(),
                    name_line: i as u32 + 1,
                    brace_line: b as u32 + 1,
                    end_line: end as u32 + 1,
                });
            }
        }
    }
    out
}

fn parse<'d>(bytes: &'d [u8], path: &Path) -> Image<'d> {
    let mut opts = ReadOptions::new(path);
    let pdb = path.with_extension("pdb");
    if pdb.exists() {
        opts = opts.with_pdb(pdb);
    }
    read::parse(bytes, &opts).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn function_lines_are_where_the_sources_define_them() {
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.toml").is_file())
        .collect();
    scenarios.sort();
    let (mut checked, mut leaves) = (0usize, 0usize);
    for dir in scenarios {
        // A scenario shipped stripped has no line information to check
        // (no DWARF, no PDB): its images are checked to have none.
        let stripped = dir.join("shipped-stripped").is_file();
        let mut versions: Vec<PathBuf> = std::fs::read_dir(dir.join("src"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        versions.sort();
        for src in versions {
            let v = src.file_name().unwrap().to_string_lossy().into_owned();
            let defs = definitions(&src);
            for target in TARGETS {
                let pe = target.ends_with("windows");
                let ext = if pe { "dll" } else { "so" };
                let path = dir.join(format!("bin/{target}/{v}.{ext}"));
                let bytes = read::load_file(&path).unwrap();
                let image = parse(&bytes, &path);
                if stripped {
                    assert!(
                        image.lines.is_empty(),
                        "{}: lines without debug information",
                        path.display()
                    );
                    continue;
                }
                for f in &image.functions {
                    let what = format!("{} {}", path.display(), f.name);
                    // GCC's copies carry their parent's line.
                    let base = f.name.split('.').next().unwrap();
                    let Some(found) = defs.get(base) else {
                        // Not from these sources: no line to check.
                        continue;
                    };
                    let unit_stem = f
                        .unit
                        .as_deref()
                        .map(|u| u.rsplit_once('.').map_or(u, |(s, _)| s));
                    let def = match found.as_slice() {
                        [one] => one,
                        several => {
                            match several.iter().find(|d| Some(d.stem.as_str()) == unit_stem) {
                                Some(d) => d,
                                None => panic!("{what}: defined {several:?}, unit {:?}", f.unit),
                            }
                        }
                    };
                    let got = image.line_at(f.rva);
                    if pe {
                        let inside = got.is_some_and(|l| l > def.brace_line && l < def.end_line);
                        assert!(
                            got == Some(def.brace_line) || inside,
                            "{what}: {got:?}, defined {def:?}"
                        );
                        leaves += usize::from(inside);
                    } else {
                        assert_eq!(got, Some(def.name_line), "{what}");
                    }
                    checked += 1;
                }
            }
        }
    }
    eprintln!("{checked} function lines checked, {leaves} PE leaves");
    assert!(checked >= 500, "only {checked} functions checked");
    // Both kinds of PE function occur.
    assert!(leaves > 10 && leaves < checked / 2, "{leaves} of {checked}");
}

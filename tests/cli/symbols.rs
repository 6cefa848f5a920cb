//! `hotpatch symbols` against the toolchain's own dumpers, over the whole corpus.
//!
//! PE: `llvm-pdbutil-19 dump --symbols --section-headers` (procedure records,
//! section:offset turned into an RVA with the PDB's own section headers).
//! ELF: `llvm-nm-19 --format=sysv --defined-only` (symbols of type FUNC).
//! Images of a scenario shipped stripped: see
//! [`stripped_functions_match_dumpers`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::common::{corpus_images, hotpatch_ok, run_tool, CorpusImage};

#[derive(Debug, Deserialize)]
struct SymbolsJson {
    functions: Vec<FunctionJson>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct FunctionJson {
    name: String,
    rva: u64,
    size: u64,
    unit: Option<String>,
}

fn our_functions(img: &CorpusImage) -> Vec<FunctionJson> {
    let mut args = vec![
        "symbols".to_string(),
        "--json".into(),
        img.path.display().to_string(),
    ];
    if let Some(pdb) = &img.pdb {
        args.push("--pdb".into());
        args.push(pdb.display().to_string());
    }
    let out = hotpatch_ok(&args);
    let parsed: SymbolsJson = serde_json::from_str(&out).expect("symbols --json is not JSON");
    let mut f = parsed.functions;
    f.sort();
    f
}

/// Procedure records from `llvm-pdbutil dump --symbols`, as (name, RVA, size, module).
fn pdbutil_functions(pdb: &std::path::Path) -> Vec<FunctionJson> {
    let text = run_tool(
        "llvm-pdbutil-19",
        &[
            "dump",
            "--symbols",
            "--section-headers",
            &pdb.display().to_string(),
        ],
    );
    // Section headers: "SECTION HEADER #N" followed by "<hex> virtual address".
    let mut section_rva: BTreeMap<u32, u64> = BTreeMap::new();
    let mut current_section = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(n) = t.strip_prefix("SECTION HEADER #") {
            current_section = Some(n.parse::<u32>().expect("section number"));
        } else if let Some(hex) = t.strip_suffix(" virtual address") {
            let n = current_section.expect("virtual address before section header");
            section_rva.insert(n, u64::from_str_radix(hex.trim(), 16).expect("hex rva"));
        }
    }
    assert!(
        !section_rva.is_empty(),
        "no section headers in pdbutil output"
    );

    let mut out = Vec::new();
    let mut module = None;
    let mut pending: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Mod ") {
            // "Mod 0001 | `name`:"
            let name = rest.split('`').nth(1).expect("module name").to_string();
            module = Some(name);
            continue;
        }
        if t.contains("| S_GPROC32 ")
            || t.contains("| S_LPROC32 ")
            || t.contains("| S_GPROC32_ID ")
            || t.contains("| S_LPROC32_ID ")
        {
            pending = Some(t.split('`').nth(1).expect("procedure name").to_string());
            continue;
        }
        if let Some(name) = pending.take() {
            // "parent = 0, end = 200, addr = 0001:0016, code size = 8"
            let field = |key: &str| -> &str {
                t.split(", ")
                    .find_map(|kv| kv.strip_prefix(key))
                    .unwrap_or_else(|| panic!("no `{key}` in `{t}`"))
            };
            let (sec, off) = field("addr = ").split_once(':').expect("addr");
            let sec: u32 = sec.parse().expect("section");
            let off: u64 = off.parse().expect("offset");
            let size: u64 = field("code size = ").parse().expect("code size");
            let base = section_rva
                .get(&sec)
                .unwrap_or_else(|| panic!("section {sec} of {name} not in the section headers"));
            out.push(FunctionJson {
                name,
                rva: base + off,
                size,
                unit: module.clone(),
            });
        }
    }
    out.sort();
    out
}

/// FUNC symbols from `llvm-nm --format=sysv`, as (name, RVA, size); units are
/// not printed by nm, so ours are copied over for the comparison.
fn nm_functions(img: &CorpusImage) -> Vec<(String, u64, u64)> {
    nm(&img.path, &[])
}

/// FUNC symbols of `path` from `llvm-nm --format=sysv --defined-only` with
/// `extra` arguments (`-D`: the dynamic symbols), as (name, RVA, size).
fn nm(path: &Path, extra: &[&str]) -> Vec<(String, u64, u64)> {
    let path = path.display().to_string();
    let mut args = vec!["--format=sysv", "--defined-only"];
    args.extend(extra);
    args.push(&path);
    let text = run_tool("llvm-nm-19", &args);
    let mut out = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if cols.len() < 7 || cols[3] != "FUNC" {
            continue;
        }
        let rva = u64::from_str_radix(cols[1], 16).expect("value");
        let size = if cols[4].is_empty() {
            0
        } else {
            u64::from_str_radix(cols[4], 16).expect("size")
        };
        out.push((cols[0].to_string(), rva, size));
    }
    out.sort();
    out
}

/// A number printed by `llvm-readobj`: `0x...` or decimal, maybe in
/// parentheses.
fn readobj_number(text: &str) -> u64 {
    let t = text.trim().trim_start_matches('(').trim_end_matches(')');
    match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).expect("hex"),
        None => t.parse().expect("number"),
    }
}

/// The values of every `Key: value` line of `llvm-readobj` output, in order.
fn readobj_values(text: &str, key: &str) -> Vec<u64> {
    let prefix = format!("{key}: ");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .map(readobj_number)
        .collect()
}

/// The functions of an image of a scenario shipped stripped against the
/// LLVM dumpers' view of what the reader reads. ELF: the `.eh_frame` FDE
/// ranges (`llvm-dwarfdump --eh-frame`), named from the dynamic symbols
/// (`llvm-nm -D`) or `sub_<rva>`. PE, read without its PDB: every
/// `.pdata` range (`llvm-readobj --unwind`) is one of ours, every export
/// into code (`llvm-readobj --coff-exports`) starts one of ours under its
/// name, and ours start nowhere else.
fn stripped_functions_match_dumpers(img: &CorpusImage, ours: &[FunctionJson]) {
    let what = img.path.display().to_string();
    let ranges: BTreeSet<(u64, u64)> = ours.iter().map(|f| (f.rva, f.rva + f.size)).collect();
    let mut names: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    if img.is_elf() {
        assert_eq!(ranges, crate::stripped::fde_ranges(&img.path), "{what}");
        for (name, rva, _) in nm(&img.path, &["-D"]) {
            names.entry(rva).or_default().insert(name);
        }
    } else {
        let path = img.path.display().to_string();
        let base = readobj_values(
            &run_tool("llvm-readobj-19", &["--file-headers", &path]),
            "ImageBase",
        )[0];
        let unwind = run_tool("llvm-readobj-19", &["--unwind", &path]);
        let pdata: Vec<(u64, u64)> = if img.target.starts_with("x86_64") {
            let starts = readobj_values(&unwind, "StartAddress");
            let ends = readobj_values(&unwind, "EndAddress");
            starts.into_iter().zip(ends).collect()
        } else {
            let starts = readobj_values(&unwind, "Function");
            let lengths = readobj_values(&unwind, "FunctionLength");
            starts
                .into_iter()
                .zip(lengths)
                .map(|(s, l)| (s, s + l))
                .collect()
        };
        for (start, end) in pdata {
            let r = (start - base, end - base);
            assert!(ranges.contains(&r), "{what}: .pdata {r:x?} not read");
        }
        let exports = run_tool("llvm-readobj-19", &["--coff-exports", &path]);
        let export_names: Vec<String> = exports
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Name: "))
            .map(str::to_string)
            .collect();
        let rvas = readobj_values(&exports, "RVA");
        assert_eq!(export_names.len(), rvas.len(), "{what}");
        for (name, rva) in export_names.into_iter().zip(rvas) {
            names.entry(rva).or_default().insert(name);
        }
        for (rva, list) in &names {
            assert!(
                ours.iter().any(|f| f.rva == *rva && list.contains(&f.name)),
                "{what}: export {list:?} at {rva:#x} not read"
            );
        }
        for f in ours {
            let from_pdata = !names.contains_key(&f.rva);
            assert!(
                !from_pdata || ranges.contains(&(f.rva, f.rva + f.size)),
                "{what}: {} invented",
                f.name
            );
        }
    }
    for f in ours {
        match names.get(&f.rva) {
            Some(list) => assert!(list.contains(&f.name), "{what}: {f:?} not {list:?}"),
            None => assert_eq!(f.name, format!("sub_{:x}", f.rva), "{what}"),
        }
        assert_eq!(f.unit, None, "{what}");
    }
}

#[test]
fn symbols_match_llvm_dumpers_on_whole_corpus() {
    let images = corpus_images();
    let mut checked = BTreeMap::<String, usize>::new();
    for img in &images {
        let ours = our_functions(img);
        assert!(!ours.is_empty(), "{}: no functions", img.path.display());
        if img.stripped {
            stripped_functions_match_dumpers(img, &ours);
        } else if img.is_elf() {
            let mut ours: Vec<(String, u64, u64)> =
                ours.into_iter().map(|f| (f.name, f.rva, f.size)).collect();
            ours.sort();
            assert_eq!(ours, nm_functions(img), "{}", img.path.display());
        } else {
            let theirs = pdbutil_functions(img.pdb.as_ref().unwrap());
            assert_eq!(ours, theirs, "{}", img.path.display());
        }
        *checked.entry(img.target.clone()).or_default() += 1;
    }
    // Every target was really checked.
    assert_eq!(checked.len(), 4, "{checked:?}");
}

#[test]
fn duplicate_static_names_carry_their_unit() {
    // Scenario 9: two `static` functions with one name in two units must be
    // told apart by unit on every target.
    let images = corpus_images();
    let dup: Vec<&CorpusImage> = images
        .iter()
        .filter(|i| i.scenario.contains("duplicate-static") && i.version == "v1")
        .collect();
    assert_eq!(
        dup.len(),
        4,
        "the duplicate-static scenario must exist for 4 targets"
    );
    for img in dup {
        let funcs = our_functions(img);
        let mut by_name: BTreeMap<&str, Vec<Option<&str>>> = BTreeMap::new();
        for f in &funcs {
            by_name.entry(&f.name).or_default().push(f.unit.as_deref());
        }
        let dups: Vec<_> = by_name.iter().filter(|(_, u)| u.len() > 1).collect();
        assert!(
            !dups.is_empty(),
            "{}: no duplicate names",
            img.path.display()
        );
        for (name, units) in dups {
            let mut u = units.clone();
            u.sort();
            u.dedup();
            assert_eq!(
                u.len(),
                units.len(),
                "{}: `{name}` appears twice in one unit: {units:?}",
                img.path.display()
            );
            assert!(
                u.iter().all(Option::is_some),
                "{}: `{name}` without unit",
                img.path.display()
            );
        }
    }
}

#[test]
fn symbols_text_output_lists_every_function() {
    let images = corpus_images();
    let img = images
        .iter()
        .find(|i| i.target == "x86_64-windows")
        .unwrap();
    let json = our_functions(img);
    let mut args = vec!["symbols".to_string(), img.path.display().to_string()];
    args.push("--pdb".into());
    args.push(img.pdb.as_ref().unwrap().display().to_string());
    let text = hotpatch_ok(&args);
    let rows: Vec<&str> = text.lines().skip(2).collect();
    assert_eq!(rows.len(), json.len(), "{text}");
    for f in &json {
        let want = format!("{:#x}", f.rva);
        assert!(
            rows.iter().any(|r| {
                let cols: Vec<&str> = r.split_whitespace().collect();
                cols.first() == Some(&f.name.as_str())
                    && cols.get(1) == Some(&want.as_str())
                    && cols.get(2) == Some(&f.size.to_string().as_str())
            }),
            "{} missing from text output:\n{text}",
            f.name
        );
    }
}

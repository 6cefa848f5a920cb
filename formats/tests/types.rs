//! Struct layouts and type uses read from the corpus, checked against the
//! LLVM dumpers (`llvm-dwarfdump-19` for ELF, `llvm-pdbutil-19` for PE) and
//! against what the sources say.

// Test code: the crate's panic lints (Cargo.toml) are for the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::run;
use hotpatch_formats::{read, Image, ReadOptions, TypeInfo, TypeKind};

const TARGETS: [&str; 4] = [
    "x86_64-windows",
    "aarch64-windows",
    "x86_64-linux",
    "aarch64-linux",
];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

/// `(scenario, target, version, image path)` of every corpus image.
fn images() -> Vec<(String, &'static str, String, PathBuf)> {
    let mut out = Vec::new();
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.toml").is_file())
        .collect();
    scenarios.sort();
    for dir in scenarios {
        let scenario = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut versions: Vec<String> = std::fs::read_dir(dir.join("src"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        versions.sort();
        for target in TARGETS {
            for v in &versions {
                let ext = if target.ends_with("windows") {
                    "dll"
                } else {
                    "so"
                };
                let path = dir.join(format!("bin/{target}/{v}.{ext}"));
                out.push((scenario.clone(), target, v.clone(), path));
            }
        }
    }
    assert!(out.len() >= 100, "only {} corpus images", out.len());
    out
}

fn load(path: &Path) -> Vec<u8> {
    read::load_file(path).unwrap_or_else(|e| panic!("{e}"))
}

fn parse<'d>(bytes: &'d [u8], path: &Path) -> Image<'d> {
    read::parse(bytes, &ReadOptions::new(path)).unwrap_or_else(|e| panic!("{e}"))
}

/// A field as the dumpers show it: name, offset, bit range.
type Placed = (String, u64, Option<(u32, u32)>);

/// A layout as the dumpers show it: size and fields.
type Shape = (u64, BTreeSet<Placed>);

/// Our layouts in the same form, by name.
fn our_shapes(image: &Image<'_>) -> BTreeMap<String, BTreeSet<Shape>> {
    let mut out: BTreeMap<String, BTreeSet<Shape>> = BTreeMap::new();
    for t in &image.types {
        let fields = t
            .fields
            .iter()
            .map(|f| (f.name.clone(), f.offset, f.bit))
            .collect();
        out.entry(t.name.clone())
            .or_default()
            .insert((t.size, fields));
    }
    out
}

/// One entry of `llvm-dwarfdump --debug-info`.
#[derive(Debug)]
struct Die {
    offset: u64,
    depth: usize,
    tag: String,
    attrs: BTreeMap<String, String>,
}

impl Die {
    fn attr_num(&self, name: &str) -> Option<u64> {
        let v = self.attrs.get(name)?;
        let v = v.trim_start_matches('(').trim_end_matches(')');
        let v = v.split_whitespace().next()?;
        u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()
    }

    fn attr_str(&self, name: &str) -> Option<String> {
        let v = self.attrs.get(name)?;
        let start = v.find('"')?;
        let end = v.rfind('"')?;
        (end > start).then(|| v[start + 1..end].to_string())
    }
}

fn dwarfdump(path: &Path) -> Vec<Die> {
    let text = run(
        "llvm-dwarfdump-19",
        &["--debug-info", path.to_str().unwrap()],
    );
    let mut dies: Vec<Die> = Vec::new();
    for line in text.lines() {
        if let Some(at) = line.find("DW_TAG_") {
            let offset = u64::from_str_radix(line[2..10].trim(), 16).unwrap();
            dies.push(Die {
                offset,
                depth: (at - 12) / 2,
                tag: line[at..].trim().to_string(),
                attrs: BTreeMap::new(),
            });
        } else if let Some(at) = line.find("DW_AT_") {
            let rest = &line[at..];
            let (name, value) = rest.split_once('\t').unwrap_or((rest, ""));
            if let Some(d) = dies.last_mut() {
                d.attrs
                    .insert(name.trim().to_string(), value.trim().to_string());
            }
        }
    }
    dies
}

/// Members of the record at `index` as `(name, offset, bit)`, anonymous
/// members flattened at their offset.
fn dwarf_fields(
    dies: &[Die],
    by_offset: &BTreeMap<u64, usize>,
    index: usize,
    base: u64,
    out: &mut BTreeSet<Placed>,
) {
    let depth = dies[index].depth;
    for d in dies[index + 1..].iter().take_while(|d| d.depth > depth) {
        if d.depth != depth + 1 || d.tag != "DW_TAG_member" {
            continue;
        }
        let loc = base + d.attr_num("DW_AT_data_member_location").unwrap_or(0);
        match (d.attr_str("DW_AT_name"), d.attr_num("DW_AT_bit_size")) {
            (Some(name), Some(bits)) => {
                let first = base * 8 + d.attr_num("DW_AT_data_bit_offset").unwrap();
                out.insert((name, first / 8, Some(((first % 8) as u32, bits as u32))));
            }
            (Some(name), None) => {
                out.insert((name, loc, None));
            }
            (None, _) => {
                let ty = d.attr_num("DW_AT_type").unwrap();
                dwarf_fields(dies, by_offset, by_offset[&ty], loc, out);
            }
        }
    }
}

/// Every complete, named record of an ELF image, from llvm-dwarfdump.
fn dwarfdump_shapes(path: &Path) -> BTreeMap<String, BTreeSet<Shape>> {
    let dies = dwarfdump(path);
    let by_offset: BTreeMap<u64, usize> = dies
        .iter()
        .enumerate()
        .map(|(i, d)| (d.offset, i))
        .collect();
    let mut typedef_names: BTreeMap<u64, String> = BTreeMap::new();
    for d in dies.iter().filter(|d| d.tag == "DW_TAG_typedef") {
        if let (Some(name), Some(ty)) = (d.attr_str("DW_AT_name"), d.attr_num("DW_AT_type")) {
            typedef_names.entry(ty).or_insert(name);
        }
    }
    let mut out: BTreeMap<String, BTreeSet<Shape>> = BTreeMap::new();
    for (i, d) in dies.iter().enumerate() {
        if !matches!(
            d.tag.as_str(),
            "DW_TAG_structure_type" | "DW_TAG_union_type" | "DW_TAG_class_type"
        ) || d.attrs.contains_key("DW_AT_declaration")
        {
            continue;
        }
        let Some(size) = d.attr_num("DW_AT_byte_size") else {
            continue;
        };
        let Some(name) = d
            .attr_str("DW_AT_name")
            .or_else(|| typedef_names.get(&d.offset).cloned())
        else {
            continue;
        };
        let mut fields = BTreeSet::new();
        dwarf_fields(&dies, &by_offset, i, 0, &mut fields);
        out.entry(name).or_default().insert((size, fields));
    }
    out
}

/// Every named record definition of a PDB, from llvm-pdbutil.
fn pdbutil_shapes(pdb: &Path) -> BTreeMap<String, BTreeSet<Shape>> {
    let text = run(
        "llvm-pdbutil-19",
        &["dump", "--types", pdb.to_str().unwrap()],
    );
    // Records: index -> (leaf, name, body lines).
    let mut records: BTreeMap<u64, (String, String, Vec<String>)> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some((index, rest)) = t.split_once(" | ") {
            if let Some(hex) = index.strip_prefix("0x") {
                let index = u64::from_str_radix(hex, 16).unwrap();
                let leaf = rest.split_whitespace().next().unwrap().to_string();
                let name = match (rest.find('`'), rest.rfind('`')) {
                    (Some(a), Some(b)) if b > a => rest[a + 1..b].to_string(),
                    _ => String::new(),
                };
                records.insert(index, (leaf, name, Vec::new()));
                current = Some(index);
                continue;
            }
        }
        if let Some(r) = current.and_then(|c| records.get_mut(&c)) {
            r.2.push(t.to_string());
        }
    }
    let field = |s: &str, key: &str| -> Option<String> {
        let at = s.find(key)? + key.len();
        let rest = &s[at..];
        let end = rest.find([',', ']']).unwrap_or(rest.len());
        Some(rest[..end].trim().to_string())
    };
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let mut out: BTreeMap<String, BTreeSet<Shape>> = BTreeMap::new();
    for (leaf, name, body) in records.values() {
        if !matches!(leaf.as_str(), "LF_STRUCTURE" | "LF_CLASS" | "LF_UNION") {
            continue;
        }
        let options = body.iter().find(|l| l.starts_with("options:")).unwrap();
        if options.contains("forward ref") || name.contains("<unnamed-tag>") {
            continue;
        }
        let size: u64 = options
            .rsplit("sizeof ")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let list = body
            .iter()
            .find_map(|l| field(l, "field list: "))
            .and_then(|v| hex(&v));
        let mut fields = BTreeSet::new();
        if let Some(list) = list {
            for m in &records[&list].2 {
                if !m.starts_with("- LF_MEMBER") {
                    continue;
                }
                let mname = m.split('`').nth(1).unwrap().to_string();
                let offset: u64 = field(m, "offset = ").unwrap().parse().unwrap();
                let ty = field(m, "Type = ").unwrap();
                let ty = hex(ty.split_whitespace().next().unwrap()).unwrap();
                let bit = match records.get(&ty) {
                    Some((leaf, _, b)) if leaf == "LF_BITFIELD" => {
                        let pos: u64 = field(&b[0], "bit offset = ").unwrap().parse().unwrap();
                        let width: u32 = field(&b[0], "# bits = ").unwrap().parse().unwrap();
                        Some((offset * 8 + pos, width))
                    }
                    _ => None,
                };
                match bit {
                    Some((first, width)) => {
                        fields.insert((mname, first / 8, Some(((first % 8) as u32, width))));
                    }
                    None => {
                        fields.insert((mname, offset, None));
                    }
                }
            }
        }
        out.entry(name.clone()).or_default().insert((size, fields));
    }
    out
}

/// Every complete named record of every corpus image, with its size and
/// the offset and bits of every field, is exactly what the LLVM dumpers
/// show; and each image has all of them.
#[test]
fn layouts_agree_with_llvm_dumpers_on_the_whole_corpus() {
    let mut compared = 0;
    for (scenario, target, version, path) in images() {
        let bytes = load(&path);
        let image = parse(&bytes, &path);
        let what = format!("{scenario} {target} {version}");
        if corpus().join(&scenario).join("shipped-stripped").is_file() {
            // Shipped without DWARF or PDB (corpus/build.sh): nothing to
            // read types from, and the model says so.
            assert_eq!(image.type_info, TypeInfo::Absent, "{what}");
            assert!(image.types.is_empty() && image.type_uses.is_empty());
            continue;
        }
        assert_eq!(image.type_info, TypeInfo::Read, "{what}");
        let theirs = if target.ends_with("windows") {
            pdbutil_shapes(&path.with_extension("pdb"))
        } else {
            dwarfdump_shapes(&path)
        };
        let ours = our_shapes(&image);
        assert_eq!(ours, theirs, "{what}");
        compared += ours.len();
    }
    assert!(compared >= 60, "only {compared} layouts compared");
}

/// Exact layouts, field sizes included, of the types the new scenarios are
/// about, on every target and version.
#[test]
fn scenario_layouts_are_exact() {
    let f = |name: &str, offset: u64, size: u64| (name.to_string(), offset, size, None);
    let b = |name: &str, offset: u64, bit: u32, width: u32| {
        (name.to_string(), offset, 4, Some((bit, width)))
    };
    #[allow(clippy::type_complexity)] // One table of literal cases.
    let cases: Vec<(
        &str,
        &str,
        &str,
        TypeKind,
        u64,
        Vec<(String, u64, u64, Option<(u32, u32)>)>,
    )> = vec![
        (
            "14-heap-struct-grows",
            "v1",
            "conn",
            TypeKind::Struct,
            16,
            vec![f("id", 0, 4), f("state", 4, 4), f("bytes", 8, 8)],
        ),
        (
            "14-heap-struct-grows",
            "v2",
            "conn",
            TypeKind::Struct,
            24,
            vec![
                f("id", 0, 4),
                f("state", 4, 4),
                f("limit", 8, 8),
                f("bytes", 16, 8),
            ],
        ),
        (
            "15-heap-struct-override",
            "v1",
            "bucket",
            TypeKind::Struct,
            16,
            vec![f("tokens", 0, 8), f("refill", 8, 8)],
        ),
        (
            "15-heap-struct-override",
            "v2",
            "bucket",
            TypeKind::Struct,
            24,
            vec![f("tokens", 0, 8), f("refill", 8, 8), f("burst", 16, 8)],
        ),
        (
            "16-struct-unchanged-users",
            "v2",
            "stats",
            TypeKind::Struct,
            24,
            vec![f("pkts", 0, 8), f("bytes", 8, 8), f("drops", 16, 8)],
        ),
        (
            "16-struct-unchanged-users",
            "v1",
            "hdr_bits",
            TypeKind::Union,
            16,
            vec![f("h", 0, 12), f("raw", 0, 16)],
        ),
        (
            "16-struct-unchanged-users",
            "v1",
            "pkt_hdr",
            TypeKind::Struct,
            12,
            vec![
                b("version", 0, 0, 4),
                b("ihl", 0, 4, 4),
                b("tos", 1, 0, 8),
                b("len", 2, 0, 16),
                f("bytes", 4, 4),
                f("word", 4, 4),
                f("ident", 8, 4),
            ],
        ),
        (
            "13-cumulative-series",
            "v3",
            "event",
            TypeKind::Struct,
            8,
            vec![f("code", 0, 4), f("size", 4, 4)],
        ),
        (
            "08-struct-grows",
            "v2",
            "session_state",
            TypeKind::Struct,
            32,
            vec![
                f("state", 0, 4),
                f("retries", 4, 4),
                f("bytes_in", 8, 8),
                f("frames_in", 16, 8),
                f("byte_limit", 24, 8),
            ],
        ),
    ];
    for (scenario, version, name, kind, size, fields) in cases {
        for target in TARGETS {
            let ext = if target.ends_with("windows") {
                "dll"
            } else {
                "so"
            };
            let path = corpus().join(format!("{scenario}/bin/{target}/{version}.{ext}"));
            let bytes = load(&path);
            let image = parse(&bytes, &path);
            let layouts = image.layouts_named(name);
            assert_eq!(layouts.len(), 1, "{scenario} {target} {name}");
            let t = &layouts[0];
            assert_eq!((t.kind, t.size), (kind, size), "{scenario} {target} {name}");
            let got: BTreeSet<_> = t
                .fields
                .iter()
                .map(|f| (f.name.clone(), f.offset, f.size, f.bit))
                .collect();
            let want: BTreeSet<_> = fields.iter().cloned().collect();
            assert_eq!(got, want, "{scenario} {target} {name}");
        }
    }
}

/// The types a function uses, on every target and version, are exactly
/// those its source gives its parameters, locals, return type and inlined
/// callees. GCC clones (`name.isra.0`, `name.part.0`, `name.constprop.0`)
/// count as their function.
#[test]
fn type_uses_are_what_the_sources_say() {
    /// A function and the types it uses.
    type Uses<'a> = (&'a str, &'a [&'a str]);
    let cases: &[(&str, &[Uses<'_>])] = &[
        (
            "13-cumulative-series",
            &[
                ("log_push", &["event"]),
                ("log_code", &[]),
                ("log_bytes", &[]),
                ("log_dropped", &[]),
                // `digest` (local `const struct event *e`) is inlined into these.
                ("log_digest", &["event"]),
                ("log_verify", &["event"]),
                ("event_bytes", &["event"]),
            ],
        ),
        (
            "08-struct-grows",
            // Only a global of the struct type: not a use.
            &[
                ("sess_recv", &[]),
                ("sess_retry", &[]),
                ("sess_frames", &[]),
            ],
        ),
        (
            "14-heap-struct-grows",
            &[
                ("arena_alloc", &[]),
                ("conn_open", &["conn"]),
                ("conn_accept", &["conn"]),
                ("conn_recv", &["conn"]),
                ("conn_bytes", &["conn"]),
            ],
        ),
        (
            "15-heap-struct-override",
            &[
                ("bucket_new", &["bucket"]),
                ("bucket_take", &["bucket"]),
                ("bucket_tick", &["bucket"]),
            ],
        ),
        (
            "16-struct-unchanged-users",
            &[
                ("stats_open", &["stats"]),
                ("stats_count", &["stats"]),
                ("stats_bytes", &["stats"]),
                ("ring_put", &[]),
                ("ring_get", &[]),
                ("ring_canary", &[]),
                ("hdr_len", &["hdr_bits"]),
                ("hdr_bytes", &["pkt_hdr"]),
            ],
        ),
    ];
    let mut checked = 0;
    for (scenario, funcs) in cases {
        for (s, target, version, path) in images() {
            if s != *scenario {
                continue;
            }
            let bytes = load(&path);
            let image = parse(&bytes, &path);
            for (name, want) in *funcs {
                let parts: Vec<_> = image
                    .functions
                    .iter()
                    .filter(|f| {
                        f.name == *name
                            || f.name
                                .strip_prefix(name)
                                .is_some_and(|r| r.starts_with('.'))
                    })
                    .collect();
                assert!(
                    !parts.is_empty(),
                    "{scenario} {target} {version}: no {name}"
                );
                // A function's parts use one set of types: the .cold part
                // may have no debug entry of its own, the others do.
                let mut got = BTreeSet::new();
                for p in &parts {
                    got.extend(image.types_used_at(p.rva).iter().cloned());
                }
                let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
                assert_eq!(got, want, "{scenario} {target} {version} {name}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 150, "only {checked} checks");
}

/// Damaged DWARF never panics the reader: flipping bytes of `.debug_info`
/// and `.debug_abbrev` either still reads or gives a one-line error that
/// names the file.
#[test]
fn damaged_dwarf_is_a_clear_error_not_a_panic() {
    use object::{Object, ObjectSection};

    let path = corpus().join("16-struct-unchanged-users/bin/x86_64-linux/v1.so");
    let clean = load(&path);
    let file = object::File::parse(&*clean).unwrap();
    let mut ranges = Vec::new();
    for name in [".debug_info", ".debug_abbrev", ".debug_str"] {
        let s = file.section_by_name(name).unwrap();
        let (start, len) = s.file_range().unwrap();
        ranges.push((start as usize, len as usize));
    }
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut errors, mut oks) = (0, 0);
    for round in 0..600 {
        let mut bytes = clean.clone();
        let (start, len) = ranges[round % ranges.len()];
        for _ in 0..(1 + round % 4) {
            let at = start + (next() as usize) % len;
            bytes[at] = next() as u8;
        }
        match read::parse(&bytes, &ReadOptions::new(&path)) {
            Ok(_) => oks += 1,
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with(&path.display().to_string()), "{msg}");
                assert!(!msg.contains('\n'), "{msg}");
                errors += 1;
            }
        }
    }
    assert!(errors > 50 && oks > 10, "{errors} errors, {oks} reads");

    // A truncated .debug_info: the unit runs past the section's end.
    let (start, len) = ranges[0];
    let mut bytes = clean.clone();
    // Declare a unit far longer than the section.
    bytes[start..start + 4].copy_from_slice(&((len as u32) * 4).to_le_bytes());
    let msg = read::parse(&bytes, &ReadOptions::new(&path))
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("malformed DWARF debug information") && msg.contains(".debug_info"),
        "{msg}"
    );
}

/// An image built without -g has no DWARF: nothing to read, and it says so.
#[test]
fn an_image_without_dwarf_has_no_type_info() {
    let path = corpus().join("16-struct-unchanged-users/bin/x86_64-linux/v1.so");
    let dir = std::env::temp_dir().join(format!("hp-types-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stripped = dir.join("v1.so");
    run(
        "llvm-objcopy-19",
        &[
            "--strip-debug",
            path.to_str().unwrap(),
            stripped.to_str().unwrap(),
        ],
    );
    let bytes = load(&stripped);
    let image = parse(&bytes, &stripped);
    assert_eq!(image.type_info, TypeInfo::Absent);
    assert!(image.types.is_empty() && image.type_uses.is_empty());
    // Still a full image otherwise.
    assert!(image.functions.iter().any(|f| f.name == "stats_open"));

    // Compressed DWARF is there but not read: said so, not an error.
    let compressed = dir.join("v1z.so");
    run(
        "llvm-objcopy-19",
        &[
            "--compress-debug-sections=zlib",
            path.to_str().unwrap(),
            compressed.to_str().unwrap(),
        ],
    );
    let bytes = load(&compressed);
    let image = parse(&bytes, &compressed);
    match &image.type_info {
        TypeInfo::Unsupported(why) => assert!(why.contains("compressed"), "{why}"),
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

//! The corpus `expected.toml` vectors hold on every target when each
//! version is loaded (at a non-preferred base) and called in the VM.

use std::path::{Path, PathBuf};

use hotpatch_emulator::{Arg, LoadOptions, Vm};

/// Instructions allowed per call: the corpus functions are small loops.
const BUDGET: u64 = 5_000_000;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

struct Vector {
    call: String,
    args: Vec<Arg>,
    expect: toml::Table,
}

fn scenarios() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("corpus/ is missing")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("expected.toml").is_file())
        .collect();
    v.sort();
    assert!(v.len() >= 16, "only {} scenarios", v.len());
    v
}

fn versions(scenario: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(scenario.join("src"))
        .expect("src/ is missing")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort_by_key(|s| s.trim_start_matches('v').parse::<u32>().unwrap_or(u32::MAX));
    v
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn vectors(scenario: &Path) -> Vec<Vector> {
    let text = std::fs::read_to_string(scenario.join("expected.toml")).expect("expected.toml");
    let doc: toml::Table = toml::from_str(&text).expect("expected.toml parses");
    let list = doc
        .get("vector")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    list.iter()
        .map(|v| {
            let t = v.as_table().expect("vector table");
            let args = t
                .get("args")
                .and_then(|a| a.as_array())
                .expect("args")
                .iter()
                .map(|a| match a {
                    toml::Value::Integer(i) => Arg::Int(*i),
                    toml::Value::Table(h) => Arg::Bytes(hex(h
                        .get("hex")
                        .and_then(|x| x.as_str())
                        .expect("{ hex = .. }"))),
                    other => panic!("unexpected argument {other}"),
                })
                .collect();
            Vector {
                call: t
                    .get("call")
                    .and_then(|c| c.as_str())
                    .expect("call")
                    .to_owned(),
                args,
                expect: t
                    .get("expect")
                    .and_then(|e| e.as_table())
                    .cloned()
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// Run every scenario's vectors on `target`; returns the number of calls.
fn run_target(target: &str) -> usize {
    let ext = if target.ends_with("windows") {
        "dll"
    } else {
        "so"
    };
    let mut calls = 0;
    let mut failures = Vec::new();
    for dir in scenarios() {
        let vecs = vectors(&dir);
        assert!(!vecs.is_empty(), "{}: no vectors", dir.display());
        for v in versions(&dir) {
            let path = dir.join("bin").join(target).join(format!("{v}.{ext}"));
            let mut vm =
                Vm::load_file(&path, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
            assert_ne!(vm.image().base, vm.image().preferred_base);
            for (i, vec) in vecs.iter().enumerate() {
                let want = vec
                    .expect
                    .get(&v)
                    .and_then(|x| x.as_integer())
                    .unwrap_or_else(|| panic!("{}: vector {i} has no {v}", dir.display()));
                match vm.call(&vec.call, &vec.args, BUDGET) {
                    Ok(r) if r.value == want => {}
                    Ok(r) => failures.push(format!(
                        "{} vector {i}: {}({:?}) = {}, expected {want}",
                        path.display(),
                        vec.call,
                        vec.args,
                        r.value
                    )),
                    Err(e) => failures.push(format!("{} vector {i}: {e}", path.display())),
                }
                calls += 1;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    calls
}

#[test]
fn vectors_hold_on_x86_64_linux() {
    assert!(run_target("x86_64-linux") > 100);
}

#[test]
fn vectors_hold_on_aarch64_linux() {
    assert!(run_target("aarch64-linux") > 100);
}

#[test]
fn vectors_hold_on_x86_64_windows() {
    assert!(run_target("x86_64-windows") > 100);
}

#[test]
fn vectors_hold_on_aarch64_windows() {
    assert!(run_target("aarch64-windows") > 100);
}

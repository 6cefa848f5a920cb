//! hotpatch-corpus-gen: writes a large synthetic C program in two versions
//! (v1 = baseline, v2 = update) that differ in exactly a chosen set of
//! functions, builds both for one target, and records the ground truth.
//! See README.md.
//!
//! Linted against panic sources like the rest of the workspace: a bad
//! argument or a failed build is an error message, not a panic. The unit
//! tests index and unwrap freely.
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

mod emit;
mod image;
mod plan;
mod rng;
mod toolchain;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;

use plan::{Params, Plan};
use toolchain::Target;

/// Generate and build a large baseline/updated pair of a synthetic C program
/// whose only source differences are a known set of changed functions.
#[derive(Debug, Parser)]
#[command(name = "hotpatch-corpus-gen", version)]
struct Cli {
    /// Output directory (created if missing; its src/, obj/ and outputs are replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of generated functions.
    #[arg(long, default_value_t = 50_000)]
    functions: usize,
    /// Number of functions whose body differs between v1 and v2.
    #[arg(long, default_value_t = 50)]
    changed: usize,
    /// Seed of every random choice; the same arguments give the same output.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Target to build for.
    #[arg(long, value_enum, default_value_t = Target::X86_64Linux)]
    target: Target,
    /// Compiler processes to run at once [default: number of CPUs].
    #[arg(long)]
    jobs: Option<usize>,
    /// Functions per translation unit.
    #[arg(long, default_value_t = 100, value_name = "N")]
    unit_size: usize,
    /// Compile every v2 unit, even those whose source is identical to v1's
    /// (by default their v1 object is reused: compilation is deterministic).
    #[arg(long)]
    full_rebuild: bool,
    /// Only write the sources, changed.txt and summary.json; build nothing.
    #[arg(long)]
    no_build: bool,
}

#[derive(serde::Serialize)]
struct Summary {
    generator: &'static str,
    target: &'static str,
    seed: u64,
    functions: usize,
    exported: usize,
    changed: usize,
    mutations: BTreeMap<&'static str, usize>,
    units: usize,
    units_changed: usize,
    source_bytes: BTreeMap<&'static str, u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    images: BTreeMap<&'static str, image::ImageStats>,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("hotpatch-corpus-gen: error: {e:#}");
        std::process::exit(1);
    }
}

fn write(path: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    fs::write(path, data).with_context(|| format!("cannot write {}", path.display()))
}

fn reset_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn run(cli: &Cli) -> Result<()> {
    let start = Instant::now();
    let target = cli.target;
    let jobs = cli
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let plan = Plan::new(Params {
        functions: cli.functions,
        changed: cli.changed,
        seed: cli.seed,
        unit_size: cli.unit_size,
    })?;

    if !cli.no_build {
        toolchain::probe(
            target.compiler(),
            &format!("to compile for {}", target.name()),
        )?;
        if target.linker() != target.compiler() {
            toolchain::probe(target.linker(), &format!("to link for {}", target.name()))?;
        }
    }

    // Output layout. Only what this tool writes is removed.
    let out = &cli.out;
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let out = fs::canonicalize(out).with_context(|| format!("cannot resolve {}", out.display()))?;
    let stale = ["v1", "v2"]
        .into_iter()
        .flat_map(Target::all_outputs)
        .chain(["changed.txt".into(), "summary.json".into()]);
    for name in stale {
        let p = out.join(name);
        if p.exists() {
            fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
    }
    let src = [out.join("src/v1"), out.join("src/v2")];
    for d in &src {
        reset_dir(d)?;
    }
    if out.join("obj").exists() {
        fs::remove_dir_all(out.join("obj"))
            .with_context(|| format!("cannot remove {}", out.join("obj").display()))?;
    }

    // ---- sources ---------------------------------------------------------
    let names: Vec<String> = (0..plan.units.len())
        .map(|u| emit::unit_file_name(&plan, u))
        .collect::<Result<_, _>>()?;
    let (mut v1_bytes, mut v2_bytes) = (0u64, 0u64);
    let add = |total: u64, text: &str| {
        u64::try_from(text.len())
            .ok()
            .and_then(|n| total.checked_add(n))
            .context("the sources add up past 2^64 bytes")
    };
    let mut differing = Vec::new();
    let [src1, src2] = &src;
    for (u, name) in names.iter().enumerate() {
        let v1 = emit::render_unit(&plan, u, false)?;
        // A unit without a changed function renders identically in v2.
        let v2 = if plan.unit_changed(u) {
            emit::render_unit(&plan, u, true)?
        } else {
            v1.clone()
        };
        if v1 != v2 {
            differing.push(u);
        }
        v1_bytes = add(v1_bytes, &v1)?;
        v2_bytes = add(v2_bytes, &v2)?;
        write(&src1.join(name), v1)?;
        write(&src2.join(name), v2)?;
    }
    let changed = plan.changed_names()?;
    let mut changed_txt = changed.join("\n");
    if !changed_txt.is_empty() {
        changed_txt.push('\n');
    }
    write(&out.join("changed.txt"), changed_txt)?;
    eprintln!(
        "generated {} functions in {} units ({:.1} MB of C per version, {} units differ) in {:.1}s",
        plan.funcs.len(),
        names.len(),
        v1_bytes as f64 / 1e6,
        differing.len(),
        start.elapsed().as_secs_f64()
    );

    let mut mutations = BTreeMap::new();
    for m in plan.changes.values() {
        // At most one per changed function: cannot overflow.
        let n: &mut usize = mutations.entry(m.name()).or_insert(0);
        *n = n.saturating_add(1);
    }
    let mut summary = Summary {
        generator: "hotpatch-corpus-gen",
        target: target.name(),
        seed: cli.seed,
        functions: plan.funcs.len(),
        exported: plan.funcs.iter().filter(|f| f.exported).count(),
        changed: changed.len(),
        mutations,
        units: names.len(),
        units_changed: differing.len(),
        source_bytes: [("v1", v1_bytes), ("v2", v2_bytes)].into(),
        images: BTreeMap::new(),
    };

    if !cli.no_build {
        build(cli, &out, &names, &differing, jobs, &mut summary)?;
    }

    let mut json = serde_json::to_string_pretty(&summary)?;
    json.push('\n');
    write(&out.join("summary.json"), json)?;
    eprintln!(
        "done in {:.1}s: {}",
        start.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

fn build(
    cli: &Cli,
    out: &Path,
    names: &[String],
    differing: &[usize],
    jobs: usize,
    summary: &mut Summary,
) -> Result<()> {
    let target = cli.target;
    let src = [out.join("src/v1"), out.join("src/v2")];
    let obj = [out.join("obj/v1"), out.join("obj/v2")];
    for d in &obj {
        reset_dir(d)?;
    }
    let objects: Vec<String> = names
        .iter()
        .map(|n| format!("{}.{}", n.trim_end_matches(".c"), target.object_ext()))
        .collect();

    // v1: every unit. v2: the differing units, or all with --full-rebuild.
    let t = Instant::now();
    let v2_units: Vec<usize> = if cli.full_rebuild {
        (0..names.len()).collect()
    } else {
        differing.to_vec()
    };
    let why = format!("to compile for {}", target.name());
    let mut cmds = Vec::new();
    // One queue for both versions, so every job slot stays busy.
    for &u in &v2_units {
        let name = names
            .get(u)
            .with_context(|| format!("internal error: no unit {u}"))?;
        cmds.push((target.compile_command(&src[1], name, &obj[1]), why.clone()));
    }
    for name in names {
        cmds.push((target.compile_command(&src[0], name, &obj[0]), why.clone()));
    }
    let compiled = cmds.len();
    let warnings = toolchain::run_all(cmds, jobs)?;
    if !warnings.is_empty() {
        eprintln!("compiler warnings:\n{}", warnings.trim_end());
    }
    let mut reused = 0usize;
    if !cli.full_rebuild {
        for (u, o) in objects.iter().enumerate() {
            if !differing.contains(&u) {
                let (from, to) = (obj[0].join(o), obj[1].join(o));
                // A hard link would do, but a copy keeps obj/v2 independent.
                fs::copy(&from, &to).with_context(|| {
                    format!("cannot copy {} to {}", from.display(), to.display())
                })?;
                // At most one per unit: cannot overflow.
                reused = reused.saturating_add(1);
            }
        }
    }
    eprintln!(
        "compiled {compiled} units with {jobs} jobs ({reused} identical v2 objects reused) in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let why = format!("to link for {}", target.name());
    let links = ["v1", "v2"]
        .into_iter()
        .map(|vn| (target.link_command(out, &objects, vn), why.clone()))
        .collect();
    let warnings = toolchain::run_all(links, jobs)?;
    if !warnings.is_empty() {
        eprintln!("linker warnings:\n{}", warnings.trim_end());
    }
    eprintln!("linked v1 and v2 in {:.1}s", t.elapsed().as_secs_f64());

    for v in ["v1", "v2"] {
        let path = out.join(target.image_name(v));
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let st =
            image::stats(&bytes).with_context(|| format!("cannot parse {}", path.display()))?;
        eprintln!(
            "{}: {:.2} MB of code, {:.2} MB file",
            path.display(),
            st.text_bytes as f64 / 1e6,
            st.file_bytes as f64 / 1e6
        );
        summary.images.insert(v, st);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn small(seed: u64, functions: usize, changed: usize) -> Plan {
        Plan::new(Params {
            functions,
            changed,
            seed,
            unit_size: 40,
        })
        .unwrap()
    }

    /// Splits a rendered unit into (prologue, [(function name, text)]).
    fn split(plan: &Plan, u: usize, text: &str) -> (String, Vec<(String, String)>) {
        let range = plan.units[u].clone();
        let mut funcs = Vec::new();
        let mut rest = text;
        let mut prologue = None;
        for i in range.rev() {
            let f = &plan.funcs[i];
            let body = emit::render_function(plan, i, &plan.body(i, false).unwrap()).unwrap();
            let head = body.lines().next().unwrap();
            let at = rest.rfind(&format!("\n{head}")).expect("function header") + 1;
            funcs.push((f.name.clone(), rest[at..].to_string()));
            rest = &rest[..at];
            prologue = Some(rest.to_string());
        }
        funcs.reverse();
        (prologue.unwrap(), funcs)
    }

    #[test]
    fn changed_txt_is_exactly_the_functions_whose_source_differs() {
        for (seed, n, c) in [(1, 400, 60), (7, 250, 250), (99, 120, 0), (3, 1000, 10)] {
            let plan = small(seed, n, c);
            let mut differ = BTreeSet::new();
            let mut seen = 0;
            for u in 0..plan.units.len() {
                let v1 = emit::render_unit(&plan, u, false).unwrap();
                let v2 = emit::render_unit(&plan, u, true).unwrap();
                let (p1, f1) = split(&plan, u, &v1);
                let (p2, f2) = split(&plan, u, &v2);
                assert_eq!(p1, p2, "unit {u}: text outside functions differs");
                assert_eq!(f1.len(), f2.len());
                for ((n1, t1), (n2, t2)) in f1.iter().zip(&f2) {
                    assert_eq!(n1, n2);
                    seen += 1;
                    if t1 != t2 {
                        differ.insert(n1.clone());
                    }
                }
                if !plan.unit_changed(u) {
                    assert_eq!(v1, v2);
                }
            }
            assert_eq!(seen, n);
            let listed: BTreeSet<String> = plan.changed_names().unwrap().into_iter().collect();
            assert_eq!(plan.changed_names().unwrap().len(), c);
            assert_eq!(differ, listed, "seed {seed}");
        }
    }

    #[test]
    fn generation_is_deterministic_and_seed_dependent() {
        let a = small(5, 300, 20);
        let b = small(5, 300, 20);
        let c = small(6, 300, 20);
        assert_eq!(a.changed_names().unwrap(), b.changed_names().unwrap());
        for u in 0..a.units.len() {
            assert_eq!(
                emit::render_unit(&a, u, true).unwrap(),
                emit::render_unit(&b, u, true).unwrap()
            );
        }
        assert_ne!(
            emit::render_unit(&a, 0, false).unwrap(),
            emit::render_unit(&c, 0, false).unwrap()
        );
    }

    #[test]
    fn names_are_unique_and_calls_cross_units() {
        let plan = small(11, 500, 5);
        let names: BTreeSet<&str> = plan.funcs.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names.len(), plan.funcs.len());
        for (i, f) in plan.funcs.iter().enumerate() {
            for b in plan.body(i, true).unwrap().blocks {
                if let plan::Block::Call { callee, .. } = b {
                    assert_ne!(plan.funcs[callee].unit, f.unit);
                    assert!(!plan.funcs[callee].exported);
                }
            }
        }
    }

    #[test]
    fn bad_parameters_are_rejected() {
        let p = |functions, changed| Params {
            functions,
            changed,
            seed: 1,
            unit_size: 10,
        };
        let err = |p| Plan::new(p).unwrap_err().to_string();
        assert_eq!(err(p(10, 0)), "--functions must be at least 20 (got 10)");
        assert_eq!(
            err(p(100, 101)),
            "--changed (101) cannot exceed --functions (100)"
        );
        assert!(Plan::new(p(100, 100)).is_ok());
        let mut zero = p(100, 1);
        zero.unit_size = 0;
        assert_eq!(err(zero), "--unit-size must be at least 1");
        // More functions than the generator holds in memory are refused
        // before anything is allocated for them.
        assert_eq!(
            err(p(usize::MAX / 2, 0)),
            format!(
                "--functions {} is over the limit of 10000000",
                usize::MAX / 2
            )
        );
        assert!(Plan::new(p(plan::MAX_FUNCTIONS + 1, 0)).is_err());
    }
}

//! `hotpatch replay`: run vectors on a baseline in the emulated VM, apply a
//! package between two calls without reloading (then maybe a second one,
//! and a revert), and prove that the patched baseline behaves as the
//! updated build: from the start, and from the moment the patch lands with
//! the state it then has. Argument handling and output; the work is done
//! by `hotpatch_applier` (the engine) and `hotpatch_emulator` (the VM).

mod transfer;
mod vectors;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::Args;
use hotpatch_applier::state::AppliedPackage;
use hotpatch_applier::{Applied, Engine, Reverted, Target};
use hotpatch_emulator::{Arg, Base, LoadOptions, Vm, DEFAULT_BIAS};
use hotpatch_formats::package::{Sha256Digest, Timestamp};
use hotpatch_formats::{read, Image};
use hotpatch_signer::{TrustPolicy, Verified};
use serde::Serialize;

use crate::{read_options, Usage};
use vectors::Vector;

/// Instructions one call may run.
const BUDGET: u64 = 50_000_000;
/// How much further than the baseline's VMs the updated image's VMs are
/// loaded (512 MiB).
const UPDATED_SHIFT: u64 = 0x2000_0000;

/// `hotpatch replay`.
#[derive(Args)]
pub struct ReplayArgs {
    /// The signed package to apply.
    package: PathBuf,
    /// The trust policy (TOML).
    #[arg(long, value_name = "TRUST.toml")]
    trust: PathBuf,
    /// The baseline image, loaded into the VM at a base it does not prefer.
    #[arg(long, value_name = "IMG")]
    baseline: PathBuf,
    /// The baseline's PDB (PE only; default: beside the image).
    #[arg(long, value_name = "PDB")]
    baseline_pdb: Option<PathBuf>,
    /// The updated image: enables both differential checks.
    #[arg(long, value_name = "IMG")]
    updated: Option<PathBuf>,
    /// The update's PDB (PE only; default: beside the image).
    #[arg(long, value_name = "PDB", requires = "updated")]
    updated_pdb: Option<PathBuf>,
    /// The vectors: a TOML file of `[[vector]]` entries (a corpus
    /// expected.toml is read as it is).
    #[arg(long, value_name = "FILE")]
    vectors: PathBuf,
    /// Apply the package after this many calls (default: half of them).
    #[arg(long, value_name = "N")]
    apply_at: Option<usize>,
    /// A second, newer package, applied over the first (it replaces it).
    #[arg(long, value_name = "PKG2")]
    then: Option<PathBuf>,
    /// Apply PKG2 after this many calls (default: halfway between the first
    /// apply and the end).
    #[arg(long, value_name = "M", requires = "then")]
    then_at: Option<usize>,
    /// Revert the applied package after this many calls.
    #[arg(long, value_name = "K")]
    revert_at: Option<usize>,
    /// Verify as of this time (YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DD) instead
    /// of now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// What a call gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    /// It returned.
    Returned {
        /// The return register.
        value: i64,
        /// Buffer arguments' bytes afterwards, in hex.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        buffers: Vec<String>,
    },
    /// It faulted, ran out of budget, or called an import.
    Failed(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Returned { value, buffers } if buffers.is_empty() => write!(f, "{value}"),
            Outcome::Returned { value, buffers } => {
                write!(f, "{value} [{}]", buffers.join(" "))
            }
            Outcome::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

impl Outcome {
    fn value(&self) -> Option<i64> {
        match self {
            Outcome::Returned { value, .. } => Some(*value),
            Outcome::Failed(_) => None,
        }
    }
}

fn call(vm: &mut Vm, v: &Vector) -> Outcome {
    let args: Vec<Arg> = match v.args() {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    match vm.call(&v.call, &args, BUDGET) {
        Ok(r) => Outcome::Returned {
            value: r.value,
            buffers: r
                .buffers
                .iter()
                .map(|b| hotpatch_formats::package::digest::to_hex(b))
                .collect(),
        },
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Which code the main VM runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Phase {
    Baseline,
    Patched,
    PatchedThen,
    Reverted,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Baseline => "before",
            Phase::Patched => "after",
            Phase::PatchedThen => "after2",
            Phase::Reverted => "reverted",
        }
    }
}

/// One vector's line of the report.
#[derive(Serialize)]
struct VectorReport {
    index: usize,
    call: String,
    phase: Phase,
    result: Outcome,
    /// The expectation's key and value, if the vectors give one.
    #[serde(skip_serializing_if = "Option::is_none")]
    expect: Option<(String, i64)>,
    /// The mid-run updated VM's result, while the package is applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_vm: Option<Outcome>,
    /// Whether the result is the expectation's (which assumes one build
    /// ran from the start).
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<bool>,
    matches: bool,
}

/// A step done between calls.
#[derive(Serialize)]
struct StepReport {
    /// After this many calls.
    after_call: usize,
    /// `apply`, `apply-then` or `revert`.
    what: &'static str,
    /// The package file (apply).
    #[serde(skip_serializing_if = "Option::is_none")]
    package: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied: Option<Applied>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reverted: Option<Reverted>,
}

/// A differential check's result.
#[derive(Serialize)]
struct Differential {
    compared: usize,
    agree: usize,
    /// The vectors (1-based) where they differ, with both results.
    disagreements: Vec<(usize, Outcome, Outcome)>,
    /// From the start: vectors with an expectation for the update, and
    /// those the patched baseline meets.
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<(usize, usize)>,
    /// From the start: the vectors (1-based) whose expectation the patched
    /// baseline does not meet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    table_misses: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<transfer::Copied>,
}

#[derive(Serialize)]
struct ReplayTimings {
    #[serde(serialize_with = "micros")]
    verify: Duration,
    #[serde(serialize_with = "micros")]
    plan: Duration,
    #[serde(serialize_with = "micros")]
    apply: Duration,
    #[serde(serialize_with = "micros")]
    whole: Duration,
}

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

#[derive(Serialize)]
struct Report {
    package: String,
    baseline: String,
    updated: Option<String>,
    vectors: String,
    steps: Vec<StepReport>,
    results: Vec<VectorReport>,
    from_start: Option<Differential>,
    mid_run: Option<Differential>,
    /// Vectors (1-based) whose result the fix changes: an unpatched
    /// baseline and a baseline patched before the first call differ.
    fix_changes: Vec<usize>,
    mismatches: usize,
    timings: ReplayTimings,
    pass: bool,
}

/// A package file, read.
struct Pkg {
    path: PathBuf,
    bytes: Vec<u8>,
}

fn read_pkg(path: &Path) -> Result<Pkg> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let cap = hotpatch_formats::package::header::MAX_PACKAGE_LEN;
    if meta.len() > cap {
        return Err(anyhow!(
            "{}: {} bytes is larger than any package can be",
            path.display(),
            meta.len()
        ));
    }
    Ok(Pkg {
        path: path.to_path_buf(),
        bytes: std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?,
    })
}

fn load_vm(path: &Path) -> Result<Vm> {
    Vm::load_file(path, &LoadOptions::default()).map_err(|e| anyhow!("{e}"))
}

/// A VM of the updated image, at another base than the baseline's VM, so
/// that a pointer the state copy fails to translate cannot work by chance.
fn load_updated_vm(path: &Path) -> Result<Vm> {
    let opts = LoadOptions {
        base: Base::Bias(DEFAULT_BIAS.saturating_add(UPDATED_SHIFT)),
    };
    Vm::load_file(path, &opts).map_err(|e| anyhow!("{e}"))
}

/// An image file and its model.
struct Model {
    bytes: Vec<u8>,
    opts: hotpatch_formats::ReadOptions,
}

impl Model {
    fn load(path: &Path, pdb: Option<PathBuf>) -> Result<Model> {
        let opts = read_options(path.to_path_buf(), pdb, None);
        let bytes = read::load_file(&opts.path)?;
        Ok(Model { bytes, opts })
    }

    fn image(&self) -> Result<Image<'_>> {
        Ok(read::parse(&self.bytes, &self.opts)?)
    }
}

/// The version stem of an image file (`v2` of `…/v2.so`).
fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The expectation key of the build a package produces: the stem of the
/// image beside the baseline whose SHA-256 is the package's `updated`
/// identity (how the corpus names versions), or `updated`.
fn updated_key(verified: &Verified, baseline: &Path, given: Option<&Path>) -> String {
    let Some(want) = verified
        .manifest()
        .targets
        .first()
        .map(|t| t.updated.sha256)
    else {
        return "updated".into();
    };
    let sha = |p: &Path| std::fs::read(p).ok().map(|b| Sha256Digest::of(&b));
    if let Some(g) = given {
        if sha(g) == Some(want) {
            return stem(g);
        }
    }
    let ext = baseline.extension();
    let dir = baseline.parent().unwrap_or(Path::new("."));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension() == ext)
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .into_iter()
        .find(|p| sha(p) == Some(want))
        .map_or_else(|| "updated".into(), |p| stem(&p))
}

/// The expectation of a vector under `keys` (most specific first).
fn expectation(v: &Vector, keys: &[String]) -> Option<(String, i64)> {
    keys.iter()
        .find_map(|k| v.expect.get(k).map(|x| (k.clone(), *x)))
}

/// Apply `pkg` to `vm`, refusing with a one-line reason that says whether
/// the VM's memory is unchanged.
fn apply(
    engine: &mut Engine,
    vm: &mut Vm,
    pkg: &Pkg,
    policy: &TrustPolicy,
    at: Timestamp,
    after: usize,
) -> Result<(Verified, Applied)> {
    let before = vm.memory_digest().map_err(|e| anyhow!("{e}"))?;
    let t0 = Instant::now();
    let verified = hotpatch_signer::verify(&pkg.bytes, policy, at);
    let verify_time = t0.elapsed();
    let result = verified
        .map_err(hotpatch_applier::ApplyError::from)
        .and_then(|v| engine.apply_verified(vm, &v).map(|a| (v, a)));
    match result {
        Ok((v, mut a)) => {
            a.timings.verify = verify_time;
            Ok((v, a))
        }
        Err(e) => {
            let after_digest = vm.memory_digest().map_err(|e| anyhow!("{e}"))?;
            let memory = if after_digest == before {
                "VM memory unchanged"
            } else {
                "VM MEMORY CHANGED"
            };
            Err(anyhow!(
                "{}: refused after call {after}: {e} ({memory})",
                pkg.path.display()
            ))
        }
    }
}

/// `hotpatch replay`.
pub fn run(args: ReplayArgs) -> Result<()> {
    let t_all = Instant::now();
    let at = match &args.at {
        Some(t) => Timestamp::parse(t).map_err(|e| Usage(format!("--at: {e}")))?,
        None => Timestamp::now(),
    };
    let vectors = vectors::load(&args.vectors)?;
    let n = vectors.len();
    let apply_at = args.apply_at.unwrap_or(n / 2);
    let then_at = args.then.as_ref().map(|_| {
        args.then_at
            .unwrap_or(apply_at.saturating_add(n).div_ceil(2))
    });
    for (flag, v) in [
        ("--apply-at", Some(apply_at)),
        ("--then-at", then_at),
        ("--revert-at", args.revert_at),
    ] {
        if let Some(v) = v {
            if v > n {
                return Err(Usage(format!("{flag} {v}: there are only {n} vectors")).into());
            }
        }
    }
    if then_at.is_some_and(|m| m < apply_at) {
        return Err(Usage("--then-at must not be before --apply-at".into()).into());
    }
    if let Some(k) = args.revert_at {
        if k < then_at.unwrap_or(apply_at) {
            return Err(
                Usage("--revert-at must not be before the packages are applied".into()).into(),
            );
        }
    }

    // The policy's own message names the file once.
    let policy = TrustPolicy::load(&args.trust).map_err(|e| anyhow!("{e}"))?;
    let pkg = read_pkg(&args.package)?;
    let pkg2 = args.then.as_deref().map(read_pkg).transpose()?;
    let base_model = Model::load(&args.baseline, args.baseline_pdb.clone())?;
    let base_img = base_model.image()?;
    let upd_model = args
        .updated
        .as_deref()
        .map(|p| Model::load(p, args.updated_pdb.clone()))
        .transpose()?;
    let upd_img = upd_model.as_ref().map(Model::image).transpose()?;
    let base_key = stem(&args.baseline);

    let mut engine = Engine::new();
    let mut vm = load_vm(&args.baseline)?;
    for (i, v) in vectors.iter().enumerate() {
        if vm.export(&v.call).is_err() {
            return Err(anyhow!(
                "{}: vector {} calls `{}`, which {} does not export",
                args.vectors.display(),
                i.saturating_add(1),
                v.call,
                args.baseline.display()
            ));
        }
    }
    let mut steps: Vec<StepReport> = Vec::new();
    let mut results: Vec<VectorReport> = Vec::new();
    let mut phase = Phase::Baseline;
    let mut keys: Vec<String> = vec!["baseline".into(), base_key.clone()];
    let mut mid: Option<Vm> = None;
    let mut mid_diff: Option<Differential> = None;
    let mut first_applied: Option<(Verified, Applied)> = None;
    let mut applied_images: Vec<String> = Vec::new();
    for i in 0..=n {
        if i == apply_at {
            let (v, a) = apply(&mut engine, &mut vm, &pkg, &policy, at, i)?;
            keys = vec![
                "updated".into(),
                updated_key(&v, &args.baseline, args.updated.as_deref()),
            ];
            applied_images = a.images.iter().map(|x| x.name.clone()).collect();
            phase = Phase::Patched;
            if let (Some(path), Some(upd_img)) = (&args.updated, &upd_img) {
                let mut fresh = load_updated_vm(path)?;
                let record = applied_record(&mut vm, &applied_images)?;
                let copied =
                    transfer::copy_state(&vm, &base_img, record.as_ref(), &mut fresh, upd_img)?;
                mid = Some(fresh);
                mid_diff = Some(Differential {
                    compared: 0,
                    agree: 0,
                    disagreements: Vec::new(),
                    table: None,
                    table_misses: Vec::new(),
                    state: Some(copied),
                });
            }
            steps.push(StepReport {
                after_call: i,
                what: "apply",
                package: Some(pkg.path.display().to_string()),
                applied: Some(a.clone()),
                reverted: None,
            });
            first_applied = Some((v, a));
        }
        if Some(i) == then_at {
            if let Some(p2) = &pkg2 {
                let (v, a) = apply(&mut engine, &mut vm, p2, &policy, at, i)?;
                keys = vec!["updated2".into(), updated_key(&v, &args.baseline, None)];
                applied_images = a.images.iter().map(|x| x.name.clone()).collect();
                phase = Phase::PatchedThen;
                mid = None;
                steps.push(StepReport {
                    after_call: i,
                    what: "apply-then",
                    package: Some(p2.path.display().to_string()),
                    applied: Some(a),
                    reverted: None,
                });
            }
        }
        if Some(i) == args.revert_at {
            let mut last = None;
            for image in &applied_images {
                last = Some(
                    engine
                        .revert(&mut vm, image)
                        .map_err(|e| anyhow!("revert after call {i}: {e}"))?,
                );
            }
            keys = vec!["baseline".into(), base_key.clone()];
            phase = Phase::Reverted;
            mid = None;
            steps.push(StepReport {
                after_call: i,
                what: "revert",
                package: None,
                applied: None,
                reverted: last,
            });
        }
        let Some(v) = vectors.get(i) else { break };
        let result = call(&mut vm, v);
        let expect = expectation(v, &keys);
        let updated_vm = mid.as_mut().map(|m| call(m, v));
        // Expectations hold for a run of one build from the start. After a
        // patch lands mid-run the state has another history: there the
        // updated VM that received this state is the reference, when given.
        let table = expect
            .as_ref()
            .map(|(_, want)| result.value() == Some(*want));
        let mut matches = table.unwrap_or(!matches!(result, Outcome::Failed(_)));
        if let (Some(u), Some(d)) = (&updated_vm, mid_diff.as_mut()) {
            d.compared = d.compared.saturating_add(1);
            matches = *u == result;
            if matches {
                d.agree = d.agree.saturating_add(1);
            } else {
                d.disagreements
                    .push((i.saturating_add(1), result.clone(), u.clone()));
            }
        }
        results.push(VectorReport {
            index: i.saturating_add(1),
            call: v.to_string(),
            phase,
            result,
            expect,
            updated_vm,
            table,
            matches,
        });
    }

    // From the start: a fresh baseline patched before the first call and
    // a fresh updated VM; and an unpatched baseline, for what the fix
    // changes.
    let mut from_start = None;
    let mut fix_changes = Vec::new();
    if let Some((verified, _)) = &first_applied {
        let mut patched = load_vm(&args.baseline)?;
        Engine::new()
            .apply_verified(&mut patched, verified)
            .map_err(|e| anyhow!("{}: applying to a fresh VM: {e}", pkg.path.display()))?;
        let mut plain = load_vm(&args.baseline)?;
        let mut fresh_upd = args.updated.as_deref().map(load_updated_vm).transpose()?;
        let keys = vec![
            "updated".to_string(),
            updated_key(verified, &args.baseline, args.updated.as_deref()),
        ];
        let mut d = Differential {
            compared: 0,
            agree: 0,
            disagreements: Vec::new(),
            table: None,
            table_misses: Vec::new(),
            state: None,
        };
        let (mut with_table, mut table_ok) = (0usize, 0usize);
        for (i, v) in vectors.iter().enumerate() {
            let p = call(&mut patched, v);
            let b = call(&mut plain, v);
            if p != b {
                fix_changes.push(i.saturating_add(1));
            }
            if let Some((_, want)) = expectation(v, &keys) {
                with_table = with_table.saturating_add(1);
                if p.value() == Some(want) {
                    table_ok = table_ok.saturating_add(1);
                } else {
                    d.table_misses.push(i.saturating_add(1));
                }
            }
            if let Some(u) = fresh_upd.as_mut() {
                let u = call(u, v);
                d.compared = d.compared.saturating_add(1);
                if u == p {
                    d.agree = d.agree.saturating_add(1);
                } else {
                    d.disagreements.push((i.saturating_add(1), p, u));
                }
            }
        }
        d.table = Some((with_table, table_ok));
        from_start = Some(d);
    }

    let mismatches = results
        .iter()
        .filter(|r| !r.matches)
        .count()
        .saturating_add(from_start.as_ref().map_or(0, |d| {
            d.disagreements.len().saturating_add(d.table_misses.len())
        }));
    let timings = {
        let t = first_applied
            .as_ref()
            .map(|(_, a)| a.timings)
            .unwrap_or_default();
        ReplayTimings {
            verify: t.verify,
            // The replay's plan keeps the target's checks with placement.
            plan: t.check.saturating_add(t.plan),
            apply: t.apply,
            whole: t_all.elapsed(),
        }
    };
    let report = Report {
        package: pkg.path.display().to_string(),
        baseline: args.baseline.display().to_string(),
        updated: args.updated.as_ref().map(|p| p.display().to_string()),
        vectors: args.vectors.display().to_string(),
        steps,
        results,
        from_start,
        mid_run: mid_diff,
        fix_changes,
        mismatches,
        timings,
        pass: mismatches == 0,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write_text(&mut out, &report, &vectors, &base_img)?;
    }
    out.flush()?;
    if report.pass {
        Ok(())
    } else {
        Err(anyhow!(
            "replay: {} mismatch(es) ({} vectors)",
            report.mismatches,
            n
        ))
    }
}

/// The state record of the first image `vm` has a package applied to.
fn applied_record(vm: &mut Vm, images: &[String]) -> Result<Option<AppliedPackage>> {
    let engine = Engine::new();
    for image in images {
        if let Some(r) = engine.state(vm as &mut dyn Target, image)? {
            return Ok(r.applied);
        }
    }
    Ok(None)
}

fn write_text(
    out: &mut impl Write,
    r: &Report,
    vectors: &[Vector],
    base_img: &Image<'_>,
) -> std::io::Result<()> {
    writeln!(out, "replay {}", r.package)?;
    writeln!(
        out,
        "  baseline: {} ({} {}), in a VM at a base it does not prefer",
        r.baseline,
        base_img.arch.name(),
        base_img.format.name()
    )?;
    if let Some(u) = &r.updated {
        writeln!(out, "  updated:  {u}")?;
    }
    writeln!(out, "  vectors:  {} ({})", r.vectors, vectors.len())?;
    let width = r.results.iter().map(|x| x.call.len()).max().unwrap_or(0);
    let steps: BTreeMap<usize, Vec<&StepReport>> =
        r.steps.iter().fold(BTreeMap::new(), |mut m, s| {
            m.entry(s.after_call).or_insert_with(Vec::new).push(s);
            m
        });
    let print_steps = |out: &mut dyn Write, at: usize| -> std::io::Result<()> {
        for s in steps.get(&at).into_iter().flatten() {
            match (&s.applied, &s.reverted) {
                (Some(a), _) => {
                    writeln!(
                        out,
                        "-- {} {} after call {at}:",
                        s.what,
                        s.package.as_deref().unwrap_or("")
                    )?;
                    for line in a.to_string().lines() {
                        writeln!(out, "   {line}")?;
                    }
                }
                (_, Some(rv)) => {
                    writeln!(out, "-- revert after call {at}:")?;
                    for line in rv.to_string().lines() {
                        writeln!(out, "   {line}")?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    };
    for x in &r.results {
        print_steps(out, x.index.saturating_sub(1))?;
        let expect = x
            .expect
            .as_ref()
            .map(|(k, v)| {
                let differs = if x.table == Some(false) {
                    " (not met: that assumes a fresh run)"
                } else {
                    ""
                };
                format!("expect {k}={v}{differs}")
            })
            .unwrap_or_default();
        let upd = x
            .updated_vm
            .as_ref()
            .map(|u| format!(", updated VM {u}"))
            .unwrap_or_default();
        writeln!(
            out,
            "#{:<3} {:<width$} = {:<14} {:<8} {expect}{upd}  {}",
            x.index,
            x.call,
            x.result.to_string(),
            x.phase.label(),
            if x.matches { "ok" } else { "MISMATCH" }
        )?;
    }
    print_steps(out, vectors.len())?;
    if let Some(d) = &r.from_start {
        if r.updated.is_some() {
            writeln!(
                out,
                "differential from the start: {} of {} vectors agree (return value and buffers) between the baseline patched before the first call and a fresh VM of the updated image",
                d.agree, d.compared
            )?;
        }
        for (i, p, u) in &d.disagreements {
            writeln!(out, "  #{i}: patched {p}, updated {u}")?;
        }
        if let Some((n, good)) = d.table {
            writeln!(
                out,
                "patched before the first call: {good} of {n} vectors give the update's expected result"
            )?;
        }
        for i in &d.table_misses {
            writeln!(out, "  #{i}: not the update's expected result")?;
        }
    }
    if let Some(d) = &r.mid_run {
        let at = r.steps.first().map_or(0, |s| s.after_call);
        if let Some(s) = &d.state {
            writeln!(
                out,
                "differential mid-run: state copied after call {at} into a fresh VM of the updated image ({} objects, {} bytes, {} pointers translated); {} of {} vectors agree from then on",
                s.objects, s.bytes, s.pointers, d.agree, d.compared
            )?;
            for note in &s.notes {
                writeln!(out, "  note: {note}")?;
            }
        }
        for (i, p, u) in &d.disagreements {
            writeln!(out, "  #{i}: patched {p}, updated {u}")?;
        }
    }
    let changed: Vec<String> = r
        .fix_changes
        .iter()
        .filter_map(|i| {
            vectors
                .get(i.saturating_sub(1))
                .map(|v| format!("#{i} {v}"))
        })
        .collect();
    writeln!(
        out,
        "the fix changes {} of {} vectors{}{}",
        changed.len(),
        vectors.len(),
        if changed.is_empty() { "" } else { ": " },
        changed.join(", ")
    )?;
    if changed.is_empty() {
        writeln!(
            out,
            "  warning: no vector tells the patched baseline from the baseline"
        )?;
    }
    writeln!(
        out,
        "timings: verify {}, plan {}, apply {}, whole run {}",
        ms(r.timings.verify),
        ms(r.timings.plan),
        ms(r.timings.apply),
        ms(r.timings.whole)
    )?;
    writeln!(
        out,
        "{}",
        if r.pass {
            "PASS".to_string()
        } else {
            format!("FAIL: {} mismatch(es)", r.mismatches)
        }
    )
}

//! The `hotpatch` command-line tool: a thin layer over the library crates.
//!
//! Exit codes: 0 success, 1 bad input or a failed operation, 2 bad usage.

#![deny(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::io::Write;
use std::path::PathBuf;

/// The allocator: mimalloc. The diff allocates and frees many small
/// vectors from two threads; against the system allocator this took about
/// 15% off its time on the 50,000-function benchmark pair.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hotpatch_formats::{read, Image, ReadOptions};

mod apply;
mod build;
mod mapped;
mod packaging;
#[cfg(feature = "emulator")]
mod replay;
mod report_json;

/// Authors rebootless hotpatch packages from a baseline and an updated build.
#[derive(Parser)]
#[command(name = "hotpatch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the functions of an image: name, RVA, size and translation unit.
    Symbols {
        /// The image: a PE (.dll/.exe, with its PDB) or an ELF file.
        image: PathBuf,
        /// The PDB of a PE image (default: beside the image, same stem;
        /// without one, the image is read as a stripped image).
        #[arg(long)]
        pdb: Option<PathBuf>,
        /// A separate debug file of an ELF image (default: by build-id in
        /// /usr/lib/debug when the image is stripped).
        #[arg(long)]
        debug: Option<PathBuf>,
        /// Print one JSON object with a `functions` array.
        #[arg(long)]
        json: bool,
    },
    /// Compare a baseline image with its update: which functions really
    /// changed, and whether the update can be hotpatched.
    Diff {
        /// The baseline image.
        #[arg(long)]
        baseline: PathBuf,
        /// The baseline's PDB (PE only; default: beside the image; without one,
        /// the image is read as a stripped image).
        #[arg(long)]
        baseline_pdb: Option<PathBuf>,
        /// The baseline's separate debug file (ELF only; default: by
        /// build-id in /usr/lib/debug when the image is stripped).
        #[arg(long)]
        baseline_debug: Option<PathBuf>,
        /// The updated image.
        #[arg(long)]
        updated: PathBuf,
        /// The update's PDB (PE only; default: beside the image; without one,
        /// the image is read as a stripped image).
        #[arg(long)]
        updated_pdb: Option<PathBuf>,
        /// The update's separate debug file (ELF only).
        #[arg(long)]
        updated_debug: Option<PathBuf>,
        /// Print one JSON object instead of the summary.
        #[arg(long)]
        json: bool,
        /// Lift a blocker after review: `type:NAME` for a type whose layout
        /// changed (when no object of it outlives a call). Each needs its
        /// own --reason, given in the same order.
        #[arg(long, value_name = "type:NAME")]
        allow: Vec<String>,
        /// Why the matching --allow is safe (recorded and shown).
        #[arg(long, value_name = "TEXT")]
        reason: Vec<String>,
    },
    /// Build an unsigned package from a baseline and its update (or from a
    /// release file listing many image pairs).
    Build(Box<build::BuildArgs>),
    /// Make a new Ed25519 signing key: KEY (PKCS#8 PEM, mode 0600) and
    /// KEY.pub (SPKI PEM). Prints the key id.
    Keygen(packaging::KeygenArgs),
    /// Add a signature to a package, keeping earlier ones.
    Sign(packaging::SignArgs),
    /// Verify a package against a trust policy: signatures, digests,
    /// threshold, product, expiry and validity.
    Verify(packaging::VerifyArgs),
    /// Make or change a trust policy.
    #[command(subcommand)]
    Trust(packaging::TrustCommand),
    /// Show what a package contains, without verifying it.
    Inspect(packaging::InspectArgs),
    /// Run vectors on a baseline in an emulated VM, apply a package between
    /// two calls without reloading, and check the patched baseline behaves
    /// as the updated build (from the start, and mid-run with its state).
    #[cfg(feature = "emulator")]
    Replay(Box<replay::ReplayArgs>),
    /// Apply a package to a running Linux process (or, with --revert, undo
    /// it): verify, find the image in the process, place the new code near
    /// it, stop every thread, write the redirects, resume.
    Apply(apply::ApplyArgs),
}

/// A command line that parses but makes no sense (exit code 2).
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (`hotpatch symbols x | head`) is not an error.
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("hotpatch: error: {e:#}");
            if e.downcast_ref::<Usage>().is_some() {
                return ExitCode::from(2);
            }
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Symbols {
            image,
            pdb,
            debug,
            json,
        } => symbols(read_options(image, pdb, debug), json),
        Command::Diff {
            baseline,
            baseline_pdb,
            baseline_debug,
            updated,
            updated_pdb,
            updated_debug,
            json,
            allow,
            reason,
        } => diff(
            read_options(baseline, baseline_pdb, baseline_debug),
            read_options(updated, updated_pdb, updated_debug),
            allows(allow, reason)?,
            json,
        ),
        Command::Build(args) => build::run(*args),
        Command::Keygen(args) => packaging::keygen(args),
        Command::Sign(args) => packaging::sign(args),
        Command::Verify(args) => packaging::verify(args),
        Command::Trust(cmd) => packaging::trust(cmd),
        Command::Inspect(args) => packaging::inspect(args),
        #[cfg(feature = "emulator")]
        Command::Replay(args) => replay::run(*args),
        Command::Apply(args) => apply::apply(args),
    }
}

/// Pair each `--allow` with its `--reason`, in order.
fn allows(
    objects: Vec<String>,
    reasons: Vec<String>,
) -> Result<Vec<hotpatch_builder::diff::Allow>> {
    if objects.len() != reasons.len() {
        return Err(Usage(format!(
            "every --allow needs its own --reason ({} --allow, {} --reason)",
            objects.len(),
            reasons.len()
        ))
        .into());
    }
    objects
        .into_iter()
        .zip(reasons)
        .map(|(object, reason)| {
            if object.strip_prefix("type:").is_none_or(str::is_empty) {
                return Err(Usage(format!(
                    "--allow {object:?}: only type layouts can be overridden, as type:NAME (changed writable data is state the running process already holds)"
                ))
                .into());
            }
            if reason.trim().is_empty() {
                return Err(Usage(format!("--allow {object}: the --reason is empty")).into());
            }
            Ok(hotpatch_builder::diff::Allow { object, reason })
        })
        .collect()
}

fn read_options(image: PathBuf, pdb: Option<PathBuf>, debug: Option<PathBuf>) -> ReadOptions {
    let mut opts = ReadOptions::new(image);
    opts.pdb = pdb;
    opts.debug = debug;
    // Where stripped ELF images' debug files are looked up by build-id.
    if let Some(dirs) = std::env::var_os("HOTPATCH_DEBUG_DIRS") {
        opts.debug_dirs = std::env::split_paths(&dirs).collect();
    }
    opts
}

fn symbols(opts: ReadOptions, json: bool) -> Result<()> {
    let bytes = mapped::load_image(&opts.path)?;
    let image = read::parse(&bytes, &opts)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if json {
        serde_json::to_writer_pretty(&mut out, &symbols_json(&opts, &image))?;
        writeln!(out)?;
    } else {
        write_symbols_text(&mut out, &opts, &image)?;
    }
    out.flush()?;
    Ok(())
}

fn diff(
    base_opts: ReadOptions,
    upd_opts: ReadOptions,
    allow: Vec<hotpatch_builder::diff::Allow>,
    json: bool,
) -> Result<()> {
    // Read both images at once; report the baseline's error first.
    let (base_bytes, upd_bytes) = std::thread::scope(|s| {
        let upd = s.spawn(|| mapped::load_image(&upd_opts.path));
        let base = mapped::load_image(&base_opts.path);
        (base, upd.join())
    });
    let base_bytes = base_bytes?;
    let upd_bytes = upd_bytes.map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    let (base, upd) = std::thread::scope(|s| {
        let upd = s.spawn(|| read::parse(&upd_bytes, &upd_opts));
        let base = read::parse(&base_bytes, &base_opts);
        (base, upd.join())
    });
    let base = base?;
    let upd = upd.map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    let options = hotpatch_builder::diff::Options {
        baseline_name: base_opts.path.display().to_string(),
        updated_name: upd_opts.path.display().to_string(),
        allow,
    };
    let d = hotpatch_builder::diff::diff_with(&base, &upd, &options).with_context(|| {
        format!(
            "cannot diff {} against {}",
            base_opts.path.display(),
            upd_opts.path.display()
        )
    })?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if json {
        report_json::write(&mut out, d)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "baseline: {}\nupdated:  {}",
            base_opts.path.display(),
            upd_opts.path.display()
        )?;
        hotpatch_builder::report::write_summary(&mut out, &d)?;
    }
    out.flush()?;
    Ok(())
}

#[derive(serde::Serialize)]
struct SymbolsJson<'a> {
    image: String,
    format: hotpatch_formats::Format,
    arch: hotpatch_formats::Arch,
    stripped: bool,
    functions: Vec<FunctionJson<'a>>,
}

#[derive(serde::Serialize)]
struct FunctionJson<'a> {
    name: &'a str,
    rva: u64,
    size: u64,
    unit: Option<&'a str>,
    visibility: hotpatch_formats::Visibility,
    extent: hotpatch_formats::Extent,
}

fn symbols_json<'a>(opts: &ReadOptions, image: &'a Image<'_>) -> SymbolsJson<'a> {
    SymbolsJson {
        image: opts.path.display().to_string(),
        format: image.format,
        arch: image.arch,
        stripped: image.stripped,
        functions: image
            .functions
            .iter()
            .map(|f| FunctionJson {
                name: &f.name,
                rva: f.rva,
                size: f.size,
                unit: f.unit.as_deref(),
                visibility: f.visibility,
                extent: f.extent,
            })
            .collect(),
    }
}

fn write_symbols_text(out: &mut impl Write, opts: &ReadOptions, image: &Image<'_>) -> Result<()> {
    writeln!(
        out,
        "{}: {} {}, {} functions{}",
        opts.path.display(),
        image.format.name(),
        image.arch.name(),
        image.functions.len(),
        match (image.stripped, image.format) {
            (false, _) => "",
            (true, hotpatch_formats::Format::Elf) => " (stripped: boundaries from .eh_frame)",
            (true, hotpatch_formats::Format::Pe) => {
                " (no PDB: boundaries from .pdata and the exports)"
            }
        }
    )?;
    let width = image
        .functions
        .iter()
        .map(|f| f.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<width$}  {:>10}  {:>8}  UNIT",
        "NAME", "RVA", "SIZE"
    )?;
    for f in &image.functions {
        // A function the PDB knows only by its public symbol says so, and
        // where its extent comes from.
        let origin = if f.extent.without_procedure() {
            format!(" ({})", f.extent.describe())
        } else {
            String::new()
        };
        writeln!(
            out,
            "{:<width$}  {:>#10x}  {:>8}  {}{origin}",
            f.name,
            f.rva,
            f.size,
            f.unit.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

//! `hotpatch build`: argument handling, the release file, and output. The
//! work is done by `hotpatch_builder::package`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Args;
use hotpatch_builder::package::{build, ImagePair, Metadata};
use hotpatch_formats::package::{write_atomic, PackageKind, Release, Timestamp};
use hotpatch_formats::{read, ReadOptions};
use serde::Deserialize;

use crate::{allows, read_options, Usage};

/// `hotpatch build`.
#[derive(Args)]
pub struct BuildArgs {
    /// The baseline image (the build running on devices).
    #[arg(long, value_name = "IMG", required_unless_present = "release_file")]
    baseline: Option<PathBuf>,
    /// The baseline's PDB (PE only; default: beside the image).
    #[arg(long, value_name = "PDB")]
    baseline_pdb: Option<PathBuf>,
    /// The baseline's separate debug file (ELF only; default: by build-id
    /// in /usr/lib/debug when the image is stripped).
    #[arg(long, value_name = "FILE")]
    baseline_debug: Option<PathBuf>,
    /// The updated image (the fixed build).
    #[arg(long, value_name = "IMG", required_unless_present = "release_file")]
    updated: Option<PathBuf>,
    /// The update's PDB (PE only; default: beside the image).
    #[arg(long, value_name = "PDB")]
    updated_pdb: Option<PathBuf>,
    /// The update's separate debug file (ELF only).
    #[arg(long, value_name = "FILE")]
    updated_debug: Option<PathBuf>,
    /// The image's name in the package (default: the baseline's file name).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The product the package belongs to.
    #[arg(long, value_name = "P", required_unless_present = "release_file")]
    product: Option<String>,
    /// The month it ships in, YYYY-MM.
    #[arg(long, value_name = "YYYY-MM", required_unless_present = "release_file")]
    release: Option<String>,
    /// The month of the baseline it applies to, YYYY-MM (a baseline's own).
    #[arg(long, value_name = "YYYY-MM", required_unless_present = "release_file")]
    baseline_release: Option<String>,
    /// `hotpatch` (changed functions, no restart) or `baseline` (full
    /// images, restart required).
    #[arg(long, value_name = "KIND", value_parser = ["hotpatch", "baseline"])]
    kind: Option<String>,
    /// A CVE id the package fixes (repeatable).
    #[arg(long = "advisory", value_name = "CVE")]
    advisories: Vec<String>,
    /// When it expires, YYYY-MM-DD (default: 90 days after its creation).
    #[arg(long, value_name = "YYYY-MM-DD")]
    expires: Option<String>,
    /// The package id (default: PRODUCT-YYYY-MM).
    #[arg(long, value_name = "ID")]
    package_id: Option<String>,
    /// Carry functions whose only change is `__LINE__` immediates.
    #[arg(long)]
    include_lines_only: bool,
    /// Lift a blocker after review, as in `diff` (needs its --reason).
    #[arg(long, value_name = "type:NAME")]
    allow: Vec<String>,
    /// Why the matching --allow is safe (recorded in the manifest).
    #[arg(long, value_name = "TEXT")]
    reason: Vec<String>,
    /// A release file (TOML) naming the product, months, advisories and
    /// `[[image]]` pairs: one package for many images. Conflicts with the
    /// single-image options.
    #[arg(
        long,
        value_name = "RELEASE.toml",
        conflicts_with_all = ["baseline", "updated", "baseline_pdb", "updated_pdb", "baseline_debug", "updated_debug", "name", "product", "release", "baseline_release", "kind", "advisories", "expires", "package_id", "allow", "reason"]
    )]
    release_file: Option<PathBuf>,
    /// Where to write the unsigned package (replaced atomically).
    #[arg(short = 'o', long = "output", value_name = "OUT.hpk")]
    output: PathBuf,
    /// Print the manifest as JSON instead of the summary.
    #[arg(long)]
    json: bool,
}

/// A release file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseFile {
    product: String,
    release: String,
    baseline_release: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    package_id: Option<String>,
    #[serde(default)]
    advisories: Vec<String>,
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    include_lines_only: bool,
    #[serde(default)]
    allow: Vec<ReleaseAllow>,
    image: Vec<ReleaseImage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseAllow {
    object: String,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseImage {
    #[serde(default)]
    name: Option<String>,
    baseline: PathBuf,
    #[serde(default)]
    baseline_pdb: Option<PathBuf>,
    #[serde(default)]
    baseline_debug: Option<PathBuf>,
    updated: PathBuf,
    #[serde(default)]
    updated_pdb: Option<PathBuf>,
    #[serde(default)]
    updated_debug: Option<PathBuf>,
}

/// One image to read: its name, and how to read each build.
struct Input {
    name: String,
    baseline: ReadOptions,
    updated: ReadOptions,
}

/// Everything `build` needs, from the flags or the release file.
struct Request {
    inputs: Vec<Input>,
    meta: Metadata,
}

/// `hotpatch build`.
pub fn run(args: BuildArgs) -> Result<()> {
    let created = Timestamp::creation_time().context("SOURCE_DATE_EPOCH")?;
    let request = match &args.release_file {
        Some(path) => from_release_file(path, created, args.include_lines_only)?,
        None => from_flags(&args, created)?,
    };
    let progress = std::io::stderr().is_terminal();
    // Read every file first: a bad one fails before any diffing.
    let mut files = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let b = crate::mapped::load_image(&input.baseline.path)?;
        let u = crate::mapped::load_image(&input.updated.path)?;
        files.push((b, u));
    }
    let mut images = Vec::with_capacity(files.len());
    for (input, (b, u)) in request.inputs.iter().zip(&files) {
        if progress {
            eprintln!("reading {} ...", input.name);
        }
        images.push((
            read::parse(b, &input.baseline)?,
            read::parse(u, &input.updated)?,
        ));
    }
    let labels: Vec<(String, String)> = request
        .inputs
        .iter()
        .map(|i| {
            (
                i.baseline.path.display().to_string(),
                i.updated.path.display().to_string(),
            )
        })
        .collect();
    let pairs: Vec<ImagePair<'_>> = request
        .inputs
        .iter()
        .zip(&images)
        .zip(&labels)
        .map(|((input, (b, u)), (bl, ul))| ImagePair::new(&input.name, bl, b, ul, u))
        .collect();
    if progress {
        eprintln!("diffing and assembling {} image(s) ...", pairs.len());
    }
    let built = build(&pairs, &request.meta)?;
    write_atomic(&args.output, &built.bytes, 0o644)
        .with_context(|| format!("{}: cannot write", args.output.display()))?;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    if args.json {
        let json = built.manifest.to_json()?;
        out.write_all(&json)?;
    } else {
        let m = &built.manifest;
        writeln!(
            out,
            "{}: {} {} of {} for {} (baseline {}, sequence {}{}), {} bytes, unsigned",
            args.output.display(),
            m.kind,
            m.package_id,
            m.product,
            m.release,
            m.baseline_release,
            m.sequence,
            if m.requires_restart {
                ", restart required"
            } else {
                ""
            },
            built.bytes.len()
        )?;
        for s in &built.summaries {
            if m.kind == PackageKind::Baseline {
                writeln!(out, "  {}: whole image, {} bytes", s.name, s.bytes)?;
            } else {
                writeln!(
                    out,
                    "  {}: {} changed, {} added function(s), {} new data object(s), {} bytes of new code and data{}",
                    s.name,
                    s.changed,
                    s.added,
                    s.data,
                    s.bytes,
                    match s.lines_only {
                        0 => String::new(),
                        n => format!(
                            "; {n} changed in line numbers only, left out (--include-lines-only carries them)"
                        ),
                    }
                )?;
            }
        }
    }
    Ok(())
}

fn release(text: &str, what: &str) -> Result<Release> {
    Release::parse(text).map_err(|e| Usage(format!("{what}: {e}")).into())
}

fn kind(text: Option<&str>) -> Result<PackageKind> {
    match text {
        None | Some("hotpatch") => Ok(PackageKind::Hotpatch),
        Some("baseline") => Ok(PackageKind::Baseline),
        Some(other) => Err(Usage(format!("kind {other:?}: expected hotpatch or baseline")).into()),
    }
}

fn expiry(text: Option<&str>) -> Result<Option<Timestamp>> {
    text.map(|t| Timestamp::parse(t).map_err(|e| Usage(format!("--expires: {e}")).into()))
        .transpose()
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{}: no file name to name the image by", path.display()))
}

fn from_flags(args: &BuildArgs, created: Timestamp) -> Result<Request> {
    let missing = |flag: &str| Usage(format!("{flag} is required without --release-file"));
    let baseline = args.baseline.clone().ok_or_else(|| missing("--baseline"))?;
    let updated = args.updated.clone().ok_or_else(|| missing("--updated"))?;
    let product = args.product.clone().ok_or_else(|| missing("--product"))?;
    let rel = release(
        args.release
            .as_deref()
            .ok_or_else(|| missing("--release"))?,
        "--release",
    )?;
    let base_rel = release(
        args.baseline_release
            .as_deref()
            .ok_or_else(|| missing("--baseline-release"))?,
        "--baseline-release",
    )?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => file_name(&baseline)?,
    };
    let mut meta = Metadata::new(
        &product,
        kind(args.kind.as_deref())?,
        rel,
        base_rel,
        created,
    );
    meta.package_id = args.package_id.clone();
    meta.advisories = args.advisories.clone();
    meta.expires = expiry(args.expires.as_deref())?;
    meta.include_lines_only = args.include_lines_only;
    meta.allow = allows(args.allow.clone(), args.reason.clone())?;
    Ok(Request {
        inputs: vec![Input {
            name,
            baseline: read_options(
                baseline,
                args.baseline_pdb.clone(),
                args.baseline_debug.clone(),
            ),
            updated: read_options(
                updated,
                args.updated_pdb.clone(),
                args.updated_debug.clone(),
            ),
        }],
        meta,
    })
}

fn from_release_file(path: &Path, created: Timestamp, include_lines_only: bool) -> Result<Request> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let file: ReleaseFile = toml::from_str(&text).map_err(|e| {
        anyhow!(
            "{}: {}",
            path.display(),
            e.message().lines().next().unwrap_or("invalid TOML")
        )
    })?;
    let at = |what: String| anyhow!("{}: {what}", path.display());
    if file.image.is_empty() {
        return Err(at("no [[image]] entries".into()));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &PathBuf| {
        if p.is_absolute() {
            p.clone()
        } else {
            dir.join(p)
        }
    };
    let rel = Release::parse(&file.release).map_err(|e| at(format!("release: {e}")))?;
    let base_rel =
        Release::parse(&file.baseline_release).map_err(|e| at(format!("baseline_release: {e}")))?;
    let kind = kind(file.kind.as_deref()).map_err(|e| at(e.to_string()))?;
    let mut meta = Metadata::new(&file.product, kind, rel, base_rel, created);
    meta.package_id = file.package_id;
    meta.advisories = file.advisories;
    meta.expires = file
        .expires
        .as_deref()
        .map(|t| Timestamp::parse(t).map_err(|e| at(format!("expires: {e}"))))
        .transpose()?;
    meta.include_lines_only = file.include_lines_only || include_lines_only;
    let (objects, reasons) = file.allow.into_iter().map(|a| (a.object, a.reason)).unzip();
    meta.allow = allows(objects, reasons).map_err(|e| at(format!("allow: {e}")))?;
    let inputs = file
        .image
        .iter()
        .map(|i| {
            let baseline = resolve(&i.baseline);
            let name = match &i.name {
                Some(n) => n.clone(),
                None => file_name(&baseline)?,
            };
            Ok(Input {
                name,
                baseline: read_options(
                    baseline,
                    i.baseline_pdb.as_ref().map(resolve),
                    i.baseline_debug.as_ref().map(resolve),
                ),
                updated: read_options(
                    resolve(&i.updated),
                    i.updated_pdb.as_ref().map(resolve),
                    i.updated_debug.as_ref().map(resolve),
                ),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Request { inputs, meta })
}

//! The package and signing commands: `keygen`, `sign`, `verify`, `trust`
//! and `inspect`. Argument handling and output only; the work is done by
//! `hotpatch_formats::package` and `hotpatch_signer`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use hotpatch_formats::package::{
    self, write_atomic, Body, BuildIdentity, ImageIdentity, KeyId, Package, RawPackage, Timestamp,
};
use hotpatch_signer::{PrivateKey, PublicKey, TrustPolicy};
use serde::Serialize;

use crate::Usage;

/// Days of validity a new policy allows by default (a quarter).
const DEFAULT_MAX_VALIDITY_DAYS: u64 = 93;

/// What `inspect` says before anything else.
const NOT_VERIFIED: &str =
    "NOT VERIFIED: inspect shows what the package says without checking its signatures; use `hotpatch verify --trust TRUST.toml` for that";

/// `hotpatch keygen`.
#[derive(Args)]
pub struct KeygenArgs {
    /// Where to write the private key (PKCS#8 PEM, mode 0600); the public
    /// key goes to the same path plus `.pub` (SPKI PEM). Neither may exist.
    #[arg(short = 'o', long = "output", value_name = "KEY")]
    output: PathBuf,
}

/// `hotpatch sign`.
#[derive(Args)]
pub struct SignArgs {
    /// The private key file (PKCS#8 PEM; readable by its owner only).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "key_env",
        conflicts_with = "key_env"
    )]
    key: Option<PathBuf>,
    /// The environment variable holding the private key's PEM text (a CI
    /// secret).
    #[arg(long, value_name = "VAR")]
    key_env: Option<String>,
    /// The package to sign.
    package: PathBuf,
    /// Where to write the signed package (default: replace PKG).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: Option<PathBuf>,
}

/// `hotpatch verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The trust policy (TOML; see signer/README.md).
    #[arg(long, value_name = "TRUST.toml")]
    trust: PathBuf,
    /// The package.
    package: PathBuf,
    /// Verify as of this time (YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DD) instead of
    /// now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Print one JSON object (also on failure, with the failed check).
    #[arg(long)]
    json: bool,
}

/// `hotpatch trust`.
#[derive(Subcommand)]
pub enum TrustCommand {
    /// Write a new trust policy from public keys.
    New {
        /// A public key file (SPKI PEM, such as KEY.pub from keygen); repeat
        /// for each key.
        #[arg(long = "key", value_name = "PUB.pem", required = true)]
        keys: Vec<PathBuf>,
        /// How many distinct keys must sign a package.
        #[arg(long, default_value_t = 1)]
        threshold: u32,
        /// A product the keys may sign for; repeat for several (default: any).
        #[arg(long = "product", value_name = "P")]
        products: Vec<String>,
        /// The longest validity (expires - created) a package may claim, in
        /// days.
        #[arg(long = "max-validity", value_name = "DAYS", default_value_t = DEFAULT_MAX_VALIDITY_DAYS)]
        max_validity: u64,
        /// Where to write the policy (must not exist).
        #[arg(short = 'o', long = "output", value_name = "TRUST.toml")]
        output: PathBuf,
    },
    /// Revoke a key in a trust policy (the file keeps its comments).
    Revoke {
        /// The trust policy.
        trust: PathBuf,
        /// The key id (64 hex digits, as keygen and verify print it).
        key_id: String,
        /// Why (recorded, and shown when its signatures are refused).
        #[arg(long)]
        reason: String,
    },
}

/// `hotpatch inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// The package.
    package: PathBuf,
    /// Print one JSON object: header, signatures, the manifest as written,
    /// and the payload's items.
    #[arg(long, conflicts_with = "signed_message")]
    json: bool,
    /// Write the exact bytes the signatures sign to stdout (for `openssl
    /// pkeyutl -verify -rawin`); refused on a terminal.
    #[arg(long)]
    signed_message: bool,
}

pub(crate) fn read_package(path: &Path) -> Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let cap = package::header::MAX_PACKAGE_LEN;
    if meta.len() > cap {
        return Err(anyhow!(
            "{}: {} bytes is larger than any package can be ({cap} bytes)",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
}

/// `hotpatch keygen -o KEY`.
pub fn keygen(args: KeygenArgs) -> Result<()> {
    let id = hotpatch_signer::keygen(&args.output)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{id}")?;
    eprintln!(
        "wrote {} (private key, mode 0600) and {} (public key); key id {id}",
        args.output.display(),
        hotpatch_signer::key::public_path(&args.output).display()
    );
    Ok(())
}

/// `hotpatch sign`.
pub fn sign(args: SignArgs) -> Result<()> {
    let key = match (&args.key, &args.key_env) {
        (Some(path), None) => PrivateKey::load(path)?,
        (None, Some(var)) => PrivateKey::from_env(var)?,
        _ => return Err(Usage("give exactly one of --key FILE and --key-env VAR".into()).into()),
    };
    let bytes = read_package(&args.package)?;
    let signed = hotpatch_signer::sign(&bytes, &key)
        .map_err(|e| anyhow!("{}: {e}", args.package.display()))?;
    let out = args.output.as_ref().unwrap_or(&args.package);
    write_atomic(out, &signed, 0o644)
        .with_context(|| format!("{}: cannot write", out.display()))?;
    let count = RawPackage::parse(&signed)
        .map(|r| r.signatures().len())
        .unwrap_or(0);
    println!(
        "{}: signed by key {} ({count} signature{})",
        out.display(),
        key.key_id(),
        if count == 1 { "" } else { "s" }
    );
    Ok(())
}

#[derive(Serialize)]
struct VerifyFailure<'a> {
    verified: bool,
    package: String,
    check: &'a str,
    error: String,
}

/// `hotpatch verify`.
pub fn verify(args: VerifyArgs) -> Result<()> {
    let at = match &args.at {
        Some(t) => Timestamp::parse(t).map_err(|e| Usage(format!("--at: {e}")))?,
        None => Timestamp::now(),
    };
    let policy = TrustPolicy::load(&args.trust)?;
    let bytes = read_package(&args.package)?;
    let name = args.package.display().to_string();
    let verified = match hotpatch_signer::verify(&bytes, &policy, at) {
        Ok(v) => v,
        Err(e) => {
            if args.json {
                let mut out = std::io::stdout().lock();
                serde_json::to_writer_pretty(
                    &mut out,
                    &VerifyFailure {
                        verified: false,
                        package: name.clone(),
                        check: e.check(),
                        error: e.to_string(),
                    },
                )?;
                writeln!(out)?;
            }
            return Err(anyhow!("{name}: verification failed: {e}"));
        }
    };
    let s = verified.summary();
    let mut out = std::io::stdout().lock();
    if args.json {
        #[derive(Serialize)]
        struct WithPath<'a> {
            package: &'a str,
            #[serde(flatten)]
            summary: &'a hotpatch_signer::Summary,
        }
        serde_json::to_writer_pretty(
            &mut out,
            &WithPath {
                package: &name,
                summary: &s,
            },
        )?;
        writeln!(out)?;
    } else {
        writeln!(out, "{name}: verified")?;
        writeln!(out, "product:   {}", s.product)?;
        writeln!(out, "package:   {}", s.package_id)?;
        writeln!(
            out,
            "release:   {} {} (sequence {} against baseline {})",
            s.release, s.kind, s.sequence, s.baseline_release
        )?;
        writeln!(out, "created:   {}", s.created)?;
        writeln!(out, "expires:   {}", s.expires)?;
        writeln!(
            out,
            "signers:   {} distinct (threshold {})",
            s.signers.len(),
            s.threshold
        )?;
        for k in &s.signers {
            writeln!(out, "  key {k}")?;
        }
        writeln!(out, "verified at {}", s.verified_at)?;
    }
    out.flush()?;
    Ok(())
}

/// `hotpatch trust new|revoke`.
pub fn trust(cmd: TrustCommand) -> Result<()> {
    match cmd {
        TrustCommand::New {
            keys,
            threshold,
            products,
            max_validity,
            output,
        } => {
            let keys = keys
                .iter()
                .map(|p| PublicKey::load(p))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let policy = TrustPolicy::new(
                &output.display().to_string(),
                keys,
                threshold,
                products,
                max_validity,
            )?;
            hotpatch_signer::policy::write_new(&output, &policy)?;
            println!(
                "{}: {} key{}, threshold {}, products {}, packages valid for at most {} days",
                output.display(),
                policy.keys.len(),
                if policy.keys.len() == 1 { "" } else { "s" },
                policy.threshold,
                policy
                    .keys
                    .first()
                    .map(|k| k.products.join(", "))
                    .unwrap_or_default(),
                policy.max_validity_days
            );
            Ok(())
        }
        TrustCommand::Revoke {
            trust,
            key_id,
            reason,
        } => {
            let id = KeyId::parse(&key_id).map_err(|e| Usage(format!("KEYID: {e}")))?;
            let policy = hotpatch_signer::policy::revoke_in_file(&trust, id, &reason)?;
            let known = if policy.key(&id).is_some() {
                ""
            } else {
                " (not one of its keys: its signatures were not counted anyway)"
            };
            println!("{}: revoked key {id}{known}", trust.display());
            Ok(())
        }
    }
}

#[derive(Serialize)]
struct InspectJson<'a> {
    verified: bool,
    note: &'a str,
    package: String,
    header: HeaderJson,
    signatures: Vec<KeyId>,
    manifest: &'a package::Manifest,
    items: Vec<ItemJson>,
}

#[derive(Serialize)]
struct HeaderJson {
    format_version: u32,
    manifest_len: u64,
    payload_len: u64,
    payload_uncompressed_len: u64,
    signatures_len: u64,
    manifest_sha256: package::Sha256Digest,
    payload_sha256: package::Sha256Digest,
}

#[derive(Serialize)]
struct ItemJson {
    index: usize,
    align: u32,
    size: u64,
    encoding: &'static str,
    encoded_size: usize,
    delta_reference: Option<package::Reference>,
    relocations: usize,
}

/// `hotpatch inspect`.
pub fn inspect(args: InspectArgs) -> Result<()> {
    let bytes = read_package(&args.package)?;
    let name = args.package.display().to_string();
    let raw = RawPackage::parse(&bytes).map_err(|e| anyhow!("{name}: {e}"))?;
    if args.signed_message {
        let mut out = std::io::stdout().lock();
        if out.is_terminal() {
            return Err(Usage(
                "--signed-message writes binary bytes: redirect stdout to a file".into(),
            )
            .into());
        }
        out.write_all(&raw.signed_message())?;
        out.flush()?;
        return Ok(());
    }
    let pkg = raw.decode().map_err(|e| anyhow!("{name}: {e}"))?;
    let h = raw.header();
    let mut out = std::io::stdout().lock();
    if args.json {
        let items = pkg
            .payload
            .items()
            .iter()
            .enumerate()
            .map(|(index, item)| ItemJson {
                index,
                align: item.align,
                size: item.size(),
                encoding: match item.body {
                    Body::Raw(_) => "raw",
                    Body::Delta(_) => "zstd-delta",
                },
                encoded_size: match &item.body {
                    Body::Raw(b) => b.len(),
                    Body::Delta(d) => d.frame.len(),
                },
                delta_reference: match &item.body {
                    Body::Raw(_) => None,
                    Body::Delta(d) => Some(d.reference),
                },
                relocations: item.relocations.len(),
            })
            .collect();
        let j = InspectJson {
            verified: false,
            note: NOT_VERIFIED,
            package: name,
            header: HeaderJson {
                format_version: h.version,
                manifest_len: h.manifest_len,
                payload_len: h.payload_len,
                payload_uncompressed_len: h.payload_uncompressed_len,
                signatures_len: h.signatures_len,
                manifest_sha256: h.manifest_sha256,
                payload_sha256: h.payload_sha256,
            },
            signatures: raw.signatures().iter().map(|s| s.key_id).collect(),
            manifest: &pkg.manifest,
            items,
        };
        serde_json::to_writer_pretty(&mut out, &j)?;
        writeln!(out)?;
    } else {
        write_inspect_text(&mut out, &name, &raw, &pkg)?;
    }
    out.flush()?;
    Ok(())
}

fn identity_text(id: &ImageIdentity) -> String {
    let build = match &id.build {
        BuildIdentity::Pe {
            time_date_stamp,
            size_of_image,
            codeview,
        } => {
            let cv = codeview
                .as_ref()
                .map(|c| format!(", PDB {} age {}", c.guid, c.age))
                .unwrap_or_default();
            format!("TimeDateStamp {time_date_stamp:#010x}, SizeOfImage {size_of_image:#x}{cv}")
        }
        BuildIdentity::Elf { build_id } => match build_id {
            Some(b) => format!("build-id {b}"),
            None => "no build-id".into(),
        },
    };
    format!("sha256 {}, {build}", id.sha256)
}

fn write_inspect_text(
    out: &mut impl Write,
    name: &str,
    raw: &RawPackage<'_>,
    pkg: &Package,
) -> Result<()> {
    let h = raw.header();
    let m = &pkg.manifest;
    writeln!(out, "{name}")?;
    writeln!(out, "{NOT_VERIFIED}")?;
    writeln!(
        out,
        "format version {}: manifest {} bytes, payload {} bytes ({} uncompressed), {} signature{}",
        h.version,
        h.manifest_len,
        h.payload_len,
        h.payload_uncompressed_len,
        raw.signatures().len(),
        if raw.signatures().len() == 1 { "" } else { "s" }
    )?;
    for s in raw.signatures() {
        writeln!(out, "  signature by key {} (not checked)", s.key_id)?;
    }
    writeln!(out, "product:    {}", m.product)?;
    writeln!(out, "package:    {}", m.package_id)?;
    writeln!(
        out,
        "release:    {} {} (sequence {} against baseline {}){}",
        m.release,
        m.kind,
        m.sequence,
        m.baseline_release,
        if m.requires_restart {
            ", requires restart"
        } else {
            ""
        }
    )?;
    writeln!(out, "created:    {}", m.created)?;
    writeln!(out, "expires:    {}", m.expires)?;
    if !m.supersedes.is_empty() {
        writeln!(out, "supersedes: {}", m.supersedes.join(", "))?;
    }
    if !m.advisories.is_empty() {
        writeln!(out, "advisories: {}", m.advisories.join(", "))?;
    }
    for o in &m.overrides {
        writeln!(
            out,
            "override:   --allow {} (reason: {})",
            o.allow, o.reason
        )?;
    }
    let item_text = |r: package::ItemRef| -> String {
        match pkg.payload.get(r) {
            Some(item) => {
                let enc = match &item.body {
                    Body::Raw(_) => "raw".to_string(),
                    Body::Delta(d) => format!(
                        "zstd delta of {} bytes against baseline {:#x}+{}",
                        d.frame.len(),
                        d.reference.rva,
                        d.reference.size
                    ),
                };
                format!(
                    "{r}: {} bytes ({enc}), align {}, {} relocation{}",
                    item.size(),
                    item.align,
                    item.relocations.len(),
                    if item.relocations.len() == 1 { "" } else { "s" }
                )
            }
            None => format!("{r}: missing"),
        }
    };
    let unit = |u: &Option<String>| u.as_ref().map(|u| format!(" [{u}]")).unwrap_or_default();
    for t in &m.targets {
        writeln!(
            out,
            "image {} ({} {})",
            t.name,
            t.format.name(),
            t.arch.name()
        )?;
        writeln!(out, "  baseline: {}", identity_text(&t.baseline))?;
        writeln!(out, "  updated:  {}", identity_text(&t.updated))?;
        if let Some(r) = t.image {
            writeln!(out, "  whole updated image: {}", item_text(r))?;
        }
        if !t.functions.is_empty() {
            writeln!(out, "  changed functions ({}):", t.functions.len())?;
        }
        for f in &t.functions {
            writeln!(
                out,
                "    {}{} at {:#x}, {} bytes: {} over {:#x}+{} (sha256 {})",
                f.name,
                unit(&f.unit),
                f.rva,
                f.size,
                serde_json::to_value(f.redirect.scheme)?
                    .as_str()
                    .unwrap_or("?"),
                f.redirect.rva,
                f.redirect.size,
                f.redirect.sha256.short()
            )?;
            writeln!(out, "      new body {}", item_text(f.body))?;
        }
        if !t.added_functions.is_empty() {
            writeln!(out, "  added functions ({}):", t.added_functions.len())?;
        }
        for f in &t.added_functions {
            writeln!(
                out,
                "    {}{}: {}",
                f.name,
                unit(&f.unit),
                item_text(f.body)
            )?;
        }
        if !t.data.is_empty() {
            writeln!(out, "  data ({}):", t.data.len())?;
        }
        for d in &t.data {
            writeln!(
                out,
                "    {}{} ({}): {}",
                d.name,
                unit(&d.unit),
                if d.writable { "writable" } else { "read-only" },
                item_text(d.body)
            )?;
        }
        if !t.lines_only.is_empty() {
            let names: Vec<String> = t
                .lines_only
                .iter()
                .map(|f| format!("{}{}", f.name, unit(&f.unit)))
                .collect();
            writeln!(out, "  left out (line numbers only): {}", names.join(", "))?;
        }
    }
    Ok(())
}

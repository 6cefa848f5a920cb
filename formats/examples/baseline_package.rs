//! Write a `kind = baseline` package carrying the whole updated image, with
//! the real identities of both images: a stand-in for `hotpatch build
//! --kind baseline` until the builder has it, used by `scripts/bench-verify`.
//!
//! ```text
//! baseline_package BASELINE UPDATED PRODUCT RELEASE OUT
//! ```
//! PE images need their PDB beside them. `created` is `SOURCE_DATE_EPOCH`
//! when set; the package expires 90 days later.

use std::path::Path;

use hotpatch_formats::package::{
    write, write_atomic, ImageIdentity, Item, Manifest, PackageKind, Payload, Release, TargetImage,
    Timestamp, SECONDS_PER_DAY,
};
use hotpatch_formats::{read, ReadOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [baseline, updated, product, release, out] = args.as_slice() else {
        eprintln!("usage: baseline_package BASELINE UPDATED PRODUCT RELEASE OUT");
        std::process::exit(2);
    };
    let base_bytes = read::load_file(Path::new(baseline))?;
    let upd_bytes = read::load_file(Path::new(updated))?;
    let base = read::parse(&base_bytes, &ReadOptions::new(baseline))?;
    let upd = read::parse(&upd_bytes, &ReadOptions::new(updated))?;
    let mut payload = Payload::new();
    let image = payload.push(Item::raw(4096, upd_bytes.clone(), vec![]));
    let release = Release::parse(release)?;
    let created = Timestamp::creation_time()?;
    let name = Path::new(updated)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let manifest = Manifest {
        product: product.clone(),
        package_id: format!("{product}-{release}"),
        kind: PackageKind::Baseline,
        release,
        baseline_release: release,
        sequence: 0,
        supersedes: vec![],
        requires_restart: true,
        advisories: vec![],
        created,
        expires: created
            .checked_add(90 * SECONDS_PER_DAY)
            .ok_or("expiry past the year 9999")?,
        overrides: vec![],
        targets: vec![TargetImage {
            name,
            format: upd.format,
            arch: upd.arch,
            baseline: ImageIdentity::of(&base),
            updated: ImageIdentity::of(&upd),
            image: Some(image),
            functions: vec![],
            added_functions: vec![],
            data: vec![],
            lines_only: vec![],
        }],
    };
    let bytes = write(&manifest, &payload)?;
    write_atomic(Path::new(out), &bytes, 0o644)?;
    println!(
        "{out}: {} bytes ({} bytes of image)",
        bytes.len(),
        upd_bytes.len()
    );
    Ok(())
}

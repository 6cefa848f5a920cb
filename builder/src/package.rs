//! Whole packages: image pairs and release metadata in, unsigned package
//! bytes out.
//!
//! [`build`] diffs every image pair, refuses a hotpatch whose diff has
//! blockers (naming them and suggesting a baseline), assembles the
//! relocatable bodies ([`crate::assemble`]), fills in the manifest from the
//! release metadata and checks it against the release calendar, and writes
//! the container ([`hotpatch_formats::package::write`]). A baseline package
//! carries every updated image whole instead.
//!
//! The same inputs give the same bytes: the creation time is an input (the
//! caller passes `SOURCE_DATE_EPOCH` when set), items are added in a fixed
//! order, and the container's encoding is canonical.
//!
//! ```no_run
//! # fn demo(base: &hotpatch_formats::Image<'_>, upd: &hotpatch_formats::Image<'_>) {
//! use hotpatch_builder::package::{build, ImagePair, Metadata};
//! use hotpatch_formats::package::{PackageKind, Release, Timestamp};
//!
//! let created = Timestamp::from_unix(1_772_323_200).unwrap();
//! let meta = Metadata::new(
//!     "libdemo",
//!     PackageKind::Hotpatch,
//!     Release::parse("2026-02").unwrap(),
//!     Release::parse("2026-01").unwrap(),
//!     created,
//! );
//! let pair = ImagePair::new("libdemo.so", "v1.so", base, "v2.so", upd);
//! let built = build(&[pair], &meta).unwrap();
//! std::fs::write("demo.hpk", &built.bytes).unwrap();
//! # }
//! ```

use hotpatch_formats::package::{
    self, check_release, Body, ImageIdentity, Item, Manifest, Override, PackageKind, Payload,
    Release, TargetImage, Timestamp,
};
use hotpatch_formats::Image;

use crate::assemble::{assemble, AssembleError, AssembleOptions};
use crate::diff::{compare, Allow, Error as DiffError, Options};

/// Default lifetime of a package: 90 days after its creation (a quarter,
/// within a trust policy's default limit of 93 days).
pub const DEFAULT_LIFETIME_SECONDS: u64 = 90 * 24 * 60 * 60;

/// One image of a package: its baseline and updated builds.
#[derive(Clone, Copy, Debug)]
pub struct ImagePair<'a> {
    /// The image's name in the manifest (its file name, no directory).
    pub name: &'a str,
    /// How messages name the baseline (its path).
    pub baseline_label: &'a str,
    /// The baseline build.
    pub baseline: &'a Image<'a>,
    /// How messages name the update.
    pub updated_label: &'a str,
    /// The updated build.
    pub updated: &'a Image<'a>,
}

impl<'a> ImagePair<'a> {
    /// A pair named `name`, with the labels messages use for each build.
    pub fn new(
        name: &'a str,
        baseline_label: &'a str,
        baseline: &'a Image<'a>,
        updated_label: &'a str,
        updated: &'a Image<'a>,
    ) -> Self {
        ImagePair {
            name,
            baseline_label,
            baseline,
            updated_label,
            updated,
        }
    }
}

/// The release metadata of a package.
#[derive(Clone, Debug)]
pub struct Metadata {
    /// The product.
    pub product: String,
    /// The package id; `PRODUCT-YYYY-MM` when `None`.
    pub package_id: Option<String>,
    /// Hotpatch or baseline.
    pub kind: PackageKind,
    /// The month it ships in.
    pub release: Release,
    /// The month of the baseline it applies to (its own for a baseline).
    pub baseline_release: Release,
    /// CVE ids it fixes.
    pub advisories: Vec<String>,
    /// Ids of the packages it replaces; by default, for a cumulative
    /// hotpatch, the default ids of the quarter's earlier hotpatches.
    pub supersedes: Option<Vec<String>>,
    /// When it was built.
    pub created: Timestamp,
    /// When it expires; [`DEFAULT_LIFETIME_SECONDS`] after `created` when
    /// `None`.
    pub expires: Option<Timestamp>,
    /// Reviewed overrides of blockers, applied to every image.
    pub allow: Vec<Allow>,
    /// Carry functions whose only change is `__LINE__` immediates.
    pub include_lines_only: bool,
}

impl Metadata {
    /// Metadata with the given required fields and defaults for the rest.
    pub fn new(
        product: &str,
        kind: PackageKind,
        release: Release,
        baseline_release: Release,
        created: Timestamp,
    ) -> Self {
        Metadata {
            product: product.to_string(),
            package_id: None,
            kind,
            release,
            baseline_release,
            advisories: Vec::new(),
            supersedes: None,
            created,
            expires: None,
            allow: Vec::new(),
            include_lines_only: false,
        }
    }

    /// The package id (given, or `PRODUCT-YYYY-MM`).
    pub fn id(&self) -> String {
        self.package_id
            .clone()
            .unwrap_or_else(|| default_id(&self.product, self.release))
    }
}

fn default_id(product: &str, release: Release) -> String {
    format!("{product}-{release}")
}

/// Why a package could not be built. Each message is one line naming the
/// image or field at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A package needs at least one image.
    #[error("no images to package")]
    NoImages,
    /// Two images share a name.
    #[error("image name `{0}` is given twice")]
    DuplicateName(String),
    /// The two builds of a pair are not of one format and architecture.
    #[error("{updated} is {updated_kind} but its baseline {baseline} is {baseline_kind}: not two builds of one image")]
    Mismatch {
        /// The baseline's label.
        baseline: String,
        /// What the baseline is.
        baseline_kind: String,
        /// The update's label.
        updated: String,
        /// What the update is.
        updated_kind: String,
    },
    /// The two builds are the same file.
    #[error("{updated} is the same file as its baseline {baseline}: nothing to package")]
    Identical {
        /// The baseline's label.
        baseline: String,
        /// The update's label.
        updated: String,
    },
    /// A hotpatch that changes nothing.
    #[error("no function changed in any image: nothing to hotpatch")]
    Empty,
    /// The diff failed.
    #[error("cannot diff {updated} against {baseline}: {error}")]
    Diff {
        /// The baseline's label.
        baseline: String,
        /// The update's label.
        updated: String,
        /// Why.
        error: DiffError,
    },
    /// Assembly refused an image (blockers, an inexpressible reference, a
    /// failed relink check).
    #[error(transparent)]
    Assemble(#[from] Box<AssembleError>),
    /// An override that no blocker of any image needed.
    #[error("--allow {0}: no blocker of any image needs it")]
    UnusedOverride(String),
    /// The calendar refuses the release fields.
    #[error("{rule}")]
    Calendar {
        /// The release.
        release: Release,
        /// Which rule.
        rule: package::CalendarError,
    },
    /// The expiry is not after the creation time.
    #[error("expiry {expires} is not after the creation time {created}")]
    Expiry {
        /// Created.
        created: Timestamp,
        /// Expires.
        expires: Timestamp,
    },
    /// The container refused the manifest or payload.
    #[error(transparent)]
    Package(#[from] package::PackageError),
}

/// What [`build`] made.
#[derive(Clone, Debug)]
pub struct Built {
    /// The unsigned package.
    pub bytes: Vec<u8>,
    /// Its manifest, as written.
    pub manifest: Manifest,
    /// Per image: functions changed, added, and bytes of new code.
    pub summaries: Vec<ImageSummary>,
}

/// A line of the build summary for one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSummary {
    /// The image's name.
    pub name: String,
    /// Changed functions packaged.
    pub changed: usize,
    /// Added functions packaged.
    pub added: usize,
    /// New data objects packaged.
    pub data: usize,
    /// Changed functions left out because only their line numbers changed.
    pub lines_only: usize,
    /// Bytes of new code and data (before compression).
    pub bytes: u64,
}

/// Build a package of `pairs` with `meta` (see the module documentation).
pub fn build(pairs: &[ImagePair<'_>], meta: &Metadata) -> Result<Built, BuildError> {
    if pairs.is_empty() {
        return Err(BuildError::NoImages);
    }
    let sequence =
        u32::try_from(meta.release.months_since(meta.baseline_release)).unwrap_or(u32::MAX);
    check_release(&package::ReleaseInfo {
        kind: meta.kind,
        release: meta.release,
        baseline_release: meta.baseline_release,
        sequence,
    })
    .map_err(|rule| BuildError::Calendar {
        release: meta.release,
        rule,
    })?;
    let expires = match meta.expires {
        Some(e) => e,
        None => meta
            .created
            .checked_add(DEFAULT_LIFETIME_SECONDS)
            .unwrap_or(meta.created),
    };
    if expires <= meta.created {
        return Err(BuildError::Expiry {
            created: meta.created,
            expires,
        });
    }
    let mut names: Vec<&str> = pairs.iter().map(|p| p.name).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w.first() == w.get(1)) {
        return Err(BuildError::DuplicateName(
            w.first().copied().unwrap_or_default().to_string(),
        ));
    }
    for p in pairs {
        check_pair(p)?;
    }
    // Images in name order: items are numbered in a fixed order.
    let mut order: Vec<&ImagePair<'_>> = pairs.iter().collect();
    order.sort_by_key(|p| p.name);

    let mut payload = Payload::new();
    let mut targets = Vec::with_capacity(order.len());
    let mut summaries = Vec::with_capacity(order.len());
    let mut used_allows: Vec<&str> = Vec::new();
    for p in order {
        let (target, summary) = match meta.kind {
            PackageKind::Hotpatch => {
                let options = Options {
                    baseline_name: p.baseline_label.to_string(),
                    updated_name: p.updated_label.to_string(),
                    allow: meta.allow.clone(),
                };
                let cmp =
                    compare(p.baseline, p.updated, &options).map_err(|error| BuildError::Diff {
                        baseline: p.baseline_label.to_string(),
                        updated: p.updated_label.to_string(),
                        error,
                    })?;
                for a in &meta.allow {
                    if !cmp.report.unused_overrides.contains(a) {
                        used_allows.push(&a.object);
                    }
                }
                let first = payload.items().len();
                let target = assemble(
                    &cmp,
                    &AssembleOptions {
                        name: p.name.to_string(),
                        include_lines_only: meta.include_lines_only,
                    },
                    &mut payload,
                )
                .map_err(Box::new)?;
                let bytes = payload
                    .items()
                    .get(first..)
                    .unwrap_or_default()
                    .iter()
                    .map(|i| match &i.body {
                        Body::Raw(b) => b.len() as u64,
                        Body::Delta(d) => d.size,
                    })
                    .sum();
                let summary = ImageSummary {
                    name: p.name.to_string(),
                    changed: target.functions.len(),
                    added: target.added_functions.len(),
                    data: target.data.len(),
                    lines_only: target.lines_only.len(),
                    bytes,
                };
                (target, summary)
            }
            PackageKind::Baseline => {
                let item = payload.push(Item {
                    align: 1,
                    body: Body::Raw(p.updated.file.to_vec().into()),
                    relocations: Vec::new(),
                });
                let target = TargetImage {
                    name: p.name.to_string(),
                    format: p.updated.format,
                    arch: p.updated.arch,
                    baseline: ImageIdentity::of(p.baseline),
                    updated: ImageIdentity::of(p.updated),
                    image: Some(item),
                    functions: Vec::new(),
                    added_functions: Vec::new(),
                    data: Vec::new(),
                    lines_only: Vec::new(),
                };
                let summary = ImageSummary {
                    name: p.name.to_string(),
                    changed: 0,
                    added: 0,
                    data: 0,
                    lines_only: 0,
                    bytes: p.updated.file.len() as u64,
                };
                (target, summary)
            }
        };
        targets.push(target);
        summaries.push(summary);
    }
    if meta.kind == PackageKind::Hotpatch {
        if let Some(a) = meta
            .allow
            .iter()
            .find(|a| !used_allows.contains(&a.object.as_str()))
        {
            return Err(BuildError::UnusedOverride(a.object.clone()));
        }
        if targets
            .iter()
            .all(|t| t.functions.is_empty() && t.added_functions.is_empty())
        {
            return Err(BuildError::Empty);
        }
    }
    let supersedes = match &meta.supersedes {
        Some(s) => s.clone(),
        None => earlier_hotpatches(meta),
    };
    let manifest = Manifest {
        product: meta.product.clone(),
        package_id: meta.id(),
        kind: meta.kind,
        release: meta.release,
        baseline_release: meta.baseline_release,
        sequence,
        supersedes,
        requires_restart: meta.kind == PackageKind::Baseline,
        advisories: meta.advisories.clone(),
        created: meta.created,
        expires,
        overrides: meta
            .allow
            .iter()
            .map(|a| Override {
                allow: a.object.clone(),
                reason: a.reason.clone(),
            })
            .collect(),
        targets,
    };
    let bytes = package::write(&manifest, &payload)?;
    let mut manifest = manifest;
    manifest.canonicalise();
    Ok(Built {
        bytes,
        manifest,
        summaries,
    })
}

/// The default ids of the hotpatches a cumulative hotpatch replaces: one
/// per month between its baseline's and its own.
fn earlier_hotpatches(meta: &Metadata) -> Vec<String> {
    if meta.kind != PackageKind::Hotpatch || meta.package_id.is_some() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut month = meta.baseline_release;
    loop {
        let (y, m) = if month.month() == 12 {
            (month.year().saturating_add(1), 1)
        } else {
            (month.year(), month.month().saturating_add(1))
        };
        let Ok(next) = Release::new(y, m) else { break };
        if next >= meta.release {
            break;
        }
        out.push(default_id(&meta.product, next));
        month = next;
    }
    out
}

fn check_pair(p: &ImagePair<'_>) -> Result<(), BuildError> {
    let (b, u) = (p.baseline, p.updated);
    if b.format != u.format || b.arch != u.arch {
        return Err(BuildError::Mismatch {
            baseline: p.baseline_label.to_string(),
            baseline_kind: format!("{} {}", b.format.name(), b.arch.name()),
            updated: p.updated_label.to_string(),
            updated_kind: format!("{} {}", u.format.name(), u.arch.name()),
        });
    }
    if b.file == u.file {
        return Err(BuildError::Identical {
            baseline: p.baseline_label.to_string(),
            updated: p.updated_label.to_string(),
        });
    }
    Ok(())
}

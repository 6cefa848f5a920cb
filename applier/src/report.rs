//! What the engine did, for people ([`std::fmt::Display`]) and scripts
//! (serde JSON).

use std::fmt;
use std::time::Duration;

use hotpatch_formats::package::RedirectScheme;
use serde::Serialize;

use crate::state::{PlacedItem, ProtectionName, Region};

/// How long each phase took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Timings {
    /// Signature, trust, digests, manifest and payload checks.
    #[serde(serialize_with = "micros")]
    pub verify: Duration,
    /// The target checked against the package: locating the images,
    /// their identities (the SHA-256 of each mapped file), the state
    /// records, the SHA-256 of every range the redirects overwrite and of
    /// the baseline bytes delta bodies decode against; decoding.
    #[serde(serialize_with = "micros")]
    pub check: Duration,
    /// Placing (memory allocated and protected in the target) and linking.
    #[serde(serialize_with = "micros")]
    pub plan: Duration,
    /// Writing code and data, the state records, stopping the target,
    /// the redirections and resuming.
    #[serde(serialize_with = "micros")]
    pub apply: Duration,
}

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A package applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// The target's description.
    pub target: String,
    /// The package id.
    pub package_id: String,
    /// Its product.
    pub product: String,
    /// Its release month.
    pub release: String,
    /// Its sequence.
    pub sequence: u32,
    /// The keys whose signatures counted (hex key ids).
    pub signers: Vec<String>,
    /// The trust policy's threshold.
    pub threshold: u32,
    /// What was done to each image.
    pub images: Vec<ImageReport>,
    /// Phase timings.
    pub timings: Timings,
    /// Things that did not stop the apply (an old region that could not be
    /// freed).
    pub warnings: Vec<String>,
}

/// What was done to one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageReport {
    /// The image's name.
    pub name: String,
    /// Where it lies.
    pub base: u64,
    /// How the target found it.
    pub how: String,
    /// The baseline identity that matched (file SHA-256).
    pub baseline_sha256: String,
    /// The package it replaced, if any (`id (sequence N)`).
    pub replaced: Option<String>,
    /// Redirected functions, in the order written.
    pub functions: Vec<FunctionReport>,
    /// Functions the replaced package patched and this one does not, now
    /// restored to their baseline bytes.
    pub restored: Vec<RestoredReport>,
    /// Every item placed.
    pub items: Vec<PlacedItem>,
    /// The regions allocated, with their protection.
    pub regions: Vec<RegionReport>,
    /// The replaced package's regions, freed.
    pub freed: Vec<Region>,
}

/// One redirected function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FunctionReport {
    /// Its name.
    pub name: String,
    /// Its translation unit, if recorded.
    pub unit: Option<String>,
    /// Its entry address.
    pub entry: u64,
    /// The scheme.
    pub scheme: RedirectScheme,
    /// Where its new body lies.
    pub body: u64,
    /// The veneer the redirect goes through, if any.
    pub veneer: Option<u64>,
    /// Whether it was redirected already (by the replaced package) and was
    /// re-pointed.
    pub repointed: bool,
}

/// One function restored to its baseline bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestoredReport {
    /// Its name.
    pub name: String,
    /// Its entry address.
    pub entry: u64,
}

/// One allocated region part, with its protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RegionReport {
    /// First byte.
    pub address: u64,
    /// Size.
    pub size: u64,
    /// Protection.
    pub protection: ProtectionName,
}

/// A package reverted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reverted {
    /// The target's description.
    pub target: String,
    /// The image.
    pub image: String,
    /// The package that was applied.
    pub package_id: String,
    /// Its sequence.
    pub sequence: u32,
    /// Functions whose original bytes were restored.
    pub restored: Vec<RestoredReport>,
    /// Regions freed.
    pub freed: Vec<Region>,
    /// How long it took.
    #[serde(serialize_with = "micros")]
    pub took: Duration,
    /// Things that did not stop the revert.
    pub warnings: Vec<String>,
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

impl fmt::Display for Timings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "verify {}, check {}, plan {}, apply {}",
            ms(self.verify),
            ms(self.check),
            ms(self.plan),
            ms(self.apply)
        )
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "verified: package {} (product {}, release {}, sequence {}) signed by {} of {} required key(s): {}",
            self.package_id,
            self.product,
            self.release,
            self.sequence,
            self.signers.len(),
            self.threshold,
            self.signers
                .iter()
                .map(|s| s.get(..16).unwrap_or(s))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        for i in &self.images {
            writeln!(
                f,
                "{}: image {} at {:#x} ({}): baseline identity matched (sha256 {})",
                self.target,
                i.name,
                i.base,
                i.how,
                i.baseline_sha256.get(..16).unwrap_or(&i.baseline_sha256)
            )?;
            if let Some(r) = &i.replaced {
                let repointed = i.functions.iter().filter(|x| x.repointed).count();
                writeln!(
                    f,
                    "  replaces {r}: {repointed} redirect(s) re-pointed, {} function(s) restored, {} region(s) freed",
                    i.restored.len(),
                    i.freed.len()
                )?;
            }
            let parts: Vec<String> = i
                .regions
                .iter()
                .map(|r| format!("{:#x}+{:#x} {}", r.address, r.size, r.protection.short()))
                .collect();
            writeln!(
                f,
                "  placed {} item(s), {} function(s): {}",
                i.items.len(),
                i.functions.len(),
                parts.join(", ")
            )?;
            for x in &i.functions {
                let via = x
                    .veneer
                    .map(|v| format!(" via veneer {v:#x}"))
                    .unwrap_or_default();
                let again = if x.repointed { ", re-pointed" } else { "" };
                writeln!(
                    f,
                    "  {}: entry {:#x} -> body {:#x}{via} ({:?}{again})",
                    x.name, x.entry, x.body, x.scheme
                )?;
            }
            for x in &i.restored {
                writeln!(
                    f,
                    "  {}: entry {:#x} restored to the baseline",
                    x.name, x.entry
                )?;
            }
            writeln!(f, "  redirects written: {}", i.functions.len())?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        write!(f, "timings: {}", self.timings)
    }
}

impl fmt::Display for Reverted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: image {}: reverted package {} (sequence {}): {} function(s) restored, {} region(s) freed, in {}",
            self.target,
            self.image,
            self.package_id,
            self.sequence,
            self.restored.len(),
            self.freed.len(),
            ms(self.took)
        )?;
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

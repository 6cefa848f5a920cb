//! The manifest: what a package is, what it applies to, and what it changes.
//!
//! It is JSON, stored zstd-compressed (see `formats/SPEC.md`): the writer
//! emits the fields in the order they are declared here, compact (no
//! whitespace), lists in a canonical order ([`Manifest::canonicalise`]), integers
//! as decimal numbers and no floating-point value anywhere. Digests are 64
//! lowercase hex digits; times are `YYYY-MM-DDTHH:MM:SSZ`; months `YYYY-MM`.
//! Unknown fields are refused.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::calendar::{check_release, PackageKind, Release, ReleaseInfo};
use super::digest::{HexBytes, Sha256Digest};
use super::error::{PackageError, Result};
use super::payload::{ItemRef, Payload, Target};
use super::time::Timestamp;
use crate::image::{Arch, Format, FormatIdentity, Image};

/// The longest product name, package id or image name, in bytes.
pub const MAX_NAME: usize = 128;
/// The longest function or data object name, in bytes.
pub const MAX_SYMBOL: usize = 4096;
/// The longest free text (an override's reason), in bytes.
pub const MAX_TEXT: usize = 4096;

/// The manifest of a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The product the package belongs to (`[A-Za-z0-9._+-]`, at most 128
    /// bytes, starting with a letter or digit). A signing key may be limited
    /// to some products.
    pub product: String,
    /// This package's id, unique within the product (same character set).
    pub package_id: String,
    /// `hotpatch` (changed functions, applied live) or `baseline` (full
    /// images, restart required).
    pub kind: PackageKind,
    /// The month it ships in, `YYYY-MM`.
    pub release: Release,
    /// The month of the baseline it applies to; a baseline's own month.
    pub baseline_release: Release,
    /// Months since the baseline: 0 for a baseline, then 1 and 2.
    pub sequence: u32,
    /// Ids of the packages this one replaces (a cumulative hotpatch replaces
    /// the quarter's earlier ones). Sorted, without duplicates.
    pub supersedes: Vec<String>,
    /// Whether applying it needs a restart: true exactly for a baseline.
    pub requires_restart: bool,
    /// The advisories it fixes, as CVE ids (`CVE-YYYY-NNNN…`). Sorted,
    /// without duplicates.
    pub advisories: Vec<String>,
    /// When it was built (`SOURCE_DATE_EPOCH` when set).
    pub created: Timestamp,
    /// After this instant it must not be applied. Later than `created`.
    pub expires: Timestamp,
    /// Blockers a release engineer lifted after review (`--allow` with its
    /// reason), sorted by what they allow.
    pub overrides: Vec<Override>,
    /// One entry per image it patches, sorted by name, names unique.
    pub targets: Vec<TargetImage>,
}

/// A reviewed override of a blocker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// What it allows, as given to `--allow` (for example `type:NAME`).
    pub allow: String,
    /// Why it is safe, in the engineer's words.
    pub reason: String,
}

/// One image the package patches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetImage {
    /// The image's file name (no directory).
    pub name: String,
    /// `pe` or `elf`.
    pub format: Format,
    /// `x86_64` or `aarch64`.
    pub arch: Arch,
    /// The exact build this package applies to. The applier refuses any
    /// other.
    pub baseline: ImageIdentity,
    /// The build the package was made from, for the record.
    pub updated: ImageIdentity,
    /// Baseline packages: the item holding the whole updated image. `null`
    /// for a hotpatch.
    pub image: Option<ItemRef>,
    /// Changed functions, sorted by baseline RVA. Empty in a baseline package.
    pub functions: Vec<ChangedFunction>,
    /// Functions the update adds, sorted by name then unit.
    pub added_functions: Vec<AddedFunction>,
    /// Data objects the package carries (new objects, and new copies of
    /// changed read-only data), sorted by name then unit.
    pub data: Vec<NewData>,
    /// Functions whose only change is `__LINE__` immediates, left out of
    /// the package; sorted by name then unit.
    pub lines_only: Vec<FunctionName>,
}

/// Which build of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageIdentity {
    /// SHA-256 of the whole file.
    pub sha256: Sha256Digest,
    /// What the format records about the build.
    pub build: BuildIdentity,
}

/// The format's own record of a build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum BuildIdentity {
    /// A PE image.
    Pe {
        /// `IMAGE_FILE_HEADER.TimeDateStamp`.
        time_date_stamp: u32,
        /// `IMAGE_OPTIONAL_HEADER.SizeOfImage`.
        size_of_image: u32,
        /// The CodeView record's PDB GUID and age, if it has one.
        codeview: Option<CodeViewId>,
    },
    /// An ELF image.
    Elf {
        /// The GNU build-id note, in hex, if it has one.
        build_id: Option<HexBytes>,
    },
}

/// A PE image's CodeView key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeViewId {
    /// The PDB GUID, `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`.
    pub guid: Guid,
    /// The PDB age.
    pub age: u32,
}

/// A Windows GUID in its usual text form (the bytes are kept in file order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

/// A changed function: its entry is redirected to its new body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangedFunction {
    /// Its name.
    pub name: String,
    /// Its translation unit, where the image records one.
    pub unit: Option<String>,
    /// RVA of its entry in the baseline.
    pub rva: u64,
    /// Its size in the baseline, in bytes.
    pub size: u64,
    /// How its entry is redirected, and what that overwrites.
    pub redirect: Redirect,
    /// The item holding its new body.
    pub body: ItemRef,
}

/// The redirection of a function's entry to its new body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// The scheme.
    pub scheme: RedirectScheme,
    /// RVA of the first baseline byte it overwrites.
    pub rva: u64,
    /// How many bytes it overwrites.
    pub size: u64,
    /// SHA-256 of exactly those baseline bytes; the applier checks them
    /// before writing.
    pub sha256: Sha256Digest,
}

/// How an entry is redirected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedirectScheme {
    /// x86-64 hotpatchable image: `jmp rel32` in the 5 bytes of padding
    /// before the entry, `EB F9` (`jmp $-5`) over its first 2 bytes.
    /// Overwrites `[entry - 5, entry + 2)`.
    X64PaddingShortJump,
    /// x86-64: `jmp rel32` over the first 5 bytes. Overwrites
    /// `[entry, entry + 5)`.
    X64NearJump,
    /// AArch64: `B` over the first instruction (±128 MiB, or to a veneer
    /// placed by the applier). Overwrites `[entry, entry + 4)`.
    A64Branch,
}

impl RedirectScheme {
    /// The architecture the scheme is for.
    pub fn arch(self) -> Arch {
        match self {
            RedirectScheme::X64PaddingShortJump | RedirectScheme::X64NearJump => Arch::X86_64,
            RedirectScheme::A64Branch => Arch::Aarch64,
        }
    }

    /// The baseline range `(rva, size)` the scheme overwrites for an entry
    /// at `entry`, or `None` if it would start before address 0.
    pub fn overwritten(self, entry: u64) -> Option<(u64, u64)> {
        match self {
            RedirectScheme::X64PaddingShortJump => Some((entry.checked_sub(5)?, 7)),
            RedirectScheme::X64NearJump => Some((entry, 5)),
            RedirectScheme::A64Branch => Some((entry, 4)),
        }
    }

    /// Bytes of the function itself the scheme overwrites.
    pub fn bytes_in_function(self) -> u64 {
        match self {
            RedirectScheme::X64PaddingShortJump => 2,
            RedirectScheme::X64NearJump => 5,
            RedirectScheme::A64Branch => 4,
        }
    }
}

impl Redirect {
    /// The redirect of the function at `entry` in `baseline` by `scheme`,
    /// hashing exactly the bytes it overwrites. `None` if those bytes are
    /// not all in the file.
    pub fn from_baseline(baseline: &Image<'_>, scheme: RedirectScheme, entry: u64) -> Option<Self> {
        let (rva, size) = scheme.overwritten(entry)?;
        let bytes = baseline.bytes_at(rva, size)?;
        Some(Redirect {
            scheme,
            rva,
            size,
            sha256: Sha256Digest::of(bytes),
        })
    }
}

/// A function the update adds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddedFunction {
    /// Its name.
    pub name: String,
    /// Its translation unit, where the image records one.
    pub unit: Option<String>,
    /// The item holding its body.
    pub body: ItemRef,
}

/// A data object the package carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewData {
    /// Its name (the builder names anonymous blocks after their first user).
    pub name: String,
    /// Its translation unit, where the image records one.
    pub unit: Option<String>,
    /// Whether the running code may write it (placed in writable memory).
    pub writable: bool,
    /// The item holding its initial bytes.
    pub body: ItemRef,
}

/// A function named by name and unit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionName {
    /// Its name.
    pub name: String,
    /// Its translation unit, where the image records one.
    pub unit: Option<String>,
}

impl ImageIdentity {
    /// The identity of `image` as the readers see it.
    pub fn of(image: &Image<'_>) -> Self {
        let build = match &image.identity.format {
            FormatIdentity::Pe {
                time_date_stamp,
                size_of_image,
                codeview,
                ..
            } => BuildIdentity::Pe {
                time_date_stamp: *time_date_stamp,
                size_of_image: *size_of_image,
                codeview: codeview.as_ref().map(|cv| CodeViewId {
                    guid: Guid(cv.guid),
                    age: cv.age,
                }),
            },
            FormatIdentity::Elf { build_id } => BuildIdentity::Elf {
                build_id: build_id.clone().map(HexBytes),
            },
        };
        ImageIdentity {
            sha256: Sha256Digest::of(image.file),
            build,
        }
    }

    /// The format this identity is of.
    pub fn format(&self) -> Format {
        match self.build {
            BuildIdentity::Pe { .. } => Format::Pe,
            BuildIdentity::Elf { .. } => Format::Elf,
        }
    }
}

impl Manifest {
    /// The calendar fields.
    pub fn release_info(&self) -> ReleaseInfo {
        ReleaseInfo {
            kind: self.kind,
            release: self.release,
            baseline_release: self.baseline_release,
            sequence: self.sequence,
        }
    }

    /// Put every list in its canonical order (the writer does this).
    pub fn canonicalise(&mut self) {
        self.supersedes.sort();
        self.advisories.sort();
        self.overrides
            .sort_by(|a, b| (&a.allow, &a.reason).cmp(&(&b.allow, &b.reason)));
        self.targets.sort_by(|a, b| a.name.cmp(&b.name));
        for t in &mut self.targets {
            t.functions
                .sort_by(|a, b| (a.rva, &a.name, &a.unit).cmp(&(b.rva, &b.name, &b.unit)));
            t.added_functions
                .sort_by(|a, b| (&a.name, &a.unit).cmp(&(&b.name, &b.unit)));
            t.data
                .sort_by(|a, b| (&a.name, &a.unit).cmp(&(&b.name, &b.unit)));
            t.lines_only.sort();
        }
    }

    /// The JSON the writer emits (see the module documentation).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| PackageError::ManifestJson {
            detail: e.to_string(),
        })
    }

    /// Parse manifest JSON (no semantic checks; see [`Manifest::validate`]).
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| PackageError::ManifestJson {
            detail: e.to_string(),
        })
    }

    /// Every item the manifest refers to, with where.
    pub fn item_refs(&self) -> Vec<(ItemRef, String)> {
        let mut out = Vec::new();
        for (t, target) in self.targets.iter().enumerate() {
            if let Some(r) = target.image {
                out.push((r, format!("targets[{t}].image")));
            }
            for (i, f) in target.functions.iter().enumerate() {
                out.push((f.body, format!("targets[{t}].functions[{i}].body")));
            }
            for (i, f) in target.added_functions.iter().enumerate() {
                out.push((f.body, format!("targets[{t}].added_functions[{i}].body")));
            }
            for (i, d) in target.data.iter().enumerate() {
                out.push((d.body, format!("targets[{t}].data[{i}].body")));
            }
        }
        out
    }

    /// Check the rules of the format that JSON alone cannot express: names,
    /// the calendar, kind and restart, times, advisories, targets and their
    /// redirects.
    pub fn validate(&self) -> Result<()> {
        check_id("product", &self.product)?;
        check_id("package_id", &self.package_id)?;
        check_release(&self.release_info())?;
        let restart = self.kind == PackageKind::Baseline;
        if self.requires_restart != restart {
            return Err(merr(
                "requires_restart",
                format!("a {} package has requires_restart = {restart}", self.kind),
            ));
        }
        unique_sorted("supersedes", &self.supersedes)?;
        for (i, s) in self.supersedes.iter().enumerate() {
            check_id(&format!("supersedes[{i}]"), s)?;
            if *s == self.package_id {
                return Err(merr(
                    &format!("supersedes[{i}]"),
                    "a package cannot supersede itself".into(),
                ));
            }
        }
        unique_sorted("advisories", &self.advisories)?;
        for (i, a) in self.advisories.iter().enumerate() {
            if !is_cve(a) {
                return Err(merr(
                    &format!("advisories[{i}]"),
                    format!("{a:?} is not a CVE id (CVE-YYYY-NNNN)"),
                ));
            }
        }
        if self.expires <= self.created {
            return Err(merr(
                "expires",
                format!("{} is not after created {}", self.expires, self.created),
            ));
        }
        for (i, o) in self.overrides.iter().enumerate() {
            check_text(&format!("overrides[{i}].allow"), &o.allow, MAX_SYMBOL)?;
            check_text(&format!("overrides[{i}].reason"), &o.reason, MAX_TEXT)?;
        }
        if self.targets.is_empty() {
            return Err(merr(
                "targets",
                "a package patches at least one image".into(),
            ));
        }
        let mut names = BTreeSet::new();
        for (t, target) in self.targets.iter().enumerate() {
            let at = format!("targets[{t}]");
            if !names.insert(target.name.as_str()) {
                return Err(merr(&at, format!("image {:?} appears twice", target.name)));
            }
            self.validate_target(&at, target)?;
        }
        Ok(())
    }

    fn validate_target(&self, at: &str, t: &TargetImage) -> Result<()> {
        check_text(&format!("{at}.name"), &t.name, MAX_NAME)?;
        if t.name.contains(['/', '\\']) {
            return Err(merr(
                &format!("{at}.name"),
                format!("{:?} is a path, not a file name", t.name),
            ));
        }
        for (which, id) in [("baseline", &t.baseline), ("updated", &t.updated)] {
            if id.format() != t.format {
                return Err(merr(
                    &format!("{at}.{which}"),
                    format!(
                        "is a {} identity, the image is {}",
                        id.format().name(),
                        t.format.name()
                    ),
                ));
            }
        }
        match self.kind {
            PackageKind::Baseline => {
                if t.image.is_none() {
                    return Err(merr(
                        &format!("{at}.image"),
                        "a baseline package carries the whole updated image".into(),
                    ));
                }
                if !(t.functions.is_empty() && t.added_functions.is_empty() && t.data.is_empty()) {
                    return Err(merr(
                        at,
                        "a baseline package carries whole images, not functions or data".into(),
                    ));
                }
            }
            PackageKind::Hotpatch => {
                if t.image.is_some() {
                    return Err(merr(
                        &format!("{at}.image"),
                        "a hotpatch carries no whole image".into(),
                    ));
                }
            }
        }
        let mut seen = BTreeMap::new();
        for (i, f) in t.functions.iter().enumerate() {
            let fat = format!("{at}.functions[{i}]");
            check_text(&format!("{fat}.name"), &f.name, MAX_SYMBOL)?;
            if let Some(u) = &f.unit {
                check_text(&format!("{fat}.unit"), u, MAX_SYMBOL)?;
            }
            if let Some(prev) = seen.insert((f.name.as_str(), f.unit.as_deref()), i) {
                return Err(merr(
                    &fat,
                    format!("function {:?} also at functions[{prev}]", f.name),
                ));
            }
            let r = &f.redirect;
            if r.scheme.arch() != t.arch {
                return Err(merr(
                    &format!("{fat}.redirect.scheme"),
                    format!("{:?} is not a {} scheme", r.scheme, t.arch.name()),
                ));
            }
            if r.scheme.overwritten(f.rva) != Some((r.rva, r.size)) {
                return Err(merr(
                    &format!("{fat}.redirect"),
                    format!(
                        "{:?} at entry {:#x} overwrites {:?}, not {:#x}+{}",
                        r.scheme,
                        f.rva,
                        r.scheme.overwritten(f.rva),
                        r.rva,
                        r.size
                    ),
                ));
            }
            if f.size < r.scheme.bytes_in_function() {
                return Err(merr(
                    &format!("{fat}.size"),
                    format!("{} bytes cannot hold the {:?} redirect", f.size, r.scheme),
                ));
            }
        }
        for (list, entries) in [
            (
                "added_functions",
                t.added_functions
                    .iter()
                    .map(|f| (&f.name, &f.unit))
                    .collect::<Vec<_>>(),
            ),
            ("data", t.data.iter().map(|d| (&d.name, &d.unit)).collect()),
            (
                "lines_only",
                t.lines_only.iter().map(|f| (&f.name, &f.unit)).collect(),
            ),
        ] {
            let mut seen = BTreeSet::new();
            for (i, (name, unit)) in entries.into_iter().enumerate() {
                let eat = format!("{at}.{list}[{i}]");
                check_text(&format!("{eat}.name"), name, MAX_SYMBOL)?;
                if let Some(u) = unit {
                    check_text(&format!("{eat}.unit"), u, MAX_SYMBOL)?;
                }
                if !seen.insert((name, unit)) {
                    return Err(merr(&eat, format!("{name:?} appears twice")));
                }
            }
        }
        Ok(())
    }

    /// Check the manifest against the payload: every item it names exists
    /// and is named once; every item is named by the manifest or reached by
    /// a relocation; an x86-64 image's items use x86-64 relocation kinds.
    pub fn validate_items(&self, payload: &Payload) -> Result<()> {
        let count = payload.items().len();
        let mut named: BTreeMap<ItemRef, String> = BTreeMap::new();
        for (r, at) in self.item_refs() {
            if r.0 as usize >= count {
                return Err(merr(
                    &at,
                    format!("{r} does not exist (the payload has {count} items)"),
                ));
            }
            if let Some(prev) = named.insert(r, at.clone()) {
                return Err(merr(&at, format!("{r} is also {prev}")));
            }
        }
        let mut reached = vec![false; count];
        for item in payload.items() {
            for rel in &item.relocations {
                if let Target::Item(ItemRef(i)) = rel.target {
                    if let Some(slot) = reached.get_mut(i as usize) {
                        *slot = true;
                    }
                }
            }
        }
        for (i, r) in reached.iter().enumerate() {
            let i32_ = u32::try_from(i).unwrap_or(u32::MAX);
            if !r && !named.contains_key(&ItemRef(i32_)) {
                return Err(PackageError::Payload {
                    detail: format!(
                        "item {i} is neither named by the manifest nor referred to by a relocation"
                    ),
                });
            }
        }
        for (t, target) in self.targets.iter().enumerate() {
            if target.arch != Arch::X86_64 {
                continue;
            }
            for (r, at) in self
                .item_refs()
                .into_iter()
                .filter(|(_, at)| at.starts_with(&format!("targets[{t}].")))
            {
                if let Some(item) = payload.get(r) {
                    if let Some(rel) = item
                        .relocations
                        .iter()
                        .find(|x| x.kind.is_a64_instruction())
                    {
                        return Err(merr(
                            &at,
                            format!(
                                "{r} of an x86_64 image has an {} relocation at {:#x}",
                                rel.kind, rel.offset
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn merr(field: &str, detail: String) -> PackageError {
    PackageError::Manifest {
        field: field.into(),
        detail,
    }
}

fn check_id(field: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(merr(
            field,
            format!(
                "{:?} must be 1..={MAX_NAME} of [A-Za-z0-9._+-], starting with a letter or digit",
                s.chars().take(80).collect::<String>()
            ),
        ))
    }
}

fn check_text(field: &str, s: &str, max: usize) -> Result<()> {
    if s.trim().is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(merr(
            field,
            format!("must be 1..={max} bytes of text without control characters"),
        ));
    }
    Ok(())
}

fn unique_sorted(field: &str, v: &[String]) -> Result<()> {
    if let Some(w) = v.windows(2).find(|w| matches!(w, [a, b] if a >= b)) {
        let detail = match w {
            [a, b] if a == b => format!("{a:?} appears twice"),
            _ => "must be sorted".into(),
        };
        return Err(merr(field, detail));
    }
    Ok(())
}

fn is_cve(s: &str) -> bool {
    let mut parts = s.splitn(3, '-');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some("CVE"), Some(year), Some(num))
            if year.len() == 4
                && year.bytes().all(|b| b.is_ascii_digit())
                && (4..=19).contains(&num.len())
                && num.bytes().all(|b| b.is_ascii_digit())
    )
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::image::guid_to_string(&self.0))
    }
}

impl Guid {
    /// Parse `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` (either case).
    pub fn parse(text: &str) -> Option<Guid> {
        let groups: Vec<&str> = text.split('-').collect();
        let [a, b, c, d, e] = groups.as_slice() else {
            return None;
        };
        if [a.len(), b.len(), c.len(), d.len(), e.len()] != [8, 4, 4, 4, 12] {
            return None;
        }
        let hex = |s: &str| super::digest::from_hex(s).ok();
        let (a, b, c, d, e) = (hex(a)?, hex(b)?, hex(c)?, hex(d)?, hex(e)?);
        let mut g = [0u8; 16];
        // The first three groups are little-endian in the file.
        let mut out = Vec::with_capacity(16);
        out.extend(a.iter().rev());
        out.extend(b.iter().rev());
        out.extend(c.iter().rev());
        out.extend(d.iter());
        out.extend(e.iter());
        g.copy_from_slice(out.get(..16)?);
        Some(Guid(g))
    }
}

impl Serialize for Guid {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Guid::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("invalid GUID {text:?}")))
    }
}

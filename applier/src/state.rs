//! The state record the engine keeps per target image (through
//! [`Target::load_state`](crate::Target::load_state) and
//! [`Target::store_state`](crate::Target::store_state)), as JSON.
//!
//! It is what makes revert, rollback protection and cumulative replacement
//! possible: the highest sequence applied to the baseline, and for the
//! package applied now every redirect's address, original bytes and the
//! bytes written there, and every region the engine allocated.

use hotpatch_formats::package::digest::HexBytes;
use hotpatch_formats::package::{RedirectScheme, Sha256Digest};
use serde::{Deserialize, Serialize};

use crate::target::Protection;

/// The record's format version.
pub const STATE_VERSION: u32 = 1;

/// The state record of one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateRecord {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// The image's name (the record's key).
    pub image: String,
    /// The baseline build the record is about (its file's SHA-256).
    pub baseline_sha256: Sha256Digest,
    /// The highest sequence ever applied to this baseline, and by which
    /// package; kept after a revert, so that a reverted package cannot be
    /// applied again (a repeat) nor an older one (a rollback).
    pub highest_sequence: u32,
    /// The package that had [`StateRecord::highest_sequence`].
    pub highest_package: String,
    /// What is applied now, if anything.
    pub applied: Option<AppliedPackage>,
}

/// A package applied to an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedPackage {
    /// The package id.
    pub package_id: String,
    /// Its product.
    pub product: String,
    /// Its sequence.
    pub sequence: u32,
    /// Where the image lay when it was applied.
    pub base: u64,
    /// Every redirected function, in the order written.
    pub redirects: Vec<RedirectRecord>,
    /// Every item placed, with its address.
    pub items: Vec<PlacedItem>,
    /// Every range allocated for it (freed on revert or replacement).
    pub regions: Vec<Region>,
}

/// One redirected function entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectRecord {
    /// The function's name.
    pub name: String,
    /// Its translation unit, if recorded.
    pub unit: Option<String>,
    /// The scheme.
    pub scheme: RedirectScheme,
    /// RVA of the function's entry.
    pub entry_rva: u64,
    /// Address of the first overwritten byte.
    pub address: u64,
    /// The baseline's bytes there.
    pub original: HexBytes,
    /// The bytes the engine wrote there.
    pub written: HexBytes,
    /// Address of the new body the redirect reaches.
    pub body: u64,
    /// Address of the veneer it goes through, if the body is out of direct
    /// branch range.
    pub veneer: Option<u64>,
}

/// An item of the package, where it lies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacedItem {
    /// Its index in the payload.
    pub item: u32,
    /// What it is (`function f`, `data d`, `item 7`).
    pub what: String,
    /// Its address.
    pub address: u64,
    /// Its size.
    pub size: u64,
    /// The protection of the memory it is in.
    pub protection: ProtectionName,
}

/// A range the engine allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// First byte.
    pub address: u64,
    /// Size (a multiple of the page size).
    pub size: u64,
}

/// A protection, by name, for the record and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtectionName {
    /// Read and execute.
    Code,
    /// Read only.
    ReadOnly,
    /// Read and write.
    ReadWrite,
}

impl ProtectionName {
    /// The protection.
    pub fn protection(self) -> Protection {
        match self {
            ProtectionName::Code => Protection::CODE,
            ProtectionName::ReadOnly => Protection::READ_ONLY,
            ProtectionName::ReadWrite => Protection::READ_WRITE,
        }
    }

    /// `r-x`, `r--` or `rw-`.
    pub fn short(self) -> &'static str {
        match self {
            ProtectionName::Code => "r-x",
            ProtectionName::ReadOnly => "r--",
            ProtectionName::ReadWrite => "rw-",
        }
    }
}

impl StateRecord {
    /// The JSON bytes stored in the target.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parse a stored record.
    pub fn from_bytes(bytes: &[u8]) -> Result<StateRecord, String> {
        let r: StateRecord = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if r.version != STATE_VERSION {
            return Err(format!(
                "version {} (this engine reads {STATE_VERSION})",
                r.version
            ));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_through_json() {
        let r = StateRecord {
            version: STATE_VERSION,
            image: "v1.so".into(),
            baseline_sha256: Sha256Digest([7; 32]),
            highest_sequence: 2,
            highest_package: "p-2".into(),
            applied: Some(AppliedPackage {
                package_id: "p-2".into(),
                product: "p".into(),
                sequence: 2,
                base: 0x7000_0000,
                redirects: vec![RedirectRecord {
                    name: "f".into(),
                    unit: None,
                    scheme: RedirectScheme::X64PaddingShortJump,
                    entry_rva: 0x1005,
                    address: 0x7000_1000,
                    original: HexBytes(vec![0xcc; 7]),
                    written: HexBytes(vec![0xe9, 1, 2, 3, 4, 0xeb, 0xf9]),
                    body: 0x7100_0000,
                    veneer: None,
                }],
                items: vec![PlacedItem {
                    item: 0,
                    what: "function f".into(),
                    address: 0x7100_0000,
                    size: 16,
                    protection: ProtectionName::Code,
                }],
                regions: vec![Region {
                    address: 0x7100_0000,
                    size: 0x1000,
                }],
            }),
        };
        let back = StateRecord::from_bytes(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
        let mut other = r.to_bytes();
        other.splice(0..0, b"x".iter().copied());
        assert!(StateRecord::from_bytes(&other).is_err());
    }
}

//! Verifying a package against a trust policy.
//!
//! The order of checks (the first that fails is reported):
//! 1. structure: the header, each length against its cap and the file
//!    (nothing else is read);
//! 2. signatures, before the manifest is parsed: each signature is counted
//!    only if its key is not revoked, is in the policy with the release
//!    role, is inside its validity window at the verification time, and the
//!    signature verifies over the signed message; a key counts once however
//!    often it signed; fewer distinct keys than the threshold fail;
//! 3. the manifest's and the payload's digests against the signed header;
//! 4. the manifest: parsed and checked; keys not allowed for its product
//!    stop counting and the threshold is checked again;
//! 5. time: not created after the verification time, not expired, and not
//!    claiming more validity than the policy allows (freeze);
//! 6. the payload: decompressed (bounded by its declared size), decoded and
//!    checked against the manifest.

use std::collections::BTreeSet;
use std::fmt;

use hotpatch_formats::package::{
    KeyId, Manifest, Package, PackageError, PackageKind, Payload, RawPackage, Release, Timestamp,
    SECONDS_PER_DAY,
};
use serde::Serialize;

use crate::policy::{TrustPolicy, ANY_PRODUCT, ROLE_RELEASE};

/// Why one signature did not count.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// Its key is revoked.
    Revoked {
        /// The revocation's reason.
        reason: String,
    },
    /// Its key is not in the trust policy.
    UnknownKey,
    /// Its key lacks the release role.
    NoReleaseRole,
    /// Its key's validity window has not begun.
    KeyNotYetValid {
        /// When it begins.
        not_before: Timestamp,
    },
    /// Its key's validity window has ended.
    KeyExpired {
        /// When it ended.
        not_after: Timestamp,
    },
    /// The signature does not verify over this package's signed message.
    BadSignature,
    /// The key already signed (a key counts once).
    Duplicate,
    /// Its key may not sign for the package's product.
    WrongProduct {
        /// The package's product.
        product: String,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Revoked { reason } => write!(f, "revoked ({reason})"),
            Rejection::UnknownKey => f.write_str("not in the trust policy"),
            Rejection::NoReleaseRole => write!(f, "lacks the {ROLE_RELEASE:?} role"),
            Rejection::KeyNotYetValid { not_before } => {
                write!(f, "outside its validity window (not before {not_before})")
            }
            Rejection::KeyExpired { not_after } => {
                write!(f, "outside its validity window (not after {not_after})")
            }
            Rejection::BadSignature => f.write_str("signature does not verify over this package"),
            Rejection::Duplicate => f.write_str("signed more than once (counted once)"),
            Rejection::WrongProduct { product } => {
                write!(f, "not allowed to sign for product {product:?}")
            }
        }
    }
}

/// A signature that did not count, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The key id the signature names.
    pub key_id: KeyId,
    /// Why it did not count.
    pub rejection: Rejection,
}

/// Why a package failed verification: the first failed check. One line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The container is damaged (header, lengths, caps, trailing bytes).
    #[error("structure: {0}")]
    Structure(PackageError),
    /// No signature at all.
    #[error("signatures: the package is unsigned")]
    Unsigned,
    /// Too few distinct valid keys signed.
    #[error("signatures: {counted} of the {required} required distinct trusted keys signed{}", rejections(.rejected))]
    Threshold {
        /// Distinct keys the policy requires.
        required: u32,
        /// Distinct keys that counted.
        counted: u32,
        /// The signatures that did not count, in order.
        rejected: Vec<Rejected>,
    },
    /// A section's digest differs from the signed header's.
    #[error("digest: {0}")]
    Digest(PackageError),
    /// The manifest is invalid (JSON, fields, calendar).
    #[error("{0}")]
    Manifest(PackageError),
    /// The package was created after the verification time.
    #[error("time: the package was created at {created}, after the verification time {at}")]
    NotYetValid {
        /// Its creation time.
        created: Timestamp,
        /// The verification time.
        at: Timestamp,
    },
    /// The package has expired.
    #[error("expired: the package expired at {expires} (verification time {at})")]
    Expired {
        /// Its expiry.
        expires: Timestamp,
        /// The verification time.
        at: Timestamp,
    },
    /// The package claims more validity than the policy allows.
    #[error("freeze: the package claims {days} days of validity ({created} to {expires}), the policy allows at most {max_days}")]
    ExcessiveValidity {
        /// Its validity in whole days (rounded up).
        days: u64,
        /// Its creation time.
        created: Timestamp,
        /// Its expiry.
        expires: Timestamp,
        /// The policy's maximum.
        max_days: u64,
    },
    /// The payload is invalid.
    #[error("{0}")]
    Payload(PackageError),
}

fn rejections(r: &[Rejected]) -> String {
    if r.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = r
        .iter()
        .map(|x| format!("key {}: {}", x.key_id.short(), x.rejection))
        .collect();
    format!(" ({})", parts.join("; "))
}

impl VerifyError {
    /// A short, stable name of the failed check, for scripts: `structure`,
    /// `unsigned`, `threshold`, `digest`, `manifest`, `not-yet-valid`,
    /// `expired`, `freeze` or `payload`.
    pub fn check(&self) -> &'static str {
        match self {
            VerifyError::Structure(_) => "structure",
            VerifyError::Unsigned => "unsigned",
            VerifyError::Threshold { .. } => "threshold",
            VerifyError::Digest(_) => "digest",
            VerifyError::Manifest(_) => "manifest",
            VerifyError::NotYetValid { .. } => "not-yet-valid",
            VerifyError::Expired { .. } => "expired",
            VerifyError::ExcessiveValidity { .. } => "freeze",
            VerifyError::Payload(_) => "payload",
        }
    }
}

/// A verified package: the only way to one is [`verify`].
#[derive(Clone, Debug)]
pub struct Verified {
    package: Package,
    signers: Vec<KeyId>,
    threshold: u32,
    at: Timestamp,
}

/// What was verified, for people and scripts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Always true: a summary exists only for a verified package.
    pub verified: bool,
    /// The product.
    pub product: String,
    /// The package id.
    pub package_id: String,
    /// The month it ships in.
    pub release: Release,
    /// Hotpatch or baseline.
    pub kind: PackageKind,
    /// The baseline month it applies to.
    pub baseline_release: Release,
    /// Its sequence against that baseline.
    pub sequence: u32,
    /// When it was created.
    pub created: Timestamp,
    /// When it expires.
    pub expires: Timestamp,
    /// The distinct keys whose signatures counted, sorted.
    pub signers: Vec<KeyId>,
    /// The policy's threshold.
    pub threshold: u32,
    /// The verification time.
    pub verified_at: Timestamp,
}

impl Verified {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.package.manifest
    }

    /// The payload.
    pub fn payload(&self) -> &Payload {
        &self.package.payload
    }

    /// The whole package.
    pub fn into_package(self) -> Package {
        self.package
    }

    /// The distinct keys that counted, sorted.
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }

    /// What was verified.
    pub fn summary(&self) -> Summary {
        let m = &self.package.manifest;
        Summary {
            verified: true,
            product: m.product.clone(),
            package_id: m.package_id.clone(),
            release: m.release,
            kind: m.kind,
            baseline_release: m.baseline_release,
            sequence: m.sequence,
            created: m.created,
            expires: m.expires,
            signers: self.signers.clone(),
            threshold: self.threshold,
            verified_at: self.at,
        }
    }
}

/// Verify `package` against `policy` at time `at`, in the order given in
/// the module documentation, and return the decoded package only if every
/// check passes.
pub fn verify(
    package: &[u8],
    policy: &TrustPolicy,
    at: Timestamp,
) -> Result<Verified, VerifyError> {
    // 1. Structure: only the header is read.
    let raw = RawPackage::parse(package).map_err(VerifyError::Structure)?;
    if raw.signatures().is_empty() {
        return Err(VerifyError::Unsigned);
    }
    // 2. Signatures, before anything else is parsed.
    let message = raw.signed_message();
    let mut rejected = Vec::new();
    let mut counted: BTreeSet<KeyId> = BTreeSet::new();
    for s in raw.signatures() {
        let rejection = if let Some(r) = policy.revocation(&s.key_id) {
            Some(Rejection::Revoked {
                reason: r.reason.clone(),
            })
        } else if let Some(k) = policy.key(&s.key_id) {
            if !k.roles.iter().any(|r| r == ROLE_RELEASE) {
                Some(Rejection::NoReleaseRole)
            } else if let Some(nb) = k.not_before.filter(|&nb| at < nb) {
                Some(Rejection::KeyNotYetValid { not_before: nb })
            } else if let Some(na) = k.not_after.filter(|&na| at > na) {
                Some(Rejection::KeyExpired { not_after: na })
            } else if !k.key.verify(&message, &s.signature) {
                Some(Rejection::BadSignature)
            } else if counted.contains(&s.key_id) {
                Some(Rejection::Duplicate)
            } else {
                None
            }
        } else {
            Some(Rejection::UnknownKey)
        };
        match rejection {
            Some(rejection) => rejected.push(Rejected {
                key_id: s.key_id,
                rejection,
            }),
            None => {
                counted.insert(s.key_id);
            }
        }
    }
    let threshold_check = |counted: &BTreeSet<KeyId>, rejected: &[Rejected]| {
        let n = u32::try_from(counted.len()).unwrap_or(u32::MAX);
        if n < policy.threshold {
            Err(VerifyError::Threshold {
                required: policy.threshold,
                counted: n,
                rejected: rejected.to_vec(),
            })
        } else {
            Ok(())
        }
    };
    threshold_check(&counted, &rejected)?;
    // 3. Digests of what the signatures cover.
    raw.check_manifest_digest().map_err(VerifyError::Digest)?;
    raw.check_payload_digest().map_err(VerifyError::Digest)?;
    // 4. The manifest, now authenticated; then the product each key may sign.
    let manifest = raw.decode_manifest().map_err(VerifyError::Manifest)?;
    let wrong_product: Vec<KeyId> = counted
        .iter()
        .filter(|id| {
            policy.key(id).is_some_and(|k| {
                !k.products
                    .iter()
                    .any(|p| p == ANY_PRODUCT || *p == manifest.product)
            })
        })
        .copied()
        .collect();
    for id in wrong_product {
        counted.remove(&id);
        rejected.push(Rejected {
            key_id: id,
            rejection: Rejection::WrongProduct {
                product: manifest.product.clone(),
            },
        });
    }
    threshold_check(&counted, &rejected)?;
    // 5. Time.
    if manifest.created > at {
        return Err(VerifyError::NotYetValid {
            created: manifest.created,
            at,
        });
    }
    if at >= manifest.expires {
        return Err(VerifyError::Expired {
            expires: manifest.expires,
            at,
        });
    }
    let validity = manifest.expires.seconds_since(manifest.created);
    let max = policy.max_validity_days.saturating_mul(SECONDS_PER_DAY);
    if validity > max {
        return Err(VerifyError::ExcessiveValidity {
            days: validity.div_ceil(SECONDS_PER_DAY),
            created: manifest.created,
            expires: manifest.expires,
            max_days: policy.max_validity_days,
        });
    }
    // 6. The payload.
    let payload = raw.decode_payload().map_err(VerifyError::Payload)?;
    manifest
        .validate_items(&payload)
        .map_err(VerifyError::Payload)?;
    Ok(Verified {
        package: Package { manifest, payload },
        signers: counted.into_iter().collect(),
        threshold: policy.threshold,
        at,
    })
}

//! Adding a signature to a package.

use hotpatch_formats::package::{KeyId, PackageError, RawPackage, SignatureEntry};

use crate::key::PrivateKey;

/// Why a package could not be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The package is damaged or invalid: it is not signed.
    #[error("refusing to sign an invalid package: {0}")]
    Package(#[from] PackageError),
    /// This key already signed it.
    #[error("already signed by key {0}")]
    AlreadySigned(KeyId),
}

/// Add one signature by `key` to `package`, keeping the earlier ones, so
/// that several signers can sign in turn. The package is checked first
/// (structure, digests, manifest, payload): nothing invalid gets signed.
pub fn sign(package: &[u8], key: &PrivateKey) -> Result<Vec<u8>, SignError> {
    let raw = RawPackage::parse(package)?;
    raw.decode()?;
    let key_id = key.key_id();
    if raw.signatures().iter().any(|s| s.key_id == key_id) {
        return Err(SignError::AlreadySigned(key_id));
    }
    let mut signatures = raw.signatures().to_vec();
    signatures.push(SignatureEntry {
        key_id,
        signature: key.sign(&raw.signed_message()),
    });
    Ok(raw.with_signatures(&signatures)?)
}

//! Keys, signatures and trust policy for hotpatch packages.
//!
//! - [`key`]: Ed25519 keys in PKCS#8 PEM / SPKI PEM files ([`keygen`]).
//! - [`sign()`]: add a signature to a package.
//! - [`policy`]: the trust policy (keys, roles, products, validity windows,
//!   threshold, revocations, maximum validity), in TOML.
//! - [`verify()`]: check a package against a policy; the applier calls it
//!   before anything else, and the returned [`Verified`] is the only way to
//!   a verified manifest and payload.
//!
//! ```no_run
//! use std::path::Path;
//! use hotpatch_signer::{verify, TrustPolicy};
//! use hotpatch_formats::package::Timestamp;
//!
//! let policy = TrustPolicy::load(Path::new("trust.toml"))?;
//! let bytes = std::fs::read("update.hpk")?;
//! let verified = verify(&bytes, &policy, Timestamp::now())?;
//! println!("{} {} signed by {:?}", verified.manifest().product, verified.manifest().release, verified.signers());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod key;
pub mod policy;
pub mod sign;
pub mod verify;

pub use key::{keygen, KeyError, PrivateKey, PublicKey};
pub use policy::{PolicyError, Revocation, TrustPolicy, TrustedKey};
pub use sign::{sign, SignError};
pub use verify::{verify, Rejected, Rejection, Summary, Verified, VerifyError};

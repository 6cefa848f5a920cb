//! Keys, signatures and trust policy for hotpatch packages.
//!
//! This crate is the home of ed25519 key handling (PKCS#8 PEM), package signing
//! and the trust policy (keys, roles, thresholds, validity windows, revocation).
//! It is filled in by the signing issue; until then it deliberately exports nothing.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

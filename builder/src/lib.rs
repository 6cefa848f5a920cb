//! Function matching, normalisation, diff classification and package assembly.
//!
//! The builder takes two [`hotpatch_formats::Image`]s, a baseline and its
//! update, and decides which functions really changed ([`diff::diff`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod diff;
pub mod index;
pub mod key;
pub mod norm;
pub mod patchability;
pub mod report;
#[cfg(test)]
mod testutil;
pub mod types;

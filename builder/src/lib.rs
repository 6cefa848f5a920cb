//! Function matching, normalisation, diff classification and package assembly.
//!
//! The builder takes two [`hotpatch_formats::Image`]s, a baseline and its
//! update, and decides which functions really changed ([`diff::diff`]).
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

pub mod assemble;
pub mod diff;
pub mod index;
pub mod key;
pub mod lines;
pub mod matching;
pub mod norm;
pub mod package;
pub mod patchability;
pub mod report;
#[cfg(test)]
mod testutil;
pub mod types;

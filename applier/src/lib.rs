//! Verify → plan → apply for hotpatch packages.
//!
//! One [`Engine`] drives every kind of target (an emulated x64/ARM64 VM, a
//! live Linux process, an image file) through the [`Target`] trait:
//!
//! ```no_run
//! # fn demo(target: &mut dyn hotpatch_applier::Target) -> Result<(), Box<dyn std::error::Error>> {
//! use hotpatch_applier::Engine;
//! use hotpatch_formats::package::Timestamp;
//! use hotpatch_signer::TrustPolicy;
//!
//! let policy = TrustPolicy::load(std::path::Path::new("trust.toml"))?;
//! let package = std::fs::read("fix.hpk")?;
//! let mut engine = Engine::new();
//! let applied = engine.apply(target, &package, &policy, Timestamp::now())?;
//! println!("{applied}");
//! let reverted = engine.revert(target, &applied.images[0].name)?;
//! println!("{reverted}");
//! # Ok(()) }
//! ```
//!
//! See [`engine`] for the order of the steps and the guarantees on failure,
//! and [`state`] for the record kept in each target.
// Unsafe code is denied everywhere but in `process` (two libc calls that
// nix does not wrap, each with its SAFETY comment); `forbid` could not be
// lifted for that one module.
#![deny(unsafe_code)]
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

pub mod engine;
pub mod error;
pub mod jump;
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub mod process;
pub mod report;
pub mod state;
pub mod target;

pub use engine::{Engine, Options, Step};
pub use error::{ApplyError, Digests};
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub use process::{Pause, Process, Syscalls, DEFAULT_STATE_DIR};
pub use report::{
    Applied, FunctionReport, ImageReport, RegionReport, RestoredReport, Reverted, Timings,
};
pub use state::StateRecord;
pub use target::{Located, Patch, Protection, Target, TargetError, ThreadPc};

#[cfg(test)]
mod tests;

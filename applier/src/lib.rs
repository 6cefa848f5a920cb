//! Verify → plan → apply for hotpatch packages.
//!
//! Targets are an emulated x64/ARM64 VM, a live Linux process and an image
//! file, each behind the [`Target`] trait that the one engine drives.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub mod process;
pub mod target;

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub use process::{Process, DEFAULT_STATE_DIR};
pub use target::{Located, Protection, Target, TargetError, ThreadPc};

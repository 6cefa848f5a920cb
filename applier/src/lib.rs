//! Verify → plan → apply for hotpatch packages.
//!
//! Targets are an emulated x64/ARM64 VM, a live Linux process and an image
//! file, each behind the [`Target`] trait that the one engine drives.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod target;

pub use target::{Located, Protection, Target, TargetError, ThreadPc};

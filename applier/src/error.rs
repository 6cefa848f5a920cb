//! Why the engine refused or failed: [`ApplyError`]. Every message is one
//! line and names the target, the image and what is wrong.

use hotpatch_formats::package::{PackageError, Sha256Digest};
use hotpatch_formats::{Arch, Format};
use hotpatch_signer::VerifyError;

use crate::target::TargetError;

/// What a package recorded and what the engine found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    /// The SHA-256 the package recorded.
    pub want: Sha256Digest,
    /// The SHA-256 of what is there.
    pub found: Sha256Digest,
}

/// Why a package was not applied (or not reverted).
///
/// Unless the variant says otherwise ([`ApplyError::UndoFailed`]), the
/// target is as it was before the call: nothing was written over the
/// image, and everything allocated was freed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The package failed verification (signature, trust, digests,
    /// manifest, time, payload).
    #[error("verify: {0}")]
    Verify(#[from] VerifyError),
    /// A baseline package replaces whole images: it needs a restart.
    #[error("package {package_id} is a baseline package (whole images, restart required), not a hotpatch")]
    NotAHotpatch {
        /// The package id.
        package_id: String,
    },
    /// The target failed an operation.
    #[error("{0}")]
    Target(#[from] TargetError),
    /// The package is for another format or architecture.
    #[error("{target}: image `{image}`: the package is for {want_arch} {want_format}, the target holds {found_arch} {found_format}", want_arch = .want.1.name(), want_format = .want.0.name(), found_arch = .found.1.name(), found_format = .found.0.name())]
    WrongPlatform {
        /// The target.
        target: String,
        /// The image.
        image: String,
        /// Format and architecture the package is for.
        want: (Format, Arch),
        /// Format and architecture of the image in the target.
        found: (Format, Arch),
    },
    /// The image is another build than the package's baseline.
    #[error("{target}: image `{image}` ({how}) is not the package's baseline: its file SHA-256 is {}, the package needs {}", .digests.found, .digests.want)]
    WrongBaseline {
        /// The target.
        target: String,
        /// The image.
        image: String,
        /// How the target found it.
        how: String,
        /// The baseline's SHA-256 in the manifest, and the image file's.
        digests: Box<Digests>,
    },
    /// Bytes the package would overwrite, or decode against, are not the
    /// baseline's.
    #[error("{target}: image `{image}`: {what} at {address:#x} ({size} bytes): SHA-256 {}, the package recorded {}", .digests.found, .digests.want)]
    BytesDiffer {
        /// The target.
        target: String,
        /// The image.
        image: String,
        /// What the bytes are (`entry of `f``, `delta reference of item 3`).
        what: String,
        /// Their address.
        address: u64,
        /// Their length.
        size: u64,
        /// The SHA-256 the package recorded, and that of what the target
        /// holds.
        digests: Box<Digests>,
    },
    /// The package is not newer than the one applied to this baseline.
    #[error("{target}: image `{image}`: package {package_id} has sequence {sequence}, not newer than sequence {applied} already applied to this baseline ({applied_id}): rollback or repeat refused")]
    Rollback {
        /// The target.
        target: String,
        /// The image.
        image: String,
        /// The refused package.
        package_id: String,
        /// Its sequence.
        sequence: u32,
        /// The highest sequence applied to this baseline.
        applied: u32,
        /// The package that had it.
        applied_id: String,
    },
    /// Another package (another product, or for another build) is applied
    /// to the image; it must be reverted first.
    #[error("{target}: image `{image}`: {detail}")]
    Conflict {
        /// The target.
        target: String,
        /// The image.
        image: String,
        /// What is applied and why it conflicts.
        detail: String,
    },
    /// Bytes the engine wrote are no longer there (something else patched
    /// the image).
    #[error("{target}: image `{image}`: {what} at {address:#x} does not hold the bytes the engine wrote; refusing to overwrite them")]
    Tampered {
        /// The target.
        target: String,
        /// The image.
        image: String,
        /// Which site.
        what: String,
        /// Its address.
        address: u64,
    },
    /// The state record the target holds cannot be read.
    #[error("{target}: image `{image}`: state record: {detail}")]
    State {
        /// The target.
        target: String,
        /// The image.
        image: String,
        /// What is wrong.
        detail: String,
    },
    /// No placement of the package's code and data is within reach of the
    /// image, with or without veneers.
    #[error("{target}: image `{image}`: no placement within branch range: {detail}")]
    Placement {
        /// The target.
        target: String,
        /// The image.
        image: String,
        /// Which constraints conflict.
        detail: String,
    },
    /// The package's items could not be decoded or linked.
    #[error("{target}: image `{image}`: {error}")]
    Package {
        /// The target.
        target: String,
        /// The image.
        image: String,
        /// The package error.
        error: Box<PackageError>,
    },
    /// The package's manifest is inconsistent in a way the engine cannot
    /// apply (for example an item shared by two images).
    #[error("{target}: image `{image}`: {detail}")]
    Unsupported {
        /// The target.
        target: String,
        /// The image.
        image: String,
        /// What.
        detail: String,
    },
    /// A thread kept running inside bytes the engine must change.
    #[error("{target}: thread {tid} is at {pc:#x}, inside {what}, after {attempts} attempts")]
    Busy {
        /// The target.
        target: String,
        /// The thread.
        tid: u64,
        /// Its program counter.
        pc: u64,
        /// What it is inside.
        what: String,
        /// How many times the engine stopped the target and looked.
        attempts: u32,
    },
    /// Nothing is applied to the image (revert).
    #[error("{target}: image `{image}`: no package is applied")]
    NotApplied {
        /// The target.
        target: String,
        /// The image.
        image: String,
    },
    /// A fault injected by a test after `step`.
    #[error("injected fault after step `{step}`")]
    InjectedFault {
        /// The step.
        step: String,
    },
    /// A step failed, and undoing what was already done failed too: the
    /// target may be half-patched. Both causes are given.
    #[error("{error}; undoing it failed too, the target may be half-patched: {undo}")]
    UndoFailed {
        /// The first failure.
        error: Box<ApplyError>,
        /// What the undo could not do.
        undo: String,
    },
}

impl ApplyError {
    /// A short, stable name of the failure, for scripts and tests.
    pub fn check(&self) -> &'static str {
        match self {
            ApplyError::Verify(_) => "verify",
            ApplyError::NotAHotpatch { .. } => "not-a-hotpatch",
            ApplyError::Target(_) => "target",
            ApplyError::WrongPlatform { .. } => "wrong-platform",
            ApplyError::WrongBaseline { .. } => "wrong-baseline",
            ApplyError::BytesDiffer { .. } => "bytes-differ",
            ApplyError::Rollback { .. } => "rollback",
            ApplyError::Conflict { .. } => "conflict",
            ApplyError::Tampered { .. } => "tampered",
            ApplyError::State { .. } => "state",
            ApplyError::Placement { .. } => "placement",
            ApplyError::Package { .. } => "package",
            ApplyError::Unsupported { .. } => "unsupported",
            ApplyError::Busy { .. } => "busy",
            ApplyError::NotApplied { .. } => "not-applied",
            ApplyError::InjectedFault { .. } => "injected-fault",
            ApplyError::UndoFailed { .. } => "undo-failed",
        }
    }
}

#[cfg(test)]
mod tests {
    /// Small enough to return by value everywhere (clippy's
    /// `result_large_err` limit is 128 bytes).
    #[test]
    fn the_error_stays_small() {
        assert!(std::mem::size_of::<super::ApplyError>() <= 128);
    }
}

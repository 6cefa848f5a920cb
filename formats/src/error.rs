//! Errors of the readers.
//!
//! Every error names the file it is about, so that its `Display` form is a
//! complete one-line message for a user.

use std::path::PathBuf;

/// A reader error. Its `Display` form is one line that names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("{}: cannot read file", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is neither a PE nor an ELF image.
    #[error("{}: not a PE or ELF image ({detail})", path.display())]
    NotAnImage {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        detail: String,
    },
    /// The image is for a machine this tool does not handle.
    #[error("{}: unsupported machine type {machine} (supported: x86-64, ARM64)", path.display())]
    UnsupportedMachine {
        /// The file.
        path: PathBuf,
        /// The machine, as the format names it.
        machine: String,
    },
    /// The file is well formed but uses a feature this tool does not handle.
    #[error("{}: unsupported: {detail}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not supported.
        detail: String,
    },
    /// The file claims to be an image or a PDB but is damaged or truncated.
    #[error("{}: malformed {what}: {detail}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What was being read (for example `PE image`, `PDB`, `ELF image`).
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The PDB belongs to another build of the image.
    #[error(
        "{}: PDB does not match image {}: the image expects GUID {expected_guid} age {expected_age}, the PDB has GUID {found_guid} age {found_age}",
        pdb.display(),
        image.display()
    )]
    PdbMismatch {
        /// The PDB file.
        pdb: PathBuf,
        /// The image file.
        image: PathBuf,
        /// GUID from the image's CodeView record.
        expected_guid: String,
        /// Age from the image's CodeView record.
        expected_age: u32,
        /// GUID found in the PDB.
        found_guid: String,
        /// Age found in the PDB.
        found_age: u32,
    },
    /// The separate debug file belongs to another build of the image.
    #[error(
        "{}: debug file does not match image {}: the image has build-id {expected}, the debug file {found}",
        debug.display(),
        image.display()
    )]
    DebugMismatch {
        /// The debug file.
        debug: PathBuf,
        /// The image file.
        image: PathBuf,
        /// The image's build-id (hex, or `none`).
        expected: String,
        /// The debug file's build-id (hex, or `none`).
        found: String,
    },
    /// The image has no symbols to find functions with.
    #[error("{}: no symbols: {detail}", path.display())]
    NoSymbols {
        /// The file.
        path: PathBuf,
        /// What is missing.
        detail: String,
    },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

//! Errors of the package reader and writer. Each `Display` form is one line
//! naming what is wrong; callers add the file name.

use super::calendar::CalendarError;
use super::digest::Sha256Digest;
use super::reloc::FieldError;
use super::time::TimeError;

/// A section of the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// The fixed header.
    Header,
    /// The JSON manifest.
    Manifest,
    /// The zstd-compressed payload.
    Payload,
    /// The signature section.
    Signatures,
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Section::Header => "header",
            Section::Manifest => "manifest",
            Section::Payload => "payload",
            Section::Signatures => "signature section",
        })
    }
}

/// Why a package cannot be read or written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// The file does not start with the package magic.
    #[error("not a hotpatch package: bad magic {found}")]
    BadMagic {
        /// The first bytes found, in hex.
        found: String,
    },
    /// The file is shorter than its header says.
    #[error(
        "truncated package: the {section} ends at byte {needed}, the file has {available} bytes"
    )]
    Truncated {
        /// The section that runs past the end.
        section: Section,
        /// Where it ends.
        needed: u64,
        /// The file's length.
        available: u64,
    },
    /// The file has bytes after the signature section.
    #[error("trailing bytes: the header accounts for {declared} bytes, the file has {actual}")]
    TrailingBytes {
        /// Bytes the header accounts for.
        declared: u64,
        /// The file's length.
        actual: u64,
    },
    /// A format version this reader does not know.
    #[error("unsupported package format version {found} (this reader knows version {known})")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The version this reader knows.
        known: u32,
    },
    /// Reserved header bits are set.
    #[error("reserved header flags {flags:#x} are set (must be 0)")]
    ReservedFlags {
        /// The flags found.
        flags: u32,
    },
    /// A declared length is beyond its cap (checked before any allocation).
    #[error("{field} of {declared} bytes exceeds the cap of {cap} bytes")]
    OverCap {
        /// The length field.
        field: &'static str,
        /// The declared length.
        declared: u64,
        /// The cap.
        cap: u64,
    },
    /// A declared length is impossible (zero, or not a whole number of entries).
    #[error("invalid {field}: {detail}")]
    BadLength {
        /// The length field.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A section's SHA-256 differs from the header's.
    #[error("{section} digest mismatch: the header declares {declared}, the {section} hashes to {actual} (modified after it was written or signed)")]
    DigestMismatch {
        /// The section.
        section: Section,
        /// The digest the header declares.
        declared: Sha256Digest,
        /// The digest of the bytes.
        actual: Sha256Digest,
    },
    /// A section's zstd frame (the manifest's or the payload's) declares
    /// another size, is damaged, or is not exactly one frame.
    #[error("{section} frame: {detail}")]
    Frame {
        /// The manifest or the payload.
        section: Section,
        /// What is wrong.
        detail: String,
    },
    /// Decompression would produce more than the declared size.
    #[error("zstd bomb: the {section} decompresses to more than the declared {declared} bytes (stopped there)")]
    DecompressionBomb {
        /// The manifest or the payload.
        section: Section,
        /// The declared uncompressed length.
        declared: u64,
    },
    /// Decompression produced less than the declared size.
    #[error("{section} decompresses to {actual} bytes, the header declares {declared}")]
    DecompressedSize {
        /// The manifest or the payload.
        section: Section,
        /// The declared uncompressed length.
        declared: u64,
        /// What it gave.
        actual: u64,
    },
    /// zstd refused the data.
    #[error("{what}: zstd: {detail}")]
    Zstd {
        /// What was being decompressed or compressed.
        what: String,
        /// zstd's message.
        detail: String,
    },
    /// The manifest is not the JSON of a manifest.
    #[error("manifest is not valid: {detail}")]
    ManifestJson {
        /// serde_json's message, with line and column.
        detail: String,
    },
    /// The manifest breaks a rule of the format.
    #[error("manifest: {field}: {detail}")]
    Manifest {
        /// Which field (a path such as `targets[0].functions[2].redirect`).
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// The manifest breaks a calendar rule.
    #[error("manifest: release calendar: {0}")]
    Calendar(#[from] CalendarError),
    /// A timestamp could not be made.
    #[error("{0}")]
    Time(#[from] TimeError),
    /// The payload's encoding is broken.
    #[error("payload: {detail}")]
    Payload {
        /// What is wrong, with the item and record.
        detail: String,
    },
    /// A relocation could not be applied.
    #[error("item {item}: relocation at offset {offset:#x}: {error}")]
    Field {
        /// The item.
        item: u32,
        /// The relocation's offset.
        offset: u64,
        /// What went wrong.
        error: FieldError,
    },
    /// A delta-encoded body's reference bytes are not the ones it was made from.
    #[error("item {item}: delta reference {rva:#x}+{size} hashes to {actual}, the payload expects {expected} (wrong baseline?)")]
    ReferenceMismatch {
        /// The item.
        item: u32,
        /// The reference's RVA.
        rva: u64,
        /// Its size.
        size: u64,
        /// Its recorded digest.
        expected: Sha256Digest,
        /// The digest of the bytes given.
        actual: Sha256Digest,
    },
    /// The signature section cannot hold another signature.
    #[error("the package already carries {count} signatures, the most a package may carry")]
    TooManySignatures {
        /// How many it carries.
        count: usize,
    },
}

/// Result type of the package module.
pub type Result<T, E = PackageError> = std::result::Result<T, E>;

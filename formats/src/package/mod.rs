//! The hotpatch package container (`.hpk`), specified in `formats/SPEC.md`.
//!
//! ```text
//! header (96 bytes) | manifest (JSON, zstd) | payload (zstd) | signatures (n × 96)
//! ```
//!
//! **Writing** (the builder): fill a [`Manifest`] and a [`Payload`], then
//! call [`write()`]; it checks both, orders the manifest's lists, compresses
//! the payload and returns the unsigned package's bytes. [`write_atomic`]
//! puts them in a file.
//!
//! **Reading** is in two stages, as The Update Framework demands ("verify
//! before parse"):
//! 1. [`RawPackage::parse`] reads only the fixed header (every length checked
//!    against its cap and the file's length, nothing allocated) and slices
//!    the sections. It exposes the exact signed message
//!    ([`RawPackage::signed_message`]) and the signatures, without looking at
//!    the manifest.
//! 2. After the signatures are verified, [`RawPackage::decode_manifest`] and
//!    [`RawPackage::decode_payload`] (or [`RawPackage::decode`]) check the
//!    digests, deserialise the manifest and decompress the payload, bounded
//!    by its declared size.
//!
//! This crate does not check signatures: appliers call
//! `hotpatch_signer::verify`, which runs both stages around the signature
//! and policy checks and is the only way to a verified package.

pub mod calendar;
mod codec;
pub mod digest;
pub mod error;
pub mod header;
pub mod manifest;
pub mod output;
pub mod payload;
pub mod reloc;
pub mod time;

use std::io::Read;

use zstd::zstd_safe;

pub use calendar::{
    check_history, check_release, CalendarError, PackageKind, Release, ReleaseInfo,
};
pub use digest::{KeyId, Sha256Digest};
pub use error::{PackageError, Section};
pub use header::{Header, SignatureEntry, FORMAT_VERSION, HEADER_LEN, MAGIC};
pub use manifest::{
    AddedFunction, BuildIdentity, ChangedFunction, CodeViewId, FunctionName, Guid, ImageIdentity,
    Manifest, NewData, Override, Redirect, RedirectScheme, TargetImage,
};
pub use output::{create_exclusive, write_atomic};
pub use payload::{
    link, Body, Bytes, Decoder, Delta, Item, ItemRef, Payload, Reference, Relocation, Target,
};
pub use reloc::{FieldError, RelocKind, Site};
pub use time::{Timestamp, SECONDS_PER_DAY};

use error::Result;
use header::{
    MAX_MANIFEST_LEN, MAX_MANIFEST_UNCOMPRESSED_LEN, MAX_PAYLOAD_LEN, MAX_PAYLOAD_UNCOMPRESSED_LEN,
    MAX_SIGNATURES,
};

/// zstd level of payloads up to [`LARGE_PAYLOAD`] bytes (uncompressed).
pub const PAYLOAD_LEVEL: i32 = 19;
/// zstd level of larger payloads (whole images of a baseline package), so
/// that compressing them stays within seconds.
pub const LARGE_PAYLOAD_LEVEL: i32 = 9;
/// Payloads above this size (16 MiB) use [`LARGE_PAYLOAD_LEVEL`].
pub const LARGE_PAYLOAD: usize = 16 << 20;
/// zstd level of the manifest.
pub const MANIFEST_LEVEL: i32 = 19;

/// A decoded package: its manifest and payload. Decoding does not check
/// signatures; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// The manifest.
    pub manifest: Manifest,
    /// The payload.
    pub payload: Payload,
}

/// A package split into its sections (stage 1 of reading). Only the header
/// has been read.
#[derive(Clone, Debug)]
pub struct RawPackage<'a> {
    header: Header,
    manifest: &'a [u8],
    payload: &'a [u8],
    signatures: Vec<SignatureEntry>,
}

impl<'a> RawPackage<'a> {
    /// Stage 1: check the header and slice the sections. Reads nothing but
    /// the header and the fixed-size signature entries.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let header = Header::parse(bytes)?;
        // Header::parse checked that the sections fit the file exactly.
        let rest = bytes.get(HEADER_LEN..).unwrap_or_default();
        let (manifest, rest) = rest.split_at(usize_len(header.manifest_len, rest.len()));
        let (payload, signatures) = rest.split_at(usize_len(header.payload_len, rest.len()));
        Ok(RawPackage {
            header,
            manifest,
            payload,
            signatures: header::parse_signatures(signatures),
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The manifest section's exact (compressed) bytes, not decompressed
    /// nor parsed.
    pub fn manifest_bytes(&self) -> &'a [u8] {
        self.manifest
    }

    /// The compressed payload's exact bytes.
    pub fn payload_bytes(&self) -> &'a [u8] {
        self.payload
    }

    /// The signatures, in the order they were added.
    pub fn signatures(&self) -> &[SignatureEntry] {
        &self.signatures
    }

    /// The exact message the signatures sign ([`Header::signed_message`]).
    pub fn signed_message(&self) -> Vec<u8> {
        self.header.signed_message()
    }

    /// Check that the manifest's SHA-256 is the header's.
    pub fn check_manifest_digest(&self) -> Result<()> {
        check_digest(
            Section::Manifest,
            self.header.manifest_sha256,
            self.manifest,
        )
    }

    /// Check that the compressed payload's SHA-256 is the header's.
    pub fn check_payload_digest(&self) -> Result<()> {
        check_digest(Section::Payload, self.header.payload_sha256, self.payload)
    }

    /// Stage 2, manifest JSON: check the manifest's digest and decompress
    /// it (against [`MANIFEST_PREFIX`], never past its declared size). Call
    /// only after the signatures were verified.
    pub fn manifest_json(&self) -> Result<Vec<u8>> {
        self.check_manifest_digest()?;
        decompress_section(
            Section::Manifest,
            self.manifest,
            self.header.manifest_uncompressed_len,
            MANIFEST_PREFIX,
        )
    }

    /// Stage 2, manifest: check its digest, decompress it, deserialise it
    /// and check its rules. Call only after the signatures were verified.
    pub fn decode_manifest(&self) -> Result<Manifest> {
        let json = self.manifest_json()?;
        let m = Manifest::from_json(&json)?;
        m.validate()?;
        Ok(m)
    }

    /// Stage 2, payload: check its digest, decompress it (never past its
    /// declared size) and decode it. Call only after the signatures were
    /// verified.
    pub fn decode_payload(&self) -> Result<Payload> {
        self.check_payload_digest()?;
        let raw = decompress(self.payload, self.header.payload_uncompressed_len)?;
        Payload::decode(raw)
    }

    /// Stage 2, both, and the manifest checked against the payload. Does not
    /// check signatures.
    pub fn decode(&self) -> Result<Package> {
        let manifest = self.decode_manifest()?;
        let payload = self.decode_payload()?;
        manifest.validate_items(&payload)?;
        Ok(Package { manifest, payload })
    }

    /// The package's bytes with `signatures` as its signature section; the
    /// header, manifest and payload are unchanged, and so is the signed
    /// message.
    pub fn with_signatures(&self, signatures: &[SignatureEntry]) -> Result<Vec<u8>> {
        if signatures.len() as u64 > MAX_SIGNATURES {
            return Err(PackageError::TooManySignatures {
                count: signatures.len(),
            });
        }
        let section = header::encode_signatures(signatures);
        let header = Header {
            signatures_len: section.len() as u64,
            ..self.header
        };
        Ok(assemble(&header, self.manifest, self.payload, &section))
    }
}

/// Write an unsigned package: check the manifest ([`Manifest::validate`],
/// in canonical order) and the payload against it, serialise the manifest,
/// compress the payload (zstd, [`PAYLOAD_LEVEL`] or [`LARGE_PAYLOAD_LEVEL`],
/// single-threaded, content size recorded, no checksum), and put the
/// lengths and digests in the header. Same inputs, same bytes.
pub fn write(manifest: &Manifest, payload: &Payload) -> Result<Vec<u8>> {
    let mut manifest = manifest.clone();
    manifest.canonicalise();
    manifest.validate()?;
    manifest.validate_items(payload)?;
    let json = manifest.to_json()?;
    let raw = payload.encode()?;
    cap_len(
        "uncompressed manifest length",
        json.len(),
        MAX_MANIFEST_UNCOMPRESSED_LEN,
    )?;
    let packed = compress_manifest(&json)?;
    cap_len("manifest length", packed.len(), MAX_MANIFEST_LEN)?;
    cap_len(
        "uncompressed payload length",
        raw.len(),
        MAX_PAYLOAD_UNCOMPRESSED_LEN,
    )?;
    let compressed = compress_payload(&raw)?;
    cap_len("payload length", compressed.len(), MAX_PAYLOAD_LEN)?;
    let header = Header {
        version: FORMAT_VERSION,
        manifest_len: packed.len() as u64,
        manifest_uncompressed_len: json.len() as u64,
        payload_len: compressed.len() as u64,
        payload_uncompressed_len: raw.len() as u64,
        signatures_len: 0,
        manifest_sha256: Sha256Digest::of(&packed),
        payload_sha256: Sha256Digest::of(&compressed),
    };
    Ok(assemble(&header, &packed, &compressed, &[]))
}

/// Header, sections, in order.
pub fn assemble(header: &Header, manifest: &[u8], payload: &[u8], signatures: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        HEADER_LEN
            .saturating_add(manifest.len())
            .saturating_add(payload.len())
            .saturating_add(signatures.len()),
    );
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(manifest);
    out.extend_from_slice(payload);
    out.extend_from_slice(signatures);
    out
}

/// The bytes the manifest is compressed against (a zstd raw-content
/// prefix, `ZSTD_CCtx_refPrefix`): the manifest's field names in their
/// order, with empty values, so that a small manifest does not spend its
/// bytes on them. Part of the format: `formats/SPEC.md` section 6 gives
/// the same bytes.
pub const MANIFEST_PREFIX: &[u8] = br#"{"product":"","package_id":"","kind":"hotpatch","release":"","baseline_release":"","sequence":1,"supersedes":[],"requires_restart":false,"advisories":["CVE-"],"created":"T00:00:00Z","expires":"T00:00:00Z","overrides":[{"allow":"","reason":""}],"targets":[{"name":".so","format":"elf","arch":"x86_64","baseline":{"sha256":"","build":{"elf":{"build_id":""}}},"updated":{"sha256":"","build":{"pe":{"time_date_stamp":0,"size_of_image":0,"codeview":{"guid":"","age":1}}}},"image":null,"functions":[{"name":"","unit":null,"rva":0,"size":0,"redirect":{"scheme":"x64-padding-short-jump","rva":0,"size":7,"sha256":""},"body":0},{"name":"","unit":null,"rva":0,"size":0,"redirect":{"scheme":"x64-near-jump","rva":0,"size":5,"sha256":""},"body":1},{"name":"","unit":null,"rva":0,"size":0,"redirect":{"scheme":"a64-branch","rva":0,"size":4,"sha256":""},"body":2}],"added_functions":[{"name":"","unit":null,"body":3}],"data":[{"name":"","unit":null,"writable":false,"body":4}],"lines_only":[{"name":"","unit":null}]}]}"#;

/// Compress manifest JSON as [`write()`] does: one zstd frame at
/// [`MANIFEST_LEVEL`] against [`MANIFEST_PREFIX`], single-threaded, with
/// its content size and no checksum.
pub fn compress_manifest(json: &[u8]) -> Result<Vec<u8>> {
    compress(json, MANIFEST_LEVEL, MANIFEST_PREFIX, "manifest")
}

/// Compress an encoded payload as [`write()`] does: one zstd frame at
/// [`PAYLOAD_LEVEL`] (or [`LARGE_PAYLOAD_LEVEL`] above [`LARGE_PAYLOAD`]
/// bytes), single-threaded, with its content size and no checksum.
pub fn compress_payload(raw: &[u8]) -> Result<Vec<u8>> {
    let level = if raw.len() > LARGE_PAYLOAD {
        LARGE_PAYLOAD_LEVEL
    } else {
        PAYLOAD_LEVEL
    };
    compress(raw, level, &[], "payload")
}

/// One zstd frame of `raw` at `level` against `prefix` (none if empty),
/// with its content size, no checksum.
fn compress(raw: &[u8], level: i32, prefix: &[u8], what: &str) -> Result<Vec<u8>> {
    let err = |code| PackageError::Zstd {
        what: what.into(),
        detail: zstd_safe::get_error_name(code).into(),
    };
    let mut cctx = zstd_safe::CCtx::create();
    cctx.set_parameter(zstd_safe::CParameter::CompressionLevel(level))
        .map_err(err)?;
    cctx.set_parameter(zstd_safe::CParameter::ContentSizeFlag(true))
        .map_err(err)?;
    cctx.set_parameter(zstd_safe::CParameter::ChecksumFlag(false))
        .map_err(err)?;
    if !prefix.is_empty() {
        cctx.ref_prefix(prefix).map_err(err)?;
    }
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(raw.len()));
    cctx.compress2(&mut out, raw).map_err(err)?;
    Ok(out)
}

/// Payloads whose frame records their size and that inflate at most this
/// many times are decompressed in one pass into a buffer of exactly the
/// declared size; others (a bomb's shape) stream into a buffer that grows
/// with the real output.
pub const ONE_SHOT_RATIO: u64 = 64;

/// Decompress the payload: exactly one zstd frame, whose content size, if
/// it records one, must be `declared`; the output must be exactly
/// `declared` bytes, and decompression stops as soon as it would exceed it.
/// The buffer is allocated up front only when the frame records its size
/// and `declared` is at most [`ONE_SHOT_RATIO`] times the frame (or 1 MiB);
/// otherwise it grows with the actual output.
pub fn decompress(frame: &[u8], declared: u64) -> Result<Vec<u8>> {
    decompress_section(Section::Payload, frame, declared, &[])
}

/// [`decompress`] for `section`, with `prefix` as the frame's raw-content
/// prefix (none if empty).
fn decompress_section(
    section: Section,
    frame: &[u8],
    declared: u64,
    prefix: &[u8],
) -> Result<Vec<u8>> {
    let ferr = |detail: String| PackageError::Frame { section, detail };
    let recorded = match zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if n != declared => {
            return Err(ferr(format!(
                "the zstd frame declares {n} bytes, the header {declared}"
            )))
        }
        Ok(n) => n.is_some(),
        Err(_) => return Err(ferr("not a zstd frame".into())),
    };
    match zstd_safe::find_frame_compressed_size(frame) {
        Ok(n) if n == frame.len() => {}
        Ok(n) => {
            return Err(ferr(format!(
                "the first zstd frame ends at byte {n} of {}; the payload is exactly one frame",
                frame.len()
            )))
        }
        Err(code) => {
            return Err(ferr(format!(
                "damaged zstd frame: {}",
                zstd_safe::get_error_name(code)
            )))
        }
    }
    let one_shot_limit = (frame.len() as u64)
        .saturating_mul(ONE_SHOT_RATIO)
        .max(1 << 20);
    if recorded && declared <= one_shot_limit {
        return decompress_one_shot(section, frame, declared, prefix);
    }
    let zerr = |e: std::io::Error| PackageError::Zstd {
        what: section.to_string(),
        detail: e.to_string(),
    };
    let mut decoder = zstd::stream::read::Decoder::with_ref_prefix(frame, prefix)
        .map_err(zerr)?
        .single_frame();
    decoder
        .window_log_max(payload::MAX_WINDOW_LOG)
        .map_err(zerr)?;
    // Start small; grow only with real output.
    let initial = declared.min(1 << 20);
    let mut out = Vec::with_capacity(usize::try_from(initial).unwrap_or(0));
    let limit = declared.saturating_add(1);
    decoder.take(limit).read_to_end(&mut out).map_err(zerr)?;
    let actual = out.len() as u64;
    if actual > declared {
        return Err(PackageError::DecompressionBomb { section, declared });
    }
    if actual != declared {
        return Err(PackageError::DecompressedSize {
            section,
            declared,
            actual,
        });
    }
    Ok(out)
}

/// One pass into a buffer of exactly `declared` bytes (the frame records
/// that size): zstd stops with "destination buffer too small" rather than
/// write past it.
fn decompress_one_shot(
    section: Section,
    frame: &[u8],
    declared: u64,
    prefix: &[u8],
) -> Result<Vec<u8>> {
    let capacity = usize::try_from(declared).map_err(|_| PackageError::Frame {
        section,
        detail: format!("{declared} bytes do not fit in memory"),
    })?;
    let mut dctx = zstd_safe::DCtx::create();
    let zerr = |code| {
        if code == DST_TOO_SMALL {
            PackageError::DecompressionBomb { section, declared }
        } else {
            PackageError::Zstd {
                what: section.to_string(),
                detail: zstd_safe::get_error_name(code).into(),
            }
        }
    };
    dctx.set_parameter(zstd_safe::DParameter::WindowLogMax(payload::MAX_WINDOW_LOG))
        .map_err(zerr)?;
    if !prefix.is_empty() {
        dctx.ref_prefix(prefix).map_err(zerr)?;
    }
    let mut out = Vec::with_capacity(capacity);
    dctx.decompress(&mut out, frame).map_err(zerr)?;
    let actual = out.len() as u64;
    if actual != declared {
        return Err(PackageError::DecompressedSize {
            section,
            declared,
            actual,
        });
    }
    Ok(out)
}

/// zstd's error code for "destination buffer is too small"
/// (`-ZSTD_error_dstSize_tooSmall`, 70, as `size_t`).
const DST_TOO_SMALL: usize = 0usize.wrapping_sub(70);

fn check_digest(section: Section, declared: Sha256Digest, bytes: &[u8]) -> Result<()> {
    let actual = Sha256Digest::of(bytes);
    if actual != declared {
        return Err(PackageError::DigestMismatch {
            section,
            declared,
            actual,
        });
    }
    Ok(())
}

fn cap_len(field: &'static str, len: usize, cap: u64) -> Result<()> {
    if len as u64 > cap {
        return Err(PackageError::OverCap {
            field,
            declared: len as u64,
            cap,
        });
    }
    Ok(())
}

/// A checked length as `usize`, at most `available`.
fn usize_len(len: u64, available: usize) -> usize {
    usize::try_from(len).map_or(available, |l| l.min(available))
}

#[cfg(test)]
mod tests;

//! The fixed header, the signature section and the signed message.

use super::codec::Cursor;
use super::digest::{to_hex, KeyId, Sha256Digest};
use super::error::{PackageError, Result, Section};

/// The first 8 bytes of every package: `\x89HPK\r\n\x1a\n` (as PNG does: a
/// non-ASCII first byte, and line endings a text-mode transfer would change).
pub const MAGIC: [u8; 8] = *b"\x89HPK\r\n\x1a\n";
/// The container format version this crate reads and writes.
pub const FORMAT_VERSION: u32 = 2;
/// The header's length in bytes.
pub const HEADER_LEN: usize = 96;
/// Largest compressed manifest: 16 MiB.
pub const MAX_MANIFEST_LEN: u64 = 16 << 20;
/// Largest manifest once decompressed: 16 MiB.
pub const MAX_MANIFEST_UNCOMPRESSED_LEN: u64 = 16 << 20;
/// Largest compressed payload: 1 GiB.
pub const MAX_PAYLOAD_LEN: u64 = 1 << 30;
/// Largest uncompressed payload: 1 GiB.
pub const MAX_PAYLOAD_UNCOMPRESSED_LEN: u64 = 1 << 30;
/// Bytes of one signature entry: a 32-byte key id and a 64-byte Ed25519
/// signature.
pub const SIGNATURE_ENTRY_LEN: u64 = 96;
/// The most signatures a package may carry.
pub const MAX_SIGNATURES: u64 = 32;
/// Largest signature section.
pub const MAX_SIGNATURES_LEN: u64 = MAX_SIGNATURES * SIGNATURE_ENTRY_LEN;
/// The largest package a reader needs to accept.
pub const MAX_PACKAGE_LEN: u64 =
    HEADER_LEN as u64 + MAX_MANIFEST_LEN + MAX_PAYLOAD_LEN + MAX_SIGNATURES_LEN;
/// The DSSE payload type of the signed message.
pub const PAYLOAD_TYPE: &str = "application/vnd.hotpatch.package.v2";
/// The length of the signed header fields ([`Header::signed_fields`]):
/// the header without its 4-byte signature section length.
pub const SIGNED_FIELDS_LEN: usize = HEADER_LEN - 4;
/// Offset of the signature section length in the header.
const SIGNATURES_LEN_AT: usize = 28;

/// The fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Length of the compressed manifest.
    pub manifest_len: u64,
    /// Length of the manifest once decompressed.
    pub manifest_uncompressed_len: u64,
    /// Length of the compressed payload.
    pub payload_len: u64,
    /// Length of the payload once decompressed.
    pub payload_uncompressed_len: u64,
    /// Length of the signature section (a multiple of 96).
    pub signatures_len: u64,
    /// SHA-256 of the exact compressed manifest bytes.
    pub manifest_sha256: Sha256Digest,
    /// SHA-256 of the exact compressed payload bytes.
    pub payload_sha256: Sha256Digest,
}

/// One signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureEntry {
    /// The signing key's id.
    pub key_id: KeyId,
    /// The Ed25519 signature of the signed message.
    pub signature: [u8; 64],
}

impl std::fmt::Debug for SignatureEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SignatureEntry({} {})",
            self.key_id,
            to_hex(&self.signature)
        )
    }
}

impl Header {
    /// Read and check the header: magic, version, reserved flags, each
    /// length against its cap, and the total against `file_len`. Nothing is
    /// allocated.
    pub fn parse(bytes: &[u8]) -> Result<Header> {
        let file_len = bytes.len() as u64;
        let magic = bytes.get(..8).unwrap_or(bytes);
        if !MAGIC.starts_with(magic) {
            return Err(PackageError::BadMagic {
                found: to_hex(magic),
            });
        }
        if magic.len() < 8 {
            return Err(truncated(Section::Header, HEADER_LEN as u64, file_len));
        }
        let mut c = Cursor::new(bytes);
        let t = |_| truncated(Section::Header, HEADER_LEN as u64, file_len);
        c.take(8, "magic").map_err(t)?;
        let version = u32::from(c.u16("version").map_err(t)?);
        if version != FORMAT_VERSION {
            return Err(PackageError::UnsupportedVersion {
                found: version,
                known: FORMAT_VERSION,
            });
        }
        let flags = u32::from(c.u16("flags").map_err(t)?);
        let manifest_len = u64::from(c.u32("manifest length").map_err(t)?);
        let manifest_uncompressed_len =
            u64::from(c.u32("uncompressed manifest length").map_err(t)?);
        let payload_len = u64::from(c.u32("payload length").map_err(t)?);
        let payload_uncompressed_len = u64::from(c.u32("uncompressed payload length").map_err(t)?);
        let signatures_len = u64::from(c.u32("signature section length").map_err(t)?);
        let manifest_sha256 = Sha256Digest(c.bytes32("manifest sha256").map_err(t)?);
        let payload_sha256 = Sha256Digest(c.bytes32("payload sha256").map_err(t)?);
        if flags != 0 {
            return Err(PackageError::ReservedFlags { flags });
        }
        cap("manifest length", manifest_len, MAX_MANIFEST_LEN)?;
        cap(
            "uncompressed manifest length",
            manifest_uncompressed_len,
            MAX_MANIFEST_UNCOMPRESSED_LEN,
        )?;
        cap("payload length", payload_len, MAX_PAYLOAD_LEN)?;
        cap(
            "uncompressed payload length",
            payload_uncompressed_len,
            MAX_PAYLOAD_UNCOMPRESSED_LEN,
        )?;
        cap(
            "signature section length",
            signatures_len,
            MAX_SIGNATURES_LEN,
        )?;
        if manifest_len == 0 {
            return Err(PackageError::BadLength {
                field: "manifest length",
                detail: "the manifest is empty".into(),
            });
        }
        if manifest_uncompressed_len == 0 {
            return Err(PackageError::BadLength {
                field: "uncompressed manifest length",
                detail: "the manifest is empty".into(),
            });
        }
        if payload_len == 0 {
            return Err(PackageError::BadLength {
                field: "payload length",
                detail: "the payload is empty".into(),
            });
        }
        if signatures_len % SIGNATURE_ENTRY_LEN != 0 {
            return Err(PackageError::BadLength {
                field: "signature section length",
                detail: format!("{signatures_len} is not a multiple of {SIGNATURE_ENTRY_LEN}"),
            });
        }
        let h = Header {
            version,
            manifest_len,
            manifest_uncompressed_len,
            payload_len,
            payload_uncompressed_len,
            signatures_len,
            manifest_sha256,
            payload_sha256,
        };
        // The caps keep these sums far from overflow.
        let manifest_end = (HEADER_LEN as u64).saturating_add(manifest_len);
        let payload_end = manifest_end.saturating_add(payload_len);
        let total = payload_end.saturating_add(signatures_len);
        for (section, end) in [
            (Section::Manifest, manifest_end),
            (Section::Payload, payload_end),
            (Section::Signatures, total),
        ] {
            if end > file_len {
                return Err(truncated(section, end, file_len));
            }
        }
        if total != file_len {
            return Err(PackageError::TrailingBytes {
                declared: total,
                actual: file_len,
            });
        }
        Ok(h)
    }

    /// The header's bytes. Lengths are written as 32-bit fields; a length
    /// above `u32::MAX` (only a test's forgery: the caps are far below)
    /// is written as `u32::MAX`, which is over its cap.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut v = Vec::with_capacity(HEADER_LEN);
        let len32 = |n: u64| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        v.extend_from_slice(&MAGIC);
        v.extend_from_slice(
            &u16::try_from(self.version)
                .unwrap_or(u16::MAX)
                .to_le_bytes(),
        );
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&len32(self.manifest_len));
        v.extend_from_slice(&len32(self.manifest_uncompressed_len));
        v.extend_from_slice(&len32(self.payload_len));
        v.extend_from_slice(&len32(self.payload_uncompressed_len));
        v.extend_from_slice(&len32(self.signatures_len));
        v.extend_from_slice(self.manifest_sha256.as_bytes());
        v.extend_from_slice(self.payload_sha256.as_bytes());
        out.copy_from_slice(&v);
        out
    }

    /// The header without its signature section length (bytes 28..32),
    /// which adding a signature changes: magic, version, flags, the
    /// manifest and payload lengths, and the manifest and payload digests.
    pub fn signed_fields(&self) -> [u8; SIGNED_FIELDS_LEN] {
        let h = self.encode();
        let mut out = [0u8; SIGNED_FIELDS_LEN];
        let (a, b) = out.split_at_mut(SIGNATURES_LEN_AT);
        a.copy_from_slice(
            h.get(..SIGNATURES_LEN_AT)
                .unwrap_or(&[0; SIGNATURES_LEN_AT]),
        );
        b.copy_from_slice(h.get(SIGNATURES_LEN_AT + 4..).unwrap_or(&[0; 64]));
        out
    }

    /// The exact message every signature signs: the DSSE pre-authentication
    /// encoding of [`Header::signed_fields`] under [`PAYLOAD_TYPE`]:
    ///
    /// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`
    ///
    /// with lengths in ASCII decimal. The body covers the format version,
    /// every header field but the signature section's length, and the
    /// SHA-256 of the manifest and of the payload, so adding a signature
    /// changes nothing signed.
    pub fn signed_message(&self) -> Vec<u8> {
        let body = self.signed_fields();
        let mut m = format!(
            "DSSEv1 {} {} {} ",
            PAYLOAD_TYPE.len(),
            PAYLOAD_TYPE,
            body.len()
        )
        .into_bytes();
        m.extend_from_slice(&body);
        m
    }
}

/// Decode the signature section (its length was checked by [`Header::parse`]).
pub(crate) fn parse_signatures(bytes: &[u8]) -> Vec<SignatureEntry> {
    bytes
        .chunks_exact(SIGNATURE_ENTRY_LEN as usize)
        .filter_map(|e| {
            let (id, sig) = e.split_at(32);
            Some(SignatureEntry {
                key_id: KeyId(id.try_into().ok()?),
                signature: sig.try_into().ok()?,
            })
        })
        .collect()
}

/// Encode a signature section.
pub(crate) fn encode_signatures(sigs: &[SignatureEntry]) -> Vec<u8> {
    let mut v = Vec::with_capacity(sigs.len().saturating_mul(SIGNATURE_ENTRY_LEN as usize));
    for s in sigs {
        v.extend_from_slice(s.key_id.as_bytes());
        v.extend_from_slice(&s.signature);
    }
    v
}

fn cap(field: &'static str, declared: u64, cap: u64) -> Result<()> {
    if declared > cap {
        return Err(PackageError::OverCap {
            field,
            declared,
            cap,
        });
    }
    Ok(())
}

fn truncated(section: Section, needed: u64, available: u64) -> PackageError {
    PackageError::Truncated {
        section,
        needed,
        available,
    }
}

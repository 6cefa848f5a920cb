//! Fuzz the package reader and `verify`: no input may panic, hang or
//! allocate beyond the caps.
//!
//! `cargo +nightly fuzz run package -- -max_total_time=60`
//! (seed corpus: `tests/fixtures/package/` and `tests/fixtures/attacks/*/`).

#![no_main]

use std::sync::OnceLock;

use hotpatch_formats::package::{assemble, Header, RawPackage, Sha256Digest, SignatureEntry, Timestamp};
use hotpatch_signer::{verify, PrivateKey, TrustPolicy};
use libfuzzer_sys::fuzz_target;

/// Packages whose payload declares more than this are not re-signed (a
/// 1 GiB bomb within the caps would only measure the fuzzer's RSS limit).
const MAX_RESIGNED_PAYLOAD: u64 = 64 << 20;

fn fixture() -> &'static (PrivateKey, TrustPolicy, Timestamp) {
    static F: OnceLock<(PrivateKey, TrustPolicy, Timestamp)> = OnceLock::new();
    F.get_or_init(|| {
        let key = PrivateKey::from_seed(&[42; 32]).expect("fixed seed");
        let policy = TrustPolicy::new("fuzz", vec![key.public_key().clone()], 1, vec![], 3653)
            .expect("valid policy");
        let at = Timestamp::parse("2026-02-15T00:00:00Z").expect("valid time");
        (key, policy, at)
    })
}

fuzz_target!(|data: &[u8]| {
    let (key, policy, at) = fixture();
    // The input as a package: both stages, unverified, then verified.
    if let Ok(raw) = RawPackage::parse(data) {
        let _ = raw.signed_message();
        let _ = raw.decode();
    }
    let _ = verify(data, policy, *at);
    // The same sections with consistent digests and a valid signature:
    // verify now parses the fuzzer's manifest and payload.
    let Ok(raw) = RawPackage::parse(data) else {
        return;
    };
    if raw.header().payload_uncompressed_len > MAX_RESIGNED_PAYLOAD {
        return;
    }
    let manifest = raw.manifest_bytes();
    let payload = raw.payload_bytes();
    let header = Header {
        manifest_sha256: Sha256Digest::of(manifest),
        payload_sha256: Sha256Digest::of(payload),
        signatures_len: 0,
        ..*raw.header()
    };
    let unsigned = assemble(&header, manifest, payload, &[]);
    let Ok(raw) = RawPackage::parse(&unsigned) else {
        return;
    };
    let signature = SignatureEntry {
        key_id: key.key_id(),
        signature: key.sign(&raw.signed_message()),
    };
    if let Ok(signed) = raw.with_signatures(&[signature]) {
        let _ = verify(&signed, policy, *at);
    }
});

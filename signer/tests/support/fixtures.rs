//! The generator of the package and attack fixtures under `tests/fixtures/`.
//!
//! Shared by `examples/make_fixtures.rs` (which writes them) and
//! `tests/fixtures.rs` (which regenerates them and compares with the
//! committed files). Everything is deterministic: keys come from fixed seeds,
//! Ed25519 signatures are deterministic, and so is the zstd writer.
//!
//! The packages are SYNTHETIC: plausible manifests and payloads made here,
//! not built from real images (the builder does that; its end-to-end tests
//! use real corpus packages).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use hotpatch_formats::package::{
    assemble, compress_manifest, compress_payload, header, AddedFunction, Body, BuildIdentity,
    ChangedFunction, CodeViewId, FunctionName, Guid, Header, ImageIdentity, Item, Manifest,
    NewData, PackageKind, Payload, RawPackage, Redirect, RedirectScheme, Release, RelocKind,
    Relocation, Sha256Digest, SignatureEntry, Target, TargetImage, Timestamp, HEADER_LEN,
};
use hotpatch_formats::{Arch, Format};
use hotpatch_signer::{PrivateKey, TrustPolicy};

/// The verification time every attack fixture is checked at.
pub const VERIFY_AT: &str = "2026-02-15T00:00:00Z";

/// The product of the synthetic packages.
pub const PRODUCT: &str = "synthetic-product";

/// A fixture key: seed = SHA-256("hotpatch synthetic fixture key: NAME").
pub fn key(name: &str) -> PrivateKey {
    let seed = Sha256Digest::of(format!("hotpatch synthetic fixture key: {name}").as_bytes());
    PrivateKey::from_seed(&seed.0).unwrap()
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn fake_digest(label: &str) -> Sha256Digest {
    Sha256Digest::of(format!("synthetic: {label}").as_bytes())
}

/// What varies between the synthetic packages.
#[derive(Clone)]
pub struct Spec {
    pub release: &'static str,
    pub sequence: u32,
    pub created: &'static str,
    pub expires: &'static str,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            release: "2026-02",
            sequence: 1,
            created: "2026-02-01T00:00:00Z",
            expires: "2026-04-01T00:00:00Z",
        }
    }
}

/// Synthetic x86-64 code: `push rbp; mov rbp, rsp; ...` with the given
/// relocation sites filled with zeros.
fn x64_body(seed: u8, len: usize) -> Vec<u8> {
    let mut v = vec![0x55, 0x48, 0x89, 0xe5];
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761);
    while v.len() < len - 1 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        // Mostly `nop`-like filler with some variety, compressible as code is.
        v.push(match (x >> 16) % 6 {
            0 => 0x90,
            1 => 0x48,
            2 => 0x89,
            3 => 0x8b,
            4 => 0x45,
            _ => 0xc7,
        });
    }
    v.push(0xc3);
    v
}

/// The synthetic manifest and payload: an x86-64 ELF library with two
/// changed functions (one delta-encoded against its old bytes), an added
/// function, a new read-only object and a line-number-only change; and an
/// AArch64 PE DLL with one changed function using ADRP/ADD/BL.
pub fn synthetic(spec: &Spec) -> (Manifest, Payload) {
    let mut payload = Payload::new();

    // --- libsynthetic.so (x86-64 ELF) ---
    let limits = payload.push(Item::raw(
        16,
        b"\x00\x10\x00\x00\xff\x0f\x00\x00max header\0".to_vec(),
        vec![],
    ));
    let mut check_len = x64_body(1, 48);
    check_len[10..15].copy_from_slice(&[0x48, 0x8d, 0x05, 0, 0]); // lea rax, [rip+limits]
    check_len[15..17].copy_from_slice(&[0, 0]);
    let check_length = payload.push(Item::raw(
        16,
        check_len,
        vec![Relocation {
            offset: 13,
            kind: RelocKind::Rel32,
            target: Target::Item(limits),
            addend: -4,
        }],
    ));
    // parse_header: calls check_length (new), memcpy through the GOT, and
    // log_error (unchanged baseline function); delta-encoded against its old
    // body.
    let old_parse = x64_body(2, 160);
    let mut new_parse = old_parse.clone();
    new_parse[20] = 0xe8; // call check_length
    new_parse[21..25].copy_from_slice(&[0; 4]);
    new_parse[40..42].copy_from_slice(&[0xff, 0x15]); // call [rip+memcpy@GOT]
    new_parse[42..46].copy_from_slice(&[0; 4]);
    new_parse[60] = 0xe8; // call log_error
    new_parse[61..65].copy_from_slice(&[0; 4]);
    new_parse.splice(100..100, [0x83, 0xf8, 0x10, 0x77, 0x05]); // cmp eax, 16; ja
    let parse_body = Body::delta(&new_parse, 0x1200, &old_parse).unwrap();
    let parse_header = payload.push(Item {
        align: 16,
        body: parse_body,
        relocations: vec![
            Relocation {
                offset: 21,
                kind: RelocKind::Rel32,
                target: Target::Item(check_length),
                addend: -4,
            },
            Relocation {
                offset: 42,
                kind: RelocKind::Rel32,
                target: Target::Import {
                    slot_rva: 0x3fd0,
                    name: "memcpy".into(),
                },
                addend: -4,
            },
            Relocation {
                offset: 61,
                kind: RelocKind::Rel32,
                target: Target::BaselineRva(0x1180),
                addend: -4,
            },
        ],
    });
    let mut bounds = x64_body(3, 64);
    bounds[30..36].copy_from_slice(&[0x8b, 0x05, 0, 0, 0, 0]); // mov eax, [rip+table_size]
    let check_bounds = payload.push(Item::raw(
        16,
        bounds,
        vec![Relocation {
            offset: 32,
            kind: RelocKind::Rel32,
            target: Target::BaselineRva(0x4010),
            addend: -4,
        }],
    ));

    // --- synthetic.dll (AArch64 PE) ---
    let a64_words: [u32; 8] = [
        0xa9bf_7bfd, // stp x29, x30, [sp, #-16]!
        0x9000_0000, // adrp x0, message
        0x9100_0000, // add x0, x0, :lo12:message
        0x9400_0000, // bl log_message
        0xf940_0001, // ldr x1, [x0, :lo12:counter]  (x0 = page of counter)
        0x9000_0000, // adrp x0, counter
        0xa8c1_7bfd, // ldp x29, x30, [sp], #16
        0xd65f_03c0, // ret
    ];
    let message = payload.push(Item::raw(8, b"synthetic message\0".to_vec(), vec![]));
    let a64_body: Vec<u8> = a64_words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let report = payload.push(Item::raw(
        4,
        a64_body,
        vec![
            Relocation {
                offset: 4,
                kind: RelocKind::A64AdrpPage21,
                target: Target::Item(message),
                addend: 0,
            },
            Relocation {
                offset: 8,
                kind: RelocKind::A64Lo12 { scale: 0 },
                target: Target::Item(message),
                addend: 0,
            },
            Relocation {
                offset: 12,
                kind: RelocKind::A64Branch26,
                target: Target::BaselineRva(0x1_2000),
                addend: 0,
            },
            Relocation {
                offset: 16,
                kind: RelocKind::A64Lo12 { scale: 3 },
                target: Target::BaselineRva(0x2_3008),
                addend: 0,
            },
            Relocation {
                offset: 20,
                kind: RelocKind::A64AdrpPage21,
                target: Target::BaselineRva(0x2_3008),
                addend: 0,
            },
        ],
    ));

    let elf_identity = |label: &str| ImageIdentity {
        sha256: fake_digest(&format!("libsynthetic.so {label}")),
        build: BuildIdentity::Elf {
            build_id: Some(hotpatch_formats::package::digest::HexBytes(
                fake_digest(&format!("build-id {label}")).0[..20].to_vec(),
            )),
        },
    };
    let pe_identity = |label: &str, stamp: u32| ImageIdentity {
        sha256: fake_digest(&format!("synthetic.dll {label}")),
        build: BuildIdentity::Pe {
            time_date_stamp: stamp,
            size_of_image: 0x4_0000,
            codeview: Some(CodeViewId {
                guid: Guid(
                    fake_digest(&format!("guid {label}")).0[..16]
                        .try_into()
                        .unwrap(),
                ),
                age: 1,
            }),
        },
    };
    let release = Release::parse(spec.release).unwrap();
    let manifest = Manifest {
        product: PRODUCT.into(),
        package_id: format!("{PRODUCT}-{}", spec.release),
        kind: PackageKind::Hotpatch,
        release,
        baseline_release: Release::parse("2026-01").unwrap(),
        sequence: spec.sequence,
        supersedes: if spec.sequence > 1 {
            vec![format!("{PRODUCT}-2026-02")]
        } else {
            vec![]
        },
        requires_restart: false,
        advisories: vec!["CVE-2026-10001".into(), "CVE-2026-10002".into()],
        created: ts(spec.created),
        expires: ts(spec.expires),
        overrides: vec![hotpatch_formats::package::Override {
            allow: "type:struct header".into(),
            reason: "synthetic: no header outlives a call to parse_header".into(),
        }],
        targets: vec![
            TargetImage {
                name: "libsynthetic.so".into(),
                format: Format::Elf,
                arch: Arch::X86_64,
                baseline: elf_identity("baseline"),
                updated: elf_identity(spec.release),
                image: None,
                functions: vec![
                    ChangedFunction {
                        name: "parse_header".into(),
                        unit: None,
                        rva: 0x1200,
                        size: 160,
                        redirect: Redirect {
                            scheme: RedirectScheme::X64NearJump,
                            rva: 0x1200,
                            size: 5,
                            sha256: Sha256Digest::of(&old_parse[..5]),
                        },
                        body: parse_header,
                    },
                    ChangedFunction {
                        name: "check_bounds".into(),
                        unit: Some("bounds.c".into()),
                        rva: 0x12a0,
                        size: 64,
                        redirect: Redirect {
                            scheme: RedirectScheme::X64NearJump,
                            rva: 0x12a0,
                            size: 5,
                            sha256: fake_digest("check_bounds entry"),
                        },
                        body: check_bounds,
                    },
                ],
                added_functions: vec![AddedFunction {
                    name: "check_length".into(),
                    unit: Some("parse.c".into()),
                    body: check_length,
                }],
                data: vec![NewData {
                    name: "limits".into(),
                    unit: Some("parse.c".into()),
                    writable: false,
                    body: limits,
                }],
                lines_only: vec![FunctionName {
                    name: "log_version".into(),
                    unit: None,
                }],
            },
            TargetImage {
                name: "synthetic.dll".into(),
                format: Format::Pe,
                arch: Arch::Aarch64,
                baseline: pe_identity("baseline", 0x6789_abcd),
                updated: pe_identity(spec.release, 0x1234_5678),
                image: None,
                functions: vec![ChangedFunction {
                    name: "report".into(),
                    unit: Some("report.obj".into()),
                    rva: 0x1_1000,
                    size: 32,
                    redirect: Redirect {
                        scheme: RedirectScheme::A64Branch,
                        rva: 0x1_1000,
                        size: 4,
                        sha256: fake_digest("report entry"),
                    },
                    body: report,
                }],
                added_functions: vec![],
                data: vec![NewData {
                    name: "message".into(),
                    unit: Some("report.obj".into()),
                    writable: false,
                    body: message,
                }],
                lines_only: vec![],
            },
        ],
    };
    (manifest, payload)
}

/// The unsigned synthetic package.
pub fn unsigned(spec: &Spec) -> Vec<u8> {
    let (m, p) = synthetic(spec);
    hotpatch_formats::package::write(&m, &p).unwrap()
}

/// Sign with each key in turn, through the library's `sign`.
pub fn signed(bytes: &[u8], keys: &[&str]) -> Vec<u8> {
    keys.iter().fold(bytes.to_vec(), |b, k| {
        hotpatch_signer::sign(&b, &key(k)).unwrap()
    })
}

/// Add signatures without `sign`'s checks (as an attacker, or a key holder
/// signing something invalid, could).
pub fn force_signed(bytes: &[u8], keys: &[&str]) -> Vec<u8> {
    let raw = RawPackage::parse(bytes).unwrap();
    let msg = raw.signed_message();
    let mut sigs = raw.signatures().to_vec();
    for k in keys {
        let k = key(k);
        sigs.push(SignatureEntry {
            key_id: k.key_id(),
            signature: k.sign(&msg),
        });
    }
    raw.with_signatures(&sigs).unwrap()
}

/// A manifest section: `json` compressed as the writer does, and its
/// uncompressed length.
pub fn manifest_section(json: &[u8]) -> (Vec<u8>, u64) {
    (compress_manifest(json).unwrap(), json.len() as u64)
}

/// A package from raw parts (the manifest section as `(bytes,
/// uncompressed length)`), with correct lengths and digests for them.
pub fn from_parts(
    manifest: &(Vec<u8>, u64),
    payload: &[u8],
    uncompressed_len: u64,
    sigs: &[u8],
) -> Vec<u8> {
    let (manifest, manifest_uncompressed_len) = (&manifest.0, manifest.1);
    let h = Header {
        version: hotpatch_formats::package::FORMAT_VERSION,
        manifest_len: manifest.len() as u64,
        manifest_uncompressed_len,
        payload_len: payload.len() as u64,
        payload_uncompressed_len: uncompressed_len,
        signatures_len: sigs.len() as u64,
        manifest_sha256: Sha256Digest::of(manifest),
        payload_sha256: Sha256Digest::of(payload),
    };
    assemble(&h, manifest, payload, sigs)
}

/// The same package with other header fields (the rest unchanged).
pub fn with_header(bytes: &[u8], f: impl FnOnce(&mut Header)) -> Vec<u8> {
    let mut h = Header::parse(bytes).unwrap();
    f(&mut h);
    let mut out = h.encode().to_vec();
    out.extend_from_slice(&bytes[HEADER_LEN..]);
    out
}

/// Byte ranges of the sections: (header, manifest, payload, signatures).
pub fn sections(bytes: &[u8]) -> [std::ops::Range<usize>; 4] {
    let h = Header::parse(bytes).unwrap();
    let m = HEADER_LEN + h.manifest_len as usize;
    let p = m + h.payload_len as usize;
    [0..HEADER_LEN, HEADER_LEN..m, m..p, p..bytes.len()]
}

fn flip(bytes: &[u8], at: usize, bit: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 1 << bit;
    b
}

/// A zstd frame of `blocks` RLE blocks of 128 KiB of zeros: without a
/// content size, or declaring `content_size` (4-byte field).
pub fn rle_bomb(blocks: u32, content_size: Option<u32>) -> Vec<u8> {
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd];
    match content_size {
        // Frame header descriptor: FCS field 4 bytes (flag 2), no single
        // segment; then the window descriptor (128 KiB) and the size.
        Some(n) => {
            f.push(0x80);
            f.push(0x38);
            f.extend_from_slice(&n.to_le_bytes());
        }
        None => {
            f.push(0x00);
            f.push(0x38);
        }
    }
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let h = last | (1 << 1) | ((128 << 10) << 3);
        f.extend_from_slice(&h.to_le_bytes()[..3]);
        f.push(0);
    }
    f
}

/// A trust policy of the named keys, threshold `threshold`, for `products`
/// (empty: any), packages valid for at most 93 days.
pub fn policy(keys: &[&str], threshold: u32, products: &[&str]) -> TrustPolicy {
    TrustPolicy::new(
        "fixture policy",
        keys.iter().map(|k| key(k).public_key().clone()).collect(),
        threshold,
        products.iter().map(|p| p.to_string()).collect(),
        93,
    )
    .unwrap()
}

/// One attack fixture.
pub struct Attack {
    /// Folder name.
    pub name: &'static str,
    /// What it tries (the README line).
    pub tries: &'static str,
    /// The package.
    pub package: Vec<u8>,
    /// The trust policy.
    pub trust: TrustPolicy,
}

/// Every attack fixture, and the `control` that verifies.
pub fn attacks() -> Vec<Attack> {
    let base = unsigned(&Spec::default());
    let good = signed(&base, &["release-1", "release-2"]);
    let trust2 = policy(&["release-1", "release-2"], 2, &[PRODUCT]);
    let trust1 = policy(&["release-1", "release-2"], 1, &[PRODUCT]);
    let [_, manifest, payload, sigs] = sections(&good);
    let mut v = Vec::new();
    let mut add = |name, tries, package, trust| {
        v.push(Attack {
            name,
            tries,
            package,
            trust,
        })
    };

    add(
        "control",
        "nothing: a valid package signed by both trusted keys (threshold 2); it verifies",
        good.clone(),
        trust2.clone(),
    );

    // Tampering after signing.
    let good_manifest = (
        good[manifest.clone()].to_vec(),
        RawPackage::parse(&good)
            .unwrap()
            .header()
            .manifest_uncompressed_len,
    );
    let text =
        String::from_utf8(RawPackage::parse(&good).unwrap().manifest_json().unwrap()).unwrap();
    // A later expiry, the override's reason cut short as needed, so that
    // the manifest compresses to the same length and the header (signed)
    // need not change: the digest, checked first, is what refuses it.
    let reason = "no header outlives a call to parse_header";
    let edited = (2030..2100)
        .flat_map(|year| (0..reason.len()).map(move |cut| (year, cut)))
        .map(|(year, cut)| {
            let edited = text
                .replace(
                    "\"expires\":\"2026-04-01T00:00:00Z\"",
                    &format!("\"expires\":\"{year}-04-01T00:00:00Z\""),
                )
                .replace(reason, &reason[cut..]);
            assert_ne!(edited, text);
            compress_manifest(edited.as_bytes()).unwrap()
        })
        .find(|m| m.len() == manifest.len())
        .unwrap();
    let mut b = good.clone();
    b.splice(manifest.clone(), edited);
    add(
        "manifest-edited",
        "extends the expiry in the manifest after signing (recompressed to the same length, header untouched)",
        b,
        trust2.clone(),
    );
    let mut b = good.clone();
    let mid = payload.start + payload.len() / 2;
    b[mid] = b[mid].wrapping_add(1);
    add(
        "payload-edited",
        "changes one byte of the compressed payload after signing",
        b,
        trust2.clone(),
    );
    let other = signed(
        &unsigned(&Spec {
            release: "2026-03",
            sequence: 2,
            created: "2026-03-01T00:00:00Z",
            expires: "2026-05-01T00:00:00Z",
        }),
        &["release-1", "release-2"],
    );
    let other_sigs = &other[sections(&other)[3].clone()];
    let mut b = good[..sigs.start].to_vec();
    b.extend_from_slice(other_sigs);
    add("mix-and-match", "moves the signature section of another valid package (the 2026-03 release, same keys) onto this one", b, trust2.clone());

    // Damage.
    add(
        "truncated",
        "cuts the package in the middle of its payload",
        good[..mid].to_vec(),
        trust2.clone(),
    );
    add(
        "bitflip-header",
        "flips one bit of the manifest digest in the signed header",
        flip(&good, 32 + 5, 2),
        trust2.clone(),
    );
    add(
        "bitflip-manifest",
        "flips one bit in the manifest",
        flip(&good, manifest.start + 40, 0),
        trust2.clone(),
    );
    add(
        "bitflip-payload",
        "flips one bit in the payload",
        flip(&good, payload.start + 7, 6),
        trust2.clone(),
    );
    add("bitflip-signature", "flips one bit in the first signature (not its key id); the other signature alone is below the threshold", flip(&good, sigs.start + 32 + 10, 3), trust2.clone());

    // Keys.
    add(
        "unknown-key",
        "signed only by a key the policy does not list",
        signed(&base, &["attacker"]),
        trust1.clone(),
    );
    let mut revoked = policy(&["release-1", "release-2"], 1, &[PRODUCT]);
    revoked.revoked.push(hotpatch_signer::Revocation {
        id: key("release-1").key_id(),
        reason: "synthetic: key leaked in a CI log".into(),
    });
    add(
        "revoked-key",
        "signed only by a key the policy revoked",
        signed(&base, &["release-1"]),
        revoked,
    );
    let mut window = policy(&["release-1", "release-2"], 1, &[PRODUCT]);
    window.keys[0].not_after = Some(ts("2026-01-31T23:59:59Z"));
    add(
        "key-outside-window",
        "signed only by a key whose validity window ended before the verification time",
        signed(&base, &["release-1"]),
        window,
    );
    let mut products = policy(&["release-1", "release-2"], 1, &[PRODUCT]);
    products.keys[0].products = vec!["other-product".into()];
    add(
        "wrong-product",
        "signed only by a key the policy allows for another product",
        signed(&base, &["release-1"]),
        products,
    );

    // Threshold.
    add(
        "below-threshold",
        "one valid signature where the policy requires two distinct keys",
        signed(&base, &["release-1"]),
        trust2.clone(),
    );
    add(
        "one-key-many-signatures",
        "three signatures by the same key where the policy requires two distinct keys",
        force_signed(&base, &["release-1", "release-1", "release-1"]),
        trust2.clone(),
    );

    // Time.
    let expired = signed(
        &unsigned(&Spec {
            created: "2026-01-20T00:00:00Z",
            expires: "2026-02-10T00:00:00Z",
            ..Spec::default()
        }),
        &["release-1", "release-2"],
    );
    add(
        "expired",
        "replays a package that expired before the verification time",
        expired,
        trust2.clone(),
    );
    let freeze = signed(
        &unsigned(&Spec {
            expires: "2036-02-01T00:00:00Z",
            ..Spec::default()
        }),
        &["release-1", "release-2"],
    );
    add(
        "freeze",
        "claims ten years of validity where the policy allows 93 days (a freeze attack)",
        freeze,
        trust2.clone(),
    );
    let future = signed(
        &unsigned(&Spec {
            created: "2026-03-01T00:00:00Z",
            ..Spec::default()
        }),
        &["release-1", "release-2"],
    );
    add(
        "not-yet-valid",
        "claims a creation time after the verification time (to stretch its validity window)",
        future,
        trust2.clone(),
    );
    add(
        "unsigned",
        "carries no signature at all",
        base.clone(),
        trust1.clone(),
    );

    // Sizes.
    add(
        "length-over-cap",
        "declares a 4 GiB manifest in the header, to make the reader allocate it",
        with_header(&good, |h| h.manifest_len = u32::MAX.into()),
        trust2.clone(),
    );
    add(
        "uncompressed-over-cap",
        "declares a 4 GiB uncompressed payload in the header, to make the reader allocate it",
        with_header(&good, |h| h.payload_uncompressed_len = u32::MAX.into()),
        trust2.clone(),
    );
    let bomb = rle_bomb(8192, None);
    let b = from_parts(&good_manifest, &bomb, 4096, &[]);
    add("zstd-bomb", "a 32 KiB payload frame, properly signed, that inflates to 1 GiB while the header declares 4 KiB", force_signed(&b, &["release-1", "release-2"]), trust2.clone());
    let bomb = rle_bomb(8192, Some(1 << 30));
    let b = from_parts(&good_manifest, &bomb, 4096, &[]);
    add("zstd-bomb-declared", "a 32 KiB payload frame, properly signed, whose zstd header declares 1 GiB while the package header declares 4 KiB", force_signed(&b, &["release-1", "release-2"]), trust2.clone());
    let bomb = (rle_bomb(8192, None), 4096);
    let b = from_parts(
        &bomb,
        &good[payload.clone()],
        RawPackage::parse(&good)
            .unwrap()
            .header()
            .payload_uncompressed_len,
        &[],
    );
    add("manifest-zstd-bomb", "a 32 KiB manifest frame, properly signed, that inflates to 1 GiB while the header declares 4 KiB", force_signed(&b, &["release-1", "release-2"]), trust2);
    v
}

/// One bad-input package fixture (container level, unsigned).
pub struct BadPackage {
    /// File name.
    pub name: &'static str,
    /// What is wrong with it.
    pub what: &'static str,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// The container-level bad-input fixtures, and `valid.hpk`.
pub fn bad_packages() -> Vec<BadPackage> {
    let good = unsigned(&Spec::default());
    let [_, manifest, payload, _] = sections(&good);
    let (m, p) = synthetic(&Spec::default());
    let json =
        String::from_utf8(RawPackage::parse(&good).unwrap().manifest_json().unwrap()).unwrap();
    let good_manifest = manifest_section(json.as_bytes());
    let raw_payload = p.encode().unwrap();
    let ulen = raw_payload.len() as u64;
    let compressed = good[payload.clone()].to_vec();
    let with_manifest =
        |text: &str| from_parts(&manifest_section(text.as_bytes()), &compressed, ulen, &[]);
    let with_payload = |raw: &[u8]| {
        let c = compress_payload(raw).unwrap();
        from_parts(&good_manifest, &c, raw.len() as u64, &[])
    };
    let mut v = Vec::new();
    let mut add = |name, what, bytes| v.push(BadPackage { name, what, bytes });
    add(
        "valid.hpk",
        "nothing: the synthetic package, unsigned",
        good.clone(),
    );
    add("empty.hpk", "an empty file", Vec::new());
    let mut b = good.clone();
    b[0..8].copy_from_slice(b"PK\x03\x04\x14\x00\x00\x00");
    add(
        "bad-magic.hpk",
        "a zip file's magic instead of the package magic",
        b,
    );
    add(
        "unknown-version.hpk",
        "format version 1 (the previous, uncompressed-manifest layout)",
        with_header(&good, |h| h.version = 1),
    );
    let mut b = good.clone();
    b[10] = 1;
    add("reserved-flags.hpk", "a reserved header flag set", b);
    add(
        "truncated-header.hpk",
        "cut inside the header",
        good[..60].to_vec(),
    );
    add(
        "truncated-manifest.hpk",
        "cut inside the manifest",
        good[..manifest.start + 50].to_vec(),
    );
    add(
        "truncated-payload.hpk",
        "cut inside the payload",
        good[..payload.start + 10].to_vec(),
    );
    let mut b = good.clone();
    b.extend_from_slice(b"trailing");
    add(
        "trailing-bytes.hpk",
        "8 bytes after the signature section",
        b,
    );
    add(
        "manifest-over-cap.hpk",
        "declares a manifest of 16 MiB + 1",
        with_header(&good, |h| h.manifest_len = header::MAX_MANIFEST_LEN + 1),
    );
    add(
        "payload-over-cap.hpk",
        "declares a compressed payload of 1 GiB + 1",
        with_header(&good, |h| h.payload_len = header::MAX_PAYLOAD_LEN + 1),
    );
    add(
        "uncompressed-over-cap.hpk",
        "declares an uncompressed payload of 2^32 - 1 bytes",
        with_header(&good, |h| h.payload_uncompressed_len = u32::MAX.into()),
    );
    add(
        "manifest-uncompressed-over-cap.hpk",
        "declares a manifest that decompresses to 16 MiB + 1",
        with_header(&good, |h| {
            h.manifest_uncompressed_len = header::MAX_MANIFEST_UNCOMPRESSED_LEN + 1
        }),
    );
    add(
        "signatures-over-cap.hpk",
        "declares 33 signatures (3168 bytes)",
        with_header(&good, |h| h.signatures_len = 33 * 96),
    );
    add(
        "signatures-partial-entry.hpk",
        "a 95-byte signature section (not whole entries)",
        {
            let mut b = with_header(&good, |h| h.signatures_len = 95);
            b.extend_from_slice(&[0; 95]);
            b
        },
    );
    add(
        "bitflip-header.hpk",
        "one bit flipped in the header's manifest digest",
        flip(&good, 32 + 5, 2),
    );
    add(
        "bitflip-manifest.hpk",
        "one bit flipped in the manifest",
        flip(&good, manifest.start + 40, 0),
    );
    add(
        "bitflip-payload.hpk",
        "one bit flipped in the payload",
        flip(&good, payload.start + 7, 6),
    );
    add(
        "zstd-bomb.hpk",
        "a 32 KiB frame inflating to 1 GiB, 4 KiB declared",
        from_parts(&good_manifest, &rle_bomb(8192, None), 4096, &[]),
    );
    add(
        "zstd-bomb-declared.hpk",
        "a frame declaring 1 GiB, 4 KiB declared in the header",
        from_parts(&good_manifest, &rle_bomb(8192, Some(1 << 30)), 4096, &[]),
    );
    add(
        "manifest-zstd-bomb.hpk",
        "a 32 KiB manifest frame inflating to 1 GiB, 4 KiB declared",
        from_parts(&(rle_bomb(8192, None), 4096), &compressed, ulen, &[]),
    );
    add(
        "payload-short.hpk",
        "a payload that inflates to fewer bytes than declared",
        from_parts(&good_manifest, &rle_bomb(1, None), 200_000, &[]),
    );
    add(
        "payload-not-zstd.hpk",
        "a payload that is not zstd",
        from_parts(
            &good_manifest,
            b"this is not a zstd frame at all",
            4096,
            &[],
        ),
    );
    add(
        "manifest-invalid-json.hpk",
        "a manifest cut short (digests consistent)",
        with_manifest(&json[..json.len() / 2]),
    );
    add(
        "manifest-missing-field.hpk",
        "a manifest without its product",
        with_manifest(&json.replacen("\"product\":\"synthetic-product\",", "", 1)),
    );
    add(
        "manifest-unknown-field.hpk",
        "a manifest with a field the format does not define",
        with_manifest(&json.replacen('{', "{\"priority\":\"high\",", 1)),
    );
    add(
        "manifest-float.hpk",
        "a floating-point sequence number",
        with_manifest(&json.replacen("\"sequence\":1,", "\"sequence\":1.0,", 1)),
    );
    add(
        "manifest-calendar.hpk",
        "a hotpatch in April, a planned baseline month",
        with_manifest(
            &json
                .replacen("\"release\":\"2026-02\"", "\"release\":\"2026-04\"", 1)
                .replacen("\"sequence\":1,", "\"sequence\":3,", 1),
        ),
    );
    let mut bad = m.clone();
    bad.targets[0].data[0].body = hotpatch_formats::package::ItemRef(99);
    add(
        "manifest-bad-item-ref.hpk",
        "a manifest naming payload item 99 of 6",
        with_manifest(std::str::from_utf8(&bad.to_json().unwrap()).unwrap()),
    );
    let (count_at, gap_at) = first_relocation(&raw_payload);
    assert!(raw_payload[gap_at] < 0x80, "a one-byte gap");
    let mut outside = raw_payload.clone();
    outside[gap_at] = 46;
    add(
        "payload-reloc-outside-item.hpk",
        "a 4-byte relocation field at offset 46 of a 48-byte item",
        with_payload(&outside),
    );
    let mut trailing = raw_payload.clone();
    trailing.extend_from_slice(&[0; 3]);
    add(
        "payload-trailing-bytes.hpk",
        "3 bytes after the payload's last item",
        with_payload(&trailing),
    );
    let mut unknown_kind = raw_payload.clone();
    unknown_kind[gap_at + 1] = 31;
    add(
        "payload-unknown-reloc-kind.hpk",
        "a relocation of kind 31",
        with_payload(&unknown_kind),
    );
    let mut many = raw_payload[..count_at].to_vec();
    assert!(raw_payload[count_at] < 0x80, "a one-byte count");
    many.extend_from_slice(&[0xe8, 0x07]); // 1000
    many.extend_from_slice(&raw_payload[count_at + 1..]);
    add(
        "payload-reloc-count-over-data.hpk",
        "an item declaring 1000 relocations, more than the bytes left can hold",
        with_payload(&many),
    );
    let mut cut = raw_payload.clone();
    let last = cut.len() - 1;
    assert!(cut[last] < 0x80, "the last addend is one byte");
    cut[last] |= 0x80;
    add(
        "payload-truncated-varint.hpk",
        "the last relocation's addend varint continues past the end of the payload",
        with_payload(&cut),
    );
    v
}

/// Where the first item with relocations has its relocation count, and
/// its first record (the offset gap varint), in an encoded payload; read
/// here independently of the library, from `formats/SPEC.md` 5.1.
fn first_relocation(bytes: &[u8]) -> (usize, usize) {
    let mut at = 0;
    let varint = |at: &mut usize| {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = bytes[*at];
            *at += 1;
            v |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return v as usize;
            }
        }
    };
    for _ in 0..varint(&mut at) {
        varint(&mut at);
        at += varint(&mut at);
    }
    for _ in 0..varint(&mut at) {
        let flags = bytes[at];
        at += 1;
        let size = varint(&mut at);
        if flags & 0x20 == 0 {
            at += size;
        } else {
            varint(&mut at);
            varint(&mut at);
            at += 32;
            at += varint(&mut at);
        }
        let count_at = at;
        if varint(&mut at) > 0 {
            return (count_at, at);
        }
    }
    panic!("no relocation");
}

/// Write every fixture under `root` (`root/attacks/…`, `root/package/…`).
pub fn write_all(root: &Path) -> std::io::Result<()> {
    let attacks_dir = root.join("attacks");
    let mut index = String::from(
        "# Attack fixtures\n\nOne folder per attack: `package.hpk`, `trust.toml` and a README line saying what it tries.\nThe packages are SYNTHETIC (made by `signer/tests/support/fixtures.rs`, not built from real images).\nRegenerate with `tests/fixtures/generate.sh`; `cargo test -p hotpatch-signer --test fixtures` checks they are up to date.\nVerify each with `hotpatch verify --trust trust.toml package.hpk --at 2026-02-15T00:00:00Z`.\n\n",
    );
    for a in attacks() {
        let dir = attacks_dir.join(a.name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("package.hpk"), &a.package)?;
        std::fs::write(dir.join("trust.toml"), a.trust.to_toml().unwrap())?;
        std::fs::write(
            dir.join("README"),
            format!(
                "Tries: {}. Synthetic package. Check: hotpatch verify --trust trust.toml package.hpk --at {VERIFY_AT}\n",
                a.tries
            ),
        )?;
        index.push_str(&format!("- `{}`: {}\n", a.name, a.tries));
    }
    std::fs::write(attacks_dir.join("README.md"), index)?;
    let pkg_dir = root.join("package");
    std::fs::create_dir_all(&pkg_dir)?;
    let mut index = String::from(
        "# Bad-input package fixtures\n\nUnsigned SYNTHETIC packages, one per way a package can be malformed (made by `signer/tests/support/fixtures.rs`;\nregenerate with `tests/fixtures/generate.sh`). `hotpatch inspect` refuses each with its reason, except `valid.hpk`.\n\n",
    );
    for b in bad_packages() {
        std::fs::write(pkg_dir.join(b.name), &b.bytes)?;
        index.push_str(&format!("- `{}`: {}\n", b.name, b.what));
    }
    std::fs::write(pkg_dir.join("README.md"), index)?;
    Ok(())
}

//! Container tests: writing, the two reading stages, caps, bombs, damage.

use super::*;
use crate::image::{Arch, Format};

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn identity(tag: u8) -> ImageIdentity {
    ImageIdentity {
        sha256: Sha256Digest([tag; 32]),
        build: BuildIdentity::Elf {
            build_id: Some(digest::HexBytes(vec![tag; 20])),
        },
    }
}

/// A small, plausible hotpatch: one changed function calling a baseline
/// function and reading a new data object.
pub(super) fn sample() -> (Manifest, Payload) {
    let mut payload = Payload::new();
    let data = payload.push(Item::raw(8, b"patched\0".to_vec(), vec![]));
    let body = payload.push(Item::raw(
        16,
        vec![
            0x48, 0x8d, 0x3d, 0, 0, 0, 0, // lea rdi, [rip+data]
            0xe9, 0, 0, 0, 0, // jmp puts
        ],
        vec![
            Relocation {
                offset: 3,
                kind: RelocKind::Rel32,
                target: Target::Item(data),
                addend: -4,
            },
            Relocation {
                offset: 8,
                kind: RelocKind::Rel32,
                target: Target::BaselineRva(0x1030),
                addend: -4,
            },
        ],
    ));
    let manifest = Manifest {
        product: "example".into(),
        package_id: "example-2026-02".into(),
        kind: PackageKind::Hotpatch,
        release: Release::parse("2026-02").unwrap(),
        baseline_release: Release::parse("2026-01").unwrap(),
        sequence: 1,
        supersedes: vec![],
        requires_restart: false,
        advisories: vec!["CVE-2026-0001".into()],
        created: ts("2026-02-01T00:00:00Z"),
        expires: ts("2026-04-01T00:00:00Z"),
        overrides: vec![],
        targets: vec![TargetImage {
            name: "libexample.so".into(),
            format: Format::Elf,
            arch: Arch::X86_64,
            baseline: identity(1),
            updated: identity(2),
            image: None,
            functions: vec![ChangedFunction {
                name: "greet".into(),
                unit: None,
                rva: 0x1100,
                size: 0x20,
                redirect: Redirect {
                    scheme: RedirectScheme::X64NearJump,
                    rva: 0x1100,
                    size: 5,
                    sha256: Sha256Digest([3; 32]),
                },
                body,
            }],
            added_functions: vec![],
            data: vec![NewData {
                name: "greeting".into(),
                unit: Some("greet.c".into()),
                writable: false,
                body: data,
            }],
            lines_only: vec![],
        }],
    };
    (manifest, payload)
}

fn sample_bytes() -> Vec<u8> {
    let (m, p) = sample();
    write(&m, &p).unwrap()
}

/// Rewrite the header's fields of `bytes` with `f`.
fn with_header(bytes: &[u8], f: impl FnOnce(&mut Header)) -> Vec<u8> {
    let mut h = Header::parse(bytes).unwrap();
    f(&mut h);
    let mut out = h.encode().to_vec();
    out.extend_from_slice(&bytes[HEADER_LEN..]);
    out
}

#[test]
fn write_then_read_round_trips() {
    let (m, p) = sample();
    let bytes = write(&m, &p).unwrap();
    let raw = RawPackage::parse(&bytes).unwrap();
    assert!(raw.signatures().is_empty());
    assert_eq!(raw.header().version, FORMAT_VERSION);
    let pkg = raw.decode().unwrap();
    assert_eq!(pkg.manifest, m);
    assert_eq!(pkg.payload, p);
    // The manifest is compact JSON in declared field order, stored as a
    // zstd frame against the prefix.
    assert_ne!(raw.manifest_bytes(), &m.to_json().unwrap()[..]);
    let json = raw.manifest_json().unwrap();
    let text = std::str::from_utf8(&json).unwrap();
    assert!(
        text.starts_with(
            r#"{"product":"example","package_id":"example-2026-02","kind":"hotpatch","#
        ),
        "{text}"
    );
    assert!(text.ends_with("}]}"));
    assert_eq!(raw.header().manifest_uncompressed_len, json.len() as u64);
    assert!(raw.header().manifest_len < json.len() as u64 / 2);
}

#[test]
fn writing_is_deterministic_and_canonical() {
    let (mut m, p) = sample();
    let a = write(&m, &p).unwrap();
    assert_eq!(a, write(&m, &p).unwrap());
    m.advisories = vec!["CVE-2026-0002".into(), "CVE-2026-0001".into()];
    let b = write(&m, &p).unwrap();
    m.advisories.reverse();
    assert_eq!(b, write(&m, &p).unwrap());
}

#[test]
fn signed_message_is_the_dsse_encoding_of_the_header() {
    let bytes = sample_bytes();
    let raw = RawPackage::parse(&bytes).unwrap();
    let msg = raw.signed_message();
    let prefix = b"DSSEv1 35 application/vnd.hotpatch.package.v2 92 ";
    assert_eq!(&msg[..prefix.len()], prefix);
    let body = &msg[prefix.len()..];
    assert_eq!(body.len(), 92);
    assert_eq!(&body[..28], &bytes[..28]);
    assert_eq!(&body[28..], &bytes[32..96]);
    // Adding signatures changes nothing signed.
    let entry = SignatureEntry {
        key_id: KeyId([7; 32]),
        signature: [9; 64],
    };
    let signed = raw.with_signatures(&[entry, entry]).unwrap();
    let again = RawPackage::parse(&signed).unwrap();
    assert_eq!(again.signed_message(), msg);
    assert_eq!(again.signatures(), &[entry, entry]);
    assert_eq!(signed.len(), bytes.len() + 192);
    assert_eq!(again.decode().unwrap(), raw.decode().unwrap());
}

#[test]
fn every_truncation_is_refused() {
    let bytes = sample_bytes();
    for n in 0..bytes.len() {
        let err = RawPackage::parse(&bytes[..n]).unwrap_err();
        assert!(matches!(err, PackageError::Truncated { .. }), "{n}: {err}");
    }
    assert_eq!(
        RawPackage::parse(&bytes[..50]).unwrap_err().to_string(),
        "truncated package: the header ends at byte 96, the file has 50 bytes"
    );
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(
        RawPackage::parse(&long).unwrap_err().to_string(),
        format!(
            "trailing bytes: the header accounts for {} bytes, the file has {}",
            bytes.len(),
            bytes.len() + 1
        )
    );
}

#[test]
fn header_refusals() {
    let bytes = sample_bytes();
    let mut bad = bytes.clone();
    bad[1] = b'X';
    assert_eq!(
        RawPackage::parse(&bad).unwrap_err().to_string(),
        "not a hotpatch package: bad magic 8958504b0d0a1a0a"
    );
    let mut bad = bytes.clone();
    bad[8] = 1;
    assert_eq!(
        RawPackage::parse(&bad).unwrap_err().to_string(),
        "unsupported package format version 1 (this reader knows version 2)"
    );
    let mut bad = bytes.clone();
    bad[10] = 1;
    assert!(matches!(
        RawPackage::parse(&bad),
        Err(PackageError::ReservedFlags { flags: 1 })
    ));
    let over = with_header(&bytes, |h| h.manifest_len = (16 << 20) + 1);
    assert_eq!(
        RawPackage::parse(&over).unwrap_err().to_string(),
        "manifest length of 16777217 bytes exceeds the cap of 16777216 bytes"
    );
    let over = with_header(&bytes, |h| h.manifest_uncompressed_len = (16 << 20) + 1);
    assert_eq!(
        RawPackage::parse(&over).unwrap_err().to_string(),
        "uncompressed manifest length of 16777217 bytes exceeds the cap of 16777216 bytes"
    );
    let empty = with_header(&bytes, |h| h.manifest_uncompressed_len = 0);
    assert_eq!(
        RawPackage::parse(&empty).unwrap_err().to_string(),
        "invalid uncompressed manifest length: the manifest is empty"
    );
    let over = with_header(&bytes, |h| h.payload_uncompressed_len = u64::MAX);
    assert!(matches!(
        RawPackage::parse(&over),
        Err(PackageError::OverCap {
            field: "uncompressed payload length",
            ..
        })
    ));
    let over = with_header(&bytes, |h| h.payload_len = u64::MAX);
    assert!(matches!(
        RawPackage::parse(&over),
        Err(PackageError::OverCap {
            field: "payload length",
            ..
        })
    ));
    let over = with_header(&bytes, |h| h.signatures_len = 97 * 96);
    assert!(matches!(
        RawPackage::parse(&over),
        Err(PackageError::OverCap {
            field: "signature section length",
            ..
        })
    ));
    let odd = with_header(&bytes, |h| h.signatures_len = 95);
    assert_eq!(
        RawPackage::parse(&odd).unwrap_err().to_string(),
        "invalid signature section length: 95 is not a multiple of 96"
    );
}

#[test]
fn digests_are_checked_per_section() {
    let bytes = sample_bytes();
    let h = Header::parse(&bytes).unwrap();
    let m_at = HEADER_LEN + 10;
    let p_at = HEADER_LEN + h.manifest_len as usize + 3;
    let mut bad = bytes.clone();
    bad[m_at] ^= 1;
    let err = RawPackage::parse(&bad).unwrap().decode().unwrap_err();
    assert!(
        matches!(
            err,
            PackageError::DigestMismatch {
                section: Section::Manifest,
                ..
            }
        ),
        "{err}"
    );
    let mut bad = bytes.clone();
    bad[p_at] ^= 1;
    let err = RawPackage::parse(&bad).unwrap().decode().unwrap_err();
    assert!(
        matches!(
            err,
            PackageError::DigestMismatch {
                section: Section::Payload,
                ..
            }
        ),
        "{err}"
    );
    // A flipped bit in a declared digest: the section no longer matches it.
    let mut bad = bytes.clone();
    bad[32] ^= 1;
    assert!(RawPackage::parse(&bad).unwrap().decode().is_err());
}

#[test]
fn bit_flips_anywhere_never_panic() {
    let bytes = sample_bytes();
    for i in 0..bytes.len() {
        for bit in [0, 3, 7] {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            if let Ok(raw) = RawPackage::parse(&b) {
                // Only flips in the signed header digests or the sections
                // get this far; each is refused by a digest.
                assert!(raw.decode().is_err(), "flip at {i} bit {bit} accepted");
            }
        }
    }
}

/// A payload frame of `blocks` RLE blocks of 128 KiB zeros, without a
/// content size: a zstd bomb.
fn rle_bomb(blocks: u32) -> Vec<u8> {
    rle_frame(blocks, None)
}

/// The same, optionally recording (lying about) its content size.
fn rle_frame(blocks: u32, content_size: Option<u32>) -> Vec<u8> {
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd];
    match content_size {
        Some(n) => {
            f.extend_from_slice(&[0x80, 0x38]);
            f.extend_from_slice(&n.to_le_bytes());
        }
        None => f.extend_from_slice(&[0x00, 0x38]),
    }
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let h = last | (1 << 1) | ((128 << 10) << 3);
        f.extend_from_slice(&h.to_le_bytes()[..3]);
        f.push(0);
    }
    f
}

fn with_payload(bytes: &[u8], frame: &[u8], declared: u64) -> Vec<u8> {
    let raw = RawPackage::parse(bytes).unwrap();
    let h = Header {
        payload_len: frame.len() as u64,
        payload_uncompressed_len: declared,
        payload_sha256: Sha256Digest::of(frame),
        ..*raw.header()
    };
    assemble(&h, raw.manifest_bytes(), frame, &[])
}

#[test]
fn zstd_bomb_stops_at_the_declared_size() {
    let bomb = rle_bomb(8192); // 1 GiB of zeros in 32 KiB
    assert_eq!(bomb.len(), 6 + 8192 * 4);
    let pkg = with_payload(&sample_bytes(), &bomb, 4096);
    let err = RawPackage::parse(&pkg)
        .unwrap()
        .decode_payload()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "zstd bomb: the payload decompresses to more than the declared 4096 bytes (stopped there)"
    );
}

#[test]
fn a_frame_lying_about_its_size_is_a_bomb_too() {
    // The frame records 4096 bytes (as the header declares) but holds 1 GiB.
    let bomb = rle_frame(8192, Some(4096));
    let pkg = with_payload(&sample_bytes(), &bomb, 4096);
    let err = RawPackage::parse(&pkg)
        .unwrap()
        .decode_payload()
        .unwrap_err();
    assert_eq!(
        err,
        PackageError::DecompressionBomb {
            section: Section::Payload,
            declared: 4096
        }
    );
    // An honest, large frame is decompressed in one pass, exactly.
    let honest = rle_frame(4, Some(4 << 17));
    assert_eq!(decompress(&honest, 4 << 17).unwrap(), vec![0; 4 << 17]);
    assert!(matches!(
        decompress(&honest, (4 << 17) + 1),
        Err(PackageError::Frame {
            section: Section::Payload,
            ..
        })
    ));
}

#[test]
fn frame_content_size_must_match() {
    let (_, p) = sample();
    let raw = p.encode().unwrap();
    let frame = compress(&raw, 3, &[], "payload").unwrap();
    let pkg = with_payload(&sample_bytes(), &frame, raw.len() as u64 + 1);
    assert_eq!(
        RawPackage::parse(&pkg)
            .unwrap()
            .decode_payload()
            .unwrap_err()
            .to_string(),
        format!(
            "payload frame: the zstd frame declares {} bytes, the header {}",
            raw.len(),
            raw.len() + 1
        )
    );
    // Two frames.
    let mut two = frame.clone();
    two.extend_from_slice(&frame);
    let pkg = with_payload(&sample_bytes(), &two, raw.len() as u64);
    assert!(RawPackage::parse(&pkg)
        .unwrap()
        .decode_payload()
        .unwrap_err()
        .to_string()
        .contains("exactly one frame"));
    // Short output without a declared size.
    let short = rle_bomb(1);
    let pkg = with_payload(&sample_bytes(), &short, 200_000);
    assert_eq!(
        RawPackage::parse(&pkg)
            .unwrap()
            .decode_payload()
            .unwrap_err()
            .to_string(),
        "payload decompresses to 131072 bytes, the header declares 200000"
    );
}

/// `bytes` with `manifest` (already compressed) as its manifest section,
/// declaring `declared` uncompressed bytes; digests consistent.
fn with_manifest_frame(bytes: &[u8], manifest: &[u8], declared: u64) -> Vec<u8> {
    let raw = RawPackage::parse(bytes).unwrap();
    let h = Header {
        manifest_len: manifest.len() as u64,
        manifest_uncompressed_len: declared,
        manifest_sha256: Sha256Digest::of(manifest),
        ..*raw.header()
    };
    assemble(&h, manifest, raw.payload_bytes(), &[])
}

#[test]
fn zstd_bomb_in_the_manifest_stops_at_the_declared_size() {
    // 1 GiB of zeros in 32 KiB, the header declaring 4 KiB.
    let pkg = with_manifest_frame(&sample_bytes(), &rle_bomb(8192), 4096);
    let raw = RawPackage::parse(&pkg).unwrap();
    assert_eq!(
        raw.decode_manifest().unwrap_err().to_string(),
        "zstd bomb: the manifest decompresses to more than the declared 4096 bytes (stopped there)"
    );
    // The frame lies about its size: the same, in one pass.
    let pkg = with_manifest_frame(&sample_bytes(), &rle_frame(8192, Some(4096)), 4096);
    assert_eq!(
        RawPackage::parse(&pkg)
            .unwrap()
            .decode_manifest()
            .unwrap_err(),
        PackageError::DecompressionBomb {
            section: Section::Manifest,
            declared: 4096
        }
    );
    // A frame that declares more than the header.
    let pkg = with_manifest_frame(&sample_bytes(), &rle_frame(1, Some(1 << 17)), 4096);
    assert_eq!(
        RawPackage::parse(&pkg)
            .unwrap()
            .decode_manifest()
            .unwrap_err()
            .to_string(),
        "manifest frame: the zstd frame declares 131072 bytes, the header 4096"
    );
}

#[test]
fn manifest_declared_length_must_match() {
    let bytes = sample_bytes();
    let h = Header::parse(&bytes).unwrap();
    let more = with_header(&bytes, |h| h.manifest_uncompressed_len += 1);
    assert_eq!(
        RawPackage::parse(&more)
            .unwrap()
            .decode_manifest()
            .unwrap_err()
            .to_string(),
        format!(
            "manifest frame: the zstd frame declares {} bytes, the header {}",
            h.manifest_uncompressed_len,
            h.manifest_uncompressed_len + 1
        )
    );
    // Manifest JSON compressed without the prefix does not decode to it.
    let (m, _) = sample();
    let json = m.to_json().unwrap();
    let plain = compress(&json, 19, &[], "manifest").unwrap();
    let pkg = with_manifest_frame(&bytes, &plain, json.len() as u64);
    assert_eq!(
        RawPackage::parse(&pkg).unwrap().decode_manifest().unwrap(),
        m,
        "a frame that does not use the prefix decodes the same"
    );
    let mut other_prefix = compress(&json, 19, b"{\"product\":\"other\"", "manifest").unwrap();
    other_prefix.truncate(other_prefix.len());
    let pkg = with_manifest_frame(&bytes, &other_prefix, json.len() as u64);
    assert!(RawPackage::parse(&pkg).unwrap().decode_manifest().is_err());
}

#[test]
fn manifest_refusals() {
    let (m, p) = sample();
    let check = |m: &Manifest| write(m, &p).unwrap_err().to_string();
    let mut bad = m.clone();
    bad.release = Release::parse("2026-04").unwrap();
    bad.sequence = 3;
    assert_eq!(
        check(&bad),
        "manifest: release calendar: no hotpatch in a planned baseline month: 2026-04 is the baseline month of Q2 2026"
    );
    let mut bad = m.clone();
    bad.requires_restart = true;
    assert_eq!(
        check(&bad),
        "manifest: requires_restart: a hotpatch package has requires_restart = false"
    );
    let mut bad = m.clone();
    bad.expires = bad.created;
    assert!(check(&bad).starts_with("manifest: expires: "));
    let mut bad = m.clone();
    bad.advisories = vec!["GHSA-1234".into()];
    assert_eq!(
        check(&bad),
        "manifest: advisories[0]: \"GHSA-1234\" is not a CVE id (CVE-YYYY-NNNN)"
    );
    let mut bad = m.clone();
    bad.targets[0].functions[0].redirect.rva = 0x10fb;
    assert!(check(&bad).starts_with("manifest: targets[0].functions[0].redirect: "));
    let mut bad = m.clone();
    bad.targets[0].functions[0].redirect.scheme = RedirectScheme::A64Branch;
    assert!(check(&bad).contains("is not a x86_64 scheme"));
    let mut bad = m.clone();
    bad.targets[0].data[0].body = ItemRef(1);
    assert_eq!(
        check(&bad),
        "manifest: targets[0].data[0].body: item 1 is also targets[0].functions[0].body"
    );
    let mut bad = m.clone();
    bad.targets[0].data[0].body = ItemRef(5);
    assert_eq!(
        check(&bad),
        "manifest: targets[0].data[0].body: item 5 does not exist (the payload has 2 items)"
    );
    let mut bad = m.clone();
    bad.product = "../etc".into();
    assert!(check(&bad).starts_with("manifest: product: "));
    let mut bad = m.clone();
    bad.targets[0].baseline.build = BuildIdentity::Pe {
        time_date_stamp: 1,
        size_of_image: 2,
        codeview: None,
    };
    assert_eq!(
        check(&bad),
        "manifest: targets[0].baseline: is a PE identity, the image is ELF"
    );
}

#[test]
fn manifest_json_refusals() {
    let (m, _) = sample();
    let json = String::from_utf8(m.to_json().unwrap()).unwrap();
    let missing = json.replace("\"product\":\"example\",", "");
    assert!(Manifest::from_json(missing.as_bytes())
        .unwrap_err()
        .to_string()
        .starts_with("manifest is not valid: missing field `product`"));
    let unknown = json.replacen('{', "{\"extra\":1,", 1);
    assert!(Manifest::from_json(unknown.as_bytes())
        .unwrap_err()
        .to_string()
        .starts_with("manifest is not valid: unknown field `extra`"));
    let float = json.replace("\"sequence\":1", "\"sequence\":1.0");
    assert!(Manifest::from_json(float.as_bytes()).is_err());
    let dup = json.replacen('{', "{\"sequence\":2,", 1);
    assert!(Manifest::from_json(dup.as_bytes())
        .unwrap_err()
        .to_string()
        .contains("duplicate field `sequence`"));
    assert_eq!(Manifest::from_json(json.as_bytes()).unwrap(), m);
}

#[test]
fn guid_round_trips() {
    let g = Guid([
        0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ]);
    assert_eq!(g.to_string(), "00112233-4455-6677-8899-AABBCCDDEEFF");
    assert_eq!(Guid::parse(&g.to_string()), Some(g));
    assert_eq!(Guid::parse("00112233-4455-6677-8899-aabbccddeeff"), Some(g));
    assert_eq!(Guid::parse("00112233-4455-6677-8899"), None);
}

#[test]
fn too_many_signatures_are_refused() {
    let bytes = sample_bytes();
    let raw = RawPackage::parse(&bytes).unwrap();
    let e = SignatureEntry {
        key_id: KeyId([0; 32]),
        signature: [0; 64],
    };
    assert!(raw.with_signatures(&vec![e; 32]).is_ok());
    assert_eq!(
        raw.with_signatures(&vec![e; 33]).unwrap_err().to_string(),
        "the package already carries 33 signatures, the most a package may carry"
    );
}

fn corpus(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus/01-bounds-check/bin")
        .join(path)
}

#[test]
fn identities_and_redirects_of_real_images() {
    use crate::read;
    let pe_path = corpus("x86_64-windows/v1.dll");
    let pe_bytes = read::load_file(&pe_path).unwrap();
    let pe = read::parse(&pe_bytes, &crate::ReadOptions::new(&pe_path)).unwrap();
    let id = ImageIdentity::of(&pe);
    assert_eq!(id.sha256, Sha256Digest::of(&pe_bytes));
    let crate::FormatIdentity::Pe {
        time_date_stamp,
        size_of_image,
        codeview: Some(cv),
        ..
    } = &pe.identity.format
    else {
        panic!("not a PE identity with CodeView")
    };
    assert_eq!(
        id.build,
        BuildIdentity::Pe {
            time_date_stamp: *time_date_stamp,
            size_of_image: *size_of_image,
            codeview: Some(CodeViewId {
                guid: Guid(cv.guid),
                age: cv.age
            }),
        }
    );
    // The GUID's text form is the readers' own.
    let json = serde_json::to_string(&id).unwrap();
    assert!(json.contains(&cv.guid_string()), "{json}");
    let echo = pe.functions.iter().find(|f| f.name == "hb_echo").unwrap();
    let r = Redirect::from_baseline(&pe, RedirectScheme::X64PaddingShortJump, echo.rva).unwrap();
    assert_eq!((r.rva, r.size), (echo.rva - 5, 7));
    assert_eq!(
        r.sha256,
        Sha256Digest::of(pe.bytes_at(echo.rva - 5, 7).unwrap())
    );

    let elf_path = corpus("aarch64-linux/v1.so");
    let elf_bytes = read::load_file(&elf_path).unwrap();
    let elf = read::parse(&elf_bytes, &crate::ReadOptions::new(&elf_path)).unwrap();
    let id = ImageIdentity::of(&elf);
    let crate::FormatIdentity::Elf { build_id } = &elf.identity.format else {
        panic!()
    };
    assert_eq!(
        id.build,
        BuildIdentity::Elf {
            build_id: build_id.clone().map(digest::HexBytes)
        }
    );
    assert_eq!(id.format(), Format::Elf);
    let load = elf.functions.iter().find(|f| f.name == "hb_load").unwrap();
    let r = Redirect::from_baseline(&elf, RedirectScheme::A64Branch, load.rva).unwrap();
    assert_eq!(
        r.sha256,
        Sha256Digest::of(elf.bytes_at(load.rva, 4).unwrap())
    );
    // Past the end of the file: no redirect.
    assert!(Redirect::from_baseline(&elf, RedirectScheme::A64Branch, u64::MAX - 2).is_none());
}

#[test]
fn identity_json_refuses_unknown_fields() {
    let ok = r#"{"sha256":"0000000000000000000000000000000000000000000000000000000000000000","build":{"elf":{"build_id":null}}}"#;
    assert!(serde_json::from_str::<ImageIdentity>(ok).is_ok());
    let bad = ok.replace("\"build_id\":null", "\"build_id\":null,\"extra\":1");
    assert!(serde_json::from_str::<ImageIdentity>(&bad).is_err());
    let other = ok.replace("\"elf\"", "\"macho\"");
    assert!(serde_json::from_str::<ImageIdentity>(&other).is_err());
}

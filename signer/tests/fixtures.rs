//! The committed fixtures are what the generator makes, and each attack is
//! refused by `verify` with its own typed reason.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/fixtures.rs"]
mod fixtures;

use std::path::{Path, PathBuf};

use hotpatch_formats::package::{PackageError, RawPackage, Section, Timestamp};
use hotpatch_signer::{verify, Rejection, TrustPolicy, VerifyError};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn committed_fixtures_are_what_the_generator_makes() {
    let tmp = tempfile::tempdir().unwrap();
    fixtures::write_all(tmp.path()).unwrap();
    for sub in ["attacks", "package"] {
        let made = files(&tmp.path().join(sub));
        let committed = files(&root().join(sub));
        let rel = |v: &[PathBuf], base: &Path| -> Vec<PathBuf> {
            v.iter()
                .map(|p| p.strip_prefix(base).unwrap().to_path_buf())
                .collect()
        };
        assert_eq!(
            rel(&made, &tmp.path().join(sub)),
            rel(&committed, &root().join(sub)),
            "tests/fixtures/{sub}: file list differs; run tests/fixtures/generate.sh"
        );
        for (m, c) in made.iter().zip(&committed) {
            assert!(
                std::fs::read(m).unwrap() == std::fs::read(c).unwrap(),
                "{} differs from what the generator makes; run tests/fixtures/generate.sh",
                c.display()
            );
        }
    }
}

#[test]
fn generation_is_deterministic() {
    let a: Vec<Vec<u8>> = fixtures::attacks().into_iter().map(|a| a.package).collect();
    let b: Vec<Vec<u8>> = fixtures::attacks().into_iter().map(|a| a.package).collect();
    assert_eq!(a, b);
}

fn run(name: &str) -> Result<hotpatch_signer::Verified, VerifyError> {
    let dir = root().join("attacks").join(name);
    let policy = TrustPolicy::load(&dir.join("trust.toml")).unwrap();
    let bytes = std::fs::read(dir.join("package.hpk")).unwrap();
    verify(
        &bytes,
        &policy,
        Timestamp::parse(fixtures::VERIFY_AT).unwrap(),
    )
}

fn only_rejection(e: &VerifyError) -> Vec<Rejection> {
    match e {
        VerifyError::Threshold { rejected, .. } => {
            rejected.iter().map(|r| r.rejection.clone()).collect()
        }
        other => panic!("expected a threshold failure, got {other}"),
    }
}

#[test]
fn control_verifies() {
    let v = run("control").unwrap();
    let s = v.summary();
    assert_eq!(s.product, fixtures::PRODUCT);
    assert_eq!(s.release.to_string(), "2026-02");
    assert_eq!(s.signers.len(), 2);
    assert_eq!(s.threshold, 2);
    assert_eq!(v.payload().items().len(), 6);
    // What verify returns is the package as written.
    let bytes = std::fs::read(root().join("attacks/control/package.hpk")).unwrap();
    let decoded = RawPackage::parse(&bytes).unwrap().decode().unwrap();
    assert_eq!(v.into_package(), decoded);
    assert_eq!(decoded, {
        let (m, p) = fixtures::synthetic(&fixtures::Spec::default());
        let mut m = m;
        m.canonicalise();
        hotpatch_formats::package::Package {
            manifest: m,
            payload: p,
        }
    });
}

#[test]
fn every_attack_is_refused_with_its_reason() {
    let names: Vec<&str> = fixtures::attacks().iter().map(|a| a.name).collect();
    let mut checked = Vec::new();
    let mut expect = |name: &'static str, ok: &dyn Fn(&VerifyError) -> bool| {
        let e = run(name)
            .err()
            .unwrap_or_else(|| panic!("{name}: verified"));
        assert!(ok(&e), "{name}: unexpected refusal: {e}");
        checked.push(name);
    };
    expect("manifest-edited", &|e| {
        matches!(
            e,
            VerifyError::Digest(PackageError::DigestMismatch {
                section: Section::Manifest,
                ..
            })
        )
    });
    expect("payload-edited", &|e| {
        matches!(
            e,
            VerifyError::Digest(PackageError::DigestMismatch {
                section: Section::Payload,
                ..
            })
        )
    });
    expect("mix-and-match", &|e| {
        only_rejection(e) == [Rejection::BadSignature, Rejection::BadSignature]
    });
    expect("truncated", &|e| {
        matches!(
            e,
            VerifyError::Structure(PackageError::Truncated {
                section: Section::Payload,
                ..
            })
        )
    });
    expect("bitflip-header", &|e| {
        only_rejection(e) == [Rejection::BadSignature, Rejection::BadSignature]
    });
    expect("bitflip-manifest", &|e| {
        matches!(
            e,
            VerifyError::Digest(PackageError::DigestMismatch {
                section: Section::Manifest,
                ..
            })
        )
    });
    expect("bitflip-payload", &|e| {
        matches!(
            e,
            VerifyError::Digest(PackageError::DigestMismatch {
                section: Section::Payload,
                ..
            })
        )
    });
    expect("bitflip-signature", &|e| {
        matches!(
            e,
            VerifyError::Threshold {
                counted: 1,
                required: 2,
                ..
            }
        ) && only_rejection(e) == [Rejection::BadSignature]
    });
    expect("unknown-key", &|e| {
        only_rejection(e) == [Rejection::UnknownKey]
    });
    expect("revoked-key", &|e| {
        only_rejection(e)
            == [Rejection::Revoked {
                reason: "synthetic: key leaked in a CI log".into(),
            }]
    });
    expect("key-outside-window", &|e| {
        matches!(only_rejection(e).as_slice(), [Rejection::KeyExpired { .. }])
    });
    expect("wrong-product", &|e| {
        only_rejection(e)
            == [Rejection::WrongProduct {
                product: fixtures::PRODUCT.into(),
            }]
    });
    expect(
        "below-threshold",
        &|e| matches!(e, VerifyError::Threshold { counted: 1, required: 2, rejected } if rejected.is_empty()),
    );
    expect("one-key-many-signatures", &|e| {
        matches!(
            e,
            VerifyError::Threshold {
                counted: 1,
                required: 2,
                ..
            }
        ) && only_rejection(e) == [Rejection::Duplicate, Rejection::Duplicate]
    });
    expect("expired", &|e| matches!(e, VerifyError::Expired { .. }));
    expect("freeze", &|e| {
        matches!(
            e,
            VerifyError::ExcessiveValidity {
                days: 3652,
                max_days: 93,
                ..
            }
        )
    });
    expect("not-yet-valid", &|e| {
        matches!(e, VerifyError::NotYetValid { .. })
    });
    expect("unsigned", &|e| matches!(e, VerifyError::Unsigned));
    expect("length-over-cap", &|e| {
        matches!(
            e,
            VerifyError::Structure(PackageError::OverCap {
                field: "manifest length",
                declared: 4_294_967_295,
                ..
            })
        )
    });
    expect("uncompressed-over-cap", &|e| {
        matches!(
            e,
            VerifyError::Structure(PackageError::OverCap {
                field: "uncompressed payload length",
                ..
            })
        )
    });
    expect("zstd-bomb", &|e| {
        matches!(
            e,
            VerifyError::Payload(PackageError::DecompressionBomb {
                section: Section::Payload,
                declared: 4096
            })
        )
    });
    expect("zstd-bomb-declared", &|e| {
        matches!(
            e,
            VerifyError::Payload(PackageError::Frame {
                section: Section::Payload,
                ..
            })
        )
    });
    expect("manifest-zstd-bomb", &|e| {
        matches!(
            e,
            VerifyError::Manifest(PackageError::DecompressionBomb {
                section: Section::Manifest,
                declared: 4096
            })
        )
    });
    checked.push("control");
    checked.sort_unstable();
    let mut all = names.clone();
    all.sort_unstable();
    assert_eq!(checked, all, "every attack fixture has an expectation");
}

#[test]
fn package_fixtures_are_refused_by_the_reader() {
    for b in fixtures::bad_packages() {
        let res = RawPackage::parse(&b.bytes).and_then(|r| r.decode());
        if b.name == "valid.hpk" {
            res.unwrap();
        } else {
            assert!(res.is_err(), "{} was accepted", b.name);
        }
    }
}

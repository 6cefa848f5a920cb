//! `keygen`, `sign`, `verify`, `trust` and `inspect`: round trips, the
//! attack and bad-input fixtures, and interoperability with the real
//! `openssl` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{fails, ok, root, tool};

/// The verification time of the attack fixtures.
const AT: &str = "2026-02-15T00:00:00Z";

fn hotpatch_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hotpatch"));
    c.args(args).current_dir(dir);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("failed to start hotpatch")
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    let o = Command::new(tool("openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cannot run openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn fixture(path: &str) -> PathBuf {
    root().join("tests/fixtures").join(path)
}

fn valid_unsigned(dir: &Path) -> PathBuf {
    let p = dir.join("pkg.hpk");
    std::fs::copy(fixture("package/valid.hpk"), &p).unwrap();
    p
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn attack_fixtures_are_refused_with_their_reasons() {
    let expected: &[(&str, &str)] = &[
        ("manifest-edited", "verification failed: digest: manifest digest mismatch"),
        ("payload-edited", "verification failed: digest: payload digest mismatch"),
        ("mix-and-match", "signatures: 0 of the 2 required distinct trusted keys signed (key 53fff3821fa9f1bf: signature does not verify over this package; key 447e887b03da6409: signature does not verify over this package)"),
        ("truncated", "structure: truncated package: the payload ends at byte"),
        ("bitflip-header", "signatures: 0 of the 2 required distinct trusted keys signed (key 53fff3821fa9f1bf: signature does not verify"),
        ("bitflip-manifest", "digest: manifest digest mismatch"),
        ("bitflip-payload", "digest: payload digest mismatch"),
        ("bitflip-signature", "signatures: 1 of the 2 required distinct trusted keys signed (key 53fff3821fa9f1bf: signature does not verify over this package)"),
        ("unknown-key", "signatures: 0 of the 1 required distinct trusted keys signed (key de67993f852c394a: not in the trust policy)"),
        ("revoked-key", "(key 53fff3821fa9f1bf: revoked (synthetic: key leaked in a CI log))"),
        ("key-outside-window", "(key 53fff3821fa9f1bf: outside its validity window (not after 2026-01-31T23:59:59Z))"),
        ("wrong-product", "(key 53fff3821fa9f1bf: not allowed to sign for product \"synthetic-product\")"),
        ("below-threshold", "signatures: 1 of the 2 required distinct trusted keys signed"),
        ("one-key-many-signatures", "signatures: 1 of the 2 required distinct trusted keys signed (key 53fff3821fa9f1bf: signed more than once (counted once);"),
        ("expired", "expired: the package expired at 2026-02-10T00:00:00Z (verification time 2026-02-15T00:00:00Z)"),
        ("freeze", "freeze: the package claims 3652 days of validity (2026-02-01T00:00:00Z to 2036-02-01T00:00:00Z), the policy allows at most 93"),
        ("not-yet-valid", "time: the package was created at 2026-03-01T00:00:00Z, after the verification time"),
        ("unsigned", "signatures: the package is unsigned"),
        ("length-over-cap", "structure: manifest length of 4294967295 bytes exceeds the cap of 16777216 bytes"),
        ("uncompressed-over-cap", "structure: uncompressed payload length of 4294967295 bytes exceeds the cap of 1073741824 bytes"),
        ("zstd-bomb", "zstd bomb: the payload decompresses to more than the declared 4096 bytes (stopped there)"),
        ("zstd-bomb-declared", "payload frame: the zstd frame declares 1073741824 bytes, the header 4096"),
        ("manifest-zstd-bomb", "verification failed: zstd bomb: the manifest decompresses to more than the declared 4096 bytes (stopped there)"),
    ];
    let dir = fixture("attacks");
    let mut folders: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            e.file_type()
                .unwrap()
                .is_dir()
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    folders.sort();
    let mut named: Vec<String> = expected.iter().map(|(n, _)| n.to_string()).collect();
    named.push("control".into());
    named.sort();
    assert_eq!(folders, named, "every attack folder has an expected reason");
    for (name, reason) in expected {
        let d = dir.join(name);
        assert!(std::fs::read_to_string(d.join("README"))
            .unwrap()
            .starts_with("Tries: "));
        let o = hotpatch_in(
            &d,
            &["verify", "--trust", "trust.toml", "package.hpk", "--at", AT],
            &[],
        );
        let err = fails(&o, 1);
        assert!(
            err.starts_with("hotpatch: error: package.hpk: verification failed: "),
            "{name}: {err}"
        );
        assert!(
            err.contains(reason),
            "{name}: expected {reason:?} in {err:?}"
        );
        assert!(o.stdout.is_empty(), "{name}: printed something on failure");
    }
    // Each reason is its own.
    let reasons: std::collections::BTreeSet<&str> = expected.iter().map(|(_, r)| *r).collect();
    assert_eq!(reasons.len(), expected.len());
}

#[test]
fn control_fixture_verifies_and_json_reports_what_was_verified() {
    let d = fixture("attacks/control");
    let out = ok(&hotpatch_in(
        &d,
        &[
            "verify",
            "--trust",
            "trust.toml",
            "package.hpk",
            "--at",
            AT,
            "--json",
        ],
        &[],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["product"], "synthetic-product");
    assert_eq!(v["release"], "2026-02");
    assert_eq!(v["kind"], "hotpatch");
    assert_eq!(v["baseline_release"], "2026-01");
    assert_eq!(v["expires"], "2026-04-01T00:00:00Z");
    assert_eq!(v["threshold"], 2);
    assert_eq!(v["signers"].as_array().unwrap().len(), 2);
    // Failure with --json: an object naming the check, and the one line.
    let d = fixture("attacks/expired");
    let o = hotpatch_in(
        &d,
        &[
            "verify",
            "--trust",
            "trust.toml",
            "package.hpk",
            "--at",
            AT,
            "--json",
        ],
        &[],
    );
    fails(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verified"], false);
    assert_eq!(v["check"], "expired");
}

#[test]
fn bad_package_fixtures_are_refused_by_inspect() {
    let expected: &[(&str, &str)] = &[
        ("empty.hpk", "truncated package: the header ends at byte 96, the file has 0 bytes"),
        ("bad-magic.hpk", "not a hotpatch package: bad magic 504b030414000000"),
        ("unknown-version.hpk", "unsupported package format version 1 (this reader knows version 2)"),
        ("reserved-flags.hpk", "reserved header flags 0x1 are set"),
        ("truncated-header.hpk", "truncated package: the header ends at byte 96, the file has 60 bytes"),
        ("truncated-manifest.hpk", "truncated package: the manifest ends at byte"),
        ("truncated-payload.hpk", "truncated package: the payload ends at byte"),
        ("trailing-bytes.hpk", "trailing bytes: the header accounts for"),
        ("manifest-over-cap.hpk", "manifest length of 16777217 bytes exceeds the cap of 16777216 bytes"),
        ("manifest-uncompressed-over-cap.hpk", "uncompressed manifest length of 16777217 bytes exceeds the cap of 16777216 bytes"),
        ("manifest-zstd-bomb.hpk", "zstd bomb: the manifest decompresses to more than the declared 4096 bytes (stopped there)"),
        ("payload-over-cap.hpk", "payload length of 1073741825 bytes exceeds the cap of 1073741824 bytes"),
        ("uncompressed-over-cap.hpk", "uncompressed payload length of 4294967295 bytes exceeds the cap"),
        ("signatures-over-cap.hpk", "signature section length of 3168 bytes exceeds the cap of 3072 bytes"),
        ("signatures-partial-entry.hpk", "invalid signature section length: 95 is not a multiple of 96"),
        ("bitflip-header.hpk", "manifest digest mismatch: the header declares c105e0b7a8acff0b"),
        ("bitflip-manifest.hpk", "manifest digest mismatch"),
        ("bitflip-payload.hpk", "payload digest mismatch"),
        ("zstd-bomb.hpk", "zstd bomb: the payload decompresses to more than the declared 4096 bytes"),
        ("zstd-bomb-declared.hpk", "payload frame: the zstd frame declares 1073741824 bytes, the header 4096"),
        ("payload-short.hpk", "payload decompresses to 131072 bytes, the header declares 200000"),
        ("payload-not-zstd.hpk", "payload frame: not a zstd frame"),
        ("manifest-invalid-json.hpk", "manifest is not valid: EOF while parsing"),
        ("manifest-missing-field.hpk", "manifest is not valid: missing field `product`"),
        ("manifest-unknown-field.hpk", "manifest is not valid: unknown field `priority`"),
        ("manifest-float.hpk", "manifest is not valid: invalid type: floating point `1.0`, expected u32"),
        ("manifest-calendar.hpk", "manifest: release calendar: no hotpatch in a planned baseline month: 2026-04"),
        ("manifest-bad-item-ref.hpk", "manifest: targets[0].data[0].body: item 99 does not exist (the payload has 6 items)"),
        ("payload-reloc-outside-item.hpk", "payload: item 1: relocation 0 (offset 0x2e): 4-byte rel32 field runs past the item's 48 bytes"),
        ("payload-trailing-bytes.hpk", "payload: 3 trailing bytes after the last item"),
        ("payload-unknown-reloc-kind.hpk", "payload: item 1: relocation 0: unknown relocation kind 31 with scale 0"),
        ("payload-reloc-count-over-data.hpk", "payload: item 1: relocation count 1000 needs at least 4000 bytes, 256 are left"),
        ("payload-truncated-varint.hpk", "payload: item 5: relocation 4: addend: needs 1 bytes at offset 340, 0 left"),
    ];
    let dir = fixture("package");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".hpk"))
        .collect();
    files.sort();
    let mut named: Vec<String> = expected.iter().map(|(n, _)| n.to_string()).collect();
    named.push("valid.hpk".into());
    named.sort();
    assert_eq!(files, named, "every package fixture has an expected reason");
    for (name, reason) in expected {
        let err = fails(&hotpatch_in(&dir, &["inspect", name], &[]), 1);
        assert!(
            err.starts_with(&format!("hotpatch: error: {name}: ")) && err.contains(reason),
            "{name}: expected {reason:?} in {err:?}"
        );
    }
    let out = ok(&hotpatch_in(&dir, &["inspect", "valid.hpk"], &[]));
    assert!(
        out.lines().nth(1).unwrap().starts_with("NOT VERIFIED: "),
        "{out}"
    );
    assert!(
        out.contains("parse_header at 0x1200, 160 bytes: x64-near-jump over 0x1200+5"),
        "{out}"
    );
    assert!(
        out.contains("new body item 2: 165 bytes (zstd delta of"),
        "{out}"
    );
    assert!(
        out.contains("report [report.obj] at 0x11000, 32 bytes: a64-branch over 0x11000+4"),
        "{out}"
    );
    assert!(
        out.contains("left out (line numbers only): log_version"),
        "{out}"
    );
}

#[test]
fn inspect_json_round_trips_the_manifest() {
    let dir = fixture("package");
    let out = ok(&hotpatch_in(&dir, &["inspect", "valid.hpk", "--json"], &[]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verified"], false);
    assert!(v["note"].as_str().unwrap().starts_with("NOT VERIFIED"));
    // The manifest object is exactly the manifest's own JSON.
    let bytes = std::fs::read(dir.join("valid.hpk")).unwrap();
    let raw = hotpatch_formats::package::RawPackage::parse(&bytes).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&raw.manifest_json().unwrap()).unwrap();
    assert_eq!(v["manifest"], manifest);
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 6);
    assert_eq!(items[2]["encoding"], "zstd-delta");
    assert_eq!(items[2]["relocations"], 3);
    assert_eq!(items[5]["relocations"], 5);
}

#[test]
fn keygen_trust_sign_verify_round_trip_with_two_signers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let pkg = valid_unsigned(d);
    let id1 = ok(&hotpatch_in(d, &["keygen", "-o", "k1"], &[]))
        .trim()
        .to_string();
    let id2 = ok(&hotpatch_in(d, &["keygen", "-o", "k2"], &[]))
        .trim()
        .to_string();
    assert_eq!(id1.len(), 64);
    assert_ne!(id1, id2);
    // keygen never overwrites.
    let before = std::fs::read(d.join("k1")).unwrap();
    let err = fails(&hotpatch_in(d, &["keygen", "-o", "k1"], &[]), 1);
    assert_eq!(
        err,
        "hotpatch: error: k1: already exists; keygen never overwrites a file"
    );
    assert_eq!(std::fs::read(d.join("k1")).unwrap(), before);
    ok(&hotpatch_in(
        d,
        &[
            "trust",
            "new",
            "--key",
            "k1.pub",
            "--key",
            "k2.pub",
            "--threshold",
            "2",
            "--product",
            "synthetic-product",
            "-o",
            "trust.toml",
        ],
        &[],
    ));
    let policy = std::fs::read_to_string(d.join("trust.toml")).unwrap();
    assert!(policy.contains(&id1) && policy.contains(&id2));
    let err = fails(
        &hotpatch_in(
            d,
            &["trust", "new", "--key", "k1.pub", "-o", "trust.toml"],
            &[],
        ),
        1,
    );
    assert_eq!(
        err,
        "hotpatch: error: trust.toml: already exists; `trust new` never overwrites a policy"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("trust.toml")).unwrap(),
        policy
    );
    let err = fails(
        &hotpatch_in(d, &["trust", "new", "--key", "k1", "-o", "t2.toml"], &[]),
        1,
    );
    assert_eq!(err, "hotpatch: error: k1: not an Ed25519 public key in SPKI PEM (\"BEGIN PUBLIC KEY\"); this is a private key, give its .pub file");
    let err = fails(
        &hotpatch_in(
            d,
            &[
                "trust",
                "new",
                "--key",
                "k1.pub",
                "--threshold",
                "2",
                "-o",
                "t2.toml",
            ],
            &[],
        ),
        1,
    );
    assert_eq!(
        err,
        "hotpatch: error: t2.toml: threshold: 2 can never be met by 1 keys"
    );
    assert!(!d.join("t2.toml").exists());
    // Unsigned, then one signer: refused with the reason; then both.
    let err = fails(
        &hotpatch_in(d, &["verify", "--trust", "trust.toml", "pkg.hpk"], &[]),
        1,
    );
    assert!(
        err.ends_with("signatures: the package is unsigned"),
        "{err}"
    );
    let out = ok(&hotpatch_in(
        d,
        &["sign", "--key", "k1", "pkg.hpk", "-o", "one.hpk"],
        &[],
    ));
    assert_eq!(out, format!("one.hpk: signed by key {id1} (1 signature)\n"));
    let err = fails(
        &hotpatch_in(
            d,
            &["verify", "--trust", "trust.toml", "one.hpk", "--at", AT],
            &[],
        ),
        1,
    );
    assert!(
        err.ends_with("signatures: 1 of the 2 required distinct trusted keys signed"),
        "{err}"
    );
    // The second signer reads the key from the environment.
    let pem = std::fs::read_to_string(d.join("k2")).unwrap();
    let out = ok(&hotpatch_in(
        d,
        &[
            "sign",
            "--key-env",
            "RELEASE_KEY",
            "one.hpk",
            "-o",
            "two.hpk",
        ],
        &[("RELEASE_KEY", &pem)],
    ));
    assert_eq!(
        out,
        format!("two.hpk: signed by key {id2} (2 signatures)\n")
    );
    let out = ok(&hotpatch_in(
        d,
        &["verify", "--trust", "trust.toml", "two.hpk", "--at", AT],
        &[],
    ));
    assert!(
        out.starts_with("two.hpk: verified\nproduct:   synthetic-product\n"),
        "{out}"
    );
    assert!(out.contains("signers:   2 distinct (threshold 2)"), "{out}");
    // Signing again with a key that signed is refused; the file is kept.
    let before = std::fs::read(d.join("two.hpk")).unwrap();
    let err = fails(&hotpatch_in(d, &["sign", "--key", "k1", "two.hpk"], &[]), 1);
    assert_eq!(
        err,
        format!("hotpatch: error: two.hpk: already signed by key {id1}")
    );
    assert_eq!(std::fs::read(d.join("two.hpk")).unwrap(), before);
    // Adding a signature changed nothing signed.
    let m1 = ok_bytes(&hotpatch_in(
        d,
        &["inspect", "--signed-message", "pkg.hpk"],
        &[],
    ));
    let m2 = ok_bytes(&hotpatch_in(
        d,
        &["inspect", "--signed-message", "two.hpk"],
        &[],
    ));
    assert_eq!(m1, m2);
    // Revoking one key drops it below the threshold, with the reason.
    let out = ok(&hotpatch_in(
        d,
        &[
            "trust",
            "revoke",
            "trust.toml",
            &id2,
            "--reason",
            "laptop stolen",
        ],
        &[],
    ));
    assert_eq!(out, format!("trust.toml: revoked key {id2}\n"));
    let err = fails(
        &hotpatch_in(
            d,
            &["verify", "--trust", "trust.toml", "two.hpk", "--at", AT],
            &[],
        ),
        1,
    );
    assert!(
        err.ends_with(&format!("(key {}: revoked (laptop stolen))", &id2[..16])),
        "{err}"
    );
    // A damaged package is never signed.
    let mut bad = std::fs::read(&pkg).unwrap();
    let n = bad.len();
    bad[n - 3] ^= 1;
    std::fs::write(d.join("bad.hpk"), &bad).unwrap();
    let err = fails(&hotpatch_in(d, &["sign", "--key", "k1", "bad.hpk"], &[]), 1);
    assert!(
        err.contains("refusing to sign an invalid package: payload digest mismatch"),
        "{err}"
    );
}

fn ok_bytes(o: &Output) -> Vec<u8> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout.clone()
}

#[test]
fn key_files_readable_by_others_are_refused_and_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    valid_unsigned(d);
    ok(&hotpatch_in(d, &["keygen", "-o", "k"], &[]));
    let pem = std::fs::read_to_string(d.join("k")).unwrap();
    chmod(&d.join("k"), 0o644);
    let o = hotpatch_in(d, &["sign", "--key", "k", "pkg.hpk"], &[]);
    let err = fails(&o, 1);
    assert_eq!(
        err,
        "hotpatch: error: k: private key is accessible by group or others (mode 0644); run `chmod 600` on it"
    );
    // A damaged key: the error names the file, never the key.
    let body: Vec<&str> = pem.lines().collect();
    // Cut the base64 body short: the DER no longer parses.
    let damaged = format!("{}\n{}\n{}\n", body[0], &body[1][..40], body[2]);
    std::fs::write(d.join("bad"), &damaged).unwrap();
    chmod(&d.join("bad"), 0o600);
    let o = hotpatch_in(d, &["sign", "--key", "bad", "pkg.hpk"], &[]);
    let err = fails(&o, 1);
    assert_eq!(
        err,
        "hotpatch: error: bad: not an Ed25519 private key in PKCS#8 PEM (\"BEGIN PRIVATE KEY\")"
    );
    let from_env = hotpatch_in(
        d,
        &["sign", "--key-env", "K", "pkg.hpk"],
        &[("K", &damaged)],
    );
    let err = fails(&from_env, 1);
    assert_eq!(err, "hotpatch: error: environment variable K: not an Ed25519 private key in PKCS#8 PEM (\"BEGIN PRIVATE KEY\")");
    // A good key from the environment, refused for another reason.
    std::fs::write(d.join("empty.hpk"), b"").unwrap();
    let good_env = hotpatch_in(d, &["sign", "--key-env", "K", "empty.hpk"], &[("K", &pem)]);
    fails(&good_env, 1);
    for o in [&o, &from_env, &good_env] {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!all.contains(&line[..20]), "key material in output: {all}");
        }
        assert!(
            !all.contains(&body[1][..20]),
            "key material in output: {all}"
        );
    }
    let err = fails(
        &hotpatch_in(
            d,
            &["sign", "--key-env", "NOT_SET_ANYWHERE", "pkg.hpk"],
            &[],
        ),
        1,
    );
    assert_eq!(
        err,
        "hotpatch: error: environment variable NOT_SET_ANYWHERE is not set"
    );
}

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    valid_unsigned(d);
    assert_eq!(
        hotpatch_in(d, &["sign", "pkg.hpk"], &[]).status.code(),
        Some(2)
    );
    assert_eq!(
        hotpatch_in(d, &["sign", "--key", "a", "--key-env", "B", "pkg.hpk"], &[])
            .status
            .code(),
        Some(2)
    );
    std::fs::copy(fixture("attacks/control/trust.toml"), d.join("trust.toml")).unwrap();
    let err = fails(
        &hotpatch_in(
            d,
            &[
                "verify",
                "--trust",
                "trust.toml",
                "pkg.hpk",
                "--at",
                "yesterday",
            ],
            &[],
        ),
        2,
    );
    assert!(err.contains("--at: invalid time \"yesterday\""), "{err}");
    let err = fails(
        &hotpatch_in(
            d,
            &["trust", "revoke", "trust.toml", "abc", "--reason", "x"],
            &[],
        ),
        2,
    );
    assert!(err.contains("KEYID: expected 64 hex digits"), "{err}");
}

#[test]
fn failed_sign_leaves_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    valid_unsigned(d);
    ok(&hotpatch_in(d, &["keygen", "-o", "k"], &[]));
    std::fs::create_dir(d.join("out.hpk")).unwrap();
    fails(
        &hotpatch_in(d, &["sign", "--key", "k", "pkg.hpk", "-o", "out.hpk"], &[]),
        1,
    );
    let mut names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["k", "k.pub", "out.hpk", "pkg.hpk"]);
}

#[test]
fn openssl_keys_work_and_openssl_reads_ours() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    valid_unsigned(d);
    // An OpenSSL key signs; a policy from OpenSSL's public key verifies.
    openssl(d, &["genpkey", "-algorithm", "ed25519", "-out", "ossl.pem"]);
    chmod(&d.join("ossl.pem"), 0o600);
    openssl(
        d,
        &["pkey", "-in", "ossl.pem", "-pubout", "-out", "ossl.pub"],
    );
    ok(&hotpatch_in(
        d,
        &["trust", "new", "--key", "ossl.pub", "-o", "trust.toml"],
        &[],
    ));
    ok(&hotpatch_in(
        d,
        &["sign", "--key", "ossl.pem", "pkg.hpk", "-o", "signed.hpk"],
        &[],
    ));
    ok(&hotpatch_in(
        d,
        &["verify", "--trust", "trust.toml", "signed.hpk", "--at", AT],
        &[],
    ));
    // OpenSSL reads our keys, and derives exactly our public key file.
    ok(&hotpatch_in(d, &["keygen", "-o", "ours"], &[]));
    openssl(d, &["pkey", "-in", "ours", "-noout"]);
    let derived = openssl(d, &["pkey", "-in", "ours", "-pubout"]).stdout;
    assert_eq!(derived, std::fs::read(d.join("ours.pub")).unwrap());
    // Same private key text as OpenSSL writes (PKCS#8 v1).
    let rewritten = openssl(d, &["pkey", "-in", "ours"]).stdout;
    assert_eq!(rewritten, std::fs::read(d.join("ours")).unwrap());
    // The key id is the SHA-256 of the SPKI DER, as OpenSSL encodes it.
    let der = openssl(d, &["pkey", "-in", "ours", "-pubout", "-outform", "DER"]).stdout;
    let id = ok(&hotpatch_in(d, &["keygen", "-o", "third"], &[]));
    let der3 = openssl(d, &["pkey", "-in", "third", "-pubout", "-outform", "DER"]).stdout;
    use sha2_hex::hex_sha256;
    assert_eq!(id.trim(), hex_sha256(&der3));
    assert_eq!(der.len(), 44);
}

#[test]
fn openssl_checks_our_signatures_over_the_signed_message() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    valid_unsigned(d);
    ok(&hotpatch_in(d, &["keygen", "-o", "k"], &[]));
    ok(&hotpatch_in(
        d,
        &["sign", "--key", "k", "pkg.hpk", "-o", "signed.hpk"],
        &[],
    ));
    let msg = ok_bytes(&hotpatch_in(
        d,
        &["inspect", "--signed-message", "signed.hpk"],
        &[],
    ));
    assert!(msg.starts_with(b"DSSEv1 35 application/vnd.hotpatch.package.v2 92 "));
    std::fs::write(d.join("msg"), &msg).unwrap();
    // The signature is the last 64 bytes (the entry's key id comes first).
    let pkg = std::fs::read(d.join("signed.hpk")).unwrap();
    let sig = &pkg[pkg.len() - 64..];
    std::fs::write(d.join("sig"), sig).unwrap();
    let out = openssl(
        d,
        &[
            "pkeyutl", "-verify", "-pubin", "-inkey", "k.pub", "-rawin", "-in", "msg", "-sigfile",
            "sig",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Signature Verified Successfully"
    );
    // OpenSSL, signing the same message with the same key, makes the same
    // signature (Ed25519 is deterministic): both directions agree.
    let out = openssl(
        d,
        &["pkeyutl", "-sign", "-inkey", "k", "-rawin", "-in", "msg"],
    );
    assert_eq!(out.stdout, sig);
    // A tampered message fails OpenSSL's check too.
    let mut bad = msg.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(d.join("bad"), &bad).unwrap();
    let o = Command::new(tool("openssl"))
        .args([
            "pkeyutl", "-verify", "-pubin", "-inkey", "k.pub", "-rawin", "-in", "bad", "-sigfile",
            "sig",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!o.status.success());
}

/// SHA-256 in hex through `sha256sum`, to check key ids independently.
mod sha2_hex {
    use std::io::Write;
    use std::process::{Command, Stdio};

    pub fn hex_sha256(bytes: &[u8]) -> String {
        let mut c = Command::new(crate::common::tool("sha256sum"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = c.wait_with_output().unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }
}

//! `hotpatch build`: every corpus update on all four targets, the calendar,
//! determinism, atomic output, release files, and the whole chain
//! build → sign → verify.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{expected, fails, image_files, ok, root, scenarios, TARGETS};
use crate::diff::resolve;

/// A fixed creation time: 2026-03-01T00:00:00Z.
const EPOCH: &str = "1772323200";

fn hotpatch_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hotpatch"))
        .args(args)
        .current_dir(dir)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .expect("failed to start hotpatch")
}

/// The arguments of `build` for an update of a corpus scenario.
fn build_args(
    scenario: &Path,
    target: &str,
    version: &str,
    release: &str,
    baseline_release: &str,
    out: &Path,
) -> Vec<String> {
    let (base, base_pdb) = image_files(scenario, target, "v1");
    let (upd, upd_pdb) = image_files(scenario, target, version);
    let mut args = vec![
        "build".to_string(),
        "--baseline".into(),
        base.display().to_string(),
        "--updated".into(),
        upd.display().to_string(),
        "--product".into(),
        "corpus".into(),
        "--release".into(),
        release.into(),
        "--baseline-release".into(),
        baseline_release.into(),
        "-o".into(),
        out.display().to_string(),
    ];
    if let (Some(b), Some(u)) = (base_pdb, upd_pdb) {
        args.extend([
            "--baseline-pdb".into(),
            b.display().to_string(),
            "--updated-pdb".into(),
            u.display().to_string(),
        ]);
    }
    args
}

fn run(dir: &Path, args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    hotpatch_in(dir, &refs)
}

/// Bare names of a manifest list (`functions` or `added_functions`), sorted.
fn names(target: &Value, list: &str) -> Vec<String> {
    let mut v: Vec<String> = target[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Bare names of an answer-key list (`unit:name` → `name`), sorted.
fn bare(list: &[String]) -> Vec<String> {
    let mut v: Vec<String> = list
        .iter()
        .map(|n| {
            n.rsplit_once(':')
                .map_or(n.as_str(), |(_, n)| n)
                .to_string()
        })
        .collect();
    v.sort();
    v
}

/// For every update of every scenario on every target: a hotpatchable one
/// builds, its manifest lists exactly the answer key's changed and added
/// functions, and `inspect --json` gives back the same manifest; any other
/// is refused with its blockers and builds with `--kind baseline`.
#[test]
fn every_corpus_update_builds_or_is_refused_with_its_blockers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Two release signers; devices require both.
    for k in ["k1", "k2"] {
        ok(&hotpatch_in(d, &["keygen", "-o", k]));
    }
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
            "corpus",
            "-o",
            "trust.toml",
        ],
    ));
    let mut built = 0;
    let mut refused = 0;
    for dir in scenarios() {
        let exp = expected(&dir);
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        for target in TARGETS {
            for u in &exp.update {
                let want = resolve(&u.sets, u.targets.get(target));
                let out = d.join(format!("{name}-{target}-{}.hpk", u.version));
                let mut args = build_args(&dir, target, &u.version, "2026-02", "2026-01", &out);
                args.push("--json".into());
                for a in &want.allow {
                    args.extend([
                        "--allow".into(),
                        a.object.clone(),
                        "--reason".into(),
                        a.reason.clone(),
                    ]);
                }
                let o = run(d, &args);
                let what = format!("{name} {target} {}", u.version);
                if !want.hotpatchable {
                    let err = fails(&o, 1);
                    assert!(
                        err.contains("not hotpatchable") && err.contains("--kind baseline"),
                        "{what}: {err}"
                    );
                    for b in &want.blockers {
                        let b = b.rsplit_once(':').map_or(b.as_str(), |(_, n)| n);
                        assert!(err.contains(b), "{what}: blocker {b} not named: {err}");
                    }
                    assert!(!out.exists(), "{what}: a refused build left a file");
                    // A baseline carries the whole update instead.
                    let mut args = build_args(&dir, target, &u.version, "2026-04", "2026-04", &out);
                    args.extend(["--kind".into(), "baseline".into(), "--json".into()]);
                    let m: Value = serde_json::from_str(&ok(&run(d, &args))).unwrap();
                    assert_eq!(m["requires_restart"], true, "{what}");
                    assert_eq!(m["sequence"], 0, "{what}");
                    assert!(m["targets"][0]["image"].is_u64(), "{what}");
                    refused += 1;
                    continue;
                }
                if want.changed.is_empty() && want.added.is_empty() {
                    let err = fails(&o, 1);
                    assert!(err.contains("nothing to hotpatch"), "{what}: {err}");
                    continue;
                }
                let manifest: Value = serde_json::from_str(&ok(&o)).unwrap();
                let t = &manifest["targets"][0];
                // Functions changed only in their line numbers are left out
                // and listed.
                let carried: Vec<String> = want
                    .changed
                    .iter()
                    .filter(|f| !want.lines_only.contains(f))
                    .cloned()
                    .collect();
                assert_eq!(names(t, "functions"), bare(&carried), "{what}: changed");
                assert_eq!(
                    names(t, "lines_only"),
                    bare(&want.lines_only),
                    "{what}: lines_only"
                );
                assert_eq!(
                    names(t, "added_functions"),
                    bare(&want.added),
                    "{what}: added"
                );
                let inspected: Value = serde_json::from_str(&ok(&hotpatch_in(
                    d,
                    &["inspect", "--json", out.to_str().unwrap()],
                )))
                .unwrap();
                assert_eq!(inspected["verified"], false);
                assert_eq!(
                    inspected["manifest"], manifest,
                    "{what}: inspect round trip"
                );
                // Two signers in turn, then verification with threshold 2.
                let p = out.to_str().unwrap();
                let verify = [
                    "verify",
                    p,
                    "--trust",
                    "trust.toml",
                    "--at",
                    "2026-03-02T00:00:00Z",
                ];
                ok(&hotpatch_in(d, &["sign", "--key", "k1", p]));
                let err = fails(&hotpatch_in(d, &verify), 1);
                assert!(err.contains("1 of the 2 required"), "{what}: {err}");
                ok(&hotpatch_in(d, &["sign", "--key", "k2", p]));
                ok(&hotpatch_in(d, &verify));
                built += 1;
            }
        }
    }
    assert!(built >= 50, "{built} built");
    assert!(refused >= 8, "{refused} refused");
}

/// Functions changed only in their `__LINE__` immediates stay out of the
/// package unless `--include-lines-only`, on all four targets; the summary
/// counts them.
#[test]
fn line_only_functions_are_left_out_unless_included() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let dir = root().join("corpus/18-line-shift");
    let exp = expected(&dir);
    let u = &exp.update[0];
    for target in TARGETS {
        let want = resolve(&u.sets, u.targets.get(target));
        assert!(!want.lines_only.is_empty());
        let out = d.join(format!("{target}.hpk"));
        let args = build_args(&dir, target, "v2", "2026-02", "2026-01", &out);
        let text = ok(&run(d, &args));
        assert!(
            text.contains(": 1 changed, 0 added function(s), 0 new data object(s), ")
                && text.contains(&format!(
                "; {} changed in line numbers only, left out (--include-lines-only carries them)",
                want.lines_only.len()
            )),
            "{target}: {text}"
        );
        let mut json = args.clone();
        json.push("--json".into());
        let m: Value = serde_json::from_str(&ok(&run(d, &json))).unwrap();
        let t = &m["targets"][0];
        assert_eq!(names(t, "functions"), ["cfg_set_timeout"], "{target}");
        assert_eq!(names(t, "lines_only"), bare(&want.lines_only), "{target}");
        json.push("--include-lines-only".into());
        let m: Value = serde_json::from_str(&ok(&run(d, &json))).unwrap();
        let t = &m["targets"][0];
        assert_eq!(names(t, "functions"), bare(&want.changed), "{target}");
        assert_eq!(names(t, "lines_only"), Vec::<String>::new(), "{target}");
    }
}

#[test]
fn building_twice_gives_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let dir = root().join("corpus/13-cumulative-series");
    for target in TARGETS {
        let a = d.join("a.hpk");
        let b = d.join("sub/b.hpk");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        ok(&run(
            d,
            &build_args(&dir, target, "v3", "2026-03", "2026-01", &a),
        ));
        // Another output path and working directory: same bytes.
        ok(&run(
            &d.join("sub"),
            &build_args(&dir, target, "v3", "2026-03", "2026-01", &b),
        ));
        let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(x, y, "{target}: two builds differ");
        // SOURCE_DATE_EPOCH is the creation time.
        let m: Value = serde_json::from_str(&ok(&hotpatch_in(
            d,
            &["inspect", "--json", a.to_str().unwrap()],
        )))
        .unwrap();
        assert_eq!(m["manifest"]["created"], "2026-03-01T00:00:00Z");
        assert_eq!(m["manifest"]["sequence"], 2);
        assert_eq!(
            m["manifest"]["supersedes"],
            serde_json::json!(["corpus-2026-02"])
        );
    }
}

#[test]
fn failed_build_leaves_no_file_and_keeps_an_existing_one() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let blocked = root().join("corpus/08-struct-grows");
    let out = d.join("out.hpk");
    let err = fails(
        &run(
            d,
            &build_args(&blocked, "x86_64-linux", "v2", "2026-02", "2026-01", &out),
        ),
        1,
    );
    assert!(err.contains("not hotpatchable"), "{err}");
    assert!(!out.exists());
    std::fs::write(&out, b"precious").unwrap();
    fails(
        &run(
            d,
            &build_args(&blocked, "x86_64-linux", "v2", "2026-02", "2026-01", &out),
        ),
        1,
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    // No temporary file is left beside it either.
    let left: Vec<_> = std::fs::read_dir(d).unwrap().collect();
    assert_eq!(left.len(), 1);
}

#[test]
fn calendar_violations_are_refused_by_build() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let dir = root().join("corpus/01-bounds-check");
    let out = d.join("out.hpk");
    let cases = [
        (
            "2026-04",
            "2026-01",
            "hotpatch",
            "no hotpatch in a planned baseline month",
        ),
        ("2026-05", "2026-01", "hotpatch", "quarter"),
        ("2026-02", "2026-03", "hotpatch", "after"),
        ("2026-02", "2026-02", "hotpatch", "after"),
        ("2026-04", "2026-01", "baseline", "baseline"),
    ];
    for (release, baseline, kind, why) in cases {
        let mut args = build_args(&dir, "x86_64-linux", "v2", release, baseline, &out);
        args.extend(["--kind".into(), kind.into()]);
        let err = fails(&run(d, &args), 1);
        assert!(err.contains(why), "{release} {baseline} {kind}: {err}");
        assert!(!out.exists());
    }
    // Accepted: the second and third month of a quarter, and an unplanned
    // baseline in a hotpatch month.
    for (release, baseline, kind) in [
        ("2026-02", "2026-01", "hotpatch"),
        ("2026-03", "2026-01", "hotpatch"),
        ("2026-03", "2026-02", "hotpatch"),
        ("2026-02", "2026-02", "baseline"),
    ] {
        let mut args = build_args(&dir, "x86_64-linux", "v2", release, baseline, &out);
        args.extend(["--kind".into(), kind.into()]);
        ok(&run(d, &args));
    }
    // Bad months are usage errors.
    let args = build_args(&dir, "x86_64-linux", "v2", "2026-13", "2026-01", &out);
    let err = fails(&run(d, &args), 2);
    assert!(err.contains("--release"), "{err}");
}

#[test]
fn pairs_of_different_images_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let dir = root().join("corpus/01-bounds-check");
    let x = image_files(&dir, "x86_64-linux", "v1").0;
    let a = image_files(&dir, "aarch64-linux", "v2").0;
    let base = |upd: &Path| {
        vec![
            "build".to_string(),
            "--baseline".into(),
            x.display().to_string(),
            "--updated".into(),
            upd.display().to_string(),
            "--product".into(),
            "p".into(),
            "--release".into(),
            "2026-02".into(),
            "--baseline-release".into(),
            "2026-01".into(),
            "-o".into(),
            "out.hpk".into(),
        ]
    };
    let err = fails(&run(d, &base(&a)), 1);
    assert!(
        err.contains("is ELF aarch64 but its baseline") && err.contains("ELF x86_64"),
        "{err}"
    );
    let err = fails(&run(d, &base(&x)), 1);
    assert!(err.contains("is the same file as its baseline"), "{err}");
    assert!(!d.join("out.hpk").exists());
}

#[test]
fn release_file_builds_one_package_for_many_images() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = root().join("corpus");
    let text = format!(
        r#"
product = "corpus"
release = "2026-02"
baseline_release = "2026-01"
advisories = ["CVE-2026-0002", "CVE-2026-0001"]
expires = "2026-06-30"

[[image]]
name = "libbounds.so"
baseline = "{c}/01-bounds-check/bin/x86_64-linux/v1.so"
updated = "{c}/01-bounds-check/bin/x86_64-linux/v2.so"

[[image]]
name = "helper.dll"
baseline = "{c}/03-new-helper/bin/x86_64-windows/v1.dll"
baseline_pdb = "{c}/03-new-helper/bin/x86_64-windows/v1.pdb"
updated = "{c}/03-new-helper/bin/x86_64-windows/v2.dll"
"#,
        c = c.display()
    );
    std::fs::write(d.join("release.toml"), text).unwrap();
    let m: Value = serde_json::from_str(&ok(&hotpatch_in(
        d,
        &[
            "build",
            "--release-file",
            "release.toml",
            "-o",
            "m.hpk",
            "--json",
        ],
    )))
    .unwrap();
    let names: Vec<&str> = m["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["helper.dll", "libbounds.so"]);
    assert_eq!(
        m["advisories"],
        serde_json::json!(["CVE-2026-0001", "CVE-2026-0002"])
    );
    assert_eq!(m["expires"], "2026-06-30T00:00:00Z");
    assert_eq!(m["targets"][0]["format"], "pe");
    assert_eq!(m["targets"][1]["format"], "elf");
    // A release file with a misspelt field is refused, naming the file.
    std::fs::write(
        d.join("bad.toml"),
        "product = \"p\"\nrelease = \"2026-02\"\nbaseline_relase = \"2026-01\"\n",
    )
    .unwrap();
    let err = fails(
        &hotpatch_in(d, &["build", "--release-file", "bad.toml", "-o", "b.hpk"]),
        1,
    );
    assert!(err.starts_with("hotpatch: error: bad.toml: "), "{err}");
    assert!(!d.join("b.hpk").exists());
}

/// The whole chain on the cumulative series: build v1 → v3, sign it, and
/// verify it against a trust policy for the product.
#[test]
fn keygen_build_sign_verify_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let dir = root().join("corpus/13-cumulative-series");
    let pkg = d.join("p.hpk");
    ok(&run(
        d,
        &build_args(&dir, "aarch64-linux", "v3", "2026-03", "2026-01", &pkg),
    ));
    let id = ok(&hotpatch_in(d, &["keygen", "-o", "k"]))
        .trim()
        .to_string();
    ok(&hotpatch_in(
        d,
        &[
            "trust",
            "new",
            "--key",
            "k.pub",
            "--product",
            "corpus",
            "-o",
            "trust.toml",
        ],
    ));
    let unsigned = std::fs::read(&pkg).unwrap();
    let err = fails(
        &hotpatch_in(
            d,
            &[
                "verify",
                "p.hpk",
                "--trust",
                "trust.toml",
                "--at",
                "2026-03-02T00:00:00Z",
            ],
        ),
        1,
    );
    assert!(err.contains("p.hpk"), "{err}");
    ok(&hotpatch_in(d, &["sign", "--key", "k", "p.hpk"]));
    let out = ok(&hotpatch_in(
        d,
        &[
            "verify",
            "p.hpk",
            "--trust",
            "trust.toml",
            "--at",
            "2026-03-02T00:00:00Z",
            "--json",
        ],
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(out.contains(&id), "{out}");
    assert_eq!(v["verified"], true, "{out}");
    assert_eq!(v["package_id"], "corpus-2026-03", "{out}");
    assert_eq!(v["signers"], serde_json::json!([id]), "{out}");
    // Signing added a signature and changed nothing else.
    let signed = std::fs::read(&pkg).unwrap();
    assert!(signed.len() > unsigned.len());
}

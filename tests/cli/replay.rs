//! `hotpatch replay`: every hotpatchable corpus update on all four targets
//! is built, signed, verified and replayed in the emulated VM with both
//! differential checks; the cumulative series is re-pointed and reverted;
//! every bad input is refused with one line and the VM's memory unchanged
//! (checked by the CLI and, independently, with the VM's memory digest);
//! and a fault after every step of the engine leaves the VM unchanged.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hotpatch_applier::{Engine, Step};
use hotpatch_emulator::{Arg, LoadOptions, Vm};
use hotpatch_formats::package::{self, RawPackage, Sha256Digest, Target as RelocTarget, Timestamp};
use hotpatch_signer::TrustPolicy;
use serde_json::Value;

use crate::common::{expected, fails, ok, root, scenarios, TARGETS};
use crate::diff::resolve;

/// 2026-02-01T00:00:00Z: every package's creation time.
const EPOCH: &str = "1769904000";
/// The verification time of every replay.
const AT: &str = "2026-02-15";

fn hotpatch_env(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hotpatch"))
        .args(args)
        .current_dir(root())
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .expect("failed to start hotpatch")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A key, its trust policy, and a scratch directory.
struct Keys {
    dir: tempfile::TempDir,
    key: PathBuf,
    trust: PathBuf,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release.key");
    let trust = dir.path().join("trust.toml");
    ok(&hotpatch_env(&["keygen", "-o", &s(&key)]));
    ok(&hotpatch_env(&[
        "trust",
        "new",
        "--key",
        &format!("{}.pub", s(&key)),
        "-o",
        &s(&trust),
    ]));
    Keys { dir, key, trust }
}

/// A corpus image and its PDB (none for a scenario shipped stripped).
fn image(scenario: &str, target: &str, version: &str) -> (PathBuf, Option<PathBuf>) {
    crate::common::image_files(&root().join("corpus").join(scenario), target, version)
}

/// Build `scenario` v1 → `version` on `target` as release `release`
/// (sequence = months since 2026-01); `Err(stderr)` if refused.
fn build(
    k: &Keys,
    scenario: &str,
    target: &str,
    version: &str,
    release: &str,
    allow: &[(String, String)],
) -> Result<PathBuf, String> {
    build_with(k, scenario, target, version, release, allow, &[])
}

/// [`build`] with more arguments.
fn build_with(
    k: &Keys,
    scenario: &str,
    target: &str,
    version: &str,
    release: &str,
    allow: &[(String, String)],
    extra: &[&str],
) -> Result<PathBuf, String> {
    let out = k
        .dir
        .path()
        .join(format!("{scenario}-{target}-{version}-{release}.hpk"));
    let (base, base_pdb) = image(scenario, target, "v1");
    let (upd, upd_pdb) = image(scenario, target, version);
    let mut args = vec![
        "build".to_string(),
        "--baseline".into(),
        s(&base),
        "--updated".into(),
        s(&upd),
        "--product".into(),
        "corpus".into(),
        "--release".into(),
        release.into(),
        "--baseline-release".into(),
        "2026-01".into(),
        "--package-id".into(),
        format!("corpus-{release}"),
        "-o".into(),
        s(&out),
    ];
    if let (Some(b), Some(u)) = (base_pdb, upd_pdb) {
        args.extend([
            "--baseline-pdb".into(),
            s(&b),
            "--updated-pdb".into(),
            s(&u),
        ]);
    }
    for (object, reason) in allow {
        args.extend([
            "--allow".into(),
            object.clone(),
            "--reason".into(),
            reason.clone(),
        ]);
    }
    args.extend(extra.iter().map(|x| x.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = hotpatch_env(&refs);
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    Ok(out)
}

fn sign(k: &Keys, pkg: &Path) {
    ok(&hotpatch_env(&["sign", "--key", &s(&k.key), &s(pkg)]));
}

/// `replay PKG --trust … --baseline v1 [--updated V] --vectors F EXTRA…`.
fn replay(
    k: &Keys,
    pkg: &Path,
    scenario: &str,
    target: &str,
    updated: Option<&str>,
    vectors: &Path,
    extra: &[&str],
) -> Output {
    let (base, base_pdb) = image(scenario, target, "v1");
    let mut args = vec![
        "replay".to_string(),
        s(pkg),
        "--trust".into(),
        s(&k.trust),
        "--baseline".into(),
        s(&base),
        "--vectors".into(),
        s(vectors),
        "--at".into(),
        AT.into(),
        "--json".into(),
    ];
    if let Some(p) = base_pdb {
        args.extend(["--baseline-pdb".into(), s(&p)]);
    }
    if let Some(v) = updated {
        let (upd, upd_pdb) = image(scenario, target, v);
        args.extend(["--updated".into(), s(&upd)]);
        if let Some(p) = upd_pdb {
            args.extend(["--updated-pdb".into(), s(&p)]);
        }
    }
    args.extend(extra.iter().map(|x| x.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    hotpatch_env(&refs)
}

fn vectors_of(scenario: &str) -> PathBuf {
    root().join("corpus").join(scenario).join("expected.toml")
}

/// One replay's timings, for the README.
struct Timing {
    what: String,
    verify: u64,
    plan: u64,
    apply: u64,
    whole: u64,
}

/// Replays every hotpatchable update of the corpus on one target, with
/// the package applied at `apply_at` (None: the middle), and returns the
/// number replayed.
fn replay_every_update(target: &str) -> usize {
    let k = keys();
    let mut replayed = 0;
    let mut timings: Vec<Timing> = Vec::new();
    for dir in scenarios() {
        let exp = expected(&dir);
        let scenario = dir.file_name().unwrap().to_string_lossy().into_owned();
        for u in &exp.update {
            let want = resolve(&u.sets, u.targets.get(target));
            if !want.hotpatchable || (want.changed.is_empty() && want.added.is_empty()) {
                continue;
            }
            let what = format!("{scenario} {target} {}", u.version);
            let allow: Vec<(String, String)> = want
                .allow
                .iter()
                .map(|a| (a.object.clone(), a.reason.clone()))
                .collect();
            // Functions changed only in their line numbers stay out of a
            // package by default, and then report their old lines: the
            // differential checks compare with the whole update.
            let extra: &[&str] = if want.lines_only.is_empty() {
                &[]
            } else {
                &["--include-lines-only"]
            };
            let pkg = build_with(&k, &scenario, target, &u.version, "2026-02", &allow, extra)
                .unwrap_or_else(|e| panic!("{what}: build failed: {e}"));
            sign(&k, &pkg);
            let n = exp.vector.len();
            // Patched before the first call, in the middle, and after the
            // last: every place a patch can land.
            for at in [0, n / 2, n] {
                let o = replay(
                    &k,
                    &pkg,
                    &scenario,
                    target,
                    Some(&u.version),
                    &vectors_of(&scenario),
                    &["--apply-at", &at.to_string()],
                );
                let r: Value =
                    serde_json::from_str(&ok(&o)).unwrap_or_else(|e| panic!("{what}: {e}"));
                let what = format!("{what} apply-at {at}");
                assert_eq!(r["pass"], true, "{what}: {r:#}");
                assert_eq!(r["mismatches"], 0, "{what}");
                let results = r["results"].as_array().unwrap();
                assert_eq!(results.len(), n, "{what}");
                for (i, x) in results.iter().enumerate() {
                    let phase = if i < at { "baseline" } else { "patched" };
                    assert_eq!(x["phase"], phase, "{what} #{}", i + 1);
                    let key = if i < at { "v1" } else { u.version.as_str() };
                    assert_eq!(x["expect"][0], key, "{what} #{}", i + 1);
                    assert_eq!(x["matches"], true, "{what} #{}", i + 1);
                    if i < at {
                        assert_eq!(x["table"], true, "{what} #{}", i + 1);
                    } else {
                        assert_eq!(x["updated_vm"], x["result"], "{what} #{}", i + 1);
                    }
                }
                let fs = &r["from_start"];
                assert_eq!(fs["compared"], n, "{what}");
                assert_eq!(fs["agree"], n, "{what}");
                // Patched before the first call, it gives the update's
                // answer key exactly.
                assert_eq!(fs["table"], serde_json::json!([n, n]), "{what}");
                let mid = &r["mid_run"];
                assert_eq!(mid["compared"], n - at, "{what}");
                assert_eq!(mid["agree"], n - at, "{what}");
                // The fix is observable: exactly the vectors whose v1 and
                // update results differ change.
                let changes: Vec<u64> = exp
                    .vector
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.expect.get("v1") != v.expect.get(&u.version))
                    .map(|(i, _)| i as u64 + 1)
                    .collect();
                let got: Vec<u64> = r["fix_changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap())
                    .collect();
                assert_eq!(got, changes, "{what}: vectors the fix changes");
                if at == n / 2 {
                    let t = &r["timings"];
                    timings.push(Timing {
                        what: format!("{scenario} {}", u.version),
                        verify: t["verify"].as_u64().unwrap(),
                        plan: t["plan"].as_u64().unwrap(),
                        apply: t["apply"].as_u64().unwrap(),
                        whole: t["whole"].as_u64().unwrap(),
                    });
                }
            }
            replayed += 1;
        }
    }
    for t in &timings {
        eprintln!(
            "replay timing {target} {}: verify {} us, plan {} us, apply {} us, whole {} us",
            t.what, t.verify, t.plan, t.apply, t.whole
        );
    }
    replayed
}

/// A package that leaves out the functions changed only in their line
/// numbers (the default) behaves as the update but for the line numbers
/// those functions report, which stay the baseline's: in `18-line-shift`,
/// exactly the vectors that read back a line a left-out function passed.
#[test]
fn left_out_line_only_functions_report_their_old_lines() {
    let k = keys();
    let scenario = "18-line-shift";
    let exp = expected(&root().join("corpus").join(scenario));
    // cfg_last_line after cfg_set_port and cfg_set_level, cfg_trace_line
    // after cfg_set_level and cfg_set_retries, cfg_last_line after
    // cfg_set_retries (1-based).
    let old_lines = [9u64, 11, 19, 22, 24, 25];
    for target in TARGETS {
        let pkg = build(&k, scenario, target, "v2", "2026-02", &[]).unwrap();
        sign(&k, &pkg);
        let o = replay(
            &k,
            &pkg,
            scenario,
            target,
            Some("v2"),
            &vectors_of(scenario),
            &["--apply-at", "0"],
        );
        let r: Value = serde_json::from_str(&String::from_utf8_lossy(&o.stdout))
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        assert!(!o.status.success(), "{target}: the update differs");
        let disagreements = r["from_start"]["disagreements"].as_array().unwrap();
        let at: Vec<u64> = disagreements
            .iter()
            .map(|d| d[0].as_u64().unwrap())
            .collect();
        assert_eq!(at, old_lines, "{target}: {r:#}");
        for d in disagreements {
            let i = d[0].as_u64().unwrap() as usize - 1;
            let v = &exp.vector[i];
            assert_eq!(
                (
                    d[1]["returned"]["value"].as_i64(),
                    d[2]["returned"]["value"].as_i64()
                ),
                (v.expect.get("v1").copied(), v.expect.get("v2").copied()),
                "{target} #{}",
                i + 1
            );
        }
    }
}

/// How many updates the answer keys call hotpatchable with something to
/// patch on `target`: what [`replay_every_update`] must replay, none
/// skipped.
fn hotpatchable_updates(target: &str) -> usize {
    scenarios()
        .iter()
        .flat_map(|dir| expected(dir).update)
        .filter(|u| {
            let want = resolve(&u.sets, u.targets.get(target));
            want.hotpatchable && !(want.changed.is_empty() && want.added.is_empty())
        })
        .count()
}

#[test]
fn every_hotpatchable_update_replays_on_x86_64_linux() {
    let want = hotpatchable_updates("x86_64-linux");
    assert!(want >= 12, "{want}");
    assert_eq!(replay_every_update("x86_64-linux"), want);
}

#[test]
fn every_hotpatchable_update_replays_on_aarch64_linux() {
    let want = hotpatchable_updates("aarch64-linux");
    assert!(want >= 12, "{want}");
    assert_eq!(replay_every_update("aarch64-linux"), want);
}

#[test]
fn every_hotpatchable_update_replays_on_x86_64_windows() {
    let want = hotpatchable_updates("x86_64-windows");
    assert!(want >= 12, "{want}");
    assert_eq!(replay_every_update("x86_64-windows"), want);
}

/// Includes 07-new-global, whose `pin_check` clang reaches `fail_count`
/// (new) and `logins` (existing) through two ADRPs of one register and one
/// page; the packager once paired them as one and refused the update.
#[test]
fn every_hotpatchable_update_replays_on_aarch64_windows() {
    let want = hotpatchable_updates("aarch64-windows");
    assert!(want >= 12, "{want}");
    assert_eq!(replay_every_update("aarch64-windows"), want);
}

/// Vectors for the cumulative series that tell v1, v2 and v3 apart after
/// three events: log_code(5) reads a never-written slot (v1: 0, fixed in
/// v2 and v3: -1) and log_bytes(2) wraps at 32 bits before v3.
const SERIES_VECTORS: &str = r#"
[[vector]]
call = "log_push"
args = [10, 100]
expect = { v1 = 1, v2 = 1, v3 = 1 }

[[vector]]
call = "log_push"
args = [11, 4294967280]
expect = { v1 = 2, v2 = 2, v3 = 2 }

[[vector]]
call = "log_push"
args = [12, 4294967280]
expect = { v1 = 3, v2 = 3, v3 = 3 }

[[vector]]
call = "log_code"
args = [5]
expect = { v1 = 0, v2 = -1, v3 = -1 }

[[vector]]
call = "log_bytes"
args = [2]
expect = { v1 = 4294967280, v2 = 4294967280, v3 = 8589934576 }

[[vector]]
call = "log_code"
args = [5]
expect = { v1 = 0, v2 = -1, v3 = -1 }

[[vector]]
call = "log_bytes"
args = [2]
expect = { v1 = 4294967280, v2 = 4294967280, v3 = 8589934576 }

[[vector]]
call = "log_code"
args = [5]
expect = { v1 = 0, v2 = -1, v3 = -1 }

[[vector]]
call = "log_bytes"
args = [2]
expect = { v1 = 4294967280, v2 = 4294967280, v3 = 8589934576 }
"#;

/// 13-cumulative-series: v1 runs three calls, v2 lands (log_code fixed),
/// v3 replaces it by re-pointing log_code's redirect at its own body and
/// redirecting log_bytes, and the revert brings v1's behaviour back, all
/// in one VM without reloading.
#[test]
fn cumulative_series_replays_v1_v2_v3_and_reverts_to_v1() {
    let scenario = "13-cumulative-series";
    for target in TARGETS {
        let k = keys();
        let v2 = build(&k, scenario, target, "v2", "2026-02", &[]).unwrap();
        let v3 = build(&k, scenario, target, "v3", "2026-03", &[]).unwrap();
        sign(&k, &v2);
        sign(&k, &v3);
        let vectors = k.dir.path().join("series.toml");
        std::fs::write(&vectors, SERIES_VECTORS).unwrap();
        let o = replay(
            &k,
            &v2,
            scenario,
            target,
            Some("v2"),
            &vectors,
            &[
                "--apply-at",
                "3",
                "--then",
                &s(&v3),
                "--then-at",
                "5",
                "--revert-at",
                "7",
            ],
        );
        let r: Value = serde_json::from_str(&ok(&o)).unwrap();
        assert_eq!(r["pass"], true, "{target}: {r:#}");
        let phases: Vec<(&str, &str, i64)> = r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["phase"].as_str().unwrap(),
                    x["expect"][0].as_str().unwrap(),
                    x["result"]["returned"]["value"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            phases,
            [
                ("baseline", "v1", 1),
                ("baseline", "v1", 2),
                ("baseline", "v1", 3),
                ("patched", "v2", -1),
                ("patched", "v2", 4294967280),
                ("patched-then", "v3", -1),
                ("patched-then", "v3", 8589934576),
                ("reverted", "v1", 0),
                ("reverted", "v1", 4294967280),
            ],
            "{target}"
        );
        let steps = r["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 3, "{target}");
        let first = &steps[0]["applied"]["images"][0];
        let second = &steps[1]["applied"]["images"][0];
        assert_eq!(
            second["replaced"], "corpus-2026-02 (sequence 1)",
            "{target}"
        );
        let body = |img: &Value, name: &str| -> (u64, bool) {
            let f = img["functions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"].as_str().unwrap().starts_with(name))
                .unwrap_or_else(|| panic!("{target}: no {name} in {img:#}"));
            (
                f["body"].as_u64().unwrap(),
                f["repointed"].as_bool().unwrap(),
            )
        };
        let (b2, _) = body(first, "log_code");
        let (b3, repointed) = body(second, "log_code");
        assert!(repointed, "{target}: log_code re-pointed");
        assert_ne!(b2, b3, "{target}");
        assert!(
            !body(second, "log_bytes").1,
            "{target}: log_bytes newly redirected"
        );
        // v2's memory is freed once v3's redirects are in place.
        let v2_regions: Vec<Value> = first["regions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["address"].clone())
            .collect();
        let freed: Vec<Value> = second["freed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["address"].clone())
            .collect();
        assert_eq!(freed.first(), v2_regions.first(), "{target}");
        assert_eq!(steps[2]["what"], "revert");
        assert_eq!(steps[2]["reverted"]["package_id"], "corpus-2026-03");
        // The mid-run differential ran while v2 was applied.
        assert_eq!(r["mid_run"]["compared"], 2, "{target}");
        assert_eq!(r["mid_run"]["agree"], 2, "{target}");
    }
}

/// A refused replay: one line naming the package, the call after which it
/// was refused and why, and that the VM's memory is unchanged.
fn refused(o: &Output, why: &str) -> String {
    let err = fails(o, 1);
    assert!(err.contains(why), "expected {why:?} in: {err}");
    assert!(err.contains("refused after call"), "{err}");
    assert!(err.ends_with("(VM memory unchanged)"), "{err}");
    err
}

/// Re-write a signed package's manifest or payload (the result is unsigned).
fn tamper(
    pkg: &Path,
    out: &Path,
    edit: impl FnOnce(&mut package::Manifest, &mut package::Payload),
) {
    let bytes = std::fs::read(pkg).unwrap();
    let raw = RawPackage::parse(&bytes).unwrap();
    let mut p = raw.decode().unwrap();
    edit(&mut p.manifest, &mut p.payload);
    std::fs::write(out, package::write(&p.manifest, &p.payload).unwrap()).unwrap();
}

/// The VM's memory digest around an engine apply of `pkg` that must fail.
fn vm_refuses(pkg: &Path, trust: &Path, baseline: &Path, check: &str) {
    let mut vm = Vm::load_file(baseline, &LoadOptions::default()).unwrap();
    let before = vm.memory_digest().unwrap();
    let policy = TrustPolicy::load(trust).unwrap();
    let e = Engine::new()
        .apply(
            &mut vm,
            &std::fs::read(pkg).unwrap(),
            &policy,
            Timestamp::parse(AT).unwrap(),
        )
        .unwrap_err();
    assert_eq!(e.check(), check, "{e}");
    assert_eq!(vm.memory_digest().unwrap(), before, "{e}");
}

#[test]
fn bad_inputs_are_refused_with_one_line_and_vm_memory_unchanged() {
    let scenario = "01-bounds-check";
    let k = keys();
    let d = k.dir.path().to_path_buf();
    let vectors = vectors_of(scenario);
    let pkg = build(&k, scenario, "x86_64-linux", "v2", "2026-02", &[]).unwrap();
    let unsigned = d.join("unsigned.hpk");
    std::fs::copy(&pkg, &unsigned).unwrap();
    sign(&k, &pkg);
    let (base, _) = image(scenario, "x86_64-linux", "v1");

    // Unsigned.
    let o = replay(&k, &unsigned, scenario, "x86_64-linux", None, &vectors, &[]);
    refused(&o, "verify: signatures: the package is unsigned");
    vm_refuses(&unsigned, &k.trust, &base, "verify");

    // Signed by a key the policy does not trust.
    let other = d.join("other.key");
    ok(&hotpatch_env(&["keygen", "-o", &s(&other)]));
    let untrusted = d.join("untrusted.hpk");
    ok(&hotpatch_env(&[
        "sign",
        "--key",
        &s(&other),
        &s(&unsigned),
        "-o",
        &s(&untrusted),
    ]));
    let o = replay(
        &k,
        &untrusted,
        scenario,
        "x86_64-linux",
        None,
        &vectors,
        &[],
    );
    refused(&o, "not in the trust policy");
    vm_refuses(&untrusted, &k.trust, &base, "verify");

    // A wrong baseline: another scenario's v1.so.
    let (other_base, _) = image("13-cumulative-series", "x86_64-linux", "v1");
    let o = replay(
        &k,
        &pkg,
        "13-cumulative-series",
        "x86_64-linux",
        None,
        &vectors_of("13-cumulative-series"),
        &["--apply-at", "0"],
    );
    refused(&o, "is not the package's baseline: its file SHA-256 is");
    vm_refuses(&pkg, &k.trust, &other_base, "wrong-baseline");

    // The other architecture, and the other format.
    let arm = build(&k, scenario, "aarch64-linux", "v2", "2026-02", &[]).unwrap();
    sign(&k, &arm);
    let o = replay(&k, &arm, scenario, "x86_64-linux", None, &vectors, &[]);
    refused(
        &o,
        "image `v1.so`: the package is for aarch64 ELF, the target holds x86_64 ELF",
    );
    vm_refuses(&arm, &k.trust, &base, "wrong-platform");
    let pe = build(&k, scenario, "x86_64-windows", "v2", "2026-02", &[]).unwrap();
    sign(&k, &pe);
    let o = replay(&k, &pe, scenario, "x86_64-linux", None, &vectors, &[]);
    refused(&o, "image `v1.dll` is not loaded in VM");

    // Patch-site bytes that differ from the recorded hash.
    let site = d.join("site.hpk");
    tamper(&pkg, &site, |m, _| {
        m.targets[0].functions[0].redirect.sha256 = Sha256Digest([0x5a; 32]);
    });
    sign(&k, &site);
    let o = replay(&k, &site, scenario, "x86_64-linux", None, &vectors, &[]);
    refused(&o, "bytes the redirect of `hb_echo` overwrites");
    vm_refuses(&site, &k.trust, &base, "bytes-differ");

    // A placement out of range: a body that must reach 8 GiB past the
    // image cannot lie within 2 GiB of it.
    let far = d.join("far.hpk");
    tamper(&pkg, &far, |m, p| {
        let body = m.targets[0].functions[0].body;
        let mut items: Vec<package::Item> = p.items().to_vec();
        let item = &mut items[body.0 as usize];
        let r = item
            .relocations
            .iter_mut()
            .find(|r| matches!(r.target, RelocTarget::BaselineRva(_)))
            .expect("a reference into the baseline");
        if let RelocTarget::BaselineRva(x) = &mut r.target {
            *x += 8 << 30;
        }
        let mut np = package::Payload::new();
        for i in items {
            np.push(i);
        }
        *p = np;
    });
    sign(&k, &far);
    let o = replay(&k, &far, scenario, "x86_64-linux", None, &vectors, &[]);
    refused(
        &o,
        "no placement within branch range: rel32 at function hb_echo",
    );
    vm_refuses(&far, &k.trust, &base, "placement");

    // A repeated and a rolled-back sequence: the same package again, and
    // an older one after a newer one.
    let o = replay(
        &k,
        &pkg,
        scenario,
        "x86_64-linux",
        None,
        &vectors,
        &["--then", &s(&pkg)],
    );
    refused(&o, "sequence 1, not newer than sequence 1 already applied");
    let newer = build(&k, scenario, "x86_64-linux", "v2", "2026-03", &[]).unwrap();
    sign(&k, &newer);
    let o = replay(
        &k,
        &newer,
        scenario,
        "x86_64-linux",
        None,
        &vectors,
        &["--then", &s(&pkg)],
    );
    refused(&o, "sequence 1, not newer than sequence 2 already applied");
    // The same in a VM: the second apply leaves memory as the first left it.
    let mut vm = Vm::load_file(&base, &LoadOptions::default()).unwrap();
    let policy = TrustPolicy::load(&k.trust).unwrap();
    let at = Timestamp::parse(AT).unwrap();
    Engine::new()
        .apply(&mut vm, &std::fs::read(&newer).unwrap(), &policy, at)
        .unwrap();
    let before = vm.memory_digest().unwrap();
    for p in [&newer, &pkg] {
        let e = Engine::new()
            .apply(&mut vm, &std::fs::read(p).unwrap(), &policy, at)
            .unwrap_err();
        assert_eq!(e.check(), "rollback", "{e}");
        assert_eq!(vm.memory_digest().unwrap(), before);
    }
}

/// A fault after every step of apply (fresh and replacing) and revert
/// leaves the VM's memory as it was, and the VM still runs the code it ran
/// before; on all four targets.
#[test]
fn a_fault_after_any_step_leaves_the_vm_unchanged() {
    let scenario = "13-cumulative-series";
    for target in TARGETS {
        let k = keys();
        let v2 = build(&k, scenario, target, "v2", "2026-02", &[]).unwrap();
        let v3 = build(&k, scenario, target, "v3", "2026-03", &[]).unwrap();
        sign(&k, &v2);
        sign(&k, &v3);
        let (v2, v3) = (std::fs::read(v2).unwrap(), std::fs::read(v3).unwrap());
        let policy = TrustPolicy::load(&k.trust).unwrap();
        let at = Timestamp::parse(AT).unwrap();
        let (base, _) = image(scenario, target, "v1");
        let load = || {
            let mut vm = Vm::load_file(&base, &LoadOptions::default()).unwrap();
            for (a, b) in [(10, 100), (11, 4294967280), (12, 4294967280)] {
                vm.call("log_push", &[Arg::Int(a), Arg::Int(b)], 1_000_000)
                    .unwrap();
            }
            vm
        };
        let probe = |vm: &mut Vm| -> (i64, i64) {
            (
                vm.call("log_code", &[Arg::Int(5)], 1_000_000)
                    .unwrap()
                    .value,
                vm.call("log_bytes", &[Arg::Int(2)], 1_000_000)
                    .unwrap()
                    .value,
            )
        };
        let steps = |n: usize| {
            let mut v = vec![
                Step::Verified,
                Step::Checked,
                Step::Allocated,
                Step::Protected,
                Step::Linked,
                Step::Written,
                Step::Recorded,
            ];
            v.extend((1..=n).map(Step::Redirected));
            v.push(Step::Restored);
            v
        };
        // Fresh apply of v2 (one function).
        for step in steps(1) {
            let mut vm = load();
            let before = vm.memory_digest().unwrap();
            let mut engine = Engine::new();
            engine.inject_fault(step);
            let e = engine.apply(&mut vm, &v2, &policy, at).unwrap_err();
            assert_eq!(e.check(), "injected-fault");
            assert_eq!(
                vm.memory_digest().unwrap(),
                before,
                "{target}: after {step}"
            );
            assert_eq!(probe(&mut vm), (0, 4294967280), "{target}: after {step}");
        }
        // v3 replacing v2 (two functions).
        for step in steps(2) {
            let mut vm = load();
            Engine::new().apply(&mut vm, &v2, &policy, at).unwrap();
            let before = vm.memory_digest().unwrap();
            let mut engine = Engine::new();
            engine.inject_fault(step);
            engine.apply(&mut vm, &v3, &policy, at).unwrap_err();
            assert_eq!(
                vm.memory_digest().unwrap(),
                before,
                "{target}: after {step}"
            );
            assert_eq!(probe(&mut vm), (-1, 4294967280), "{target}: after {step}");
        }
        // Revert of v3.
        for step in [
            Step::Forgotten,
            Step::Unredirected(1),
            Step::Unredirected(2),
        ] {
            let mut vm = load();
            Engine::new().apply(&mut vm, &v3, &policy, at).unwrap();
            let before = vm.memory_digest().unwrap();
            let mut engine = Engine::new();
            engine.inject_fault(step);
            engine.revert(&mut vm, vm_name(&base)).unwrap_err();
            assert_eq!(
                vm.memory_digest().unwrap(),
                before,
                "{target}: after {step}"
            );
            assert_eq!(probe(&mut vm), (-1, 8589934576), "{target}: after {step}");
            // And a revert that completes restores the baseline's memory.
            engine.revert(&mut vm, vm_name(&base)).unwrap();
            assert_eq!(probe(&mut vm), (0, 4294967280), "{target}");
        }
    }
}

fn vm_name(p: &Path) -> &str {
    p.file_name().unwrap().to_str().unwrap()
}

/// Bad vectors and bad step positions: one line naming the file and what
/// is wrong, before anything runs.
#[test]
fn bad_vectors_and_positions_are_refused_before_anything_runs() {
    let k = keys();
    let d = k.dir.path();
    let pkg = build(&k, "01-bounds-check", "x86_64-linux", "v2", "2026-02", &[]).unwrap();
    sign(&k, &pkg);
    for (text, want) in [
        ("x = ", "invalid vectors file"),
        ("", "no [[vector]] entries"),
        (
            "[[vector]]\ncall = \"hb_echo\"\nargs = [{ hex = \"zz\" }]\n",
            "vector 1: argument { hex = \"zz\" }: expected an even number of hex digits",
        ),
        (
            "[[vector]]\ncall = \"nope\"\nargs = [1]\n",
            "vector 1 calls `nope`, which",
        ),
        (
            "[[vector]]\ncall = \"hb_echo\"\nargs = [1, 2, 3, 4, 5]\n",
            "has 5 arguments; at most 4",
        ),
        (
            "[[vector]]\ncall = \"hb_echo\"\nargs = [1]\nresult = 3\n",
            "invalid vectors file",
        ),
    ] {
        let f = d.join("v.toml");
        std::fs::write(&f, text).unwrap();
        let o = replay(&k, &pkg, "01-bounds-check", "x86_64-linux", None, &f, &[]);
        let err = fails(&o, 1);
        assert!(err.contains(want), "{text:?}: {err}");
        assert!(err.contains("v.toml"), "{err}");
        assert!(o.stdout.is_empty());
    }
    let vectors = vectors_of("01-bounds-check");
    for (args, want) in [
        (
            vec!["--apply-at", "10"],
            "--apply-at 10: there are only 9 vectors",
        ),
        (
            vec!["--apply-at", "5", "--then", "x.hpk", "--then-at", "4"],
            "--then-at must not be before --apply-at",
        ),
        (
            vec!["--apply-at", "5", "--revert-at", "2"],
            "--revert-at must not be before",
        ),
    ] {
        let o = replay(
            &k,
            &pkg,
            "01-bounds-check",
            "x86_64-linux",
            None,
            &vectors,
            &args,
        );
        let err = String::from_utf8(o.stderr.clone()).unwrap();
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{err}");
    }
}

/// Pointers in the copied state (16-struct-unchanged-users keeps
/// `ports[]`, pointers into its `arena`) are translated into the updated
/// image, which its VM holds at another base: after the patch lands the
/// updated VM follows them to the right counters.
#[test]
fn the_mid_run_state_copy_translates_pointers() {
    let scenario = "16-struct-unchanged-users";
    let vectors = r#"
[[vector]]
call = "stats_open"
expect = { v1 = 0, v2 = 0 }

[[vector]]
call = "stats_count"
args = [0, 100]
expect = { v1 = 1, v2 = 1 }

[[vector]]
call = "stats_count"
args = [0, 5]
expect = { v1 = 2, v2 = 2 }

[[vector]]
call = "stats_bytes"
args = [0]
expect = { v1 = 105, v2 = 105 }

[[vector]]
call = "stats_open"
expect = { v1 = 1, v2 = 1 }

[[vector]]
call = "stats_count"
args = [1, 7]
expect = { v1 = 1, v2 = 1 }

[[vector]]
call = "stats_bytes"
args = [1]
expect = { v1 = 7, v2 = 7 }
"#;
    for target in TARGETS {
        let k = keys();
        let pkg = build(&k, scenario, target, "v2", "2026-02", &[]).unwrap();
        sign(&k, &pkg);
        let f = k.dir.path().join("ports.toml");
        std::fs::write(&f, vectors).unwrap();
        let o = replay(
            &k,
            &pkg,
            scenario,
            target,
            Some("v2"),
            &f,
            &["--apply-at", "2"],
        );
        let r: Value = serde_json::from_str(&ok(&o)).unwrap();
        assert_eq!(r["pass"], true, "{target}: {r:#}");
        let mid = &r["mid_run"];
        assert_eq!(mid["state"]["pointers"], 1, "{target}: {mid:#}");
        assert_eq!(mid["state"]["notes"], serde_json::json!([]), "{target}");
        assert_eq!(
            (&mid["compared"], &mid["agree"]),
            (&Value::from(5), &Value::from(5))
        );
    }
}

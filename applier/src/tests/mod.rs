//! The engine against real corpus images and real packages, in a sparse
//! in-memory target.

mod fixture;
mod memory;

use hotpatch_builder::diff::{compare, Options as DiffOptions};
use hotpatch_formats::package::{self, RedirectScheme};
use hotpatch_signer::VerifyError;

use crate::engine::{Engine, Step};
use crate::error::ApplyError;
use crate::jump;
use crate::target::{Protection, ThreadPc};
use fixture::*;
use memory::MemTarget;

/// The jump a redirect site holds, followed through a veneer.
fn destination(mem: &MemTarget, scheme: RedirectScheme, site: u64, entry: u64) -> u64 {
    let len = match scheme {
        RedirectScheme::X64PaddingShortJump => 7,
        RedirectScheme::X64NearJump => 5,
        RedirectScheme::A64Branch => 4,
    };
    let to = jump::decode_redirect(scheme, entry, &mem.bytes(site, len))
        .unwrap_or_else(|| panic!("no redirect at {site:#x}"));
    jump::decode_veneer(&mem.bytes(to, 16)).unwrap_or(to)
}

/// Every hotpatchable corpus update on all four targets: applied to the
/// baseline mapped at a base it does not prefer, every redirect reaches its
/// body, every packaged function read back from memory normalises exactly
/// as the update's, protections are as placed, and revert leaves memory,
/// allocations and state byte-identical to before (but for the record of
/// the highest sequence).
#[test]
fn every_corpus_update_applies_renormalises_and_reverts() {
    let mut applied_count = 0;
    let mut functions = 0;
    let mut schemes = std::collections::BTreeSet::new();
    for (scenario, target, version) in updates() {
        let bf = file(&scenario, &target, "v1");
        let uf = file(&scenario, &target, &version);
        let (base_img, upd_img) = (bf.image(), uf.image());
        let Some((t, payload)) = assemble_update(&base_img, &upd_img, &bf.name) else {
            continue;
        };
        let id = format!("{scenario}-{target}-{version}");
        let m = manifest(&id, 1, t.clone());
        let pkg = signed(&m, &payload);
        let mut mem = target_with(&bf);
        let before = mem.snapshot();
        let applied = Engine::new()
            .apply(&mut mem, &pkg, &policy(), now())
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert!(!mem.is_stopped());
        let record = fixture::applied(&mut mem, &bf.name).unwrap();
        assert_eq!(applied.images[0].functions.len(), t.functions.len(), "{id}");
        for f in &t.functions {
            let entry = BASE + f.rva;
            let body = record
                .items
                .iter()
                .find(|i| i.item == f.body.0)
                .unwrap()
                .address;
            assert_eq!(
                destination(&mem, f.redirect.scheme, BASE + f.redirect.rva, entry),
                body,
                "{id}: {}",
                f.name
            );
            assert_eq!(mem.protection_at(body), Some(Protection::CODE), "{id}");
            schemes.insert(format!("{:?}", f.redirect.scheme));
        }
        for i in &record.items {
            assert_eq!(
                mem.protection_at(i.address),
                Some(i.protection.protection()),
                "{id}: {}",
                i.what
            );
        }
        let cmp = compare(&base_img, &upd_img, &DiffOptions::default()).unwrap();
        functions +=
            renormalise(&mem, &cmp, &payload, &record).unwrap_or_else(|e| panic!("{id}: {e}"));
        let reverted = Engine::new().revert(&mut mem, &bf.name).unwrap();
        assert_eq!(reverted.restored.len(), t.functions.len());
        let after = mem.snapshot();
        assert_eq!(after.pages, before.pages, "{id}: memory after revert");
        assert_eq!(after.allocations, before.allocations, "{id}");
        let rec = crate::state::StateRecord::from_bytes(&after.states[&bf.name]).unwrap();
        assert_eq!((rec.highest_sequence, rec.applied), (1, None));
        applied_count += 1;
    }
    assert!(applied_count >= 40, "{applied_count} updates applied");
    assert!(functions >= 60, "{functions} functions checked");
    assert_eq!(
        schemes.into_iter().collect::<Vec<_>>(),
        ["A64Branch", "X64NearJump", "X64PaddingShortJump"]
    );
}

/// One package for the tests below: `scenario` v1 → `version` on `target`.
struct Case {
    base: File,
    pkg: Vec<u8>,
    manifest: package::Manifest,
    payload: package::Payload,
}

fn case(scenario: &str, target: &str, version: &str, seq: u32) -> Case {
    let base = file(scenario, target, "v1");
    let upd = file(scenario, target, version);
    let (t, payload) = assemble_update(&base.image(), &upd.image(), &base.name).unwrap();
    let m = manifest(&format!("{scenario}-{version}-s{seq}"), seq, t);
    let pkg = signed(&m, &payload);
    Case {
        base,
        pkg,
        manifest: m,
        payload,
    }
}

fn refused(mem: &mut MemTarget, pkg: &[u8]) -> ApplyError {
    let before = mem.snapshot();
    let e = Engine::new()
        .apply(mem, pkg, &policy(), now())
        .expect_err("applied");
    assert_eq!(
        mem.snapshot(),
        before,
        "memory changed by a refused package: {e}"
    );
    assert!(!e.to_string().contains('\n'), "{e}");
    e
}

#[test]
fn repeat_and_rollback_are_refused_with_memory_unchanged() {
    for target in TARGETS {
        let v2 = case("13-cumulative-series", target, "v2", 1);
        let v3 = case("13-cumulative-series", target, "v3", 2);
        let mut mem = target_with(&v2.base);
        Engine::new()
            .apply(&mut mem, &v3.pkg, &policy(), now())
            .unwrap();
        // The same package again, and an older one.
        let e = refused(&mut mem, &v3.pkg);
        assert_eq!(e.check(), "rollback", "{e}");
        assert!(
            e.to_string()
                .contains("sequence 2, not newer than sequence 2"),
            "{e}"
        );
        let e = refused(&mut mem, &v2.pkg);
        assert!(
            e.to_string()
                .contains("sequence 1, not newer than sequence 2"),
            "{e}"
        );
        // After a revert too: the record keeps the highest sequence.
        Engine::new().revert(&mut mem, &v2.base.name).unwrap();
        assert_eq!(refused(&mut mem, &v3.pkg).check(), "rollback");
        assert_eq!(refused(&mut mem, &v2.pkg).check(), "rollback");
    }
}

/// v1 → v2 → v3 by re-pointing: log_code's redirect moves to v3's body
/// (not to v2's body, no jump to a jump), log_bytes is redirected, v2's
/// block is freed; revert restores v1's bytes exactly.
#[test]
fn cumulative_series_repoints_and_reverts_to_the_baseline() {
    for target in TARGETS {
        let v2 = case("13-cumulative-series", target, "v2", 1);
        let v3 = case("13-cumulative-series", target, "v3", 2);
        let mut mem = target_with(&v2.base);
        let before = mem.snapshot();
        let name = v2.base.name.clone();
        Engine::new()
            .apply(&mut mem, &v2.pkg, &policy(), now())
            .unwrap();
        let r2 = fixture::applied(&mut mem, &name).unwrap();
        let a = Engine::new()
            .apply(&mut mem, &v3.pkg, &policy(), now())
            .unwrap();
        let r3 = fixture::applied(&mut mem, &name).unwrap();
        let img = &a.images[0];
        assert_eq!(
            img.replaced.as_deref(),
            Some("13-cumulative-series-v2-s1 (sequence 1)")
        );
        let names: Vec<(&str, bool)> = img
            .functions
            .iter()
            .map(|f| (f.name.as_str(), f.repointed))
            .collect();
        assert!(names.contains(&("log_code", true)), "{target}: {names:?}");
        assert!(
            names.iter().any(|(n, r)| n.starts_with("log_bytes") && !r),
            "{target}: {names:?}"
        );
        assert_eq!(img.freed, r2.regions);
        for f in &v3.manifest.targets[0].functions {
            let body = r3
                .items
                .iter()
                .find(|i| i.item == f.body.0)
                .unwrap()
                .address;
            assert_eq!(
                destination(&mem, f.redirect.scheme, BASE + f.redirect.rva, BASE + f.rva),
                body
            );
        }
        // v2's memory is gone.
        for r in &r2.regions {
            assert!(mem.protection_at(r.address).is_none());
        }
        // Every original byte recorded is v1's.
        for r in &r3.redirects {
            assert_eq!(
                r.original.0,
                before_bytes(&before, r.address, r.original.0.len())
            );
        }
        Engine::new().revert(&mut mem, &name).unwrap();
        let after = mem.snapshot();
        assert_eq!(after.pages, before.pages, "{target}");
        assert_eq!(after.allocations, before.allocations, "{target}");
    }
}

fn before_bytes(s: &memory::Snapshot, address: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let a = address + i;
            s.pages[&(a & !0xfff)].bytes[(a & 0xfff) as usize]
        })
        .collect()
}

/// A newer package that no longer patches a function restores it: v3's
/// content as sequence 1, then v2's (log_code only) as sequence 2.
#[test]
fn a_newer_package_restores_functions_it_no_longer_patches() {
    for target in TARGETS {
        let v3 = case("13-cumulative-series", target, "v3", 1);
        let v2 = case("13-cumulative-series", target, "v2", 2);
        let mut mem = target_with(&v3.base);
        let before = mem.snapshot();
        let name = v3.base.name.clone();
        Engine::new()
            .apply(&mut mem, &v3.pkg, &policy(), now())
            .unwrap();
        let a = Engine::new()
            .apply(&mut mem, &v2.pkg, &policy(), now())
            .unwrap();
        let restored: Vec<&str> = a.images[0]
            .restored
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(restored.len(), 1, "{target}: {restored:?}");
        assert!(
            restored[0].starts_with("log_bytes"),
            "{target}: {restored:?}"
        );
        let log_bytes = v3.manifest.targets[0]
            .functions
            .iter()
            .find(|f| f.name.starts_with("log_bytes"))
            .unwrap();
        let (site, len) = (
            BASE + log_bytes.redirect.rva,
            log_bytes.redirect.size as usize,
        );
        assert_eq!(mem.bytes(site, len), before_bytes(&before, site, len));
        Engine::new().revert(&mut mem, &name).unwrap();
        assert_eq!(mem.snapshot().pages, before.pages);
    }
}

#[test]
fn wrong_baseline_is_refused_with_memory_unchanged() {
    let c = case("01-bounds-check", "x86_64-linux", "v2", 1);
    // Another build under the baseline's name.
    let other = file("01-bounds-check", "x86_64-linux", "v2");
    let mut mem = MemTarget::new();
    mem.load(&c.base.name, &other.image(), BASE);
    let e = refused(&mut mem, &c.pkg);
    assert_eq!(e.check(), "wrong-baseline", "{e}");
    assert!(
        e.to_string()
            .starts_with("memory: image `v1.so` (loaded as v1.so) is not the package's baseline"),
        "{e}"
    );
}

#[test]
fn patch_site_bytes_that_differ_are_refused_with_memory_unchanged() {
    for target in TARGETS {
        let c = case("01-bounds-check", target, "v2", 1);
        let f = &c.manifest.targets[0].functions[0];
        let mut mem = target_with(&c.base);
        let site = BASE + f.redirect.rva + f.redirect.size - 1;
        let b = mem.bytes(site, 1)[0];
        mem.poke(site, &[b ^ 0xff]);
        let e = refused(&mut mem, &c.pkg);
        assert_eq!(e.check(), "bytes-differ", "{e}");
        assert!(
            e.to_string()
                .contains(&format!("bytes the redirect of `{}` overwrites", f.name)),
            "{e}"
        );
    }
}

#[test]
fn delta_reference_bytes_that_differ_are_refused_with_memory_unchanged() {
    let c = case("01-bounds-check", "aarch64-linux", "v2", 1);
    let f = &c.manifest.targets[0].functions[0];
    let reference = c.payload.get(f.body).unwrap().reference().copied().unwrap();
    let mut mem = target_with(&c.base);
    // A byte past the redirect, inside the old body the delta refers to.
    let at = BASE + reference.rva + reference.size - 4;
    let b = mem.bytes(at, 1)[0];
    mem.poke(at, &[b ^ 1]);
    let e = refused(&mut mem, &c.pkg);
    assert_eq!(e.check(), "bytes-differ", "{e}");
    assert!(e.to_string().contains("is encoded against"), "{e}");
}

#[test]
fn a_package_for_another_platform_is_refused_with_memory_unchanged() {
    let c = case("01-bounds-check", "aarch64-linux", "v2", 1);
    let x64 = file("01-bounds-check", "x86_64-linux", "v1");
    let mut mem = MemTarget::new();
    mem.load(&c.base.name, &x64.image(), BASE);
    let e = refused(&mut mem, &c.pkg);
    assert_eq!(
        e.to_string(),
        "memory: image `v1.so`: the package is for aarch64 ELF, the target holds x86_64 ELF"
    );
    let pe = case("01-bounds-check", "x86_64-windows", "v2", 1);
    let mut mem = MemTarget::new();
    mem.load(&pe.base.name, &x64.image(), BASE);
    let e = refused(&mut mem, &pe.pkg);
    assert_eq!(
        e.to_string(),
        "memory: image `v1.dll`: the package is for x86_64 PE, the target holds x86_64 ELF"
    );
}

#[test]
fn unsigned_and_untrusted_packages_are_refused_with_memory_unchanged() {
    let c = case("01-bounds-check", "x86_64-windows", "v2", 1);
    let unsigned = package::write(&c.manifest, &c.payload).unwrap();
    let mut mem = target_with(&c.base);
    let e = refused(&mut mem, &unsigned);
    assert!(
        matches!(e, ApplyError::Verify(VerifyError::Unsigned)),
        "{e}"
    );
    let untrusted = hotpatch_signer::sign(&unsigned, &other_key()).unwrap();
    let e = refused(&mut mem, &untrusted);
    assert!(
        matches!(e, ApplyError::Verify(VerifyError::Threshold { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("not in the trust policy"), "{e}");
}

#[test]
fn a_baseline_package_is_not_applied() {
    let c = case("01-bounds-check", "x86_64-linux", "v2", 1);
    let mut m = c.manifest.clone();
    m.kind = package::PackageKind::Baseline;
    m.sequence = 0;
    m.release = m.baseline_release;
    m.requires_restart = true;
    m.package_id = "baseline".into();
    let mut payload = c.payload.clone();
    let t = &mut m.targets[0];
    t.functions.clear();
    t.added_functions.clear();
    t.data.clear();
    t.image = Some(payload.push(package::Item::raw(1, c.base.bytes.clone(), vec![])));
    // Items no longer named are dropped by rebuilding the payload.
    let mut only = package::Payload::new();
    let img = only.push(payload.get(t.image.unwrap()).unwrap().clone());
    t.image = Some(img);
    let pkg = signed(&m, &only);
    let mut mem = target_with(&c.base);
    assert_eq!(refused(&mut mem, &pkg).check(), "not-a-hotpatch");
}

/// No memory within reach of the image: refused, naming the constraint.
#[test]
fn placement_out_of_range_is_refused_with_memory_unchanged() {
    for target in TARGETS {
        let c = case("01-bounds-check", target, "v2", 1);
        let mut mem = target_with(&c.base);
        mem.allowed = Some(vec![(BASE + (16 << 30), BASE + (17 << 30))]);
        let e = refused(&mut mem, &c.pkg);
        assert_eq!(e.check(), "placement", "{target}: {e}");
        assert!(
            e.to_string().contains("no placement within branch range"),
            "{e}"
        );
    }
}

/// A target that places the block at the top of the address space, where
/// its later items would lie past the end: refused as a placement, the
/// block freed and memory unchanged (nothing written at wrapped addresses).
#[test]
fn a_block_placed_past_the_end_of_the_address_space_is_refused() {
    for target in TARGETS {
        let base = file("01-bounds-check", target, "v1");
        let upd = file("01-bounds-check", target, "v2");
        let (mut t, mut payload) =
            assemble_update(&base.image(), &upd.image(), &base.name).unwrap();
        // Two pages of code after the body: the last item starts a page
        // or more into the block.
        add_filler(&mut t, &mut payload, 0x1000);
        add_filler(&mut t, &mut payload, 0x1000);
        t.added_functions.last_mut().unwrap().name = "filler2".into();
        let pkg = signed(&manifest("top-of-memory", 1, t), &payload);
        let mut mem = target_with(&base);
        mem.place_at = Some(0xffff_ffff_ffff_f000);
        let e = refused(&mut mem, &pkg);
        assert_eq!(e.check(), "placement", "{target}: {e}");
        assert!(
            e.to_string().contains("past the end of the address space"),
            "{target}: {e}"
        );
    }
}

/// AArch64: with no room within 128 MiB for the bodies but a page for
/// veneers, the redirects go through veneers to bodies placed further away.
#[test]
fn aarch64_redirects_reach_far_bodies_through_veneers() {
    for target in ["aarch64-linux", "aarch64-windows"] {
        let base = file("10-tiny-function", target, "v1");
        let upd = file("10-tiny-function", target, "v2");
        let (mut t, mut payload) =
            assemble_update(&base.image(), &upd.image(), &base.name).unwrap();
        // A block of three pages, so that it cannot use the near hole.
        add_filler(&mut t, &mut payload, 0x2000);
        let m = manifest("tiny-veneer", 1, t.clone());
        let pkg = signed(&m, &payload);
        let mut mem = target_with(&base);
        let before = mem.snapshot();
        let hole = BASE + (64 << 20);
        let far = BASE + (1 << 30);
        mem.allowed = Some(vec![(hole, hole + 0x1000), (far, far + (16 << 20))]);
        let a = Engine::new()
            .apply(&mut mem, &pkg, &policy(), now())
            .unwrap();
        let record = fixture::applied(&mut mem, &base.name).unwrap();
        for (f, r) in t.functions.iter().zip(&a.images[0].functions) {
            let body = record
                .items
                .iter()
                .find(|i| i.item == f.body.0)
                .unwrap()
                .address;
            assert!(body >= far, "{target}: body at {body:#x}");
            assert_eq!(r.veneer, Some(hole), "{target}");
            let b =
                jump::decode_redirect(f.redirect.scheme, BASE + f.rva, &mem.bytes(BASE + f.rva, 4));
            assert_eq!(b, Some(hole));
            assert_eq!(jump::decode_veneer(&mem.bytes(hole, 16)), Some(body));
            assert_eq!(mem.protection_at(hole), Some(Protection::CODE));
        }
        Engine::new().revert(&mut mem, &base.name).unwrap();
        assert_eq!(mem.snapshot().pages, before.pages);
        // Without the hole there is no room for a veneer either.
        let mut mem = target_with(&base);
        mem.allowed = Some(vec![(far, far + (16 << 20))]);
        let e = refused(&mut mem, &pkg);
        assert!(
            e.to_string().contains("no veneer fits") || e.to_string().contains("for veneers"),
            "{e}"
        );
    }
}

/// Bytes of a redirect site that change between the check and the stop
/// (someone else patched them): the stop writes nothing, and the apply
/// is undone, leaving their bytes.
#[test]
fn site_bytes_changed_before_the_stop_refuse_the_apply() {
    let c = case("13-cumulative-series", "x86_64-linux", "v3", 1);
    let fs = &c.manifest.targets[0].functions;
    assert_eq!(fs.len(), 2);
    let site = BASE + fs[1].redirect.rva;
    let mut mem = target_with(&c.base);
    let mut theirs = mem.bytes(site, 1);
    theirs[0] ^= 0xff;
    mem.poke_on_stop = Some((site, theirs.clone()));
    let mut want = mem.clone();
    want.poke(site, &theirs);
    let e = Engine::new()
        .apply(&mut mem, &c.pkg, &policy(), now())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "memory: the {} bytes at {site:#x} changed since they were checked",
            fs[1].redirect.size
        )
    );
    assert!(!mem.is_stopped());
    assert_eq!(mem.snapshot(), want.snapshot());
}

/// A thread inside an entry (past its first byte): the engine retries,
/// then refuses, and frees what it allocated. A thread exactly at the entry
/// has not begun the instruction there and is no obstacle.
#[test]
fn a_thread_inside_a_patch_site_blocks_the_apply() {
    let c = case("01-bounds-check", "x86_64-linux", "v2", 1);
    let f = &c.manifest.targets[0].functions[0];
    let mut mem = target_with(&c.base);
    mem.pcs = vec![ThreadPc {
        tid: 42,
        pc: BASE + f.rva + 1,
    }];
    let mut engine = Engine::with_options(crate::engine::Options {
        busy_retries: 2,
        busy_backoff: std::time::Duration::from_micros(10),
    });
    let before = mem.snapshot();
    let e = engine
        .apply(&mut mem, &c.pkg, &policy(), now())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "memory: thread 42 is at {:#x}, inside the entry of `{}`, after 3 attempts",
            BASE + f.rva + 1,
            f.name
        )
    );
    assert_eq!(mem.stops, 3);
    assert!(!mem.is_stopped());
    assert_eq!(mem.snapshot(), before);
    // Exactly at the entry, it goes through.
    mem.pcs = vec![ThreadPc {
        tid: 42,
        pc: BASE + f.rva,
    }];
    engine.apply(&mut mem, &c.pkg, &policy(), now()).unwrap();
}

#[test]
fn revert_refuses_a_site_someone_else_changed() {
    let c = case("01-bounds-check", "x86_64-windows", "v2", 1);
    let f = &c.manifest.targets[0].functions[0];
    let mut mem = target_with(&c.base);
    Engine::new()
        .apply(&mut mem, &c.pkg, &policy(), now())
        .unwrap();
    mem.poke(BASE + f.redirect.rva, &[0x90]);
    let before = mem.snapshot();
    let e = Engine::new().revert(&mut mem, &c.base.name).unwrap_err();
    assert_eq!(e.check(), "tampered", "{e}");
    assert_eq!(mem.snapshot(), before);
    let mut fresh = target_with(&c.base);
    assert_eq!(
        Engine::new()
            .revert(&mut fresh, &c.base.name)
            .unwrap_err()
            .check(),
        "not-applied"
    );
}

/// The steps an apply of `pkg` passes, in order.
fn apply_steps(redirects: usize) -> Vec<Step> {
    let mut v = vec![
        Step::Verified,
        Step::Checked,
        Step::Allocated,
        Step::Protected,
        Step::Linked,
        Step::Written,
        Step::Recorded,
    ];
    v.extend((1..=redirects).map(Step::Redirected));
    v.push(Step::Restored);
    v
}

/// A fault after any step leaves the target as it was: fresh apply,
/// cumulative replacement and revert, on every target.
#[test]
fn a_fault_after_any_step_leaves_the_target_unchanged() {
    for target in TARGETS {
        let v2 = case("13-cumulative-series", target, "v2", 1);
        let v3 = case("13-cumulative-series", target, "v3", 2);
        let name = v2.base.name.clone();
        let n2 = v2.manifest.targets[0].functions.len();
        let n3 = v3.manifest.targets[0].functions.len();
        // Fresh apply.
        for step in apply_steps(n2) {
            let mut mem = target_with(&v2.base);
            let before = mem.snapshot();
            let mut engine = Engine::new();
            engine.inject_fault(step);
            let e = engine
                .apply(&mut mem, &v2.pkg, &policy(), now())
                .unwrap_err();
            assert_eq!(e.to_string(), format!("injected fault after step `{step}`"));
            assert_eq!(mem.snapshot(), before, "{target}: fault after {step}");
            assert!(!mem.is_stopped());
            // And the package still applies afterwards.
            engine.apply(&mut mem, &v2.pkg, &policy(), now()).unwrap();
        }
        // Replacement of v2 by v3.
        for step in apply_steps(n3) {
            let mut mem = target_with(&v2.base);
            Engine::new()
                .apply(&mut mem, &v2.pkg, &policy(), now())
                .unwrap();
            let before = mem.snapshot();
            let mut engine = Engine::new();
            engine.inject_fault(step);
            engine
                .apply(&mut mem, &v3.pkg, &policy(), now())
                .unwrap_err();
            assert_eq!(
                mem.snapshot(),
                before,
                "{target}: replace, fault after {step}"
            );
            engine.apply(&mut mem, &v3.pkg, &policy(), now()).unwrap();
        }
        // Revert.
        let mut steps = vec![Step::Forgotten];
        steps.extend((1..=n3).map(Step::Unredirected));
        for step in steps {
            let mut mem = target_with(&v2.base);
            Engine::new()
                .apply(&mut mem, &v3.pkg, &policy(), now())
                .unwrap();
            let before = mem.snapshot();
            let mut engine = Engine::new();
            engine.inject_fault(step);
            engine.revert(&mut mem, &name).unwrap_err();
            assert_eq!(
                mem.snapshot(),
                before,
                "{target}: revert, fault after {step}"
            );
            engine.revert(&mut mem, &name).unwrap();
        }
    }
}

/// The report says who signed, what matched, where each function went and
/// how long each phase took.
#[test]
fn the_report_says_what_was_done() {
    let c = case("13-cumulative-series", "x86_64-windows", "v3", 1);
    let mut mem = target_with(&c.base);
    let a = Engine::new()
        .apply(&mut mem, &c.pkg, &policy(), now())
        .unwrap();
    let text = a.to_string();
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "verified: package 13-cumulative-series-v3-s1 (product corpus, release 2025-02, sequence 1) signed by 1 of 1 required key(s): {}",
            &key().key_id().to_string()[..16]
        )
    );
    assert!(
        text.contains("v1.dll at 0x7f3a5c000000 (loaded as v1.dll): baseline identity matched"),
        "{text}"
    );
    assert!(text.contains("redirects written: 2"), "{text}");
    assert!(
        text.lines().last().unwrap().starts_with("timings: verify "),
        "{text}"
    );
    for f in &a.images[0].functions {
        assert!(
            text.contains(&format!(
                "  {}: entry {:#x} -> body {:#x}",
                f.name, f.entry, f.body
            )),
            "{text}"
        );
    }
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["images"][0]["functions"].as_array().unwrap().len(), 2);
    assert!(json["timings"]["verify"].is_u64());
}

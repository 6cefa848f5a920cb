//! The engine: verify → plan → apply, and revert, over any [`Target`].
//!
//! [`Engine::apply`] runs, in this order:
//!
//! 1. **verify** the package with `hotpatch_signer::verify` against a trust
//!    policy (nothing is parsed before the signatures count);
//! 2. **check** each image: the target locates it, its format and
//!    architecture and its file's SHA-256 must be the package's baseline,
//!    the state record must allow the sequence (no rollback, no repeat),
//!    every byte range a redirect overwrites must hash to what the
//!    manifest recorded, and so must the baseline bytes delta bodies decode
//!    against;
//! 3. **plan**: decode the items; place them, one block per image (code,
//!    then read-only data, then writable data, page aligned), allocated
//!    where every relocation and every redirect reaches it (±2 GiB for
//!    rel32, ±128 MiB for AArch64 `B`/`BL`, ±4 GiB for `ADRP`, ...); on
//!    AArch64, redirects that cannot reach their body go through veneers
//!    (`LDR X16, #8; BR X16; .quad body`) placed within reach of the
//!    entries; set the protections (code `r-x`, tables and constants
//!    `r--`, data `rw-`) right away, so that the target's memory calls
//!    follow one another (a live process runs them in one of its threads);
//! 4. **link** every item with `hotpatch_formats::package::link` against
//!    where the image and the block really lie;
//! 5. **write** code and data (a target writes whatever the protection),
//!    then store the state record;
//! 6. **redirect** the entries last, all in one [`Target::patch`] with the
//!    target's threads stopped and none inside the bytes that change (the
//!    patch checks that every range still holds what step 2 read): the new
//!    redirects, and the restores of functions a replaced package patched
//!    and this one does not. Then resume, and free the replaced package's
//!    memory.
//!
//! A failure anywhere before the redirects are all written undoes what was
//! done, in reverse (the previous state record included): the target is
//! left as it was. A newer cumulative
//! package replaces the applied one: each redirect is re-pointed at the new
//! body (never a jump to a jump). [`Engine::revert`] restores every original
//! byte and frees what the package used.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hotpatch_formats::package::digest::HexBytes;
use hotpatch_formats::package::{
    link, Decoder, ItemRef, Manifest, PackageError, PackageKind, Payload, RedirectScheme,
    RelocKind, Sha256Digest, Target as RelocTarget, TargetImage, Timestamp,
};
use hotpatch_formats::Arch;
use hotpatch_signer::{verify, TrustPolicy, Verified};

use crate::error::{ApplyError, Digests};
use crate::jump;
use crate::report::{
    Applied, FunctionReport, ImageReport, RegionReport, RestoredReport, Reverted, Timings,
};
use crate::state::{
    AppliedPackage, PlacedItem, ProtectionName, RedirectRecord, Region, StateRecord, STATE_VERSION,
};
use crate::target::{Located, Patch, Protection, Target, TargetError};

type Result<T, E = ApplyError> = std::result::Result<T, E>;

/// How far from the image a block may lie when nothing else limits it.
const NEAR: i128 = 1 << 31;
/// Where the engine first tries to place a block: this close to the image.
const PREFER_NEAR: i128 = 128 << 20;

/// A point between two steps of [`Engine::apply`] or [`Engine::revert`],
/// where a test can inject a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// The package verified.
    Verified,
    /// Every image located and checked (identity, state, bytes).
    Checked,
    /// Memory allocated for every image (items decoded).
    Allocated,
    /// Protections set.
    Protected,
    /// Every item linked at its address.
    Linked,
    /// Code and data written.
    Written,
    /// The state records stored.
    Recorded,
    /// The n-th redirect (1-based, over all images) written: with a fault
    /// injected here, the stop writes only the first n.
    Redirected(usize),
    /// Functions the replaced package patched and this one does not
    /// restored (also reached when there are none).
    Restored,
    /// Revert: the state record stored.
    Forgotten,
    /// Revert: the n-th function (1-based, newest first) restored: with a
    /// fault injected here, the stop restores only the first n.
    Unredirected(usize),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Verified => f.write_str("verified"),
            Step::Checked => f.write_str("checked"),
            Step::Allocated => f.write_str("allocated"),
            Step::Linked => f.write_str("linked"),
            Step::Written => f.write_str("written"),
            Step::Protected => f.write_str("protected"),
            Step::Redirected(n) => write!(f, "redirected {n}"),
            Step::Restored => f.write_str("restored"),
            Step::Recorded => f.write_str("recorded"),
            Step::Unredirected(n) => write!(f, "unredirected {n}"),
            Step::Forgotten => f.write_str("forgotten"),
        }
    }
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// How many times the engine stops the target again when a thread is
    /// inside bytes it must change, before it gives up.
    pub busy_retries: u32,
    /// The pause before the first retry; it doubles each time.
    pub busy_backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            busy_retries: 5,
            busy_backoff: Duration::from_millis(2),
        }
    }
}

/// The engine. It holds no state of its own between calls: everything it
/// knows about a target is in the target's state records.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    options: Options,
    fault: Option<Step>,
}

/// Where one class of items lies in an image's block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Code,
    ReadOnly,
    ReadWrite,
}

impl Class {
    fn name(self) -> ProtectionName {
        match self {
            Class::Code => ProtectionName::Code,
            Class::ReadOnly => ProtectionName::ReadOnly,
            Class::ReadWrite => ProtectionName::ReadWrite,
        }
    }
}

/// An item being placed.
struct ItemPlan {
    item: u32,
    what: String,
    class: Class,
    /// Whether `class` comes from the manifest (else it follows from the
    /// decoded bytes).
    named: bool,
    align: u64,
    /// The checked baseline bytes a delta body decodes against.
    reference: Option<Vec<u8>>,
    /// The decoded (then linked) bytes.
    bytes: Vec<u8>,
    /// Offset in the block.
    offset: u64,
    /// Address, once the block is allocated.
    address: u64,
}

/// A redirect about to be written.
struct RedirectPlan {
    name: String,
    unit: Option<String>,
    scheme: RedirectScheme,
    entry_rva: u64,
    entry: u64,
    site: u64,
    body_item: u32,
    original: Vec<u8>,
    current: Vec<u8>,
    new: Vec<u8>,
    body: u64,
    veneer: Option<u64>,
    repointed: bool,
}

/// A function of the replaced package to restore.
struct RestorePlan {
    record: RedirectRecord,
}

/// Everything about one image between check and commit.
struct ImagePlan {
    name: String,
    located: Located,
    previous_bytes: Option<Vec<u8>>,
    replacing: Option<AppliedPackage>,
    items: Vec<ItemPlan>,
    /// Offsets of the class regions in the block: (start, end) each.
    regions: Vec<(Class, u64, u64)>,
    size: u64,
    align: u64,
    block: Option<Region>,
    start: u64,
    veneers: Option<(Region, Vec<u8>)>,
    redirects: Vec<RedirectPlan>,
    restores: Vec<RestorePlan>,
}

/// One thing to undo.
enum Undo {
    Free(Region),
    Write { address: u64, bytes: Vec<u8> },
    State { key: String, bytes: Option<Vec<u8>> },
}

/// The undo log of one call, and whether the target is stopped.
struct Journal {
    undo: Vec<Undo>,
    stopped: bool,
}

impl Journal {
    fn new() -> Self {
        Journal {
            undo: Vec::new(),
            stopped: false,
        }
    }

    /// Undo everything, newest first; then resume the target if stopped.
    /// Returns `error`, or [`ApplyError::UndoFailed`] if something could
    /// not be undone.
    fn roll_back(mut self, target: &mut dyn Target, error: ApplyError) -> ApplyError {
        let mut failures = Vec::new();
        while let Some(u) = self.undo.pop() {
            let r = match &u {
                Undo::Free(r) => target.free(r.address, r.size),
                Undo::Write { address, bytes } => target
                    .write(*address, bytes)
                    .and_then(|()| target.flush_code(*address, bytes.len() as u64)),
                Undo::State { key, bytes } => target.store_state(key, bytes.as_deref()),
            };
            if let Err(e) = r {
                failures.push(e.to_string());
            }
        }
        if self.stopped {
            if let Err(e) = target.resume() {
                failures.push(e.to_string());
            }
        }
        if failures.is_empty() {
            error
        } else {
            ApplyError::UndoFailed {
                error: Box::new(error),
                undo: failures.join("; "),
            }
        }
    }
}

/// Bytes no thread may be inside while they change (or are freed).
struct Busy {
    address: u64,
    len: u64,
    /// For the error: what the bytes are.
    what: String,
    /// The entry of a function: a thread exactly at `address` has not
    /// begun the instruction there and runs whatever is written, so only
    /// the bytes after it are busy.
    entry: bool,
}

impl Engine {
    /// An engine with default [`Options`].
    pub fn new() -> Self {
        Engine::default()
    }

    /// An engine with these options.
    pub fn with_options(options: Options) -> Self {
        Engine {
            options,
            fault: None,
        }
    }

    /// Test hook: make the next [`Engine::apply`] or [`Engine::revert`]
    /// fail right after `step`, as a failing target would, so tests can
    /// prove the target is then unchanged (or fully reverted).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn inject_fault(&mut self, after: Step) {
        self.fault = Some(after);
    }

    fn reached(&mut self, step: Step) -> Result<()> {
        if self.fault == Some(step) {
            self.fault = None;
            return Err(ApplyError::InjectedFault {
                step: step.to_string(),
            });
        }
        Ok(())
    }

    /// Verify `package` against `policy` at time `at`, then apply it to
    /// `target`. On error the target is as it was (see [`ApplyError`]).
    pub fn apply(
        &mut self,
        target: &mut dyn Target,
        package: &[u8],
        policy: &TrustPolicy,
        at: Timestamp,
    ) -> Result<Applied> {
        let t0 = Instant::now();
        let verified = verify(package, policy, at)?;
        self.reached(Step::Verified)?;
        let verify_time = t0.elapsed();
        let mut applied = self.apply_verified(target, &verified)?;
        applied.timings.verify = verify_time;
        Ok(applied)
    }

    /// Apply a package [`hotpatch_signer::verify()`] already accepted (for example to several
    /// targets). `timings.verify` of the result is zero.
    pub fn apply_verified(
        &mut self,
        target: &mut dyn Target,
        verified: &Verified,
    ) -> Result<Applied> {
        let manifest = verified.manifest();
        if manifest.kind != PackageKind::Hotpatch {
            return Err(ApplyError::NotAHotpatch {
                package_id: manifest.package_id.clone(),
            });
        }
        let payload = verified.payload();
        let desc = target.describe();
        let t_check = Instant::now();
        let owner = item_owners(manifest, payload, &desc)?;
        let mut plans = Vec::with_capacity(manifest.targets.len());
        for (k, t) in manifest.targets.iter().enumerate() {
            plans.push(check_image(target, &desc, manifest, payload, k, t, &owner)?);
        }
        self.reached(Step::Checked)?;
        let check_time = t_check.elapsed();
        let t_plan = Instant::now();
        let mut journal = Journal::new();
        match self.place_and_link(target, &desc, manifest, payload, &mut plans, &mut journal) {
            Ok(()) => {}
            Err(e) => return Err(journal.roll_back(target, e)),
        }
        let plan_time = t_plan.elapsed();
        let t_apply = Instant::now();
        let mut warnings = Vec::new();
        match self.write_and_redirect(target, &desc, manifest, &mut plans, &mut journal) {
            Ok(()) => {}
            Err(e) => return Err(journal.roll_back(target, e)),
        }
        if journal.stopped {
            if let Err(e) = target.resume() {
                warnings.push(format!("resuming the target: {e}"));
            }
        }
        // Committed: the replaced packages' memory is no longer reached
        // (no thread was inside it when the redirects changed, if the
        // target really unmaps it, and none can enter it since).
        let mut freed = Vec::new();
        for p in &plans {
            let mut f = Vec::new();
            if let Some(old) = &p.replacing {
                for r in &old.regions {
                    match target.free(r.address, r.size) {
                        Ok(()) => f.push(*r),
                        Err(e) => warnings.push(format!(
                            "image {}: the replaced package's region {:#x}+{:#x} was not freed: {e}",
                            p.name, r.address, r.size
                        )),
                    }
                }
            }
            freed.push(f);
        }
        let apply_time = t_apply.elapsed();
        let images = plans
            .iter()
            .zip(freed)
            .map(|(p, freed)| image_report(p, freed))
            .collect();
        Ok(Applied {
            target: desc,
            package_id: manifest.package_id.clone(),
            product: manifest.product.clone(),
            release: manifest.release.to_string(),
            sequence: manifest.sequence,
            signers: verified.signers().iter().map(|k| k.to_string()).collect(),
            threshold: verified.summary().threshold,
            images,
            timings: Timings {
                verify: Duration::ZERO,
                check: check_time,
                plan: plan_time,
                apply: apply_time,
            },
            warnings,
        })
    }

    /// Steps 3 and 4: allocate and link, for every image.
    fn place_and_link(
        &mut self,
        target: &mut dyn Target,
        desc: &str,
        manifest: &Manifest,
        payload: &Payload,
        plans: &mut [ImagePlan],
        journal: &mut Journal,
    ) -> Result<()> {
        let page = target.page_size().max(1);
        for (p, t) in plans.iter_mut().zip(&manifest.targets) {
            decode_items(desc, t, payload, p)?;
        }
        for (p, t) in plans.iter_mut().zip(&manifest.targets) {
            allocate(target, desc, t, payload, p, page, journal)?;
        }
        self.reached(Step::Allocated)?;
        // Protections at once, before anything is written (a target writes
        // whatever the protection): the memory calls of a live process,
        // injected into one of its threads, then follow one another.
        // Allocated memory is readable and writable already.
        for p in plans.iter() {
            for &(class, start, end) in &p.regions {
                if end > start && class != Class::ReadWrite {
                    let len = round_up(end.saturating_sub(start), page);
                    let address = block_address(desc, p, start)?;
                    target.protect(address, len, class.name().protection())?;
                }
            }
            if let Some((r, _)) = &p.veneers {
                target.protect(r.address, r.size, Protection::CODE)?;
            }
        }
        self.reached(Step::Protected)?;
        for (p, t) in plans.iter_mut().zip(&manifest.targets) {
            link_image(desc, t, payload, p)?;
        }
        self.reached(Step::Linked)
    }

    /// Steps 5 and 6, and the state records.
    fn write_and_redirect(
        &mut self,
        target: &mut dyn Target,
        desc: &str,
        manifest: &Manifest,
        plans: &mut [ImagePlan],
        journal: &mut Journal,
    ) -> Result<()> {
        let page = target.page_size().max(1);
        let code_fill = |arch: Arch| match arch {
            Arch::X86_64 => 0xcc,
            Arch::Aarch64 => 0,
        };
        for (p, t) in plans.iter().zip(&manifest.targets) {
            for &(class, start, end) in &p.regions {
                let mut buf = vec![
                    if class == Class::Code {
                        code_fill(t.arch)
                    } else {
                        0
                    };
                    usize_of(end.saturating_sub(start))
                ];
                for it in p.items.iter().filter(|i| i.class == class) {
                    // Every item of the class lies in its region; one that
                    // did not would be skipped, as before.
                    let Some(at) = it.offset.checked_sub(start).map(usize_of) else {
                        continue;
                    };
                    let Some(to) = at.checked_add(it.bytes.len()) else {
                        continue;
                    };
                    if let Some(slot) = buf.get_mut(at..to) {
                        slot.copy_from_slice(&it.bytes);
                    }
                }
                if !buf.is_empty() {
                    let address = block_address(desc, p, start)?;
                    target.write(address, &buf)?;
                    if class == Class::Code {
                        target.flush_code(address, round_up(end.saturating_sub(start), page))?;
                    }
                }
            }
            if let Some((r, bytes)) = &p.veneers {
                target.write(r.address, bytes)?;
                target.flush_code(r.address, r.size)?;
            }
        }
        self.reached(Step::Written)?;
        // The state records, before the stop: a failure from here on
        // restores the previous ones, and the stop holds only the writes.
        for (p, t) in plans.iter().zip(&manifest.targets) {
            let record = new_record(manifest, t, p);
            let key = p.name.clone();
            target.store_state(&key, Some(&record.to_bytes()))?;
            journal.undo.push(Undo::State {
                key,
                bytes: p.previous_bytes.clone(),
            });
        }
        self.reached(Step::Recorded)?;

        // Step 6: threads stopped, none inside what changes.
        let retires = target.retires_freed_code();
        let mut busy: Vec<Busy> = Vec::new();
        for p in plans.iter() {
            for r in &p.redirects {
                busy.push(Busy {
                    address: r.site,
                    len: r.new.len() as u64,
                    what: format!("the entry of `{}`", r.name),
                    entry: true,
                });
            }
            for r in &p.restores {
                busy.push(Busy {
                    address: r.record.address,
                    len: r.record.written.0.len() as u64,
                    what: format!("the entry of `{}`", r.record.name),
                    entry: true,
                });
            }
            // A target that unmaps freed memory must not free code a
            // thread runs in; one that keeps it mapped need not wait.
            if let Some(old) = p.replacing.as_ref().filter(|_| !retires) {
                for r in &old.regions {
                    busy.push(Busy {
                        address: r.address,
                        len: r.size,
                        what: format!("package {}'s code", old.package_id),
                        entry: false,
                    });
                }
            }
        }
        // Every write of the stop, prepared before it: the redirects (in
        // plan order, for fault injection), then the restores.
        let mut patches: Vec<Patch<'_>> = Vec::new();
        for p in plans.iter() {
            for r in &p.redirects {
                patches.push(Patch {
                    address: r.site,
                    old: &r.current,
                    new: &r.new,
                });
            }
        }
        let redirects = patches.len();
        for p in plans.iter() {
            for r in &p.restores {
                patches.push(Patch {
                    address: r.record.address,
                    old: &r.record.written.0,
                    new: &r.record.original.0,
                });
            }
        }
        let (done, batch, undo) = self.prepare_patches(&patches, redirects, Step::Redirected);
        journal.undo.reserve(undo.len());
        self.stop_outside(target, desc, &busy, journal)?;
        patch(target, &batch, undo, journal)?;
        for n in 1..=done {
            self.reached(Step::Redirected(n))?;
        }
        self.reached(Step::Restored)
    }

    /// The patches of a stop, sorted by address, and the undo of each;
    /// with a fault injected after the `k`-th of the first `counted`
    /// (`step(k)`), only the first `k`. Returns how many of the counted
    /// ones are in the batch.
    fn prepare_patches<'a>(
        &self,
        patches: &[Patch<'a>],
        counted: usize,
        step: fn(usize) -> Step,
    ) -> (usize, Vec<Patch<'a>>, Vec<Undo>) {
        let upto = (1..=counted)
            .find(|&k| self.fault == Some(step(k)))
            .unwrap_or(patches.len());
        let mut batch: Vec<Patch<'a>> = patches.get(..upto).unwrap_or(patches).to_vec();
        batch.sort_by_key(|p| p.address);
        let undo = batch
            .iter()
            .map(|p| Undo::Write {
                address: p.address,
                bytes: p.old.to_vec(),
            })
            .collect();
        (upto.min(counted), batch, undo)
    }

    /// Stop the target with no thread inside any of `ranges`, retrying
    /// with backoff.
    fn stop_outside(
        &self,
        target: &mut dyn Target,
        desc: &str,
        ranges: &[Busy],
        journal: &mut Journal,
    ) -> Result<()> {
        let mut pause = self.options.busy_backoff;
        let mut attempts = 0u32;
        // Per thread: how many attempts found it inside, and where last.
        let mut blocking: BTreeMap<u64, (u32, u64, String)> = BTreeMap::new();
        loop {
            attempts = attempts.saturating_add(1);
            let pcs = target.stop()?;
            journal.stopped = true;
            let mut any = false;
            for t in &pcs {
                if let Some(Busy { what, .. }) = ranges.iter().find(|b| {
                    t.pc.checked_sub(b.address).is_some_and(|d| d < b.len)
                        && !(b.entry && t.pc == b.address)
                }) {
                    any = true;
                    let b = blocking.entry(t.tid).or_insert((0, t.pc, String::new()));
                    *b = (b.0.saturating_add(1), t.pc, what.clone());
                }
            }
            if !any {
                return Ok(());
            }
            target.resume()?;
            journal.stopped = false;
            if attempts > self.options.busy_retries {
                // Name the thread that was in the way most often (a thread
                // parked in a loop is there every time).
                let (tid, (_, pc, what)) = blocking
                    .into_iter()
                    .max_by_key(|(tid, (n, _, _))| (*n, std::cmp::Reverse(*tid)))
                    .unwrap_or((0, (0, 0, String::new())));
                return Err(ApplyError::Busy {
                    target: desc.to_string(),
                    tid,
                    pc,
                    what,
                    attempts,
                });
            }
            std::thread::sleep(pause);
            pause = pause.saturating_mul(2);
        }
    }

    /// The state record of `image` in `target`, if there is one.
    pub fn state(&self, target: &mut dyn Target, image: &str) -> Result<Option<StateRecord>> {
        let desc = target.describe();
        load_record(target, &desc, image).map(|(_, r)| r)
    }

    /// Revert the package applied to `image`: restore every original byte
    /// (entry first, on x64 with padding), then free everything it used.
    /// The state record keeps the highest sequence applied, so the package
    /// (or an older one) cannot be applied again.
    pub fn revert(&mut self, target: &mut dyn Target, image: &str) -> Result<Reverted> {
        let t0 = Instant::now();
        let desc = target.describe();
        let (bytes, record) = load_record(target, &desc, image)?;
        let Some(mut record) = record else {
            return Err(ApplyError::NotApplied {
                target: desc,
                image: image.to_string(),
            });
        };
        let Some(app) = record.applied.take() else {
            return Err(ApplyError::NotApplied {
                target: desc,
                image: image.to_string(),
            });
        };
        for r in &app.redirects {
            let mut current = vec![0u8; r.written.0.len()];
            target.read(r.address, &mut current)?;
            if current != r.written.0 {
                return Err(ApplyError::Tampered {
                    target: desc,
                    image: image.to_string(),
                    what: format!("the entry of `{}`", r.name),
                    address: r.address,
                });
            }
        }
        let mut busy: Vec<Busy> = app
            .redirects
            .iter()
            .map(|r| Busy {
                address: r.address,
                len: r.written.0.len() as u64,
                what: format!("the entry of `{}`", r.name),
                entry: true,
            })
            .collect();
        if !target.retires_freed_code() {
            busy.extend(app.regions.iter().map(|r| Busy {
                address: r.address,
                len: r.size,
                what: format!("package {}'s code", app.package_id),
                entry: false,
            }));
        }
        let mut journal = Journal::new();
        let restored: Vec<RestoredReport> = app
            .redirects
            .iter()
            .map(|r| RestoredReport {
                name: r.name.clone(),
                // For the report only; the bytes at `address` (the entry
                // among them) were just read: it cannot saturate.
                entry: r.address.saturating_add(entry_offset(r.scheme)),
            })
            .collect();
        // Newest first, as the fault steps count them.
        let patches: Vec<Patch<'_>> = app
            .redirects
            .iter()
            .rev()
            .map(|r| Patch {
                address: r.address,
                old: &r.written.0,
                new: &r.original.0,
            })
            .collect();
        let result = (|| -> Result<()> {
            // The record first, so that the stop holds only the writes.
            target.store_state(image, Some(&record.to_bytes()))?;
            journal.undo.push(Undo::State {
                key: image.to_string(),
                bytes: bytes.clone(),
            });
            self.reached(Step::Forgotten)?;
            let (done, batch, undo) =
                self.prepare_patches(&patches, patches.len(), Step::Unredirected);
            journal.undo.reserve(undo.len());
            self.stop_outside(target, &desc, &busy, &mut journal)?;
            patch(target, &batch, undo, &mut journal)?;
            for n in 1..=done {
                self.reached(Step::Unredirected(n))?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            return Err(journal.roll_back(target, e));
        }
        let mut warnings = Vec::new();
        if journal.stopped {
            if let Err(e) = target.resume() {
                warnings.push(format!("resuming the target: {e}"));
            }
        }
        let mut freed = Vec::new();
        for r in &app.regions {
            match target.free(r.address, r.size) {
                Ok(()) => freed.push(*r),
                Err(e) => warnings.push(format!(
                    "region {:#x}+{:#x} was not freed: {e}",
                    r.address, r.size
                )),
            }
        }
        Ok(Reverted {
            target: desc,
            image: image.to_string(),
            package_id: app.package_id,
            sequence: app.sequence,
            restored,
            freed,
            took: t0.elapsed(),
            warnings,
        })
    }
}

/// The offset of the entry from the first overwritten byte.
fn entry_offset(scheme: RedirectScheme) -> u64 {
    match scheme {
        RedirectScheme::X64PaddingShortJump => 5,
        RedirectScheme::X64NearJump | RedirectScheme::A64Branch => 0,
    }
}

/// The address of `offset` in the block of `p`: past the end of the
/// address space (a block the target placed too high) is an error.
fn block_address(desc: &str, p: &ImagePlan, offset: u64) -> Result<u64> {
    p.start
        .checked_add(offset)
        .ok_or_else(|| ApplyError::Placement {
            target: desc.to_string(),
            image: p.name.clone(),
            detail: format!(
                "offset {offset:#x} of the block at {:#x} is past the end of the address space",
                p.start
            ),
        })
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to).saturating_mul(to)
}

fn sha(bytes: &[u8]) -> Sha256Digest {
    Sha256Digest::of(bytes)
}

fn load_record(
    target: &mut dyn Target,
    desc: &str,
    image: &str,
) -> Result<(Option<Vec<u8>>, Option<StateRecord>)> {
    let bytes = target.load_state(image)?;
    let record = match &bytes {
        None => None,
        Some(b) => Some(
            StateRecord::from_bytes(b).map_err(|detail| ApplyError::State {
                target: desc.to_string(),
                image: image.to_string(),
                detail,
            })?,
        ),
    };
    Ok((bytes, record))
}

/// Which image each item belongs to: the items its manifest entry names,
/// and every item they reach through relocations. An item two images
/// share cannot be placed near both.
fn item_owners(manifest: &Manifest, payload: &Payload, desc: &str) -> Result<BTreeMap<u32, usize>> {
    let mut owner: BTreeMap<u32, usize> = BTreeMap::new();
    for (k, t) in manifest.targets.iter().enumerate() {
        let mut stack: Vec<u32> = t
            .functions
            .iter()
            .map(|f| f.body.0)
            .chain(t.added_functions.iter().map(|f| f.body.0))
            .chain(t.data.iter().map(|d| d.body.0))
            .collect();
        let mut seen = BTreeSet::new();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            if let Some(prev) = owner.insert(i, k) {
                if prev != k {
                    return Err(ApplyError::Unsupported {
                        target: desc.to_string(),
                        image: t.name.clone(),
                        detail: format!(
                            "item {i} is used by image `{}` too; an item is placed near one image",
                            manifest.targets.get(prev).map_or("?", |t| t.name.as_str())
                        ),
                    });
                }
            }
            if let Some(item) = payload.get(ItemRef(i)) {
                for r in &item.relocations {
                    if let RelocTarget::Item(j) = r.target {
                        stack.push(j.0);
                    }
                }
            }
        }
    }
    Ok(owner)
}

/// Step 2 for one image, and decoding its items.
fn check_image(
    target: &mut dyn Target,
    desc: &str,
    manifest: &Manifest,
    payload: &Payload,
    k: usize,
    t: &TargetImage,
    owner: &BTreeMap<u32, usize>,
) -> Result<ImagePlan> {
    let img = || t.name.clone();
    let located = target.locate(&t.name, &t.baseline)?;
    if (located.format, located.arch) != (t.format, t.arch) {
        return Err(ApplyError::WrongPlatform {
            target: desc.to_string(),
            image: img(),
            want: (t.format, t.arch),
            found: (located.format, located.arch),
        });
    }
    if located.file_sha256 != t.baseline.sha256 {
        return Err(ApplyError::WrongBaseline {
            target: desc.to_string(),
            image: img(),
            how: located.how.clone(),
            digests: Box::new(Digests {
                want: t.baseline.sha256,
                found: located.file_sha256,
            }),
        });
    }
    let base = located.base;
    let (previous_bytes, previous) = load_record(target, desc, &t.name)?;
    let conflict = |detail: String| ApplyError::Conflict {
        target: desc.to_string(),
        image: img(),
        detail,
    };
    let mut replacing = None;
    if let Some(rec) = &previous {
        if rec.baseline_sha256 != t.baseline.sha256 {
            if let Some(app) = &rec.applied {
                return Err(conflict(format!(
                    "package {} is applied against another build (sha256 {}); revert it first",
                    app.package_id, rec.baseline_sha256
                )));
            }
        } else {
            if manifest.sequence <= rec.highest_sequence {
                return Err(ApplyError::Rollback {
                    target: desc.to_string(),
                    image: img(),
                    package_id: manifest.package_id.clone(),
                    sequence: manifest.sequence,
                    applied: rec.highest_sequence,
                    applied_id: rec.highest_package.clone(),
                });
            }
            if let Some(app) = &rec.applied {
                if app.product != manifest.product {
                    return Err(conflict(format!(
                        "package {} of product {} is applied; a package of product {} cannot replace it",
                        app.package_id, app.product, manifest.product
                    )));
                }
                if app.base != base {
                    return Err(conflict(format!(
                        "package {} was applied with the image at {:#x}, it now lies at {base:#x}",
                        app.package_id, app.base
                    )));
                }
                replacing = Some(app.clone());
            }
        }
    }
    let old_sites: BTreeMap<u64, &RedirectRecord> = replacing
        .iter()
        .flat_map(|a| a.redirects.iter().map(|r| (r.address, r)))
        .collect();

    // The redirect sites.
    let mut redirects = Vec::new();
    let mut ranges: Vec<(u64, u64, &str)> = Vec::new();
    for f in &t.functions {
        let r = &f.redirect;
        let site = base
            .checked_add(r.rva)
            .ok_or_else(|| ApplyError::Unsupported {
                target: desc.to_string(),
                image: img(),
                detail: format!("redirect of `{}` at RVA {:#x} overflows", f.name, r.rva),
            })?;
        let entry = base.saturating_add(f.rva);
        let size = r.size;
        ranges.push((site, size, &f.name));
        let mut current = vec![0u8; usize_of(size)];
        target.read(site, &mut current)?;
        let (original, repointed) = match old_sites.get(&site) {
            Some(old) => {
                if old.scheme != r.scheme || old.original.0.len() as u64 != size {
                    return Err(conflict(format!(
                        "the applied package redirects `{}` by {:?}, this one by {:?}",
                        f.name, old.scheme, r.scheme
                    )));
                }
                if current != old.written.0 {
                    return Err(ApplyError::Tampered {
                        target: desc.to_string(),
                        image: img(),
                        what: format!("the entry of `{}`", f.name),
                        address: site,
                    });
                }
                (old.original.0.clone(), true)
            }
            None => (current.clone(), false),
        };
        let found = sha(&original);
        if found != r.sha256 {
            return Err(ApplyError::BytesDiffer {
                target: desc.to_string(),
                image: img(),
                what: format!("bytes the redirect of `{}` overwrites", f.name),
                address: site,
                size,
                digests: Box::new(Digests {
                    want: r.sha256,
                    found,
                }),
            });
        }
        redirects.push(RedirectPlan {
            name: f.name.clone(),
            unit: f.unit.clone(),
            scheme: r.scheme,
            entry_rva: f.rva,
            entry,
            site,
            body_item: f.body.0,
            original,
            current,
            new: Vec::new(),
            body: 0,
            veneer: None,
            repointed,
        });
    }
    // Old redirects overlapping new ones at another address, and new ones
    // overlapping each other, cannot be written one at a time.
    let mut all: Vec<(u64, u64, &str)> = ranges.clone();
    let new_sites: BTreeSet<u64> = ranges.iter().map(|r| r.0).collect();
    for (addr, old) in &old_sites {
        if !new_sites.contains(addr) {
            all.push((*addr, old.written.0.len() as u64, &old.name));
        }
    }
    all.sort();
    for w in all.windows(2) {
        if let [(a, alen, an), (b, _, bn)] = w {
            if a.saturating_add(*alen) > *b {
                return Err(ApplyError::Unsupported {
                    target: desc.to_string(),
                    image: img(),
                    detail: format!("the redirects of `{an}` and `{bn}` overlap"),
                });
            }
        }
    }
    let mut restores = Vec::new();
    for (addr, old) in &old_sites {
        if new_sites.contains(addr) {
            continue;
        }
        let mut current = vec![0u8; old.written.0.len()];
        target.read(*addr, &mut current)?;
        if current != old.written.0 {
            return Err(ApplyError::Tampered {
                target: desc.to_string(),
                image: img(),
                what: format!("the entry of `{}`", old.name),
                address: *addr,
            });
        }
        restores.push(RestorePlan {
            record: (*old).clone(),
        });
    }

    // The items: decoded against the baseline's bytes as they were.
    let named: BTreeMap<u32, (String, Option<Class>)> = t
        .functions
        .iter()
        .map(|f| {
            (
                f.body.0,
                (format!("function {}", f.name), Some(Class::Code)),
            )
        })
        .chain(t.added_functions.iter().map(|f| {
            (
                f.body.0,
                (format!("added function {}", f.name), Some(Class::Code)),
            )
        }))
        .chain(t.data.iter().map(|d| {
            let class = if d.writable {
                Class::ReadWrite
            } else {
                Class::ReadOnly
            };
            (d.body.0, (format!("data {}", d.name), Some(class)))
        }))
        .collect();
    let mut items = Vec::new();
    for (&i, _) in owner.iter().filter(|(_, &o)| o == k) {
        let r = ItemRef(i);
        let Some(item) = payload.get(r) else { continue };
        let reference = match item.reference() {
            None => None,
            Some(reference) => {
                let addr =
                    base.checked_add(reference.rva)
                        .ok_or_else(|| ApplyError::Unsupported {
                            target: desc.to_string(),
                            image: img(),
                            detail: format!("{r}'s reference RVA {:#x} overflows", reference.rva),
                        })?;
                let mut buf = vec![0u8; usize_of(reference.size)];
                target.read(addr, &mut buf)?;
                // The baseline's bytes, as they were before any redirect.
                for old in old_sites.values() {
                    overlay(&mut buf, addr, old.address, &old.original.0);
                }
                let found = sha(&buf);
                if found != reference.sha256 {
                    return Err(ApplyError::BytesDiffer {
                        target: desc.to_string(),
                        image: img(),
                        what: format!("baseline bytes {r} is encoded against"),
                        address: addr,
                        size: reference.size,
                        digests: Box::new(Digests {
                            want: reference.sha256,
                            found,
                        }),
                    });
                }
                Some(buf)
            }
        };
        let (what, class) = named
            .get(&i)
            .cloned()
            .unwrap_or_else(|| (format!("item {i}"), None));
        items.push(ItemPlan {
            item: i,
            what,
            class: class.unwrap_or(Class::Code),
            named: class.is_some(),
            align: u64::from(item.align.max(1)),
            reference,
            bytes: Vec::new(),
            offset: 0,
            address: 0,
        });
    }
    Ok(ImagePlan {
        name: t.name.clone(),
        located,
        previous_bytes,
        replacing,
        items,
        regions: Vec::new(),
        size: 0,
        align: 1,
        block: None,
        start: 0,
        veneers: None,
        redirects,
        restores,
    })
}

/// Decode the items of one image (after their references were checked).
fn decode_items(desc: &str, t: &TargetImage, payload: &Payload, p: &mut ImagePlan) -> Result<()> {
    let references: Vec<Option<Vec<u8>>> =
        p.items.iter_mut().map(|it| it.reference.take()).collect();
    // One decoder for all: a zstd context costs more to set up than a
    // small delta costs to decode.
    let mut decoder = Decoder::new();
    for (it, reference) in p.items.iter_mut().zip(&references) {
        let r = ItemRef(it.item);
        let Some(item) = payload.get(r) else { continue };
        it.bytes = payload
            .contents_with(&mut decoder, r, reference.as_deref())
            .map_err(|error| ApplyError::Package {
                target: desc.to_string(),
                image: t.name.clone(),
                error: Box::new(error),
            })?
            .into_owned();
        if !it.named {
            it.class = unnamed_class(&it.bytes, &item.relocations);
        }
    }
    Ok(())
}

/// Copy the part of `src` (at `src_addr`) that overlaps `buf` (at
/// `buf_addr`) into `buf`.
fn overlay(buf: &mut [u8], buf_addr: u64, src_addr: u64, src: &[u8]) {
    let buf_end = buf_addr.saturating_add(buf.len() as u64);
    let src_end = src_addr.saturating_add(src.len() as u64);
    let lo = buf_addr.max(src_addr);
    let hi = buf_end.min(src_end);
    if lo >= hi {
        return;
    }
    // `lo` is the larger start and `hi` lies above it: nothing saturates.
    let (Ok(b), Ok(s), Ok(n)) = (
        usize::try_from(lo.saturating_sub(buf_addr)),
        usize::try_from(lo.saturating_sub(src_addr)),
        usize::try_from(hi.saturating_sub(lo)),
    ) else {
        return;
    };
    if let (Some(dst), Some(from)) = (
        buf.get_mut(b..b.saturating_add(n)),
        src.get(s..s.saturating_add(n)),
    ) {
        dst.copy_from_slice(from);
    }
}

/// The class of an item the manifest does not name (a jump table, a
/// function's cold part): a table when its bytes are all data relocation
/// fields, otherwise code. Code memory is readable, so a table of plain
/// offsets placed there still works.
fn unnamed_class(bytes: &[u8], relocations: &[hotpatch_formats::package::Relocation]) -> Class {
    let data_kind = |k: RelocKind| {
        matches!(
            k,
            RelocKind::Rel32 | RelocKind::Abs64 | RelocKind::ImageRel32
        )
    };
    let mut covered = 0u64;
    let mut expected = 0u64;
    for r in relocations {
        if !data_kind(r.kind) || r.offset != expected {
            return Class::Code;
        }
        covered = covered.saturating_add(r.kind.width() as u64);
        expected = r.offset.saturating_add(r.kind.width() as u64);
    }
    if !relocations.is_empty() && covered == bytes.len() as u64 {
        Class::ReadOnly
    } else {
        Class::Code
    }
}

/// The reach of a relocation kind: the span of `V - P` it can encode, or
/// `None` when the place does not matter.
fn kind_reach(kind: RelocKind) -> Option<(i128, i128)> {
    Some(match kind {
        RelocKind::Rel32 => (jump::REL32_MIN, jump::REL32_MAX),
        RelocKind::A64Branch26 => (jump::B26_MIN, jump::B26_MAX),
        RelocKind::A64CondBranch19 | RelocKind::A64LdrLiteral19 => (-(1 << 20), (1 << 20) - 4),
        RelocKind::A64TestBranch14 => (-(1 << 15), (1 << 15) - 4),
        RelocKind::A64Adr => (-(1 << 20), (1 << 20) - 1),
        // Pages: keep 4 KiB of margin on both sides of page rounding.
        RelocKind::A64AdrpPage21 => (-(1 << 32) + 0x1000, (1 << 32) - 0x2000),
        _ => return None,
    })
}

/// A range of acceptable block starts and why.
///
/// Bounds are `i128` so that they are exact: every operand is a `u64`
/// address or offset, an `i64` addend or a reach below 2^33, so no sum
/// of a few of them comes near the `i128` limits, and the `saturating_*`
/// on them never act. Whether a bound is a real address is decided in
/// [`Window::starts`].
#[derive(Clone, Debug)]
struct Window {
    lo: i128,
    hi: i128,
    lo_why: String,
    hi_why: String,
}

impl Window {
    fn new(base: u64) -> Self {
        Window {
            lo: i128::from(base).saturating_sub(NEAR),
            hi: i128::from(base).saturating_add(NEAR),
            lo_why: "the block must lie within 2 GiB of the image".into(),
            hi_why: "the block must lie within 2 GiB of the image".into(),
        }
    }

    fn limit(&mut self, lo: i128, hi: i128, why: &dyn Fn() -> String) {
        if lo > self.lo {
            self.lo = lo;
            self.lo_why = why();
        }
        if hi < self.hi {
            self.hi = hi;
            self.hi_why = why();
        }
    }

    /// Page-aligned starts `[lo, hi]` in the address space for a block of
    /// `size` bytes aligned to `align`, or why there are none.
    fn starts(&self, size: u64, align: u64) -> std::result::Result<(u64, u64), String> {
        // `align` is at least 1 (a page, or an item's alignment, each at
        // least 1), and `lo` positive: `div_euclid` is the division.
        let a = i128::from(align);
        let lo = self.lo.max(a);
        let lo = lo
            .saturating_add(a)
            .saturating_sub(1)
            .div_euclid(a)
            .saturating_mul(a);
        let top = i128::from(u64::MAX).saturating_sub(i128::from(size));
        let hi = self.hi.min(top);
        let hi = hi.div_euclid(a).saturating_mul(a);
        if lo > hi {
            return Err(format!(
                "{} (at or above {:#x}), but {} (at or below {:#x})",
                self.lo_why,
                self.lo.max(0),
                self.hi_why,
                self.hi.max(0)
            ));
        }
        Ok((
            u64::try_from(lo).unwrap_or(u64::MAX),
            u64::try_from(hi).unwrap_or(0),
        ))
    }
}

/// Step 3 for one image: lay the items out, find where the block may lie,
/// allocate it, and veneers where redirects need them.
fn allocate(
    target: &mut dyn Target,
    desc: &str,
    t: &TargetImage,
    payload: &Payload,
    p: &mut ImagePlan,
    page: u64,
    journal: &mut Journal,
) -> Result<()> {
    let placement = |detail: String| ApplyError::Placement {
        target: desc.to_string(),
        image: t.name.clone(),
        detail,
    };
    // Layout: code, read-only, writable; each class page aligned.
    let mut at = 0u64;
    let mut align = page;
    p.items.sort_by_key(|i| (i.class, i.item));
    for class in [Class::Code, Class::ReadOnly, Class::ReadWrite] {
        let start = round_up(at, page);
        at = start;
        for it in p.items.iter_mut().filter(|i| i.class == class) {
            align = align.max(it.align);
            at = round_up(at, it.align);
            it.offset = at;
            at = at.saturating_add(it.bytes.len() as u64);
        }
        if at > start {
            p.regions.push((class, start, at));
        }
    }
    p.size = round_up(at, page);
    p.align = align;
    if p.size == 0 && p.redirects.is_empty() {
        return Ok(());
    }
    let base = p.located.base;
    let offset_of: BTreeMap<u32, u64> = p.items.iter().map(|i| (i.item, i.offset)).collect();

    // Hard limits: every relocation into the image.
    let mut hard = Window::new(base);
    for it in &p.items {
        let Some(item) = payload.get(ItemRef(it.item)) else {
            continue;
        };
        for r in &item.relocations {
            let x = match &r.target {
                RelocTarget::BaselineRva(x) => *x,
                RelocTarget::Import { slot_rva, .. } => *slot_rva,
                RelocTarget::Item(_) => continue,
            };
            let Some((klo, khi)) = kind_reach(r.kind) else {
                continue;
            };
            // Exact in i128 (see `Window`).
            let v = i128::from(base)
                .saturating_add(i128::from(x))
                .saturating_add(i128::from(r.addend));
            let off = i128::from(it.offset).saturating_add(i128::from(r.offset));
            let lo = v.saturating_sub(khi).saturating_sub(off);
            let hi = v.saturating_sub(klo).saturating_sub(off);
            hard.limit(lo, hi, &|| {
                format!(
                    "{} at {} +{:#x} must reach the image's {:#x}",
                    r.kind, it.what, r.offset, x
                )
            });
        }
    }
    // Redirects: hard on x86-64, soft on AArch64 (veneers).
    let mut with_redirects = hard.clone();
    for r in &p.redirects {
        let Some(&off) = offset_of.get(&r.body_item) else {
            return Err(placement(format!(
                "the body of `{}` (item {}) is not in the package",
                r.name, r.body_item
            )));
        };
        let (lo, hi) = jump::reach(r.scheme);
        let e = i128::from(r.entry);
        let o = i128::from(off);
        let (lo, hi) = (
            e.saturating_add(lo).saturating_sub(o),
            e.saturating_add(hi).saturating_sub(o),
        );
        with_redirects.limit(lo, hi, &|| {
            format!(
                "the redirect of `{}` ({:?}) must reach its body",
                r.name, r.scheme
            )
        });
    }
    let soft = t.arch == Arch::Aarch64;
    let extra = align.saturating_sub(page);
    let alloc_size = p.size.saturating_add(extra);
    let try_window = |target: &mut dyn Target,
                      w: &Window|
     -> Result<std::result::Result<(Region, u64), String>> {
        let (lo, hi) = match w.starts(p.size, align) {
            Ok(x) => x,
            Err(why) => return Ok(Err(why)),
        };
        let hi_end = hi.saturating_add(p.size);
        match target.allocate(lo, hi_end, alloc_size) {
            Ok(addr) => {
                let start = round_up(addr, align);
                Ok(Ok((
                    Region {
                        address: addr,
                        size: alloc_size,
                    },
                    start,
                )))
            }
            Err(TargetError::NoRoom { .. }) => Ok(Err(format!(
                "no free {alloc_size}-byte range between {lo:#x} and {hi_end:#x}"
            ))),
            Err(e) => Err(e.into()),
        }
    };
    // Near the image first (a target's allocator may give the lowest fit
    // of a wide window), then anywhere in reach; on AArch64, then without
    // the redirects, which veneers bridge.
    let near = |w: &Window| {
        let mut n = w.clone();
        let b = i128::from(base);
        let (lo, hi) = (b.saturating_sub(PREFER_NEAR), b.saturating_add(PREFER_NEAR));
        n.limit(lo, hi, &|| {
            "the block is preferably within 128 MiB of the image".into()
        });
        n
    };
    let mut attempts = vec![near(&with_redirects), with_redirects];
    if soft && !p.redirects.is_empty() {
        attempts.push(near(&hard));
        attempts.push(hard);
    }
    let mut why = String::new();
    let mut found = None;
    for w in &attempts {
        match try_window(target, w)? {
            Ok(x) => {
                found = Some(x);
                break;
            }
            Err(w) => why = w,
        }
    }
    let Some((region, start)) = found else {
        return Err(placement(why));
    };
    journal.undo.push(Undo::Free(region));
    p.block = Some(region);
    p.start = start;
    // The target chose `start`: a block that would run past the end of
    // the address space is refused (its region is freed by the undo).
    for it in &mut p.items {
        it.address = start.checked_add(it.offset).ok_or_else(|| {
            placement(format!(
                "item {} at offset {:#x} of the block at {start:#x} is past the end of the address space",
                it.item, it.offset
            ))
        })?;
    }
    // Bodies and veneers.
    let address_of: BTreeMap<u32, u64> = p.items.iter().map(|i| (i.item, i.address)).collect();
    let mut need: Vec<usize> = Vec::new();
    for (k, r) in p.redirects.iter_mut().enumerate() {
        r.body = address_of.get(&r.body_item).copied().unwrap_or(0);
        if jump::redirect_bytes(r.scheme, r.entry, r.body).is_none() {
            need.push(k);
        }
    }
    if need.is_empty() {
        return Ok(());
    }
    if !soft {
        return Err(placement(format!(
            "the redirect of `{}` cannot reach {:#x}",
            p.redirects
                .get(need.first().copied().unwrap_or(0))
                .map_or("?", |r| r.name.as_str()),
            start
        )));
    }
    let vsize = round_up(jump::VENEER_SIZE.saturating_mul(need.len() as u64), page);
    let mut w = Window::new(base);
    for (j, &k) in need.iter().enumerate() {
        let Some(r) = p.redirects.get(k) else {
            continue;
        };
        let o = i128::from(jump::VENEER_SIZE).saturating_mul(j as i128);
        let e = i128::from(r.entry);
        let (lo, hi) = (
            e.saturating_add(jump::B26_MIN).saturating_sub(o),
            e.saturating_add(jump::B26_MAX).saturating_sub(o),
        );
        w.limit(lo, hi, &|| {
            format!(
                "a veneer for `{}` must lie within 128 MiB of its entry",
                r.name
            )
        });
    }
    let (lo, hi) = w.starts(vsize, page).map_err(|why| {
        placement(format!(
            "the bodies lie at {start:#x}, out of branch range, and no veneer fits: {why}"
        ))
    })?;
    let vaddr = match target.allocate(lo, hi.saturating_add(vsize), vsize) {
        Ok(a) => a,
        Err(TargetError::NoRoom { .. }) => {
            return Err(placement(format!(
                "the bodies lie at {start:#x}, out of branch range, and there is no free {vsize}-byte range for veneers between {lo:#x} and {:#x}",
                hi.saturating_add(vsize)
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let vregion = Region {
        address: vaddr,
        size: vsize,
    };
    journal.undo.push(Undo::Free(vregion));
    let mut bytes = Vec::new();
    for (j, &k) in need.iter().enumerate() {
        if let Some(r) = p.redirects.get_mut(k) {
            let at = vaddr
                .checked_add(jump::VENEER_SIZE.saturating_mul(j as u64))
                .ok_or_else(|| {
                    placement(format!(
                        "veneer {j} of the veneers at {vaddr:#x} is past the end of the address space"
                    ))
                })?;
            r.veneer = Some(at);
            bytes.extend_from_slice(&jump::veneer(r.body));
        }
    }
    p.veneers = Some((vregion, bytes));
    Ok(())
}

/// Step 4 for one image: link every item at its address; compose the
/// redirect bytes.
fn link_image(desc: &str, t: &TargetImage, payload: &Payload, p: &mut ImagePlan) -> Result<()> {
    let base = p.located.base;
    let address_of: BTreeMap<u32, u64> = p.items.iter().map(|i| (i.item, i.address)).collect();
    for it in &mut p.items {
        let Some(item) = payload.get(ItemRef(it.item)) else {
            continue;
        };
        link(
            ItemRef(it.item),
            &mut it.bytes,
            &item.relocations,
            it.address,
            base,
            |target| match target {
                RelocTarget::BaselineRva(x) => base.checked_add(*x),
                RelocTarget::Item(j) => address_of.get(&j.0).copied(),
                RelocTarget::Import { slot_rva, .. } => base.checked_add(*slot_rva),
            },
        )
        .map_err(|error: PackageError| ApplyError::Package {
            target: desc.to_string(),
            image: t.name.clone(),
            error: Box::new(error),
        })?;
    }
    for r in &mut p.redirects {
        let to = r.veneer.unwrap_or(r.body);
        r.new =
            jump::redirect_bytes(r.scheme, r.entry, to).ok_or_else(|| ApplyError::Placement {
                target: desc.to_string(),
                image: t.name.clone(),
                detail: format!("the redirect of `{}` cannot reach {to:#x}", r.name),
            })?;
    }
    Ok(())
}

/// Apply a batch [`Engine::prepare_patches`] made, inside a stop, and
/// journal its undo (unless the target wrote nothing because bytes had
/// changed since they were checked).
fn patch(
    target: &mut dyn Target,
    batch: &[Patch<'_>],
    undo: Vec<Undo>,
    journal: &mut Journal,
) -> Result<()> {
    match target.patch(batch) {
        Ok(()) => {
            journal.undo.extend(undo);
            Ok(())
        }
        Err(e @ TargetError::Changed { .. }) => Err(e.into()),
        Err(e) => {
            journal.undo.extend(undo);
            Err(e.into())
        }
    }
}

fn new_record(manifest: &Manifest, t: &TargetImage, p: &ImagePlan) -> StateRecord {
    let redirects = p
        .redirects
        .iter()
        .map(|r| RedirectRecord {
            name: r.name.clone(),
            unit: r.unit.clone(),
            scheme: r.scheme,
            entry_rva: r.entry_rva,
            address: r.site,
            original: HexBytes(r.original.clone()),
            written: HexBytes(r.new.clone()),
            body: r.body,
            veneer: r.veneer,
        })
        .collect();
    let items = placed_items(p);
    let regions = p
        .block
        .iter()
        .copied()
        .chain(p.veneers.as_ref().map(|(r, _)| *r))
        .collect();
    StateRecord {
        version: STATE_VERSION,
        image: t.name.clone(),
        baseline_sha256: t.baseline.sha256,
        highest_sequence: manifest.sequence,
        highest_package: manifest.package_id.clone(),
        applied: Some(AppliedPackage {
            package_id: manifest.package_id.clone(),
            product: manifest.product.clone(),
            sequence: manifest.sequence,
            base: p.located.base,
            redirects,
            items,
            regions,
        }),
    }
}

fn placed_items(p: &ImagePlan) -> Vec<PlacedItem> {
    let mut v: Vec<PlacedItem> = p
        .items
        .iter()
        .map(|i| PlacedItem {
            item: i.item,
            what: i.what.clone(),
            address: i.address,
            size: i.bytes.len() as u64,
            protection: i.class.name(),
        })
        .collect();
    v.sort_by_key(|i| i.item);
    v
}

fn image_report(p: &ImagePlan, freed: Vec<Region>) -> ImageReport {
    let mut regions: Vec<RegionReport> = p
        .regions
        .iter()
        .map(|&(class, start, end)| RegionReport {
            // Checked when the region was written (`block_address`).
            address: p.start.saturating_add(start),
            size: end.saturating_sub(start),
            protection: class.name(),
        })
        .collect();
    if let Some((r, _)) = &p.veneers {
        regions.push(RegionReport {
            address: r.address,
            size: r.size,
            protection: ProtectionName::Code,
        });
    }
    ImageReport {
        name: p.name.clone(),
        base: p.located.base,
        how: p.located.how.clone(),
        baseline_sha256: p.located.file_sha256.to_string(),
        replaced: p
            .replacing
            .as_ref()
            .map(|a| format!("{} (sequence {})", a.package_id, a.sequence)),
        functions: p
            .redirects
            .iter()
            .map(|r| FunctionReport {
                name: r.name.clone(),
                unit: r.unit.clone(),
                entry: r.entry,
                scheme: r.scheme,
                body: r.body,
                veneer: r.veneer,
                repointed: r.repointed,
            })
            .collect(),
        restored: p
            .restores
            .iter()
            .map(|r| RestoredReport {
                name: r.record.name.clone(),
                // For the report only; the bytes at `address` (the entry
                // among them) were read when checked: it cannot saturate.
                entry: r
                    .record
                    .address
                    .saturating_add(entry_offset(r.record.scheme)),
            })
            .collect(),
        items: placed_items(p),
        regions,
        freed,
    }
}

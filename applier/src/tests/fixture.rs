//! Real packages from the corpus: diff, assemble, write, sign.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hotpatch_builder::assemble::{assemble, AssembleOptions};
use hotpatch_builder::diff::{compare, Comparison, Options};
use hotpatch_builder::norm;
use hotpatch_formats::package::{
    self, AddedFunction, Item, ItemRef, Manifest, PackageKind, Payload, Release, RelocKind,
    TargetImage, Timestamp,
};
use hotpatch_formats::read::{load_file, parse};
use hotpatch_formats::{
    DataObject, Function, Image, Permissions, ReadOptions, RelocTarget, Relocation, Section,
};
use hotpatch_signer::{PrivateKey, TrustPolicy};

use super::memory::{MemTarget, PAGE};
use crate::state::AppliedPackage;
use crate::target::Target;

pub const TARGETS: [&str; 4] = [
    "x86_64-windows",
    "aarch64-windows",
    "x86_64-linux",
    "aarch64-linux",
];

/// A base no image prefers.
pub const BASE: u64 = 0x7f3a_5c00_0000;

pub fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

pub fn image_path(scenario: &str, target: &str, version: &str) -> PathBuf {
    let ext = if target.ends_with("windows") {
        "dll"
    } else {
        "so"
    };
    corpus().join(format!("{scenario}/bin/{target}/{version}.{ext}"))
}

/// An image file's bytes and read options.
pub struct File {
    pub bytes: Vec<u8>,
    pub opts: ReadOptions,
    pub name: String,
}

pub fn file(scenario: &str, target: &str, version: &str) -> File {
    let path = image_path(scenario, target, version);
    let bytes = load_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut opts = ReadOptions::new(&path);
    let pdb = path.with_extension("pdb");
    if pdb.exists() {
        opts = opts.with_pdb(pdb);
    }
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    File { bytes, opts, name }
}

impl File {
    pub fn image(&self) -> Image<'_> {
        parse(&self.bytes, &self.opts).unwrap()
    }
}

pub fn key() -> PrivateKey {
    PrivateKey::from_seed(&[7; 32]).unwrap()
}

pub fn other_key() -> PrivateKey {
    PrivateKey::from_seed(&[8; 32]).unwrap()
}

pub fn policy() -> TrustPolicy {
    TrustPolicy::new(
        "test policy",
        vec![key().public_key().clone()],
        1,
        vec![],
        365,
    )
    .unwrap()
}

/// The verification time.
pub fn now() -> Timestamp {
    Timestamp::parse("2025-03-15T00:00:00Z").unwrap()
}

/// A manifest for `t` with sequence `seq` against the 2025-01 baseline.
pub fn manifest(id: &str, seq: u32, t: TargetImage) -> Manifest {
    Manifest {
        product: "corpus".into(),
        package_id: id.into(),
        kind: PackageKind::Hotpatch,
        release: Release::new(2025, 1 + seq as u8).unwrap(),
        baseline_release: Release::parse("2025-01").unwrap(),
        sequence: seq,
        supersedes: vec![],
        requires_restart: false,
        advisories: vec![],
        created: Timestamp::parse("2025-01-02T00:00:00Z").unwrap(),
        expires: Timestamp::parse("2025-06-01T00:00:00Z").unwrap(),
        overrides: vec![],
        targets: vec![t],
    }
}

/// A package of the update `from` → `to`: its manifest image entry and
/// payload, or `None` when the update is not hotpatchable or the
/// packager refuses it.
pub fn assemble_update(
    base: &Image<'_>,
    upd: &Image<'_>,
    name: &str,
) -> Option<(TargetImage, Payload)> {
    let cmp = compare(base, upd, &Options::default()).unwrap();
    let mut payload = Payload::new();
    let opts = AssembleOptions {
        name: name.into(),
        include_lines_only: false,
    };
    match assemble(&cmp, &opts, &mut payload) {
        Ok(t) => Some((t, payload)),
        Err(_) => None,
    }
}

/// Signed package bytes.
pub fn signed(m: &Manifest, p: &Payload) -> Vec<u8> {
    let bytes = package::write(m, p).unwrap();
    hotpatch_signer::sign(&bytes, &key()).unwrap()
}

/// Every (scenario, target, update version) in the corpus.
pub fn updates() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut scenarios: Vec<_> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.toml").is_file())
        .collect();
    scenarios.sort();
    for s in scenarios {
        let scenario = s.file_name().unwrap().to_string_lossy().into_owned();
        for t in TARGETS {
            for v in ["v2", "v3"] {
                if image_path(&scenario, t, v).exists() {
                    out.push((scenario.clone(), t.to_string(), v.to_string()));
                }
            }
        }
    }
    out
}

/// A memory target holding `f` at [`BASE`].
pub fn target_with(f: &File) -> MemTarget {
    let mut t = MemTarget::new();
    t.load(&f.name, &f.image(), BASE);
    t
}

/// Add an added function of `len` bytes of `ret` (an item nobody calls,
/// to make the block larger than a page).
pub fn add_filler(t: &mut TargetImage, p: &mut Payload, len: usize) {
    let ret: &[u8] = match t.arch {
        hotpatch_formats::Arch::X86_64 => &[0xc3],
        hotpatch_formats::Arch::Aarch64 => &[0xc0, 0x03, 0x5f, 0xd6],
    };
    let bytes: Vec<u8> = ret.iter().copied().cycle().take(len).collect();
    let r = p.push(Item::raw(16, bytes, vec![]));
    t.added_functions.push(AddedFunction {
        name: "filler".into(),
        unit: None,
        body: r,
    });
}

/// The relink check of the builder, run on the target's memory: the
/// baseline as the target holds it, the package's block as placed, the
/// replaced functions' names moved to their new bodies. Every packaged
/// function must normalise exactly as the update's does.
pub fn renormalise(
    mem: &MemTarget,
    cmp: &Comparison<'_, '_>,
    payload: &Payload,
    applied: &AppliedPackage,
) -> Result<usize, String> {
    let base_img = cmp.base.image;
    let upd_img = cmp.upd.image;
    let base = applied.base;
    // Decoded, unlinked items: to find which update part each holds.
    let decoded: BTreeMap<u32, Vec<u8>> = applied
        .items
        .iter()
        .map(|i| {
            let r = ItemRef(i.item);
            let item = payload.get(r).unwrap();
            let reference = item
                .reference()
                .map(|x| base_img.bytes_at(x.rva, x.size).unwrap());
            (i.item, payload.contents(r, reference).unwrap().into_owned())
        })
        .collect();
    let address: BTreeMap<u32, u64> = applied.items.iter().map(|i| (i.item, i.address)).collect();
    // Sections: the baseline's, read back from memory, then the block's
    // pages grouped by protection.
    let mut bufs: Vec<(String, u64, Vec<u8>, Permissions)> = Vec::new();
    for s in &base_img.sections {
        bufs.push((
            s.name.clone(),
            s.rva,
            mem.bytes(base + s.rva, s.data.len()),
            s.perms,
        ));
    }
    for r in &applied.regions {
        let mut p = r.address;
        while p < r.address + r.size {
            let prot = mem.protection_at(p).unwrap();
            let perms = Permissions {
                read: prot.read,
                write: prot.write,
                execute: prot.execute,
            };
            match bufs.last_mut() {
                Some(last)
                    if last.0 == ".hotpatch"
                        && last.3 == perms
                        && last.1 + last.2.len() as u64 == p - base =>
                {
                    last.2.extend(mem.bytes(p, PAGE as usize));
                }
                _ => bufs.push((
                    ".hotpatch".into(),
                    p - base,
                    mem.bytes(p, PAGE as usize),
                    perms,
                )),
            }
            p += PAGE;
        }
    }
    let sections: Vec<Section<'_>> = bufs
        .iter()
        .map(|(name, rva, data, perms)| Section {
            name: name.clone(),
            rva: *rva,
            size: if name == ".hotpatch" {
                data.len() as u64
            } else {
                base_img
                    .sections
                    .iter()
                    .find(|s| s.rva == *rva)
                    .map_or(data.len() as u64, |s| s.size)
            },
            perms: *perms,
            data,
        })
        .collect();
    // Functions: replaced parts out, new bodies in. Those changed only in
    // their line numbers stay the baseline's ([`assemble_update`] leaves
    // them out).
    let mut packaged: Vec<(Option<usize>, usize)> = cmp
        .pairs
        .iter()
        .zip(&cmp.changed)
        .zip(&cmp.lines_only)
        .filter(|((_, c), l)| **c && !**l)
        .map(|((&(b, u), _), _)| (Some(b), u))
        .collect();
    packaged.extend(cmp.added.iter().map(|&u| (None, u)));
    let replaced: Vec<(u64, u64)> = packaged
        .iter()
        .filter_map(|p| p.0)
        .flat_map(|b| cmp.base.parts(b).iter().map(|q| (q.rva, q.size)))
        .collect();
    let mut functions: Vec<Function> = base_img
        .functions
        .iter()
        .filter(|f| !replaced.contains(&(f.rva, f.size)))
        .cloned()
        .collect();
    for &(_, u) in &packaged {
        for part in cmp.upd.parts(u) {
            let bytes = upd_img.bytes_at(part.rva, part.size).unwrap();
            // Items ship their relocation fields cleared: compare the rest.
            let masked = |i: u32, b: &[u8]| {
                let mut b = b.to_vec();
                for r in &payload.get(ItemRef(i)).unwrap().relocations {
                    let at = r.offset as usize;
                    let end = (at + r.kind.width()).min(b.len());
                    b[at.min(end)..end].fill(0);
                }
                b
            };
            let item = decoded
                .iter()
                .find(|(i, d)| d.len() == bytes.len() && masked(**i, d) == masked(**i, bytes))
                .map(|(i, _)| *i)
                .ok_or_else(|| {
                    format!("no item holds part {} of {}", part.symbol, cmp.upd.key(u))
                })?;
            let f = upd_img
                .functions
                .iter()
                .find(|f| f.rva == part.rva && f.name == part.symbol)
                .unwrap();
            functions.push(Function {
                rva: address[&item] - base,
                ..f.clone()
            });
        }
    }
    // Data: the baseline's, and the package's new objects where placed.
    let mut data = base_img.data.clone();
    for i in &applied.items {
        let Some(name) = i.what.strip_prefix("data ") else {
            continue;
        };
        if let Some(o) = upd_img.data.iter().find(|o| o.name == name) {
            // A changed constant's name moves to its new copy.
            data.retain(|d| !(d.name == o.name && d.unit == o.unit));
            data.push(DataObject {
                rva: i.address - base,
                size: i.size,
                section: ".hotpatch.data".into(),
                ..o.clone()
            });
        }
    }
    // Relocations: the baseline's, and every absolute pointer linked.
    let mut relocations = base_img.relocations.clone();
    for i in &applied.items {
        for r in &payload.get(ItemRef(i.item)).unwrap().relocations {
            if r.kind == RelocKind::Abs64 {
                let at = i.address + r.offset;
                let v = u64::from_le_bytes(mem.bytes(at, 8).try_into().unwrap());
                relocations.push(Relocation {
                    rva: at - base,
                    width: 8,
                    target: RelocTarget::Rva(v - base),
                });
            }
        }
    }
    relocations.sort_by_key(|r| r.rva);
    let image = Image {
        sections,
        functions,
        data,
        relocations,
        ..base_img.clone()
    };
    let idx = hotpatch_builder::index::ImageIndex::new(&image);
    let mut anchors = cmp.base.finished_anchors();
    for &(_, u) in &packaged {
        if let Some(g) = idx.group(&cmp.upd.key(u)) {
            let mut n = Vec::new();
            norm::normalize_group(&idx, g, &mut n);
            anchors.extend(n.iter().flat_map(|x| x.anchors.iter().copied()));
        }
    }
    idx.finish(anchors);
    for &(_, u) in &packaged {
        let key = cmp.upd.key(u);
        let g = idx
            .group(&key)
            .ok_or_else(|| format!("{key}: not found in memory"))?;
        let mut got = Vec::new();
        norm::normalize_group(&idx, g, &mut got);
        let mut want = Vec::new();
        norm::normalize_group(&cmp.upd, u, &mut want);
        if got.len() != want.len() {
            return Err(format!(
                "{key}: {} parts in memory, {} in the update",
                got.len(),
                want.len()
            ));
        }
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            if let Some(at) = norm::exact_difference(a, b) {
                return Err(format!(
                    "{key}: part {k} differs from the update at instruction {at}"
                ));
            }
        }
    }
    Ok(packaged.len())
}

/// Read the state record of `image` from `t`.
pub fn applied(t: &mut MemTarget, image: &str) -> Option<AppliedPackage> {
    let bytes = t.load_state(image).unwrap()?;
    crate::state::StateRecord::from_bytes(&bytes)
        .unwrap()
        .applied
}

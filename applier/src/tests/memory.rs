//! A sparse in-memory target for the engine's tests: pages holding images'
//! sections at a chosen base, an allocator, protections, state records,
//! and threads whose PCs a test sets.

use std::collections::BTreeMap;

use hotpatch_formats::package::{ImageIdentity, Sha256Digest};
use hotpatch_formats::{Arch, Format, Image};

use crate::target::{Located, Protection, Target, TargetError, ThreadPc};

pub const PAGE: u64 = 0x1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub bytes: Vec<u8>,
    pub prot: Protection,
}

#[derive(Clone, Debug)]
struct Loaded {
    name: String,
    base: u64,
    end: u64,
    sha: Sha256Digest,
    format: Format,
    arch: Arch,
}

/// Everything a test compares to prove "unchanged".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub pages: BTreeMap<u64, Page>,
    pub allocations: BTreeMap<u64, u64>,
    pub states: BTreeMap<String, Vec<u8>>,
}

#[derive(Clone, Debug, Default)]
pub struct MemTarget {
    pages: BTreeMap<u64, Page>,
    allocations: BTreeMap<u64, u64>,
    images: Vec<Loaded>,
    states: BTreeMap<String, Vec<u8>>,
    /// If set, allocations must lie inside one of these ranges.
    pub allowed: Option<Vec<(u64, u64)>>,
    /// Thread PCs [`Target::stop`] reports.
    pub pcs: Vec<ThreadPc>,
    pub stops: usize,
    /// Bytes someone else writes just as the target stops.
    pub poke_on_stop: Option<(u64, Vec<u8>)>,
    /// If set, [`Target::allocate`] returns this address whatever the
    /// bounds and maps nothing there (a target that misplaces a block).
    pub place_at: Option<u64>,
    stopped: bool,
}

impl MemTarget {
    pub fn new() -> Self {
        MemTarget::default()
    }

    /// Map `image`'s sections at `base`, under `name`.
    pub fn load(&mut self, name: &str, image: &Image<'_>, base: u64) {
        let mut end = base;
        for s in &image.sections {
            let start = base + s.rva;
            let stop = start + s.size;
            end = end.max(stop);
            let mut p = start & !(PAGE - 1);
            while p < stop {
                let page = self.pages.entry(p).or_insert_with(|| Page {
                    bytes: vec![0; PAGE as usize],
                    prot: Protection {
                        read: false,
                        write: false,
                        execute: false,
                    },
                });
                page.prot.read |= s.perms.read;
                page.prot.write |= s.perms.write;
                page.prot.execute |= s.perms.execute;
                p += PAGE;
            }
            self.write_raw(start, s.data);
        }
        self.images.push(Loaded {
            name: name.into(),
            base,
            end,
            sha: Sha256Digest::of(image.file),
            format: image.format,
            arch: image.arch,
        });
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            pages: self.pages.clone(),
            allocations: self.allocations.clone(),
            states: self.states.clone(),
        }
    }

    pub fn protection_at(&self, address: u64) -> Option<Protection> {
        self.pages.get(&(address & !(PAGE - 1))).map(|p| p.prot)
    }

    pub fn bytes(&self, address: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.read_raw(address, &mut v).unwrap();
        v
    }

    /// Overwrite memory directly (a test's tampering).
    pub fn poke(&mut self, address: u64, bytes: &[u8]) {
        self.write_raw(address, bytes);
    }

    fn write_raw(&mut self, address: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            let a = address + i as u64;
            let page = self.pages.get_mut(&(a & !(PAGE - 1))).unwrap();
            page.bytes[(a & (PAGE - 1)) as usize] = *b;
        }
    }

    fn read_raw(&self, address: u64, buf: &mut [u8]) -> Result<(), TargetError> {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = address + i as u64;
            let page = self
                .pages
                .get(&(a & !(PAGE - 1)))
                .ok_or_else(|| self.access(address, buf_len(i), "unmapped"))?;
            *b = page.bytes[(a & (PAGE - 1)) as usize];
        }
        Ok(())
    }

    fn access(&self, address: u64, len: u64, detail: &str) -> TargetError {
        TargetError::Access {
            target: self.describe(),
            address,
            len,
            detail: detail.into(),
        }
    }

    fn free_at(&self, start: u64, size: u64) -> bool {
        let mut p = start;
        while p < start + size {
            if self.pages.contains_key(&p) {
                return false;
            }
            p += PAGE;
        }
        true
    }

    fn fits(&self, start: u64, size: u64, lo: u64, hi: u64) -> bool {
        start >= lo
            && start.checked_add(size).is_some_and(|e| e <= hi)
            && self.allowed.as_ref().is_none_or(|a| {
                a.iter()
                    .any(|&(alo, ahi)| start >= alo && start + size <= ahi)
            })
            && self.free_at(start, size)
    }
}

fn buf_len(i: usize) -> u64 {
    i as u64 + 1
}

impl Target for MemTarget {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn locate(&mut self, name: &str, _identity: &ImageIdentity) -> Result<Located, TargetError> {
        let l =
            self.images
                .iter()
                .find(|l| l.name == name)
                .ok_or_else(|| TargetError::NotLoaded {
                    name: name.into(),
                    target: "memory".into(),
                })?;
        Ok(Located {
            base: l.base,
            file_sha256: l.sha,
            format: l.format,
            arch: l.arch,
            how: format!("loaded as {name}"),
        })
    }

    fn page_size(&self) -> u64 {
        PAGE
    }

    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), TargetError> {
        self.read_raw(address, buf)
    }

    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), TargetError> {
        let mut probe = vec![0; bytes.len()];
        self.read_raw(address, &mut probe)?;
        self.write_raw(address, bytes);
        Ok(())
    }

    fn allocate(&mut self, lo: u64, hi: u64, size: u64) -> Result<u64, TargetError> {
        assert_eq!(size % PAGE, 0, "allocation of {size:#x} bytes");
        assert_eq!(lo % PAGE, 0, "allocation at {lo:#x}");
        if let Some(a) = self.place_at {
            self.allocations.insert(a, size);
            return Ok(a);
        }
        // Candidates: the low bound, the ends of mapped ranges and the
        // starts of allowed ranges; above the images first.
        let mut candidates: Vec<u64> = vec![lo];
        let mut prev_end = None;
        for &p in self.pages.keys() {
            if prev_end != Some(p) {
                if let Some(e) = prev_end {
                    candidates.push(e);
                }
            }
            prev_end = Some(p + PAGE);
        }
        candidates.extend(prev_end);
        if let Some(a) = &self.allowed {
            candidates.extend(a.iter().map(|r| r.0));
        }
        let hint = self.images.iter().map(|l| l.end).max().unwrap_or(0);
        let hint = (hint + 0xffff) & !0xffff;
        candidates.push(hint);
        candidates.retain(|&c| c >= lo && c % PAGE == 0);
        candidates.sort();
        candidates.dedup();
        let pick = candidates
            .iter()
            .copied()
            .filter(|&c| c >= hint)
            .chain(candidates.iter().copied().filter(|&c| c < hint))
            .find(|&c| self.fits(c, size, lo, hi));
        let Some(start) = pick else {
            return Err(TargetError::NoRoom {
                target: self.describe(),
                size,
                lo,
                hi,
            });
        };
        let mut p = start;
        while p < start + size {
            self.pages.insert(
                p,
                Page {
                    bytes: vec![0; PAGE as usize],
                    prot: Protection::READ_WRITE,
                },
            );
            p += PAGE;
        }
        self.allocations.insert(start, size);
        Ok(start)
    }

    fn free(&mut self, address: u64, size: u64) -> Result<(), TargetError> {
        if self.allocations.get(&address) != Some(&size) {
            return Err(self.access(address, size, "not an allocation"));
        }
        self.allocations.remove(&address);
        if self.place_at == Some(address) {
            return Ok(());
        }
        let mut p = address;
        while p < address + size {
            self.pages.remove(&p);
            p += PAGE;
        }
        Ok(())
    }

    fn protect(
        &mut self,
        address: u64,
        size: u64,
        protection: Protection,
    ) -> Result<(), TargetError> {
        assert_eq!(address % PAGE, 0);
        let mut p = address;
        while p < address + size {
            let page = self.pages.get_mut(&p).ok_or_else(|| TargetError::Other {
                target: "memory".into(),
                detail: format!("protect: {p:#x} is not mapped"),
            })?;
            page.prot = protection;
            p += PAGE;
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<Vec<ThreadPc>, TargetError> {
        assert!(!self.stopped, "stopped twice");
        self.stopped = true;
        self.stops += 1;
        if let Some((address, bytes)) = self.poke_on_stop.take() {
            self.write_raw(address, &bytes);
        }
        Ok(self.pcs.clone())
    }

    fn resume(&mut self) -> Result<(), TargetError> {
        assert!(self.stopped, "resumed without a stop");
        self.stopped = false;
        Ok(())
    }

    fn load_state(&mut self, key: &str) -> Result<Option<Vec<u8>>, TargetError> {
        Ok(self.states.get(key).cloned())
    }

    fn store_state(&mut self, key: &str, record: Option<&[u8]>) -> Result<(), TargetError> {
        match record {
            Some(r) => self.states.insert(key.into(), r.to_vec()),
            None => self.states.remove(key),
        };
        Ok(())
    }
}

impl MemTarget {
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }
}

//! Per-image index: functions grouped by [`Key`], data objects, relocations,
//! and the anonymous data blocks between them, so that any address the code
//! refers to can be turned into an address-independent [`SymRef`].

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use hotpatch_formats::{Image, RelocTarget, Relocation, Visibility};
use serde::Serialize;

use crate::key::{is_split_part, split_clone, unit_stem, Key};

/// One symbol of a function group: the function itself, or one of its GCC
/// clones or split parts.
#[derive(Clone, Debug, Serialize)]
pub struct Part {
    /// The clone signature (`""` for the plain function, `"cold"`, `"isra"`, ...).
    pub signature: String,
    /// The full symbol name.
    pub symbol: String,
    /// RVA of the first byte.
    pub rva: u64,
    /// Size in bytes.
    pub size: u64,
    /// Whether callers can enter here (every part but a `.cold` split).
    pub entry: bool,
}

/// A source-level function: every symbol whose name folds to one [`Key`].
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    /// The key.
    pub key: Key,
    /// Its parts, sorted by signature then RVA.
    pub parts: Vec<Part>,
}

impl Group {
    /// The part callers enter first: the plain function, else the first entry clone.
    pub fn primary(&self) -> Option<&Part> {
        self.parts
            .iter()
            .find(|p| p.signature.is_empty())
            .or_else(|| self.parts.iter().find(|p| p.entry))
    }

    /// Total code size of all parts.
    pub fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }
}

/// A data object with its key.
#[derive(Clone, Debug)]
pub struct DataEntry {
    /// The key.
    pub key: Key,
    /// Index into [`Image::data`].
    pub object: usize,
}

/// An address-independent reference.
///
/// Two instructions of two builds that refer to "the same thing" produce equal
/// `SymRef`s, however far that thing moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SymRef<'a> {
    /// Inside the function being normalised: which part, and the offset in it.
    Local {
        /// Index of the part in its group (parts are sorted by signature, so
        /// this is stable across builds when the parts are the same).
        part: u32,
        /// Offset from the part's start.
        offset: u64,
    },
    /// Another function: its key, the part's clone signature, and the offset.
    Function {
        /// The function's key.
        key: &'a Key,
        /// The clone signature of the part referred to.
        part: &'a str,
        /// Offset from the part's start.
        offset: u64,
    },
    /// A named data object and the offset in it.
    Data {
        /// The object's key.
        key: &'a Key,
        /// Offset from the object's start.
        offset: u64,
    },
    /// Anonymous bytes (string literal, jump table, literal pool, constant):
    /// identified by the digest of the block's normalised contents.
    Anon {
        /// Digest of the block (see [`ImageIndex::block_digest`]).
        digest: u64,
        /// Offset from the block's start.
        offset: u64,
    },
    /// A symbol the dynamic loader resolves (ELF `GLOB_DAT`/absolute
    /// relocations against a symbol), with its addend.
    External {
        /// The symbol name.
        name: &'a str,
        /// The addend.
        addend: i64,
    },
    /// An address outside every mapped section. It cannot be made
    /// address-independent, so it compares by value.
    Unmapped(u64),
}

/// A resolved anonymous block: `[start, end)` and its initialised bytes.
#[derive(Clone, Copy, Debug)]
pub struct Block<'d> {
    /// RVA of the first byte.
    pub start: u64,
    /// RVA one past the last byte.
    pub end: u64,
    /// The file-backed bytes of the block (shorter than the block for `.bss`).
    pub bytes: &'d [u8],
    /// Whether the block lies in executable memory.
    pub executable: bool,
    /// Whether the block lies in writable memory (after relocation).
    pub writable: bool,
}

#[derive(Clone, Copy, Debug)]
struct Range {
    start: u64,
    end: u64,
    group: u32,
    part: u32,
}

/// The index of one image. Build it with [`ImageIndex::new`], add the anchors
/// that pass 1 found with [`ImageIndex::finish`], then resolve addresses.
#[derive(Debug)]
pub struct ImageIndex<'i, 'd> {
    /// The image.
    pub image: &'i Image<'d>,
    /// Function groups, sorted by key.
    pub groups: Vec<Group>,
    /// Data objects with their keys, sorted by key.
    pub data: Vec<DataEntry>,
    ranges: Vec<Range>,
    /// (start, end, index into `data`), sorted by start.
    data_ranges: Vec<(u64, u64, usize)>,
    /// Sorted, deduplicated starts of anonymous blocks and of everything
    /// named, so that a block ends where the next thing starts.
    anchors: Vec<u64>,
    digests: HashMap<u64, u64>,
}

/// The key of a symbol: local symbols carry their unit's stem.
fn key_for(name: &str, unit: Option<&str>, visibility: Visibility) -> Key {
    Key {
        name: name.to_string(),
        unit: match visibility {
            Visibility::Local => unit.map(|u| unit_stem(u).to_string()),
            _ => None,
        },
    }
}

impl<'i, 'd> ImageIndex<'i, 'd> {
    /// Group the functions and data objects of `image`.
    pub fn new(image: &'i Image<'d>) -> Self {
        // Functions: fold clones into their parent. A local clone of a global
        // parent (GCC emits `parse.cold` as a local) joins the global group.
        let globals: std::collections::HashSet<&str> = image
            .functions
            .iter()
            .filter(|f| f.visibility != Visibility::Local)
            .map(|f| split_clone(&f.name).0)
            .collect();
        let mut groups: Vec<Group> = Vec::new();
        let mut group_by_key: HashMap<Key, usize> = HashMap::new();
        for f in &image.functions {
            let (base, signature) = split_clone(&f.name);
            let mut key = key_for(base, f.unit.as_deref(), f.visibility);
            if key.unit.is_some() && !signature.is_empty() && globals.contains(base) {
                key.unit = None;
            }
            let g = *group_by_key.entry(key.clone()).or_insert_with(|| {
                groups.push(Group {
                    key,
                    parts: Vec::new(),
                });
                groups.len() - 1
            });
            let entry = !is_split_part(&signature);
            groups[g].parts.push(Part {
                signature,
                symbol: f.name.clone(),
                rva: f.rva,
                size: f.size,
                entry,
            });
        }
        for g in &mut groups {
            g.parts
                .sort_by(|a, b| (&a.signature, a.rva).cmp(&(&b.signature, b.rva)));
            // Aliases (two names, one address) are one part.
            g.parts
                .dedup_by(|a, b| a.rva == b.rva && a.signature == b.signature);
            // Nearly every group has one part; don't keep the growth slack.
            g.parts.shrink_to_fit();
        }
        drop(group_by_key);
        groups.sort_by(|a, b| a.key.cmp(&b.key));
        let mut ranges: Vec<Range> = Vec::new();
        for (gi, g) in groups.iter().enumerate() {
            for (pi, p) in g.parts.iter().enumerate() {
                if p.size > 0 {
                    ranges.push(Range {
                        start: p.rva,
                        end: p.rva.saturating_add(p.size),
                        group: gi as u32,
                        part: pi as u32,
                    });
                }
            }
        }
        ranges.sort_by_key(|r| (r.start, r.end));

        let mut data: Vec<DataEntry> = image
            .data
            .iter()
            .enumerate()
            .map(|(i, d)| DataEntry {
                key: key_for(&d.name, d.unit.as_deref(), d.visibility),
                object: i,
            })
            .collect();
        data.sort_by(|a, b| a.key.cmp(&b.key));
        // Duplicate keys (aliases) keep the first.
        data.dedup_by(|a, b| a.key == b.key);
        let mut data_ranges: Vec<(u64, u64, usize)> = data
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let o = &image.data[d.object];
                (o.size > 0).then(|| (o.rva, o.rva.saturating_add(o.size), i))
            })
            .collect();
        data_ranges.sort_unstable();

        let mut anchors: Vec<u64> = Vec::new();
        anchors.extend(image.sections.iter().map(|s| s.rva));
        anchors.extend(image.sections.iter().map(|s| s.rva.saturating_add(s.size)));
        anchors.extend(ranges.iter().flat_map(|r| [r.start, r.end]));
        anchors.extend(data_ranges.iter().flat_map(|r| [r.0, r.1]));
        anchors.extend(image.boundaries.iter().copied());
        for r in &image.relocations {
            if let RelocTarget::Rva(t) = r.target {
                anchors.push(t);
            }
        }
        ImageIndex {
            image,
            groups,
            data,
            ranges,
            data_ranges,
            anchors,
            digests: HashMap::new(),
        }
    }

    /// Add the addresses that code refers to (pass 1), fix the anonymous
    /// blocks, and compute their digests.
    pub fn finish(&mut self, referenced: impl IntoIterator<Item = u64>) {
        self.anchors.extend(referenced);
        self.anchors.sort_unstable();
        self.anchors.dedup();
        let mut digests = HashMap::new();
        for &a in &self.anchors {
            if self.function_at(a).is_some() || self.data_at(a).is_some() {
                continue;
            }
            if let Some(block) = self.block(a) {
                digests.insert(block.start, self.compute_digest(&block));
            }
        }
        self.digests = digests;
    }

    /// The group with this key.
    pub fn group(&self, key: &Key) -> Option<usize> {
        self.groups.binary_search_by(|g| g.key.cmp(key)).ok()
    }

    /// The data entry with this key.
    pub fn data_entry(&self, key: &Key) -> Option<usize> {
        self.data.binary_search_by(|d| d.key.cmp(key)).ok()
    }

    /// (group, part) of the function part containing `rva`.
    pub fn function_at(&self, rva: u64) -> Option<(usize, usize)> {
        let i = self.ranges.partition_point(|r| r.start <= rva);
        // Search back over parts that start at or before `rva`: the nearest
        // one may be a short part that ends before `rva` while an earlier one
        // (a function containing a nested alias) covers it.
        self.ranges[..i]
            .iter()
            .rev()
            .take(4)
            .find(|r| rva < r.end)
            .map(|r| (r.group as usize, r.part as usize))
    }

    /// Index into [`ImageIndex::data`] of the data object containing `rva`.
    pub fn data_at(&self, rva: u64) -> Option<usize> {
        let i = self.data_ranges.partition_point(|r| r.0 <= rva);
        self.data_ranges[..i]
            .iter()
            .rev()
            .take(4)
            .find(|r| rva < r.1)
            .map(|r| r.2)
    }

    /// The anonymous block containing `rva`: from the nearest anchor at or
    /// before it to the next anchor, inside one section.
    pub fn block(&self, rva: u64) -> Option<Block<'d>> {
        let section = self.image.section_at(rva)?;
        let i = self.anchors.partition_point(|&a| a <= rva);
        let start = if i == 0 {
            section.rva
        } else {
            self.anchors[i - 1].max(section.rva)
        };
        let section_end = section.rva.saturating_add(section.size);
        let end = self
            .anchors
            .get(i)
            .copied()
            .unwrap_or(section_end)
            .min(section_end);
        let from = usize::try_from(start - section.rva).ok()?;
        let to = usize::try_from(end - section.rva).ok()?;
        let bytes = section
            .data
            .get(from.min(section.data.len())..to.min(section.data.len()))
            .unwrap_or(&[]);
        Some(Block {
            start,
            end,
            bytes,
            executable: section.perms.execute,
            writable: section.perms.write,
        })
    }

    /// The relocation whose patched bytes start inside `[rva, rva + len)`.
    pub fn relocation_in(&self, rva: u64, len: u64) -> Option<&'i Relocation> {
        let relocs = &self.image.relocations;
        let i = relocs.partition_point(|r| r.rva < rva);
        relocs.get(i).filter(|r| r.rva < rva.saturating_add(len))
    }

    /// Every relocation whose patched bytes start inside `[rva, rva + len)`.
    pub fn relocations_in(&self, rva: u64, len: u64) -> &'i [Relocation] {
        let relocs = &self.image.relocations;
        let a = relocs.partition_point(|r| r.rva < rva);
        let b = relocs.partition_point(|r| r.rva < rva.saturating_add(len));
        &relocs[a..b]
    }

    /// Turn an address into a [`SymRef`]. `current` is the group being
    /// normalised: references into any of its parts become [`SymRef::Local`].
    pub fn resolve(&self, rva: u64, current: Option<usize>) -> SymRef<'_> {
        if let Some((g, p)) = self.function_at(rva) {
            let part = &self.groups[g].parts[p];
            let offset = rva - part.rva;
            if Some(g) == current {
                return SymRef::Local {
                    part: p as u32,
                    offset,
                };
            }
            return SymRef::Function {
                key: &self.groups[g].key,
                part: &part.signature,
                offset,
            };
        }
        if let Some(d) = self.data_at(rva) {
            let entry = &self.data[d];
            return SymRef::Data {
                key: &entry.key,
                offset: rva - self.image.data[entry.object].rva,
            };
        }
        match self.block(rva) {
            Some(b) => SymRef::Anon {
                digest: self.block_digest(b.start),
                offset: rva - b.start,
            },
            None => SymRef::Unmapped(rva),
        }
    }

    /// Resolve the target of a relocation.
    pub fn resolve_reloc(&self, r: &'i Relocation, current: Option<usize>) -> SymRef<'_> {
        match &r.target {
            RelocTarget::Rva(t) => self.resolve(*t, current),
            RelocTarget::Symbol { name, addend } => SymRef::External {
                name,
                addend: *addend,
            },
        }
    }

    /// The digest of the anonymous block starting at `start` (0 for an
    /// address that starts no block).
    pub fn block_digest(&self, start: u64) -> u64 {
        self.digests.get(&start).copied().unwrap_or(0)
    }

    /// Digest of a block's contents, with each relocated pointer replaced by
    /// what it points at. A pointer to another anonymous block is taken by
    /// its position in that block and the block's length, not by the block's
    /// contents, so digests never recurse.
    fn compute_digest(&self, block: &Block<'_>) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        (block.end - block.start).hash(&mut h);
        let mut pos = block.start;
        for r in self.relocations_in(block.start, block.end - block.start) {
            let lo = (pos - block.start) as usize;
            let hi = (r.rva - block.start) as usize;
            block
                .bytes
                .get(lo.min(block.bytes.len())..hi.min(block.bytes.len()))
                .hash(&mut h);
            match &r.target {
                RelocTarget::Rva(t) => {
                    if let Some((g, p)) = self.function_at(*t) {
                        let part = &self.groups[g].parts[p];
                        (0u8, &self.groups[g].key, &part.signature, t - part.rva).hash(&mut h);
                    } else if let Some(d) = self.data_at(*t) {
                        let e = &self.data[d];
                        (1u8, &e.key, t - self.image.data[e.object].rva).hash(&mut h);
                    } else if let Some(b) = self.block(*t) {
                        (2u8, t - b.start, b.end - b.start).hash(&mut h);
                    } else {
                        (3u8, *t).hash(&mut h);
                    }
                }
                RelocTarget::Symbol { name, addend } => (4u8, name, addend).hash(&mut h),
            }
            pos = r.rva.saturating_add(u64::from(r.width));
        }
        let lo = pos.saturating_sub(block.start) as usize;
        block.bytes.get(lo.min(block.bytes.len())..).hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{image as bare, section};
    use hotpatch_formats::{Arch, Format};

    /// `.rdata` with a string literal followed by a linker structure whose
    /// bytes change every build (a debug directory's GUID).
    fn image(rdata: &[u8], boundaries: Vec<u64>) -> Image<'_> {
        Image {
            boundaries,
            ..bare(
                Format::Pe,
                Arch::X86_64,
                vec![section(".rdata", 0x2000, rdata, false, false)],
                &[],
            )
        }
    }

    #[test]
    fn string_literal_block_stops_at_linker_boundary_before_debug_directory() {
        let a = b"hotpatch-name\0\0\0GUID-build-one!!";
        let b = b"hotpatch-name\0\0\0GUID-build-two!!";
        let digest = |bytes: &'static [u8], boundaries: Vec<u64>| {
            let img = image(bytes, boundaries);
            let mut idx = ImageIndex::new(&img);
            idx.finish([0x2000]);
            match idx.resolve(0x2000, None) {
                SymRef::Anon { digest, offset: 0 } => digest,
                other => panic!("{other:?}"),
            }
        };
        // Without the boundary the literal's block runs into the GUID.
        assert_ne!(digest(a, vec![]), digest(b, vec![]));
        // With the PDB contribution's end as a boundary it does not.
        assert_eq!(
            digest(a, vec![0x2000, 0x2010]),
            digest(b, vec![0x2000, 0x2010])
        );
    }
}

//! The mid-run differential check's state copy: every writable data
//! object of the patched VM (the baseline's own, and the package's new
//! ones where the engine placed them), by name, into a fresh VM of the
//! updated image, with every pointer into the image or the package
//! translated through the two images' symbols.

use anyhow::{anyhow, Result};
use hotpatch_applier::state::{AppliedPackage, ProtectionName};
use hotpatch_emulator::Vm;
use hotpatch_formats::{DataObject, Image};
use serde::Serialize;

/// What was copied.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Copied {
    /// Objects copied.
    pub objects: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Pointers translated.
    pub pointers: usize,
    /// Objects of the patched VM the updated image lacks, or whose size
    /// differs (the common prefix is copied), and pointers that could not
    /// be translated.
    pub notes: Vec<String>,
}

/// One writable object of the patched VM.
struct Source {
    name: String,
    unit: Option<String>,
    address: u64,
    size: u64,
}

/// A symbol a pointer can point into: name, unit, start, size.
struct Symbol<'a> {
    name: &'a str,
    unit: Option<&'a str>,
    start: u64,
    size: u64,
}

fn symbols<'a>(img: &'a Image<'_>, base: u64) -> Vec<Symbol<'a>> {
    let mut v: Vec<Symbol<'a>> = img
        .functions
        .iter()
        .map(|f| Symbol {
            name: &f.name,
            unit: f.unit.as_deref(),
            start: base.wrapping_add(f.rva),
            size: f.size,
        })
        .chain(img.data.iter().map(|d| Symbol {
            name: &d.name,
            unit: d.unit.as_deref(),
            start: base.wrapping_add(d.rva),
            size: d.size,
        }))
        .collect();
    v.sort_by_key(|s| s.start);
    v
}

fn writable(img: &Image<'_>, d: &DataObject) -> bool {
    img.section_at(d.rva).is_some_and(|s| s.perms.write)
}

/// Find the updated image's object or function called `name` (in `unit`
/// when both record one).
fn find<'a>(syms: &'a [Symbol<'a>], name: &str, unit: Option<&str>) -> Option<&'a Symbol<'a>> {
    let all: Vec<&Symbol<'a>> = syms.iter().filter(|s| s.name == name).collect();
    match all.as_slice() {
        [one] => Some(one),
        many => many
            .iter()
            .find(|s| s.unit.is_some() && s.unit == unit)
            .copied(),
    }
}

/// Copy the state of `from` (the baseline `from_img`, patched by
/// `applied`) into `to` (a fresh VM of `to_img`).
pub fn copy_state(
    from: &Vm,
    from_img: &Image<'_>,
    applied: Option<&AppliedPackage>,
    to: &mut Vm,
    to_img: &Image<'_>,
) -> Result<Copied> {
    let from_base = from.image().base;
    let from_span = from.image().size;
    let to_base = to.image().base;
    let mut sources: Vec<Source> = from_img
        .data
        .iter()
        .filter(|d| writable(from_img, d) && d.size > 0)
        .map(|d| Source {
            name: d.name.clone(),
            unit: d.unit.clone(),
            address: from_base.wrapping_add(d.rva),
            size: d.size,
        })
        .collect();
    // The package's new writable objects, where the engine placed them.
    if let Some(a) = applied {
        for i in &a.items {
            if i.protection == ProtectionName::ReadWrite {
                if let Some(name) = i.what.strip_prefix("data ") {
                    sources.push(Source {
                        name: name.to_string(),
                        unit: None,
                        address: i.address,
                        size: i.size,
                    });
                }
            }
        }
    }
    let from_syms = symbols(from_img, from_base);
    let to_syms = symbols(to_img, to_base);
    let mut out = Copied::default();
    for s in &sources {
        let Some(dest) = to_img
            .data
            .iter()
            .filter(|d| d.name == s.name && writable(to_img, d))
            .find(|d| s.unit.is_none() || d.unit == s.unit)
        else {
            out.notes.push(format!(
                "`{}`: not a writable object of the updated image",
                s.name
            ));
            continue;
        };
        if dest.size != s.size {
            out.notes.push(format!(
                "`{}`: {} bytes in the patched VM, {} in the updated image; the first {} copied",
                s.name,
                s.size,
                dest.size,
                s.size.min(dest.size)
            ));
        }
        let len = usize::try_from(s.size.min(dest.size))
            .map_err(|_| anyhow!("`{}` is too large", s.name))?;
        let mut bytes = from.read(s.address, len)?;
        // Pointers: aligned 8-byte words holding an address in the image
        // or in the package's memory.
        let first = (8u64.wrapping_sub(s.address % 8)) % 8;
        let offsets: Vec<u64> = (first..len as u64).step_by(8).collect();
        for off in offsets {
            let at = usize::try_from(off).unwrap_or(usize::MAX);
            let Some(word) = at
                .checked_add(8)
                .and_then(|end| bytes.get(at..end))
                .and_then(|w| <[u8; 8]>::try_from(w).ok())
            else {
                break;
            };
            let value = u64::from_le_bytes(word);
            match translate(value, from_base, from_span, &from_syms, applied, &to_syms) {
                Pointer::NotOne => {}
                Pointer::To(v) => {
                    if let Some(w) = bytes.get_mut(at..at.saturating_add(8)) {
                        w.copy_from_slice(&v.to_le_bytes());
                    }
                    out.pointers = out.pointers.saturating_add(1);
                }
                Pointer::Lost(why) => out
                    .notes
                    .push(format!("`{}`+{off:#x}: pointer {value:#x} {why}", s.name)),
            }
        }
        to.write(to_base.wrapping_add(dest.rva), &bytes)?;
        out.objects = out.objects.saturating_add(1);
        out.bytes = out.bytes.saturating_add(len as u64);
    }
    Ok(out)
}

enum Pointer {
    NotOne,
    To(u64),
    Lost(String),
}

fn translate(
    value: u64,
    from_base: u64,
    from_span: u64,
    from_syms: &[Symbol<'_>],
    applied: Option<&AppliedPackage>,
    to_syms: &[Symbol<'_>],
) -> Pointer {
    let in_image = value.checked_sub(from_base).is_some_and(|o| o < from_span);
    let item = applied.and_then(|a| {
        a.items.iter().find(|i| {
            value
                .checked_sub(i.address)
                .is_some_and(|o| o < i.size.max(1))
        })
    });
    let (name, unit, offset) = if in_image {
        let idx = from_syms.partition_point(|s| s.start <= value);
        let Some(sym) = from_syms.get(..idx).and_then(|v| {
            v.iter()
                .rev()
                .find(|s| value.wrapping_sub(s.start) < s.size.max(1))
        }) else {
            return Pointer::Lost(format!(
                "into the image at RVA {:#x}, outside every symbol, not translated",
                value.wrapping_sub(from_base)
            ));
        };
        (sym.name, sym.unit, value.wrapping_sub(sym.start))
    } else if let Some(i) = item {
        let name = i
            .what
            .split_once(' ')
            .map_or(i.what.as_str(), |(_, n)| n)
            .trim_start_matches("function ");
        (name, None, value.wrapping_sub(i.address))
    } else {
        return Pointer::NotOne;
    };
    match find(to_syms, name, unit) {
        Some(t) => Pointer::To(t.start.wrapping_add(offset)),
        None => Pointer::Lost(format!("to `{name}`, which the updated image lacks")),
    }
}

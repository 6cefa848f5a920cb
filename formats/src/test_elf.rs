//! Test support: find and patch the symbols and section headers of a
//! 64-bit little-endian ELF file in place. Used by the formats unit tests
//! and (through `#[path]`) by the CLI tests; it trusts its input, which is a
//! corpus image.

#![allow(dead_code)]

fn u16_at(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(d[at..at + 2].try_into().unwrap())
}
fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
}
fn u64_at(d: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(d[at..at + 8].try_into().unwrap())
}

/// A section header's fields and where it is in the file.
#[derive(Clone, Debug)]
pub struct Shdr {
    /// File offset of the header itself.
    pub at: usize,
    /// Its name.
    pub name: String,
    /// `sh_type`.
    pub kind: u32,
    /// `sh_addr`.
    pub addr: u64,
    /// `sh_offset`.
    pub offset: usize,
    /// `sh_size`.
    pub size: u64,
    /// `sh_link`.
    pub link: u32,
}

/// The section headers of an ELF file.
pub fn sections(d: &[u8]) -> Vec<Shdr> {
    let shoff = u64_at(d, 0x28) as usize;
    let shentsize = u16_at(d, 0x3a) as usize;
    let shnum = u16_at(d, 0x3c) as usize;
    let shstrndx = u16_at(d, 0x3e) as usize;
    let raw = |i: usize| {
        let at = shoff + i * shentsize;
        (
            at,
            u32_at(d, at),
            u32_at(d, at + 4),
            u64_at(d, at + 16),
            u64_at(d, at + 24) as usize,
            u64_at(d, at + 32),
            u32_at(d, at + 40),
        )
    };
    let strtab = raw(shstrndx).4;
    (0..shnum)
        .map(|i| {
            let (at, name, kind, addr, offset, size, link) = raw(i);
            let start = strtab + name as usize;
            let end = start + d[start..].iter().position(|&b| b == 0).unwrap();
            Shdr {
                at,
                name: String::from_utf8_lossy(&d[start..end]).into_owned(),
                kind,
                addr,
                offset,
                size,
                link,
            }
        })
        .collect()
}

/// The section named `name`.
pub fn section(d: &[u8], name: &str) -> Shdr {
    sections(d)
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no section {name}"))
}

/// A `.symtab` symbol and where it is in the file.
#[derive(Clone, Debug)]
pub struct Sym {
    /// File offset of the symbol entry.
    pub at: usize,
    /// File offset of its name in the string table.
    pub name_at: usize,
    /// Its name.
    pub name: String,
    /// `st_info & 0xf`.
    pub kind: u8,
    /// `st_shndx`.
    pub shndx: u16,
    /// `st_value`.
    pub value: u64,
    /// `st_size`.
    pub size: u64,
}

/// Every `.symtab` symbol.
pub fn symbols(d: &[u8]) -> Vec<Sym> {
    let all = sections(d);
    let symtab = all
        .iter()
        .find(|s| s.name == ".symtab")
        .expect("no .symtab");
    let strtab = &all[symtab.link as usize];
    (0..symtab.size as usize / 24)
        .map(|i| {
            let at = symtab.offset + 24 * i;
            let name_at = strtab.offset + u32_at(d, at) as usize;
            let end = name_at + d[name_at..].iter().position(|&b| b == 0).unwrap();
            Sym {
                at,
                name_at,
                name: String::from_utf8_lossy(&d[name_at..end]).into_owned(),
                kind: d[at + 4] & 0xf,
                shndx: u16_at(d, at + 6),
                value: u64_at(d, at + 8),
                size: u64_at(d, at + 16),
            }
        })
        .collect()
}

/// The `.symtab` symbol named `name`.
pub fn symbol(d: &[u8], name: &str) -> Sym {
    symbols(d)
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no symbol {name}"))
}

/// Set a symbol's `st_size`.
pub fn set_size(d: &mut [u8], sym: &Sym, size: u64) {
    d[sym.at + 16..sym.at + 24].copy_from_slice(&size.to_le_bytes());
}

/// Set a symbol's `st_value`.
pub fn set_value(d: &mut [u8], sym: &Sym, value: u64) {
    d[sym.at + 8..sym.at + 16].copy_from_slice(&value.to_le_bytes());
}

/// Overwrite a symbol's name in place with `name` (at most as long as the
/// old one; the rest is cut off with a NUL).
pub fn rename(d: &mut [u8], sym: &Sym, name: &[u8]) {
    assert!(name.len() <= sym.name.len(), "new name longer than the old");
    d[sym.name_at..sym.name_at + name.len()].copy_from_slice(name);
    d[sym.name_at + name.len()] = 0;
}

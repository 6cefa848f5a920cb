//! Just enough ELF64 and PE parsing to report the size of executable code
//! and (ELF) the number of defined global function symbols of a built image.

use anyhow::{bail, Context, Result};

/// What `summary.json` reports about one image.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ImageStats {
    pub file_bytes: u64,
    /// Sum of the sizes of executable sections.
    pub text_bytes: u64,
    /// Defined global `STT_FUNC` symbols (ELF only; PE keeps them in the PDB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_functions: Option<u64>,
}

fn u16_at(b: &[u8], o: usize) -> Result<u64> {
    let s = b.get(o..o + 2).context("truncated image")?;
    Ok(u64::from(u16::from_le_bytes([s[0], s[1]])))
}
fn u32_at(b: &[u8], o: usize) -> Result<u64> {
    let s = b.get(o..o + 4).context("truncated image")?;
    Ok(u64::from(u32::from_le_bytes(s.try_into().unwrap())))
}
fn u64_at(b: &[u8], o: usize) -> Result<u64> {
    let s = b.get(o..o + 8).context("truncated image")?;
    Ok(u64::from_le_bytes(s.try_into().unwrap()))
}
fn at(v: u64) -> Result<usize> {
    usize::try_from(v).context("offset out of range")
}

pub fn stats(bytes: &[u8]) -> Result<ImageStats> {
    let file_bytes = bytes.len() as u64;
    if bytes.starts_with(b"\x7fELF") {
        if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
            bail!("not a little-endian ELF64 image");
        }
        let shoff = at(u64_at(bytes, 0x28)?)?;
        let shentsize = at(u16_at(bytes, 0x3a)?)?;
        let shnum = at(u16_at(bytes, 0x3c)?)?;
        let mut text_bytes = 0;
        let mut funcs = 0;
        for i in 0..shnum {
            let h = shoff + i * shentsize;
            let sh_type = u32_at(bytes, h + 4)?;
            let flags = u64_at(bytes, h + 8)?;
            let offset = at(u64_at(bytes, h + 0x18)?)?;
            let size = u64_at(bytes, h + 0x20)?;
            const SHF_ALLOC: u64 = 2;
            const SHF_EXECINSTR: u64 = 4;
            if flags & (SHF_ALLOC | SHF_EXECINSTR) == SHF_ALLOC | SHF_EXECINSTR {
                text_bytes += size;
            }
            const SHT_SYMTAB: u64 = 2;
            if sh_type == SHT_SYMTAB {
                for e in (0..at(size)?).step_by(24) {
                    let info = bytes.get(offset + e + 4).copied().unwrap_or(0);
                    let shndx = u16_at(bytes, offset + e + 6)?;
                    // STB_GLOBAL (1) binding, STT_FUNC (2) type, defined.
                    if info == (1 << 4) | 2 && shndx != 0 {
                        funcs += 1;
                    }
                }
            }
        }
        Ok(ImageStats {
            file_bytes,
            text_bytes,
            global_functions: Some(funcs),
        })
    } else if bytes.starts_with(b"MZ") {
        let pe = at(u32_at(bytes, 0x3c)?)?;
        if bytes.get(pe..pe + 4) != Some(b"PE\0\0") {
            bail!("bad PE signature");
        }
        let nsect = at(u16_at(bytes, pe + 6)?)?;
        let opt_size = at(u16_at(bytes, pe + 20)?)?;
        let table = pe + 24 + opt_size;
        let mut text_bytes = 0;
        for i in 0..nsect {
            let h = table + i * 40;
            const IMAGE_SCN_CNT_CODE: u64 = 0x20;
            if u32_at(bytes, h + 36)? & IMAGE_SCN_CNT_CODE != 0 {
                text_bytes += u32_at(bytes, h + 8)?;
            }
        }
        Ok(ImageStats {
            file_bytes,
            text_bytes,
            global_functions: None,
        })
    } else {
        bail!("neither an ELF nor a PE image")
    }
}

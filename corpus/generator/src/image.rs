//! Just enough ELF64 and PE parsing to report the size of executable code
//! and (ELF) the number of defined global function symbols of a built image.

use anyhow::{bail, Context, Result};

/// What `summary.json` reports about one image.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ImageStats {
    pub file_bytes: u64,
    /// Sum of the sizes of executable sections.
    pub text_bytes: u64,
    /// Defined `STT_FUNC` symbols, local ones included (ELF only; PE keeps
    /// function symbols in the PDB). GCC's `name.cold` parts count as well.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_symbols: Option<u64>,
    /// Of those, the global ones: the exported functions (ELF only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_function_symbols: Option<u64>,
}

/// `base + index * stride`, or an error: offsets come from the file.
fn offset(base: usize, index: usize, stride: usize) -> Result<usize> {
    index
        .checked_mul(stride)
        .and_then(|o| base.checked_add(o))
        .context("offset out of range")
}

/// The `N` bytes at `o`.
fn bytes_at<const N: usize>(b: &[u8], o: usize) -> Result<[u8; N]> {
    let end = o.checked_add(N).context("offset out of range")?;
    let s = b.get(o..end).context("truncated image")?;
    s.try_into().context("truncated image")
}
fn u16_at(b: &[u8], o: usize) -> Result<u64> {
    Ok(u64::from(u16::from_le_bytes(bytes_at(b, o)?)))
}
fn u32_at(b: &[u8], o: usize) -> Result<u64> {
    Ok(u64::from(u32::from_le_bytes(bytes_at(b, o)?)))
}
fn u64_at(b: &[u8], o: usize) -> Result<u64> {
    Ok(u64::from_le_bytes(bytes_at(b, o)?))
}
fn at(v: u64) -> Result<usize> {
    usize::try_from(v).context("offset out of range")
}
/// `a + b` for a size total, or an error.
fn sum(a: u64, b: u64) -> Result<u64> {
    a.checked_add(b).context("sizes add up past 2^64 bytes")
}

pub fn stats(bytes: &[u8]) -> Result<ImageStats> {
    let file_bytes = u64::try_from(bytes.len()).context("file too large")?;
    if bytes.starts_with(b"\x7fELF") {
        if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
            bail!("not a little-endian ELF64 image");
        }
        let shoff = at(u64_at(bytes, 0x28)?)?;
        let shentsize = at(u16_at(bytes, 0x3a)?)?;
        let shnum = at(u16_at(bytes, 0x3c)?)?;
        let mut text_bytes = 0u64;
        let mut funcs = 0u64;
        let mut globals = 0u64;
        for i in 0..shnum {
            let h = offset(shoff, i, shentsize)?;
            let field = |o: usize| offset(h, 1, o);
            let sh_type = u32_at(bytes, field(4)?)?;
            let flags = u64_at(bytes, field(8)?)?;
            let offset_in_file = at(u64_at(bytes, field(0x18)?)?)?;
            let size = u64_at(bytes, field(0x20)?)?;
            const SHF_ALLOC: u64 = 2;
            const SHF_EXECINSTR: u64 = 4;
            if flags & (SHF_ALLOC | SHF_EXECINSTR) == SHF_ALLOC | SHF_EXECINSTR {
                text_bytes = sum(text_bytes, size)?;
            }
            const SHT_SYMTAB: u64 = 2;
            if sh_type == SHT_SYMTAB {
                for e in (0..at(size)?).step_by(24) {
                    let sym = offset(offset_in_file, 1, e)?;
                    let info = bytes.get(offset(sym, 1, 4)?).copied().unwrap_or(0);
                    let shndx = u16_at(bytes, offset(sym, 1, 6)?)?;
                    // STT_FUNC (2) type, defined; STB_GLOBAL (1) binding.
                    if info & 0xf == 2 && shndx != 0 {
                        funcs = sum(funcs, 1)?;
                        if info >> 4 == 1 {
                            globals = sum(globals, 1)?;
                        }
                    }
                }
            }
        }
        Ok(ImageStats {
            file_bytes,
            text_bytes,
            function_symbols: Some(funcs),
            global_function_symbols: Some(globals),
        })
    } else if bytes.starts_with(b"MZ") {
        let pe = at(u32_at(bytes, 0x3c)?)?;
        if bytes_at::<4>(bytes, pe).ok() != Some(*b"PE\0\0") {
            bail!("bad PE signature");
        }
        let nsect = at(u16_at(bytes, offset(pe, 1, 6)?)?)?;
        let opt_size = at(u16_at(bytes, offset(pe, 1, 20)?)?)?;
        let table = offset(offset(pe, 1, 24)?, 1, opt_size)?;
        let mut text_bytes = 0u64;
        for i in 0..nsect {
            let h = offset(table, i, 40)?;
            const IMAGE_SCN_CNT_CODE: u64 = 0x20;
            if u32_at(bytes, offset(h, 1, 36)?)? & IMAGE_SCN_CNT_CODE != 0 {
                text_bytes = sum(text_bytes, u32_at(bytes, offset(h, 1, 8)?)?)?;
            }
        }
        Ok(ImageStats {
            file_bytes,
            text_bytes,
            function_symbols: None,
            global_function_symbols: None,
        })
    } else {
        bail!("neither an ELF nor a PE image")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64: an executable section of 1000 bytes, a writable one,
    /// and a symbol table with a local, a global and an undefined function.
    fn tiny_elf() -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let sym = |info: u8, shndx: u16| {
            let mut s = vec![0u8; 24];
            s[4] = info;
            s[6..8].copy_from_slice(&shndx.to_le_bytes());
            s
        };
        for s in [
            sym(0, 0),
            sym(0x02, 1),
            sym(0x12, 1),
            sym(0x12, 0),
            sym(0x11, 2),
        ] {
            b.extend(s);
        }
        let shoff = b.len() as u64;
        let sect = |ty: u32, flags: u64, off: u64, size: u64| {
            let mut h = vec![0u8; 64];
            h[4..8].copy_from_slice(&ty.to_le_bytes());
            h[8..16].copy_from_slice(&flags.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&off.to_le_bytes());
            h[0x20..0x28].copy_from_slice(&size.to_le_bytes());
            h
        };
        b.extend(sect(0, 0, 0, 0));
        b.extend(sect(1, 6, 0, 1000)); // PROGBITS, ALLOC|EXECINSTR
        b.extend(sect(1, 3, 0, 77)); // PROGBITS, ALLOC|WRITE
        b.extend(sect(2, 0, 64, 5 * 24)); // SYMTAB
        b[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        b[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&4u16.to_le_bytes());
        b
    }

    #[test]
    fn elf_code_size_and_function_symbols() {
        let b = tiny_elf();
        let st = stats(&b).unwrap();
        assert_eq!(st.file_bytes, b.len() as u64);
        assert_eq!(st.text_bytes, 1000);
        assert_eq!(st.function_symbols, Some(2));
        assert_eq!(st.global_function_symbols, Some(1));
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(stats(b"not an image").is_err());
        assert!(stats(&tiny_elf()[..70]).is_err());
        assert!(stats(b"MZ").is_err());
    }
}

//! The instructions the engine writes: entry redirections and AArch64
//! veneers.

use hotpatch_formats::package::RedirectScheme;

/// The most a rel32 displacement reaches.
pub const REL32_MIN: i128 = -(1 << 31);
/// The most a rel32 displacement reaches.
pub const REL32_MAX: i128 = (1 << 31) - 1;
/// AArch64 `B`/`BL` reach, below.
pub const B26_MIN: i128 = -(1 << 27);
/// AArch64 `B`/`BL` reach, above.
pub const B26_MAX: i128 = (1 << 27) - 4;
/// Bytes of an AArch64 veneer: `LDR X16, #8; BR X16; .quad target`.
pub const VENEER_SIZE: u64 = 16;

/// `LDR X16, [PC, #8]`.
const LDR_X16_PC8: u32 = 0x5800_0050;
/// `BR X16`.
const BR_X16: u32 = 0xd61f_0200;
/// `B` with a zero offset.
const B: u32 = 0x1400_0000;

/// The span `(lo, hi)` of `target - site` the scheme's jump reaches from a
/// function entry at `entry`, as a range of target addresses relative to
/// `entry`.
pub fn reach(scheme: RedirectScheme) -> (i128, i128) {
    match scheme {
        // E9 at entry - 5: the displacement counts from entry.
        RedirectScheme::X64PaddingShortJump => (REL32_MIN, REL32_MAX),
        // E9 at entry: from entry + 5.
        RedirectScheme::X64NearJump => (REL32_MIN + 5, REL32_MAX + 5),
        RedirectScheme::A64Branch => (B26_MIN, B26_MAX),
    }
}

/// The bytes of the redirect of the function entered at `entry` to `to`,
/// covering exactly what the scheme overwrites; `None` if `to` is out of
/// reach (or misaligned, for `B`).
pub fn redirect_bytes(scheme: RedirectScheme, entry: u64, to: u64) -> Option<Vec<u8>> {
    // Exact in i128 (it cannot wrap), and range-checked right below.
    let d = i128::from(to).wrapping_sub(i128::from(entry));
    let (lo, hi) = reach(scheme);
    if d < lo || d > hi {
        return None;
    }
    match scheme {
        RedirectScheme::X64PaddingShortJump => {
            let rel = i32::try_from(d).ok()?;
            let mut v = vec![0xe9];
            v.extend_from_slice(&rel.to_le_bytes());
            v.extend_from_slice(&[0xeb, 0xf9]);
            Some(v)
        }
        RedirectScheme::X64NearJump => {
            // `d` is in reach: `d - 5` fits an i32.
            let rel = i32::try_from(d.wrapping_sub(5)).ok()?;
            let mut v = vec![0xe9];
            v.extend_from_slice(&rel.to_le_bytes());
            Some(v)
        }
        RedirectScheme::A64Branch => Some(a64_branch(d)?.to_le_bytes().to_vec()),
    }
}

/// `B` over displacement `d` (a multiple of 4 in reach).
fn a64_branch(d: i128) -> Option<u32> {
    if d % 4 != 0 || !(B26_MIN..=B26_MAX).contains(&d) {
        return None;
    }
    let imm = ((d >> 2) as i64 as u64 & 0x03ff_ffff) as u32;
    Some(B | imm)
}

/// A veneer that jumps to `to` from anywhere.
pub fn veneer(to: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(VENEER_SIZE as usize);
    v.extend_from_slice(&LDR_X16_PC8.to_le_bytes());
    v.extend_from_slice(&BR_X16.to_le_bytes());
    v.extend_from_slice(&to.to_le_bytes());
    v
}

/// Where a redirect written by the engine jumps: the decoded destination of
/// `bytes` at the site of the function entered at `entry`, if they are one
/// of the engine's redirects.
pub fn decode_redirect(scheme: RedirectScheme, entry: u64, bytes: &[u8]) -> Option<u64> {
    match (scheme, bytes) {
        (RedirectScheme::X64PaddingShortJump, [0xe9, a, b, c, d, 0xeb, 0xf9]) => {
            let rel = i32::from_le_bytes([*a, *b, *c, *d]);
            entry.checked_add_signed(i64::from(rel))
        }
        (RedirectScheme::X64NearJump, [0xe9, a, b, c, d]) => {
            let rel = i32::from_le_bytes([*a, *b, *c, *d]);
            entry.checked_add(5)?.checked_add_signed(i64::from(rel))
        }
        (RedirectScheme::A64Branch, [a, b, c, d]) => {
            let w = u32::from_le_bytes([*a, *b, *c, *d]);
            if w & 0xfc00_0000 != B {
                return None;
            }
            let imm = i64::from(((w & 0x03ff_ffff) << 6) as i32 >> 6) << 2;
            entry.checked_add_signed(imm)
        }
        _ => None,
    }
}

/// Where the veneer `bytes` jumps, if they are one.
pub fn decode_veneer(bytes: &[u8]) -> Option<u64> {
    let ldr = bytes.get(0..4)?;
    let br = bytes.get(4..8)?;
    let target: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
    (ldr == LDR_X16_PC8.to_le_bytes() && br == BR_X16.to_le_bytes())
        .then(|| u64::from_le_bytes(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x64_padding_redirect_jumps_from_the_padding() {
        let b = redirect_bytes(RedirectScheme::X64PaddingShortJump, 0x1005, 0x2000).unwrap();
        // jmp rel32 at 0x1000 reaches 0x1005 + rel.
        assert_eq!(b, [0xe9, 0xfb, 0x0f, 0, 0, 0xeb, 0xf9]);
        assert_eq!(
            decode_redirect(RedirectScheme::X64PaddingShortJump, 0x1005, &b),
            Some(0x2000)
        );
    }

    #[test]
    fn x64_near_redirect_counts_from_the_next_instruction() {
        let b = redirect_bytes(RedirectScheme::X64NearJump, 0x1000, 0x900).unwrap();
        assert_eq!(b, [0xe9, 0xfb, 0xf8, 0xff, 0xff]);
        assert_eq!(
            decode_redirect(RedirectScheme::X64NearJump, 0x1000, &b),
            Some(0x900)
        );
        assert!(redirect_bytes(RedirectScheme::X64NearJump, 0, 0x1_0000_0000).is_none());
    }

    #[test]
    fn a64_branch_reaches_128_mib_and_no_further() {
        let b = redirect_bytes(RedirectScheme::A64Branch, 0x10_0000, 0x10_0000 - 8).unwrap();
        assert_eq!(
            u32::from_le_bytes(b.clone().try_into().unwrap()),
            0x17ff_fffe
        );
        assert_eq!(
            decode_redirect(RedirectScheme::A64Branch, 0x10_0000, &b),
            Some(0x10_0000 - 8)
        );
        let far = 0x1000 + (1u64 << 27);
        assert!(redirect_bytes(RedirectScheme::A64Branch, 0x1000, far).is_none());
        assert!(redirect_bytes(RedirectScheme::A64Branch, 0x1000, far - 4).is_some());
        assert!(redirect_bytes(RedirectScheme::A64Branch, 0x1000, 0x1002).is_none());
    }

    #[test]
    fn veneer_loads_its_target_into_x16() {
        let v = veneer(0x1122_3344_5566_7788);
        assert_eq!(v.len() as u64, VENEER_SIZE);
        assert_eq!(decode_veneer(&v), Some(0x1122_3344_5566_7788));
    }
}

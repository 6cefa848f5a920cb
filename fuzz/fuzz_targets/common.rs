//! Checks shared by the fuzz targets: what every reader result must look like.

use hotpatch_formats::{Error, Image};

/// An error must be one line that starts with one of `paths`.
pub fn check_error(e: &Error, paths: &[&str]) {
    let msg = e.to_string();
    assert!(
        !msg.contains('\n') && !msg.contains('\r'),
        "not one line: {msg:?}"
    );
    assert!(
        paths.iter().any(|p| msg.starts_with(&format!("{p}: "))),
        "names no file: {msg:?}"
    );
    assert_clean(&msg);
}

/// No control, escape or invisible formatting characters.
pub fn assert_clean(s: &str) {
    assert!(
        !s.chars().any(|c| {
            let u = u32::from(c);
            u < 0x20 || (0x7f..=0x9f).contains(&u) || matches!(u, 0x2028 | 0x2029 | 0x202a..=0x202e | 0x2066..=0x2069 | 0x200b..=0x200f | 0xfeff)
        }),
        "raw control or formatting character in {s:?}"
    );
}

/// Every name of an image (types and their fields included) is escaped,
/// and every function and data object lies where the image says.
pub fn check_image(image: &Image<'_>) {
    for s in &image.sections {
        assert_clean(&s.name);
        assert!(
            s.rva.checked_add(s.size).is_some(),
            "section {} overflows",
            s.name
        );
    }
    for f in &image.functions {
        assert_clean(&f.name);
        if let Some(u) = &f.unit {
            assert_clean(u);
        }
        assert!(
            f.rva.checked_add(f.size).is_some(),
            "function {} overflows",
            f.name
        );
    }
    for d in &image.data {
        assert_clean(&d.name);
        assert_clean(&d.section);
        let end = d.rva.checked_add(d.size).expect("data object overflows");
        if !image.stripped {
            // A data object lies inside its section (a zero-size label may
            // sit just outside it).
            if let Some(s) = image
                .sections
                .iter()
                .find(|s| s.name == d.section && s.contains(d.rva))
            {
                assert!(
                    end <= s.rva + s.size,
                    "data object {} past its section",
                    d.name
                );
            }
        }
    }
    for e in &image.exports {
        assert_clean(&e.name);
    }
    for r in &image.relocations {
        if let hotpatch_formats::RelocTarget::Symbol { name, .. } = &r.target {
            assert_clean(name);
        }
    }
    for t in &image.types {
        assert_clean(&t.name);
        for f in &t.fields {
            assert_clean(&f.name);
        }
    }
    for u in &image.type_uses {
        for t in &u.types {
            assert_clean(t);
        }
    }
    if let hotpatch_formats::TypeInfo::Unsupported(why) = &image.type_info {
        assert!(!why.contains('\n'), "not one line: {why:?}");
        assert_clean(why);
    }
    for f in &image.functions {
        let _ = image.function_bytes(f);
    }
    // Function lines: sorted, one per RVA, each found again.
    assert!(
        image.lines.windows(2).all(|w| w[0].rva < w[1].rva),
        "function lines not sorted by RVA, one per RVA"
    );
    for l in &image.lines {
        assert_eq!(image.line_at(l.rva), Some(l.line));
    }
}

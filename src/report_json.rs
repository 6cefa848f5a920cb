//! The diff report as JSON: exactly what `serde_json::to_writer_pretty`
//! writes, with the function entries (almost all of the text for a large
//! image) rendered on two threads.

use std::io::Write;

use hotpatch_builder::diff::{Diff, Entry};

/// Fewest function entries for which rendering them on a second thread
/// pays for the thread.
const PARALLEL_FROM: usize = 4096;

/// Write `d` as pretty-printed JSON (no trailing newline).
pub fn write(out: &mut impl Write, d: Diff<'_>) -> anyhow::Result<()> {
    write_split(out, d, PARALLEL_FROM)
}

/// [`write`], splitting the function entries in two from `min` entries.
fn write_split(out: &mut impl Write, mut d: Diff<'_>, min: usize) -> anyhow::Result<()> {
    if d.functions.len() < min.max(2) {
        serde_json::to_writer_pretty(out, &d)?;
        return Ok(());
    }
    let functions = std::mem::take(&mut d.functions);
    let rest = serde_json::to_vec_pretty(&d)?;
    // `functions` is the report's first field: the rest starts with it,
    // empty.
    const EMPTY: &[u8] = b"{\n  \"functions\": []";
    let Some(tail) = rest.strip_prefix(EMPTY) else {
        d.functions = functions;
        serde_json::to_writer_pretty(out, &d)?;
        return Ok(());
    };
    let (first, second) = functions.split_at(functions.len() / 2);
    let (a, b) = std::thread::scope(|s| {
        let b = s.spawn(|| elements(second));
        (elements(first), b.join())
    });
    let b = b.map_err(|_| anyhow::anyhow!("the JSON writer thread panicked"))?;
    out.write_all(b"{\n  \"functions\": [\n")?;
    out.write_all(&a?)?;
    out.write_all(b",\n")?;
    out.write_all(&b?)?;
    out.write_all(b"\n  ]")?;
    out.write_all(tail)?;
    Ok(())
}

/// `entries` as the pretty printer writes them inside the report's
/// `functions` array: one per line group, indented by four spaces, joined
/// by `,` and a newline, without the brackets.
fn elements(entries: &[Entry<'_>]) -> anyhow::Result<Vec<u8>> {
    let text = serde_json::to_vec_pretty(entries)?;
    // `[\n  {...},\n  {...}\n]`: a newline never occurs inside a JSON
    // string (it is escaped), so every line can be indented as text.
    let inner = text
        .strip_prefix(b"[\n")
        .and_then(|t| t.strip_suffix(b"\n]"))
        .ok_or_else(|| anyhow::anyhow!("unexpected JSON for the function entries"))?;
    let mut out = Vec::with_capacity(inner.len().saturating_add(inner.len() / 8));
    for (i, line) in inner.split(|&c| c == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(b"  ");
        out.extend_from_slice(line);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Split or not, the text is what `to_writer_pretty` writes, byte for
    /// byte: on a real diff (a corpus pair), at every split size.
    #[test]
    fn split_report_is_the_pretty_report() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let file = |v: &str| corpus.join(format!("18-line-shift/bin/x86_64-linux/{v}.so"));
        let (b, u) = (
            std::fs::read(file("v1")).unwrap(),
            std::fs::read(file("v2")).unwrap(),
        );
        let opts = |v: &str| hotpatch_formats::ReadOptions::new(file(v));
        let base = hotpatch_formats::read::parse(&b, &opts("v1")).unwrap();
        let upd = hotpatch_formats::read::parse(&u, &opts("v2")).unwrap();
        let d = hotpatch_builder::diff::diff(&base, &upd).unwrap();
        assert!(d.functions.len() >= 4);
        let want = serde_json::to_vec_pretty(&d).unwrap();
        for min in [0, 2, 3, d.functions.len(), usize::MAX] {
            let mut got = Vec::new();
            write_split(&mut got, d.clone(), min).unwrap();
            assert_eq!(
                String::from_utf8(got).unwrap(),
                String::from_utf8(want.clone()).unwrap(),
                "split from {min}"
            );
        }
    }
}

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
/// The first half streams to `out` while the second is rendered into a
/// buffer on another thread.
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
    std::thread::scope(|s| {
        let later = s.spawn(|| {
            // About 330 bytes an entry: room enough that the buffer is
            // not copied as it grows.
            let mut buffer = Vec::with_capacity(second.len().saturating_mul(384));
            elements(&mut buffer, second).map(|()| buffer)
        });
        out.write_all(b"{\n  \"functions\": [\n")?;
        elements(&mut *out, first)?;
        let second = later
            .join()
            .map_err(|_| anyhow::anyhow!("the JSON writer thread panicked"))??;
        out.write_all(b",\n")?;
        out.write_all(&second)?;
        out.write_all(b"\n  ]")?;
        out.write_all(tail)?;
        Ok(())
    })
}

/// Write `entries` as the pretty printer writes them inside the report's
/// `functions` array: each indented by four spaces, joined by `,` and a
/// newline, without the brackets.
fn elements(out: &mut impl Write, entries: &[Entry<'_>]) -> anyhow::Result<()> {
    let mut one = Vec::with_capacity(1024);
    let mut indented = Vec::with_capacity(1024);
    for (i, e) in entries.iter().enumerate() {
        one.clear();
        serde_json::to_writer_pretty(&mut one, e)?;
        // A newline never occurs inside a JSON string (it is escaped), so
        // every line can be indented as text.
        indented.clear();
        if i > 0 {
            indented.extend_from_slice(b",\n");
        }
        for (k, line) in one.split(|&c| c == b'\n').enumerate() {
            if k > 0 {
                indented.push(b'\n');
            }
            indented.extend_from_slice(b"    ");
            indented.extend_from_slice(line);
        }
        out.write_all(&indented)?;
    }
    Ok(())
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

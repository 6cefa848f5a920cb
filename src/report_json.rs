//! The diff report as JSON: exactly what `serde_json::to_writer_pretty`
//! writes, with the function entries (almost all of the text for a large
//! image) rendered on two threads.

use std::io::Write;

use hotpatch_builder::diff::{Diff, Entry};

/// Fewest function entries for which rendering them on a second thread
/// pays for the thread.
const PARALLEL_FROM: usize = 4096;

/// Entries rendered at a time by each of the two threads.
const STRETCH: usize = 4096;

/// Write `d` as pretty-printed JSON (no trailing newline).
pub fn write(out: &mut impl Write, d: Diff<'_>) -> anyhow::Result<()> {
    write_split(out, d, PARALLEL_FROM, STRETCH)
}

/// [`write()`], rendering the function entries on two threads, `stretch`
/// at a time each, from `min` entries.
fn write_split(
    out: &mut impl Write,
    mut d: Diff<'_>,
    min: usize,
    stretch: usize,
) -> anyhow::Result<()> {
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
    out.write_all(b"{\n  \"functions\": [")?;
    // Stretches of entries in pairs: this thread writes the first of a
    // pair straight out while another renders the second into a buffer
    // (reused, so that little memory is touched), then writes that.
    let mut buffer: Vec<u8> = Vec::new();
    let mut written = false;
    for pair in functions.chunks(stretch.max(1).saturating_mul(2)) {
        let (first, second) = pair.split_at(pair.len().min(stretch.max(1)));
        let mut taken = std::mem::take(&mut buffer);
        taken.clear();
        let more = written || !first.is_empty();
        buffer = std::thread::scope(|s| {
            let later = s.spawn(move || elements(&mut taken, second, more).map(|()| taken));
            elements(&mut *out, first, written)?;
            later
                .join()
                .map_err(|_| anyhow::anyhow!("the JSON writer thread panicked"))?
        })?;
        out.write_all(&buffer)?;
        written = true;
    }
    out.write_all(b"\n  ]")?;
    out.write_all(tail)?;
    Ok(())
}

/// Write `entries` as the pretty printer writes them inside the report's
/// `functions` array: each on a new line, indented by four spaces, joined
/// by `,`, without the brackets. `more` says whether entries come before
/// these (then the first is joined by `,` too).
fn elements(out: &mut impl Write, entries: &[Entry<'_>], more: bool) -> anyhow::Result<()> {
    for (i, e) in entries.iter().enumerate() {
        out.write_all(if i > 0 || more { b",\n    " } else { b"\n    " })?;
        let mut ser = serde_json::Serializer::with_formatter(&mut *out, Nested::at(2));
        serde::Serialize::serialize(e, &mut ser)?;
    }
    Ok(())
}

/// A pretty printer (two spaces a level, as `serde_json`'s) that starts
/// `depth` levels deep: what a value nested that deep in a pretty-printed
/// document looks like.
struct Nested {
    /// Levels of indentation of the current line.
    depth: usize,
    /// Whether the array or object being written has a value yet.
    has_value: bool,
}

impl Nested {
    /// A printer whose value sits `depth` levels deep.
    fn at(depth: usize) -> Self {
        Nested {
            depth,
            has_value: false,
        }
    }

    /// A newline (after `,` when `comma`) and the current indentation.
    fn line<W: ?Sized + Write>(&self, out: &mut W, comma: bool) -> std::io::Result<()> {
        const SPACES: &[u8; 64] =
            b"                                                                ";
        out.write_all(if comma { b",\n" } else { b"\n" })?;
        let mut left = self.depth.saturating_mul(2);
        while left > 0 {
            let n = left.min(SPACES.len());
            out.write_all(SPACES.get(..n).unwrap_or(SPACES))?;
            left = left.saturating_sub(n);
        }
        Ok(())
    }

    /// Open an array or object with `open`, one level deeper.
    fn open<W: ?Sized + Write>(&mut self, out: &mut W, open: &[u8]) -> std::io::Result<()> {
        self.depth = self.depth.saturating_add(1);
        self.has_value = false;
        out.write_all(open)
    }

    /// Close an array or object with `close`: on its own line when it
    /// has values, right after the opening otherwise (`[]`, `{}`).
    fn close<W: ?Sized + Write>(&mut self, out: &mut W, close: &[u8]) -> std::io::Result<()> {
        self.depth = self.depth.saturating_sub(1);
        if self.has_value {
            self.line(out, false)?;
        }
        out.write_all(close)
    }
}

impl serde_json::ser::Formatter for Nested {
    fn begin_array<W: ?Sized + Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.open(out, b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.close(out, b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        out: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.line(out, !first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, _out: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.open(out, b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.close(out, b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        out: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.line(out, !first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        out.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, _out: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
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
        let mut d = hotpatch_builder::diff::diff(&base, &upd).unwrap();
        assert!(d.functions.len() >= 4);
        // Nested values of every shape: a filled and an empty list, an
        // object, strings that need escaping.
        d.functions[0].aliases = vec!["alias".into(), "with \"quotes\"\n\ttab".into()];
        for (k, evidence) in [(1, vec!["call-graph: x".to_string()]), (2, Vec::new())] {
            d.functions[k].matched = Some(hotpatch_builder::matching::Match {
                how: hotpatch_builder::matching::How::CallGraph,
                confidence: hotpatch_builder::matching::Confidence::Medium,
                identical: k == 1,
                updated_name: "sub_1234",
                evidence,
            });
        }
        let want = serde_json::to_vec_pretty(&d).unwrap();
        for min in [0, 2, 3, d.functions.len(), usize::MAX] {
            for stretch in [1, 2, 3, STRETCH] {
                let mut got = Vec::new();
                write_split(&mut got, d.clone(), min, stretch).unwrap();
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    String::from_utf8(want.clone()).unwrap(),
                    "split from {min}, {stretch} at a time"
                );
            }
        }
    }
}

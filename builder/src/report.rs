//! The human-readable diff summary.

use std::io::{self, Write};

use crate::diff::{Diff, Entry, Status};

/// Text from the command line or a release file, on one line: control
/// characters shown escaped.
fn one_line(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn signed_delta(e: &Entry) -> String {
    match (e.baseline_size, e.updated_size) {
        (Some(b), Some(u)) => {
            let d = i128::from(u).saturating_sub(i128::from(b));
            if d == 0 {
                "±0".to_string()
            } else {
                format!("{d:+}")
            }
        }
        (None, Some(u)) => format!("+{u}"),
        (Some(b), None) => format!("-{b}"),
        (None, None) => String::new(),
    }
}

fn section(out: &mut dyn Write, title: &str, entries: &[&Entry]) -> io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    writeln!(out, "\n{title} ({}):", entries.len())?;
    let width = entries
        .iter()
        .map(|e| e.display_name().len())
        .max()
        .unwrap_or(0);
    for e in entries {
        let reason = e.reason.as_deref().unwrap_or("");
        let aliases = if e.aliases.is_empty() {
            String::new()
        } else {
            format!("  (aliases: {})", e.aliases.join(", "))
        };
        writeln!(
            out,
            "  {:<width$}  {:>7} bytes  {reason}{aliases}",
            e.display_name(),
            signed_delta(e)
        )?;
    }
    Ok(())
}

/// Write the summary: counts, then each changed, added and removed function
/// with its size delta and the reason it differs, then data, then blockers,
/// then the verdict.
pub fn write_summary(out: &mut dyn Write, d: &Diff) -> io::Result<()> {
    for (label, entries) in [("functions:", &d.functions), ("data:     ", &d.data)] {
        let count = |s: Status| entries.iter().filter(|e| e.status == s).count();
        writeln!(
            out,
            "{label} {} changed, {} added, {} removed, {} unchanged",
            count(Status::Changed),
            count(Status::Added),
            count(Status::Removed),
            count(Status::Unchanged)
        )?;
    }
    for (title, status) in [
        ("changed functions", Status::Changed),
        ("added functions", Status::Added),
        ("removed functions", Status::Removed),
    ] {
        section(out, title, &d.functions_with(status).collect::<Vec<_>>())?;
    }
    for (title, status) in [
        ("changed data", Status::Changed),
        ("added data", Status::Added),
        ("removed data", Status::Removed),
    ] {
        section(out, title, &d.data_with(status).collect::<Vec<_>>())?;
    }
    if !d.types.is_empty() {
        writeln!(out, "\nchanged types ({}):", d.types.len())?;
        for t in &d.types {
            let verdict = if t.blocking {
                "used by changed code"
            } else if t.users.is_empty() {
                "used by no function: not blocking"
            } else {
                "used only by unchanged code: not blocking"
            };
            writeln!(out, "  {} {} [{verdict}]: {}", t.kind, t.name, t.reason)?;
        }
    }
    if !d.blockers.is_empty() {
        writeln!(out, "\nblockers ({}):", d.blockers.len())?;
        for b in &d.blockers {
            writeln!(out, "  {} [{}]: {}", b.object, b.kind.as_str(), b.reason)?;
        }
    }
    if !d.overridden.is_empty() {
        writeln!(out, "\noverridden after review ({}):", d.overridden.len())?;
        for o in &d.overridden {
            let b = &o.blocker;
            writeln!(out, "  {} [{}]: {}", b.object, b.kind.as_str(), b.reason)?;
            writeln!(out, "    allowed because: {}", one_line(&o.reason))?;
        }
    }
    for a in &d.unused_overrides {
        writeln!(
            out,
            "\nwarning: --allow {} matched no blocker (reason given: {})",
            one_line(&a.object),
            one_line(&a.reason)
        )?;
    }
    writeln!(out)?;
    if d.hotpatchable {
        writeln!(out, "verdict: hotpatchable")
    } else {
        writeln!(
            out,
            "verdict: NOT hotpatchable ({} blocker{}): ship it as a restart-required release",
            d.blockers.len(),
            if d.blockers.len() == 1 { "" } else { "s" }
        )
    }
}

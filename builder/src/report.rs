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
        let reason = match (e.lines_only, e.line_shift) {
            (true, Some(shift)) => format!(
                "line numbers only (lines moved by {shift:+}): {}",
                e.reason.as_deref().unwrap_or("")
            ),
            _ => e.reason.clone().unwrap_or_default(),
        };
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

/// Every function matched by structure: the two names, its status, how
/// and how sure, and the evidence.
fn structural(out: &mut dyn Write, d: &Diff) -> io::Result<()> {
    let matched: Vec<&Entry> = d.functions.iter().filter(|e| e.matched.is_some()).collect();
    if matched.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nmatched by structure ({}):", matched.len())?;
    let names: Vec<String> = matched
        .iter()
        .map(|e| match &e.matched {
            Some(m) => format!("{} → {}", e.display_name(), m.updated_name),
            None => e.display_name(),
        })
        .collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    for (e, name) in matched.iter().zip(&names) {
        let Some(m) = &e.matched else {
            continue;
        };
        let status = match e.status {
            Status::Changed => "changed",
            Status::Unchanged => "unchanged",
            Status::Added => "added",
            Status::Removed => "removed",
        };
        let pad = width.saturating_sub(name.chars().count());
        writeln!(
            out,
            "  {name}{:pad$}  {status:<9}  {} ({}): {}",
            "",
            m.how.as_str(),
            m.confidence.as_str(),
            m.evidence.join("; ")
        )?;
    }
    Ok(())
}

/// Write the summary: counts (changed functions in line numbers only
/// counted apart), then each changed function with its size delta and the
/// reason it differs, those changed only in their line numbers in a section
/// of their own, then added and removed functions, data, blockers, and the
/// verdict.
pub fn write_summary(out: &mut dyn Write, d: &Diff) -> io::Result<()> {
    for (label, entries) in [("functions:", &d.functions), ("data:     ", &d.data)] {
        let count = |s: Status| entries.iter().filter(|e| e.status == s).count();
        let lines = entries.iter().filter(|e| e.lines_only).count();
        let lines = if lines == 0 {
            String::new()
        } else {
            format!(" ({lines} in line numbers only)")
        };
        writeln!(
            out,
            "{label} {} changed{lines}, {} added, {} removed, {} unchanged",
            count(Status::Changed),
            count(Status::Added),
            count(Status::Removed),
            count(Status::Unchanged)
        )?;
    }
    if let Some(st) = &d.structural {
        writeln!(
            out,
            "without names: {} matched by structure ({} high, {} medium, {} low confidence); left unmatched: {} in the baseline (removed), {} in the update (added)",
            st.matched,
            st.high,
            st.medium,
            st.low,
            st.unmatched_baseline.len(),
            st.unmatched_update.len()
        )?;
    }
    let (lines_only, changed): (Vec<&Entry>, Vec<&Entry>) = d
        .functions_with(Status::Changed)
        .partition(|e| e.lines_only);
    section(out, "changed functions", &changed)?;
    section(
        out,
        "changed in line numbers only, left out of packages by default",
        &lines_only,
    )?;
    for (title, status) in [
        ("added functions", Status::Added),
        ("removed functions", Status::Removed),
    ] {
        section(out, title, &d.functions_with(status).collect::<Vec<_>>())?;
    }
    structural(out, d)?;
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

//! The release calendar: which package may ship in which month.
//!
//! - Baselines fall in January, April, July and October (planned). A
//!   baseline ships full updated images and requires a restart.
//! - Hotpatches fall in the other two months of a quarter, each cumulative
//!   against the quarter's baseline.
//! - An unplanned baseline may ship in a hotpatch month when a fix cannot be
//!   hotpatched; the quarter's later hotpatches build against it.
//!
//! [`check_release`] checks one package's own fields; [`check_history`]
//! checks a new package against the packages already released for the same
//! product. Both are pure functions with one-line refusals.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a package is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    /// Changed functions, applied to a running process.
    Hotpatch,
    /// Full updated images; requires a restart.
    Baseline,
}

impl PackageKind {
    /// `hotpatch` or `baseline`.
    pub fn name(self) -> &'static str {
        match self {
            PackageKind::Hotpatch => "hotpatch",
            PackageKind::Baseline => "baseline",
        }
    }
}

impl fmt::Display for PackageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A release month, written `YYYY-MM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Release {
    year: u16,
    month: u8,
}

impl Release {
    /// The release of `month` (1..=12) in `year` (2000..=9999).
    pub fn new(year: u16, month: u8) -> Result<Self, CalendarError> {
        if !(2000..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(CalendarError::Syntax {
                text: format!("{year:04}-{month:02}"),
            });
        }
        Ok(Release { year, month })
    }

    /// Parse `YYYY-MM`.
    pub fn parse(text: &str) -> Result<Self, CalendarError> {
        let syntax = || CalendarError::Syntax { text: text.into() };
        let (y, m) = match text.as_bytes() {
            [y0, y1, y2, y3, b'-', m0, m1] => ([*y0, *y1, *y2, *y3], [*m0, *m1]),
            _ => return Err(syntax()),
        };
        let num = |d: &[u8]| -> Option<u16> {
            d.iter().try_fold(0u16, |acc, &c| {
                c.is_ascii_digit().then(|| {
                    acc.saturating_mul(10)
                        .saturating_add(u16::from(c.wrapping_sub(b'0')))
                })
            })
        };
        let year = num(&y).ok_or_else(syntax)?;
        let month = num(&m)
            .and_then(|m| u8::try_from(m).ok())
            .ok_or_else(syntax)?;
        Release::new(year, month).map_err(|_| syntax())
    }

    /// The year.
    pub fn year(self) -> u16 {
        self.year
    }

    /// The month, 1..=12.
    pub fn month(self) -> u8 {
        self.month
    }

    /// The quarter, 1..=4.
    pub fn quarter(self) -> u8 {
        self.month.div_ceil(3)
    }

    /// Whether this is a planned baseline month (January, April, July,
    /// October): the first month of a quarter.
    pub fn is_planned_baseline_month(self) -> bool {
        self.month % 3 == 1
    }

    /// Months since year 0, for differences (years are at most 9999).
    fn index(self) -> i64 {
        i64::from(self.year)
            .saturating_mul(12)
            .saturating_add(i64::from(self.month))
    }

    /// Whole months from `earlier` to `self` (negative if `earlier` is later).
    pub fn months_since(self, earlier: Release) -> i64 {
        self.index().saturating_sub(earlier.index())
    }

    /// `Q2 2026`.
    fn quarter_name(self) -> String {
        format!("Q{} {}", self.quarter(), self.year)
    }

    /// Whether both months are in the same quarter of the same year.
    pub fn same_quarter(self, other: Release) -> bool {
        self.year == other.year && self.quarter() == other.quarter()
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl std::str::FromStr for Release {
    type Err = CalendarError;
    fn from_str(s: &str) -> Result<Self, CalendarError> {
        Release::parse(s)
    }
}

impl Serialize for Release {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Release {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Release::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The calendar fields of one package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleaseInfo {
    /// Hotpatch or baseline.
    pub kind: PackageKind,
    /// The month it ships in.
    pub release: Release,
    /// The month of the baseline it applies to (its own month for a baseline).
    pub baseline_release: Release,
    /// Its sequence number against that baseline.
    pub sequence: u32,
}

/// A calendar rule that a package breaks. Each message is one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CalendarError {
    /// Not `YYYY-MM` with a month 01..=12 and a year 2000..=9999.
    #[error("invalid release {text:?}: expected YYYY-MM")]
    Syntax {
        /// The text.
        text: String,
    },
    /// A baseline names another month as its baseline.
    #[error("a baseline applies to itself: baseline {release} names baseline release {baseline}")]
    BaselineNotItself {
        /// The package's month.
        release: Release,
        /// The baseline month it names.
        baseline: Release,
    },
    /// A hotpatch ships in January, April, July or October.
    #[error(
        "no hotpatch in a planned baseline month: {release} is the baseline month of {quarter}"
    )]
    HotpatchInBaselineMonth {
        /// The package's month.
        release: Release,
        /// The quarter it opens.
        quarter: String,
    },
    /// A hotpatch's month is not after its baseline's.
    #[error(
        "a hotpatch's month must come after its baseline's: {release} is not after {baseline}"
    )]
    NotAfterBaseline {
        /// The package's month.
        release: Release,
        /// Its baseline's month.
        baseline: Release,
    },
    /// A hotpatch against a baseline of another quarter.
    #[error("a new quarter needs its baseline first: {release} is in {quarter}, its baseline {baseline} in {baseline_quarter}")]
    OtherQuarter {
        /// The package's month.
        release: Release,
        /// Its quarter.
        quarter: String,
        /// Its baseline's month.
        baseline: Release,
        /// The baseline's quarter.
        baseline_quarter: String,
    },
    /// The sequence number does not follow from the months.
    #[error("the sequence follows from the months: {kind} {release} against {baseline} is sequence {expected}, not {found}")]
    Sequence {
        /// The package's kind.
        kind: PackageKind,
        /// The package's month.
        release: Release,
        /// Its baseline's month.
        baseline: Release,
        /// What the months give.
        expected: i64,
        /// What the package says.
        found: u32,
    },
    /// The baseline a hotpatch names was never released.
    #[error("a new quarter needs its baseline first: no baseline was released in {baseline}, which {release} builds against")]
    MissingBaseline {
        /// The package's month.
        release: Release,
        /// The missing baseline's month.
        baseline: Release,
    },
    /// A later, unplanned baseline of the quarter exists.
    #[error("{unplanned} shipped an unplanned baseline: later hotpatches of the quarter build against it, not against {baseline}")]
    SupersededBaseline {
        /// The unplanned baseline's month.
        unplanned: Release,
        /// The older baseline the package names.
        baseline: Release,
    },
    /// A package was already released for this month.
    #[error("{release} was already released (as a {kind}): one package per product per month")]
    AlreadyReleased {
        /// The month.
        release: Release,
        /// The kind of the existing package.
        kind: PackageKind,
    },
    /// A later month was already released.
    #[error("{release} comes before {later}, which was already released")]
    OutOfOrder {
        /// The package's month.
        release: Release,
        /// The later month already released.
        later: Release,
    },
}

/// Check one package's calendar fields on their own.
///
/// - a baseline applies to itself and has sequence 0 (planned in January,
///   April, July or October; unplanned in any other month);
/// - a hotpatch ships in neither January, April, July nor October, after its
///   baseline's month and in the same quarter of the same year;
/// - the sequence is the number of months since the baseline.
pub fn check_release(info: &ReleaseInfo) -> Result<(), CalendarError> {
    let ReleaseInfo {
        kind,
        release,
        baseline_release: baseline,
        sequence,
    } = *info;
    match kind {
        PackageKind::Baseline => {
            if baseline != release {
                return Err(CalendarError::BaselineNotItself { release, baseline });
            }
        }
        PackageKind::Hotpatch => {
            if release.is_planned_baseline_month() {
                return Err(CalendarError::HotpatchInBaselineMonth {
                    release,
                    quarter: release.quarter_name(),
                });
            }
            if release <= baseline {
                return Err(CalendarError::NotAfterBaseline { release, baseline });
            }
            if !release.same_quarter(baseline) {
                return Err(CalendarError::OtherQuarter {
                    release,
                    quarter: release.quarter_name(),
                    baseline,
                    baseline_quarter: baseline.quarter_name(),
                });
            }
        }
    }
    let expected = release.months_since(baseline);
    if i64::from(sequence) != expected {
        return Err(CalendarError::Sequence {
            kind,
            release,
            baseline,
            expected,
            found: sequence,
        });
    }
    Ok(())
}

/// Check a new package against the packages already released for the same
/// product (in any order): [`check_release`], then
///
/// - one package per month, and no month before one already released;
/// - a hotpatch's baseline was released, as a baseline;
/// - no unplanned baseline of the quarter shipped after the baseline it
///   names (later hotpatches build against the newest one).
pub fn check_history(history: &[ReleaseInfo], next: &ReleaseInfo) -> Result<(), CalendarError> {
    check_release(next)?;
    if let Some(same) = history.iter().find(|h| h.release == next.release) {
        return Err(CalendarError::AlreadyReleased {
            release: next.release,
            kind: same.kind,
        });
    }
    if let Some(later) = history
        .iter()
        .map(|h| h.release)
        .filter(|&r| r > next.release)
        .max()
    {
        return Err(CalendarError::OutOfOrder {
            release: next.release,
            later,
        });
    }
    if next.kind == PackageKind::Hotpatch {
        let baselines = || {
            history
                .iter()
                .filter(|h| h.kind == PackageKind::Baseline)
                .map(|h| h.release)
        };
        if !baselines().any(|r| r == next.baseline_release) {
            return Err(CalendarError::MissingBaseline {
                release: next.release,
                baseline: next.baseline_release,
            });
        }
        if let Some(unplanned) = baselines()
            .filter(|&r| {
                r > next.baseline_release && r < next.release && r.same_quarter(next.release)
            })
            .max()
        {
            return Err(CalendarError::SupersededBaseline {
                unplanned,
                baseline: next.baseline_release,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Release {
        Release::parse(s).unwrap()
    }

    fn info(kind: PackageKind, release: &str, baseline: &str, sequence: u32) -> ReleaseInfo {
        ReleaseInfo {
            kind,
            release: r(release),
            baseline_release: r(baseline),
            sequence,
        }
    }

    fn hot(release: &str, baseline: &str, sequence: u32) -> ReleaseInfo {
        info(PackageKind::Hotpatch, release, baseline, sequence)
    }

    fn base(release: &str) -> ReleaseInfo {
        info(PackageKind::Baseline, release, release, 0)
    }

    fn refusal(i: &ReleaseInfo) -> String {
        check_release(i).unwrap_err().to_string()
    }

    #[test]
    fn release_syntax() {
        assert_eq!(r("2026-02").to_string(), "2026-02");
        assert_eq!(r("2026-02").quarter(), 1);
        assert_eq!(r("2026-12").quarter(), 4);
        for bad in [
            "2026-00",
            "2026-13",
            "2026-2",
            "26-02",
            "1999-01",
            "2026/02",
            "2026-02-01",
        ] {
            assert_eq!(
                Release::parse(bad).unwrap_err().to_string(),
                format!("invalid release {bad:?}: expected YYYY-MM")
            );
        }
    }

    #[test]
    fn planned_baselines_in_january_april_july_october() {
        for m in ["01", "04", "07", "10"] {
            let b = base(&format!("2026-{m}"));
            assert_eq!(check_release(&b), Ok(()));
            assert!(b.release.is_planned_baseline_month());
        }
        for m in ["02", "03", "05", "06", "08", "09", "11", "12"] {
            assert!(!r(&format!("2026-{m}")).is_planned_baseline_month());
        }
    }

    #[test]
    fn hotpatches_in_the_two_later_months_of_the_quarter() {
        assert_eq!(check_release(&hot("2026-02", "2026-01", 1)), Ok(()));
        assert_eq!(check_release(&hot("2026-03", "2026-01", 2)), Ok(()));
        assert_eq!(check_release(&hot("2026-11", "2026-10", 1)), Ok(()));
        assert_eq!(check_release(&hot("2026-12", "2026-10", 2)), Ok(()));
    }

    #[test]
    fn no_hotpatch_in_a_planned_baseline_month() {
        assert_eq!(
            refusal(&hot("2026-04", "2026-01", 3)),
            "no hotpatch in a planned baseline month: 2026-04 is the baseline month of Q2 2026"
        );
        assert_eq!(
            refusal(&hot("2026-01", "2026-01", 0)),
            "no hotpatch in a planned baseline month: 2026-01 is the baseline month of Q1 2026"
        );
    }

    #[test]
    fn a_hotpatch_comes_after_its_baseline() {
        assert_eq!(
            refusal(&hot("2026-02", "2026-02", 0)),
            "a hotpatch's month must come after its baseline's: 2026-02 is not after 2026-02"
        );
        assert_eq!(
            refusal(&hot("2026-02", "2026-03", 0)),
            "a hotpatch's month must come after its baseline's: 2026-02 is not after 2026-03"
        );
    }

    #[test]
    fn a_new_quarter_needs_its_baseline_first() {
        assert_eq!(
            refusal(&hot("2026-05", "2026-01", 4)),
            "a new quarter needs its baseline first: 2026-05 is in Q2 2026, its baseline 2026-01 in Q1 2026"
        );
        // Same quarter number, other year.
        assert_eq!(
            refusal(&hot("2027-02", "2026-01", 13)),
            "a new quarter needs its baseline first: 2027-02 is in Q1 2027, its baseline 2026-01 in Q1 2026"
        );
    }

    #[test]
    fn the_sequence_follows_from_the_months() {
        assert_eq!(
            refusal(&hot("2026-03", "2026-01", 1)),
            "the sequence follows from the months: hotpatch 2026-03 against 2026-01 is sequence 2, not 1"
        );
        assert_eq!(
            refusal(&info(PackageKind::Baseline, "2026-04", "2026-04", 1)),
            "the sequence follows from the months: baseline 2026-04 against 2026-04 is sequence 0, not 1"
        );
    }

    #[test]
    fn a_baseline_applies_to_itself() {
        assert_eq!(
            refusal(&info(PackageKind::Baseline, "2026-04", "2026-01", 3)),
            "a baseline applies to itself: baseline 2026-04 names baseline release 2026-01"
        );
    }

    #[test]
    fn unplanned_baseline_in_a_hotpatch_month() {
        // February ships an unplanned baseline; March builds against it.
        assert_eq!(check_release(&base("2026-02")), Ok(()));
        assert_eq!(check_release(&hot("2026-03", "2026-02", 1)), Ok(()));
        let history = [base("2026-01"), base("2026-02")];
        assert_eq!(
            check_history(&history, &hot("2026-03", "2026-02", 1)),
            Ok(())
        );
        assert_eq!(
            check_history(&history, &hot("2026-03", "2026-01", 2))
                .unwrap_err()
                .to_string(),
            "2026-02 shipped an unplanned baseline: later hotpatches of the quarter build against it, not against 2026-01"
        );
    }

    #[test]
    fn history_needs_the_baseline_released() {
        assert_eq!(
            check_history(&[base("2026-01")], &hot("2026-02", "2026-01", 1)),
            Ok(())
        );
        assert_eq!(
            check_history(
                &[base("2026-01"), hot("2026-02", "2026-01", 1)],
                &hot("2026-03", "2026-01", 2)
            ),
            Ok(())
        );
        assert_eq!(
            check_history(
                &[base("2026-01"), hot("2026-02", "2026-01", 1)],
                &base("2026-04")
            ),
            Ok(())
        );
        assert_eq!(
            check_history(&[base("2026-01"), hot("2026-03", "2026-01", 2)], &hot("2026-05", "2026-04", 1))
                .unwrap_err()
                .to_string(),
            "a new quarter needs its baseline first: no baseline was released in 2026-04, which 2026-05 builds against"
        );
        // A hotpatch named as a baseline is not one.
        assert!(matches!(
            check_history(
                &[hot("2026-02", "2026-01", 1)],
                &hot("2026-03", "2026-02", 1)
            ),
            Err(CalendarError::MissingBaseline { .. })
        ));
    }

    #[test]
    fn history_one_package_per_month_in_order() {
        assert_eq!(
            check_history(
                &[base("2026-01"), hot("2026-02", "2026-01", 1)],
                &hot("2026-02", "2026-01", 1)
            )
            .unwrap_err()
            .to_string(),
            "2026-02 was already released (as a hotpatch): one package per product per month"
        );
        assert_eq!(
            check_history(
                &[base("2026-01"), hot("2026-03", "2026-01", 2)],
                &hot("2026-02", "2026-01", 1)
            )
            .unwrap_err()
            .to_string(),
            "2026-02 comes before 2026-03, which was already released"
        );
    }
}

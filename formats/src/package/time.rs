//! Timestamps in a package: whole seconds since the Unix epoch, UTC, written
//! as `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339 without fractions or offsets).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Seconds in a day.
pub const SECONDS_PER_DAY: u64 = 86_400;

/// The latest representable instant: 9999-12-31T23:59:59Z.
const MAX_UNIX: u64 = 253_402_300_799;

/// An instant, in whole seconds since 1970-01-01T00:00:00Z, up to the end of
/// the year 9999.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

/// Why a timestamp could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// The text is not `YYYY-MM-DDTHH:MM:SSZ` or `YYYY-MM-DD`.
    #[error("invalid time {text:?}: expected YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DD (UTC)")]
    Syntax {
        /// The text.
        text: String,
    },
    /// `SOURCE_DATE_EPOCH` is set but is not a number of seconds.
    #[error("SOURCE_DATE_EPOCH={text:?} is not a whole number of seconds since 1970")]
    SourceDateEpoch {
        /// Its value.
        text: String,
    },
    /// The instant is after 9999-12-31T23:59:59Z, or before 1970.
    #[error("time {unix} s since 1970 is outside 1970..=9999")]
    OutOfRange {
        /// Seconds since the epoch.
        unix: u64,
    },
}

impl Timestamp {
    /// The instant `unix` seconds after the epoch.
    pub fn from_unix(unix: u64) -> Result<Self, TimeError> {
        if unix > MAX_UNIX {
            return Err(TimeError::OutOfRange { unix });
        }
        Ok(Timestamp(unix))
    }

    /// Seconds since the epoch.
    pub fn unix(self) -> u64 {
        self.0
    }

    /// The current time of the system clock (the epoch if the clock is
    /// before it).
    pub fn now() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Timestamp(secs.min(MAX_UNIX))
    }

    /// `SOURCE_DATE_EPOCH` from the environment, if set (reproducible builds).
    pub fn source_date_epoch() -> Result<Option<Self>, TimeError> {
        let Some(value) = std::env::var_os("SOURCE_DATE_EPOCH") else {
            return Ok(None);
        };
        let text = value.to_string_lossy().into_owned();
        let unix: u64 = text
            .trim()
            .parse()
            .map_err(|_| TimeError::SourceDateEpoch { text: text.clone() })?;
        Timestamp::from_unix(unix).map(Some)
    }

    /// The creation time of a package being written: `SOURCE_DATE_EPOCH` when
    /// set, the system clock otherwise.
    pub fn creation_time() -> Result<Self, TimeError> {
        Ok(Timestamp::source_date_epoch()?.unwrap_or_else(Timestamp::now))
    }

    /// Parse `YYYY-MM-DDTHH:MM:SSZ`, or a bare `YYYY-MM-DD` (midnight UTC).
    pub fn parse(text: &str) -> Result<Self, TimeError> {
        let syntax = || TimeError::Syntax { text: text.into() };
        let b = text.as_bytes();
        let (date, time) = match b.len() {
            10 => (b, None),
            20 => {
                let (date, rest) = b.split_at(10);
                match rest {
                    [b'T', t @ .., b'Z'] => (date, Some(t)),
                    _ => return Err(syntax()),
                }
            }
            _ => return Err(syntax()),
        };
        let (year, month, day) = match date {
            [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] => (
                digits(&[*y0, *y1, *y2, *y3]).ok_or_else(syntax)?,
                digits(&[*m0, *m1]).ok_or_else(syntax)?,
                digits(&[*d0, *d1]).ok_or_else(syntax)?,
            ),
            _ => return Err(syntax()),
        };
        let (hour, minute, second) = match time {
            None => (0, 0, 0),
            Some([h0, h1, b':', m0, m1, b':', s0, s1]) => (
                digits(&[*h0, *h1]).ok_or_else(syntax)?,
                digits(&[*m0, *m1]).ok_or_else(syntax)?,
                digits(&[*s0, *s1]).ok_or_else(syntax)?,
            ),
            Some(_) => return Err(syntax()),
        };
        if year < 1970
            || !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(syntax());
        }
        let days = days_from_civil(year, month, day);
        // Every part is bounded (years up to 9999): no overflow.
        Ok(Timestamp(
            days.saturating_mul(SECONDS_PER_DAY)
                .saturating_add(hour.saturating_mul(3600))
                .saturating_add(minute.saturating_mul(60))
                .saturating_add(second),
        ))
    }

    /// This instant plus `seconds`, or `None` past the year 9999.
    pub fn checked_add(self, seconds: u64) -> Option<Self> {
        self.0
            .checked_add(seconds)
            .filter(|&t| t <= MAX_UNIX)
            .map(Timestamp)
    }

    /// Whole seconds from `earlier` to `self` (0 if `earlier` is later).
    pub fn seconds_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The value of 2 or 4 ASCII digits.
fn digits(b: &[u8]) -> Option<u64> {
    b.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit().then(|| {
            acc.saturating_mul(10)
                .saturating_add(u64::from(c.wrapping_sub(b'0')))
        })
    })
}

fn is_leap(year: u64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date (1970 <= year <= 9999, checked
/// by the caller; saturating arithmetic only to satisfy the lints).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    // Leap years in 1..=y.
    let leaps = |y: u64| (y / 4).saturating_sub(y / 100).saturating_add(y / 400);
    let days_years = year
        .saturating_sub(1970)
        .saturating_mul(365)
        .saturating_add(leaps(year.saturating_sub(1)))
        .saturating_sub(leaps(1969));
    let days_months: u64 = (1..month).map(|m| days_in_month(year, m)).sum();
    days_years
        .saturating_add(days_months)
        .saturating_add(day)
        .saturating_sub(1)
}

/// The civil date of `days` since 1970-01-01: (year, month, day).
fn civil_from_days(mut days: u64) -> (u64, u64, u64) {
    let mut year = 1970;
    loop {
        let len = if is_leap(year) { 366 } else { 365 };
        if days < len {
            break;
        }
        days = days.saturating_sub(len);
        year = year.saturating_add(1);
    }
    let mut month = 1;
    loop {
        let len = days_in_month(year, month);
        if days < len {
            break;
        }
        days = days.saturating_sub(len);
        month = month.saturating_add(1);
    }
    (year, month, days.saturating_add(1))
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0 / SECONDS_PER_DAY;
        let rest = self.0 % SECONDS_PER_DAY;
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rest / 3600,
            rest % 3600 / 60,
            rest % 60
        )
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, TimeError> {
        Timestamp::parse(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        // Only the full form is accepted in a manifest.
        if text.len() != 20 {
            return Err(serde::de::Error::custom(TimeError::Syntax { text }));
        }
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(Timestamp::parse("1970-01-01T00:00:00Z").unwrap().unix(), 0);
        assert_eq!(
            Timestamp::parse("2026-02-15T12:34:56Z").unwrap().unix(),
            1_771_158_896
        );
        assert_eq!(Timestamp::parse("2000-02-29").unwrap().unix(), 951_782_400);
        assert_eq!(
            Timestamp::parse("9999-12-31T23:59:59Z").unwrap().unix(),
            MAX_UNIX
        );
    }

    #[test]
    fn display_round_trips() {
        for t in [0, 951_782_400, 1_771_158_896, 4_102_444_800, MAX_UNIX] {
            let ts = Timestamp::from_unix(t).unwrap();
            assert_eq!(Timestamp::parse(&ts.to_string()).unwrap(), ts);
        }
        assert_eq!(
            Timestamp::from_unix(1_771_158_896).unwrap().to_string(),
            "2026-02-15T12:34:56Z"
        );
    }

    #[test]
    fn refuses_malformed_times() {
        for bad in [
            "",
            "2026-02-30",
            "2025-02-29",
            "2026-13-01",
            "1969-12-31",
            "2026-02-15T24:00:00Z",
            "2026-02-15T12:34:56",
            "2026-02-15T12:34:56+01:00",
            "2026-02-15 12:34:56Z",
            "２026-02-15",
            "+026-02-15",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Timestamp::from_unix(MAX_UNIX + 1).is_err());
    }
}

//! `EXT-X-PROGRAM-DATE-TIME` values: ISO 8601 / RFC 3339 date-times with millisecond
//! precision in UTC (`2024-03-01T12:00:00.250Z`), to and from Unix milliseconds.
//!
//! Written here rather than pulled from a date crate: we only ever need UTC, the
//! proleptic Gregorian calendar and years 1970..=9999, and the day-number conversions
//! are a few lines of integer arithmetic (the era/day-of-era method, exact for every
//! date in range).

use std::fmt::Write as _;

const MS_PER_DAY: u64 = 86_400_000;
/// 9999-12-31T23:59:59.999Z: the last instant with a four-digit year.
const MAX_UNIX_MS: u64 = 253_402_300_799_999;

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`. Instants past year 9999
/// (which no wall clock produces) are clamped to the last representable one so the
/// output is always a valid four-digit-year date.
pub fn format_program_date_time(unix_ms: u64) -> String {
    let unix_ms = unix_ms.min(MAX_UNIX_MS);
    let days = unix_ms / MS_PER_DAY;
    let in_day = unix_ms % MS_PER_DAY;
    let (year, month, day) = civil_from_days(days);
    let mut out = String::with_capacity(24);
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    );
    out
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM|+HHMM|-HHMM)` into Unix
/// milliseconds (fractions beyond milliseconds are truncated). `None` for anything
/// else, including instants before 1970.
pub fn parse_program_date_time(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some((b'.', frac)) = rest.split_first() {
        let len = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        for (i, &c) in frac[..len.min(3)].iter().enumerate() {
            millis += u64::from(c - b'0') * [100, 10, 1][i];
        }
        rest = &frac[len..];
    }
    let offset_minutes: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = (hours * 60 + minutes) as i64;
            if *sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let local_ms =
        days * MS_PER_DAY as i64 + ((hour * 3600 + minute * 60 + second) * 1000 + millis) as i64;
    // A local time ahead of UTC by the offset: subtract it to get UTC.
    let utc_ms = local_ms - offset_minutes * 60_000;
    u64::try_from(utc_ms).ok()
}

fn digits(b: &[u8]) -> Option<u64> {
    b.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
    })
}

fn is_leap(year: u64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 to (year, month, day). Eras are 400-year cycles of 146,097
/// days starting on March 1st, which puts the leap day at the end of the year (Howard
/// Hinnant's `civil_from_days`).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // shift the epoch to 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`] for years 0..=9999 (may be negative before 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> i64 {
    let y = year as i64 - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = month as i64;
    let doy = (153 * if m > 2 { m - 3 } else { m + 9 } + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_program_date_time(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 is a leap day in a century leap year.
        assert_eq!(
            format_program_date_time(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            format_program_date_time(1_709_294_400_250),
            "2024-03-01T12:00:00.250Z"
        );
        // The last millisecond of a year rolls correctly into the next one.
        assert_eq!(
            format_program_date_time(1_704_067_199_999),
            "2023-12-31T23:59:59.999Z"
        );
        assert_eq!(
            format_program_date_time(1_704_067_200_000),
            "2024-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_program_date_time(u64::MAX),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn day_numbers_round_trip_over_the_whole_range() {
        // Every day from 1970 to 9999 (a little under 3 million): the two conversions
        // are exact inverses and consecutive days step through the calendar.
        let mut previous = civil_from_days(0);
        for days in 1..=(MAX_UNIX_MS / MS_PER_DAY) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days as i64, "{y}-{m}-{d}");
            let (py, pm, pd) = previous;
            let next_day = pd < days_in_month(py, pm) && (y, m, d) == (py, pm, pd + 1);
            let next_month = d == 1 && pm < 12 && (y, m) == (py, pm + 1);
            let next_year = (m, d) == (1, 1) && (pm, pd) == (12, 31) && y == py + 1;
            assert!(
                next_day || next_month || next_year,
                "{previous:?} -> {y}-{m}-{d}"
            );
            previous = (y, m, d);
        }
    }

    #[test]
    fn parses_what_it_formats_and_common_variants() {
        for ms in [0, 951_782_400_000, 1_709_294_400_250, 1_704_067_199_999] {
            assert_eq!(
                parse_program_date_time(&format_program_date_time(ms)),
                Some(ms)
            );
        }
        let base = 1_709_294_400_000;
        assert_eq!(parse_program_date_time("2024-03-01T12:00:00Z"), Some(base));
        assert_eq!(
            parse_program_date_time("2024-03-01T12:00:00.1Z"),
            Some(base + 100)
        );
        assert_eq!(
            parse_program_date_time("2024-03-01T12:00:00.123456Z"),
            Some(base + 123)
        );
        assert_eq!(
            parse_program_date_time("2024-03-01T13:00:00+01:00"),
            Some(base)
        );
        assert_eq!(
            parse_program_date_time("2024-03-01T11:30:00-0030"),
            Some(base)
        );
    }

    #[test]
    fn rejects_malformed_dates() {
        for bad in [
            "",
            "2024-03-01",
            "2024-03-01T12:00:00",
            "2024-02-30T12:00:00Z",
            "2023-02-29T12:00:00Z",
            "2024-13-01T12:00:00Z",
            "2024-03-01T24:00:00Z",
            "2024-03-01T12:00:00.Z",
            "2024-03-01T12:00:00+25:00",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:30:00+01:00",
            "2024-03-01T12:00:00Zjunk",
            "2024-03-01T1é:00:00Z",
        ] {
            assert_eq!(parse_program_date_time(bad), None, "{bad}");
        }
    }
}

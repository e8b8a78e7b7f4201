//! Dates and timestamps as the contract reads and writes them, in integer arithmetic.
//!
//! Dates are days since 1970-01-01 and timestamps are whole seconds since the Unix
//! epoch in UTC. Hand-written (Howard Hinnant's civil-date algorithms) rather than
//! a dependency: the contract needs only strict parsing of two fixed shapes, and
//! exactness matters more than features.

/// Seconds in one day.
pub const SECONDS_PER_DAY: i64 = 86_400;

/// A calendar date as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(pub i32);

impl Date {
    /// The date from a year, month (1..=12) and day (1..=31), or `None` when it does not exist.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Date> {
        if !(1..=9999).contains(&year) || !(1..=12).contains(&month) {
            return None;
        }
        if day < 1 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date(days_from_civil(year as i64, month, day) as i32))
    }

    /// Strictly parses `YYYY-MM-DD` (years 0001..=9999).
    pub fn parse(text: &str) -> Option<Date> {
        let b = text.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let year = digits(&b[0..4])?;
        let month = digits(&b[5..7])?;
        let day = digits(&b[8..10])?;
        Date::from_ymd(year as i32, month, day)
    }

    /// Year, month and day.
    pub fn ymd(self) -> (i32, u32, u32) {
        let (y, m, d) = civil_from_days(self.0 as i64);
        (y as i32, m, d)
    }

    /// Seconds since the epoch at 00:00:00Z of this date.
    pub fn midnight_utc(self) -> i64 {
        self.0 as i64 * SECONDS_PER_DAY
    }

    /// The date `days` later.
    pub fn add_days(self, days: i32) -> Date {
        Date(self.0 + days)
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl std::str::FromStr for Date {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Date::parse(s).ok_or_else(|| format!("`{s}` is not a date of the form YYYY-MM-DD"))
    }
}

/// Strictly parses an RFC 3339 timestamp (`T` or `t` separator, `Z`, `z` or a numeric
/// `±HH:MM` offset, seconds 00..=59, any number of fraction digits, which are
/// truncated) into whole seconds since the epoch, normalised to UTC.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date = Date::parse(&text[..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let fraction = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if fraction == 0 {
            return None;
        }
        rest = &rest[1 + fraction..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = digits(&[*h1, *h2])?;
            let om = digits(&[*m1, *m2])?;
            if oh > 23 || om > 59 {
                return None;
            }
            let seconds = (oh * 3600 + om * 60) as i64;
            if *sign == b'+' { seconds } else { -seconds }
        }
        _ => return None,
    };
    let local = date.midnight_utc() + (hour * 3600 + minute * 60 + second) as i64;
    Some(local - offset)
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_timestamp(seconds: i64) -> String {
    let mut out = Vec::with_capacity(20);
    push_timestamp(&mut out, seconds);
    String::from_utf8(out).expect("a timestamp is ASCII")
}

/// Appends `seconds` since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC) to
/// `out`; what [`format_timestamp`] returns.
pub fn push_timestamp(out: &mut Vec<u8>, seconds: i64) {
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let secs = seconds.rem_euclid(SECONDS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        out.extend_from_slice(format_timestamp_slow(seconds).as_bytes());
        return;
    }
    push_ymd(out, y as u32, m, d);
    out.push(b'T');
    push_two(out, (secs / 3600) as u32);
    out.push(b':');
    push_two(out, (secs / 60 % 60) as u32);
    out.push(b':');
    push_two(out, (secs % 60) as u32);
    out.push(b'Z');
}

/// Appends `date` as `YYYY-MM-DD`, as its `Display` writes it.
pub fn push_date(out: &mut Vec<u8>, date: Date) {
    let (y, m, d) = date.ymd();
    if (0..=9999).contains(&y) {
        push_ymd(out, y as u32, m, d);
    } else {
        out.extend_from_slice(date.to_string().as_bytes());
    }
}

fn push_ymd(out: &mut Vec<u8>, y: u32, m: u32, d: u32) {
    push_two(out, y / 100);
    push_two(out, y % 100);
    out.push(b'-');
    push_two(out, m);
    out.push(b'-');
    push_two(out, d);
}

/// Two decimal digits of `v` (below 100).
fn push_two(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
}

/// The `core::fmt` form, for years outside 0..=9999.
fn format_timestamp_slow(seconds: i64) -> String {
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let secs = seconds.rem_euclid(SECONDS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses ASCII digits (no sign) into a number; `None` for any other byte.
fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u32)
    })
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_reject_impossible_days() {
        assert_eq!(Date::parse("1970-01-01"), Some(Date(0)));
        assert_eq!(Date::parse("2026-10-01").unwrap().to_string(), "2026-10-01");
        assert_eq!(Date::parse("2024-02-29").unwrap().to_string(), "2024-02-29");
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-01",
            "0000-01-01",
            "2026/10/01",
            " 2026-10-01",
            "2026-10-011",
        ] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
        for day in -800_000..800_000 {
            let d = Date(day);
            assert_eq!(
                Date::parse(&d.to_string()),
                if d.ymd().0 >= 1 && d.ymd().0 <= 9999 {
                    Some(d)
                } else {
                    None
                }
            );
        }
    }

    #[test]
    fn timestamps_normalise_offsets_and_truncate_fractions() {
        let z = parse_timestamp("2026-09-30T23:59:59Z").unwrap();
        assert_eq!(format_timestamp(z), "2026-09-30T23:59:59Z");
        assert_eq!(parse_timestamp("2026-10-01T01:59:59.999+02:00"), Some(z));
        assert_eq!(parse_timestamp("2026-09-30T20:29:59.5-03:30"), Some(z));
        assert_eq!(parse_timestamp("2026-09-30t23:59:59z"), Some(z));
        for bad in [
            "2026-09-30 23:59:59Z",
            "2026-09-30T23:59Z",
            "2026-09-30T24:00:00Z",
            "2026-09-30T23:59:60Z",
            "2026-09-30T23:59:59",
            "2026-09-30T23:59:59.Z",
            "2026-09-30T23:59:59+0200",
            "2026-09-30T23:59:59+24:00",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
        assert_eq!(format_timestamp(-1), "1969-12-31T23:59:59Z");
    }
}

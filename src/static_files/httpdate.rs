//! HTTP dates (RFC 9110 §5.6.7): formatting `Last-Modified` and parsing
//! `If-Modified-Since` / `If-Range`.
//!
//! Dates are whole seconds since the Unix epoch (`i64`), always UTC.
//!
//! Invariants:
//! - `format` always produces exactly [`LEN`] bytes of IMF-fixdate
//!   (`Sun, 06 Nov 1994 08:49:37 GMT`); times outside years 1970..=9999 are
//!   clamped so the four-digit year never overflows.
//! - `parse` accepts the three forms a recipient must accept (IMF-fixdate,
//!   obsolete RFC 850, asctime), surrounded by optional whitespace, and answers
//!   `None` for anything else; it never panics and never allocates.
//! - `parse(format(t)) == Some(t)` for every `t` in range.
//!
//! The civil-date arithmetic is Howard Hinnant's `days_from_civil` /
//! `civil_from_days`, exact for the proleptic Gregorian calendar.

/// Length of an IMF-fixdate.
pub const LEN: usize = 29;

/// 9999-12-31T23:59:59Z, the last instant a four-digit year can show.
const MAX_SECS: i64 = 253_402_300_799;

const DAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
const LONG_DAYS: [&[u8]; 7] = [
    b"Sunday",
    b"Monday",
    b"Tuesday",
    b"Wednesday",
    b"Thursday",
    b"Friday",
    b"Saturday",
];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Formats `secs` (Unix time) as an IMF-fixdate.
pub fn format(secs: i64) -> [u8; LEN] {
    let secs = secs.clamp(0, MAX_SECS);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 4 with Sunday = 0).
    let weekday = (days + 4).rem_euclid(7) as usize;

    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[0..3].copy_from_slice(DAYS[weekday]);
    two_digits(&mut out[5..7], i64::from(day));
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    two_digits(&mut out[12..14], year / 100);
    two_digits(&mut out[14..16], year % 100);
    two_digits(&mut out[17..19], tod / 3600);
    two_digits(&mut out[20..22], tod / 60 % 60);
    two_digits(&mut out[23..25], tod % 60);
    out
}

fn two_digits(out: &mut [u8], v: i64) {
    out[0] = b'0' + (v / 10 % 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

/// Parses any of the three HTTP-date forms into Unix seconds.
pub fn parse(value: &[u8]) -> Option<i64> {
    let v = value.trim_ascii();
    parse_imf_fixdate(v)
        .or_else(|| parse_rfc850(v))
        .or_else(|| parse_asctime(v))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn parse_imf_fixdate(v: &[u8]) -> Option<i64> {
    if v.len() != LEN || &v[3..5] != b", " || v[7] != b' ' || v[11] != b' ' || v[16] != b' ' {
        return None;
    }
    if &v[25..] != b" GMT" {
        return None;
    }
    day_name(&v[0..3])?;
    let day = digits(&v[5..7])?;
    let month = month(&v[8..11])?;
    let year = i64::from(digits(&v[12..16])?);
    let tod = time_of_day(&v[17..25])?;
    to_secs(year, month, day, tod)
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn parse_rfc850(v: &[u8]) -> Option<i64> {
    let comma = v.iter().position(|&b| b == b',')?;
    if !LONG_DAYS
        .iter()
        .any(|d| d.eq_ignore_ascii_case(&v[..comma]))
    {
        return None;
    }
    let rest = &v[comma..];
    // ", 06-Nov-94 08:49:37 GMT"
    if rest.len() != 24 || &rest[..2] != b", " || rest[4] != b'-' || rest[8] != b'-' {
        return None;
    }
    if rest[11] != b' ' || &rest[20..] != b" GMT" {
        return None;
    }
    let day = digits(&rest[2..4])?;
    let month = month(&rest[5..8])?;
    let yy = i64::from(digits(&rest[9..11])?);
    let tod = time_of_day(&rest[12..20])?;
    // RFC 9110 asks for "the most recent year with these digits that is not
    // more than 50 years in the future"; files are never that old, so a fixed
    // pivot (like most servers use) gives the same answer.
    let year = if yy < 70 { 2000 + yy } else { 1900 + yy };
    to_secs(year, month, day, tod)
}

/// `Sun Nov  6 08:49:37 1994`
fn parse_asctime(v: &[u8]) -> Option<i64> {
    if v.len() != 24 || v[3] != b' ' || v[7] != b' ' || v[10] != b' ' || v[19] != b' ' {
        return None;
    }
    day_name(&v[0..3])?;
    let month = month(&v[4..7])?;
    let day = if v[8] == b' ' {
        digits(&v[9..10])?
    } else {
        digits(&v[8..10])?
    };
    let tod = time_of_day(&v[11..19])?;
    let year = i64::from(digits(&v[20..24])?);
    to_secs(year, month, day, tod)
}

fn day_name(v: &[u8]) -> Option<usize> {
    DAYS.iter().position(|d| d.eq_ignore_ascii_case(v))
}

fn month(v: &[u8]) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(v))
        .map(|i| i as u32 + 1)
}

/// ASCII digits only (at most 4 of them here), no sign, no spaces.
fn digits(v: &[u8]) -> Option<u32> {
    if v.is_empty() || v.len() > 9 {
        return None;
    }
    v.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// `HH:MM:SS` → seconds into the day. A leap second (`:60`) is accepted.
fn time_of_day(v: &[u8]) -> Option<i64> {
    if v.len() != 8 || v[2] != b':' || v[5] != b':' {
        return None;
    }
    let (h, m, s) = (digits(&v[0..2])?, digits(&v[3..5])?, digits(&v[6..8])?);
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(i64::from(h * 3600 + m * 60 + s))
}

fn to_secs(year: i64, month: u32, day: u32, tod: i64) -> Option<i64> {
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + tod)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (month 1..=12).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of `days_from_civil`: (year, month 1..=12, day 1..=31).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
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

    const RFC_EXAMPLE: i64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    #[test]
    fn formats_the_rfc_example_and_the_epoch() {
        assert_eq!(&format(RFC_EXAMPLE), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn out_of_range_times_are_clamped_not_garbled() {
        assert_eq!(&format(-5), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format(i64::MAX), b"Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn parses_all_three_forms() {
        for v in [
            &b"Sun, 06 Nov 1994 08:49:37 GMT"[..],
            b"Sunday, 06-Nov-94 08:49:37 GMT",
            b"Sun Nov  6 08:49:37 1994",
            b"  Sun, 06 Nov 1994 08:49:37 GMT \t",
            b"sun, 06 nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(
                parse(v),
                Some(RFC_EXAMPLE),
                "{}",
                String::from_utf8_lossy(v)
            );
        }
        assert_eq!(
            parse(b"Wed Nov 16 08:49:37 1994"),
            Some(RFC_EXAMPLE + 10 * 86_400)
        );
        assert_eq!(
            parse(b"Friday, 01-Jan-21 00:00:00 GMT"),
            Some(1_609_459_200)
        );
    }

    #[test]
    fn refuses_garbage_and_impossible_dates() {
        for v in [
            &b""[..],
            b"yesterday",
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Sun, 6 Nov 1994 08:49:37 GMT",
            b"Sun, 31 Nov 1994 08:49:37 GMT",
            b"Sun, 29 Feb 1900 00:00:00 GMT",
            b"Sun, 06 Nov 1994 24:00:00 GMT",
            b"Sun, 06 Nov 1994 08:60:00 GMT",
            b"Sun, 06 Nov +994 08:49:37 GMT",
            b"Xyz, 06 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Foo 1994 08:49:37 GMT",
            b"Sunday, 06-Nov-1994 08:49:37 GMT",
            b"Funday, 06-Nov-94 08:49:37 GMT",
            b",",
            b"Sun Nov  6 08:49:37 19x4",
            b"784111777",
        ] {
            assert_eq!(parse(v), None, "{}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn round_trips_across_the_calendar() {
        // Every day boundary for a few leap cycles, plus odd seconds.
        let mut t = 0i64;
        while t < 4 * 366 * 86_400 * 100 {
            assert_eq!(parse(&format(t)), Some(t), "t={t}");
            assert_eq!(parse(&format(t + 86_399)), Some(t + 86_399));
            t += 86_400 * 13 + 3_677;
        }
        assert_eq!(parse(&format(MAX_SECS)), Some(MAX_SECS));
    }

    #[test]
    fn weekday_is_right_around_leap_days() {
        assert_eq!(&format(1_709_164_800)[..16], b"Thu, 29 Feb 2024");
        assert_eq!(&format(4_107_542_400)[..16], b"Mon, 01 Mar 2100");
    }
}

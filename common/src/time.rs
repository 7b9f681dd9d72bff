//! Wall-clock time as `(seconds, nanoseconds)` since the Unix epoch, and the
//! few text forms Berth needs: RFC 3339 with nanoseconds (written in every
//! log record by the shim, shown by berthctl), RFC 3339 parsing (log records,
//! image config `created` times), and the `--since`/`--until` forms docker
//! accepts.
//!
//! No date library: the calendar arithmetic is Howard Hinnant's
//! `days_from_civil` / `civil_from_days` (proleptic Gregorian, UTC only).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: u32 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// The current time as `(seconds, nanoseconds)` since the Unix epoch.
/// `nanos` is always below 1e9; a clock before 1970 gives negative seconds.
pub fn now() -> (i64, u32) {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (secs, 0),
                n => (secs - 1, NANOS_PER_SEC - n),
            }
        }
    }
}

/// Formats an instant as UTC RFC 3339 with exactly nine fractional digits,
/// e.g. `2026-11-26T19:48:21.123456789Z`.
///
/// Go's `time.RFC3339Nano` trims trailing zeros of the fraction; we keep all
/// nine on purpose. A fixed-width fraction is still valid RFC 3339 (the
/// grammar allows any number of `time-secfrac` digits), and fixed width makes
/// log lines sort as text and parse with simple offsets. Readers of other
/// writers' trimmed stamps are fine too: [`parse_rfc3339`] takes 1–9 digits.
///
/// Years outside 0000–9999 cannot be expressed in RFC 3339; they are written
/// with as many digits as needed (and a sign if negative) rather than wrapped.
/// `nanos` of a second or more carry into the seconds.
pub fn format_rfc3339_nano(secs: i64, nanos: u32) -> String {
    let mut s = String::with_capacity(30);
    write_rfc3339_nano(&mut s, secs, nanos);
    s
}

/// Appends the [`format_rfc3339_nano`] form to `out`, so that a caller that
/// stamps often can reuse one buffer.
pub fn write_rfc3339_nano(out: &mut String, secs: i64, nanos: u32) {
    let secs = secs.saturating_add(i64::from(nanos / NANOS_PER_SEC));
    let nanos = nanos % NANOS_PER_SEC;
    let days = secs.div_euclid(SECS_PER_DAY);
    let sod = secs.rem_euclid(SECS_PER_DAY) as u32;
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        push_digits(out, y as u32, 4);
    } else {
        let _ = write!(out, "{y}");
    }
    out.push('-');
    push_digits(out, m, 2);
    out.push('-');
    push_digits(out, d, 2);
    out.push('T');
    push_digits(out, sod / 3600, 2);
    out.push(':');
    push_digits(out, sod / 60 % 60, 2);
    out.push(':');
    push_digits(out, sod % 60, 2);
    out.push('.');
    push_digits(out, nanos, 9);
    out.push('Z');
}

/// Pushes the low `width` decimal digits of `v`, zero-padded.
fn push_digits(out: &mut String, v: u32, width: u32) {
    let mut div = 10u32.pow(width - 1);
    while div > 0 {
        out.push(char::from(b'0' + (v / div % 10) as u8));
        div /= 10;
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's
/// `days_from_civil`). `m` is 1–12, `d` 1–31.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01 (Hinnant's `civil_from_days`):
/// `(year, month 1–12, day 1–31)`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Exactly `n` ASCII digits at the start of `s`, as a number.
fn digits(s: &[u8], n: usize) -> Option<u32> {
    let part = s.get(..n)?;
    part.iter().try_fold(0u32, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0')))
}

/// Parses `YYYY-MM-DD` at the start of `s` into days since the epoch.
fn parse_date(s: &[u8]) -> Option<i64> {
    if s.len() < 10 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let y = i64::from(digits(s, 4)?);
    let m = digits(&s[5..], 2)?;
    let d = digits(&s[8..], 2)?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Parses an RFC 3339 timestamp: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`,
/// with a fraction of 1–9 digits. `T` and `Z` may be lowercase (RFC 3339
/// allows it). Returns UTC `(seconds, nanoseconds)` since the epoch, or `None`
/// for anything else, including impossible dates (Feb 30) and leap seconds.
pub fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let days = parse_date(b)?;
    if b.len() < 20 || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (digits(&b[11..], 2)?, digits(&b[14..], 2)?, digits(&b[17..], 2)?);
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        nanos = digits(frac, n)? * 10u32.pow(9 - n as u32);
        rest = &frac[n..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0i64,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let oh = digits(&[*oh1, *oh2], 2)?;
            let om = digits(&[*om1, *om2], 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let secs = days * SECS_PER_DAY + i64::from(h * 3600 + mi * 60 + sec) - offset;
    Some((secs, nanos))
}

/// Parses the time forms docker's `logs --since` / `--until` accept, relative
/// to `now_secs`:
///
/// - an RFC 3339 timestamp (see [`parse_rfc3339`]);
/// - a date `YYYY-MM-DD`, meaning its midnight UTC;
/// - a Unix timestamp `SECONDS[.FRACTION]` (fraction of 1–9 digits);
/// - a Go-style duration such as `10m`, `1h30m`, `45s`, `1.5h`, `500ms`
///   (units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`), meaning that long before now.
///
/// Everything is UTC; `None` for anything else.
pub fn parse_since(s: &str, now_secs: i64) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    if b.len() == 10 {
        if let Some(days) = parse_date(b) {
            return Some((days * SECS_PER_DAY, 0));
        }
    }
    if let Some(t) = parse_unix(b) {
        return Some(t);
    }
    if let Some(ago) = parse_duration_nanos(s) {
        let t = i128::from(now_secs) * i128::from(NANOS_PER_SEC) - ago as i128;
        let secs = i64::try_from(t.div_euclid(i128::from(NANOS_PER_SEC))).ok()?;
        return Some((secs, t.rem_euclid(i128::from(NANOS_PER_SEC)) as u32));
    }
    parse_rfc3339(s)
}

/// `SECONDS[.FRACTION]`, all ASCII digits.
fn parse_unix(b: &[u8]) -> Option<(i64, u32)> {
    let (int, frac) = match b.iter().position(|&c| c == b'.') {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    if int.is_empty() || int.len() > 18 || !int.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs = int.iter().fold(0i64, |acc, &c| acc * 10 + i64::from(c - b'0'));
    let nanos = match frac {
        None => 0,
        Some(f) if (1..=9).contains(&f.len()) => digits(f, f.len())? * 10u32.pow(9 - f.len() as u32),
        Some(_) => return None,
    };
    Some((secs, nanos))
}

/// A Go-style duration (`1h30m`, `1.5h`, `250ms`, `30s`) in milliseconds, as
/// docker's duration flags take them (`--health-interval`).
pub fn parse_duration_millis(s: &str) -> Option<u64> {
    parse_duration_nanos(s).and_then(|n| u64::try_from(n / 1_000_000).ok())
}

/// A Go-style duration (`1h30m`, `1.5h`, `250ms`; no sign) in nanoseconds.
fn parse_duration_nanos(s: &str) -> Option<u128> {
    const UNITS: [(&str, u128); 8] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("μs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    // Far beyond any sensible "ago" (about 31,000 years), and far from overflow.
    const MAX: u128 = 1_000_000_000_000_000_000_000;
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if (int.is_empty() && frac.is_empty()) || int.len() > 20 || frac.len() > 20 {
            return None;
        }
        let (unit, mult) = UNITS.iter().find(|(u, _)| after.starts_with(u))?;
        let whole = int.bytes().fold(0u128, |acc, c| acc * 10 + u128::from(c - b'0'));
        let frac_val = frac.bytes().fold(0u128, |acc, c| acc * 10 + u128::from(c - b'0'));
        total = total.checked_add(whole.checked_mul(*mult)?)?.checked_add(frac_val * mult / 10u128.pow(frac.len() as u32))?;
        if total > MAX {
            return None;
        }
        rest = &after[unit.len()..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: u32 = NANOS_PER_SEC;

    #[test]
    fn known_instants_format() {
        assert_eq!(format_rfc3339_nano(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(format_rfc3339_nano(1_709_210_096, 1), "2024-02-29T12:34:56.000000001Z");
        assert_eq!(format_rfc3339_nano(951_868_800, 500_000_000), "2000-03-01T00:00:00.500000000Z");
        assert_eq!(format_rfc3339_nano(951_868_799, 999_999_999), "2000-02-29T23:59:59.999999999Z");
        assert_eq!(format_rfc3339_nano(2_147_483_648, 0), "2038-01-19T03:14:08.000000000Z");
        assert_eq!(format_rfc3339_nano(1_795_722_501, 123_456_789), "2026-11-26T19:48:21.123456789Z");
        assert_eq!(format_rfc3339_nano(253_402_300_799, 0), "9999-12-31T23:59:59.000000000Z");
        assert_eq!(format_rfc3339_nano(-2_208_988_800, 0), "1900-01-01T00:00:00.000000000Z");
        assert_eq!(format_rfc3339_nano(-1, 0), "1969-12-31T23:59:59.000000000Z");
        // Nanoseconds beyond a second carry.
        assert_eq!(format_rfc3339_nano(0, 1_500_000_000), "1970-01-01T00:00:01.500000000Z");
    }

    #[test]
    fn known_instants_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(parse_rfc3339("2024-02-29T12:34:56.000000001Z"), Some((1_709_210_096, 1)));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00.5Z"), Some((951_868_800, 500_000_000)));
        assert_eq!(parse_rfc3339("2038-01-19T03:14:08Z"), Some((2_147_483_648, 0)));
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59.999999999Z"), Some((253_402_300_799, 999_999_999)));
        assert_eq!(parse_rfc3339("1900-01-01T00:00:00Z"), Some((-2_208_988_800, 0)));
        assert_eq!(parse_rfc3339("2024-02-29t12:34:56z"), Some((1_709_210_096, 0)));
        assert_eq!(parse_rfc3339("2024-02-29T12:34:56.123Z"), Some((1_709_210_096, 123_000_000)));
    }

    #[test]
    fn offsets() {
        let utc = parse_rfc3339("2024-02-29T10:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2024-02-29T12:00:00+02:00"), Some(utc));
        assert_eq!(parse_rfc3339("2024-02-29T04:30:00-05:30"), Some(utc));
        assert_eq!(parse_rfc3339("2024-02-29T10:00:00+00:00"), Some(utc));
        assert_eq!(parse_rfc3339("2024-02-29T10:00:00-00:00"), Some(utc));
        // An offset that crosses a day (and a leap day) boundary.
        assert_eq!(parse_rfc3339("2024-03-01T01:00:00.25+03:00"), Some((utc.0 + 12 * 3600, 250_000_000)));
        assert_eq!(parse_rfc3339("2024-02-28T23:00:00-11:00"), Some(utc));
    }

    #[test]
    fn days_round_trip_over_a_wide_range() {
        let mut prev = civil_from_days(-800_001);
        for z in -800_000..800_000i64 {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            // Consecutive days: next day in month, or the first of the next month.
            if d == 1 {
                assert_eq!(prev.2, days_in_month(prev.0, prev.1));
            } else {
                assert_eq!((prev.0, prev.1, prev.2 + 1), (y, m, d));
            }
            prev = (y, m, d);
        }
    }

    #[test]
    fn format_parse_round_trip() {
        // From 0001 to 9999 in odd strides, with varied fractions.
        let start = parse_rfc3339("0001-01-01T00:00:00Z").unwrap().0;
        let end = parse_rfc3339("9999-12-31T23:59:59Z").unwrap().0;
        let mut secs = start;
        let mut n = 0u32;
        let mut count = 0;
        while secs <= end {
            let nanos = n % NS;
            let s = format_rfc3339_nano(secs, nanos);
            assert_eq!(s.len(), 30, "{s}");
            assert_eq!(parse_rfc3339(&s), Some((secs, nanos)), "{s}");
            secs += 3_155_760 + 7_919; // ~36 days and change
            n = n.wrapping_mul(2_654_435_761).wrapping_add(12_345);
            count += 1;
        }
        assert!(count > 90_000);
        // Text order equals time order (the reason for a fixed width).
        let a = format_rfc3339_nano(1_700_000_000, 900_000_000);
        let b = format_rfc3339_nano(1_700_000_001, 100_000_000);
        assert!(a < b);
    }

    #[test]
    fn bad_inputs() {
        for s in [
            "",
            "2024",
            "2024-02-29",
            "2024-02-29T12:34:56",
            "2024-02-29T12:34:56.Z",
            "2024-02-29T12:34:56.1234567890Z",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-00-01T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:60:00Z",
            "2024-01-01T23:59:60Z",
            "2024-01-01 12:00:00Z",
            "2024-01-01T12:00:00ZZ",
            "2024-01-01T12:00:00 Z",
            "2024-01-01T12:00:00+2:00",
            "2024-01-01T12:00:00+0200",
            "2024-01-01T12:00:00+24:00",
            "2024-01-01T12:00:00+01:60",
            "2024-1-01T12:00:00Z",
            "+024-01-01T12:00:00Z",
            "2024-01-01T1a:00:00Z",
            "2024-01-01T12:00:00.１Z",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s:?}");
        }
    }

    #[test]
    fn since_forms() {
        let now = 1_700_000_000;
        assert_eq!(parse_since("2024-02-29T12:34:56.5Z", now), Some((1_709_210_096, 500_000_000)));
        assert_eq!(parse_since("2024-02-29T14:34:56+02:00", now), Some((1_709_210_096, 0)));
        assert_eq!(parse_since("2000-03-01", now), Some((951_868_800, 0)));
        assert_eq!(parse_since("1700000000", now), Some((1_700_000_000, 0)));
        assert_eq!(parse_since("0", now), Some((0, 0)));
        assert_eq!(parse_since("1700000000.123", now), Some((1_700_000_000, 123_000_000)));
        assert_eq!(parse_since("1700000000.000000001", now), Some((1_700_000_000, 1)));
        assert_eq!(parse_since("10m", now), Some((now - 600, 0)));
        assert_eq!(parse_since("1h30m", now), Some((now - 5400, 0)));
        assert_eq!(parse_since("45s", now), Some((now - 45, 0)));
        assert_eq!(parse_since("2h", now), Some((now - 7200, 0)));
        assert_eq!(parse_since("1.5h", now), Some((now - 5400, 0)));
        assert_eq!(parse_since("1h0m10s", now), Some((now - 3610, 0)));
        assert_eq!(parse_since("500ms", now), Some((now - 1, 500_000_000)));
        assert_eq!(parse_since("1us", now), Some((now - 1, 999_999_000)));
        assert_eq!(parse_since("2µs", now), Some((now - 1, 999_998_000)));
        assert_eq!(parse_since(".5s", now), Some((now - 1, 500_000_000)));
        // A duration reaching before the epoch gives negative seconds.
        assert_eq!(parse_since("1s", 0), Some((-1, 0)));
    }

    #[test]
    fn since_bad_inputs() {
        for s in [
            "",
            "10",
            "10x",
            "h",
            "-10m",
            "1h30",
            "1h 30m",
            ".",
            "1..5s",
            "2024-02-30",
            "2024-2-3",
            "12:00",
            "1700000000.",
            "1700000000.1234567890",
            "17e8",
            "99999999999999999999999h",
            "now",
        ] {
            // "10" alone is a Unix timestamp, not a duration.
            if s == "10" {
                assert_eq!(parse_since(s, 1000), Some((10, 0)));
                continue;
            }
            assert_eq!(parse_since(s, 1_700_000_000), None, "{s:?}");
        }
    }

    #[test]
    fn now_is_sane() {
        let (s, n) = now();
        assert!(s > 1_700_000_000, "{s}");
        assert!(n < NS);
        let (s2, _) = now();
        assert!(s2 >= s);
    }
}

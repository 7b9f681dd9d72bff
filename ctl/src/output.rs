//! Tables, sizes and ages as people read them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Print rows as left-aligned columns separated by three spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<w$}   ", c, w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Sizes in SI units, as docker prints them: 4.26MB.
pub fn size(bytes: i64) -> String {
    let b = bytes as f64;
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{:.3}", v).trim_end_matches('0').trim_end_matches('.').to_owned() + units[u]
    }
}

/// "3 minutes ago" for a time in seconds since the epoch.
pub fn ago(seconds: i64) -> String {
    if seconds <= 0 {
        return "N/A".into();
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let d = (now - seconds).max(0);
    let (n, unit) = match d {
        0..=59 => return "Less than a minute ago".into(),
        60..=3599 => (d / 60, "minute"),
        3600..=86_399 => (d / 3600, "hour"),
        86_400..=604_799 => (d / 86_400, "day"),
        604_800..=2_591_999 => (d / 604_800, "week"),
        2_592_000..=31_535_999 => (d / 2_592_000, "month"),
        _ => (d / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A span as docker writes it in `Up 5 seconds`.
pub fn duration(secs: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match secs.max(0) {
        0 => "Less than a second".into(),
        s @ 1..=59 => plural(s, "second"),
        60..=119 => "About a minute".into(),
        s @ 120..=3599 => plural(s / 60, "minute"),
        3600..=7199 => "About an hour".into(),
        s @ 7200..=172_799 => plural(s / 3600, "hour"),
        s => plural(s / 86_400, "day"),
    }
}

/// Seconds since the epoch of an RFC 3339 time ("2024-01-02T03:04:05.123Z", "+01:00" offsets).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b't' && b[10] != b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = s.get(19..)?;
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) => {
            let sign = if r.starts_with('-') { -1 } else { 1 };
            sign * (r.get(1..3)?.parse::<i64>().ok()? * 3600 + r.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Split a normalized reference into the repository and tag docker shows.
pub fn repo_tag(name: &str) -> (String, String) {
    let (name, digest) = match name.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (name, None),
    };
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], name[slash + i + 1..].to_owned()),
        None => (name, if digest.is_some() { "<none>".to_owned() } else { String::new() }),
    };
    let repo = repo.strip_prefix("docker.io/library/").or_else(|| repo.strip_prefix("docker.io/")).unwrap_or(repo);
    (repo.to_owned(), tag)
}

pub fn short_id(digest: &str) -> String {
    digest.strip_prefix("sha256:").unwrap_or(digest).chars().take(12).collect()
}

pub fn json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00.5+01:00"), Some(951_865_200));
        assert_eq!(parse_rfc3339("nonsense"), None);
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00+0\u{e9}00"), None);
        assert_eq!(parse_rfc3339("2000-03-01T00:00:0\u{e9}Z"), None);
    }

    #[test]
    fn references_split_like_docker_shows_them() {
        assert_eq!(repo_tag("docker.io/library/busybox:latest"), ("busybox".into(), "latest".into()));
        assert_eq!(repo_tag("localhost:5000/a/b:v1"), ("localhost:5000/a/b".into(), "v1".into()));
        assert_eq!(size(4_261_000), "4.261MB");
        assert_eq!(size(999), "999B");
        assert_eq!(duration(5), "5 seconds");
        assert_eq!(duration(1), "1 second");
        assert_eq!(duration(90), "About a minute");
        assert_eq!(duration(7300), "2 hours");
    }
}

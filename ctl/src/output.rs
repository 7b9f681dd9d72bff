//! Tables, sizes and ages as people read them.

use berth_common::reference::Reference;
use berth_common::time;

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
    let d = (now_secs() - seconds).max(0);
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
    time::now().0
}

/// A protobuf timestamp as RFC 3339 with nanoseconds, in UTC.
pub fn rfc3339(t: &prost_types::Timestamp) -> String {
    time::format_rfc3339_nano(t.seconds, t.nanos.max(0) as u32)
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

/// The repository and tag docker shows for an image name: `busybox` and
/// `latest` for `docker.io/library/busybox:latest`; `<none>` as the tag of a
/// name with only a digest; `<none>` and `<none>` for an image kept under its
/// own digest (an untagged build). A name that is no reference is shown as it is.
pub fn repo_tag(name: &str) -> (String, String) {
    // An untagged build's image is kept under its digest.
    if name.starts_with("sha256:") {
        return ("<none>".to_owned(), "<none>".to_owned());
    }
    match Reference::parse(name) {
        Ok(r) => (r.familiar_repository(), r.tag.unwrap_or_else(|| "<none>".to_owned())),
        Err(_) => (name.to_owned(), String::new()),
    }
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
    fn references_split_like_docker_shows_them() {
        assert_eq!(repo_tag("docker.io/library/busybox:latest"), ("busybox".into(), "latest".into()));
        assert_eq!(repo_tag("localhost:5000/a/b:v1"), ("localhost:5000/a/b".into(), "v1".into()));
        assert_eq!(repo_tag("docker.io/me/app:2"), ("me/app".into(), "2".into()));
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(repo_tag(&format!("docker.io/library/busybox@{d}")), ("busybox".into(), "<none>".into()));
        assert_eq!(repo_tag(&format!("example.com/x:v1@{d}")), ("example.com/x".into(), "v1".into()));
        assert_eq!(repo_tag("Not A Name"), ("Not A Name".into(), String::new()));
        assert_eq!(rfc3339(&prost_types::Timestamp { seconds: 1, nanos: 5 }), "1970-01-01T00:00:01.000000005Z");
        assert_eq!(size(4_261_000), "4.261MB");
        assert_eq!(size(999), "999B");
        assert_eq!(duration(5), "5 seconds");
        assert_eq!(duration(1), "1 second");
        assert_eq!(duration(90), "About a minute");
        assert_eq!(duration(7300), "2 hours");
    }
}

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

/// "3 minutes ago" for a time in seconds since the epoch: docker's
/// CREATED, in the words of STATUS's "Up 3 minutes".
pub fn ago(seconds: i64) -> String {
    if seconds <= 0 {
        return "N/A".into();
    }
    format!("{} ago", duration(now_secs() - seconds))
}

/// A time as docker's `CreatedAt` shows it: `2024-01-02 15:04:05 +0000 UTC`.
pub fn created_at(seconds: i64) -> String {
    if seconds <= 0 {
        return String::new();
    }
    let t = time::format_rfc3339_nano(seconds, 0);
    // "2024-01-02T15:04:05Z"
    let (date, rest) = t.split_once('T').unwrap_or((&t, ""));
    format!("{date} {} +0000 UTC", rest.trim_end_matches('Z').split('.').next().unwrap_or_default())
}

/// Rows as the format says: with `--format json` one compact object per
/// line (as docker prints lists); with a template, through it; else through
/// `default_table`, the command's own table. `header` names the columns of
/// fields whose name is not the column's (`ID` → `CONTAINER ID`).
pub fn rows(format: &crate::Format, default_table: &str, header: &[(&str, &str)], rows: &[serde_json::Value]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if *format == crate::Format::Json {
        for r in rows {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        return Ok(());
    }
    let t = match format.template() {
        Some(t) => t,
        None => crate::template::Template::parse(default_table).map_err(|e| anyhow::anyhow!("built-in template: {e}"))?,
    };
    let text = crate::template::render_rows(&t, rows, header).map_err(|e| anyhow::anyhow!("template: {e}"))?;
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// A docker `--filter KEY=VALUE` made the API's filter: `label=K[=V]` →
/// `label.K[==V]`; `renames` maps docker's keys to the API's; keys in
/// `substring` match by substring (`~=`), as docker's name filters do; keys
/// in `image` take short image names (`app` → `docker.io/library/app:latest`).
/// The API's own forms (`==`, `~=`, a bare key) pass as they are.
pub fn api_filter(f: &str, renames: &[(&str, &str)], substring: &[&str], image: &[&str]) -> String {
    if f.contains("==") || f.contains("~=") {
        return f.to_owned();
    }
    let Some((k, v)) = f.split_once('=') else { return f.to_owned() };
    if k == "label" {
        return match v.split_once('=') {
            Some((lk, lv)) => format!("label.{lk}=={lv}"),
            None => format!("label.{v}"),
        };
    }
    let key = renames.iter().find(|(d, _)| *d == k).map_or(k, |(_, a)| a);
    if substring.contains(&k) {
        format!("{key}~={v}")
    } else if image.contains(&k) {
        let v = Reference::parse(v).map(|r| r.to_string()).unwrap_or_else(|_| v.to_owned());
        format!("{key}=={v}")
    } else {
        format!("{key}=={v}")
    }
}

/// `*` in `pattern` stands for any run of characters (docker's reference filter).
pub fn glob(pattern: &str, s: &str) -> bool {
    // One backtrack point (the last `*`): linear in practice, never exponential.
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// What `inspect` found: each through the template on a line of its own,
/// else a JSON array (docker's).
pub fn inspected(format: &crate::Format, found: &[serde_json::Value]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match format.template() {
        Some(t) => {
            for v in found {
                let mut s = t.render(v).map_err(|e| anyhow::anyhow!("template: {e}"))?;
                if !s.ends_with('\n') {
                    s.push('\n');
                }
                out.write_all(s.as_bytes())?;
            }
        }
        None => writeln!(out, "{}", serde_json::to_string_pretty(&serde_json::Value::Array(found.to_vec()))?)?,
    }
    Ok(())
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
        assert_eq!(api_filter("name=web", &[], &["name"], &[]), "name~=web");
        assert_eq!(api_filter("ancestor=app", &[("ancestor", "image")], &[], &["ancestor"]), "image==docker.io/library/app:latest");
        assert_eq!(api_filter("label=a=b", &[], &[], &[]), "label.a==b");
        assert_eq!(api_filter("label=a", &[], &[], &[]), "label.a");
        assert_eq!(api_filter("status==running", &[], &[], &[]), "status==running");
        assert_eq!(api_filter("status=exited", &[], &[], &[]), "status==exited");
        assert!(glob("app*", "app:v1") && glob("*b*", "abc") && !glob("app", "apps"));
        assert!(glob("a*c", "abbbc") && !glob("a*c", "abcd") && glob("*", "") && glob("**x", "yx"));
        assert!(!glob(&format!("{}b", "*a".repeat(30)), &"a".repeat(60)), "a pattern that backtracks ends, and fast");
        assert_eq!(created_at(86_400 + 61), "1970-01-02 00:01:01 +0000 UTC");
        assert_eq!(duration(5), "5 seconds");
        assert_eq!(duration(1), "1 second");
        assert_eq!(duration(90), "About a minute");
        assert_eq!(duration(7300), "2 hours");
    }
}

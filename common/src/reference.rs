//! Image references, normalized the way docker does: `busybox` means
//! `docker.io/library/busybox:latest`; `localhost:5000/x/y:tag` and
//! `name@sha256:...` keep their registry and digest.

use std::fmt;

/// The registry of names that give none (Docker Hub).
pub const DEFAULT_DOMAIN: &str = "docker.io";
const OFFICIAL_PREFIX: &str = "library/";

#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct InvalidReference {
    pub input: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host, with port when given.
    pub domain: String,
    /// Repository path, e.g. `library/busybox`.
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:<64 lowercase hex>`, checked by [`Reference::parse`].
    pub digest: Option<String>,
}

fn bad(input: &str, reason: &'static str) -> InvalidReference {
    InvalidReference { input: input.chars().take(256).collect(), reason }
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-"+.
        let start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok || i == b.len() {
            return false;
        }
        if !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            return false;
        }
    }
    true
}

/// `sha256:` and 64 lowercase hex digits: the only digests references take.
fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) || p.len() > 5 {
            return false;
        }
    }
    !host.is_empty() && host.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'[' | b']' | b':'))
}

impl Reference {
    /// Parse and normalize a reference.
    pub fn parse(input: &str) -> Result<Self, InvalidReference> {
        if input.is_empty() {
            return Err(bad(input, "empty"));
        }
        if input.len() > 512 {
            return Err(bad(input, "longer than 512 characters"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) if valid_digest(d) => (r, Some(d.to_owned())),
            Some(_) => return Err(bad(input, "the digest is not sha256:<64 hex>")),
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad(input, "invalid tag"));
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, remainder)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_owned(), remainder.to_owned())
            }
            _ => (DEFAULT_DOMAIN.to_owned(), name.to_owned()),
        };
        if !valid_domain(&domain) {
            return Err(bad(input, "invalid registry host"));
        }
        if name.bytes().any(|c| c.is_ascii_uppercase()) && domain == DEFAULT_DOMAIN {
            return Err(bad(input, "repository names must be lowercase"));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(bad(input, "invalid repository name (lowercase letters, digits and separators . _ __ -)"));
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') { format!("{OFFICIAL_PREFIX}{path}") } else { path };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self { domain, path, tag, digest })
    }

    /// `domain/path` without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The short form docker prints: `busybox` for `docker.io/library/busybox`.
    pub fn familiar_repository(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            self.path.strip_prefix(OFFICIAL_PREFIX).unwrap_or(&self.path).to_owned()
        } else {
            self.repository()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn short_names_expand_like_docker() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("me/app"), "docker.io/me/app:latest");
        assert_eq!(norm("localhost:5000/x/y:tag"), "localhost:5000/x/y:tag");
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("ghcr.io/a/b-c_d.e"), "ghcr.io/a/b-c_d.e:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(norm(&format!("busybox@{d}")), format!("docker.io/library/busybox@{d}"));
        assert_eq!(Reference::parse("busybox").unwrap().familiar_repository(), "busybox");
    }

    #[test]
    fn parts_are_kept_apart() {
        let d = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let r = Reference::parse(&format!("localhost:5000/tools/busybox:v1@{d}")).unwrap();
        assert_eq!(r.domain, "localhost:5000");
        assert_eq!(r.path, "tools/busybox");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.repository(), "localhost:5000/tools/busybox");
        assert_eq!(r.familiar_repository(), "localhost:5000/tools/busybox");
        assert_eq!(r.to_string(), format!("localhost:5000/tools/busybox:v1@{d}"));
        let r = Reference::parse("me/app:2").unwrap();
        assert_eq!((r.repository().as_str(), r.familiar_repository().as_str()), ("docker.io/me/app", "me/app"));
        // A normalized name parses to itself.
        for s in ["docker.io/library/busybox:latest", "example.com/a/b:1.0", &format!("docker.io/library/busybox@{d}")] {
            assert_eq!(norm(s), s);
        }
    }

    #[test]
    fn errors_say_what_and_why() {
        let e = Reference::parse("a@sha256:ABC").unwrap_err();
        assert_eq!(e.input, "a@sha256:ABC");
        assert_eq!(e.to_string(), "invalid image reference \"a@sha256:ABC\": the digest is not sha256:<64 hex>");
        let upper = format!("a@sha256:{}", "A".repeat(64));
        assert!(Reference::parse(&upper).is_err());
        assert_eq!(Reference::parse(&"x".repeat(600)).unwrap_err().input.len(), 256);
    }

    #[test]
    fn invalid_references_are_refused() {
        for bad in ["", "Busybox", "a//b", "a/", "-a", "a:", "a:-x", "a@sha256:12", "a b", "a..b", &"x".repeat(600)] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}

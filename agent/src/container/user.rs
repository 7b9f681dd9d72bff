//! Resolving a container's `--user` against the image's `/etc/passwd` and
//! `/etc/group`, with docker's rules.
//!
//! The caller reads the two files from the container's root filesystem (they
//! may be missing: a `FROM scratch` image has neither) and passes their
//! contents here; nothing in this module touches the filesystem.

/// The identity the container's init process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the groups of `/etc/group` that list the user's name
    /// as a member, without the primary group; sorted, no duplicates.
    pub additional_gids: Vec<u32>,
    /// The home directory from `/etc/passwd`, when the user has an entry with one.
    pub home: Option<String>,
    /// The user name from `/etc/passwd`, when the user has an entry.
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid user {0:?}: expected USER[:GROUP] where each is a name or a numeric id")]
    Invalid(String),
    #[error("invalid user {spec:?}: {id} is out of range for a numeric id")]
    OutOfRange { spec: String, id: String },
    #[error("user {0:?} not found in the image's /etc/passwd")]
    UserNotFound(String),
    #[error("user {0:?} not found: the image has no /etc/passwd")]
    NoPasswd(String),
    #[error("group {0:?} not found in the image's /etc/group")]
    GroupNotFound(String),
    #[error("group {0:?} not found: the image has no /etc/group")]
    NoGroupFile(String),
}

/// One usable line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: Option<&'a str>,
}

/// One usable line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// A part of the spec: a numeric id or a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id<'a> {
    Num(u32),
    Name(&'a str),
}

/// Lines worth parsing: not blank, not comments. Whitespace around a line is ignored.
fn content_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// A numeric id as found in the files: decimal digits only, fitting in 32 bits.
fn parse_file_id(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `name:password:uid:gid[:gecos:home:shell]`. Lines with fewer than four
/// fields, an empty name or ids that are not numbers are skipped.
fn parse_passwd(text: &str) -> Vec<PasswdEntry<'_>> {
    content_lines(text)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 || fields[0].is_empty() {
                return None;
            }
            let home = fields.get(5).copied().filter(|h| !h.is_empty());
            Some(PasswdEntry { name: fields[0], uid: parse_file_id(fields[2])?, gid: parse_file_id(fields[3])?, home })
        })
        .collect()
}

/// `name:password:gid[:member,member...]`. Lines with fewer than three fields,
/// an empty name or a gid that is not a number are skipped.
fn parse_group(text: &str) -> Vec<GroupEntry<'_>> {
    content_lines(text)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 3 || fields[0].is_empty() {
                return None;
            }
            let members = fields.get(3).map(|m| m.split(',').map(str::trim).filter(|m| !m.is_empty()).collect()).unwrap_or_default();
            Some(GroupEntry { name: fields[0], gid: parse_file_id(fields[2])?, members })
        })
        .collect()
}

/// Splits `USER[:GROUP]`. An empty user part means root (docker accepts
/// `:GROUP`); an empty group part means "no explicit group".
fn split_spec(spec: &str) -> Result<(Option<Id<'_>>, Option<Id<'_>>), UserError> {
    let mut parts = spec.split(':');
    let user = parts.next().unwrap_or("");
    let group = parts.next().unwrap_or("");
    if parts.next().is_some() {
        return Err(UserError::Invalid(spec.to_string()));
    }
    Ok((parse_part(spec, user)?, parse_part(spec, group)?))
}

fn parse_part<'a>(spec: &str, part: &'a str) -> Result<Option<Id<'a>>, UserError> {
    if part.is_empty() {
        return Ok(None);
    }
    if part.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UserError::Invalid(spec.to_string()));
    }
    if part.bytes().all(|b| b.is_ascii_digit()) {
        return match part.parse::<u32>() {
            Ok(n) => Ok(Some(Id::Num(n))),
            Err(_) => Err(UserError::OutOfRange { spec: spec.to_string(), id: part.to_string() }),
        };
    }
    Ok(Some(Id::Name(part)))
}

/// Resolves `spec`, docker's `--user` syntax: "" (root), "UID", "UID:GID",
/// "NAME", "NAME:GROUP", "UID:GROUP", "NAME:GID".
///
/// `passwd` and `group` are the contents of the image's `/etc/passwd` and
/// `/etc/group` (`None` when the image has no such file).
///
/// - A numeric uid need not be in `/etc/passwd`; when it is, its entry gives
///   the primary gid, name and home, otherwise the gid is 0. "" is uid 0.
/// - A user name must be in `/etc/passwd`.
/// - A numeric gid is used as-is; a group name must be in `/etc/group`.
/// - The supplementary groups are the groups listing the user's name as a
///   member (only when the user has a name), without the primary gid.
pub fn resolve_user(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<ResolvedUser, UserError> {
    let (user_part, group_part) = split_spec(spec)?;
    let passwd_entries = passwd.map(parse_passwd).unwrap_or_default();
    let group_entries = group.map(parse_group).unwrap_or_default();

    let user_id = user_part.unwrap_or(Id::Num(0));
    let entry = match user_id {
        Id::Num(uid) => passwd_entries.iter().find(|e| e.uid == uid),
        Id::Name(name) => match passwd {
            None => return Err(UserError::NoPasswd(name.to_string())),
            Some(_) => Some(passwd_entries.iter().find(|e| e.name == name).ok_or_else(|| UserError::UserNotFound(name.to_string()))?),
        },
    };

    let mut resolved = match (user_id, entry) {
        (_, Some(e)) => ResolvedUser {
            uid: e.uid,
            gid: e.gid,
            additional_gids: Vec::new(),
            home: e.home.map(str::to_string),
            name: Some(e.name.to_string()),
        },
        (Id::Num(uid), None) => ResolvedUser { uid, gid: 0, additional_gids: Vec::new(), home: None, name: None },
        (Id::Name(name), None) => return Err(UserError::UserNotFound(name.to_string())),
    };

    match group_part {
        None => {}
        Some(Id::Num(gid)) => resolved.gid = gid,
        Some(Id::Name(name)) => {
            if group.is_none() {
                return Err(UserError::NoGroupFile(name.to_string()));
            }
            let g = group_entries.iter().find(|g| g.name == name).ok_or_else(|| UserError::GroupNotFound(name.to_string()))?;
            resolved.gid = g.gid;
        }
    }

    if let Some(name) = resolved.name.as_deref() {
        let mut gids: Vec<u32> =
            group_entries.iter().filter(|g| g.gid != resolved.gid && g.members.contains(&name)).map(|g| g.gid).collect();
        gids.sort_unstable();
        gids.dedup();
        resolved.additional_gids = gids;
    }
    Ok(resolved)
}

/// Whether resolving `spec` needs the image's files at all: false for "" and
/// for a numeric "UID:GID", whose ids are known without them. (Given the files
/// anyway, [`resolve_user`] still uses them for the name, home and
/// supplementary groups.) An invalid spec "needs" them so that the error is
/// reported by [`resolve_user`].
pub fn needs_lookup(spec: &str) -> bool {
    match split_spec(spec) {
        Ok((None, None)) => false,
        Ok((Some(Id::Num(_)), Some(Id::Num(_)))) => false,
        Ok(_) | Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
   
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
app:x:1000:1000:App User,,,:/home/app:/bin/sh
broken line without colons
short:x:7
baduid:x:abc:1:bad:/bad:/bin/sh
big:x:4294967296:1:too big:/big:/bin/sh
nohome:x:1001:1001
";

    const GROUP: &str = "\
root:x:0:
daemon:x:1:
wheel:x:10:root,app
audio:x:29:app
# comment:x:99:app
video:x:44: daemon , app
nogroup:x:65534:
app:x:1000:app
bad:x:notanumber:app
dup:x:29:app
short:x
staff:x:50
";

    fn resolve(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve_user(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn empty_spec_is_root_with_home_from_passwd() {
        let u = resolve("").unwrap();
        assert_eq!(u, ResolvedUser { uid: 0, gid: 0, additional_gids: vec![10], home: Some("/root".into()), name: Some("root".into()) });
    }

    #[test]
    fn empty_spec_without_files_is_plain_root() {
        let u = resolve_user("", None, None).unwrap();
        assert_eq!(u, ResolvedUser { uid: 0, gid: 0, additional_gids: vec![], home: None, name: None });
    }

    #[test]
    fn numeric_uid_in_passwd_takes_its_gid_name_and_home() {
        let u = resolve("1").unwrap();
        assert_eq!((u.uid, u.gid), (1, 1));
        assert_eq!(u.name.as_deref(), Some("daemon"));
        assert_eq!(u.home.as_deref(), Some("/usr/sbin"));
        // daemon is listed in "video" (with spaces around the member names).
        assert_eq!(u.additional_gids, vec![44]);
    }

    #[test]
    fn numeric_uid_not_in_passwd_gets_gid_zero() {
        let u = resolve("4242").unwrap();
        assert_eq!(u, ResolvedUser { uid: 4242, gid: 0, additional_gids: vec![], home: None, name: None });
    }

    #[test]
    fn numeric_uid_with_no_passwd_file_gets_gid_zero() {
        let u = resolve_user("1000", None, None).unwrap();
        assert_eq!((u.uid, u.gid, u.name, u.home), (1000, 0, None, None));
    }

    #[test]
    fn name_resolves_uid_gid_home_and_groups() {
        let u = resolve("app").unwrap();
        assert_eq!(
            u,
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                // wheel 10, audio 29 (twice: "audio" and "dup"), video 44; "app" (1000) is the
                // primary group; the commented line and the unparsable gid do not count.
                additional_gids: vec![10, 29, 44],
                home: Some("/home/app".into()),
                name: Some("app".into()),
            }
        );
    }

    #[test]
    fn name_with_group_name() {
        let u = resolve("app:audio").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 29));
        // The primary group is excluded, the user's own group now is a supplementary one.
        assert_eq!(u.additional_gids, vec![10, 44, 1000]);
    }

    #[test]
    fn name_with_numeric_gid() {
        let u = resolve("nobody:12345").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids.clone()), (65534, 12345, vec![]));
        assert_eq!(u.home.as_deref(), Some("/nonexistent"));
    }

    #[test]
    fn uid_with_numeric_gid_needs_no_files() {
        let u = resolve_user("1234:5678", None, None).unwrap();
        assert_eq!(u, ResolvedUser { uid: 1234, gid: 5678, additional_gids: vec![], home: None, name: None });
        // With files, the numeric gid is still taken as-is.
        let u = resolve("1000:5678").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 5678));
        assert_eq!(u.name.as_deref(), Some("app"));
    }

    #[test]
    fn uid_with_group_name() {
        let u = resolve("4242:wheel").unwrap();
        assert_eq!((u.uid, u.gid, u.name.clone()), (4242, 10, None));
        assert!(u.additional_gids.is_empty());
    }

    #[test]
    fn colon_group_means_root_with_that_group() {
        let u = resolve(":audio").unwrap();
        assert_eq!((u.uid, u.gid), (0, 29));
    }

    #[test]
    fn unknown_name_is_an_error() {
        let err = resolve("nobody2").unwrap_err();
        assert!(matches!(err, UserError::UserNotFound(ref n) if n == "nobody2"), "{err:?}");
        assert_eq!(err.to_string(), "user \"nobody2\" not found in the image's /etc/passwd");
    }

    #[test]
    fn unknown_group_is_an_error() {
        let err = resolve("app:x").unwrap_err();
        assert!(matches!(err, UserError::GroupNotFound(ref n) if n == "x"), "{err:?}");
        assert_eq!(err.to_string(), "group \"x\" not found in the image's /etc/group");
    }

    #[test]
    fn group_name_without_group_file_is_an_error() {
        let err = resolve_user("0:wheel", Some(PASSWD), None).unwrap_err();
        assert!(matches!(err, UserError::NoGroupFile(ref n) if n == "wheel"), "{err:?}");
    }

    #[test]
    fn name_without_passwd_file_is_an_error() {
        let err = resolve_user("app", None, Some(GROUP)).unwrap_err();
        assert!(matches!(err, UserError::NoPasswd(ref n) if n == "app"), "{err:?}");
        assert!(err.to_string().contains("no /etc/passwd"), "{err}");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        // "short" has too few fields, "baduid" a non-numeric uid, "big" a uid over 32 bits.
        for name in ["short", "baduid", "big", "broken line without colons"] {
            assert!(matches!(resolve(name), Err(UserError::UserNotFound(_)) | Err(UserError::Invalid(_))), "{name}");
        }
        // "staff" has no member list but is still a valid group; "short" is not.
        assert_eq!(resolve("0:staff").unwrap().gid, 50);
        assert!(matches!(resolve("0:short"), Err(UserError::GroupNotFound(_))));
        // An entry without a home field is usable.
        let u = resolve("nohome").unwrap();
        assert_eq!((u.uid, u.gid, u.home), (1001, 1001, None));
        // The comment line "# comment:x:99:app" did not make 99 a group of app.
        assert!(!resolve("app").unwrap().additional_gids.contains(&99));
    }

    #[test]
    fn first_matching_entry_wins() {
        let passwd = "dup:x:10:10::/one:/bin/sh\ndup:x:20:20::/two:/bin/sh\n";
        let u = resolve_user("dup", Some(passwd), None).unwrap();
        assert_eq!((u.uid, u.home.as_deref()), (10, Some("/one")));
    }

    #[test]
    fn invalid_specs() {
        let err = resolve("a:b:c").unwrap_err();
        assert!(matches!(err, UserError::Invalid(_)), "{err:?}");
        assert!(err.to_string().starts_with("invalid user \"a:b:c\""), "{err}");
        assert!(matches!(resolve("app user"), Err(UserError::Invalid(_))));
        assert!(matches!(resolve("4294967296"), Err(UserError::OutOfRange { .. })));
        assert!(matches!(resolve("0:4294967296"), Err(UserError::OutOfRange { .. })));
        assert_eq!(resolve("4294967295").unwrap().uid, u32::MAX);
    }

    #[test]
    fn needs_lookup_cases() {
        assert!(!needs_lookup(""));
        assert!(!needs_lookup("0:0"));
        assert!(!needs_lookup("1000:1000"));
        assert!(needs_lookup("1000"));
        assert!(needs_lookup("app"));
        assert!(needs_lookup("1000:audio"));
        assert!(needs_lookup("app:1000"));
        assert!(needs_lookup(":audio"));
        assert!(needs_lookup("a:b:c"));
    }
}

//! Text that came from outside (a name in an archive, a file in a
//! container) shown to a person: control characters are escaped, so that
//! an ESC sequence cannot move a terminal's cursor or hide what follows.

use std::borrow::Cow;

/// `s` with every control character (newlines and ESC included) written as
/// an escape (`\n`, `\u{1b}`); `s` itself when it has none.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(printable("plain/ü/名前"), Cow::Borrowed("plain/ü/名前")));
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("line\nnext\ttab\r\u{7f}"), "line\\nnext\\ttab\\r\\u{7f}");
    }
}

//! `.dockerignore`: which files of a build context stay out of what is sent
//! to the builder, decided the way `docker build` decides it (the classic
//! builder and BuildKit read the file with the same moby code).
//!
//! # Reading the file
//!
//! - One pattern per line; a `\r` before the `\n` is dropped, and a UTF-8 BOM
//!   at the start of the file is skipped.
//! - A line whose *first character* is `#` is a comment. Docker tests this
//!   before trimming, so `  #x` is the pattern `#x`, not a comment (and `\#x`
//!   is another way to write that pattern).
//! - Whitespace around the line is trimmed; a line left empty is skipped.
//! - A leading `!` makes the line an exception (a re-include). Only one `!`
//!   is taken: `!!x` is an exception for a file named `!x`. A line that is
//!   only `!` (or `!/`, which cleans down to `!`) is an error, as in Docker.
//! - The rest is cleaned like Go's `filepath.Clean` (`./a`, `a/`, `a//b` and
//!   `c/../a` all become `a`) and a leading `/` is dropped: the context root
//!   is both the working directory and `/`.
//! - A pattern that cleans to `.` (`.`, `./`, `a/..`) names the context root,
//!   which is never excluded: such a line matches nothing. So does `/`.
//! - A line of 64 KiB or more is an error, as it is for Docker's line reader.
//!
//! # Pattern syntax
//!
//! Go's `filepath.Match` syntax, on `/`-separated paths relative to the
//! context root, plus Docker's `**`:
//!
//! - `*` is any run of characters other than `/` (dotfiles included); `?` is
//!   one character other than `/`.
//! - `[...]` is one character from a class: single characters and ranges
//!   `a-z`, negated by a leading `^`. `!` is *not* a negation (it is a member,
//!   as in Go). `-` and `]` need a `\` wherever Go's `filepath.Match` wants
//!   one: a member cannot start with `-`, so `[-a]`, `[a-]` and `[a-c-e]` are
//!   errors, and `]` right after `[` or `[^` is not a member, so `[]`, `[^]`
//!   and `[]a]` are errors. An unclosed `[` is an error. A range that runs
//!   backwards (`[z-a]`) is an error here: Go accepts it, but Docker's
//!   matcher fails on it when it first matches a path.
//!   Inside a class `*` and `?` are plain members, and a class may match `/`.
//! - `\c` is the character `c` itself; a trailing `\` is an error.
//! - `**/`, and a `**` that does not end the pattern, stand for zero or more
//!   whole directories (`a/**/b` matches `a/b` and `a/x/y/b`; `a**b` matches
//!   `ab` and `ax/b` but not `axb`, as Docker's translation does).
//! - A `**` that ends the pattern matches anything, `/` included: `a/**`
//!   matches everything under `a` but not `a` itself; `**` alone matches
//!   every path.
//! - Docker quirk, kept: a pattern that *starts* with `**`, has something
//!   other than `/` right after it, and has no other `*`, `?`, `[`, `]` or
//!   `\`, matches every path that ends with the text after the `**`:
//!   `**.log` matches `a/b.log` (where `**f?o` does not match `xfoo`).
//! - Matching is case-sensitive and by Unicode character.
//!
//! Where Docker hands a pattern to a regular-expression engine and the result
//! differs from `filepath.Match` (`\d` as a digit class, `*` inside `[...]`,
//! a `^` outside a class acting as an anchor), this module follows
//! `filepath.Match`.
//!
//! # Applying the patterns
//!
//! A pattern matches a path when it matches the path itself or one of its
//! parent directories, so `build` excludes `build/x/y`. Patterns are read in
//! order and the last one that matches decides: a later `!` line re-includes
//! what an earlier line excluded, and a later plain line excludes again.
//!
//! Docker always sends the Dockerfile and the `.dockerignore` file itself,
//! even when a pattern matches them (`ADD` and `COPY` still do not see them).
//! That is the caller's job: [`Patterns::matches`] reports what the patterns
//! say and knows nothing of either file.

use std::borrow::Cow;

/// Docker's line reader stops at a line this long (its 64 KiB buffer must
/// also hold the newline).
const MAX_LINE: usize = 64 * 1024 - 1;

/// How much of a pattern an error message quotes.
const QUOTED: usize = 80;

/// Why a `.dockerignore` text was refused. Lines are counted from 1,
/// comments and blank lines included.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// A line that is only `!`.
    #[error(".dockerignore line {line}: \"!\" alone is not a pattern")]
    LoneExclamation { line: usize },
    /// The glob does not parse: unclosed `[`, trailing `\`, and the like.
    #[error(".dockerignore line {line}: bad pattern {pattern:?}: {reason}")]
    BadPattern { line: usize, pattern: String, reason: &'static str },
    #[error(".dockerignore line {line} is longer than {MAX_LINE} bytes")]
    LineTooLong { line: usize },
}

/// The patterns of one `.dockerignore` file. The default value matches
/// nothing, like a missing or empty file.
#[derive(Debug, Clone, Default)]
pub struct Patterns {
    rules: Vec<Rule>,
}

impl Patterns {
    /// Reads a `.dockerignore` file's text (see the module documentation).
    pub fn parse(text: &str) -> Result<Self, IgnoreError> {
        let mut rules = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            if raw.len() > MAX_LINE {
                return Err(IgnoreError::LineTooLong { line });
            }
            let raw = if index == 0 { raw.strip_prefix('\u{feff}').unwrap_or(raw) } else { raw };
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.starts_with('#') {
                continue;
            }
            if let Some(read) = read_line(raw) {
                if let Some(rule) = Rule::new(&read, line)? {
                    rules.push(rule);
                }
            }
        }
        Ok(Patterns { rules })
    }

    /// Whether there are no patterns at all (nothing is ever excluded).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any pattern is an exception (`!...`).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }

    /// Whether `path` is excluded from the context. `path` is relative to the
    /// context root, `/`-separated; it is cleaned first, so `./a/` is `a`.
    /// The root itself (`""`, `.`, `/`) is never excluded.
    pub fn matches(&self, path: &str) -> bool {
        let Some(path) = context_path(path) else { return false };
        match self.rules.iter().rev().find(|r| r.glob.matches_path(&path)) {
            Some(rule) => !rule.exception,
            None => false,
        }
    }

    /// Whether a walker may skip directory `dir` without looking inside: true
    /// only when `dir` is excluded and no exception could re-include anything
    /// beneath it, so that [`Patterns::matches`] is true for every path under
    /// `dir`. When that cannot be ruled out, the answer is false (walk).
    ///
    /// Only exceptions after the last pattern that excludes `dir` count: an
    /// earlier one is overridden beneath `dir` by that pattern too. Docker's
    /// classic builder walks into `dir` when an exception's text starts with
    /// `dir/`; this check also sees wildcard exceptions like `!**/keep`.
    pub fn skip_dir(&self, dir: &str) -> bool {
        let Some(dir) = context_path(dir) else { return false };
        let Some(last) = self.rules.iter().rposition(|r| r.glob.matches_path(&dir)) else { return false };
        if self.rules[last].exception {
            return false;
        }
        !self.rules[last + 1..].iter().any(|r| r.exception && r.glob.could_match_beneath(&dir))
    }
}

/// One pattern line.
#[derive(Debug, Clone)]
struct Rule {
    exception: bool,
    glob: Glob,
}

impl Rule {
    /// The second half of Docker's reading: the line as [`read_line`] left it
    /// is trimmed and cleaned once more, then its `!` is taken off. `None`
    /// for a line with nothing left.
    fn new(read: &str, line: usize) -> Result<Option<Rule>, IgnoreError> {
        let text = read.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let text = clean(text);
        let (exception, pattern) = match text.strip_prefix('!') {
            Some("") => return Err(IgnoreError::LoneExclamation { line }),
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let glob = Glob::compile(pattern).map_err(|reason| IgnoreError::BadPattern { line, pattern: quote(pattern), reason })?;
        Ok(Some(Rule { exception, glob }))
    }
}

/// The first half of Docker's reading of one (non-comment) line: trim, take
/// a `!` off, clean, drop a leading `/`, put the `!` back. `None` for a blank
/// line.
fn read_line(raw: &str) -> Option<String> {
    let mut rest = raw.trim();
    if rest.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(rest.len() + 1);
    if let Some(after) = rest.strip_prefix('!') {
        out.push('!');
        rest = after.trim();
    }
    if !rest.is_empty() {
        let cleaned = clean(rest);
        let cleaned = if cleaned.len() > 1 { cleaned.strip_prefix('/').unwrap_or(&cleaned) } else { &cleaned };
        out.push_str(cleaned);
    }
    Some(out)
}

/// Go's `filepath.Clean` for `/`-separated text: runs of `/` become one,
/// `.` elements go, `x/..` pairs go, `..` right under the root goes, a
/// trailing `/` goes; nothing left is `.`.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
}

/// `path` as the matcher wants it: cleaned, without a leading `/`; `None`
/// for the context root.
fn context_path(path: &str) -> Option<Cow<'_, str>> {
    if !path.is_empty() && path.split('/').all(|p| !p.is_empty() && p != "." && p != "..") {
        return Some(Cow::Borrowed(path));
    }
    let mut cleaned = clean(path);
    if cleaned.starts_with('/') {
        cleaned.remove(0);
    }
    if cleaned.is_empty() || cleaned == "." {
        None
    } else {
        Some(Cow::Owned(cleaned))
    }
}

/// The start of `s`, for an error message.
fn quote(s: &str) -> String {
    s.chars().take(QUOTED).collect()
}

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// This character.
    Char(char),
    /// `?`: one character, not `/`.
    One,
    /// `[...]`: one character (`/` possible).
    Class(Class),
    /// `*`: any run of characters without `/`.
    Star,
    /// `**` not at the end: nothing, or anything that ends with `/`.
    Dirs,
    /// `**` at the end (and the leading-`**` quirk): anything.
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    fn contains(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

/// A compiled pattern, matched by running its tokens as a small automaton
/// over the path's characters: state `k` (0 to `n`) is "before token `k`",
/// `n` accepts; state `n + 1 + k` is "inside the `**` at `k`, after a
/// character that was not `/`". Time is the path length times the pattern
/// length, whatever the pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    fn compile(pattern: &str) -> Result<Glob, &'static str> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    let leading = i == 0;
                    i += 2;
                    let slash = chars.get(i) == Some(&'/');
                    if slash {
                        i += 1;
                    }
                    let suffix_quirk = leading && !slash && !chars[i..].iter().any(|c| "*?[]\\".contains(*c));
                    tokens.push(if i == chars.len() || suffix_quirk { Token::Rest } else { Token::Dirs });
                }
                '*' => {
                    tokens.push(Token::Star);
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::One);
                    i += 1;
                }
                '[' => {
                    let (class, next) = compile_class(&chars, i + 1)?;
                    tokens.push(Token::Class(class));
                    i = next;
                }
                '\\' => {
                    let Some(&c) = chars.get(i + 1) else { return Err("a trailing \\ escapes nothing") };
                    tokens.push(Token::Char(c));
                    i += 2;
                }
                c => {
                    tokens.push(Token::Char(c));
                    i += 1;
                }
            }
        }
        Ok(Glob { tokens })
    }

    /// The state set before any character.
    fn start(&self) -> Vec<bool> {
        let mut set = vec![false; 2 * self.tokens.len() + 1];
        set[0] = true;
        self.close(&mut set);
        set
    }

    /// Adds the states reachable without reading: past `*` and `**`.
    fn close(&self, set: &mut [bool]) {
        for (k, token) in self.tokens.iter().enumerate() {
            if set[k] && matches!(token, Token::Star | Token::Dirs | Token::Rest) {
                set[k + 1] = true;
            }
        }
    }

    /// Reads `c`: `next` becomes the states reachable from `cur`. Returns
    /// whether any state is left.
    fn step(&self, cur: &[bool], next: &mut [bool], c: char) -> bool {
        let n = self.tokens.len();
        next.fill(false);
        let in_dirs = |k: usize| if c == '/' { k } else { n + 1 + k };
        for (k, token) in self.tokens.iter().enumerate() {
            if cur[k] {
                match token {
                    Token::Char(x) if *x == c => next[k + 1] = true,
                    Token::One if c != '/' => next[k + 1] = true,
                    Token::Class(class) if class.contains(c) => next[k + 1] = true,
                    Token::Star if c != '/' => next[k] = true,
                    Token::Rest => next[k] = true,
                    Token::Dirs => next[in_dirs(k)] = true,
                    _ => {}
                }
            }
            if cur[n + 1 + k] {
                next[in_dirs(k)] = true;
            }
        }
        self.close(next);
        next.contains(&true)
    }

    /// Whether the pattern matches `path` (clean, relative) or one of its
    /// parent directories.
    fn matches_path(&self, path: &str) -> bool {
        let n = self.tokens.len();
        let mut cur = self.start();
        let mut next = vec![false; cur.len()];
        for c in path.chars() {
            if c == '/' && cur[n] {
                return true;
            }
            if !self.step(&cur, &mut next, c) {
                return false;
            }
            std::mem::swap(&mut cur, &mut next);
        }
        cur[n]
    }

    /// Whether the pattern might match some path strictly beneath `dir`.
    /// False only when no path that starts with `dir/` can match.
    fn could_match_beneath(&self, dir: &str) -> bool {
        let n = self.tokens.len();
        let mut cur = self.start();
        let mut next = vec![false; cur.len()];
        for c in dir.chars().chain(['/']) {
            if !self.step(&cur, &mut next, c) {
                return false;
            }
            std::mem::swap(&mut cur, &mut next);
        }
        // Only the accepting state left means the pattern is exactly `dir/`,
        // which no path is.
        cur.iter().enumerate().any(|(state, &live)| live && state != n)
    }
}

/// Reads a class body from `chars[start..]` (just after `[`) with Go's rules.
/// Returns the class and the index after its `]`.
fn compile_class(chars: &[char], start: usize) -> Result<(Class, usize), &'static str> {
    let mut i = start;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        if chars.get(i) == Some(&']') && !ranges.is_empty() {
            return Ok((Class { negated, ranges }, i + 1));
        }
        let (lo, next) = class_char(chars, i)?;
        i = next;
        let mut hi = lo;
        if chars[i] == '-' {
            let (end, next) = class_char(chars, i + 1)?;
            hi = end;
            i = next;
        }
        if lo > hi {
            return Err("a character class range runs backwards");
        }
        ranges.push((lo, hi));
    }
}

/// One class member at `chars[i]`, `\`-escaped or not, and the index after
/// it; fails when the class cannot be closed after it.
fn class_char(chars: &[char], i: usize) -> Result<(char, usize), &'static str> {
    let (c, next) = match chars.get(i) {
        None => return Err("unclosed character class"),
        Some('-' | ']') => return Err("a class must not be empty, and - or ] must be escaped here"),
        Some('\\') => match chars.get(i + 1) {
            None => return Err("unclosed character class"),
            Some(&c) => (c, i + 2),
        },
        Some(&c) => (c, i + 1),
    };
    if next >= chars.len() {
        return Err("unclosed character class");
    }
    Ok((c, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Patterns {
        Patterns::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn matches_table() {
        // (.dockerignore text, path, excluded)
        let cases: &[(&str, &str, bool)] = &[
            // The example of Docker's documentation.
            ("# comment\n*/temp*\n*/*/temp*\ntemp?", "somedir/temporary.txt", true),
            ("# comment\n*/temp*\n*/*/temp*\ntemp?", "somedir/temp", true),
            ("# comment\n*/temp*\n*/*/temp*\ntemp?", "somedir/subdir/temporary.txt", true),
            ("# comment\n*/temp*\n*/*/temp*\ntemp?", "tempa", true),
            ("# comment\n*/temp*\n*/*/temp*\ntemp?", "tempb", true),
            ("# comment\n*/temp*\n*/*/temp*\ntemp?", "temp", false),
            ("# comment\n*/temp*\n*/*/temp*\ntemp?", "a/b/c/temporary", false),
            ("# comment\n*/temp*\n*/*/temp*\ntemp?", "# comment", false),
            ("*/temp*", "temp.txt", false),
            ("*/temp*", "a/b/temp", false),
            ("*/temp*", "a/temp/x/y", true),
            ("*/*/temp*", "somedir/temporary.txt", false),
            ("temp?", "tempab", false),
            ("temp?", "a/tempa", false),
            ("temp?", "tempa/inside", true),
            ("temp?", "temp/", false),
            // `**`.
            ("**/*.go", "main.go", true),
            ("**/*.go", "a/b/c.go", true),
            ("**/*.go", "a/b/c.gox", false),
            ("**/*.go", "pkg.go/inner/file", true),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**/b", "a/xb", false),
            ("a/**/b", "b", false),
            ("a/**/b", "a/x/b/c", true),
            ("a/**", "a/x", true),
            ("a/**", "a/x/y", true),
            ("a/**", "a", false),
            ("a**", "abc/d", true),
            ("**", "anything/at/all", true),
            ("**", "top", true),
            ("**/", "x", true),
            ("**.log", "a/b.log", true),
            ("**.log", "b.log", true),
            ("**f?o", "xfoo", false),
            ("**f?o", "x/fxo", true),
            ("**a/b", "xa/b", true),
            ("**/x", "x", true),
            ("**/x", "ax", false),
            ("a**b", "ab", true),
            ("a**b", "ax/b", true),
            ("a**b", "axb", false),
            ("**/node_modules", "web/app/node_modules/pkg/index.js", true),
            // Exceptions, last match wins.
            ("*.md\n!README.md", "CHANGES.md", true),
            ("*.md\n!README.md", "README.md", false),
            ("*.md\n!README.md", "docs/guide.md", false),
            ("*.md\n!README*.md\nREADME-secret.md", "README-secret.md", true),
            ("*.md\n!README*.md\nREADME-secret.md", "README.md", false),
            ("*.md\n!README*.md\nREADME-secret.md", "README-other.md", false),
            ("*.md\n!README*.md\nREADME-secret.md", "notes.md", true),
            ("*.md\nREADME-secret.md\n!README*.md", "README-secret.md", false),
            ("*.md\nREADME-secret.md\n!README*.md", "notes.md", true),
            ("*\n!src", "src/main.rs", false),
            ("*\n!src", "target/debug/x", true),
            ("!README.md", "README.md", false),
            ("!keep\n*", "keep", true),
            // Directories and exceptions inside them.
            ("build", "build", true),
            ("build", "build/x/y", true),
            ("build", "builder", false),
            ("build", "src/build", false),
            ("dir\n!dir/keep", "dir/keep", false),
            ("dir\n!dir/keep", "dir/keep/deep/file", false),
            ("dir\n!dir/keep", "dir/other", true),
            ("dir\n!dir/keep", "dir", true),
            ("dir/*\n!dir", "dir/x", false),
            ("dir\n!dir/keep\ndir/keep/secret", "dir/keep/secret/k", true),
            // Cleaning of patterns and paths.
            ("/foo/bar", "foo/bar", true),
            ("/foo/bar", "foo/bar/baz", true),
            ("/foo/bar", "foo", false),
            ("/foo/bar", "x/foo/bar", false),
            ("./foo", "foo", true),
            ("foo/", "foo/x", true),
            ("a//b", "a/b", true),
            ("a/../b", "b", true),
            ("a/../b", "a/b", false),
            ("  spaced  \t", "spaced", true),
            ("! /inverted\ninverted/x", "inverted/x", true),
            ("*\n! /inverted", "inverted/x", false),
            ("a /", "a", true),
            ("x", "./x/", true),
            ("x", "/x", true),
            ("x", "a/../x", true),
            (".", "x", false),
            ("./", "x", false),
            ("/", "x", false),
            ("*", "", false),
            ("*", ".", false),
            // Classes and escapes.
            ("[a-c]at", "bat", true),
            ("[a-c]at", "dat", false),
            ("[^a]at", "bat", true),
            ("[^a]at", "aat", false),
            ("[!a]at", "!at", true),
            ("[!a]at", "bat", false),
            ("[a-cx-z]", "y", true),
            ("[\\]]", "]", true),
            ("[*?]", "?", true),
            ("[*?]", "x", false),
            ("a[/]b", "a/b", true),
            ("\\*.txt", "*.txt", true),
            ("\\*.txt", "a.txt", false),
            ("\\[x]", "[x]", true),
            ("\\!x", "!x", true),
            ("*\n!!x", "!x", false),
            ("*\n!!x", "x", true),
            ("a.b", "axb", false),
            ("(a)|{b}$^", "(a)|{b}$^", true),
            // Comments and blank lines.
            ("# *\n\n\n   \nx", "y", false),
            ("# *\n\n\n   \nx", "x", true),
            (" #x", "#x", true),
            ("\\#x", "#x", true),
            ("\u{feff}#bom comment\nx", "#bom comment", false),
            ("\u{feff}x", "x", true),
            ("x\r\ny\r\n", "y", true),
            // A path equal to the pattern, case, Unicode.
            ("a/b", "a/b", true),
            ("README.md", "readme.md", false),
            ("*.MD", "x.md", false),
            ("caf?", "café", true),
            ("*", ".hidden", true),
            ("", "x", false),
        ];
        assert!(cases.len() >= 50);
        for &(text, path, want) in cases {
            assert_eq!(parse(text).matches(path), want, "patterns {text:?}, path {path:?}");
        }
    }

    #[test]
    fn malformed_patterns_are_refused() {
        let cases: &[(&str, IgnoreError)] = &[
            ("[", bad(1, "[", "unclosed character class")),
            ("ok\n# c\nsrc/[a-", bad(3, "src/[a-", "unclosed character class")),
            ("[abc", bad(1, "[abc", "unclosed character class")),
            ("[a]x\n!x[", bad(2, "x[", "unclosed character class")),
            ("[]", bad(1, "[]", "a class must not be empty, and - or ] must be escaped here")),
            ("[^]", bad(1, "[^]", "a class must not be empty, and - or ] must be escaped here")),
            ("[]a]", bad(1, "[]a]", "a class must not be empty, and - or ] must be escaped here")),
            ("[-a]", bad(1, "[-a]", "a class must not be empty, and - or ] must be escaped here")),
            ("[a-]", bad(1, "[a-]", "a class must not be empty, and - or ] must be escaped here")),
            ("[a-c-e]", bad(1, "[a-c-e]", "a class must not be empty, and - or ] must be escaped here")),
            ("[z-a]", bad(1, "[z-a]", "a character class range runs backwards")),
            ("[\\", bad(1, "[\\", "unclosed character class")),
            ("x\\", bad(1, "x\\", "a trailing \\ escapes nothing")),
            ("!", IgnoreError::LoneExclamation { line: 1 }),
            ("a\n!  \n", IgnoreError::LoneExclamation { line: 2 }),
            ("!/", IgnoreError::LoneExclamation { line: 1 }),
        ];
        for (text, want) in cases {
            assert_eq!(Patterns::parse(text).as_ref().err(), Some(want), "{text:?}");
        }
        let long = "a".repeat(MAX_LINE + 1);
        assert_eq!(Patterns::parse(&format!("x\n{long}")).err(), Some(IgnoreError::LineTooLong { line: 2 }));
        assert!(Patterns::parse(&"a".repeat(MAX_LINE)).is_ok());
        // A `[` that is escaped, or inside a comment, is fine.
        for ok in ["\\[", "# [", "[[]", "[\\-]", "]", "a]b", "[a-a]"] {
            assert!(Patterns::parse(ok).is_ok(), "{ok:?}");
        }
        assert_eq!(
            bad(4, "[", "unclosed character class").to_string(),
            ".dockerignore line 4: bad pattern \"[\": unclosed character class"
        );
        let huge = format!("[{}", "x".repeat(500));
        let Err(IgnoreError::BadPattern { pattern, .. }) = Patterns::parse(&huge) else { panic!("{huge:?} parsed") };
        assert_eq!(pattern.chars().count(), QUOTED);
    }

    fn bad(line: usize, pattern: &str, reason: &'static str) -> IgnoreError {
        IgnoreError::BadPattern { line, pattern: pattern.to_owned(), reason }
    }

    #[test]
    fn skip_dir_table() {
        // (.dockerignore text, directory, may skip)
        let cases: &[(&str, &str, bool)] = &[
            ("build", "build", true),
            ("build", "build/sub", true),
            ("build", "src", false),
            ("build", "", false),
            ("*", ".", false),
            ("build\n!build/keep", "build", false),
            ("build\n!build/keep", "build/other", true),
            ("build\n!build/keep", "build/keep", false),
            ("build\n!**/keep", "build", false),
            ("build\n!*/keep", "build", false),
            ("build\n!*.md", "build", true),
            ("build\n!other/keep", "build", true),
            ("build\n!build", "build", false),
            ("!build/keep\nbuild", "build", true),
            ("*\n!src", "docs", true),
            ("*\n!src", "src", false),
            ("*\n!d?/keep", "x", true),
            ("*\n!d?/keep", "da", false),
            ("*\n![a-c]*/x", "b", false),
            ("*\n![a-c]*/x", "z", true),
            ("build/*", "build", false),
            ("build/*", "build/x", true),
            ("a/**\n!a/**/keep.txt", "a/b", false),
            ("a/**\n!a/**/keep.txt", "b", false),
            ("**\n!**.txt", "deep/dir", false),
            ("vendor\n!vendor", "vendor", false),
            ("", "x", false),
        ];
        for &(text, dir, want) in cases {
            assert_eq!(parse(text).skip_dir(dir), want, "patterns {text:?}, dir {dir:?}");
        }
    }

    #[test]
    fn empty_and_default() {
        assert!(Patterns::default().is_empty());
        assert!(!Patterns::default().matches("x"));
        assert!(!Patterns::default().skip_dir("x"));
        assert!(parse("# only a comment\n\n  \n").is_empty());
        assert!(!parse("x").is_empty());
        assert!(!parse("x").has_exceptions());
        assert!(parse("x\n!y").has_exceptions());
    }

    #[test]
    fn cleaning_is_go_filepath_clean() {
        let cases = [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("a/", "a"),
            ("./a", "a"),
            ("a//b", "a/b"),
            ("a/./b", "a/b"),
            ("a/../b", "b"),
            ("a/..", "."),
            ("../a", "../a"),
            ("../../a/..", "../.."),
            ("/", "/"),
            ("//", "/"),
            ("/../a", "/a"),
            ("/a/b/../../..", "/"),
            ("!./a", "!./a"),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "{input:?}");
        }
        assert_eq!(read_line("  /a/b/  ").as_deref(), Some("a/b"));
        assert_eq!(read_line("! ./x").as_deref(), Some("!x"));
        assert_eq!(read_line("!").as_deref(), Some("!"));
        assert_eq!(read_line("/").as_deref(), Some("/"));
        assert_eq!(read_line(" \t "), None);
    }

    /// A tiny xorshift64 generator: reproducible garbage.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn text(&mut self, alphabet: &[char], max_len: usize) -> String {
            let len = self.below(max_len + 1);
            (0..len).map(|_| alphabet[self.below(alphabet.len())]).collect()
        }
    }

    /// A plain backtracking matcher for the same tokens, to check the
    /// automaton against (exponential, so only for short inputs).
    fn reference(tokens: &[Token], text: &[char]) -> bool {
        let Some((first, rest)) = tokens.split_first() else { return text.is_empty() };
        let one = |ok: bool| ok && reference(rest, &text[1..]);
        match first {
            Token::Char(c) => !text.is_empty() && one(text[0] == *c),
            Token::One => !text.is_empty() && one(text[0] != '/'),
            Token::Class(class) => !text.is_empty() && one(class.contains(text[0])),
            Token::Star => (0..=text.len()).take_while(|&i| !text[..i].contains(&'/')).any(|i| reference(rest, &text[i..])),
            Token::Rest => (0..=text.len()).any(|i| reference(rest, &text[i..])),
            Token::Dirs => reference(rest, text) || (1..=text.len()).any(|i| text[i - 1] == '/' && reference(rest, &text[i..])),
        }
    }

    #[test]
    fn garbage_never_panics_and_agrees_with_a_reference() {
        const PATTERN: &[char] =
            &['a', 'b', 'a', '/', '/', '*', '*', '?', '[', ']', '^', '!', '-', '\\', '.', '#', ' ', '\n', '\r', '\t', 'é', '\u{feff}'];
        const PATH: &[char] = &['a', 'b', 'a', 'b', '/', '/', '.', '*', '[', ']', '!', '-', '\\', 'é', ' '];
        const NAME: &[char] = &['a', 'b', 'c', '*', '?', '[', ']', '!', '-', '^', 'é'];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut parsed, mut excluded_paths, mut skipped) = (0, 0, 0);
        for _ in 0..4000 {
            let text = rng.text(PATTERN, 40);
            let Ok(patterns) = Patterns::parse(&text) else { continue };
            parsed += 1;
            for _ in 0..4 {
                let path = rng.text(PATH, 12);
                let excluded = patterns.matches(&path);
                excluded_paths += usize::from(excluded);
                let _ = patterns.skip_dir(&path);
                // Last match wins, and a pattern matches a path or a parent.
                let Some(clean_path) = context_path(&path) else {
                    assert!(!excluded);
                    continue;
                };
                let chars: Vec<char> = clean_path.chars().collect();
                let prefixes: Vec<&[char]> =
                    (1..=chars.len()).filter(|&i| i == chars.len() || chars[i] == '/').map(|i| &chars[..i]).collect();
                let want = patterns
                    .rules
                    .iter()
                    .rev()
                    .find(|r| prefixes.iter().any(|p| reference(&r.glob.tokens, p)))
                    .is_some_and(|r| !r.exception);
                assert_eq!(excluded, want, "patterns {text:?}, path {path:?}");
            }
            // What skip_dir promises: everything beneath is excluded.
            for _ in 0..4 {
                let depth = 1 + rng.below(3);
                let parts: Vec<String> = (0..depth).map(|_| format!("{}{}", NAME[rng.below(NAME.len())], rng.text(NAME, 3))).collect();
                let dir = parts[..1 + rng.below(depth)].join("/");
                let below = parts.join("/");
                if patterns.skip_dir(&dir) {
                    skipped += 1;
                    assert!(patterns.matches(&dir), "patterns {text:?}, dir {dir:?}");
                    let beneath = if below.len() > dir.len() { below } else { format!("{dir}/x") };
                    assert!(patterns.matches(&beneath), "patterns {text:?}, dir {dir:?}, beneath {beneath:?}");
                }
            }
        }
        // The generator must exercise the matcher, not only the parser.
        assert!(parsed > 1000, "only {parsed} texts parsed");
        assert!(excluded_paths > 200, "only {excluded_paths} paths excluded");
        assert!(skipped > 50, "only {skipped} skips");
    }

    #[test]
    fn long_inputs_stay_linear() {
        let patterns = parse(&format!("{}b\n!{}", "*a".repeat(200), "**/a".repeat(200)));
        let path = "a".repeat(5000);
        assert!(!patterns.matches(&path));
        assert!(!patterns.skip_dir(&path));
    }
}

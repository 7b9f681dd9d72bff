//! Shell-word processing as the Dockerfile builder does it for the
//! instructions that expand variables (ENV, ARG, LABEL, COPY, ADD, WORKDIR,
//! USER, EXPOSE, VOLUME, STOPSIGNAL, FROM, ...): quote removal, the escape
//! character and `$VAR` / `${VAR...}` expansion. No command substitution, no
//! globbing of file names, no arithmetic: only what BuildKit's lexer does.
//!
//! Rules, in the order they apply to one character:
//! - `'...'` is literal up to the next `'` (no escapes inside);
//! - `"..."` expands `$` forms; the escape character escapes only `"`, `$`
//!   and itself inside, and stays literal before anything else;
//! - the escape character outside quotes makes the next character literal
//!   (a trailing lone escape character is dropped);
//! - `$name` / `${name}`: a name is letters, digits and `_`; `$1` (digits) and
//!   the special parameters `$@ $* $# $? $- $$ $!` are looked up like names
//!   (so they are normally unset and expand to nothing, as in BuildKit); a `$`
//!   followed by anything else stays a literal `$`;
//! - an unset variable expands to the empty string;
//! - `${name:-word}`, `${name-word}`, `${name:+word}`, `${name+word}`,
//!   `${name:?msg}`, `${name?msg}`, where `word` is itself processed (and,
//!   as in BuildKit, always processed, even when its value is not used);
//! - `${name#pat}`, `${name##pat}`, `${name%pat}`, `${name%%pat}`,
//!   `${name/pat/repl}`, `${name//pat/repl}` (the `/repl` part may be left
//!   out), with glob patterns where `*` is any run of characters and `?` one
//!   character; the escape character followed by `*`, `?`, `}`, `/` or itself
//!   makes that character literal in a pattern.

use std::fmt;

/// Deepest nesting of `${...}` accepted before giving up (stack safety).
const MAX_DEPTH: usize = 64;

/// A word that cannot be expanded: a syntax error, or a `${VAR?msg}` whose
/// variable is unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordError {
    word: String,
    message: String,
}

impl WordError {
    /// The reason, without the word it concerns (e.g. `FOO: must be set`).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The word, as given, whose expansion failed.
    pub fn word(&self) -> &str {
        &self.word
    }
}

impl fmt::Display for WordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (while expanding {:?})", self.message, self.word)
    }
}

impl std::error::Error for WordError {}

/// Removes quotes and expands variables in one word; whitespace is kept as
/// written (nothing is split). `env` returns a variable's value, `None` when
/// it is unset. `escape` is `\` or, after `# escape=``, a backtick.
pub fn expand_word(raw: &str, escape: char, env: &dyn Fn(&str) -> Option<String>) -> Result<String, WordError> {
    let mut out = Output::default();
    Lexer::new(raw, escape, env).run(&mut out).map_err(|m| WordError { word: raw.to_string(), message: m })?;
    Ok(out.result)
}

/// Splits `raw` into words on unquoted whitespace, each word processed as by
/// [`expand_word`].
///
/// This follows BuildKit's `ProcessWords` (used for EXPOSE): the value of an
/// *unquoted* expansion is split on whitespace too (`EXPOSE $PORTS` with
/// `PORTS="80 443"` gives two words), while quoted text and quoted expansions
/// (`"$PORTS"`) stay in one word. Empty words are dropped, so `""` alone gives
/// no word at all, as in BuildKit.
pub fn expand_words(raw: &str, escape: char, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, WordError> {
    let mut out = Output::default();
    Lexer::new(raw, escape, env).run(&mut out).map_err(|m| WordError { word: raw.to_string(), message: m })?;
    out.flush();
    Ok(out.words)
}

/// Collects both the processed text and the words split from it.
#[derive(Default)]
struct Output {
    result: String,
    words: Vec<String>,
    current: String,
}

impl Output {
    /// A character that is part of a word whatever it is (quoted or escaped).
    fn literal(&mut self, c: char) {
        self.result.push(c);
        self.current.push(c);
    }

    fn literal_str(&mut self, s: &str) {
        self.result.push_str(s);
        self.current.push_str(s);
    }

    /// An unquoted character (or one from an unquoted expansion): whitespace
    /// ends the current word.
    fn plain(&mut self, c: char) {
        self.result.push(c);
        if c.is_whitespace() {
            self.flush();
        } else {
            self.current.push(c);
        }
    }

    fn plain_str(&mut self, s: &str) {
        for c in s.chars() {
            self.plain(c);
        }
    }

    fn flush(&mut self) {
        if !self.current.is_empty() {
            self.words.push(std::mem::take(&mut self.current));
        }
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: &'a dyn Fn(&str) -> Option<String>,
    depth: usize,
}

impl<'a> Lexer<'a> {
    fn new(raw: &str, escape: char, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Lexer { chars: raw.chars().collect(), pos: 0, escape, env, depth: 0 }
    }

    fn run(&mut self, out: &mut Output) -> Result<(), String> {
        self.scan(&[], false, out).map(|_| ())
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn lookup(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// Processes characters into `out` until one of `stops` (consumed and
    /// returned) or the end of the input (`None`; an error when a stop
    /// character was expected). With `raw_escapes` the escape characters are
    /// kept in the output (patterns need them).
    fn scan(&mut self, stops: &[char], raw_escapes: bool, out: &mut Output) -> Result<Option<char>, String> {
        while let Some(c) = self.peek() {
            if stops.contains(&c) {
                self.pos += 1;
                return Ok(Some(c));
            }
            match c {
                '$' => {
                    let value = self.dollar()?;
                    out.plain_str(&value);
                }
                '\'' => {
                    let text = self.single_quoted()?;
                    out.literal_str(&text);
                }
                '"' => {
                    let text = self.double_quoted(raw_escapes)?;
                    out.literal_str(&text);
                }
                _ if c == self.escape => {
                    self.pos += 1;
                    if raw_escapes {
                        out.literal(c);
                    }
                    match self.bump() {
                        Some(next) => out.literal(next),
                        None => break,
                    }
                }
                _ => {
                    self.pos += 1;
                    out.plain(c);
                }
            }
        }
        match stops {
            [] => Ok(None),
            ['/', ..] | ['}', ..] => Err("missing '}' to close '${'".to_string()),
            [s, ..] => Err(format!("missing '{s}'")),
        }
    }

    fn single_quoted(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut text = String::new();
        loop {
            match self.bump() {
                None => return Err("missing closing single quote".to_string()),
                Some('\'') => return Ok(text),
                Some(c) => text.push(c),
            }
        }
    }

    fn double_quoted(&mut self, raw_escapes: bool) -> Result<String, String> {
        self.pos += 1;
        let mut text = String::new();
        loop {
            match self.peek() {
                None => return Err("missing closing double quote".to_string()),
                Some('"') => {
                    self.pos += 1;
                    return Ok(text);
                }
                Some('$') => text.push_str(&self.dollar()?),
                Some(c) if c == self.escape => {
                    self.pos += 1;
                    match self.peek() {
                        Some(next) if next == '"' || next == '$' || next == self.escape => {
                            self.pos += 1;
                            if raw_escapes {
                                text.push(c);
                            }
                            text.push(next);
                        }
                        // Before anything else the escape character is literal;
                        // at the very end it is dropped (the missing quote is
                        // reported on the next turn).
                        Some(_) => text.push(c),
                        None => {}
                    }
                }
                Some(c) => {
                    self.pos += 1;
                    text.push(c);
                }
            }
        }
    }

    /// A variable name after `$` (or `${`); empty when there is none.
    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if c.is_ascii_digit() => {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            Some(c @ ('@' | '*' | '#' | '?' | '-' | '$' | '!')) => {
                self.pos += 1;
                name.push(c);
                return name;
            }
            _ => {}
        }
        while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_') {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// At a `$`: returns what it expands to.
    fn dollar(&mut self) -> Result<String, String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.lookup(&name).unwrap_or_default());
        }
        self.pos += 1;
        if self.depth >= MAX_DEPTH {
            return Err("'${' nested too deeply".to_string());
        }
        self.depth += 1;
        let result = self.braced();
        self.depth -= 1;
        result
    }

    /// After `${`.
    fn braced(&mut self) -> Result<String, String> {
        let missing = || "missing '}' to close '${'".to_string();
        match self.peek() {
            None => return Err(missing()),
            Some('{' | '}' | ':') => return Err("bad substitution".to_string()),
            Some(_) => {}
        }
        let name = self.name();
        if name.is_empty() {
            return Err("bad substitution".to_string());
        }
        match self.bump() {
            None => Err(missing()),
            Some('}') => Ok(self.lookup(&name).unwrap_or_default()),
            Some(':') => match self.bump() {
                None => Err(missing()),
                Some(op @ ('-' | '+' | '?')) => self.modifier(&name, op, true),
                Some(op) => Err(format!("unsupported modifier ':{op}' in '${{{name}...}}'")),
            },
            Some(op @ ('-' | '+' | '?')) => self.modifier(&name, op, false),
            Some(op @ ('#' | '%')) => self.trim(&name, op),
            Some('/') => self.replace(&name),
            Some(op) => Err(format!("unsupported modifier '{op}' in '${{{name}...}}'")),
        }
    }

    /// Processes the rest of a `${...}` up to its `}` as a nested word.
    fn nested_word(&mut self, raw_escapes: bool) -> Result<String, String> {
        let mut out = Output::default();
        self.scan(&['}'], raw_escapes, &mut out)?;
        Ok(out.result)
    }

    /// `${name-word}`, `${name+word}`, `${name?msg}`; with `colon`, an empty
    /// value counts as unset.
    fn modifier(&mut self, name: &str, op: char, colon: bool) -> Result<String, String> {
        let word = self.nested_word(false)?;
        let value = self.lookup(name);
        let missing = match &value {
            None => true,
            Some(v) => colon && v.is_empty(),
        };
        match op {
            '-' if missing => Ok(word),
            '+' if missing => Ok(String::new()),
            '+' => Ok(word),
            '?' if missing => {
                let reason = match (&value, word.is_empty()) {
                    (_, false) => word,
                    (None, true) => "must be set".to_string(),
                    (Some(_), true) => "must not be empty".to_string(),
                };
                Err(format!("{name}: {reason}"))
            }
            _ => Ok(value.unwrap_or_default()),
        }
    }

    /// `${name#pat}`, `${name##pat}`, `${name%pat}`, `${name%%pat}`.
    fn trim(&mut self, name: &str, op: char) -> Result<String, String> {
        let word = self.nested_word(true)?;
        let (longest_match, pattern) = match word.strip_prefix(op) {
            Some(rest) => (true, rest),
            None => (false, word.as_str()),
        };
        let glob = Glob::compile(pattern, self.escape)?;
        let value: Vec<char> = self.lookup(name).unwrap_or_default().chars().collect();
        let pick = |(shortest, longest): (Option<usize>, Option<usize>)| if longest_match { longest } else { shortest };
        let kept: &[char] = if op == '#' {
            match pick(glob.match_lengths(&value)) {
                Some(len) => &value[len..],
                None => &value,
            }
        } else {
            // A suffix match is a prefix match of the reversed pattern on the reversed value.
            let reversed: Vec<char> = value.iter().rev().copied().collect();
            match pick(glob.reversed().match_lengths(&reversed)) {
                Some(len) => &value[..value.len() - len],
                None => &value,
            }
        };
        Ok(kept.iter().collect())
    }

    /// `${name/pat/repl}` and `${name//pat/repl}`: the first (or every)
    /// leftmost, longest, non-empty match of `pat` is replaced.
    fn replace(&mut self, name: &str) -> Result<String, String> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let mut pattern = Output::default();
        let stop = self.scan(&['/', '}'], true, &mut pattern)?;
        let replacement = if stop == Some('/') { self.nested_word(false)? } else { String::new() };
        let glob = Glob::compile(&pattern.result, self.escape)?;
        let value: Vec<char> = self.lookup(name).unwrap_or_default().chars().collect();
        if glob.is_empty() {
            return Ok(value.iter().collect());
        }
        let mut result = String::new();
        let mut i = 0;
        let mut replaced = false;
        while i < value.len() {
            let found = if replaced && !all { None } else { glob.match_lengths(&value[i..]).1.filter(|&len| len > 0) };
            match found {
                Some(len) => {
                    result.push_str(&replacement);
                    replaced = true;
                    i += len;
                }
                None => {
                    result.push(value[i]);
                    i += 1;
                }
            }
        }
        Ok(result)
    }
}

/// A compiled glob: literals, `?` and `*`.
struct Glob(Vec<Tok>);

#[derive(Clone, Copy, PartialEq)]
enum Tok {
    Lit(char),
    One,
    Any,
}

impl Glob {
    fn compile(pattern: &str, escape: char) -> Result<Glob, String> {
        let mut toks = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            let tok = match c {
                '*' => Tok::Any,
                '?' => Tok::One,
                _ if c == escape => match chars.next() {
                    Some(n) if matches!(n, '*' | '?' | '}' | '/') || n == escape => Tok::Lit(n),
                    Some(n) => return Err(format!("invalid escape '{escape}{n}' in pattern {pattern:?}")),
                    None => return Err(format!("pattern {pattern:?} ends with an escape character")),
                },
                _ => Tok::Lit(c),
            };
            if !(tok == Tok::Any && toks.last() == Some(&Tok::Any)) {
                toks.push(tok);
            }
        }
        Ok(Glob(toks))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same pattern read backwards (it matches the reversed strings).
    fn reversed(&self) -> Glob {
        Glob(self.0.iter().rev().copied().collect())
    }

    /// The shortest and the longest `n` such that the pattern matches all of
    /// `s[..n]`. One pass over `s`, tracking every pattern position reachable
    /// so far (an NFA), and stopping once none is: O(len(s) * len(pattern)).
    fn match_lengths(&self, s: &[char]) -> (Option<usize>, Option<usize>) {
        let p = &self.0;
        let mut states = vec![false; p.len() + 1];
        let mut next = vec![false; p.len() + 1];
        states[0] = true;
        Self::close(p, &mut states);
        let (mut shortest, mut longest) = (None, None);
        for (consumed, c) in s.iter().map(Some).chain(std::iter::once(None)).enumerate() {
            if states[p.len()] {
                shortest = shortest.or(Some(consumed));
                longest = Some(consumed);
            }
            let Some(c) = c else { break };
            next.iter_mut().for_each(|n| *n = false);
            for (i, tok) in p.iter().enumerate() {
                if states[i] {
                    match tok {
                        Tok::Any => next[i] = true,
                        Tok::One => next[i + 1] = true,
                        Tok::Lit(l) if l == c => next[i + 1] = true,
                        Tok::Lit(_) => {}
                    }
                }
            }
            Self::close(p, &mut next);
            std::mem::swap(&mut states, &mut next);
            if !states.contains(&true) {
                break;
            }
        }
        (shortest, longest)
    }

    /// Adds the positions reachable by letting `*`s match nothing.
    fn close(p: &[Tok], states: &mut [bool]) {
        for i in 0..p.len() {
            if states[i] && p[i] == Tok::Any {
                states[i + 1] = true;
            }
        }
    }

    /// Whether the pattern matches all of `s`.
    #[cfg(test)]
    fn matches(&self, s: &[char]) -> bool {
        self.match_lengths(s).1 == Some(s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        let v = match name {
            "FOO" => "/bar",
            "EMPTY" => "",
            "SPACED" => "a  b",
            "STR" => "foobarbaz",
            "PORTS" => "80 443/udp",
            "PATHV" => "/usr/local/bin/app.tar.gz",
            "WIN" => r"c:\dir\file",
            "ÜBER" => "unicode",
            _ => return None,
        };
        Some(v.to_string())
    }

    fn word(raw: &str) -> Result<String, String> {
        expand_word(raw, '\\', &env).map_err(|e| e.message().to_string())
    }

    #[test]
    fn expand_word_table() {
        let cases: &[(&str, &str)] = &[
            // plain and variables
            ("hello", "hello"),
            ("$FOO", "/bar"),
            ("${FOO}", "/bar"),
            ("${FOO}_x", "/bar_x"),
            ("$FOO_x", ""),
            ("$UNSET", ""),
            ("a${UNSET}b", "ab"),
            ("$ÜBER", "unicode"),
            // `$` that starts no name stays literal
            ("$", "$"),
            ("a$ b", "a$ b"),
            ("5$", "5$"),
            ("$/x", "$/x"),
            ("$1", ""),
            ("$$", ""),
            // escapes
            (r"\$FOO", "$FOO"),
            (r"\${FOO}", "${FOO}"),
            (r"a\ b", "a b"),
            (r"a\\b", r"a\b"),
            (r"trailing\", "trailing"),
            (r"\'", "'"),
            // quotes
            ("'$FOO'", "$FOO"),
            ("'a \"b\" c'", "a \"b\" c"),
            ("\"$FOO\"", "/bar"),
            ("\"a  b\"", "a  b"),
            (r#""\$FOO""#, "$FOO"),
            (r#""a\"b""#, "a\"b"),
            (r#""a\\b""#, r"a\b"),
            (r#""a\nb""#, r"a\nb"),
            (r#""'$FOO'""#, "'/bar'"),
            ("x\"y\"'z'", "xyz"),
            ("\"\"", ""),
            // whitespace kept as written
            ("a  b", "a  b"),
            ("$SPACED", "a  b"),
            // defaults and alternatives
            ("${UNSET:-x}", "x"),
            ("${EMPTY:-x}", "x"),
            ("${FOO:-x}", "/bar"),
            ("${UNSET-x}", "x"),
            ("${EMPTY-x}", ""),
            ("${FOO:+x}", "x"),
            ("${EMPTY:+x}", ""),
            ("${EMPTY+x}", "x"),
            ("${UNSET+x}", ""),
            ("${UNSET:-$FOO}", "/bar"),
            ("${UNSET:-${EMPTY:-deep}}", "deep"),
            ("${UNSET:-${ALSO:-${FOO}/x}}", "/bar/x"),
            ("${UNSET:-\"a b\"}", "a b"),
            ("${UNSET:-'$FOO'}", "$FOO"),
            (r"${UNSET:-a\}b}", "a}b"),
            ("\"${UNSET:-x y}\"", "x y"),
            ("${FOO:?oops}", "/bar"),
            ("${EMPTY?oops}", ""),
            // patterns
            ("${STR#f*b}", "arbaz"),
            ("${STR##f*b}", "az"),
            ("${STR%b*}", "foobar"),
            ("${STR%%b*}", "foo"),
            ("${STR#x*}", "foobarbaz"),
            ("${STR#}", "foobarbaz"),
            ("${STR#foo?}", "arbaz"),
            ("${PATHV##*/}", "app.tar.gz"),
            ("${PATHV%/*}", "/usr/local/bin"),
            ("${PATHV%.*}", "/usr/local/bin/app.tar"),
            ("${PATHV%%.*}", "/usr/local/bin/app"),
            ("${UNSET#x}", ""),
            ("${STR/ba/fo}", "fooforbaz"),
            ("${STR//ba/fo}", "fooforfoz"),
            ("${STR//a}", "foobrbz"),
            ("${STR/b*/X}", "fooX"),
            ("${STR/o/}", "fobarbaz"),
            ("${STR//?/.}", "........."),
            ("${STR/zz/y}", "foobarbaz"),
            (r"${WIN//\\//}", "c:/dir/file"),
            (r"${STR/\*/x}", "foobarbaz"),
        ];
        for (raw, want) in cases {
            assert_eq!(word(raw).as_deref(), Ok(*want), "expanding {raw:?}");
        }
    }

    #[test]
    fn expand_word_errors() {
        let cases: &[(&str, &str)] = &[
            ("${UNSET:?}", "UNSET: must be set"),
            ("${UNSET?}", "UNSET: must be set"),
            ("${EMPTY:?}", "EMPTY: must not be empty"),
            ("${UNSET:?give it}", "UNSET: give it"),
            ("${EMPTY:?give $FOO}", "EMPTY: give /bar"),
            ("${FOO", "missing '}'"),
            ("${FOO:-x", "missing '}'"),
            ("${", "missing '}'"),
            ("${}", "bad substitution"),
            ("${:-x}", "bad substitution"),
            ("${{x}}", "bad substitution"),
            ("${FOO:x}", "unsupported modifier"),
            ("${FOO^}", "unsupported modifier"),
            ("'open", "missing closing single quote"),
            ("\"open", "missing closing double quote"),
            ("\"open\\", "missing closing double quote"),
            (r"${STR#\a}", "invalid escape"),
            ("${STR/x", "missing '}'"),
        ];
        for (raw, want) in cases {
            match word(raw) {
                Ok(v) => panic!("{raw:?} expanded to {v:?}, wanted an error with {want:?}"),
                Err(m) => assert!(m.contains(want), "{raw:?}: {m:?} lacks {want:?}"),
            }
        }
        let e = expand_word("${X:?no}", '\\', &env).unwrap_err();
        assert_eq!(e.to_string(), "X: no (while expanding \"${X:?no}\")");
        // An error in a default is reported even when the default is unused.
        assert!(word("${FOO:-${UNSET:?}}").is_err());
    }

    #[test]
    fn backtick_escape() {
        let w = |raw: &str| expand_word(raw, '`', &env).map_err(|e| e.message().to_string());
        assert_eq!(w(r"c:\windows\system32").as_deref(), Ok(r"c:\windows\system32"));
        assert_eq!(w("`$FOO").as_deref(), Ok("$FOO"));
        assert_eq!(w("a` b").as_deref(), Ok("a b"));
        assert_eq!(w("\"a`\"b\"").as_deref(), Ok("a\"b"));
        assert_eq!(w(r#""c:\x""#).as_deref(), Ok(r"c:\x"));
        assert_eq!(w(r"${WIN%\*}").as_deref(), Ok(r"c:\dir"));
        assert_eq!(w("${STR/`*/x}").as_deref(), Ok("foobarbaz"));
    }

    #[test]
    fn expand_words_table() {
        let cases: &[(&str, &[&str])] = &[
            ("a b  c", &["a", "b", "c"]),
            ("  lead trail  ", &["lead", "trail"]),
            ("\"a b\" c", &["a b", "c"]),
            ("'a b'c d", &["a bc", "d"]),
            (r"a\ b c", &["a b", "c"]),
            ("$PORTS", &["80", "443/udp"]),
            ("\"$PORTS\"", &["80 443/udp"]),
            ("x$PORTS", &["x80", "443/udp"]),
            ("${UNSET:-1 2}", &["1", "2"]),
            ("$UNSET", &[]),
            ("\"\"", &[]),
            ("", &[]),
            ("8080/tcp\t9090", &["8080/tcp", "9090"]),
        ];
        for (raw, want) in cases {
            let got = expand_words(raw, '\\', &env).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            assert_eq!(&got, want, "splitting {raw:?}");
        }
        assert!(expand_words("\"open", '\\', &env).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let raw = "${A:-".repeat(10_000) + &"}".repeat(10_000);
        assert!(word(&raw).unwrap_err().contains("nested too deeply"));
        let ok = "${A:-".repeat(20) + "x" + &"}".repeat(20);
        assert_eq!(word(&ok).as_deref(), Ok("x"));
    }

    #[test]
    fn big_values_stay_fast() {
        let big = "ab".repeat(50_000);
        let env = |name: &str| (name == "BIG").then(|| big.clone());
        let w = |raw: &str| expand_word(raw, '\\', &env).unwrap();
        assert_eq!(w("${BIG//a/}").len(), 50_000);
        assert_eq!(w("${BIG/b*/}"), "a");
        assert_eq!(w("${BIG##*a}"), "b");
        assert_eq!(w("${BIG#*b}").len(), 99_998);
        assert_eq!(w("${BIG%%b*}"), "a");
        assert_eq!(w("${BIG%a*}").len(), 99_998);
    }

    #[test]
    fn glob_matching() {
        let g = |p: &str| Glob::compile(p, '\\').unwrap();
        let s = |s: &str| s.chars().collect::<Vec<_>>();
        assert!(g("*").matches(&s("")));
        assert!(g("a*b*c").matches(&s("aXbYbZc")));
        assert!(!g("a*b*c").matches(&s("aXbYbZ")));
        assert!(g("?*?").matches(&s("ab")));
        assert!(!g("?*?").matches(&s("a")));
        assert!(g(r"\*").matches(&s("*")));
        assert!(!g(r"\*").matches(&s("x")));
        assert_eq!(g("a*").match_lengths(&s("aab")), (Some(1), Some(3)));
        assert_eq!(g("b").match_lengths(&s("ab")), (None, None));
        assert_eq!(g("*b?").reversed().match_lengths(&s("xbab")), (Some(2), Some(4)));
        // Many stars stay fast.
        let long = "a".repeat(2000);
        assert!(!g(&"*a".repeat(50).replace("*a*a", "*a*b")).matches(&s(&long)));
    }
}

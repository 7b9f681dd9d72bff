//! The Dockerfile frontend: [`parse`] turns a Dockerfile's text into a
//! [`Dockerfile`] (meta ARGs and stages of typed instructions), following the
//! Dockerfile reference and BuildKit's parser; [`words`] does the shell-word
//! processing that the builder applies later, when it runs an instruction.
//!
//! The parser expands nothing: every value that the builder expands (FROM's
//! image, ENV and LABEL keys and values, ARG defaults, COPY/ADD sources and
//! destination, VOLUME, EXPOSE, USER, WORKDIR, STOPSIGNAL, flag values) is
//! kept as written, quotes included, for [`words::expand_word`] (or
//! [`words::expand_words`] for EXPOSE) with the variables in scope at that
//! point. Shell-form commands are kept as text for the shell.
//!
//! Line handling: parser directives are read at the very top; then comments
//! (`#` first on a line, after optional whitespace) and blank lines are
//! skipped, also inside a continuation; the escape character at the end of
//! a line (trailing spaces and tabs allowed) joins the next line to it with
//! nothing in between. A heredoc's body follows the line that names it and
//! is taken verbatim.

pub mod words;

use std::fmt;
use std::time::Duration;

pub use words::{expand_word, expand_words, WordError};

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character: `\`, or a backtick after `# escape=``.
    pub escape: char,
    /// The ARGs declared before the first FROM (usable in FROM lines).
    pub meta_args: Vec<ArgDef>,
    /// The build stages, in order; never empty.
    pub stages: Vec<Stage>,
}

/// One build stage: a FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The `AS` name, lowercased (as Docker does).
    pub name: Option<String>,
    /// The base image as written; expand it with the meta ARGs.
    pub base: String,
    /// `--platform`, as written.
    pub platform: Option<String>,
    /// The FROM's line (1-based).
    pub line: usize,
    /// The stage's instructions, in order.
    pub instructions: Vec<Instruction>,
}

/// One instruction other than FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The line the instruction starts on (1-based).
    pub line: usize,
    /// The keyword in upper case: `"RUN"`, `"COPY"`, ...
    pub keyword: &'static str,
    /// The instruction as written, continuation lines joined, without heredoc
    /// bodies (e.g. `RUN apt-get update`); for the image history.
    pub text: String,
    /// What the instruction says.
    pub kind: Kind,
}

/// An ARG declaration: `name` or `name=default` (the default as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDef {
    /// The name as written.
    pub name: String,
    /// The default as written (quotes kept), `None` for a bare `ARG name`.
    pub default: Option<String>,
}

/// A command in shell form (text for the shell) or exec form (JSON array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Shell form: the text after the keyword and flags.
    Shell(String),
    /// Exec form: the JSON array's strings.
    Exec(Vec<String>),
}

impl Command {
    /// The command as an image config keeps it: the exec form as it is, the
    /// shell form through `shell` (an image's `Shell`; empty: `/bin/sh -c`).
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            Command::Exec(v) => v.clone(),
            Command::Shell(text) => {
                let mut argv = if shell.is_empty() { vec!["/bin/sh".to_owned(), "-c".to_owned()] } else { shell.to_vec() };
                argv.push(text.clone());
                argv
            }
        }
    }
}

/// The strings of a JSON array (an image config's `Shell`, `Cmd`, ...); none
/// for anything else.
pub fn string_list(v: Option<&serde_json::Value>) -> Vec<String> {
    v.and_then(serde_json::Value::as_array).map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// The instruction-specific part of an [`Instruction`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `RUN`.
    Run(Run),
    /// `CMD`; `CMD []` is an empty exec form.
    Cmd(Command),
    /// `ENTRYPOINT`; `ENTRYPOINT []` is an empty exec form.
    Entrypoint(Command),
    /// `SHELL ["exe", "arg", ...]`.
    Shell(Vec<String>),
    /// `ENV`: (key, value) pairs as written.
    Env(Vec<(String, String)>),
    /// `LABEL`: (key, value) pairs as written.
    Label(Vec<(String, String)>),
    /// `ARG`.
    Arg(Vec<ArgDef>),
    /// `EXPOSE`: the words as written (expand each with `expand_words`).
    Expose(Vec<String>),
    /// `VOLUME`: the paths as written (JSON strings or words).
    Volume(Vec<String>),
    /// `USER`, as written.
    User(String),
    /// `WORKDIR`, as written.
    Workdir(String),
    /// `STOPSIGNAL`, as written.
    StopSignal(String),
    /// `MAINTAINER` (deprecated), as written.
    Maintainer(String),
    /// `COPY`.
    Copy(Copy),
    /// `ADD`.
    Add(Copy),
    /// `ONBUILD`: the trigger instruction, parsed (see [`Instruction::onbuild_trigger`]).
    Onbuild(Box<Instruction>),
    /// `HEALTHCHECK`; `None` for `HEALTHCHECK NONE`.
    Healthcheck(Option<Healthcheck>),
}

/// A `RUN` instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The command. With heredocs it is the shell text naming them, e.g.
    /// `<<EOF` or `python3 <<EOF`; see [`Run::script_heredoc`] and [`Run::shell_script`].
    pub command: Command,
    /// The `--mount` values as written (see [`parse_mount`]).
    pub mounts: Vec<String>,
    /// `--network` (`default`, `none` or `host`).
    pub network: Option<String>,
    /// `--security` (`sandbox` or `insecure`).
    pub security: Option<String>,
    /// The heredocs named on the line, in order.
    pub heredocs: Vec<Heredoc>,
}

/// A `COPY` or `ADD` instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// The source paths or URLs as written (heredoc sources are in `heredocs`).
    pub sources: Vec<String>,
    /// The destination as written.
    pub dest: String,
    /// `--from` (COPY only).
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents` (COPY only).
    pub parents: bool,
    /// `--exclude`, each as written.
    pub excludes: Vec<String>,
    /// `--checksum` (ADD only).
    pub checksum: Option<String>,
    /// `--keep-git-dir` (ADD only).
    pub keep_git_dir: bool,
    /// Heredoc sources: each becomes a file named after the heredoc.
    pub heredocs: Vec<Heredoc>,
}

/// A `HEALTHCHECK CMD` (the option values were checked, and kept as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// The test command (shell form means Docker's `CMD-SHELL`).
    pub command: Command,
    /// `--interval`, a Go duration (see [`parse_duration`]).
    pub interval: Option<String>,
    /// `--timeout`, a Go duration.
    pub timeout: Option<String>,
    /// `--start-period`, a Go duration.
    pub start_period: Option<String>,
    /// `--start-interval`, a Go duration.
    pub start_interval: Option<String>,
    /// `--retries`, a positive integer.
    pub retries: Option<String>,
}

/// A here-document: `<<NAME` on the instruction line, its body on the
/// following lines up to a line that is exactly `NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter with quotes removed; for COPY/ADD also the file name.
    pub name: String,
    /// The body verbatim, each line with its line ending.
    pub content: String,
    /// False when the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): no expansion.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body's lines (see [`Heredoc::body`]).
    pub chomp_tabs: bool,
}

impl Heredoc {
    /// The body to use: `content`, with each line's leading tabs removed for `<<-`.
    pub fn body(&self) -> String {
        if !self.chomp_tabs {
            return self.content.clone();
        }
        self.content.split_inclusive('\n').map(|l| l.trim_start_matches('\t')).collect()
    }
}

impl Run {
    /// The heredoc that *is* the script, for `RUN <<EOF` with nothing else on
    /// the line: BuildKit then runs its body (see [`Heredoc::body`]) with the
    /// shell, or as an executable file when it starts with `#!`.
    pub fn script_heredoc(&self) -> Option<&Heredoc> {
        let Command::Shell(text) = &self.command else { return None };
        let [heredoc] = self.heredocs.as_slice() else { return None };
        let marker = parse_marker(text.trim(), '\\')?;
        (marker.name == heredoc.name).then_some(heredoc)
    }

    /// For the shell form, the script to give the shell: the command text,
    /// then for each heredoc a newline, its raw content and its delimiter, so
    /// that the shell itself feeds the heredocs (what BuildKit does for
    /// `RUN cat <<EOF > file`). `None` for the exec form.
    pub fn shell_script(&self) -> Option<String> {
        let Command::Shell(text) = &self.command else { return None };
        let mut script = text.clone();
        for h in &self.heredocs {
            script.push('\n');
            script.push_str(&h.content);
            script.push_str(&h.name);
        }
        Some(script)
    }
}

impl Instruction {
    /// For an ONBUILD instruction: the trigger as an image config stores it
    /// in `OnBuild` (e.g. `RUN echo hi`), heredoc bodies appended so that
    /// [`parse_instruction`] reads it back whole. `None` for other instructions.
    pub fn onbuild_trigger(&self) -> Option<String> {
        let Kind::Onbuild(inner) = &self.kind else { return None };
        let heredocs = match &inner.kind {
            Kind::Run(r) => r.heredocs.as_slice(),
            Kind::Copy(c) | Kind::Add(c) => c.heredocs.as_slice(),
            _ => &[],
        };
        let mut text = inner.text.clone();
        for h in heredocs {
            text.push('\n');
            text.push_str(&h.content);
            text.push_str(&h.name);
        }
        Some(text)
    }
}

/// Why a Dockerfile does not parse, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The file name shown in messages (`Dockerfile` when `None`).
    pub file: Option<String>,
    /// The line (1-based): the start of the instruction at fault.
    pub line: usize,
    /// The instruction's keyword, when known.
    pub instruction: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

impl ParseError {
    fn new(line: usize, instruction: Option<&'static str>, message: impl Into<String>) -> Self {
        ParseError { file: None, line, instruction, message: message.into() }
    }

    /// The same error, naming `file` in its message.
    pub fn with_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.as_deref().unwrap_or("Dockerfile"), self.line)?;
        if let Some(keyword) = self.instruction {
            write!(f, "{keyword}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let mut parser = Parser::new(text, '\\');
    parser.directives()?;
    let mut dockerfile = Dockerfile { escape: parser.escape, meta_args: Vec::new(), stages: Vec::new() };
    let mut seen_any = false;
    while let Some(item) = parser.next_item()? {
        seen_any = true;
        match item {
            Item::From(stage) => {
                if let Some(name) = &stage.name {
                    if let Some(other) = dockerfile.stages.iter().find(|s| s.name.as_ref() == Some(name)) {
                        let message = format!("stage name {name:?} is already used by the FROM on line {}", other.line);
                        return Err(ParseError::new(stage.line, Some("FROM"), message));
                    }
                }
                dockerfile.stages.push(stage);
            }
            Item::Instruction(instruction) => match dockerfile.stages.last_mut() {
                Some(stage) => stage.instructions.push(instruction),
                None => match instruction.kind {
                    Kind::Arg(defs) => dockerfile.meta_args.extend(defs),
                    _ => {
                        let message = "only ARG may come before the first FROM";
                        return Err(ParseError::new(instruction.line, Some(instruction.keyword), message));
                    }
                },
            },
        }
    }
    if dockerfile.stages.is_empty() {
        let message = if seen_any { "no FROM instruction: nothing to build" } else { "the file has no instructions" };
        return Err(ParseError::new(parser.lines.len().max(1), None, message));
    }
    Ok(dockerfile)
}

/// Parses one instruction (other than FROM), e.g. an ONBUILD trigger read
/// from a base image's config, with the given escape character. The text
/// may span lines (continuations, heredoc bodies); parser directives are not
/// read, and there must be exactly one instruction.
pub fn parse_instruction(text: &str, escape: char) -> Result<Instruction, ParseError> {
    let mut parser = Parser::new(text, escape);
    match parser.next_item()? {
        None => Err(ParseError::new(1, None, "no instruction")),
        Some(Item::From(stage)) => Err(ParseError::new(stage.line, Some("FROM"), "FROM is not allowed here")),
        Some(Item::Instruction(instruction)) => match parser.next_item()? {
            None => Ok(instruction),
            Some(Item::From(Stage { line, .. }) | Item::Instruction(Instruction { line, .. })) => {
                Err(ParseError::new(line, None, "more than one instruction"))
            }
        },
    }
}

// ---------------------------------------------------------------------------
// Lines, directives, continuations and heredoc bodies.

const KEYWORDS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// What one logical line gives.
enum Item {
    From(Stage),
    Instruction(Instruction),
}

struct Parser<'a> {
    /// Each line without, then with, its line ending.
    lines: Vec<(&'a str, &'a str)>,
    /// Index of the next line to read.
    next: usize,
    escape: char,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, escape: char) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let lines = text
            .split_inclusive('\n')
            .map(|raw| {
                let line = raw.strip_suffix('\n').unwrap_or(raw);
                (line.strip_suffix('\r').unwrap_or(line), raw)
            })
            .collect();
        Parser { lines, next: 0, escape }
    }

    /// Reads the parser directives at the top of the file. The first line that
    /// is not a known directive ends them (an unknown one is a comment).
    fn directives(&mut self) -> Result<(), ParseError> {
        let mut seen: Vec<String> = Vec::new();
        while let Some(&(line, _)) = self.lines.get(self.next) {
            let Some((key, value)) = directive(line.trim_start()) else { return Ok(()) };
            let key = key.to_ascii_lowercase();
            if !matches!(key.as_str(), "escape" | "syntax" | "check") {
                return Ok(());
            }
            let line_no = self.next + 1;
            if seen.contains(&key) {
                return Err(ParseError::new(line_no, None, format!("the {key} parser directive may only be given once")));
            }
            if key == "escape" {
                self.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        let message = format!("invalid escape character {value:?}: must be \\ or `");
                        return Err(ParseError::new(line_no, None, message));
                    }
                };
            }
            seen.push(key);
            self.next += 1;
        }
        Ok(())
    }

    /// The next instruction's text with its continuation lines joined, and
    /// the line it starts on; comments and blank lines are skipped.
    fn logical_line(&mut self) -> Option<(usize, String)> {
        while let Some(&(line, _)) = self.lines.get(self.next) {
            let start = self.next + 1;
            self.next += 1;
            let first = line.trim_start();
            if first.is_empty() || first.starts_with('#') {
                continue;
            }
            let mut joined = match strip_continuation(first, self.escape) {
                None => return Some((start, first.to_string())),
                Some(part) => part.to_string(),
            };
            while let Some(&(line, _)) = self.lines.get(self.next) {
                self.next += 1;
                let trimmed = line.trim_start();
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                match strip_continuation(line, self.escape) {
                    Some(part) => joined.push_str(part),
                    None => {
                        joined.push_str(line);
                        break;
                    }
                }
            }
            if !joined.trim().is_empty() {
                return Some((start, joined));
            }
        }
        None
    }

    /// Reads the bodies of the heredocs named on the instruction at `line`.
    fn heredoc_bodies(&mut self, markers: Vec<Marker>, line: usize, keyword: &'static str) -> Result<Vec<Heredoc>, ParseError> {
        let mut heredocs = Vec::with_capacity(markers.len());
        for marker in markers {
            let mut content = String::new();
            let mut terminated = false;
            while let Some(&(text, raw)) = self.lines.get(self.next) {
                self.next += 1;
                let candidate = if marker.chomp { text.trim_start_matches('\t') } else { text };
                if candidate == marker.name {
                    terminated = true;
                    break;
                }
                content.push_str(raw);
            }
            if !terminated {
                let message = format!("unterminated heredoc: no line {:?} after it", marker.name);
                return Err(ParseError::new(line, Some(keyword), message));
            }
            heredocs.push(Heredoc { name: marker.name, content, expand: marker.expand, chomp_tabs: marker.chomp });
        }
        Ok(heredocs)
    }

    /// Parses the next instruction, reading its heredoc bodies.
    fn next_item(&mut self) -> Result<Option<Item>, ParseError> {
        let Some((line, text)) = self.logical_line() else { return Ok(None) };
        let header = Header::split(&text, self.escape);
        let Some(keyword) = lookup_keyword(&header.keyword) else {
            return Err(ParseError::new(line, None, unknown_instruction(&header.keyword)));
        };
        let markers = match keyword {
            "ONBUILD" => {
                let inner = Header::split(&header.args, self.escape);
                lookup_keyword(&inner.keyword).map(|k| heredoc_markers(k, &inner.args, self.escape)).unwrap_or_default()
            }
            _ => heredoc_markers(keyword, &header.args, self.escape),
        };
        let heredocs = self.heredoc_bodies(markers, line, keyword)?;
        build(line, &text, header, keyword, heredocs, self.escape).map(Some)
    }
}

/// `# key=value` at the top of a file: the key and the value.
fn directive(line: &str) -> Option<(&str, &str)> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c');
    let rest = line.strip_prefix('#')?.trim_start_matches(is_space);
    let key_len = rest.bytes().enumerate().take_while(|&(i, b)| b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())).count();
    if key_len == 0 {
        return None;
    }
    let (key, rest) = rest.split_at(key_len);
    let value = rest.trim_start_matches(is_space).strip_prefix('=')?.trim_matches(is_space);
    (!value.is_empty()).then_some((key, value))
}

/// The line without its continuation escape (and the spaces or tabs after
/// it), or `None` when the line does not continue.
fn strip_continuation(line: &str, escape: char) -> Option<&str> {
    line.trim_end_matches([' ', '\t']).strip_suffix(escape)
}

fn lookup_keyword(token: &str) -> Option<&'static str> {
    KEYWORDS.iter().copied().find(|k| k.eq_ignore_ascii_case(token))
}

fn unknown_instruction(token: &str) -> String {
    let upper = token.to_uppercase();
    let best = KEYWORDS.iter().map(|k| (edit_distance(&upper, k), *k)).min();
    match best {
        Some((d, k)) if d == 1 || (d == 2 && upper.chars().count() >= 6) => format!("unknown instruction: {upper} (did you mean {k}?)"),
        _ => format!("unknown instruction: {upper}"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

// ---------------------------------------------------------------------------
// Instruction header: keyword, flags, arguments.

struct Header {
    keyword: String,
    flags: Vec<String>,
    args: String,
}

/// Whitespace between a keyword and its arguments, and in whitespace-split
/// argument lists (ASCII only, as in BuildKit).
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\r')
}

impl Header {
    fn split(text: &str, escape: char) -> Header {
        let text = text.trim();
        let (keyword, rest) = match text.find(is_separator) {
            Some(i) => text.split_at(i),
            None => (text, ""),
        };
        let (flags, args) = extract_flags(rest, escape);
        Header { keyword: keyword.to_string(), flags, args: args.trim().to_string() }
    }
}

/// Takes the leading `--flag[=value]` words off `rest` (quotes and escapes
/// in them removed); a bare `--` ends the flags and is dropped.
fn extract_flags(rest: &str, escape: char) -> (Vec<String>, &str) {
    let mut flags = Vec::new();
    let mut i = 0;
    loop {
        let Some(offset) = rest[i..].find(|c: char| !c.is_whitespace()) else { return (flags, "") };
        i += offset;
        if !rest[i..].starts_with("--") {
            return (flags, &rest[i..]);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut chars = rest[i..].char_indices();
        let mut end = rest.len();
        while let Some((j, c)) = chars.next() {
            match quote {
                None if c.is_whitespace() => {
                    end = i + j;
                    break;
                }
                None if c == '\'' || c == '"' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ if c == escape => {
                    if let Some((_, next)) = chars.next() {
                        word.push(next);
                    }
                }
                _ => word.push(c),
            }
        }
        i = end;
        if word == "--" {
            return (flags, &rest[i..]);
        }
        flags.push(word);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    /// `--name` or `--name=true|false`.
    Bool,
    /// `--name=value`, once.
    Value,
    /// `--name=value`, any number of times.
    Repeated,
}

/// The flags given to one instruction, checked against what it accepts.
#[derive(Default)]
struct Flags {
    given: Vec<(&'static str, String)>,
}

impl Flags {
    fn parse(raw: &[String], accepted: &[(&'static str, FlagKind)]) -> Result<Flags, String> {
        let mut flags = Flags::default();
        for flag in raw {
            let body = flag.strip_prefix("--").unwrap_or(flag);
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            let Some(&(name, kind)) = accepted.iter().find(|(n, _)| *n == name) else {
                return Err(format!("unknown flag: --{name}"));
            };
            if kind != FlagKind::Repeated && flags.given.iter().any(|(n, _)| *n == name) {
                return Err(format!("flag --{name} is given more than once"));
            }
            let value = match (kind, value) {
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Bool, Some(v)) if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") => v.to_ascii_lowercase(),
                (FlagKind::Bool, Some(v)) => return Err(format!("flag --{name} takes true or false, not {v:?}")),
                (_, None) => return Err(format!("flag --{name} needs a value (--{name}=...)")),
                (_, Some(v)) => v.to_string(),
            };
            flags.given.push((name, value));
        }
        Ok(flags)
    }

    fn value(&self, name: &str) -> Option<String> {
        self.given.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
    }

    fn values(&self, name: &str) -> Vec<String> {
        self.given.iter().filter(|(n, _)| *n == name).map(|(_, v)| v.clone()).collect()
    }

    fn is_set(&self, name: &str) -> bool {
        self.value(name).is_some_and(|v| v == "true")
    }
}

// ---------------------------------------------------------------------------
// Building instructions.

/// Builds the instruction at `line` from its header and heredoc bodies.
fn build(line: usize, text: &str, header: Header, keyword: &'static str, heredocs: Vec<Heredoc>, escape: char) -> Result<Item, ParseError> {
    let err = |message: String| ParseError::new(line, Some(keyword), message);
    let args = header.args.as_str();
    let flags = |accepted: &[(&'static str, FlagKind)]| Flags::parse(&header.flags, accepted).map_err(err);
    let one_argument = || {
        if args.is_empty() {
            Err(err("an argument is required".to_string()))
        } else {
            Ok(args.to_string())
        }
    };
    use FlagKind::{Bool, Repeated, Value};
    let kind = match keyword {
        "FROM" => {
            let flags = flags(&[("platform", Value)])?;
            let words = split_separated(args);
            let (base, name) = match words.as_slice() {
                [base] => (base.clone(), None),
                [base, as_, name] if as_.eq_ignore_ascii_case("as") => (base.clone(), Some(stage_name(name).map_err(err)?)),
                _ => return Err(err("expected an image, optionally followed by AS <name>".to_string())),
            };
            return Ok(Item::From(Stage { name, base, platform: flags.value("platform"), line, instructions: Vec::new() }));
        }
        "RUN" => {
            let flags = flags(&[("mount", Repeated), ("network", Value), ("security", Value)])?;
            let network = flags.value("network");
            if let Some(n) = network.as_deref().filter(|n| !matches!(*n, "default" | "none" | "host")) {
                return Err(err(format!("unsupported network mode {n:?}: use default, none or host")));
            }
            let security = flags.value("security");
            if let Some(s) = security.as_deref().filter(|s| !matches!(*s, "sandbox" | "insecure")) {
                return Err(err(format!("unsupported security mode {s:?}: use sandbox or insecure")));
            }
            let mounts = flags.values("mount");
            for mount in mounts.iter().filter(|m| !m.contains('$')) {
                parse_mount(mount).map_err(|e| err(format!("--mount={mount}: {e}")))?;
            }
            let command = match command(args).map_err(err)? {
                None => return Err(err("a command is required".to_string())),
                Some(Command::Exec(argv)) if argv.is_empty() => return Err(err("a command is required".to_string())),
                Some(c) => c,
            };
            Kind::Run(Run { command, mounts, network, security, heredocs })
        }
        "CMD" | "ENTRYPOINT" => {
            flags(&[])?;
            let Some(command) = command(args).map_err(err)? else {
                return Err(err(format!("a command is required (use {keyword} [] for none)")));
            };
            if keyword == "CMD" {
                Kind::Cmd(command)
            } else {
                Kind::Entrypoint(command)
            }
        }
        "SHELL" => {
            flags(&[])?;
            match json_array(args) {
                JsonArray::Strings(argv) if !argv.is_empty() => Kind::Shell(argv),
                JsonArray::Strings(_) => return Err(err("the array must name the shell's executable".to_string())),
                JsonArray::NotStrings => return Err(err(NOT_STRINGS.to_string())),
                JsonArray::Invalid => return Err(err("a JSON array is required, e.g. SHELL [\"/bin/sh\", \"-c\"]".to_string())),
            }
        }
        "ENV" => {
            flags(&[])?;
            Kind::Env(key_values(args, keyword, escape).map_err(err)?)
        }
        "LABEL" => {
            flags(&[])?;
            Kind::Label(key_values(args, keyword, escape).map_err(err)?)
        }
        "ARG" => {
            flags(&[])?;
            let words = split_words(args, escape).0;
            if words.is_empty() {
                return Err(err("a name is required".to_string()));
            }
            let mut defs = Vec::with_capacity(words.len());
            for word in words {
                let (name, default) = match word.split_once('=') {
                    Some((name, default)) => (name.to_string(), Some(default.to_string())),
                    None => (word, None),
                };
                if name.is_empty() {
                    return Err(err("a name can not be empty".to_string()));
                }
                defs.push(ArgDef { name, default });
            }
            Kind::Arg(defs)
        }
        "EXPOSE" => {
            flags(&[])?;
            let ports = split_separated(args);
            if ports.is_empty() {
                return Err(err("at least one port is required".to_string()));
            }
            Kind::Expose(ports)
        }
        "VOLUME" => {
            flags(&[])?;
            let paths = match json_array(args) {
                JsonArray::Strings(paths) => paths,
                JsonArray::NotStrings => return Err(err(NOT_STRINGS.to_string())),
                JsonArray::Invalid => split_separated(args),
            };
            let mut volumes = Vec::with_capacity(paths.len());
            for path in paths {
                let path = path.trim();
                if path.is_empty() {
                    return Err(err("a path can not be empty".to_string()));
                }
                volumes.push(path.to_string());
            }
            if volumes.is_empty() {
                return Err(err("at least one path is required".to_string()));
            }
            Kind::Volume(volumes)
        }
        "USER" => {
            flags(&[])?;
            Kind::User(one_argument()?)
        }
        "WORKDIR" => {
            flags(&[])?;
            Kind::Workdir(one_argument()?)
        }
        "STOPSIGNAL" => {
            flags(&[])?;
            Kind::StopSignal(one_argument()?)
        }
        "MAINTAINER" => {
            flags(&[])?;
            Kind::Maintainer(one_argument()?)
        }
        "COPY" | "ADD" => {
            let flags = if keyword == "COPY" {
                flags(&[("from", Value), ("chown", Value), ("chmod", Value), ("link", Bool), ("parents", Bool), ("exclude", Repeated)])?
            } else {
                flags(&[
                    ("chown", Value),
                    ("chmod", Value),
                    ("link", Bool),
                    ("exclude", Repeated),
                    ("checksum", Value),
                    ("keep-git-dir", Bool),
                ])?
            };
            let (words, json) = match json_array(args) {
                JsonArray::Strings(words) => (words, true),
                JsonArray::NotStrings => return Err(err(NOT_STRINGS.to_string())),
                JsonArray::Invalid => (split_separated(args), false),
            };
            let Some((dest, sources)) = words.split_last().filter(|(_, sources)| !sources.is_empty()) else {
                return Err(err("at least one source and a destination are required".to_string()));
            };
            let is_heredoc = |word: &str| !json && parse_marker(word, escape).is_some();
            if is_heredoc(dest) {
                return Err(err("the destination can not be a heredoc".to_string()));
            }
            let copy = Copy {
                sources: sources.iter().filter(|s| !is_heredoc(s)).cloned().collect(),
                dest: dest.clone(),
                from: flags.value("from"),
                chown: flags.value("chown"),
                chmod: flags.value("chmod"),
                link: flags.is_set("link"),
                parents: flags.is_set("parents"),
                excludes: flags.values("exclude"),
                checksum: flags.value("checksum"),
                keep_git_dir: flags.is_set("keep-git-dir"),
                heredocs,
            };
            if keyword == "COPY" {
                Kind::Copy(copy)
            } else {
                Kind::Add(copy)
            }
        }
        "ONBUILD" => {
            flags(&[])?;
            if args.is_empty() {
                return Err(err("an instruction is required".to_string()));
            }
            let inner = Header::split(args, escape);
            let Some(inner_keyword) = lookup_keyword(&inner.keyword) else {
                return Err(err(unknown_instruction(&inner.keyword)));
            };
            match inner_keyword {
                "ONBUILD" => return Err(err("ONBUILD ONBUILD is not allowed".to_string())),
                "FROM" | "MAINTAINER" => return Err(err(format!("{inner_keyword} is not allowed as an ONBUILD trigger"))),
                _ => {}
            }
            match build(line, args, inner, inner_keyword, heredocs, escape)? {
                Item::Instruction(trigger) => Kind::Onbuild(Box::new(trigger)),
                Item::From(_) => return Err(err("FROM is not allowed as an ONBUILD trigger".to_string())),
            }
        }
        "HEALTHCHECK" => {
            let flags =
                flags(&[("interval", Value), ("timeout", Value), ("start-period", Value), ("start-interval", Value), ("retries", Value)])?;
            let (kind, rest) = match args.find(char::is_whitespace) {
                Some(i) => (&args[..i], args[i..].trim_start()),
                None => (args, ""),
            };
            if kind.eq_ignore_ascii_case("NONE") {
                if !rest.is_empty() {
                    return Err(err("HEALTHCHECK NONE takes no arguments".to_string()));
                }
                Kind::Healthcheck(None)
            } else if kind.eq_ignore_ascii_case("CMD") {
                let command = match command(rest).map_err(err)? {
                    None => return Err(err("HEALTHCHECK CMD needs a command".to_string())),
                    Some(Command::Exec(argv)) if argv.is_empty() => return Err(err("HEALTHCHECK CMD needs a command".to_string())),
                    Some(c) => c,
                };
                for name in ["interval", "timeout", "start-period", "start-interval"] {
                    if let Some(v) = flags.value(name) {
                        match parse_duration(&v) {
                            Ok(d) if d.is_zero() || d >= Duration::from_millis(1) => {}
                            Ok(_) => return Err(err(format!("--{name}={v} is shorter than 1ms"))),
                            Err(e) => return Err(err(format!("--{name}: {e}"))),
                        }
                    }
                }
                let retries = flags.value("retries");
                if let Some(r) = &retries {
                    if !r.parse::<i32>().is_ok_and(|n| n >= 1) {
                        return Err(err(format!("--retries must be a whole number, at least 1 (not {r:?})")));
                    }
                }
                Kind::Healthcheck(Some(Healthcheck {
                    command,
                    interval: flags.value("interval"),
                    timeout: flags.value("timeout"),
                    start_period: flags.value("start-period"),
                    start_interval: flags.value("start-interval"),
                    retries,
                }))
            } else if kind.is_empty() {
                return Err(err("NONE or CMD <command> is required".to_string()));
            } else {
                return Err(err(format!("unknown HEALTHCHECK type {kind:?}: use CMD or NONE")));
            }
        }
        _ => return Err(ParseError::new(line, None, unknown_instruction(keyword))),
    };
    Ok(Item::Instruction(Instruction { line, keyword, text: text.trim().to_string(), kind }))
}

const NOT_STRINGS: &str = "a JSON array here may hold strings only";

/// Shell or exec form: a valid JSON array of strings is the exec form,
/// anything else (including invalid JSON) the shell form; `None` when empty.
fn command(args: &str) -> Result<Option<Command>, String> {
    if args.is_empty() {
        return Ok(None);
    }
    match json_array(args) {
        JsonArray::Strings(argv) => Ok(Some(Command::Exec(argv))),
        JsonArray::NotStrings => Err(NOT_STRINGS.to_string()),
        JsonArray::Invalid => Ok(Some(Command::Shell(args.to_string()))),
    }
}

/// Checks and lowercases a stage name (Docker lowercases it, then wants a
/// letter followed by letters, digits, `-`, `_` or `.`).
fn stage_name(raw: &str) -> Result<String, String> {
    let name = raw.to_lowercase();
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(name)
    } else {
        Err(format!("invalid stage name {raw:?}: it must start with a letter and hold only letters, digits, '-', '_' and '.'"))
    }
}

/// Splits on runs of ASCII whitespace, with no regard for quotes (as BuildKit
/// does for FROM, EXPOSE, and COPY/ADD/VOLUME in shell form: paths with
/// spaces need the JSON form).
fn split_separated(args: &str) -> Vec<String> {
    args.split(is_separator).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// Splits on unquoted whitespace, keeping quotes and escapes in the words
/// (they are removed when the word is expanded). Also says whether a quote
/// was left open.
fn split_words(args: &str, escape: char) -> (Vec<String>, bool) {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut keep_empty = false;
    let mut quote: Option<char> = None;
    let mut chars = args.chars();
    while let Some(c) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if in_word && (keep_empty || !word.is_empty()) {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
                keep_empty = false;
                continue;
            }
            None => {
                in_word = true;
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    keep_empty = true;
                } else if c == escape {
                    // An escape character at the very end is dropped.
                    if let Some(next) = chars.next() {
                        word.push(c);
                        word.push(next);
                    }
                    continue;
                }
            }
            Some(q) if c == q => quote = None,
            Some(q) if c == escape && q != '\'' => {
                match chars.next() {
                    Some(next) => {
                        word.push(c);
                        word.push(next);
                    }
                    None => quote = None,
                }
                continue;
            }
            Some(_) => {}
        }
        word.push(c);
    }
    if in_word && (keep_empty || !word.is_empty()) {
        words.push(word);
    }
    (words, quote.is_some())
}

/// ENV and LABEL pairs: `k=v k2="v 2"` (each word needs `=`) or the legacy
/// `k value with spaces` (one pair, the value is the rest of the line).
fn key_values(args: &str, keyword: &str, escape: char) -> Result<Vec<(String, String)>, String> {
    let words = split_words(args, escape).0;
    let Some(first) = words.first() else {
        return Err("at least one key=value pair is required".to_string());
    };
    if !first.contains('=') {
        let (key, value) = match args.find(is_separator) {
            Some(i) => (&args[..i], args[i..].trim_start_matches(is_separator)),
            None => (args, ""),
        };
        if value.is_empty() {
            return Err(format!("{key} has no value: write {key}=value (or {keyword} {key} value)"));
        }
        return Ok(vec![(key.to_string(), value.to_string())]);
    }
    let mut pairs = Vec::with_capacity(words.len());
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!("{word:?} has no '=': write each pair as key=value"));
        };
        if key.is_empty() {
            return Err("a name can not be empty".to_string());
        }
        pairs.push((key.to_string(), value.to_string()));
    }
    Ok(pairs)
}

// ---------------------------------------------------------------------------
// Heredoc markers.

/// `<<NAME` found on an instruction line.
struct Marker {
    name: String,
    expand: bool,
    chomp: bool,
}

/// The heredocs an instruction names: only RUN, COPY and ADD in shell form
/// have them. The words are split as the shell would, so a quoted `"<<EOF"`
/// is no heredoc; a line with an open quote has none.
fn heredoc_markers(keyword: &str, args: &str, escape: char) -> Vec<Marker> {
    if !matches!(keyword, "RUN" | "COPY" | "ADD") || matches!(json_array(args), JsonArray::Strings(_)) {
        return Vec::new();
    }
    let (words, open_quote) = split_words(args, escape);
    if open_quote {
        return Vec::new();
    }
    words.iter().filter_map(|w| parse_marker(w, escape)).collect()
}

/// A word of the form `[digits]<<[-]NAME` (NAME with no `<`, possibly
/// quoted): BuildKit's heredoc syntax. Quoting any part of NAME turns
/// expansion off.
fn parse_marker(word: &str, escape: char) -> Option<Marker> {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit()).strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let mut name = String::new();
    let mut quoted = false;
    let mut quote: Option<char> = None;
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some('\'') if c == '\'' => quote = None,
            Some('"') if c == '"' => quote = None,
            Some('"') if c == escape => match chars.next() {
                Some(next) if next == '"' || next == '$' || next == escape => name.push(next),
                Some(next) => {
                    name.push(c);
                    name.push(next);
                }
                None => {}
            },
            Some(_) => name.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                quoted = true;
            }
            None if c == escape => name.extend(chars.next()),
            None => name.push(c),
        }
    }
    if quote.is_some() || name.is_empty() {
        return None;
    }
    Some(Marker { name, expand: !quoted, chomp })
}

// ---------------------------------------------------------------------------
// JSON arrays of strings (exec form).

enum JsonArray {
    /// A valid JSON array of strings.
    Strings(Vec<String>),
    /// Valid JSON, but an array holding something other than strings.
    NotStrings,
    /// Not a JSON array: the shell form applies.
    Invalid,
}

/// Nesting accepted inside a JSON array before calling it invalid.
const JSON_MAX_DEPTH: usize = 128;

fn json_array(text: &str) -> JsonArray {
    let mut json = Json { bytes: text.as_bytes(), pos: 0 };
    json.array().unwrap_or(JsonArray::Invalid)
}

struct Json<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Json<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek() == Some(b)).then(|| self.pos += 1)
    }

    /// The whole text as an array; `None` when it is not valid JSON.
    fn array(&mut self) -> Option<JsonArray> {
        self.skip_space();
        self.eat(b'[')?;
        let mut strings = Vec::new();
        let mut only_strings = true;
        self.skip_space();
        if self.eat(b']').is_none() {
            loop {
                self.skip_space();
                if self.peek() == Some(b'"') {
                    strings.push(self.string()?);
                } else {
                    self.value(1)?;
                    only_strings = false;
                }
                self.skip_space();
                match self.peek()? {
                    b',' => self.pos += 1,
                    b']' => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.skip_space();
        if self.pos != self.bytes.len() {
            return None;
        }
        Some(if only_strings { JsonArray::Strings(strings) } else { JsonArray::NotStrings })
    }

    /// Skips any JSON value.
    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > JSON_MAX_DEPTH {
            return None;
        }
        self.skip_space();
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'[' => {
                self.pos += 1;
                self.skip_space();
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.value(depth + 1)?;
                    self.skip_space();
                    match self.peek()? {
                        b',' => self.pos += 1,
                        b']' => {
                            self.pos += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                self.pos += 1;
                self.skip_space();
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.skip_space();
                    if self.peek() != Some(b'"') {
                        return None;
                    }
                    self.string()?;
                    self.skip_space();
                    self.eat(b':')?;
                    self.value(depth + 1)?;
                    self.skip_space();
                    match self.peek()? {
                        b',' => self.pos += 1,
                        b'}' => {
                            self.pos += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(word.len())?;
        (self.bytes.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let end = self.pos.checked_add(4)?;
        let digits = std::str::from_utf8(self.bytes.get(self.pos..end)?).ok()?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos = end;
        u32::from_str_radix(digits, 16).ok()
    }

    /// A string, at its opening quote.
    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let b = self.peek()?;
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let escaped = self.peek()?;
                    self.pos += 1;
                    let c = match escaped {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return None,
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => return None,
                _ => out.push(b),
            }
        }
        // The input is UTF-8 and only whole characters were copied or added.
        Some(String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// After `\u`: a character, surrogate pairs joined; a lone surrogate
    /// becomes U+FFFD (as Go does).
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if (0xd800..0xdc00).contains(&first) {
            let save = self.pos;
            if self.bytes.get(self.pos..self.pos + 2) == Some(b"\\u") {
                self.pos += 2;
                if let Some(second) = self.hex4().filter(|s| (0xdc00..0xe000).contains(s)) {
                    let c = 0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00);
                    return Some(char::from_u32(c).unwrap_or('\u{fffd}'));
                }
            }
            self.pos = save;
            return Some('\u{fffd}');
        }
        Some(char::from_u32(first).unwrap_or('\u{fffd}'))
    }
}

// ---------------------------------------------------------------------------
// RUN --mount.

/// The kind of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// `type=bind` (the default): a directory of the context or of a stage.
    Bind,
    /// `type=cache`: a persistent cache directory.
    Cache,
    /// `type=tmpfs`.
    Tmpfs,
    /// `type=secret`: a build secret as a file (or environment variable).
    Secret,
    /// `type=ssh`: the SSH agent socket.
    Ssh,
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Concurrent builds share the cache (the default).
    Shared,
    /// A busy cache is not shared: another is created.
    Private,
    /// Builds wait for the cache to be free.
    Locked,
}

/// A parsed `RUN --mount` value; the values are as written (not expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `type=`.
    pub kind: MountType,
    /// `target=`/`dst=`/`destination=`; for a secret without one (and without
    /// `env=`), `/run/secrets/<id>`.
    pub target: Option<String>,
    /// `source=`/`src=` (for a secret it is taken as its id).
    pub source: Option<String>,
    /// `from=`: a stage or image to take bind or cache content from.
    pub from: Option<String>,
    /// `id=`; for a secret without one, the target's last path element.
    pub id: Option<String>,
    /// Read-only: given by `ro`/`readonly`/`rw`, else true for bind, secret
    /// and ssh mounts, false for cache and tmpfs.
    pub readonly: bool,
    /// `sharing=` (cache mounts only; default shared).
    pub sharing: Sharing,
    /// `mode=` (octal; cache, secret and ssh only).
    pub mode: Option<u32>,
    /// `uid=` (cache, secret and ssh only).
    pub uid: Option<u32>,
    /// `gid=` (cache, secret and ssh only).
    pub gid: Option<u32>,
    /// `size=` in bytes (tmpfs only; `64m`, `1g`, ... in units of 1024).
    pub size: Option<u64>,
    /// `required` (secret and ssh only): fail when it is not provided.
    pub required: bool,
    /// `env=` (secret only): also expose the secret as this variable.
    pub env: Option<String>,
}

/// Parses a `RUN --mount` value: comma-separated `key=value` fields, CSV
/// quoting allowed (`"target=/a,b"`). The type is read first, wherever it is.
pub fn parse_mount(raw: &str) -> Result<Mount, String> {
    let fields = csv_fields(raw)?;
    let mut mount = Mount {
        kind: MountType::Bind,
        target: None,
        source: None,
        from: None,
        id: None,
        readonly: true,
        sharing: Sharing::Shared,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        required: false,
        env: None,
    };
    let split = |field: &str| match field.split_once('=') {
        Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
        None => (field.to_ascii_lowercase(), None),
    };
    for field in &fields {
        if let (key, Some(value)) = split(field) {
            if key == "type" {
                mount.kind = match value.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => return Err(format!("unsupported mount type {value:?}: use bind, cache, tmpfs, secret or ssh")),
                };
            }
        }
    }
    let kind_name = format!("{:?}", mount.kind).to_lowercase();
    let only_for = |key: &str, allowed: &[MountType]| {
        if allowed.contains(&mount.kind) {
            Ok(())
        } else {
            Err(format!("{key} is not allowed for {kind_name} mounts"))
        }
    };
    let file_info = [MountType::Cache, MountType::Secret, MountType::Ssh];
    let mut readonly: Option<bool> = None;
    let mut sharing: Option<Sharing> = None;
    for field in &fields {
        let (key, value) = split(field);
        let Some(value) = value else {
            match key.as_str() {
                "ro" | "readonly" => readonly = Some(true),
                "rw" | "readwrite" => readonly = Some(false),
                "required" => {
                    only_for("required", &[MountType::Secret, MountType::Ssh])?;
                    mount.required = true;
                }
                _ => return Err(format!("field {field:?} needs a value (key=value)")),
            }
            continue;
        };
        let number = |radix: u32| u32::from_str_radix(&value, radix).map_err(|_| format!("invalid {key} {value:?}"));
        match key.as_str() {
            "type" => {}
            "target" | "dst" | "destination" => mount.target = Some(value),
            "source" | "src" => mount.source = Some(value),
            "from" => mount.from = Some(value),
            "id" => mount.id = Some(value),
            "env" => {
                only_for("env", &[MountType::Secret])?;
                mount.env = Some(value);
            }
            "ro" | "readonly" => readonly = Some(go_bool(&value).ok_or_else(|| format!("invalid {key} {value:?}"))?),
            "rw" | "readwrite" => readonly = Some(!go_bool(&value).ok_or_else(|| format!("invalid {key} {value:?}"))?),
            "required" => {
                only_for("required", &[MountType::Secret, MountType::Ssh])?;
                mount.required = go_bool(&value).ok_or_else(|| format!("invalid {key} {value:?}"))?;
            }
            "sharing" => {
                sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => return Err(format!("unsupported sharing {value:?}: use shared, private or locked")),
                });
            }
            "mode" => {
                only_for("mode", &file_info)?;
                mount.mode = Some(number(8)?);
            }
            "uid" => {
                only_for("uid", &file_info)?;
                mount.uid = Some(number(10)?);
            }
            "gid" => {
                only_for("gid", &file_info)?;
                mount.gid = Some(number(10)?);
            }
            "size" => {
                only_for("size", &[MountType::Tmpfs])?;
                mount.size = Some(ram_bytes(&value).ok_or_else(|| format!("invalid size {value:?}"))?);
            }
            _ => return Err(format!("unknown mount option {key:?}")),
        }
    }
    if let Some(sharing) = sharing {
        only_for("sharing", &[MountType::Cache])?;
        mount.sharing = sharing;
    }
    mount.readonly = readonly.unwrap_or(!matches!(mount.kind, MountType::Cache | MountType::Tmpfs));
    match mount.kind {
        MountType::Secret => {
            if mount.from.is_some() {
                return Err("a secret mount can not have from".to_string());
            }
            if let Some(source) = mount.source.take() {
                if mount.id.is_some() {
                    return Err("a secret mount can not have both source and id".to_string());
                }
                mount.id = Some(source);
            }
            if mount.id.is_none() {
                mount.id = mount.target.as_deref().and_then(|t| t.rsplit('/').find(|s| !s.is_empty())).map(str::to_string);
            }
            let Some(id) = mount.id.clone() else {
                return Err("a secret mount needs an id, a source or a target".to_string());
            };
            if mount.target.is_none() && mount.env.is_none() {
                mount.target = Some(format!("/run/secrets/{id}"));
            }
        }
        MountType::Bind | MountType::Cache | MountType::Tmpfs if mount.target.is_none() => {
            return Err(format!("a {kind_name} mount needs a target"));
        }
        _ => {}
    }
    Ok(mount)
}

/// One CSV record: fields split on commas, a field may be double-quoted with
/// `""` for a quote inside.
fn csv_fields(raw: &str) -> Result<Vec<String>, String> {
    if raw.is_empty() {
        return Err("empty mount".to_string());
    }
    let mut fields = Vec::new();
    let mut chars = raw.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("a quoted field is not closed".to_string()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err("unexpected text after a quoted field".to_string()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("a quote in the middle of a field".to_string()),
                    Some('\n' | '\r') => return Err("a line break in a mount".to_string()),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// Go's `strconv.ParseBool`.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// A size such as `512`, `64m`, `1.5g`, `10MiB` (units of 1024).
fn ram_bytes(s: &str) -> Option<u64> {
    let number_len = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = s.split_at(number_len);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') || number.matches('.').count() > 1 {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let (power, rest) = match unit.chars().next() {
        Some(c @ ('k' | 'm' | 'g' | 't' | 'p')) => (" kmgtp".find(c)? as i32, &unit[1..]),
        _ => (0, unit.as_str()),
    };
    let rest = rest.strip_prefix('i').unwrap_or(rest);
    if !(rest.is_empty() || rest == "b") {
        return None;
    }
    let bytes = number * 1024f64.powi(power);
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Parses a Go duration (`90s`, `1m30s`, `1.5h`, `500ms`, `0`), as
/// HEALTHCHECK's options are written. Negative durations are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {s:?} (e.g. 30s, 1m30s, 500ms)");
    let rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    let mut rest = rest;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        total += number.parse::<f64>().map_err(|_| invalid())? * nanos_per_unit;
        rest = tail;
    }
    if !total.is_finite() || total >= u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Dockerfile {
        parse(text).unwrap_or_else(|e| panic!("{text:?} does not parse: {e}"))
    }

    /// The instructions of `text` put after a `FROM scratch` line.
    fn instructions(text: &str) -> Vec<Instruction> {
        parse_ok(&format!("FROM scratch\n{text}")).stages.remove(0).instructions
    }

    fn one(text: &str) -> Instruction {
        let mut all = instructions(text);
        assert_eq!(all.len(), 1, "{text:?} gave {all:#?}");
        all.remove(0)
    }

    fn kind(text: &str) -> Kind {
        one(text).kind
    }

    fn shell(s: &str) -> Command {
        Command::Shell(s.to_string())
    }

    fn exec(argv: &[&str]) -> Command {
        Command::Exec(argv.iter().map(|s| s.to_string()).collect())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn run(text: &str) -> Run {
        match kind(text) {
            Kind::Run(r) => r,
            other => panic!("{text:?} is {other:?}"),
        }
    }

    fn copy(text: &str) -> Copy {
        match kind(text) {
            Kind::Copy(c) | Kind::Add(c) => c,
            other => panic!("{text:?} is {other:?}"),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn errors_with_lines() {
        let cases: &[(&str, usize, &str)] = &[
            ("FROM a\nFOO bar\n", 2, "Dockerfile:2: unknown instruction: FOO"),
            ("FROM a\nRUN x \\\n  y\n\n# c\nBAD\n", 6, "unknown instruction: BAD"),
            ("FROM a\nRUNN x\n", 2, "unknown instruction: RUNN (did you mean RUN?)"),
            ("FROM a\nRUN <<EOF\nx\nEOF\nNOPE\n", 5, "unknown instruction: NOPE"),
            ("RUN x\nFROM a\n", 1, "Dockerfile:1: RUN: only ARG may come before the first FROM"),
            ("ARG V\nENV A=1\nFROM a\n", 2, "ENV: only ARG may come before"),
            ("FROM a AS 1abc\n", 1, "FROM: invalid stage name \"1abc\""),
            ("FROM a AS b/c\n", 1, "invalid stage name"),
            ("FROM a AS -b\n", 1, "invalid stage name"),
            ("FROM a b\n", 1, "FROM: expected an image"),
            ("FROM a AS\n", 1, "FROM: expected an image"),
            ("FROM\n", 1, "FROM: expected an image"),
            ("FROM a AS x\nFROM b AS X\n", 2, "stage name \"x\" is already used by the FROM on line 1"),
            ("FROM --bogus=1 a\n", 1, "FROM: unknown flag: --bogus"),
            ("FROM a\nCOPY --bogus x y\n", 2, "COPY: unknown flag: --bogus"),
            ("FROM a\nCOPY --from x y\n", 2, "flag --from needs a value"),
            ("FROM a\nCOPY --link=maybe x y\n", 2, "flag --link takes true or false"),
            ("FROM a\nCOPY --link= x y\n", 2, "flag --link takes true or false"),
            ("FROM a\nCOPY --from=a --from=b x y\n", 2, "flag --from is given more than once"),
            ("FROM a\nADD --from=x a b\n", 2, "ADD: unknown flag: --from"),
            ("FROM a\nCOPY --checksum=x a b\n", 2, "unknown flag: --checksum"),
            ("FROM a\nENV --x=1 A=b\n", 2, "ENV: unknown flag: --x"),
            ("FROM a\nRUN --network=bogus x\n", 2, "unsupported network mode \"bogus\""),
            ("FROM a\nRUN --security=root x\n", 2, "unsupported security mode"),
            ("FROM a\nRUN --mount=type=nope,target=/x true\n", 2, "RUN: --mount=type=nope,target=/x: unsupported mount type"),
            ("FROM a\nRUN --mount=type=secret true\n", 2, "needs an id"),
            ("FROM a\nRUN\n", 2, "RUN: a command is required"),
            ("FROM a\nRUN []\n", 2, "RUN: a command is required"),
            ("FROM a\nRUN --mount=type=cache,target=/c\n", 2, "RUN: a command is required"),
            ("FROM a\nCMD\n", 2, "CMD: a command is required (use CMD [] for none)"),
            ("FROM a\nCMD [1, 2]\n", 2, "strings only"),
            ("FROM a\nENTRYPOINT [\"a\", null]\n", 2, "strings only"),
            ("FROM a\nSHELL /bin/sh -c\n", 2, "SHELL: a JSON array is required"),
            ("FROM a\nSHELL []\n", 2, "SHELL: the array must name"),
            ("FROM a\nCOPY onlyone\n", 2, "COPY: at least one source and a destination are required"),
            ("FROM a\nCOPY [\"onlyone\"]\n", 2, "COPY: at least one source"),
            ("FROM a\nADD\n", 2, "ADD: at least one source"),
            ("FROM a\nCOPY a <<EOF\nx\nEOF\n", 2, "COPY: the destination can not be a heredoc"),
            ("FROM a\nRUN <<EOF\necho hi\n", 2, "Dockerfile:2: RUN: unterminated heredoc: no line \"EOF\""),
            ("FROM a\nRUN <<A <<B\na\nA\nb\n", 2, "unterminated heredoc: no line \"B\""),
            ("FROM a\nRUN <<EOF\nx\nEOF \n", 2, "unterminated heredoc"),
            ("FROM a\nRUN <<EOF\nx\n\tEOF\n", 2, "unterminated heredoc"),
            ("FROM a\nCOPY <<EOF /x\n", 2, "COPY: unterminated heredoc"),
            ("FROM a\nONBUILD ONBUILD RUN x\n", 2, "ONBUILD ONBUILD is not allowed"),
            ("FROM a\nONBUILD FROM b\n", 2, "FROM is not allowed as an ONBUILD trigger"),
            ("FROM a\nonbuild maintainer me\n", 2, "MAINTAINER is not allowed as an ONBUILD trigger"),
            ("FROM a\nONBUILD\n", 2, "ONBUILD: an instruction is required"),
            ("FROM a\nONBUILD FOO x\n", 2, "unknown instruction: FOO"),
            ("FROM a\nONBUILD COPY onlyone\n", 2, "COPY: at least one source"),
            ("FROM a\nENV\n", 2, "ENV: at least one key=value pair is required"),
            ("FROM a\nENV A\n", 2, "ENV: A has no value: write A=value (or ENV A value)"),
            ("FROM a\nENV A=1 B\n", 2, "\"B\" has no '='"),
            ("FROM a\nENV =x\n", 2, "ENV: a name can not be empty"),
            ("FROM a\nLABEL\n", 2, "LABEL: at least one key=value pair"),
            ("FROM a\nARG\n", 2, "ARG: a name is required"),
            ("FROM a\nARG =x\n", 2, "ARG: a name can not be empty"),
            ("FROM a\nEXPOSE\n", 2, "EXPOSE: at least one port is required"),
            ("FROM a\nVOLUME [\" \"]\n", 2, "VOLUME: a path can not be empty"),
            ("FROM a\nVOLUME\n", 2, "VOLUME: at least one path is required"),
            ("FROM a\nUSER\n", 2, "USER: an argument is required"),
            ("FROM a\nWORKDIR\n", 2, "WORKDIR: an argument is required"),
            ("FROM a\nSTOPSIGNAL\n", 2, "STOPSIGNAL: an argument is required"),
            ("FROM a\nHEALTHCHECK\n", 2, "HEALTHCHECK: NONE or CMD <command> is required"),
            ("FROM a\nHEALTHCHECK NONE x\n", 2, "HEALTHCHECK NONE takes no arguments"),
            ("FROM a\nHEALTHCHECK CMD\n", 2, "HEALTHCHECK CMD needs a command"),
            ("FROM a\nHEALTHCHECK CMD []\n", 2, "HEALTHCHECK CMD needs a command"),
            ("FROM a\nHEALTHCHECK BOGUS x\n", 2, "unknown HEALTHCHECK type \"BOGUS\""),
            ("FROM a\nHEALTHCHECK --interval=5 CMD x\n", 2, "--interval: invalid duration \"5\""),
            ("FROM a\nHEALTHCHECK --timeout=1us CMD x\n", 2, "shorter than 1ms"),
            ("FROM a\nHEALTHCHECK --retries=0 CMD x\n", 2, "--retries must be"),
            ("FROM a\nHEALTHCHECK --bogus=1 CMD x\n", 2, "unknown flag: --bogus"),
            ("# escape=x\nFROM a\n", 1, "Dockerfile:1: invalid escape character \"x\""),
            ("# escape=`\n# escape=\\\nFROM a\n", 2, "the escape parser directive may only be given once"),
            ("# syntax=a\n#SYNTAX=b\nFROM a\n", 2, "the syntax parser directive may only be given once"),
            ("", 1, "the file has no instructions"),
            ("# just a comment\n\n   \n", 3, "the file has no instructions"),
            ("ARG A=1\n", 1, "no FROM instruction"),
        ];
        for (text, line, want) in cases {
            match parse(text) {
                Ok(d) => panic!("{text:?} parsed: {d:#?}"),
                Err(e) => {
                    let shown = e.to_string();
                    assert!(shown.contains(want), "{text:?}: {shown:?} lacks {want:?}");
                    assert_eq!(e.line, *line, "{text:?}: {shown}");
                }
            }
        }
    }

    #[test]
    fn error_display_and_file() {
        let e = parse("FROM a\nRUN <<EOF\n").unwrap_err();
        assert_eq!(e.instruction, Some("RUN"));
        assert_eq!(e.clone().with_file("app/Dockerfile.dev").to_string(), format!("app/Dockerfile.dev:2: RUN: {}", e.message));
        let e = parse("FROM a\nFOO\n").unwrap_err();
        assert_eq!(e.instruction, None);
        assert_eq!(e.to_string(), "Dockerfile:2: unknown instruction: FOO");
    }

    #[test]
    fn escape_directive_with_windows_paths() {
        let d = parse_ok("# escape=`\n\nFROM microsoft/nanoserver\nCOPY testfile.txt c:\\\nRUN dir c:\\\n");
        assert_eq!(d.escape, '`');
        let ins = &d.stages[0].instructions;
        assert_eq!(ins.len(), 2);
        match &ins[0].kind {
            Kind::Copy(c) => {
                assert_eq!(c.sources, strings(&["testfile.txt"]));
                assert_eq!(c.dest, "c:\\");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&ins[1].kind, Kind::Run(r) if r.command == shell("dir c:\\")));
        assert_eq!(ins[1].line, 5);
        // The same file without the directive: both backslashes continue.
        let d = parse_ok("FROM microsoft/nanoserver\nCOPY testfile.txt c:\\\\\nRUN dir c:\\\n");
        let ins = &d.stages[0].instructions;
        assert_eq!(ins.len(), 1);
        assert_eq!(ins[0].text, "COPY testfile.txt c:\\RUN dir c:");
        // Backtick continuation; backslashes are plain.
        let d = parse_ok("# escape=`\nFROM a\nRUN echo c:\\x `\n  c:\\y\n");
        assert_eq!(d.stages[0].instructions[0].kind, Kind::Run(Run { command: shell("echo c:\\x   c:\\y"), ..run("RUN x") }));
    }

    #[test]
    fn directives() {
        let escape_of = |text: &str| parse_ok(text).escape;
        // Whitespace variants and case-insensitive keys.
        assert_eq!(escape_of("#escape=`\nFROM a\n"), '`');
        assert_eq!(escape_of("# escape =`\nFROM a\n"), '`');
        assert_eq!(escape_of("#\t  EsCaPe = ` \nFROM a\n"), '`');
        assert_eq!(escape_of("  # escape=`\nFROM a\n"), '`');
        assert_eq!(escape_of("\u{feff}# escape=`\nFROM a\n"), '`');
        // Other known directives are accepted.
        assert_eq!(escape_of("# syntax=docker/dockerfile:1\n# check=skip=all;error=true\n# escape=`\nFROM a\n"), '`');
        // After a comment, a blank line, an unknown directive or an instruction: a comment.
        assert_eq!(escape_of("# About my dockerfile\n# escape=`\nFROM a\n"), '\\');
        assert_eq!(escape_of("\n# escape=`\nFROM a\n"), '\\');
        assert_eq!(escape_of("# unknowndirective=value\n# escape=`\nFROM a\n"), '\\');
        assert_eq!(escape_of("FROM a\n# escape=`\n"), '\\');
        // A directive cannot continue on the next line: that line is an instruction.
        assert!(parse("# esc \\\nape=`\nFROM a\n").unwrap_err().message.contains("unknown instruction: APE=`"));
        // So a later "directive" changes nothing: the backslash still continues.
        let d = parse_ok("FROM a\n# escape=`\nRUN a \\\n b\n");
        assert_eq!(d.stages[0].instructions[0].text, "RUN a  b");
        // A repeated directive after the directives ended is just a comment.
        assert_eq!(escape_of("# escape=`\n\n# escape=\\\nFROM a\n"), '`');
    }

    #[test]
    fn comments_whitespace_and_continuations() {
        let texts = |text: &str| instructions(text).into_iter().map(|i| (i.line, i.text)).collect::<Vec<_>>();
        let t = |line: usize, text: &str| (line, text.to_string());
        // Comments and blank lines inside a continuation are skipped (the
        // reference's example); leading whitespace of continued lines is kept.
        assert_eq!(texts("RUN echo hello \\\n# comment\nworld\n"), vec![t(2, "RUN echo hello world")]);
        assert_eq!(texts("RUN a \\\n\n   \n  b\n"), vec![t(2, "RUN a   b")]);
        assert_eq!(texts("RUN a \\\n    # indented comment \\\n  b\n"), vec![t(2, "RUN a   b")]);
        // Trailing spaces and tabs after the escape.
        assert_eq!(texts("RUN a \\  \t\nb\n"), vec![t(2, "RUN a b")]);
        // Leading whitespace before instructions and comments; any case.
        assert_eq!(texts("    run echo hi\n\t  # comment\n  Cmd x\n"), vec![t(2, "run echo hi"), t(4, "Cmd x")]);
        // `#` not at the start is an argument.
        assert_eq!(kind("RUN echo 'some # of things'\n"), Kind::Run(run("RUN echo 'some # of things'")));
        // A comment ending in the escape does not continue.
        assert_eq!(texts("# comment \\\nRUN a\n"), vec![t(3, "RUN a")]);
        // Line numbers after continuations.
        assert_eq!(texts("RUN a \\\nb \\\nc\nUSER x\n"), vec![t(2, "RUN a b c"), t(5, "USER x")]);
        // A continuation at the end of the file is fine.
        assert_eq!(texts("RUN echo \\"), vec![t(2, "RUN echo")]);
        assert_eq!(texts("RUN echo \\\n\n# end\n"), vec![t(2, "RUN echo")]);
        // CRLF line endings.
        assert_eq!(texts("RUN a \\\r\n b\r\nUSER x\r\n"), vec![t(2, "RUN a  b"), t(4, "USER x")]);
        // A line that is only an escape joins what follows.
        assert_eq!(texts("\\\nUSER x\n"), vec![t(2, "USER x")]);
    }

    #[test]
    fn exec_and_shell_forms() {
        let cases: &[(&str, Command)] = &[
            (r#"CMD ["echo", "a \"quoted\" word"]"#, exec(&["echo", "a \"quoted\" word"])),
            (r#"CMD ["back\\slash", "sl\/ash", "t\tb\nn\r\b\f"]"#, exec(&["back\\slash", "sl/ash", "t\tb\nn\r\u{8}\u{c}"])),
            (r#"CMD ["\u00e9\ud83d\ude00", "\ud800x"]"#, exec(&["é😀", "\u{fffd}x"])),
            (r#"CMD  [ "a" , "b" ]  "#, exec(&["a", "b"])),
            ("CMD []", exec(&[])),
            ("ENTRYPOINT []", exec(&[])),
            // Invalid JSON falls back to the shell form.
            ("CMD [echo, hi]", shell("[echo, hi]")),
            (r#"CMD ["a", ]"#, shell(r#"["a", ]"#)),
            (r#"CMD ["a"] extra"#, shell(r#"["a"] extra"#)),
            ("CMD ['single']", shell("['single']")),
            (r#"CMD ["unterminated]"#, shell(r#"["unterminated]"#)),
            (r#"CMD ["bad \x escape"]"#, shell(r#"["bad \x escape"]"#)),
            ("CMD echo $HOME && ls", shell("echo $HOME && ls")),
            (r#"ENTRYPOINT ["/bin/app", "--flag"]"#, exec(&["/bin/app", "--flag"])),
        ];
        for (text, want) in cases {
            let got = match kind(text) {
                Kind::Cmd(c) | Kind::Entrypoint(c) => c,
                other => panic!("{text:?} is {other:?}"),
            };
            assert_eq!(&got, want, "{text:?}");
        }
        assert_eq!(run(r#"RUN --network=none ["a", "b"]"#).command, exec(&["a", "b"]));
        assert_eq!(run(r#"RUN ["sh", "-c", "echo <<EOF"]"#).heredocs, vec![]);
        assert_eq!(kind(r#"SHELL ["powershell", "-command"]"#), Kind::Shell(strings(&["powershell", "-command"])));
        // Nested values are valid JSON but not strings.
        assert!(parse("FROM a\nCMD [\"a\", [\"b\"], {\"c\": 1.5e3}]\n").unwrap_err().message.contains("strings only"));
        // Deep nesting is refused as JSON, so it is a shell command.
        let deep = format!("CMD {}", "[".repeat(5000));
        assert_eq!(kind(&deep), Kind::Cmd(shell(&deep[4..])));
    }

    #[test]
    fn env_and_label() {
        let env = |text: &str| match kind(text) {
            Kind::Env(p) | Kind::Label(p) => p,
            other => panic!("{text:?} is {other:?}"),
        };
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                r#"ENV A=1 B="two words" C=three\ words D='$x'"#,
                &[("A", "1"), ("B", "\"two words\""), ("C", "three\\ words"), ("D", "'$x'")],
            ),
            ("ENV A hello \"big\" world", &[("A", "hello \"big\" world")]),
            ("ENV A\t  spaced   value  ", &[("A", "spaced   value")]),
            ("ENV A=", &[("A", "")]),
            ("ENV A=a=b", &[("A", "a=b")]),
            ("ENV A=\"x\"\"y\" B=\"a \\\" b\"", &[("A", "\"x\"\"y\""), ("B", "\"a \\\" b\"")]),
            ("ENV A=1 \\\n    B=2", &[("A", "1"), ("B", "2")]),
            ("ENV A=\"open", &[("A", "\"open")]),
            (
                r#"LABEL "com.example.vendor"="ACME Incorporated" version=1.0"#,
                &[("\"com.example.vendor\"", "\"ACME Incorporated\""), ("version", "1.0")],
            ),
            ("LABEL description=\"multi \\\nline\"", &[("description", "\"multi line\"")]),
            ("LABEL legacy value here", &[("legacy", "value here")]),
        ];
        for (text, want) in cases {
            assert_eq!(env(text), pairs(want), "{text:?}");
        }
        // What the builder makes of the raw values.
        let expanded: Vec<String> =
            env(r#"ENV A=1 B="two words" C=three\ words D='$x'"#).iter().map(|(_, v)| expand_word(v, '\\', &no_env).unwrap()).collect();
        assert_eq!(expanded, strings(&["1", "two words", "three words", "$x"]));
    }

    #[test]
    fn args_and_stages() {
        let d = parse_ok(
            "ARG BASE=alpine\nARG TAG\nFROM --platform=$BUILDPLATFORM ${BASE}:${TAG:-latest} AS Builder\nARG A B=2 C=\"x y\"\nFROM builder as final\nFROM scratch\n",
        );
        assert_eq!(
            d.meta_args,
            vec![ArgDef { name: "BASE".into(), default: Some("alpine".into()) }, ArgDef { name: "TAG".into(), default: None }]
        );
        assert_eq!(d.stages.len(), 3);
        let s = &d.stages[0];
        assert_eq!(
            (s.name.as_deref(), s.base.as_str(), s.platform.as_deref(), s.line),
            (Some("builder"), "${BASE}:${TAG:-latest}", Some("$BUILDPLATFORM"), 3)
        );
        assert_eq!(
            s.instructions[0].kind,
            Kind::Arg(vec![
                ArgDef { name: "A".into(), default: None },
                ArgDef { name: "B".into(), default: Some("2".into()) },
                ArgDef { name: "C".into(), default: Some("\"x y\"".into()) },
            ])
        );
        assert_eq!((d.stages[1].name.as_deref(), d.stages[1].base.as_str(), d.stages[1].line), (Some("final"), "builder", 5));
        assert_eq!(d.stages[2].name, None);
        assert_eq!(parse_ok("FROM a AS my-stage_1.x\n").stages[0].name.as_deref(), Some("my-stage_1.x"));
    }

    #[test]
    fn simple_instructions() {
        assert_eq!(kind("EXPOSE 80/tcp  443 $P"), Kind::Expose(strings(&["80/tcp", "443", "$P"])));
        assert_eq!(kind(r#"VOLUME ["/data", " /logs "]"#), Kind::Volume(strings(&["/data", "/logs"])));
        assert_eq!(kind("VOLUME /a /b"), Kind::Volume(strings(&["/a", "/b"])));
        assert_eq!(kind("USER app:app"), Kind::User("app:app".into()));
        assert_eq!(kind("WORKDIR /path with/spaces"), Kind::Workdir("/path with/spaces".into()));
        assert_eq!(kind("STOPSIGNAL SIGKILL"), Kind::StopSignal("SIGKILL".into()));
        assert_eq!(kind("MAINTAINER Jane <j@x.org>"), Kind::Maintainer("Jane <j@x.org>".into()));
        assert_eq!(kind("HEALTHCHECK NONE"), Kind::Healthcheck(None));
        assert_eq!(
            kind(
                "HEALTHCHECK --interval=5m --timeout=3s --start-period=1m30s --start-interval=0 --retries=3 CMD curl -f http://localhost/"
            ),
            Kind::Healthcheck(Some(Healthcheck {
                command: shell("curl -f http://localhost/"),
                interval: Some("5m".into()),
                timeout: Some("3s".into()),
                start_period: Some("1m30s".into()),
                start_interval: Some("0".into()),
                retries: Some("3".into()),
            }))
        );
        match kind(r#"healthcheck cmd ["/bin/check", "--fast"]"#) {
            Kind::Healthcheck(Some(h)) => assert_eq!(h.command, exec(&["/bin/check", "--fast"])),
            other => panic!("{other:?}"),
        }
        let i = one("RUN apt-get update && \\\n    apt-get install -y x");
        assert_eq!((i.keyword, i.text.as_str()), ("RUN", "RUN apt-get update &&     apt-get install -y x"));
    }

    #[test]
    fn run_flags() {
        let r = run("RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=tok --network=host --security=insecure make");
        assert_eq!(r.command, shell("make"));
        assert_eq!(r.mounts, strings(&["type=cache,target=/root/.cache", "type=secret,id=tok"]));
        assert_eq!((r.network.as_deref(), r.security.as_deref()), (Some("host"), Some("insecure")));
        // Quotes in flag values are removed; `--` ends the flags.
        let r = run("RUN --mount=\"type=bind,target=/a b\" -- --not-a-flag");
        assert_eq!(r.mounts, strings(&["type=bind,target=/a b"]));
        assert_eq!(r.command, shell("--not-a-flag"));
        // Mounts with variables are left for later.
        assert_eq!(run("RUN --mount=type=$T,target=/x true").mounts, strings(&["type=$T,target=/x"]));
    }

    #[test]
    fn copy_and_add() {
        let c = copy("COPY --from=build --chown=1000:1000 --chmod=755 --link --parents --exclude=*.md --exclude=*.txt a b /dst/");
        assert_eq!(c.sources, strings(&["a", "b"]));
        assert_eq!(c.dest, "/dst/");
        assert_eq!((c.from.as_deref(), c.chown.as_deref(), c.chmod.as_deref()), (Some("build"), Some("1000:1000"), Some("755")));
        assert!(c.link && c.parents && !c.keep_git_dir);
        assert_eq!(c.excludes, strings(&["*.md", "*.txt"]));
        let c = copy("COPY --link=false --chown=\"a b\" x y");
        assert!(!c.link);
        assert_eq!(c.chown.as_deref(), Some("a b"));
        let c = copy("ADD --checksum=sha256:abc --keep-git-dir=TRUE https://example.com/x.git /y");
        assert_eq!((c.checksum.as_deref(), c.keep_git_dir), (Some("sha256:abc"), true));
        assert!(matches!(kind("ADD a b"), Kind::Add(_)));
        let c = copy(r#"COPY ["a b", "c", "/d e/"]"#);
        assert_eq!((c.sources, c.dest), (strings(&["a b", "c"]), "/d e/".to_string()));
        // The shell form splits on whitespace only: quotes stay (as in Docker).
        assert_eq!(copy("COPY \"a b\" /d").sources, strings(&["\"a", "b\""]));
        assert_eq!(copy("COPY -- --weird /d").sources, strings(&["--weird"]));
    }

    #[test]
    fn heredocs() {
        let h = |name: &str, content: &str, expand: bool, chomp_tabs: bool| Heredoc {
            name: name.into(),
            content: content.into(),
            expand,
            chomp_tabs,
        };
        // A heredoc as the whole script.
        let r = run("RUN <<EOF\napt-get update\napt-get install -y vim\nEOF\n");
        assert_eq!(r.command, shell("<<EOF"));
        assert_eq!(r.heredocs, vec![h("EOF", "apt-get update\napt-get install -y vim\n", true, false)]);
        assert_eq!(r.script_heredoc(), Some(&r.heredocs[0]));
        // Several heredocs fed to a command.
        let r = run("RUN <<FILE1 cat > file1 && <<FILE2 cat > file2\nI am\nfirst\nFILE1\nI am\nsecond\nFILE2\n");
        assert_eq!(r.heredocs, vec![h("FILE1", "I am\nfirst\n", true, false), h("FILE2", "I am\nsecond\n", true, false)]);
        assert_eq!(r.script_heredoc(), None);
        assert_eq!(r.shell_script().unwrap(), "<<FILE1 cat > file1 && <<FILE2 cat > file2\nI am\nfirst\nFILE1\nI am\nsecond\nFILE2");
        // `<<-` strips leading tabs, also before the delimiter.
        let r = run("RUN <<-EOF\n\techo a\n\t\techo b\n\tEOF\n");
        assert_eq!(r.heredocs, vec![h("EOF", "\techo a\n\t\techo b\n", true, true)]);
        assert_eq!(r.heredocs[0].body(), "echo a\necho b\n");
        // Quoting the delimiter turns expansion off.
        for text in ["RUN <<\"EOF\"\n$x\nEOF\n", "RUN <<'EOF'\n$x\nEOF\n", "RUN <<E\"O\"F\n$x\nEOF\n", "RUN <<-'EOF'\n$x\nEOF\n"] {
            let r = run(text);
            assert_eq!((r.heredocs[0].name.as_str(), r.heredocs[0].expand), ("EOF", false), "{text:?}");
        }
        // A body is verbatim: comments, escapes, blank lines, instructions.
        let r = run("RUN python3 <<EOF\n# not a comment\n\nprint('a \\\nFROM x\nEOF\n");
        assert_eq!(r.heredocs[0].content, "# not a comment\n\nprint('a \\\nFROM x\n");
        // COPY heredocs are files named after the delimiter.
        let c = copy("COPY <<EOF /etc/config\nkey=value\nEOF\n");
        assert_eq!((c.sources.len(), c.dest.as_str()), (0, "/etc/config"));
        assert_eq!(c.heredocs, vec![h("EOF", "key=value\n", true, false)]);
        let c = copy("COPY a.txt <<robots.txt <<humans.txt /usr/share/nginx/html/\nUser-agent: *\nrobots.txt\nhi\nhumans.txt\n");
        assert_eq!(c.sources, strings(&["a.txt"]));
        assert_eq!(c.heredocs.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["robots.txt", "humans.txt"]);
        assert!(matches!(kind("ADD <<EOF /x\nhi\nEOF\n"), Kind::Add(Copy { ref heredocs, .. }) if heredocs.len() == 1));
        // Not heredocs: quoted, here-strings, exec form, other instructions.
        for text in ["RUN echo \"<<EOF\"", "RUN cat <<<here", "RUN echo '<<EOF", "RUN echo <<\"\"", "CMD cat <<EOF", "ENV A=<<EOF"] {
            let all = instructions(&format!("{text}\nUSER x\n"));
            assert_eq!(all.len(), 2, "{text:?}");
        }
        // A file descriptor before `<<` is allowed.
        assert_eq!(run("RUN 3<<EOF cat /proc/self/fd/3\nx\nEOF").heredocs[0].name, "EOF");
        // Line numbers after heredoc bodies.
        let lines: Vec<usize> =
            instructions("RUN <<EOF\nx\nEOF\nUSER y\nCOPY <<A <<B /\na\nA\nb\nB\nWORKDIR /\n").iter().map(|i| i.line).collect();
        assert_eq!(lines, [2, 5, 6, 11]);
        // A heredoc named on a continued line.
        let r = run("RUN cat \\\n  <<EOF\nbody\nEOF\n");
        assert_eq!((r.command, r.heredocs.len()), (shell("cat   <<EOF"), 1));
        // CRLF bodies are kept verbatim; the delimiter line matches without CR.
        assert_eq!(run("RUN <<EOF\r\nx\r\nEOF\r\n").heredocs[0].content, "x\r\n");
    }

    #[test]
    fn onbuild() {
        let i = one("ONBUILD RUN echo hi");
        assert_eq!(i.keyword, "ONBUILD");
        assert_eq!(i.text, "ONBUILD RUN echo hi");
        let Kind::Onbuild(inner) = &i.kind else { panic!("{i:?}") };
        assert_eq!((inner.keyword, inner.text.as_str(), inner.line), ("RUN", "RUN echo hi", 2));
        assert_eq!(i.onbuild_trigger().as_deref(), Some("RUN echo hi"));
        assert_eq!(one("RUN x").onbuild_trigger(), None);
        let i = one("onbuild   copy --chown=1:1 . /app");
        let Kind::Onbuild(inner) = &i.kind else { panic!("{i:?}") };
        assert!(matches!(&inner.kind, Kind::Copy(c) if c.chown.as_deref() == Some("1:1")));
        // A heredoc in a trigger is stored with its body and parses back.
        let i = one("ONBUILD RUN <<EOF\necho hi\nEOF\n");
        let trigger = i.onbuild_trigger().unwrap();
        assert_eq!(trigger, "RUN <<EOF\necho hi\nEOF");
        let Kind::Onbuild(inner) = &i.kind else { panic!("{i:?}") };
        let reparsed = parse_instruction(&trigger, '\\').unwrap();
        assert_eq!((&reparsed.text, &reparsed.kind), (&inner.text, &inner.kind));
    }

    #[test]
    fn single_instructions() {
        let i = parse_instruction("RUN echo hi", '\\').unwrap();
        assert_eq!((i.line, i.keyword, i.kind), (1, "RUN", Kind::Run(run("RUN echo hi"))));
        let i = parse_instruction("RUN a `\n b", '`').unwrap();
        assert_eq!(i.text, "RUN a  b");
        assert!(parse_instruction("ENV A=1", '\\').is_ok());
        let err = |text: &str| parse_instruction(text, '\\').unwrap_err().to_string();
        assert!(err("FROM x").contains("FROM is not allowed here"));
        assert!(err("").contains("no instruction"));
        assert!(err("RUN a\nRUN b").contains("Dockerfile:2: more than one instruction"));
        assert!(err("BOGUS").contains("unknown instruction: BOGUS"));
    }

    #[test]
    fn mounts() {
        let m = |raw: &str| parse_mount(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        let c = m("type=cache,target=/root/.cache");
        assert_eq!((c.kind, c.readonly, c.target.as_deref(), c.sharing), (MountType::Cache, false, Some("/root/.cache"), Sharing::Shared));
        let b = m("target=/src");
        assert_eq!((b.kind, b.readonly), (MountType::Bind, true));
        let b = m("type=bind,source=.,from=builder,dst=/src,rw");
        assert_eq!((b.source.as_deref(), b.from.as_deref(), b.readonly), (Some("."), Some("builder"), false));
        assert!(!m("ro=false,destination=/x").readonly);
        assert!(m("type=cache,target=/x,readonly").readonly);
        assert!(!m("type=bind,target=/x,rw=true").readonly);
        let s = m("type=secret,id=aws");
        assert_eq!(
            (s.kind, s.readonly, s.target.as_deref(), s.id.as_deref()),
            (MountType::Secret, true, Some("/run/secrets/aws"), Some("aws"))
        );
        let s = m("type=secret,target=/root/.aws/credentials");
        assert_eq!(s.id.as_deref(), Some("credentials"));
        let s = m("type=secret,src=tok,env=TOKEN");
        assert_eq!((s.id.as_deref(), s.target, s.env.as_deref()), (Some("tok"), None, Some("TOKEN")));
        assert!(m("required,type=secret,id=x").required);
        assert!(!m("type=ssh,required=false").required);
        assert_eq!(m("type=ssh,id=gh").kind, MountType::Ssh);
        assert_eq!(m("type=tmpfs,target=/t,size=64m").size, Some(64 << 20));
        assert_eq!(m("type=tmpfs,target=/t,size=1.5 GiB").size, Some(3 << 29));
        assert_eq!(m("type=tmpfs,target=/t,size=512").size, Some(512));
        let c = m("TYPE=Cache,target=/c,sharing=locked,mode=0755,uid=1000,gid=1001,id=mycache");
        assert_eq!(
            (c.sharing, c.mode, c.uid, c.gid, c.id.as_deref()),
            (Sharing::Locked, Some(0o755), Some(1000), Some(1001), Some("mycache"))
        );
        assert_eq!(m(r#""type=bind","target=/a,b""#).target.as_deref(), Some("/a,b"));
        assert_eq!(m(r#""target=/a""b""#).target.as_deref(), Some("/a\"b"));
        let errors: &[(&str, &str)] = &[
            ("", "empty mount"),
            ("type=bind", "a bind mount needs a target"),
            ("type=cache", "a cache mount needs a target"),
            ("type=bind,target=/x,mode=0755", "mode is not allowed for bind mounts"),
            ("type=tmpfs,target=/x,uid=1", "uid is not allowed"),
            ("type=cache,target=/x,sharing=bogus", "unsupported sharing"),
            ("type=bind,target=/x,sharing=locked", "sharing is not allowed for bind mounts"),
            ("target=/x,bogus=1", "unknown mount option \"bogus\""),
            ("target=/x,nokey", "needs a value"),
            ("target=/x,,", "needs a value"),
            ("type=secret,id=a,from=b", "can not have from"),
            ("type=secret,id=a,source=b", "both source and id"),
            ("type=secret", "needs an id"),
            ("type=cache,target=/x,uid=abc", "invalid uid"),
            ("type=cache,target=/x,mode=9", "invalid mode"),
            ("target=/x,required", "required is not allowed for bind mounts"),
            ("type=secret,id=x,env=A,target=/x,required=maybe", "invalid required"),
            ("\"target=/x", "not closed"),
            ("tar\"get=/x", "quote in the middle"),
            (r#"target="/a""b""#, "quote in the middle"),
            ("\"target=/x\"y", "after a quoted field"),
            ("type=tmpfs,target=/t,size=lots", "invalid size"),
            ("type=bind,target=/t,size=1m", "size is not allowed"),
            ("target=/x,ro=maybe", "invalid ro"),
            ("type=ssh,env=X", "env is not allowed"),
        ];
        for (raw, want) in errors {
            match parse_mount(raw) {
                Ok(m) => panic!("{raw:?} parsed: {m:?}"),
                Err(e) => assert!(e.contains(want), "{raw:?}: {e:?} lacks {want:?}"),
            }
        }
    }

    #[test]
    fn durations() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("30s", 30_000_000_000),
            ("1m30s", 90_000_000_000),
            ("1.5h", 5_400_000_000_000),
            ("500ms", 500_000_000),
            ("2us", 2_000),
            ("3µs", 3_000),
            ("7ns", 7),
            ("+1s", 1_000_000_000),
            (".5s", 500_000_000),
        ];
        for (s, nanos) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_nanos(*nanos)), "{s:?}");
        }
        for s in ["", "5", "-1s", "1x", "s", "1..5s", "1e3s", "99999999999999999999h"] {
            assert!(parse_duration(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn json_arrays() {
        assert!(matches!(json_array("[]"), JsonArray::Strings(v) if v.is_empty()));
        assert!(matches!(json_array("[\"a\",\"b\"]"), JsonArray::Strings(v) if v == ["a", "b"]));
        for text in ["[1]", "[true, \"a\"]", "[null]", "[-0.5e+3]", "[{}]", "[[]]", "[{\"a\":[1,{\"b\":null}]}]"] {
            assert!(matches!(json_array(text), JsonArray::NotStrings), "{text:?}");
        }
        for text in
            ["", "[", "]", "[01]", "[1.]", "[.5]", "[\"a\",]", "[,]", "[\"\t\"]", "[\"a\"]]", "[tru]", "{}", "\"a\"", "[\"\\ud83d\\u12\"]"]
        {
            assert!(matches!(json_array(text), JsonArray::Invalid), "{text:?}");
        }
    }

    /// A tiny xorshift generator: reproducible noise with no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn garbage_never_panics() {
        const PIECES: &[&str] = &[
            "FROM a\n",
            "FROM ",
            " AS ",
            "RUN ",
            "COPY ",
            "ADD ",
            "ONBUILD ",
            "HEALTHCHECK ",
            "CMD ",
            "ENV ",
            "LABEL ",
            "ARG ",
            "SHELL ",
            "VOLUME ",
            "EXPOSE ",
            "USER ",
            "--mount=",
            "--from=",
            "--link",
            "type=secret,",
            "target=/x",
            "<<EOF",
            "<<-\"EOF\"",
            "EOF\n",
            "\tEOF\n",
            "\\\n",
            "`\n",
            "\\",
            "`",
            "\n",
            "\r\n",
            " ",
            "\t",
            "#",
            "# escape=`\n",
            "# escape=\\\n",
            "\"",
            "'",
            "[",
            "]",
            "[\"a\", \"b\"]",
            ",",
            "=",
            "$",
            "${",
            "}",
            ":-",
            "##",
            "%%",
            "//",
            "*",
            "?",
            "\\u",
            "\\ud83d",
            "é",
            "\u{feff}",
            "NONE",
            "CMD",
            "a",
            "=x",
            "--",
            "3<<",
            "<<<",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let env = |name: &str| name.len().is_multiple_of(2).then(|| name.repeat(2));
        for round in 0..4000 {
            let text = if round % 2 == 0 {
                let bytes: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                (0..rng.below(40)).map(|_| PIECES[rng.below(PIECES.len())]).collect()
            };
            let _ = parse(&text);
            let _ = parse(&format!("FROM a\n{text}"));
            let _ = parse_instruction(&text, '\\');
            let _ = parse_mount(&text);
            let _ = parse_duration(&text);
            let _ = json_array(&text);
            for escape in ['\\', '`'] {
                let _ = expand_word(&text, escape, &env);
                let _ = expand_words(&text, escape, &env);
            }
        }
    }
}

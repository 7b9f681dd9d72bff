//! Go text/template, the part docker's `--format` uses, over JSON values:
//! `{{.Field.Sub}}`, `{{.}}`, pipelines (`{{.Names | upper}}`), function
//! calls (`json`, `join`, `split`, `upper`, `lower`, `title`, `pad`,
//! `truncate`, `len`, `index`, `printf`, `print`, `println`, `eq`, `ne`,
//! `lt`, `le`, `gt`, `ge`, `and`, `or`, `not`), `if`/`else if`/`else`,
//! `range` (with `$i, $v :=`), `with`, variables (`$`, `$x := ...`), string,
//! number and boolean literals, parentheses, comments and `{{-`/`-}}` trims.
//! A value prints as Go prints it: a missing field as `<no value>`, a list
//! as `[a b]`, a map as `map[k:v]`.
//!
//! `table` before a template (docker's convention) makes aligned columns
//! with a header row: the template rendered once over the column names.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    /// A pipeline whose value is printed.
    Action(Pipeline),
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

/// `$a, $b := cmd | cmd` (or `$a = cmd`: `assign`).
#[derive(Debug, Clone, PartialEq)]
struct Pipeline {
    decl: Vec<String>,
    assign: bool,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    /// `.A.B` (empty path: `.`).
    Field(Vec<String>),
    /// `$x.A.B` (`$` alone: the top).
    Var(String, Vec<String>),
    Func(String),
    Lit(Value),
    Sub(Box<Pipeline>, Vec<String>),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
    /// Started with `table`: columns aligned, a header first.
    pub table: bool,
}

type Res<T> = Result<T, String>;

/// Bounds on what a template may ask for (berthctl reads templates from
/// users and scripts: none may exhaust memory or the stack).
const MAX_RANGE: u64 = 100_000;
const MAX_WIDTH: usize = 4096;
const MAX_DEPTH: usize = 64;

impl Template {
    pub fn parse(src: &str) -> Res<Template> {
        let (table, body) = match src.trim_start().strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => (true, rest.trim_start()),
            _ => (false, src),
        };
        // Docker's users write `\t` and `\n` in a shell's single quotes.
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let tokens = lex(&body)?;
        check_depth(&tokens)?;
        let mut pos = 0;
        let (nodes, end) = parse_list(&tokens, &mut pos)?;
        if let Some(e) = end {
            return Err(format!("unexpected {{{{{e}}}}}"));
        }
        Ok(Template { nodes, table })
    }

    /// The template applied to `data`.
    pub fn render(&self, data: &Value) -> Res<String> {
        let mut out = String::new();
        let mut scope = Scope { vars: vec![("$".into(), data.clone())] };
        exec(&self.nodes, data, &mut scope, &mut out)?;
        Ok(out)
    }
}

/// Print `rows` through `template`: one rendering per row (a newline added
/// when it has none), aligned under a header for a `table` template.
/// `header` names the columns of the fields (`ID` → `CONTAINER ID`); a field
/// it does not name gets its own name in capitals.
pub fn render_rows(t: &Template, rows: &[Value], header: &[(&str, &str)]) -> Res<String> {
    let mut lines = Vec::new();
    if t.table {
        lines.push(t.render(&header_value(t, header))?);
    }
    for r in rows {
        lines.push(t.render(r)?);
    }
    let mut out = String::new();
    for l in &lines {
        out.push_str(l);
        if !l.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(if t.table { align(&out) } else { out })
}

/// The object a table's header is rendered over: each field the template
/// names, mapped to its column name.
fn header_value(t: &Template, names: &[(&str, &str)]) -> Value {
    fn fields(nodes: &[Node], out: &mut Vec<String>) {
        for n in nodes {
            match n {
                Node::Action(p) => pipeline_fields(p, out),
                Node::If(branches, e) => {
                    for (p, b) in branches {
                        pipeline_fields(p, out);
                        fields(b, out);
                    }
                    fields(e, out);
                }
                Node::Range(p, b, e) | Node::With(p, b, e) => {
                    pipeline_fields(p, out);
                    fields(b, out);
                    fields(e, out);
                }
                Node::Text(_) => {}
            }
        }
    }
    fn pipeline_fields(p: &Pipeline, out: &mut Vec<String>) {
        for c in &p.cmds {
            for a in c {
                match a {
                    Arg::Field(path) if !path.is_empty() => out.push(path[0].clone()),
                    Arg::Sub(p, _) => pipeline_fields(p, out),
                    _ => {}
                }
            }
        }
    }
    let mut found = Vec::new();
    fields(&t.nodes, &mut found);
    let mut obj = serde_json::Map::new();
    for f in found {
        let name = names.iter().find(|(k, _)| *k == f).map(|(_, v)| v.to_string()).unwrap_or_else(|| column_name(&f));
        obj.insert(f, Value::String(name));
    }
    Value::Object(obj)
}

/// `CreatedAt` → `CREATED AT`.
fn column_name(field: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = field.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        if i > 0 && c.is_uppercase() && (chars[i - 1].is_lowercase() || next_lower) {
            out.push(' ');
        }
        out.extend(c.to_uppercase());
    }
    out
}

/// Columns separated by tabs made aligned (Go's tabwriter as docker sets
/// it: cells padded to the widest of their column plus three spaces).
pub fn align(text: &str) -> String {
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for r in &rows {
        for (i, cell) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            let w = cell.chars().count();
            if widths.len() <= i {
                widths.push(w);
            } else {
                widths[i] = widths[i].max(w);
            }
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < r.len() {
                let pad = widths[i] + 3 - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

// ---- lexing ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Text(String),
    /// The words of one action.
    Action(Vec<Word>),
}

#[derive(Debug, Clone, PartialEq)]
enum Word {
    Ident(String),
    /// `.A.B` or `.`.
    Field(Vec<String>),
    /// `$x.A`.
    Var(String, Vec<String>),
    Str(String),
    Num(f64),
    Pipe,
    Open,
    /// `)` and the fields after it (`(...).A`).
    Close(Vec<String>),
    Comma,
    Declare,
    /// `=`: a new value for a variable declared before.
    Assign,
}

fn lex(src: &str) -> Res<Vec<Tok>> {
    let mut toks = Vec::new();
    let mut rest = src;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_owned();
        let mut inner = &rest[start + 2..];
        if inner.starts_with("- ") || inner.starts_with("-\t") || inner.starts_with("-\n") {
            text = text.trim_end().to_owned();
            inner = &inner[1..];
        }
        let end = inner.find("}}").ok_or("unclosed action: a {{ without }}")?;
        let mut body = &inner[..end];
        let mut after = &inner[end + 2..];
        if body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-") {
            body = &body[..body.len() - 1];
            after = after.trim_start();
        }
        if !text.is_empty() {
            toks.push(Tok::Text(text));
        }
        let b = body.trim();
        if !(b.starts_with("/*") && b.ends_with("*/")) {
            toks.push(Tok::Action(words(body)?));
        }
        rest = after;
    }
    if !rest.is_empty() {
        toks.push(Tok::Text(rest.to_owned()));
    }
    Ok(toks)
}

fn fields_after(s: &[char], i: &mut usize) -> Vec<String> {
    let mut path = Vec::new();
    while *i < s.len() && s[*i] == '.' {
        *i += 1;
        let start = *i;
        while *i < s.len() && (s[*i].is_alphanumeric() || s[*i] == '_') {
            *i += 1;
        }
        if *i == start {
            break;
        }
        path.push(s[start..*i].iter().collect());
    }
    path
}

fn words(body: &str) -> Res<Vec<Word>> {
    let s: Vec<char> = body.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < s.len() {
        let c = s[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                out.push(Word::Pipe);
                i += 1;
            }
            '(' => {
                out.push(Word::Open);
                i += 1;
            }
            ')' => {
                i += 1;
                out.push(Word::Close(fields_after(&s, &mut i)));
            }
            ',' => {
                out.push(Word::Comma);
                i += 1;
            }
            ':' if s.get(i + 1) == Some(&'=') => {
                out.push(Word::Declare);
                i += 2;
            }
            '=' => {
                out.push(Word::Assign);
                i += 1;
            }
            '.' => {
                // `fields_after` takes the dot (and the names after it).
                let path = fields_after(&s, &mut i);
                out.push(Word::Field(path));
            }
            '$' => {
                i += 1;
                let start = i;
                while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
                    i += 1;
                }
                let name = format!("${}", s[start..i].iter().collect::<String>());
                out.push(Word::Var(name, fields_after(&s, &mut i)));
            }
            '"' => {
                i += 1;
                let mut v = String::new();
                loop {
                    match s.get(i) {
                        None => return Err("unterminated string".into()),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            match s.get(i) {
                                Some('n') => v.push('\n'),
                                Some('t') => v.push('\t'),
                                Some(&o) => v.push(o),
                                None => return Err("unterminated string".into()),
                            }
                        }
                        Some(&o) => v.push(o),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Word::Str(v));
            }
            '`' => {
                i += 1;
                let start = i;
                while i < s.len() && s[i] != '`' {
                    i += 1;
                }
                if i == s.len() {
                    return Err("unterminated raw string".into());
                }
                out.push(Word::Str(s[start..i].iter().collect()));
                i += 1;
            }
            c if c.is_ascii_digit() || (c == '-' && s.get(i + 1).is_some_and(|n| n.is_ascii_digit())) => {
                let start = i;
                i += 1;
                while i < s.len() && (s[i].is_ascii_digit() || s[i] == '.') {
                    i += 1;
                }
                let text: String = s[start..i].iter().collect();
                out.push(Word::Num(text.parse().map_err(|_| format!("bad number {text:?}"))?));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
                    i += 1;
                }
                out.push(Word::Ident(s[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected {other:?} in an action")),
        }
    }
    Ok(out)
}

// ---- parsing ----

/// Refuse nesting deeper than [`MAX_DEPTH`] (blocks, or parentheses in an
/// action) before the recursive parser sees it.
fn check_depth(toks: &[Tok]) -> Res<()> {
    let mut blocks = 0usize;
    for t in toks {
        let Tok::Action(w) = t else { continue };
        match w.first() {
            Some(Word::Ident(k)) if matches!(k.as_str(), "if" | "range" | "with") => blocks += 1,
            Some(Word::Ident(k)) if k == "end" => blocks = blocks.saturating_sub(1),
            _ => {}
        }
        let mut parens = 0usize;
        for x in w {
            match x {
                Word::Open => parens += 1,
                Word::Close(_) => parens = parens.saturating_sub(1),
                _ => {}
            }
            if parens > MAX_DEPTH {
                return Err(format!("parentheses nested deeper than {MAX_DEPTH}"));
            }
        }
        if blocks > MAX_DEPTH {
            return Err(format!("blocks nested deeper than {MAX_DEPTH}"));
        }
    }
    Ok(())
}

/// Nodes up to an `{{else}}`/`{{end}}` (returned) or the end.
fn parse_list(toks: &[Tok], pos: &mut usize) -> Res<(Vec<Node>, Option<String>)> {
    let mut nodes = Vec::new();
    while *pos < toks.len() {
        let t = &toks[*pos];
        *pos += 1;
        match t {
            Tok::Text(s) => nodes.push(Node::Text(s.clone())),
            Tok::Action(w) => match w.first() {
                Some(Word::Ident(k)) if k == "end" => return Ok((nodes, Some("end".into()))),
                Some(Word::Ident(k)) if k == "else" => {
                    if w.len() > 1 {
                        // `else if ...`: left in place for the `if` being parsed.
                        *pos -= 1;
                        return Ok((nodes, Some("else if".into())));
                    }
                    return Ok((nodes, Some("else".into())));
                }
                Some(Word::Ident(k)) if k == "if" => nodes.push(parse_if(&w[1..], toks, pos)?),
                Some(Word::Ident(k)) if k == "range" || k == "with" => {
                    let p = parse_pipeline(&w[1..])?;
                    let (body, end) = parse_list(toks, pos)?;
                    let otherwise = match end.as_deref() {
                        Some("end") => Vec::new(),
                        Some("else if") => return Err(format!("{k} takes no else if")),
                        Some("else") => {
                            let (e, end2) = parse_list(toks, pos)?;
                            if end2.as_deref() != Some("end") {
                                return Err(format!("{k} without end"));
                            }
                            e
                        }
                        _ => return Err(format!("{k} without end")),
                    };
                    nodes.push(if k == "range" { Node::Range(p, body, otherwise) } else { Node::With(p, body, otherwise) });
                }
                _ => nodes.push(Node::Action(parse_pipeline(w)?)),
            },
        }
    }
    Ok((nodes, None))
}

fn parse_if(cond: &[Word], toks: &[Tok], pos: &mut usize) -> Res<Node> {
    let mut branches = vec![(parse_pipeline(cond)?, Vec::new())];
    loop {
        let (body, end) = parse_list(toks, pos)?;
        branches.last_mut().expect("a branch").1 = body;
        match end.as_deref() {
            Some("end") => return Ok(Node::If(branches, Vec::new())),
            Some("else if") => {
                // Left in place by parse_list.
                let Some(Tok::Action(w)) = toks.get(*pos) else { return Err("else if without a condition".into()) };
                if w[1] != Word::Ident("if".into()) {
                    return Err("else takes nothing but if".into());
                }
                *pos += 1;
                branches.push((parse_pipeline(&w[2..])?, Vec::new()));
            }
            Some("else") => {
                let (otherwise, end2) = parse_list(toks, pos)?;
                if end2.as_deref() != Some("end") {
                    return Err("if without end".into());
                }
                return Ok(Node::If(branches, otherwise));
            }
            _ => return Err("if without end".into()),
        }
    }
}

fn parse_pipeline(w: &[Word]) -> Res<Pipeline> {
    let mut decl = Vec::new();
    let mut w = w;
    let assign = w.contains(&Word::Assign);
    if let Some(i) = w.iter().position(|x| *x == Word::Declare || *x == Word::Assign) {
        for d in &w[..i] {
            match d {
                Word::Var(name, path) if path.is_empty() => decl.push(name.clone()),
                Word::Comma => {}
                other => return Err(format!("cannot assign to {other:?}")),
            }
        }
        w = &w[i + 1..];
    }
    let mut pos = 0;
    let p = parse_cmds(w, &mut pos)?;
    if pos != w.len() {
        return Err("unexpected ) in an action".into());
    }
    if p.is_empty() {
        return Err("empty action".into());
    }
    Ok(Pipeline { decl, assign, cmds: p })
}

fn parse_cmds(w: &[Word], pos: &mut usize) -> Res<Vec<Vec<Arg>>> {
    let mut cmds = vec![Vec::new()];
    while *pos < w.len() {
        let word = &w[*pos];
        *pos += 1;
        let arg = match word {
            Word::Pipe => {
                if cmds.last().is_some_and(Vec::is_empty) {
                    return Err("missing command before |".into());
                }
                cmds.push(Vec::new());
                continue;
            }
            Word::Close(_) => {
                *pos -= 1;
                break;
            }
            Word::Open => {
                let inner = parse_cmds(w, pos)?;
                let Some(Word::Close(path)) = w.get(*pos) else { return Err("unclosed (".into()) };
                *pos += 1;
                Arg::Sub(Box::new(Pipeline { decl: Vec::new(), assign: false, cmds: inner }), path.clone())
            }
            Word::Field(p) => Arg::Field(p.clone()),
            Word::Var(n, p) => Arg::Var(n.clone(), p.clone()),
            Word::Str(s) => Arg::Lit(Value::String(s.clone())),
            Word::Num(n) => Arg::Lit(serde_json::Number::from_f64(*n).map(Value::Number).unwrap_or(Value::Null)),
            Word::Ident(id) if id == "true" || id == "false" => Arg::Lit(Value::Bool(id == "true")),
            Word::Ident(id) if id == "nil" => Arg::Lit(Value::Null),
            Word::Ident(id) => Arg::Func(id.clone()),
            Word::Comma | Word::Declare | Word::Assign => return Err("unexpected , := or = in an action".into()),
        };
        cmds.last_mut().expect("a command").push(arg);
    }
    if cmds.last().is_some_and(Vec::is_empty) && cmds.len() > 1 {
        return Err("missing command after |".into());
    }
    Ok(cmds.into_iter().filter(|c| !c.is_empty()).collect())
}

// ---- execution ----

struct Scope {
    vars: Vec<(String, Value)>,
}

impl Scope {
    fn get(&self, name: &str) -> Res<Value> {
        self.vars.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.clone()).ok_or_else(|| format!("undefined variable {name}"))
    }
}

fn exec(nodes: &[Node], dot: &Value, scope: &mut Scope, out: &mut String) -> Res<()> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipeline(p, dot, scope)?;
                if p.decl.is_empty() {
                    out.push_str(&print(&v));
                }
            }
            Node::If(branches, otherwise) => {
                let mark = scope.vars.len();
                let mut done = false;
                for (cond, body) in branches {
                    if truthy(&eval_pipeline(cond, dot, scope)?) {
                        exec(body, dot, scope, out)?;
                        done = true;
                        break;
                    }
                }
                if !done {
                    exec(otherwise, dot, scope, out)?;
                }
                scope.vars.truncate(mark);
            }
            Node::With(p, body, otherwise) => {
                let mark = scope.vars.len();
                let v = eval_pipeline(p, dot, scope)?;
                if truthy(&v) {
                    exec(body, &v, scope, out)?;
                } else {
                    exec(otherwise, dot, scope, out)?;
                }
                scope.vars.truncate(mark);
            }
            Node::Range(p, body, otherwise) => {
                let mark = scope.vars.len();
                let inner = Pipeline { decl: Vec::new(), assign: false, cmds: p.cmds.clone() };
                let v = eval_pipeline(&inner, dot, scope)?;
                let items: Vec<(Value, Value)> = match v {
                    Value::Array(a) => a.into_iter().enumerate().map(|(i, x)| (Value::from(i), x)).collect(),
                    Value::Object(m) => m.into_iter().map(|(k, x)| (Value::String(k), x)).collect(),
                    Value::Null => Vec::new(),
                    Value::Number(n) => {
                        let count = n.as_f64().unwrap_or(0.0).max(0.0) as u64;
                        if count > MAX_RANGE {
                            return Err(format!("range over {count}: at most {MAX_RANGE}"));
                        }
                        (0..count).map(|i| (Value::from(i), Value::from(i))).collect()
                    }
                    other => return Err(format!("range can't iterate over {}", print(&other))),
                };
                if items.is_empty() {
                    exec(otherwise, dot, scope, out)?;
                }
                for (k, x) in items {
                    let m2 = scope.vars.len();
                    match p.decl.as_slice() {
                        [v] => scope.vars.push((v.clone(), x.clone())),
                        [i, v] => {
                            scope.vars.push((i.clone(), k));
                            scope.vars.push((v.clone(), x.clone()));
                        }
                        _ => {}
                    }
                    exec(body, &x, scope, out)?;
                    scope.vars.truncate(m2);
                }
                scope.vars.truncate(mark);
            }
        }
    }
    Ok(())
}

fn eval_pipeline(p: &Pipeline, dot: &Value, scope: &mut Scope) -> Res<Value> {
    let mut prev: Option<Value> = None;
    for cmd in &p.cmds {
        prev = Some(eval_cmd(cmd, dot, scope, prev)?);
    }
    let v = prev.unwrap_or(Value::Null);
    if let Some(name) = p.decl.first() {
        if p.assign {
            // `$x = v`: the variable declared before, wherever it was.
            let slot = scope.vars.iter_mut().rev().find(|(n, _)| n == name).ok_or_else(|| format!("undefined variable {name}"))?;
            slot.1 = v.clone();
        } else {
            scope.vars.push((name.clone(), v.clone()));
        }
    }
    Ok(v)
}

fn field(v: &Value, path: &[String]) -> Value {
    let mut cur = v;
    for p in path {
        match cur {
            Value::Object(m) => match m.get(p) {
                Some(x) => cur = x,
                None => return Value::Null,
            },
            _ => return Value::Null,
        }
    }
    cur.clone()
}

fn eval_arg(a: &Arg, dot: &Value, scope: &mut Scope) -> Res<Value> {
    Ok(match a {
        Arg::Field(p) => field(dot, p),
        Arg::Var(n, p) => field(&scope.get(n)?, p),
        Arg::Lit(v) => v.clone(),
        Arg::Sub(p, path) => field(&eval_pipeline(p, dot, scope)?, path),
        Arg::Func(f) => call(f, &[])?,
    })
}

fn eval_cmd(cmd: &[Arg], dot: &Value, scope: &mut Scope, piped: Option<Value>) -> Res<Value> {
    match &cmd[0] {
        Arg::Func(f) => {
            let mut args = cmd[1..].iter().map(|a| eval_arg(a, dot, scope)).collect::<Res<Vec<_>>>()?;
            args.extend(piped);
            call(f, &args)
        }
        first => {
            if cmd.len() > 1 || piped.is_some() {
                return Err(format!("{} is not a function", print(&eval_arg(first, dot, scope)?)));
            }
            eval_arg(first, dot, scope)
        }
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// A value as Go's fmt prints it.
pub fn print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            (_, _, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(print).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            format!("map[{}]", sorted.iter().map(|(k, v)| format!("{k}:{}", print(v))).collect::<Vec<_>>().join(" "))
        }
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn compare(a: &Value, b: &Value) -> Res<std::cmp::Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y).ok_or_else(|| "incomparable numbers".into()),
            _ => Err(format!("cannot compare {} and {}", print(a), print(b))),
        },
    }
}

fn printf(args: &[Value]) -> Res<String> {
    let Some(Value::String(f)) = args.first() else { return Err("printf wants a format string first".into()) };
    let mut out = String::new();
    let mut rest = args[1..].iter();
    let mut chars = f.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // Flags and width: `-10`, `5`.
        let mut spec = String::new();
        while let Some(&d) = chars.peek() {
            if d == '-' || d.is_ascii_digit() || d == '.' {
                spec.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let verb = chars.next().ok_or("printf: a % at the end")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let v = rest.next().cloned().unwrap_or(Value::Null);
        let text = match verb {
            'q' => serde_json::to_string(&print(&v)).unwrap_or_default(),
            'd' => num(&v).map(|n| (n as i64).to_string()).unwrap_or_else(|| print(&v)),
            _ => print(&v),
        };
        let (left, width) = match spec.strip_prefix('-') {
            Some(w) => (true, w.split('.').next().and_then(|w| w.parse::<usize>().ok()).unwrap_or(0)),
            None => (false, spec.split('.').next().and_then(|w| w.parse::<usize>().ok()).unwrap_or(0)),
        };
        let width = width.min(MAX_WIDTH);
        let pad = width.saturating_sub(text.chars().count());
        if left {
            out.push_str(&text);
            out.extend(std::iter::repeat_n(' ', pad));
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(&text);
        }
    }
    Ok(out)
}

fn string_arg(f: &str, v: Option<&Value>) -> Res<String> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(print(other)),
        None => Err(format!("{f}: missing argument")),
    }
}

fn call(f: &str, args: &[Value]) -> Res<Value> {
    let want = |n: usize| -> Res<()> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("{f} takes {n} argument(s), got {}", args.len()))
        }
    };
    Ok(match f {
        "json" => {
            want(1)?;
            Value::String(serde_json::to_string(&args[0]).map_err(|e| e.to_string())?)
        }
        "join" => {
            want(2)?;
            let sep = string_arg(f, args.get(1))?;
            match &args[0] {
                Value::Array(a) => Value::String(a.iter().map(print).collect::<Vec<_>>().join(&sep)),
                Value::Null => Value::String(String::new()),
                other => Value::String(print(other)),
            }
        }
        "split" => {
            want(2)?;
            let (s, sep) = (string_arg(f, args.first())?, string_arg(f, args.get(1))?);
            Value::Array(s.split(sep.as_str()).map(|x| Value::String(x.into())).collect())
        }
        "upper" => Value::String(string_arg(f, args.first())?.to_uppercase()),
        "lower" => Value::String(string_arg(f, args.first())?.to_lowercase()),
        "title" => {
            let s = string_arg(f, args.first())?;
            let mut out = String::new();
            let mut start = true;
            for c in s.chars() {
                if start {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = c.is_whitespace();
            }
            Value::String(out)
        }
        "pad" => {
            want(3)?;
            let s = string_arg(f, args.first())?;
            let width = |v: &Value| (num(v).unwrap_or(0.0).max(0.0) as usize).min(MAX_WIDTH);
            let (l, r) = (width(&args[1]), width(&args[2]));
            Value::String(format!("{}{s}{}", " ".repeat(l), " ".repeat(r)))
        }
        "truncate" => {
            want(2)?;
            let s = string_arg(f, args.first())?;
            let n = num(&args[1]).unwrap_or(0.0) as usize;
            Value::String(s.chars().take(n).collect())
        }
        "len" => {
            want(1)?;
            Value::from(match &args[0] {
                Value::Array(a) => a.len(),
                Value::Object(m) => m.len(),
                Value::String(s) => s.len(),
                Value::Null => 0,
                other => return Err(format!("len of {}", print(other))),
            })
        }
        "index" => {
            if args.is_empty() {
                return Err("index: missing argument".into());
            }
            let mut cur = args[0].clone();
            for k in &args[1..] {
                cur = match (&cur, k) {
                    (Value::Array(a), k) => num(k).and_then(|i| a.get(i as usize)).cloned().unwrap_or(Value::Null),
                    (Value::Object(m), Value::String(k)) => m.get(k).cloned().unwrap_or(Value::Null),
                    _ => Value::Null,
                };
            }
            cur
        }
        "print" => Value::String(args.iter().map(print).collect::<Vec<_>>().join("")),
        "println" => Value::String(format!("{}\n", args.iter().map(print).collect::<Vec<_>>().join(" "))),
        "printf" => Value::String(printf(args)?),
        "eq" => {
            if args.len() < 2 {
                return Err("eq takes two arguments at least".into());
            }
            Value::Bool(args[1..].iter().any(|b| args[0] == *b || (num(&args[0]).is_some() && num(&args[0]) == num(b))))
        }
        "ne" => {
            want(2)?;
            Value::Bool(!(args[0] == args[1] || (num(&args[0]).is_some() && num(&args[0]) == num(&args[1]))))
        }
        "lt" | "le" | "gt" | "ge" => {
            want(2)?;
            let o = compare(&args[0], &args[1])?;
            Value::Bool(match f {
                "lt" => o.is_lt(),
                "le" => o.is_le(),
                "gt" => o.is_gt(),
                _ => o.is_ge(),
            })
        }
        "and" => args.iter().find(|a| !truthy(a)).or(args.last()).cloned().unwrap_or(Value::Null),
        "or" => args.iter().find(|a| truthy(a)).or(args.last()).cloned().unwrap_or(Value::Null),
        "not" => {
            want(1)?;
            Value::Bool(!truthy(&args[0]))
        }
        other => return Err(format!("function {other:?} not defined")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap_or_else(|e| panic!("{t}: {e}")).render(v).unwrap_or_else(|e| panic!("{t}: {e}"))
    }

    #[test]
    fn docker_s_common_templates() {
        let c = json!({
            "Id": "abc", "Name": "/web", "State": {"Status": "running", "Pid": 42, "Running": true},
            "Config": {"Env": ["A=1", "B=2"], "Labels": {"tier": "front", "a.b": "x"}, "Cmd": null},
            "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "10.0.0.2"}}},
            "Mounts": [{"Source": "/s", "Destination": "/d"}], "RestartCount": 0,
        });
        let table: &[(&str, &str)] = &[
            ("{{.State.Status}}", "running"),
            ("{{.Name}} {{.State.Pid}}", "/web 42"),
            ("{{json .State}}", r#"{"Pid":42,"Running":true,"Status":"running"}"#),
            ("{{join .Config.Env \",\"}}", "A=1,B=2"),
            ("{{.Config.Env}}", "[A=1 B=2]"),
            ("{{upper .State.Status}}", "RUNNING"),
            ("{{.State.Status | upper}}", "RUNNING"),
            ("{{lower \"ABC\"}}", "abc"),
            ("{{title \"hello world\"}}", "Hello World"),
            ("{{index .Config.Labels \"a.b\"}}", "x"),
            ("{{.Config.Labels.tier}}", "front"),
            ("{{.Config.Cmd}}", "<no value>"),
            ("{{.Missing}}", "<no value>"),
            ("{{range .Mounts}}{{.Source}}:{{.Destination}} {{end}}", "/s:/d "),
            ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}", "a.b=x;tier=front;"),
            ("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "10.0.0.2"),
            ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
            ("{{if eq .State.Status \"exited\"}}x{{else if eq .State.Status \"running\"}}r{{else}}o{{end}}", "r"),
            ("{{if not .RestartCount}}none{{end}}", "none"),
            ("{{with .State}}{{.Pid}}{{end}}", "42"),
            ("{{with .Nothing}}x{{else}}y{{end}}", "y"),
            ("{{len .Mounts}}", "1"),
            ("{{printf \"%-6s|\" .State.Status}}", "running|"),
            ("{{printf \"%5d|%s\" .State.Pid \"x\"}}", "   42|x"),
            ("{{println .Id}}", "abc\n"),
            ("{{- .Id -}}  ", "abc"),
            ("a {{/* a comment */}}b", "a b"),
            ("{{$x := .Id}}{{$x}}{{$.Name}}", "abc/web"),
            ("{{(index .Mounts 0).Source}}", "/s"),
            ("{{truncate .Name 2}}", "/w"),
            ("{{json .Config.Labels}}", r#"{"a.b":"x","tier":"front"}"#),
            ("{{.}}", "map[Config:map[Cmd:<no value> Env:[A=1 B=2] Labels:map[a.b:x tier:front]] Id:abc Mounts:[map[Destination:/d Source:/s]] Name:/web NetworkSettings:map[Networks:map[bridge:map[IPAddress:10.0.0.2]]] RestartCount:0 State:map[Pid:42 Running:true Status:running]]"),
            ("{{and .Id .Name}}", "/web"),
            ("{{or .Missing \"dflt\"}}", "dflt"),
            ("{{gt .State.Pid 40}} {{lt 1 2}}", "true true"),
            ("{{split \"a:b\" \":\"}}", "[a b]"),
            ("{{with .State}}{{.|json}}{{end}}", r#"{"Pid":42,"Running":true,"Status":"running"}"#),
            ("{{$n := 0}}{{range .Mounts}}{{$n = 1}}{{end}}{{$n}}", "1"),
            ("{{range 3}}{{.}}{{end}}", "012"),
            ("{{`raw \"q\"`}}", "raw \"q\""),
        ];
        for (t, want) in table {
            assert_eq!(render(t, &c), *want, "{t}");
        }
    }

    #[test]
    fn tables_align_under_a_header() {
        let t = Template::parse("table {{.ID}}\\t{{.Names}}\\t{{.Status}}").unwrap();
        assert!(t.table);
        let rows = [
            json!({"ID": "a1", "Names": "web", "Status": "Up 2 seconds"}),
            json!({"ID": "b2", "Names": "database", "Status": "Exited (0)"}),
        ];
        let out = render_rows(&t, &rows, &[("ID", "CONTAINER ID")]).unwrap();
        assert_eq!(out, "CONTAINER ID   NAMES      STATUS\na1             web        Up 2 seconds\nb2             database   Exited (0)\n");
        let plain = Template::parse("{{.ID}}").unwrap();
        assert_eq!(render_rows(&plain, &rows, &[]).unwrap(), "a1\nb2\n");
        assert_eq!(column_name("CreatedAt"), "CREATED AT");
        assert_eq!(column_name("ID"), "ID");
        assert_eq!(column_name("RunningFor"), "RUNNING FOR");
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        let deep = format!("{{{{{}.X{}}}}}", "(".repeat(100), ")".repeat(100));
        assert!(Template::parse(&deep).is_err(), "deep parentheses");
        assert!(Template::parse(&"{{if .X}}".repeat(100)).is_err(), "deep blocks");
        assert!(Template::parse("{{range 1000000000}}x{{end}}").unwrap().render(&json!({})).is_err(), "a huge range");
        let padded = Template::parse("{{pad \"x\" 99999999999 0}}").unwrap().render(&json!({})).unwrap();
        assert!(padded.len() <= MAX_WIDTH + 1);
        assert!(Template::parse("{{$nope = 1}}").unwrap().render(&json!({})).is_err(), "assigning an undeclared variable");
        for t in ["{{.Id", "{{if .X}}a", "{{end}}", "{{nosuch .X}}", "{{range .X}}{{else if .Y}}{{end}}", "{{\"open}}", "{{.A | }}"] {
            let r = Template::parse(t).and_then(|t| t.render(&json!({"X": [1]})));
            assert!(r.is_err(), "{t} should fail");
        }
    }
}

//! `berthctl pull`, `push`, `login`, `logout`.
//!
//! Credentials live in a docker-compatible `config.json` (`$DOCKER_CONFIG`,
//! else `~/.docker`), mode 0600, in its `auths` section. The agent stores
//! none: each pull or push carries them.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use berth_api::v1;
use berth_common::reference::{Reference, DEFAULT_DOMAIN};
use clap::Args;
use tokio_stream::StreamExt;

use crate::output::short_id;
use crate::{Conn, Format};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image to pull, e.g. localhost:5000/team/app:v1
    pub reference: String,
    /// Platform of a multi-platform image (os/arch[/variant]) [default: this machine's]
    #[arg(long)]
    pub platform: Option<String>,
    /// Fetch every platform of a multi-platform image
    #[arg(long)]
    pub all_platforms: bool,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Local image to push; its name says where (e.g. localhost:5000/team/app:v1)
    pub reference: String,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

/// What pull and push share.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Use plain HTTP (the default for localhost and registries the agent lists as insecure)
    #[arg(long)]
    pub plain_http: bool,
    /// Credentials USER:PASSWORD [default: from `berthctl login`]
    #[arg(long)]
    pub creds: Option<String>,
    /// Print only the result (the image name, or the digest) at the end
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host, e.g. localhost:5000 [default: docker.io]
    pub registry: Option<String>,
    /// Username [default: asked]
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (seen by other users in the process list: prefer --password-stdin)
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    pub password_stdin: bool,
    /// Use plain HTTP to check the credentials
    #[arg(long)]
    pub plain_http: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry host [default: docker.io]
    pub registry: Option<String>,
}

/// The docker config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn config_path() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Ok(PathBuf::from(d).join("config.json"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set (or set DOCKER_CONFIG)")?;
    Ok(PathBuf::from(home).join(".docker/config.json"))
}

/// The key of a registry in `auths` (docker writes Docker Hub's as its v1 URL).
fn auth_keys(registry: &str) -> Vec<String> {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            vec!["https://index.docker.io/v1/".into(), "docker.io".into(), "index.docker.io".into()]
        }
        r => vec![r.to_owned(), format!("https://{r}"), format!("http://{r}")],
    }
}

fn read_config() -> Result<serde_json::Value> {
    let path = config_path()?;
    match std::fs::read(&path) {
        Ok(data) => serde_json::from_slice(&data).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Write the config whole: a new temporary file (mode 0600, created
/// exclusively, never through a link) renamed over the config, or over the
/// file a symlinked config points to.
fn write_config(v: &serde_json::Value) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut path = config_path()?;
    if let Ok(target) = std::fs::canonicalize(&path) {
        path = target;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_file_name(format!(".config.json.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(serde_json::to_string_pretty(v)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        e.context(format!("writing {}", path.display()))
    })
}

/// Credentials for `registry`: `--creds`, else the config file.
fn credentials(registry: &str, flag: Option<&str>) -> Result<Option<v1::RegistryCredentials>> {
    if let Some(c) = flag {
        let (u, p) = c.split_once(':').context("--creds takes USER:PASSWORD")?;
        return Ok(Some(v1::RegistryCredentials { username: u.into(), password: p.into() }));
    }
    let cfg = read_config()?;
    for key in auth_keys(registry) {
        if let Some(auth) = cfg.pointer(&format!("/auths/{}/auth", key.replace('~', "~0").replace('/', "~1"))).and_then(|a| a.as_str()) {
            let raw = base64::engine::general_purpose::STANDARD.decode(auth.trim()).context("a corrupt auth entry in the docker config")?;
            let s = String::from_utf8(raw).context("a corrupt auth entry in the docker config")?;
            let (u, p) = s.split_once(':').context("a corrupt auth entry in the docker config")?;
            return Ok(Some(v1::RegistryCredentials { username: u.into(), password: p.into() }));
        }
    }
    Ok(None)
}

/// The registry host of a reference, as docker reads names. A name that is no
/// reference gets Docker Hub's: the agent refuses it before using any credentials.
fn registry_of(reference: &str) -> String {
    Reference::parse(reference).map_or_else(|_| DEFAULT_DOMAIN.to_owned(), |r| r.domain)
}

/// Progress as people read it: a bar per blob on a terminal, plain lines otherwise.
pub(crate) struct Shown {
    quiet: bool,
    /// Lines go to standard error (a `run`'s pull: standard output is the container's).
    to_stderr: bool,
    bars: Option<(indicatif::MultiProgress, std::collections::HashMap<String, indicatif::ProgressBar>)>,
    /// Each blob's last word, so that one row (or line) says each once.
    said: std::collections::HashMap<String, &'static str>,
    /// The image's own lines, printed under the bars at the end.
    summary: Vec<String>,
    /// A push's progress (docker words it apart).
    push: bool,
}

/// docker's words for a blob's steps; None for a step that says nothing new
/// (a layer already unpacked after its blob was there: "Already exists").
fn docker_word(push: bool, kind: &str, status: &str, before: Option<&'static str>) -> Option<&'static str> {
    Some(match (kind, status) {
        (_, "exists") if push => "Layer already exists",
        (_, "fetching") => "Downloading",
        (_, "transferring") => return before,
        ("blob", "fetched") => "Download complete",
        ("blob", "exists") => "Already exists",
        ("layer", "unpacked") => "Pull complete",
        ("layer", "exists") if before.is_some() => return None,
        ("layer", "exists") => "Already exists",
        (_, "pushing") => "Pushing",
        (_, "pushed") => "Pushed",
        (_, "mounted") => "Mounted from another repository",
        _ => return None,
    })
}

impl Shown {
    fn new(quiet: bool) -> Self {
        let bars = (!quiet && std::io::stdout().is_terminal()).then(|| (indicatif::MultiProgress::new(), Default::default()));
        Shown { quiet, to_stderr: false, bars, said: Default::default(), summary: Vec::new(), push: false }
    }

    /// Progress on standard error (bars when it is a terminal).
    pub(crate) fn on_stderr(quiet: bool) -> Self {
        let bars = (!quiet && std::io::stderr().is_terminal()).then(|| (indicatif::MultiProgress::new(), Default::default()));
        Shown { quiet, to_stderr: true, bars, said: Default::default(), summary: Vec::new(), push: false }
    }

    fn line(&self, text: &str) {
        if self.to_stderr {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    /// The image's lines, under the bars.
    pub(crate) fn finish(&mut self) {
        if let Some((multi, _)) = &self.bars {
            let _ = multi.clear();
        }
        for l in std::mem::take(&mut self.summary) {
            self.line(&l);
        }
    }

    fn show(&mut self, p: &v1::TransferProgress) {
        if self.quiet {
            return;
        }
        if p.kind == "image" {
            self.summary.push(format!("{}: {}", p.id, p.status));
            return;
        }
        let id = short_id(&p.id);
        let before = self.said.get(&p.id).copied();
        let Some(word) = docker_word(self.push, &p.kind, &p.status, before) else { return };
        let Some((multi, bars)) = &mut self.bars else {
            // Plain lines: each blob's steps once each, no byte counts.
            if p.status != "transferring" && before != Some(word) {
                self.said.insert(p.id.clone(), word);
                let size = if p.size > 0 { format!(" ({})", crate::output::size(p.size)) } else { String::new() };
                self.line(&format!("{id}: {word}{size}"));
            }
            return;
        };
        self.said.insert(p.id.clone(), word);
        // One row per blob, whatever step it is at.
        let bar = bars.entry(p.id.clone()).or_insert_with(|| {
            let b = multi.add(indicatif::ProgressBar::new(p.size.max(0) as u64));
            let style =
                indicatif::ProgressStyle::with_template("{prefix:12} {msg:18} [{bar:30}] {decimal_bytes:>9}/{decimal_total_bytes:9}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> ");
            b.set_style(style);
            b.set_prefix(id.clone());
            b
        });
        match p.status.as_str() {
            "transferring" => bar.set_position(p.offset.max(0) as u64),
            "fetching" | "pushing" => bar.set_message(word),
            _ => {
                bar.set_position(p.size.max(0) as u64);
                bar.set_message(word);
                if matches!(
                    word,
                    "Pull complete" | "Already exists" | "Pushed" | "Layer already exists" | "Mounted from another repository"
                ) {
                    bar.finish();
                }
            }
        }
    }
}

pub async fn pull(conn: &Conn, a: PullArgs) -> Result<i32> {
    let registry = registry_of(&a.reference);
    let req = v1::PullRequest {
        reference: a.reference.clone(),
        platform: a.platform.unwrap_or_default(),
        all_platforms: a.all_platforms,
        plain_http: a.transfer.plain_http,
        credentials: credentials(&registry, a.transfer.creds.as_deref())?,
    };
    let mut shown = Shown::new(a.transfer.quiet || conn.format == Format::Json);
    let img = pull_image(conn, req, &mut shown).await?;
    let digest = img.target.as_ref().map(|t| t.digest.clone()).unwrap_or_default();
    if conn.format == Format::Json {
        crate::output::json(&serde_json::json!({"Name": img.name, "Digest": digest}));
    } else if a.transfer.quiet {
        println!("{}", img.name);
    } else {
        println!("Digest: {digest}\nPulled: {}", img.name);
    }
    Ok(0)
}

/// Pull through the agent, showing its progress; the pulled image.
pub(crate) async fn pull_image(conn: &Conn, req: v1::PullRequest, shown: &mut Shown) -> Result<v1::Image> {
    let mut stream = conn.registry().pull(req).await?.into_inner();
    while let Some(msg) = stream.next().await {
        match msg?.event {
            Some(v1::pull_response::Event::Progress(p)) => shown.show(&p),
            Some(v1::pull_response::Event::Image(img)) => {
                shown.finish();
                return Ok(img);
            }
            None => {}
        }
    }
    bail!("the agent ended the pull without a result")
}

/// The pull `run` and `create` make of their image (the docker config's
/// credentials for its registry), progress on standard error.
pub(crate) async fn pull_for_run(conn: &Conn, reference: &str, quiet: bool) -> Result<v1::Image> {
    let req =
        v1::PullRequest { reference: reference.to_owned(), credentials: credentials(&registry_of(reference), None)?, ..Default::default() };
    let mut shown = Shown::on_stderr(quiet);
    pull_image(conn, req, &mut shown).await
}

pub async fn push(conn: &Conn, a: PushArgs) -> Result<i32> {
    let registry = registry_of(&a.reference);
    let req = v1::PushRequest {
        reference: a.reference.clone(),
        plain_http: a.transfer.plain_http,
        credentials: credentials(&registry, a.transfer.creds.as_deref())?,
    };
    let mut stream = conn.registry().push(req).await?.into_inner();
    let mut shown = Shown::new(a.transfer.quiet || conn.format == Format::Json);
    shown.push = true;
    while let Some(msg) = stream.next().await {
        match msg?.event {
            Some(v1::push_response::Event::Progress(p)) => shown.show(&p),
            Some(v1::push_response::Event::Digest(d)) => {
                shown.finish();
                if conn.format == Format::Json {
                    crate::output::json(&serde_json::json!({"Name": a.reference, "Digest": d}));
                } else if a.transfer.quiet {
                    println!("{d}");
                } else {
                    println!("Pushed: {} digest: {d}", a.reference);
                }
                return Ok(0);
            }
            None => {}
        }
    }
    bail!("the agent ended the push without a result")
}

/// Read a line from the terminal without echoing it.
fn read_secret(prompt: &str) -> Result<String> {
    let stdin = std::io::stdin();
    eprint!("{prompt}");
    let saved = rustix::termios::tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet);
    }
    let mut line = String::new();
    let r = stdin.read_line(&mut line);
    if let Some(t) = &saved {
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, t);
    }
    eprintln!();
    r?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

pub async fn login(conn: &Conn, a: LoginArgs) -> Result<i32> {
    let registry = a.registry.unwrap_or_else(|| "docker.io".into());
    let username = match a.username {
        Some(u) => u,
        None if std::io::stdin().is_terminal() => {
            eprint!("Username: ");
            let mut u = String::new();
            std::io::stdin().read_line(&mut u)?;
            u.trim().to_owned()
        }
        None => bail!("no username: use -u USER"),
    };
    if username.is_empty() || username.contains(':') {
        bail!("invalid username {username:?}");
    }
    let password = if let Some(p) = a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else if a.password_stdin {
        let mut p = String::new();
        std::io::stdin().read_to_string(&mut p)?;
        p.trim_end_matches(['\n', '\r']).to_owned()
    } else if std::io::stdin().is_terminal() {
        read_secret("Password: ")?
    } else {
        bail!("no password: use --password-stdin");
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let creds = v1::RegistryCredentials { username: username.clone(), password: password.clone() };
    conn.registry()
        .check_login(v1::CheckLoginRequest { registry: registry.clone(), credentials: Some(creds), plain_http: a.plain_http })
        .await?;
    let mut cfg = read_config()?;
    if !cfg.is_object() {
        bail!("{} is not a JSON object; not touching it", config_path()?.display());
    }
    let key = auth_keys(&registry).remove(0);
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let auths = cfg.as_object_mut().expect("an object").entry("auths").or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        bail!("the \"auths\" of {} is not a JSON object; not touching it", config_path()?.display());
    }
    auths.as_object_mut().expect("an object").insert(key, serde_json::json!({ "auth": auth }));
    write_config(&cfg)?;
    println!("Login Succeeded");
    Ok(0)
}

pub async fn logout(a: LogoutArgs) -> Result<i32> {
    let registry = a.registry.unwrap_or_else(|| "docker.io".into());
    let mut cfg = read_config()?;
    let mut removed = false;
    if let Some(auths) = cfg.get_mut("auths").and_then(|a| a.as_object_mut()) {
        for key in auth_keys(&registry) {
            removed |= auths.remove(&key).is_some();
        }
    }
    if !removed {
        println!("Not logged in to {registry}");
        return Ok(0);
    }
    write_config(&cfg)?;
    println!("Removing login credentials for {registry}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_read_from_names_like_docker() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
        assert_eq!(registry_of("localhost:5000/a/b:v1"), "localhost:5000");
        assert_eq!(registry_of("localhost/a"), "localhost");
        assert_eq!(registry_of("registry.example/a"), "registry.example");
        assert_eq!(registry_of("[::1]:5000/a:v1"), "[::1]:5000");
        assert_eq!(registry_of(&format!("example.com:443/a@sha256:{}", "b".repeat(64))), "example.com:443");
        assert_eq!(registry_of("NOT a reference"), "docker.io");
        assert_eq!(auth_keys("docker.io")[0], "https://index.docker.io/v1/");
    }
}

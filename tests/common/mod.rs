//! Shared helpers for the integration tests: a real berthd on a temporary
//! root, the berthctl binary, and image archives built from nothing (Debian's
//! busybox-static is the only binary put in them).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

pub const BUSYBOX: &str = "/bin/busybox";

/// The static busybox binary, or a failure naming the package to install.
pub fn busybox() -> Vec<u8> {
    match std::fs::read(BUSYBOX) {
        Ok(b) => b,
        Err(e) => panic!("{BUSYBOX} is missing ({e}): install Debian's busybox-static (scripts/install-test-deps.sh)"),
    }
}

/// Fail with the package name when a tool the test needs is missing.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false);
    assert!(found, "{tool} is missing: install Debian's {package} (scripts/install-test-deps.sh)");
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One entry of a layer.
#[derive(Clone, Debug)]
pub enum Entry {
    Dir(String, u32),
    File(String, Vec<u8>, u32),
    Symlink(String, String),
    Hardlink(String, String),
    /// Raw header name bytes (for hostile names the tar crate would refuse).
    RawFile(Vec<u8>, Vec<u8>),
}

/// Build an uncompressed tar layer from entries.
pub fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            Entry::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            Entry::Hardlink(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            Entry::RawFile(name, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                let n = &mut h.as_old_mut().name;
                n.fill(0);
                n[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, &data[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// The busybox base layer: /bin/busybox plus a few applet links, /etc/passwd, /tmp.
pub fn busybox_layer() -> Vec<u8> {
    let mut entries = vec![
        Entry::Dir("bin".into(), 0o755),
        Entry::File("bin/busybox".into(), busybox(), 0o755),
        Entry::Dir("etc".into(), 0o755),
        Entry::File("etc/passwd".into(), b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n".to_vec(), 0o644),
        Entry::File("etc/group".into(), b"root:x:0:\nnogroup:x:65534:\n".to_vec(), 0o644),
        Entry::Dir("tmp".into(), 0o1777),
    ];
    for applet in ["sh", "echo", "ls", "cat", "true", "false", "sleep", "env", "id", "touch", "rm", "mkdir", "ps", "wc"] {
        entries.push(Entry::Symlink(format!("bin/{applet}"), "busybox".into()));
    }
    layer(&entries)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compress {
    None,
    Gzip,
    Zstd,
}

pub fn compress(data: &[u8], c: Compress) -> Vec<u8> {
    match c {
        Compress::None => data.to_vec(),
        Compress::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compress::Zstd => zstd::encode_all(data, 1).unwrap(),
    }
}

/// An image to build: uncompressed layers, how to compress them, a command.
#[derive(Clone)]
pub struct ImageSpec {
    pub layers: Vec<Vec<u8>>,
    pub compression: Compress,
    pub cmd: Vec<String>,
}

impl ImageSpec {
    pub fn new(layers: Vec<Vec<u8>>) -> Self {
        Self { layers, compression: Compress::Gzip, cmd: vec!["/bin/sh".into()] }
    }
}

/// Blobs of an image: (digest, bytes) for config and layers, plus the manifest.
pub struct Built {
    pub config: (String, Vec<u8>),
    pub layers: Vec<(String, Vec<u8>, String)>,
    pub manifest: (String, Vec<u8>),
    pub diff_ids: Vec<String>,
}

pub fn build(spec: &ImageSpec) -> Built {
    build_edited(spec, |_| {}, |_| {})
}

/// Like [`build`], with a chance to change the config and the manifest JSON
/// before they are serialized (digests are computed after the edits).
pub fn build_edited(
    spec: &ImageSpec,
    edit_config: impl FnOnce(&mut serde_json::Value),
    edit_manifest: impl FnOnce(&mut serde_json::Value),
) -> Built {
    let diff_ids: Vec<String> = spec.layers.iter().map(|l| sha256(l)).collect();
    let media = match spec.compression {
        Compress::None => "application/vnd.oci.image.layer.v1.tar",
        Compress::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compress::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    };
    let layers: Vec<(String, Vec<u8>, String)> = spec
        .layers
        .iter()
        .map(|l| {
            let c = compress(l, spec.compression);
            (sha256(&c), c, media.to_owned())
        })
        .collect();
    let config = serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": spec.cmd, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": spec.layers.iter().map(|_| serde_json::json!({"created_by": "berth test"})).collect::<Vec<_>>(),
    });
    let mut config = config;
    edit_config(&mut config);
    let config = serde_json::to_vec(&config).unwrap();
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": layers.iter().map(|(d, b, m)| serde_json::json!({"mediaType": m, "digest": d, "size": b.len()})).collect::<Vec<_>>(),
    });
    edit_manifest(&mut manifest);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    Built { config: (sha256(&config), config), layers, manifest: (sha256(&manifest), manifest), diff_ids }
}

/// Append a regular file (mode 0644) to an archive being built.
pub fn add_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data).unwrap();
}

/// An OCI image layout archive of raw parts: `oci-layout`, each blob under
/// `blobs/sha256/`, then `index_json` (for indexes the builders above don't make).
pub fn layout_archive(blobs: &[&[u8]], index_json: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add_file(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for data in blobs {
        add_file(&mut b, &format!("blobs/sha256/{}", &sha256(data)[7..]), data);
    }
    add_file(&mut b, "index.json", index_json);
    b.into_inner().unwrap()
}

/// An OCI image layout archive holding `images` (name annotation, spec).
pub fn oci_archive(images: &[(&str, &ImageSpec)]) -> Vec<u8> {
    let built: Vec<(&str, Built)> = images.iter().map(|(n, s)| (*n, build(s))).collect();
    let refs: Vec<(&str, &Built)> = built.iter().map(|(n, b)| (*n, b)).collect();
    oci_archive_built(&refs)
}

/// An OCI image layout archive holding already built images (see [`build_edited`]).
pub fn oci_archive_built(images: &[(&str, &Built)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut written = std::collections::HashSet::new();
    let mut manifests = Vec::new();
    for (name, built) in images {
        let mut blobs: Vec<(&String, &Vec<u8>)> = built.layers.iter().map(|(d, b, _)| (d, b)).collect();
        blobs.push((&built.config.0, &built.config.1));
        blobs.push((&built.manifest.0, &built.manifest.1));
        for (d, data) in blobs {
            if written.insert(d.clone()) {
                add_file(&mut b, &format!("blobs/sha256/{}", &d[7..]), data);
            }
        }
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": built.manifest.0,
            "size": built.manifest.1.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap()},
            "platform": {"architecture": "amd64", "os": "linux"},
        }));
    }
    add_file(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    add_file(&mut b, "index.json", &serde_json::to_vec(&index).unwrap());
    b.into_inner().unwrap()
}

/// A `docker save` archive (legacy layout: `<id>/layer.tar`, `<config>.json`, manifest.json last).
pub fn docker_archive(tags: &[&str], spec: &ImageSpec) -> Vec<u8> {
    let built = build(spec);
    let mut b = tar::Builder::new(Vec::new());
    let mut layer_paths = Vec::new();
    for (i, (_, data, _)) in built.layers.iter().enumerate() {
        let id = &sha256(format!("layer{i}{}", built.diff_ids[i]).as_bytes())[7..];
        let p = format!("{id}/layer.tar");
        add_file(&mut b, &format!("{id}/VERSION"), b"1.0");
        add_file(&mut b, &p, data);
        layer_paths.push(p);
    }
    let config_path = format!("{}.json", &built.config.0[7..]);
    add_file(&mut b, &config_path, &built.config.1);
    let manifest = serde_json::json!([{"Config": config_path, "RepoTags": tags, "Layers": layer_paths}]);
    add_file(&mut b, "manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap()
}

/// A berthd process on a temporary root; killed on drop.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub extra_args: Vec<String>,
    /// The CNI conf dir of this daemon's networks: its own (in `dir`) unless a
    /// test's config names another, so that networks a test makes are removed
    /// with the test (`release_networks`) and no two tests share a list.
    pub net_conf: PathBuf,
}

impl Daemon {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Self {
        let mut d = Self::unstarted(args);
        d.spawn();
        d
    }

    /// Directories and arguments of a daemon, not started yet (to write a
    /// config file into `dir` first, or to start berthd by hand).
    pub fn unstarted(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("berth-test-").tempdir_in(test_tmp()).unwrap();
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let socket = state.join("berthd.sock");
        let net_conf = dir.path().join("net.d");
        let mut d = Self { child: None, dir, root, state, socket, extra_args: Vec::new(), net_conf };
        // A config naming the daemon's own conf dir; a test's own --config replaces it.
        let config = d.file("berthd.toml", d.network_toml().as_bytes());
        d.extra_args =
            ["--config".to_string(), config.display().to_string()].into_iter().chain(args.iter().map(|s| s.to_string())).collect();
        d
    }

    /// The `[network]` table that gives this daemon its own conf dir.
    pub fn network_toml(&self) -> String {
        format!("[network]\nconf_dir = {:?}\n", self.net_conf.display().to_string())
    }

    /// Start a daemon whose `--config` file holds `toml` (and, unless it has
    /// a `[network]` table, the daemon's own conf dir).
    pub fn start_with_config(toml: &str) -> Self {
        let mut d = Self::unstarted(&[]);
        let toml = if toml.contains("[network]") { toml.to_string() } else { format!("{toml}\n{}", d.network_toml()) };
        let path = d.file("berthd.toml", toml.as_bytes());
        d.extra_args = vec!["--config".into(), path.display().to_string()];
        d.spawn();
        d
    }

    /// Process id of the running berthd.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("berthd is not running").id()
    }

    /// Files in `<root>/content/ingest` (blob writes in progress or left over).
    pub fn ingest_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root.join("content/ingest"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The agent still answers: `berthctl version` works.
    pub fn assert_healthy(&self) {
        let out = self.ctl(&["version"]);
        assert!(out.status.success(), "berthd no longer answers: {}\nlog:\n{}", stderr(&out), self.log());
    }

    /// Nothing of a failed import remains: no image in `ns`, no snapshot
    /// (records or directories), no blob, no ingest file.
    pub fn assert_nothing_left(&self, ns: &str) {
        let images = self.ok(&["--namespace", ns, "images", "-q"]);
        assert_eq!(images.trim(), "", "images remain");
        let snaps = self.ok(&["--namespace", ns, "snapshot", "ls", "-q"]);
        assert_eq!(snaps.trim(), "", "snapshot records remain");
        for sn in ["overlayfs", "native"] {
            assert!(self.snapshot_dirs(sn).is_empty(), "{sn} snapshot dirs remain: {:?}", self.snapshot_dirs(sn));
        }
        assert!(self.blobs().is_empty(), "blobs remain: {:?}", self.blobs());
        assert!(self.ingest_files().is_empty(), "ingest files remain: {:?}", self.ingest_files());
    }

    /// The `fs` directory of every snapshot of `snapshotter`.
    pub fn snapshot_fs_dirs(&self, snapshotter: &str) -> Vec<PathBuf> {
        self.snapshot_dirs(snapshotter).iter().map(|id| self.root.join("snapshots").join(snapshotter).join(id).join("fs")).collect()
    }

    /// `image inspect` as JSON.
    pub fn inspect(&self, ns: &str, image: &str) -> serde_json::Value {
        let all: serde_json::Value = serde_json::from_str(&self.ok(&["--namespace", ns, "image", "inspect", image])).unwrap();
        all[0].clone()
    }

    /// Start (again) on the same root and wait until it answers.
    pub fn spawn(&mut self) {
        // A socket left by an agent that was killed: ready means this one's.
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("berthd.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_berthd"))
            // Nothing of the caller's own agent: the flags alone say where this one is.
            .env_remove("BERTH_ADDRESS")
            .env_remove("BERTH_ROOT")
            .arg("--root")
            .arg(&self.root)
            .arg("--state")
            .arg(&self.state)
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting berthd");
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("berthd exited early ({status}); log:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "berthd did not start within 30s; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    /// SIGKILL the agent and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// berthctl against this agent, running on (its output piped): `events`.
    pub fn spawn_ctl(&self, args: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_berthctl"))
            .args(args)
            .env("BERTH_ADDRESS", &self.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Run berthctl against this agent.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_stdin(args, None)
    }

    pub fn ctl_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berthctl"));
        cmd.args(args).env("BERTH_ADDRESS", &self.socket).env_remove("BERTH_NAMESPACE");
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting berthctl");
        if let Some(data) = stdin {
            let mut si = child.stdin.take().unwrap();
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = si.write_all(&data);
            });
        }
        wait_output(child, Duration::from_secs(120))
    }

    /// Run berthctl and require it to fail; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(!out.status.success(), "berthctl {args:?} should fail: {}", stdout(&out));
        stderr(&out)
    }

    /// An agent (runc required) with `docker.io/library/busybox:latest` loaded.
    pub fn with_busybox() -> Self {
        require_tool("runc", "runc");
        let d = Daemon::start();
        let spec = ImageSpec::new(vec![busybox_layer()]);
        let path = d.file("busybox.tar", &oci_archive(&[("docker.io/library/busybox:latest", &spec)]));
        d.ok(&["load", "-i", path.to_str().unwrap()]);
        d
    }

    /// Run berthctl and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(out.status.success(), "berthctl {args:?} failed: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        String::from_utf8(out.stdout).unwrap()
    }

    /// Write `data` to a file in the test dir and return its path.
    pub fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    /// A gRPC channel to the agent.
    pub async fn channel(&self) -> tonic::transport::Channel {
        berth_api::connect(&self.socket, Duration::from_secs(5)).await.unwrap()
    }

    /// Snapshot directories on disk (overlayfs snapshotter).
    pub fn snapshot_dirs(&self, snapshotter: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root.join("snapshots").join(snapshotter))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn blobs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root.join("content/blobs/sha256"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Daemon {
    /// Kill every container of this daemon and its shim (they outlive the agent).
    pub fn kill_containers(&self) {
        // The runtimes' state: each container is killed and its cgroups removed.
        for rt in std::fs::read_dir(self.state.join("runtime")).into_iter().flatten().flatten() {
            let runtime = rt.file_name().to_string_lossy().into_owned();
            for c in std::fs::read_dir(rt.path()).into_iter().flatten().flatten() {
                let id = c.file_name().to_string_lossy().into_owned();
                let _ = run_cmd(
                    Command::new(&runtime)
                        .arg("--root")
                        .arg(rt.path())
                        .args(["delete", "--force", &id])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null()),
                    Duration::from_secs(20),
                );
            }
        }
        for pid in self.shim_pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }

    /// Pids of the shims of this daemon's tasks.
    pub fn shim_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for ns in std::fs::read_dir(self.state.join("tasks")).into_iter().flatten().flatten() {
            for t in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                if let Some(pid) = std::fs::read_to_string(t.path().join("shim.pid")).ok().and_then(|s| s.trim().parse().ok()) {
                    // Only a live shim of this bundle (the pid may have been reused).
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    if String::from_utf8_lossy(&cmdline).contains(&*t.path().to_string_lossy()) {
                        pids.push(pid);
                    }
                }
            }
        }
        pids
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.kill_containers();
        self.release_networks();
    }
}

impl Daemon {
    /// After the containers are killed: the networks they were attached to
    /// are released as after a crash, by an agent started on the same root
    /// (it releases, before it serves, every attachment whose task is gone),
    /// then the namespaces' directory is unmounted.
    fn release_networks(&mut self) {
        let netns = self.state.join("netns");
        if attached_records(&netns) {
            // With no pool: the namespaces it kept attached ahead of time are released too.
            let config = self.dir.path().join("release-networks.toml");
            let _ = std::fs::write(&config, format!("{}pool_size = 0\n", self.network_toml()));
            let child = Command::new(env!("CARGO_BIN_EXE_berthd"))
                .arg("--root")
                .arg(&self.root)
                .arg("--state")
                .arg(&self.state)
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            if let Ok(mut c) = child {
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline && std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
                    if c.try_wait().ok().flatten().is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                // Tasks found dead are deleted, and their networks released, in the background.
                while Instant::now() < deadline && attached_records(&netns) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if netns.exists() {
            let _ = Command::new("umount").arg("-R").arg("-l").arg(&netns).stderr(Stdio::null()).status();
        }
        self.remove_bridges();
    }

    /// The bridges of the networks in the daemon's own conf dir (but the
    /// default one, shared by every agent on the machine) and its isolation,
    /// forwarding and masquerade chains, as `network rm` would remove them: a test leaves no interface,
    /// route or rule behind.
    fn remove_bridges(&self) {
        if !self.net_conf.starts_with(self.dir.path()) {
            return;
        }
        for entry in std::fs::read_dir(&self.net_conf).into_iter().flatten().flatten() {
            let Ok(list) = std::fs::read(entry.path()) else { continue };
            let Ok(list) = serde_json::from_slice::<serde_json::Value>(&list) else { continue };
            for plugin in list["plugins"].as_array().into_iter().flatten() {
                match plugin["bridge"].as_str() {
                    Some(b) if plugin["type"] == "bridge" && b != "berth0" => {
                        let _ = Command::new("ip").args(["link", "del", b]).stderr(Stdio::null()).status();
                    }
                    _ => {}
                }
            }
        }
        let h = Sha256::digest(self.net_conf.as_os_str().as_encoded_bytes());
        let chain = format!("BERTH-ISO-{}", &hex(&h)[..8]);
        let iptables = |args: &[&str]| Command::new("iptables").args(["-w", "5"]).args(args).stderr(Stdio::null()).status();
        for chain in [chain.clone(), chain.replace("BERTH-ISO-", "BERTH-FWD-")] {
            let listed =
                Command::new("iptables").args(["-w", "5", "-n", "-L", &chain]).stdout(Stdio::null()).stderr(Stdio::null()).status();
            if listed.is_ok_and(|s| s.success()) {
                let _ = iptables(&["-D", "FORWARD", "-j", &chain]);
                let _ = iptables(&["-F", &chain]);
                let _ = iptables(&["-X", &chain]);
            }
        }
        // And its masquerade chain.
        let nat = chain.replace("BERTH-ISO-", "BERTH-MASQ-");
        let listed =
            Command::new("iptables").args(["-w", "5", "-t", "nat", "-n", "-L", &nat]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        if listed.is_ok_and(|s| s.success()) {
            let _ = iptables(&["-t", "nat", "-D", "POSTROUTING", "-j", &nat]);
            let _ = iptables(&["-t", "nat", "-F", &nat]);
            let _ = iptables(&["-t", "nat", "-X", &nat]);
        }
    }
}

/// Whether a network attachment record is left under `netns` (`<ns>/<id>.json`).
fn attached_records(netns: &Path) -> bool {
    std::fs::read_dir(netns)
        .into_iter()
        .flatten()
        .flatten()
        .any(|ns| std::fs::read_dir(ns.path()).into_iter().flatten().flatten().any(|f| f.file_name().to_string_lossy().ends_with(".json")))
}

/// Wait for a child with a bound; kill it past the bound. Its output is
/// read as it comes (a child writing more than a pipe holds is not stuck).
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    use std::io::Read;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_reader = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err_reader = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = err_reader.join().unwrap_or_default();
            panic!("command timed out after {timeout:?}: {}", String::from_utf8_lossy(&err));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: out_reader.join().unwrap_or_default(), stderr: err_reader.join().unwrap_or_default() }
}

/// A number `t` in 1..=250 such that no route of the host is in any of
/// `10.<p>.<t>.0/24` for the `p` of `prefixes`: subnets a test can make
/// networks on, whatever an earlier run or another program left.
pub fn free_subnet_tag(prefixes: &[u8]) -> u32 {
    let routes = Command::new("ip").args(["-4", "route", "show"]).output().map(|o| stdout(&o)).unwrap_or_default();
    let start = std::process::id() % 250;
    (0..250)
        .map(|i| (start + i) % 250 + 1)
        .find(|t| prefixes.iter().all(|p| !routes.lines().any(|r| r.starts_with(&format!("10.{p}.{t}.")))))
        .expect("a free 10.x.t.0/24 for the test's networks")
}

/// Where test roots live: on the real disk (overlayfs needs a non-overlay, non-tmpfs-limited fs).
pub fn test_tmp() -> PathBuf {
    let p = std::env::var_os("BERTH_TEST_TMP").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&p).unwrap();
    p
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Wait until `cond` holds, polling; fail naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Run an external command with a bound, capturing its output.
pub fn run_cmd(cmd: &mut Command, timeout: Duration) -> Output {
    let child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    wait_output(child, timeout)
}

/// Run an external command and require success.
pub fn run_ok(cmd: &mut Command) -> Output {
    let desc = format!("{cmd:?}");
    let out = run_cmd(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{desc} failed ({}): {}{}", out.status, stderr(&out), stdout(&out));
    out
}

/// Unpack a (test-made, trusted) tar archive into `dir`.
pub fn untar(data: &[u8], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    tar::Archive::new(data).unpack(dir).unwrap();
}

/// Rebuild an archive, passing each regular file through `f` (path, bytes):
/// `Some(bytes)` keeps it (possibly changed), `None` drops it. Other entries are copied.
pub fn rewrite_archive(data: &[u8], mut f: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
    use std::io::Read;
    let mut out = tar::Builder::new(Vec::new());
    let mut ar = tar::Archive::new(data);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut h = e.header().clone();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        if h.entry_type() != tar::EntryType::Regular {
            out.append(&h, &bytes[..]).unwrap();
            continue;
        }
        if let Some(bytes) = f(&path, bytes) {
            h.set_size(bytes.len() as u64);
            h.set_cksum();
            out.append(&h, &bytes[..]).unwrap();
        }
    }
    out.into_inner().unwrap()
}

/// Deterministic incompressible bytes (xorshift), fast even unoptimized.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every entry under `dir` (relative path → type, mode, size, content digest,
/// link target), for checking that a tree was not modified.
pub fn tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_owned();
            let what = if m.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_file() {
                format!("file {}", sha256(&std::fs::read(&p).unwrap()))
            } else {
                format!("special rdev={}", m.rdev())
            };
            out.insert(
                rel,
                format!("{what} mode={:o} uid={} gid={} size={}", m.mode(), m.uid(), m.gid(), if m.is_dir() { 0 } else { m.size() }),
            );
        }
    }
    out
}

/// A docker-registry process on a free loopback port; killed on drop.
pub struct Registry {
    pub child: Child,
    /// host:port, on loopback.
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    pub fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        Self::start_on("127.0.0.1", htpasswd, None)
    }

    /// On `ip`, optionally serving TLS with (certificate, key) files.
    pub fn start_on(ip: &str, htpasswd: Option<(&str, &str)>, tls: Option<(PathBuf, PathBuf)>) -> Registry {
        require_tool("docker-registry", "docker-registry");
        let dir = tempfile::Builder::new().prefix("registry-").tempdir_in(test_tmp()).unwrap();
        let port = std::net::TcpListener::bind(format!("{ip}:0")).unwrap().local_addr().unwrap().port();
        let addr = format!("{ip}:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, pass)) = htpasswd {
            let out = run_ok(Command::new("python3").args([
                "-c",
                "import crypt,sys; print(sys.argv[1] + ':' + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
                user,
                pass,
            ]));
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
            cfg.push_str(&format!("auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n", dir.path().join("htpasswd").display()));
        }
        if let Some((cert, key)) = tls {
            cfg = cfg.replace(
                &format!("  addr: {addr}\n"),
                &format!("  addr: {addr}\n  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()),
            );
        }
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .unwrap();
        let r = Registry { child, addr, dir };
        wait_until("the registry answers", Duration::from_secs(20), || std::net::TcpStream::connect(&r.addr).is_ok());
        r
    }

    /// The file that holds a blob in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

//! Archive formats end to end: what skopeo writes, compressed layers and
//! archives, standard input, and overlay whiteouts seen through a real mount.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Names of the images in `ns`, from `images --format json`.
fn image_names(d: &Daemon, ns: &str) -> Vec<String> {
    // One object per line, docker's fields; names as docker shows them, made whole again.
    let out = d.ok(&["--namespace", ns, "--format", "json", "images"]);
    let full = |familiar: &str| {
        let first = familiar.split('/').next().unwrap_or_default();
        if familiar.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
            familiar.to_owned()
        } else if familiar.contains('/') {
            format!("docker.io/{familiar}")
        } else {
            format!("docker.io/library/{familiar}")
        }
    };
    let mut names: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|i| full(&format!("{}:{}", i["Repository"].as_str().unwrap(), i["Tag"].as_str().unwrap())))
        .collect();
    names.sort();
    names
}

/// The only snapshot `fs` directory holding `rel`, failing if none or several do.
fn snapshot_with(d: &Daemon, snapshotter: &str, rel: &str) -> std::path::PathBuf {
    let hits: Vec<_> = d.snapshot_fs_dirs(snapshotter).into_iter().filter(|fs| exists(&fs.join(rel))).collect();
    assert_eq!(hits.len(), 1, "snapshots holding {rel}: {hits:?}");
    hits[0].clone()
}

/// A JSON file of a tar archive on disk.
fn json_member(archive: &Path, name: &str) -> serde_json::Value {
    for e in tar::Archive::new(std::fs::File::open(archive).unwrap()).entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            return serde_json::from_reader(&mut e).unwrap();
        }
    }
    panic!("{} has no {name}", archive.display());
}

fn skopeo(args: &[&str]) -> std::process::Output {
    require_tool("skopeo", "skopeo");
    // The policy decides which images may be copied; the test images are unsigned.
    run_ok(Command::new("skopeo").arg("--insecure-policy").args(args))
}

/// The OCI layout directory of a busybox image tagged `latest`.
fn busybox_layout(d: &Daemon) -> (std::path::PathBuf, String) {
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let dir = d.dir.path().join("layout");
    untar(&oci_archive(&[("docker.io/library/busybox:latest", &spec)]), &dir);
    let config = build(&spec).config.0;
    (dir, config)
}

#[test]
fn archives_written_by_skopeo_import_under_the_name_skopeo_gives_them() {
    let d = Daemon::start();
    let (layout, config) = busybox_layout(&d);
    let src = format!("oci:{}:latest", layout.display());

    // oci-archive: skopeo records the reference in org.opencontainers.image.ref.name.
    let oci_file = d.dir.path().join("skopeo-oci.tar");
    skopeo(&["copy", &src, &format!("oci-archive:{}:busybox:from-oci", oci_file.display())]);
    let index = json_member(&oci_file, "index.json");
    assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "busybox:from-oci", "{index}");
    let out = d.ok(&["load", "-i", oci_file.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: docker.io/library/busybox:from-oci");

    // docker-archive: skopeo writes the fully qualified name into RepoTags.
    let docker_file = d.dir.path().join("skopeo-docker.tar");
    skopeo(&["copy", &src, &format!("docker-archive:{}:busybox:from-docker", docker_file.display())]);
    let manifest = json_member(&docker_file, "manifest.json");
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["docker.io/library/busybox:from-docker"]), "{manifest}");
    let out = d.ok(&["load", "-i", docker_file.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: docker.io/library/busybox:from-docker");

    assert_eq!(image_names(&d, "default"), ["docker.io/library/busybox:from-docker", "docker.io/library/busybox:from-oci"]);
    // Same config either way, so one image id; and both are unpacked.
    assert_eq!(d.ok(&["images", "-q", "--no-trunc"]).trim(), config);
    for name in ["busybox:from-oci", "busybox:from-docker"] {
        let inspect = d.inspect("default", name);
        assert_eq!(inspect["Unpacked"], true, "{name}: {inspect}");
        assert_eq!(inspect["RootFS"]["Layers"][0].as_str().unwrap(), sha256(&busybox_layer()));
    }
    // The gzip layer (oci-archive) and the plain one skopeo writes into a
    // docker-archive have the same diff id: one snapshot serves both.
    assert_eq!(d.ok(&["snapshot", "ls", "-q"]).trim(), sha256(&busybox_layer()));
    let fs = snapshot_with(&d, "overlayfs", "bin/busybox");
    assert_eq!(std::fs::read(fs.join("bin/busybox")).unwrap(), busybox());
}

#[test]
fn an_archive_that_names_no_image_needs_a_name_and_imports_under_the_one_given() {
    let d = Daemon::start();
    let (layout, config) = busybox_layout(&d);
    // An oci-archive destination without a reference: the index carries no name.
    let file = d.dir.path().join("unnamed.tar");
    skopeo(&["copy", &format!("oci:{}:latest", layout.display()), &format!("oci-archive:{}", file.display())]);
    let index = json_member(&file, "index.json");
    assert!(index["manifests"][0].get("annotations").is_none(), "{index}");

    let out = d.ctl(&["load", "-i", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("give it a name with --name"), "{}", stderr(&out));
    assert_eq!(d.ok(&["images", "-q"]).trim(), "");

    let out = d.ok(&["image", "import", "--name", "example.com/named/busybox:v1", file.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: example.com/named/busybox:v1");
    let inspect = d.inspect("default", "example.com/named/busybox:v1");
    assert_eq!(inspect["Unpacked"], true);
    assert_eq!(inspect["Id"].as_str().unwrap(), config);
}

/// An image whose base layer is unique to `variant` (so that it is really
/// unpacked, not found already there), imported with layers compressed by `c`.
fn import_compressed(c: Compress, variant: &str) {
    let d = Daemon::start();
    let base = layer(&[
        Entry::Dir("bin".into(), 0o755),
        Entry::File("bin/busybox".into(), busybox(), 0o755),
        Entry::Symlink("bin/sh".into(), "busybox".into()),
        Entry::Dir("etc".into(), 0o755),
        Entry::File("etc/variant".into(), variant.as_bytes().to_vec(), 0o600),
    ]);
    let top = layer(&[Entry::Dir("srv".into(), 0o750), Entry::File("srv/data".into(), pseudo_random(300_000, 7), 0o640)]);
    let spec = ImageSpec { compression: c, ..ImageSpec::new(vec![base.clone(), top.clone()]) };
    let built = build(&spec);
    let path = d.file("image.tar", &oci_archive(&[("example.com/compress:v1", &spec)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);

    let inspect = d.inspect("default", "example.com/compress:v1");
    assert_eq!(inspect["Unpacked"], true, "{inspect}");
    let media: Vec<&str> = inspect["Layers"].as_array().unwrap().iter().map(|l| l["MediaType"].as_str().unwrap()).collect();
    assert_eq!(media, [built.layers[0].2.as_str(), built.layers[1].2.as_str()]);
    assert_eq!(inspect["RootFS"]["Layers"], serde_json::json!([sha256(&base), sha256(&top)]));
    assert_eq!(d.snapshot_dirs("overlayfs").len(), 2);

    use std::os::unix::fs::PermissionsExt;
    let fs = snapshot_with(&d, "overlayfs", "etc/variant");
    assert_eq!(std::fs::read(fs.join("etc/variant")).unwrap(), variant.as_bytes());
    assert_eq!(std::fs::metadata(fs.join("etc/variant")).unwrap().permissions().mode() & 0o7777, 0o600);
    assert_eq!(std::fs::read(fs.join("bin/busybox")).unwrap(), busybox());
    let fs = snapshot_with(&d, "overlayfs", "srv/data");
    assert_eq!(std::fs::read(fs.join("srv/data")).unwrap(), pseudo_random(300_000, 7));
    assert_eq!(std::fs::metadata(fs.join("srv")).unwrap().permissions().mode() & 0o7777, 0o750);
}

#[test]
fn an_image_with_gzip_layers_imports_and_unpacks() {
    import_compressed(Compress::Gzip, "gzip");
}

#[test]
fn an_image_with_zstd_layers_imports_and_unpacks() {
    import_compressed(Compress::Zstd, "zstd");
}

#[test]
fn an_image_with_uncompressed_layers_imports_and_unpacks() {
    import_compressed(Compress::None, "none");
}

fn two_layer_spec() -> ImageSpec {
    ImageSpec::new(vec![busybox_layer(), layer(&[Entry::File("hello.txt".into(), b"hello\n".to_vec(), 0o644)])])
}

#[test]
fn archives_compressed_as_a_whole_import_from_a_file_and_from_standard_input() {
    let d = Daemon::start();
    let spec = two_layer_spec();
    // `docker save | gzip`: a docker archive, compressed whole.
    let gz = compress(&docker_archive(&["example.com/whole:gzip"], &spec), Compress::Gzip);
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    let path = d.file("whole.tar.gz", &gz);
    assert_eq!(d.ok(&["load", "-i", path.to_str().unwrap()]).trim(), "Loaded image: example.com/whole:gzip");

    // An OCI archive compressed whole with zstd, piped into `load`.
    let zst = compress(&oci_archive(&[("example.com/whole:zstd", &spec)]), Compress::Zstd);
    let out = d.ctl_stdin(&["load"], Some(&zst));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "Loaded image: example.com/whole:zstd");

    // A plain archive on standard input of `image import -`.
    let plain = docker_archive(&["example.com/whole:stdin"], &spec);
    let out = d.ctl_stdin(&["image", "import", "-q", "-"], Some(&plain));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "example.com/whole:stdin");

    assert_eq!(image_names(&d, "default"), ["example.com/whole:gzip", "example.com/whole:stdin", "example.com/whole:zstd"]);
    for name in image_names(&d, "default") {
        assert_eq!(d.inspect("default", &name)["Unpacked"], true, "{name}");
    }
    // Same layers every time: two snapshots in all.
    assert_eq!(d.ok(&["snapshot", "ls", "-q"]).lines().count(), 2);
    let fs = snapshot_with(&d, "overlayfs", "hello.txt");
    assert_eq!(std::fs::read(fs.join("hello.txt")).unwrap(), b"hello\n");
}

/// Unmounts on drop, so that a failing test leaves no mount behind.
struct MountGuard<'a>(&'a Path);

fn is_mountpoint(p: &Path) -> bool {
    run_cmd(Command::new("mountpoint").arg("-q").arg(p), Duration::from_secs(10)).status.success()
}

impl Drop for MountGuard<'_> {
    fn drop(&mut self) {
        if is_mountpoint(self.0) {
            let _ = run_cmd(Command::new("umount").arg("-l").arg(self.0), Duration::from_secs(10));
        }
    }
}

#[test]
fn overlay_whiteouts_and_opaque_directories_hide_lower_files_in_a_mounted_snapshot() {
    use berth_api::v1;
    require_tool("mount", "mount");
    require_tool("mountpoint", "util-linux");
    let d = Daemon::start();
    assert!(d.ok(&["info"]).contains("overlayfs"), "this test needs the overlayfs snapshotter");
    let mut base = vec![
        Entry::Dir("bin".into(), 0o755),
        Entry::File("bin/busybox".into(), busybox(), 0o755),
        Entry::Symlink("bin/sh".into(), "busybox".into()),
        Entry::Dir("etc".into(), 0o755),
        Entry::File("etc/gone".into(), b"gone\n".to_vec(), 0o644),
        Entry::File("etc/kept".into(), b"kept\n".to_vec(), 0o644),
        Entry::Dir("data".into(), 0o755),
        Entry::File("data/old".into(), b"old\n".to_vec(), 0o644),
        Entry::Dir("data/sub".into(), 0o755),
        Entry::File("data/sub/deep".into(), b"deep\n".to_vec(), 0o644),
    ];
    base.push(Entry::Dir("tmp".into(), 0o1777));
    let top = vec![
        Entry::Dir("etc".into(), 0o755),
        Entry::File("etc/.wh.gone".into(), Vec::new(), 0o644),
        Entry::Dir("data".into(), 0o755),
        Entry::File("data/.wh..wh..opq".into(), Vec::new(), 0o644),
        Entry::File("data/new".into(), b"new\n".to_vec(), 0o644),
    ];
    let spec = ImageSpec::new(vec![layer(&base), layer(&top)]);
    let path = d.file("wh.tar", &oci_archive(&[("example.com/whiteouts:v1", &spec)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    let inspect = d.inspect("default", "example.com/whiteouts:v1");
    assert_eq!(inspect["Unpacked"], true);
    let top_chain = inspect["ChainIDs"][1].as_str().unwrap().to_owned();

    let committed: Vec<_> = d.snapshot_fs_dirs("overlayfs");
    assert_eq!(committed.len(), 2);
    let before: Vec<_> = committed.iter().map(|p| tree(p)).collect();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ns = berth_api::NamespaceInterceptor::new("default").unwrap();
    let mut client = rt.block_on(async { v1::snapshots_client::SnapshotsClient::with_interceptor(d.channel().await, ns) });
    let mounts = rt
        .block_on(client.prepare(v1::PrepareSnapshotRequest {
            key: "whiteout-check".into(),
            parent: top_chain.clone(),
            labels: Default::default(),
        }))
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].r#type, "overlay", "{mounts:?}");
    let upper = mounts[0].options.iter().find_map(|o| o.strip_prefix("upperdir=")).expect("an upperdir option").to_owned();

    let target = d.dir.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    {
        run_ok(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &mounts[0].options.join(",")]).arg(&target));
        let _guard = MountGuard(&target);
        assert!(!exists(&target.join("etc/gone")), "a whiteout hides etc/gone");
        assert_eq!(std::fs::read(target.join("etc/kept")).unwrap(), b"kept\n");
        assert!(!exists(&target.join("data/old")), "an opaque dir hides data/old");
        assert!(!exists(&target.join("data/sub")), "an opaque dir hides data/sub");
        assert_eq!(std::fs::read(target.join("data/new")).unwrap(), b"new\n");
        assert_eq!(std::fs::read(target.join("bin/busybox")).unwrap(), busybox());
        let names: Vec<_> = std::fs::read_dir(target.join("data")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["new"], "no whiteout markers are visible");
        std::fs::write(target.join("etc/written"), b"by the test\n").unwrap();
        std::fs::remove_file(target.join("etc/kept")).unwrap();
        run_ok(Command::new("umount").arg(&target));
        assert!(!is_mountpoint(&target));
    }

    // The writes went to the active snapshot; the committed layers are as they were.
    assert_eq!(std::fs::read(Path::new(&upper).join("etc/written")).unwrap(), b"by the test\n");
    let after: Vec<_> = committed.iter().map(|p| tree(p)).collect();
    assert_eq!(before, after, "committed layer dirs were modified");

    rt.block_on(client.remove(v1::RemoveSnapshotRequest { key: "whiteout-check".into() })).unwrap();
    assert_eq!(d.snapshot_dirs("overlayfs").len(), 2);
    assert!(!exists(Path::new(&upper)));
    let after: Vec<_> = committed.iter().map(|p| tree(p)).collect();
    assert_eq!(before, after);
}

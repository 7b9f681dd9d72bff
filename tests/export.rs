//! Image export (`berthctl image export`, `save`): the archive is an OCI
//! layout with docker's manifest.json, read by skopeo, umoci, docker's
//! format alone, and a fresh berthd, with the digests it had.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_api::v1;
use common::*;

const BUSYBOX_NAME: &str = "docker.io/library/busybox:latest";

/// Import images built from `images` (name, spec) into `d`.
fn import(d: &Daemon, images: &[(&str, &ImageSpec)]) {
    let path = d.file("import.tar", &oci_archive(images));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
}

/// `berthctl image export -o FILE NAMES...` into the test dir; returns the file.
fn export(d: &Daemon, file: &str, names: &[&str]) -> PathBuf {
    let path = d.dir.path().join(file);
    let mut args = vec!["image", "export", "-o", path.to_str().unwrap()];
    args.extend(names);
    d.ok(&args);
    path
}

/// Run berthctl, reading its output while it runs (an archive is larger
/// than a pipe holds; `Daemon::ctl` reads only after the exit).
fn ctl_output(d: &Daemon, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berthctl"));
    cmd.args(args).env("BERTH_ADDRESS", &d.socket).env_remove("BERTH_NAMESPACE").stdin(std::process::Stdio::null());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(cmd.output().expect("starting berthctl")));
    rx.recv_timeout(Duration::from_secs(120)).expect("berthctl finished within 120s")
}

/// Every entry of a tar archive, in order: (path, bytes; empty for directories).
fn members(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut out = Vec::new();
    for e in tar::Archive::new(data).entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        out.push((path, bytes));
    }
    out
}

fn member_json(data: &[u8], name: &str) -> serde_json::Value {
    let m = members(data);
    let (_, bytes) = m.iter().find(|(p, _)| p == name).unwrap_or_else(|| panic!("the archive has no {name}"));
    serde_json::from_slice(bytes).unwrap()
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", &digest[7..])
}

fn skopeo(args: &[&str]) -> std::process::Output {
    require_tool("skopeo", "skopeo");
    run_ok(Command::new("skopeo").arg("--insecure-policy").args(args))
}

/// `umoci unpack` of `layout:tag` into `bundle`; returns the rootfs.
fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    require_tool("umoci", "umoci");
    run_ok(Command::new("umoci").args(["unpack", "--image", &format!("{}:{tag}", layout.display())]).arg(bundle));
    bundle.join("rootfs")
}

/// An image with the busybox base and a top layer of its own.
fn app_spec(file: &str) -> ImageSpec {
    let top = layer(&[Entry::Dir("srv".into(), 0o755), Entry::File(format!("srv/{file}"), file.as_bytes().to_vec(), 0o644)]);
    ImageSpec::new(vec![busybox_layer(), top])
}

#[test]
fn skopeo_and_umoci_read_an_export_with_the_digests_berth_has() {
    let d = Daemon::start();
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let built = build(&spec);
    import(&d, &[(BUSYBOX_NAME, &spec)]);
    let archive = export(&d, "busybox.tar", &["busybox"]);
    let inspect = d.inspect("default", "busybox");
    assert_eq!(inspect["Digest"], built.manifest.0.as_str());

    // skopeo finds the image by its tag (org.opencontainers.image.ref.name).
    let src = format!("oci-archive:{}:latest", archive.display());
    let raw = skopeo(&["inspect", "--raw", &src]).stdout;
    assert_eq!(sha256(&raw), built.manifest.0);
    let info: serde_json::Value = serde_json::from_slice(&skopeo(&["inspect", &src]).stdout).unwrap();
    assert_eq!(info["Digest"], built.manifest.0.as_str(), "{info}");
    assert_eq!(info["Layers"], serde_json::json!([built.layers[0].0]), "{info}");

    // skopeo copies it into an OCI layout without changing a digest; umoci unpacks that.
    let layout = d.dir.path().join("copied");
    skopeo(&["copy", &src, &format!("oci:{}:busybox", layout.display())]);
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], built.manifest.0.as_str(), "{index}");
    let rootfs = umoci_unpack(&layout, "busybox", &d.dir.path().join("bundle-copied"));
    assert_eq!(std::fs::read(rootfs.join("bin/busybox")).unwrap(), busybox());

    // The archive itself, extracted, is an OCI layout umoci reads.
    let extracted = d.dir.path().join("extracted");
    untar(&std::fs::read(&archive).unwrap(), &extracted);
    let rootfs = umoci_unpack(&extracted, "latest", &d.dir.path().join("bundle-extracted"));
    assert_eq!(std::fs::read(rootfs.join("bin/busybox")).unwrap(), busybox());
    assert_eq!(std::fs::read_link(rootfs.join("bin/sh")).unwrap(), Path::new("busybox"));
}

#[test]
fn an_export_imports_into_a_fresh_agent_as_the_same_image() {
    let d = Daemon::start();
    let spec = app_spec("fresh");
    import(&d, &[("example.com/app:v1", &spec)]);
    let archive = export(&d, "app.tar", &["example.com/app:v1"]);
    let before = d.inspect("default", "example.com/app:v1");

    // The same images give the same bytes, to a file or to standard output (`save`).
    let out = ctl_output(&d, &["save", "example.com/app:v1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&archive).unwrap();
    assert!(out.stdout == bytes, "save to standard output differs from export -o ({} and {} bytes)", out.stdout.len(), bytes.len());

    for (how, fresh) in [("file", Daemon::start()), ("stdin", Daemon::start())] {
        let loaded = match how {
            "file" => fresh.ok(&["load", "-i", archive.to_str().unwrap()]),
            _ => {
                let out = fresh.ctl_stdin(&["load"], Some(&out.stdout));
                assert!(out.status.success(), "{}", stderr(&out));
                stdout(&out)
            }
        };
        assert_eq!(loaded.trim(), "Loaded image: example.com/app:v1");
        let after = fresh.inspect("default", "example.com/app:v1");
        for field in ["id", "digest", "media_type", "manifest", "layers", "diff_ids", "chain_ids", "size"] {
            assert_eq!(after[field], before[field], "{field} differs after a round trip through an export ({how})");
        }
        assert_eq!(after["Unpacked"], true);
    }
}

#[test]
fn docker_manifest_json_names_the_config_and_layers_and_loads_on_its_own() {
    let d = Daemon::start();
    let spec = app_spec("docker");
    let built = build(&spec);
    import(&d, &[(BUSYBOX_NAME, &spec)]);
    let bytes = std::fs::read(export(&d, "busybox.tar", &["busybox"])).unwrap();

    let paths: Vec<String> = members(&bytes).into_iter().map(|(p, _)| p).collect();
    let manifest = member_json(&bytes, "manifest.json");
    let expected_layers: Vec<String> = built.layers.iter().map(|(d, _, _)| blob_path(d)).collect();
    assert_eq!(
        manifest,
        serde_json::json!([{"Config": blob_path(&built.config.0), "RepoTags": ["busybox:latest"], "Layers": expected_layers}])
    );
    for p in std::iter::once(blob_path(&built.config.0)).chain(expected_layers) {
        assert!(paths.contains(&p), "manifest.json names {p}, which the archive lacks: {paths:?}");
    }
    // The OCI part: the layout marker, and the index naming the image as containerd does.
    assert!(paths.contains(&"oci-layout".to_owned()));
    let index = member_json(&bytes, "index.json");
    assert_eq!(index["manifests"][0]["digest"], built.manifest.0.as_str());
    assert_eq!(index["manifests"][0]["annotations"]["io.containerd.image.name"], BUSYBOX_NAME);
    assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "latest");

    // Only docker's entries: what `docker load` reads.
    let docker_only = rewrite_archive(&bytes, |path, b| (path != "index.json" && path != "oci-layout").then_some(b));
    assert!(!members(&docker_only).iter().any(|(p, _)| p == "index.json" || p == "oci-layout"));
    let fresh = Daemon::start();
    let path = fresh.file("docker-only.tar", &docker_only);
    assert_eq!(fresh.ok(&["load", "-i", path.to_str().unwrap()]).trim(), format!("Loaded image: {BUSYBOX_NAME}"));
    let inspect = fresh.inspect("default", "busybox");
    assert_eq!(inspect["Id"], built.config.0.as_str());
    assert_eq!(inspect["RootFS"]["Layers"], serde_json::json!(built.diff_ids));
    assert_eq!(inspect["Unpacked"], true);
}

#[test]
fn two_images_export_together_and_a_layer_they_share_is_stored_once() {
    let d = Daemon::start();
    let (one, two) = (app_spec("one"), app_spec("two"));
    let (b1, b2) = (build(&one), build(&two));
    assert_eq!(b1.layers[0].0, b2.layers[0].0, "the images share their base layer");
    import(&d, &[("example.com/app/one:v1", &one), ("example.com/app/two:v2", &two)]);
    let archive = export(&d, "both.tar", &["example.com/app/one:v1", "example.com/app/two:v2"]);
    let bytes = std::fs::read(&archive).unwrap();

    let blobs: Vec<String> =
        members(&bytes).into_iter().map(|(p, _)| p).filter(|p| p.starts_with("blobs/sha256/") && p.len() > 13).collect();
    // Two manifests, two configs, the shared base layer and two top layers.
    assert_eq!(blobs.len(), 7, "{blobs:?}");
    assert_eq!(blobs.iter().filter(|p| **p == blob_path(&b1.layers[0].0)).count(), 1, "{blobs:?}");

    let index = member_json(&bytes, "index.json");
    let names: Vec<&str> =
        index["manifests"].as_array().unwrap().iter().map(|m| m["annotations"]["io.containerd.image.name"].as_str().unwrap()).collect();
    assert_eq!(names, ["example.com/app/one:v1", "example.com/app/two:v2"]);
    let tags: Vec<serde_json::Value> =
        member_json(&bytes, "manifest.json").as_array().unwrap().iter().map(|e| e["RepoTags"].clone()).collect();
    assert_eq!(tags, [serde_json::json!(["example.com/app/one:v1"]), serde_json::json!(["example.com/app/two:v2"])]);

    // skopeo tells them apart by tag.
    for (tag, built) in [("v1", &b1), ("v2", &b2)] {
        let raw = skopeo(&["inspect", "--raw", &format!("oci-archive:{}:{tag}", archive.display())]).stdout;
        assert_eq!(sha256(&raw), built.manifest.0, "{tag}");
    }

    let fresh = Daemon::start();
    let out = fresh.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["Loaded image: example.com/app/one:v1", "Loaded image: example.com/app/two:v2"]);
    for (name, built) in [("example.com/app/one:v1", &b1), ("example.com/app/two:v2", &b2)] {
        let inspect = fresh.inspect("default", name);
        assert_eq!(inspect["Id"], built.config.0.as_str(), "{name}");
        assert_eq!(inspect["Digest"], built.manifest.0.as_str(), "{name}");
    }
    // The shared layer is one snapshot under both images.
    assert_eq!(fresh.ok(&["snapshot", "ls", "-q"]).lines().count(), 3);
}

#[test]
fn an_id_exports_every_name_of_its_image() {
    let d = Daemon::start();
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let built = build(&spec);
    import(&d, &[(BUSYBOX_NAME, &spec)]);
    d.ok(&["tag", "busybox", "example.com/tools/busybox:v1"]);
    let bytes = std::fs::read(export(&d, "by-id.tar", &[&built.config.0[7..19]])).unwrap();

    let index = member_json(&bytes, "index.json");
    let mut names: Vec<&str> =
        index["manifests"].as_array().unwrap().iter().map(|m| m["annotations"]["io.containerd.image.name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, [BUSYBOX_NAME, "example.com/tools/busybox:v1"]);
    // One image for docker, under both names.
    let manifest = member_json(&bytes, "manifest.json");
    assert_eq!(manifest.as_array().unwrap().len(), 1, "{manifest}");
    let mut tags: Vec<&str> = manifest[0]["RepoTags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    tags.sort();
    assert_eq!(tags, ["busybox:latest", "example.com/tools/busybox:v1"]);
}

#[test]
fn an_unknown_image_fails_the_export_and_leaves_no_file() {
    let d = Daemon::start();
    import(&d, &[(BUSYBOX_NAME, &ImageSpec::new(vec![busybox_layer()]))]);
    let dir = d.dir.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("images.tar");

    let out = d.ctl(&["image", "export", "-o", file.to_str().unwrap(), "busybox", "nosuch:v9"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nosuch:v9") && err.contains("not found"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "files left behind: {left:?}");

    // To standard output: nothing is written.
    let out = ctl_output(&d, &["save", "nosuch:v9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{} bytes written", out.stdout.len());

    // A file already there stays as it was.
    std::fs::write(&file, b"keep").unwrap();
    let out = d.ctl(&["save", "-o", file.to_str().unwrap(), "nosuch:v9"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

/// Call Export through the API: the status of the call, or the archive.
async fn grpc_export(d: &Daemon, names: &[&str]) -> Result<tonic::Streaming<v1::ExportImagesResponse>, tonic::Status> {
    let ns = berth_api::NamespaceInterceptor::new("default").unwrap();
    let mut client = v1::images_client::ImagesClient::with_interceptor(d.channel().await, ns);
    let req = v1::ExportImagesRequest { names: names.iter().map(|s| s.to_string()).collect(), platform: String::new() };
    Ok(client.export(req).await?.into_inner())
}

#[test]
fn the_api_refuses_an_export_of_nothing_or_of_an_unknown_name_before_any_byte() {
    let d = Daemon::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let e = grpc_export(&d, &[]).await.expect_err("an export of no image is refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        let e = grpc_export(&d, &["nosuch"]).await.expect_err("an unknown image is refused");
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        let e = grpc_export(&d, &["Not A Name"]).await.expect_err("a bad reference is refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    });
}

#[test]
fn an_image_removed_during_its_export_is_exported_whole_and_collected_after() {
    let d = Daemon::start();
    // Two large layers: when the image is removed, the export is still in the first.
    let big = |seed| layer(&[Entry::File(format!("data{seed}"), pseudo_random(12 << 20, seed), 0o644)]);
    let spec = ImageSpec { compression: Compress::None, ..ImageSpec::new(vec![big(1), big(2)]) };
    let built = build(&spec);
    import(&d, &[("example.com/big:v1", &spec)]);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let archive = rt.block_on(async {
        let mut stream = grpc_export(&d, &["example.com/big:v1"]).await.unwrap();
        let mut archive = stream.message().await.unwrap().expect("a first chunk").data;
        // The client reads no more for now: the agent waits. Meanwhile the image goes.
        d.ok(&["rmi", "example.com/big:v1"]);
        assert_eq!(d.ok(&["images", "-q"]).trim(), "");
        assert!(d.blobs().contains(&built.layers[1].0[7..].to_owned()), "the export's blobs are kept while it runs");
        while let Some(m) = tokio::time::timeout(Duration::from_secs(60), stream.message()).await.expect("the export goes on").unwrap() {
            archive.extend_from_slice(&m.data);
        }
        archive
    });
    // Collected once the export is over.
    wait_until("the removed image's blobs are collected", Duration::from_secs(30), || d.blobs().is_empty());

    let fresh = Daemon::start();
    let path = fresh.file("big.tar", &archive);
    fresh.ok(&["load", "-i", path.to_str().unwrap()]);
    assert_eq!(fresh.inspect("default", "example.com/big:v1")["Digest"], built.manifest.0.as_str());
}

#[test]
fn an_index_is_exported_as_stored_with_the_manifests_present() {
    let d = Daemon::start();
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let amd = build(&spec);
    let arm = build_edited(&spec, |c| c["architecture"] = "arm64".into(), |_| {});
    let absent = sha256(b"a manifest this machine never had");
    let entry = |digest: &str, size: usize, arch: &str| {
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
            "platform": {"os": "linux", "architecture": arch}})
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&amd.manifest.0, amd.manifest.1.len(), "amd64"), entry(&arm.manifest.0, arm.manifest.1.len(), "arm64"), entry(&absent, 500, "s390x")],
    }))
    .unwrap();
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": sha256(&index), "size": index.len(), "annotations": {"io.containerd.image.name": "example.com/multi:v1"}}]});
    let blobs: Vec<&[u8]> = vec![&index, &amd.manifest.1, &amd.config.1, &arm.manifest.1, &arm.config.1, &amd.layers[0].1];
    let path = d.file("multi.tar", &layout_archive(&blobs, &serde_json::to_vec(&top).unwrap()));
    d.ok(&["load", "-i", path.to_str().unwrap()]);

    // The index as stored, with every manifest present and nothing of the absent one.
    let archive = export(&d, "multi-out.tar", &["example.com/multi:v1"]);
    let bytes = std::fs::read(&archive).unwrap();
    let paths: Vec<String> = members(&bytes).into_iter().map(|(p, _)| p).collect();
    let expected: Vec<String> = [
        sha256(&index),
        amd.manifest.0.clone(),
        amd.config.0.clone(),
        amd.layers[0].0.clone(),
        arm.manifest.0.clone(),
        arm.config.0.clone(),
    ]
    .iter()
    .map(|d| blob_path(d))
    .collect();
    let got: Vec<String> = paths.iter().filter(|p| p.starts_with("blobs/sha256/") && p.len() > 13).cloned().collect();
    assert_eq!(got, expected);
    assert_eq!(member_json(&bytes, "index.json")["manifests"][0]["digest"], sha256(&index));
    // Docker's part lists this machine's manifest; --platform picks another.
    assert_eq!(member_json(&bytes, "manifest.json")[0]["Config"], blob_path(&amd.config.0));
    let arm_archive = d.dir.path().join("arm.tar");
    d.ok(&["save", "--platform", "linux/arm64", "-o", arm_archive.to_str().unwrap(), "example.com/multi:v1"]);
    assert_eq!(member_json(&std::fs::read(&arm_archive).unwrap(), "manifest.json")[0]["Config"], blob_path(&arm.config.0));
    let out = d.ctl(&["save", "--platform", "linux/s390x", "-o", d.dir.path().join("s390x.tar").to_str().unwrap(), "example.com/multi:v1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&absent), "{}", stderr(&out));
    assert!(!d.dir.path().join("s390x.tar").exists());

    // skopeo reads the index and copies this machine's image out of it.
    let src = format!("oci-archive:{}:v1", archive.display());
    assert_eq!(skopeo(&["inspect", "--raw", &src]).stdout, index);
    let layout = d.dir.path().join("copied");
    skopeo(&["copy", &src, &format!("oci:{}:multi", layout.display())]);
    let copied: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(copied["manifests"][0]["digest"], amd.manifest.0.as_str(), "{copied}");

    // And a fresh agent imports it as the same image.
    let fresh = Daemon::start();
    fresh.ok(&["load", "-i", archive.to_str().unwrap()]);
    let inspect = fresh.inspect("default", "example.com/multi:v1");
    assert_eq!(inspect["Digest"], sha256(&index));
    assert_eq!(inspect["Id"], amd.config.0.as_str());
}

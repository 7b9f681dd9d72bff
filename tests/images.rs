//! Images end to end: a real berthd, driven through berthctl.

mod common;

use common::*;

fn two_images() -> (ImageSpec, ImageSpec) {
    let base = busybox_layer();
    let a = ImageSpec::new(vec![base.clone()]);
    let b = ImageSpec::new(vec![base, layer(&[Entry::File("hello.txt".into(), b"hello\n".to_vec(), 0o644)])]);
    (a, b)
}

#[test]
fn an_imported_oci_archive_is_listed_inspected_and_unpacked() {
    let d = Daemon::start();
    let (a, _) = two_images();
    let path = d.file("busybox.tar", &oci_archive(&[("docker.io/library/busybox:latest", &a)]));
    let out = d.ok(&["image", "import", path.to_str().unwrap()]);
    assert!(out.contains("Loaded image: docker.io/library/busybox:latest"), "{out}");
    let ls = d.ok(&["images"]);
    assert!(ls.contains("busybox") && ls.contains("latest"), "{ls}");
    let all: serde_json::Value = serde_json::from_str(&d.ok(&["image", "inspect", "busybox"])).unwrap();
    let inspect = &all[0];
    assert_eq!(inspect["Unpacked"], true);
    assert_eq!(inspect["RepoTags"], serde_json::json!(["busybox:latest"]));
    // The docker shape, through a template too.
    assert_eq!(d.ok(&["image", "inspect", "-f", "{{.Os}}/{{.Architecture}} {{len .RootFS.Layers}}", "busybox"]), "linux/amd64 1\n");
    let diff = inspect["RootFS"]["Layers"][0].as_str().unwrap().to_owned();
    assert_eq!(diff, sha256(&busybox_layer()));
    // The layer is a committed snapshot keyed by its chain id (= diff id for the first layer).
    let snaps = d.ok(&["snapshot", "ls"]);
    assert!(snaps.contains(&diff) && snaps.contains("committed"), "{snaps}");
    // Its files are on disk with their modes.
    let dirs = d.snapshot_dirs("overlayfs");
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let bb = d.root.join("snapshots/overlayfs").join(&dirs[0]).join("fs/bin/busybox");
    assert_eq!(std::fs::read(&bb).unwrap(), busybox());
}

#[test]
fn a_second_image_sharing_the_base_layer_shares_its_snapshot_and_removal_collects_only_unused_data() {
    let d = Daemon::start();
    let (a, b) = two_images();
    let pa = d.file("a.tar", &oci_archive(&[("busybox:latest", &a)]));
    let pb = d.file("b.tar", &docker_archive(&["example.com/hello:v1"], &b));
    d.ok(&["load", "-i", pa.to_str().unwrap()]);
    d.ok(&["load", "-i", pb.to_str().unwrap()]);
    let base = sha256(&busybox_layer());
    let snaps = d.ok(&["snapshot", "ls", "-q"]);
    assert_eq!(snaps.lines().filter(|l| *l == base).count(), 1, "{snaps}");
    assert_eq!(snaps.lines().count(), 2, "{snaps}");
    assert_eq!(d.snapshot_dirs("overlayfs").len(), 2);

    // Removing the first image keeps the shared base (used by the second).
    d.ok(&["rmi", "busybox"]);
    let snaps = d.ok(&["snapshot", "ls", "-q"]);
    assert_eq!(snaps.lines().count(), 2, "{snaps}");
    // Removing the second collects everything.
    let blobs_before = d.blobs().len();
    assert!(blobs_before >= 4);
    d.ok(&["rmi", "example.com/hello:v1"]);
    assert_eq!(d.ok(&["snapshot", "ls", "-q"]).trim(), "");
    assert!(d.snapshot_dirs("overlayfs").is_empty());
    assert!(d.blobs().is_empty(), "{:?}", d.blobs());
}

#[test]
fn tag_gives_another_name_and_errors_are_one_clear_line() {
    let d = Daemon::start();
    let (a, _) = two_images();
    let p = d.file("a.tar", &oci_archive(&[("busybox:latest", &a)]));
    d.ok(&["load", "-i", p.to_str().unwrap()]);
    d.ok(&["tag", "busybox", "localhost:5000/x/y:tag"]);
    let ls = d.ok(&["images"]);
    assert!(ls.contains("localhost:5000/x/y") && ls.contains("tag"), "{ls}");
    // Same id for both names.
    let ids = d.ok(&["images", "-q"]);
    assert_eq!(ids.lines().count(), 1, "{ids}");

    // Tagging onto a taken name moves it, as docker does; removing by id then
    // needs --force because two names point at the image.
    d.ok(&["tag", "busybox", "localhost:5000/x/y:tag"]);
    let id = d.ok(&["images", "-q"]).trim().to_owned();
    let out = d.ctl(&["rmi", &id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("referenced by 2 names"), "{}", stderr(&out));
    d.ok(&["rmi", "-f", &id]);
    assert_eq!(d.ok(&["images", "-q"]).trim(), "");
    let p = d.file("a.tar", &oci_archive(&[("busybox:latest", &a)]));
    d.ok(&["load", "-i", p.to_str().unwrap()]);
    let out = d.ctl(&["image", "inspect", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not found"), "{err}");
    let out = d.ctl(&["tag", "busybox", "Bad Name"]);
    assert!(stderr(&out).contains("invalid image reference"), "{}", stderr(&out));
}

#[test]
fn blobs_that_only_look_like_layers_leave_no_snapshot_behind() {
    let d = Daemon::start();
    let (a, _) = two_images();
    // Two stray blobs the index never names: a gzip'd tar and a plain tar.
    let stray_tar = layer(&[Entry::File("stray".into(), b"x".to_vec(), 0o644)]);
    let stray_gz = compress(&layer(&[Entry::File("other".into(), vec![1; 4096], 0o644)]), Compress::Gzip);
    let archive = with_strays(&oci_archive(&[("busybox:latest", &a)]), &[&stray_tar, &stray_gz]);
    let p = d.file("strays.tar", &archive);
    d.ok(&["load", "-i", p.to_str().unwrap()]);
    let keys = d.ok(&["snapshot", "ls", "-q"]);
    assert_eq!(keys.trim(), sha256(&busybox_layer()), "only the image's layer stays: {keys}");
    assert_eq!(d.snapshot_dirs("overlayfs").len(), 1, "{:?}", d.snapshot_dirs("overlayfs"));
    // The strays are unreferenced blobs: the import collected them.
    assert!(!d.blobs().contains(&sha256(&stray_tar)[7..].to_string()), "{:?}", d.blobs());
    assert!(!d.blobs().contains(&sha256(&stray_gz)[7..].to_string()), "{:?}", d.blobs());
    d.ok(&["rmi", "busybox"]);
    assert!(d.blobs().is_empty(), "{:?}", d.blobs());
}

/// `archive` with extra blobs put before its own entries.
fn with_strays(archive: &[u8], strays: &[&Vec<u8>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for data in strays {
        add_file(&mut builder, &format!("blobs/sha256/{}", &sha256(data)[7..]), data);
    }
    let mut ar = tar::Archive::new(archive);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let path = e.path().unwrap().into_owned();
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut buf).unwrap();
        builder.append_data(&mut h, path, &buf[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn a_layer_is_checked_against_its_own_blob_even_when_another_blob_has_its_diff_id() {
    let d = Daemon::start();
    let wanted = layer(&[Entry::File("a".into(), b"one".to_vec(), 0o644)]);
    let shipped = layer(&[Entry::File("a".into(), b"two".to_vec(), 0o644)]);
    // The config claims the diff id of `wanted`, the manifest's layer is `shipped`,
    // and a stray blob in the archive really is `wanted`.
    let built = build_edited(&ImageSpec::new(vec![shipped]), |c| c["rootfs"]["diff_ids"][0] = sha256(&wanted).into(), |_| {});
    let stray = compress(&wanted, Compress::Gzip);
    let p = d.file("mixed.tar", &with_strays(&oci_archive_built(&[("example.com/mixed:v1", &built)]), &[&stray]));
    let out = d.ctl(&["load", "-i", p.to_str().unwrap()]);
    assert!(!out.status.success(), "an image whose layer does not match its diff id was imported");
    assert!(stderr(&out).contains("does not match the diff id"), "{}", stderr(&out));
    d.assert_nothing_left("default");
}

#[test]
fn an_index_with_an_attestation_manifest_imports_and_is_collected_whole() {
    let mut d = Daemon::start();
    let image = build(&ImageSpec::new(vec![busybox_layer()]));
    // An in-toto attestation, as buildx writes them: a manifest whose layer type Berth does not unpack.
    let statement = br#"{"_type":"https://in-toto.io/Statement/v0.1"}"#.to_vec();
    let att_config = b"{}".to_vec();
    let att_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&att_config), "size": att_config.len()},
        "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": sha256(&statement), "size": statement.len()}],
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image.manifest.0, "size": image.manifest.1.len(),
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&att_manifest), "size": att_manifest.len(),
         "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": image.manifest.0}},
    ]}))
    .unwrap();
    let top = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha256(&index), "size": index.len(),
        "annotations": {"io.containerd.image.name": "docker.io/library/attested:latest"}}]}))
    .unwrap();
    let mut blobs: Vec<&[u8]> = vec![&image.config.1, &image.manifest.1, &statement, &att_config, &att_manifest, &index];
    blobs.extend(image.layers.iter().map(|(_, b, _)| b.as_slice()));
    let archive = layout_archive(&blobs, &top);
    let p = d.file("attested.tar", &archive);
    d.ok(&["load", "-i", p.to_str().unwrap()]);
    assert_eq!(d.inspect("default", "attested")["Unpacked"], true);
    // Every blob of the index is kept (the attestation too) ...
    assert!(d.blobs().contains(&sha256(&statement)[7..].to_string()), "{:?}", d.blobs());
    // ... the agent restarts cleanly, and removing the image collects all of it.
    d.kill9();
    d.spawn();
    assert!(d.blobs().contains(&sha256(&statement)[7..].to_string()), "{:?}", d.blobs());
    d.ok(&["rmi", "attested"]);
    assert!(d.blobs().is_empty(), "{:?}", d.blobs());
    assert_eq!(d.ok(&["snapshot", "ls", "-q"]).trim(), "");
}

#[test]
fn an_oci_layout_that_names_an_image_by_one_word_loads_it_as_docker_does() {
    let d = Daemon::start();
    let built = build(&ImageSpec::new(vec![busybox_layer()]));
    // Rewrite index.json so that the only name is the bare tag "v1", as umoci writes it.
    let archive = rewrite_archive(&oci_archive_built(&[("example.com/ignored:x", &built)]), |path, data| {
        if path != "index.json" {
            return Some(data);
        }
        let mut index: serde_json::Value = serde_json::from_slice(&data).unwrap();
        index["manifests"][0]["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "v1"});
        Some(serde_json::to_vec(&index).unwrap())
    });
    let p = d.file("tag-only.tar", &archive);
    // Without --base-name the word is the name (docker.io/library/v1:latest), as docker and podman load it.
    let out = d.ok(&["load", "-i", p.to_str().unwrap()]);
    assert!(out.contains("docker.io/library/v1:latest"), "{out}");
    assert_eq!(d.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]), "v1:latest\n");
    d.ok(&["image", "import", "--base-name", "example.com/app", p.to_str().unwrap()]);
    assert!(d.ok(&["images"]).contains("example.com/app"), "{}", d.ok(&["images"]));
    d.ok(&["image", "import", "--name", "other:2", p.to_str().unwrap()]);
    assert!(d.ok(&["images"]).contains("other"));
}

/// A layer of one small file, `/l/<i>`.
fn tiny_layer(i: usize) -> Vec<u8> {
    layer(&[Entry::Dir("l".into(), 0o755), Entry::File(format!("l/{i}"), format!("{i}\n").into_bytes(), 0o644)])
}

#[test]
fn an_image_of_more_layers_than_a_container_can_stack_is_refused_at_import() {
    require_tool("runc", "runc");
    let d = Daemon::start();
    // busybox and 499 more layers: the most a container stacks. It runs, and sees the top layer.
    let mut layers = vec![busybox_layer()];
    layers.extend((1..500).map(tiny_layer));
    let mut deepest = ImageSpec::new(layers.clone());
    deepest.cmd = vec!["/bin/busybox".into(), "cat".into(), "/l/499".into()];
    let path = d.file("deep.tar", &oci_archive(&[("deep:500", &deepest)]));
    d.ok(&["image", "import", path.to_str().unwrap()]);
    let out = d.ctl(&["run", "--rm", "deep:500"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "499\n"), "{}", stderr(&out));
    // One more layer: refused when it comes in, not when it is run.
    layers.push(tiny_layer(500));
    let too_deep = ImageSpec::new(layers);
    let path = d.file("too-deep.tar", &oci_archive(&[("deep:501", &too_deep)]));
    let out = d.ctl(&["image", "import", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("at most 500"), "{}", stderr(&out));
    assert_eq!(d.ok(&["images", "-q"]).lines().count(), 1, "{}", d.ok(&["images"]));
    d.assert_healthy();
}

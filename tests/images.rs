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
    let inspect: serde_json::Value = serde_json::from_str(&d.ok(&["image", "inspect", "busybox"])).unwrap();
    assert_eq!(inspect["unpacked"], true);
    let diff = inspect["diff_ids"][0].as_str().unwrap().to_owned();
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
    let archive = oci_archive(&[("busybox:latest", &a)]);
    let mut builder = tar::Builder::new(Vec::new());
    for data in [&stray_tar, &stray_gz] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut h, format!("blobs/sha256/{}", &sha256(data)[7..]), &data[..]).unwrap();
    }
    // Put the strays first, then the real archive's entries.
    let mut ar = tar::Archive::new(&archive[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let path = e.path().unwrap().into_owned();
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut buf).unwrap();
        builder.append_data(&mut h, path, &buf[..]).unwrap();
    }
    let p = d.file("strays.tar", &builder.into_inner().unwrap());
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

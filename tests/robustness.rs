//! Hostile, corrupt and interrupted imports: each is refused with a clear
//! message, leaves nothing behind, and the agent keeps working.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_api::v1;
use common::*;
use tonic::codegen::tokio_stream::{self, StreamExt};

fn two_layer_spec() -> ImageSpec {
    ImageSpec::new(vec![busybox_layer(), layer(&[Entry::File("hello.txt".into(), b"hello\n".to_vec(), 0o644)])])
}

/// Import `archive` with berthctl, requiring a failure (exit code 1) whose one-line message has every one of `needles`.
fn import_fails(d: &Daemon, archive: &[u8], needles: &[&str]) -> String {
    let path = d.file("bad.tar", archive);
    let out = d.ctl(&["load", "-i", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "import should fail; stdout: {} stderr: {err}", stdout(&out));
    assert_eq!(err.lines().count(), 1, "{err}");
    for n in needles {
        assert!(err.contains(n), "error should mention {n:?}: {err}");
    }
    err
}

/// Import through the gRPC API: the final result, or the status the stream ended with.
fn grpc_import(d: &Daemon, archive: &[u8]) -> Result<v1::ImportResult, tonic::Status> {
    let mut msgs = vec![v1::ImportRequest { payload: Some(v1::import_request::Payload::Options(v1::ImportOptions::default())) }];
    for c in archive.chunks(1 << 20) {
        msgs.push(v1::ImportRequest { payload: Some(v1::import_request::Payload::Chunk(c.to_vec())) });
    }
    grpc_import_messages(d, msgs)
}

/// Import through the gRPC API, these requests as they are.
fn grpc_import_messages(d: &Daemon, msgs: Vec<v1::ImportRequest>) -> Result<v1::ImportResult, tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ns = berth_api::NamespaceInterceptor::new("default").unwrap();
        let mut client = v1::images_client::ImagesClient::with_interceptor(d.channel().await, ns);
        let mut stream = client.import(tokio_stream::iter(msgs)).await?.into_inner();
        let mut result = None;
        while let Some(msg) = tokio::time::timeout(Duration::from_secs(60), stream.next()).await.expect("import answered within 60s") {
            if let Some(v1::import_response::Event::Result(r)) = msg?.event {
                result = Some(r);
            }
        }
        Ok(result.expect("a result"))
    })
}

#[test]
fn options_sent_again_in_an_upload_are_refused_as_the_callers_mistake() {
    let d = Daemon::start();
    let archive = oci_archive(&[("example.com/twice:v1", &two_layer_spec())]);
    let options = || v1::ImportRequest { payload: Some(v1::import_request::Payload::Options(v1::ImportOptions::default())) };
    let chunk = |c: &[u8]| v1::ImportRequest { payload: Some(v1::import_request::Payload::Chunk(c.to_vec())) };
    let half = archive.len() / 2;
    let msgs = vec![options(), chunk(&archive[..half]), options(), chunk(&archive[half..])];
    let err = grpc_import_messages(&d, msgs).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("the options came again"), "{}", err.message());
    d.assert_nothing_left("default");
    d.assert_healthy();
}

#[test]
fn a_layer_whose_bytes_do_not_match_its_digest_is_refused_and_nothing_is_kept() {
    let d = Daemon::start();
    let built = build(&two_layer_spec());
    // Corrupt the second layer, so that the first was already stored when the import fails.
    let bad = built.layers[1].0.clone();
    let archive = rewrite_archive(&oci_archive(&[("example.com/corrupt:v1", &two_layer_spec())]), |path, mut bytes| {
        if path == format!("blobs/sha256/{}", &bad[7..]) {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x01;
        }
        Some(bytes)
    });
    import_fails(&d, &archive, &[&bad, "digest"]);
    d.assert_nothing_left("default");
    d.assert_healthy();
}

#[test]
fn a_config_whose_diff_id_does_not_match_the_layer_is_refused_and_nothing_is_kept() {
    let d = Daemon::start();
    let wrong = sha256(b"not the layer");
    let built = build_edited(&two_layer_spec(), |c| c["rootfs"]["diff_ids"][1] = wrong.clone().into(), |_| {});
    let archive = oci_archive_built(&[("example.com/diffid:v1", &built)]);
    let err = import_fails(&d, &archive, &["diff id", &wrong, &built.layers[1].0]);
    assert!(err.contains(&sha256(&two_layer_spec().layers[1])), "the actual digest is named: {err}");
    d.assert_nothing_left("default");
    d.assert_healthy();
}

#[test]
fn a_layer_entry_climbing_out_with_dot_dot_touches_nothing_outside_the_snapshot() {
    let d = Daemon::start();
    let victim = d.dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("keep"), b"untouched\n").unwrap();
    let before = tree(&victim);
    // From <root>/snapshots/overlayfs/<id>/fs, five levels up is the test dir that holds victim/.
    let hostile = layer(&[
        Entry::RawFile(b"../../victim/x".to_vec(), b"escaped\n".to_vec()),
        Entry::RawFile(b"../../../../../victim/x".to_vec(), b"escaped\n".to_vec()),
        Entry::RawFile(b"etc/../../../../../../victim/y".to_vec(), b"escaped\n".to_vec()),
    ]);
    let spec = ImageSpec::new(vec![busybox_layer(), hostile]);
    let path = d.file("dotdot.tar", &oci_archive(&[("example.com/dotdot:v1", &spec)]));
    let out = d.ctl(&["load", "-i", path.to_str().unwrap()]);
    let err = stderr(&out);
    // Refused (what berthd does) or, at worst, written inside the snapshot; never outside.
    if !out.status.success() {
        assert_eq!(out.status.code(), Some(1));
        assert!(err.contains("unsafe entry") && err.contains("victim"), "{err}");
        d.assert_nothing_left("default");
    }
    assert_eq!(tree(&victim), before, "the victim dir changed");
    assert_eq!(std::fs::read(victim.join("keep")).unwrap(), b"untouched\n");
    // Whatever was written is inside a snapshot's own fs dir.
    let fs_dirs = d.snapshot_fs_dirs("overlayfs");
    let written: Vec<_> = tree(d.dir.path()).into_keys().filter(|p| p.ends_with("x") || p.ends_with("y")).collect();
    for p in &written {
        assert!(fs_dirs.iter().any(|fs| d.dir.path().join(p).starts_with(fs)), "{} is outside every snapshot", p.display());
    }
    d.assert_healthy();
}

/// Import an image whose second layer is `hostile` on a fresh agent, with a
/// `victim/` dir (one file) beside the agent's root. Checks that the victim
/// and the host's /etc are untouched and the agent healthy; returns the agent,
/// the outcome and the fs dir of the top layer when the import succeeded.
fn import_hostile(hostile: impl FnOnce(&Path, &str) -> Vec<Entry>) -> (Daemon, std::process::Output, Option<std::path::PathBuf>) {
    let d = Daemon::start();
    let victim = d.dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("passwd"), b"victim's own\n").unwrap();
    let before = tree(&victim);
    let canary = format!("berth-test-canary-{}", std::process::id());
    let host_canary = Path::new("/etc").join(&canary);
    assert!(!exists(&host_canary));
    let base_passwd = b"root:x:0:0::/:/bin/sh\n".to_vec();
    let base = layer(&[Entry::Dir("etc".into(), 0o755), Entry::File("etc/passwd".into(), base_passwd.clone(), 0o644)]);
    let spec = ImageSpec::new(vec![base, layer(&hostile(&victim, &canary))]);
    let path = d.file("hostile.tar", &oci_archive(&[("example.com/hostile:v1", &spec)]));
    let out = d.ctl(&["load", "-i", path.to_str().unwrap()]);

    assert!(!exists(&host_canary), "a file was written into the host's /etc");
    assert_eq!(tree(&victim), before, "the victim dir changed");
    let host_passwd = std::fs::read("/etc/passwd").unwrap();
    assert!(!host_passwd.windows(6).any(|w| w == b"pwned!"), "the host's /etc/passwd was written");
    d.assert_healthy();
    let top = if out.status.success() {
        let inspect = d.inspect("default", "example.com/hostile:v1");
        assert_eq!(inspect["Unpacked"], true);
        let hostile_fs =
            d.snapshot_fs_dirs("overlayfs").into_iter().find(|fs| std::fs::read(fs.join("etc/passwd")).ok() != Some(base_passwd.clone()));
        Some(hostile_fs.expect("the hostile layer's snapshot"))
    } else {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
        d.assert_nothing_left("default");
        None
    };
    (d, out, top)
}

#[test]
fn a_file_written_through_an_absolute_symlink_to_etc_lands_in_the_images_own_etc() {
    let (_d, out, top) = import_hostile(|_, canary| {
        vec![
            Entry::Dir("etc".into(), 0o755),
            Entry::Symlink("a".into(), "/etc".into()),
            Entry::File(format!("a/{canary}"), b"pwned!\n".to_vec(), 0o644),
            Entry::File("a/passwd".into(), b"pwned!\n".to_vec(), 0o644),
        ]
    });
    // The link resolves inside the snapshot: the layer's own etc/ gets the files.
    let top = top.unwrap_or_else(|| panic!("import failed: {}", stderr(&out)));
    assert_eq!(std::fs::read_link(top.join("a")).unwrap(), Path::new("/etc"));
    assert_eq!(std::fs::read(top.join("etc/passwd")).unwrap(), b"pwned!\n");
    assert_eq!(std::fs::read_dir(top.join("etc")).unwrap().count(), 2);
}

#[test]
fn a_file_written_through_a_symlink_to_a_directory_the_layer_lacks_is_refused() {
    // With overlayfs each layer is unpacked on its own, so /etc of the lower
    // layer is not there to be written into: the import fails, cleanly.
    let (_d, out, top) =
        import_hostile(|_, _| vec![Entry::Symlink("a".into(), "/etc".into()), Entry::File("a/passwd".into(), b"pwned!\n".to_vec(), 0o644)]);
    assert!(top.is_none(), "expected a refusal");
    assert!(stderr(&out).contains("a/passwd"), "{}", stderr(&out));
}

#[test]
fn symlinks_climbing_or_pointing_to_a_directory_outside_the_root_resolve_inside_it() {
    let (_d, out, top) = import_hostile(|victim, _| {
        vec![
            // From <root>/snapshots/overlayfs/<id>/fs, five levels up is the test dir that holds victim/.
            Entry::Dir("victim".into(), 0o755),
            Entry::Symlink("c".into(), "../../../../../victim".into()),
            Entry::File("c/passwd".into(), b"pwned! through c\n".to_vec(), 0o644),
            // The victim's absolute path, recreated inside the layer.
            Entry::Dir(victim.strip_prefix("/").unwrap().display().to_string(), 0o755),
            Entry::Symlink("b".into(), victim.display().to_string()),
            Entry::File("b/passwd".into(), b"pwned! through b\n".to_vec(), 0o644),
        ]
    });
    let top = top.unwrap_or_else(|| panic!("import failed: {}", stderr(&out)));
    assert_eq!(std::fs::read(top.join("victim/passwd")).unwrap(), b"pwned! through c\n");
    let inner = top.join(_d.dir.path().join("victim/passwd").strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(inner).unwrap(), b"pwned! through b\n");
}

#[test]
fn a_file_entry_replaces_a_symlink_of_the_same_name_instead_of_writing_through_it() {
    let (_d, out, top) = import_hostile(|victim, _| {
        vec![
            Entry::Symlink("d".into(), victim.join("passwd").display().to_string()),
            Entry::File("d".into(), b"pwned! through d\n".to_vec(), 0o644),
            Entry::Symlink("e".into(), "../../../../../victim/passwd".into()),
            Entry::File("e".into(), b"pwned! through e\n".to_vec(), 0o644),
        ]
    });
    let top = top.unwrap_or_else(|| panic!("import failed: {}", stderr(&out)));
    for (name, content) in [("d", "pwned! through d\n"), ("e", "pwned! through e\n")] {
        assert!(std::fs::symlink_metadata(top.join(name)).unwrap().is_file(), "{name}");
        assert_eq!(std::fs::read_to_string(top.join(name)).unwrap(), content);
    }
}

#[test]
fn a_hardlink_to_a_file_outside_the_layer_is_refused() {
    let (_d, out, _) = import_hostile(|victim, _| {
        vec![
            Entry::Hardlink("h1".into(), "../../../../../victim/passwd".into()),
            Entry::Hardlink("h2".into(), victim.join("passwd").display().to_string()),
        ]
    });
    assert!(!out.status.success(), "a hardlink out of the layer was accepted");
}

/// A gzip layer of a few hundred KiB whose tar header claims a 200 MiB file
/// of zeros that follows. Built from repeated gzip members (the decoder reads
/// them as one stream), so the test itself does not compress 200 MiB.
fn gzip_bomb() -> (Vec<u8>, String) {
    const CLAIMED: u64 = 200 << 20;
    let mut h = tar::Header::new_gnu();
    h.set_path("bomb").unwrap();
    h.set_size(CLAIMED);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let zeros = vec![0u8; 1 << 20];
    let zeros_gz = compress(&zeros, Compress::Gzip);
    let mut out = compress(h.as_bytes(), Compress::Gzip);
    for _ in 0..CLAIMED >> 20 {
        out.extend_from_slice(&zeros_gz);
    }
    // The file ends on a block boundary; two zero blocks end the archive.
    out.extend_from_slice(&compress(&[0u8; 1024], Compress::Gzip));
    // The diff id of the whole uncompressed stream, hashed by sha256sum
    // (an unoptimized test build hashes 200 MiB slowly).
    require_tool("sha256sum", "coreutils");
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let header = h.as_bytes().to_vec();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&header)?;
        for _ in 0..CLAIMED >> 20 {
            stdin.write_all(&zeros)?;
        }
        stdin.write_all(&[0u8; 1024])
    });
    let sum = wait_output(child, Duration::from_secs(60));
    feeder.join().unwrap().unwrap();
    assert!(sum.status.success(), "sha256sum: {}", stderr(&sum));
    let hex = stdout(&sum).split_whitespace().next().unwrap().to_owned();
    (out, format!("sha256:{hex}"))
}

#[test]
fn a_gzip_bomb_layer_is_refused_at_the_configured_size_limit() {
    let d = Daemon::start_with_config("max_layer_size = 10485760\n");
    let (bomb, diff_id) = gzip_bomb();
    assert!(bomb.len() < 2 << 20, "{}", bomb.len());
    // Put the bomb in place of a normal layer: same media type, its own digest and diff id.
    let placeholder = layer(&[Entry::File("x".into(), b"x".to_vec(), 0o644)]);
    let spec = ImageSpec::new(vec![busybox_layer(), placeholder.clone()]);
    let mut built = build_edited(
        &spec,
        |c| c["rootfs"]["diff_ids"][1] = diff_id.clone().into(),
        |m| {
            m["layers"][1]["digest"] = sha256(&bomb).into();
            m["layers"][1]["size"] = bomb.len().into();
        },
    );
    built.layers[1] = (sha256(&bomb), bomb.clone(), built.layers[1].2.clone());
    let archive = oci_archive_built(&[("example.com/bomb:v1", &built)]);
    let err = import_fails(&d, &archive, &["exceeds the limit of 10485760 bytes", &sha256(&bomb)]);
    assert!(err.contains("layer"), "{err}");
    d.assert_nothing_left("default");
    d.assert_healthy();
    // A layer within the limit is fine on the same agent.
    let path = d.file("ok.tar", &oci_archive(&[("example.com/fine:v1", &two_layer_spec())]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
}

#[test]
fn a_manifest_that_is_also_an_index_is_refused_as_ambiguous() {
    let d = Daemon::start();
    let built = build_edited(&two_layer_spec(), |_| {}, |m| m["manifests"] = serde_json::json!([]));
    let archive = oci_archive_built(&[("example.com/ambiguous:v1", &built)]);
    let status = grpc_import(&d, &archive).expect_err("an ambiguous manifest must be refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("ambiguous"), "{}", status.message());
    d.assert_nothing_left("default");
    import_fails(&d, &archive, &["ambiguous", "manifests"]);
    d.assert_nothing_left("default");
    d.assert_healthy();
}

#[test]
fn a_truncated_archive_is_refused_from_a_file_and_from_standard_input() {
    let d = Daemon::start();
    let full = oci_archive(&[("example.com/cut:v1", &two_layer_spec())]);
    let half = &full[..full.len() / 2];
    import_fails(&d, half, &["the archive is truncated"]);
    d.assert_nothing_left("default");

    let gz = compress(&full, Compress::Gzip);
    for (what, data, needle) in
        [("plain", half.to_vec(), "the archive is truncated"), ("gzip", gz[..gz.len() / 2].to_vec(), "invalid archive")]
    {
        let out = d.ctl_stdin(&["load"], Some(&data));
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stdout(&out));
        assert!(stderr(&out).contains(needle), "{what}: {}", stderr(&out));
        d.assert_nothing_left("default");
    }
    d.assert_healthy();
    // The whole archive still imports.
    let out = d.ctl_stdin(&["load", "-q"], Some(&full));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "example.com/cut:v1");
}

#[test]
fn an_upload_abandoned_by_its_client_leaves_nothing_behind() {
    let d = Daemon::start();
    let full = oci_archive(&[("example.com/abandoned:v1", &two_layer_spec())]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ns = berth_api::NamespaceInterceptor::new("default").unwrap();
        let mut client = v1::images_client::ImagesClient::with_interceptor(d.channel().await, ns);
        let mut msgs = vec![v1::ImportRequest { payload: Some(v1::import_request::Payload::Options(v1::ImportOptions::default())) }];
        msgs.push(v1::ImportRequest { payload: Some(v1::import_request::Payload::Chunk(full[..full.len() / 2].to_vec())) });
        // Half the archive, then silence: the client neither finishes nor closes the stream.
        let upload = tokio_stream::iter(msgs).chain(tokio_stream::pending());
        let call = tokio::spawn(async move { client.import(upload).await.map(|r| r.into_inner()) });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while d.ingest_files().is_empty() && d.blobs().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the upload never reached the content store");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The client goes away mid-upload: the connection is dropped.
        call.abort();
        let _ = call.await;
    });
    drop(rt);
    wait_until("the abandoned import is cleaned up", Duration::from_secs(20), || {
        d.blobs().is_empty() && d.ingest_files().is_empty() && d.snapshot_dirs("overlayfs").is_empty()
    });
    d.assert_nothing_left("default");
    d.assert_healthy();
    assert!(d.log().contains("import failed"), "{}", d.log());
}

/// Snapshot records in `snapshot ls` that an interrupted import could leave.
fn leftover_snapshots(d: &Daemon) -> Vec<String> {
    d.ok(&["snapshot", "ls"]).lines().skip(1).filter(|l| l.contains("active") || l.contains("unpack-")).map(str::to_owned).collect()
}

#[test]
fn an_agent_killed_mid_import_recovers_to_a_clean_store_and_the_import_then_succeeds() {
    let mut d = Daemon::start();
    // Three 30 MiB layers, uncompressed: big enough to be killed in the middle of.
    let layers: Vec<Vec<u8>> = (0..3).map(|i| layer(&[Entry::File(format!("big{i}"), pseudo_random(30 << 20, i + 1), 0o644)])).collect();
    let spec = ImageSpec { compression: Compress::None, ..ImageSpec::new(layers) };
    let path = d.file("big.tar", &oci_archive(&[("example.com/big:v1", &spec)]));

    // Kill while the archive is streamed into the content store, as soon as
    // unpacking creates directories, and once the unpack snapshots are recorded.
    type Cond = fn(&Daemon) -> bool;
    let phases: [(&str, Cond); 3] = [
        ("the upload reached the content store", |d| !d.ingest_files().is_empty() || !d.blobs().is_empty()),
        ("unpacking started", |d| !d.snapshot_dirs("overlayfs").is_empty()),
        ("an unpack snapshot is recorded", |d| d.ok(&["snapshot", "ls"]).contains("unpack-")),
    ];
    for (phase, started) in phases {
        let mut ctl = Command::new(env!("CARGO_BIN_EXE_berthctl"))
            .args(["load", "-i", path.to_str().unwrap()])
            .env("BERTH_ADDRESS", &d.socket)
            .env_remove("BERTH_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until(phase, Duration::from_secs(30), || started(&d));
        d.kill9();
        let finished = ctl.try_wait().unwrap();
        let _ = ctl.kill();
        let out = ctl.wait_with_output().unwrap();
        assert!(finished.is_none() || !out.status.success(), "{phase}: the import finished before the kill: {}", stdout(&out));

        let mark = d.log().len();
        d.spawn();
        let log = d.log()[mark..].to_owned();
        if phase == "an unpack snapshot is recorded" {
            // Recovery dropped the unfinished unpack (or, had it just been committed, collected it).
            assert!(log.contains("interrupted unpack") || !log.contains("snapshots_removed=0"), "{log}");
        }
        assert!(d.ingest_files().is_empty(), "{phase}: {:?}", d.ingest_files());
        assert_eq!(leftover_snapshots(&d), Vec::<String>::new(), "{phase}");
        // No image was named, so nothing the import stored is referenced.
        assert!(d.blobs().is_empty(), "{phase}: {:?}", d.blobs());
        d.assert_nothing_left("default");
    }

    let out = d.ok(&["load", "-q", "-i", path.to_str().unwrap()]);
    assert_eq!(out.trim(), "example.com/big:v1");
    assert_eq!(d.inspect("default", "example.com/big:v1")["Unpacked"], true);
    assert_eq!(d.ok(&["snapshot", "ls", "-q"]).lines().count(), 3);
    assert!(d.ingest_files().is_empty());
    assert_eq!(d.blobs().len(), 5, "3 layers, config, manifest: {:?}", d.blobs());
}

#[test]
fn concurrent_imports_of_images_sharing_layers_all_succeed_and_share_snapshots() {
    let d = Daemon::start();
    let base = layer(&[Entry::Dir("data".into(), 0o755), Entry::File("data/base".into(), pseudo_random(4 << 20, 11), 0o644)]);
    let specs: Vec<ImageSpec> = (0..4)
        .map(|i| {
            let own = layer(&[Entry::File(format!("own{}", i % 2), pseudo_random(1 << 20, 20 + i % 2), 0o644)]);
            ImageSpec { compression: Compress::None, ..ImageSpec::new(vec![base.clone(), own]) }
        })
        .collect();
    // Images 0 and 2 (1 and 3) are the same image under two names.
    let paths: Vec<_> =
        specs.iter().enumerate().map(|(i, s)| d.file(&format!("{i}.tar"), &oci_archive(&[(&format!("example.com/par:{i}"), s)]))).collect();
    let children: Vec<_> = paths
        .iter()
        .map(|p| {
            Command::new(env!("CARGO_BIN_EXE_berthctl"))
                .args(["load", "-q", "-i", p.to_str().unwrap()])
                .env("BERTH_ADDRESS", &d.socket)
                .env_remove("BERTH_NAMESPACE")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = wait_output(c, Duration::from_secs(60));
        assert!(out.status.success(), "import {i}: {}\n{}", stderr(&out), d.log());
        assert_eq!(stdout(&out).trim(), format!("example.com/par:{i}"));
    }
    for i in 0..4 {
        assert_eq!(d.inspect("default", &format!("example.com/par:{i}"))["Unpacked"], true);
    }
    // One base and two tops, each once; no unpack leftovers.
    let snaps = d.ok(&["snapshot", "ls", "-q"]);
    assert_eq!(snaps.lines().count(), 3, "{snaps}");
    assert_eq!(leftover_snapshots(&d), Vec::<String>::new());
    assert_eq!(d.snapshot_dirs("overlayfs").len(), 3, "{:?}", d.snapshot_dirs("overlayfs"));
    assert!(d.ingest_files().is_empty());
    d.ok(&["rmi", "example.com/par:0", "example.com/par:1", "example.com/par:2", "example.com/par:3"]);
    d.assert_nothing_left("default");
}

#[test]
fn an_image_left_without_a_name_by_a_new_import_or_a_forced_tag_is_collected() {
    let d = Daemon::start();
    let spec = |name: &str| ImageSpec::new(vec![layer(&[Entry::File(name.into(), name.as_bytes().to_vec(), 0o644)])]);
    let (a, b, c) = (spec("a"), spec("b"), spec("c"));
    let pa = d.file("a.tar", &oci_archive(&[("example.com/x:v1", &a)]));
    d.ok(&["load", "-i", pa.to_str().unwrap()]);
    assert_eq!(d.blobs().len(), 3);

    // The same name, another image: the first one is nobody's now.
    let pb = d.file("b.tar", &oci_archive(&[("example.com/x:v1", &b)]));
    d.ok(&["load", "-i", pb.to_str().unwrap()]);
    let built = build(&b);
    let mut expected: Vec<String> = [&built.layers[0].0, &built.config.0, &built.manifest.0].iter().map(|d| d[7..].to_owned()).collect();
    expected.sort();
    assert_eq!(d.blobs(), expected, "the replaced image's blobs are collected");
    assert_eq!(d.ok(&["snapshot", "ls", "-q"]).trim(), sha256(&b.layers[0]));
    assert_eq!(d.snapshot_dirs("overlayfs").len(), 1);

    // Importing the same image again changes nothing.
    d.ok(&["load", "-i", pb.to_str().unwrap()]);
    assert_eq!(d.blobs(), expected);

    // A forced tag moving the only name of an image away from it does the same.
    let pc = d.file("c.tar", &oci_archive(&[("example.com/y:v1", &c)]));
    d.ok(&["load", "-i", pc.to_str().unwrap()]);
    assert_eq!(d.blobs().len(), 6);
    d.ok(&["tag", "example.com/x:v1", "example.com/y:v1"]);
    assert_eq!(d.blobs(), expected);
    assert_eq!(d.ok(&["snapshot", "ls", "-q"]).trim(), sha256(&b.layers[0]));
    assert_eq!(d.ok(&["images", "-q"]).lines().count(), 1);
}

#[test]
fn a_file_that_is_not_an_archive_is_refused_without_quoting_its_bytes() {
    let d = Daemon::start();
    let secret: Vec<u8> = b"root:$6$SECRET-HASH-7f3a9c:20228:0:99999:7:::\n".repeat(40);
    let path = d.file("shadow", &secret);
    for args in [vec!["image", "import", "--local", path.to_str().unwrap()], vec!["image", "import", path.to_str().unwrap()]] {
        let out = d.ctl(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(!err.contains("SECRET-HASH") && !err.contains("root:"), "{args:?} quoted the input: {err}");
        assert!(err.contains("near byte"), "{args:?}: {err}");
    }
    assert!(!d.log().contains("SECRET-HASH"), "the agent's log quoted the input");
    d.assert_nothing_left("default");
}

#[test]
fn control_characters_in_errors_are_escaped() {
    let d = Daemon::start();
    let out = d.ctl(&["image", "import", "--local", "/nonexistent/\u{1b}[2Jcleared"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(!err.contains('\u{1b}'), "a raw ESC reached the terminal: {err:?}");
    assert!(err.contains("\\u{1b}[2Jcleared"), "{err:?}");
    // The agent's own statuses too (here the path goes to the agent as given).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async {
        let mut client = v1::images_client::ImagesClient::new(d.channel().await);
        let req = v1::ImportPathRequest { path: "/nonexistent/\u{1b}[2Jcleared".into(), options: None };
        match client.import_path(req).await {
            Err(s) => s,
            Ok(r) => r.into_inner().next().await.expect("an answer").expect_err("a failure"),
        }
    });
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert!(!status.message().contains('\u{1b}'), "{:?}", status.message());
    assert!(status.message().contains("\\u{1b}[2Jcleared"), "{:?}", status.message());
}

#[test]
fn an_import_chunk_over_the_message_limit_is_resource_exhausted() {
    let d = Daemon::start();
    let archive = oci_archive(&[("example.com/big:v1", &two_layer_spec())]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async {
        let mut client = v1::images_client::ImagesClient::new(d.channel().await);
        let mut big = archive.clone();
        big.resize(9 << 20, 0);
        let msgs = vec![
            v1::ImportRequest { payload: Some(v1::import_request::Payload::Options(v1::ImportOptions::default())) },
            v1::ImportRequest { payload: Some(v1::import_request::Payload::Chunk(big)) },
        ];
        let mut stream = client.import(tokio_stream::iter(msgs)).await.unwrap().into_inner();
        loop {
            match tokio::time::timeout(Duration::from_secs(60), stream.next()).await.expect("an answer within 60s") {
                Some(Err(s)) => break s,
                Some(Ok(_)) => continue,
                None => panic!("the import ended without an error"),
            }
        }
    });
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("at most 8 MiB"), "{:?}", status.message());
    d.assert_nothing_left("default");
    d.assert_healthy();
}

/// A tar stream holding one file named twice by the records of its PAX header: the `tar` crate
/// alone reads the first name, GNU tar, Python's tarfile and Go's archive/tar the last. Ends
/// with the end-of-archive blocks.
fn entry_named_twice(first: &str, last: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("path", first.as_bytes()), ("path", last.as_bytes())]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path(first).unwrap();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn a_layer_entry_named_twice_by_pax_records_is_refused_as_invalid_and_nothing_is_kept() {
    let d = Daemon::start();
    let base = layer(&[Entry::Dir("etc".into(), 0o755), Entry::File("etc/base".into(), b"base\n".to_vec(), 0o644)]);
    let spec = ImageSpec::new(vec![base, entry_named_twice("listed", "hidden", b"what scanners see as hidden\n")]);
    let archive = oci_archive(&[("example.com/paxdup:v1", &spec)]);
    let status = grpc_import(&d, &archive).expect_err("a layer tar readers disagree on must be refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("gives \"path\" twice"), "{}", status.message());
    d.assert_nothing_left("default");
    import_fails(&d, &archive, &["unsafe entry", "\"path\" twice"]);
    d.assert_nothing_left("default");
    d.assert_healthy();
}

#[test]
fn imports_past_max_transfers_wait_for_a_slot_and_say_so() {
    let d = Daemon::start_with_config("max_transfers = 1\n");
    let first = oci_archive(&[("example.com/first:v1", &two_layer_spec())]);
    let second = oci_archive(&[("example.com/second:v1", &ImageSpec::new(vec![busybox_layer()]))]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let options = || v1::ImportRequest { payload: Some(v1::import_request::Payload::Options(v1::ImportOptions::default())) };
        let chunk = |c: &[u8]| v1::ImportRequest { payload: Some(v1::import_request::Payload::Chunk(c.to_vec())) };
        // The first import holds the one slot: its upload stops before the
        // archive's two end blocks (every entry is whole, so blobs are stored).
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(options()).await.unwrap();
        let cut = first.len() - 1024;
        tx.send(chunk(&first[..cut])).await.unwrap();
        let mut c1 = v1::images_client::ImagesClient::new(d.channel().await);
        let mut s1 = c1.import(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
        // Wait until it is under way (it has stored a blob).
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), s1.next()).await.unwrap().unwrap().unwrap();
            if matches!(m.event, Some(v1::import_response::Event::Progress(ref p)) if p.status == "stored") {
                break;
            }
        }
        // The second waits, and says so.
        let mut c2 = v1::images_client::ImagesClient::new(d.channel().await);
        let msgs = vec![options(), chunk(&second)];
        let mut s2 = c2.import(tokio_stream::iter(msgs)).await.unwrap().into_inner();
        let m = tokio::time::timeout(Duration::from_secs(30), s2.next()).await.unwrap().unwrap().unwrap();
        match m.event {
            Some(v1::import_response::Event::Progress(p)) => assert!(p.status.contains("waiting"), "{p:?}"),
            other => panic!("the second import did not wait: {other:?}"),
        }
        // The first finishes; then the second runs.
        tx.send(chunk(&first[cut..])).await.unwrap();
        drop(tx);
        let mut done = 0;
        for s in [&mut s1, &mut s2] {
            while let Some(m) = tokio::time::timeout(Duration::from_secs(60), s.next()).await.unwrap() {
                if matches!(m.unwrap().event, Some(v1::import_response::Event::Result(_))) {
                    done += 1;
                }
            }
        }
        assert_eq!(done, 2);
    });
    let images = d.ok(&["images", "-q"]);
    assert_eq!(images.lines().count(), 2, "{images}");
}

#[test]
fn an_import_archive_entry_named_twice_by_pax_records_is_refused_as_invalid_and_nothing_is_kept() {
    let d = Daemon::start();
    // A valid archive, then a second index.json that only readers taking the last PAX path
    // see (berthd would have stored it as the stray file "extra").
    let mut archive = oci_archive(&[("example.com/fine:v1", &two_layer_spec())]);
    archive.truncate(archive.len() - 1024);
    archive.extend(entry_named_twice("extra", "index.json", br#"{"schemaVersion":2,"manifests":[]}"#));
    let status = grpc_import(&d, &archive).expect_err("an archive tar readers disagree on must be refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("\"extra\"") && status.message().contains("gives \"path\" twice"), "{}", status.message());
    d.assert_nothing_left("default");
    d.assert_healthy();
}

#[test]
fn a_layer_of_more_entries_than_the_limit_is_refused_and_nothing_is_kept() {
    let d = Daemon::start_with_config("max_layer_entries = 1000\n");
    let files = |n: usize| {
        let mut e = vec![Entry::Dir("many".into(), 0o755)];
        e.extend((1..n).map(|i| Entry::File(format!("many/{i}"), Vec::new(), 0o644)));
        layer(&e)
    };
    // 1000 entries (the directory and 999 files) is the limit: it imports.
    let fits = oci_archive(&[("example.com/fits:v1", &ImageSpec::new(vec![files(1000)]))]);
    let path = d.file("fits.tar", &fits);
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    // One more is refused, with the limit named, and leaves nothing.
    let over = oci_archive(&[("example.com/over:v1", &ImageSpec::new(vec![files(1001)]))]);
    let status = grpc_import(&d, &over).expect_err("a layer over the entry limit must be refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("more than 1000 entries"), "{}", status.message());
    assert_eq!(d.ok(&["images", "-q"]).lines().count(), 1);
    assert_eq!(d.ok(&["snapshot", "ls", "-q"]).lines().count(), 1, "{}", d.ok(&["snapshot", "ls"]));
    d.assert_healthy();
}

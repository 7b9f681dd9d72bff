//! The gRPC services (Snapshots, Images, Content, health, reflection), called
//! the way any generated client would.

mod common;

use berth_api::v1::{self, images_client::ImagesClient, snapshots_client::SnapshotsClient};
use common::*;
use tonic::Code;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn snapshots_can_be_prepared_committed_viewed_and_removed_in_order() {
    let d = Daemon::start();
    rt().block_on(async {
        let mut s = SnapshotsClient::new(d.channel().await);
        let m = s.prepare(v1::PrepareSnapshotRequest { key: "base-work".into(), ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(m.mounts.len(), 1);
        assert_eq!(m.mounts[0].r#type, "bind");
        // Write into the writable snapshot, then commit it.
        let dir = std::path::PathBuf::from(&m.mounts[0].source);
        std::fs::write(dir.join("file"), b"data").unwrap();
        s.commit(v1::CommitSnapshotRequest { name: "base".into(), key: "base-work".into(), ..Default::default() }).await.unwrap();
        let st = s.stat(v1::StatSnapshotRequest { key: "base".into() }).await.unwrap().into_inner().info.unwrap();
        assert_eq!(st.kind, v1::SnapshotKind::Committed as i32);

        // An active child is an overlay on the committed parent.
        let m = s
            .prepare(v1::PrepareSnapshotRequest { key: "child".into(), parent: "base".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(m.mounts[0].r#type, "overlay");
        assert!(m.mounts[0].options.iter().any(|o| o.starts_with("upperdir=")), "{:?}", m.mounts[0].options);
        let v =
            s.view(v1::ViewSnapshotRequest { key: "ro".into(), parent: "base".into(), ..Default::default() }).await.unwrap().into_inner();
        assert!(v.mounts[0].options.contains(&"ro".to_string()), "{:?}", v.mounts[0]);

        // Errors: a taken key, a parent that is not committed, removing a parent with children, unknown keys.
        let e =
            s.prepare(v1::PrepareSnapshotRequest { key: "child".into(), parent: "base".into(), ..Default::default() }).await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        let e = s.prepare(v1::PrepareSnapshotRequest { key: "x".into(), parent: "child".into(), ..Default::default() }).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let e = s.remove(v1::RemoveSnapshotRequest { key: "base".into() }).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let e = s.stat(v1::StatSnapshotRequest { key: "nope".into() }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let e = s.prepare(v1::PrepareSnapshotRequest { key: String::new(), ..Default::default() }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

        let e =
            s.prepare(v1::PrepareSnapshotRequest { key: format!("sha256:{}", "1".repeat(64)), ..Default::default() }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = s
            .prepare(v1::PrepareSnapshotRequest {
                key: "y".into(),
                labels: [("berth.io/unpacking".to_string(), "1".to_string())].into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

        let list = s.list(v1::ListSnapshotsRequest { filters: vec!["kind==active".into()] }).await.unwrap().into_inner().snapshots;
        assert_eq!(list.iter().map(|x| x.key.as_str()).collect::<Vec<_>>(), vec!["child"]);
        let u = s.usage(v1::UsageRequest { key: "base".into() }).await.unwrap().into_inner();
        assert!(u.size > 0 && u.inodes >= 2, "{u:?}");

        for k in ["child", "ro", "base"] {
            s.remove(v1::RemoveSnapshotRequest { key: k.into() }).await.unwrap();
        }
        assert!(s.list(v1::ListSnapshotsRequest::default()).await.unwrap().into_inner().snapshots.is_empty());
    });
    assert!(d.snapshot_dirs("overlayfs").is_empty(), "{:?}", d.snapshot_dirs("overlayfs"));
}

/// An OCI archive whose index.json points at a nested multi-platform index.
fn multi_platform_archive() -> (Vec<u8>, String, String) {
    let amd = build(&ImageSpec::new(vec![busybox_layer()]));
    let arm_spec = ImageSpec::new(vec![layer(&[Entry::File("arch".into(), b"arm64\n".to_vec(), 0o644)])]);
    let mut arm = build(&arm_spec);
    // Mark the arm64 config as such (the digest changes with it).
    let mut cfg: serde_json::Value = serde_json::from_slice(&arm.config.1).unwrap();
    cfg["architecture"] = "arm64".into();
    arm.config.1 = serde_json::to_vec(&cfg).unwrap();
    arm.config.0 = sha256(&arm.config.1);
    let mut man: serde_json::Value = serde_json::from_slice(&arm.manifest.1).unwrap();
    man["config"]["digest"] = arm.config.0.clone().into();
    man["config"]["size"] = arm.config.1.len().into();
    arm.manifest.1 = serde_json::to_vec(&man).unwrap();
    arm.manifest.0 = sha256(&arm.manifest.1);

    let entry = |b: &Built, arch: &str| {
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": b.manifest.0, "size": b.manifest.1.len(),
            "platform": {"os": "linux", "architecture": arch}})
    };
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&arm, "arm64"), entry(&amd, "amd64")]}))
    .unwrap();
    let index_digest = sha256(&index);
    let top = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index.len(),
        "annotations": {"io.containerd.image.name": "docker.io/library/multi:latest"}}]}))
    .unwrap();
    let mut blobs: Vec<&[u8]> = vec![&index];
    for b in [&amd, &arm] {
        blobs.extend([b.config.1.as_slice(), b.manifest.1.as_slice()]);
        blobs.extend(b.layers.iter().map(|(_, data, _)| data.as_slice()));
    }
    let archive = layout_archive(&blobs, &top);
    (archive, amd.config.0.clone(), arm.config.0.clone())
}

#[test]
fn a_multi_platform_image_keeps_its_index_and_unpacks_the_platform_asked_for() {
    let d = Daemon::start();
    let (archive, amd_id, arm_id) = multi_platform_archive();
    let p = d.file("multi.tar", &archive);
    d.ok(&["load", "-i", p.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str::<serde_json::Value>(&d.ok(&["image", "inspect", "multi"])).unwrap()[0].clone();
    assert_eq!(v["MediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(v["Id"], amd_id.as_str());
    assert_eq!(v["Unpacked"], true);
    assert_eq!(v["Platforms"].as_array().unwrap().len(), 2, "{v}");
    let arm: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(&d.ok(&["image", "inspect", "--platform", "linux/arm64", "multi"])).unwrap()[0].clone();
    assert_eq!(arm["Id"], arm_id.as_str());
    assert_eq!(arm["Unpacked"], false);

    // Importing again for arm64 unpacks that platform too.
    d.ok(&["image", "import", "--platform", "linux/arm64", p.to_str().unwrap()]);
    let arm: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(&d.ok(&["image", "inspect", "--platform", "linux/arm64", "multi"])).unwrap()[0].clone();
    assert_eq!(arm["Unpacked"], true);
    let out = d.ctl(&["image", "import", "--platform", "linux/s390x", p.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no manifest for platform linux/s390x"), "{}", stderr(&out));
    let out = d.ctl(&["image", "import", "--platform", "linux", p.to_str().unwrap()]);
    assert!(stderr(&out).contains("invalid platform"), "{}", stderr(&out));
}

#[test]
fn images_can_be_listed_filtered_and_labelled_over_grpc() {
    let d = Daemon::start();
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let p = d.file("a.tar", &oci_archive(&[("docker.io/library/a:1", &spec)]));
    d.ok(&["image", "import", "--label", "team=infra", p.to_str().unwrap()]);
    d.ok(&["tag", "a:1", "b:2"]);
    rt().block_on(async {
        let mut c = ImagesClient::new(d.channel().await);
        let all = c.list(v1::ListImagesRequest::default()).await.unwrap().into_inner().images;
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].config_digest, all[1].config_digest);
        let f = c.list(v1::ListImagesRequest { filters: vec!["name~=b:".into()] }).await.unwrap().into_inner().images;
        assert_eq!(f.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), vec!["docker.io/library/b:2"]);
        let f = c.list(v1::ListImagesRequest { filters: vec!["label.team==infra".into()] }).await.unwrap().into_inner().images;
        assert_eq!(f.len(), 2);
        let e = c.list(v1::ListImagesRequest { filters: vec!["name=x".into()] }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        c.update_labels(v1::UpdateImageLabelsRequest { name: "b:2".into(), labels: [("k".to_string(), "v".to_string())].into() })
            .await
            .unwrap();
        let g = c.get(v1::GetImageRequest { name: "b:2".into() }).await.unwrap().into_inner().image.unwrap();
        assert_eq!(g.labels.get("k").map(String::as_str), Some("v"));
        // `repo@digest` finds the image by its manifest digest.
        let target = g.target.as_ref().unwrap().digest.clone();
        let by_digest = c.get(v1::GetImageRequest { name: format!("b@{target}") }).await.unwrap().into_inner().image.unwrap();
        assert_eq!(by_digest.name, "docker.io/library/b:2");
        // An id prefix names the image; deleting by id removes every name.
        let id = &g.config_digest[7..19];
        let e = c.delete(v1::DeleteImageRequest { name: id.into(), sync: true, force: false }).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let r = c.delete(v1::DeleteImageRequest { name: id.into(), sync: true, force: true }).await.unwrap().into_inner();
        assert_eq!(r.deleted.len(), 2, "{r:?}");
        assert!(r.blobs_removed >= 3);
        let e = c.get(v1::GetImageRequest { name: "a:1".into() }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let e = c.get(v1::GetImageRequest { name: format!("a@sha256:{}", "0".repeat(64)) }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
    });
}

#[test]
fn health_and_reflection_are_served_and_blobs_carry_labels() {
    let d = Daemon::start();
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let p = d.file("a.tar", &oci_archive(&[("docker.io/library/a:1", &spec)]));
    d.ok(&["load", "-i", p.to_str().unwrap()]);
    rt().block_on(async {
        let ch = d.channel().await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
        let r = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
        assert_eq!(r.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

        use tonic_reflection::pb::v1::{
            server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
            server_reflection_response::MessageResponse, ServerReflectionRequest,
        };
        let mut refl = ServerReflectionClient::new(ch.clone());
        let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
        let mut resp = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
        let msg = resp.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else { panic!("unexpected reflection answer") };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for svc in ["berth.v1.Images", "berth.v1.Content", "berth.v1.Snapshots", "berth.v1.Version", "grpc.health.v1.Health"] {
            assert!(names.iter().any(|n| n == svc), "{svc} missing from {names:?}");
        }

        let mut content = v1::content_client::ContentClient::new(ch);
        let blobs = content.list(v1::ListContentRequest {}).await.unwrap().into_inner().blobs;
        let config = &blobs.iter().find(|b| b.size < 4096).unwrap().digest;
        let info = content
            .update_labels(v1::UpdateContentLabelsRequest {
                digest: config.clone(),
                labels: [("note".to_string(), "x".to_string())].into(),
            })
            .await
            .unwrap()
            .into_inner()
            .info
            .unwrap();
        assert_eq!(info.labels.get("note").map(String::as_str), Some("x"));
        assert_eq!(info.referenced_by, vec!["docker.io/library/a:1".to_string()]);
        let e = content
            .update_labels(v1::UpdateContentLabelsRequest {
                digest: config.clone(),
                labels: [("berth.io/x".to_string(), "y".to_string())].into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        // A blob in use is not deleted without force; reading past its end is OutOfRange.
        let e = content.delete(v1::DeleteContentRequest { digest: config.clone(), force: false }).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        let e = content.read(v1::ReadContentRequest { digest: config.clone(), offset: 1 << 30, size: 0 }).await.unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange);
        let e = content.info(v1::ContentInfoRequest { digest: "sha256:nothex".into() }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    });
    // The label shows in berthctl, and goes with the blob when the image is removed.
    assert!(d.ok(&["content", "ls"]).contains("note=x"));
    d.ok(&["rmi", "a:1"]);
    assert_eq!(d.ok(&["content", "ls", "-q"]).trim(), "");
}

#[test]
fn image_labels_follow_the_one_label_rule() {
    let d = Daemon::start();
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let p = d.file("a.tar", &oci_archive(&[("docker.io/library/a:1", &spec)]));
    d.ok(&["image", "import", "--label", "team=infra", p.to_str().unwrap()]);
    rt().block_on(async {
        let mut c = ImagesClient::new(d.channel().await);
        let one = |k: &str, v: String| [(k.to_string(), v)].into();
        let many: std::collections::BTreeMap<String, String> = (0..10_000).map(|i| (format!("k{i}"), String::new())).collect();
        for (what, labels) in [
            ("a key the agent reserves", one("berth.io/managed", "x".into())),
            ("a 1 MiB value", one("big", "v".repeat(1 << 20))),
            ("10,000 labels", many),
            ("an empty key", one("", "x".into())),
        ] {
            let e = c.update_labels(v1::UpdateImageLabelsRequest { name: "a:1".into(), labels }).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        }
        let g = c.get(v1::GetImageRequest { name: "a:1".into() }).await.unwrap().into_inner().image.unwrap();
        assert_eq!(g.labels, [("team".to_string(), "infra".to_string())].into(), "the labels did not change");
    });
    // The import's labels follow the same rule.
    let out = d.ctl(&["image", "import", "--label", "berth.io/x=1", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("reserved"), "{}", stderr(&out));
}

#[test]
fn an_image_layer_or_a_container_s_writable_layer_cannot_be_removed_through_snapshots() {
    let d = Daemon::start();
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let path = d.file("bb.tar", &oci_archive(&[("docker.io/library/busybox:latest", &spec)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    let id = d.ok(&["create", "--net", "none", "busybox", "true"]).trim().to_owned();
    rt().block_on(async {
        let mut s = SnapshotsClient::new(d.channel().await);
        let keys: Vec<String> =
            s.list(v1::ListSnapshotsRequest::default()).await.unwrap().into_inner().snapshots.into_iter().map(|x| x.key).collect();
        let layer = keys.iter().find(|k| k.starts_with("sha256:")).expect("the image's layer").clone();
        let writable = keys.iter().find(|k| k.contains(&id)).expect("the container's layer").clone();
        for key in [&layer, &writable] {
            let e = s.remove(v1::RemoveSnapshotRequest { key: key.clone() }).await.unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition, "{key}: {e:?}");
        }
        // A key nothing has, whatever it looks like: NotFound.
        let e = s.remove(v1::RemoveSnapshotRequest { key: format!("sha256:{}", "7".repeat(64)) }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
    });
    // Both still work: the container runs.
    d.ok(&["start", "-a", &id]);
    d.ok(&["rm", &id]);
}

//! The Kubernetes CRI socket, driven as a kubelet drives it (through the generated
//! `runtime.v1` clients): the runtime's version, status and configuration, and the image
//! service against a real registry that asks for credentials.

mod common;

use berth_api::cri::{self, image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient};
use common::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec { image: image.to_owned(), ..Default::default() })
}

#[test]
fn the_cri_answers_a_kubelet_s_runtime_and_image_calls() {
    let reg = Registry::start(Some(("kube", "pa55")));
    let d = Daemon::start();
    // An image whose config names a numeric user, in the registry.
    let built = build_edited(&ImageSpec::new(vec![busybox_layer()]), |c| c["config"]["User"] = "1000:1000".into(), |_| {});
    let path = d.file("app.tar", &oci_archive_built(&[("docker.io/library/app:v1", &built)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    let name = format!("{}/team/app:v1", reg.addr);
    d.ok(&["tag", "app:v1", &name]);
    d.ok(&["push", "--creds", "kube:pa55", &name]);
    let id = built.config.0.clone();

    rt().block_on(async {
        let channel = berth_api::connect(d.state.join("cri.sock"), std::time::Duration::from_secs(5)).await.unwrap();
        let mut runtime = RuntimeServiceClient::new(channel.clone());
        let mut images = ImageServiceClient::new(channel);

        let v = runtime.version(cri::VersionRequest { version: "v1".into() }).await.unwrap().into_inner();
        assert_eq!((v.runtime_name.as_str(), v.runtime_api_version.as_str()), ("berth", "v1"));
        let status = runtime.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner();
        let conditions = status.status.unwrap().conditions;
        assert!(conditions.iter().any(|c| c.r#type == "RuntimeReady" && c.status), "{conditions:?}");
        assert!(conditions.iter().any(|c| c.r#type == "NetworkReady"), "{conditions:?}");
        let config = runtime.runtime_config(cri::RuntimeConfigRequest {}).await.unwrap().into_inner();
        assert_eq!(config.linux.unwrap().cgroup_driver, cri::CgroupDriver::Cgroupfs as i32);
        // What is not served yet says so.
        let e = runtime.list_pod_sandbox(cri::ListPodSandboxRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented, "{e}");

        // A missing image: no error, no image; its removal is done already.
        let missing = images.image_status(cri::ImageStatusRequest { image: spec(&name), verbose: false }).await.unwrap();
        assert!(missing.into_inner().image.is_none());
        images.remove_image(cri::RemoveImageRequest { image: spec(&name) }).await.unwrap();
        let e = images.image_status(cri::ImageStatusRequest { image: spec(""), verbose: false }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);

        // A pull without the registry's credentials fails; with the kubelet's, it pulls.
        let pull = |auth: Option<cri::AuthConfig>| cri::PullImageRequest { image: spec(&name), auth, sandbox_config: None };
        assert!(images.pull_image(pull(None)).await.is_err());
        let auth = cri::AuthConfig { username: "kube".into(), password: "pa55".into(), ..Default::default() };
        let pulled = images.pull_image(pull(Some(auth))).await.unwrap().into_inner();
        assert_eq!(pulled.image_ref, id);

        // Found by name, by repository@digest, by id; with the config's user as a uid.
        let status = images.image_status(cri::ImageStatusRequest { image: spec(&name), verbose: false }).await.unwrap().into_inner();
        let image = status.image.expect("the pulled image");
        assert_eq!(image.id, id);
        assert_eq!(image.repo_tags, std::slice::from_ref(&name));
        assert_eq!(image.uid.map(|u| u.value), Some(1000));
        let by_digest = image.repo_digests.first().expect("a repo digest").clone();
        assert!(by_digest.starts_with(&format!("{}/team/app@sha256:", reg.addr)), "{by_digest}");
        for other in [by_digest.as_str(), id.as_str()] {
            let found = images.image_status(cri::ImageStatusRequest { image: spec(other), verbose: false }).await.unwrap();
            assert_eq!(found.into_inner().image.map(|i| i.id), Some(id.clone()), "{other}");
        }
        let listed = images.list_images(cri::ListImagesRequest { filter: None }).await.unwrap().into_inner().images;
        assert_eq!(listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
        let fs = images.image_fs_info(cri::ImageFsInfoRequest {}).await.unwrap().into_inner();
        let usage = &fs.image_filesystems[0];
        assert!(usage.used_bytes.as_ref().is_some_and(|u| u.value > 0), "{usage:?}");
        assert!(usage.fs_id.as_ref().is_some_and(|f| f.mountpoint.ends_with("snapshots")), "{usage:?}");

        // The CRI's images are berthctl's too, in the k8s.io namespace (and only there).
        assert!(d.ok(&["--namespace", "k8s.io", "images", "--format", "{{.Repository}}"]).contains("team/app"));

        // Removed with every name of its id; pulled again with docker's `auth` form.
        images.remove_image(cri::RemoveImageRequest { image: spec(&id) }).await.unwrap();
        assert!(images.list_images(cri::ListImagesRequest { filter: None }).await.unwrap().into_inner().images.is_empty());
        use base64::Engine;
        let auth = cri::AuthConfig { auth: base64::engine::general_purpose::STANDARD.encode("kube:pa55"), ..Default::default() };
        images.pull_image(pull(Some(auth))).await.unwrap();
    });
}

#[test]
fn the_cri_socket_can_be_turned_off() {
    let d = Daemon::start_with(&["--no-cri"]);
    assert!(d.state.join("berthd.sock").exists());
    assert!(!d.state.join("cri.sock").exists());
}

//! Volumes and secure defaults end to end: a real berthd and runc, driven
//! through berthctl and the API.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_api::v1;
use common::*;

/// A daemon with busybox as `busybox`, and `withvol`: busybox whose config
/// declares VOLUME /cache, with /cache/seed in its layer.
fn daemon() -> Daemon {
    require_tool("runc", "runc");
    let d = Daemon::start();
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let path = d.file("busybox.tar", &oci_archive(&[("docker.io/library/busybox:latest", &spec)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    let seed = layer(&[Entry::Dir("cache".into(), 0o750), Entry::File("cache/seed".into(), b"from the image\n".to_vec(), 0o640)]);
    let spec = ImageSpec::new(vec![busybox_layer(), seed]);
    let built = build_edited(&spec, |c| c["config"]["Volumes"] = serde_json::json!({"/cache": {}}), |_| {});
    let path = d.file("withvol.tar", &oci_archive_built(&[("docker.io/library/withvol:latest", &built)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    d
}

fn inspect(d: &Daemon, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["volume", "inspect", name])).unwrap();
    v[0].clone()
}

fn volume_names(d: &Daemon) -> Vec<String> {
    d.ok(&["volume", "ls", "-q"]).lines().map(str::to_owned).collect()
}

#[test]
fn named_volumes_outlive_containers_hold_the_image_s_files_and_are_not_removed_in_use() {
    let mut d = daemon();
    // Written by one container, read by the next.
    d.ok(&["run", "--rm", "--net", "none", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/f"]);
    assert_eq!(d.ok(&["run", "--rm", "--net", "none", "-v", "data:/data:ro", "busybox", "cat", "/data/f"]), "kept\n");
    let v = inspect(&d, "data");
    assert_eq!(v["Anonymous"], false);
    let mountpoint = PathBuf::from(v["Mountpoint"].as_str().unwrap());
    assert!(mountpoint.starts_with(&d.root), "{mountpoint:?}");
    assert_eq!(std::fs::read_to_string(mountpoint.join("f")).unwrap(), "kept\n");
    // Read-only means read-only.
    let o = d.ctl(&["run", "--rm", "--net", "none", "--mount", "type=volume,src=data,dst=/d,readonly", "busybox", "touch", "/d/x"]);
    assert!(!o.status.success(), "a read-only volume took a write");

    // A new volume holds what the image has at its path, with its owner and mode.
    d.ok(&["run", "--rm", "--net", "none", "-v", "etc:/etc", "busybox", "true"]);
    let etc = PathBuf::from(inspect(&d, "etc")["Mountpoint"].as_str().unwrap());
    assert!(std::fs::read_to_string(etc.join("passwd")).unwrap().starts_with("root:x:0:0"));
    assert!(etc.join("group").exists());
    // ... unless told not to; and a volume that holds files is not filled again.
    d.ok(&["run", "--rm", "--net", "none", "-v", "bare:/cache:nocopy", "withvol", "true"]);
    assert_eq!(std::fs::read_dir(inspect(&d, "bare")["Mountpoint"].as_str().unwrap()).unwrap().count(), 0);
    let seeded = d.ok(&["run", "--rm", "--net", "none", "-v", "data:/cache", "withvol", "ls", "/cache"]);
    assert_eq!(seeded, "f\n", "a volume with files was filled from the image");
    d.ok(&["run", "--rm", "--net", "none", "-v", "fresh:/cache", "withvol", "true"]);
    let fresh = PathBuf::from(inspect(&d, "fresh")["Mountpoint"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(fresh.join("seed")).unwrap(), "from the image\n");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&fresh).unwrap().permissions()) & 0o7777, 0o750);

    // In use (by a container that is not even running): not removed.
    d.ok(&["create", "--name", "holder", "--net", "none", "-v", "data:/data", "busybox", "true"]);
    let err = d.fails(&["volume", "rm", "data"]);
    assert!(err.contains("in use") && err.contains("holder"), "{err}");
    let pruned = d.ok(&["volume", "prune", "-a"]);
    assert!(pruned.contains("etc") && !pruned.contains("data"), "{pruned}");
    assert_eq!(volume_names(&d), ["data"], "prune removed a volume in use, or kept one unused");

    // Labels, filters, sizes.
    d.ok(&["volume", "create", "--label", "team=a", "labelled"]);
    assert_eq!(d.ok(&["volume", "ls", "-q", "--filter", "label=team=a"]), "labelled\n");
    assert_eq!(d.ok(&["volume", "ls", "-q", "--filter", "name=abel"]), "labelled\n");
    assert_eq!(d.ok(&["volume", "inspect", "-f", "{{.Name}} {{.Labels.team}}", "labelled"]), "labelled a\n");
    assert_eq!(d.ok(&["network", "inspect", "-f", "{{.Name}}", "bridge"]), "bridge\n");
    let ls = d.ok(&["volume", "ls", "--size"]);
    assert!(ls.contains("SIZE") && ls.contains("labelled"), "{ls}");
    // system df counts them (two volumes, one in use by holder).
    let df = d.ok(&["system", "df"]);
    let line = df.lines().find(|l| l.starts_with("Local Volumes")).unwrap_or_default().to_owned();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.get(2..4), Some(&["2", "1"][..]), "{df}");
    let verbose = d.ok(&["system", "df", "-v"]);
    assert!(verbose.contains("Local Volumes space usage") && verbose.contains("labelled"), "{verbose}");
    let err = d.fails(&["volume", "create", "labelled"]);
    assert!(err.contains("already exists"), "{err}");

    // Nothing is lost across an agent crash.
    d.kill9();
    d.spawn();
    d.wait_ready();
    assert_eq!(d.ok(&["run", "--rm", "--net", "none", "-v", "data:/data", "busybox", "cat", "/data/f"]), "kept\n");
    let err = d.fails(&["volume", "rm", "data"]);
    assert!(err.contains("in use"), "{err}");
    d.ok(&["rm", "holder"]);
    d.ok(&["volume", "rm", "data"]);
    assert!(!mountpoint.exists(), "the volume's files stayed");
    let o = d.ctl(&["volume", "inspect", "data"]);
    assert!(!o.status.success() && stderr(&o).contains("not found"), "{}", stderr(&o));
}

#[test]
fn anonymous_volumes_come_from_the_image_s_volume_and_go_with_rm_v() {
    let d = daemon();
    d.ok(&["run", "-d", "--name", "anon", "--net", "none", "withvol", "sleep", "600"]);
    let names = volume_names(&d);
    assert_eq!(names.len(), 1, "{names:?}");
    let anon = &names[0];
    assert!(anon.len() == 64 && anon.bytes().all(|b| b.is_ascii_hexdigit()), "{anon}");
    let v = inspect(&d, anon);
    assert_eq!(v["Anonymous"], true);
    assert_eq!(v["Containers"], serde_json::json!(["anon"]));
    assert_eq!(d.ok(&["exec", "anon", "cat", "/cache/seed"]), "from the image\n");
    // A named volume on that path takes its place.
    d.ok(&["run", "--rm", "--net", "none", "-v", "mine:/cache", "withvol", "true"]);
    assert_eq!(volume_names(&d).len(), 2, "a named volume at the image's VOLUME also made an anonymous one");
    // `rm -v` removes the anonymous volume; named ones stay.
    d.ok(&["rm", "-f", "-v", "anon"]);
    assert_eq!(volume_names(&d), ["mine"]);
    // `run --rm` removes them too, attached or detached.
    d.ok(&["run", "--rm", "--net", "none", "withvol", "true"]);
    d.ok(&["run", "--rm", "-d", "--name", "gone", "--net", "none", "withvol", "true"]);
    wait_until("the --rm container removed", std::time::Duration::from_secs(10), || d.ok(&["ps", "-aq"]).trim().is_empty());
    wait_until("its volume removed", std::time::Duration::from_secs(10), || volume_names(&d) == ["mine"]);
    // Without -v the anonymous volume stays, and prune takes it (not the named one).
    d.ok(&["create", "--name", "kept", "--net", "none", "withvol", "true"]);
    d.ok(&["rm", "kept"]);
    assert_eq!(volume_names(&d).len(), 2);
    let pruned = d.ok(&["volume", "prune", "-f"]);
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    assert_eq!(volume_names(&d), ["mine"]);
    // A volume a user made without a name is the user's: not anonymous, kept by --rm and prune.
    let made = d.ok(&["volume", "create"]).trim().to_owned();
    assert_eq!(made.len(), 64, "{made}");
    d.ok(&["run", "--rm", "--net", "none", "-v", &format!("{made}:/d"), "busybox", "true"]);
    d.ok(&["volume", "prune"]);
    assert!(volume_names(&d).contains(&made), "a user's volume was removed");
    assert_eq!(inspect(&d, &made)["Anonymous"], false);
    d.ok(&["volume", "prune", "-a"]);
    assert!(volume_names(&d).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_errors_carry_the_right_status() {
    let d = daemon();
    let mut vc = v1::volumes_client::VolumesClient::new(d.channel().await);
    let code = |r: Result<tonic::Response<v1::CreateVolumeResponse>, tonic::Status>| r.unwrap_err().code();
    for bad in ["../x", "a/b", "x", ".hidden", &"v".repeat(200)] {
        let r = vc.create(v1::CreateVolumeRequest { name: bad.into(), ..Default::default() }).await;
        assert_eq!(code(r), tonic::Code::InvalidArgument, "{bad:?}");
    }
    let r = vc.create(v1::CreateVolumeRequest { name: "ok".into(), driver: "nfs".into(), ..Default::default() }).await;
    assert_eq!(code(r), tonic::Code::InvalidArgument);
    vc.create(v1::CreateVolumeRequest { name: "ok".into(), ..Default::default() }).await.unwrap();
    let r = vc.create(v1::CreateVolumeRequest { name: "ok".into(), ..Default::default() }).await;
    assert_eq!(code(r), tonic::Code::AlreadyExists);
    let e = vc.get(v1::GetVolumeRequest { name: "nope".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = vc.remove(v1::RemoveVolumeRequest { name: "nope".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = vc.list(v1::ListVolumesRequest { filters: vec!["bogus==1".into()], sizes: false }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // A hostile name in a container's mount is refused before anything is made.
    let o = d.ctl(&["create", "--net", "none", "--mount", "type=volume,src=..,dst=/x", "busybox", "true"]);
    assert!(!o.status.success() && stderr(&o).contains("invalid volume name"), "{}", stderr(&o));
    assert_eq!(volume_names(&d), ["ok"]);
    // A container that cannot be created leaves no volume behind.
    let o = d.ctl(&["create", "--net", "none", "-v", "made:/x", "--user", "nosuchuser", "busybox", "true"]);
    assert!(!o.status.success());
    assert_eq!(volume_names(&d), ["ok"], "a refused create left its volume");
    // A volume in use: FailedPrecondition.
    d.ok(&["create", "--name", "user", "--net", "none", "-v", "ok:/x", "busybox", "true"]);
    let e = vc.remove(v1::RemoveVolumeRequest { name: "ok".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    // The volume's directory is root's: nobody else reads through the root.
    let root_mode = std::fs::metadata(d.root.join("volumes")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&root_mode.permissions()) & 0o777, 0o700);
}

/// A static program that makes one system call and says what came of it:
/// `probe keyctl|unshare|mount` prints "ok" or the error's name.
fn probe(dir: &Path) -> Vec<u8> {
    require_tool("cc", "gcc");
    let src = dir.join("probe.c");
    std::fs::write(
        &src,
        r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long r = -1;
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "keyctl")) r = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -4 /* user keyring */, 1);
    else if (!strcmp(argv[1], "unshare")) r = unshare(CLONE_NEWUSER);
    else if (!strcmp(argv[1], "mount")) r = mount("none", "/tmp", "tmpfs", 0, "");
    else return 2;
    if (r < 0) { printf("%s\n", errno == EPERM ? "EPERM" : strerror(errno)); return 1; }
    printf("ok\n");
    return 0;
}
"#,
    )
    .unwrap();
    let out = dir.join("probe");
    run_ok(Command::new("cc").args(["-static", "-O1", "-o"]).arg(&out).arg(&src));
    std::fs::read(out).unwrap()
}

#[test]
fn the_default_seccomp_profile_refuses_what_a_container_has_no_use_for() {
    let d = daemon();
    let bin = probe(d.dir.path());
    let layer = layer(&[Entry::File("probe".into(), bin, 0o755)]);
    let spec = ImageSpec::new(vec![busybox_layer(), layer]);
    let path = d.file("probe.tar", &oci_archive(&[("docker.io/library/probe:latest", &spec)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    let probe = |flags: &[&str], call: &str| {
        let mut args = vec!["run", "--rm", "--net", "none"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["probe", "/probe", call]);
        stdout(&d.ctl(&args)).trim().to_owned()
    };
    // Under the default profile: refused, as with docker.
    for call in ["keyctl", "unshare", "mount"] {
        assert_eq!(probe(&[], call), "EPERM", "{call} under the default profile");
    }
    // Unconfined: as the capabilities allow (no CAP_SYS_ADMIN: no mount).
    assert_eq!(probe(&["--security-opt", "seccomp=unconfined"], "keyctl"), "ok");
    assert_eq!(probe(&["--security-opt", "seccomp=unconfined"], "unshare"), "ok");
    assert_eq!(probe(&["--security-opt", "seccomp=unconfined"], "mount"), "EPERM");
    // The profile follows the capabilities: CAP_SYS_ADMIN allows mount, not keyctl.
    assert_eq!(probe(&["--cap-add", "SYS_ADMIN"], "mount"), "ok");
    assert_eq!(probe(&["--cap-add", "SYS_ADMIN"], "keyctl"), "EPERM");
    // A profile of the user's, from a file.
    let profile = d.file(
        "deny-mkdir.json",
        br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    );
    let o =
        d.ctl(&["run", "--rm", "--net", "none", "--security-opt", &format!("seccomp={}", profile.display()), "busybox", "mkdir", "/tmp/x"]);
    assert!(!o.status.success() && stderr(&o).contains("not permitted"), "{}", stderr(&o));
    let bad = d.file("bad.json", br#"{"defaultAction":"SCMP_ACT_NOPE"}"#);
    let o = d.ctl(&["create", "--security-opt", &format!("seccomp={}", bad.display()), "busybox", "true"]);
    assert!(!o.status.success() && stderr(&o).contains("seccomp profile"), "{}", stderr(&o));
    let o = d.ctl(&["create", "--security-opt", "seccomp=/dev/null", "busybox", "true"]);
    assert!(!o.status.success() && stderr(&o).contains("empty"), "{}", stderr(&o));
    // no-new-privileges shows in the process's status; AppArmor is refused where it is not enabled.
    let nnp = |flags: &[&str]| {
        let mut args = vec!["run", "--rm", "--net", "none"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "sh", "-c", "grep NoNewPrivs /proc/self/status"]);
        d.ok(&args).split_whitespace().nth(1).unwrap_or_default().to_owned()
    };
    assert_eq!(nnp(&["--security-opt", "no-new-privileges"]), "1");
    assert_eq!(nnp(&["--security-opt", "no-new-privileges=false"]), "0");
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y");
    if !apparmor {
        let o = d.ctl(&["create", "--security-opt", "apparmor=docker-default", "busybox", "true"]);
        assert!(!o.status.success() && stderr(&o).contains("AppArmor is not enabled"), "{}", stderr(&o));
    }
    // The whole existing suite runs with the profile on: the agent applies it to every container.
    assert!(d.ok(&["ps", "-aq"]).trim().is_empty());
}

#[test]
fn devices_and_cgroup_namespaces() {
    let d = daemon();
    // /dev/null as another name, read and written.
    let o = d.ok(&[
        "run",
        "--rm",
        "--net",
        "none",
        "--device",
        "/dev/null:/dev/mynull:rw",
        "busybox",
        "sh",
        "-c",
        "echo x > /dev/mynull && cat /dev/mynull && echo done",
    ]);
    assert_eq!(o, "done\n");
    // A device outside the default rules: usable as its permissions say, through the device cgroup.
    if exists(Path::new("/dev/kmsg")) {
        let write = |dev: &str| {
            let o = d.ctl(&["run", "--rm", "--net", "none", "--device", dev, "busybox", "sh", "-c", "echo berth-device-test > /dev/k"]);
            (o.status.success(), stderr(&o))
        };
        assert!(write("/dev/kmsg:/dev/k:w").0, "{}", write("/dev/kmsg:/dev/k:w").1);
        let (ok, err) = write("/dev/kmsg:/dev/k:r");
        assert!(!ok && err.contains("not permitted"), "a write to a read-only device: {err}");
        let o = d.ctl(&["run", "--rm", "--net", "none", "busybox", "sh", "-c", "test -e /dev/kmsg"]);
        assert!(!o.status.success(), "/dev/kmsg without --device");
    }
    let err = d.fails(&["create", "--device", "/etc/passwd", "busybox", "true"]);
    assert!(err.contains("not a character or block device"), "{err}");
    let err = d.fails(&["create", "--device", "/dev/nonexistent", "busybox", "true"]);
    assert!(err.contains("/dev/nonexistent"), "{err}");
    // A cgroup namespace of its own: /proc/self/cgroup shows its cgroup as the root.
    let host_ns = std::fs::read_link("/proc/self/ns/cgroup").unwrap().display().to_string();
    let own = d.ok(&["run", "--rm", "--net", "none", "--cgroupns", "private", "busybox", "busybox", "readlink", "/proc/self/ns/cgroup"]);
    assert_ne!(own.trim(), host_ns);
    let host = d.ok(&["run", "--rm", "--net", "none", "--cgroupns", "host", "busybox", "busybox", "readlink", "/proc/self/ns/cgroup"]);
    assert_eq!(host.trim(), host_ns);
    let err = d.fails(&["create", "--cgroupns", "bogus", "busybox", "true"]);
    assert!(err.contains("--cgroupns"), "{err}");
}

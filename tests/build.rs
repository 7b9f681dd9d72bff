//! `berthctl build`: Dockerfiles built in the agent, against a real agent,
//! runtime and snapshots.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A build context in the daemon's test dir: `files` (path, content), the busybox binary at `busybox`.
fn context(d: &Daemon, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = d.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("busybox"), busybox()).unwrap();
    std::fs::set_permissions(dir.join("busybox"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for (p, data) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    dir
}

fn build(d: &Daemon, dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["build", "--progress", "plain"];
    args.extend_from_slice(extra);
    let dir = dir.display().to_string();
    args.push(&dir);
    d.ctl(&args)
}

const BASE: &[u8] = b"FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
ENV GREETING=hello PATH=/bin
WORKDIR /srv/app
RUN echo \"$GREETING from $(pwd)\" > note.txt
CMD [\"sh\", \"-c\", \"cat /srv/app/note.txt\"]
";

#[test]
fn a_scratch_image_builds_runs_and_keeps_its_history() {
    let d = Daemon::start();
    let dir = context(&d, "ctx", &[("Dockerfile", BASE)]);
    let out = build(&d, &dir, &["-t", "built:v1"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
    assert_eq!(d.ok(&["run", "--rm", "built:v1"]), "hello from /srv/app\n");
    let inspect = d.inspect("default", "built:v1");
    let history = inspect["history"].as_array().unwrap();
    // COPY, RUN --install, ENV, WORKDIR (creates /srv/app), RUN echo, CMD.
    assert_eq!(history.len(), 6, "{history:#?}");
    let layers = history.iter().filter(|h| h.get("empty_layer").is_none()).count();
    assert_eq!(layers, 4, "{history:#?}");
    assert_eq!(inspect["diff_ids"].as_array().unwrap().len(), 4);
    assert_eq!(inspect["config"]["WorkingDir"], "/srv/app");
    assert!(history[1]["created_by"].as_str().unwrap().contains("--install"));

    // Unchanged: every step from the cache, the same image.
    let id1 = inspect["id"].clone();
    let out = build(&d, &dir, &["-t", "built:v2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("0 steps run"), "{}", stderr(&out));
    assert_eq!(d.inspect("default", "built:v2")["id"], id1);
    assert_eq!(stdout(&out).trim(), id1.as_str().unwrap());
    d.assert_healthy();
}

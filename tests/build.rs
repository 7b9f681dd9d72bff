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
    let history = inspect["History"].as_array().unwrap();
    // COPY, RUN --install, ENV, WORKDIR (creates /srv/app), RUN echo, CMD.
    assert_eq!(history.len(), 6, "{history:#?}");
    let layers = history.iter().filter(|h| h.get("empty_layer").is_none()).count();
    assert_eq!(layers, 4, "{history:#?}");
    assert_eq!(inspect["RootFS"]["Layers"].as_array().unwrap().len(), 4);
    assert_eq!(inspect["Config"]["WorkingDir"], "/srv/app");
    assert!(history[1]["created_by"].as_str().unwrap().contains("--install"));

    // Unchanged: every step from the cache, the same image.
    let id1 = inspect["Id"].clone();
    let out = build(&d, &dir, &["-t", "built:v2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("0 steps run"), "{}", stderr(&out));
    assert_eq!(d.inspect("default", "built:v2")["Id"], id1);
    assert_eq!(stdout(&out).trim(), id1.as_str().unwrap());
    d.assert_healthy();
}

/// `berthctl --format json build`: the result's fields.
fn build_json(d: &Daemon, dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--format", "json", "build"];
    args.extend_from_slice(extra);
    let dir = dir.display().to_string();
    args.push(&dir);
    let out = d.ctl(&args);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
    serde_json::from_str(stdout(&out).trim()).unwrap()
}

#[test]
fn a_rebuild_sends_no_file_and_reruns_from_the_first_changed_copy() {
    let d = Daemon::start();
    let dockerfile: &[u8] = b"FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
COPY app/ /app/
RUN cat /app/a /app/b > /joined
CMD [\"cat\", \"/joined\"]
";
    let dir = context(
        &d,
        "ctx",
        &[("Dockerfile", dockerfile), ("app/a", b"A\n"), ("app/b", b"B\n"), ("app/tmp.log", b"noise\n"), (".dockerignore", b"**/*.log\n")],
    );
    let first = build_json(&d, &dir, &["-t", "app:1"]);
    assert!(first["ContextBytes"].as_u64().unwrap() > 500_000, "{first}");
    assert_eq!(d.ok(&["run", "--rm", "app:1"]), "A\nB\n");
    assert!(!d.ok(&["run", "--rm", "app:1", "ls", "/app"]).contains("tmp.log"), "an ignored file was copied");

    // Nothing changed: no file sent, nothing run, the same image.
    let again = build_json(&d, &dir, &["-t", "app:2"]);
    assert_eq!(again["ContextBytes"], 0, "{again}");
    assert_eq!(again["Run"], 0, "{again}");
    assert_eq!(again["Id"], first["Id"]);

    // An ignored file changes nothing.
    std::fs::write(dir.join("app/tmp.log"), b"other noise\n").unwrap();
    let ignored = build_json(&d, &dir, &["-t", "app:3"]);
    assert_eq!((ignored["Run"].as_u64(), ignored["ContextBytes"].as_u64()), (Some(0), Some(0)), "{ignored}");
    assert_eq!(ignored["Id"], first["Id"]);

    // One copied file changes: it alone is sent, and the steps from its COPY on run again.
    std::fs::write(dir.join("app/b"), b"b, changed\n").unwrap();
    let changed = build_json(&d, &dir, &["-t", "app:4"]);
    assert_eq!(changed["ContextBytes"], 11, "{changed}");
    assert_eq!(changed["Run"], 3, "the COPY, and the RUN and CMD after it: {changed}");
    assert_eq!(d.ok(&["run", "--rm", "app:4"]), "A\nb, changed\n");
    d.assert_healthy();
}

#[test]
fn a_failing_run_reports_its_exit_and_output_and_leaves_nothing_behind() {
    let d = Daemon::start();
    let dockerfile: &[u8] = b"FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
RUN echo first line; echo the reason >&2; exit 3
CMD [\"true\"]
";
    let dir = context(&d, "ctx", &[("Dockerfile", dockerfile)]);
    let snaps_before = d.ok(&["snapshot", "ls", "-q"]);
    let out = build(&d, &dir, &["-t", "broken:v1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("exit code 3") && err.contains("the reason") && err.contains("Dockerfile:4"), "{err}");
    assert!(err.contains("#4 first line"), "the step's output was shown as it came: {err}");
    // Nothing tagged, no container, no build snapshot, no mount.
    assert_eq!(d.ok(&["images", "-q"]).trim(), "");
    assert_eq!(d.ok(&["ps", "-a", "-q"]).trim(), "");
    let snaps = d.ok(&["snapshot", "ls"]);
    assert!(!snaps.contains("active"), "{snaps}");
    let _ = snaps_before;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&d.root.display().to_string()), "a mount under the root is left");
    // The steps that succeeded are cached: the same build runs only the failing RUN again.
    let out = build(&d, &dir, &["-t", "broken:v1"]);
    assert!(stderr(&out).matches("CACHED").count() >= 2, "{}", stderr(&out));
    d.assert_healthy();
}

#[test]
fn copy_never_reads_outside_the_context() {
    let d = Daemon::start();
    let dir = context(&d, "ctx", &[("Dockerfile", b"FROM scratch\nCOPY ../secret /x\n")]);
    std::fs::write(d.dir.path().join("secret"), b"outside").unwrap();
    let out = build(&d, &dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("outside the build context"), "{}", stderr(&out));

    // A symlink to /etc/shadow is copied as the link it is, never followed.
    let dir = context(
        &d,
        "ctx2",
        &[(
            "Dockerfile",
            b"FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY shadow /s\nCOPY dir/ /d/\n",
        )],
    );
    std::os::unix::fs::symlink("/etc/shadow", dir.join("shadow")).unwrap();
    std::fs::create_dir(dir.join("dir")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc", dir.join("dir/etc")).unwrap();
    let out = build(&d, &dir, &["-t", "links:v1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(d.ok(&["run", "--rm", "links:v1", "readlink", "/s"]), "/etc/shadow\n");
    assert_eq!(d.ok(&["run", "--rm", "links:v1", "readlink", "/d/etc"]), "../../../../../../etc\n");
    let out = d.ctl(&["run", "--rm", "links:v1", "cat", "/s"]);
    assert_ne!(out.status.code(), Some(0), "the image has no /etc/shadow of its own");
    d.assert_healthy();
}

#[test]
fn the_cache_keeps_its_layers_until_pruned() {
    let d = Daemon::start();
    let dir = context(&d, "ctx", &[("Dockerfile", BASE)]);
    let out = build(&d, &dir, &["-t", "kept:v1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    d.ok(&["rmi", "kept:v1"]);
    assert!(!d.blobs().is_empty(), "the cache keeps the layers of its steps");
    // A rebuild after rmi is all cache, with no unpack.
    let out = build(&d, &dir, &["-t", "kept:v2"]);
    assert!(stderr(&out).contains("0 steps run"), "{}", stderr(&out));
    assert_eq!(d.ok(&["run", "--rm", "kept:v2"]), "hello from /srv/app\n");
    d.ok(&["rmi", "kept:v2"]);
    let pruned = d.ok(&["builder", "prune", "-a"]);
    assert!(pruned.contains("cache entries"), "{pruned}");
    d.assert_nothing_left("default");
}

#[test]
fn stages_copy_from_each_other_run_in_parallel_and_unused_ones_are_skipped() {
    let d = Daemon::start();
    let dockerfile: &[u8] = b"FROM scratch AS base
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]

FROM base AS left
RUN sleep 1; echo left > /left.txt

FROM base AS right
RUN sleep 1; echo right > /right.txt

FROM base AS unused
RUN echo this stage is not needed; exit 1

FROM scratch
COPY --from=base /bin/busybox /bin/busybox
COPY --from=left /left.txt /out/
COPY --from=right /right.txt /out/
CMD [\"/bin/busybox\", \"cat\", \"/out/left.txt\", \"/out/right.txt\"]
";
    let dir = context(&d, "ctx", &[("Dockerfile", dockerfile)]);
    let out = build(&d, &dir, &["-t", "multi:v1"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
    let log = stderr(&out);
    assert!(!log.contains("not needed"), "the unused stage ran: {log}");
    assert_eq!(d.ok(&["run", "--rm", "multi:v1"]), "left\nright\n");
    // The two sleeps overlap: both started before either finished.
    let pos = |needle: &str| log.find(needle).unwrap_or_else(|| panic!("{needle:?} not in {log}"));
    let (left, right) = (log.lines().find(|l| l.contains("echo left")).unwrap(), log.lines().find(|l| l.contains("echo right")).unwrap());
    let num = |l: &str| l.split_whitespace().next().unwrap().to_owned();
    let (nl, nr) = (num(left), num(right));
    let first_done = pos(&format!("{nl} DONE")).min(pos(&format!("{nr} DONE")));
    assert!(pos(left) < first_done && pos(right) < first_done, "{log}");
    // The final image holds only what it copied: one layer per COPY.
    assert_eq!(d.inspect("default", "multi:v1")["RootFS"]["Layers"].as_array().unwrap().len(), 3);

    // --target builds a stage by name.
    let out = build(&d, &dir, &["--target", "left", "-t", "multi:left"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(d.ok(&["run", "--rm", "multi:left", "cat", "/left.txt"]), "left\n");
    d.assert_healthy();
}

#[test]
fn heredocs_onbuild_args_and_metadata_instructions() {
    let d = Daemon::start();
    let base: &[u8] = b"FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
ONBUILD RUN echo triggered > /onbuild.txt
";
    let dir = context(&d, "base", &[("Dockerfile", base)]);
    let out = build(&d, &dir, &["-t", "onbase:v1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let child: &[u8] = b"ARG FLAVOUR=plain
FROM onbase:v1
ARG FLAVOUR
ARG GREETING=hi
ENV WHO=world
LABEL org.example.flavour=\"$FLAVOUR\" maintainer=\"someone\"
EXPOSE 8080 53/udp
STOPSIGNAL SIGINT
RUN <<EOF
echo \"$GREETING $WHO ($FLAVOUR)\" > /greeting
EOF
COPY <<EOF /etc/motd
flavour ${FLAVOUR:-none}, ${MISSING:-default}
EOF
USER 1000:1000
CMD cat /greeting /etc/motd /onbuild.txt
";
    let dir = context(&d, "child", &[("Dockerfile", child)]);
    let out = build(&d, &dir, &["-t", "child:v1", "--build-arg", "FLAVOUR=spicy"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
    assert_eq!(d.ok(&["run", "--rm", "child:v1"]), "hi world (spicy)\nflavour spicy, default\ntriggered\n");
    let i = d.inspect("default", "child:v1");
    let c = &i["Config"];
    assert_eq!(c["Labels"]["org.example.flavour"], "spicy");
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}, "53/udp": {}}));
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["StopSignal"], "SIGINT");
    assert_eq!(c["Cmd"], serde_json::json!(["/bin/sh", "-c", "cat /greeting /etc/motd /onbuild.txt"]));
    assert!(c.get("OnBuild").is_none_or(|o| o.is_null()), "triggers are not inherited: {c}");
    // A build arg is not in the image's environment.
    assert!(!c["Env"].to_string().contains("FLAVOUR"), "{c}");
    d.assert_healthy();
}

/// Every blob of the content store, read whole, contains `needle` nowhere,
/// gzip layers included (decompressed).
fn store_lacks(d: &Daemon, needle: &[u8]) {
    for b in d.blobs() {
        let data = std::fs::read(d.root.join("content/blobs/sha256").join(&b)).unwrap();
        // Layers are zstd (the default) or gzip: read them decompressed.
        let mut plain = Vec::new();
        let decoded = if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            zstd::stream::read::Decoder::new(&data[..]).and_then(|mut r| std::io::Read::read_to_end(&mut r, &mut plain))
        } else {
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&data[..]), &mut plain)
        };
        if decoded.is_err() {
            plain = data;
        }
        assert!(!plain.windows(needle.len()).any(|w| w == needle), "blob {b} holds the secret");
    }
}

#[test]
fn run_mounts_cache_secret_tmpfs_and_bind() {
    let d = Daemon::start();
    let dockerfile: &[u8] = b"FROM scratch AS tools
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
RUN mkdir -p /opt && echo from-tools > /opt/tool.txt

FROM tools
ARG RUNS=1
RUN --mount=type=cache,target=/var/cache/app echo run $RUNS >> /var/cache/app/log && cat /var/cache/app/log > /cache-seen
RUN --mount=type=secret,id=token,required cp /run/secrets/token /dev/null && wc -c < /run/secrets/token > /secret-size
RUN --mount=type=secret,id=token,env=TOKEN test -n \"$TOKEN\" && echo token-in-env > /env-seen
RUN --mount=type=tmpfs,target=/scratch echo temporary > /scratch/x && cat /scratch/x > /tmpfs-seen
RUN --mount=type=bind,source=data,target=/mnt/data cat /mnt/data/in.txt > /bind-seen
RUN --mount=type=bind,from=tools,source=/opt,target=/mnt/tools cat /mnt/tools/tool.txt >> /bind-seen
CMD [\"cat\", \"/cache-seen\", \"/secret-size\", \"/env-seen\", \"/tmpfs-seen\", \"/bind-seen\"]
";
    let dir = context(&d, "ctx", &[("Dockerfile", dockerfile), ("data/in.txt", b"from-context\n")]);
    let secret = d.file("token", b"s3cr3t-value-XYZ");
    let src = format!("id=token,src={}", secret.display());
    let out = build(&d, &dir, &["-t", "mounts:1", "--secret", &src]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
    assert_eq!(d.ok(&["run", "--rm", "mounts:1"]), "run 1\n16\ntoken-in-env\ntemporary\nfrom-context\nfrom-tools\n");
    // Mount points the runtime made are not left in the image.
    let ls = d.ok(&["run", "--rm", "mounts:1", "ls", "-a", "/"]);
    for stub in ["scratch", "mnt", "run", "var"] {
        assert!(!ls.split_whitespace().any(|n| n == stub), "/{stub} was left in the image: {ls}");
    }
    // The secret is in no layer, config, history or inspect.
    let inspect = d.ok(&["image", "inspect", "mounts:1"]);
    assert!(!inspect.contains("s3cr3t"), "{inspect}");
    store_lacks(&d, b"s3cr3t-value-XYZ");
    // (The same search finds what a step did write: the check can fail.)
    let out = build(&d, &dir, &["-t", "mounts:probe", "--secret", &src, "--build-arg", "RUNS=probe"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let found = std::panic::catch_unwind(|| store_lacks(&d, b"run probe"));
    assert!(found.is_err(), "the search did not find text a layer holds");
    // A required secret the client does not give fails the step.
    let out = build(&d, &dir, &["--no-cache"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("secret \"token\" is required"), "{}", stderr(&out));
    // The cache mount keeps its files between builds.
    let out = build(&d, &dir, &["-t", "mounts:2", "--secret", &src, "--build-arg", "RUNS=2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let seen = d.ok(&["run", "--rm", "mounts:2", "cat", "/cache-seen"]);
    assert!(seen.starts_with("run 1\n") && seen.ends_with("run 2\n"), "{seen}");
    // `builder prune -a` empties the cache mounts too.
    assert!(d.ok(&["builder", "prune", "-a"]).contains("1 cache mounts"));
    let out = build(&d, &dir, &["-t", "mounts:3", "--secret", &src, "--build-arg", "RUNS=3"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(d.ok(&["run", "--rm", "mounts:3", "cat", "/cache-seen"]), "run 3\n");
    d.assert_healthy();
}

#[test]
fn a_cancelled_build_stops_its_step_and_leaves_nothing() {
    let d = Daemon::start();
    let dockerfile: &[u8] = b"FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
RUN echo started; sleep 60
";
    let dir = context(&d, "ctx", &[("Dockerfile", dockerfile)]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_berthctl"))
        .args(["build", "--progress", "plain", "-t", "cancelled:v1", &dir.display().to_string()])
        .env("BERTH_ADDRESS", &d.socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the RUN step runs", std::time::Duration::from_secs(60), || !d.ok(&["ps", "-q"]).trim().is_empty());
    let _ = child.kill();
    let _ = child.wait();
    wait_until("the step's container is gone", std::time::Duration::from_secs(20), || d.ok(&["ps", "-a", "-q"]).trim().is_empty());
    assert_eq!(d.ok(&["images", "-q"]).trim(), "");
    let snaps = d.ok(&["snapshot", "ls"]);
    assert!(!snaps.contains("active"), "{snaps}");
    d.assert_healthy();
}

#[test]
fn source_date_epoch_makes_builds_reproducible() {
    let d = Daemon::start();
    let dockerfile: &[u8] = b"FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
RUN mkdir -p /data && echo fixed > /data/file && touch /data/new
COPY app/ /app/
CMD [\"cat\", \"/data/file\"]
";
    let dir = context(&d, "ctx", &[("Dockerfile", dockerfile), ("app/x", b"x")]);
    let one = build_json(&d, &dir, &["--no-cache", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", "-t", "repro:1"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let two = build_json(&d, &dir, &["--no-cache", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", "-t", "repro:2"]);
    assert_eq!(one["Digest"], two["Digest"], "{one}\n{two}");
    let i = d.inspect("default", "repro:1");
    assert_eq!(i["Created"], "2023-11-14T22:13:20Z");
    // File times in the layers are clamped too.
    let listing = d.ok(&["run", "--rm", "repro:1", "stat", "-c", "%Y", "/data/new"]);
    assert_eq!(listing.trim(), "1700000000");
    // Without it, two builds differ (their times do).
    let three = build_json(&d, &dir, &["--no-cache", "-t", "repro:3"]);
    assert_ne!(three["Digest"], one["Digest"]);
}

/// An HTTP server on loopback serving `body` at every path; counts requests.
fn serve(body: Vec<u8>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = conn.write_all(&body);
        }
    });
    (addr, hits)
}

#[test]
fn add_unpacks_local_archives_and_fetches_urls_with_a_checksum() {
    let d = Daemon::start();
    let archive = compress(
        &layer(&[Entry::Dir("pkg".into(), 0o755), Entry::File("pkg/readme".into(), b"from the archive\n".to_vec(), 0o644)]),
        Compress::Gzip,
    );
    let hostile = layer(&[Entry::RawFile(b"../../escaped".to_vec(), b"x".to_vec())]);
    let (addr, hits) = serve(b"fetched over http\n".to_vec());
    let sum = sha256(b"fetched over http\n").trim_start_matches("sha256:").to_owned();
    let dockerfile = format!(
        "FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
ADD pkg.tar.gz /opt/
COPY pkg.tar.gz /kept/
ADD --checksum=sha256:{sum} http://{addr}/files/notes.txt /downloads/
CMD [\"cat\", \"/opt/pkg/readme\", \"/downloads/notes.txt\"]
"
    );
    let dir = context(&d, "ctx", &[("Dockerfile", dockerfile.as_bytes()), ("pkg.tar.gz", &archive)]);
    let out = build(&d, &dir, &["-t", "added:v1"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
    assert_eq!(d.ok(&["run", "--rm", "added:v1"]), "from the archive\nfetched over http\n");
    // COPY keeps an archive as it is; a fetched file is 0600.
    assert_eq!(d.ok(&["run", "--rm", "added:v1", "ls", "/kept"]), "pkg.tar.gz\n");
    assert_eq!(d.ok(&["run", "--rm", "added:v1", "stat", "-c", "%a", "/downloads/notes.txt"]), "600\n");
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // A wrong checksum fails the step; a hostile archive is refused.
    let bad = dockerfile.replace(&sum, &"0".repeat(64));
    let dir = context(&d, "bad", &[("Dockerfile", bad.as_bytes()), ("pkg.tar.gz", &archive)]);
    let out = build(&d, &dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--checksum"), "{}", stderr(&out));
    let dir = context(&d, "hostile", &[("Dockerfile", b"FROM scratch\nADD evil.tar /\n"), ("evil.tar", &hostile)]);
    let out = build(&d, &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!d.dir.path().join("escaped").exists() && !d.root.join("escaped").exists());
    d.assert_healthy();
}

#[test]
fn an_untagged_build_runs_by_id_and_a_context_comes_on_stdin() {
    let d = Daemon::start();
    let dir = context(&d, "ctx", &[("Dockerfile", BASE)]);
    let id = d.ok(&["build", "-q", &dir.display().to_string()]);
    let id = id.trim();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(d.ok(&["run", "--rm", &id[7..19]]), "hello from /srv/app\n");
    let listed = d.ok(&["images"]);
    assert!(listed.contains("<none>"), "{listed}");

    // A tar of the context on standard input.
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_dir_all(".", &dir).unwrap();
    let data = tar.into_inner().unwrap();
    let out = d.ctl_stdin(&["build", "-q", "-t", "fromstdin:v1", "-"], Some(&data));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(d.ok(&["run", "--rm", "fromstdin:v1"]), "hello from /srv/app\n");
    // A lone Dockerfile on standard input: an empty context.
    let out = d.ctl_stdin(&["build", "-q", "-t", "lone:v1", "-"], Some(b"FROM fromstdin:v1\nENV X=1\n"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = d.ctl_stdin(&["build", "-", "-"], Some(b"FROM scratch\nCOPY x /x\n"));
    assert_eq!(out.status.code(), Some(2), "clap refuses two positionals: {}", stderr(&out));
}

#[test]
fn copy_parents_exclude_and_the_platform_of_from() {
    let d = Daemon::start();
    let dockerfile: &[u8] = b"FROM --platform=$BUILDPLATFORM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
COPY --parents src/a/one.txt src/b/two.txt /out/
COPY --exclude=*.log --exclude=**/skip logs/ /logs/
CMD [\"find\", \"/out\", \"/logs\", \"-type\", \"f\"]
";
    let dir = context(
        &d,
        "ctx",
        &[
            ("Dockerfile", dockerfile),
            ("src/a/one.txt", b"1"),
            ("src/b/two.txt", b"2"),
            ("logs/keep.txt", b"k"),
            ("logs/noise.log", b"n"),
            ("logs/deep/skip", b"s"),
        ],
    );
    let out = build(&d, &dir, &["-t", "rules:v1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut files: Vec<String> = d.ok(&["run", "--rm", "rules:v1"]).lines().map(str::to_owned).collect();
    files.sort();
    assert_eq!(files, ["/logs/keep.txt", "/out/src/a/one.txt", "/out/src/b/two.txt"]);
    let dir = context(&d, "arm", &[("Dockerfile", b"FROM --platform=linux/arm64 scratch\nCOPY busybox /\n")]);
    let out = build(&d, &dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("builds for linux/amd64 only"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_past_its_deadline_stops() {
    use berth_api::v1;
    let d = Daemon::start();
    let dir = context(&d, "ctx", &[]);
    let dockerfile = b"FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"60\"]\n".to_vec();
    let size = std::fs::metadata(dir.join("busybox")).unwrap().len() as i64;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let start = v1::BuildStart { dockerfile, tags: vec!["late:v1".into()], ..Default::default() };
    tx.send(v1::BuildRequest { msg: Some(v1::build_request::Msg::Start(start)) }).await.unwrap();
    let entry = v1::ContextEntry { path: "busybox".into(), mode: 0o100755, size, mtime_nanos: 1, link_target: String::new() };
    let entries = v1::ContextEntries { entries: vec![entry], last: true };
    tx.send(v1::BuildRequest { msg: Some(v1::build_request::Msg::Entries(entries)) }).await.unwrap();
    let mut client = v1::builder_client::BuilderClient::new(d.channel().await);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.set_timeout(std::time::Duration::from_secs(4));
    let t0 = std::time::Instant::now();
    let mut stream = client.build(req).await.unwrap().into_inner();
    let mut ended = None;
    while let Some(m) = tokio_stream::StreamExt::next(&mut stream).await {
        match m {
            Ok(v1::BuildResponse { msg: Some(v1::build_response::Msg::Need(_)) }) => {
                let data = std::fs::read(dir.join("busybox")).unwrap();
                let chunk = v1::FileChunk { path: "busybox".into(), data, eof: true };
                tx.send(v1::BuildRequest { msg: Some(v1::build_request::Msg::File(chunk)) }).await.unwrap();
            }
            Ok(_) => {}
            Err(s) => {
                ended = Some(s);
                break;
            }
        }
    }
    let status = ended.expect("the build cannot succeed before its RUN sleeps 60 s");
    assert!(matches!(status.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled), "{status:?}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(30));
    drop(tx);
    wait_until("the step's container is gone", std::time::Duration::from_secs(20), || d.ok(&["ps", "-a", "-q"]).trim().is_empty());
    assert_eq!(d.ok(&["images", "-q"]).trim(), "");
}

#[test]
fn bind_mounts_never_reach_the_host_nor_change_a_stage() {
    let d = Daemon::start();
    let dockerfile: &[u8] = b"FROM scratch AS tools
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
RUN mkdir -p /opt && echo kept > /opt/tool.txt

FROM tools
RUN --mount=type=bind,from=tools,source=/opt,target=/o,rw rm /o/tool.txt && echo wrote > /o/new
RUN --mount=type=bind,from=tools,source=/opt,target=/o cat /o/tool.txt > /seen && test ! -e /o/new
CMD [\"cat\", \"/seen\"]
";
    let dir = context(&d, "ctx", &[("Dockerfile", dockerfile)]);
    let out = build(&d, &dir, &["-t", "binds:v1"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
    assert_eq!(d.ok(&["run", "--rm", "binds:v1"]), "kept\n");
    // The stage's layer itself is unchanged: a COPY --from still finds the file.
    let dir2 = context(&d, "ctx2", &[("Dockerfile", b"FROM binds:v1\nRUN cat /opt/tool.txt\n")]);
    let out = build(&d, &dir2, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A link in the context as a bind source is refused, not followed on the host.
    let dir3 = context(&d, "ctx3", &[("Dockerfile", b"FROM binds:v1\nRUN --mount=type=bind,source=h,target=/h ls /h/etc\n")]);
    std::os::unix::fs::symlink("/", dir3.join("h")).unwrap();
    let out = build(&d, &dir3, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a link"), "{}", stderr(&out));
}

#[test]
fn stages_named_by_mounts_and_args_run_and_ignore_exceptions_keep_their_dirs() {
    let d = Daemon::start();
    let dockerfile: &[u8] = b"ARG SRC=maker
FROM scratch AS base
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]

FROM base AS maker
RUN echo made > /made.txt

FROM base AS other
RUN echo other > /other.txt

FROM base
COPY --from=${SRC} /made.txt /
RUN --mount=type=bind,from=other,source=/other.txt,target=/o.txt cat /o.txt > /copied.txt
COPY docs/ /docs/
CMD [\"cat\", \"/made.txt\", \"/copied.txt\", \"/docs/README.md\"]
";
    let dir = context(
        &d,
        "ctx",
        &[
            ("Dockerfile", dockerfile),
            ("docs/README.md", b"readme\n"),
            ("docs/draft.md", b"draft\n"),
            (".dockerignore", b"docs\n!docs/README.md\n"),
        ],
    );
    let out = build(&d, &dir, &["-t", "deps:v1"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
    assert_eq!(d.ok(&["run", "--rm", "deps:v1"]), "made\nother\nreadme\n");
    assert_eq!(d.ok(&["run", "--rm", "deps:v1", "ls", "/docs"]), "README.md\n");
}

#[test]
fn a_failing_stage_stops_its_running_siblings() {
    let d = Daemon::start();
    let dockerfile: &[u8] = b"FROM scratch AS base
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]

FROM base AS slow
RUN sleep 60

FROM base AS broken
RUN sleep 1; exit 5

FROM base
COPY --from=slow /bin/busybox /a
COPY --from=broken /bin/busybox /b
";
    let dir = context(&d, "ctx", &[("Dockerfile", dockerfile)]);
    let t0 = std::time::Instant::now();
    let out = build(&d, &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("exit code 5"), "{}", stderr(&out));
    assert!(t0.elapsed() < std::time::Duration::from_secs(30), "the sleeping stage was waited for: {:?}", t0.elapsed());
    assert_eq!(d.ok(&["ps", "-a", "-q"]).trim(), "", "a stage's container was left");
}

#[test]
fn source_date_epoch_on_the_native_snapshotter_clamps_only_what_changed() {
    let d = Daemon::start_with(&["--snapshotter", "native"]);
    let dockerfile: &[u8] = b"FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
RUN mkdir -p /data && echo fixed > /data/file
";
    let dir = context(&d, "ctx", &[("Dockerfile", dockerfile)]);
    let one = build_json(&d, &dir, &["--no-cache", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", "-t", "native:1"]);
    let two = build_json(&d, &dir, &["--no-cache", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", "-t", "native:2"]);
    assert_eq!(one["Digest"], two["Digest"]);
    // The last layer holds /data, not the inherited busybox again.
    let i = d.inspect("default", "native:1");
    let last = i["Layers"].as_array().unwrap().last().unwrap()["Size"].as_u64().unwrap();
    assert!(last < 100_000, "the last layer is {last} bytes: inherited files were taken for changes");
}

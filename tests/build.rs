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

#[test]
fn another_dockerfile_comes_from_a_path_or_standard_input() {
    let d = Daemon::start();
    let dockerfile: &[u8] = b"FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
COPY msg.txt /msg.txt
CMD [\"cat\", \"/msg.txt\"]
";
    let dir = context(&d, "ctx", &[("docker/Dockerfile.dev", dockerfile), ("msg.txt", b"from the context\n")]);
    // No CONTEXT/Dockerfile: the default is refused, pointing at -f.
    let out = build(&d, &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("choose another with -f"), "{}", stderr(&out));

    // A Dockerfile of another name inside the context.
    let inside = dir.join("docker/Dockerfile.dev").display().to_string();
    let out = build(&d, &dir, &["-f", &inside, "-t", "dev:inside"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
    assert_eq!(d.ok(&["run", "--rm", "dev:inside"]), "from the context\n");

    // One outside the context: its instructions, the context's files.
    let outside = d.file("elsewhere.Dockerfile", b"FROM dev:inside\nCOPY msg.txt /again.txt\nCMD [\"cat\", \"/again.txt\"]\n");
    let out = build(&d, &dir, &["--file", &outside.display().to_string(), "-t", "dev:outside"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(d.ok(&["run", "--rm", "dev:outside"]), "from the context\n");
    // Its errors name it, not "Dockerfile".
    let broken = d.file("broken.Dockerfile", b"FROM dev:inside\nCOPY missing.txt /x\n");
    let out = build(&d, &dir, &["-f", &broken.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:2: COPY", broken.display())) && err.contains("missing.txt"), "{err}");

    // `-f -`: the Dockerfile on standard input, the context a directory.
    let dir_arg = dir.display().to_string();
    let out = d.ctl_stdin(
        &["build", "-q", "-f", "-", "-t", "dev:stdin", &dir_arg],
        Some(b"FROM dev:inside\nCOPY msg.txt /stdin.txt\nCMD [\"cat\", \"/stdin.txt\", \"/msg.txt\"]\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(d.ok(&["run", "--rm", "dev:stdin"]), "from the context\nfrom the context\n");
    let history = d.inspect("default", "dev:stdin")["History"].as_array().unwrap().clone();
    assert!(history.iter().any(|h| h["created_by"].as_str().is_some_and(|c| c.contains("/stdin.txt"))), "{history:#?}");
    // Standard input cannot be both.
    let out = d.ctl_stdin(&["build", "-f", "-", "-"], Some(b"FROM scratch\n"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot be both"), "{}", stderr(&out));
    d.assert_healthy();
}

#[test]
fn iidfile_labels_and_quiet_output() {
    let d = Daemon::start();
    let dockerfile: &[u8] = b"FROM scratch
COPY busybox /bin/busybox
LABEL org.example.team=\"from the file\" org.example.kept=yes
CMD [\"/bin/busybox\", \"true\"]
";
    let dir = context(&d, "ctx", &[("Dockerfile", dockerfile)]);
    let iid = d.dir.path().join("image.id");
    let iid_arg = iid.display().to_string();
    let dir_arg = dir.display().to_string();
    let out = d.ctl(&[
        "build",
        "-q",
        "--iidfile",
        &iid_arg,
        "--label",
        "org.example.team=builders",
        "--label",
        "org.example.empty=",
        "-t",
        "labelled:v1",
        &dir_arg,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
    // -q: the id alone on standard output, nothing on standard error.
    let printed = stdout(&out);
    assert_eq!(printed.lines().count(), 1, "{printed:?}");
    let id = printed.trim_end_matches('\n');
    assert!(id.starts_with("sha256:") && id.len() == 71 && id[7..].bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
    assert_eq!(stderr(&out), "", "-q shows no progress");
    // The iidfile holds the same id (no newline), the one `image inspect` gives.
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id);
    let i = d.inspect("default", "labelled:v1");
    assert_eq!(i["Id"], id);
    // --label adds to the Dockerfile's labels and wins over one of the same key.
    let labels = &i["Config"]["Labels"];
    assert_eq!(labels, &serde_json::json!({"org.example.team": "builders", "org.example.kept": "yes", "org.example.empty": ""}));

    // Labels are the image's, not its steps': another label reruns nothing, and gives another id.
    let other = build_json(&d, &dir, &["--label", "org.example.team=others", "--iidfile", &iid_arg, "-t", "labelled:v2"]);
    assert_eq!(other["Run"], 0, "{other}");
    assert_ne!(other["Id"], id);
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), other["Id"].as_str().unwrap());
    assert_eq!(d.inspect("default", "labelled:v2")["Config"]["Labels"]["org.example.team"], "others");
    // Without -q the id is on standard output too, the progress on standard error.
    let out = build(&d, &dir, &["-t", "labelled:plain"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plain = d.inspect("default", "labelled:plain");
    assert_eq!(stdout(&out).trim(), plain["Id"].as_str().unwrap());
    assert_eq!(plain["Config"]["Labels"], serde_json::json!({"org.example.team": "from the file", "org.example.kept": "yes"}));
    assert!(stderr(&out).contains("#2 CACHED"), "{}", stderr(&out));
    // A label without = is refused before anything is sent.
    let out = build(&d, &dir, &["--label", "novalue"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--label \"novalue\": use KEY=VALUE"), "{}", stderr(&out));
    d.assert_healthy();
}

#[test]
fn pull_asks_the_registry_and_a_base_that_cannot_be_pulled_names_its_line() {
    require_tool("runc", "runc");
    let d = Daemon::start();
    // An image named for a registry nobody serves (port 1), present in the store.
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let archive = d.file("base.tar", &oci_archive(&[("127.0.0.1:1/base:v1", &spec)]));
    d.ok(&["load", "-i", archive.to_str().unwrap()]);
    let dockerfile: &[u8] = b"FROM 127.0.0.1:1/base:v1
RUN echo built on the local base > /note
CMD [\"cat\", \"/note\"]
";
    let dir = context(&d, "ctx", &[("Dockerfile", dockerfile)]);
    // Present: used as it is, the registry is never asked.
    let out = build(&d, &dir, &["-t", "onbase:v1"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
    assert!(!stderr(&out).contains("pull "), "{}", stderr(&out));
    assert_eq!(d.ok(&["run", "--rm", "onbase:v1"]), "built on the local base\n");
    // --pull asks the registry even so: here it cannot answer, and the build says where.
    let t0 = std::time::Instant::now();
    let out = build(&d, &dir, &["--pull", "-t", "onbase:v2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:1: FROM: pulling 127.0.0.1:1/base:v1"), "{err}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(60), "{:?}", t0.elapsed());
    let out = d.ctl(&["image", "inspect", "onbase:v2"]);
    assert_ne!(out.status.code(), Some(0), "a failed build named its image");

    // A base that is not here and cannot be pulled: its FROM's line, in the stage it is in.
    let missing: &[u8] = b"FROM 127.0.0.1:1/base:v1 AS first
RUN true

FROM 127.0.0.1:1/nothing:latest
COPY --from=first /bin/busybox /bin/busybox
";
    let dir = context(&d, "missing", &[("Dockerfile", missing)]);
    let out = build(&d, &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:4: FROM: pulling 127.0.0.1:1/nothing:latest"), "{err}");
    assert!(err.lines().any(|l| l.starts_with("#3 FAILED")), "the FROM step is shown failed: {err}");
    // The same for COPY --from an image that cannot be pulled.
    let dir =
        context(&d, "copyfrom", &[("Dockerfile", b"FROM scratch\nCOPY busybox /bin/busybox\nCOPY --from=127.0.0.1:1/nothing:v2 /x /x\n")]);
    let out = build(&d, &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:3: COPY: pulling 127.0.0.1:1/nothing:v2"), "{err}");
    assert!(err.lines().any(|l| l.starts_with("#3 FAILED")), "{err}");
    assert_eq!(d.ok(&["ps", "-a", "-q"]).trim(), "");
    d.assert_healthy();
}

#[test]
fn the_cache_survives_a_restart_and_serves_another_dockerfile_sharing_its_first_steps() {
    let mut d = Daemon::start();
    let first: &[u8] = b"FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
RUN echo shared-step-$((40 + 2)) && echo shared > /shared
RUN echo first > /which
CMD [\"cat\", \"/shared\", \"/which\"]
";
    let dir = context(&d, "one", &[("Dockerfile", first)]);
    let out = build(&d, &dir, &["-t", "first:v1"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
    assert!(stderr(&out).contains("#4 shared-step-42"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("CACHED"), "a fresh agent had a cache: {}", stderr(&out));

    // The agent is killed and started again on the same root.
    d.kill9();
    d.spawn();

    // Another Dockerfile, in another context: its first steps are the first one's.
    let second: &[u8] = b"FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
RUN echo shared-step-$((40 + 2)) && echo shared > /shared
RUN echo second > /which
CMD [\"cat\", \"/shared\", \"/which\"]
";
    let dir2 = context(&d, "two", &[("Dockerfile", second)]);
    let out = build(&d, &dir2, &["-t", "second:v1"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
    let log = stderr(&out);
    for step in ["#2 CACHED", "#3 CACHED", "#4 CACHED"] {
        assert!(log.lines().any(|l| l == step), "{step} missing: {log}");
    }
    for step in ["#5 CACHED", "#6 CACHED"] {
        assert!(!log.lines().any(|l| l == step), "{step}: {log}");
    }
    assert!(!log.contains("shared-step-42"), "a cached RUN ran again: {log}");
    assert!(log.contains("2 steps run, 3 cached"), "{log}");
    assert_eq!(d.ok(&["run", "--rm", "second:v1"]), "shared\nsecond\n");
    // They share the layers of those steps.
    let (a, b) = (d.inspect("default", "first:v1"), d.inspect("default", "second:v1"));
    let (la, lb) = (a["RootFS"]["Layers"].as_array().unwrap(), b["RootFS"]["Layers"].as_array().unwrap());
    assert_eq!((la.len(), lb.len()), (4, 4));
    assert_eq!(la[..3], lb[..3]);
    assert_ne!(la[3], lb[3]);
    // And the first Dockerfile is all cache, after the restart too.
    let again = build_json(&d, &dir, &["-t", "first:v2"]);
    assert_eq!(again["Run"], 0, "{again}");
    assert_eq!(again["Id"], a["Id"]);
    d.assert_healthy();
}

#[test]
fn shell_volume_entrypoint_copy_ownership_and_copy_from_an_image() {
    let d = Daemon::with_busybox();
    let dockerfile: &[u8] = b"FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
COPY --from=busybox /etc/passwd /etc/group /etc/
COPY --from=docker.io/library/busybox:latest --chown=1000:1000 /bin/busybox /from-image/busybox
SHELL [\"/bin/sh\", \"-c\"]
RUN echo $((6 * 7)) > /answer
SHELL [\"/bin/sh\", \"-x\", \"-c\"]
RUN echo traced > /traced
COPY --chown=1000:1000 --chmod=0640 conf.txt /etc/app/conf.txt
COPY --chown=nobody:nogroup data/ /srv/data/
VOLUME [\"/data\", \"/logs\"]
VOLUME /cache
CMD echo shell-form
";
    let dir =
        context(&d, "ctx", &[("Dockerfile", dockerfile), ("conf.txt", b"setting=1\n"), ("data/a.txt", b"a"), ("data/sub/b.txt", b"b")]);
    let out = build(&d, &dir, &["-t", "files:v1"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
    // SHELL: the RUN after it runs in it; -x traces the command, relayed as the step's output.
    // (One line, though the shell writes "+ " and the command apart.)
    assert!(stderr(&out).lines().any(|l| l == "#9 + echo traced"), "{}", stderr(&out));
    let cat = |path: &str| d.ok(&["run", "--rm", "files:v1", "cat", path]);
    assert_eq!(cat("/answer"), "42\n");
    assert_eq!(cat("/traced"), "traced\n");
    let i = d.inspect("default", "files:v1");
    let c = &i["Config"];
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-x", "-c"]));
    // The shell form of CMD is the SHELL's too.
    assert_eq!(c["Cmd"], serde_json::json!(["/bin/sh", "-x", "-c", "echo shell-form"]));
    assert_eq!(d.ok(&["run", "--rm", "files:v1"]), "shell-form\n");
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}, "/logs": {}, "/cache": {}}));

    // --chown (numbers, or names from the stage's own /etc/passwd) and --chmod.
    let stat = |path: &str| d.ok(&["run", "--rm", "files:v1", "stat", "-c", "%u:%g %a", path]);
    assert_eq!(stat("/etc/app/conf.txt"), "1000:1000 640\n");
    assert_eq!(cat("/etc/app/conf.txt"), "setting=1\n");
    assert_eq!(stat("/srv/data/a.txt"), "65534:65534 644\n");
    assert_eq!(stat("/srv/data/sub/b.txt"), "65534:65534 644\n");
    assert_eq!(stat("/etc/passwd"), "0:0 644\n");
    // COPY --from an image of the store (not a stage): its files, owned as asked.
    assert!(cat("/etc/passwd").contains("nobody:x:65534:65534"), "{}", cat("/etc/passwd"));
    assert_eq!(stat("/from-image/busybox"), "1000:1000 755\n");
    assert_eq!(d.ok(&["run", "--rm", "files:v1", "/from-image/busybox", "echo", "from the image"]), "from the image\n");
    // An image named in COPY --from that the store lacks is pulled: here none can be.
    let dir2 = context(&d, "nobase", &[("Dockerfile", b"FROM scratch\nCOPY --from=127.0.0.1:1/absent:v1 /x /x\n")]);
    let out = build(&d, &dir2, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // ENTRYPOINT: an inherited CMD does not outlive it...
    let dir3 = context(&d, "entry", &[("Dockerfile", b"FROM files:v1\nENTRYPOINT [\"/bin/echo\", \"entry:\"]\n")]);
    let out = build(&d, &dir3, &["-t", "entry:v1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let c = d.inspect("default", "entry:v1")["Config"].clone();
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/echo", "entry:"]));
    assert!(c["Cmd"].is_null(), "{c}");
    assert_eq!(d.ok(&["run", "--rm", "entry:v1"]), "entry:\n");
    assert_eq!(d.ok(&["run", "--rm", "entry:v1", "a", "b"]), "entry: a b\n");
    // ...but a CMD of the same stage does; a shell-form ENTRYPOINT runs in the SHELL.
    let dir4 = context(&d, "entry2", &[("Dockerfile", b"FROM files:v1\nCMD [\"ignored\"]\nENTRYPOINT echo from the entrypoint\n")]);
    let out = build(&d, &dir4, &["-t", "entry:v2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let c = d.inspect("default", "entry:v2")["Config"].clone();
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-x", "-c", "echo from the entrypoint"]));
    assert_eq!(c["Cmd"], serde_json::json!(["ignored"]));
    assert_eq!(d.ok(&["run", "--rm", "entry:v2"]), "from the entrypoint\n");
    d.assert_healthy();
}

#[test]
fn copy_link_copies_as_a_plain_copy_does() {
    let d = Daemon::start();
    let linked: &[u8] = b"FROM scratch
COPY busybox /bin/busybox
COPY --link app.txt /srv/
COPY --link=false app.txt /plain/app.txt
CMD [\"/bin/busybox\", \"cat\", \"/srv/app.txt\", \"/plain/app.txt\"]
";
    let dir = context(&d, "linked", &[("Dockerfile", linked), ("app.txt", b"app\n")]);
    let out = build(&d, &dir, &["-t", "link:v1"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
    assert_eq!(d.ok(&["run", "--rm", "link:v1"]), "app\napp\n");
    let i = d.inspect("default", "link:v1");
    assert_eq!(i["RootFS"]["Layers"].as_array().unwrap().len(), 3);
    let history = i["History"].as_array().unwrap();
    assert_eq!(history[1]["created_by"], "COPY --link app.txt /srv/");

    // Without --link: the same layer, byte for byte; the history says what this Dockerfile says.
    let plain: &[u8] = b"FROM scratch
COPY busybox /bin/busybox
COPY app.txt /srv/
";
    let plain = d.file("plain.Dockerfile", plain);
    let out = build(&d, &dir, &["-f", &plain.display().to_string(), "-t", "link:plain"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let p = d.inspect("default", "link:plain");
    assert_eq!(p["RootFS"]["Layers"][1], i["RootFS"]["Layers"][1]);
    assert_eq!(p["History"][1]["created_by"], "COPY app.txt /srv/");
    d.assert_healthy();
}

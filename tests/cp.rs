//! `berthctl cp`: files in and out of containers, running or not, with docker's rules for
//! where a copy lands, and the tar applier's rules for what it may touch.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;

#[test]
fn cp_in_and_out_of_a_running_container_lands_where_docker_s_does() {
    let d = Daemon::with_busybox();
    d.ok(&["volume", "create", "data"]);
    d.ok(&["run", "-d", "--name", "web", "-v", "data:/data", "busybox", "sleep", "600"]);
    let local = d.dir.path().join("local");
    std::fs::create_dir_all(local.join("site/css")).unwrap();
    std::fs::write(local.join("site/index.html"), b"<h1>hi</h1>\n").unwrap();
    std::fs::write(local.join("site/css/a.css"), b"body{}\n").unwrap();
    std::fs::write(local.join("app.conf"), b"port=80\n").unwrap();
    let l = |p: &str| local.join(p).to_str().unwrap().to_owned();

    // A file into a directory keeps its name; to a new path it takes that name.
    d.ok(&["cp", &l("app.conf"), "web:/etc/"]);
    d.ok(&["cp", &l("app.conf"), "web:/etc/renamed.conf"]);
    // A directory into a directory goes under its own name; to a new path it becomes it.
    d.ok(&["exec", "web", "mkdir", "/srv"]);
    d.ok(&["cp", &l("site"), "web:/srv"]);
    d.ok(&["cp", &l("site"), "web:/www"]);
    // What a directory holds, into one that exists: here a volume, mounted in the container.
    d.ok(&["cp", &format!("{}/.", l("site")), "web:/data"]);
    let cat = |p: &str| d.ok(&["exec", "web", "cat", p]);
    assert_eq!(cat("/etc/app.conf"), "port=80\n");
    assert_eq!(cat("/etc/renamed.conf"), "port=80\n");
    assert_eq!(cat("/srv/site/css/a.css"), "body{}\n");
    assert_eq!(cat("/www/index.html"), "<h1>hi</h1>\n");
    assert_eq!(cat("/data/index.html"), "<h1>hi</h1>\n");
    // Without -a, what comes in belongs to the container's root.
    let ls = d.ok(&["exec", "web", "ls", "-ln", "/etc/app.conf"]);
    assert_eq!(ls.split_whitespace().nth(2), Some("0"), "{ls}");

    // Out: a file into a directory, to a new name; a directory (from the volume) as a new one.
    d.ok(&["exec", "web", "sh", "-c", "echo made inside > /tmp/made; mkdir -p /tmp/tree/sub; echo deep > /tmp/tree/sub/f"]);
    let out = d.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = |p: &str| out.join(p).to_str().unwrap().to_owned();
    d.ok(&["cp", "web:/tmp/made", &o("")]);
    d.ok(&["cp", "web:/tmp/made", &o("other")]);
    d.ok(&["cp", "web:/tmp/tree", &o("copy")]);
    d.ok(&["cp", "web:/data", &o("")]);
    d.ok(&["cp", "web:/tmp/tree/.", &o("copy")]);
    assert_eq!(std::fs::read_to_string(out.join("made")).unwrap(), "made inside\n");
    assert_eq!(std::fs::read_to_string(out.join("other")).unwrap(), "made inside\n");
    assert_eq!(std::fs::read_to_string(out.join("copy/sub/f")).unwrap(), "deep\n");
    assert_eq!(std::fs::read_to_string(out.join("data/css/a.css")).unwrap(), "body{}\n");
    assert!(out.join("copy/sub").is_dir() && !out.join("copy/tree").exists());

    // A tar stream out, and back in.
    let tar = d.ctl(&["cp", "web:/tmp/tree", "-"]);
    assert!(tar.status.success(), "{}", stderr(&tar));
    let names: Vec<String> =
        tar::Archive::new(&tar.stdout[..]).entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    assert_eq!(names, ["tree/", "tree/sub/", "tree/sub/f"]);
    let back = d.ctl_stdin(&["cp", "-", "web:/etc"], Some(&tar.stdout));
    assert!(back.status.success(), "{}", stderr(&back));
    assert_eq!(cat("/etc/tree/sub/f"), "deep\n");

    // docker's refusals.
    assert!(d.fails(&["cp", "web:/nothing", &o("")]).contains("could not find the file /nothing in container web"));
    assert!(d.fails(&["cp", &l("site"), "web:/etc/app.conf"]).contains("cannot copy a directory to a file"));
    assert!(d.fails(&["cp", &l("app.conf"), "web:/no/such/dir/"]).contains("does not exist"));
    assert!(d.fails(&["cp", &l("app.conf"), "nosuch:/tmp"]).contains("nosuch"));
    assert!(d.fails(&["cp", &l("app.conf"), &o("")]).contains("CONTAINER:PATH"));
    d.ok(&["rm", "-f", "web"]);
}

#[test]
fn cp_reaches_a_stopped_container_s_files_and_leaves_it_startable() {
    let d = Daemon::with_busybox();
    d.ok(&["create", "--name", "job", "busybox", "cat", "/etc/job.conf"]);
    let conf = d.file("job.conf", b"threads=4\n");
    std::os::unix::fs::chown(&conf, Some(1234), Some(2345)).unwrap();
    // -a keeps the source's owners.
    d.ok(&["cp", "-a", conf.to_str().unwrap(), "job:/etc/job.conf"]);
    d.ok(&["start", "-a", "job"]);
    assert_eq!(d.ok(&["logs", "job"]), "threads=4\n");
    // Out of the exited container: its writable layer, owned by the caller without -a.
    let out = d.dir.path().join("back.conf");
    d.ok(&["cp", "job:/etc/job.conf", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "threads=4\n");
    assert_eq!(std::fs::metadata(&out).unwrap().uid(), 0);
    let kept = d.dir.path().join("kept.conf");
    d.ok(&["cp", "-a", "job:/etc/job.conf", kept.to_str().unwrap()]);
    assert_eq!((std::fs::metadata(&kept).unwrap().uid(), std::fs::metadata(&kept).unwrap().gid()), (1234, 2345));
    // The copy is in what a commit keeps.
    assert!(d.ok(&["diff", "job"]).contains("A /etc/job.conf"));
    // And the container starts again, its snapshot unmounted by the copies.
    d.ok(&["start", "-a", "job"]);
    d.ok(&["rm", "job"]);

    // A stopped container's volume is in the copy, as in the container.
    d.ok(&["run", "--name", "writer", "-v", "vol:/data", "busybox", "sh", "-c", "echo from-writer > /data/f"]);
    let f = d.dir.path().join("f");
    d.ok(&["cp", "writer:/data/f", f.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "from-writer\n");
    d.ok(&["cp", conf.to_str().unwrap(), "writer:/data/"]);
    assert_eq!(d.ok(&["run", "--rm", "-v", "vol:/v", "busybox", "cat", "/v/job.conf"]), "threads=4\n");
    assert!(!d.ok(&["diff", "writer"]).contains("job.conf"), "the copy went to the writable layer, not the volume");
    d.ok(&["rm", "writer"]);
    // Nothing of the copies is left: no mount, no stage.
    let scratch: Vec<_> = std::fs::read_dir(d.root.join("build/mnt")).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(scratch.is_empty(), "{scratch:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(d.root.to_str().unwrap()), "a mount is left under the agent's root");
}

#[test]
fn cp_stays_inside_the_container_and_writes_nothing_from_a_bad_archive() {
    let d = Daemon::with_busybox();
    d.ok(&["run", "-d", "--name", "box", "busybox", "sleep", "600"]);
    // Links that lead out of the container's root, absolute and by `..`.
    d.ok(&["exec", "box", "busybox", "ln", "-s", "/", "/hostroot"]);
    d.ok(&["exec", "box", "busybox", "ln", "-s", "../../../../../../etc", "/up"]);
    let marker = format!("berth-cp-{}", std::process::id());
    let f = d.file(&marker, b"inside\n");
    d.ok(&["cp", f.to_str().unwrap(), "box:/up/"]);
    d.ok(&["cp", f.to_str().unwrap(), "box:/hostroot/etc/"]);
    assert!(!Path::new("/etc").join(&marker).exists(), "a copy went out to the host's /etc");
    assert_eq!(d.ok(&["exec", "box", "cat", &format!("/etc/{marker}")]), "inside\n");
    // Out through the same link: the container's file, not the host's.
    let out = d.dir.path().join("group");
    d.ok(&["exec", "box", "sh", "-c", "echo container-group > /etc/group"]);
    d.ok(&["cp", "-L", "box:/up/group", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "container-group\n", "the host's file came out");

    // Hostile archives on standard input: refused, and nothing of them is written.
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", layer(&[Entry::RawFile(b"../../escaped".to_vec(), b"x".to_vec())])),
        ("shadow", layer(&[Entry::File("ok".into(), b"x".to_vec(), 0o644), Entry::Hardlink("sh".into(), "/etc/shadow".into())])),
        ("whiteout", layer(&[Entry::File(".wh.bin".into(), Vec::new(), 0o644)])),
    ];
    d.ok(&["exec", "box", "mkdir", "/in"]);
    for (what, tar) in &hostile {
        let out = d.ctl_stdin(&["cp", "-", "box:/in"], Some(tar));
        assert!(!out.status.success(), "{what}: accepted");
    }
    // A truncated archive: nothing is written, not even its complete first entry.
    let mut cut = layer(&[Entry::File("first".into(), b"whole".to_vec(), 0o644), Entry::File("second".into(), vec![7; 4096], 0o644)]);
    cut.truncate(512 * 3 + 100);
    let out = d.ctl_stdin(&["cp", "-", "box:/in"], Some(&cut));
    assert!(!out.status.success(), "a cut archive was taken");
    // Cut between two entries, the rest reads as a whole archive to a tar reader; a copy must
    // have its end-of-archive blocks.
    let whole = layer(&[Entry::File("first".into(), b"whole".to_vec(), 0o644), Entry::File("second".into(), b"x".to_vec(), 0o644)]);
    let out = d.ctl_stdin(&["cp", "-", "box:/in"], Some(&whole[..1024]));
    assert!(!out.status.success() && stderr(&out).contains("cut short"), "{}", stderr(&out));
    assert_eq!(d.ok(&["exec", "box", "ls", "-a", "/in"]).split_whitespace().collect::<Vec<_>>(), [".", ".."]);
    assert!(d.ok(&["exec", "box", "ls", "/bin"]).contains("sh"), "a whiteout removed /bin");

    // A file never replaces a directory.
    std::fs::create_dir(d.dir.path().join("x")).unwrap();
    let dir = d.dir.path().join("x/tmp");
    std::fs::write(&dir, b"file").unwrap();
    assert!(d.fails(&["cp", dir.to_str().unwrap(), "box:/"]).contains("cannot overwrite directory"));
    d.ok(&["rm", "-f", "box"]);

    // A read-only container says so, running or stopped; its volumes take copies.
    d.ok(&["run", "-d", "--read-only", "--name", "ro", "-v", "rovol:/data", "busybox", "sleep", "600"]);
    let e = d.fails(&["cp", f.to_str().unwrap(), "ro:/etc/"]);
    assert!(e.to_lowercase().contains("read-only"), "{e}");
    d.ok(&["cp", f.to_str().unwrap(), "ro:/data/"]);
    d.ok(&["stop", "-t", "0", "ro"]);
    let e = d.fails(&["cp", f.to_str().unwrap(), "ro:/etc/"]);
    assert!(e.to_lowercase().contains("read-only"), "{e}");
    d.ok(&["cp", f.to_str().unwrap(), "ro:/data/again"]);
    assert_eq!(d.ok(&["run", "--rm", "-v", "rovol:/v", "busybox", "cat", "/v/again"]), "inside\n");
    d.ok(&["rm", "-f", "ro"]);
}

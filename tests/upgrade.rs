//! A store written by the first release (schema 1) opens and works: its
//! image runs, its containers start, exec, stop and go, and collection still
//! knows what is in use. The store is tests/fixtures/store-v1.tar.gz, made by
//! release 0.1.0 with tests/fixtures/make-store-v1.sh.

mod common;

use std::process::Command;

use common::*;

const STORE_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v1.tar.gz");

/// A berthd on a copy of the release's store.
fn daemon_on_store_v1() -> Daemon {
    require_tool("runc", "runc");
    // The release wrote overlayfs snapshots.
    let mut d = Daemon::unstarted(&["--snapshotter", "overlayfs"]);
    std::fs::create_dir_all(&d.root).unwrap();
    let out = Command::new("tar").args(["-xzf", STORE_V1, "-C"]).arg(&d.root).output().expect("running tar");
    assert!(out.status.success(), "unpacking the store: {}", stderr(&out));
    d.spawn();
    d
}

fn code(o: &std::process::Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[test]
fn a_store_written_by_the_first_release_opens_and_its_containers_work() {
    let d = daemon_on_store_v1();
    assert!(d.log().contains("metadata migrated"), "{}", d.log());

    // The records read back whole: names, states, exit codes, labels, env.
    let names: Vec<String> = d.ok(&["ps", "-a", "--format", "{{.Names}}"]).lines().map(str::to_owned).collect();
    for n in ["c-created", "c-exited", "c-stopped"] {
        assert!(names.iter().any(|x| x == n), "{n} not listed: {names:?}");
    }
    let ps = d.ok(&["inspect", "c-created", "c-exited", "c-stopped"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&ps).unwrap();
    let find =
        |name: &str| listed.iter().find(|c| c["Name"] == format!("/{name}")).unwrap_or_else(|| panic!("{name} not listed: {ps}")).clone();
    assert_eq!(find("c-created")["State"]["Status"], "created", "{ps}");
    assert_eq!(find("c-exited")["State"]["Status"], "exited", "{ps}");
    assert_eq!(find("c-exited")["State"]["ExitCode"].as_i64(), Some(0), "{ps}");
    assert_eq!(find("c-stopped")["State"]["ExitCode"].as_i64(), Some(137), "{ps}");
    let created = find("c-created");
    assert_eq!(created["Config"]["Labels"]["team"], "a", "{created}");
    assert!(created["Config"]["Env"].as_array().unwrap().iter().any(|e| e == "FOO=bar"), "{created}");
    assert_eq!((&created["Path"], &created["Args"]), (&serde_json::json!("/tiny"), &serde_json::json!(["sleep"])), "{created}");
    // The spec, moved out of the record, comes with one container.
    let inspected: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "c-created"])).unwrap();
    assert_eq!(inspected[0]["Spec"]["process"]["args"], serde_json::json!(["/tiny", "sleep"]), "{inspected}");
    let row: serde_json::Value =
        serde_json::from_str(d.ok(&["ps", "-a", "--format", "json", "--filter", "name=c-created"]).trim()).unwrap();
    assert!(row.get("Spec").is_none() && row["Names"] == "c-created", "a list carries no spec: {row}");
    assert_eq!(d.ok(&["logs", "c-exited"]), "hi\n");

    // A container created before the upgrade starts, takes an exec, stops and goes.
    d.ok(&["start", "c-created"]);
    assert_eq!(d.ok(&["exec", "c-created", "/tiny", "echo", "hello", "again"]), "hello again\n");
    assert_eq!(code(&d.ctl(&["exec", "c-created", "/tiny", "exit", "5"])), 5);
    d.ok(&["stop", "-t", "1", "c-created"]);
    // One that had exited runs again.
    let again = d.ctl(&["start", "-a", "c-exited"]);
    assert_eq!((code(&again), stdout(&again).as_str()), (0, "hi\n"), "{}", stderr(&again));
    for c in ["c-created", "c-exited", "c-stopped"] {
        d.ok(&["rm", c]);
    }
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");

    // The image runs new containers, and goes with everything it used.
    let out = d.ctl(&["run", "--rm", "tiny:1", "echo", "new"]);
    assert_eq!((code(&out), stdout(&out).as_str()), (0, "new\n"), "{}", stderr(&out));
    d.ok(&["rmi", "tiny:1"]);
    assert_eq!(d.ok(&["snapshot", "ls", "-q"]).trim(), "", "snapshots left");
    assert!(d.blobs().is_empty(), "blobs left: {:?}", d.blobs());
}

#[test]
fn a_migrated_store_opens_again_without_migrating() {
    let mut d = daemon_on_store_v1();
    d.kill9();
    let before = d.log().matches("metadata migrated").count();
    d.spawn();
    assert_eq!(d.log().matches("metadata migrated").count(), before, "{}", d.log());
    assert_eq!(d.ok(&["ps", "-aq"]).lines().count(), 3);
}

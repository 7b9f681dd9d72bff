//! The soak of bench/load.sh, short: run/rm and exec cycles leave the agent
//! as they found it.

mod common;

use common::*;

#[test]
fn two_hundred_run_and_exec_cycles_leave_nothing_behind() {
    require_tool("runc", "runc");
    let d = Daemon::start();
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let path = d.file("busybox.tar", &oci_archive(&[("docker.io/library/busybox:latest", &spec)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth-load"))
        .args(["soak", "--berth"])
        .arg(&d.socket)
        // (RSS against a bound by bench/soak.sh; here, only a gross leak fails.)
        .args(["--image", "busybox", "--runs", "200", "--execs", "200", "--rss-slack", "100", "--pid", &d.pid().to_string(), "--state"])
        .arg(&d.state)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}\nlog:\n{}", stderr(&out), d.log());
    let result: serde_json::Value = serde_json::from_str(text.lines().find_map(|l| l.strip_prefix("RESULT ")).unwrap()).unwrap();
    assert_eq!(result["errors"], 0, "{text}");
    // The execs' container ran from before the first figures; after, nothing runs.
    assert_eq!((result["shims"][1].as_u64(), result["bundles"][1].as_u64()), (Some(0), Some(0)), "{text}");
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "", "{text}");
}

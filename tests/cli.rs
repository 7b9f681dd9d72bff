//! berthctl as docker's users and scripts use it: a shell script written for
//! the docker CLI runs with `docker` made berthctl, and prints what docker
//! would; exit codes, pipes, and the rough edges found by hand.

mod common;

use std::process::{Command, Stdio};

use common::*;

fn daemon() -> Daemon {
    Daemon::with_busybox()
}

/// Run `script` with `docker` being this agent's berthctl; (status, stdout, stderr).
fn sh(d: &Daemon, script: &str) -> (i32, String, String) {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_berthctl"));
    let full = format!("docker() {{ {} \"$@\"; }}\nset -e\n{script}", bin.display());
    let out = run_cmd(
        Command::new("sh").arg("-c").arg(full).env("BERTH_ADDRESS", &d.socket).env_remove("BERTH_NAMESPACE").current_dir(d.dir.path()),
        std::time::Duration::from_secs(120),
    );
    (out.status.code().unwrap_or(-1), stdout(&out), stderr(&out))
}

#[test]
fn a_script_written_for_docker_runs_unchanged() {
    let d = daemon();
    let script = r#"
docker run -d --name web -h webhost --label tier=front busybox sleep 600 >/dev/null
docker create --name idle busybox true >/dev/null
echo "status: $(docker inspect -f '{{.State.Status}}' web)"
echo "host: $(docker inspect --format '{{.Config.Hostname}}' web)"
echo "name: $(docker inspect -f '{{.Name}}' web)"
echo "running: $(docker inspect -f '{{if .State.Running}}yes{{else}}no{{end}}' web idle | tr '\n' ' ')"
echo "labels: $(docker inspect -f '{{json .Config.Labels}}' web)"
echo "image: $(docker inspect -f '{{index .RepoTags 0}}' busybox)"
docker ps --format 'table {{.Names}}\t{{.Image}}\t{{.State}}'
docker ps -a --filter name=idle --format '{{.Names}} {{.Status}}'
docker ps -q --filter label=tier=front | wc -l | tr -d ' '
docker ps -q --filter ancestor=busybox | wc -l | tr -d ' '
docker ps -a -n 1 --format '{{.Names}}'
docker images --format '{{.Repository}}:{{.Tag}}'
docker images busybox --format '{{.Repository}}'
docker images --filter reference='busy*' -q | wc -l | tr -d ' '
docker version --format '{{.Client.ApiVersion}}'
echo hello > in.txt
docker cp in.txt web:/tmp/
docker cp in.txt idle:/etc/greeting
echo "in: $(docker exec web cat /tmp/in.txt)"
docker cp idle:/etc/greeting out.txt
echo "out: $(cat out.txt)"
docker rm -f web idle
"#;
    let (code, out, err) = sh(&d, script);
    assert_eq!(code, 0, "{err}\n{out}");
    let want = "status: running
host: webhost
name: /web
running: yes no 
labels: {\"tier\":\"front\"}
image: busybox:latest
NAMES   IMAGE     STATE
web     busybox   running
idle Created
1
1
idle
busybox:latest
busybox
1
v1
in: hello
out: hello
web
idle
";
    assert_eq!(out, want, "{err}");
}

#[test]
fn exit_codes_and_pipes_are_docker_s() {
    let d = daemon();
    // The command's own code; 127 for a command not found, 126 for one not
    // executable, 125 for berthctl's or the agent's error; one clean line.
    let code = |args: &[&str]| d.ctl(args).status.code().unwrap_or(-1);
    assert_eq!(code(&["run", "--rm", "--net", "none", "busybox", "sh", "-c", "exit 3"]), 3);
    let o = d.ctl(&["run", "--rm", "--net", "none", "busybox", "nosuchcommand"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("nosuchcommand"), "{}", stderr(&o));
    let o = d.ctl(&["run", "--rm", "--net", "none", "busybox", "/etc/passwd"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert_eq!(code(&["run", "--rm", "--net", "none", "nosuchimage:1", "true"]), 125);
    assert_eq!(code(&["run", "--rm", "--net", "none", "--memory", "bogus", "busybox", "true"]), 125);
    d.ok(&["run", "-d", "--name", "box", "--net", "none", "busybox", "sleep", "600"]);
    assert_eq!(code(&["exec", "box", "sh", "-c", "exit 4"]), 4);
    let o = d.ctl(&["exec", "box", "nosuchcommand"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert_eq!(code(&["exec", "nosuchbox", "true"]), 125);

    // A reader that goes away: a quiet end, no panic, no "Broken pipe".
    let bin = env!("CARGO_BIN_EXE_berthctl");
    for cmd in ["--format json ps -a | head -c1 >/dev/null", "save busybox | head -c0", "images | head -c1 >/dev/null"] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{bin} {cmd}"))
            .env("BERTH_ADDRESS", &d.socket)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{cmd}: {err}");
    }

    // version shows the client without an agent, and fails.
    let o = Command::new(bin).arg("version").env("BERTH_ADDRESS", d.dir.path().join("nosock")).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Client:"), "{}", String::from_utf8_lossy(&o.stdout));

    // Several stops (sent together) print in the order given.
    for n in ["s1", "s2", "s3"] {
        d.ok(&["run", "-d", "--name", n, "--net", "none", "busybox", "sleep", "600"]);
    }
    assert_eq!(d.ok(&["stop", "-t", "1", "s3", "s1", "s2"]), "s3\ns1\ns2\n");
}

#[test]
fn housekeeping_verbs_rename_prune_history() {
    let d = daemon();
    let script = r#"
docker run -d --name old --net none busybox sleep 600 >/dev/null
docker rename old new
docker ps --format '{{.Names}}'
docker rename new 'bad name!' 2>/dev/null || echo "refused bad name"
docker create --name other --net none busybox true >/dev/null
docker rename new other 2>/dev/null || echo "refused taken name"
docker rmi busybox 2>/dev/null || echo "refused rmi of a used image"
docker run --name done --net none busybox true
docker container prune -f | grep -c -v -e '^Deleted' -e '^Total'
docker ps -a --format '{{.Names}}'
docker history --format '{{.CreatedBy}}' busybox
docker history -q busybox | wc -l | tr -d ' '
docker rm -f new >/dev/null
docker image prune -a -f | grep -c untagged
docker images -q | wc -l | tr -d ' '
"#;
    let (code, out, err) = sh(&d, script);
    assert_eq!(code, 0, "{err}\n{out}");
    let want = "new
refused bad name
refused taken name
refused rmi of a used image
2
new
berth test
1
1
0
";
    assert_eq!(out, want, "{err}");
}

#[test]
fn commit_keeps_the_container_s_command_and_takes_changes() {
    let d = daemon();
    let script = r#"
docker run --name c -e GREETING=hi -w /tmp --net none busybox sh -c 'echo made > /tmp/f' 
docker commit c kept:1 >/dev/null
docker inspect -f '{{json .Config.Cmd}} {{.Config.WorkingDir}}' kept:1
docker run --rm --net none kept:1 sh -c 'echo $GREETING; cat f'
docker commit -c 'CMD ["cat", "/tmp/f"]' -c 'ENV MORE=1' -c 'LABEL team=a' -c 'EXPOSE 8080' c changed:1 >/dev/null
docker run --rm --net none changed:1
docker inspect -f '{{index .Config.Labels "team"}} {{json .Config.ExposedPorts}}' changed:1
docker commit -c 'RUN echo no' c bad:1 2>/dev/null || echo "refused RUN"
docker rm c >/dev/null
"#;
    let (code, out, err) = sh(&d, script);
    assert_eq!(code, 0, "{err}\n{out}");
    let want = "[\"sh\",\"-c\",\"echo made > /tmp/f\"] /tmp
hi
made
made
a {\"8080/tcp\":{}}
refused RUN
";
    assert_eq!(out, want, "{err}");
}

#[test]
fn events_since_and_until() {
    let d = daemon();
    let start = d.ok(&["run", "--rm", "--name", "ev", "--net", "none", "busybox", "true"]);
    assert_eq!(start, "");
    // (`--until 0s` is now in whole seconds: the events above are a second old first.)
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The recent events, then the stream ends at --until (a past time: at once).
    let (code, out, err) = sh(&d, "docker events --since 10m --until 0s --filter event=die --format '{{.Type}} {{.Action}}'");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "task exit\n", "{err}");
    let (code, out, err) = sh(&d, "docker events --since 10m --until 0s --filter container=nosuch");
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("not found"), "{err}");
    let (code, _, err) = sh(&d, "docker events --since 1s --until 10m");
    assert_ne!(code, 0);
    assert!(err.contains("before --since"), "{err}");
    // With an --until in the future the stream waits, then ends by itself. (A duration is
    // that long ago, as docker reads it: the future takes a timestamp.)
    let (code, out, err) = sh(&d, "docker events --since 0s --until $(( $(date +%s) + 2 )) --format '{{.Action}}'");
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
}

#[test]
fn completion_sources_cleanly_and_completes_commands_and_container_names() {
    let d = daemon();
    d.ok(&["create", "--name", "webserver", "--net", "none", "busybox", "true"]);
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_berthctl"));
    let path = format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let script = format!(
            "source <(berthctl completion bash) && COMP_WORDS=({}) && COMP_CWORD={} && COMP_LINE='{line}' && COMP_POINT={} && \
             _berthctl_names berthctl '{}' '{}' && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            words.join(" "),
            words.len() - 1,
            line.len(),
            words[words.len() - 1],
            words[words.len().saturating_sub(2)],
        );
        let out = run_cmd(
            Command::new("bash").arg("-c").arg(script).env("PATH", &path).env("BERTH_ADDRESS", &d.socket),
            std::time::Duration::from_secs(30),
        );
        assert!(out.status.success(), "{line}: {}", stderr(&out));
        stdout(&out)
    };
    assert!(complete("berthctl insp").lines().any(|l| l == "inspect"), "{}", complete("berthctl insp"));
    assert!(complete("berthctl stop web").lines().any(|l| l == "webserver"), "{}", complete("berthctl stop web"));
    for shell in ["zsh", "fish"] {
        assert!(d.ok(&["completion", shell]).contains("berthctl"));
    }
    let man = d.dir.path().join("man");
    d.ok(&["man", man.to_str().unwrap()]);
    assert!(man.join("berthctl.1").exists() && man.join("berthctl-run.1").exists());

    // The install script puts the binaries, the man pages and the completions in place.
    let prefix = d.dir.path().join("prefix");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh");
    let out = run_cmd(
        Command::new("sh").arg(script).arg(&prefix).env("BERTH_BINARIES", bin.parent().unwrap()),
        std::time::Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for f in ["bin/berthd", "bin/berth-shim", "share/man/man1/berthctl-cp.1", "share/zsh/site-functions/_berthctl"] {
        assert!(prefix.join(f).exists(), "{f} was not installed");
    }
    let page = std::fs::read_to_string(prefix.join("share/man/man1/berthctl-cp.1")).unwrap();
    assert!(page.contains(".TH") && page.contains("follow"), "{page}");
    let bash = std::fs::read_to_string(prefix.join("share/bash-completion/completions/berthctl")).unwrap();
    assert!(bash.contains("_berthctl_names"));
    // The top-level help lists the global options; a command's help does not repeat them.
    let top = d.ok(&["--help"]);
    assert!(top.contains("Global options") && top.contains("--address <ADDRESS>"), "{top}");
    let ps = d.ok(&["ps", "--help"]);
    assert!(!ps.contains("--address") && ps.contains("--format"), "{ps}");
}

#[test]
fn format_json_on_every_command() {
    let d = daemon();
    let run = d.ok(&[
        "--format",
        "json",
        "run",
        "-d",
        "--name",
        "j",
        "--net",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; sleep 600",
    ]);
    let v: serde_json::Value = serde_json::from_str(run.trim()).unwrap();
    assert_eq!(v["Name"], "j");
    wait_until("its output", std::time::Duration::from_secs(10), || d.ok(&["logs", "j"]) == "out\n");
    let logs: Vec<serde_json::Value> = d.ok(&["--format", "json", "logs", "j"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let streams: Vec<(&str, &str)> = logs.iter().map(|l| (l["Stream"].as_str().unwrap(), l["Log"].as_str().unwrap())).collect();
    assert!(streams.contains(&("stdout", "out\n")) && streams.contains(&("stderr", "err\n")), "{logs:?}");
    let rm: serde_json::Value = serde_json::from_str(d.ok(&["--format", "json", "rm", "-f", "j"]).trim()).unwrap();
    assert_eq!(rm["Name"], "j");
    d.ok(&["tag", "busybox", "other:1"]);
    let rmi: serde_json::Value = serde_json::from_str(d.ok(&["--format", "json", "rmi", "other:1"]).trim()).unwrap();
    assert_eq!(rmi["Untagged"], serde_json::json!(["docker.io/library/other:1"]));
}

/// `berthctl ARGS` on a terminal of its own (Python's pty): type `input`
/// after a moment; its exit status and output.
fn on_terminal(d: &Daemon, args: &[&str], input: &[u8]) -> (i32, String) {
    let script = r#"
import os, pty, sys, time, select
args = sys.argv[2:]
data = bytes.fromhex(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.execvp(args[0], args)
out = b""
def drain(t):
    global out
    end = time.time() + t
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            out += chunk
drain(2.0)
os.write(fd, data)
drain(3.0)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).arg(hex).arg(env!("CARGO_BIN_EXE_berthctl")).args(args).env("BERTH_ADDRESS", &d.socket);
    let out = run_cmd(&mut cmd, std::time::Duration::from_secs(60));
    (out.status.code().unwrap_or(-1), stdout(&out))
}

#[test]
fn detach_keys_leave_the_container_running_and_hand_rm_to_the_agent() {
    let d = daemon();
    // Ctrl-P Ctrl-Q: berthctl ends with 0, the container goes on.
    let (code, out) = on_terminal(&d, &["run", "-it", "--rm", "--name", "kept", "--net", "none", "busybox", "sh"], b"\x10\x11");
    assert_eq!(code, 0, "{out}");
    assert_eq!(d.ok(&["inspect", "-f", "{{.State.Status}}", "kept"]), "running\n");
    // Its --rm is the agent's now: stopped, it is removed.
    d.ok(&["stop", "-t", "1", "kept"]);
    wait_until("the --rm container removed", std::time::Duration::from_secs(10), || {
        !d.ok(&["ps", "-a", "--format", "{{.Names}}"]).contains("kept")
    });
    // Other keys, and attach: the same.
    d.ok(&["run", "-d", "-it", "--name", "box", "--net", "none", "busybox", "sh"]);
    let (code, out) = on_terminal(&d, &["attach", "--detach-keys", "ctrl-a,x", "box"], b"\x01x");
    assert_eq!(code, 0, "{out}");
    assert_eq!(d.ok(&["inspect", "-f", "{{.State.Status}}", "box"]), "running\n");
    assert!(d.ctl(&["run", "--detach-keys", "ctrl-1", "busybox", "true"]).status.code() == Some(125));
    d.ok(&["rm", "-f", "box"]);
}

#[test]
fn attached_clients_survive_an_agent_restart() {
    let mut d = daemon();
    d.ok(&["run", "-d", "--name", "talker", "--net", "none", "busybox", "sh", "-c", "echo before; sleep 4; echo after; sleep 600"]);
    wait_until("its first line", std::time::Duration::from_secs(10), || d.ok(&["logs", "talker"]) == "before\n");
    let run = d.spawn_ctl(&["run", "--name", "job", "--net", "none", "busybox", "sh", "-c", "sleep 4; echo done; exit 7"]);
    let logs = d.spawn_ctl(&["logs", "-f", "talker"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    d.kill9();
    d.spawn();
    d.wait_ready();
    // The run ends with the container's own code and output; the follow goes on.
    let out = wait_output(run, std::time::Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "done\n", "{}", stderr(&out));
    wait_until("the follow's next line", std::time::Duration::from_secs(20), || d.ok(&["logs", "talker"]).contains("after"));
    d.ok(&["rm", "-f", "talker"]);
    let out = wait_output(logs, std::time::Duration::from_secs(30));
    assert_eq!(stdout(&out), "before\nafter\n", "{}", stderr(&out));
    d.ok(&["rm", "-f", "job"]);
}

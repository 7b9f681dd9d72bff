//! The config of an image made by commit: the container's own command,
//! entrypoint, environment, working directory and user over the image's
//! (as docker's commit keeps them), then Dockerfile instructions given with
//! `--change`.

use serde_json::{json, Map, Value};

use super::config::ContainerConfig;
use crate::build::dockerfile::{self, Command, Instruction, Kind};

/// The instructions `--change` takes, as docker's commit does.
const ALLOWED: [&str; 10] = ["CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER", "VOLUME", "WORKDIR", "STOPSIGNAL"];

/// Parse `--change` values, each one instruction.
pub fn parse_changes(changes: &[String]) -> Result<Vec<Instruction>, String> {
    changes
        .iter()
        .map(|c| {
            let ins = dockerfile::parse_instruction(c, '\\').map_err(|e| format!("--change {c:?}: {e}"))?;
            if !ALLOWED.contains(&ins.keyword) {
                return Err(format!("--change {c:?}: {} cannot be changed by commit (use {})", ins.keyword, ALLOWED.join(", ")));
            }
            Ok(ins)
        })
        .collect()
}

fn runtime(config: &mut Value) -> &mut Map<String, Value> {
    if !config.get("config").is_some_and(Value::is_object) {
        config["config"] = json!({});
    }
    config["config"].as_object_mut().expect("made an object above")
}

/// The container's overrides, written over the image's config.
pub fn keep_container_config(config: &mut Value, c: &ContainerConfig) {
    let rt = runtime(config);
    if let Some(e) = &c.entrypoint {
        rt.insert("Entrypoint".into(), json!(e));
        // As docker: a new entrypoint drops the image's Cmd unless one was given.
        if c.command.is_none() {
            rt.insert("Cmd".into(), Value::Null);
        }
    }
    if let Some(cmd) = &c.command {
        rt.insert("Cmd".into(), json!(cmd));
    }
    put_env(rt, c.env.iter().cloned());
    if let Some(w) = c.workdir.as_ref().filter(|w| !w.is_empty()) {
        rt.insert("WorkingDir".into(), json!(w));
    }
    if let Some(u) = c.user.as_ref().filter(|u| !u.is_empty()) {
        rt.insert("User".into(), json!(u));
    }
}

/// Set `KEY=VALUE` entries in the config's `Env`: a variable set again
/// goes to the end with its new value.
fn put_env(rt: &mut Map<String, Value>, entries: impl Iterator<Item = String>) {
    let mut env = dockerfile::string_list(rt.get("Env"));
    let mut changed = false;
    for e in entries {
        let key = e.split('=').next().unwrap_or_default().to_owned();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(e);
        changed = true;
    }
    if changed {
        rt.insert("Env".into(), json!(env));
    }
}

/// An instruction's command as the config keeps it (the image's shell for the shell form).
fn argv(rt: &Map<String, Value>, c: &Command) -> Vec<String> {
    c.argv(&dockerfile::string_list(rt.get("Shell")))
}

/// Strip one pair of quotes a Dockerfile value may carry ("a b" → a b).
fn unquote(s: &str) -> String {
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_owned();
        }
    }
    s.to_owned()
}

fn merge_object(rt: &mut Map<String, Value>, key: &str, add: impl IntoIterator<Item = (String, Value)>) {
    let mut obj = rt.get(key).and_then(Value::as_object).cloned().unwrap_or_default();
    obj.extend(add);
    rt.insert(key.into(), Value::Object(obj));
}

/// Apply `--change` instructions to an image config.
pub fn apply_changes(config: &mut Value, changes: &[Instruction]) -> Result<(), String> {
    let mut cmd_set = false;
    for ins in changes {
        let rt = runtime(config);
        match &ins.kind {
            Kind::Cmd(c) => {
                let v = argv(rt, c);
                rt.insert("Cmd".into(), json!(v));
                cmd_set = true;
            }
            Kind::Entrypoint(c) => {
                let v = argv(rt, c);
                rt.insert("Entrypoint".into(), json!(v));
                // As docker: a new entrypoint drops the Cmd unless a change set one.
                if !cmd_set {
                    rt.insert("Cmd".into(), Value::Null);
                }
            }
            Kind::Env(pairs) => put_env(rt, pairs.iter().map(|(k, v)| format!("{k}={}", unquote(v)))),
            Kind::Label(pairs) => merge_object(rt, "Labels", pairs.iter().map(|(k, v)| (unquote(k), Value::String(unquote(v))))),
            Kind::Expose(ports) => merge_object(
                rt,
                "ExposedPorts",
                ports.iter().map(|p| (if p.contains('/') { p.to_ascii_lowercase() } else { format!("{p}/tcp") }, json!({}))),
            ),
            Kind::Volume(list) => merge_object(rt, "Volumes", list.iter().map(|p| (unquote(p), json!({})))),
            Kind::User(u) => {
                rt.insert("User".into(), json!(unquote(u)));
            }
            Kind::Workdir(w) => {
                let w = unquote(w);
                if !w.starts_with('/') {
                    return Err(format!("WORKDIR {w:?}: give an absolute path"));
                }
                rt.insert("WorkingDir".into(), json!(w));
            }
            Kind::StopSignal(s) => {
                rt.insert("StopSignal".into(), json!(unquote(s)));
            }
            Kind::Onbuild(inner) => {
                let mut list = rt.get("OnBuild").and_then(Value::as_array).cloned().unwrap_or_default();
                list.push(json!(ins.onbuild_trigger().unwrap_or_else(|| inner.text.clone())));
                rt.insert("OnBuild".into(), Value::Array(list));
            }
            _ => return Err(format!("{} cannot be changed by commit", ins.keyword)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_s_own_config_then_the_changes() {
        let mut config = json!({"config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin", "A=image"], "WorkingDir": "/"}});
        let c = ContainerConfig {
            command: Some(vec!["sleep".into(), "1".into()]),
            env: vec!["A=container".into(), "B=2".into()],
            workdir: Some("/srv".into()),
            ..Default::default()
        };
        keep_container_config(&mut config, &c);
        assert_eq!(config["config"]["Cmd"], json!(["sleep", "1"]));
        assert_eq!(config["config"]["Env"], json!(["PATH=/bin", "A=container", "B=2"]));
        assert_eq!(config["config"]["WorkingDir"], "/srv");
        let changes = parse_changes(&[
            "CMD [\"echo\", \"hi\"]".into(),
            "ENV C=3 A=changed".into(),
            "EXPOSE 80 53/udp".into(),
            "LABEL team=\"a b\"".into(),
            "ENTRYPOINT /run.sh".into(),
            "WORKDIR /app".into(),
        ])
        .unwrap();
        apply_changes(&mut config, &changes).unwrap();
        let rt = &config["config"];
        // The CMD came before the ENTRYPOINT: kept.
        assert_eq!(rt["Cmd"], json!(["echo", "hi"]));
        assert_eq!(rt["Env"], json!(["PATH=/bin", "B=2", "C=3", "A=changed"]));
        assert_eq!(rt["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(rt["Labels"], json!({"team": "a b"}));
        assert_eq!(rt["Entrypoint"], json!(["/bin/sh", "-c", "/run.sh"]));
        assert_eq!(rt["WorkingDir"], "/app");
        let mut alone = json!({"config": {"Cmd": ["/bin/sh"]}});
        apply_changes(&mut alone, &parse_changes(&["ENTRYPOINT [\"/app\"]".into()]).unwrap()).unwrap();
        assert_eq!((&alone["config"]["Entrypoint"], &alone["config"]["Cmd"]), (&json!(["/app"]), &Value::Null));
        assert!(parse_changes(&["RUN echo".into()]).unwrap_err().contains("cannot be changed"));
        assert!(parse_changes(&["NOPE x".into()]).is_err());
    }
}

//! The CNI runtime side (spec 1.0): network configuration lists read from a
//! conf dir, and plugins run as programs — `ADD` through the list in order,
//! each plugin given the previous one's result, `DEL` in reverse order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;

/// Longest one plugin call may take.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest configuration file read.
const MAX_CONF: u64 = 1 << 20;
/// Largest plugin output read.
const MAX_OUTPUT: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI configuration {path}: {why}")]
    BadConfig { path: String, why: String },
    #[error("CNI plugin {plugin:?} was not found in {dirs}: install Debian's containernetworking-plugins, or set network.plugin_dirs")]
    NoPlugin { plugin: String, dirs: String },
    #[error("CNI plugin {plugin} ({command}) failed: {msg}")]
    Plugin { plugin: String, command: &'static str, msg: String },
    #[error("CNI plugin {plugin} ({command}) did not finish within {PLUGIN_TIMEOUT:?}")]
    Timeout { plugin: String, command: &'static str },
    #[error("running CNI plugin {plugin}: {source}")]
    Io { plugin: String, source: std::io::Error },
}

/// A network configuration list, as read from the conf dir.
#[derive(Debug, Clone)]
pub struct ConfList {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Map<String, Value>>,
    /// The file it came from.
    pub path: PathBuf,
    /// The whole document (with any keys of ours, such as `berth`).
    pub doc: Map<String, Value>,
}

impl ConfList {
    /// Parse a `.conflist` (or a single-plugin `.conf`/`.json`).
    pub fn parse(path: &Path, text: &[u8]) -> Result<ConfList, CniError> {
        let bad = |why: String| CniError::BadConfig { path: path.display().to_string(), why };
        let doc: Map<String, Value> = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
        let name = doc.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| bad("no \"name\"".into()))?.to_owned();
        let cni_version = doc.get("cniVersion").and_then(Value::as_str).unwrap_or("0.4.0").to_owned();
        let plugins = match doc.get("plugins") {
            Some(Value::Array(list)) => list
                .iter()
                .map(|p| p.as_object().cloned().ok_or_else(|| bad("a plugin is not an object".into())))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(bad("\"plugins\" is not a list".into())),
            // A single plugin's configuration.
            None => vec![doc.clone()],
        };
        if plugins.is_empty() {
            return Err(bad("no plugin".into()));
        }
        for p in &plugins {
            let t = p.get("type").and_then(Value::as_str).unwrap_or_default();
            if t.is_empty() || t.contains('/') || t.starts_with('.') {
                return Err(bad(format!("plugin type {t:?} is not a program name")));
            }
        }
        Ok(ConfList { name, cni_version, plugins, path: path.to_owned(), doc })
    }

    /// Every list of `dir` (`*.conflist`, `*.conf`, `*.json`), by name; the
    /// first file (in name order) wins a name, as libcni does. Files that do
    /// not parse are logged and skipped.
    pub fn load_dir(dir: &Path) -> BTreeMap<String, ConfList> {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(dir) else { return out };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("conflist" | "conf" | "json")))
            .collect();
        files.sort();
        for path in files {
            let text = match std::fs::File::open(&path).and_then(|f| {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_CONF), &mut buf).map(|_| buf)
            }) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "reading a CNI configuration");
                    continue;
                }
            };
            match ConfList::parse(&path, &text) {
                Ok(list) => {
                    out.entry(list.name.clone()).or_insert(list);
                }
                Err(e) => tracing::warn!(error = %e, "skipping a CNI configuration"),
            }
        }
        out
    }
}

/// A port a container publishes, as the `portMappings` capability carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// What one attachment passes in `runtimeConfig` (to plugins that declare the capability).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeArgs {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// A fixed address (`--ip`), as `ips` takes it (`10.1.2.3/24` or `10.1.2.3`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}

/// One plugin call's place.
pub struct Call<'a> {
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub args: &'a RuntimeArgs,
}

/// The plugin runner.
#[derive(Debug, Clone)]
pub struct Cni {
    pub plugin_dirs: Vec<PathBuf>,
}

impl Cni {
    fn find(&self, plugin: &str) -> Result<PathBuf, CniError> {
        self.plugin_dirs.iter().map(|d| d.join(plugin)).find(|p| p.is_file()).ok_or_else(|| CniError::NoPlugin {
            plugin: plugin.to_owned(),
            dirs: self.plugin_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":"),
        })
    }

    /// Whether every plugin `list` uses is installed (the first missing one, if not).
    pub fn check(&self, list: &ConfList) -> Result<(), CniError> {
        for p in &list.plugins {
            self.find(p.get("type").and_then(Value::as_str).unwrap_or_default())?;
        }
        Ok(())
    }

    /// `ADD` through the list; the last plugin's result.
    pub async fn add(&self, list: &ConfList, call: &Call<'_>) -> Result<Value, CniError> {
        let mut prev: Option<Value> = None;
        for p in list.plugins.iter().filter(|p| !needless(p, call.args)) {
            let out = self.run(list, p, "ADD", call, prev.as_ref()).await?;
            let result: Value = serde_json::from_slice(&out).map_err(|e| CniError::Plugin {
                plugin: plugin_type(p).to_owned(),
                command: "ADD",
                msg: format!("its result is not JSON: {e}"),
            })?;
            prev = Some(result);
        }
        Ok(prev.unwrap_or_else(|| json!({})))
    }

    /// `DEL` through the list in reverse; every plugin is called even when
    /// one fails (the first error is returned).
    pub async fn del(&self, list: &ConfList, call: &Call<'_>, prev: Option<&Value>) -> Result<(), CniError> {
        let mut first = None;
        for p in list.plugins.iter().rev().filter(|p| !needless(p, call.args)) {
            if let Err(e) = self.run(list, p, "DEL", call, prev).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn run(
        &self,
        list: &ConfList,
        plugin: &Map<String, Value>,
        command: &'static str,
        call: &Call<'_>,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>, CniError> {
        let kind = plugin_type(plugin).to_owned();
        let exe = self.find(&kind)?;
        let stdin = serde_json::to_vec(&plugin_config(list, plugin, call.args, prev)).expect("JSON values encode");
        let io = |source| CniError::Io { plugin: kind.clone(), source };
        let path = std::env::join_paths(&self.plugin_dirs).map_err(|e| io(std::io::Error::other(e)))?;
        let mut child = tokio::process::Command::new(&exe)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", call.container_id)
            .env("CNI_NETNS", call.netns)
            .env("CNI_IFNAME", call.ifname)
            .env("CNI_ARGS", "IgnoreUnknown=1")
            .env("CNI_PATH", path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io)?;
        let mut input = child.stdin.take().expect("piped");
        let run = async {
            input.write_all(&stdin).await?;
            drop(input);
            child.wait_with_output().await
        };
        let out = match tokio::time::timeout(PLUGIN_TIMEOUT, run).await {
            Ok(r) => r.map_err(io)?,
            Err(_) => return Err(CniError::Timeout { plugin: kind, command }),
        };
        if out.stdout.len() > MAX_OUTPUT {
            return Err(CniError::Plugin { plugin: kind, command, msg: "its output is larger than 1 MiB".into() });
        }
        if !out.status.success() {
            return Err(CniError::Plugin { plugin: kind, command, msg: error_text(&out.stdout, &out.stderr, out.status) });
        }
        Ok(out.stdout)
    }
}

/// A plugin with nothing to do for this attachment, and so not run: `portmap` with no
/// port to map (on `ADD` it would pass the previous result on; on `DEL` it would look
/// for the rules it never made, with a dozen iptables processes). One that carries its
/// own `runtimeConfig` runs.
fn needless(p: &Map<String, Value>, args: &RuntimeArgs) -> bool {
    plugin_type(p) == "portmap" && args.port_mappings.is_empty() && !p.contains_key("runtimeConfig")
}

fn plugin_type(p: &Map<String, Value>) -> &str {
    p.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// What a plugin reads on stdin: its own object, the list's name and
/// version, the previous result, and the runtime values of the
/// capabilities it declares.
fn plugin_config(list: &ConfList, plugin: &Map<String, Value>, args: &RuntimeArgs, prev: Option<&Value>) -> Value {
    let mut conf = plugin.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.clone());
    }
    let caps = plugin.get("capabilities").and_then(Value::as_object);
    let wants = |cap: &str| caps.and_then(|c| c.get(cap)).and_then(Value::as_bool).unwrap_or(false);
    let mut rt = Map::new();
    if wants("portMappings") && !args.port_mappings.is_empty() {
        rt.insert("portMappings".into(), serde_json::to_value(&args.port_mappings).expect("encodes"));
    }
    if wants("ips") && !args.ips.is_empty() {
        rt.insert("ips".into(), serde_json::to_value(&args.ips).expect("encodes"));
    }
    if !rt.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rt));
    }
    Value::Object(conf)
}

/// A plugin's error: the `msg` (and `details`) of its JSON error, else its stderr.
fn error_text(stdout: &[u8], stderr: &[u8], status: std::process::ExitStatus) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(stdout) {
        if let Some(msg) = v.get("msg").and_then(Value::as_str) {
            let details = v.get("details").and_then(Value::as_str).filter(|d| !d.is_empty());
            return match details {
                Some(d) => format!("{msg}: {d}"),
                None => msg.to_owned(),
            };
        }
    }
    let text = String::from_utf8_lossy(if stderr.is_empty() { stdout } else { stderr });
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    if line.is_empty() {
        format!("it exited with {status}")
    } else {
        berth_common::text::printable(line).into_owned()
    }
}

/// What an `ADD` result says of the container's side: its addresses
/// (`10.1.2.3/24`), gateways and MAC address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addresses {
    pub ips: Vec<String>,
    pub gateway: String,
    pub mac: String,
}

impl Addresses {
    /// The IPv4 addresses, without their prefix length.
    pub fn ipv4(&self) -> Vec<std::net::Ipv4Addr> {
        self.ips.iter().filter_map(|a| a.split('/').next()?.parse().ok()).collect()
    }
}

/// The container's addresses in a CNI result (0.4 or 1.0 form).
pub fn addresses(result: &Value, ifname: &str) -> Addresses {
    let interfaces = result.get("interfaces").and_then(Value::as_array).cloned().unwrap_or_default();
    let sandbox_if = interfaces.iter().position(|i| {
        i.get("name").and_then(Value::as_str) == Some(ifname) && i.get("sandbox").and_then(Value::as_str).is_some_and(|s| !s.is_empty())
    });
    let mut out = Addresses::default();
    if let Some(i) = sandbox_if {
        out.mac = interfaces[i].get("mac").and_then(Value::as_str).unwrap_or_default().to_owned();
    }
    for ip in result.get("ips").and_then(Value::as_array).into_iter().flatten() {
        let iface = ip.get("interface").and_then(Value::as_u64).map(|n| n as usize);
        if sandbox_if.is_some() && iface.is_some() && iface != sandbox_if {
            continue;
        }
        if let Some(a) = ip.get("address").and_then(Value::as_str) {
            out.ips.push(a.to_owned());
        }
        if out.gateway.is_empty() {
            out.gateway = ip.get("gateway").and_then(Value::as_str).unwrap_or_default().to_owned();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_single_plugins_parse_and_bad_ones_are_refused() {
        let p = Path::new("x.conflist");
        let l = ConfList::parse(
            p,
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        assert_eq!((l.name.as_str(), l.plugins.len()), ("n", 2));
        let one = ConfList::parse(p, br#"{"cniVersion":"0.4.0","name":"m","type":"macvlan"}"#).unwrap();
        assert_eq!(plugin_type(&one.plugins[0]), "macvlan");
        for bad in [
            &br#"{"plugins":[{"type":"bridge"}]}"#[..],
            br#"{"name":"n","plugins":[]}"#,
            br#"{"name":"n","plugins":[{"type":"../../bin/sh"}]}"#,
            b"nope",
        ] {
            assert!(ConfList::parse(p, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn portmap_runs_only_with_ports_to_map() {
        let portmap = |extra: &str| -> Map<String, Value> {
            serde_json::from_str(&format!(r#"{{"type":"portmap","capabilities":{{"portMappings":true}}{extra}}}"#)).unwrap()
        };
        let none = RuntimeArgs::default();
        let one = RuntimeArgs {
            port_mappings: vec![PortMapping { host_port: 80, container_port: 8080, protocol: "tcp".into(), host_ip: String::new() }],
            ips: vec![],
        };
        assert!(needless(&portmap(""), &none));
        assert!(!needless(&portmap(""), &one));
        assert!(!needless(&portmap(r#","runtimeConfig":{}"#), &none), "a list's own runtime values");
        let bridge: Map<String, Value> = serde_json::from_str(r#"{"type":"bridge"}"#).unwrap();
        assert!(!needless(&bridge, &none));
    }

    #[test]
    fn a_plugin_gets_the_runtime_values_of_its_capabilities_only() {
        let l = ConfList::parse(
            Path::new("x"),
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","capabilities":{"ips":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        let args = RuntimeArgs {
            port_mappings: vec![PortMapping { host_port: 80, container_port: 8080, protocol: "tcp".into(), host_ip: String::new() }],
            ips: vec!["10.0.0.5".into()],
        };
        let prev = json!({"ips": []});
        let b = plugin_config(&l, &l.plugins[0], &args, None);
        assert_eq!(b["runtimeConfig"], json!({"ips": ["10.0.0.5"]}));
        assert_eq!(b["name"], "n");
        assert!(b.get("prevResult").is_none());
        let pm = plugin_config(&l, &l.plugins[1], &args, Some(&prev));
        assert_eq!(pm["runtimeConfig"], json!({"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]}));
        assert_eq!(pm["prevResult"], prev);
    }

    #[test]
    fn addresses_come_from_the_sandbox_interface() {
        let r = json!({"cniVersion":"1.0.0","interfaces":[{"name":"br0","mac":"aa"},{"name":"veth1","mac":"bb"},{"name":"eth0","mac":"cc","sandbox":"/x"}],
            "ips":[{"interface":2,"address":"10.9.0.2/24","gateway":"10.9.0.1"}]});
        assert_eq!(addresses(&r, "eth0"), Addresses { ips: vec!["10.9.0.2/24".into()], gateway: "10.9.0.1".into(), mac: "cc".into() });
    }

    #[test]
    fn a_plugin_error_reads_as_its_message() {
        use std::os::unix::process::ExitStatusExt;
        let s = std::process::ExitStatus::from_raw(256);
        assert_eq!(
            error_text(br#"{"code":7,"msg":"no IP addresses available","details":"range full"}"#, b"", s),
            "no IP addresses available: range full"
        );
        assert_eq!(error_text(b"", b"boom\n", s), "boom");
        assert!(error_text(b"", b"", s).contains("exit"));
    }
}

//! The state of a stage between steps: its layers and its image config. A
//! state is stored as an unnamed image (config and manifest in the content
//! store), which is what a build cache entry points at and what a RUN
//! step's container is created from.

use serde_json::{json, Value};

use crate::digest::Digest;
use crate::image::oci::{self, Descriptor};

/// One layer of a state.
#[derive(Debug, Clone)]
pub struct Layer {
    pub desc: Descriptor,
    pub diff_id: Digest,
}

/// A stage's filesystem (its layers) and config after a step.
#[derive(Debug, Clone)]
pub struct State {
    pub layers: Vec<Layer>,
    /// The whole OCI image config document (`config`, `rootfs`, `history`, ...).
    pub config: Value,
    /// The cache key of the step that made it (or of the base).
    pub key: String,
}

/// A docker layer media type's OCI name (the bytes are the same).
fn oci_layer_type(media_type: &str) -> &str {
    match media_type {
        oci::MEDIA_DOCKER_LAYER_GZIP => oci::MEDIA_OCI_LAYER_GZIP,
        oci::MEDIA_DOCKER_LAYER => oci::MEDIA_OCI_LAYER,
        m => m,
    }
}

impl State {
    /// The empty state of `FROM scratch`.
    pub fn scratch() -> State {
        let config = json!({
            "architecture": oci::Platform::default_platform().architecture,
            "os": "linux",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": [] },
            "history": [],
        });
        State { layers: Vec::new(), config, key: super::cache::key(&[("base", "scratch")]) }
    }

    /// The state of an image: its manifest's layers and its config.
    pub fn of_image(manifest: &oci::Manifest, config_json: &[u8], diff_ids: &[Digest], key: String) -> Result<State, String> {
        let config: Value = serde_json::from_slice(config_json).map_err(|e| format!("image config: {e}"))?;
        let layers = manifest
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(d, diff_id)| {
                let mut desc = d.clone();
                desc.media_type = oci_layer_type(&d.media_type).to_owned();
                desc.annotations.clear();
                desc.platform = None;
                Layer { desc, diff_id: diff_id.clone() }
            })
            .collect();
        Ok(State { layers, config, key })
    }

    /// Chain id of the top layer (None for no layer): the snapshot to build on.
    pub fn top_chain(&self) -> Option<Digest> {
        let diff_ids: Vec<Digest> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        oci::chain_ids(&diff_ids).pop()
    }

    /// `config.<field>`, when it is set.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.config.get("config").and_then(|c| c.get(field)).filter(|v| !v.is_null())
    }

    /// Set `config.<field>` (null removes it).
    pub fn set(&mut self, field: &str, value: Value) {
        if !self.config.get("config").is_some_and(Value::is_object) {
            self.config["config"] = json!({});
        }
        let c = self.config["config"].as_object_mut().expect("made an object above");
        if value.is_null() {
            c.remove(field);
        } else {
            c.insert(field.to_owned(), value);
        }
    }

    /// The config's `Env` as (name, value) pairs, in order.
    pub fn env(&self) -> Vec<(String, String)> {
        let list = self.get("Env").and_then(Value::as_array).cloned().unwrap_or_default();
        list.iter()
            .filter_map(Value::as_str)
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (e.to_owned(), String::new()),
            })
            .collect()
    }

    /// Set one variable of `Env` (replacing it in place, or at the end).
    pub fn set_env(&mut self, name: &str, value: &str) {
        let mut env = self.env();
        match env.iter_mut().find(|(k, _)| k == name) {
            Some(e) => e.1 = value.to_owned(),
            None => env.push((name.to_owned(), value.to_owned())),
        }
        self.set("Env", Value::Array(env.into_iter().map(|(k, v)| Value::String(format!("{k}={v}"))).collect()));
    }

    /// Append a history entry; `layer` is the layer it made, if any.
    pub fn add_history(&mut self, created: &str, created_by: &str, layer: Option<Layer>) {
        let mut entry = json!({ "created": created, "created_by": created_by, "comment": "berth build" });
        match layer {
            Some(l) => {
                if !self.config.get("rootfs").is_some_and(Value::is_object) {
                    self.config["rootfs"] = json!({ "type": "layers", "diff_ids": [] });
                }
                if !self.config["rootfs"].get("diff_ids").is_some_and(Value::is_array) {
                    self.config["rootfs"]["diff_ids"] = json!([]);
                }
                self.config["rootfs"]["diff_ids"].as_array_mut().expect("an array").push(Value::String(l.diff_id.to_string()));
                self.layers.push(l);
            }
            None => entry["empty_layer"] = Value::Bool(true),
        }
        if !self.config.get("history").is_some_and(Value::is_array) {
            self.config["history"] = json!([]);
        }
        self.config["history"].as_array_mut().expect("an array").push(entry);
        self.config["created"] = Value::String(created.to_owned());
    }

    /// The config and manifest documents of this state, as stored.
    pub fn documents(&self) -> (Vec<u8>, impl FnOnce(&Digest) -> Vec<u8> + '_) {
        let config = serde_json::to_vec(&self.config).expect("a JSON value serializes");
        let size = config.len();
        let manifest = move |config_digest: &Digest| {
            let layers: Vec<Value> = self
                .layers
                .iter()
                .map(|l| json!({ "mediaType": l.desc.media_type, "digest": l.desc.digest.to_string(), "size": l.desc.size }))
                .collect();
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": oci::MEDIA_OCI_MANIFEST,
                "config": { "mediaType": oci::MEDIA_OCI_CONFIG, "digest": config_digest.to_string(), "size": size },
                "layers": layers,
            }))
            .expect("a JSON value serializes")
        };
        (config, manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_is_set_in_place_and_history_counts_layers() {
        let mut s = State::scratch();
        s.set_env("PATH", "/bin");
        s.set_env("A", "1");
        s.set_env("PATH", "/usr/bin:/bin");
        assert_eq!(s.get("Env").unwrap(), &json!(["PATH=/usr/bin:/bin", "A=1"]));
        s.add_history("2026-01-01T00:00:00Z", "ENV A=1", None);
        let diff_id = Digest::of(b"tar");
        let desc = Descriptor {
            media_type: oci::MEDIA_OCI_LAYER_GZIP.into(),
            digest: Digest::of(b"gz"),
            size: 2,
            annotations: Default::default(),
            platform: None,
        };
        s.add_history("2026-01-01T00:00:01Z", "COPY a /", Some(Layer { desc, diff_id: diff_id.clone() }));
        assert_eq!(s.config["rootfs"]["diff_ids"], json!([diff_id.to_string()]));
        assert_eq!(s.config["history"][0]["empty_layer"], json!(true));
        assert!(s.config["history"][1].get("empty_layer").is_none());
        assert_eq!(s.top_chain(), Some(diff_id));
    }
}

//! The OCI image format documents Berth reads and writes (image spec v1.1),
//! with docker's v2 schema 2 equivalents, parsed with bounded sizes and
//! checked against the media type they were reached through.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Largest JSON document (manifest, index, config) accepted: 4 MiB.
pub const MAX_DOCUMENT: u64 = 4 << 20;
/// Most layers accepted in one image: what a container can stack (a
/// snapshot has at most this many ancestors, as overlayfs stacks at most 500
/// lower directories). An image with more could be stored but never run, so
/// it is refused when it comes in.
pub const MAX_LAYERS: usize = 500;
/// Most manifests accepted in one index.
pub const MAX_MANIFESTS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{what} is not valid JSON: {source}")]
    Json { what: String, source: serde_json::Error },
    #[error("{0}")]
    Invalid(String),
}

pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST
}

pub fn is_manifest(media_type: &str) -> bool {
    media_type == MEDIA_OCI_MANIFEST || media_type == MEDIA_DOCKER_MANIFEST
}

pub fn is_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        MEDIA_OCI_LAYER
            | MEDIA_OCI_LAYER_GZIP
            | MEDIA_OCI_LAYER_ZSTD
            | MEDIA_DOCKER_LAYER
            | MEDIA_DOCKER_LAYER_GZIP
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(rename = "os.version", default, skip_serializing_if = "String::is_empty")]
    pub os_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl Platform {
    /// Parse `os/arch[/variant]`; empty means this machine's platform.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        if s.is_empty() {
            return Ok(Self::default_platform());
        }
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => Ok(Self { os: os.to_string(), architecture: arch.to_string(), ..Default::default() }),
            [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => {
                Ok(Self { os: os.to_string(), architecture: arch.to_string(), variant: variant.to_string(), ..Default::default() })
            }
            _ => Err(FormatError::Invalid(format!("invalid platform {s:?}: expected os/arch[/variant], e.g. linux/amd64"))),
        }
    }

    /// The platform of this machine, in OCI terms (GOARCH names).
    pub fn default_platform() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "aarch64" => ("arm64", "v8"),
            "x86" => ("386", ""),
            "arm" => ("arm", "v7"),
            "powerpc64" => ("ppc64le", ""),
            "riscv64" => ("riscv64", ""),
            "s390x" => ("s390x", ""),
            other => (other, ""),
        };
        Self { os: "linux".into(), architecture: architecture.into(), variant: variant.into(), ..Default::default() }
    }

    /// Whether an index entry for `other` serves a request for `self`.
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_empty() || self.variant == other.variant || (other.variant.is_empty() && self.variant == "v8"))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Present only to detect a document that claims to be both kinds.
    #[serde(default, skip_serializing)]
    pub manifests: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing)]
    pub layers: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub config: Option<serde_json::Value>,
}

/// The parts of an image config Berth reads; the document itself is kept whole.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// One entry of a `docker save` archive's `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DockerArchiveEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

fn parse<T: serde::de::DeserializeOwned>(data: &[u8], what: &str) -> Result<T, FormatError> {
    if data.len() as u64 > MAX_DOCUMENT {
        return Err(FormatError::Invalid(format!("{what} is larger than {MAX_DOCUMENT} bytes")));
    }
    serde_json::from_slice(data).map_err(|source| FormatError::Json { what: what.to_owned(), source })
}

/// Parse a manifest reached through a descriptor of `media_type`, refusing a
/// document that is also an index (CVE-2021-41190) or claims another type.
pub fn parse_manifest(data: &[u8], media_type: &str) -> Result<Manifest, FormatError> {
    let m: Manifest = parse(data, "manifest")?;
    if m.manifests.is_some() {
        return Err(FormatError::Invalid("manifest has a \"manifests\" field: ambiguous document refused".into()));
    }
    if let Some(mt) = &m.media_type {
        if mt != media_type {
            return Err(FormatError::Invalid(format!("manifest says media type {mt:?} but was referenced as {media_type:?}")));
        }
    }
    if m.schema_version != 2 {
        return Err(FormatError::Invalid(format!("unsupported manifest schemaVersion {}", m.schema_version)));
    }
    if m.layers.len() > MAX_LAYERS {
        return Err(FormatError::Invalid(format!("manifest has {} layers; at most {MAX_LAYERS} are accepted", m.layers.len())));
    }
    for l in &m.layers {
        if !is_layer(&l.media_type) {
            return Err(FormatError::Invalid(format!("unsupported layer media type {:?}", l.media_type)));
        }
    }
    Ok(m)
}

/// Parse an index reached through a descriptor of `media_type` (see [`parse_manifest`]).
pub fn parse_index(data: &[u8], media_type: &str) -> Result<Index, FormatError> {
    let i: Index = parse(data, "index")?;
    if i.layers.is_some() || i.config.is_some() {
        return Err(FormatError::Invalid("index has a \"layers\" or \"config\" field: ambiguous document refused".into()));
    }
    if let Some(mt) = &i.media_type {
        if mt != media_type && !(media_type.is_empty() && is_index(mt)) {
            return Err(FormatError::Invalid(format!("index says media type {mt:?} but was referenced as {media_type:?}")));
        }
    }
    if i.manifests.len() > MAX_MANIFESTS {
        return Err(FormatError::Invalid(format!("index lists {} manifests; at most {MAX_MANIFESTS}", i.manifests.len())));
    }
    Ok(i)
}

pub fn parse_config(data: &[u8]) -> Result<ImageConfig, FormatError> {
    let c: ImageConfig = parse(data, "image config")?;
    if c.rootfs.kind != "layers" {
        return Err(FormatError::Invalid(format!("image config rootfs type {:?} is not \"layers\"", c.rootfs.kind)));
    }
    if c.rootfs.diff_ids.len() > MAX_LAYERS {
        return Err(FormatError::Invalid("image config lists too many layers".into()));
    }
    Ok(c)
}

pub fn parse_docker_manifest(data: &[u8]) -> Result<Vec<DockerArchiveEntry>, FormatError> {
    parse(data, "manifest.json")
}

/// Chain ids of a layer stack (OCI image spec): the first is the first
/// diff id; each next one is sha256 of "<previous chain id> <diff id>".
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The descriptors listed under `field` ("manifests", "layers") of a JSON
/// document, leniently: entries that do not parse are skipped.
pub fn child_descriptors(doc: &serde_json::Value, field: &str) -> Vec<Descriptor> {
    doc.get(field)
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|d| serde_json::from_value::<Descriptor>(d.clone()).ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_that_is_also_an_index_is_refused() {
        let d = format!("sha256:{}", "a".repeat(64));
        let doc = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{MEDIA_OCI_CONFIG}","digest":"{d}","size":1}},"layers":[],"manifests":[]}}"#
        );
        assert!(parse_manifest(doc.as_bytes(), MEDIA_OCI_MANIFEST).is_err());
        let idx = r#"{"schemaVersion":2,"manifests":[],"layers":[]}"#;
        assert!(parse_index(idx.as_bytes(), MEDIA_OCI_INDEX).is_err());
        let mt = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_OCI_INDEX}","config":{{"mediaType":"x","digest":"{d}","size":1}},"layers":[]}}"#
        );
        assert!(parse_manifest(mt.as_bytes(), MEDIA_OCI_MANIFEST).is_err());
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn platforms_parse_and_match() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert!(p.matches(&Platform { os: "linux".into(), architecture: "arm64".into(), ..Default::default() }));
        assert!(Platform::parse("linux").is_err());
        assert_eq!(Platform::parse("").unwrap().to_string(), "linux/amd64");
    }
}

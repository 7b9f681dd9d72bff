//! Exporting images as one tar archive, `docker save`-like: an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`) that also
//! carries docker's `manifest.json`, so that `docker load`, skopeo's
//! `oci-archive:`, umoci and Berth's own import all read it.
//!
//! An export is planned first, under the collector's lock held shared: the
//! names are looked up, each image is resolved for the platform, and every
//! blob it reaches is put in a lease. The archive is then written without
//! the lock (a slow reader must not stall collection); the lease keeps the
//! blobs until the export ends. Blobs are streamed from the content store,
//! never read whole.
//!
//! The archive is deterministic: the same images give the same bytes. Every
//! entry has mode 0644 (directories 0755), owner 0:0 and mtime 0; blobs come
//! in the order they are reached (an index, then each manifest, its config
//! and its layers), each once, then `index.json` and `manifest.json`.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Write};

use super::oci::{self, Descriptor, Index, Platform};
use super::reference::Reference;
use super::{target_descriptor, ImageError, Images, Lease};
use crate::content::ContentError;
use crate::digest::Digest;
use crate::metadata::ImageRecord;

/// Annotation with the full image name (containerd's).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Annotation with the tag (OCI image layout).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Deepest document whose children are followed (resolution reads indexes
/// nested 4 deep, so their manifests are at depth 5).
const MAX_DEPTH: u32 = 5;

/// One entry of docker's `manifest.json`.
#[derive(Debug, Clone, serde::Serialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// What an export writes, decided before the first byte. Its blobs are
/// leased: garbage collection leaves them alone until the plan is dropped.
pub struct ExportPlan<'a> {
    /// Kept, not read: dropping the plan releases the blobs.
    _lease: Lease<'a>,
    /// Names exported, in the order asked for.
    pub names: Vec<String>,
    /// Blobs, each once, in the order they are written: (digest, size).
    pub blobs: Vec<(Digest, u64)>,
    index_json: Vec<u8>,
    docker_manifest: Vec<u8>,
}

impl ExportPlan<'_> {
    /// Bytes of blobs the archive holds.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|(_, s)| s).sum()
    }
}

/// `org.opencontainers.image.ref.name` for a full name: its tag, if it has one.
fn ref_name(r: &Reference) -> Option<String> {
    r.tag.clone()
}

/// The name docker's `manifest.json` gives: `busybox:latest`,
/// `example.com/app:v1`; none for a name without a tag.
fn docker_tag(r: &Reference) -> Option<String> {
    r.tag.as_ref().map(|t| format!("{}:{t}", r.familiar_repository()))
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

impl Images {
    /// Plan an export of `names` (names, digests or id prefixes; an id or
    /// digest stands for every name of that image). Fails, before anything is
    /// written, when a name is unknown, an image has no manifest for
    /// `platform`, or that manifest's config or a layer is missing.
    pub fn export_plan(&self, ns: &str, names: &[String], platform: &Platform) -> Result<ExportPlan<'_>, ImageError> {
        if names.is_empty() {
            return Err(ImageError::InvalidArgument("name at least one image to export".into()));
        }
        // What is found here is leased before collection can run again.
        let lease = self.lease();
        let publish = lease.publish();
        let mut records: Vec<ImageRecord> = Vec::new();
        let mut seen_names = HashSet::new();
        for n in names {
            for rec in self.find(ns, n)? {
                if seen_names.insert(rec.name.clone()) {
                    records.push(rec);
                }
            }
        }
        let mut blobs: Vec<(Digest, u64)> = Vec::new();
        let mut seen = HashSet::new();
        let mut index_entries = Vec::new();
        // Docker entries by manifest digest, in the order first met.
        let mut docker: Vec<(Digest, DockerEntry)> = Vec::new();
        for rec in &records {
            let resolved = self.resolve(rec, platform)?;
            let target = target_descriptor(rec);
            self.export_walk(&target, 0, &mut blobs, &mut seen)?;
            let present: HashSet<&Digest> = blobs.iter().map(|(d, _)| d).collect();
            let needed =
                std::iter::once(&resolved.manifest_desc).chain(std::iter::once(&resolved.manifest.config)).chain(&resolved.manifest.layers);
            for d in needed {
                if !present.contains(&d.digest) {
                    return Err(ImageError::MissingContent {
                        digest: d.digest.clone(),
                        what: format!("{} of image {}", d.media_type, rec.name),
                    });
                }
            }
            let r = Reference::parse(&rec.name)?;
            let mut annotations = BTreeMap::new();
            annotations.insert(ANNOTATION_IMAGE_NAME.to_owned(), rec.name.clone());
            if let Some(tag) = ref_name(&r) {
                annotations.insert(ANNOTATION_REF_NAME.to_owned(), tag);
            }
            index_entries.push(Descriptor { annotations, ..target });
            let tag = docker_tag(&r);
            match docker.iter_mut().find(|(d, _)| *d == resolved.manifest_desc.digest) {
                Some((_, e)) => e.repo_tags.extend(tag),
                None => docker.push((
                    resolved.manifest_desc.digest.clone(),
                    DockerEntry {
                        config: blob_path(&resolved.manifest.config.digest),
                        repo_tags: tag.into_iter().collect(),
                        layers: resolved.manifest.layers.iter().map(|l| blob_path(&l.digest)).collect(),
                    },
                )),
            }
        }
        for (d, _) in &blobs {
            publish.keep(d);
        }
        drop(publish);
        let index = Index {
            schema_version: 2,
            media_type: Some(oci::MEDIA_OCI_INDEX.into()),
            manifests: index_entries,
            annotations: Default::default(),
            layers: None,
            config: None,
        };
        let index_json = to_json(&index)?;
        let docker_manifest = to_json(&docker.into_iter().map(|(_, e)| e).collect::<Vec<_>>())?;
        Ok(ExportPlan { _lease: lease, names: records.into_iter().map(|r| r.name).collect(), blobs, index_json, docker_manifest })
    }

    /// Blobs reachable from `desc` that the store holds, in order, each once.
    /// Documents are read leniently, as garbage collection reads them: an
    /// index keeps the manifests that are present; a missing one is left out.
    fn export_walk(
        &self,
        desc: &Descriptor,
        depth: u32,
        out: &mut Vec<(Digest, u64)>,
        seen: &mut HashSet<Digest>,
    ) -> Result<(), ImageError> {
        if !seen.insert(desc.digest.clone()) {
            return Ok(());
        }
        let info = match self.content.info(&desc.digest) {
            Ok(i) => i,
            Err(ContentError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if info.size != desc.size {
            return Err(oci::FormatError::Invalid(format!(
                "blob {} is {} bytes but is referenced as {} bytes",
                desc.digest, info.size, desc.size
            ))
            .into());
        }
        out.push((desc.digest.clone(), info.size));
        if depth > MAX_DEPTH || (!oci::is_index(&desc.media_type) && !oci::is_manifest(&desc.media_type)) {
            return Ok(());
        }
        let data = self.read_doc(desc)?;
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&data) else { return Ok(()) };
        let children = |field: &str| oci::child_descriptors(&doc, field);
        for m in children("manifests") {
            self.export_walk(&m, depth + 1, out, seen)?;
        }
        if let Some(config) = doc.get("config").and_then(|c| serde_json::from_value::<Descriptor>(c.clone()).ok()) {
            self.export_walk(&config, depth + 1, out, seen)?;
        }
        for l in children("layers") {
            self.export_walk(&l, depth + 1, out, seen)?;
        }
        Ok(())
    }

    /// Write the archive of `plan` to `out`; returns the bytes written.
    pub fn write_export(&self, plan: &ExportPlan<'_>, out: impl Write) -> Result<u64, ImageError> {
        let mut counted = CountingWriter { inner: out, count: 0 };
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| ImageError::Io { path: format!("export: {what}"), source }
        };
        {
            let mut b = tar::Builder::new(&mut counted);
            append(&mut b, "oci-layout", OCI_LAYOUT.len() as u64, OCI_LAYOUT).map_err(io("oci-layout"))?;
            append_dir(&mut b, "blobs/").map_err(io("blobs/"))?;
            append_dir(&mut b, "blobs/sha256/").map_err(io("blobs/sha256/"))?;
            for (digest, size) in &plan.blobs {
                let file = self.content.open_blob(digest).map_err(|e| match e {
                    ContentError::NotFound(d) => ImageError::MissingContent { digest: d, what: "blob removed during the export".into() },
                    e => e.into(),
                })?;
                let path = blob_path(digest);
                append(&mut b, &path, *size, ExactReader { inner: file, left: *size }).map_err(io(&path))?;
            }
            append(&mut b, "index.json", plan.index_json.len() as u64, &plan.index_json[..]).map_err(io("index.json"))?;
            append(&mut b, "manifest.json", plan.docker_manifest.len() as u64, &plan.docker_manifest[..]).map_err(io("manifest.json"))?;
            b.finish().map_err(io("end of archive"))?;
        }
        counted.flush().map_err(io("flush"))?;
        Ok(counted.count)
    }

    /// Plan and write an export in one call (see [`Images::export_plan`]).
    pub fn export(&self, ns: &str, names: &[String], platform: &Platform, out: impl Write) -> Result<u64, ImageError> {
        let plan = self.export_plan(ns, names, platform)?;
        self.write_export(&plan, out)
    }
}

fn to_json(v: &impl serde::Serialize) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(v).map_err(|e| ImageError::Archive(format!("encoding the archive's index: {e}")))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append<W: Write>(b: &mut tar::Builder<W>, path: &str, size: u64, data: impl Read) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644, size);
    b.append_data(&mut h, path, data)
}

fn append_dir<W: Write>(b: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, path, io::empty())
}

/// Reads exactly `left` bytes: a blob that ends early is an error rather
/// than a short (corrupt) tar entry, and one that grew is cut at its size.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("blob ended {} bytes early", self.left)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_a_tag_and_docker_repo_tags() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(ref_name(&r).as_deref(), Some("latest"));
        assert_eq!(docker_tag(&r).as_deref(), Some("busybox:latest"));
        let r = Reference::parse("localhost:5000/tools/busybox:v1").unwrap();
        assert_eq!(docker_tag(&r).as_deref(), Some("localhost:5000/tools/busybox:v1"));
        let r = Reference::parse(&format!("busybox@sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(ref_name(&r), None);
        assert_eq!(docker_tag(&r), None);
    }

    #[test]
    fn a_blob_that_ends_early_is_an_error() {
        let mut r = ExactReader { inner: &b"abc"[..], left: 5 };
        let mut out = Vec::new();
        assert_eq!(r.read_to_end(&mut out).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let mut r = ExactReader { inner: &b"abcdef"[..], left: 4 };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcd");
    }
}

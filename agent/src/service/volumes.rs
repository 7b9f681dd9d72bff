//! Volumes: made, listed, inspected, removed, pruned. Their directories,
//! records and the lock on who uses them are `volume::Volumes`'.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{blocking, validate_labels, Core, Error, Filter};
use crate::metadata::VolumeRecord;

const FILTER_KEYS: &str = "name, label.KEY, dangling or anonymous";

/// A volume with who mounts it and, when measured, its size.
#[derive(Debug, Clone)]
pub struct VolumeView {
    pub record: VolumeRecord,
    pub mountpoint: String,
    pub containers: Vec<String>,
    pub size: Option<u64>,
}

/// What a prune removed.
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    pub removed: Vec<String>,
    pub reclaimed_bytes: u64,
}

#[derive(Clone)]
pub struct VolumeService {
    core: Arc<Core>,
}

impl VolumeService {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        VolumeService { core }
    }

    fn view(core: &Core, ns: &str, record: VolumeRecord, size: bool) -> Result<VolumeView, Error> {
        let v = &core.volumes;
        let containers = v.users(ns, &record.name)?;
        let size = size.then(|| v.size(ns, &record.name));
        Ok(VolumeView { mountpoint: v.path(ns, &record.name).display().to_string(), record, containers, size })
    }

    pub async fn create(&self, ns: &str, name: &str, labels: BTreeMap<String, String>, driver: &str) -> Result<VolumeView, Error> {
        if !matches!(driver, "" | "local") {
            return Err(Error::InvalidArgument(format!("unknown volume driver {driver:?}: only local volumes are made here")));
        }
        validate_labels(&labels)?;
        let (core, ns2, name2) = (self.core.clone(), ns.to_owned(), name.to_owned());
        let view = blocking(move || {
            // Under the lock: a container's creation may be making the same volume.
            let _users = core.volumes.lock();
            // A volume made by a user, named or not, is not anonymous (those are made for containers).
            let rec = core.volumes.create(&ns2, &name2, labels, false)?;
            Self::view(&core, &ns2, rec, false)
        })
        .await?;
        self.core.events.publish(ns, "/volumes/create", &view.record.name, &[]);
        Ok(view)
    }

    pub async fn get(&self, ns: &str, name: &str) -> Result<VolumeView, Error> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("a volume name is required".into()));
        }
        let (core, ns, name) = (self.core.clone(), ns.to_owned(), name.to_owned());
        blocking(move || {
            let rec = core.volumes.get(&ns, &name)?;
            Self::view(&core, &ns, rec, true)
        })
        .await
    }

    pub async fn list(&self, ns: &str, filters: &[String], sizes: bool) -> Result<Vec<VolumeView>, Error> {
        let filters = parse_filters(filters)?;
        let (core, ns) = (self.core.clone(), ns.to_owned());
        blocking(move || {
            let mut out = Vec::new();
            for rec in core.volumes.list(&ns)? {
                let v = Self::view(&core, &ns, rec, false)?;
                if keep(&filters, &v)? {
                    out.push(v);
                }
            }
            out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
            if sizes {
                for v in &mut out {
                    v.size = Some(core.volumes.size(&ns, &v.record.name));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Remove a volume no container mounts.
    pub async fn remove(&self, ns: &str, name: &str) -> Result<String, Error> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("a volume name is required".into()));
        }
        let (core, ns2, name2) = (self.core.clone(), ns.to_owned(), name.to_owned());
        let rec = blocking(move || {
            let _users = core.volumes.lock();
            Ok(core.volumes.remove_locked(&ns2, &name2)?)
        })
        .await?;
        self.core.events.publish(ns, "/volumes/delete", &rec.name, &[]);
        Ok(rec.name)
    }

    /// Remove the volumes no container mounts: the anonymous ones, or every
    /// one with `all`; those the filters keep.
    pub async fn prune(&self, ns: &str, all: bool, filters: &[String]) -> Result<Pruned, Error> {
        let filters = parse_filters(filters)?;
        let (core, ns2) = (self.core.clone(), ns.to_owned());
        let pruned = blocking(move || {
            let _users = core.volumes.lock();
            let mut pruned = Pruned::default();
            for rec in core.volumes.list(&ns2)? {
                if !(all || rec.anonymous) {
                    continue;
                }
                let v = Self::view(&core, &ns2, rec, false)?;
                if !v.containers.is_empty() || !keep(&filters, &v)? {
                    continue;
                }
                let size = core.volumes.size(&ns2, &v.record.name);
                match core.volumes.remove_locked(&ns2, &v.record.name) {
                    Ok(_) => {
                        pruned.reclaimed_bytes += size;
                        pruned.removed.push(v.record.name);
                    }
                    // One that cannot go stays; the others still go.
                    Err(e) => tracing::warn!(volume = %v.record.name, error = %e, "pruning a volume"),
                }
            }
            Ok(pruned)
        })
        .await?;
        for name in &pruned.removed {
            self.core.events.publish(ns, "/volumes/delete", name, &[]);
        }
        Ok(pruned)
    }

    /// Remove the anonymous volumes of a removed container that no other
    /// container mounts (docker rm -v): what could not be, is logged.
    pub(crate) async fn remove_anonymous(core: &Arc<Core>, ns: &str, rec: &crate::metadata::ContainerRecord) {
        use crate::container::config::MountKind;
        let names: Vec<String> = rec.config.mounts.iter().filter(|m| m.kind == MountKind::Volume).map(|m| m.source.clone()).collect();
        if names.is_empty() {
            return;
        }
        let (core2, ns2) = (core.clone(), ns.to_owned());
        let removed = blocking(move || {
            let _users = core2.volumes.lock();
            let mut removed = Vec::new();
            for name in names {
                match core2.volumes.get(&ns2, &name) {
                    Ok(v) if v.anonymous => {}
                    _ => continue,
                }
                match core2.volumes.remove_locked(&ns2, &name) {
                    Ok(_) => removed.push(name),
                    Err(crate::volume::VolumeError::InUse { .. }) => {}
                    Err(e) => tracing::warn!(volume = %name, error = %e, "removing an anonymous volume"),
                }
            }
            Ok(removed)
        })
        .await
        .unwrap_or_default();
        for name in &removed {
            core.events.publish(ns, "/volumes/delete", name, &[]);
        }
    }
}

fn parse_filters(filters: &[String]) -> Result<Vec<Filter>, Error> {
    Filter::parse_all(filters, |k| matches!(k, "name" | "dangling" | "anonymous") || k.starts_with("label."), FILTER_KEYS)
}

fn keep(filters: &[Filter], v: &VolumeView) -> Result<bool, Error> {
    for f in filters {
        let pass = match f.key.as_str() {
            "name" => f.matches(Some(&v.record.name)),
            "dangling" | "anonymous" => {
                let want = match f.value.as_deref() {
                    Some("true" | "1") | None => true,
                    Some("false" | "0") => false,
                    Some(other) => {
                        return Err(Error::InvalidArgument(format!("filter {}: {other:?} is not true or false", f.key)));
                    }
                };
                let is = if f.key == "dangling" { v.containers.is_empty() } else { v.record.anonymous };
                is == want
            }
            _ => f.matches_label(&v.record.labels).unwrap_or(false),
        };
        if !pass {
            return Ok(false);
        }
    }
    Ok(true)
}
